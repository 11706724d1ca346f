"""Where each layer's arrays lie in the flat buffers the compiled step reads.

The generated step is one loop over the layers, whatever their number
(codegen.py): it cuts each layer's arrays out of a handful of flat buffers
with this table, one row per layer (and a last row for the model's
output), an int64 column per name below. So the step's code, and the time
to compile it, does not grow with depth.
"""

import numpy as np
from numba import njit, types
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

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



def _view(ndim):
    """An intrinsic ``(buffer, start, a, b)`` that views the flat, C-contiguous ``buffer`` from
    element ``start``: as ``a`` values (``ndim`` 1, ``b`` unused) or ``a`` rows of ``b`` (2)."""

    @intrinsic
    def view(typingctx, buffer, start, a, b):
        if not (isinstance(buffer, types.Array) and buffer.ndim == 1 and buffer.layout == "C"):
            return None
        sig = buffer.copy(ndim=ndim, layout="C")(buffer, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            buf, start, a, b = args
            src = make_array(signature.args[0])(context, builder, buf)
            out = make_array(signature.return_type)(context, builder)
            size = src.itemsize
            shape, strides = ([a], [size]) if ndim == 1 else ([a, b], [builder.mul(b, size), size])
            # No meminfo: the view lives only during the step's call, which holds the buffer itself,
            # so it needs no reference counting (two atomic operations per view saved).
            populate_array(out, data=builder.gep(src.data, [start]), shape=shape, strides=strides, itemsize=size,
                           meminfo=None)  # fmt: skip
            return impl_ret_borrowed(context, builder, signature.return_type, out._getvalue())

        return sig, codegen

    return view


# How the compiled step cuts each layer's arrays out of the flat buffers. Intrinsics because
# ``buffer[a:b].reshape(...)`` costs 25 ns a view (a call into Numba's reshape helper), about 10
# times these, and a 41-layer step cuts 500 views a batch. The table promises that every block
# fits its buffer (``table`` checks it when it is made): nothing is checked in the step.
_rows = _view(2)
_part = _view(1)


@njit(cache=True, inline="always")
def rows_of(buffer, start, rows, width):
    """The first ``rows`` rows of the (capacity, width) block of ``buffer`` that starts at ``start``."""
    return _rows(buffer, start, rows, width)


@njit(cache=True, inline="always")
def part_of(buffer, start, stop):
    """``buffer[start:stop]``, for 0 <= start <= stop <= its size."""
    return _part(buffer, start, stop - start, 0)
