"""The graph a model becomes, and how each layer gets into it.

A layer's conversion is a function ``convert(graph, layer, x, weights) -> y``
(or a method ``to_onnx(self, graph, x, weights)`` on the layer class): ``x``
names the layer's input, a tensor of shape ``(batch, *layer.in_shape)``, and
it returns the name of its output, of shape ``(batch, *layer.out_shape)``. So
flat layers see ``(batch, features)`` and image layers ``(batch, channels,
height, width)``, the NCHW order jitprop's kernels index. ``weights`` holds
the layer's parameters and running state by name (``"weight"``,
``"running_mean"``, ...) in torch's shapes.

Nothing here imports onnx: a graph is a list of operators and a dict of
arrays until ``export.build`` turns it into an ``onnx.ModelProto``, so a
plugin can carry a ``to_onnx`` method without depending on onnx.
"""

import numpy as np

import jitprop
from jitprop.errors import ConfigError, JitpropError, PluginError

#: The ONNX operator set every graph imports: opset 17 (2022), which onnxruntime 1.11 and later,
#: TensorRT 8.6 and OpenVINO 2022.3 run; every built-in layer maps onto its operators.
OPSET = 17


class Graph:
    """ONNX operators in the order they run, and the constant tensors they read.

    ``node`` adds an operator and ``constant`` a tensor of fixed numbers; both
    return the name of the value they make. Floating-point constants take the
    graph's ``dtype`` (float32): a float64 model's weights are rounded to it.
    """

    def __init__(self, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        self.nodes = []  # (op_type, inputs, outputs, attributes)
        self.constants = {}  # name -> array
        self.values = set()  # every name a node or constant made, and the graph's inputs
        self.prefix = ""  # "3." while layer 3 is converted: its values are named "3.Gemm", "3.weight"

    def _unique(self, name):
        if name not in self.values:
            return name
        k = 1
        while f"{name}_{k}" in self.values:
            k += 1
        return f"{name}_{k}"

    def input(self, name):
        """Declare a graph input (the model's rows)."""
        self.values.add(name)
        return name

    def node(self, op_type, inputs, **attributes):
        """Add the ONNX operator ``op_type`` (default domain, opset ``OPSET``) on the values ``inputs``,
        with its attributes as ONNX names them (``transB=1``, ``pads=[1, 1, 1, 1]``); return the name of
        its first output (the only one every built-in conversion uses)."""
        unknown = [v for v in inputs if v and v not in self.values]
        if unknown:
            raise PluginError(f"ONNX operator {op_type} reads {unknown[0]!r}, which no earlier operator made")
        output = self._unique(f"{self.prefix}{op_type}")
        self.values.add(output)
        self.nodes.append((op_type, list(inputs), [output], attributes))
        return output

    def rename(self, value, name):
        """``value`` under the graph-output name ``name`` (an Identity operator)."""
        if name in self.values:
            raise PluginError(f"the name {name!r} is already taken in the graph")
        self.values.add(name)
        self.nodes.append(("Identity", [value], [name], {}))
        return name

    def constant(self, values, name=None):
        """A tensor of fixed values, stored in the file: floating-point numbers in the graph's dtype,
        integers as int64. ``name`` (say ``"weight"``) is prefixed with the layer's index, as in
        jitprop's ``state_dict``: ``"3.weight"``."""
        array = np.asarray(values)
        if array.dtype.kind not in "biuf":
            raise PluginError(f"an ONNX constant must hold numbers, got {array.dtype}")
        array = np.ascontiguousarray(array, dtype=self.dtype if array.dtype.kind == "f" else np.int64)
        key = self._unique(f"{self.prefix}{name or 'constant'}")
        self.values.add(key)
        self.constants[key] = array
        return key

    def flat(self, x, shape):
        """``x``, of shape (batch, *shape), as flat rows (batch, prod(shape)), in C (NCHW) order."""
        return x if len(shape) == 1 else self.node("Flatten", [x], axis=1)

    def shaped(self, x, shape):
        """Flat rows ``x`` (batch, prod(shape)) as (batch, *shape); the batch stays dynamic."""
        if len(shape) == 1:
            return x
        return self.node("Reshape", [x, self.constant(np.array([0, *shape]), "shape")])  # 0: keep the batch size


#: layer name -> (conversion, owner): see ``converter``.
CONVERTERS = {}


def converter(name, owner=None):
    """Register a function as the ONNX conversion of the layer registered as ``name``::

        @jitprop_onnx.converter("swish")
        def swish(graph, layer, x, weights):
            return graph.node("Mul", [x, graph.node("Sigmoid", [x])])

    ``owner`` is the module (or the start of its dotted name) of the layer
    class the conversion was written for: a different class registered
    under the same name is then refused, not converted wrongly. A layer's
    own ``to_onnx`` method comes before any registered conversion.
    """

    def register(function):
        CONVERTERS[name] = (function, owner)
        return function

    return register


def _plugin_of(layer):
    """The plugin that registered the layer's class, for messages."""
    try:
        entry = jitprop.registry.lookup("layer", layer.name)
    except JitpropError:
        entry = None
    if entry is not None and entry.cls is type(layer):
        return entry.plugin
    return type(layer).__module__


def conversion_of(layer, index):
    """``convert(graph, x, weights)`` for ``layer`` (layer ``index`` of the model), or a one-line ConfigError."""
    method = getattr(layer, "to_onnx", None)
    if callable(method):
        return method
    module = type(layer).__module__
    function, owner = CONVERTERS.get(layer.name, (None, None))
    if function is not None and (owner is None or module == owner or module.startswith(owner + ".")):
        return lambda graph, x, weights: function(graph, layer, x, weights)
    where = f"layer {index} ({layer.name}, from plugin {_plugin_of(layer)!r})"
    if function is not None:
        raise ConfigError(f"{where} is a {module}.{type(layer).__name__}, but jitprop-onnx converts the "
                          f"{layer.name!r} of {owner}; give the class a to_onnx(graph, x, weights) method")  # fmt: skip
    raise ConfigError(
        f"{where} has no ONNX conversion; its plugin can add one: a to_onnx(graph, x, weights) method on the"
        f" layer class, or a function registered with @jitprop_onnx.converter({layer.name!r})"
        " (see the jitprop-onnx README)"
    )


def add_layers(graph, model, x):
    """Every layer of ``model`` (a ``jitprop.Sequential``) into ``graph``, from the value ``x`` of shape
    (batch, *model.input_shape); return the last layer's output."""
    weights = {**model.parameters(), **model.buffers()}
    conversions = [conversion_of(layer, i) for i, layer in enumerate(model.layers)]  # all known before any work
    for i, (layer, convert) in enumerate(zip(model.layers, conversions)):
        own = {name: np.array(weights[f"{i}.{name}"]) for name in (*layer.param_names, *layer.state_names)}
        graph.prefix = f"{i}."
        try:
            y = convert(graph, x, own)
        except JitpropError as exc:
            raise type(exc)(f"layer {i} ({layer.name}): {exc}") from exc
        except Exception as exc:  # a conversion's bug: say whose, in one line
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise PluginError(f"layer {i} ({layer.name}, from plugin {_plugin_of(layer)!r}): its ONNX conversion "
                              f"failed: {reason}") from exc  # fmt: skip
        finally:
            graph.prefix = ""
        if not (isinstance(y, str) and y in graph.values):
            raise PluginError(f"layer {i} ({layer.name}): its ONNX conversion returned {y!r}, not a value of the graph")
        x = y
    return x
