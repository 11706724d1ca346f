"""The training loop in a learner's words, with the run's own numbers.

``arithmetic`` says how rows, batch size and epochs become iterations;
``first_iteration`` traces the run's first update exactly as training does
it (the same batch from the epoch's shuffled order, the same dropout draw):
the batch's predictions and loss, each layer's gradient norm from the last
layer back to the first (backpropagation handing out the blame), and how
far the optimizer then moved each layer's weights. The model is left as it
was.
"""

import math

import numpy as np

from ..backends.base import epoch_order
from ..data.prepare import as_inputs, as_targets
from ..kernels import mix_seed
from ..model.sequential import Workspace

SHOWN_ROWS = 4


def arithmetic(rows, batch_size, epochs, drop_last=False):
    """Lines: rows and batch size to iterations per epoch (and the last batch), epochs to iterations."""
    bs = min(batch_size, rows)
    full, rest = divmod(rows, bs)
    per_epoch = full if drop_last or not rest else full + 1
    line = f"{rows} training rows, batch {batch_size}: {per_epoch} iteration{'s' if per_epoch != 1 else ''} per epoch"
    if rest and drop_last:
        line += f" (drop_last: the last {rest} rows of each shuffled order sit out that epoch)"
    elif rest:
        line += f", the last one of {rest} rows"
    lines = [line + "; one iteration is one batch: predict, measure the loss, backpropagate, update"]
    seen = "once" if epochs == 1 else f"{epochs} times"
    lines.append(f"{epochs} epoch{'s' if epochs != 1 else ''}: {per_epoch * epochs} iterations, every row seen {seen}"
                 " (each epoch in a new shuffled order)")  # fmt: skip
    return lines


def _norm(a):
    return float(np.sqrt(np.sum(np.square(a, dtype=np.float64))))


def trace(trainer, X, y):
    """The first iteration of ``trainer`` (fresh, not yet fit) on (X, y), as training runs it, in
    numbers: ``rows`` (indices), ``pred``, ``y``, ``loss``, per layer ``grad_norm`` (None without
    weights) and ``passed_back`` (None for the first), ``lr`` and the update ``moved`` (the flat
    change of every weight). The model and optimizer state are left as they were."""
    model, loss = trainer.model, trainer.loss
    X = as_inputs(model, X)
    y = as_targets(model, loss, y, X.shape[0])
    rows = min(trainer.batch_size, X.shape[0])
    order = np.zeros(X.shape[0], np.int64)
    epoch_order(trainer.seed, 0, trainer.shuffle, order)
    picked = order[:rows]
    acts, caches, deltas = Workspace(model, rows, training=True).views(rows)
    acts[0][...] = X[picked]
    yb = np.ascontiguousarray(y[picked])
    model.forward(acts, caches, True, mix_seed(trainer.seed, 0))
    value = trainer.loss_kernel(acts[-1], yb, deltas[-1], trainer.loss_h)
    pred = acts[-1].copy()
    model.backward(acts, caches, deltas)
    grads = model.gradients()
    grad_norm, passed_back = [], []
    for i in range(len(model.layers)):
        keys = [k for k in grads if k.split(".")[0] == str(i)]
        grad_norm.append(math.sqrt(sum(_norm(grads[k]) ** 2 for k in keys)) if keys else None)
        passed_back.append(_norm(deltas[i]) if i > 0 else None)  # what layer i hands the one before it
    params, state = model.params.copy(), trainer.opt_state.copy()
    lr = trainer.lr_schedule(0, trainer.optimizer.lr) if trainer.lr_schedule else trainer.optimizer.lr
    try:
        trainer.opt_kernel(model.params, model.grads, trainer.opt_state, lr, trainer.opt_h, 1)
        moved = model.params - params
    finally:
        model.params[...] = params
        trainer.opt_state[...] = state
    return {"rows": picked, "pred": pred, "y": yb, "loss": float(value), "grad_norm": grad_norm,
            "passed_back": passed_back, "lr": lr, "moved": moved, "params": params}  # fmt: skip


def first_iteration(trainer, X, y):
    """The lines of the first iteration of ``trainer`` (fresh, not yet fit) on (X, y), traced."""
    model, loss = trainer.model, trainer.loss
    t = trace(trainer, X, y)
    lines = [f"iteration 1: batch of {len(t['rows'])} rows (rows {', '.join(map(str, t['rows'][:SHOWN_ROWS]))}, ... of the shuffled order)"]
    lines += _predictions(loss, t["pred"], t["y"])
    lines.append(f"  loss: {loss.name} = {t['loss']:.4f}, the batch's mean of how wrong each prediction is")
    lines.append("  backpropagation, last layer first: each layer's share of the blame (gradient norm)")
    for i in reversed(range(len(model.layers))):
        parts = [f"    layer {i} {model.layers[i].name:<12}"]
        norm, into = t["grad_norm"][i], t["passed_back"][i]
        parts.append(f"|dL/dweights| {norm:.3g}" if norm is not None else "no weights")
        if into is not None:
            parts.append(f"passes back |dL/dinput| {into:.3g}")
        lines.append("  ".join(parts))
    lines.append(f"  update: {trainer.optimizer.name} at lr {t['lr']:g} moved each layer's weights (|change| / |weights|)")
    for i, (a, b) in enumerate(zip(model.offsets[:-1], model.offsets[1:])):
        if b > a:
            w, change = _norm(t["params"][a:b]), _norm(t["moved"][a:b])
            ratio = change / w if w else math.inf
            lines.append(f"    layer {i} {model.layers[i].name:<12}|change| {change:.3g}  ({ratio:.2g} of |weights| {w:.3g})")
    return lines


def _predictions(loss, pred, y):
    """A few rows of the batch: what the model said and what was true."""
    lines = []
    if loss.target == "class":
        probs = loss.probabilities(pred[:SHOWN_ROWS])
        for i, p in enumerate(probs):
            guess = int(np.argmax(p))
            lines.append(f"  row {i}: predicts class {guess} (p = {p[guess]:.2f}), truth {int(y[i])}"
                         f" (p = {p[int(y[i])]:.2f})")  # fmt: skip
    else:
        for i in range(min(SHOWN_ROWS, pred.shape[0])):
            shown = ", ".join(f"{v:.3g}" for v in pred[i][:4])
            truth = ", ".join(f"{v:.3g}" for v in np.ravel(y[i])[:4])
            lines.append(f"  row {i}: predicts [{shown}], truth [{truth}]")
    return lines


def explain(trainer, X, y, epochs):
    """Every line: the arithmetic, then the first iteration traced."""
    n = as_inputs(trainer.model, X).shape[0]
    return arithmetic(n, trainer.batch_size, epochs, trainer.drop_last) + first_iteration(trainer, X, y)
