"""The ``cosim`` command line.

    cosim run scenarios/grid6.toml            # a cosim scenario
    cosim run my.sumocfg                      # any SUMO configuration, RSUs placed automatically
    cosim run scenarios/grid6.toml --backend traci --gui

Expected errors (bad input, missing SUMO, SUMO dying) print one line ``cosim: error: ...`` and
exit non-zero; no traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from pathlib import Path

from cosim.engine.signals import interrupts
from cosim.errors import CosimError, DiskFull, SumoDied, Terminated, WorkerDied, is_disk_full

EXIT_FAILED = 1  # the run failed mid-way (a layer's error, a policy worker died); results so far on disk
EXIT_ERROR = 2
EXIT_SUMO_DIED = 3
EXIT_DISK_FULL = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout went away (`| head`)


def _output_args(p: argparse.ArgumentParser, record: bool = False) -> None:
    """Options every command that writes a results folder shares (``record``: it has ``--record``)."""
    p.add_argument("--out", metavar="DIR", help="results folder (default: runs/<name>-s<seed>-<time>-<pid>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run's results in --out" + (" (and an earlier --record trace)" if record
                                                                        else "") + " instead of refusing")
    p.add_argument("--no-coverage", action="store_true", help="skip coverage.parquet (one row per vehicle and slot)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress line (SUMO's own warnings still show; all of SUMO's messages are in sumo.log)")
    p.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override any scenario key, e.g. --set layers.cache.gpu_memory_gb=40 (repeatable; "
                        "values are TOML: 40, 1e9, true, [1, 2], \"text\")")
    p.add_argument("--no-layers", action="store_true", help="run with every layer off (the core alone)")
    p.add_argument("--jobs", type=_jobs, metavar="N|auto",
                   help="processes for this run (scenario.jobs): 1 = all in one, 2 = SUMO / the trace reader one "
                        "slot ahead in its own, N >= 3 = also the layers' policies over N - 2 workers, auto (or 0, "
                        "as scenario.jobs = 0) = as many as the cores and the policies can use (same results "
                        "whatever N)")


def _jobs(text: str) -> int:
    """``--jobs`` of a run and of a sweep, one rule: a count >= 1, or ``auto`` or 0 (as
    scenario.jobs = 0): as many as the cores allow."""
    if text.strip().lower() in ("auto", "0"):
        return 0
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes or 'auto', not {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes >= 1 or 'auto', not {text!r}")
    return n


def _apply_output_args(cfg, args: argparse.Namespace):  # noqa: ANN001, ANN202
    from cosim import config as cfgmod

    steps = []  # (item, the configuration after it) for each --set of a layer key
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise CosimError(f"--set {item!r}: expected TABLE.KEY=VALUE")
        cfg = cfgmod.apply_overrides(cfg, {key.strip(): cfgmod.parse_value(text.strip())}, where=f"--set {item}")
        if key.strip().startswith("layers."):
            steps.append((item, cfg))
    if steps and not args.no_layers:
        from cosim.layers.base import validate_layers

        try:  # the layers built once, with every --set applied
            validate_layers(cfg, label=f"--set {steps[-1][0]}" if len(steps) == 1 else "--set")
        except CosimError:
            for item, partial in steps:  # an error names the first --set item that causes it
                validate_layers(partial, label=f"--set {item}")
            raise
    if args.no_coverage:
        cfg = cfg.replace(output={"coverage": False})
    if args.jobs is not None:
        cfg = cfg.replace(scenario={"jobs": args.jobs})
    if args.no_layers:
        import dataclasses

        cfg = dataclasses.replace(cfg, layers={})
    return cfg


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run SUMO with the plugin attached",
        description="Run a scenario (.toml) or any SUMO configuration (.sumocfg) with the plugin attached. "
                    "Writes summary.json, config.toml, coverage.parquet, rsus.parquet and the layers' tables "
                    "to the results folder.",
        epilog="A .sumocfg gets defaults for everything: RSUs on a lattice covering the network (500 m radius), "
               "slot 1 s, seed 42. Relative paths inside it resolve against its folder, as in SUMO.",
    )
    p.add_argument("target", help="scenario TOML file or SUMO .sumocfg")
    _output_args(p, record=True)
    p.add_argument("--backend", choices=("libsumo", "traci"), help="libsumo (in-process, default) or traci (socket)")
    p.add_argument("--gui", action="store_true", help="use sumo-gui (implies --backend traci; needs a display)")
    p.add_argument("--port", type=int, help="TraCI port (default: a free one)")
    p.add_argument("--seed", type=int, help="override the scenario seed (drives SUMO and every random draw)")
    p.add_argument("--world", choices=("sumo", "paper", "paper000", "paper001", "paper002"), default="sumo",
                   help="paper: run the scenario's layers in their paper's own world (no SUMO; DViT: paper000, MoE: "
                        "paper001, cache: paper002; scenarios/<world>.toml gives the network, traffic, RSU and "
                        "channel); "
                        "docs/paper_worlds.md")
    p.add_argument("--begin", type=float, metavar="S", help="override the begin time [s]")
    p.add_argument("--end", type=float, metavar="S", help="override the end time [s]")
    p.add_argument("--slot", type=float, metavar="S", help="override the slot length gamma [s]")
    p.add_argument("--step-length", type=float, metavar="S", help="override SUMO's step length [s]")
    p.add_argument("--sumo-binary", metavar="PATH", help="SUMO binary for the traci backend (default: the wheel's)")
    p.add_argument("--sumo-args", metavar="ARGS", default="",
                   help="extra SUMO options, one quoted string, e.g. \"--load-state s.xml.gz --time-to-teleport 60\"")
    p.add_argument("--record", metavar="TRACE", help="also record the traffic: TRACE.parquet or TRACE.csv[.gz] (exact, "
                                                    "for `cosim replay`), TRACE.fcd.parquet or TRACE.xml[.gz] (SUMO's own FCD output)")
    p.add_argument("--sumo-timeout", type=float, metavar="S",
                   help="TraCI: end the run when SUMO answers nothing for S seconds (frozen); 0 = wait forever "
                        "(scenario.sumo_timeout_s, default 60)")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from cosim import config as cfgmod
    from cosim.runner import run

    cfg = cfgmod.load_any(args.target)
    if args.world != "sumo":
        from cosim.sources.paper import with_world

        cfg = with_world(cfg, args.world)
    for flag, key, value in (("--seed", "seed", args.seed), ("--begin", "begin_s", args.begin), ("--end", "end_s", args.end),
                             ("--slot", "slot_s", args.slot), ("--step-length", "step_length_s", args.step_length),
                             ("--sumo-timeout", "sumo_timeout_s", args.sumo_timeout)):
        if value is not None:
            cfg = cfgmod.apply_overrides(cfg, {f"scenario.{key}": value}, where=f"{flag} {value:g}")
    cfg = _apply_output_args(cfg, args)
    if args.gui and not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        raise CosimError("--gui needs a display (DISPLAY is not set); run without --gui")
    try:
        sumo_args = shlex.split(args.sumo_args)
    except ValueError as exc:
        raise CosimError(f"--sumo-args {args.sumo_args!r}: {exc}") from None
    summary = run(cfg, args.out, backend=args.backend, gui=args.gui, port=args.port, progress=not args.quiet,
                  sumo_binary=args.sumo_binary, extra_sumo_args=sumo_args, record=args.record,
                  overwrite=args.overwrite)
    _report(summary, args.out)
    return 0


def _report(summary: dict, out_arg: str | None) -> None:
    w = summary["wall_s"]
    where = summary.get("out_dir") or out_arg
    print(f"{summary['slots']} slots, {summary['vehicles_seen']} vehicles, {len(summary['rsus'])} RSUs; "
          f"wall {w['total']:.1f}s (SUMO {w['sumo']:.1f}s, plugin {w['plugin']:.1f}s)")
    print(f"results: {where}")


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay", help="run the plugin on a recorded trace (no SUMO)",
        description="Replay a recorded trace through the same world and layers as a live run. A .parquet or "
                    ".csv[.gz] trace from `cosim run --record` reproduces the live run's results exactly; SUMO's FCD "
                    "(.xml[.gz] or Parquet: any `sumo --fcd-output`) to the precision it was written with.",
    )
    p.add_argument("trace", help="a trace of `cosim run --record`: TRACE.parquet or TRACE.csv[.gz] (exact), "
                                 "or SUMO's FCD output: TRACE.fcd.parquet (any sumo --fcd-output x.parquet, told by "
                                 "its columns) or TRACE.xml[.gz]")
    p.add_argument("--scenario", required=True, metavar="TOML", help="scenario (network, RSUs, layers, seed)")
    p.add_argument("--end", type=float, metavar="S", help="stop at this time [s] (default: the scenario's end)")
    _output_args(p)
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from cosim import config as cfgmod
    from cosim.runner import replay

    cfg = cfgmod.load_any(args.scenario)
    if args.end is not None:
        cfg = cfgmod.apply_overrides(cfg, {"scenario.end_s": args.end}, where=f"--end {args.end:g}")
    cfg = _apply_output_args(cfg, args)
    summary = replay(cfg, args.trace, args.out, progress=not args.quiet, overwrite=args.overwrite,
                     end_from=None if args.end is None else f"--end {args.end:g}")
    _report(summary, args.out)
    return 0


def _demand_args(p: argparse.ArgumentParser, period: float) -> None:
    p.add_argument("--name", required=True, help="writes sumo_nets/NAME/ and scenarios/NAME.toml")
    p.add_argument("--root", default=".", help="folder holding sumo_nets/ and scenarios/ (default: .)")
    p.add_argument("--period", type=float, default=period, help=f"seconds between departures (default {period:g})")
    p.add_argument("--fringe-factor", type=float, default=5.0, help="likelier trips from/to the fringe (default 5)")
    p.add_argument("--end", type=float, default=3600.0,
                   help="last departure [s], also the sumocfg's <end>; the scenario's end_s is the smaller of it and "
                        "600 (default 3600)")
    p.add_argument("--seed", type=int, default=42, help="seeds netgenerate/randomTrips (default 42)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the files an earlier build of NAME wrote (sumo_nets/NAME/NAME.net.xml, .rou.xml, "
                        ".sumocfg, .poly.xml with --polygons, scenarios/NAME.toml) instead of refusing; nothing else "
                        "in those folders is touched")


def _demand(args: argparse.Namespace):  # noqa: ANN202
    from cosim.netbuild import DemandSpec

    if args.period <= 0 or args.end <= 0:
        raise CosimError("--period and --end must be > 0")
    root = Path(args.root)
    if root.exists() and not root.is_dir():
        raise CosimError(f"--root {root}: is a file, not a folder")
    return DemandSpec(end_s=args.end, period_s=args.period, fringe_factor=args.fringe_factor,
                      min_distance_m=100.0, seed=args.seed)


def _add_netgen(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("netgen", help="generate a network (grid, spider, random) with demand and a scenario",
                       description="Build a SUMO network with netgenerate, random demand with randomTrips/duarouter, "
                                   "and a ready scenario TOML (RSUs on an automatic lattice).")
    p.add_argument("kind", choices=("grid", "spider", "random"),
                   help="grid: a Manhattan grid of --size x --size junctions, --length apart; spider: --size arms "
                        "(at least 3) and --size circles, --length apart; random: a random network grown over "
                        "20 x --size steps, junctions 0.5-1.5 x --length apart")
    p.add_argument("--size", type=int, default=5, help="grid: junctions per side; spider: arms and circles; "
                                                       "random: 20 x size growth steps (default 5)")
    p.add_argument("--length", type=float, default=200.0, help="block / ring spacing / edge length [m] (default 200)")
    p.add_argument("--lanes", type=int, default=2, help="lanes per direction (default 2)")
    _demand_args(p, period=0.5)
    p.set_defaults(func=cmd_netgen)


def cmd_netgen(args: argparse.Namespace) -> int:
    from cosim.netbuild import build_scenario, netgenerate

    if args.size < 2 or args.length <= 0 or args.lanes < 1:
        raise CosimError("--size >= 2, --length > 0 and --lanes >= 1 are needed")
    cfg, scen = build_scenario(
        args.name, Path(args.root), lambda out: netgenerate(args.kind, out, size=args.size, length_m=args.length,
                                                              lanes=args.lanes, seed=args.seed),
        _demand(args), comment=f"cosim netgen {args.kind} --size {args.size} --length {args.length:g}",
        overwrite=args.overwrite)
    print(f"network: {cfg}\nscenario: {scen}  (run it: cosim run {scen})")
    return 0


def _add_import_osm(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-osm", help="build a network, demand and scenario from an OpenStreetMap extract",
                       description="netconvert with urban settings (junction joining, guessed traffic lights, ramps, "
                                   "roundabouts; passenger roads), demand with randomTrips/duarouter, optional building "
                                   "polygons (polyconvert), RSUs on an automatic lattice, and a ready scenario TOML.")
    p.add_argument("osm", help="OpenStreetMap extract (.osm or .osm.gz / .osm.xml.gz)")
    p.add_argument("--polygons", action="store_true", help="also convert buildings etc. with polyconvert")
    _demand_args(p, period=1.0)
    p.set_defaults(func=cmd_import_osm)


def cmd_import_osm(args: argparse.Namespace) -> int:
    from cosim.netbuild import build_scenario, netconvert_osm

    osm = Path(args.osm)
    if not osm.is_file():
        raise CosimError(f"{osm}: no such OSM file")
    cfg, scen = build_scenario(args.name, Path(args.root), lambda out: netconvert_osm(osm, out), _demand(args),
                               polygons=osm if args.polygons else None,
                               comment=f"cosim import-osm {osm.name}\nMap data (c) OpenStreetMap contributors, ODbL 1.0",
                               overwrite=args.overwrite)
    print(f"network: {cfg}\nscenario: {scen}  (run it: cosim run {scen})")
    return 0


def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config", help="show a scenario's effective configuration, or every key with its default",
        description="Without FILE: every scenario key with its default, unit and meaning. With FILE (.toml or "
                    ".sumocfg): the effective configuration cosim would run, as TOML.",
    )
    p.add_argument("file", nargs="?", help="scenario .toml or SUMO .sumocfg")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="without FILE: also list the keys of this plugin module's layers and policies (repeatable; "
                        "installed cosim.plugins entry points are always listed)")
    p.set_defaults(func=cmd_config)


def cmd_config(args: argparse.Namespace) -> int:
    from cosim import config as cfgmod

    if args.file:
        from cosim.layers.base import validate_layers

        cfg = cfgmod.load_any(args.file)
        validate_layers(cfg)  # unknown layers, policies and options are errors here too
        sys.stdout.write(cfgmod.dump_toml(cfg))
    else:
        from cosim import registry

        registry.load_plugins(args.plugin, "--plugin", Path.cwd())
        sys.stdout.write(cfgmod.describe())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from cosim import __version__

    ap = argparse.ArgumentParser(
        prog="cosim",
        description="SUMO co-simulation for edge generative AI: maps every vehicle to road grids and RSU coverage, "
                    "draws the radio channel from SUMO distances, and drives DViT / MoE / model-cache layers "
                    "against the live traffic.",
        epilog="Run `cosim COMMAND --help` for a command's options.",
    )
    ap.add_argument("--version", action="version", version=f"cosim {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(sub)
    _add_replay(sub)
    _add_netgen(sub)
    _add_import_osm(sub)
    _add_config(sub)
    _add_sweep(sub)
    _add_plot(sub)
    _add_check(sub)
    _add_view(sub)
    _add_report(sub)
    _add_compare(sub)
    return ap


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", help="run the conformance suite on a policy or layer of yours (no SUMO)",
        description="Run the conformance suite the built-in policies and layers pass, on snapshots recorded from the "
                    "grid6 scenario (no SUMO): a DViT plan must respect C1/C2 and the local steps, a cache policy "
                    "must rank only cached models and keep memory, a pricing solver must return finite prices in "
                    "range, a layer's summary block must have the right shape, and so on (docs/plugins.md). "
                    "Prints one line per violation; exit status 1 if any. An error of cosim itself met on the way "
                    "is not a verdict on your code: it is printed apart, with a traceback file to report, and "
                    "exits 3 when it is all there is.",
    )
    p.add_argument("targets", nargs="+", metavar="TARGET",
                   help="MODULE:NAME of a registered policy or layer (e.g. my_lab.schedulers:my_greedy), "
                        "a layer name (the layer and all its policies), or 'all'")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="also import this module first (repeatable)")
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from cosim import conformance, registry

    registry.load_plugins(args.plugin, "--plugin", Path.cwd())
    targets = [t for name in args.targets for t in conformance.resolve(name)]
    n, lines = conformance.run_checks(targets)
    for line in lines:
        print(line)
    internal = [ln for ln in lines if ln.startswith(conformance.INTERNAL)]
    problems = len(lines) - len(internal)
    names = ", ".join(f"{getattr(o, 'layer', '')} {o.name}".strip() if k == "policy" else f"layer {o.name}"
                      for k, o in targets)
    verdict = f"{problems} violation(s)" if problems else "all conform" if not internal else "no violation found"
    if internal:
        verdict += f"; {len(internal)} internal error(s) of cosim (not a verdict: report them)"
    print(f"cosim check: {n} target(s) ({names}): {verdict}", file=sys.stderr)
    return 1 if problems else 3 if internal else 0


#: stands in ``cosim sweep --help`` for the sweep file's keys, listed from the dataclasses that check them
_SWEEP_KEYS = "(the sweep file's keys)"


class _SweepHelp(argparse.HelpFormatter):
    """Writes the sweep file's keys (:func:`cosim.sweep.describe`, imported only for the help) line by line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text != _SWEEP_KEYS:
            return super()._fill_text(text, width, indent)
        from cosim import sweep

        return "".join(indent + line + "\n" for line in sweep.describe().splitlines())


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="run a grid of parameters x seeds x scenarios in parallel, merge the results",
        description="Expand a sweep file (a [grid] of scenario keys x seeds x scenarios) into runs, execute them in "
                    "parallel processes on this machine (or as Ray tasks), and merge every run's summary into "
                    "results.parquet and summary.csv (mean and 95 % CI over seeds) and paired.csv (each policy minus the layer's baseline, per seed, with a 95 % interval). Re-running skips finished "
                    "runs whose inputs are unchanged (one whose configuration, SUMO files or plugin sources changed "
                    "since runs again: docs/comparisons.md); a failed run is recorded with its error and the others go on.",
        epilog=_SWEEP_KEYS, formatter_class=_SweepHelp,
    )
    p.add_argument("file", help="sweep .toml")
    p.add_argument("--out", metavar="DIR", help="results folder (default: runs/sweeps/<name>)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local processes (default) or Ray tasks (pip install 'cosim[ray]')")
    p.add_argument("--jobs", type=_jobs, metavar="N|auto",
                   help="parallel runs; auto (or 0, as for `cosim run --jobs`; the default) = the cores cosim may "
                        "use: COSIM_CPUS, else its CPU affinity; local Ray: its CPUs")
    p.add_argument("--address", metavar="ADDR", help="--engine ray: an existing cluster (default: start a local Ray)")
    p.add_argument("--dry-run", action="store_true", help="check every cell as the sweep does, list the runs and which are finished, stale (their "
                        "inputs changed: they run again) or to run; run nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from cosim import sweep

    sw = sweep.load(args.file)
    out = Path(args.out) if args.out else sweep.default_out(sw)
    if args.dry_run:
        sweep.check_cells(sw)  # the checks the sweep itself makes before anything runs
        cells = sw.cells()
        states, _ = sweep.cell_states(sw, out, cells)
        for c in cells:
            state, why = states[c.cell_id]
            shown = f"stale: {'; '.join(why)}; runs again" if state == "stale" else state
            params = " ".join(f"{k}={v}" for k, v in c.params)
            print(f"{c.cell_id}  {c.name}  seed={c.seed}  {params}  [{shown}]")
        print(f"{len(cells)} runs; results in {out}")
        return 0
    res = sweep.execute(sw, out, engine=args.engine, jobs=args.jobs or None, address=args.address, progress=not args.quiet)
    other = res["cells"] - res["completed"] - res["failed"]  # missing: never reported back (e.g. a Ray node lost)
    print(f"{res['completed']}/{res['cells']} runs completed, {res['failed']} failed"
          + (f", {other} missing" if other else "")
          + (f", {res['stale']} of them again: their inputs changed" if res.get("stale") else "")
          + (f", {res['rerun']} ran more than once (a node died; attempts in cells.csv)" if res.get("rerun") else "")
          + " (see cells.csv); "
          f"results: {res['out']}/results.parquet, summary.csv")
    return 0 if res["completed"] == res["cells"] else EXIT_ERROR


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot", help="draw the standard figures of a sweep",
        description="Draw each layer's headline metrics against the swept parameter, one line per policy, with 95 % "
                    "confidence bands over seeds (PNG).",
    )
    p.add_argument("results", help="a sweep results folder (or its results.parquet)")
    p.add_argument("--x", metavar="KEY", help="the swept key on the x axis (default: the one with most values)")
    p.add_argument("--metric", action="append", metavar="NAME",
                   help="a summary number to draw (repeatable; default: each layer's headline ones)")
    p.add_argument("--out", metavar="DIR", help="where the PNGs go (default: RESULTS/plots)")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    from cosim.plot import plot

    for path in plot(args.results, x=args.x, metrics=args.metric, out=args.out):
        print(path)
    return 0


def _run_dir_args(p: argparse.ArgumentParser, out_metavar: str, out_help: str) -> None:
    """Options of the commands that read one results folder (view, report)."""
    p.add_argument("run", metavar="RUN_DIR", help="a results folder of cosim run / cosim replay")
    p.add_argument("--out", metavar=out_metavar, help=out_help)
    p.add_argument("--net", metavar="NET_XML", help="the network file, when the one config.toml names is not here")


def _add_view(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view", help="write one self-contained view.html replaying a results folder",
        description="Write RUN_DIR/view.html: the network, the RSU discs and the vehicles slot by slot (time slider, "
                    "play/pause) coloured by serving RSU, the tasks of a chosen layer and policy on top, and a side "
                    "panel with the per-policy summary and a latency/success timeline. Everything is inlined: the "
                    "file opens without a network.",
    )
    _run_dir_args(p, "HTML", "where to write the page (default: RUN_DIR/view.html)")
    p.add_argument("--max-mb", type=float, default=None, metavar="MB",
                   help="the page's size budget in MB (10^6 bytes); beyond it only every k-th slot's vehicles are kept, "
                        "k the smallest that fits (default 20; 0: no budget)")
    p.add_argument("--max-rows", type=int, default=None, metavar="N",
                   help="also at most N vehicle rows (every k-th slot; default: no row budget)")
    p.add_argument("--window-s", type=float, default=None, metavar="S",
                   help="time window of the vehicle rows [s]: the page decodes and draws the first, then the "
                        "others one by one (default 300)")
    p.add_argument("--dwell-step", type=float, default=None, metavar="S",
                   help="quantum of the predicted dwell the vehicle panel shows [s] (default 5: one byte a row)")
    p.set_defaults(func=cmd_view)


def cmd_view(args: argparse.Namespace) -> int:
    from cosim.view import DWELL_Q, MAX_BYTES, MAX_ROWS, WINDOW_S, write_view

    if args.max_rows is not None and args.max_rows < 1:
        raise CosimError("--max-rows must be >= 1")
    if args.max_mb is not None and not args.max_mb >= 0:
        raise CosimError("--max-mb must be >= 0")
    if args.window_s is not None and not args.window_s > 0:
        raise CosimError("--window-s must be > 0")
    if args.dwell_step is not None and not (math.isfinite(args.dwell_step) and args.dwell_step > 0):
        raise CosimError("--dwell-step must be > 0")
    _warn_incomplete(args.run)
    max_bytes = MAX_BYTES if args.max_mb is None else (int(args.max_mb * 1e6) or None)
    path = write_view(args.run, args.out, net=args.net, max_rows=args.max_rows or MAX_ROWS, max_bytes=max_bytes,
                      window_s=args.window_s or WINDOW_S, dwell_step=args.dwell_step or DWELL_Q)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _warn_incomplete(run: str) -> None:
    """One warning line when the run to show did not complete (it is shown as far as flushed)."""
    from pathlib import Path

    from cosim.results import load

    if not Path(run).is_dir():
        return
    res = load(run)
    if res.killed:
        print(f"cosim: warning: {run}: the run was killed (no summary.json): showing what it flushed, marked "
              "incomplete", file=sys.stderr)
        return
    if res.summary is None:
        return  # the command itself says what is wrong
    status = res.summary.get("status")
    if status != "completed":
        print(f"cosim: warning: {run}: the run ended {status}: showing what it flushed, marked incomplete",
              file=sys.stderr)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write a one-page figure of a run (report.png and report.pdf)",
        description="The map with RSU discs, vehicle density and handovers; predicted vs realised dwell and its "
                    "error CDF; per layer the policies' latency CDFs and success rates (matplotlib).",
    )
    _run_dir_args(p, "DIR", "where the figures go (default: RUN_DIR)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from cosim.report import report

    _warn_incomplete(args.run)
    for path in report(args.run, args.out, net=args.net)[0]:
        print(path)
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="check that two results folders hold the same results",
        description="Compare two results folders (cosim run / cosim replay) value for value: the same tables, "
                    "each with the same columns, rows and values (exactly; NaN equals NaN), and the same "
                    "summary.json, less what is measured rather than computed (timings, the folder's path, the "
                    "installed plugins: cosim.compare.MEASURED). Provenance (versions, the scenario file and "
                    "sumocfg: cosim.compare.PROVENANCE) is reported but does not make results differ unless "
                    "--strict: a replay compares `same` with its live run. Prints `same: ...` and exits 0, or one "
                    "line per difference and exits 1; bad input exits 2.",
    )
    p.add_argument("a", metavar="RUN_A", help="a results folder (the reference)")
    p.add_argument("b", metavar="RUN_B", help="the results folder to compare with it")
    p.add_argument("--ignore-order", action="store_true",
                   help="compare each table's rows as a multiset (for a change that only reorders rows)")
    p.add_argument("--ignore", action="append", default=[], metavar="KEY",
                   help="leave out a table (coverage.parquet or coverage), a column (in every table) or a "
                        "summary.json key path (versions.torch; layers.moe: the whole subtree); repeatable")
    p.add_argument("--strict", action="store_true", help="provenance differences count as different results too")
    p.add_argument("--rtol", type=float, default=0.0, metavar="R",
                   help="floating-point values may differ by |a - b| <= R * max(|a|, |b|) (float columns, float list "
                        "elements, summary.json's non-integer numbers; integers, booleans, text and categories stay "
                        "exact): for a change that computes the same numbers in another order. Each table's values "
                        "that differ within R are counted and the largest relative difference printed (default 0: "
                        "exact)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from cosim.compare import compare, table_names

    if not (args.rtol >= 0.0 and math.isfinite(args.rtol)):
        raise CosimError(f"--rtol {args.rtol:g}: expected a finite number >= 0")
    c = compare(args.a, args.b, ignore_order=args.ignore_order, ignore=tuple(args.ignore), rtol=args.rtol)
    for key in c.unmatched:
        print(f"cosim: warning: --ignore {key}: no table, column or summary.json key of either folder is called "
              "that (left nothing out)", file=sys.stderr)
    diff = c.results + (c.provenance if args.strict else [])
    for line in diff:
        print(line)
    if diff:
        return 1
    note = f" (provenance differs: {'; '.join(ln.removeprefix('summary.json: ') for ln in c.provenance)})" \
        if c.provenance else ""
    for line in c.tolerated:
        print(f"within --rtol: {line}")
    within = f" within --rtol {args.rtol:g}" if c.tolerated else ""
    print(f"same{within}: {len(table_names(args.a))} tables, summary{note}")
    return 0


def _kept(args: argparse.Namespace) -> str:
    """Where the interrupted command's results are: for a run, its folder if it holds any."""
    if args.func in (cmd_netgen, cmd_import_osm):
        return "nothing was built: earlier files as they were"
    if args.func not in (cmd_run, cmd_replay):
        return "results up to the last slot are on disk"
    from cosim.engine import folder

    d = folder.last_results_dir
    if d is not None and (d / "summary.json").is_file():
        return f"results up to the last slot are in {d}"
    return "no results were written: the run had not started"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def main(argv: list[str] | None = None) -> int:
    # per-slot linear algebra is small: BLAS worker threads only spin and steal the second core
    # (which the parquet writer uses). Must be set before numpy is first imported.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    try:
        ap = build_parser()
        try:
            args = ap.parse_args(argv)
        except SystemExit:  # --help, a parse error: what they printed is flushed here, not at exit
            sys.stdout.flush()
            raise
        if not getattr(args, "func", None):
            ap.print_help()
            sys.stdout.flush()
            return EXIT_ERROR
        import signal

        # a SIGTERM ends like Ctrl-C (results written), unless the program running us has its own handler
        with interrupts(signal.SIGTERM, install="unowned"):
            code = _dispatch(args)
        sys.stdout.flush()  # a reader that went away (`| head -1`) is found here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _reader_gone()


def _reader_gone() -> int:
    """The reader of our output stopped reading (``cosim compare A B | head -1``): end quietly, as a
    command killed by SIGPIPE does, with 128 + SIGPIPE; stdout points at /dev/null so that the
    interpreter's last flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no stdout file descriptor (embedded): nothing more to do
        pass
    return EXIT_BROKEN_PIPE


def _dispatch(args: argparse.Namespace) -> int:
    """The command, with every way it can end turned into its exit code and one line."""
    try:
        return args.func(args)
    except DiskFull as exc:
        print(f"cosim: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_DISK_FULL
    except SumoDied as exc:
        print(f"cosim: error: {_one_line(exc)} (results up to the last slot are on disk)", file=sys.stderr)
        return EXIT_SUMO_DIED
    except WorkerDied as exc:
        print(f"cosim: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except CosimError as exc:
        print(f"cosim: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        print(f"cosim: error: disk full: {_one_line(exc)}", file=sys.stderr)  # before the run: nothing to keep
        return EXIT_DISK_FULL
    except Terminated:
        print(f"\ncosim: terminated ({_kept(args)})", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"\ncosim: interrupted ({_kept(args)})", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # parse errors and --help end before the command: this came from within it
        kept = _kept(args)
        print(f"cosim: error: sys.exit({exc.code!r}) was called while the command ran (by a plugin, or a library it "
              f"uses?); it did not finish ({kept})", file=sys.stderr)
        return EXIT_ERROR if kept.startswith("no results") else EXIT_FAILED  # before the first slot: as a bad plugin
