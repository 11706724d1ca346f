"""End to end, as a user does it: a fresh virtual environment, jitprop and plugins installed
with pip from local folders, and the real ``jitprop`` command.

Dependencies come from the package index as usual (pip's wheel cache, shared with the CI
environment, keeps it quick). The same environment then walks through the plugin author's
guide, docs/plugins.md, running every code block in it in order.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugins.md"


def clean_env(venv):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JITPROP_", "NUMBA_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def run(args, cwd, venv, timeout=900):
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=clean_env(venv),
                         timeout=timeout)  # fmt: skip
    assert out.returncode == 0, f"{' '.join(map(str, args))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A new virtual environment with jitprop (from this checkout) installed by pip: no pytest, which
    the guide's and the skeleton's own instructions must bring."""
    path = tmp_path_factory.mktemp("e2e") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    # --no-compile: byte-compiling all of SciPy and Numba up front took half the 26 s this took;
    # Python compiles what is imported, when it is.
    run([path / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-compile", ROOT], cwd=path.parent, venv=path)
    return path


@pytest.mark.skipif(not (ROOT / "plugins" / "jitprop-huber").is_dir(), reason="no plugins/ folder in this checkout")
def test_a_fresh_environment_installs_a_plugin_and_trains_with_it(venv, tmp_path):
    jp = venv / "bin" / "jitprop"
    out = run([jp, "install", ROOT / "plugins" / "jitprop-huber"], tmp_path, venv)
    assert "plugin 'huber' ready: jitprop-huber" in out
    assert "huber" in run([jp, "list", "losses"], tmp_path, venv)
    out = run([jp, "train", "--dataset", "sine", "--loss", "huber:delta=0.5", "--epochs", "5", "--checkpoint", "m.npz"],
              tmp_path, venv)  # fmt: skip
    losses = [float(line.split("loss ")[1].split()[0]) for line in out.splitlines() if line.startswith("epoch")]
    assert len(losses) == 5 and losses[-1] < losses[0]
    assert "validation rows of sine" in run([jp, "evaluate", "m.npz"], tmp_path, venv)

    run([jp, "new-plugin", "log_cosh"], tmp_path, venv)  # the skeletons: install, pass their tests and gradcheck
    run([jp, "new-plugin", "scaled_relu", "--kind", "layer"], tmp_path, venv)  # a layer's, CUDA kernels too
    # And a package whose entry point names a module that is not there: pip installs it, but it is no
    # plugin, so the same install command fails, in one line, after reporting the two that are ready.
    ghost = tmp_path / "jitprop-ghost"
    (ghost / "jitprop_ghost").mkdir(parents=True)
    (ghost / "jitprop_ghost" / "__init__.py").write_text("")
    (ghost / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "jitprop-ghost"\nversion = "0.1.0"\n[project.entry-points.jitprop]\nghost = "jitprop_gohst"\n'
        '[tool.setuptools]\npackages = ["jitprop_ghost"]\n'
    )
    out = subprocess.run([str(jp), "install", "./jitprop-log-cosh[test]", "./jitprop-scaled-relu[test]", str(ghost)],
                         capture_output=True, text=True, cwd=tmp_path, env=clean_env(venv), timeout=900)  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert "plugin 'log_cosh' ready" in out.stdout and "plugin 'scaled_relu' ready" in out.stdout
    assert "plugin 'ghost'" not in out.stdout
    assert out.stderr.strip().splitlines()[-1].startswith(
        "Error: plugin 'ghost' (jitprop-ghost 0.1.0) was installed but does not load: ModuleNotFoundError: "
        "No module named 'jitprop_gohst'")
    for skeleton in ("jitprop-log-cosh", "jitprop-scaled-relu"):  # apart: each test loads only its own plugin
        run([venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", skeleton], tmp_path, venv)
    assert "all 1 checked: ok" in run([jp, "gradcheck", "log_cosh"], tmp_path, venv)

    run([jp, "uninstall", "jitprop-huber", "jitprop-log-cosh", "jitprop-scaled-relu", "jitprop-ghost"], tmp_path, venv)
    listed = run([jp, "list", "losses"], tmp_path, venv)
    assert "huber" not in listed and "log_cosh" not in listed


def guide_blocks(text):
    """(kind, file or None, code) of every fenced block; ``<!-- file: PATH -->`` before a block
    means "write this to PATH"."""
    pattern = re.compile(r"(?:<!-- file: (?P<file>\S+) -->\n)?```(?P<lang>\w+)\n(?P<code>.*?)```", re.S)
    return [(m["lang"], m["file"], m["code"]) for m in pattern.finditer(text)]


def test_every_code_block_of_the_plugin_guide_runs(venv, tmp_path):
    blocks = guide_blocks(GUIDE.read_text())
    assert len(blocks) >= 8 and {lang for lang, _, _ in blocks} == {"bash", "python", "toml"}
    for i, (lang, file, code) in enumerate(blocks):
        if file:
            (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / file).write_text(code)
        elif lang == "bash":
            run(["bash", "-euo", "pipefail", "-c", code], tmp_path, venv)
        elif lang == "python":
            (tmp_path / f"block_{i}.py").write_text(code)
            run([venv / "bin" / "python", f"block_{i}.py"], tmp_path, venv)
        else:
            pytest.fail(f"block {i} ({lang}) is neither a file nor runnable")
    assert (tmp_path / "q90.npz").exists()
