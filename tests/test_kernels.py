"""Kernel discipline: compiled with cache=True, and nothing allocated per call in steady state."""

import numpy as np
import pytest
from numba import njit
from numba.core.runtime import rtsys

import jitprop
from jitprop.components import kernel
from jitprop.default_plugins.callbacks import clip_by_norm
from jitprop.gradcheck import example_targets
from jitprop.model import mix_seed
from jitprop.registry import entries
from jitprop.kernels import gather_items, gather_rows


@njit
def repeat(f, reps, args):
    for _ in range(reps):
        f(*args)


def allocations_per_call(f, args):
    """NRT allocations a kernel makes per call when called from compiled code (the fast path)."""
    repeat(f, 1, args)
    a = rtsys.get_allocation_stats().alloc
    repeat(f, 1, args)
    b = rtsys.get_allocation_stats().alloc
    repeat(f, 21, args)
    c = rtsys.get_allocation_stats().alloc
    return ((c - b) - (b - a)) / 20


def layer_args(name, dtype, batch=6, width=5):
    model = jitprop.Sequential([jitprop.layer(name, **getattr(jitprop.registry.lookup("layer", name).cls, "example_options", {}))],
                               input_dim=width, dtype=dtype)
    layer = model.layers[0]
    ws = model.workspace(batch, training=True)
    acts, caches, deltas = ws.views(batch)
    acts[0][...] = np.random.default_rng(0).normal(size=acts[0].shape)
    grad_in = np.zeros_like(acts[0])
    fwd = (model.layer_params[0], model.hypers[0], acts[0], acts[1], caches[0], True, mix_seed(1))
    bwd = (model.layer_params[0], model.hypers[0], acts[0], acts[1], caches[0], deltas[1], grad_in, model.layer_grads[0])
    return layer, fwd, bwd


@pytest.mark.skipif(not hasattr(rtsys, "get_allocation_stats"), reason="numba has no NRT stats")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_no_kernel_allocates_per_call(dtype):
    for entry in entries("layer"):
        layer, fwd, bwd = layer_args(entry.name, dtype)
        assert allocations_per_call(kernel(layer, "forward_kernel"), fwd) == 0, entry.name
        assert allocations_per_call(kernel(layer, "backward_kernel"), bwd) == 0, entry.name
    rng = np.random.default_rng(0)
    for entry in entries("loss"):
        loss = entry.cls()
        pred = rng.normal(size=(6, 3)).astype(dtype)
        y = example_targets(loss, 6, 3, rng)
        y = y if loss.target == "class" else y.astype(dtype)
        args = (pred, y, np.zeros_like(pred), loss.hyper())
        assert allocations_per_call(kernel(loss, "kernel"), args) == 0, entry.name
    for entry in entries("optimizer"):
        opt = entry.cls()
        p = rng.normal(size=40).astype(dtype)
        args = (p, p.copy(), np.zeros((opt.n_state, 40), dtype), 0.01, opt.hyper(), 3)
        assert allocations_per_call(kernel(opt, "kernel"), args) == 0, entry.name
    src = rng.normal(size=(10, 3)).astype(dtype)
    assert allocations_per_call(gather_rows, (src, np.arange(10), 2, np.zeros((4, 3), dtype))) == 0
    assert allocations_per_call(gather_items, (np.arange(10), np.arange(10), 2, np.zeros(4, np.int64))) == 0
    assert allocations_per_call(clip_by_norm, (src[0].copy(), 0.5)) == 0


def test_kernels_are_cached_to_disk():
    for entry in entries("layer"):
        layer = entry.cls(**getattr(entry.cls, "example_options", {}))
        for attr in ("forward_kernel", "backward_kernel"):
            assert kernel(layer, attr)._cache.__class__.__name__ != "NullCache", (entry.name, attr)
    for kind in ("loss", "optimizer"):
        for entry in entries(kind):
            assert kernel(entry.cls(), "kernel")._cache.__class__.__name__ != "NullCache", entry.name
