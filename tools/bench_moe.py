#!/usr/bin/env python3
"""Pricing-round time and equilibrium quality of every MoE pricing solver (GECPA for 20 IVs in
<= 50 ms per round), on random games of the layer's default scale. Times are CPU seconds of this
process (``time.process_time``: steady on a shared machine) and wall seconds; ``evals`` is the
follower evaluations a round spends (the solvers' budget: gradient and evolutionary get GECPA's).

    python tools/bench_moe.py [--ivs 20] [--games 20]

For the layer's share of a whole run, use the side-by-side benchmark:
    python tools/bench_overhead.py scenarios/grid6_moe.toml --no-traci
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosim import registry  # noqa: E402
from cosim.layers.moe.game import Game, SolverConfig, exact_equilibrium  # noqa: E402

SOLVERS = {name: spec.fn for name, spec in registry.policies("moe").items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ivs", type=int, default=20)
    ap.add_argument("--games", type=int, default=20)
    args = ap.parse_args()
    cfg = SolverConfig()
    games = []
    for seed in range(args.games):
        rng = np.random.default_rng(seed)
        # work per IV for 8 layers x 8 experts x top-2 x 256 tokens over the IVs; the layer's ranges
        games.append(Game(rng.uniform(0.01, 0.05, args.ivs), rng.uniform(0.2, 1.0, args.ivs), rng.uniform(5, 20, args.ivs)))
    for g in games[:2]:  # warm-up
        SOLVERS["gecpa"](g, np.random.default_rng(0), cfg)
    print(f"{args.games} random games with {args.ivs} IVs; Nash gap from a 256-point grid + golden section")
    print(f"{'solver':13s} {'cpu ms med':>10s} {'cpu max':>8s} {'wall med':>9s} {'evals':>7s} {'mean gap':>10s} "
          f"{'max gap':>9s} {'mean IV utility':>16s}")
    for name, solve in SOLVERS.items():
        cpu, wall, gaps, util, evals = [], [], [], [], []
        for i, g in enumerate(games):
            before = g.evals
            t0, c0 = time.perf_counter(), time.process_time()
            p = solve(g, np.random.default_rng(i), cfg)
            cpu.append(1e3 * (time.process_time() - c0))
            wall.append(1e3 * (time.perf_counter() - t0))
            evals.append(g.evals - before)
            gaps.append(g.nash_gap(p[None], grid=256, refine=40)[0])
            util.append(g.outcome(p[None])["u_iv"].mean())  # over every IV offered a price
        print(f"{name:13s} {np.median(cpu):10.2f} {max(cpu):8.2f} {np.median(wall):9.2f} {int(np.mean(evals)):7d} "
              f"{np.mean(gaps):10.4f} {max(gaps):9.4f} {np.mean(util):16.4f}")
    interior = [(g, *exact_equilibrium(g)) for g in games]
    interior = [(g, p) for g, p, f in interior if (f > 0).all() and (f < g.F).all()]
    if interior:
        gaps = [g.nash_gap(p[None], grid=256, refine=40)[0] for g, p in interior]
        print(f"exact equilibrium (linear solve) where interior ({len(interior)} games): mean gap {np.mean(gaps):.2e}")
    print("target: gecpa <= 50 ms (CPU) per round for 20 IVs")


if __name__ == "__main__":
    main()
