"""Long runs are flat: after the first epochs, resident memory and time per epoch stop growing,
with the history, callbacks (CSV log, checkpoint every epoch, early stopping) and caches at work.

Bounded to a few hundred epochs (well under a minute). The time check compares the fastest
epochs of an early and a late block (minima are robust to this machine's slow phases) and
only catches growth with the run's length, never measures speed.
"""

import gc
import os
import time

import numpy as np

import jitprop


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
