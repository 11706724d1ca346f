"""Threads: the image kernels' own, and BLAS's.

conv2d and max_pool2d split a batch over the cores themselves (``prange``),
each thread calling BLAS for its own samples. Two thread pools then want the
same cores: Numba's and OpenBLAS's, whose idle threads spin. LeNet, batch 64,
on 2 cores: 34 ms a step with both, 4.8 ms with BLAS kept to one thread. So
while a model with such kernels trains, BLAS keeps to one thread
(``blas_threads``), and is given back its own count after each span.

Numba also needs its thread pool started before a cached function that calls
a ``parallel=True`` kernel runs. Numba starts it when it loads a parallel
function from its cache (``_reload_parfors``), and since 0.63 a cached caller
inherits that from callees it compiled; but a callee that was itself loaded
from the cache passes nothing on. A generated step built that way, then loaded
from the cache, crashed on its first call here (a LeNet step, numba 0.68).
``start`` starts the pool first.

Small models train with BLAS on one thread (``blas_count``): where the
products are small a second thread gains nothing, and when another process
keeps a core busy it made such a step several times slower. Larger ones
take every core. ``--threads N`` or ``JITPROP_NUM_THREADS=N`` chooses the
count instead, and ``auto`` tries one thread and every core as a model
trains and keeps the faster (``Chooser``), for a machine that other
programs keep busy. The count is fixed unless asked for ``auto`` because
the numbers can depend on it: OpenBLAS mostly splits a product's rows and
columns among its threads, but a 128 x 784 x 256 product (M's first layer)
rounds differently on one thread and on two, so a count chosen by the
clock would make the same run give different weights.
"""

import contextlib
import ctypes
import glob
import os
import time

import numba

from ..errors import ConfigError

_blas = None  # (set, get) of SciPy's OpenBLAS, () when not found
_asked = None  # the count ``use`` was given (``--threads``), or AUTO
#: The count that means: try one thread and every core as the model trains (``Chooser``).
AUTO = "auto"
_cap = None  # at most this many BLAS threads a model, inside ``capped``

#: Multiply-adds in a batch's largest product below which BLAS keeps to one thread. A product
#: alone gains 1.7x from a second thread from 1.3M multiply-adds up, but a whole training step
#: on this 2-core machine gained nothing at 1.3M (64-100-10, batch 200: 0.98x), 1.09x at 3.3-4.2M,
#: 1.32x at 8.4-12.8M and 1.54x at 25.7M (M: 784-256-256-10, batch 128). With another process
#: keeping one core busy, the second thread made the 1.3M step 2.6x slower and M's 2.7x: its
#: work waits for a core that is not free while the first spins (benchmarks/UNDER_LOAD.md).
ONE_THREAD_BELOW = 4_000_000


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


def use(n):
    """Train on ``n`` threads from here on, whatever the models' sizes, or on what ``AUTO`` finds
    faster (``jitprop train --threads``)."""
    global _asked
    _asked = n
    if n != AUTO:
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


def asked():
    """The thread count the user chose: ``use``'s (``--threads``), else ``JITPROP_NUM_THREADS``, else None;
    a number, or ``AUTO``."""
    if _asked is not None:
        return _asked
    text = os.environ.get("JITPROP_NUM_THREADS", "").strip()
    if not text:
        return None
    if text.lower() == AUTO:
        return AUTO
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"JITPROP_NUM_THREADS must be a whole number of threads, 1 or more, or auto, got {text!r}")
    return int(text)


def adaptive():
    """True when the user asked for ``AUTO``: the trainer tries the counts as it goes (``Chooser``)."""
    return asked() == AUTO


def cores():
    """The cores this process may run on, or fewer where OpenBLAS was told to use fewer threads
    (``OPENBLAS_NUM_THREADS``, else ``OMP_NUM_THREADS``, as OpenBLAS itself reads them): two jobs
    started with 1 each must not each take every core, which made two M runs side by side 6x slower."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        text = os.environ.get(name, "").strip()
        if text.isdigit() and int(text) >= 1:  # anything else OpenBLAS passes over too
            return min(n, int(text))
    return n


def blas_count(model, batch_size, own_threads=False, share=None):
    """BLAS's threads for training ``model`` on batches of ``batch_size`` rows: one where the
    layers' kernels split each batch over the cores themselves (``own_threads``) or where the
    largest product is too small for a second thread to help (``ONE_THREAD_BELOW``), else the
    count the user chose or every core; never more than ``share`` (a data-parallel rank's)."""
    if own_threads:
        return 1
    chosen = asked()
    if chosen is None or chosen == AUTO:
        # A layer's weights times the batch's rows: its forward product's multiply-adds (a dense
        # layer's; layers whose products are bigger than that, convolutions, keep to one anyway).
        largest = max((batch_size * (b - a) for a, b in zip(model.offsets, model.offsets[1:])), default=0)
        chosen = 1 if largest < ONE_THREAD_BELOW else cores()
    return max(1, min(chosen, share or chosen, _cap or chosen))


@contextlib.contextmanager
def capped(n):
    """Inside the block, every model trains with at most ``n`` BLAS threads (a sweep's runs, one
    per core, each on one), whatever its size or the user's count."""
    global _cap
    before, _cap = _cap, n
    try:
        with blas_threads(n):
            yield
    finally:
        _cap = before


class Chooser:
    """BLAS's thread count for a trainer's spans of batches. Where ``blas_count`` chose more than one
    thread and the user asked for ``AUTO``, it tries: a span on one thread and a span on every core,
    the faster per batch kept, and tries again every ``RECHECK`` seconds (another program may start
    or end). The size rule cannot see a busy machine: with a core taken by another process, M's step
    took 5.2-5.5 ms on 2 threads and 2.1 ms on one (benchmarks/UNDER_LOAD.md), where idle, 2 threads
    take a third off it. Not the default: the counts a run then takes depend on the clock, and a
    product can round differently on one thread and on two (the module's docstring); on an idle
    machine, L's trials and the spans a noisy trial sent to one thread cost it 15-25%."""

    #: Seconds between trials, and how much faster one thread must be to win.
    RECHECK, MARGIN = 10.0, 1.1

    def __init__(self, count, adaptive, clock=time.perf_counter):
        self.top = self.count = count
        self.adaptive = adaptive and count > 1
        self.clock = clock
        self._trial = None  # {count: seconds a batch} while trying; None between trials
        self._next_trial = clock()
        self._order = [1, count]
        self._spans = 0

    def next(self):
        """The thread count for the next span (a fit's first, on every core, warms up untimed)."""
        if self.adaptive and self._spans and self._trial is None and self.clock() >= self._next_trial:
            self._trial = {}
            self._order.reverse()  # the other count first next time: a slow phase hits each in turn
        if self._trial is not None:
            return next(c for c in self._order if c not in self._trial)
        return self.count

    def record(self, count, seconds, batches):
        """A span of ``batches`` took ``seconds`` on ``count`` threads."""
        self._spans += 1
        if self._trial is None or batches <= 0:
            return
        self._trial[count] = seconds / batches
        if len(self._trial) == 2:
            one, top = self._trial[1], self._trial[self.top]
            self.count = 1 if one * self.MARGIN < top else self.top
            self._trial = None
            self._next_trial = self.clock() + self.RECHECK


@contextlib.contextmanager
def blas_threads(n):
    """BLAS on ``n`` threads inside the block; its own count again after."""
    blas = _openblas()
    if not blas:
        yield
        return
    setter, getter = blas
    before = getter()
    if before == n:  # left alone: in a forked sweep worker, setting it starts OpenBLAS's thread pool again
        yield  # (a spinning thread per worker: a sweep of 8 S runs took 0.25 s, not 0.19)
        return
    setter(n)
    try:
        yield
    finally:
        setter(before)
