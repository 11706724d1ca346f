"""Data-parallel training on MPI: one model, many processes, many machines.

Every rank holds the whole model and draws the same epoch order from
(seed, epoch). Each global batch (``batch_size`` rows) is split into
contiguous parts, one per rank, that differ by at most one row. A rank's
mean gradient is weighted by its part's share of the batch's rows before
one in-place ``MPI_Allreduce`` sums the flat gradient buffer (the batch's
loss and hits ride in two slots after it) inside the compiled step, so the
update is the one a single process computes on the whole batch. A batch
smaller than the number of ranks leaves some ranks no rows; they add zeros.

``mpiexec -n 4 jitprop train ...`` finds its ranks in the environment MPI's
launcher sets; from Python, ``fit(..., distributed=True)`` (or an mpi4py
communicator). mpi4py is imported only then: ``pip install 'jitprop[mpi]'``.
"""

import os
import shutil
import sys
from pathlib import Path

from ..errors import ConfigError
from .group import TIMEOUT, Group

__all__ = ["Group", "TIMEOUT", "environment_rank", "environment_size", "group_of", "launch", "world"]

INSTALL = "pip install 'jitprop[mpi]' (mpi4py and the mpich wheel, which ships mpiexec)"

#: Where MPI launchers say how many ranks a job has and which one this is (MPICH's hydra and
#: Slurm's PMI, Open MPI, PMIx).
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


def _first_int(names):
    for name in names:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def environment_size():
    """How many ranks the MPI launcher started (1 when none did), read without importing MPI."""
    return _first_int(_SIZE_VARS) or 1


def environment_rank():
    """This process's rank as the launcher set it (0 when none did)."""
    return _first_int(_RANK_VARS) or 0


def mpi():
    """mpi4py's ``MPI`` module, or a one-line ConfigError that says what to install."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise ConfigError(f"data-parallel training needs MPI: {INSTALL}") from None
    return MPI


def world(timeout=TIMEOUT):
    """A Group of every rank the launcher started, or None in a single process."""
    return group_of(True, timeout) if environment_size() > 1 else None


def group_of(distributed, timeout=TIMEOUT):
    """``fit``'s ``distributed`` as a Group or None: False/None (one process), True (every rank
    mpiexec started), an mpi4py communicator, or a Group."""
    if distributed is None or distributed is False:
        return None
    if isinstance(distributed, Group):
        return distributed
    if distributed is True:
        return Group(mpi().COMM_WORLD, timeout)
    MPI = mpi()
    if isinstance(distributed, MPI.Comm):
        return Group(distributed, timeout)
    raise ConfigError(f"distributed must be true, false or an mpi4py communicator, got {distributed!r}")


def mpiexec():
    """The ``mpiexec`` of the MPI that mpi4py uses: the one beside this Python (the mpich
    wheel's) first, so another MPI's launcher on the PATH is not mixed in."""
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if found is None:
        raise ConfigError(f"--processes needs mpiexec: {INSTALL}")
    return found


def launch(processes, args):
    """Replace this process by ``mpiexec -n processes python -m jitprop ARGS`` (one host)."""
    if environment_size() > 1:
        raise ConfigError("--processes starts its own ranks; under mpiexec, leave it out")
    mpi()  # the one-line error now, not one per rank
    command = [mpiexec(), "-n", str(processes), sys.executable, "-m", "jitprop", *args]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(command[0], command)
    except OSError as exc:
        raise ConfigError(f"cannot start {command[0]}: {exc.strerror or exc}") from None
