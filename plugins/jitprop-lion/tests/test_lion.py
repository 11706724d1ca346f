"""jitprop-lion against a float64 NumPy reference, its CPU kernel on the CUDA simulator, and
through jitprop as an installed plugin (entry point, fit, the command line)."""

import os

# Before numba or jitprop load: CUDA kernels run on numba's simulator unless the
# caller asks for a real GPU (NUMBA_ENABLE_CUDASIM=0), and only this plugin
# loads, whatever else is installed.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
os.environ["JITPROP_LOAD_PLUGINS"] = "lion"

import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import jitprop  # noqa: E402
from jitprop.testing import compile_ptx  # noqa: E402
import jitprop_lion  # noqa: E402
from jitprop.registry import lookup  # noqa: E402
from jitprop_lion import Lion, lion_kernel  # noqa: E402

JITPROP = str(Path(sys.executable).with_name("jitprop"))

OPTIONS = dict(lr=0.01, betas=(0.9, 0.99), weight_decay=0.3)


def reference(p, grads, lrs, betas, weight_decay):
    """lucidrains/lion-pytorch's update, step by step, in float64 NumPy: (weights, momentum)."""
    beta1, beta2 = betas
    p, m = np.array(p, np.float64), np.zeros(len(p))
    for g, lr in zip(grads, lrs):
        c = beta1 * m + (1 - beta1) * g
        p = p * (1 - lr * weight_decay) - lr * np.sign(c)
        m = beta2 * m + (1 - beta2) * g
    return p, m


def case(rng, n=50, steps=7):
    """Weights, gradients with some exact zeros, and a learning rate that changes every step (a schedule)."""
    p = rng.normal(size=n)
    grads = rng.normal(size=(steps, n))
    grads[:, :3] = 0.0  # first entries: c stays exactly 0, so only weight decay moves them
    grads[1:, 3] = 0.0  # fourth: c keeps the sign of the first gradient as momentum decays
    lrs = OPTIONS["lr"] * (1.0 - 0.1 * np.arange(steps))
    return p, grads, lrs


def run_kernel(kernel, opt, p, grads, lrs, dtype):
    p = p.astype(dtype)
    state = np.zeros((opt.n_state, len(p)), dtype)
    opt.init_state(state)
    for step, (g, lr) in enumerate(zip(grads, lrs), start=1):
        kernel(p, g.astype(dtype), state, lr, opt.hyper(), step)
    return p, state


# -- as an installed plugin ---------------------------------------------------


def test_the_entry_point_registers_lion():
    opt = jitprop.optimizer("lion")
    assert isinstance(opt, Lion) and opt.config() == {"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0}
    assert opt.n_state == 1
    entry = lookup("optimizer", "lion")
    assert entry.cls is Lion and entry.plugin == "lion"  # the entry point's name
    assert jitprop.plugins.pm.get_plugin("lion") is jitprop_lion


@pytest.mark.parametrize("options, message", [
    (dict(lr=-1.0), r"lr must be a number in \[0.0, inf\)"),
    (dict(betas=(0.9,)), r"betas must be a pair like \(0.9, 0.99\)"),
    (dict(betas=(0.9, 1.5)), r"betas\[1\] must be a number in \[0.0, 1.0\]"),
    (dict(weight_decay=-0.1), r"weight_decay must be a number in \[0.0, inf\)"),
])  # fmt: skip
def test_bad_options_are_one_line(options, message):
    with pytest.raises(jitprop.ConfigError, match=message):
        jitprop.optimizer("lion", **options)


# -- the CPU kernel ------------------------------------------------------------


def test_matches_the_numpy_reference_in_float64():
    p0, grads, lrs = case(np.random.default_rng(0))
    opt = jitprop.optimizer("lion", **OPTIONS)
    p, state = run_kernel(lion_kernel, opt, p0, grads, lrs, np.float64)
    expect_p, expect_m = reference(p0, grads, lrs, opt.betas, opt.weight_decay)
    np.testing.assert_allclose(p, expect_p, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state[0], expect_m, rtol=1e-12, atol=1e-12)
    # Zero gradients: no signed step, only the decoupled decay (1 - lr * wd) each step.
    np.testing.assert_allclose(p[:3], p0[:3] * np.prod(1 - lrs * opt.weight_decay), rtol=1e-14)


def test_float32_stays_float32_and_matches_the_reference():
    p0, grads, lrs = case(np.random.default_rng(1))
    opt = jitprop.optimizer("lion", **OPTIONS)
    p, state = run_kernel(lion_kernel, opt, p0, grads, lrs, np.float32)
    expect_p, expect_m = reference(p0, grads, lrs, opt.betas, opt.weight_decay)
    assert p.dtype == state.dtype == np.float32
    np.testing.assert_allclose(p, expect_p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state[0], expect_m, rtol=1e-5, atol=1e-6)


def test_every_step_is_lr_in_every_coordinate():
    p = np.array([1.0, -2.0, 3.0])
    state = np.zeros((1, 3))
    lion_kernel(p, np.array([1e-9, -5.0, 1e9]), state, 0.1, Lion().hyper(), 1)
    np.testing.assert_allclose(p, [0.9, -1.9, 2.9], rtol=1e-15)


def test_a_nan_gradient_reaches_the_weight():
    p, state = np.ones(2), np.zeros((1, 2))
    lion_kernel(p, np.array([np.nan, 1.0]), state, 0.1, Lion().hyper(), 1)
    assert np.isnan(p[0]) and p[1] == 0.9


# -- the CUDA kernel, on numba's simulator -------------------------------------


@pytest.fixture
def tiny_grids(monkeypatch):
    """The simulator runs one Python thread per GPU thread: small blocks keep it quick,
    and fewer threads than weights make the grid-stride loop go round."""
    from jitprop import cuda_launch

    monkeypatch.setattr(cuda_launch, "TILE", 4)
    monkeypatch.setattr(cuda_launch, "THREADS", 8)
    monkeypatch.setattr(cuda_launch, "MAX_BLOCKS", 3)


@pytest.mark.usefixtures("tiny_grids")
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-14), (np.float32, 1e-6)])
def test_cuda_kernel_matches_the_cpu_kernel(dtype, tol):
    cuda = pytest.importorskip("numba.cuda")
    from jitprop_lion.cuda import lion_kernel as lion_cuda

    p0, grads, lrs = case(np.random.default_rng(2), n=37, steps=5)
    opt = jitprop.optimizer("lion", **OPTIONS)
    p, state = run_kernel(lion_kernel, opt, p0, grads, lrs, dtype)
    d_p, d_state = cuda.to_device(p0.astype(dtype)), cuda.to_device(np.zeros((1, 37), dtype))
    for step, (g, lr) in enumerate(zip(grads, lrs), start=1):
        lion_cuda(d_p, cuda.to_device(g.astype(dtype)), d_state, lr, opt.hyper(), step)
    np.testing.assert_allclose(d_p.copy_to_host(), p, rtol=tol, atol=tol)
    np.testing.assert_allclose(d_state.copy_to_host(), state, rtol=tol, atol=tol)


@pytest.mark.usefixtures("tiny_grids")
# The simulator computes jitprop's shuffle hash with NumPy scalars, which warn on its intended wrap-around.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_a_cuda_run_matches_the_cpu_run():
    pytest.importorskip("numba.cuda")
    X, y = xor_data(24)
    runs = {}
    for device in ("cpu", "cuda"):
        model = jitprop.Sequential([jitprop.layer("dense", units=4), "tanh", jitprop.layer("dense", units=2)],
                                   input_dim=2, seed=3)
        history = jitprop.fit(model, X, y, loss="cross_entropy", optimizer=jitprop.optimizer("lion", **OPTIONS),
                              epochs=2, batch_size=8, validation_split=0.25, device=device)
        runs[device] = history.history, model.params.copy()
    (h_cpu, p_cpu), (h_gpu, p_gpu) = runs["cpu"], runs["cuda"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(h_gpu[key], h_cpu[key], rtol=1e-5)
    np.testing.assert_allclose(p_gpu, p_cpu, rtol=1e-5, atol=1e-6)


PTX_SCRIPT = textwrap.dedent("""
    from numba import cuda, types
    from jitprop_lion import cuda as lion_cuda

    for dtype in (types.float32, types.float64):
        m1, m2 = types.Array(dtype, 1, "A"), types.Array(dtype, 2, "A")
        cuda.compile_ptx(lion_cuda._lion.py_func, (m1, m1, m2) + (dtype,) * 6, cc=(7, 5))
    print("compiled")
""")


def test_the_cuda_kernel_compiles_to_ptx():
    """The simulator checks no types; compiling for a real GPU does, with no GPU needed."""
    assert compile_ptx(PTX_SCRIPT).strip() == "compiled"


# -- training ------------------------------------------------------------------


def xor_data(n, seed=0):
    """Two classes by the sign of x0 * x1: not linearly separable."""
    X = np.random.default_rng(seed).normal(size=(n, 2))
    return X, (X[:, 0] * X[:, 1] > 0).astype(np.int64)


def test_fit_learns_xor():
    X, y = xor_data(600)
    model = jitprop.Sequential([jitprop.layer("dense", units=32), "relu", jitprop.layer("dense", units=2)],
                               input_dim=2, seed=0)
    opt = jitprop.optimizer("lion", lr=3e-3, weight_decay=0.1)
    history = jitprop.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=30, batch_size=32,
                          validation_split=0.2)
    losses = history.history["loss"]
    assert losses[-1] < 0.3 * losses[0]
    assert history.history["val_accuracy"][-1] > 0.9


def run_cli(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["JITPROP_LOAD_PLUGINS"] = "lion"
    out = subprocess.run([JITPROP, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_the_command_line_trains_with_lion(tmp_path):
    out = run_cli("train", "--dataset", "spirals", "--hidden", "32,32", "--optimizer", "lion:weight_decay=0.1",
                  "--lr", 0.003, "--epochs", 10, cwd=tmp_path)
    losses = [float(v) for v in re.findall(r"^epoch .*? loss (\S+)", out, flags=re.M)]
    assert len(losses) == 10 and losses[-1] < 0.6 * losses[0], out


def test_betas_from_a_run_file_and_an_exact_resume(tmp_path):
    """List options such as betas come from a run file; the momentum is saved and resumed with the weights."""
    (tmp_path / "run.toml").write_text(textwrap.dedent("""
        dataset = "spirals"
        hidden = [16]
        [optimizer]
        name = "lion"
        lr = 0.003
        betas = [0.95, 0.98]
        weight_decay = 0.1
    """))
    printed = run_cli("train", "--config", "run.toml", "--print-config", cwd=tmp_path)
    assert "betas = [0.95, 0.98]" in printed
    straight = run_cli("train", "--config", "run.toml", "--epochs", 6, cwd=tmp_path)
    run_cli("train", "--config", "run.toml", "--epochs", 3, "--checkpoint", "half.npz", cwd=tmp_path)
    resumed = run_cli("train", "--resume", "half.npz", "--epochs", 6, cwd=tmp_path)

    def last(out):
        return [line.split("  ")[:-1] for line in out.splitlines() if line.startswith("epoch 6/6")]  # no timing

    assert last(resumed) == last(straight) != []
