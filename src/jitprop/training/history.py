"""A run's record: every epoch's logs, and its iterations' losses in bounded memory.

A long run must not grow with its length (issue 18: a 330,000-epoch run grew
by 93 MB in lists of Python floats, about 280 bytes an epoch). So per-epoch
values are typed arrays, 8 bytes each, and per-iteration losses are kept in
full for the recent ``ITERATION_WINDOW`` iterations and as a summary beyond:
together at most about 1.1 MB, however long the run.
"""

import math
from array import array
from collections.abc import Sequence

import numpy as np

from ..contracts.callbacks import Callback
from ..errors import ConfigError
from ..plugins.hookspecs import hookimpl
from ..views.verdict import judge

#: Iterations whose losses ``iteration_loss`` keeps one by one (800 KB): a loss curve's recent
#: detail, the whole of most runs. Older ones are folded into the summary ``FOLD`` or more at a
#: time, so the window holds 100,000 to 110,000 and trimming it is rare (it moves the whole window).
ITERATION_WINDOW = 100_000
FOLD = 10_000
#: Blocks of consecutive older iterations the summary keeps (mean, lowest, highest each: 240 KB).
SUMMARY_BLOCKS = 10_000


class Column(Sequence):
    """A list of numbers stored as a typed array: 8 bytes a value, where a list of floats takes 32.

    It reads as a list does: index, slice, ``len``, iteration, ``list(...)``, ``==`` with a list
    (NaN equal to NaN, as the same NaN in two lists is); ``tolist()`` gives a list for JSON.
    NumPy reads it as an array by copying, so an array a caller keeps never pins the column (a
    buffer view of an ``array.array`` would, and the next epoch's append would fail).
    """

    __slots__ = ("_values",)

    def __init__(self, values=(), typecode="d"):
        if isinstance(values, np.ndarray):
            values = np.ascontiguousarray(values, dtype=np.dtype(typecode)).tobytes()
            self._values = array(typecode)
            self._values.frombytes(values)
        else:
            self._values = array(typecode, values)

    @property
    def typecode(self):
        return self._values.typecode

    def append(self, value):
        self._values.append(value)

    def extend(self, values):
        """Append many at once; a NumPy array goes in as bytes, without a Python number each."""
        if isinstance(values, np.ndarray):
            self._values.frombytes(np.ascontiguousarray(values, dtype=np.dtype(self.typecode)).tobytes())
        else:
            self._values.extend(values)

    def __len__(self):
        return len(self._values)

    def __getitem__(self, index):
        if isinstance(index, slice):
            part = Column.__new__(Column)
            part._values = self._values[index]
            return part
        return self._values[index]

    def __setitem__(self, index, value):
        self._values[index] = value

    def __delitem__(self, index):
        del self._values[index]

    def __iter__(self):
        return iter(self._values)

    def __eq__(self, other):
        if not isinstance(other, (Column, list, tuple, array)):
            return NotImplemented  # pytest.approx and friends answer for themselves
        if len(other) != len(self):
            return False
        try:
            return bool(np.array_equal(np.asarray(self), np.asarray(other), equal_nan=True))
        except TypeError:  # text among the numbers
            return False

    __hash__ = None

    def __array__(self, dtype=None, copy=None):
        a = np.frombuffer(self._values, dtype=np.dtype(self.typecode)).copy() if self._values else np.zeros(0, self.typecode)
        return a if dtype is None else a.astype(dtype, copy=False)

    def tolist(self):
        return self._values.tolist()

    def __repr__(self):
        return repr(self.tolist())

    def __reduce__(self):
        return _column, (self.typecode, self._values.tobytes())


def _column(typecode, data):
    """Unpickle a Column (from its bytes: a pickled long history stays small)."""
    column = Column((), typecode)
    column._values.frombytes(data)
    return column


class LossSummary:
    """The iterations older than the window, as at most ``SUMMARY_BLOCKS`` blocks of ``block``
    consecutive iterations each: ``mean``, ``low`` and ``high`` (its lowest and highest loss).

    It covers the run's first ``count`` iterations; the last block may be partial. When the blocks
    would pass the limit, neighbours merge in pairs and ``block`` doubles: any run's whole curve,
    with its spread, in 240 KB. Merging is exact for the lowest and highest and for the mean of
    equal blocks, and depends only on the losses, so a resumed run's summary equals the uninterrupted one's.
    """

    def __init__(self, block=1, count=0, blocks=None):
        self.block, self.count = int(block), int(count)
        blocks = np.zeros((3, 0)) if blocks is None else np.array(blocks, dtype=np.float64).reshape(3, -1)
        self.mean, self.low, self.high = blocks

    def __len__(self):
        return len(self.mean)

    def starts(self):
        """Each block's first iteration (1-based)."""
        return 1 + self.block * np.arange(len(self), dtype=np.int64)

    def add(self, losses):
        """Fold in the next iterations' losses, oldest first (the lowest and highest pass over NaN,
        which a diverged batch leaves; the mean shows it)."""
        x = np.asarray(losses, dtype=np.float64)
        while x.size:
            part = self.count % self.block
            if part:  # top up the last, partial block
                k = min(self.block - part, x.size)
                head, x = x[:k], x[k:]
                self.mean[-1] = (self.mean[-1] * part + head.sum()) / (part + k)
                self.low[-1] = np.fmin(self.low[-1], np.fmin.reduce(head))
                self.high[-1] = np.fmax(self.high[-1], np.fmax.reduce(head))
                self.count += k
            elif len(self) >= SUMMARY_BLOCKS:
                self._merge()
            else:
                n = min(x.size, (SUMMARY_BLOCKS - len(self)) * self.block)
                whole = n - n % self.block
                rows = [x[:whole].reshape(-1, self.block)]
                if n > whole:
                    rows.append(x[whole:n].reshape(1, -1))
                self.mean = np.concatenate([self.mean, *(r.mean(axis=1) for r in rows)])
                self.low = np.concatenate([self.low, *(np.fmin.reduce(r, axis=1) for r in rows)])
                self.high = np.concatenate([self.high, *(np.fmax.reduce(r, axis=1) for r in rows)])
                self.count += n
                x = x[n:]

    def _merge(self):
        """Pairs of whole blocks become one of twice the length (an odd last one stays, now partial)."""
        pairs = len(self) // 2 * 2
        self.mean = np.concatenate([(self.mean[:pairs:2] + self.mean[1:pairs:2]) / 2, self.mean[pairs:]])
        self.low = np.concatenate([np.fmin(self.low[:pairs:2], self.low[1:pairs:2]), self.low[pairs:]])
        self.high = np.concatenate([np.fmax(self.high[:pairs:2], self.high[1:pairs:2]), self.high[pairs:]])
        self.block *= 2

    def __repr__(self):
        return f"LossSummary(iterations={self.count}, blocks={len(self)} of {self.block})"


class History(Callback):
    """Records every epoch's logs (``history.history``) and the iterations' losses.

    ``history.history[name]`` and ``history.epoch`` hold one value per epoch, as lists do
    (``Column``: 8 bytes a value). ``iteration_loss`` holds the loss of each of the last
    100,000 iterations or more (``ITERATION_WINDOW``: every iteration of a run up to that long);
    older iterations are in ``iteration_summary``, blocks of consecutive iterations with their mean,
    lowest and highest loss (``LossSummary``), so a run of any length keeps about 1 MB of them.
    ``loss_curve()`` gives the whole run's curve from both; ``first_loss`` is the first iteration's.
    """

    name = "history"

    def __init__(self):
        self.history = {}
        self.epoch = Column(typecode="q")
        self.iteration_loss = Column()
        self.iteration_summary = LossSummary()
        #: The loss of the run's first iteration, before any update (None before it ends an epoch).
        self.first_loss = None
        #: The loss of the best prediction that ignores the inputs, on the training rows of the last fit.
        self.baseline_loss = None

    @hookimpl
    def on_epoch_end(self, trainer, epoch, logs):
        for key, value in logs.items():
            if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
                raise ConfigError(f"epoch {epoch + 1}'s logs hold {key}={value!r}: the history keeps numbers only; a"
                                  " callback that adds to logs must add numbers")  # fmt: skip
        self.epoch.append(epoch)
        # Every column lines up with ``epoch``: a metric missing from some epochs (validation
        # added in a later fit, say) holds NaN there. New ones join in the logs' order, so a
        # checkpoint's columns come in the same order from every process.
        for key in logs:
            if key not in self.history:
                self.history[key] = Column([math.nan] * (len(self.epoch) - 1))
        for key, values in self.history.items():
            values.append(logs.get(key, math.nan))
        self.add_iterations(trainer.batch_losses[: trainer.batches_done])

    def add_iterations(self, losses):
        """Record the next iterations' losses; the oldest beyond the window go to the summary."""
        if self.first_loss is None and len(losses):
            self.first_loss = float(losses[0])
        self.iteration_loss.extend(np.asarray(losses, dtype=np.float64))
        excess = len(self.iteration_loss) - ITERATION_WINDOW
        if excess >= FOLD:
            self.iteration_summary.add(np.asarray(self.iteration_loss[:excess]))
            del self.iteration_loss[:excess]

    @property
    def iterations(self):
        """How many iterations' losses are recorded (summary and window)."""
        return self.iteration_summary.count + len(self.iteration_loss)

    def loss_curve(self):
        """The whole run's loss by iteration, to plot: ``(iteration, loss, low, high)`` arrays.

        Each iteration of the window is one point (``low == high == loss``); each older block is one
        point at its middle iteration with its mean, and ``low``/``high`` its spread (a band to shade).
        """
        s, window = self.iteration_summary, np.asarray(self.iteration_loss)
        ends = np.minimum(s.starts() + s.block - 1, s.count)
        iteration = np.concatenate([(s.starts() + ends) / 2, s.count + 1.0 + np.arange(len(window))])
        return iteration, np.concatenate([s.mean, window]), np.concatenate([s.low, window]), np.concatenate([s.high, window])

    def highest_loss(self):
        """The run's highest finite iteration loss and where: ``(loss, first, last)``, the iterations
        (1-based) it lies in, one in the window, a block's beyond; None when no loss is finite."""
        s = self.iteration_summary
        _, _, _, high = self.loss_curve()
        finite = np.isfinite(high)
        if not finite.any():
            return None
        i = int(np.argmax(np.where(finite, high, -np.inf)))
        if i >= len(s):
            return float(high[i]), s.count + i - len(s) + 1, s.count + i - len(s) + 1
        first = i * s.block + 1
        return float(high[i]), first, min(first + s.block - 1, s.count)

    def verdict(self):
        """Whether the run underfit, fit or overfit, with the evidence (rules: ``jitprop.views.verdict``)."""
        return judge(self)

    # -- in a checkpoint -----------------------------------------------------

    def state(self):
        """``(meta, arrays)``: JSON-able counters, and the history as arrays (cheap to write)."""
        s = self.iteration_summary
        names = list(self.history)
        meta = {"metrics": names, "first_loss": self.first_loss, "iteration_block": s.block, "iterations_folded": s.count}
        arrays = {
            "epoch": np.asarray(self.epoch, dtype=np.int64),
            "history": np.array([np.asarray(self.history[k], dtype=np.float64) for k in names]).reshape(len(names), len(self.epoch)),
            "iteration_loss": np.asarray(self.iteration_loss, dtype=np.float64),
            "iteration_summary": np.array([s.mean, s.low, s.high]),
        }
        return meta, arrays

    def load_state(self, meta, arrays):
        """Continue from ``state()``, or from a checkpoint before format 2 (lists in the meta
        document, every iteration's loss in one array), whose iterations are then folded as these are."""
        losses = np.asarray(arrays["iteration_loss"], dtype=np.float64).reshape(-1)
        if "metrics" in meta:
            self.epoch = Column(arrays["epoch"], "q")
            table = np.asarray(arrays["history"], dtype=np.float64).reshape(len(meta["metrics"]), len(self.epoch))
            self.history = {k: Column(row) for k, row in zip(meta["metrics"], table)}
            self.iteration_loss = Column(losses)
            self.iteration_summary = LossSummary(meta["iteration_block"], meta["iterations_folded"], arrays["iteration_summary"])
            self.first_loss = None if meta.get("first_loss") is None else float(meta["first_loss"])
            return
        self.epoch = Column(meta["epoch"], "q")
        self.history = {k: _aligned(v, len(self.epoch)) for k, v in meta["history"].items()}
        self.iteration_loss, self.iteration_summary, self.first_loss = Column(), LossSummary(), None
        self.add_iterations(losses)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


def _aligned(values, n):
    """One value an epoch: an older release could leave a metric logged only in later fits shorter
    (its values are the latest epochs'), so it is padded with NaN in front, as the plot plugin reads it."""
    values = list(values)[-n:] if n else []
    return Column([math.nan] * (n - len(values)) + values)
