"""What layers, losses, optimizers and schedules share: options and kernels."""

import functools
import importlib
import inspect
import math

import numpy as np

from .errors import ConfigError


class Component:
    """Base of every registered class: a name, options, and a readable repr.

    Constructors store each argument under its own name; ``config()`` reads
    them back, so a component can be written to a checkpoint or config file
    and rebuilt with ``jitprop.layer(name, **config)``.
    """

    name = None

    def config(self):
        """The constructor options of this instance, as a dict."""
        return {k: getattr(self, k) for k in _option_names(type(self).__init__) if hasattr(self, k)}

    def hyper(self):
        """Scalar options the kernels need, as a float64 array (empty by default)."""
        return np.zeros(0)

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{self.name or type(self).__name__}({opts})"


@functools.cache
def _option_names(init):
    """A constructor's named options (every checkpoint save asks, for each component)."""
    params = inspect.signature(init).parameters
    return tuple(k for k, p in params.items() if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


def kernel(obj, attr):
    """The kernel stored as class attribute ``attr``, with or without ``staticmethod``.

    A ``"module:function"`` string names a kernel imported on first use: CUDA
    launchers are referred to so, keeping numba.cuda out of CPU runs.
    """
    fn = vars(obj).get(attr) if hasattr(obj, "__dict__") else None  # set on the instance: built per option
    if fn is None:
        fn = inspect.getattr_static(type(obj), attr, None)
    if isinstance(fn, staticmethod):
        fn = fn.__func__
    if fn is None:
        raise ConfigError(f"{obj.name or type(obj).__name__} has no {attr}")
    if isinstance(fn, str):
        module, _, name = fn.partition(":")
        fn = getattr(importlib.import_module(module), name)
    return fn


#: What a kernel factory may be called with: values the generated step can write as literals.
LITERALS = (bool, int, float, str, type(None))


def kernel_factory(build):
    """Decorate a module-level function that builds kernels for some options (a kernel size,
    say), so that the compiled step can name what it builds.

    ``build(*options)`` returns one njit kernel or a tuple of them; it runs once per
    distinct options, which must be ints, floats, strings, booleans, None or tuples of
    them. Each kernel remembers how it was made, and generated code makes it the same way.
    """

    made = {}

    @functools.wraps(build)
    def factory(*options):
        if not _literal(options):
            raise ConfigError(f"{build.__qualname__}: kernel options must be numbers, strings or tuples of them, got {options!r}")
        if options not in made:
            kernels = build(*options)
            for i, k in enumerate(kernels if isinstance(kernels, tuple) else (kernels,)):
                k.jitprop_factory = (build.__module__, build.__qualname__, options, i if isinstance(kernels, tuple) else None)
            made[options] = kernels
        return made[options]

    return factory


def _literal(value):
    if isinstance(value, tuple):
        return all(_literal(v) for v in value)
    return isinstance(value, LITERALS) and not (isinstance(value, float) and not math.isfinite(value))


def check(condition, message):
    """Raise ConfigError(message) unless ``condition``: for argument checks in constructors."""
    if not condition:
        raise ConfigError(message)


def positive_int(name, value, owner, minimum=1):
    check(
        isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum,
        f"{owner}: {name} must be an integer >= {minimum}, got {value!r}",
    )
    return int(value)


def real(name, value, owner, low=None, high=None, low_open=False, high_open=False):
    """Check a real-valued option against an interval and return it as float."""
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = np.isfinite(v)
        if ok and low is not None:
            ok = v > low if low_open else v >= low
        if ok and high is not None:
            ok = v < high if high_open else v <= high
    if not ok:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
        hi = "" if high is None else f"{high}" + (")" if high_open else "]")
        rng = f"in {lo or '(-inf'}, {hi or 'inf)'}"
        raise ConfigError(f"{owner}: {name} must be a number {rng}, got {value!r}")
    return float(value)
