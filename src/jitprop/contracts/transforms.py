"""The gradient-transform contract: change or measure gradients between backward and update.

Every batch, after backpropagation has filled the model's flat gradient
buffer and before the divergence check and the optimizer's update, each of
a run's transforms calls its kernel, in the order given, inside the
compiled step (and on the GPU):

``kernel(g, p, offsets, lr, h, stats)``
    ``g`` the flat gradient buffer (1-D; change it in place: clip, scale,
    average across processes), ``p`` the flat parameters (read them, don't
    write), ``offsets`` an int64 array of ``n_layers + 1`` entries, layer
    i's parameters being ``g[offsets[i]:offsets[i + 1]]`` (``state_dict``
    order inside), ``lr`` this step's learning rate, ``h`` the float64
    options from ``hyper()``, ``stats`` a float64 (n_layers, len(stat_names))
    array to accumulate per-layer statistics in.

``stats`` is zeroed at the start of each epoch and comes back to the host
once, at its end, when ``epoch_end(epoch, stats)`` records it (in
``history``, by default). A batch whose loss or gradient turns out not
finite leaves ``stats`` as it was before that batch, like the weights.

Optionally ``cuda_kernel``: a launcher with the same arguments, ``g``,
``p``, ``offsets`` and ``stats`` as numba.cuda device arrays and ``h`` on
the host, usually a ``"module:function"`` string so that numba.cuda is
imported only for GPU runs. A transform without one trains on the CPU only.

A transform that sets ``sees_activations = True`` takes three more arguments:

``kernel(g, p, offsets, lr, h, stats, memory, acts, where)``
    ``memory`` an array (the model's dtype) of ``memory_size(model)`` values that it
    keeps from batch to batch (``init_memory`` fills it at the start of each
    fit; a rollback restores it with the weights; a diverged batch does not
    undo its writes),
    ``acts`` and ``where`` the batch's activations: one flat buffer and an
    int64 (n_layers + 1, 3) table of where each lies in it.
    ``jitprop.kernels.activation(acts, where, i)`` is activation i as a
    (rows, width) view: 0 the input rows, i + 1 layer i's output. Read them,
    don't write. (One buffer, not a tuple of arrays: a tuple's type, and the
    code Numba makes for it, grow with the model's depth.) The coach
    measures updates (the parameters' change since the last batch, from a
    copy in ``memory``) and activations so. Its ``cuda_kernel`` takes
    ``memory`` as a device array and the activations as a tuple of device
    arrays instead, ``acts[i]`` being activation i (a launcher loops over
    them in Python). ``jitprop.kernels.pack_activations(arrays)`` makes
    ``(acts, where)`` from a list of arrays, to call a kernel by hand.

``setup(model)`` runs once, before ``hyper()``, for transforms whose options
depend on the model (its layers' kinds and widths, say).

``on_after_backward`` (a lifecycle hook) stays for arbitrary Python between
backward and update; it runs before the transforms, on the Python loop.
"""

from ..components import Component


class GradientTransform(Component):
    """Base class of gradient transforms. Subclass, set ``name`` and ``kernel``."""

    #: Per-layer statistics the kernel accumulates over an epoch: the columns of ``stats``.
    stat_names = ()
    #: The kernel also takes ``memory``, ``acts`` and ``where`` (above).
    sees_activations = False

    def setup(self, model):
        """Read what the options depend on from ``model``; called once per Trainer, before ``hyper()``."""

    def memory_size(self, model):
        """How many values of ``memory`` (the model's dtype) the kernel keeps (``sees_activations`` only)."""
        return 0

    def init_memory(self, memory, model):
        """Fill ``memory`` at the start of a fit: zeros unless overridden."""
        memory[...] = 0.0

    def epoch_end(self, epoch, stats):
        """Epoch ``epoch``'s statistics (a (n_layers, len(stat_names)) copy): kept in ``history``."""
        if not hasattr(self, "history"):
            self.history = []
        self.history.append(stats)
