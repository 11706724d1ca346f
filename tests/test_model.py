"""Sequential: flat parameters, torch-compatible state_dict, predict."""

import numpy as np
import pytest

import jitprop


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
