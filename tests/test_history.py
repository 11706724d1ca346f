"""The history: per-epoch columns that read as lists, iteration losses bounded by a window and a
summary, both kept exactly through checkpoints (format 2, arrays) and resumes."""

import copy
import json
import math
import pickle

import numpy as np
import pytest

import jitprop
from jitprop import checkpoint
from jitprop.training import history as history_module
from jitprop.training.history import Column, History, LossSummary


@pytest.fixture
def small_window(monkeypatch):
    """A window of 50 iterations folded 10 at a time into at most 8 blocks: a few epochs fill them."""
    monkeypatch.setattr(history_module, "ITERATION_WINDOW", 50)
    monkeypatch.setattr(history_module, "FOLD", 10)
    monkeypatch.setattr(history_module, "SUMMARY_BLOCKS", 8)


def test_a_column_reads_as_a_list():
    values = [0.5, 0.25, math.nan]
    c = Column(values)
    assert c == values and values == c and c != [0.5, 0.25] and c != [0.5, 0.25, 1.0]
    assert c[0] == 0.5 and type(c[0]) is float and c[:2] == [0.5, 0.25] and c[-2:] == Column(values[-2:])
    assert len(c) == 3 and list(c)[:2] == values[:2] and 0.25 in c and c.index(0.25) == 1
    assert json.loads(json.dumps(c.tolist()))[:2] == values[:2] and repr(c) == repr(values)
    assert c[:2] == pytest.approx([0.5, 0.25]) and int(np.argmin(c[:2])) == 1
    kept = np.asarray(c)  # a copy: the column still grows (a buffer view of array('d') would block it)
    c.append(1.0)
    assert kept.shape == (3,) and len(c) == 4
    assert pickle.loads(pickle.dumps(c)) == c and copy.deepcopy(c) == c
    epochs = Column(typecode="q")
    epochs.extend(np.arange(3))
    assert epochs == [0, 1, 2] and np.asarray(epochs).dtype == np.int64


def test_the_summary_keeps_each_block_mean_lowest_and_highest(small_window):
    rng = np.random.default_rng(0)
    x = rng.normal(size=1000)
    whole, pieces = LossSummary(), LossSummary()
    whole.add(x)
    i = 0
    while i < x.size:  # however the losses arrive, the blocks are the same
        k = int(rng.integers(1, 40))
        pieces.add(x[i : i + k])
        i += k
    assert len(whole) <= 8 and whole.count == 1000 and whole.block == 128
    blocks = [x[i : i + whole.block] for i in range(0, 1000, whole.block)]
    for s in (whole, pieces):
        assert s.block == whole.block and s.count == 1000
        np.testing.assert_allclose(s.mean, [b.mean() for b in blocks], rtol=1e-12)
        assert np.array_equal(s.low, [b.min() for b in blocks]) and np.array_equal(s.high, [b.max() for b in blocks])


def test_iteration_losses_beyond_the_window_go_to_the_summary(small_window):
    h = History()
    losses = np.linspace(10.0, 1.0, 1000)
    losses[37] = 99.0
    for i in range(0, 1000, 7):
        h.add_iterations(losses[i : i + 7])
    assert 50 <= len(h.iteration_loss) < 60 and h.iterations == 1000 and h.first_loss == 10.0
    assert h.iteration_loss == losses[h.iteration_summary.count :].tolist()
    iteration, loss, low, high = h.loss_curve()
    assert iteration[-1] == 1000 and np.all(np.diff(iteration) > 0) and np.all(low <= loss) and np.all(loss <= high)
    assert high.max() == 99.0 and h.highest_loss() == (99.0, 1, h.iteration_summary.block)  # iteration 38's block
    h.add_iterations([math.nan, 200.0])
    assert h.highest_loss() == (200.0, 1002, 1002)


def spirals_run(model=None, callbacks=()):
    model = model or jitprop.Sequential([jitprop.layer("dense", units=8), "tanh", jitprop.layer("dense", units=3)],
                                        input_dim=2, seed=3)  # fmt: skip
    return jitprop.Trainer(model, "cross_entropy", batch_size=32, callbacks=callbacks)


def test_a_resumed_run_keeps_the_same_window_and_summary(small_window, spiral_data, tmp_path):
    X, y = spiral_data
    straight = spirals_run()
    straight.fit(X, y, epochs=30, validation_split=0.2)
    part = spirals_run()
    part.fit(X, y, epochs=11, validation_split=0.2)
    checkpoint.save(tmp_path / "part.npz", part)
    saved = checkpoint.load(tmp_path / "part.npz")
    assert saved.meta["version"] == 2 and saved.meta["trainer"]["history"]["metrics"] == ["loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    assert "history" not in saved.meta["trainer"]["history"]  # no growing lists in the JSON document
    resumed = spirals_run(saved.build_model())
    resumed.load_state(*saved.trainer_state(resumed.model))
    resumed.fit(X, y, epochs=30, validation_split=0.2)
    a, b = straight.history, resumed.history
    assert a.iteration_summary.count > 0 and len(a.iteration_loss) < 60  # 240 iterations: folded several times
    assert a.history == b.history and a.epoch == b.epoch and a.iteration_loss == b.iteration_loss and a.first_loss == b.first_loss
    for name in ("mean", "low", "high"):
        assert np.array_equal(getattr(a.iteration_summary, name), getattr(b.iteration_summary, name)), name
    assert np.array_equal(straight.model.params, resumed.model.params)


def test_a_damaged_history_array_is_refused_in_one_line(spiral_data, tmp_path):
    X, y = spiral_data
    trainer = spirals_run()
    trainer.fit(X, y, epochs=2)
    path = tmp_path / "run.npz"
    checkpoint.save(path, trainer)
    with np.load(path) as f:
        entries = dict(f)
    for key in ("state/history", "state/epoch", "state/iteration_summary"):
        damaged = {**entries, key: entries[key] + 1 if entries[key].size else np.zeros((3, 1))}
        np.savez(tmp_path / "damaged.npz", **damaged)
        with pytest.raises(jitprop.DataError) as caught:
            checkpoint.load(tmp_path / "damaged.npz")
        assert str(caught.value) == f"{tmp_path / 'damaged.npz'}: checkpoint is corrupt (checksum mismatch)", key


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m, a: a.update({"state/history": a["state/history"][:, 1:]}), "the history arrays do not line up"),
        (lambda m, a: a.pop("state/epoch"), "no history arrays"),
        (lambda m, a: m["history"].update(metrics=["loss", "loss"]), "trainer.history.metrics must be distinct names"),
        (lambda m, a: m["history"].update(iterations_folded=5), "the iteration losses do not line up with their summary"),
        (lambda m, a: m["history"].update(iteration_block=0), "trainer.history's iteration counts are out of range"),
        (lambda m, a: m["history"].update(first_loss="1"), "trainer.history.first_loss is str"),
    ],
)
def test_a_resigned_history_that_does_not_fit_is_refused(spiral_data, tmp_path, edit, message):
    X, y = spiral_data
    trainer = spirals_run()
    trainer.fit(X, y, epochs=2)
    checkpoint.save(tmp_path / "run.npz", trainer)
    good = checkpoint.load(tmp_path / "run.npz")
    meta, arrays = json.loads(json.dumps(good.meta)), dict(good.arrays)
    edit(meta["trainer"], arrays)
    text = json.dumps(meta)
    np.savez(tmp_path / "bad.npz", meta=np.array(text), checksum=np.array(checkpoint._checksum(text, arrays)), **arrays)
    with pytest.raises(jitprop.DataError, match=f"not a checkpoint jitprop can use \\({message}"):
        checkpoint.load(tmp_path / "bad.npz")


def test_the_summary_passes_over_nan_and_a_word_in_the_logs_is_one_line():
    from types import SimpleNamespace

    summary = LossSummary(block=4)
    summary.add([1.0, float("nan"), 3.0, 2.0, 5.0])  # a diverged batch leaves a NaN
    assert list(summary.low) == [1.0, 5.0] and list(summary.high) == [3.0, 5.0] and np.isnan(summary.mean[0])
    history = History()
    trainer = SimpleNamespace(batch_losses=np.ones(2), batches_done=2)
    with pytest.raises(jitprop.ConfigError, match="epoch 1's logs hold note='fine': the history keeps numbers only"):
        history.on_epoch_end(trainer=trainer, epoch=0, logs={"loss": 0.5, "note": "fine"})
    assert len(history.epoch) == 0 and "loss" not in history.history  # nothing half-recorded
