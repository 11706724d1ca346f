"""Small njit helpers every backend shares: batch gathering, seeds, each epoch's order, the finiteness check,
the views of the flat buffers, and ``fast_exp`` for CPU kernels.

The scalar functions here (``splitmix``, ``seed_mix``, ``epoch_key``,
``feistel``, ``permuted``, ``uniform``) are the only definitions of
jitprop's random numbers: CPU kernels call them, and so do the CUDA
kernels, which Numba compiles them into for the device. So a GPU run draws
the same orders and dropout masks.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic, overload
from numba.np.arrayobj import make_array, populate_array

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True)
def gather_rows(src, idx, start, dst):
    """dst[r, :] = src[idx[start + r], :] for every row r of dst: one shuffled batch.

    Element loops rather than ``dst[r] = src[...]``: the same machine code, and
    Numba compiles it in a fraction of the time array assignment takes.
    """
    for r in range(dst.shape[0]):
        i = idx[start + r]
        for j in range(dst.shape[1]):
            dst[r, j] = src[i, j]


@njit(cache=True)
def gather_items(src, idx, start, dst):
    """dst[r] = src[idx[start + r]]: the labels of one shuffled batch."""
    for r in range(dst.shape[0]):
        dst[r] = src[idx[start + r]]


def gather(array):
    """The gather kernel for an array of this many dimensions."""
    return gather_rows if array.ndim == 2 else gather_items


@njit(cache=True)
def splitmix(z):
    """splitmix64's finaliser: a uint64 scrambled so that nearby inputs give unrelated outputs."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def seed_mix(a, b):
    """A 64-bit seed from two integers (two splitmix64 steps): one per (run, iteration), (iteration, layer)."""
    z = splitmix(np.uint64(a) + _GOLDEN)
    return splitmix(z + np.uint64(b) + _GOLDEN)


@njit(cache=True)
def uniform(seed, i):
    """A uniform number in [0, 1) from (seed, i): element i's draw in dropout's mask."""
    z = splitmix(seed + np.uint64(i) * _GOLDEN)
    return (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def scale(a, factor):
    """a *= factor, for a 2-D array (a rank's loss gradient, weighted by its share of the batch)."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            a[i, j] *= factor


@njit(cache=True)
def row_seed(seed, row, width):
    """The seed under which ``uniform(row_seed(seed, row, width), k)`` is ``uniform(seed, row * width + k)``:
    a rank that holds a batch's rows from ``row`` on draws the masks of the whole batch's rows."""
    return seed + np.uint64(row * width) * _GOLDEN


def mix_seed(a, b=0):
    """A uint64 seed from two integers, the same in the Python loop and in compiled code."""
    return np.uint64(seed_mix(np.uint64(a), np.uint64(b)))  # numba returns a Python int


SHUFFLE_STREAM = 0x5348554646  # keeps shuffle keys apart from the dropout seeds of the same run


@njit(cache=True)
def epoch_key(seed, epoch):
    """The permutation key of one epoch: a function of (seed, epoch) only, so any device can draw it."""
    return seed_mix(seed_mix(np.uint64(seed), np.uint64(epoch)), np.uint64(SHUFFLE_STREAM))


def shuffle_key(seed, epoch):
    """``epoch_key`` from Python, as a NumPy uint64 (numba returns a Python int)."""
    return np.uint64(epoch_key(seed, epoch))


@njit(cache=True)
def feistel_bits(n):
    """Bits of the smallest power of two >= n (at least 1): the permutation's domain."""
    bits = 1
    while (1 << bits) < n:
        bits += 1
    return bits


@njit(cache=True)
def epoch_shuffle(seed, epoch, index):
    """``shuffle_order(shuffle_key(seed, epoch), feistel_bits(n), index)`` in one compiled call: the
    three calls from Python cost more than drawing a small data set's order (S's 1,437 rows)."""
    shuffle_order(epoch_key(seed, epoch), feistel_bits(index.shape[0]), index)


@njit(cache=True)
def shuffle_order(key, bits, index):
    """index[i] = the i-th element of a pseudo-random permutation of 0..n-1 drawn from ``key``.

    A Feistel network on ``bits`` bits (unbalanced when ``bits`` is odd: each
    round XORs one part with a splitmix64 hash of the other, which keeps it a
    bijection; four rounds, 24 for 64 rows or fewer, where few rounds would
    reach some orders more often than others) permutes [0, 2^bits), at most 2n
    values; walking each i along its cycle until it lands below n makes it a
    permutation of [0, n). Every element can be computed on its own
    (``permuted``), so a GPU draws the same order in parallel with no sort and
    no random state to carry between epochs. Here the network's image of the
    whole domain comes first, in one branch-free loop the compiler vectorises
    (5x faster than walking each element: 4 us for 1,437 rows, 0.1 ms for
    60,000), and the walks then look it up; the same order as ``permuted``.
    """
    n = index.shape[0]
    image = np.empty(1 << bits, np.uint64)
    if bits > 6:  # the rounds a compile-time constant, so the loop unrolls and vectorises
        for x in range(image.shape[0]):
            image[x] = feistel(np.uint64(x), key, bits, 4)
    else:
        for x in range(image.shape[0]):
            image[x] = feistel(np.uint64(x), key, bits, 24)
    for i in range(n):
        x = image[i]
        while x >= np.uint64(n):
            x = image[x]
        index[i] = np.int64(x)


@njit(cache=True)
def feistel(x, key, bits, rounds):
    """The Feistel network's permutation of [0, 2^bits), applied to x once."""
    low = np.uint64(bits - bits // 2)  # bits of the right part; the left part has the rest
    mask_left = (np.uint64(1) << np.uint64(bits // 2)) - np.uint64(1)
    mask_right = (np.uint64(1) << low) - np.uint64(1)
    x = np.uint64(x)  # called from plain Python (the CUDA simulator), x comes back as an int
    left = x >> low
    right = x & mask_right
    for r in range(rounds):
        if r % 2 == 0:
            left ^= splitmix(right + key + np.uint64(r) * _GOLDEN) & mask_left
        else:
            right ^= splitmix(left + key + np.uint64(r) * _GOLDEN) & mask_right
    return (left << low) | right


@njit(cache=True)
def permuted(i, n, key, bits):
    """Element i of the permutation of 0..n-1 that ``shuffle_order`` draws (one element alone)."""
    rounds = 4 if bits > 6 else 24  # tiny domains need more rounds to reach every order evenly
    x = np.uint64(i)
    while True:
        x = feistel(x, key, bits, rounds)
        if x < np.uint64(n):
            return np.int64(x)


@njit(cache=True, fastmath={"reassoc"})
def all_finite(a):
    """True when no element of the 1-D array ``a`` is NaN or infinite.

    ``x - x`` is 0 for every finite x and NaN otherwise, so one branch-free sum
    answers for the whole gradient buffer. Reassociation (and only that: no
    "no-NaN" assumption) lets the sum vectorise; summing exact zeros in the
    array's own dtype loses nothing. Without it the sum is one long chain of
    dependent adds: 18% of a small model's step.
    """
    acc = a.dtype.type(0.0)
    for i in range(a.shape[0]):
        acc += a[i] - a[i]
    return acc == 0.0


# -- exp for the CPU kernels -----------------------------------------------------
# math.exp on a float32 is a call of the C library's expf, one value at a time: 320 of them were
# 1.1 us of S's 1.8 us loss. fast_exp computes a float32's exp in float64 arithmetic the compiler
# vectorises (0.3 us): x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor series to r^12
# (truncation below 1e-14 relative), times 2^n built from its bits. The float64 result is within
# 1e-14 of the true value, so rounding it gives the correctly rounded float32 but in the rare
# cases where that lies within 1e-14 of a rounding boundary: it equals expf's (itself within
# 0.502 ulp) in 99.94% of float32 inputs and is never more than 1 ulp from it. float64 values
# keep math.exp.

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693147180369123816490  # 0x3FE62E42FEE00000: its trailing zeros keep n * _LN2_HI exact
_LN2_LO = 1.90821492927058770002e-10
_INV_FACTORIAL = tuple(1.0 / math.factorial(k) for k in range(13))


@intrinsic
def _bits_as_float64(typingctx, bits):
    """The float64 whose bits are the int64 ``bits``."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


def fast_exp(x):
    """exp(x) for the CPU kernels: a float32's computed in vectorisable float64 arithmetic (within 1 ulp
    of math.exp, equal to it for 99.94% of inputs), a float64's by math.exp. Called from Python,
    math.exp itself."""
    return math.exp(x)


@njit(cache=True, fastmath={"contract"})  # fused multiply-adds in the polynomial
def _exp_float32(x):
    v = np.float64(x)
    if v < -110.0:  # exp is 0 in float32 below about -104: clamp so 2^n stays a normal float64
        v = -110.0
    elif v > 89.0:  # inf in float32 above about 88.7
        v = 89.0
    n = math.floor(v * _LOG2E + 0.5)
    if v != v:  # NaN stays NaN (through r); n must still convert to an integer
        n = 0.0
    r = (v - n * _LN2_HI) - n * _LN2_LO
    c = _INV_FACTORIAL
    p = c[12]
    p = p * r + c[11]
    p = p * r + c[10]
    p = p * r + c[9]
    p = p * r + c[8]
    p = p * r + c[7]
    p = p * r + c[6]
    p = p * r + c[5]
    p = p * r + c[4]
    p = p * r + c[3]
    p = p * r + c[2]
    p = p * r + 1.0
    p = p * r + 1.0
    return np.float32(p * _bits_as_float64((np.int64(n) + 1023) << 52))


@overload(fast_exp)
def _fast_exp(x):
    if isinstance(x, types.Float):
        return (lambda x: _exp_float32(x)) if x.bitwidth == 32 else (lambda x: math.exp(x))
    return None


def _view(ndim):
    """An intrinsic ``(buffer, start, a, b)`` that views the flat, C-contiguous ``buffer`` from
    element ``start``: as ``a`` values (``ndim`` 1, ``b`` unused) or ``a`` rows of ``b`` (2)."""

    @intrinsic
    def view(typingctx, buffer, start, a, b):
        if not (isinstance(buffer, types.Array) and buffer.ndim == 1 and buffer.layout == "C"):
            return None
        sig = buffer.copy(ndim=ndim, layout="C")(buffer, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            buf, start, a, b = args
            src = make_array(signature.args[0])(context, builder, buf)
            out = make_array(signature.return_type)(context, builder)
            size = src.itemsize
            shape, strides = ([a], [size]) if ndim == 1 else ([a, b], [builder.mul(b, size), size])
            # No meminfo: the view lives only during the step's call, which holds the buffer itself,
            # so it needs no reference counting (two atomic operations per view saved).
            populate_array(out, data=builder.gep(src.data, [start]), shape=shape, strides=strides, itemsize=size,
                           meminfo=None)  # fmt: skip
            return impl_ret_borrowed(context, builder, signature.return_type, out._getvalue())

        return sig, codegen

    return view


# How the compiled step cuts each layer's arrays out of flat buffers (backends/layout.py):
# ``rows_of(buffer, start, rows, width)``, the first ``rows`` rows of the (capacity, width) block
# that starts at element ``start``, and ``part_of(buffer, start, size, 0)``, ``size`` values from
# ``start``. Intrinsics because ``buffer[a:b].reshape(...)`` costs 25 ns a view (a call into Numba's
# reshape helper), about 10 times these, and a 41-layer step cuts 500 views a batch. Inside compiled
# code only (Python cannot call them), and never returned or kept: the views hold no reference to
# their buffer. The caller promises that the block fits (``layout.table`` checks it when it is
# made): nothing is checked here.
rows_of = _view(2)
part_of = _view(1)

#: Columns of ``where``, the table of a flat buffer of activations (``activation``).
ACT_START, ACT_ROWS, ACT_WIDTH = 0, 1, 2


@njit(cache=True)
def activation(acts, where, i):
    """Activation ``i`` of a batch kept in the flat buffer ``acts`` (0 the input, i + 1 layer i's
    output), a (rows, width) view: ``where[i]`` holds its start, rows and width. How a gradient
    transform that sees activations reads them (contracts/transforms.py)."""
    start, rows, width = where[i, ACT_START], where[i, ACT_ROWS], where[i, ACT_WIDTH]
    return acts[start : start + rows * width].reshape((rows, width))


def pack_activations(arrays):
    """``(acts, where)`` holding copies of the 2-D ``arrays`` one after another, as a transform
    that sees activations receives them (to call its kernel by hand, in a test say)."""
    arrays = [np.ascontiguousarray(a) for a in arrays]
    where = np.zeros((len(arrays), 3), np.int64)
    start = 0
    for i, a in enumerate(arrays):
        where[i] = start, a.shape[0], a.shape[1]
        start += a.size
    acts = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0)
    return acts, where
