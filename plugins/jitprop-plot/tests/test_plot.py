"""jitprop-plot through jitprop's real plugin loading: the `plot` command, the `plot` callback, their errors."""

import os
import sys

# Load this package through its installed entry point, and no other third-party plugin.
ALREADY_IMPORTED = "jitprop" in sys.modules
os.environ["JITPROP_LOAD_PLUGINS"] = "plot"

import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import jitprop  # noqa: E402
from jitprop.testing import command as run, one_line_error  # noqa: E402

import jitprop_plot  # noqa: E402

jitprop.plugins.load_plugins()  # importing jitprop or its CLI loads no plugin: the first use does
if "plot" in jitprop.plugins.failed_plugins:
    raise AssertionError(f"the plot entry point failed to load: {jitprop.plugins.failed_plugins['plot']}")
if jitprop.plugins.pm.get_plugin("plot") is None:
    if ALREADY_IMPORTED:  # another suite loaded jitprop first with JITPROP_LOAD_PLUGINS=""
        pytest.skip("run plugins/jitprop-plot's tests on their own", allow_module_level=True)
    raise AssertionError("the plot entry point did not load: pip install -e plugins/jitprop-plot")

JITPROP = str(Path(sys.executable).with_name("jitprop"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BLUE, ORANGE = (0.122, 0.467, 0.706), (1.0, 0.498, 0.055)  # matplotlib's tab:blue (train), tab:orange (validation)
TRAIN = ["train", "--dataset", "spirals", "--hidden", "16", "--batch-size", "16", "--lr", "0.02", "--epochs", "3"]


def color_pixels(image, rgb, tolerance=0.06):
    return int((np.abs(image[:, :, :3] - np.array(rgb)) < tolerance).all(axis=2).sum())


def check_png(path, validation=True, points=100):
    """A whole PNG that matplotlib decodes into an 800-pixel-wide chart with the curves' colours in it."""
    import matplotlib.image

    data = Path(path).read_bytes()
    assert data.startswith(PNG_SIGNATURE) and data.endswith(b"IEND\xaeB`\x82")
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert width == 800 and 300 <= height <= 1200
    assert (image[:, :, :3] < 0.9).any(axis=2).mean() > 0.01  # not blank
    assert color_pixels(image, BLUE) > points
    assert (color_pixels(image, ORANGE) > points) == validation
    return image


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short real run: 3 epochs on spirals with validation, logged to run.csv, saved to model.npz,
    and drawn after every epoch by the plot callback given on the command line."""
    where = tmp_path_factory.mktemp("run")
    cwd = os.getcwd()
    os.chdir(where)
    try:
        out = run(*TRAIN, "--checkpoint", "model.npz", "--callback", "csv_logger:filename=run.csv",
                  "--callback", "plot:path=live.png").output  # fmt: skip
        assert "epoch 3/3" in out and "saved model.npz" in out
        # A checkpoint saved before any training: a real checkpoint with an empty history.
        model = jitprop.Sequential([jitprop.layer("dense", units=3)], input_dim=2)
        jitprop.checkpoint.save("fresh.npz", jitprop.Trainer(model, loss="cross_entropy"))
    finally:
        os.chdir(cwd)
    return where


@pytest.fixture
def in_run(trained, monkeypatch):
    monkeypatch.chdir(trained)
    return trained


def test_loaded_from_its_entry_point_without_importing_matplotlib():
    code = ("import sys, click, jitprop.cli as c; assert 'plot' in c.cli.list_commands(click.Context(c.cli));"
            " assert 'matplotlib' not in sys.modules")
    env = {**os.environ, "JITPROP_LOAD_PLUGINS": "plot"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    rows = {r["name"]: r for r in json.loads(run("plugins", "--json").output)}
    assert rows["plot"]["package"] == "jitprop-plot"
    assert {"register_callbacks", "register_commands"} <= set(rows["plot"]["hooks"])
    assert any(line.split()[:2] == ["plot", "plot"] for line in run("list", "callbacks").output.splitlines())
    assert "Examples:" in run("plot", "--help").output


def test_plot_command_on_a_csv_logger_csv(in_run):
    out = run("plot", "run.csv", "-o", "from_csv.png").output
    assert out.startswith("wrote from_csv.png: 3 epochs; best val_loss ")
    check_png("from_csv.png")
    assert not [p for p in os.listdir(".") if p.endswith(".tmp")]


def test_plot_command_on_a_checkpoint_reads_the_same_history(in_run):
    out = run("plot", "model.npz", "--title", "spirals, 3 epochs").output  # default output: model.png
    assert out.startswith("wrote model.png: 3 epochs")
    check_png("model.png")
    from_csv, from_checkpoint = jitprop_plot.read("run.csv"), jitprop_plot.read("model.npz")
    assert from_csv.epochs == from_checkpoint.epochs == [1, 2, 3]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert np.allclose(from_csv.series[key], from_checkpoint.series[key], rtol=1e-12)
    assert from_csv.best_epoch() == from_checkpoint.best_epoch()


def test_the_installed_command_in_a_real_process(in_run):
    env = {**os.environ, "JITPROP_LOAD_PLUGINS": "plot"}
    done = subprocess.run([JITPROP, "plot", "run.csv", "-o", "process.png"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    check_png("process.png")
    bad = subprocess.run([JITPROP, "plot", "nope.csv"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr == "Error: nope.csv: no such file\n" and bad.stdout == ""


def test_callback_from_the_command_line_drew_the_run(in_run):
    check_png("live.png")
    assert (Path("live.png").stat().st_mode & 0o777) == 0o666 & ~_umask()  # not the temp file's 0o600


def test_callback_from_a_toml_run_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("run.toml").write_text(
        'dataset = "spirals"\nhidden = [16]\nepochs = 2\n\n[[callbacks]]\nname = "plot"\npath = "toml.png"\nevery = 2\n'
    )
    printed = run("train", "--config", "run.toml", "--print-config").output
    assert '[[callbacks]]\nname = "plot"\npath = "toml.png"\nevery = 2\n' in printed
    run("train", "--config", "run.toml")
    check_png("toml.png")


def spirals(n=90, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    r = np.tile(np.linspace(0.0, 1.0, n), classes)
    t = np.concatenate([np.linspace(4 * c, 4 * (c + 1), n) for c in range(classes)]) + rng.normal(size=n * classes) * 0.2
    return np.c_[r * np.sin(t), r * np.cos(t)], np.repeat(np.arange(classes), n)


class Watch:
    """Runs after the plot callback (callbacks run in list order) and keeps the picture each epoch left."""

    def __init__(self, path):
        self.path, self.seen = path, []

    @jitprop.hookimpl
    def on_epoch_end(self, epoch):
        self.seen.append(self.path.read_bytes() if self.path.exists() else None)


@pytest.mark.parametrize("every", [1, 2])
def test_callback_refreshes_the_png_during_fit(tmp_path, every):
    path = tmp_path / "live.png"
    watch = Watch(path)
    X, y = spirals()
    model = jitprop.Sequential(
        [jitprop.layer("dense", units=16), "relu", jitprop.layer("dense", units=3)], input_dim=2, seed=0
    )
    epochs = 2 * every + 1
    history = jitprop.fit(
        model, X, y, loss="cross_entropy", optimizer=jitprop.optimizer("adam", lr=0.02), epochs=epochs,
        validation_split=0.25, callbacks=[jitprop.callback("plot", path=str(path), every=every), watch],
    )  # fmt: skip
    assert len(history.epoch) == epochs
    drawn = [i for i in range(epochs) if (i + 1) % every == 0]
    for i, data in enumerate(watch.seen):
        if i < every - 1:
            assert data is None
        elif i in drawn:
            assert data.startswith(PNG_SIGNATURE) and (i == 0 or data != watch.seen[i - 1])  # redrawn this epoch
        else:
            assert data == watch.seen[i - 1]  # not this epoch
    final = path.read_bytes()
    # The end of training draws the epochs since the last picture.
    assert (final != watch.seen[-1]) == (epochs % every != 0)
    check_png(path)
    assert not list(tmp_path.glob("*.tmp"))


def test_callback_options_are_checked():
    for options, message in [({"every": 0}, "every must be an integer >= 1"), ({"path": ""}, "path must be a file name")]:
        with pytest.raises(jitprop.ConfigError, match=message):
            jitprop.callback("plot", **options)
    cb = jitprop.callback("plot", path="x.png", every=3)
    assert isinstance(cb, jitprop.Callback) and cb.config() == {"path": "x.png", "every": 3, "title": None}


ERRORS = [
    (["missing.csv"], "Error: missing.csv: no such file"),
    (["noloss.csv"], "Error: noloss.csv: no 'loss' column (columns: epoch, accuracy)"),
    (["header.csv"], "Error: header.csv: no epochs recorded yet"),
    (["text.csv"], "Error: text.csv line 3: loss is 'oops', not a number"),
    (["other.npz"], "Error: other.npz: not a jitprop checkpoint"),
    (["fresh.npz"], "Error: fresh.npz: no epochs recorded yet"),
    (["run.csv", "-o", "no/such/dir/x.png"], "Error: cannot write no/such/dir/x.png: directory "),
    (["run.csv", "-o", "."], "Error: cannot write .: it is a directory"),
]


@pytest.mark.parametrize("args, message", ERRORS, ids=[a[-1] for a, _ in ERRORS])
def test_user_mistakes_are_one_line_and_keep_the_existing_png(in_run, args, message):
    Path("noloss.csv").write_text("epoch,accuracy\n1,0.5\n")
    Path("header.csv").write_text("epoch,loss,val_loss\n")
    Path("text.csv").write_text("epoch,loss\n1,0.5\n2,oops\n")
    np.savez("other.npz", X=np.zeros((3, 2)))
    run("plot", "run.csv", "-o", "keep.png")
    before = Path("keep.png").read_bytes()
    if "-o" not in args:
        args = [*args, "-o", "keep.png"]
    assert one_line_error(run("plot", *args, ok=False)).startswith(message)
    assert Path("keep.png").read_bytes() == before


def test_unwritable_directory(in_run, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes anywhere: let the permission check see what anyone else would
        access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: access(p, mode) and not (p == str(locked) and mode & os.W_OK))
    line = one_line_error(run("plot", "run.csv", "-o", locked / "x.png", ok=False))
    assert line.endswith("is not writable")


def test_an_output_it_cannot_write_is_refused_before_reading_or_drawing(in_run, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", lambda *a, **k: pytest.fail("drew a picture it could not write"))
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"the user's picture")
    mine.chmod(0o444)  # read-only: refused as jitprop refuses a read-only checkpoint, root included
    nowhere = tmp_path / "no" / "x.png"
    cases = [(mine, f"cannot write {mine}: it is read-only"), (tmp_path, f"cannot write {tmp_path}: it is a directory"),
             (nowhere, f"cannot write {nowhere}: directory {nowhere.parent} does not exist")]
    for output, message in cases:
        for source in ("run.csv", "missing.csv"):  # the output first: nothing is read for a picture it cannot write
            assert one_line_error(run("plot", source, "-o", output, ok=False)) == f"Error: {message}"
    assert mine.read_bytes() == b"the user's picture" and (mine.stat().st_mode & 0o777) == 0o444


def test_the_callback_refuses_a_read_only_picture_before_the_first_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("mine.png").write_bytes(b"the user's picture")
    Path("mine.png").chmod(0o444)
    result = run(*TRAIN, "--callback", "plot:path=mine.png", ok=False)
    assert result.exit_code != 0 and "Traceback" not in result.output and "epoch 1/" not in result.output
    assert result.output.splitlines()[-1] == "Error: plot: cannot write mine.png: it is read-only"
    assert Path("mine.png").read_bytes() == b"the user's picture"


def test_bad_callbacks_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert one_line_error(run(*TRAIN, "--callback", "plot:every=0", ok=False)) == (
        "Error: plot: every must be an integer >= 1, got 0"
    )
    result = run(*TRAIN, "--callback", "plot:path=no/dir/x.png", ok=False)  # found before the first epoch
    assert result.exit_code != 0 and "Traceback" not in result.output and "epoch 1/" not in result.output
    assert result.output.splitlines()[-1].startswith("Error: plot: cannot write no/dir/x.png: directory ")


def test_callback_on_a_resumed_run(in_run, tmp_path, monkeypatch):
    import shutil

    shutil.copy("model.npz", tmp_path / "copy.npz")
    monkeypatch.chdir(tmp_path)
    result = run("train", "--resume", "copy.npz", "--epochs", "4", "--callback", "plot:path=no/dir/x.png", ok=False)
    assert result.exit_code != 0 and "Traceback" not in result.output and "epoch 4/" not in result.output
    assert result.output.splitlines()[-1].startswith("Error: plot: cannot write no/dir/x.png: directory ")
    run("train", "--resume", "copy.npz", "--epochs", "4", "--callback", "plot:path=resumed.png")
    check_png("resumed.png")
    # saved where it was resumed from: the whole run, not just the resumed epoch
    assert jitprop_plot.read("copy.npz").epochs == [1, 2, 3, 4]


def test_an_existing_png_survives_a_failed_redraw(in_run, monkeypatch):
    curves = jitprop_plot.read("run.csv")
    jitprop_plot.write_png(curves, "kept.png")
    before = Path("kept.png").read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:  # the new picture is written, then fails before the rename
        patch.setattr(os, "fsync", fail)
        with pytest.raises(jitprop.DataError, match="cannot write kept.png: No space left on device"):
            jitprop_plot.write_png(curves, "kept.png")
    assert Path("kept.png").read_bytes() == before

    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("drawing failed")))
    with pytest.raises(RuntimeError, match="drawing failed"):
        jitprop_plot.write_png(curves, "kept.png")
    assert Path("kept.png").read_bytes() == before
    assert not [p for p in os.listdir(".") if p.endswith(".tmp")]


def test_regression_history_with_a_schedule_and_gaps(tmp_path):
    n = 12
    curves = jitprop_plot.Curves(
        range(1, n + 1),
        {
            "loss": [2.0 / (e + 1) for e in range(n)],
            "val_loss": [math.nan] * 4 + [2.5 / (e + 1) + 0.01 * e for e in range(4, n)],  # validation from epoch 5
            "lr": [0.1 * 0.5 ** (e // 4) for e in range(n)],
        },
        "regression",
    )
    assert curves.best_epoch()[0] in range(5, n + 1)
    path = tmp_path / "reg.png"
    jitprop_plot.write_png(curves, path)
    image = check_png(path)
    assert image.shape[0] > 400  # loss panel plus the learning-rate panel
    one = jitprop_plot.Curves([1], {"loss": [0.7]}, "one epoch")
    assert one.best_epoch() is None and one.summary() == "1 epoch"
    jitprop_plot.write_png(one, path)
    check_png(path, validation=False, points=20)  # one point, no line


def test_readme_python_examples_run(in_run):
    import re

    readme = Path(__file__).resolve().parents[1] / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
    assert len(blocks) == 2
    for block in blocks:  # the first trains with the callback; the second reads run.csv and model.npz
        exec(compile(block, str(readme), "exec"), {"__name__": "readme_example"})
    check_png("curves.png")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- jitprop's own pictures, through the draw_picture hook --------------------


def test_lr_find_draws_its_picture_through_the_hook(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = run("lr-find", "--hidden", "16", "--num-it", "30", "--plot", "lr.png").output.splitlines()
    assert "wrote lr.png" in out and out[-1].startswith("suggested lr: ")
    data = (tmp_path / "lr.png").read_bytes()
    assert data.startswith(PNG_SIGNATURE) and data.endswith(b"IEND\xaeB`\x82")
    import matplotlib.image

    image = matplotlib.image.imread(tmp_path / "lr.png")
    assert (image[:, :, :3] < 0.9).any(axis=2).mean() > 0.01 and color_pixels(image, BLUE) > 100


def test_a_picture_has_its_curves_marks_and_scales():
    from jitprop.views.lr_find import LRFind, picture
    from jitprop.views.picture import Panel, Picture, Series

    lrs = np.geomspace(1e-7, 10, 40)
    smoothed = np.concatenate([np.full(20, 2.3), np.linspace(2.3, 0.5, 15), np.linspace(0.6, 3.0, 5)])
    result = LRFind(lrs, smoothed, smoothed, float(lrs[25]), 25)
    fig = jitprop_plot.pictures.figure(picture(result))
    (ax,) = fig.axes
    assert len(ax.lines) == 2 and ax.get_xscale() == "log"  # the smoothed curve and the suggestion
    np.testing.assert_allclose(ax.lines[0].get_xdata(), lrs[:35])  # fast.ai leaves the last 5 points out
    assert ax.lines[1].get_xdata()[0] == lrs[25] and "suggested lr" in ax.lines[1].get_label()
    grid = Picture("runs", [Panel(f"run {i}", "epoch", "loss", [Series("train", [1, 2], [1.0, 0.5]),
                                                                  Series("val", [1, 2], [1.1, 0.7], points=True)])
                            for i in range(5)], columns=3)  # fmt: skip
    fig = jitprop_plot.pictures.figure(grid)
    visible = [a for a in fig.axes if a.get_visible()]
    assert len(visible) == 5 and all(len(a.lines) == 2 for a in visible)
    assert visible[0].lines[1].get_linestyle() == "None"  # points: markers only


def test_sweep_draws_a_grid_of_its_runs_on_one_scale(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = run("sweep", "--lr", "1e-3,1e-2", "--batch-size", "16,64", "--hidden", "16", "--epochs", "3", "--plot", "s.png")
    assert out.output.splitlines()[-1] == "wrote s.png"
    assert (tmp_path / "s.png").read_bytes().startswith(PNG_SIGNATURE)
    X = np.random.default_rng(0).normal(size=(200, 4))
    y = (X[:, 0] > 0).astype(int)
    table = jitprop.sweep(X, y, lr=[1e-3, 1e-2], batch_size=[16, 64], hidden=[[8]], epochs=[3])
    fig = jitprop_plot.pictures.figure(table.picture())
    axes = [a for a in fig.axes if a.get_visible()]
    assert len(axes) == 4 and all(len(a.lines) == 3 for a in axes)  # train, validation, the best epoch
    assert axes[0].get_shared_y_axes().joined(axes[0], axes[3])  # one scale: the runs compare at a glance
