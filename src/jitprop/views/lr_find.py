"""The learning-rate range test, as fast.ai's ``lr_find`` runs it (Smith 2015, "Cyclical Learning Rates").

Train from the model's current weights for ``num_it`` iterations while the
learning rate grows exponentially, ``lr_i = start_lr * (end_lr /
start_lr) ** (i / num_it)``; keep each batch's loss and its exponential
moving average (``beta`` 0.98, divided by ``1 - beta ** (i + 1)`` so the
first values are not biased towards 0); stop early when that smoothed loss
exceeds 4x its best so far or is not finite. The weights, running state and
optimizer are then as before: the test trains a copy of the state and puts
the model's back.

The suggestion is fast.ai's default rule, **valley**: over the smoothed
losses without the first tenth of ``num_it`` and the last 5 points, find
the longest decreasing run (the longest strictly decreasing subsequence,
which tolerates noise), and take the point a half of the way along it
(``start + len/3 + len/6``): far enough down the slope to learn fast,
before the bottom where the loss turns.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from ..contracts.callbacks import Callback
from ..errors import ConfigError
from ..plugins.hookspecs import hookimpl

START_LR, END_LR, NUM_IT, BETA = 1e-7, 10.0, 100, 0.98
DIVERGED = 4.0  # stop when the smoothed loss exceeds this multiple of its best


@dataclass
class LRFind:
    """A range test's record: per iteration ``lrs``, raw ``losses`` and ``smoothed`` losses;
    ``suggestion`` (None when too few iterations ran to judge) at ``suggestion_index``."""

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestion: float | None
    suggestion_index: int | None
    rule: str = "valley"
    stopped: str = ""
    settings: dict = field(default_factory=dict)

    def to_dict(self):
        return {
            "suggested_lr": self.suggestion,
            "rule": self.rule,
            "stopped": self.stopped,
            "settings": self.settings,
            "iterations": [{"iteration": i + 1, "lr": float(lr), "loss": float(loss), "smoothed_loss": float(s)}
                           for i, (lr, loss, s) in enumerate(zip(self.lrs, self.losses, self.smoothed))],
        }  # fmt: skip

    def rows(self, every=None):
        """(iteration, lr, loss, smoothed) rows for a table: every ``every``-th, the suggestion, the last."""
        n = len(self.lrs)
        every = every or max(1, n // 20)
        keep = sorted({*range(0, n, every), n - 1, *([self.suggestion_index] if self.suggestion_index is not None else [])})
        return [(i + 1, float(self.lrs[i]), float(self.losses[i]), float(self.smoothed[i])) for i in keep if n]


def valley(lrs, losses):
    """fast.ai's valley rule: (lr, index) a half of the way along the longest decreasing run of ``losses``."""
    n = len(losses)
    if n < 2:
        return None, None
    longest = [1] * n  # longest decreasing subsequence ending at each point
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
            if longest[end] < longest[i]:
                end = i
                start = end - longest[end]
    third = (end - start) / 3
    index = start + int(third) + int(third / 2)
    return float(lrs[index]), index


class _RangeTest(Callback):
    """Sets each batch's learning rate, records its loss and stops the run when done or diverged."""

    name = "lr_range_test"

    def __init__(self, start_lr, end_lr, num_it, beta):
        self.start_lr, self.end_lr, self.num_it, self.beta = start_lr, end_lr, num_it, beta
        self.lrs, self.losses, self.smoothed = [], [], []
        self.average, self.best, self.stopped = 0.0, math.inf, ""

    @hookimpl
    def on_train_batch_begin(self, trainer):
        trainer.lr = self.start_lr * (self.end_lr / self.start_lr) ** (len(self.lrs) / self.num_it)

    @hookimpl
    def on_train_batch_end(self, trainer, logs):
        i = len(self.lrs)
        self.lrs.append(trainer.lr)
        self.losses.append(logs["loss"])
        self.average = self.beta * self.average + (1 - self.beta) * logs["loss"]
        smooth = self.average / (1 - self.beta ** (i + 1))
        self.smoothed.append(smooth)
        self.best = min(self.best, smooth)
        if not math.isfinite(smooth):
            self.stopped = f"the loss turned {smooth} at lr {trainer.lr:.3g}"
        elif smooth > DIVERGED * self.best:
            self.stopped = f"the smoothed loss passed {DIVERGED:g}x its best at lr {trainer.lr:.3g}"
        elif i + 1 >= self.num_it:
            self.stopped = f"{self.num_it} iterations done"
        trainer.stop_training = bool(self.stopped)


def lr_find(model, X, y, loss="mse", optimizer="adam", batch_size=32, start_lr=START_LR, end_lr=END_LR, num_it=NUM_IT,
            beta=BETA, seed=None, transforms=()):  # fmt: skip
    """Run the range test on (X, y) from ``model``'s weights, which it leaves as they were; returns ``LRFind``.

    ``suggestion`` is the valley rule's learning rate for ``optimizer``
    (fast.ai's defaults throughout: 1e-7 to 10 over 100 iterations).
    """
    from ..training.trainer import Trainer  # the trainer imports this package's verdicts

    if not (0 < start_lr < end_lr):
        raise ConfigError(f"lr-find needs 0 < start_lr < end_lr, got {start_lr:g} and {end_lr:g}")
    if not (isinstance(num_it, int) and num_it >= 6):
        raise ConfigError(f"lr-find needs at least 6 iterations (num_it), got {num_it!r}")
    if not 0 <= beta < 1:
        raise ConfigError(f"lr-find's smoothing beta must be in [0, 1), got {beta!r}")
    test = _RangeTest(start_lr, end_lr, num_it, beta)
    params, state = model.params.copy(), model.state.copy()
    try:
        trainer = Trainer(model, loss=loss, optimizer=optimizer, batch_size=batch_size, callbacks=[test], seed=seed,
                          on_divergence="stop", transforms=transforms)  # fmt: skip
        n_batches = -(-len(X) // min(batch_size, len(X)))
        trainer.fit(X, y, epochs=-(-num_it // n_batches))
        if trainer.divergence is not None and not test.stopped:  # a gradient, not the loss, went bad first
            test.stopped = f"training diverged at lr {trainer.lr:.3g}: {trainer.divergence['reason']}"
    finally:
        model.params[...] = params
        model.state[...] = state
    lrs, losses, smoothed = (np.array(v, dtype=np.float64) for v in (test.lrs, test.losses, test.smoothed))
    # The suggestion, as fast.ai makes it: without the first tenth of the iterations and the last 5, up to any NaN.
    a, b = num_it // 10, max(num_it // 10, len(lrs) - 5)
    window = smoothed[a:b]
    bad = ~np.isfinite(window)
    if bad.any():
        window = window[: int(np.argmax(bad))]
    suggestion, index = valley(lrs[a : a + len(window)], window)
    settings = {"start_lr": start_lr, "end_lr": end_lr, "num_it": num_it, "beta": beta, "batch_size": batch_size}
    return LRFind(lrs, losses, smoothed, suggestion, None if index is None else a + index, "valley", test.stopped, settings)


def picture(result, title="lr-find"):
    """Smoothed loss against learning rate (log axis), the suggestion marked; without the last 5
    points, as fast.ai plots it (they are where the loss runs away)."""
    from .picture import Mark, Panel, Picture, Series

    n = len(result.lrs) - 5 if len(result.lrs) > 10 else len(result.lrs)
    panel = Panel("loss against learning rate", "learning rate", "smoothed loss", xlog=True,
                  series=[Series("smoothed loss", result.lrs[:n].tolist(), result.smoothed[:n].tolist())])  # fmt: skip
    if result.suggestion is not None:
        i = result.suggestion_index
        panel.marks.append(Mark(f"suggested lr {result.suggestion:.2g} ({result.rule})", result.suggestion, float(result.smoothed[i])))
    return Picture(title, [panel])
