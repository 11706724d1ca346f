"""numba.cuda kernels of the dense and dropout layers, beside their CPU kernels in layers.py.

Each launcher takes device arrays in the same order, and does the same work,
as the CPU kernel of the same name: ``dense_forward(p, h, x, out, cache,
training, seed)`` and so on. The matrix products are jitprop's own
shared-memory tiled kernels; transposes are read by index, never copied.
"""

from numba import cuda, float32, float64, uint64

from jitprop import cuda_launch
from jitprop.default_plugins.layers import DROPOUT_RATE
from jitprop.kernels import uniform

uniform = cuda_launch.device(uniform)  # the CPU's draw (the plain function on the simulator)

_kernels = {}


def _matmuls(dtype, tile):
    """The three tiled products for one dtype and tile size (compiled lazily, cached)."""
    key = (dtype, tile)
    if key in _kernels:
        return _kernels[key]
    nbt = float32 if dtype == "float32" else float64

    @cuda.jit
    def nt_bias(x, w, b, out):
        # out[i, j] = sum_k x[i, k] * w[j, k] + b[j]   (x W^T + b: the forward pass)
        xs = cuda.shared.array((tile, tile), nbt)
        ws = cuda.shared.array((tile, tile), nbt)
        tr, tc = cuda.threadIdx.x, cuda.threadIdx.y
        i = cuda.blockIdx.x * tile + tr
        j = cuda.blockIdx.y * tile + tc
        n, k = x.shape
        m = w.shape[0]
        acc = nbt(0)
        for t in range(0, k, tile):
            xs[tr, tc] = x[i, t + tc] if i < n and t + tc < k else 0
            # ws[c, r] holds w[row j of this block's columns, k]
            wj = cuda.blockIdx.y * tile + tr
            ws[tr, tc] = w[wj, t + tc] if wj < m and t + tc < k else 0
            cuda.syncthreads()
            for q in range(tile):
                acc += xs[tr, q] * ws[tc, q]
            cuda.syncthreads()
        if i < n and j < m:
            out[i, j] = acc + b[j]

    @cuda.jit
    def tn(g, x, gw):
        # gw[j, c] = sum_i g[i, j] * x[i, c]   (dL/dW = dL/dout^T x)
        gs = cuda.shared.array((tile, tile), nbt)
        xs = cuda.shared.array((tile, tile), nbt)
        tr, tc = cuda.threadIdx.x, cuda.threadIdx.y
        j = cuda.blockIdx.x * tile + tr
        c = cuda.blockIdx.y * tile + tc
        n, m = g.shape
        k = x.shape[1]
        acc = nbt(0)
        for t in range(0, n, tile):
            gj = cuda.blockIdx.x * tile + tc
            gs[tr, tc] = g[t + tr, gj] if t + tr < n and gj < m else 0  # gs[row i, col j]
            xs[tr, tc] = x[t + tr, c] if t + tr < n and c < k else 0
            cuda.syncthreads()
            for q in range(tile):
                acc += gs[q, tr] * xs[q, tc]
            cuda.syncthreads()
        if j < m and c < k:
            gw[j, c] = acc

    @cuda.jit
    def nn(g, w, gi):
        # gi[i, c] = sum_j g[i, j] * w[j, c]   (dL/dx = dL/dout W)
        gs = cuda.shared.array((tile, tile), nbt)
        ws = cuda.shared.array((tile, tile), nbt)
        tr, tc = cuda.threadIdx.x, cuda.threadIdx.y
        i = cuda.blockIdx.x * tile + tr
        c = cuda.blockIdx.y * tile + tc
        n, m = g.shape
        k = w.shape[1]
        acc = nbt(0)
        for t in range(0, m, tile):
            gs[tr, tc] = g[i, t + tc] if i < n and t + tc < m else 0
            ws[tr, tc] = w[t + tr, c] if t + tr < m and c < k else 0
            cuda.syncthreads()
            for q in range(tile):
                acc += gs[tr, q] * ws[q, tc]
            cuda.syncthreads()
        if i < n and c < k:
            gi[i, c] = acc

    _kernels[key] = (nt_bias, tn, nn)
    return _kernels[key]


@cuda.jit
def column_sums(g, out):
    """out[j] = sum_i g[i, j]: one thread per column, any number of rows."""
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for j in range(start, g.shape[1], stride):
        total = g[0, j] * 0
        for i in range(g.shape[0]):
            total += g[i, j]
        out[j] = total


def _weights(p, n_out, n_in):
    return p[: n_out * n_in].reshape((n_out, n_in)), p[n_out * n_in : n_out * n_in + n_out]


def dense_forward(p, h, x, out, cache, training, seed):
    n_out, n_in = out.shape[1], x.shape[1]
    w, b = _weights(p, n_out, n_in)
    nt_bias, _, _ = _matmuls(str(x.dtype), cuda_launch.TILE)
    blocks, threads = cuda_launch.grid_2d(x.shape[0], n_out)
    nt_bias[blocks, threads](x, w, b, out)


def dense_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    n_out, n_in = grad_out.shape[1], x.shape[1]
    w, _ = _weights(p, n_out, n_in)
    gw, gb = _weights(grad_p, n_out, n_in)
    _, tn, nn = _matmuls(str(x.dtype), cuda_launch.TILE)
    blocks, threads = cuda_launch.grid_2d(n_out, n_in)
    tn[blocks, threads](grad_out, x, gw)
    column_sums[cuda_launch.grid_1d(n_out)](grad_out, gb)
    if grad_in.shape[0] > 0:
        blocks, threads = cuda_launch.grid_2d(grad_in.shape[0], n_in)
        nn[blocks, threads](grad_out, w, grad_in)


@cuda.jit
def _dropout_forward(x, out, cache, rate, active, seed):
    # The CPU kernel's draw (kernels.uniform) of (seed, element), so masks match on both devices.
    n, d = x.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    keep_scale = 1.0 / (1.0 - rate)
    for idx in range(start, n * d, stride):
        i, j = idx // d, idx % d
        m = 1.0
        if active:
            m = 0.0 if uniform(seed, idx) < rate else keep_scale
        cache[i, j] = m
        out[i, j] = x[i, j] * m


@cuda.jit
def _dropout_backward(grad_out, cache, grad_in):
    n, d = grad_in.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, n * d, stride):
        i, j = idx // d, idx % d
        grad_in[i, j] = grad_out[i, j] * cache[i, j]


def dropout_forward(p, h, x, out, cache, training, seed):
    rate = float(h[DROPOUT_RATE])
    _dropout_forward[cuda_launch.grid_1d(x.size)](x, out, cache, rate, bool(training) and rate > 0, uint64(seed))


def dropout_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    if grad_in.shape[0] > 0:
        _dropout_backward[cuda_launch.grid_1d(grad_in.size)](grad_out, cache, grad_in)


@cuda.jit
def _copy(src, dst):
    n, d = dst.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, n * d, stride):
        dst[idx // d, idx % d] = src[idx // d, idx % d]


def copy_forward(p, h, x, out, cache, training, seed):
    _copy[cuda_launch.grid_1d(out.size)](x, out)


def copy_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    if grad_in.shape[0] > 0:
        _copy[cuda_launch.grid_1d(grad_in.size)](grad_out, grad_in)
