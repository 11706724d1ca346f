"""Data-parallel training on real MPI jobs of 2 and 4 ranks (``pip install '.[mpi]'``; .ci/run runs these).

Each test starts ``mpiexec`` itself, so a hung job is a failed test, not a
hung suite. The rank side of the Python-API cases is ``ranks.py``.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import jitprop
from jitprop import distributed

pytest.importorskip("mpi4py")
if distributed.environment_size() > 1:
    pytest.skip("these tests start their own MPI jobs; run them without mpiexec", allow_module_level=True)
try:
    MPIEXEC = distributed.mpiexec()
except jitprop.ConfigError:
    pytest.skip("no mpiexec", allow_module_level=True)

RANKS = Path(__file__).with_name("ranks.py")
JITPROP = [sys.executable, "-m", "jitprop"]
#: The CLI runs: the digits MLP with dropout, float64 so that weights can be compared tightly.
RUN = ["train", "--dtype", "float64", "--dropout", "0.2", "--hidden", "32"]


def job(n, command, cwd, timeout=120, **kwargs):
    return subprocess.run([MPIEXEC, "-n", str(n), *command], capture_output=True, text=True, cwd=cwd, timeout=timeout, **kwargs)


def ranks(n, case, tmp_path, timeout=60):
    """``ranks.py CASE`` on n ranks: (finished process, rank 0's result or None)."""
    out = tmp_path / f"{case}-{n}.json"
    proc = job(n, [sys.executable, str(RANKS), case, str(out), str(timeout)], tmp_path)
    return proc, json.loads(out.read_text()) if out.exists() else None


def train(*args, cwd):
    proc = subprocess.run([*JITPROP, *args], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def weights(path):
    return jitprop.checkpoint.load(path).state_dict()


def assert_same_weights(a, b, rtol=1e-10):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        scale = np.max(np.abs(wa[key]))
        assert np.max(np.abs(wa[key] - wb[key])) <= rtol * scale, key


@pytest.mark.parametrize("n", [2, 4])
def test_ranks_train_the_weights_one_process_trains_on_the_whole_batch(n, tmp_path):
    proc, result = ranks(n, "equivalence", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert result["ranks"] == n
    for name in ("sgd_momentum", "adam"):
        r = result[name]
        assert r["moved"] > 0.1  # four epochs moved the weights: the comparison means something
        assert r["weights"] < 1e-10, name
        assert r["same_on_every_rank"]
        for key, values in r["alone"].items():  # losses, accuracies, validation: global, as one process logs them
            np.testing.assert_allclose(r["history"][key], values, rtol=1e-10, err_msg=key)
    assert result["again"]["weights"] < 1e-10  # a second fit, each rank's program having learnt another span


def test_cli_on_two_ranks_prints_and_writes_once_and_matches_one_process(tmp_path):
    args = [*RUN, "--epochs", "2"]
    one = train(*args, "--checkpoint", "one.npz", "--callback", "csv_logger:filename=one.csv", cwd=tmp_path)
    two = train(*args, "--processes", "2", "--checkpoint", "two.npz", "--callback", "csv_logger:filename=two.csv", cwd=tmp_path)
    lines = two.stdout.splitlines()
    assert lines[0] == "data-parallel on 2 ranks (MPI): each trains 16 rows of every 32-row batch"
    assert lines[1] == one.stdout.splitlines()[0]  # then what one process prints
    assert sum(line.startswith("epoch 1/2") for line in lines) == 1
    assert sum(line.startswith("saved two.npz") for line in lines) == 1
    assert (tmp_path / "two.csv").read_text().count("epoch,") == 1
    assert_same_weights(tmp_path / "one.npz", tmp_path / "two.npz")
    # Identical logs but for the timings: the losses are global.
    strip = lambda text: [line.rsplit("  ", 1)[0] for line in text.splitlines() if line.startswith("epoch")]  # noqa: E731
    assert strip(one.stdout) == strip(two.stdout)


def test_resume_on_another_number_of_ranks_continues_the_same_run(tmp_path):
    train(*RUN, "--epochs", "2", "--processes", "2", "--checkpoint", "a.npz", cwd=tmp_path)
    proc = job(4, [*JITPROP, "train", "--resume", "a.npz", "--epochs", "3", "--checkpoint", "b.npz"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("data-parallel on 4 ranks")
    train(*RUN, "--epochs", "3", "--checkpoint", "c.npz", cwd=tmp_path)
    assert_same_weights(tmp_path / "b.npz", tmp_path / "c.npz")


def test_a_stop_on_one_rank_stops_every_rank_after_the_same_epoch(tmp_path):
    proc, result = ranks(2, "stop", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert result["epochs"] == [2, 2]


def test_divergence_stops_every_rank_before_the_same_update(tmp_path):
    proc, result = ranks(2, "diverge", tmp_path)
    assert proc.returncode == 0, proc.stderr
    first, second = result["stops"]
    assert first is not None and first == second  # the same epoch, iteration and reason


def test_other_data_on_one_rank_fails_every_rank_before_training(tmp_path):
    proc, result = ranks(2, "data", tmp_path)
    assert proc.returncode == 0, proc.stderr
    first, second = result["errors"]
    assert first == second and "rank 1's" in first and "differs from rank 0's" in first


def stderr_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.strip()]


def test_a_rank_that_raises_ends_the_job_in_one_line_naming_it(tmp_path):
    started = time.monotonic()
    proc, result = ranks(2, "raise", tmp_path)
    assert time.monotonic() - started < 30
    assert proc.returncode != 0 and result is None
    assert stderr_lines(proc) == ["jitprop: rank 1 of 2: ValueError: row 17 of this host's data is unreadable"]


def test_a_stalled_rank_aborts_the_job_after_the_timeout_and_names_itself(tmp_path):
    started = time.monotonic()
    proc, result = ranks(2, "stall", tmp_path, timeout=2)
    assert time.monotonic() - started < 30  # the stalled rank would sleep 120 s
    assert proc.returncode != 0 and result is None
    lines = stderr_lines(proc)
    assert lines[0].startswith("jitprop: rank 1 of 2: stalled: no training step completed in 2 s"), lines


def rank_pid(marker, rank):
    """The pid of rank ``rank`` of the job whose environment holds ``marker``."""
    for entry in Path("/proc").iterdir():
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if marker.encode() in env and f"PMI_RANK={rank}".encode() in env:
            return int(entry.name)
    return None


def wait_for(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the rank in /proc")
def test_sigkill_of_a_rank_ends_the_job_and_the_last_checkpoint_resumes(tmp_path):
    marker = f"JITPROP_TEST_JOB={uuid.uuid4().hex}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    ck = tmp_path / "ck.npz"
    command = [MPIEXEC, "-n", "2", *JITPROP, *RUN, "--epochs", "100000", "--callback", "model_checkpoint:filepath=ck.npz"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        wait_for(ck.exists, 120)
        time.sleep(0.5)  # some epochs on: a checkpoint being replaced as the rank dies
        os.kill(wait_for(lambda: rank_pid(marker, 1), 10), signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(timeout=30)
        assert time.monotonic() - killed < 15
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode != 0
    saved = jitprop.checkpoint.load(ck)  # whole: it loads and its checksum holds
    epochs = saved.meta["trainer"]["epoch"]
    assert epochs >= 1
    resumed = train("train", "--resume", str(ck), "--epochs", str(epochs + 1), cwd=tmp_path)
    assert f"epochs {epochs + 1}..{epochs + 1}" in resumed.stdout


def test_ctrl_c_stops_every_rank_at_one_iteration_and_the_run_resumes_exactly(tmp_path):
    command = [*JITPROP, *RUN, "--epochs", "100000", "--processes", "2", "--checkpoint", "c.npz"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # A session of its own: mpiexec passes Ctrl-C on to its whole process group, this test's too.
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        assert "data-parallel on 2 ranks" in proc.stdout.readline()
        while not proc.stdout.readline().split("/")[0].split() == ["epoch", "3"]:  # "epoch      3/100000 ..."
            assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGINT)  # mpiexec passes it to every rank
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Ctrl-C: interrupted" in err and "saved c.npz" in err  # the notice goes to stderr
    saved = jitprop.checkpoint.load(tmp_path / "c.npz")
    done = saved.meta["trainer"]["epoch"]  # epochs finished; an epoch stopped part-way continues from its iteration
    train("train", "--resume", "c.npz", "--epochs", str(done + 1), cwd=tmp_path)
    train(*RUN, "--epochs", str(done + 1), "--checkpoint", "straight.npz", cwd=tmp_path)
    assert_same_weights(tmp_path / "c.npz", tmp_path / "straight.npz")


def test_a_setup_error_on_rank_0_alone_is_one_line_and_every_rank_exits(tmp_path):
    # Only rank 0 writes, so only rank 0 checks the checkpoint's folder: the other ranks learn of it.
    proc = job(2, [*JITPROP, "train", "--checkpoint", str(tmp_path / "missing" / "m.npz")], tmp_path, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = stderr_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "missing" in lines[0], lines
    proc = job(2, [*JITPROP, "train", "--processes", "2"], tmp_path, timeout=60)
    assert proc.returncode == 1
    assert stderr_lines(proc) == ["Error: --processes starts its own ranks; under mpiexec, leave it out"]
