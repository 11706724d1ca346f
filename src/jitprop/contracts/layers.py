"""The layer contract: what a registered layer class provides.

A layer transforms a batch ``x`` of shape (n, in_dim) into ``out`` of shape
(n, out_dim). Its work happens in two kernels, plain functions of arrays and
scalars (``@njit(cache=True)`` for the compiled CPU path):

``forward_kernel(p, h, x, out, cache, training, seed)``
    write the layer's output into ``out``.
``backward_kernel(p, h, x, out, cache, grad_out, grad_in, grad_p)``
    backpropagation: given dL/d(out) in ``grad_out``, write dL/d(x) into
    ``grad_in`` (skip it when ``grad_in`` has zero rows: the first layer's
    input needs no gradient) and dL/d(p) into ``grad_p`` (overwrite, don't add).

Optionally ``cuda_forward`` / ``cuda_backward``: launchers with the same
arguments and duties over numba.cuda device arrays (``h`` stays a host
float64 array), usually given as ``"module:function"`` strings so that
numba.cuda is imported only when a model runs on a GPU.

``p`` is the layer's slice of the model's flat parameter buffer (1-D,
contiguous; reshape views inside the kernel), ``grad_p`` the same slice of
the gradient buffer, ``h`` a float64 array of the layer's scalar options,
``cache`` a (n, cache_dim) workspace the forward may fill for the backward,
``seed`` a uint64 that differs every iteration (for random layers).

Running state (batch norm's running mean and variance): a layer that names
it in ``state_names`` gets its slice of the model's flat state buffer as one
more, last argument to both kernels, ``forward_kernel(p, h, x, out, cache,
training, seed, state)`` and ``backward_kernel(..., grad_p, state)``. The
forward may update it when ``training`` is true; the optimizer never sees
it; ``state_dict()`` and checkpoints keep it under ``"i.<name>"`` as torch
keeps buffers.
"""

from ..components import Component


class Layer(Component):
    """Base class of layers. Subclass, set ``name`` and the kernels."""

    #: Names of parameter tensors, in ``state_dict`` order (torch's order).
    param_names = ()
    #: Names of running-state tensors (not trained; passed to the kernels last).
    state_names = ()
    #: True for ReLU-like activations: a dense layer before one gets He init.
    relu_family = False
    #: Options that make a small working instance, for ``jitprop gradcheck``.
    example_options = {}

    in_dim = None
    out_dim = None

    def build(self, in_dim):
        """Fix the input width; return the output width."""
        self.in_dim = int(in_dim)
        self.out_dim = self.output_dim(self.in_dim)
        return self.out_dim

    def output_dim(self, in_dim):
        """Output width for an input width (same width by default)."""
        return in_dim

    def param_shapes(self):
        """``{name: shape}`` of the parameters, after ``build``."""
        return {}

    def init_params(self, params, rng, relu_next=False):
        """Fill ``params`` (``{name: array view}``) with initial values."""

    def state_shapes(self):
        """``{name: shape}`` of the running state, after ``build``."""
        return {}

    def init_state(self, state):
        """Fill ``state`` (``{name: array view}``) with its starting values (zeros by default)."""

    def cache_dim(self):
        """Columns of per-sample workspace the forward keeps for the backward."""
        return 0
