"""A 5,000-image sample of MNIST for jitprop: 4,000 training and 1,000 held-out 28x28 digits.

Registers two data sets: ``mnist_sample`` (the 4,000 training images) and
``mnist_sample_test`` (the 1,000 held out, 100 per digit), as 1x28x28
images of pixels 0..255. The images ship inside this package: nothing is
downloaded at run time.
"""

from importlib import resources

import numpy as np

import jitprop
from jitprop.contracts.datasets import Table

FEATURES = [f"pixel_{r}_{c}" for r in range(28) for c in range(28)]


def _load(part):
    with resources.files(__name__).joinpath("mnist_sample.npz").open("rb") as f:
        with np.load(f, allow_pickle=False) as data:
            X, y = data[f"X_{part}"], data[f"y_{part}"]
    return Table(X.reshape(len(X), -1).astype(np.float64), y.astype(np.int64), feature_names=FEATURES,
                 target_name="digit", shape=(1, 28, 28))  # fmt: skip


class MnistSample(jitprop.Dataset):
    """MNIST handwritten digits, 4,000 1x28x28 training images (pixels 0..255), 400 per digit (CC BY-SA 3.0)."""

    name = "mnist_sample"

    def load(self):
        return _load("train")


class MnistSampleTest(jitprop.Dataset):
    """The 1,000 MNIST images held out from mnist_sample, 100 per digit, for a test score (CC BY-SA 3.0)."""

    name = "mnist_sample_test"

    def load(self):
        return _load("test")


@jitprop.hookimpl
def register_datasets(register):
    register(MnistSample)
    register(MnistSampleTest)
