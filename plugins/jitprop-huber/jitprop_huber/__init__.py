"""jitprop-huber: the Huber (smooth-L1) loss as a jitprop plugin.

The worked example of extending jitprop with a loss. A plugin is three
things, all in this module:

1. a CPU kernel following the loss contract (``jitprop/losses.py``):
   ``kernel(pred, y, grad, h) -> batch-mean loss``, writing dL/d(pred) into
   ``grad``; jitprop compiles it into its training step by import path;
2. a ``jitprop.Loss`` subclass naming the kernel, what the targets are, and
   its options (``hyper()`` hands them to the kernels as float64 scalars);
   the CUDA launcher is named by a ``"module:function"`` string so numba.cuda
   is imported only when a model trains with ``device="cuda"``;
3. a ``register_losses`` hook implementation, found through the entry point
   ``huber = "jitprop_huber"`` in the group ``jitprop`` (pyproject.toml).
"""

import numpy as np
from numba import njit

import jitprop
from jitprop.components import real


@njit(cache=True)  # cache=True: compiled once, reused by every later process
def huber_kernel(pred, y, grad, h):
    # The mean over all n*k outputs, like the built-in mse and
    # torch.nn.HuberLoss(reduction="mean"). Per element, with d = pred - y:
    #   |d| <= delta: loss 0.5 * d^2,               slope d
    #   |d| >  delta: loss delta * (|d| - delta/2), slope delta * sign(d)
    # Both pieces agree in value and slope at |d| = delta, so the loss is
    # smooth there and the slope is simply d clipped to [-delta, delta].
    delta = h[0]
    half_delta = 0.5 * delta
    n, k = pred.shape
    scale = 1.0 / (n * k)  # the gradient is of the mean, not the sum
    total = 0.0  # accumulated in float64 whatever the model's dtype
    for i in range(n):
        for j in range(k):
            d = pred[i, j] - y[i, j]
            if d > delta:
                total += delta * (d - half_delta)
                grad[i, j] = delta * scale
            elif d < -delta:
                total -= delta * (d + half_delta)
                grad[i, j] = -delta * scale
            else:  # the quadratic zone; a NaN lands here too and propagates, so terminate_on_nan sees it
                total += 0.5 * d * d
                grad[i, j] = d * scale
    return total * scale


class Huber(jitprop.Loss):
    """Huber loss: squared within delta of the target, linear beyond (torch.nn.HuberLoss).

    Less swayed by outliers than mse, smoother than mae near zero. With
    delta=1 it equals torch.nn.SmoothL1Loss.
    """

    name = "huber"
    target = "regression"  # y: real values, shape (n, k), the model's dtype
    kernel = staticmethod(huber_kernel)
    cuda_kernel = "jitprop_huber.cuda:huber_kernel"

    def __init__(self, delta=1.0):
        # Checked here, in Python, so a bad value is one line, never an error inside a kernel.
        self.delta = real("delta", delta, "huber", low=0.0, low_open=True)

    def hyper(self):
        return np.array([self.delta])


@jitprop.hookimpl
def register_losses(register):
    register(Huber)
