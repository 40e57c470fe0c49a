#!/usr/bin/env python3
"""The MoE ablation table from one sweep (tools/sweeps/moe_ablation.toml): what physical gating
buys at equal prices, what moving a lost IV's weights costs against re-gating, and what GECPA
buys over equally-budgeted gradient and evolutionary solvers (and the non-searching baselines).
Every row is a per-seed paired difference with its 95 % interval (Student t over the seeds,
:func:`cosim.sweep.paired_differences`): the same traffic and tasks on both sides of a pair.

    cosim sweep tools/sweeps/moe_ablation.toml
    python tools/moe_ablation.py runs/sweeps/moe-ablation [--markdown]
    python tools/moe_ablation.py docs/figures/moe/moe-ablation       # the tables docs/moe.md quotes

Any other MoE sweep, one grid key against itself (the other keys held at each of their values):

    python tools/moe_ablation.py runs/sweeps/queue-moe --across layers.moe.queue analytic simulated
    python tools/moe_ablation.py runs/sweeps/moe-deadline --within     # GECPA - each policy per grid point

The headline table (tools/sweeps/moe_headline.toml) from the sweep's own paired.csv: GECPA -
each policy, d ± 95 % half-width (p_holm: Holm-adjusted over the six comparisons, per metric
and grid point; any sweep of the layer, e.g. moe-deadline, one row per grid point and policy):

    python tools/moe_ablation.py runs/sweeps/moe-headline --headline [--markdown]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cosim  # noqa: E402
from cosim.sweep import paired_differences  # noqa: E402

METRICS = {"success_rate": "success", "mean_latency_s": "latency [s]", "mean_iv_utility": "IV utility",
           "mean_tv_utility": "TV utility", "mean_nash_gap": "Nash gap"}
GATING, REROUTE = "layers.moe.physical_gating", "layers.moe.reroute"


#: the --across / --within / ablation tables' heading
ACROSS_HEAD = "paired per-seed differences, mean ± 95 % half-width (Student t) (p Holm-adjusted over the policies)"


def _moe(res: pd.DataFrame) -> pd.DataFrame:
    return res[res["layer"] == "moe"]


def across(res: pd.DataFrame, key: str, base, other, fixed: dict, policies: list[str]) -> pd.DataFrame:
    """``other - base`` of grid key ``key`` for each policy, same seed: the grid value plays the
    policy and each policy the layer in :func:`paired_differences`. Each policy is then a family of
    one there; the family here is every policy of this comparison (per metric, at this point of
    the other keys), so ``p_holm`` is Holm over the policies (:func:`cosim.stats.holm`)."""
    from cosim.stats import holm

    sub = _moe(res)
    for k, v in fixed.items():
        sub = sub[sub[k] == v]
    sub = sub[sub[key].isin([base, other]) & sub["policy"].isin(policies)]
    df = sub[["scenario", "seed", "policy", *METRICS]].assign(layer=sub["policy"], policy=sub[key].map(str))
    out = paired_differences(df, [], {p: str(base) for p in policies})
    for m in METRICS:
        if f"{m}.p" in out:
            out[f"{m}.p_holm"] = holm(out[f"{m}.p"].to_list())
    return out.assign(comparison=f"{key.split('.')[-1]}: {other} - {base}", policy=out["layer"])


def within(res: pd.DataFrame, fixed: dict, baseline: str = "gecpa") -> pd.DataFrame:
    """``baseline - policy`` (sign flipped from paired_differences' policy - baseline) per policy."""
    sub = _moe(res)
    for k, v in fixed.items():
        sub = sub[sub[k] == v]
    out = paired_differences(sub[["scenario", "seed", "layer", "policy", *METRICS]], [], {"moe": baseline})
    for m in METRICS:
        out[f"{m}.diff"] = -out[f"{m}.diff"]
    return out.assign(comparison=f"{baseline} - policy")


def _typed(column: pd.Series, text: str):  # noqa: ANN202
    """``text`` as the type of the grid column's values (the command line gives strings)."""
    for v in column.dropna().unique():
        if str(v) == text:
            return v
    raise SystemExit(f"moe_ablation: {text!r} is not a value of {column.name} ({', '.join(map(str, column.unique()))})")


def fmt(df: pd.DataFrame, markdown: bool) -> str:
    """``d ± h (p_holm)`` per metric (:func:`cosim.stats.fmt`); the p of an on/off or move/regate
    row is Holm-adjusted over the policies of its comparison (:func:`across`), a GECPA - policy
    row's over the policies at its grid point (:func:`within`, as paired.csv)."""
    from cosim.stats import fmt as quote

    rows = []
    for _, r in df.iterrows():
        cells = [r["comparison"], r["policy"], str(int(r["n"]))]
        cells += [quote(r[f"{m}.diff"], r[f"{m}.ci95"], r.get(f"{m}.p_holm")) for m in METRICS]
        rows.append(cells)
    head = ["comparison", "policy", "seeds", *METRICS.values()]
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(c) + " |" for c in rows])
    width = [max(len(x) for x in col) for col in zip(head, *rows)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, width)) for line in [head, *rows])


#: the headline's columns: paired.csv metric -> heading (latency_diff_s: task by task, on the
#: tasks both completed — the run's vs_baseline block)
HEADLINE = {"success_rate": "success", "mean_latency_s": "mean latency [s]", "latency_diff_s": "latency, common tasks [s]",
            "mean_iv_utility": "IV utility", "mean_tv_utility": "TV utility", "mean_nash_gap": "Nash gap",
            "mean_eq_distance": "eq distance"}


#: the headline's per-policy table: summary.csv metric -> heading (mean ± 95 % half-width over seeds)
SUMMARY = {"success_rate": "success", "mean_latency_s": "mean latency [s]", "p95_latency_s": "p95 [s]",
           "mean_iv_utility": "IV utility", "mean_tv_utility": "TV utility", "mean_nash_gap": "Nash gap",
           "mean_eq_distance": "eq distance", "eq_tasks": "eq tasks", "mean_solver_evals": "follower evals",
           "mean_solve_ms": "solve [ms]"}


def _table(head: list, rows: list, markdown: bool) -> str:
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(c) + " |" for c in rows])
    width = [max(len(x) for x in col) for col in zip(head, *rows)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, width)) for line in [head, *rows])


def summary(folder: Path, markdown: bool) -> str:
    """Each policy's mean ± 95 % half-width over the seeds (summary.csv)."""
    sm = pd.read_csv(folder / "summary.csv")
    sm = sm[sm["layer"] == "moe"]
    cols = list(sm.columns)
    grid = cols[cols.index("scenario") + 1:cols.index("layer")]
    rows = []
    for _, r in sm.iterrows():
        cells = [*(str(r[k]) for k in grid), str(r["policy"]), str(int(r["n"]))]
        for m in SUMMARY:
            mean, h = r.get(f"{m}.mean"), r.get(f"{m}.ci95")
            if mean is None or pd.isna(mean):
                cells.append("n/a")
            elif m in ("mean_solver_evals", "mean_solve_ms", "eq_tasks"):
                cells.append(f"{mean:.0f}")
            elif m == "mean_eq_distance":
                cells.append(f"{mean:.2g} ± {h:.2g}")
            else:
                cells.append(f"{mean:.3f} ± {h:.3f}")
        rows.append(cells)
    return _table([*(k.split(".")[-1] for k in grid), "policy", "seeds", *SUMMARY.values()], rows, markdown)


def headline(folder: Path, markdown: bool) -> str:
    """GECPA - each policy from paired.csv (which holds policy - gecpa: the sign is flipped, the
    interval and the Holm-adjusted p are the same), quoted as :func:`cosim.stats.fmt` writes them."""
    from cosim.stats import fmt as quote

    pd_ = pd.read_csv(folder / "paired.csv")
    pd_ = pd_[pd_["layer"] == "moe"]
    cols = list(pd_.columns)
    grid = cols[cols.index("scenario") + 1:cols.index("layer")]  # a sweep's grid keys: one row per point and policy
    head = [*(k.split(".")[-1] for k in grid), "policy (GECPA − it)", "seeds", *HEADLINE.values()]
    rows = []
    for _, r in pd_.iterrows():
        cells = [*(str(r[k]) for k in grid), str(r["policy"]), str(int(r["n"]))]
        for m in HEADLINE:
            if f"{m}.diff" not in r:
                cells.append("n/a")
                continue
            cells.append(quote(-r[f"{m}.diff"], r[f"{m}.ci95"], r.get(f"{m}.p_holm")))
        rows.append(cells)
    return _table(head, rows, markdown)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", help="the sweep's results folder (runs/sweeps/moe-ablation)")
    ap.add_argument("--markdown", action="store_true", help="a Markdown table (docs/moe.md)")
    ap.add_argument("--across", nargs=3, metavar=("KEY", "BASE", "OTHER"),
                    help="OTHER - BASE of grid key KEY per policy, at every value of the other grid keys")
    ap.add_argument("--within", action="store_true", help="GECPA - each policy at every grid point")
    ap.add_argument("--headline", action="store_true", help="GECPA - each policy from the sweep's paired.csv, with p_holm")
    args = ap.parse_args()
    folder = Path(args.sweep)
    if args.headline:
        print("mean ± 95 % half-width over the seeds (summary.csv)")
        print(summary(folder, args.markdown))
        print("\nGECPA - each policy, paired per seed: d ± 95 % half-width (p_holm: Holm over the six, per metric)")
        print(headline(folder, args.markdown))
        return  # a sweep's results, or a copy of its results.csv (docs/figures/moe/)
    res = cosim.load(folder).results if (folder / "cells.csv").is_file() else pd.read_csv(folder / "results.csv")
    policies = [p for p in _moe(res)["policy"].unique()]
    grid = [c for c in res.columns if c.startswith("layers.") or c.startswith("scenario.")]
    if args.across or args.within:
        key = args.across[0] if args.across else None
        rest = [k for k in grid if k != key]
        parts = []
        for values, _ in _moe(res).groupby(rest, sort=True) if rest else [((), None)]:
            fixed = dict(zip(rest, values if isinstance(values, tuple) else (values,)))
            label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in fixed.items())
            if args.across:
                base, other = (_typed(res[key], v) for v in args.across[1:])
                part = across(res, key, base, other, fixed, policies)
            else:
                part = within(res, fixed)
            parts.append(part.assign(comparison=f"{part['comparison'].iloc[0]} ({label})" if label and len(part) else
                                     part.get("comparison", "")))
        print(ACROSS_HEAD)
        print(fmt(pd.concat(parts, ignore_index=True), args.markdown))
        return
    aware = [p for p in policies if p != "nearest"]  # nearest gates plainly either way
    table = pd.concat([
        across(res, GATING, False, True, {REROUTE: "move"}, aware),
        across(res, REROUTE, "regate", "move", {GATING: True}, policies),
        within(res, {GATING: True, REROUTE: "move"}),
        within(res, {GATING: False, REROUTE: "move"}).assign(comparison="gecpa - policy (plain gating)"),
    ], ignore_index=True)
    print(ACROSS_HEAD)
    print(fmt(table, args.markdown))


if __name__ == "__main__":
    main()
