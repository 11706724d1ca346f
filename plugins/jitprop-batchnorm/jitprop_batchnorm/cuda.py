"""numba.cuda kernels of batch_norm and batch_norm2d, beside their CPU kernels in kernels.py.

One thread per feature (channel) sums its statistics over the batch, and its
pixels, in the CPU kernels' order; one thread per value normalises. No atomics:
the same numbers every run. batch_norm is batch_norm2d with one pixel a feature.
The running-statistics and input-gradient formulas are the CPU's own njit
functions, compiled for the device.
"""

import math

from numba import cuda

from jitprop import cuda_launch

from .kernels import input_grad_scale, running_statistics

running_statistics = cuda_launch.device(running_statistics)
input_grad_scale = cuda_launch.device(input_grad_scale)


@cuda.jit(device=True)
def _mean_and_squares(x, c, channels, scratch):
    """Channel c's mean over the batch and its pixels (kept in scratch[c], in the model's dtype, as
    the CPU keeps it) and its sum of squared deviations, summed in the CPU kernels' order."""
    n, area = x.shape[0], x.shape[1] // channels
    total = x[0, 0] * 0
    for i in range(n):
        for a in range(c * area, (c + 1) * area):
            total += x[i, a]
    scratch[c] = total / (n * area)
    mean = scratch[c]
    squares = x[0, 0] * 0
    for i in range(n):
        for a in range(c * area, (c + 1) * area):
            squares += (x[i, a] - mean) * (x[i, a] - mean)
    return mean, squares


@cuda.jit
def _statistics(x, channels, momentum, eps, state, scratch):
    """Per channel: the batch's mean and 1/std into scratch, the running statistics moved."""
    count = x.shape[0] * (x.shape[1] // channels)
    first, stride = cuda.grid(1), cuda.gridsize(1)
    if first == 0:
        state[2 * channels] += 1.0  # num_batches_tracked
    for c in range(first, channels, stride):
        mean, squares = _mean_and_squares(x, c, channels, scratch)
        state[c], state[channels + c], scratch[channels + c] = running_statistics(
            mean, squares, count, momentum, eps, state[c], state[channels + c]
        )


@cuda.jit
def _normalise(x, p, channels, scratch, cache, out):
    area = x.shape[1] // channels
    first, stride = cuda.grid(1), cuda.gridsize(1)
    for e in range(first, x.shape[0] * x.shape[1], stride):
        i, k = e // x.shape[1], e % x.shape[1]
        c = k // area
        x_hat = (x[i, k] - scratch[c]) * scratch[channels + c]
        cache[i, k] = x_hat
        out[i, k] = p[c] * x_hat + p[channels + c]


@cuda.jit
def _inference(x, p, channels, eps, state, out):
    area = x.shape[1] // channels
    first, stride = cuda.grid(1), cuda.gridsize(1)
    for e in range(first, x.shape[0] * x.shape[1], stride):
        i, k = e // x.shape[1], e % x.shape[1]
        c = k // area
        out[i, k] = p[c] * ((x[i, k] - state[c]) * (1.0 / math.sqrt(state[channels + c] + eps))) + p[channels + c]


@cuda.jit
def _channel_grads(x, p, grad_out, cache, channels, eps, with_input, grad_p, scratch):
    """Per channel: dL/dweight = sum(g x_hat), dL/dbias = sum(g); and, for dL/dx, its scale."""
    n, area = x.shape[0], x.shape[1] // channels
    first, stride = cuda.grid(1), cuda.gridsize(1)
    for c in range(first, channels, stride):
        sum_g = grad_out[0, 0] * 0
        sum_gx = grad_out[0, 0] * 0
        for i in range(n):
            for a in range(c * area, (c + 1) * area):
                sum_g += grad_out[i, a]
                sum_gx += grad_out[i, a] * cache[i, a]
        grad_p[c], grad_p[channels + c] = sum_gx, sum_g
        if with_input:
            _, squares = _mean_and_squares(x, c, channels, scratch)
            scratch[channels + c] = input_grad_scale(p[c], squares, n * area, eps)


@cuda.jit
def _input_grad(grad_out, cache, grad_p, scratch, channels, grad_in):
    n, area = grad_in.shape[0], grad_in.shape[1] // channels
    first, stride = cuda.grid(1), cuda.gridsize(1)
    for e in range(first, grad_in.shape[0] * grad_in.shape[1], stride):
        i, k = e // grad_in.shape[1], e % grad_in.shape[1]
        c = k // area
        grad_in[i, k] = scratch[channels + c] * (n * area * grad_out[i, k] - grad_p[channels + c] - cache[i, k] * grad_p[c])


def batch_norm_forward(p, h, x, out, cache, training, seed, state, scratch):
    channels = p.shape[0] // 2
    if not training:
        _inference[cuda_launch.grid_1d(x.size)](x, p, channels, float(h[1]), state, out)
        return
    _statistics[cuda_launch.grid_1d(channels)](x, channels, float(h[0]), float(h[1]), state, scratch)
    _normalise[cuda_launch.grid_1d(x.size)](x, p, channels, scratch, cache, out)


def batch_norm_backward(p, h, x, out, cache, grad_out, grad_in, grad_p, state, scratch):
    channels = p.shape[0] // 2
    with_input = grad_in.shape[0] > 0
    _channel_grads[cuda_launch.grid_1d(channels)](x, p, grad_out, cache, channels, float(h[1]), with_input, grad_p, scratch)
    if with_input:
        _input_grad[cuda_launch.grid_1d(grad_in.size)](grad_out, cache, grad_p, scratch, channels, grad_in)


#: batch_norm2d's launchers: the same kernels, a channel's pixels counted in its statistics.
batch_norm2d_forward, batch_norm2d_backward = batch_norm_forward, batch_norm_backward
