"""Pictures of a run, described in data and drawn elsewhere.

A ``Picture`` is panels of curves (``Series``) and marked points; jitprop
builds them (lr-find's loss against learning rate, ...) and never imports a
plotting library. ``draw(picture, path)`` hands it to the first plugin that
implements the ``draw_picture`` hook (jitprop-plot draws a PNG with
matplotlib); ``text(picture)`` renders it for a terminal, which is what a
command shows when no plugin draws.
"""

import math
from dataclasses import dataclass, field


@dataclass
class Series:
    """One curve: ``y`` against ``x``; ``points`` draws markers only."""

    label: str
    x: list
    y: list
    points: bool = False


@dataclass
class Mark:
    """A point to point out (a suggestion, a best epoch), with its label."""

    label: str
    x: float
    y: float


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: list = field(default_factory=list)
    marks: list = field(default_factory=list)
    xlog: bool = False
    ylog: bool = False


@dataclass
class Picture:
    """``panels`` laid out ``columns`` to a row, under ``title``; ``shared_axes``: one scale for
    all panels, so they compare at a glance (a sweep's runs)."""

    title: str
    panels: list
    columns: int = 1
    shared_axes: bool = False


def draw(picture, path):
    """Write ``picture`` to ``path`` through a ``draw_picture`` plugin: True when one drew it,
    False when none is installed (or none could, matplotlib missing, say)."""
    from ..plugins.manager import load_plugins  # plugins load on first use, not on import

    return bool(load_plugins().hook.draw_picture(picture=picture, path=str(path)))


#: Characters of the terminal rendering: one per series, in order, and the marks.
GLYPHS, MARK = "*o+x#%@", "V"


def text(picture, width=64, height=14):
    """``picture`` as lines of text: each panel a character plot, its axes labelled."""
    out = [picture.title]
    for panel in picture.panels:
        out += _text_panel(panel, width, height)
    return "\n".join(out)


def _scale(values, log):
    vals = [math.log10(v) if log else v for v in values if _plottable(v, log)]
    return (min(vals), max(vals)) if vals else (0.0, 1.0)


def _plottable(v, log):
    return v is not None and math.isfinite(v) and (v > 0 or not log)


def _text_panel(panel, width, height):
    xs = [x for s in panel.series for x in s.x] + [m.x for m in panel.marks]
    ys = [y for s in panel.series for y in s.y] + [m.y for m in panel.marks]
    (x0, x1), (y0, y1) = _scale(xs, panel.xlog), _scale(ys, panel.ylog)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    grid = [[" "] * width for _ in range(height)]

    def put(x, y, ch):
        if _plottable(x, panel.xlog) and _plottable(y, panel.ylog):
            u = (math.log10(x) if panel.xlog else x) - x0
            v = (math.log10(y) if panel.ylog else y) - y0
            col = min(width - 1, int(round(u / (x1 - x0) * (width - 1))))
            row = height - 1 - min(height - 1, int(round(v / (y1 - y0) * (height - 1))))
            grid[row][col] = ch

    for glyph, s in zip(GLYPHS * 8, panel.series):
        for x, y in zip(s.x, s.y):
            put(x, y, glyph)
    for m in panel.marks:
        put(m.x, m.y, MARK)

    def label(v, log):
        return f"{10**v:.3g}" if log else f"{v:.4g}"

    top, bottom = label(y1, panel.ylog), label(y0, panel.ylog)
    pad = max(len(top), len(bottom))
    lines = [f"{panel.title}  ({panel.ylabel} against {panel.xlabel}{', log scale' if panel.xlog else ''})"]
    for i, row in enumerate(grid):
        tick = top if i == 0 else bottom if i == height - 1 else ""
        lines.append(f"{tick:>{pad}} |{''.join(row)}")
    lines.append(" " * pad + " +" + "-" * width)
    left, right = label(x0, panel.xlog), label(x1, panel.xlog)
    lines.append(" " * (pad + 2) + left + " " * max(1, width - len(left) - len(right)) + right)
    keys = [f"{g} {s.label}" for g, s in zip(GLYPHS * 8, panel.series)] + [f"{MARK} {m.label}" for m in panel.marks]
    lines.append(" " * (pad + 2) + "   ".join(keys))
    return lines
