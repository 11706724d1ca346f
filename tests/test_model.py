"""Sequential: flat parameters, torch-compatible state_dict, predict."""

import numpy as np
import pytest

import jitprop
from conftest import spirals
from numba import njit


def model(dtype="float32"):
    return jitprop.Sequential(
        [jitprop.layer("dense", units=5), "relu", jitprop.layer("dense", units=3), "softmax"],
        input_dim=4, dtype=dtype, seed=2,
    )


def test_state_dict_uses_torch_sequential_keys_and_shapes():
    sd = model().state_dict()
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [v.shape for v in sd.values()] == [(5, 4), (5,), (3, 5), (3,)]
    assert all(v.dtype == np.float32 for v in sd.values())


def test_params_are_one_flat_buffer_and_state_dict_copies():
    m = model()
    assert m.n_params == 5 * 4 + 5 + 3 * 5 + 3 == m.params.size
    sd = m.state_dict()
    sd["0.bias"][:] = 42
    assert not (m.params == 42).any()
    m.parameters()["0.bias"][:] = 42  # live views write through
    assert (m.params[20:25] == 42).all()


def test_load_state_dict_round_trip_and_predict_matches_numpy():
    src, dst = model("float64"), jitprop.Sequential(
        [jitprop.layer("dense", units=5), "relu", jitprop.layer("dense", units=3), "softmax"],
        input_dim=4, dtype="float64", seed=99,
    )
    dst.load_state_dict(src.state_dict())
    assert np.array_equal(src.params, dst.params)
    X = np.random.default_rng(0).normal(size=(11, 4))
    sd = src.state_dict()
    h = np.maximum(X @ sd["0.weight"].T + sd["0.bias"], 0)
    z = h @ sd["2.weight"].T + sd["2.bias"]
    p = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(dst.predict(X, batch_size=4), p / p.sum(1, keepdims=True), rtol=1e-12)


def test_load_state_dict_rejects_what_does_not_fit_and_changes_nothing():
    m = model()
    before = m.params.copy()
    sd = m.state_dict()
    bad = dict(sd, **{"2.weight": np.zeros((5, 3))})
    with pytest.raises(jitprop.DataError, match=r"'2.weight' has shape \(5, 3\), the model needs \(3, 5\)"):
        m.load_state_dict(bad)
    with pytest.raises(jitprop.DataError, match="missing keys 2.bias"):
        m.load_state_dict({k: v for k, v in sd.items() if k != "2.bias"})
    with pytest.raises(jitprop.DataError, match="NaN"):
        m.load_state_dict(dict(sd, **{"0.bias": np.full(5, np.nan)}))
    assert np.array_equal(m.params, before)


def test_repr_shows_the_stack():
    text = repr(model())
    assert "(0): dense(units=5, init='auto')" in text and "(3): softmax()" in text and "params=43" in text


def test_bare_names_are_accepted_everywhere():
    m = jitprop.Sequential(["relu", "tanh"], input_dim=3)
    assert [layer.name for layer in m.layers] == ["relu", "tanh"]
    X = np.ones((4, 3))
    h = jitprop.fit(jitprop.Sequential([jitprop.layer("dense", units=2)], 3), X, np.zeros(4, int),
                    loss="cross_entropy", optimizer="sgd", callbacks=["terminate_on_nan"], epochs=1)
    assert len(h.epoch) == 1


@njit(cache=False)
def _counting_forward(p, h, x, out, cache, training, seed, state):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = x[i, j] * p[0]
    if training:
        state[0] += 1.0  # batches seen in training
        state[1] = x.shape[0]  # rows of the last one


@njit(cache=False)
def _counting_backward(p, h, x, out, cache, grad_out, grad_in, grad_p, state):
    g = 0.0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            g += grad_out[i, j] * x[i, j]
            if grad_in.shape[0] > 0:
                grad_in[i, j] = grad_out[i, j] * p[0]
    grad_p[0] = g


class Counting(jitprop.Layer):
    """Scales by a learned factor and counts training batches in its running state."""

    name = "counting_test"
    param_names = ("scale",)
    state_names = ("batches", "last_rows")
    forward_kernel = staticmethod(_counting_forward)
    backward_kernel = staticmethod(_counting_backward)

    def param_shapes(self):
        return {"scale": (1,)}

    def init_params(self, params, rng, relu_next=False):
        params["scale"][...] = 1.0

    def state_shapes(self):
        return {"batches": (), "last_rows": ()}

    def init_state(self, state):
        state["last_rows"][...] = -1.0


def counting_model():
    return jitprop.Sequential([jitprop.layer("dense", units=4), Counting(), jitprop.layer("dense", units=3)], input_dim=2)


def test_running_state_is_kept_apart_from_parameters():
    model = counting_model()
    assert model.n_params == 2 * 4 + 4 + 1 + 4 * 3 + 3 and model.state.tolist() == [0.0, -1.0]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.scale", "1.batches", "1.last_rows", "2.weight", "2.bias"]
    assert list(model.buffers()) == ["1.batches", "1.last_rows"] and "1.batches" not in model.parameters()
    X, y = spirals(20)
    for compiled in (True, False):
        model = counting_model()
        trainer = jitprop.Trainer(model, "cross_entropy", jitprop.optimizer("adamw", weight_decay=0.5), batch_size=16)
        trainer.compiled = compiled
        trainer.fit(X, y, epochs=2, validation_split=0.2)
        # untouched by the optimizer's weight decay, and validation (inference) does not count
        assert model.state.tolist() == [6.0, 16.0], compiled  # 48 training rows: 3 batches of 16, 2 epochs
        model.predict(X)
        assert model.state[0] == 6.0


def test_running_state_survives_checkpoints_and_state_dicts(tmp_path):
    X, y = spirals(20)
    model = counting_model()
    trainer = jitprop.Trainer(model, "cross_entropy", batch_size=16)
    trainer.fit(X, y, epochs=1)
    jitprop.checkpoint.save(tmp_path / "c.npz", trainer)
    saved = jitprop.checkpoint.load(tmp_path / "c.npz")
    assert saved.state_dict()["1.batches"] == 4.0
    fresh = counting_model()
    fresh.load_state_dict(model.state_dict())
    assert fresh.state.tolist() == model.state.tolist()
    restored = counting_model()
    restored.load_state_dict(saved.state_dict())  # as Checkpoint.build_model does, for a registered layer
    again = jitprop.Trainer(restored, "cross_entropy", batch_size=16)
    again.load_state(*saved.trainer_state(restored))
    assert again.model.state.tolist() == model.state.tolist()


def test_plain_initializers_draw_what_a_textbook_set_up_writes():
    # CS231n's W = 0.01 * np.random.randn(D, H), and a uniform range: with the model's own generator.
    for init, draw in (("normal:std=0.01", lambda rng: rng.normal(0.0, 0.01, (5, 4))),
                       ("uniform:low=-0.1,high=0.2", lambda rng: rng.uniform(-0.1, 0.2, (5, 4))),
                       ("normal", lambda rng: rng.normal(0.0, 0.05, (5, 4)))):  # fmt: skip
        model = jitprop.Sequential([jitprop.layer("dense", units=5, init=init)], input_dim=4, dtype="float64", seed=9)
        np.testing.assert_array_equal(model.state_dict()["0.weight"], draw(np.random.default_rng(9)))
        assert not model.state_dict()["0.bias"].any()
