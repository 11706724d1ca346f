"""The geometry of a sliding window over (channels, height, width) samples: conv2d's and the pools'.

Options take an int or a (height, width) pair, as torch's do. The kernels
read the geometry from ``h`` (one compiled kernel per dtype, whatever the
shape), laid out as ``GEOMETRY`` names it.
"""

from numba import njit

from jitprop.errors import ConfigError

#: The slots of ``h`` that ``geometry`` reads: the input's shape and the window's.
GEOMETRY = ("channels", "height", "width", "kernel_h", "kernel_w", "stride_h", "stride_w", "padding_h", "padding_w")


def pair(name, value, owner, minimum):
    """An int or a pair of ints (height, width), each >= ``minimum``, as a tuple of two."""
    values = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (list, tuple)) else None
    if (
        values is None
        or len(values) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values)
    ):
        raise ConfigError(f"{owner}: {name} must be an integer >= {minimum} or a pair of them (height, width), got {value!r}")
    return values


def image_shape(in_shape):
    """``in_shape`` as (channels, height, width), or a one-line error saying what the layer needs."""
    if len(in_shape) != 3:
        shown = "x".join(map(str, in_shape))
        raise ConfigError(
            f"takes samples of shape (channels, height, width), got {shown}; give the model input_shape=(C, H, W)"
            if len(in_shape) == 1
            else f"takes samples of shape (channels, height, width), got {shown}"
        )
    return in_shape


def out_hw(height, width, kernel, stride, padding):
    """Output (height, width) by torch's floor rule, or an error when the window does not fit."""
    ph, pw = height + 2 * padding[0], width + 2 * padding[1]
    if kernel[0] > ph or kernel[1] > pw:
        size = str(kernel[0]) if kernel[0] == kernel[1] else f"{kernel[0]}x{kernel[1]}"
        padded = "padded " if any(padding) else ""
        raise ConfigError(f"kernel {size} is larger than its {padded}input {ph}x{pw}")
    return (ph - kernel[0]) // stride[0] + 1, (pw - kernel[1]) // stride[1] + 1


def window_hyper(layer):
    """The ``GEOMETRY`` values of a built layer with ``kernel_size``, ``stride`` and ``padding``."""
    return (*layer.in_shape, *layer.kernel_size, *layer.stride, *layer.padding)


@njit(cache=True)
def geometry(h):
    """(channels, height, width, kh, kw, sh, sw, ph, pw, out_h, out_w) from ``h``."""
    c, height, width = int(h[0]), int(h[1]), int(h[2])
    kh, kw, sh, sw, ph, pw = int(h[3]), int(h[4]), int(h[5]), int(h[6]), int(h[7]), int(h[8])
    return c, height, width, kh, kw, sh, sw, ph, pw, (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
