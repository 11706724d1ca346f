"""A training run as the command line describes it: configuration in, data, model and trainer out.

``plan(config)`` resolves a run file plus flags against the data: it picks
the default loss for the targets, sizes the output layer, splits off the
validation rows and standardises inputs with the training rows' statistics.
What it resolved is what ``--print-config`` prints and a checkpoint keeps.
"""

from dataclasses import dataclass, field

import numpy as np

from .. import api
from ..data import runconfig
from ..data.tables import encode_targets, load_table
from ..errors import ConfigError, DataError
from ..model.sequential import Sequential
from ..training.trainer import Trainer, check_device, split_indices

@dataclass
class Plan:
    """Everything a run needs, resolved."""

    config: dict
    table: object
    X: np.ndarray  # normalised inputs, every row
    y: np.ndarray
    labels: list
    model: Sequential
    loss: object
    train_rows: np.ndarray
    val_rows: np.ndarray
    mean: np.ndarray = None
    std: np.ndarray = None
    info: dict = field(default_factory=dict)

    @property
    def train(self):
        return self.X[self.train_rows], self.y[self.train_rows]

    @property
    def validation(self):
        if self.val_rows is None or not len(self.val_rows):
            return None
        return self.X[self.val_rows], self.y[self.val_rows]

    def trainer(self, extra_callbacks=()):
        """A Trainer for this plan; ``extra_callbacks`` (progress output, say) are not saved in the config."""
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
        )
        trainer.run_info = self.info
        trainer.keep_end_state = True  # the final checkpoint continues from the weights before any restore
        return trainer


def shorthand_layers(config, outputs):
    """hidden/activation/dropout as an explicit layer stack ending in a dense output layer."""
    layers = []
    for width in config["hidden"]:
        layers.append({"name": "dense", "units": width})
        layers.append({"name": config["activation"]})
        if config["dropout"]:
            layers.append({"name": "dropout", "rate": config["dropout"]})
    layers.append({"name": "dense", "units": outputs})
    return layers


def standardise(X, mean, std):
    return (X - mean) / std


def plan(config, checkpoint=None):
    """Resolve a checked configuration (and, when resuming, its checkpoint) against the data."""
    given = dict(config)
    if "layers" in given and any(k in given for k in ("hidden", "activation", "dropout")):
        raise ConfigError("give either 'layers' or the hidden/activation/dropout shorthand, not both")
    c = {**runconfig.DEFAULTS, **given}
    check_device(c["device"])
    if c.get("lr") is not None:
        c["optimizer"] = {**c["optimizer"], "lr": c["lr"]}
    table = load_table(c["dataset"], c.get("target"))
    loss = api.loss(**(c.get("loss") or {"name": table.default_loss()}))
    saved = checkpoint.info if checkpoint is not None else {}
    y, labels, outputs = encode_targets(table, loss, saved.get("labels"))

    if checkpoint is not None:
        model = checkpoint.build_model()
    else:
        specs = given["layers"] if "layers" in given else shorthand_layers(c, outputs)
        layers = [api.layer(**spec) for spec in specs]
        model = Sequential(layers, input_shape=table.shape or (table.X.shape[1],), dtype=c["dtype"], seed=c["seed"])
    if model.input_dim != table.X.shape[1]:
        raise DataError(f"{table.source} has {table.X.shape[1]} features per row, but the model takes {model.input_dim}")
    if model.output_dim != outputs:
        what = f"{outputs} classes" if loss.target == "class" else f"{outputs} target value(s) per row"
        raise DataError(f"the model's last layer gives {model.output_dim} outputs, but {table.source} has {what}")

    n = table.X.shape[0]
    if c["validation_split"]:
        train_rows, val_rows = split_indices(n, c["validation_split"], c["seed"], owner="run")
    else:
        train_rows, val_rows = np.arange(n), None

    X = table.X
    mean = std = None
    if checkpoint is not None and checkpoint.info_array("norm_mean") is not None:
        mean, std = checkpoint.info_array("norm_mean"), checkpoint.info_array("norm_std")
    elif c["normalize"]:
        mean = X[train_rows].mean(axis=0)
        with np.errstate(over="ignore", invalid="ignore"):
            std = X[train_rows].std(axis=0)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            bad = int(np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std)))[0])
            raise DataError(f"{table.source}: feature column {bad} is too large to standardise (its spread overflows);"
                            " rescale it, or train with --no-normalize")  # fmt: skip
        std[std == 0] = 1.0  # constant columns (blank pixels) stay at 0
    if mean is not None:
        X = standardise(X, mean, std)

    resolved = {
        key: c[key]
        for key in ("dataset", "target", "normalize", "epochs", "batch_size", "validation_split", "seed", "device",
                    "dtype", "shuffle", "drop_last", "on_divergence", "checkpoint")
        if c.get(key) is not None
    }  # fmt: skip
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
        "labels": labels,
        "feature_names": table.feature_names,
        "target_name": table.target_name,
        "task": "classification" if loss.target in ("class", "binary") else "regression",
        "arrays": {} if mean is None else {"norm_mean": mean, "norm_std": std},
    }
    return Plan(resolved, table, X, y, labels, model, loss, train_rows, val_rows, mean, std, info)


def inputs_for(checkpoint, source):
    """Features from a data set name or file, arranged and standardised as the checkpoint's model expects."""
    names = checkpoint.info.get("feature_names") or None
    table = load_table(source, need_target=False, features=names if source.lower().endswith(".csv") else None)
    X = table.X
    expected = checkpoint.meta["model"]["input_dim"]
    if X.shape[1] != expected:
        raise DataError(f"{source} has {X.shape[1]} features per row, but the model was trained on {expected}")
    mean = checkpoint.info_array("norm_mean")
    if mean is not None:
        X = standardise(X, mean, checkpoint.info_array("norm_std"))
    return table, X
