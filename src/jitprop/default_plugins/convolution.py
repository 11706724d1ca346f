"""conv2d: a 2-D convolution over (channels, height, width) samples, as torch.nn.Conv2d.

Each sample is unfolded into columns (im2col: one column per output pixel,
one row per weight of a filter), so the convolution is one matrix product
with the (out_channels, in_channels * kh * kw) weight, done by BLAS; the
backward multiplies by the same columns for the weight gradient and folds
the product with the weight back (col2im) for the input gradient
(Chellapilla, Puri & Simard 2006). The forward keeps each sample's columns
in the layer's cache, so the backward does not unfold again. The geometry
travels in ``h``, so one compiled kernel serves every shape of a dtype.
"""

import numpy as np
from numba import njit

import jitprop
from jitprop.components import check, positive_int
from jitprop.model.initializers import CHOICES, resolve

from .geometry import GEOMETRY, geometry, image_shape, out_hw, pair, window_hyper

#: conv2d's slot of ``h`` after the geometry: 1.0 when the layer has a bias
HAS_BIAS = len(GEOMETRY)


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


@njit(cache=True)
def conv2d_forward(p, h, x, out, cache, training, seed, scratch):
    c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow = geometry(h)
    taps, pixels = c_in * kh * kw, oh * ow
    c_out = out.shape[1] // pixels
    w = p[: c_out * taps].reshape((c_out, taps))
    b = p[c_out * taps : c_out * taps + c_out]
    for n in range(x.shape[0]):
        col = cache[n].reshape((taps, pixels))  # kept for the backward pass
        im2col(x[n], c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow, col)
        y = out[n].reshape((c_out, pixels))
        np.dot(w, col, y)
        if h[HAS_BIAS] != 0.0:
            for o in range(c_out):
                for q in range(pixels):
                    y[o, q] += b[o]


@njit(cache=True)
def conv2d_backward(p, h, x, out, cache, grad_out, grad_in, grad_p, scratch):
    c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow = geometry(h)
    taps, pixels = c_in * kh * kw, oh * ow
    c_out = grad_out.shape[1] // pixels
    w = p[: c_out * taps].reshape((c_out, taps))
    grad_w = grad_p[: c_out * taps].reshape((c_out, taps))
    grad_b = grad_p[c_out * taps : c_out * taps + c_out]
    grad_col = scratch[: taps * pixels].reshape((taps, pixels))
    one = scratch[taps * pixels : taps * pixels + c_out * taps].reshape((c_out, taps))
    grad_w[:] = 0.0
    grad_b[:] = 0.0
    for n in range(x.shape[0]):
        g = grad_out[n].reshape((c_out, pixels))
        col = cache[n].reshape((taps, pixels))  # the forward pass's columns of this sample
        np.dot(g, col.T, one)  # this sample's dL/dW = dL/dy . col^T
        for o in range(c_out):
            for t in range(taps):
                grad_w[o, t] += one[o, t]
        if h[HAS_BIAS] != 0.0:
            for o in range(c_out):
                for q in range(pixels):
                    grad_b[o] += g[o, q]
        if grad_in.shape[0] > 0:
            np.dot(w.T, g, grad_col)  # dL/dcol = W^T . dL/dy, folded back onto the input
            col2im(grad_col, c_in, height, width, kh, kw, sh, sw, ph, pw, oh, ow, grad_in[n])


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
        check(init in CHOICES, f"conv2d: init must be one of {', '.join(CHOICES)}, got {init!r}")
        self.bias, self.init = bias, init
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
        return self._taps() * self.out_shape[1] * self.out_shape[2]  # each sample's columns (im2col)

    def scratch_size(self):
        return self._taps() * (self.out_shape[1] * self.out_shape[2] + self.out_channels)  # the columns' gradient, one sample's dL/dW

    def _taps(self):
        return self.in_shape[0] * self.kernel_size[0] * self.kernel_size[1]

    def init_params(self, params, rng, relu_next=False):
        area = self.kernel_size[0] * self.kernel_size[1]
        fan_in, fan_out = self.in_shape[0] * area, self.out_channels * area
        params["weight"][...] = resolve(self.init, relu_next)(rng, fan_in, fan_out, params["weight"].shape)
        if self.bias:
            params["bias"][...] = 0.0


@jitprop.hookimpl
def register_layers(register):
    register(Conv2d)
