"""Checking and converting arrays before any kernel sees them, and reading ``.npz`` files safely.

Every problem is reported as one DataError sentence that names the array,
what was expected and what was found.
"""

import lzma
import math
import os
import struct
import tokenize
import warnings
import zipfile
import zlib

import numpy as np
from numpy.lib import format as npy_format

from ..errors import DataError

#: What a damaged zip archive or .npy header raises: zipfile's errors (NotImplementedError for an
#: unknown compression method and RuntimeError for an encrypted entry are both RuntimeErrors),
#: the decompressors', and numpy's header parser's (ValueError, TypeError, SyntaxError, and
#: tokenize's TokenError from its fallback for headers written by Python 2).
DAMAGED = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError, TypeError, SyntaxError,
           tokenize.TokenError, struct.error, RuntimeError)  # fmt: skip

_NPY_HEADERS = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
_CHUNK = 1 << 24


def one_line(exc):
    """An exception's message as one short line, for quoting inside a DataError."""
    text = str(exc).strip().splitlines()
    text = text[0] if text else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def available_memory():
    """Bytes a new allocation can have: the smaller of MemAvailable and the cgroup's headroom
    (Linux), else the physical memory, else None when the system does not say."""
    limits = []
    try:
        with open("/proc/meminfo") as f:
            limits += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f, open("/sys/fs/cgroup/memory.current") as g:
            top = f.read().strip()
            if top != "max":
                limits.append(int(top) - int(g.read()))
    except (OSError, ValueError):
        pass
    if not limits:
        try:
            limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, OSError, ValueError):
            return None
    return max(0, min(limits))


def size_text(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}" if n < 1e6 else f"{n:.3g} {unit}"
        n /= 1024


def check_fits(nbytes, what, budget=None):
    """Refuse, before allocating, ``nbytes`` that the available memory (or ``budget``) cannot hold."""
    budget = available_memory() if budget is None else budget
    if budget is not None and nbytes > budget:
        raise DataError(f"{what} needs {size_text(nbytes)}, more than the {size_text(budget)} of memory available")


def load_npz(path, damaged):
    """Every array of an ``.npz`` file by name, read without pickle and without trusting its sizes.

    ``np.load`` refuses pickles with ``allow_pickle=False``, but it allocates whatever shape a
    member's header declares (a few bytes can ask for exabytes), gives a member that is not
    ``.npy`` back as raw bytes, and a file that starts like ``.npy`` as a bare array. Here every
    member must be an ``.npy`` array whose header is checked against the member's size and the
    memory available before anything is allocated. ``damaged`` starts the message for a file
    that cannot be read ("not a readable .npz file").
    """
    arrays = {}
    budget = available_memory()
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                key = info.filename[:-4]
                if not info.filename.endswith(".npy"):
                    raise DataError(f"{path}: {damaged} (entry {info.filename[:60]!r} is not an .npy array)")
                if key in arrays:
                    raise DataError(f"{path}: {damaged} (two arrays named {key[:60]!r})")
                with archive.open(info) as f:
                    arrays[key], need = _read_npy(f, info.file_size, path, key, damaged, budget)
                if budget is not None:
                    budget -= need
    except DataError:
        raise
    except DAMAGED as exc:
        raise DataError(f"{path}: {damaged} ({type(exc).__name__}: {one_line(exc)})") from None
    return arrays


def _read_npy(f, size, path, name, damaged, budget):
    """One .npy member ``f`` of ``size`` bytes: ``(array, bytes it may take)``."""
    key = name if len(name) <= 60 else name[:57] + "..."  # as messages show it
    version = npy_format.read_magic(f)
    if version not in _NPY_HEADERS:
        raise DataError(f"{path}: {damaged} (array {key!r} has .npy format version {version[0]}.{version[1]})")
    with warnings.catch_warnings():  # numpy warns about reading Python 2 headers: noise on the command line
        warnings.simplefilter("ignore")
        shape, fortran, dtype = _NPY_HEADERS[version](f)
    if dtype.hasobject:
        raise DataError(f"{path}: array {key!r} holds Python objects, which only pickle can load; jitprop never unpickles")
    if any(d < 0 for d in shape):
        raise DataError(f"{path}: {damaged} (array {key!r} declares the shape {shape})")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if nbytes != size - f.tell():
        raise DataError(
            f"{path}: {damaged} (array {key!r} declares {shape} of {dtype}, {nbytes} bytes, but holds {size - f.tell()})"
        )
    # Room for the array and for a float64 copy of it, which training makes of smaller types.
    need = count * max(dtype.itemsize, 8)
    what = f"{path}: array {key!r} of shape {shape}"
    check_fits(need, what, budget)
    try:
        out = np.empty(count, dtype)
    except MemoryError:  # where the system does not tell the memory available
        raise DataError(f"{what} needs {size_text(nbytes)}, more memory than there is") from None
    view, done = memoryview(out.view(np.uint8)) if nbytes else None, 0
    while done < nbytes:
        chunk = f.read(min(_CHUNK, nbytes - done))
        if not chunk:
            raise EOFError(f"array {key!r} is truncated")
        view[done : done + len(chunk)] = chunk
        done += len(chunk)
    if f.read(1):  # reading to the end also makes zipfile compare the CRC
        raise ValueError(f"data after array {key!r}")
    return (out.reshape(shape[::-1]).T if fortran else out.reshape(shape)), need


def _numeric(array, what):
    try:
        a = np.asarray(array)
    except Exception as exc:
        raise DataError(f"{what} could not be read as an array: {one_line(exc)}") from None
    # Kinds bool, int, unsigned, float: np.number would let complex and timedelta64 through.
    if a.dtype.kind not in "biuf":
        raise DataError(f"{what} must hold numbers, got values of type {a.dtype}")
    return a


def _cast(a, dtype, what):
    """``a`` as a C-contiguous array of ``dtype``; a value beyond the range of a narrower float
    (1e300 as float32) would silently become inf, so it is an error instead."""
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(a, dtype=dtype)
    if out.size and a.dtype.kind == "f" and out.dtype.itemsize < a.dtype.itemsize:
        bad = first_nonfinite_row(out.reshape(len(out), -1))
        if bad is not None:
            raise DataError(f"{what} holds values too large for {out.dtype} (first in row {bad}); rescale them or use float64")
    return out


def as_inputs(model, X, what="X"):
    """X as a C-contiguous (n, input_dim) array of the model's dtype, or a DataError.

    A model with a per-sample shape (``input_shape=(1, 8, 8)``) takes X of shape
    (n, 1, 8, 8), or already flat, (n, 64); every row is one sample in C order.
    """
    X = _numeric(X, what)
    shape = model.input_shape
    if X.ndim == 1 and model.input_dim == 1:
        X = X.reshape(-1, 1)
    if len(shape) > 1 and X.ndim == len(shape) + 1:
        if X.shape[1:] != shape:
            raise DataError(f"{what} holds samples of shape {X.shape[1:]}, but the model expects input_shape={shape}")
        X = X.reshape(X.shape[0], -1)
    if X.ndim != 2:
        expected = "2-D (samples, features)" if len(shape) == 1 else f"of shape (samples, {', '.join(map(str, shape))})"
        raise DataError(f"{what} must be {expected}, got shape {X.shape}")
    if X.shape[0] == 0:
        raise DataError(f"{what} has no rows")
    if X.shape[1] != model.input_dim:
        expects = f"input_dim={model.input_dim}" if len(shape) == 1 else f"input_shape={shape}, {model.input_dim} values"
        raise DataError(f"{what} has {X.shape[1]} features per row, but the model expects {expects}")
    bad = first_nonfinite_row(X)
    if bad is not None:
        raise DataError(f"{what} holds NaN or infinite values (first in row {bad}); clean or impute them first")
    return _cast(X, model.dtype, what)


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
    if n == 0:  # min() and max() below have nothing to reduce
        raise DataError(f"{what} has no rows")
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
    return _cast(y, model.dtype, what)
