"""Writing user files: what is replaced atomically, what is written as it is, what is refused,
and that a failed run leaves earlier output whole (issue 18, items 1 and 2)."""

import os
import stat
import threading
from pathlib import Path

import pytest

import jitprop
from jitprop import checkpoint
from jitprop.testing import command as run, one_line_error

TRAIN = ["train", "--hidden", "8", "--epochs", "2"]


def is_char_device(path):
    return stat.S_ISCHR(os.lstat(path).st_mode)


def leftovers(directory):
    return [p.name for p in Path(directory).iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    """``{"null": path, "full": path}``: character devices 1,3 and 1,7 made in a temporary directory, so a
    regression replaces a copy, not the system's /dev/null (the real ones where mknod is not allowed)."""
    folder = tmp_path_factory.mktemp("dev")
    nodes = {}
    for name, minor in (("null", 3), ("full", 7)):
        path = folder / name
        try:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
            with open(path, "wb") as f:  # a nodev mount refuses to open it
                f.write(b"")
        except OSError:
            path = Path("/dev") / name
        nodes[name] = str(path)
    return nodes


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.npz"
    run("train", "--hidden", "8", "--epochs", "1", "--checkpoint", path)
    return path


# -- atomic_write and its targets ---------------------------------------------


def test_a_device_is_written_not_replaced(dev):
    checkpoint.atomic_write(dev["null"], lambda f: f.write(b"gone"))
    assert is_char_device(dev["null"])


def test_a_full_device_fails_in_one_line(dev):
    with pytest.raises(jitprop.DataError, match=f"^cannot write {dev['full']}: No space left on device$"):
        checkpoint.atomic_write(dev["full"], lambda f: f.write(b"x" * 100_000))
    assert is_char_device(dev["full"])


def test_a_fifo_is_written_into(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()  # opening a FIFO for writing waits for its reader
    checkpoint.atomic_write(fifo, lambda f: f.write(b"through the pipe"))
    reader.join(10)
    assert got == [b"through the pipe"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert leftovers(tmp_path) == []


def test_a_symlink_is_followed_and_kept(tmp_path, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "real.csv").write_text("old")
    (elsewhere / "real.csv").chmod(0o640)
    (tmp_path / "link.csv").symlink_to(elsewhere / "real.csv")
    checkpoint.atomic_write(tmp_path / "link.csv", lambda f: f.write(b"new"))
    assert (tmp_path / "link.csv").is_symlink()
    assert os.readlink(tmp_path / "link.csv") == str(elsewhere / "real.csv")
    assert (elsewhere / "real.csv").read_text() == "new"
    assert (elsewhere / "real.csv").stat().st_mode & 0o777 == 0o640  # the target keeps its mode
    assert leftovers(tmp_path) == [] and leftovers(elsewhere) == []


def test_a_read_only_file_is_refused_and_kept(tmp_path):
    # No write bit for anyone: refused even as root, who could replace it.
    (tmp_path / "kept.csv").write_text("precious")
    (tmp_path / "kept.csv").chmod(0o444)
    with pytest.raises(jitprop.DataError, match="^cannot write .*kept.csv: it is read-only$"):
        checkpoint.atomic_write(tmp_path / "kept.csv", lambda f: f.write(b"lost"))
    assert (tmp_path / "kept.csv").read_text() == "precious"
    assert leftovers(tmp_path) == []


# -- the commands that write -------------------------------------------------


def test_predict_onto_devices_symlinks_and_read_only_files(tmp_path, tmp_path_factory, model, dev):
    run("predict", model, "digits", "-o", dev["null"])
    assert is_char_device(dev["null"])
    assert one_line_error(run("predict", model, "digits", "-o", dev["full"], ok=False)) == (
        f"Error: cannot write {dev['full']}: No space left on device")
    assert is_char_device(dev["full"])
    elsewhere = tmp_path_factory.mktemp("out")
    (elsewhere / "p.csv").write_text("old")
    Path("p.csv").symlink_to(elsewhere / "p.csv")
    run("predict", model, "digits", "-o", "p.csv")
    assert Path("p.csv").is_symlink() and (elsewhere / "p.csv").read_text().startswith("digit,p_0,")
    Path("ro.csv").write_text("precious")
    Path("ro.csv").chmod(0o444)
    assert one_line_error(run("predict", model, "digits", "-o", "ro.csv", ok=False)) == (
        "Error: cannot write output ro.csv: it is read-only")
    assert Path("ro.csv").read_text() == "precious"
    assert run("predict", model, "digits", "-o", "-").output.startswith("digit,p_0,")


def test_a_checkpoint_onto_dev_null_leaves_the_device(dev):
    run(*TRAIN, "--checkpoint", dev["null"])
    assert is_char_device(dev["null"])


def test_a_read_only_checkpoint_is_refused_before_training():
    Path("ro.npz").write_bytes(b"precious")
    Path("ro.npz").chmod(0o444)
    assert one_line_error(run(*TRAIN, "--checkpoint", "ro.npz", ok=False)) == (
        "Error: cannot write checkpoint ro.npz: it is read-only")
    assert Path("ro.npz").read_bytes() == b"precious"


def test_sweep_writes_its_csv_to_stdout_for_a_dash():
    out = run("sweep", "--hidden", "4", "--epochs", "1", "--lr", "1e-3", "--workers", "1", "--csv", "-").output
    assert out.splitlines()[-2].startswith("lr,hidden,epochs,best_val_loss,") and out.splitlines()[-1].startswith("0.001,4,1,")
    assert not Path("-").exists()


# -- a failed run destroys no earlier output ------------------------------------


def test_csv_logger_keeps_the_old_log_when_the_run_fails_before_its_first_epoch():
    Path("log.csv").write_bytes(b"epoch,loss\r\n1,0.5\r\n")
    failed = run(*TRAIN, "--callback", "csv_logger:filename=log.csv", "--callback", "early_stopping:monitor=nope", ok=False)
    assert "early_stopping monitors 'nope'" in failed.output
    assert Path("log.csv").read_bytes() == b"epoch,loss\r\n1,0.5\r\n"
    diverged = run(*TRAIN, "--lr", "1e30", "--callback", "csv_logger:filename=log.csv", ok=False)
    assert "diverged in epoch 1" in diverged.output
    assert Path("log.csv").read_bytes() == b"epoch,loss\r\n1,0.5\r\n"


def test_csv_logger_says_whether_it_replaces_or_appends():
    out = run(*TRAIN, "--callback", "csv_logger:filename=log.csv").output
    assert "csv_logger: writes log.csv" in out.splitlines()
    out = run(*TRAIN, "--callback", "csv_logger:filename=log.csv").output
    assert "csv_logger: replaces log.csv when the first epoch ends (append=true keeps it)" in out.splitlines()
    assert len(Path("log.csv").read_text().splitlines()) == 3  # header and two epochs, the first run's gone
    out = run(*TRAIN, "--callback", "csv_logger:filename=log.csv,append=true").output
    assert "csv_logger: appends to log.csv" in out.splitlines()
    assert len(Path("log.csv").read_text().splitlines()) == 5


def test_csv_logger_follows_a_symlink_and_refuses_a_read_only_log(tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("logs")
    Path("log.csv").symlink_to(elsewhere / "real.csv")
    run(*TRAIN, "--callback", "csv_logger:filename=log.csv")
    assert Path("log.csv").is_symlink() and len((elsewhere / "real.csv").read_text().splitlines()) == 3
    Path("ro.csv").write_text("precious")
    Path("ro.csv").chmod(0o444)
    failed = run(*TRAIN, "--callback", "csv_logger:filename=ro.csv", ok=False)
    assert "csv_logger: cannot write ro.csv: it is read-only" in failed.output
    assert Path("ro.csv").read_text() == "precious"


def test_model_checkpoint_without_a_filepath_saves_where_checkpoint_does():
    out = run(*TRAIN, "--checkpoint", "mine.npz", "--callback", "model_checkpoint").output
    assert "saved mine.npz" in out
    assert not Path("checkpoint.npz").exists()
    assert checkpoint.load("mine.npz").meta["trainer"]["epoch"] == 2
    config = run(*TRAIN, "--checkpoint", "mine.npz", "--callback", "model_checkpoint", "--print-config").output
    assert 'filepath = "mine.npz"' in config


# -- refused before anything is printed ------------------------------------------


def test_negative_epochs_are_refused_before_the_banner():
    assert one_line_error(run("train", "--epochs", "-1", ok=False)) == (
        "Error: epochs must be 0 or more, got -1 (the total to train, with --resume too)")
    Path("run.toml").write_text("epochs = -3\n")
    assert one_line_error(run("train", "--config", "run.toml", ok=False)).startswith("Error: epochs must be 0 or more, got -3")
