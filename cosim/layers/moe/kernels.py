"""numba kernels of the pricing game's hot loops (:mod:`cosim.jit`): the same floating-point
operations, in the same order, as the numpy code of :mod:`cosim.layers.moe.game` they stand for
(bit-identical results, tested), one price vector and one IV at a time instead of numpy calls on
(B, N, G, N) arrays. Imported only where numba is installed.

Every kernel returns ``ok``: False when the follower's Newton iteration did not settle within
``_NEWTON`` steps for some vector (none in practice), where the numpy code finishes it by sorting
(:meth:`Game._total_sorted`); the caller then runs the numpy code from the start, so the results
are the same either way. The kernels do not count follower evaluations: the caller adds what the
numpy code would have counted.
"""

from __future__ import annotations

import numpy as np

from cosim._jitexp import argsort_stable, exp_, njit, pw_sum

NEWTON = 12


@njit
def total(x, F, d, gm, s0, sumF, w1, w2):  # noqa: ANN001, ANN201
    """Game._total for one vector x = a - p: (S, settled). ``s0``: the start (already clipped to
    [0, sumF]); ``w1``, ``w2``: scratch rows of len(x)."""
    n = x.shape[0]
    if gm <= 1e-12 * d:
        return 0.0, True
    lo, hi, S = 0.0, sumF, s0
    for _ in range(NEWTON):
        m = 0
        for j in range(n):
            r = x[j] - gm * S
            dF = d * F[j]
            w1[j] = F[j] if r >= dF else 0.0
            if r > 0 and r < dF:
                w2[j] = x[j]
                m += 1
            else:
                w2[j] = 0.0
        nxt = (d * pw_sum(w1, n) + pw_sum(w2, n)) / (d + gm * m)
        if nxt == S:
            return S, True
        if nxt > S:
            lo = S
        else:
            hi = S
        S = nxt if (nxt > lo and nxt < hi) else 0.5 * (lo + hi)
    return total_sorted(x, F, d, gm, sumF), True


@njit
def total_sorted(x, F, d, gm, sumF):  # noqa: ANN001, ANN201
    """Game._total_sorted for one vector: the 2N breaks sorted (stable), prefix sums along them."""
    n = x.shape[0]
    br = np.empty(2 * n)
    dU = np.zeros(2 * n)
    dX = np.empty(2 * n)
    dn = np.empty(2 * n)
    for j in range(n):
        br[j] = (x[j] - d * F[j]) / gm
        br[n + j] = x[j] / gm
        dU[j] = -F[j]
        dX[j] = x[j]
        dX[n + j] = -x[j]
        dn[j] = 1.0
        dn[n + j] = -1.0
    order = argsort_stable(br)
    U = np.empty(2 * n)
    X = np.empty(2 * n)
    m = np.empty(2 * n)
    cu, cx, cm = 0.0, 0.0, 0.0
    k = 0
    for t in range(2 * n):  # np.cumsum: sequential
        o = order[t]
        cu = dU[o] if t == 0 else cu + dU[o]
        cx = dX[o] if t == 0 else cx + dX[o]
        cm = dn[o] if t == 0 else cm + dn[o]
        U[t], X[t], m[t] = sumF + cu, cx, cm
        if br[o] - U[t] - (cx - gm * cm * br[o]) / d < 0:
            k += 1
    if k == 0:
        return (d * sumF + 0.0) / (d + gm * 0.0)
    return (d * U[k - 1] + X[k - 1]) / (d + gm * m[k - 1])


@njit
def _clip(v, lo, hi):  # noqa: ANN001, ANN201 - np.clip of one float
    v = v if v > lo else lo
    return v if v < hi else hi


@njit
def dev_util(a, F, kappa, d, gm, p, q, out, x, w1, w2, sumF):  # noqa: ANN001, ANN201
    """Game.deviation_utility(p, q) into ``out`` (B, N, G): IV i alone at q[b, i, g]."""
    B, N = p.shape
    G = q.shape[2]
    for b in range(B):
        for j in range(N):
            x[j] = a[j] - p[b, j]
        start, ok = total(x, F, d, gm, 0.0, sumF, w1, w2)
        if not ok:
            return False
        start = _clip(start, 0.0, sumF)
        for i in range(N):
            xi = x[i]
            for g in range(G):
                x[i] = a[i] - q[b, i, g]
                S, ok = total(x, F, d, gm, start, sumF, w1, w2)
                if not ok:
                    return False
                f = _clip((x[i] - gm * S) / d, 0.0, F[i])
                out[b, i, g] = f * (q[b, i, g] - kappa[i] * f)
            x[i] = xi
    return True


@njit
def follower_row(a, F, d, gm, prow, s0, sumF, x, w1, w2, f):  # noqa: ANN001, ANN201
    """Game.follower of one price vector into ``f`` (N,), from start ``s0`` (clipped here)."""
    N = prow.shape[0]
    for j in range(N):
        x[j] = a[j] - prow[j]
    S, ok = total(x, F, d, gm, _clip(s0, 0.0, sumF), sumF, w1, w2)
    for j in range(N):
        f[j] = _clip((x[j] - gm * S) / d, 0.0, F[j])
    return ok


@njit
def follower(a, F, d, gm, p, out):  # noqa: ANN001, ANN201
    """Game.follower(p) (no start: S from 0) of every price vector of ``p`` (B, N) into ``out``."""
    B, N = p.shape
    x, w1, w2 = np.empty(N), np.empty(N), np.empty(N)
    sumF = pw_sum(F, N)
    for b in range(B):
        if not follower_row(a, F, d, gm, p[b], 0.0, sumF, x, w1, w2, out[b]):
            return False
    return True


@njit
def best_responses(a, F, kappa, d, gm, p, g, logg, lo, hi, refine, ratio, kind, best_q, best_u):  # noqa: ANN001, ANN201
    """Game.best_responses(p, grid=len(g), refine) into best_q, best_u (B, N); ``g`` = the grid
    exp(linspace(lo, hi)), ``logg`` = np.log(g), ``ratio`` = (sqrt(5) - 1) / 2."""
    B, N = p.shape
    G = g.shape[0]
    x, w1, w2 = np.empty(N), np.empty(N), np.empty(N)
    sumF = pw_sum(F, N)
    qg = np.empty((B, N, G))
    for b in range(B):
        for i in range(N):
            qg[b, i, :] = g
    u = np.empty((B, N, G))
    if not dev_util(a, F, kappa, d, gm, p, qg, u, x, w1, w2, sumF):
        return False
    k = np.empty((B, N), dtype=np.int64)
    A = np.empty((B, N))
    Bb = np.empty((B, N))
    step = (hi - lo) / (G - 1)
    for b in range(B):
        for i in range(N):
            kk = 0
            for j in range(1, G):
                if u[b, i, j] > u[b, i, kk]:
                    kk = j
            k[b, i] = kk
            A[b, i] = _clip(logg[kk] - step, lo, hi)
            Bb[b, i] = _clip(logg[kk] + step, lo, hi)
    q2 = np.empty((B, N, 2))
    u2 = np.empty((B, N, 2))
    for _ in range(refine):
        for b in range(B):
            for i in range(N):
                c = Bb[b, i] - ratio * (Bb[b, i] - A[b, i])
                dd = A[b, i] + ratio * (Bb[b, i] - A[b, i])
                q2[b, i, 0] = exp_(c, kind)
                q2[b, i, 1] = exp_(dd, kind)
        if not dev_util(a, F, kappa, d, gm, p, q2, u2, x, w1, w2, sumF):
            return False
        for b in range(B):
            for i in range(N):
                c = Bb[b, i] - ratio * (Bb[b, i] - A[b, i])
                dd = A[b, i] + ratio * (Bb[b, i] - A[b, i])
                if u2[b, i, 0] >= u2[b, i, 1]:
                    Bb[b, i] = dd
                else:
                    A[b, i] = c
    q1 = np.empty((B, N, 1))
    u1 = np.empty((B, N, 1))
    for b in range(B):
        for i in range(N):
            q1[b, i, 0] = exp_((A[b, i] + Bb[b, i]) / 2.0, kind)
    if not dev_util(a, F, kappa, d, gm, p, q1, u1, x, w1, w2, sumF):
        return False
    for b in range(B):
        for i in range(N):
            gu = u[b, i, k[b, i]]
            bu = u1[b, i, 0]
            best_q[b, i] = g[k[b, i]] if gu > bu else q1[b, i, 0]
            best_u[b, i] = bu if bu >= gu else gu
    return True


@njit
def fitness(a, F, kappa, d, gm, p, g, logg, lo, hi, refine, ratio, kind, declined_inf, out):  # noqa: ANN001, ANN201
    """Game.nash_gap(p, grid=len(g), refine) into ``out`` (B,); with ``declined_inf`` plus inf
    where the TV buys nothing (solver's _fitness)."""
    B, N = p.shape
    best_q, best_u = np.empty((B, N)), np.empty((B, N))
    if not best_responses(a, F, kappa, d, gm, p, g, logg, lo, hi, refine, ratio, kind, best_q, best_u):
        return False
    x, w1, w2, f = np.empty(N), np.empty(N), np.empty(N), np.empty(N)
    sumF = pw_sum(F, N)
    for b in range(B):
        if not follower_row(a, F, d, gm, p[b], 0.0, sumF, x, w1, w2, f):
            return False
        gap = 0.0
        for i in range(N):
            v = best_u[b, i] - f[i] * (p[b, i] - kappa[i] * f[i])
            v = v if v > 0.0 else 0.0
            if i == 0 or v > gap:
                gap = v
        if declined_inf:
            gap = gap + (np.inf if pw_sum(f, N) <= 0 else 0.0)
        out[b] = gap
    return True


@njit
def ascend(a, F, kappa, d, gm, x, steps, lr, lo, hi, marks, kept, kind, out):  # noqa: ANN001, ANN201
    """solver _ascend from log-prices ``x`` (B, N), updated in place: final prices into ``out``,
    the iterate after step s into kept[marks[s]] where marks[s] >= 0."""
    B, N = x.shape
    h = 1e-3
    xs, w1, w2 = np.empty(N), np.empty(N), np.empty(N)
    sumF = pw_sum(F, N)
    q = np.empty((B, N, 3))
    p = np.empty((B, N))
    u = np.empty((B, N, 3))
    for step in range(1, steps + 1):
        for b in range(B):
            for i in range(N):
                q[b, i, 0] = exp_(x[b, i] + h, kind)
                q[b, i, 1] = exp_(x[b, i] + 0.0, kind)
                q[b, i, 2] = exp_(x[b, i] + -h, kind)
                p[b, i] = exp_(x[b, i], kind)
        if not dev_util(a, F, kappa, d, gm, p, q, u, xs, w1, w2, sumF):
            return False
        for b in range(B):
            for i in range(N):
                up, mid, dn = u[b, i, 0], u[b, i, 1], u[b, i, 2]
                gr = (up - dn) / (2 * h)
                curv = (up - 2 * mid + dn) / (h * h)
                if curv < -1e-12:
                    newton = -gr / curv
                else:
                    newton = lr * (1.0 if gr > 0 else (-1.0 if gr < 0 else 0.0))
                if mid == 0 and gr == 0:
                    newton = -lr
                x[b, i] = _clip(x[b, i] + 0.5 * _clip(newton, -0.5, 0.5), lo, hi)
        if marks[step] >= 0:
            for b in range(B):
                for i in range(N):
                    kept[marks[step], b, i] = exp_(x[b, i], kind)
    for b in range(B):
        for i in range(N):
            out[b, i] = exp_(x[b, i], kind)
    return True


@njit
def _best_price(a, F, kappa, d, gm, p, i, p_min, p_max, qs, Ss):  # noqa: ANN001, ANN201
    """solver _best_price: the candidates into qs, Ss (the first ones); returns their count."""
    n = p.shape[0]
    m = n - 1
    xo = np.empty(m)
    Fo = np.empty(m)
    j2 = 0
    for j in range(n):
        if j != i:
            xo[j2] = a[j] - p[j]
            Fo[j2] = F[j]
            j2 += 1
    if gm > 1e-12 * d:
        br = np.empty(2 * m)
        for j in range(m):
            br[j] = (xo[j] - d * Fo[j]) / gm
            br[m + j] = xo[j] / gm
        br = br[argsort_stable(br)]  # np.sort: equal breaks are equal numbers
    else:
        br = np.empty(0)
    P = br.shape[0] + 1
    lo_b = np.empty(P)
    hi_b = np.empty(P)
    lo_b[0] = -np.inf
    lo_b[1:] = br
    hi_b[: P - 1] = br
    hi_b[P - 1] = np.inf
    mid = np.empty(P)
    if br.shape[0] == 0:
        mid[0] = 0.0
    else:
        for t in range(P):
            fl, fh = np.isfinite(lo_b[t]), np.isfinite(hi_b[t])
            if fl and fh:
                mid[t] = 0.5 * (lo_b[t] + hi_b[t])
            elif fl:
                mid[t] = lo_b[t] + 1.0
            else:
                mid[t] = hi_b[t] - 1.0
    w1, w2, w3 = np.empty(m), np.empty(m), np.empty(m)
    gmd = gm / d
    cnt = 0
    for t in range(P):
        for j in range(m):
            v = (xo[j] - gm * mid[t]) / d
            w1[j] = Fo[j] if v >= Fo[j] else 0.0
            free = v > 0 and v < Fo[j]
            w2[j] = xo[j] / d if free else 0.0
            w3[j] = gmd if free else 0.0
        R0 = pw_sum(w1, m) + pw_sum(w2, m)
        R1 = -pw_sum(w3, m)
        alpha = 1.0 - R1
        f0 = -R0
        c = -gm - d * alpha
        q0 = a[i] + d * R0
        k = kappa[i]
        lo = max(max(lo_b[t], -f0 / alpha), (p_max - q0) / c)
        hi = min(min(hi_b[t], (F[i] - f0) / alpha), (p_min - q0) / c)
        if lo <= hi:
            A = alpha * (c - k * alpha)
            B = alpha * (q0 - k * f0) + f0 * (c - k * alpha)
            S = _clip(-B / (2 * A), lo, hi)
            qs[cnt] = _clip(c * S + q0, p_min, p_max)
            Ss[cnt] = S
            cnt += 1
    qs[cnt] = p_min
    Ss[cnt] = np.nan
    qs[cnt + 1] = p_max
    Ss[cnt + 1] = np.nan
    return cnt + 2


@njit
def best_response(a, F, kappa, d, gm, p, p_min, p_max, budget, br_tol):  # noqa: ANN001, ANN201
    """solve_best_response from prices ``p`` (N,), updated in place: (ok, evaluations spent)."""
    n = p.shape[0]
    sumF = pw_sum(F, n)
    x, w1, w2, f, fk = np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    qs, Ss = np.empty(2 * n + 3), np.empty(2 * n + 3)
    pp = np.empty(n)
    used = 0
    total_ = 0.0
    while True:
        moved = 0.0
        for i in range(n):
            L = _best_price(a, F, kappa, d, gm, p, i, p_min, p_max, qs[1:], Ss[1:]) + 1
            qs[0] = p[i]
            Ss[0] = total_
            if used + L > budget:
                return True, used
            used += L
            best_k, best_u = 0, 0.0
            for t in range(L):
                pp[:] = p
                pp[i] = qs[t]
                s0 = total_ if np.isnan(Ss[t]) else Ss[t]
                if not follower_row(a, F, d, gm, pp, s0, sumF, x, w1, w2, f):
                    return False, used
                u = f[i] * (qs[t] - kappa[i] * f[i])
                # np.argmax (the first maximum), and the current price (t = 0) unless beaten
                if t == 0 or u > best_u:
                    best_k, best_u = t, u
                    fk[:] = f
            mv = abs(qs[best_k] - p[i]) / p[i]
            if mv > moved:
                moved = mv
            p[i] = qs[best_k]
            total_ = pw_sum(fk, n)
        if moved <= br_tol:
            return True, used
