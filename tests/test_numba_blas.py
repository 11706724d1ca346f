"""numba_blas.preload: Numba's BLAS without importing all of scipy.linalg."""

import importlib.machinery
import subprocess
import sys
import textwrap

from jitprop.runtime import numba_blas

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import jitprop
    from jitprop.default_plugins.layers import dense_backward, dense_forward

    rng = np.random.default_rng(0)
    p = rng.normal(size=4 * 3 + 4)
    x, g = rng.normal(size=(5, 3)), rng.normal(size=(5, 4))
    out, gp, gi = np.empty((5, 4)), np.empty_like(p), np.empty((5, 3))
    dense_forward(p, np.zeros(0), x, out, out[:, :0], True, np.uint64(0))
    dense_backward(p, np.zeros(0), x, out, out[:, :0], g, gi, gp)
    w, b = p[:12].reshape(4, 3), p[12:]
    assert np.allclose(out, x @ w.T + b) and np.allclose(gi, g @ w) and np.allclose(gp[:12], (g.T @ x).ravel())
    assert "scipy.linalg" not in sys.modules, "Numba imported the whole of scipy.linalg"
    import scipy.linalg  # still importable afterwards, and it shares the one BLAS module
    from scipy.linalg import cython_blas
    assert cython_blas is sys.modules["scipy.linalg.cython_blas"]
    assert np.allclose(scipy.linalg.solve(np.eye(2) * 2, np.ones(2)), 0.5)
    print("ok")
""")


def test_matrix_products_run_without_importing_scipy_linalg():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_preload_leaves_the_import_to_numba_when_unsure(monkeypatch):
    """Already imported, or no extension module where expected: no change, no error."""
    assert numba_blas.preload() is False  # this process already has it (jitprop was imported)
    monkeypatch.delitem(sys.modules, numba_blas.NAME)
    monkeypatch.delitem(sys.modules, "scipy.linalg", raising=False)
    monkeypatch.setattr(importlib.machinery.PathFinder, "find_spec", classmethod(lambda cls, *a, **k: None))
    assert numba_blas.preload() is False
    assert numba_blas.NAME not in sys.modules


def test_a_failing_load_is_undone(monkeypatch):
    monkeypatch.delitem(sys.modules, numba_blas.NAME)
    monkeypatch.delitem(sys.modules, "scipy.linalg", raising=False)

    def broken(self, module):
        raise ImportError("simulated: the extension does not load")

    monkeypatch.setattr(importlib.machinery.ExtensionFileLoader, "exec_module", broken)
    assert numba_blas.preload() is False
    assert numba_blas.NAME not in sys.modules
