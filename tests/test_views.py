"""Learner views: verdicts on fit, lr-find, sanity checks, explain and sweeps (jitprop.views), on runs built for each case."""

import csv
import io
import json
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from numba import njit

import jitprop
import jitprop.model.architectures
from jitprop.data.tables import load_table
from jitprop.model.architectures import mlp
from jitprop.views import explain as explaining
from jitprop.views import picture as pictures
from jitprop.views import sanity
from jitprop.views import sweep as sweeping
from jitprop.views.lr_find import lr_find, valley
from jitprop.views.verdict import RISE, WEAK, baseline_loss, judge

from test_cli import one_line_error, run


@pytest.fixture(scope="module")
def digits():
    t = load_table("digits")
    X = t.X.astype(np.float32)
    return (X - X.mean(0)) / (X.std(0) + 1e-8), t.y


def test_baseline_is_the_loss_of_predicting_without_inputs():
    y = np.array([0, 0, 0, 1, 2, 2])
    p = np.array([3, 1, 2]) / 6
    assert math.isclose(baseline_loss(jitprop.loss("cross_entropy"), y, 3), -(p * np.log(p)).sum(), rel_tol=1e-12)
    assert math.isclose(baseline_loss(jitprop.loss("cross_entropy"), y, 4), -(p * np.log(p)).sum(), rel_tol=1e-9)  # an unseen class
    t = np.array([[1.0, 5.0], [2.0, 7.0], [6.0, 0.0]])
    assert math.isclose(baseline_loss(jitprop.loss("mse"), t, 2), t.var(axis=0).mean(), rel_tol=1e-12)
    b = np.array([[1.0], [0.0], [0.0], [0.0]])
    assert math.isclose(baseline_loss(jitprop.loss("bce"), b, 1), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), rel_tol=1e-6)


def curves(train, val=None):
    logs = {"loss": list(train)}
    if val is not None:
        logs["val_loss"] = list(val)
    return logs


def test_each_rule_on_curves_built_for_it():
    falling = np.linspace(1.0, 0.1, 12)
    over = judge(curves(falling, [1.0, 0.6, 0.4, 0.3, 0.32, 0.35, 0.38, 0.4, 0.42, 0.45, 0.5, 0.55]), baseline=2.3)
    assert over.kind == "overfit" and over.epoch == 4
    assert "overfitting from epoch 4: validation loss rose 83%" in over.message
    assert "early_stopping:restore_best_weights=true would have kept epoch 4" in over.message
    just_below = [0.3] * 8 + [0.3 * (1 + RISE) - 1e-6]  # a rise under RISE is noise, not overfitting
    assert judge(curves(np.linspace(0.5, 0.1, 9), just_below), baseline=2.3).kind == "fit"
    flat_train = judge(curves([0.2] * 8 + [0.25], [0.3] * 8 + [0.5]), baseline=2.3)  # training loss did not fall
    assert flat_train.kind != "overfit"

    still = judge(curves(np.linspace(2.0, 1.0, 8), np.linspace(2.0, 1.1, 8)), baseline=2.3)
    assert still.kind == "underfit" and "still falling" in still.message and "--epochs 16" in still.message
    weak = judge(curves([2.0, 1.5, 1.2, 1.2, 1.2, 1.2], [2.0, 1.5, 1.25, 1.25, 1.25, 1.25]), baseline=2.3)
    assert weak.kind == "underfit" and "is 52% of 2.3" in weak.message
    assert weak.evidence["share_of_baseline"] > WEAK

    fit = judge(curves(np.linspace(1.0, 0.05, 10), [0.9, 0.5, 0.3, 0.2, 0.15, 0.12, 0.11, 0.1, 0.1, 0.101]), baseline=2.3)
    assert fit.kind == "fit" and fit.epoch == 8 and "lowest at epoch 8 of 10" in fit.message

    assert judge(curves(np.linspace(1.0, 0.01, 10)), baseline=2.3).kind == "unjudged"  # no validation rows
    assert judge(curves([2.2, 2.1]), baseline=2.3).kind == "underfit"
    assert judge(curves([])).kind == "unjudged"
    nan_end = judge(curves([1.0, 0.5, math.nan], [1.0, 0.6, math.nan]), baseline=2.3)  # a diverged last epoch is left out
    assert nan_end.evidence["epochs"] == 2


def fit(data, hidden, epochs, rows=None, noise=0.0):
    X, y = data
    if rows is not None:
        rng = np.random.default_rng(0)
        idx = rng.choice(len(y), rows, replace=False)
        X, y = X[idx], y[idx].copy()
        flip = rng.random(rows) < noise
        y[flip] = rng.integers(0, 10, flip.sum())
    layers = [jitprop.layer(**spec) for spec in mlp(10, hidden, "relu", 0.0)]
    model = jitprop.Sequential(layers, input_dim=X.shape[1], seed=0)
    return jitprop.fit(model, X, y, loss="cross_entropy", epochs=epochs, validation_split=0.2, seed=0)


def test_runs_built_to_underfit_fit_and_overfit(digits):
    assert fit(digits, [2], 3).verdict().kind == "underfit"  # a tiny model, few epochs
    good = fit(digits, [128, 64], 20).verdict()  # the default run
    assert good.kind == "fit", good.message
    over = fit(digits, [256, 256], 40, rows=300, noise=0.3).verdict()  # a large model, a small noisy set
    assert over.kind == "overfit", over.message
    assert over.evidence["rise"] >= RISE and over.epoch < 40


def test_train_prints_its_verdict_before_the_final_score():
    lines = run("train", "--hidden", "2", "--epochs", "3").output.strip().splitlines()
    assert lines[-2].startswith("verdict: underfitting: ")
    assert lines[-1].startswith("validation accuracy: ")


# -- lr-find -----------------------------------------------------------------


def small_model(seed=0):
    layers = [jitprop.layer(**spec) for spec in mlp(10, [16], "relu", 0.0)]
    return jitprop.Sequential(layers, input_dim=64, seed=seed)


def test_valley_takes_a_point_half_way_down_the_longest_decreasing_run():
    losses = [5.0, 4.0, 4.5, 3.0, 2.5, 2.6, 2.0, 1.0, 0.5, 3.0, 9.0]
    lrs = [10.0**i for i in range(len(losses))]
    # The longest decreasing subsequence is 5, 4, 3, 2.5, 2, 1, 0.5 (indices 0..8, seven points);
    # fast.ai's rule: start = end - length = 8 - 7 = 1, third = 7/3, index = 1 + 2 + 1 = 4.
    assert valley(lrs, losses) == (1e4, 4)
    assert valley([1.0], [1.0]) == (None, None)


def test_lr_find_grows_the_rate_smooths_the_loss_and_restores_the_model(digits):
    model = small_model()
    params = model.params.copy()
    result = lr_find(model, *digits, loss="cross_entropy", num_it=40, start_lr=1e-5, end_lr=1.0)
    np.testing.assert_array_equal(model.params, params)  # the test only looks
    n = len(result.lrs)
    np.testing.assert_allclose(result.lrs, 1e-5 * (1.0 / 1e-5) ** (np.arange(n) / 40), rtol=1e-12)
    average, expected = 0.0, []
    for i, loss in enumerate(result.losses):  # fast.ai's AvgSmoothLoss, written out
        average = 0.98 * average + 0.02 * loss
        expected.append(average / (1 - 0.98 ** (i + 1)))
    np.testing.assert_allclose(result.smoothed, expected, rtol=1e-12)
    a = 40 // 10
    window = result.smoothed[a : max(a, n - 5)]
    lr, index = valley(result.lrs[a : a + len(window)], window)
    assert result.suggestion == lr and result.suggestion_index == a + index
    again = lr_find(model, *digits, loss="cross_entropy", num_it=40, start_lr=1e-5, end_lr=1.0)
    np.testing.assert_array_equal(again.losses, result.losses)  # from the same weights, the same run


def test_lr_find_stops_when_the_loss_runs_away(digits):
    result = lr_find(small_model(), *digits, loss="cross_entropy", optimizer="sgd", end_lr=1e4)
    assert len(result.lrs) < 100 and result.stopped.startswith("the smoothed loss passed 4x its best")
    assert result.smoothed[-1] > 4 * result.smoothed.min()
    assert 1e-7 <= result.suggestion <= result.lrs[-1]
    with pytest.raises(jitprop.ConfigError, match="0 < start_lr < end_lr"):
        lr_find(small_model(), *digits, loss="cross_entropy", start_lr=1.0, end_lr=0.1)


def test_lr_find_command_suggests_a_rate_last_and_in_json(monkeypatch):
    args = ("lr-find", "--hidden", "16", "--num-it", "30")
    monkeypatch.setattr(pictures, "draw", lambda picture, path: False)  # no drawing plugin: text instead
    out = run(*args, "--plot", "lr.png").output.strip().splitlines()
    assert out[0].startswith("lr-find: adam on digits, 1438 training rows, batch 32")
    assert any(line.startswith("no plugin draws pictures") for line in out)
    assert any(line.strip().startswith("V suggested lr") or "V suggested lr" in line for line in out)
    assert re.fullmatch(r"suggested lr: \d\.?\d*(e-\d+)?", out[-1]), out[-1]
    record = json.loads(run(*args, "--json").output)
    assert f"suggested lr: {record['suggested_lr']:.2g}" == out[-1]
    assert record["rule"] == "valley" and len(record["iterations"]) == 30
    error = one_line_error(run("lr-find", "--device", "cuda", ok=False))
    assert "runs on the CPU" in error or "cuda" in error


# -- sanity checks ---------------------------------------------------------------


@njit(cache=True)
def _double_forward(p, h, x, out, cache, training, seed):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = 2.0 * x[i, j]


@njit(cache=True)
def _double_backward_wrong(p, h, x, out, cache, grad_out, grad_in, grad_p):
    for i in range(grad_in.shape[0]):
        for j in range(grad_in.shape[1]):
            grad_in[i, j] = grad_out[i, j]  # forgets the factor 2


class WrongDouble(jitprop.Layer):
    """out = 2x, with a backward that forgets the 2: what the gradient check is for."""

    name = "wrong_double"
    forward_kernel = staticmethod(_double_forward)
    backward_kernel = staticmethod(_double_backward_wrong)


def test_expected_initial_loss_by_target():
    model = small_model()
    assert sanity.expected_initial_loss(jitprop.loss("cross_entropy"), model, None) == (math.log(10), "log of 10 classes")
    assert sanity.expected_initial_loss(jitprop.loss("bce"), model, None)[0] == math.log(2)
    y = np.ones((4, 10), np.float32) * 3.0
    assert sanity.expected_initial_loss(jitprop.loss("mse"), model, y) == (9.0, "the loss of predicting 0")


def test_initial_loss_flags_a_last_layer_that_starts_too_sure(digits):
    X, y = digits
    model = small_model()
    ce = jitprop.loss("cross_entropy")
    assert sanity.initial_loss(model, ce, X, y).ok
    model.parameters()["2.weight"][...] *= 20.0  # logits 20x larger at the start
    check = sanity.initial_loss(model, ce, X, y)
    assert not check.ok and "too sure of itself" in check.message and str(check).endswith(": FAIL")


def test_overfit_one_batch_passes_for_a_real_model_and_fails_for_a_tiny_one(digits):
    X, y = digits
    model = small_model()
    before = model.params.copy()
    ce = jitprop.loss("cross_entropy")
    ok = sanity.overfit_batch(model, ce, jitprop.optimizer("adam"), X, y, 32)
    assert ok.ok and "overfit one batch of 32 rows" in ok.message
    np.testing.assert_array_equal(model.params, before)  # trained on a copy's behalf, put back
    tiny = jitprop.Sequential([jitprop.layer(**s) for s in mlp(10, [2], "relu", 0.0)], input_dim=64, seed=0)
    bad = sanity.overfit_batch(tiny, ce, jitprop.optimizer("adam"), X, y, 32, iterations=100)
    assert not bad.ok and "after 100 iterations" in bad.message


def test_gradient_checks_pass_on_a_cnn_and_catch_a_wrong_backward(digits):
    X, y = digits
    ce = jitprop.loss("cross_entropy")
    cnn = jitprop.Sequential([jitprop.layer(**s) for s in jitprop.model.architectures.cnn(10)], input_shape=(1, 8, 8), seed=0)
    checks = sanity.gradients(cnn, ce, X.reshape(-1, 1, 8, 8), y)
    assert [c.name for c in checks] == ["gradient 0", "gradient 3", "gradient 7"] and all(c.ok for c in checks)
    model = jitprop.Sequential([jitprop.layer("dense", units=8), WrongDouble(), "tanh", jitprop.layer("dense", units=10)],
                               input_dim=64, seed=0)  # fmt: skip
    first, last = sanity.gradients(model, ce, X, y)
    assert not first.ok and "through layers 1-3" in first.message  # the wrong backward sits between
    assert last.ok  # the layer after it is unaffected


def test_check_command_and_train_check():
    out = run("check", "--hidden", "16").output.strip().splitlines()
    assert out[0] == "checks of 3 layers (1,210 parameters) on digits" and out[-1] == "all 4 checks passed"
    assert out[1].startswith("loss at initialisation ") and out[1].endswith(": ok")
    failed = run("check", "--hidden", "2", ok=False)
    assert failed.exit_code == 1 and failed.output.strip().splitlines()[-1] == "1 of 4 checks failed"
    assert "overfit one batch" in failed.output and "FAIL" in failed.output
    stopped = run("train", "--check", "--hidden", "2", ok=False)
    assert stopped.exit_code == 1 and "epoch 1/" not in stopped.output
    assert stopped.output.strip().splitlines()[-1].startswith("Error: 1 sanity check(s) failed (above): overfit one batch")


# -- explain -------------------------------------------------------------------


def test_the_arithmetic_of_a_run():
    lines = explaining.arithmetic(1438, 32, 20)
    assert lines[0].startswith("1438 training rows, batch 32: 45 iterations per epoch, the last one of 30 rows;")
    assert lines[1].startswith("20 epochs: 900 iterations, every row seen 20 times")
    assert explaining.arithmetic(64, 32, 1)[0].startswith("64 training rows, batch 32: 2 iterations per epoch;")
    assert "every row seen once" in explaining.arithmetic(64, 32, 1)[1]
    dropped = explaining.arithmetic(1438, 32, 2, drop_last=True)
    assert "44 iterations per epoch (drop_last: the last 30 rows" in dropped[0] and "88 iterations" in dropped[1]


class _StopAfterOne(jitprop.Callback):
    name = "stop_after_one"

    @jitprop.hookimpl
    def on_train_batch_end(self, trainer):
        trainer.stop_training = True


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_the_traced_iteration_is_the_one_training_makes(digits, dropout):
    X, y = digits
    layers = [jitprop.layer(**s) for s in mlp(10, [16, 8], "tanh", dropout)]
    model = jitprop.Sequential(layers, input_dim=64, seed=3)
    before = model.params.copy()
    trainer = jitprop.Trainer(model, loss="cross_entropy", optimizer="adam", batch_size=50, seed=3)
    t = explaining.trace(trainer, X, y)
    lines = explaining.first_iteration(trainer, X, y)
    np.testing.assert_array_equal(model.params, before)  # explaining trains nothing
    assert t["grad_norm"][1] is None and t["passed_back"][0] is None and t["grad_norm"][0] > 0
    run_one = jitprop.Trainer(model, loss="cross_entropy", optimizer="adam", batch_size=50, seed=3, callbacks=[_StopAfterOne()])
    run_one.fit(X, y, epochs=1)
    assert run_one.batch_losses[0] == t["loss"]  # the same batch, the same dropout draw
    np.testing.assert_array_equal(model.params, before + t["moved"])  # and the same update
    assert lines[0].startswith("iteration 1: batch of 50 rows") and f"= {t['loss']:.4f}" in lines[1 + 4]
    n = len(model.layers)
    assert [int(line.split()[1]) for line in lines if line.startswith("    layer")][:n] == list(range(n))[::-1]  # last first


def test_explain_command_and_train_explain():
    out = run("explain", "--hidden", "16").output.splitlines()
    assert out[0] == "explain: 3 layers (1,210 parameters) on digits"
    assert out[1].startswith("1438 training rows, batch 32: 45 iterations per epoch, the last one of 30 rows")
    assert any(line.startswith("  update: adam at lr 0.001") for line in out)
    trained = run("train", "--explain", "--hidden", "16", "--epochs", "1").output
    assert trained.index("iteration 1: batch of 32 rows") < trained.index("epoch 1/1")


# -- sweeps --------------------------------------------------------------------


def test_combinations_vary_the_first_setting_slowest():
    grid = {"lr": [0.1, 0.2], "batch_size": [8, 32], "hidden": []}
    assert sweeping.combinations(grid) == [{"lr": 0.1, "batch_size": 8}, {"lr": 0.1, "batch_size": 32},
                                           {"lr": 0.2, "batch_size": 8}, {"lr": 0.2, "batch_size": 32}]  # fmt: skip
    with pytest.raises(jitprop.ConfigError, match="must be a list"):
        sweeping.combinations({"lr": 0.1})


def test_a_sweep_is_every_run_alone_whatever_the_threads(digits):
    X, y = digits
    grid = dict(lr=[1e-3, 1e-2], batch_size=[16, 64], hidden=[[16]], epochs=[3])
    threaded = jitprop.sweep(X, y, workers=2, **grid)
    alone = jitprop.sweep(X, y, workers=1, **grid)
    assert threaded.workers == 2 and alone.workers == 1 and len(threaded) == 4
    assert [r.history for r in threaded] == [r.history for r in alone]  # several at once changes nothing
    run_ = threaded[3]
    assert run_.settings == {"lr": 1e-2, "batch_size": 64, "hidden": [16], "epochs": 3}
    model = jitprop.Sequential([jitprop.layer(**s) for s in mlp(10, [16], "relu", 0.0)], input_shape=(64,), seed=0)
    history = jitprop.fit(model, X, y, loss="cross_entropy", optimizer=jitprop.optimizer("adam", lr=1e-2), batch_size=64,
                          epochs=3, validation_split=0.2, seed=0)  # fmt: skip
    assert run_.history["val_loss"] == history.history["val_loss"]  # each run is the run trained alone
    assert run_.iterations_per_epoch == 23 and run_.best_epoch == 1 + int(np.argmin(history.history["val_loss"]))
    best = threaded.best()
    assert best.best_val_loss == min(r.best_val_loss for r in threaded)
    table = str(threaded).splitlines()
    assert table[0].split()[:3] == ["lr", "batch_size", "hidden"] and table[-1].startswith("best: lr ")
    rows = list(csv.DictReader(io.StringIO(threaded.to_csv())))
    assert len(rows) == 4 and rows[0]["hidden"] == "16" and float(rows[0]["best_val_loss"]) == threaded[0].best_val_loss
    record = json.loads(threaded.to_json())
    assert len(record["runs"]) == 4 and record["runs"][2]["history"]["loss"] == threaded[2].history["loss"]
    picture = threaded.picture()
    assert len(picture.panels) == 4 and picture.columns == 2 and picture.shared_axes
    assert [len(p.series) for p in picture.panels] == [2, 2, 2, 2] and all(len(p.marks) == 1 for p in picture.panels)
    assert "train" in pictures.text(picture)


def test_sweep_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = run("sweep", "--hidden", "16", "--hidden", "8,8", "--epochs", "2,3", "--csv", "s.csv", "--json", "s.json").output.splitlines()
    assert out[0] == "sweep: 4 runs on digits (1438 training rows), seed 0"
    assert out[1].startswith("4 runs in ") and out[1].endswith(" at a time")
    assert out[2].split()[:2] == ["hidden", "epochs"] and out[-3].startswith("best: hidden ")
    assert out[-2:] == ["wrote s.csv", "wrote s.json"]
    assert len(list(csv.DictReader(open("s.csv")))) == 4 and len(json.load(open("s.json"))["runs"]) == 4
    assert "give values to try" in one_line_error(run("sweep", ok=False))
    assert "--hidden shapes the mlp model" in one_line_error(run("sweep", "--model", "cnn", "--hidden", "8", ok=False))
    cnn = run("sweep", "--dataset", "digit_images", "--model", "cnn", "--epochs", "1", "--lr", "1e-3,2e-3").output
    assert "2 runs in " in cnn and "1 at a time" in cnn  # its kernels split each batch over the cores already


def test_a_sweep_whose_every_run_failed_shows_its_table():
    out = run("sweep", "--dataset", "spirals", "--hidden", "8", "--epochs", "2", "--lr", "1e10").output.splitlines()
    assert out[-2].split()[:4] == ["lr", "hidden", "epochs", "best"]  # no run scored a column: it still has its width
    assert out[-1].split()[3:6] == ["failed:", "training", "diverged"]  # and no best run


def _children(pid):
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers: Linux")
def test_ctrl_c_stops_a_sweep_and_its_workers_at_once(tmp_path):
    jitprop_cmd = str(Path(sys.executable).with_name("jitprop"))
    args = [jitprop_cmd, "sweep", "--lr", "1e-3,2e-3,3e-3,4e-3", "--batch-size", "8,16", "--epochs", "2000"]
    # Started with SIGINT ignored, as a shell starts a background job: the command sets its own handler.
    ignore = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignore)
    deadline = time.monotonic() + 120
    while not _children(proc.pid) and time.monotonic() < deadline:  # its step compiled, its workers forked
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert workers, "the sweep never started its workers"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Ctrl-C: sweep stopped; nothing written" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert not any(Path(f"/proc/{w}").exists() for w in workers)  # the workers went with it
