"""Route-aware coverage dwell (``world.dwell_model = "route"``; ours, beyond the TVT paper).

The remaining time a vehicle stays with its serving RSU r is predicted by walking its SUMO route
from where it is, edge by edge along the real geometry of each edge's first lane, until the route
leaves r's service under the association rule in force (``world.association``):

* ``nearest`` — r serves while it is the nearest RSU whose disc holds the vehicle, so service
  ends where r's disc ends *or* where a neighbour in range becomes nearer (e.g. the bisector);
* ``sticky`` — r serves until the vehicle leaves r's disc.

Every edge is sampled every ``route_sample_m`` metres and the samples are associated with
:meth:`~cosim.world.rsu.RsuSet.associate` — the function the world applies each slot — once per
(edge, RSU); the exit is placed midway between the last served and the first unserved sample.
Time per edge = length / expected speed; the expected speed (``route_speed``) is one of

* ``learned`` (default) — the running mean over the run of every slot sample of speed on the
  edge (one per vehicle and slot, the edge and speed SUMO gives anyway). Sampling per slot makes
  it a time mean, so length / mean = the mean time vehicles took to cross the edge: stops at red
  lights and queues enter through it. Shrunk towards the speed limit with the weight of
  ``route_speed_prior`` samples, so an edge nobody has driven yet gets its limit;
* ``limit`` — the edge's speed limit (free flow);
* ``current`` — the vehicle's current speed for the whole walk (a stopped vehicle is capped).

Junctions are crossed on the junction-internal edge SUMO drives between two route edges (its
length at its own expected speed); where the network names none, the straight gap at the next
edge's speed. A route that ends inside coverage gives the time to its end (arrival): the vehicle
stops being served because it leaves the simulation. Every value is capped at ``dwell_cap_s``.
A vehicle with no known route, or on an edge that is not on its route, gets no route prediction
(the world falls back to the straight-line model for it).

Cost (measured in docs/dwell.md: +9.7 % instructions over ``straight`` on grid6): the walk runs
once per vehicle and serving RSU, and keeps, per edge to the end of service, the distance and time
from that edge's end onwards; a vehicle entering the next edge takes its entry from there (a dict
lookup); every slot only the part on the current edge is recomputed, vectorised.

:class:`RouteGeometry` is the one walker of SUMO routes: positions along an edge's real shape,
the junction between two route edges, and points a given distance further along a route. The
route dwell walks with it; so do the layers' look-ahead (DViT's positions H', the cache's demand
prediction) through :meth:`cosim.world.world.World.route_ahead` — so every part of cosim sees
the same road.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right

import numpy as np

from cosim.world.coverage import MIN_SPEED_MPS
from cosim.world.network import NetInfo
from cosim.world.rsu import RsuSet

#: speed limit assumed for an edge the network file gives none [m/s]
DEFAULT_SPEED_MPS = 13.89

# columns of RouteDwell._st, per vehicle: its (non-internal) edge's row, serving RSU, index on its
# route; lane position where service ends on the edge (or its length); 1 if the route goes on
# across the junction after it; where the next route edge starts [m]; the junction's length [m]
# and time [s]; from the next edge's start to leaving service [m], [s]; 1 if the route gave it
ROW, RSU, K, END, ON, TX, TY, GAP_M, GAP_S, TAIL_M, TAIL_S, OK = range(12)
_NCOL = 12
OWN_X, OWN_Y = 12, 13  # a plan entry adds where its own edge starts


def route_index(route: tuple, edge: str, hint: int = 0) -> int:
    """Index of ``edge`` in ``route`` (from ``hint`` on first, then from the start); -1 if absent."""
    try:
        return route.index(edge, max(hint, 0))
    except ValueError:
        try:
            return route.index(edge)
        except ValueError:
            return -1


class RouteGeometry:
    """Positions along SUMO edges (first lane's shape, in lane-position metres), the junction
    crossing between two consecutive route edges, and walks along routes. Shapes are parsed on
    first use.

    A route is walked piece by piece: each edge along its first lane's shape over its lane
    positions 0 .. length, then the crossing to the next route edge, whose length is that of
    the junction-internal edge SUMO drives between the two (:meth:`junction`; the straight gap
    where the network names none) and whose points lie on the straight line from the one edge's
    last shape point to the next edge's first (ours: the internal lane's own curve is not read;
    across a junction of 10-30 m the chord is within a few metres of it)."""

    def __init__(self, net: NetInfo):
        self.net = net
        self._poly: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._lines: dict[str, tuple[list, list, list]] = {}  # the same shapes as Python lists (scalar walks)
        self._gaps: dict[tuple[str, str], float] = {}  # (edge, next edge) -> the crossing's length [m]
        self._vias: dict[str, list] | None = None  # internal edge -> the (edge, next edge) pairs it joins

    def knows(self, edge: str) -> bool:
        return edge in self.net.edge_shape or edge in self.net.edge_ends

    def polyline(self, edge: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lane position [m], x [m], y [m]) of the edge's shape points; lane positions are the
        arc length scaled so that the last point sits at the edge's length (SUMO may give a lane
        a length other than its drawn shape's)."""
        got = self._poly.get(edge)
        if got is None:
            shape = self.net.edge_shape.get(edge)
            if shape:
                xy = np.array([p.split(",")[:2] for p in shape.split()], dtype=float)
            else:  # no shape in the net file: the straight line between its junctions
                fx, fy, tx, ty = self.net.edge_ends[edge]
                xy = np.array([[fx, fy], [tx, ty]])
            arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
            length = self.net.edge_length.get(edge, arc[-1])
            pos = arc * (length / arc[-1]) if arc[-1] > 0 else np.linspace(0.0, length, len(arc))
            got = self._poly[edge] = (pos, xy[:, 0].copy(), xy[:, 1].copy())
        return got

    def point_at(self, edge: str, lane_pos) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) [m] at lane position(s) ``lane_pos`` [m] on ``edge`` (clipped to the edge)."""
        pos, x, y = self.polyline(edge)
        return np.interp(lane_pos, pos, x), np.interp(lane_pos, pos, y)

    def junction(self, a: str, b: str) -> tuple[str | None, float]:
        """(the internal edge SUMO drives from ``a`` into ``b``, or None; the crossing's length [m]:
        that edge's length, else the straight gap between ``a``'s end and ``b``'s start)."""
        via = self.net.edge_via.get((a, b))
        if via is not None and via in self.net.edge_length:
            return via, self.net.edge_length[via]
        _, xa, ya = self.polyline(a)
        _, xb, yb = self.polyline(b)
        return None, float(math.hypot(xb[0] - xa[-1], yb[0] - ya[-1]))

    # -- walking a route -------------------------------------------------------------------------
    def _line(self, edge: str) -> tuple[list, list, list]:
        got = self._lines.get(edge)
        if got is None:
            pos, x, y = self.polyline(edge)
            got = self._lines[edge] = (pos.tolist(), x.tolist(), y.tolist())
        return got

    def _gap(self, a: str, b: str) -> float:
        got = self._gaps.get((a, b))
        if got is None:
            got = self._gaps[a, b] = self.junction(a, b)[1]
        return got

    def crossing_index(self, route: tuple, internal: str, hint: int = 0) -> int:
        """The k where ``route`` crosses from ``route[k]`` to ``route[k + 1]`` on the internal
        edge ``internal`` (the first such k from ``hint`` on, then from the start); -1 if none
        (e.g. the second internal edge of a split crossing, which no connection names)."""
        if self._vias is None:
            self._vias = {}
            for pair, via in self.net.edge_via.items():
                self._vias.setdefault(via, []).append(pair)
        pairs = self._vias.get(internal)
        if not pairs:
            return -1
        found = -1
        for k in range(len(route) - 1):
            if (route[k], route[k + 1]) in pairs:
                if k >= hint:
                    return k
                if found < 0:
                    found = k
        return found

    def points_along(self, route: tuple, k: int, dists, crossing: bool = False) -> list:
        """The points (x, y) [m] at distances ``dists`` (increasing) along ``route``, measured from
        the start of edge ``route[k]`` (lane positions on it), or with ``crossing`` from the start
        of the crossing from ``route[k]`` to ``route[k + 1]``; None from where the route ends or
        leaves the known network."""
        n, knows = len(route), self.knows
        out = []
        if k < 0 or k >= n or not knows(route[k]) or (crossing and (k + 1 >= n or not knows(route[k + 1]))):
            return [None] * len(dists)
        base = 0.0  # distance from the walk's start to the start of the current piece
        ended = False
        if crossing:
            piece = self._gap(route[k], route[k + 1])
        else:
            pos, xs, ys = self._line(route[k])
            piece = pos[-1]
        for d in dists:
            while not ended and d - base > piece:
                base += piece
                if crossing:  # on into the next edge
                    crossing, k = False, k + 1
                    pos, xs, ys = self._line(route[k])
                    piece = pos[-1]
                elif k + 1 < n and knows(route[k + 1]):  # on into the crossing after this edge
                    crossing, piece = True, self._gap(route[k], route[k + 1])
                else:
                    ended = True
            if ended:
                out.append(None)
                continue
            f = d - base
            if crossing:  # on the chord from route[k]'s end to route[k + 1]'s start
                _, ax, ay = self._line(route[k])
                _, bx, by = self._line(route[k + 1])
                t = f / piece if piece > 0 else 1.0
                out.append((ax[-1] + t * (bx[0] - ax[-1]), ay[-1] + t * (by[0] - ay[-1])))
                continue
            i = bisect_right(pos, f)
            if i <= 0:
                out.append((xs[0], ys[0]))
            elif i >= len(pos):
                out.append((xs[-1], ys[-1]))
            else:
                a, b = pos[i - 1], pos[i]
                t = (f - a) / (b - a) if b > a else 0.0
                out.append((xs[i - 1] + t * (xs[i] - xs[i - 1]), ys[i - 1] + t * (ys[i] - ys[i - 1])))
        return out


class EdgeSpeeds:
    """Running per-edge mean speed: one sample per vehicle and slot, shrunk towards the limit.

    expected[e] = (sum of speeds seen on e + prior * limit[e]) / (samples on e + prior)
    """

    def __init__(self, limit_mps: np.ndarray, prior: float):
        self.limit = np.asarray(limit_mps, dtype=float)
        self.prior = float(prior)
        self.total = np.zeros(len(self.limit))
        self.count = np.zeros(len(self.limit))
        self._prior_limit = self.prior * self.limit  # the prior's share of every edge's sum, a constant
        self.mean = np.maximum(self.expected(), MIN_SPEED_MPS)  # kept up to date by learn

    def learn(self, rows: np.ndarray, speed: np.ndarray) -> None:
        m = len(self.limit)  # (bincount: a tenth of np.add.at's instructions on grid6)
        self.total += np.bincount(rows, weights=speed, minlength=m)
        self.count += np.bincount(rows, minlength=m)
        # expected() of every row, the prior's share taken from the constant
        self.mean = np.maximum((self.total + self._prior_limit) / np.maximum(self.count + self.prior, 1e-12),
                               MIN_SPEED_MPS)

    def expected(self, rows: np.ndarray | None = None) -> np.ndarray:
        """The expected speed [m/s] of edge rows ``rows`` (all rows when None)."""
        if rows is None:
            rows = slice(None)
        return (self.total[rows] + self.prior * self.limit[rows]) / np.maximum(self.count[rows] + self.prior, 1e-12)


class RouteDwell:
    """Dwell by route walk for one world (see the module docstring). ``rows``: the grid's edge
    -> row map (one extra row, ``len(rows)``, for edges the network does not know).

    Per vehicle it keeps the *plan* of its last walk — its route from the edge where it was walked
    to where service by the RSU ends; per edge: the exit position on it (inf: served to its end),
    and the distance and time from its end, across the junction, to leaving service — and, in
    arrays, the entry of the edge it is on. A slot costs vectorised arithmetic; a vehicle that
    enters a new edge costs a dict lookup in its plan; a walk happens when it changes RSU, leaves
    its plan, or the plan is older than ``replan_s`` (default never: re-walking every 20 s for
    newer learned speeds changed the OSM error by < 0.1 s and costs a walk per vehicle and 20 s)."""

    def __init__(self, net: NetInfo, rsus: RsuSet, rows: dict, *, rule: str, speed: str, prior: float,
                 sample_m: float, cap_s: float, replan_s: float = math.inf, geometry: RouteGeometry | None = None):
        self.geo, self.rsus, self.rows = geometry if geometry is not None else RouteGeometry(net), rsus, rows
        self.sticky, self.mode, self.sample_m = rule == "sticky", speed, sample_m
        self.cap_s, self.replan_s = cap_s, replan_s
        edges = list(rows)
        self.length = np.array([net.edge_length.get(e, 0.0) for e in edges] + [0.0])
        self.internal = np.array([e.startswith(":") for e in edges] + [False])
        limit = np.array([net.edge_speed.get(e, DEFAULT_SPEED_MPS) for e in edges] + [DEFAULT_SPEED_MPS])
        self.speeds = EdgeSpeeds(limit, prior)
        self.limit_floor = np.maximum(limit, MIN_SPEED_MPS)
        self._edge: dict[str, tuple] = {}  # edge -> (row, length, start x, start y)
        self._junction: dict[tuple, tuple] = {}  # (edge, next edge) -> (gap [m], gap's row)
        self._profiles: dict[tuple, tuple] = {}  # (edge, RSU) -> (sample positions, exit at/after each)
        #: drivable edges with a known geometry: where a walk can go
        self._walkable = {e for e in rows if not e.startswith(":") and self.geo.knows(e)}
        self._v: dict[int, float] = {}  # expected speed per edge row, this slot's (filled as walks ask)
        self._plans: dict[int, tuple] = {}  # vehicle index -> (RSU, time built, {edge: entry})
        # per world vehicle index, one row of _st: the entry of the edge it is on (valid while its
        # edge and RSU stay), columns ROW .. OK (one array: a vehicle's entry is written at once)
        self._st = np.zeros((0, _NCOL))
        self.walks = 0  # route walks done
        self.lookups = 0  # entries taken from a plan

    # -- per slot ------------------------------------------------------------------------------
    def learn(self, rows: np.ndarray, speed: np.ndarray) -> None:
        self.speeds.learn(rows, speed)

    def speed_at(self, rows: np.ndarray) -> np.ndarray:
        """Expected speed of edge rows [m/s] (``learned``, or ``limit`` also for ``current``, whose
        per-edge speeds only time the junctions), floored at 0.1 m/s."""
        return self.speeds.mean[rows] if self.mode == "learned" else self.limit_floor[rows]

    def speed_one(self, row: int) -> float:
        v = self._v.get(row)
        if v is None:
            v = self._v[row] = (self.speeds.mean if self.mode == "learned" else self.limit_floor).item(row)
        return v

    def predict(self, vidx: np.ndarray, ids: np.ndarray, rows: np.ndarray, edge: np.ndarray,
                lane_pos: np.ndarray, x: np.ndarray, y: np.ndarray, speed: np.ndarray, serving: np.ndarray,
                route_of, time_s: float = 0.0, n_vehicles: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(dwell [s] per vehicle, True where the route gave it); NaN where not served.
        ``n_vehicles``: how many vehicle indices the world has handed out (else from ``vidx``)."""
        n = len(vidx)
        served = serving >= 0
        every = route_of is not None and n > 0 and served.all()
        if every:  # every vehicle served (the usual slot): no selection to gather and scatter back
            sel, vi, row, pos, srv, xs, ys = None, vidx, rows, lane_pos, serving, x, y
        else:
            out, ok = np.full(n, np.nan), np.zeros(n, dtype=bool)
            sel = np.flatnonzero(served)
            if not len(sel) or route_of is None:
                return out, ok
            vi, row, pos, srv, xs, ys = vidx[sel], rows[sel], lane_pos[sel], serving[sel], x[sel], y[sel]
        self._grow(n_vehicles if n_vehicles is not None else int(vidx.max()) + 1)
        inside = self.internal[row]  # in a junction: the entry of the edge before it holds
        st = self._st[vi]
        # (compared as floats, the columns' type: no casting buffers)
        same = (st[:, RSU] == srv.astype(float)) & np.where(
            inside, st[:, ON] > 0, (st[:, ROW] == row.astype(float)) & (pos <= st[:, END] + 1e-9))
        if not same.all():
            self._v.clear()  # learned speeds moved since the last slot
            miss = np.flatnonzero(~same)
            m = miss if every else sel[miss]
            for args in zip(vidx[m].tolist(), ids[m].tolist(), rows[m].tolist(), edge[m].tolist(),
                            lane_pos[m].tolist(), serving[m].tolist()):
                self._enter(*args, route_of, time_s)
            st[miss] = self._st[vi[miss]]
        good = st[:, OK] > 0
        here = np.maximum(st[:, END] - pos, 0.0)  # [m] to the exit or the edge's end
        if inside.any():  # to the next edge's start
            j = np.flatnonzero(inside)
            here[j] = np.hypot(st[j, TX] - xs[j], st[j, TY] - ys[j])
        if self.mode == "current":
            t = (here + np.where(inside, 0.0, st[:, GAP_M]) + st[:, TAIL_M]) / np.maximum(
                speed if every else speed[sel], MIN_SPEED_MPS)
        else:
            t = here / self.speed_at(row) + np.where(inside, 0.0, st[:, GAP_S]) + st[:, TAIL_S]
        got = np.where(good, np.minimum(t, self.cap_s), np.nan)
        if every:
            return got, good
        out[sel], ok[sel] = got, good
        return out, ok

    # -- entering an edge: a plan lookup, or a walk ---------------------------------------------
    def _enter(self, v: int, vid: str, row: int, edge: str, pos: float, r: int, route_of, time_s: float) -> None:
        k_last = int(self._st[v, K])
        plan = self._plans.get(v)
        entries = plan[2] if plan is not None and plan[0] == r and time_s - plan[1] < self.replan_s else {}
        if edge.startswith(":"):  # in a junction, off its entry: walk on from the next route edge
            route = route_of[vid]
            k = k_last + 1
            if not route or k <= 0 or k >= len(route) or route[k] not in self._walkable:
                self._st[v] = (row, r, k_last, math.inf, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # no route
                return
            e = entries.get(route[k])
            if e is None:
                e = self._plan(v, route, k, 0.0, r, time_s)[route[k]]
            # from route[k]'s start: along it to its exit or end, then on across its junction
            self._st[v] = (row, r, k_last, 0.0, 1.0, e[OWN_X], e[OWN_Y], 0.0, 0.0, e[END] + e[GAP_M] + e[TAIL_M],
                           e[END] / self.speed_one(e[ROW]) + e[GAP_S] + e[TAIL_S], 1.0)
            return
        e = entries.get(edge)
        if e is not None and pos <= e[END] + 1e-9:
            self.lookups += 1
        else:
            route = route_of[vid]
            k = route_index(route, edge, k_last) if route and edge in self._walkable else -1
            if k < 0:
                self._st[v] = (row, r, k_last, math.inf, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # no route
                return
            e = self._plan(v, route, k, pos, r, time_s)[edge]
        self._st[v] = e[:OK + 1]

    def _plan(self, v: int, route: tuple, k: int, pos: float, r: int, time_s: float) -> dict:
        """Walk ``route`` from lane position ``pos`` on ``route[k]`` until r stops serving, the
        route ends or the time passes the cap; keep (and return) per edge walked its entry: the
        vehicle's row of ``_st`` on that edge, plus where that edge starts (x, y)."""
        self.walks += 1
        info, junction, speed, walkable = self._edge_info, self._junction_info, self.speed_one, self._walkable
        walked = []  # (edge, row, k, end, goes on, [m] on it, [s] on it, gap [m], gap [s], next x, y, own x, y)
        time, last = 0.0, len(route) - 1
        e = route[k]
        row, length, ex, ey = info(e)
        end = self._exit_after(e, r, pos)
        while True:
            end = min(end, length)
            on_m = max(end - pos, 0.0)  # (another lane of the edge may be a little longer than the first)
            on_s = on_m / speed(row)
            time += on_s
            nxt = route[k + 1] if k < last else None
            if end < length or nxt is None or time >= self.cap_s or nxt not in walkable:
                walked.append((e, row, k, end, 0.0, on_m, on_s, 0.0, 0.0, 0.0, 0.0, ex, ey))
                break
            gap, gap_row = junction(e, nxt)
            gap_s = gap / speed(gap_row)
            nrow, nlength, sx, sy = info(nxt)
            walked.append((e, row, k, end, 1.0, on_m, on_s, gap, gap_s, sx, sy, ex, ey))
            time += gap_s
            k, e, row, length, ex, ey, pos = k + 1, nxt, nrow, nlength, sx, sy, 0.0
            end = self._exit_after(e, r, 0.0)
        entries: dict = {}
        after_m = after_s = 0.0  # from the next edge's start to leaving service, built backwards
        for e, row, kk, end, on, on_m, on_s, gap, gap_s, sx, sy, ex, ey in reversed(walked):
            entries[e] = (row, r, kk, end, on, sx, sy, gap, gap_s, after_m, after_s, 1.0, ex, ey)  # first visit wins
            after_m, after_s = on_m + gap + after_m, on_s + gap_s + after_s
        # a walk started mid-edge: the first entry's own part counts from ``pos``, which is all a
        # later lookup of that edge needs (it measures from the vehicle's lane position)
        if len(self._plans) > 50_000:
            self._plans.clear()
        self._plans[v] = (r, time_s, entries)
        return entries

    def _edge_info(self, edge: str) -> tuple:
        info = self._edge.get(edge)
        if info is None:
            row = self.rows[edge]
            _, xs, ys = self.geo.polyline(edge)
            info = self._edge[edge] = (row, float(self.length[row]), float(xs[0]), float(ys[0]))
        return info

    def _junction_info(self, a: str, b: str) -> tuple:
        got = self._junction.get((a, b))
        if got is None:
            via, gap = self.geo.junction(a, b)
            got = self._junction[a, b] = (gap, self.rows.get(via, self.rows[b]))
        return got

    def _exit_after(self, edge: str, r: int, pos: float) -> float:
        """Lane position [m] where a vehicle at ``pos`` on ``edge`` stops being served by r, inf
        if it is served to the edge's end."""
        prof = self._profiles.get((edge, r))
        if prof is None:
            prof = self._profiles[edge, r] = self._profile(edge, r)
        s, out = prof
        i = bisect_left(s, pos)
        return math.inf if i >= len(s) else max(out[i], pos)

    def _profile(self, edge: str, r: int) -> tuple[list, list]:
        """(sample lane positions, for each sample the exit position at or after it (inf: none))."""
        length = self.length[self.rows[edge]]
        k = max(2, math.ceil(length / self.sample_m) + 1)
        s = np.linspace(0.0, length, k)
        x, y = self.geo.point_at(edge, s)
        _, srv = self.rsus.associate(x, y, keep=np.full(k, r) if self.sticky else None)
        prev = np.concatenate([[0.0], s[:-1]])
        out = np.where(srv == r, math.inf, 0.5 * (s + prev))
        if len(self._profiles) > 200_000:
            self._profiles.clear()
        return s.tolist(), np.minimum.accumulate(out[::-1])[::-1].tolist()

    def _grow(self, n: int) -> None:
        if len(self._st) >= n:
            return
        st = np.zeros((max(n, 2 * len(self._st)), _NCOL))
        st[:, ROW] = st[:, RSU] = -2.0
        st[:, K] = -1.0
        st[: len(self._st)] = self._st
        self._st = st
