"""Built-in callbacks: history, early_stopping, terminate_on_nan, gradient_clipping."""

import math

import numpy as np
from numba import njit

import jitprop
from jitprop.components import check, positive_int, real


class EarlyStopping(jitprop.Callback):
    """Stop when a monitored metric has not improved by min_delta for patience epochs.

    With ``restore_best_weights`` the model ends with the weights of its best
    epoch, whatever ended training: this callback, another one, NaN, running
    out of epochs, or an interrupt.
    """

    name = "early_stopping"

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto", restore_best_weights=False):
        check(isinstance(monitor, str) and monitor, f"early_stopping: monitor must be a metric name, got {monitor!r}")
        self.monitor = monitor
        self.patience = positive_int("patience", patience, "early_stopping", minimum=0)
        self.min_delta = abs(real("min_delta", min_delta, "early_stopping"))
        check(mode in ("auto", "min", "max"), f"early_stopping: mode must be auto, min or max, got {mode!r}")
        self.mode = mode
        check(isinstance(restore_best_weights, bool), "early_stopping: restore_best_weights must be true or false")
        self.restore_best_weights = restore_best_weights
        self.best = None
        self.best_epoch = None
        self.stopped_epoch = None
        self._best_weights = None

    @property
    def _sign(self):
        if self.mode == "auto":
            return -1.0 if "acc" in self.monitor else 1.0
        return 1.0 if self.mode == "min" else -1.0

    @jitprop.hookimpl
    def on_train_begin(self, trainer):
        if self.monitor not in trainer.metric_names:
            hint = " (give validation data to monitor val_ metrics)" if self.monitor.startswith("val_") else ""
            raise jitprop.ConfigError(
                f"early_stopping monitors {self.monitor!r}, but training logs only {', '.join(trainer.metric_names)}{hint}"
            )
        self.wait = 0
        self.best = math.inf
        self.best_epoch = self.stopped_epoch = None
        if self.restore_best_weights:
            self._best_weights = np.empty_like(trainer.model.params)

    @jitprop.hookimpl
    def on_epoch_end(self, trainer, epoch, logs):
        value = self._sign * logs[self.monitor]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self._best_weights[...] = trainer.model.params
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.stopped_epoch = epoch
                trainer.stop_training = True
                trainer.stop_reason = (
                    f"early stopping: {self.monitor} has not improved for {self.wait} epoch(s);"
                    f" best was epoch {self.best_epoch}"
                )

    @jitprop.hookimpl
    def on_train_end(self, trainer):
        if self.restore_best_weights and self.best_epoch is not None:
            trainer.model.params[...] = self._best_weights

    @property
    def best_value(self):
        """The best monitored value seen, in its own sign."""
        return None if self.best is None or self.best_epoch is None else self._sign * self.best


class TerminateOnNaN(jitprop.Callback):
    """Stop training at the first iteration whose loss is NaN or infinite."""

    name = "terminate_on_nan"

    @jitprop.hookimpl
    def on_train_begin(self, trainer):
        trainer.stop_on_nan = True  # checked by the training loop after every iteration

    @jitprop.hookimpl
    def on_epoch_end(self, trainer, epoch, logs):
        if not math.isfinite(logs["loss"]):
            trainer.stop_training = True
            trainer.stop_reason = f"terminate_on_nan: the loss became NaN or infinite in epoch {epoch}"


@njit(cache=True)
def clip_by_norm(grads, max_norm):
    total = 0.0
    for i in range(grads.shape[0]):
        total += grads[i] * grads[i]
    norm = math.sqrt(total)
    if norm > max_norm:
        scale = max_norm / (norm + 1e-6)  # torch.nn.utils.clip_grad_norm_
        for i in range(grads.shape[0]):
            grads[i] *= scale
    return norm


class GradientClipping(jitprop.Callback):
    """Scale each batch's gradients so their global L2 norm is at most max_norm (torch clip_grad_norm_)."""

    name = "gradient_clipping"

    def __init__(self, max_norm=1.0):
        self.max_norm = real("max_norm", max_norm, "gradient_clipping", low=0.0, low_open=True)

    @jitprop.hookimpl
    def on_after_backward(self, grads):
        clip_by_norm(grads, self.max_norm)


@jitprop.hookimpl
def register_callbacks(register):
    register(jitprop.History)
    register(EarlyStopping)
    register(TerminateOnNaN)
    register(GradientClipping, aliases=("clip_grad_norm",))
