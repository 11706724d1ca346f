"""The plugin manager: built-ins, entry points, ``JITPROP_LOAD_PLUGINS``.

Built-in layers, losses, optimizers and callbacks are plugins registered
exactly like third-party ones; third-party packages arrive through the
entry-point group ``jitprop``. Plugins load once, lazily, on first use.
"""

import importlib
import os
import sys
import warnings
from importlib import metadata

import pluggy

from ..errors import PluginError
from . import hookspecs

DEFAULT_PLUGINS = (
    "jitprop.default_plugins.layers",
    "jitprop.default_plugins.convolution",
    "jitprop.default_plugins.pooling",
    "jitprop.default_plugins.activations",
    "jitprop.default_plugins.losses",
    "jitprop.default_plugins.optimizers",
    "jitprop.default_plugins.schedules",
    "jitprop.default_plugins.transforms",
    "jitprop.default_plugins.callbacks",
    "jitprop.default_plugins.coach",
    "jitprop.default_plugins.datasets",
)

ENTRY_POINT_GROUP = "jitprop"

pm = pluggy.PluginManager("jitprop")
pm.add_hookspecs(hookspecs)

#: name -> one-line reason, for every entry point that failed to load.
failed_plugins = {}

#: plugin name -> one-line reasons for registrations of it that were skipped.
plugin_problems = {}

_loaded = False


class PluginLoadWarning(UserWarning):
    """An installed plugin package could not be loaded; the rest still work."""


def strict():
    """True when ``JITPROP_STRICT_PLUGINS`` is set: a plugin problem is an error, not a warning."""
    return os.environ.get("JITPROP_STRICT_PLUGINS", "") not in ("", "0")


def report(message, plugin=None):
    """A plugin problem: a PluginError in strict mode, else one warning line and go on."""
    if strict():
        raise PluginError(f"{message} (JITPROP_STRICT_PLUGINS is set)")
    if plugin is not None and message not in plugin_problems.get(plugin, []):
        plugin_problems.setdefault(plugin, []).append(message)
    warnings.warn(f"jitprop: {message}", PluginLoadWarning, stacklevel=3)


def load_plugins():
    """Register the built-ins and every installed plugin, once."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    allowed = os.environ.get("JITPROP_LOAD_PLUGINS")
    if allowed is not None:
        allowed = {n.strip() for n in allowed.split(",") if n.strip()}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allowed is not None and ep.name not in allowed:
            continue
        load_entry_point(ep)
    pm.check_pending()
    return pm


def load_entry_point(ep):
    """Load and register one entry point; report a failure in one line instead of raising."""
    if pm.get_plugin(ep.name) is not None or ep.name in failed_plugins:
        return
    try:
        plugin = ep.load()
        pm.register(plugin, name=ep.name)
        pm.check_pending()
    except Exception as exc:  # a broken package must not take the others down
        if pm.get_plugin(ep.name) is not None:
            pm.unregister(name=ep.name)
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        failed_plugins[ep.name] = reason
        report(f"plugin {ep.name!r} ({ep.value}) failed to load and was skipped: {reason}")
        return
    report_unmarked(plugin, ep.name)


def unmarked_hooks(plugin):
    """The plugin's functions that are named like a hook but not marked ``@jitprop.hookimpl``:
    pluggy ignores them, so they would never run."""
    names = []
    for attr in dir(plugin):
        if attr.startswith("_") or getattr(getattr(hookspecs, attr, None), "jitprop_spec", None) is None:
            continue
        value = getattr(plugin, attr, None)
        if callable(value) and getattr(value, "jitprop_impl", None) is None:
            names.append(attr)
    return names


def report_unmarked(plugin, name):
    for attr in unmarked_hooks(plugin):
        report(f"plugin {name!r}: {attr} is named like a hook but not marked @jitprop.hookimpl, so it never runs",
               plugin=name)  # fmt: skip


def register(plugin, name=None):
    """Register a plugin module or object (tests and notebooks use this)."""
    load_plugins()
    try:
        registered = pm.register(plugin, name=name)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        if pm.is_registered(plugin):
            pm.unregister(plugin)
        raise PluginError(str(exc).splitlines()[0]) from None
    except ValueError as exc:
        raise PluginError(str(exc)) from None
    report_unmarked(plugin, plugin_name(plugin))
    return registered


def unregister(plugin=None, name=None):
    """Remove a plugin registered with :func:`register`."""
    return pm.unregister(plugin=plugin, name=name)


def plugin_name(plugin):
    """The name a registered plugin goes by."""
    return pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin))


def distribution_of(plugin):
    """(distribution name, version) of the package that provides ``plugin``, if known."""
    module = getattr(plugin, "__module__", None) or getattr(plugin, "__name__", "")
    if isinstance(plugin, type(sys)):
        module = plugin.__name__
    top = module.split(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None, None
