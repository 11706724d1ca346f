"""The package's shape: imports flow one way, importing the CLI only defines commands, old paths still work."""

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import jitprop

ROOT = Path(jitprop.__file__).parent


def module_graph():
    """module -> the jitprop modules it imports at module level (a package only for names it defines)."""
    def name(path):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name(p): p for p in ROOT.rglob("*.py")}
    graph = defaultdict(set)
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []) if node.level else [node.module]
                target = ".".join(base)
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    graph[module].add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                graph[module].update(a.name for a in node.names)
    return {m: {t for t in targets if t in modules and t != m} for m, targets in graph.items()}, set(modules)


def test_no_module_imports_itself_back_at_module_level():
    graph, modules = module_graph()
    assert len(modules) > 40  # the walk found the package
    cycles = []

    def walk(start, node, path):
        for nxt in graph.get(node, ()):
            if nxt == start:
                cycles.append(" -> ".join(path + [start]))
            elif nxt not in path:
                walk(start, nxt, path + [nxt])

    for module in modules:
        walk(module, module, [module])
    assert not cycles, cycles[:5]


def test_importing_the_command_line_defines_commands_and_does_nothing_else():
    code = """
import sys, warnings
before = warnings.showwarning
import jitprop.cli
import jitprop.plugins.manager as manager
assert not manager._loaded, "importing the CLI loaded plugins"
assert warnings.showwarning is before, "importing the CLI replaced warnings.showwarning"
assert "train" in jitprop.cli.cli.commands
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_module_paths_plugins_used_before_the_subpackages_still_import():
    code = """
import jitprop.checkpoint, jitprop.registry, jitprop.components, jitprop.cuda_launch, jitprop.gradcheck, jitprop.testing
from jitprop.registry import lookup
from jitprop.checkpoint import atomic_write, load, save
from jitprop.cli import cli, add_plugin_commands
assert lookup("layer", "dense").name == "dense"
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
