"""fit / evaluate / value_and_grad: the loop of prediction, loss, backpropagation and update.

Words as a learner knows them: an *iteration* is one update of the weights
from one *batch* of examples; an *epoch* is one pass over every training
example, in a fresh random order each time; after each epoch the model is
scored on *validation* data it never trains on, which shows under- and
overfitting as they happen.
"""

import contextlib
import math
import time
import warnings

import numpy as np
import pluggy
from numba.core.errors import NumbaError

from .. import api
from ..backends import python
from ..backends.base import Sums, epoch_order
from ..backends.compiled import CompiledBackend
from ..backends.python import PythonBackend, compile_failure
from ..components import kernel, positive_int, real
from ..contracts.losses import ACCURACY
from ..data import arrays
from ..data.arrays import size_text
from ..data.prepare import as_inputs, as_targets
from ..distributed import group_of as distributed_group
from ..errors import ConfigError, DataError
from ..kernels import mix_seed
from ..model.sequential import Workspace
from ..plugins import hookspecs
from ..plugins.manager import load_plugins
from ..runtime import threads
from ..views.verdict import baseline_loss
from .history import History

#: ``on_divergence`` choices: stop at the bad batch, or roll back the epoch and lower the rate.
DIVERGENCE = ("stop", "rollback")
MAX_ROLLBACKS = 5
ROLLBACK_FACTOR = 0.5
#: ``divergence_factor``'s default: an epoch whose mean loss passes this many times the loss at the
#: start (the larger of the run's first batch's and ``baseline_loss``) has diverged though it is finite.
#: Adam at lr=1e10 takes the loss from about 1 to 1e20 (spirals) or 1e33 (digits) in its first epoch;
#: the built-in data sets' default runs stay far below (tests/test_guards.py trains each).
DIVERGENCE_FACTOR = 1e4

#: Layers that compute an affine map of their input, and layers that keep a map linear (no
#: parameters, nothing nonlinear): two of the first with only the second between are one linear map.
AFFINE_LAYERS = frozenset({"dense", "conv2d"})
LINEAR_LAYERS = frozenset({"dropout", "flatten", "avg_pool2d", "global_avg_pool2d"})


class TrainingWarning(RuntimeWarning):
    """A run that trains, but not as its settings suggest (a rate of 0, a model with no nonlinearity)."""


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


def _hook_relay(callbacks, root=True):
    """A plugin manager for one run: installed plugins' lifecycle hooks, then the run's callbacks
    (off rank 0 of a data-parallel run, those that are ``rank_zero_only`` are left out)."""
    global_pm = load_plugins()
    pm = pluggy.PluginManager("jitprop")
    pm.add_hookspecs(hookspecs)
    for plugin in global_pm.get_plugins():
        callers = global_pm.get_hookcallers(plugin) or []
        if any(c.name in LIFECYCLE_HOOKS for c in callers):
            pm.register(plugin, name=global_pm.get_name(plugin))
    # pluggy calls the last registered first; register in reverse so list order holds.
    for cb in reversed(callbacks):
        if not root and getattr(cb, "rank_zero_only", False):
            continue
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
        transforms=(),
        distributed=None,
        divergence_factor=DIVERGENCE_FACTOR,
    ):
        self.model = model
        #: The ranks training this model together (``jitprop.distributed.Group``), or None.
        self.group = distributed_group(distributed)
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
        self.device = check_device(device)
        if self.group is not None and self.device == "cuda":
            raise ConfigError("data-parallel training runs on the CPU for now; leave out --device cuda, or train on one GPU without MPI")
        self._parallel = None  # see _own_threads
        self._blas = None  # BLAS's threads for this fit's batches (a threads.Chooser)
        if on_divergence not in DIVERGENCE:
            raise ConfigError(f"on_divergence must be one of {', '.join(DIVERGENCE)}, got {on_divergence!r}")
        self.on_divergence = on_divergence
        #: An epoch's mean loss beyond this many times the loss at the start counts as divergence (0 or None: never).
        self.divergence_factor = None if divergence_factor is None else real("divergence_factor", divergence_factor, "fit", low=0.0)
        if self.divergence_factor is not None and 0 < self.divergence_factor <= 1:
            raise ConfigError(f"divergence_factor must be above 1 (or 0 to switch it off), got {divergence_factor!r}")

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
        self.interrupted = False
        self.end_state = None
        self._interrupt_requested = self._interrupt_agreed = False
        self._progress = None  # position inside an epoch interrupted part-way
        #: Where the last fit's batches ran (``backend.name``: "python", "compiled" or "cuda").
        self.backend = None
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
        self.hook = _hook_relay(self.callbacks, root=self.group is None or self.group.root)
        #: Gradient transforms, in the order they run: the given ones, then the callbacks' (``cb.transforms()``).
        self.transforms = [api.transform(tr) for tr in transforms]
        self.transforms += [tr for cb in self.callbacks if hasattr(cb, "transforms") for tr in cb.transforms()]
        decay = self.optimizer.decay_transform()  # the optimizer's weight decay, biases left out: last, as in its kernel
        if decay is not None:
            self.transforms.append(decay)
        self.transform_kernels = [kernel(tr, "kernel") for tr in self.transforms]
        for tr in self.transforms:
            tr.setup(model)
        self.transform_h = [np.ascontiguousarray(tr.hyper(), dtype=np.float64) for tr in self.transforms]
        #: Each transform's memory (``sees_activations``): kept from batch to batch, filled at each fit's start.
        self.transform_memory = [np.zeros(tr.memory_size(model) if tr.sees_activations else 0, model.dtype) for tr in self.transforms]
        # Every transform's per-layer statistics in one flat buffer, each a (layers, stats) view of it.
        widths = [len(tr.stat_names) for tr in self.transforms]
        self.stats = np.zeros(len(model.layers) * sum(widths))
        bounds = np.cumsum([0] + [len(model.layers) * w for w in widths])
        self.transform_stats = [self.stats[a:b].reshape(len(model.layers), w) for a, b, w in zip(bounds, bounds[1:], widths)]
        if device == "cuda":
            from ..backends import cuda  # numba.cuda only for GPU runs

            cuda.check(model, self.loss, self.optimizer, self.lr_schedule, self.transforms)
        for message in settings_warnings(model, self.optimizer):
            warnings.warn(message, TrainingWarning, stacklevel=2)

    @property
    def classification(self):
        return self.loss.target in ("class", "binary")

    def fit(self, X, y, epochs=1, validation_data=None, validation_split=0.0):
        """Train until ``epochs`` epochs are done in total (so a second call continues).

        Data-parallel (``distributed``), every rank calls it with the same data and starts from
        rank 0's training state; an error before training raises on every rank, and one during
        training ends the job (``MPI_Abort``) in one line that names the rank.
        """
        try:
            return self._fit_once(X, y, epochs, validation_data, validation_split)
        finally:
            # Served: the next fit trains. Cleared here, not as training starts, so that a Ctrl-C
            # while the data is checked or the step compiles counts too.
            self._interrupt_requested = self._interrupt_agreed = False

    def _fit_once(self, X, y, epochs, validation_data, validation_split):
        group = self.group
        if group is None:
            return self._fit(*self._prepare(X, y, epochs, validation_data, validation_split))
        with group.agreed():  # bad data or settings on one rank: every rank raises, none waits
            run = self._prepare(X, y, epochs, validation_data, validation_split)
        with group.agreed():
            self._join(*run)
        try:
            return self._fit(*run)
        except BaseException as exc:  # mid-training, the other ranks would wait for this one for ever
            group.fatal(exc)
        finally:
            group.unwatch()

    def _prepare(self, X, y, epochs, validation_data, validation_split):
        """Check the data and settings of a fit and choose its backend: what ``_fit`` trains on."""
        model = self.model
        epochs = positive_int("epochs", epochs, "fit", minimum=0)
        validation_split = check_validation_split(validation_split)
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
        try:
            self.history.baseline_loss = baseline_loss(self.loss, y, model.output_dim, model.dtype)
        except NumbaError:  # a loss kernel that does not compile: training names its plugin below
            self.history.baseline_loss = None
        self.metric_names = ["loss"] + (["accuracy"] if self.classification else [])
        if self.has_validation:
            self.metric_names += ["val_" + m for m in self.metric_names]

        n = X.shape[0]
        bs = min(self.batch_size, n)
        n_batches = self.n_batches = n // bs if self.drop_last else -(-n // bs)
        if n_batches == 0:
            raise DataError(f"drop_last with batch_size={self.batch_size} leaves no batch from {n} rows")
        self._check_memory(bs, 0 if Xv is None else Xv.shape[0])
        # Tried where a second thread may help, on one process, when the user asked for it (--threads auto,
        # runtime/threads.py); kept from fit to fit, which a loop of short fits (partial_fit) makes.
        adaptive = self.group is None and threads.adaptive() and self.device == "cpu"
        count = self._blas_count(bs)
        if self._blas is None or (self._blas.top, self._blas.adaptive) != (count, adaptive and count > 1):
            self._blas = threads.Chooser(count, adaptive)
        progress = self._progress
        if progress is not None and progress["index"].shape[0] != n:
            raise DataError(
                f"this run was interrupted mid-epoch on {progress['index'].shape[0]} training rows,"
                f" but the data now has {n}; resume with the same data"
            )
        self.batch_losses = np.zeros(n_batches)
        self._init_memory()
        self.backend = self._backend(X, y, bs, None if Xv is None else (Xv, yv))
        return X, y, Xv, yv, epochs, bs, n_batches, progress

    def _check_memory(self, bs, n_val):
        """Refuse in one line, before anything is allocated for it, a run that memory cannot hold:
        the parameters with their gradients and optimizer state, and a batch's activations, layer
        caches and gradients (and validation's activations), estimated from the layers' widths."""
        model = self.model
        item = np.dtype(model.dtype).itemsize
        caches = sum(layer.cache_dim() for layer in model.layers)
        scored = min(max(bs, 256), n_val)  # validation rows a scoring pass holds at once
        batch = item * (bs * (2 * sum(model.dims) + caches) + scored * (sum(model.dims) + caches))
        weights = item * model.n_params * (2 + self.optimizer.n_state)
        budget = arrays.available_memory()
        if budget is not None and batch + weights > budget:
            raise DataError(f"training {model.n_params:,} parameters on batches of {bs} rows needs {size_text(batch + weights)}"
                            f" ({size_text(weights)} of weights, gradients and optimizer state, {size_text(batch)} of"
                            f" activations), more than the {size_text(budget)} of memory available: train a smaller model"
                            " or on smaller batches")  # fmt: skip

    def _join(self, X, y, Xv, yv, epochs, bs, n_batches, progress):
        """Data-parallel: the same data on every rank, rank 0's training state on all, each rank's
        share of the host's cores, and the step compiled once per host before the watchdog starts."""
        group, backend = self.group, self.backend
        group.check_same("training data", X, y)
        if Xv is not None:
            group.check_same("validation data", Xv, yv)
        group.broadcast(backend._training_state())
        # The span too: each rank's program learnt its own in the last fit, and the ranks' calls
        # must cover the same batches, or their allreduces would no longer pair up.
        self.epoch, self.step, self.lr, self.optimizer.lr, self.seed, backend.span = group.broadcast_object(
            (self.epoch, self.step, self.lr, self.optimizer.lr, self.seed, backend.span))  # fmt: skip
        threads.set_count(group.threads())

        def warm_up():
            try:
                backend.warm_up()
            except NumbaError as exc:
                culprit = compile_failure(self, bs, y)
                if culprit is None:
                    raise
                raise culprit from exc

        group.in_turn(warm_up)
        group.watch()

    def _fit(self, X, y, Xv, yv, epochs, bs, n_batches, progress):
        backend, hook = self.backend, self.hook
        self.stop_training = False
        self.stop_reason = None
        self.interrupted = False
        self.end_state = None
        hook.on_train_begin(trainer=self, logs={})
        try:
            if self.group is None and not backend.compile(lambda: self._interrupt_requested):
                self.interrupted = True  # before the first iteration: nothing to continue from
                self.stop_reason = "interrupted before the first iteration, while the training step was prepared and compiled"
                return self.history
            while self.epoch < epochs and not self.stop_training:
                epoch = self.epoch
                resumed = progress
                if progress is None:  # a fresh epoch
                    self.lr = backend.rate(epoch, self.optimizer.lr)
                    hook.on_epoch_begin(trainer=self, epoch=epoch, logs={})
                    backend.start_epoch(epoch)
                    first, sums = 0, Sums()
                else:  # the rest of an epoch interrupted part-way
                    backend.resume_epoch(progress["index"], progress["stats"])
                    first = progress["batch"]
                    self.batch_losses[:first] = progress["batch_losses"][:first]
                    self.lr = progress["lr"]
                    sums = Sums(progress["loss_sum"], progress["correct"], progress["seen"])
                    progress = self._progress = None
                self.batches_done = first
                if self.on_divergence == "rollback":
                    backend.snapshot()
                sums, bad = self._batches(first, n_batches, sums)
                backend.pull()  # callbacks and checkpoints read the host's arrays
                if bad is not None:
                    if self._diverged(bad, sums):
                        # Rolled back to where this run of the epoch began (its start, or the point it
                        # resumed from), to go again at the lowered rate.
                        progress = None if resumed is None else {**resumed, "lr": self.lr * ROLLBACK_FACTOR}
                        continue
                    break
                if self._progress is not None:
                    break  # interrupted mid-epoch: the epoch is neither finished nor logged
                logs = {"loss": sums.loss / sums.seen}
                grown = self._grown(logs["loss"])
                if grown is not None:
                    if self._diverged(None, sums, grown):
                        progress = None if resumed is None else {**resumed, "lr": self.lr * ROLLBACK_FACTOR}
                        continue
                if self.loss.target in ACCURACY:
                    logs["accuracy"] = sums.correct / sums.seen
                if Xv is not None:
                    for key, value in self.score(Xv, yv).items():
                        logs["val_" + key] = value
                logs["lr"] = self.lr
                for tr, stats in zip(self.transforms, self.transform_stats):
                    if tr.stat_names:
                        tr.epoch_end(epoch, stats.copy())
                self.epoch += 1
                hook.on_epoch_end(trainer=self, epoch=epoch, logs=logs)
                self._agree()
                if self._interrupting:
                    break
            if self._interrupting:
                self.interrupted = True
                self.stop_reason = f"interrupted in epoch {self.epoch + 1} after iteration {self.step}"
            # The exact state to continue from, taken before on_train_end may restore other weights.
            if self.interrupted or self.keep_end_state:
                self.end_state = self.state()
        except NumbaError as exc:
            culprit = compile_failure(self, bs, y)
            if culprit is None:
                raise
            raise culprit from exc
        finally:
            hook.on_train_end(trainer=self, logs={})
        return self.history

    def _init_memory(self):
        for tr, memory in zip(self.transforms, self.transform_memory):
            if memory.size:
                tr.init_memory(memory, self.model)

    def _backend(self, X, y, bs, validation):
        """Where this fit's batches run: the one place that chooses."""
        per_batch = sorted(h for h in PER_BATCH_HOOKS if getattr(self.hook, h).get_hookimpls())
        if self.device == "cuda":
            if per_batch:
                raise ConfigError(f"per-batch hooks ({', '.join(per_batch)}) do not run on --device cuda yet; train on the CPU")
            from ..backends.cuda import CudaBackend  # numba.cuda only for GPU runs

            return CudaBackend(self, X, y, bs, validation)
        program = CompiledBackend.build_program(self) if self.compiled and not per_batch else None
        if program is not None:
            return CompiledBackend(self, X, y, bs, validation, program)
        if self.group is not None:  # its allreduce lives in the compiled step
            why = (f"per-batch hooks ({', '.join(per_batch)})" if per_batch else "compiled=False" if not self.compiled
                   else "a kernel that is not an importable @njit function")  # fmt: skip
            raise ConfigError(f"data-parallel training needs the compiled step, and {why} keeps this run on the Python loop")
        return PythonBackend(self, X, y, bs, validation)

    def _batches(self, first, n_batches, sums):
        """Batches first.. of this epoch, in calls of ``backend.span`` batches; interrupts,
        stops and progress hooks are served between calls. Returns (sums, diverged batch or None)."""
        backend, hook = self.backend, self.hook
        chunk_end = bool(hook.on_train_chunk_end.get_hookimpls())
        b = first
        while b < n_batches:
            count = self._blas.next()
            started = time.perf_counter()
            with threads.blas_threads(count), self._collective():
                sums, done, bad = backend.run(b, min(n_batches, b + backend.span), sums)
            self._blas.record(count, time.perf_counter() - started, done - b)
            self.batches_done = done
            if chunk_end:
                hook.on_train_chunk_end(trainer=self, batches_done=done)
            if bad is not None:  # the same batch on every rank: its gradients were summed
                return sums, bad
            backend.span = self._agree(backend.span)
            if self._interrupting and done < n_batches:
                self._progress = self._position(done, sums)
            if self.stop_training or self._interrupting:
                break
            b = done
        return sums, None

    def _collective(self):
        """Data-parallel: the steps wait for every rank (what the watchdog must know)."""
        return self.group.collective() if self.group is not None else contextlib.nullcontext()

    def _agree(self, span=0):
        """Data-parallel: every rank stops where any would (an interrupt, a callback's stop) and
        takes the same next span of batches, or the ranks' collectives would no longer pair up."""
        if self.group is None:
            return span
        interrupt, stop, span = self.group.max([self._interrupt_requested, self.stop_training, span])
        self._interrupt_agreed, self.stop_training = bool(interrupt), bool(stop)
        return int(span)

    @property
    def _interrupting(self):
        """The interrupt the loop acts on: the request itself, or data-parallel what the ranks agreed
        last (a Ctrl-C landing on one rank just after an agreement waits for the next, on every rank)."""
        return self._interrupt_requested if self.group is None else self._interrupt_agreed

    def _position(self, batch, sums):
        """Where an epoch stopped part-way: enough to continue it exactly."""
        self.backend.pull()
        return {"batch": batch, "loss_sum": sums.loss, "correct": sums.correct, "seen": sums.seen,
                "index": self.backend.host_order(), "batch_losses": self.batch_losses.copy(), "lr": self.lr,
                "stats": self.stats.copy()}  # fmt: skip

    def _grown(self, loss):
        """Why an epoch's finite mean ``loss`` counts as divergence (it grew past ``divergence_factor``
        times the loss at the start), or None. The start is the larger of the run's first batch's loss,
        before any update, and the baseline loss (what predicting without the inputs scores)."""
        factor = self.divergence_factor
        if not factor or not math.isfinite(loss):
            return None
        first = self.history.first_loss if self.history.first_loss is not None else self.batch_losses[0]
        start = max((v for v in (first, self.history.baseline_loss) if v is not None and math.isfinite(v) and v > 0),
                    default=None)  # fmt: skip
        if start is None or loss <= factor * start:
            return None
        return f"the epoch's mean loss grew from {start:.4g} at the start to {loss:.4g}, over divergence_factor={factor:g} times"

    def _diverged(self, b, sums, reason=None):
        """Batch ``b`` gave a non-finite loss or gradient, caught before its update (or, with ``b``
        None, the epoch just done grew its loss past ``divergence_factor``: ``reason`` says how).
        Roll back and return True (the epoch runs again), or stop where it went bad."""
        where = {"epoch": self.epoch + 1, "iteration": self.step + (b is not None), "reason": reason or self.backend.why_diverged(b)}
        if self.on_divergence == "rollback" and len(self.rollbacks) < MAX_ROLLBACKS:
            self.backend.restore()  # the transforms' memory with the weights
            self.optimizer.lr *= ROLLBACK_FACTOR
            self.rollbacks.append({**where, "lr": self.optimizer.lr})
            return True
        self.divergence = where
        self.stop_training = True
        tail = "" if self.on_divergence == "stop" else f" after {len(self.rollbacks)} rollbacks"
        if b is None:  # the epoch is done and logged; its weights are where the growth took them
            kept = "stopped at the end of that epoch, with the weights it left"
        else:
            kept = "stopped before that update, so the weights are the last good ones"
            # Where it stopped, like an interrupt: --resume (with a lower rate, say) continues from this batch.
            self._progress = self._position(b, sums)
        eps = getattr(self.optimizer, "eps", None)
        if eps == 0:
            kept += (f"; {self.optimizer.name}'s eps=0 divides by zero wherever a weight's gradient average is 0:"
                     " set eps=1e-8 rather than lowering the rate")  # fmt: skip
        self.stop_reason = f"training diverged in epoch {where['epoch']}, iteration {where['iteration']}{tail}: {where['reason']}; {kept}"
        return False

    def order(self, epoch, index):
        """Fill ``index`` with epoch ``epoch``'s row order (the same on every backend)."""
        epoch_order(self.seed, epoch, self.shuffle, index)

    def set_learning_rate(self, lr):
        """Train on at ``lr`` from here (a resumed run at a lower rate, say); schedules scale from it."""
        lr = real("lr", lr, "fit", low=0.0)
        if lr == 0:
            warnings.warn(f"optimizer {self.optimizer.name!r} has lr=0: the weights will not move", TrainingWarning, stacklevel=2)
        self.optimizer.lr = self.lr = lr
        if self._progress is not None:
            self._progress["lr"] = lr

    def request_interrupt(self):
        """Ask training to stop after the current iteration; ``end_state`` then holds the
        exact place to continue from. Safe to call from a signal handler."""
        self._interrupt_requested = True

    def state(self):
        """Everything needed to continue this run exactly: ``(meta, arrays)``, JSON-able meta."""
        history_meta, history_arrays = self.history.state()
        meta = {
            "seed": self.seed,
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.lr,
            "optimizer": {"name": self.optimizer.name, **self.optimizer.config()},
            "history": history_meta,
            "progress": None,
            "callbacks": {},
        }
        arrays = {
            "params": self.model.params.copy(),
            "model_state": self.model.state.copy(),
            "opt_state": self.opt_state.copy(),
            **history_arrays,
        }
        p = self._progress
        if p is not None:
            meta["progress"] = {k: p[k] for k in ("batch", "loss_sum", "correct", "seen", "lr")}
            arrays["progress_index"] = p["index"].copy()
            arrays["progress_batch_losses"] = p["batch_losses"].copy()
            arrays["progress_stats"] = p["stats"].copy()
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
        self.history.load_state(meta["history"], arrays)
        self._progress = None
        if meta.get("progress"):
            stats = arrays.get("progress_stats")  # checkpoints before gradient transforms have none
            self._progress = dict(
                meta["progress"], index=arrays["progress_index"], batch_losses=arrays["progress_batch_losses"],
                stats=stats if stats is not None and stats.shape == self.stats.shape else np.zeros_like(self.stats),
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
        """Mean loss (and accuracy) over checked arrays X, y, in inference mode.

        Data-parallel, each rank scores its part of the rows and the means are over all of them
        (every rank calls it)."""
        if self.group is None:
            return self.score_shard(X, y)
        lo, hi = self.group.share(X.shape[0])
        part = self.score_shard(X[lo:hi], y[lo:hi]) if hi > lo else {}
        keys = ["loss"] + (["accuracy"] if self.loss.target in ACCURACY else [])
        totals = self.group.sum([part.get(k, 0.0) * (hi - lo) for k in keys])
        return {k: float(v) / X.shape[0] for k, v in zip(keys, totals)}

    def score_shard(self, X, y):
        """``score`` on this process's rows alone."""
        with threads.blas_threads(self._blas.count if self._blas else self._blas_count(max(self.batch_size, 256))):
            if self.backend is not None:
                return self.backend.score(X, y)
            return python.score(self.model, self.loss, X, y, max(self.batch_size, 256))

    def _blas_count(self, rows):
        """BLAS's threads for batches of ``rows`` (runtime/threads.py: by the products' sizes)."""
        share = self.group.threads() if self.group is not None else None
        return threads.blas_count(self.model, rows, self._own_threads(), share)

    def _own_threads(self):
        """True when some layer's kernels split a batch over the cores themselves (runtime/threads.py)."""
        if self._parallel is None:  # the model's layers never change: asked once
            self._parallel = self.device == "cpu" and any(
                threads.parallel(kernel(layer, k)) for layer in self.model.layers for k in ("forward_kernel", "backward_kernel")
            )
        return self._parallel


# -- the rules a run's settings follow, each checked here and only here -------

DEVICES = ("cpu", "cuda")


def check_device(device):
    """The device to train on, or a one-line ConfigError."""
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; choose {' or '.join(DEVICES)}")
    return device


def check_validation_split(fraction, owner="fit"):
    """The fraction of rows to hold out, in [0, 1), or a one-line ConfigError."""
    return real("validation_split", fraction, owner, low=0.0, high=1.0, high_open=True)


def split_indices(n, fraction, seed, owner="fit"):
    """(train, validation) row indices: a seeded random ``fraction`` held out for validation.

    Random rather than the last rows, so data sorted by class keeps every class in both parts.
    """
    fraction = check_validation_split(fraction, owner)
    n_val = int(round(n * fraction))
    if n_val < 1 or n_val >= n:
        raise DataError(f"validation_split={fraction} of {n} rows leaves no validation or no training rows")
    order = np.random.default_rng([seed, 1]).permutation(n)
    return np.sort(order[:-n_val]), np.sort(order[-n_val:])


def settings_warnings(model, optimizer):
    """What a run with these settings would train without saying: a rate of 0, or two affine
    layers with nothing nonlinear between them (together one linear map, so the depth buys nothing)."""
    found = []
    if optimizer.lr == 0:
        found.append(f"optimizer {optimizer.name!r} has lr=0: the weights will not move")
    last = None  # the affine layer since which only linear layers came
    for i, layer in enumerate(model.layers):
        if layer.name in AFFINE_LAYERS:
            if last is not None:
                between = sorted({model.layers[j].name for j in range(last + 1, i)})
                found.append(
                    f"layers {last} ({model.layers[last].name}) and {i} ({layer.name}) have nothing nonlinear between them"
                    + (f" ({', '.join(between)} {'is' if len(between) == 1 else 'are'} linear)" if between else "")
                    + ", so together they are one linear map: put an activation such as relu or tanh between them"
                )
                break
            last = i
        elif layer.name not in LINEAR_LAYERS:
            last = None
    return found


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
    transforms=(),
    distributed=False,
    divergence_factor=DIVERGENCE_FACTOR,
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
    ``history.iteration_loss`` holds the loss of every iteration of the last
    100,000 (older ones as a summary: ``history.loss_curve()`` draws the whole run).

    ``device="cuda"`` runs every kernel on an NVIDIA GPU (numba.cuda), the
    same batches in the same order as on the CPU.

    ``transforms`` (``jitprop.transform("gradient_clipping", max_norm=1.0)``,
    say) change or measure each batch's gradients before the update, inside
    the compiled step.

    A batch whose loss or gradient is NaN or infinite stops training before
    its update, with a RuntimeWarning that says where (``on_divergence="stop"``),
    or rolls the epoch back and halves the learning rate (``"rollback"``).
    So does an epoch whose mean loss, though finite, passes ``divergence_factor``
    (1e4) times the loss at the start (the larger of the first batch's and the
    baseline loss); that epoch is logged before the stop. 0 or None switches
    the rule off.

    ``distributed=True`` (under ``mpiexec``; or an mpi4py communicator) trains
    data-parallel: every rank calls ``fit`` with the same data, trains on its
    part of each batch, and the gradients are averaged inside the compiled
    step, so the weights are those of one process on the whole batch
    (``jitprop.distributed``).
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
        transforms=transforms,
        distributed=distributed,
        divergence_factor=divergence_factor,
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
    return python.score(model, loss, X, y, positive_int("batch_size", batch_size, "evaluate"))


def value_and_grad(model, loss, X, y, training=False, seed=0, inputs=False):
    """The batch-mean loss of (X, y) and its gradient for every parameter, keyed like ``state_dict()``.

    One forward pass (prediction), the loss, and one backward pass
    (backpropagation) over all of X as a single batch; the weights don't move.
    ``inputs=True`` also returns the gradient with respect to X (shaped as the
    model's input rows, ``(n, *input_shape)``): ``(value, grads, dX)``.
    """
    loss = api.loss(loss)
    X = as_inputs(model, X)
    y = as_targets(model, loss, y, X.shape[0])
    acts, caches, deltas = Workspace(model, X.shape[0], training=True).views(X.shape[0])
    if inputs:  # the first layer's backward fills dL/dX when given rows for it (training leaves it none)
        deltas = [np.zeros_like(acts[0]), *deltas[1:]]
    acts[0][...] = X
    model.forward(acts, caches, bool(training), mix_seed(seed))
    value = kernel(loss, "kernel")(acts[-1], y, deltas[-1], np.ascontiguousarray(loss.hyper(), dtype=np.float64))
    model.backward(acts, caches, deltas)
    grads = {k: v.copy() for k, v in model.gradients().items()}
    if inputs:
        return float(value), grads, deltas[0].reshape((X.shape[0], *model.input_shape))
    return float(value), grads
