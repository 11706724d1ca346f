"""End to end, as a user does it: a fresh virtual environment, jitprop and a plugin installed
with pip from local folders, and the real ``jitprop`` command training with the plugin's loss.

Dependencies come from the package index as usual (pip's wheel cache, shared with the
CI environment, keeps it quick). The skeleton of ``jitprop new-plugin`` goes through the
same round trip: installed, its own tests, ``jitprop gradcheck``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd, timeout=900):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JITPROP_", "NUMBA_", "PYTHON", "VIRTUAL_ENV"))}
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, args))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.skipif(not (ROOT / "plugins" / "jitprop-huber").is_dir(), reason="no plugins/ folder in this checkout")
def test_a_fresh_environment_installs_jitprop_and_a_plugin_and_trains_with_it(tmp_path):
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    bin_ = venv / "bin"
    run(bin_ / "python", "-m", "pip", "install", "--quiet", ROOT, "pytest", cwd=tmp_path)
    out = run(bin_ / "jitprop", "install", ROOT / "plugins" / "jitprop-huber", cwd=tmp_path)
    assert "plugin 'huber' ready: jitprop-huber" in out
    assert "huber" in run(bin_ / "jitprop", "list", "losses", cwd=tmp_path)

    out = run(bin_ / "jitprop", "train", "--dataset", "sine", "--loss", "huber:delta=0.5", "--epochs", "5",
              "--checkpoint", "model.npz", cwd=tmp_path)  # fmt: skip
    losses = [float(line.split("loss ")[1].split()[0]) for line in out.splitlines() if line.startswith("epoch")]
    assert len(losses) == 5 and losses[-1] < losses[0]
    assert "validation rows of sine" in run(bin_ / "jitprop", "evaluate", "model.npz", cwd=tmp_path)

    run(bin_ / "jitprop", "new-plugin", "log_cosh", cwd=tmp_path)
    run(bin_ / "jitprop", "install", "./jitprop-log-cosh", cwd=tmp_path)
    run(bin_ / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "jitprop-log-cosh", cwd=tmp_path)
    assert "all 1 checked: ok" in run(bin_ / "jitprop", "gradcheck", "log_cosh", cwd=tmp_path)
    run(bin_ / "jitprop", "uninstall", "jitprop-huber", cwd=tmp_path)
    assert "huber" not in run(bin_ / "jitprop", "list", "losses", cwd=tmp_path)
