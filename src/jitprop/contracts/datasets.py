"""The data-set contract: a registered data set loads a ``Table`` of features and targets.

``load() -> Table``: ``X`` a 2-D array of numbers (rows, features), ``y``
the targets (numbers, or strings for class labels), and the names needed to
read predictions back. Options a data set takes are its constructor's
arguments: ``--dataset spirals:n=50,noise=0.3`` builds ``Spirals(n=50, noise=0.3)``,
so check them there (``jitprop.components.positive_int`` and ``real``).
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
    # A CSV file's columns as read, before ``data.prepare.Columns`` encodes them: X holds NaN in a
    # missing cell and throughout a text column, whose cells (stripped, "" when missing) are here,
    # by column index. None for tables of numbers only (data sets, .npz files).
    text: dict = None
    lines: np.ndarray = None  # each row's line in its file (the header is line 1), for messages

    def __post_init__(self):
        if not self.feature_names:
            self.feature_names = [f"x{i}" for i in range(self.X.shape[1])]

    @property
    def numeric_target(self):
        return self.y is not None and self.y.dtype.kind in "iufb"

    def default_loss(self):
        """cross_entropy for class labels, mse for quantities, by the rule of ``data.prepare.target_task``."""
        from ..data.prepare import DEFAULT_LOSS, target_task

        return "cross_entropy" if self.y is None else DEFAULT_LOSS[target_task(self.y, self.target_name)[0]]


class Dataset(Component):
    """Base class of registered data sets: set ``name``, implement ``load() -> Table``."""

    def load(self):
        raise NotImplementedError
