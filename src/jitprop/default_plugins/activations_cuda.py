"""numba.cuda kernels of the activation layers, beside their CPU kernels in activations.py.

Launchers take device arrays in the CPU kernels' order. Elementwise kernels
are grid-stride loops over every element; softmax works a row per thread,
so any width is handled.
"""

import math

from numba import cuda

from jitprop import cuda_launch

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


@cuda.jit
def _relu_fwd(x, out, slope):
    d = x.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, x.size, stride):
        i, j = idx // d, idx % d
        v = x[i, j]
        out[i, j] = v if v > 0 else v * slope


@cuda.jit
def _relu_bwd(x, grad_out, grad_in, slope):
    d = x.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, grad_in.size, stride):
        i, j = idx // d, idx % d
        g = grad_out[i, j]
        grad_in[i, j] = g if x[i, j] > 0 else g * slope


@cuda.jit
def _tanh_fwd(x, out):
    d = x.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, x.size, stride):
        i, j = idx // d, idx % d
        out[i, j] = math.tanh(x[i, j])


@cuda.jit
def _tanh_bwd(out, grad_out, grad_in):
    d = out.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, grad_in.size, stride):
        i, j = idx // d, idx % d
        t = out[i, j]
        grad_in[i, j] = grad_out[i, j] * (1.0 - t * t)


@cuda.jit
def _sigmoid_fwd(x, out):
    d = x.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, x.size, stride):
        i, j = idx // d, idx % d
        v = x[i, j]
        if v >= 0:
            out[i, j] = 1.0 / (1.0 + math.exp(-v))
        else:
            e = math.exp(v)
            out[i, j] = e / (1.0 + e)


@cuda.jit
def _sigmoid_bwd(out, grad_out, grad_in):
    d = out.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, grad_in.size, stride):
        i, j = idx // d, idx % d
        s = out[i, j]
        grad_in[i, j] = grad_out[i, j] * s * (1.0 - s)


@cuda.jit
def _gelu_fwd(x, out):
    d = x.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, x.size, stride):
        i, j = idx // d, idx % d
        v = x[i, j]
        out[i, j] = 0.5 * v * math.erfc(-v * _INV_SQRT2)  # erfc, not 1 + erf: activations.py says why


@cuda.jit
def _gelu_bwd(x, grad_out, grad_in):
    d = x.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, grad_in.size, stride):
        i, j = idx // d, idx % d
        v = x[i, j]
        cdf = 0.5 * math.erfc(-v * _INV_SQRT2)
        grad_in[i, j] = grad_out[i, j] * (cdf + v * _INV_SQRT2PI * math.exp(-0.5 * v * v))


@cuda.jit
def _softmax_fwd(x, out):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.shape[0], stride):
        m = x[i, 0]
        for j in range(1, x.shape[1]):
            if x[i, j] > m:  # not max(): it needs a GPU to compile to PTX
                m = x[i, j]
        total = 0.0
        for j in range(x.shape[1]):
            e = math.exp(x[i, j] - m)
            out[i, j] = e
            total += e
        inv = 1.0 / total  # as the CPU kernel: one division per row
        for j in range(x.shape[1]):
            out[i, j] *= inv


@cuda.jit
def _softmax_bwd(out, grad_out, grad_in):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, grad_in.shape[0], stride):
        dot = 0.0
        for j in range(out.shape[1]):
            dot += grad_out[i, j] * out[i, j]
        for j in range(out.shape[1]):
            grad_in[i, j] = out[i, j] * (grad_out[i, j] - dot)


def _elementwise(n):
    return cuda_launch.grid_1d(n)


def _forward(k, per_row=False):
    """A forward launcher for kernel k(x, out): one thread per element (or per row)."""

    def launch(p, h, x, out, cache, training, seed):
        k[_elementwise(x.shape[0] if per_row else x.size)](x, out)

    return launch


def _backward(k, uses_output, per_row=False):
    """A backward launcher for k(x or out, grad_out, grad_in); nothing to do for the first layer."""

    def launch(p, h, x, out, cache, grad_out, grad_in, grad_p):
        if grad_in.shape[0] > 0:
            k[_elementwise(grad_in.shape[0] if per_row else grad_in.size)](out if uses_output else x, grad_out, grad_in)

    return launch


def relu_forward(p, h, x, out, cache, training, seed):
    _relu_fwd[_elementwise(x.size)](x, out, 0.0)


def relu_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    if grad_in.shape[0] > 0:
        _relu_bwd[_elementwise(grad_in.size)](x, grad_out, grad_in, 0.0)


def leaky_relu_forward(p, h, x, out, cache, training, seed):
    _relu_fwd[_elementwise(x.size)](x, out, float(h[0]))


def leaky_relu_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    if grad_in.shape[0] > 0:
        _relu_bwd[_elementwise(grad_in.size)](x, grad_out, grad_in, float(h[0]))


tanh_forward = _forward(_tanh_fwd)
tanh_backward = _backward(_tanh_bwd, uses_output=True)
sigmoid_forward = _forward(_sigmoid_fwd)
sigmoid_backward = _backward(_sigmoid_bwd, uses_output=True)
gelu_forward = _forward(_gelu_fwd)
gelu_backward = _backward(_gelu_bwd, uses_output=False)
softmax_forward = _forward(_softmax_fwd, per_row=True)
softmax_backward = _backward(_softmax_bwd, uses_output=True, per_row=True)
