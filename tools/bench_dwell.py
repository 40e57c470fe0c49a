#!/usr/bin/env python3
"""What the route dwell predictor costs: the core's plugin time per slot with
``world.dwell_model = "straight"`` against ``"route"`` (and ``"idm"``), on the same traffic.

SUMO runs once and its snapshots (and every vehicle's route) are kept in memory; then the
core's per-slot work — ``Session.on_snapshot``: world update, coverage recording — runs over them
for each model in turn, interleaved over ``--repeat`` rounds so that machine noise hits all alike.
CPU time of the process (``time.process_time``, the recorder's writer thread included) per slot;
min and median over the rounds. Target (issue 18): route adds <= 10 % to straight.

    python tools/bench_dwell.py                     # grid6, 600 s (~450 vehicles at once)
    python tools/bench_dwell.py SCENARIO.toml --end 300 --repeat 5
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosim import config as cfgmod  # noqa: E402
from cosim.engine.session import Session  # noqa: E402
from cosim.engine.spec import resolve  # noqa: E402
from cosim.sources.replay import Routes  # noqa: E402
from cosim.sources.sumo import SumoSource, sumo_command  # noqa: E402


def record(cfg, end: float) -> tuple[list, Routes]:
    sc = cfg.scenario
    src = SumoSource(sumo_command(sc.sumocfg, seed=sc.seed, end_s=end, step_length_s=sc.step_length_s,
                                  extra=["--no-warnings"]))
    src.start()
    snaps, routes = [], Routes()
    try:
        t = 0.0
        while t < end - 1e-9:
            t += sc.slot_s
            snaps.append(src.step_to(t))
            for v in snaps[-1].ids:
                if v not in routes:
                    routes[v] = src.route_of[v]
    finally:
        src.close()
    return snaps, routes


def timed(obj, name: str, acc: list) -> None:
    """Wrap ``obj.name`` so that its CPU time adds up in ``acc[0]``."""
    fn = getattr(obj, name)

    def wrapper(*a, **k):
        c0 = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            acc[0] += time.process_time() - c0

    setattr(obj, name, wrapper)


def core_cpu_s(cfg, snaps, routes, out: Path) -> tuple[float, float, dict]:
    """(CPU [s] of the core's slots, of which in the dwell prediction, counters)."""
    session = Session(resolve(cfg, traffic="attach"), out)  # one process, as the core's slots are timed
    session.world.route_of = routes
    dwell = [0.0]
    timed(session.world, "predict_dwell", dwell)
    rd = session.world.route_dwell
    if rd is not None:
        timed(rd, "learn", dwell)
    c0 = time.process_time()
    for snap in snaps:
        session.on_snapshot(snap)
    session.recorder.close()  # the writer thread's last row groups belong to the slots' work
    cpu = time.process_time() - c0
    return cpu, dwell[0], ({"walks": rd.walks, "lookups": rd.lookups} if rd is not None else {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", nargs="?", default=str(ROOT / "scenarios" / "grid6.toml"))
    ap.add_argument("--end", type=float, default=600.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=["straight", "route", "idm"])
    args = ap.parse_args()
    base = cfgmod.load(args.scenario)
    snaps, routes = record(base, args.end)
    gc.freeze()  # the recorded traffic is the bench's, not the run's: keep it out of the collector's scans
    n = len(snaps)
    mean_veh = sum(len(s) for s in snaps) / max(n, 1)
    per_slot = {m: [] for m in args.models}
    in_dwell = {m: [] for m in args.models}
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for m in args.models:
                cfg = base.replace(world={"dwell_model": m})
                cpu, dw, c = core_cpu_s(cfg, snaps, routes, Path(tmp) / f"{m}-{r}")
                per_slot[m].append(1e3 * cpu / n)
                in_dwell[m].append(1e3 * dw / n)
                counts[m] = c
    print(f"{Path(args.scenario).name}: {n} slots, {mean_veh:.0f} vehicles per slot on average; "
          f"CPU per slot [ms] of the core (world update + recording), {args.repeat} interleaved rounds")
    ref = statistics.median(per_slot[args.models[0]])
    ref_dw = statistics.median(in_dwell[args.models[0]])
    for m in args.models:
        med, dw = statistics.median(per_slot[m]), statistics.median(in_dwell[m])
        extra = "".join(f", {k} {v / n:.2f}/slot" for k, v in counts[m].items())
        print(f"  {m:9s} core min {min(per_slot[m]):.3f} median {med:.3f} ({100 * (med / ref - 1):+.1f} %); "
              f"dwell prediction min {min(in_dwell[m]):.3f} median {dw:.3f}, its extra over {args.models[0]} = "
              f"{100 * (dw - ref_dw) / ref:+.1f} % of {args.models[0]}'s core{extra}")


if __name__ == "__main__":
    main()
