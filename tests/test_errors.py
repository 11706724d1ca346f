"""User mistakes raise one clear jitprop error before any kernel runs."""

import numpy as np
import pytest

import jitprop


@pytest.fixture
def model():
    return jitprop.Sequential([jitprop.layer("dense", units=8), "relu", jitprop.layer("dense", units=3)], input_dim=4)


def one_line(excinfo):
    text = str(excinfo.value)
    assert "\n" not in text and text
    assert isinstance(excinfo.value, jitprop.JitpropError)
    return text


X = np.random.default_rng(0).normal(size=(10, 4))
Y = np.arange(10) % 3
X_NAN = X.copy()
X_NAN[3, 1] = np.nan
X_INF = X.copy()
X_INF[7, 0] = -np.inf


@pytest.mark.parametrize(
    "X_, y_, pattern",
    [
        (X[:, :3], Y, "3 features per row, but the model expects input_dim=4"),
        (X[0], Y, "must be 2-D"),
        (X[:, :, None], Y, "must be 2-D"),
        (X, Y[:9], "9 rows but the inputs have 10"),
        (X, Y + 1, "labels from 1 to 3, but the model has 3 outputs, so labels must lie in 0..2"),
        (X, Y - 1, "labels from -1 to 1"),
        (X, Y + 0.5, "fractional"),
        (X_NAN, Y, "X holds NaN or infinite values \\(first in row 3\\)"),
        (X_INF, Y, "\\(first in row 7\\)"),
        (X, np.where(Y == 2, np.nan, Y), "y holds NaN"),
        (X.astype(str), Y, "must hold numbers"),
        (X[:0], Y[:0], "no rows"),
        (X, np.eye(3)[Y], "one-hot targets\\? pass y.argmax"),
    ],
)
def test_bad_data(model, X_, y_, pattern):
    before = model.params.copy()
    with pytest.raises(jitprop.DataError, match=pattern) as e:
        jitprop.fit(model, X_, y_, loss="cross_entropy", epochs=1)
    one_line(e)
    assert np.array_equal(model.params, before)


def test_bad_regression_and_binary_targets(model):
    with pytest.raises(jitprop.DataError, match=r"last layer gives 3 outputs, but y has 2 target value\(s\) per row"):
        jitprop.fit(model, X, np.zeros((10, 2)), loss="mse")
    with pytest.raises(jitprop.DataError, match="between 0 and 1"):
        jitprop.fit(model, X, np.full((10, 3), 2.0), loss="binary_cross_entropy")
    single = jitprop.Sequential([jitprop.layer("dense", units=1)], input_dim=4)
    with pytest.raises(jitprop.DataError, match="needs at least 2 outputs"):
        jitprop.fit(single, X, Y, loss="cross_entropy")


@pytest.mark.parametrize(
    "factory, name, hint",
    [
        (jitprop.layer, "dense_", "did you mean 'dense'"),
        (jitprop.layer, "reluu", "did you mean 'relu'"),
        (jitprop.loss, "cross_entropyy", "did you mean 'cross_entropy'"),
        (jitprop.optimizer, "adma", "did you mean 'adam'"),
        (jitprop.callback, "early_stoping", "did you mean 'early_stopping'"),
        (jitprop.optimizer, "zzz", "known: adagrad, adam, adamw, rmsprop, sgd"),
    ],
)
def test_unknown_names_suggest_close_matches(factory, name, hint):
    with pytest.raises(jitprop.ConfigError, match=f"unknown .* '{name}'.*{hint}") as e:
        factory(name)
    one_line(e)


def test_unknown_name_inside_fit_and_sequential(model):
    with pytest.raises(jitprop.ConfigError, match="did you mean 'sgd'"):
        jitprop.fit(model, X, Y, loss="cross_entropy", optimizer="sdg")
    with pytest.raises(jitprop.ConfigError, match="did you mean 'tanh'"):
        jitprop.Sequential(["tahn"], input_dim=3)


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: jitprop.optimizer("adam", lr=-0.1), "adam: lr must be a number in \\[0.0, inf\\), got -0.1"),
        (lambda: jitprop.optimizer("sgd", momentum=-1), "momentum"),
        (lambda: jitprop.optimizer("sgd", lr=0.1, nesterov=True), "nesterov momentum needs momentum > 0"),
        (lambda: jitprop.optimizer("adam", betas=(1.0, 0.9)), "betas\\[0\\]"),
        (lambda: jitprop.optimizer("adam", lr=float("nan")), "lr must be a number"),
        (lambda: jitprop.optimizer("adam", learning_rate=0.1), "unexpected keyword argument 'learning_rate'"),
        (lambda: jitprop.layer("dense", units=0), "units must be an integer >= 1"),
        (lambda: jitprop.layer("dense"), "missing 1 required positional argument: 'units'"),
        (lambda: jitprop.layer("dense", units=3, init="lecun"), "dense: init 'lecun' is not an initializer; choose one of auto"),
        (lambda: jitprop.layer("dense", units=3, init="normal:sd=1"), "dense: init normal takes std, mean, not 'sd'"),
        (lambda: jitprop.layer("conv2d", out_channels=2, kernel_size=3, init="uniform:low=1,high=0"), "low must be below high"),
        (lambda: jitprop.layer("dense", units=3, init="he_normal:std=1"), "he_normal takes no options"),
        (lambda: jitprop.layer("dropout", rate=1.0), "rate must be a number in \\[0.0, 1.0\\)"),
        (lambda: jitprop.callback("early_stopping", patience=-1), "patience"),
        (lambda: jitprop.schedule("cosine", T_max=0), "T_max"),
        (lambda: jitprop.Sequential([], input_dim=3), "at least one layer"),
        (lambda: jitprop.Sequential(["relu"], input_dim=0), "input_dim"),
        (lambda: jitprop.Sequential(["relu"], input_dim=2, dtype="float16"), "dtype must be"),
    ],
)
def test_bad_hyperparameters(make, pattern):
    with pytest.raises(jitprop.ConfigError, match=pattern) as e:
        make()
    one_line(e)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(epochs=-1), "epochs must be an integer >= 0"),
        (dict(validation_split=1.0), "validation_split"),
        (dict(validation_split=0.2, validation_data=(X, Y)), "not both"),
        (dict(validation_data=X), "pair"),
        (dict(callbacks=[object()]), None),
        (dict(lr_schedule="cosin"), "did you mean 'cosine'"),
    ],
)
def test_bad_fit_options(model, kwargs, pattern):
    before = model.params.copy()
    if pattern is None:  # an object with no hooks is a harmless callback
        jitprop.fit(model, X, Y, loss="cross_entropy", epochs=0, **kwargs)
        return
    with pytest.raises(jitprop.JitpropError, match=pattern) as e:
        jitprop.fit(model, X, Y, loss="cross_entropy", **{"epochs": 1, **kwargs})
    one_line(e)
    assert np.array_equal(model.params, before)


def test_callback_method_without_hookimpl_is_an_error(model):
    class Forgot:
        def on_epoch_end(self, trainer, epoch, logs):
            pass

    with pytest.raises(jitprop.ConfigError, match="Forgot.on_epoch_end is not marked @jitprop.hookimpl"):
        jitprop.fit(model, X, Y, loss="cross_entropy", callbacks=[Forgot()])


def test_callback_with_a_misspelled_argument_is_an_error(model):
    class Typo:
        @jitprop.hookimpl
        def on_epoch_end(self, trainer, epok):
            pass

    with pytest.raises(jitprop.ConfigError, match="Typo"):
        jitprop.fit(model, X, Y, loss="cross_entropy", callbacks=[Typo()])


def test_early_stopping_on_a_metric_that_is_not_logged(model):
    with pytest.raises(jitprop.ConfigError, match="monitors 'val_loss'.*give validation data"):
        jitprop.fit(model, X, Y, loss="cross_entropy", callbacks=[jitprop.callback("early_stopping")])


def test_the_same_callback_twice_is_an_error(model):
    stopper = jitprop.callback("early_stopping", monitor="loss")
    with pytest.raises(jitprop.ConfigError, match="passed twice") as e:
        jitprop.fit(model, X, Y, loss="cross_entropy", callbacks=[stopper, stopper])
    one_line(e)
