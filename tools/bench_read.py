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

``--decode``: TraCI only, the decoding of the vehicles' values alone. One run over TraCI keeps
the raw answers to the context subscription of the slots from ``--from`` to ``--end``; then each
is decoded into a snapshot
by traci (what ``subscribeContext`` does, then cosim's conversion of traci's dicts) and by
cosim's decoder (:mod:`cosim.sources.traci_step`), CPU time, best of 3 passes:

    python tools/bench_read.py --decode --sumocfg A10KW.sumocfg --step-length 0.5 --from 600 --end 700
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


def decode_bench(sumocfg: str, begin: float, end: float, step: float, slot: float) -> None:
    import traci.constants as tc
    from traci.storage import Storage

    from cosim.sources.sumo import SumoSource, _assemble, snapshot_from_results, sumo_command

    src = SumoSource(sumo_command(sumocfg, seed=42, end_s=end, step_length_s=step), "traci")
    src.start()
    conn, reader = src.conn, src.reader
    raws: list[bytes] = []
    recv = conn._recvExact

    def keep():
        r = recv()
        raws.append(r._content)
        return r

    k, kept, vehicles = 1, [], 0
    while k * slot <= end + 1e-9:
        conn._recvExact = keep if k * slot > begin else recv
        raws.clear()
        snap = src.step_to(k * slot)
        if raws:
            kept.append(raws[1])  # the step's answer, then the context subscription's
            vehicles += len(snap)
        k += 1

    def by_traci():
        for raw in kept:
            st = Storage(raw)
            st.read("!BBB")
            st.readString()
            conn._subscriptionMapping[reader.decoder.response].reset()
            conn._readSubscription(st)
            snapshot_from_results(0.0, conn.junction.getContextSubscriptionResults(reader.anchor),
                                  reader.lengths.__getitem__, reader.edges, reader.vars)

    def by_cosim():
        for raw in kept:
            got = reader.decoder.decode(raw, 7 + int.from_bytes(raw[3:7], "big"))
            _assemble(0.0, *got[1][:2], reader.lengths.__getitem__, reader.edges, got[1][2])

    src.close()
    print(f"{len(kept)} answers to the context subscription, {vehicles / len(kept):.0f} vehicles per slot on average, "
          f"{sum(map(len, kept)) / len(kept) / 1e3:.1f} kB each")
    for name, fn in (("traci", by_traci), ("cosim", by_cosim)):
        best = min(_cpu(fn) for _ in range(3))
        print(f"{name:6s} {1e3 * best / len(kept):7.3f} ms per slot {1e6 * best / vehicles:7.2f} us per vehicle")


def _cpu(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sumocfg", default=str(ROOT / "sumo_nets/grid6/grid6.sumocfg"))
    ap.add_argument("--backend", choices=("libsumo", "traci"), default="libsumo")
    ap.add_argument("--end", type=float, default=600.0)
    ap.add_argument("--step-length", type=float, default=0.25)
    ap.add_argument("--slot", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--decode", action="store_true", help="TraCI: time decoding the step response, traci vs cosim")
    ap.add_argument("--from", dest="begin", type=float, default=0.0, help="--decode: keep responses after this time")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.decode:
        decode_bench(args.sumocfg, args.begin, args.end, args.step_length, args.slot)
        return
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
