"""Helpers for testing plugins: register one for a block, run a command, shrink CUDA grids for the simulator.

    from jitprop.testing import command, one_line_error, registered, tiny_cuda_grids

    with registered(my_plugin_module):
        assert jitprop.gradcheck.check_loss("my_loss")["pred"] < 1e-6

Run CUDA kernels without a GPU by setting ``NUMBA_ENABLE_CUDASIM=1`` before
numba is imported, inside ``with tiny_cuda_grids():`` so that the simulator
(one Python thread per GPU thread) stays quick while grid-stride loops
still loop; it also makes the simulator quick and its shared memory safe
(``quick_simulator``). The simulator checks no types: ``compile_ptx`` compiles kernels
for a real GPU (compute capability 7.5), which does, with no GPU needed.
"""

import contextlib
import os
import subprocess
import sys

import numpy as np

from . import cuda_launch
from .plugins import manager as plugins


def command(*args, ok=True, env=None):
    """``jitprop ARGS...`` run in this process (click's CliRunner): its result, asserted to have
    succeeded unless ``ok=False``."""
    from click.testing import CliRunner

    from .cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], env=env)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def one_line_error(result):
    """The ``Error: ...`` line of a failed ``command``, asserting that it said nothing else (no traceback)."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


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
    saved = cuda_launch.TILE, cuda_launch.THREADS, cuda_launch.MAX_BLOCKS, sys.getswitchinterval()
    cuda_launch.TILE, cuda_launch.THREADS, cuda_launch.MAX_BLOCKS = tile, threads, max_blocks
    quick_simulator()
    try:
        yield
    finally:
        cuda_launch.TILE, cuda_launch.THREADS, cuda_launch.MAX_BLOCKS, interval = saved
        sys.setswitchinterval(interval)


#: The thread switch interval under the simulator, in seconds (Python's default is 0.005).
SIMULATOR_SWITCH_INTERVAL = 5e-5


def quick_simulator():
    """Make numba's CUDA simulator about 4x quicker, and its shared memory race-free.

    The simulator's threads hand each other the GIL at every ``syncthreads``; at
    Python's 5 ms switch interval most of a run is waiting, so the interval is
    shortened. Switching that often exposes a race in the simulator itself
    (numba 0.68): two threads of a block that reach one ``cuda.shared.array``
    together can each get an array of their own. Allocations are made atomic
    here. Process-wide; does nothing without ``NUMBA_ENABLE_CUDASIM=1``.
    """
    from numba.core import config

    if not config.ENABLE_CUDASIM:
        return
    from numba.cuda.simulator import kernelapi

    shared = kernelapi.FakeCUDAShared
    if not getattr(shared.array, "jitprop_atomic", False):
        original = shared.array

        def array(self, shape, dtype):
            if shape == 0:  # dynamic shared memory: one buffer already
                return original(self, shape, dtype)
            dtype = kernelapi.numpy_support.as_dtype(dtype) if isinstance(dtype, kernelapi.types.Type) else dtype
            caller = sys._getframe(1)  # keyed by the calling line, as the simulator does
            # dict.setdefault is atomic under the GIL: every thread gets the block's one array.
            return self._allocations.setdefault((caller.f_code.co_filename, caller.f_lineno), np.empty(shape, dtype))

        array.jitprop_atomic = True
        shared.array = array
    sys.setswitchinterval(SIMULATOR_SWITCH_INTERVAL)


#: Run before a PTX check's source. A kernel that calls a function (jitprop's shared scalar
#: formulas are njit functions) compiles it for the current GPU's compute capability, and asks
#: the driver for it; with no GPU, compile it for the capability the kernel is compiled for.
_NO_GPU_PRELUDE = """
import numba.cuda.dispatcher as _dispatcher
from numba import cuda as _cuda


class _NoGPU:
    compute_capability = (7, 5)


if not _cuda.is_available() and hasattr(_dispatcher, "get_current_device"):
    _dispatcher.get_current_device = _NoGPU
"""


def compile_ptx(source, timeout=600):
    """Run ``source`` (Python that calls ``numba.cuda.compile_ptx``) in a fresh process without
    the simulator and return what it printed; a failure fails the calling test with numba's
    message, and missing CUDA compiler libraries (libNVVM, NVRTC) skip it."""
    import pytest

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    code = _NO_GPU_PRELUDE + "\n" + source
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
    if "libNVVM cannot be found" in out.stderr:
        pytest.skip("the CUDA toolkit's libNVVM is not installed here, so kernels cannot be compiled to PTX")
    if "libnvrtc" in out.stderr and "No such file" in out.stderr:
        pytest.skip("numba-cuda needs NVRTC to compile PTX: pip install 'numba-cuda[cu12]' brings it")
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout
