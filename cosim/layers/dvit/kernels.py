"""numba kernels of DViT's planning loops (:mod:`cosim.jit`): VIDI's value iteration and the
exact DP's layered shortest path, the same floating-point operations as the numpy code of
:mod:`cosim.layers.dvit.schedulers` they stand for (a sum of two numbers, a product, a sum, and
minima, whose order does not matter): bit-identical results, tested. Imported only where numba
is installed. The entry points the schedulers call (each loaded at its first call): VIDI's
:func:`mdp_build` (its state space and hand-off times), :func:`mdp_solve` (rewards, successors,
value iteration, Q) and :func:`vidi_plan` (line 9's roll-out); ``optimal``'s :func:`optimal_plan`
(step matrix, prefix DP, pick and traceback)."""

from __future__ import annotations

import numpy as np

from cosim._jitexp import argsort_stable, njit, vec_expm1, vec_log2, vec_pow


@njit
def value_iteration(idx_t, nn, F_t, half_rho, phi, max_iter):  # noqa: ANN001, ANN201
    """schedulers._value_iteration: sweeps v <- min_a F_t[a] + half_rho (v[nn[0, x]] +
    v[nn[1, x]]), x = idx_t[a], from v = 0 until max |dv| <= phi (at most ``max_iter``):
    (sweeps, v). The numpy code gathers both successors for every (state, action); here the
    pair's sum and its product with half_rho are formed once per state x they are gathered from
    — the same two operations on the same numbers, so the same values."""
    V, S = F_t.shape
    v = np.zeros(S)
    nv = np.empty(S)
    w = np.empty(S)
    n0, n1 = nn[0], nn[1]
    for sweep in range(1, max_iter + 1):
        for x in range(S):
            w[x] = (v[n0[x]] + v[n1[x]]) * half_rho
        dv = 0.0
        for s in range(S):
            best = w[idx_t[0, s]] + F_t[0, s]
            for a in range(1, V):
                val = w[idx_t[a, s]] + F_t[a, s]
                if val < best:
                    best = val
            nv[s] = best
            change = abs(best - v[s])
            if change > dv:
                dv = change
        v, nv = nv, v
        if dv <= phi:
            return sweep, v
    return max_iter, v


@njit
def layered_dp(pre, parent, step_mat, n_prefix):  # noqa: ANN001, ANN201
    """optimal's prefix DP in place: pre[k, j] = min_i pre[k-1, i] + step_mat[i, j] and
    parent[k, j] its first argmin, k = 2..n_prefix."""
    V = pre.shape[1]
    for k in range(2, n_prefix + 1):
        for j in range(V):
            best = pre[k - 1, 0] + step_mat[0, j]
            arg = 0
            for i in range(1, V):
                val = pre[k - 1, i] + step_mat[i, j]
                if val < best:
                    best = val
                    arg = i
            pre[k, j] = best
            parent[k, j] = arg


@njit
def optimal_plan(comm_s, cost, allowed, K, n_prefix, U, tmax, upload, dwell_tol):  # noqa: ANN001, ANN201
    """schedulers.optimal from its step costs on, for ``n_prefix`` >= 1 and a user step within
    ``tmax``: the first prefix step's times (eq. 4, k = 1: from device 0), the step matrix i -> j
    (0 on the diagonal, else the hand-off, + the step's cost; inf where C1/C2 forbid it, into the
    user, or over ``tmax``), the prefix DP (:func:`layered_dp`), everything on the user (s = 1) and
    the pick (:func:`optimal_pick`): the numpy code's elementwise sums and comparisons, so the
    same plan. Returns (switch step, plan); switch step -1: no plan."""
    V = cost.shape[0]
    user_step = cost[U]
    pre = np.full((n_prefix + 1, V), np.inf)
    parent = np.full((n_prefix + 1, V), -1, dtype=np.int64)
    for j in range(V):
        f = (0.0 if j == 0 else comm_s[0, j]) + cost[j]
        pre[1, j] = np.inf if (j == U or f > tmax) else f
    step_mat = np.empty((V, V))
    for i in range(V):
        for j in range(V):
            f = (0.0 if i == j else comm_s[i, j]) + cost[j]
            step_mat[i, j] = f if (allowed[i, j] and j != U and f <= tmax) else np.inf
    layered_dp(pre, parent, step_mat, n_prefix)
    best, best_s = np.inf, -1
    first_user = comm_s[0, U] + user_step  # s = 1: everything on the user, the RSU hands it over first
    if first_user <= tmax and upload <= dwell_tol:
        best, best_s = upload + first_user + (K - 1) * user_step, 1
    return optimal_pick(pre, parent, comm_s, user_step, upload, dwell_tol, K, n_prefix, U, tmax, best, best_s)


@njit
def optimal_pick(pre, parent, comm_s, user_step, upload, dwell_tol, K, n_prefix, U, tmax, best, best_s):  # noqa: ANN001, ANN201
    """optimal's choice after the prefix DP, from the best plan so far (``best``, switch step
    ``best_s``: everything on the user, or none): the switch step s = 2 .. n_prefix + 1 and last
    prefix device d of least total upload + pre[s-1, d] + (comm_s[d, U] + user_step) +
    (K - s) user_step over the admissible ones (pre finite, the hand-off within ``tmax``, C4:
    upload + pre <= ``dwell_tol``, d not the user), the first of them in row-major order as
    numpy's argmin takes it, where it beats ``best``; then the plan traced back through
    ``parent``. The numpy code's elementwise sums in its order: the same values. Returns
    (switch step, plan); switch step -1: no plan."""
    V = pre.shape[1]
    best_d = -1
    if n_prefix >= 1:
        low, low_s, low_d = np.inf, 0, 0
        for si in range(n_prefix):
            for d in range(V):
                P = pre[si + 1, d]
                into = comm_s[d, U] + user_step
                if d != U and np.isfinite(P) and into <= tmax and upload + P <= dwell_tol:
                    val = upload + P + into + (K - (si + 2)) * user_step
                    if val < low:
                        low, low_s, low_d = val, si, d
        if low < best:
            best, best_s, best_d = low, low_s + 2, low_d
    plan = np.full(K, U, dtype=np.int64)
    if best_s < 0:
        return best_s, plan
    j = best_d
    for k in range(best_s - 1, 0, -1):
        plan[k - 1] = j
        if k > 1:
            j = parent[k, j]
    return best_s, plan


@njit
def _state_at(dev, when, offset, speed, first, last, cell_m):  # noqa: ANN001, ANN201
    """VidiMDP.state_at (Python's float floor division, as numba computes it: CPython's algorithm)."""
    c = int((offset[dev] + speed[dev] * when) // cell_m) if speed[dev] > 0 else 0
    return first[dev] + min(max(c, 0), last[dev])


@njit
def _exit_ok(a, when, elapsed, extra, dwell, offset, speed, first, last, cell_m):  # noqa: ANN001, ANN201
    return elapsed + extra[_state_at(a, when, offset, speed, first, last, cell_m)] <= dwell


@njit
def _rollout(a, exit_early, s0, n_pre, U, upload, F, cost, direct, via, extra, order, n_ok, dwell, offset, speed,
             first, last, cell_m, plan):  # noqa: ANN001, ANN201
    """vidi's ``rollout`` into ``plan``: its length, or -1 for None (a conflict)."""
    s, t, elapsed, n = s0, 0.0, upload, 0
    for k in range(n_pre):
        if k:
            a, user_next = -1, False
            for j in range(n_ok[s]):
                b = order[s, j]
                if b == U:
                    user_next = True
                    break
                f = F[s, b]
                if not exit_early:
                    span = f + (n_pre - k - 1) * cost[b]
                    good = _exit_ok(b, t + span, elapsed + span, extra, dwell, offset, speed, first, last, cell_m)
                else:
                    good = _exit_ok(b, t + f, elapsed + f, extra, dwell, offset, speed, first, last, cell_m)
                if good:
                    a = b
                    break
            if a < 0:
                if not exit_early and not user_next:
                    return -1
                break
        f = F[s, a]
        plan[n] = a
        n += 1
        t, elapsed = t + f, elapsed + f
        s = _state_at(a, t, offset, speed, first, last, cell_m)
    if n and not direct[s] and np.isfinite(extra[s]):
        if n == n_pre:
            n -= 1
        plan[n] = via[s]
        n += 1
    return n


@njit
def vidi_plan(s0, n_pre, U, upload, tmax, F, Q, recv, dev, cost, dwell, offset, speed, first, last, cell_m, out):  # noqa: ANN001, ANN201
    """vidi's line 9 (the roll-outs from each first action, safe ones first, then early exits)
    into ``out`` (K,), already all user: the same tests on the same numbers as the Python code,
    with its tables (ok, order, n_ok, direct, relay, via, extra) built here."""
    S, V = F.shape
    order = np.empty((S, V), dtype=np.int64)
    n_ok = np.zeros(S, dtype=np.int64)
    direct = np.empty(S, dtype=np.bool_)
    via = np.zeros(S, dtype=np.int64)
    extra = np.empty(S)
    key = np.empty(V)
    for s in range(S):
        any_relay, best = False, np.inf
        for a in range(V):
            f = F[s, a]
            ok = np.isfinite(f) and f <= tmax
            n_ok[s] += ok
            key[a] = Q[s, a] if ok else np.inf
            # relay through a: it can take the result (ok) and then hand it to the user (C3)
            if ok and F[recv[s, a], U] <= tmax and a != U and a != dev[s]:
                any_relay = True
                if f < best:  # np.argmin: the first minimum
                    best = f
                    via[s] = a
        order[s] = argsort_stable(key)  # stable, as the numpy code's
        direct[s] = F[s, U] <= tmax
        extra[s] = 0.0 if direct[s] else (F[s, via[s]] if any_relay else np.inf)
    plan = np.empty(n_pre + 1, dtype=np.int64)
    for early in range(2):
        exit_early = early == 1
        for j in range(n_ok[s0]):
            a = order[s0, j]
            if a == U:
                break  # the user is better than every action after it
            f = F[s0, a]
            if not exit_early:
                span = f + (n_pre - 1) * cost[a]
                good = _exit_ok(a, 0.0 + span, upload + span, extra, dwell, offset, speed, first, last, cell_m)
            else:
                good = _exit_ok(a, f, upload + f, extra, dwell, offset, speed, first, last, cell_m)
            if not good:
                continue
            n = _rollout(a, exit_early, s0, n_pre, U, upload, F, cost, direct, via, extra, order, n_ok, dwell, offset,
                         speed, first, last, cell_m, plan)
            if n > 0:
                out[:n] = plan[:n]
                return


@njit
def mdp_states(off, speed, cost, steps, g, M, origin_rsu, U):  # noqa: ANN001, ANN201
    """vidi_mdp's state space: per device whether it is the RSU, its number of cells (H', at most
    ``M``; one for the RSU, a parked vehicle and the user), its first state, its step's cell
    advance q; per state its device, cell and the time the device enters that cell — the numpy
    code's elementwise operations in its order, so the same numbers. Returns (ok, rsu, n_cells,
    first, dev, cell, t, last, q); ok False (and empty arrays) where a floor does not convert to
    an integer (inf, NaN, beyond 2^62) or a device would get no state: then the numpy code runs."""
    V = off.shape[0]
    rsu = np.zeros(V, dtype=np.bool_)
    n_cells = np.empty(V, dtype=np.int64)
    q = np.empty(V, dtype=np.int64)
    for i in range(V):
        rsu[i] = i == 0 and origin_rsu
        x = np.floor((off[i] + speed[i] * cost[i] * steps) / g)
        y = np.floor(speed[i] * cost[i] / g)
        if not (abs(x) < 4.0e18 and abs(y) < 4.0e18):  # (NaN fails too)
            return False, rsu[:0], q[:0], q[:0], q[:0], q[:0], off[:0], q[:0], q[:0]
        reach = np.int64(x) + 2
        n_cells[i] = min(M, reach) if (speed[i] > 0 and not rsu[i] and i != U) else 1
        if n_cells[i] < 1:
            return False, rsu[:0], q[:0], q[:0], q[:0], q[:0], off[:0], q[:0], q[:0]
        q[i] = np.int64(y)
    first = np.empty(V, dtype=np.int64)
    S = 0
    for i in range(V):
        first[i] = S
        S += n_cells[i]
    dev = np.empty(S, dtype=np.int64)
    cell = np.empty(S, dtype=np.int64)
    t = np.empty(S)
    for i in range(V):
        for c in range(n_cells[i]):
            s = first[i] + c
            dev[s] = i
            cell[s] = c
            t[s] = (c * g - off[i]) / speed[i] if c > 0 else 0.0
    return True, rsu, n_cells, first, dev, cell, t, n_cells - 1, q


@njit
def mdp_links(dev, cell, t, off, speed, last, pos, g, comm_s, handoff, xy, bw, rsu, v2i, v2v, bits, min_d, range_m,
              log2c, kind):  # noqa: ANN001, ANN201
    """vidi_mdp's c_recv (S, V) (the receiver's cell when the step starts) and the hand-off times
    comm (S, V): ``comm_s`` of the holder, or with ``handoff`` eq. (3) at the distance between the
    holder's cell and the receiver's then, out of V2V range infinite (``kind``: numpy's expm1,
    pow and log2, :func:`cosim.jit.exact_exp`; ``log2c`` = np.log(2.0))."""
    S, V, M = dev.shape[0], pos.shape[0], pos.shape[1]
    c_recv = np.empty((S, V), dtype=np.int64)
    comm = np.empty((S, V))
    n = S * V
    d = np.empty(n)
    se0 = np.empty(n)
    x1 = np.empty(n)  # the arguments of expm1, pow and log2, all (s, a) at once (SVML 8 lanes at a time)
    x2 = np.empty(n)
    x3 = np.empty(n)
    for s in range(S):
        h = dev[s]
        sx, sy = pos[h, cell[s], 0], pos[h, cell[s], 1]
        for a in range(V):
            c = np.int64(np.floor((off[a] + speed[a] * t[s]) / g))
            c = min(max(c, 0), last[a])
            c_recv[s, a] = c
            comm0 = comm_s[h, a]
            comm[s, a] = comm0
            if not handoff:
                continue
            k = s * V + a
            cm = min(c, M - 1)
            d[k] = np.hypot(pos[a, cm, 0] - sx, pos[a, cm, 1] - sy)
            d0 = np.hypot(xy[h, 0] - xy[a, 0], xy[h, 1] - xy[a, 1])
            e = bits / (comm0 * bw[h])  # log2(1 + snr0)
            se0[k] = e
            x1[k] = (e if (e < 1000.0 or e != e) else 1000.0) * log2c  # np.minimum: NaN stays NaN
            num = d0 if (d0 > min_d or d0 != d0) else min_d  # np.maximum
            den = d[k] if (d[k] > min_d or d[k] != d[k]) else min_d
            x2[k] = num / den
            x3[k] = v2i if rsu[h] else v2v
    if not handoff:
        return c_recv, comm
    snr0 = np.empty(n)
    vec_expm1(x1, snr0, kind)
    gain = np.empty(n)
    vec_pow(x2, x3, gain, kind)
    for k in range(n):
        x1[k] = 1.0 + snr0[k] * gain[k]
    se = np.empty(n)
    vec_log2(x1, se, kind)
    for s in range(S):
        h = dev[s]
        for a in range(V):
            k = s * V + a
            comm0 = comm[s, a]
            c2 = comm0 * se0[k] / se[k] if (np.isfinite(comm0) and comm0 > 0) else comm0
            comm[s, a] = np.inf if (not rsu[h] and d[k] > range_m) else c2
    return c_recv, comm


@njit
def mdp_build(off, speed, cost, steps, g, M, origin_rsu, U, pos, comm_s, handoff, xy, bw, v2i, v2v, bits, min_d,
              range_m, log2c, kind):  # noqa: ANN001, ANN201
    """:func:`mdp_states`, then on its states :func:`mdp_links`: one call (and one kernel to load)
    for what vidi_mdp builds before the rewards. Returns (ok, rsu, n_cells, first, dev, cell, t,
    last, q, c_recv, comm); ok False: mdp_states' (then c_recv and comm are empty)."""
    ok, rsu, n_cells, first, dev, cell, t, last, q = mdp_states(off, speed, cost, steps, g, M, origin_rsu, U)
    if not ok:
        return ok, rsu, n_cells, first, dev, cell, t, last, q, np.empty((0, 0), dtype=np.int64), np.empty((0, 0))
    c_recv, comm = mdp_links(dev, cell, t, off, speed, last, pos, g, comm_s, handoff, xy, bw, rsu, v2i, v2v, bits, min_d,
                             range_m, log2c, kind)
    return ok, rsu, n_cells, first, dev, cell, t, last, q, c_recv, comm


@njit
def mdp_solve(comm, cost, allowed, dev, t, dwell, cell, c_recv, q, speed, last, first, half_rho, phi, max_iter):  # noqa: ANN001, ANN201
    """vidi_mdp from the hand-off times ``comm`` (S, V) on: the rewards F, the successors succ,
    the receiving states idx, the value iteration (:func:`value_iteration`) and Q:
    (F, succ, idx, sweeps, v, Q)."""
    S, V = comm.shape
    F = np.empty((S, V))
    succ = np.empty((2, S, V), dtype=np.int64)
    idx_t = np.empty((V, S), dtype=np.int64)
    F_t = np.empty((V, S))
    nn = np.empty((2, S), dtype=np.int64)
    for s in range(S):
        h = dev[s]
        for a in range(V):
            same = a == h
            f = cost[a] if same else comm[s, a] + cost[a]
            if not ((allowed[h, a] and t[s] <= dwell[a]) or same):
                f = np.inf
            F[s, a] = f
            F_t[a, s] = f if np.isfinite(f) else 1e9
            base = (cell[s] if same else c_recv[s, a]) + q[a]
            succ[0, s, a] = min(base, last[a]) + first[a]
            base += 1 if speed[a] > 0 else 0
            succ[1, s, a] = min(base, last[a]) + first[a]
            idx_t[a, s] = s if same else first[a] + c_recv[s, a]
        nn[0, s] = succ[0, s, h]
        nn[1, s] = succ[1, s, h]
    sweeps, v = value_iteration(idx_t, nn, F_t, half_rho, phi, max_iter)
    Q = np.empty((S, V))
    for s in range(S):
        for a in range(V):
            f = F[s, a]
            Q[s, a] = f + half_rho * (v[succ[0, s, a]] + v[succ[1, s, a]]) if np.isfinite(f) else np.inf
    return F, succ, idx_t.T.copy(), sweeps, v, Q
