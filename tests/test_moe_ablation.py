"""tools/moe_ablation.py: a comparison across a grid key (``--across``) is one family over the
policies, Holm-adjusted per metric — worked out by hand on a small table."""

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import moe_ablation  # noqa: E402


def _p2(d):  # the paired t-test with 2 dof, closed form: 1 - t / sqrt(2 + t^2)
    m = sum(d) / 3
    t = m / (math.sqrt(sum((x - m) ** 2 for x in d) / 2) / math.sqrt(3))
    return 1 - t / math.sqrt(2 + t * t)


def test_across_adjusts_over_the_policies_not_each_policy_alone():
    # success on - off per seed: gecpa (1, 2, 1) x 0.01, gradient (1, 1.8, 2) x 0.01, uniform (1, 3, 5) x 0.01
    on_minus_off = {"gecpa": [1.0, 2.0, 1.0], "gradient": [1.0, 1.8, 2.0], "uniform": [1.0, 3.0, 5.0]}
    rows = []
    for policy, d in on_minus_off.items():
        for seed, x in enumerate(d, start=1):
            for on in (False, True):
                rows.append({"scenario": "g", "seed": seed, "layer": "moe", "policy": policy,
                             "layers.moe.physical_gating": on, "layers.moe.reroute": "move",
                             "success_rate": 0.5 + (0.01 * x if on else 0.0), "mean_latency_s": 1.0,
                             "mean_iv_utility": 1.0, "mean_tv_utility": 1.0, "mean_nash_gap": 1.0})
    out = moe_ablation.across(pd.DataFrame(rows), "layers.moe.physical_gating", False, True,
                              {"layers.moe.reroute": "move"}, list(on_minus_off)).set_index("policy")
    raw = {p: _p2(d) for p, d in on_minus_off.items()}
    assert out["success_rate.p"].to_dict() == pytest.approx(raw)
    # Holm by hand: sorted gradient 0.0347 (x3), gecpa 0.0572 (x2), uniform 0.106 (x1), running maximum
    order = sorted(raw, key=raw.get)
    assert order == ["gradient", "gecpa", "uniform"]
    want, run = {}, 0.0
    for k, p in enumerate(order):
        run = max(run, min(1.0, (3 - k) * raw[p]))
        want[p] = run
    assert out["success_rate.p_holm"].to_dict() == pytest.approx(want)
    assert out.loc["gradient", "success_rate.p_holm"] > 0.05 > raw["gradient"]  # raw p alone looked established
