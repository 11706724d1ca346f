"""jitprop: train neural networks with backpropagation you can see and own.

A model predicts on a batch, a loss measures how wrong it is,
backpropagation gives every weight its share of the blame, last layer
first, and an optimizer moves each weight downhill; batch after batch,
epoch after epoch. Layers, losses, optimizers and callbacks are plugins,
built-in ones included, and their kernels are Numba-compiled.
"""

import sys

from .version import __version__  # noqa: F401
from .runtime import caches as _caches, numba_blas as _numba_blas

_caches.configure()  # before any kernel is defined: cache=True needs a place to write
_numba_blas.preload()  # before Numba's first compile or cache load imports all of scipy.linalg

from . import gradcheck, plugins  # noqa: F401  (jitprop.gradcheck.check_loss, jitprop.plugins.register, ...)
from .api import callback, layer, loss, optimizer, schedule, transform
from .contracts.callbacks import Callback
from .contracts.datasets import Dataset
from .contracts.layers import Layer
from .contracts.losses import Loss
from .contracts.optimizers import Optimizer
from .contracts.schedules import Schedule
from .contracts.transforms import GradientTransform
from .data import checkpoint
from .data.prepare import Prepared, Standardiser, prepare
from .errors import ConfigError, DataError, JitpropError, PluginError
from .model import Sequential
from .plugins import registry
from .plugins.hookspecs import hookimpl
from .training import History, Trainer, evaluate, fit, value_and_grad
from .views.lr_find import lr_find
from .views.sweep import Sweep, sweep

# Modules plugins import by their 0.1 paths, before the core moved into subpackages:
# ``import jitprop.checkpoint`` and ``from jitprop.registry import lookup`` still work.
sys.modules[__name__ + ".checkpoint"] = checkpoint
sys.modules[__name__ + ".registry"] = registry

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
    "Prepared",
    "Schedule",
    "Sequential",
    "Sweep",
    "Standardiser",
    "Trainer",
    "callback",
    "evaluate",
    "fit",
    "hookimpl",
    "layer",
    "lr_find",
    "loss",
    "optimizer",
    "prepare",
    "schedule",
    "sweep",
    "transform",
    "value_and_grad",
]
