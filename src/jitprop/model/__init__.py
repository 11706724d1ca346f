"""The model: ``Sequential`` with its flat parameter and state buffers, workspaces, initializers."""

from .sequential import Sequential, Workspace  # noqa: F401
