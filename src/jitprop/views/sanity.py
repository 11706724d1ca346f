"""Sanity checks before a long run (Karpathy, "A Recipe for Training Neural Networks", 2019).

Each check is one line that passes or fails, and none changes the model:

1. **Loss at initialisation.** Before any update, predictions are close to
   uniform, so the loss should be close to log(C) for C classes (log 2 a
   binary output; for regression, the loss of predicting 0). Within
   ``INIT_RATIO`` (1.5x) either way passes; far above means the last layer
   starts too sure of itself (or the labels are off), far below means the
   labels leak into the inputs or the task is trivial.
2. **Overfit one batch.** A model that trains on the same ``batch_size``
   rows again and again must drive their loss to near 0 (below
   ``OVERFIT_SHARE`` (2%) of where it started, scored without dropout)
   within ``OVERFIT_ITERATIONS`` (500) iterations; one that cannot is too
   small, has too low a learning rate, or is fed broken data or a broken
   layer.
3. **Gradients.** Every layer with parameters has its gradient on a few of
   the user's own rows (float64 copy of the model, dropout off) compared
   with central finite differences at ``SAMPLES`` of its weights; a relative
   error below ``TOLERANCE`` (1e-5) passes. Each such check also runs
   through the backward pass of every layer after it.
"""

import copy
import math
from dataclasses import dataclass

import numpy as np

from .. import api
from ..components import kernel
from ..contracts.callbacks import Callback
from ..data.prepare import as_inputs, as_targets
from ..gradcheck import central_differences, relative_error
from ..model.sequential import Sequential, Workspace
from ..plugins.hookspecs import hookimpl

INIT_RATIO = 1.5
OVERFIT_SHARE, OVERFIT_ITERATIONS = 0.02, 500
SAMPLES, ROWS, TOLERANCE, EPS = 12, 8, 1e-5, 1e-6


@dataclass
class Check:
    """One check's result: ``name``, whether it passed, and its line."""

    name: str
    ok: bool
    message: str

    def __str__(self):
        return f"{self.message}: {'ok' if self.ok else 'FAIL'}"


def _loss_of(model, loss, X, y):
    """The mean loss of ``model``'s predictions on (X, y), dropout off."""
    out = model.predict(X)
    grad = np.empty_like(out)
    return float(kernel(loss, "kernel")(out, y, grad, np.ascontiguousarray(loss.hyper(), dtype=np.float64)))


def expected_initial_loss(loss, model, y):
    """(value, why) the loss should start near: log(C), log 2 or the loss of predicting 0."""
    k = model.output_dim
    if loss.target == "class":
        return math.log(k), f"log of {k} classes"
    if loss.target == "binary":
        return math.log(2.0), "log 2, each output undecided"
    zeros = np.zeros((len(y), k), model.dtype)
    value = float(kernel(loss, "kernel")(zeros, y, np.empty_like(zeros), np.ascontiguousarray(loss.hyper(), dtype=np.float64)))
    return value, "the loss of predicting 0"


def initial_loss(model, loss, X, y):
    measured = _loss_of(model, loss, X, y)
    expected, why = expected_initial_loss(loss, model, y)
    ratio = measured / expected if expected > 0 else math.inf
    ok = math.isfinite(measured) and 1 / INIT_RATIO <= ratio <= INIT_RATIO
    hint = "" if ok else (": the last layer starts too sure of itself, or the labels are off" if ratio > 1
                          else ": the task looks trivial, or the labels leak into the inputs")  # fmt: skip
    return Check("initial loss", ok, f"loss at initialisation {measured:.4g}, expected about {expected:.4g} ({why}); {ratio:.2f}x{hint}")


class _StopBelow(Callback):
    name = "stop_below"

    def __init__(self, model, loss, X, y, target):
        self.model, self.loss, self.X, self.y, self.target = model, loss, X, y, target
        self.value = math.nan

    @hookimpl
    def on_epoch_end(self, trainer):
        self.value = _loss_of(self.model, self.loss, self.X, self.y)
        trainer.stop_training = not self.value > self.target  # reached, or NaN


def overfit_batch(model, loss, optimizer, X, y, batch_size, iterations=OVERFIT_ITERATIONS):
    """Train on one batch until its loss is near 0; the model's weights are put back after."""
    from ..training.trainer import Trainer

    rows = min(batch_size, len(X))
    Xb, yb = np.ascontiguousarray(X[:rows]), np.ascontiguousarray(y[:rows])
    start = _loss_of(model, loss, Xb, yb)
    target = OVERFIT_SHARE * start
    stop = _StopBelow(model, loss, Xb, yb, target)
    params, state = model.params.copy(), model.state.copy()
    try:
        trainer = Trainer(model, loss=loss, optimizer=optimizer, batch_size=rows, callbacks=[stop], shuffle=False)
        trainer.fit(Xb, yb, epochs=iterations)  # an epoch of one batch: an iteration
        done = trainer.epoch
    finally:
        model.params[...] = params
        model.state[...] = state
    ok = stop.value <= target
    tail = f"in {done} iterations" if ok else f"after {done} iterations; the model is too small, the learning rate too low, or the data or a layer broken"
    return Check("overfit one batch", ok, f"overfit one batch of {rows} rows: loss {start:.4g} -> {stop.value:.4g} {tail}")


def gradients(model, loss, X, y, rows=ROWS, samples=SAMPLES, seed=0, tolerance=TOLERANCE):
    """One check per layer with parameters: its gradient on ``rows`` rows against finite differences."""
    # A float64 twin of the same layer objects (copies: building binds a layer to its model's shapes).
    twin = Sequential([copy.copy(layer) for layer in model.layers], input_shape=model.input_shape, dtype="float64", seed=model.seed)
    twin.params[...] = model.params
    twin.state[...] = model.state
    Xs = as_inputs(twin, np.asarray(X[:rows], dtype=np.float64))
    ys = as_targets(twin, loss, y[:rows], Xs.shape[0])
    n = Xs.shape[0]
    acts, caches, deltas = Workspace(twin, n, training=True).views(n)
    f, h = kernel(loss, "kernel"), np.ascontiguousarray(loss.hyper(), dtype=np.float64)
    scratch = np.empty((n, twin.output_dim))

    def value():
        acts[0][...] = Xs
        twin.forward(acts, caches, False, 0)
        return float(f(acts[-1], ys, scratch, h))

    acts[0][...] = Xs
    twin.forward(acts, caches, False, 0)
    f(acts[-1], ys, deltas[-1], h)
    twin.backward(acts, caches, deltas)
    analytic = twin.gradients()
    rng = np.random.default_rng(seed)
    params, checks = twin.parameters(), []
    last = len(twin.layers) - 1
    for i, layer in enumerate(twin.layers):
        keys = [k for k in params if k.split(".")[0] == str(i)]
        if not keys:
            continue
        worst, count = 0.0, 0
        for key in keys:
            flat, grad = params[key].reshape(-1), analytic[key].reshape(-1)
            picks = rng.choice(flat.size, size=min(samples, flat.size), replace=False)
            numeric = central_differences(value, flat, picks, EPS)
            worst = max(worst, relative_error(grad[picks], numeric))
            count += picks.size
        through = f", through layers {i + 1}-{last}" if i < last else ""
        checks.append(Check(f"gradient {i}", worst < tolerance,
                            f"gradient of layer {i} {layer.name} ({sum(params[k].size for k in keys):,} parameters{through}): relative error {worst:.1e}"
                            f" at {count} weights against finite differences"))  # fmt: skip
    return checks


def sanity_checks(model, X, y, loss="mse", optimizer="adam", batch_size=32):
    """Every check above on ``model`` and (X, y): a list of ``Check``."""
    loss = api.loss(loss)
    X = as_inputs(model, X)
    y = as_targets(model, loss, y, X.shape[0])
    return [initial_loss(model, loss, X, y), overfit_batch(model, loss, optimizer, X, y, batch_size),
            *gradients(model, loss, X, y)]  # fmt: skip
