"""jitprop: train neural networks with backpropagation you can see and own.

A model predicts on a batch, a loss measures how wrong it is,
backpropagation gives every weight its share of the blame, last layer
first, and an optimizer moves each weight downhill; batch after batch,
epoch after epoch. Layers, losses, optimizers and callbacks are plugins,
built-in ones included, and their kernels are Numba-compiled.
"""

from .version import __version__

from . import numba_blas as _numba_blas, numba_cache as _numba_cache

_numba_cache.configure()  # before any kernel is defined: cache=True needs a place to write
_numba_blas.preload()  # before Numba's first compile or cache load imports all of scipy.linalg

from .callbacks import Callback
from .datasets import Dataset
from .errors import ConfigError, DataError, JitpropError, PluginError
from .hookspecs import hookimpl
from .layers import Layer
from .losses import Loss
from .optimizers import Optimizer
from .schedules import Schedule
from .transforms import GradientTransform
from .api import callback, layer, loss, optimizer, schedule, transform
from .model import Sequential
from .training import History, Trainer, evaluate, fit, value_and_grad
from . import checkpoint, gradcheck, plugins  # noqa: F401  (jitprop.checkpoint.save, jitprop.gradcheck.check_loss, ...)

__all__ = [
    "Callback",
    "Dataset",
    "ConfigError",
    "DataError",
    "GradientTransform",
    "History",
    "JitpropError",
    "Layer",
    "Loss",
    "Optimizer",
    "PluginError",
    "Schedule",
    "Sequential",
    "Trainer",
    "callback",
    "evaluate",
    "fit",
    "hookimpl",
    "layer",
    "loss",
    "optimizer",
    "schedule",
    "transform",
    "value_and_grad",
]
