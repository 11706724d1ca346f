"""Verdicts on fit: did a run underfit, fit or overfit, judged from its loss curves.

The rules, in the order they are tried (epochs counted from 1, as printed):

1. **Overfitting**: the validation loss reached its lowest at an epoch
   before the last, ended at least ``RISE`` (10%) above that lowest value,
   and the training loss fell meanwhile. The evidence is the rise, the fall
   and the epoch that early stopping would have kept.
2. **Underfitting, still learning**: the validation loss fell by more than
   ``STILL_FALLING`` (1%) an epoch over the last quarter of the run (at
   least its last epoch), so more epochs would still help. (Not the
   training loss: a model that memorises its rows lowers that for ever.)
3. **Underfitting, too weak**: the training loss ended above ``WEAK`` (25%)
   of the loss of the best prediction that ignores the inputs (the class
   frequencies, or the mean target: ``baseline_loss``), so the model has
   learnt little of what the inputs say: a larger model, a higher learning
   rate or more epochs.
4. Otherwise **a good fit**: the validation loss at its lowest near the end,
   with the gap between training and validation loss stated.

Without validation rows only rule 3 applies; a run that passes it is
``unjudged``: it fits its training rows, and nothing tells whether it
generalises.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from ..components import kernel

#: Validation loss this far above its lowest at the end, while training loss fell: overfitting.
RISE = 0.10
#: Loss falling faster than this (relative, an epoch) at the end: still learning.
STILL_FALLING = 0.01
#: Training loss above this share of the input-blind baseline at the end: the model is too weak.
WEAK = 0.25


@dataclass
class Verdict:
    """``kind`` is one of underfit, fit, overfit, unjudged; ``epoch`` (from 1) the epoch the
    message points to (the best one), or None; ``evidence`` the numbers behind it."""

    kind: str
    message: str
    epoch: int | None = None
    evidence: dict = field(default_factory=dict)

    def __str__(self):
        return self.message


def baseline_loss(loss, y, outputs, dtype=np.float64):
    """The mean ``loss`` over targets ``y`` of the best prediction that ignores the inputs: the
    log class frequencies as logits (class targets), each output's log-odds (binary), each
    output's mean (regression). What a model must beat to have learnt anything from its inputs."""
    y = np.asarray(y)
    n = y.shape[0]
    if loss.target == "class":
        freq = np.bincount(y, minlength=outputs) / n
        row = np.log(np.maximum(freq, 1e-12))
    elif loss.target == "binary":
        p = np.clip(y.reshape(n, -1).mean(axis=0), 1e-6, 1 - 1e-6)
        row = np.log(p / (1 - p))
    else:
        with np.errstate(over="ignore", invalid="ignore"):  # targets near 1e308: an infinite baseline, no warning
            row = y.reshape(n, -1).mean(axis=0)
    pred = np.ascontiguousarray(np.broadcast_to(row, (n, outputs)), dtype=dtype)
    grad = np.empty_like(pred)
    targets = y if loss.target == "class" else np.ascontiguousarray(y.reshape(n, -1), dtype=dtype)
    return float(kernel(loss, "kernel")(pred, targets, grad, np.ascontiguousarray(loss.hyper(), dtype=np.float64)))


def judge(history, baseline=None):
    """The verdict on a run from its ``history`` (a ``History`` or its ``history`` dict)."""
    logs = getattr(history, "history", history)
    train = _finite(logs.get("loss", []))
    val = _finite(logs.get("val_loss", []))
    if baseline is None:
        baseline = getattr(history, "baseline_loss", None)
    if not len(train):
        return Verdict("unjudged", "no epoch finished: nothing to judge")
    has_val = len(val) == len(train) and len(val) > 0
    curve = val if has_val else train
    n = len(curve)
    best = int(np.argmin(curve))
    evidence = {"epochs": n, "best_epoch": best + 1, "train_loss": train[-1]}
    if has_val:
        rise = (val[-1] - val[best]) / abs(val[best]) if val[best] else math.inf
        fall = (train[best] - train[-1]) / abs(train[best]) if train[best] else 0.0
        evidence.update(val_loss=val[-1], best_val_loss=val[best], rise=rise, train_fall=fall)
        if best < n - 1 and rise >= RISE and fall > 0:
            return Verdict("overfit", (
                f"overfitting from epoch {best + 1}: validation loss rose {rise:.0%} ({val[best]:.4g} -> {val[-1]:.4g})"
                f" while training loss fell ({train[best]:.4g} -> {train[-1]:.4g});"
                f" early_stopping:restore_best_weights=true would have kept epoch {best + 1}"
            ), best + 1, evidence)  # fmt: skip
    tail = max(1, n // 4)
    if has_val and n > tail:
        rate = (curve[-tail - 1] - curve[-1]) / abs(curve[-tail - 1]) / tail if curve[-tail - 1] else 0.0
        evidence["fall_per_epoch"] = rate
        span = f"in epoch {n}" if tail == 1 else f"an epoch over epochs {n - tail + 1}-{n}"
        if rate > STILL_FALLING:
            return Verdict("underfit", (
                f"underfitting: validation loss still falling ({rate:.1%} {span}, {curve[-tail - 1]:.4g} -> {curve[-1]:.4g}):"
                f" train longer (--epochs {2 * n})"
            ), n, evidence)  # fmt: skip
    if baseline is not None and baseline > 0:
        share = train[-1] / baseline
        evidence.update(baseline_loss=baseline, share_of_baseline=share)
        if share > WEAK:
            return Verdict("underfit", (
                f"underfitting: training loss {train[-1]:.4g} is {share:.0%} of {baseline:.4g}, the loss of a prediction"
                " that ignores the inputs: try a larger model, a higher learning rate or more epochs"
            ), n, evidence)  # fmt: skip
    if not has_val:
        return Verdict("unjudged", (
            f"fits its training rows (loss {train[-1]:.4g}); without validation rows nothing tells"
            " whether it generalises (give --validation-split)"
        ), None, evidence)  # fmt: skip
    gap = val[-1] - train[-1]
    evidence["gap"] = gap
    return Verdict("fit", (
        f"a good fit: validation loss lowest at epoch {best + 1} of {n} ({val[best]:.4g}; {val[-1]:.4g} at the end),"
        f" training loss {train[-1]:.4g}"
    ), best + 1, evidence)  # fmt: skip


def _finite(values):
    """The leading run of finite values (a diverged epoch's NaN ends the curve)."""
    a = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(a)
    return a[: int(np.argmax(bad))] if bad.any() else a
