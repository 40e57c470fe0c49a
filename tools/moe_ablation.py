#!/usr/bin/env python3
"""The MoE ablation table from one sweep (tools/sweeps/moe_ablation.toml): what physical gating
buys at equal prices, what moving a lost IV's weights costs against re-gating, and what GECPA
buys over equally-budgeted gradient and evolutionary solvers (and the non-searching baselines).
Every row is a per-seed paired difference with its 95 % interval (Student t over the seeds,
:func:`cosim.sweep.paired_differences`): the same traffic and tasks on both sides of a pair.

    cosim sweep tools/sweeps/moe_ablation.toml
    python tools/moe_ablation.py runs/sweeps/moe-ablation [--markdown]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosim.sweep import paired_differences  # noqa: E402

METRICS = {"success_rate": "success", "mean_latency_s": "latency [s]", "mean_iv_utility": "IV utility",
           "mean_tv_utility": "TV utility", "mean_nash_gap": "Nash gap"}
GATING, REROUTE = "layers.moe.physical_gating", "layers.moe.reroute"


def _moe(res: pd.DataFrame) -> pd.DataFrame:
    return res[res["layer"] == "moe"]


def across(res: pd.DataFrame, key: str, base, other, fixed: dict, policies: list[str]) -> pd.DataFrame:
    """``other - base`` of grid key ``key`` for each policy, same seed: the grid value plays the
    policy and each policy the layer in :func:`paired_differences`."""
    sub = _moe(res)
    for k, v in fixed.items():
        sub = sub[sub[k] == v]
    sub = sub[sub[key].isin([base, other]) & sub["policy"].isin(policies)]
    df = sub[["scenario", "seed", "policy", *METRICS]].assign(layer=sub["policy"], policy=sub[key].map(str))
    out = paired_differences(df, [], {p: str(base) for p in policies})
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


def fmt(df: pd.DataFrame, markdown: bool) -> str:
    rows = []
    for _, r in df.iterrows():
        cells = [r["comparison"], r["policy"], str(int(r["n"]))]
        cells += [f"{r[f'{m}.diff']:+.3f} ± {r[f'{m}.ci95']:.3f}" for m in METRICS]
        rows.append(cells)
    head = ["comparison", "policy", "seeds", *METRICS.values()]
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(c) + " |" for c in rows])
    width = [max(len(x) for x in col) for col in zip(head, *rows)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, width)) for line in [head, *rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", help="the sweep's results folder (runs/sweeps/moe-ablation)")
    ap.add_argument("--markdown", action="store_true", help="a Markdown table (docs/moe.md)")
    args = ap.parse_args()
    res = pd.read_parquet(Path(args.sweep) / "results.parquet")
    policies = [p for p in _moe(res)["policy"].unique()]
    aware = [p for p in policies if p != "nearest"]  # nearest gates plainly either way
    table = pd.concat([
        across(res, GATING, False, True, {REROUTE: "move"}, aware),
        across(res, REROUTE, "regate", "move", {GATING: True}, policies),
        within(res, {GATING: True, REROUTE: "move"}),
        within(res, {GATING: False, REROUTE: "move"}).assign(comparison="gecpa - policy (plain gating)"),
    ], ignore_index=True)
    print("paired per-seed differences, mean ± 95 % CI half-width (Student t)")
    print(fmt(table, args.markdown))


if __name__ == "__main__":
    main()
