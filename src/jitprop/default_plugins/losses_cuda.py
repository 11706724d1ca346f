"""numba.cuda kernels of the built-in losses, beside their CPU kernels in losses.py.

``kernel(pred, y, grad, h, out)`` writes dL/d(pred) of the batch-mean loss
into ``grad`` like the CPU kernel, and the batch-mean loss into the device
scalar ``out[0]`` instead of returning it, so training needs no copy back
per batch. A thread handles a row, with the CPU kernel's own row functions
(``losses.mse_row`` and the rest; cross-entropy's exps by math.exp, where the
CPU kernel takes the batch's at once with ``kernels.fast_exp``): any width
works; rows meet in one atomic sum (its order, so the loss's last bits, may
vary between runs; the gradients do not).
"""

import math

from numba import cuda

from jitprop import cuda_launch
from jitprop.default_plugins.losses import (
    binary_cross_entropy_row, cross_entropy_from_exp, mae_row, mse_row, nll_row, row_max,
)  # fmt: skip

# Each called as the CPU kernels call it (cuda_launch.device: the plain function on the simulator).
binary_cross_entropy_row = cuda_launch.device(binary_cross_entropy_row)
cross_entropy_from_exp = cuda_launch.device(cross_entropy_from_exp)
mae_row = cuda_launch.device(mae_row)
mse_row = cuda_launch.device(mse_row)
nll_row = cuda_launch.device(nll_row)
row_max = cuda_launch.device(row_max)


@cuda.jit
def _zero(out):
    if cuda.grid(1) == 0:
        out[0] = 0.0


@cuda.jit
def _mse(pred, y, grad, out):
    n, k = pred.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, stride):
        cuda.atomic.add(out, 0, mse_row(pred, y, grad, i, 2.0 / (n * k), 0.0) / (n * k))


@cuda.jit
def _mae(pred, y, grad, out):
    n, k = pred.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, stride):
        cuda.atomic.add(out, 0, mae_row(pred, y, grad, i, 1.0 / (n * k), 0.0) / (n * k))


@cuda.jit
def _cross_entropy(pred, y, grad, out):
    n = pred.shape[0]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, stride):
        m = row_max(pred, i)
        for j in range(pred.shape[1]):
            grad[i, j] = math.exp(pred[i, j] - m)
        cuda.atomic.add(out, 0, cross_entropy_from_exp(pred, y, grad, i, 1.0 / n, m) / n)


@cuda.jit
def _nll(pred, y, grad, out):
    n = pred.shape[0]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, stride):
        cuda.atomic.add(out, 0, nll_row(pred, y, grad, i, 1.0 / n) / n)


@cuda.jit
def _binary_cross_entropy(pred, y, grad, out):
    n, k = pred.shape
    scale = 1.0 / (n * k)
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, stride):
        cuda.atomic.add(out, 0, binary_cross_entropy_row(pred, y, grad, i, scale, 0.0) * scale)


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
