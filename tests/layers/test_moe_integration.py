"""The MoE layer on real SUMO traffic (grid6)."""

import json

import numpy as np
import pandas as pd
import pytest

from ..conftest import run_grid6

pytestmark = pytest.mark.sumo

POLICIES = ["gecpa", "best-response", "gradient", "evolutionary", "random", "uniform", "nearest"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_grid6(tmp_path_factory.mktemp("moe"), "[output]\ncoverage = false\n[layers.moe]\nrequest_rate_per_s = 1.0\n")


def test_tasks_table_and_summary(run):
    df = pd.read_parquet(run / "moe_tasks.parquet")
    for col in ("task", "policy", "t_request_s", "tv", "ivs", "layer_ivs", "tokens_per_expert", "prices",
                "compute_tflops", "layer_comm_s", "layer_comp_s", "layer_mem_s", "latency_s", "iv_utility",
                "tv_utility", "nash_gap", "success", "failure", "reroutes", "layer_move_s", "moved_experts", "solver_evals", "eq_distance"):
        assert col in df.columns, col
    s = json.loads((run / "summary.json").read_text())["layers"]["moe"]
    assert list(s) == POLICIES
    n = df["task"].nunique()
    assert n > 50
    for policy, block in s.items():
        rows = df[df.policy == policy]
        assert block["tasks"] == len(rows) == n
        assert block["success_rate"] == pytest.approx(rows["success"].mean())
        done = rows[rows.success]
        assert (done["latency_s"] <= 1.0 + 1e-9).all()  # the deadline
        # every layer ran, and the latency is the sum of its layers' terms
        assert (done["layer_comm_s"].map(len) == 8).all()
        total = (done["layer_comm_s"].map(sum) + done["layer_comp_s"].map(sum) + done["layer_mem_s"].map(sum)
                 + done["layer_tv_s"].map(sum) + done["layer_move_s"].map(sum))
        np.testing.assert_allclose(done["latency_s"], total, rtol=1e-9)
        # eq_distance: NaN where the game has no interior equilibrium; the block's mean over the rest
        eq = rows["eq_distance"].dropna()
        assert block["eq_tasks"] == len(eq) > 0
        assert block["mean_eq_distance"] == pytest.approx(eq.mean())
        # top-2 of 256 tokens in 8 layers: at most 4096 routed (token, expert) pairs
        assert (rows["tokens_per_expert"].map(sum) <= 8 * 256 * 2).all()
    # the same tasks from the same vehicles for every policy
    tv = df.pivot(index="task", columns="policy", values="tv")
    assert (tv.nunique(axis=1) == 1).all()


def test_gecpa_prices_closer_to_equilibrium_than_the_fixed_and_random_ones(run):
    s = json.loads((run / "summary.json").read_text())["layers"]["moe"]
    assert s["gecpa"]["mean_nash_gap"] < s["uniform"]["mean_nash_gap"]
    assert s["gecpa"]["mean_nash_gap"] < s["random"]["mean_nash_gap"]


def test_best_response_prices_at_the_interior_equilibrium(run):
    """Where a task's game has an interior equilibrium, exact best-response iteration ends on it
    (to its stopping tolerance); GECPA, a heuristic, further away."""
    s = json.loads((run / "summary.json").read_text())["layers"]["moe"]
    assert s["best-response"]["mean_eq_distance"] < 1e-6 < s["gecpa"]["mean_eq_distance"]
