"""Reading ``.npz`` files safely, sizing memory, and the array conversions ``prepare`` builds on.

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


def listed(names, limit=10):
    """Names for a message: the first ``limit``, quoted where they hold line breaks or other
    unprintable characters, so the message stays one line."""
    shown = [n if n.isprintable() else repr(n) for n in names[:limit]]
    return ", ".join(shown) + (", ..." if len(names) > limit else "")


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


def load_npz(path, damaged, name=None):
    """Every array of an ``.npz`` file by name, read without pickle and without trusting its sizes.

    ``np.load`` refuses pickles with ``allow_pickle=False``, but it allocates whatever shape a
    member's header declares (a few bytes can ask for exabytes), gives a member that is not
    ``.npy`` back as raw bytes, and a file that starts like ``.npy`` as a bare array. Here every
    member must be an ``.npy`` array whose header is checked against the member's size and the
    memory available before anything is allocated. ``damaged`` starts the message for a file
    that cannot be read ("not a readable .npz file"). ``path`` may be an open binary file, then
    ``name`` is what messages call it.
    """
    source, path = path, path if name is None else name
    arrays = {}
    budget = available_memory()
    try:
        with zipfile.ZipFile(source) as archive:
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


def numeric(array, what, text=False):
    """``array`` as a NumPy array of numbers (or, with ``text``, of strings), or a DataError."""
    try:
        a = np.asarray(array)
        if text and a.dtype.kind == "O" and all(isinstance(v, str) for v in a.flat):
            a = a.astype(str)  # text labels as pandas holds them
    except Exception as exc:
        raise DataError(f"{what} could not be read as an array: {one_line(exc)}") from None
    # Kinds bool, int, unsigned, float: np.number would let complex and timedelta64 through.
    if a.dtype.kind not in ("biufU" if text else "biuf"):
        raise DataError(f"{what} must hold numbers, got values of type {a.dtype}")
    return a


def to_dtype(a, dtype, what):
    """``a`` as a C-contiguous array of ``dtype``; a value beyond the range of a narrower float
    (1e300 as float32) would silently become inf, so it is an error instead."""
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(a, dtype=dtype)
    if out.size and a.dtype.kind == "f" and out.dtype.itemsize < a.dtype.itemsize:
        bad = first_nonfinite_row(out.reshape(len(out), -1))
        if bad is not None:
            raise DataError(f"{what} holds values too large for {out.dtype} (first in row {bad}); rescale them or use float64")
    return out


def first_nonfinite_row(X, block=8192):
    """Index of the first row holding NaN or inf, checked a block of rows at a time
    so a large data set needs no temporary the size of itself."""
    for start in range(0, X.shape[0], block):
        ok = np.isfinite(X[start : start + block]).all(axis=1)
        if not ok.all():
            return start + int(np.argmin(ok))
    return None
