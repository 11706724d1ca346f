"""The ranks that train one model together, and what the trainer asks of them.

Every rank runs the same epoch loop. The compiled step reduces each batch's
gradients itself (``binding.py``); between spans of batches the trainer
asks the group to agree (on the next span, on an interrupt, on stopping),
to sum what ranks scored on their shards of the validation rows, and to
start every rank from rank 0's weights. A rank that fails must not leave
the others waiting in a collective for ever: ``fatal`` names it in one line
and calls ``MPI_Abort``, and a watchdog aborts a job whose ranks stopped
completing steps.
"""

import contextlib
import os
import sys
import threading
import traceback
import time
import zlib

import numpy as np

from ..errors import DataError, JitpropError
from . import binding

#: Seconds without a completed span of steps before the watchdog aborts the job (``--mpi-timeout``).
TIMEOUT = 300.0
#: Seconds more that a rank waiting for the others gives a stalled one to name itself first.
GRACE = 5.0


class Group:
    """A communicator's ranks training one model: ``rank``, ``size``, and the collectives the trainer uses."""

    def __init__(self, comm, timeout=TIMEOUT, mpi=None):
        if mpi is None:
            from mpi4py import MPI as mpi
        self.MPI = mpi  # mpi4py's module (its constants), or a test's stand-in
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        #: The ranks on this rank's host (they share its cores and its compile cache).
        self.local = comm.Split_type(mpi.COMM_TYPE_SHARED)
        self.timeout = timeout
        self._handles = {}
        self._watchdog = None
        #: True while this rank is in the training step or a collective: waiting on the others, maybe.
        self.waiting = False

    def __repr__(self):
        return f"Group(rank={self.rank}, size={self.size})"

    @property
    def root(self):
        """True on rank 0, the one that prints and writes."""
        return self.rank == 0

    def share(self, rows):
        """``(lo, hi)``: this rank's contiguous part of ``rows`` rows. Parts differ by at most one row."""
        return rows * self.rank // self.size, rows * (self.rank + 1) // self.size

    def handles(self, dtype):
        """The compiled step's ``binding.Handles`` for gradients of ``dtype``."""
        key = np.dtype(dtype).str
        if key not in self._handles:
            self._handles[key] = binding.handles(self.comm, dtype)
        return self._handles[key]

    def threads(self):
        """Cores for each rank on this host: its cores shared among its ranks."""
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        return max(1, cores // self.local.Get_size())

    # -- collectives (every rank calls each, in the same order) --------------

    def sum(self, values):
        """The float64 sum of ``values`` over the ranks."""
        return self._reduce(values, self.MPI.SUM)

    def max(self, values):
        """The float64 maximum of ``values`` over the ranks."""
        return self._reduce(values, self.MPI.MAX)

    def _reduce(self, values, op):
        buf = np.array(values, dtype=np.float64)
        with self.collective():
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=op)
        return buf

    def broadcast(self, arrays):
        """Rank 0's values of ``arrays`` (each contiguous, the same shape everywhere), in place."""
        with self.collective():
            for a in arrays:
                if a.size:
                    self.comm.Bcast(a, root=0)

    def broadcast_object(self, value):
        """Rank 0's ``value`` (anything picklable) on every rank."""
        with self.collective():
            return self.comm.bcast(value, root=0)

    def check_same(self, what, *arrays):
        """A DataError on every rank unless each rank holds the same ``arrays`` as rank 0."""
        mine = [(a.shape, a.dtype.str, zlib.crc32(np.ascontiguousarray(a).view(np.uint8))) for a in arrays]
        with self.collective():
            every = self.comm.allgather(mine)

        def shapes(described):
            return " and ".join(f"{'x'.join(map(str, shape))} {dtype}" for shape, dtype, _ in described)

        for rank, theirs in enumerate(every):
            if theirs != every[0]:
                how = "the same shape, other values" if shapes(theirs) == shapes(every[0]) else f"{shapes(theirs)} against {shapes(every[0])}"
                raise DataError(f"rank {rank}'s {what} differs from rank 0's ({how}); every rank must load the same data")

    def in_turn(self, work):
        """Call ``work()`` on this host's ranks one after another: the first compiles and caches
        what the others then load, instead of every rank compiling it at once."""
        error = None
        for turn in range(self.local.Get_size()):
            if turn == self.local.Get_rank():
                try:
                    work()
                except Exception as exc:  # raised after the turns, so no rank waits at a barrier
                    error = exc
            self.local.Barrier()
        self.beat()
        if error is not None:
            raise error

    @contextlib.contextmanager
    def agreed(self):
        """Errors inside are every rank's: when any rank raises, each raises too, its own error
        or the first failing rank's (as ``rank R of N: message``), so no rank waits in a collective.
        The block must reach no collective after one that a failing rank skips."""
        error = None
        try:
            yield
        except Exception as exc:
            error = exc
        with self.collective():
            failures = self.comm.allgather(None if error is None else (isinstance(error, DataError), describe(error)))
        if error is not None:
            raise error
        for rank, failure in enumerate(failures):
            if failure is not None:
                kind = DataError if failure[0] else JitpropError
                raise kind(f"rank {rank} of {self.size}: {failure[1]}")

    # -- faults ----------------------------------------------------------------

    def fatal(self, error, code=1):
        """End the whole job: this rank's error (a message or an exception) in one line, then
        ``MPI_Abort``, which stops every rank."""
        sys.stdout.flush()
        if isinstance(error, BaseException) and os.environ.get("JITPROP_DEBUG"):
            traceback.print_exception(error)
        message = describe(error) if isinstance(error, BaseException) else error
        sys.stderr.write(f"jitprop: rank {self.rank} of {self.size}: {message}\n")  # one write: ranks share the stream
        sys.stderr.flush()
        if not os.environ.get("JITPROP_DEBUG"):  # MPI_Abort's own line says again what this one said
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
        self.comm.Abort(code)

    def watch(self):
        """Start the watchdog: the job aborts when no span of steps completes in ``timeout`` seconds."""
        if self.timeout and self._watchdog is None:
            self._watchdog = Watchdog(self)
            self._watchdog.start()
        self.beat()

    def unwatch(self):
        """Stop the watchdog (training is over on this rank)."""
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None

    def beat(self):
        """Tell the watchdog that this rank made progress."""
        if self._watchdog is not None:
            self._watchdog.last = time.monotonic()

    @contextlib.contextmanager
    def collective(self):
        """Around what waits for every rank (training steps, whose allreduce does; collectives):
        the watchdog then gives a stalled rank the time to name itself."""
        self.waiting = True
        try:
            yield
        finally:
            self.waiting = False
            self.beat()


def describe(error):
    """An exception as one line: jitprop's own as its sentence, any other with its type."""
    if isinstance(error, JitpropError):
        return str(error)
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


class Watchdog(threading.Thread):
    """Aborts the job when its rank has gone ``timeout`` seconds without progress: MPI itself
    waits in a collective for ever for a rank that stalled (or hangs in a plugin's code)."""

    def __init__(self, group):
        super().__init__(name="jitprop-mpi-watchdog", daemon=True)
        self.group, self.last = group, time.monotonic()
        self._stopped = threading.Event()

    def run(self):
        group, timeout = self.group, self.group.timeout
        while not self._stopped.wait(min(1.0, timeout / 4)):
            idle = time.monotonic() - self.last
            if not group.waiting and idle > timeout:
                group.fatal(f"stalled: no training step completed in {timeout:g} s, and this rank is not waiting for"
                            " another (a callback or plugin that hangs?); aborting the job (--mpi-timeout sets the limit)")  # fmt: skip
            if group.waiting and idle > timeout + GRACE:  # a stalled rank names itself first
                group.fatal(f"no training step completed in {timeout:g} s: this rank waits for another that stalled"
                            " or died; aborting the job (--mpi-timeout sets the limit)")  # fmt: skip

    def stop(self):
        self._stopped.set()
