"""jitprop-onnx: a trained jitprop model as an ONNX file, for onnxruntime and every other ONNX runtime.

Adds the command ``jitprop export CHECKPOINT [-o model.onnx]`` through the
hook ``register_commands``, from the entry point ``onnx`` of the group
``jitprop``. The graph takes raw feature rows (the input standardisation
folded in) and gives the outputs, and for a classifier the probabilities,
the class index and the class name; the class and feature names ride in the
model's metadata. From Python: ``jitprop_onnx.convert(model, loss, ...)``
and ``jitprop_onnx.from_checkpoint(path)``.

A layer from another plugin gets exported through a ``to_onnx(graph, x,
weights)`` method on its class or a function registered with
``@jitprop_onnx.converter(name)``: see ``graph.py``.
"""

import os

import click

import jitprop

from . import conversions  # noqa: F401  (registers the conversions of jitprop's layers and jitprop-batchnorm's)
from .graph import CONVERTERS, OPSET, Graph, converter

__version__ = "0.1.0"
__all__ = ["CONVERTERS", "OPSET", "Exported", "Graph", "convert", "converter", "from_checkpoint", "session"]


def __getattr__(name):
    """``convert``, ``from_checkpoint``, ``session`` and ``Exported`` import onnx: only when asked for."""
    if name in ("Exported", "convert", "from_checkpoint", "session"):
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module 'jitprop_onnx' has no attribute {name!r}")


@click.command("export")
@click.argument("checkpoint", metavar="CHECKPOINT")
@click.option("-o", "--output", help="ONNX file to write, replaced if it exists.  [default: CHECKPOINT, suffix .onnx]")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Run the export in onnxruntime on 64 random rows against jitprop before writing it.")  # fmt: skip
def export_command(checkpoint, output, check):
    """Export a checkpoint's model to ONNX, to run it without jitprop.

    The graph takes what `jitprop predict` takes, raw feature rows (float32,
    one row per sample, image pixels flattened), standardises them as
    training did, and gives `output` (the model's outputs); a classifier's
    also gives `probabilities`, `class` (the index) and `label` (the class
    name). Class names, feature names and the jitprop version are in the
    model's metadata. The file is checked by onnx's checker and, unless
    --no-check, run in onnxruntime against jitprop; it is written
    atomically, so a failed export leaves what was there.

    \b
    Examples:
      jitprop train --dataset flowers.csv --target species --checkpoint model.npz
      jitprop export model.npz                  # writes model.onnx
      jitprop export runs/cnn.npz -o cnn.onnx
    """
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(f"jitprop export needs onnx and onnxruntime ({exc}): pip install onnx onnxruntime") from None
    from . import export as exporting

    output = output or exporting.default_output(checkpoint)
    exporting.check_output(output, checkpoint)
    model, exported = exporting.from_checkpoint(checkpoint, check=check)
    replaced = os.path.exists(output)
    exported.save(output)
    size = exporting.size_text(os.path.getsize(output))
    shape = "x".join(map(str, model.input_shape))
    rows = f"rows of {model.input_dim} raw values" + (f" ({shape} samples, flattened)" if len(model.input_shape) > 1 else "")
    folded = ", standardised inside" if exported.metadata.get("normalization", "none") != "none" else ""
    click.echo(f"{'replaced' if replaced else 'wrote'} {output} ({size}): {len(model.layers)} layers as {exported.nodes}"
               f" ONNX operators (opset {OPSET}); input: {rows}{folded}; outputs: {', '.join(exported.outputs)}")  # fmt: skip
    if check:
        click.echo(f"checked: onnxruntime gives jitprop's outputs on {exporting.CHECK_ROWS} random rows"
                   f" (largest difference {exported.difference:.1e})")  # fmt: skip


@jitprop.hookimpl
def register_commands(cli):
    cli.add_command(export_command)
