"""Numerics at the edges: extreme inputs through every built-in loss and activation.

Logits of +-1e4 and +-1e30, values either side of exp()'s overflow in float32
(88/89) and float64 (709/710), equal and all-zero rows, a batch of one, a
class missing from the batch, BCE targets of exactly 0 and 1, in float32 and
float64. The CPU kernels are checked against float64 references computed
stably with SciPy from the same (rounded) inputs, never with the kernels' own
formulas; the CUDA kernels (on the simulator) against the CPU kernels; and a
model whose logits reach +-1e4 trains and is scored with finite numbers.
"""

import numpy as np
import pytest
from scipy import special

import jitprop
from jitprop.components import kernel
from jitprop.kernels import mix_seed

DTYPES = [np.float32, np.float64]

# Rows of awkward inputs: all zero, all equal, +-1e4, around exp()'s overflow in
# float32 (88.7) and float64 (709.8) and underflow (-104, -745), +-1e30, and
# moderate values whose sigmoid or softmax is within an ulp of 1.
EDGES = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [7.0, 7.0, 7.0, 7.0, 7.0, 7.0],
        [1e4, -1e4, 0.0, 1e4, -1e4, 5.0],
        [88.0, 89.0, -88.0, -89.0, -104.0, 0.5],
        [709.0, 710.0, -709.0, -710.0, -745.0, 1.0],
        [1e30, -1e30, 1e30, -1e30, 0.0, -1.0],
        [-1e4, -1e4, -1e4, -1e4, -1e4, -1e4],
        [40.0, 20.0, 10.0, -10.0, -20.0, -40.0],
    ]
)


def assert_close(got, ref, dtype, scale=1.0, rtol=None):
    """got (from dtype arithmetic) matches the float64 reference: relatively, to a few
    roundings of dtype, or absolutely, to one rounding of dtype at ``scale`` (what
    rounding an output or a saturated sigmoid to dtype costs)."""
    got = np.asarray(got, np.float64)
    assert np.all(np.isfinite(got[np.isfinite(ref)])), got
    if rtol is None:
        rtol = 1e-12 if dtype == np.float64 else 4e-6
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=np.finfo(dtype).eps * scale)


# --- layers -------------------------------------------------------------------------

def run_layer(name, x, grad_out):
    """(output, input gradient) of one activation layer's CPU kernels."""
    model = jitprop.Sequential([name], input_dim=x.shape[1], dtype=x.dtype.name)
    layer, p, h = model.layers[0], model.layer_params[0], model.hypers[0]
    out = np.full_like(x, np.nan)
    cache = np.zeros((x.shape[0], layer.cache_dim()), x.dtype)
    grad_in = np.full_like(x, np.nan)
    kernel(layer, "forward_kernel")(p, h, x, out, cache, True, mix_seed(1))
    kernel(layer, "backward_kernel")(p, h, x, out, cache, grad_out, grad_in, model.layer_grads[0])
    return out, grad_in


def expit(x):
    return np.exp(special.log_expit(x))  # scipy's expit flushes sigmoid(-710) = 4.5e-309 to 0


def ref_sigmoid(x, g):
    return expit(x), g * np.exp(special.log_expit(x) + special.log_expit(-x))


def ref_tanh(x, g):
    e = np.exp(-2.0 * np.abs(x))
    return np.tanh(x), g * 4.0 * e / (1.0 + e) ** 2  # sech^2 without cosh's overflow


def ref_gelu(x, g):
    return x * special.ndtr(x), g * (special.ndtr(x) + x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi))


def ref_softmax(x, g):
    s = special.softmax(x, axis=1)
    return s, s * (g - np.sum(g * s, axis=1, keepdims=True))


REF_LAYERS = {
    "relu": lambda x, g: (np.maximum(x, 0.0), np.where(x > 0, g, 0.0)),
    "leaky_relu": lambda x, g: (np.where(x > 0, x, 0.01 * x), np.where(x > 0, g, 0.01 * g)),
    "sigmoid": ref_sigmoid,
    "tanh": ref_tanh,
    "gelu": ref_gelu,
    "softmax": ref_softmax,
}


def test_every_builtin_activation_is_checked_here():
    from test_gradients import IMAGE_LAYERS  # against naive loops in test_images.py

    assert set(REF_LAYERS) | {"dense", "dropout", *IMAGE_LAYERS} == {e.name for e in jitprop.registry.entries("layer")}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(REF_LAYERS))
def test_activations_at_the_edges_match_float64_references(name, dtype):
    x = EDGES.astype(dtype)
    grad_out = np.random.default_rng(0).normal(size=x.shape).astype(dtype)
    out, grad_in = run_layer(name, x, grad_out)
    x64, g64 = x.astype(np.float64), grad_out.astype(np.float64)
    ref_out, ref_grad = REF_LAYERS[name](x64, g64)
    assert_close(out, ref_out, dtype)
    assert_close(grad_in, ref_grad, dtype, scale=np.abs(g64).max())
    for i in range(len(x)):  # a batch of one gives each row's numbers
        one_out, one_grad = run_layer(name, x[i : i + 1], grad_out[i : i + 1])
        np.testing.assert_array_equal(one_out, out[i : i + 1])
        np.testing.assert_array_equal(one_grad, grad_in[i : i + 1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_of_equal_or_zero_inputs_is_uniform(dtype):
    out, grad_in = run_layer("softmax", EDGES[[0, 1, 6]].astype(dtype), np.ones((3, 6), dtype))
    np.testing.assert_allclose(out, 1.0 / 6.0, rtol=np.finfo(dtype).eps * 4)
    np.testing.assert_allclose(grad_in, 0.0, atol=np.finfo(dtype).eps * 4)  # softmax is flat along (1, ..., 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_keeps_its_negative_tail(dtype):
    """Phi(x) as erfc, not 1 + erf: x * Phi(x) at x = -10 is -7.6e-23, not 0."""
    x = np.array([[-10.0, -8.0, -6.0]], dtype)
    out, grad_in = run_layer("gelu", x, np.ones_like(x))
    ref_out, ref_grad = ref_gelu(x.astype(np.float64), 1.0)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(out, ref_out, rtol=rtol, atol=0)
    np.testing.assert_allclose(grad_in, ref_grad, rtol=rtol, atol=0)


# --- losses -------------------------------------------------------------------------

def run_loss(name, pred, y):
    """(batch-mean loss, gradient) of a loss's CPU kernel."""
    loss = jitprop.loss(name)
    grad = np.full_like(pred, np.nan)
    value = kernel(loss, "kernel")(pred, y, grad, loss.hyper())
    return value, grad


def ref_cross_entropy(z, y):
    """-log softmax(z)[t] = log(1 + exp(L)), L = logsumexp of z_j - z_t over j != t:
    exact for any magnitudes, and for the tiny losses of confident rows."""
    n = len(y)
    losses, grad = np.empty(n), np.empty(z.shape)
    for i, t in enumerate(y):
        diff = z[i] - z[i, t]
        L = special.logsumexp(np.delete(diff, t))
        losses[i] = -special.log_expit(-L)
        grad[i] = special.softmax(z[i])
        grad[i, t] = -expit(L)  # softmax_t - 1 = -(1 - p_t) = -sigmoid(L)
    return losses.mean(), grad / n


def ref_nll(z, y):
    grad = np.zeros(z.shape)
    grad[np.arange(len(y)), y] = -1.0 / len(y)
    return -np.mean(z[np.arange(len(y)), y]), grad


def ref_bce(z, t):
    losses = -(t * special.log_expit(z) + (1.0 - t) * special.log_expit(-z))
    grad = (1.0 - t) * expit(z) - t * expit(-z)  # sigmoid(z) - t, each term exact
    return losses.mean(), grad / z.size


def ref_mse(p, y):
    return np.mean((p - y) ** 2), 2.0 * (p - y) / p.size


def ref_mae(p, y):
    return np.mean(np.abs(p - y)), np.sign(p - y) / p.size


# Class losses: 4 classes, class 3 in no row's label (a class missing from the batch);
# targets at the row max, at the min, tied, and the confident row [40, 0, -40, 0] -> 0.
CLASS_LOGITS = EDGES[:, :4].copy()
CLASS_LOGITS[7] = [40.0, 0.0, -40.0, 0.0]
CLASS_LABELS = np.array([1, 0, 1, 2, 0, 2, 1, 0])
BINARY_LOGITS = np.array(
    [
        [1e4, -1e4, 1e4, -1e4],
        [1e30, -1e30, 0.0, 5.0],
        [88.0, -89.0, 709.0, -710.0],
        [40.0, -40.0, 20.0, -20.0],
        [0.0, 0.0, 0.0, 0.0],
    ]
)
BINARY_TARGETS = np.array(  # exactly 0 and 1 mostly, some in between
    [
        [1.0, 0.0, 0.0, 1.0],
        [1.0, 0.0, 1.0, 0.5],
        [1.0, 1.0, 0.0, 0.0],
        [1.0, 0.0, 1.0, 0.0],
        [0.0, 1.0, 0.5, 0.3],
    ]
)
REGRESSION_PRED = np.array([[1e30, -1e30, 1e4, 0.0], [-1e4, 89.0, 710.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
REGRESSION_TARGET = np.array([[-1e30, 1e30, -1e4, 0.0], [1e4, -89.0, -710.0, 0.5], [0.0, 1.0, -1.0, 0.0]])


def loss_case(name, dtype):
    """(pred, y, reference function) in dtype, references taking float64 copies."""
    if name == "cross_entropy":
        return CLASS_LOGITS.astype(dtype), CLASS_LABELS, ref_cross_entropy
    if name == "nll":
        logp = special.log_softmax(CLASS_LOGITS, axis=1)  # log-probabilities down to -2e30
        return logp.astype(dtype), CLASS_LABELS, ref_nll
    if name == "binary_cross_entropy":
        return BINARY_LOGITS.astype(dtype), BINARY_TARGETS.astype(dtype), ref_bce
    reference = ref_mse if name == "mse" else ref_mae
    return REGRESSION_PRED.astype(dtype), REGRESSION_TARGET.astype(dtype), reference


LOSSES = ["cross_entropy", "nll", "binary_cross_entropy", "mse", "mae"]


def test_every_builtin_loss_is_checked_here():
    assert set(LOSSES) == {e.name for e in jitprop.registry.entries("loss")}


def as64(y):
    return y if y.dtype == np.int64 else y.astype(np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LOSSES)
def test_losses_at_the_edges_match_float64_references(name, dtype):
    pred, y, reference = loss_case(name, dtype)
    value, grad = run_loss(name, pred, y)
    ref_value, ref_grad = reference(pred.astype(np.float64), as64(y))
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert_close(value, ref_value, dtype, scale=0.0)
    assert_close(grad, ref_grad, dtype, scale=np.abs(ref_grad).max())
    for i in range(len(pred)):  # a batch of one: each row's loss and gradient alone
        value, grad = run_loss(name, pred[i : i + 1], y[i : i + 1])
        ref_value, ref_grad = reference(pred[i : i + 1].astype(np.float64), as64(y[i : i + 1]))
        assert_close(value, ref_value, dtype, scale=0.0)
        assert_close(grad, ref_grad, dtype, scale=np.abs(ref_grad).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_confident_predictions_keep_their_small_loss_and_gradient(dtype):
    """A row that is right by a margin of 40 has a loss and gradient of ~4e-18, not 0:
    no 1 - softmax or 1 - sigmoid rounds them away."""
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    pred = np.array([[40.0, 0.0, -40.0], [0.0, 40.0, 30.0]], dtype)
    labels = np.array([0, 1])
    value, grad = run_loss("cross_entropy", pred, labels)
    ref_value, ref_grad = ref_cross_entropy(pred.astype(np.float64), labels)
    assert 0 < value < 1e-4
    np.testing.assert_allclose(value, ref_value, rtol=rtol, atol=0)
    np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=0)
    pred = np.array([[40.0, -40.0, 30.0, -30.0]], dtype)
    target = np.array([[1.0, 0.0, 1.0, 0.0]], dtype)
    value, grad = run_loss("binary_cross_entropy", pred, target)
    ref_value, ref_grad = ref_bce(pred.astype(np.float64), target.astype(np.float64))
    assert 0 < value < 1e-12
    np.testing.assert_allclose(value, ref_value, rtol=rtol, atol=0)
    np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_of_huge_equal_logits_is_log_k(dtype):
    """No m + log(s) - z_t: at |z| = 1e30 that cancels to 0 (and loses digits from 1e8)."""
    for big in (1e4, 1e8, 1e30):
        for row, expect in (([big, big, -big], np.log(2.0)), ([-big, -big, -big], np.log(3.0))):
            value, grad = run_loss("cross_entropy", np.array([row], dtype), np.array([0]))
            assert value == pytest.approx(expect, rel=1e-12 if dtype == np.float64 else 1e-6), (big, row)
            assert np.all(np.isfinite(grad))


def test_mse_of_float32_predictions_past_1e19_is_finite():
    pred, target = np.array([[3e19, 1e30]], np.float32), np.array([[-3e19, -1e30]], np.float32)
    value, grad = run_loss("mse", pred, target)
    ref_value, ref_grad = ref_mse(pred.astype(np.float64), target.astype(np.float64))
    assert value == pytest.approx(ref_value, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-6)


# --- the CUDA kernels, on the simulator, against the CPU kernels ---------------------

@pytest.fixture
def cuda_sim(monkeypatch):
    cuda = pytest.importorskip("numba.cuda")
    from jitprop import cuda_launch

    monkeypatch.setattr(cuda_launch, "TILE", 4)  # tiny grids: the simulator runs a thread per GPU thread
    monkeypatch.setattr(cuda_launch, "THREADS", 8)
    monkeypatch.setattr(cuda_launch, "MAX_BLOCKS", 2)
    return cuda


def cuda_tolerance(dtype):
    # The simulator's math functions run in double precision where the CPU's float32
    # kernels call float32 ones: agreement to float32 rounding, not bit for bit.
    return dict(rtol=1e-12, atol=1e-300) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # float32 NumPy scalars on the simulator
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_activations_at_the_edges_match_cpu(cuda_sim, dtype):
    x = EDGES.astype(dtype)
    grad_out = np.random.default_rng(1).normal(size=x.shape).astype(dtype)
    for name in sorted(REF_LAYERS):
        out, grad_in = run_layer(name, x, grad_out)
        model = jitprop.Sequential([name], input_dim=x.shape[1], dtype=x.dtype.name)
        layer, h = model.layers[0], model.hypers[0]
        d_p, d_x, d_g = (cuda_sim.to_device(a) for a in (model.layer_params[0], x, grad_out))
        d_out = cuda_sim.to_device(np.full_like(x, np.nan))
        d_cache = cuda_sim.device_array((x.shape[0], 0), dtype)
        d_grad_in = cuda_sim.to_device(np.full_like(x, np.nan))
        kernel(layer, "cuda_forward")(d_p, h, d_x, d_out, d_cache, True, mix_seed(1))
        kernel(layer, "cuda_backward")(d_p, h, d_x, d_out, d_cache, d_g, d_grad_in, d_p)
        np.testing.assert_allclose(d_out.copy_to_host(), out, **cuda_tolerance(dtype), err_msg=name)
        np.testing.assert_allclose(d_grad_in.copy_to_host(), grad_in, **cuda_tolerance(dtype), err_msg=name)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_losses_at_the_edges_match_cpu(cuda_sim, dtype):
    for name in LOSSES:
        loss = jitprop.loss(name)
        pred, y, _ = loss_case(name, dtype)
        cases = [(pred, y)] + [(pred[i : i + 1], y[i : i + 1]) for i in range(len(pred))]
        for p, t in cases:
            value, grad = run_loss(name, p, t)
            d_grad = cuda_sim.to_device(np.full_like(p, np.nan))
            d_out = cuda_sim.to_device(np.array([123.0]))
            kernel(loss, "cuda_kernel")(cuda_sim.to_device(p), cuda_sim.to_device(t), d_grad, loss.hyper(), d_out)
            tol = cuda_tolerance(dtype)
            np.testing.assert_allclose(d_grad.copy_to_host(), grad, **tol, err_msg=name)
            assert d_out.copy_to_host()[0] == pytest.approx(value, rel=tol["rtol"], abs=tol["atol"]), name


# --- a whole model whose logits reach +-1e4 -------------------------------------------

def big_logit_model(dtype, units, X):
    """One dense layer, its weights scaled so that its largest logit on X is 1e4 in size."""
    model = jitprop.Sequential([jitprop.layer("dense", units=units)], input_dim=X.shape[1], dtype=dtype, seed=0)
    model.params[...] *= 1e4 / np.abs(model.predict(X)).max()
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy"])
def test_a_model_with_logits_of_1e4_trains_and_evaluates_finite(loss, dtype):
    from conftest import spirals

    X, labels = spirals(8)  # 24 rows, 3 classes
    units, y = (3, labels) if loss == "cross_entropy" else (1, (labels == 0).astype(float)[:, None])
    model = big_logit_model(dtype, units, X)
    logits = model.predict(X).astype(np.float64)
    assert np.abs(logits).max() == pytest.approx(1e4, rel=1e-5)
    ref = ref_cross_entropy if loss == "cross_entropy" else ref_bce
    score = jitprop.evaluate(model, X, y, loss=loss, batch_size=7)
    assert score["loss"] == pytest.approx(ref(logits, y)[0], rel=1e-5 if dtype == "float32" else 1e-10)
    history = jitprop.fit(model, X, y, loss=loss, optimizer=jitprop.optimizer("sgd", lr=0.1), epochs=2,
                          batch_size=5, validation_split=0.25, seed=3)
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert np.all(np.isfinite(history.history[key])), key
    assert np.all(np.isfinite(history.iteration_loss)) and np.all(np.isfinite(model.params))
    assert np.isfinite(jitprop.evaluate(model, X, y, loss=loss)["loss"])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the dropout hash on the simulator
def test_the_same_run_on_cuda_matches_the_cpu(cuda_sim):
    from conftest import spirals

    X, y = spirals(6)
    runs = {}
    for device in ("cpu", "cuda"):
        model = big_logit_model("float32", 3, X)
        history = jitprop.fit(model, X, y, loss="cross_entropy", optimizer=jitprop.optimizer("sgd", lr=0.1),
                              epochs=2, batch_size=5, validation_split=0.25, seed=3, device=device)
        runs[device] = history.history, model.params.copy()
    (h_cpu, p_cpu), (h_gpu, p_gpu) = runs["cpu"], runs["cuda"]
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert np.all(np.isfinite(h_gpu[key])), key
        np.testing.assert_allclose(h_gpu[key], h_cpu[key], rtol=1e-5)
    np.testing.assert_allclose(p_gpu, p_cpu, rtol=1e-5)
