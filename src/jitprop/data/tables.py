"""Data sets and data files: what ``--dataset`` names and what ``.csv`` / ``.npz`` files hold.

Built-in and plugin data sets (``contracts/datasets.py``) load a ``Table``;
user files are read here into one, with every problem reported as one
DataError sentence.
"""

import csv
import difflib
import inspect
import io
import math
import os
import re
import stat
import zipfile
from array import array
from collections import Counter
from pathlib import Path

import numpy as np

from ..contracts.datasets import Table
from ..errors import ConfigError, DataError
from ..plugins import registry
from .arrays import available_memory, check_fits, first_nonfinite_row, listed, load_npz, size_text
from .runconfig import parse_spec, toml_value

FILE_SUFFIXES = (".csv", ".npz")

#: Cells that hold no value, compared stripped and case-insensitively: what pandas reads as missing by
#: default ("", NA, N/A, NaN, null) and what UCI's files write ("?"). Any other text in a feature
#: column makes it a text (category) column; in the target column, a missing cell is refused.
MISSING = frozenset({"", "na", "n/a", "nan", "null", "?"})
MISSING_SHOWN = "empty, NA, N/A, NaN, null or ?"


def is_missing(cell):
    return cell.strip().lower() in MISSING


def is_file_spec(spec):
    """A path (``data.csv``, ``./runs/x``), not a data set name with options (``spirals:noise=0.3``)."""
    if Path(spec).exists() or re.match(r"[A-Za-z]:[\\/]", spec):  # C:\data.csv
        return True
    head = spec.partition(":")[0]
    return "/" in head or "\\" in head or Path(head).suffix != ""


def load_table(spec, target=None, need_target=True, features=None, drop=None, as_text=()):
    """A Table from a registered data set (``NAME[:k=v,...]``) or a .csv / .npz path.

    ``features`` names the CSV columns to read as inputs, in order (a trained
    model's); by default every column but the target and those in ``drop``.
    ``as_text`` names columns whose cells are kept as text even where they
    are all numbers (a trained model's category columns).
    """
    if not isinstance(spec, str) or not spec:
        raise ConfigError("--dataset needs a data set name or a .csv / .npz file")
    if is_file_spec(spec):
        return read_file(spec, target, need_target, features, drop, as_text)
    for given, flag in ((target, "--target"), (drop, "--drop")):
        if given:
            raise ConfigError(f"{flag} applies to CSV files, not to the built-in data set {spec!r}")
    dataset, name = make_dataset(spec)
    table = dataset.load()
    table.source = table.source or name
    return table


def make_dataset(spec):
    """``(data set, its spec written out)`` for ``NAME[:k=v,...]``: the options are the data set
    constructor's, parsed as every ``NAME:k=v`` on the command line is (``runconfig.parse_spec``), and
    an unknown one is named with the known ones. The spec written out names the options given, in the
    constructor's order, as the data set holds them: what the run configuration keeps."""
    options = parse_spec(spec)
    entry = registry.lookup("dataset", options.pop("name"))
    init = entry.cls.__init__
    params = {} if init is object.__init__ else inspect.signature(init).parameters
    known = [k for k, p in params.items() if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in options if k not in known]
        if unknown:
            takes = f"takes {', '.join(known)}" if known else "takes no options"
            raise ConfigError(f"dataset {entry.name!r} {takes}, not {unknown[0]!r}")
    dataset = registry.create("dataset", entry.name, **options)
    given = [k for k in known if k in options] + [k for k in options if k not in known]
    written = ",".join(f"{k}={toml_value(getattr(dataset, k, options[k]))}" for k in given)
    return dataset, entry.name + (f":{written}" if written else "")


def dataset_spec(spec):
    """``spec`` as a run configuration keeps it: a file as given, a data set as ``make_dataset`` writes it."""
    return spec if is_file_spec(spec) else make_dataset(spec)[1]


def read_file(path, target=None, need_target=True, features=None, drop=None, as_text=()):
    """Read a .csv (with header) or .npz (arrays X, y) file."""
    p = Path(path)
    if p.suffix.lower() not in FILE_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {p.suffix or '(none)'!r}; use a .csv file with a header or an .npz file")
    if not p.exists():
        raise DataError(f"{path}: no such file")
    if p.is_dir():
        raise DataError(f"{path}: is a directory, not a data file")
    if p.suffix.lower() == ".csv":
        return read_csv(p, target, need_target, features, drop, as_text)
    if target is not None:
        raise ConfigError("--target applies to CSV files; an .npz file holds its targets in array 'y'")
    if drop:
        raise ConfigError("--drop applies to CSV files; an .npz file's X has no named columns")
    return read_npz(p, need_target)


def csv_header(spec):
    """The column names of a CSV file ``spec``, or [] for anything else (or a file that cannot say)."""
    if not (is_file_spec(spec) and Path(spec).suffix.lower() == ".csv"):
        return []
    try:
        with open(spec, encoding="utf-8-sig", newline="") as f:
            return [h.strip() for h in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []  # reading the file itself says what is wrong


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


#: Read from a device or pipe (no size to check first) in pieces of this many bytes.
CHUNK = 1 << 20


def read_bounded(path, what):
    """The bytes of ``path``, refused in one line when memory cannot hold them (with the text made of
    them: twice their size). A regular file's size is checked before reading; a device or pipe
    (``/dev/stdin``; ``/dev/zero``, which never ends) is read until it ends or passes that bound."""
    with open(path, "rb") as f:
        info = os.fstat(f.fileno())
        if stat.S_ISREG(info.st_mode):
            check_fits(2 * info.st_size, what)
            return f.read()
        budget = available_memory()
        limit = (budget if budget is not None else 8 << 30) // 2
        data = bytearray()
        while chunk := f.read(CHUNK):
            data += chunk
            if len(data) > limit:
                raise DataError(f"{what}: it is not a regular file, and it went on past {size_text(limit)}, half the"
                                " memory available, without ending; save the data to a file")  # fmt: skip
        return bytes(data)


def read_csv(path, target=None, need_target=True, features=None, drop=None, as_text=()):
    """A CSV file with a header row; the target column is ``target`` or, by default, the last.

    Feature cells are read as they are: numbers, missing cells (``MISSING``, NaN in X) and text, a
    column with any text becoming a text column (``Table.text``). ``data.prepare.Columns`` decides
    what each becomes (refused, filled, one-hot), with the training rows' statistics.
    """
    try:
        text = read_bounded(path, f"{path}: reading this CSV file").decode("utf-8-sig")
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8") from None
    rows = _csv_rows(path, text)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path}: the file is empty; a CSV needs a header row and data rows")
    header = [h.strip() for h in first[1]]
    looks = _other_delimiter(header)
    if looks and features != header:  # one column named "a;b;c": no run could use the file as it is read
        raise DataError(f"{path}: the header is one column, {_shown(header[0], 40)!r}, so the file looks {looks}-separated;"
                        " jitprop reads comma-separated files: save it with commas as the delimiter")  # fmt: skip
    dupes = sorted(h for h, n in Counter(header).items() if n > 1)
    if dupes:
        raise DataError(f"{path}: column name(s) {', '.join(map(repr, dupes[:5]))} appear more than once in the header")
    t = name = None
    if need_target:
        name = header[-1] if target is None else target
        if name not in header:
            close = difflib.get_close_matches(name, header, n=2)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else f"; columns: {listed(header)}"
            raise DataError(f"{path}: no target column {name!r}{hint}")
        t = header.index(name)
    if features is not None:
        missing = [f for f in features if f not in header]
        if missing:
            raise DataError(f"{path}: lacks the feature column(s) {', '.join(map(repr, missing[:5]))} the model was trained on")
        feature_idx = [header.index(f) for f in features]
    else:
        drop = list(drop or ())
        for column in drop:
            if column not in header:
                close = difflib.get_close_matches(column, header, n=2)
                hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else f"; columns: {listed(header)}"
                raise DataError(f"{path}: --drop names no column {column!r}{hint}")
        if name in drop:
            raise DataError(f"{path}: --drop names the target column {name!r}; pick another target with --target")
        feature_idx = [j for j in range(len(header)) if j != t and header[j] not in drop]
        if not feature_idx:
            raise DataError(f"{path}: no feature columns besides the target {name!r}" + (" and those dropped" if drop else ""))
    names = [header[j] for j in feature_idx]
    forced = {k for k, n in enumerate(names) if n in set(as_text)}
    values, targets, lines = array("d"), [], array("q")
    textual = set(forced)  # positions in feature_idx of the columns holding text
    for line, row in rows:
        if len(row) != len(header):
            raise DataError(f"{path}: line {line} has {len(row)} fields, the header has {len(header)}")
        try:  # the usual row, every cell a number (NaN and inf are looked at below)
            values.extend([float(row[j]) for j in feature_idx])
        except ValueError:
            for k, j in enumerate(feature_idx):
                values.append(_cell(row[j], k, textual))
        if t is not None:
            targets.append(row[t].strip())
        lines.append(line)
    if not lines:
        raise DataError(f"{path}: the file has a header but no data rows")
    X = np.frombuffer(values, dtype=np.float64).reshape(len(lines), len(feature_idx))  # writable: the array's buffer
    columns = sorted(textual)
    X[:, columns] = np.nan
    infinite = np.isinf(X)
    if infinite.any():  # "inf", "1e999": numbers, but none a model can take
        i, k = np.argwhere(infinite)[0]
        raise DataError(f"{path}: column {_shown(names[k], 40)!r} line {lines[i]} holds"
                        f" {_shown(_cell_on(text, lines[i], feature_idx[k]), 30)!r}, not a finite number;"
                        " clean or remove infinite values first")  # fmt: skip
    cells = {k: [] for k in columns}
    if cells:  # text columns: read again, their cells as text
        for _, row in _csv_rows(path, text, skip_header=True):
            for k in columns:
                cell = row[feature_idx[k]].strip()
                cells[k].append("" if cell.lower() in MISSING else cell)
    y = None if t is None else _targets(targets, lines, name, path)
    return Table(X, y, source=str(path), feature_names=names, target_name=name or "y",
                 text={k: np.array(v, dtype=str) for k, v in cells.items()}, lines=np.frombuffer(lines, np.int64))  # fmt: skip


def _other_delimiter(header):
    """"semicolon" or "tab" when a one-column header holds that delimiter (a European Excel export,
    a TSV file saved as .csv), else None."""
    if len(header) == 1:
        for char, name in ((";", "semicolon"), ("\t", "tab")):
            if char in header[0]:
                return name
    return None


def _cell(cell, k, textual):
    """A feature cell as a number; NaN when it is missing or text (column ``k`` then joins ``textual``)."""
    try:
        return float(cell)
    except ValueError:
        if cell.strip().lower() not in MISSING:
            textual.add(k)
        return math.nan


def _cell_on(text, line, j):
    """The cell of column ``j`` on ``line`` (for a message: the file is read again up to it)."""
    return next(row[j] for at, row in _csv_rows("", text) if at == line)


def _shown(text, width):
    return text if len(text) <= width else text[: width - 3] + "..."


def _csv_rows(path, text, skip_header=False):
    """``(line number, cells)`` of each row that is not blank; a quoted cell may span lines."""
    # newline="": csv splits rows itself, at \n, \r\n or a lone \r (old Mac files).
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            if row and any(cell.strip() for cell in row):
                if skip_header:
                    skip_header = False
                    continue
                yield reader.line_num, row
    except csv.Error as exc:  # a NUL byte, a cell over csv.field_size_limit(), ...
        raise DataError(f"{path}: line {reader.line_num} is not valid CSV ({exc})") from None


def _targets(raw, lines, name, path):
    """The target column as finite numbers or, if any cell is not a number, as text labels."""
    missing = next((i for i, v in enumerate(raw) if v.lower() in MISSING), None)
    if missing is not None:
        held = "empty" if not raw[missing] else f"missing ({_shown(raw[missing], 10)!r})"
        raise DataError(f"{path}: target column {name!r} is {held} on line {lines[missing]}; remove the rows without a target")
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
