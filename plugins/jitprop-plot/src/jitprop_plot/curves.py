"""Training curves: read them from a csv_logger CSV, a checkpoint or a live History, and draw them.

``Curves`` is one run's per-epoch numbers: ``epochs`` (1-based) and
``series`` (metric name -> one float per epoch, NaN where missing).
``draw_png`` turns it into PNG bytes; ``write_png`` writes them so that an
existing picture is replaced whole or not at all. matplotlib is imported
inside ``draw_png`` only, so loading the plugin (``jitprop --help``) stays fast.
"""

import csv
import io
import math
import zipfile
from pathlib import Path

import jitprop

#: The panels, top to bottom: title, y-axis label, and the (train, validation) metrics drawn in them.
PANELS = (("loss", "loss", ("loss", "val_loss")), ("accuracy", "accuracy", ("accuracy", "val_accuracy")))
MARKERS_UP_TO = 60  # epochs; beyond this the points would crowd the lines


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _finite(values):
    return [v for v in values if math.isfinite(v)]


class Curves:
    """Per-epoch metrics of one run. ``source`` names where they came from (for titles)."""

    def __init__(self, epochs, series, source="this run"):
        self.epochs = [int(e) for e in epochs]
        n = len(self.epochs)
        self.series = {}
        for name, values in series.items():
            values = [_float(v) for v in values]
            # History keeps one list per metric: one logged only in later fits is shorter; its values are the latest.
            self.series[name] = [math.nan] * (n - len(values)) + values[-n:] if n else []
        self.source = source

    @classmethod
    def from_history(cls, history, source="this run"):
        """From a ``jitprop.History`` (``trainer.history``, or what ``jitprop.fit`` returns)."""
        return cls([e + 1 for e in history.epoch], history.history, source)

    def __len__(self):
        return len(self.epochs)

    def best_epoch(self):
        """``(epoch, val_loss)`` of the lowest validation loss, or None without validation."""
        values = self.series.get("val_loss", [])
        best = None
        for epoch, value in zip(self.epochs, values):
            if math.isfinite(value) and (best is None or value < best[1]):
                best = (epoch, value)
        return best

    def summary(self):
        """One line: how many epochs, and the best validation epoch."""
        text = f"{len(self)} epoch{'s' if len(self) != 1 else ''}"
        best = self.best_epoch()
        if best is not None:
            text += f"; best val_loss {best[1]:.4g} at epoch {best[0]}"
            if best[0] != self.epochs[-1]:
                text += f" (last {self.series['val_loss'][-1]:.4g})"
        return text


# -- reading ---------------------------------------------------------------


def read(path):
    """The curves stored in ``path``: a csv_logger CSV, or a checkpoint's history (.npz)."""
    p = Path(path)
    if not p.exists():
        raise jitprop.DataError(f"{path}: no such file")
    if p.is_dir():
        raise jitprop.DataError(f"{path}: is a directory, not a training log or checkpoint")
    if p.suffix.lower() == ".npz" or (p.suffix.lower() != ".csv" and zipfile.is_zipfile(p)):
        return read_checkpoint(path)
    return read_csv(path)


def read_checkpoint(path):
    """The history kept in a jitprop checkpoint (every problem is one DataError sentence)."""
    saved = jitprop.checkpoint.load(path)
    history = saved.history
    if not history["epoch"]:
        raise jitprop.DataError(f"{path}: no epochs recorded yet (the checkpoint was saved before training)")
    curves = Curves([e + 1 for e in history["epoch"]], history["history"], Path(path).name)
    if "loss" not in curves.series:
        raise jitprop.DataError(f"{path}: the checkpoint's history has no 'loss'")
    dataset = (saved.info.get("config") or {}).get("dataset")
    if isinstance(dataset, str):
        curves.source += f" ({Path(dataset).name})"
    return curves


def _separator(header):
    if header.startswith("epoch") and len(header) > 5 and not (header[5].isalnum() or header[5] == "_"):
        return header[5]  # csv_logger writes "epoch" first, then its separator
    try:
        return csv.Sniffer().sniff(header, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def read_csv(path):
    """The rows a csv_logger callback wrote: a header (``epoch``, ``loss``, ...) and one row per epoch."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise jitprop.DataError(f"{path}: not a training log (not UTF-8 text); give a csv_logger CSV or a checkpoint") from None
    except OSError as exc:
        raise jitprop.DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise jitprop.DataError(f"{path}: empty file; expected a CSV written by the csv_logger callback")
    rows = list(csv.reader(lines, delimiter=_separator(lines[0])))
    header = [name.strip() for name in rows[0]]
    if "loss" not in header:
        shown = ", ".join(header[:8]) + (", ..." if len(header) > 8 else "")
        raise jitprop.DataError(
            f"{path}: no 'loss' column (columns: {shown}); expected a CSV written by the csv_logger callback"
        )
    columns = {name: [] for name in header}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise jitprop.DataError(f"{path} line {line}: {len(row)} fields, but the header has {len(header)}")
        for name, raw in zip(header, row):
            raw = raw.strip()
            value = _float(raw) if raw else math.nan  # csv_logger leaves a metric an epoch lacks empty
            if raw and math.isnan(value) and raw.lower() != "nan":
                raise jitprop.DataError(f"{path} line {line}: {name} is {raw!r}, not a number")
            columns[name].append(value)
    n = len(columns["loss"])
    if n == 0:
        raise jitprop.DataError(f"{path}: no epochs recorded yet (only a header row)")
    epochs = columns.pop("epoch", None)
    if epochs is None or not all(math.isfinite(e) for e in epochs):
        epochs = range(1, n + 1)
    return Curves(epochs, columns, Path(path).name)


# -- writing ---------------------------------------------------------------


def check_writable(path):
    """Fail before drawing, in one sentence, when ``path`` cannot be written: jitprop's own check
    (``jitprop.checkpoint.write_target``, the one ``atomic_write`` makes), so a read-only picture is
    refused before the work, not after it, and a symlink or ``/dev/null`` is judged as it is written."""
    jitprop.checkpoint.write_target(path)


def write_png(curves, path, title=None):
    """Draw ``curves`` and replace ``path`` with the picture atomically (temporary file, fsync,
    rename: an existing picture is never left half-written; it keeps its mode)."""
    check_writable(path)
    data = draw_png(curves, title)
    jitprop.checkpoint.atomic_write(path, lambda f: f.write(data))


def _log_scale(values):
    finite = _finite(values)
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 100


def draw_png(curves, title=None):
    """The curves as PNG bytes: loss, accuracy when logged, learning rate when it changes; one panel each."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display needed
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    series, epochs = curves.series, curves.epochs
    panels = [(name, label, [m for m in metrics if m in series]) for name, label, metrics in PANELS]
    panels = [p for p in panels if p[2] and any(_finite(series[m]) for m in p[2])] or [PANELS[0][:2] + (["loss"],)]
    lr = _finite(series.get("lr", []))
    show_lr = len(set(lr)) > 1  # a constant rate goes in the title instead of a flat line
    heights = [3.0] * len(panels) + ([1.6] if show_lr else [])

    height = 1.1 + sum(heights)
    fig = Figure(figsize=(8.0, height), dpi=100)  # fixed margins: a constrained layout triples the drawing time
    FigureCanvasAgg(fig)
    grid = {"height_ratios": heights, "left": 0.1, "right": 0.97, "bottom": 0.55 / height, "top": 1 - 0.6 / height}
    axes = fig.subplots(len(heights), 1, sharex=True, squeeze=False, gridspec_kw={**grid, "hspace": 0.08})[:, 0]
    marker = "o" if len(epochs) <= MARKERS_UP_TO else None
    best = curves.best_epoch()
    style = {"": ("train", "tab:blue"), "val_": ("validation", "tab:orange")}

    for ax, (name, label, metrics) in zip(axes, panels):
        for metric in metrics:
            kind, color = style["val_" if metric.startswith("val_") else ""]
            values = series[metric]
            last = _finite(values)
            text = f"{kind} (last {last[-1]:.4g})" if last else kind
            ax.plot(epochs, values, color=color, marker=marker, markersize=3, linewidth=1.6, label=text)
        if name == "loss" and _log_scale([v for m in metrics for v in series[m]]):
            ax.set_yscale("log")
            label += " (log scale)"
        if best is not None:
            ax.axvline(best[0], color="tab:green", linestyle="--", linewidth=1)
            if name == "loss":
                ax.plot([best[0]], [best[1]], marker="*", markersize=14, color="tab:green", linestyle="none",
                        label=f"best val_loss {best[1]:.4g} (epoch {best[0]})")  # fmt: skip
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small")

    if show_lr:
        ax = axes[-1]
        ax.plot(epochs, series["lr"], color="tab:purple", drawstyle="steps-mid", linewidth=1.4)
        if max(lr) / min(lr) > 10 and min(lr) > 0:
            ax.set_yscale("log")
        ax.set_ylabel("learning rate")
        ax.grid(True, alpha=0.3)
        if best is not None:
            ax.axvline(best[0], color="tab:green", linestyle="--", linewidth=1)

    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(epochs) == 1:
        axes[-1].set_xlim(epochs[0] - 1, epochs[0] + 1)
    heading = title or f"training curves: {curves.source}"
    detail = curves.summary() + (f"; lr {lr[0]:.4g}" if lr and not show_lr else "")
    fig.suptitle(f"{heading}\n{detail}", fontsize="medium")

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
