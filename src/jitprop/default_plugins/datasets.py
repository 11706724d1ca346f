"""Built-in data sets: digits (real handwriting, flat or as images), spirals (classification), sine (regression).

Options are constructor arguments, given on the command line as ``--dataset spirals:n=50,noise=0.3``;
each is checked here, in one line.
"""

from importlib import resources

import numpy as np

import jitprop
from jitprop.components import positive_int, real
from jitprop.contracts.datasets import Table


class Digits(jitprop.Dataset):
    """Handwritten digits, 1797 8x8 images (pixels 0..16), 10 classes: UCI optdigits test set (CC BY 4.0)."""

    name = "digits"

    def load(self):
        with resources.files("jitprop").joinpath("builtin_data/digits.npz").open("rb") as f:
            with np.load(f, allow_pickle=False) as data:
                X, y = data["X"].astype(np.float64), data["y"].astype(np.int64)
        return Table(X, y, feature_names=[f"pixel_{r}_{c}" for r in range(8) for c in range(8)], target_name="digit")


class DigitImages(Digits):
    """The same 1797 handwritten digits as 1x8x8 images (channels, height, width), for convolutional models."""

    name = "digit_images"

    def load(self):
        table = super().load()
        table.shape = (1, 8, 8)
        return table


class Spirals(jitprop.Dataset):
    """Noisy spiral arms in 2-D (CS231n), a nonlinear task; options n=100 points an arm, classes=3, noise=0.2, seed=0."""

    name = "spirals"

    def __init__(self, n=100, classes=3, noise=0.2, seed=0):
        self.n = positive_int("n", n, "spirals")
        self.classes = positive_int("classes", classes, "spirals", minimum=2)
        self.noise = real("noise", noise, "spirals", low=0)
        self.seed = positive_int("seed", seed, "spirals", minimum=0)

    def load(self):
        rng = np.random.default_rng(self.seed)
        X = np.zeros((self.n * self.classes, 2))
        y = np.zeros(self.n * self.classes, dtype=np.int64)
        for c in range(self.classes):
            rows = slice(self.n * c, self.n * (c + 1))
            r = np.linspace(0.0, 1, self.n)
            t = np.linspace(c * 4, (c + 1) * 4, self.n) + rng.normal(size=self.n) * self.noise
            X[rows] = np.c_[r * np.sin(t), r * np.cos(t)]
            y[rows] = c
        return Table(X, y, feature_names=["x", "y"], target_name="arm")


class Sine(jitprop.Dataset):
    """Noisy sine wave, y = sin(x) + N(0, noise^2), x in [-3, 3]: regression; options n=1000 points, noise=0.1, seed=0."""

    name = "sine"

    def __init__(self, n=1000, noise=0.1, seed=0):
        self.n = positive_int("n", n, "sine")
        self.noise = real("noise", noise, "sine", low=0)
        self.seed = positive_int("seed", seed, "sine", minimum=0)

    def load(self):
        rng = np.random.default_rng(self.seed)
        x = rng.uniform(-3, 3, size=(self.n, 1))
        y = np.sin(x[:, 0]) + rng.normal(0, self.noise, size=self.n)
        return Table(x, y, feature_names=["x"], target_name="sin_x")


@jitprop.hookimpl
def register_datasets(register):
    register(Digits)
    register(DigitImages)
    register(Spirals)
    register(Sine)
