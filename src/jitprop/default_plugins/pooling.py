"""Pooling over (channels, height, width) samples: max_pool2d, avg_pool2d, global_avg_pool2d (torch's semantics)."""

import numpy as np
from numba import njit, prange

import jitprop
from jitprop.errors import ConfigError

from .geometry import geometry, image_shape, out_hw, pair, window_hyper


@njit(cache=True)
def max_windows(x, c_in, height, width, kh, kw, sh, sw, oh, ow, out, cache):
    """max_pool2d_forward of one sample without padding: every window lies inside, so no clipping
    (1.5x quicker than the general loop, on LeNet's pools)."""
    for c in range(c_in):
        plane = c * height * width
        for y in range(oh):
            top = plane + y * sh * width
            first = (c * oh + y) * ow
            for z in range(ow):
                at = top + z * sw
                best = x[at]
                nan = False
                for i in range(kh):
                    row = top + i * width + z * sw
                    for j in range(kw):
                        v = x[row + j]
                        nan |= v != v
                        if v > best:
                            best, at = v, row + j
                out[first + z] = np.nan if nan else best
                cache[first + z] = at


@njit(cache=True)
def max_windows_2x2(x, c_in, height, width, oh, ow, out, cache):
    """max_windows for the common 2x2, stride 2: one loop over a row's windows, without branches
    (3-4x quicker on LeNet's pools: the general loop's cost is its unpredictable branch on
    which value wins). The winner is the first that equals the maximum."""
    for c in range(c_in):
        for y in range(oh):
            r0 = (c * height + 2 * y) * width
            first = (c * oh + y) * ow
            top, bottom = x[r0 : r0 + 2 * ow], x[r0 + width : r0 + width + 2 * ow]
            best, at = out[first : first + ow], cache[first : first + ow]
            for z in range(ow):
                a, b, d, e = top[2 * z], top[2 * z + 1], bottom[2 * z], bottom[2 * z + 1]
                m = max(max(a, b), max(d, e))
                tap = np.float32(width + 1)  # offsets in float32, as the cache keeps them: selects, not branches
                tap = np.float32(width) if d == m else tap
                tap = np.float32(1) if b == m else tap
                tap = np.float32(0) if a == m else tap
                nan = (a != a) | (b != b) | (d != d) | (e != e)
                best[z] = np.nan if nan else m
                at[z] = tap + np.float32(r0 + 2 * z)


@njit(cache=True, parallel=True)
def max_pool2d_forward(p, h, x, out, cache, training, seed):
    c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow = geometry(h)
    two_by_two = kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
    for n in prange(x.shape[0]):  # samples apart, on every core
        if two_by_two:
            max_windows_2x2(x[n], c_in, height, width, oh, ow, out[n], cache[n])
            continue
        if ph == 0 and pw == 0:
            max_windows(x[n], c_in, height, width, kh, kw, sh, sw, oh, ow, out[n], cache[n])
            continue
        for c in range(c_in):
            plane = c * height * width
            for y in range(oh):
                top = y * sh - ph  # the window's rows, clipped to the input: padding never wins
                i0, i1 = max(0, -top), min(kh, height - top)
                for z in range(ow):
                    left = z * sw - pw
                    j0, j1 = max(0, -left), min(kw, width - left)
                    at = plane + (top + i0) * width + left + j0
                    best = x[n, at]
                    nan = False
                    for i in range(i0, i1):
                        row = plane + (top + i) * width + left
                        for j in range(j0, j1):
                            v = x[n, row + j]
                            nan |= v != v  # a flag, not a branch: comparisons with NaN stay off the hot path
                            if v > best:  # the first maximum takes the gradient, as in torch
                                best, at = v, row + j
                    o = (c * oh + y) * ow + z
                    out[n, o] = np.nan if nan else best  # NaN propagates, as in torch
                    cache[n, o] = at  # where the gradient goes


@njit(cache=True, parallel=True)
def max_pool2d_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    if grad_in.shape[0] == 0:
        return
    for n in prange(grad_out.shape[0]):
        grad_in[n] = 0.0
        for o in range(grad_out.shape[1]):
            grad_in[n, int(cache[n, o])] += grad_out[n, o]


@njit(cache=True)
def avg_pool2d_forward(p, h, x, out, cache, training, seed):
    c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow = geometry(h)
    scale = 1.0 / (kh * kw)  # torch's count_include_pad=True: padding counts as zeros
    for n in range(x.shape[0]):
        for c in range(c_in):
            plane = c * height * width
            for y in range(oh):
                for z in range(ow):
                    total = 0.0
                    for i in range(kh):
                        src_y = y * sh - ph + i
                        if 0 <= src_y < height:
                            for j in range(kw):
                                src_x = z * sw - pw + j
                                if 0 <= src_x < width:
                                    total += x[n, plane + src_y * width + src_x]
                    out[n, (c * oh + y) * ow + z] = total * scale


@njit(cache=True)
def avg_pool2d_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    if grad_in.shape[0] == 0:
        return
    c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow = geometry(h)
    scale = 1.0 / (kh * kw)
    grad_in[:] = 0.0
    for n in range(grad_out.shape[0]):
        for c in range(c_in):
            plane = c * height * width
            for y in range(oh):
                for z in range(ow):
                    g = grad_out[n, (c * oh + y) * ow + z] * scale
                    for i in range(kh):
                        src_y = y * sh - ph + i
                        if 0 <= src_y < height:
                            for j in range(kw):
                                src_x = z * sw - pw + j
                                if 0 <= src_x < width:
                                    grad_in[n, plane + src_y * width + src_x] += g


class _Pool2d(jitprop.Layer):
    """A window sliding over each channel; ``stride`` defaults to ``kernel_size``, as in torch."""

    example_options = {"kernel_size": 2, "stride": 1, "padding": 1}
    example_shape = (2, 5, 4)

    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size = pair("kernel_size", kernel_size, self.name, minimum=1)
        self.stride = self.kernel_size if stride is None else pair("stride", stride, self.name, minimum=1)
        self.padding = pair("padding", padding, self.name, minimum=0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ConfigError(f"{self.name}: padding {self.padding} must be at most half of kernel_size {self.kernel_size}, as torch requires")

    def output_shape(self, in_shape):
        c, height, width = image_shape(in_shape)
        return (c, *out_hw(height, width, self.kernel_size, self.stride, self.padding))

    def hyper(self):
        return np.array(window_hyper(self), dtype=np.float64)  # GEOMETRY


class MaxPool2d(_Pool2d):
    """Largest value of each window, torch.nn.MaxPool2d (padding never wins; the gradient goes to the first maximum)."""

    name = "max_pool2d"
    forward_kernel = staticmethod(max_pool2d_forward)
    backward_kernel = staticmethod(max_pool2d_backward)
    cuda_forward = "jitprop.default_plugins.pooling_cuda:max_pool2d_forward"
    cuda_backward = "jitprop.default_plugins.pooling_cuda:max_pool2d_backward"

    def build(self, in_shape):
        out = super().build(in_shape)
        if self.in_dim > 2**24:  # the cache keeps each window's winner as a float32 index, exact up to 2^24
            raise ConfigError(f"samples of {self.in_dim} values are more than max_pool2d can index (2^24)")
        return out

    def cache_dim(self):
        return self.out_dim


class AvgPool2d(_Pool2d):
    """Mean of each window, torch.nn.AvgPool2d (count_include_pad=True: padding counts as zeros)."""

    name = "avg_pool2d"
    forward_kernel = staticmethod(avg_pool2d_forward)
    backward_kernel = staticmethod(avg_pool2d_backward)
    cuda_forward = "jitprop.default_plugins.pooling_cuda:avg_pool2d_forward"
    cuda_backward = "jitprop.default_plugins.pooling_cuda:avg_pool2d_backward"


@njit(cache=True)
def global_avg_pool2d_forward(p, h, x, out, cache, training, seed):
    channels = out.shape[1]
    area = x.shape[1] // channels
    for n in range(x.shape[0]):
        for c in range(channels):
            total = 0.0
            for q in range(c * area, (c + 1) * area):
                total += x[n, q]
            out[n, c] = total / area


@njit(cache=True)
def global_avg_pool2d_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    if grad_in.shape[0] == 0:
        return
    channels = grad_out.shape[1]
    area = grad_in.shape[1] // channels
    for n in range(grad_out.shape[0]):
        for c in range(channels):
            g = grad_out[n, c] / area
            for q in range(c * area, (c + 1) * area):
                grad_in[n, q] = g


class GlobalAvgPool2d(jitprop.Layer):
    """Each channel's mean: (C, H, W) -> (C,), torch's AdaptiveAvgPool2d(1) followed by Flatten."""

    name = "global_avg_pool2d"
    example_shape = (3, 2, 5)
    forward_kernel = staticmethod(global_avg_pool2d_forward)
    backward_kernel = staticmethod(global_avg_pool2d_backward)
    cuda_forward = "jitprop.default_plugins.pooling_cuda:global_avg_pool2d_forward"
    cuda_backward = "jitprop.default_plugins.pooling_cuda:global_avg_pool2d_backward"

    def output_shape(self, in_shape):
        return (image_shape(in_shape)[0],)


@jitprop.hookimpl
def register_layers(register):
    register(MaxPool2d)
    register(AvgPool2d)
    register(GlobalAvgPool2d)
