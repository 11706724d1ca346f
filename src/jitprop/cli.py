"""The ``jitprop`` command line."""

import click

from . import __version__


@click.group()
@click.version_option(__version__, prog_name="jitprop")
def cli():
    """jitprop: train neural networks with Numba-compiled backpropagation."""
