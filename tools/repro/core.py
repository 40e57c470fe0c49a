"""The machinery of ``tools/reproduce.py``: a paper's claims, the worlds it is run in, one
``cosim sweep`` over them, and the tables that set them side by side.

A paper is one module ``tools/repro/paperNNN.py`` holding ``PAPER = Paper(...)`` (see
``/work/notes/reproduce.md`` or docs/paper_worlds.md, "Reproducing a paper"). Everything numeric
comes from cosim's own machinery: the sweep (:mod:`cosim.sweep`: every policy side by side in one
run, ``results.parquet``, ``paired.csv``) and :mod:`cosim.stats` (per-seed paired differences,
Student-t 95 % half-widths, paired t-tests, Holm).

**Between worlds.** Within a world two policies are paired: they served the same requests in one
run. Two worlds share nothing but the seed's number, so what realistic traffic changes is taken
per seed *number*: for seed s, ``d_s = X(world, s) - X(reference world, s)`` where X is a
policy's metric (its level), its paired gap to the baseline (policy - baseline in that run), or
its rank among the policies in that run; mean and t-interval over the seeds. The two runs of a
pair are independent, so this is a two-sample comparison arranged in pairs (valid, with n - 1
degrees of freedom; it removes nothing the worlds share, because they share nothing).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from cosim.stats import fmt, holm, mean_ci

ROOT = Path(__file__).resolve().parents[2]


# -- what a paper entry is made of ----------------------------------------------------------
@dataclass
class World:
    """One column of the comparison: a scenario file and what this world alone sets."""

    name: str  # a folder-safe name (the sweep's scenario label): "paper", "grid6", "town"
    scenario: str  # path relative to the project root
    label: str  # the column header
    set: dict = field(default_factory=dict)  # overrides of this world only (e.g. its vehicle count)
    #: the world the "what realistic traffic changed" columns compare against (None: this is one)
    reference: str | None = None


@dataclass
class Metric:
    """A summary number of the layer's per-policy block (a ``results.parquet`` column, or one
    ``Paper.derive`` adds)."""

    column: str
    label: str
    lower_is_better: bool = True
    digits: int = 3
    #: the paper's published value per policy (where the paper states one)
    published: dict = field(default_factory=dict)
    #: compared across worlds (a per-request or per-task quantity; totals depend on the load)
    across: bool = True
    #: plotted as a gap relative to the baseline's mean (False: the gap itself, e.g. a metric that is
    #: already a difference to the baseline)
    relative: bool = True
    #: a per-task latency (the mean of the layer's task table's ``latency_s`` over each policy's
    #: completed tasks): an ``order``, ``relative`` or gap ``trend`` claim on it is judged on the
    #: task-level paired differences of its two policies (:func:`task_pairs`, cosim.pairing over
    #: the tasks both completed in one run), never on the per-policy means (docs/comparisons.md)
    paired: bool = False


@dataclass
class Claim:
    """A sentence of the paper, judged in each world. ``kind``:

    * ``order``: ``better`` beats ``worse`` on ``metric`` (per-seed paired gap worse - better,
      flipped for a metric where higher is better);
    * ``trend``: ``policy``'s ``metric`` rises (``direction`` = +1) or falls (-1) along grid axis
      ``axis`` (per seed: the value at the axis' last point minus its first); with ``better``
      set, the gap ``policy - better`` does (e.g. "the advantage of VIDI grows with K");
    * ``relative``: ``policy`` changes ``metric`` against ``better`` (the baseline) by
      ``value`` (a fraction, e.g. -0.25): ours is the per-seed (policy - baseline) / baseline.

    On a ``paired`` metric (:attr:`Metric.paired`, a per-task latency) the per-seed values of
    ``order``, ``relative`` and a gap ``trend`` are the task-level paired differences of the two
    policies named (:func:`task_pairs`: over the tasks both completed in that seed's run; relative
    to ``better``'s latency over the same tasks), not differences of the per-policy means.

    ``at``: the grid point(s) it is judged at ({} = each point). ``why``: our explanation where it
    does not hold (a default, an ambiguity, a defect of the paper), written after finding out.
    """

    text: str
    kind: str
    metric: str
    better: str = ""
    worse: str = ""
    policy: str = ""
    axis: str = ""
    direction: int = -1
    value: float | None = None
    at: dict = field(default_factory=dict)
    why: str = ""


@dataclass
class Experiment:
    """One sweep: a grid over every world (the same keys in each), and the claims it judges."""

    name: str
    grid: dict = field(default_factory=dict)
    set: dict = field(default_factory=dict)
    claims: list = field(default_factory=list)
    #: the per-metric tables at every grid point (False: at ``detail``; the claims are judged at
    #: every point either way)
    all_points: bool = False
    #: the grid point of the per-metric tables and the figure (None: the grid's first point)
    detail: dict | None = None


@dataclass
class Paper:
    key: str  # "002"
    title: str
    layer: str
    baseline: str  # the policy paired gaps are taken against (the paper's proposal)
    policies: list  # in the paper's order
    worlds: list  # [World, ...]; the first is the paper's world
    metrics: list  # [Metric, ...]
    experiments: list  # [Experiment, ...]
    #: pins for every world: the layer's table as the SUMO scenario has it, plus what the paper fixes
    set: dict = field(default_factory=dict)
    seeds: int = 10
    end_s: float = 300.0
    #: results.parquet rows (one per seed, world, grid point, policy) -> the same with derived columns
    derive: Callable | None = None
    #: extra Markdown sections for the docs (the paper's published numbers, shares, ...)
    extra: Callable | None = None
    doc: str = ""  # docs file whose generated section reproduce.py rewrites
    notes: list = field(default_factory=list)  # lines printed under the tables


# -- running ----------------------------------------------------------------------------------
def toml_value(v: Any) -> str:
    """A TOML value (inline tables for dicts)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")


def layer_pins(scenario: str, layer: str) -> dict:
    """``layers.<layer>.<key>`` = value for every key of ``layer``'s table in ``scenario`` (so that
    every world runs the layer exactly as the SUMO scenario configures it)."""
    from cosim import config

    table = config.load(ROOT / scenario).layers.get(layer, {})
    return {f"layers.{layer}.{k}": v for k, v in table.items()}


def sweep_file(paper: Paper, exp: Experiment, out: Path, seeds: int, end_s: float) -> Path:
    """Write the experiment's sweep file (every world one scenario entry) and return it."""
    lines = [f"# tools/reproduce.py {paper.key}, experiment {exp.name}: {paper.title}", "[sweep]",
             f"name = {json.dumps(f'reproduce-{paper.key}-{exp.name}')}", "scenarios = ["]
    for w in paper.worlds:
        lines.append(f"  {{ file = {json.dumps(str(ROOT / w.scenario))}, name = {json.dumps(w.name)}, "
                     f"set = {toml_value(w.set)} }},")
    lines += ["]", f"seeds = {seeds}", f"end_s = {end_s:g}",
              f"baseline = {{ {paper.layer} = {json.dumps(paper.baseline)} }}", "", "[set]"]
    for k, v in {**paper.set, **exp.set}.items():
        if k in exp.grid:  # a pin of the layer's table that this experiment varies
            continue
        lines.append(f"{json.dumps(k)} = {toml_value(v)}")
    lines += ["", "[grid]"]
    for k, v in exp.grid.items():
        lines.append(f"{json.dumps(k)} = {toml_value(v)}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{exp.name}.sweep.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_experiment(paper: Paper, exp: Experiment, out: Path, seeds: int, end_s: float, jobs: int | None,
                   progress: bool = True) -> Path:
    """Run (or resume) the experiment's sweep; returns its results folder."""
    from cosim import sweep

    path = sweep_file(paper, exp, out, seeds, end_s)
    res_dir = out / exp.name
    res = sweep.execute(sweep.load(path), res_dir, jobs=jobs, progress=progress)
    if res["completed"] != res["cells"]:
        raise SystemExit(f"{res_dir}: {res['cells'] - res['completed']} of {res['cells']} runs did not complete "
                         "(see cells.csv)")
    return res_dir


# -- reading ----------------------------------------------------------------------------------
def results(paper: Paper, res_dir: Path) -> pd.DataFrame:
    """The layer's rows of the sweep (one per world, grid point, seed and policy), derived columns added."""
    res = pd.read_parquet(res_dir / "results.parquet")
    res = res[res["layer"] == paper.layer].copy()
    res["world"] = res["scenario"]
    res.attrs["dir"] = str(res_dir)  # where each run's tables are (cells/<cell>/), for a paper's extra
    if paper.derive is not None:
        res = paper.derive(res)
        res.attrs["dir"] = str(res_dir)
    return res


def grid_keys(exp: Experiment) -> list[str]:
    return list(exp.grid)


def points(res: pd.DataFrame, exp: Experiment) -> list[dict]:
    """The grid points, in the grid's order ({} once for no grid)."""
    keys = grid_keys(exp)
    if not keys:
        return [{}]
    import itertools

    from cosim.sweep import _cellvalue

    return [dict(zip(keys, (_cellvalue(v) for v in vals))) for vals in itertools.product(*exp.grid.values())]


def detail_point(res: pd.DataFrame, exp: Experiment) -> dict:
    """The grid point the per-metric tables and the figure show."""
    from cosim.sweep import _cellvalue

    pts = points(res, exp)
    if not exp.detail:
        return pts[0]
    want = {k: _cellvalue(v) for k, v in exp.detail.items()}
    return next(p for p in pts if all(p.get(k) == v for k, v in want.items()))


def at(res: pd.DataFrame, point: dict) -> pd.DataFrame:
    for k, v in point.items():
        res = res[res[k] == v]
    return res


def per_seed(res: pd.DataFrame, world: str, metric: str, policies: list[str]) -> pd.DataFrame:
    """seed x policy table of ``metric`` in ``world``."""
    w = res[res["world"] == world]
    return w.pivot_table(index="seed", columns="policy", values=metric, aggfunc="first").reindex(columns=policies)


def ranks(table: pd.DataFrame, lower_is_better: bool) -> pd.DataFrame:
    """Per seed, each policy's rank (1 = best; ties share the mean rank)."""
    return table.rank(axis=1, ascending=lower_is_better, method="average")


def stat(values) -> dict:  # noqa: ANN001
    return mean_ci(np.asarray(values, dtype=float))


def judge(d: dict, p_holm: float | None, sign_good: int = 1) -> str:
    """holds / reversed / not resolved (at 5 %, Holm-adjusted) for a difference whose good sign
    is ``sign_good``."""
    p = d["p"] if p_holm is None else p_holm
    if not math.isfinite(d["mean"]) or d["n"] < 2:
        return "n/a"
    if d["mean"] == 0 and (not math.isfinite(d["ci95"]) or d["ci95"] == 0):
        return "tie (identical)"
    if math.isfinite(p) and p <= 0.05:
        return "holds" if d["mean"] * sign_good > 0 else "reversed"
    return "not resolved"


def _level_or_gap(t: pd.DataFrame, claim: Claim) -> pd.Series:
    """A trend's per-seed value: the policy's metric, or its gap to ``claim.better`` when set."""
    return t[claim.policy] - t[claim.better] if claim.better else t[claim.policy]


def task_policy(rows: pd.DataFrame, policy: str, metric: str) -> str:
    """The policy whose task rows stand behind ``policy``'s summary rows: itself, or for a
    pseudo-policy a paper's ``derive`` adds (paper 001's best benchmark) the policy it copies
    for ``metric``, named in column ``best_of.<metric>``."""
    col = f"best_of.{metric}"
    if col in rows:
        named = rows.loc[rows["policy"] == policy, col].dropna()
        if len(named):
            return str(named.iloc[0])
    return policy


def task_pairs(paper: Paper, res: pd.DataFrame, world: str, policy: str, against: str, metric: str,
               relative: bool = False) -> pd.Series:
    """Per seed (index): ``policy`` − ``against`` over the tasks both completed in that seed's run
    (the mean of the task-level latency differences, :func:`cosim.pairing.latency_pairs` on the
    run's task table, ``cells/<cell>/<task table>.parquet`` of the sweep in ``res.attrs["dir"]``);
    ``relative``: that mean divided by ``against``'s mean latency over the same tasks. ``res``: one
    grid point's rows. A seed where they share no completed task is NaN."""
    from cosim import pairing, registry
    from cosim.results import read_columns

    table = registry.layer_class(paper.layer).task_table
    if table is None:
        raise ValueError(f"layer {paper.layer!r} has no task table: a paired metric cannot be judged task by task")
    w = res[res["world"] == world]
    out = {}
    for seed, g in w.groupby("seed", sort=True):
        a, b = (task_policy(g, q, metric) for q in (policy, against))
        cells = set(g.loc[g["policy"].isin([policy, against]), "cell"])
        if len(cells) != 1:
            raise ValueError(f"{world}, seed {seed}: {policy} and {against} not in one run ({sorted(cells)})")
        path = Path(res.attrs["dir"]) / "cells" / str(cells.pop()) / f"{table}.parquet"
        lp, lb = pairing.latency_pairs(read_columns(path, pairing.COLUMNS), a, b)
        if not len(lp):
            out[seed] = math.nan
            continue
        d = float(np.mean(lp - lb))
        out[seed] = d / float(np.mean(lb)) if relative else d
    return pd.Series(out, dtype=float)


def claim_value(paper: Paper, claim: Claim, res: pd.DataFrame, world: str, exp: Experiment) -> list[tuple[dict, dict]]:
    """(point, the per-seed statistic of the claim in ``world``) for each grid point it is judged at.
    The statistic's good sign is +1."""
    metric = next(m for m in paper.metrics if m.column == claim.metric)
    sign = -1.0 if metric.lower_is_better else 1.0  # +: the claimed direction
    out = []
    if claim.kind == "trend":
        others = {k: v for k, v in claim.at.items() if k != claim.axis}
        pts = [p for p in points(res, exp) if all(p.get(k) == v for k, v in others.items())]
        groups: dict = {}
        for p in pts:
            groups.setdefault(tuple((k, v) for k, v in p.items() if k != claim.axis), []).append(p)
        for key, ps in groups.items():
            first, last = ps[0], ps[-1]
            if metric.paired and claim.better:  # the gap, task by task in each run
                a, b = (task_pairs(paper, at(res, q), world, claim.policy, claim.better, claim.metric)
                        for q in (first, last))
            else:
                a, b = (_level_or_gap(per_seed(at(res, q), world, claim.metric,
                                               [claim.policy, *([claim.better] if claim.better else [])]), claim)
                        for q in (first, last))
            d = (b - a).dropna() * claim.direction
            out.append((dict(key) | {claim.axis: f"{first[claim.axis]} -> {last[claim.axis]}"}, stat(d)))
        return out
    for p in points(res, exp):
        if any(p.get(k) != v for k, v in claim.at.items()):
            continue
        r = at(res, p)
        if claim.kind == "order":
            if metric.paired:  # worse - better over the tasks both completed, per seed
                d = task_pairs(paper, r, world, claim.worse, claim.better, claim.metric) * -sign
            else:
                t = per_seed(r, world, claim.metric, [claim.better, claim.worse])
                d = (t[claim.worse] - t[claim.better]) * -sign  # > 0: better is better
            out.append((p, stat(d.dropna())))
        elif claim.kind == "relative":
            if metric.paired:
                rel = task_pairs(paper, r, world, claim.policy, claim.better, claim.metric, relative=True)
            else:
                t = per_seed(r, world, claim.metric, [claim.policy, claim.better])
                rel = (t[claim.policy] - t[claim.better]) / t[claim.better]
            out.append((p, stat(rel.replace([np.inf, -np.inf], np.nan).dropna())))
        else:
            raise ValueError(f"claim kind {claim.kind!r}")
    return out


# -- tables -----------------------------------------------------------------------------------
def md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in [header, *rows]]
    return "\n".join(["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(r) + " |" for r in esc[1:])])


def point_label(point: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]} = {v}" for k, v in point.items()) or "the one point"


def claims_table(paper: Paper, exp: Experiment, res: pd.DataFrame) -> str:
    """One row per claim and grid point: the verdict in each world (Holm over every claim of the
    experiment at every grid point, within a world) and our explanation."""
    worlds = [w for w in paper.worlds if w.name in set(res["world"])]
    cells: dict = {}
    for w in worlds:
        stats = []
        for ci, c in enumerate(exp.claims):
            for p, st in claim_value(paper, c, res, w.name, exp):
                stats.append((ci, json.dumps(p, default=str), st))
        adj = holm([st["p"] for _, _, st in stats])  # every claim, relative ones too (docs/paper_worlds.md)
        for (ci, pk, st), p_h in zip(stats, adj):
            cells[(ci, pk, w.name)] = (st, p_h)
    rows = []
    for ci, c in enumerate(exp.claims):
        pks = sorted({pk for (i, pk, _) in cells if i == ci}, key=lambda s: list(cells).index(
            next(k for k in cells if k[0] == ci and k[1] == s)))
        for pk in pks:
            row = [c.text, point_label(json.loads(pk))]
            for w in worlds:
                if (ci, pk, w.name) not in cells:
                    row.append("–")
                    continue
                st, p_h = cells[(ci, pk, w.name)]
                metric = next(m for m in paper.metrics if m.column == c.metric)
                if c.kind == "relative":
                    txt = fmt(100 * st["mean"], 100 * st["ci95"], p_h, 1).replace(" ±", " % ±", 1) \
                        + f" (paper {100 * c.value:+.1f} %)"
                    verdict = ("tie (identical)" if st["mean"] == 0 and st["ci95"] == 0 else
                               "same sign" if st["mean"] * c.value > 0 and p_h <= 0.05 else
                               "opposite sign" if p_h <= 0.05 else "not resolved")
                else:
                    txt = fmt(st["mean"], st["ci95"], p_h, metric.digits)
                    verdict = judge(st, p_h)
                row.append(f"**{verdict}**: {txt}")
            row.append(c.why or "")
            rows.append(row)
    return md_table(["the paper", "at", *[w.label for w in worlds], "why (where it does not hold)"], rows)


def comparison_table(paper: Paper, exp: Experiment, res: pd.DataFrame, point: dict, metric: Metric) -> str:
    """Per policy: the paper's value, ours in each world (mean over seeds; paired gap to the
    baseline ± 95 %, Holm over the policies), and what each realistic world changed against
    its reference (level, gap and rank, per seed number)."""
    r = at(res, point)
    worlds = [w for w in paper.worlds if w.name in set(r["world"])]
    pols = [p for p in paper.policies if p in set(r["policy"])]
    base = paper.baseline
    tabs = {w.name: per_seed(r, w.name, metric.column, pols) for w in worlds}
    gaps = {}
    for w in worlds:
        t = tabs[w.name]
        sts = {p: stat((t[p] - t[base]).dropna()) for p in pols if p != base}
        for p, h in zip(sts, holm([s["p"] for s in sts.values()])):
            sts[p] = sts[p] | {"p_holm": h}
        gaps[w.name] = sts
    header = ["policy", "paper"] + [w.label for w in worlds]
    changed = [w for w in worlds if w.reference and w.reference in tabs and metric.across]
    header += [f"{w.label} − {next(x.label for x in worlds if x.name == w.reference)}: level; gap to {base}; rank"
               for w in changed]
    rows = []
    d = metric.digits
    for p in pols:
        row = [p, f"{metric.published[p]:.{d}g}" if p in metric.published else "–"]
        for w in worlds:
            t = tabs[w.name]
            mean = t[p].mean()
            rank = ranks(t, metric.lower_is_better)[p].mean()
            cell = f"{mean:.{d}f} (rank {rank:.1f})"
            if p != base:
                g = gaps[w.name][p]
                cell += f"; {fmt(g['mean'], g['ci95'], g['p_holm'], d)}"
            row.append(cell)
        for w in changed:
            a, b = tabs[w.name], tabs[w.reference]
            seeds = a.index.intersection(b.index)
            lvl = stat((a.loc[seeds, p] - b.loc[seeds, p]).dropna())
            ga = (a.loc[seeds, p] - a.loc[seeds, base]) - (b.loc[seeds, p] - b.loc[seeds, base])
            rk = ranks(a.loc[seeds], metric.lower_is_better)[p] - ranks(b.loc[seeds], metric.lower_is_better)[p]
            rkst = stat(rk.dropna())
            cell = fmt(lvl["mean"], lvl["ci95"], None, d)
            if p != base:
                g = stat(ga.dropna())
                cell += f"; {fmt(g['mean'], g['ci95'], None, d)}"
            else:
                cell += "; –"
            cell += f"; {rkst['mean']:+.1f} ± {rkst['ci95']:.1f}" if math.isfinite(rkst["ci95"]) else \
                f"; {rkst['mean']:+.1f}"
            row.append(cell)
        rows.append(row)
    return md_table(header, rows)


def orderings(paper: Paper, res: pd.DataFrame, point: dict, metric: Metric) -> list[str]:
    """The paper's ordering and each world's (by the mean over seeds), best first."""
    r = at(res, point)
    out = []
    pub = metric.published
    if pub:
        order = sorted(pub, key=lambda p: pub[p] if metric.lower_is_better else -pub[p])
        out.append(f"paper: {' < '.join(order) if metric.lower_is_better else ' > '.join(order)}")
    for w in paper.worlds:
        t = per_seed(r, w.name, metric.column, [p for p in paper.policies if p in set(r["policy"])])
        if t.empty:
            continue
        m = t.mean()
        keep = [p for p in m.index if not pub or p in pub]
        order = sorted(keep, key=lambda p: m[p] if metric.lower_is_better else -m[p])
        sep = " < " if metric.lower_is_better else " > "
        out.append(f"{w.label}: {sep.join(order)}")
    return out


def differing_keys(paper: Paper, exp: Experiment) -> str:
    """Every configuration key whose value differs between the worlds (after every pin), as a table."""
    from cosim import config

    cfgs = {}
    for w in paper.worlds:
        cfg = config.load(ROOT / w.scenario)
        cfg = config.apply_overrides(cfg, {**paper.set, **exp.set, **w.set, "scenario.end_s": paper.end_s},
                                     where=f"world {w.name}")
        cfgs[w.name] = _flat(config.to_dict(cfg))
    keys = sorted(set().union(*cfgs.values()))
    rows = []
    for k in keys:
        # a synthetic source's own keys mean nothing to SUMO's traffic
        vals = [cfgs[w.name].get(k, "–") if not (k.startswith("traffic.") and k != "traffic.source"
                                                  and cfgs[w.name].get("traffic.source") == "sumo")
                else "(unused: SUMO's demand)" for w in paper.worlds]
        if len({json.dumps(v, sort_keys=True, default=str) for v in vals}) > 1:
            rows.append([f"`{k}`", *(_short(v) for v in vals)])
    return md_table(["key", *[w.label for w in paper.worlds]], rows)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and not (prefix.startswith("layers.") and prefix.count(".") >= 2):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(v: Any) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    if isinstance(v, str) and "/" in v:
        s = os.path.relpath(v, ROOT) if os.path.isabs(v) else v
    return s if len(s) <= 60 else s[:57] + "..."


def report(paper: Paper, exp: Experiment, res: pd.DataFrame) -> str:
    """The experiment's Markdown: the claims, then per grid point and metric the side-by-side table."""
    parts = [f"#### {paper.key}: {exp.name}", "", claims_table(paper, exp, res), ""]
    for p in points(res, exp) if exp.all_points else [detail_point(res, exp)]:
        for m in paper.metrics:
            parts += [f"**{m.label}** ({point_label(p)}; {res['seed'].nunique()} seeds)", "",
                      comparison_table(paper, exp, res, p, m), ""]
            parts += ["Orderings (means): " + "; ".join(orderings(paper, res, p, m)), ""]
    return "\n".join(parts)


# -- plotting ---------------------------------------------------------------------------------
def plot(paper: Paper, exp: Experiment, res: pd.DataFrame, path: Path) -> Path | None:
    """One panel per metric: each policy's gap to the baseline relative to the baseline's mean
    (so worlds of different loads share an axis), per world with its 95 % interval, and the
    paper's published relative gap (a cross). At the experiment's ``detail`` grid point."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    p = detail_point(res, exp)
    r = at(res, p)
    worlds = [w for w in paper.worlds if w.name in set(r["world"])]
    pols = [q for q in paper.policies if q in set(r["policy"]) and q != paper.baseline]
    metrics = paper.metrics
    ncols = min(4, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols + 0.5, 3.3 * nrows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    width = 0.8 / max(len(worlds), 1)
    for ax, m in zip(axes.flat, metrics):
        x = np.arange(len(pols))
        lo, hi = (-5.0, 5.0) if m.relative else (0.0, 0.0)
        for i, w in enumerate(worlds):
            t = per_seed(r, w.name, m.column, [paper.baseline, *pols])
            scale = (abs(t[paper.baseline].mean()) or 1.0) / 100.0 if m.relative else 1.0
            sts = [stat((t[q] - t[paper.baseline]).dropna() / scale) for q in pols]
            ys = np.array([s["mean"] for s in sts])
            es = np.array([s["ci95"] if math.isfinite(s["ci95"]) else 0.0 for s in sts])
            ax.bar(x + (i - (len(worlds) - 1) / 2) * width, ys, width, yerr=es, label=w.label, capsize=2)
            if np.isfinite(ys).any():
                lo, hi = min(lo, np.nanmin(ys - es)), max(hi, np.nanmax(ys + es))
        if hi - lo <= 0:
            lo, hi = -1.0, 1.0
        pad = 0.15 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        pub = m.published
        if m.relative and pub and paper.baseline in pub and pub[paper.baseline]:
            ys = np.array([100 * (pub[q] - pub[paper.baseline]) / abs(pub[paper.baseline]) if q in pub else np.nan
                           for q in pols])
            ax.plot(x, np.clip(ys, lo, hi), "kx", markersize=8, label="paper")
            for xi, y in zip(x, ys):  # a published gap beyond the bars' range: at the edge, with its value
                if np.isfinite(y) and not lo <= y <= hi:
                    ax.annotate(f"{y:+.0f} %", (xi, hi if y > hi else lo), fontsize=6, ha="left", rotation=90,
                                va="top" if y > hi else "bottom")
        ax.set_ylim(lo, hi)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xticks(x, pols, rotation=45, ha="right", fontsize=7)
        ax.set_title(m.label, fontsize=8)
        ax.set_ylabel(f"(policy − {paper.baseline}) / {paper.baseline} [%]" if m.relative else
                      f"policy − {paper.baseline}", fontsize=7)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"paper {paper.key}: {point_label(p)}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- the docs -----------------------------------------------------------------------------------
def begin_marker(key: str) -> str:
    return f"<!-- reproduce.py {key}: generated, edits are overwritten -->"


def end_marker(key: str) -> str:
    return f"<!-- reproduce.py {key}: end -->"


def write_doc(paper: Paper, text: str) -> Path:
    """Replace the generated section of ``paper.doc`` (between the markers; appended if absent)."""
    path = ROOT / paper.doc
    doc = path.read_text()
    b, e = begin_marker(paper.key), end_marker(paper.key)
    block = f"{b}\n{text.rstrip()}\n{e}"
    if b in doc and e in doc:
        doc = doc[:doc.index(b)] + block + doc[doc.index(e) + len(e):]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)
    return path
