#!/usr/bin/env python3
"""Replay throughput (vehicle-rows per second) and peak memory, for every trace format.

Builds a trace of >= 1 million rows from the grid6 network (SUMO's FCD output, one record per
second, ~2400 s) as FCD XML (gzip) and as SUMO's own Parquet FCD (SUMO's default precision:
float32 speed/angle/position columns), converts it once to cosim's parquet trace, then reads each
through ReplaySource in a fresh process — the whole trace and its first half — and prints rows
per second of wall time and per CPU second (the figure to trust on a busy machine) and peak
resident memory. Flat memory means the two peaks match whatever the length. For reference it
also times lxml's ``iterparse`` alone over the XML (counting vehicles, reading no value).

    python tools/bench_replay.py [--end 2400] [--keep DIR]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(path: str, until: float) -> None:
    if path.startswith("lxml:"):
        return lxml_alone(path[5:], until)
    from cosim.sources.replay import ReplaySource

    src = ReplaySource(path, fcd_step_s=0.0)
    src.start()  # imports (pyarrow, lxml) and opening the file are not reading
    t0, c0 = time.perf_counter(), time.process_time()
    rows, t = 0, 0.0
    while not src.finished() and t < until:
        t += 1.0
        rows += len(src.step_to(t))
    print(rows, time.perf_counter() - t0, time.process_time() - c0,
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def lxml_alone(path: str, until: float) -> None:
    import gzip

    from lxml import etree

    t0, c0 = time.perf_counter(), time.process_time()
    rows = 0
    for _, ts in etree.iterparse(gzip.open(path, "rb"), events=("end",), tag="timestep", huge_tree=True):
        if float(ts.get("time")) >= until:
            break
        rows += len(ts)
        ts.clear()
        while ts.getprevious() is not None:
            del ts.getparent()[0]
    print(rows, time.perf_counter() - t0, time.process_time() - c0,
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--end", type=float, default=2400.0)
    ap.add_argument("--keep", help="keep the traces in this folder")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], float(args.child[1]))

    from cosim.recorder import TableWriter
    from cosim.sources.replay import ReplaySource, snapshot_columns
    from cosim.sources.sumo import sumo_command

    tmp = Path(args.keep or tempfile.mkdtemp(prefix="cosim-replay-"))
    tmp.mkdir(parents=True, exist_ok=True)
    fcd = tmp / "grid6.fcd.xml.gz"
    if not fcd.exists():
        cmd = sumo_command(ROOT / "sumo_nets/grid6/grid6.sumocfg", seed=42, end_s=args.end, step_length_s=0.25,
                           extra=["--fcd-output", str(fcd), "--fcd-output.acceleration", "--device.fcd.period", "1",
                                  "--precision", "6"])
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    spq = tmp / "grid6.fcd.parquet"
    if not spq.exists():
        cmd = sumo_command(ROOT / "sumo_nets/grid6/grid6.sumocfg", seed=42, end_s=args.end, step_length_s=0.25,
                           extra=["--fcd-output", str(spq), "--fcd-output.acceleration", "--device.fcd.period", "1"])
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pq = tmp / "grid6.trace.parquet"
    if not pq.exists():
        src, writer = ReplaySource(fcd), TableWriter(pq, 50)
        src.start()
        t = 0.0
        while not src.finished():
            snap = src.step_to(t)
            if len(snap):
                writer.append(snapshot_columns(snap))
            t += 1.0
        writer.close()
    size = lambda p: sum(f.stat().st_size for f in p.rglob("*")) if p.is_dir() else p.stat().st_size  # noqa: E731
    print(f"traces in {tmp}: {fcd.name} {size(fcd) / 1e6:.1f} MB, {pq.name} (part directory) {size(pq) / 1e6:.1f} MB")
    print(f"{'trace':26s} {'part':>5s} {'rows':>10s} {'rows/s wall':>12s} {'rows/CPU-s':>12s} {'peak RSS [MB]':>14s}")
    for path in (f"lxml:{fcd}", fcd, spq, pq):
        for label, until in (("half", args.end / 2), ("all", 1e12)):
            out = subprocess.run([sys.executable, __file__, "--child", str(path), str(until)], capture_output=True,
                                 text=True, check=True).stdout.split()
            rows, dt, cpu, rss = int(out[0]), float(out[1]), float(out[2]), float(out[3])
            name = f"{Path(str(path)[5:]).name} (lxml alone)" if str(path).startswith("lxml:") else Path(path).name
            print(f"{name:26s} {label:>5s} {rows:10d} {rows / dt:12,.0f} {rows / cpu:12,.0f} {rss:14.0f}")


if __name__ == "__main__":
    main()
