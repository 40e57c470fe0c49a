"""tools/repro/paper001.py: "the best-performing benchmark" and the task mechanism, on tables
worked out by hand (no runs)."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from repro import paper001 as p1  # noqa: E402
from repro.core import claim_value  # noqa: E402


def _res() -> pd.DataFrame:
    # one world, two seeds; IV utility: gradient best (mean 2.0) among the paper-style benchmarks,
    # latency: nearest best (lowest mean 0.5), success: evolutionary best (0.95); best-response
    # (ours) is better than all of them on every metric and must not be picked
    rows = []
    vals = {  # policy: (iv utility, latency, success) per seed
        "gecpa": [(3.0, 0.40, 0.99), (5.0, 0.60, 0.97)],
        "best-response": [(9.0, 0.10, 1.00), (9.0, 0.10, 1.00)],
        "gradient": [(1.5, 0.70, 0.90), (2.5, 0.90, 0.80)],
        "evolutionary": [(1.0, 0.80, 0.96), (1.0, 0.80, 0.94)],
        "random": [(0.5, 0.90, 0.50), (0.5, 0.90, 0.50)],
        "uniform": [(0.5, 0.90, 0.50), (0.5, 0.90, 0.50)],
        "nearest": [(1.0, 0.40, 0.90), (1.0, 0.60, 0.90)],
    }
    for pol, per in vals.items():
        for seed, (u, lat, s) in zip((1, 2), per):
            rows.append({"world": "paper", "scenario": "paper", "seed": seed, "cell": f"s{seed}", "policy": pol,
                         "layer": "moe",
                         "mean_iv_utility": u, "mean_latency_s": lat, "success_rate": s,
                         "mean_tv_utility": 1.0, "mean_nash_gap": 0.1})
    return pd.DataFrame(rows)


def test_the_best_benchmark_is_picked_per_metric_among_the_paper_style_ones():
    res = p1.derive(_res())
    best = res[res["policy"] == p1.BEST].set_index("seed")
    assert list(best["best_of.mean_iv_utility"].unique()) == ["gradient"]
    assert list(best["best_of.mean_latency_s"].unique()) == ["nearest"]
    assert list(best["best_of.success_rate"].unique()) == ["evolutionary"]
    assert best.loc[1, "mean_iv_utility"] == 1.5 and best.loc[2, "mean_iv_utility"] == 2.5
    assert best.loc[1, "mean_latency_s"] == 0.40 and best.loc[2, "mean_latency_s"] == 0.60
    assert best.loc[1, "success_rate"] == 0.96 and best.loc[2, "success_rate"] == 0.94
    assert len(res) == len(_res()) + 2  # one pseudo row per seed, the others untouched


#: each seed's moe_tasks rows of gecpa and nearest (NaN: failed), with _res's means: gecpa 0.4 and
#: 0.6, nearest 0.4 and 0.6 over their own completed tasks
TASKS = {1: {"gecpa": [0.2, 0.5, 0.5], "nearest": [0.3, 0.5, None]},
         2: {"gecpa": [0.6, 0.6, 0.6], "nearest": [0.5, 0.7, None]}}


def _with_tasks(tmp_path) -> pd.DataFrame:
    res = p1.derive(_res())
    for seed, pols in TASKS.items():
        recs = [(t, pol, np.nan if x is None else x, "failed" if x is None else "done")
                for pol, lat in pols.items() for t, x in enumerate(lat, start=1)]
        d = tmp_path / "cells" / f"s{seed}"
        d.mkdir(parents=True)
        pd.DataFrame(recs, columns=["task", "policy", "latency_s", "outcome"]).to_parquet(d / "moe_tasks.parquet")
    res.attrs["dir"] = str(tmp_path)
    return res


def test_the_abstracts_figures_are_computed_as_read(tmp_path):
    res = _with_tasks(tmp_path)
    exp = p1.PAPER.experiments[0]
    (_, ratio), = claim_value(p1.PAPER, exp.claims[0], res, "paper", exp)
    # IV utility: per seed (gecpa - best) / best = (3 - 1.5) / 1.5 = 1.0, (5 - 2.5) / 2.5 = 1.0
    assert ratio["mean"] == pytest.approx(1.0) and ratio["n"] == 2
    (_, lat), = claim_value(p1.PAPER, exp.claims[1], res, "paper", exp)
    # latency against the best benchmark (nearest), task by task over the tasks both completed
    # (1 and 2): seed 1 (-0.1 + 0.0) / 2 / 0.4 = -0.125, seed 2 (0.1 - 0.1) / 2 / 0.6 = 0 — the
    # per-policy means (0.4 vs 0.4, 0.6 vs 0.6) would say 0
    assert lat["mean"] == pytest.approx(-0.0625)
    (_, diff), = claim_value(p1.PAPER, exp.claims[4], res, "paper", exp)
    assert diff["mean"] == pytest.approx((0.05 + 0.0) / 2)  # best - gecpa over the common tasks
    (_, pts), = claim_value(p1.PAPER, exp.claims[5], res, "paper", exp)
    # success in points, the claimed direction positive: 0.99 - 0.96 = 0.03, 0.97 - 0.94 = 0.03
    assert pts["mean"] == pytest.approx(0.03)


def test_the_task_mechanism_from_task_tables(tmp_path):
    cells = tmp_path / "cells"
    (cells / "c1").mkdir(parents=True)
    pd.DataFrame({
        "policy": ["gecpa", "gecpa", "nearest"],
        "ivs": [["a", "b"], ["a", "b", "c", "d"], ["a"]],
        "layer_comm_s": [[0.01, 0.03], [0.02, 0.02], [0.1]],
        "layer_comp_s": [[0.05, 0.05], [0.01, 0.03], [0.2]],
        "reroutes": [0, 2, 1],
        "failure": ["", "deadline", "iv-left-range"],
    }).to_parquet(cells / "c1" / "moe_tasks.parquet")
    res = pd.DataFrame({"world": ["paper"], "seed": [1], "cell": ["c1"], "policy": ["gecpa"]})
    m = p1.task_mechanism(cells, res).set_index("policy")
    g = m.loc["gecpa"]
    assert g["tasks"] == 2 and g["n_ivs"] == 3.0  # (2 + 4) / 2
    assert g["comm_ms"] == pytest.approx(20.0)  # median of the task means 0.02, 0.02
    assert g["comp_ms"] == pytest.approx(35.0)  # median of 0.05 and 0.02
    assert g["reroutes"] == 1.0 and g["deadline"] == 0.5 and g["iv-left-range"] == 0.0
    assert m.loc["nearest", "iv-left-range"] == 1.0 and np.isclose(m.loc["nearest", "comm_ms"], 100.0)
