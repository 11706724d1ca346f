"""The loss contract: how wrong a prediction is, and in which direction to move it.

A registered loss class provides one kernel:

``kernel(pred, y, grad, h) -> float``
    return the batch-mean loss of predictions ``pred`` (n, k) against targets
    ``y`` and write dL/d(pred) of that mean into ``grad`` (n, k).

``target`` says what ``y`` holds, and so how jitprop checks and converts it:

- ``"class"``: integer class labels, shape (n,), int64, each in [0, k);
- ``"binary"``: values in [0, 1], shape (n, k), the model's dtype;
- ``"regression"``: real values, shape (n, k), the model's dtype.

Optionally ``cuda_kernel(pred, y, grad, h, out)``: a launcher over
numba.cuda device arrays (``h`` stays a host float64 array) that writes the
gradient like the CPU kernel and *sets* ``out[0]``, a one-element float64
device array, to the batch-mean loss (zero it, then accumulate), returning
nothing: training then copies no loss back per batch. Usually a
``"module:function"`` string, so that numba.cuda is imported only for GPU
runs; ``jitprop.cuda_launch`` sizes the grids.
"""

import numpy as np
from numba import njit

from ..components import Component

TARGETS = ("class", "binary", "regression")


class Loss(Component):
    """Base class of losses. Subclass, set ``name``, ``target`` and ``kernel``."""

    target = "regression"

    def probabilities(self, out):
        """Class probabilities from model outputs (softmax, or sigmoid for binary targets)."""
        out = np.asarray(out, dtype=np.float64)
        if self.target == "binary":
            return 0.5 * (1.0 + np.tanh(0.5 * out))  # a sigmoid that never overflows
        z = np.exp(out - out.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def check_output_dim(self, k):
        """Return an error message if a model with k outputs cannot use this loss."""
        if self.target == "class" and k < 2:
            return f"loss {self.name!r} needs at least 2 outputs (one per class), but the model has {k}"
        return None


@njit(cache=True)
def class_hit(pred, i, label):
    """1 when row ``i`` of ``pred`` has its largest value (the first, on ties) at ``label``, else 0."""
    best = 0
    for j in range(1, pred.shape[1]):
        if pred[i, j] > pred[i, best]:
            best = j
    return 1 if best == label else 0


@njit(cache=True)
def binary_hits(pred, y, i):
    """How many logits of row ``i`` fall on the same side of 0 as their targets of 0.5."""
    hits = 0
    for j in range(pred.shape[1]):
        if (pred[i, j] > 0) == (y[i, j] >= 0.5):
            hits += 1
    return hits


@njit(cache=True)
def count_correct_classes(pred, y):
    """How many rows of ``pred`` have their largest value at the label in ``y``."""
    correct = 0
    for i in range(pred.shape[0]):
        correct += class_hit(pred, i, y[i])
    return correct


@njit(cache=True)
def count_correct_binary(pred, y):
    """How many entries of logits ``pred`` fall on the same side of 0 as ``y`` of 0.5, over k."""
    correct = 0
    for i in range(pred.shape[0]):
        correct += binary_hits(pred, y, i)
    return correct / pred.shape[1]


#: loss target -> kernel counting the correct predictions of a batch (accuracy)
ACCURACY = {"class": count_correct_classes, "binary": count_correct_binary}
