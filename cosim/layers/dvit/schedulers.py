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
  ``mbdi`` the RSU and helpers by available bandwidth (:func:`available_bandwidth`: the band
  eq. (3) and the channel model give each sender, the RSU's full w0 — ours); ``mcpdi`` the RSU
  and helpers by compute; ``vli`` the vehicles (helpers and the user itself) by compute, no
  RSU; ``sdi`` a random admissible device it has a link to for every step (:func:`sdi`). In a
  re-plan from a helper holding the result, device 0 is that helper (:meth:`Problem.kinds`): each baseline ranks it by its own rule, and may keep
  the result there.
* ``optimal-cl`` (ours): ``optimal`` registered ``replan = "every-step"`` — the exact DP decided
  again at every step completion from the holder on that slot's world (closed loop: VIDI's
  decision epochs, the snapshot's information — no route look-ahead, no receiver's dwell).

Every scheduler is registered with :func:`cosim.register_policy` exactly as a plugin's is, and
called as ``fn(problem, rng, options)``: ``rng`` a generator for the ones registered
``stochastic=True`` (else None), ``options`` the validated instance of its options dataclass
(``[layers.dvit.options.NAME]``; None for a scheduler without options). It returns the device
of every step (``problem.steps`` integers in ``range(problem.n_devices)``) or None when it finds
no admissible plan. ``cosim check`` tests the contract (docs/plugins.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cosim import jit
from cosim.config import option
from cosim.layers.dvit.problem import HELPER, RSU, USER, Problem
from cosim.registry import register_policy


def register(name: str, stochastic: bool = False, options: type | None = None, cost: float = 1.0,
             **traits: Any):  # noqa: ANN201
    """A built-in DViT scheduler: :func:`cosim.register_policy` on layer ``dvit``."""
    return register_policy("dvit", name, stochastic=stochastic, options=options, cost=cost, **traits)


def _shapes(p: Problem) -> None:
    """A hand-built or trimmed problem whose arrays disagree on the number of devices is refused
    here, before the compiled kernels (which do not check bounds) read past an array: ValueError
    naming the shapes. The layer's own problems always agree."""
    V = p.n_devices
    if np.shape(p.comm_s) != (V, V) or np.shape(p.queue_s) != (V,):
        raise ValueError(f"inconsistent Problem: comp_s has {V} devices, queue_s shape {np.shape(p.queue_s)}, "
                         f"comm_s shape {np.shape(p.comm_s)} (expected ({V},) and ({V}, {V}))")


@register("optimal", cost=0.38)
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
    _shapes(p)
    K, V, U = p.steps, p.n_devices, p.user
    cost = p.step_cost()
    allowed = p.allowed()
    tmax = p.t_max_s + 1e-12
    user_step = cost[U]
    if user_step > tmax:
        return None
    inf = np.inf
    n_prefix = K - p.local_steps  # the prefix may be 0..n_prefix steps long
    kernels = _kernels() if n_prefix >= 1 else None
    if kernels:  # everything below, compiled (cosim.jit): the same sums and comparisons, the same plan
        best_s, plan = kernels.optimal_plan(np.ascontiguousarray(p.comm_s, dtype=np.float64),
                                            np.asarray(cost, dtype=np.float64), allowed, int(K), int(n_prefix),
                                            int(U), float(tmax), float(p.upload_s), float(p.user_dwell_s + 1e-12))
        return plan if best_s >= 0 else None
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
        tot = np.empty((V, V))
        for k in range(2, n_prefix + 1):
            np.add(pre[k - 1][:, None], step_mat, out=tot)
            tot.argmin(axis=0, out=parent[k])
            np.minimum.reduce(tot, axis=0, out=pre[k])  # = tot[parent[k], j]: the same value
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
        flat = int(totals.argmin())
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


register("optimal-cl", replan="every-step", cost=0.67)(optimal)  # the same function, closed loop


@dataclass(frozen=True)
class VidiOptions:
    """VIDI's keys (``[layers.dvit.options.vidi]``). Ours, all: the paper gives rho in (0, 1] and
    no value, no phi, and a whole road grid for H'. We read eq. (18) as a *stationary* value —
    Algorithm 1 iterates one state space to a fixed point, not a sum over the K steps left — and
    the user's state absorbs at the cost of its step every step, so rho = 1 would sum to
    infinity: rho is bounded to (0, 0.999] (0 open, as the paper's interval is)."""

    rho: float = option(0.9, lo=0.0, lo_open=True, hi=0.999,
                        doc="discount rho of the value iteration (ours: 0.9; the paper: (0, 1], no value; 1 diverges "
                            "in our stationary reading)")
    phi: float = option(1e-4, lo=0.0, lo_open=True, doc="stop threshold phi [s] (ours)")
    max_iter: int = option(1000, lo=1, doc="value-iteration sweeps at most")
    horizon_cells: int = option(8, lo=1, hi=64,
                                doc="road-grid cells of H' kept along each vehicle's route ahead (ours: the "
                                    "last one absorbs; 8 x 25 m covers a task at urban speeds; the layer walks "
                                    "as many)")


@dataclass
class VidiMDP:
    """Algorithm 1's MDP for one decision: states, rewards, successors and the fixed point.

    State ``s`` = (w, c, p) of the device holding the result: its bandwidth w and compute c
    identify the device of V' (``dev[s]``), p is the road-grid cell along its route ahead
    (``cell[s]``, 0 = the cell it is in; the RSU and a parked vehicle have one). These are the
    states of W' x C' x H' reachable from the present one; the other combinations are never
    reached and cannot change a decision taken from a reachable state."""

    dev: np.ndarray  # (S,) device of each state
    cell: np.ndarray  # (S,) its cell along the device's route ahead
    t: np.ndarray  # (S,) when the device enters that cell [s from now]
    first: np.ndarray  # (V,) index of each device's cell-0 state
    F: np.ndarray  # (S, V) reward F(s, a) = T_k(a), eq. (7); inf where a is not allowed / reachable
    succ: np.ndarray  # (2, S, V) the successor states of (s, a), probability 1/2 each (eq. 17)
    v: np.ndarray  # (S,) the value after the last sweep
    Q: np.ndarray  # (S, V) F + rho E[v(s')]
    recv: np.ndarray  # (S, V) the state of a when it receives the result from s (a == dev[s]: s)
    sweeps: int
    speed: np.ndarray  # (V,) [m/s]
    offset: np.ndarray  # (V,) how far into its current cell each device is [m]
    n_cells: np.ndarray  # (V,) states per device
    cell_m: float

    _at: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def state_at(self, dev: int, when: float) -> int:
        """The state of device ``dev`` holding the result at time ``when`` [s from now]."""
        if self._at is None:
            # its operands as Python numbers, made at the first call (the compiled roll-out does
            # not call it): the roll-out calls it in a loop (the same arithmetic as on numpy
            # scalars, at a fraction of the cost)
            self._at = (self.offset.tolist(), self.speed.tolist(), self.first.tolist(), (self.n_cells - 1).tolist())
        offset, speed, first, last = self._at
        c = int((offset[dev] + speed[dev] * when) // self.cell_m) if speed[dev] > 0 else 0
        return first[dev] + min(max(c, 0), last[dev])


def _positions(p: Problem, m_cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(V, M, 2) centre of each device's cells 0..M-1 ahead (cell 0: where it is), (V,) speed,
    (V,) offset into its current cell. From ``p.ahead_xy`` (routes) where given, else straight
    ahead along the velocity (the fallback where no route is known)."""
    V, g = p.n_devices, p.cell_m
    xy = p.xy if len(p.xy) == V else np.zeros((V, 2))
    vel = p.speed_xy if len(p.speed_xy) == V else np.zeros((V, 2))
    speed = np.hypot(vel[:, 0], vel[:, 1])
    off = p.cell_offset_m if len(p.cell_offset_m) == V else np.zeros(V)
    if p.ahead_xy.ndim == 3 and p.ahead_xy.shape[0] == V and p.ahead_xy.shape[1] >= 1:
        pos = p.ahead_xy[:, :m_cells]
        if pos.shape[1] < m_cells:  # pad with the last known cell (a hand-built problem: the layer walks enough)
            pos = np.concatenate([pos, np.repeat(pos[:, -1:], m_cells - pos.shape[1], axis=1)], axis=1)
        return pos, speed, off
    r = np.maximum(np.arange(m_cells)[None, :] * g - off[:, None] + g / 2, 0.0)
    r[:, 0] = 0.0
    unit = np.divide(vel, speed[:, None], out=np.zeros_like(vel), where=speed[:, None] > 0)
    return xy[:, None, :] + unit[:, None, :] * r[:, :, None], speed, off


def _kernels():  # noqa: ANN202 - the module, or None
    """The compiled kernels (cosim/layers/dvit/kernels.py) where they run (:func:`cosim.jit.use`,
    numpy's transcendental functions reproduced: :func:`cosim.jit.exact_exp`), else None: the
    numpy code runs. Their results are the numpy code's, bit for bit."""
    if not jit.use() or jit.exact_exp() < 0:
        return None
    from cosim.layers.dvit import kernels

    return kernels


_LOG2 = float(np.log(2.0))  # what the numpy code multiplies by (np.log's, as it computes it)


def _advance(speed: np.ndarray, cost: np.ndarray, g: float, M: int) -> np.ndarray:
    """Cells each device moves during one of its own steps, floor(v T_step / g'), as an index:
    0 for a parked device (also where its step never ends: 0 x inf is NaN, whose int64 cast was
    -2^63 and made the value iteration's gather wrap ~10^17 times) and at most ``M`` (a successor is
    clipped to the device's last cell, < M, so a larger or infinite advance gives the same state).
    For every finite advance the same integers as the plain floor."""
    with np.errstate(invalid="ignore"):
        y = np.floor(np.where(speed > 0, speed * cost, 0.0) / g)
    return np.minimum(y, M).astype(np.int64)


def vidi_mdp(p: Problem, opts: VidiOptions | None = None) -> VidiMDP:
    """Build the MDP of Algorithm 1 for ``p`` and run its value iteration (see :func:`vidi`)."""
    opts = opts if opts is not None else VidiOptions()
    _shapes(p)
    V, U, g = p.n_devices, p.user, p.cell_m
    cost = p.step_cost()
    allowed = p.allowed()
    M = int(opts.horizon_cells)
    pos, speed, off = _positions(p, M)
    kernels = _kernels()
    if kernels:  # the state space below, the links and the rewards on, compiled (cosim.jit): the same numbers
        f64 = np.float64
        off64, speed64, cost64 = np.asarray(off, dtype=f64), np.asarray(speed, dtype=f64), np.asarray(cost, dtype=f64)
        handoff = bool(p.handoff_bits > 0 and len(p.xy) == V and len(p.bandwidth_hz) == V)
        ok, rsu, n_cells, first, dev, cell, t, last, q, c_recv, comm = kernels.mdp_build(
            off64, speed64, cost64, int(p.steps), float(g), M, bool(p.origin_rsu), int(U),
            np.ascontiguousarray(pos, dtype=f64), np.ascontiguousarray(p.comm_s, dtype=f64), handoff,
            np.ascontiguousarray(p.xy, dtype=f64).reshape(-1, 2), np.asarray(p.bandwidth_hz, dtype=f64),
            float(p.v2i_pl_exponent), float(p.v2v_pl_exponent), float(p.handoff_bits), float(p.min_distance_m),
            float(p.v2v_range_m), _LOG2, jit.exact_exp())
        if ok:  # (else a floor beyond the integers: the numpy code below, as it always ran)
            dwell = np.asarray(p.dwell_s, dtype=f64) if len(p.dwell_s) == V else np.full(V, np.inf)
            F, succ, idx, sweeps, v, Q = kernels.mdp_solve(
                comm, cost64, allowed, dev, t, dwell, cell, c_recv, q, speed64, last, first, 0.5 * opts.rho,
                float(opts.phi), int(opts.max_iter))
            return VidiMDP(dev, cell, t, first, F, succ, v, Q, idx, sweeps, speed, off, n_cells, g)
    devs = np.arange(V)
    rsu = (devs == 0) & bool(p.origin_rsu)
    # H' of a vehicle: the cells it passes while the rest of the task could run on it (at most
    # horizon_cells; the last absorbs); one for the RSU, a parked vehicle and the user (C2: the
    # user keeps the task, so where it is matters only to the hand-off, priced from its position)
    with np.errstate(invalid="ignore"):  # a NaN offset stays NaN (a parked device: one cell whatever it is)
        reach = np.minimum(np.floor((off + speed * cost * p.steps) / g), M).astype(np.int64) + 2
    n_cells = np.where((speed > 0) & ~rsu & (devs != U), np.minimum(M, reach), 1)
    first = np.concatenate([[0], n_cells.cumsum()[:-1]]).astype(np.int64)
    dev = devs.repeat(n_cells)
    cell = np.arange(len(dev)) - first[dev]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(cell > 0, (cell * g - off[dev]) / speed[dev], 0.0)
    dwell = p.dwell_s if len(p.dwell_s) == V else np.full(V, np.inf)
    # (S, V) arrays: row s = the state (its device dev[s]), column a = the action (the device
    # that takes the next step); broadcasting (S, 1) against (V,) builds them
    S = len(dev)
    Dc, Tc = dev[:, None], t[:, None]
    same = Dc == devs  # a == dev[s]: the holder keeps the result
    last = n_cells - 1
    kernels = _kernels()
    handoff = bool(p.handoff_bits > 0 and len(p.xy) == V and len(p.bandwidth_hz) == V)
    if kernels:  # the same numbers, compiled (cosim.jit)
        f64 = np.float64
        c_recv, comm = kernels.mdp_links(
            dev, cell, t, off.astype(f64), speed.astype(f64), last, np.ascontiguousarray(pos, dtype=f64), float(g),
            np.ascontiguousarray(p.comm_s, dtype=f64), handoff, np.ascontiguousarray(p.xy, dtype=f64).reshape(-1, 2),
            np.asarray(p.bandwidth_hz, dtype=f64), rsu, float(p.v2i_pl_exponent), float(p.v2v_pl_exponent),
            float(p.handoff_bits), float(p.min_distance_m), float(p.v2v_range_m), float(np.log(2.0)), jit.exact_exp())
    else:
        # where the receiver is when the step starts (its cell at time t[s], clipped to its last state)
        c_recv = np.minimum(np.maximum(np.floor((off + speed * Tc) / g).astype(np.int64), 0), last)
        src_xy = pos[dev, cell]  # (S, 2)
        dst_xy = pos[devs, np.minimum(c_recv, M - 1)]  # (S, V, 2)
        d = np.hypot(dst_xy[..., 0] - src_xy[:, None, 0], dst_xy[..., 1] - src_xy[:, None, 1])
        comm0 = p.comm_s[dev]
        comm = comm0
        rsu_dev = rsu[dev][:, None]
    if handoff and not kernels:
        # eq. (3) at the new distance: recover the SNR of today's hand-off from its time and the
        # sender's band, then scale it by the path loss (log-distance, exponent of the link)
        x, y = p.xy[:, 0], p.xy[:, 1]
        d0 = np.hypot(x[Dc] - x, y[Dc] - y)
        alpha = np.empty((S, V))  # a full array: np.power's result may depend on its operands' layout
        alpha[:] = np.where(rsu_dev, p.v2i_pl_exponent, p.v2v_pl_exponent)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            se0 = p.handoff_bits / (comm0 * p.bandwidth_hz[Dc])  # log2(1 + snr0) [bit/s/Hz]
            snr0 = np.expm1(np.minimum(se0, 1000.0) * np.log(2.0))
            gain = (np.maximum(d0, p.min_distance_m) / np.maximum(d, p.min_distance_m)) ** alpha
            se = np.log2(1.0 + snr0 * gain)
            comm = np.where(np.isfinite(comm0) & (comm0 > 0), comm0 * se0 / se, comm0)
        comm = np.where(~rsu_dev & (d > p.v2v_range_m), np.inf, comm)
    if kernels:
        q = _advance(speed, cost, g, M)
        F, succ, idx, sweeps, v, Q = kernels.mdp_solve(
            np.ascontiguousarray(comm, dtype=float), cost, allowed, dev, t, dwell.astype(float), cell, c_recv, q,
            speed.astype(float), last, first, 0.5 * opts.rho, float(opts.phi), int(opts.max_iter))
        return VidiMDP(dev, cell, t, first, F, succ, v, Q, idx, sweeps, speed, off, n_cells, g)
    F = np.where(same, cost, comm + cost)
    F = np.where(allowed[dev] & (Tc <= dwell) | same, F, np.inf)  # C1/C2; receiver in coverage
    # eq. (17): w' = w_a and c' = c_a (one value each); p' uniform over the cells a can occupy
    # after one step of its own duration: from cell c, the vehicle moves d = v * T_step, and from
    # somewhere in c it ends in c + floor(d/g') or the next one
    q = _advance(speed, cost, g, M)
    base = np.where(same, cell[:, None], c_recv) + q
    succ = np.empty((2, S, V), dtype=np.int64)
    np.minimum(base, last, out=succ[0])
    base += speed > 0  # the next cell, for a vehicle that moves
    np.minimum(base, last, out=succ[1])
    succ += first
    # the successors of (s, a) are those of a's own step from the cell it is in when it takes
    # the result (idx), so E[v(s') | s, a] = W[idx[s, a]] with W[x] the mean over x's two
    # self-successors; each sweep gathers v at both successors of idx[s, a] at once (one
    # (2, V, S) gather), then adds, halves (x rho), adds F and takes the min over the actions
    idx = np.where(same, np.arange(S)[:, None], first + c_recv)
    nn = succ[:, np.arange(S), dev]  # (2, S): the self-successors
    F_t = np.ascontiguousarray(np.where(np.isfinite(F), F, 1e9).T)  # an impossible action never wins
    sweeps, v = _value_iteration(nn[:, idx.T], F_t, 0.5 * opts.rho, opts.phi, opts.max_iter)
    Q = np.where(np.isfinite(F), F + (0.5 * opts.rho) * (v[succ[0]] + v[succ[1]]), np.inf)
    return VidiMDP(dev, cell, t, first, F, succ, v, Q, idx, sweeps, speed, off, n_cells, g)


_BLOCK_FIRST, _BLOCK_MAX = 16, 64  # value-iteration sweeps between two stop tests


def _value_iteration(gather: np.ndarray, F_t: np.ndarray, half_rho: float, phi: float,
                     max_iter: int) -> tuple[int, np.ndarray]:
    """Sweeps v <- min_a F_t[a] + half_rho (v[gather[0, a]] + v[gather[1, a]]) from v = 0 until
    max |dv| <= phi (at most ``max_iter``): (sweeps, v). Five numpy calls a sweep; the stop
    test runs over a block of sweeps at once (every v of the block is kept), and the v of the
    first sweep that met it is returned — the same sweeps and the same v as testing after each."""
    V, S = F_t.shape
    pair = np.empty((2, V, S))
    first, second = pair[0], pair[1]
    buf = np.empty((V, S))
    hist = np.zeros((_BLOCK_MAX + 1, S))
    add, mul, least = np.add, np.multiply, np.minimum.reduce
    half_rho = np.array(half_rho)  # a 0-d array: the same product, without converting a Python float per call
    done, block = 0, min(_BLOCK_FIRST, max_iter)
    while True:
        v = hist[0]
        for i in range(1, block + 1):
            v.take(gather, out=pair, mode="wrap")  # every index is in range: "wrap" only skips the check
            add(first, second, out=buf)
            mul(buf, half_rho, out=buf)
            add(buf, F_t, out=buf)
            v = hist[i]
            least(buf, axis=0, out=v)
        dv = np.abs(hist[1:block + 1] - hist[:block]).max(axis=1)
        hit = (dv <= phi).nonzero()[0]
        if len(hit):
            return done + int(hit[0]) + 1, hist[hit[0] + 1].copy()
        done += block
        if done >= max_iter:
            return done, hist[block].copy()
        hist[0] = hist[block]
        # the next block: as many sweeps as the last two changes' ratio says are left
        a = float(dv[-1])
        b = float(dv[-2]) if block > 1 else 0.0
        need = math.ceil(math.log(phi / a) / math.log(a / b)) if 0.0 < a < b else _BLOCK_FIRST
        block = max(1, min(need, _BLOCK_MAX, max_iter - done))


@register("vidi", options=VidiOptions, replan="every-step", cost=0.97)
def vidi(p: Problem, rng: np.random.Generator | None = None, opts: VidiOptions | None = None) -> np.ndarray | None:
    """Algorithm 1 (value iteration distributed inference).

    The MDP (:func:`vidi_mdp`): states (w, c, p) of the device holding the result over
    W' x C' x H', H' the 25 m road-grid cells along each vehicle's route ahead; actions = the
    device to run the next step (eq. 16); reward F(s, a) = T_k(a) (eq. 7), the hand-off priced
    by eq. (3) at the distance between the holder's cell and the receiver's position at that
    time, impossible (C1/C2, out of V2V range, receiver out of the RSU's coverage by then) as
    infinite; transitions per eq. (17), each factor the reciprocal of the number of values it can
    take: w' = w_a, c' = c_a, p' uniform over the (one or two) cells a occupies after one step of
    its own duration at its speed. Value iteration v <- min_a F + rho P v from v = 0 until
    max |dv| <= phi (lines 1-8).

    Line 9, "check for conflicts with constraints" (our reading of it): the policy is rolled out
    from the current state for the non-local steps, each step taking the best action (in Q) that
    is allowed, in reach and within T_max (C1-C3) and *safe*: the device could keep the result
    for the rest of the non-local steps and still hand it to the user then — in V2V range and
    within T_max (C3) at the positions of that time along the routes, the user still in coverage
    (C4: the time before the hand-off <= the user's dwell). A helper that will be out of reach
    of the user by then is not taken: mobility decides. When no action better (in Q) than
    handing over now is safe at the first step (C4 binds, say), the roll-out instead takes the
    best action after which the user can still be reached and hands the result to the user as
    soon as none is (C2 lets the user take over at any step); else everything on the user.

    Registered ``replan = "every-step"``: the layer calls it again at every step completion from
    the device holding the result, on that slot's world (the closed loop of the paper's
    decision epochs); the returned roll-out is the plan until then.
    """
    K, U = p.steps, p.user
    n_pre = K - p.local_steps
    all_user = np.full(K, U, dtype=np.int64)
    if n_pre <= 0 or p.n_devices < 2:
        return all_user
    mdp = vidi_mdp(p, opts)
    tmax, dwell = p.t_max_s + 1e-12, p.user_dwell_s + 1e-12
    F, Q, cost, state_at = mdp.F, mdp.Q, p.step_cost(), mdp.state_at
    kernels = _kernels()
    if kernels:  # line 9 below, compiled (cosim.jit): the same tests on the same numbers
        out = all_user.copy()
        kernels.vidi_plan(int(mdp.first[0]), n_pre, U, float(p.upload_s), tmax, F, Q, mdp.recv, mdp.dev, cost, dwell,
                          np.asarray(mdp.offset, dtype=float), np.asarray(mdp.speed, dtype=float), mdp.first,
                          mdp.n_cells - 1, float(mdp.cell_m), out)
        return out
    ok = np.isfinite(F) & (F <= tmax)  # C1/C2, in reach, C3
    # the way out of each state: to the user directly (C3 of the hand-off step), else through one
    # device that can then hand it over (the RSU's downlink to a far user may be too slow when a
    # helper next to the user is not); ``via`` its best device, ``extra`` the time it adds
    direct = F[:, U] <= tmax
    relay = ok & (F[mdp.recv, U] <= tmax)
    relay[:, U] = False
    relay[np.arange(len(mdp.dev)), mdp.dev] = False
    via = np.where(relay, F, np.inf).argmin(axis=1)
    extra = np.where(direct, 0.0, np.where(relay.any(axis=1), F[np.arange(len(mdp.dev)), via], np.inf))
    # the roll-out below walks these one number at a time: as Python numbers (the same values)
    order = np.where(ok, Q, np.inf).argsort(axis=1, kind="stable").tolist()
    n_ok = ok.sum(axis=1).tolist()
    F, cost, direct, via, extra = F.tolist(), cost.tolist(), direct.tolist(), via.tolist(), extra.tolist()

    s0 = int(mdp.first[0])

    def exit_ok(a: int, when: float, elapsed: float) -> bool:
        """The result, on ``a`` at ``when``, can go to the user (directly or through one device):
        in V2V range, C3, C4."""
        s = state_at(a, when)
        return elapsed + extra[s] <= dwell

    def safe(s: int, a: int, t: float, elapsed: float, n_left: int) -> bool:
        """``a`` can take the result now and keep it for the ``n_left`` non-local steps left,
        and still hand it to the user then."""
        span = F[s][a] + (n_left - 1) * cost[a]
        return exit_ok(a, t + span, elapsed + span)

    def rollout(a: int, exit_early: bool) -> list | None:
        """The plan from taking ``a`` now, then the greedy policy. Without ``exit_early`` every
        step goes to the best action that is safe (it could keep the result to the end); a step
        where none is (before the user is better) is a conflict: None. With it, every step goes
        to the best action after which the user can still be reached, and the result goes to
        the user as soon as none is."""
        s, t, elapsed, plan = s0, 0.0, p.upload_s, []
        for k in range(n_pre):
            if k:
                a, user_next = -1, False
                for b in order[s][:n_ok[s]]:
                    if b == U:
                        user_next = True  # handing over now beats everything after it
                        break
                    f = F[s][b]
                    if safe(s, b, t, elapsed, n_pre - k) if not exit_early else exit_ok(b, t + f, elapsed + f):
                        a = b
                        break
                if a < 0:
                    if not exit_early and not user_next:
                        return None  # a conflict: nothing can go on, and the user is no choice
                    break
            f = F[s][a]
            plan.append(a)
            t, elapsed = t + f, elapsed + f
            s = state_at(a, t)
        if plan and not direct[s] and math.isfinite(extra[s]):
            # the result reaches the user through a relay: its step replaces the last one (or
            # comes after an early exit)
            b = via[s]
            if len(plan) == n_pre:
                plan.pop()
            plan.append(b)
        return plan

    first = []
    for a in order[s0][:n_ok[s0]]:
        if a == U:
            break  # the user is better than every action after it
        first.append(a)
    for exit_early in (False, True):
        for a in first:
            f = F[s0][a]
            if not (safe(s0, a, 0.0, p.upload_s, n_pre) if not exit_early else exit_ok(a, f, p.upload_s + f)):
                continue
            plan = rollout(a, exit_early)
            if plan:
                out = all_user.copy()
                out[:len(plan)] = plan
                return out
    return all_user


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
    return cand[(-score[cand]).argsort(kind="stable")]


@register("mddi", cost=0.05)
def mddi(p: Problem, rng: np.random.Generator | None = None, opts: Any = None) -> np.ndarray:
    """Helpers by distance to the RSU, nearest first ("vehicles gathered around the RSU")."""
    return ranked(p, _order(-p.dist_to_rsu_m, np.flatnonzero(p.kinds() == HELPER)))


def available_bandwidth(p: Problem) -> np.ndarray:
    """(V,) the band each device sends with [Hz] — the w of eq. (3), which prices every hand-off
    by its sender's band: a vehicle's own w_n, the RSU's w0. The channel model (``World``) gives
    every RSU downlink the RSU's full band, so MBDI ranks the RSU by that full band too (ours:
    one rule for the channel and the ranking; the paper does not say how an RSU's band is
    shared). ``p.rsu_share`` is not applied: dividing w0 by the ~65-100 vehicles a grid6 RSU
    serves would price one 16.8 Mbit hand-off from the RSU above T_max."""
    return p.bandwidth_hz.astype(float).copy()


@register("mbdi", cost=0.05)
def mbdi(p: Problem, rng: np.random.Generator | None = None, opts: Any = None) -> np.ndarray:
    """The RSU and helpers by available bandwidth (:func:`available_bandwidth`), widest first.
    With Sec. IV's ranges (RSU 100-200 MHz, vehicles 50-80 MHz) the RSU ranks first whenever it
    is a device of the problem, as it does for MCPDI (most compute): the two differ where the
    RSU cannot take a step (C3) and in re-plans from a helper, where the helpers' order decides."""
    return ranked(p, _order(available_bandwidth(p), np.flatnonzero(p.kinds() != USER)))


@register("mcpdi", cost=0.05)
def mcpdi(p: Problem, rng: np.random.Generator | None = None, opts: Any = None) -> np.ndarray:
    """RSU and helpers by compute power, most first."""
    return ranked(p, _order(p.compute_flops, np.flatnonzero(p.kinds() != USER)))


@register("vli", cost=0.05)
def vli(p: Problem, rng: np.random.Generator | None = None, opts: Any = None) -> np.ndarray:
    """Vehicles only (helpers and the user), by compute, most first: no RSU participation."""
    return ranked(p, _order(p.compute_flops, np.flatnonzero(p.kinds() != RSU)))


@register("sdi", stochastic=True, cost=0.05)
def sdi(p: Problem, rng: np.random.Generator | None = None, opts: Any = None) -> np.ndarray:
    """Stochastically distributed inference (Sec. IV (v)): every non-local step on a device drawn
    uniformly among those the device holding the result may pass it to (C1/C2) *and has a link
    to* (``comm_s`` finite: in V2V range; the holder itself always), the first step from device 0
    (which holds the request); the local steps on the user. Ours: the paper's eq. (3) has no
    range, so every device is linked there; with our ``channel.v2v_range_m`` a draw of an
    unlinked device would fail the task on a hand-off that cannot happen — the baseline at its
    strongest draws only among linked devices, as :func:`ranked` skips devices without a link.
    C3 (T_max) is not weighed: the draw is random. One uniform number per step."""
    rng = rng if rng is not None else np.random.default_rng(0)
    linked = p.allowed() & np.isfinite(p.comm_s)
    options = [row.nonzero()[0] for row in linked]
    u = rng.random(p.steps)  # one draw per step, all at once
    plan = np.empty(p.steps, dtype=np.int64)
    cur = 0  # device 0 holds the request: step 1 is drawn among its links
    for k in range(p.steps):
        if k >= p.steps - p.local_steps:
            cur = p.user
        else:
            opts = options[cur]
            cur = int(opts[int(u[k] * len(opts))])
        plan[k] = cur
    return plan


__all__ = ["VidiOptions", "VidiMDP", "vidi_mdp", "register", "optimal", "vidi", "ranked", "available_bandwidth", "mddi", "mbdi", "mcpdi", "vli", "sdi"]
