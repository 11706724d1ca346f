"""The data-set contract: a registered data set loads a ``Table`` of features and targets.

``load() -> Table``: ``X`` a 2-D array of numbers (rows, features), ``y``
the targets (numbers, or strings for class labels), and the names needed to
read predictions back.
"""

from dataclasses import dataclass, field

import numpy as np

from ..components import Component


@dataclass
class Table:
    """Rows of features and (optionally) their targets, as read from a data set or file."""

    X: np.ndarray  # (rows, features): each row one sample, flat in C order whatever its shape
    y: np.ndarray = None  # numbers, or strings for class labels; None when a file has no targets
    source: str = ""
    feature_names: list = field(default_factory=list)
    target_name: str = "y"
    shape: tuple = None  # a sample's shape, (1, 8, 8) say; None: flat, (features,)

    def __post_init__(self):
        if not self.feature_names:
            self.feature_names = [f"x{i}" for i in range(self.X.shape[1])]

    @property
    def numeric_target(self):
        return self.y is not None and self.y.dtype.kind in "iufb"

    def default_loss(self):
        """cross_entropy for labels (text or whole numbers), mse for real-valued targets."""
        if self.y is None or not self.numeric_target:
            return "cross_entropy"
        y = self.y
        return "cross_entropy" if y.ndim == 1 and np.all(np.mod(y, 1) == 0) else "mse"


class Dataset(Component):
    """Base class of registered data sets: set ``name``, implement ``load() -> Table``."""

    def load(self):
        raise NotImplementedError
