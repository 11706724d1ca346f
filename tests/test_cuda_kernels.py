"""CUDA kernels against the CPU kernels, on numba's simulator, on small awkward shapes.

The simulator runs one Python thread per GPU thread and checks no types, so
tiles and blocks are shrunk here, and every kernel is also compiled to PTX
(real type checking) in a subprocess without the simulator.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jitprop
from jitprop.components import kernel
from jitprop.kernels import mix_seed, pack_activations

cuda = pytest.importorskip("numba.cuda")

# The simulator computes the dropout hash with NumPy scalars, which warn on the intended wrap-around.
# A diverging run overflows on purpose.
pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")]


@pytest.fixture(autouse=True)
def tiny_grids(monkeypatch):
    from jitprop import cuda_launch

    monkeypatch.setattr(cuda_launch, "TILE", 4)  # 16 threads per block: quick on the simulator
    monkeypatch.setattr(cuda_launch, "THREADS", 8)
    monkeypatch.setattr(cuda_launch, "MAX_BLOCKS", 3)  # fewer threads than items: grid-stride loops loop
    from jitprop.default_plugins import transforms_cuda

    monkeypatch.setattr(transforms_cuda, "REDUCE", 4)  # threads of a per-layer reduction (a power of two)


LAYERS = ["dense", "relu", "leaky_relu", "tanh", "sigmoid", "gelu", "softmax", "dropout"]
SHAPES = [(1, 3), (5, 7), (9, 4)]  # (batch, width): not multiples of the tile or block


def layer_case(name, batch, width, rng):
    options = {"units": 6} if name == "dense" else {"rate": 0.3} if name == "dropout" else {}
    model = jitprop.Sequential([jitprop.layer(name, **options)], input_dim=width, dtype="float32", seed=1)
    model.params[...] = rng.normal(0, 0.5, model.n_params)
    layer = model.layers[0]
    x = rng.normal(size=(batch, width)).astype(np.float32)
    grad_out = rng.normal(size=(batch, model.output_dim)).astype(np.float32)
    return model, layer, x, grad_out


@pytest.mark.parametrize("batch, width", SHAPES)
@pytest.mark.parametrize("name", LAYERS)
def test_cuda_layer_kernels_match_cpu(name, batch, width):
    rng = np.random.default_rng(batch * 10 + width)
    model, layer, x, grad_out = layer_case(name, batch, width, rng)
    p, h = model.layer_params[0], model.hypers[0]
    seed = mix_seed(7, 0)
    out = np.zeros((batch, model.output_dim), np.float32)
    cache = np.zeros((batch, layer.cache_dim()), np.float32)
    grad_in = np.zeros_like(x)
    grad_p = np.zeros_like(p)
    kernel(layer, "forward_kernel")(p, h, x, out, cache, True, seed)
    kernel(layer, "backward_kernel")(p, h, x, out, cache, grad_out, grad_in, grad_p)

    d = {k: cuda.to_device(v) for k, v in dict(p=p, x=x, grad_out=grad_out).items()}
    d_out = cuda.device_array_like(out)
    d_cache = cuda.device_array_like(cache)
    d_grad_in = cuda.device_array_like(grad_in)
    d_grad_p = cuda.to_device(np.full_like(p, np.nan))  # kernels overwrite, never add
    kernel(layer, "cuda_forward")(d["p"], h, d["x"], d_out, d_cache, True, seed)
    kernel(layer, "cuda_backward")(d["p"], h, d["x"], d_out, d_cache, d["grad_out"], d_grad_in, d_grad_p)
    np.testing.assert_allclose(d_out.copy_to_host(), out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_cache.copy_to_host(), cache, rtol=1e-6)
    np.testing.assert_allclose(d_grad_in.copy_to_host(), grad_in, rtol=1e-5, atol=1e-6)
    if p.size:
        np.testing.assert_allclose(d_grad_p.copy_to_host(), grad_p, rtol=1e-5, atol=1e-6)


IMAGE_CASES = [  # (layer, options, per-sample shape, batch): odd sizes, stride 2, padding, one sample
    ("conv2d", {"out_channels": 3, "kernel_size": 3, "padding": 1}, (2, 5, 4), 2),
    ("conv2d", {"out_channels": 2, "kernel_size": (2, 3), "stride": 2, "padding": (1, 0), "bias": False}, (1, 7, 6), 1),
    ("max_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, (2, 5, 7), 2),
    ("max_pool2d", {"kernel_size": 2, "stride": 1}, (1, 3, 4), 1),
    ("avg_pool2d", {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 1)}, (2, 5, 5), 2),
    ("global_avg_pool2d", {}, (3, 2, 3), 2),
    ("flatten", {}, (2, 3, 2), 3),
]


@pytest.mark.parametrize("name, options, in_shape, batch", IMAGE_CASES)
def test_cuda_image_layer_kernels_match_cpu(name, options, in_shape, batch):
    rng = np.random.default_rng(batch + len(in_shape))
    model = jitprop.Sequential([jitprop.layer(name, **options)], input_shape=in_shape, dtype="float32", seed=1)
    model.params[...] = rng.normal(0, 0.5, model.n_params)
    layer, p, h, last = model.layers[0], model.layer_params[0], model.hypers[0], model.last_args(0)
    x = rng.normal(size=(batch, model.input_dim)).astype(np.float32)
    x[0, :2] = 2.5  # a tie inside a window
    grad_out = rng.normal(size=(batch, model.output_dim)).astype(np.float32)
    out = np.zeros((batch, model.output_dim), np.float32)
    cache = np.zeros((batch, layer.cache_dim()), np.float32)
    grad_in, grad_p = np.zeros_like(x), np.zeros_like(p)
    kernel(layer, "forward_kernel")(p, h, x, out, cache, True, np.uint64(0), *last)
    kernel(layer, "backward_kernel")(p, h, x, out, cache, grad_out, grad_in, grad_p, *last)

    d_last = [cuda.to_device(a) for a in last]
    d_out, d_cache = cuda.device_array_like(out), cuda.device_array_like(cache)
    d_grad_in = cuda.to_device(np.full_like(grad_in, np.nan))
    d_grad_p = cuda.to_device(np.full_like(p, np.nan))  # kernels overwrite, never add
    d_p, d_x = cuda.to_device(p), cuda.to_device(x)
    kernel(layer, "cuda_forward")(d_p, h, d_x, d_out, d_cache, True, np.uint64(0), *d_last)
    kernel(layer, "cuda_backward")(d_p, h, d_x, d_out, d_cache, cuda.to_device(grad_out), d_grad_in, d_grad_p, *d_last)
    np.testing.assert_allclose(d_out.copy_to_host(), out, rtol=1e-5, atol=1e-6)
    # max_pool2d's cache holds each window's winner, the same on both; conv2d's CPU cache holds its
    # im2col columns, which the GPU kernels do not use.
    if name == "max_pool2d":
        np.testing.assert_array_equal(d_cache.copy_to_host(), cache)
    np.testing.assert_allclose(d_grad_in.copy_to_host(), grad_in, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_grad_p.copy_to_host(), grad_p, rtol=1e-5, atol=1e-6)
    assert not p.size or np.count_nonzero(grad_p) == p.size


def test_first_layer_skips_the_input_gradient():
    """With no rows of grad_in (the model's first layer), the backward still writes every weight gradient."""
    rng = np.random.default_rng(0)
    model, layer, x, grad_out = layer_case("dense", 3, 5, rng)
    expect = np.zeros_like(model.params)
    kernel(layer, "backward_kernel")(model.params, model.hypers[0], x, np.zeros((3, 6), np.float32), np.zeros((3, 0), np.float32),
                                     grad_out, np.zeros((0, 5), np.float32), expect)  # fmt: skip
    grad_p = cuda.to_device(np.full(model.n_params, np.nan, np.float32))
    kernel(layer, "cuda_backward")(cuda.to_device(model.params), model.hypers[0], cuda.to_device(x),
                                   cuda.device_array((3, 6), np.float32), cuda.device_array((3, 0), np.float32),
                                   cuda.to_device(grad_out), cuda.device_array((0, 5), np.float32), grad_p)  # fmt: skip
    assert np.count_nonzero(expect) == expect.size  # a reference with something in every gradient
    np.testing.assert_allclose(grad_p.copy_to_host(), expect, rtol=1e-5, atol=1e-6)


PTX_SCRIPT = textwrap.dedent('''
    import numba
    from numba import cuda, types
    from jitprop.default_plugins import activations_cuda as a, layers_cuda as l, losses_cuda as lo
    from jitprop.default_plugins import optimizers_cuda as o
    f32 = types.float32
    m2 = types.Array(f32, 2, "A")
    m1 = types.Array(f32, 1, "A")
    sigs = {
        "column_sums": (l.column_sums, (m2, m1)),
        "dropout_forward": (l._dropout_forward, (m2, m2, m2, types.float64, types.boolean, types.uint64)),
        "dropout_backward": (l._dropout_backward, (m2, m2, m2)),
        "relu_fwd": (a._relu_fwd, (m2, m2)),
        "relu_bwd": (a._relu_bwd, (m2, m2, m2)),
        "leaky_relu_fwd": (a._leaky_relu_fwd, (m2, m2, types.float64)),
        "leaky_relu_bwd": (a._leaky_relu_bwd, (m2, m2, m2, types.float64)),
    }
    for name in ("tanh", "sigmoid", "gelu", "softmax"):
        sigs[name + "_fwd"] = (getattr(a, f"_{name}_fwd"), (m2, m2))
        sigs[name + "_bwd"] = (getattr(a, f"_{name}_bwd"), (m2, m2, m2))
    i64 = types.Array(types.int64, 1, "A")
    f64 = types.Array(types.float64, 1, "A")
    for name in ("mse", "mae", "binary_cross_entropy"):
        sigs[name] = (getattr(lo, "_" + name), (m2, m2, m2, f64))
    for name in ("cross_entropy", "nll"):
        sigs[name] = (getattr(lo, "_" + name), (m2, i64, m2, f64))
    sigs["zero"] = (lo._zero, (f64,))
    F = types.float64
    B = types.boolean
    sigs["sgd"] = (o._sgd, (m1, m1, m2, F, F, F, B, F, B))
    sigs["adagrad"] = (o._adagrad, (m1, m1, m2, F, F, F))
    sigs["rmsprop"] = (o._rmsprop, (m1, m1, m2, F, F, F, F, F, B))
    sigs["adam"] = (o._adam, (m1, m1, m2, F, F, F, F, B, F, F, F))
    from jitprop.backends import cuda as cb
    i1 = types.Array(types.int64, 1, "A")
    sigs["gather_rows"] = (cb._gather_rows, (m2, i1, types.int64, m2))
    sigs["gather_items"] = (cb._gather_items, (i64, i1, types.int64, i64))
    sigs["count_classes"] = (cb._count_classes, (m2, i64, f64))
    sigs["count_binary"] = (cb._count_binary, (m2, m2, f64))
    sigs["shuffle_order"] = (cb._shuffle_order, (types.uint64, types.int64, i1))
    sigs["arange"] = (cb._arange, (i1,))
    sigs["flag_nonfinite"] = (cb._flag_nonfinite, (f64, types.int64, m1, i1))
    sigs["warmup_rate"] = (cb._warmup_rate, (f64, types.int64, types.int64, F))
    from jitprop.default_plugins import schedules_cuda as sc
    I = types.int64
    sigs["step_schedule"] = (sc._step, (f64, I, F, I, F))
    sigs["exponential_schedule"] = (sc._exponential, (f64, I, F, F))
    sigs["cosine_schedule"] = (sc._cosine, (f64, I, F, I, F))
    from jitprop.default_plugins import transforms_cuda as t
    i2 = types.Array(types.float64, 2, "A")
    sigs["layer_squares"] = (t._layer_squares, (m1, m1, i1, i2, types.boolean))
    sigs["clip_value"] = (t._clip_value, (m1, F))
    sigs["clip_norm"] = (t._clip_norm, (m1, i2, F))
    sigs["accumulate_norms"] = (t._accumulate_norms, (i2, F, i2))
    sigs["copy"] = (l._copy, (m2, m2))
    from jitprop.default_plugins import coach_cuda as co
    sigs["coach_layer_sums"] = (co._layer_sums, (m1, m1, m1, i1, i2))
    sigs["coach_accumulate"] = (co._accumulate, (i2, i1, i2))
    sigs["coach_count"] = (co._count, (m2, types.int64, i2, types.int64, types.int64))
    sigs["coach_mark_fired"] = (co._mark_fired, (m2, m1, i2, types.int64))
    sigs["coach_count_fired"] = (co._count_fired, (m1, i2, types.int64))
    from jitprop.default_plugins import convolution_cuda as cv, pooling_cuda as pl
    B1 = types.boolean
    geo = (I,) * 11
    sigs["conv_forward"] = (cv._forward, (m2, m2, m1, B1, *geo, m2))
    sigs["conv_weight_grad"] = (cv._weight_grad, (m2, m2, *geo, m2))
    sigs["conv_bias_grad"] = (cv._bias_grad, (m2, I, m1))
    sigs["conv_input_grad"] = (cv._input_grad, (m2, m2, *geo, m2))
    sigs["max_pool_forward"] = (pl._max_forward, (m2, *geo, m2, m2))
    sigs["avg_pool_forward"] = (pl._avg_forward, (m2, *geo, m2))
    sigs["pool_backward"] = (pl._pool_backward, (m2, m2, B1, *geo, m2))
    sigs["global_pool_forward"] = (pl._global_forward, (m2, m2))
    sigs["global_pool_backward"] = (pl._global_backward, (m2, m2))
    for i, k in enumerate(l._matmuls("float32", 16)):
        sigs[f"matmul_{i}"] = (k, (m2, m2, m1, m2) if i == 0 else (m2, m2, m2))
    for name, (k, sig) in sigs.items():
        cuda.compile_ptx(k.py_func, sig, cc=(7, 5))
    print("compiled", len(sigs))
''')


def test_every_cuda_kernel_compiles_to_ptx():
    from jitprop.testing import compile_ptx

    assert compile_ptx(PTX_SCRIPT).strip().startswith("compiled")


LOSSES = ["mse", "mae", "cross_entropy", "nll", "binary_cross_entropy"]


@pytest.mark.parametrize("batch, k", [(1, 2), (5, 3), (9, 7)])
@pytest.mark.parametrize("name", LOSSES)
def test_cuda_loss_kernels_match_cpu(name, batch, k):
    from jitprop.gradcheck import example_targets

    rng = np.random.default_rng(batch + k)
    loss = jitprop.loss(name)
    pred = (rng.normal(size=(batch, k)) * 3).astype(np.float32)
    pred[0, 0] = 1e4 if name in ("cross_entropy", "binary_cross_entropy") else pred[0, 0]  # stability too
    y = example_targets(loss, batch, k, rng)
    y = y if loss.target == "class" else y.astype(np.float32)
    grad = np.zeros_like(pred)
    value = kernel(loss, "kernel")(pred, y, grad, loss.hyper())
    d_grad = cuda.to_device(np.full_like(pred, np.nan))
    d_out = cuda.to_device(np.array([123.0]))
    kernel(loss, "cuda_kernel")(cuda.to_device(pred), cuda.to_device(y), d_grad, loss.hyper(), d_out)
    np.testing.assert_allclose(d_grad.copy_to_host(), grad, rtol=1e-5, atol=1e-7)
    assert d_out.copy_to_host()[0] == pytest.approx(value, rel=1e-5)


OPTIMIZERS = [
    ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("sgd", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    ("adagrad", dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.1)),
    ("rmsprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.05)),
    ("adam", dict(lr=0.01, weight_decay=0.1)),
    ("adamw", dict(lr=0.01, weight_decay=0.3)),
]


@pytest.mark.parametrize("name, options", OPTIMIZERS)
def test_cuda_optimizer_kernels_match_cpu(name, options):
    rng = np.random.default_rng(0)
    opt = jitprop.optimizer(name, **options)
    p = rng.normal(size=37).astype(np.float32)
    state = np.zeros((opt.n_state, 37), np.float32)
    opt.init_state(state)
    d_p, d_state = cuda.to_device(p), cuda.to_device(state)
    for step in range(1, 5):
        g = rng.normal(size=37).astype(np.float32)
        kernel(opt, "kernel")(p, g, state, opt.lr, opt.hyper(), step)
        kernel(opt, "cuda_kernel")(d_p, cuda.to_device(g), d_state, opt.lr, opt.hyper(), step)
    np.testing.assert_allclose(d_p.copy_to_host(), p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_state.copy_to_host(), state, rtol=1e-5, atol=1e-6)


SCHEDULES = [
    ("step", dict(step_size=3, gamma=0.5)),
    ("step", dict(step_size=1, gamma=0.9, warmup=2)),
    ("exponential", dict(gamma=0.93)),
    ("exponential", dict(gamma=0.5, warmup=4)),
    ("cosine", dict(T_max=7, eta_min=1e-4)),
    ("cosine", dict(T_max=1, warmup=1)),
]


@pytest.mark.parametrize("name, options", SCHEDULES)
def test_cuda_schedule_kernels_match_the_host(name, options):
    """The rate of every epoch, warmup and the schedule's end included, computed on the device."""
    from jitprop.backends.cuda import scheduled_rate

    schedule = jitprop.schedule(name, **options)
    out = cuda.device_array(1, np.float64)
    for base_lr in (0.1, 3e-4):
        for epoch in range(20):
            expect = schedule(epoch, base_lr)
            assert scheduled_rate(schedule, epoch, base_lr, out) == pytest.approx(expect, rel=1e-12, abs=1e-300)
            assert out.copy_to_host()[0] == pytest.approx(expect, rel=1e-12, abs=1e-300)


class PythonLoop:
    """A per-batch hook: the CPU side of a comparison runs the Python loop, which needs no generated
    step of its own (a cold compile); it computes what the compiled step does, bit for bit."""

    @jitprop.hookimpl
    def on_train_batch_end(self, trainer, batch):
        pass


def test_a_scheduled_run_on_cuda_logs_the_cpus_rates():
    from conftest import spirals

    X, y = spirals(8)
    runs = {}
    for device in ("cpu", "cuda"):
        model = jitprop.Sequential([jitprop.layer("dense", units=5), "tanh", jitprop.layer("dense", units=3)],
                                   input_dim=2, seed=1)
        trainer = jitprop.Trainer(model, "cross_entropy", jitprop.optimizer("sgd", lr=0.2), batch_size=8, device=device,
                                  lr_schedule=jitprop.schedule("cosine", T_max=3, warmup=1),
                                  callbacks=[PythonLoop()] if device == "cpu" else [])  # fmt: skip
        runs[device] = trainer.fit(X, y, epochs=5).history, model.params.copy()
    (h_cpu, p_cpu), (h_gpu, p_gpu) = runs["cpu"], runs["cuda"]
    np.testing.assert_allclose(h_gpu["lr"], h_cpu["lr"], rtol=1e-12)
    # one warmup epoch, then half a cosine over 3 epochs down to 0, where it stays
    np.testing.assert_allclose(h_cpu["lr"], [0.1, 0.2, 0.15, 0.05, 0.0], atol=1e-15)
    np.testing.assert_allclose(h_gpu["loss"], h_cpu["loss"], rtol=1e-5)
    np.testing.assert_allclose(p_gpu, p_cpu, rtol=1e-5, atol=1e-6)


def test_a_short_run_on_cuda_matches_the_same_run_on_cpu():
    """Dropout's masks, the epoch's order, validation, and gradient transforms (their statistics
    and a clip that bites) all agree with the CPU's."""
    from conftest import spirals

    X, y = spirals(20)
    runs = {}
    for device in ("cpu", "cuda"):
        model = jitprop.Sequential(
            [jitprop.layer("dense", units=6), "tanh", jitprop.layer("dropout", rate=0.2), jitprop.layer("dense", units=3)],
            input_dim=2, seed=4,
        )
        trainer = jitprop.Trainer(model, "cross_entropy", jitprop.optimizer("adam", lr=0.05), batch_size=16, device=device,
                                  transforms=["gradient_norms", jitprop.transform("gradient_clipping", max_norm=0.3)],
                                  callbacks=["coach"])  # fmt: skip
        runs[device] = (trainer.fit(X, y, epochs=2, validation_split=0.25), model.params.copy(), trainer.transforms[0].history)
    (h_cpu, p_cpu, s_cpu), (h_gpu, p_gpu, s_gpu) = runs["cpu"], runs["cuda"]
    for gpu, cpu in zip(h_gpu.coach, h_cpu.coach):  # the coach's records too
        for g, c in zip(gpu["layers"], cpu["layers"]):
            for key, value in c.items():
                if isinstance(value, float):
                    assert g[key] == pytest.approx(value, rel=1e-3, abs=1e-6), (key, g, c)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(h_gpu.history[key], h_cpu.history[key], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p_gpu, p_cpu, rtol=1e-4, atol=1e-5)
    assert len(h_gpu.iteration_loss) == len(h_cpu.iteration_loss) == 6
    assert len(s_gpu) == 2 and max(s_cpu[0]["grad_norm"]) > 0.3  # the clip acted
    for gpu, cpu in zip(s_gpu, s_cpu):
        for key in cpu:
            np.testing.assert_allclose(gpu[key], cpu[key], rtol=1e-4, atol=1e-7, err_msg=key)


def test_a_small_cnn_trains_on_cuda_as_on_cpu():
    """Convolution (with its scratch memory), pooling and dropout on images inside the device's training
    step. The CPU side runs the Python loop."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(12, 1, 5, 5)).astype(np.float32)
    y = (X[:, 0, :2].sum(axis=(1, 2)) > 0).astype(np.int64)
    runs = {}
    for device in ("cpu", "cuda"):
        model = jitprop.Sequential(
            [jitprop.layer("conv2d", out_channels=2, kernel_size=3, padding=1), "relu", jitprop.layer("max_pool2d", kernel_size=2),
             jitprop.layer("dropout", rate=0.2), jitprop.layer("avg_pool2d", kernel_size=1), "global_avg_pool2d",
             jitprop.layer("dense", units=2)],
            input_shape=(1, 5, 5), seed=3,
        )  # fmt: skip
        trainer = jitprop.Trainer(model, "cross_entropy", jitprop.optimizer("adam", lr=0.05), batch_size=5, device=device,
                                  callbacks=[PythonLoop()] if device == "cpu" else [])  # fmt: skip
        runs[device] = (trainer.fit(X, y, epochs=1, validation_split=0.25).history, model.params.copy())
    np.testing.assert_allclose(runs["cuda"][0]["val_loss"], runs["cpu"][0]["val_loss"], rtol=1e-4)
    np.testing.assert_allclose(runs["cuda"][1], runs["cpu"][1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n", [1, 7, 37])
def test_the_device_draws_the_cpus_epoch_order(n):
    from jitprop.backends import cuda as cuda_backend
    from jitprop.kernels import feistel_bits, shuffle_key, shuffle_order

    expect = np.empty(n, np.int64)
    shuffle_order(shuffle_key(5, 3), feistel_bits(n), expect)
    got = cuda.device_array(n, np.int64)
    cuda_backend._shuffle_order[2, 8](shuffle_key(5, 3), feistel_bits(n), got)
    assert np.array_equal(got.copy_to_host(), expect)


def test_an_interrupted_cuda_run_resumes_where_it_stopped(monkeypatch):
    """The device's order comes back to the host only on an interrupt; the resumed epoch
    sees the same batches as an uninterrupted run."""
    import jitprop.backends.base
    from conftest import spirals

    monkeypatch.setattr(jitprop.backends.base, "CHUNK_SECONDS", 1e-9)  # from the second call on, a batch a call
    X, y = spirals(10)

    class InterruptOnce:  # as if Ctrl-C came during the second epoch's second batch
        fired = False

        @jitprop.hookimpl
        def on_train_chunk_end(self, trainer, batches_done):
            if trainer.epoch == 1 and batches_done == 2 and not self.fired:
                self.fired = True
                trainer.request_interrupt()

    def run(seed, callbacks=()):
        model = jitprop.Sequential([jitprop.layer("dense", units=5), "tanh", jitprop.layer("dense", units=3)],
                                   input_dim=2, seed=seed)
        trainer = jitprop.Trainer(model, "cross_entropy", jitprop.optimizer("sgd", lr=0.1), batch_size=4,
                                  device="cuda", callbacks=callbacks)
        return model, trainer

    model, trainer = run(2, [InterruptOnce()])
    trainer.fit(X, y, epochs=2)
    meta, arrays = trainer.end_state
    assert trainer.interrupted and meta["progress"]["batch"] == 2
    expect = np.empty(len(y), np.int64)
    trainer.order(1, expect)
    assert np.array_equal(arrays["progress_index"], expect)
    resumed, trainer = run(7)
    trainer.load_state(meta, arrays)
    trainer.fit(X, y, epochs=2)
    straight, again = run(2)
    again.fit(X, y, epochs=2)
    np.testing.assert_allclose(resumed.params, straight.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trainer.history.history["loss"], again.history.history["loss"], rtol=1e-5)


def test_divergence_on_cuda_stops_where_the_cpu_stops_with_the_same_weights():
    from test_training import exploding

    results = {}
    for device in ("cpu", "cuda"):
        trainer, X, y = exploding(device=device)
        trainer.fit(X[:32], y[:32], epochs=3)
        results[device] = (trainer.divergence, trainer.model.params.copy(), trainer.state()[0]["progress"]["batch"])
    (d_cpu, p_cpu, b_cpu), (d_gpu, p_gpu, b_gpu) = results["cpu"], results["cuda"]
    assert d_gpu["epoch"] == d_cpu["epoch"] and d_gpu["iteration"] == d_cpu["iteration"] and b_gpu == b_cpu
    assert np.all(np.isfinite(p_gpu))
    np.testing.assert_allclose(p_gpu, p_cpu, rtol=1e-3)


def test_cuda_refuses_what_it_cannot_run():
    class NoCuda(jitprop.Layer):
        name = "no_cuda_test"
        forward_kernel = staticmethod(lambda p, h, x, out, cache, training, seed: None)
        backward_kernel = staticmethod(lambda p, h, x, out, cache, go, gi, gp: None)

    model = jitprop.Sequential([jitprop.layer("dense", units=2), NoCuda()], input_dim=2)
    with pytest.raises(jitprop.ConfigError, match=r"layer 'no_cuda_test' has no CUDA kernel \(cuda_forward\).*--device cpu"):
        jitprop.Trainer(model, "mse", device="cuda")
    model = jitprop.Sequential([jitprop.layer("dense", units=2)], input_dim=2)

    class AfterBackward:
        @jitprop.hookimpl
        def on_after_backward(self, grads):
            pass

    trainer = jitprop.Trainer(model, "mse", device="cuda", callbacks=[AfterBackward()])
    with pytest.raises(jitprop.ConfigError, match="on_after_backward.*train on the CPU"):
        trainer.fit(np.ones((4, 2)), np.ones((4, 2)))


def test_a_transform_without_a_cuda_kernel_is_refused_naming_its_plugin(register_plugin):
    from test_transforms import Squares

    class Plugin:
        @jitprop.hookimpl
        def register_transforms(self, register):
            register(Squares)

    register_plugin(Plugin(), name="squares-plugin")
    model = jitprop.Sequential([jitprop.layer("dense", units=2)], input_dim=2)
    with pytest.raises(jitprop.ConfigError, match=r"^transform 'squares_test' \(from plugin 'squares-plugin'\) has no"
                       r" CUDA kernel \(cuda_kernel\).*--device cpu$"):
        jitprop.Trainer(model, "mse", device="cuda", transforms=["squares_test"])


@pytest.mark.parametrize("name, options", [("gradient_clipping", {"max_norm": 0.4, "clip_value": 0.2}),
                                           ("gradient_clipping", {"max_norm": 100.0}), ("gradient_norms", {})])
def test_cuda_transform_kernels_match_cpu(name, options):
    tr = jitprop.transform(name, **options)
    rng = np.random.default_rng(3)
    g = rng.normal(0, 0.3, 45).astype(np.float32)
    p = rng.normal(0, 1.0, 45).astype(np.float32)
    offsets = np.array([0, 20, 20, 33, 45], np.int64)  # a layer without parameters; not multiples of a block
    stats = rng.uniform(0, 1, (4, len(tr.stat_names)))  # accumulating onto an earlier batch's
    d_g, d_p, d_offsets, d_stats = (cuda.to_device(a) for a in (g, p, offsets, stats))
    kernel(tr, "kernel")(g, p, offsets, 0.05, tr.hyper(), stats)
    kernel(tr, "cuda_kernel")(d_g, d_p, d_offsets, 0.05, tr.hyper(), d_stats)
    np.testing.assert_allclose(d_g.copy_to_host(), g, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(d_stats.copy_to_host(), stats, rtol=1e-6)


def test_cuda_weight_decay_leaves_the_same_biases_alone():
    m = jitprop.Sequential([jitprop.layer("dense", units=5), "relu", jitprop.layer("dense", units=3)], input_dim=4)
    tr = jitprop.transform("weight_decay", rate=0.05, decay_bias=False)
    tr.setup(m)
    rng = np.random.default_rng(4)
    g = rng.normal(0, 0.3, m.n_params).astype(np.float32)
    d_g = cuda.to_device(g)
    stats = np.zeros((3, 0))
    kernel(tr, "kernel")(g, m.params, m.offsets, 0.1, tr.hyper(), stats)
    kernel(tr, "cuda_kernel")(d_g, cuda.to_device(m.params), cuda.to_device(m.offsets), 0.1, tr.hyper(), cuda.to_device(stats))
    np.testing.assert_allclose(d_g.copy_to_host(), g, rtol=1e-6, atol=1e-7)


def test_a_schedule_without_a_cuda_kernel_is_refused_naming_its_plugin(register_plugin):
    class HostOnly(jitprop.Schedule):
        name = "host_only_test"

        def rate(self, epoch, base_lr):
            return base_lr

    class Plugin:
        @jitprop.hookimpl
        def register_schedules(self, register):
            register(HostOnly)

    register_plugin(Plugin(), name="host-only-plugin")
    model = jitprop.Sequential([jitprop.layer("dense", units=2)], input_dim=2)
    schedule = jitprop.schedule("host_only_test")
    with pytest.raises(jitprop.ConfigError, match=r"^schedule 'host_only_test' \(from plugin 'host-only-plugin'\) has no"
                       r" CUDA kernel \(cuda_kernel\).*--device cpu$"):
        jitprop.Trainer(model, "mse", device="cuda", lr_schedule=schedule)
    jitprop.Trainer(model, "mse", lr_schedule=schedule)  # fine on the CPU


def test_no_gpu_is_one_line_telling_how_to_run_on_the_cpu(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    exe = os.path.join(os.path.dirname(sys.executable), "jitprop")
    out = subprocess.run([exe, "train", "--device", "cuda", "--epochs", "1"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=300)
    if out.returncode == 0:
        pytest.skip("this machine has a CUDA GPU")
    assert out.stderr.strip() == "Error: --device cuda: no CUDA GPU is available here; run on the CPU with --device cpu"


def test_the_missing_cuda_part_names_its_plugin(register_plugin):
    class CpuOnly(jitprop.Layer):
        """A layer with CPU kernels only."""

        name = "cpu_only_test"
        forward_kernel = staticmethod(lambda p, h, x, out, cache, training, seed: None)
        backward_kernel = staticmethod(lambda p, h, x, out, cache, go, gi, gp: None)

    class Plugin:
        @jitprop.hookimpl
        def register_layers(self, register):
            register(CpuOnly)

    register_plugin(Plugin(), name="cpu-only-plugin")
    model = jitprop.Sequential(["cpu_only_test"], input_dim=2)
    with pytest.raises(jitprop.ConfigError, match=r"layer 'cpu_only_test' \(from plugin 'cpu-only-plugin'\) has no CUDA kernel"):
        jitprop.Trainer(model, "mse", device="cuda")


def test_cuda_coach_kernel_matches_cpu():
    """Several batches in a row (the memory carries the parameters and the fired flags across), on
    a model of every activation kind it counts, with sizes that are not multiples of a block."""
    model = jitprop.Sequential([jitprop.layer("dense", units=7), "relu", jitprop.layer("dense", units=5), "tanh",
                                jitprop.layer("dense", units=3), "sigmoid"], input_dim=4, seed=1)  # fmt: skip
    tr = jitprop.transform("coach_statistics")
    tr.setup(model)
    rng = np.random.default_rng(5)
    memory = np.zeros(tr.memory_size(model), np.float32)
    tr.init_memory(memory, model)
    stats = np.zeros((len(model.layers), len(tr.stat_names)))
    p = model.params.copy()
    d_p, d_offsets, d_stats, d_memory = (cuda.to_device(a) for a in (p, model.offsets, stats, memory))
    for batch in range(3):
        g = rng.normal(0, 0.3, p.size).astype(np.float32)
        acts = tuple(rng.normal(size=(5, w)).astype(np.float32) for w in model.dims)
        acts[2][:, 0] = -1.0  # a ReLU unit that never fires
        kernel(tr, "kernel")(g, p, model.offsets, 0.01, tr.hyper(), stats, memory, *pack_activations(acts))
        kernel(tr, "cuda_kernel")(cuda.to_device(g), d_p, d_offsets, 0.01, tr.hyper(), d_stats, d_memory,
                                  tuple(cuda.to_device(a) for a in acts))  # fmt: skip
        np.testing.assert_allclose(d_stats.copy_to_host(), stats, rtol=1e-5, atol=1e-9)
        np.testing.assert_array_equal(d_memory.copy_to_host(), memory)
        p += rng.normal(0, 0.01, p.size).astype(np.float32)  # the optimizer's step, between batches
        d_p.copy_to_device(p)
    assert stats[1, 7] == 6 and stats[0, 5] == 2  # 6 of 7 units fired; updates measured from the second batch on
