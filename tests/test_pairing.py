"""Task-level pairing (cosim.pairing): worked by hand on a table built by hand, and on a real run
against an independent pandas computation from its task tables."""

import json
import math
import re

import pandas as pd
import pytest

from cosim import pairing
from cosim.config import sumo_time

from .conftest import GRID6_CFG, run_cli, run_grid6


def table(rows):
    return pd.DataFrame(rows, columns=["task", "policy", "latency_s", "outcome"])


def test_vs_baseline_by_hand():
    nan = math.nan
    df = table([
        # task: base (latency, outcome) | fast (latency, outcome)
        (1, "base", 2.0, "done"), (1, "fast", 1.5, "done"),        # both completed: -0.5
        (2, "base", 3.0, "done"), (2, "fast", nan, "failed"),      # fast failed: not common
        (3, "base", 4.0, "failed"), (3, "fast", 5.0, "failed"),    # both completed (late, C3): +1.0
        (4, "base", nan, "censored"), (4, "fast", 1.0, "done"),    # base censored: not given
        (5, "base", 1.0, "done"), (5, "fast", 0.7, "done"),        # -0.3
        (6, "fast", 0.2, "done"),                                  # base never saw it: not given
    ])
    out = pairing.vs_baseline(df, ["base", "fast"])
    f = out["fast"]
    assert f["baseline"] == "base" and f["common_tasks"] == 3
    assert f["latency_diff_s"] == pytest.approx((-0.5 + 1.0 - 0.3) / 3)
    # given and neither censored: tasks 1, 2, 3, 5. base: 3 successes of 4; fast: 2 of 4
    assert f["given_tasks"] == 4 and f["success_diff"] == pytest.approx(2 / 4 - 3 / 4)
    b = out["base"]
    assert b["common_tasks"] == 4 and b["latency_diff_s"] == 0.0 and b["success_diff"] == 0.0
    # a policy without a common task has no latency difference, not 0
    none = pairing.vs_baseline(table([(1, "base", 1.0, "done"), (1, "x", nan, "failed")]), ["base", "x"])
    assert none["x"]["common_tasks"] == 0 and none["x"]["latency_diff_s"] is None
    assert none["x"]["success_diff"] == -1.0
    with pytest.raises(ValueError, match="task 1 has two rows for policy 'base'"):
        pairing.vs_baseline(table([(1, "base", 1.0, "done"), (1, "base", 2.0, "done")]), ["base"])


def test_latency_pairs_of_any_two_policies_by_hand():
    """Neither policy the table's first: the latencies over the tasks both completed, in task order;
    their mean difference is vs_baseline's with the second as the baseline."""
    nan = math.nan
    df = table([
        (1, "first", 9.0, "done"),
        (1, "a", 2.0, "done"), (1, "b", 1.0, "done"),       # common
        (2, "a", 9.0, "done"), (2, "b", nan, "failed"),     # b failed: not common
        (4, "b", 3.0, "done"), (4, "a", 5.0, "failed"),     # common (a completed late), rows in any order
        (3, "a", 1.0, "done"),                              # b never saw it
    ])
    la, lb = pairing.latency_pairs(df, "a", "b")
    assert la.tolist() == [2.0, 5.0] and lb.tolist() == [1.0, 3.0]
    assert pairing.vs_baseline(df, ["b", "a"])["a"]["latency_diff_s"] == pytest.approx((1.0 + 2.0) / 2)
    assert [x.tolist() for x in pairing.latency_pairs(df, "a", "nobody")] == [[], []]


def test_sumo_time_formats():
    assert sumo_time("600") == 600.0 and sumo_time("1e3") == 1000.0
    assert sumo_time("0:01:00") == 60.0 and sumo_time("1:00") == 60.0 and sumo_time("1:0:0:1.5") == 86401.5
    with pytest.raises(ValueError):
        sumo_time("0:0:0:0:1")


@pytest.mark.sumo
def test_a_run_pairs_policies_task_by_task_and_censors_at_the_end(tmp_path):
    """The summary's vs_baseline equals a pandas merge of the task table done independently; no
    task is requested outside [begin + warmup, end - drain); tasks running at the end are censored."""
    layers = ('[layers.dvit]\npolicies = ["vidi", "mddi", "sdi"]\nrequest_rate_per_s = 1.0\n'
              '[layers.moe]\npolicies = ["gecpa", "uniform"]\nrequest_rate_per_s = 0.3\n')
    out = run_grid6(tmp_path, layers, "--set", "scenario.warmup_s=15", "--set", "scenario.drain_s=5", end_s=80)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["request_window_s"] == {"dvit": [15.0, 75.0], "moe": [15.0, 75.0]}
    for layer, base in (("dvit", "vidi"), ("moe", "gecpa")):
        df = pd.read_parquet(out / f"{layer}_tasks.parquet")
        assert df["t_request_s"].min() >= 15.0 and df["t_request_s"].max() < 75.0
        assert set(df["outcome"]) <= {"done", "failed", "censored"}
        assert (df["success"] == (df["outcome"] == "done")).all()
        b = df[df.policy == base].set_index("task")
        for policy, block in summary["layers"][layer].items():
            p = df[df.policy == policy].set_index("task")
            m = p.merge(b, left_index=True, right_index=True, suffixes=("_p", "_b"))
            done = m.dropna(subset=["latency_s_p", "latency_s_b"])
            given = m[(m.outcome_p != "censored") & (m.outcome_b != "censored")]
            vs = block["vs_baseline"]
            assert vs["common_tasks"] == len(done) and vs["given_tasks"] == len(given)
            assert vs["latency_diff_s"] == pytest.approx((done.latency_s_p - done.latency_s_b).mean())
            assert vs["success_diff"] == pytest.approx((given.outcome_p == "done").mean()
                                                       - (given.outcome_b == "done").mean())
            assert block["censored"] == int((p.outcome == "censored").sum())
            ended = p[p.outcome != "censored"]
            assert block["success_rate"] == pytest.approx((ended.outcome == "done").mean())


@pytest.mark.sumo
def test_auto_window_is_a_tenth_of_a_short_run_and_a_sumocfg_end_in_hms_counts(tmp_path):
    cfg = tmp_path / "g.sumocfg"
    text = GRID6_CFG.read_text()
    text = re.sub(r'<end value="[^"]*"/>', '<end value="0:00:50"/>', text)
    text = text.replace('value="grid6', f'value="{GRID6_CFG.parent}/grid6')
    cfg.write_text(text)
    toml = tmp_path / "s.toml"
    toml.write_text(f'[scenario]\nsumocfg = "{cfg}"\nstep_length_s = 0.5\n[layers.dvit]\npolicies = ["vidi"]\n')
    proc = run_cli("run", str(toml), "--out", str(tmp_path / "o"), "-q")
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["slots"] == 50  # the sumocfg's end, 0:00:50
    assert s["request_window_s"] == {"dvit": [5.0, 45.0]}  # auto: a tenth of 50 s each side


def test_within_run_intervals_by_hand():
    df = table([(1, "b", 1.0, "done"), (1, "p", 1.5, "done"), (2, "b", 2.0, "done"), (2, "p", 2.1, "failed"),
                (3, "b", 3.0, "done"), (3, "p", 3.7, "done")])
    v = pairing.vs_baseline(df, ["b", "p"])["p"]
    d = [0.5, 0.1, 0.7]
    mean = sum(d) / 3
    sd = (sum((x - mean) ** 2 for x in d) / 2) ** 0.5
    assert v["latency_diff_ci95_s"] == pytest.approx(4.302653 * sd / 3 ** 0.5)
    s = [0.0, -1.0, 0.0]  # success differences per task
    ms = -1 / 3
    ss = (sum((x - ms) ** 2 for x in s) / 2) ** 0.5
    assert v["success_diff"] == pytest.approx(ms) and v["success_diff_ci95"] == pytest.approx(4.302653 * ss / 3 ** 0.5)
