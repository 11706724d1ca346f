"""``MPI_Allreduce`` called from compiled code: the data-parallel step's one collective.

Numba cannot call mpi4py from ``@njit`` code, and numba-mpi (GPL-3) has no
in-place allreduce. MPI's C function is reachable all the same: mpi4py has
loaded the MPI library, so the address of its ``MPI_Allreduce`` is known,
and an intrinsic calls through it. The address, ``MPI_IN_PLACE`` and the
handles (datatype, operation, communicator) are arguments rather than
constants, so the generated step is cached like any other: a baked-in
address would not survive the process. MPICH's handles are 32-bit integers
and Open MPI's are pointers; the type of the argument says which.

Importing this module needs Numba only; ``handles`` needs mpi4py.
"""

import ctypes
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def allreduce_sum(typingctx, fn, place, buf, dtype, op, comm):
    """``MPI_Allreduce(place, buf.data, buf.size, dtype, op, comm)`` through the address ``fn``
    (``place`` is ``MPI_IN_PLACE``): the MPI error code."""
    if not isinstance(buf, types.Array) or not all(isinstance(t, types.Integer) for t in (fn, place, dtype, op, comm)):
        return None
    sig = types.int32(fn, place, buf, dtype, op, comm)

    def codegen(context, builder, signature, args):
        fn_v, place_v, buf_v, dtype_v, op_v, comm_v = args
        void_p = ir.IntType(8).as_pointer()
        handle = [ir.IntType(t.bitwidth) for t in signature.args[3:]]
        fnty = ir.FunctionType(ir.IntType(32), [void_p, void_p, ir.IntType(32), *handle])
        array = context.make_array(signature.args[2])(context, builder, buf_v)
        count = builder.trunc(array.nitems, ir.IntType(32))
        callee = builder.inttoptr(fn_v, fnty.as_pointer())
        sendbuf = builder.inttoptr(place_v, void_p)
        return builder.call(callee, [sendbuf, builder.bitcast(array.data, void_p), count, dtype_v, op_v, comm_v])

    return sig, codegen


class Handles(NamedTuple):
    """What the compiled step passes to ``allreduce_sum``: a sum over ``comm`` of one dtype."""

    fn: np.int64
    place: np.int64
    dtype: np.integer
    op: np.integer
    comm: np.integer


def handles(comm, dtype):
    """The ``Handles`` for summing arrays of ``dtype`` (float32 or float64) over mpi4py's ``comm``."""
    from mpi4py import MPI

    lib = ctypes.CDLL(MPI.__file__)  # the extension module: its MPI library resolves the symbol
    fn = ctypes.cast(lib.MPI_Allreduce, ctypes.c_void_p).value

    def handle(obj):  # as wide as the MPI library's handle of that kind, in its bits
        width = 32 if MPI._sizeof(type(obj)) == 4 else 64
        value = MPI._handleof(obj) % (1 << width)  # mpi4py gives it unsigned: MPICH's own are above 2**31
        signed = value - (1 << width) if value >= 1 << (width - 1) else value
        return (np.int32 if width == 32 else np.int64)(signed)

    kind = MPI.DOUBLE if np.dtype(dtype) == np.float64 else MPI.FLOAT
    return Handles(np.int64(fn), np.int64(int(MPI.IN_PLACE)), handle(kind), handle(MPI.SUM), handle(comm))
