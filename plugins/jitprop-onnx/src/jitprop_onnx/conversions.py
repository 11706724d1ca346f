"""The ONNX conversion of every layer jitprop ships, and of jitprop-batchnorm's two.

Each follows its kernel's arithmetic in inference mode (what ``predict``
runs): the formulas are in ``jitprop/default_plugins/`` and
``jitprop_batchnorm/kernels.py``. Ordered as ``jitprop list layers`` groups
them: dense and the reshaping layers, activations, image layers, batch norm.
"""

import math

from .graph import converter

BUILT_IN = "jitprop.default_plugins"
BATCHNORM = "jitprop_batchnorm"


# -- dense, dropout, flatten (default_plugins/layers.py) --------------------


@converter("dense", owner=BUILT_IN)
def dense(graph, layer, x, weights):
    """x W^T + b with W (units, in) as torch keeps it: Gemm with transB; an image-shaped input is
    flattened first, as the kernel reads its rows."""
    x = graph.flat(x, layer.in_shape)
    return graph.node("Gemm", [x, graph.constant(weights["weight"], "weight"), graph.constant(weights["bias"], "bias")],
                      transB=1)  # fmt: skip


@converter("dropout", owner=BUILT_IN)
def dropout(graph, layer, x, weights):
    """The identity: with training off, the kernel copies its input (the 1/(1-rate) scaling happens
    while training, inverted dropout)."""
    return x


@converter("flatten", owner=BUILT_IN)
def flatten(graph, layer, x, weights):
    return graph.flat(x, layer.in_shape)


# -- activations (default_plugins/activations.py) ---------------------------


@converter("relu", owner=BUILT_IN)
def relu(graph, layer, x, weights):
    return graph.node("Relu", [x])


@converter("leaky_relu", owner=BUILT_IN)
def leaky_relu(graph, layer, x, weights):
    """x for x > 0, negative_slope * x otherwise: LeakyRelu's alpha (any slope, as the kernel's)."""
    return graph.node("LeakyRelu", [x], alpha=float(layer.negative_slope))


@converter("tanh", owner=BUILT_IN)
def tanh(graph, layer, x, weights):
    return graph.node("Tanh", [x])


@converter("sigmoid", owner=BUILT_IN)
def sigmoid(graph, layer, x, weights):
    return graph.node("Sigmoid", [x])


@converter("gelu", owner=BUILT_IN)
def gelu(graph, layer, x, weights):
    """The exact form, x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), with Erf (opset 17 has no Gelu operator;
    20 does). The kernel writes Phi as 0.5 erfc(-x / sqrt 2), which keeps the far negative tail; in
    float32 1 + erf() reaches 0 below about -5.5, where GELU is under 2e-7 in size anyway: against the
    kernel, onnxruntime is within 5e-7 everywhere on [-12, 12] (measured on 200,001 points)."""
    erf = graph.node("Erf", [graph.node("Mul", [x, graph.constant(1.0 / math.sqrt(2.0), "inv_sqrt2")])])
    half_x = graph.node("Mul", [x, graph.constant(0.5, "half")])
    return graph.node("Mul", [half_x, graph.node("Add", [erf, graph.constant(1.0, "one")])])


@converter("softmax", owner=BUILT_IN)
def softmax(graph, layer, x, weights):
    """Softmax over each sample's values, all of them when the sample is an image (the kernel's rows)."""
    flat = graph.node("Softmax", [graph.flat(x, layer.in_shape)], axis=1)
    return graph.shaped(flat, layer.out_shape)


# -- image layers (default_plugins/convolution.py, pooling.py) --------------


def _window(layer):
    """kernel_shape, strides and pads (begin h, begin w, end h, end w: jitprop pads both sides alike)."""
    ph, pw = layer.padding
    return {"kernel_shape": list(layer.kernel_size), "strides": list(layer.stride), "pads": [ph, pw, ph, pw]}


@converter("conv2d", owner=BUILT_IN)
def conv2d(graph, layer, x, weights):
    """Conv over NCHW with the (out, in, kh, kw) weight, zero padding, torch's floor rule for the size."""
    inputs = [x, graph.constant(weights["weight"], "weight")]
    if layer.bias:
        inputs.append(graph.constant(weights["bias"], "bias"))
    return graph.node("Conv", inputs, **_window(layer))


@converter("max_pool2d", owner=BUILT_IN)
def max_pool2d(graph, layer, x, weights):
    """MaxPool: padding never wins, as in the kernel (the window is clipped to the input)."""
    return graph.node("MaxPool", [x], **_window(layer))


@converter("avg_pool2d", owner=BUILT_IN)
def avg_pool2d(graph, layer, x, weights):
    """AveragePool dividing by the whole window, padding counted as zeros (count_include_pad, as torch's default)."""
    return graph.node("AveragePool", [x], count_include_pad=1, **_window(layer))


@converter("global_avg_pool2d", owner=BUILT_IN)
def global_avg_pool2d(graph, layer, x, weights):
    """Each channel's mean, (C, H, W) -> (C,): GlobalAveragePool, then its (C, 1, 1) flattened."""
    return graph.node("Flatten", [graph.node("GlobalAveragePool", [x])], axis=1)


# -- batch norm (plugins/jitprop-batchnorm) ---------------------------------


def _batch_normalization(graph, x, weights, eps):
    """weight (x - running_mean) / sqrt(running_var + eps) + bias per channel (axis 1): the running
    statistics, as the kernels use them with training off."""
    names = [graph.constant(weights[k], k) for k in ("weight", "bias", "running_mean", "running_var")]
    return graph.node("BatchNormalization", [x, *names], epsilon=float(eps))


@converter("batch_norm", owner=BATCHNORM)
def batch_norm(graph, layer, x, weights):
    """Every value of a sample normalised apart (torch's BatchNorm1d on flat rows; an image-shaped input
    has one statistic per pixel), so on the flat rows, then shaped back."""
    y = _batch_normalization(graph, graph.flat(x, layer.in_shape), weights, layer.eps)
    return graph.shaped(y, layer.out_shape)


@converter("batch_norm2d", owner=BATCHNORM)
def batch_norm2d(graph, layer, x, weights):
    """One statistic per channel of NCHW samples (torch's BatchNorm2d)."""
    return _batch_normalization(graph, x, weights, layer.eps)
