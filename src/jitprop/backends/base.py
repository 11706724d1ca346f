"""The seam between the trainer's epoch loop and where the batches run.

A backend is made for one ``Trainer.fit``: it holds the training data where
its kernels read it, every workspace, and the order of kernel arguments
(written once per backend). The trainer keeps what is the same on every
device: epochs, hooks, the divergence policy, interrupts and resume. It
asks its backend for these:

``start_epoch(epoch)`` / ``resume_epoch(index, stats)`` / ``host_order()``
    draw an epoch's row order where the data lives and zero the gradient
    transforms' statistics; continue from a saved order and statistics;
    copy the current order to the host (to save a part-way epoch).
``compile(interrupted)``
    build the kernels before the first batch, while a signal can still end
    the run at once (False: ``interrupted()`` came first).
``run(first, last, sums) -> (sums, done, bad)``
    train batches ``first..last`` of the epoch, adding to the running
    ``Sums``; ``done`` batches were trained; ``bad`` is the batch whose loss
    or gradient was not finite (caught before its update, its loss in
    ``trainer.batch_losses`` and gradients in ``model.grads`` once
    ``why_diverged`` is asked), or None. ``span`` says how many batches a
    call should take: interrupts and progress hooks are served between calls.
``rate(epoch, base_lr)``
    the epoch's learning rate, where the schedule runs (on the device, for CUDA).
``score(X, y)``
    mean loss (and accuracy) over checked arrays, in inference mode.
``snapshot()`` / ``restore()``
    keep the training state (weights, optimizer state, running state,
    transforms' statistics, step) and go back to it: a rollback after
    divergence.
``pull()``
    bring the host's arrays up to date (the trainer calls it before
    epoch-end hooks, checkpoints and callbacks read them).

``PythonBackend`` (every kernel called from Python, per-batch hooks
dispatched), ``CompiledBackend`` (one generated njit function per model) and
``CudaBackend`` (numba.cuda) implement it.
"""

import math
from dataclasses import dataclass

import numpy as np

from ..contracts.losses import ACCURACY
from ..kernels import epoch_shuffle

#: Seconds of training per call of ``run`` where one call can take many batches.
CHUNK_SECONDS = 0.1


def epoch_order(seed, epoch, shuffle, index):
    """Fill ``index`` with an epoch's row order: a permutation drawn from (seed, epoch) alone
    (kernels.shuffle_order), so resuming needs no random state and a GPU draws the same."""
    if shuffle:
        epoch_shuffle(seed, epoch, index)
    else:
        index[:] = np.arange(index.shape[0])


@dataclass
class Sums:
    """An epoch's running totals, carried across calls so they do not depend on chunking."""

    loss: float = 0.0  # sum over rows of each batch's mean loss times its rows
    correct: float = 0.0
    seen: int = 0


class Backend:
    """Base of the three backends: the host-side parts they share."""

    #: ``"python"``, ``"compiled"`` or ``"cuda"``: which backend a trainer chose.
    name = None

    def __init__(self, trainer, X, y, batch_size, validation=None):
        self.trainer, self.model = trainer, trainer.model
        self.X, self.y, self.bs = X, y, batch_size
        self.validation = validation
        self.index = np.arange(X.shape[0], dtype=np.int64)
        self.accuracy = ACCURACY.get(trainer.loss.target)
        self.span = 1
        self._saved, self._saved_step = None, 0

    # -- the epoch's order -------------------------------------------------

    def start_epoch(self, epoch):
        """Draw epoch ``epoch``'s row order; the transforms' statistics start again from zero."""
        epoch_order(self.trainer.seed, epoch, self.trainer.shuffle, self.index)
        self.trainer.stats[...] = 0.0

    def resume_epoch(self, index, stats):
        """Continue an epoch in a saved order, with the statistics it had gathered."""
        self.index[:] = index
        self.trainer.stats[...] = stats

    def host_order(self):
        """The current epoch's order, as a host array (a copy)."""
        return self.index.copy()

    def rate(self, epoch, base_lr):
        """Epoch ``epoch``'s learning rate (the schedule's, else the base rate)."""
        schedule = self.trainer.lr_schedule
        return schedule(epoch, base_lr) if schedule else base_lr

    # -- training state ----------------------------------------------------

    def _training_state(self):
        """The host arrays a rollback restores: weights, optimizer state, running state, statistics,
        and the memory of transforms that keep one."""
        t = self.trainer
        return (self.model.params, t.opt_state, self.model.state, t.stats, *(m for m in t.transform_memory if m.size))

    def snapshot(self):
        """Keep the training state and the step (to roll back to)."""
        if self._saved is None:
            self._saved = [np.empty_like(a) for a in self._training_state()]
        for copy, a in zip(self._saved, self._training_state()):
            copy[...] = a
        self._saved_step = self.trainer.step

    def restore(self):
        """Back to the last ``snapshot``."""
        for copy, a in zip(self._saved, self._training_state()):
            a[...] = copy
        self.trainer.step = self._saved_step
        self.push()

    def push(self):
        """The host's training state to wherever the kernels read it (nothing to do on the CPU)."""

    def pull(self):
        """The host's arrays up to date with the kernels' (nothing to do on the CPU)."""

    def why_diverged(self, b):
        """What went non-finite in batch ``b``: the loss, or the gradient of which layer."""
        model = self.model
        value = self.trainer.batch_losses[b]  # the batch loops leave its loss and gradients in place
        if not math.isfinite(value):
            return f"the loss became {value}"
        for i in range(len(model.layers) - 1, -1, -1):  # backpropagation's order: the first to go bad
            if not np.all(np.isfinite(model.layer_grads[i])):
                return f"the gradient of layer {i} ({model.layers[i].name}) holds NaN or infinite values"
        return "a gradient became NaN or infinite"

    # -- running -----------------------------------------------------------

    def compile(self, interrupted):
        """Build the kernels before the first batch, unless ``interrupted()`` turns true first
        (then False, with nothing trained). Here nothing: the kernels compile as they are called."""
        return True

    def rows(self, b):
        """Rows in batch ``b`` (the last may be smaller)."""
        return min(self.bs, self.X.shape[0] - b * self.bs)

    def run(self, first, last, sums):
        """Train batches first..last: ``(sums, batches done, diverged batch or None)``."""
        raise NotImplementedError

    def score(self, X, y):
        """``{"loss": ..., "accuracy": ...}`` over checked arrays, in inference mode."""
        raise NotImplementedError
