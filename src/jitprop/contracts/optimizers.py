"""The optimizer contract: move every weight downhill along its gradient.

A registered optimizer class provides one kernel over the model's flat
buffers, so one fused loop updates every parameter of every layer:

``kernel(p, g, state, lr, h, step)``
    update parameters ``p`` in place from gradients ``g`` (both 1-D);
    ``state`` is a (n_state, len(p)) array the optimizer owns (momentum,
    moment estimates), zero at the start; ``lr`` the learning rate of this
    step (after any schedule); ``h`` the float64 hyperparameters from
    ``hyper()``; ``step`` the 1-based count of updates so far.

Optionally ``cuda_kernel``: a launcher with the same arguments, ``p``, ``g``
and ``state`` as numba.cuda device arrays and the scalars and ``h`` from the
host; usually a ``"module:function"`` string, so that numba.cuda is imported
only for GPU runs. ``jitprop.cuda_launch.grid_1d(len(p))`` sizes a
grid-stride loop over the parameters.
"""

from ..components import Component, real


class Optimizer(Component):
    """Base class of optimizers. Subclass, set ``name``, ``n_state`` and ``kernel``."""

    #: Rows of per-parameter state the kernel needs.
    n_state = 0

    def __init__(self, lr=0.001):
        self.lr = real("lr", lr, self.name, low=0.0)

    def init_state(self, state):
        """Set the initial optimizer state (zeros unless overridden)."""
        state[...] = 0.0

    def decay_transform(self):
        """A gradient transform that does this optimizer's weight decay in its kernel's place, or None.

        The built-ins' ``decay_bias=False`` leaves biases out of ``weight_decay``:
        the kernel then decays nothing, and a Trainer runs this transform (the
        ``weight_decay`` one, knowing where the biases lie) last before the update.
        """
        return None
