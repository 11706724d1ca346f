"""A training run as the command line describes it: configuration in, data, model and trainer out.

``plan(config)`` resolves a run file plus flags against the data: it picks
the default loss for the targets, splits off the validation rows, prepares
the table (``data.prepare``: class labels numbered, inputs standardised with
the training rows' statistics) and sizes the output layer to it.
What it resolved is what ``--print-config`` prints and a checkpoint keeps.
"""

import difflib
import math
from dataclasses import dataclass, field

import numpy as np

from .. import api
from ..data import runconfig
from ..data.prepare import Prepared, Standardiser, prepare
from ..data.tables import load_table
from ..errors import ConfigError, DataError
from ..model.architectures import ARCHITECTURES, mlp
from ..model.sequential import Sequential
from ..training.trainer import Trainer, check_device, split_indices

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


def plan(config, checkpoint=None):
    """Resolve a checked configuration (and, when resuming, its checkpoint) against the data."""
    given = dict(config)
    if "layers" in given and any(k in given for k in ("model", "hidden", "activation", "dropout")):
        raise ConfigError("give either 'layers' or a model (--model, or the hidden/activation/dropout shorthand), not both")
    c = {**runconfig.DEFAULTS, **given}
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
    table = load_table(c["dataset"], c.get("target"))
    if c.get("input_shape"):
        table.shape = sample_shape(table, c["input_shape"])
    if table.y is None:
        raise DataError(f"{table.source}: has no targets to train or evaluate on")
    loss = api.loss(**(c.get("loss") or {"name": table.default_loss()}))
    n = table.X.shape[0]
    if c["validation_split"]:
        train_rows, val_rows = split_indices(n, c["validation_split"], c["seed"], owner="run")
    else:
        train_rows, val_rows = np.arange(n), None
    # A trained model's inputs are standardised as in its own run: with its statistics, or not at all.
    if checkpoint is None:
        model = labels = scaler = None
    else:
        model, labels, scaler = checkpoint.build_model(), checkpoint.info.get("labels"), Standardiser.saved(checkpoint)
    data = prepare(table.X, table.y, loss, labels=labels, normalize=checkpoint is None and c["normalize"], scaler=scaler,
                   fit_rows=train_rows, shape=table.shape, model=model, source=table.source,
                   target_name=table.target_name)  # fmt: skip
    if model is None:
        if "layers" in given:
            specs = given["layers"]
        elif arch == "mlp":
            specs = mlp(data.outputs, c["hidden"], c["activation"], c["dropout"])
        else:
            specs = ARCHITECTURES[arch](data.outputs)
        layers = [api.layer(**spec) for spec in specs]
        model = Sequential(layers, input_shape=data.shape, dtype=c["dtype"], seed=c["seed"])
        data.check_model(model)

    resolved = {
        key: c[key]
        for key in ("dataset", "target", "normalize", "epochs", "batch_size", "validation_split", "seed", "device",
                    "dtype", "shuffle", "drop_last", "on_divergence", "checkpoint")
        if c.get(key) is not None
    }  # fmt: skip
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

    info = {
        "config": resolved,
        "labels": data.labels,
        "feature_names": table.feature_names,
        "target_name": table.target_name,
        "task": "classification" if loss.target in ("class", "binary") else "regression",
        "arrays": {} if data.scaler is None else data.scaler.arrays(),
    }
    return Plan(resolved, table, data, model, loss, train_rows, val_rows, info)


def inputs_for(checkpoint, model, loss, source):
    """Features from a data set name or file, arranged and standardised as ``model`` (the checkpoint's) expects."""
    names = checkpoint.info.get("feature_names") or None
    table = load_table(source, need_target=False, features=names if source.lower().endswith(".csv") else None)
    if table.shape is None and len(model.input_shape) > 1 and table.X.shape[1] == model.input_dim:
        table.shape = model.input_shape  # flat rows (a CSV) of the images the model takes
    data = prepare(table.X, None, loss, scaler=Standardiser.saved(checkpoint), shape=table.shape, model=model,
                   source=table.source)  # fmt: skip
    return table, data.X
