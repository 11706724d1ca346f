"""Small njit helpers shared by the Python loop and the compiled step: batch gathering and seeds."""

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True)
def gather_rows(src, idx, start, dst):
    """dst[r, :] = src[idx[start + r], :] for every row r of dst: one shuffled batch.

    Element loops rather than ``dst[r] = src[...]``: the same machine code, and
    Numba compiles it in a fraction of the time array assignment takes.
    """
    for r in range(dst.shape[0]):
        i = idx[start + r]
        for j in range(dst.shape[1]):
            dst[r, j] = src[i, j]


@njit(cache=True)
def gather_items(src, idx, start, dst):
    """dst[r] = src[idx[start + r]]: the labels of one shuffled batch."""
    for r in range(dst.shape[0]):
        dst[r] = src[idx[start + r]]


def gather(array):
    """The gather kernel for an array of this many dimensions."""
    return gather_rows if array.ndim == 2 else gather_items


@njit(cache=True)
def _splitmix(z):
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def seed_mix(a, b):
    """A 64-bit seed from two integers (two splitmix64 steps): one per (run, iteration), (iteration, layer)."""
    z = _splitmix(np.uint64(a) + _GOLDEN)
    return _splitmix(z + np.uint64(b) + _GOLDEN)
