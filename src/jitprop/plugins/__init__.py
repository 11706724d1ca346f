"""The plugin host: hook points (hookspecs.py), the plugin manager (manager.py), the registries (registry.py).

``jitprop.plugins.register(module)`` registers a plugin for this process;
``jitprop.plugins.pm`` is the pluggy manager every plugin is registered with.
"""

from .manager import (  # noqa: F401
    DEFAULT_PLUGINS,
    ENTRY_POINT_GROUP,
    PluginLoadWarning,
    distribution_of,
    failed_plugins,
    load_plugins,
    plugin_name,
    plugin_problems,
    pm,
    register,
    report,
    strict,
    unregister,
)
