#!/usr/bin/env python3
"""Would spreading a layer's policies over worker processes pay on this machine? (issue 14)

    python tools/bench_policy_split.py                       # grid6, 300 s, every built-in layer
    python tools/bench_policy_split.py --end 600 --layers moe

Measured, not guessed: each run is ``cosim run SCENARIO --jobs 2`` (SUMO in its own process), so
the CPU seconds of the plugin's process are the plugin's work alone. Per layer it runs the core
alone (C0), the layer with all its default policies (C_all) and with each policy alone (C_p).
With k policies, the layer's shared work S (requests, world-derived preparation, recording) and
each policy's own work w_p follow from C_p - C0 = S + w_p and C_all - C0 = S + sum(w_p):

    S = (sum_p (C_p - C0) - (C_all - C0)) / (k - 1)

A worker holding some of the policies needs the slot's world every slot: the snapshot pickled
and unpickled, and the world rebuilt from it (``World.update``) — measured here in-process on
this scenario's snapshots. The bound printed is the best any split of the policies over two
processes could do (the heaviest policies balanced greedily), before any scheduling loss.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cosim  # noqa: E402
from cosim import registry  # noqa: E402
from cosim.sources.base import SNAPSHOT_FIELDS  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
from bench_overhead import LAYER_LOADS, layer_sets  # noqa: E402


def plugin_cpu(scenario: Path, end: float, extra: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "cosim", "run", str(scenario), "-q", "--jobs", "2", "--end", f"{end:g}",
           "--out", str(out), "--overwrite", *extra]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench: failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return cosim.load(out).require_summary()


def shipping_cost(scenario: Path, end: float) -> tuple[float, float, int]:
    """Per slot [ms CPU]: pickling + unpickling the snapshot; rebuilding the world from it."""
    from cosim import config as cfgmod
    from cosim.engine.spec import resolve
    from cosim.sources.sumo import SumoSource, sumo_command
    from cosim.world.world import World

    cfg = cfgmod.load(scenario)
    sc = cfg.scenario
    prep = resolve(cfg)
    src = SumoSource(sumo_command(sc.sumocfg, seed=sc.seed, end_s=end, step_length_s=prep.timeline.step_s),
                     fields=())
    src.start()
    world = World(cfg, prep.net, rsus=prep.rsus)
    ship = rebuild = 0.0
    n = peak = 0
    try:
        for k in range(1, int(end / sc.slot_s) + 1):
            snap = src.step_to(k * sc.slot_s)
            t0 = time.process_time()
            blob = pickle.dumps(("snap", (snap.time_s, *(getattr(snap, f) for f in SNAPSHOT_FIELDS))),
                                protocol=pickle.HIGHEST_PROTOCOL)
            pickle.loads(blob)
            t1 = time.process_time()
            world.update(snap, slot=k - 1)
            t2 = time.process_time()
            if k > end / sc.slot_s / 2:  # traffic at its level
                ship, rebuild, n = ship + t1 - t0, rebuild + t2 - t1, n + 1
                peak = max(peak, len(snap))
    finally:
        src.close()
    return 1e3 * ship / n, 1e3 * rebuild / n, peak


def best_two_way(work: dict[str, float], a: float = 0.0, b: float = 0.0) -> float:
    """The busier of two processes that start with loads ``a`` and ``b`` after a greedy
    (heaviest first, to the less loaded) split of the policies' work between them."""
    for w in sorted(work.values(), reverse=True):
        a, b = (a + w, b) if a <= b else (a, b + w)
    return max(a, b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", nargs="?", default=str(ROOT / "scenarios" / "grid6.toml"),
                    help="a scenario without layers (default scenarios/grid6.toml)")
    ap.add_argument("--end", type=float, default=300.0, help="simulated seconds per run (default 300)")
    ap.add_argument("--layers", default=",".join(LAYER_LOADS), help="layers to measure (default: all built-in)")
    args = ap.parse_args()
    scen, tmp = Path(args.scenario), Path(tempfile.mkdtemp(prefix="cosim-split-"))
    slots = args.end  # 1 s slots
    core = plugin_cpu(scen, args.end, [], tmp / "core")
    c0, sumo = core["cpu_s"]["plugin_process"], core["cpu_s"]["sumo_process"]
    ship_ms, rebuild_ms, peak = shipping_cost(scen, args.end)
    print(f"scenario {scen.name}, {args.end:g} s, up to {peak} vehicles; CPU seconds of the plugin's process "
          f"(--jobs 2): core alone {c0:.2f} s, SUMO's process {sumo:.2f} s")
    print(f"a policy worker's cost per slot: snapshot pickled + unpickled {ship_ms:.2f} ms, world rebuilt "
          f"{rebuild_ms:.2f} ms ({(ship_ms + rebuild_ms) * slots / 1e3:.2f} s over the run)")
    for name in args.layers.split(","):
        field = next(f for f in dataclasses.fields(registry.layer_class(name).config_class) if f.name == "policies")
        policies = field.default_factory() if field.default is dataclasses.MISSING else field.default
        load = layer_sets([name])
        c_all = plugin_cpu(scen, args.end, load, tmp / f"{name}-all")["cpu_s"]["plugin_process"] - c0
        single = {p: plugin_cpu(scen, args.end, [*load, "--set", f"layers.{name}.policies={json.dumps([p])}"],
                                tmp / f"{name}-{p}")["cpu_s"]["plugin_process"] - c0 for p in policies}
        k = len(policies)
        shared = max(0.0, (sum(single.values()) - c_all) / (k - 1))
        work = {p: max(0.0, v - shared) for p, v in single.items()}
        extra = (ship_ms + rebuild_ms) * slots / 1e3  # the world reaching the worker, every slot
        plugin_now = c0 + c_all
        # the plugin's process keeps the core, the shared work and some policies; the worker the rest
        plugin_split = best_two_way(work, c0 + shared, extra)
        serial_split = best_two_way(work, sumo + c0 + shared, extra)  # SUMO in the plugin's process
        print(f"\n[{name}] {k} policies: layer {c_all:.2f} s = shared {shared:.2f} s + policies "
              f"{sum(work.values()):.2f} s ({', '.join(f'{p} {w:.2f}' for p, w in work.items())})")
        print(f"  plugin side today {plugin_now:.2f} s; its policies split over 2 processes: the busier "
              f"{plugin_split:.2f} s (the world reaches the worker in {extra:.2f} s)")
        print(f"  the run on 2 cores (lower bounds: its busiest process, its CPU / 2): serial today "
              f"{sumo + plugin_now:.2f} s; pipelined today {max(sumo, plugin_now):.2f} s; serial + a policy "
              f"worker {serial_split:.2f} s; pipelined + a policy worker (3 processes) "
              f"{max(sumo, plugin_split, (sumo + plugin_now + extra) / 2):.2f} s")


if __name__ == "__main__":
    main()
