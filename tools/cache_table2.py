#!/usr/bin/env python3
"""Table II of Xu et al. (edge PFM caching) on SUMO traffic, plus cost over time and vs GPU memory.

Every run is `cosim run scenarios/grid6_cache.toml` with all eviction policies side by side on
the same requests; runs go to parallel processes (one SUMO each).

* Table II: each metric of the paper's table per policy, averaged over ``--seeds`` seeds, with
  the paper's numbers and orderings beside ours, and every policy's paired per-seed difference
  to LC with its 95 % interval (``cosim.sweep.paired_differences``);
* ``lc-predictive`` with SUMO's routes against the same policy extrapolating straight ahead
  (``predict_routes = false``): what knowing the routes is worth;
* cost over time (cumulative system cost per policy) and cost per request vs GPU memory.

    python tools/cache_table2.py --out runs/cache-table2 [--end 600] [--seeds 3] [--jobs 2]

Writes table2.csv, memory.csv, cost_over_time.png and cost_vs_memory.png.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from _runs import ROOT, line_plot, run_cosim

sys.path.insert(0, str(ROOT))
import cosim  # noqa: E402
from cosim.sweep import paired_differences  # noqa: E402

SCENARIO = ROOT / "scenarios" / "grid6_cache.toml"
POLICIES = ["random", "cloud", "fifo", "lfu", "lfu-perfect", "lc", "lru", "lc-predictive"]
#: Table II of the paper (Random, Cloud, FIFO, LFU, LC): one copy, tools/repro/paper002.py's
from repro.paper002 import TABLE2 as PAPER  # noqa: E402


def run(out: Path, name: str, end: float, seed: int, sets: dict) -> dict:
    summary = run_cosim(SCENARIO, out / name, end=end, seed=seed, sets={f"layers.cache.{k}": v for k, v in sets.items()})
    return summary["layers"]["cache"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/cache-table2")
    ap.add_argument("--end", type=float, default=600.0, help="simulated seconds per run")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 1..N for Table II")
    ap.add_argument("--memory", default="20,40,80,160,320,480", help="GPU memory points [GB]")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(f"seed{s}", s, {}) for s in range(1, args.seeds + 1)]
    jobs += [(f"seed{s}-straight", s, {"policies": ["lc-predictive"], "predict_routes": False})
             for s in range(1, args.seeds + 1)]
    jobs += [(f"mem{m}", 1, {"gpu_memory_gb": float(m)}) for m in args.memory.split(",")]
    done = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for i, (job, res) in enumerate(zip(jobs, pool.map(lambda j: run(out, j[0], args.end, j[1], j[2]), jobs))):
            print(f"[{i + 1}/{len(jobs)}] {job[0]}", file=sys.stderr)
            done.append((job, res))

    rows = []
    for (name, seed, sets), res in done:
        for policy, block in res.items():
            if sets.get("predict_routes") is False:
                policy = "lc-predictive (straight)"
            rows.append({"run": name, "seed": seed, "gpu_memory_gb": sets.get("gpu_memory_gb", 80.0),
                         "policy": policy, **block})
    df = pd.DataFrame(rows)
    df.to_csv(out / "runs.csv", index=False)
    t2 = df[df.run.str.startswith("seed")]
    metrics = list(PAPER)
    mean = t2.groupby("policy")[metrics + ["system_cost_per_request", "requests"]].mean()
    paired = paired_differences(t2.assign(scenario="grid6_cache", layer="cache"), [], {"cache": "lc"})
    paired.to_csv(out / "paired.csv", index=False)
    order = [p for p in POLICIES + ["lc-predictive (straight)"] if p in mean.index]
    table = mean.loc[order].T
    d = paired.set_index("policy")
    table.loc["system_cost - lc (paired)"] = [d.loc[p, "system_cost.diff"] if p in d.index else 0.0 for p in order]
    table.loc["  95 % interval +-"] = [d.loc[p, "system_cost.ci95"] if p in d.index else 0.0 for p in order]
    table.to_csv(out / "table2.csv")
    pd.set_option("display.width", 200)
    print(f"\nTable II on grid6 ({args.end:g} s, {args.seeds} seeds, mean over seeds; costs are totals per run)")
    print(table.round(4).to_string())
    ours = mean["system_cost"].loc[[p for p in ("random", "cloud", "fifo", "lfu", "lc") if p in mean.index]]
    print("\nsystem-cost order, ours :", " < ".join(ours.sort_values().index))
    print("system-cost order, paper:", " < ".join(sorted(PAPER["system_cost"], key=PAPER["system_cost"].get)))
    if "lc-predictive (straight)" in mean.index:
        a, b = mean.loc["lc-predictive", "system_cost"], mean.loc["lc-predictive (straight)", "system_cost"]
        print(f"lc-predictive: routes {a:.1f} vs straight-ahead {b:.1f} ({100 * (b - a) / b:+.1f} % from routes); "
              f"vs lc {mean.loc['lc', 'system_cost']:.1f}")
    mem = df[df.run.str.startswith("mem")]
    mem.to_csv(out / "memory.csv", index=False)
    print("\ncost per request vs GPU memory [GB]")
    print(mem.pivot(index="policy", columns="gpu_memory_gb", values="system_cost_per_request").round(3).to_string())
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib missing: pip install -e '.[plot]' for the PNGs", file=sys.stderr)
        return
    req = cosim.load(out / "seed1").table("cache_requests", ["policy", "t_s", "system_cost"])
    req = req.sort_values("t_s", kind="stable")
    req["cumulative"] = req.groupby("policy", observed=True)["system_cost"].cumsum()
    line_plot(req.astype({"policy": str}), "t_s", "cumulative", out / "cost_over_time.png", "simulation time [s]",
              "cumulative system cost", "edge cache on grid6 (seed 1)", marker="")
    line_plot(mem, "gpu_memory_gb", "system_cost_per_request", out / "cost_vs_memory.png", "GPU memory per RSU [GB]",
              "system cost per request", "edge cache on grid6 (seed 1)", logx=True)
    print(f"wrote {out}/table2.csv, memory.csv, cost_over_time.png, cost_vs_memory.png", file=sys.stderr)


if __name__ == "__main__":
    main()
