"""The coach: how each layer learns, measured inside the compiled step, and what to do about it.

``coach_statistics`` is a gradient transform (it runs in the compiled
gradient slot, between backward and update) that also sees its memory and
the batch's activations. Per layer and epoch it adds up:

- the gradient's L2 norm and root mean square, and the largest norm;
- the update-to-weight ratio, log10(std(update) / std(weights)) (Karpathy:
  near -3 for a layer that learns at a healthy pace). The update is the
  parameters' change since the batch before, from a copy kept in memory, so
  it is what the optimizer really did (Adam's step, momentum and all);
- after ReLU, the share of zero outputs and the units that fired at least
  once this epoch (the rest never fire: dead); after tanh and sigmoid, the
  share of saturated outputs (|tanh| > 0.97, sigmoid within 0.015 of 0 or 1).

The ``coach`` callback adds that transform to a run, keeps one record per
epoch in ``history.coach`` and, when training ends, turns the records into
findings (``history.findings``): plain sentences with the evidence, each
with a ``kind`` and the ``layer`` it is about (or None). The rules:

- ``initial_loss``: the first batch's loss off log(C) by more than 1.5x;
- ``diverged``: training stopped at a NaN or infinite loss or gradient;
- ``exploding``: a gradient norm above 1000 in some epoch, or a batch loss
  above 10x the first one's;
- ``vanishing``: in the first epoch where it happens, the layers whose
  gradient RMS is below 1e-3 of the largest layer's (the early layers of a
  deep sigmoid stack, or those behind dead ReLUs);
- ``barely_learns``: in the last epoch, an update-to-weight ratio below
  1e-5 (log10 < -5), for layers whose gradients have not vanished, and not
  when training diverged or exploded (a higher rate would not help);
- ``too_fast``: an update-to-weight ratio above 1e-1 (log10 > -1) in some epoch;
- ``dead_relu``: 40% or more of a ReLU layer's units never fired in the last epoch;
- ``saturated``: 30% or more of a tanh or sigmoid layer's outputs saturated,
  in the last epoch.
"""

import json
import math

import numpy as np
from numba import njit

import jitprop
from jitprop.components import check
from jitprop.kernels import activation

# Columns of the statistics, one row per layer.
BATCHES, GRAD_NORM, GRAD_NORM_MAX, GRAD_RMS, UPDATE_LOG, UPDATES, ZERO, FIRED, SATURATED = range(9)
STAT_NAMES = ("batches", "grad_norm", "grad_norm_max", "grad_rms", "update_log", "updates", "zero", "fired", "saturated")
#: Layer kinds the activation statistics know, by layer name. ``h`` holds, per layer, its kind at
#: 1 + 2 * layer and (ReLU) where its units' flags start in memory at 2 + 2 * layer.
KINDS = {"relu": 1, "tanh": 2, "sigmoid": 3}
RELU, TANH, SIGMOID = 1, 2, 3
TANH_LIMIT = 0.97  # Karpathy's saturation threshold; sigmoid's is the same on its (2s - 1)

INIT_RATIO, EXPLODES, LOSS_EXPLODES, VANISHES = 1.5, 1e3, 10.0, 1e-3
SLOW, FAST = -5.0, -1.0
DEAD, SATURATES = 0.40, 0.30


@njit(cache=True, fastmath={"reassoc"})
def _update_sums(g, p, prev):
    """Sums over one layer's slice: g^2, d, d^2, p, p^2 for d = p - prev; prev becomes p.

    In the parameters' own dtype (float32 by default: twice the lanes of float64) and
    reassociated, so the loop vectorises: S's step is ~25 us, and this is the coach's main cost.
    """
    gg = sd = sdd = sp = spp = p[0] - p[0]  # a zero of p's dtype, without a conversion per element
    for i in range(p.shape[0]):
        w = p[i]
        d = w - prev[i]
        gg += g[i] * g[i]
        sd += d
        sdd += d * d
        sp += w
        spp += w * w
        prev[i] = w
    return float(gg), float(sd), float(sdd), float(sp), float(spp)


@njit(cache=True, fastmath={"reassoc"})
def _zeros(out):
    """How many of ``out``'s values are <= 0 (a ReLU's silent outputs)."""
    zeros = 0
    for r in range(out.shape[0]):
        row = out[r]
        for j in range(row.shape[0]):
            zeros += row[j] <= 0.0
    return zeros


@njit(cache=True)
def _newly_fired(out, fired):
    """Units firing for the first time this epoch (marked in ``fired``); how many."""
    new = 0
    for r in range(out.shape[0]):
        row = out[r]
        for j in range(row.shape[0]):
            if row[j] > 0.0 and fired[j] == 0.0:
                fired[j] = 1.0
                new += 1
    return new


@njit(cache=True, fastmath={"reassoc"})
def _saturated(out, kind):
    count = 0
    for r in range(out.shape[0]):
        row = out[r]
        for j in range(row.shape[0]):
            v = row[j] if kind == TANH else 2.0 * row[j] - 1.0
            count += abs(v) > TANH_LIMIT
    return count


@njit(cache=True)
def coach_kernel(g, p, offsets, lr, h, stats, memory, acts, where):
    flags_at = offsets[offsets.shape[0] - 1]  # memory: the parameters as they were, then the flags
    for layer in range(offsets.shape[0] - 1):
        s = stats[layer]
        fresh = s[BATCHES] == 0.0  # statistics are zeroed at each epoch's start
        s[BATCHES] += 1.0
        a, b = offsets[layer], offsets[layer + 1]
        if b > a:
            gg, sd, sdd, sp, spp = _update_sums(g[a:b], p[a:b], memory[a:b])
            n = b - a
            norm = math.sqrt(gg)
            s[GRAD_NORM] += norm
            s[GRAD_NORM_MAX] = max(s[GRAD_NORM_MAX], norm)
            s[GRAD_RMS] += norm / math.sqrt(n)
            var_d = max(sdd / n - (sd / n) ** 2, 0.0)
            var_p = max(spp / n - (sp / n) ** 2, 0.0)
            if var_d > 0.0 and var_p > 0.0:  # no update yet (the first batch of a fit): not counted
                s[UPDATE_LOG] += 0.5 * math.log10(var_d / var_p)
                s[UPDATES] += 1.0
        kind = int(h[1 + 2 * layer])
        if kind != 0:
            out = activation(acts, where, layer + 1)
            size = out.shape[0] * out.shape[1]
            if kind == RELU:
                start = flags_at + int(h[2 + 2 * layer])
                fired = memory[start : start + out.shape[1]]
                if fresh:
                    fired[:] = 0.0
                s[ZERO] += _zeros(out) / size
                if s[FIRED] < out.shape[1]:  # once every unit has fired, nothing is left to mark this epoch
                    s[FIRED] += _newly_fired(out, fired)
            else:
                s[SATURATED] += _saturated(out, kind) / size


class CoachStatistics(jitprop.GradientTransform):
    """Per layer and epoch: gradient norms, the update-to-weight ratio, dead ReLUs and saturated
    tanh / sigmoid units, measured in the compiled step (the coach callback adds it)."""

    name = "coach_statistics"
    stat_names = STAT_NAMES
    sees_activations = True
    kernel = staticmethod(coach_kernel)
    cuda_kernel = "jitprop.default_plugins.coach_cuda:coach_kernel"

    def __init__(self):
        self._h, self._flags = np.zeros(1), 0  # set for a model by setup()

    def setup(self, model):
        h = np.zeros(1 + 2 * len(model.layers))
        h[0] = len(model.layers)
        flags = 0
        for i, layer in enumerate(model.layers):
            h[1 + 2 * i] = kind = KINDS.get(layer.name, 0)
            if kind == RELU:
                h[2 + 2 * i] = flags
                flags += layer.out_dim
        self._h, self._flags = h, flags

    def hyper(self):
        return self._h

    def memory_size(self, model):
        return model.n_params + self._flags  # the parameters as they were, then each ReLU unit's "fired" flag

    def init_memory(self, memory, model):
        memory[: model.n_params] = model.params
        memory[model.n_params :] = 0.0


def _layers(indices):
    """'layer 3' or 'layers 3-4' or 'layers 0, 2 and 5'."""
    if len(indices) == 1:
        return f"layer {indices[0]}"
    if indices == list(range(indices[0], indices[-1] + 1)):
        return f"layers {indices[0]}-{indices[-1]}"
    return f"layers {', '.join(map(str, indices[:-1]))} and {indices[-1]}"


def epoch_record(model, stats, epoch, logs):
    """One epoch's statistics as plain data: per layer, the means over its batches."""
    layers = []
    for i, layer in enumerate(model.layers):
        s = stats[i]
        batches = max(s[BATCHES], 1.0)
        rec = {"layer": i, "name": layer.name}
        if model.offsets[i + 1] > model.offsets[i]:
            rec.update(grad_norm=s[GRAD_NORM] / batches, grad_norm_max=s[GRAD_NORM_MAX], grad_rms=s[GRAD_RMS] / batches,
                       update_ratio_log10=s[UPDATE_LOG] / s[UPDATES] if s[UPDATES] else None)  # fmt: skip
        kind = KINDS.get(layer.name, 0)
        if kind == RELU:
            units = layer.out_dim
            rec.update(zero_fraction=s[ZERO] / batches, dead_fraction=max(0.0, units - s[FIRED]) / units)
        elif kind:
            rec.update(saturated_fraction=s[SATURATED] / batches)
        layers.append({k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in rec.items()})
    return {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items() if k in ("loss", "val_loss", "lr")}, "layers": layers}


def findings(records, trainer):
    """The plain-language findings from a run's epoch records (rules: the module's docstring)."""
    found = []

    def add(kind, layer, message):
        found.append({"kind": kind, "layer": layer, "message": message})

    first = trainer.history.first_loss
    if first is not None and trainer.loss.target in ("class", "binary"):
        from jitprop.views.sanity import expected_initial_loss

        expected, why = expected_initial_loss(trainer.loss, trainer.model, None)
        if math.isfinite(first) and not 1 / INIT_RATIO <= first / expected <= INIT_RATIO:
            add("initial_loss", None, f"loss at start {first:.3g}, expected {expected:.3g} ({why}): "
                                      "check the initialisation (the last layer starts too sure) or the labels")  # fmt: skip
    if trainer.divergence is not None:
        d = trainer.divergence
        add("diverged", None, f"training diverged in epoch {d['epoch']}, iteration {d['iteration']} ({d['reason']}):"
                              f" lower the learning rate (now {trainer.optimizer.lr:.3g})")  # fmt: skip
    if not records:
        return found
    loss0 = math.nan if first is None else first
    highest = trainer.history.highest_loss()  # (loss, first, last iteration): a block's range beyond the window
    worst_loss = math.nan if highest is None else highest[0]
    peak = max(((rec["epoch"], r) for rec in records for r in rec["layers"] if "grad_norm_max" in r),
               key=lambda er: er[1]["grad_norm_max"], default=None)  # fmt: skip
    loss_blew_up = math.isfinite(worst_loss) and loss0 > 0 and worst_loss > LOSS_EXPLODES * loss0
    if (peak and peak[1]["grad_norm_max"] > EXPLODES) or loss_blew_up:
        parts = []
        if peak and peak[1]["grad_norm_max"] > EXPLODES:
            at = peak[0]
            big = [r["layer"] for rec in records if rec["epoch"] == at for r in rec["layers"] if r.get("grad_norm_max", 0) > EXPLODES]
            parts.append(f"gradients explode in {_layers(big)} (|g| up to {peak[1]['grad_norm_max']:.3g} in epoch {at})")
        if loss_blew_up:
            _, a, b = highest
            at = f"iteration {a}" if a == b else f"iterations {a}-{b}"
            parts.append(f"the loss blew up from {loss0:.3g} to {worst_loss:.3g} ({at})")
        add("exploding", big[0] if parts[0].startswith("gradients") else None,
            f"{' and '.join(parts)}: lower the learning rate (now {trainer.optimizer.lr:.3g})"
            " or clip the gradients (--transform gradient_clipping:max_norm=1)")  # fmt: skip
    vanishing = []
    for rec in records:  # the first epoch where some layers' gradients vanish
        weighted = [r for r in rec["layers"] if "grad_rms" in r]
        top = max(weighted, key=lambda r: r["grad_rms"], default=None)
        if top is None or top["grad_rms"] <= 0:
            continue
        faint = [r for r in weighted if r["grad_rms"] < VANISHES * top["grad_rms"]]
        if faint:
            vanishing = [r["layer"] for r in faint]
            dead = any(r.get("dead_fraction", 0.0) >= DEAD for r in rec["layers"])
            fix = "the ReLUs after them have died (below)" if dead else "use relu, batch_norm or fewer layers"
            add("vanishing", vanishing[0], f"gradients vanish in {_layers(vanishing)} in epoch {rec['epoch']} (RMS down to"
                                           f" {min(r['grad_rms'] for r in faint):.1e}, against {top['grad_rms']:.1e} at layer"
                                           f" {top['layer']}): they barely learn; {fix}")  # fmt: skip
            break
    troubled = any(f["kind"] in ("diverged", "exploding") for f in found)
    last = records[-1]["layers"]
    ratios = [(r["layer"], r["update_ratio_log10"]) for r in last if r.get("update_ratio_log10") is not None]
    slow = [i for i, v in ratios if v < SLOW and i not in vanishing]  # a layer with no gradient left is not helped by a higher rate
    if slow and not troubled:
        v = min(v for i, v in ratios if i in slow)
        add("barely_learns", slow[0], f"{_layers(slow)} barely learn{'s' if len(slow) == 1 else ''} (update/weight"
                                      f" {10**v:.0e} a step, healthy near 1e-3): raise the learning rate")  # fmt: skip
    fast = sorted({r["layer"] for rec in records for r in rec["layers"] if (r.get("update_ratio_log10") or -math.inf) > FAST})
    if fast:
        v = max(r["update_ratio_log10"] for rec in records for r in rec["layers"] if r["layer"] in fast and r.get("update_ratio_log10") is not None)
        add("too_fast", fast[0], f"{_layers(fast)} move{'s' if len(fast) == 1 else ''} fast (update/weight up to {10**v:.1g} a step,"
                                 " healthy near 1e-3): lower the learning rate")  # fmt: skip
    for r in last:
        if r.get("dead_fraction", 0.0) >= DEAD:
            add("dead_relu", r["layer"], f"{r['dead_fraction']:.0%} of layer {r['layer']}'s ReLUs never fire"
                                         f" (epoch {records[-1]['epoch']}): lower the learning rate or use leaky_relu")  # fmt: skip
        if r.get("saturated_fraction", 0.0) >= SATURATES:
            add("saturated", r["layer"], f"layer {r['layer']}'s {r['name']} units saturate ({r['saturated_fraction']:.0%} of its"
                                         " outputs at the flat ends): normalise the inputs, initialise smaller or use relu")  # fmt: skip
    return found


class Coach(jitprop.Callback):
    """Watch every layer learn: per epoch, gradient norms, update-to-weight ratios, dead ReLUs and
    saturated units (``history.coach``); at the end, findings in plain words (``history.findings``).

    ``path`` also writes them as JSON: ``{"epochs": [...], "findings": [...]}``.
    """

    name = "coach"
    rank_zero_only = True  # data-parallel: rank 0's view of its part of each batch (the gradients are global)

    def __init__(self, path=None):
        check(path is None or (isinstance(path, str) and path), f"coach: path must be a file name, got {path!r}")
        self.path = path
        self.statistics = CoachStatistics()
        self.records, self.found = [], []

    def transforms(self):
        return [self.statistics]

    @jitprop.hookimpl
    def on_train_begin(self, trainer):
        trainer.history.coach = self.records
        trainer.history.findings = self.found

    @jitprop.hookimpl
    def on_epoch_end(self, trainer, epoch, logs):
        self.records.append(epoch_record(trainer.model, self.statistics.history[-1], epoch, logs))

    @jitprop.hookimpl
    def on_train_end(self, trainer):
        self.found[:] = findings(self.records, trainer)
        if self.path:
            text = json.dumps({"epochs": self.records, "findings": self.found}, indent=1)
            jitprop.checkpoint.atomic_write(self.path, lambda f: f.write(text.encode()))


@jitprop.hookimpl
def register_transforms(register):
    register(CoachStatistics)


@jitprop.hookimpl
def register_callbacks(register):
    register(Coach)
