#!/usr/bin/env python3
"""Plugin overhead, measured side by side in one run:

    bare `sumo`  vs  `cosim run` serial (--jobs 1)  vs  pipelined (--jobs 2: SUMO in its own process)
                 [vs the same over TraCI]  [vs the core alone, when the scenario has layers]

Each variant runs as its own process on the same configuration, seed, end time and step length
(the same SUMO command line cosim builds), interleaved over ``--repeat`` rounds so that machine
noise hits all alike. Printed per variant: median and min wall time and their ratios to bare
SUMO, and the CPU seconds of the whole process tree (user + system, from ``getrusage``) — the
figure to decide by on a shared machine, where wall time drifts by tens of percent. For the
cosim variants the wall time splits into the SUMO side (stepping + reading) and the plugin side,
each with its idle waiting on the other, and the CPU seconds of each process (summary.json).

    python tools/bench_overhead.py --game A10KW --repeat 3      # a real OSM scenario from SUMO's wheel
    python tools/bench_overhead.py scenarios/grid6.toml --end 1200 --repeat 3
    python tools/bench_overhead.py some.sumocfg --step-length 0.1
    python tools/bench_overhead.py scenarios/grid6_cache.toml --no-traci \
        --set layers.cache.request_rate_per_vehicle_s=0.25     # a layer on: adds "no layers" variants
    python tools/bench_overhead.py scenarios/grid6.toml --layers --no-traci   # the issue's whole table
    python tools/build_city.py && python tools/bench_overhead.py build/city/scenarios/city.toml --no-traci

``--layers`` (on a scenario without layers) adds, each with 1 and 2 processes (``--jobs 1``/``2``:
the scaling with the workers), a variant per built-in layer at its default load (the layer's own
defaults, which are those of scenarios/grid6_{dvit,cache,moe}.toml) and one with all three layers
on in one run; a line per variant then gives the speed-up of 2 processes over 1. ``--layers moe
dvit`` (names among dvit, cache, moe, all): only those variants.

``--workers N [N ...]`` adds, for every variant with layers, one that spreads the layers'
policies over N worker processes besides the plugin's (``--jobs 2+N``, marked ``+Nw``), and
its speed-up over the serial variant.

``--jobs-auto`` adds, for every variant with layers, one with ``--jobs auto`` (marked ``auto``: the
processes ``auto_jobs`` picks for this machine; ``config.toml`` of each run records the number), and
its speed-up over the serial variant.

``--game NAME`` copies ``sumo/tools/game/NAME.sumocfg`` (and what it reads) from the eclipse-sumo
wheel into a scratch folder (the game scenarios write outputs beside themselves) and runs that.
A10KW: an OSM extract of a motorway interchange with its town streets, 1,800 s at 0.5 s steps,
~5,300 vehicles, up to ~1,100 at once.

Targets (issue 14): core alone ≤ 1.15x bare SUMO wall on a real OSM scenario, ≤ 1.3x on a city-scale one,
all three layers on ≤ 1.5x, TraCI ≤ 3x.

``--baseline-src DIR`` adds a twin of every cosim variant, marked ``@base``, that runs the cosim
package found in DIR (e.g. ``git archive main | tar -x -C DIR``: the code before a change) with the
same Python and packages, interleaved with the rest: before and after in one benchmark.

``--instructions`` measures instead with valgrind (callgrind), which counts executed instructions
exactly: SUMO's state is saved at ``--warmup`` seconds (traffic at its steady level), every variant
resumes from it twice, for a short and a long window, and the difference of the two counts cancels
start-up (Python imports, loading the network) — leaving the steady-state cost per simulated
second, per process (for the pipelined variant the SUMO process's count is the critical path when
it exceeds the plugin's). Instructions are not seconds (cache misses cost more time than their
count says), so this mode complements the timings rather than replacing them.

    python tools/bench_overhead.py scenarios/grid6.toml --instructions --step-length 0.1
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosim import config as cfgmod  # noqa: E402
from cosim.results import load  # noqa: E402
from cosim.sources.sumo import sumo_command  # noqa: E402


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of ``cmd`` and every process it waited for."""
    c0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    dt, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if proc.returncode != 0:
        sys.exit(f"bench: command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return dt, cpu


def game_scenario(name: str, into: Path) -> Path:
    """A copy of the eclipse-sumo wheel's ``tools/game/NAME.sumocfg`` with what it reads."""
    from cosim.sumo_home import sumo_home

    game = Path(sumo_home()) / "tools" / "game"
    cfg = game / f"{name}.sumocfg"
    if not cfg.is_file():
        have = sorted(p.name[: -len(".sumocfg")] for p in game.glob("*.sumocfg"))
        sys.exit(f"bench: no game scenario {name} (have: {', '.join(have)})")
    into.mkdir(parents=True, exist_ok=True)
    for item in game.iterdir():
        if item.is_dir() and item.name == name:
            shutil.copytree(item, into / name, dirs_exist_ok=True)
        elif item.suffix == ".xml" or item == cfg:
            shutil.copy2(item, into / item.name)
    return into / cfg.name


def file_tag(name: str) -> str:
    """A variant's name as it appears in its scratch folders' and files' names."""
    return name.replace(" ", "-").replace("@", "")


def baseline_env(env: dict, src: str) -> dict:
    """``env`` for a run of the cosim package in ``src``: first on the path, and the current
    folder not (``python -m`` would put it first, and with it this checkout's cosim)."""
    return {**env, "PYTHONPATH": str(Path(src).resolve()), "PYTHONSAFEPATH": "1"}


def callgrind_total(cmd: list[str], workdir: Path, tag: str, env: dict) -> list[int]:
    """Instructions executed by ``cmd`` and by every process it starts (valgrind --trace-children),
    one count per process, largest first."""
    out = workdir / f"cg-{tag}"
    out.mkdir(parents=True, exist_ok=True)
    vg = ["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={out}/cg.%p"]
    proc = subprocess.run(vg + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"bench: {tag} failed under valgrind:\n{proc.stderr[-2000:]}")
    counts = []
    for f in out.glob("cg.*"):
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith("totals:") or line.startswith("summary:"):
                counts.append(int(line.split()[1]))
                break
    return sorted(counts, reverse=True)


def instructions_mode(args, cfg, target: Path, step: float, tmp: Path, env: dict) -> None:
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

    def cosim(end: float, backend: str, jobs: int = 1) -> list[str]:
        return [sys.executable, "-m", "cosim", "run", str(target), "-q", "--begin", f"{w0:g}", "--end", f"{end:g}",
                "--step-length", f"{step:g}", "--sumo-args", " ".join(resume), "--backend", backend,
                "--jobs", str(jobs), "--out", str(tmp / f"{backend}-{jobs}-{end:g}"), "--overwrite"]

    variants = {"bare sumo": bare}
    if not args.no_libsumo:
        variants["cosim serial"] = lambda e: cosim(e, "libsumo")
        if not args.no_pipelined:
            variants["cosim pipelined"] = lambda e: cosim(e, "libsumo", 2)
    if not args.no_traci:
        variants["cosim traci"] = lambda e: cosim(e, "traci")
        if not args.no_pipelined:
            variants["cosim traci piped"] = lambda e: cosim(e, "traci", 2)
    envs = {name: env for name in variants}
    if args.baseline_src:
        for name in [n for n in variants if n != "bare sumo"]:
            variants[f"{name} @base"] = lambda e, make=variants[name], tag=name: [
                *make(e)[:-2], str(tmp / f"base-{file_tag(tag)}-{e:g}"), "--overwrite"]
            envs[f"{name} @base"] = baseline_env(env, args.baseline_src)
    delta, per_process = {}, {}
    for name, make in variants.items():
        counts = [callgrind_total(make(end), tmp, f"{file_tag(name)}-{end:g}", envs[name])
                  for end in (short, long_)]
        delta[name] = sum(counts[1]) - sum(counts[0])
        if len(counts[0]) == len(counts[1]) > 1:
            per_process[name] = [b - a for a, b in zip(counts[0], counts[1])]
        print(f"{name:16s} {sum(counts[0]):>16,d} {sum(counts[1]):>16,d} instructions", file=sys.stderr)
    summary = load(next(tmp.glob(f"*-{long_:g}/summary.json")).parent).require_summary()
    slots = args.window / sc.slot_s
    print(f"\nscenario {cfg.name}: steady state from t={w0:g} s, window {args.window:g} s ({slots:g} slots of "
          f"{sc.slot_s:g} s), step {step:g} s, ~{summary['max_concurrent_vehicles']} vehicles; instruction counts "
          "(valgrind), start-up cancelled")
    print(f"{'variant':16s} {'instr/slot':>14s} {'ratio':>7s}")
    base = delta["bare sumo"]
    for name, d in delta.items():
        print(f"{name:16s} {d / slots:14,.0f} {d / base:6.2f}x")
        for j, c in enumerate(per_process.get(name, [])):
            print(f"  process {j + 1:<7d} {c / slots:14,.0f} {c / base:6.2f}x")


#: the built-in layers and the key that sets each one's load (``--layers`` runs each at its default)
LAYER_LOADS = {"dvit": "request_rate_per_s", "cache": "request_rate_per_vehicle_s", "moe": "request_rate_per_s"}


def layer_sets(names) -> list[str]:
    """``--set`` items that switch the layers ``names`` on at their default loads."""
    from cosim import registry

    items = []
    for name in names:
        default = {f.name: f.default for f in dataclasses.fields(registry.layer_class(name).config_class)}
        items += ["--set", f"layers.{name}.{LAYER_LOADS[name]}={default[LAYER_LOADS[name]]!r}"]
    return items


def _side_split(summary: dict) -> str:
    w, c = summary["wall_s"], summary.get("cpu_s", {})
    cpu = f"; CPU plugin process {c.get('plugin_process', 0):.1f} s" if c else ""
    if c.get("sumo_process") is not None:
        cpu += f", SUMO process {c['sumo_process']:.1f} s"
    if c.get("policy_workers"):
        cpu += ", policy workers " + " + ".join(f"{x:.1f}" for x in c["policy_workers"]) + " s"
    return (f"SUMO busy {w['sumo']:.1f} s waits {w.get('sumo_wait', 0):.1f} s, plugin busy {w['plugin']:.1f} s "
            f"waits {w.get('plugin_wait', 0):.1f} s{cpu}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", nargs="?", help="scenario .toml or SUMO .sumocfg (or use --game)")
    ap.add_argument("--game", metavar="NAME", help="a scenario from the eclipse-sumo wheel's tools/game (e.g. A10KW)")
    ap.add_argument("--end", type=float, help="simulation end [s] (default: the scenario's, else 1200)")
    ap.add_argument("--step-length", type=float, help="SUMO step length [s] (default: the scenario's)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--no-traci", action="store_true", help="skip the TraCI variants")
    ap.add_argument("--no-libsumo", action="store_true", help="skip the libsumo variants (e.g. to time TraCI alone)")
    ap.add_argument("--no-pipelined", action="store_true", help="skip the --jobs 2 variants")
    ap.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                    help="scenario override passed to every cosim variant (as `cosim run --set`)")
    ap.add_argument("--layers", nargs="*", metavar="LAYER", choices=[*LAYER_LOADS, "all"],
                    help="add each built-in layer on, and all three on, at default loads, with --jobs 1 and 2; "
                         "followed by names (dvit, cache, moe, all): only those variants")
    ap.add_argument("--workers", type=int, nargs="+", default=[], metavar="N",
                    help="also run every variant with layers with the policies over N worker processes "
                         "(--jobs 2+N; e.g. --workers 1 2)")
    ap.add_argument("--jobs-auto", action="store_true",
                    help="also run every variant with layers with --jobs auto (marked auto)")
    ap.add_argument("--baseline-src", metavar="DIR",
                    help="also run every cosim variant with the cosim package in DIR (marked @base), interleaved")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions with valgrind instead of timing (noise-free, steady state)")
    ap.add_argument("--warmup", type=float, default=300.0, help="--instructions: start of the window [s]")
    ap.add_argument("--window", type=float, default=20.0, help="--instructions: simulated seconds compared")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cosim-bench-"))
    if args.game:
        target = game_scenario(args.game, tmp / "game")
    elif args.target:
        target = Path(args.target)
    else:
        ap.error("give a scenario or --game NAME")
    cfg = cfgmod.load_any(target)
    if args.set:  # as the cosim variants will run it (a --set may switch a layer on)
        cfg = cfgmod.apply_overrides(cfg, {k: cfgmod.parse_value(v) for k, _, v in (s.partition("=") for s in args.set)})
    sc = cfg.scenario
    from cosim.config import sumocfg_time

    end = args.end if args.end is not None else (sc.end_s if sc.end_s >= 0 else (sumocfg_time(sc.sumocfg, "end") or 1200.0))
    args.end = end
    step = args.step_length if args.step_length else sc.step_length_s
    bare = sumo_command(sc.sumocfg, seed=sc.seed, begin_s=sc.begin_s, end_s=end, step_length_s=step,
                        log_file=tmp / "bare.log", extra=list(sc.sumo_args))
    cosim = [sys.executable, "-m", "cosim", "run", str(target), "-q", "--end", str(end)]
    if step and step > 0:
        cosim += ["--step-length", str(step)]
    for item in args.set:
        cosim += ["--set", item]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if args.instructions:
        instructions_mode(args, cfg, target, step, tmp, env)
        return
    variants = {"bare sumo": lambda i: timed(bare, env)}
    runs: dict[str, list[str]] = {}  # variant -> cosim arguments
    if cfg.layers:  # the core alone beside the core with the layers: the layers' own share
        runs["no layers serial"] = ["--no-layers", "--jobs", "1"]
        if not args.no_pipelined:
            runs["no layers piped"] = ["--no-layers", "--jobs", "2"]
    if not args.no_libsumo:
        runs["cosim serial"] = ["--jobs", "1"]
        if not args.no_pipelined:
            runs["cosim pipelined"] = ["--jobs", "2"]
    if not args.no_traci:
        runs["traci serial"] = ["--backend", "traci", "--jobs", "1"]
        if not args.no_pipelined:
            runs["traci pipelined"] = ["--backend", "traci", "--jobs", "2"]
    if args.layers is not None:
        if cfg.layers:
            sys.exit(f"bench: --layers adds the layers itself: give a scenario without layers (not {target.name})")
        for name, layers in [*((n, [n]) for n in LAYER_LOADS), ("all layers", list(LAYER_LOADS))]:
            if args.layers and name.split()[0] not in args.layers:
                continue
            runs[f"{name} serial"] = [*layer_sets(layers), "--jobs", "1"]
            if not args.no_pipelined:
                runs[f"{name} piped"] = [*layer_sets(layers), "--jobs", "2"]
    for n in args.workers:  # the layers' policies over n worker processes (--jobs 2 + n)
        for name, extra in list(runs.items()):
            if name.endswith(" serial") and not name.startswith(("no layers", "traci")) and \
                    (name != "cosim serial" or cfg.layers):
                runs[f"{name.removesuffix(' serial')} +{n}w"] = [*extra[:-1], str(2 + n)]
    if args.jobs_auto:  # as many processes as auto_jobs picks here
        for name, extra in list(runs.items()):
            if name.endswith(" serial") and not name.startswith(("no layers", "traci")) and \
                    (name != "cosim serial" or cfg.layers):
                runs[f"{name.removesuffix(' serial')} auto"] = [*extra[:-1], "auto"]
    if args.baseline_src:
        runs.update({f"{name} @base": extra for name, extra in list(runs.items())})
    base_env = baseline_env(env, args.baseline_src) if args.baseline_src else env
    for name, extra in runs.items():
        tag = file_tag(name)
        variants[name] = lambda i, extra=extra, tag=tag, e=base_env if name.endswith("@base") else env: timed(
            cosim + extra + ["--out", str(tmp / f"{tag}{i}"), "--overwrite"], e)
    walls: dict[str, list[float]] = {k: [] for k in variants}
    cpus: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(args.repeat):
        for name, fn in variants.items():
            w, c = fn(i)
            walls[name].append(w)
            cpus[name].append(c)
            print(f"round {i + 1}/{args.repeat}  {name:16s} {w:7.2f} s wall {c:7.2f} s CPU", file=sys.stderr)

    first = file_tag(next(iter(runs)))
    summary = load(tmp / f"{first}0").require_summary()
    print(f"\nscenario {cfg.name} ({target.name}): end {end:g} s, step {step if step and step > 0 else 'cfg'} s, "
          f"slot {sc.slot_s:g} s, max concurrent vehicles {summary['max_concurrent_vehicles']}, "
          f"{summary['vehicles_seen']} vehicles in all, {args.repeat} interleaved rounds, "
          f"{summary['versions']['sumo']}, {os.cpu_count()} CPUs")
    bw, bmin, bc = statistics.median(walls["bare sumo"]), min(walls["bare sumo"]), statistics.median(cpus["bare sumo"])
    print(f"{'variant':22s} {'wall med [s]':>12s} {'ratio':>6s} {'wall min [s]':>12s} {'ratio':>6s} "
          f"{'CPU med [s]':>11s} {'ratio':>6s}")
    for name in variants:
        med, lo, cpu = statistics.median(walls[name]), min(walls[name]), statistics.median(cpus[name])
        print(f"{name:22s} {med:12.2f} {med / bw:5.2f}x {lo:12.2f} {lo / bmin:5.2f}x {cpu:11.2f} {cpu / bc:5.2f}x")
    print("scaling over 1 process: 2 processes (SUMO in its own), and +N policy workers (median wall speed-up; "
          "CPU ratio):")
    for name in variants:
        base = name.removesuffix(" serial")
        if name == base:
            continue
        for other in [base + s for s in (" piped", " pipelined", " auto")] + [f"{base} +{n}w" for n in args.workers]:
            if other in variants:
                print(f"  {other:22s} {statistics.median(walls[name]) / statistics.median(walls[other]):5.2f}x "
                      f"wall; {statistics.median(cpus[other]) / statistics.median(cpus[name]):5.2f}x CPU")
    print("inside cosim (last round):")
    for name in runs:
        tag = file_tag(name)
        s = load(tmp / f"{tag}{args.repeat - 1}").require_summary()
        c = s.get("cpu_s", {})
        binary = ""  # over TraCI the `sumo` binary is a process of its own: the tree's CPU less cosim's processes
        if "--backend" in runs[name] and c:
            binary = f", `sumo` binary ~{cpus[name][-1] - c['plugin_process'] - (c.get('sumo_process') or 0):.1f} s CPU"
        per_slot = 1e3 * s["wall_s"]["plugin"] / max(s["slots"], 1)
        print(f"  {name:22s} {_side_split(s)}{binary}; {per_slot:.2f} ms plugin per slot")


if __name__ == "__main__":
    main()
