"""The coach: statistics gathered in the compiled step against an independent NumPy account of the
same batches, and the findings it gives runs built to show each problem."""

import json
import math

import numpy as np
import pytest

import jitprop
from jitprop.backends.base import epoch_order
from jitprop.data.tables import load_table
from jitprop.model.architectures import mlp
from jitprop.model.sequential import Workspace

from test_cli import run


@pytest.fixture(scope="module")
def digits():
    t = load_table("digits")
    X = t.X.astype(np.float32)
    return (X - X.mean(0)) / (X.std(0) + 1e-8), t.y


def model_of(hidden, activation="relu", seed=0, dtype="float32"):
    return jitprop.Sequential([jitprop.layer(**s) for s in mlp(10, hidden, activation, 0.0)], input_dim=64, seed=seed, dtype=dtype)


def coached(model, optimizer="adam", compiled=False, epochs=1, **fit):
    trainer = jitprop.Trainer(model, "cross_entropy", optimizer, batch_size=32, callbacks=["coach"], seed=0)
    trainer.compiled = compiled
    return trainer, trainer.fit(*fit.pop("data"), epochs=epochs, **fit)


class Recorder(jitprop.Callback):
    """Each batch's weights before its update and its gradient: what the NumPy account needs."""

    name = "recorder"

    def __init__(self):
        self.params, self.grads = [], []

    @jitprop.hookimpl
    def on_after_backward(self, trainer, grads):
        self.params.append(trainer.model.params.copy())
        self.grads.append(grads.copy())


def relu_then_tanh(dtype="float64"):
    """Both kinds of activation statistics in one model (one compile of the coach for both tests)."""
    return jitprop.Sequential([jitprop.layer("dense", units=24), "relu", jitprop.layer("dense", units=12), "tanh",
                               jitprop.layer("dense", units=10)], input_dim=64, seed=0, dtype=dtype)  # fmt: skip


def test_statistics_match_a_numpy_account_of_the_same_batches(digits):
    X, y = digits[0][:300], digits[1][:300]
    model = relu_then_tanh()
    recorder = Recorder()
    trainer = jitprop.Trainer(model, "cross_entropy", "adam", batch_size=32, callbacks=["coach", recorder], seed=0)
    start = model.params.copy()
    trainer.fit(X, y, epochs=1)
    record = trainer.history.coach[0]["layers"]
    order = np.zeros(len(X), np.int64)
    epoch_order(0, 0, True, order)
    for i, rec in enumerate(record):
        a, b = model.offsets[i], model.offsets[i + 1]
        if b > a:
            norms = [np.linalg.norm(g[a:b]) for g in recorder.grads]
            assert math.isclose(rec["grad_norm"], np.mean(norms), rel_tol=1e-9)
            assert math.isclose(rec["grad_norm_max"], max(norms), rel_tol=1e-9)
            assert math.isclose(rec["grad_rms"], np.mean(norms) / math.sqrt(b - a), rel_tol=1e-9)
            ratios = []  # the update made before each batch: none before the first of the fit
            for before, now in zip([start] + recorder.params[:-1], recorder.params):
                d = now[a:b] - before[a:b]
                if d.std() > 0:
                    ratios.append(math.log10(d.std() / now[a:b].std()))
            assert len(ratios) == len(recorder.params) - 1
            assert math.isclose(rec["update_ratio_log10"], np.mean(ratios), rel_tol=1e-9)
    # Each batch's activations, from its weights: the ReLU's zeros and units that never fired, tanh's saturation.
    twin = relu_then_tanh()
    zeros, fired, saturated = [], np.zeros(24, bool), []
    for k, params in enumerate(recorder.params):
        rows = order[k * 32 : (k + 1) * 32]
        twin.params[...] = params
        acts, caches, _ = Workspace(twin, len(rows), training=False).views(len(rows))
        acts[0][...] = X[rows]
        twin.forward(acts, caches)
        zeros.append(np.mean(acts[2] <= 0))
        fired |= (acts[2] > 0).any(axis=0)
        saturated.append(np.mean(np.abs(acts[4]) > 0.97))
    assert math.isclose(record[1]["zero_fraction"], np.mean(zeros), rel_tol=1e-12)
    assert record[1]["dead_fraction"] == 1 - fired.mean()
    assert math.isclose(record[3]["saturated_fraction"], np.mean(saturated), rel_tol=1e-12)


def test_compiled_and_python_loop_keep_the_same_records(digits):
    data = digits
    _, compiled = coached(model_of([16]), compiled=True, epochs=2, data=data)
    _, python = coached(model_of([16]), compiled=False, epochs=2, data=data)
    assert compiled.coach == python.coach and compiled.findings == python.findings == []


def test_saturated_units_are_a_finding(digits):
    X, y = digits[0][:64] * 30.0, digits[1][:64]  # inputs far too large: tanh units pinned at +-1
    _, history = coached(relu_then_tanh(), optimizer=jitprop.optimizer("sgd", lr=0.0), data=(X, y))
    assert history.coach[0]["layers"][3]["saturated_fraction"] > 0.3
    kinds = {f["kind"]: f for f in history.findings}
    assert "saturated" in kinds and kinds["saturated"]["layer"] == 3


def test_findings_of_runs_built_to_show_each_problem(digits):
    _, slow = coached(model_of([32]), optimizer=jitprop.optimizer("sgd", lr=1e-6), epochs=3, data=digits)
    assert [f["kind"] for f in slow.findings] == ["barely_learns"]
    assert slow.findings[0]["message"].startswith("layers 0 and 2 barely learn (update/weight 2e-07 a step")

    trainer, wild = coached(model_of([64, 32]), optimizer=jitprop.optimizer("adam", lr=10.0), epochs=3, data=digits)
    kinds = [f["kind"] for f in wild.findings]
    assert "exploding" in kinds or "diverged" in kinds
    assert "barely_learns" not in kinds  # raising the rate is not the advice for a run that blew up

    _, deep = coached(model_of([32] * 12, "sigmoid"), epochs=3, data=digits)
    vanishing = [f for f in deep.findings if f["kind"] == "vanishing"]
    assert vanishing and vanishing[0]["layer"] == 0 and "gradients vanish in layers 0, 2, 4" in vanishing[0]["message"]

    sure = model_of([32])
    sure.parameters()["2.weight"][...] *= 15.0  # the last layer starts far too sure of itself
    _, start = coached(sure, data=digits)
    assert start.findings[0]["kind"] == "initial_loss" and start.findings[0]["layer"] is None
    assert "expected 2.3 (log of 10 classes)" in start.findings[0]["message"]


def test_statistics_leave_training_unchanged(digits):
    plain = model_of([16])
    jitprop.fit(plain, *digits, loss="cross_entropy", epochs=2, seed=0)
    watched = model_of([16])
    coached(watched, epochs=2, compiled=True, data=digits)
    np.testing.assert_array_equal(plain.params, watched.params)


def test_the_default_digits_run_gets_no_alarm():
    """The command line's default run (an MLP 128-64 on the digits, 20 epochs), through the
    Python loop: its records are the compiled step's (tested above), without compiling another step."""
    from jitprop.cli.flags import run_config
    from jitprop.cli.run import plan

    p = plan(run_config({}))
    trainer = jitprop.Trainer(p.model, p.loss, jitprop.optimizer(**p.config["optimizer"]), batch_size=32, seed=0,
                              callbacks=["coach"])  # fmt: skip
    trainer.compiled = False
    history = trainer.fit(*p.train, epochs=p.config["epochs"], validation_data=p.validation)
    assert history.findings == [] and len(history.coach) == 20
    layers = history.coach[-1]["layers"]
    assert [r["name"] for r in layers] == ["dense", "relu", "dense", "relu", "dense"]
    assert -5 < layers[0]["update_ratio_log10"] < -1 and layers[1]["dead_fraction"] < 0.4


def test_train_coach_on_the_command_line(tmp_path):
    path = tmp_path / "coach.json"
    out = run("train", "--hidden", "16", "--epochs", "3", "--coach-json", path).output.splitlines()
    at = out.index("coach: no alarm; every layer learns at a healthy pace")
    assert out[at - 4].startswith("coach, epoch 3:") and out[at + 1] == f"wrote {path}"
    record = json.loads(path.read_text())
    assert record["findings"] == [] and len(record["epochs"]) == 3
    assert [r["name"] for r in record["epochs"][-1]["layers"]] == ["dense", "relu", "dense"]
    slow = run("train", "--hidden", "16", "--epochs", "2", "--optimizer", "sgd", "--lr", "1e-6", "--coach").output
    assert "coach found 1 thing to look at:" in slow and "barely learn" in slow and "raise the learning rate" in slow
