"""Batch normalisation kernels (CPU, Numba), torch.nn.BatchNorm1d's and BatchNorm2d's arithmetic.

Parameters ``p`` = [weight (d), bias (d)]; running state ``state`` =
[running_mean (d), running_var (d), num_batches_tracked (1)]; ``h`` =
[momentum, eps]. In training the
batch's own mean and biased variance normalise it and the running
statistics move towards the batch's (unbiased variance, as torch keeps it);
in inference the running statistics normalise. The cache keeps the
normalised batch x_hat for the backward pass; ``scratch`` (2 d numbers,
jitprop's per-layer scratch memory) holds the per-feature statistics of the
batch in hand. Statistics are summed in the model's dtype, in row order.

batch_norm2d does the same per channel of (channels, height, width) samples,
its statistics over the batch and every pixel (d = channels). The formulas
both share, with the CUDA kernels, are ``running_statistics`` and
``input_grad_scale``.
"""

import math

from numba import njit


@njit(cache=True)
def running_statistics(mean, squared_deviations, count, momentum, eps, running_mean, running_var):
    """One feature's (new running mean, new running variance, 1 / std of the batch), from the
    batch's mean and sum of squared deviations over ``count`` values."""
    var = squared_deviations / count  # biased, for normalising
    # torch keeps the unbiased variance; a single value has none, so it keeps its value
    unbiased = var * count / (count - 1) if count > 1 else running_var
    return ((1.0 - momentum) * running_mean + momentum * mean, (1.0 - momentum) * running_var + momentum * unbiased,
            1.0 / math.sqrt(var + eps))  # fmt: skip


@njit(cache=True)
def input_grad_scale(weight, squared_deviations, count, eps):
    """gamma / (count sigma): the factor of dL/dx = it * (count g - sum(g) - x_hat sum(g x_hat))."""
    return weight / (count * math.sqrt(squared_deviations / count + eps))


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
        running_mean[j], running_var[j], inv_std[j] = running_statistics(
            mean[j], inv_std[j], n, momentum, eps, running_mean[j], running_var[j]
        )
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
        scale[j] = input_grad_scale(weight[j], scale[j], n, eps)
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


@njit(cache=True)
def batch_norm2d_forward(p, h, x, out, cache, training, seed, state, scratch):
    n, channels = x.shape[0], p.shape[0] // 2
    area = x.shape[1] // channels  # pixels per channel
    momentum, eps = h[0], h[1]
    weight, bias = p[:channels], p[channels : 2 * channels]
    running_mean, running_var = state[:channels], state[channels : 2 * channels]
    if not training:
        for i in range(n):
            for c in range(channels):
                shift, inv_std = running_mean[c], 1.0 / math.sqrt(running_var[c] + eps)
                src, dst = x[i, c * area : (c + 1) * area], out[i, c * area : (c + 1) * area]
                for a in range(area):
                    dst[a] = weight[c] * ((src[a] - shift) * inv_std) + bias[c]
        return
    state[2 * channels] += 1.0  # num_batches_tracked
    mean, inv_std = scratch[:channels], scratch[channels : 2 * channels]
    _channel_statistics(x, mean, inv_std)
    for c in range(channels):
        running_mean[c], running_var[c], inv_std[c] = running_statistics(
            mean[c], inv_std[c], n * area, momentum, eps, running_mean[c], running_var[c]
        )
    for i in range(n):
        for c in range(channels):
            src, dst = x[i, c * area : (c + 1) * area], out[i, c * area : (c + 1) * area]
            kept = cache[i, c * area : (c + 1) * area]
            for a in range(area):
                x_hat = (src[a] - mean[c]) * inv_std[c]
                kept[a] = x_hat
                dst[a] = weight[c] * x_hat + bias[c]


@njit(cache=True)
def batch_norm2d_backward(p, h, x, out, cache, grad_out, grad_in, grad_p, state, scratch):
    # As batch_norm_backward, each channel's sums over the batch and its pixels.
    n, channels = x.shape[0], p.shape[0] // 2
    area = x.shape[1] // channels
    eps = h[1]
    weight = p[:channels]
    grad_w, grad_b = grad_p[:channels], grad_p[channels : 2 * channels]
    grad_w[:] = 0.0
    grad_b[:] = 0.0
    for i in range(n):
        for c in range(channels):
            g, kept = grad_out[i, c * area : (c + 1) * area], cache[i, c * area : (c + 1) * area]
            sum_g, sum_gx = grad_b[c], grad_w[c]
            for a in range(area):
                sum_g += g[a]
                sum_gx += g[a] * kept[a]
            grad_b[c], grad_w[c] = sum_g, sum_gx
    if grad_in.shape[0] == 0:
        return
    count = n * area
    mean, scale = scratch[:channels], scratch[channels : 2 * channels]
    _channel_statistics(x, mean, scale)
    for c in range(channels):
        scale[c] = input_grad_scale(weight[c], scale[c], count, eps)
    for i in range(n):
        for c in range(channels):
            g, kept = grad_out[i, c * area : (c + 1) * area], cache[i, c * area : (c + 1) * area]
            dst = grad_in[i, c * area : (c + 1) * area]
            for a in range(area):
                dst[a] = scale[c] * (count * g[a] - grad_b[c] - kept[a] * grad_w[c])


@njit(cache=True)
def _channel_statistics(x, mean, squared_deviations):
    """Each channel's mean and sum of squared deviations over the batch and its pixels."""
    n, channels = x.shape[0], mean.shape[0]
    area = x.shape[1] // channels
    mean[:] = 0.0
    for i in range(n):
        for c in range(channels):
            total = mean[c]
            for v in x[i, c * area : (c + 1) * area]:
                total += v
            mean[c] = total
    for c in range(channels):
        mean[c] /= n * area
    squared_deviations[:] = 0.0
    for i in range(n):
        for c in range(channels):
            total, m = squared_deviations[c], mean[c]
            for v in x[i, c * area : (c + 1) * area]:
                total += (v - m) * (v - m)
            squared_deviations[c] = total
