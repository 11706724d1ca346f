"""Checkpoints written by an earlier release still load, evaluate, predict and resume.

``tests/data`` holds two checkpoints that jitprop 0.1.0 wrote for one run
(``--dataset spirals --hidden 8 --dropout 0.1 --batch-size 16 --seed 5``):
one interrupted part-way through epoch 2, one of the same run finished at
epoch 2. Resuming the first must land on the second's weights. Both are of
format 1, whose history is JSON lists and every iteration's loss.
"""

import json
import shutil
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from jitprop import checkpoint
from jitprop.cli import cli
from jitprop.training import history

DATA = Path(__file__).parent / "data"
MIDEPOCH = DATA / "release-0.1.0-midepoch.npz"
FINISHED = DATA / "release-0.1.0-epoch2.npz"


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_part_way_checkpoint_of_0_1_0_resumes_onto_the_uninterrupted_run(tmp_path):
    path = tmp_path / "run.npz"
    shutil.copy(MIDEPOCH, path)
    saved = checkpoint.load(path)
    assert saved.meta["trainer"]["progress"]["batch"] == 7 and saved.meta["trainer"]["epoch"] == 1
    run("train", "--resume", path)
    resumed, expected = checkpoint.load(path), checkpoint.load(FINISHED)
    assert resumed.meta["trainer"]["epoch"] == 2 and resumed.meta["trainer"]["step"] == expected.meta["trainer"]["step"]
    for key, value in expected.state_dict().items():
        np.testing.assert_allclose(resumed.state_dict()[key], value, rtol=1e-6, atol=1e-7, err_msg=key)
    np.testing.assert_allclose(resumed.history["history"]["val_loss"], expected.history["history"]["val_loss"], rtol=1e-6)


def test_a_finished_checkpoint_of_0_1_0_evaluates_predicts_and_trains_on(tmp_path):
    out = run("evaluate", FINISHED)
    assert "accuracy" in out and "60 validation rows of spirals" in out
    predictions = run("predict", FINISHED, "spirals").splitlines()
    assert predictions[0] == "arm,p_0,p_1,p_2" and len(predictions) == 301
    path = tmp_path / "more.npz"
    shutil.copy(FINISHED, path)
    before = FINISHED.read_bytes()
    run("train", "--resume", path, "--epochs", "3")  # the run was first saved elsewhere: not there
    assert checkpoint.load(path).meta["trainer"]["epoch"] == 3 and FINISHED.read_bytes() == before


def test_a_format_1_history_of_a_long_run_is_read_and_bounded(tmp_path):
    """Format 1 kept every iteration's loss: loading one past the window folds the older ones into
    the summary, and the next save writes format 2."""
    old = checkpoint.load(FINISHED)
    losses = np.linspace(2.0, 1.0, history.ITERATION_WINDOW + 150_000)
    arrays = {**old.arrays, "state/iteration_loss": losses}
    text = json.dumps(old.meta)
    path = tmp_path / "long.npz"
    np.savez(path, meta=np.array(text), checksum=np.array(checkpoint._checksum(text, arrays)), **arrays)
    saved = checkpoint.load(path)
    assert saved.meta["version"] == 1 and saved.history == old.history
    run("train", "--resume", path, "--epochs", "3")
    again = checkpoint.load(path)
    h = again.meta["trainer"]["history"]
    assert again.meta["version"] == checkpoint.VERSION and h["first_loss"] == 2.0 and h["iterations_folded"] == 150_000
    window = again.arrays["state/iteration_loss"]
    assert np.array_equal(window[: history.ITERATION_WINDOW], losses[150_000:]) and len(window) == history.ITERATION_WINDOW + 15
    assert again.history["epoch"] == [0, 1, 2]
    assert again.history["history"]["val_loss"][:2] == old.history["history"]["val_loss"]
