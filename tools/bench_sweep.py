#!/usr/bin/env python3
"""Sweep throughput: N local worker processes against 1 (scaling efficiency), and the Ray engine
against the local engine on the same sweep (per-cell overhead), measured side by side in one run.

    python tools/bench_sweep.py [--cells 8] [--end 60] [--jobs 2]
    python tools/bench_sweep.py --cells 1000 --end 1 --no-serial     # empty cells: the overhead alone
    python tools/bench_sweep.py --cells 100 --address HOST:PORT      # against a running Ray cluster

The sweep is grid6 with the cache layer, `--cells` runs of `--end` simulated seconds each. The
Ray engine ships the inputs and brings each cell's folder back (cosim.cluster); its per-cell
overhead is (its wall time - the local engine's) / cells at the same number of CPUs. The
driver's peak memory (this process's maximum resident set) is printed after each variant: it
must stay flat as the cells grow.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosim import sweep  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--end", type=float, default=60.0)
    ap.add_argument("--jobs", type=int, default=2, help="workers of the parallel variants")
    ap.add_argument("--no-serial", action="store_true", help="skip the 1-worker variant (long sweeps)")
    ap.add_argument("--address", help="run the Ray variant on this cluster (default: a local Ray of --jobs CPUs)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cosim-bench-sweep-"))
    f = tmp / "bench.toml"
    f.write_text(f'[sweep]\nname = "bench"\nscenarios = ["{ROOT / "scenarios" / "grid6_cache.toml"}"]\n'
                 f"seeds = {args.cells}\nend_s = {args.end}\n[set]\n\"output.coverage\" = false\n")
    sw = sweep.load(f)
    variants = [] if args.no_serial else [("local, 1 worker", "local", 1)]
    variants.append((f"local, {args.jobs} workers", "local", args.jobs))
    if importlib.util.find_spec("ray") is not None:
        variants.append((f"ray, {args.jobs} CPUs", "ray", args.jobs))
    else:
        print("ray not installed: skipping the Ray variant (pip install 'cosim[ray]')", file=sys.stderr)
    wall = {}
    for name, engine, jobs in variants:
        out = tmp / name.replace(" ", "").replace(",", "-")
        t0 = time.perf_counter()
        res = sweep.execute(sw, out, engine=engine, jobs=jobs, progress=False,
                            address=args.address if engine == "ray" else None)
        wall[name] = time.perf_counter() - t0
        assert res["completed"] == args.cells, res
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{name:18s} {wall[name]:7.1f} s  {60 * args.cells / wall[name]:6.1f} runs/min  "
              f"driver peak RSS so far {rss:.0f} MiB", file=sys.stderr)
    par = wall[f"local, {args.jobs} workers"]
    print(f"\n{args.cells} runs of grid6 + cache layer, {args.end:g} s each, on {sweep.os.cpu_count()} CPUs")
    print(f"{'variant':18s} {'wall [s]':>9s} {'runs/min':>9s}")
    for name, w in wall.items():
        print(f"{name:18s} {w:9.1f} {60 * args.cells / w:9.1f}")
    if "local, 1 worker" in wall:
        one = wall["local, 1 worker"]
        print(f"scaling efficiency with {args.jobs} workers: {one / (args.jobs * par):.2f} (speed-up {one / par:.2f}x)")
    ray_name = f"ray, {args.jobs} CPUs"
    if ray_name in wall:
        print(f"Ray engine vs local engine ({args.jobs} each): {wall[ray_name] / par:.2f}x the wall time "
              f"(+{wall[ray_name] - par:.1f} s: Ray's start, shipping the inputs, task dispatch, the results back); "
              f"per cell {(wall[ray_name] - par) / args.cells:+.3f} s")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
