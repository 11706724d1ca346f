"""Helpers for testing plugins: register one for a block, shrink CUDA grids for the simulator.

    from jitprop.testing import registered, tiny_cuda_grids

    with registered(my_plugin_module):
        assert jitprop.gradcheck.check_loss("my_loss")["pred"] < 1e-6

Run CUDA kernels without a GPU by setting ``NUMBA_ENABLE_CUDASIM=1`` before
numba is imported, inside ``with tiny_cuda_grids():`` so that the simulator
(one Python thread per GPU thread) stays quick while grid-stride loops
still loop.
"""

import contextlib

from . import cuda_launch, plugins


@contextlib.contextmanager
def registered(plugin, name=None):
    """Register ``plugin`` (a module or object with hook implementations) for the ``with`` block."""
    plugins.register(plugin, name=name)
    try:
        yield plugin
    finally:
        if plugins.pm.is_registered(plugin):
            plugins.unregister(plugin)


@contextlib.contextmanager
def tiny_cuda_grids(tile=4, threads=8, max_blocks=3):
    """Small tiles, blocks and grids for the CUDA simulator; fewer threads than items on purpose."""
    saved = cuda_launch.TILE, cuda_launch.THREADS, cuda_launch.MAX_BLOCKS
    cuda_launch.TILE, cuda_launch.THREADS, cuda_launch.MAX_BLOCKS = tile, threads, max_blocks
    try:
        yield
    finally:
        cuda_launch.TILE, cuda_launch.THREADS, cuda_launch.MAX_BLOCKS = saved
