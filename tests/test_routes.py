"""Route-aware dwell (cosim/world/routes.py) and the association rules, on hand-made networks.

Every edge is straight with a 10 m/s limit; coverage samples every 2 m put an exit within 1 m
(0.1 s at 10 m/s) of the exact crossing worked out below.
"""

import math

import numpy as np
import pytest

from cosim.config import from_dict
from cosim.sources.base import Snapshot
from cosim.world.network import NetInfo
from cosim.world.routes import EdgeSpeeds
from cosim.world.world import World

#: edge -> (from x, from y, to x, to y): a junction J at the origin with an approach from the west
#: and exits north, south and east; "long" is a separate straight road along the x axis
EDGES = {"in": (-400.0, 0.0, 0.0, 0.0), "up": (0.0, 0.0, 0.0, 1000.0), "down": (0.0, 0.0, 0.0, -1000.0),
         "east": (0.0, 0.0, 1000.0, 0.0), "long": (-500.0, -50.0, 1500.0, -50.0)}
TOL = 0.1 + 1e-9  # [s] half a coverage sample at 10 m/s


def net(via: dict | None = None, via_len: dict | None = None, speed: dict | None = None) -> NetInfo:
    length = {e: math.hypot(c - a, d - b) for e, (a, b, c, d) in EDGES.items()}
    length.update(via_len or {})
    return NetInfo("mem", length, np.array([[0.0, 0.0]]), (-500.0, -1000.0, 1500.0, 1000.0), dict(EDGES),
                   {e: f"{a},{b} {c},{d}" for e, (a, b, c, d) in EDGES.items()},
                   {e: 10.0 for e in length} | (speed or {}), via or {})


def world(sites, model="route", net_info=None, **world_keys):
    cfg = from_dict({
        "scenario": {"sumocfg": "/dev/null", "seed": 1},
        "world": {"dwell_model": model, "route_speed": "limit", "route_sample_m": 2.0, **world_keys},
        "rsu": {"placement": "sites", "radius_m": 500.0,
                "sites": [{"id": f"r{i}", "x": x, "y": y} for i, (x, y) in enumerate(sites)]},
        "channel": {"fading": "none"},
    }, "test.toml")
    return World(cfg, net_info or net())


def snap(t, vehicles):
    """vehicles: (id, edge, lane_pos, speed); position and heading from the edge's geometry."""
    ids, xs, ys, v, ang, edges, pos = [], [], [], [], [], [], []
    for vid, edge, p, speed in vehicles:
        a, b, c, d = EDGES.get(edge, (0.0, 0.0, 0.0, 0.0))
        f = p / max(math.hypot(c - a, d - b), 1e-9)
        ids.append(vid), xs.append(a + f * (c - a)), ys.append(b + f * (d - b)), v.append(speed)
        ang.append(math.degrees(math.atan2(c - a, d - b)) % 360), edges.append(edge), pos.append(p)
    n = len(ids)
    return Snapshot(t, np.array(ids, dtype=object), np.array(xs), np.array(ys), np.array(v, dtype=float),
                    np.array(ang), np.zeros(n), np.array(edges, dtype=object),
                    np.array([e + "_0" for e in edges], dtype=object), np.array(pos, dtype=float), np.full(n, 5.0))


def dwell(sites, routes, vehicles, model="route", **kw):
    w = world(sites, model, **kw)
    w.route_of = routes
    w.update(snap(1.0, vehicles))
    return w.dwell_s


def test_turn_away_from_the_rsu():
    # RSU at (400, 0); the vehicle is at (-50, 0) heading east at 10 m/s and turns south at J.
    # straight: leaves the disc at x = 900 -> 950 m -> 95 s. route: 50 m to J, then south until
    # |(0, y) - (400, 0)| = 500, y = -300 -> 350 m -> 35 s.
    routes = {"v": ("in", "down")}
    veh = [("v", "in", 350.0, 10.0)]
    straight = dwell([(400.0, 0.0)], routes, veh, model="straight")
    route = dwell([(400.0, 0.0)], routes, veh)
    assert straight[0] == pytest.approx(95.0)
    assert abs(route[0] - 35.0) <= TOL


def test_turn_toward_the_rsu():
    # RSU at (0, 400); same vehicle turns north: straight leaves at x = 300 (500 m, 50 s); the
    # route reaches J (200 m) and leaves northwards at y = 900 (900 m) -> 110 s
    routes = {"v": ("in", "up")}
    veh = [("v", "in", 200.0, 10.0)]
    assert dwell([(0.0, 400.0)], routes, veh, model="straight")[0] == pytest.approx(50.0)
    assert abs(dwell([(0.0, 400.0)], routes, veh)[0] - 110.0) <= TOL


def test_stopped_vehicle():
    # stopped at (-200, 0), RSU at (0, 400): straight and route at the vehicle's own speed cap it;
    # route at the speed limit: 200 m + 900 m at 10 m/s = 110 s
    routes = {"v": ("in", "up")}
    veh = [("v", "in", 200.0, 0.0)]
    assert dwell([(0.0, 400.0)], routes, veh, model="straight")[0] == 600.0
    assert dwell([(0.0, 400.0)], routes, veh, route_speed="current")[0] == 600.0
    assert abs(dwell([(0.0, 400.0)], routes, veh)[0] - 110.0) <= TOL
    # moving at 5 m/s with route_speed = "current": 1100 m / 5 m/s = 220 s
    assert abs(dwell([(0.0, 400.0)], routes, [("v", "in", 200.0, 5.0)], route_speed="current")[0] - 220.0) <= 2 * TOL


def test_route_ends_inside_coverage():
    # the route ends at J, 200 m ahead, well inside the disc around (0, 400): it arrives in 20 s
    # (straight would say 50 s; not the cap either)
    assert dwell([(0.0, 400.0)], {"v": ("in",)}, [("v", "in", 200.0, 10.0)])[0] == pytest.approx(20.0)


def test_junction_crossed_on_its_internal_edge():
    # SUMO drives in -> down through ":J_0", 20 m at 5 m/s: 50/10 + 20/5 + 300/10 = 39 s
    # (the internal edge's length adds time; where service ends is still decided on "down")
    n = net(via={("in", "down"): ":J_0"}, via_len={":J_0": 20.0}, speed={":J_0": 5.0})
    w = world([(400.0, 0.0)], net_info=n)
    w.route_of = {"v": ("in", "down")}
    w.update(snap(1.0, [("v", "in", 350.0, 10.0)]))
    assert abs(w.dwell_s[0] - 39.0) <= TOL


def test_vehicle_off_its_route_or_without_one_falls_back_to_straight():
    veh = [("a", "in", 350.0, 10.0), ("b", "in", 350.0, 10.0)]
    d = dwell([(400.0, 0.0)], {"a": ("up", "east"), "b": ()}, veh)
    assert d == pytest.approx([95.0, 95.0])


def test_nearest_rule_ends_at_the_bisector_sticky_at_the_disc():
    # RSUs at (0, -50) and (600, -50), R = 500; a vehicle on "long" at x = 100 heading east at 10 m/s.
    # nearest: served by r0 until the bisector x = 300 (20 s), for every model;
    # sticky: until r0's disc ends at x = 500 (40 s)
    sites = [(0.0, -50.0), (600.0, -50.0)]
    veh = [("v", "long", 600.0, 10.0)]
    routes = {"v": ("long",)}
    for model in ("straight", "idm", "route"):
        near = dwell(sites, routes, veh, model=model, idm_desired_speed_mps=10.0)
        sticky = dwell(sites, routes, veh, model=model, association="sticky", idm_desired_speed_mps=10.0)
        tol = TOL if model == "route" else 1e-6
        assert abs(near[0] - 20.0) <= tol, model
        assert abs(sticky[0] - 40.0) <= tol, model


def test_sticky_association_keeps_the_rsu_until_its_disc_ends():
    sites = [(0.0, -50.0), (600.0, -50.0)]
    for rule, expect in (("nearest", [0, 1, 1, 1]), ("sticky", [0, 0, 0, 1])):
        w = world(sites, "straight", association=rule)
        got = []
        for t, p in enumerate((600.0, 850.0, 1000.0, 1050.0)):  # x = 100, 350, 500, 550
            w.update(snap(float(t), [("v", "long", p, 10.0)]))
            got.append(int(w.serving[0]))
        assert got == expect, rule
    # a vehicle first seen in the overlap goes to the nearest RSU under both rules
    w = world(sites, "straight", association="sticky")
    w.update(snap(0.0, [("v", "long", 850.0, 10.0)]))
    assert w.serving[0] == 1


def test_learned_edge_speeds_against_a_hand_computed_mean():
    # prior weight 2 at the 10 m/s limit; "in" sees 4, 6 and 0 m/s, "up" nothing:
    # in: (4 + 6 + 0 + 2 * 10) / (3 + 2) = 6 m/s; up: its limit, 10 m/s
    w = world([(0.0, 400.0)], route_speed="learned", route_speed_prior=2.0)
    w.route_of = {"a": ("in", "up"), "b": ("in", "up")}
    w.update(snap(1.0, [("a", "in", 100.0, 4.0), ("b", "in", 120.0, 6.0)]))
    w.update(snap(2.0, [("a", "in", 104.0, 0.0)]))
    sp = w.route_dwell.speeds.expected()
    assert sp[w.grid.index["in"]] == pytest.approx(6.0)
    assert sp[w.grid.index["up"]] == pytest.approx(10.0)
    # dwell of "a" at (-296, 0): the 296 m left on "in" at that edge's learned mean now (6 m/s),
    # plus the rest of its route as walked in slot 1: 900 m on "up" at 10 m/s
    assert abs(w.dwell_s[0] - (296.0 / 6.0 + 900.0 / 10.0)) <= TOL


def test_edge_speeds_accumulate_one_sample_per_vehicle_and_slot():
    sp = EdgeSpeeds(np.array([10.0, 20.0]), prior=0.0)
    sp.learn(np.array([0, 0, 1]), np.array([3.0, 5.0, 7.0]))
    sp.learn(np.array([0]), np.array([1.0]))
    assert sp.expected() == pytest.approx([3.0, 7.0])
    # the mean learn keeps (the prior's share from a constant) is expected()'s, floored, bit for bit
    rng = np.random.default_rng(5)
    sp = EdgeSpeeds(rng.uniform(0.0, 0.3, 9), prior=3.7)  # limits and speeds about the 0.1 m/s floor
    for _ in range(4):
        sp.learn(rng.integers(0, 9, 40), rng.uniform(0.0, 0.2, 40) * rng.integers(0, 2, 40))
        assert sp.mean.tobytes() == np.maximum(sp.expected(), 0.1).tobytes()


def test_replay_without_routes_falls_back_to_straight_once(capsys):
    w = world([(400.0, 0.0)])
    w.update(snap(1.0, [("v", "in", 350.0, 10.0)]))
    w.update(snap(2.0, [("v", "in", 360.0, 10.0)]))
    assert w.dwell_s[0] == pytest.approx(94.0)
    assert "falls back to 'straight'" in w.dwell_note
    assert capsys.readouterr().err.count("cosim: note:") == 1


def test_auto_walks_the_route_where_the_source_has_routes_and_is_straight_silently_where_not(capsys):
    # the turn-away case above: with routes "auto" is "route" (35 s), without them it is eq. 12
    # (94 s at x = 360 after two slots, as test_replay_without_routes... works out) and says nothing
    w = world([(400.0, 0.0)], model="auto")
    assert w.dwell_model == "auto" and w.route_dwell is None  # resolved at the first slot
    w.route_of = {"v": ("in", "down")}
    w.update(snap(1.0, [("v", "in", 350.0, 10.0)]))
    assert w.dwell_model == "route" and abs(w.dwell_s[0] - 35.0) <= TOL
    w = world([(400.0, 0.0)], model="auto")
    w.update(snap(1.0, [("v", "in", 350.0, 10.0)]))
    w.update(snap(2.0, [("v", "in", 360.0, 10.0)]))
    assert w.dwell_model == "straight" and w.route_dwell is None
    assert w.dwell_s[0] == pytest.approx(94.0)
    assert w.dwell_note == "" and capsys.readouterr().err == ""
    # the default is "auto"
    assert from_dict({"scenario": {"sumocfg": "/dev/null"}}, "t.toml").world.dwell_model == "auto"


def test_parquet_trace_routes_are_read_back(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cosim.sources.replay import ReplaySource

    rows = {"time_s": [1.0, 1.0, 2.0, 2.0], "ids": ["a", "b", "a", "c"], "x": [0.0] * 4, "y": [0.0] * 4,
            "speed": [1.0] * 4, "angle": [0.0] * 4, "accel": [0.0] * 4, "edge": ["e", "f", "e", "g"],
            "lane": ["e_0", "f_0", "e_0", "g_0"], "lane_pos": [1.0] * 4, "length": [5.0] * 4,
            "route": ["e f", None, None, "g h i"]}
    pq.write_table(pa.table(rows), tmp_path / "t.parquet")
    src = ReplaySource(tmp_path / "t.parquet")
    src.start()
    src.step_to(1.0)
    assert src.route_of["a"] == ("e", "f") and src.route_of["b"] == ()
    src.step_to(2.0)
    assert src.route_of["c"] == ("g", "h", "i")
    del rows["route"]
    pq.write_table(pa.table(rows), tmp_path / "old.parquet")
    assert ReplaySource(tmp_path / "old.parquet").route_of is None


@pytest.mark.sumo
def test_route_dwell_replays_from_the_trace_and_falls_back_on_fcd(tmp_path):
    import json

    import pandas as pd

    from .conftest import run_cli, run_grid6

    run_grid6(tmp_path, '[world]\ndwell_model = "route"\n', "--record", str(tmp_path / "t.parquet"), end_s=40,
              out="live")
    toml = tmp_path / "scenario.toml"
    trace = pd.read_parquet(tmp_path / "t.parquet")
    firsts = trace.groupby("ids", observed=True)["route"].agg(["count", "first"])
    assert (firsts["count"] == 1).all() and len(firsts) == trace["ids"].nunique()  # once per vehicle
    first_row = trace.drop_duplicates("ids")
    assert first_row["route"].notna().all()  # on its first row
    assert all(edge in route.split() for edge, route in zip(first_row["edge"], first_row["route"])
               if not edge.startswith(":"))
    rep = run_cli("replay", str(tmp_path / "t.parquet"), "--scenario", str(toml), "--out", str(tmp_path / "rep"), "-q")
    assert rep.returncode == 0 and "cosim: note" not in rep.stderr, rep.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "live" / "coverage.parquet"),
                                  pd.read_parquet(tmp_path / "rep" / "coverage.parquet"))
    # an FCD trace has no routes: straight-line dwell, said once
    run_grid6(tmp_path, '[world]\ndwell_model = "route"\n', "--record", str(tmp_path / "t.xml"), end_s=40,
              out="live2")
    rep2 = run_cli("replay", str(tmp_path / "t.xml"), "--scenario", str(toml), "--out", str(tmp_path / "rep2"), "-q")
    assert rep2.returncode == 0, rep2.stderr
    assert rep2.stderr.count("cosim: note: the traffic source gives no routes") == 1
    s = json.loads((tmp_path / "rep2" / "summary.json").read_text())
    assert "falls back to 'straight'" in s["dwell_prediction"]["note"]
    assert s["dwell_prediction"]["model"] == "route" and s["dwell_prediction"]["model_setting"] == "route"
    # the default ("auto") on the same trace: straight, without a note; its coverage is the
    # explicit fallback's, value for value
    toml.write_text(toml.read_text().replace('dwell_model = "route"', 'dwell_model = "auto"'))
    rep3 = run_cli("replay", str(tmp_path / "t.xml"), "--scenario", str(toml), "--out", str(tmp_path / "rep3"), "-q")
    assert rep3.returncode == 0 and "cosim: note" not in rep3.stderr, rep3.stderr
    s = json.loads((tmp_path / "rep3" / "summary.json").read_text())
    assert "note" not in s["dwell_prediction"]
    assert s["dwell_prediction"]["model"] == "straight" and s["dwell_prediction"]["model_setting"] == "auto"
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "rep2" / "coverage.parquet"),
                                  pd.read_parquet(tmp_path / "rep3" / "coverage.parquet"))


# -- the one route walker (RouteGeometry.points_along, World.route_ahead) ---------------------
def bent_net(via: bool = True, a_length: float = 110.0) -> NetInfo:
    """"a" bends: (0, 0) -> (30, 40) -> (30, 100), drawn 50 + 60 = 110 m; "b": (40, 110) ->
    (140, 110), 100 m; SUMO drives a -> b on ":J_0", 20 m (the chord between a's end and b's
    start is only 14.14 m)."""
    length = {"a": a_length, "b": 100.0, ":J_0": 20.0}
    return NetInfo("mem", length, np.array([[0.0, 0.0]]), (0.0, 0.0, 140.0, 110.0),
                   {"a": (0.0, 0.0, 30.0, 100.0), "b": (40.0, 110.0, 140.0, 110.0)},
                   {"a": "0.00,0.00 30.00,40.00 30.00,100.00", "b": "40.00,110.00 140.00,110.00"},
                   {e: 10.0 for e in length}, {("a", "b"): ":J_0"} if via else {})


def test_route_walk_along_lane_shapes_and_the_internal_edge():
    from cosim.world.routes import RouteGeometry

    geo = RouteGeometry(bent_net())
    pts = geo.points_along(("a", "b"), 0, [25.0, 80.0, 120.0, 150.0, 230.0, 231.0])
    # 25 m: halfway along the first segment (15, 20); 80 m: 30 m up the second (30, 70);
    # 120 m: 10 m into the 20 m crossing, half of the chord (30, 100) -> (40, 110): (35, 105);
    # 150 m: b starts at 110 + 20 = 130, 20 m along it: (60, 110); 230 m: b's end; past it: None
    want = [(15.0, 20.0), (30.0, 70.0), (35.0, 105.0), (60.0, 110.0), (140.0, 110.0), None]
    for got, exp in zip(pts, want):
        assert got == exp if exp is None else got == pytest.approx(exp)
    # from the start of the crossing: 5 m of 20 is a quarter of the chord
    assert geo.points_along(("a", "b"), 0, [5.0, 30.0], crossing=True) == [pytest.approx((32.5, 102.5)),
                                                                           pytest.approx((50.0, 110.0))]
    # no internal edge named: the crossing is the straight gap, 14.142 m; its middle at 117.071 m
    plain = RouteGeometry(bent_net(via=False))
    assert plain.points_along(("a", "b"), 0, [110.0 + math.sqrt(200.0) / 2])[0] == pytest.approx((35.0, 105.0))
    # a lane SUMO gives 55 m for a 110 m drawing: lane positions are scaled to the shape (27.5 m
    # of lane = 55 m of drawing: 5 m up the second segment)
    short = RouteGeometry(bent_net(a_length=55.0))
    assert short.points_along(("a",), 0, [27.5])[0] == pytest.approx((30.0, 45.0))
    # the route leaves the known network / starts off it
    assert geo.points_along(("a", "nowhere"), 0, [100.0, 115.0]) == [pytest.approx((30.0, 90.0)), None]
    assert geo.points_along(("nowhere", "a"), 0, [1.0]) == [None]


def test_world_walks_from_a_vehicle_on_its_edge_or_inside_the_junction():
    cfg = from_dict({"scenario": {"sumocfg": "/dev/null", "seed": 1},
                     "rsu": {"placement": "sites", "sites": [{"id": "r", "x": 0.0, "y": 0.0}]}}, "t.toml")
    w = World(cfg, bent_net())
    ids = np.array(["on_a", "in_j", "lost"], dtype=object)
    edges = np.array(["a", ":J_0", ":J_9"], dtype=object)
    w.update(Snapshot(1.0, ids, np.array([30.0, 35.0, 0.0]), np.array([70.0, 105.0, 0.0]), np.full(3, 10.0),
                      np.zeros(3), np.zeros(3), edges, np.array([e + "_0" for e in edges], dtype=object),
                      np.array([80.0, 10.0, 1.0]), np.full(3, 5.0)))
    assert w.route_ahead(0, [0.0]) == (None, -1)  # no routes from the source
    w.route_of = {"on_a": ("a", "b"), "in_j": ("a", "b"), "lost": ("a", "b")}
    # on a at 80 m: here (30, 70); 40 m on: 30 m to a's end, 10 m into the crossing (35, 105)
    pts, k = w.route_ahead(0, [0.0, 40.0])
    assert k == 0 and pts == [pytest.approx((30.0, 70.0)), pytest.approx((35.0, 105.0))]
    # 10 m into ":J_0": here (35, 105); 30 m on: 10 m to b's start, 20 m along b (60, 110)
    pts, k = w.route_ahead(1, [0.0, 30.0])
    assert k == 0 and pts == [pytest.approx((35.0, 105.0)), pytest.approx((60.0, 110.0))]
    assert w.route_ahead(2, [0.0]) == (None, -1)  # an internal edge its route does not name


@pytest.mark.parametrize("speed", ["learned", "limit", "current"])
def test_every_vehicle_served_and_a_served_subset_predict_alike(speed):
    """RouteDwell.predict takes a shortcut when every vehicle is served (no gather and scatter of
    the served ones): the same vehicles with one unserved vehicle beside them (the general path)
    get the same dwell bit for bit, on an edge, inside the junction and falling back to straight."""
    def run(extra: bool) -> list:
        cfg = from_dict({"scenario": {"sumocfg": "/dev/null", "seed": 1},
                         "world": {"dwell_model": "route", "route_speed": speed},
                         "rsu": {"placement": "sites", "radius_m": 500.0, "sites": [{"id": "r", "x": 0.0, "y": 0.0}]}},
                        "t.toml")
        w = World(cfg, bent_net())
        w.route_of = {"on_a": ("a", "b"), "in_j": ("a", "b"), "lost": ("a", "b"), "on_b": ("a", "b")}
        rows = [("on_a", "a", 30.0, 70.0, 80.0, 9.0), ("in_j", ":J_0", 35.0, 105.0, 10.0, 4.0),
                ("lost", ":J_9", 0.0, 0.0, 1.0, 7.0), ("on_b", "b", 60.0, 110.0, 20.0, 11.0)]
        if extra:  # 7 km away, on an edge the network does not know (its speed is learned nowhere)
            rows.insert(2, ("far", "nowhere", 7000.0, 7000.0, 3.0, 12.0))
        got = []
        for t in (1.0, 2.0):
            ids, edges, x, y, pos, v = (np.array(c, dtype=object if k < 2 else float) for k, c in enumerate(zip(*rows)))
            w.update(Snapshot(t, ids, x, y, v, np.full(len(ids), 90.0), np.zeros(len(ids)), edges,
                              np.array([e + "_0" for e in edges], dtype=object), pos + t, np.full(len(ids), 5.0)))
            keep = ids != "far"
            assert not extra or (np.isnan(w.dwell_s[~keep]).all() and (w.serving[~keep] == -1).all())
            got.append(w.dwell_s[keep].tobytes())
        return got

    a = run(extra=False)
    assert a == run(extra=True)
    assert not np.isnan(np.frombuffer(a[1])).any()
