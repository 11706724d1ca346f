"""Backpropagation against finite differences, in float64, for every built-in piece."""

import math

import numpy as np
import pytest

import jitprop
from jitprop import gradcheck
from jitprop.registry import entries

LAYERS = ["dense", "relu", "leaky_relu", "tanh", "sigmoid", "gelu", "softmax", "dropout"]
LOSSES = ["mse", "mae", "cross_entropy", "nll", "binary_cross_entropy"]
IMAGE_LAYERS = ["conv2d", "max_pool2d", "avg_pool2d", "global_avg_pool2d", "flatten"]  # in test_images.py


def test_every_registered_builtin_is_checked_here():
    from test_images import GRADCHECKS

    assert {name for name, _, _ in GRADCHECKS} == set(IMAGE_LAYERS)
    assert {e.name for e in entries("layer")} == set(LAYERS + IMAGE_LAYERS)
    assert {e.name for e in entries("loss")} == set(LOSSES)


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("batch", [1, 4])
def test_layer_gradients_match_finite_differences(name, batch):
    errors = gradcheck.check_layer(name, in_dim=5, batch=batch, seed=batch)
    assert max(errors.values()) < 1e-6, errors


def test_leaky_relu_with_custom_slope_and_dropout_in_eval_mode():
    assert max(gradcheck.check_layer(jitprop.layer("leaky_relu", negative_slope=0.3)).values()) < 1e-6
    assert max(gradcheck.check_layer(jitprop.layer("dropout", rate=0.3), training=False).values()) < 1e-6


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("k", [1, 2, 5])
def test_loss_gradients_match_finite_differences(name, k):
    if jitprop.loss(name).target == "class" and k < 2:
        pytest.skip("class losses need two outputs or more")
    assert gradcheck.check_loss(name, k=k, batch=6, seed=k)["pred"] < 1e-6


@pytest.mark.parametrize("training", [False, True])
def test_composite_model_gradients_through_value_and_grad(training):
    rng = np.random.default_rng(3)
    model = jitprop.Sequential(
        [
            jitprop.layer("dense", units=7),
            "tanh",
            jitprop.layer("dense", units=6),
            "gelu",
            jitprop.layer("dropout", rate=0.25),
            jitprop.layer("dense", units=5),
            "leaky_relu",
            jitprop.layer("dense", units=3),
        ],
        input_dim=4,
        dtype="float64",
        seed=1,
    )
    X = rng.normal(size=(9, 4))
    y = rng.integers(0, 3, size=9)
    value, grads = jitprop.value_and_grad(model, "cross_entropy", X, y, training=training, seed=5)
    params = model.parameters()

    def f():
        return jitprop.value_and_grad(model, "cross_entropy", X, y, training=training, seed=5)[0]

    for key, view in params.items():
        numeric = gradcheck._numeric(f, view, 1e-6)
        assert gradcheck.relative_error(grads[key], numeric) < 1e-6, key
    assert set(grads) == set(model.state_dict())
    assert math.isclose(value, f())


def test_gradients_are_batch_means():
    # The loss is a mean over the batch, so a batch of two copies of a row
    # has the same loss and gradient as that row alone.
    model = jitprop.Sequential([jitprop.layer("dense", units=3)], input_dim=2, dtype="float64")
    x = np.array([[0.3, -1.2]])
    one = jitprop.value_and_grad(model, "cross_entropy", x, [2])
    two = jitprop.value_and_grad(model, "cross_entropy", np.vstack([x, x]), [2, 2])
    assert math.isclose(one[0], two[0])
    for key in one[1]:
        np.testing.assert_allclose(one[1][key], two[1][key])


@pytest.mark.parametrize("shape, layers", [
    ((4,), [jitprop.layer("dense", units=6), "tanh", jitprop.layer("dropout", rate=0.25), jitprop.layer("dense", units=3)]),
    ((1, 5, 5), [jitprop.layer("conv2d", out_channels=2, kernel_size=3, padding=1), "relu",
                 jitprop.layer("max_pool2d", kernel_size=2), "flatten", jitprop.layer("dense", units=3)]),
])  # fmt: skip
def test_value_and_grad_gives_the_input_gradient_finite_differences_agree_with(shape, layers):
    rng = np.random.default_rng(4)
    model = jitprop.Sequential(layers, input_shape=shape, dtype="float64", seed=2)
    X = rng.normal(size=(3, *shape))
    y = rng.integers(0, 3, size=3)
    value, grads, dX = jitprop.value_and_grad(model, "cross_entropy", X, y, training=True, seed=7, inputs=True)
    same_value, same_grads = jitprop.value_and_grad(model, "cross_entropy", X, y, training=True, seed=7)
    assert value == same_value and all(np.array_equal(grads[k], same_grads[k]) for k in grads)
    assert dX.shape == X.shape
    numeric = np.zeros_like(X)
    for i in np.ndindex(X.shape):  # central differences, the same dropout mask (seed) each time
        for sign in (1, -1):
            Xe = X.copy()
            Xe[i] += sign * 1e-6
            numeric[i] += sign * jitprop.value_and_grad(model, "cross_entropy", Xe, y, training=True, seed=7)[0] / 2e-6
    np.testing.assert_allclose(dX, numeric, rtol=1e-5, atol=1e-8)
