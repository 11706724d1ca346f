"""numba.cuda kernels of the activation layers, beside their CPU kernels in activations.py.

Launchers take device arrays in the CPU kernels' order. Elementwise kernels
are grid-stride loops over every element; softmax works a row per thread,
so any width is handled. Each computes what the CPU kernel does by calling
the same function (``activations.gelu`` and the rest).
"""

import math

from numba import cuda

from jitprop import cuda_launch
from jitprop.default_plugins.activations import (
    NEGATIVE_SLOPE, gelu, gelu_grad, leaky_relu, leaky_relu_grad, relu, relu_grad, sigmoid, sigmoid_grad, softmax_grad_row,
    softmax_row, tanh_grad,
)  # fmt: skip

# Each called as the CPU kernels call it (cuda_launch.device: the plain function on the simulator).
gelu = cuda_launch.device(gelu)
gelu_grad = cuda_launch.device(gelu_grad)
leaky_relu = cuda_launch.device(leaky_relu)
leaky_relu_grad = cuda_launch.device(leaky_relu_grad)
relu = cuda_launch.device(relu)
relu_grad = cuda_launch.device(relu_grad)
sigmoid = cuda_launch.device(sigmoid)
sigmoid_grad = cuda_launch.device(sigmoid_grad)
softmax_grad_row = cuda_launch.device(softmax_grad_row)
softmax_row = cuda_launch.device(softmax_row)
tanh_grad = cuda_launch.device(tanh_grad)

@cuda.jit
def _relu_fwd(x, out):
    d = x.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, x.size, stride):
        i, j = idx // d, idx % d
        out[i, j] = relu(x[i, j])


@cuda.jit
def _relu_bwd(x, grad_out, grad_in):
    d = x.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, grad_in.size, stride):
        i, j = idx // d, idx % d
        grad_in[i, j] = relu_grad(x[i, j], grad_out[i, j])


@cuda.jit
def _leaky_relu_fwd(x, out, slope):
    d = x.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, x.size, stride):
        i, j = idx // d, idx % d
        out[i, j] = leaky_relu(x[i, j], slope)


@cuda.jit
def _leaky_relu_bwd(x, grad_out, grad_in, slope):
    d = x.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, grad_in.size, stride):
        i, j = idx // d, idx % d
        grad_in[i, j] = leaky_relu_grad(x[i, j], grad_out[i, j], slope)


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
        grad_in[i, j] = tanh_grad(out[i, j], grad_out[i, j])


@cuda.jit
def _sigmoid_fwd(x, out):
    d = x.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, x.size, stride):
        i, j = idx // d, idx % d
        out[i, j] = sigmoid(x[i, j])


@cuda.jit
def _sigmoid_bwd(out, grad_out, grad_in):
    d = out.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, grad_in.size, stride):
        i, j = idx // d, idx % d
        grad_in[i, j] = sigmoid_grad(out[i, j], grad_out[i, j])


@cuda.jit
def _gelu_fwd(x, out):
    d = x.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, x.size, stride):
        i, j = idx // d, idx % d
        out[i, j] = gelu(x[i, j])


@cuda.jit
def _gelu_bwd(x, grad_out, grad_in):
    d = x.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, grad_in.size, stride):
        i, j = idx // d, idx % d
        grad_in[i, j] = gelu_grad(x[i, j], grad_out[i, j])


@cuda.jit
def _softmax_fwd(x, out):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.shape[0], stride):  # a thread per row: any width
        softmax_row(x, out, i)


@cuda.jit
def _softmax_bwd(out, grad_out, grad_in):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, grad_in.shape[0], stride):
        softmax_grad_row(out, grad_out, grad_in, i)


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


def leaky_relu_forward(p, h, x, out, cache, training, seed):
    _leaky_relu_fwd[_elementwise(x.size)](x, out, float(h[NEGATIVE_SLOPE]))


def leaky_relu_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    if grad_in.shape[0] > 0:
        _leaky_relu_bwd[_elementwise(grad_in.size)](x, grad_out, grad_in, float(h[NEGATIVE_SLOPE]))


relu_forward = _forward(_relu_fwd)
relu_backward = _backward(_relu_bwd, uses_output=False)

tanh_forward = _forward(_tanh_fwd)
tanh_backward = _backward(_tanh_bwd, uses_output=True)
sigmoid_forward = _forward(_sigmoid_fwd)
sigmoid_backward = _backward(_sigmoid_bwd, uses_output=True)
gelu_forward = _forward(_gelu_fwd)
gelu_backward = _backward(_gelu_bwd, uses_output=False)
softmax_forward = _forward(_softmax_fwd, per_row=True)
softmax_backward = _backward(_softmax_bwd, uses_output=True, per_row=True)
