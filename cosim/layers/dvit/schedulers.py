"""DViT step schedulers: ``plan(problem, rng, options) -> device per step``.

* ``optimal`` (ours): the exact minimum of eq. (14) under C1-C4 and the local-step rule for the
  given problem, by dynamic programming over the K x |V'| layered graph (see :func:`optimal`).
* ``vidi``: Algorithm 1 of the paper — value iteration over the state space W' x C' x H'
  (bandwidth, compute, position grid cell of the device holding the task), actions = devices,
  reward F(s, a) = T_k(a) (eq. 7), transitions per eq. (17), discount rho, stop when the largest
  change is <= phi, then a constraint ("conflict") check while rolling the policy out.
* The paper's baselines (Sec. IV), as we read them — "prioritizes" is a *ranking* over devices,
  not a single pick (:func:`ranked`): every non-local step goes to the best-ranked device that
  can take it (C1/C2, a link, C3), falling back down the ranking, then the local steps on the
  user. ``mddi`` ranks the helpers by distance to the RSU ("vehicles gathered around the RSU");
  ``mbdi`` the RSU and helpers by available bandwidth (:func:`available_bandwidth`: the RSU's
  band is shared by the vehicles it serves — ours); ``mcpdi`` the RSU and helpers by compute;
  ``vli`` the vehicles (helpers and the user itself) by compute, no RSU; ``sdi`` a random
  admissible device for every step.

Every scheduler is registered with :func:`cosim.register_policy` exactly as a plugin's is, and
called as ``fn(problem, rng, options)``: ``rng`` a generator for the ones registered
``stochastic=True`` (else None), ``options`` the validated instance of its options dataclass
(``[layers.dvit.options.NAME]``; None for a scheduler without options). It returns the device
of every step (``problem.steps`` integers in ``range(problem.n_devices)``) or None when it finds
no admissible plan. ``cosim check`` tests the contract (docs/plugins.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cosim.config import option
from cosim.layers.dvit.problem import HELPER, RSU, USER, Problem
from cosim.registry import register_policy


def register(name: str, stochastic: bool = False, options: type | None = None):  # noqa: ANN201
    """A built-in DViT scheduler: :func:`cosim.register_policy` on layer ``dvit``."""
    return register_policy("dvit", name, stochastic=stochastic, options=options)


@register("optimal")
def optimal(p: Problem, rng: np.random.Generator | None = None, opts: Any = None) -> np.ndarray | None:
    """Exact minimum of eq. (14) under C1-C4 and the local-step rule.

    Every feasible plan is a prefix on non-user devices (RSU first if at all, then helpers; C1)
    followed by a suffix on the user (C2) of at least ``local_steps`` steps. ``pre[k, j]`` is the
    least time of steps 1..k ending on non-user device j, with every step <= T_max (C3); it is a
    shortest path over the layered graph. For each switch step s and last prefix device d the
    total is upload + pre[s-1, d] + (hand-off to the user) + (K - s + 1) user steps, and C4 asks
    upload + pre[s-1, d] <= the user's dwell. Minimising the prefix minimises both sides, so
    taking the best feasible (s, d) is exact. O(K |V'|^2) with numpy over devices.
    """
    K, V, U = p.steps, p.n_devices, p.user
    cost = p.step_cost()
    allowed = p.allowed()
    tmax = p.t_max_s + 1e-12
    user_step = cost[U]
    if user_step > tmax:
        return None
    inf = np.inf
    n_prefix = K - p.local_steps  # the prefix may be 0..n_prefix steps long
    pre = np.full((max(n_prefix, 0) + 1, V), inf)
    parent = np.full((max(n_prefix, 0) + 1, V), -1, dtype=np.int64)
    if n_prefix >= 1:
        first = np.where(np.arange(V) == 0, 0.0, p.comm_s[0]) + cost  # eq. (4), k = 1
        first[U] = inf
        first[first > tmax] = inf
        pre[1] = first
        trans_ok = allowed.copy()
        trans_ok[:, U] = False
        step_mat = np.where(np.eye(V, dtype=bool), 0.0, p.comm_s) + cost[None, :]  # i -> j
        step_mat = np.where(trans_ok & (step_mat <= tmax), step_mat, inf)
        for k in range(2, n_prefix + 1):
            tot = pre[k - 1][:, None] + step_mat
            parent[k] = np.argmin(tot, axis=0)
            pre[k] = tot[parent[k], np.arange(V)]
    best, best_s, best_d = inf, -1, -1
    # s = 1: everything on the user, the RSU hands the task over first (eq. 4, k = 1)
    first_user = p.comm_s[0, U] + user_step
    if first_user <= tmax and p.upload_s <= p.user_dwell_s + 1e-12:
        best, best_s = p.upload_s + first_user + (K - 1) * user_step, 1
    if n_prefix >= 1:  # switch steps s = 2 .. n_prefix + 1, all at once: rows of pre[1:]
        into_user = p.comm_s[:, U] + user_step
        P = pre[1:]
        s_vals = np.arange(2, n_prefix + 2)
        ok = np.isfinite(P) & (into_user <= tmax)[None, :] & (p.upload_s + P <= p.user_dwell_s + 1e-12)
        ok[:, U] = False
        totals = np.where(ok, p.upload_s + P + into_user[None, :] + (K - s_vals)[:, None] * user_step, inf)
        flat = int(np.argmin(totals))
        si, d = divmod(flat, V)
        if totals[si, d] < best:
            best, best_s, best_d = totals[si, d], int(s_vals[si]), d
    if best_s < 0:
        return None
    plan = np.full(K, U, dtype=np.int64)
    j = best_d
    for k in range(best_s - 1, 0, -1):
        plan[k - 1] = j
        j = parent[k, j] if k > 1 else j
    return plan


@dataclass(frozen=True)
class VidiOptions:
    rho: float = option(0.9, lo=0.0, hi=0.999, doc="discount rho of the value iteration")
    phi: float = option(1e-4, lo=0.0, lo_open=True, doc="stop threshold phi [s]")
    max_iter: int = option(1000, lo=1, doc="value-iteration sweeps at most")


@register("vidi", options=VidiOptions)
def vidi(p: Problem, rng: np.random.Generator | None = None, opts: VidiOptions | None = None) -> np.ndarray | None:
    """Algorithm 1 (value iteration distributed inference), as the paper writes it.

    States s = (w, c, h) in W' x C' x H' (eq. 15): the bandwidth, compute and grid position of
    the device holding the intermediate result. H' holds each device's cell and the cell it
    reaches within one step (vehicles move). Actions a = the device to run the next step
    (eq. 16). Reward F(s, a) = T_k(a) (eq. 7): hand-off from a device of bandwidth w at h to
    device a (rate from the log-distance channel at mean fading), plus a's compute and queue
    time. Transitions (eq. 17): w' = w_a and c' = c_a (one possible value each), h' uniform over
    a's two reachable cells. The current compute c enters neither F nor P, so v is constant along
    C' and is computed on W' x H' and broadcast — the same fixed point. Iterate
    v <- min_a F + rho P v until max |dv| <= phi, then roll the greedy policy out from the RSU
    for K steps, checking every action against C1/C2, C3 and the local-step rule ("check for
    conflicts"), falling back to the next-best admissible action.
    """
    opts = opts if opts is not None else VidiOptions()
    rho, phi, max_iter = opts.rho, opts.phi, opts.max_iter
    K, V, U = p.steps, p.n_devices, p.user
    cost = p.step_cost()
    # state components per device: bandwidth index = device, position cells = 2 per device
    n_h = 2 * V  # H': each device's cell now and after one step
    xy = p.xy if len(p.xy) == V else np.zeros((V, 2))
    vel = p.speed_xy if len(p.speed_xy) == V else np.zeros((V, 2))
    step_t = float(np.median(cost)) if V else 0.0
    cells = np.concatenate([xy, xy + vel * step_t])  # H': now, and after one step
    # hand-off time from (w of device i, at cell h) to device a: scale the measured i -> a
    # hand-off by the path-gain change between a's distance now and from cell h (log-distance,
    # exponent 3.76), a model-based estimate as the paper's MDP needs one for every state
    base_d = np.maximum(np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=-1), 1.0)  # (V, V)
    comm = np.where(np.isfinite(p.comm_s), p.comm_s, 1e6)
    d_h = np.maximum(np.linalg.norm(cells[:, None, :] - xy[None, :, :], axis=-1), 1.0)  # (H, V)
    # F[w, h, a]: hand-off from bandwidth owner w positioned at h to a, + a's step cost
    ratio = (d_h[None, :, :] / base_d[:, None, :]) ** (3.76 / 4)  # rate ~ log; damped scaling
    F = comm[:, None, :] * ratio + cost[None, None, :]
    same = (np.arange(V)[:, None] == np.arange(V)[None, :])[:, None, :] & (
        np.arange(n_h)[None, :, None] % V == np.arange(V)[None, None, :])
    F = np.where(same, cost[None, None, :], F)
    # next states of action a: (w_a, h in {a, a + V}) with probability 1/2 each (eq. 17). Only
    # those 2V states feed the dynamics, so iterate on u[a] = E[v(s') | a] and expand to all of
    # W' x H' once at the end: the same fixed point as sweeping every state. Since
    # max_s |dv(s)| <= rho max_a |du(a)|, stopping at rho max|du| <= phi meets the paper's test.
    a_idx = np.arange(V)
    F_reach = np.stack([F[a_idx, a_idx], F[a_idx, a_idx + V]])  # (2, V, V): from a's two cells
    u = np.zeros(V)
    for _ in range(max_iter):
        u_new = 0.5 * (F_reach + rho * u[None, None, :]).min(axis=2).sum(axis=0)
        delta = np.max(np.abs(u_new - u))
        u = u_new
        if rho * delta <= phi:
            break
    nxt = u
    allowed = p.allowed()
    tmax = p.t_max_s + 1e-12
    plan = np.empty(K, dtype=np.int64)
    cur = 0  # the RSU holds the request
    memo: dict[int, int] = {}  # after step 0 the greedy choice depends on the holder alone
    for k in range(K):
        if k >= K - p.local_steps:
            choice = U
        elif k > 0 and cur in memo:
            choice = memo[cur]
        else:
            qk = F[cur, cur] + rho * nxt  # the holder is at its current cell
            order = np.argsort(qk, kind="stable")
            choice = -1
            for a in order:
                if k > 0 and not allowed[cur, a]:
                    continue
                hand = 0.0 if (a == cur and k > 0) or (k == 0 and a == 0) else p.comm_s[cur if k else 0, a]
                if hand + cost[a] <= tmax:
                    choice = int(a)
                    break
            if choice < 0:
                choice = U
            if k > 0:
                memo[cur] = choice
        plan[k] = choice
        cur = choice
    return plan


def ranked(p: Problem, rank: np.ndarray) -> np.ndarray:
    """The plan of a baseline that *prioritises* devices (Sec. IV): every non-local step goes to
    the first device of ``rank`` (best first) that can take it — C1/C2 allowed from the device
    holding the result, a link to it (in range), and the step within T_max (C3; a busy device,
    whose queue makes the step too slow, fails this) — falling back down the ranking; when no
    ranked device can, the result goes to the user for the remaining steps. The local steps run
    on the user. After the first step the choice depends on the holder alone (the problem is
    one snapshot), so each holder is decided once."""
    K, U = p.steps, p.user
    cost = p.step_cost()
    allowed = p.allowed()
    tmax = p.t_max_s + 1e-12
    plan = np.full(K, U, dtype=np.int64)
    cur, memo = 0, {}  # device 0 (the RSU, or the helper a re-plan starts from) holds the result
    for k in range(K - p.local_steps):
        if k > 0 and cur in memo:
            choice = memo[cur]
        else:
            choice = U
            for a in rank:
                a = int(a)
                if k > 0 and not allowed[cur, a]:
                    continue
                if (0.0 if a == cur else p.comm_s[cur, a]) + cost[a] <= tmax:
                    choice = a
                    break
            if k > 0:
                memo[cur] = choice
        if choice == U:
            break
        plan[k] = cur = choice
    return plan


def _order(score: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """``cand`` by ``score`` best (highest) first, ties by index."""
    return cand[np.argsort(-score[cand], kind="stable")]


@register("mddi")
def mddi(p: Problem, rng: np.random.Generator | None = None, opts: Any = None) -> np.ndarray:
    """Helpers by distance to the RSU, nearest first ("vehicles gathered around the RSU")."""
    return ranked(p, _order(-p.dist_to_rsu_m, np.flatnonzero(p.kinds() == HELPER)))


def available_bandwidth(p: Problem) -> np.ndarray:
    """(V,) the band each device can give the task [Hz]: a vehicle its own w_n; the RSU its band
    shared by the ``rsu_share`` vehicles it serves (ours: the paper gives RSUs 100-200 MHz and
    vehicles 50-80 MHz but not how an RSU's band is shared)."""
    bw = p.bandwidth_hz.astype(float).copy()
    if p.kinds()[0] == RSU and len(bw):
        bw[0] /= max(int(p.rsu_share), 1)
    return bw


@register("mbdi")
def mbdi(p: Problem, rng: np.random.Generator | None = None, opts: Any = None) -> np.ndarray:
    """RSU and helpers by available bandwidth, widest first."""
    return ranked(p, _order(available_bandwidth(p), np.flatnonzero(p.kinds() != USER)))


@register("mcpdi")
def mcpdi(p: Problem, rng: np.random.Generator | None = None, opts: Any = None) -> np.ndarray:
    """RSU and helpers by compute power, most first."""
    return ranked(p, _order(p.compute_flops, np.flatnonzero(p.kinds() != USER)))


@register("vli")
def vli(p: Problem, rng: np.random.Generator | None = None, opts: Any = None) -> np.ndarray:
    """Vehicles only (helpers and the user), by compute, most first: no RSU participation."""
    return ranked(p, _order(p.compute_flops, np.flatnonzero(p.kinds() != RSU)))


@register("sdi", stochastic=True)
def sdi(p: Problem, rng: np.random.Generator | None = None, opts: Any = None) -> np.ndarray:
    rng = rng if rng is not None else np.random.default_rng(0)
    allowed = p.allowed()
    options = [np.flatnonzero(allowed[i]) for i in range(p.n_devices)]
    u = rng.random(p.steps)  # one draw per step, all at once
    plan = np.empty(p.steps, dtype=np.int64)
    cur = int(u[0] * p.n_devices)
    for k in range(p.steps):
        if k >= p.steps - p.local_steps:
            cur = p.user
        elif k > 0:
            opts = options[cur]
            cur = int(opts[int(u[k] * len(opts))])
        plan[k] = cur
    return plan


__all__ = ["VidiOptions", "register", "optimal", "vidi", "ranked", "available_bandwidth", "mddi", "mbdi", "mcpdi", "vli", "sdi"]
