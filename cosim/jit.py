"""Compiled kernels for the layers' small sequential hot loops (issue 32), with numba.

The MoE solvers' inner loops (the follower's best response, gradient play, the Nash-gap search,
best-response iteration) and DViT's planning (VIDI's MDP build, value iteration and roll-out; the
exact DP) run thousands of numpy calls on
arrays of a few dozen numbers: numpy's per-call overhead, not arithmetic, is their cost. Each has
a numba kernel (``cosim/layers/moe/kernels.py``, ``cosim/layers/dvit/kernels.py``) that does
**the same floating-point operations in the same order** as the numpy code it replaces, so the
results are bit-identical, not merely close (tested: ``tests/test_jit.py``):

* sums along an axis follow numpy's pairwise summation (:func:`pw_sum`, the order numpy's add
  reduction uses for a contiguous row of up to 128 numbers);
* ``exp`` (and ``expm1``, ``log2``, ``pow``) is numpy's own: where numpy computes them on a
  float64 array with Intel's SVML (x86-64 with AVX-512, the Linux wheels), the kernels call the
  same SVML functions numpy links (``__svml_exp8_ha`` etc., exported symbols of numpy's
  extension); elsewhere numpy calls the C library's, and so do the kernels. Which one is decided
  once per process by probing (:func:`exact_exp`); when neither reproduces numpy bit for bit,
  the kernels are not used (the numpy code runs).

Why numba: the loops are NumPy-style code on float64 arrays, which numba compiles as written
(no C toolchain, no build step for the package, wheels for CPython 3.10-3.14 and NumPy < 2.6),
and it caches the machine code on disk (``cache=True``: compiled once per machine and source
change; a cold first run pays the compilation, ``docs/performance.md``). It is a dependency of
the light install (+~0.21 GB with llvmlite, ~4 s of pip); where it is missing the pure-numpy
code runs, with the same results.

The switch: environment variable ``COSIM_JIT`` = ``auto`` (default: the kernels where numba is
installed), ``off`` (the numpy code: for comparing, or where compiling is unwanted), ``on``
(the kernels, an error when numba is missing). numba is imported only when a kernel is first
needed, so commands that run no layer do not pay its import.

numba's cache notices an edit of a kernel module, not of :mod:`cosim._jitexp` which they call:
after editing that, delete the kernels' ``__pycache__/*.nbi`` files.
"""

from __future__ import annotations

import os

import numpy as np

from cosim.errors import CosimError

ENV = "COSIM_JIT"
MODES = ("auto", "on", "off")
#: the longest row :func:`pw_sum` reproduces numpy's sum of (numpy recurses beyond it); wider
#: problems run the numpy code
PW_BLOCK = 128

_state: dict = {}


def mode() -> str:
    """``COSIM_JIT`` (``auto`` where unset); a bad value is a one-line error naming it."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise CosimError(f"{ENV}={os.environ[ENV]!r}: expected one of {', '.join(MODES)}")
    return value


def available() -> bool:
    """numba imports (once per process; ``False`` where it is not installed)."""
    if "numba" not in _state:
        try:
            import numba  # noqa: F401
        except ImportError:
            _state["numba"] = False
        else:
            _state["numba"] = True
    return _state["numba"]


def use() -> bool:
    """Whether the kernels run now (``COSIM_JIT`` and numba's presence; read at every call, so
    a test can switch)."""
    m = mode()
    if m == "off":
        return False
    if not available():
        if m == "on":
            raise CosimError(f"{ENV}=on but numba is not installed: pip install numba (or unset {ENV})")
        return False
    return True


def exact_exp() -> int:
    """How the kernels reproduce numpy's ``exp``, ``expm1``, ``log2`` and ``pow`` on float64 arrays
    in this process: 1 = numpy's SVML functions, 0 = the C library's, -1 = neither (the kernels
    that need them stay off). Probed once: the candidates against numpy on 24,000 arguments
    (exp and expm1 over [-40, 40], log2 and pow of positive numbers over 2^-29 .. 2^29); they
    differ in the last bit on ~5% of arguments where they differ."""
    if "exp" not in _state:
        from cosim import _jitexp

        rng = np.random.default_rng(0)
        x = np.concatenate([rng.uniform(-40.0, 40.0, 20_000), np.linspace(-12.0, 12.0, 4001)])
        y = np.exp(rng.uniform(-20.0, 20.0, len(x)))
        ref = np.stack([np.exp(x), np.expm1(x), np.log2(y), y ** (x / 16.0)])
        found = -1
        for kind in ((1, 0) if _jitexp.have_svml() else (0,)):
            if np.array_equal(_jitexp.probe(x, y, kind), ref):
                found = kind
                break
        _state["exp"] = found
    return _state["exp"]
