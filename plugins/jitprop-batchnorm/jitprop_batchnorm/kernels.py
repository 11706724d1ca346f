"""Batch normalisation kernels (CPU, Numba), torch.nn.BatchNorm1d's arithmetic.

Parameters ``p`` = [weight (d), bias (d)]; running state ``state`` =
[running_mean (d), running_var (d), num_batches_tracked (1)]; ``h`` =
[momentum, eps]. In training the
batch's own mean and biased variance normalise it and the running
statistics move towards the batch's (unbiased variance, as torch keeps it);
in inference the running statistics normalise. The cache keeps the
normalised batch x_hat for the backward pass; ``scratch`` (2 d numbers,
jitprop's per-layer scratch memory) holds the per-feature statistics of the
batch in hand. Statistics are summed in the model's dtype, in row order.
"""

import math

from numba import njit


@njit(cache=True)
def batch_norm_forward(p, h, x, out, cache, training, seed, state, scratch):
    n, d = x.shape
    momentum, eps = h[0], h[1]
    weight, bias = p[:d], p[d : 2 * d]
    running_mean, running_var = state[:d], state[d : 2 * d]
    if not training:
        for i in range(n):
            for j in range(d):
                x_hat = (x[i, j] - running_mean[j]) * (1.0 / math.sqrt(running_var[j] + eps))
                out[i, j] = weight[j] * x_hat + bias[j]
        return
    state[2 * d] += 1.0  # num_batches_tracked, kept so torch's state_dict loads both ways
    # Every pass runs along rows, so its inner loop is contiguous and vectorises (column by
    # column it was 3-4x slower).
    mean, inv_std = scratch[:d], scratch[d : 2 * d]
    _column_means(x, mean)
    _column_squared_deviations(x, mean, inv_std)
    for j in range(d):
        var = inv_std[j] / n  # biased, for normalising
        # torch keeps the unbiased variance; a batch of one has none, so it keeps its value
        unbiased = var * n / (n - 1) if n > 1 else running_var[j]
        running_mean[j] = (1.0 - momentum) * running_mean[j] + momentum * mean[j]
        running_var[j] = (1.0 - momentum) * running_var[j] + momentum * unbiased
        inv_std[j] = 1.0 / math.sqrt(var + eps)
    for i in range(n):
        for j in range(d):
            x_hat = (x[i, j] - mean[j]) * inv_std[j]
            cache[i, j] = x_hat
            out[i, j] = weight[j] * x_hat + bias[j]


@njit(cache=True)
def batch_norm_backward(p, h, x, out, cache, grad_out, grad_in, grad_p, state, scratch):
    # Called after a training forward: the batch statistics were used, so the
    # gradient flows through the mean and variance as well as through x directly.
    n, d = x.shape
    eps = h[1]
    weight = p[:d]
    grad_w, grad_b = grad_p[:d], grad_p[d : 2 * d]  # sum(g x_hat) and sum(g), per feature
    grad_w[:] = 0.0
    grad_b[:] = 0.0
    for i in range(n):
        for j in range(d):
            grad_b[j] += grad_out[i, j]
            grad_w[j] += grad_out[i, j] * cache[i, j]
    if grad_in.shape[0] == 0:
        return
    # dL/dx = gamma / (n sigma) * (n g - sum(g) - x_hat * sum(g x_hat)). sigma again from x;
    # a batch of one row has variance 0.
    mean, scale = scratch[:d], scratch[d : 2 * d]
    if n == 1:
        scale[:] = 0.0
    else:
        _column_means(x, mean)
        _column_squared_deviations(x, mean, scale)
    for j in range(d):
        scale[j] = weight[j] / (n * math.sqrt(scale[j] / n + eps))
    for i in range(n):
        for j in range(d):
            grad_in[i, j] = scale[j] * (n * grad_out[i, j] - grad_b[j] - cache[i, j] * grad_w[j])


@njit(cache=True)
def _column_means(x, mean):
    n, d = x.shape
    mean[:] = 0.0
    for i in range(n):
        for j in range(d):
            mean[j] += x[i, j]
    for j in range(d):
        mean[j] /= n


@njit(cache=True)
def _column_squared_deviations(x, mean, out):
    """out[j] = sum over rows of (x[i, j] - mean[j])^2."""
    n, d = x.shape
    out[:] = 0.0
    for i in range(n):
        for j in range(d):
            t = x[i, j] - mean[j]
            out[j] += t * t
