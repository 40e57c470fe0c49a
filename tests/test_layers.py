"""The layer contract, exercised by a small layer defined here and run on real SUMO."""

import json

import numpy as np
import pandas as pd
import pytest

from dataclasses import dataclass

from cosim import config, registry
from cosim.config import option
from cosim.errors import ConfigError
from cosim.layers.base import Layer, LayerContext, make_layers
from cosim.registry import register_layer, register_policy
from cosim.runner import run

from .conftest import GRID6_TOML, scoped_registry


def _nearest(world, veh, opts):
    return world.serving[veh]


def _random(world, veh, rng, opts):
    return np.where(world.serving[veh] >= 0, rng.integers(0, len(world.rsus), len(veh)), -1)


@dataclass(frozen=True)
class ProbeConfig:
    policies: list = option(["nearest", "random"], doc="policies")
    options: dict = option({}, doc="per-policy options")
    per_slot: int = option(3, lo=0, doc="requests per slot")


class ProbeLayer(Layer):
    """Every slot, a few vehicles 'request'; each policy picks an RSU for them."""

    config_class = ProbeConfig

    def on_start(self):
        self.table = self.ctx.table("probe_requests")
        self.count = {p: 0 for p in self.policies}

    def on_slot(self, world):
        n = len(world.snap)
        k = min(n, self.cfg.per_slot)
        reqs = world.rng("probe.requests").choice(n, size=k, replace=False) if k else np.zeros(0, dtype=int)
        for name in self.live():
            rng = self.rng_for(name, world, f"probe.{name}")
            picks = self.call(name, world, reqs, rng) if rng is not None else self.call(name, world, reqs)
            self.count[name] += len(reqs)
            self.table.append({"slot": np.full(len(reqs), world.slot), "policy": np.full(len(reqs), name, dtype=object),
                               "vehicle": world.snap.ids[reqs], "rsu": picks})

    def on_end(self):
        return {p: {"requests": c} for p, c in self.count.items()}


@pytest.fixture(autouse=True, scope="module")
def probe():
    """The probe layer and its two policies, registered for this module's tests only."""
    with scoped_registry():
        register_policy("probe", "nearest")(_nearest)
        register_policy("probe", "random", stochastic=True)(_random)
        register_layer("probe")(ProbeLayer)
        yield


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
    cfg = config.from_dict({"scenario": {"sumocfg": "x.sumocfg"}, "layers": {"probe": {"policies": ["best"]}}}, "s.toml")
    with pytest.raises(ConfigError, match="layers.probe.policies: unknown policy 'best'"):
        make_layers(cfg, ctx)
    assert make_layers(cfg.replace(layers={"probe": {"enabled": False}}), ctx) == []
    assert "probe" in registry.layer_names()
