"""Numba's compile cache in real deployments: where it goes, corrupt or foreign caches,
two cold starts at once, and nowhere writable at all."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numba
import pytest

from jitprop.runtime import caches as numba_cache

JITPROP = os.path.join(os.path.dirname(sys.executable), "jitprop")
TRAIN = [JITPROP, "train", "--epochs", "1", "--hidden", "24"]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JITPROP_", "NUMBA_"))}
    return {**env, **extra}


def test_jitprop_cache_dir_holds_every_compiled_artefact_and_survives_corruption(tmp_path):
    env = clean_env(JITPROP_CACHE_DIR=str(tmp_path))
    out = subprocess.run(TRAIN, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    index = list((tmp_path / "numba").rglob("*.nbi"))
    assert index and list(tmp_path.glob("jitprop_program_*.py"))
    for path in index + list((tmp_path / "numba").rglob("*.nbc")) + list(tmp_path.rglob("*.nbi")):
        path.write_bytes(b"\x80\x04garbage, as a crash or another numba might leave it")
    again = subprocess.run(TRAIN, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr  # a miss: compiled again, and the entries rewritten
    assert again.stdout.splitlines()[-1] == out.stdout.splitlines()[-1]
    assert "Traceback" not in again.stderr


def test_numba_cache_dir_wins_for_numbas_own_cache(tmp_path):
    env = clean_env(JITPROP_CACHE_DIR=str(tmp_path / "jp"), NUMBA_CACHE_DIR=str(tmp_path / "nb"))
    out = subprocess.run(TRAIN, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert list((tmp_path / "nb").rglob("*.nbi")) and not (tmp_path / "jp" / "numba").exists()


def test_two_cold_starts_at_the_same_moment_both_succeed(tmp_path):
    env = clean_env(JITPROP_CACHE_DIR=str(tmp_path))
    procs = [subprocess.Popen(TRAIN, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
             for _ in range(2)]  # fmt: skip
    results = [p.communicate(timeout=600) + (p.returncode,) for p in procs]
    for stdout, stderr, code in results:
        assert code == 0, stderr
        assert stdout.splitlines()[-1].startswith("validation accuracy")


@pytest.mark.parametrize("var", ["JITPROP_CACHE_DIR", "NUMBA_CACHE_DIR"])
def test_a_cache_dir_that_cannot_be_made_runs_uncached_and_says_so_once(tmp_path, var):
    """Numba would refuse to define a kernel ("no locator available", a traceback at import)."""
    blocker = tmp_path / "a file"
    blocker.write_text("")
    code = "import jitprop, numba; print(numba.config.CACHE_DIR)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=clean_env(**{var: str(blocker / "cache")}))  # fmt: skip
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.count(f"{var} ({blocker / 'cache'}) is not a writable directory") == 1, out.stderr
    assert "compiled kernels are not kept between runs" in out.stderr
    assert Path(out.stdout.strip()).name.startswith("jitprop-numba-")


def test_nowhere_writable_compiles_into_a_temporary_directory_and_says_so(monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.delenv("JITPROP_CACHE_DIR", raising=False)
    monkeypatch.setattr(numba_cache, "_writable", lambda path: False)
    monkeypatch.setattr(numba.config, "CACHE_DIR", numba.config.CACHE_DIR)
    monkeypatch.setattr(numba_cache, "notice", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        numba_cache.configure()
    assert Path(numba.config.CACHE_DIR).name.startswith("jitprop-numba-")
    assert "compiled kernels are not kept between runs" in numba_cache.notice
    assert [w.category for w in caught] == [numba_cache.CacheWarning]


def test_a_read_only_install_and_home_still_train(tmp_path):
    """The package directory and HOME mounted read-only (a private mount namespace, so
    this works as root too): training goes on, compiling into a temporary directory, and
    says so once."""
    import shlex

    import jitprop

    package = Path(jitprop.__file__).resolve().parent
    home = tmp_path / "home"
    home.mkdir()
    mounts = " && ".join(f"mount --bind {shlex.quote(str(d))} {shlex.quote(str(d))} && "
                         f"mount -o remount,bind,ro {shlex.quote(str(d))}" for d in (package, home))  # fmt: skip
    script = f"{mounts} && exec {' '.join(shlex.quote(a) for a in TRAIN)}"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"{mounts} && touch {shlex.quote(str(home))}/x"],
                           capture_output=True, text=True)  # fmt: skip
    if "Read-only file system" not in probe.stderr:
        pytest.skip(f"cannot make a read-only mount here (unshare -m): {probe.stderr.strip()[:200]}")
    env = clean_env(HOME=str(home))
    env.pop("XDG_CACHE_HOME", None)
    out = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("compiled kernels are not kept between runs") == 1, out.stderr
    assert out.stdout.splitlines()[-1].startswith("validation accuracy")
