"""jitprop's pictures (``jitprop.views.picture.Picture``: lr-find's curve, ...) drawn as PNG files.

jitprop describes each picture as panels of curves and marked points and
asks its ``draw_picture`` hook for a drawing; this module answers with
matplotlib. ``figure(picture)`` builds the matplotlib figure (tests count
its lines), ``write(picture, path)`` replaces ``path`` with it atomically.
"""

import io
import math

import jitprop

from .curves import check_writable


def figure(picture):
    """A matplotlib Figure of ``picture``: one axes per panel, ``picture.columns`` to a row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display needed
    from matplotlib.figure import Figure

    n = len(picture.panels)
    cols = max(1, min(picture.columns, n))
    rows = -(-n // cols)
    fig = Figure(figsize=(4.2 * cols + 1.0, 3.2 * rows + 0.9), dpi=100)
    FigureCanvasAgg(fig)
    shared = bool(getattr(picture, "shared_axes", False))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=shared, sharey=shared)
    for ax, panel in zip(axes.flat, picture.panels):
        for s in panel.series:
            if s.points:
                ax.plot(s.x, s.y, linestyle="none", marker="o", markersize=4, label=s.label)
            else:
                ax.plot(s.x, s.y, linewidth=1.5, label=s.label)
        for m in panel.marks:
            if math.isfinite(m.x) and math.isfinite(m.y):
                ax.plot([m.x], [m.y], linestyle="none", marker="o", markersize=9, color="tab:red", label=m.label)
        if panel.xlog:
            ax.set_xscale("log")
        if panel.ylog:
            ax.set_yscale("log")
        ax.set_title(panel.title, fontsize="medium")
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(True, alpha=0.3)
        if panel.series or panel.marks:
            ax.legend(loc="best", fontsize="small")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(picture.title, fontsize="medium")
    fig.tight_layout()
    return fig


def write(picture, path):
    """Draw ``picture`` and replace ``path`` with the PNG atomically (never half-written)."""
    check_writable(path)
    buffer = io.BytesIO()
    figure(picture).savefig(buffer, format="png")
    data = buffer.getvalue()
    jitprop.checkpoint.atomic_write(path, lambda f: f.write(data))


@jitprop.hookimpl
def draw_picture(picture, path):
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # jitprop then shows the picture as text
        return None
    write(picture, path)
    return True
