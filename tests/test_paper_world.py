"""The DViT paper's own world (cosim/sources/paper.py): eqs. (8)-(11) by hand, the source
contract, determinism, coverage at the request and Sec. IV's parameters."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cosim import config
from cosim.errors import ConfigError, CosimError
from cosim.runner import run
from cosim.sources.base import SNAPSHOT_FIELDS
from cosim.sources.check import TraceCheck
from cosim.sources.paper import LENGTH_M, Paper000Source, idm_accel, source_kwargs, with_world
from cosim.world.network import read_net

from .conftest import drive_source

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "scenarios" / "paper000.toml"
NET = ROOT / "sumo_nets" / "paper000" / "road.net.xml"
IDM = dict(a_max=2.6, b_max=4.5, v_des=13.89, delta=4.0, s0=2.5, headway=1.0)


def test_idm_acceleration_by_hand():
    # free road, v = 10: 2.6 (1 - (10 / 13.89)^4) = 2.6 (1 - 0.268653) = 1.901503
    a = idm_accel(np.array([10.0]), np.array([0.0]), np.array([np.inf]), **IDM)
    assert a[0] == pytest.approx(1.901503, abs=1e-6)
    # gap 20 m, closing at 2 m/s: s* = 2.5 + 10 + 10 * 2 / (2 sqrt(2.6 * 4.5)) = 12.5 + 2.923527 = 15.423527
    # a = 2.6 (1 - 0.268653 - (15.423527 / 20)^2) = 2.6 (1 - 0.268653 - 0.594713) = 0.355250
    a = idm_accel(np.array([10.0]), np.array([2.0]), np.array([20.0]), **IDM)
    assert a[0] == pytest.approx(0.355250, abs=1e-6)


def test_one_step_is_eqs_10_and_11():
    src = Paper000Source(str(NET), seed=3, vehicles=1, directions=1, initial_speed_mps=(10.0, 10.0), idm=IDM,
                         step_s=0.25, end_s=10.0)
    src.start()
    x0 = float(src.pos[0])
    snap = src.step_to(0.25)
    a = 1.901503  # the free-road acceleration at 10 m/s (above)
    assert snap.speed[0] == pytest.approx(10.0 + a * 0.25, abs=1e-5)  # eq. (10)
    assert snap.lane_pos[0] == pytest.approx(x0 + 10.0 * 0.25 + 0.5 * a * 0.25 ** 2, abs=1e-5)  # eq. (11)
    assert snap.accel[0] == pytest.approx(a, abs=1e-5)
    # the east lane runs from (2, -1.6) to (998, -1.6): x = 2 + lane_pos, heading 90 deg (east)
    assert snap.x[0] == pytest.approx(2.0 + snap.lane_pos[0]) and snap.y[0] == pytest.approx(-1.6)
    assert snap.angle[0] == pytest.approx(90.0) and list(snap.edge) == ["east"] and list(snap.lane) == ["east_0"]


def test_the_source_contract():
    net = read_net(NET)
    src = Paper000Source(str(NET), seed=7, idm=IDM, step_s=0.25, end_s=300.0)
    assert src.time_s() == 0.0 and not src.finished()
    snaps = drive_source(src, 300.0)
    assert src.finished()
    # the replay's checks on every snapshot: finite numbers, unique ids, every record on the network
    list(TraceCheck("paper000.parquet", net, probe_steps=300, max_off=0.0)(iter(snaps)))
    counts = [len(s) for s in snaps]
    assert max(counts) == 20 and sum(c == 20 for c in counts) >= 0.9 * len(counts)  # replaced as they leave
    assert src.left > 20  # vehicles did leave (and new ones came): 300 s at ~14 m/s over 996 m
    assert src.guarded == 0  # the gap guard never acted
    for s in snaps:
        assert all(len(getattr(s, f)) == len(s) for f in SNAPSHOT_FIELDS)
        assert (s.speed >= 0).all() and (s.speed <= 13.89 + 1e-9).all()
        # every vehicle in the RSU's disc (RSU at (500, 0), 500 m)
        assert (np.hypot(s.x - 500.0, s.y) <= 500.0).all()
        for k in ("east", "west"):  # no two vehicles of a lane overlap
            pos = np.sort(s.lane_pos[s.edge == k])
            assert (np.diff(pos) >= LENGTH_M).all()
    assert [s.time_s for s in snaps] == [float(k) for k in range(1, 301)]
    assert all(src.route_of[v] in (("east",), ("west",)) for s in snaps for v in s.ids)
    assert src.route_of["nobody"] == ()


def test_placement_and_speeds_are_the_stated_draws():
    rng_count = []
    for seed in range(20):
        src = Paper000Source(str(NET), seed=seed, idm=IDM, step_s=0.25)
        src.start()
        assert len(src.ids) == 20
        assert ((src.v >= 8.33) & (src.v <= 13.89)).all()
        rng_count.append(int((src.lane_of == 0).sum()))
        for k in (0, 1):  # minimum spacing: length + s0 + theta * v_hi = 5 + 2.5 + 13.89
            pos = np.sort(src.pos[src.lane_of == k])
            assert (np.diff(pos) >= 5.0 + 2.5 + 13.89 - 1e-9).all()
            assert (pos >= LENGTH_M).all() and (pos <= 996.0).all()
    # fair coin: 400 draws, mean 10 per lane (a binomial's 4-sigma band: 10 +- 0.9 over 20 seeds)
    assert abs(np.mean(rng_count) - 10.0) < 0.9
    with pytest.raises(ConfigError, match="traffic.vehicles = 60"):
        Paper000Source(str(NET), seed=1, vehicles=60, idm=IDM)


def _paper_cfg(end_s=100.0, **scenario):
    return config.load(PAPER).replace(scenario={"end_s": end_s, **scenario})


def _tables(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*.parquet")) if p.is_file()}


def test_same_seed_same_tables_byte_for_byte(tmp_path):
    a = run(_paper_cfg(), tmp_path / "a", progress=False)
    b = run(_paper_cfg(), tmp_path / "b", progress=False)
    c = run(_paper_cfg(seed=43), tmp_path / "c", progress=False)
    ta, tb, tc = _tables(tmp_path / "a"), _tables(tmp_path / "b"), _tables(tmp_path / "c")
    assert {p.parts[0] for p in ta} >= {"coverage.parquet", "dvit_tasks.parquet", "rsus.parquet"}
    assert ta == tb
    assert ta != tc
    assert a["layers"] == b["layers"] and a["status"] == "completed" and a["seed"] == 42


def test_every_user_is_in_coverage_at_its_request_and_the_settings_are_sec_iv(tmp_path):
    s = run(_paper_cfg(120.0), tmp_path / "r", progress=False)
    cov = pd.read_parquet(tmp_path / "r" / "coverage.parquet")
    tasks = pd.read_parquet(tmp_path / "r" / "dvit_tasks.parquet")
    assert len(tasks) > 0
    cov["d"] = np.hypot(cov.x - 500.0, cov.y - 0.0)
    at = cov.set_index(["vehicle", "time_s"]).d
    for _, row in tasks.drop_duplicates("task").iterrows():
        t0 = math.floor(row.t_request_s)  # the slot the request was drawn in (slot 1 s, begin 0)
        assert at[(row.user, float(t0))] <= 500.0
        if (row.user, float(t0 + 1)) in at.index:  # and at the next slot: the segment between lies in the disc
            assert at[(row.user, float(t0 + 1))] <= 500.0
    assert (cov.rsu == "rsu0").all() and (cov.d <= 500.0).all()
    # Sec. IV: one RSU of 500 m, 15-20 GFLOP/s and 100-200 MHz; 20 vehicles
    (rsu,) = s["rsus"]
    assert rsu["radius_m"] == 500.0 and 15e9 <= rsu["compute_flops"] <= 20e9 and 100e6 <= rsu["bandwidth_hz"] <= 200e6
    assert s["max_concurrent_vehicles"] == 20
    cfg = config.load(PAPER)
    assert cfg.channel.noise_dbm == -100.0 and cfg.traffic.vehicles == 20
    assert cfg.channel.vehicle_compute_flops == [5e9, 10e9] and cfg.channel.vehicle_bandwidth_hz == [50e6, 80e6]
    assert cfg.layers["dvit"]["steps"] == 50 and cfg.layers["dvit"]["t_max_s"] == 0.8
    assert cfg.world.grid_cell_m == 25.0


def test_world_flag_moves_a_scenario_into_the_paper_world():
    grid6 = config.load(ROOT / "scenarios" / "grid6_dvit.toml")
    moved = with_world(grid6, "paper")
    assert moved == config.load(PAPER)  # grid6_dvit's layers and times are paper000.toml's
    assert with_world(grid6, "sumo") is grid6
    assert moved.traffic.source == "paper000" and moved.rsu.placement == "sites"
    assert with_world(grid6.replace(scenario={"seed": 5}), "paper000").scenario.seed == 5  # the scenario's own
    with pytest.raises(ConfigError, match="--world paper: .* enables layer"):
        with_world(config.load(ROOT / "scenarios" / "grid6.toml"), "paper")


def test_bad_paper_world_settings_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="traffic.source: 'paper9' is not one of"):
        config.apply_overrides(config.load(PAPER), {"traffic.source": "paper9"})
    with pytest.raises(ConfigError, match="traffic.initial_speed_mps"):
        config.apply_overrides(config.load(PAPER), {"traffic.initial_speed_mps": [0, 3]})
    with pytest.raises(ConfigError, match="traffic.vehicles = 500"):
        run(_paper_cfg().replace(traffic={"vehicles": 500}), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()  # refused before anything was written
    with pytest.raises(CosimError, match="runs no SUMO"):
        run(_paper_cfg(), tmp_path / "y", progress=False, gui=True)
    kw = source_kwargs(config.load(PAPER), str(NET), 0.25, 0.0, 300.0)
    assert kw["idm"] == IDM and kw["vehicles"] == 20 and kw["initial_speed_mps"] == (8.33, 13.89)


def test_the_source_in_its_own_process_gives_the_same_tables(tmp_path):
    one = run(_paper_cfg(60.0), tmp_path / "one", progress=False)
    two = run(_paper_cfg(60.0, jobs=2), tmp_path / "two", progress=False)  # the source one slot ahead
    assert two["status"] == "completed" and one["layers"] == two["layers"]
    for table in ("coverage", "dvit_tasks"):
        a, b = (pd.read_parquet(tmp_path / d / f"{table}.parquet") for d in ("one", "two"))
        pd.testing.assert_frame_equal(a, b)


def test_a_recorded_paper_world_replays_to_the_same_tables(tmp_path):
    from cosim.runner import replay

    cfg = _paper_cfg(40.0)
    run(cfg, tmp_path / "live", progress=False, record=tmp_path / "trace.parquet")
    replay(cfg, tmp_path / "trace.parquet", tmp_path / "replay", progress=False)
    assert _tables(tmp_path / "live") == _tables(tmp_path / "replay")


def test_a_paper_world_needs_an_end(tmp_path):
    with pytest.raises(ConfigError, match="needs an end: set scenario.end_s"):
        run(config.load(PAPER).replace(scenario={"end_s": -1.0}), tmp_path / "z", progress=False)
    assert not (tmp_path / "z").exists()
