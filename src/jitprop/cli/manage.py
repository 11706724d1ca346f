"""Plugin management commands: ``jitprop install``, ``uninstall`` and ``new-plugin``.

``install`` and ``uninstall`` are thin wrappers over pip run with the
interpreter jitprop runs under, so a plugin always lands in jitprop's own
environment (the way ``llm install`` works), and they report which jitprop
plugins appeared or went away.
"""

import importlib
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import click

from ..errors import ConfigError, JitpropError
from ..plugins.manager import ENTRY_POINT_GROUP
from . import scaffold


def _plugins_installed():
    """{entry-point name: "distribution version"} of the installed jitprop plugins."""
    importlib.invalidate_caches()
    found = {}
    for dist in metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                found[ep.name] = f"{dist.metadata['Name']} {dist.version}"
    return found


def _pip(*args):
    """Run pip in jitprop's environment, its output going straight to the user."""
    try:
        import pip  # noqa: F401
    except ImportError:
        raise JitpropError(
            f"pip is not available in jitprop's environment ({sys.prefix}); add it with: {sys.executable} -m ensurepip"
        ) from None
    before = _plugins_installed()
    code = subprocess.run([sys.executable, "-m", "pip", *args]).returncode
    if code != 0:
        raise JitpropError(f"pip {args[0]} failed (exit status {code}); pip's messages above say why")
    after = _plugins_installed()
    new = sorted(name for name in after if before.get(name) != after[name])
    broken = _failing_to_load(new)
    for name in new:
        if name not in broken:
            click.echo(f"plugin {name!r} ready: {after[name]}")
    for name in sorted(set(before) - set(after)):
        click.echo(f"plugin {name!r} removed ({before[name]})")
    if broken:
        raise JitpropError("; ".join(f"plugin {name!r} ({after[name]}) was installed but does not load: {why}"
                                     for name, why in broken.items()) + "; fix its entry point or code and install again")  # fmt: skip


#: Run in a fresh interpreter (this one imported the packages as they were before pip ran).
_LOAD_CHECK = """
import json, sys
from importlib import metadata
failed = {}
for ep in metadata.entry_points(group=sys.argv[1]):
    if ep.name in sys.argv[2:]:
        try:
            ep.load()
        except Exception as exc:
            failed[ep.name] = (type(exc).__name__ + ": " + str(exc)).splitlines()[0]
print(json.dumps(failed))
"""


def _failing_to_load(names):
    """{entry-point name: one-line reason} for the named plugins whose entry point does not import."""
    if not names:
        return {}
    out = subprocess.run([sys.executable, "-c", _LOAD_CHECK, ENTRY_POINT_GROUP, *names], capture_output=True, text=True)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):  # the check itself broke: say what it printed last
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {name: f"its import check failed ({last})" for name in names}


@click.command()
@click.argument("packages", nargs=-1, required=True)
@click.option("-U", "--upgrade", is_flag=True, help="Upgrade packages that are already installed.")
@click.option("-e", "--editable", is_flag=True, help="Install local folders in editable (development) mode.")
def install(packages, upgrade, editable):
    """Install plugin packages into jitprop's environment with pip.

    PACKAGES are anything pip takes: names on the package index, local
    folders, wheels.

    \b
    Examples:
      jitprop install ./plugins/jitprop-huber
      jitprop install jitprop-plot
      jitprop install -e ./jitprop-mine        # while you write it
    """
    args = ["install"] + (["--upgrade"] if upgrade else [])
    for package in packages:
        args += ["-e", package] if editable else [package]
    _pip(*args)


@click.command()
@click.argument("packages", nargs=-1, required=True)
def uninstall(packages):
    """Remove plugin packages from jitprop's environment with pip.

    \b
    Examples:
      jitprop uninstall jitprop-huber
    """
    if any(re.sub(r"[-_.]+", "-", p).lower() == "jitprop" for p in packages):
        raise ConfigError("refusing to uninstall jitprop itself from its own command; use: pip uninstall jitprop")
    _pip("uninstall", "--yes", *packages)


@click.command("new-plugin")
@click.argument("name")
@click.option("--kind", type=click.Choice(scaffold.KINDS), default="loss", show_default=True,
              help="What the plugin registers.")  # fmt: skip
@click.option("--directory", "-d", default=".", show_default=True, help="Where to create the package folder.")
def new_plugin(name, kind, directory):
    """Write a skeleton plugin package that installs, passes its tests and gradcheck.

    NAME is the name the new loss or layer is registered under (lower case,
    letters, digits, underscores); the package is jitprop-NAME, and that
    package name works as NAME too (jitprop-log-cosh registers log_cosh).

    \b
    Examples:
      jitprop new-plugin log_cosh
      jitprop install -e './jitprop-log-cosh[test]' && pytest jitprop-log-cosh
      jitprop gradcheck log_cosh
    """
    name = scaffold.registered_name(name)
    root = scaffold.write(name, kind, Path(directory))
    root = root if root.is_absolute() else f"./{root}"  # pip takes "./x" as a folder, never as a name
    click.echo(f"wrote {root}/ (a {kind} named {name!r}); next:")
    click.echo(f"  jitprop install -e '{root}[test]'")
    click.echo(f"  pytest {root}")
    click.echo(f"  jitprop gradcheck {name}")


COMMANDS = (install, uninstall, new_plugin)
