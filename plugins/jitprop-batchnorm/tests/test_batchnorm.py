"""The batch_norm plugin against float64 references, through the real entry point."""

import os
import subprocess
import sys

os.environ["JITPROP_LOAD_PLUGINS"] = "batch_norm"  # only this plugin, found through its entry point

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import jitprop  # noqa: E402
from jitprop.gradcheck import check_layer  # noqa: E402
from jitprop.registry import lookup  # noqa: E402

JITPROP = os.path.join(os.path.dirname(sys.executable), "jitprop")


def reference_forward(x, weight, bias, mean_run, var_run, training, momentum=0.1, eps=1e-5):
    """torch.nn.BatchNorm1d's forward in float64 NumPy: (out, new running mean, new running var)."""
    if training:
        mean, var = x.mean(axis=0), x.var(axis=0)
        n = x.shape[0]
        mean_run = (1 - momentum) * mean_run + momentum * mean
        var_run = (1 - momentum) * var_run + momentum * (var * n / (n - 1))
    else:
        mean, var = mean_run, var_run
    return weight * (x - mean) / np.sqrt(var + eps) + bias, mean_run, var_run


def test_the_entry_point_registers_batch_norm():
    assert lookup("layer", "batch_norm").plugin == "batch_norm"
    layer = jitprop.layer("batch_norm", momentum=0.2)
    assert layer.config() == {"momentum": 0.2, "eps": 1e-5}


@pytest.mark.parametrize("batch, width", [(1, 3), (2, 1), (4, 5), (7, 3), (33, 17)])
def test_gradients_match_finite_differences(batch, width):
    errors = check_layer("batch_norm", in_dim=width, batch=batch)
    assert max(errors.values()) < 1e-6, errors


def test_forward_and_running_statistics_match_the_reference():
    rng = np.random.default_rng(0)
    model = jitprop.Sequential([jitprop.layer("batch_norm", momentum=0.3)], input_dim=4, dtype="float64")
    params = model.parameters()
    params["0.weight"][...] = rng.normal(size=4)
    params["0.bias"][...] = rng.normal(size=4)
    w, b = params["0.weight"].copy(), params["0.bias"].copy()
    mean_run, var_run = np.zeros(4), np.ones(4)
    ws = model.workspace(6, training=True)
    for step in range(3):
        x = rng.normal(2.0, 3.0, size=(6, 4))
        acts, caches, _ = ws.views(6)
        acts[0][...] = x
        out = model.forward(acts, caches, training=True)
        expect, mean_run, var_run = reference_forward(x, w, b, mean_run, var_run, True, momentum=0.3)
        np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12)
    buffers = model.buffers()
    np.testing.assert_allclose(buffers["0.running_mean"], mean_run, rtol=1e-12)
    np.testing.assert_allclose(buffers["0.running_var"], var_run, rtol=1e-12)
    assert buffers["0.num_batches_tracked"] == 3
    x = rng.normal(size=(5, 4))
    expect, _, _ = reference_forward(x, w, b, mean_run, var_run, False)
    np.testing.assert_allclose(model.predict(x), expect, rtol=1e-12, atol=1e-12)  # inference: running statistics
    np.testing.assert_allclose(model.predict(x[:1]), expect[:1], rtol=1e-12, atol=1e-12)  # one row alone too


def spiral_model(seed=0):
    return jitprop.Sequential(
        [jitprop.layer("dense", units=16), "batch_norm", "relu", jitprop.layer("dense", units=3)],
        input_dim=2, seed=seed, dtype="float64")  # fmt: skip


def spirals(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X, y = [], []
    for c in range(3):
        r = np.linspace(0.05, 1, n)
        t = np.linspace(c * 4, (c + 1) * 4, n) + rng.normal(size=n) * 0.2
        X.append(np.c_[r * np.sin(t), r * np.cos(t)])
        y.append(np.full(n, c))
    return np.concatenate(X), np.concatenate(y)


def test_training_learns_and_the_optimizer_never_touches_the_statistics():
    X, y = spirals()
    model = spiral_model()
    # AdamW's decoupled weight decay would shrink anything it sees: the counter proves it sees no state.
    history = jitprop.fit(model, X, y, loss="cross_entropy", optimizer=jitprop.optimizer("adamw", lr=0.02, weight_decay=0.1),
                          epochs=30, batch_size=30)  # fmt: skip
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert model.buffers()["1.num_batches_tracked"] == 30 * 6
    assert model.n_params == 2 * 16 + 16 + 2 * 16 + 16 * 3 + 3  # running statistics are not parameters


def two_norms_model():
    """Two batch_norm layers of other widths: each finds its own running state in the flat buffer."""
    return jitprop.Sequential(
        [jitprop.layer("dense", units=16), "batch_norm", "relu", jitprop.layer("dense", units=8), "batch_norm", "tanh",
         jitprop.layer("dense", units=3)], input_dim=2, dtype="float64")  # fmt: skip


@pytest.mark.parametrize("build", [spiral_model, two_norms_model])
def test_the_compiled_step_and_the_python_loop_agree_bit_for_bit(build):
    X, y = spirals()
    results = []
    for compiled in (True, False):
        model = build()
        trainer = jitprop.Trainer(model, "cross_entropy", "adam", batch_size=32)
        trainer.compiled = compiled
        trainer.fit(X, y, epochs=3, validation_split=0.2)
        results.append((model.params.copy(), model.state.copy(), trainer.history.history["val_loss"]))
    (p1, s1, v1), (p2, s2, v2) = results
    assert np.array_equal(p1, p2) and np.array_equal(s1, s2) and v1 == v2


RUN = """
dataset = "spirals"
epochs = {epochs}
batch_size = 16
[loss]
name = "cross_entropy"
[optimizer]
name = "adam"
lr = 0.01
[[layers]]
name = "dense"
units = 16
[[layers]]
name = "batch_norm"
[[layers]]
name = "relu"
[[layers]]
name = "dense"
units = 3
"""


def jitprop_cli(*args, cwd):
    env = {**os.environ, "JITPROP_LOAD_PLUGINS": "batch_norm"}
    return subprocess.run([JITPROP, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_running_statistics_live_in_checkpoints_and_resume_exactly(tmp_path):
    (tmp_path / "run4.toml").write_text(RUN.format(epochs=4))
    (tmp_path / "run2.toml").write_text(RUN.format(epochs=2))
    out = jitprop_cli("train", "--config", "run4.toml", "--checkpoint", "straight.npz", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    out = jitprop_cli("train", "--config", "run2.toml", "--checkpoint", "half.npz", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    out = jitprop_cli("train", "--resume", "half.npz", "--epochs", "4", "--checkpoint", "resumed.npz", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    straight = jitprop.checkpoint.load(tmp_path / "straight.npz")
    resumed = jitprop.checkpoint.load(tmp_path / "resumed.npz")
    a, b = straight.state_dict(), resumed.state_dict()
    assert "1.running_mean" in a and "1.running_var" in a and a["1.num_batches_tracked"] > 0
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    model = straight.build_model()  # weights and statistics come back together
    assert np.array_equal(model.buffers()["1.running_var"], a["1.running_var"])
    out = jitprop_cli("evaluate", "straight.npz", cwd=tmp_path)
    assert out.returncode == 0 and "accuracy" in out.stdout, out.stderr
