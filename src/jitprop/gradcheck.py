"""Finite-difference gradient checks in float64: does backpropagation match the slope?

For a layer, the check feeds a random batch forward, scores the output with
a fixed random projection L = sum(out * R), lets the backward kernel give
dL/dx and dL/dparams, and compares each with central differences
(L(v + eps) - L(v - eps)) / 2 eps. A plugin author's first test.
"""

import numpy as np

from . import api
from .components import kernel
from .kernels import mix_seed
from .model import Sequential

TOLERANCE = 1e-6


def relative_error(analytic, numeric):
    """||a - n|| / (||a|| + ||n||), 0 when both vanish."""
    a, n = np.ravel(analytic), np.ravel(numeric)
    denom = np.linalg.norm(a) + np.linalg.norm(n)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - n) / denom)


def central_differences(f, values, at, eps):
    """The slopes of scalar f() along the flat entries ``at`` of array ``values`` (perturbed in
    place, then put back): (f(v + eps) - f(v - eps)) / 2 eps."""
    flat = values.reshape(-1)
    slopes = np.empty(len(at))
    for j, i in enumerate(at):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        slopes[j] = (up - down) / (2 * eps)
    return slopes


def _numeric(f, values, eps):
    """Central-difference gradient of scalar f() with respect to every entry of ``values``."""
    return central_differences(f, values, range(values.size), eps).reshape(values.shape)


def check_layer(layer, in_dim=5, batch=4, seed=0, eps=1e-6, training=True, in_shape=None):
    """Relative errors of a layer's input and parameter gradients: ``{"input": e, "0.weight": e, ...}``.

    ``layer`` is a name or a class registered as a layer; its
    ``example_options`` (class attribute) supply required options.
    ``in_shape`` gives samples a shape (``(2, 5, 5)``, say) instead of ``in_dim`` flat features;
    by default the layer's ``example_shape``, if it has one.
    """
    if isinstance(layer, str):
        layer = api.layer(layer, **_example(layer))
    elif isinstance(layer, type):
        layer = layer(**getattr(layer, "example_options", {}))
    in_shape = in_shape or getattr(layer, "example_shape", None)
    rng = np.random.default_rng(seed)
    model = Sequential([layer], input_dim=None if in_shape else in_dim, input_shape=in_shape, dtype="float64", seed=seed)
    in_dim = model.input_dim
    model.params[...] = rng.normal(0.0, 0.5, model.n_params)  # away from init's special values
    x = rng.normal(size=(batch, in_dim))
    x += np.where(x >= 0, 0.05, -0.05)  # keep clear of kinks at 0 (relu, mae)
    out = np.zeros((batch, model.output_dim))
    cache = np.zeros((batch, layer.cache_dim()))
    proj = rng.normal(size=out.shape)
    fwd, bwd = kernel(layer, "forward_kernel"), kernel(layer, "backward_kernel")
    p, h = model.layer_params[0], model.hypers[0]
    s = mix_seed(seed)
    last = model.last_args(0)  # running state and scratch memory, if the layer has them

    def value():
        fwd(p, h, x, out, cache, training, s, *last)
        return float(np.sum(out * proj))

    value()
    grad_in = np.full((batch, in_dim), np.nan)
    model.grads[...] = np.nan  # a kernel must overwrite its gradients, not add to them
    bwd(p, h, x, out, cache, proj, grad_in, model.layer_grads[0], *last)
    errors = {"input": relative_error(grad_in, _numeric(value, x, eps))}
    analytic = model.gradients()
    for key, view in model.parameters().items():
        errors[key] = relative_error(analytic[key], _numeric(value, view, eps))
    return errors


def _example(name):
    from .plugins.registry import lookup

    return getattr(lookup("layer", name).cls, "example_options", {})


def check_loss(loss, k=4, batch=5, seed=0, eps=1e-6):
    """Relative error of a loss kernel's gradient with respect to its predictions: ``{"pred": e}``."""
    loss = api.loss(loss)
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=(batch, k))
    pred += np.where(pred >= 0, 0.05, -0.05)
    target = example_targets(loss, batch, k, rng)
    if loss.target != "class":
        pred = np.where(np.abs(pred - target) < 0.05, pred + 0.1, pred)  # clear of mae's kink
    grad = np.full(pred.shape, np.nan)
    f, h = kernel(loss, "kernel"), np.ascontiguousarray(loss.hyper(), dtype=np.float64)
    scratch = np.zeros(pred.shape)
    f(pred, target, grad, h)
    numeric = _numeric(lambda: float(f(pred, target, scratch, h)), pred, eps)
    return {"pred": relative_error(grad, numeric)}


def example_targets(loss, batch, k, rng):
    """Random targets of the kind ``loss.target`` names."""
    if loss.target == "class":
        return rng.integers(0, k, size=batch).astype(np.int64)
    if loss.target == "binary":
        return rng.uniform(0, 1, size=(batch, k))
    return rng.normal(size=(batch, k))
