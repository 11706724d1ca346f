"""jitprop-onnx through jitprop's real plugin loading: every registered layer exported by `jitprop export`
and run in onnxruntime against jitprop's own predictions; the metadata, the folded standardisation,
the conversions other plugins add, and the one-line errors that leave files as they were."""

import os
import sys

# Load this package (and jitprop-batchnorm, whose layers it converts) through their installed entry
# points, and no other third-party plugin.
os.environ["JITPROP_LOAD_PLUGINS"] = "onnx,batch_norm"

import csv  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402  (dependencies of the package: missing, the tests fail, they never skip)
import onnxruntime  # noqa: E402
import pytest  # noqa: E402

import jitprop  # noqa: E402
from jitprop import testing  # noqa: E402
from jitprop.testing import command as run  # noqa: E402

import jitprop_onnx  # noqa: E402

jitprop.plugins.load_plugins()
if "onnx" in jitprop.plugins.failed_plugins:
    raise AssertionError(f"the onnx entry point failed to load: {jitprop.plugins.failed_plugins['onnx']}")
if jitprop.plugins.pm.get_plugin("onnx") is None:
    raise AssertionError("the onnx entry point did not load: pip install plugins/jitprop-onnx (run these tests on their own)")
HAVE_BATCHNORM = jitprop.plugins.pm.get_plugin("batch_norm") is not None
needs_batchnorm = pytest.mark.skipif(not HAVE_BATCHNORM, reason="jitprop-batchnorm is not installed (CI installs every plugin)")

JITPROP = str(Path(sys.executable).with_name("jitprop"))
RTOL, ATOL = 1e-4, 1e-5  # float32


def one_line_error(result):
    assert result.exit_code == 1, result.output  # a user's mistake, not a crash
    return testing.one_line_error(result)


def onnx_run(path, rows):
    """Every output of the ONNX file at ``path`` on ``rows``, by name (and the file passes onnx's checker)."""
    onnx.checker.check_model(str(path), full_check=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input": np.asarray(rows, dtype=np.float32)})))


def metadata(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def leftovers(directory):
    return [p.name for p in Path(directory).iterdir() if p.name.endswith(".tmp")]


# -- a model trained from the command line on a CSV: text labels, features of very different scales ---


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    where = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 150)
    X = rng.normal(size=(150, 4)) + y[:, None] * np.array([1.5, -1.0, 0.8, 2.0])
    X = X * np.array([1.0, 10.0, 0.01, 300.0]) + np.array([5.0, -50.0, 0.2, 1000.0])  # standardising matters
    species = np.array(["setosa", "versicolor", "virginica"])[y]
    with open(where / "flowers.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sepal_length", "sepal_width", "petal_length", "petal_width", "species"])
        writer.writerows([*(f"{v:.6g}" for v in row), s] for row, s in zip(X, species))
    (where / "runs").mkdir()
    run("train", "--dataset", where / "flowers.csv", "--target", "species", "--hidden", "16", "--dropout", "0.2",
        "--epochs", "15", "--lr", "0.02", "--checkpoint", where / "runs" / "model.npz")  # fmt: skip
    out = run("export", where / "runs" / "model.npz").output  # the default output: beside the checkpoint
    assert out.startswith(f"wrote {where / 'runs' / 'model.onnx'} (")
    assert "outputs: output, probabilities, class, label" in out and "checked: onnxruntime gives jitprop's outputs" in out
    return where


def csv_features(path):
    with open(path) as f:
        rows = list(csv.reader(f))[1:]
    return np.array([[float(v) for v in row[:4]] for row in rows])


def test_trained_classifier_gives_what_jitprop_predict_writes(trained):
    run("predict", trained / "runs" / "model.npz", trained / "flowers.csv", "-o", trained / "predictions.csv")
    with open(trained / "predictions.csv") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["species", "p_setosa", "p_versicolor", "p_virginica"]
    got = onnx_run(trained / "runs" / "model.onnx", csv_features(trained / "flowers.csv"))  # the raw CSV values
    assert list(got["label"]) == [row[0] for row in rows]
    # predict writes 6 significant digits
    np.testing.assert_allclose(got["probabilities"], np.array([row[1:] for row in rows], dtype=float), rtol=RTOL, atol=2e-6)
    assert list(got["class"]) == [["setosa", "versicolor", "virginica"].index(row[0]) for row in rows]
    assert len(set(got["label"])) == 3  # the model learnt something: the comparison covers every class


def test_standardisation_is_folded_in(trained):
    saved = jitprop.checkpoint.load(trained / "runs" / "model.npz")
    model, scaler = saved.build_model(), jitprop.Standardiser.saved(saved)
    raw = csv_features(trained / "flowers.csv").astype(np.float32).astype(np.float64)
    got = onnx_run(trained / "runs" / "model.onnx", raw)["output"]
    np.testing.assert_allclose(got, model.predict(scaler(raw)), rtol=RTOL, atol=ATOL)
    assert not np.allclose(got, model.predict(raw), rtol=0.1, atol=0.1)  # without it the answers differ
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(trained / "runs" / "model.onnx")).graph.initializer}
    np.testing.assert_array_equal(stored["norm_mean"], scaler.mean.astype(np.float32))
    np.testing.assert_array_equal(stored["norm_std"], scaler.std.astype(np.float32))


def test_metadata_names_the_classes_features_and_versions(trained):
    meta = metadata(trained / "runs" / "model.onnx")
    assert json.loads(meta["class_names"]) == ["setosa", "versicolor", "virginica"]
    assert json.loads(meta["feature_names"]) == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert meta["target_name"] == "species" and meta["task"] == "classification" and meta["loss"] == "cross_entropy"
    assert meta["jitprop_version"] == jitprop.__version__ and meta["checkpoint"] == "model.npz"
    assert meta["normalization"].startswith("folded") and json.loads(meta["epochs_trained"]) == 15
    assert [layer["name"] for layer in json.loads(meta["layers"])] == ["dense", "relu", "dropout", "dense"]
    proto = onnx.load(str(trained / "runs" / "model.onnx"))
    assert proto.producer_name == "jitprop-onnx" and proto.producer_version == jitprop_onnx.__version__
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", jitprop_onnx.OPSET)]


def test_the_batch_is_dynamic(trained):
    rows = csv_features(trained / "flowers.csv")[:9]
    whole = onnx_run(trained / "runs" / "model.onnx", rows)
    for i in (0, 8):
        alone = onnx_run(trained / "runs" / "model.onnx", rows[i : i + 1])
        np.testing.assert_allclose(alone["probabilities"][0], whole["probabilities"][i], rtol=1e-6, atol=1e-7)
        assert alone["label"][0] == whole["label"][i]
    session = onnxruntime.InferenceSession(str(trained / "runs" / "model.onnx"), providers=["CPUExecutionProvider"])
    (only,) = session.get_inputs()
    assert only.name == "input" and only.shape == ["batch", 4] and only.type == "tensor(float)"


def test_the_installed_command_in_a_real_process(trained):
    env = {**os.environ, "JITPROP_LOAD_PLUGINS": "onnx"}
    done = subprocess.run([JITPROP, "export", "runs/model.npz", "-o", "process.onnx"], cwd=trained, env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote process.onnx (") and done.stderr == ""
    assert onnx_run(trained / "process.onnx", csv_features(trained / "flowers.csv")[:3])["label"].shape == (3,)
    bad = subprocess.run([JITPROP, "export", "nope.npz"], cwd=trained, env=env, capture_output=True, text=True,
                         timeout=120, check=False)  # fmt: skip
    assert bad.returncode == 1 and bad.stderr == "Error: nope.npz: no such checkpoint file\n" and bad.stdout == ""


def test_loaded_from_its_entry_point_without_importing_onnx():
    code = ("import sys, click, jitprop.cli as c; assert 'export' in c.cli.list_commands(click.Context(c.cli));"
            " assert 'onnx' not in sys.modules and 'onnxruntime' not in sys.modules, 'imported at load time'")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "JITPROP_LOAD_PLUGINS": "onnx"}, check=True, timeout=120)
    rows = {r["name"]: r for r in json.loads(run("plugins", "--json").output)}
    assert rows["onnx"]["package"] == "jitprop-onnx" and "register_commands" in rows["onnx"]["hooks"]
    assert "Examples:" in run("export", "--help").output


# -- every layer kind, in small models with random weights and running statistics --------------------


def case(name, layers, shape, loss, labels=None, dtype="float32", normalize=True, bn=False):
    return pytest.param(layers, shape, loss, labels, dtype, normalize, id=name, marks=[needs_batchnorm] if bn else [])


L = jitprop.layer
# fmt: off
CASES = [
    case("mlp-activations", lambda: [L("dense", units=8), L("relu"), L("dense", units=8), L("leaky_relu", negative_slope=0.2),
                                     L("dense", units=8), L("tanh"), L("dense", units=8), L("sigmoid"), L("dense", units=8),
                                     L("gelu"), L("dropout", rate=0.5), L("dense", units=3)],
         (5,), "cross_entropy", labels=["ant", "bee", "cat"]),
    case("cnn", lambda: [L("conv2d", out_channels=4, kernel_size=3, padding=1), L("relu"), L("max_pool2d", kernel_size=2),
                         L("conv2d", out_channels=5, kernel_size=3, stride=2, padding=1, bias=False), L("leaky_relu"),
                         L("avg_pool2d", kernel_size=3, stride=1, padding=1),
                         L("max_pool2d", kernel_size=3, stride=2, padding=1), L("flatten"), L("dense", units=10)],
         (1, 8, 8), "cross_entropy"),
    case("odd-images-binary", lambda: [
        L("conv2d", out_channels=3, kernel_size=(3, 2), stride=(1, 2), padding=(1, 0)), L("gelu"),
        L("avg_pool2d", kernel_size=2, stride=1), L("softmax"), L("global_avg_pool2d"), L("dense", units=2)],
         (2, 6, 5), "binary_cross_entropy"),
    case("dense-on-images-regression-float64", lambda: [L("tanh"), L("dense", units=6), L("sigmoid"), L("dense", units=2)],
         (1, 4, 4), "mse", dtype="float64", normalize=False),
    case("softmax-nll", lambda: [L("dense", units=6), L("tanh"), L("dense", units=4), L("softmax")], (3,), "nll",
         labels=["w", "x", "y", "z"]),
    case("batch-norm", lambda: [L("dense", units=6), L("batch_norm"), L("relu"), L("dense", units=3)], (6,), "nll", bn=True),
    case("batch-norm2d", lambda: [L("conv2d", out_channels=3, kernel_size=3, padding=1), L("batch_norm2d"), L("relu"),
                                  L("batch_norm"), L("max_pool2d", kernel_size=2), L("flatten"), L("dense", units=4)],
         (2, 5, 5), "cross_entropy", bn=True),
]
# fmt: on


def build(layers, shape, loss, dtype, seed=0):
    """A model with random weights (and running statistics), as training would leave it: the
    initial weights moved a little, so biases and batch norm's scale and shift are not 0 and 1."""
    model = jitprop.Sequential(layers(), input_shape=shape, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    model.params[...] += rng.normal(scale=0.2, size=model.params.shape)
    for key, view in model.buffers().items():
        if key.endswith("running_mean"):
            view[...] = rng.normal(scale=0.5, size=view.shape)
        elif key.endswith("running_var"):
            view[...] = rng.uniform(0.3, 2.0, size=view.shape)
    return model


def raw_rows(shape, n, seed=1):
    """Rows of raw features, each column (channel) with its own offset and spread."""
    rng = np.random.default_rng(seed)
    groups = shape[0] if len(shape) == 3 else int(np.prod(shape))
    offsets, scales = rng.uniform(-20, 20, groups), np.exp(rng.uniform(-2, 3, groups))
    per_value = int(np.prod(shape)) // groups
    X = rng.normal(size=(n, int(np.prod(shape)))) * np.repeat(scales, per_value) + np.repeat(offsets, per_value)
    return X.astype(np.float32).astype(np.float64)  # values onnxruntime's float32 input holds exactly


def save(path, model, loss, labels=None, scaler=None):
    info = {"labels": labels, "arrays": {} if scaler is None else scaler.arrays(),
            "task": "regression" if jitprop.loss(loss).target == "regression" else "classification"}  # fmt: skip
    jitprop.checkpoint.save(path, jitprop.Trainer(model, loss=loss), info=info)


@pytest.mark.parametrize("layers, shape, loss, labels, dtype, normalize", CASES)
def test_every_layer_kind_matches_jitprop(tmp_path, layers, shape, loss, labels, dtype, normalize):
    model = build(layers, shape, loss, dtype)
    X = raw_rows(shape, 37)
    scaler = jitprop.Standardiser.fit(X, shape) if normalize else None
    save(tmp_path / "model.npz", model, loss, labels, scaler)
    run("export", tmp_path / "model.npz", "-o", tmp_path / "model.onnx")
    got = onnx_run(tmp_path / "model.onnx", X)

    expected = model.predict(X if scaler is None else scaler(X))  # what jitprop predict computes
    np.testing.assert_allclose(got["output"], expected, rtol=RTOL, atol=ATOL)
    assert got["output"].dtype == np.float32 and got["output"].shape == (37, model.output_dim)
    assert np.ptp(expected, axis=0).max() > 0.01  # the outputs depend on the rows: every layer is compared
    loss = jitprop.loss(loss)
    if loss.target == "regression":
        assert set(got) == {"output"}
        return
    probs = loss.probabilities(expected)
    np.testing.assert_allclose(got["probabilities"], probs, rtol=RTOL, atol=ATOL)
    if loss.target == "binary":
        np.testing.assert_array_equal(got["class"], (probs >= 0.5).astype(np.int64))
        assert set(got) == {"output", "probabilities", "class"}
        return
    np.testing.assert_array_equal(got["class"], probs.argmax(axis=1))
    names = labels or [str(i) for i in range(model.output_dim)]
    assert list(got["label"]) == [names[i] for i in probs.argmax(axis=1)]
    assert json.loads(metadata(tmp_path / "model.onnx")["class_names"]) == names


def test_every_registered_layer_has_a_case_and_a_conversion():
    """A layer added to jitprop (or jitprop-batchnorm) without an ONNX conversion fails here."""
    ours = [e for e in jitprop.registry.entries("layer")
            if e.cls.__module__.startswith(("jitprop.default_plugins", "jitprop_batchnorm"))]  # fmt: skip
    assert {"dense", "conv2d", "max_pool2d", "softmax"} <= {e.name for e in ours}
    covered = set()
    for param in CASES:
        covered |= {layer.name for layer in param.values[0]()} if not param.marks or HAVE_BATCHNORM else set()
    for entry in ours:
        assert entry.name in jitprop_onnx.CONVERTERS, f"no ONNX conversion of {entry.name}"
        assert entry.name in covered, f"no test case exports {entry.name}"


def test_a_float64_model_is_exported_in_float32(tmp_path):
    model = build(lambda: [L("dense", units=4), L("tanh"), L("dense", units=2)], (3,), "mse", "float64")
    save(tmp_path / "model.npz", model, "mse")
    run("export", tmp_path / "model.npz")
    assert metadata(tmp_path / "model.onnx")["model_dtype"] == "float64"
    weights = [t for t in onnx.load(str(tmp_path / "model.onnx")).graph.initializer if t.name == "0.weight"]
    assert weights[0].data_type == onnx.TensorProto.FLOAT


# -- layers from other plugins --------------------------------------------------------------------


def doubling_forward(p, h, x, out, cache, training, seed):
    out[...] = 2.0 * x


class Doubling(jitprop.Layer):
    """Twice its input: a layer from a plugin that jitprop-onnx knows nothing of."""

    name = "doubling"
    forward_kernel = staticmethod(doubling_forward)
    backward_kernel = staticmethod(doubling_forward)


class DoublingPlugin:
    @jitprop.hookimpl
    def register_layers(self, register):
        register(Doubling)


@pytest.fixture
def doubling(tmp_path):
    """A checkpoint holding the plugin layer, and a previous model.onnx beside it."""
    plugin = DoublingPlugin()
    jitprop.plugins.register(plugin, name="doubling-test")
    try:
        model = build(lambda: [L("dense", units=3), L("doubling"), L("dense", units=2)], (4,), "cross_entropy", "float32")
        save(tmp_path / "model.npz", model, "cross_entropy")
        (tmp_path / "model.onnx").write_bytes(b"the previous export")
        yield tmp_path
    finally:
        jitprop.plugins.unregister(plugin)
        jitprop_onnx.CONVERTERS.pop("doubling", None)


def unchanged(where):
    assert (where / "model.onnx").read_bytes() == b"the previous export"
    assert leftovers(where) == []


def test_a_layer_without_a_conversion_is_one_line_naming_it_and_the_way_to_add_one(doubling):
    line = one_line_error(run("export", doubling / "model.npz", ok=False))
    assert line == ("Error: layer 1 (doubling, from plugin 'doubling-test') has no ONNX conversion; its plugin can add one:"
                    " a to_onnx(graph, x, weights) method on the layer class, or a function registered with"
                    " @jitprop_onnx.converter('doubling') (see the jitprop-onnx README)")  # fmt: skip
    unchanged(doubling)


def test_a_layer_brings_its_own_conversion_with_a_to_onnx_method(doubling, monkeypatch):
    def to_onnx(self, graph, x, weights):
        return graph.node("Mul", [x, graph.constant(2.0, "two")])

    monkeypatch.setattr(Doubling, "to_onnx", to_onnx, raising=False)
    run("export", doubling / "model.npz")
    model = jitprop.checkpoint.load(doubling / "model.npz").build_model()
    X = raw_rows((4,), 11)
    np.testing.assert_allclose(onnx_run(doubling / "model.onnx", X)["output"], model.predict(X), rtol=RTOL, atol=ATOL)


def test_a_plugin_registers_a_conversion(doubling):
    @jitprop_onnx.converter("doubling", owner=__name__)
    def doubling_to_onnx(graph, layer, x, weights):
        return graph.node("Add", [x, x])

    run("export", doubling / "model.npz", "-o", doubling / "registered.onnx")
    model = jitprop.checkpoint.load(doubling / "model.npz").build_model()
    X = raw_rows((4,), 11)
    np.testing.assert_allclose(onnx_run(doubling / "registered.onnx", X)["output"], model.predict(X), rtol=RTOL, atol=ATOL)


def test_a_conversion_for_another_class_of_the_same_name_is_refused(doubling):
    jitprop_onnx.converter("doubling", owner="someone_else")(lambda graph, layer, x, weights: x)
    line = one_line_error(run("export", doubling / "model.npz", ok=False))
    assert ".Doubling, but jitprop-onnx converts the 'doubling' of someone_else" in line
    unchanged(doubling)


def test_a_wrong_conversion_is_caught_by_onnxruntime_before_anything_is_written(doubling):
    jitprop_onnx.converter("doubling")(lambda graph, layer, x, weights: graph.node("Relu", [x]))  # not 2x
    line = one_line_error(run("export", doubling / "model.npz", ok=False))
    assert line.startswith("Error: the exported model disagrees with jitprop on random rows (row ")
    assert line.endswith("; nothing was written")
    unchanged(doubling)
    run("export", doubling / "model.npz", "--no-check")  # what --no-check is for: it writes what it was told
    assert (doubling / "model.onnx").read_bytes().startswith(b"\x08")  # an ONNX protobuf now


def test_a_conversion_that_breaks_is_one_line_naming_its_plugin(doubling):
    jitprop_onnx.converter("doubling")(lambda graph, layer, x, weights: graph.node("Mul", [x, "nowhere"]))
    line = one_line_error(run("export", doubling / "model.npz", ok=False))
    assert line == "Error: layer 1 (doubling): ONNX operator Mul reads 'nowhere', which no earlier operator made"
    jitprop_onnx.converter("doubling")(lambda graph, layer, x, weights: 1 / 0)
    line = one_line_error(run("export", doubling / "model.npz", ok=False))
    assert line == ("Error: layer 1 (doubling, from plugin 'doubling-test'): its ONNX conversion failed:"
                    " ZeroDivisionError: division by zero")  # fmt: skip
    unchanged(doubling)


# -- the output file ------------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path):
    save(tmp_path / "model.npz", build(lambda: [L("dense", units=2)], (3,), "mse", "float32"), "mse")
    return tmp_path


def test_a_failed_write_leaves_the_previous_file_whole(small, monkeypatch):
    (small / "model.onnx").write_bytes(b"the previous export")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    line = one_line_error(run("export", small / "model.npz", ok=False))
    assert line == f"Error: cannot write {small / 'model.onnx'}: No space left on device"
    unchanged(small)


def test_an_existing_export_is_replaced_whole(small):
    (small / "model.onnx").write_bytes(b"the previous export")
    (small / "model.onnx").chmod(0o640)
    assert run("export", small / "model.npz").output.startswith(f"replaced {small / 'model.onnx'} (")
    assert onnx_run(small / "model.onnx", np.ones((2, 3)))["output"].shape == (2, 2)
    assert (small / "model.onnx").stat().st_mode & 0o777 == 0o640  # it keeps its permissions
    assert leftovers(small) == []


def test_output_mistakes_are_one_line(small, monkeypatch):
    monkeypatch.chdir(small)
    assert one_line_error(run("export", "model.npz", "-o", "./model.npz", ok=False)) == (
        "Error: ./model.npz is the checkpoint itself; give another output file (-o model.onnx)")
    assert one_line_error(run("export", "model.npz", "-o", "no/such/dir.onnx", ok=False)) == (
        f"Error: cannot write ONNX file no/such/dir.onnx: directory {small / 'no' / 'such'} does not exist")
    (small / "notes.txt").write_text("not a checkpoint")
    assert one_line_error(run("export", "notes.txt", ok=False)).startswith("Error: notes.txt: not a readable checkpoint")
    assert not (small / "notes.onnx").exists()


# -- what predict does besides the layers: a CSV's missing-value fill and category columns, a
#    regression's standardised target -------------------------------------------------------------


def test_fill_and_target_standardisation_are_folded_in(tmp_path):
    model = build(lambda: [L("dense", units=5), L("relu"), L("dense", units=2)], (4,), "mse", "float32")
    X = raw_rows((4,), 20)
    X[:, 2:] = np.random.default_rng(2).integers(0, 2, (20, 1)) * np.array([1.0, -1.0]) + np.array([0.0, 1.0])  # one-hot
    scaler = jitprop.Standardiser.fit(X)
    columns = [{"name": "a", "kind": "number", "fill": 3.5}, {"name": "b", "kind": "number"},
               {"name": "color", "kind": "category", "categories": ["blue", "red"]}]  # fmt: skip
    target_mean, target_std = np.array([100.0, -3.0]), np.array([20.0, 0.5])
    info = {"columns": columns, "fill": "mean", "feature_names": ["a", "b", "color"], "task": "regression",
            "arrays": {**scaler.arrays(), "target_mean": target_mean, "target_std": target_std}}  # fmt: skip
    jitprop.checkpoint.save(tmp_path / "model.npz", jitprop.Trainer(model, loss="mse"), info=info)
    run("export", tmp_path / "model.npz")
    holes = X.copy()
    holes[::3, 0] = np.nan  # a's missing cells take its fill, 3.5
    filled = holes.copy()
    filled[::3, 0] = 3.5
    got = onnx_run(tmp_path / "model.onnx", holes)["output"]
    np.testing.assert_allclose(got, model.predict(scaler(filled)) * target_std + target_mean, rtol=RTOL, atol=1e-4)
    meta = metadata(tmp_path / "model.onnx")
    assert json.loads(meta["feature_names"]) == ["a", "b", "color=blue", "color=red"]
    assert json.loads(meta["columns"]) == columns
    assert meta["missing_values"].startswith("filled") and meta["target_standardization"].startswith("folded")
