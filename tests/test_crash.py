"""Crashes lose nothing: a training process killed with SIGKILL at random moments, during
start-up, training and checkpoint writes, always leaves a checkpoint that loads (the last one
or the one before) and that --resume continues from."""

import os
import random
import signal
import subprocess
import sys
import time

import jitprop

JITPROP = os.path.join(os.path.dirname(sys.executable), "jitprop")
# Tiny epochs, so the process spends much of its time writing the checkpoint.
RUN = ["--dataset", "digits", "--hidden", "16", "--batch-size", "512", "--seed", "3"]


def train(*args, cwd):
    out = subprocess.run([JITPROP, "train", *args], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def saved_epoch(path):
    return jitprop.checkpoint.load(path).meta["trainer"]["epoch"]  # raises DataError if it were corrupt


def test_sigkill_at_random_moments_never_breaks_the_checkpoint(tmp_path):
    train(*RUN, "--epochs", "1", "--checkpoint", "ck.npz", "--callback", "model_checkpoint:filepath=ck.npz",
          cwd=tmp_path)  # fmt: skip
    epochs = [saved_epoch(tmp_path / "ck.npz")]
    rng = random.Random(7)
    deadline = time.monotonic() + 60
    kills = 0
    while kills < 9 and time.monotonic() < deadline:
        proc = subprocess.Popen([JITPROP, "train", "--resume", "ck.npz", "--epochs", "100000"], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(rng.uniform(0.3, 3.0))  # start-up is ~1.3 s: some kills land before training, most in it
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        epochs.append(saved_epoch(tmp_path / "ck.npz"))
        assert epochs[-1] >= epochs[-2]  # the new checkpoint or the previous one, never older, never broken
    assert kills >= 6 and epochs[-1] > epochs[0] + 5  # and the work done between kills was kept
    last = epochs[-1]
    out = train("--resume", "ck.npz", "--epochs", str(last + 2), cwd=tmp_path)
    assert f"epochs {last + 1}..{last + 2}" in out
    assert saved_epoch(tmp_path / "ck.npz") == last + 2
    assert not list(tmp_path.glob(".ck.npz.*.tmp"))  # what the killed writers left was cleared by the next one
