"""Run configuration: the TOML that ``--config`` reads and ``--print-config`` writes.

A run file names the data, the model (a stack of any registered layers, or
the ``hidden``/``activation`` shorthand), the loss, optimizer, schedule,
callbacks and the loop's numbers. Unknown keys and wrong types are errors
with one sentence; component options are checked by the components.
"""

import difflib
import json
import math
import tomllib
from pathlib import Path

from ..errors import ConfigError

#: key -> (expected type(s), description); the order is the order of --print-config.
SCHEMA = {
    "dataset": (str, "a built-in data set name or a .csv / .npz file"),
    "target": (str, "the target column of a CSV file (default: the last)"),
    "drop": (list, "CSV columns to leave out of the inputs"),
    "task": (str, "classification or regression (default: decided from the target, as the README says)"),
    "fill": (str, "mean, median or zero: fill missing CSV cells from the training rows (default: refuse them)"),
    "normalize": (bool, "standardise inputs with the training rows' mean and std"),
    "normalize_target": (bool, "standardise a regression target with the training rows' mean and std"),
    "loss": ((str, dict), "loss name, or a table with name and options"),
    "epochs": (int, "total epochs"),
    "batch_size": (int, "rows per batch"),
    "validation_split": ((int, float), "fraction of rows held out for validation"),
    "seed": (int, "seed of initial weights, shuffling and dropout"),
    "device": (str, "cpu or cuda"),
    "dtype": (str, "float32 or float64"),
    "shuffle": (bool, "reshuffle the rows every epoch"),
    "drop_last": (bool, "skip the last, smaller batch of each epoch"),
    "on_divergence": (str, "stop or rollback: what a NaN or infinite loss or gradient does"),
    "divergence_factor": ((int, float), "an epoch whose mean loss grows past this many times the loss at the start"
                                        " has diverged too (0: never)"),
    "checkpoint": (str, "where to save the run's checkpoint"),
    "optimizer": ((str, dict), "optimizer name, or a table with name and options"),
    "lr": ((int, float), "learning rate (overrides the optimizer table's lr)"),
    "schedule": ((str, dict), "learning-rate schedule name, or a table with name and options"),
    "input_shape": (list, "one sample's shape, e.g. [1, 28, 28] for CSV rows of image pixels (channels first)"),
    "model": (str, "a ready architecture: mlp (shaped by hidden/activation/dropout), cnn or lenet"),
    "hidden": (list, "shorthand: widths of the hidden dense layers, e.g. [128, 64]"),
    "activation": (str, "shorthand: activation after each hidden layer"),
    "dropout": ((int, float), "shorthand: dropout rate after each hidden activation (0 for none)"),
    "layers": (list, "the full stack: a list of tables, each with name and options"),
    "callbacks": (list, "callbacks: names, or tables with name and options"),
    "transforms": (list, "gradient transforms, run in order between backward and update: names or tables"),
}

DEFAULTS = {
    "dataset": "digits",
    "normalize": True,
    "epochs": 20,
    "batch_size": 32,
    "validation_split": 0.2,
    "seed": 0,
    "device": "cpu",
    "dtype": "float32",
    "shuffle": True,
    "drop_last": False,
    "on_divergence": "stop",
    # divergence_factor: the trainer's DIVERGENCE_FACTOR, added by cli.run.DEFAULTS (the trainer's imports lead here)
    "optimizer": {"name": "adam"},
    "hidden": [128, 64],
    "activation": "relu",
    "dropout": 0.0,
    "callbacks": [],
}

#: The keys that take one of a few words.
CHOICES = {"task": ("classification", "regression"), "fill": ("mean", "median", "zero")}

_TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer", float: "a number", list: "a list", dict: "a table"}
#: TOML integers are 64-bit; tomllib (and JSON) read any size, which numba and numpy cannot take.
INT64 = range(-(2**63), 2**63)


def _type_error(source, key, expected, value):
    kinds = expected if isinstance(expected, tuple) else (expected,)
    want = " or ".join(_TYPE_NAMES[k] for k in kinds)
    return ConfigError(f"{source}: {key!r} must be {want}, got {json.dumps(value) if _jsonable(value) else repr(value)}")


def _shown(value):
    return json.dumps(value) if _jsonable(value) else repr(value)


def _jsonable(value):
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def _out_of_range(value):
    """The first integer in ``value`` (or in its lists and tables) that is not 64-bit, else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value in INT64 else value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((v for v in map(_out_of_range, items) if v is not None), None)


def _is(value, expected):
    kinds = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds)


def check(config, source="config"):
    """Check keys and types of a run configuration; return it with component specs as tables."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: a run configuration must be a table of keys")
    out = {}
    for key, value in config.items():
        if key not in SCHEMA:
            close = difflib.get_close_matches(key, SCHEMA, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(SCHEMA)}"
            raise ConfigError(f"{source}: unknown key {key!r}{hint}")
        expected = SCHEMA[key][0]
        if not _is(value, expected):
            raise _type_error(source, key, expected, value)
        big = _out_of_range(value)
        if big is not None:
            shown = str(big) if big.bit_length() < 200 else f"a {big.bit_length()}-bit number"
            raise ConfigError(f"{source}: {key!r} holds {shown}, beyond the 64-bit integers TOML allows")
        if key in ("loss", "optimizer", "schedule"):
            value = component(value, f"{source}: {key}")
        elif key == "layers":
            value = [component(v, f"{source}: layers[{i}]") for i, v in enumerate(value)]
        elif key in ("callbacks", "transforms"):
            value = [component(v, f"{source}: {key}[{i}]") for i, v in enumerate(value)]
        elif key in ("hidden", "input_shape"):
            if (key == "input_shape" and not value) or not all(_is(v, int) and v > 0 for v in value):
                raise ConfigError(f"{source}: {key!r} must be a list of positive integers, got {value}")
        elif key == "seed" and value < 0:  # resuming, the model's own seed is checked, not this one
            raise ConfigError(f"{source}: 'seed' must be an integer >= 0, got {value}")
        elif key == "batch_size" and value < 1:  # before the data is read (check's one-batch test took no rows)
            raise ConfigError(f"{source}: batch_size must be an integer >= 1, got {value}")
        elif key == "divergence_factor" and not (value == 0 or 1 < value < math.inf):  # as the Trainer checks it
            raise ConfigError(f"{source}: 'divergence_factor' must be a number above 1, or 0 to switch the rule off,"
                              f" got {_shown(value)}")
        elif key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"{source}: {key!r} must be {' or '.join(CHOICES[key])}, got {_shown(value)}")
        elif key == "drop" and not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{source}: 'drop' must be a list of column names, got {_shown(value)}")
        out[key] = value
    return out


def component(spec, where):
    """A component spec as a table ``{"name": ..., **options}``."""
    if isinstance(spec, str):
        return {"name": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a name or a table with a name, got {spec!r}")
    if not isinstance(spec.get("name"), str):
        raise ConfigError(f"{where} needs a 'name' key naming a registered component")
    return dict(spec)


def load(path):
    """Read and check a TOML run file."""
    p = Path(path)
    if p.suffix.lower() != ".toml":
        raise ConfigError(f"{path}: a run configuration is a .toml file")
    try:
        text = p.read_bytes().decode("utf-8-sig")  # -sig: a byte-order mark, as Windows editors write
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except ValueError as exc:  # an integer of over 4300 digits: Python refuses to convert it
        raise ConfigError(f"{path}: invalid TOML: {str(exc).split(':')[0]}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: arrays or tables nested too deeply") from None
    return check(data, str(path))


def parse_spec(text):
    """``NAME[:k=v,...]`` from the command line as a component table; values read as TOML."""
    name, _, rest = text.partition(":")
    spec, seen = {"name": name.strip()}, set()
    if not spec["name"]:
        raise ConfigError(f"{text!r}: expected NAME or NAME:key=value,...")
    for item in filter(None, (s.strip() for s in _split_options(rest))):
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"{text!r}: option {item!r} must look like key=value")
        key = key.strip()
        if key in seen:
            raise ConfigError(f"{text!r}: option {key!r} is given twice; give it once")
        seen.add(key)
        spec[key] = parse_value(raw.strip())
    return spec


def _split_options(text):
    """Split ``k=v,k=[a,b],k="x,y"`` at the commas that separate options, not those inside values."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_value(raw):
    """A TOML literal (3, 0.5, true, "x", [1, 2]) or, failing that, the text itself."""
    try:
        data = tomllib.loads(f"v = {raw}")
    except (ValueError, RecursionError):  # TOMLDecodeError, a 5000-digit integer, deep nesting
        return raw
    return data["v"] if data.keys() == {"v"} else raw  # "1\nx = 2" is text, not 1 and a stray key


# -- writing ---------------------------------------------------------------


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} to TOML")


def _table(spec):
    return [f"{k} = {toml_value(v)}" for k, v in spec.items() if v is not None]


def dumps(config):
    """TOML text for a resolved configuration; ``check(tomllib.loads(dumps(c)))`` gives it back."""
    lines = ["# jitprop run configuration: jitprop train --config THIS_FILE"]
    tables = []
    for key in SCHEMA:
        if key not in config or config[key] is None:
            continue
        value = config[key]
        if isinstance(value, dict):
            tables.append(["", f"[{key}]", *_table(value)])
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for spec in value:
                tables.append(["", f"[[{key}]]", *_table(spec)])
        elif isinstance(value, list) and not value and key in ("callbacks", "transforms", "layers"):
            lines.append(f"{key} = []")
        else:
            lines.append(f"{key} = {toml_value(value)}")
    for table in tables:
        lines.extend(table)
    return "\n".join(lines) + "\n"
