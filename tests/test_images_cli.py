"""Images from the command line: image data sets, --model, --input-shape, summaries, predictions."""

import csv
import io
import tomllib

import numpy as np
import pytest
from click.testing import CliRunner

import jitprop
from jitprop import checkpoint
from jitprop.cli import cli


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def error(*args):
    result = run(*args, ok=False)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0][len("Error: ") :]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_a_cnn_trains_on_digit_images_and_predicts_images_or_flat_rows():
    out = run("train", "--dataset", "digit_images", "--model", "cnn", "--epochs", "1", "--checkpoint", "c.npz").output
    lines = out.splitlines()
    assert lines[2].split() == ["input", "1x8x8"] and lines[3].split() == ["0", "conv2d", "16x8x8", "160"]
    assert "  6,090 parameters (float32, 23.8 KiB)" in lines
    saved = checkpoint.load("c.npz")
    assert saved.build_model().input_shape == (1, 8, 8)
    assert saved.info["config"]["input_shape"] == [1, 8, 8]
    as_images = run("predict", "c.npz", "digit_images").output
    assert len(as_images.splitlines()) == 1798
    assert run("predict", "c.npz", "digits").output == as_images  # the same pixels as flat rows
    assert "accuracy" in run("evaluate", "c.npz").output
    assert "digit_images" in run("list", "datasets").output


def test_the_run_file_shows_the_whole_stack_and_summary_reads_it():
    toml = run("train", "--dataset", "digit_images", "--model", "cnn", "--print-config").output
    config = tomllib.loads(toml)
    assert config["input_shape"] == [1, 8, 8] and [layer["name"] for layer in config["layers"]][:3] == [
        "conv2d", "relu", "max_pool2d"]  # fmt: skip
    assert config["layers"][0]["kernel_size"] == [3, 3] and "model" not in config
    with open("run.toml", "w") as f:
        f.write(toml)
    table = run("summary", "--config", "run.toml").output
    assert table == run("summary", "--dataset", "digit_images", "--model", "cnn").output
    assert table.splitlines()[0] == "digit_images: 1797 rows of 1x8x8" and "6,090 parameters" in table
    reshaped = run("summary", "--dataset", "digits", "--input-shape", "1,4,16", "--hidden", "8").output
    assert reshaped.splitlines()[2].split() == ["input", "1x4x16"] and reshaped.splitlines()[3].split()[:3] == ["0", "dense", "8"]


def test_csv_rows_of_pixels_with_an_input_shape(tmp_path):
    rng = np.random.default_rng(0)
    X = np.round(rng.uniform(0, 1, size=(40, 16)), 5)  # as the CSV holds them
    y = (X[:, :8].sum(axis=1) > X[:, 8:].sum(axis=1)).astype(int)
    header = ",".join(f"p{i}" for i in range(16)) + ",label"
    body = "\n".join(",".join(f"{v:.5f}" for v in row) + f",{t}" for row, t in zip(X, y))
    (tmp_path / "pixels.csv").write_text(header + "\n" + body + "\n")
    run("train", "--dataset", "pixels.csv", "--input-shape", "1,4,4", "--model", "cnn", "--epochs", "1",
        "--checkpoint", "p.npz")  # fmt: skip
    assert checkpoint.load("p.npz").build_model().input_shape == (1, 4, 4)
    rows = list(csv.reader(io.StringIO(run("predict", "p.npz", "pixels.csv").output)))
    assert rows[0] == ["label", "p_0", "p_1"] and len(rows) == 41
    assert "40 rows of pixels.csv" in run("evaluate", "p.npz", "--dataset", "pixels.csv").output
    np.savez("wrong.npz", X=X.reshape(40, 2, 2, 4))
    assert error("predict", "p.npz", "wrong.npz") == (
        "wrong.npz: X holds samples of shape (2, 2, 4), but the model expects input_shape=(1, 4, 4)")  # fmt: skip
    np.savez("right.npz", X=X.reshape(40, 1, 4, 4))
    assert run("predict", "p.npz", "right.npz").output == run("predict", "p.npz", "pixels.csv").output
    assert error("train", "--dataset", "pixels.csv", "--input-shape", "1,5,5") == (
        "input_shape 1x5x5 holds 25 values, but pixels.csv has 16 per row")  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "digit_images", "--model", "lenet"], "conv2d 3: kernel 5 is larger than its input 4x4"),
        (["--model", "cnnn"], "unknown model 'cnnn'; did you mean 'cnn'?"),
        (["--model", "cnn"], "conv2d 0: takes samples of shape (channels, height, width), got 64;"
                             " give the model input_shape=(C, H, W)"),
        (["--dataset", "digit_images", "--model", "cnn", "--hidden", "8"], "--hidden, --activation and --dropout shape"),
        (["--input-shape", "1,x"], "--input-shape takes comma-separated sizes like 1,28,28"),
    ],
)  # fmt: skip
def test_models_that_cannot_be_built_are_one_line(args, message):
    assert error("train", *args).startswith(message)


def test_lenet_on_28x28_has_lenets_shapes_and_parameters():
    model = jitprop.Sequential([jitprop.layer(**spec) for spec in jitprop.model.architectures.lenet(10)], input_shape=(1, 28, 28))
    assert model.shapes[4] == (16, 10, 10) and model.shapes[7] == (400,) and model.n_params == 61_706
