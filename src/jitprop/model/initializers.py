"""Weight initializers: He (Kaiming) for ReLU-family layers, Glorot (Xavier) otherwise.

He et al. 2015, "Delving Deep into Rectifiers"; Glorot & Bengio 2010,
"Understanding the difficulty of training deep feedforward neural networks".
"""

import numpy as np

from ..errors import ConfigError


def he_normal(rng, fan_in, fan_out, shape):
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)


def he_uniform(rng, fan_in, fan_out, shape):
    limit = np.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, size=shape)


def glorot_uniform(rng, fan_in, fan_out, shape):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def glorot_normal(rng, fan_in, fan_out, shape):
    return rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), size=shape)


def torch_default(rng, fan_in, fan_out, shape):
    """``torch.nn.Linear``'s default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    limit = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-limit, limit, size=shape)


INITIALIZERS = {
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "torch": torch_default,
}
ALIASES = {"he": "he_normal", "kaiming": "he_normal", "glorot": "glorot_uniform", "xavier": "glorot_uniform"}
CHOICES = ("auto", *INITIALIZERS, *ALIASES)


def resolve(name, relu_next):
    """The initializer function for ``name``; ``"auto"`` picks He before a ReLU-family layer."""
    if name == "auto":
        name = "he_normal" if relu_next else "glorot_uniform"
    name = ALIASES.get(name, name)
    if name not in INITIALIZERS:
        raise ConfigError(f"unknown initializer {name!r}; choose one of {', '.join(CHOICES)}")
    return INITIALIZERS[name]
