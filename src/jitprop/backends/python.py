"""The Python loop: every kernel called from Python, one batch at a time.

The reference the other backends must match bit for bit on the CPU, and the
path taken when something must run between the steps of a batch (a
per-batch hook) or a kernel cannot be named from generated code. Its
``score`` and ``predict`` also serve ``jitprop.evaluate`` and
``Sequential.predict``.
"""

import math
import os
import re

import numba
import numpy as np
from numba.core.errors import NumbaError

from ..components import kernel
from ..contracts.losses import ACCURACY
from ..errors import ConfigError, PluginError
from ..kernels import ACT_ROWS, all_finite, gather, gather_rows, mix_seed
from ..model.sequential import Workspace
from ..plugins import registry
from . import layout
from .base import Backend


class PythonBackend(Backend):
    name = "python"

    def __init__(self, trainer, X, y, batch_size, validation=None):
        super().__init__(trainer, X, y, batch_size, validation)
        model = self.model
        self.ws = Workspace(model, batch_size, training=True)
        y_buf = np.zeros((batch_size,) + y.shape[1:], y.dtype)
        n = X.shape[0]
        self.y_views = {rows: y_buf[:rows] for rows in {batch_size, n - (n - 1) // batch_size * batch_size}}
        self.gather_y = gather(y)
        # Running state and statistics as they were before each batch: a batch that diverges leaves none behind.
        self.state_before = model.state.copy() if any(model.stateful) else None
        self.stats_before = trainer.stats.copy() if trainer.stats.size else None
        self.transforms = [(k, h, st, m if tr.sees_activations else None) for k, h, st, m, tr in
                           zip(trainer.transform_kernels, trainer.transform_h, trainer.transform_stats,
                               trainer.transform_memory, trainer.transforms)]  # fmt: skip
        self.where = layout.activations(self.ws)  # where the activations lie, for transforms that see them
        hook = trainer.hook
        self.batch_begin = bool(hook.on_train_batch_begin.get_hookimpls())
        self.batch_end = bool(hook.on_train_batch_end.get_hookimpls())
        self.after_backward = bool(hook.on_after_backward.get_hookimpls())

    def run(self, first, last, sums):
        t, model, hook = self.trainer, self.model, self.trainer.hook
        for b in range(first, last):
            rows = self.rows(b)
            if self.batch_begin:
                hook.on_train_batch_begin(trainer=t, batch=b, logs={"size": rows})
            acts, caches, deltas = self.ws.views(rows)
            gather_rows(self.X, self.index, b * self.bs, acts[0])
            yb = self.y_views[rows]
            self.gather_y(self.y, self.index, b * self.bs, yb)
            if self.state_before is not None:
                self.state_before[...] = model.state
            if self.stats_before is not None:
                self.stats_before[...] = t.stats
            # prediction -> loss -> backpropagation -> (hooks, transforms) -> update
            model.forward(acts, caches, True, mix_seed(t.seed, t.step))
            value = t.loss_kernel(acts[-1], yb, deltas[-1], t.loss_h)
            hits = self.accuracy(acts[-1], yb) if self.accuracy is not None else 0
            model.backward(acts, caches, deltas)
            if self.after_backward:
                hook.on_after_backward(trainer=t, grads=model.grads)
            for transform, h, stats, memory in self.transforms:
                if memory is None:
                    transform(model.grads, model.params, model.offsets, t.lr, h, stats)
                else:
                    self.where[:, ACT_ROWS] = rows
                    transform(model.grads, model.params, model.offsets, t.lr, h, stats, memory, self.ws.act_buffer, self.where)
            t.batch_losses[b] = value
            if not (math.isfinite(value) and all_finite(model.grads)):
                if self.state_before is not None:
                    model.state[...] = self.state_before  # nor does the running state keep that batch
                if self.stats_before is not None:
                    t.stats[...] = self.stats_before
                return sums, b, b  # caught before the update: the weights stay as they were
            t.step += 1
            t.opt_kernel(model.params, model.grads, t.opt_state, t.lr, t.opt_h, t.step)
            sums.correct += hits
            sums.loss += value * rows
            sums.seen += rows
            if self.batch_end:
                hook.on_train_batch_end(trainer=t, batch=b, logs={"loss": float(value), "size": rows})
        return sums, last, None

    def score(self, X, y):
        return score(self.model, self.trainer.loss, X, y, max(self.bs, 256))


def score(model, loss, X, y, batch_size=256):
    """Mean loss, and accuracy for classification, over arrays already checked by ``data``."""
    bs = min(batch_size, X.shape[0])
    ws = model.workspace(bs)
    scratch = np.zeros((bs, model.output_dim), model.dtype)  # the loss kernel writes a gradient here
    loss_kernel = kernel(loss, "kernel")
    h = np.ascontiguousarray(loss.hyper(), dtype=np.float64)
    accuracy = ACCURACY.get(loss.target)
    total = correct = 0.0
    for start in range(0, X.shape[0], bs):
        stop = min(start + bs, X.shape[0])
        acts, caches, _ = ws.views(stop - start)
        acts[0][...] = X[start:stop]
        out = model.forward(acts, caches)
        total += loss_kernel(out, y[start:stop], scratch[: stop - start], h) * (stop - start)
        if accuracy is not None:
            correct += accuracy(out, y[start:stop])
    result = {"loss": total / X.shape[0]}
    if accuracy is not None:
        result["accuracy"] = correct / X.shape[0]
    return result


def predict(model, X, batch_size=1024):
    """The model's output for every row of checked inputs ``X`` (inference mode: dropout off)."""
    out = np.empty((X.shape[0], model.output_dim), model.dtype)
    ws = model.workspace(min(batch_size, max(X.shape[0], 1)))
    for start in range(0, X.shape[0], ws.capacity):
        stop = min(start + ws.capacity, X.shape[0])
        acts, caches, _ = ws.views(stop - start)
        acts[0][...] = X[start:stop]
        out[start:stop] = model.forward(acts, caches)
    return out


#: A terminal's colour or style code (``ESC [ ... m``).
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def compile_failure(trainer, batch_size, y):
    """The kernel behind a Numba compile error, as a one-line PluginError naming its plugin
    (None when every kernel compiles on its own: the error lies elsewhere). Each kernel is
    compiled alone for the types the Python loop would call it with."""
    from numba.core.dispatcher import Dispatcher

    model, t = trainer.model, trainer
    acts, caches, deltas = Workspace(model, batch_size, training=True).views(batch_size)
    y_buf = np.zeros((batch_size,) + y.shape[1:], y.dtype)
    calls = [("loss", t.loss, "kernel", (acts[-1], y_buf, deltas[-1], t.loss_h)),
             ("optimizer", t.optimizer, "kernel", (model.params, model.grads, t.opt_state, float(t.lr), t.opt_h, int(t.step)))]  # fmt: skip
    for i, layer in enumerate(model.layers):
        calls.append(("layer", layer, "forward_kernel", model.forward_args(i, acts, caches, True)))
        calls.append(("layer", layer, "backward_kernel", model.backward_args(i, acts, caches, deltas)))
    for what, component, attr, args in calls:
        fn = kernel(component, attr)
        if not isinstance(fn, Dispatcher):
            continue
        try:
            fn.compile(tuple(numba.typeof(a) for a in args))
        except NumbaError as exc:
            try:
                origin = f" from plugin {registry.lookup(what, component.name).plugin!r}"
            except ConfigError:
                origin = ""
            return PluginError(f"{what} {component.name!r}{origin}: its {attr} does not compile: {numba_summary(exc)}")
    return None


def numba_summary(exc):
    """The one line of a Numba compile error that says what is wrong, and where. Without terminal
    colours: Numba highlights its messages whenever colorama is installed."""
    lines = [ANSI.sub("", line).strip() for line in str(exc).splitlines()]
    body = [line for line in lines[1:] if line and not line.startswith("During:")] or lines[:1]
    summary = body[0]
    if summary.endswith("signature:"):  # "No implementation of function ... found for signature:"
        summary += " " + next((line for line in body if line.startswith(">>>")), "").lstrip("> ")
    where = re.search(r'File "([^"]+)", line (\d+)', str(exc))
    return summary + (f" ({os.path.basename(where.group(1))}, line {where.group(2)})" if where else "")
