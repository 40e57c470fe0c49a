"""The cache paper's own world (paper 002) as a :class:`~cosim.sources.base.TrafficSource`: no SUMO.

Xu et al., *Sparks of GPTs in Edge Intelligence for Metaverse* (paper 002), Sec. V-A: "an
intelligent transportation system [...] with a remote cloud center, an edge server, and multiple
vehicles". That is all the paper says of the world its Table II was measured in: no road, no
mobility, no number of vehicles, no request rate. What Table II does fix is the number of
requests: its total accuracy cost over its average accuracy cost is the number of requests
served at the edge, and that over the edge execution ratio is the number of requests — 88, 87,
86 and 88 for Random, FIFO, LFU and LC (``REQUESTS_TABLE2``).

Our reading (each one a knob; docs/paper_worlds.md):

* **One edge server, every vehicle always covered**: the road of paper 000's world
  (``sumo_nets/paper000/road.net.xml``: 996 m, two directions, the RSU at its middle, every point
  within its 500 m) driven as a **ring**: a vehicle reaching one lane's end turns onto the other
  lane's start and keeps its id (ours: vehicles that stay covered, as the paper's "multiple
  vehicles" of one edge server; nobody hands over, nobody leaves). The ring is the network's
  lanes in order, so any set of straight lanes joined end to start would do.
* **Vehicles** (``traffic.vehicles``; ours, the paper gives none): 72 in
  ``scenarios/paper002.toml``, grid6's mean number of vehicles an RSU covers over a 300 s run
  (4321 requests / (0.05 requests/s x 300 s x 4 RSUs)), so that the edge server sees the load an
  RSU of ``scenarios/grid6_cache.toml`` sees and a difference between the worlds is not one of
  load. Table II's own count, ~88 requests, is 6 vehicles at the same 0.05/s over 300 s: with
  those the 80 GB cache never fills, so no policy ever evicts (docs/paper_worlds.md).
* **Mobility** (ours; the paper has none): placed uniformly at random on the ring with the
  minimum spacing of paper 000's world, speeds uniform in ``traffic.initial_speed_mps``, then
  car-following by paper 000's eqs. (8)-(11) (:func:`cosim.sources.paper.idm_accel`) with the
  ``world.idm_*`` parameters; the leader of a vehicle is the next one ahead on the ring. The
  cache layer reads only who is covered (everyone) and the radio rates (distance to the RSU).
* **Routes**: each vehicle's route is the ring's edges from its first lane on, repeated for as
  many laps as the run can drive at the desired speed (+1), so a route walk (lc-predictive)
  never runs off its end.

The request mix is the cache layer's (docs/cache.md: Table I's catalog, Zipf popularity, a
preferred service per vehicle): the paper states none. Deterministic per seed: every draw
comes from one generator seeded by (seed, "paper002").
"""

from __future__ import annotations

import math

import numpy as np

from cosim.errors import ConfigError
from cosim.sources.base import Routes, Snapshot
from cosim.sources.paper import LENGTH_M, Stepped, _Lane
from cosim.world.channel import stable_uid
from cosim.world.network import read_net

#: requests in Table II's experiment, per policy: total accuracy cost / average accuracy cost
#: (requests served at the edge) / edge execution ratio
REQUESTS_TABLE2 = {p: acc / avg / ratio for p, (acc, avg, ratio) in
                   {"random": (0.13, 0.0151, 0.098), "fifo": (0.52, 0.0085, 0.707), "lfu": (0.36, 0.0083, 0.494),
                    "lc": (0.44, 0.0076, 0.650)}.items()}
#: where the ring's lanes must meet (end of one, start of the next) [m]
JOIN_M = 10.0


class Paper002Source(Stepped):
    """``vehicles`` vehicles circulating on a ring of lanes that lies within one RSU's coverage
    (see the module doc)."""

    def __init__(self, net_file: str, seed: int, vehicles: int = 72, initial_speed_mps: tuple = (8.33, 13.89),
                 idm: dict | None = None, step_s: float = 1.0, begin_s: float = 0.0, end_s: float | None = None):
        net = read_net(net_file)
        lanes = [_Lane(e, net.edge_shape[e], net.edge_length[e]) for e in net.drivable_edges if e in net.edge_shape]
        if not lanes:
            raise ConfigError(f"{net_file}: traffic.source = \"paper002\" needs a network with drivable edges")
        for a, b in zip(lanes, lanes[1:] + lanes[:1]):
            ex, ey = a.x0 + a.ux * a.length, a.y0 + a.uy * a.length
            if len(lanes) > 1 and math.hypot(b.x0 - ex, b.y0 - ey) > JOIN_M:
                raise ConfigError(f"{net_file}: traffic.source = \"paper002\" drives the network's edges as a ring, "
                                  f"but edge {a.edge} ends {math.hypot(b.x0 - ex, b.y0 - ey):.0f} m from where "
                                  f"{b.edge} starts (at most {JOIN_M:g} m)")
        self.lanes = lanes
        self.starts = np.cumsum([0.0] + [ln.length for ln in lanes])  # ring coordinate of each lane's start
        self.ring = float(self.starts[-1])
        self.n = int(vehicles)
        self.v_lo, self.v_hi = (float(v) for v in initial_speed_mps)
        p = idm or {}
        self.a_max = float(p.get("a_max", 2.6))
        self.b_max = float(p.get("b_max", 4.5))
        self.v_des = float(p.get("v_des", 13.89))
        self.delta = float(p.get("delta", 4.0))
        self.s0 = float(p.get("s0", 2.5))
        self.headway = float(p.get("headway", 1.0))
        self.spacing = LENGTH_M + self.s0 + self.headway * self.v_hi
        if self.spacing * self.n > self.ring:
            raise ConfigError(f"traffic.vehicles = {self.n}: that many vehicles do not fit on the ring of {net_file} "
                              f"({self.ring:g} m at {self.spacing:g} m apart)")
        self.dt = float(step_s)
        self.begin_s = float(begin_s)
        self.end_s = end_s
        self.rng = np.random.default_rng([int(seed), stable_uid("paper002")])
        self.route_of = Routes()
        self.t = self.begin_s
        self.ids: list[str] = []
        self.s = np.zeros(0)  # front bumper's ring coordinate [m], in [0, ring)
        self.v = np.zeros(0)
        self.a = np.zeros(0)
        #: times the gap guard acted (0 with the defaults: a test checks it)
        self.guarded = 0

    # -- the contract ----------------------------------------------------------------------
    def start(self) -> None:
        rng, n = self.rng, self.n
        speed = rng.uniform(self.v_lo, self.v_hi, n)
        # uniform over circular placements with the minimum spacing: a uniform offset, then
        # sorted uniforms in the free length, the spacing added back
        free = self.ring - self.spacing * n
        s = (rng.uniform(0.0, self.ring) + np.sort(rng.uniform(0.0, free, n)) + self.spacing * np.arange(n)) % self.ring
        self.ids = [f"p{k}" for k in range(n)]
        self.s, self.v, self.a = s, speed, np.zeros(n)
        laps = 1 + math.ceil(self.v_des * max((self.end_s or 0.0) - self.begin_s, 0.0) / self.ring)
        edges = [ln.edge for ln in self.lanes]
        for vid, lane in zip(self.ids, self._lane(s)):
            self.route_of.add(vid, tuple((edges[lane:] + edges[:lane]) * (laps + 1)))

    # -- the model --------------------------------------------------------------------------
    def _lane(self, s: np.ndarray) -> np.ndarray:
        return np.minimum(np.searchsorted(self.starts, s, side="right") - 1, len(self.lanes) - 1)

    def _leaders(self) -> tuple[np.ndarray, np.ndarray]:
        """Per vehicle: the gap to the rear of the next vehicle ahead on the ring [m] (inf: alone)
        and that vehicle's speed."""
        n = len(self.ids)
        if n < 2:
            return np.full(n, np.inf), self.v.copy()
        order = np.argsort(self.s, kind="stable")
        lead = np.empty(n, dtype=np.int64)
        lead[order] = np.roll(order, -1)
        gap = (self.s[lead] - self.s) % self.ring - LENGTH_M
        return gap, self.v[lead]

    def _step(self, dt: float) -> None:
        self.s = (self.s + self._follow(dt)) % self.ring
        self.t += dt

    def _snapshot(self) -> Snapshot:
        n = len(self.ids)
        if not n:
            return Snapshot.empty(self.t)
        lanes = self.lanes
        li = self._lane(self.s)
        pos = self.s - self.starts[li]
        x0 = np.array([ln.x0 for ln in lanes])[li]
        y0 = np.array([ln.y0 for ln in lanes])[li]
        ux = np.array([ln.ux for ln in lanes])[li]
        uy = np.array([ln.uy for ln in lanes])[li]
        return Snapshot(
            self.t, np.array(self.ids, dtype=object), x0 + ux * pos, y0 + uy * pos, self.v.copy(),
            np.array([ln.angle for ln in lanes])[li], self.a.copy(),
            np.array([lanes[k].edge for k in li], dtype=object), np.array([lanes[k].lane for k in li], dtype=object),
            pos, np.full(n, LENGTH_M))


def source_kwargs(cfg, net_file: str, step_s: float, begin_s: float, end_s: float | None) -> dict:  # noqa: ANN001
    """The source's arguments from a scenario (plain values: a child process can rebuild it)."""
    t, w = cfg.traffic, cfg.world
    return dict(net_file=str(net_file), seed=cfg.scenario.seed, vehicles=t.vehicles,
                initial_speed_mps=tuple(t.initial_speed_mps) if len(t.initial_speed_mps) == 2
                else (t.initial_speed_mps[0],) * 2,
                idm=dict(a_max=w.idm_max_accel_mps2, b_max=w.idm_max_decel_mps2, v_des=w.idm_desired_speed_mps,
                         delta=w.idm_delta, s0=w.idm_min_gap_m, headway=w.idm_headway_s),
                step_s=step_s, begin_s=begin_s, end_s=end_s)
