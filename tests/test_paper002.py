"""The cache paper's own world (cosim/sources/paper002.py): the ring by hand, the source contract,
determinism, every vehicle covered, and the settings the paper and our reading fix."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cosim import config
from cosim.errors import ConfigError
from cosim.runner import run
from cosim.sources.base import SNAPSHOT_FIELDS
from cosim.sources.check import TraceCheck
from cosim.sources.paper import LENGTH_M, idm_accel, with_world
from cosim.sources.paper002 import REQUESTS_TABLE2, Paper002Source, source_kwargs
from cosim.world.network import read_net

from .conftest import drive_source

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "scenarios" / "paper002.toml"
NET = ROOT / "sumo_nets" / "paper000" / "road.net.xml"
IDM = dict(a_max=2.6, b_max=4.5, v_des=13.89, delta=4.0, s0=2.5, headway=1.0)
RING = 2 * 996.0  # the road's two lanes, east (2, -1.6) -> (998, -1.6), then west (998, 1.6) -> (2, 1.6)


def test_table2_holds_88_requests():
    # total accuracy cost / average accuracy cost = requests served at the edge; / edge ratio = requests
    assert REQUESTS_TABLE2["lc"] == pytest.approx(0.44 / 0.0076 / 0.65)  # 89.07
    assert REQUESTS_TABLE2["lfu"] == pytest.approx(0.36 / 0.0083 / 0.494)  # 87.80
    assert 86 < min(REQUESTS_TABLE2.values()) and max(REQUESTS_TABLE2.values()) < 90


def test_a_vehicle_turns_from_one_lane_onto_the_other_by_hand():
    src = Paper002Source(str(NET), seed=3, vehicles=1, initial_speed_mps=(10.0, 10.0), idm=IDM, step_s=0.25,
                         end_s=100.0)
    src.start()
    assert src.ring == pytest.approx(RING)
    src.s = np.array([995.0])  # 1 m before the east lane's end
    snap = src.step_to(0.25)
    a = 1.901503  # the free-road acceleration at 10 m/s (alone on the ring: no leader)
    moved = 10.0 * 0.25 + 0.5 * a * 0.25 ** 2  # eq. (11): 2.559422 m
    assert snap.speed[0] == pytest.approx(10.0 + a * 0.25, abs=1e-5)
    assert list(snap.edge) == ["west"] and snap.lane_pos[0] == pytest.approx(995.0 + moved - 996.0, abs=1e-5)
    # the west lane runs from (998, 1.6) towards x = 2: heading 270 deg
    assert snap.x[0] == pytest.approx(998.0 - snap.lane_pos[0]) and snap.y[0] == pytest.approx(1.6)
    assert snap.angle[0] == pytest.approx(270.0)
    src.s = np.array([RING - 1.0])  # and from the west lane's end back onto the east lane
    snap = src.step_to(0.5)
    assert list(snap.edge) == ["east"] and 0.0 < snap.lane_pos[0] < 3.0


def test_the_leader_is_the_next_vehicle_on_the_ring():
    src = Paper002Source(str(NET), seed=1, vehicles=3, idm=IDM, step_s=0.25, end_s=10.0)
    src.start()
    src.s = np.array([100.0, RING - 20.0, 140.0])  # vehicle 1 is behind vehicle 0 across the ring's seam
    src.v = np.array([10.0, 12.0, 8.0])
    gap, v_lead = src._leaders()
    # 0 follows 2 (140 - 100 - 5 = 35 m); 2 follows 1 across the seam (RING - 20 - 140 - 5);
    # 1 follows 0 across the seam (100 + 20 - 5 = 115 m)
    assert gap.tolist() == pytest.approx([35.0, 115.0, RING - 165.0])
    assert v_lead.tolist() == [8.0, 10.0, 12.0]
    a = idm_accel(src.v, src.v - v_lead, gap, **IDM)
    src._step(0.25)
    assert src.a.tolist() == pytest.approx(a.tolist())


def test_the_source_contract():
    net = read_net(NET)
    src = Paper002Source(str(NET), seed=7, vehicles=72, idm=IDM, step_s=0.25, end_s=300.0)
    assert src.time_s() == 0.0 and not src.finished()
    snaps = drive_source(src, 300.0)
    assert src.finished()
    list(TraceCheck("paper002.parquet", net, probe_steps=300, max_off=0.0)(iter(snaps)))
    assert all(len(s) == 72 for s in snaps)  # nobody leaves, nobody enters
    assert all(sorted(s.ids) == sorted(snaps[0].ids) for s in snaps)
    assert src.guarded == 0  # the gap guard never acted
    laps = 1 + int(np.ceil(13.89 * 300.0 / RING))
    for s in snaps:
        assert all(len(getattr(s, f)) == len(s) for f in SNAPSHOT_FIELDS)
        assert (s.speed >= 0).all() and (s.speed <= 13.89 + 1e-9).all()
        assert (np.hypot(s.x - 500.0, s.y) <= 500.0).all()  # every vehicle covered by the edge server
        ring = np.sort(np.where(s.edge == "east", s.lane_pos, 996.0 + s.lane_pos))
        gaps = np.diff(np.append(ring, ring[0] + RING))
        assert (gaps >= LENGTH_M).all()  # no two overlap, across the seam too
    assert [s.time_s for s in snaps] == [float(k) for k in range(1, 301)]
    for v in snaps[0].ids:  # the ring's edges from the vehicle's first lane, lap after lap
        route = src.route_of[v]
        assert len(route) == 2 * (laps + 1) and set(route[::2]) == {route[0]} and route[0] != route[1]
    # a vehicle drives ~14 m/s x 300 s: more than two laps of the ring
    assert snaps[-1].speed.mean() > 10.0


def test_placement_and_speeds_are_the_stated_draws():
    for seed in range(10):
        src = Paper002Source(str(NET), seed=seed, vehicles=72, idm=IDM, step_s=0.25)
        src.start()
        assert len(src.ids) == 72 and ((src.v >= 8.33) & (src.v <= 13.89)).all()
        ring = np.sort(src.s)
        gaps = np.diff(np.append(ring, ring[0] + RING))
        assert (gaps >= 5.0 + 2.5 + 13.89 - 1e-9).all()  # the minimum spacing, across the seam too
    with pytest.raises(ConfigError, match="traffic.vehicles = 94"):  # 1992 m / 21.39 m = 93.1
        Paper002Source(str(NET), seed=1, vehicles=94, idm=IDM)
    Paper002Source(str(NET), seed=1, vehicles=93, idm=IDM)


def _paper_cfg(end_s=60.0, **scenario):
    return config.load(PAPER).replace(scenario={"end_s": end_s, **scenario}, output={"coverage": True})


def _tables(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*.parquet")) if p.is_file()}


def test_same_seed_same_tables_byte_for_byte(tmp_path):
    a = run(_paper_cfg(), tmp_path / "a", progress=False)
    b = run(_paper_cfg(), tmp_path / "b", progress=False)
    c = run(_paper_cfg(seed=43), tmp_path / "c", progress=False)
    ta, tb, tc = _tables(tmp_path / "a"), _tables(tmp_path / "b"), _tables(tmp_path / "c")
    assert {p.parts[0] for p in ta} >= {"coverage.parquet", "cache_requests.parquet", "rsus.parquet"}
    assert ta == tb
    assert ta != tc
    assert a["layers"] == b["layers"] and a["status"] == "completed"
    two = run(_paper_cfg(jobs=2), tmp_path / "two", progress=False)  # the source in its own process
    assert two["layers"] == a["layers"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / "cache_requests.parquet"),
                                  pd.read_parquet(tmp_path / "two" / "cache_requests.parquet"))


def test_every_request_is_served_by_the_one_edge_server_and_the_settings(tmp_path):
    s = run(_paper_cfg(), tmp_path / "r", progress=False)
    req = pd.read_parquet(tmp_path / "r" / "cache_requests.parquet")
    cov = pd.read_parquet(tmp_path / "r" / "coverage.parquet")
    assert (cov.rsu == "edge0").all() and (np.hypot(cov.x - 500.0, cov.y) <= 500.0).all()
    assert len(cov) == 72 * 60  # 72 vehicles at every one of 60 slots
    asked = req[req.outcome != "preload"]  # a preload (lc-predictive) has no vehicle
    assert (req.rsu == "edge0").all() and set(asked.vehicle) <= set(cov.vehicle)
    # 72 vehicles x 0.05/s x 60 s = 216 requests expected (Poisson: +-4 sigma = +-59)
    n = s["layers"]["cache"]["lc"]["requests"]
    assert n == (asked.policy == "lc").sum()
    assert abs(n - 216) < 59
    assert len(s["rsus"]) == 1 and s["max_concurrent_vehicles"] == 72 and s["vehicles_seen"] == 72
    # the layer is grid6_cache's, key for key
    cfg, grid6 = config.load(PAPER), config.load(ROOT / "scenarios" / "grid6_cache.toml")
    assert cfg.layers == grid6.layers and cfg.channel == grid6.channel
    assert cfg.rsu.radius_m == grid6.rsu.radius_m == 500.0 and cfg.traffic.vehicles == 72


def test_world_flag_moves_the_cache_scenario_into_the_paper_world():
    grid6 = config.load(ROOT / "scenarios" / "grid6_cache.toml")
    moved = with_world(grid6, "paper")
    assert moved == config.load(PAPER)  # grid6_cache's layers and times are paper002.toml's
    assert moved.traffic.source == "paper002" and moved == with_world(grid6, "paper002")
    both = grid6.replace(layers={"dvit": {}})
    with pytest.raises(ConfigError, match="--world paper: .* enables layer"):
        with_world(both, "paper")  # two layers, two papers: name the world


def test_bad_ring_settings_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="traffic.vehicles = 500"):
        run(_paper_cfg().replace(traffic={"vehicles": 500}), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()  # refused before anything was written
    kw = source_kwargs(config.load(PAPER), str(NET), 0.25, 0.0, 300.0)
    assert kw["idm"] == IDM and kw["vehicles"] == 72 and kw["initial_speed_mps"] == (8.33, 13.89)
    # a network whose edges do not join end to start is no ring
    bad = tmp_path / "two.net.xml"
    bad.write_text(NET.read_text().replace('shape="998.00,1.60 2.00,1.60"', 'shape="998.00,801.60 2.00,801.60"'))
    assert bad.read_text() != NET.read_text()
    with pytest.raises(ConfigError, match="as a ring"):
        Paper002Source(str(bad), seed=1, vehicles=2, idm=IDM)
