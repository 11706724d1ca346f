"""numba.cuda kernels of the built-in losses, beside their CPU kernels in losses.py.

``kernel(pred, y, grad, h, out)`` writes dL/d(pred) of the batch-mean loss
into ``grad`` like the CPU kernel, and the batch-mean loss into the device
scalar ``out[0]`` instead of returning it, so training needs no copy back
per batch. A thread handles a row: any width works; rows meet in one
atomic sum (its order, so the loss's last bits, may vary between runs; the
gradients do not).
"""

import math

import numpy as np
from numba import cuda

from jitprop import cuda_launch


@cuda.jit
def _zero(out):
    if cuda.grid(1) == 0:
        out[0] = 0.0


@cuda.jit
def _mse(pred, y, grad, out):
    n, k = pred.shape
    scale = 2.0 / (n * k)
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, stride):
        total = 0.0
        for j in range(k):
            d = np.float64(pred[i, j]) - y[i, j]  # float64: a float32 difference past 1.8e19 squares to inf
            total += d * d
            grad[i, j] = scale * d
        cuda.atomic.add(out, 0, total / (n * k))


@cuda.jit
def _mae(pred, y, grad, out):
    n, k = pred.shape
    scale = 1.0 / (n * k)
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, stride):
        total = 0.0
        for j in range(k):
            d = pred[i, j] - y[i, j]
            total += abs(d)
            grad[i, j] = scale if d > 0 else (-scale if d < 0 else 0.0)
        cuda.atomic.add(out, 0, total * scale)


@cuda.jit
def _cross_entropy(pred, y, grad, out):
    # The CPU kernel's arithmetic (losses.py says why): shift by the row max,
    # loss (m - z_t) + log(e_t + rest), log1p(rest) when the target holds the
    # max, and the target's gradient -rest / s.
    n, k = pred.shape
    inv_n = 1.0 / n
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, stride):
        t = y[i]
        m = pred[i, 0]
        for j in range(1, k):
            if pred[i, j] > m:  # not max(): it needs a GPU to compile to PTX
                m = pred[i, j]
        rest = 0.0
        for j in range(k):
            e = math.exp(pred[i, j] - m)
            grad[i, j] = e
            if j != t:
                rest += e
        e_t = grad[i, t]
        s = e_t + rest
        value = (m - pred[i, t]) + (math.log1p(rest) if e_t == 1.0 else math.log(s))
        scale = inv_n / s
        for j in range(k):
            grad[i, j] *= scale
        grad[i, t] = -rest * scale
        cuda.atomic.add(out, 0, value * inv_n)


@cuda.jit
def _nll(pred, y, grad, out):
    n, k = pred.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, stride):
        for j in range(k):
            grad[i, j] = 0.0
        grad[i, y[i]] = -1.0 / n
        cuda.atomic.add(out, 0, -pred[i, y[i]] / n)


@cuda.jit
def _binary_cross_entropy(pred, y, grad, out):
    # The CPU kernel's arithmetic (losses.py says why): e = exp(-|z|) only,
    # and sigmoid(z) - t without forming 1 - sigmoid(z).
    n, k = pred.shape
    scale = 1.0 / (n * k)
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, stride):
        total = 0.0
        for j in range(k):
            z = pred[i, j]
            t = y[i, j]
            e = math.exp(-abs(z))
            if z >= 0:
                total += z * (1.0 - t) + math.log1p(e)
                g = (1.0 - t) - e / (1.0 + e)
            else:
                total += -z * t + math.log1p(e)
                g = e / (1.0 + e) - t
            grad[i, j] = g * scale
        cuda.atomic.add(out, 0, total * scale)


def _launcher(kernel):
    def launch(pred, y, grad, h, out):
        _zero[1, 1](out)
        kernel[cuda_launch.grid_1d(pred.shape[0])](pred, y, grad, out)

    launch.__name__ = kernel.py_func.__name__.lstrip("_") + "_kernel"
    return launch


mse_kernel = _launcher(_mse)
mae_kernel = _launcher(_mae)
cross_entropy_kernel = _launcher(_cross_entropy)
nll_kernel = _launcher(_nll)
binary_cross_entropy_kernel = _launcher(_binary_cross_entropy)
