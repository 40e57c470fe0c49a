#!/usr/bin/env python3
"""Sweep throughput: N local worker processes against 1 (scaling efficiency), and the Ray engine
against the local engine on the same sweep (per-cell overhead), measured side by side in one run.

    python tools/bench_sweep.py [--cells 8] [--end 60] [--jobs 2]
    python tools/bench_sweep.py --cells 1000 --end 1 --no-serial     # empty cells: the overhead alone
    python tools/bench_sweep.py --cells 100 --address HOST:PORT      # against a running Ray cluster

The sweep is grid6 with the cache layer, `--cells` runs of `--end` simulated seconds each. The
Ray engine ships the inputs and brings each cell's folder back (cosim.cluster); its per-cell
overhead is (its wall time - the local engine's) / cells at the same number of CPUs, and the
same in CPU seconds of the whole process tree (the driver, its cells, and for Ray its head
processes and workers), which a shared machine's load does not inflate as it does wall time.

Every `--sample` cells (default: 20 samples a sweep) the driver's resident memory (now, not
its peak), its CPU seconds and the load average are recorded: the table after each variant
shows whether the driver's memory stays flat as the cells grow (the sweep streams each result
back and keeps none). `--progress` prints the sweep's own progress line (cells/min, ETA);
`--json FILE` writes every number, rewritten after each variant, and each sample as it is
taken to FILE's name with .samples.jsonl, so that a run stopped early keeps what it measured.
`--only ray` runs one engine's variants alone; `--compare A.json B.json` then gives the per-cell
overhead of B's engine over A's from two such files, at the last cell count both reached.

Measured for docs/cluster.md ("Measured overheads"), one run after the other, on a 2-core VM
(RAY_AUTH_MODE=disabled where Ray >= 2.5x asks for a token):

    nice -n 10 python tools/bench_sweep.py --cells 8 --end 1800 --no-serial --sample 1 --json long8.json
    nice -n 10 python tools/bench_sweep.py --cells 350 --end 1 --no-serial --sample 10 --json empty350.json
    nice -n 10 python tools/bench_sweep.py --cells 1000 --end 1 --no-serial --only ray --sample 25 --json ray1000.json
    nice -n 10 python tools/bench_sweep.py --cells 1000 --end 1 --no-serial --only local --sample 25 --json local1000.json
    python tools/bench_sweep.py --compare local1000.json ray1000.json

The first is the long cells: 1,800 simulated s of grid6 + cache layer took 56 s wall (28 s CPU)
alone on that machine; choose `--end` so for ~60 s cells on yours. On a machine shared with
other work compare the tree's CPU seconds, not the wall time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosim import sweep  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of one process now (VmRSS), MiB; 0 where /proc has no such process."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def descendants() -> list[int]:
    """The live processes below this one (Ray's head processes and workers, a local engine's cells)."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(p.name))
    out, todo = [], [os.getpid()]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _proc_cpu(pid: int) -> float:
    """utime + stime + cutime + cstime of a live process (its own and its reaped children's), s."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    f = stat[stat.rindex(")") + 2:].split()
    return sum(int(x) for x in f[11:15]) / _TICK


def driver_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def tree_cpu() -> float:
    """CPU seconds of the driver and everything below it: the reaped children (rusage) plus the
    live descendants (/proc), which are not yet reaped so nothing is counted twice."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return driver_cpu() + r.ru_utime + r.ru_stime + sum(_proc_cpu(p) for p in descendants())


class Sampler:
    """Wraps the sweep's Progress: records a sample at every ``every`` cells ran and at the last."""

    def __init__(self, every: int, log: Path | None = None):
        self.every, self.samples, self.t0, self.log, self.name = every, [], 0.0, log, ""
        self.cpu0 = self.tree0 = 0.0
        self.last_tree = 0.0

    def start(self, name: str) -> None:
        self.samples, self.t0, self.name = [], time.perf_counter(), name
        self.cpu0, self.tree0 = driver_cpu(), tree_cpu()
        self.last_tree = self.tree0

    def take(self, ran: int, total: int) -> None:
        if ran == 0 or (ran % self.every and ran != total) or (self.samples and self.samples[-1]["cells"] == ran):
            return
        desc = descendants()
        self.last_tree = tree_cpu()
        self.samples.append({"cells": ran, "wall_s": round(time.perf_counter() - self.t0, 2),
                             "driver_rss_mib": round(rss_mib(), 1),
                             "tree_rss_mib": round(rss_mib() + sum(rss_mib(p) for p in desc), 1),
                             "driver_cpu_s": round(driver_cpu() - self.cpu0, 2),
                             "tree_cpu_s": round(self.last_tree - self.tree0, 2),
                             "loadavg_1m": round(os.getloadavg()[0], 2)})
        if self.log:  # one line a sample as it is taken: a run stopped early keeps its samples
            with self.log.open("a") as fh:
                fh.write(json.dumps({"variant": self.name, **self.samples[-1]}) + "\n")

    def progress_class(self):
        sampler = self

        class SampledProgress(sweep.Progress):
            def show(self, final: bool = False) -> None:
                sampler.take(self.done + self.failed, self.total - self.skipped)
                super().show(final)

        return SampledProgress


def flatness(samples: list[dict]) -> str:
    """The driver's memory over the second half of the sweep against the first sample after
    the first 10%: a driver that held its results would grow with the cells."""
    if len(samples) < 3:
        return ""
    n = samples[-1]["cells"]
    early = next(s for s in samples if s["cells"] >= n / 10)
    late = [s for s in samples if s["cells"] >= n / 2]
    grow = max(s["driver_rss_mib"] for s in late) - early["driver_rss_mib"]
    return (f"driver RSS at {early['cells']} cells {early['driver_rss_mib']:.0f} MiB, "
            f"max over cells {late[0]['cells']}-{n} {max(s['driver_rss_mib'] for s in late):.0f} MiB "
            f"({grow:+.0f} MiB)")


def compare(a: dict, b: dict) -> dict:
    """The per-cell overhead of ``b``'s engine over ``a``'s (two ``--json`` records of one variant
    each, or their samples), at the largest cell count both sampled: (b - a) / cells, in wall
    seconds and in the tree's CPU seconds."""
    def samples(rec: dict) -> dict[int, dict]:
        (variant,) = rec["variants"].values()  # one engine a file: --only
        return {s["cells"]: s for s in variant["samples"]}

    sa, sb = samples(a), samples(b)
    common = sorted(set(sa) & set(sb))
    if not common:
        raise SystemExit("--compare: the two runs share no sampled cell count")
    n = common[-1]
    return {"cells": n, "wall_s": (sa[n]["wall_s"], sb[n]["wall_s"]),
            "tree_cpu_s": (sa[n]["tree_cpu_s"], sb[n]["tree_cpu_s"]),
            "per_cell_wall_s": (sb[n]["wall_s"] - sa[n]["wall_s"]) / n,
            "per_cell_cpu_s": (sb[n]["tree_cpu_s"] - sa[n]["tree_cpu_s"]) / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--end", type=float, default=60.0)
    ap.add_argument("--jobs", type=int, default=2, help="workers of the parallel variants")
    ap.add_argument("--no-serial", action="store_true", help="skip the 1-worker variant (long sweeps)")
    ap.add_argument("--address", help="run the Ray variant on this cluster (default: a local Ray of --jobs CPUs)")
    ap.add_argument("--sample", type=int, help="record the driver's memory and CPU every N cells "
                    "(default: cells/20)")
    ap.add_argument("--only", choices=["local", "ray"], help="run this engine's variants alone (e.g. the "
                    "Ray engine's memory over a sweep too long to run twice)")
    ap.add_argument("--progress", action="store_true", help="show the sweep's progress line (cells/min, ETA)")
    ap.add_argument("--json", type=Path, help="write every number to this file (after each variant)")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"),
                    help="the per-cell overhead of B's engine over A's, from two --only runs' --json files")
    args = ap.parse_args()
    if args.compare:
        a, b = (json.loads(p.read_text()) for p in args.compare)
        c = compare(a, b)
        print(f"at {c['cells']} cells: wall {c['wall_s'][0]:.1f} s -> {c['wall_s'][1]:.1f} s, tree CPU "
              f"{c['tree_cpu_s'][0]:.1f} s -> {c['tree_cpu_s'][1]:.1f} s; per cell {c['per_cell_wall_s']:+.3f} s wall, "
              f"{c['per_cell_cpu_s']:+.3f} s CPU")
        return
    if args.cells < 1 or args.jobs < 1 or (args.sample is not None and args.sample < 1):
        ap.error("--cells, --jobs and --sample must be at least 1")
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
    variants = [v for v in variants if args.only in (None, v[1])]
    sampler = Sampler(args.sample or max(1, args.cells // 20),
                      args.json.with_suffix(".samples.jsonl") if args.json else None)
    sweep.Progress = sampler.progress_class()  # the sweep builds its Progress from this name
    record = {"cells": args.cells, "end_s": args.end, "jobs": args.jobs, "cpus": os.cpu_count(),
              "address": args.address, "command": sys.argv, "variants": {}}
    wall, cpu = {}, {}
    try:
        for name, engine, jobs in variants:
            out = tmp / name.replace(" ", "").replace(",", "-")
            load0 = os.getloadavg()
            started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            sampler.start(name)
            t0 = time.perf_counter()
            res = sweep.execute(sw, out, engine=engine, jobs=jobs, progress=args.progress,
                                address=args.address if engine == "ray" else None)
            wall[name] = time.perf_counter() - t0
            assert res["completed"] == args.cells, res
            # the tree's CPU at the last cell: Ray's processes are still alive then (ray.shutdown follows)
            cpu[name] = sampler.samples[-1]["tree_cpu_s"] if sampler.samples else tree_cpu() - sampler.tree0
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            s = sampler.samples
            record["variants"][name] = {"started": started, "wall_s": round(wall[name], 2),
                                        "tree_cpu_s": cpu[name], "driver_cpu_s": s[-1]["driver_cpu_s"] if s else None,
                                        "driver_peak_rss_mib_so_far": round(peak), "loadavg_start": load0,
                                        "loadavg_end": os.getloadavg(), "samples": s}
            print(f"\n{name}: {wall[name]:.1f} s wall, {60 * args.cells / wall[name]:.1f} cells/min, "
                  f"tree CPU {cpu[name]:.1f} s, driver peak RSS so far {peak:.0f} MiB, "
                  f"load {load0[0]:.2f} -> {os.getloadavg()[0]:.2f}", file=sys.stderr)
            print(f"{'cells':>6s} {'wall s':>8s} {'drv RSS':>8s} {'tree RSS':>9s} {'drv CPU':>8s} "
                  f"{'tree CPU':>9s} {'load':>5s}", file=sys.stderr)
            for x in s:
                print(f"{x['cells']:6d} {x['wall_s']:8.1f} {x['driver_rss_mib']:8.0f} {x['tree_rss_mib']:9.0f} "
                      f"{x['driver_cpu_s']:8.1f} {x['tree_cpu_s']:9.1f} {x['loadavg_1m']:5.2f}", file=sys.stderr)
            if flatness(s):
                print(flatness(s), file=sys.stderr)
            if args.json:
                args.json.write_text(json.dumps(record, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    par = f"local, {args.jobs} workers"
    print(f"\n{args.cells} runs of grid6 + cache layer, {args.end:g} s each, on {os.cpu_count()} CPUs")
    print(f"{'variant':18s} {'wall [s]':>9s} {'runs/min':>9s} {'CPU [s]':>9s}")
    for name, w in wall.items():
        print(f"{name:18s} {w:9.1f} {60 * args.cells / w:9.1f} {cpu[name]:9.1f}")
    if "local, 1 worker" in wall and par in wall:
        one = wall["local, 1 worker"]
        print(f"scaling efficiency with {args.jobs} workers: {one / (args.jobs * wall[par]):.2f} "
              f"(speed-up {one / wall[par]:.2f}x)")
    ray_name = f"ray, {args.jobs} CPUs"
    if ray_name in wall and par in wall:
        dw, dc = wall[ray_name] - wall[par], cpu[ray_name] - cpu[par]
        print(f"Ray engine vs local engine ({args.jobs} each): {wall[ray_name] / wall[par]:.2f}x the wall time "
              f"(+{dw:.1f} s: Ray's start, shipping the inputs, task dispatch, the results back); "
              f"per cell {dw / args.cells:+.3f} s wall, {dc / args.cells:+.3f} s CPU")
        record["per_cell_overhead_wall_s"] = round(dw / args.cells, 4)
        record["per_cell_overhead_cpu_s"] = round(dc / args.cells, 4)
        if args.json:
            args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
