"""The ``jitprop`` command line: commands (main.py), progress output, runs resolved against their data
(run.py), plugin management (manage.py) and skeletons (scaffold.py)."""

from .main import EpochPrinter, ProgressBar, add_plugin_commands, cli, main  # noqa: F401
