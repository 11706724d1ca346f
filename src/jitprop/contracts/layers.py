"""The layer contract: what a registered layer class provides.

A layer turns samples of a per-sample shape (``in_shape``, a tuple: ``(64,)``
for 64 features, ``(1, 8, 8)`` for one-channel 8x8 images) into samples of
``out_shape``; ``build(in_shape) -> out_shape`` fixes both when the model is
built. Whatever the shapes, every batch reaches the kernels as a flat,
C-contiguous ``(n, prod(shape))`` array, so a row of ``x`` is one sample in
torch's order (channels, then rows, then columns: NCHW) and kernels index it
as they like. Its work happens in two kernels, plain functions of arrays
and scalars (``@njit(cache=True)`` for the compiled CPU path):

``forward_kernel(p, h, x, out, cache, training, seed)``
    write the layer's output into ``out`` (n, out_dim).
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
the gradient buffer: the tensors of ``param_names``, in that order, each
laid out C-contiguously with the shape ``param_shapes()`` gives (so
``state_dict`` hands torch the same numbers). ``init_params`` fills them.
``h`` is a float64 array of the layer's scalar options (``hyper()``),
``cache`` a (n, cache_dim()) workspace the forward may fill for the
backward, ``seed`` a uint64 that differs every iteration (for random
layers). A layer that draws element ``k`` of its rows with
``jitprop.kernels.uniform(seed, k)``, as dropout does, draws the same
numbers in data-parallel training: a rank holding rows ``r..`` of a batch
gets a seed advanced so that ``k`` counts from the batch's first row.

More arguments, last and in this order, for layers that ask for them:

- running state (batch norm's running mean and variance): a layer that
  names it in ``state_names`` (shapes from ``state_shapes()``) gets its
  slice of the model's flat state buffer, ``state``. The forward may update
  it when ``training`` is true; the optimizer never sees it;
  ``state_dict()`` and checkpoints keep it under ``"i.<name>"`` as torch
  keeps buffers.
- scratch memory: a layer whose ``scratch_size()`` is not 0 gets a 1-D
  array of that many elements (the model's dtype), ``scratch``, for
  per-batch numbers that belong to no row (per-feature sums, say). It is
  the layer's own, allocated once, and holds nothing between calls.

So ``forward_kernel(p, h, x, out, cache, training, seed[, state][, scratch])``
and ``backward_kernel(..., grad_p[, state][, scratch])``.

Kernels built per option (one per kernel size, say) come from a function
decorated with ``jitprop.components.kernel_factory``; set them on the
instance (``self.forward_kernel = make(k)[0]``) and the compiled step can
still name them.
"""

import math

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
    #: The per-sample input shape ``jitprop gradcheck`` tries it on (None: 5 flat features).
    example_shape = None

    in_shape = out_shape = None
    in_dim = out_dim = None

    def build(self, in_shape):
        """Fix the per-sample input shape; return the output shape. Sets ``in_shape``,
        ``out_shape`` and their sizes ``in_dim``, ``out_dim`` (numbers per sample)."""
        self.in_shape = tuple(int(d) for d in in_shape)
        self.in_dim = math.prod(self.in_shape)
        self.out_shape = tuple(int(d) for d in self.output_shape(self.in_shape))
        self.out_dim = math.prod(self.out_shape)
        return self.out_shape

    def output_shape(self, in_shape):
        """Output shape for an input shape: the input's own (elementwise layers), unless the
        class gives a width with ``output_dim``, which makes the output flat."""
        if type(self).output_dim is not Layer.output_dim:
            return (self.output_dim(math.prod(in_shape)),)
        return in_shape

    def output_dim(self, in_dim):
        """Output width for an input width: override this or ``output_shape``."""
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

    def scratch_size(self):
        """Elements of scratch memory the kernels get as their last argument (0: none)."""
        return 0
