"""numba kernels of DViT's planning loops (:mod:`cosim.jit`): VIDI's value iteration and the
exact DP's layered shortest path, the same floating-point operations as the numpy code of
:mod:`cosim.layers.dvit.schedulers` they stand for (a sum of two numbers, a product, a sum, and
minima, whose order does not matter): bit-identical results, tested. Imported only where numba
is installed."""

from __future__ import annotations

import numpy as np

from cosim._jitexp import njit


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
