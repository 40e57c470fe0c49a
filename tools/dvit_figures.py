#!/usr/bin/env python3
"""Reproduce Figs. 3-6 of the DViT paper (Xie et al., IEEE TVT 2024) on SUMO traffic.

    Fig. 3  latency vs number of vehicles (candidate helpers per task)
    Fig. 4  latency vs number of inference steps K (local steps: 1)
    Fig. 5  latency vs number of encoder layers L
    Fig. 6  success rate vs number of vehicles

Each figure is one `cosim sweep` of scenarios/grid6_dvit.toml over its parameter x preset x
handover mode x seeds; every policy runs side by side on the same requests in each run. Every
number printed or plotted comes with its per-seed paired difference to VIDI (policy - VIDI,
same traffic and requests), task by task (latency over the tasks both completed, success over
the tasks both were given: docs/comparisons.md), with a Student-t 95 % interval and the
Holm-adjusted p, from `cosim.sweep.paired_differences` (the sweep's paired.csv).

    python tools/dvit_figures.py --out runs/dvit-figures [--end 300] [--seeds 10] [--jobs 2]
        [--presets calibrated paper-literal] [--handover fail migrate] [--figs 3 4 5 6]
        [--policies vidi optimal rl:dvit_grid6]
    python tools/dvit_figures.py --modes runs/sweeps/dvit-handover [runs/sweeps/dvit-handover-town]

``--modes SWEEP...``: for sweeps with a ``layers.dvit.handover`` grid (tools/sweeps/dvit_handover*.toml),
print migrate - fail per policy, paired per seed (same traffic and requests): of each policy's own means
(descriptive) and task by task (latency over the tasks both modes completed, success over the tasks both
were given; 95 % intervals, p Holm-adjusted over the policies at each point: the numbers to quote).

Writes, under --out: one sweep folder per figure (results.parquet, paired.csv), figures.csv
(mean per point and policy), paired.csv (all paired differences), figN_<preset>_<mode>.png
(means) and figN_paired_<preset>_<mode>.png (policy - VIDI with 95 % intervals).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

from _runs import ROOT

import cosim  # noqa: E402 - _runs put the repository first on sys.path

SCENARIO = ROOT / "scenarios" / "grid6_dvit.toml"
#: figure -> (sweep name, key, values, metric, x label, y label)
FIGS = {
    "3": ("dvit-fig3-6", "layers.dvit.max_helpers", [2, 5, 10, 20, 30], "mean_latency_s", "candidate vehicles", "latency [s]"),
    "6": ("dvit-fig3-6", "layers.dvit.max_helpers", [2, 5, 10, 20, 30], "success_rate", "candidate vehicles", "success rate"),
    "4": ("dvit-fig4", "layers.dvit.steps", [10, 50, 100], "mean_latency_s", "inference steps K", "latency [s]"),
    "5": ("dvit-fig5", "layers.dvit.layers", [6, 24, 48], "mean_latency_s", "encoder layers L", "latency [s]"),
}
PRESET, MODE = "layers.dvit.preset", "layers.dvit.handover"
#: the task-level paired difference each figure's metric is compared by (cosim.pairing)
TASK_LEVEL = {"mean_latency_s": "latency_diff_s", "success_rate": "success_diff"}


def sweep(out: Path, name: str, key: str, values: list, args: argparse.Namespace) -> Path:
    """Write and run the sweep of one figure; returns its results folder."""
    sets = {"output.coverage": False, "scenario.step_length_s": 0.5}
    if args.policies:
        sets["layers.dvit.policies"] = args.policies
    if key == "layers.dvit.steps":
        sets["layers.dvit.local_steps"] = 1
    lines = ["[sweep]", f"name = {json.dumps(name)}", f"scenarios = [{json.dumps(str(SCENARIO))}]",
             f"seeds = {args.seeds}", f"end_s = {args.end}", "", "[set]"]
    lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sets.items()]
    lines += ["", "[grid]", f"{json.dumps(key)} = {json.dumps(values)}",
              f"{json.dumps(PRESET)} = {json.dumps(args.presets)}", f"{json.dumps(MODE)} = {json.dumps(args.handover)}"]
    spec = out / f"{name}.toml"
    spec.write_text("\n".join(lines) + "\n")
    res = out / name
    cmd = [sys.executable, "-m", "cosim", "sweep", str(spec), "--out", str(res), "-q"]
    if args.jobs:
        cmd += ["--jobs", str(args.jobs)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: {proc.stderr.strip()[-2000:]}")
    return res


def mode_differences(res, keys: list[str]):  # noqa: ANN001, ANN201
    """migrate - fail per policy, paired per seed: the handover mode takes the place of the policy
    in ``paired_differences`` (each policy is its own group), so the same statistics apply."""
    from cosim.sweep import paired_differences

    res = res[res["layer"] == "dvit"]
    swapped = res.assign(layer=res["policy"], policy=res[MODE]).drop(columns=[MODE])
    return paired_differences(swapped, keys, {p: "fail" for p in swapped["layer"].unique()}).rename(
        columns={"layer": "dvit_policy", "policy": "mode"})


def mode_task_differences(res, sweep_dir, keys: list[str]):  # noqa: ANN001, ANN201
    """migrate - fail per policy, **task by task** (docs/comparisons.md): in each seed the two runs
    (same traffic, same requests: a task keeps its id) are paired by :func:`cosim.pairing.vs_baseline`
    with the modes in place of the policies — latency over the tasks both modes completed, success
    over the tasks both were given (censored in neither) — then, per scenario and ``keys`` point,
    ``M.diff``/``M.ci95``/``M.n``/``M.p`` over seeds and ``M.p_holm``, Holm-adjusted over the family
    of every policy's migrate - fail on ``M`` at that point: :func:`cosim.sweep.paired_differences`
    on a per-seed frame where each policy's row carries its seed's migrate - fail as that run's
    ``vs_baseline`` block against a ``fail`` baseline row (so the family is the point's policies).
    ``n``: the seeds where both modes ran and the policy's tasks paired. No seed with both modes:
    a one-line message on stderr and an empty frame."""
    import pandas as pd

    from cosim import pairing, registry
    from cosim.results import read_table
    from cosim.sweep import paired_differences

    table = registry.layer_class("dvit").task_table
    dvit = res[res["layer"] == "dvit"]
    base = "fail"  # the baseline row's name: not a policy's column, only the pairing's key
    per_seed = []
    for (*point, seed), g in dvit.groupby(["scenario", *keys, "seed"], sort=False):
        cell = dict(zip(g[MODE], g["cell"]))
        if not {"fail", "migrate"} <= cell.keys():
            continue
        tasks = {m: read_table(Path(sweep_dir) / "cells" / cell[m] / f"{table}.parquet", pairing.COLUMNS)
                 for m in ("fail", "migrate")}
        at = {**dict(zip(["scenario", *keys], point)), "layer": "dvit", "seed": seed}
        rows = []
        for policy in g.loc[g[MODE] == "fail", "policy"]:
            both = pd.concat([t[t["policy"] == policy].assign(policy=m) for m, t in tasks.items()])
            v = pairing.vs_baseline(both, ["fail", "migrate"]).get("migrate")
            if v is None:
                continue
            rows.append({**at, "policy": policy, "vs_baseline.baseline": base,
                         **{f"vs_baseline.{m}": math.nan if v[m] is None else v[m] for m in TASK_LEVEL.values()}})
        if rows:
            per_seed += [{**at, "policy": base}, *rows]
    if not per_seed:
        print(f"{sweep_dir}: no seed ran both handover modes (fail and migrate) with tasks to pair: "
              "no migrate - fail task by task", file=sys.stderr)
        return pd.DataFrame()
    out = paired_differences(pd.DataFrame(per_seed), keys, {"dvit": base})
    return out.drop(columns=["layer", "baseline"])


def report_modes(dirs: list[str]) -> None:
    from cosim.stats import fmt

    cols = ["success_rate", "mean_latency_s", "p95_latency_s", "migrations"]
    for d in dirs:
        res = cosim.load(d).results
        if MODE not in res.columns:
            raise SystemExit(f"{d}: no {MODE} grid in this sweep (--modes reads tools/sweeps/dvit_handover*.toml sweeps)")
        keys = [k for k in (PRESET,) if k in res.columns]
        dvit = res[res["layer"] == "dvit"]
        print(f"\n{d}: means over seeds")
        print(dvit.groupby([*keys, MODE, "policy"], sort=False)[cols].mean().round(3).to_string())
        task = mode_task_differences(res, d, keys)
        if task.empty:  # no seed ran both modes (said on stderr): nothing to pair
            continue
        diff = mode_differences(res, keys)
        print(f"{d}: migrate - fail of each policy's own means (paired per seed, 95 % CI; descriptive)")
        show = diff[[*keys, "dvit_policy", "n"] + [c for m in cols for c in (f"{m}.diff", f"{m}.ci95")]]
        print(show.round(4).to_string(index=False))
        print(f"{d}: migrate - fail task by task (latency: tasks both modes completed; success: tasks both were "
              "given), paired per seed: d ± 95 % half-width (p_holm over the policies)")
        for m in TASK_LEVEL.values():
            task[m] = [fmt(r[f"{m}.diff"], r[f"{m}.ci95"], r[f"{m}.p_holm"]) for _, r in task.iterrows()]
        print(task[["scenario", *keys, "policy", "n", *TASK_LEVEL.values()]].to_string(index=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/dvit-figures")
    ap.add_argument("--end", type=float, default=300.0, help="simulated seconds per run")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--presets", nargs="+", default=["calibrated"], choices=("calibrated", "paper-literal"))
    ap.add_argument("--handover", nargs="+", default=["fail", "migrate"], choices=("fail", "migrate"))
    ap.add_argument("--figs", nargs="+", default=["3", "4", "5", "6"], choices=sorted(FIGS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--policies", nargs="+", metavar="POLICY",
                    help="the schedulers compared (default: the scenario's); vidi is always among them, the "
                         "baseline of every difference; e.g. --policies vidi optimal mcpdi rl:dvit_grid6 (a trained "
                         "agent, docs/gym.md)")
    ap.add_argument("--modes", nargs="+", metavar="SWEEP", help="only report migrate - fail of finished sweeps")
    args = ap.parse_args()
    if args.modes:
        return report_modes(args.modes)
    if args.policies and "vidi" not in args.policies:
        args.policies = ["vidi", *args.policies]
    import pandas as pd

    from cosim.stats import fmt
    from cosim.sweep import paired_differences

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done: dict[str, Path] = {}
    means, paired = [], []
    for fig in args.figs:
        name, key, values, metric, xlabel, ylabel = FIGS[fig]
        if name not in done:
            print(f"sweep {name}: {key} = {values} x {args.presets} x {args.handover} x {args.seeds} seeds",
                  file=sys.stderr)
            done[name] = sweep(out, name, key, values, args)
        res = cosim.load(done[name]).results
        res = res[res["layer"] == "dvit"]
        grid = [key, PRESET, MODE]
        m = res.groupby([*grid, "policy"], sort=False)[metric].mean().reset_index()
        m.insert(0, "fig", fig)
        means.append(m.rename(columns={metric: "mean"}).assign(metric=metric))
        pd_ = paired_differences(res, grid, {"dvit": "vidi"})
        task = TASK_LEVEL[metric]  # compared task by task (docs/comparisons.md), not by each policy's own means
        keep = [*grid, "policy", "baseline", "n", f"{task}.diff", f"{task}.ci95", f"{task}.p_holm"]
        pf = pd_[keep].rename(columns={f"{task}.diff": "diff", f"{task}.ci95": "ci95", f"{task}.p_holm": "p_holm"})
        pf.insert(0, "fig", fig)
        paired.append(pf.assign(metric=task))
        if len(args.handover) > 1:
            md = mode_differences(res, [key, PRESET])
            print(f"Fig. {fig}: {metric}, migrate - fail per policy (paired per seed, 95 % CI)")
            print(md[[key, PRESET, "dvit_policy", "n", f"{metric}.diff", f"{metric}.ci95"]].round(4).to_string(index=False))
    means_df, paired_df = pd.concat(means), pd.concat(paired)
    means_df.to_csv(out / "figures.csv", index=False)
    paired_df.to_csv(out / "paired.csv", index=False)
    for fig in args.figs:
        _, key, _, metric, _, _ = FIGS[fig]
        sub = paired_df[paired_df.fig == fig]
        tab = sub.assign(cell=[fmt(d, h, p) for d, h, p in zip(sub["diff"], sub["ci95"], sub["p_holm"])])
        print(f"\nFig. {fig}: {TASK_LEVEL[metric]}, policy - vidi (task by task, paired per seed over "
              f"{args.seeds} seeds: d ± 95 % half-width, Holm-adjusted p)")
        print(tab.pivot_table(index=[PRESET, MODE, key], columns="policy", values="cell", aggfunc="first").to_string())
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib missing: pip install -e '.[plot]' for the PNGs", file=sys.stderr)
        return
    plot(out, means_df, paired_df, args)


def plot(out: Path, means, paired, args: argparse.Namespace) -> None:  # noqa: ANN001
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for fig in args.figs:
        _, key, _, metric, xlabel, ylabel = FIGS[fig]
        for preset in args.presets:
            for mode in args.handover:
                sel = (means.fig == fig) & (means[PRESET] == preset) & (means[MODE] == mode)
                m = means[sel]
                p = paired[(paired.fig == fig) & (paired[PRESET] == preset) & (paired[MODE] == mode)]
                tag = f"fig{fig}_{preset}_{mode}"
                plt.figure(figsize=(5.5, 3.6))
                for policy, g in m.groupby("policy", sort=False):
                    plt.plot(g[key], g["mean"], marker="o", label=policy)
                plt.xlabel(xlabel)
                plt.ylabel(ylabel)
                plt.title(f"Fig. {fig} ({preset}, handover {mode}, grid6)", fontsize=9)
                plt.legend(fontsize=7)
                plt.tight_layout()
                plt.savefig(out / f"{tag}.png", dpi=110)
                plt.close()
                plt.figure(figsize=(5.5, 3.6))
                for i, (policy, g) in enumerate(p.groupby("policy", sort=False)):
                    x = g[key].astype(float) * (1 + 0.015 * (i - 3))  # spread the bars apart
                    plt.errorbar(x, g["diff"], yerr=g["ci95"], marker="o", capsize=3, label=policy)
                plt.axhline(0.0, color="k", lw=0.8)
                plt.xlabel(xlabel)
                plt.ylabel(f"{ylabel}: policy - VIDI (common tasks)" if metric == "mean_latency_s"
                           else f"{ylabel}: policy - VIDI")
                plt.title(f"Fig. {fig} paired per seed, task by task ({preset}, {mode}; 95 % CI)", fontsize=9)
                plt.legend(fontsize=7)
                plt.tight_layout()
                plt.savefig(out / f"fig{fig}_paired_{preset}_{mode}.png", dpi=110)
                plt.close()
    print(f"wrote {out}/figures.csv, paired.csv and the PNGs", file=sys.stderr)


if __name__ == "__main__":
    main()
