#!/usr/bin/env python3
"""Pricing-round time and equilibrium quality of every MoE pricing solver (GECPA for 20 IVs in
<= 50 ms per round), on random games of the layer's default scale. Times are CPU seconds of this
process (``time.process_time``: steady on a shared machine) and wall seconds; ``evals`` is the
follower evaluations a round spends (the solvers' budget: gradient and evolutionary get GECPA's).

    python tools/bench_moe.py [--ivs 20] [--games 20] [--jit both]
    python tools/bench_moe.py --grid6 300 [--rounds 3]     # the solvers' CPU per task of a grid6 run
    python tools/bench_moe.py --gate 300 [--rounds 3] [--baseline-src DIR] [--device cuda]  # the gate model's, per task
    python tools/bench_moe.py --sections 600 [--rounds 2] [--baseline-src DIR]  # the layer's CPU, section by section
    python tools/bench_moe.py --outside 300 [--rounds 3] [--baseline-src DIR]  # the layer's CPU outside the gate

``--jit`` (issue 32): ``on`` the compiled kernels (cosim.jit), ``off`` the numpy code (main's
before issue 32), ``both`` (default) each solver both ways, interleaved, with the ratio.

``--grid6 END`` runs scenarios/grid6_moe.toml (seed 42) to END seconds, records every pricing
call the layer makes (policy, game, its random generator's state) and the Nash-gap evaluation of
each game, then replays them ``--rounds`` times, kernels and numpy code interleaved: the CPU the
layer's solvers spend per task (the issue's 127 ms), min and median over the rounds, and that the
prices are the same bit for bit.

``--gate END`` (issue 32) records every routing the layer asks of the gate model in that run
(prompt, gate quality, its task's memo) and replays them ``--rounds`` times task by task, each with
a fresh memo as the run had: CPU per task, the blocks run (full, or routing only), their floating-
point work counted (see :func:`block_flop`) and the FLOP/s achieved. ``--baseline-src DIR`` (a
checkout, e.g. ``git archive b0b82b9``) replays DIR's gate model alongside, interleaved, and checks
that both give the same loads, bit for bit. ``--device cuda`` (issue 32, ``layers.moe.device``)
replays the same model on that device too, interleaved: its CPU and wall seconds per task (a
round ends synchronised: each routing's loads come back to the CPU), that its replays give the
same loads bit for bit, how many routed pairs differ from the CPU's, and the device's float32
matmul rate without TF32.

``--sections END`` (issue 32, second pass) times, in one process per round, torch's import, the
layer's modules, a serial grid6_moe run (seed 42) to END seconds with no layers and the same run
with the layer (the layer's cost in the run is the difference), and inside it the layer's functions
(``SECTIONS``: inclusive and self CPU, per task and per call; the functions a run calls through
Python — the block's TorchScript-compiled internals are not timed separately, ``Block.attend`` and
``Block.finish`` are one compiled call each). ``--baseline-src DIR`` runs DIR's package the same
way, interleaved, ``--rounds`` times (medians printed).

``--outside END`` (issue 32, fourth pass) runs the same in one process per round, numba's kernels
loaded and torch imported before the run (timed apart): the layer's CPU per task outside the gate
model (its ``on_start``, ``on_slot``, ``on_end`` less ``GateModel.load``), of it the pricing calls,
the gate model's own, and the whole run's; ``--baseline-src DIR`` interleaved (min / median).

For the layer's share of a whole run, use the side-by-side benchmark:
    python tools/bench_overhead.py scenarios/grid6.toml --layers moe --no-traci --no-pipelined
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# --sections runs one child per checkout: the child imports the cosim package of its --src
SRC = sys.argv[sys.argv.index("--src") + 1] if "--src" in sys.argv else str(ROOT)
sys.path.insert(0, SRC)

from cosim import registry  # noqa: E402
from cosim.layers.moe.game import Game, SolverConfig, exact_equilibrium  # noqa: E402

SOLVERS = {name: spec.fn for name, spec in registry.policies("moe").items()}


def modes(arg: str) -> list[str]:
    return ["off", "on"] if arg == "both" else [arg]


def random_games(args: argparse.Namespace) -> None:
    cfg = SolverConfig()
    games = []
    for seed in range(args.games):
        rng = np.random.default_rng(seed)
        # work per IV for 8 layers x 8 experts x top-2 x 256 tokens over the IVs; the layer's ranges
        games.append((rng.uniform(0.01, 0.05, args.ivs), rng.uniform(0.2, 1.0, args.ivs), rng.uniform(5, 20, args.ivs)))
    for mode in modes(args.jit):  # warm-up (and, with the kernels, their compilation or cache load)
        os.environ["COSIM_JIT"] = mode
        SOLVERS["gecpa"](Game(*games[0]), np.random.default_rng(0), cfg)
    print(f"{args.games} random games with {args.ivs} IVs; Nash gap from a 256-point grid + golden section")
    print(f"{'solver':13s} {'jit':>3s} {'cpu ms med':>10s} {'cpu max':>8s} {'wall med':>9s} {'evals':>7s} {'mean gap':>10s} "
          f"{'max gap':>9s} {'mean IV utility':>16s}")
    for name, solve in SOLVERS.items():
        med = {}
        for mode in modes(args.jit):
            os.environ["COSIM_JIT"] = mode
            cpu, wall, gaps, util, evals = [], [], [], [], []
            for i, w in enumerate(games):
                g = Game(*w)
                t0, c0 = time.perf_counter(), time.process_time()
                p = solve(g, np.random.default_rng(i), cfg)
                cpu.append(1e3 * (time.process_time() - c0))
                wall.append(1e3 * (time.perf_counter() - t0))
                evals.append(g.evals)
                gaps.append(g.nash_gap(p[None], grid=256, refine=40)[0])
                util.append(g.outcome(p[None])["u_iv"].mean())  # over every IV offered a price
            med[mode] = np.median(cpu)
            print(f"{name:13s} {mode:>3s} {np.median(cpu):10.2f} {max(cpu):8.2f} {np.median(wall):9.2f} "
                  f"{int(np.mean(evals)):7d} {np.mean(gaps):10.4f} {max(gaps):9.4f} {np.mean(util):16.4f}")
        if len(med) == 2 and med["on"] > 0:
            print(f"{'':13s} {'':>3s} {med['off'] / med['on']:9.1f}x faster compiled")
    interior = [(g, *exact_equilibrium(g)) for g in (Game(*w) for w in games)]
    interior = [(g, p) for g, p, f in interior if (f > 0).all() and (f < g.F).all()]
    if interior:
        gaps = [g.nash_gap(p[None], grid=256, refine=40)[0] for g, p in interior]
        print(f"exact equilibrium (linear solve) where interior ({len(interior)} games): mean gap {np.mean(gaps):.2e}")
    print("target: gecpa <= 50 ms (CPU) per round for 20 IVs")


def record_grid6(end: float) -> tuple[list, dict]:
    """The pricing calls of a grid6_moe run: [(task, policy, game fields, rng, call)] and, per
    game, the price vectors whose Nash gap the layer evaluated."""
    import cosim
    from cosim.layers.moe import layer as moe_layer

    calls, gaps = [], {}
    orig_prices, orig_gap = moe_layer.MoELayer._prices, Game.nash_gap

    def fields(g: Game) -> tuple:
        return (g.W.copy(), g.F.copy(), g.kappa.copy(), g.value, g.f_sat, g.sigma, g.p_min, g.p_max)

    def prices(self, policy, game, rng):  # noqa: ANN001, ANN202
        state = copy.deepcopy(rng) if rng is not None else None
        p = orig_prices(self, policy, game, rng)
        calls.append((self.next_id - 1, policy, fields(game), state, self.call, p.copy()))
        return p

    def nash_gap(self, p, grid=96, refine=24):  # noqa: ANN001, ANN202
        gaps.setdefault(id(self), (fields(self), []))[1].append((np.array(p), grid, refine))
        return orig_gap(self, p, grid, refine)

    moe_layer.MoELayer._prices, Game.nash_gap = prices, nash_gap
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cosim.run(ROOT / "scenarios" / "grid6_moe.toml", out=Path(tmp) / "run", overwrite=True, end_s=end, seed=42,
                      jobs=1)
    finally:
        moe_layer.MoELayer._prices, Game.nash_gap = orig_prices, orig_gap
    return calls, gaps


def grid6(args: argparse.Namespace) -> None:
    os.environ["COSIM_JIT"] = "off"  # the run itself as main ran it
    calls, gaps = record_grid6(args.grid6)
    tasks = len({c[0] for c in calls})
    print(f"grid6_moe, seed 42, {args.grid6:g} s: {tasks} tasks, {len(calls)} pricing calls, "
          f"{sum(len(v[1]) for v in gaps.values())} Nash-gap evaluations")
    per_task: dict[str, list[float]] = {m: [] for m in modes(args.jit)}
    per_policy: dict[str, dict[str, list[float]]] = {m: {} for m in modes(args.jit)}
    for _ in range(args.rounds):
        for mode in modes(args.jit):
            os.environ["COSIM_JIT"] = mode
            cpu_pol: dict[str, float] = {}
            c_all = time.process_time()
            for _, policy, f, rng, call, p in calls:
                c0 = time.process_time()
                q = call(policy, Game(*f), copy.deepcopy(rng))
                cpu_pol[policy] = cpu_pol.get(policy, 0.0) + time.process_time() - c0
                assert np.asarray(q, dtype=float).tobytes() == p.tobytes(), (mode, policy)
            c0 = time.process_time()
            for f, evals in gaps.values():
                g = Game(*f)
                for p, grid, refine in evals:
                    g.nash_gap(p, grid, refine)
            cpu_pol["(nash gaps)"] = time.process_time() - c0
            per_task[mode].append(1e3 * (time.process_time() - c_all) / tasks)
            for k, v in cpu_pol.items():
                per_policy[mode].setdefault(k, []).append(1e3 * v / tasks)
    print("CPU per task [ms], min / median of the rounds (prices identical to the run's, bit for bit):")
    for k in per_policy[modes(args.jit)[0]]:
        print(f"  {k:16s} " + "   ".join(f"{m}: {min(per_policy[m][k]):8.3f} / {statistics.median(per_policy[m][k]):8.3f}"
                                          for m in modes(args.jit)))
    print(f"  {'all solvers+gaps':16s} " + "   ".join(f"{m}: {min(per_task[m]):8.3f} / {statistics.median(per_task[m]):8.3f}"
                                                    for m in modes(args.jit)))
    print("target (issue 32): the solvers <= 10 ms CPU per task")


def record_gate(end: float) -> list:
    """The gate routings of a grid6_moe run, per task in call order: [[(prompt, gate quality)]]."""
    import cosim
    from cosim.layers.moe import layer as moe_layer

    tasks: dict[bytes, list] = {}  # a task's prompt is its own (drawn from the task's seed)
    orig = moe_layer.MoELayer.route

    def route(self, prompt, gate_q, memo=None):  # noqa: ANN001, ANN202
        tasks.setdefault(prompt.numpy().tobytes(), []).append((prompt.clone(), np.array(gate_q)))
        return orig(self, prompt, gate_q, memo)

    moe_layer.MoELayer.route = route
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cosim.run(ROOT / "scenarios" / "grid6_moe.toml", out=Path(tmp) / "run", overwrite=True, end_s=end, seed=42,
                      jobs=1)
    finally:
        moe_layer.MoELayer.route = orig
    return list(tasks.values())


def device(value: str):  # noqa: ANN201 - a torch.device
    """``--device``, checked as the layer checks ``[layers.moe] device`` (its option, then
    ``layer.gate_device``: cpu, auto, cuda or cuda:N, with CUDA present); a bad value exits with
    the checker's one line."""
    from cosim.config import build_section
    from cosim.errors import ConfigError
    from cosim.layers.moe.layer import MoEConfig, gate_device

    try:
        return gate_device(build_section(MoEConfig, {"device": value}, "--device", "layers.moe").device,
                           "--device: layers.moe")[0]
    except ConfigError as e:
        sys.exit(str(e))


def baseline_gate(src: str):  # noqa: ANN201 - a module
    """``DIR/cosim/layers/moe/model.py`` of a checkout ``src`` (``--baseline-src``) loaded as the
    module ``base_gate``, beside this checkout's (also for tools/gate_block_bench.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("base_gate", Path(src) / "cosim/layers/moe/model.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def attend_flop(T: int, D: int, E: int, split: int = 0) -> int:
    """Multiply-adds x 2 of a block's part that depends on its input alone (``Block.attend``):
    Q/K/V (2 T D 3D), the scores and their weighted sum over the whole T x T square (2 T T D each:
    the causal mask is applied to it, not skipped) or, with ``split`` (``masked_attention``'s,
    issue 32, fifth pass), over the first ``split`` rows' ``split`` columns and the other rows' T
    (2 (split^2 + (T - split) T) D each), the output projection (2 T D D) and the gate's logits
    (2 T D E). Norms, softmax and biases are left out (O(T D) or O(T T) each: < 1 %)."""
    cells = split * split + (T - split) * T
    return 2 * T * D * 3 * D + 2 * 2 * cells * D + 2 * T * D * D + 2 * T * D * E


def block_flop(T: int, D: int, E: int, F: int, pairs: int, route_only: bool) -> int:
    """Multiply-adds x 2 of one block: :func:`attend_flop` and, unless routing only, each kept
    (token, expert) pair's FFN (2 D F + 2 F D). GELU, the top-k and the combine are left out."""
    return attend_flop(T, D, E) + (0 if route_only else pairs * 4 * D * F)


def gate(args: argparse.Namespace) -> None:
    import torch

    from cosim.layers.moe.model import GateModel, Vocabulary, _split_rows

    dev = device(args.device)  # before the run it would record
    tasks = record_gate(args.gate)
    models = {"this": GateModel}
    if args.baseline_src:
        models = {"base": baseline_gate(args.baseline_src).GateModel, **models}
    vocab = Vocabulary()
    L, E = tasks[0][0][1].shape
    D, T = 64, len(tasks[0][0][0])
    built = {k: m(len(vocab), D, 2 * D, L, E, 2, 0) for k, m in models.items()}  # the layer's defaults
    if dev.type != "cpu":  # the same model on the device, replayed alongside the CPU's
        built[str(dev)] = GateModel(len(vocab), D, 2 * D, L, E, 2, 0).to(dev)
    work = {"full": 0, "route": 0, "attend": 0, "flop": 0}
    split = _split_rows(T, D, torch.device("cpu"), 1)  # what this model's attention computes on the CPU

    def counted_attend(x, attend):  # noqa: ANN001, ANN202
        work["attend"] += 1
        work["flop"] += attend_flop(T, D, E, split)
        return attend(x)

    def counted_finish(attended, quality, route_only=False, finish=None):  # noqa: ANN001, ANN202
        out = finish(attended, quality, route_only)
        work["route" if route_only else "full"] += 1
        work["flop"] += 0 if route_only else int((out[2] > 0).sum()) * 4 * D * 2 * D
        return out

    for b in built["this"].blocks:  # the model calls each block's attend and finish (issue 32, second pass)
        b.attend = functools.partial(counted_attend, attend=b.attend)
        b.finish = functools.partial(counted_finish, finish=b.finish)
    torch.set_num_threads(1)  # as the layer runs it
    cpu: dict[str, list[float]] = {k: [] for k in built}
    wall: dict[str, list[float]] = {k: [] for k in built}
    loads: dict[str, list] = {}
    for r in range(args.rounds):
        for k, model in built.items():
            work.update(full=0, route=0, attend=0, flop=0)
            got = []
            c0, w0 = time.process_time(), time.perf_counter()
            for calls in tasks:
                memo: dict = {}
                for prompt, gq in calls:  # the loads come back to the CPU: every round ends synchronised
                    got.append(model.load(prompt, torch.as_tensor(gq, dtype=torch.float32), memo).numpy().copy())
            cpu[k].append(time.process_time() - c0)
            wall[k].append(time.perf_counter() - w0)
            if k in loads and k == str(dev):  # a fresh replay on the device: the same loads again
                assert all(a.tobytes() == b.tobytes() for a, b in zip(loads[k], got)), f"{k}: two replays differ"
            loads.setdefault(k, got)
            if k == "this":
                counted = dict(work)
    if "base" in loads:
        assert all(a.tobytes() == b.tobytes() for a, b in zip(loads["base"], loads["this"])), "the loads differ"
    n = len(tasks)
    print(f"grid6_moe, seed 42, {args.gate:g} s: {n} tasks, {sum(map(len, tasks))} routings; one thread"
          + ("; loads identical to the baseline's, bit for bit" if "base" in loads else ""))
    for k in built:
        print(f"  {k:5s} CPU per task [ms], min / median of {args.rounds}: {1e3 * min(cpu[k]) / n:7.2f} / "
              f"{1e3 * statistics.median(cpu[k]) / n:7.2f}; wall {1e3 * min(wall[k]) / n:7.2f} / "
              f"{1e3 * statistics.median(wall[k]) / n:7.2f}")
    if dev.type != "cpu":
        a, b = loads["this"], loads[str(dev)]
        same = sum(x.tobytes() == y.tobytes() for x, y in zip(a, b))
        moved = sum(int(np.abs(x - y).sum()) // 2 for x, y in zip(a, b))
        pairs = sum(int(x.sum()) for x in a)
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
        print(f"  {dev} ({name}): {args.rounds} replays gave the same loads, bit for bit; against the CPU's: "
              f"{same} of {len(a)} routings identical, {moved} of {pairs} routed (token, expert) pairs moved "
              f"({100 * moved / max(pairs, 1):.3f} %)")
    blocks = counted["full"] + counted["route"]
    best = min(cpu["this"])
    print(f"  this: {counted['full']} full blocks + {counted['route']} routing-only ({blocks / n:.1f} per task), "
          f"{counted['attend']} attentions run (the others remembered), "
          f"{counted['flop'] / 1e9:.2f} GFLOP counted ({counted['flop'] / blocks / 1e6:.1f} MFLOP per block), "
          f"{counted['flop'] / best / 1e9:.1f} GFLOP/s achieved (min round)")
    a = torch.randn(1024, 1024)
    a @ a
    c0 = time.process_time()
    for _ in range(10):
        a @ a
    peak = 10 * 2 * 1024**3 / (time.process_time() - c0) / 1e9
    print(f"  this core, one thread, float32 1024^3 matmul: {peak:.1f} GFLOP/s")
    if dev.type == "cuda":
        from cosim.layers.moe.model import float32_exact

        a = torch.randn(4096, 4096, device=dev)
        with float32_exact():  # as the gate runs: IEEE float32, no TF32
            a @ a
            torch.cuda.synchronize(dev)
            w0 = time.perf_counter()
            for _ in range(10):
                a @ a
            torch.cuda.synchronize(dev)
        print(f"  {dev}, float32 4096^3 matmul (no TF32): {10 * 2 * 4096**3 / (time.perf_counter() - w0) / 1e9:.0f} GFLOP/s")


#: what --sections times (class or module attribute paths under cosim.layers.moe; absent ones skipped):
#: the functions a run calls through Python. The block's compiled internals (``attend_block``,
#: ``finish_block``, ``combine_experts``, ``masked_attention``: TorchScript calls them, not Python)
#: are not timed separately: ``Block.attend`` and ``Block.finish`` each time one whole compiled call
SECTIONS = ["layer.MoELayer.on_slot", "layer.MoELayer.submit", "layer.MoELayer.route", "model.GateModel.load",
            "model.Block.attend", "model.Block.finish", "layer.MoELayer._prices", "layer.Game.nash_gap",
            "layer.Game.outcome", "layer.interior_equilibrium", "layer.MoELayer.candidates", "layer.MoELayer.place",
            "layer.MoELayer._free", "layer.MoELayer._advance", "layer.MoELayer._finish", "layer.MoELayer._reroute"]


def sections_child(end: float) -> None:
    """One process: torch's and the layer's imports, a grid6_moe run (seed 42, serial) with no
    layers, then the run with the layer and every SECTIONS function timed (``time.process_time``,
    inclusive and self: the numba kernels' first calls load their cache inside ``_prices``); prints
    one JSON line."""
    import importlib
    import json

    t_start = time.process_time()  # Python, numpy and the modules this tool imports at its top
    import torch  # noqa: F401

    t_torch = time.process_time() - t_start
    t0 = time.process_time()
    mods = {m: importlib.import_module(f"cosim.layers.moe.{m}") for m in ("layer", "model", "game")}
    t_mods = time.process_time() - t0
    incl: dict[str, float] = {}
    own: dict[str, float] = {}
    calls: dict[str, int] = {}
    stack: list[float] = []

    def timed(label, fn):  # noqa: ANN001, ANN202
        def inner(*a, **k):  # noqa: ANN002, ANN003, ANN202
            t = time.process_time()
            stack.append(0.0)
            try:
                return fn(*a, **k)
            finally:
                dt = time.process_time() - t
                child = stack.pop()
                incl[label] = incl.get(label, 0.0) + dt
                own[label] = own.get(label, 0.0) + dt - child
                calls[label] = calls.get(label, 0) + 1
                if stack:
                    stack[-1] += dt
        return inner

    for path in SECTIONS:
        mod, *attrs = path.split(".")
        owner = mods[mod]
        for a in attrs[:-1]:
            owner = getattr(owner, a)
        if hasattr(owner, attrs[-1]):
            setattr(owner, attrs[-1], timed(path, getattr(owner, attrs[-1])))
    import dataclasses

    import cosim

    from cosim.api import configure

    cfg = configure(ROOT / "scenarios" / "grid6_moe.toml", end_s=end, seed=42, jobs=1)
    with tempfile.TemporaryDirectory() as tmp:
        # a short run with no layers first (libsumo's and the engine's first loads are no one's),
        # then the core alone, then with the layer
        cosim.run(dataclasses.replace(cfg, layers={}, scenario=dataclasses.replace(cfg.scenario, end_s=10.0)),
                  out=Path(tmp) / "warm", overwrite=True)
        t0 = time.process_time()
        cosim.run(dataclasses.replace(cfg, layers={}), out=Path(tmp) / "core", overwrite=True)  # as --no-layers
        t_core = time.process_time() - t0
        for label in list(incl):  # (nothing of the layer runs there)
            incl[label] = own[label] = calls[label] = 0
        t0 = time.process_time()
        res = cosim.run(cfg, out=Path(tmp) / "moe", overwrite=True)
        t_moe = time.process_time() - t0
        tasks = int(res["moe_tasks"]["task"].nunique())
    print(json.dumps({"start": t_start, "torch": t_torch, "modules": t_mods, "moe": t_moe, "core": t_core, "tasks": tasks,
                      "incl": incl, "own": own, "calls": calls}))


def _children(args: argparse.Namespace, flag: str, end: float, progress) -> dict[str, list]:  # noqa: ANN001
    """{"this" (, "base"): the JSON each child ``flag END --src SRC`` printed last, per round}: this
    checkout's and ``--baseline-src``'s children interleaved, ``--rounds`` times; ``progress(x)``
    says one child's result on stderr (:func:`sections`, :func:`outside`)."""
    import json
    import subprocess

    srcs = {"this": str(ROOT), **({"base": str(Path(args.baseline_src).resolve())} if args.baseline_src else {})}
    got: dict[str, list] = {k: [] for k in srcs}
    for r in range(args.rounds):
        for k, src in srcs.items():
            out = subprocess.run([sys.executable, __file__, flag, str(end), "--src", src],
                                 capture_output=True, text=True, env={**os.environ, "PYTHONSAFEPATH": "1"})
            if out.returncode:
                raise SystemExit(out.stderr[-2000:])
            got[k].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{args.rounds} {k}: {progress(got[k][-1])}", file=sys.stderr)
    return got


def sections(args: argparse.Namespace) -> None:
    """``--sections END``: where the layer's CPU goes in a whole run, per task (children of
    :func:`sections_child`, this checkout's and ``--baseline-src``'s interleaved)."""
    got = _children(args, "--sections-child", args.sections,
                    lambda x: f"run {x['moe']:.2f} s CPU, core alone {x['core']:.2f} s")
    print(f"grid6_moe, seed 42, {args.sections:g} s, serial; CPU seconds, median of {args.rounds} rounds; "
          "per task: over the run's tasks")
    for k, rounds in got.items():
        med = (lambda f: statistics.median(f(x) for x in rounds))
        n = rounds[0]["tasks"]
        layer = med(lambda x: x["moe"] - x["core"])
        print(f"[{k}] {n} tasks; start-up: Python, numpy, cosim and the solvers' module {med(lambda x: x['start']):.2f} s, "
              f"import torch {med(lambda x: x['torch']):.2f} s, the gate's modules {med(lambda x: x['modules']):.2f} s; "
              f"run with the layer {med(lambda x: x['moe']):.2f} s, core alone "
              f"{med(lambda x: x['core']):.2f} s: the layer in the run {layer:.2f} s = {1e3 * layer / n:.1f} ms per task")
        print(f"  {'section':34s} {'calls':>7s} {'incl ms/task':>13s} {'self ms/task':>13s} {'self us/call':>13s}")
        for label in sorted(rounds[0]["incl"], key=lambda s: -rounds[0]["incl"][s]):
            c = rounds[0]["calls"][label]
            inc, own = med(lambda x: x["incl"].get(label, 0.0)), med(lambda x: x["own"].get(label, 0.0))
            print(f"  {label:34s} {c:7d} {1e3 * inc / n:13.2f} {1e3 * own / n:13.2f} {1e6 * own / c:13.1f}")


def outside_child(end: float) -> None:
    """One process: torch imported, numba's kernels loaded (each solver, a Nash gap and an outcome
    on two small games: their cache load and first calls, timed apart), then a serial grid6_moe
    run (seed 42) to END seconds after a 10 s warm-up run with no layers, with the layer's
    ``on_start``, ``on_slot``, ``on_end``, its construction, ``_prices`` and ``GateModel.load``
    timed (``time.process_time``, inclusive); prints one JSON line."""
    import dataclasses
    import json

    t0 = time.process_time()
    import torch  # noqa: F401

    t_torch = time.process_time() - t0
    from cosim.layers.moe import layer as L
    from cosim.layers.moe import model as M

    t0 = time.process_time()
    rng = np.random.default_rng(1)
    for n in (3, 8):
        g = Game(rng.uniform(0.01, 0.05, n), rng.uniform(0.2, 1.0, n), rng.uniform(5, 20, n))
        for fn in SOLVERS.values():
            fn(g, np.random.default_rng(0), SolverConfig())
        g.nash_gap(np.full((2, n), 5.0), grid=48, refine=12)
        g.outcome(np.full((1, n), 5.0))
    t_numba = time.process_time() - t0
    acc: dict[str, float] = {}

    def timed(owner, name, label):  # noqa: ANN001, ANN202
        fn = getattr(owner, name)

        def inner(*a, **k):  # noqa: ANN002, ANN003, ANN202
            t = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                acc[label] = acc.get(label, 0.0) + time.process_time() - t
        setattr(owner, name, inner)

    for name in ("on_start", "on_slot", "on_end", "__init__", "_prices"):
        timed(L.MoELayer, name, name)
    timed(M.GateModel, "load", "gate")
    import cosim

    from cosim.api import configure

    cfg = configure(ROOT / "scenarios" / "grid6_moe.toml", end_s=end, seed=42, jobs=1)
    with tempfile.TemporaryDirectory() as tmp:
        cosim.run(dataclasses.replace(cfg, layers={}, scenario=dataclasses.replace(cfg.scenario, end_s=10.0)),
                  out=Path(tmp) / "warm", overwrite=True)
        t0 = time.process_time()
        res = cosim.run(cfg, out=Path(tmp) / "moe", overwrite=True)
        t_run = time.process_time() - t0
        tasks = int(res["moe_tasks"]["task"].nunique())
    print(json.dumps({"torch": t_torch, "numba": t_numba, "run": t_run, "tasks": tasks, **acc}))


def outside(args: argparse.Namespace) -> None:
    """``--outside END`` (issue 32, fourth pass): the MoE layer's CPU per task outside the gate
    model — its ``on_start``, ``on_slot`` and ``on_end`` less ``GateModel.load`` — and of it the
    pricing calls (``_prices``: the solvers and their wrappers), numba's cache load and torch's
    import done before the run; children of :func:`outside_child`, this checkout's and
    ``--baseline-src``'s interleaved, ``--rounds`` times (min / median)."""
    got = _children(args, "--outside-child", args.outside, lambda x: f"run {x['run']:.2f} s CPU")
    print(f"grid6_moe, seed 42, {args.outside:g} s, serial; ms of CPU per task, min / median of {args.rounds} rounds")
    for k, rounds in got.items():
        n = rounds[0]["tasks"]

        def show(f) -> str:  # noqa: ANN001
            v = [f(x) for x in rounds]
            return f"{min(v):.2f} / {statistics.median(v):.2f}"

        out_gate = (lambda x: 1e3 * (x["on_start"] + x["on_slot"] + x["on_end"] - x["gate"]) / n)
        print(f"[{k}] {n} tasks: outside the gate {show(out_gate)} (pricing {show(lambda x: 1e3 * x['_prices'] / n)}, "
              f"the rest {show(lambda x: out_gate(x) - 1e3 * x['_prices'] / n)}); the gate model "
              f"{show(lambda x: 1e3 * x['gate'] / n)}; the layer's construction {show(lambda x: 1e3 * x['__init__'])} ms "
              f"a run; before the run: numba's kernels {show(lambda x: 1e3 * x['numba'])} ms, torch's import "
              f"{show(lambda x: 1e3 * x['torch'])} ms; the whole run {show(lambda x: x['run'])} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ivs", type=int, default=20)
    ap.add_argument("--games", type=int, default=20)
    ap.add_argument("--jit", choices=["on", "off", "both"], default="both",
                    help="the compiled kernels, the numpy code, or both interleaved (default)")
    ap.add_argument("--grid6", type=float, metavar="END", help="time the pricing calls of a grid6_moe run to END s")
    ap.add_argument("--rounds", type=int, default=3, help="--grid6: interleaved rounds (default 3)")
    ap.add_argument("--gate", type=float, metavar="END", help="time the gate routings of a grid6_moe run to END s")
    ap.add_argument("--baseline-src", metavar="DIR", help="--gate: also replay DIR's gate model, interleaved")
    ap.add_argument("--device", default="cpu",
                    help="--gate: also replay the gate model on this device (cpu, auto, cuda, cuda:N: checked as "
                         "[layers.moe] device is), interleaved with the CPU's: its CPU and wall per task, that its "
                         "replays agree bit for bit, and how many routed pairs differ from the CPU's")
    ap.add_argument("--sections", type=float, metavar="END",
                    help="where the layer's CPU goes in a grid6_moe run to END s, per task (with --baseline-src: "
                         "DIR's too, interleaved)")
    ap.add_argument("--outside", type=float, metavar="END",
                    help="the layer's CPU per task outside the gate model in a grid6_moe run to END s (with "
                         "--baseline-src: DIR's too, interleaved; --rounds)")
    ap.add_argument("--outside-child", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--sections-child", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.outside_child:
        outside_child(args.outside_child)
    elif args.outside:
        outside(args)
    elif args.sections_child:
        sections_child(args.sections_child)
    elif args.sections:
        sections(args)
    elif args.gate:
        gate(args)
    elif args.grid6:
        grid6(args)
    else:
        random_games(args)


if __name__ == "__main__":
    main()
