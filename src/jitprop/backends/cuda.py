"""Training on an NVIDIA GPU with numba.cuda: the same step, every array in device memory.

The model's flat buffers, the optimizer state, the training set and the
workspaces are copied to the device once per fit. Each epoch's row order is
drawn on the device by the CPU's counter-based permutation (so a CUDA run sees
the same batches as a CPU run with the same seed), and its learning rate is
computed there by the schedule's kernel. Each batch is gathered on the device,
and each layer's, loss's and optimizer's ``cuda_*`` launchers run in the CPU
kernels' order. Per-batch losses and the accuracy count stay on the device
until the end of the epoch's run of batches.
"""

import time

import numpy as np
from numba import cuda

from .. import cuda_launch
from ..components import kernel
from ..contracts import losses
from ..errors import ConfigError
from ..kernels import feistel_bits, mix_seed, permuted, shuffle_key
from ..plugins import registry
from . import base, python
from .base import Backend

permuted = cuda_launch.device(permuted)  # the CPU's order (the plain function on the simulator)


@cuda.jit
def _shuffle_order(key, bits, index):
    """kernels.shuffle_order, one element per thread."""
    first, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(first, index.shape[0], stride):
        index[i] = permuted(i, index.shape[0], key, bits)


@cuda.jit
def _arange(index):
    first, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(first, index.shape[0], stride):
        index[i] = i


@cuda.jit
def _gather_rows(src, idx, start, dst):
    d = dst.shape[1]
    first, stride = cuda.grid(1), cuda.gridsize(1)
    for e in range(first, dst.shape[0] * d, stride):
        r, j = e // d, e % d
        dst[r, j] = src[idx[start + r], j]


@cuda.jit
def _gather_items(src, idx, start, dst):
    first, stride = cuda.grid(1), cuda.gridsize(1)
    for r in range(first, dst.shape[0], stride):
        dst[r] = src[idx[start + r]]


@cuda.jit
def _flag_nonfinite(losses, b, grads, flag):
    """flag[0] = min(flag[0], b) when batch b's loss or any gradient is NaN or infinite."""
    first, stride = cuda.grid(1), cuda.gridsize(1)
    if first == 0:
        v = losses[b]
        if v - v != 0.0:  # NaN for NaN and for +-inf
            cuda.atomic.min(flag, 0, b)
    for i in range(first, grads.shape[0], stride):
        g = grads[i]
        if g - g != 0.0:
            cuda.atomic.min(flag, 0, b)


@cuda.jit
def _warmup_rate(out, epoch, warmup, base_lr):
    """Schedule.__call__'s linear warmup: the rate of each of the first ``warmup`` epochs."""
    if cuda.grid(1) == 0:
        out[0] = base_lr * (epoch + 1) / (warmup + 1)


_class_hit = cuda_launch.device(losses.class_hit)
_binary_hits = cuda_launch.device(losses.binary_hits)


@cuda.jit
def _count_classes(pred, y, out):
    first, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(first, pred.shape[0], stride):
        if _class_hit(pred, i, y[i]):
            cuda.atomic.add(out, 0, 1.0)


@cuda.jit
def _count_binary(pred, y, out):
    first, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(first, pred.shape[0], stride):
        cuda.atomic.add(out, 0, _binary_hits(pred, y, i) / pred.shape[1])


COUNTERS = {"class": _count_classes, "binary": _count_binary}


def _launcher(component, attr, what):
    try:
        return kernel(component, attr)
    except (ConfigError, ImportError, AttributeError):
        try:
            origin = f" (from plugin {registry.lookup(what, component.name).plugin!r})"
        except ConfigError:
            origin = ""
        raise ConfigError(
            f"{what} {component.name!r}{origin} has no CUDA kernel ({attr}), so this model cannot train on"
            " --device cuda; run it on the CPU with --device cpu"
        ) from None


def check(model, loss, optimizer, schedule=None, transforms=()):
    """Fail in one line, before training, when no GPU is present or a part lacks CUDA kernels."""
    if not cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available here; run on the CPU with --device cpu")
    for layer in model.layers:
        _launcher(layer, "cuda_forward", "layer")
        _launcher(layer, "cuda_backward", "layer")
    _launcher(loss, "cuda_kernel", "loss")
    _launcher(optimizer, "cuda_kernel", "optimizer")
    if schedule is not None:
        _launcher(schedule, "cuda_kernel", "schedule")
    for transform in transforms:
        _launcher(transform, "cuda_kernel", "transform")


def scheduled_rate(schedule, epoch, base_lr, out):
    """``schedule(epoch, base_lr)`` computed on the device into ``out[0]`` (and returned):
    the warmup by the core's kernel, the rest by the schedule's ``cuda_kernel``."""
    if epoch < schedule.warmup:
        _warmup_rate[1, 1](out, epoch, schedule.warmup, base_lr)
    else:
        h = np.ascontiguousarray(schedule.hyper(), dtype=np.float64)
        kernel(schedule, "cuda_kernel")(out, epoch - schedule.warmup, base_lr, h)
    return float(out.copy_to_host()[0])


class CudaBackend(Backend):
    """Device copies of everything one fit needs, made once; the batch loop launches kernels."""

    name = "cuda"

    def __init__(self, trainer, X, y, batch_size, validation=None):
        super().__init__(trainer, X, y, batch_size, validation)
        model, bs = self.model, batch_size
        check(model, trainer.loss, trainer.optimizer, trainer.lr_schedule, trainer.transforms)
        self.span = 8  # batches per call, adapted to about base.CHUNK_SECONDS like the compiled path's
        self.fwd = [kernel(layer, "cuda_forward") for layer in model.layers]
        self.bwd = [kernel(layer, "cuda_backward") for layer in model.layers]
        self.loss_kernel = kernel(trainer.loss, "cuda_kernel")
        self.opt_kernel = kernel(trainer.optimizer, "cuda_kernel")
        self.rate_out = cuda.device_array(1, np.float64)
        self.count = COUNTERS.get(trainer.loss.target)
        self.params = cuda.to_device(model.params)
        self.grads = cuda.to_device(model.grads)
        self.opt_state = cuda.to_device(trainer.opt_state)
        self.state = cuda.to_device(model.state)
        self.stats = cuda.to_device(trainer.stats)
        self.offsets = cuda.to_device(model.offsets)
        stats = _slices(self.stats, trainer.transform_stats, trainer.stats)
        # A transform that sees activations keeps its memory on the device too (filled on the host first).
        self.memory = [cuda.to_device(m) if tr.sees_activations else None for tr, m in zip(trainer.transforms, trainer.transform_memory)]
        self.transforms = [(kernel(tr, "cuda_kernel"), h, s.reshape(host.shape), m) for tr, h, s, host, m in
                           zip(trainer.transforms, trainer.transform_h, stats, trainer.transform_stats, self.memory)]  # fmt: skip
        # What a run may roll back (the host's _training_state, in order): the transforms' memory with
        # it, so a replay measures what the first run did.
        self.live = (self.params, self.opt_state, self.state, self.stats, *(m for m in self.memory if m is not None))
        self.layer_params = _slices(self.params, model.layer_params, model.params)
        self.layer_grads = _slices(self.grads, model.layer_grads, model.grads)
        layer_state = _slices(self.state, model.layer_state, model.state)
        self.scratch = cuda.to_device(model.scratch)
        layer_scratch = _slices(self.scratch, model.layer_scratch, model.scratch)
        # Per layer: the arguments after the contract's, as on the host (model.last_args).
        self.last = [((s,) if stateful else ()) + ((w,) if wants else ()) for s, stateful, w, wants
                     in zip(layer_state, model.stateful, layer_scratch, model.has_scratch)]  # fmt: skip
        dt = model.dtype
        self.acts = [cuda.device_array((bs, d), dt) for d in model.dims]
        self.caches = [cuda.device_array((bs, layer.cache_dim()), dt) for layer in model.layers]
        self.deltas = [cuda.device_array((0, model.dims[0]), dt)] + [cuda.device_array((bs, d), dt) for d in model.dims[1:]]
        self.dX, self.dy = cuda.to_device(X), cuda.to_device(y)
        self.ybuf = cuda.device_array((bs,) + y.shape[1:], y.dtype)
        self.dindex = cuda.device_array(X.shape[0], np.int64)
        self.batch_losses = cuda.device_array(trainer.batch_losses.shape[0], np.float64)
        self.correct = cuda.device_array(1, np.float64)
        self.flag = cuda.device_array(1, np.int64)  # the first batch of a run that went non-finite
        # Where a run of batches started: a divergence rolls back here and replays up to the bad batch.
        self.saved = [cuda.device_array_like(a) for a in self.live]
        self.gather_y = _gather_items if y.ndim == 1 else _gather_rows
        self._views = {}
        self.val = None
        if validation is not None:  # scored on the device too: only the sums come back
            Xv, yv = validation
            vbs = min(max(trainer.batch_size, 256), Xv.shape[0])
            self.val = {
                "X": cuda.to_device(Xv), "y": cuda.to_device(yv), "bs": vbs,
                "acts": [cuda.device_array((vbs, d), dt) for d in model.dims[1:]],
                "caches": [cuda.device_array((vbs, layer.cache_dim()), dt) for layer in model.layers],
                "scratch": cuda.device_array((vbs, model.output_dim), dt),
                "losses": cuda.device_array(-(-Xv.shape[0] // vbs), np.float64),
            }  # fmt: skip

    def views(self, rows):
        v = self._views.get(rows)
        if v is None:
            v = self._views[rows] = (
                [a[:rows] for a in self.acts],
                [c[:rows] for c in self.caches],
                [self.deltas[0]] + [d[:rows] for d in self.deltas[1:]],
                self.ybuf[:rows],
            )
        return v

    def start_epoch(self, epoch):
        """Draw the row order of ``epoch`` on the device, as the CPU would; statistics from zero."""
        n = self.dindex.shape[0]
        if self.trainer.shuffle:
            _shuffle_order[cuda_launch.grid_1d(n)](shuffle_key(self.trainer.seed, epoch), feistel_bits(n), self.dindex)
        else:
            _arange[cuda_launch.grid_1d(n)](self.dindex)
        self.trainer.stats[...] = 0.0
        self.stats.copy_to_device(self.trainer.stats)

    def resume_epoch(self, index, stats):
        self.dindex.copy_to_device(np.ascontiguousarray(index, dtype=np.int64))
        self.trainer.stats[...] = stats
        self.stats.copy_to_device(self.trainer.stats)

    def host_order(self):
        return self.dindex.copy_to_host()

    def rate(self, epoch, base_lr):
        """The learning rate of ``epoch``, computed on the device by the schedule's CUDA kernel.

        It comes back to the host once per epoch: it is logged with the epoch, callbacks
        may change it, and the update launchers take it by value with their other scalars.
        """
        schedule = self.trainer.lr_schedule
        return base_lr if schedule is None else scheduled_rate(schedule, epoch, base_lr, self.rate_out)

    def run(self, first, last, sums):
        """Train batches first..last of this epoch in the order on the device.

        Every batch's loss and gradients are checked on the device as it goes; the flag, the
        losses and the accuracy count come back once, at the end. If a batch went non-finite,
        the run is rolled back to its start and replayed up to that batch, so the weights are
        those before its update.
        """
        t = self.trainer
        started = time.perf_counter()
        for copy, live in zip(self.saved, self.live):
            copy.copy_to_device(live)
        step = t.step
        self.flag.copy_to_device(np.array([last], dtype=np.int64))
        self._batches(first, last, check=True)
        bad = int(self.flag.copy_to_host()[0])
        done = last
        if bad < last:
            for copy, live in zip(self.saved, self.live):
                live.copy_to_device(copy)
            t.step = step
            done = bad
            self._batches(first, bad, check=False)
        losses = self.batch_losses.copy_to_host()
        for b in range(first, done):  # the same running sums, in the same order, as on the CPU
            t.batch_losses[b] = losses[b]
            sums.loss += losses[b] * self.rows(b)
            sums.seen += self.rows(b)
        sums.correct += float(self.correct.copy_to_host()[0])
        ratio = base.CHUNK_SECONDS / max(time.perf_counter() - started, 1e-6)
        self.span = max(1, min(int(self.span * min(ratio, 4.0)), 1 << 20))
        return sums, done, None if done == last else done

    def _batches(self, first, last, check):
        """The batch loop: gather, forward, loss, backward, (check), update."""
        t = self.trainer
        self.correct.copy_to_device(np.zeros(1))
        for b in range(first, last):
            acts = self._step(b)
            self._transforms(acts)
            if check:
                _flag_nonfinite[cuda_launch.grid_1d(self.grads.shape[0])](self.batch_losses, b, self.grads, self.flag)
            t.step += 1
            self.opt_kernel(self.params, self.grads, self.opt_state, t.lr, t.opt_h, t.step)

    def _transforms(self, acts):
        """The gradient slot: every transform's launcher, with its memory and the batch's activations if it sees them."""
        lr = self.trainer.lr
        for transform, h, stats, memory in self.transforms:
            if memory is None:
                transform(self.grads, self.params, self.offsets, lr, h, stats)
            else:
                transform(self.grads, self.params, self.offsets, lr, h, stats, memory, tuple(acts))

    def _step(self, b):
        """Batch b up to its gradients: gather, forward, loss (and hits), backward; returns its activations."""
        t, model = self.trainer, self.model
        start, rows = b * self.bs, self.rows(b)
        acts, caches, deltas, yb = self.views(rows)
        _gather_rows[cuda_launch.grid_1d(rows * self.dX.shape[1])](self.dX, self.dindex, start, acts[0])
        self.gather_y[cuda_launch.grid_1d(rows * (yb.shape[1] if yb.ndim == 2 else 1))](self.dy, self.dindex, start, yb)
        s = mix_seed(t.seed, t.step)
        for i, f in enumerate(self.fwd):
            f(self.layer_params[i], model.hypers[i], acts[i], acts[i + 1], caches[i], True, mix_seed(s, i),
              *self.last[i])  # fmt: skip
        self.loss_kernel(acts[-1], yb, deltas[-1], t.loss_h, self.batch_losses[b : b + 1])
        if self.count is not None:
            self.count[cuda_launch.grid_1d(rows)](acts[-1], yb, self.correct)
        for i in range(len(self.bwd) - 1, -1, -1):
            self.bwd[i](self.layer_params[i], model.hypers[i], acts[i], acts[i + 1], caches[i], deltas[i + 1],
                        deltas[i], self.layer_grads[i], *self.last[i])  # fmt: skip
        return acts

    def why_diverged(self, b):
        """Batch b's loss and gradients (not its update) computed again into the host's arrays,
        the running state and statistics left as they were; then the host's answer."""
        kept = [(a, a.copy_to_host()) for a in (self.state, self.stats, *(m for m in self.memory if m is not None))]
        self._transforms(self._step(b))
        self.trainer.batch_losses[b] = self.batch_losses[b : b + 1].copy_to_host()[0]
        self.grads.copy_to_host(self.model.grads)
        for device, host in kept:
            device.copy_to_device(host)
        return super().why_diverged(b)

    def push(self):
        for device, host in zip(self.live, self._training_state()):
            device.copy_to_device(host)

    def pull(self):
        for device, host in zip(self.live, self._training_state()):
            device.copy_to_host(host)

    def score(self, X, y):
        """Mean loss (and accuracy) in inference mode: on the device for the validation rows
        (already there), through the Python loop on the host's weights otherwise."""
        if self.val is None or X is not self.validation[0]:
            self.pull()
            return python.score(self.model, self.trainer.loss, X, y, max(self.trainer.batch_size, 256))
        v, t, model = self.val, self.trainer, self.model
        n, bs = v["X"].shape[0], v["bs"]
        self.correct.copy_to_device(np.zeros(1))
        for b, start in enumerate(range(0, n, bs)):
            stop = min(start + bs, n)
            rows = stop - start
            x, yb = v["X"][start:stop], v["y"][start:stop]
            acts = [x] + [a[:rows] for a in v["acts"]]
            for i, f in enumerate(self.fwd):
                f(self.layer_params[i], model.hypers[i], acts[i], acts[i + 1], v["caches"][i][:rows], False, mix_seed(0, i),
                  *self.last[i])  # fmt: skip
            self.loss_kernel(acts[-1], yb, v["scratch"][:rows], t.loss_h, v["losses"][b : b + 1])
            if self.count is not None:
                self.count[cuda_launch.grid_1d(rows)](acts[-1], yb, self.correct)
        losses = v["losses"].copy_to_host()
        total = 0.0
        for b, start in enumerate(range(0, n, bs)):  # the CPU's order of summation
            total += losses[b] * (min(start + bs, n) - start)
        result = {"loss": total / n}
        if self.count is not None:
            result["accuracy"] = float(self.correct.copy_to_host()[0]) / n
        return result


def _slices(device, views, host):
    """Device slices at the offsets the host ``views`` have in their flat buffer ``host``."""
    base_address, item = host.__array_interface__["data"][0], host.itemsize
    out = []
    for view in views:
        start = (view.__array_interface__["data"][0] - base_address) // item if view.size else 0
        out.append(device[start : start + view.size])
    return out
