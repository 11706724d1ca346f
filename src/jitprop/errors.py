"""The few exceptions a jitprop user sees.

Each carries one sentence that says what is wrong and what to do about it;
the command line prints it as a single line.
"""


class JitpropError(Exception):
    """Base class of every error jitprop raises on purpose."""


class ConfigError(JitpropError, ValueError):
    """A bad name, option or hyperparameter."""


class DataError(JitpropError, ValueError):
    """Input data that does not fit the model or the loss."""


class PluginError(JitpropError):
    """A plugin that registers something it should not."""
