"""The statistics every comparison cosim prints is made of: paired per-seed differences, their
Student-t 95 % interval, a two-sided paired t-test and Holm's correction for a family of them.

A comparison of two policies in cosim is always *paired*: both served the same traffic and the
same requests in one run (one seed), so the per-seed difference ``d_s = policy_s - baseline_s``
removes what the seeds share. Over the ``n`` seeds where ``d_s`` is finite:

* ``diff`` = mean(d), ``ci95`` = t_{0.975, n-1} * sd(d) / sqrt(n) — the **half-width** of the
  95 % interval (the interval is ``diff ± ci95``);
* ``p`` = the two-sided p-value of the paired t-test of mean(d) = 0 (n - 1 degrees of freedom);
* ``p_holm`` = Holm–Bonferroni adjusted p-values over a family of such comparisons (in a sweep:
  every policy compared with the baseline on one metric, for one scenario, grid point and layer):
  reject at level a where ``p_holm <= a`` and the family-wise error rate is at most a.

The t distribution's tail is computed here (a regularised incomplete beta function by its
continued fraction) so that cosim needs no SciPy; tests check it against closed forms.
"""

from __future__ import annotations

import functools
import math
from typing import Iterable, Sequence

import numpy as np

@functools.lru_cache(maxsize=4096)
def t95(dof: float) -> float:
    """The two-sided 95 % quantile of Student's t with ``dof`` degrees of freedom: the ``t`` with
    ``t_two_sided_p(t, dof) = 0.05``, found by bisection on the tail below (~1e-14 relative up to
    10^3 dof, ~1e-10 at 10^6, where the tail's lgamma prefactor cancels; checked against SciPy),
    so an interval excludes 0 exactly when ``p < 0.05``. It used to be a 3-decimal table up to 30 dof and the normal's 1.96 beyond — 1.2 % too narrow at 100 dof,
    3.9 % at 31 (docs/comparisons.md, "changes this protocol made to the numbers")."""
    if not dof > 0:
        raise ValueError(f"t95: degrees of freedom must be > 0, got {dof!r}")
    lo, hi = 1.959963984540054, 2.0  # the normal's quantile: every t quantile lies above it
    while t_two_sided_p(hi, dof) > 0.05:  # the tail falls as t grows: double until it is below 0.05
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):  # adjacent floats: converged
            break
        if t_two_sided_p(mid, dof) > 0.05:
            lo = mid
        else:
            hi = mid
    return hi


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz), converged to 1e-15."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):  # the fraction converges fast here; else use the symmetry
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, dof: float) -> float:
    """P(|T| >= |t|) for Student's t with ``dof`` degrees of freedom."""
    if not math.isfinite(t):
        return 0.0 if not math.isnan(t) else math.nan
    return betainc(dof / 2.0, 0.5, dof / (dof + t * t))


def mean_ci(d: Iterable[float]) -> dict[str, float]:
    """Mean, 95 % half-width, n and the two-sided one-sample t-test p-value (mean = 0) of ``d`` —
    for per-seed paired differences, the paired t-test. Non-finite values are dropped and n counts
    the rest. With n < 2 the interval and p are NaN; with every value equal, the interval is 0 and
    p is 0 (a nonzero mean) or 1 (all zero)."""
    v = np.asarray(list(d), dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    out = {"mean": float(v.mean()) if n else math.nan, "ci95": math.nan, "n": n, "p": math.nan}
    if n > 1:
        mean, sd = float(v.mean()), float(v.std(ddof=1))
        out["ci95"] = t95(n - 1) * sd / math.sqrt(n)
        if sd > 0:
            out["p"] = t_two_sided_p(mean / (sd / math.sqrt(n)), n - 1)
        else:
            out["p"] = 0.0 if mean != 0 else 1.0
    return out


def holm(p: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values of one family, in the input's order. NaN values are not
    hypotheses of the family (they neither count in m nor get a value: they stay NaN)."""
    vals = [float(x) for x in p]
    idx = sorted((i for i, x in enumerate(vals) if not math.isnan(x)), key=lambda i: vals[i])
    m = len(idx)
    out = [math.nan] * len(vals)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * vals[i]))
        out[i] = running
    return out


def fmt(diff: float, ci95: float, p_holm: float | None = None, digits: int = 3) -> str:
    """``d ± h`` (and the Holm-adjusted p) as the docs quote a comparison; a difference without an
    interval (fewer than two values: :func:`mean_ci`) says so rather than look exact."""
    if math.isnan(diff):
        return "n/a"
    s = f"{diff:+.{digits}f} ± {ci95:.{digits}f}" if math.isfinite(ci95) \
        else f"{diff:+.{digits}f} (no interval: n < 2)"
    if p_holm is not None and math.isfinite(p_holm):
        s += f" (p_holm {p_holm:.2g})" if p_holm >= 1e-3 else " (p_holm < 0.001)"
    return s


__all__ = ["betainc", "fmt", "holm", "mean_ci", "t95", "t_two_sided_p"]
