"""numba.cuda kernels of the built-in optimizers, beside their CPU kernels in optimizers.py.

Same arguments and update rules as the CPU kernels, one grid-stride loop over
the flat buffers; the scalars (lr, hyperparameters, step) come from the host.
"""

import math

from numba import cuda

from jitprop import cuda_launch


@cuda.jit
def _sgd(p, g, state, lr, momentum, dampening, nesterov, weight_decay, first):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.shape[0], stride):
        d = g[i] + weight_decay * p[i]
        if momentum != 0.0:
            v = d if first else momentum * state[0, i] + (1.0 - dampening) * d
            state[0, i] = v
            d = d + momentum * v if nesterov else v
        p[i] -= lr * d


@cuda.jit
def _adagrad(p, g, state, clr, weight_decay, eps):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.shape[0], stride):
        d = g[i] + weight_decay * p[i]
        s = state[0, i] + d * d
        state[0, i] = s
        p[i] -= clr * d / (math.sqrt(s) + eps)


@cuda.jit
def _rmsprop(p, g, state, lr, alpha, eps, weight_decay, momentum, centered):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.shape[0], stride):
        d = g[i] + weight_decay * p[i]
        sq = alpha * state[0, i] + (1.0 - alpha) * d * d
        state[0, i] = sq
        if centered:
            ga = alpha * state[2, i] + (1.0 - alpha) * d
            state[2, i] = ga
            avg = math.sqrt(sq - ga * ga) + eps
        else:
            avg = math.sqrt(sq) + eps
        if momentum > 0.0:
            buf = momentum * state[1, i] + d / avg
            state[1, i] = buf
            p[i] -= lr * buf
        else:
            p[i] -= lr * d / avg


@cuda.jit
def _adam(p, g, state, beta1, beta2, eps, weight_decay, decoupled, step_size, inv_sqrt_bias2, shrink):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.shape[0], stride):
        if decoupled:
            p[i] *= shrink
            d = g[i]
        else:
            d = g[i] + weight_decay * p[i]
        m = beta1 * state[0, i] + (1.0 - beta1) * d
        v = beta2 * state[1, i] + (1.0 - beta2) * d * d
        state[0, i] = m
        state[1, i] = v
        p[i] -= step_size * m / (math.sqrt(v) * inv_sqrt_bias2 + eps)


def _grid(p):
    return cuda_launch.grid_1d(p.shape[0])


def sgd_kernel(p, g, state, lr, h, step):
    _sgd[_grid(p)](p, g, state, lr, h[0], h[1], h[2] != 0.0, h[3], step == 1)


def adagrad_kernel(p, g, state, lr, h, step):
    _adagrad[_grid(p)](p, g, state, lr / (1.0 + (step - 1) * h[0]), h[1], h[2])


def rmsprop_kernel(p, g, state, lr, h, step):
    _rmsprop[_grid(p)](p, g, state, lr, h[0], h[1], h[2], h[3], h[4] != 0.0)


def adam_kernel(p, g, state, lr, h, step):
    step_size = lr / (1.0 - h[0] ** step)
    inv_sqrt_bias2 = 1.0 / math.sqrt(1.0 - h[1] ** step)
    _adam[_grid(p)](p, g, state, h[0], h[1], h[2], h[3], h[4] != 0.0, step_size, inv_sqrt_bias2, 1.0 - lr * h[3])
