"""The compiled fast path: same numbers as the Python loop, plugins included, resumable mid-epoch."""

import numpy as np
import pytest
from numba import njit

import jitprop
import jitprop.backends.base
import jitprop.backends.codegen
from conftest import spirals
from test_plugins import HuberPlugin


class Square(jitprop.Layer):
    """x squared, with kernels kept on the class (a qualified name in generated code)."""

    name = "square_test"

    @staticmethod
    @njit(cache=True)
    def forward_kernel(p, h, x, out, cache, training, seed):
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                out[i, j] = x[i, j] * x[i, j]

    @staticmethod
    @njit(cache=True)
    def backward_kernel(p, h, x, out, cache, grad_out, grad_in, grad_p):
        for i in range(grad_in.shape[0]):
            for j in range(grad_in.shape[1]):
                grad_in[i, j] = 2.0 * x[i, j] * grad_out[i, j]


def model(classes=3, dropout=0.2, seed=0):
    return jitprop.Sequential(
        [jitprop.layer("dense", units=16), "tanh", jitprop.layer("dropout", rate=dropout),
         jitprop.layer("dense", units=16), "gelu", jitprop.layer("dense", units=classes)],
        input_dim=2, seed=seed,
    )


def train(compiled, loss="cross_entropy", y=None, epochs=3, **kw):
    X, labels = spirals()
    m = model(classes=3 if y is None else 1)
    trainer = jitprop.Trainer(m, loss, jitprop.optimizer("adam", lr=0.01), batch_size=16, seed=3, **kw)
    trainer.compiled = compiled
    history = trainer.fit(X, labels if y is None else y, epochs=epochs, validation_split=0.2)
    return trainer, history


def test_compiled_and_python_loops_give_identical_weights_and_logs():
    fast, h_fast = train(True)
    slow, h_slow = train(False)
    assert fast.backend.name == "compiled" and slow.backend.name == "python"
    assert np.array_equal(fast.model.params, slow.model.params)
    assert np.array_equal(fast.opt_state, slow.opt_state)
    assert h_fast.history == h_slow.history
    assert h_fast.iteration_loss == h_slow.iteration_loss


def test_a_plugin_loss_is_compiled_into_the_same_fast_path(register_plugin):
    register_plugin(HuberPlugin(), name="huber-plugin")
    X, _ = spirals()
    y = np.sin(3 * X[:, 0]) * X[:, 1]
    fast, h_fast = train(True, loss="huber", y=y)
    slow, h_slow = train(False, loss="huber", y=y)
    assert fast.backend.name == "compiled"
    assert np.array_equal(fast.model.params, slow.model.params) and h_fast.history == h_slow.history


def test_kernels_kept_on_a_class_compile_too():
    from jitprop import gradcheck

    assert max(gradcheck.check_layer(Square()).values()) < 1e-6
    X, y = spirals()
    runs = []
    for compiled in (True, False):
        m = jitprop.Sequential([jitprop.layer("dense", units=8), Square(), jitprop.layer("dense", units=3)], input_dim=2)
        t = jitprop.Trainer(m, "cross_entropy", batch_size=32)
        t.compiled = compiled
        t.fit(X, y, epochs=2)
        runs.append((t.backend.name, m.params.copy()))
    assert [name for name, _ in runs] == ["compiled", "python"]
    assert np.array_equal(runs[0][1], runs[1][1])


def test_a_per_batch_hook_or_an_unnameable_kernel_takes_the_python_loop():
    class PerBatch:
        @jitprop.hookimpl
        def on_train_batch_end(self):
            pass

    trainer, _ = train(True, callbacks=[PerBatch()], epochs=1)
    assert trainer.backend.name == "python"

    def local_relu_forward(p, h, x, out, cache, training, seed):
        np.maximum(x, 0, out=out)

    def local_relu_backward(p, h, x, out, cache, grad_out, grad_in, grad_p):
        if grad_in.shape[0]:
            grad_in[...] = grad_out * (x > 0)

    class LocalReLU(jitprop.Layer):
        name = "local_relu"
        forward_kernel = staticmethod(local_relu_forward)
        backward_kernel = staticmethod(local_relu_backward)

    X, y = spirals()
    m = jitprop.Sequential([jitprop.layer("dense", units=8), LocalReLU(), jitprop.layer("dense", units=3)], input_dim=2)
    t = jitprop.Trainer(m, "cross_entropy")
    t.fit(X, y, epochs=2)
    assert t.backend.name == "python" and len(t.history.epoch) == 2


def test_an_interrupt_between_compiled_chunks_resumes_exactly(monkeypatch):
    monkeypatch.setattr(jitprop.backends.base, "CHUNK_SECONDS", 1e-9)  # one batch per compiled call

    class InterruptOnce:
        fired = False

        @jitprop.hookimpl
        def on_train_chunk_end(self, trainer, batches_done):
            if trainer.epoch == 1 and batches_done == 5 and not self.fired:
                self.fired = True
                trainer.request_interrupt()

    X, y = spirals()
    straight = model()
    jitprop.Trainer(straight, "cross_entropy", batch_size=16).fit(X, y, epochs=3)
    m = model()
    t = jitprop.Trainer(m, "cross_entropy", batch_size=16, callbacks=[InterruptOnce()])
    t.fit(X, y, epochs=3)
    assert t.interrupted and t.backend.name == "compiled" and t.step == 19 + 5
    meta, arrays = t.end_state
    assert meta["progress"]["batch"] == 5
    resumed = model(seed=9)
    t2 = jitprop.Trainer(resumed, "cross_entropy", batch_size=16, callbacks=[InterruptOnce()])
    t2.load_state(meta, arrays)
    t2.fit(X, y, epochs=3)
    assert np.array_equal(resumed.params, straight.params)


def test_generated_source_goes_to_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("JITPROP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(jitprop.backends.codegen, "_programs", {})
    X, y = spirals()
    for _ in range(2):  # the second model of the same structure reuses the first one's program
        m = jitprop.Sequential([jitprop.layer("dense", units=4), "relu", jitprop.layer("dense", units=3)], input_dim=2)
        t = jitprop.Trainer(m, "cross_entropy", "sgd")
        t.fit(X, y, epochs=1)
        files = list(tmp_path.glob("jitprop_program_*.py"))
        assert t.backend.name == "compiled" and len(files) == 1 and t.backend.program.path == str(files[0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_validation_scores_match_evaluate(dtype):
    X, y = spirals()
    m = jitprop.Sequential([jitprop.layer("dense", units=8), "relu", jitprop.layer("dense", units=3)], input_dim=2, dtype=dtype)
    h = jitprop.fit(m, X, y, loss="cross_entropy", epochs=2, validation_data=(X[:50], y[:50]))
    ev = jitprop.evaluate(m, X[:50], y[:50], loss="cross_entropy")
    assert h.history["val_loss"][-1] == pytest.approx(ev["loss"], rel=1e-6)
    assert h.history["val_accuracy"][-1] == ev["accuracy"]


def deep(hidden, kinds=("relu",), seed=0):
    layers = []
    for i in range(hidden):
        layers += [jitprop.layer("dense", units=5), kinds[i % len(kinds)]]
    return jitprop.Sequential(layers + [jitprop.layer("dense", units=3)], input_dim=2, seed=seed)


def test_one_program_serves_every_depth_and_order_of_the_same_kinds_of_layer(tmp_path, monkeypatch):
    # The step loops over the layers: its source names each kind of layer once, so a deep model
    # compiles no more code than a shallow one (unrolled, 200 layers took over 13 minutes).
    monkeypatch.setenv("JITPROP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(jitprop.backends.codegen, "_programs", {})
    X, y = spirals(n_per_class=10)
    programs = set()
    for m in (deep(1), deep(60), deep(5, kinds=("relu", "tanh")), deep(8, kinds=("tanh", "relu"))):
        t = jitprop.Trainer(m, "cross_entropy", batch_size=8)
        t.fit(X, y, epochs=1)
        assert t.backend.name == "compiled"
        programs.add(t.backend.program.path)
    assert len(programs) == 2 and len(list(tmp_path.glob("jitprop_program_*.py"))) == 2
    coached = set()  # the coach reads every activation, from one flat buffer: one program at any depth too
    for m in (deep(2), deep(30)):
        t = jitprop.Trainer(m, "cross_entropy", batch_size=8, callbacks=[jitprop.callback("coach")])
        t.fit(X, y, epochs=1)
        coached.add(t.backend.program.path)
    assert len(coached) == 1 and not coached & programs


def test_a_deep_model_with_every_argument_kind_trains_as_on_the_python_loop():
    # Dropout draws per layer index, tanh and relu alternate, deep enough that a wrong layer's
    # slice of any buffer would show.
    def build():
        layers = []
        for i in range(12):
            layers += [jitprop.layer("dense", units=3 + i % 4), ("tanh", "relu", "sigmoid")[i % 3]]
            if i % 5 == 0:
                layers.append(jitprop.layer("dropout", rate=0.1))
        return jitprop.Sequential(layers + [jitprop.layer("dense", units=3)], input_dim=2, seed=4)

    X, y = spirals(n_per_class=20)
    runs = []
    for compiled in (True, False):
        m = build()
        t = jitprop.Trainer(m, "cross_entropy", batch_size=7)
        t.compiled = compiled
        h = t.fit(X, y, epochs=2, validation_split=0.25)
        runs.append((t.backend.name, m.params.copy(), h.history))
    assert [r[0] for r in runs] == ["compiled", "python"]
    assert np.array_equal(runs[0][1], runs[1][1]) and runs[0][2] == runs[1][2]
