"""The compiled fast path: one njit function per model structure that trains a run of batches.

Numba cannot loop over a list of different functions, but it can call
other njit functions by name. So for a given stack of layers, loss and
optimizer, jitprop writes the source of ``train_chunk`` (gather a batch,
each layer's forward kernel, the loss, each backward kernel last to first,
the optimizer: for batches ``first..last``) and of ``evaluate``, naming
every plugin's kernels by their import path, and compiles it once. The
source goes to a cache directory under a name keyed by the kernels, the
files that define them and the versions involved, so Numba's on-disk cache
serves the next process in milliseconds.

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

TEMPLATE_VERSION = 12
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
    """The compiled ``train_chunk`` and ``evaluate`` of one model structure."""

    def __init__(self, module):
        self.train_chunk = module.train_chunk
        self.evaluate = module.evaluate
        self.path = module.__file__
        #: Batches per call of ``train_chunk`` for about ``CHUNK_SECONDS``, learnt as it runs.
        self.span = 8


def program(model, loss, optimizer, transforms=(), distributed=False):
    """The compiled program for this model, loss, optimizer and gradient transforms, or None
    when a kernel can't be compiled in. ``distributed``: each rank trains its part of every
    batch and the gradients are summed over the ranks (jitprop.distributed)."""
    with _lock:  # a sweep's threads ask for programs at once: each is written and loaded once
        return _program(model, loss, optimizer, transforms, bool(distributed))


def _program(model, loss, optimizer, transforms, distributed):
    accuracy = ACCURACY.get(loss.target)
    fns = {
        "fwd": [kernel(layer, "forward_kernel") for layer in model.layers],
        "bwd": [kernel(layer, "backward_kernel") for layer in model.layers],
        "loss": [kernel(loss, "kernel")],
        "opt": [kernel(optimizer, "kernel")],
        "acc": [accuracy] if accuracy is not None else [],
        "tf": [kernel(tr, "kernel") for tr in transforms],
    }
    refs = {k: [importable(f) for f in v] for k, v in fns.items()}
    if any(r is None for v in refs.values() for r in v):
        return None
    stamps = sorted({f"{r[0]}={_stamp(f)}" for k in fns for f, r in zip(fns[k], refs[k])})
    stamps.append(f"jitprop.kernels={_stamp(all_finite)}")  # the helpers every program calls
    class_labels = loss.target == "class"
    stateful, scratch = tuple(model.stateful), tuple(model.has_scratch)
    has_stats = any(tr.stat_names for tr in transforms)
    sees = tuple(bool(tr.sees_activations) for tr in transforms)
    key_text = repr((TEMPLATE_VERSION, __version__, numba.__version__, refs, stamps, class_labels, stateful, scratch,
                     has_stats, sees, distributed))  # fmt: skip
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
        tmp.write_text(source(refs, stateful, class_labels, has_stats, scratch, sees, distributed))
        os.replace(tmp, path)
    name = f"jitprop_program_{key}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if any(threads.parallel(f) for f in fns["fwd"] + fns["bwd"]):
        threads.start()  # before the cached program's first call: it would not start the pool itself
    _programs[key] = prog = Program(module)
    return prog


def source(refs, stateful, class_labels, has_stats=False, scratch=None, sees=None, distributed=False):
    """The Python source of the generated module (``stateful`` and ``scratch``: per layer, its
    kernels take the running state, then scratch memory, after the contract's arguments;
    ``class_labels``: targets are 1-D labels; ``has_stats``: some gradient transform keeps
    statistics; ``sees``: per transform, whether it also takes its memory and the activations;
    ``distributed``: the rank's part of each batch, its gradient summed over the ranks)."""
    lines = [
        "# Generated by jitprop.backends.codegen for one model structure. Do not edit: delete it to rebuild.",
        "import math",
        "import numpy as np",
        "from numba import njit",
        "from jitprop.kernels import all_finite, gather_rows, seed_mix",
        f"from jitprop.kernels import {'gather_items' if class_labels else 'gather_rows'} as gather_y",
    ]
    if distributed:
        lines += ["from jitprop.kernels import row_seed, scale", "from jitprop.distributed.binding import allreduce_sum"]
    for kind, names in (("fwd", "F"), ("bwd", "B"), ("loss", "LOSS"), ("opt", "OPT"), ("acc", "ACC"), ("tf", "T")):
        for i, ref in enumerate(refs[kind]):
            module, qualname = ref[:2]
            local = f"{names}{i}" if kind in ("fwd", "bwd", "tf") else names
            top, _, rest = qualname.partition(".")
            if rest:  # kept on a class: import the class, then reach the kernel
                lines.append(f"from {module} import {top} as _{local}_owner")
                lines.append(f"{local} = _{local}_owner.{rest}")
            else:
                lines.append(f"from {module} import {top} as {local}")
            if len(ref) == 4:  # built by a kernel factory: build it again from the same options
                options, index = ref[2:]
                lines.append(f"{local} = {local}(*{options!r}){'' if index is None else f'[{index}]'}")
    L = len(stateful)
    has_acc = bool(refs["acc"])
    scratch = scratch or (False,) * L
    last = [(f", s{i}" if stateful[i] else "") + (f", w{i}" if scratch[i] else "") for i in range(L)]
    layer_args = ", ".join(f"p{i}, h{i}, g{i}, c{i}, s{i}, w{i}" for i in range(L))
    sees = sees or (False,) * len(refs["tf"])
    tf_args = "".join(f", th{k}, ts{k}" + (f", tm{k}" if sees[k] else "") for k in range(len(refs["tf"])))
    act_args = ", ".join(f"a{i}" for i in range(L + 1))
    delta_args = ", ".join(f"d{i}" for i in range(L + 1))
    # This rank's rows of the batch: all of them, or its part (from row ``lo``, ``part`` rows).
    first_row, rows = ("lo", "part") if distributed else ("start", "rows")
    mpi_args = ", rank, size, reduce_buf, mpi_fn, mpi_place, mpi_type, mpi_op, mpi_comm" if distributed else ""

    body = [
        "",
        "",
        "@njit(cache=True, nogil=True)",  # sweeps train several models at once, in threads
        "def train_chunk(X, y, index, first, last, bs, params, grads, opt_state, lr, opt_h, step, seed, loss_h,",
        "                batch_losses, ybuf, state, state_before, offsets, stats, stats_before, loss_sum, correct, seen,",
        f"                {layer_args}{tf_args}, {act_args},",
        f"                {delta_args}{mpi_args}):",
        "    # loss_sum, correct, seen carry the epoch's running totals, so the sums don't depend on chunking.",
        "    # Returns (..., diverged): a non-finite loss or gradient stops before that batch's update.",
        "    n = X.shape[0]",
        "    done = first",
        "    for b in range(first, last):",
        "        start = b * bs",
        "        rows = min(bs, n - start)",
    ]
    if distributed:  # contiguous parts that differ by at most one row
        body += ["        lo = start + rows * rank // size", "        part = start + rows * (rank + 1) // size - lo"]
    body += [
        f"        x0 = a0[:{rows}]",
        f"        gather_rows(X, index, {first_row}, x0)",
        f"        yb = ybuf[:{rows}]",
        f"        gather_y(y, index, {first_row}, yb)",
        "        s = seed_mix(seed, step)",
    ]
    if any(stateful):  # running state as it was before this batch, should the batch diverge
        body += ["        for i in range(state.shape[0]):", "            state_before[i] = state[i]"]
    if has_stats:  # and the transforms' statistics
        body += ["        for i in range(stats.shape[0]):", "            stats_before[i] = stats[i]"]
    passes = []  # forward, loss, backward: under ``if part > 0`` when distributed
    for i in range(L):
        body.append(f"        x{i + 1} = a{i + 1}[:{rows}]")
        body.append(f"        k{i} = c{i}[:{rows}]")
        # Distributed, a layer's draws (dropout's mask) are those of the whole batch's rows.
        seed = f"row_seed(seed_mix(s, {i}), lo - start, x{i}.shape[1])" if distributed else f"seed_mix(s, {i})"
        passes.append(f"F{i}(p{i}, h{i}, x{i}, x{i + 1}, k{i}, True, {seed}{last[i]})")
    body.append(f"        e{L} = d{L}[:{rows}]")
    body += [f"        e{i} = d{i}[:{rows}]" for i in range(L - 1, 0, -1)]
    passes.append(f"value = LOSS(x{L}, yb, e{L}, loss_h)")
    passes.append(f"hits = ACC(x{L}, yb)" if has_acc else "hits = 0")
    if distributed:  # backpropagation is linear in dL/d(output): scaling it scales every gradient
        passes.append(f"scale(e{L}, part / rows)")
    for i in range(L - 1, -1, -1):
        passes.append(f"B{i}(p{i}, h{i}, x{i}, x{i + 1}, k{i}, e{i + 1}, {'d0' if i == 0 else f'e{i}'}, g{i}{last[i]})")
    if distributed:
        body.append("        if part > 0:")
        body += [f"            {line}" for line in passes]
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
        body += [f"        {line}" for line in passes]
    for k in range(len(refs["tf"])):  # the gradient slot: between backward and the divergence check
        seen_acts = f", tm{k}, ({', '.join(f'x{i}' for i in range(L + 1))},)" if sees[k] else ""
        body.append(f"        T{k}(grads, params, offsets, lr, th{k}, ts{k}{seen_acts})")
    tail = ", 0" if distributed else ""  # and the MPI error code
    body += [
        "        if not (math.isfinite(value) and all_finite(grads)):",
        "            batch_losses[b] = value",
    ]
    if any(stateful):
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
        f"def evaluate(X, y, bs, loss_h, scratch, {', '.join(f'p{i}, h{i}, c{i}, s{i}, w{i}' for i in range(L))}, {act_args}):",
        "    n = X.shape[0]",
        "    total = 0.0",
        "    correct = 0.0",
        "    for start in range(0, n, bs):",
        "        stop = min(start + bs, n)",
        "        rows = stop - start",
        "        x0 = X[start:stop]",
        "        yb = y[start:stop]",
    ]
    for i in range(L):
        body.append(f"        x{i + 1} = a{i + 1}[:rows]")
        body.append(f"        F{i}(p{i}, h{i}, x{i}, x{i + 1}, c{i}[:rows], False, np.uint64(0){last[i]})")
    body.append(f"        total += LOSS(x{L}, yb, scratch[:rows], loss_h) * rows")
    if has_acc:
        body.append(f"        correct += ACC(x{L}, yb)")
    body.append("    return total, correct")
    return "\n".join(lines + body) + "\n"
