"""jitprop-batchnorm: the ``batch_norm`` and ``batch_norm2d`` layers, a plugin with parameters
and running state.

Install it (``jitprop install ./plugins/jitprop-batchnorm`` or pip) and use
them by name anywhere a layer goes: ``jitprop.layer("batch_norm")`` or a run
file's ``layers`` list; ``batch_norm2d`` after a conv2d.
"""

import numpy as np

import jitprop
from jitprop.components import real
from jitprop.default_plugins.geometry import image_shape

from .kernels import batch_norm2d_backward, batch_norm2d_forward, batch_norm_backward, batch_norm_forward

__version__ = "0.3.0"


class BatchNorm(jitprop.Layer):
    """Normalise each feature over the batch, then scale and shift (torch.nn.BatchNorm1d).

    Training uses the batch's statistics and updates running ones; evaluation
    and prediction use the running ones, so a trained model answers one row
    at a time the same way it answers a batch.
    """

    name = "batch_norm"
    param_names = ("weight", "bias")
    state_names = ("running_mean", "running_var", "num_batches_tracked")
    forward_kernel = staticmethod(batch_norm_forward)
    backward_kernel = staticmethod(batch_norm_backward)
    cuda_forward = "jitprop_batchnorm.cuda:batch_norm_forward"
    cuda_backward = "jitprop_batchnorm.cuda:batch_norm_backward"

    def __init__(self, momentum=0.1, eps=1e-5):
        self.momentum = real("momentum", momentum, self.name, low=0.0, high=1.0)
        self.eps = real("eps", eps, self.name, low=0.0, low_open=True)

    def hyper(self):
        return np.array([self.momentum, self.eps])

    @property
    def features(self):
        """The number normalised apart: features of a row, channels of an image."""
        return self.in_dim

    def param_shapes(self):
        return {"weight": (self.features,), "bias": (self.features,)}

    def init_params(self, params, rng, relu_next=False):
        params["weight"][...] = 1.0
        params["bias"][...] = 0.0

    def state_shapes(self):
        return {"running_mean": (self.features,), "running_var": (self.features,), "num_batches_tracked": ()}

    def init_state(self, state):
        state["running_mean"][...] = 0.0
        state["running_var"][...] = 1.0
        state["num_batches_tracked"][...] = 0.0

    def cache_dim(self):
        return self.in_dim  # x_hat, for the backward pass

    def scratch_size(self):
        return 2 * self.features  # the batch's per-feature mean and 1/std (the backward: mean and scale)


class BatchNorm2d(BatchNorm):
    """Normalise each channel of (channels, height, width) samples over the batch and its pixels,
    then scale and shift (torch.nn.BatchNorm2d); running statistics as batch_norm's."""

    name = "batch_norm2d"
    example_shape = (3, 2, 3)
    forward_kernel = staticmethod(batch_norm2d_forward)
    backward_kernel = staticmethod(batch_norm2d_backward)
    cuda_forward = "jitprop_batchnorm.cuda:batch_norm2d_forward"
    cuda_backward = "jitprop_batchnorm.cuda:batch_norm2d_backward"

    def output_shape(self, in_shape):
        return image_shape(in_shape)  # the image layers' own check and message

    @property
    def features(self):
        return self.in_shape[0]


@jitprop.hookimpl
def register_layers(register):
    register(BatchNorm)
    register(BatchNorm2d)
