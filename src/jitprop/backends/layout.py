"""Where each layer's arrays lie in the flat buffers the compiled step reads.

The generated step is one loop over the layers, whatever their number
(codegen.py): it cuts each layer's arrays out of a handful of flat buffers
with this table, one row per layer (and a last row for the model's
output), an int64 column per name below (``jitprop.kernels.rows_of`` and
``part_of`` cut the views). So the step's code, and the time to compile
it, does not grow with depth.
"""

import numpy as np

from .. import kernels

#: Which of the program's kernel pairs the layer runs (codegen.kinds).
KIND = 0
#: The layer's options: ``hypers[HYPER:HYPER_END]`` of the model's flat ``hyper_buffer``.
HYPER, HYPER_END = 1, 2
#: Its running state and scratch memory: slices of ``model.state`` and ``model.scratch``.
STATE, STATE_END = 3, 4
SCRATCH, SCRATCH_END = 5, 6
#: Its cache: ``rows * CACHE_WIDTH`` values from ``CACHE`` in the workspace's cache buffer.
CACHE, CACHE_WIDTH = 7, 8
#: Its input (row L: the model's output), ``rows * WIDTH`` values from ``ACT``; its gradient from ``DELTA``.
ACT, WIDTH, DELTA = 9, 10, 11
COLUMNS = 12
NAMES = ("KIND", "HYPER", "HYPER_END", "STATE", "STATE_END", "SCRATCH", "SCRATCH_END", "CACHE", "CACHE_WIDTH", "ACT",
         "WIDTH", "DELTA")  # fmt: skip


def span(buffer, view):
    """``(start, end)`` of ``view`` inside the 1-D ``buffer`` it is a contiguous part of."""
    if view.size == 0:
        return 0, 0
    start = (view.__array_interface__["data"][0] - buffer.__array_interface__["data"][0]) // buffer.itemsize
    if not 0 <= start <= buffer.size - view.size:  # the step's views are unchecked: this is their check
        raise ValueError("a layer's array lies outside its flat buffer")
    return start, start + view.size


def table(model, ws, kinds):
    """The (n_layers + 1, COLUMNS) table of ``model``'s layers in workspace ``ws``; ``kinds[i]``
    is layer i's kernel pair."""
    t = np.zeros((len(model.layers) + 1, COLUMNS), np.int64)
    for i, layer in enumerate(model.layers):
        t[i, KIND] = kinds[i]
        t[i, HYPER : HYPER_END + 1] = span(model.hyper_buffer, model.hypers[i])
        t[i, STATE : STATE_END + 1] = span(model.state, model.layer_state[i])
        t[i, SCRATCH : SCRATCH_END + 1] = span(model.scratch, model.layer_scratch[i])
        t[i, CACHE] = span(ws.cache_buffer, ws.caches[i])[0]
        t[i, CACHE_WIDTH] = ws.caches[i].shape[1]
    for i, act in enumerate(ws.acts):
        t[i, ACT] = span(ws.act_buffer, act)[0]
        t[i, WIDTH] = act.shape[1]
        if ws.deltas is not None and i > 0:  # the input needs no gradient
            t[i, DELTA] = span(ws.delta_buffer, ws.deltas[i])[0]
    return t


def activations(ws):
    """The (n_layers + 1, 3) ``where`` table of the workspace's activations (``jitprop.kernels.activation``):
    each one's start in ``ws.act_buffer`` and width, its rows left for the step to fill."""
    where = np.zeros((len(ws.acts), 3), np.int64)
    for i, act in enumerate(ws.acts):
        where[i, kernels.ACT_START] = span(ws.act_buffer, act)[0]
        where[i, kernels.ACT_WIDTH] = act.shape[1]
    return where
