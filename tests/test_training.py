"""The training loop: batches, epochs, shuffling, validation, history, callbacks, determinism."""

import math

import numpy as np
import pytest

import jitprop
from conftest import spirals


def mlp(input_dim=2, hidden=32, classes=3, dtype="float32", seed=0, dropout=0.0):
    layers = [jitprop.layer("dense", units=hidden), "relu"]
    if dropout:
        layers.append(jitprop.layer("dropout", rate=dropout))
    layers += [jitprop.layer("dense", units=hidden), "relu", jitprop.layer("dense", units=classes)]
    return jitprop.Sequential(layers, input_dim=input_dim, dtype=dtype, seed=seed)


class Recorder:
    """Keeps a copy of the weights and logs after every epoch, and counts hook calls."""

    def __init__(self):
        self.params, self.logs, self.calls = [], [], {}

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    @jitprop.hookimpl
    def on_train_begin(self, trainer, logs):
        self._count("on_train_begin")

    @jitprop.hookimpl
    def on_epoch_begin(self, epoch):
        self._count("on_epoch_begin")

    @jitprop.hookimpl
    def on_epoch_end(self, trainer, epoch, logs):
        self._count("on_epoch_end")
        self.params.append(trainer.model.params.copy())
        self.logs.append(dict(logs))

    @jitprop.hookimpl
    def on_train_end(self):
        self._count("on_train_end")


def test_learns_spirals(spiral_data):
    X, y = spiral_data
    model = mlp(hidden=64)
    history = jitprop.fit(
        model, X, y, loss="cross_entropy", optimizer=jitprop.optimizer("adam", lr=0.01),
        epochs=150, batch_size=32, seed=1,
    )
    assert history.history["accuracy"][-1] >= 0.95
    assert jitprop.evaluate(model, X, y, loss="cross_entropy")["accuracy"] >= 0.95
    assert history.history["loss"][-1] < history.history["loss"][0] / 5


def test_float64_model_trains_too(spiral_data):
    X, y = spiral_data
    model = mlp(dtype="float64")
    h = jitprop.fit(model, X, y, loss="cross_entropy", optimizer="adam", epochs=5)
    assert model.params.dtype == np.float64
    assert h.history["loss"][-1] < h.history["loss"][0]


def test_same_seed_gives_bit_identical_weights(spiral_data):
    X, y = spiral_data
    runs = []
    for seed in (7, 7, 8):
        model = mlp(seed=3, dropout=0.2)
        jitprop.fit(model, X, y, loss="cross_entropy", epochs=3, batch_size=16, seed=seed, validation_split=0.2)
        runs.append(model.params.copy())
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_iterations_per_epoch_and_last_partial_batch():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(103, 2)), rng.normal(size=103)
    model = jitprop.Sequential([jitprop.layer("dense", units=1)], input_dim=2)
    trainer = jitprop.Trainer(model, "mse", "sgd", batch_size=10)
    history = trainer.fit(X, y, epochs=3)
    assert trainer.step == 33 and len(history.iteration_loss) == 33  # 10 full batches + 1 of 3 rows, per epoch
    assert history.epoch == [0, 1, 2]
    trainer = jitprop.Trainer(model, "mse", "sgd", batch_size=10, drop_last=True)
    assert len(trainer.fit(X, y, epochs=2).iteration_loss) == 20


def test_an_epoch_sees_every_example_once_in_a_new_order():
    # With lr=0 the weights never move, so the epoch's loss is the loss over
    # all data (every row counted once, the partial batch included), while
    # reshuffling changes which rows share a batch from epoch to epoch.
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(45, 3)), rng.integers(0, 3, size=45)
    model = mlp(input_dim=3)
    h = jitprop.fit(model, X, y, loss="cross_entropy", optimizer=jitprop.optimizer("sgd", lr=0.0), epochs=2, batch_size=8)
    full = jitprop.evaluate(model, X, y, loss="cross_entropy")
    assert h.history["loss"] == pytest.approx([full["loss"]] * 2, rel=1e-5)
    assert h.history["accuracy"] == pytest.approx([full["accuracy"]] * 2)
    first, second = h.iteration_loss[:6], h.iteration_loss[6:]
    assert first != second
    h = jitprop.fit(model, X, y, loss="cross_entropy", optimizer=jitprop.optimizer("sgd", lr=0.0), epochs=2, batch_size=8, shuffle=False)
    assert h.iteration_loss[:6] == h.iteration_loss[6:]


def test_validation_each_epoch_and_history_keys(spiral_data):
    X, y = spiral_data
    Xv, yv = spirals(30, seed=9)
    model = mlp()
    h = jitprop.fit(model, X, y, loss="cross_entropy", epochs=3, validation_data=(Xv, yv))
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert all(len(v) == 3 for v in h.history.values())
    final = jitprop.evaluate(model, Xv, yv, loss="cross_entropy")
    assert h.history["val_loss"][-1] == pytest.approx(final["loss"])
    assert h.history["val_accuracy"][-1] == pytest.approx(final["accuracy"])


def test_validation_split_holds_out_a_seeded_fraction(spiral_data):
    X, y = spiral_data
    trainer = jitprop.Trainer(mlp(), "cross_entropy", batch_size=30)
    trainer.fit(X, y, epochs=1, validation_split=0.2)
    assert trainer.step == 8  # 240 training rows / 30
    assert trainer.has_validation


def test_regression_logs_have_no_accuracy():
    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, size=(200, 1))
    y = np.sin(X)
    model = jitprop.Sequential([jitprop.layer("dense", units=32), "tanh", jitprop.layer("dense", units=1)], input_dim=1)
    h = jitprop.fit(model, X, y, loss="mse", optimizer=jitprop.optimizer("adam", lr=0.01), epochs=60, validation_split=0.25)
    assert set(h.history) == {"loss", "val_loss", "lr"}
    assert h.history["val_loss"][-1] < 0.05


def test_binary_classification_with_bce(spiral_data):
    X, y = spirals(100, classes=2)
    model = mlp(classes=1, hidden=32)
    h = jitprop.fit(model, X, y, loss="binary_cross_entropy", optimizer=jitprop.optimizer("adam", lr=0.01), epochs=100)
    assert h.history["accuracy"][-1] > 0.9


def test_lifecycle_hooks_fire_in_order_and_per_batch_only_when_implemented(spiral_data):
    X, y = spiral_data
    rec = Recorder()

    class BatchCounter:
        begun = ended = 0

        @jitprop.hookimpl
        def on_train_batch_begin(self, batch, logs):
            self.begun += 1

        @jitprop.hookimpl
        def on_train_batch_end(self, trainer, batch, logs):
            self.ended += 1
            assert logs["size"] > 0 and math.isfinite(logs["loss"])

    counter = BatchCounter()
    trainer = jitprop.Trainer(mlp(), "cross_entropy", batch_size=64, callbacks=[rec, counter])
    trainer.fit(X, y, epochs=2)
    assert rec.calls == {"on_train_begin": 1, "on_epoch_begin": 2, "on_epoch_end": 2, "on_train_end": 1}
    assert counter.begun == counter.ended == trainer.step == 10
    plain = jitprop.Trainer(mlp(), "cross_entropy", callbacks=[Recorder()])
    assert not plain.hook.on_train_batch_end.get_hookimpls()


def test_training_continues_where_it_stopped(spiral_data):
    X, y = spiral_data
    straight = mlp(dropout=0.1)
    jitprop.Trainer(straight, "cross_entropy", seed=4).fit(X, y, epochs=4)
    resumed = mlp(dropout=0.1)
    trainer = jitprop.Trainer(resumed, "cross_entropy", seed=4)
    trainer.fit(X, y, epochs=2)
    history = trainer.fit(X, y, epochs=4)
    assert np.array_equal(straight.params, resumed.params)
    assert history.epoch == [0, 1, 2, 3]


def test_on_after_backward_sees_gradients_before_the_transforms_and_the_update(spiral_data):
    X, y = spiral_data
    seen, updated = [], []

    class Spy:
        @jitprop.hookimpl
        def on_after_backward(self, trainer, grads):
            seen.append(float(np.linalg.norm(grads)))

        @jitprop.hookimpl
        def on_train_batch_end(self, trainer):
            updated.append(float(np.linalg.norm(trainer.model.grads)))  # what the optimizer used

    jitprop.fit(mlp(), X, y, loss="cross_entropy", epochs=1, batch_size=100,
                callbacks=[jitprop.callback("gradient_clipping", max_norm=0.01), Spy()])
    assert len(seen) == len(updated) == 3
    assert min(seen) > 0.01 and max(updated) <= 0.01 * (1 + 1e-5)


def test_early_stopping_restores_best_weights_whatever_ended_training(spiral_data):
    X, y = spiral_data
    for patience, epochs in ((1, 40), (100, 12)):  # stopped by itself / by running out of epochs
        rec = Recorder()
        stopper = jitprop.callback("early_stopping", monitor="val_loss", patience=patience, restore_best_weights=True)
        model = mlp(hidden=8)
        h = jitprop.fit(model, X, y, loss="cross_entropy", optimizer=jitprop.optimizer("sgd", lr=2.0),
                        epochs=epochs, validation_split=0.3, callbacks=[rec, stopper])
        best = int(np.argmin(h.history["val_loss"]))
        assert stopper.best_epoch == best
        assert np.array_equal(model.params, rec.params[best])
        if patience == 1:
            assert len(h.epoch) < epochs and len(h.epoch) == best + 2


def test_early_stopping_restores_when_another_callback_stops(spiral_data):
    X, y = spiral_data

    class StopAtTwo:
        @jitprop.hookimpl
        def on_epoch_end(self, trainer, epoch):
            if epoch == 2:
                trainer.stop_training = True

    rec = Recorder()
    stopper = jitprop.callback("early_stopping", monitor="loss", patience=50, restore_best_weights=True)
    model = mlp()
    h = jitprop.fit(model, X, y, loss="cross_entropy", optimizer=jitprop.optimizer("sgd", lr=5.0),
                    epochs=10, callbacks=[rec, stopper, StopAtTwo()])
    assert h.epoch == [0, 1, 2]
    assert np.array_equal(model.params, rec.params[int(np.argmin(h.history["loss"]))])


def test_early_stopping_patience_counts_epochs_without_improvement():
    stopper = jitprop.callback("early_stopping", monitor="val_accuracy", patience=2, min_delta=0.01)

    class FakeTrainer:
        stop_training = False
        metric_names = ["loss", "val_accuracy"]
        model = None

    t = FakeTrainer()
    stopper.on_train_begin(t)
    for epoch, acc in enumerate([0.5, 0.6, 0.605, 0.7, 0.7, 0.705]):
        stopper.on_epoch_end(t, epoch, {"val_accuracy": acc})
        if t.stop_training:
            break
    assert epoch == 5 and stopper.best_epoch == 3 and stopper.best_value == 0.7


def exploding(compiled=True, on_divergence="stop", device="cpu", lr=10.0, callbacks=()):
    """A regression that sgd at lr=10 sends to infinity within a few iterations."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 4)) * 100, rng.normal(size=64) * 1e3
    model = jitprop.Sequential([jitprop.layer("dense", units=16), jitprop.layer("dense", units=1)], input_dim=4)
    trainer = jitprop.Trainer(model, "mse", jitprop.optimizer("sgd", lr=lr), batch_size=4, on_divergence=on_divergence,
                              device=device, callbacks=callbacks)  # fmt: skip
    trainer.compiled = compiled
    return trainer, X, y


@pytest.mark.parametrize("compiled", [True, False])
def test_divergence_stops_before_the_update_and_names_where(compiled):
    trainer, X, y = exploding(compiled)
    h = trainer.fit(X, y, epochs=50)
    d = trainer.divergence
    assert d is not None and d["epoch"] == 1 and 1 < d["iteration"] < 16
    assert trainer.stop_reason.startswith(f"training diverged in epoch 1, iteration {d['iteration']}: ")
    assert "gradient of layer" in d["reason"] or "the loss became" in d["reason"]
    assert np.all(np.isfinite(trainer.model.params)) and np.all(np.isfinite(trainer.opt_state))
    assert len(h.iteration_loss) == 0 and not h.epoch  # the epoch never finished
    meta, arrays = trainer.state()
    assert meta["progress"]["batch"] == d["iteration"] - 1 and trainer.step == d["iteration"] - 1
    # The weights are exactly those after the last good update, as a per-batch hook recorded them.
    class Record:
        @jitprop.hookimpl
        def on_train_batch_end(self, trainer, batch, logs):
            self.params = trainer.model.params.copy()

    record = Record()
    again, _, _ = exploding(compiled, callbacks=[record])
    again.fit(X, y, epochs=50)
    assert again.divergence == d and np.array_equal(record.params, trainer.model.params)


def test_both_paths_stop_at_the_same_iteration_with_the_same_weights():
    results = []
    for compiled in (True, False):
        trainer, X, y = exploding(compiled)
        trainer.fit(X, y, epochs=5)
        results.append((trainer.divergence, trainer.model.params.copy()))
    assert results[0][0] == results[1][0]
    assert np.array_equal(results[0][1], results[1][1])


def test_a_poisoned_batch_is_caught_and_named():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, size=40)
    X[17] = 3e38  # finite in float32, but the first layer's products overflow
    model = jitprop.Sequential([jitprop.layer("dense", units=8), "relu", jitprop.layer("dense", units=2)], input_dim=3)
    before = model.params.copy()
    trainer = jitprop.Trainer(model, "cross_entropy", batch_size=8, shuffle=False)
    trainer.fit(X, y, epochs=3)
    assert trainer.divergence["iteration"] == 3  # rows 16..23: the third batch
    assert "layer 0 (dense)" in trainer.divergence["reason"] or "loss" in trainer.divergence["reason"]
    assert np.all(np.isfinite(model.params)) and not np.array_equal(model.params, before)


def test_rollback_restores_the_epoch_and_lowers_the_rate_until_training_holds():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 8)) * 3
    y = X @ rng.normal(size=(8, 1))
    model = jitprop.Sequential([jitprop.layer("dense", units=1)], input_dim=8)
    trainer = jitprop.Trainer(model, "mse", jitprop.optimizer("sgd", lr=0.5), batch_size=16, on_divergence="rollback")
    h = trainer.fit(X, y, epochs=3)
    assert trainer.rollbacks and trainer.divergence is None
    assert [r["lr"] for r in trainer.rollbacks] == pytest.approx([0.5 * 0.5 ** (i + 1) for i in range(len(trainer.rollbacks))])
    assert len(h.epoch) == 3 and all(math.isfinite(v) for v in h.history["loss"])
    assert trainer.optimizer.lr == trainer.rollbacks[-1]["lr"]


def test_rollback_gives_up_after_a_few_tries():
    trainer, X, y = exploding(on_divergence="rollback", lr=1e30)
    trainer.fit(X, y, epochs=3)
    assert len(trainer.rollbacks) == jitprop.training.trainer.MAX_ROLLBACKS
    assert "after 5 rollbacks" in trainer.stop_reason
    assert np.all(np.isfinite(trainer.model.params))


def test_on_divergence_must_be_known():
    with pytest.raises(jitprop.ConfigError, match="on_divergence must be one of stop, rollback"):
        exploding(on_divergence="pray")


def test_terminate_on_nan_watches_validation_too():
    stopper = jitprop.callback("terminate_on_nan")

    class T:
        stop_training, stop_reason = False, None

    t = T()
    stopper.on_epoch_end(t, 2, {"loss": 0.5, "val_loss": float("nan")})
    assert t.stop_training and t.stop_reason == "terminate_on_nan: val_loss became NaN or infinite in epoch 3"


def test_learning_rate_schedules():
    step = jitprop.schedule("step", step_size=2, gamma=0.5, warmup=2)
    assert [step(e, 1.0) for e in range(7)] == pytest.approx([1 / 3, 2 / 3, 1, 1, 0.5, 0.5, 0.25])
    exp = jitprop.schedule("exponential", gamma=0.9)
    assert [exp(e, 0.1) for e in range(3)] == pytest.approx([0.1, 0.09, 0.081])
    cos = jitprop.schedule("cosine", T_max=4, eta_min=0.01, warmup=1)
    expected = [0.5] + [0.01 + 0.99 * (1 + math.cos(math.pi * t / 4)) / 2 for t in (0, 1, 2, 3, 4, 4)]
    assert [cos(e, 1.0) for e in range(7)] == pytest.approx(expected)
    rng = np.random.default_rng(0)
    model = jitprop.Sequential([jitprop.layer("dense", units=1)], input_dim=2)
    h = jitprop.fit(model, rng.normal(size=(20, 2)), rng.normal(size=20), optimizer=jitprop.optimizer("sgd", lr=0.1),
                    epochs=4, lr_schedule=jitprop.schedule("step", step_size=1, gamma=0.5))
    assert h.history["lr"] == pytest.approx([0.1, 0.05, 0.025, 0.0125])


def test_initializers_he_before_relu_glorot_otherwise():
    model = jitprop.Sequential(
        [jitprop.layer("dense", units=400), "relu", jitprop.layer("dense", units=300), "tanh",
         jitprop.layer("dense", units=10, init="he_uniform")],
        input_dim=500, dtype="float64",
    )
    sd = model.state_dict()
    assert sd["0.weight"].std() == pytest.approx(math.sqrt(2 / 500), rel=0.02)  # He normal
    limit = math.sqrt(6 / (400 + 300))
    assert np.abs(sd["2.weight"]).max() <= limit and sd["2.weight"].std() == pytest.approx(limit / math.sqrt(3), rel=0.02)
    assert np.abs(sd["4.weight"]).max() <= math.sqrt(6 / 300)
    assert not sd["0.bias"].any()


def test_reduce_lr_on_plateau_lowers_the_rate_when_the_metric_stalls():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 2)), rng.normal(size=40)  # noise: the loss soon stops improving
    model = jitprop.Sequential([jitprop.layer("dense", units=1)], input_dim=2)
    plateau = jitprop.callback("reduce_lr_on_plateau", monitor="loss", patience=1, factor=0.5, min_delta=0.5)
    h = jitprop.fit(model, X, y, optimizer=jitprop.optimizer("sgd", lr=0.1), epochs=6, callbacks=[plateau])
    # Nothing improves by 0.5: the rate halves after every second epoch without improvement.
    assert h.history["lr"] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025])


def test_progress_bar_and_printer_callbacks_run_outside_a_terminal(capsys, spiral_data):
    from jitprop.cli import EpochPrinter, ProgressBar

    X, y = spiral_data
    jitprop.fit(mlp(), X, y, loss="cross_entropy", epochs=2, callbacks=[ProgressBar(2), EpochPrinter(2)])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines if "loss" in line] == ["1/2", "2/2"]


def test_history_lists_line_up_with_epochs_when_metrics_come_and_go():
    from conftest import spirals

    X, y = spirals(20)
    model = jitprop.Sequential([jitprop.layer("dense", units=3)], input_dim=2)
    trainer = jitprop.Trainer(model, "cross_entropy")
    trainer.fit(X, y, epochs=2)
    h = trainer.fit(X, y, epochs=3, validation_split=0.2)
    assert all(len(v) == 3 for v in h.history.values())
    assert math.isnan(h.history["val_loss"][0]) and math.isfinite(h.history["val_loss"][2])


def test_fit_warns_where_training_diverged():
    trainer, X, y = exploding()
    with pytest.warns(RuntimeWarning, match=r"training diverged in epoch 1, iteration \d+: .*last good ones"):
        jitprop.fit(trainer.model, X, y, loss="mse", optimizer=jitprop.optimizer("sgd", lr=10.0), batch_size=4, epochs=5)
