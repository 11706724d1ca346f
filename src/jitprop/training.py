"""fit / evaluate / value_and_grad: the loop of prediction, loss, backpropagation and update.

Words as a learner knows them: an *iteration* is one update of the weights
from one *batch* of examples; an *epoch* is one pass over every training
example, in a fresh random order each time; after each epoch the model is
scored on *validation* data it never trains on, which shows under- and
overfitting as they happen.
"""

import math
import os
import re
import time
import warnings
from array import array

import numba
import numpy as np
import pluggy
from numba.core.errors import NumbaError

from . import api, compiler, hookspecs, registry
from .callbacks import Callback
from .components import kernel, positive_int, real
from .data import as_inputs, as_targets
from .errors import ConfigError, DataError, PluginError
from .hookspecs import hookimpl
from .losses import count_correct_binary, count_correct_classes
from .kernels import all_finite, feistel_bits, gather, gather_rows, shuffle_key, shuffle_order
from .model import Workspace, mix_seed
from .plugins import load_plugins

#: Seconds of training per compiled call: interrupts and progress are served between calls.
CHUNK_SECONDS = 0.1

#: loss target -> kernel counting correct predictions in a batch
ACCURACY = {"class": count_correct_classes, "binary": count_correct_binary}

#: ``on_divergence`` choices: stop at the bad batch, or roll back the epoch and lower the rate.
DIVERGENCE = ("stop", "rollback")
MAX_ROLLBACKS = 5
ROLLBACK_FACTOR = 0.5

#: Hooks that need the Python loop: they run between the steps of one batch.
PER_BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_after_backward")

LIFECYCLE_HOOKS = (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_after_backward",
    "on_train_chunk_end",
)


class History(Callback):
    """Records every epoch's logs (``history.history``) and every iteration's loss.

    ``iteration_loss`` is a compact ``array('d')`` (8 bytes an iteration, a list
    would take four times that), so a long run's history stays small.
    """

    name = "history"

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.iteration_loss = array("d")

    @hookimpl
    def on_epoch_end(self, trainer, epoch, logs):
        self.epoch.append(epoch)
        # Every list lines up with ``epoch``: a metric missing from some epochs (validation
        # added in a later fit, say) holds NaN there.
        for key in logs.keys() - self.history.keys():
            self.history[key] = [math.nan] * (len(self.epoch) - 1)
        for key, values in self.history.items():
            values.append(logs.get(key, math.nan))
        self.iteration_loss.frombytes(np.ascontiguousarray(trainer.batch_losses[: trainer.batches_done]).tobytes())

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


def _hook_relay(callbacks):
    """A plugin manager for one run: installed plugins' lifecycle hooks, then the run's callbacks."""
    global_pm = load_plugins()
    pm = pluggy.PluginManager("jitprop")
    pm.add_hookspecs(hookspecs)
    for plugin in global_pm.get_plugins():
        callers = global_pm.get_hookcallers(plugin) or []
        if any(c.name in LIFECYCLE_HOOKS for c in callers):
            pm.register(plugin, name=global_pm.get_name(plugin))
    # pluggy calls the last registered first; register in reverse so list order holds.
    for cb in reversed(callbacks):
        for attr in LIFECYCLE_HOOKS:
            method = getattr(cb, attr, None)
            if method is not None and getattr(method, "jitprop_impl", None) is None:
                raise ConfigError(
                    f"callback {type(cb).__name__}.{attr} is not marked @jitprop.hookimpl, so it would never run"
                )
        try:
            pm.register(cb, name=f"callback-{id(cb)}")
        except pluggy.PluginValidationError as exc:
            raise ConfigError(f"callback {type(cb).__name__}: {str(exc).splitlines()[0]}") from None
        except ValueError:
            raise ConfigError(f"callback {cb!r} is passed twice") from None
    return pm.hook


class Trainer:
    """Owns one training run: optimizer state, shuffling RNG, counters, hooks.

    Callbacks see it as ``trainer``: ``trainer.model``, ``.loss``,
    ``.optimizer``, ``.epoch``, ``.step`` (iterations done), ``.lr``, and
    ``.stop_training``, which a callback sets to end training after the
    current epoch. ``fit`` may be called again to continue training.
    """

    def __init__(
        self,
        model,
        loss="mse",
        optimizer="adam",
        batch_size=32,
        callbacks=(),
        seed=None,
        shuffle=True,
        drop_last=False,
        lr_schedule=None,
        device="cpu",
        on_divergence="stop",
    ):
        self.model = model
        self.loss = api.loss(loss)
        self.optimizer = api.optimizer(optimizer)
        self.lr_schedule = None if lr_schedule is None else api.schedule(lr_schedule)
        self.batch_size = positive_int("batch_size", batch_size, "fit")
        self.seed = model.seed if seed is None else positive_int("seed", seed, "fit", minimum=0)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        message = self.loss.check_output_dim(model.output_dim)
        if message:
            raise DataError(message)
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"unknown device {device!r}; choose cpu or cuda")
        self.device = device
        if on_divergence not in DIVERGENCE:
            raise ConfigError(f"on_divergence must be one of {', '.join(DIVERGENCE)}, got {on_divergence!r}")
        self.on_divergence = on_divergence
        if device == "cuda":
            from . import cuda_backend  # numba.cuda only for GPU runs

            cuda_backend.check(model, self.loss, self.optimizer, self.lr_schedule)

        self.loss_kernel = kernel(self.loss, "kernel")
        self.loss_h = np.ascontiguousarray(self.loss.hyper(), dtype=np.float64)
        self.opt_kernel = kernel(self.optimizer, "kernel")
        self.opt_h = np.ascontiguousarray(self.optimizer.hyper(), dtype=np.float64)
        self.opt_state = np.zeros((self.optimizer.n_state, model.n_params), model.dtype)
        self.optimizer.init_state(self.opt_state)

        self.epoch = 0
        self.step = 0
        self.lr = self.optimizer.lr
        self.stop_training = False
        self.stop_reason = None
        #: Where training diverged (``{"epoch", "iteration", "reason"}``), when it did and stopped.
        self.divergence = None
        #: Every rollback of ``on_divergence="rollback"``: the same dicts, plus the lowered ``lr``.
        self.rollbacks = []
        self._bad_batch = None  # set by a batch loop: the batch whose loss or gradient was not finite
        self._state_before = None
        self._saved = None  # (params, opt_state, state, [step]) where a rollback returns to
        self.interrupted = False
        self.end_state = None
        self._interrupt_requested = False
        self._progress = None  # position inside an epoch interrupted part-way
        self._chunk = 8  # batches per compiled call, adapted to about CHUNK_SECONDS
        self._program = None  # the compiled train_chunk/evaluate of the current fit, if any
        self._device_run = None  # device buffers of the current fit on a GPU
        self._scratch = None  # loss-gradient scratch for compiled validation
        #: Train through the compiled program when possible (False: always the Python loop).
        self.compiled = True
        #: JSON-able run metadata that checkpoints keep (the command line's config, labels, ...).
        self.run_info = {}
        #: Keep ``end_state`` after every fit, not only after an interrupt (checkpointing wants it).
        self.keep_end_state = False
        self.batch_losses = np.zeros(0)
        self.batches_done = 0

        self.history = History()
        self.callbacks = [self.history] + [api.callback(cb) for cb in callbacks]
        self.hook = _hook_relay(self.callbacks)

    @property
    def classification(self):
        return self.loss.target in ("class", "binary")

    def fit(self, X, y, epochs=1, validation_data=None, validation_split=0.0):
        """Train until ``epochs`` epochs are done in total (so a second call continues)."""
        model = self.model
        epochs = positive_int("epochs", epochs, "fit", minimum=0)
        validation_split = real("validation_split", validation_split, "fit", low=0.0, high=1.0, high_open=True)
        X = as_inputs(model, X)
        y = as_targets(model, self.loss, y, X.shape[0])
        if validation_data is not None:
            if validation_split:
                raise ConfigError("give validation_data or validation_split, not both")
            if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
                raise ConfigError("validation_data must be a pair (X_val, y_val)")
            Xv = as_inputs(model, validation_data[0], "validation X")
            yv = as_targets(model, self.loss, validation_data[1], Xv.shape[0], "validation y")
        elif validation_split:
            train, val = split_indices(X.shape[0], validation_split, self.seed)
            Xv, yv = X[val], y[val]
            X, y = np.ascontiguousarray(X[train]), np.ascontiguousarray(y[train])
        else:
            Xv = yv = None
        self.has_validation = Xv is not None
        self.metric_names = ["loss"] + (["accuracy"] if self.classification else [])
        if self.has_validation:
            self.metric_names += ["val_" + m for m in self.metric_names]

        n = X.shape[0]
        bs = min(self.batch_size, n)
        n_batches = self.n_batches = n // bs if self.drop_last else -(-n // bs)
        if n_batches == 0:
            raise DataError(f"drop_last with batch_size={self.batch_size} leaves no batch from {n} rows")
        progress = self._progress
        if progress is not None and progress["index"].shape[0] != n:
            raise DataError(
                f"this run was interrupted mid-epoch on {progress['index'].shape[0]} training rows,"
                f" but the data now has {n}; resume with the same data"
            )
        ws = model.workspace(bs, training=True)
        y_buf = np.zeros((bs,) + y.shape[1:], y.dtype)
        index = np.arange(n, dtype=np.int64)
        self.batch_losses = np.zeros(n_batches)

        hook = self.hook
        per_batch = any(getattr(hook, h).get_hookimpls() for h in PER_BATCH_HOOKS)
        # Without per-batch hooks, runs of batches go through one compiled function.
        program = self._device_run = None
        if self.device == "cuda":
            from .cuda_backend import DeviceRun

            if per_batch:
                names = sorted({h for h in PER_BATCH_HOOKS if getattr(hook, h).get_hookimpls()})
                raise ConfigError(f"per-batch hooks ({', '.join(names)}) do not run on --device cuda yet; train on the CPU")

            self._device_run = DeviceRun(self, X, y, bs, n_batches, None if Xv is None else (Xv, yv))
        elif self.compiled and not per_batch:
            program = compiler.program(model, self.loss, self.optimizer, ACCURACY.get(self.loss.target))
        self._program = program
        # A copy of the running state before each batch, so a batch that diverges leaves none behind.
        self._state_before = model.state.copy() if any(model.stateful) else None

        self.stop_training = False
        self.stop_reason = None
        self.interrupted = False
        self.end_state = None
        self._interrupt_requested = False
        hook.on_train_begin(trainer=self, logs={})
        try:
            while self.epoch < epochs and not self.stop_training:
                epoch = self.epoch
                if progress is None:  # a fresh epoch
                    base_lr = self.optimizer.lr
                    if self._device_run is not None:  # the schedule's CUDA kernel
                        self.lr = self._device_run.rate(epoch, base_lr)
                    else:
                        self.lr = self.lr_schedule(epoch, base_lr) if self.lr_schedule else base_lr
                    hook.on_epoch_begin(trainer=self, epoch=epoch, logs={})
                    if self._device_run is not None:
                        self._device_run.order(epoch)  # drawn where the data lives
                    else:
                        self.order(epoch, index)
                    first, loss_sum, correct, seen = 0, 0.0, 0.0, 0
                    self.batches_done = 0
                    resumed = None
                else:  # the rest of an epoch interrupted part-way
                    resumed = progress
                    index[:] = progress["index"]
                    if self._device_run is not None:
                        self._device_run.index.copy_to_device(index)
                    self.batch_losses[: progress["batch"]] = progress["batch_losses"][: progress["batch"]]
                    self.lr = progress["lr"]
                    first, loss_sum, correct, seen = (progress[k] for k in ("batch", "loss_sum", "correct", "seen"))
                    self.batches_done = first
                    progress = self._progress = None
                run = self._compiled_batches if program is not None else self._python_batches
                if self._device_run is not None:
                    run = self._cuda_batches
                if self.on_divergence == "rollback":
                    self._snapshot()
                self._bad_batch = None
                loss_sum, correct, seen = run(X, y, index, first, n_batches, bs, ws, y_buf, loss_sum, correct, seen)
                if self._bad_batch is not None:
                    if self._diverged(index, loss_sum, correct, seen):
                        # Rolled back to where this run of the epoch began (its start, or the point it
                        # resumed from), to go again at the lowered rate.
                        progress = None if resumed is None else {**resumed, "lr": self.lr * ROLLBACK_FACTOR}
                        continue
                    break
                if self._progress is not None:
                    break  # interrupted mid-epoch: the epoch is neither finished nor logged
                logs = {"loss": loss_sum / seen}
                if self.loss.target in ACCURACY:
                    logs["accuracy"] = correct / seen
                if Xv is not None:
                    for key, value in self.score(Xv, yv).items():
                        logs["val_" + key] = value
                logs["lr"] = self.lr
                self.epoch += 1
                hook.on_epoch_end(trainer=self, epoch=epoch, logs=logs)
                if self._interrupt_requested:
                    break
            if self._interrupt_requested:
                self.interrupted = True
                self.stop_reason = f"interrupted in epoch {self.epoch + 1} after iteration {self.step}"
            # The exact state to continue from, taken before on_train_end may restore other weights.
            if self.interrupted or self.keep_end_state:
                self.end_state = self.state()
        except NumbaError as exc:
            culprit = self._compile_failure(ws, y_buf)
            if culprit is None:
                raise
            raise culprit from exc
        finally:
            hook.on_train_end(trainer=self, logs={})
        return self.history

    def _cuda_batches(self, X, y, index, first, n_batches, bs, ws, y_buf, loss_sum, correct, seen):
        """Batches first.. of this epoch on the GPU; losses and the accuracy count come back once."""
        losses, hits, done, diverged = self._device_run.run(first, n_batches, bs)
        n = X.shape[0]
        for b in range(first, done):  # the same running sums, in the same order, as on the CPU
            rows = min(bs, n - b * bs)
            self.batch_losses[b] = losses[b]
            loss_sum += losses[b] * rows
            seen += rows
        correct += hits
        self.batches_done = done
        if self.hook.on_train_chunk_end.get_hookimpls():
            self.hook.on_train_chunk_end(trainer=self, batches_done=done)
        if diverged:
            self._bad_batch = done
            self._device_run.index.copy_to_host(index)  # the order to resume from
            return loss_sum, correct, seen
        if done < n_batches and self._interrupt_requested:
            self._device_run.index.copy_to_host(index)  # the order to resume from
        self._after_batches(done, n_batches, index, loss_sum, correct, seen)
        return loss_sum, correct, seen

    def _python_batches(self, X, y, index, first, n_batches, bs, ws, y_buf, loss_sum, correct, seen):
        """Batches first.. of this epoch one by one from Python, dispatching per-batch hooks."""
        model, hook, n = self.model, self.hook, X.shape[0]
        batch_begin = bool(hook.on_train_batch_begin.get_hookimpls())
        batch_end = bool(hook.on_train_batch_end.get_hookimpls())
        after_backward = bool(hook.on_after_backward.get_hookimpls())
        chunk_end = bool(hook.on_train_chunk_end.get_hookimpls())
        accuracy = ACCURACY.get(self.loss.target)
        y_views = {rows: y_buf[:rows] for rows in {bs, n - (n_batches - 1) * bs} if rows <= bs}
        for b in range(first, n_batches):
            start = b * bs
            rows = min(bs, n - start)
            if batch_begin:
                hook.on_train_batch_begin(trainer=self, batch=b, logs={"size": rows})
            acts, caches, deltas = ws.views(rows)
            gather_rows(X, index, start, acts[0])
            yb = y_views[rows]
            gather(y)(y, index, start, yb)
            if self._state_before is not None:
                self._state_before[...] = model.state
            # prediction -> loss -> backpropagation -> (hooks) -> update
            model.forward(acts, caches, True, mix_seed(self.seed, self.step))
            value = self.loss_kernel(acts[-1], yb, deltas[-1], self.loss_h)
            hits = accuracy(acts[-1], yb) if accuracy is not None else 0
            model.backward(acts, caches, deltas)
            if after_backward:
                hook.on_after_backward(trainer=self, grads=model.grads)
            if not (math.isfinite(value) and all_finite(model.grads)):
                self.batch_losses[b] = value
                self._bad_batch = b  # caught before the update: the weights stay as they were
                if self._state_before is not None:
                    model.state[...] = self._state_before  # nor does the running state keep that batch
                break
            correct += hits
            self.step += 1
            self.opt_kernel(model.params, model.grads, self.opt_state, self.lr, self.opt_h, self.step)
            self.batch_losses[b] = value
            self.batches_done = b + 1
            loss_sum += value * rows
            seen += rows
            if batch_end:
                hook.on_train_batch_end(trainer=self, batch=b, logs={"loss": float(value), "size": rows})
            if chunk_end:
                hook.on_train_chunk_end(trainer=self, batches_done=b + 1)
            if self._after_batches(b + 1, n_batches, index, loss_sum, correct, seen):
                break
        return loss_sum, correct, seen

    def _after_batches(self, done, n_batches, index, loss_sum, correct, seen):
        """True when the epoch must stop here; on an interrupt, keep where it stopped."""
        if self._interrupt_requested and done < n_batches:
            self._progress = {
                "batch": done, "loss_sum": loss_sum, "correct": correct, "seen": seen,
                "index": index.copy(), "batch_losses": self.batch_losses.copy(), "lr": self.lr,
            }  # fmt: skip
        return self.stop_training or self._interrupt_requested

    def _compiled_batches(self, X, y, index, first, n_batches, bs, ws, y_buf, loss_sum, correct, seen):
        """Batches first.. of this epoch through the compiled ``train_chunk``, in runs of about
        ``CHUNK_SECONDS`` so that interrupts and progress hooks are served between them."""
        model, program = self.model, self._program
        layer_args = [a for i in range(len(model.layers)) for a in
                      (model.layer_params[i], model.hypers[i], model.layer_grads[i], ws.caches[i], model.layer_state[i])]  # fmt: skip
        chunk_end = bool(self.hook.on_train_chunk_end.get_hookimpls())
        b = first
        while b < n_batches:
            last = min(n_batches, b + self._chunk)
            started = time.perf_counter()
            loss_sum, correct, seen, self.step, done, diverged = program.train_chunk(
                X, y, index, b, last, bs, model.params, model.grads, self.opt_state, self.lr, self.opt_h,
                self.step, self.seed, self.loss_h, self.batch_losses, y_buf, model.state,
                model.state if self._state_before is None else self._state_before,
                float(loss_sum), float(correct), int(seen), *layer_args, *ws.acts, *ws.deltas,
            )
            elapsed = time.perf_counter() - started
            self.batches_done = done
            if chunk_end:
                self.hook.on_train_chunk_end(trainer=self, batches_done=done)
            if diverged:
                self._bad_batch = done
                break
            ratio = CHUNK_SECONDS / max(elapsed, 1e-6)
            self._chunk = max(1, min(int(self._chunk * min(ratio, 4.0)), 1 << 20))
            if self._after_batches(done, n_batches, index, loss_sum, correct, seen):
                break
            b = done
        return loss_sum, correct, seen

    def _snapshot(self):
        """Keep the weights, optimizer state and running state at an epoch's start (rollback)."""
        model = self.model
        if self._saved is None or self._saved[0].shape != model.params.shape:
            self._saved = (np.empty_like(model.params), np.empty_like(self.opt_state), np.empty_like(model.state), [0])
        params, opt_state, state, step = self._saved
        params[...], opt_state[...], state[...], step[0] = model.params, self.opt_state, model.state, self.step

    def _diverged(self, index, loss_sum, correct, seen):
        """Batch ``self._bad_batch`` gave a non-finite loss or gradient, caught before its update.
        Roll back and return True (the epoch runs again), or stop where it went bad."""
        b = self._bad_batch
        where = {"epoch": self.epoch + 1, "iteration": self.step + 1, "reason": self._divergence_reason(b)}
        if self.on_divergence == "rollback" and len(self.rollbacks) < MAX_ROLLBACKS:
            params, opt_state, state, step = self._saved
            self.model.params[...], self.opt_state[...], self.model.state[...] = params, opt_state, state
            self.step = step[0]
            self.optimizer.lr *= ROLLBACK_FACTOR
            self.rollbacks.append({**where, "lr": self.optimizer.lr})
            if self._device_run is not None:
                self._device_run.push()
            return True
        self.divergence = where
        self.stop_training = True
        tail = "" if self.on_divergence == "stop" else f" after {len(self.rollbacks)} rollbacks"
        self.stop_reason = (
            f"training diverged in epoch {where['epoch']}, iteration {where['iteration']}{tail}: {where['reason']};"
            " stopped before that update, so the weights are the last good ones"
        )
        # Where it stopped, like an interrupt: --resume (with a lower rate, say) continues from this batch.
        self._progress = {
            "batch": b, "loss_sum": loss_sum, "correct": correct, "seen": seen,
            "index": index.copy(), "batch_losses": self.batch_losses.copy(), "lr": self.lr,
        }  # fmt: skip
        return False

    def _divergence_reason(self, b):
        """What went non-finite in batch ``b``: the loss, or the gradient of which layer."""
        model = self.model
        if self._device_run is not None:
            self._device_run.probe(b, self.batch_size)  # that batch again on the device, without its update
        value = self.batch_losses[b]  # the batch loops leave its loss and gradients in place
        if not math.isfinite(value):
            return f"the loss became {value}"
        for i in range(len(model.layers) - 1, -1, -1):  # backpropagation's order: the first to go bad
            if not np.all(np.isfinite(model.layer_grads[i])):
                return f"the gradient of layer {i} ({model.layers[i].name}) holds NaN or infinite values"
        return "a gradient became NaN or infinite"

    def _compile_failure(self, ws, y_buf):
        """The kernel behind a Numba compile error, as a one-line PluginError naming its
        plugin (None when every kernel compiles on its own: the error lies elsewhere)."""
        from numba.core.dispatcher import Dispatcher

        model = self.model
        acts, caches, deltas = ws.views(ws.capacity)
        calls = [("loss", self.loss, "kernel", (acts[-1], y_buf, deltas[-1], self.loss_h)),
                 ("optimizer", self.optimizer, "kernel",
                  (model.params, model.grads, self.opt_state, float(self.lr), self.opt_h, int(self.step)))]  # fmt: skip
        for i, layer in enumerate(model.layers):
            last = (model.layer_state[i],) if model.stateful[i] else ()
            calls.append(("layer", layer, "forward_kernel",
                          (model.layer_params[i], model.hypers[i], acts[i], acts[i + 1], caches[i], True, mix_seed(0), *last)))
            calls.append(("layer", layer, "backward_kernel",
                          (model.layer_params[i], model.hypers[i], acts[i], acts[i + 1], caches[i], deltas[i + 1],
                           deltas[i], model.layer_grads[i], *last)))  # fmt: skip
        for what, component, attr, args in calls:
            fn = kernel(component, attr)
            if not isinstance(fn, Dispatcher):
                continue
            try:
                fn.compile(tuple(numba.typeof(a) for a in args))
            except NumbaError as exc:
                try:
                    origin = f" from plugin {registry.lookup(what, component.name).plugin!r}"
                except ConfigError:
                    origin = ""
                return PluginError(f"{what} {component.name!r}{origin}: its {attr} does not compile: {numba_summary(exc)}")
        return None

    def order(self, epoch, index):
        """Fill ``index`` with epoch ``epoch``'s row order: a permutation drawn from (seed, epoch)
        alone (kernels.shuffle_order), so resuming needs no random state and a GPU draws the same."""
        if self.shuffle:
            shuffle_order(shuffle_key(self.seed, epoch), feistel_bits(index.shape[0]), index)
        else:
            index[:] = np.arange(index.shape[0])

    def set_learning_rate(self, lr):
        """Train on at ``lr`` from here (a resumed run at a lower rate, say); schedules scale from it."""
        lr = real("lr", lr, "fit", low=0.0)
        self.optimizer.lr = self.lr = lr
        if self._progress is not None:
            self._progress["lr"] = lr

    def request_interrupt(self):
        """Ask training to stop after the current iteration; ``end_state`` then holds the
        exact place to continue from. Safe to call from a signal handler."""
        self._interrupt_requested = True

    def state(self):
        """Everything needed to continue this run exactly: ``(meta, arrays)``, JSON-able meta."""
        meta = {
            "seed": self.seed,
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.lr,
            "optimizer": {"name": self.optimizer.name, **self.optimizer.config()},
            "history": {"history": self.history.history, "epoch": self.history.epoch},
            "progress": None,
            "callbacks": {},
        }
        arrays = {
            "params": self.model.params.copy(),
            "model_state": self.model.state.copy(),
            "opt_state": self.opt_state.copy(),
            "iteration_loss": np.asarray(self.history.iteration_loss, dtype=np.float64),
        }
        p = self._progress
        if p is not None:
            meta["progress"] = {k: p[k] for k in ("batch", "loss_sum", "correct", "seen", "lr")}
            arrays["progress_index"] = p["index"].copy()
            arrays["progress_batch_losses"] = p["batch_losses"].copy()
        for key, cb in self._stateful_callbacks():
            cb_meta, cb_arrays = cb.get_state()
            meta["callbacks"][key] = cb_meta
            arrays.update({f"callback.{key}.{k}": v for k, v in cb_arrays.items()})
        return meta, arrays

    def load_state(self, meta, arrays):
        """Continue from a ``state()``: weights, optimizer state, counters, RNG, history."""
        if arrays["params"].shape != self.model.params.shape or arrays["opt_state"].shape != self.opt_state.shape:
            raise DataError("the saved training state does not fit this model and optimizer")
        self.model.params[...] = arrays["params"]
        if "model_state" in arrays and arrays["model_state"].shape == self.model.state.shape:
            self.model.state[...] = arrays["model_state"]
        self.opt_state[...] = arrays["opt_state"]
        self.optimizer.lr = float(meta["optimizer"]["lr"])  # callbacks may have lowered it
        self.epoch, self.step, self.lr = int(meta["epoch"]), int(meta["step"]), float(meta["lr"])
        self.seed = int(meta["seed"])  # dropout masks derive from it
        self.history.history = {k: list(v) for k, v in meta["history"]["history"].items()}
        self.history.epoch = list(meta["history"]["epoch"])
        self.history.iteration_loss = array("d", np.asarray(arrays["iteration_loss"], dtype=np.float64).tobytes())
        self._progress = None
        if meta.get("progress"):
            self._progress = dict(
                meta["progress"], index=arrays["progress_index"], batch_losses=arrays["progress_batch_losses"]
            )
        for key, cb in self._stateful_callbacks():
            if key in meta.get("callbacks", {}):
                prefix = f"callback.{key}."
                cb.set_state(meta["callbacks"][key], {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)})

    def _stateful_callbacks(self):
        for i, cb in enumerate(self.callbacks):
            if hasattr(cb, "get_state") and hasattr(cb, "set_state"):
                yield f"{i}.{getattr(cb, 'name', None) or type(cb).__name__}", cb

    def score(self, X, y):
        """Mean loss (and accuracy) over checked arrays X, y, in inference mode."""
        run = self._device_run
        if run is not None and run.val is not None and X is run.val_host:
            return run.score()  # the validation rows already live on the GPU
        bs = min(max(self.batch_size, 256), X.shape[0])
        program = self._program
        if program is None:
            return score(self.model, self.loss, X, y, bs)
        model = self.model
        ws = model.workspace(bs)
        if self._scratch is None or self._scratch.shape[0] < bs:
            self._scratch = np.zeros((bs, model.output_dim), model.dtype)
        args = [a for i in range(len(model.layers))
                for a in (model.layer_params[i], model.hypers[i], ws.caches[i], model.layer_state[i])]  # fmt: skip
        total, correct = program.evaluate(X, y, bs, self.loss_h, self._scratch, *args, *ws.acts)
        result = {"loss": total / X.shape[0]}
        if self.loss.target in ACCURACY:
            result["accuracy"] = correct / X.shape[0]
        return result


def numba_summary(exc):
    """The one line of a Numba compile error that says what is wrong, and where."""
    lines = [line.strip() for line in str(exc).splitlines()]
    body = [line for line in lines[1:] if line and not line.startswith("During:")] or lines[:1]
    summary = body[0]
    if summary.endswith("signature:"):  # "No implementation of function ... found for signature:"
        summary += " " + next((line for line in body if line.startswith(">>>")), "").lstrip("> ")
    where = re.search(r'File "([^"]+)", line (\d+)', str(exc))
    return summary + (f" ({os.path.basename(where.group(1))}, line {where.group(2)})" if where else "")


def split_indices(n, fraction, seed):
    """(train, validation) row indices: a seeded random ``fraction`` held out for validation.

    Random rather than the last rows, so data sorted by class keeps every class in both parts.
    """
    n_val = int(round(n * fraction))
    if n_val < 1 or n_val >= n:
        raise DataError(f"validation_split={fraction} of {n} rows leaves no validation or no training rows")
    order = np.random.default_rng([seed, 1]).permutation(n)
    return np.sort(order[:-n_val]), np.sort(order[-n_val:])


def score(model, loss, X, y, batch_size=256):
    """Mean loss, and accuracy for classification, over arrays already checked by ``data``."""
    bs = min(batch_size, X.shape[0])
    ws = model.workspace(bs)
    scratch = np.zeros((bs, model.output_dim), model.dtype)  # the loss kernel writes a gradient here
    loss_kernel = kernel(loss, "kernel")
    h = np.ascontiguousarray(loss.hyper(), dtype=np.float64)
    accuracy = ACCURACY.get(loss.target)
    total = correct = 0.0
    for start in range(0, X.shape[0], bs):
        stop = min(start + bs, X.shape[0])
        acts, caches, _ = ws.views(stop - start)
        acts[0][...] = X[start:stop]
        out = model.forward(acts, caches)
        total += loss_kernel(out, y[start:stop], scratch[: stop - start], h) * (stop - start)
        if accuracy is not None:
            correct += accuracy(out, y[start:stop])
    result = {"loss": total / X.shape[0]}
    if accuracy is not None:
        result["accuracy"] = correct / X.shape[0]
    return result


def fit(
    model,
    X,
    y,
    loss="mse",
    optimizer="adam",
    epochs=10,
    batch_size=32,
    validation_split=0.0,
    validation_data=None,
    callbacks=(),
    shuffle=True,
    seed=None,
    drop_last=False,
    lr_schedule=None,
    device="cpu",
    on_divergence="stop",
):
    """Train ``model`` on (X, y) and return its History.

    Each iteration takes one batch of ``batch_size`` rows: the model predicts,
    ``loss`` scores the prediction, backpropagation gives every weight its
    gradient, and ``optimizer`` moves the weights against it. One epoch covers
    every row once (the last, smaller batch too unless ``drop_last``), in an
    order reshuffled each epoch from ``seed`` (default: the model's seed).

    Validation data (``validation_data=(Xv, yv)``, or a seeded random
    ``validation_split`` fraction held out of X) is scored after every
    epoch. ``history.history`` holds per-epoch ``loss``, ``val_loss``, and for
    classification ``accuracy``, ``val_accuracy``, plus ``lr``;
    ``history.iteration_loss`` holds the loss of every iteration.

    ``device="cuda"`` runs every kernel on an NVIDIA GPU (numba.cuda), the
    same batches in the same order as on the CPU.

    A batch whose loss or gradient is NaN or infinite stops training before
    its update, with a RuntimeWarning that says where (``on_divergence="stop"``),
    or rolls the epoch back and halves the learning rate (``"rollback"``).
    """
    trainer = Trainer(
        model,
        loss=loss,
        optimizer=optimizer,
        batch_size=batch_size,
        callbacks=callbacks,
        seed=seed,
        shuffle=shuffle,
        drop_last=drop_last,
        lr_schedule=lr_schedule,
        device=device,
        on_divergence=on_divergence,
    )
    history = trainer.fit(X, y, epochs=epochs, validation_data=validation_data, validation_split=validation_split)
    if trainer.divergence is not None:
        warnings.warn(trainer.stop_reason, RuntimeWarning, stacklevel=2)
    return history


def evaluate(model, X, y, loss="mse", batch_size=256):
    """Mean ``loss`` over (X, y), and ``accuracy`` for classification losses, as a dict."""
    loss = api.loss(loss)
    X = as_inputs(model, X)
    y = as_targets(model, loss, y, X.shape[0])
    return score(model, loss, X, y, positive_int("batch_size", batch_size, "evaluate"))


def value_and_grad(model, loss, X, y, training=False, seed=0):
    """The batch-mean loss of (X, y) and its gradient for every parameter, keyed like ``state_dict()``.

    One forward pass (prediction), the loss, and one backward pass
    (backpropagation) over all of X as a single batch; the weights don't move.
    """
    loss = api.loss(loss)
    X = as_inputs(model, X)
    y = as_targets(model, loss, y, X.shape[0])
    acts, caches, deltas = Workspace(model, X.shape[0], training=True).views(X.shape[0])
    acts[0][...] = X
    model.forward(acts, caches, bool(training), mix_seed(seed))
    value = kernel(loss, "kernel")(acts[-1], y, deltas[-1], np.ascontiguousarray(loss.hyper(), dtype=np.float64))
    model.backward(acts, caches, deltas)
    return float(value), {k: v.copy() for k, v in model.gradients().items()}
