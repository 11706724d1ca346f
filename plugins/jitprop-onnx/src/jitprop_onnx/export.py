"""A jitprop model as an ONNX model: the graph's inputs and outputs, its metadata, the check, the file.

The graph takes what ``jitprop predict`` takes, raw feature rows, and does
what it does: standardise them with the training rows' statistics, run the
layers, and for a classifier turn the outputs into probabilities and a
class. ``onnx`` and ``onnxruntime`` are imported here, when a model is
exported, never when jitprop loads the plugin.
"""

import json
import os
from pathlib import Path

import numpy as np

import jitprop
from jitprop.cli.flags import check_writable
from jitprop.errors import ConfigError, DataError, PluginError

from .graph import OPSET, Graph, add_layers

#: Rows of random inputs the exported model is run on, in onnxruntime and in jitprop, before it is written.
CHECK_ROWS = 64
#: How close the two must be: float32 rounding (and a float64 model's weights rounded to float32)
#: stays orders of magnitude inside it; a wrong conversion is off by the size of the outputs.
CHECK_RTOL, CHECK_ATOL = 1e-3, 1e-4
BATCH = "batch"  # the name of the dynamic first dimension


class Exported:
    """An exported model: ``proto`` (the onnx.ModelProto), what its outputs are, and how it was checked."""

    def __init__(self, proto, outputs, nodes, difference=None):
        self.proto, self.outputs, self.nodes, self.difference = proto, outputs, nodes, difference

    @property
    def metadata(self):
        """The model's metadata_props as a dict of strings."""
        return {p.key: p.value for p in self.proto.metadata_props}

    def to_bytes(self):
        return self.proto.SerializeToString()

    def save(self, path):
        """Write the model to ``path`` so that it is whole or absent: a temporary file beside it,
        fsynced, renamed over any file there (which keeps its permissions)."""
        data = self.to_bytes()
        jitprop.checkpoint.atomic_write(path, lambda f: f.write(data))


def _probabilities(graph, loss, output):
    """(probabilities, class) of a classifier's outputs as ``jitprop predict`` computes them, or None."""
    if loss is None or loss.target == "regression":
        return None
    own = type(loss).probabilities is not jitprop.Loss.probabilities
    if not own and loss.target == "class":  # the contract's: softmax over the classes
        probs = graph.node("Softmax", [output], axis=1)
    elif not own:  # and a sigmoid per output for binary targets
        probs = graph.node("Sigmoid", [output])
    elif loss.name == "nll" and type(loss).__module__.startswith("jitprop.default_plugins"):
        probs = graph.node("Exp", [output])  # nll's outputs are log-probabilities
    elif callable(getattr(loss, "probabilities_onnx", None)):
        probs = loss.probabilities_onnx(graph, output)
    else:
        raise ConfigError(f"loss {loss.name!r} computes its own probabilities, which jitprop-onnx cannot convert;"
                          " its plugin can give the loss class a method probabilities_onnx(graph, output)")  # fmt: skip
    # The class is read from the outputs, which are exact in float32, where two probabilities that
    # float32 rounds alike would tie; softmax, sigmoid and exp keep the order. A loss's own
    # probabilities may not, so its class is their largest.
    basis = probs if own and loss.name != "nll" else output
    if loss.target == "class":
        cls = graph.node("ArgMax", [basis], axis=1, keepdims=0)  # the first of equals, as numpy's argmax
    else:  # binary: each output >= 0 (its probability >= 0.5)
        at = graph.constant(0.5 if basis is probs else 0.0, "threshold")
        cls = graph.node("Cast", [graph.node("GreaterOrEqual", [basis, at])], to=7)  # 7: INT64
    return probs, cls


def _per(values, n, what):
    """``values`` as n float64 numbers (one per input or output), or None."""
    if values is None:
        return None
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (n,):
        raise DataError(f"the {what} has {values.size} values, but the model has {n}")
    return values


def _text(value):
    return value if isinstance(value, str) else json.dumps(value)


def _outputs(graph, model, loss, y):
    """The graph's outputs: ``[(name, value, kind, shape, doc)]``, the values renamed to their names;
    ``label`` (a string) is added by ``_proto``, from ``class``."""
    from onnx import TensorProto

    k, F, INT = model.output_dim, TensorProto.FLOAT, TensorProto.INT64
    logits = loss is not None and loss.target in ("class", "binary") and loss.name != "nll"
    outputs = [("output", y, F, [BATCH, k], "the model's outputs as jitprop's Sequential.predict gives them"
                + (" (logits)" if logits else ""))]  # fmt: skip
    classified = _probabilities(graph, loss, y)
    if classified is not None and loss.target == "class":
        outputs += [
            ("probabilities", classified[0], F, [BATCH, k], "each class's probability, jitprop predict's p_ columns"),
            ("class", classified[1], INT, [BATCH], "the predicted class's index into class_names (0-based)"),
        ]
    elif classified is not None:
        outputs += [
            ("probabilities", classified[0], F, [BATCH, k], "each output's probability (a sigmoid per output)"),
            ("class", classified[1], INT, [BATCH, k], "0 or 1 per output: 1 where the probability is 0.5 or more"),
        ]
    for name, value, *_ in outputs:
        graph.rename(value, name)
    return outputs


def _proto(graph, model, outputs, labels, scaler):
    """The onnx.ModelProto of a finished graph, checked by onnx's checker (full check, shapes inferred)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from . import __version__

    nodes = [helper.make_node(op, inputs, names, name=names[0], **attributes)
             for op, inputs, names, attributes in graph.nodes]  # fmt: skip
    initializers = [numpy_helper.from_array(a, name) for name, a in graph.constants.items()]
    values = [helper.make_tensor_value_info(name, kind, shape, doc) for name, _, kind, shape, doc in outputs]
    if labels is not None:  # the class's name: a string tensor of the names, indexed by the class
        initializers.append(numpy_helper.from_array(np.array(labels, dtype=object), "class_names"))
        nodes.append(helper.make_node("Gather", ["class_names", "class"], ["label"], name="label", axis=0))
        values.append(helper.make_tensor_value_info("label", TensorProto.STRING, [BATCH], "the predicted class's name"))
    doc = f"raw feature rows, {model.input_dim} float32 values each"
    if len(model.input_shape) > 1:
        doc += f" (samples of {'x'.join(map(str, model.input_shape))}, flattened in C order: channels, rows, columns)"
    if scaler is not None:
        doc += "; standardised inside with the training rows' statistics"
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [BATCH, model.input_dim], doc)]
    about = (f"a jitprop model: {len(model.layers)} layers ({', '.join(layer.name for layer in model.layers)}),"
             f" {model.n_params:,} parameters; input: {doc}; outputs: {', '.join(v.name for v in values)}")  # fmt: skip
    body = helper.make_graph(nodes, "jitprop", inputs, values, initializers, doc_string=about)
    opsets = [helper.make_opsetid("", OPSET)]
    proto = helper.make_model(body, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
                              producer_name="jitprop-onnx", producer_version=__version__, doc_string=about)  # fmt: skip
    if proto.ByteSize() > 2**31 - 1:
        raise DataError(f"the model is {proto.ByteSize() / 2**30:.1f} GiB, more than one ONNX file (protobuf) holds")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise PluginError(f"the ONNX graph fails onnx's checker: {str(exc).strip().splitlines()[0]}") from exc
    return proto


def convert(model, loss=None, scaler=None, labels=None, feature_names=None, target_name=None, fill=None,
            target_scale=None, metadata=None, check=True):  # fmt: skip
    """The ONNX model of ``model`` (a ``jitprop.Sequential``), as an ``Exported``.

    ``loss`` (a name or a ``jitprop.Loss``) says what the outputs are: a
    classifier's adds probabilities and the class; None, or a regression
    loss, gives the outputs alone. ``scaler`` (a ``jitprop.Standardiser``) is
    folded in, so the graph takes raw rows. ``labels`` names the classes
    (default "0", "1", ...), ``feature_names`` the input columns;
    ``fill`` (one value per input, NaN for none) replaces missing (NaN)
    inputs before standardising, as predict fills a CSV's missing cells;
    ``target_scale`` ``(mean, std)``, per output, turns standardised
    regression outputs back into the target's units. ``metadata`` adds
    entries (strings, or JSON-able values). With ``check``, the graph runs
    in onnxruntime on random rows and must give jitprop's outputs (a
    DataError otherwise).
    """
    loss = jitprop.loss(loss) if isinstance(loss, str) else loss
    classes = loss is not None and loss.target == "class"
    if classes:
        labels = [str(v) for v in labels] if labels else [str(i) for i in range(model.output_dim)]
        if len(labels) != model.output_dim:
            raise DataError(f"{len(labels)} class names for a model with {model.output_dim} outputs")
    if feature_names and len(feature_names) != model.input_dim:
        raise DataError(f"{len(feature_names)} feature names for a model with {model.input_dim} inputs")
    regression = loss is None or loss.target == "regression"
    if target_scale is not None and not regression:
        raise DataError(f"a standardised target belongs to a regression, not to the loss {loss.name!r}")
    fill = _per(fill, model.input_dim, "missing-value fill")
    if target_scale is not None:
        target_scale = [_per(a, model.output_dim, "target standardisation") for a in target_scale]
    graph = Graph(np.float32)
    x = graph.input("input")
    if fill is not None and not np.all(np.isnan(fill)):  # NaN where a value has no fill: it stays missing
        x = graph.node("Where", [graph.node("IsNaN", [x]), graph.constant(fill, "fill"), x])
    if scaler is not None:
        mean, std = (_per(a, model.input_dim, "standardisation") for a in (scaler.mean, scaler.std))
        x = graph.node("Sub", [x, graph.constant(mean, "norm_mean")])
        x = graph.node("Div", [x, graph.constant(std, "norm_std")])  # as Standardiser: (x - mean) / std
    x = graph.shaped(x, model.input_shape)
    y = graph.flat(add_layers(graph, model, x), model.output_shape)
    if target_scale is not None:
        mean, std = target_scale
        y = graph.node("Mul", [y, graph.constant(std, "target_std")])
        y = graph.node("Add", [y, graph.constant(mean, "target_mean")])
    outputs = _outputs(graph, model, loss, y)
    proto = _proto(graph, model, outputs, labels if classes else None, scaler)

    from onnx import helper

    props = {
        "jitprop_version": jitprop.__version__,
        "task": "regression" if loss is None or loss.target == "regression" else "classification",
        "target": "values" if loss is None else loss.target,
        "loss": None if loss is None else loss.name,
        "class_names": labels if classes else None,
        "feature_names": list(feature_names) if feature_names else None,
        "target_name": target_name,
        "input_shape": list(model.input_shape),
        "normalization": "folded: (input - norm_mean) / norm_std, per feature" if scaler is not None else "none",
        "missing_values": "filled: a NaN input takes its training rows' fill value" if fill is not None else None,
        "target_standardization": "folded: output * target_std + target_mean" if target_scale is not None else None,
        "model_dtype": np.dtype(model.dtype).name,
        "layers": model.config()["layers"],
        **(metadata or {}),
    }
    helper.set_model_props(proto, {key: _text(value) for key, value in props.items() if value is not None})
    exported = Exported(proto, [p.name for p in proto.graph.output], len(proto.graph.node))
    if check:
        exported.difference = compare(exported, model, scaler, target_scale)
    return exported


def session(exported_or_bytes, threads=1):
    """An onnxruntime InferenceSession of an exported model (on the CPU)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    options.log_severity_level = 3  # errors only
    data = exported_or_bytes.to_bytes() if isinstance(exported_or_bytes, Exported) else exported_or_bytes
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def compare(exported, model, scaler=None, target_scale=None, rows=CHECK_ROWS, seed=0):
    """Run the exported model in onnxruntime and the jitprop model on the same random raw rows; return
    the largest difference of their outputs, or raise a DataError when they disagree."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((rows, model.input_dim))
    raw = (z if scaler is None else z * scaler.std + scaler.mean).astype(np.float32)  # what onnxruntime is fed
    inputs = raw.astype(np.float64)
    expected = np.asarray(model.predict(inputs if scaler is None else scaler(inputs)), dtype=np.float64)
    if target_scale is not None:
        expected = expected * target_scale[1] + target_scale[0]
    got = session(exported).run(["output"], {"input": raw})[0].astype(np.float64)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    off = np.abs(got - expected) - (CHECK_ATOL * scale + CHECK_RTOL * np.abs(expected))
    off[np.isnan(off)] = np.inf  # NaN on one side only
    off[np.isnan(got) & np.isnan(expected)] = -1.0
    if np.any(off > 0):
        row, col = np.unravel_index(int(np.argmax(off)), off.shape)
        raise DataError(f"the exported model disagrees with jitprop on random rows (row {row}, output {col}: "
                        f"onnxruntime {got[row, col]:.6g}, jitprop {expected[row, col]:.6g}); nothing was written")  # fmt: skip
    finite = np.isfinite(got) & np.isfinite(expected)
    return float(np.max(np.abs(got - expected)[finite])) if finite.any() else 0.0


def columns_of(columns):
    """(input names, fill values) of a checkpoint's ``info.columns``: a number column is one input,
    filled (when its run gave ``--fill``) with the training rows' value; a category column is one
    0/1 input per category, ``color=red``, encoded before the graph."""
    names, fill = [], []
    for c in columns:
        if c["kind"] == "category":
            names += [f"{c['name']}={v}" for v in c["categories"]]
            fill += [np.nan] * len(c["categories"])
        else:
            names.append(c["name"])
            fill.append(np.nan if c.get("fill") is None else float(c["fill"]))
    return names, np.array(fill)


def from_checkpoint(path, check=True):
    """``(model, exported)``: the ONNX model of a checkpoint's model, as ``jitprop predict`` uses it: its
    standardisation (and a CSV's missing-value fill, a regression's target standardisation), its
    loss's probabilities, its class and feature names (every problem a one-line jitprop error)."""
    saved = jitprop.checkpoint.load(path)
    model = saved.build_model()
    loss = jitprop.loss(**saved.meta["loss"])
    info = saved.info
    names, fill = info.get("feature_names"), None
    extra = {"checkpoint": Path(path).name, "epochs_trained": saved.meta.get("trainer", {}).get("epoch")}
    if info.get("columns"):  # a CSV's columns, text ones one-hot encoded (jitprop 0.3)
        names, fill = columns_of(info["columns"])
        extra["columns"] = info["columns"]
    target = saved.info_array("target_mean"), saved.info_array("target_std")
    return model, convert(model, loss, jitprop.Standardiser.saved(saved), labels=info.get("labels"),
                          feature_names=names, target_name=info.get("target_name"), fill=fill,
                          target_scale=None if target[0] is None else target, metadata=extra, check=check)  # fmt: skip


def default_output(checkpoint):
    """Where ``jitprop export CHECKPOINT`` writes: beside it, with the suffix .onnx."""
    return str(Path(checkpoint).with_suffix(".onnx"))


def check_output(output, checkpoint):
    """Refuse, in one line, an output that is the checkpoint itself or cannot be written."""
    if os.path.exists(output) and os.path.exists(checkpoint) and os.path.samefile(output, checkpoint):
        raise DataError(f"{output} is the checkpoint itself; give another output file (-o model.onnx)")
    check_writable(output, "ONNX file")


def size_text(n):
    return f"{n:,} bytes" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 2**20 else f"{n / 2**20:.1f} MiB"

