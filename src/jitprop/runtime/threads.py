"""Threads: the image kernels' own, and BLAS's.

conv2d and max_pool2d split a batch over the cores themselves (``prange``),
each thread calling BLAS for its own samples. Two thread pools then want the
same cores: Numba's and OpenBLAS's, whose idle threads spin. LeNet, batch 64,
on 2 cores: 34 ms a step with both, 4.8 ms with BLAS kept to one thread. So
while a model with such kernels trains, BLAS keeps to one thread
(``one_blas_thread``), and is given back its own count after each span.

Numba also needs its thread pool started before a cached function that calls
a ``parallel=True`` kernel runs. Numba starts it when it loads a parallel
function from its cache (``_reload_parfors``), and since 0.63 a cached caller
inherits that from callees it compiled; but a callee that was itself loaded
from the cache passes nothing on. A generated step built that way, then loaded
from the cache, crashed on its first call here (a LeNet step, numba 0.68).
``start`` starts the pool first.
"""

import contextlib
import ctypes
import glob
import os

import numba

_blas = None  # (set, get) of SciPy's OpenBLAS, () when not found


def parallel(fn):
    """True for an njit kernel compiled with ``parallel=True``."""
    return bool(getattr(fn, "targetoptions", {}).get("parallel"))


def start():
    """Start Numba's thread pool (a public call that does it as a side effect)."""
    numba.get_num_threads()


def _openblas():
    """SciPy's OpenBLAS (the BLAS Numba's ``np.dot`` calls): (set_num_threads, get_num_threads) or ()."""
    global _blas
    if _blas is None:
        _blas = ()
        try:
            import scipy

            for path in glob.glob(os.path.join(os.path.dirname(scipy.__path__[0]), "scipy.libs", "libscipy_openblas*")):
                lib = ctypes.CDLL(path)  # already loaded by Numba's BLAS: the same handle
                for prefix in ("scipy_openblas", "openblas"):
                    setter, getter = getattr(lib, f"{prefix}_set_num_threads", None), getattr(lib, f"{prefix}_get_num_threads", None)
                    if setter is not None and getter is not None:
                        setter.argtypes, getter.restype = [ctypes.c_int], ctypes.c_int
                        _blas = (setter, getter)
                        return _blas
        except (ImportError, OSError):  # another BLAS (MKL, a system one): left as it is
            pass
    return _blas


def set_count(n):
    """At most ``n`` threads from here on, Numba's and BLAS's (a data-parallel rank's share of its host)."""
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    blas = _openblas()
    if blas:
        blas[0](n)


@contextlib.contextmanager
def one_blas_thread(active=True):
    """BLAS on one thread inside the block when ``active``; its own count again after."""
    blas = _openblas() if active else ()
    if not blas:
        yield
        return
    setter, getter = blas
    before = getter()
    setter(1)
    try:
        yield
    finally:
        setter(before)
