"""batch_norm2d against float64 references (and torch, where installed); both layers' CUDA kernels
against the CPU's on numba's simulator (conftest.py turns it on)."""

import numpy as np
import pytest

import jitprop
from jitprop.components import kernel
from jitprop.gradcheck import check_layer
from jitprop.testing import compile_ptx, tiny_cuda_grids


def reference(x, weight, bias, mean_run, var_run, training, momentum=0.1, eps=1e-5):
    """torch.nn.BatchNorm2d's forward in float64 NumPy, x of shape (n, C, H, W): (out, running mean, running var)."""
    if training:
        mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
        count = x.size // x.shape[1]
        mean_run = (1 - momentum) * mean_run + momentum * mean
        var_run = (1 - momentum) * var_run + momentum * (var * count / (count - 1))
    else:
        mean, var = mean_run, var_run
    per = (1, -1, 1, 1)
    out = weight.reshape(per) * (x - mean.reshape(per)) / np.sqrt(var.reshape(per) + eps) + bias.reshape(per)
    return out, mean_run, var_run


@pytest.mark.parametrize("in_shape, batch", [((2, 3, 2), 4), ((3, 1, 1), 5), ((1, 4, 3), 1), ((4, 2, 5), 2)])
def test_gradients_match_finite_differences(in_shape, batch):
    errors = check_layer("batch_norm2d", in_shape=in_shape, batch=batch)
    assert max(errors.values()) < 1e-6, errors


def test_forward_and_running_statistics_match_the_reference():
    rng = np.random.default_rng(1)
    shape = (3, 4, 5)
    model = jitprop.Sequential([jitprop.layer("batch_norm2d", momentum=0.2)], input_shape=shape, dtype="float64")
    assert model.state_dict()["0.weight"].shape == (3,) and model.buffers()["0.running_var"].shape == (3,)
    params = model.parameters()
    params["0.weight"][...] = rng.normal(size=3)
    params["0.bias"][...] = rng.normal(size=3)
    w, b = params["0.weight"].copy(), params["0.bias"].copy()
    mean_run, var_run = np.zeros(3), np.ones(3)
    ws = model.workspace(6, training=True)
    for _ in range(3):
        x = rng.normal(2.0, 3.0, size=(6, *shape)) + np.arange(3).reshape(1, 3, 1, 1)  # channels apart
        acts, caches, _ = ws.views(6)
        acts[0][...] = x.reshape(6, -1)
        out = model.forward(acts, caches, training=True)
        expect, mean_run, var_run = reference(x, w, b, mean_run, var_run, True, momentum=0.2)
        np.testing.assert_allclose(out, expect.reshape(6, -1), rtol=1e-12, atol=1e-12)
    buffers = model.buffers()
    np.testing.assert_allclose(buffers["0.running_mean"], mean_run, rtol=1e-12)
    np.testing.assert_allclose(buffers["0.running_var"], var_run, rtol=1e-12)
    assert buffers["0.num_batches_tracked"] == 3
    x = rng.normal(size=(2, *shape))
    expect, _, _ = reference(x, w, b, mean_run, var_run, False)
    np.testing.assert_allclose(model.predict(x), expect.reshape(2, -1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model.predict(x[:1]), expect[:1].reshape(1, -1), rtol=1e-12, atol=1e-12)


def test_it_matches_torch_forward_backward_and_statistics():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    shape = (2, 3, 4)
    model = jitprop.Sequential([jitprop.layer("batch_norm2d")], input_shape=shape, dtype="float64")
    model.params[...] = rng.normal(size=model.n_params)
    module = torch.nn.BatchNorm2d(2).double()
    module.load_state_dict({k.split(".", 1)[1]: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    x, g = rng.normal(size=(5, 24)), rng.normal(size=(5, 24))
    layer, p, h, last = model.layers[0], model.layer_params[0], model.hypers[0], model.last_args(0)
    out, cache, grad_in, grad_p = np.zeros((5, 24)), np.zeros((5, 24)), np.zeros((5, 24)), np.zeros(4)
    kernel(layer, "forward_kernel")(p, h, x, out, cache, True, 0, *last)
    kernel(layer, "backward_kernel")(p, h, x, out, cache, g, grad_in, grad_p, *last)
    xt = torch.from_numpy(x.reshape(5, *shape)).requires_grad_()
    yt = module(xt)
    yt.backward(torch.from_numpy(g.reshape(5, *shape)))
    np.testing.assert_allclose(out, yt.detach().numpy().reshape(5, -1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad_in, xt.grad.numpy().reshape(5, -1), rtol=1e-8, atol=1e-12)
    # grad_p is [weight (2), bias (2)]
    np.testing.assert_allclose(grad_p[:2], module.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(grad_p[2:], module.bias.grad.numpy(), rtol=1e-10)
    for key, value in model.buffers().items():
        np.testing.assert_allclose(value, getattr(module, key.split(".", 1)[1]).numpy(), rtol=1e-12)


def test_shapes_are_checked_and_a_cnn_trains_compiled_as_in_the_python_loop():
    with pytest.raises(jitprop.ConfigError, match=r"^batch_norm2d 0: takes samples of shape \(channels, height, width\)"):
        jitprop.Sequential(["batch_norm2d"], input_dim=8)
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(40, 1, 6, 6)), rng.integers(0, 3, 40)
    results = []
    for compiled in (True, False):
        model = jitprop.Sequential([jitprop.layer("conv2d", out_channels=3, kernel_size=3), "batch_norm2d", "relu", "flatten",
                                    jitprop.layer("dense", units=3)], input_shape=(1, 6, 6), seed=0)  # fmt: skip
        trainer = jitprop.Trainer(model, "cross_entropy", "adam", batch_size=16)
        trainer.compiled = compiled
        trainer.fit(X, y, epochs=2, validation_split=0.25)
        assert trainer.backend.name == ("compiled" if compiled else "python")
        results.append((model.params.copy(), model.state.copy(), trainer.history.history["val_loss"]))
    (p1, s1, v1), (p2, s2, v2) = results
    assert np.array_equal(p1, p2) and np.array_equal(s1, s2) and v1 == v2
    assert model.buffers()["1.num_batches_tracked"] == 2 * 2


CUDA_CASES = [  # (layer, per-sample shape, batch): one sample, odd sizes, one pixel, more channels than a block's threads
    ("batch_norm", (5,), 1),
    ("batch_norm", (9,), 7),
    ("batch_norm2d", (3, 2, 3), 1),
    ("batch_norm2d", (2, 5, 3), 4),
    ("batch_norm2d", (11, 1, 1), 3),
]


@pytest.mark.parametrize("name, in_shape, batch", CUDA_CASES)
@pytest.mark.parametrize("training", [True, False])
def test_cuda_kernels_match_the_cpus(name, in_shape, batch, training):
    from numba import cuda

    rng = np.random.default_rng(batch + len(in_shape))
    model = jitprop.Sequential([name], input_shape=in_shape, dtype="float32", seed=1)
    model.params[...] = rng.normal(0, 0.5, model.n_params)
    model.state[...] = np.abs(rng.normal(1, 0.5, model.state.size))  # running statistics of some past
    layer, p, h = model.layers[0], model.layer_params[0], model.hypers[0]
    x = rng.normal(size=(batch, model.input_dim)).astype(np.float32)
    go = rng.normal(size=(batch, model.output_dim)).astype(np.float32)
    out, cache = np.zeros_like(go), np.zeros((batch, layer.cache_dim()), np.float32)
    gi, gp = np.zeros_like(x), np.zeros_like(p)
    state, scratch = model.last_args(0)
    d_state, d_scratch = cuda.to_device(state), cuda.to_device(scratch)
    kernel(layer, "forward_kernel")(p, h, x, out, cache, training, 0, state, scratch)
    d = {k: cuda.to_device(v) for k, v in dict(p=p, x=x, go=go).items()}
    d_out, d_cache, d_gi = cuda.device_array_like(out), cuda.to_device(cache * 0), cuda.device_array_like(gi)
    d_gp = cuda.to_device(np.full_like(p, np.nan))  # kernels overwrite, never add
    with tiny_cuda_grids(threads=4, max_blocks=2):
        kernel(layer, "cuda_forward")(d["p"], h, d["x"], d_out, d_cache, training, 0, d_state, d_scratch)
        if training:
            kernel(layer, "backward_kernel")(p, h, x, out, cache, go, gi, gp, state, scratch)
            kernel(layer, "cuda_backward")(d["p"], h, d["x"], d_out, d_cache, d["go"], d_gi, d_gp, d_state, d_scratch)
    np.testing.assert_allclose(d_out.copy_to_host(), out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_state.copy_to_host(), state, rtol=1e-6)  # running statistics and the count
    if training:
        np.testing.assert_allclose(d_cache.copy_to_host(), cache, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(d_gi.copy_to_host(), gi, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(d_gp.copy_to_host(), gp, rtol=1e-5, atol=1e-5)


def test_cuda_kernels_compile_to_ptx():
    out = compile_ptx("""
from numba import cuda, float32, float64, int64, boolean
from jitprop_batchnorm import cuda as k
a2, a1 = float32[:, :], float32[:]
for kern, sig in [
    (k._statistics, (a2, int64, float64, float64, a1, a1)),
    (k._normalise, (a2, a1, int64, a1, a2, a2)),
    (k._inference, (a2, a1, int64, float64, a1, a2)),
    (k._channel_grads, (a2, a1, a2, a2, int64, float64, boolean, a1, a1)),
    (k._input_grad, (a2, a2, a1, a1, int64, a2)),
]:
    ptx, _ = cuda.compile_ptx(kern.py_func, sig, cc=(7, 5))
    assert ".entry" in ptx
print("ok")
""")
    assert out.strip().endswith("ok")


def test_a_cnn_with_batch_norm2d_trains_on_cuda_as_on_the_cpu():
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(12, 1, 5, 5)).astype(np.float32), rng.integers(0, 2, 12)
    runs = {}
    for device in ("cpu", "cuda"):
        # No conv bias: batch norm takes out the mean, so its true gradient is 0, and Adam would turn
        # the two devices' rounding noise in it into steps of the learning rate.
        model = jitprop.Sequential([jitprop.layer("conv2d", out_channels=2, kernel_size=3, bias=False), "batch_norm2d", "relu",
                                    "flatten", jitprop.layer("dense", units=2)], input_shape=(1, 5, 5), seed=0)  # fmt: skip
        trainer = jitprop.Trainer(model, "cross_entropy", "adam", batch_size=5, device=device)
        with tiny_cuda_grids():
            trainer.fit(X, y, epochs=2, validation_split=0.25)
        runs[device] = model.params.copy(), model.state.copy(), trainer.history.history["val_loss"]
    (p_cpu, s_cpu, v_cpu), (p_gpu, s_gpu, v_gpu) = runs["cpu"], runs["cuda"]
    np.testing.assert_allclose(p_gpu, p_cpu, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s_gpu, s_cpu, rtol=1e-4, atol=1e-5)  # running statistics, counted batches
    np.testing.assert_allclose(v_gpu, v_cpu, rtol=1e-4)
