"""Layers with parameters or randomness, and the reshaping one: dense (fully connected), dropout, flatten."""

import math

import numpy as np
from numba import njit

import jitprop
from jitprop.components import positive_int, real
from jitprop.kernels import uniform
from jitprop.model import initializers
from jitprop.model.initializers import resolve

#: dropout's slot of ``h``
DROPOUT_RATE = 0


@njit(cache=True)
def dense_forward(p, h, x, out, cache, training, seed):
    n_in = x.shape[1]
    n_out = out.shape[1]
    w = p[: n_out * n_in].reshape((n_out, n_in))
    b = p[n_out * n_in : n_out * n_in + n_out]
    np.dot(x, w.T, out)
    for i in range(out.shape[0]):
        for j in range(n_out):
            out[i, j] += b[j]


@njit(cache=True)
def dense_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    n_in = x.shape[1]
    n_out = grad_out.shape[1]
    w = p[: n_out * n_in].reshape((n_out, n_in))
    grad_w = grad_p[: n_out * n_in].reshape((n_out, n_in))
    grad_b = grad_p[n_out * n_in : n_out * n_in + n_out]
    np.dot(grad_out.T, x, grad_w)  # dL/dW = dL/dout^T . x
    grad_b[:] = 0
    for i in range(grad_out.shape[0]):
        for j in range(n_out):
            grad_b[j] += grad_out[i, j]
    if grad_in.shape[0] > 0:
        np.dot(grad_out, w, grad_in)  # dL/dx = dL/dout . W


class Dense(jitprop.Layer):
    """Fully connected layer: out = x W^T + b, W of shape (units, in) as in torch.nn.Linear.

    ``init``: ``auto`` (He before a ReLU, else Glorot), ``he_normal``, ``he_uniform``,
    ``glorot_uniform``, ``glorot_normal``, ``torch``, or plain ``normal:std=0.01`` and
    ``uniform:low=-0.05,high=0.05``; biases start at zero.
    """

    name = "dense"
    param_names = ("weight", "bias")
    example_options = {"units": 3}
    forward_kernel = staticmethod(dense_forward)
    backward_kernel = staticmethod(dense_backward)
    cuda_forward = "jitprop.default_plugins.layers_cuda:dense_forward"
    cuda_backward = "jitprop.default_plugins.layers_cuda:dense_backward"

    def __init__(self, units, init="auto"):
        self.units = positive_int("units", units, "dense")
        self.init = initializers.check(init, "dense")

    def output_dim(self, in_dim):
        return self.units

    def param_shapes(self):
        return {"weight": (self.units, self.in_dim), "bias": (self.units,)}

    def init_params(self, params, rng, relu_next=False):
        fn = resolve(self.init, relu_next)
        params["weight"][...] = fn(rng, self.in_dim, self.units, (self.units, self.in_dim))
        params["bias"][...] = 0.0


@njit(cache=True)
def dropout_forward(p, h, x, out, cache, training, seed):
    rate = h[DROPOUT_RATE]
    n, d = x.shape
    if not training or rate == 0.0:
        for i in range(n):
            for j in range(d):
                cache[i, j] = 1.0
                out[i, j] = x[i, j]
        return
    keep_scale = 1.0 / (1.0 - rate)
    for i in range(n):
        for j in range(d):
            m = 0.0 if uniform(seed, i * d + j) < rate else keep_scale  # the CUDA kernel's draw too
            cache[i, j] = m
            out[i, j] = x[i, j] * m


@njit(cache=True)
def dropout_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    if grad_in.shape[0] > 0:
        for i in range(grad_out.shape[0]):
            for j in range(grad_out.shape[1]):
                grad_in[i, j] = grad_out[i, j] * cache[i, j]


class Dropout(jitprop.Layer):
    """Zeroes each input with probability rate while training and scales the rest by 1/(1-rate)."""

    name = "dropout"
    forward_kernel = staticmethod(dropout_forward)
    backward_kernel = staticmethod(dropout_backward)
    cuda_forward = "jitprop.default_plugins.layers_cuda:dropout_forward"
    cuda_backward = "jitprop.default_plugins.layers_cuda:dropout_backward"

    def __init__(self, rate=0.5):
        self.rate = real("rate", rate, "dropout", low=0.0, high=1.0, high_open=True)

    def hyper(self):
        return np.array([self.rate])  # DROPOUT_RATE

    def cache_dim(self):
        return self.in_dim


@njit(cache=True)
def copy_forward(p, h, x, out, cache, training, seed):
    out[...] = x


@njit(cache=True)
def copy_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    if grad_in.shape[0] > 0:
        grad_in[...] = grad_out


class Flatten(jitprop.Layer):
    """Samples of any shape as flat vectors, torch.nn.Flatten: (C, H, W) -> (C * H * W,) in NCHW order."""

    name = "flatten"
    example_shape = (2, 3, 2)
    forward_kernel = staticmethod(copy_forward)
    backward_kernel = staticmethod(copy_backward)
    cuda_forward = "jitprop.default_plugins.layers_cuda:copy_forward"
    cuda_backward = "jitprop.default_plugins.layers_cuda:copy_backward"

    def output_shape(self, in_shape):
        return (math.prod(in_shape),)


@jitprop.hookimpl
def register_layers(register):
    register(Dense)
    register(Dropout)
    register(Flatten)
