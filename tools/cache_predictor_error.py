#!/usr/bin/env python3
"""How well lc-predictive knows where vehicles will be: predicted vs real position ``--horizon``
seconds ahead, on live SUMO, for the three predictors a cache could use:

* routes   — walk the vehicle's SUMO route at its current speed (floor ``predict_min_speed_mps``);
* straight — extrapolate along the current heading (what a replay without routes gets);
* stay     — assume it stays where it is.

    python tools/cache_predictor_error.py [scenarios/grid6_cache.toml] [--horizon 30] [--end 600]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosim import config as cfgmod  # noqa: E402
from cosim.layers.base import LayerContext  # noqa: E402
from cosim.layers.cache.layer import CacheLayer  # noqa: E402
from cosim.sources.sumo import SumoSource, sumo_command  # noqa: E402
from cosim.world import World, net_file_of, read_net  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", nargs="?", default=str(ROOT / "scenarios" / "grid6_cache.toml"))
    ap.add_argument("--horizon", type=float, default=30.0, help="seconds ahead")
    ap.add_argument("--end", type=float, default=600.0)
    ap.add_argument("--every", type=float, default=10.0, help="seconds between predictions")
    ap.add_argument("--warmup", type=float, default=100.0, help="first prediction [s] (traffic filled)")
    args = ap.parse_args()
    cfg = cfgmod.load(args.scenario)
    sc = cfg.scenario
    world = World(cfg, read_net(net_file_of(sc.sumocfg)))
    src = SumoSource(sumo_command(sc.sumocfg, seed=sc.seed, end_s=args.end + args.horizon + 1,
                                  step_length_s=sc.step_length_s, extra=["--no-warnings"]))
    layer = CacheLayer(dict(cfg.layers.get("cache", {})), LayerContext(sc.seed, sc.slot_s, args.scenario, lambda n: None))
    src.start()
    pending: dict[float, tuple] = {}
    err: dict[str, list] = {"routes": [], "straight": [], "stay": []}
    try:
        t = 0.0
        while t < args.end + args.horizon:
            t += sc.slot_s
            snap = src.step_to(t)
            world.update(snap)
            due = pending.pop(round(t, 6), None)
            if due is not None:
                where = {v: i for i, v in enumerate(snap.ids)}
                for j, v in enumerate(due[0]):
                    i = where.get(v)
                    if i is None:
                        continue  # arrived meanwhile
                    for name, (x, y) in due[1].items():
                        if np.isfinite(x[j]):
                            err[name].append(float(np.hypot(snap.x[i] - x[j], snap.y[i] - y[j])))
            if t >= args.warmup and t <= args.end and abs(t / args.every - round(t / args.every)) < 1e-9:
                world.route_of = src.route_of
                routes = layer._ahead(world, args.horizon)
                world.route_of = None
                straight = layer._ahead(world, args.horizon)
                pending[round(t + args.horizon, 6)] = (list(snap.ids), {
                    "routes": routes, "straight": straight, "stay": (snap.x.copy(), snap.y.copy())})
    finally:
        src.close()
    print(f"position error {args.horizon:g} s ahead ({cfg.name}, {args.warmup:g}-{args.end:g} s, every {args.every:g} s)")
    print(f"{'predictor':10s} {'samples':>8s} {'median [m]':>11s} {'mean [m]':>9s} {'p90 [m]':>8s}")
    for name, v in err.items():
        v = np.asarray(v)
        print(f"{name:10s} {len(v):8d} {np.median(v):11.1f} {v.mean():9.1f} {np.quantile(v, 0.9):8.1f}")


if __name__ == "__main__":
    main()
