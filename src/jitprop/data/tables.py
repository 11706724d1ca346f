"""Data sets and data files: what ``--dataset`` names and what ``.csv`` / ``.npz`` files hold.

Built-in and plugin data sets (``contracts/datasets.py``) load a ``Table``;
user files are read here into one, with every problem reported as one
DataError sentence.
"""

import csv
import difflib
import io
import math
import zipfile
from array import array
from collections import Counter
from pathlib import Path

import numpy as np

from ..contracts.datasets import Table
from ..errors import ConfigError, DataError
from ..plugins import registry
from .arrays import check_fits, first_nonfinite_row, listed, load_npz

FILE_SUFFIXES = (".csv", ".npz")


def is_file_spec(spec):
    return "/" in spec or "\\" in spec or Path(spec).suffix != "" or Path(spec).exists()


def load_table(spec, target=None, need_target=True, features=None):
    """A Table from a registered data set name or a .csv / .npz path.

    ``features`` names the CSV columns to read as inputs, in order (a trained
    model's); by default every column but the target.
    """
    if not isinstance(spec, str) or not spec:
        raise ConfigError("--dataset needs a data set name or a .csv / .npz file")
    if is_file_spec(spec):
        return read_file(spec, target, need_target, features)
    if target is not None:
        raise ConfigError(f"--target applies to CSV files, not to the built-in data set {spec!r}")
    dataset = registry.create("dataset", spec)
    table = dataset.load()
    table.source = table.source or dataset.name
    return table


def read_file(path, target=None, need_target=True, features=None):
    """Read a .csv (with header) or .npz (arrays X, y) file."""
    p = Path(path)
    if p.suffix.lower() not in FILE_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {p.suffix or '(none)'!r}; use a .csv file with a header or an .npz file")
    if not p.exists():
        raise DataError(f"{path}: no such file")
    if p.is_dir():
        raise DataError(f"{path}: is a directory, not a data file")
    if p.suffix.lower() == ".csv":
        return read_csv(p, target, need_target, features)
    if target is not None:
        raise ConfigError("--target applies to CSV files; an .npz file holds its targets in array 'y'")
    return read_npz(p, need_target)


def read_npz(path, need_target=True):
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a readable .npz file (not a zip archive)")
    data = load_npz(path, "not a readable .npz file")
    if "X" not in data:
        raise DataError(f"{path}: an .npz data file needs an array named 'X' (found: {listed(sorted(data)) or 'none'})")
    X, y = data["X"], data.get("y")
    if need_target and y is None:
        raise DataError(f"{path}: an .npz training file needs an array named 'y' beside 'X'")
    if X.dtype.kind not in "iufb" or X.ndim < 2:
        raise DataError(f"{path}: X must be a numeric array of rows (2-D, or one shaped sample per row), got {X.dtype}"
                        f" of shape {X.shape}")  # fmt: skip
    if X.shape[0] == 0 or 0 in X.shape[1:]:
        raise DataError(f"{path}: X has no {'rows' if X.shape[0] == 0 else 'columns'} (shape {X.shape})")
    shape = X.shape[1:] if X.ndim > 2 else None  # images (n, C, H, W), say: kept flat, their shape noted
    X = X.reshape(X.shape[0], -1)
    with np.errstate(over="ignore"):  # a float128 beyond float64's range becomes inf, refused below
        X = np.asarray(X, np.float64)
    bad = first_nonfinite_row(X)
    if bad is not None:
        raise DataError(f"{path}: X holds NaN or infinite values (first in row {bad}); clean or impute them first")
    if y is not None:
        if y.ndim not in (1, 2) or y.shape[0] != X.shape[0] or (y.ndim == 2 and y.shape[1] == 0):
            raise DataError(f"{path}: y must have one row per row of X ({X.shape[0]}), got shape {y.shape}")
        if y.dtype.kind not in "iufbU":
            raise DataError(f"{path}: y must hold numbers or text labels, got {y.dtype}")
        bad = first_nonfinite_row(y.reshape(len(y), -1)) if y.dtype.kind == "f" else None
        if bad is not None:
            raise DataError(f"{path}: y holds NaN or infinite values (first in row {bad})")
    return Table(X, y, source=str(path), shape=shape)


def read_csv(path, target=None, need_target=True, features=None):
    """A CSV file with a header row; the target column is ``target`` or, by default, the last."""
    try:
        # The bytes and the text, then 8 bytes a feature value: cells become numbers row by row.
        check_fits(2 * Path(path).stat().st_size, f"{path}: reading this CSV file")
        text = Path(path).read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8") from None
    rows = _csv_rows(path, text)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path}: the file is empty; a CSV needs a header row and data rows")
    header = [h.strip() for h in first[1]]
    dupes = sorted(h for h, n in Counter(header).items() if n > 1)
    if dupes:
        raise DataError(f"{path}: column name(s) {', '.join(map(repr, dupes[:5]))} appear more than once in the header")
    t = name = None
    if features is not None:
        missing = [f for f in features if f not in header]
        if missing:
            raise DataError(f"{path}: lacks the feature column(s) {', '.join(map(repr, missing[:5]))} the model was trained on")
        feature_idx = [header.index(f) for f in features]
    else:
        if need_target:
            name = header[-1] if target is None else target
            if name not in header:
                close = difflib.get_close_matches(name, header, n=2)
                hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else f"; columns: {listed(header)}"
                raise DataError(f"{path}: no target column {name!r}{hint}")
            t = header.index(name)
        feature_idx = [j for j in range(len(header)) if j != t]
        if not feature_idx:
            raise DataError(f"{path}: no feature columns besides the target {name!r}")
    values, targets, lines = array("d"), [], array("q")
    for line, row in rows:
        if len(row) != len(header):
            raise DataError(f"{path}: line {line} has {len(row)} fields, the header has {len(header)}")
        values.extend(_number(row[j], header[j], line, path) for j in feature_idx)
        if t is not None:
            targets.append(row[t].strip())
        lines.append(line)
    if not lines:
        raise DataError(f"{path}: the file has a header but no data rows")
    X = np.frombuffer(values, dtype=np.float64).reshape(len(lines), len(feature_idx))
    names = list(features) if features is not None else [header[j] for j in feature_idx]
    y = None if t is None else _targets(targets, lines, name, path)
    return Table(X, y, source=str(path), feature_names=names, target_name=name or "y")


def _csv_rows(path, text):
    """``(line number, cells)`` of each row that is not blank; a quoted cell may span lines."""
    # newline="": csv splits rows itself, at \n, \r\n or a lone \r (old Mac files).
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            if row and any(cell.strip() for cell in row):
                yield reader.line_num, row
    except csv.Error as exc:  # a NUL byte, a cell over csv.field_size_limit(), ...
        raise DataError(f"{path}: line {reader.line_num} is not valid CSV ({exc})") from None


def _number(cell, column, line, path):
    try:
        value = float(cell)
    except ValueError:
        value = None
    if value is not None and math.isfinite(value):
        return value
    shown = cell if len(cell) <= 30 else cell[:27] + "..."
    column = column if len(column) <= 40 else column[:37] + "..."
    if value is None:
        why = "not a number; feature columns must be numeric (pick the label column with --target)"
    else:  # float() also reads "nan", "inf" and "1e999"
        why = "not a finite number; clean or impute missing and infinite values first"
    raise DataError(f"{path}: column {column!r} line {line} holds {shown!r}, {why}")


def _targets(raw, lines, name, path):
    """The target column as finite numbers or, if any cell is not a number, as text labels."""
    if "" in raw:
        raise DataError(f"{path}: target column {name!r} is empty on line {lines[raw.index('')]}")
    try:
        y = np.array([float(v) for v in raw])
    except ValueError:
        # A text label per row, as wide as the longest: refuse a width the memory cannot hold.
        check_fits(len(raw) * max(map(len, raw)) * 4, f"{path}: the text labels of column {name!r}")
        return np.array(raw)
    finite = np.isfinite(y)
    if not finite.all():
        i = int(np.argmin(finite))
        raise DataError(
            f"{path}: target column {name!r} holds {raw[i][:30]!r} on line {lines[i]}; targets must be finite numbers or text labels"
        )
    return y
