"""Training: the ``Trainer``'s epoch loop, its ``History``, and ``fit`` / ``evaluate`` / ``value_and_grad``."""

from .trainer import History, Trainer, evaluate, fit, value_and_grad  # noqa: F401
