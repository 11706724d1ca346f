"""The Lion update on an NVIDIA GPU (numba.cuda); imported only for ``device="cuda"`` runs.

jitprop calls ``lion_kernel(p, g, state, lr, h, step)`` with the CPU
kernel's arguments: ``p``, ``g`` and ``state`` as device arrays, the
scalars from the host.
"""

from numba import cuda

from jitprop import cuda_launch


@cuda.jit
def _lion(p, g, state, beta1, beta2, one_minus_beta1, one_minus_beta2, rate, shrink):
    # A grid-stride loop: any number of weights fits the grid cuda_launch sizes.
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.shape[0], stride):
        m = state[0, i]
        c = beta1 * m + one_minus_beta1 * g[i]
        decayed = p[i] * shrink
        if c > 0:
            p[i] = decayed - rate
        elif c < 0:
            p[i] = decayed + rate
        else:  # c is 0 (no step) or NaN (passed on)
            p[i] = decayed - rate * c
        state[0, i] = beta2 * m + one_minus_beta2 * g[i]


def lion_kernel(p, g, state, lr, h, step):
    # Scalars in the parameters' dtype, as the CPU kernel casts them: a float32
    # model updates in float32 on both, and the two agree to the last bits.
    dt = p.dtype.type
    _lion[cuda_launch.grid_1d(p.shape[0])](
        p, g, state, dt(h[0]), dt(h[1]), dt(1.0 - h[0]), dt(1.0 - h[1]), dt(lr), dt(1.0 - lr * h[2])
    )
