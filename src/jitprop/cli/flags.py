"""The flags that describe a run, shared by every command that trains one (train, lr-find, ...).

``options(*names)`` adds the named flags to a command, in that order;
``run_config(params)`` merges a command's flag values over its run file
(``--config``) into a checked run configuration, as ``train`` does.
"""

import signal

import click

from ..data import checkpoint, runconfig
from ..errors import ConfigError
from ..runtime import threads
from ..training.trainer import DIVERGENCE_FACTOR


class ThreadCount(click.ParamType):
    """``--threads``: a whole number of threads, 1 or more, or ``auto``."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        text = str(value).strip().lower()
        if text == threads.AUTO:
            return threads.AUTO
        if text.isdigit() and int(text) >= 1:
            return int(text)
        self.fail(f"{value!r} is neither a whole number of threads, 1 or more, nor auto", param, ctx)


_OPTIONS = {
    "config": lambda: click.option("--config", "config_path", help="Run file (TOML) as written by --print-config; flags override it."),
    "dataset": lambda: click.option("--dataset", help="Built-in data set NAME[:k=v,...] (jitprop list datasets), e.g. spirals:n=50,noise=0.3,"
                                                             " or a .csv / .npz file.  [default: digits]"),
    "target": lambda: click.option("--target", help="CSV column to predict.  [default: the last column]"),
    "normalize": lambda: click.option("--normalize/--no-normalize", default=None, help="Standardise inputs with the training rows' mean and std.  [default: on]"),
    "task": lambda: click.option("--task", type=click.Choice(["classification", "regression"]),
                                 help="What the target is.  [default: classes for text, or for at most 20 distinct whole numbers"
                                      " with 5 rows each; else regression]"),
    "normalize_target": lambda: click.option("--normalize-target", is_flag=True, default=None,
                                             help="Standardise a regression target with the training rows' mean and std;"
                                                  " predictions are mapped back."),
    "fill": lambda: click.option("--fill", type=click.Choice(["mean", "median", "zero"]),
                                 help="Fill missing CSV cells (empty, NA, N/A, NaN, null, ?) with the training rows' mean,"
                                      " median or 0; a text column's as all zeros.  [default: refuse them]"),
    "drop": lambda: click.option("--drop", help="CSV columns to leave out of the inputs, comma-separated (an id, say)."),
    "input_shape": lambda: click.option("--input-shape", help="One sample's shape, e.g. 1,28,28 for CSV rows of 28x28 pixels (channels first)."),
    "model": lambda: click.option("--model", help="A ready architecture: mlp, cnn (small images) or lenet (28x28).  [default: mlp]"),
    "hidden": lambda: click.option("--hidden", help="Hidden layer widths, comma-separated.  [default: 128,64]"),
    "activation": lambda: click.option("--activation", help="Activation after each hidden layer.  [default: relu]"),
    "dropout": lambda: click.option("--dropout", type=float, help="Dropout rate after each hidden activation.  [default: 0]"),
    "loss": lambda: click.option("--loss", help="Loss NAME[:k=v,...].  [default: cross_entropy for labels, mse for numbers]"),
    "optimizer": lambda: click.option("--optimizer", help="Optimizer NAME[:k=v,...], e.g. sgd:momentum=0.9.  [default: adam]"),
    "lr": lambda: click.option("--lr", type=float, help="Learning rate.  [default: the optimizer's]"),
    "schedule": lambda: click.option("--schedule", help="Learning-rate schedule NAME[:k=v,...], e.g. cosine:T_max=20,warmup=2."),
    "epochs": lambda: click.option("--epochs", type=int, help="Total epochs (with --resume too).  [default: 20]"),
    "batch_size": lambda: click.option("--batch-size", type=int, help="Rows per batch.  [default: 32]"),
    "validation_split": lambda: click.option("--validation-split", type=float, help="Fraction held out for validation (0 for none).  [default: 0.2]"),
    "seed": lambda: click.option("--seed", type=int, help="Seed of weights, shuffling and dropout.  [default: 0]"),
    "dtype": lambda: click.option("--dtype", type=click.Choice(["float32", "float64"]), help="Floating-point precision.  [default: float32]"),
    "device": lambda: click.option("--device", help="cpu or cuda.  [default: cpu]"),
    "on_divergence": lambda: click.option("--on-divergence", type=click.Choice(["stop", "rollback"]),
                                          help="At a NaN or infinite loss or gradient: stop before the update, or roll the epoch back and"
                                               " halve the learning rate.  [default: stop]"),
    # Text, read by run_config: click's own float type would answer 'abc' with its usage screen.
    "divergence_factor": lambda: click.option("--divergence-factor", metavar="FACTOR",
                                              help="An epoch whose mean loss, though finite, grows past FACTOR times the"
                                                   " loss at the start has diverged (--on-divergence says what then);"
                                                   f" 0 switches the rule off.  [default: {DIVERGENCE_FACTOR:g}]"),
    "transforms": lambda: click.option("--transform", "transforms", multiple=True,
                                       help="Gradient transform NAME[:k=v,...] between backward and update, e.g."
                                            " gradient_clipping:max_norm=1; repeatable, run in order."),
}  # fmt: skip

#: What the data and the model are: every command that trains takes these.
DATA_AND_MODEL = ("config", "dataset", "target", "drop", "task", "fill", "normalize", "normalize_target", "input_shape",
                  "model", "hidden", "activation", "dropout", "loss", "optimizer", "batch_size", "validation_split", "seed",
                  "dtype", "device", "transforms")  # fmt: skip


def options(*names):
    """A decorator adding the flags ``names`` to a click command, shown in that order."""

    def decorate(f):
        for name in reversed(names):
            f = _OPTIONS[name]()(f)
        return f

    return decorate


def _spec_option(config, key, text):
    """Merge ``--loss`` / ``--optimizer`` NAME[:k=v] into a config table of the same name."""
    spec = runconfig.parse_spec(text)
    current = config.get(key)
    if isinstance(current, dict) and current.get("name") == spec["name"]:
        spec = {**current, **spec}
    config[key] = spec


def widths(text, flag, example):
    """Comma-separated positive sizes, or a one-line error naming ``flag``."""
    try:
        sizes = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated {example}, got {text!r}") from None
    if any(w < 1 for w in sizes):
        raise ConfigError(f"{flag} sizes must be positive, got {text!r}")
    return sizes


def number(text, flag):
    """``text`` as a float, or a one-line error naming ``flag``; its range is checked with the run file's (runconfig.check)."""
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{flag} takes a number, got {text!r}") from None


def model_flags(config, input_shape, model, hidden, activation, dropout):
    """Merge the flags that choose the model into a run configuration: they replace the file's stack."""
    shorthand = {"activation": activation, "dropout": dropout}
    if hidden is not None:
        shorthand["hidden"] = widths(hidden, "--hidden", "layer widths like 128,64")
    shorthand = {k: v for k, v in shorthand.items() if v is not None}
    if input_shape is not None:
        config["input_shape"] = widths(input_shape, "--input-shape", "sizes like 1,28,28")
    if model is not None or shorthand:
        config.pop("layers", None)
        if model is not None:  # another architecture: the file's mlp shorthand no longer applies
            for key in ("hidden", "activation", "dropout"):
                config.pop(key, None)
            config["model"] = model
        else:
            config.pop("model", None)
        config.update(shorthand)


def run_config(params):
    """The checked run configuration that a command's flag values (``params``, by parameter name)
    and its run file describe; flags the command does not have count as not given."""
    p = dict.fromkeys(_OPTIONS, None) | {"config_path": None, "transforms": (), "callbacks": ()} | params
    config = runconfig.load(p["config_path"]) if p["config_path"] else {}
    simple = ("dataset", "target", "task", "fill", "normalize", "normalize_target", "lr", "batch_size", "validation_split",
              "seed", "dtype", "device", "on_divergence", "checkpoint")  # fmt: skip
    if p["dataset"] is not None:  # another file: the run file's columns are not its columns
        for key in ("target", "drop"):
            if p[key] is None:
                config.pop(key, None)
    config.update({k: p[k] for k in simple if p.get(k) is not None})
    if p["drop"] is not None:
        config["drop"] = [c.strip() for c in p["drop"].split(",") if c.strip()]
    model_flags(config, p["input_shape"], p["model"], p["hidden"], p["activation"], p["dropout"])
    for key in ("loss", "optimizer"):
        if p[key]:
            _spec_option(config, key, p[key])
    if p["schedule"]:
        config["schedule"] = runconfig.parse_spec(p["schedule"])
    if p["epochs"] is not None:
        config["epochs"] = p["epochs"]
    if p["divergence_factor"] is not None:
        config["divergence_factor"] = number(p["divergence_factor"], "--divergence-factor")
    config["callbacks"] = list(config.get("callbacks", [])) + [runconfig.parse_spec(c) for c in p["callbacks"]]
    if p["transforms"]:
        config["transforms"] = list(config.get("transforms", [])) + [runconfig.parse_spec(t) for t in p["transforms"]]
    return runconfig.check(config, "run")


def check_epochs(config, why=None, least=0):
    """Refuse an epoch count (a flag's or a run file's) below ``least`` before anything runs;
    ``why`` says what the count is to the command."""
    n = config.get("epochs", least)
    if n < least:
        raise ConfigError(f"epochs must be {least} or more, got {n}" + (f" ({why})" if why else ""))


def check_writable(path, what):
    """Fail before training, not after it, when a file cannot be written (``checkpoint.write_target``)."""
    checkpoint.write_target(path, what)


def stopped_by(signum):
    """``(name, exit status)`` of a command stopped by a signal: SIGTERM 143, Ctrl-C 130 (also when
    another rank of an MPI job caught it, ``signum`` None)."""
    return ("SIGTERM", 143) if signum == signal.SIGTERM else ("Ctrl-C", 130)
