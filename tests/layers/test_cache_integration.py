"""The edge-cache layer on real SUMO traffic (grid6)."""

import json

import numpy as np
import pandas as pd
import pytest

from cosim.sources.sumo import SumoSource, sumo_command

from ..conftest import GRID6_CFG, ROOT, run_cli, run_grid6

pytestmark = pytest.mark.sumo

POLICIES = ["lc", "lfu", "lfu-perfect", "fifo", "random", "cloud", "lru", "lc-predictive"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_grid6(tmp_path_factory.mktemp("cache"),
                     "[layers.cache]\nrequest_rate_per_vehicle_s = 0.1\ngpu_memory_gb = 40\nhorizon_s = 20\n", end_s=120)


def test_requests_table_and_table2_summary(run):
    df = pd.read_parquet(run / "cache_requests.parquet")
    s = json.loads((run / "summary.json").read_text())["layers"]["cache"]
    assert list(s) == POLICIES
    req = df[df.outcome != "preload"]
    n = s["lc"]["requests"]
    assert n > 1000  # ~300 covered vehicles x 0.1/s x 120 s
    for policy, block in s.items():
        rows = req[req.policy == policy]
        assert len(rows) == block["requests"] == n
        prows = df[df.policy == policy]
        # Table II's system cost is the sum of its terms, row by row and in the summary
        terms = prows[["switching_cost", "accuracy_cost", "inference_latency_s", "offloading_latency_s", "cloud_cost"]]
        np.testing.assert_allclose(prows["system_cost"], terms.sum(axis=1))
        assert block["system_cost"] == pytest.approx(prows["system_cost"].sum())
        assert block["switching_cost"] == pytest.approx(prows["switching_cost"].sum())
        assert block["edge_execution_ratio"] == pytest.approx(rows["edge"].mean())
        edge = rows[rows.edge]
        assert block["average_accuracy_cost"] == pytest.approx(edge["accuracy_cost"].mean() if len(edge) else 0.0)
        # served at the edge: no cloud cost; elsewhere: no inference at the edge
        assert (edge["cloud_cost"] == 0).all() and (rows[~rows.edge]["inference_latency_s"] == 0).all()
    assert s["cloud"]["edge_execution_ratio"] == 0 and s["cloud"]["switching_cost"] == 0
    assert s["lc"]["edge_execution_ratio"] > 0.3


def test_every_policy_sees_the_same_requests(run):
    req = pd.read_parquet(run / "cache_requests.parquet")
    req = req[req.outcome != "preload"]
    ref = req[req.policy == "lc"][["t_s", "vehicle", "rsu", "service"]].reset_index(drop=True)
    for policy in POLICIES[1:]:
        other = req[req.policy == policy][["t_s", "vehicle", "rsu", "service"]].reset_index(drop=True)
        pd.testing.assert_frame_equal(ref.astype(str), other.astype(str))


def test_requests_follow_vehicles_across_rsus(run):
    req = pd.read_parquet(run / "cache_requests.parquet")
    req = req[(req.policy == "lc") & (req.outcome != "preload")].astype({"vehicle": str, "rsu": str})
    per_vehicle = req.groupby("vehicle")["rsu"].nunique()
    assert (per_vehicle > 1).sum() > 10  # vehicles that handed over made requests at both RSUs
    # each request goes to the RSU that served its vehicle in the slot it was made (coverage table)
    cov = pd.read_parquet(run / "coverage.parquet", columns=["time_s", "vehicle", "rsu"]).astype({"vehicle": str, "rsu": str})
    req["time_s"] = np.floor(req["t_s"])
    joined = req.merge(cov, on=["time_s", "vehicle"], suffixes=("", "_cov"))
    assert len(joined) == len(req)
    assert (joined["rsu"] == joined["rsu_cov"]).all()


def test_route_lookup_reads_sumo_routes():
    cmd = sumo_command(GRID6_CFG, seed=42, end_s=30, step_length_s=0.5)
    src = SumoSource(cmd)
    src.start()
    try:
        snap = src.step_to(20.0)
        assert len(snap) > 10
        for vid, edge in zip(snap.ids[:20], snap.edge[:20]):
            route = src.route_of[vid]
            assert len(route) >= 1 and all(not e.startswith(":") for e in route)
            if not edge.startswith(":"):
                assert edge in route
        assert src.route_of["no-such-vehicle"] == ()
    finally:
        src.close()


def test_set_and_no_layers_on_the_command_line(tmp_path):
    from cosim import config

    scen = str(ROOT / "scenarios" / "grid6_cache.toml")
    proc = run_cli("run", scen, "--end", "5", "-q", "--out", str(tmp_path / "a"),
                   "--set", "layers.cache.gpu_memory_gb=40", "--set", "layers.cache.policies=[\"lc\"]")
    assert proc.returncode == 0, proc.stderr
    cfg = config.load(tmp_path / "a" / "config.toml")
    assert cfg.layers["cache"]["gpu_memory_gb"] == 40 and cfg.layers["cache"]["policies"] == ["lc"]
    assert list(json.loads((tmp_path / "a" / "summary.json").read_text())["layers"]["cache"]) == ["lc"]
    proc = run_cli("run", scen, "--end", "5", "-q", "--out", str(tmp_path / "b"), "--no-layers")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "b" / "cache_requests.parquet").exists()
    proc = run_cli("run", scen, "--end", "5", "-q", "--set", "layers.cache.gpu_memory_gb=-1")
    assert proc.returncode == 2 and "layers.cache.gpu_memory_gb: -1 is out of range" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
