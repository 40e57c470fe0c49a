#!/usr/bin/env python3
"""docs/dvit.md's sweep tables from a sweep's summary.csv and paired.csv (issue 25).

    python tools/dvit_tables.py runs/sweeps/dvit-queue-load
    python tools/dvit_tables.py runs/sweeps/dvit-information

One Markdown table per grid point: each policy's success rate and mean latency (means over
seeds), and against the layer's baseline (VIDI, its first policy) the task-level differences —
latency over the tasks both completed, success over the tasks both were given (censored ones
excluded) — quoted as ``d ± h (p_holm p)`` (:func:`cosim.stats.fmt`: mean over seeds, Student-t
95 % half-width, Holm-adjusted paired t-test over the point's family). Policies are listed by
their task-level latency difference to VIDI (VIDI at 0), fastest first: the ranking; policies
whose every number is the same (MBDI and MCPDI where the RSU ranks first for both) share a rank.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from cosim.stats import fmt

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--layer", default="dvit")
    args = ap.parse_args()
    summ = pd.read_csv(args.sweep / "summary.csv")
    pair = pd.read_csv(args.sweep / "paired.csv")
    summ, pair = summ[summ.layer == args.layer], pair[pair.layer == args.layer]
    grid = [c for c in pair.columns if c.startswith(("layers.", "scenario.", "world.", "channel.", "rsu.", "traffic."))
            and not c.endswith((".diff", ".ci95", ".n", ".p", ".p_holm"))]
    for point, sp in summ.groupby(grid or (lambda _: 0), sort=False):
        point = point if isinstance(point, tuple) else (point,)
        label = ", ".join(f"{k} = {v}" for k, v in zip(grid, point)) if grid else "all"
        pp = pair
        for k, v in zip(grid, point):
            pp = pp[pp[k] == v]
        pp = pp.set_index("policy")
        n = int(sp["n"].max())
        print(f"\n{label} ({n} seeds)\n")
        print("| rank | policy | success | latency [s] | latency − VIDI [s], common tasks | success − VIDI |")
        print("|---|---|---|---|---|---|")
        rows = []
        for _, r in sp.iterrows():
            p = r["policy"]
            if p in pp.index:
                q = pp.loc[p]
                key = float(q["latency_diff_s.diff"])
                lat = fmt(q["latency_diff_s.diff"], q["latency_diff_s.ci95"], q["latency_diff_s.p_holm"])
                suc = fmt(q["success_diff.diff"], q["success_diff.ci95"], q["success_diff.p_holm"])
            else:
                key, lat, suc = 0.0, "–", "–"
            rows.append((key, p, r["success_rate.mean"], r["mean_latency_s.mean"], lat, suc))
        rows.sort(key=lambda x: x[0])
        rank, last = 0, None
        for i, (key, p, succ, latency, lat, suc) in enumerate(rows, 1):
            if (key, succ, latency) != last:
                rank, last = i, (key, succ, latency)
            print(f"| {rank} | {p} | {succ:.3f} | {latency:.3f} | {lat} | {suc} |")

if __name__ == "__main__":
    main()
