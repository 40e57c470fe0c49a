"""tools/dvit_figures.py --modes: migrate - fail task by task, paired per seed, Holm over the policies.

Two seeds, two policies, hand-made task tables; every expected number is worked out by hand below.
"""

from __future__ import annotations

import math
import sys

import pandas as pd
import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))

import dvit_figures  # noqa: E402

NAN = math.nan
#: (seed, mode) -> policy -> [(task, latency_s, outcome)]
TASKS = {
    (1, "fail"): {"vidi": [(1, 3.0, "done"), (2, NAN, "failed"), (3, 4.0, "done"), (4, NAN, "censored")],
                  "sdi": [(1, 1.0, "done")]},
    (1, "migrate"): {"vidi": [(1, 3.5, "done"), (2, 5.0, "done"), (3, 4.0, "done"), (4, 6.0, "done")],
                     "sdi": [(1, 1.0, "done")]},
    (2, "fail"): {"vidi": [(1, 2.0, "done"), (2, 2.0, "done")], "sdi": [(1, 1.0, "done")]},
    (2, "migrate"): {"vidi": [(1, 2.75, "done"), (2, NAN, "failed")], "sdi": [(1, 5.0, "done")]},
}


@pytest.fixture
def sweep(tmp_path):
    rows = []
    for (seed, mode), by_policy in TASKS.items():
        cell = f"s{seed}{mode}"
        (tmp_path / "cells" / cell).mkdir(parents=True)
        pd.DataFrame([{"task": t, "policy": p, "latency_s": lat, "outcome": o}
                      for p, tasks in by_policy.items() for t, lat, o in tasks]).to_parquet(
            tmp_path / "cells" / cell / "dvit_tasks.parquet")
        common = {"cell": cell, "scenario": "grid6_dvit", "seed": seed, dvit_figures.PRESET: "calibrated",
                  dvit_figures.MODE: mode}
        rows += [{**common, "layer": "core", "policy": ""}]
        rows += [{**common, "layer": "dvit", "policy": p} for p in by_policy]
    return tmp_path, pd.DataFrame(rows)


def test_migrate_minus_fail_task_by_task(sweep):
    folder, res = sweep
    out = dvit_figures.mode_task_differences(res, folder, [dvit_figures.PRESET]).set_index("policy")
    vidi, sdi = out.loc["vidi"], out.loc["sdi"]
    # vidi, seed 1: tasks both completed are 1 and 3 (2 failed, 4 censored under fail): (0.5 + 0) / 2;
    # seed 2: task 1 only (2 failed mid-task under migrate: no latency): 0.75. Over the seeds: mean 0.5, sd 0.25 * sqrt(2),
    # half-width t95(1) = 12.706 * 0.25; t = 2 with 1 dof: p = 1 - 2 / pi * atan(2)
    assert vidi["n"] == 2 and vidi["latency_diff_s.n"] == 2
    assert vidi["latency_diff_s.diff"] == pytest.approx(0.5)
    assert vidi["latency_diff_s.ci95"] == pytest.approx(12.7062 * 0.25, rel=1e-4)
    p_vidi = 1 - 2 / math.pi * math.atan(2)
    assert vidi["latency_diff_s.p"] == pytest.approx(p_vidi)
    # success over the tasks both were given: seed 1 tasks 1-3 (4 censored): (0 + 1 + 0) / 3;
    # seed 2 tasks 1-2: (0 - 1) / 2. Mean (1/3 - 1/2) / 2 = -1/12
    assert vidi["success_diff.diff"] == pytest.approx(-1 / 12)
    # sdi: latency differences 0 and 4: mean 2, t = 1: p = 1/2; success 0 in both seeds
    assert sdi["latency_diff_s.diff"] == pytest.approx(2.0)
    assert sdi["latency_diff_s.p"] == pytest.approx(0.5)
    assert sdi["success_diff.diff"] == 0 and sdi["success_diff.p"] == 1.0
    # Holm over the family of both policies (not each alone): the smaller p (vidi's) times 2, the
    # larger max(that, 1 * 0.5)
    assert vidi["latency_diff_s.p_holm"] == pytest.approx(2 * p_vidi)
    assert sdi["latency_diff_s.p_holm"] == pytest.approx(2 * p_vidi)


def test_a_seed_without_both_modes_is_left_out(sweep):
    folder, res = sweep
    res = res[~((res.seed == 2) & (res[dvit_figures.MODE] == "migrate"))]
    out = dvit_figures.mode_task_differences(res, folder, [dvit_figures.PRESET]).set_index("policy")
    assert out.loc["vidi", "n"] == 1 and out.loc["vidi", "latency_diff_s.diff"] == pytest.approx(0.25)
    assert math.isnan(out.loc["vidi", "latency_diff_s.ci95"])


def test_no_seed_with_both_modes_says_so_in_one_line(sweep, capsys):
    folder, res = sweep
    res = res[res[dvit_figures.MODE] == "fail"]
    out = dvit_figures.mode_task_differences(res, folder, [dvit_figures.PRESET])
    assert out.empty
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no seed ran both handover modes" in err
