import os

# Tests never depend on which third-party plugins happen to be installed:
# only the built-ins load, unless a test registers more itself.
os.environ["JITPROP_LOAD_PLUGINS"] = ""
# Count allocations made by compiled code (test_kernels); must be set before numba loads.
os.environ["NUMBA_NRT_STATS"] = "1"
# CUDA kernels run on numba's simulator (no GPU here, nor in CI); test_cuda_kernels
# also compiles them to PTX in a subprocess without it.
os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import jitprop.plugins  # noqa: E402
import jitprop.testing  # noqa: E402

jitprop.testing.quick_simulator()  # about 4x quicker CUDA tests


@pytest.fixture
def register_plugin():
    """Register plugins for one test; unregister them afterwards, whatever happens."""
    registered = []

    def _register(plugin, name=None):
        jitprop.plugins.register(plugin, name=name)
        registered.append(plugin)
        return plugin

    yield _register
    for plugin in registered:
        if jitprop.plugins.pm.is_registered(plugin):
            jitprop.plugins.unregister(plugin)


def spirals(n_per_class=100, classes=3, seed=0):
    """The CS231n spiral data: `classes` arms winding around the origin, with noise."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n_per_class * classes, 2))
    y = np.zeros(n_per_class * classes, dtype=np.int64)
    for c in range(classes):
        rows = slice(n_per_class * c, n_per_class * (c + 1))
        r = np.linspace(0.0, 1, n_per_class)
        t = np.linspace(c * 4, (c + 1) * 4, n_per_class) + rng.normal(size=n_per_class) * 0.2
        X[rows] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[rows] = c
    return X, y


@pytest.fixture
def spiral_data():
    return spirals()
