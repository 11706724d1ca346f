"""Guards against runs that would go wrong quietly: a finite but exploding loss, settings that
cannot train, and inputs whose meaning jitprop would otherwise guess wrong (issue 18)."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import spirals

import jitprop
from jitprop.cli import cli
from jitprop.data.prepare import target_task
from jitprop.data.runconfig import parse_spec
from jitprop.data.tables import read_csv
from jitprop.plugins import registry
from jitprop.testing import command, one_line_error
from jitprop.training.trainer import DIVERGENCE_FACTOR, TrainingWarning


def small_mlp(activation="relu", seed=0):
    return jitprop.Sequential([jitprop.layer("dense", units=16), activation, jitprop.layer("dense", units=3)],
                              input_dim=2, seed=seed)  # fmt: skip


def exploding_adam(**kwargs):
    """Adam at lr=1e10 on the spirals: every loss stays finite (it reaches about 1e20) but grows."""
    X, y = spirals()
    trainer = jitprop.Trainer(small_mlp(), loss="cross_entropy", optimizer=jitprop.optimizer("adam", lr=1e10), **kwargs)
    return trainer, trainer.fit(X, y, epochs=4)


# -- a finite loss that explodes ------------------------------------------------


def test_a_finite_but_exploding_loss_stops_as_divergence():
    trainer, history = exploding_adam()
    assert trainer.divergence is not None and trainer.divergence["epoch"] == 1
    assert trainer.divergence["reason"].startswith("the epoch's mean loss grew from ")
    assert "over divergence_factor=10000 times" in trainer.stop_reason
    # The epoch that exploded is logged (its loss finite, far past the start), and training stops after it.
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])
    assert history.history["loss"][0] > DIVERGENCE_FACTOR * history.baseline_loss


def test_fit_warns_of_an_exploding_loss_and_zero_switches_the_rule_off():
    X, y = spirals()
    with pytest.warns(RuntimeWarning, match=r"training diverged in epoch 1, iteration \d+: the epoch's mean loss grew"):
        jitprop.fit(small_mlp(), X, y, loss="cross_entropy", optimizer=jitprop.optimizer("adam", lr=1e10), epochs=3)
    for off in (0, None):
        trainer, history = exploding_adam(divergence_factor=off)
        assert trainer.divergence is None and len(history.history["loss"]) == 4


def test_an_exploding_loss_rolls_back_and_lowers_the_rate():
    trainer, _ = exploding_adam(on_divergence="rollback")
    assert len(trainer.rollbacks) == 5 and trainer.rollbacks[0]["lr"] == 5e9
    assert all("mean loss grew" in r["reason"] for r in trainer.rollbacks)
    assert trainer.divergence is not None and "after 5 rollbacks" in trainer.stop_reason


def test_a_higher_divergence_factor_lets_more_growth_pass_and_a_bad_one_is_refused():
    trainer, _ = exploding_adam(divergence_factor=1e30)
    assert trainer.divergence is None
    with pytest.raises(jitprop.ConfigError, match="divergence_factor must be above 1"):
        jitprop.Trainer(small_mlp(), divergence_factor=0.5)
    with pytest.raises(jitprop.ConfigError, match="divergence_factor must be a number"):
        jitprop.Trainer(small_mlp(), divergence_factor=-1)


@pytest.mark.parametrize("name", sorted(e.name for e in registry.entries("dataset")))
def test_default_runs_of_every_built_in_data_set_do_not_diverge(name):
    result = CliRunner().invoke(cli, ["train", "--dataset", name, "--epochs", "3", "--hidden", "32"])
    assert result.exit_code == 0, result.output
    assert "diverged" not in result.output


def test_the_command_line_ends_an_exploding_run_in_one_line():
    result = CliRunner().invoke(cli, ["train", "--dataset", "spirals", "--epochs", "3", "--lr", "1e10"])
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "the epoch's mean loss grew from" in errors[0], result.output


EXPLODING = ("train", "--dataset", "spirals", "--hidden", "8", "--epochs", "3", "--lr", "1e10")


def last_error(result):
    """The ``Error:`` line a failed run ended with, after its banner and epochs."""
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    return result.output.splitlines()[-1]


def test_divergence_factor_flag_sets_the_rule_and_zero_switches_it_off():
    assert "over divergence_factor=10000 times" in last_error(command(*EXPLODING, ok=False))
    assert "over divergence_factor=100 times" in last_error(command(*EXPLODING, "--divergence-factor", "100", ok=False))
    for off in ("0", "1e30"):  # the loss reaches about 1e20 and stays finite: every epoch trains
        out = command(*EXPLODING, "--divergence-factor", off).output
        assert "epoch 3/3" in out and "diverged" not in out


def test_divergence_factor_in_a_run_file_and_in_print_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "divergence_factor = 10000.0\n" in command("train", "--dataset", "spirals", "--print-config").output
    Path("run.toml").write_text("divergence_factor = 0\n")
    printed = command(*EXPLODING, "--config", "run.toml", "--print-config").output
    assert "divergence_factor = 0\n" in printed
    Path("printed.toml").write_text(printed)  # what --print-config writes runs as it said
    assert "epoch 3/3" in command("train", "--config", "printed.toml").output
    assert "epoch 3/3" in command(*EXPLODING, "--config", "run.toml").output
    flag_wins = command(*EXPLODING, "--config", "run.toml", "--divergence-factor", "100", ok=False)
    assert "over divergence_factor=100 times" in last_error(flag_wins)


def test_a_resumed_run_may_change_its_divergence_factor(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command("train", "--dataset", "spirals", "--hidden", "8", "--epochs", "1", "--checkpoint", "run.npz")
    resumed = ("train", "--resume", "run.npz", "--epochs", "3", "--lr", "1e10")
    out = command(*resumed, "--divergence-factor", "0").output
    assert "epoch 3/3" in out and "diverged" not in out
    assert "divergence_factor = 0.0\n" in command("train", "--resume", "run.npz", "--print-config").output  # kept


def test_a_bad_divergence_factor_is_one_line_before_anything_runs():
    for value in ("-1", "0.5", "1", "inf", "nan"):
        line = one_line_error(command("train", "--dataset", "spirals", "--divergence-factor", value, ok=False))
        assert line.startswith("Error: run: 'divergence_factor' must be a number above 1, or 0 to switch the rule off, got "), line
    for text in ("abc", ""):
        line = one_line_error(command("train", "--dataset", "spirals", "--divergence-factor", text, ok=False))
        assert line == f"Error: --divergence-factor takes a number, got {text!r}"


def test_a_bad_divergence_factor_in_a_run_file_is_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for value, said in (("0.5", "a number above 1, or 0"), ('"big"', "an integer or a number")):
        Path("run.toml").write_text(f"divergence_factor = {value}\n")
        line = one_line_error(command("train", "--config", "run.toml", ok=False))
        assert line.startswith("Error: run.toml: 'divergence_factor' must be ") and said in line, line


# -- the divergence advice for eps=0 ----------------------------------------------


@pytest.mark.parametrize("name", ["adam", "rmsprop", "adagrad"])
def test_divergence_from_eps_zero_says_so_instead_of_a_lower_rate(name):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    X[:32, 0] = 0.0  # the first batch gives column 0's weights no gradient: 0 / (sqrt(0) + eps)
    y = (X[:, 1] > 0).astype(np.int64)
    model = jitprop.Sequential([jitprop.layer("dense", units=8), "tanh", jitprop.layer("dense", units=2)], input_dim=3)
    trainer = jitprop.Trainer(model, loss="cross_entropy", optimizer=jitprop.optimizer(name, eps=0.0), shuffle=False)
    trainer.fit(X, y, epochs=2)
    assert trainer.divergence is not None
    assert f"{name}'s eps=0 divides by zero" in trainer.stop_reason and "set eps=1e-8" in trainer.stop_reason


# -- settings that cannot train ----------------------------------------------------


def test_a_rate_of_zero_warns():
    with pytest.warns(TrainingWarning, match=r"optimizer 'sgd' has lr=0: the weights will not move"):
        jitprop.Trainer(small_mlp(), optimizer=jitprop.optimizer("sgd", lr=0.0))
    trainer = jitprop.Trainer(small_mlp())
    with pytest.warns(TrainingWarning, match=r"optimizer 'adam' has lr=0"):
        trainer.set_learning_rate(0)  # what --resume ... --lr 0 does


@pytest.mark.parametrize("between", [[], ["dropout"], ["dropout", "dropout"]])
def test_affine_layers_with_nothing_nonlinear_between_them_warn(between):
    layers = [jitprop.layer("dense", units=8), *between, jitprop.layer("dense", units=3)]
    with pytest.warns(TrainingWarning, match=rf"layers 0 \(dense\) and {len(between) + 1} \(dense\) have nothing nonlinear"):
        jitprop.Trainer(jitprop.Sequential(layers, input_dim=2))


def test_sound_settings_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jitprop.Trainer(small_mlp())
        jitprop.Trainer(small_mlp("tanh"), optimizer=jitprop.optimizer("sgd", lr=0.1))
        jitprop.Trainer(jitprop.Sequential([jitprop.layer("dense", units=1)], input_dim=2))  # one layer: a linear model


SMALL = ("--dataset", "spirals", "--hidden", "8")


def test_epochs_below_what_a_command_can_use_are_one_line_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert one_line_error(command("explain", *SMALL, "--epochs", "-3", ok=False)) == "Error: epochs must be 0 or more, got -3"
    for epochs in ("-2", "0"):  # a sweep of runs that train nothing compares nothing
        assert one_line_error(command("sweep", *SMALL, "--lr", "0.01", "--epochs", epochs, ok=False)) == (
            f"Error: --epochs takes positive values, got '{epochs}'")
        Path("run.toml").write_text(f"epochs = {epochs}\n")  # without --epochs every run trains the run file's
        assert one_line_error(command("sweep", *SMALL, "--config", "run.toml", "--lr", "0.01", ok=False)) == (
            f"Error: epochs must be 1 or more, got {epochs} (the run file's, which every run trains without --epochs)")


def test_sweep_workers_below_one_are_one_line():
    for workers in ("0", "-1"):
        line = one_line_error(command("sweep", *SMALL, "--lr", "0.01", "--workers", workers, ok=False))
        assert line == f"Error: --workers must be 1 or more, got {workers}"


@pytest.mark.parametrize("name", ["check", "explain", "lr-find", "train"])
def test_a_batch_size_below_one_is_one_line_before_anything_runs(name):
    line = one_line_error(command(name, *SMALL, "--batch-size", "0", ok=False))
    assert line == "Error: run: batch_size must be an integer >= 1, got 0"  # check said "X has no rows"


# -- inputs whose meaning would be guessed wrong -------------------------------------


def test_huge_whole_floats_are_a_quantity_not_classes():
    y = np.repeat([1e307, 2e307, 3e307], 10)
    task, why = target_task(y)
    assert task == "regression" and "beyond 2**53" in why
    assert target_task(np.repeat([0.0, 1.0, 2.0], 10))[0] == "classification"
    assert target_task(np.repeat([2**53, 2**53 - 1], 10))[0] == "classification"  # still exact integers


def test_targets_near_the_float_limit_leak_no_numpy_warning():
    X = np.linspace(0, 1, 30).reshape(-1, 1)
    y = np.where(np.arange(30) % 2, 1.5e308, -1.7e308)
    model = jitprop.Sequential([jitprop.layer("dense", units=1)], input_dim=1, dtype="float64")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = jitprop.Trainer(model, loss="mse")
        trainer.fit(X, y, epochs=1)
    assert not [w for w in caught if "overflow" in str(w.message) or "invalid value" in str(w.message)], caught
    assert trainer.divergence is not None  # the one line that says what went wrong


@pytest.mark.parametrize("sep,looks", [(";", "semicolon"), ("\t", "tab")])
def test_a_csv_with_another_delimiter_is_named(tmp_path, sep, looks):
    path = tmp_path / "data.csv"
    path.write_text(sep.join("abc") + "\n" + sep.join("123") + "\n" + sep.join("456") + "\n")
    with pytest.raises(jitprop.DataError, match=rf"looks {looks}-separated; jitprop reads comma-separated files"):
        read_csv(path)
    result = CliRunner().invoke(cli, ["train", "--dataset", str(path), "--epochs", "1"])
    assert result.exit_code != 0 and f"looks {looks}-separated" in result.output


def test_a_one_column_header_a_model_was_trained_on_is_read(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a;b\n1\n2\n")  # a column really named "a;b", as a trained model's feature
    assert read_csv(path, need_target=False, features=["a;b"]).X.tolist() == [[1.0], [2.0]]


def test_a_repeated_option_is_refused_naming_it():
    with pytest.raises(jitprop.ConfigError, match=r"option 'lr' is given twice"):
        parse_spec("sgd:lr=0.1,lr=0.2")
    assert parse_spec("sgd:lr=0.1,momentum=0.9") == {"name": "sgd", "lr": 0.1, "momentum": 0.9}


def test_a_run_whose_activations_memory_cannot_hold_is_refused_in_one_line(monkeypatch):
    """The parameters fit (Sequential's own check passes), a batch's activations do not."""
    from jitprop.data import arrays

    X, y = np.random.default_rng(0).normal(size=(64, 2)), np.arange(64) % 3
    model = jitprop.Sequential([jitprop.layer("dense", units=20000), "relu", jitprop.layer("dense", units=3)], input_dim=2)
    monkeypatch.setattr(arrays, "available_memory", lambda: 8 << 20)  # 8 MiB: the weights need 1.8
    with pytest.raises(jitprop.DataError, match=r"^training 120,003 parameters on batches of 32 rows needs .* of activations\), "
                                                r"more than the 8.0 MiB of memory available: train a smaller model"):
        jitprop.fit(model, X, y, loss="cross_entropy", epochs=1)


def test_a_csv_that_never_ends_is_refused_not_read_for_ever(tmp_path, monkeypatch):
    from jitprop.data import tables

    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    monkeypatch.setattr(tables, "available_memory", lambda: 16 << 20)
    with pytest.raises(jitprop.DataError, match=r"zero.csv: reading this CSV file: it is not a regular file, and it went on"
                                                r" past 8.0 MiB, half the memory available, without ending"):
        tables.read_csv(tmp_path / "zero.csv")
