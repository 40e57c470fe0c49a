"""The DViT layer on real SUMO traffic (grid6)."""

import json

import pandas as pd
import pytest

from ..conftest import run_grid6

pytestmark = pytest.mark.sumo


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvit")
    return {backend: run_grid6(root, "[layers.dvit]\nrequest_rate_per_s = 2.0\n", "--backend", backend, out=backend)
            for backend in ("libsumo", "traci")}


def test_tasks_table_and_summary(runs):
    df = pd.read_parquet(runs["libsumo"] / "dvit_tasks.parquet")
    for col in ("task", "policy", "t_request_s", "user", "rsu", "steps", "devices", "step_comm_s", "step_comp_s",
                "step_queue_s", "comm_s", "comp_s", "queue_s", "latency_s", "reschedules", "success", "failure"):
        assert col in df.columns, col
    s = json.loads((runs["libsumo"] / "summary.json").read_text())["layers"]["dvit"]
    assert set(s) == {"vidi", "optimal", "optimal-cl", "mddi", "mbdi", "mcpdi", "vli", "sdi"}
    n_tasks = df["task"].nunique()
    assert n_tasks > 100  # ~2 tasks/s for 90 s
    for policy, block in s.items():
        rows = df[df.policy == policy]
        assert block["tasks"] == len(rows) == n_tasks
        assert block["success_rate"] == pytest.approx(rows["success"].mean())
    done = df[df.success]
    # latency = upload + the recorded steps (eq. 14), for every successful task
    assert (done["latency_s"] >= done["comm_s"] + done["comp_s"] + done["queue_s"] - 1e-9).all()
    assert (done["devices"].map(len) == 50).all()
    assert (done["devices"].map(lambda d: d[-1]) == done["user"]).all()  # the last step on the user
    # per-step terms add up to the task's totals
    for col in ("comm", "comp", "queue"):
        sums = done[f"step_{col}_s"].map(sum)
        assert ((sums - done[f"{col}_s"]).abs() < 1e-9).all()


def test_optimal_never_plans_worse_than_any_feasible_plan(runs):
    df = pd.read_parquet(runs["libsumo"] / "dvit_tasks.parquet")
    opt = df[df.policy == "optimal"].set_index("task")["planned_latency_s"]
    others = df[(df.policy != "optimal") & df.planned_feasible]
    best_other = others.groupby("task")["planned_latency_s"].min()
    joined = best_other.to_frame("other").join(opt.rename("optimal"))
    assert len(joined) > 50
    assert (joined["optimal"] <= joined["other"] + 1e-9).all()
    # optimal-cl is the same solver on the same request: the same plan at the request; it only
    # re-decides later (closed loop), optimal never does
    cl = df[df.policy == "optimal-cl"].set_index("task")
    pd.testing.assert_series_equal(cl["planned_latency_s"].sort_index(), opt.sort_index(), check_names=False)
    assert cl["replans"].sum() > 0 and df[df.policy == "optimal"]["replans"].sum() == 0


def test_libsumo_and_traci_give_identical_task_tables(runs):
    a = pd.read_parquet(runs["libsumo"] / "dvit_tasks.parquet")
    b = pd.read_parquet(runs["traci"] / "dvit_tasks.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_execution_mode_on_real_traffic(tmp_path):
    out = run_grid6(tmp_path, '[output]\ncoverage = false\n'
                    '[layers.dvit]\npolicies = ["optimal", "mddi"]\nrequest_rate_per_s = 1.0\nexecute = true\n'
                    "execute_max_tasks = 1\nimage_hw = 32\npatch = 8\ndim = 32\nlayers = 2\nheads = 4\nmlp_dim = 64\n"
                    "steps = 12\nlocal_steps = 3\n", end_s=40, out="o")
    s = json.loads((out / "summary.json").read_text())["layers"]["dvit"]
    for policy in ("optimal", "mddi"):
        e = s[policy]["execution"]
        assert e["tasks_executed"] == 1
        assert e["max_abs_diff_vs_single_device"] == 0.0
        assert e["local_prompt_left_user"] is False
        assert e["handoff_bytes_eq4"] == 17 * 32 * 4
    assert s["mddi"]["execution"]["handoff_bytes_mean"] > 3 * 32 * 32 * 4  # the latent image, plus framing
