"""The one preparation step: what ``jitprop train`` does to a table is what ``jitprop.prepare`` does to arrays."""

import numpy as np
import pytest
from click.testing import CliRunner

import jitprop
from jitprop.cli import cli

RNG = np.random.default_rng(3)
X = RNG.normal(size=(30, 3)) * [1.0, 10.0, 0.0] + [0.0, 5.0, 7.0]  # the last column is constant
SPECIES = np.array(["setosa", "versicolor", "virginica"])[np.arange(30) % 3]


def test_text_labels_are_numbered_in_sorted_order_and_new_data_is_numbered_the_same_way():
    data = jitprop.prepare(X, SPECIES, "cross_entropy")
    assert data.labels == ["setosa", "versicolor", "virginica"] and data.outputs == 3
    assert data.y.dtype == np.int64 and list(data.y[:4]) == [0, 1, 2, 0]
    test = data.apply(X[:2], np.array(["virginica", "setosa"]))
    assert list(test.y) == [2, 0] and test.labels == data.labels
    with pytest.raises(jitprop.DataError, match=r"label\(s\) 'rose' did not occur in training \(known: setosa, versicolor"):
        data.apply(X[:1], np.array(["rose"]))


def test_whole_number_labels_sort_as_numbers_not_text():
    data = jitprop.prepare(X[:4], np.array([10, 2, 1, 2]), "cross_entropy")
    assert data.labels == ["1", "2", "10"] and list(data.y) == [2, 1, 0, 1]
    # Text in an object array, as a pandas column holds it, and whole numbers stored as floats.
    assert list(jitprop.prepare(X[:3], np.array(["b", "a", "b"], dtype=object), "cross_entropy").y) == [1, 0, 1]
    assert jitprop.prepare(X[:3], [2.0, 0.0, 2.0], "cross_entropy").labels == ["0", "2"]


def test_standardising_uses_the_fitting_rows_only_and_leaves_constant_columns_at_zero():
    rows = np.arange(0, 30, 2)
    data = jitprop.prepare(X, SPECIES, "cross_entropy", normalize=True, fit_rows=rows)
    fitted = X[rows]
    mean = fitted.sum(axis=0) / len(rows)
    std = np.sqrt(((fitted - mean) ** 2).sum(axis=0) / len(rows))
    np.testing.assert_allclose(data.scaler.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(data.scaler.std[:2], std[:2], rtol=1e-12)
    assert data.scaler.std[2] == 1.0 and np.all(data.X[:, 2] == 0.0)
    np.testing.assert_allclose(data.X[:, :2], (X[:, :2] - mean[:2]) / std[:2], rtol=1e-12)
    np.testing.assert_array_equal(data.apply(X[5:7]).X, data.X[5:7])  # the training rows' statistics, not their own
    assert jitprop.prepare(X, SPECIES, "cross_entropy").scaler is None


def test_images_are_standardised_per_channel_over_every_pixel():
    images = RNG.normal(size=(6, 2, 3, 3)) * np.array([1.0, 5.0])[:, None, None] + np.array([0.0, 9.0])[:, None, None]
    images[:, 0, 0, 0] = 1.0  # a pixel that never changes keeps its channel's statistics
    data = jitprop.prepare(images, np.arange(6) % 2, "cross_entropy", normalize=True)
    for c in range(2):
        plane = images[:, c]
        np.testing.assert_allclose(data.scaler.mean[c * 9 : (c + 1) * 9], plane.mean(), rtol=1e-12)
        np.testing.assert_allclose(data.scaler.std[c * 9 : (c + 1) * 9], plane.std(), rtol=1e-12)
    np.testing.assert_allclose(data.X.reshape(6, 2, 9)[:, 1].std(), 1.0, rtol=1e-12)


def test_shaped_samples_are_flattened_in_c_order_and_keep_their_shape():
    images = RNG.normal(size=(4, 2, 3, 3))
    data = jitprop.prepare(images, np.arange(4) % 2, "cross_entropy")
    assert data.shape == (2, 3, 3) and data.X.shape == (4, 18)
    np.testing.assert_array_equal(data.X[1], images[1].ravel())
    with pytest.raises(jitprop.DataError, match=r"samples of shape \(2, 3, 3\) have 18"):
        jitprop.prepare(data.X[:, :17], np.arange(4) % 2, "cross_entropy", shape=(2, 3, 3))


def test_regression_targets_become_columns_and_their_count_sizes_the_output_layer():
    data = jitprop.prepare(X, X[:, 0] * 2, "mse")
    assert data.y.shape == (30, 1) and data.outputs == 1 and data.labels is None
    assert jitprop.prepare(X, X[:, :2], "mae").outputs == 2
    assert jitprop.prepare(X, None, "mse").y is None


@pytest.mark.parametrize(
    "y, loss, message",
    [
        (SPECIES, "mse", "loss 'mse' needs numeric targets, but y holds text like 'setosa'"),
        (X[:, 0], "cross_entropy", "takes class labels, but y holds fractional numbers like"),
        (np.eye(3)[np.arange(30) % 3], "cross_entropy", r"one-hot targets\? pass y.argmax"),
        (np.zeros(30), "cross_entropy", "y has a single class \\('0'\\)"),
        (np.zeros(29), "mse", "y has 29 rows but the inputs have 30"),
        (np.full(30, 2.0), "binary_cross_entropy", "needs targets between 0 and 1"),
    ],
)
def test_bad_targets_are_one_line_naming_the_source(y, loss, message):
    with pytest.raises(jitprop.DataError, match=message) as plain:
        jitprop.prepare(X, y, loss)
    with pytest.raises(jitprop.DataError, match=f"^iris.csv: .*{message.replace('y ', repr('species') + ' ', 1)}") as named:
        jitprop.prepare(X, y, loss, source="iris.csv", target_name="species")
    assert "\n" not in str(plain.value) + str(named.value)


def test_a_model_must_fit_the_prepared_data():
    data = jitprop.prepare(X, SPECIES, "cross_entropy")
    wide = jitprop.Sequential([jitprop.layer("dense", units=4)], input_dim=3)
    with pytest.raises(jitprop.DataError, match="^the model's last layer gives 4 outputs, but y has 3 classes$"):
        data.check_model(wide)
    with pytest.raises(jitprop.DataError, match="X has 3 features per row, but the model expects input_dim=5"):
        data.check_model(jitprop.Sequential([jitprop.layer("dense", units=3)], input_dim=5))
    # Unnamed class indices may leave outputs unused, as in torch: fit only needs them below the width.
    jitprop.Trainer(wide, "cross_entropy").fit(X, np.arange(30) % 3, epochs=1)


def test_python_prepared_like_the_command_line_trains_the_same_weights(tmp_path, monkeypatch):
    """``jitprop train`` on a CSV and ``prepare`` + ``fit`` on its arrays: the same model, bit for bit."""
    monkeypatch.chdir(tmp_path)
    rows = "\n".join(f"{a:.6f},{b:.6f},{c:.6f},{s}" for (a, b, c), s in zip(X, SPECIES))
    (tmp_path / "iris.csv").write_text("a,b,c,species\n" + rows + "\n")
    args = ["train", "--dataset", "iris.csv", "--hidden", "4", "--epochs", "2", "--batch-size", "8",
            "--validation-split", "0.2", "--seed", "5", "--checkpoint", "cli.npz"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    saved = jitprop.checkpoint.load("cli.npz")

    table = np.genfromtxt(tmp_path / "iris.csv", delimiter=",", skip_header=1, dtype=str)
    features, species = table[:, :3].astype(float), table[:, 3]
    from jitprop.training.trainer import split_indices

    train_rows, val_rows = split_indices(30, 0.2, 5, owner="run")
    data = jitprop.prepare(features, species, "cross_entropy", normalize=True, fit_rows=train_rows)
    assert data.labels == saved.info["labels"]
    np.testing.assert_array_equal(data.scaler.mean, saved.info_array("norm_mean"))
    model = jitprop.Sequential(
        [jitprop.layer("dense", units=4), "relu", jitprop.layer("dense", units=data.outputs)], input_shape=data.shape, seed=5
    )
    jitprop.fit(model, data.X[train_rows], data.y[train_rows], loss="cross_entropy", batch_size=8, epochs=2, seed=5,
                validation_data=(data.X[val_rows], data.y[val_rows]))  # fmt: skip
    for key, value in saved.build_model().state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[key], value, err_msg=key)


def test_an_empty_text_target_is_one_line_not_an_index_error():
    """Found by the hostile-file fuzzer: an .npz whose array is text of shape (1, 0)."""
    model = jitprop.Sequential([jitprop.layer("dense", units=1)], input_dim=3)
    with pytest.raises(jitprop.DataError, match="holds no values, of type <U3"):
        jitprop.data.prepare.as_targets(model, jitprop.loss("mse"), np.zeros((1, 0), "<U3"), 1)


def test_a_regression_target_standardised_by_the_fitting_rows_and_mapped_back():
    y = np.c_[X[:, 0] * 100 + 50, X[:, 1]]
    rows = np.arange(0, 30, 2)
    data = jitprop.prepare(X, y, "mse", normalize_target=True, fit_rows=rows)
    np.testing.assert_allclose(data.target_scaler.mean, y[rows].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(data.y, (y - y[rows].mean(axis=0)) / y[rows].std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(data.in_target_units(data.y), y, rtol=1e-12)
    np.testing.assert_array_equal(data.apply(X[:3], y[:3]).y, data.y[:3])  # the training rows' statistics again
    with pytest.raises(jitprop.DataError, match="only a regression target can be standardised, but loss 'cross_entropy'"):
        jitprop.prepare(X, SPECIES, "cross_entropy", normalize_target=True)
