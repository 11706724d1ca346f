"""jitprop-plot: training curves, to see under- and overfitting.

Adds the command ``jitprop plot RUN.csv|CHECKPOINT.npz -o curves.png``, the
callback ``plot`` (``--callback plot:path=curves.png``), which redraws the
same picture as training goes, and draws jitprop's own pictures (lr-find's
``--plot``, ...) through the hook ``draw_picture``. All are registered
through jitprop's hooks, from the entry point ``plot`` of the group ``jitprop``.
"""

from pathlib import Path

import click

import jitprop

from . import pictures
from .curves import Curves, check_writable, draw_png, read, write_png
from .pictures import draw_picture  # noqa: F401  (the hook: jitprop's pictures, lr-find's and others, as PNG)

__version__ = "0.2.1"
__all__ = ["Curves", "PlotCallback", "check_writable", "draw_png", "pictures", "read", "write_png"]


class PlotCallback(jitprop.Callback):
    """Redraw the training curves (loss, accuracy, learning rate) into a PNG every few epochs."""

    name = "plot"
    rank_zero_only = True  # data-parallel training: rank 0 alone draws

    def __init__(self, path="curves.png", every=1, title=None):
        if not (isinstance(path, str) and path):
            raise jitprop.ConfigError(f"plot: path must be a file name like curves.png, got {path!r}")
        if not (isinstance(every, int) and not isinstance(every, bool) and every >= 1):
            raise jitprop.ConfigError(f"plot: every must be an integer >= 1, got {every!r}")
        if title is not None and not isinstance(title, str):
            raise jitprop.ConfigError(f"plot: title must be text, got {title!r}")
        self.path, self.every, self.title = path, every, title
        self._drawn = None  # the number of epochs in the picture last written
        self._ready = False  # the path was checked at the start of this fit

    def _draw(self, trainer):
        curves = Curves.from_history(trainer.history, f"{trainer.loss.name} loss, {trainer.model.n_params:,} parameters")
        if len(curves) and self._drawn != len(curves):
            write_png(curves, self.path, self.title)
            self._drawn = len(curves)

    @jitprop.hookimpl
    def on_train_begin(self):
        self._ready, self._drawn = False, None
        try:
            check_writable(self.path)  # before the first epoch, not after it
        except jitprop.DataError as exc:
            raise jitprop.DataError(f"plot: {exc}") from None
        self._ready = True

    @jitprop.hookimpl
    def on_epoch_end(self, trainer, epoch):
        if (epoch + 1) % self.every == 0:
            self._draw(trainer)

    @jitprop.hookimpl
    def on_train_end(self, trainer):
        if self._ready:  # not when this fit failed before our on_train_begin checked the path
            self._ready = False
            self._draw(trainer)  # the epochs since the last picture, whatever ended training


@click.command()
@click.argument("source", metavar="RUN.csv|CHECKPOINT.npz")
@click.option("-o", "--output", help="PNG file to write.  [default: SOURCE with the suffix .png]")
@click.option("--title", help="First line of the title.  [default: training curves: SOURCE's name]")
def plot(source, output, title):
    """Draw train and validation loss (and accuracy) per epoch from a run's log or checkpoint.

    SOURCE is a CSV written by the csv_logger callback or a jitprop
    checkpoint. The best validation epoch is marked; a validation loss that
    rises while the training loss falls is overfitting, both staying high is
    underfitting. The PNG is replaced atomically.

    \b
    Examples:
      jitprop train --callback csv_logger:filename=run.csv && jitprop plot run.csv -o curves.png
      jitprop train --checkpoint model.npz && jitprop plot model.npz
      jitprop train --callback plot:path=curves.png   # redrawn after every epoch
    """
    if output is None:
        output = str(Path(source).with_suffix(".png"))
    check_writable(output)  # before reading and drawing
    curves = read(source)
    write_png(curves, output, title)
    click.echo(f"wrote {output}: {curves.summary()}")


@jitprop.hookimpl
def register_commands(cli):
    cli.add_command(plot)


@jitprop.hookimpl
def register_callbacks(register):
    register(PlotCallback)
