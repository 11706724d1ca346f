"""Batch normalisation kernels (CPU, Numba), torch.nn.BatchNorm1d's arithmetic.

Parameters ``p`` = [weight (d), bias (d)]; running state ``state`` =
[running_mean (d), running_var (d), num_batches_tracked (1)]; ``h`` =
[momentum, eps]. In training the
batch's own mean and biased variance normalise it and the running
statistics move towards the batch's (unbiased variance, as torch keeps it);
in inference the running statistics normalise. The cache keeps the
normalised batch x_hat for the backward pass.
"""

import math

from numba import njit


@njit(cache=True)
def _column_stats(x, j):
    """Mean and biased variance of column j of the batch."""
    n = x.shape[0]
    mean = 0.0
    for i in range(n):
        mean += x[i, j]
    mean /= n
    var = 0.0
    for i in range(n):
        var += (x[i, j] - mean) ** 2
    return mean, var / n


@njit(cache=True)
def batch_norm_forward(p, h, x, out, cache, training, seed, state):
    n, d = x.shape
    momentum, eps = h[0], h[1]
    weight, bias = p[:d], p[d : 2 * d]
    running_mean, running_var = state[:d], state[d : 2 * d]
    if training:
        state[2 * d] += 1.0  # num_batches_tracked, kept so torch's state_dict loads both ways
    for j in range(d):
        if training:
            mean, var = _column_stats(x, j)
            # torch keeps the unbiased variance; a batch of one has none, so it keeps its value
            unbiased = var * n / (n - 1) if n > 1 else running_var[j]
            running_mean[j] = (1.0 - momentum) * running_mean[j] + momentum * mean
            running_var[j] = (1.0 - momentum) * running_var[j] + momentum * unbiased
        else:
            mean, var = running_mean[j], running_var[j]
        inv_std = 1.0 / math.sqrt(var + eps)
        for i in range(n):
            x_hat = (x[i, j] - mean) * inv_std
            if training:
                cache[i, j] = x_hat
            out[i, j] = weight[j] * x_hat + bias[j]


@njit(cache=True)
def batch_norm_backward(p, h, x, out, cache, grad_out, grad_in, grad_p, state):
    # Called after a training forward: the batch statistics were used, so the
    # gradient flows through the mean and variance as well as through x directly.
    n, d = x.shape
    eps = h[1]
    weight = p[:d]
    grad_w, grad_b = grad_p[:d], grad_p[d : 2 * d]
    for j in range(d):
        sum_g = 0.0
        sum_g_xhat = 0.0
        for i in range(n):
            sum_g += grad_out[i, j]
            sum_g_xhat += grad_out[i, j] * cache[i, j]
        grad_b[j] = sum_g
        grad_w[j] = sum_g_xhat
        if grad_in.shape[0] > 0:
            _, var = _column_stats(x, j)
            scale = weight[j] / (n * math.sqrt(var + eps))
            # dL/dx = gamma / (n sigma) * (n g - sum(g) - x_hat * sum(g x_hat))
            for i in range(n):
                grad_in[i, j] = scale * (n * grad_out[i, j] - sum_g - cache[i, j] * sum_g_xhat)
