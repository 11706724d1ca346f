"""Kernel discipline: compiled with cache=True, and nothing allocated per call in steady state."""

import math

import numpy as np
import pytest
from numba import njit
from numba.core.runtime import rtsys

import jitprop
from jitprop.components import kernel
from jitprop.gradcheck import example_targets
from jitprop.kernels import mix_seed
from jitprop.registry import entries
from jitprop.kernels import gather_items, gather_rows, pack_activations


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
    cls = jitprop.registry.lookup("layer", name).cls
    model = jitprop.Sequential([jitprop.layer(name, **cls.example_options)], input_shape=cls.example_shape or (width,), dtype=dtype)
    layer = model.layers[0]
    ws = model.workspace(batch, training=True)
    acts, caches, deltas = ws.views(batch)
    acts[0][...] = np.random.default_rng(0).normal(size=acts[0].shape)
    grad_in = np.zeros_like(acts[0])
    last = model.last_args(0)
    fwd = (model.layer_params[0], model.hypers[0], acts[0], acts[1], caches[0], True, mix_seed(1), *last)
    bwd = (model.layer_params[0], model.hypers[0], acts[0], acts[1], caches[0], deltas[1], grad_in, model.layer_grads[0], *last)
    return layer, fwd, bwd


@pytest.mark.skipif(not hasattr(rtsys, "get_allocation_stats"), reason="numba has no NRT stats")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_no_kernel_allocates_per_call(dtype):
    for entry in entries("layer"):
        if dtype == "float64" and entry.cls.example_shape is not None:
            continue  # image layers: in float32 only, where their compile is shared with other tests
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
    model = jitprop.Sequential([jitprop.layer("dense", units=4), "relu", jitprop.layer("dense", units=2)], input_dim=3, dtype=dtype)
    for entry in entries("transform"):
        tr = entry.cls()
        tr.setup(model)  # a real model's layout (weight_decay's biases)
        if tr.sees_activations:  # its memory and a real model's activations too (the coach's)
            memory = np.zeros(tr.memory_size(model), dtype)
            tr.init_memory(memory, model)
            acts = tuple(rng.normal(size=(6, w)).astype(dtype) for w in (3, 4, 4, 2))
            stats = np.zeros((3, len(tr.stat_names)))
            args = (rng.normal(size=model.n_params).astype(dtype), model.params, model.offsets, 0.01, tr.hyper(), stats, memory,
                    *pack_activations(acts))  # fmt: skip
        else:
            g = rng.normal(size=model.n_params).astype(dtype)
            stats = np.zeros((3, len(tr.stat_names)))
            args = (g, g.copy(), model.offsets, 0.01, tr.hyper(), stats)
        assert allocations_per_call(kernel(tr, "kernel"), args) == 0, entry.name


def test_kernels_are_cached_to_disk():
    for entry in entries("layer"):
        layer = entry.cls(**getattr(entry.cls, "example_options", {}))
        for attr in ("forward_kernel", "backward_kernel"):
            assert kernel(layer, attr)._cache.__class__.__name__ != "NullCache", (entry.name, attr)
    for kind in ("loss", "optimizer", "transform"):
        for entry in entries(kind):
            assert kernel(entry.cls(), "kernel")._cache.__class__.__name__ != "NullCache", entry.name


@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 1000, 4096, 4097])
def test_each_epoch_order_is_a_permutation_fixed_by_seed_and_epoch(n):
    from jitprop.kernels import feistel_bits, shuffle_key, shuffle_order

    def order(seed, epoch):
        index = np.full(n, -1, dtype=np.int64)
        shuffle_order(shuffle_key(seed, epoch), feistel_bits(n), index)
        return index

    a = order(3, 0)
    assert np.array_equal(np.sort(a), np.arange(n))
    assert np.array_equal(order(3, 0), a)  # no hidden state: resuming needs only (seed, epoch)
    if n >= 17:
        assert not np.array_equal(order(3, 1), a) and not np.array_equal(order(4, 0), a)
        assert not np.array_equal(a, np.arange(n))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 64, 65, 1437, 4097])
def test_the_epoch_order_is_each_element_drawn_alone_and_the_orders_drawn_before(n):
    """shuffle_order (the network's image first, then walks) draws what ``permuted`` draws one
    element at a time (the GPU's way), and the very orders the element-by-element walk drew
    before it (saved checkpoints resume in them)."""
    from jitprop.kernels import epoch_shuffle, feistel_bits, permuted, shuffle_key, shuffle_order

    key, bits = shuffle_key(7, 2), feistel_bits(n)
    index, again = np.empty(n, np.int64), np.empty(n, np.int64)
    shuffle_order(key, bits, index)
    assert index.tolist() == [permuted(i, n, key, bits) for i in range(n)]
    epoch_shuffle(7, 2, again)  # the trainer's one call
    assert np.array_equal(again, index)
    pinned = {5: [1, 0, 3, 4, 2], 1437: [1322, 711, 133, 7, 1315, 39, 535, 660],
              4097: [3317, 796, 2014, 1621, 2643, 103, 3409, 1300]}  # fmt: skip
    if n in pinned:
        assert index[:8].tolist() == pinned[n]


def test_epoch_orders_are_uniform_enough_for_sgd():
    """Over many epochs every row visits every position about equally: mean and spread
    of a row's position match a uniform permutation's within a few standard errors."""
    from jitprop.kernels import feistel_bits, shuffle_key, shuffle_order

    n, epochs = 100, 2000
    index = np.empty(n, dtype=np.int64)
    where = np.empty((epochs, n), dtype=np.int64)
    for e in range(epochs):
        shuffle_order(shuffle_key(11, e), feistel_bits(n), index)
        where[e, index] = np.arange(n)
    mean, sd = (n - 1) / 2, np.sqrt((n * n - 1) / 12)
    assert np.all(np.abs(where.mean(axis=0) - mean) < 5 * sd / np.sqrt(epochs))
    counts = np.bincount(where[:, 0], minlength=n)  # row 0's positions: chi-square near n - 1
    chi2 = ((counts - epochs / n) ** 2 / (epochs / n)).sum()
    assert chi2 < (n - 1) + 5 * np.sqrt(2 * (n - 1))
    first = where[:, 0] < n // 2  # consecutive epochs independent: no memory of the last order
    assert abs(np.mean(first[1:] == first[:-1]) - 0.5) < 0.05


def test_the_trainer_draws_each_epoch_from_seed_and_epoch():
    model = jitprop.Sequential([jitprop.layer("dense", units=2)], input_dim=3, seed=1)
    trainer = jitprop.Trainer(model, "mse", seed=9)
    a, b = np.empty(50, np.int64), np.empty(50, np.int64)
    trainer.order(2, a)
    jitprop.Trainer(model, "mse", seed=9).order(2, b)
    assert np.array_equal(a, b) and not np.array_equal(a, np.arange(50))
    jitprop.Trainer(model, "mse", seed=9, shuffle=False).order(2, b)
    assert np.array_equal(b, np.arange(50))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_sees_every_nan_and_infinity(dtype):
    from jitprop.kernels import all_finite

    a = np.random.default_rng(0).normal(size=1001).astype(dtype) * 1e30
    assert all_finite(a) and all_finite(a[:0])
    for i in (0, 500, 1000):
        for bad in (np.nan, np.inf, -np.inf):
            b = a.copy()
            b[i] = bad
            assert not all_finite(b)
    assert all_finite(np.full(7, np.finfo(dtype).max, dtype))  # the largest finite values are finite


def test_small_data_sets_see_every_order_about_equally_often():
    import collections
    import math

    from jitprop.kernels import feistel_bits, shuffle_key, shuffle_order

    n, draws = 5, 6000
    counts = collections.Counter()
    index = np.empty(n, np.int64)
    for e in range(draws):
        shuffle_order(shuffle_key(3, e), feistel_bits(n), index)
        counts[tuple(index)] += 1
    assert len(counts) == math.factorial(n)
    expected = draws / math.factorial(n)
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 119 + 5 * math.sqrt(2 * 119)


def test_fast_exp_is_within_one_ulp_of_the_c_librarys_and_keeps_its_special_values():
    from numba import njit

    from jitprop.kernels import fast_exp

    @njit
    def both(a, fast, libm):
        for i in range(a.shape[0]):
            fast[i] = fast_exp(a[i])
            libm[i] = math.exp(a[i])

    rng = np.random.default_rng(0)
    special = [0.0, -0.0, -1e-30, 1e-30, -87.3, -88.7, -103.9, -104.0, -200.0, 88.7, 88.8, np.inf, -np.inf, np.nan]
    a = np.concatenate([-rng.exponential(5.0, 200_000), rng.uniform(-120, 90, 200_000), special]).astype(np.float32)
    fast, libm = np.empty_like(a), np.empty_like(a)
    both(a, fast, libm)
    nan = np.isnan(libm)
    assert np.array_equal(np.isnan(fast), nan)
    ulps = np.abs(fast[~nan].view(np.int32).astype(np.int64) - libm[~nan].view(np.int32))
    assert ulps.max() <= 1 and np.mean(ulps == 0) > 0.999
    assert np.array_equal(fast[-len(special):][:-1], libm[-len(special):][:-1])  # 0, inf, subnormals, overflow
    a64 = a.astype(np.float64)
    fast64, libm64 = np.empty_like(a64), np.empty_like(a64)
    both(a64, fast64, libm64)
    assert np.array_equal(fast64, libm64, equal_nan=True)  # float64: math.exp itself
