"""Ready layer stacks for common cases, as ``jitprop train --model NAME`` names them.

Each function takes the output width (the data's classes or target values)
and returns layer specs (``{"name": ..., **options}``), the form run files
and ``Sequential.from_config`` use, so ``--print-config`` shows the stack
in full and any of it can be edited.
"""


def mlp(outputs, hidden=(128, 64), activation="relu", dropout=0.0):
    """Dense layers of the ``hidden`` widths, each followed by ``activation`` (and dropout)."""
    layers = []
    for width in hidden:
        layers.append({"name": "dense", "units": width})
        layers.append({"name": activation})
        if dropout:
            layers.append({"name": "dropout", "rate": dropout})
    layers.append({"name": "dense", "units": outputs})
    return layers


def cnn(outputs):
    """A small CNN for small images (8x8 digits): two 3x3 convolutions of 16 and 32 channels, each
    with ReLU and 2x2 max pooling, then one dense layer."""
    return [
        {"name": "conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1},
        {"name": "relu"},
        {"name": "max_pool2d", "kernel_size": 2},
        {"name": "conv2d", "out_channels": 32, "kernel_size": 3, "padding": 1},
        {"name": "relu"},
        {"name": "max_pool2d", "kernel_size": 2},
        {"name": "flatten"},
        {"name": "dense", "units": outputs},
    ]


def lenet(outputs):
    """LeNet-5 (LeCun et al. 1998) as usually built today for 28x28 digits: 6 5x5 filters with padding 2,
    16 5x5 filters, each with ReLU and 2x2 max pooling, then dense layers of 120 and 84 units."""
    return [
        {"name": "conv2d", "out_channels": 6, "kernel_size": 5, "padding": 2},
        {"name": "relu"},
        {"name": "max_pool2d", "kernel_size": 2},
        {"name": "conv2d", "out_channels": 16, "kernel_size": 5},
        {"name": "relu"},
        {"name": "max_pool2d", "kernel_size": 2},
        {"name": "flatten"},
        {"name": "dense", "units": 120},
        {"name": "relu"},
        {"name": "dense", "units": 84},
        {"name": "relu"},
        {"name": "dense", "units": outputs},
    ]


ARCHITECTURES = {"mlp": mlp, "cnn": cnn, "lenet": lenet}
