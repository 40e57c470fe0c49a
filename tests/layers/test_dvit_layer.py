"""The DViT layer on scripted worlds: hand-worked problems and the live-execution corner cases."""

import math
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cosim.config import from_dict
from cosim.layers.base import LayerContext
from cosim.layers.dvit.layer import RSU_NAME, DViTLayer
from cosim.recorder import Lists, Recorder
from cosim.sources.base import Snapshot
from cosim.world.network import NetInfo
from cosim.world.world import World

NET = NetInfo("mem", {"e": 5000.0}, np.array([[0.0, 0.0]]), (0.0, 0.0, 1000.0, 0.0))


def world():
    cfg = from_dict({
        "scenario": {"sumocfg": "/dev/null", "seed": 3},
        "rsu": {"placement": "sites", "radius_m": 500.0, "sites": [{"id": "A", "x": 0.0, "y": 0.0}]},
        "channel": {"fading": "none", "interference": False, "vehicle_bandwidth_hz": 50e6},
    }, "t.toml")
    return World(cfg, NET)


def snap(t, ids, xs, speed=0.0):
    n = len(ids)
    xs = np.asarray(xs, float)
    return Snapshot(t, np.array(ids, dtype=object), xs, np.zeros(n), np.full(n, speed), np.full(n, 90.0), np.zeros(n),
                    np.array(["e"] * n, dtype=object), np.array(["e_0"] * n, dtype=object), xs, np.full(n, 5.0))


def layer(tmp_path, **cfg):
    rec = Recorder(tmp_path)
    ctx = LayerContext(seed=3, slot_s=1.0, scenario_file="t.toml", table=rec.table)
    lay = DViTLayer({"request_rate_per_s": 0.0, **cfg}, ctx)
    lay.on_start()
    return lay, rec


def test_problem_with_no_helpers_is_rsu_plus_user_by_hand(tmp_path):
    w = world().update(snap(1.0, ["u"], [200.0]))
    lay, _ = layer(tmp_path, rsu_compute_flops=[2e12, 2e12], vehicle_compute_flops=[1e12, 1e12],
                   rsu_queue=[0.0, 10.0], vehicle_queue=[0.0, 10.0])
    p, names = lay.build_problem(w, 0, 0, None, 50)
    assert names == [RSU_NAME, "u"]
    step = 51.6e9  # L D (eq. 5, Sec. IV shape), to 0.1 %
    assert p.comp_s[0] == pytest.approx(step / 2e12, rel=1e-3) and p.comp_s[1] == pytest.approx(step / 1e12, rel=1e-3)
    np.testing.assert_array_equal(p.queue_s, [0.0, 0.0])
    # RSU -> user: n' mu / I2V rate; user -> RSU impossible (C1)
    assert p.comm_s[0, 1] == pytest.approx(1025 * 512 * 32 / w.rate_i2v_bps[0])
    assert math.isinf(p.comm_s[1, 0])
    assert p.upload_s == pytest.approx(1e6 / w.rate_v2i_bps[0])
    assert p.user_dwell_s == 600.0  # parked user: capped dwell


def test_user_leaving_coverage_before_the_handoff_fails_c4(tmp_path):
    w = world()
    lay, rec = layer(tmp_path, policies=["mcpdi", "optimal"], steps=50, local_steps=5)
    w.update(snap(1.0, ["u"], [450.0], speed=30.0))  # 50 m from the rim, 30 m/s outwards: dwell 1.67 s
    lay.submit(w, 0, 1.0)
    lay.on_slot(w)
    w.update(snap(2.0, ["u"], [480.0], speed=30.0))
    lay.on_slot(w)
    w.update(snap(3.0, ["u"], [510.0], speed=30.0))  # out of coverage
    lay.on_slot(w)
    for _ in range(8):
        w.update(snap(w.time_s + 1, ["u"], [510.0], speed=30.0))
        lay.on_slot(w)
    out = lay.on_end()
    rec.close()
    df = pd.read_parquet(tmp_path / "dvit_tasks.parquet").set_index("policy")
    # mcpdi keeps 45 steps on the (busy) RSU: ~4.9 s before the hand-off, the user is gone by then
    assert df.loc["mcpdi", "failure"] == "C4" and not df.loc["mcpdi", "success"]
    # optimal saw the 1.67 s dwell at planning time (C4) and ran (almost) everything on the user
    assert df.loc["optimal", "success"] and df.loc["optimal", "devices"][0] == "u"
    assert out["optimal"]["success_rate"] == 1.0 and out["mcpdi"]["success_rate"] == 0.0


def test_helper_vanishing_while_holding_the_result_loses_the_task(tmp_path):
    w = world()
    lay, rec = layer(tmp_path, policies=["mddi"], steps=50, local_steps=5)
    w.update(snap(1.0, ["u", "h"], [100.0, 20.0]))  # mddi picks the helper nearest the RSU: "h"
    lay.submit(w, 0, 1.0)
    lay.on_slot(w)
    w.update(snap(2.0, ["u"], [100.0]))  # "h" left the simulation mid-task
    lay.on_slot(w)
    lay.on_end()
    rec.close()
    row = pd.read_parquet(tmp_path / "dvit_tasks.parquet").iloc[0]
    assert row["failure"] == "device-lost" and row["devices"][0] == "h"


def test_planned_helper_gone_before_its_step_forces_a_reschedule(tmp_path):
    # seeded draws (seed 3) over [0.1, 4] TFLOP/s: user "v2" at u = 0.06 (0.33 TFLOP/s), helper "h4" at
    # u = 0.955 (3.8 TFLOP/s); with a saturated RSU the optimum runs the prefix on "h4"
    w = world()
    lay, rec = layer(tmp_path, policies=["optimal"], steps=50, local_steps=5, rsu_queue=[39.0, 40.0],
                     vehicle_compute_flops=[0.1e12, 4e12])
    w.update(snap(1.0, ["v2", "h4"], [100.0, 120.0]))
    lay.submit(w, 0, 1.0)
    assert lay.kernel.active[0].plan[:45] == ["h4"] * 45
    w.update(snap(1.0, ["v2"], [100.0]))  # the helper vanishes before the first step runs
    lay.on_slot(w)
    for _ in range(20):
        w.update(snap(w.time_s + 1, ["v2"], [100.0]))
        lay.on_slot(w)
    lay.on_end()
    rec.close()
    row = pd.read_parquet(tmp_path / "dvit_tasks.parquet").iloc[0]
    assert row["reschedules"] == 1 and "h4" not in list(row["devices"]) and row["success"]


def test_unknown_config_key_and_policy(tmp_path):
    from cosim.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'layers.dvit.stepz'"):
        layer(tmp_path, stepz=3)
    with pytest.raises(ConfigError, match="unknown policy 'fastest'"):
        layer(tmp_path, policies=["fastest"])
    with pytest.raises(ConfigError, match=r"^t\.toml: layers\.dvit\.local_steps: must be between 1 and steps \(4\)$"):
        layer(tmp_path, steps=4, local_steps=5)
    with pytest.raises(ConfigError, match=r"^t\.toml: layers\.dvit: dim must divide by heads"):
        layer(tmp_path, dim=512, heads=7)


@pytest.mark.parametrize("key, value, bound", [
    ("request_rate_per_s", -0.5, ">= 0"), ("t_max_s", 0.0, "> 0"), ("request_bits", -1.0, ">= 0"),
    ("steps", 0, ">= 1"), ("local_steps", 0, ">= 1"), ("image_hw", 0, ">= 1"), ("patch", 0, ">= 1"),
    ("dim", 0, ">= 1"), ("layers", 0, ">= 1"), ("heads", 0, ">= 1"), ("mlp_dim", 0, ">= 1"),
    ("token_bits", 0, ">= 1"), ("max_helpers", -1, ">= 0"), ("execute_max_tasks", -1, ">= 0"),
])
def test_each_dvit_range_is_declared_on_its_key(tmp_path, key, value, bound):
    """The ranges live on the fields (checked as scenario keys are, listed by `cosim config`):
    one line naming the file, the key, the value and the bound; the bound itself is accepted."""
    from cosim import config
    from cosim.errors import ConfigError
    from cosim.layers.dvit.layer import DViTConfig

    with pytest.raises(ConfigError) as exc:
        layer(tmp_path, **{key: value})
    assert str(exc.value) == f"t.toml: layers.dvit.{key}: {value!r} is out of range (must be {bound})"
    if not bound.startswith(">="):
        return
    ok = type(value)(bound.split()[-1])
    partner = {"steps": {"local_steps": 1}, "image_hw": {"patch": 1}, "dim": {"heads": 1}}.get(key, {})
    assert getattr(layer(tmp_path / key, **{key: ok}, **partner)[0].cfg, key) == ok
    row = next(r for r in config.field_docs(DViTConfig) if r[0] == key)
    assert f"({bound})" in row[2]


def test_an_unknown_preset_names_the_known_ones(tmp_path):
    from cosim.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^t\.toml: layers\.dvit\.preset: 'fast' is not one of calibrated, "
                                          r"paper-literal$"):
        layer(tmp_path, preset="fast")


def two_rsu_world():
    cfg = from_dict({
        "scenario": {"sumocfg": "/dev/null", "seed": 3},
        "rsu": {"placement": "sites", "radius_m": 500.0,
                "sites": [{"id": "A", "x": 0.0, "y": 0.0}, {"id": "B", "x": 1000.0, "y": 0.0}]},
        "channel": {"fading": "none", "interference": False, "vehicle_bandwidth_hz": 50e6},
    }, "t.toml")
    return World(cfg, NET)


@pytest.mark.parametrize("mode", ["fail", "migrate"])
def test_user_crossing_to_another_rsu_mid_task(tmp_path, mode):
    """The user drives from RSU A (x = 0) towards B (x = 1000) at 30 m/s and is handed over at
    x = 510 (t = 3 s) while A still computes (mcpdi keeps the 45 non-local steps on the RSU,
    0.1008 s each). fail: the result cannot reach the user at A (C4). migrate: A forwards the
    latent to B (5 ms + n' mu / 1 Gbit/s = 21.79 ms), B runs the rest and hands it to the user."""
    w = two_rsu_world()
    lay, rec = layer(tmp_path, policies=["mcpdi"], steps=50, local_steps=5, handover=mode,
                     rsu_compute_flops=[2e12, 2e12], vehicle_compute_flops=[1e12, 1e12],
                     rsu_queue=[30.0, 40.0], vehicle_queue=[0.0, 10.0])
    xs = {}
    for t in range(1, 9):
        xs[t] = 450.0 + 30.0 * (t - 1)
        w.update(snap(float(t), ["u"], [xs[t]], speed=30.0))
        if t == 1:
            upload = 1e6 / w.rate_v2i_bps[0]
            lay.submit(w, 0, 1.0)
        if t == 5:
            i2v_b = w.rate_i2v_bps[0]  # B -> user, the slot the hand-off starts in
            assert w.serving[0] == 1
        lay.on_slot(w)
    out = lay.on_end()
    rec.close()
    row = pd.read_parquet(tmp_path / "dvit_tasks.parquet").iloc[0]
    rsu_step = lay.flops_step / 2e12 + 30.0 / (40.0 * 10.0)  # 25.8 ms + 75 ms of M/M/1 wait
    if mode == "fail":
        assert row["failure"] == "C4" and row["migrations"] == 0 and row["final_rsu"] == 0
        return
    forward = 0.005 + 1025 * 512 * 32 / 1e9
    assert row["success"] and row["migrations"] == 1 and row["final_rsu"] == 1 and row["rsu"] == 0
    assert row["migrate_s"] == pytest.approx(forward)
    assert list(row["devices"]) == [RSU_NAME] * 45 + ["u"] * 5
    # the hand-off at t = 1 + upload + 45 steps + forward = 5.56 s runs with the t = 5 world
    assert 5.0 < 1.0 + upload + 45 * rsu_step + forward < 6.0
    expected = upload + 45 * rsu_step + forward + lay.bits / i2v_b + 5 * lay.flops_step / 1e12
    assert row["latency_s"] == pytest.approx(expected, rel=1e-9)
    assert out["mcpdi"]["migrations"] == 1


def test_a_step_too_slow_on_its_holder_moves_to_a_device_that_can_do_it_in_time(tmp_path):
    """Simulated queue: two tasks of mcpdi want the RSU (0.5 s a step, the most compute) at the
    same instant. The second would wait 0.5 s for it: 1.0 s > T_max, so the RSU — which holds
    its latent — reschedules the step (the paper's rule, whoever holds the latent) to the best
    vehicle that can do it in time: helper "h" (0.516 s + the hand-off)."""
    w = world().update(snap(1.0, ["u1", "u2", "h"], [100.0, -100.0, -50.0]))
    lay, rec = layer(tmp_path, policies=["mcpdi"], steps=3, local_steps=1, queue="simulated",
                     rsu_compute_flops=[0.1032e12, 0.1032e12], vehicle_compute_flops=[0.1e12, 0.1e12],
                     rsu_queue=[0.0, 10.0], vehicle_queue=[0.0, 10.0])
    assert lay.flops_step / 0.1032e12 == pytest.approx(0.5, rel=1e-3)
    lay.submit(w, 0, 1.0)
    lay.submit(w, 1, 1.0)
    for t in range(1, 6):
        w.update(snap(float(t), ["u1", "u2", "h"], [100.0, -100.0, -50.0]))
        lay.on_slot(w)
    lay.on_end()
    rec.close()
    df = pd.read_parquet(tmp_path / "dvit_tasks.parquet").set_index("user")
    assert list(df.loc["u1", "devices"]) == [RSU_NAME, RSU_NAME, "u1"] and df.loc["u1", "reschedules"] == 0
    assert list(df.loc["u2", "devices"]) == ["h", "h", "u2"] and df.loc["u2", "reschedules"] == 1
    assert df["success"].all() and max(df.loc["u2", "step_queue_s"]) == 0.0


def _a_faster_helper_turns_up(tmp_path, policies: list, last_slot: int):
    """User v2 requests at t = 1 s with only h3 near (the RSU saturated: M/M/1 at 39/40); from
    t = 2 s h4, twice as fast, is 10 m from h3. The task table by policy, and the layer."""
    w = world()
    lay, rec = layer(tmp_path, policies=policies, steps=50, local_steps=5, rsu_queue=[39.0, 40.0],
                     vehicle_compute_flops=[0.1e12, 4e12])
    w.update(snap(1.0, ["v2", "h3"], [100.0, 120.0]))
    lay.submit(w, 0, 1.0)
    lay.on_slot(w)
    for t in range(2, last_slot + 1):
        w.update(snap(float(t), ["v2", "h3", "h4"], [100.0, 120.0, 130.0]))
        lay.on_slot(w)
    lay.on_end()
    rec.close()
    return pd.read_parquet(tmp_path / "dvit_tasks.parquet").set_index("policy"), lay


def test_closed_loop_vidi_re_decides_from_each_slots_world(tmp_path):
    """Seeded draws (seed 3) over [0.1, 4] TFLOP/s: user "v2" 0.34, helper "h3" 1.92, "h4" 3.83.
    The RSU is saturated (M/M/1 at 39/40: 0.975 s > T_max). At the request only h3 is there:
    both VIDI and optimal run the non-local steps on it. In the next slot h4 (twice as fast)
    turns up 10 m from h3: VIDI (replan = "every-step") re-decides at its first step in that slot
    and moves the result to h4; optimal (planned once) stays on h3."""
    df, lay = _a_faster_helper_turns_up(tmp_path, ["vidi", "optimal"], last_slot=5)
    assert lay.replan == {"vidi": "every-step", "optimal": "request"}
    assert list(df.loc["optimal", "devices"]) == ["h3"] * 45 + ["v2"] * 5 and df.loc["optimal", "replans"] == 0
    vd = list(df.loc["vidi", "devices"])
    steps = np.array(df.loc["vidi", "step_comm_s"]) + df.loc["vidi", "step_comp_s"] + df.loc["vidi", "step_queue_s"]
    upload = df.loc["vidi", "latency_s"] - steps.sum()
    start = 1.0 + upload + np.concatenate([[0.0], np.cumsum(steps)[:-1]])
    n1 = int(np.sum(start < 2.0))  # steps that started in the request's slot
    assert 0 < n1 < 45
    assert vd == ["h3"] * n1 + ["h4"] * (45 - n1) + ["v2"] * 5
    assert df.loc["vidi", "replans"] >= 1 and df["success"].all()
    assert df.loc["vidi", "latency_s"] < df.loc["optimal", "latency_s"]


def _on_e1_at_90m(net: NetInfo) -> World:
    """A world on ``net`` (edges e1 (0,0)->(100,0) and e2 (100,0)->(100,100)) with one RSU "A" at
    the origin and one vehicle "v", 90 m along e1 at 10 m/s, routed e1 -> e2, after one slot."""
    cfg = from_dict({"scenario": {"sumocfg": "/dev/null", "seed": 3},
                     "rsu": {"placement": "sites", "radius_m": 500.0, "sites": [{"id": "A", "x": 0.0, "y": 0.0}]},
                     "channel": {"fading": "none"}}, "t.toml")
    w = World(cfg, net)
    w.route_of = {"v": ("e1", "e2")}
    w.update(Snapshot(1.0, np.array(["v"], dtype=object), np.array([90.0]), np.zeros(1), np.array([10.0]),
                      np.array([90.0]), np.zeros(1), np.array(["e1"], dtype=object), np.array(["e1_0"], dtype=object),
                      np.array([90.0]), np.array([5.0])))
    return w


def _junction_net() -> NetInfo:
    """e1 (0,0)->(100,0), then e2 (100,0)->(100,100), SUMO driving e1 -> e2 on ":J_0" (10 m long,
    from (100, 0) to (100, 0))."""
    return NetInfo("mem", {"e1": 100.0, "e2": 100.0, ":J_0": 10.0}, np.array([[0.0, 0.0]]), (0.0, 0.0, 200.0, 200.0),
                   edge_ends={"e1": (0.0, 0.0, 100.0, 0.0), "e2": (100.0, 0.0, 100.0, 100.0)},
                   edge_via={("e1", "e2"): ":J_0"})


@pytest.mark.parametrize("ahead", ["route", "straight"])
def test_cells_ahead_follow_the_route(tmp_path, ahead):
    """H' positions: a vehicle 90 m along e1 (0,0)->(100,0), then e2 (100,0)->(100,100), driving
    +x. It is 15 m into its 25 m cell; cell m's centre lies m * 25 - 15 + 12.5 m ahead: 22.5 m
    (on e2 at 12.5 m: (100, 12.5)), 47.5 m ((100, 37.5)). Straight ahead: (112.5, 0), (137.5, 0)."""
    net = NetInfo("mem", {"e1": 100.0, "e2": 100.0}, np.array([[0.0, 0.0]]), (0.0, 0.0, 200.0, 200.0),
                  edge_ends={"e1": (0.0, 0.0, 100.0, 0.0), "e2": (100.0, 0.0, 100.0, 100.0)})
    w = _on_e1_at_90m(net)
    lay, _ = layer(tmp_path, ahead=ahead)
    pts, off = lay._ahead_of(w, np.array([-1, 0]), np.array([[0.0, 0.0], [90.0, 0.0]]))
    assert off.tolist() == [0.0, 15.0]
    np.testing.assert_allclose(pts[0], 0.0)  # the RSU stays put
    want = [[90, 0], [100, 12.5], [100, 37.5]] if ahead == "route" else [[90, 0], [112.5, 0], [137.5, 0]]
    np.testing.assert_allclose(pts[1, :3], want, atol=1e-9)


def test_cells_ahead_cross_the_junction_on_its_internal_edge(tmp_path):
    """The world's one route walker: SUMO drives e1 -> e2 on ":J_0", 10 m long, starting and
    ending at (100, 0). Cell centres 22.5 and 47.5 m ahead of the vehicle at 90 m: 10 m to e1's
    end, 10 m through the junction, then 2.5 and 27.5 m up e2: (100, 2.5), (100, 27.5)."""
    w = _on_e1_at_90m(_junction_net())
    lay, _ = layer(tmp_path)
    pts, _ = lay._ahead_of(w, np.array([0]), np.array([[90.0, 0.0]]))
    np.testing.assert_allclose(pts[0, :3], [[90, 0], [100, 2.5], [100, 27.5]], atol=1e-9)


def _ahead_one_at_a_time(lay, world, vidx, xy):
    """The cells ahead as the layer computed them before issue 32's third pass: one vehicle at a
    time, each walk kept in a dict (the reference the slot arrays must reproduce bit for bit)."""
    g, M, s = world.cfg.world.grid_cell_m, lay.AHEAD_CELLS, world.snap
    out, offset = np.empty((len(vidx), M, 2)), []
    cells = np.arange(M) * g
    cells_m = cells.tolist()[1:]
    half = g / 2
    for row, i in enumerate(vidx.tolist()):
        if i < 0:
            out[row] = xy[row]
            offset.append(0.0)
            continue
        off = float(s.lane_pos[i]) % g
        pts = None
        if lay.cfg.ahead == "route" and world.route_of is not None:
            pts, _ = world.route_ahead(i, [0.0] + [max(m - off + half, 0.0) for m in cells_m])
            if pts is not None:
                last = (float(s.x[i]), float(s.y[i]))
                for j, pt in enumerate(pts):
                    pts[j] = last = pt if pt is not None else last
                pts = np.array(pts)
        if pts is None:
            r = np.maximum(cells - off + half, 0.0)
            r[0] = 0.0
            v = np.array([world.vx[i], world.vy[i]])
            sp = float(np.hypot(*v))
            unit = v / sp if sp > 0 else np.zeros(2)
            pts = np.array([s.x[i], s.y[i]])[None, :] + r[:, None] * unit[None, :]
        out[row] = pts
        offset.append(off)
    return out, np.array(offset)


@pytest.mark.parametrize("ahead", ["route", "straight"])
def test_cells_ahead_of_many_vehicles_as_one_at_a_time(tmp_path, ahead):
    """The slot's walks kept in arrays, the straight-ahead ones vectorised, give the numbers the
    one-vehicle-at-a-time walk gave, bit for bit: 60 vehicles on e1 and e2 at random lane
    positions and velocities (some standing), routed e1 -> e2, on e2 alone (the route ends), or
    on an edge their route does not name (straight ahead); three problems over overlapping
    vehicles in one slot, the RSU among the devices."""
    w = _on_e1_at_90m(_junction_net())
    rng = np.random.default_rng(7)
    n = 60
    ids = np.array([f"v{i}" for i in range(n)], dtype=object)
    on_e2 = rng.random(n) < 0.4
    pos = rng.uniform(0.0, 100.0, n)
    x, y = np.where(on_e2, 100.0, pos), np.where(on_e2, pos, 0.0)
    speed = np.where(rng.random(n) < 0.2, 0.0, rng.uniform(0.5, 20.0, n))
    angle = rng.uniform(0.0, 360.0, n)
    edges = np.where(on_e2, "e2", "e1").astype(object)
    w.route_of = {v: [("e1", "e2"), ("e2",), ("e3",)][i % 3] for i, v in enumerate(ids)}
    w.update(Snapshot(1.0, ids, x, y, speed, angle, np.zeros(n), edges, np.array([e + "_0" for e in edges], dtype=object),
                      pos, np.full(n, 5.0)))
    w.update(Snapshot(2.0, ids, x + 0.5, y, speed, angle, np.zeros(n), edges,
                      np.array([e + "_0" for e in edges], dtype=object), pos + 0.5, np.full(n, 5.0)))
    lay, _ = layer(tmp_path, ahead=ahead)
    for sel in (rng.choice(n, 20, replace=False), rng.choice(n, 30, replace=False), np.arange(n)):
        vidx = np.concatenate([[-1], sel]).astype(np.int64)
        xy = np.column_stack([w.snap.x[np.maximum(vidx, 0)], w.snap.y[np.maximum(vidx, 0)]])
        xy[0] = (0.0, 0.0)
        got, off = lay._ahead_of(w, vidx, xy)
        want, want_off = _ahead_one_at_a_time(lay, w, vidx, xy)
        assert got.tobytes() == want.tobytes() and off.tobytes() == want_off.tobytes()
    assert lay._slot_cache(w).ahead.done.all()


ALL = ["vidi", "optimal", "optimal-cl", "mddi", "mbdi", "mcpdi", "vli", "sdi"]


def replan_run(tmp_path, replan):
    """Two requests on a scripted road: user "v2", helpers "h3" and "h5" from the start, "h4"
    (the fastest) turning up in the second slot; every policy side by side."""
    w = world()
    lay, rec = layer(tmp_path, policies=ALL, steps=20, local_steps=3, replan=replan,
                     vehicle_compute_flops=[0.1e12, 4e12])
    w.update(snap(1.0, ["v2", "h3", "h5"], [100.0, 120.0, 60.0]))
    lay.submit(w, 0, 1.0)
    lay.submit(w, 0, 1.5)
    lay.on_slot(w)
    for t in range(2, 12):
        w.update(snap(float(t), ["v2", "h3", "h5", "h4"], [100.0, 120.0, 60.0, 130.0]))
        lay.on_slot(w)
    lay.on_end()
    rec.close()
    return lay, pd.read_parquet(tmp_path / "dvit_tasks.parquet")


@pytest.mark.parametrize("replan", ["policy", "request", "every-step", "step"])
def test_the_layer_wide_replan_puts_every_policy_on_one_information_level(tmp_path, replan):
    """``replan = "step"``: every policy decides again before every step that the holder (not
    the user) starts with more than the local steps left, except the first (planned at the
    request) — from the devices actually used, that is #{k in 1 .. K - local - 1: device of
    step k - 1 is not the user}. "request": never. "policy": VIDI and optimal-cl by their
    trait (at least once: h4 turns up), the others never. "every-step": at most that count."""
    lay, df = replan_run(tmp_path, replan)
    want = {p: (lay.policies[p].traits["replan"] if replan == "policy" else replan) for p in ALL}
    assert lay.replan == want
    assert lay.replan["mcpdi"] == ("request" if replan == "policy" else replan)
    K, local = 20, 3
    assert len(df) == 2 * len(ALL) and (df["devices"].map(len) == K).all() and df["success"].all()
    for _, row in df.iterrows():
        devs = list(row["devices"])
        epochs = sum(devs[k - 1] != "v2" for k in range(1, K - local))
        if want[row["policy"]] == "step":
            assert row["replans"] == epochs, row["policy"]
        elif want[row["policy"]] == "request":
            assert row["replans"] == 0, row["policy"]
        else:
            assert row["replans"] <= epochs, row["policy"]
    by = df.groupby("policy")["replans"].sum()
    if replan == "step":
        assert (by > 0).all()  # every policy, the baselines included, was re-planned
    if replan in ("policy", "every-step"):
        assert by["vidi"] > 0 and by["optimal-cl"] > 0


def test_optimal_cl_moves_to_a_faster_helper_that_turns_up_and_optimal_does_not(tmp_path):
    """The same road with only one request: at the request h3 is the best helper; in the next
    slot h4 (twice as fast as h3, seeded draws as in the VIDI test above) turns up 10 m from h3:
    optimal-cl re-decides from h3 on that slot's world and moves on to h4; optimal keeps its
    request-time plan. optimal-cl is optimal again on each new world: it finishes sooner."""
    df, _ = _a_faster_helper_turns_up(tmp_path, ["optimal", "optimal-cl"], last_slot=7)
    assert list(df.loc["optimal", "devices"]) == ["h3"] * 45 + ["v2"] * 5 and df.loc["optimal", "replans"] == 0
    cl = list(df.loc["optimal-cl", "devices"])
    n1 = cl.count("h3")
    assert 0 < n1 < 45 and cl == ["h3"] * n1 + ["h4"] * (45 - n1) + ["v2"] * 5
    assert df.loc["optimal-cl", "replans"] >= 1 and df["success"].all()
    assert df.loc["optimal-cl", "latency_s"] < df.loc["optimal", "latency_s"]


def test_the_rsu_hands_off_with_its_full_band_and_mbdi_ranks_it_by_that_band(tmp_path):
    """One band rule for the channel and MBDI. RSU A: w0 = 100 MHz, 30 dBm; vehicles 50 MHz.
    No fading, no interference: the I2V rate to a vehicle at 200 m is, by hand (eq. 3),
    100e6 log2(1 + 1000 g / 1e-10) with g = 10^(-(128.1 + 37.6 log10 0.2) / 10), whatever the
    number of vehicles A serves (12 here; the old MBDI rule ranked A by 100/12 = 8.3 MHz, below
    every vehicle). MBDI thus ranks A (100 MHz) above the vehicles (50 MHz) and runs the
    non-local steps there; the problem prices the RSU's hand-off to the helper with that rate."""
    cfg = from_dict({
        "scenario": {"sumocfg": "/dev/null", "seed": 3},
        "rsu": {"placement": "sites", "radius_m": 500.0, "bandwidth_hz": 100e6,
                "sites": [{"id": "A", "x": 0.0, "y": 0.0}]},
        "channel": {"fading": "none", "interference": False, "vehicle_bandwidth_hz": 50e6},
    }, "t.toml")
    w = World(cfg, NET)
    ids = ["u", "h"] + [f"x{i}" for i in range(10)]
    w.update(snap(1.0, ids, [150.0, 200.0] + [400.0 + i for i in range(10)]))
    assert w.connected.tolist() == [12]
    g = 10 ** (-(128.1 + 37.6 * math.log10(0.2)) / 10)
    rate = 100e6 * math.log2(1 + 1000 * g / 1e-10)
    assert w.rate_i2v_bps[1] == pytest.approx(rate, rel=1e-12)
    lay, rec = layer(tmp_path, policies=["mbdi"], steps=10, local_steps=2, rsu_queue=[0.0, 40.0],
                     rsu_compute_flops=[2e12, 2e12], vehicle_compute_flops=[1e12, 1e12])
    p, names = lay.build_problem(w, 0, 0, None, 10)
    j = names.index("h")
    assert p.comm_s[0, j] == pytest.approx(1025 * 512 * 32 / rate, rel=1e-12)  # 16.8 Mbit / 0.936 Gbit/s = 17.9 ms
    assert p.bandwidth_hz[0] == 100e6 and p.rsu_share == 12
    lay.submit(w, 0, 1.0)
    lay.on_slot(w)
    for t in range(2, 5):
        w.update(snap(float(t), ids, [150.0, 200.0] + [400.0 + i for i in range(10)]))
        lay.on_slot(w)
    lay.on_end()
    rec.close()
    row = pd.read_parquet(tmp_path / "dvit_tasks.parquet").iloc[0]
    assert list(row["devices"]) == [RSU_NAME] * 8 + ["u"] * 2 and row["success"]


def test_a_layer_wide_replan_below_a_one_step_policy_is_refused(tmp_path):
    """A policy registered replan = "step" decides one step per call (the rest of its plan is
    filler): a layer-wide "request" or "every-step" would run the filler; "step" and "policy"
    are fine."""
    from cosim.errors import ConfigError
    from cosim import registry
    from cosim.registry import register_policy

    @register_policy("dvit", "test-one-step", replan="step")
    def one_step(p, rng=None, opts=None):  # noqa: ANN001, ANN202
        return np.full(p.steps, p.user)

    try:
        for level in ("request", "every-step"):
            with pytest.raises(ConfigError, match=r"layers\.dvit\.replan: .*'test-one-step'"):
                layer(tmp_path, policies=["vidi", "test-one-step"], replan=level)
        for level in ("policy", "step"):
            lay, _ = layer(tmp_path, policies=["vidi", "test-one-step"], replan=level)
            assert lay.replan["test-one-step"] == "step"
    finally:
        registry._POLICIES["dvit"].pop("test-one-step")
    with pytest.raises(ConfigError, match=r"layers\.dvit\.replan"):
        layer(tmp_path, replan="always")


class _OneRowAtATime(DViTLayer):
    """The layer as it wrote its table before the rows were kept as columns (main at ee8c6fc):
    one batch of one-element arrays per task and policy, appended as the task finishes."""

    def _finish(self, task, status, reason, now):
        st = self.stats[task.policy]
        latency = self.kernel.finish(task, status, reason, completed=status == "done" or reason == "C3")
        if np.isfinite(task.planned_s):
            st["planned"].append(task.planned_s)
        self.table.append({
            "task": np.array([task.task_id]), "policy": np.array([task.policy], dtype=object),
            "t_request_s": np.array([task.t_request]), "user": np.array([task.user], dtype=object),
            "rsu": np.array([task.request_rsu]), "steps": np.array([self.cfg.steps]),
            "devices": Lists([list(task.devices)], pa.string()),
            "comm_s": np.array([float(np.add.reduce(task.comm))]), "comp_s": np.array([float(np.add.reduce(task.comp))]),
            "queue_s": np.array([float(np.add.reduce(task.queue))]),
            "step_comm_s": Lists([list(task.comm)], pa.float64()),
            "step_comp_s": Lists([list(task.comp)], pa.float64()),
            "step_queue_s": Lists([list(task.queue)], pa.float64()),
            "planned_latency_s": np.array([task.planned_s]), "planned_feasible": np.array([task.planned_ok]),
            "latency_s": np.array([latency]),
            "reschedules": np.array([task.reschedules]), "migrations": np.array([task.migrations]),
            "migrate_s": np.array([task.migrate_s]), "final_rsu": np.array([task.rsu]),
            "replans": np.array([task.replans]),
            "success": np.array([status == "done"]),
            "failure": np.array([reason], dtype=object),
            "outcome": np.array([status], dtype=object),
        })

    def _write_rows(self):
        assert not self._rows


@pytest.mark.parametrize("queue", ["analytic", "simulated"])
def test_task_rows_kept_as_columns_write_the_table_of_one_batch_a_row(tmp_path, queue):
    """The rows a slot finishes are kept as Python values and handed over as one batch per policy
    at the slot's end; through the session's path (the layer's PolicyRows, drained per slot and
    written grouped by policy) the table equals, column type and value, the one written with a
    batch of one-element arrays per row. The run: eight policies, two RSUs and a user handed
    over (migrate), tasks requested in several slots, a helper that vanishes, a user that leaves
    coverage, tasks still running at the end (censored), so rows of every outcome finish in
    mixed order within a slot."""
    from cosim.recorder import LayerTables, TableWriter, write_grouped

    policies = ["vidi", "optimal", "optimal-cl", "mddi", "mbdi", "mcpdi", "vli", "sdi"]

    def run(cls, out):
        w = two_rsu_world()
        tables, writer = LayerTables(), TableWriter(out, flush_batches=3)
        ctx = LayerContext(seed=3, slot_s=1.0, scenario_file="t.toml", table=tables.open)
        lay = cls({"request_rate_per_s": 0.0, "policies": policies, "steps": 20, "local_steps": 3,
                   "handover": "migrate", "queue": queue, "rsu_queue": [30.0, 40.0]}, ctx)
        lay.on_start()

        def drain():
            for held in tables.drain().values():
                write_grouped(writer, held, policies)

        for t in range(1, 12):
            x = {"u": 440.0 + 30.0 * (t - 1), "v": -120.0 - 20.0 * (t - 1), "h1": 470.0 + 30.0 * (t - 1),
                 "h2": -100.0, "h3": -130.0}
            gone = {"h1"} if t >= 4 else set()  # a helper leaves at t = 4 ...
            gone |= {"v"} if t == 6 else set()  # ... the user v for one slot at t = 6
            ids = [i for i in x if i not in gone]
            w.update(snap(float(t), ids, [x[i] for i in ids], speed=30.0))
            if t in (1, 2, 5, 11):  # the last ones still run at the end
                lay.submit(w, 0, t + 0.25)
                lay.submit(w, 1, t + 0.5)
            lay.on_slot(w)
            drain()
        lay.on_end()
        drain()
        writer.close()
        return pq.read_table(out)

    new, old = run(DViTLayer, tmp_path / "new.parquet"), run(_OneRowAtATime, tmp_path / "old.parquet")
    assert new.schema.equals(old.schema)
    assert repr(new.to_pydict()) == repr(old.to_pydict())  # every value, bit for bit (repr: NaN == NaN)
    outcomes = set(new.column("outcome").to_pylist())
    assert new.num_rows == 8 * len(policies) and outcomes == {"done", "failed", "censored"}, outcomes
    assert len(set(new.column("failure").to_pylist())) >= 3  # several reasons, in mixed order


def test_the_row_columns_are_each_of_one_kind_and_a_row_of_another_length_is_refused():
    from cosim.recorder import columns_of

    kinds = [set(DViTLayer.LIST_COLUMNS), set(DViTLayer.STRING_COLUMNS), set(DViTLayer.NUMBER_COLUMNS)]
    assert sorted(c for k in kinds for c in k) == sorted(DViTLayer.COLUMNS) and len(DViTLayer.COLUMNS) == 24
    assert columns_of(("a", "b"), [(1, "x"), (2, "y")]) == {"a": (1, 2), "b": ("x", "y")}
    assert columns_of(("a", "b"), []) == {"a": (), "b": ()}
    with pytest.raises(ValueError):  # a row one value short (a plain zip would drop column b)
        columns_of(("a", "b"), [(1,), (2,)])
    with pytest.raises(ValueError):  # rows of different lengths
        columns_of(("a", "b"), [(1, "x"), (2, "y", 3.0)])


def _raising_run(where):
    """A layer of two policies with three tasks each running, and ``tables`` its PolicyRows'
    owner; ``where``: "slot" (a slot finishes one task, then raises) or "end" (the run's end
    censors one task, then raises)."""
    from cosim.recorder import LayerTables

    w, tables = world(), LayerTables()
    ctx = LayerContext(seed=3, slot_s=1.0, scenario_file="t.toml", table=tables.open)
    lay = DViTLayer({"request_rate_per_s": 0.0, "policies": ["sdi", "mcpdi"], "steps": 50, "local_steps": 5}, ctx)
    lay.on_start()
    w.update(snap(1.0, ["u", "h1"], [100.0, 120.0]))
    for _ in range(3):
        lay.submit(w, 0, 1.0)
    lay.on_slot(w)
    assert len(lay.kernel.running()) == 6 and tables.drain() == {}  # nothing finished yet
    finish = lay._finish
    calls = []

    def once_then_raise(*a):
        if calls:
            raise RuntimeError("boom")
        calls.append(a)
        finish(*a)

    lay._finish = once_then_raise
    if where == "slot":
        lay._slot = lambda world: lay._finish(lay.kernel.running()[0], "failed", "policy-error", 1.5) or lay._finish()
    return lay, w, tables


@pytest.mark.parametrize("where", ["slot", "end"])
def test_rows_finished_before_an_exception_are_written_and_a_failed_write_does_not_hide_it(where):
    lay, w, tables = _raising_run(where)
    go = (lambda: lay.on_slot(w)) if where == "slot" else lay.on_end
    with pytest.raises(RuntimeError, match="boom"):
        go()
    held = tables.drain()["dvit_tasks"]
    rows = [b for bs in held.values() for b in bs]
    assert len(rows) == 1 and list(rows[0]["task"]) == [0] and list(rows[0]["outcome"]) == (
        ["failed"] if where == "slot" else ["censored"])
    # the write fails as well: the first exception propagates, the write's failure noted on it
    lay, w, tables = _raising_run(where)
    go = (lambda: lay.on_slot(w)) if where == "slot" else lay.on_end

    def full(batch):
        raise OSError("disk full")

    lay.table.append = full
    with pytest.raises(RuntimeError, match="boom") as info:
        go()
    assert any("disk full" in n for n in info.value.__notes__)


def test_vidi_rho_is_open_at_zero_and_below_one(tmp_path):
    """The paper's rho is in (0, 1]: 0 is refused as the paper does; 1 too, because our stationary
    reading of eq. (18) has an absorbing user state that costs its step every step (the discounted
    sum diverges at rho = 1): one line naming the key."""
    from cosim.errors import ConfigError

    for rho, bound in ((0.0, "> 0"), (1.0, "<= 0.999")):
        with pytest.raises(ConfigError, match=r"layers\.dvit\.options\.vidi\.rho.*" + re.escape(bound)):
            layer(tmp_path, policies=["vidi"], options={"vidi": {"rho": rho}})
    lay, _ = layer(tmp_path, policies=["vidi"], options={"vidi": {"rho": 0.999}})
    assert lay.policies["vidi"].options.rho == 0.999


@pytest.mark.parametrize("ahead", ["route", "straight"])
def test_the_walk_covers_vidis_horizon_cells(tmp_path, ahead):
    """horizon_cells above the layer's 8 walked cells: the layer walks as many as VIDI's H' asks
    (before, VIDI padded cells 8.. with cell 7, freezing its look-ahead at 200 m). The vehicle
    of test_cells_ahead_follow_the_route, 15 m into its cell: cell m's centre lies 25 m - 2.5 m
    ahead. Straight: (90 + 25 m - 2.5, 0), cell 11 at (362.5, 0). Along the route: 10 m to e1's
    end, then up e2 (100 m): cell 4 (97.5 m ahead) at (100, 87.5); cells 5.. lie past the route's
    end, where the walk keeps the last cell on it, (100, 87.5). The default walks 8 cells."""
    net = NetInfo("mem", {"e1": 100.0, "e2": 100.0}, np.array([[0.0, 0.0]]), (0.0, 0.0, 200.0, 200.0),
                  edge_ends={"e1": (0.0, 0.0, 100.0, 0.0), "e2": (100.0, 0.0, 100.0, 100.0)})
    w = _on_e1_at_90m(net)
    lay, _ = layer(tmp_path, ahead=ahead)
    assert lay._ahead_of(w, np.array([0]), np.array([[90.0, 0.0]]))[0].shape == (1, 8, 2)
    lay, _ = layer(tmp_path, ahead=ahead, policies=["vidi", "sdi"], options={"vidi": {"horizon_cells": 12}})
    pts, _ = lay._ahead_of(_on_e1_at_90m(net), np.array([0]), np.array([[90.0, 0.0]]))
    assert pts.shape == (1, 12, 2)
    if ahead == "straight":
        np.testing.assert_allclose(pts[0, :, 0], [90.0] + [90 + 25 * m - 2.5 for m in range(1, 12)], atol=1e-9)
        np.testing.assert_allclose(pts[0, :, 1], 0.0, atol=1e-9)
    else:
        np.testing.assert_allclose(pts[0, 4], [100, 87.5], atol=1e-9)
        np.testing.assert_allclose(pts[0, 5:], [[100, 87.5]] * 7, atol=1e-9)
