"""Name -> class tables, filled by the plugins' ``register_*`` hooks.

The one place that checks what plugins register: the right base class, no
name taken twice, and "did you mean" for a name nobody registered.
"""

import difflib
from dataclasses import dataclass, field

from ..errors import ConfigError, PluginError
from .manager import load_plugins, plugin_name, report


@dataclass(frozen=True)
class Entry:
    """One registered class and where it came from."""

    name: str
    cls: type
    plugin: str
    aliases: tuple = field(default=())

    @property
    def doc(self):
        """First line of the class docstring."""
        text = (self.cls.__doc__ or "").strip()
        return text.splitlines()[0] if text else ""


# kind -> (hook name, base class path); base classes are imported lazily to
# keep this module free of the layer/loss/optimizer machinery.
KINDS = {
    "layer": "register_layers",
    "loss": "register_losses",
    "optimizer": "register_optimizers",
    "callback": "register_callbacks",
    "schedule": "register_schedules",
    "transform": "register_transforms",
    "dataset": "register_datasets",
}

_tables = {}
_tables_key = None


def base_classes():
    from ..contracts.callbacks import Callback
    from ..contracts.datasets import Dataset
    from ..contracts.layers import Layer
    from ..contracts.losses import Loss
    from ..contracts.optimizers import Optimizer
    from ..contracts.schedules import Schedule
    from ..contracts.transforms import GradientTransform

    return {"layer": Layer, "loss": Loss, "optimizer": Optimizer, "callback": Callback, "schedule": Schedule,
            "dataset": Dataset, "transform": GradientTransform}  # fmt: skip


def _build(pm):
    bases = base_classes()
    tables = {}
    for kind, hook_name in KINDS.items():
        table = {}
        for impl in getattr(pm.hook, hook_name).get_hookimpls():  # in registration order
            owner = plugin_name(impl.plugin)

            def register(cls, name=None, aliases=(), _owner=owner, _kind=kind, _table=table):
                try:
                    _add(_table, _kind, bases.get(_kind), cls, name, aliases, _owner)
                except PluginError as exc:  # skip this registration; the others stand
                    report(f"{exc}; skipped", plugin=_owner)

            impl.function(register)
        tables[kind] = table
    return tables


def _add(table, kind, base, cls, name, aliases, owner):
    if not isinstance(cls, type):
        raise PluginError(f"plugin {owner!r} registered {cls!r} as a {kind}, but a {kind} must be a class")
    if base is not None and not issubclass(cls, base):
        raise PluginError(
            f"plugin {owner!r} registered {cls.__name__} as a {kind}, but it does not subclass jitprop.{base.__name__}"
        )
    name = name or getattr(cls, "name", None)
    if not name or not isinstance(name, str):
        raise PluginError(f"plugin {owner!r} registered {cls.__name__} without a name: set `name = ...` on the class")
    entry = Entry(name, cls, owner, tuple(aliases))
    for key in (name, *aliases):
        if key in table:
            raise PluginError(
                f"{kind} name {key!r} is registered twice: by plugin {table[key].plugin!r} and by plugin {owner!r}"
            )
    for key in (name, *aliases):
        table[key] = entry
    if getattr(cls, "name", None) is None:
        cls.name = name


def tables():
    """All tables, rebuilt whenever the set of registered plugins changed."""
    global _tables, _tables_key
    pm = load_plugins()
    # The plugins themselves, not their ids: holding them keeps a freed plugin's id from being
    # reused by a new one, which would make a changed set look unchanged.
    key = tuple(plugin for _, plugin in pm.list_name_plugin())
    if _tables_key is None or len(key) != len(_tables_key) or any(a is not b for a, b in zip(key, _tables_key)):
        _tables = _build(pm)
        _tables_key = key
    return _tables


def entries(kind):
    """Distinct entries of one kind, sorted by name."""
    unique = {e.name: e for e in tables()[kind].values()}
    return [unique[n] for n in sorted(unique)]


def lookup(kind, name):
    """The entry registered under ``name``, or a ConfigError listing close matches."""
    table = tables()[kind]
    if not isinstance(name, str):
        raise ConfigError(f"a {kind} name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key in table:
        return table[key]
    if name in table:
        return table[name]
    close = difflib.get_close_matches(key, table, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else f"; known: {', '.join(sorted(table))}"
    raise ConfigError(f"unknown {kind} {name!r}{hint}")


def create(kind, name, **options):
    """Instantiate the class registered as ``name`` with ``options``, with readable errors."""
    entry = lookup(kind, name)
    try:
        return entry.cls(**options)
    except TypeError as exc:
        raise ConfigError(f"{kind} {entry.name!r}: {exc}".replace(f"{entry.cls.__name__}.__init__() ", "")) from None
