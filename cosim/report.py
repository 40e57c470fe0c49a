"""``cosim report RUN_DIR``: a one-page figure of a single run (``report.png`` and ``report.pdf``).

Panels: the map (edges, RSU discs, vehicle density as a heat map of vehicle-seconds per hexagon,
handovers as red dots — where a vehicle's serving RSU changed between two of its slots);
predicted against realised dwell (scatter) and the error's CDF (the rows ``summary.json``'s
``dwell_prediction`` summarises: served, uncapped, uncensored); then per layer with a task table
the policies' latency CDFs (over the uncensored tasks, as the success rate; a task that finished
past its deadline counts at its latency, so a curve may end above its rate) and success rates side
by side, each rate with its paired difference to the layer's baseline (``vs_baseline``). Read from the results
folder and the network file alone, like ``cosim view``.
"""

from __future__ import annotations

import math

from pathlib import Path

import numpy as np

from cosim.analysis import dwell_pairs_from_parquet
from cosim.errors import CosimError
from cosim.palette import hex_color, rsu_color
from cosim.plot import plain, pyplot
from cosim.recorder import claim_output
from cosim.results import COVERAGE_COLUMNS, load

#: the titles of the fixed panels (the layers' panels follow, two per layer)
FIXED_PANELS = ("map: vehicle density, RSU discs, handovers", "dwell: predicted vs realised",
                "dwell error CDF")


#: the map's title for a run without vehicle rows (output.coverage = false): its dwell panels are left out
NO_COVERAGE_MAP = "map: RSU discs (no vehicle rows: no coverage.parquet)"  # why: the dwell panel's note

#: the latency CDF's axis ends at this quantile of every completed task's latency (stated on it)
CDF_CLIP = 0.99


def _vs_baseline(policy: str, block) -> str:  # noqa: ANN001
    """A policy's paired success difference to the layer's baseline, task by task
    (``vs_baseline``'s ``success_diff ± success_diff_ci95``, :func:`cosim.stats.fmt`), on a second
    line under its rate; nothing for the baseline itself or without the block."""
    from cosim.stats import fmt

    vs = block.get("vs_baseline") if isinstance(block, dict) else None
    if not isinstance(vs, dict) or vs.get("success_diff") is None or vs.get("baseline") in (None, policy):
        return ""
    ci = vs.get("success_diff_ci95")
    return "\n" + fmt(float(vs["success_diff"]), math.nan if ci is None else float(ci))


def success_origin(rates) -> float:  # noqa: ANN001
    """Where the success-rate axis starts: 0 when some rate is below 0.5, else the lowest rate less
    a quarter of its distance to 1, rounded down to a tenth — so 0.89 and 0.97 look different."""
    rates = [r for r in rates if r == r]
    if not rates or min(rates) < 0.5:
        return 0.0
    lo = min(rates)
    if lo >= 1.0:  # every policy succeeded every time: a tenth of axis below the bars
        return 0.9
    return max(0.0, math.floor((lo - 0.25 * (1.0 - lo)) * 10.0 + 1e-9) / 10.0)


def handovers(cov) -> np.ndarray:  # noqa: ANN001 - DataFrame
    """(k, 2) positions where a vehicle's serving RSU changed from one RSU to another between
    two consecutive rows of it."""
    if cov.empty:
        return np.zeros((0, 2))
    d = cov.sort_values(["vehicle", "slot"], kind="stable")
    veh = d["vehicle"].astype(str).to_numpy()
    rsu = d["rsu"].astype(object).to_numpy()
    has = np.array([isinstance(r, str) for r in rsu])
    same_v = veh[1:] == veh[:-1]
    change = same_v & has[1:] & has[:-1] & (rsu[1:] != rsu[:-1])
    xy = d[["x", "y"]].to_numpy()[1:]
    return xy[change]


def report(run_dir: str | Path, out: str | Path | None = None, net: str | Path | None = None) -> tuple[list[Path], list[str]]:
    """Write ``report.png`` and ``report.pdf`` (default into RUN_DIR); returns (paths, panel titles).
    Names from the results (scenario, layers, policies) are drawn as they are (:func:`plain`), so a
    policy called ``$\\frac{$`` is text, not a formula that fails to parse; matplotlib's own tick
    labels keep their mathtext (10², …)."""
    plt = pyplot("cosim report")  # first: without matplotlib, the one line saying how to install it
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Circle

    from cosim.world.network import edge_shapes

    res = load(run_dir)
    shown = res.shown(net)
    run, summary, rsus = res.path, shown.summary, shown.rsus
    if shown.no_coverage:  # output.coverage = false: the map without vehicles, no dwell panels; the layers' all
        import pandas as pd

        cov = pd.DataFrame({c: pd.Series(dtype=float if c in ("x", "y", "time_s") else object)
                            for c in COVERAGE_COLUMNS})
    else:
        cov = res.table("coverage", COVERAGE_COLUMNS)
    tables = res.task_tables()
    layers, metric_rows = [], []  # layers with tasks: latency CDF and success; without: their headline metrics
    for name, cls in res.layers().items():
        if name in tables and not tables[name].empty:
            layers.append((name, tables[name]))
        elif cls.task_table is None and cls.headline_metrics:
            block = {p: v for p, v in (summary.get("layers") or {}).get(name, {}).items() if isinstance(v, dict)}
            if block:
                metric_rows.append((name, cls.headline_metrics[:3], block))
    rows = 1 + len(layers) + len(metric_rows)
    fig = plt.figure(figsize=(13, 4.2 * rows))
    gs = fig.add_gridspec(rows, 3)
    titles = []

    # -- map ---------------------------------------------------------------------------------
    ax = fig.add_subplot(gs[0, 0])
    ax.add_collection(LineCollection(edge_shapes(shown.net), colors="#888", linewidths=0.6))
    if len(cov):
        hb = ax.hexbin(cov["x"], cov["y"], gridsize=40, mincnt=1, cmap="Greys", bins="log",
                       C=np.full(len(cov), float(summary.get("slot_s") or 1.0)), reduce_C_function=np.sum)
        fig.colorbar(hb, ax=ax, label="vehicle-seconds")
    for i, r in enumerate(rsus):
        col = hex_color(rsu_color(i))
        ax.add_patch(Circle((r["x"], r["y"]), r["radius_m"], fill=False, color=col, lw=1.5))
        ax.plot(r["x"], r["y"], "s", color=col, ms=5)
    if not shown.no_coverage:  # handovers are read from the vehicle rows
        ho = handovers(cov)
        ax.plot(ho[:, 0], ho[:, 1], ".", color="#d62728", ms=3, label=f"handovers ({len(ho)})")
        ax.legend(loc="lower left", fontsize=7)
    ax.set_aspect("equal")
    ax.autoscale_view()
    t = FIXED_PANELS[0] if not shown.no_coverage else NO_COVERAGE_MAP
    ax.set_title(t, fontsize=9)
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    titles.append(t)

    # -- dwell ------------------------------------------------------------------------------
    if shown.no_coverage:  # the dwell comparison is made from the vehicle rows: said where it would be
        ax = fig.add_subplot(gs[0, 1:])
        ax.axis("off")
        ax.text(0.5, 0.5, f"no dwell panels: {shown.no_coverage}", ha="center", va="center", fontsize=9,
                color="#555", wrap=True)
    else:
        _dwell_panels(fig, gs, res, run, summary, titles)
    _layer_panels(fig, gs, layers, metric_rows, titles, summary)
    return _finish(fig, plt, run, out, summary, rsus, shown, titles)


def _dwell_panels(fig, gs, res, run, summary, titles) -> None:  # noqa: ANN001
    """Predicted against realised dwell, and the error's CDF (the first row's second and third panels)."""
    pred, real, srv, _ = dwell_pairs_from_parquet(run / "coverage.parquet", float(summary.get("slot_s") or 1.0))
    cap = float(res.settings.get("world", {}).get("dwell_cap_s", 600.0))
    use = (srv >= 0) & np.isfinite(real) & (pred < cap - 1e-9)  # the rows analysis.dwell_error compares
    ax = fig.add_subplot(gs[0, 1])
    if use.any():
        lim = float(max(pred[use].max(), real[use].max()))
        ax.plot(real[use], pred[use], ".", ms=2, alpha=0.3)
        ax.plot([0, lim], [0, lim], "k--", lw=1, label="exact")
        ax.legend(fontsize=7)
    ax.set_xlabel("realised dwell [s]")
    ax.set_ylabel("predicted dwell [s]")
    ax.set_title(FIXED_PANELS[1], fontsize=9)
    titles.append(FIXED_PANELS[1])
    ax = fig.add_subplot(gs[0, 2])
    if use.any():
        err = np.sort(np.abs(pred[use] - real[use]))
        ax.plot(err, np.arange(1, len(err) + 1) / len(err))
        ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("|predicted - realised| [s]")
    ax.set_ylabel("fraction of rows")
    ax.set_title(FIXED_PANELS[2] + f" ({int(use.sum())} rows)", fontsize=9)
    titles.append(FIXED_PANELS[2])


def _layer_panels(fig, gs, layers, metric_rows, titles, summary) -> None:  # noqa: ANN001
    """Per layer with tasks its latency CDF (over the uncensored tasks) and success rates, each with
    its ``vs_baseline`` success difference from ``summary``; per layer without, its headline metrics."""
    for row, (name, df) in enumerate(layers, start=1):
        ax = fig.add_subplot(gs[row, :2])
        for policy, g in df.groupby("policy", sort=False):
            lat = np.sort(g["latency_s"].to_numpy(dtype=float))
            lat = lat[np.isfinite(lat)]
            ended = len(g) - int((g["outcome"] == "censored").sum()) if "outcome" in g else len(g)
            if len(lat) and ended:  # over the tasks with an outcome, as the success rate (censored: none)
                ax.step(lat, np.arange(1, len(lat) + 1) / ended, where="post", label=plain(policy))
        every = df["latency_s"].to_numpy(dtype=float)
        every = every[np.isfinite(every)]
        if len(every):  # one slow task must not squeeze the rest into the first tenth of the axis
            clip = float(np.quantile(every, CDF_CLIP))
            beyond = int((every > clip).sum())
            ax.set_xlim(0.0, clip * 1.02 if clip > 0 else 1.0)
            ax.set_xlabel(f"latency [s] (axis to the {100 * CDF_CLIP:g}th percentile, {clip:.3g} s; "
                          f"{beyond} completed task(s) beyond)")
        else:
            ax.set_xlabel("latency [s]")
        ax.set_ylabel("fraction of uncensored tasks\ncompleted by then (late ones too)")
        ax.legend(fontsize=7, ncol=2)
        t = f"{name}: latency CDF per policy"
        ax.set_title(plain(t), fontsize=9)
        titles.append(t)
        ax = fig.add_subplot(gs[row, 2])
        ended = df[df["outcome"] != "censored"] if "outcome" in df else df  # censored: no outcome
        rate = ended.groupby("policy", sort=False)["success"].mean()
        vals = rate.to_numpy(dtype=float)
        bars = ax.bar(range(len(rate)), vals, color="#4c72b0")
        block = (summary.get("layers") or {}).get(name, {})
        diffs = [_vs_baseline(p, block.get(p)) for p in rate.index]
        ax.bar_label(bars, labels=[f"{v:.3f}" + d for v, d in zip(vals, diffs)], fontsize=6, padding=1)
        base = next((b["vs_baseline"].get("baseline") for b in block.values()
                     if isinstance(b, dict) and isinstance(b.get("vs_baseline"), dict)), None)
        if base:
            ax.set_xlabel(f"under each rate: − {plain(base)} over the tasks both were given, ± 95 %", fontsize=7)
        ax.set_xticks(range(len(rate)), [plain(p) for p in rate.index], rotation=45, ha="right", fontsize=8)
        low = success_origin(vals)
        ax.set_ylim(low, 1.0 + (0.3 if any(diffs) else 0.04) * (1.0 - low))  # room for a second label line
        ax.set_ylabel("success rate" + (f" (axis from {low:g})" if low > 0 else ""))
        t = f"{name}: success rate per policy"
        ax.set_title(plain(t), fontsize=9)
        titles.append(t)
    for row, (name, metrics, block) in enumerate(metric_rows, start=1 + len(layers)):
        for col, m in enumerate(metrics):  # a layer without tasks: each headline metric per entry
            ax = fig.add_subplot(gs[row, col])
            vals = np.array([np.nan if v.get(m.key) is None else float(v.get(m.key)) for v in block.values()])
            bars = ax.bar(range(len(block)), np.nan_to_num(vals), color="#55a868")
            ax.bar_label(bars, labels=["–" if v != v else f"{v:.{m.digits}f}" for v in vals], fontsize=6, padding=1)
            ax.set_xticks(range(len(block)), [plain(p) for p in block], rotation=45, ha="right", fontsize=8)
            ax.set_ylabel(plain(m.label))
            t = f"{name}: {m.label}"
            ax.set_title(plain(t), fontsize=9)
            titles.append(t)


def _finish(fig, plt, run, out, summary, rsus, shown, titles) -> tuple[list[Path], list[str]]:  # noqa: ANN001
    """The title, and the figure written as report.png and report.pdf."""
    fig.suptitle(f"{plain(summary.get('scenario') or run.name)}: seed {summary.get('seed')}, {summary.get('slots')} slots, "
                 f"{summary.get('vehicles_seen')} vehicles, {len(rsus)} RSUs"
                 + (f"\n{shown.incomplete}" if shown.incomplete else ""), fontsize=11,
                 color="#a60" if shown.incomplete else "black")
    fig.tight_layout()
    out_dir = Path(out) if out else run
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.png", out_dir / "report.pdf"]
    for p in paths:
        claim_output(run, p)
    meta = "; ".join([*titles, *([shown.incomplete] if shown.incomplete else [])])
    fig.savefig(paths[0], dpi=110, metadata={"Description": meta})
    fig.savefig(paths[1], metadata={"Subject": meta})
    plt.close(fig)
    if not paths[0].is_file():
        raise CosimError(f"{paths[0]}: not written")
    return paths, titles
