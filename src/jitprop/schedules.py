"""The learning-rate schedule contract: the learning rate of each epoch.

A schedule maps a 0-based epoch and the optimizer's base learning rate to
the learning rate of that epoch. Every schedule takes ``warmup``: for the
first ``warmup`` epochs the rate rises linearly, ``base * (epoch + 1) /
(warmup + 1)``, then the schedule proper starts as if at its epoch 0.
"""

from .components import Component, positive_int


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
