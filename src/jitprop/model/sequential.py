"""Sequential: layers in order, one flat parameter buffer, and the passes through them.

Every weight and bias of the model lives in one contiguous array,
``model.params``; each layer owns a slice of it, and ``model.grads`` has the
same layout. An optimizer update is then one loop over one array, whatever
the number of layers, and a checkpoint is a handful of arrays. Running
state that is not trained (batch norm's statistics) lives the same way in
``model.state``, out of the optimizer's reach.
"""

import math

import numpy as np

from .. import api
from ..components import kernel, positive_int
from ..contracts.layers import Layer
from ..data.arrays import check_fits, size_text
from ..data.prepare import as_inputs
from ..errors import ConfigError, DataError
from ..kernels import mix_seed

DTYPES = {"float32": np.float32, "float64": np.float64}


def as_dtype(dtype):
    """``np.float32`` or ``np.float64`` from a name or numpy dtype."""
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ConfigError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return DTYPES[name]


def _input_shape(input_dim, input_shape):
    """A sample's shape from ``input_dim`` (flat) or ``input_shape``, checked."""
    if input_shape is None:
        if input_dim is None:
            raise ConfigError("Sequential needs input_dim (features per sample) or input_shape (e.g. (1, 8, 8) for images)")
        return (positive_int("input_dim", input_dim, "Sequential"),)
    if isinstance(input_shape, (int, np.integer)) and not isinstance(input_shape, bool):
        input_shape = (input_shape,)
    ok = isinstance(input_shape, (tuple, list)) and len(input_shape) > 0
    ok = ok and all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in input_shape)
    if not ok:
        raise ConfigError(f"Sequential: input_shape must be a tuple of positive sizes like (1, 8, 8), got {input_shape!r}")
    shape = tuple(int(d) for d in input_shape)
    if input_dim is not None and input_dim != math.prod(shape):
        raise ConfigError(f"Sequential: input_dim={input_dim} does not match input_shape={shape} ({math.prod(shape)} values)")
    return shape


def _blocks(rows, widths, dtype):
    """One flat buffer and a (rows[i], widths[i]) C-contiguous view of it for each i, each
    starting on a 64-byte boundary (as separate arrays would: BLAS likes aligned rows)."""
    item = np.dtype(dtype).itemsize
    step = max(1, 64 // item)
    starts, end = [], 0
    for r, w in zip(rows, widths):
        starts.append(end)
        end += -(-r * w // step) * step
    raw = np.zeros(end + step, dtype)
    skip = (-raw.__array_interface__["data"][0] % 64) // item
    buffer = raw[skip : skip + end]
    return buffer, [buffer[s : s + r * w].reshape(r, w) for s, r, w in zip(starts, rows, widths)]


class Workspace:
    """Every array one pass over a batch of up to ``capacity`` rows needs, allocated once.

    ``acts[i]`` is the input of layer i (``acts[0]`` the batch itself,
    ``acts[-1]`` the model's output); ``deltas[i]`` is dL/d(acts[i]), with zero
    rows for the input, which needs no gradient.
    """

    def __init__(self, model, capacity, training):
        dt = model.dtype
        dims = model.dims
        self.capacity = capacity
        # Each list is views of one flat buffer: the compiled step takes the buffer, not a list.
        self.act_buffer, self.acts = _blocks([capacity] * len(dims), dims, dt)
        self.cache_buffer, self.caches = _blocks([capacity] * len(model.layers), [layer.cache_dim() for layer in model.layers], dt)
        self.delta_buffer = self.deltas = None
        if training:
            self.delta_buffer, self.deltas = _blocks([0] + [capacity] * (len(dims) - 1), dims, dt)
        self._views = {}

    def views(self, n):
        """(acts, caches, deltas) cut to the first n rows; cut once per distinct n and kept."""
        v = self._views.get(n)
        if v is None:
            if not 0 < n <= self.capacity:
                raise ValueError(f"batch of {n} rows does not fit a workspace of {self.capacity}")
            acts = [a[:n] for a in self.acts]
            caches = [c[:n] for c in self.caches]
            deltas = None if self.deltas is None else [self.deltas[0]] + [d[:n] for d in self.deltas[1:]]
            v = self._views[n] = (acts, caches, deltas)
        return v


class Sequential:
    """A stack of layers applied one after the other, like ``torch.nn.Sequential``.

    >>> model = jitprop.Sequential(
    ...     [jitprop.layer("dense", units=64), "relu", jitprop.layer("dense", units=10)],
    ...     input_dim=64, dtype="float32", seed=0)

    ``input_dim`` is the number of features of a flat sample;
    ``input_shape`` a sample's shape, such as ``(1, 8, 8)`` for one-channel
    images (torch's channels-first order). ``shapes[i]`` is the per-sample
    shape layer i receives (``shapes[-1]`` the output's), ``dims[i]`` its
    size: activations travel as flat (n, dims[i]) rows whatever the shape.

    Layer i's parameters appear in ``state_dict()`` as ``"i.weight"``,
    ``"i.bias"`` with torch's shapes, so weights move to and from PyTorch.
    """

    def __init__(self, layers, input_dim=None, dtype="float32", seed=0, input_shape=None):
        if isinstance(layers, (str, Layer)) or not hasattr(layers, "__iter__"):
            raise ConfigError("Sequential takes a list of layers, e.g. [jitprop.layer('dense', units=10)]")
        self.layers = [api.layer(item) if isinstance(item, str) else item for item in layers]
        if not self.layers:
            raise ConfigError("Sequential needs at least one layer")
        for i, item in enumerate(self.layers):
            if not isinstance(item, Layer):
                raise ConfigError(f"layer {i} is {item!r}, not a jitprop layer or layer name")
        if len({id(layer) for layer in self.layers}) != len(self.layers):
            raise ConfigError("the same layer object appears twice in the model; create one per position")
        self.input_shape = _input_shape(input_dim, input_shape)
        self.input_dim = math.prod(self.input_shape)
        self.dtype = as_dtype(dtype)
        self.seed = positive_int("seed", seed, "Sequential", minimum=0)

        self.shapes = [self.input_shape]
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.build(self.shapes[-1])
            except ConfigError as exc:  # a shape the layer cannot take: say which layer
                raise ConfigError(f"{layer.name} {i}: {exc}") from None
            shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
            if not shape or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
                raise ConfigError(f"layer {i} ({layer.name}) gives an output of shape {shape} from {self.shapes[-1]}")
            self.shapes.append(tuple(int(d) for d in shape))
        self.dims = [math.prod(shape) for shape in self.shapes]

        # Lay every parameter of every layer out in one flat buffer, running state in another.
        self._shapes = self._layout(lambda layer: (layer.param_names, layer.param_shapes()))
        self._state_shapes = self._layout(lambda layer: (layer.state_names, layer.state_shapes()))
        n_params, n_state = self._size(self._shapes), self._size(self._state_shapes)
        # Parameters, gradients and running state, before anything is allocated: a mistyped width
        # (--hidden 1000000000) is one sentence, not a frozen machine.
        check_fits((2 * n_params + n_state) * np.dtype(self.dtype).itemsize, f"a model of {n_params:,} parameters")
        self.params = np.zeros(n_params, self.dtype)
        # Two values past the gradients: a data-parallel step sums the batch's loss and hits with them,
        # in the same call (jitprop.distributed).
        self.grad_buffer = np.zeros(n_params + 2, self.dtype)
        self.grads = self.grad_buffer[:n_params]
        self.state = np.zeros(n_state, self.dtype)
        self.layer_params = self._slices(self.params, self._shapes)
        self.layer_grads = self._slices(self.grads, self._shapes)
        self.layer_state = self._slices(self.state, self._state_shapes)
        #: Layer i's parameters are ``params[offsets[i]:offsets[i + 1]]`` (int64, for gradient transforms).
        self.offsets = np.cumsum([0] + [sum(e[4] for e in entries) for entries in self._shapes], dtype=np.int64)
        #: Per layer: its kernels take the running state after their contract's arguments.
        self.stateful = [bool(layer.state_names) for layer in self.layers]
        # Scratch memory of the layers that ask for it: one flat buffer, a slice each, never saved.
        sizes = [int(layer.scratch_size()) for layer in self.layers]
        self.scratch = np.zeros(sum(sizes), self.dtype)
        bounds = np.cumsum([0] + sizes)
        self.layer_scratch = [self.scratch[a:b] for a, b in zip(bounds, bounds[1:])]
        #: Per layer: its kernels take scratch memory last.
        self.has_scratch = [size > 0 for size in sizes]
        self._last_args = [((state,) if stateful else ()) + ((scratch,) if wants else ()) for state, stateful, scratch, wants
                           in zip(self.layer_state, self.stateful, self.layer_scratch, self.has_scratch)]  # fmt: skip
        hypers = [np.ascontiguousarray(layer.hyper(), dtype=np.float64).ravel() for layer in self.layers]
        #: Every layer's options in one float64 buffer; ``hypers[i]`` is layer i's slice.
        self.hyper_buffer = np.concatenate([np.zeros(0)] + hypers)
        bounds = np.cumsum([0] + [h.size for h in hypers])
        self.hypers = [self.hyper_buffer[a:b] for a, b in zip(bounds, bounds[1:])]
        self.forward_kernels = [kernel(layer, "forward_kernel") for layer in self.layers]
        self.backward_kernels = [kernel(layer, "backward_kernel") for layer in self.layers]
        self._workspaces = {}
        self.reset_parameters()

    # -- parameters ------------------------------------------------------

    def _layout(self, names_and_shapes):
        """Per layer: [(key, name, shape, offset, size)] of consecutive tensors in one flat buffer."""
        layout, offset = [], 0
        for i, layer in enumerate(self.layers):
            names, shapes = names_and_shapes(layer)
            entries = []
            for name in names:
                shape = tuple(shapes[name])
                size = int(np.prod(shape))
                entries.append((f"{i}.{name}", name, shape, offset, size))
                offset += size
            layout.append(entries)
        return layout

    @staticmethod
    def _size(layout):
        return sum(e[4] for entries in layout for e in entries)

    @staticmethod
    def _slices(buffer, layout):
        bounds = [(e[0][3], e[-1][3] + e[-1][4]) if e else (0, 0) for e in layout]
        return [buffer[a:b] for a, b in bounds]

    @property
    def output_dim(self):
        return self.dims[-1]

    @property
    def output_shape(self):
        return self.shapes[-1]

    def last_args(self, i):
        """The arguments layer i's kernels take after their contract's: (state,) and/or (scratch,)."""
        return self._last_args[i]

    @property
    def n_params(self):
        return self.params.size

    def reset_parameters(self, seed=None):
        """Initialise every parameter again from ``seed`` (default: the model's seed)."""
        rng = np.random.default_rng(self.seed if seed is None else seed)
        for i, layer in enumerate(self.layers):
            if not self._shapes[i]:
                continue
            relu_next = i + 1 < len(self.layers) and self.layers[i + 1].relu_family
            values = {name: np.zeros(shape) for _, name, shape, _, _ in self._shapes[i]}
            layer.init_params(values, rng, relu_next=relu_next)
            for key, name, shape, off, size in self._shapes[i]:
                self.params[off : off + size] = values[name].ravel()
        self.reset_state()

    def reset_state(self):
        """Running state back to each layer's starting values."""
        self.state[...] = 0
        for i, layer in enumerate(self.layers):
            if self._state_shapes[i]:
                layer.init_state({name: self.state[off : off + size].reshape(shape)
                                  for _, name, shape, off, size in self._state_shapes[i]})  # fmt: skip

    @staticmethod
    def _views(buffer, layout):
        return {key: buffer[off : off + size].reshape(shape) for entries in layout for key, _, shape, off, size in entries}

    def parameters(self):
        """``{key: view}`` into the live parameter buffer (writes change the model)."""
        return self._views(self.params, self._shapes)

    def gradients(self):
        """``{key: view}`` into the gradient buffer of the last backward pass."""
        return self._views(self.grads, self._shapes)

    def param_ranges(self):
        """``{key: (start, end)}``: where each parameter tensor lies in ``params`` (and ``grads``)."""
        return {key: (off, off + size) for entries in self._shapes for key, _, _, off, size in entries}

    def buffers(self):
        """``{key: view}`` into the running state (torch calls these buffers)."""
        return self._views(self.state, self._state_shapes)

    def state_dict(self):
        """Copies of every parameter and running-state tensor, keyed and shaped as
        torch.nn.Sequential would key them."""
        params, buffers = self.parameters(), self.buffers()
        keys = [e[0] for i in range(len(self.layers)) for e in self._shapes[i] + self._state_shapes[i]]
        return {k: (params[k] if k in params else buffers[k]).copy() for k in keys}  # torch's order

    def load_state_dict(self, state):
        """Copy parameters and running state in from a ``state_dict`` (ours or torch's)."""
        views = {**self.parameters(), **self.buffers()}
        missing = sorted(set(views) - set(state))
        extra = sorted(set(state) - set(views))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing keys {', '.join(missing)}")
            if extra:
                parts.append(f"unexpected keys {', '.join(extra)}")
            raise DataError(f"state dict does not fit this model: {'; '.join(parts)}")
        arrays = {}
        for key, view in views.items():
            value = state[key]
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu().numpy()
            value = np.asarray(value)
            if value.shape != view.shape:
                raise DataError(f"state dict entry {key!r} has shape {value.shape}, the model needs {view.shape}")
            if not np.all(np.isfinite(value)):
                raise DataError(f"state dict entry {key!r} holds NaN or infinite values")
            arrays[key] = value
        for key, value in arrays.items():  # only write once everything checked out
            views[key][...] = value

    def config(self):
        """The model's structure as plain data: ``Sequential.from_config`` rebuilds it."""
        return {
            "input_dim": self.input_dim,
            "input_shape": list(self.input_shape),
            "dtype": np.dtype(self.dtype).name,
            "seed": self.seed,
            "layers": [{"name": layer.name, **layer.config()} for layer in self.layers],
        }

    @classmethod
    def from_config(cls, config):
        """A new model of the structure ``config()`` described (weights freshly initialised)."""
        layers = [api.layer(spec["name"], **{k: v for k, v in spec.items() if k != "name"}) for spec in config["layers"]]
        shape = config.get("input_shape")  # written since the shaped layers; 0.1.0's are flat
        return cls(layers, input_dim=None if shape else config["input_dim"], input_shape=shape, dtype=config["dtype"],
                   seed=config.get("seed", 0))  # fmt: skip

    # -- passes ----------------------------------------------------------

    def workspace(self, capacity, training=False):
        """A workspace for batches of up to ``capacity`` rows, made once per size and kept."""
        key = (capacity, training)
        ws = self._workspaces.get(key)
        if ws is None:
            ws = self._workspaces[key] = Workspace(self, capacity, training)
        return ws

    def forward_args(self, i, acts, caches, training=False, seed=0):
        """Layer i's forward-kernel arguments on the host, in the layer contract's order."""
        return (self.layer_params[i], self.hypers[i], acts[i], acts[i + 1], caches[i], training, mix_seed(seed, i),
                *self._last_args[i])  # fmt: skip

    def backward_args(self, i, acts, caches, deltas):
        """Layer i's backward-kernel arguments on the host, in the layer contract's order."""
        return (self.layer_params[i], self.hypers[i], acts[i], acts[i + 1], caches[i], deltas[i + 1], deltas[i],
                self.layer_grads[i], *self._last_args[i])  # fmt: skip

    def forward(self, acts, caches, training=False, seed=0):
        """Run each layer's forward kernel, first to last; ``acts[0]`` holds the batch."""
        for i in range(len(self.layers)):
            self.forward_kernels[i](*self.forward_args(i, acts, caches, training, seed))
        return acts[-1]

    def backward(self, acts, caches, deltas):
        """Backpropagation: from dL/d(output) in ``deltas[-1]``, each layer last to first
        writes its parameter gradients into ``self.grads`` and passes dL/d(input) down."""
        for i in range(len(self.layers) - 1, -1, -1):
            self.backward_kernels[i](*self.backward_args(i, acts, caches, deltas))

    def predict(self, X, batch_size=1024):
        """The model's output for every row of ``X`` (inference mode: dropout off)."""
        from ..backends.python import predict  # the backends build on this module

        return predict(self, as_inputs(self, X), batch_size)

    def summary(self):
        """The model as a table, as Keras's ``summary()``: each layer, its output shape, its parameters."""
        shape = lambda s: "x".join(map(str, s))  # noqa: E731
        counts = [sum(size for *_, size in self._shapes[i]) for i in range(len(self.layers))]
        rows = [("layer", "output", "parameters"), ("input", shape(self.input_shape), "")]
        rows += [(f"{i} {layer.name}", shape(self.shapes[i + 1]), f"{counts[i]:,}") for i, layer in enumerate(self.layers)]
        widths = [max(len(r[c]) for r in rows) for c in range(3)]
        lines = [f"  {a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}".rstrip() for a, b, c in rows]
        size = self.n_params * np.dtype(self.dtype).itemsize
        lines.append(f"  {self.n_params:,} parameters ({np.dtype(self.dtype).name}, {size_text(size)})")
        return "\n".join(lines)

    def __repr__(self):
        rows = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        where = f"input_dim={self.input_dim}" if len(self.input_shape) == 1 else f"input_shape={self.input_shape}"
        return f"Sequential({where}, dtype={np.dtype(self.dtype).name}, params={self.n_params}\n{rows}\n)"
