"""numba.cuda kernels of the built-in optimizers, beside their CPU kernels in optimizers.py.

One grid-stride loop over the flat buffers, calling the same per-weight
update rules as the CPU kernels (``optimizers.adam_update`` and the rest);
the scalars (lr, hyperparameters, step) come from the host, in float64.
"""

import math

from numba import cuda

from jitprop import cuda_launch
from jitprop.default_plugins.optimizers import (
    ADAGRAD_EPS, ADAGRAD_LR_DECAY, ADAGRAD_WEIGHT_DECAY, ADAM_BETA1, ADAM_BETA2, ADAM_DECOUPLED, ADAM_EPS,
    ADAM_WEIGHT_DECAY, RMSPROP_ALPHA, RMSPROP_CENTERED, RMSPROP_EPS, RMSPROP_MOMENTUM, RMSPROP_WEIGHT_DECAY,
    SGD_DAMPENING, SGD_MOMENTUM, SGD_NESTEROV, SGD_WEIGHT_DECAY, adagrad_update, adam_update, rmsprop_update,
    sgd_update,
)  # fmt: skip

# Each called as the CPU kernels call it (cuda_launch.device: the plain function on the simulator).
adagrad_update = cuda_launch.device(adagrad_update)
adam_update = cuda_launch.device(adam_update)
rmsprop_update = cuda_launch.device(rmsprop_update)
sgd_update = cuda_launch.device(sgd_update)


@cuda.jit
def _sgd(p, g, state, lr, momentum, dampening, nesterov, weight_decay, first):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.shape[0], stride):
        p[i], state[0, i] = sgd_update(p[i], g[i], state[0, i], first, lr, momentum, 1.0 - dampening, nesterov,
                                       weight_decay, momentum != 0.0)  # fmt: skip


@cuda.jit
def _adagrad(p, g, state, clr, weight_decay, eps):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.shape[0], stride):
        p[i], state[0, i] = adagrad_update(p[i], g[i], state[0, i], clr, weight_decay, eps)


@cuda.jit
def _rmsprop(p, g, state, lr, alpha, eps, weight_decay, momentum, centered):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.shape[0], stride):
        p[i], state[0, i], state[1, i], state[2, i] = rmsprop_update(
            p[i], g[i], state[0, i], state[1, i], state[2, i], lr, alpha, 1.0 - alpha, eps, weight_decay, momentum,
            centered, momentum > 0.0)  # fmt: skip


@cuda.jit
def _adam(p, g, state, beta1, beta2, eps, weight_decay, decoupled, step_size, inv_sqrt_bias2, shrink):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.shape[0], stride):
        p[i], state[0, i], state[1, i] = adam_update(p[i], g[i], state[0, i], state[1, i], beta1, beta2, 1.0 - beta1,
                                                     1.0 - beta2, eps, weight_decay, decoupled, step_size,
                                                     inv_sqrt_bias2, shrink)  # fmt: skip


def _grid(p):
    return cuda_launch.grid_1d(p.shape[0])


def sgd_kernel(p, g, state, lr, h, step):
    _sgd[_grid(p)](p, g, state, lr, h[SGD_MOMENTUM], h[SGD_DAMPENING], h[SGD_NESTEROV] != 0.0, h[SGD_WEIGHT_DECAY],
                   step == 1)  # fmt: skip


def adagrad_kernel(p, g, state, lr, h, step):
    _adagrad[_grid(p)](p, g, state, lr / (1.0 + (step - 1) * h[ADAGRAD_LR_DECAY]), h[ADAGRAD_WEIGHT_DECAY], h[ADAGRAD_EPS])


def rmsprop_kernel(p, g, state, lr, h, step):
    _rmsprop[_grid(p)](p, g, state, lr, h[RMSPROP_ALPHA], h[RMSPROP_EPS], h[RMSPROP_WEIGHT_DECAY], h[RMSPROP_MOMENTUM],
                       h[RMSPROP_CENTERED] != 0.0)  # fmt: skip


def adam_kernel(p, g, state, lr, h, step):
    step_size = lr / (1.0 - h[ADAM_BETA1] ** step)
    inv_sqrt_bias2 = 1.0 / math.sqrt(1.0 - h[ADAM_BETA2] ** step)
    _adam[_grid(p)](p, g, state, h[ADAM_BETA1], h[ADAM_BETA2], h[ADAM_EPS], h[ADAM_WEIGHT_DECAY], h[ADAM_DECOUPLED] != 0.0,
                    step_size, inv_sqrt_bias2, 1.0 - lr * h[ADAM_WEIGHT_DECAY])  # fmt: skip
