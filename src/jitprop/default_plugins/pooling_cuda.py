"""numba.cuda kernels of the pooling layers, beside their CPU kernels in pooling.py.

One thread per value written: each output from its window, each input
gradient from the windows that cover it (a gather, so no atomic adds).
"""

import math

from numba import cuda

from jitprop import cuda_launch
from jitprop.default_plugins.geometry import geometry


@cuda.jit
def _max_forward(x, c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow, out, cache):
    first, stride = cuda.grid(1), cuda.gridsize(1)
    for e in range(first, out.shape[0] * out.shape[1], stride):
        n, o = e // out.shape[1], e % out.shape[1]
        c, y, z = o // (oh * ow), (o // ow) % oh, o % ow
        best, at, nan = -math.inf, -1, False
        for i in range(kh):
            src_y = y * sh - ph + i
            if 0 <= src_y < height:
                for j in range(kw):
                    src_x = z * sw - pw + j
                    if 0 <= src_x < width:
                        q = (c * height + src_y) * width + src_x
                        v = x[n, q]
                        nan |= v != v
                        if at < 0 or v > best:  # as the CPU kernel: the first maximum; NaN propagates
                            best, at = v, q
        out[n, o] = math.nan if nan else best
        cache[n, o] = at


@cuda.jit
def _pool_backward(grad_out, cache, is_max, c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow, grad_in):
    """dL/dx of max pooling (the windows whose winner is this input) or of average pooling (every
    window that covers it, over the window's area)."""
    first, stride = cuda.grid(1), cuda.gridsize(1)
    scale = 1.0 / (kh * kw)
    for e in range(first, grad_in.shape[0] * grad_in.shape[1], stride):
        n, q = e // grad_in.shape[1], e % grad_in.shape[1]
        c, a, s = q // (height * width), (q // width) % height, q % width
        total = grad_out[0, 0] * 0
        for i in range(kh):
            dy = a + ph - i
            if dy >= 0 and dy % sh == 0 and dy // sh < oh:
                for j in range(kw):
                    dx = s + pw - j
                    if dx >= 0 and dx % sw == 0 and dx // sw < ow:
                        o = (c * oh + dy // sh) * ow + dx // sw
                        if not is_max:
                            total += grad_out[n, o] * scale
                        elif cache[n, o] == q:
                            total += grad_out[n, o]
        grad_in[n, q] = total


@cuda.jit
def _avg_forward(x, c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow, out):
    first, stride = cuda.grid(1), cuda.gridsize(1)
    scale = 1.0 / (kh * kw)
    for e in range(first, out.shape[0] * out.shape[1], stride):
        n, o = e // out.shape[1], e % out.shape[1]
        c, y, z = o // (oh * ow), (o // ow) % oh, o % ow
        total = 0.0
        for i in range(kh):
            src_y = y * sh - ph + i
            if 0 <= src_y < height:
                for j in range(kw):
                    src_x = z * sw - pw + j
                    if 0 <= src_x < width:
                        total += x[n, (c * height + src_y) * width + src_x]
        out[n, o] = total * scale


@cuda.jit
def _global_forward(x, out):
    first, stride = cuda.grid(1), cuda.gridsize(1)
    area = x.shape[1] // out.shape[1]
    for e in range(first, out.shape[0] * out.shape[1], stride):
        n, c = e // out.shape[1], e % out.shape[1]
        total = 0.0
        for q in range(c * area, (c + 1) * area):
            total += x[n, q]
        out[n, c] = total / area


@cuda.jit
def _global_backward(grad_out, grad_in):
    first, stride = cuda.grid(1), cuda.gridsize(1)
    area = grad_in.shape[1] // grad_out.shape[1]
    for e in range(first, grad_in.shape[0] * grad_in.shape[1], stride):
        n, q = e // grad_in.shape[1], e % grad_in.shape[1]
        grad_in[n, q] = grad_out[n, q // area] / area


def max_pool2d_forward(p, h, x, out, cache, training, seed):
    _max_forward[cuda_launch.grid_1d(out.size)](x, *geometry(h), out, cache)


def max_pool2d_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    if grad_in.shape[0] > 0:
        _pool_backward[cuda_launch.grid_1d(grad_in.size)](grad_out, cache, True, *geometry(h), grad_in)


def avg_pool2d_forward(p, h, x, out, cache, training, seed):
    _avg_forward[cuda_launch.grid_1d(out.size)](x, *geometry(h), out)


def avg_pool2d_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    if grad_in.shape[0] > 0:
        _pool_backward[cuda_launch.grid_1d(grad_in.size)](grad_out, cache, False, *geometry(h), grad_in)


def global_avg_pool2d_forward(p, h, x, out, cache, training, seed):
    _global_forward[cuda_launch.grid_1d(out.size)](x, out)


def global_avg_pool2d_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    if grad_in.shape[0] > 0:
        _global_backward[cuda_launch.grid_1d(grad_in.size)](grad_out, grad_in)
