"""From data to what a model trains on: checked inputs, encoded targets, the output width, standardisation.

``prepare(X, y, loss)`` is the one preparation step. ``jitprop train``,
``evaluate`` and ``predict`` run every table through it, and Python code
calls it as ``jitprop.prepare`` to get the same arrays the command line
trains on::

    data = jitprop.prepare(X, species, "cross_entropy", normalize=True)
    model = jitprop.Sequential([..., jitprop.layer("dense", units=data.outputs)], input_shape=data.shape)
    jitprop.fit(model, data.X, data.y, loss="cross_entropy")
    test = data.apply(X_test, species_test)        # the training rows' labels and statistics

``as_inputs`` and ``as_targets`` are the checks ``fit``, ``evaluate`` and
``predict`` make of the arrays they are given. Both steps apply the same
rules, each written once below: every problem is one DataError sentence
naming the array, what was expected and what was found.
"""

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .. import api
from ..errors import DataError
from .arrays import first_nonfinite_row, listed, numeric, to_dtype


# -- the rules ------------------------------------------------------------


def rows_of(X, what, shape=None):
    """Numeric inputs as ``(rows, per-sample shape)``: X of shape ``(n, *shape)`` or already flat,
    ``(n, prod(shape))``, becomes flat rows in C order; a 1-D X is one feature per row. Without a
    ``shape`` to match, X's own gives it."""
    X = numeric(X, what)
    shape = None if shape is None else tuple(shape)
    if X.ndim == 1 and shape in (None, (1,)):
        X = X.reshape(-1, 1)
    if X.ndim > 2 and (shape is None or len(shape) == X.ndim - 1):
        if shape is not None and X.shape[1:] != shape:
            raise DataError(f"{what} holds samples of shape {X.shape[1:]}, but the model expects input_shape={shape}")
        shape = X.shape[1:]
        X = X.reshape(X.shape[0], math.prod(shape))
    if X.ndim != 2:
        expected = "2-D (samples, features)" if shape is None or len(shape) == 1 else f"of shape (samples, {', '.join(map(str, shape))})"
        raise DataError(f"{what} must be {expected}, got shape {X.shape}")
    if X.shape[0] == 0:
        raise DataError(f"{what} has no rows")
    bad = first_nonfinite_row(X)
    if bad is not None:
        raise DataError(f"{what} holds NaN or infinite values (first in row {bad}); clean or impute them first")
    return X, shape or (X.shape[1],)


def check_inputs(model, features, what, shape=None):
    """Rows of ``features`` values (samples of ``shape``) fit the model's input."""
    if shape is not None and len(shape) > 1 and len(model.input_shape) > 1 and tuple(shape) != model.input_shape:
        raise DataError(f"{what} holds samples of shape {tuple(shape)}, but the model expects input_shape={model.input_shape}")
    if features != model.input_dim:
        shape = model.input_shape
        expects = f"input_dim={model.input_dim}" if len(shape) == 1 else f"input_shape={shape}, {model.input_dim} values"
        raise DataError(f"{what} has {features} features per row, but the model expects {expects}")


def check_outputs(loss, outputs, what, needed=None, classes=False):
    """A model with ``outputs`` outputs suits ``loss`` and, given ``needed``, targets that need that
    many (classes, or values per row)."""
    message = loss.check_output_dim(outputs)
    if message:
        raise DataError(message)
    if needed is not None and needed != outputs:
        has = f"{needed} classes" if classes else f"{needed} target value(s) per row"
        raise DataError(f"the model's last layer gives {outputs} outputs, but {what} has {has}")


def target_rows(y, n, what):
    """Targets, numbers or text, with one row per input row."""
    y = numeric(y, what, text=True)
    if y.shape[:1] != (n,):
        raise DataError(f"{what} has {y.shape[0] if y.ndim else 0} rows but the inputs have {n}")
    if n == 0:
        raise DataError(f"{what} has no rows")
    if y.dtype.kind != "U":
        bad = first_nonfinite_row(y.reshape(n, -1))
        if bad is not None:
            raise DataError(f"{what} holds NaN or infinite values (first in row {bad})")
    return y


def class_column(y, loss, what):
    """One class label per row, as whole numbers or text: shape (n,) (or (n, 1))."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"loss {loss.name!r} takes one class label per row, shape (n,), but {what} has shape {y.shape}"
            " (one-hot targets? pass y.argmax(axis=1))"
        )
    if y.dtype.kind in "iufb" and not np.all(np.mod(y, 1) == 0):
        example = y[np.mod(y, 1) != 0][0]
        raise DataError(f"loss {loss.name!r} takes class labels, but {what} holds fractional numbers like {example:g};"
                        " for regression, use the loss 'mse'")  # fmt: skip
    return y


def value_columns(y, loss, what):
    """Regression or binary targets as (n, k) numbers."""
    if y.dtype.kind not in "iufb":
        held = f"text like {str(y.flat[0])!r}" if y.size else f"no values, of type {y.dtype}"  # an empty text array too
        raise DataError(f"loss {loss.name!r} needs numeric targets, but {what} holds {held};"
                        " to classify, use the loss 'cross_entropy'")  # fmt: skip
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    if y.ndim != 2 or y.shape[1] == 0:
        raise DataError(f"loss {loss.name!r} needs {what} of shape (n, outputs), got {y.shape}")
    if loss.target == "binary" and (y.min() < 0 or y.max() > 1):
        raise DataError(f"loss {loss.name!r} needs targets between 0 and 1, but {what} spans {y.min():g} to {y.max():g}")
    return y


def encode_labels(y, loss, labels=None, what="y"):
    """Class labels (text or whole numbers) as indices 0..k-1: ``(indices, labels)``.

    Labels are numbered in sorted order (numerically when all are whole
    numbers) and named as strings; pass a trained model's ``labels`` to
    encode new data the same way.
    """
    y = class_column(y, loss, what)
    keys = [str(int(v)) for v in y] if y.dtype.kind in "iufb" else [str(v) for v in y]
    if labels is None:
        unique = set(keys)
        # Not str.isdigit: it accepts "²", which int() does not
        numeric_labels = all(re.fullmatch(r"-?[0-9]+", k) for k in unique)
        labels = sorted(unique, key=int) if numeric_labels else sorted(unique)
        if len(labels) < 2:
            raise DataError(f"{what} has a single class ({labels[0]!r}); a classifier needs two or more")
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(keys) - set(index))
    if unknown:
        raise DataError(f"label(s) {', '.join(map(repr, unknown[:3]))} did not occur in training (known: {listed(labels)})")
    return np.array([index[k] for k in keys], dtype=np.int64), list(labels)


# -- the checks fit, evaluate and predict make ----------------------------


def as_inputs(model, X, what="X"):
    """X as a C-contiguous (n, input_dim) array of the model's dtype, or a DataError.

    A model with a per-sample shape (``input_shape=(1, 8, 8)``) takes X of shape
    (n, 1, 8, 8), or already flat, (n, 64); every row is one sample in C order.
    """
    X, _ = rows_of(X, what, model.input_shape)
    check_inputs(model, X.shape[1], what)
    return to_dtype(X, model.dtype, what)


def as_targets(model, loss, y, n, what="y"):
    """y converted to what ``loss.target`` promises its kernel, or a DataError."""
    y = target_rows(y, n, what)
    k = model.output_dim
    if loss.target != "class":
        y = value_columns(y, loss, what)
        check_outputs(loss, k, what, needed=y.shape[1])
        return to_dtype(y, model.dtype, what)
    check_outputs(loss, k, what)
    y = class_column(y, loss, what)
    if y.dtype.kind == "U":
        raise DataError(f"loss {loss.name!r} takes class indices 0..{k - 1}, but {what} holds text like {str(y[0])!r};"
                        " jitprop.prepare(X, y, loss) numbers text labels")  # fmt: skip
    lo, hi = y.min(), y.max()
    if lo < 0 or hi >= k:
        raise DataError(
            f"{what} has class labels from {lo:g} to {hi:g}, but the model has {k} outputs,"
            f" so labels must lie in 0..{k - 1}"
        )
    return np.ascontiguousarray(y, dtype=np.int64)


# -- the preparation step -------------------------------------------------


@dataclass
class Standardiser:
    """Inputs standardised by the training rows' mean and standard deviation, per feature (per
    channel for images); a constant feature has std 1, so it stays at 0."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, X, shape=None):
        """Statistics of the rows ``X``: per feature, or for images (``shape`` (C, H, W)) per channel,
        over every pixel, as torchvision's Normalize uses; then a pixel that is almost always blank
        is not blown up by its own tiny spread."""
        with np.errstate(over="ignore", invalid="ignore"):
            if shape is not None and len(shape) == 3:
                planes = X.reshape(X.shape[0], shape[0], -1)
                mean = np.repeat(planes.mean(axis=(0, 2)), shape[1] * shape[2])
                std = np.repeat(planes.std(axis=(0, 2)), shape[1] * shape[2])
            else:
                mean, std = X.mean(axis=0), X.std(axis=0)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            bad = int(np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std)))[0])
            raise DataError(f"feature column {bad} is too large to standardise (its spread overflows);"
                            " rescale it, or do not standardise (--no-normalize)")  # fmt: skip
        std[std == 0] = 1.0
        return cls(mean, std)

    def __call__(self, X):
        return (X - self.mean) / self.std

    def arrays(self):
        """What a checkpoint keeps (``info/norm_mean``, ``info/norm_std``)."""
        return {"norm_mean": self.mean, "norm_std": self.std}

    @classmethod
    def saved(cls, checkpoint):
        """The statistics a checkpoint's run standardised with, or None."""
        mean = checkpoint.info_array("norm_mean")
        return None if mean is None else cls(mean, checkpoint.info_array("norm_std"))


@dataclass
class Prepared:
    """Data as a model trains on it."""

    X: np.ndarray  # float64 rows (n, features), standardised when asked
    y: np.ndarray  # class indices (int64, n) or values (float64, (n, k)); None without targets
    loss: object
    outputs: int  # the output layer's width the targets need; None without targets
    shape: tuple  # one sample's shape, for Sequential(input_shape=...)
    labels: list = None  # class names: index i is class i
    scaler: Standardiser = None
    source: str = None
    target_name: str = None

    def apply(self, X, y=None, source=None):
        """Other data (test rows, new rows) prepared as this was: the same labels, statistics and shape."""
        return prepare(X, y, self.loss, labels=self.labels, scaler=self.scaler, shape=self.shape, source=source,
                       target_name=self.target_name)  # fmt: skip

    def check_model(self, model):
        """This data fits ``model``: its features in, and (with targets) its classes or values out."""
        with _about(self.source):
            self._check(model)

    def _check(self, model):
        check_inputs(model, self.X.shape[1], "X", self.shape)
        if self.y is not None:
            what = "y" if self.target_name is None else repr(self.target_name)
            check_outputs(self.loss, model.output_dim, what, self.outputs, classes=self.labels is not None)


def prepare(X, y, loss, *, labels=None, normalize=False, scaler=None, fit_rows=None, shape=None, model=None,
            source=None, target_name=None):  # fmt: skip
    """Check X and y and turn them into what a model with ``loss`` trains on.

    Class labels (whole numbers or text) become indices in sorted order,
    named by ``labels``; pass a trained model's ``labels`` to encode new data
    the same way. ``normalize`` standardises the inputs by their mean and std
    over ``fit_rows`` (default: every row), or ``scaler`` applies statistics
    already fitted. ``y`` may be None for inputs only. ``shape`` is one
    sample's shape when X's rows are flat. Given a ``model``, the data must
    fit it (``Prepared.check_model``). ``source`` (a file, a data set) starts
    every error message, which calls the targets ``target_name``.
    """
    loss = api.loss(loss)
    what_y = "y" if target_name is None else repr(target_name)
    with _about(source):
        X, shape = rows_of(X, "X", shape)
        if math.prod(shape) != X.shape[1]:
            raise DataError(f"X has {X.shape[1]} features per row, but samples of shape {shape} have {math.prod(shape)}")
        X = np.ascontiguousarray(X, dtype=np.float64)
        outputs = None
        if y is not None:
            y = target_rows(y, X.shape[0], what_y)
            if loss.target == "class":
                y, labels = encode_labels(y, loss, labels, what_y)
                outputs = len(labels)
            else:
                y = np.ascontiguousarray(value_columns(y, loss, what_y), dtype=np.float64)
                outputs = y.shape[1]
        data = Prepared(X, y, loss, outputs, shape, labels if loss.target == "class" else None, None, source, target_name)
        if model is not None:
            data._check(model)
        if scaler is None and normalize:
            scaler = Standardiser.fit(X if fit_rows is None else X[fit_rows], shape)
        if scaler is not None:
            if scaler.mean.shape != (X.shape[1],):
                raise DataError(f"X has {X.shape[1]} features per row, but the standardisation has {scaler.mean.size}")
            data.X, data.scaler = scaler(X), scaler
    return data


@contextmanager
def _about(source):
    """Errors start with ``source``: "iris.csv: ..." (as every file error does)."""
    try:
        yield
    except DataError as exc:
        if source is None:
            raise
        raise DataError(f"{source}: {exc}") from None
