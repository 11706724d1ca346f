"""Activation layers: elementwise nonlinearities, and softmax over each row."""

import math

import numpy as np
from numba import njit

import jitprop
from jitprop.components import real

#: leaky_relu's slot of ``h``
NEGATIVE_SLOPE = 0


# -- each activation and its derivative, one value at a time ------------------
# The CPU kernels below and the CUDA kernels (activations_cuda.py) both call these.


@njit(cache=True)
def relu(v):
    return v if v > 0 else 0.0


@njit(cache=True)
def relu_grad(v, g):
    return g if v > 0 else 0.0


@njit(cache=True)
def leaky_relu(v, slope):
    return v if v > 0 else v * slope


@njit(cache=True)
def leaky_relu_grad(v, g, slope):
    return g if v > 0 else g * slope


@njit(cache=True)
def tanh_grad(t, g):
    """From the output t = tanh(v)."""
    return g * (1.0 - t * t)


@njit(cache=True)
def sigmoid(v):
    if v >= 0:  # two branches so exp never overflows
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@njit(cache=True)
def sigmoid_grad(s, g):
    """From the output s = sigmoid(v)."""
    return g * s * (1.0 - s)


_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)
# GELU's Phi(v) is 0.5 * erfc(-v / sqrt 2), not 0.5 * (1 + erf(v / sqrt 2)): the
# same cost, but 1 + erf() cancels to 0 for v below about -6 (float64), which
# zeroed the tail (-7.6e-23 at v = -10) and put its gradient off by 1%.


@njit(cache=True)
def gelu(v):
    return 0.5 * v * math.erfc(-v * _INV_SQRT2)


@njit(cache=True)
def gelu_grad(v, g):
    cdf = 0.5 * math.erfc(-v * _INV_SQRT2)
    pdf = _INV_SQRT2PI * math.exp(-0.5 * v * v)
    return g * (cdf + v * pdf)


@njit(cache=True)
def softmax_row(x, out, i):
    """Row i of out = softmax of row i of x, shifted by the row's max so exp never overflows."""
    m = x[i, 0]
    for j in range(1, x.shape[1]):
        if x[i, j] > m:  # not max(): the GPU's compile of it needs a GPU
            m = x[i, j]
    total = 0.0
    for j in range(x.shape[1]):
        e = math.exp(x[i, j] - m)
        out[i, j] = e
        total += e
    inv = 1.0 / total
    for j in range(x.shape[1]):
        out[i, j] *= inv


@njit(cache=True)
def softmax_grad_row(out, grad_out, grad_in, i):
    """The Jacobian-vector product of softmax for row i: s * (g - <g, s>)."""
    dot = 0.0
    for j in range(out.shape[1]):
        dot += grad_out[i, j] * out[i, j]
    for j in range(out.shape[1]):
        grad_in[i, j] = out[i, j] * (grad_out[i, j] - dot)


# -- the CPU kernels --------------------------------------------------------


@njit(cache=True)
def relu_forward(p, h, x, out, cache, training, seed):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = relu(x[i, j])


@njit(cache=True)
def relu_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    for i in range(grad_in.shape[0]):
        for j in range(grad_in.shape[1]):
            grad_in[i, j] = relu_grad(x[i, j], grad_out[i, j])


@njit(cache=True)
def leaky_relu_forward(p, h, x, out, cache, training, seed):
    slope = h[NEGATIVE_SLOPE]
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = leaky_relu(x[i, j], slope)


@njit(cache=True)
def leaky_relu_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    slope = h[NEGATIVE_SLOPE]
    for i in range(grad_in.shape[0]):
        for j in range(grad_in.shape[1]):
            grad_in[i, j] = leaky_relu_grad(x[i, j], grad_out[i, j], slope)


@njit(cache=True)
def tanh_forward(p, h, x, out, cache, training, seed):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = math.tanh(x[i, j])


@njit(cache=True)
def tanh_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    for i in range(grad_in.shape[0]):
        for j in range(grad_in.shape[1]):
            grad_in[i, j] = tanh_grad(out[i, j], grad_out[i, j])


@njit(cache=True)
def sigmoid_forward(p, h, x, out, cache, training, seed):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = sigmoid(x[i, j])


@njit(cache=True)
def sigmoid_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    for i in range(grad_in.shape[0]):
        for j in range(grad_in.shape[1]):
            grad_in[i, j] = sigmoid_grad(out[i, j], grad_out[i, j])


@njit(cache=True)
def gelu_forward(p, h, x, out, cache, training, seed):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = gelu(x[i, j])


@njit(cache=True)
def gelu_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    for i in range(grad_in.shape[0]):
        for j in range(grad_in.shape[1]):
            grad_in[i, j] = gelu_grad(x[i, j], grad_out[i, j])


@njit(cache=True)
def softmax_forward(p, h, x, out, cache, training, seed):
    for i in range(x.shape[0]):
        softmax_row(x, out, i)


@njit(cache=True)
def softmax_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    for i in range(grad_in.shape[0]):
        softmax_grad_row(out, grad_out, grad_in, i)


class ReLU(jitprop.Layer):
    """Rectified linear unit: max(x, 0)."""

    name = "relu"
    relu_family = True
    forward_kernel = staticmethod(relu_forward)
    backward_kernel = staticmethod(relu_backward)
    cuda_forward = "jitprop.default_plugins.activations_cuda:relu_forward"
    cuda_backward = "jitprop.default_plugins.activations_cuda:relu_backward"


class LeakyReLU(jitprop.Layer):
    """Leaky ReLU: x for x > 0, negative_slope * x otherwise (torch's default slope 0.01)."""

    name = "leaky_relu"
    relu_family = True
    forward_kernel = staticmethod(leaky_relu_forward)
    backward_kernel = staticmethod(leaky_relu_backward)
    cuda_forward = "jitprop.default_plugins.activations_cuda:leaky_relu_forward"
    cuda_backward = "jitprop.default_plugins.activations_cuda:leaky_relu_backward"

    def __init__(self, negative_slope=0.01):
        self.negative_slope = real("negative_slope", negative_slope, "leaky_relu")

    def hyper(self):
        return np.array([self.negative_slope])  # NEGATIVE_SLOPE


class Tanh(jitprop.Layer):
    """Hyperbolic tangent."""

    name = "tanh"
    forward_kernel = staticmethod(tanh_forward)
    backward_kernel = staticmethod(tanh_backward)
    cuda_forward = "jitprop.default_plugins.activations_cuda:tanh_forward"
    cuda_backward = "jitprop.default_plugins.activations_cuda:tanh_backward"


class Sigmoid(jitprop.Layer):
    """Logistic sigmoid: 1 / (1 + exp(-x))."""

    name = "sigmoid"
    forward_kernel = staticmethod(sigmoid_forward)
    backward_kernel = staticmethod(sigmoid_backward)
    cuda_forward = "jitprop.default_plugins.activations_cuda:sigmoid_forward"
    cuda_backward = "jitprop.default_plugins.activations_cuda:sigmoid_backward"


class GELU(jitprop.Layer):
    """Gaussian error linear unit, exact erf form: x * Phi(x) (torch.nn.GELU())."""

    name = "gelu"
    forward_kernel = staticmethod(gelu_forward)
    backward_kernel = staticmethod(gelu_backward)
    cuda_forward = "jitprop.default_plugins.activations_cuda:gelu_forward"
    cuda_backward = "jitprop.default_plugins.activations_cuda:gelu_backward"


class Softmax(jitprop.Layer):
    """Softmax over each row, for probabilities at inference (train on logits with cross_entropy)."""

    name = "softmax"
    forward_kernel = staticmethod(softmax_forward)
    backward_kernel = staticmethod(softmax_backward)
    cuda_forward = "jitprop.default_plugins.activations_cuda:softmax_forward"
    cuda_backward = "jitprop.default_plugins.activations_cuda:softmax_backward"


@jitprop.hookimpl
def register_layers(register):
    for cls in (ReLU, LeakyReLU, Tanh, Sigmoid, GELU, Softmax):
        register(cls)
