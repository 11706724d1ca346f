"""The Huber loss on an NVIDIA GPU (numba.cuda); imported only for ``device="cuda"`` runs.

jitprop calls ``huber_kernel(pred, y, grad, h, out)``: the CPU kernel's
arguments as device arrays, except ``h``, which stays on the host, plus
``out``, a one-element float64 device array that receives the batch-mean
loss, so training copies nothing back per batch.
"""

from numba import cuda

from jitprop import cuda_launch


@cuda.jit
def _zero(out):
    if cuda.grid(1) == 0:
        out[0] = 0.0


@cuda.jit
def _huber(pred, y, grad, delta, out):
    # One thread per row, so any width works; a grid-stride loop, so any
    # batch fits the grid cuda_launch sizes. Same arithmetic as the CPU kernel.
    n, k = pred.shape
    scale = 1.0 / (n * k)
    half_delta = 0.5 * delta
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, stride):
        total = 0.0
        for j in range(k):
            d = pred[i, j] - y[i, j]
            if d > delta:
                total += delta * (d - half_delta)
                grad[i, j] = delta * scale
            elif d < -delta:
                total -= delta * (d + half_delta)
                grad[i, j] = -delta * scale
            else:
                total += 0.5 * d * d
                grad[i, j] = d * scale
        # Rows meet in one atomic sum: its order (so the loss's last bits) may
        # vary between runs; the gradients do not.
        cuda.atomic.add(out, 0, total * scale)


def huber_kernel(pred, y, grad, h, out):
    _zero[1, 1](out)  # launches run in order on the stream: zeroed before the rows add in
    _huber[cuda_launch.grid_1d(pred.shape[0])](pred, y, grad, h[0], out)
