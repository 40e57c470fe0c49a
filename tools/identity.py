#!/usr/bin/env python3
"""Do a run's results stay bit-identical across a code change? (issues 14, 26, 32)

    python tools/identity.py --save runs/ref                    # on the reference commit
    python tools/identity.py --check runs/ref                   # after the change
    python tools/identity.py --check runs/ref --group engine    # one group of cases
    python tools/identity.py --check runs/ref --only grid6-sim-migrate town-analytic-migrate

Two groups of fixed cases (``--group``, default both):

- ``dvit`` — the DViT layer (all seven built-in schedulers) on grid6 and the OSM town, live SUMO
  and the replay of a recorded trace, both queue models, ``handover`` fail and migrate, routes and
  straight-ahead positions, both presets;
- ``engine`` — every layer on at once (``grid6_all.toml``) the ways a run can be driven: serial,
  ``--jobs 3``, the TraCI backend, replayed serially and with ``--jobs 3``; the OSM town with every
  layer; the paper-000 world; the MoE layer's three configurations (default, ``reroute = "regate"``,
  ``placement = "load"``) and the cache's two miss models.

Every table the runs write and ``summary.json`` are compared value for value with the saved
reference (:func:`cosim.compare.differences`, as ``cosim compare`` does: measured timings, the
folder's path and the installed plugins left out). Prints each case's plugin CPU seconds against
the reference's (one run each: noisy).

Deliberate changes of decisions (so a reference saved before them differs), with the commit
that made them: issue 25 (i25-dvit) — MBDI ranks the RSU by its full band w0 (every case: MBDI's
rows and block), and a re-plan from a helper labels device 0 a helper (MDDI and VLI may keep the
latent: the rows of tasks they re-planned from a helper — reschedules, migrations).
``python tools/dvit_diff.py REF/CASE NEW/CASE`` says which policies' tasks changed.
Issue 27 (branch routes) — ``world.dwell_model`` defaults to ``auto`` (``route`` on a source with
routes) and grid6.toml no longer pins ``straight``: every case that does not pin the model
(all but paper000) differs in coverage.parquet's ``dwell_s``, summary.json's
``dwell_prediction``, and the DViT rows of VIDI, ``optimal`` and ``optimal-cl`` (the other
schedulers' ``vs_baseline`` through VIDI's). Issue 26 (branch routes) — one route walker (lane
shapes, internal edges): VIDI's rows wherever ``ahead = "route"`` with routes (paper000 stays
identical), and ``lc-predictive``'s rows of the cache cases (cache-cloud, cache-wait).
Branch papersfix (review of the papers) — SDI draws only among devices it has a link to: SDI's
rows and block in every DViT case where a draw could reach an unlinked device (every case but
town-sim-fail; town-analytic-migrate 2 plans), nothing else (dvit_diff: every other policy's
tasks identical).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cosim.compare import differences
from cosim.results import load

ROOT = Path(__file__).resolve().parents[1]
GRID6 = ROOT / "scenarios" / "grid6_dvit.toml"
ALL = ROOT / "scenarios" / "grid6_all.toml"
MOE = ROOT / "scenarios" / "grid6_moe.toml"
CACHE = ROOT / "scenarios" / "grid6_cache.toml"
PAPER000 = ROOT / "scenarios" / "paper000.toml"
TOWN = ROOT / "scenarios" / "town.toml"
TOWN_DVIT = ["rsu.radius_m=150.0", 'layers.dvit.policies=["vidi", "optimal", "mddi", "mbdi", "mcpdi", "vli", "sdi"]']
TRACE_S = 300  # the recorded grid6 trace replayed by the replay cases

#: name -> (command, scenario, end [s], --set overrides, extra arguments); "replay" cases read the
#: recorded trace
DVIT = {
    "grid6-analytic-fail": ("run", GRID6, 600, []),
    "grid6-sim-fail": ("run", GRID6, 300, ['layers.dvit.queue="simulated"']),
    "grid6-analytic-migrate": ("run", GRID6, 300, ['layers.dvit.handover="migrate"']),
    "grid6-sim-migrate": ("run", GRID6, 600, ['layers.dvit.queue="simulated"', 'layers.dvit.handover="migrate"']),
    "grid6-sim-migrate-straight-busy": ("run", GRID6, 200, ['layers.dvit.queue="simulated"',
                                                            'layers.dvit.handover="migrate"',
                                                            'layers.dvit.ahead="straight"',
                                                            "layers.dvit.request_rate_per_s=4.0"]),
    "grid6-paper-literal": ("run", GRID6, 120, ['layers.dvit.preset="paper-literal"']),
    # every policy closed loop, straight-ahead look-ahead, optimal-cl among them (issue 25: a
    # reference saved before layers.dvit.replan existed has no such case; --check skips it)
    "grid6-every-step-straight": ("run", GRID6, 200, ['layers.dvit.replan="every-step"', 'layers.dvit.ahead="straight"',
                                                      'layers.dvit.policies=["vidi", "optimal", "optimal-cl", "mddi", '
                                                      '"mbdi", "mcpdi", "vli", "sdi"]']),
    "town-analytic-migrate": ("run", TOWN, 300, [*TOWN_DVIT, 'layers.dvit.handover="migrate"']),
    "town-sim-fail": ("run", TOWN, 300, [*TOWN_DVIT, 'layers.dvit.queue="simulated"']),
    "replay-analytic-fail": ("replay", GRID6, TRACE_S, []),
    "replay-sim-migrate": ("replay", GRID6, TRACE_S, ['layers.dvit.queue="simulated"',
                                                      'layers.dvit.handover="migrate"']),
}
TOWN_ALL = ["rsu.radius_m=150.0", "layers.dvit.request_rate_per_s=1.0",
            "layers.cache.request_rate_per_vehicle_s=0.05", "layers.moe.request_rate_per_s=0.2"]
ENGINE = {
    "all-serial": ("run", ALL, 300, [], []),
    "all-jobs3": ("run", ALL, 300, [], ["--jobs", "3"]),
    "all-traci": ("run", ALL, 200, [], ["--backend", "traci"]),
    "all-replay": ("replay", ALL, TRACE_S, [], []),
    "all-replay-jobs3": ("replay", ALL, TRACE_S, [], ["--jobs", "3"]),
    "town-all": ("run", TOWN, 200, TOWN_ALL, []),
    "paper000": ("run", PAPER000, 120, [], []),
    "moe-default": ("run", MOE, 200, [], []),
    "moe-regate": ("run", MOE, 200, ['layers.moe.reroute="regate"'], []),
    "moe-load": ("run", MOE, 200, ['layers.moe.placement="load"'], []),
    "cache-cloud": ("run", CACHE, 300, [], []),
    "cache-wait": ("run", CACHE, 300, ['layers.cache.miss="wait"'], []),
}
GROUPS = {"dvit": {k: (*v, []) for k, v in DVIT.items()}, "engine": ENGINE}
CASES = {k: v for group in GROUPS.values() for k, v in group.items()}


def cosim(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "cosim", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"identity: failed: cosim {' '.join(args)}\n{proc.stderr[-2000:]}")


def run_case(name: str, out: Path, trace: Path) -> dict:
    command, scenario, end, sets, extra = CASES[name]
    args = [command]
    if command == "replay":
        args += [str(trace), "--scenario"]
    args += [str(scenario), "--end", str(end), "--out", str(out), "--overwrite", "-q", "--no-coverage"]
    for s in sets:
        args += ["--set", s]
    cosim(*args, *extra)
    return load(out).require_summary()


def record_trace(trace: Path) -> None:
    """The grid6 traffic the replay cases read (core alone, recorded exactly)."""
    with tempfile.TemporaryDirectory() as tmp:
        cosim("run", str(GRID6), "--no-layers", "--end", str(TRACE_S), "--out", tmp, "--overwrite", "-q",
              "--no-coverage", "--record", str(trace))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--save", type=Path, help="write the reference results here")
    mode.add_argument("--check", type=Path, help="compare against the reference saved here")
    ap.add_argument("--group", choices=list(GROUPS), help="this group of cases only (default: every group)")
    ap.add_argument("--only", nargs="+", choices=list(CASES), help="these cases only")
    args = ap.parse_args()
    names = args.only or list(GROUPS[args.group] if args.group else CASES)
    ref = (args.save or args.check).resolve()
    ref.mkdir(parents=True, exist_ok=True)
    trace = ref / "grid6-trace.parquet"
    if args.save and not trace.exists() and any(CASES[n][0] == "replay" for n in names):
        record_trace(trace)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if args.save:
                s = run_case(name, ref / name, trace)
                print(f"{name:34s} saved   plugin CPU {s['cpu_s']['plugin_process']:6.2f} s", flush=True)
                continue
            if not (ref / name / "summary.json").exists():
                print(f"{name:34s} skipped (no reference: saved before this case existed)", flush=True)
                continue
            new = Path(tmp) / name
            s = run_case(name, new, trace)
            before = load(ref / name).require_summary()["cpu_s"]["plugin_process"]
            diff = differences(ref / name, new)
            failed += bool(diff)
            print(f"{name:34s} {'DIFFERS' if diff else 'same   '} plugin CPU {s['cpu_s']['plugin_process']:6.2f} s "
                  f"(reference {before:.2f} s)", flush=True)
            for line in diff:
                print(f"    {line}")
            shutil.rmtree(new)
    if failed:
        raise SystemExit(f"identity: {failed} case(s) differ")


if __name__ == "__main__":
    main()
