"""Gradient transforms: the compiled slot between backward and update, its statistics, its CUDA side."""

import numpy as np
import pytest
from numba import njit

import jitprop
import jitprop.backends.base
from conftest import spirals


@njit(cache=True)
def squares_kernel(g, p, offsets, lr, h, stats):
    """A measuring transform for these tests: per layer, the batches seen and the sum of |g|^2."""
    for layer in range(offsets.shape[0] - 1):
        total = 0.0
        for i in range(offsets[layer], offsets[layer + 1]):
            total += np.float64(g[i]) * g[i]
        stats[layer, 0] += 1.0
        stats[layer, 1] += total


class Squares(jitprop.GradientTransform):
    name = "squares_test"
    stat_names = ("batches", "squares")
    kernel = staticmethod(squares_kernel)


def model(seed=0):
    return jitprop.Sequential([jitprop.layer("dense", units=6), "tanh", jitprop.layer("dropout", rate=0.2),
                               jitprop.layer("dense", units=3)], input_dim=2, seed=seed)  # fmt: skip


def reference_clip(g, max_norm=None, clip_value=None):
    """torch.nn.utils.clip_grad_value_ then clip_grad_norm_, on one flat float64 array."""
    g = np.array(g, dtype=np.float64)
    if clip_value is not None:
        g = np.clip(g, -clip_value, clip_value)
    if max_norm is not None:
        norm = np.sqrt(np.sum(g * g))
        if norm > max_norm:
            g = g * (max_norm / (norm + 1e-6))
    return g


@pytest.mark.parametrize("options", [{"max_norm": 0.5}, {"max_norm": None, "clip_value": 0.1},
                                     {"max_norm": 0.3, "clip_value": 0.2}, {"max_norm": 1e9}])  # fmt: skip
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_clipping_is_torchs_clip_by_value_then_by_norm(options, dtype):
    tr = jitprop.transform("gradient_clipping", **options)
    g = np.random.default_rng(1).normal(0, 0.3, 37).astype(dtype)
    expect = reference_clip(g, options.get("max_norm"), options.get("clip_value"))
    offsets = np.array([0, 12, 12, 37], np.int64)
    tr.kernel(g, np.zeros_like(g), offsets, 0.1, tr.hyper(), np.zeros((3, 0)))
    np.testing.assert_allclose(g, expect, rtol=1e-6 if dtype == np.float32 else 1e-14)


def test_gradient_clipping_needs_a_limit():
    with pytest.raises(jitprop.ConfigError, match="give max_norm, clip_value or both"):
        jitprop.transform("gradient_clipping", max_norm=None)
    with pytest.raises(jitprop.ConfigError, match="max_norm must be a number"):
        jitprop.transform("gradient_clipping", max_norm=-1)


def test_weight_decay_is_the_gradient_of_an_l2_penalty_on_weights_alone():
    """g + rate * W for weights, g for biases (decay_bias=False): the gradient of loss + rate/2 * sum(W^2),
    by central differences in float64."""
    X, y = spirals(12)
    m = jitprop.Sequential([jitprop.layer("dense", units=5), "tanh", jitprop.layer("dense", units=3)],
                           input_dim=2, dtype="float64", seed=2)  # fmt: skip
    rate = 0.3
    tr = jitprop.transform("weight_decay", rate=rate, decay_bias=False)
    tr.setup(m)

    def penalised(params):
        m.params[...] = params
        value, _ = jitprop.value_and_grad(m, "cross_entropy", X, y)
        weights = [w for k, w in m.parameters().items() if k.endswith("weight")]
        return value + rate / 2 * sum(float(np.sum(w * w)) for w in weights)

    p0 = m.params.copy()
    _, grads = jitprop.value_and_grad(m, "cross_entropy", X, y)
    g = np.concatenate([grads[k].ravel() for k in m.state_dict()])
    tr.kernel(g, m.params, m.offsets, 0.1, tr.hyper(), np.zeros((3, 0)))
    eps, numeric = 1e-6, np.zeros_like(p0)
    for i in range(p0.size):
        step = np.zeros_like(p0)
        step[i] = eps
        numeric[i] = (penalised(p0 + step) - penalised(p0 - step)) / (2 * eps)
    np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-9)
    biases = np.concatenate([np.arange(*m.param_ranges()[k]) for k in ("0.bias", "2.bias")])
    np.testing.assert_array_equal(g[biases], np.concatenate([grads["0.bias"], grads["2.bias"]]))


def test_weight_decay_on_every_parameter_trains_as_sgds_own_weight_decay():
    X, y = spirals(30)
    runs = []
    for opt, transforms in [(jitprop.optimizer("sgd", lr=0.2, momentum=0.9, weight_decay=0.01), []),
                            (jitprop.optimizer("sgd", lr=0.2, momentum=0.9), [jitprop.transform("weight_decay", rate=0.01)])]:
        m = jitprop.Sequential([jitprop.layer("dense", units=6), "tanh", jitprop.layer("dense", units=3)],
                               input_dim=2, dtype="float64", seed=3)  # fmt: skip
        jitprop.Trainer(m, "cross_entropy", opt, batch_size=8, transforms=transforms).fit(X, y, epochs=2)
        runs.append(m.params.copy())
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop", "adagrad"])
def test_an_optimizers_decay_bias_false_is_the_weight_decay_transform_run_last(name):
    """decay_bias=false: the kernel decays nothing, the weight_decay transform decays all but the biases,
    after the run's own transforms (a clip sees the gradient without the decay, as with torch's)."""
    X, y = spirals(30)
    runs = []
    clip = {"name": "gradient_clipping", "max_norm": 0.5}
    for opt, transforms in [(jitprop.optimizer(name, lr=0.05, weight_decay=0.3, decay_bias=False), [jitprop.transform(**clip)]),
                            (jitprop.optimizer(name, lr=0.05), [jitprop.transform(**clip),
                                                                jitprop.transform("weight_decay", rate=0.3, decay_bias=False)])]:
        m = jitprop.Sequential([jitprop.layer("dense", units=6), "tanh", jitprop.layer("dense", units=3)],
                               input_dim=2, dtype="float64", seed=3)  # fmt: skip
        t = jitprop.Trainer(m, "cross_entropy", opt, batch_size=8, transforms=transforms)
        t.fit(X, y, epochs=2)
        runs.append(m.params.copy())
    assert [tr.name for tr in t.transforms] == ["gradient_clipping", "weight_decay"]
    np.testing.assert_array_equal(runs[0], runs[1])
    with pytest.raises(jitprop.ConfigError, match="adamw's is decoupled"):
        jitprop.optimizer("adamw", decay_bias=False)
    assert jitprop.optimizer("adam", weight_decay=0.1).decay_transform() is None


def test_weight_decay_options_are_checked_in_one_line():
    with pytest.raises(jitprop.ConfigError, match="decay_bias must be true or false"):
        jitprop.transform("weight_decay", decay_bias="no")
    with pytest.raises(jitprop.ConfigError, match="rate must be a number"):
        jitprop.transform("weight_decay", rate=-1.0)


def fit(compiled, transforms=(), callbacks=(), epochs=3, seed=0, **kw):
    X, y = spirals(30)
    m = model(seed)
    t = jitprop.Trainer(m, "cross_entropy", jitprop.optimizer("sgd", lr=0.3, momentum=0.9), batch_size=8,
                        transforms=transforms, callbacks=callbacks, **kw)  # fmt: skip
    t.compiled = compiled
    t.fit(X, y, epochs=epochs)
    return t


def clipped(compiled, callbacks=(), epochs=3):
    """A run with a measuring transform, gradient_norms, and a clip (the callback's): one program for the tests."""
    return fit(compiled, transforms=[Squares(), "gradient_norms"], epochs=epochs,
               callbacks=[jitprop.callback("gradient_clipping", max_norm=0.2), *callbacks])  # fmt: skip


def test_transforms_run_compiled_with_the_python_loops_numbers():
    fast, slow = clipped(True), clipped(False)
    assert fast.backend.name == "compiled" and slow.backend.name == "python"
    assert np.array_equal(fast.model.params, slow.model.params)
    for a, b in zip(fast.transforms[:2], slow.transforms[:2]):
        assert len(a.history) == 3
        np.testing.assert_equal(a.history, b.history)
    # The transforms see the gradients before the clip, which follows them: it did something.
    assert max(h["grad_norm_max"].max() for h in fast.transforms[1].history) > 0.2


def test_statistics_add_up_each_epochs_gradients_per_layer():
    """The transform sees each batch's gradients before the update; on_after_backward records the same."""

    class Record:
        def __init__(self):
            self.epochs = []

        @jitprop.hookimpl
        def on_epoch_begin(self):
            self.epochs.append([])

        @jitprop.hookimpl
        def on_after_backward(self, trainer, grads):
            m = trainer.model
            self.epochs[-1].append([float(np.sum(np.float64(grads[a:b]) ** 2)) for a, b in zip(m.offsets, m.offsets[1:])])

    record = Record()
    measured = fit(False, transforms=[Squares()], callbacks=[record])
    compiled = fit(True, transforms=[Squares()])
    for epoch, stats in enumerate(compiled.transforms[0].history):
        expect = np.array(record.epochs[epoch])
        assert np.all(stats[:, 0] == len(expect))  # every layer, every batch of the epoch
        np.testing.assert_allclose(stats[:, 1], expect.sum(axis=0), rtol=1e-12)
    assert stats[1, 1] == 0 and stats[0, 1] > 0  # tanh has no parameters
    np.testing.assert_equal(measured.transforms[0].history, compiled.transforms[0].history)


def test_gradient_norms_report_per_layer_means_and_update_ratio():
    class Record:  # each batch's gradients and weights, as the transform sees them
        batches = []

        @jitprop.hookimpl
        def on_after_backward(self, trainer, grads):
            m = trainer.model
            self.batches.append([(np.linalg.norm(np.float64(grads[a:b])), np.linalg.norm(np.float64(m.params[a:b])))
                                 for a, b in zip(m.offsets, m.offsets[1:])])  # fmt: skip

    record = Record()
    clipped(False, callbacks=[record], epochs=1)
    t = clipped(True, epochs=1)
    h = t.transforms[1].history[0]
    norms = np.array(record.batches)  # (batches, layers, [grad, weight])
    assert set(h) == {"grad_norm", "grad_norm_max", "weight_norm", "step_ratio"}
    np.testing.assert_allclose(h["grad_norm"], norms[:, :, 0].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(h["grad_norm_max"], norms[:, :, 0].max(axis=0), rtol=1e-12)
    np.testing.assert_allclose(h["weight_norm"], norms[:, :, 1].mean(axis=0), rtol=1e-12)
    ratio = np.divide(0.3 * norms[:, :, 0], norms[:, :, 1], out=np.zeros(norms.shape[:2]), where=norms[:, :, 1] > 0)
    np.testing.assert_allclose(h["step_ratio"], ratio.mean(axis=0), rtol=1e-12)
    assert h["grad_norm"][1] == 0 and h["grad_norm"][0] > 0  # tanh has no parameters


@pytest.mark.parametrize("compiled", [True, False])
def test_a_diverged_batch_leaves_no_statistics_behind(compiled):
    rng = np.random.default_rng(0)  # the regression test_training.exploding sends to infinity
    X, y = rng.normal(size=(64, 4)) * 100, rng.normal(size=64) * 1e3
    m = jitprop.Sequential([jitprop.layer("dense", units=16), jitprop.layer("dense", units=1)], input_dim=4)
    trainer = jitprop.Trainer(m, "mse", jitprop.optimizer("sgd", lr=10.0), batch_size=4, transforms=[Squares()])
    trainer.compiled = compiled
    trainer.fit(X, y, epochs=5)
    good = trainer.divergence["iteration"] - 1
    assert 0 < good and np.all(trainer.transform_stats[0][:, 0] == good)  # the bad batch is not counted
    assert np.all(np.isfinite(trainer.stats))


def test_an_interrupted_epoch_resumes_with_its_statistics(monkeypatch):
    monkeypatch.setattr(jitprop.backends.base, "CHUNK_SECONDS", 1e-9)  # a batch a call from the second on

    class InterruptOnce:
        fired = False

        @jitprop.hookimpl
        def on_train_chunk_end(self, trainer, batches_done):
            if trainer.epoch == 1 and batches_done == 9 and not self.fired:
                self.fired = True
                trainer.request_interrupt()

    straight = fit(True, transforms=[Squares()])
    t = fit(True, transforms=[Squares()], callbacks=[InterruptOnce()])
    assert t.interrupted
    meta, arrays = t.end_state
    again = jitprop.Trainer(model(5), "cross_entropy", jitprop.optimizer("sgd", lr=0.3, momentum=0.9), batch_size=8,
                            transforms=[Squares()])  # fmt: skip
    again.load_state(meta, arrays)
    X, y = spirals(30)
    again.fit(X, y, epochs=3)
    assert np.array_equal(again.model.params, straight.model.params)
    np.testing.assert_equal(again.transforms[0].history, straight.transforms[0].history[1:])


def test_the_command_line_takes_transforms_and_keeps_them_in_the_run(tmp_path):
    from click.testing import CliRunner

    from jitprop.cli import cli

    path = tmp_path / "m.npz"
    args = ["train", "--dataset", "spirals", "--hidden", "4", "--epochs", "1", "--checkpoint", str(path),
            "--transform", "gradient_clipping:max_norm=0.5,clip_value=0.1"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    config = jitprop.checkpoint.load(path).info["config"]
    assert config["transforms"] == [{"name": "gradient_clipping", "max_norm": 0.5, "clip_value": 0.1}]
    listed = CliRunner().invoke(cli, ["list", "transforms"]).output
    assert "gradient_clipping" in listed and "gradient_norms" in listed
    bad = CliRunner().invoke(cli, ["train", "--transform", "gradient_clip"])
    assert bad.exit_code != 0 and "did you mean 'gradient_clipping'" in bad.output
