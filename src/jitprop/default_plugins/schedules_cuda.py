"""numba.cuda kernels of the built-in schedules, beside their host versions in schedules.py.

Each writes the epoch's rate into ``out[0]`` in float64, with the host
version's arithmetic, in one thread: it is one number. The GPU backend reads
it back once per epoch (it is logged with the epoch's metrics, and callbacks
may change it before the update launchers take it).
"""

import math

from numba import cuda

from jitprop.default_plugins.schedules import COSINE_ETA_MIN, COSINE_T_MAX, EXPONENTIAL_GAMMA, STEP_GAMMA, STEP_SIZE


@cuda.jit
def _step(out, epoch, base_lr, step_size, gamma):
    if cuda.grid(1) == 0:
        out[0] = base_lr * gamma ** float(epoch // step_size)


@cuda.jit
def _exponential(out, epoch, base_lr, gamma):
    if cuda.grid(1) == 0:
        out[0] = base_lr * gamma ** float(epoch)


@cuda.jit
def _cosine(out, epoch, base_lr, t_max, eta_min):
    if cuda.grid(1) == 0:
        t = epoch if epoch < t_max else t_max
        out[0] = eta_min + (base_lr - eta_min) * (1.0 + math.cos(math.pi * t / t_max)) / 2.0


def step_kernel(out, epoch, base_lr, h):
    _step[1, 1](out, epoch, base_lr, int(h[STEP_SIZE]), h[STEP_GAMMA])


def exponential_kernel(out, epoch, base_lr, h):
    _exponential[1, 1](out, epoch, base_lr, h[EXPONENTIAL_GAMMA])


def cosine_kernel(out, epoch, base_lr, h):
    _cosine[1, 1](out, epoch, base_lr, int(h[COSINE_T_MAX]), h[COSINE_ETA_MIN])
