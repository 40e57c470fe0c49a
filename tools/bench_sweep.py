#!/usr/bin/env python3
"""Sweep throughput: N local worker processes against 1 (scaling efficiency), and the Ray engine
against the local engine on the same sweep (overhead), measured side by side in one run.

    python tools/bench_sweep.py [--cells 8] [--end 60] [--jobs 2]

The sweep is grid6 with the cache layer, `--cells` runs of `--end` simulated seconds each.
"""

from __future__ import annotations

import argparse
import importlib.util
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
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cosim-bench-sweep-"))
    f = tmp / "bench.toml"
    f.write_text(f'[sweep]\nname = "bench"\nscenarios = ["{ROOT / "scenarios" / "grid6_cache.toml"}"]\n'
                 f"seeds = {args.cells}\nend_s = {args.end}\n[set]\n\"output.coverage\" = false\n")
    sw = sweep.load(f)
    variants = [("local, 1 worker", "local", 1), (f"local, {args.jobs} workers", "local", args.jobs)]
    if importlib.util.find_spec("ray") is not None:
        variants.append((f"ray, {args.jobs} CPUs", "ray", args.jobs))
    else:
        print("ray not installed: skipping the Ray variant (pip install 'cosim[ray]')", file=sys.stderr)
    wall = {}
    for name, engine, jobs in variants:
        out = tmp / name.replace(" ", "").replace(",", "-")
        t0 = time.perf_counter()
        res = sweep.execute(sw, out, engine=engine, jobs=jobs, progress=False)
        wall[name] = time.perf_counter() - t0
        assert res["completed"] == args.cells, res
        print(f"{name:18s} {wall[name]:7.1f} s  {60 * args.cells / wall[name]:6.1f} runs/min", file=sys.stderr)
    one = wall["local, 1 worker"]
    par = wall[f"local, {args.jobs} workers"]
    print(f"\n{args.cells} runs of grid6 + cache layer, {args.end:g} s each, on {sweep.os.cpu_count()} CPUs")
    print(f"{'variant':18s} {'wall [s]':>9s} {'runs/min':>9s}")
    for name, w in wall.items():
        print(f"{name:18s} {w:9.1f} {60 * args.cells / w:9.1f}")
    print(f"scaling efficiency with {args.jobs} workers: {one / (args.jobs * par):.2f} (speed-up {one / par:.2f}x)")
    ray_name = f"ray, {args.jobs} CPUs"
    if ray_name in wall:
        print(f"Ray engine vs local engine ({args.jobs} each): {wall[ray_name] / par:.2f}x the wall time "
              f"(+{wall[ray_name] - par:.1f} s, Ray's start and task dispatch)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
