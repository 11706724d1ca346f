"""Factories that build registered components by name: ``jitprop.layer("dense", units=64)``."""

from .errors import ConfigError
from .plugins import registry


def _make(kind, spec, options):
    if isinstance(spec, str):
        return registry.create(kind, spec, **options)
    bases = registry.base_classes()
    base = bases.get(kind)
    if base is not None and isinstance(spec, base):
        if options:
            raise ConfigError(f"options {sorted(options)} given with a {kind} object; pass them to its constructor")
        return spec
    if kind == "callback" and spec is not None and not isinstance(spec, (int, float, bytes)):
        return spec  # any object with @hookimpl methods is a callback
    raise ConfigError(f"expected a {kind} name or a jitprop {kind} object, got {spec!r}")


def layer(name, **options):
    """A layer by registered name, e.g. ``layer("dense", units=64)``, ``layer("relu")``."""
    return _make("layer", name, options)


def loss(name, **options):
    """A loss by registered name, e.g. ``loss("cross_entropy")``."""
    return _make("loss", name, options)


def optimizer(name, **options):
    """An optimizer by registered name, e.g. ``optimizer("adam", lr=1e-3)``."""
    return _make("optimizer", name, options)


def callback(name, **options):
    """A callback by registered name, e.g. ``callback("early_stopping", patience=3)``."""
    return _make("callback", name, options)


def transform(name, **options):
    """A gradient transform by registered name, e.g. ``transform("gradient_clipping", max_norm=1.0)``."""
    return _make("transform", name, options)


def schedule(name, **options):
    """A learning-rate schedule by registered name, e.g. ``schedule("cosine", T_max=20, warmup=2)``."""
    return _make("schedule", name, options)
