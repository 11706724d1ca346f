"""numba.cuda kernels of the coach's statistics, beside their CPU kernel in coach.py.

The same statistics as the CPU's, in the same columns: each layer's sums
over its parameters by one block of ``REDUCE`` threads in a fixed tree (no
atomics, so a run gives the same numbers every time; they differ from the
CPU's in the last bits only), then one thread per layer turns them into the
epoch's running totals. Activation statistics are counted the same way over
each activation layer's outputs; a ReLU unit's "fired" flag is set by one
thread per unit, and the count of set flags replaces the running count (the
CPU adds each unit once; the totals agree).
"""

import math

import numpy as np
from numba import cuda, float64

from jitprop import cuda_launch
from jitprop.default_plugins.coach import (
    BATCHES, FIRED, GRAD_NORM, GRAD_NORM_MAX, GRAD_RMS, RELU, SATURATED, TANH, TANH_LIMIT, UPDATE_LOG, UPDATES, ZERO,
)  # fmt: skip

REDUCE = 32  # threads of each reduction block (a power of two)
_sums = {}  # n_layers -> (n_layers, 5) device scratch: allocated once, not per batch


@cuda.jit
def _layer_sums(g, p, prev, offsets, out):
    """Per layer (one block each): sums of g^2, d, d^2, p, p^2 for d = p - prev; prev becomes p."""
    s = cuda.shared.array((5, REDUCE), float64)
    layer, t = cuda.blockIdx.x, cuda.threadIdx.x
    gg = sd = sdd = sp = spp = 0.0
    for i in range(offsets[layer] + t, offsets[layer + 1], REDUCE):
        w = float64(p[i])
        d = w - float64(prev[i])
        v = float64(g[i])
        gg += v * v
        sd += d
        sdd += d * d
        sp += w
        spp += w * w
        prev[i] = p[i]
    s[0, t], s[1, t], s[2, t], s[3, t], s[4, t] = gg, sd, sdd, sp, spp
    cuda.syncthreads()
    half = REDUCE // 2
    while half > 0:
        if t < half:
            for k in range(5):
                s[k, t] += s[k, t + half]
        cuda.syncthreads()
        half //= 2
    if t == 0:
        for k in range(5):
            out[layer, k] = s[k, 0]


@cuda.jit
def _accumulate(sums, offsets, stats):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for layer in range(start, sums.shape[0], stride):
        stats[layer, BATCHES] += 1.0
        n = offsets[layer + 1] - offsets[layer]
        if n == 0:
            continue
        norm = math.sqrt(sums[layer, 0])
        stats[layer, GRAD_NORM] += norm
        if norm > stats[layer, GRAD_NORM_MAX]:
            stats[layer, GRAD_NORM_MAX] = norm
        stats[layer, GRAD_RMS] += norm / math.sqrt(n)
        var_d = sums[layer, 2] / n - (sums[layer, 1] / n) ** 2
        var_p = sums[layer, 4] / n - (sums[layer, 3] / n) ** 2
        if var_d > 0.0 and var_p > 0.0:
            stats[layer, UPDATE_LOG] += 0.5 * math.log10(var_d / var_p)
            stats[layer, UPDATES] += 1.0


@cuda.jit(device=True)
def _tree_sum(s, t):
    """The sum of shared array ``s`` (one value per thread ``t`` of the block), in a fixed tree."""
    cuda.syncthreads()
    half = REDUCE // 2
    while half > 0:
        if t < half:
            s[t] += s[t + half]
        cuda.syncthreads()
        half //= 2
    return s[0]


@cuda.jit
def _count(out, kind, stats, layer, column):
    """stats[layer, column] += the share of ``out``'s values that are zero (ReLU) or saturated: one block."""
    s = cuda.shared.array(REDUCE, float64)
    t = cuda.threadIdx.x
    rows, width = out.shape[0], out.shape[1]
    count = 0.0
    for i in range(t, rows * width, REDUCE):
        v = out[i // width, i % width]
        if kind == RELU:
            count += 1.0 if v <= 0.0 else 0.0
        else:
            u = v if kind == TANH else 2.0 * v - 1.0
            count += 1.0 if abs(u) > TANH_LIMIT else 0.0
    s[t] = count
    total = _tree_sum(s, t)
    if t == 0:
        stats[layer, column] += total / (rows * width)


@cuda.jit
def _mark_fired(out, fired, stats, layer):
    """Each unit (one thread) that fires on this batch is marked; the epoch's first batch clears the marks."""
    j = cuda.grid(1)
    if j < out.shape[1]:
        mark = 0.0 if stats[layer, BATCHES] == 1.0 else fired[j]
        for r in range(out.shape[0]):
            if out[r, j] > 0.0:
                mark = 1.0
        fired[j] = mark


@cuda.jit
def _count_fired(fired, stats, layer):
    s = cuda.shared.array(REDUCE, float64)
    t = cuda.threadIdx.x
    total = 0.0
    for j in range(t, fired.shape[0], REDUCE):
        total += fired[j]
    s[t] = total
    fired_total = _tree_sum(s, t)
    if t == 0:
        stats[layer, FIRED] = fired_total


def coach_kernel(g, p, offsets, lr, h, stats, memory, acts):
    layers = offsets.shape[0] - 1
    if layers not in _sums:
        _sums[layers] = cuda.device_array((layers, 5), np.float64)
    sums = _sums[layers]
    n_params = g.shape[0]
    _layer_sums[layers, REDUCE](g, p, memory[:n_params], offsets, sums)
    _accumulate[cuda_launch.grid_1d(layers)](sums, offsets, stats)
    for layer in range(layers):
        kind = int(h[1 + 2 * layer])
        if kind == 0:
            continue
        out = acts[layer + 1]
        if kind == RELU:
            _count[1, REDUCE](out, kind, stats, layer, ZERO)
            start = n_params + int(h[2 + 2 * layer])
            fired = memory[start : start + out.shape[1]]
            _mark_fired[cuda_launch.grid_1d(out.shape[1])](out, fired, stats, layer)
            _count_fired[1, REDUCE](fired, stats, layer)
        else:
            _count[1, REDUCE](out, kind, stats, layer, SATURATED)
