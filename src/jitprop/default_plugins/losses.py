"""Built-in losses, each named and reduced as its torch.nn counterpart (mean reduction)."""

import math

import numpy as np
from numba import njit

import jitprop
from jitprop.kernels import fast_exp


# -- each loss, one row at a time --------------------------------------------
# Row i's contribution, and its gradient written into grad. The CPU kernels add the rows
# in order onto ``total`` (so the sum is the same element for element as one loop over
# the batch); the CUDA kernels (losses_cuda.py) start each row at 0 and add it atomically.


@njit(cache=True)
def mse_row(pred, y, grad, i, scale, total):
    for j in range(pred.shape[1]):
        d = np.float64(pred[i, j]) - y[i, j]  # float64: a float32 difference past 1.8e19 squares to inf
        total += d * d
        grad[i, j] = scale * d
    return total


@njit(cache=True)
def mae_row(pred, y, grad, i, scale, total):
    for j in range(pred.shape[1]):
        d = pred[i, j] - y[i, j]
        total += abs(d)
        grad[i, j] = scale if d > 0 else (-scale if d < 0 else 0.0)
    return total


@njit(cache=True)
def row_max(pred, i):
    """The largest value of row i."""
    m = pred[i, 0]
    for j in range(1, pred.shape[1]):
        if pred[i, j] > m:  # not max(): the GPU's compile of it needs a GPU
            m = pred[i, j]
    return m


@njit(cache=True)
def cross_entropy_from_exp(pred, y, grad, i, inv_n, m):
    """Row i's loss, and its gradient written into grad[i], once grad[i] holds exp(pred[i] - m)
    for the row's max m (the CPU kernel computes those exps for the whole batch at once, the
    CUDA kernel a row at a time)."""
    # Softmax fused with the log-likelihood: loss_i = logsumexp(z_i) - z_i[y_i],
    # d loss_i / dz_i = softmax(z_i) - onehot(y_i). grad[i] holds e_j = exp(z_j - m)
    # for the row max m: every exp() <= 1 for logits of any size, each computed once.
    # With rest = sum of e_j over the other classes:
    # loss_i = (m - z_t) + log(e_t + rest), two terms >= 0: not m + log(s) - z_t,
    # which cancels (digits of the log lost at |z| ~ 1e8, all of them at 1e30).
    # The target's gradient is -rest / s (softmax_t - 1 without its cancellation)
    # and, when the target holds the max (e_t = 1), the log is log1p(rest): a
    # confident row keeps its loss and gradient of ~rest instead of rounding to 0.
    k = pred.shape[1]
    t = y[i]
    rest = 0.0
    for j in range(k):
        if j != t:
            rest += grad[i, j]
    e_t = grad[i, t]
    s = e_t + rest
    value = (m - pred[i, t]) + (math.log1p(rest) if e_t == 1.0 else math.log(s))
    scale = inv_n / s
    for j in range(k):
        grad[i, j] *= scale
    grad[i, t] = -rest * scale
    return value


@njit(cache=True)
def nll_row(pred, y, grad, i, inv_n):
    """Row i's loss, -pred[i, y[i]]."""
    for j in range(pred.shape[1]):
        grad[i, j] = 0.0
    grad[i, y[i]] = -inv_n
    return -pred[i, y[i]]


@njit(cache=True)
def binary_cross_entropy_row(pred, y, grad, i, scale, total):
    # On logits z, with e = exp(-|z|) in (0, 1] (never exp() of a large number):
    # loss = z * (1 - t) + log1p(e) for z >= 0, -z * t + log1p(e) for z < 0;
    # dL/dz = sigmoid(z) - t = (1 - t) - e / (1 + e) for z >= 0, e / (1 + e) - t
    # for z < 0: never 1 - sigmoid(z), which rounds to 0 past z ~ 37 and zeroed
    # the small gradient of a confident, correct prediction.
    for j in range(pred.shape[1]):
        z = pred[i, j]
        t = y[i, j]
        e = math.exp(-abs(z))
        if z >= 0:
            total += z * (1.0 - t) + math.log1p(e)
            g = (1.0 - t) - e / (1.0 + e)
        else:
            total += -z * t + math.log1p(e)
            g = e / (1.0 + e) - t
        grad[i, j] = g * scale
    return total


# -- the CPU kernels: the batch-mean loss, and its gradient --------------------


@njit(cache=True)
def mse_kernel(pred, y, grad, h):
    n, k = pred.shape
    total = 0.0
    for i in range(n):
        total = mse_row(pred, y, grad, i, 2.0 / (n * k), total)
    return total / (n * k)


@njit(cache=True)
def mae_kernel(pred, y, grad, h):
    n, k = pred.shape
    total = 0.0
    for i in range(n):
        total = mae_row(pred, y, grad, i, 1.0 / (n * k), total)
    return total / (n * k)


@njit(cache=True)
def cross_entropy_kernel(pred, y, grad, h):
    # The rows' exps in one pass over the batch, which vectorises (fast_exp): S's loss (32 rows
    # of 10) took 2.2 us with math.exp row by row, 1.2 this way, half of it the rows' logs.
    n, k = pred.shape
    for i in range(n):
        m = row_max(pred, i)
        for j in range(k):
            grad[i, j] = pred[i, j] - m
    if grad.flags.c_contiguous:  # one loop over the whole batch: no remainder after each row
        flat = grad.reshape(n * k)
        for q in range(n * k):
            flat[q] = fast_exp(flat[q])
    else:
        for i in range(n):
            for j in range(k):
                grad[i, j] = fast_exp(grad[i, j])
    total = 0.0
    for i in range(n):
        total += cross_entropy_from_exp(pred, y, grad, i, 1.0 / n, row_max(pred, i))
    return total / n


@njit(cache=True)
def nll_kernel(pred, y, grad, h):
    n = pred.shape[0]
    total = 0.0
    for i in range(n):
        total += nll_row(pred, y, grad, i, 1.0 / n)
    return total / n


@njit(cache=True)
def binary_cross_entropy_kernel(pred, y, grad, h):
    n, k = pred.shape
    scale = 1.0 / (n * k)
    total = 0.0
    for i in range(n):
        total = binary_cross_entropy_row(pred, y, grad, i, scale, total)
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
