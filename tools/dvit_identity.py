#!/usr/bin/env python3
"""Do the DViT layer's results stay bit-identical across a code change? (issue 14)

    python tools/dvit_identity.py --save runs/dvit-ref          # on the reference commit
    python tools/dvit_identity.py --check runs/dvit-ref         # after the change
    python tools/dvit_identity.py --check runs/dvit-ref --only grid6-sim-migrate town-analytic-migrate

Runs the DViT layer (all seven built-in schedulers) over a fixed set of cases — grid6 and the
OSM town, live SUMO and the replay of a recorded trace, both queue models, ``handover`` fail and
migrate, routes and straight-ahead positions, both presets — and compares every table the runs
write and ``summary.json`` value for value with the saved reference (:func:`cosim.compare.differences`,
as ``cosim compare`` does: measured timings, the folder's path and the installed plugins left out).
Prints each case's plugin CPU seconds against the reference's (one run each: noisy).

Deliberate changes of decisions (so a reference saved before them differs), with the commit
that made them: issue 25 (i25-dvit) — MBDI ranks the RSU by its full band w0 (every case: MBDI's
rows and block), and a re-plan from a helper labels device 0 a helper (MDDI and VLI may keep the
latent: the rows of tasks they re-planned from a helper — reschedules, migrations).
``python tools/dvit_diff.py REF/CASE NEW/CASE`` says which policies' tasks changed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cosim.compare import differences

ROOT = Path(__file__).resolve().parents[1]
GRID6 = ROOT / "scenarios" / "grid6_dvit.toml"
TOWN = ROOT / "scenarios" / "town.toml"
TOWN_DVIT = ["rsu.radius_m=150.0", 'layers.dvit.policies=["vidi", "optimal", "mddi", "mbdi", "mcpdi", "vli", "sdi"]']
TRACE_S = 300  # the recorded grid6 trace replayed by the replay cases

#: name -> (command, scenario, end [s], --set overrides); "replay" cases read the recorded trace
CASES = {
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


def cosim(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "cosim", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"dvit_identity: failed: cosim {' '.join(args)}\n{proc.stderr[-2000:]}")


def run_case(name: str, out: Path, trace: Path) -> dict:
    command, scenario, end, sets = CASES[name]
    args = [command]
    if command == "replay":
        args += [str(trace), "--scenario"]
    args += [str(scenario), "--end", str(end), "--out", str(out), "--overwrite", "-q", "--no-coverage"]
    for s in sets:
        args += ["--set", s]
    cosim(*args)
    return json.loads((out / "summary.json").read_text())


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
    ap.add_argument("--only", nargs="+", choices=list(CASES), help="these cases only")
    args = ap.parse_args()
    names = args.only or list(CASES)
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
            before = json.loads((ref / name / "summary.json").read_text())["cpu_s"]["plugin_process"]
            diff = differences(ref / name, new)
            failed += bool(diff)
            print(f"{name:34s} {'DIFFERS' if diff else 'same   '} plugin CPU {s['cpu_s']['plugin_process']:6.2f} s "
                  f"(reference {before:.2f} s)", flush=True)
            for line in diff:
                print(f"    {line}")
            shutil.rmtree(new)
    if failed:
        raise SystemExit(f"dvit_identity: {failed} case(s) differ")


if __name__ == "__main__":
    main()
