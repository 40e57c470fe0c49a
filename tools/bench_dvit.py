#!/usr/bin/env python3
"""Planning time of every DViT scheduler for one task, K = 50 steps and 20 candidate vehicles.

Problems are built from real grid6 traffic (a SUMO run to t = 300 s, then one problem per
vehicle in coverage, 20 nearest helpers each, positions ahead along SUMO's routes) and timed
policy by policy in CPU seconds, min and median of 5 passes: requests (device 0 = the RSU) and
re-plans from a helper (what closed-loop VIDI does at every decision epoch). Targets: optimal
<= 2 ms (issue 3); vidi <= 2 ms per decision at K = 50 and 20 candidates (issue 12); ``rl``
(a trained agent, ``--agent``; its call is one step's decision, asked before every step) a few
100 µs (issue 16). The cost of
a whole run with the layer on is measured by
``python tools/bench_overhead.py scenarios/grid6_dvit.toml``.

    python tools/bench_dvit.py [--problems 50] [--agent dvit_grid6] [--jit both]

``--jit`` (issue 32): ``on`` the compiled kernels (cosim.jit), ``off`` the numpy code (main's
before issue 32), ``both`` (default) every policy both ways, interleaved pass by pass; the plans
must be the same (checked). Target (issue 32): VIDI <= 0.3 ms per decision.

``--start ROUNDS`` (issue 32, third pass) measures what a process pays before its first DViT
decisions, in fresh processes (CPU, min and median over ROUNDS interleaved rounds), after cosim's
and the layer's imports: importing numba, the exact-exp probe (:func:`cosim.jit.exact_exp`: the
first kernel loaded, so numba's CPU target set up), VIDI's first plan (its three kernels loaded),
``optimal``'s first plan (its kernel loaded) and a second VIDI plan (the steady cost); and the
same with ``COSIM_JIT=off`` (the numpy code). The problems are the first ones of a grid6_dvit run
(seed 42) with more than 8 devices.

``--in-run END`` instead times the schedulers inside whole runs of scenarios/grid6_dvit.toml
(seed 42, serial, to END s), kernels and numpy code in interleaved runs (``--rounds``): CPU per
call of each scheduler (SUMO's stepping between slots evicts the caches, so a call costs more
than in the loop above), and the runs' tables are compared (``cosim.compare.differences``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from cosim import config  # noqa: E402
from cosim.layers.base import LayerContext  # noqa: E402
from cosim.layers.dvit.layer import DViTLayer  # noqa: E402
from cosim import registry  # noqa: E402

SCHEDULERS = {name: spec.fn for name, spec in registry.policies("dvit").items()}
from cosim.sources.sumo import SumoSource, sumo_command  # noqa: E402
from cosim.world import World, net_file_of, read_net  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=50)
    ap.add_argument("--at", type=float, default=300.0, help="simulation time of the snapshot [s]")
    ap.add_argument("--agent", default="dvit_grid6", help="also time rl:AGENT, a trained agent (one decision "
                    "per call; '' to skip); default the shipped one")
    ap.add_argument("--jit", choices=["on", "off", "both"], default="both",
                    help="the compiled kernels, the numpy code, or both interleaved (default)")
    ap.add_argument("--in-run", type=float, metavar="END", help="time the schedulers inside grid6_dvit runs to END s")
    ap.add_argument("--rounds", type=int, default=2, help="--in-run: interleaved rounds (default 2)")
    ap.add_argument("--start", type=int, metavar="ROUNDS", help="time a process's start-up to its first decisions")
    ap.add_argument("--start-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.start_child:
        start_child(args.start_child)
        return
    if args.start:
        start(args.start)
        return
    modes = ["off", "on"] if args.jit == "both" else [args.jit]
    if args.in_run:
        in_run(args, modes)
        return
    if args.agent:
        SCHEDULERS["rl"] = registry.make_policy("dvit", f"rl:{args.agent}", "--agent").fn
    cfg = config.load(ROOT / "scenarios" / "grid6_dvit.toml")
    src = SumoSource(sumo_command(cfg.scenario.sumocfg, seed=42, step_length_s=0.25), "libsumo")
    src.start()
    world = World(cfg, read_net(net_file_of(cfg.scenario.sumocfg)))
    for t in range(1, int(args.at) + 1):
        snap = src.step_to(float(t))
    world.route_of = src.route_of
    world.update(snap)
    layer = DViTLayer(dict(cfg.layers["dvit"]), LayerContext(42, 1.0, "bench", lambda name: None))
    users = np.flatnonzero(world.serving >= 0)[: args.problems]
    requests = [layer.build_problem(world, int(u), int(world.serving[u]), None, 50)[0] for u in users]
    replans = []
    for u in users:  # a re-plan from the user's nearest helper, as closed-loop VIDI makes them
        p, names = layer.build_problem(world, int(u), int(world.serving[u]), None, 50)
        if p.n_devices > 2:
            replans.append(layer.build_problem(world, int(u), int(world.serving[u]), world.index[names[1]], 45,
                                               upload=False)[0])
    src.close()
    for label, problems in (("requests", requests), ("re-plans from a helper", replans)):
        helpers = np.mean([p.n_devices - 2 for p in problems])
        print(f"{len(problems)} {label} from grid6 at t={args.at:g} s: K = {problems[0].steps}, "
              f"{helpers:.1f} candidate vehicles on average")
        print(f"{'policy':8s} {'jit':>4s} {'min ms':>8s} {'median ms':>10s}  (CPU time per plan)")
        for name, fn in SCHEDULERS.items():
            opts = registry.policies("dvit")[name].options if name != "rl" else None
            opts = opts() if opts is not None else None
            runs: dict = {m: [] for m in modes}
            plans: dict = {}
            for m in modes:  # warm-up (the kernels' compilation or cache load)
                os.environ["COSIM_JIT"] = m
                fn(problems[0], np.random.default_rng(0), opts)
            for _ in range(5):
                for m in modes:
                    os.environ["COSIM_JIT"] = m
                    rng = np.random.default_rng(0)
                    t0 = time.process_time()
                    out = [fn(p, rng, opts) for p in problems]
                    runs[m].append((time.process_time() - t0) / len(problems))
                    plans.setdefault(m, [None if o is None else np.asarray(o).tobytes() for o in out])
            if len(plans) == 2 and plans["on"] != plans["off"]:
                raise SystemExit(f"bench: {name}: the kernels' plans differ from the numpy code's")
            for m in modes:
                print(f"{name:8s} {m:>4s} {min(runs[m]) * 1e3:8.3f} {np.median(runs[m]) * 1e3:10.3f}")


STAGES = ("import numba", "exact-exp probe", "first vidi", "first optimal", "second vidi")


def start_child(problems_file: str) -> None:
    """One fresh process: the CPU of each stage to the first decisions (printed as one line)."""
    import json
    import pickle

    from cosim import jit
    from cosim.layers.dvit.schedulers import optimal, vidi

    out = {}
    t = time.process_time()
    on = jit.use()  # imports numba where COSIM_JIT allows
    out["import numba"], t = time.process_time() - t, time.process_time()
    if on:
        jit.exact_exp()
    out["exact-exp probe"], t = time.process_time() - t, time.process_time()
    with open(problems_file, "rb") as f:
        p_vidi, p_opt = pickle.load(f)
    t = time.process_time()
    a = vidi(p_vidi)
    out["first vidi"], t = time.process_time() - t, time.process_time()
    optimal(p_opt)
    out["first optimal"], t = time.process_time() - t, time.process_time()
    b = vidi(p_vidi)
    out["second vidi"] = time.process_time() - t
    assert a.tobytes() == b.tobytes()
    print(json.dumps({"stages": out, "plan": a.tolist()}))


def start(rounds: int) -> None:
    """``--start``: fresh processes, two variants (the kernels, the numpy code) interleaved round by
    round, on the first VIDI and ``optimal`` problems (more than 8 devices) of a 60 s grid6_dvit run;
    a run that gave no such problem of either policy stops with a one-line message naming it."""
    import json
    import pickle
    import subprocess
    import tempfile

    import cosim
    from cosim.layers.dvit import layer as dl

    seen = []
    orig = dl.DViTLayer._plan

    def plan(self, policy, problem, *a):  # noqa: ANN001, ANN202 - the problems of a real run
        if policy in ("vidi", "optimal") and len(seen) < 2 and problem.n_devices > 8:
            if not seen or seen[0][0] != policy:
                seen.append((policy, problem))
        return orig(self, policy, problem, *a)

    jit_env = os.environ.get("COSIM_JIT")
    with tempfile.TemporaryDirectory() as tmp:
        dl.DViTLayer._plan = plan
        os.environ["COSIM_JIT"] = "on"
        try:
            cosim.run(ROOT / "scenarios" / "grid6_dvit.toml", out=Path(tmp) / "run", overwrite=True, end_s=60,
                      seed=42, jobs=1)  # also compiles or loads every kernel, so no child compiles
        finally:
            dl.DViTLayer._plan = orig
            if jit_env is None:
                os.environ.pop("COSIM_JIT", None)
            else:
                os.environ["COSIM_JIT"] = jit_env
        problems = dict(seen)
        for policy in ("vidi", "optimal"):
            if policy not in problems:
                raise SystemExit(f"bench --start: the 60 s grid6_dvit run (seed 42) planned no {policy!r} problem "
                                 "with more than 8 devices (is the policy among the scenario's?)")
        path = Path(tmp) / "problems.pkl"
        with open(path, "wb") as f:
            pickle.dump((problems["vidi"], problems["optimal"]), f)
        variants = {"kernels": "on", "numpy code (COSIM_JIT=off)": "off"}
        got: dict = {v: [] for v in variants}
        plans = set()
        for _ in range(rounds):
            for v, mode in variants.items():
                env = {**os.environ, "COSIM_JIT": mode}
                res = subprocess.run([sys.executable, __file__, "--start-child", str(path)], env=env, check=True,
                                     capture_output=True, text=True)
                line = json.loads(res.stdout.strip().splitlines()[-1])
                got[v].append(line["stages"])
                plans.add(tuple(line["plan"]))
    if len(plans) != 1:
        raise SystemExit("bench: the variants' VIDI plans differ")
    print(f"start-up to the first DViT decisions, fresh processes, CPU ms, min / median of {rounds} interleaved rounds "
          f"(VIDI problem {problems['vidi'].n_devices} devices, K = {problems['vidi'].steps})")
    print(f"{'stage':18s} " + " ".join(f"{v:>32s}" for v in variants))
    for stage in (*STAGES, "to the first plans"):
        cells = []
        for v in variants:
            xs = [sum(r[s] for s in STAGES[:4]) if stage == "to the first plans" else r[stage] for r in got[v]]
            cells.append(f"{1e3 * min(xs):14.1f} / {1e3 * float(np.median(xs)):7.1f}")
        print(f"{stage:18s} " + " ".join(f"{c:>32s}" for c in cells))


def in_run(args: argparse.Namespace, modes: list[str]) -> None:
    import tempfile

    import cosim
    from cosim.compare import differences
    from cosim.layers import base

    orig = base.Layer.call
    cpu: dict = {}

    def call(self, name, *a):  # noqa: ANN001, ANN202
        c0 = time.process_time()
        try:
            return orig(self, name, *a)
        finally:
            cpu.setdefault(name, []).append(time.process_time() - c0)

    base.Layer.call = call
    stats: dict = {m: {} for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for m in modes:
                os.environ["COSIM_JIT"] = m
                cpu.clear()
                c0 = time.process_time()
                res = cosim.run(ROOT / "scenarios" / "grid6_dvit.toml", out=Path(tmp) / f"{m}{r}", overwrite=True,
                                end_s=args.in_run, seed=42, jobs=1)
                total = time.process_time() - c0
                for name, v in cpu.items():
                    stats[m].setdefault(name, []).append((1e3 * sum(v) / len(v), len(v)))
                stats[m].setdefault("(run, CPU s)", []).append((total, res.summary["slots"]))
        if len(modes) == 2:
            diff = differences(Path(tmp) / "off0", Path(tmp) / "on0")
            print("tables and summary, kernels vs numpy code:", "the same" if not diff else "DIFFER: " + "; ".join(diff))
    base.Layer.call = orig
    print(f"grid6_dvit, seed 42, {args.in_run:g} s, serial; CPU ms per call, min / median of {args.rounds} runs "
          f"(calls per run)")
    for name in stats[modes[0]]:
        print(f"  {name:14s} " + "   ".join(
            f"{m}: {min(x for x, _ in stats[m][name]):7.3f} / {np.median([x for x, _ in stats[m][name]]):7.3f} "
            f"({stats[m][name][0][1]})" for m in modes))


if __name__ == "__main__":
    main()
