"""jitprop new-plugin, install and uninstall (the pip round trip itself is in test_e2e_plugins)."""

import importlib
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import jitprop
from jitprop.cli import cli
from jitprop.gradcheck import check_layer, check_loss

JITPROP = os.path.join(os.path.dirname(sys.executable), "jitprop")


@pytest.mark.parametrize("kind", ["loss", "layer"])
def test_new_plugin_writes_a_skeleton_whose_kernels_pass_gradcheck(tmp_path, monkeypatch, register_plugin, kind):
    result = CliRunner().invoke(cli, ["new-plugin", f"my_{kind}", "--kind", kind, "-d", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / f"jitprop-my-{kind}"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "README.md", f"jitprop_my_{kind}/__init__.py", f"jitprop_my_{kind}/cuda.py", "pyproject.toml",
        f"tests/test_my_{kind}.py"]  # fmt: skip
    assert f'my_{kind} = "jitprop_my_{kind}"' in (root / "pyproject.toml").read_text()
    for text in ((root / "README.md").read_text(), (root / "pyproject.toml").read_text()):  # named for itself
        assert f"The my_{kind} {kind} for jitprop" in text and "parametric ReLU layer for" not in text
    assert f'"jitprop_my_{kind}.cuda:my_{kind}_' in (root / f"jitprop_my_{kind}" / "__init__.py").read_text()
    monkeypatch.syspath_prepend(str(root))
    register_plugin(importlib.import_module(f"jitprop_my_{kind}"), name=f"my_{kind}")
    if kind == "loss":
        assert check_loss("my_loss")["pred"] < 1e-6
    else:
        assert max(check_layer("my_layer").values()) < 1e-6
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


@pytest.mark.parametrize("args, message", [
    (["new-plugin", "Bad-Name"], "must be lower case letters"),
    (["new-plugin", "mse"], "loss 'mse' already exists (from plugin 'jitprop.default_plugins.losses')"),
    (["new-plugin", "relu", "--kind", "layer"], "layer 'relu' already exists"),
    (["uninstall", "jitprop"], "refusing to uninstall jitprop itself"),
    (["uninstall", "JitProp"], "refusing to uninstall jitprop itself"),
])  # fmt: skip
def test_plugin_commands_refuse_mistakes_in_one_line(tmp_path, args, message):
    result = CliRunner().invoke(cli, args + (["-d", str(tmp_path)] if args[0] == "new-plugin" else []))
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and message in result.output and result.output.count("\n") == 1


@pytest.mark.parametrize("typed", ["jitprop-log-cosh", "jitprop_log_cosh"])
def test_new_plugin_takes_the_package_name_too(tmp_path, typed):
    result = CliRunner().invoke(cli, ["new-plugin", typed, "-d", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "(a loss named 'log_cosh')" in result.output
    assert 'log_cosh = "jitprop_log_cosh"' in (tmp_path / "jitprop-log-cosh" / "pyproject.toml").read_text()


def test_new_plugin_never_overwrites(tmp_path):
    (tmp_path / "jitprop-mine").mkdir()
    (tmp_path / "jitprop-mine" / "notes.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["new-plugin", "mine", "-d", str(tmp_path)])
    assert result.exit_code == 1 and "already exists; nothing was written" in result.output
    assert [p.name for p in (tmp_path / "jitprop-mine").iterdir()] == ["notes.txt"]


def test_a_failing_pip_is_one_line_after_pips_own_messages(tmp_path):
    out = subprocess.run([JITPROP, "install", str(tmp_path / "no-such-plugin")], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == "Error: pip install failed (exit status 1); pip's messages above say why"
    assert "Traceback" not in out.stderr


def test_a_plugin_whose_commands_fail_is_one_line_and_the_rest_stay(register_plugin, capsys, monkeypatch):
    import click

    from jitprop.cli import add_plugin_commands

    class BadCommands:
        @jitprop.hookimpl
        def register_commands(self, cli):
            raise RuntimeError("no commands today")

    class GoodCommands:
        @jitprop.hookimpl
        def register_commands(self, cli):
            cli.add_command(click.Command("hello", callback=lambda: None))

    register_plugin(BadCommands(), name="bad-commands")
    register_plugin(GoodCommands(), name="good-commands")
    group = click.Group()
    add_plugin_commands(group)
    assert "hello" in group.commands
    err = capsys.readouterr().err
    assert err == "jitprop: plugin 'bad-commands' failed to add its commands: RuntimeError: no commands today\n"
    monkeypatch.setenv("JITPROP_STRICT_PLUGINS", "1")
    with pytest.raises(jitprop.JitpropError, match=r"^plugin 'bad-commands' failed to add its commands: .*STRICT"):
        add_plugin_commands(click.Group())
