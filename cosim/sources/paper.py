"""The DViT paper's own world (paper 000) as a :class:`~cosim.sources.base.TrafficSource`: no SUMO.

Xie et al. (IEEE TVT 2024) measured their schedulers in a world far simpler than SUMO's. Sec. IV:
one RSU with a 500 m coverage radius, "vehicles are randomly located in the urban area", 20
vehicles; Sec. II-D: each vehicle follows the one ahead of it by the IDM-like eqs. (8)-(11) and
leaves the RSU's coverage by eq. (12). This source builds that world so that the same layers,
policies, recorder and tables run in it (``traffic.source = "paper000"``; ``cosim run --world
paper SCENARIO``; ``scenarios/paper000.toml``).

Our reading of what the paper leaves vague (each one a knob; docs/paper_worlds.md):

* **The road** ("the urban road", divided into grid cells of g' = 25 m): one straight road
  through the RSU's disc, both directions, one lane each — the network
  ``sumo_nets/paper000/road.net.xml`` (996 m long, the RSU 1.6 m beside each lane's centre line
  at its middle, so every point of the road lies in coverage). The source reads each edge's
  lane shape from the network; any network of straight edges would do.
* **"Randomly located"**: at the start, each of ``traffic.vehicles`` vehicles picks a direction
  by a fair coin (``traffic.directions = 2``) and a position uniformly at random along its lane,
  subject to a minimum spacing of one vehicle length + phi_min + theta * (the highest initial
  speed) — uniform over all such placements (the spacing is subtracted, the remaining free
  length split by sorted uniform draws, and added back).
* **Speeds**: each vehicle starts at a speed uniform in ``traffic.initial_speed_mps``
  (30-50 km/h) and then drives by eq. (8) towards ``world.idm_desired_speed_mps`` (v_max, the
  speed of steady flow: 13.89 m/s, 50 km/h).
* **Car following, eqs. (8)-(11)**: with the ``world.idm_*`` parameters (the ones cosim's IDM
  dwell predictor uses): lambda_max 2.6 m/s^2, zeta_max 4.5 m/s^2, delta 4, phi_min 2.5 m,
  theta 1 s; the front vehicle of each lane drives on a free road (no interaction term). Eq.
  (9)'s denominator 2 sqrt(phi_max zeta_max) is read as IDM's 2 sqrt(lambda_max zeta_max) (the
  paper's reference [12]; phi_max is defined nowhere). Eqs. (10)-(11) are integrated as printed
  (explicit Euler for the speed, the ballistic step for the position) with |gamma| = the step
  length (``scenario.step_length_s``; 1 s where neither the scenario nor the sumocfg sets one),
  the speed kept >= 0 (a vehicle that would reverse stops: the position then advances by the
  mean of the two speeds, which is eq. (11) whenever the speed stays positive). A gap never
  closes below 0.1 m (a guard against the explicit step; the tests check that it never acts
  with the defaults). Vehicles are 5 m long.
* **Keeping 20 vehicles**: a vehicle whose front passes the road's end leaves the simulation
  (and the coverage, as the paper's C4 assumes vehicles do); a new one (a new id, hence new
  bandwidth and compute draws) enters at the start of the same lane as soon as there is room:
  a gap to the last vehicle of at least phi_min + theta * v at the entry speed v = the new
  vehicle's drawn speed, capped at that of the vehicle ahead. So the count is 20 except for
  the instants an entry waits for room.

Paper 001's world (the MoE paper, abstract only) is this world with its own random stream:
:class:`cosim.sources.paper001.Paper001Source` (``traffic.source = "paper001"``;
``scenarios/paper001.toml``).

Deterministic per seed: every draw comes from one generator seeded by (seed, "paper000").
Vehicle ids are ``p<k>`` in order of entry; every vehicle's route is its one edge
(``route_of``).
"""

from __future__ import annotations

import math

import numpy as np

from cosim.engine.timeline import EPS  # the run's one time tolerance (the slot loop's)
from cosim.errors import ConfigError
from cosim.sources.base import Routes, Snapshot
from cosim.world.channel import stable_uid
from cosim.world.network import read_net

#: vehicle length [m] (SUMO's passenger car)
LENGTH_M = 5.0
#: the smallest gap the explicit step may leave between two vehicles [m]
MIN_GAP_M = 0.1


def idm_accel(v: np.ndarray, dv: np.ndarray, gap: np.ndarray, a_max: float, b_max: float, v_des: float,
              delta: float, s0: float, headway: float) -> np.ndarray:
    """Eqs. (8)-(9): acceleration [m/s^2] of vehicles at speed ``v`` with relative speed ``dv`` =
    v - v_leader and ``gap`` [m] to the leader's rear (inf: a free road)."""
    free = 1.0 - (v / v_des) ** delta
    s_star = s0 + v * headway + v * dv / (2.0 * math.sqrt(a_max * b_max))
    inter = np.where(np.isfinite(gap), (np.maximum(s_star, 0.0) / np.maximum(gap, MIN_GAP_M)) ** 2, 0.0)
    return a_max * (free - inter)


class _Lane:
    """One straight lane: its edge, lane id, start point, unit direction, length, compass angle."""

    def __init__(self, edge: str, shape: str, length: float):
        pts = [tuple(float(v) for v in p.split(",")[:2]) for p in shape.split()]
        (x0, y0), (x1, y1) = pts[0], pts[-1]
        d = math.hypot(x1 - x0, y1 - y0)
        self.edge, self.lane, self.length = edge, f"{edge}_0", float(length)
        self.x0, self.y0, self.ux, self.uy = x0, y0, (x1 - x0) / d, (y1 - y0) / d
        self.angle = math.degrees(math.atan2(self.ux, self.uy)) % 360.0  # SUMO: 0 = north, clockwise


class Stepped:
    """The stepping every synthetic world shares: ``step_to`` advances the model in steps of at
    most ``dt`` (``self._step``) and returns ``self._snapshot()``; the subclass sets ``t``,
    ``dt``, ``begin_s`` and ``end_s``."""

    sumo_version = ""

    def time_s(self) -> float:
        return self.begin_s

    def step_to(self, time_s: float) -> Snapshot:
        while self.t < time_s - EPS:
            self._step(min(self.dt, time_s - self.t))
        self.t = time_s
        return self._snapshot()

    def finished(self) -> bool:
        return self.end_s is not None and self.t >= self.end_s - EPS

    def close(self) -> None:
        pass

    def _follow(self, dt: float) -> np.ndarray:
        """One car-following step of every vehicle (eqs. (8)-(11), IDM parameters of the
        subclass, ``_leaders()`` its gaps and leaders' speeds): sets the new speeds and
        accelerations and returns how far each moves, kept ``MIN_GAP_M`` behind its leader
        (``guarded`` counts the moves that guard shortened)."""
        gap, v_lead = self._leaders()
        a = idm_accel(self.v, self.v - v_lead, gap, self.a_max, self.b_max, self.v_des, self.delta, self.s0,
                      self.headway)
        v_new = np.maximum(self.v + a * dt, 0.0)  # eq. (10), no reversing
        move = 0.5 * (self.v + v_new) * dt  # eq. (11) while the speed stays positive
        limit = np.where(np.isfinite(gap), gap - MIN_GAP_M, np.inf)
        over = move > limit + 1e-9
        if over.any():
            self.guarded += int(over.sum())
            move = np.minimum(move, np.maximum(limit, 0.0))
        self.v, self.a = v_new, a
        return move


class Paper000Source(Stepped):
    """Vehicles on a straight road through one RSU's disc, following eqs. (8)-(11) (see module doc)."""

    #: the world's name: its random stream is seeded by (seed, world)
    world = "paper000"

    def __init__(self, net_file: str, seed: int, vehicles: int = 20, directions: int = 2,
                 initial_speed_mps: tuple = (8.33, 13.89), idm: dict | None = None, step_s: float = 1.0,
                 begin_s: float = 0.0, end_s: float | None = None):
        net = read_net(net_file)
        lanes = [_Lane(e, net.edge_shape[e], net.edge_length[e]) for e in net.drivable_edges if e in net.edge_shape]
        if len(lanes) < directions:
            raise ConfigError(f"{net_file}: traffic.directions = {directions} needs {directions} drivable edges, "
                              f"the network has {len(lanes)}")
        self.lanes = lanes[:directions]
        self.n = int(vehicles)
        self.v_lo, self.v_hi = (float(v) for v in initial_speed_mps)
        spacing = LENGTH_M + float((idm or {}).get("s0", 2.5)) + float((idm or {}).get("headway", 1.0)) * self.v_hi
        short = min(self.lanes, key=lambda ln: ln.length)
        if LENGTH_M + spacing * (self.n - 1) > short.length:  # the coin may put all of them on one lane
            raise ConfigError(f"traffic.vehicles = {self.n}: that many vehicles do not fit on {short.edge} of "
                              f"{net_file} ({short.length:g} m at {spacing:g} m apart)")
        p = idm or {}
        self.a_max = float(p.get("a_max", 2.6))
        self.b_max = float(p.get("b_max", 4.5))
        self.v_des = float(p.get("v_des", 13.89))
        self.delta = float(p.get("delta", 4.0))
        self.s0 = float(p.get("s0", 2.5))
        self.headway = float(p.get("headway", 1.0))
        self.dt = float(step_s)
        self.begin_s = float(begin_s)
        self.end_s = end_s
        self.rng = np.random.default_rng([int(seed), stable_uid(self.world)])
        self.route_of = Routes()
        self.t = self.begin_s
        self._next_id = 0
        # per vehicle: parallel lists (few vehicles: plain arrays rebuilt on change)
        self.ids: list[str] = []
        self.lane_of = np.zeros(0, dtype=np.int64)
        self.pos = np.zeros(0)  # front bumper along the lane [m]
        self.v = np.zeros(0)
        self.a = np.zeros(0)
        self.waiting = [0] * len(self.lanes)  # entries waiting for room, per lane
        #: vehicles that left at the road's end, over the run
        self.left = 0
        #: times the gap guard acted (0 with the defaults: a test checks it)
        self.guarded = 0

    # -- the contract ----------------------------------------------------------------------
    def start(self) -> None:
        rng, n = self.rng, self.n
        lane_of = rng.integers(0, len(self.lanes), n) if len(self.lanes) > 1 else np.zeros(n, dtype=np.int64)
        speed = rng.uniform(self.v_lo, self.v_hi, n)
        spacing = LENGTH_M + self.s0 + self.headway * self.v_hi
        pos = np.zeros(n)
        for k, lane in enumerate(self.lanes):
            on = np.flatnonzero(lane_of == k)
            free = lane.length - LENGTH_M - spacing * max(len(on) - 1, 0)  # >= 0: checked in __init__
            # uniform over placements with the minimum spacing: sorted uniforms in the free length
            pos[on] = LENGTH_M + np.sort(rng.uniform(0.0, free, len(on))) + spacing * np.arange(len(on))
        order = np.lexsort((pos, lane_of))  # ids in a fixed order: by lane, rear to front
        for i in order:
            self._add(int(lane_of[i]), float(pos[i]), float(speed[i]))

    # -- the model --------------------------------------------------------------------------
    def _add(self, lane: int, pos: float, speed: float) -> None:
        vid = f"p{self._next_id}"
        self._next_id += 1
        self.ids.append(vid)
        self.lane_of = np.append(self.lane_of, lane)
        self.pos = np.append(self.pos, pos)
        self.v = np.append(self.v, speed)
        self.a = np.append(self.a, 0.0)
        self.route_of.add(vid, (self.lanes[lane].edge,))

    def _leaders(self) -> tuple[np.ndarray, np.ndarray]:
        """Per vehicle: the gap to the rear of the vehicle ahead on its lane [m] (inf: none) and
        that vehicle's speed."""
        n = len(self.ids)
        gap, v_lead = np.full(n, np.inf), self.v.copy()
        order = np.lexsort((self.pos, self.lane_of))
        same = self.lane_of[order[1:]] == self.lane_of[order[:-1]]
        f, l = order[:-1][same], order[1:][same]  # follower, its leader
        gap[f] = self.pos[l] - LENGTH_M - self.pos[f]
        v_lead[f] = self.v[l]
        return gap, v_lead

    def _step(self, dt: float) -> None:
        if len(self.ids):
            self.pos = self.pos + self._follow(dt)
            self.t += dt
            gone = np.flatnonzero(self.pos > np.array([ln.length for ln in self.lanes])[self.lane_of])
            if len(gone):
                keep = np.setdiff1d(np.arange(len(self.ids)), gone)
                for i in gone:
                    self.waiting[int(self.lane_of[i])] += 1
                self.left += len(gone)
                self.ids = [self.ids[i] for i in keep]
                self.lane_of, self.pos, self.v, self.a = (x[keep] for x in (self.lane_of, self.pos, self.v, self.a))
        else:
            self.t += dt
        self._enter()

    def _enter(self) -> None:
        """Entries waiting for room, one per lane per step, at the lane's start (front at LENGTH_M)."""
        for k, waiting in enumerate(self.waiting):
            if not waiting:
                continue
            on = np.flatnonzero(self.lane_of == k)
            v = float(self.rng.uniform(self.v_lo, self.v_hi))
            if len(on):
                last = on[np.argmin(self.pos[on])]
                v = min(v, float(self.v[last]))
                if self.pos[last] - LENGTH_M - LENGTH_M < self.s0 + self.headway * v:
                    continue  # no room yet (the draw is spent either way: the run stays deterministic)
            self.waiting[k] -= 1
            self._add(k, LENGTH_M, v)

    def _snapshot(self) -> Snapshot:
        n = len(self.ids)
        if not n:
            return Snapshot.empty(self.t)
        lanes = self.lanes
        li = self.lane_of
        x0 = np.array([ln.x0 for ln in lanes])[li]
        y0 = np.array([ln.y0 for ln in lanes])[li]
        ux = np.array([ln.ux for ln in lanes])[li]
        uy = np.array([ln.uy for ln in lanes])[li]
        return Snapshot(
            self.t, np.array(self.ids, dtype=object), x0 + ux * self.pos, y0 + uy * self.pos, self.v.copy(),
            np.array([ln.angle for ln in lanes])[li], self.a.copy(),
            np.array([lanes[k].edge for k in li], dtype=object), np.array([lanes[k].lane for k in li], dtype=object),
            self.pos.copy(), np.full(n, LENGTH_M))


def source_kwargs(cfg, net_file: str, step_s: float, begin_s: float, end_s: float | None) -> dict:  # noqa: ANN001
    """The source's arguments from a scenario (plain values: a child process can rebuild it)."""
    t, w = cfg.traffic, cfg.world
    return dict(net_file=str(net_file), seed=cfg.scenario.seed, vehicles=t.vehicles, directions=t.directions,
                initial_speed_mps=tuple(t.initial_speed_mps) if len(t.initial_speed_mps) == 2
                else (t.initial_speed_mps[0],) * 2,
                idm=dict(a_max=w.idm_max_accel_mps2, b_max=w.idm_max_decel_mps2, v_des=w.idm_desired_speed_mps,
                         delta=w.idm_delta, s0=w.idm_min_gap_m, headway=w.idm_headway_s),
                step_s=step_s, begin_s=begin_s, end_s=end_s)


#: the paper world of each layer (``cosim run --world paper``): its shipped scenario file
#: ``scenarios/<world>.toml``
PAPER_WORLDS = {"dvit": "paper000", "moe": "paper001", "cache": "paper002"}
#: each synthetic ``traffic.source``: the source class and the function that builds its
#: arguments from a scenario (``source_kwargs(cfg, net_file, step_s, begin_s, end_s)``), as
#: "module:name" (imported only when that world runs). One module per paper's world.
SOURCES = {
    "paper000": ("cosim.sources.paper:Paper000Source", "cosim.sources.paper:source_kwargs"),
    "paper001": ("cosim.sources.paper001:Paper001Source", "cosim.sources.paper001:source_kwargs"),
    "paper002": ("cosim.sources.paper002:Paper002Source", "cosim.sources.paper002:source_kwargs"),
}


def _load(spec: str):  # noqa: ANN202
    import importlib

    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def synthetic_source(cfg, net_file: str, step_s: float, begin_s: float, end_s: float | None) -> tuple[str, dict]:  # noqa: ANN001
    """The source of ``cfg``'s synthetic world (``traffic.source``, :data:`SOURCES`): its class as
    "module:name" and its arguments, checked by building it once (a bad setting is a one-line
    error before anything is written)."""
    cls, kwargs_of = SOURCES[cfg.traffic.source]
    kwargs = _load(kwargs_of)(cfg, net_file, step_s, begin_s, end_s)
    _load(cls)(**kwargs)
    return cls, kwargs
#: the tables ``--world`` takes from the paper's scenario file (with ``scenario.sumocfg``)
WORLD_TABLES = ("traffic", "world", "rsu", "channel")


def world_scenario(name: str):  # noqa: ANN201 - pathlib.Path
    """The shipped scenario file of paper world ``name`` (``scenarios/<name>.toml`` of the project)."""
    from pathlib import Path

    from cosim.errors import CosimError

    path = Path(__file__).resolve().parents[2] / "scenarios" / f"{name}.toml"
    if not path.is_file():
        raise CosimError(f"--world {name}: {path} is missing (the paper worlds' scenario files ship with the "
                         "project's scenarios/ folder)")
    return path


def with_world(cfg, world: str):  # noqa: ANN001, ANN201 - Config -> Config
    """``cfg`` moved into a paper's world (``cosim run --world``): ``scenario.sumocfg`` and the
    ``[traffic]``, ``[world]``, ``[rsu]`` and ``[channel]`` tables from that world's scenario
    file, everything else (layers, seed, times, outputs) from ``cfg``. ``world``: ``sumo``
    (unchanged), a paper world's name (``paper000``, ``paper002``), or ``paper``: the world of
    the paper of the scenario's layer (:data:`PAPER_WORLDS`: DViT paper000, cache paper002)."""
    from cosim import config as cfgmod

    if world == "sumo":
        return cfg
    if world == "paper":
        names = sorted({PAPER_WORLDS[layer] for layer in cfg.layers if layer in PAPER_WORLDS})
        if len(names) != 1:
            have = ", ".join(f"{k} ({v})" for k, v in PAPER_WORLDS.items())
            raise ConfigError(f"--world paper: {cfg.source_file} enables layer(s) {', '.join(cfg.layers) or 'none'}; "
                              f"a paper world exists for exactly one of them to be chosen ({have}): name it, e.g. "
                              "--world paper000")
        world = names[0]
    template = cfgmod.load(world_scenario(world))
    data = cfgmod.to_dict(cfg)
    data["layers"] = dict(cfg.layers)
    paper = cfgmod.to_dict(template)
    data["scenario"]["sumocfg"] = template.scenario.sumocfg
    for table in WORLD_TABLES:
        data[table] = paper[table]
    return cfgmod.from_dict(data, cfg.source_file, label=f"--world {world}")
