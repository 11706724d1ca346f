"""Data-parallel training without MPI: the compiled step's allreduce through a stand-in for a job of
one rank, the seed of a rank's rows, and what a user without MPI is told. Real jobs: tests/mpi/."""

import ctypes
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

import jitprop
from jitprop.cli import cli
from jitprop.cli.main import _without_processes
from jitprop.distributed import Group
from jitprop.distributed.binding import Handles
from jitprop.kernels import row_seed, uniform

ALLREDUCE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int)


class OneRankComm:
    """An mpi4py communicator as the only rank of a job sees it: every collective gives back its input."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def Split_type(self, kind):
        return self

    def Allreduce(self, place, buf, op=None):
        pass

    def Bcast(self, buf, root=0):
        pass

    def bcast(self, value, root=0):
        return value

    def allgather(self, value):
        return [value]

    def Barrier(self):
        pass


class CountingGroup(Group):
    """A group of one rank whose compiled allreduce is a C callback that records each call."""

    def __init__(self):
        super().__init__(OneRankComm(), timeout=0, mpi=SimpleNamespace(IN_PLACE=None, SUM="sum", MAX="max", COMM_TYPE_SHARED=0))
        self.calls = []
        self._callback = ALLREDUCE(lambda send, recv, count, *handles: self.calls.append((send, count)) or 0)

    def handles(self, dtype):
        return Handles(np.int64(ctypes.cast(self._callback, ctypes.c_void_p).value), np.int64(-1), np.int32(1),
                       np.int32(2), np.int32(3))  # fmt: skip


def data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(70, 5)), rng.integers(0, 3, 70)


def model():
    layers = [jitprop.layer("dense", units=8), "tanh", jitprop.layer("dropout", rate=0.3), jitprop.layer("dense", units=3)]
    return jitprop.Sequential(layers, input_dim=5, dtype="float64", seed=2)


def test_the_compiled_step_sums_the_gradients_with_one_in_place_allreduce_per_step():
    X, y = data()
    alone, together, group = model(), model(), CountingGroup()
    h1 = jitprop.fit(alone, X, y, loss="cross_entropy", epochs=3, batch_size=16, validation_split=0.2)
    h2 = jitprop.fit(together, X, y, loss="cross_entropy", epochs=3, batch_size=16, validation_split=0.2, distributed=group)
    steps = 3 * -(-56 // 16)
    # MPI_IN_PLACE, and the flat gradients with the batch's loss and hits after them.
    assert group.calls == [(ctypes.c_void_p(-1).value, alone.n_params + 2)] * steps
    np.testing.assert_array_equal(together.params, alone.params)  # one rank's share is the whole batch
    assert h2.history == h1.history


def test_a_rank_draws_the_dropout_mask_of_its_rows_of_the_whole_batch():
    seed = np.uint64(12345)
    for row, width, k in ((0, 7, 3), (5, 7, 0), (11, 3, 8)):
        moved = np.uint64(row_seed(seed, row, width))  # numba hands a uint64 back as a Python int
        assert uniform(moved, k) == uniform(seed, row * width + k)


def test_without_processes_drops_the_flag_and_its_value():
    assert _without_processes(["train", "--processes", "4", "--epochs", "3"]) == ["train", "--epochs", "3"]
    assert _without_processes(["train", "--processes=4", "--hidden", "8"]) == ["train", "--hidden", "8"]


@pytest.fixture
def no_mpi(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # ``import mpi4py`` now fails as if it were not installed


def test_asking_for_mpi_without_it_is_one_line_saying_what_to_install(no_mpi, monkeypatch):
    message = "data-parallel training needs MPI: pip install 'jitprop[mpi]' (mpi4py and the mpich wheel, which ships mpiexec)"
    result = CliRunner().invoke(cli, ["train", "--processes", "2"])
    assert result.exit_code == 1 and result.output.strip() == f"Error: {message}"
    with pytest.raises(jitprop.ConfigError, match="pip install 'jitprop\\[mpi\\]'"):
        jitprop.fit(model(), *data(), loss="cross_entropy", distributed=True)
    monkeypatch.setenv("PMI_SIZE", "2")  # started by mpiexec, as 2 ranks
    result = CliRunner().invoke(cli, ["train"])
    assert result.exit_code == 1 and result.output.strip() == f"Error: {message}"


def test_under_mpiexec_only_train_runs(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    result = CliRunner().invoke(cli, ["list"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: jitprop list runs in one process: run it without mpiexec (train is the data-parallel command)"
