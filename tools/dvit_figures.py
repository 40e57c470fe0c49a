#!/usr/bin/env python3
"""Reproduce Figs. 3-6 of the DViT paper (Xie et al., IEEE TVT 2024) on SUMO traffic.

    Fig. 3  latency vs number of vehicles (candidate helpers per task)
    Fig. 4  latency vs number of inference steps K
    Fig. 5  latency vs number of encoder layers L (6 ... 48)
    Fig. 6  success rate vs number of vehicles

Every point is one `cosim run` of scenarios/grid6_dvit.toml with all policies side by side on
the same requests; runs go to parallel processes (libsumo allows one SUMO per process).

    python tools/dvit_figures.py --out runs/figures [--end 300] [--preset calibrated|paper-literal] [--jobs 2]

Writes figures.csv (one row per point and policy) and fig3.png ... fig6.png.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _runs import ROOT, line_plot, run_cosim

SCENARIO = ROOT / "scenarios" / "grid6_dvit.toml"
SWEEPS = {
    "fig3": ("max_helpers", [2, 5, 10, 15, 20, 30]),
    "fig4": ("steps", [10, 30, 50, 70, 100]),
    "fig5": ("layers", [6, 12, 24, 36, 48]),
}


def run_point(out: Path, key: str, value, end: float, preset: str, seed: int) -> dict:
    local = 5 if key != "steps" else max(1, int(value) // 10)
    sets = {"scenario.step_length_s": 0.5, "layers.dvit.preset": preset, "layers.dvit.request_rate_per_s": 1.0,
            f"layers.dvit.{key}": value, "layers.dvit.local_steps": local}
    summary = run_cosim(SCENARIO, out / f"{key}-{value}", end=end, seed=seed, sets=sets)
    return {"key": key, "value": value, "summary": summary["layers"]["dvit"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/dvit-figures")
    ap.add_argument("--end", type=float, default=300.0, help="simulated seconds per point")
    ap.add_argument("--preset", default="calibrated", choices=("calibrated", "paper-literal"))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    points = [(k, v) for key, (k, vals) in SWEEPS.items() for v in vals]
    rows = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for i, r in enumerate(pool.map(lambda kv: run_point(out, kv[0], kv[1], args.end, args.preset, args.seed), points)):
            print(f"[{i + 1}/{len(points)}] {r['key']} = {r['value']}", file=sys.stderr)
            for policy, s in r["summary"].items():
                rows.append({"sweep": r["key"], "value": r["value"], "policy": policy, **s})
    import pandas as pd

    df = pd.DataFrame(rows)
    df.to_csv(out / "figures.csv", index=False)
    print(df.pivot_table(index=["sweep", "value"], columns="policy", values="mean_latency_s").round(3).to_string())
    print(df.pivot_table(index=["sweep", "value"], columns="policy", values="success_rate").round(3).to_string())
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib missing: pip install -e '.[plot]' for the PNGs", file=sys.stderr)
        return
    specs = [("fig3", "max_helpers", "mean_latency_s", "candidate vehicles", "latency [s]"),
             ("fig4", "steps", "mean_latency_s", "inference steps K", "latency [s]"),
             ("fig5", "layers", "mean_latency_s", "encoder layers L", "latency [s]"),
             ("fig6", "max_helpers", "success_rate", "candidate vehicles", "success rate")]
    for fig, key, metric, xlabel, ylabel in specs:
        line_plot(df[df.sweep == key], "value", metric, out / f"{fig}.png", xlabel, ylabel,
                  f"{fig} ({args.preset}, grid6)")
    print(f"wrote {out}/figures.csv and fig3..fig6.png", file=sys.stderr)


if __name__ == "__main__":
    main()
