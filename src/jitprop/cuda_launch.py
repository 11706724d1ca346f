"""Launch configuration for numba.cuda kernels: the small helper a plugin's CUDA kernels use.

Kept apart from the CPU path: importing numba.cuda costs start-up time that a
CPU run should not pay, so CUDA modules are imported only for ``device="cuda"``.
Under ``NUMBA_ENABLE_CUDASIM=1`` (tests on machines without a GPU) the
simulator runs one Python thread per GPU thread: tests shrink ``TILE`` and
``THREADS`` so grids stay tiny.
"""


from numba.core import config


def device(fn):
    """An njit function for CUDA kernels to call: Numba compiles it for the device. The simulator
    runs kernels as Python, with arrays Numba cannot type, so there it is the plain function."""
    return fn.py_func if config.ENABLE_CUDASIM else fn


#: Side of the square tiles of the shared-memory matrix products (threads per block: TILE x TILE).
TILE = 16
#: Threads per block of 1-D (elementwise, per-row) kernels.
THREADS = 256
#: Cap on blocks of grid-stride kernels: each thread loops over the rest.
MAX_BLOCKS = 1024


def grid_1d(n):
    """(blocks, threads) for a grid-stride loop over n items."""
    return max(1, min(MAX_BLOCKS, -(-n // THREADS))), THREADS


def grid_2d(rows, cols):
    """(blocks, threads) covering a rows x cols output with TILE x TILE blocks."""
    return (max(1, -(-rows // TILE)), max(1, -(-cols // TILE))), (TILE, TILE)
