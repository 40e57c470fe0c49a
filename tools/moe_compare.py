#!/usr/bin/env python3
"""The MoE paper's headline comparison on SUMO traffic: GECPA against the best baseline on IV
utility (x), latency (%) and success rate (%), plus plots over the number of vehicles and the
request load.

Every run is `cosim run scenarios/grid6_moe.toml` with all policies side by side on the same
tasks; runs go to parallel processes (one SUMO each). The number of vehicles is varied with
SUMO's own demand scaling (`--scale`), the load with `request_rate_per_s`.

    python tools/moe_compare.py --out runs/moe-compare [--end 600] [--seeds 3] [--jobs 2]

Writes runs.csv, headline.csv, vs_vehicles.png and vs_load.png. The paper (abstract) reports
x2.01 IV utility, -16.58 % latency and +10.66 % success against its best benchmark, on its own
model, which it does not publish: our numbers are ours and cannot be compared with those.
For the headline with >= 10 seeds and Holm-adjusted p-values use tools/sweeps/moe_headline.toml.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from _runs import ROOT, line_plot, run_cosim

SCENARIO = ROOT / "scenarios" / "grid6_moe.toml"
BASELINES = ["best-response", "gradient", "evolutionary", "random", "uniform", "nearest"]


def headline(blocks: pd.DataFrame) -> pd.DataFrame:
    """GECPA against the best baseline for each metric (best = highest mean utility / success,
    lowest latency), as the per-seed paired difference with its 95 % interval
    (:func:`cosim.sweep.paired_differences`: the same tasks and traffic on both sides)."""
    from cosim.sweep import paired_differences

    metrics = ["mean_iv_utility", "mean_latency_s", "success_rate"]
    mean = blocks.groupby("policy")[metrics].mean()
    base = mean.loc[[p for p in BASELINES if p in mean.index]]
    df = blocks[["seed", "policy", *metrics]].assign(scenario="grid6", layer="moe")
    paired = paired_differences(df, [], {"moe": "gecpa"}).set_index("policy")
    rows = []
    for metric, best_fn in (("mean_iv_utility", "idxmax"), ("mean_latency_s", "idxmin"), ("success_rate", "idxmax")):
        best = getattr(base[metric], best_fn)()
        b = base.loc[best, metric]
        d, ci = -paired.loc[best, f"{metric}.diff"], paired.loc[best, f"{metric}.ci95"]  # gecpa - best
        rows.append({"metric": metric, "gecpa": mean.loc["gecpa", metric], "best baseline": best, "its value": b,
                     "gecpa - it": d, "ci95": ci, "relative": f"{100.0 * d / b:+.2f} %" if b else "n/a"})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/moe-compare")
    ap.add_argument("--end", type=float, default=600.0, help="simulated seconds per run")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--scales", default="0.25,0.5,1.0,1.5", help="SUMO demand scales (number of vehicles)")
    ap.add_argument("--loads", default="0.1,0.2,0.5,1.0", help="tasks per second")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [("seed", s, s, {}) for s in range(1, args.seeds + 1)]
    jobs += [("scale", float(x), 1, {"scenario.sumo_args": ["--scale", x]}) for x in args.scales.split(",")]
    jobs += [("load", float(x), 1, {"layers.moe.request_rate_per_s": float(x)}) for x in args.loads.split(",")]

    def one(job):
        kind, value, seed, sets = job
        return job, run_cosim(SCENARIO, out / f"{kind}-{value:g}-s{seed}", end=args.end, seed=seed, sets=sets)

    rows = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for i, ((kind, value, seed, _), summary) in enumerate(pool.map(one, jobs)):
            print(f"[{i + 1}/{len(jobs)}] {kind} = {value:g} (seed {seed})", file=sys.stderr)
            for policy, block in summary["layers"]["moe"].items():
                rows.append({"sweep": kind, "value": value, "seed": seed, "policy": policy,
                             "vehicles_max": summary["max_concurrent_vehicles"], **block})
    df = pd.DataFrame(rows)
    df.to_csv(out / "runs.csv", index=False)
    pd.set_option("display.width", 200)
    seeds = df[df.sweep == "seed"]
    table = seeds.groupby("policy", sort=False)[["tasks", "success_rate", "mean_latency_s", "p95_latency_s",
                                                 "mean_iv_utility", "mean_tv_utility", "mean_nash_gap",
                                                 "mean_solve_ms"]].mean()
    print(f"\ngrid6, {args.end:g} s, mean over {args.seeds} seeds")
    print(table.round(4).to_string())
    head = headline(seeds)
    head.to_csv(out / "headline.csv", index=False)
    print("\nGECPA vs the best baseline, paired per seed with 95 % CI (ours: not comparable with the paper's x2.01 / -16.58 % / +10.66 %)")
    print(head.round(4).to_string(index=False))
    for kind, label in (("scale", "vehicles (max concurrent)"), ("load", "tasks per second")):
        sub = df[df.sweep == kind]
        x = "vehicles_max" if kind == "scale" else "value"
        print(f"\nvs {label}")
        for metric in ("success_rate", "mean_latency_s", "mean_iv_utility"):
            print(f"  {metric}")
            print(sub.pivot_table(index="policy", columns=x, values=metric, sort=False).round(3).to_string())
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib missing: pip install -e '.[plot]' for the PNGs", file=sys.stderr)
        return
    for kind, x, xlabel in (("scale", "vehicles_max", "vehicles (max concurrent)"), ("load", "value", "tasks per second")):
        sub = df[df.sweep == kind]
        for metric, ylabel in (("success_rate", "success rate"), ("mean_latency_s", "mean latency [s]"),
                               ("mean_iv_utility", "mean IV utility")):
            line_plot(sub, x, metric, out / f"{metric}_vs_{kind}.png", xlabel, ylabel, f"MoE layer on grid6 ({metric})")
    print(f"wrote {out}/runs.csv, headline.csv and the *_vs_scale/load.png plots", file=sys.stderr)


if __name__ == "__main__":
    main()
