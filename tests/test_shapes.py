"""Layers take shapes: per-sample shapes through the model, shaped X everywhere, scratch memory,
and kernels built per option that stay on the compiled path."""

import numpy as np
import pytest
from click.testing import CliRunner
from numba import njit

import jitprop
from jitprop.components import kernel_factory
from jitprop.cli import cli


@kernel_factory
def channel_scale_kernels(channels):
    """y = x * (1 + c) for the c-th of ``channels`` equal slices of each row: one pair of kernels per
    channel count, the count compiled in as a constant."""

    @njit(cache=True)
    def forward(p, h, x, out, cache, training, seed):
        per = x.shape[1] // channels
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                out[i, j] = x[i, j] * (1.0 + j // per)

    @njit(cache=True)
    def backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
        per = grad_out.shape[1] // channels
        for i in range(grad_in.shape[0]):
            for j in range(grad_in.shape[1]):
                grad_in[i, j] = grad_out[i, j] * (1.0 + j // per)

    return forward, backward


class ChannelScale(jitprop.Layer):
    """Scales channel c of (C, H, W) samples by 1 + c; its kernels are built per channel count."""

    name = "channel_scale_test"

    def build(self, in_shape):
        out = super().build(in_shape)
        self.forward_kernel, self.backward_kernel = channel_scale_kernels(in_shape[0])
        return out


@njit(cache=True)
def center_forward(p, h, x, out, cache, training, seed, scratch):
    n, d = x.shape
    scratch[:] = 0.0  # the batch's column means: numbers that belong to no row
    for i in range(n):
        for j in range(d):
            scratch[j] += x[i, j] / n
    for i in range(n):
        for j in range(d):
            out[i, j] = x[i, j] - scratch[j]


@njit(cache=True)
def center_backward(p, h, x, out, cache, grad_out, grad_in, grad_p, scratch):
    n, d = grad_out.shape
    if grad_in.shape[0] == 0:
        return
    scratch[:] = 0.0
    for i in range(n):
        for j in range(d):
            scratch[j] += grad_out[i, j] / n
    for i in range(n):
        for j in range(d):
            grad_in[i, j] = grad_out[i, j] - scratch[j]


class Center(jitprop.Layer):
    """Subtracts the batch's mean from each feature, keeping the means in its scratch memory."""

    name = "center_test"
    forward_kernel = staticmethod(center_forward)
    backward_kernel = staticmethod(center_backward)

    def scratch_size(self):
        return self.in_dim


def images(n=48, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2, 3, 4))
    return X, (X[:, 1].sum(axis=(1, 2)) > 0).astype(np.int64)


def test_shapes_flow_through_the_model_and_dense_flattens_as_torch_linear_after_flatten():
    m = jitprop.Sequential(["relu", jitprop.layer("dense", units=5), "tanh", jitprop.layer("dense", units=2)],
                           input_shape=(2, 3, 4))  # fmt: skip
    assert m.shapes == [(2, 3, 4), (2, 3, 4), (5,), (5,), (2,)]
    assert m.dims == [24, 24, 5, 5, 2] and m.input_dim == 24 and m.output_shape == (2,)
    assert m.state_dict()["1.weight"].shape == (5, 24)
    assert "input_shape=(2, 3, 4)" in repr(m)
    flat = jitprop.Sequential([jitprop.layer("dense", units=2)], input_dim=7)
    assert flat.input_shape == (7,) and flat.config()["input_shape"] == [7]


@pytest.mark.parametrize("bad, message", [
    (dict(input_shape=(2, 0, 3)), "input_shape must be a tuple of positive sizes"),
    (dict(input_shape="8x8"), "input_shape must be a tuple of positive sizes"),
    (dict(input_shape=(2, 3), input_dim=7), "input_dim=7 does not match input_shape=(2, 3)"),
    (dict(), "needs input_dim"),
])  # fmt: skip
def test_bad_shapes_are_one_sentence(bad, message):
    with pytest.raises(jitprop.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        jitprop.Sequential([jitprop.layer("dense", units=2)], **bad)


def test_shaped_inputs_are_taken_by_fit_evaluate_and_predict_shaped_or_flat():
    X, y = images()
    m = jitprop.Sequential([jitprop.layer("dense", units=6), "relu", jitprop.layer("dense", units=2)],
                           input_shape=(2, 3, 4), seed=1)  # fmt: skip
    twin = jitprop.Sequential([jitprop.layer("dense", units=6), "relu", jitprop.layer("dense", units=2)],
                              input_dim=24, seed=1)  # fmt: skip
    jitprop.fit(m, X, y, loss="cross_entropy", epochs=2, validation_data=(X[:8], y[:8]))
    jitprop.fit(twin, X.reshape(len(X), -1), y, loss="cross_entropy", epochs=2, validation_data=(X[:8].reshape(8, -1), y[:8]))
    assert np.array_equal(m.params, twin.params)  # a shape changes nothing about the numbers
    assert np.array_equal(m.predict(X), m.predict(X.reshape(len(X), -1)))
    assert jitprop.evaluate(m, X, y, loss="cross_entropy") == jitprop.evaluate(twin, X.reshape(len(X), -1), y,
                                                                               loss="cross_entropy")  # fmt: skip
    with pytest.raises(jitprop.DataError, match=r"holds samples of shape \(3, 2, 4\), but the model expects input_shape=\(2, 3, 4\)"):
        m.predict(X.transpose(0, 2, 1, 3))
    with pytest.raises(jitprop.DataError, match=r"must be of shape \(samples, 2, 3, 4\), got shape \(48, 2, 12\)"):
        m.predict(X.reshape(48, 2, 12))


def test_an_npz_of_images_trains_from_the_command_line_and_its_checkpoint_keeps_the_shape(tmp_path):
    X, y = images(60)
    np.savez(tmp_path / "images.npz", X=X, y=y)
    path = tmp_path / "m.npz"
    result = CliRunner().invoke(cli, ["train", "--dataset", str(tmp_path / "images.npz"), "--hidden", "4", "--epochs", "2",
                                      "--checkpoint", str(path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = jitprop.checkpoint.load(path)
    assert saved.meta["model"]["input_shape"] == [2, 3, 4]
    assert saved.build_model().input_shape == (2, 3, 4)
    out = CliRunner().invoke(cli, ["predict", str(path), str(tmp_path / "images.npz")])
    assert out.exit_code == 0 and len(out.output.splitlines()) == 61, out.output
    resumed = CliRunner().invoke(cli, ["train", "--resume", str(path), "--epochs", "3"])
    assert resumed.exit_code == 0, resumed.output


def test_scratch_memory_and_kernels_built_per_option_stay_on_the_compiled_path():
    """A layer with scratch memory, and one whose kernels are built per channel count: both
    compiled into the generated step, bit-identical to the Python loop."""
    from jitprop import gradcheck

    assert max(gradcheck.check_layer(Center(), in_dim=4, batch=5).values()) < 1e-6
    assert max(gradcheck.check_layer(ChannelScale(), in_shape=(3, 2, 2)).values()) < 1e-6
    assert channel_scale_kernels(3) is channel_scale_kernels(3)  # built once per option
    assert channel_scale_kernels(3)[0] is not channel_scale_kernels(2)[0]
    X, y = images()
    runs = []
    for compiled in (True, False):
        m = jitprop.Sequential([ChannelScale(), Center(), jitprop.layer("dense", units=2)], input_shape=(2, 3, 4), seed=3)
        assert [w.shape for w in m.layer_scratch] == [(0,), (24,), (0,)]
        t = jitprop.Trainer(m, "cross_entropy", batch_size=10)
        t.compiled = compiled
        t.fit(X, y, epochs=2)
        runs.append((t.backend.name, m.params.copy()))
    assert [name for name, _ in runs] == ["compiled", "python"]
    assert np.array_equal(runs[0][1], runs[1][1])
    with pytest.raises(jitprop.ConfigError, match="kernel options must be numbers"):
        channel_scale_kernels([3])
