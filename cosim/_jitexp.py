"""The numba building blocks of the kernels (imported only where numba is installed, see
:mod:`cosim.jit`): the decorator, numpy's ``exp``, ``expm1``, ``log2`` and ``pow``, numpy's
pairwise sum and a stable argsort."""

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

#: numpy's SVML functions the kernels call (8 lanes, high accuracy): exp, expm1, log2, pow
_SVML = {"exp": "__svml_exp8_ha", "expm1": "__svml_expm18_ha", "log2": "__svml_log28_ha", "pow": "__svml_pow8_ha"}


def _svml_addresses() -> dict | None:
    """The addresses of numpy's SVML functions, or None where this numpy lacks one (not an
    x86-64 Linux build)."""
    try:
        import numpy._core._multiarray_umath as umath
    except ImportError:  # numpy < 2
        import numpy.core._multiarray_umath as umath
    try:
        lib = ctypes.CDLL(umath.__file__)
        return {name: ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for name in _SVML.values()}
    except (AttributeError, OSError):
        return None


_ADDRESSES = _svml_addresses()
if _ADDRESSES is not None:
    import llvmlite.binding as llvm

    for _name, _address in _ADDRESSES.items():  # before any kernel is compiled or loaded from the cache
        llvm.add_symbol(_name, _address)


def have_svml() -> bool:
    return _ADDRESSES is not None


def _codegen(name: str, arity: int):  # noqa: ANN202
    """Call SVML function ``name`` with each argument in all 8 lanes and return lane 0 (each lane
    is computed alone, so this is numpy's value for those arguments)."""
    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        vty = ir.VectorType(ir.DoubleType(), 8)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * arity), name)
        lanes = []
        for x in args:
            v = ir.Constant(vty, ir.Undefined)
            for lane in range(8):
                v = builder.insert_element(v, x, ir.Constant(ir.IntType(32), lane))
            lanes.append(v)
        return builder.extract_element(builder.call(fn, lanes), ir.Constant(ir.IntType(32), 0))
    return codegen


@intrinsic
def _svml_exp(typingctx, x):  # noqa: ANN001, ANN202 - numba's intrinsic protocol
    return types.float64(types.float64), _codegen(_SVML["exp"], 1)


@intrinsic
def _svml_expm1(typingctx, x):  # noqa: ANN001, ANN202
    return types.float64(types.float64), _codegen(_SVML["expm1"], 1)


@intrinsic
def _svml_log2(typingctx, x):  # noqa: ANN001, ANN202
    return types.float64(types.float64), _codegen(_SVML["log2"], 1)


@intrinsic
def _svml_pow(typingctx, x, y):  # noqa: ANN001, ANN202
    return types.float64(types.float64, types.float64), _codegen(_SVML["pow"], 2)


if _ADDRESSES is not None:
    @njit
    def exp_(x: float, kind: int) -> float:
        """``np.exp`` of one float64 as numpy computes it for a contiguous array (``kind`` from
        :func:`cosim.jit.exact_exp`: 1 numpy's SVML, 0 the C library)."""
        return _svml_exp(x) if kind == 1 else math.exp(x)

    @njit
    def expm1_(x: float, kind: int) -> float:
        return _svml_expm1(x) if kind == 1 else math.expm1(x)

    @njit
    def log2_(x: float, kind: int) -> float:
        return _svml_log2(x) if kind == 1 else math.log2(x)

    @njit
    def pow_(x: float, y: float, kind: int) -> float:
        return _svml_pow(x, y) if kind == 1 else x ** y
else:
    @njit
    def exp_(x: float, kind: int) -> float:
        return math.exp(x)

    @njit
    def expm1_(x: float, kind: int) -> float:
        return math.expm1(x)

    @njit
    def log2_(x: float, kind: int) -> float:
        return math.log2(x)

    @njit
    def pow_(x: float, y: float, kind: int) -> float:
        return x ** y


@njit
def probe(x: np.ndarray, y: np.ndarray, kind: int) -> np.ndarray:
    """exp(x), expm1(x), log2(y), y ** (x / 16) by ``kind``: (4, n), to compare with numpy's."""
    out = np.empty((4, x.size))
    for i in range(x.size):
        out[0, i] = exp_(x[i], kind)
        out[1, i] = expm1_(x[i], kind)
        out[2, i] = log2_(y[i], kind)
        out[3, i] = pow_(y[i], x[i] / 16.0, kind)
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


def _codegen8(name: str, arity: int):  # noqa: ANN202
    """SVML function ``name`` on 8 lanes at once: 8 (or 2 x 8) float64 arguments in, a tuple of 8 out."""
    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        vty = ir.VectorType(ir.DoubleType(), 8)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * arity), name)
        lanes = []
        for k in range(arity):
            v = ir.Constant(vty, ir.Undefined)
            for lane in range(8):
                v = builder.insert_element(v, args[8 * k + lane], ir.Constant(ir.IntType(32), lane))
            lanes.append(v)
        r = builder.call(fn, lanes)
        return context.make_tuple(builder, signature.return_type,
                                  [builder.extract_element(r, ir.Constant(ir.IntType(32), i)) for i in range(8)])
    return codegen


_T8 = types.UniTuple(types.float64, 8)


@intrinsic
def _svml8_expm1(typingctx, a0, a1, a2, a3, a4, a5, a6, a7):  # noqa: ANN001, ANN202
    return _T8(*[types.float64] * 8), _codegen8(_SVML["expm1"], 1)


@intrinsic
def _svml8_log2(typingctx, a0, a1, a2, a3, a4, a5, a6, a7):  # noqa: ANN001, ANN202
    return _T8(*[types.float64] * 8), _codegen8(_SVML["log2"], 1)


@intrinsic
def _svml8_pow(typingctx, a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7):  # noqa: ANN001, ANN202
    return _T8(*[types.float64] * 16), _codegen8(_SVML["pow"], 2)


@njit
def vec_expm1(x: np.ndarray, out: np.ndarray, kind: int) -> None:
    """out[i] = expm1_(x[i], kind), eight at a time with SVML (the same values: lanes are independent)."""
    n = x.shape[0]
    i = 0
    if kind == 1:
        while i + 8 <= n:
            r = _svml8_expm1(x[i], x[i + 1], x[i + 2], x[i + 3], x[i + 4], x[i + 5], x[i + 6], x[i + 7])
            for k in range(8):
                out[i + k] = r[k]
            i += 8
    while i < n:
        out[i] = expm1_(x[i], kind)
        i += 1


@njit
def vec_log2(x: np.ndarray, out: np.ndarray, kind: int) -> None:
    n = x.shape[0]
    i = 0
    if kind == 1:
        while i + 8 <= n:
            r = _svml8_log2(x[i], x[i + 1], x[i + 2], x[i + 3], x[i + 4], x[i + 5], x[i + 6], x[i + 7])
            for k in range(8):
                out[i + k] = r[k]
            i += 8
    while i < n:
        out[i] = log2_(x[i], kind)
        i += 1


@njit
def vec_pow(x: np.ndarray, y: np.ndarray, out: np.ndarray, kind: int) -> None:
    n = x.shape[0]
    i = 0
    if kind == 1:
        while i + 8 <= n:
            r = _svml8_pow(x[i], x[i + 1], x[i + 2], x[i + 3], x[i + 4], x[i + 5], x[i + 6], x[i + 7],
                           y[i], y[i + 1], y[i + 2], y[i + 3], y[i + 4], y[i + 5], y[i + 6], y[i + 7])
            for k in range(8):
                out[i + k] = r[k]
            i += 8
    while i < n:
        out[i] = pow_(x[i], y[i], kind)
        i += 1
