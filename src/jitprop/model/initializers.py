"""Weight initializers: He (Kaiming) for ReLU-family layers, Glorot (Xavier) otherwise.

He et al. 2015, "Delving Deep into Rectifiers"; Glorot & Bengio 2010,
"Understanding the difficulty of training deep feedforward neural networks".
Textbook set-ups take plain ones with their numbers as options, written as
``normal:std=0.01`` (CS231n's ``0.01 * randn``) or ``uniform:low=-0.1,high=0.1``.
"""

import functools
import math

import numpy as np

from ..data.runconfig import parse_spec
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


def normal(rng, fan_in, fan_out, shape, std=0.05, mean=0.0):
    """N(mean, std^2), whatever the fans (Keras's RandomNormal defaults)."""
    return rng.normal(mean, std, size=shape)


def uniform(rng, fan_in, fan_out, shape, low=-0.05, high=0.05):
    """U(low, high), whatever the fans (Keras's RandomUniform defaults)."""
    return rng.uniform(low, high, size=shape)


INITIALIZERS = {
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "torch": torch_default,
    "normal": normal,
    "uniform": uniform,
}
#: The options of the initializers that take some, with their defaults.
OPTIONS = {"normal": {"std": 0.05, "mean": 0.0}, "uniform": {"low": -0.05, "high": 0.05}}
ALIASES = {"he": "he_normal", "kaiming": "he_normal", "glorot": "glorot_uniform", "xavier": "glorot_uniform"}
CHOICES = ("auto", *INITIALIZERS, *ALIASES)


def check(text, owner):
    """``text`` if it names an initializer (``he_normal``, ``auto``, ``normal:std=0.01``), else a
    one-line ConfigError that starts with ``owner`` (the layer)."""
    try:
        resolve(text, False)
    except ConfigError as exc:
        raise ConfigError(f"{owner}: init {exc}") from None
    return text


def resolve(text, relu_next):
    """The initializer function for ``text``; ``"auto"`` picks He before a ReLU-family layer."""
    if not isinstance(text, str):
        raise ConfigError(f"must be an initializer's name, got {text!r}")
    given = parse_spec(text)  # the NAME:k=v,... of every option on the command line
    name = given.pop("name")
    if name == "auto":
        name = "he_normal" if relu_next else "glorot_uniform"
    name = ALIASES.get(name, name)
    if name not in INITIALIZERS:
        raise ConfigError(f"{name!r} is not an initializer; choose one of {', '.join(CHOICES)}")
    options = dict(OPTIONS.get(name, {}))
    for key, value in given.items():
        if key not in options:
            takes = f"takes {', '.join(options)}" if options else "takes no options"
            raise ConfigError(f"{name} {takes}, not {key!r}")
        try:
            if isinstance(value, bool):
                raise ValueError
            options[key] = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: {key} must be a number, got {value!r}") from None
    if not all(math.isfinite(v) for v in options.values()):
        raise ConfigError(f"{name}'s options must be finite numbers")
    if name == "normal" and options["std"] <= 0:
        raise ConfigError(f"normal: std must be above 0, got {options['std']:g}")
    if name == "uniform" and options["low"] >= options["high"]:
        raise ConfigError(f"uniform: low must be below high, got {options['low']:g} and {options['high']:g}")
    fn = INITIALIZERS[name]
    return functools.partial(fn, **options) if options else fn
