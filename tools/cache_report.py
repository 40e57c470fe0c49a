#!/usr/bin/env python3
"""Markdown tables of a cache sweep (tools/sweeps/cache_*.toml) for docs/cache.md: per grid
point, each policy's mean system cost per request and its paired per-seed difference to LC
(``cosim.sweep.paired_differences``: same traffic and requests, Student-t 95 % interval) for the
system cost and Table II's terms. A grid key over ``layers.cache.options`` (LC's own options)
is also compared LC against LC, paired per seed.

    cosim sweep tools/sweeps/cache_tau.toml && python tools/cache_report.py runs/sweeps/cache-tau
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import cosim  # noqa: E402
from cosim.stats import fmt  # noqa: E402
from cosim.sweep import paired_differences  # noqa: E402

#: (summary key, header, scale, digits)
METRICS = [("system_cost", "system cost", 1, 1), ("switching_cost", "switching", 1, 1),
           ("total_accuracy_cost", "accuracy cost", 1, 2), ("average_accuracy_cost", "avg accuracy cost ×1000", 1000, 2),
           ("edge_execution_ratio", "edge ratio [%]", 100, 1)]
OPTIONS = "layers.cache.options"


def cell(diff: float, ci: float, scale: float, digits: int = 1) -> str:
    return f"{scale * diff:+.{digits}f} ± {scale * ci:.{digits}f}"


def tables(res: pd.DataFrame, grid: list[str]) -> str:
    res = res[res.layer == "cache"]
    paired = paired_differences(res, grid, {"cache": "lc"})
    mean = res.groupby([*grid, "policy"], sort=False, dropna=False)[["system_cost", "requests"]].mean()
    out = []
    for point, g in paired.groupby(grid, sort=False, dropna=False):
        point = point if isinstance(point, tuple) else (point,)
        out.append("**" + ", ".join(f"`{k.split('.')[-1]}` = {v}" for k, v in zip(grid, point)) + "**\n")
        out.append("| policy | system cost | − LC (paired, 95 %) | " + " | ".join(f"{t} − LC" for _, t, _, _ in METRICS[1:])
                   + " |")
        out.append("|---" * (3 + len(METRICS) - 1) + "|")
        lc = mean.loc[(*point, "lc")]
        out.append(f"| lc | {lc.system_cost:.0f} | — |" + " — |" * (len(METRICS) - 1))
        for _, r in g.iterrows():
            m = mean.loc[(*point, r.policy)]
            cells = [cell(r[f"{k}.diff"], r[f"{k}.ci95"], s, d) for k, _, s, d in METRICS]
            out.append(f"| {r.policy} | {m.system_cost:.0f} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


TABLE2 = ["system_cost", "switching_cost", "total_accuracy_cost", "average_accuracy_cost", "inference_latency",
          "offloading_latency", "cloud_cost", "edge_execution_ratio", "evictions", "cold_evictions"]


def table2(res: pd.DataFrame, grid: list[str]) -> str:
    """Table II's columns, mean over the seeds, at the sweep's first grid point."""
    res = res[res.layer == "cache"]
    for k in grid:
        res = res[res[k] == res[k].iloc[0]]
    m = res.groupby("policy", sort=False)[TABLE2].mean()
    head = ", ".join(f"`{k.split('.')[-1]}` = {res[k].iloc[0]}" for k in grid)
    out = [f"Means over {res.seed.nunique()} seeds at {head}:\n", "| | " + " | ".join(m.index) + " |",
           "|---" * (len(m) + 1) + "|"]
    for k in TABLE2:
        fmt = "{:.4f}" if k == "average_accuracy_cost" else "{:.3f}" if k == "edge_execution_ratio" else "{:.1f}"
        out.append(f"| {k} | " + " | ".join(fmt.format(v) for v in m[k]) + " |")
    return "\n".join(out) + "\n"


def lc_options(res: pd.DataFrame, grid: list[str]) -> str:
    """LC with each value of its options against LC with the first, paired per seed."""
    rest = [k for k in grid if k != OPTIONS]
    lc = res[(res.layer == "cache") & (res.policy == "lc")].copy()
    first = lc[OPTIONS].iloc[0]
    lc["policy"] = ["lc" if o == first else f"lc {o}" for o in lc[OPTIONS]]
    p = paired_differences(lc.drop(columns=[OPTIONS]), rest, {"cache": "lc"})
    out = ["| " + " | ".join(k.split(".")[-1] for k in rest) + " | LC variant | "
           + " | ".join(f"{t} − LC" for _, t, _, _ in METRICS) + " | cold evictions − LC |",
           "|---" * (len(rest) + 2 + len(METRICS)) + "|"]
    for _, r in p.iterrows():  # one comparison per point: the Holm-adjusted p is the p
        cells = [fmt(s * r[f"{k}.diff"], s * r[f"{k}.ci95"], r.get(f"{k}.p_holm"), d)
                 for k, _, s, d in METRICS + [("cold_evictions", "", 1, 0)]]
        out.append("| " + " | ".join(str(r[k]) for k in rest) + f" | {r.policy} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def across(res: pd.DataFrame, grid: list[str], base: str = "lc") -> str:
    """System cost and edge ratio, each policy - ``base`` (paired, 95 %, Holm-adjusted p), one row per grid point."""
    res = res[res.layer == "cache"]
    p = paired_differences(res, grid, {"cache": base})
    pols = [q for q in p.policy.unique() if q != "cloud" or base != "lc"]
    out = []
    for metric, scale, digits in (("system_cost", 1, 0), ("edge_execution_ratio", 100, 1)):
        out += [f"{metric} − {base} (paired per seed, 95 %, Holm-adjusted p over the policies against {base}):\n",
                "| " + " | ".join(k.split(".")[-1] for k in grid) + " | " + " | ".join(pols) + " |",
                "|---" * (len(grid) + len(pols)) + "|"]
        for point, g in p.groupby(grid, sort=False, dropna=False):
            point = point if isinstance(point, tuple) else (point,)
            g = g.set_index("policy")
            out.append("| " + " | ".join(str(x) for x in point) + " | " + " | ".join(
                fmt(scale * g.loc[q, f"{metric}.diff"], scale * g.loc[q, f"{metric}.ci95"],
                    g.loc[q, f"{metric}.p_holm"] if f"{metric}.p_holm" in g else None, digits) for q in pols) + " |")
        out.append("")
    return "\n".join(out)


def evicted(d: Path, res: pd.DataFrame, grid: list[str], policies=("lc", "lfu", "lfu-perfect")) -> str:
    """Evictions per run by model family (the part of a model name before '#' or ':'), mean over
    the seeds, at the sweep's first grid point (from each run's cache_requests table)."""
    cells = pd.read_csv(d / "cells.csv")
    for k in [c for c in cells.columns if c.startswith("layers.") and c in res.columns]:
        cells = cells[cells[k].astype(str) == str(res[k].iloc[0])]
    counts: dict = {}
    for cid in cells.cell:
        df = cosim.load(d / "cells" / cid).table("cache_requests", ["policy", "evicted"])
        df = df[df.policy.astype(str).isin(policies) & (df.evicted != "")]
        for pol, names in zip(df.policy.astype(str), df.evicted):
            for name in names.split(","):
                fam = name.split("#")[0].split(":")[0]
                counts[(fam, pol)] = counts.get((fam, pol), 0) + 1
    if not counts:
        return f"No evictions by {', '.join(policies)} at the first grid point.\n"
    t = (pd.Series(counts, dtype=float).unstack(1).reindex(columns=list(policies)).fillna(0) / len(cells))
    out = [f"Evictions per run by model, mean over {len(cells)} seeds:\n", "| evicted | " + " | ".join(policies) + " |",
           "|---" * (len(policies) + 1) + "|"]
    out += [f"| {fam} | " + " | ".join(f"{v:.1f}" for v in row) + " |" for fam, row in t.iterrows()]
    return "\n".join(out) + "\n"


#: Table II's five cost terms (summary keys) and the paper's values (Random, FIFO, LFU, LC)
TERMS = ["switching_cost", "total_accuracy_cost", "inference_latency", "offloading_latency", "cloud_cost"]
PAPER = {"random": [18.72, 0.13, 0.12, 0.04, 6.63], "fifo": [23.28, 0.52, 1.30, 0.35, 2.05],
         "lfu": [0.37, 0.36, 1.32, 0.24, 3.63], "lc": [0.32, 0.44, 1.26, 0.31, 2.52]}


def shares(res: pd.DataFrame, grid: list[str], policies=("lc", "lfu", "fifo", "random")) -> str:
    """Each term's share of the system cost [%] (of the mean terms over the seeds), per grid point,
    next to Table II's (each row's shares of the sum of its five terms)."""
    res = res[res.layer == "cache"]
    out = ["Cost shares [%]: switching / accuracy / inference / offloading / cloud\n",
           "| " + " | ".join(k.split(".")[-1] for k in grid) + " | " + " | ".join(policies) + " |",
           "|---" * (len(grid) + len(policies)) + "|"]

    def fmt(v) -> str:  # noqa: ANN001
        v = [100 * x / sum(v) for x in v]
        return " / ".join(f"{x:.1f}" for x in v)

    out.append("| " + " | ".join(["Table II"] + [""] * (len(grid) - 1)) + " | "
               + " | ".join(fmt(PAPER[q]) if q in PAPER else "" for q in policies) + " |")
    m = res.groupby([*grid, "policy"], sort=False, dropna=False)[TERMS].mean()
    for point in res[grid].drop_duplicates().itertuples(index=False):
        point = tuple(point)
        out.append("| " + " | ".join(str(x) for x in point) + " | "
                   + " | ".join(fmt(list(m.loc[(*point, q)])) if (*point, q) in m.index else "" for q in policies)
                   + " |")
    return "\n".join(out) + "\n"


def recalibrated(res: pd.DataFrame, grid: list[str], policies=("lfu", "lfu-perfect", "lru")) -> str:
    """Sensitivity of the verdicts to the cost weights: at each grid point measured with
    ``costs = ours``, the weights that give LC Table II's LC shares *at that point* (each term's
    Table II share / LC's share there, cloud weight 1), applied to the same runs (the passive
    policies' decisions do not depend on the weights), each policy - LC paired per seed."""
    from cosim.stats import fmt, mean_ci

    res = res[res.layer == "cache"]
    if "layers.cache.costs" in grid:
        res = res[res["layers.cache.costs"] == "ours"]
    rest = [k for k in grid if k != "layers.cache.costs"]
    paper = [x / sum(PAPER["lc"]) for x in PAPER["lc"]]
    out = ["Weights recalibrated on LC's shares at each point (same runs), each policy − LC, paired per seed "
           "(unadjusted p):\n", "| " + " | ".join(k.split(".")[-1] for k in rest) + " | weights | "
           + " | ".join(policies) + " |", "|---" * (len(rest) + 1 + len(policies)) + "|"]
    groups = res.groupby(rest, sort=False, dropna=False) if rest else [((), res)]
    for point, g in groups:
        point = point if isinstance(point, tuple) else (point,)
        lc = g[g.policy == "lc"].set_index("seed")[TERMS]
        share = lc.mean() / lc.mean().sum()
        w = [paper[i] / share.iloc[i] for i in range(5)]
        w = [x / w[4] for x in w]
        cells = []
        for q in policies:
            other = g[g.policy == q].set_index("seed")[TERMS]
            seeds = other.index.intersection(lc.index)
            diff = (other.loc[seeds] * w).sum(axis=1) - (lc.loc[seeds] * w).sum(axis=1)
            ci = mean_ci(diff.to_numpy())
            cells.append(fmt(ci["mean"], ci["ci95"], digits=1) + f" (p {ci['p']:.2g})")
        out.append("| " + " | ".join(str(x) for x in point) + " | " + " / ".join(f"{x:.3g}" for x in w) + " | "
                   + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def verdicts(d: Path, grid: list[str], policies=("lfu",)) -> str:
    """``policy`` - LC per grid point from the sweep's paired.csv: the paired per-seed difference
    ± its 95 % half-width, n, and the Holm-adjusted p (family: every policy against LC on that
    metric at that grid point), for the system cost, the edge ratio and Table II's terms."""
    p = pd.read_csv(d / "paired.csv")
    p = p[(p.layer == "cache") & p.policy.isin(policies)]
    cols = [("system_cost", "system cost", 1, 1), ("edge_execution_ratio", "edge ratio [points]", 100, 1),
            ("switching_cost", "switching", 1, 1), ("total_accuracy_cost", "accuracy", 1, 2),
            ("inference_latency", "inference", 1, 1), ("cloud_cost", "cloud", 1, 1)]
    if "system_cost.p_holm" not in p.columns:
        return "(paired.csv has no .p_holm columns: a sweep from before they existed)\n"
    out = ["Each policy − LC, paired per seed: d ± h (95 %), Holm-adjusted p [n seeds]\n",
           "| " + " | ".join(k.split(".")[-1] for k in grid) + " | policy | " + " | ".join(c[1] for c in cols) + " |",
           "|---" * (len(grid) + 1 + len(cols)) + "|"]
    for _, r in p.iterrows():
        cells = [f"{cell(r[f'{k}.diff'], r[f'{k}.ci95'], sc, dg)}, p = {r[f'{k}.p_holm']:.2g} [{int(r[f'{k}.n'])}]"
                 for k, _, sc, dg in cols]
        out.append("| " + " | ".join(str(r[k]) for k in grid) + f" | {r.policy} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dirs", nargs="+", type=Path, help="folders `cosim sweep` wrote (results.parquet)")
    ap.add_argument("--against", action="append", default=[], metavar="POLICY",
                    help="also tabulate system cost and edge ratio against this policy (repeatable)")
    ap.add_argument("--verdicts", action="append", default=[], metavar="POLICY",
                    help="policies whose difference to LC is listed with its Holm-adjusted p (default: lfu)")
    args = ap.parse_args()
    for d in args.sweep_dirs:
        res = cosim.load(d).results
        grid = [c for c in res.columns if c.startswith("layers.")]
        print(f"## {d.name}\n")
        if OPTIONS in grid:
            print(lc_options(res, grid) + "\n")
            res = res[res[OPTIONS] == res[OPTIONS].iloc[0]]
            grid = [k for k in grid if k != OPTIONS]
        print(table2(res, grid))
        print(shares(res, grid))
        if (d / "paired.csv").exists():
            print(verdicts(d, grid, args.verdicts or ("lfu",)))
        if "layers.cache.costs" in grid:
            print(recalibrated(res, grid))
        print(evicted(d, res, grid))
        print(across(res, grid))
        for base in args.against:
            print(across(res, grid, base))
        print(tables(res, grid))


if __name__ == "__main__":
    main()
