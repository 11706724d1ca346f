"""Each optimizer's update against a float64 NumPy reference written from the papers / torch docs."""

import numpy as np
import pytest

import jitprop
from jitprop.components import kernel


def ref_sgd(p, grads, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    buf = None
    for g in grads:
        g = g + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


def ref_adam(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    b1, b2 = betas
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p - lr * weight_decay * p
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def ref_rmsprop(p, grads, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    v = np.zeros_like(p)
    g_avg = np.zeros_like(p)
    buf = np.zeros_like(p)
    for g in grads:
        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        v_t = v
        if centered:
            g_avg = alpha * g_avg + (1 - alpha) * g
            v_t = v - g_avg**2
        if momentum > 0:
            buf = momentum * buf + g / (np.sqrt(v_t) + eps)
            p = p - lr * buf
        else:
            p = p - lr * g / (np.sqrt(v_t) + eps)
    return p


def ref_adagrad(p, grads, lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
    s = np.full_like(p, initial_accumulator_value)
    for t, g in enumerate(grads, start=1):
        clr = lr / (1 + (t - 1) * lr_decay)
        g = g + weight_decay * p
        s = s + g * g
        p = p - clr * g / (np.sqrt(s) + eps)
    return p


CASES = [
    ("sgd", ref_sgd, dict(lr=0.1)),
    ("sgd", ref_sgd, dict(lr=0.1, momentum=0.9)),
    ("sgd", ref_sgd, dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    ("sgd", ref_sgd, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("adam", ref_adam, dict(lr=0.01)),
    ("adam", ref_adam, dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("adamw", lambda p, g, weight_decay=0.01, **kw: ref_adam(p, g, weight_decay=weight_decay, decoupled=True, **kw),
     dict(lr=0.01)),
    ("adamw", lambda p, g, **kw: ref_adam(p, g, decoupled=True, **kw), dict(lr=0.01, weight_decay=0.3)),
    ("rmsprop", ref_rmsprop, dict(lr=0.01)),
    ("rmsprop", ref_rmsprop, dict(lr=0.01, momentum=0.9, weight_decay=0.05)),
    ("rmsprop", ref_rmsprop, dict(lr=0.005, centered=True, momentum=0.5)),
    ("adagrad", ref_adagrad, dict(lr=0.1)),
    ("adagrad", ref_adagrad, dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.1)),
]


def run(name, options, p0, grads, dtype):
    opt = jitprop.optimizer(name, **options)
    update = kernel(opt, "kernel")
    p = p0.astype(dtype)
    state = np.zeros((opt.n_state, p.size), dtype)
    opt.init_state(state)
    for step, g in enumerate(grads, start=1):
        update(p, g.astype(dtype), state, opt.lr, opt.hyper(), step)
    return p


@pytest.mark.parametrize("name, reference, options", CASES)
def test_update_matches_reference_over_several_steps(name, reference, options):
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=50)
    grads = [rng.normal(size=50) for _ in range(7)]
    expected = reference(p0.copy(), grads, **options)
    np.testing.assert_allclose(run(name, options, p0, grads, np.float64), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(run(name, options, p0, grads, np.float32), expected, rtol=1e-4, atol=1e-5)


def test_defaults_follow_torch():
    assert jitprop.optimizer("sgd").lr == 0.001
    adam = jitprop.optimizer("adam")
    assert (adam.lr, adam.betas, adam.eps, adam.weight_decay) == (0.001, (0.9, 0.999), 1e-8, 0.0)
    assert jitprop.optimizer("adamw").weight_decay == 0.01
    rms = jitprop.optimizer("rmsprop")
    assert (rms.lr, rms.alpha, rms.eps) == (0.01, 0.99, 1e-8)
    ada = jitprop.optimizer("adagrad")
    assert (ada.lr, ada.eps) == (0.01, 1e-10)


def test_fit_applies_the_optimizer_to_every_parameter():
    # One full-batch SGD step through fit equals p - lr * grad from value_and_grad.
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(16, 3)), rng.integers(0, 2, size=16)
    model = jitprop.Sequential([jitprop.layer("dense", units=4), "relu", jitprop.layer("dense", units=2)], 3, "float64")
    before = model.state_dict()
    _, grads = jitprop.value_and_grad(model, "cross_entropy", X, y)
    jitprop.fit(model, X, y, loss="cross_entropy", optimizer=jitprop.optimizer("sgd", lr=0.5), epochs=1, batch_size=16)
    after = model.state_dict()
    for key in before:
        np.testing.assert_allclose(after[key], before[key] - 0.5 * grads[key], rtol=1e-12)
