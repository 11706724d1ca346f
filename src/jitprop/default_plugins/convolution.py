"""conv2d: a 2-D convolution over (channels, height, width) samples, as torch.nn.Conv2d.

Each sample is unfolded into columns (im2col: one column per output pixel,
one row per weight of a filter), so the convolution is one matrix product
with the (out_channels, in_channels * kh * kw) weight, done by BLAS; the
backward multiplies by the same columns for the weight gradient and folds
the product with the weight back (col2im) for the input gradient
(Chellapilla, Puri & Simard 2006). The forward keeps each sample's columns
in the layer's cache, so the backward does not unfold again. The geometry
travels in ``h``, so one compiled kernel serves every shape of a dtype.

Measured on LeNet (batch 64), the unfolding cost more than the products, so
stride 1 unfolds on a wide grid (below) by contiguous copies, and a batch is
worked on in ``CHUNKS`` chunks in parallel, each thread calling BLAS for its
own samples (BLAS itself on one thread meanwhile: runtime/threads.py).
"""

import numpy as np
from numba import njit, prange

import jitprop
from jitprop.components import check, positive_int
from jitprop.model import initializers
from jitprop.model.initializers import resolve

from .geometry import GEOMETRY, geometry, image_shape, out_hw, pair, window_hyper

#: conv2d's slot of ``h`` after the geometry: 1.0 when the layer has a bias
HAS_BIAS = len(GEOMETRY)
#: A batch is cut into this many chunks of samples, worked on in parallel, each with its own
#: scratch; the weight gradient adds the chunks' sums in order, so a run gives the same
#: numbers on any number of cores.
CHUNKS = 8


@njit(cache=True)
def im2col(x, c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow, col):
    """Unfold one sample ``x`` (c_in * height * width, NCHW) into ``col`` (c_in * kh * kw, oh * ow);
    taps that fall on the padding are 0."""
    for c in range(c_in):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                for y in range(oh):
                    src_y = y * sh - ph + i
                    base = y * ow
                    if src_y < 0 or src_y >= height:
                        for z in range(ow):
                            col[r, base + z] = 0.0
                        continue
                    row = c * height * width + src_y * width
                    for z in range(ow):
                        src_x = z * sw - pw + j
                        col[r, base + z] = x[row + src_x] if 0 <= src_x < width else 0.0


@njit(cache=True)
def col2im(col, c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow, x):
    """Fold ``col`` back onto one sample: ``x`` gets the sum of every column entry that read it."""
    x[:] = 0.0
    for c in range(c_in):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                for y in range(oh):
                    src_y = y * sh - ph + i
                    if src_y < 0 or src_y >= height:
                        continue
                    row = c * height * width + src_y * width
                    base = y * ow
                    for z in range(ow):
                        src_x = z * sw - pw + j
                        if 0 <= src_x < width:
                            x[row + src_x] += col[r, base + z]


# Stride 1, the common case, unfolds faster on a "wide" grid: output pixels are laid out
# padded_width apart (the last kw - 1 of each row are junk), so each tap's row of columns
# is one contiguous run of the zero-padded sample, copied without a test per element.
# The products give junk outputs in those places, which are dropped; their gradient is 0.


@njit(cache=True)
def wide_sizes(c_in, height, width, kh, kw, ph, pw):
    """(padded sample, wide pixels) of a stride-1 conv2d: the sizes ``pad``/``unfold_wide`` use."""
    hp, wp = height + 2 * ph, width + 2 * pw
    return c_in * hp * wp + kw - 1, (hp - kh + 1) * wp  # kw - 1 zeros after: the last tap's run ends there


@njit(cache=True)
def pad(x, c_in, height, width, ph, pw, xpad):
    """One sample with ``ph``/``pw`` zeros around each channel into ``xpad``, zeroed first (so
    the ``kw - 1`` values after the last channel are zeros too)."""
    hp, wp = height + 2 * ph, width + 2 * pw
    xpad[:] = 0.0
    for c in range(c_in):
        for y in range(height):
            dst = xpad[(c * hp + y + ph) * wp + pw : (c * hp + y + ph) * wp + pw + width]
            src = x[(c * height + y) * width : (c * height + y + 1) * width]
            for z in range(width):  # through views: vectorised, as slice assignment is not
                dst[z] = src[z]


@njit(cache=True)
def unpad(xpad, c_in, height, width, ph, pw, x):
    """The inverse of ``pad``: the sample inside the zeros."""
    hp, wp = height + 2 * ph, width + 2 * pw
    for c in range(c_in):
        for y in range(height):
            src = xpad[(c * hp + y + ph) * wp + pw : (c * hp + y + ph) * wp + pw + width]
            dst = x[(c * height + y) * width : (c * height + y + 1) * width]
            for z in range(width):
                dst[z] = src[z]


@njit(cache=True)
def unfold_wide(xpad, c_in, hp, wp, kh, kw, col):
    """Stride-1 im2col of a padded sample: tap (c, i, j)'s row is the run that starts at (c, i, j)."""
    wide = col.shape[1]
    for c in range(c_in):
        for i in range(kh):
            for j in range(kw):
                start = (c * hp + i) * wp + j
                src, dst = xpad[start : start + wide], col[(c * kh + i) * kw + j]
                for q in range(wide):
                    dst[q] = src[q]


@njit(cache=True)
def fold_wide(col, c_in, hp, wp, kh, kw, xpad):
    """The adjoint of ``unfold_wide``: each tap's row added back onto its run of ``xpad``."""
    wide = col.shape[1]
    xpad[:] = 0.0
    for c in range(c_in):
        for i in range(kh):
            for j in range(kw):
                start = (c * hp + i) * wp + j
                src, dst = col[(c * kh + i) * kw + j], xpad[start : start + wide]
                for q in range(wide):
                    dst[q] += src[q]


@njit(cache=True)
def add(a, total):
    """``total += a`` for 2-D arrays, in place (the operator would make a temporary)."""
    for r in range(a.shape[0]):
        src, dst = a[r], total[r]
        for q in range(a.shape[1]):
            dst[q] += src[q]


@njit(cache=True, fastmath={"reassoc"})
def total(v):
    """The sum of ``v``. Reassociated (only that), so it vectorises: as one chain of dependent
    adds, conv1's bias gradient took half of LeNet's first backward."""
    s = 0.0
    for q in range(v.shape[0]):
        s += v[q]
    return s


@njit(cache=True)
def chunk(c, n):
    """Samples [first, last) of chunk ``c`` of a batch of ``n``."""
    return c * n // CHUNKS, (c + 1) * n // CHUNKS


@njit(cache=True, parallel=True)
def conv2d_forward(p, h, x, out, cache, training, seed, scratch):
    c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow = geometry(h)
    taps, pixels = c_in * kh * kw, oh * ow
    c_out = out.shape[1] // pixels
    w = p[: c_out * taps].reshape((c_out, taps))
    b = p[c_out * taps : c_out * taps + c_out]
    bias = h[HAS_BIAS] != 0.0
    wide_grid = sh == 1 and sw == 1
    padded, wide = wide_sizes(c_in, height, width, kh, kw, ph, pw)
    hp, wp = height + 2 * ph, width + 2 * pw
    slot = scratch.shape[0] // CHUNKS
    for c in prange(CHUNKS):
        mine = scratch[c * slot : (c + 1) * slot]
        first, last = chunk(c, x.shape[0])
        for n in range(first, last):
            if wide_grid:
                col = cache[n].reshape((taps, wide))  # kept for the backward pass
                xpad = mine[:padded]
                y_wide = mine[padded : padded + c_out * wide].reshape((c_out, wide))
                pad(x[n], c_in, height, width, ph, pw, xpad)
                unfold_wide(xpad, c_in, hp, wp, kh, kw, col)
                np.dot(w, col, y_wide)
                for o in range(c_out):
                    shift = b[o] if bias else 0.0
                    for y in range(oh):
                        src = y_wide[o, y * wp : y * wp + ow]
                        dst = out[n, (o * oh + y) * ow : (o * oh + y + 1) * ow]
                        for z in range(ow):
                            dst[z] = src[z] + shift
            else:
                col = cache[n].reshape((taps, pixels))  # kept for the backward pass
                im2col(x[n], c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow, col)
                y = out[n].reshape((c_out, pixels))
                np.dot(w, col, y)
                if bias:
                    for o in range(c_out):
                        for q in range(pixels):
                            y[o, q] += b[o]


@njit(cache=True, parallel=True)
def conv2d_backward(p, h, x, out, cache, grad_out, grad_in, grad_p, scratch):
    c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow = geometry(h)
    taps, pixels = c_in * kh * kw, oh * ow
    c_out = grad_out.shape[1] // pixels
    w = p[: c_out * taps].reshape((c_out, taps))
    grad_w = grad_p[: c_out * taps].reshape((c_out, taps))
    grad_b = grad_p[c_out * taps : c_out * taps + c_out]
    wide_grid = sh == 1 and sw == 1
    padded, wide = wide_sizes(c_in, height, width, kh, kw, ph, pw)
    hp, wp = height + 2 * ph, width + 2 * pw
    cols = wide if wide_grid else pixels
    slot = scratch.shape[0] // CHUNKS
    sums = c_out * taps + c_out  # each chunk's dL/dW (transposed) and dL/db come first in its slot
    for c in prange(CHUNKS):
        mine = scratch[c * slot : (c + 1) * slot]
        sum_w = mine[: c_out * taps].reshape((taps, c_out))
        sum_b = mine[c_out * taps : sums]
        one = mine[sums : sums + c_out * taps].reshape((taps, c_out))  # one sample's dL/dW, transposed
        at = sums + c_out * taps
        g_wide = mine[at : at + c_out * wide].reshape((c_out, wide))
        grad_col = mine[at + c_out * wide : at + c_out * wide + taps * cols].reshape((taps, cols))
        grad_pad = mine[at + c_out * wide + taps * cols : at + c_out * wide + taps * cols + padded]
        sum_w[:] = 0.0
        sum_b[:] = 0.0
        g_wide[:] = 0.0  # the junk outputs' gradient: 0
        first, last = chunk(c, grad_out.shape[0])
        for n in range(first, last):
            for o in range(c_out if h[HAS_BIAS] != 0.0 else 0):
                sum_b[o] += total(grad_out[n, o * pixels : (o + 1) * pixels])
            if wide_grid:
                for o in range(c_out):
                    for y in range(oh):
                        src = grad_out[n, (o * oh + y) * ow : (o * oh + y + 1) * ow]
                        dst = g_wide[o, y * wp : y * wp + ow]
                        for z in range(ow):
                            dst[z] = src[z]
                g = g_wide
            else:
                g = grad_out[n].reshape((c_out, pixels))
            col = cache[n].reshape((taps, cols))  # the forward pass's columns of this sample
            np.dot(col, g.T, one)  # this sample's dL/dW^T = col . dL/dy^T (1.5x quicker than dL/dy . col^T)
            add(one, sum_w)
            if grad_in.shape[0] > 0:
                np.dot(w.T, g, grad_col)  # dL/dcol = W^T . dL/dy, folded back onto the input
                if wide_grid:
                    fold_wide(grad_col, c_in, hp, wp, kh, kw, grad_pad)
                    unpad(grad_pad, c_in, height, width, ph, pw, grad_in[n])
                else:
                    col2im(grad_col, c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow, grad_in[n])
    grad_w[:] = 0.0
    grad_b[:] = 0.0
    for c in range(CHUNKS):  # in a fixed order: the same sums whatever the number of threads
        sum_w = scratch[c * slot : c * slot + c_out * taps].reshape((taps, c_out))
        for o in range(c_out):
            for t in range(taps):
                grad_w[o, t] += sum_w[t, o]
        if h[HAS_BIAS] != 0.0:
            for o in range(c_out):
                grad_b[o] += scratch[c * slot + c_out * taps + o]


class Conv2d(jitprop.Layer):
    """2-D convolution, torch.nn.Conv2d: weight (out_channels, in_channels, kh, kw), bias (out_channels,).

    ``kernel_size``, ``stride`` and ``padding`` take an int or a (height, width)
    pair; padding is zeros. The input channels come from the input shape.
    """

    name = "conv2d"
    param_names = ("weight", "bias")
    example_options = {"out_channels": 2, "kernel_size": 3, "padding": 1}
    example_shape = (2, 5, 4)
    forward_kernel = staticmethod(conv2d_forward)
    backward_kernel = staticmethod(conv2d_backward)
    cuda_forward = "jitprop.default_plugins.convolution_cuda:conv2d_forward"
    cuda_backward = "jitprop.default_plugins.convolution_cuda:conv2d_backward"

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, bias=True, init="auto"):
        self.out_channels = positive_int("out_channels", out_channels, "conv2d")
        self.kernel_size = pair("kernel_size", kernel_size, "conv2d", minimum=1)
        self.stride = pair("stride", stride, "conv2d", minimum=1)
        self.padding = pair("padding", padding, "conv2d", minimum=0)
        check(isinstance(bias, bool), f"conv2d: bias must be true or false, got {bias!r}")
        self.bias, self.init = bias, initializers.check(init, "conv2d")
        if not bias:
            self.param_names = ("weight",)

    def output_shape(self, in_shape):
        _, height, width = image_shape(in_shape)
        return (self.out_channels, *out_hw(height, width, self.kernel_size, self.stride, self.padding))

    def hyper(self):
        return np.array([*window_hyper(self), 1.0 if self.bias else 0.0])  # GEOMETRY, HAS_BIAS

    def param_shapes(self):
        shapes = {"weight": (self.out_channels, self.in_shape[0], *self.kernel_size)}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def cache_dim(self):
        return self._taps() * self._pixels()  # each sample's columns (im2col)

    def scratch_size(self):
        """``CHUNKS`` slots, one per chunk of a batch; each holds what the bigger pass needs."""
        taps, pixels, c_out = self._taps(), self._pixels(), self.out_channels
        padded, wide = wide_sizes(*self.in_shape, *self.kernel_size, *self.padding)
        forward = padded + c_out * wide  # the padded sample, the wide output
        # sums of dL/dW and dL/db, one sample's dL/dW, dL/dy wide, dL/dcol, dL/dx padded
        backward = 2 * c_out * taps + c_out + c_out * wide + taps * pixels + padded
        return CHUNKS * max(forward, backward)

    def _taps(self):
        return self.in_shape[0] * self.kernel_size[0] * self.kernel_size[1]

    def _pixels(self):
        """Output pixels per channel as the kernels lay them out: on the wide grid for stride 1."""
        if self.stride == (1, 1):
            return wide_sizes(*self.in_shape, *self.kernel_size, *self.padding)[1]
        return self.out_shape[1] * self.out_shape[2]

    def init_params(self, params, rng, relu_next=False):
        area = self.kernel_size[0] * self.kernel_size[1]
        fan_in, fan_out = self.in_shape[0] * area, self.out_channels * area
        params["weight"][...] = resolve(self.init, relu_next)(rng, fan_in, fan_out, params["weight"].shape)
        if self.bias:
            params["bias"][...] = 0.0


@jitprop.hookimpl
def register_layers(register):
    register(Conv2d)
