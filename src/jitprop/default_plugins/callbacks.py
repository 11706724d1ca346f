"""Built-in callbacks: history, early stopping, learning-rate control, checkpoints, logs, NaN and clipping guards."""

import csv
import io
import math
import os

import numpy as np

import jitprop
from jitprop.components import check, positive_int, real
from jitprop.default_plugins.transforms import GradientClipping as GradientClippingTransform


class Monitor:
    """Tracks the best value of one logged metric: lower is better, or higher for accuracy."""

    def __init__(self, owner, monitor, mode="auto", min_delta=0.0):
        check(isinstance(monitor, str) and monitor, f"{owner}: monitor must be a metric name, got {monitor!r}")
        check(mode in ("auto", "min", "max"), f"{owner}: mode must be auto, min or max, got {mode!r}")
        self.owner, self.monitor, self.mode = owner, monitor, mode
        self.min_delta = abs(real("min_delta", min_delta, owner))
        self.sign = (-1.0 if "acc" in monitor else 1.0) if mode == "auto" else (1.0 if mode == "min" else -1.0)
        self.reset()

    def reset(self):
        self.best, self.best_epoch = math.inf, None

    def check_logged(self, trainer):
        if self.monitor not in trainer.metric_names:
            hint = " (give validation data to monitor val_ metrics)" if self.monitor.startswith("val_") else ""
            raise jitprop.ConfigError(
                f"{self.owner} monitors {self.monitor!r}, but training logs only {', '.join(trainer.metric_names)}{hint}"
            )

    def update(self, epoch, logs):
        """True when this epoch's value beats the best so far by more than min_delta."""
        value = self.sign * logs[self.monitor]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch = value, epoch
            return True
        return False

    @property
    def best_value(self):
        return None if self.best_epoch is None else self.sign * self.best

    def get_state(self):
        return {"best": self.best if math.isfinite(self.best) else None, "best_epoch": self.best_epoch}

    def set_state(self, state):
        self.best = math.inf if state["best"] is None else state["best"]
        self.best_epoch = state["best_epoch"]


class EarlyStopping(jitprop.Callback):
    """Stop when a monitored metric has not improved by min_delta for patience epochs.

    With ``restore_best_weights`` the model ends with the weights of its best
    epoch, whatever ended training: this callback, another one, NaN, running
    out of epochs, or an interrupt.
    """

    name = "early_stopping"

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto", restore_best_weights=False):
        self._monitor = Monitor("early_stopping", monitor, mode, min_delta)
        self.monitor, self.mode, self.min_delta = monitor, mode, self._monitor.min_delta
        self.patience = positive_int("patience", patience, "early_stopping", minimum=0)
        check(isinstance(restore_best_weights, bool), "early_stopping: restore_best_weights must be true or false")
        self.restore_best_weights = restore_best_weights
        self.wait = 0
        self.stopped_epoch = None
        self._best_weights = None
        self._resumed = False

    @property
    def best_epoch(self):
        return self._monitor.best_epoch

    @property
    def best_value(self):
        """The best monitored value seen."""
        return self._monitor.best_value

    @jitprop.hookimpl
    def on_train_begin(self, trainer):
        self._monitor.check_logged(trainer)
        if self.restore_best_weights and self._best_weights is None:
            self._best_weights = np.empty_like(trainer.model.params)
            self._best_state = trainer.model.state.copy()
        if not self._resumed:  # a resumed run keeps its counters
            self.wait, self.stopped_epoch = 0, None
            self._monitor.reset()
        self._resumed = False

    @jitprop.hookimpl
    def on_epoch_end(self, trainer, epoch, logs):
        if self._monitor.update(epoch, logs):
            self.wait = 0
            if self.restore_best_weights:
                self._best_weights[...] = trainer.model.params
                self._best_state[...] = trainer.model.state  # batch norm's statistics go with the weights
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.stopped_epoch = epoch
                trainer.stop_training = True
                trainer.stop_reason = (
                    f"early stopping: {self.monitor} has not improved for {self.wait} epoch(s);"
                    f" best was epoch {self.best_epoch + 1 if self.best_epoch is not None else '-'}"
                )

    @jitprop.hookimpl
    def on_train_end(self, trainer):
        if self.restore_best_weights and self.best_epoch is not None:
            trainer.model.params[...] = self._best_weights
            trainer.model.state[...] = self._best_state

    def get_state(self):
        arrays = {}
        if self.restore_best_weights and self.best_epoch is not None:
            arrays["best_weights"] = self._best_weights.copy()
            arrays["best_state"] = self._best_state.copy()
        return {"wait": self.wait, **self._monitor.get_state()}, arrays

    def set_state(self, meta, arrays):
        self.wait = meta["wait"]
        self._monitor.set_state(meta)
        if "best_weights" in arrays:
            self._best_weights = arrays["best_weights"].copy()
            self._best_state = arrays["best_state"].copy() if "best_state" in arrays else np.zeros(0)
        self._resumed = True


class ReduceLROnPlateau(jitprop.Callback):
    """Multiply the learning rate by factor when a metric stalls for patience epochs (Keras, torch)."""

    name = "reduce_lr_on_plateau"

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, mode="auto", min_delta=1e-4, cooldown=0, min_lr=0.0):
        self._monitor = Monitor("reduce_lr_on_plateau", monitor, mode, min_delta)
        self.monitor, self.mode, self.min_delta = monitor, mode, self._monitor.min_delta
        self.factor = real("factor", factor, "reduce_lr_on_plateau", low=0.0, high=1.0, low_open=True, high_open=True)
        self.patience = positive_int("patience", patience, "reduce_lr_on_plateau", minimum=0)
        self.cooldown = positive_int("cooldown", cooldown, "reduce_lr_on_plateau", minimum=0)
        self.min_lr = real("min_lr", min_lr, "reduce_lr_on_plateau", low=0.0)
        self.wait = self.cooling = 0
        self._resumed = False

    @jitprop.hookimpl
    def on_train_begin(self, trainer):
        self._monitor.check_logged(trainer)
        if not self._resumed:
            self.wait = self.cooling = 0
            self._monitor.reset()
        self._resumed = False

    @jitprop.hookimpl
    def on_epoch_end(self, trainer, epoch, logs):
        if self.cooling:
            self.cooling -= 1
        if self._monitor.update(epoch, logs):
            self.wait = 0
        elif not self.cooling:
            self.wait += 1
            if self.wait > self.patience:
                # The optimizer's base rate: schedules and the next epoch start from it.
                trainer.optimizer.lr = max(trainer.optimizer.lr * self.factor, self.min_lr)
                self.wait, self.cooling = 0, self.cooldown

    def get_state(self):
        return {"wait": self.wait, "cooling": self.cooling, **self._monitor.get_state()}, {}

    def set_state(self, meta, arrays):
        self.wait, self.cooling = meta["wait"], meta["cooling"]
        self._monitor.set_state(meta)
        self._resumed = True


class LRScheduler(jitprop.Callback):
    """Set each epoch's learning rate from a registered schedule, e.g. schedule="cosine", T_max=20."""

    name = "lr_scheduler"

    def __init__(self, schedule="step", **options):
        self._schedule = jitprop.schedule(schedule, **options)
        self.schedule = self._schedule.name

    def config(self):
        return {"schedule": self.schedule, **self._schedule.config()}

    @jitprop.hookimpl
    def on_epoch_begin(self, trainer, epoch):
        trainer.lr = self._schedule(epoch, trainer.optimizer.lr)


class ModelCheckpoint(jitprop.Callback):
    """Save a checkpoint every epoch, or only when a monitored metric improves (save_best_only).

    ``filepath`` may hold ``{epoch}`` (1-based) and metric names, e.g. "ckpt-{epoch:03d}.npz".
    """

    name = "model_checkpoint"
    rank_zero_only = True

    def __init__(self, filepath="checkpoint.npz", monitor="val_loss", save_best_only=False, mode="auto"):
        check(isinstance(filepath, str) and filepath, f"model_checkpoint: filepath must be a path, got {filepath!r}")
        self.filepath = filepath
        self._monitor = Monitor("model_checkpoint", monitor, mode)
        self.monitor, self.mode = monitor, mode
        check(isinstance(save_best_only, bool), "model_checkpoint: save_best_only must be true or false")
        self.save_best_only = save_best_only
        self.saved = []
        self._resumed = False

    @jitprop.hookimpl
    def on_train_begin(self, trainer):
        if self.save_best_only:
            self._monitor.check_logged(trainer)
            if not self._resumed:
                self._monitor.reset()
        self._resumed = False

    @jitprop.hookimpl
    def on_epoch_end(self, trainer, epoch, logs):
        if self.save_best_only and not self._monitor.update(epoch, logs):
            return
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, ValueError, IndexError) as exc:
            raise jitprop.ConfigError(f"model_checkpoint: cannot fill in filepath {self.filepath!r}: {exc}") from None
        jitprop.checkpoint.save(path, trainer)
        if not self.saved or self.saved[-1] != path:  # each file once: a long run saving to one file stays flat
            self.saved.append(path)

    def get_state(self):
        return self._monitor.get_state(), {}

    def set_state(self, meta, arrays):
        self._monitor.set_state(meta)
        self._resumed = True


class CSVLogger(jitprop.Callback):
    """Append each epoch's metrics as a row of a CSV file (header on the first row).

    Nothing is opened until the first epoch ends: a run that fails before it (an unknown
    monitor, a divergence in the first epoch) leaves an existing log as it was. A replaced log
    is replaced whole, header and first row at once (``checkpoint.atomic_write``); the rows
    after it are appended.
    """

    name = "csv_logger"
    rank_zero_only = True

    def __init__(self, filename="training.csv", separator=",", append=False):
        check(isinstance(filename, str) and filename, f"csv_logger: filename must be a path, got {filename!r}")
        self.filename, self.separator = filename, separator
        check(isinstance(append, bool), "csv_logger: append must be true or false")
        self.append = append
        self._file = None
        self._keys = None
        self._appends = False

    def _target(self):
        try:
            return jitprop.checkpoint.write_target(self.filename)
        except jitprop.DataError as exc:
            raise jitprop.DataError(f"csv_logger: {exc}") from None

    def _appending(self, trainer):
        # A run that continues (resume, or a second fit) appends to what it wrote before.
        return self.append or trainer.epoch > 0

    def writes(self, trainer):
        """What this run will do to the log, in one line (``jitprop train`` prints it)."""
        target, regular = self._target()
        existing = regular and os.path.exists(target) and os.path.getsize(target) > 0
        if not existing:
            return f"csv_logger: writes {self.filename}"
        if self._appending(trainer):
            return f"csv_logger: appends to {self.filename}"
        return f"csv_logger: replaces {self.filename} when the first epoch ends (append=true keeps it)"

    @jitprop.hookimpl
    def on_train_begin(self, trainer):
        self._target()  # an unwritable log fails now, not after the first epoch
        self._appends = self._appending(trainer)
        self._file, self._keys = None, None

    def _open(self, first_rows):
        """Open the log at the first epoch's end and write ``first_rows(keys)``'s text into it."""
        target, regular = self._target()
        try:
            if self._appends and regular and os.path.exists(target) and os.path.getsize(target) > 0:
                with open(target, newline="") as f:
                    header = next(csv.reader(f, delimiter=self.separator), None)
                self._keys = header[1:] if header else None
                self._file = open(target, "a", newline="")
                self._file.write(first_rows())
            elif regular and not self._appends:
                text = first_rows()
                jitprop.checkpoint.atomic_write(target, lambda f: f.write(text.encode()))
                self._file = open(target, "a", newline="")
            else:  # a new file, or a device or FIFO: written as it is
                self._file = open(target, "a" if self._appends else "w", newline="")
                self._file.write(first_rows())
        except OSError as exc:
            raise jitprop.DataError(f"csv_logger: cannot write {self.filename}: {exc.strerror or exc}") from None

    def _rows(self, epoch, logs):
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=self.separator)
        if self._keys is None:
            self._keys = list(logs)
            writer.writerow(["epoch", *self._keys])
        writer.writerow([epoch + 1, *(logs.get(k, "") for k in self._keys)])
        return buffer.getvalue()

    @jitprop.hookimpl
    def on_epoch_end(self, epoch, logs):
        if self._file is None:
            self._open(lambda: self._rows(epoch, logs))
        else:
            self._file.write(self._rows(epoch, logs))
        self._file.flush()

    @jitprop.hookimpl
    def on_train_end(self):
        if self._file is not None:
            self._file.close()
            self._file = None


class TerminateOnNaN(jitprop.Callback):
    """Stop training after an epoch whose logged loss or metric is NaN or infinite.

    Training itself already stops (or rolls back) at the first batch whose loss
    or gradient is not finite, before its update (``on_divergence``); this
    also watches validation loss and metrics.
    """

    name = "terminate_on_nan"

    @jitprop.hookimpl
    def on_epoch_end(self, trainer, epoch, logs):
        bad = sorted(k for k, v in logs.items() if isinstance(v, float) and not math.isfinite(v))
        if bad:
            trainer.stop_training = True
            trainer.stop_reason = f"terminate_on_nan: {', '.join(bad)} became NaN or infinite in epoch {epoch + 1}"


class GradientClipping(jitprop.Callback):
    """Clip each batch's gradients: the gradient_clipping transform, as a callback (run files, --callback)."""

    name = "gradient_clipping"

    def __init__(self, max_norm=1.0, clip_value=None):
        self._transform = GradientClippingTransform(max_norm, clip_value)  # checks the options
        self.max_norm, self.clip_value = max_norm, clip_value

    def transforms(self):
        return [self._transform]


@jitprop.hookimpl
def register_callbacks(register):
    register(jitprop.History)
    register(EarlyStopping)
    register(ReduceLROnPlateau)
    register(LRScheduler)
    register(ModelCheckpoint)
    register(CSVLogger)
    register(TerminateOnNaN)
    register(GradientClipping, aliases=("clip_grad_norm",))
