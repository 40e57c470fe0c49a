"""The layer contract, exercised by a small layer defined here and run on real SUMO."""

import json

import numpy as np
import pandas as pd
import pytest

from cosim import config
from cosim.errors import ConfigError
from cosim.layers.base import LAYERS, LayerContext, PolicyLayer, make_layers, register_layer
from cosim.runner import run

from .conftest import GRID6_TOML


class _Nearest:
    def pick(self, world, veh):
        return world.serving[veh]


class _Random:
    def pick(self, world, veh):
        return np.where(world.serving[veh] >= 0, world.rng("probe.random").integers(0, len(world.rsus), len(veh)), -1)


@register_layer("probe")
class ProbeLayer(PolicyLayer):
    """Every slot, a few vehicles 'request'; each policy picks an RSU for them."""

    policy_registry = {"nearest": _Nearest, "random": _Random}

    def on_start(self):
        self.calls = ["start"]
        self.table = self.ctx.table("probe_requests")
        self.count = {p: 0 for p in self.policies}

    def requests(self, world):
        n = len(world.snap)
        k = min(n, int(self.config.get("per_slot", 3)))
        return world.rng("probe.requests").choice(n, size=k, replace=False) if k else np.zeros(0, dtype=int)

    def serve(self, name, policy, world, requests):
        picks = policy.pick(world, requests)
        self.count[name] += len(requests)
        self.table.append({"slot": np.full(len(requests), world.slot), "policy": np.full(len(requests), name, dtype=object),
                           "vehicle": world.snap.ids[requests], "rsu": picks})

    def on_end(self):
        return {p: {"requests": c} for p, c in self.count.items()}


@pytest.mark.sumo
def test_policies_run_side_by_side_on_identical_requests(tmp_path):
    cfg = config.load(GRID6_TOML).replace(scenario={"end_s": 40}, layers={"probe": {"per_slot": 4}})
    summary = run(cfg, tmp_path, progress=False)
    cov = pd.read_parquet(tmp_path / "coverage.parquet")
    expected = int(np.minimum(cov.groupby("slot").size(), 4).sum())  # early slots have < 4 vehicles
    assert 150 <= expected < 160
    assert summary["layers"]["probe"] == {"nearest": {"requests": expected}, "random": {"requests": expected}}
    df = pd.read_parquet(tmp_path / "probe_requests.parquet")
    a = df[df.policy == "nearest"].reset_index(drop=True)
    b = df[df.policy == "random"].reset_index(drop=True)
    # the same vehicles asked in the same slots for both policies
    assert a[["slot", "vehicle"]].equals(b[["slot", "vehicle"]])
    # the nearest policy agrees with coverage.parquet's serving RSU
    cov["vehicle"] = cov["vehicle"].astype(str)
    names = {r["id"]: i for i, r in enumerate(json.loads((tmp_path / "summary.json").read_text())["rsus"])}
    cov["rsu_idx"] = cov["rsu"].astype(object).map(lambda r: names.get(r, -1))
    merged = a.merge(cov[["slot", "vehicle", "rsu_idx"]], on=["slot", "vehicle"])
    assert len(merged) == len(a)
    assert (merged["rsu"] == merged["rsu_idx"]).all()


def test_unknown_policy_and_disabled_layer():
    ctx = LayerContext(seed=1, slot_s=1.0, scenario_file="s.toml", table=lambda name: None)
    with pytest.raises(ConfigError, match="layers.probe.policies: unknown policy 'best'"):
        make_layers({"probe": {"policies": ["best"]}}, ctx)
    assert make_layers({"probe": {"enabled": False}}, ctx) == []
    assert "probe" in LAYERS
