#!/usr/bin/env python3
"""Plugin overhead, measured side by side in one run:

    bare `sumo`  vs  `cosim run` (libsumo, layers off)  vs  `cosim run --backend traci`

Each variant runs as its own process on the same configuration, seed, end time and step length
(the same SUMO command line cosim builds), interleaved over ``--repeat`` rounds so that machine
noise hits all three alike; the medians of whole-command wall times give the ratios.

    python tools/bench_overhead.py scenarios/grid6.toml --end 1200 --repeat 3
    python tools/bench_overhead.py some.sumocfg --step-length 0.1

Targets (issue 2, several hundred concurrent vehicles): libsumo <= 1.15x, TraCI <= 3x bare SUMO.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosim import config as cfgmod  # noqa: E402
from cosim.sources.sumo import sumo_command  # noqa: E402


def timed(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"bench: command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", help="scenario .toml or SUMO .sumocfg")
    ap.add_argument("--end", type=float, default=1200.0, help="simulation end [s] (default 1200)")
    ap.add_argument("--step-length", type=float, help="SUMO step length [s] (default: the scenario's)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--no-traci", action="store_true", help="skip the TraCI variant")
    args = ap.parse_args()

    target = Path(args.target)
    cfg = cfgmod.load(target) if target.suffix == ".toml" else cfgmod.for_sumocfg(target)
    sc = cfg.scenario
    step = args.step_length if args.step_length else sc.step_length_s
    tmp = Path(tempfile.mkdtemp(prefix="cosim-bench-"))
    bare = sumo_command(sc.sumocfg, seed=sc.seed, begin_s=sc.begin_s, end_s=args.end, step_length_s=step,
                        log_file=tmp / "bare.log", extra=list(sc.sumo_args))
    cosim = [sys.executable, "-m", "cosim", "run", str(target), "-q", "--end", str(args.end)]
    if step and step > 0:
        cosim += ["--step-length", str(step)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    variants = {"bare sumo": lambda i: timed(bare, env),
                "cosim libsumo": lambda i: timed(cosim + ["--out", str(tmp / f"lib{i}")], env)}
    if not args.no_traci:
        variants["cosim traci"] = lambda i: timed(cosim + ["--backend", "traci", "--out", str(tmp / f"traci{i}")], env)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(args.repeat):
        for name, fn in variants.items():
            times[name].append(fn(i))
            print(f"round {i + 1}/{args.repeat}  {name:14s} {times[name][-1]:7.2f} s", file=sys.stderr)

    summary = json.loads((tmp / "lib0" / "summary.json").read_text())
    base = statistics.median(times["bare sumo"])
    print(f"\nscenario {cfg.name}: end {args.end:g} s, step {step if step and step > 0 else 'cfg'} s, "
          f"slot {sc.slot_s:g} s, max concurrent vehicles {summary['max_concurrent_vehicles']}, "
          f"{summary['vehicles_seen']} vehicles in all, {args.repeat} interleaved rounds")
    best = min(times["bare sumo"])
    print(f"{'variant':16s} {'median [s]':>10s} {'ratio':>7s} {'min [s]':>8s} {'ratio':>7s}")
    for name, ts in times.items():
        med, lo = statistics.median(ts), min(ts)
        print(f"{name:16s} {med:10.2f} {med / base:6.2f}x {lo:8.2f} {lo / best:6.2f}x")
    w = summary["wall_s"]
    print(f"inside cosim libsumo (round 1): SUMO+read {w['sumo']:.2f} s, plugin {w['plugin']:.2f} s, "
          f"per slot plugin {1e3 * w['plugin'] / max(summary['slots'], 1):.2f} ms")


if __name__ == "__main__":
    main()
