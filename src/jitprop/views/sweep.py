"""Sweeps: every combination of a few settings trained on the same data and seed, on every core.

``run_sweep(build, grid)`` trains one run per combination of ``grid``'s values
(learning rate, batch size, hidden widths, epochs, ...): ``build(settings,
callbacks)`` returns what the run trains (a ``Trainer``, its data and
epochs), so the command line and Python share everything else. Runs go to
one worker per core: processes forked from this one on Linux (they inherit
the compiled step, so nothing compiles or loads again, and each has its own
Python lock: a small model's Python between steps is a third of its time),
threads elsewhere (the compiled step runs without Python's lock there).

The result is a ``Sweep``: one ``SweepRun`` per combination with the
numbers that compare them (best and final validation loss, the epoch of the
best, time per epoch, samples a second, iterations per epoch), as a table,
CSV or JSON, and a picture: one panel per run with its train and
validation curves, laid out so that the batch-size trade-off (noisier,
quicker curves for small batches) and too small or too large rates show.
"""

import csv
import io
import itertools
import json
import math
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..backends.compiled import CompiledBackend
from ..errors import ConfigError, JitpropError
from ..plugins.hookspecs import hookimpl
from ..runtime import threads

#: Settings a sweep varies, in the order the table shows them.
SETTINGS = ("lr", "batch_size", "hidden", "epochs")


@dataclass
class SweepRun:
    """One combination's run: its ``settings`` and what it measured (``error`` when it could not train)."""

    settings: dict
    history: dict = field(default_factory=dict)
    best_val_loss: float = math.nan
    best_epoch: int | None = None
    final_val_loss: float = math.nan
    final_loss: float = math.nan
    seconds_per_epoch: float = math.nan
    samples_per_second: float = math.nan
    iterations_per_epoch: int = 0
    error: str | None = None

    def row(self):
        out = {k: _shown(v) for k, v in self.settings.items()}
        out.update(best_val_loss=self.best_val_loss, best_epoch=self.best_epoch, final_val_loss=self.final_val_loss,
                   final_loss=self.final_loss, seconds_per_epoch=self.seconds_per_epoch,
                   samples_per_second=self.samples_per_second, iterations_per_epoch=self.iterations_per_epoch)  # fmt: skip
        if self.error:
            out["error"] = self.error
        return out


def _shown(value):
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


class Sweep:
    """The runs of a sweep, in the grid's order: a table (``str``), ``rows()``, ``to_csv()``,
    ``to_json()``, ``best()`` and ``picture()``."""

    def __init__(self, runs, seconds, workers):
        self.runs, self.seconds, self.workers = runs, seconds, workers

    def __len__(self):
        return len(self.runs)

    def __iter__(self):
        return iter(self.runs)

    def __getitem__(self, i):
        return self.runs[i]

    def rows(self):
        return [run.row() for run in self.runs]

    def best(self):
        """The run with the lowest best validation loss (training loss without validation rows)."""
        good = [r for r in self.runs if not r.error]
        key = (lambda r: r.best_val_loss) if any(math.isfinite(r.best_val_loss) for r in good) else (lambda r: r.final_loss)
        return min((r for r in good if math.isfinite(key(r))), key=key, default=None)

    def to_csv(self):
        rows = self.rows()
        names = list(dict.fromkeys(k for row in rows for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def to_json(self):
        runs = [{**run.row(), "history": run.history} for run in self.runs]
        return json.dumps({"seconds": self.seconds, "workers": self.workers, "runs": runs}, indent=1, default=float)

    def __str__(self):
        varied = [k for k in self.runs[0].settings] if self.runs else []
        head = [*varied, "best val_loss", "at epoch", "final val_loss", "s/epoch", "samples/s", "iter/epoch"]
        lines = []
        for run in self.runs:
            cells = [str(_shown(run.settings[k])) for k in varied]
            if run.error:
                cells += [f"failed: {run.error}"]
            else:
                cells += [f"{run.best_val_loss:.4f}", str(run.best_epoch or "-"), f"{run.final_val_loss:.4f}",
                          f"{run.seconds_per_epoch:.3f}", f"{run.samples_per_second:,.0f}", str(run.iterations_per_epoch)]  # fmt: skip
            lines.append(cells)
        # A failed run's row ends at its error: a column may have no cells at all (every run failed).
        widths = [max([len(h), *(len(c[i]) for c in lines if i < len(c))]) for i, h in enumerate(head)]
        out = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
        out += ["  ".join(c.rjust(w) for c, w in zip(cells, widths)) for cells in lines]
        best = self.best()
        if best is not None:
            out.append(f"best: {', '.join(f'{k} {_shown(v)}' for k, v in best.settings.items())}"
                       f" (validation loss {best.best_val_loss:.4f} at epoch {best.best_epoch})")  # fmt: skip
        return "\n".join(out)

    __repr__ = __str__

    def picture(self, title="sweep"):
        """One panel per run (train and validation loss per epoch), a row per value of the first setting."""
        from .picture import Mark, Panel, Picture, Series

        panels = []
        for run in self.runs:
            label = ", ".join(f"{k} {_shown(v)}" for k, v in run.settings.items())
            panel = Panel(label, "epoch", "loss", ylog=True)
            if not run.error:
                epochs = list(range(1, len(run.history.get("loss", [])) + 1))
                panel.series.append(Series("train", epochs, run.history.get("loss", [])))
                if "val_loss" in run.history:
                    panel.series.append(Series("validation", epochs, run.history["val_loss"]))
                if run.best_epoch:
                    panel.marks.append(Mark(f"best {run.best_val_loss:.3g}", run.best_epoch, run.best_val_loss))
            panels.append(panel)
        first = next(iter(self.runs[0].settings), None) if self.runs else None
        columns = max(1, len(self.runs) // max(1, len({_shown(r.settings[first]) for r in self.runs}))) if first else 1
        return Picture(title, panels, columns=columns, shared_axes=True)


def combinations(grid):
    """Every combination of ``grid`` (setting -> list of values), the first setting varying slowest."""
    names = [k for k in grid if grid[k]]
    for name in names:
        if not isinstance(grid[name], (list, tuple)):
            raise ConfigError(f"sweep: {name} must be a list of values, got {grid[name]!r}")
    return [dict(zip(names, values)) for values in itertools.product(*(grid[k] for k in names))]


def _train(build, settings):
    """One run; anything that goes wrong is its error line, not the sweep's end."""
    run = SweepRun(settings)
    try:
        timer = _EpochTimer()
        trainer, X, y, validation, epochs = build(settings, [timer])
        history = trainer.fit(X, y, epochs=epochs, validation_data=validation)
    except JitpropError as exc:
        run.error = str(exc)
        return run
    logs = history.history
    run.history = {k: [float(v) for v in vals] for k, vals in logs.items()}
    val = logs.get("val_loss") or []
    finite = [(v, i) for i, v in enumerate(val) if math.isfinite(v)]
    if finite:
        run.best_val_loss, best = min(finite)
        run.best_epoch = best + 1
        run.final_val_loss = float(val[-1])
    run.final_loss = float(logs["loss"][-1]) if logs.get("loss") else math.nan
    if timer.seconds:  # the median epoch: the first one's compile (or cache load) left out
        run.seconds_per_epoch = float(np.median(timer.seconds))
        run.samples_per_second = len(X) / run.seconds_per_epoch
    run.iterations_per_epoch = trainer.n_batches
    if trainer.divergence is not None:
        run.error = trainer.stop_reason
    return run


class _EpochTimer:
    """Each epoch's wall time, validation included, as the run saw it beside the others."""

    def __init__(self):
        self.seconds, self.started = [], None

    @hookimpl
    def on_epoch_begin(self):
        self.started = time.perf_counter()

    @hookimpl
    def on_epoch_end(self):
        self.seconds.append(time.perf_counter() - self.started)


_build = None  # the running sweep's build function, inherited by forked workers


def _train_at(settings):
    return _train(_build, settings)


def _worker_signals():
    """A worker leaves Ctrl-C and SIGTERM to the sweep's own process, which ends the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _in_workers(todo, workers):
    """Every run of ``todo``, ``workers`` at a time, in order: in processes forked from this one on
    Linux (each with its own Python lock, so their Python between steps runs in parallel too, and
    the compiled step inherited), in threads elsewhere. Ctrl-C reaches this process alone (the
    workers ignore it) and ends the workers at once."""
    if "fork" in multiprocessing.get_all_start_methods() and sys.platform.startswith("linux"):
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=_worker_signals)
        try:
            runs = pool.map(_train_at, todo, chunksize=1)
            pool.close()
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()
        return runs
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_train_at, todo))


def run_sweep(build, grid, workers=None):
    """Train ``build(settings)`` for every combination of ``grid``, ``workers`` at a time (default:
    the CPU count); a ``Sweep`` in the grid's order.

    ``build(settings, callbacks)`` returns ``(trainer, X, y, validation_data, epochs)``, the
    trainer with ``callbacks`` among its own. Models whose own
    kernels already split each batch over the cores (conv2d, max_pool2d) train one at a time.
    """
    todo = combinations(grid)
    if not todo:
        raise ConfigError("sweep: give at least one setting with values to try")
    started = time.perf_counter()
    trainer, X, y, validation, _ = build(todo[0], [])
    if trainer._own_threads():  # Numba's thread pool takes one parallel kernel at a time
        workers = 1
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    program = CompiledBackend.build_program(trainer) if workers > 1 else None
    if program is not None and not program.train_chunk.signatures:  # compiled (or loaded) here, once, for every worker
        rows = min(len(X), 2 * trainer.batch_size)
        trainer.fit(X[:rows], y[:rows], epochs=1, validation_data=None if validation is None else
                    (validation[0][:rows], validation[1][:rows]))  # fmt: skip
    global _build
    if workers == 1:
        runs = [_train(build, settings) for settings in todo]
    else:
        _build = build
        try:
            with threads.capped(1):  # a run per core, each on one
                runs = _in_workers(todo, workers)
        finally:
            _build = None
    return Sweep(runs, time.perf_counter() - started, workers)



def sweep(X, y, loss="cross_entropy", optimizer="adam", lr=None, batch_size=(32,), hidden=((128, 64),), epochs=(20,),
          activation="relu", model=None, validation_split=0.2, seed=0, workers=None):  # fmt: skip
    """Train an MLP (or ``model(settings)``, a function returning a ``Sequential``) for every
    combination of ``lr``, ``batch_size``, ``hidden`` and ``epochs`` (lists of values; ``lr``
    defaults to the optimizer's own) on the same rows, validation split and seed; a ``Sweep``."""
    from .. import api
    from ..model.architectures import mlp
    from ..model.sequential import Sequential
    from ..training.trainer import Trainer, check_validation_split, split_indices

    loss, base = api.loss(loss), api.optimizer(optimizer)
    X, y = np.asarray(X), np.asarray(y)
    grid = {"lr": list(lr) if lr is not None else [base.lr], "batch_size": list(batch_size),
            "hidden": [list(h) for h in hidden] if model is None else [], "epochs": list(epochs)}  # fmt: skip
    rows, validation = np.arange(len(X)), None
    if check_validation_split(validation_split):
        rows, val = split_indices(len(X), validation_split, seed)
        validation = (X[val], y[val])
    outputs = int(y.max()) + 1 if loss.target == "class" else y.reshape(len(y), -1).shape[1]

    def build(settings, callbacks):
        if model is not None:
            net = model(settings)
        else:
            specs = mlp(outputs, settings["hidden"], activation, 0.0)
            net = Sequential([api.layer(**spec) for spec in specs], input_shape=X.shape[1:], seed=seed)
        opt = api.optimizer(base.name, **{**base.config(), "lr": settings["lr"]})
        trainer = Trainer(net, loss=loss, optimizer=opt, batch_size=settings["batch_size"], seed=seed, callbacks=callbacks)
        return trainer, X[rows], y[rows], validation, settings["epochs"]

    return run_sweep(build, grid, workers)
