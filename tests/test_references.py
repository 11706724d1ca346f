"""Forward values of the built-in layers and losses against independent float64 references."""

import numpy as np
import pytest
from scipy import special, stats

import jitprop
from jitprop.components import kernel


def forward(name, x, **options):
    model = jitprop.Sequential([jitprop.layer(name, **options)], input_dim=x.shape[1], dtype="float64")
    return model, model.predict(x)


X = np.random.default_rng(0).normal(scale=3.0, size=(7, 5))


@pytest.mark.parametrize(
    "name, reference",
    [
        ("relu", lambda x: np.maximum(x, 0)),
        ("leaky_relu", lambda x: np.where(x > 0, x, 0.01 * x)),
        ("tanh", np.tanh),
        ("sigmoid", special.expit),
        ("gelu", lambda x: x * stats.norm.cdf(x)),
        ("softmax", lambda x: special.softmax(x, axis=1)),
        ("dropout", lambda x: x),  # identity at inference
    ],
)
def test_activation_forward(name, reference):
    np.testing.assert_allclose(forward(name, X)[1], reference(X), rtol=1e-12, atol=1e-14)


def test_dense_forward_is_x_wt_plus_b():
    model, out = forward("dense", X, units=4)
    sd = model.state_dict()
    assert sd["0.weight"].shape == (4, 5) and sd["0.bias"].shape == (4,)
    np.testing.assert_allclose(out, X @ sd["0.weight"].T + sd["0.bias"], rtol=1e-12)


def test_sigmoid_and_softmax_survive_huge_inputs():
    x = np.array([[1e4, -1e4, 0.0, 50.0, -800.0]])
    for dtype in ("float32", "float64"):
        m = jitprop.Sequential(["sigmoid"], input_dim=5, dtype=dtype)
        np.testing.assert_allclose(m.predict(x), special.expit(x), atol=1e-7)
        m = jitprop.Sequential(["softmax"], input_dim=5, dtype=dtype)
        assert np.all(np.isfinite(m.predict(x)))


def dropout_fraction(rate, n=20000):
    model = jitprop.Sequential([jitprop.layer("dropout", rate=rate)], input_dim=10, dtype="float64")
    ws = model.workspace(n, training=True)
    acts, caches, _ = ws.views(n)
    acts[0][...] = 1.0
    out = model.forward(acts, caches, training=True, seed=123)
    return out


def test_dropout_zeroes_about_rate_and_rescales_the_rest():
    out = dropout_fraction(0.3)
    assert abs((out == 0).mean() - 0.3) < 0.01
    kept = out[out != 0]
    np.testing.assert_allclose(kept, 1 / 0.7)
    assert abs(out.mean() - 1.0) < 0.02  # expectation preserved


def loss_value(name, pred, y):
    loss = jitprop.loss(name)
    grad = np.zeros_like(pred)
    return kernel(loss, "kernel")(pred, y, grad, loss.hyper())


def test_loss_values_against_references():
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(6, 4))
    target = rng.normal(size=(6, 4))
    labels = rng.integers(0, 4, size=6)
    probs = rng.uniform(size=(6, 4))
    assert np.isclose(loss_value("mse", pred, target), np.mean((pred - target) ** 2))
    assert np.isclose(loss_value("mae", pred, target), np.mean(np.abs(pred - target)))
    logp = special.log_softmax(pred, axis=1)
    assert np.isclose(loss_value("cross_entropy", pred, labels), -np.mean(logp[np.arange(6), labels]))
    assert np.isclose(loss_value("nll", logp, labels), -np.mean(logp[np.arange(6), labels]))
    s = special.expit(pred)
    bce = -np.mean(probs * np.log(s) + (1 - probs) * np.log(1 - s))
    assert np.isclose(loss_value("binary_cross_entropy", pred, probs), bce)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_and_bce_are_stable_for_logits_of_1e4(dtype):
    pred = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype)
    grad = np.zeros_like(pred)
    ce = jitprop.loss("cross_entropy")
    assert np.isclose(kernel(ce, "kernel")(pred, np.array([0, 1]), grad, ce.hyper()), np.log(2) / 2)
    assert np.isclose(kernel(ce, "kernel")(pred, np.array([1, 0]), grad, ce.hyper()), (2e4 + 2e4 + np.log(2)) / 2)
    assert np.all(np.isfinite(grad))
    bce = jitprop.loss("binary_cross_entropy")
    target = np.array([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]], dtype)
    value = kernel(bce, "kernel")(pred, target, grad, bce.hyper())
    assert np.isclose(value, (np.log(2) + 2e4) / 6)
    assert np.all(np.isfinite(grad))
