"""Paper 001: Xie et al., Mixture of Experts-Enabled Parallel Scheduling and Processing for
Vehicular GAI Services (IEEE TCCN 2025): the MoE layer, GECPA.

**Only the abstract is public.** Its three figures are the whole published claim: "Compared with
the best-performing benchmark algorithm, GECPA improves the average utility of infrastructure
vehicles by up to 2.01 times, reduces inference latency by 16.58 %, and increases the successful
execution rate of GAI tasks by 10.66 %". Our readings (each stated in docs/moe.md, "Validation"):

* **the benchmarks** — the abstract names none; ours are DESIGN.md's: gradient ascent alone,
  evolutionary optimisation alone (GECPA's two halves), random pricing, one uniform posted price,
  nearest-expert placement (:data:`PAPER_STYLE`). ``best-response`` (exact sequential best
  responses at GECPA's budget) is ours, the strongest plain baseline, and is shown but kept out
  of "the best-performing benchmark";
* **"the best-performing benchmark"** — one algorithm per metric and world: the benchmark of
  :data:`PAPER_STYLE` with the best mean over the seeds in that world (the hardest reading for
  GECPA; the abstract does not say best by which metric). :func:`derive` adds it as the
  pseudo-policy ``best benchmark`` (its rows are that benchmark's, per seed);
* **"×2.01"** is (GECPA − best) / best = +101 % in IV utility; **"−16.58 %"** relative latency,
  judged task by task (per seed: GECPA − best over the tasks both completed, divided by the
  best's latency over those tasks; ``Metric.paired``); **"+10.66 %"** relative success rate (the percentage-point reading is the
  ``order`` claim's difference, shown too). "Up to" (a maximum over the paper's settings, which
  it does not publish) is judged at our one setting.

The worlds: the paper's (ours: paper 000's road world, scenarios/paper001.toml), grid6 and the
OSM town, the MoE layer exactly as scenarios/grid6_moe.toml has it, with the grid6 headline's
pins (tools/sweeps/moe_headline.toml). Nothing differs per policy or per world but the traffic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cosim.results import load

from .core import Claim, Experiment, Metric, Paper, World, at, layer_pins, md_table, per_seed, points

#: the benchmarks DESIGN.md names for the paper (gradient alone, evolution alone, random and uniform
#: prices, nearest experts); ``best-response`` is ours and not among them
PAPER_STYLE = ["gradient", "evolutionary", "random", "uniform", "nearest"]
BEST = "best benchmark"
POLICIES = ["gecpa", "best-response", "gradient", "evolutionary", "random", "uniform", "nearest"]

METRICS = [
    Metric("mean_iv_utility", "IV utility (mean over the IVs offered a price)", lower_is_better=False),
    Metric("mean_latency_s", "mean latency [s] (completed tasks)", paired=True),
    Metric("success_rate", "success rate", lower_is_better=False),
    Metric("mean_tv_utility", "TV utility", lower_is_better=False),
    Metric("mean_nash_gap", "Nash gap"),
]
HIGHER = {m.column: not m.lower_is_better for m in METRICS}


def derive(res: pd.DataFrame) -> pd.DataFrame:
    """Add the pseudo-policy ``best benchmark``: per world (and grid point) and metric, the rows of
    the :data:`PAPER_STYLE` benchmark whose mean over the seeds is best there; which one it is
    goes into column ``best_of.<metric>``."""
    keys = [c for c in ("world",) if c in res] + [c for c in res.columns if c.startswith(("layers.", "scenario.",
                                                                                           "traffic."))]
    extra = []
    for _, g in res.groupby(keys, dropna=False, sort=False):
        bench = g[g["policy"].isin(PAPER_STYLE)]
        if bench.empty:
            continue
        rows = g[g["policy"] == PAPER_STYLE[0]].copy().set_index("seed")
        rows["policy"] = BEST
        for m, higher in HIGHER.items():
            means = bench.groupby("policy")[m].mean()
            if means.dropna().empty:
                continue
            pick = means.idxmax() if higher else means.idxmin()
            rows[m] = bench[bench["policy"] == pick].set_index("seed")[m].reindex(rows.index)
            rows[f"best_of.{m}"] = pick
        extra.append(rows.reset_index())
    out = pd.concat([res, *extra], ignore_index=True) if extra else res
    out.attrs = dict(res.attrs)
    return out


#: why the claims do not hold where they do not (found out before anything was changed; docs/moe.md,
#: "Validation"): a reading — our game and our benchmarks — not the traffic (the same in every
#: world) and not a bug (best-response lands on the exact equilibrium, eq distance ~1e-9)
WHY_UTILITY = ("a reading: in our game (ours; the abstract gives none) every IV's utility is concave in its "
               "price and the equilibrium is unique and interior, so gradient play at GECPA's budget reaches "
               "it too and earns what GECPA earns; against GECPA's evolutionary half alone the ratio is ~2.0 "
               "in every world (the paper's best benchmark may have been that weak)")
WHY_TASK = ("a reading: equal equilibrium prices buy equal compute, so latency and success tie; GECPA's prices "
            "sit a little above the equilibrium (Nash gap ~0.2 vs 0.001 for best-response), which if "
            "anything slows it; against evolution alone or posted prices GECPA gains in every world")
CLAIMS = [
    Claim("GECPA's IV utility ×2.01 the best benchmark's (+101 %; 'up to')", "relative", "mean_iv_utility",
          policy="gecpa", better=BEST, value=1.01, why=WHY_UTILITY),
    Claim("GECPA's latency −16.58 % against the best benchmark", "relative", "mean_latency_s",
          policy="gecpa", better=BEST, value=-0.1658, why=WHY_TASK),
    Claim("GECPA's success +10.66 % against the best benchmark (relative)", "relative", "success_rate",
          policy="gecpa", better=BEST, value=0.1066, why=WHY_TASK),
    Claim("GECPA's IV utility above the best benchmark's", "order", "mean_iv_utility", better="gecpa", worse=BEST,
          why="as ×2.01 above (the difference in utility units)"),
    Claim("GECPA's latency below the best benchmark's", "order", "mean_latency_s", better="gecpa", worse=BEST,
          why="as −16.58 % above (the difference in seconds)"),
    Claim("GECPA's success above the best benchmark's (+10.66 points, the other reading)", "order", "success_rate",
          better="gecpa", worse=BEST, why="as +10.66 % above"),
]


def which_best(paper: Paper, exp: Experiment, res: pd.DataFrame) -> str:
    """Which benchmark is "the best-performing" per world and metric, and GECPA against every
    benchmark in the abstract's three terms (ratio of IV utilities, relative latency, success
    difference; means over the seeds), so a reader sees where ×2.01 would come from."""
    rows = []
    for p in points(res, exp):
        r = at(res, p)
        for w in paper.worlds:
            b = r[(r["world"] == w.name) & (r["policy"] == BEST)]
            if b.empty:
                continue
            rows.append([w.label, *(str(b[f"best_of.{m}"].iloc[0]) for m in ("mean_iv_utility", "mean_latency_s",
                                                                               "success_rate"))])
    out = ["Which benchmark is \"the best-performing\" (best mean over the seeds among "
           f"{', '.join(PAPER_STYLE)}):", "", md_table(["world", "IV utility", "latency", "success"], rows), ""]
    rows = []
    for p in points(res, exp):
        r = at(res, p)
        for w in paper.worlds:
            cols = {}
            for m in ("mean_iv_utility", "mean_latency_s", "success_rate"):
                t = per_seed(r, w.name, m, ["gecpa", *POLICIES[1:]])
                if t.empty:
                    break
                cols[m] = t.mean()
            if len(cols) < 3:
                continue
            for q in POLICIES[1:]:
                u, lat, s = (cols[m] for m in ("mean_iv_utility", "mean_latency_s", "success_rate"))
                ratio = u["gecpa"] / u[q] if u[q] > 0 else np.nan
                rows.append([w.label, q, f"{ratio:.2f}" if np.isfinite(ratio) else "n/a (≤ 0)",
                             f"{100 * (lat['gecpa'] - lat[q]) / lat[q]:+.1f} %",
                             f"{100 * (s['gecpa'] - s[q]) / s[q]:+.1f} % ({100 * (s['gecpa'] - s[q]):+.1f} points)"])
    out += ["GECPA against each benchmark in the abstract's terms (means over the seeds; the paper: ×2.01, "
            "−16.58 %, +10.66 % against its best):", "",
            md_table(["world", "against", "IV utility ratio", "latency", "success"], rows)]
    return "\n".join(out)


#: failure causes of the MoE task table, in the order shown
CAUSES = ["deadline", "iv-left-range", "tv-vanished", "no-ivs", "priced-out"]


def task_mechanism(cells: Path, res: pd.DataFrame) -> pd.DataFrame:
    """Per world and policy, what the worlds' traffic does to a task (from each run's
    ``moe_tasks.parquet``): IVs a task uses (at most ``ivs_per_task`` = 8: fewer means fewer
    vehicles within V2V range that could host), the communication time per MoE layer (link
    quality: distance and fading) and the compute time per layer (each the median over the run's
    tasks of the task's mean over its layers: a rerouted task's layers can take seconds and would
    swamp a mean), reroutes per task (an IV left V2V range mid-task) and the share of tasks lost
    to each failure cause. Means over the seeds of the per-run values."""
    rows = []
    for (world, seed, cell), _ in res.groupby(["world", "seed", "cell"], sort=False):
        run = load(cells / str(cell)) if (cells / str(cell)).is_dir() else {}
        if "moe_tasks" not in run:
            continue
        t = run["moe_tasks"].copy()
        t["n_ivs"] = t["ivs"].map(len)
        t["comm"] = t["layer_comm_s"].map(lambda a: float(np.mean(a)) if len(a) else np.nan)
        t["comp"] = t["layer_comp_s"].map(lambda a: float(np.mean(a)) if len(a) else np.nan)
        for pol, g in t.groupby("policy", sort=False):
            row = {"world": world, "seed": seed, "policy": pol, "tasks": len(g), "n_ivs": g["n_ivs"].mean(),
                   "comm_ms": 1e3 * g["comm"].median(), "comp_ms": 1e3 * g["comp"].median(),
                   "reroutes": g["reroutes"].mean()}
            for c in CAUSES:
                row[c] = float((g["failure"] == c).mean())
            rows.append(row)
    return pd.DataFrame(rows)


def mechanism(paper: Paper, exp: Experiment, res: pd.DataFrame) -> str:
    """The mechanism table (:func:`task_mechanism`) for GECPA and the best-response baseline
    (their placements are the link-aware one every pricing policy shares), per world."""
    where = res.attrs.get("dir")
    if not where or not (Path(where) / "cells").is_dir():
        return ""
    m = task_mechanism(Path(where) / "cells", res[res["policy"].isin(POLICIES)])
    if m.empty:
        return ""
    rows = []
    for w in paper.worlds:
        for pol in ("gecpa", "best-response", "nearest"):
            g = m[(m["world"] == w.name) & (m["policy"] == pol)]
            if g.empty:
                continue
            rows.append([w.label, pol, f"{g['tasks'].mean():.1f}", f"{g['n_ivs'].mean():.2f}",
                         f"{g['comm_ms'].mean():.1f}", f"{g['comp_ms'].mean():.1f}", f"{g['reroutes'].mean():.3f}",
                         *(f"{100 * g[c].mean():.1f}" for c in CAUSES)])
    return ("What the traffic does to a task (means over the seeds; per MoE layer, the slowest IV's "
            "communication = upload + download and compute = W/f, the median over the run's tasks):\n\n"
            + md_table(["world", "policy", "tasks", "IVs per task", "comm per layer [ms]", "compute per layer [ms]",
                        "reroutes per task", *(f"{c} [%]" for c in CAUSES)], rows))


def extra(paper: Paper, exp: Experiment, res: pd.DataFrame) -> str:
    return "\n\n".join(x for x in (which_best(paper, exp, res), mechanism(paper, exp, res)) if x)


GRID6 = "scenarios/grid6_moe.toml"
PAPER = Paper(
    key="001",
    title="Xie et al., MoE-enabled parallel scheduling and processing for vehicular GAI services (GECPA), abstract",
    layer="moe",
    baseline="gecpa",
    policies=POLICIES,  # BEST is only claimed against: in the tables it would tie a real policy's rank
    worlds=[
        World("paper", "scenarios/paper001.toml", "paper world (ours)"),
        World("grid6", GRID6, "grid6 (SUMO)", reference="paper"),
        World("town", "scenarios/town.toml", "town (OSM, SUMO)", reference="paper"),
    ],
    metrics=METRICS,
    experiments=[Experiment("headline", claims=CLAIMS)],
    # the layer exactly as grid6_moe.toml has it, and the pins of the grid6 headline
    # (tools/sweeps/moe_headline.toml); the town has no MoE table of its own: these make it
    set={**layer_pins(GRID6, "moe"), "output.coverage": False, "layers.moe.queue": "simulated",
         "layers.moe.placement": "preloaded", "layers.moe.physical_gating": True, "layers.moe.reroute": "move",
         "layers.moe.deadline_s": 1.0, "layers.moe.request_rate_per_s": 0.2},
    derive=derive,
    extra=extra,
    doc="docs/moe.md",
    notes=["Only the abstract of paper 001 is public: its world, model, benchmarks and parameters are ours "
           "(docs/moe.md, docs/paper_worlds.md). `best benchmark` is, per world and metric, the benchmark among "
           f"{', '.join(PAPER_STYLE)} with the best mean (best-response, ours, is not one of them)."],
)
