"""The numba building blocks of the kernels (imported only where numba is installed, see
:mod:`cosim.jit`): the decorator, numpy's ``exp`` and numpy's pairwise sum."""

from __future__ import annotations

import ctypes
import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: every kernel: compiled on first use, machine code cached on disk, no fast-math (IEEE
#: arithmetic in the order written), no Python objects
njit = numba.njit(cache=True, nogil=True, error_model="numpy")

_SVML = "__svml_exp8_ha"


def _svml_address() -> int | None:
    """The address of numpy's SVML ``exp`` (8 lanes, high accuracy), or None where this numpy has
    none (not an x86-64 Linux build)."""
    try:
        import numpy._core._multiarray_umath as umath
    except ImportError:  # numpy < 2
        import numpy.core._multiarray_umath as umath
    try:
        fn = getattr(ctypes.CDLL(umath.__file__), _SVML)
    except (AttributeError, OSError):
        return None
    return ctypes.cast(fn, ctypes.c_void_p).value


_ADDRESS = _svml_address()
if _ADDRESS is not None:
    import llvmlite.binding as llvm

    llvm.add_symbol(_SVML, _ADDRESS)  # before any kernel is compiled or loaded from the cache


def have_svml() -> bool:
    return _ADDRESS is not None


@intrinsic
def _svml_exp(typingctx, x):  # noqa: ANN001, ANN202 - numba's intrinsic protocol
    """exp(x) by numpy's SVML function: x in all 8 lanes, lane 0 back (each lane is computed
    alone, so this is np.exp's value for x)."""
    sig = types.float64(types.float64)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        vty = ir.VectorType(ir.DoubleType(), 8)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty]), _SVML)
        v = ir.Constant(vty, ir.Undefined)
        for lane in range(8):
            v = builder.insert_element(v, args[0], ir.Constant(ir.IntType(32), lane))
        return builder.extract_element(builder.call(fn, [v]), ir.Constant(ir.IntType(32), 0))

    return sig, codegen


if _ADDRESS is not None:
    @njit
    def exp_(x: float, kind: int) -> float:
        """``np.exp`` of one float64 as numpy computes it for an array (``kind`` from
        :func:`cosim.jit.exact_exp`)."""
        if kind == 1:
            return _svml_exp(x)
        return math.exp(x)
else:
    @njit
    def exp_(x: float, kind: int) -> float:
        return math.exp(x)


@njit
def probe(x: np.ndarray, kind: int) -> np.ndarray:
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = exp_(x[i], kind)
    return out


@njit
def pw_sum(a: np.ndarray, n: int) -> float:
    """``a[:n].sum()`` as numpy sums a contiguous float64 row (n <= 128): from 0, one
    accumulator below 8 numbers, else 8 accumulators combined pairwise and the rest added."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[i]
        return 0.0 + res
    r0, r1, r2, r3, r4, r5, r6, r7 = a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
    i = 8
    lim = n - n % 8
    while i < lim:
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[i]
        i += 1
    return 0.0 + res


@njit
def argsort_stable(a: np.ndarray) -> np.ndarray:
    """``np.argsort(a, kind="stable")`` for the short rows of the kernels (no NaN): insertion
    sort, ties in index order. (numba's own sorts cost ~1.3 s of compilation each.)"""
    n = a.shape[0]
    idx = np.arange(n)
    for i in range(1, n):
        k = idx[i]
        v = a[k]
        j = i - 1
        while j >= 0 and a[idx[j]] > v:
            idx[j + 1] = idx[j]
            j -= 1
        idx[j + 1] = k
    return idx
