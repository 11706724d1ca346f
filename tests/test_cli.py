"""The command line, driven through click's CliRunner and through the real installed command."""

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from numba import njit

import jitprop
from jitprop import checkpoint
from jitprop.cli import add_plugin_commands, cli
from jitprop.testing import command as run, one_line_error

JITPROP = str(Path(sys.executable).with_name("jitprop"))


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def params(path):
    return checkpoint.load(path).state_dict()


def test_version():
    assert jitprop.__version__ in run("--version").output


def test_default_train_reaches_95_percent_on_digits():
    out = run("train").output
    lines = out.splitlines()
    assert lines[0].startswith("training 5 layers") and "on digits" in lines[0]
    assert lines[0].endswith("; classification: 'digit' holds 10 distinct whole numbers in 1797 rows (--task regression to override)")
    assert lines[1].split() == ["layer", "output", "parameters"] and lines[3].split() == ["0", "dense", "128", "8,320"]
    assert lines[8] == "  17,226 parameters (float32, 67.3 KiB)"
    assert sum(line.startswith("epoch ") for line in lines) == 20
    assert "val_loss" in lines[9] and "val_accuracy" in lines[9] and lines[9].endswith("s")
    assert lines[-1].startswith("validation accuracy: ")
    assert float(lines[-1].split(": ")[1]) >= 0.95


def test_the_installed_command_runs_in_a_real_process(tmp_path):
    out = subprocess.run(
        [JITPROP, "train", "--dataset", "spirals", "--epochs", "2", "--checkpoint", "m.npz"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "epoch 2/2" in out.stdout and (tmp_path / "m.npz").exists()
    bad = subprocess.run([JITPROP, "train", "--dataset", "nope"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("Error: unknown dataset 'nope'") and bad.stderr.count("\n") == 1


def test_output_that_cannot_be_written_ends_quietly_or_in_one_line(tmp_path):
    """A closed pipe (``jitprop list | head -1``) ends quietly, a full disk (``> /dev/full``) in one line."""
    closed = subprocess.Popen([JITPROP, "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    closed.stdout.close()  # before it writes: it starts in a second or so
    assert closed.wait(timeout=120) == 1 and closed.stderr.read() == ""
    with open("/dev/full", "w") as full:  # opened, never replaced
        out = subprocess.run([JITPROP, "list"], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert out.returncode == 1 and out.stderr == "Error: cannot write the output: No space left on device\n"


def test_doubtful_settings_warn_in_one_line(tmp_path):
    out = subprocess.run([JITPROP, "train", "--epochs", "1", "--hidden", "8", "--lr", "0"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)  # fmt: skip
    assert out.returncode == 0 and out.stderr == "optimizer 'adam' has lr=0: the weights will not move\n", out.stderr


def test_every_command_has_help_with_examples():
    for command in ("train", "evaluate", "predict", "list", "plugins", "gradcheck"):
        text = run(command, "--help").output
        assert "Examples:" in text, command


RUN_TOML = """
dataset = "spirals"
epochs = 3
batch_size = 16
normalize = false

[optimizer]
name = "sgd"
lr = 0.1
momentum = 0.9

[[layers]]
name = "dense"
units = 24

[[layers]]
name = "gelu"

[[layers]]
name = "dropout"
rate = 0.1

[[layers]]
name = "dense"
units = 3

[[callbacks]]
name = "early_stopping"
monitor = "val_accuracy"
patience = 2
"""


def test_toml_round_trip_through_print_config(in_tmp):
    Path("run.toml").write_text(RUN_TOML)
    printed = run("train", "--config", "run.toml", "--print-config").output
    resolved = tomllib.loads(printed)
    assert [layer["name"] for layer in resolved["layers"]] == ["dense", "gelu", "dropout", "dense"]
    assert resolved["optimizer"] == {"name": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.0, "nesterov": False,
                                     "weight_decay": 0.0, "decay_bias": True}
    assert resolved["callbacks"][0]["patience"] == 2 and resolved["loss"] == {"name": "cross_entropy"}
    Path("printed.toml").write_text(printed)
    assert run("train", "--config", "printed.toml", "--print-config").output == printed
    # flags override the file
    over = tomllib.loads(run("train", "--config", "run.toml", "--epochs", "5", "--lr", "0.02", "--print-config").output)
    assert over["epochs"] == 5 and over["optimizer"]["lr"] == 0.02 and over["optimizer"]["momentum"] == 0.9
    hidden = tomllib.loads(run("train", "--config", "run.toml", "--hidden", "7", "--print-config").output)
    assert [(layer["name"], layer.get("units")) for layer in hidden["layers"]] == [("dense", 7), ("relu", None), ("dense", 3)]
    # and the file trains
    assert "epoch 3/3" in run("train", "--config", "printed.toml").output


def test_resume_equals_uninterrupted_bit_for_bit():
    common = ["--dataset", "spirals", "--dropout", "0.2", "--batch-size", "16", "--callback", "reduce_lr_on_plateau:patience=0,factor=0.5"]
    run("train", *common, "--epochs", "6", "--checkpoint", "straight.npz")
    run("train", *common, "--epochs", "2", "--checkpoint", "part.npz")
    out = run("train", "--resume", "part.npz", "--epochs", "6").output
    assert "epochs 3..6" in out and "epoch 1/6" not in out
    a, b = params("straight.npz"), params("part.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    ha, hb = checkpoint.load("straight.npz"), checkpoint.load("part.npz")
    assert ha.history == hb.history and len(ha.history["epoch"]) == 6
    assert ha.meta["trainer"]["history"] == hb.meta["trainer"]["history"]
    for key in ("state/iteration_loss", "state/iteration_summary"):
        assert np.array_equal(ha.arrays[key], hb.arrays[key]), key


@pytest.mark.parametrize("sig, code, name", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_interrupt_saves_a_checkpoint_that_resumes_exactly(tmp_path, sig, code, name):
    common = ["--hidden", "16", "--dropout", "0.1", "--batch-size", "8"]
    proc = subprocess.Popen(
        [JITPROP, "train", *common, "--epochs", "5000", "--checkpoint", "c.npz"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in proc.stdout:
        if re.match(r"epoch\s+2/", line):
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    last = err.strip().splitlines()[-1]  # a notice, on stderr: stdout holds the epochs' lines
    assert f"{name}:" not in out
    assert last.startswith(f"{name}: interrupted in epoch") and "saved c.npz; continue with: jitprop train --resume c.npz" in last
    saved = checkpoint.load(tmp_path / "c.npz")
    reached = saved.meta["trainer"]["epoch"]
    target = reached + 2
    run("train", "--resume", tmp_path / "c.npz", "--epochs", target)
    run("train", *common, "--epochs", target, "--checkpoint", tmp_path / "straight.npz")
    a, b = params(tmp_path / "c.npz"), params(tmp_path / "straight.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("sig, code, name", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_while_the_step_compiles_ends_the_run_at_once_in_one_line(tmp_path, sig, code, name):
    # An empty cache: the step takes seconds to compile, and the signal comes in the middle. It used
    # to wait for the compiler (13 minutes at 200 layers) and then train a first stretch of batches.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "JITPROP_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("NUMBA_CACHE_DIR", None)
    proc = subprocess.Popen([JITPROP, "train", "--dataset", "spirals", "--epochs", "3", "--checkpoint", "c.npz"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)  # fmt: skip
    for line in proc.stdout:
        if "parameters (float32" in line:  # the summary: training (and compiling) starts next
            break
    time.sleep(1.0)  # past the moment the command sets its handlers
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [f"{name}: interrupted before the first iteration, while the training step was"
                                        " prepared and compiled; nothing to save"]  # fmt: skip
    assert "epoch" not in out and not (tmp_path / "c.npz").exists()


def test_evaluate_and_predict_on_digits():
    out = run("train", "--epochs", "5", "--checkpoint", "d.npz").output
    val_acc = float(out.splitlines()[-2].split(": ")[1])
    ev = run("evaluate", "d.npz").output
    assert "(359 validation rows of digits)" in ev
    assert float(ev.split("accuracy ")[1].split()[0]) == pytest.approx(val_acc, abs=1e-4)
    assert "(1797 rows of digits)" in run("evaluate", "d.npz", "--dataset", "digits").output
    run("predict", "d.npz", "digits", "-o", "pred.csv")
    rows = list(csv.reader(open("pred.csv")))
    assert rows[0] == ["digit"] + [f"p_{i}" for i in range(10)]
    assert len(rows) == 1798
    probs = np.array(rows[1:], dtype=float)[:, 1:]
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
    truth = np.load(Path(jitprop.__file__).parent / "builtin_data" / "digits.npz")["y"]
    assert (np.array([int(r[0]) for r in rows[1:]]) == truth).mean() > 0.9


def write_flowers(path, n=150, seed=0, with_label=True, order=("petal", "sepal")):
    rng = np.random.default_rng(seed)
    names = ["setosa", "versicolor", "virginica"]
    labels = rng.integers(0, 3, size=n)
    centers = np.array([[1.0, 5.0], [4.0, 7.0], [7.0, 3.0]])
    X = centers[labels] + rng.normal(0, 0.3, size=(n, 2))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        cols = {"petal": 0, "sepal": 1}
        w.writerow([*order, "species"] if with_label else list(order))
        for x, lab in zip(X, labels):
            w.writerow([*(f"{x[cols[c]]:.3f}" for c in order), *([names[lab]] if with_label else [])])
    return [names[i] for i in labels]


def test_csv_with_string_labels_round_trips_through_predict():
    write_flowers("flowers.csv")
    out = run("train", "--dataset", "flowers.csv", "--target", "species", "--epochs", "30", "--checkpoint", "f.npz").output
    assert float(out.splitlines()[-2].split(": ")[1]) > 0.9
    assert checkpoint.load("f.npz").info["labels"] == ["setosa", "versicolor", "virginica"]
    truth = write_flowers("new.csv", n=40, seed=5, with_label=False, order=("sepal", "petal"))  # columns swapped
    run("predict", "f.npz", "new.csv", "-o", "pred.csv")
    rows = list(csv.reader(open("pred.csv")))
    assert rows[0] == ["species", "p_setosa", "p_versicolor", "p_virginica"]
    predicted = [r[0] for r in rows[1:]]
    assert np.mean(np.array(predicted) == np.array(truth)) > 0.9
    assert "accuracy" in run("evaluate", "f.npz", "--dataset", "flowers.csv", "--target", "species").output


def test_regression_run_and_predict():
    out = run("train", "--dataset", "sine", "--hidden", "32", "--activation", "tanh", "--epochs", "30", "--lr", "0.01",
              "--checkpoint", "s.npz").output
    assert out.splitlines()[-2].startswith("validation loss: ")
    assert float(out.splitlines()[-2].split(": ")[1]) < 0.05
    assert "accuracy" not in out
    text = run("predict", "s.npz", "sine").output
    assert text.splitlines()[0] == "sin_x" and len(text.splitlines()) == 1001


def test_npz_data_files():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    np.savez("data.npz", X=X, y=(X[:, 0] > 0).astype(int))
    out = run("train", "--dataset", "data.npz", "--epochs", "10", "--checkpoint", "n.npz").output
    assert float(out.splitlines()[-2].split(": ")[1]) > 0.9
    np.savez("new.npz", X=X[:5])
    assert len(run("predict", "n.npz", "new.npz").output.splitlines()) == 6


def test_callbacks_from_the_command_line():
    run("train", "--dataset", "spirals", "--epochs", "4",
        "--callback", "model_checkpoint:filepath=ck-{epoch:02d}.npz",
        "--callback", "model_checkpoint:filepath=best.npz,monitor=val_accuracy,save_best_only=true",
        "--callback", "csv_logger:filename=log.csv",
        "--callback", "lr_scheduler:schedule=step,step_size=1,gamma=0.5")
    assert sorted(p.name for p in Path().glob("ck-*.npz")) == [f"ck-0{i}.npz" for i in range(1, 5)]
    assert checkpoint.load("ck-02.npz").meta["trainer"]["epoch"] == 2
    assert Path("best.npz").exists()
    rows = list(csv.DictReader(open("log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.001, 0.0005, 0.00025, 0.000125])
    assert set(rows[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"}


def test_early_stopping_message():
    out = run("train", "--dataset", "spirals", "--epochs", "50", "--lr", "0.5", "--optimizer", "sgd",
              "--callback", "early_stopping:patience=1,monitor=loss").output
    assert "early stopping: loss has not improved" in out


def test_list_and_plugins():
    out = run("list").output
    for header in ("layers:", "losses:", "optimizers:", "callbacks:", "schedules:", "datasets:"):
        assert header in out
    losses = run("list", "losses").output
    assert "cross_entropy" in losses and "jitprop.default_plugins.losses" in losses and "layers:" not in losses
    assert "digits" in run("list", "datasets").output and "CC BY 4.0" in run("list", "datasets").output
    rows = json.loads(run("plugins", "--json").output)
    layers = next(r for r in rows if r["name"] == "jitprop.default_plugins.layers")
    assert layers["hooks"] == ["register_layers"] and layers["package"] == "jitprop" and layers["version"] == jitprop.__version__
    assert "jitprop.default_plugins.layers jitprop" in run("plugins").output


def test_gradcheck_command(register_plugin):
    out = run("gradcheck").output
    assert out.strip().endswith("ok") and "dense" in out and "binary_cross_entropy" in out
    assert "dense" in run("gradcheck", "dense").output
    assert "did you mean 'gelu'" in one_line_error(run("gradcheck", "gelu_", ok=False))

    class Wrong(jitprop.Layer):
        """Doubles its input but claims a gradient of one."""

        name = "wrong_double"

        @staticmethod
        def forward_kernel(p, h, x, out, cache, training, seed):
            out[...] = 2 * x

        @staticmethod
        def backward_kernel(p, h, x, out, cache, grad_out, grad_in, grad_p):
            grad_in[...] = grad_out

    class Plugin:
        @jitprop.hookimpl
        def register_layers(self, register):
            register(Wrong)

    register_plugin(Plugin(), name="wrong-plugin")
    result = run("gradcheck", "wrong_double", "relu", ok=False)
    assert result.exit_code == 1 and "FAIL" in result.output and "1 gradient check(s) failed" in result.output


def test_gradcheck_takes_options_and_says_why_a_kernel_does_not_compile(register_plugin):
    out = run("gradcheck", "leaky_relu:negative_slope=0.3", "mse").output
    assert "leaky_relu:negative_slope=0.3" in out and out.strip().endswith("all 2 checked: ok")
    assert "negative_slope must be a number" in one_line_error(run("gradcheck", "leaky_relu:negative_slope=x", ok=False))

    @njit(cache=False)
    def broken_kernel(pred, y, grad, h):
        return pred.no_such_attribute

    class Broken(jitprop.Loss):
        name = "broken_test"
        kernel = staticmethod(broken_kernel)

    class Plugin:
        @jitprop.hookimpl
        def register_losses(self, register):
            register(Broken)

    register_plugin(Plugin(), name="broken-plugin")
    result = run("gradcheck", "broken_test", ok=False)
    line = next(line for line in result.output.splitlines() if line.startswith("loss"))
    assert result.exit_code == 1 and "ERROR its kernel does not compile: Unknown attribute 'no_such_attribute'" in line


def test_a_registration_skipped_for_a_name_taken_twice_shows_in_plugins(register_plugin):
    class Twice(jitprop.Loss):
        name = "mse"

        @staticmethod
        def kernel(pred, y, grad, h):
            return 0.0

    class Plugin:
        @jitprop.hookimpl
        def register_losses(self, register):
            register(Twice)

    register_plugin(Plugin(), name="twice-plugin")
    result = run("plugins", "--json")  # the skipped registration is also a warning, on stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert any("loss name 'mse' is registered twice" in p and "skipped" in p for p in rows["twice-plugin"]["problems"])
    assert "problem: loss name 'mse' is registered twice" in run("plugins").output


def test_plugins_add_commands(register_plugin):
    import click

    class Plugin:
        @jitprop.hookimpl
        def register_commands(self, cli):
            @cli.command(name="hello-test")
            def hello():
                """Say hello."""
                click.echo("hello from a plugin")

    register_plugin(Plugin(), name="hello-plugin")
    try:
        add_plugin_commands(cli)
        assert run("hello-test").output == "hello from a plugin\n"
    finally:
        cli.commands.pop("hello-test", None)


@pytest.fixture
def trained(in_tmp):
    run("train", "--epochs", "1", "--checkpoint", "model.npz")
    Path("good.csv").write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    run("train", "--dataset", "good.csv", "--epochs", "1", "--checkpoint", "small.npz")
    Path("only_a.csv").write_text("a\n1\n2\n")
    Path("bad.csv").write_text("a,b,label\n1,x,0\n2,3,1\n")
    Path("ragged.csv").write_text("a,b,label\n1,2,0\n2,3\n")
    Path("words.csv").write_text("a,b,label\n1,2,cat\n2,3,dog\n3,1,cat\n")
    Path("ids.csv").write_text("id,a,label\n" + "".join(f"r{i},{i},{i % 2}\n" for i in range(20)))
    Path("gaps.csv").write_text("a,b,label\n" + "".join(f"{i},{'NA' if i in (7, 9) else i},{i % 2}\n" for i in range(20)))
    Path("data.txt").write_text("1,2,3\n")
    Path("latin1.csv").write_bytes("a,b\n1,caf\xe9\n".encode("latin-1"))
    np.savez("narrow.npz", X=np.zeros((3, 5)))
    Path("junk.npz").write_bytes(b"not a zip file at all")
    data = Path("model.npz").read_bytes()
    Path("truncated.npz").write_bytes(data[: len(data) // 2])
    ck = checkpoint.load("model.npz")
    tampered = dict(ck.arrays)
    tampered["param/0.bias"] = tampered["param/0.bias"] + 1
    np.savez("tampered.npz", meta=np.array(json.dumps(ck.meta)), checksum=np.array("0" * 64), **tampered)
    Path("keys.toml").write_text("epoch = 3\n")
    Path("types.toml").write_text('batch_size = "big"\n')
    Path("broken.toml").write_text("epochs = \n")
    Path("layers.toml").write_text('[[layers]]\nname = "dense"\nunits = 10\n[[layers]]\nname = "rellu"\n')
    Path("existing.csv").write_text("keep me\n")
    return Path("model.npz")


BAD = [
    (["train", "--dataset", "missing.csv"], "missing.csv: no such file"),
    (["train", "--dataset", "data.txt"], "unsupported file type '.txt'"),
    (["train", "--dataset", "ids.csv"], "ids.csv: column 'id' is text (line 2 holds 'r0') with 16 distinct values in 16"
                                        " training rows, too many to one-hot encode (at most 100, and one per two training"
                                        " rows); leave it out with --drop id"),
    (["train", "--dataset", "gaps.csv"], "gaps.csv: column 'b' line 9 (the header is line 1) is missing (empty, NA, N/A, NaN,"
                                         " null or ?); 2 missing cells: give --fill mean, median or zero"),
    (["train", "--dataset", "ids.csv", "--drop", "idd"], "ids.csv: --drop names no column 'idd'; did you mean 'id'?"),
    (["train", "--dataset", "ids.csv", "--drop", "label"], "--drop names the target column 'label'"),
    (["train", "--dataset", "spirals", "--drop", "x"], "--drop applies to CSV files, not to the built-in data set 'spirals'"),
    (["train", "--dataset", "spirals", "--fill", "mean"], "--fill fills the missing cells of CSV files, and spirals is none"),
    (["train", "--dataset", "spirals:m=1"], "dataset 'spirals' takes n, classes, noise, seed, not 'm'"),
    (["train", "--dataset", "spirals:n=0"], "spirals: n must be an integer >= 1, got 0"),
    (["train", "--dataset", "digits:n=5"], "dataset 'digits' takes no options, not 'n'"),
    (["train", "--dataset", "sine", "--task", "classification"], "sine: --task classification needs class labels (text or"
                                                                 " whole numbers), but 'sin_x' holds fractional numbers like"),
    (["train", "--dataset", "words.csv", "--task", "regression"], "words.csv: --task regression needs numbers, but 'label'"
                                                                  " holds text like 'cat'"),
    (["train", "--dataset", "words.csv", "--normalize-target"], "--normalize-target standardises a regression target, but"
                                                                " this run is classification: 'label' holds text labels"),
    (["train", "--task", "regression", "--loss", "cross_entropy"], "loss 'cross_entropy' trains classification, but the task"
                                                                   " is regression"),
    (["train", "--dataset", "ragged.csv"], "line 3 has 2 fields, the header has 3"),
    (["train", "--dataset", "latin1.csv"], "not UTF-8"),
    (["train", "--dataset", "bad.csv", "--target", "lable"], "no target column 'lable'; did you mean 'label'"),
    (["train", "--dataset", "junk.npz"], "not a readable .npz file"),
    (["train", "--dataset", "narrow.npz"], "needs an array named 'y'"),
    (["train", "--dataset", "digitz"], "unknown dataset 'digitz'; did you mean 'digits'"),
    (["train", "--loss", "crossentropy"], "did you mean 'cross_entropy'"),
    (["train", "--optimizer", "adamm"], "did you mean 'adam"),
    (["train", "--activation", "rleu"], "unknown layer 'rleu'; did you mean 'relu'"),
    (["train", "--callback", "earlystopping"], "did you mean 'early_stopping'"),
    (["train", "--schedule", "cosin"], "did you mean 'cosine'"),
    (["train", "--optimizer", "adam:betaz=1"], "unexpected keyword argument 'betaz'"),
    (["train", "--lr", "-1"], "lr must be a number in [0.0, inf)"),
    (["train", "--batch-size", "0"], "batch_size must be an integer >= 1"),
    (["train", "--hidden", "12,x"], "--hidden takes comma-separated layer widths"),
    (["train", "--device", "tpu"], "unknown device 'tpu'"),
    (["train", "--config", "keys.toml"], "keys.toml: unknown key 'epoch'; did you mean 'epochs'"),
    (["train", "--config", "types.toml"], "'batch_size' must be an integer, got \"big\""),
    (["train", "--config", "broken.toml"], "broken.toml: invalid TOML"),
    (["train", "--config", "nothere.toml"], "nothere.toml: no such config file"),
    (["train", "--config", "layers.toml"], "unknown layer 'rellu'; did you mean 'relu'"),
    (["train", "--dataset", "words.csv", "--loss", "mse"], "loss 'mse' needs numeric targets, but 'label' holds text like 'cat'"),
    (["train", "--dataset", "sine", "--loss", "cross_entropy"], "holds fractional numbers like"),
    (["train", "--checkpoint", "no/such/dir/c.npz"], "cannot write checkpoint no/such/dir/c.npz: directory"),
    (["train", "--resume", "model.npz", "--seed", "1"], "--seed differs from the run saved in model.npz (seed 0 there, 1 here)"),
    (["train", "--resume", "model.npz", "--hidden", "128"], "--hidden differs from the run saved in model.npz (layers dense"
                                                           " 128, relu, dense 64, relu, dense 10 there, dense 128, relu,"
                                                           " dense 10 here)"),
    (["train", "--resume", "nothere.npz"], "nothere.npz: no such checkpoint file"),
    (["evaluate", "junk.npz"], "not a readable checkpoint, corrupt or truncated"),
    (["evaluate", "truncated.npz"], "not a readable checkpoint, corrupt or truncated"),
    (["evaluate", "tampered.npz"], "checkpoint is corrupt (checksum mismatch)"),
    (["evaluate", "narrow.npz"], "not a jitprop checkpoint"),
    (["evaluate", "model.npz", "--dataset", "words.csv"], "label(s) 'cat', 'dog' did not occur in training"),
    (["predict", "model.npz", "narrow.npz"], "narrow.npz: X has 5 features per row, but the model expects input_dim=64"),
    (["predict", "small.npz", "bad.csv"], "bad.csv: column 'b' line 2 holds 'x', not a number"),
    (["predict", "small.npz", "only_a.csv"], "only_a.csv: lacks the feature column(s) 'b' the model was trained on"),
    (["predict", "model.npz", "words.csv"], "lacks the feature column(s) 'pixel_0_0'"),
    (["predict", "model.npz", "digits", "-o", "no/such/dir/p.csv"], "cannot write output no/such/dir/p.csv: directory"),
    (["predict", "truncated.npz", "digits", "-o", "existing.csv"], "corrupt or truncated"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_changes_no_file(trained, args, message):
    before = {p: p.read_bytes() for p in Path().iterdir() if p.is_file()}
    line = one_line_error(run(*args, ok=False))
    assert message in line
    after = {p: p.read_bytes() for p in Path().iterdir() if p.is_file()}
    assert after == before


def test_jitprop_debug_shows_the_traceback(trained):
    result = run("train", "--dataset", "missing.csv", ok=False, env={"JITPROP_DEBUG": "1"})
    assert isinstance(result.exception, jitprop.DataError)


def test_binary_and_multi_output_regression_through_predict():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 2))
    np.savez("bin.npz", X=X, y=(X[:, :1] * X[:, 1:] > 0).astype(float))
    out = run("train", "--dataset", "bin.npz", "--loss", "binary_cross_entropy", "--epochs", "40", "--lr", "0.01",
              "--checkpoint", "b.npz").output
    assert float(out.splitlines()[-2].split(": ")[1]) > 0.85
    rows = list(csv.reader(io.StringIO(run("predict", "b.npz", "bin.npz").output)))
    assert rows[0] == ["y", "p_y"] and len(rows) == 301
    assert {r[0] for r in rows[1:]} <= {"0", "1"} and all(0 <= float(r[1]) <= 1 for r in rows[1:])
    np.savez("two.npz", X=X, y=np.c_[X.sum(1), X[:, 0] - X[:, 1]])
    run("train", "--dataset", "two.npz", "--epochs", "20", "--lr", "0.01", "--checkpoint", "t.npz")
    text = run("predict", "t.npz", "two.npz").output
    assert text.splitlines()[0] == "y_0,y_1" and len(text.splitlines()) == 301
    values = np.array([r.split(",") for r in text.splitlines()[1:]], dtype=float)
    assert np.mean(np.abs(values - np.c_[X.sum(1), X[:, 0] - X[:, 1]])) < 0.3


def test_a_checkpoint_saved_from_python_works_where_it_can_and_says_why_where_not():
    from jitprop.default_plugins.datasets import Digits

    table = Digits().load()
    model = jitprop.Sequential([jitprop.layer("dense", units=16), "relu", jitprop.layer("dense", units=10)], input_dim=64)
    trainer = jitprop.Trainer(model, "cross_entropy")
    trainer.fit(table.X / 16, table.y, epochs=2)
    jitprop.checkpoint.save("api.npz", trainer)
    line = one_line_error(run("evaluate", "api.npz", ok=False))
    assert "saved from Python without a run configuration; name the data with --dataset" in line
    # Its inputs are used as given, as in training: evaluate and predict do not standardise them.
    expected = jitprop.evaluate(model, table.X, table.y, loss="cross_entropy")
    assert run("evaluate", "api.npz", "--dataset", "digits").output.startswith(
        f"loss {expected['loss']:.4f}  accuracy {expected['accuracy']:.4f}"
    )
    assert "without a run configuration" in one_line_error(run("train", "--resume", "api.npz", ok=False))
    assert len(run("predict", "api.npz", "digits").output.splitlines()) == 1798


def test_saved_files_get_the_usual_permissions_and_keep_changed_ones(tmp_path):
    from jitprop.checkpoint import atomic_write

    target = tmp_path / "out.bin"
    mask = os.umask(0o022)
    try:
        atomic_write(target, lambda f: f.write(b"one"))
        assert target.stat().st_mode & 0o777 == 0o644  # not mkstemp's owner-only 0600
        os.chmod(target, 0o640)
        atomic_write(target, lambda f: f.write(b"two"))
        assert target.stat().st_mode & 0o777 == 0o640 and target.read_bytes() == b"two"
    finally:
        os.umask(mask)


def test_option_values_may_hold_commas_inside_lists_and_quotes():
    from jitprop.data.runconfig import parse_spec

    assert parse_spec("adam:betas=[0.95,0.98],lr=0.01") == {"name": "adam", "betas": [0.95, 0.98], "lr": 0.01}
    assert parse_spec('csv_logger:path="a,b.csv",append=true') == {"name": "csv_logger", "path": "a,b.csv", "append": True}
    with pytest.raises(jitprop.ConfigError, match="must look like key=value"):
        parse_spec("adam:0.9")


def test_divergence_is_one_line_and_the_checkpoint_holds_the_last_good_weights(tmp_path):
    path = tmp_path / "m.npz"
    result = run("train", "--dataset", "sine", "--optimizer", "sgd", "--lr", "50", "--epochs", "5", "--checkpoint", path,
                 ok=False)  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    message = result.output.splitlines()[-1]  # after the "training ..." line, one Error line
    assert re.match(r"Error: training diverged in epoch 1, iteration \d+: the (gradient of layer \d \(\w+\)|loss became)",
                    message)  # fmt: skip
    assert "saved" in message and "--on-divergence rollback" in message
    saved = checkpoint.load(path)
    assert all(np.all(np.isfinite(v)) for v in saved.state_dict().values())
    assert saved.meta["trainer"]["progress"] is not None  # the exact place it stopped

    result = run("train", "--dataset", "sine", "--optimizer", "sgd", "--lr", "0.5", "--epochs", "2",
                 "--on-divergence", "rollback", ok=False)  # fmt: skip
    assert result.exit_code in (0, 1)  # may or may not settle in 5 rollbacks; either way, said in words
    assert "Traceback" not in result.output


def test_resume_may_lower_the_learning_rate(tmp_path):
    path = tmp_path / "m.npz"
    run("train", "--dataset", "spirals", "--epochs", "2", "--checkpoint", path)
    run("train", "--resume", path, "--epochs", "3", "--lr", "0.0001")
    saved = checkpoint.load(path)
    assert saved.meta["trainer"]["optimizer"]["lr"] == 0.0001 and saved.meta["trainer"]["epoch"] == 3
    result = run("train", "--resume", path, "--epochs", "4", "--batch-size", "8", ok=False)
    assert one_line_error(result) == (
        f"Error: --batch-size differs from the run saved in {path} (batch_size 32 there, 8 here): a resumed run continues"
        " with its configuration; only --epochs, --checkpoint, --callback, --coach, --coach-json, --lr, --on-divergence"
        " and --divergence-factor may change"
    )


def test_a_checkpoint_written_deflated_as_before_still_loads_and_resumes(tmp_path, monkeypatch):
    import zipfile

    path = tmp_path / "old.npz"
    with monkeypatch.context() as m:
        m.setattr(np, "savez", np.savez_compressed)  # what checkpoint.save wrote until checkpoints were stored
        run("train", "--dataset", "spirals", "--epochs", "2", "--checkpoint", path)
    with zipfile.ZipFile(path) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}
    run("train", "--resume", path, "--epochs", "3")
    with zipfile.ZipFile(path) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
    assert checkpoint.load(path).meta["trainer"]["epoch"] == 3


def write_houses(path, n=40, seed=0, colors=("red", "green", "blue"), header=("id", "rooms", "color", "age", "price")):
    """Rows of a small housing table: an id, a whole-number price of many values, a text column and gaps."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rooms = int(rng.integers(1, 6))
        age = "NA" if i % 9 == 4 else "" if i % 11 == 6 else str(int(rng.integers(1, 60)))
        color = "?" if i == 10 else colors[i % len(colors)]
        price = 100_000 + 20_000 * rooms + 1013 * i + (5000 if color == "red" else 0)
        values = {"id": f"h{seed}-{i}", "rooms": rooms, "color": color, "age": age, "price": price}
        rows.append(",".join(str(values[h]) for h in header))
    Path(path).write_text(",".join(header) + "\n" + "\n".join(rows) + "\n")


HOUSES = ["train", "--dataset", "houses.csv", "--drop", "id", "--fill", "median", "--normalize-target", "--hidden", "4",
          "--epochs", "1", "--checkpoint", "h.npz", "--callback", "csv_logger:filename=log.csv"]  # fmt: skip


def test_a_csv_of_text_gaps_and_a_whole_number_quantity_trains_predicts_evaluates_and_resumes():
    from jitprop.training.trainer import split_indices

    write_houses("houses.csv")
    out = run(*HOUSES).output.splitlines()
    assert out[0].endswith("epochs 1..1; regression: 'price' holds 40 distinct whole numbers in 40 rows, more than 20"
                           " (--task classification to override)")  # fmt: skip
    saved = checkpoint.load("h.npz")
    train_rows, _ = split_indices(40, 0.2, 0, owner="run")
    cells = np.loadtxt("houses.csv", delimiter=",", skiprows=1, dtype=str).T
    rooms, prices = cells[1].astype(float), cells[4].astype(float)
    ages = np.array([np.nan if a in ("", "NA") else float(a) for a in cells[3]])
    median, mean, std = np.nanmedian(ages[train_rows]), prices[train_rows].mean(), prices[train_rows].std()
    assert out[1] == (f"columns: 2 numeric, age filled 8 with median {median:.4g}, color one-hot (3; 1 missing as zeros);"
                      f" inputs standardised (one-hot left 0/1); target 'price' standardised (mean {mean:.4g}, std {std:.4g})")
    assert saved.info["columns"] == [{"name": "rooms", "kind": "number", "fill": np.median(rooms[train_rows])},
                                     {"name": "color", "kind": "category", "categories": ["blue", "green", "red"]},
                                     {"name": "age", "kind": "number", "fill": median}]  # fmt: skip
    assert saved.info["fill"] == "median" and saved.info["task"] == "regression" and saved.info["config"]["drop"] == ["id"]
    assert saved.info["feature_names"] == ["rooms", "color=blue", "color=green", "color=red", "age"]
    np.testing.assert_allclose([saved.info_array("target_mean")[0], saved.info_array("target_std")[0]], [mean, std])

    # New rows, their columns in another order, with a gap and two categories training never saw.
    Path("new.csv").write_text("age,color,rooms\n10,red,3\n,purple,2\n30,teal,1\n")
    result = run("predict", "h.npz", "new.csv")
    assert result.stderr == ("warning: new.csv: cells of categories unseen in training, encoded as all zeros:"
                             " color 2 ('purple', 'teal')\n")  # fmt: skip
    printed = np.array(result.stdout.splitlines()[1:], dtype=float)
    inputs = np.array([[3, 0, 0, 1, 10], [2, 0, 0, 0, median], [1, 0, 0, 0, 30]], dtype=float)
    inputs = (inputs - saved.info_array("norm_mean")) / saved.info_array("norm_std")
    np.testing.assert_allclose(printed, saved.build_model().predict(inputs)[:, 0] * std + mean, rtol=1e-6)  # in dollars

    # Another file's prices are no unseen labels: a quantity. The loss is in dollars squared, then standardised.
    write_houses("more.csv", n=20, seed=1, colors=("green", "red"), header=("price", "age", "color", "rooms", "id"))
    evaluated = run("evaluate", "h.npz", "--dataset", "more.csv").output.split()
    assert evaluated[0] == "loss" and evaluated[2] == "standardised_loss" and evaluated[4:] == ["(20", "rows", "of", "more.csv)"]
    assert float(evaluated[1]) == pytest.approx(float(evaluated[3]) * std**2, rel=1e-3)

    # The same command again with --resume: every flag equal to the saved run's; the callback not added twice.
    assert "already trained for 1 epochs" in run(*HOUSES, "--resume", "h.npz").output
    longer = [*HOUSES[: HOUSES.index("--epochs") + 1], "2", *HOUSES[HOUSES.index("--epochs") + 2 :]]
    assert "epochs 2..2" in run(*longer, "--resume", "h.npz").output
    config = checkpoint.load("h.npz").info["config"]
    assert [c["name"] for c in config["callbacks"]] == ["csv_logger"] and checkpoint.load("h.npz").meta["trainer"]["epoch"] == 2
    line = one_line_error(run(*HOUSES, "--fill", "mean", "--resume", "h.npz", ok=False))
    assert line.startswith("Error: --fill differs from the run saved in h.npz (fill median there, mean here)")


def test_data_set_options_are_kept_in_the_run_and_a_resume_may_repeat_them():
    spec = "spirals:n=20,classes=2,noise=0.1,seed=1"
    args = ["train", "--dataset", spec, "--hidden", "4", "--epochs", "1", "--checkpoint", "s.npz"]
    assert tomllib.loads(run(*args, "--print-config").output)["dataset"] == spec
    first = run(*args).output.splitlines()[0]
    assert f"on {spec}: 32 training rows, 8 validation rows" in first and first.endswith("'arm' holds 2 distinct whole"
                                                                                          " numbers in 40 rows (--task regression to override)")  # fmt: skip
    assert checkpoint.load("s.npz").info["config"]["dataset"] == spec
    assert "epochs 2..2" in run(*args[:-4], "--epochs", "2", "--resume", "s.npz").output
    assert f"(8 validation rows of {spec})" in run("evaluate", "s.npz").output
    assert "(dataset spirals:n=20,classes=2,noise=0.1,seed=1 there, spirals:n=20 here)" in one_line_error(
        run("train", "--dataset", "spirals:n=20", "--resume", "s.npz", ok=False))  # fmt: skip


def test_a_resume_may_repeat_the_run_file_and_a_changed_value_in_it_is_named(in_tmp):
    Path("run.toml").write_text(run("train", "--dataset", "spirals", "--hidden", "4", "--epochs", "1", "--print-config").output)
    run("train", "--config", "run.toml", "--checkpoint", "r.npz")
    assert "epochs 2..2" in run("train", "--config", "run.toml", "--resume", "r.npz", "--epochs", "2").output
    Path("run.toml").write_text(Path("run.toml").read_text().replace("batch_size = 32", "batch_size = 8"))
    assert "Error: run.toml's 'batch_size' differs from the run saved in r.npz (batch_size 32 there, 8 here)" in one_line_error(
        run("train", "--config", "run.toml", "--resume", "r.npz", "--epochs", "3", ok=False))  # fmt: skip
