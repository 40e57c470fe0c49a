"""The MoE paper's own world (paper 001; cosim/sources/paper.py Paper001Source, scenarios/paper001.toml):
the source contract, determinism, our reading of the abstract (V2V between vehicles of one road
world, the same layer as the SUMO runs) and ``--world paper`` on grid6_moe."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cosim import config
from cosim.compare import MEASURED, differences
from cosim.errors import ConfigError
from cosim.runner import run
from cosim.sources.base import SNAPSHOT_FIELDS
from cosim.sources.check import TraceCheck
from cosim.sources.paper import LENGTH_M, PAPER_WORLDS, Paper000Source, synthetic_source, with_world
from cosim.sources.paper001 import Paper001Source
from cosim.world.network import read_net

from .conftest import drive_source

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "scenarios" / "paper001.toml"
PAPER000 = ROOT / "scenarios" / "paper000.toml"
GRID6_MOE = ROOT / "scenarios" / "grid6_moe.toml"
NET = ROOT / "sumo_nets" / "paper000" / "road.net.xml"
IDM = dict(a_max=2.6, b_max=4.5, v_des=13.89, delta=4.0, s0=2.5, headway=1.0)
#: two cheap policies: the tests run the layer, not its solvers
CHEAP = {"layers.moe.policies": ["uniform", "nearest"]}


def test_the_source_contract():
    net = read_net(NET)
    src = Paper001Source(str(NET), seed=7, idm=IDM, step_s=0.25, end_s=200.0)
    assert src.time_s() == 0.0 and not src.finished()
    snaps = drive_source(src, 200.0)
    assert src.finished()
    list(TraceCheck("paper001.parquet", net, probe_steps=200, max_off=0.0)(iter(snaps)))
    counts = [len(s) for s in snaps]
    assert max(counts) == 20 and sum(c == 20 for c in counts) >= 0.9 * len(counts)
    assert src.left > 0 and src.guarded == 0
    for s in snaps:
        assert all(len(getattr(s, f)) == len(s) for f in SNAPSHOT_FIELDS)
        assert (s.speed >= 0).all() and (s.speed <= 13.89 + 1e-9).all()
        for k in ("east", "west"):
            assert (np.diff(np.sort(s.lane_pos[s.edge == k])) >= LENGTH_M).all()
    assert [s.time_s for s in snaps] == [float(k) for k in range(1, 201)]


def test_its_own_random_stream():
    # the same seed: paper 000's world and paper 001's place their vehicles differently (their
    # streams are keyed by the world's name), and the same world twice identically
    a0, a1, b1 = (cls(str(NET), seed=5, idm=IDM, step_s=0.25) for cls in (Paper000Source, Paper001Source,
                                                                              Paper001Source))
    for s in (a0, a1, b1):
        s.start()
    assert not np.array_equal(a0.pos, a1.pos)
    assert np.array_equal(a1.pos, b1.pos) and np.array_equal(a1.v, b1.v) and np.array_equal(a1.lane_of, b1.lane_of)
    # the runner builds it from the scenario: the class and the arguments of paper 000's world
    cfg = config.load(PAPER)
    cls, kw = synthetic_source(cfg, str(NET), 0.25, 0.0, 300.0)
    assert cls == "cosim.sources.paper001:Paper001Source" and PAPER_WORLDS["moe"] == "paper001"
    assert kw["vehicles"] == 20 and kw["idm"] == IDM and kw["seed"] == 42 and kw["initial_speed_mps"] == (8.33, 13.89)


def _cfg(end_s=90.0, **scenario):
    return config.apply_overrides(config.load(PAPER).replace(scenario={"end_s": end_s, **scenario}), CHEAP)


def _tables(folder: Path) -> dict:
    """Every table's bytes, except the MoE task table: its ``solve_ms`` column is measured wall time
    (cosim.compare.MEASURED), so it is compared value for value without that column (:func:`_same`)."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))
            if p.is_file() and "moe_tasks.parquet" not in p.parts}


def _same(a: Path, b: Path) -> bool:
    """Byte-identical tables, the MoE task table identical value for value but for its measured
    column, and no other result different (cosim.compare)."""
    ta, tb = (pd.read_parquet(d / "moe_tasks.parquet").drop(columns=sorted(MEASURED & set(
        pd.read_parquet(d / "moe_tasks.parquet").columns))) for d in (a, b))
    try:
        pd.testing.assert_frame_equal(ta, tb, check_exact=True)
    except AssertionError:
        return False
    return _tables(a) == _tables(b) and differences(a, b) == []


def test_same_seed_same_tables(tmp_path):
    a = run(_cfg(), tmp_path / "a", progress=False)
    b = run(_cfg(), tmp_path / "b", progress=False)
    run(_cfg(seed=43), tmp_path / "c", progress=False)
    assert {p.parts[0] for p in _tables(tmp_path / "a")} >= {"coverage.parquet", "rsus.parquet"}
    assert (tmp_path / "a" / "moe_tasks.parquet").exists()
    assert _same(tmp_path / "a", tmp_path / "b")
    assert _tables(tmp_path / "a") != _tables(tmp_path / "c")  # another seed, other vehicles
    assert not _same(tmp_path / "a", tmp_path / "c")
    assert a["status"] == "completed" and a["layers"]["moe"]["uniform"]["tasks"] > 0


def test_the_source_in_its_own_process_gives_the_same_tables(tmp_path):
    run(_cfg(60.0), tmp_path / "one", progress=False)
    two = run(_cfg(60.0, jobs=2), tmp_path / "two", progress=False)  # the source one slot ahead
    assert two["status"] == "completed"
    assert _same(tmp_path / "one", tmp_path / "two")


def test_every_task_uses_vehicles_of_the_world_within_v2v_range(tmp_path):
    # the abstract's setting: vehicles host experts for other vehicles over V2V links. Checked
    # independently of the layer: each task's TV and IVs are vehicles of the paper world, and
    # every IV was within the channel's V2V range (300 m) of the TV at the slot before the request
    # (the snapshot the placement saw), recomputed from coverage.parquet's positions
    s = run(_cfg(120.0), tmp_path / "r", progress=False)
    cov = pd.read_parquet(tmp_path / "r" / "coverage.parquet").set_index(["vehicle", "time_s"])
    tasks = pd.read_parquet(tmp_path / "r" / "moe_tasks.parquet")
    assert len(tasks) >= 10 and s["max_concurrent_vehicles"] == 20
    assert set(cov.index.get_level_values(0)) <= {f"p{k}" for k in range(200)}
    checked = 0
    for _, row in tasks.iterrows():
        t0 = float(np.floor(row.t_request_s))
        tv = cov.loc[(row.tv, t0)]
        assert len(row.ivs) <= 8  # ivs_per_task
        for iv in row.ivs:
            d = float(np.hypot(cov.loc[(iv, t0)].x - tv.x, cov.loc[(iv, t0)].y - tv.y))
            assert d <= 300.0 + 1e-6
            checked += 1
    assert checked > 50


def test_the_world_is_paper000s_and_the_layer_is_grid6s():
    # our reading (docs/paper_worlds.md, "Paper 001"): the world tables are paper 000's, only the
    # source (its own random stream) differs; the MoE layer's table is grid6_moe's, key for key
    p1, p0, g = config.load(PAPER), config.load(PAPER000), config.load(GRID6_MOE)
    assert p1.traffic == p0.traffic.__class__(**{**p0.traffic.__dict__, "source": "paper001"})
    assert p1.world == p0.world and p1.rsu == p0.rsu and p1.channel == p0.channel
    assert p1.scenario.sumocfg == p0.scenario.sumocfg
    assert p1.layers == g.layers and p1.traffic.vehicles == 20
    assert p1.channel.v2v_range_m == g.channel.v2v_range_m == 300.0  # the V2V links: the same model as grid6


def test_world_flag_moves_grid6_moe_into_the_paper_world():
    grid6 = config.load(GRID6_MOE)
    moved = with_world(grid6, "paper")
    assert moved == config.load(PAPER)
    assert with_world(grid6, "paper001") == moved
    assert moved.traffic.source == "paper001" and moved.layers == grid6.layers
    # a scenario with the DViT and the MoE layer names two paper worlds: the flag asks which
    with pytest.raises(ConfigError, match="--world paper: .* enables layer"):
        with_world(config.load(ROOT / "scenarios" / "grid6_all.toml"), "paper")


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="traffic.vehicles = 500"):
        run(_cfg().replace(traffic={"vehicles": 500}), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="traffic.source: 'paper9' is not one of"):
        config.apply_overrides(config.load(PAPER), {"traffic.source": "paper9"})
