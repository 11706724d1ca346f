"""The compiled fast path: one njit function per set of kernels that trains a run of batches.

Numba cannot loop over a list of different functions, but it can call
other njit functions by name. So for the kinds of layer in a model, its
loss and its optimizer, jitprop writes the source of ``train_chunk``
(gather a batch, each layer's forward kernel, the loss, each backward
kernel last to first, the optimizer: for batches ``first..last``) and of
``evaluate``, naming every plugin's kernels by their import path, and
compiles it once. The layers run in a loop that calls each one's kernel
pair by the number its row of ``layout`` gives (layout.py), on arrays cut
from flat buffers: the source names each distinct kernel once, so it and
its compile time stay the same at any depth (unrolled, a 50-layer step
took two minutes to compile, 200 layers over thirteen), and models built
of the same kinds of layer share it. The source goes to a cache
directory under a name keyed by its text, the files that define the
kernels and the versions involved, so Numba's on-disk cache serves the
next process in milliseconds.

A kernel that is not an importable ``@njit`` function (a plain Python
function, one defined inside a function) cannot be named from generated
code; such a model trains on the Python loop, which calls the same kernels.
"""

import hashlib
import importlib
import importlib.util
import os
import sys
import threading

import numba
from numba.core.registry import CPUDispatcher

from ..components import kernel
from ..contracts.losses import ACCURACY
from ..kernels import all_finite
from ..runtime import caches, threads
from ..version import __version__
from . import layout

TEMPLATE_VERSION = 13
_programs = {}
_lock = threading.Lock()


def importable(fn):
    """How generated code names an njit kernel: ``(module, qualname)``, or ``(module, qualname,
    options, index)`` for one a ``kernel_factory`` built; None if it can't be named."""
    if not isinstance(fn, CPUDispatcher):
        return None
    made = getattr(fn, "jitprop_factory", None)
    module, qualname = made[:2] if made else (fn.py_func.__module__, fn.py_func.__qualname__)
    if module == "__main__" or "<locals>" in qualname or module not in sys.modules:
        return None
    obj = sys.modules[module]
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if made:  # the factory must build this very kernel again from the same options
        options, index = made[2:]
        built = obj(*options) if callable(obj) else None
        return made if (built if index is None else built[index]) is fn else None
    return (module, qualname) if obj is fn else None


def _stamp(fn):
    try:
        st = os.stat(fn.py_func.__code__.co_filename)
        return f"{st.st_mtime_ns}:{st.st_size}"
    except OSError:
        return "?"


class Program:
    """The compiled ``train_chunk`` and ``evaluate`` of one set of kernels."""

    def __init__(self, module, kinds):
        self.train_chunk = module.train_chunk
        self.evaluate = module.evaluate
        self.path = module.__file__
        #: ``layer_kinds``' entries, as text, in the order of the layout's ``KIND`` numbers.
        self.kinds = kinds
        #: Batches per call of ``train_chunk`` for about ``CHUNK_SECONDS``, learnt as it runs, per model
        #: shape and batch size (models of every size share a program).
        self.spans = {}

    def kind_numbers(self, model):
        """Each layer's ``KIND``: the number of its kernel pair in this program."""
        number = {kind: k for k, kind in enumerate(self.kinds)}
        return [number[repr(kind)] for kind in layer_kinds(model)]


def program(model, loss, optimizer, transforms=(), distributed=False):
    """The compiled program for this model, loss, optimizer and gradient transforms, or None
    when a kernel can't be compiled in. ``distributed``: each rank trains its part of every
    batch and the gradients are summed over the ranks (jitprop.distributed)."""
    with _lock:  # a sweep's threads ask for programs at once: each is written and loaded once
        return _program(model, loss, optimizer, transforms, bool(distributed))


def layer_kinds(model):
    """Per layer, how generated code names its kernel pair: ``(forward ref, backward ref, takes
    state, takes scratch)``, refs as ``importable`` gives them (None where one can't be named)."""
    return [(importable(kernel(layer, "forward_kernel")), importable(kernel(layer, "backward_kernel")), stateful, scratch)
            for layer, stateful, scratch in zip(model.layers, model.stateful, model.has_scratch)]  # fmt: skip


def _program(model, loss, optimizer, transforms, distributed):
    per_layer = layer_kinds(model)
    accuracy = ACCURACY.get(loss.target)
    fns = {
        "loss": [kernel(loss, "kernel")],
        "opt": [kernel(optimizer, "kernel")],
        "acc": [accuracy] if accuracy is not None else [],
        "tf": [kernel(tr, "kernel") for tr in transforms],
    }
    refs = {k: [importable(f) for f in v] for k, v in fns.items()}
    if any(None in kind[:2] for kind in per_layer) or any(r is None for v in refs.values() for r in v):
        return None
    # Each distinct pair once, in an order of their own: models of the same kinds of layer, at any
    # depth and in any order, share one program.
    kinds = sorted({repr(kind): kind for kind in per_layer}.items())
    pairs = [kind for _, kind in kinds]
    layer_fns = [kernel(layer, name) for layer in model.layers for name in ("forward_kernel", "backward_kernel")]
    named = list(zip(layer_fns, [ref[0] for kind in per_layer for ref in kind[:2]]))
    named += [(f, r[0]) for k in fns for f, r in zip(fns[k], refs[k])]
    stamps = sorted({f"{module}={_stamp(f)}" for f, module in named})
    stamps.append(f"jitprop.kernels={_stamp(all_finite)}")  # the helpers every program calls
    sees = tuple(bool(tr.sees_activations) for tr in transforms)
    text = source(pairs, refs, loss.target == "class", any(tr.stat_names for tr in transforms), sees, distributed)
    key_text = repr((TEMPLATE_VERSION, __version__, numba.__version__, text, stamps))
    key = hashlib.sha256(key_text.encode()).hexdigest()[:20]
    if key in _programs:
        return _programs[key]
    directory = caches.generated_dir()
    if directory is None:
        return None
    path = directory / f"jitprop_program_{key}.py"
    if not path.exists():
        # Written once and never touched again: Numba keys its cache on the file's timestamp.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    name = f"jitprop_program_{key}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if any(threads.parallel(f) for f in layer_fns):
        threads.start()  # before the cached program's first call: it would not start the pool itself
    _programs[key] = prog = Program(module, [key for key, _ in kinds])
    return prog


def _import(local, ref):
    """Lines that bind the kernel ``ref`` names (``importable``'s form) to ``local``."""
    module, qualname = ref[:2]
    top, _, rest = qualname.partition(".")
    if rest:  # kept on a class: import the class, then reach the kernel
        lines = [f"from {module} import {top} as _{local}_owner", f"{local} = _{local}_owner.{rest}"]
    else:
        lines = [f"from {module} import {top} as {local}"]
    if len(ref) == 4:  # built by a kernel factory: build it again from the same options
        options, index = ref[2:]
        lines.append(f"{local} = {local}(*{options!r}){'' if index is None else f'[{index}]'}")
    return lines


def _views(rows, training=True, x=True):
    """Lines that cut layer ``i``'s arrays out of the flat buffers, for ``rows`` rows (``x``: its
    input too; scoring carries it over from the layer before)."""
    lines = [f"x = rows_of(acts, layout[i, ACT], {rows}, layout[i, WIDTH])"] if x else []
    lines += [
        f"out = rows_of(acts, layout[i + 1, ACT], {rows}, layout[i + 1, WIDTH])",
        f"cache = rows_of(caches, layout[i, CACHE], {rows}, layout[i, CACHE_WIDTH])",
        "p = part_of(params, offsets[i], offsets[i + 1] - offsets[i], 0)",
        "h = part_of(hypers, layout[i, HYPER], layout[i, HYPER_END] - layout[i, HYPER], 0)",
        "st = part_of(state, layout[i, STATE], layout[i, STATE_END] - layout[i, STATE], 0)",
        "w = part_of(scratch, layout[i, SCRATCH], layout[i, SCRATCH_END] - layout[i, SCRATCH], 0)",
    ]
    if training:
        lines += [
            "g = part_of(grads, offsets[i], offsets[i + 1] - offsets[i], 0)",
            f"grad_out = rows_of(deltas, layout[i + 1, DELTA], {rows}, layout[i + 1, WIDTH])",
            f"grad_in = rows_of(deltas, layout[i, DELTA], {rows} if i > 0 else 0, layout[i, WIDTH])",  # the input's: none
        ]
    return lines


def _dispatch(pairs, which, args):
    """An if-chain calling the kernel of the layer's kind: ``which`` 0 forward, 1 backward."""
    lines = ["k = layout[i, KIND]"]
    for k, (_, _, stateful, scratch) in enumerate(pairs):
        last = (", st" if stateful else "") + (", w" if scratch else "")
        lines += [f"{'if' if k == 0 else 'elif'} k == {k}:", f"    {'FB'[which]}{k}({args}{last})"]
    return lines


def _indent(lines, depth):
    return [" " * (4 * depth) + line for line in lines]


def source(pairs, refs, class_labels, has_stats=False, sees=(), distributed=False):
    """The Python source of the generated module. ``pairs``: the distinct ``(forward ref, backward
    ref, takes state, takes scratch)`` of the model's layers (a layer's ``KIND`` indexes them);
    ``refs``: the loss, optimizer, accuracy and transform kernels; ``class_labels``: targets are
    1-D labels; ``has_stats``: some gradient transform keeps statistics; ``sees``: per transform,
    whether it also takes its memory and the activations (the flat buffer, and ``where``, their
    table: ``jitprop.kernels.activation``); ``distributed``: the rank's part of each batch, its
    gradient summed over the ranks."""
    lines = [
        "# Generated by jitprop.backends.codegen for one set of kernels. Do not edit: delete it to rebuild.",
        "import math",
        "import numpy as np",
        "from numba import njit",
        "from jitprop.kernels import ACT_ROWS, all_finite, gather_rows, part_of, rows_of, seed_mix",
        f"from jitprop.kernels import {'gather_items' if class_labels else 'gather_rows'} as gather_y",
    ]
    if distributed:
        lines += ["from jitprop.kernels import row_seed, scale", "from jitprop.distributed.binding import allreduce_sum"]
    # The table's columns as constants of this file, so its compiled code depends on nothing else.
    lines += [f"{name} = {getattr(layout, name)}" for name in layout.NAMES]
    for k, (fwd, bwd, _, _) in enumerate(pairs):
        lines += _import(f"F{k}", fwd) + _import(f"B{k}", bwd)
    for kind, local in (("loss", "LOSS"), ("opt", "OPT"), ("acc", "ACC")):
        for ref in refs[kind]:
            lines += _import(local, ref)
    for k, ref in enumerate(refs["tf"]):
        lines += _import(f"T{k}", ref)
    has_acc = bool(refs["acc"])
    tf_args = "".join(f", th{k}, ts{k}" + (f", tm{k}" if sees[k] else "") for k in range(len(refs["tf"])))
    tf_args += ", where" if any(sees) else ""
    # This rank's rows of the batch: all of them, or its part (from row ``lo``, ``part`` rows).
    first_row, rows = ("lo", "part") if distributed else ("start", "rows")
    mpi_args = ", rank, size, reduce_buf, mpi_fn, mpi_place, mpi_type, mpi_op, mpi_comm" if distributed else ""
    # Distributed, a layer's draws (dropout's mask) are those of the whole batch's rows.
    seed = "row_seed(seed_mix(s, i), lo - start, x.shape[1])" if distributed else "seed_mix(s, i)"

    body = [
        "",
        "",
        "@njit(cache=True, nogil=True)",  # sweeps train several models at once, in threads
        "def train_chunk(X, y, index, first, last, bs, params, grads, opt_state, lr, opt_h, step, seed, loss_h,",
        "                batch_losses, ybuf, state, state_before, offsets, stats, stats_before, loss_sum, correct, seen,",
        f"                hypers, scratch, layout, acts, caches, deltas{tf_args}{mpi_args}):",
        "    # loss_sum, correct, seen carry the epoch's running totals, so the sums don't depend on chunking.",
        "    # Returns (..., diverged): a non-finite loss or gradient stops before that batch's update.",
        "    L = layout.shape[0] - 1",
        "    n = X.shape[0]",
        "    done = first",
        "    for b in range(first, last):",
        "        start = b * bs",
        "        rows = min(bs, n - start)",
    ]
    if distributed:  # contiguous parts that differ by at most one row
        body += ["        lo = start + rows * rank // size", "        part = start + rows * (rank + 1) // size - lo"]
    body += [
        f"        gather_rows(X, index, {first_row}, rows_of(acts, layout[0, ACT], {rows}, layout[0, WIDTH]))",
        f"        yb = ybuf[:{rows}]",
        f"        gather_y(y, index, {first_row}, yb)",
        "        s = seed_mix(seed, step)",
    ]
    stateful = any(pair[2] for pair in pairs)
    if stateful:  # running state as it was before this batch, should the batch diverge
        body += ["        for i in range(state.shape[0]):", "            state_before[i] = state[i]"]
    if has_stats:  # and the transforms' statistics
        body += ["        for i in range(stats.shape[0]):", "            stats_before[i] = stats[i]"]
    passes = ["for i in range(L):"]  # forward, loss, backward: under ``if part > 0`` when distributed
    passes += _indent(_views(rows, training=False) + [f"sd = {seed}"], 1)
    passes += _indent(_dispatch(pairs, 0, "p, h, x, out, cache, True, sd"), 1)
    passes += [
        f"out = rows_of(acts, layout[L, ACT], {rows}, layout[L, WIDTH])",
        f"grad_out = rows_of(deltas, layout[L, DELTA], {rows}, layout[L, WIDTH])",
        "value = LOSS(out, yb, grad_out, loss_h)",
        "hits = ACC(out, yb)" if has_acc else "hits = 0",
    ]
    if distributed:  # backpropagation is linear in dL/d(output): scaling it scales every gradient
        passes.append("scale(grad_out, part / rows)")
    passes += ["for i in range(L - 1, -1, -1):"]
    passes += _indent(_views(rows) + _dispatch(pairs, 1, "p, h, x, out, cache, grad_out, grad_in, g"), 1)
    if distributed:
        body.append("        if part > 0:")
        body += _indent(passes, 3)
        body += [
            "        else:  # a batch smaller than the ranks: this one adds nothing",
            "            value = 0.0",
            "            hits = 0",
            "            for i in range(grads.shape[0]):",
            "                grads[i] = 0.0",
            "        # The gradient slot's first work: this rank's mean, weighted by its share of the rows (the",
            "        # loss gradient was), summed over the ranks in place, the batch's loss and hits with it.",
            "        P = grads.shape[0]",
            "        reduce_buf[P] = value * part / rows",
            "        reduce_buf[P + 1] = hits",
            "        err = allreduce_sum(mpi_fn, mpi_place, reduce_buf, mpi_type, mpi_op, mpi_comm)",
            "        if err != 0:",
            "            return loss_sum, correct, seen, step, done, False, err",
            "        value = reduce_buf[P]",
            "        hits = reduce_buf[P + 1]",
        ]
    else:
        body += _indent(passes, 2)
    if any(sees):  # the activations' table holds their start and width; this batch's rows, here
        body += ["        for i in range(where.shape[0]):", f"            where[i, ACT_ROWS] = {rows}"]
    for k in range(len(refs["tf"])):  # the gradient slot: between backward and the divergence check
        seen = f", tm{k}, acts, where" if sees[k] else ""
        body.append(f"        T{k}(grads, params, offsets, lr, th{k}, ts{k}{seen})")
    tail = ", 0" if distributed else ""  # and the MPI error code
    body += [
        "        if not (math.isfinite(value) and all_finite(grads)):",
        "            batch_losses[b] = value",
    ]
    if stateful:
        body += ["            for i in range(state.shape[0]):", "                state[i] = state_before[i]"]
    if has_stats:
        body += ["            for i in range(stats.shape[0]):", "                stats[i] = stats_before[i]"]
    body += [
        f"            return loss_sum, correct, seen, step, done, True{tail}",
        "        step += 1",
        "        OPT(params, grads, opt_state, lr, opt_h, step)",
        "        batch_losses[b] = value",
        "        correct += hits",
        "        loss_sum += value * rows",
        "        seen += rows",
        "        done = b + 1",
        f"    return loss_sum, correct, seen, step, done, False{tail}",
        "",
        "",
        "@njit(cache=True, nogil=True)",
        "def evaluate(X, y, bs, loss_h, loss_grad, params, offsets, hypers, state, scratch, layout, acts, caches):",
        "    L = layout.shape[0] - 1",
        "    n = X.shape[0]",
        "    total = 0.0",
        "    correct = 0.0",
        "    for start in range(0, n, bs):",
        "        stop = min(start + bs, n)",
        "        rows = stop - start",
        "        yb = y[start:stop]",
        "        x = X[start:stop]",
        "        for i in range(L):",
    ]
    forward = _views("rows", training=False, x=False)
    body += _indent(forward + _dispatch(pairs, 0, "p, h, x, out, cache, False, np.uint64(0)") + ["x = out"], 3)
    body.append("        total += LOSS(x, yb, loss_grad[:rows], loss_h) * rows")
    if has_acc:
        body.append("        correct += ACC(x, yb)")
    body.append("    return total, correct")
    return "\n".join(lines + body) + "\n"
