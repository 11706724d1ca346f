"""The compiled CPU path: runs of batches inside one generated njit function (codegen.py).

Bit-identical to the Python loop, which calls the same kernels; taken
whenever no per-batch hook is implemented and every kernel can be named
from generated code (``CompiledBackend.program`` returns None otherwise).
"""

import threading
import time

import numpy as np

from ..model.sequential import Workspace
from . import base, codegen, layout
from .base import Backend


class CompiledBackend(Backend):
    name = "compiled"

    @staticmethod
    def build_program(trainer):
        """The compiled program for the trainer's model, loss and optimizer, or None."""
        return codegen.program(trainer.model, trainer.loss, trainer.optimizer, trainer.transforms,
                               distributed=trainer.group is not None)

    def __init__(self, trainer, X, y, batch_size, validation=None, program=None):
        super().__init__(trainer, X, y, batch_size, validation)
        model = self.model
        self.program = program or self.build_program(trainer)
        self.kinds = self.program.kind_numbers(model)
        self._span_key = (tuple(model.dims), batch_size)
        self.span = self.program.spans.get(self._span_key, 8)
        ws = self.ws = Workspace(model, batch_size, training=True)
        self.y_buf = np.zeros((batch_size,) + y.shape[1:], y.dtype)
        # The running state as it was before the batch in flight, should that batch diverge.
        self.state_before = model.state.copy() if any(model.stateful) else model.state
        self.stats_before = trainer.stats.copy()
        self.model_args = (model.hyper_buffer, model.scratch)
        self.ws_args = (layout.table(model, ws, self.kinds), ws.act_buffer, ws.cache_buffer, ws.delta_buffer)
        self.transform_args = []
        for tr, h, stats, memory in zip(trainer.transforms, trainer.transform_h, trainer.transform_stats, trainer.transform_memory):
            self.transform_args += [h, stats, memory] if tr.sees_activations else [h, stats]
        if any(tr.sees_activations for tr in trainer.transforms):
            self.transform_args.append(layout.activations(ws))
        group = self.group = trainer.group
        self.mpi_args = ()
        if group is not None:  # jitprop.distributed: the rank's part of each batch, gradients summed
            self.mpi_args = (group.rank, group.size, model.grad_buffer, *group.handles(model.dtype))
        self._scratch = None  # the loss gradient of scoring, which nothing reads
        self._scoring = {}  # per workspace size: its layout table

    def _arguments(self, first, last, sums):
        """``train_chunk``'s arguments for batches ``first..last``, the epoch's totals so far in ``sums``."""
        t, model = self.trainer, self.model
        return (self.X, self.y, self.index, first, last, self.bs, model.params, model.grads, t.opt_state, t.lr, t.opt_h,
                t.step, t.seed, t.loss_h, t.batch_losses, self.y_buf, model.state, self.state_before, model.offsets,
                t.stats, self.stats_before, float(sums.loss), float(sums.correct), int(sums.seen), *self.model_args,
                *self.ws_args, *self.transform_args, *self.mpi_args)  # fmt: skip

    def _train(self, first, last, sums):
        t = self.trainer
        result = self.program.train_chunk(*self._arguments(first, last, sums))
        if self.group is not None:
            *result, err = result
            if err:
                self.group.fatal(f"MPI_Allreduce failed (MPI error {err}) in iteration {result[3] + 1}")
        sums.loss, sums.correct, sums.seen, t.step, done, diverged = result
        return sums, done, diverged

    def warm_up(self):
        """Compile (or load) the training step without training: a call over no batches, its
        result dropped (so a helper thread left compiling after an interrupt changes nothing), and
        the scoring pass on one validation row."""
        self.program.train_chunk(*self._arguments(0, 0, base.Sums()))
        if self.validation is not None:
            self.score(self.validation[0][:1], self.validation[1][:1])

    def compile(self, interrupted):
        """``warm_up`` on a helper thread while this one waits, asking ``interrupted()`` 20 times a
        second: Numba's compiler holds a thread for seconds at a time in LLVM, where no signal
        handler runs, so a Ctrl-C that came then would only be seen once the step was built.
        False when interrupted first (the helper thread is left to finish on its own)."""
        if interrupted():
            return False
        failed = []

        def work():
            try:
                self.warm_up()
            except BaseException as exc:  # raised again on the caller's thread
                failed.append(exc)

        worker = threading.Thread(target=work, name="jitprop-compile", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.05)
            if interrupted():
                return False
        if failed:
            raise failed[0]
        return True

    def run(self, first, last, sums):
        started = time.perf_counter()
        sums, done, diverged = self._train(first, last, sums)
        elapsed = time.perf_counter() - started
        ratio = base.CHUNK_SECONDS / max(elapsed, 1e-6)
        # Kept with the program: the next fit of the same model starts at the right size.
        self.span = self.program.spans[self._span_key] = max(1, min(int(self.span * min(ratio, 4.0)), 1 << 20))
        return sums, done, done if diverged else None

    def score(self, X, y):
        model, t = self.model, self.trainer
        bs = min(max(t.batch_size, 256), X.shape[0])
        ws = model.workspace(bs)
        if self._scratch is None or self._scratch.shape[0] < bs:
            self._scratch = np.zeros((bs, model.output_dim), model.dtype)
        table = self._scoring.get(bs)
        if table is None:
            table = self._scoring[bs] = layout.table(model, ws, self.kinds)
        total, correct = self.program.evaluate(X, y, bs, t.loss_h, self._scratch, model.params, model.offsets,
                                               model.hyper_buffer, model.state, model.scratch, table, ws.act_buffer,
                                               ws.cache_buffer)  # fmt: skip
        result = {"loss": total / X.shape[0]}
        if self.accuracy is not None:
            result["accuracy"] = correct / X.shape[0]
        return result
