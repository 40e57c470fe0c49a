"""The world a layer sees each slot: vehicles on grid cells, RSU association, dwell, radio rates.

``World.update(snapshot)`` computes, vectorised over the N vehicles and M RSUs:

* ``cell`` — road grid cell per vehicle (-1 off-network);
* ``serving`` — index of the serving RSU (-1 none) under ``world.association``: the nearest RSU
  whose disc holds the vehicle (``nearest``), or, for ``sticky``, the RSU that served it in the
  previous slot while it is still inside that RSU's disc; ``dist_m`` to it;
* ``dwell_s`` — predicted remaining time with the serving RSU under that rule (``dwell_model``:
  eq. 12 ``straight``, ``idm``, ``route`` — see :mod:`cosim.world.routes` — or ``auto``, the
  default: ``route`` where the traffic source gives routes, ``straight`` where it gives none,
  resolved at the first slot into :attr:`World.dwell_model`);
* ``rate_v2i_bps`` / ``rate_i2v_bps`` — eq. (3) rates to/from the serving RSU (0 if none);
* ``bandwidth_hz`` / ``compute_flops`` — per-vehicle capabilities, drawn once per vehicle from
  the configured ranges (seeded by the vehicle id, so the same vehicle always has the same);
* per-RSU ``connected``, ``handover_in``, ``handover_out``, ``joined``, ``left`` counts.

Every attribute a layer may read is declared, with its unit and shape, in ``World.__init__``
and exists from construction. V2V rates are computed on demand with :meth:`World.v2v_rate_bps`. Layers draw their own random
numbers from :meth:`World.rng`, which is a pure function of (seed, slot, stream name).
"""

from __future__ import annotations

import math
import sys
from itertools import repeat
from typing import Callable

import numpy as np

from cosim.config import Config, range_pair
from cosim.sources.base import Snapshot
from cosim.world import channel as ch
from cosim.world.coverage import dwell_idm, dwell_straight, rival_table
from cosim.world.grid import RoadGrid
from cosim.world.network import NetInfo
from cosim.world.routes import RouteDwell, RouteGeometry, route_index
from cosim.world.rsu import RsuSet, build_rsus


def grown(a: np.ndarray, n: int, fill: int) -> np.ndarray:
    """``a`` (one entry per world vehicle index) long enough for ``n`` vehicles: doubled and
    padded with ``fill`` when short, so that appending vehicles costs amortised O(1)."""
    if len(a) >= n:
        return a
    return np.concatenate([a, np.full(max(n, 2 * len(a)) - len(a), fill, dtype=a.dtype)])


class World:
    def __init__(self, cfg: Config, net: NetInfo, rsus: RsuSet | None = None):
        self.cfg = cfg
        self.net = net
        self.seed = cfg.scenario.seed
        self.grid = RoadGrid.from_edge_lengths(net.edge_length, cfg.world.grid_cell_m)
        self.rsus = rsus if rsus is not None else build_rsus(cfg, net)
        c = cfg.channel
        self.noise_mw = float(ch.dbm_to_mw(c.noise_dbm))
        self.vehicle_p_mw = float(ch.dbm_to_mw(c.vehicle_tx_power_dbm))
        self.rsu_p_mw = ch.dbm_to_mw(self.rsus.tx_power_dbm)
        self._veh_bw = range_pair(c.vehicle_bandwidth_hz, "channel.vehicle_bandwidth_hz")
        self._veh_cpu = range_pair(c.vehicle_compute_flops, "channel.vehicle_compute_flops")
        self._vidx_cache: dict[str, int] = {}
        # the dwell's bisectors: each RSU's possible rivals, where that is at most half of them
        # (measured: with 4 or 11 RSUs gathering them costs what it saves; with 108, 15x less)
        table = rival_table(self.rsus.x, self.rsus.y, self.rsus.radius_m)
        self._rivals = table if 2 * table.shape[1] <= len(self.rsus) else None
        self._uids: list[int] = []
        # per vehicle index: its uid, converted once when the vehicle first appears (``_n_uid`` of
        # them; the array grows by doubling, so a run of many vehicles does not re-convert them all
        # every slot a new one departs)
        self._uid_arr = np.zeros(0, dtype=np.uint64)
        self._n_uid = 0
        # (stream tag, lo, hi) -> (per vehicle index: its fixed draw, how many vehicles are drawn)
        self._draws: dict = {}
        self._last_srv = np.zeros(0, dtype=np.int64)  # per vehicle index: serving RSU in its last slot
        self._last_slot = np.zeros(0, dtype=np.int64)  # per vehicle index: the last slot it was seen
        self._prev_vidx = np.zeros(0, dtype=np.int64)
        self.vehicle_names: list[str] = []
        #: vehicle id -> its route (tuple of edge ids), from the source's ``route_of`` where it knows
        #: routes (live SUMO); None where it does not (a replayed trace without routes)
        self.route_of: Callable[[str], tuple] | None = None
        #: the one walker of SUMO routes (lane shapes, junctions on their internal edges): the route
        #: dwell and every layer that looks ahead along routes (:meth:`route_ahead`) walk with it
        self.geometry = RouteGeometry(net)
        #: the dwell model in force: ``world.dwell_model``, where ``"auto"`` becomes ``"route"`` or
        #: ``"straight"`` at the first slot (by whether ``route_of`` is set by then: every source sets
        #: it before its first snapshot, a policy worker's copy with the first slot's routes)
        self.dwell_model: str = cfg.world.dwell_model
        self.route_dwell = None
        if self.dwell_model == "route":
            self._build_route_dwell()
        #: why the configured dwell model could not be applied (said once on stderr), else ""
        self.dwell_note = ""
        #: print notes on stderr (a policy worker's copy of the world leaves them to the plugin's)
        self.say_notes = True
        self._bw = self._cpu = self._index = None
        self._served = np.zeros(0, dtype=bool)  # serving >= 0, this slot's
        self.slot = -1
        self.time_s = float("nan")
        self.snap = Snapshot.empty(0.0)
        m = len(self.rsus)
        self._zero_m = np.zeros(m, dtype=np.int64)
        # -- the contract: what a layer may read after each update(), N = vehicles this slot,
        # M = RSUs. Every attribute exists from construction (empty before the first slot).
        f, i = np.zeros(0), np.zeros(0, dtype=np.int64)
        #: (N,) int: index of each vehicle in ``vehicle_names`` (order of first appearance in the run)
        self.vidx: np.ndarray = i
        #: (N,) uint64: a stable hash of each vehicle id (keys the per-vehicle and fading draws)
        self.uid: np.ndarray = np.zeros(0, dtype=np.uint64)
        #: (N,) int: road grid cell (g' = grid_cell_m along the edge); -1 off the network
        self.cell: np.ndarray = i
        #: (N,) float [m/s]: velocity components from SUMO's speed and compass angle
        self.vx: np.ndarray = f
        self.vy: np.ndarray = f
        #: (N,) int: index of the serving RSU (nearest whose disc contains the vehicle), -1 none
        self.serving: np.ndarray = i
        #: (N, M) float [m]: distance of every vehicle to every RSU
        self.dist_all_m: np.ndarray = np.zeros((0, m))
        #: (N,) float [m]: distance to the serving RSU (NaN if none)
        self.dist_m: np.ndarray = f
        #: (N,) float [s]: predicted remaining time in the serving RSU's coverage (NaN if none)
        self.dwell_s: np.ndarray = f
        #: (N,) float [bit/s]: eq. (3) uplink / downlink rate with the serving RSU (0 if none)
        self.rate_v2i_bps: np.ndarray = f
        self.rate_i2v_bps: np.ndarray = f
        #: (N,) float [mW]: interference from the other RSUs at each vehicle
        self.interference_mw: np.ndarray = f
        #: (M,) int per RSU this slot: vehicles served, handovers in/out, joined, left coverage
        self.connected = self.handover_in = self.handover_out = self.joined = self.left = self._zero_m

    def _build_route_dwell(self) -> None:
        wc = self.cfg.world
        self.route_dwell = RouteDwell(self.net, self.rsus, self.grid.index, rule=wc.association, speed=wc.route_speed,
                                      prior=wc.route_speed_prior, sample_m=wc.route_sample_m, cap_s=wc.dwell_cap_s,
                                      geometry=self.geometry)

    # -- per slot --------------------------------------------------------------------------
    def update(self, snap: Snapshot, slot: int | None = None) -> "World":
        if self.dwell_model == "auto":  # the first slot: the source has said whether it has routes
            self.dwell_model = "route" if self.route_of is not None else "straight"
            if self.dwell_model == "route":
                self._build_route_dwell()
        self.slot = self.slot + 1 if slot is None else slot
        self.time_s = snap.time_s
        self.snap = snap
        n, m = len(snap), len(self.rsus)
        #: index of each vehicle in ``vehicle_names`` (order of first appearance in this run)
        self.vidx = self._indices(snap.ids)
        have = self._n_uid
        if have < len(self._uids):  # only the new vehicles' uids converted; the array grown amortised
            self._uid_arr = grown(self._uid_arr, len(self._uids), 0)
            self._uid_arr[have:len(self._uids)] = self._uids[have:]
            self._n_uid = len(self._uids)
        self.uid = self._uid_arr[self.vidx]
        #: row of each vehicle's edge in ``grid.index`` (``len(grid.index)``: an unknown edge)
        self.edge_row = self.grid.rows(snap.edge)
        self.cell = self.grid.cells(snap.edge, snap.lane_pos, self.edge_row)
        self.vx, self.vy = snap.velocity()
        self._bw = self._cpu = self._index = None

        keep = None
        if self.cfg.world.association == "sticky":  # stay with last slot's RSU while inside its disc
            self._last_srv = grown(self._last_srv, len(self.vehicle_names), -1)
            self._last_slot = grown(self._last_slot, len(self.vehicle_names), -2)
            keep = np.where(self._last_slot[self.vidx] == self.slot - 1, self._last_srv[self.vidx], -1)
        d_all, self.serving = self.rsus.associate(snap.x, snap.y, keep)
        self.dist_all_m = d_all
        self._served = has = self.serving >= 0
        srv = np.where(has, self.serving, 0)
        self.dist_m = np.where(has, d_all[np.arange(n), srv] if m else 0.0, np.nan)
        if self.route_dwell is not None:
            self.route_dwell.learn(self.edge_row, snap.speed)
        self.dwell_s = self.predict_dwell(self.dwell_model)
        self._rates(has, srv, d_all)
        self._handovers(has)
        return self

    def _indices(self, ids: np.ndarray) -> np.ndarray:
        """Each vehicle's index in ``vehicle_names``; a vehicle seen for the first time is appended
        (and its uid computed), in the order of ``ids``. One pass over the ids: the known ones
        looked up (-1 for a new one), then the few new ones numbered in order."""
        n, idxs = len(ids), self._vidx_cache
        vidx = np.fromiter(map(idxs.get, ids, repeat(-1)), np.int64, n)
        new = np.flatnonzero(vidx < 0)
        if len(new):
            names, uids = self.vehicle_names, self._uids
            for i in new.tolist():
                vid = ids[i]
                k = idxs.get(vid)
                if k is None:  # (a repeated id in one snapshot gets the index its first row got)
                    k = idxs[vid] = len(names)
                    names.append(vid)
                    uids.append(ch.stable_uid(vid))
                vidx[i] = k
        return vidx

    def predict_dwell(self, model: str, only: np.ndarray | None = None) -> np.ndarray:
        """This slot's predicted dwell [s] per vehicle (NaN where unserved) by ``model``
        (``straight``, ``idm`` or ``route``; ``route`` only when the world's model is ``route``);
        ``only``: a mask of the vehicles to predict for (the others get NaN).

        Each predicts the time until the association rule in force stops the serving RSU
        serving the vehicle: leaving its disc (``sticky``), or also crossing into a nearer
        RSU's range (``nearest``). Where a vehicle's route is unknown, ``route`` gives the
        straight-line value (a replay of a trace without routes: all of them)."""
        wc, r, s = self.cfg.world, self.rsus, self.snap
        has = self._served if only is None else self._served & only
        if not has.any():
            return np.full(len(s), np.nan)
        if model == "route":
            if self.route_dwell is None:
                raise ValueError("predict_dwell('route') needs a world whose dwell model is 'route' "
                                 "(world.dwell_model = 'route', or 'auto' on a source with routes)")
            if self.route_of is None and not self.dwell_note:
                self.dwell_note = "the traffic source gives no routes: dwell_model 'route' falls back to 'straight'"
                if self.say_notes:
                    print(f"cosim: note: {self.dwell_note}", file=sys.stderr)
            out, ok = self.route_dwell.predict(self.vidx, s.ids, self.edge_row, s.edge, s.lane_pos, s.x, s.y,
                                               s.speed, self.serving if only is None else np.where(has, self.serving, -1),
                                               self.route_of, self.time_s, len(self.vehicle_names))
            if not ok.all():
                rest = has & ~ok
                if rest.any():
                    out[rest] = self.predict_dwell("straight", rest)[rest]
            return out
        out = np.full(len(s), np.nan)
        srv = self.serving[has]
        cx, cy, rad = r.x[srv], r.y[srv], r.radius_m[srv]
        rivals = (r.x, r.y, r.radius_m, srv, self._rivals) if wc.association == "nearest" else None
        if model == "idm":
            out[has] = dwell_idm(
                s.x[has], s.y[has], s.speed[has], s.angle[has], s.lane[has], s.lane_pos[has], s.length[has],
                cx, cy, rad, cap_s=wc.dwell_cap_s, dt=self.cfg.scenario.slot_s, horizon_s=wc.idm_horizon_s,
                a_max=wc.idm_max_accel_mps2, b_max=wc.idm_max_decel_mps2, v_des=wc.idm_desired_speed_mps,
                delta=wc.idm_delta, s0=wc.idm_min_gap_m, headway=wc.idm_headway_s, rivals=rivals)
        else:
            out[has] = dwell_straight(s.x[has], s.y[has], self.vx[has], self.vy[has], cx, cy, rad,
                                      cap_s=wc.dwell_cap_s, rivals=rivals)
        return out

    def _rates(self, has: np.ndarray, srv: np.ndarray, d_all: np.ndarray) -> None:
        c, r = self.cfg.channel, self.rsus
        n = len(self.snap)
        gain_all = ch.path_gain(d_all, c.v2i_pl_ref_db, c.v2i_pl_exponent, 1000.0, c.min_distance_m)
        rx_all = gain_all * self.rsu_p_mw[None, :]
        idx = np.arange(n)
        gain = gain_all[idx, srv] if len(r) else np.zeros(n)
        if c.interference and len(r) > 1:
            self.interference_mw = rx_all.sum(axis=1) - rx_all[idx, srv]
        else:
            self.interference_mw = np.zeros(n)
        if c.fading == "rayleigh":  # (each row's fading from its own contiguous row, as one call each gave)
            u = ch.hash_uniform_rows((self.seed, self.slot), (ch.V2I, ch.I2V), self.uid, srv)
            h_up, h_dn = ch.rayleigh_power(u[0]), ch.rayleigh_power(u[1])
        else:
            h_up = h_dn = np.ones(n)
        up = ch.shannon_rate(self.bandwidth_hz, self.vehicle_p_mw, gain * h_up, self.noise_mw, self.interference_mw)
        w0 = r.bandwidth_hz[srv] if len(r) else np.zeros(n)
        p0 = self.rsu_p_mw[srv] if len(r) else np.zeros(n)
        dn = ch.shannon_rate(w0, p0, gain * h_dn, self.noise_mw, self.interference_mw)
        self.rate_v2i_bps = np.where(has, up, 0.0)
        self.rate_i2v_bps = np.where(has, dn, 0.0)

    def _handovers(self, has: np.ndarray) -> None:
        """Per-RSU handover/join/leave counts against the previous slot (direct indexing by
        vehicle index: no searches, which miss the cache after every SUMO step); ``has``: served
        now (``serving >= 0``)."""
        m, nv = len(self.rsus), len(self.vehicle_names)
        self._last_srv = grown(self._last_srv, nv, -1)
        self._last_slot = grown(self._last_slot, nv, -2)
        vidx, now = self.vidx, self.serving
        was_here = self._last_slot[vidx] == self.slot - 1
        before = np.where(was_here, self._last_srv[vidx], -1)
        had = before >= 0
        moved = had & has & (before != now)
        self.handover_in = np.bincount(now[moved], minlength=m)
        self.handover_out = np.bincount(before[moved], minlength=m)
        self.joined = np.bincount(now[has & ~had], minlength=m)
        self._last_slot[vidx] = self.slot
        # lost coverage here, or left the simulation (seen last slot, not now)
        prev = self._prev_vidx
        gone_srv = self._last_srv[prev[self._last_slot[prev] == self.slot - 1]]
        lost = np.concatenate([before[had & ~has], gone_srv[gone_srv >= 0]])
        self.left = np.bincount(lost, minlength=m)
        self.connected = np.bincount(now[has], minlength=m)
        self._last_srv[vidx] = now
        self._prev_vidx = vidx

    # -- on demand ---------------------------------------------------------------------------
    def route_ahead(self, i: int, dists, hint: int = 0) -> tuple[list | None, int]:
        """Where snapshot vehicle ``i`` will be after ``dists`` more metres (increasing, >= 0) along
        its SUMO route, walked by :attr:`geometry` from its lane position: (points, k) — each point
        (x, y) [m], None from where the route ends or leaves the known network; k the index of its
        edge in its route (found from ``hint`` on first; inside a junction, the edge before the
        crossing it is on). (None, -1) where it has no known route: the source gives none (a
        replayed trace without them), its edge is not on its route, or it is on a junction-internal
        edge no connection of its route names."""
        if self.route_of is None:
            return None, -1
        s = self.snap
        route = self.route_of[s.ids[i]]
        if not route:
            return None, -1
        edge, pos = s.edge[i], float(s.lane_pos[i])
        inside = edge.startswith(":")
        if inside:
            k = self.geometry.crossing_index(route, edge, hint)
        else:
            k = route_index(route, edge, hint) if self.geometry.knows(edge) else -1
        if k < 0:
            return None, -1
        return self.geometry.points_along(route, k, [pos + d for d in dists], inside), k

    def vehicle_draw(self, tag: np.uint64, lo: float, hi: float) -> np.ndarray:
        """A fixed per-vehicle value in [lo, hi) for stream ``tag`` (same vehicle, same value), for
        this slot's vehicles. Each vehicle's value is drawn once, when first asked for after it
        appeared, and kept by vehicle index (per tag and range): the same numbers, elementwise, as
        ``lo + (hi - lo) * hash_uniform(seed, tag, uid)`` of all of them again each slot."""
        key = (int(tag), float(lo), float(hi))
        arr, have = self._draws.get(key, (np.zeros(0), 0))
        n = self._n_uid
        if have < n:
            arr = grown(arr, n, 0.0)
            arr[have:n] = lo + (hi - lo) * ch.hash_uniform(self.seed, tag, self._uid_arr[have:n])
            self._draws[key] = (arr, n)
        return arr[self.vidx]

    @property
    def index(self) -> dict[str, int]:
        """Vehicle id -> its index in this slot's snapshot (built on first use each slot)."""
        if self._index is None:
            self._index = {v: i for i, v in enumerate(self.snap.ids)}
        return self._index

    @property
    def bandwidth_hz(self) -> np.ndarray:
        """Vehicle bandwidth w_n [Hz], a fixed draw per vehicle from the configured range."""
        if self._bw is None:
            self._bw = self.vehicle_draw(ch.VEH_BW, *self._veh_bw)
        return self._bw

    @property
    def compute_flops(self) -> np.ndarray:
        """Vehicle compute c_n [FLOP/s], a fixed draw per vehicle from the configured range."""
        if self._cpu is None:
            self._cpu = self.vehicle_draw(ch.VEH_CPU, *self._veh_cpu)
        return self._cpu

    def v2v_rate_bps(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Eq. (3) rate from vehicle ``i`` to vehicle ``j`` (snapshot indices) this slot.

        Zero beyond ``channel.v2v_range_m`` and for i == j; fading is symmetric in (i, j).
        """
        c, s = self.cfg.channel, self.snap
        i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
        d = np.hypot(s.x[i] - s.x[j], s.y[i] - s.y[j])
        gain = ch.path_gain(d, c.v2v_pl_ref_db, c.v2v_pl_exponent, 1.0, c.min_distance_m)
        if c.fading == "rayleigh":
            a, b = np.minimum(self.uid[i], self.uid[j]), np.maximum(self.uid[i], self.uid[j])
            gain = gain * ch.rayleigh_power(ch.hash_uniform(self.seed, self.slot, ch.V2V, a, b))
        rate = ch.shannon_rate(self.bandwidth_hz[i], self.vehicle_p_mw, gain, self.noise_mw)
        return np.where((d <= c.v2v_range_m) & (i != j), rate, 0.0)

    def v2v_rate_pair(self, i: int, j: int) -> float:
        """:meth:`v2v_rate_bps` of one pair in pure Python (a layer stepping through a schedule
        asks for one link at a time; the array path costs ~20x more per call). Same formula and
        draws; the last bit may differ where numpy's vectorised log differs from the C library's."""
        c, s = self.cfg.channel, self.snap
        if i == j:
            return 0.0
        d = math.hypot(float(s.x[i]) - float(s.x[j]), float(s.y[i]) - float(s.y[j]))
        if d > c.v2v_range_m:
            return 0.0
        pl_db = c.v2v_pl_ref_db + 10.0 * c.v2v_pl_exponent * math.log10(max(d, c.min_distance_m) / 1.0)
        gain = 10.0 ** (-pl_db / 10.0)
        if c.fading == "rayleigh":
            a, b = sorted((int(self.uid[i]), int(self.uid[j])))
            gain *= -math.log1p(-ch.hash_uniform_int(self.seed, self.slot, int(ch.V2V), a, b))
        return float(self.bandwidth_hz[i]) * math.log2(1.0 + self.vehicle_p_mw * gain / self.noise_mw)

    def rng(self, stream: str) -> np.random.Generator:
        """A generator that depends only on (seed, slot, stream): same draws for every policy."""
        return np.random.default_rng([self.seed, max(self.slot, 0), ch.stable_uid(stream)])
