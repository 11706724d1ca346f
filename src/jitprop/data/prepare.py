"""From data to what a model trains on: checked inputs, encoded targets, the output width, standardisation.

``prepare(X, y, loss)`` is the one preparation step. ``jitprop train``,
``evaluate`` and ``predict`` run every table through it, and Python code
calls it as ``jitprop.prepare`` to get the same arrays the command line
trains on::

    data = jitprop.prepare(X, species, "cross_entropy", normalize=True)
    model = jitprop.Sequential([..., jitprop.layer("dense", units=data.outputs)], input_shape=data.shape)
    jitprop.fit(model, data.X, data.y, loss="cross_entropy")
    test = data.apply(X_test, species_test)        # the training rows' labels and statistics

Before it, the command line decides what the target is (``target_task``:
classes or a quantity) and what a CSV file's columns become (``Columns``:
numbers, one-hot categories, missing cells filled or refused), with the
training rows' statistics, which the checkpoint keeps.

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
from .tables import MISSING_SHOWN


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


# -- classes or quantities: the task rule ---------------------------------

TASKS = ("classification", "regression")
DEFAULT_LOSS = {"classification": "cross_entropy", "regression": "mse"}
#: The task rule's numbers (``target_task``).
MAX_CLASSES = 20
ROWS_PER_CLASS = 5
#: Beyond 2**53 every float64 is a whole number, so being whole says nothing: such targets are quantities.
LARGEST_LABEL = 2.0**53


def target_task(y, name="y"):
    """``(task, why)``: whether targets ``y`` are classes or quantities, and the evidence in words.

    The rule: text labels are classes; several columns of numbers, or any
    fractional number, or any float beyond 2**53 (where every float is
    whole), are quantities (regression). Whole numbers are classes
    when there are at most 2 distinct values (a yes/no label, however few the
    rows), or at most ``MAX_CLASSES`` (20) with at least ``ROWS_PER_CLASS``
    (5) rows for each on average; otherwise they are counts or measurements.
    The digits' 10 values in 1797 rows and iris's 3 in 150 are classes; the
    diabetes progression score's 214 distinct whole numbers in 442 rows (2
    rows a value) are a quantity, which a classifier could neither learn nor
    apply to a value it never saw. Every integer target is multiclass to
    scikit-learn's ``type_of_target``: that is the mistake this rule avoids.
    """
    y = np.asarray(y)
    what = repr(name)
    if y.dtype.kind not in "iufb":
        return "classification", f"{what} holds text labels ({len(set(y.ravel().tolist()))} distinct)"
    if y.ndim == 2 and y.shape[1] > 1:
        return "regression", f"{what} has {y.shape[1]} columns of numbers"
    values = y.ravel()
    if not np.all(np.mod(values, 1) == 0):
        return "regression", f"{what} holds fractional numbers"
    if y.dtype.kind == "f" and values.size and np.max(np.abs(values)) > LARGEST_LABEL:
        return "regression", f"{what} holds numbers beyond 2**53, too large to be class labels"
    k, n = len(np.unique(values)), len(values)
    held = f"{what} holds {k} distinct whole numbers in {n} rows"
    if k <= 2 or (k <= MAX_CLASSES and n >= ROWS_PER_CLASS * k):
        return "classification", held
    why = f"more than {MAX_CLASSES}" if k > MAX_CLASSES else f"fewer than {ROWS_PER_CLASS} rows a value"
    return "regression", f"{held}, {why}"


def check_task(y, task, name="y", asked=None):
    """A DataError unless targets ``y`` can be the ``task`` asked for (by ``asked``: ``--task ...``)."""
    y = np.asarray(y)
    asked = asked or f"--task {task}"
    if task == "regression" and y.dtype.kind not in "iufb":
        raise DataError(f"{asked} needs numbers, but {name!r} holds text like {str(y.flat[0])[:30]!r}")
    if task == "classification" and y.dtype.kind in "iufb":
        if y.ndim == 2 and y.shape[1] > 1:
            raise DataError(f"{asked} takes one class label per row, but {name!r} has {y.shape[1]} columns")
        fractional = y.ravel()[np.mod(y.ravel(), 1) != 0]
        if fractional.size:
            raise DataError(f"{asked} needs class labels (text or whole numbers), but {name!r} holds"
                            f" fractional numbers like {fractional[0]:g}")  # fmt: skip


def task_of(loss):
    """The task a loss trains: classification for class and binary targets, else regression."""
    return "classification" if loss.target in ("class", "binary") else "regression"


# -- the columns of a CSV file ------------------------------------------------

#: A text column becomes one input per category: at most this many, and at most one per two training
#: rows (so a category has two rows on average). An identifier, a free-text note, a number column
#: with a stray word in it exceed it, and are refused rather than blown up into a column per row.
MAX_CATEGORIES = 100
FILLS = ("mean", "median", "zero")


class Columns:
    """What each column of a CSV file becomes as inputs, fitted on the training rows; the checkpoint
    keeps it (``info.columns``) and ``predict`` applies it.

    A column of numbers is one input. A column holding any text (``tables``: a cell that is neither
    a number nor missing) is a category column, one-hot encoded: one input per category of the
    training rows, sorted, named ``color=red``; a category they lacked (in the validation rows, or
    new rows given to ``predict``) is all zeros, with one warning. Missing cells are refused, the
    first named, unless ``fill`` is "mean", "median" or "zero": a number column's missing cells then
    take the training rows' mean, median or 0, kept for every number column (new rows may lack
    other cells), and a text column's missing cell is all zeros, as an unseen category.
    """

    def __init__(self, specs, fill=None):
        self.specs, self.fill = specs, fill

    @property
    def names(self):
        """The CSV columns read, in order."""
        return [s["name"] for s in self.specs]

    @property
    def text_names(self):
        return [s["name"] for s in self.specs if s["kind"] == "category"]

    @property
    def feature_names(self):
        """The inputs' names: a number column's own, ``color=red`` for each category."""
        return [n for s in self.specs for n in ([s["name"]] if s["kind"] == "number" else
                                                 [f"{s['name']}={c}" for c in s["categories"]])]  # fmt: skip

    @property
    def one_hot(self):
        """Indices of the one-hot inputs (left unstandardised: 0 or 1 already, and an unseen
        category's zeros stay zeros, so they add nothing to the first layer)."""
        out, at = [], 0
        for s in self.specs:
            width = 1 if s["kind"] == "number" else len(s["categories"])
            if s["kind"] == "category":
                out.extend(range(at, at + width))
            at += width
        return np.array(out, dtype=np.int64)

    @classmethod
    def fit(cls, table, rows, fill=None):
        """The columns of ``table`` (as ``tables.read_csv`` reads a CSV) with the statistics of ``rows``."""
        if fill is not None and fill not in FILLS:
            raise DataError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
        specs = []
        for k, name in enumerate(table.feature_names):
            if k in table.text:
                cells = table.text[k]
                categories = sorted(set(cells[rows].tolist()) - {""})
                limit = min(MAX_CATEGORIES, len(rows) // 2)
                if len(categories) > limit:
                    i = _first_text(cells)
                    raise DataError(
                        f"column {name!r} is text (line {table.lines[i]} holds {_short(str(cells[i]))!r}) with {len(categories)}"
                        f" distinct values in {len(rows)} training rows, too many to one-hot encode (at most {MAX_CATEGORIES},"
                        f" and one per two training rows); leave it out with --drop {name}, or pick it with --target"
                    )
                if not categories:
                    raise DataError(f"column {name!r} has no values in the training rows; leave it out with --drop {name}")
                specs.append({"name": name, "kind": "category", "categories": categories})
                continue
            spec = {"name": name, "kind": "number"}
            if fill is not None:
                values = table.X[rows, k]
                values = values[~np.isnan(values)]
                if not values.size:
                    raise DataError(f"column {name!r} has no numbers in the training rows to take the {fill} of;"
                                    f" leave it out with --drop {name}")  # fmt: skip
                spec["fill"] = 0.0 if fill == "zero" else float(np.mean(values) if fill == "mean" else np.median(values))
            specs.append(spec)
        return cls(specs, fill)

    @classmethod
    def unfitted(cls, table):
        """Each column of ``table`` as it reads, before statistics: for ``refuse_missing`` first."""
        return cls([{"name": n, "kind": "category" if k in table.text else "number"} for k, n in enumerate(table.feature_names)])

    @classmethod
    def numbers(cls, names):
        """Columns of numbers alone, none filled: what checkpoints written before category columns read."""
        return cls([{"name": n, "kind": "number"} for n in names])

    def info(self):
        """What a checkpoint keeps (``info.columns``, ``info.fill``)."""
        return [dict(s) for s in self.specs]

    @classmethod
    def saved(cls, checkpoint):
        """The columns a checkpoint's run read, or None (a run on a data set or an .npz file, or one of
        a release before them)."""
        specs = checkpoint.info.get("columns")
        return None if specs is None else cls(specs, checkpoint.info.get("fill"))

    def encode(self, table):
        """``(X, report)``: the inputs of ``table``'s rows, read with these columns' names (``features``),
        and what was done (``report``: filled and blank cells, unseen categories, per column)."""
        if table.feature_names != self.names:
            raise DataError(f"holds the columns {listed(table.feature_names)}, but the model reads {listed(self.names)}")
        n = table.X.shape[0]
        self.refuse_missing(table)
        report = {"filled": {}, "blank": {}, "unseen": {}}
        parts = []
        for k, s in enumerate(self.specs):
            if s["kind"] == "number":
                if k in table.text:
                    i = _first_text(table.text[k])
                    raise DataError(f"column {s['name']!r} line {table.lines[i]} holds {_short(str(table.text[k][i]))!r}, not a"
                                    " number; the model was trained on numbers in this column")  # fmt: skip
                col = table.X[:, k].copy()
                gaps = np.isnan(col)
                if gaps.any():
                    col[gaps] = s["fill"]
                    report["filled"][s["name"]] = int(gaps.sum())
                parts.append(col[:, None])
                continue
            index = {c: i for i, c in enumerate(s["categories"])}
            if k not in table.text:  # read without as_text=Columns.text_names
                raise DataError(f"column {s['name']!r} was read as numbers, but the model takes its cells as categories")
            cells = table.text[k]
            codes = np.array([index.get(c, -1) for c in cells.tolist()], dtype=np.int64)
            block = np.zeros((n, len(s["categories"])))
            hit = codes >= 0
            block[np.flatnonzero(hit), codes[hit]] = 1.0
            blank = cells == ""
            if blank.any():
                report["blank"][s["name"]] = int(blank.sum())
            unseen = ~hit & ~blank
            if unseen.any():
                report["unseen"][s["name"]] = (int(unseen.sum()), sorted(set(cells[unseen].tolist()))[:3])
            parts.append(block)
        return np.ascontiguousarray(np.hstack(parts)), report

    def refuse_missing(self, table):
        """A DataError naming the first missing cell (by line, then column) that nothing fills: in a
        number column without a fill value, or in a text column without ``fill``."""
        first, count, columns = None, 0, 0
        for k, s in enumerate(self.specs):
            if s.get("fill") is not None or (s["kind"] == "category" and self.fill is not None):
                continue
            gaps = table.text[k] == "" if k in table.text else np.isnan(table.X[:, k])
            if gaps.any():
                count, columns = count + int(gaps.sum()), columns + 1
                i = int(np.argmax(gaps))
                if first is None or i < first[0]:
                    first = (i, s["name"])
        if first is not None:
            i, name = first
            where = f"{count} missing cell{'s' if count > 1 else ''}" + (f" in {columns} columns" if columns > 1 else "")
            raise DataError(f"column {name!r} line {table.lines[i]} (the header is line 1) is missing ({MISSING_SHOWN});"
                            f" {where}: give --fill mean, median or zero to fill them from the training rows, or remove"
                            " those rows")  # fmt: skip


def unseen_warning(report, source):
    """One line for the categories a table held that training had not seen, or None."""
    unseen = report["unseen"]
    if not unseen:
        return None
    parts = [f"{name} {count} ({', '.join(map(repr, [_short(e, 20) for e in examples]))}"
             f"{', ...' if count > len(examples) else ''})" for name, (count, examples) in unseen.items()]  # fmt: skip
    return f"warning: {source}: cells of categories unseen in training, encoded as all zeros: {'; '.join(parts)}"


def _first_text(cells):
    """The row of a text column's first cell that is no number (the reason it is text), else its first cell
    that is not missing (NumPy's text arrays drop trailing NUL characters: a cell of them reads as "")."""
    found = next((i for i, c in enumerate(cells) if c and not _number(c)), None)
    return found if found is not None else next((i for i, c in enumerate(cells) if c), 0)


def _number(cell):
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _short(text, width=30):
    return text if len(text) <= width else text[: width - 3] + "..."


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
    def fit(cls, X, shape=None, keep=None, what="feature column"):
        """Statistics of the rows ``X``: per feature, or for images (``shape`` (C, H, W)) per channel,
        over every pixel, as torchvision's Normalize uses; then a pixel that is almost always blank
        is not blown up by its own tiny spread. Features ``keep`` (one-hot columns) are left as
        they are: mean 0, std 1."""
        with np.errstate(over="ignore", invalid="ignore"):
            if shape is not None and len(shape) == 3:
                planes = X.reshape(X.shape[0], shape[0], -1)
                mean = np.repeat(planes.mean(axis=(0, 2)), shape[1] * shape[2])
                std = np.repeat(planes.std(axis=(0, 2)), shape[1] * shape[2])
            else:
                mean, std = X.mean(axis=0), X.std(axis=0)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            bad = int(np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std)))[0])
            flag = "--no-normalize" if what == "feature column" else "no --normalize-target"
            raise DataError(f"{what} {bad} is too large to standardise (its spread overflows);"
                            f" rescale it, or do not standardise ({flag})")  # fmt: skip
        std[std == 0] = 1.0
        if keep is not None and len(keep):
            mean[keep], std[keep] = 0.0, 1.0
        return cls(mean, std)

    def __call__(self, X):
        return (X - self.mean) / self.std

    def inverse(self, Z):
        """Standardised values back in their own units."""
        return Z * self.std + self.mean

    def arrays(self, prefix="norm"):
        """What a checkpoint keeps (``info/norm_mean``, ``info/norm_std``; the target's: ``target_``)."""
        return {f"{prefix}_mean": self.mean, f"{prefix}_std": self.std}

    @classmethod
    def saved(cls, checkpoint, prefix="norm"):
        """The statistics a checkpoint's run standardised with (its inputs, or with ``prefix="target"``
        its regression target), or None."""
        mean = checkpoint.info_array(f"{prefix}_mean")
        return None if mean is None else cls(mean, checkpoint.info_array(f"{prefix}_std"))


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
    target_scaler: Standardiser = None  # a regression target standardised (normalize_target): its statistics

    def apply(self, X, y=None, source=None):
        """Other data (test rows, new rows) prepared as this was: the same labels, statistics and shape."""
        return prepare(X, y, self.loss, labels=self.labels, scaler=self.scaler, shape=self.shape, source=source,
                       target_name=self.target_name, target_scaler=self.target_scaler)  # fmt: skip

    def in_target_units(self, predictions):
        """A model's outputs as values of the target (mapped back when it was standardised)."""
        out = np.asarray(predictions, dtype=np.float64)
        return out if self.target_scaler is None else self.target_scaler.inverse(out)

    def check_model(self, model):
        """This data fits ``model``: its features in, and (with targets) its classes or values out."""
        with about(self.source):
            self._check(model)

    def _check(self, model):
        check_inputs(model, self.X.shape[1], "X", self.shape)
        if self.y is not None:
            what = "y" if self.target_name is None else repr(self.target_name)
            check_outputs(self.loss, model.output_dim, what, self.outputs, classes=self.labels is not None)


def prepare(X, y, loss, *, labels=None, normalize=False, scaler=None, fit_rows=None, shape=None, model=None,
            source=None, target_name=None, keep=None, normalize_target=False, target_scaler=None):  # fmt: skip
    """Check X and y and turn them into what a model with ``loss`` trains on.

    Class labels (whole numbers or text) become indices in sorted order,
    named by ``labels``; pass a trained model's ``labels`` to encode new data
    the same way. ``normalize`` standardises the inputs by their mean and std
    over ``fit_rows`` (default: every row), but for the features ``keep``
    (one-hot columns, say), or ``scaler`` applies statistics already fitted.
    ``normalize_target`` standardises a regression target the same way
    (per column; ``Prepared.in_target_units`` maps predictions back), or
    ``target_scaler`` applies a trained model's. ``y`` may be None for inputs
    only. ``shape`` is one sample's shape when X's rows are flat. Given a
    ``model``, the data must fit it (``Prepared.check_model``). ``source`` (a
    file, a data set) starts every error message, which calls the targets
    ``target_name``.
    """
    loss = api.loss(loss)
    what_y = "y" if target_name is None else repr(target_name)
    with about(source):
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
        if (normalize_target or target_scaler is not None) and loss.target != "regression":
            raise DataError(f"only a regression target can be standardised, but loss {loss.name!r} takes"
                            f" {'classes' if loss.target == 'class' else 'targets between 0 and 1'}")  # fmt: skip
        if y is not None and target_scaler is None and normalize_target:
            target_scaler = Standardiser.fit(y if fit_rows is None else y[fit_rows], what="target column")
        if y is not None and target_scaler is not None:
            if target_scaler.mean.shape != (y.shape[1],):
                raise DataError(f"{what_y} has {y.shape[1]} values per row, but its standardisation has {target_scaler.mean.size}")
            y = target_scaler(y)
        data = Prepared(X, y, loss, outputs, shape, labels if loss.target == "class" else None, None, source, target_name,
                        target_scaler)  # fmt: skip
        if model is not None:
            data._check(model)
        if scaler is None and normalize:
            scaler = Standardiser.fit(X if fit_rows is None else X[fit_rows], shape, keep)
        if scaler is not None:
            if scaler.mean.shape != (X.shape[1],):
                raise DataError(f"X has {X.shape[1]} features per row, but the standardisation has {scaler.mean.size}")
            data.X, data.scaler = scaler(X), scaler
    return data


@contextmanager
def about(source):
    """Errors start with ``source``: "iris.csv: ..." (as every file error does)."""
    try:
        yield
    except DataError as exc:
        if source is None:
            raise
        raise DataError(f"{source}: {exc}") from None
