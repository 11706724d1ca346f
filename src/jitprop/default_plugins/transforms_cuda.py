"""numba.cuda kernels of the built-in gradient transforms, beside their CPU kernels in transforms.py.

Norms are sums over many values: each layer's is reduced by one block of
``REDUCE`` threads in a fixed tree (no atomics), so a run gives the same
sums every time; they differ from the CPU's sequential sums in the last
bits only.
"""

import math

import numpy as np
from numba import cuda, float64

from jitprop import cuda_launch
from jitprop.default_plugins.transforms import BATCHES, CLIP_VALUE, DECAY_RANGES, DECAY_RATE, GRAD_NORM, GRAD_NORM_MAX, MAX_NORM, STEP_RATIO, WEIGHT_NORM

#: Threads of each per-layer reduction block (a power of two).
REDUCE = 32

_squares = {}  # n_layers -> (n_layers, 2) device scratch: allocated once, not per batch


@cuda.jit
def _layer_squares(g, p, offsets, out, weights):
    """out[l, 0] = sum of g^2 over layer l's slice, out[l, 1] the same of p (when ``weights``): one block per layer."""
    gs = cuda.shared.array(REDUCE, float64)
    ps = cuda.shared.array(REDUCE, float64)
    layer, t = cuda.blockIdx.x, cuda.threadIdx.x
    gg = 0.0
    pp = 0.0
    for i in range(offsets[layer] + t, offsets[layer + 1], REDUCE):
        v = float64(g[i])
        gg += v * v
        if weights:
            w = float64(p[i])
            pp += w * w
    gs[t] = gg
    ps[t] = pp
    cuda.syncthreads()
    half = REDUCE // 2
    while half > 0:
        if t < half:
            gs[t] += gs[t + half]
            ps[t] += ps[t + half]
        cuda.syncthreads()
        half //= 2
    if t == 0:
        out[layer, 0] = gs[0]
        out[layer, 1] = ps[0]


@cuda.jit
def _clip_value(g, clip_value):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, g.shape[0], stride):  # not min()/max(): they need a GPU to compile to PTX
        if g[i] > clip_value:
            g[i] = clip_value
        elif g[i] < -clip_value:
            g[i] = -clip_value


@cuda.jit
def _clip_norm(g, squares, max_norm):
    # Every thread adds up the (few) per-layer sums in the same order: no second reduction launch.
    total = 0.0
    for layer in range(squares.shape[0]):
        total += squares[layer, 0]
    norm = math.sqrt(total)
    if norm > max_norm:
        scale = max_norm / (norm + 1e-6)  # torch.nn.utils.clip_grad_norm_
        start, stride = cuda.grid(1), cuda.gridsize(1)
        for i in range(start, g.shape[0], stride):
            g[i] *= scale


@cuda.jit
def _accumulate_norms(squares, lr, stats):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for layer in range(start, squares.shape[0], stride):
        gn, pn = math.sqrt(squares[layer, 0]), math.sqrt(squares[layer, 1])
        stats[layer, BATCHES] += 1.0
        stats[layer, GRAD_NORM] += gn
        if gn > stats[layer, GRAD_NORM_MAX]:
            stats[layer, GRAD_NORM_MAX] = gn
        stats[layer, WEIGHT_NORM] += pn
        if pn > 0.0:
            stats[layer, STEP_RATIO] += lr * gn / pn


def _scratch(layers):
    if layers not in _squares:
        _squares[layers] = cuda.device_array((layers, 2), np.float64)
    return _squares[layers]


def clip_kernel(g, p, offsets, lr, h, stats):
    if h[CLIP_VALUE] > 0.0:
        _clip_value[cuda_launch.grid_1d(g.shape[0])](g, float(h[CLIP_VALUE]))
    if h[MAX_NORM] > 0.0:
        layers = offsets.shape[0] - 1
        squares = _scratch(layers)
        _layer_squares[layers, REDUCE](g, p, offsets, squares, False)
        _clip_norm[cuda_launch.grid_1d(g.shape[0])](g, squares, float(h[MAX_NORM]))


def norms_kernel(g, p, offsets, lr, h, stats):
    layers = offsets.shape[0] - 1
    squares = _scratch(layers)
    _layer_squares[layers, REDUCE](g, p, offsets, squares, True)
    _accumulate_norms[cuda_launch.grid_1d(layers)](squares, float(lr), stats)


@cuda.jit
def _decay(g, p, rate):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, g.shape[0], stride):
        g[i] += rate * p[i]


def decay_kernel(g, p, offsets, lr, h, stats):
    rate = float(h[DECAY_RATE])
    for r in range(DECAY_RANGES, h.shape[0], 2):  # one launch per decayed range: a model has few
        a, b = int(h[r]), int(h[r + 1])
        _decay[cuda_launch.grid_1d(b - a)](g[a:b], p[a:b], rate)
