"""What a CSV file's columns and targets become: the task rule, text columns one-hot, missing cells,
and data set options. No training here: the command line's use of them is in test_cli.py."""

import numpy as np
import pytest

import jitprop
from jitprop.data.prepare import Columns, Standardiser, check_task, target_task, unseen_warning
from jitprop.data.tables import is_file_spec, load_table, make_dataset
from jitprop.default_plugins.datasets import Spirals


@pytest.mark.parametrize(
    "y, task, why",
    [
        # scikit-learn's diabetes: 214 distinct whole numbers in 442 rows, a quantity
        (np.arange(442) % 214 + 25, "regression", "'y' holds 214 distinct whole numbers in 442 rows, more than 20"),
        (np.arange(150) % 3, "classification", "'y' holds 3 distinct whole numbers in 150 rows"),  # iris
        (np.array([0, 1, 1, 0]), "classification", "'y' holds 2 distinct whole numbers in 4 rows"),  # yes/no, few rows
        (np.arange(30) % 8, "regression", "'y' holds 8 distinct whole numbers in 30 rows, fewer than 5 rows a value"),
        (np.arange(100) % 20 * 1.0, "classification", "'y' holds 20 distinct whole numbers in 100 rows"),  # 20 x 5: the edge
        (np.arange(100) % 21, "regression", "'y' holds 21 distinct whole numbers in 100 rows, more than 20"),
        (np.array(["b", "a", "b"]), "classification", "'y' holds text labels (2 distinct)"),
        (np.array([0.5, 1.0, 2.0]), "regression", "'y' holds fractional numbers"),
        (np.zeros((5, 2)), "regression", "'y' has 2 columns of numbers"),
    ],
)
def test_the_task_rule(y, task, why):
    assert target_task(y) == (task, why)


def test_a_task_asked_for_must_fit_the_targets():
    check_task(np.arange(40), "classification")  # whole numbers may be classes
    check_task(np.arange(40), "regression")
    with pytest.raises(jitprop.DataError, match=r"^--task classification needs class labels \(text or whole numbers\), but"
                                                r" 'y' holds fractional numbers like 0.5$"):  # fmt: skip
        check_task(np.array([1.0, 0.5]), "classification")
    with pytest.raises(jitprop.DataError, match="^--task regression needs numbers, but 'kind' holds text like 'cat'$"):
        check_task(np.array(["cat", "dog"]), "regression", "kind")


def write(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_cells_are_numbers_missing_or_text(tmp_path):
    cells = ["", "NA", "n/a", "NaN", "null", "?", " ", "nan"]  # every marker of a missing cell, any case
    rows = "".join(f"{i},{c},{'red' if i % 2 else 'None'},{i}\n" for i, c in enumerate(cells))
    table = load_table(write(tmp_path, "a,b,color,y\n" + rows))
    assert np.isnan(table.X[:, 1]).all() and table.X[:, 0].tolist() == list(range(8))
    assert list(table.text) == [2] and np.isnan(table.X[:, 2]).all()  # "None" is a category, not a missing cell
    assert table.text[2].tolist()[:2] == ["None", "red"] and table.lines.tolist() == list(range(2, 10))
    again = load_table(write(tmp_path, "a,b\n1,2\n3,4\n"), features=["a"], as_text=["a"], need_target=False)
    assert again.text[0].tolist() == ["1", "3"]  # a model's category column, though this file holds numbers there


def table_with(tmp_path):
    """12 rows: a number column with two gaps, a text column with a gap, and its target."""
    ages = ["30", "", "50", "20", "NA", "40", "60", "35", "45", "55", "25", "65"]
    colors = ["red", "blue", "red", "green", "blue", "?", "red", "green", "blue", "red", "green", "blue"]
    rows = "".join(f"{a},{c},{i}\n" for i, (a, c) in enumerate(zip(ages, colors)))
    return load_table(write(tmp_path, "age,color,y\n" + rows))


def test_text_columns_are_one_hot_in_sorted_order_and_missing_cells_take_the_training_rows_statistic(tmp_path):
    table = table_with(tmp_path)
    rows = np.arange(8)  # the training rows: a median of 30, 50, 20, 40, 60, 35 (two missing)
    columns = Columns.fit(table, rows, "median")
    assert columns.feature_names == ["age", "color=blue", "color=green", "color=red"]
    assert columns.specs == [{"name": "age", "kind": "number", "fill": 37.5},
                             {"name": "color", "kind": "category", "categories": ["blue", "green", "red"]}]  # fmt: skip
    X, report = columns.encode(table)
    assert X[:3].tolist() == [[30, 0, 0, 1], [37.5, 1, 0, 0], [50, 0, 0, 1]]
    assert X[5, 1:].tolist() == [0, 0, 0]  # a missing text cell, with --fill: all zeros
    assert report == {"filled": {"age": 2}, "blank": {"color": 1}, "unseen": {}}
    assert Columns.fit(table, rows, "mean").specs[0]["fill"] == pytest.approx(235 / 6)
    assert Columns.fit(table, rows, "zero").specs[0]["fill"] == 0.0
    assert columns.one_hot.tolist() == [1, 2, 3]
    scaler = Standardiser.fit(X[rows], keep=columns.one_hot)  # one-hot inputs stay 0/1: unseen stays nothing
    assert scaler.mean[1:].tolist() == [0, 0, 0] and scaler.std[1:].tolist() == [1, 1, 1] and scaler.std[0] > 1


def test_an_unseen_category_is_all_zeros_and_one_warning(tmp_path):
    columns = Columns.fit(table_with(tmp_path), np.arange(12), "median")
    saved = Columns(columns.info(), "median")  # as a checkpoint gives them back
    new = load_table(write(tmp_path, "color,age\npurple,1\nred,\nteal,2\npurple,3\n", "new.csv"), features=saved.names,
                     as_text=saved.text_names, need_target=False)  # fmt: skip
    X, report = saved.encode(new)
    assert X.tolist() == [[1, 0, 0, 0], [42.5, 0, 0, 1], [2, 0, 0, 0], [3, 0, 0, 0]]
    assert unseen_warning(report, "new.csv") == (
        "warning: new.csv: cells of categories unseen in training, encoded as all zeros: color 3 ('purple', 'teal', ...)"
    )
    assert unseen_warning(saved.encode(new)[1] | {"unseen": {}}, "new.csv") is None


def test_missing_cells_are_refused_naming_the_first_and_a_model_trained_on_numbers_refuses_text(tmp_path):
    table = table_with(tmp_path)
    with pytest.raises(jitprop.DataError, match=r"^column 'age' line 3 \(the header is line 1\) is missing \(empty, NA,"
                                                r" N/A, NaN, null or \?\); 3 missing cells in 2 columns: give --fill"):  # fmt: skip
        Columns.fit(table, np.arange(8)).encode(table)
    numbers = Columns.numbers(["age", "color"])
    with pytest.raises(jitprop.DataError, match="^column 'color' line 2 holds 'red', not a number; the model was trained"):
        numbers.encode(load_table(write(tmp_path, "age,color\n1,red\n", "n.csv"), need_target=False))


def test_a_column_of_identifiers_is_refused_not_blown_up(tmp_path):
    rows = "".join(f"a{i},{i},{i % 2}\n" for i in range(30))
    table = load_table(write(tmp_path, "id,x,y\n" + rows))
    with pytest.raises(jitprop.DataError, match=r"^column 'id' is text \(line 2 holds 'a0'\) with 24 distinct values in 24"
                                                r" training rows, too many to one-hot encode .*--drop id"):  # fmt: skip
        Columns.fit(table, np.arange(24))
    assert load_table(write(tmp_path, "id,x,y\n" + rows), drop=["id"]).feature_names == ["x"]


def test_data_sets_take_their_constructors_options():
    dataset, spec = make_dataset("spirals:n=20,classes=2,noise=0.1,seed=1")
    assert spec == "spirals:n=20,classes=2,noise=0.1,seed=1" and make_dataset("Spirals:seed=1,n=20")[1] == "spirals:n=20,seed=1"
    table, same = dataset.load(), Spirals(n=20, classes=2, noise=0.1, seed=1).load()
    assert table.X.shape == (40, 2) and np.array_equal(table.X, same.X)
    assert load_table("spirals:n=20,classes=2,noise=0.1,seed=1").source == spec and make_dataset("sine")[1] == "sine"
    assert not is_file_spec("spirals:noise=0.2") and is_file_spec("data.csv") and is_file_spec("runs/spirals")
    for text, message in [("spirals:points=5", "dataset 'spirals' takes n, classes, noise, seed, not 'points'"),
                          ("spirals:classes=1", "spirals: classes must be an integer >= 2, got 1"),
                          ("sine:noise=-1", r"sine: noise must be a number in \[0, inf\), got -1"),
                          ("digits:n=3", "dataset 'digits' takes no options, not 'n'")]:  # fmt: skip
        with pytest.raises(jitprop.ConfigError, match=f"^{message}$"):
            make_dataset(text)


def test_a_cell_of_nul_characters_makes_a_text_column_and_a_one_line_refusal(tmp_path):
    """Found by the fuzzer: NumPy's text arrays drop trailing NULs, so the cell that made the column text reads as ""."""
    path = tmp_path / "nul.csv"
    path.write_bytes(b"a,y\n\x00,0\n" + b"".join(b"%d,%d\n" % (i, i % 2) for i in range(1, 11)))
    table = load_table(str(path))
    with pytest.raises(jitprop.DataError, match=r"^column 'a' is text \(line 3 holds '1'\) with 10 distinct values in 11"):
        Columns.fit(table, np.arange(11))
