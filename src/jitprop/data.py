"""Checking and converting arrays before any kernel sees them.

Every problem is reported as one DataError sentence that names the array,
what was expected and what was found.
"""

import numpy as np

from .errors import DataError


def _numeric(array, what):
    try:
        a = np.asarray(array)
    except Exception as exc:
        raise DataError(f"{what} could not be read as an array: {exc}") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise DataError(f"{what} must hold numbers, got values of type {a.dtype}")
    return a


def as_inputs(model, X, what="X"):
    """X as a C-contiguous (n, input_dim) array of the model's dtype, or a DataError."""
    X = _numeric(X, what)
    if X.ndim == 1 and model.input_dim == 1:
        X = X.reshape(-1, 1)
    if X.ndim != 2:
        raise DataError(f"{what} must be 2-D (samples, features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise DataError(f"{what} has no rows")
    if X.shape[1] != model.input_dim:
        raise DataError(f"{what} has {X.shape[1]} features per row, but the model expects input_dim={model.input_dim}")
    bad = first_nonfinite_row(X)
    if bad is not None:
        raise DataError(f"{what} holds NaN or infinite values (first in row {bad}); clean or impute them first")
    return np.ascontiguousarray(X, dtype=model.dtype)


def first_nonfinite_row(X, block=8192):
    """Index of the first row holding NaN or inf, checked a block of rows at a time
    so a large data set needs no temporary the size of itself."""
    for start in range(0, X.shape[0], block):
        ok = np.isfinite(X[start : start + block]).all(axis=1)
        if not ok.all():
            return start + int(np.argmin(ok))
    return None


def as_targets(model, loss, y, n, what="y"):
    """y converted to what ``loss.target`` promises its kernel, or a DataError."""
    y = _numeric(y, what)
    k = model.output_dim
    if y.shape[:1] != (n,):
        raise DataError(f"{what} has {y.shape[0] if y.ndim else 0} rows but the inputs have {n}")
    message = loss.check_output_dim(k)
    if message:
        raise DataError(message)
    if not np.all(np.isfinite(y)):
        raise DataError(f"{what} holds NaN or infinite values")
    if loss.target == "class":
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise DataError(
                f"loss {loss.name!r} takes integer class labels of shape (n,), got shape {y.shape}"
                " (one-hot targets? pass y.argmax(axis=1))"
            )
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise DataError(f"loss {loss.name!r} takes integer class labels, but {what} has fractional values")
        lo, hi = y.min(), y.max()
        if lo < 0 or hi >= k:
            raise DataError(
                f"{what} has class labels from {lo:g} to {hi:g}, but the model has {k} outputs,"
                f" so labels must lie in 0..{k - 1}"
            )
        return np.ascontiguousarray(y, dtype=np.int64)
    if y.ndim == 1 and k == 1:
        y = y.reshape(-1, 1)
    if y.ndim != 2 or y.shape[1] != k:
        raise DataError(f"loss {loss.name!r} needs {what} of shape ({n}, {k}) to match the model's outputs, got {y.shape}")
    if loss.target == "binary" and (y.min() < 0 or y.max() > 1):
        raise DataError(f"loss {loss.name!r} needs targets between 0 and 1, but {what} spans {y.min():g} to {y.max():g}")
    return np.ascontiguousarray(y, dtype=model.dtype)
