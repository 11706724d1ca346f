"""Built-in losses, each named and reduced as its torch.nn counterpart (mean reduction)."""

import math

import numpy as np
from numba import njit

import jitprop


@njit(cache=True)
def mse_kernel(pred, y, grad, h):
    n, k = pred.shape
    scale = 2.0 / (n * k)
    total = 0.0
    for i in range(n):
        for j in range(k):
            d = pred[i, j] - y[i, j]
            total += d * d
            grad[i, j] = scale * d
    return total / (n * k)


@njit(cache=True)
def mae_kernel(pred, y, grad, h):
    n, k = pred.shape
    scale = 1.0 / (n * k)
    total = 0.0
    for i in range(n):
        for j in range(k):
            d = pred[i, j] - y[i, j]
            total += abs(d)
            grad[i, j] = scale if d > 0 else (-scale if d < 0 else 0.0)
    return total / (n * k)


@njit(cache=True)
def cross_entropy_kernel(pred, y, grad, h):
    # Softmax fused with the log-likelihood: loss_i = logsumexp(z_i) - z_i[y_i],
    # d loss_i / dz_i = softmax(z_i) - onehot(y_i). Shifting by the row max
    # keeps exp() in range for logits of any size; each exp is computed once.
    n, k = pred.shape
    total = 0.0
    inv_n = 1.0 / n
    for i in range(n):
        m = pred[i, 0]
        for j in range(1, k):
            m = max(m, pred[i, j])
        s = 0.0
        for j in range(k):
            e = math.exp(pred[i, j] - m)
            grad[i, j] = e
            s += e
        total += m + math.log(s) - pred[i, y[i]]
        scale = inv_n / s
        for j in range(k):
            grad[i, j] *= scale
        grad[i, y[i]] -= inv_n
    return total / n


@njit(cache=True)
def nll_kernel(pred, y, grad, h):
    n, k = pred.shape
    total = 0.0
    for i in range(n):
        for j in range(k):
            grad[i, j] = 0.0
        total -= pred[i, y[i]]
        grad[i, y[i]] = -1.0 / n
    return total / n


@njit(cache=True)
def binary_cross_entropy_kernel(pred, y, grad, h):
    # On logits z: max(z, 0) - z*y + log(1 + exp(-|z|)), never exp() of a large number.
    n, k = pred.shape
    scale = 1.0 / (n * k)
    total = 0.0
    for i in range(n):
        for j in range(k):
            z = pred[i, j]
            t = y[i, j]
            total += max(z, 0.0) - z * t + math.log1p(math.exp(-abs(z)))
            if z >= 0:
                s = 1.0 / (1.0 + math.exp(-z))
            else:
                e = math.exp(z)
                s = e / (1.0 + e)
            grad[i, j] = (s - t) * scale
    return total * scale


class MSE(jitprop.Loss):
    """Mean squared error over every output (torch.nn.MSELoss)."""

    name = "mse"
    target = "regression"
    kernel = staticmethod(mse_kernel)
    cuda_kernel = "jitprop.default_plugins.losses_cuda:mse_kernel"


class MAE(jitprop.Loss):
    """Mean absolute error over every output (torch.nn.L1Loss)."""

    name = "mae"
    target = "regression"
    kernel = staticmethod(mae_kernel)
    cuda_kernel = "jitprop.default_plugins.losses_cuda:mae_kernel"


class CrossEntropy(jitprop.Loss):
    """Softmax cross-entropy on logits with integer class labels (torch.nn.CrossEntropyLoss)."""

    name = "cross_entropy"
    target = "class"
    kernel = staticmethod(cross_entropy_kernel)
    cuda_kernel = "jitprop.default_plugins.losses_cuda:cross_entropy_kernel"


class NLL(jitprop.Loss):
    """Negative log-likelihood of log-probabilities with integer class labels (torch.nn.NLLLoss)."""

    name = "nll"
    target = "class"
    kernel = staticmethod(nll_kernel)
    cuda_kernel = "jitprop.default_plugins.losses_cuda:nll_kernel"

    def probabilities(self, out):
        return np.exp(np.asarray(out, dtype=np.float64))


class BinaryCrossEntropy(jitprop.Loss):
    """Binary cross-entropy on logits with 0/1 targets (torch.nn.BCEWithLogitsLoss)."""

    name = "binary_cross_entropy"
    target = "binary"
    kernel = staticmethod(binary_cross_entropy_kernel)
    cuda_kernel = "jitprop.default_plugins.losses_cuda:binary_cross_entropy_kernel"


@jitprop.hookimpl
def register_losses(register):
    register(MSE)
    register(MAE)
    register(CrossEntropy, aliases=("categorical_cross_entropy",))
    register(NLL)
    register(BinaryCrossEntropy, aliases=("bce",))
