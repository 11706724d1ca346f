"""What each rank runs in test_mpi.py's jobs: ``mpiexec -n N python ranks.py CASE OUT [TIMEOUT]``.

Rank 0 writes CASE's result to OUT as JSON. Each case trains a tiny float64
model on fixed random rows, so a job takes a second or two.
"""

import json
import sys
import time

import numpy as np
from mpi4py import MPI

import jitprop
from jitprop.distributed import Group

comm = MPI.COMM_WORLD
RANK = comm.rank


def data(n=201, features=7, classes=3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, features)), rng.integers(0, classes, n)


def model():
    layers = [jitprop.layer("dense", units=16), "tanh", jitprop.layer("dropout", rate=0.25), jitprop.layer("dense", units=3)]
    return jitprop.Sequential(layers, input_dim=7, dtype="float64", seed=3)


def train(group, optimizer, callbacks=(), epochs=4, X=None, y=None):
    """(model, history) of one run; ``group`` None trains in this process alone."""
    X, y = data() if X is None else (X, y)
    m = model()
    # 201 rows in batches of 22: a last batch of 3 rows, which leaves one of 4 ranks no rows at all.
    history = jitprop.fit(m, X, y, loss="cross_entropy", optimizer=optimizer, epochs=epochs, batch_size=22,
                          validation_split=0.2, callbacks=list(callbacks), distributed=group)  # fmt: skip
    return m, history


def equivalence():
    """Per optimizer: the largest relative difference of the weights from one process's on the same global batches."""
    out = {}
    for name, spec in (("sgd_momentum", dict(name="sgd", lr=0.1, momentum=0.9)), ("adam", dict(name="adam", lr=0.01))):
        alone, h1 = train(None, jitprop.optimizer(**spec))
        # A communicator of its own (MPICH numbers those above 2**31), as a user's code may pass.
        together, h2 = train(Group(comm.Dup()) if name == "adam" else Group(comm), jitprop.optimizer(**spec))
        out[name] = {
            "weights": float(np.max(np.abs(together.params - alone.params)) / np.max(np.abs(alone.params))),
            "moved": float(np.max(np.abs(alone.params - model().params))),
            "history": {k: [float(a) for a in h2.history[k]] for k in h2.history},
            "alone": {k: [float(a) for a in h1.history[k]] for k in h1.history},
            "same_on_every_rank": bool(all(np.array_equal(p, together.params) for p in comm.allgather(together.params))),
        }
    return out


def again():
    """A Trainer that fits twice, after each rank's program learnt another span: the weights of one process."""
    X, y = data()
    together = jitprop.Trainer(model(), loss="cross_entropy", optimizer="adam", batch_size=22, distributed=Group(comm))
    together.fit(X, y, epochs=2)
    together.backend.program.span = 3 + 5 * RANK  # what a slow and a fast rank would have learnt
    together.fit(X, y, epochs=4)
    alone = jitprop.Trainer(model(), loss="cross_entropy", optimizer="adam", batch_size=22)
    alone.fit(X, y, epochs=4)
    a, b = together.model.params, alone.model.params
    return {"weights": float(np.max(np.abs(a - b)) / np.max(np.abs(b)))}


class OnRank1(jitprop.Callback):
    """Misbehaves on rank 1 after its second epoch, as CASE says."""

    def __init__(self, case):
        self.case = case

    @jitprop.hookimpl
    def on_epoch_end(self, trainer, epoch):
        if RANK != 1 or epoch != 1:
            return
        if self.case == "raise":
            raise ValueError("row 17 of this host's data is unreadable")
        if self.case == "stall":
            time.sleep(120)
        if self.case == "stop":
            trainer.stop_training = True


def main():
    case, out = sys.argv[1], sys.argv[2]
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    result = {"ranks": comm.size}
    if case == "equivalence":
        result.update(equivalence())
        result["again"] = again()
    elif case in ("raise", "stall", "stop"):
        _, history = train(Group(comm, timeout), "adam", callbacks=[OnRank1(case)], epochs=6)
        result["epochs"] = comm.allgather(len(history.epoch))
    elif case == "diverge":  # a learning rate that blows up: every rank stops before the same update
        X, _ = data()
        targets = np.random.default_rng(1).normal(size=(X.shape[0], 3))  # regression: nothing bounds the error
        trainer = jitprop.Trainer(model(), loss="mse", optimizer=jitprop.optimizer("sgd", lr=1e20), batch_size=22,
                                  distributed=Group(comm, timeout))  # fmt: skip
        trainer.fit(X, targets, epochs=3)
        result["stops"] = comm.allgather(trainer.divergence)
    elif case == "data":  # one rank's data differs: every rank raises the same DataError
        X, y = data()
        if RANK == 1:
            X = X.copy()
            X[5, 2] += 1.0
        try:
            train(Group(comm, timeout), "adam", X=X, y=y)
        except jitprop.DataError as exc:
            result["errors"] = comm.allgather(str(exc))
    if RANK == 0:
        with open(out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
