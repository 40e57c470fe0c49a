#!/usr/bin/env python3
"""Reproduce a paper: its published claims, ours in the paper's own world, ours on SUMO traffic.

    python tools/reproduce.py 002                 # the cache paper (Table II)
    python tools/reproduce.py 000                 # the DViT paper (Figs. 3-6)
    python tools/reproduce.py 002 --seeds 2 --end 60          # a quick look (too few seeds to judge)
    python tools/reproduce.py 002 --write-docs    # also rewrite the paper's generated docs section

One ``cosim sweep`` per experiment of the paper, over every world (the paper's world, grid6, the
OSM town), every policy side by side in each run, ``--seeds`` seeds (10 by default; the sweep
resumes where it stopped). It prints, and writes to ``--out`` (``runs/reproduce/NNN``):

* the paper's claims, each judged in every world (per-seed paired differences, Student-t 95 %
  half-widths, paired t-tests Holm-adjusted over the experiment's claims in that world), with our
  explanation where one does not hold;
* per grid point and metric, side by side: the paper's number, ours in each world (mean over
  seeds, rank, and the paired gap to the paper's proposal) and **what realistic traffic changed**:
  per seed number, the SUMO world minus the paper's world — the metric's level, the gap to the
  proposal and the rank (tools/repro/core.py says why that pairing is valid);
* the configuration keys that differ between the worlds;
* a figure per experiment (each policy's relative gap to the proposal, per world, the paper's cross).

A paper is a module tools/repro/paperNNN.py with ``PAPER = core.Paper(...)`` (docs/paper_worlds.md,
"Reproducing a paper").
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from repro import core  # noqa: E402


def papers() -> list[str]:
    return sorted(p.stem[len("paper"):] for p in (HERE / "repro").glob("paper[0-9]*.py"))


def load(key: str) -> core.Paper:
    if key not in papers():
        raise SystemExit(f"tools/reproduce.py: no paper {key!r} (known: {', '.join(papers())}; a paper is "
                         f"tools/repro/paper{key}.py)")
    return importlib.import_module(f"repro.paper{key}").PAPER


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="papers: " + ", ".join(papers()))
    ap.add_argument("paper", help="the paper's number, e.g. 002")
    ap.add_argument("--seeds", type=int, help="seeds 1..N per world and grid point (default: the paper's, 10)")
    ap.add_argument("--end", type=float, help="simulated seconds per run (default: the paper's, 300)")
    ap.add_argument("--out", type=Path, help="results folder (default: runs/reproduce/NNN)")
    ap.add_argument("--jobs", type=int, help="parallel runs (default: the sweep's, every core)")
    ap.add_argument("--experiment", action="append", help="only this experiment (repeatable)")
    ap.add_argument("--world", action="append", help="only this world (repeatable; the paper's world is kept)")
    ap.add_argument("--no-run", action="store_true", help="only tabulate what the sweeps already hold")
    ap.add_argument("--nice", type=int, default=5, help="niceness of the runs (default 5; the machine is shared)")
    ap.add_argument("--write-docs", action="store_true", help="rewrite the paper's generated docs section and figure")
    ap.add_argument("-q", "--quiet", action="store_true", help="no sweep progress")
    args = ap.parse_args(argv)
    paper = load(args.paper)
    if args.world:
        keep = set(args.world) | {paper.worlds[0].name}
        unknown = keep - {w.name for w in paper.worlds}
        if unknown:
            raise SystemExit(f"--world {sorted(unknown)[0]}: paper {paper.key} has worlds "
                             f"{', '.join(w.name for w in paper.worlds)}")
        paper.worlds = [w for w in paper.worlds if w.name in keep]
    exps = [e for e in paper.experiments if not args.experiment or e.name in args.experiment]
    if not exps:
        raise SystemExit(f"--experiment: paper {paper.key} has {', '.join(e.name for e in paper.experiments)}")
    seeds, end = args.seeds or paper.seeds, args.end or paper.end_s
    out = args.out or core.ROOT / "runs" / "reproduce" / paper.key
    if args.nice:
        os.nice(args.nice)
    parts = [f"### Paper {paper.key} reproduced: {paper.title}", "",
             f"`python tools/reproduce.py {paper.key}`: {seeds} seeds x {end:g} s per world and grid point; "
             f"worlds: " + ", ".join(f"{w.label} (`{w.scenario}`"
                                     + (f", {', '.join(f'{k} = {v}' for k, v in w.set.items())}" if w.set else "")
                                     + ")" for w in paper.worlds) + ".", ""]
    parts += [*paper.notes, ""] if paper.notes else []
    figures = []
    for exp in exps:
        res_dir = out / exp.name
        if not args.no_run:
            res_dir = core.run_experiment(paper, exp, out, seeds, end, args.jobs, progress=not args.quiet)
        elif not (res_dir / "results.parquet").exists():
            raise SystemExit(f"{res_dir}: no results yet (run without --no-run)")
        res = core.results(paper, res_dir)
        parts += [core.report(paper, exp, res), ""]
        if paper.extra is not None:
            parts += [paper.extra(paper, exp, res), ""]
        parts += [f"Configuration keys that differ between the worlds ({exp.name}; every other key is the same):",
                  "", core.differing_keys(paper, exp), ""]
        fig = core.plot(paper, exp, res, out / f"{exp.name}.png")
        if fig is not None:
            figures.append((exp, fig))
    text = "\n".join(parts)
    (out / "report.md").write_text(text)
    print(text)
    if args.write_docs:
        rel = []
        for exp, fig in figures:
            dest = core.ROOT / "docs" / "figures" / "reproduce" / f"{paper.key}_{exp.name}.png"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fig, dest)
            rel.append(f"![paper {paper.key}, {exp.name}](figures/reproduce/{dest.name})")
        path = core.write_doc(paper, text + ("\n\n" + "\n\n".join(rel) if rel else ""))
        print(f"wrote {path.relative_to(core.ROOT)}", file=sys.stderr)
    print(f"wrote {out}/report.md" + "".join(f", {f}" for _, f in figures), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
