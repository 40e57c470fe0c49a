#!/usr/bin/env python3
"""Plugin overhead, measured side by side in one run:

    bare `sumo`  vs  `cosim run` (libsumo, layers off)  vs  `cosim run --backend traci`

Each variant runs as its own process on the same configuration, seed, end time and step length
(the same SUMO command line cosim builds), interleaved over ``--repeat`` rounds so that machine
noise hits all three alike; the medians of whole-command wall times give the ratios.

    python tools/bench_overhead.py scenarios/grid6.toml --end 1200 --repeat 3
    python tools/bench_overhead.py some.sumocfg --step-length 0.1
    python tools/bench_overhead.py scenarios/grid6_cache.toml --no-traci \
        --set layers.cache.request_rate_per_vehicle_s=0.25     # a layer on: adds a "no layers" variant

Targets (issue 2, several hundred concurrent vehicles): libsumo <= 1.15x, TraCI <= 3x bare SUMO.

Wall time on a shared 2-core VM drifts by tens of percent between identical runs. ``--instructions``
measures instead with valgrind (callgrind), which counts executed instructions exactly: SUMO's
state is saved at ``--warmup`` seconds (traffic at its steady level), every variant resumes from
it twice, for a short and a long window, and the difference of the two counts cancels start-up
(Python imports, loading the network) — leaving the steady-state cost per simulated second.
Instructions are not seconds (cache misses cost more time than their count says), so this mode
complements the wall-time ratios rather than replacing them.

    python tools/bench_overhead.py scenarios/grid6.toml --instructions --step-length 0.1
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


def callgrind_total(cmd: list[str], workdir: Path, tag: str, env: dict) -> int:
    """Instructions executed by ``cmd`` and every process it starts (valgrind --trace-children)."""
    out = workdir / f"cg-{tag}"
    out.mkdir(parents=True, exist_ok=True)
    vg = ["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={out}/cg.%p"]
    proc = subprocess.run(vg + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"bench: {tag} failed under valgrind:\n{proc.stderr[-2000:]}")
    total = 0
    for f in out.glob("cg.*"):
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith("totals:") or line.startswith("summary:"):
                total += int(line.split()[1])
                break
    return total


def instructions_mode(args, cfg, step: float, tmp: Path, env: dict) -> None:
    import shutil

    from cosim.sumo_home import sumo_binary

    if not shutil.which("valgrind"):
        sys.exit("bench: --instructions needs valgrind (apt-get install valgrind)")
    # valgrind 3.19 cannot decode AVX-512; Arrow would pick it at run time (same results either way)
    env = {**env, "ARROW_USER_SIMD_LEVEL": "AVX2"}
    sc = cfg.scenario
    w0 = args.warmup
    state = tmp / "state.xml.gz"
    warm = sumo_command(sc.sumocfg, seed=sc.seed, end_s=w0 + 1, step_length_s=step, extra=list(sc.sumo_args)
                        + ["--save-state.times", f"{w0:g}", "--save-state.files", str(state)])
    subprocess.run(warm, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    short, long_ = w0 + args.window / 2, w0 + 1.5 * args.window
    resume = ["--load-state", str(state)]

    def bare(end: float) -> list[str]:
        return sumo_command(sc.sumocfg, seed=sc.seed, begin_s=w0, end_s=end, step_length_s=step,
                            extra=list(sc.sumo_args) + resume, binary=sumo_binary("sumo"))

    def cosim(end: float, backend: str) -> list[str]:
        return [sys.executable, "-m", "cosim", "run", str(args.target), "-q", "--begin", f"{w0:g}", "--end", f"{end:g}",
                "--step-length", f"{step:g}", "--sumo-args", " ".join(resume), "--backend", backend,
                "--out", str(tmp / f"{backend}-{end:g}"), "--overwrite"]

    variants = {"bare sumo": bare, "cosim libsumo": lambda e: cosim(e, "libsumo")}
    if not args.no_traci:
        variants["cosim traci"] = lambda e: cosim(e, "traci")
    delta = {}
    for name, make in variants.items():
        counts = [callgrind_total(make(end), tmp, f"{name.replace(' ', '-')}-{end:g}", env) for end in (short, long_)]
        delta[name] = counts[1] - counts[0]
        print(f"{name:14s} {counts[0]:>16,d} {counts[1]:>16,d} instructions", file=sys.stderr)
    summary = json.loads((tmp / f"libsumo-{long_:g}" / "summary.json").read_text())
    slots = args.window / sc.slot_s
    print(f"\nscenario {cfg.name}: steady state from t={w0:g} s, window {args.window:g} s ({slots:g} slots of "
          f"{sc.slot_s:g} s), step {step:g} s, ~{summary['max_concurrent_vehicles']} vehicles; instruction counts "
          "(valgrind), start-up cancelled")
    print(f"{'variant':16s} {'instr/slot':>14s} {'ratio':>7s}")
    base = delta["bare sumo"]
    for name, d in delta.items():
        print(f"{name:16s} {d / slots:14,.0f} {d / base:6.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", help="scenario .toml or SUMO .sumocfg")
    ap.add_argument("--end", type=float, default=1200.0, help="simulation end [s] (default 1200)")
    ap.add_argument("--step-length", type=float, help="SUMO step length [s] (default: the scenario's)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--no-traci", action="store_true", help="skip the TraCI variant")
    ap.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                    help="scenario override passed to every cosim variant (as `cosim run --set`)")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions with valgrind instead of timing (noise-free, steady state)")
    ap.add_argument("--warmup", type=float, default=300.0, help="--instructions: start of the window [s]")
    ap.add_argument("--window", type=float, default=20.0, help="--instructions: simulated seconds compared")
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
    for item in args.set:
        cosim += ["--set", item]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if args.instructions:
        instructions_mode(args, cfg, step, tmp, env)
        return
    variants = {"bare sumo": lambda i: timed(bare, env)}
    if cfg.layers:  # the core alone beside the core with the layers: the layers' own share
        variants["cosim no layers"] = lambda i: timed(cosim + ["--no-layers", "--out", str(tmp / f"core{i}"), "--overwrite"], env)
    variants["cosim libsumo"] = lambda i: timed(cosim + ["--out", str(tmp / f"lib{i}"), "--overwrite"], env)
    if not args.no_traci:
        variants["cosim traci"] = lambda i: timed(cosim + ["--backend", "traci", "--out", str(tmp / f"traci{i}"), "--overwrite"], env)
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
