#!/usr/bin/env python3
"""Predicted vs realised dwell of every predictor, side by side on the same vehicles and slots.

One live SUMO run per (network, association rule). Every slot the world (built with
``dwell_model = "route"``) predicts each served vehicle's remaining time with its RSU by

* ``straight`` — eq. (12) along the current heading;
* ``idm``      — the IDM rollout of eqs. (8)-(11) along the current heading;
* ``route``    — the SUMO route walk at the learned per-edge mean speeds (the default);
* ``route-limit``, ``route-current`` — the same walk at the speed limits / the vehicle's own speed;

and the realised dwell is what the vehicle then did under the rule (cosim.analysis). The table is
computed over the rows every predictor could judge (served, realised dwell observed, no
prediction at the cap) after ``--warmup`` seconds: mean, median and p90 absolute error, bias (mean
of predicted - realised), and the mean absolute error split by predicted horizon.

    python tools/dwell_error.py                          # grid6 + the shipped OSM extract, both rules
    python tools/dwell_error.py --nets grid6 --association nearest --end 300

The OSM network is imported from sumo_nets/osm/ into a temporary folder first (``cosim
import-osm``). Writes ``--out``/dwell_error.csv and dwell_error.png and prints a markdown table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosim import config as cfgmod  # noqa: E402
from cosim.analysis import realised_dwell  # noqa: E402
from cosim.sources.sumo import SumoSource, sumo_command  # noqa: E402
from cosim.world import World, net_file_of, read_net  # noqa: E402
from cosim.world.routes import RouteDwell  # noqa: E402

MODELS = ("straight", "idm", "route", "route-limit", "route-current")
HORIZONS = (0.0, 15.0, 30.0, 60.0, 120.0, np.inf)  # predicted-dwell bins [s]
OSM = ROOT / "sumo_nets" / "osm" / "bad_hersfeld_centre.osm.xml.gz"


def scenario_of(net: str, tmp: Path) -> Path:
    if net == "grid6":
        return ROOT / "scenarios" / "grid6.toml"
    if net == "osm":
        subprocess.run([sys.executable, "-m", "cosim", "import-osm", str(OSM), "--name", "bad_hersfeld",
                        "--root", str(tmp)], check=True, capture_output=True)
        return tmp / "scenarios" / "bad_hersfeld.toml"
    return Path(net)


def run(scenario: Path, rule: str, end: float, tail: float) -> dict:
    """Rows (vehicle index, slot, time, serving RSU, each model's prediction) of one live run; the
    run goes on ``tail`` seconds after ``end`` so that late predictions can be judged."""
    cfg = cfgmod.load(scenario).replace(world={"dwell_model": "route", "association": rule})
    sc, wc = cfg.scenario, cfg.world
    world = World(cfg, read_net(net_file_of(sc.sumocfg)))
    extra = {f"route-{mode}": RouteDwell(world.net, world.rsus, world.grid.index, rule=rule, speed=mode,
                                         prior=wc.route_speed_prior, sample_m=wc.route_sample_m, cap_s=wc.dwell_cap_s)
             for mode in ("limit", "current")}
    src = SumoSource(sumo_command(sc.sumocfg, seed=sc.seed, end_s=end + tail + sc.slot_s,
                                  step_length_s=sc.step_length_s, extra=["--no-warnings"]))
    src.start()
    world.route_of = src.route_of
    cols: dict[str, list] = {k: [] for k in ("vehicle", "slot", "time_s", "rsu", *MODELS)}
    cpu = {m: 0.0 for m in MODELS}
    try:
        slot, t = 0, 0.0
        while t < end + tail - 1e-9:
            t += sc.slot_s
            snap = src.step_to(t)
            world.update(snap, slot=slot)
            n = len(snap)
            cols["vehicle"].append(world.vidx)
            cols["slot"].append(np.full(n, slot))
            cols["time_s"].append(np.full(n, snap.time_s))
            cols["rsu"].append(world.serving)
            judge = t <= end + 1e-9
            for m in MODELS:
                c0 = time.process_time()
                if not judge:
                    pred = np.full(n, np.nan)
                elif m == "route":
                    pred = world.predict_dwell("route")
                elif m in extra:
                    rd = extra[m]
                    rd.learn(world.edge_row, snap.speed)
                    pred = rd.predict(world.vidx, snap.ids, world.edge_row, snap.edge, snap.lane_pos, snap.x, snap.y,
                                      snap.speed, world.serving, world.route_of, world.time_s)[0]
                else:
                    pred = world.predict_dwell(m)
                cpu[m] += time.process_time() - c0
                cols[m].append(pred)
            slot += 1
    finally:
        src.close()
    out = {k: np.concatenate(v) for k, v in cols.items()}
    out["cpu_ms_per_slot"] = {m: 1e3 * cpu[m] / max(1, int(end / sc.slot_s)) for m in MODELS}
    out["slot_s"], out["cap_s"] = sc.slot_s, wc.dwell_cap_s
    return out


def evaluate(rows: dict, warmup: float) -> tuple[list[dict], list[dict]]:
    realised, arrived = realised_dwell(rows["vehicle"], rows["slot"], rows["time_s"], rows["rsu"], rows["slot_s"])
    cap = rows["cap_s"]
    use = (rows["rsu"] >= 0) & np.isfinite(realised) & (rows["time_s"] > warmup)
    for m in MODELS:
        use &= np.isfinite(rows[m]) & (rows[m] < cap - 1e-9)
    table, by_h = [], []
    for m in MODELS:
        err = rows[m][use] - realised[use]
        ae = np.abs(err)
        own = (rows["rsu"] >= 0) & np.isfinite(realised) & (rows["time_s"] > warmup) & (rows[m] < cap - 1e-9)
        table.append({"model": m, "rows": int(use.sum()), "mae_s": ae.mean(), "median_ae_s": np.median(ae),
                      "p90_ae_s": np.quantile(ae, 0.9), "bias_s": err.mean(),
                      "mean_realised_s": realised[use].mean(), "arrivals": int(arrived[use].sum()),
                      "own_rows": int(own.sum()), "own_mae_s": np.abs(rows[m][own] - realised[own]).mean(),
                      "cpu_ms_per_slot": rows["cpu_ms_per_slot"][m]})
        for lo, hi in zip(HORIZONS[:-1], HORIZONS[1:]):
            b = (rows[m][use] >= lo) & (rows[m][use] < hi)
            by_h.append({"model": m, "horizon": f"{lo:g}-{hi:g}", "rows": int(b.sum()),
                         "mae_s": ae[b].mean() if b.any() else np.nan, "bias_s": err[b].mean() if b.any() else np.nan})
    return table, by_h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", nargs="+", default=["grid6", "osm"], help="grid6, osm, or scenario TOML paths")
    ap.add_argument("--association", nargs="+", default=["nearest", "sticky"], choices=("nearest", "sticky"))
    ap.add_argument("--end", type=float, default=600.0, help="last slot whose predictions are judged [s]")
    ap.add_argument("--tail", type=float, default=300.0, help="simulated after --end to observe realised dwell [s]")
    ap.add_argument("--warmup", type=float, default=100.0, help="predictions before this time are not judged [s]")
    ap.add_argument("--out", default=str(ROOT / "docs" / "figures"))
    args = ap.parse_args()
    import pandas as pd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tables, horizons = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for net in args.nets:
            scen = scenario_of(net, Path(tmp))
            for rule in args.association:
                t0 = time.perf_counter()
                rows = run(scen, rule, args.end, args.tail)
                table, by_h = evaluate(rows, args.warmup)
                for r in table + by_h:
                    r.update(net=net, association=rule)
                tables += table
                horizons += by_h
                print(f"{net}/{rule}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    df, dh = pd.DataFrame(tables), pd.DataFrame(horizons)
    df.to_csv(out / "dwell_error.csv", index=False, float_format="%.4g")
    dh.to_csv(out / "dwell_error_by_horizon.csv", index=False, float_format="%.4g")
    print("| network | rule | model | rows | MAE [s] | median | p90 | bias | MAE / straight | mean realised [s] |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (net, rule), g in df.groupby(["net", "association"], sort=False):
        base = g.loc[g["model"] == "straight", "mae_s"].item()
        for r in g.itertuples():
            print(f"| {net} | {rule} | {r.model} | {r.rows} | {r.mae_s:.1f} | {r.median_ae_s:.1f} | {r.p90_ae_s:.1f} | "
                  f"{r.bias_s:+.1f} | {r.mae_s / base:.2f} | {r.mean_realised_s:.1f} |")
    plot(dh, out / "dwell_error.png")


def plot(dh, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dh.groupby(["net", "association"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups), 3.4), sharey=True, squeeze=False)
    for ax, ((net, rule), g) in zip(axes[0], groups):
        for m, gm in g.groupby("model", sort=False):
            ax.plot(range(len(gm)), gm["mae_s"], marker="o", label=m)
        ax.set_xticks(range(len(HORIZONS) - 1), [h.replace("-inf", "+") for h in g["horizon"].unique()], fontsize=7)
        ax.set_title(f"{net}, {rule}", fontsize=9)
        ax.set_xlabel("predicted dwell [s]")
    axes[0][0].set_ylabel("mean |predicted - realised| [s]")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
