"""A third-party-style loss plugin for the benchmark: softmax cross-entropy under another name.

It uses only jitprop's public API, exactly as a pip-installed plugin would
(``jitprop.kernels.fast_exp``, the exp of the built-in loss, included);
the benchmark trains S with it to show that a plugin's kernel is compiled
into the same fast path as the built-ins (same speed, same loss).
"""

import math

from numba import njit

import jitprop
from jitprop.kernels import fast_exp


@njit(cache=True)
def plugin_cross_entropy_kernel(pred, y, grad, h):
    n, k = pred.shape
    total = 0.0
    inv_n = 1.0 / n
    for i in range(n):
        m = pred[i, 0]
        for j in range(1, k):
            m = max(m, pred[i, j])
        s = 0.0
        for j in range(k):
            e = fast_exp(pred[i, j] - m)
            grad[i, j] = e
            s += e
        total += m + math.log(s) - pred[i, y[i]]
        scale = inv_n / s
        for j in range(k):
            grad[i, j] *= scale
        grad[i, y[i]] -= inv_n
    return total / n


class PluginCrossEntropy(jitprop.Loss):
    """Softmax cross-entropy from a plugin module (benchmark only)."""

    name = "plugin_cross_entropy"
    target = "class"
    kernel = staticmethod(plugin_cross_entropy_kernel)


@jitprop.hookimpl
def register_losses(register):
    register(PluginCrossEntropy)
