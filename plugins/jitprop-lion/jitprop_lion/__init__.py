"""jitprop-lion: the Lion optimizer (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

Lion keeps one momentum per weight and moves every weight by the same
amount, lr, in the direction of the sign of an interpolation between that
momentum and the gradient:

    c = beta1 * m + (1 - beta1) * g
    p = p * (1 - lr * weight_decay) - lr * sign(c)
    m = beta2 * m + (1 - beta2) * g

as lucidrains/lion-pytorch computes it. Its steps are as large as the
learning rate in every coordinate, so it wants a learning rate 3-10x
smaller than Adam's, and a weight decay 3-10x larger for the same effect.
"""

import numpy as np
from numba import njit

import jitprop
from jitprop.components import check, real


@njit(cache=True)
def lion_kernel(p, g, state, lr, h, step):
    # One fused loop over the model's flat buffers, in the parameters' own
    # precision (as torch and jitprop's adam do): scalars are cast once, so
    # float32 models stay in float32 arithmetic.
    dt = p.dtype.type
    beta1, beta2 = dt(h[0]), dt(h[1])
    one_minus_beta1, one_minus_beta2 = dt(1.0 - h[0]), dt(1.0 - h[1])
    rate = dt(lr)
    shrink = dt(1.0 - lr * h[2])  # decoupled weight decay, scaled by lr as in lion-pytorch
    for i in range(p.shape[0]):
        m = state[0, i]
        c = beta1 * m + one_minus_beta1 * g[i]
        decayed = p[i] * shrink
        # - lr * sign(c), written out: no step where c is 0, and a NaN passes
        # through (as torch.sign's does), so terminate_on_nan still sees it.
        if c > 0:
            p[i] = decayed - rate
        elif c < 0:
            p[i] = decayed + rate
        else:
            p[i] = decayed - rate * c
        state[0, i] = beta2 * m + one_minus_beta2 * g[i]  # the momentum moves after the step, with beta2


class Lion(jitprop.Optimizer):
    """Lion: steps of size lr along sign(momentum mixed with the gradient) (Chen et al. 2023).

    weight_decay is decoupled: p *= 1 - lr * weight_decay each step, as lion-pytorch does.
    """

    name = "lion"
    n_state = 1  # the momentum m
    kernel = staticmethod(lion_kernel)
    cuda_kernel = "jitprop_lion.cuda:lion_kernel"  # imported only for device="cuda"

    def __init__(self, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(lr)  # checks lr >= 0
        check(
            isinstance(betas, (tuple, list)) and len(betas) == 2,
            f"lion: betas must be a pair like (0.9, 0.99), got {betas!r}",
        )
        self.betas = (
            real("betas[0]", betas[0], "lion", low=0.0, high=1.0),
            real("betas[1]", betas[1], "lion", low=0.0, high=1.0),
        )
        self.weight_decay = real("weight_decay", weight_decay, "lion", low=0.0)

    def hyper(self):
        return np.array([*self.betas, self.weight_decay])


@jitprop.hookimpl
def register_optimizers(register):
    register(Lion)
