"""The learning-rate schedule contract: the learning rate of each epoch.

A schedule maps a 0-based epoch and the optimizer's base learning rate to
the learning rate of that epoch. Every schedule takes ``warmup``: for the
first ``warmup`` epochs the rate rises linearly, ``base * (epoch + 1) /
(warmup + 1)``, then the schedule proper starts as if at its epoch 0.

On ``device="cuda"`` the rate is computed on the device, once per epoch, by
the schedule's ``cuda_kernel``: a launcher ``(out, epoch, base_lr, h)`` that
writes ``rate(epoch, base_lr)`` into ``out[0]``, a one-element float64 device
array, with ``epoch`` counted from the end of warmup (the core's own kernel
does the warmup) and ``h`` the float64 options from ``hyper()``. Like the
other components' launchers it is usually a ``"module:function"`` string, so
that numba.cuda is imported only for GPU runs. A schedule without one
trains on the CPU only.
"""

from ..components import Component, positive_int


class Schedule(Component):
    """Base class of schedules. Subclass, set ``name``, implement ``rate``."""

    def __init__(self, warmup=0):
        self.warmup = positive_int("warmup", warmup, self.name, minimum=0)

    def rate(self, epoch, base_lr):
        """Learning rate at ``epoch``, counted from the end of warmup."""
        raise NotImplementedError

    def __call__(self, epoch, base_lr):
        if epoch < self.warmup:
            return base_lr * (epoch + 1) / (self.warmup + 1)
        return self.rate(epoch - self.warmup, base_lr)
