"""A training run as the command line describes it: configuration in, data, model and trainer out.

``plan(config)`` resolves a run file plus flags against the data: it picks
the task and its default loss from the targets (``data.prepare.target_task``),
splits off the validation rows, encodes a CSV file's columns with the training
rows' statistics (``data.prepare.Columns``: text one-hot, missing cells filled
or refused), prepares the table (``data.prepare``: class labels numbered,
inputs and a regression target standardised with the training rows'
statistics) and sizes the output layer to it.
What it resolved is what ``--print-config`` prints and a checkpoint keeps.
"""

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import api
from ..data import runconfig
from ..data.prepare import (
    DEFAULT_LOSS,
    TASKS,
    Columns,
    Prepared,
    Standardiser,
    about,
    check_task,
    prepare,
    target_task,
    task_of,
    unseen_warning,
)
from ..data.tables import dataset_spec, is_file_spec, load_table
from ..errors import ConfigError, DataError
from ..model.architectures import ARCHITECTURES, mlp
from ..model.sequential import Sequential
from ..training.trainer import DIVERGENCE_FACTOR, Trainer, check_device, split_indices

#: A run's defaults: the run file's, and the trainer's divergence factor.
DEFAULTS = {**runconfig.DEFAULTS, "divergence_factor": DIVERGENCE_FACTOR}


@dataclass
class Plan:
    """Everything a run needs, resolved."""

    config: dict
    table: object
    data: Prepared  # every row, standardised as configured
    model: Sequential
    loss: object
    train_rows: np.ndarray
    val_rows: np.ndarray
    info: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)  # what train says of it: "task", "columns", "warning" (or None)

    @property
    def X(self):
        return self.data.X

    @property
    def y(self):
        return self.data.y

    @property
    def labels(self):
        return self.data.labels

    @property
    def train(self):
        return self.X[self.train_rows], self.y[self.train_rows]

    @property
    def validation(self):
        if self.val_rows is None or not len(self.val_rows):
            return None
        return self.X[self.val_rows], self.y[self.val_rows]

    def trainer(self, extra_callbacks=(), group=None):
        """A Trainer for this plan; ``extra_callbacks`` (progress output, say) are not saved in the config;
        ``group``: the ranks that train it data-parallel (jitprop.distributed)."""
        c = self.config
        trainer = Trainer(
            self.model,
            loss=self.loss,
            optimizer=api.optimizer(**c["optimizer"]),
            batch_size=c["batch_size"],
            callbacks=[api.callback(**spec) for spec in c["callbacks"]] + list(extra_callbacks),
            seed=c["seed"],
            shuffle=c["shuffle"],
            drop_last=c["drop_last"],
            lr_schedule=api.schedule(**c["schedule"]) if c.get("schedule") else None,
            device=c["device"],
            on_divergence=c["on_divergence"],
            divergence_factor=c["divergence_factor"],
            transforms=[api.transform(**spec) for spec in c.get("transforms", [])],
            distributed=group,
        )
        trainer.run_info = self.info
        trainer.keep_end_state = True  # the final checkpoint continues from the weights before any restore
        return trainer


def sample_shape(table, shape):
    """``shape`` as one sample's shape for ``table``'s flat rows, or a one-line error."""
    shape = tuple(shape)
    if math.prod(shape) != table.X.shape[1]:
        shown = "x".join(map(str, shape))
        raise DataError(f"input_shape {shown} holds {math.prod(shape)} values, but {table.source} has {table.X.shape[1]} per row")
    return shape


def model_specs(c, given, outputs):
    """The layer specs a configuration asks for: its ``layers``, or an architecture sized to ``outputs``."""
    if "layers" in given:
        return given["layers"]
    arch = c.get("model", "mlp")
    if arch == "mlp":
        return mlp(outputs, c["hidden"], c["activation"], c["dropout"])
    return ARCHITECTURES[arch](outputs)


def decide_task(table, c, checkpoint):
    """``(task, the first line's words for it)``: asked for (``task``), implied by a loss given, kept by
    a checkpoint, or decided by ``data.prepare.target_task``'s rule from the target column."""
    name = table.target_name
    rule, why = target_task(table.y, name)
    asked = c.get("task")
    loss = api.loss(**c["loss"]) if c.get("loss") else None
    implied = None if loss is None else task_of(loss)
    if asked and implied and asked != implied:
        raise ConfigError(f"loss {loss.name!r} trains {implied}, but the task is {asked}: give one of --task and --loss,"
                          " or both agreeing")  # fmt: skip
    task = asked or implied or rule
    if asked:  # a loss given says what it needs itself (data.prepare)
        with about(table.source):
            check_task(table.y, task, name, f"the saved run's task, {task}," if checkpoint is not None else None)
    if checkpoint is not None:
        return task, f"{task}, as the saved run: {why}"
    if asked:
        return task, f"{task}, as asked (--task {task}): {why}"
    if implied:
        return task, f"{task}, for the loss {loss.name!r}: {why}"
    y = np.asarray(table.y)
    either = y.dtype.kind in "iufb" and (y.ndim == 1 or y.shape[1] == 1) and bool(np.all(np.mod(y, 1) == 0))
    if either:  # one column of whole numbers: classes or a quantity; say how to get the other reading
        return task, f"{task}: {why} (--task {TASKS[1 - TASKS.index(task)]} to override)"
    return task, f"{task}: {why}"


def describe_columns(columns, report, table, scaler, target_scaler):
    """The one line that says what became of every column: ``columns: 8 numeric, color one-hot (3),
    age filled 12 with median 41; inputs standardised; target 'price' standardised (...)``. Columns
    are named only where something was done to them, three of a kind at most."""
    parts = []
    if columns is None:
        shape = table.shape
        images = f" ({'x'.join(map(str, shape))} samples)" if shape is not None and len(shape) > 1 else ""
        parts.append(f"{table.X.shape[1]} numeric{images}")
    else:
        numbers = [s for s in columns.specs if s["kind"] == "number"]
        if numbers:
            parts.append(f"{len(numbers)} numeric")
        fills = {s["name"]: s.get("fill") for s in numbers}
        filled = [f"{name} filled {count} with {columns.fill} {fills[name]:.4g}" if columns.fill != "zero"
                  else f"{name} filled {count} with 0" for name, count in report["filled"].items()]  # fmt: skip
        parts += _some(filled, lambda rest: f"{len(rest)} more filled ({sum(report['filled'].values())} cells in all)")
        texts = [s for s in columns.specs if s["kind"] == "category"]
        coded = [f"{s['name']} one-hot ({len(s['categories'])}"
                 + (f"; {report['blank'][s['name']]} missing as zeros" if s["name"] in report["blank"] else "") + ")"
                 for s in texts]  # fmt: skip
        parts += _some(coded, lambda rest: f"{len(rest)} more one-hot ({sum(len(s['categories']) for s in texts[3:])} inputs)")
    line = "columns: " + ", ".join(parts)
    if scaler is None:
        line += "; inputs as they are"
    else:
        per = " per channel" if table.shape is not None and len(table.shape) == 3 else ""
        kept = " (one-hot left 0/1)" if columns is not None and len(columns.one_hot) else ""
        line += f"; inputs standardised{per}{kept}"
    if target_scaler is not None:
        stats = (f"mean {target_scaler.mean[0]:.4g}, std {target_scaler.std[0]:.4g}" if target_scaler.mean.size == 1
                 else f"{target_scaler.mean.size} columns")  # fmt: skip
        line += f"; target {table.target_name!r} standardised ({stats})"
    return line


def _some(items, rest, shown=3):
    """The first ``shown`` items, the others summed up by ``rest(others)``."""
    return items if len(items) <= shown + 1 else items[:shown] + [rest(items[shown:])]


def plan(config, checkpoint=None):
    """Resolve a checked configuration (and, when resuming, its checkpoint) against the data."""
    given = dict(config)
    if "layers" in given and any(k in given for k in ("model", "hidden", "activation", "dropout")):
        raise ConfigError("give either 'layers' or a model (--model, or the hidden/activation/dropout shorthand), not both")
    c = {**DEFAULTS, **given}
    arch = c.get("model", "mlp")
    if arch not in ARCHITECTURES:
        close = difflib.get_close_matches(arch, ARCHITECTURES, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"choose one of {', '.join(ARCHITECTURES)}"
        raise ConfigError(f"unknown model {arch!r}; {hint} (or give the layers in a run file)")
    if arch != "mlp" and any(k in given for k in ("hidden", "activation", "dropout")):
        raise ConfigError(f"--hidden, --activation and --dropout shape the mlp model, not {arch!r}")
    check_device(c["device"])
    if c.get("lr") is not None:
        c["optimizer"] = {**c["optimizer"], "lr": c["lr"]}
    # A trained model reads its own columns, by name, encoded as in its own run.
    saved_columns = None if checkpoint is None else Columns.saved(checkpoint)
    table = load_table(c["dataset"], c.get("target"), drop=c.get("drop"),
                       features=None if saved_columns is None else saved_columns.names,
                       as_text=() if saved_columns is None else saved_columns.text_names)  # fmt: skip
    if table.y is None:
        raise DataError(f"{table.source}: has no targets to train or evaluate on")
    if table.text is not None and checkpoint is None and c.get("fill") is None:
        with about(table.source):  # before anything else is said of the rows
            Columns.unfitted(table).refuse_missing(table)
    if table.text is None and checkpoint is None and c.get("fill") is not None:
        raise ConfigError(f"--fill fills the missing cells of CSV files, and {table.source} is none (its values are all numbers)")
    n = table.X.shape[0]
    if c["validation_split"]:
        train_rows, val_rows = split_indices(n, c["validation_split"], c["seed"], owner="run")
    else:
        train_rows, val_rows = np.arange(n), None
    columns = report = None
    if table.text is not None:  # a CSV file: each column a number, a category or missing somewhere
        if checkpoint is None:
            with about(table.source):
                columns = Columns.fit(table, train_rows, c.get("fill"))
        else:
            columns = saved_columns or Columns.numbers(table.feature_names)
        with about(table.source):
            X, report = columns.encode(table)
        table = dataclasses.replace(table, X=X, feature_names=columns.feature_names, text=None)
    if c.get("input_shape"):
        table.shape = sample_shape(table, c["input_shape"])
    task, task_note = decide_task(table, c, checkpoint)
    if c.get("normalize_target") and task != "regression":
        raise ConfigError(f"--normalize-target standardises a regression target, but this run is {task_note}")
    loss = api.loss(**(c.get("loss") or {"name": DEFAULT_LOSS[task]}))
    # A trained model's inputs are standardised as in its own run: with its statistics, or not at all.
    if checkpoint is None:
        model = labels = scaler = target_scaler = None
    else:
        model, labels = checkpoint.build_model(), checkpoint.info.get("labels")
        scaler, target_scaler = Standardiser.saved(checkpoint), Standardiser.saved(checkpoint, "target")
    data = prepare(table.X, table.y, loss, labels=labels, normalize=checkpoint is None and c["normalize"], scaler=scaler,
                   fit_rows=train_rows, shape=table.shape, model=model, source=table.source,
                   target_name=table.target_name, keep=None if columns is None else columns.one_hot,
                   normalize_target=checkpoint is None and bool(c.get("normalize_target")),
                   target_scaler=target_scaler)  # fmt: skip
    if model is None:
        layers = [api.layer(**spec) for spec in model_specs(c, given, data.outputs)]
        model = Sequential(layers, input_shape=data.shape, dtype=c["dtype"], seed=c["seed"])
        data.check_model(model)

    resolved = {
        key: c[key]
        for key in ("dataset", "target", "drop", "fill", "normalize", "normalize_target", "epochs", "batch_size",
                    "validation_split", "seed", "device", "dtype", "shuffle", "drop_last", "on_divergence",
                    "divergence_factor", "checkpoint")
        if c.get(key) is not None and c.get(key) != [] and (key != "normalize_target" or c[key])
    }  # fmt: skip
    resolved["dataset"] = dataset_spec(c["dataset"])
    resolved["task"] = task
    if len(model.input_shape) > 1:
        resolved["input_shape"] = list(model.input_shape)
    resolved["dtype"] = model.config()["dtype"]
    resolved["loss"] = {"name": loss.name, **loss.config()}
    resolved["optimizer"] = {"name": (o := api.optimizer(**c["optimizer"])).name, **o.config()}
    if c.get("schedule"):
        s = api.schedule(**c["schedule"])
        resolved["schedule"] = {"name": s.name, **s.config()}
    resolved["layers"] = model.config()["layers"]
    resolved["callbacks"] = [{"name": (cb := api.callback(**spec)).name, **cb.config()} for spec in c["callbacks"]]
    resolved["transforms"] = [{"name": (tr := api.transform(**spec)).name, **tr.config()} for spec in c.get("transforms", [])]

    arrays = {} if data.scaler is None else data.scaler.arrays()
    if data.target_scaler is not None:
        arrays.update(data.target_scaler.arrays("target"))
    info = {
        "config": resolved,
        "labels": data.labels,
        "feature_names": table.feature_names,
        "target_name": table.target_name,
        "task": task,
        "columns": None if columns is None else columns.info(),
        "fill": None if columns is None else columns.fill,
        "arrays": arrays,
    }
    # What became of the columns is said of a CSV file's (named, perhaps text, perhaps missing), and of a
    # standardised target; a data set's or an .npz file's numbers are as they were made.
    said = columns is not None or data.target_scaler is not None
    notes = {"task": task_note,
             "columns": describe_columns(columns, report, table, data.scaler, data.target_scaler) if said else None,
             "warning": None if report is None else unseen_warning(report, table.source)}  # fmt: skip
    return Plan(resolved, table, data, model, loss, train_rows, val_rows, info, notes)


# -- resuming ----------------------------------------------------------------

#: What a resumed run may change (their flags: --epochs, --checkpoint, --callback, --lr, --on-divergence,
#: --divergence-factor); any other setting given must equal the saved run's.
RESUMABLE = ("epochs", "checkpoint", "callbacks", "lr", "on_divergence", "divergence_factor")
MODEL_KEYS = ("model", "hidden", "activation", "dropout", "layers")


def resume_conflicts(saved_config, wanted, checkpoint):
    """Where ``wanted`` (what a resumed command's flags and run file ask for, ``flags.run_config``)
    differs from the saved run's configuration: ``[(key, saved, wanted)]``, the values as a message
    shows them. Values are compared as resolved (``adam`` and the saved ``adam`` with its defaults
    are one optimizer; ``--hidden 16`` and the saved stack dense 16, relu, dense 3 are one model)."""
    saved = {**DEFAULTS, **saved_config}
    saved.setdefault("task", task_of(api.loss(**saved["loss"])))
    saved.setdefault("input_shape", checkpoint.meta["model"].get("input_shape") or [checkpoint.meta["model"]["input_dim"]])
    if saved.get("target") is None and checkpoint.info.get("target_name") and is_file_spec(saved["dataset"]):
        saved["target"] = checkpoint.info["target_name"]  # the last column, by default
    out = []
    for key, value in wanted.items():
        if key in RESUMABLE or key in MODEL_KEYS:
            continue
        if _comparable(key, saved.get(key)) != _comparable(key, value):
            out.append((key, _shown(saved.get(key)), _shown(value)))
    if any(key in wanted for key in MODEL_KEYS):
        model = Sequential.from_config(checkpoint.meta["model"])
        asked = {**DEFAULTS, **{k: wanted[k] for k in MODEL_KEYS if k in wanted}}
        layers = [api.layer(**spec) for spec in model_specs(asked, wanted, model.output_dim)]
        built = Sequential(layers, input_shape=model.input_shape, dtype=model.config()["dtype"]).config()["layers"]
        if _jsonable(built) != _jsonable(saved["layers"]):
            out.append(("layers", _layers_shown(saved["layers"]), _layers_shown(built)))
    return out


def _comparable(key, value):
    """``value`` of configuration ``key`` in one form for comparing: components resolved, JSON types."""
    if value is None or value == []:
        return None
    if key == "dataset":
        return str(Path(value).resolve()) if is_file_spec(value) else dataset_spec(value)
    if key in ("loss", "optimizer", "schedule"):
        spec = resolved(key, value)
        if key == "optimizer":
            spec.pop("lr", None)  # --lr may change
        return spec
    if key == "transforms":
        return [resolved("transform", spec) for spec in value]
    if key == "drop":
        return sorted(value)
    if key == "input_shape":
        return list(value)
    return _jsonable(value)


def resolved(kind, spec):
    """A component spec with every option the component holds, in JSON's types (lists, not tuples)."""
    made = getattr(api, kind)(**spec)
    return _jsonable({"name": made.name, **made.config()})


def same_component(kind, a, b):
    return resolved(kind, a) == resolved(kind, b)


def _jsonable(value):
    return json.loads(json.dumps(value))


def _shown(value):
    if isinstance(value, dict):
        options = ",".join(f"{k}={runconfig.toml_value(v)}" for k, v in value.items() if k != "name" and v is not None)
        return value.get("name", "?") + (f":{options}" if options else "")
    if isinstance(value, list):
        return ",".join(_shown(v) for v in value) if value else "none"
    return "none" if value is None else runconfig.toml_value(value) if not isinstance(value, str) else value


def _layers_shown(layers):
    """A layer stack in brief: ``dense 16, relu, dense 3``."""
    sizes = ("units", "out_channels", "rate")
    return ", ".join(" ".join([spec["name"], *(str(spec[k]) for k in sizes if k in spec)]) for spec in layers)


def inputs_for(checkpoint, model, loss, source):
    """``(table, X, warning)``: features from a data set name or file, arranged, encoded and
    standardised as ``model`` (the checkpoint's) expects, and the warning line for categories its
    training never saw (or None)."""
    columns = Columns.saved(checkpoint)
    names = columns.names if columns is not None else checkpoint.info.get("feature_names") or None
    csv = source.lower().endswith(".csv")
    table = load_table(source, need_target=False, features=names if csv else None,
                       as_text=columns.text_names if csv and columns is not None else ())  # fmt: skip
    warning = None
    if table.text is not None:
        columns = columns or Columns.numbers(table.feature_names)
        with about(table.source):
            X, report = columns.encode(table)
        warning = unseen_warning(report, table.source)
        table = dataclasses.replace(table, X=X, feature_names=columns.feature_names, text=None)
    if table.shape is None and len(model.input_shape) > 1 and table.X.shape[1] == model.input_dim:
        table.shape = model.input_shape  # flat rows (a CSV) of the images the model takes
    data = prepare(table.X, None, loss, scaler=Standardiser.saved(checkpoint), shape=table.shape, model=model,
                   source=table.source)  # fmt: skip
    return table, data.X, warning
