"""jitprop-huber against finite differences, a NumPy reference, its CPU kernel on the CUDA
simulator, and through jitprop as an installed plugin (entry point, fit, the command line)."""

import os

# Before numba or jitprop load: CUDA kernels run on numba's simulator unless the
# caller asks for a real GPU (NUMBA_ENABLE_CUDASIM=0), and only this plugin
# loads, whatever else is installed.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
os.environ["JITPROP_LOAD_PLUGINS"] = "huber"

import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import jitprop  # noqa: E402
from jitprop.testing import compile_ptx  # noqa: E402
import jitprop_huber  # noqa: E402
from jitprop.registry import lookup  # noqa: E402
from jitprop_huber import Huber, huber_kernel  # noqa: E402

JITPROP = str(Path(sys.executable).with_name("jitprop"))


def reference(pred, y, delta):
    """torch.nn.HuberLoss(reduction="mean") and its gradient, written out in float64 NumPy."""
    d = np.asarray(pred, np.float64) - np.asarray(y, np.float64)
    quadratic = np.abs(d) <= delta
    loss = np.where(quadratic, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta)).mean()
    grad = np.where(quadratic, d, delta * np.sign(d)) / d.size
    return loss, grad


def boundary_case(delta, rng, n=6, k=5):
    """Random predictions; the first errors are exactly +-delta, one ulp either side of it, 0, and far off."""
    pred = rng.normal(0.0, 2.0 * delta, size=(n, k))
    y = rng.normal(size=(n, k))
    up, down = np.nextafter(delta, np.inf), np.nextafter(delta, 0.0)
    special = [delta, -delta, up, -up, down, -down, 0.0, 10 * delta, -10 * delta, 1e-300]
    m = min(len(special), pred.size)
    pred.reshape(-1)[:m] = special[:m]
    y.reshape(-1)[:m] = 0.0  # so pred - y is pred itself, exactly
    return pred, y


# -- as an installed plugin ---------------------------------------------------


def test_the_entry_point_registers_huber():
    loss = jitprop.loss("huber", delta=0.5)
    assert isinstance(loss, Huber) and loss.delta == 0.5 and loss.target == "regression"
    assert jitprop.loss("huber").delta == 1.0
    entry = lookup("loss", "huber")
    assert entry.cls is Huber and entry.plugin == "huber"  # the entry point's name
    assert jitprop.plugins.pm.get_plugin("huber") is jitprop_huber


@pytest.mark.parametrize("delta", [0, -1.0, float("nan"), "1", True])
def test_a_bad_delta_is_one_line(delta):
    with pytest.raises(jitprop.ConfigError, match=r"^huber: delta must be a number in \(0.0, inf\), got "):
        jitprop.loss("huber", delta=delta)


# -- the CPU kernel ------------------------------------------------------------


@pytest.mark.parametrize("delta", [0.25, 1.0, 3.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_matches_finite_differences(delta, seed):
    errors = jitprop.gradcheck.check_loss(jitprop.loss("huber", delta=delta), seed=seed)
    assert errors["pred"] < jitprop.gradcheck.TOLERANCE


@pytest.mark.parametrize("delta", [0.3, 1.0, 2.5])
def test_matches_the_numpy_reference_in_float64(delta):
    rng = np.random.default_rng(int(delta * 10))
    pred, y = boundary_case(delta, rng)
    grad = np.full_like(pred, np.nan)  # a kernel must overwrite its gradient, not add to it
    value = huber_kernel(pred, y, grad, np.array([delta]))
    expect_value, expect_grad = reference(pred, y, delta)
    assert value == pytest.approx(expect_value, rel=1e-14)
    np.testing.assert_allclose(grad, expect_grad, rtol=1e-14, atol=1e-300)
    # At |d| = delta both pieces meet: slope exactly +-delta, loss delta^2 / 2.
    assert grad.flat[0] * pred.size == delta and grad.flat[1] * pred.size == -delta


def test_float32_matches_the_numpy_reference():
    rng = np.random.default_rng(3)
    pred, y = (a.astype(np.float32) for a in boundary_case(0.5, rng, n=17, k=3))
    grad = np.zeros_like(pred)
    value = huber_kernel(pred, y, grad, np.array([0.5]))
    expect_value, expect_grad = reference(pred, y, 0.5)
    assert grad.dtype == np.float32
    assert value == pytest.approx(expect_value, rel=1e-6)
    np.testing.assert_allclose(grad, expect_grad, rtol=1e-6, atol=1e-12)


def test_a_nan_prediction_gives_a_nan_loss():
    pred, y = np.array([[np.nan, 0.5]]), np.zeros((1, 2))
    grad = np.zeros((1, 2))
    assert np.isnan(huber_kernel(pred, y, grad, np.array([1.0])))
    assert np.isnan(grad[0, 0]) and grad[0, 1] == 0.25


def test_matches_torch_huber_loss():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    pred, y = boundary_case(0.7, rng)
    t = torch.tensor(pred, requires_grad=True)
    expect = torch.nn.HuberLoss(reduction="mean", delta=0.7)(t, torch.tensor(y))
    expect.backward()
    grad = np.zeros_like(pred)
    assert huber_kernel(pred, y, grad, np.array([0.7])) == pytest.approx(expect.item(), rel=1e-14)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-14, atol=1e-300)


# -- the CUDA kernel, on numba's simulator -------------------------------------


@pytest.fixture
def tiny_grids(monkeypatch):
    """The simulator runs one Python thread per GPU thread: small blocks keep it quick,
    and fewer threads than rows make the grid-stride loop go round."""
    from jitprop import cuda_launch

    monkeypatch.setattr(cuda_launch, "TILE", 4)
    monkeypatch.setattr(cuda_launch, "THREADS", 8)
    monkeypatch.setattr(cuda_launch, "MAX_BLOCKS", 3)


@pytest.mark.usefixtures("tiny_grids")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, k", [(1, 1), (5, 3), (40, 2)])
def test_cuda_kernel_matches_the_cpu_kernel(n, k, dtype):
    cuda = pytest.importorskip("numba.cuda")
    from jitprop_huber.cuda import huber_kernel as huber_cuda

    rng = np.random.default_rng(n * k)
    pred, y = (a.astype(dtype) for a in boundary_case(0.8, rng, n, k))
    h = Huber(delta=0.8).hyper()
    grad = np.zeros_like(pred)
    value = huber_kernel(pred, y, grad, h)
    d_grad = cuda.to_device(np.full_like(pred, np.nan))
    # jitprop hands the launcher one element of its per-batch losses: check the
    # launcher zeroes that slot first and leaves its neighbours alone.
    d_losses = cuda.to_device(np.full(3, 123.0))
    huber_cuda(cuda.to_device(pred), cuda.to_device(y), d_grad, h, d_losses[1:2])
    losses = d_losses.copy_to_host()
    np.testing.assert_allclose(d_grad.copy_to_host(), grad, rtol=1e-6, atol=1e-12)
    assert losses[1] == pytest.approx(value, rel=1e-6 if dtype == np.float32 else 1e-12)
    assert losses[0] == losses[2] == 123.0


@pytest.mark.usefixtures("tiny_grids")
# The simulator computes jitprop's shuffle hash with NumPy scalars, which warn on its intended wrap-around.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_a_cuda_run_matches_the_cpu_run():
    pytest.importorskip("numba.cuda")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, 2))
    y = X @ np.array([1.5, -2.0]) + rng.standard_t(2, size=24)  # heavy-tailed noise: both zones in use
    runs = {}
    for device in ("cpu", "cuda"):
        model = jitprop.Sequential([jitprop.layer("dense", units=4), "tanh", jitprop.layer("dense", units=1)],
                                   input_dim=2, seed=3)
        history = jitprop.fit(model, X, y, loss=jitprop.loss("huber", delta=0.5),
                              optimizer=jitprop.optimizer("adam", lr=0.05), epochs=2, batch_size=8,
                              validation_split=0.25, device=device)
        runs[device] = history.history, model.params.copy()
    (h_cpu, p_cpu), (h_gpu, p_gpu) = runs["cpu"], runs["cuda"]
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(h_gpu[key], h_cpu[key], rtol=1e-5)
    np.testing.assert_allclose(p_gpu, p_cpu, rtol=1e-5, atol=1e-6)


PTX_SCRIPT = textwrap.dedent("""
    from numba import cuda, types
    from jitprop_huber import cuda as huber_cuda

    for dtype in (types.float32, types.float64):
        m2 = types.Array(dtype, 2, "A")
        out = types.Array(types.float64, 1, "A")
        cuda.compile_ptx(huber_cuda._huber.py_func, (m2, m2, m2, types.float64, out), cc=(7, 5))
    cuda.compile_ptx(huber_cuda._zero.py_func, (types.Array(types.float64, 1, "A"),), cc=(7, 5))
    print("compiled")
""")


def test_the_cuda_kernel_compiles_to_ptx():
    """The simulator checks no types; compiling for a real GPU does, with no GPU needed."""
    assert compile_ptx(PTX_SCRIPT).strip() == "compiled"


# -- training ------------------------------------------------------------------


def outlier_data(rng, n=400):
    """y = 2x - 1 plus small noise, with every tenth row thrown far off; also which rows are inliers."""
    X = rng.uniform(-2, 2, size=(n, 1))
    y = 2.0 * X[:, 0] - 1.0 + rng.normal(0, 0.1, n)
    y[::10] += rng.choice([-1, 1], n // 10) * rng.uniform(20, 40, n // 10)
    inliers = np.ones(n, bool)
    inliers[::10] = False
    return X, y, inliers


def test_fit_learns_and_shrugs_off_outliers():
    X, y, inliers = outlier_data(np.random.default_rng(0))
    lines = {}
    for loss in ("huber", "mse"):
        model = jitprop.Sequential([jitprop.layer("dense", units=1)], input_dim=1, dtype="float64", seed=0)
        before = jitprop.evaluate(model, X[inliers], y[inliers], loss=loss)["loss"]
        jitprop.fit(model, X, y, loss=loss, optimizer=jitprop.optimizer("adam", lr=0.05), epochs=20, batch_size=32)
        if loss == "huber":  # the outliers' loss stays (that's the point); the inliers' falls
            assert jitprop.evaluate(model, X[inliers], y[inliers], loss=loss)["loss"] < 0.02 * before
        state = model.state_dict()
        lines[loss] = state["0.weight"][0, 0], state["0.bias"][0]
    # The outliers drag mse's line; huber's stays near the true y = 2x - 1.
    assert abs(lines["huber"][0] - 2.0) < 0.1 and abs(lines["huber"][1] + 1.0) < 0.1
    assert abs(lines["mse"][1] + 1.0) > 0.3 and abs(lines["mse"][1] + 1.0) > 5 * abs(lines["huber"][1] + 1.0)


def run_cli(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["JITPROP_LOAD_PLUGINS"] = "huber"
    out = subprocess.run([JITPROP, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_the_command_line_trains_saves_and_evaluates_with_huber(tmp_path):
    out = run_cli("train", "--dataset", "sine", "--loss", "huber:delta=0.5", "--hidden", "16", "--activation", "tanh",
                  "--epochs", 8, "--lr", 0.02, "--checkpoint", "model.npz", cwd=tmp_path)
    losses = [float(v) for v in re.findall(r"^epoch .*? loss (\S+)", out, flags=re.M)]
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0], out
    assert "saved model.npz" in out
    # The checkpoint remembers the loss and its delta: evaluate rebuilds it by name.
    evaluated = run_cli("evaluate", "model.npz", cwd=tmp_path)
    val_loss = float(re.search(r"validation loss: (\S+)", out).group(1))
    assert float(re.match(r"loss (\S+)", evaluated).group(1)) == pytest.approx(val_loss, abs=1e-4)
    listed = run_cli("list", "losses", cwd=tmp_path)
    assert re.search(r"^\s+huber\s+huber\s+Huber loss", listed, flags=re.M), listed
