"""Long runs are flat: after the first epochs, resident memory and time per epoch stop growing,
with the history, callbacks (CSV log, checkpoint every epoch, early stopping) and caches at work.

The first test is bounded to a few hundred epochs (well under a minute) and runs with the suite.
The two marked ``soak`` run for real lengths (issue 18: a 330,000-epoch run grew by 93 MB, and a
checkpoint every epoch slowed it five-fold): 100,000 epochs of a tiny data set, and 5,000 epochs
with a checkpoint each. The suite leaves them out (pyproject's ``-m "not soak"``); ``.ci/run`` runs
them on their own, ``pytest -n 0 -m soak tests/test_soak.py``.

The time checks compare the fastest epochs of an early and a late block (minima are robust to
this machine's slow phases) and only catch growth with the run's length, never measure speed.
"""

import gc
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import jitprop
from jitprop.training import history as history_module


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class EpochTimes:
    def __init__(self):
        self.times, self._start = [], 0.0

    @jitprop.hookimpl
    def on_epoch_begin(self):
        self._start = time.perf_counter()

    @jitprop.hookimpl
    def on_epoch_end(self):
        self.times.append(time.perf_counter() - self._start)


def test_memory_and_epoch_time_stay_flat_over_a_long_run(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1200, 32)).astype(np.float32)
    y = (X[:, :4].sum(axis=1) > 0).astype(np.int64) + 2 * (X[:, 4] > 0)
    model = jitprop.Sequential([jitprop.layer("dense", units=32), "relu", jitprop.layer("dropout", rate=0.1),
                                jitprop.layer("dense", units=4)], input_dim=32)  # fmt: skip
    timer = EpochTimes()
    callbacks = [
        jitprop.callback("csv_logger", filename=str(tmp_path / "log.csv")),
        jitprop.callback("model_checkpoint", filepath=str(tmp_path / "ck.npz")),
        jitprop.callback("early_stopping", patience=10**6, restore_best_weights=True),
        jitprop.callback("reduce_lr_on_plateau", patience=10**6),
        timer,
    ]
    trainer = jitprop.Trainer(model, "cross_entropy", batch_size=64, callbacks=callbacks)
    Xv, yv = X[:200], y[:200]
    blocks, per_block = 10, 40
    rss = []
    for block in range(1, blocks + 1):
        trainer.fit(X[200:], y[200:], epochs=block * per_block, validation_data=(Xv, yv))
        gc.collect()
        rss.append(rss_bytes())
    assert len(trainer.history.epoch) == blocks * per_block
    growth = rss[-1] - rss[1]  # from the end of block 2: caches, workspaces and compiled code are in by then
    assert growth < 4 * 2**20, [r // 2**20 for r in rss]
    early = min(timer.times[per_block : 2 * per_block])
    late = min(timer.times[-per_block:])
    assert late < 2.0 * early + 0.002, (early, late)


class Soak:
    """Each epoch's time into an array allocated up front, and resident memory ten times a run
    (a list of 100,000 times would itself grow the memory measured)."""

    def __init__(self, epochs):
        self.times, self.rss, self.every, self._start = np.zeros(epochs), [], epochs // 10, 0.0

    @jitprop.hookimpl
    def on_epoch_begin(self):
        self._start = time.perf_counter()

    @jitprop.hookimpl
    def on_epoch_end(self, epoch):
        self.times[epoch] = time.perf_counter() - self._start
        if (epoch + 1) % self.every == 0:
            gc.collect()
            self.rss.append(rss_bytes())


def soak(epochs, n_rows, batch_size, callbacks=()):
    """Train a tiny model for ``epochs`` on ``n_rows`` rows (and 8 for validation): the run's trainer and its Soak."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_rows + 8, 2)).astype(np.float32)
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    model = jitprop.Sequential([jitprop.layer("dense", units=4), "relu", jitprop.layer("dense", units=2)],
                               input_dim=2, dtype="float32", seed=0)  # fmt: skip
    watch = Soak(epochs)
    trainer = jitprop.Trainer(model, "cross_entropy", batch_size=batch_size, callbacks=[*callbacks, watch])
    trainer.fit(X[8:], y[8:], epochs=epochs, validation_data=(X[:8], y[:8]))
    return trainer, watch


def check_flat(trainer, watch, slack_mb, time_factor, time_slack):
    """Memory from the first tenth of the run on grows by no more than the per-epoch history it keeps
    (8 bytes a metric and the epoch number, twice that for the arrays' reallocation), plus
    ``slack_mb``; the fastest late epochs take at most ``time_factor`` times the fastest early ones,
    plus ``time_slack`` seconds."""
    epochs = len(watch.times)
    kept = 8 * (len(trainer.history.history) + 1) * (epochs - watch.every)
    growth = watch.rss[-1] - watch.rss[0]
    assert growth < 2 * kept + slack_mb * 2**20, (f"{growth / 2**20:.1f} MB grown over {epochs - watch.every} epochs",
                                                  [f"{r / 2**20:.1f}" for r in watch.rss])  # fmt: skip
    early = watch.times[watch.every : 2 * watch.every].min()
    late = watch.times[-watch.every :].min()
    assert late < time_factor * early + time_slack, (f"{early * 1e6:.0f} us", f"{late * 1e6:.0f} us")


@pytest.mark.soak
def test_a_hundred_thousand_epochs_stay_flat():
    """16 iterations an epoch: 1.6 million iterations, whose losses stay within the window and summary."""
    epochs = 100_000
    trainer, watch = soak(epochs, n_rows=64, batch_size=4)
    h = trainer.history
    assert len(h.epoch) == epochs and h.iterations == trainer.step == 16 * epochs
    assert len(h.iteration_loss) < history_module.ITERATION_WINDOW + history_module.FOLD
    assert len(h.iteration_summary) <= history_module.SUMMARY_BLOCKS
    check_flat(trainer, watch, slack_mb=3, time_factor=1.5, time_slack=50e-6)


@pytest.mark.soak
def test_five_thousand_epochs_with_a_checkpoint_each_stay_flat(tmp_path):
    """Each save rewrites the whole checkpoint: its history must be cheap to write, not JSON that grows.
    Written to memory (/dev/shm) where there is one, so the disk's fsync does not drown the save's own work."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path) as where:
        path = Path(where) / "run.npz"
        trainer, watch = soak(5_000, n_rows=32, batch_size=8, callbacks=[jitprop.callback("model_checkpoint", filepath=str(path))])
        saved = jitprop.checkpoint.load(path)
    assert saved.history["epoch"] == list(range(5_000)) and saved.history["history"]["loss"] == trainer.history.history["loss"]
    # A save still writes the per-epoch history (8 bytes a value) and up to 110,000 iteration losses.
    check_flat(trainer, watch, slack_mb=3, time_factor=2.0, time_slack=1e-3)
