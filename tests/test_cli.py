import subprocess
import sys

from click.testing import CliRunner

import jitprop
from jitprop.cli import cli


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and jitprop.__version__ in result.output


def test_installed_command_runs():
    out = subprocess.run([sys.executable, "-m", "jitprop", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "jitprop, version" in out.stdout
