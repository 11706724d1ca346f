"""Image layers: conv2d, max_pool2d, avg_pool2d, global_avg_pool2d and flatten, against naive loops and
finite differences, on awkward shapes (odd sizes, stride 2, padding, one sample)."""

import numpy as np
import pytest

import jitprop
from jitprop import gradcheck
from jitprop.components import kernel

RNG = np.random.default_rng(7)


def run_layer(layer, in_shape, x, grad_out):
    """One forward and one backward of a single-layer float64 model: (out, grad_in, {key: grad})."""
    model = jitprop.Sequential([layer], input_shape=in_shape, dtype="float64", seed=1)
    n = x.shape[0]
    out = np.zeros((n, model.output_dim))
    cache = np.zeros((n, layer.cache_dim()))
    grad_in = np.zeros_like(x)
    p, h, last = model.layer_params[0], model.hypers[0], model.last_args(0)
    kernel(layer, "forward_kernel")(p, h, x, out, cache, True, np.uint64(0), *last)
    model.grads[...] = np.nan
    kernel(layer, "backward_kernel")(p, h, x, out, cache, grad_out.reshape(n, -1), grad_in, model.layer_grads[0], *last)
    return model, out, grad_in, model.gradients()


def pad(x, ph, pw, value=0.0):
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def windows(height, width, kh, kw, sh, sw, ph, pw):
    """Every output position and the padded input rows and columns its window covers."""
    for y in range((height + 2 * ph - kh) // sh + 1):
        for z in range((width + 2 * pw - kw) // sw + 1):
            yield y, z, slice(y * sh, y * sh + kh), slice(z * sw, z * sw + kw)


def naive_conv(x, w, b, stride, padding):
    """Cross-correlation as torch defines it, one output at a time, and its gradients by the chain rule."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, height, width = x.shape
    oc, _, kh, kw = w.shape
    xp = pad(x, ph, pw)
    cells = list(windows(height, width, kh, kw, sh, sw, ph, pw))
    oh, ow = cells[-1][0] + 1, cells[-1][1] + 1
    out = np.zeros((n, oc, oh, ow))
    for s in range(n):
        for o in range(oc):
            for y, z, rows, cols in cells:
                out[s, o, y, z] = np.sum(xp[s, :, rows, cols] * w[o]) + b[o]

    def backward(g):
        gx, gw, gb = np.zeros_like(xp), np.zeros_like(w), g.sum(axis=(0, 2, 3))
        for s in range(n):
            for o in range(oc):
                for y, z, rows, cols in cells:
                    gw[o] += g[s, o, y, z] * xp[s, :, rows, cols]
                    gx[s, :, rows, cols] += g[s, o, y, z] * w[o]
        return gx[:, :, ph : ph + height, pw : pw + width], gw, gb

    return out, backward


def naive_pool(x, kernel_size, stride, padding, mode):
    """torch's max pool (padding never wins, the gradient to the first maximum) or average pool
    (count_include_pad: every window divides by its full area)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, height, width = x.shape
    xp = pad(x, ph, pw, -np.inf if mode == "max" else 0.0)
    cells = list(windows(height, width, kh, kw, sh, sw, ph, pw))
    out = np.zeros((n, c, cells[-1][0] + 1, cells[-1][1] + 1))
    picks = {}
    for s in range(n):
        for ch in range(c):
            for y, z, rows, cols in cells:
                window = xp[s, ch, rows, cols]
                if mode == "max":
                    i, j = np.unravel_index(np.argmax(window), window.shape)  # argmax: the first maximum
                    picks[s, ch, y, z] = (rows.start + i, cols.start + j)
                    out[s, ch, y, z] = window[i, j]
                else:
                    out[s, ch, y, z] = window.sum() / (kh * kw)

    def backward(g):
        gx = np.zeros_like(xp)
        for s in range(n):
            for ch in range(c):
                for y, z, rows, cols in cells:
                    if mode == "max":
                        gx[(s, ch, *picks[s, ch, y, z])] += g[s, ch, y, z]
                    else:
                        gx[s, ch, rows, cols] += g[s, ch, y, z] / (kh * kw)
        return gx[:, :, ph : ph + height, pw : pw + width]

    return out, backward


CONVS = [  # (in_shape, options, batch)
    ((1, 5, 5), {"out_channels": 2, "kernel_size": 3}, 3),
    ((2, 7, 6), {"out_channels": 3, "kernel_size": (2, 3), "stride": 2, "padding": (1, 0)}, 2),
    ((3, 4, 5), {"out_channels": 1, "kernel_size": 3, "padding": 2, "bias": False}, 1),
    ((2, 9, 9), {"out_channels": 4, "kernel_size": 5, "stride": (2, 1), "padding": 2}, 2),
    ((1, 6, 3), {"out_channels": 2, "kernel_size": 1, "stride": 3}, 2),
    # stride 1 (the wide grid), a rectangular kernel, padding on one side only, more samples than chunks
    ((2, 6, 5), {"out_channels": 3, "kernel_size": (3, 2), "padding": (0, 1)}, 11),
]


@pytest.mark.parametrize("in_shape, options, batch", CONVS)
def test_conv2d_matches_naive_loops(in_shape, options, batch):
    layer = jitprop.layer("conv2d", **options)
    x = RNG.normal(size=(batch, *in_shape))
    out_shape = layer.output_shape(in_shape)
    g = RNG.normal(size=(batch, *out_shape))
    model, out, grad_in, grads = run_layer(layer, in_shape, x.reshape(batch, -1), g)
    w = model.state_dict()["0.weight"]
    b = model.state_dict().get("0.bias", np.zeros(w.shape[0]))
    expected, backward = naive_conv(x, w, b, layer.stride, layer.padding)
    assert expected.shape[1:] == out_shape == model.shapes[-1]
    np.testing.assert_allclose(out.reshape(expected.shape), expected, rtol=1e-12, atol=1e-12)
    gx, gw, gb = backward(g)
    np.testing.assert_allclose(grad_in.reshape(gx.shape), gx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads["0.weight"], gw, rtol=1e-12, atol=1e-12)
    if options.get("bias", True):
        np.testing.assert_allclose(grads["0.bias"], gb, rtol=1e-12, atol=1e-12)
    else:
        assert "0.bias" not in grads and w.shape == (options["out_channels"], in_shape[0], 3, 3)


POOLS = [  # (in_shape, options, batch)
    ((1, 4, 4), {"kernel_size": 2}, 2),
    ((2, 5, 7), {"kernel_size": 2}, 3),  # 2x2's own loop, on odd sizes
    ((2, 5, 7), {"kernel_size": 3, "stride": 2, "padding": 1}, 1),
    ((3, 6, 5), {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 1)}, 2),
    ((1, 7, 7), {"kernel_size": 3, "stride": 1}, 3),
    ((2, 7, 6), {"kernel_size": (3, 2), "stride": (2, 3)}, 2),  # no padding: windows never clipped; sizes floor
]


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("in_shape, options, batch", POOLS)
def test_pooling_matches_naive_loops(mode, in_shape, options, batch):
    layer = jitprop.layer(f"{mode}_pool2d", **options)
    x = RNG.normal(size=(batch, *in_shape))
    x[0, 0, 0, :2] = x[0, 0, 1, 0] = 3.0  # a tie: the first maximum takes the gradient
    x[-1, -1, :2, :2] = 0.0  # a window of ReLU's zeros: all tie
    out_shape = layer.output_shape(in_shape)
    g = RNG.normal(size=(batch, *out_shape))
    _, out, grad_in, _ = run_layer(layer, in_shape, x.reshape(batch, -1), g)
    expected, backward = naive_pool(x, layer.kernel_size, layer.stride, layer.padding, mode)
    assert expected.shape[1:] == out_shape
    np.testing.assert_allclose(out.reshape(expected.shape), expected, rtol=1e-12)
    np.testing.assert_allclose(grad_in.reshape(x.shape), backward(g), rtol=1e-12, atol=1e-12)


def test_global_average_pool_and_flatten():
    x = RNG.normal(size=(2, 3, 4, 5))
    g = RNG.normal(size=(2, 3))
    _, out, grad_in, _ = run_layer(jitprop.layer("global_avg_pool2d"), (3, 4, 5), x.reshape(2, -1), g)
    np.testing.assert_allclose(out, x.mean(axis=(2, 3)), rtol=1e-12)
    np.testing.assert_allclose(grad_in.reshape(x.shape), np.broadcast_to(g[:, :, None, None] / 20, x.shape))
    g = RNG.normal(size=(2, 60))
    model, out, grad_in, _ = run_layer(jitprop.layer("flatten"), (3, 4, 5), x.reshape(2, -1), g)
    assert model.shapes == [(3, 4, 5), (60,)]
    np.testing.assert_array_equal(out, x.reshape(2, -1))
    np.testing.assert_array_equal(grad_in, g)


GRADCHECKS = [
    ("conv2d", {"out_channels": 2, "kernel_size": 3, "padding": 1}, (2, 5, 4)),
    ("conv2d", {"out_channels": 3, "kernel_size": (2, 3), "stride": 2, "padding": (1, 0)}, (2, 7, 6)),
    ("conv2d", {"out_channels": 2, "kernel_size": 3, "stride": (1, 2), "bias": False}, (1, 5, 5)),
    ("max_pool2d", {"kernel_size": 2}, (2, 4, 6)),
    ("max_pool2d", {"kernel_size": 3, "stride": 2}, (1, 7, 6)),
    ("max_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, (2, 7, 6)),
    ("max_pool2d", {"kernel_size": (2, 3), "stride": (2, 1), "padding": (1, 0)}, (1, 5, 5)),
    ("avg_pool2d", {"kernel_size": 2, "stride": 1, "padding": 1}, (2, 5, 4)),
    ("avg_pool2d", {"kernel_size": (3, 2), "padding": (1, 1)}, (1, 7, 6)),
    ("global_avg_pool2d", {}, (3, 2, 5)),
    ("flatten", {}, (2, 3, 2)),
]


@pytest.mark.parametrize("name, options, in_shape", GRADCHECKS)
def test_gradients_match_finite_differences(name, options, in_shape):
    errors = gradcheck.check_layer(jitprop.layer(name, **options), in_shape=in_shape, batch=2)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize(
    "layers, in_shape, message",
    [
        ([("conv2d", {"out_channels": 4, "kernel_size": 3}), ("relu", {}), ("conv2d", {"out_channels": 2, "kernel_size": 5})],
         (1, 6, 6), "conv2d 2: kernel 5 is larger than its input 4x4"),
        ([("conv2d", {"out_channels": 2, "kernel_size": (3, 7), "padding": 1})], (1, 4, 4),
         "conv2d 0: kernel 3x7 is larger than its padded input 6x6"),
        ([("max_pool2d", {"kernel_size": 2})], (16,), "max_pool2d 0: takes samples of shape (channels, height, width),"
         " got 16; give the model input_shape=(C, H, W)"),
        ([("flatten", {}), ("avg_pool2d", {"kernel_size": 2})], (1, 4, 4), "avg_pool2d 1: takes samples of shape"),
    ],
)  # fmt: skip
def test_shapes_that_do_not_fit_are_one_line_naming_the_layer(layers, in_shape, message):
    with pytest.raises(jitprop.ConfigError) as e:
        jitprop.Sequential([jitprop.layer(name, **o) for name, o in layers], input_shape=in_shape)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("conv2d", {"out_channels": 0, "kernel_size": 3}, "out_channels must be an integer >= 1"),
        ("conv2d", {"out_channels": 2, "kernel_size": (3, 3, 3)}, "kernel_size must be an integer >= 1 or a pair"),
        ("conv2d", {"out_channels": 2, "kernel_size": 3, "padding": -1}, "padding must be an integer >= 0"),
        ("max_pool2d", {"kernel_size": 2, "padding": 2}, "padding (2, 2) must be at most half of kernel_size"),
        ("avg_pool2d", {"kernel_size": 2, "stride": 0}, "stride must be an integer >= 1"),
    ],
)
def test_bad_options_are_one_line(name, options, message):
    with pytest.raises(jitprop.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        jitprop.layer(name, **options)


def lenet_like(dtype="float32", seed=0):
    return jitprop.Sequential(
        [jitprop.layer("conv2d", out_channels=8, kernel_size=3, padding=1), "relu", jitprop.layer("max_pool2d", kernel_size=2),
         jitprop.layer("dropout", rate=0.1), jitprop.layer("conv2d", out_channels=8, kernel_size=3, padding=1), "relu",
         jitprop.layer("avg_pool2d", kernel_size=2), "flatten", jitprop.layer("dense", units=10)],
        input_shape=(1, 8, 8), dtype=dtype, seed=seed,
    )  # fmt: skip


def test_a_small_cnn_has_torchs_state_dict_and_shapes():
    model = lenet_like()
    assert model.shapes == [(1, 8, 8), (8, 8, 8), (8, 8, 8), (8, 4, 4), (8, 4, 4), (8, 4, 4), (8, 4, 4), (8, 2, 2), (32,), (10,)]
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        "0.weight": (8, 1, 3, 3), "0.bias": (8,), "4.weight": (8, 8, 3, 3), "4.bias": (8,), "8.weight": (10, 32), "8.bias": (10,)
    }  # fmt: skip
    rebuilt = jitprop.Sequential.from_config(model.config())
    assert rebuilt.shapes == model.shapes and rebuilt.config() == model.config()


def test_the_cnn_learns_digits_on_the_compiled_path_as_in_the_python_loop():
    """``--model cnn`` (the command line trains the same generated step in test_images_cli.py)."""
    from jitprop.default_plugins.datasets import Digits
    from jitprop.model.architectures import cnn

    table = Digits().load()
    X, y = (table.X / 16.0).reshape(-1, 1, 8, 8), table.y
    runs = {}
    for path in ("compiled", "python"):

        class ForceLoop:  # any per-batch hook makes the trainer run the Python loop
            @jitprop.hookimpl
            def on_train_batch_end(self, trainer, batch):
                pass

        model = jitprop.Sequential([jitprop.layer(**spec) for spec in cnn(10)], input_shape=(1, 8, 8))
        trainer = jitprop.Trainer(model, "cross_entropy", optimizer=jitprop.optimizer("adam", lr=0.01), batch_size=32,
                                  callbacks=[ForceLoop()] if path == "python" else [])  # fmt: skip
        history = trainer.fit(X[:800], y[:800], epochs=2, validation_data=(X[1200:], y[1200:]))
        runs[path] = (model.params.copy(), history.history["val_accuracy"][-1], trainer.backend.name)
    assert runs["compiled"][2] == "compiled" and runs["python"][2] == "python"
    np.testing.assert_array_equal(runs["compiled"][0], runs["python"][0])
    assert runs["compiled"][1] > 0.7


def test_the_image_layers_match_torch():
    """The same weights and input through torch's modules: outputs and gradients agree (needs torch)."""
    torch = pytest.importorskip("torch")
    model = lenet_like(dtype="float64", seed=3)
    layers = [torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Identity(),
              torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
              torch.nn.Linear(32, 10)]  # fmt: skip
    net = torch.nn.Sequential(*layers).double()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    x = RNG.normal(size=(5, 1, 8, 8))
    xt = torch.from_numpy(x).requires_grad_()
    out = net(xt)
    np.testing.assert_allclose(model.predict(x), out.detach().numpy(), rtol=1e-10)
    value, grads = jitprop.value_and_grad(model, "cross_entropy", x, np.arange(5))
    loss = torch.nn.functional.cross_entropy(out, torch.arange(5))
    loss.backward()
    assert abs(value - loss.item()) < 1e-10
    for key, module in (("0", layers[0]), ("4", layers[4]), ("8", layers[8])):
        np.testing.assert_allclose(grads[f"{key}.weight"], module.weight.grad.numpy(), rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(grads[f"{key}.bias"], module.bias.grad.numpy(), rtol=1e-8, atol=1e-12)


def test_max_pooling_propagates_nan_as_torch_does():
    x = RNG.normal(size=(1, 1, 4, 4))
    x[0, 0, 1, 2] = np.nan
    _, out, _, _ = run_layer(jitprop.layer("max_pool2d", kernel_size=2), (1, 4, 4), x.reshape(1, -1), np.ones((1, 4)))
    assert np.isnan(out[0, 1]) and np.all(np.isfinite(out[0, [0, 2, 3]]))
