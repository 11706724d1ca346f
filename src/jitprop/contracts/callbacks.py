"""The callback contract: objects that implement lifecycle hooks for one run.

A callback is any object whose methods are marked ``@jitprop.hookimpl`` and
named after hooks in ``hookspecs.py`` (``on_epoch_end(trainer, epoch, logs)``
and so on); each implements only what it needs. ``fit(callbacks=[...])``
registers them for that run alone. Per-batch hooks are dispatched only when
some callback or plugin implements them, so a callback that doesn't costs
nothing per batch.

A callback may also bring gradient transforms (``jitprop.GradientTransform``)
from a ``transforms()`` method: they join the run's and run compiled, as
the ``gradient_clipping`` callback does.

In a data-parallel run every rank calls every callback (each sees the same,
global, logs), except those with ``rank_zero_only = True``: callbacks that
print or write files, which rank 0 alone runs (``model_checkpoint``,
``csv_logger``). A callback that stops training stops every rank at the
same iteration.
"""

from ..components import Component


class Callback(Component):
    """Base class of registered callbacks: no hooks of its own, just a name and options."""

    #: Data-parallel: only rank 0 runs it (it prints or writes files).
    rank_zero_only = False
