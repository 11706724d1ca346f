"""The skeleton package ``jitprop new-plugin`` writes: a working loss or layer plugin.

Each skeleton installs with pip, registers through the ``jitprop`` entry
point, passes its own tests and ``jitprop gradcheck`` as written, and is
small enough to read in a minute before changing the kernel.
"""

import os
import re
import shutil
import tempfile
from pathlib import Path
from string import Template

from ..data.checkpoint import current_umask
from ..errors import ConfigError

KINDS = ("loss", "layer")

PYPROJECT = Template('''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "$summary"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["jitprop"]

[project.optional-dependencies]
test = ["pytest>=7"]

# jitprop finds plugins through this entry-point group: NAME = "module with the hooks".
[project.entry-points.jitprop]
$name = "$module"

[tool.setuptools]
packages = ["$module"]
''')

README = Template('''# $dist

$summary The plugin author's guide (`docs/plugins.md` in jitprop)
explains every part.

```
jitprop install -e '.[test]'  # editable, with pytest: changes to the kernels apply at once
pytest                        # its own tests (CUDA ones on numba's simulator)
jitprop gradcheck $name       # backpropagation against finite differences
```

Then use it by name: $usage
''')

LOSS = Template('''"""$dist: the ``$name`` loss, a jitprop plugin."""

import math

from numba import njit

import jitprop


@njit(cache=True)
def ${name}_kernel(pred, y, grad, h):
    # The loss contract: return the mean over all n * k outputs of the batch,
    # and write the gradient of that mean with respect to pred into grad.
    n, k = pred.shape
    total = 0.0
    for i in range(n):
        for j in range(k):
            d = pred[i, j] - y[i, j]
            a = abs(d)
            total += a + math.log1p(math.exp(-2.0 * a)) - math.log(2.0)  # log(cosh(d)), no overflow
            grad[i, j] = math.tanh(d) / (n * k)
    return total / (n * k)


class $cls(jitprop.Loss):
    """Log-cosh: like squared error near the target, like absolute error far from it."""

    name = "$name"
    target = "regression"
    kernel = staticmethod(${name}_kernel)
    cuda_kernel = "$module.cuda:${name}_kernel"  # imported only for --device cuda


@jitprop.hookimpl
def register_losses(register):
    register($cls)
''')

LAYER = Template('''"""$dist: the ``$name`` layer, a jitprop plugin."""

from numba import njit

import jitprop


@njit(cache=True)
def ${name}_forward(p, h, x, out, cache, training, seed):
    # p holds this layer's parameters: one slope per feature for negative inputs.
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = x[i, j] if x[i, j] > 0 else p[j] * x[i, j]


@njit(cache=True)
def ${name}_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    # Overwrite grad_p (never add to it); skip grad_in when it has no rows (the first layer).
    d = x.shape[1]
    for j in range(d):
        grad_p[j] = 0.0
    for i in range(x.shape[0]):
        for j in range(d):
            if x[i, j] > 0:
                if grad_in.shape[0] > 0:
                    grad_in[i, j] = grad_out[i, j]
            else:
                grad_p[j] += grad_out[i, j] * x[i, j]
                if grad_in.shape[0] > 0:
                    grad_in[i, j] = grad_out[i, j] * p[j]


class $cls(jitprop.Layer):
    """Parametric ReLU: x for x > 0, a learned slope times x below."""

    name = "$name"
    param_names = ("weight",)
    forward_kernel = staticmethod(${name}_forward)
    backward_kernel = staticmethod(${name}_backward)
    cuda_forward = "$module.cuda:${name}_forward"  # imported only for --device cuda
    cuda_backward = "$module.cuda:${name}_backward"

    def param_shapes(self):
        return {"weight": (self.in_dim,)}

    def init_params(self, params, rng, relu_next=False):
        params["weight"][...] = 0.25


@jitprop.hookimpl
def register_layers(register):
    register($cls)
''')

CUDA_LOSS = Template('''"""$dist on an NVIDIA GPU: the CPU kernel's arithmetic; imported only for --device cuda."""

import math

from numba import cuda

from jitprop import cuda_launch


@cuda.jit
def _zero(out):
    if cuda.grid(1) == 0:
        out[0] = 0.0


@cuda.jit
def _$name(pred, y, grad, out):
    n, k = pred.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, stride):  # a thread per row: any batch, any width
        total = 0.0
        for j in range(k):
            d = pred[i, j] - y[i, j]
            a = abs(d)
            total += a + math.log1p(math.exp(-2.0 * a)) - math.log(2.0)
            grad[i, j] = math.tanh(d) / (n * k)
        cuda.atomic.add(out, 0, total / (n * k))


def ${name}_kernel(pred, y, grad, h, out):
    # The CPU kernel's arguments as device arrays, and out: set it to the batch's mean loss.
    _zero[1, 1](out)  # launches on one stream run in order: zeroed before the rows add in
    _$name[cuda_launch.grid_1d(pred.shape[0])](pred, y, grad, out)
''')

CUDA_LAYER = Template('''"""$dist on an NVIDIA GPU: the CPU kernels' arithmetic; imported only for --device cuda."""

from numba import cuda

from jitprop import cuda_launch


@cuda.jit
def _forward(p, x, out):
    d = x.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, x.shape[0] * d, stride):  # a thread per element, grid-stride
        i, j = e // d, e % d
        out[i, j] = x[i, j] if x[i, j] > 0 else p[j] * x[i, j]


@cuda.jit
def _weight_gradient(x, grad_out, grad_p):
    n, d = x.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for j in range(start, d, stride):  # a thread per feature sums its rows: no atomics, same every run
        total = grad_out[0, j] * 0
        for i in range(n):
            if x[i, j] <= 0:
                total += grad_out[i, j] * x[i, j]
        grad_p[j] = total


@cuda.jit
def _input_gradient(p, x, grad_out, grad_in):
    d = x.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, x.shape[0] * d, stride):
        i, j = e // d, e % d
        grad_in[i, j] = grad_out[i, j] if x[i, j] > 0 else grad_out[i, j] * p[j]


def ${name}_forward(p, h, x, out, cache, training, seed):
    _forward[cuda_launch.grid_1d(x.size)](p, x, out)


def ${name}_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
    _weight_gradient[cuda_launch.grid_1d(x.shape[1])](x, grad_out, grad_p)
    if grad_in.shape[0] > 0:
        _input_gradient[cuda_launch.grid_1d(grad_in.size)](p, x, grad_out, grad_in)
''')

TEST_LOSS = Template('''import os

os.environ["JITPROP_LOAD_PLUGINS"] = "$name"  # load this plugin through its entry point, and only it
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")  # CUDA kernels on the simulator when there is no GPU

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import jitprop  # noqa: E402
from jitprop.gradcheck import check_loss  # noqa: E402
from jitprop.registry import lookup  # noqa: E402
from jitprop.testing import compile_ptx, tiny_cuda_grids  # noqa: E402


def test_the_entry_point_registers_it():
    assert lookup("loss", "$name").plugin == "$name"


def test_the_gradient_matches_finite_differences():
    assert check_loss("$name")["pred"] < 1e-6


def test_the_value_matches_numpy():
    rng = np.random.default_rng(0)
    pred, y = rng.normal(size=(6, 3)) * 5, rng.normal(size=(6, 3))
    loss = jitprop.loss("$name")
    value = loss.kernel(pred, y, np.empty_like(pred), loss.hyper())
    np.testing.assert_allclose(value, np.mean(np.log(np.cosh(pred - y))), rtol=1e-12)


def test_a_model_learns_with_it():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(256, 1))
    y = np.sin(X)
    model = jitprop.Sequential([jitprop.layer("dense", units=16), "tanh", jitprop.layer("dense", units=1)], input_dim=1)
    history = jitprop.fit(model, X, y, loss="$name", optimizer=jitprop.optimizer("adam", lr=0.02), epochs=40)
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]


def test_the_cuda_kernel_matches_the_cpu_kernel():
    from numba import cuda

    from $module.cuda import ${name}_kernel

    rng = np.random.default_rng(1)
    pred, y = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    loss = jitprop.loss("$name")
    grad = np.empty_like(pred)
    value = loss.kernel(pred, y, grad, loss.hyper())
    d_grad, d_out = cuda.device_array_like(pred), cuda.to_device(np.full(1, 99.0))
    with tiny_cuda_grids():
        ${name}_kernel(cuda.to_device(pred), cuda.to_device(y), d_grad, loss.hyper(), d_out)
    np.testing.assert_allclose(d_grad.copy_to_host(), grad, rtol=1e-5, atol=1e-7)
    assert d_out.copy_to_host()[0] == pytest.approx(value, rel=1e-5)


def test_the_cuda_kernel_type_checks_for_a_real_gpu():
    ptx = compile_ptx(
        "from numba import cuda, types\\n"
        "from $module.cuda import _$name\\n"
        "m2, out = types.Array(types.float32, 2, 'A'), types.Array(types.float64, 1, 'A')\\n"
        "print(len(cuda.compile_ptx(_$name.py_func, (m2, m2, m2, out), cc=(7, 5))[0]))\\n"
    )
    assert int(ptx) > 0
''')

TEST_LAYER = Template('''import os

os.environ["JITPROP_LOAD_PLUGINS"] = "$name"  # load this plugin through its entry point, and only it
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")  # CUDA kernels on the simulator when there is no GPU

import numpy as np  # noqa: E402

import jitprop  # noqa: E402
from jitprop.gradcheck import check_layer  # noqa: E402
from jitprop.registry import lookup  # noqa: E402
from jitprop.testing import compile_ptx, tiny_cuda_grids  # noqa: E402


def test_the_entry_point_registers_it():
    assert lookup("layer", "$name").plugin == "$name"


def test_gradients_match_finite_differences():
    for batch, width in ((1, 3), (4, 5)):
        errors = check_layer("$name", in_dim=width, batch=batch)
        assert max(errors.values()) < 1e-6, errors


def test_a_model_learns_with_it():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    model = jitprop.Sequential([jitprop.layer("dense", units=16), "$name", jitprop.layer("dense", units=2)], input_dim=2)
    history = jitprop.fit(model, X, y, loss="cross_entropy", optimizer=jitprop.optimizer("adam", lr=0.02), epochs=40)
    assert history.history["accuracy"][-1] > 0.9


def test_the_cuda_kernels_match_the_cpu_kernels():
    from numba import cuda

    from $module import ${name}_backward, ${name}_forward
    from $module.cuda import ${name}_backward as cuda_backward, ${name}_forward as cuda_forward

    rng = np.random.default_rng(1)
    n, d = 5, 7
    p, x, g = (rng.normal(size=shape).astype(np.float32) for shape in ((d,), (n, d), (n, d)))
    out, grad_in, grad_p = np.empty((n, d), np.float32), np.empty((n, d), np.float32), np.empty(d, np.float32)
    ${name}_forward(p, None, x, out, None, True, 0)
    ${name}_backward(p, None, x, out, None, g, grad_in, grad_p)
    dev = {k: cuda.to_device(v) for k, v in dict(p=p, x=x, g=g, out=out, grad_in=grad_in, grad_p=grad_p).items()}
    with tiny_cuda_grids():
        cuda_forward(dev["p"], None, dev["x"], dev["out"], None, True, 0)
        cuda_backward(dev["p"], None, dev["x"], dev["out"], None, dev["g"], dev["grad_in"], dev["grad_p"])
    for name, expect in (("out", out), ("grad_in", grad_in), ("grad_p", grad_p)):
        np.testing.assert_allclose(dev[name].copy_to_host(), expect, rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_cuda_kernels_type_check_for_a_real_gpu():
    ptx = compile_ptx(
        "from numba import cuda, types\\n"
        "from $module import cuda as k\\n"
        "m1, m2 = types.Array(types.float32, 1, 'A'), types.Array(types.float32, 2, 'A')\\n"
        "for kernel, sig in ((k._forward, (m1, m2, m2)), (k._weight_gradient, (m2, m2, m1)),\\n"
        "                    (k._input_gradient, (m1, m2, m2, m2))):\\n"
        "    cuda.compile_ptx(kernel.py_func, sig, cc=(7, 5))\\n"
        "print('ok')\\n"
    )
    assert ptx.strip() == "ok"
''')

# The skeleton's kernels compute log-cosh and a parametric ReLU until their author writes their own:
# the summary says so rather than naming them, since the package is named for what it will be.
FILES = {
    "loss": (LOSS, CUDA_LOSS, TEST_LOSS, "The $name loss for jitprop (from `jitprop new-plugin`: its kernels compute"
             " log-cosh until you write yours).", "`jitprop train --dataset sine --loss $name`."),
    "layer": (LAYER, CUDA_LAYER, TEST_LAYER, "The $name layer for jitprop (from `jitprop new-plugin`: its kernels compute"
              " a parametric ReLU until you write yours).", "`jitprop.layer(\"$name\")` or a run file's `layers`."),
}


def registered_name(text):
    """The name to register from what was typed: ``log_cosh``, or its package's ``jitprop-log-cosh``."""
    package = re.fullmatch(r"jitprop[-_]([a-z][a-z0-9_-]*)", text or "")
    return package.group(1).replace("-", "_") if package else text


def write(name, kind, directory):
    """Create ``directory/jitprop-NAME`` for a ``kind`` plugin registering ``name``; return its path."""
    from ..plugins.registry import KINDS as REGISTRY_KINDS
    from ..plugins.registry import tables

    if not re.fullmatch(r"[a-z][a-z0-9_]*", name or ""):
        raise ConfigError(f"plugin name {name!r} must be lower case letters, digits and underscores, starting with a letter")
    taken = tables()[kind].get(name) if kind in REGISTRY_KINDS else None
    if taken is not None:
        raise ConfigError(f"{kind} {name!r} already exists (from plugin {taken.plugin!r}); choose another name")
    dist = "jitprop-" + name.replace("_", "-")
    root = Path(directory) / dist
    if root.exists():
        raise ConfigError(f"{root} already exists; nothing was written")
    if not Path(directory).is_dir():
        raise ConfigError(f"{directory} is not a directory")
    module = "jitprop_" + name
    code, cuda_code, tests, summary, usage = FILES[kind]
    values = {"name": name, "dist": dist, "module": module, "summary": Template(summary).substitute(name=name),
              "cls": "".join(part.capitalize() for part in name.split("_")) + kind.capitalize(),
              "usage": Template(usage).substitute(name=name)}  # fmt: skip
    # Written in a temporary folder beside the target and renamed: never half a skeleton.
    tmp = Path(tempfile.mkdtemp(prefix=f".{dist}.", dir=directory))
    try:
        (tmp / module).mkdir()
        (tmp / "tests").mkdir()
        (tmp / "pyproject.toml").write_text(PYPROJECT.substitute(values))
        (tmp / "README.md").write_text(README.substitute(values))
        (tmp / module / "__init__.py").write_text(code.substitute(values))
        (tmp / module / "cuda.py").write_text(cuda_code.substitute(values))
        (tmp / "tests" / f"test_{name}.py").write_text(tests.substitute(values))
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's folder is owner-only
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
