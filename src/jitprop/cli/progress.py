"""What ``jitprop train`` shows while it trains: a line per epoch, and a live bar on a terminal."""

import time

import click

from ..plugins.hookspecs import hookimpl


class EpochPrinter:
    """One summary line per epoch."""

    rank_zero_only = True

    def __init__(self, epochs):
        self.epochs = epochs
        self.started = time.perf_counter()

    @hookimpl
    def on_epoch_begin(self):
        self.started = time.perf_counter()

    @hookimpl
    def on_epoch_end(self, epoch, logs):
        parts = [f"epoch {epoch + 1:>{len(str(self.epochs))}}/{self.epochs}"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in logs:
                parts.append(f"{key} {logs[key]:.4f}")
        parts.append(f"{time.perf_counter() - self.started:.2f}s")
        click.echo("  ".join(parts))


class ProgressBar:
    """A live bar over the batches of each epoch, updated between compiled runs of batches."""

    rank_zero_only = True

    def __init__(self, epochs):
        self.epochs = epochs
        self.bar = None

    @hookimpl
    def on_epoch_begin(self, trainer, epoch):
        self.bar = click.progressbar(length=trainer.n_batches, label=f"epoch {epoch + 1}/{self.epochs}")
        self.bar.__enter__()

    @hookimpl
    def on_train_chunk_end(self, batches_done):
        if self.bar is not None:
            self.bar.update(batches_done - self.bar.pos)

    @hookimpl
    def on_epoch_end(self):
        self._close()

    @hookimpl
    def on_train_end(self):
        self._close()

    def _close(self):
        if self.bar is not None:
            # Erase the bar and show the cursor again: the epoch's summary line takes its place.
            click.echo("\r\x1b[2K\x1b[?25h", nl=False)
            self.bar = None
