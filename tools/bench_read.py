#!/usr/bin/env python3
"""How to read every vehicle's state each slot: strategies measured side by side.

Strategies (each in its own process, interleaved over ``--repeat`` rounds; total wall time of
the SUMO run plus reading, median):

    none     step only (the floor)
    vehsub   one variable subscription per vehicle, made when it departs; getAllSubscriptionResults
    ctx      one context subscription around a junction with a network-wide range
    loop     a getter call per vehicle and variable (the slow pattern, for reference)

    python tools/bench_read.py --backend libsumo --end 600 --step-length 0.25
    python tools/bench_read.py --backend traci --end 300
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STRATEGIES = ("none", "vehsub", "ctx", "loop")


def one(backend: str, strategy: str, sumocfg: str, end: float, step: float, slot: float) -> tuple[float, int]:
    import traci.constants as tc

    from cosim.sources.sumo import VARS, sumo_command

    cmd = sumo_command(sumocfg, seed=42, end_s=end, step_length_s=step)
    if backend == "libsumo":
        import libsumo as conn

        conn.start(cmd)
    else:
        import traci as conn

        conn.start(cmd)
    rows = 0
    t0 = time.perf_counter()
    if strategy == "ctx":
        anchor = conn.junction.getIDList()[0]
        conn.junction.subscribeContext(anchor, tc.CMD_GET_VEHICLE_VARIABLE, 1e9, list(VARS))
    conn.simulation.subscribe([tc.VAR_DEPARTED_VEHICLES_IDS])
    k = 1
    while k * slot <= end + 1e-9:
        conn.simulationStep(k * slot)
        k += 1
        if strategy == "vehsub":
            for v in conn.simulation.getSubscriptionResults()[tc.VAR_DEPARTED_VEHICLES_IDS]:
                conn.vehicle.subscribe(v, list(VARS))
            rows += len(conn.vehicle.getAllSubscriptionResults())
        elif strategy == "ctx":
            rows += len(conn.junction.getContextSubscriptionResults(anchor))
        elif strategy == "loop":
            V = conn.vehicle
            for v in V.getIDList():
                (V.getPosition(v), V.getSpeed(v), V.getAngle(v), V.getAcceleration(v), V.getLaneID(v),
                 V.getLanePosition(v))
                rows += 1
    dt = time.perf_counter() - t0
    conn.close()
    return dt, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sumocfg", default=str(ROOT / "sumo_nets/grid6/grid6.sumocfg"))
    ap.add_argument("--backend", choices=("libsumo", "traci"), default="libsumo")
    ap.add_argument("--end", type=float, default=600.0)
    ap.add_argument("--step-length", type=float, default=0.25)
    ap.add_argument("--slot", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        dt, rows = one(args.backend, args.child, args.sumocfg, args.end, args.step_length, args.slot)
        print(f"{dt} {rows}")
        return
    strategies = args.strategies.split(",")
    times: dict[str, list[float]] = {s: [] for s in strategies}
    rows: dict[str, int] = {}
    for r in range(args.repeat):
        for s in strategies:
            out = subprocess.run([sys.executable, __file__, "--child", s, "--backend", args.backend,
                                  "--sumocfg", args.sumocfg, "--end", str(args.end), "--step-length",
                                  str(args.step_length), "--slot", str(args.slot)],
                                 capture_output=True, text=True, check=True).stdout.split()
            times[s].append(float(out[-2]))
            rows[s] = int(out[-1])
            print(f"round {r + 1} {s:7s} {times[s][-1]:.2f} s", file=sys.stderr)
    base = statistics.median(times[strategies[0]])
    print(f"{args.backend}: end {args.end:g} s, step {args.step_length:g} s, slot {args.slot:g} s, "
          f"median of {args.repeat}")
    print(f"{'strategy':8s} {'wall [s]':>9s} {'vs ' + strategies[0]:>9s} {'rows read':>10s}")
    for s in strategies:
        med = statistics.median(times[s])
        print(f"{s:8s} {med:9.2f} {med / base:8.2f}x {rows[s]:10d}")


if __name__ == "__main__":
    main()
