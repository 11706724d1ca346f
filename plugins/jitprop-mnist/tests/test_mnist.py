"""The MNIST sample: the images, the split, and jitprop finding the data sets through the entry point."""

import numpy as np
from click.testing import CliRunner

import jitprop
from jitprop.cli import cli
from jitprop_mnist import MnistSample, MnistSampleTest


def test_the_sample_holds_balanced_28x28_digits_with_a_disjoint_held_out_set():
    train, test = MnistSample().load(), MnistSampleTest().load()
    assert train.X.shape == (4000, 784) and test.X.shape == (1000, 784) and train.shape == test.shape == (1, 28, 28)
    assert np.array_equal(np.bincount(train.y), [400] * 10) and np.array_equal(np.bincount(test.y), [100] * 10)
    assert train.X.min() == 0 and train.X.max() == 255
    assert not np.all(train.y[:400] == train.y[0])  # stored shuffled, not sorted by digit
    seen = {row.tobytes() for row in train.X.astype(np.uint8)}
    assert not any(row.tobytes() in seen for row in test.X.astype(np.uint8))


def test_jitprop_lists_and_loads_it_through_the_entry_point():
    jitprop.plugins.load_plugins()
    assert jitprop.registry.lookup("dataset", "mnist_sample").plugin == "mnist"
    out = CliRunner().invoke(cli, ["list", "datasets"]).output
    assert "mnist_sample" in out and "mnist_sample_test" in out and "CC BY-SA 3.0" in out
    summary = CliRunner().invoke(cli, ["summary", "--dataset", "mnist_sample", "--model", "lenet"])
    assert summary.exit_code == 0, summary.output
    assert "mnist_sample: 4000 rows of 1x28x28" in summary.output and "61,706 parameters" in summary.output
