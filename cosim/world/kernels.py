"""The route walk compiled (:mod:`cosim.jit`): :meth:`cosim.world.routes.RouteGeometry.points_along`
for many vehicles in one call, on the flat arrays of :class:`cosim.world.routes._FlatRoutes`. The
same comparisons and the same floating-point operations in the same order (sums, differences, a
quotient, a product: no transcendental function), so the same points bit for bit (tested:
``tests/test_world.py``). Imported only where numba is installed."""

from __future__ import annotations

import numpy as np

from cosim._jitexp import njit


@njit
def _bisect_right(a, lo, hi, x):  # noqa: ANN001, ANN202
    """bisect.bisect_right(a[lo:hi], x) + lo, as CPython computes it."""
    while lo < hi:
        mid = (lo + hi) // 2
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit
def walk(rows, ks, crossings, dists, route_start, route_len, r_edge, r_gap, line_start, line_len, lp, lx, ly,
         out, ok):  # noqa: ANN001, ANN201
    """For each vehicle v with a route (``rows[v]`` >= 0): the points at ``dists[v]`` along route
    ``rows[v]`` from edge ``ks[v]`` (``crossings[v]``: from the crossing after it) into ``out[v]``
    (M, 2), ``ok[v, j]`` True where points_along gives a point (not None)."""
    for v in range(rows.shape[0]):
        if rows[v] < 0:
            continue
        rs, n, k, crossing = route_start[rows[v]], route_len[rows[v]], ks[v], crossings[v]
        M = dists.shape[1]
        if k < 0 or k >= n or r_edge[rs + k] < 0 or (crossing and (k + 1 >= n or r_edge[rs + k + 1] < 0)):
            for j in range(M):
                ok[v, j] = False
            continue
        base = 0.0
        ended = False
        if crossing:
            piece = r_gap[rs + k]
        else:
            e = r_edge[rs + k]
            piece = lp[line_start[e] + line_len[e] - 1]
        for j in range(M):
            d = dists[v, j]
            while not ended and d - base > piece:
                base += piece
                if crossing:  # on into the next edge
                    crossing = False
                    k += 1
                    e = r_edge[rs + k]
                    piece = lp[line_start[e] + line_len[e] - 1]
                elif k + 1 < n and r_edge[rs + k + 1] >= 0:  # on into the crossing after this edge
                    crossing = True
                    piece = r_gap[rs + k]
                else:
                    ended = True
            if ended:
                ok[v, j] = False
                continue
            ok[v, j] = True
            f = d - base
            if crossing:  # on the chord from route[k]'s end to route[k + 1]'s start
                a = r_edge[rs + k]
                b = r_edge[rs + k + 1]
                ia = line_start[a] + line_len[a] - 1
                ib = line_start[b]
                t = f / piece if piece > 0 else 1.0
                out[v, j, 0] = lx[ia] + t * (lx[ib] - lx[ia])
                out[v, j, 1] = ly[ia] + t * (ly[ib] - ly[ia])
                continue
            e = r_edge[rs + k]
            s0 = line_start[e]
            s1 = s0 + line_len[e]
            i = _bisect_right(lp, s0, s1, f)
            if i <= s0:
                out[v, j, 0] = lx[s0]
                out[v, j, 1] = ly[s0]
            elif i >= s1:
                out[v, j, 0] = lx[s1 - 1]
                out[v, j, 1] = ly[s1 - 1]
            else:
                a0 = lp[i - 1]
                b0 = lp[i]
                t = (f - a0) / (b0 - a0) if b0 > a0 else 0.0
                out[v, j, 0] = lx[i - 1] + t * (lx[i] - lx[i - 1])
                out[v, j, 1] = ly[i - 1] + t * (ly[i] - ly[i - 1])

