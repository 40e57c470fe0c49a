"""tools/reproduce.py's machinery (tools/repro/core.py): the sweeps it writes are valid sweeps of
every world, and its statistics — claims, side-by-side gaps, what realistic traffic changed —
are the numbers worked out by hand on a small table."""

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from repro import core  # noqa: E402
from repro.core import Claim, Experiment, Metric, Paper, World  # noqa: E402

from cosim import sweep  # noqa: E402


def _paper(**kw):
    return Paper(key="999", title="t", layer="cache", baseline="a", policies=["a", "b"],
                 worlds=[World("paper", "scenarios/paper002.toml", "P"),
                         World("grid6", "scenarios/grid6_cache.toml", "G", reference="paper")],
                 metrics=[Metric("cost", "cost", digits=2, published={"a": 1.0, "b": 2.0})],
                 experiments=[Experiment("e", claims=[Claim("a beats b", "order", "cost", better="a", worse="b")])],
                 **kw)


def _res():
    # cost per (world, seed, policy); by hand below
    rows = []
    data = {("paper", 1): (1.0, 2.0), ("paper", 2): (1.0, 3.0), ("paper", 3): (2.0, 3.0),
            ("grid6", 1): (5.0, 4.0), ("grid6", 2): (6.0, 6.5), ("grid6", 3): (4.0, 3.0)}
    for (w, s), (a, b) in data.items():
        rows += [{"world": w, "scenario": w, "seed": s, "policy": "a", "cost": a},
                 {"world": w, "scenario": w, "seed": s, "policy": "b", "cost": b}]
    return pd.DataFrame(rows)


def test_an_order_claim_is_the_paired_gap():
    p, res = _paper(), _res()
    (pt, st), = core.claim_value(p, p.experiments[0].claims[0], res, "paper", p.experiments[0])
    # b - a per seed: 1, 2, 1 -> mean 4/3, sd 0.57735, t(2) = 4.302653: h = 4.302653 * 0.57735 / sqrt(3) = 1.43422
    assert pt == {} and st["mean"] == pytest.approx(4 / 3) and st["ci95"] == pytest.approx(1.43422, abs=1e-5)
    # t = (4/3) / (0.57735 / sqrt 3) = 4.0 with 2 dof: p = 1 - 4 / sqrt(4 * 4 + 2) ... = 0.0572
    assert st["p"] == pytest.approx(0.05719, abs=1e-4)
    assert core.judge(st, None) == "not resolved"
    (_, g), = core.claim_value(p, p.experiments[0].claims[0], res, "grid6", p.experiments[0])
    assert g["mean"] == pytest.approx((-1.0 + 0.5 - 1.0) / 3)  # b - a: -1, +0.5, -1
    assert core.judge({"mean": -0.5, "ci95": 0.1, "n": 10, "p": 0.001}, 0.004) == "reversed"
    assert core.judge({"mean": 0.5, "ci95": 0.1, "n": 10, "p": 0.001}, 0.004) == "holds"
    assert core.judge({"mean": 0.0, "ci95": 0.0, "n": 10, "p": 1.0}, 1.0) == "tie (identical)"


def test_what_realistic_traffic_changed_pairs_by_seed_number():
    p, res = _paper(), _res()
    table = core.comparison_table(p, p.experiments[0], res, {}, p.metrics[0])
    lines = table.splitlines()
    assert lines[0].startswith("| policy | paper | P | G | G − P: level; gap to a; rank")
    b = lines[3].split(" | ")
    # level of b, grid6 - paper per seed: 2, 3.5, 0 -> mean 1.8333, sd 1.7559, h = 4.303 * 1.7559 / sqrt 3 = 4.3620
    # gap b - a: grid6 (-1, 0.5, -1) - paper (1, 2, 1) = (-2, -1.5, -2) -> mean -1.8333, sd 0.2887, h = 0.7171
    # rank of b (1 = lowest cost): grid6 (1, 2, 1) - paper (2, 2, 2) = (-1, 0, -1) -> -0.67 +- 1.43
    assert b[-1] == "+1.83 ± 4.36; -1.83 ± 0.72; -0.7 ± 1.4 |"
    # paper world: b's mean 2.67, mean rank 2.0, gap +1.33 +- 1.43 (p 0.057; Holm over one comparison)
    assert b[2] == "2.67 (rank 2.0); +1.33 ± 1.43 (p_holm 0.057)"
    assert core.orderings(p, res, {}, p.metrics[0]) == ["paper: a < b", "P: a < b", "G: b < a"]


def test_a_trend_is_last_point_minus_first():
    res = pd.concat([_res().assign(k=1), _res().assign(k=2, cost=lambda d: d.cost * 2)])
    p = _paper()
    exp = Experiment("e", grid={"k": [1, 2]})
    c = Claim("a's cost rises with k", "trend", "cost", policy="a", axis="k", direction=+1)
    (pt, st), = core.claim_value(p, c, res, "paper", exp)
    assert pt == {"k": "1 -> 2"} and st["mean"] == pytest.approx((1 + 1 + 2) / 3)  # 2a - a
    gap = Claim("b's lead over a grows", "trend", "cost", policy="b", better="a", axis="k", direction=+1)
    (_, st), = core.claim_value(p, gap, res, "paper", exp)
    assert st["mean"] == pytest.approx(4 / 3)  # (b - a) doubles: 2(b - a) - (b - a) = b - a


def test_the_sweeps_it_writes_are_valid_for_every_world(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    from repro import paper000, paper002

    for paper in (paper002.PAPER, paper000.PAPER):
        for exp in paper.experiments:
            sw = sweep.load(core.sweep_file(paper, exp, tmp_path / paper.key, 10, 300.0))
            sweep.check_cells(sw)  # every cell's configuration validated as a scenario
            assert [s.name for s in sw.scenarios] == [Path(w.scenario).name for w in paper.worlds]
            assert sw.seeds == list(range(1, 11)) and sw.baseline == {paper.layer: paper.baseline}
            assert not set(sw.fixed) & set(sw.grid)
    # every world runs grid6_cache.toml's cache layer; what differs between them is listed
    keys = core.differing_keys(paper002.PAPER, paper002.PAPER.experiments[0])
    assert "`traffic.source` | paper002 | paper002 | sumo | sumo" in keys
    assert "`traffic.vehicles` | 72 | 6 | (unused: SUMO's demand) | (unused: SUMO's demand)" in keys
    assert "layers.cache" not in keys


def test_toml_values_and_the_docs_block(tmp_path, monkeypatch):
    assert core.toml_value({"a": [1, 2.5, "x"], "b": True}) == '{"a" = [1, 2.5, "x"], "b" = true}'
    doc = tmp_path / "d.md"
    doc.write_text("intro\n")
    monkeypatch.setattr(core, "ROOT", tmp_path)
    p = _paper(doc="d.md")
    core.write_doc(p, "first")
    core.write_doc(p, "second")
    text = doc.read_text()
    assert text.count(core.begin_marker("999")) == 1 and "second" in text and "first" not in text
    assert text.startswith("intro\n")
    assert math.isfinite(core.stat([1.0, 2.0])["ci95"])


def test_a_relative_claim_is_in_the_experiment_s_holm_family():
    """Two claims on one world: 'a beats b' (order) and 'b costs +80 % of a' (relative). Both have
    raw p < 0.05; Holm over the two makes both not resolved (the relative one was judged on its raw
    p, contrary to the docs)."""
    p = _paper()
    p.experiments[0].claims.append(Claim("b costs 80 % more", "relative", "cost", policy="b", better="a", value=0.8))
    rows = []
    for s, (a, b) in {1: (1.0, 2.0), 2: (1.0, 2.8), 3: (2.0, 4.0)}.items():
        rows += [{"world": "paper", "scenario": "paper", "seed": s, "policy": "a", "cost": a},
                 {"world": "paper", "scenario": "paper", "seed": s, "policy": "b", "cost": b}]
    table = core.claims_table(p, p.experiments[0], pd.DataFrame(rows))

    def p2(d):  # the paired t-test with 2 dof, closed form
        m = sum(d) / 3
        t = m / (math.sqrt(sum((x - m) ** 2 for x in d) / 2) / math.sqrt(3))
        return 1 - t / math.sqrt(2 + t * t)

    p_order, p_rel = p2([1.0, 1.8, 2.0]), p2([1.0, 1.8, 1.0])  # b - a; (b - a) / a
    assert p_order < p_rel < 0.05 and 2 * p_order > 0.05  # Holm: 2 x the smaller, running max
    lines = table.splitlines()
    assert f"**not resolved**: +1.60 ± 1.31 (p_holm {2 * p_order:.2g})" in lines[2]
    assert f"**not resolved**: +126.7 % ± 114.7 (p_holm {2 * p_order:.2g}) (paper +80.0 %)" in lines[3]


#: per seed: a's and b's task latencies (NaN: failed before the end) of tasks 1-3 in one run. a
#: fails its hard task 3, which b completes slowly: by the per-policy means a is faster (by +1.0,
#: +1.0, +1.13 s), on the tasks both completed b is (b - a: -0.5, -1.0, -0.3 s)
_TASKS = {1: ([2.0, 2.0, None], [1.5, 1.5, 6.0]), 2: ([3.0, 3.0, None], [2.0, 2.0, 8.0]),
          3: ([1.0, 1.0, None], [0.8, 0.6, 5.0])}


def _task_sweep(tmp_path, scale_at_k2=2.0):
    """A sweep folder by hand: one run (cell) per seed and grid point k = 1, 2 (k = 2: every
    latency x ``scale_at_k2``), its dvit_tasks.parquet, and results rows with each policy's mean
    latency over its own completed tasks; a pseudo-policy ``best`` copying b (best_of column)."""
    rows = []
    for k, scale in ((1, 1.0), (2, scale_at_k2)):
        for seed, (la, lb) in _TASKS.items():
            cell = f"k{k}s{seed}"
            recs = []
            for pol, lat in (("a", la), ("b", lb)):
                for task, x in enumerate(lat, start=1):
                    recs.append((task, pol, math.nan if x is None else x * scale, "failed" if x is None else "done"))
            d = tmp_path / "cells" / cell
            d.mkdir(parents=True)
            pd.DataFrame(recs, columns=["task", "policy", "latency_s", "outcome"]).to_parquet(d / "dvit_tasks.parquet")
            for pol, lat in (("a", la), ("b", lb), ("best", lb)):
                done = [x * scale for x in lat if x is not None]
                rows.append({"world": "w", "scenario": "w", "seed": seed, "k": k, "cell": cell, "policy": pol,
                             "mean_latency_s": sum(done) / len(done),
                             "best_of.mean_latency_s": "b" if pol == "best" else None})
    res = pd.DataFrame(rows)
    res.attrs["dir"] = str(tmp_path)
    return res


def _paired_paper():
    return Paper(key="998", title="t", layer="dvit", baseline="a", policies=["a", "b"],
                 worlds=[World("w", "scenarios/paper000.toml", "W")],
                 metrics=[Metric("mean_latency_s", "latency", paired=True)], experiments=[])


def test_latency_claims_are_judged_on_task_level_pairs_not_means(tmp_path):
    """Where the per-policy means and the paired difference disagree in sign, the claim follows the
    pairs: "a beats b" is b - a over the tasks both completed, -0.5, -1.0, -0.3 -> mean -0.6 (the
    means would say +1.04); sd 0.3606, h = 4.303 * 0.3606 / sqrt 3 = 0.8957."""
    res, p = _task_sweep(tmp_path), _paired_paper()
    exp = Experiment("e", grid={"k": [1, 2]})
    means = res[res["k"] == 1].pivot_table(index="seed", columns="policy", values="mean_latency_s")
    assert ((means["b"] - means["a"]) > 0).all()  # by the means a is faster in every seed
    order = Claim("a beats b", "order", "mean_latency_s", better="a", worse="b", at={"k": 1})
    (_, st), = core.claim_value(p, order, res, "w", exp)
    assert st["mean"] == pytest.approx(-0.6) and st["ci95"] == pytest.approx(0.8957, abs=1e-4)
    # the same through the pseudo-policy that copies b (paper 001's best benchmark)
    (_, st2), = core.claim_value(p, Claim("a beats best", "order", "mean_latency_s", better="a", worse="best",
                                          at={"k": 1}), res, "w", exp)
    assert st2["mean"] == pytest.approx(-0.6)
    # relative: (b - a) / a over the common tasks: -0.5 / 2, -1 / 3, -0.3 / 1
    rel = Claim("b 10 % faster", "relative", "mean_latency_s", policy="b", better="a", value=-0.1, at={"k": 1})
    (_, st3), = core.claim_value(p, rel, res, "w", exp)
    assert st3["mean"] == pytest.approx((-0.25 - 1 / 3 - 0.3) / 3)
    # a gap trend: b - a at k = 2 (every latency doubled) minus at k = 1 = the gap itself, -0.6
    trend = Claim("a's lead grows with k", "trend", "mean_latency_s", policy="b", better="a", axis="k", direction=+1)
    (pt, st4), = core.claim_value(p, trend, res, "w", exp)
    assert pt == {"k": "1 -> 2"} and st4["mean"] == pytest.approx(-0.6)
    # without paired, the same claim reads the means (what it used to): +1.0, +1.0, +1.133
    unpaired = _paired_paper()
    unpaired.metrics = [Metric("mean_latency_s", "latency")]
    (_, st5), = core.claim_value(unpaired, order, res, "w", exp)
    assert st5["mean"] == pytest.approx((1.0 + 1.0 + (6.4 / 3 - 1.0)) / 3)


def test_table2_bold_entries_are_claims_that_table2_itself_satisfies():
    """Paper 002: Table II's bold entries among FIFO, LFU and LC — total accuracy cost (LFU 0.36),
    inference latency (LC 1.26), offloading latency (LFU 0.24), cloud cost (FIFO 2.05) — are
    claims, each holding on Table II's own per-request numbers (totals / its requests, total / average
    accuracy cost / edge ratio: LC 89.07, LFU 87.80, FIFO 86.54); the total accuracy cost per request
    is derived as total / requests."""
    from repro import paper002 as p2

    bold = {"total_accuracy_cost_per_request": "lfu", "inference_latency_per_request": "lc",
            "offloading_latency_per_request": "lfu", "cloud_cost_per_request": "fifo"}
    metrics = {m.column: m for m in p2.METRICS}
    for col, best in bold.items():
        claims = [c for c in p2.CLAIMS if c.metric == col and c.kind == "order"]
        assert {c.better for c in claims} == {best}
        assert {c.worse for c in claims} == {"fifo", "lfu", "lc"} - {best}
        pub = metrics[col].published
        for c in claims:
            assert pub[c.better] < pub[c.worse], c.text
    acc = metrics["total_accuracy_cost_per_request"].published
    assert acc["lfu"] == pytest.approx(0.36 / (0.36 / 0.0083 / 0.494))
    assert acc["lc"] == pytest.approx(0.44 / (0.44 / 0.0076 / 0.650))
    res = p2.derive(pd.DataFrame({"total_accuracy_cost": [8.6], "requests": [4300], **{
        k: [1.0] for k in ("system_cost", "switching_cost", "inference_latency", "offloading_latency", "cloud_cost")}}))
    assert res["total_accuracy_cost_per_request"].iloc[0] == pytest.approx(8.6 / 4300)
