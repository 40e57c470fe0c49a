"""The slot loop: SUMO -> snapshot -> world -> layers -> recorder.

Two ways in:

* :func:`run` — cosim drives SUMO (libsumo in-process by default, or TraCI) and the plugin acts
  every slot gamma.
* :func:`attach` — the user's own TraCI/libsumo script drives SUMO; one call registers a
  ``traci.StepListener`` that does the same work after each ``simulationStep``.

Both end in :meth:`Session.finish`, which closes every table and writes ``summary.json`` —
also when SUMO dies mid-run or the user interrupts.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import importlib.metadata as md
import itertools
import math
import os
import platform
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import traci

import cosim
from cosim import config as cfgmod
from cosim import pairing, registry, sumo_outputs
from cosim.analysis import dwell_error_from_parquet
from cosim.config import Config, run_window, sumocfg_time
from cosim.errors import (ConfigError, CosimError, DiskFull, SumoDied, Terminated, WorkerDied, is_disk_full,
                          raise_terminated,
                          slot_bookkeeping)
from cosim.layers.base import LayerContext, make_layers, validate_layers
from cosim.layers.shards import LayerTables, Shards, Warm, resolve_jobs, write_grouped
from cosim.layers.shards import plan as shard_plan
from cosim.recorder import MANIFEST, Recorder, claim, read_manifest
from cosim.sources.base import ON_DEMAND_FIELDS, SNAPSHOT_FIELDS, Snapshot
from cosim.sources.pipelined import make_source
from cosim.sources.sumo import make_reader, sumo_command
from cosim.status import write_status
from cosim.world import World, net_file_of, read_net
from cosim.world.network import NetInfo
from cosim.world.rsu import RsuSet, build_rsus, sites_off_network

EPS = 1e-6


def versions(sumo_version: str = "") -> dict[str, str]:
    out = {"cosim": cosim.__version__, "python": platform.python_version(), "sumo": sumo_version}
    for pkg in ("numpy", "pandas", "pyarrow", "torch", "eclipse-sumo", "libsumo", "traci", "sumolib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = ""
    return out


def default_out_dir(cfg: Config) -> Path:
    """runs/<name>-s<seed>-<time>-<pid>: two runs started in the same second differ by their
    process id (and :func:`results_dir` adds -2, -3, ... within one process)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.name}-s{cfg.scenario.seed}-{stamp}-{os.getpid()}"


#: a results folder from before the manifest (:data:`cosim.recorder.MANIFEST`): ``--overwrite``
#: removes these names (and ``.NAME.tmp``) and the ``*.parquet`` folders of cosim part files,
#: nothing else (a single ``mine.parquet`` is not cosim's: a run writes tables as part folders)
LEGACY_OUTPUTS = ("summary.json", "config.toml", "sumo.log", "gui-settings.xml", "view.html", "report.png",
                  "report.pdf")


def _part_folder(p: Path) -> bool:
    """A table folder as cosim writes it: nothing in it but part files (and their temporaries)."""
    if not p.is_dir() or p.is_symlink():
        return False
    return all(re.fullmatch(r"\.?part-\d+\.parquet(\.tmp)?", q.name) for q in p.iterdir())


def run_outputs(folder: Path) -> list[Path]:
    """What ``--overwrite`` removes from ``folder``: the names its manifest lists (with their
    temporaries, and the manifest); without a manifest, :data:`LEGACY_OUTPUTS` and part folders."""
    names = read_manifest(folder)
    if names is None:
        names = [*LEGACY_OUTPUTS, *(p.name for p in folder.glob("*.parquet") if _part_folder(p))]
        extra = []
    else:
        extra = [MANIFEST]
    paths = [folder / n for n in names] + [folder / f".{n}.tmp" for n in names] + [folder / n for n in extra]
    return [p for p in paths if p.exists() or p.is_symlink()]


def clear_run_outputs(folder: Path) -> None:
    """Remove what cosim wrote into ``folder`` (:func:`run_outputs`), nothing else."""
    for p in run_outputs(folder):
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)


def run_inputs(cfg: Config) -> list[Path]:
    """The files a run reads: the scenario file, its sumocfg, its plugin files."""
    paths = [cfg.source_file, cfg.scenario.sumocfg, *(p for p in cfg.scenario.plugins if str(p).endswith(".py"))]
    return [Path(p) for p in paths if p and not str(p).startswith("<")]


#: the results folder the last run of this process opened (``cosim run``/``replay`` say after
#: an interrupt whether it holds results, instead of claiming so where no run had started)
last_results_dir: Path | None = None


def results_dir(cfg: Config, out_dir: str | Path | None, overwrite: bool = False,
                inputs: tuple[str | Path, ...] = ()) -> tuple[Path, bool]:
    """The results folder, created: the argument (``--out``), else ``output.dir``, else a new
    runs/<name>-s<seed>-<time>-<pid>. Returns (folder, whether this call created it).

    An existing folder with anything in it is refused unless ``overwrite``, which removes what
    cosim wrote there (:func:`run_outputs`) and nothing else; refused also with ``overwrite``
    when an input of the run (``inputs``: a replayed trace; the scenario file, sumocfg and plugin
    files) lies in the folder."""
    global last_results_dir
    if not out_dir and not cfg.output.dir:
        base = default_out_dir(cfg)
        for i in itertools.count(1):
            path = base if i == 1 else base.with_name(f"{base.name}-{i}")
            try:
                path.mkdir(parents=True)
                last_results_dir = path
                return path, True
            except FileExistsError:
                continue
            except OSError as exc:
                raise CosimError(f"{path}: cannot create the results folder ({exc.strerror or exc})") from None
    path, flag = (Path(out_dir), "--out") if out_dir else (Path(cfg.output.dir), f"{cfg.source_file}: output.dir")
    if path.exists() and not path.is_dir():
        raise CosimError(f"{flag} {path}: is a file, not a folder")
    created = not path.exists()
    if not created and any(path.iterdir()):
        if not overwrite:
            raise CosimError(f"{flag} {path}: the folder is not empty (a previous run's results?); "
                             "add --overwrite to replace them, or choose another folder")
        here = path.resolve()
        for p in [*map(Path, inputs), *run_inputs(cfg)]:
            if p.resolve().is_relative_to(here):
                raise CosimError(f"{flag} {path}: holds {p}, an input of this run; --overwrite would clear the "
                                 "folder it lies in: move it out, or choose another folder")
        clear_run_outputs(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CosimError(f"{flag} {path}: cannot create the results folder ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        if created:
            path.rmdir()
        raise CosimError(f"{flag} {path}: the folder is not writable")
    last_results_dir = path
    return path, created


def step_length_s(cfg: Config) -> float:
    """SUMO's step length: the scenario's override, else the sumocfg's, else SUMO's 1 s default."""
    sc = cfg.scenario
    return sc.step_length_s if sc.step_length_s > 0 else (sumocfg_time(sc.sumocfg, "step-length") or 1.0)


def slot_step(cfg: Config) -> float:
    """The step length [s], checked: the slot must be a whole number of steps."""
    sc = cfg.scenario
    step = step_length_s(cfg)
    ratio = sc.slot_s / step
    if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
        raise CosimError(f"{cfg.source_file}: scenario.slot_s = {sc.slot_s:g} is not a multiple of the "
                         f"{'' if cfg.traffic.source != 'sumo' else 'SUMO '}step length {step:g} s")
    return step


def claim_record(out: Path, record: Path | None) -> None:
    """A trace recorded into the results folder is cosim's output too (``--overwrite`` removes it)."""
    if record is not None and record.resolve().parent == out.resolve():
        claim(out, record.name)


@dataclass
class Timing:
    """Wall time of the two sides [s]: SUMO (stepping + reading state) and the plugin (world,
    layers, recording), and how long each waited for the other. In one process each side waits
    while the other works; with SUMO in its own process (``scenario.jobs >= 2``) both work at
    once and the waits say which side bounds the run."""

    sumo_s: float = 0.0
    plugin_s: float = 0.0
    sumo_wait_s: float = 0.0
    plugin_wait_s: float = 0.0
    sumo_cpu_s: float | None = None  # CPU seconds of SUMO's own process (jobs >= 2)
    started: float = field(default_factory=time.perf_counter)

    def add_slot(self, waited_s: float, plugin_s: float, source: Any) -> None:
        """One slot: the plugin waited ``waited_s`` for the snapshot, then worked ``plugin_s``."""
        self.plugin_s += plugin_s
        self.plugin_wait_s += waited_s
        side = getattr(source, "sumo_side", None)  # SUMO in its own process: its own account
        if side is None:
            self.sumo_s += waited_s
            self.sumo_wait_s += plugin_s
        else:
            self.sumo_s, self.sumo_wait_s, self.sumo_cpu_s = side["busy"], side["wait"], side["cpu"]

    def split(self, total_s: float) -> dict:
        return {"total": total_s, "sumo": self.sumo_s, "plugin": self.plugin_s, "sumo_wait": self.sumo_wait_s,
                "plugin_wait": self.plugin_wait_s}

    def cpu(self) -> dict:
        return {"plugin_process": time.process_time(), "sumo_process": self.sumo_cpu_s}


@dataclass
class Prepared:
    """What :func:`preflight` checked and built, handed to the :class:`Session`."""

    net: NetInfo
    rsus: RsuSet
    warnings: list[str]
    #: layer -> [from, until) [s] in which its tasks are requested (Layer.request_window)
    windows: dict = field(default_factory=dict)


def preflight(cfg: Config) -> Prepared:
    """Every check that needs no results folder and no SUMO: the network, the RSUs, the layers.
    Bad input raises one :class:`CosimError` before anything is written."""
    sc = cfg.scenario
    begin, end = run_window(cfg)
    if end is not None and end >= 0 and end <= begin:
        which = "scenario.end_s" if sc.end_s >= 0 else "the sumocfg's end"
        raise ConfigError(f"{cfg.source_file}: {which} = {end:g} s is not after the begin time {begin:g} s")
    net = read_net(net_file_of(sc.sumocfg))
    rsus = build_rsus(cfg, net)
    warnings = []
    if cfg.rsu.placement == "sites":
        off = sites_off_network(rsus, net.bounds)
        b = ", ".join(f"{v:.0f}" for v in net.bounds)
        if len(off) == len(rsus):
            raise ConfigError(f"{cfg.source_file}: rsu.sites: no RSU's coverage reaches the network (bounds {b} m): "
                              "sites are SUMO network x/y in metres")
        warnings += [f"{cfg.source_file}: rsu.sites[{i}] ('{rsus.ids[i]}' at {rsus.x[i]:g}, {rsus.y[i]:g}) is more "
                     f"than radius_m from the network (bounds {b} m): it will cover no vehicle" for i in off]
    windows = {layer.name: [float(t) if math.isfinite(t) else None for t in layer.request_window]
               for layer in validate_layers(cfg) if layer.task_table is not None}
    return Prepared(net, rsus, warnings, windows)


class Session:
    """The plugin's state for one run: world, layers, recorder, timing.

    ``net_file``: the network's path, or a :class:`Prepared` from :func:`preflight` (network
    and RSUs already built and checked, warnings to report). ``created``: the results folder
    was made for this run, so an error before the first slot removes it again."""

    def __init__(self, cfg: Config, out_dir: Path, net_file: "str | Path | Prepared", record: Path | None = None,
                 created: bool = False, overlay: bool = False, workers: int = 0, warm: Any = None):
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.created = created
        prep = net_file if isinstance(net_file, Prepared) else None
        self.warnings = list(prep.warnings) if prep else []
        #: warnings said once the run has ended well
        self.notes: list[str] = []
        self.windows = dict(prep.windows) if prep else {}
        for w in self.warnings:
            print(f"cosim: warning: {w}", file=sys.stderr)
        self.recorder = Recorder(self.out_dir, cfg.output.flush_slots, cfg.output.coverage)
        self.net = prep.net if prep else read_net(net_file)
        self.world = World(cfg, self.net, rsus=prep.rsus if prep else None)
        #: the sumo-gui overlay (cosim.overlay), None when off; drawn once connect()ed to SUMO
        self.overlay = None
        # the layers' tables: a slot's rows are held and written grouped by policy (cosim.layers.shards)
        self.tables = LayerTables()
        table = self._open_table
        if overlay:
            from cosim.overlay import Overlay

            self.overlay = Overlay()
            table = self.overlay.tap(table)
        ctx = LayerContext.for_run(cfg, table)
        #: the policy workers (scenario.jobs >= 3), None in one process
        self.shards = None
        self.source = None  # set by drive(): the workers get the routes each snapshot brought
        self.plan = shard_plan(cfg, workers) if workers > 0 and prep is not None else None
        if self.plan is not None and len(self.plan.shares) == 1:
            self.plan = None  # nothing to spread (one policy, or none that a worker could import)
        self.layers = make_layers(self.plan.shares[0] if self.plan else cfg, ctx)
        self.order = self.plan.order if self.plan else {layer.name: list(layer.policies) for layer in self.layers}
        self.timing = Timing()
        self.trace = None
        if record is not None:
            from cosim.recorder import TableWriter

            record.parent.mkdir(parents=True, exist_ok=True)
            self.trace = TableWriter(record, cfg.output.flush_slots)
        self.record = record
        #: the on-demand snapshot fields the run reads: a trace records every column
        asked = {f: layer.name for layer in (self.plan.layers if self.plan else self.layers)
                 for f in layer.snapshot_fields}
        for f, name in asked.items():
            if f not in SNAPSHOT_FIELDS:
                raise CosimError(f"layer {name}: snapshot_fields names '{f}', not a snapshot field "
                                 f"(known: {', '.join(SNAPSHOT_FIELDS)})")
        self.fields = ON_DEMAND_FIELDS if record is not None else ON_DEMAND_FIELDS & frozenset(asked)
        self.slots = 0
        self.max_vehicles = 0
        self.sumo_version = ""
        self.finished = False
        claim(self.out_dir, "config.toml")
        (self.out_dir / "config.toml").write_text(cfgmod.dump_toml(cfg))
        for layer in self.layers:
            self.tables.current = layer.name
            layer.on_start()
        owners = dict(self.tables.owner)
        if self.plan is not None:
            self.shards = Shards(self.plan, self.world, prep, self.tables, self._write_rows, warm)
            owners = {**self.shards.tables, **owners}
        for name in self.order:  # the tables in the order one process opens them
            for table, layer in owners.items():
                if layer == name:
                    self.recorder.table(table)

    def _open_table(self, name: str):  # noqa: ANN202 - a PolicyRows
        return self.tables.open(name)

    def _write_rows(self, name: str, held: dict) -> None:
        layer = self.shards.layer_of(name) if self.shards is not None else self.tables.owner.get(name, "")
        write_grouped(self.recorder.table(name), held, self.order.get(layer, []))

    def on_snapshot(self, snap: Snapshot) -> None:
        known = len(self.world.vehicle_names)
        self.world.update(snap, slot=self.slots)
        if self.trace is not None and len(snap):
            from cosim.sources.replay import snapshot_columns

            # the route column: each vehicle's route on its first row (where the source knows routes)
            routes = np.full(len(snap), None, dtype=object)
            if self.world.route_of is not None:
                for i in np.flatnonzero(self.world.vidx >= known):
                    routes[i] = " ".join(self.world.route_of[snap.ids[i]]) or None
            self.trace.append(snapshot_columns(snap, routes))
        if self.shards is not None:
            self.shards.feed(self.slots, getattr(self.source, "delivered", None))
        for layer in self.layers:
            self.tables.current = layer.name
            layer.on_slot(self.world)
        rows = self.tables.take()
        if self.shards is not None:
            self.shards.own(self.slots, rows)  # may wait for a lagging worker (Ctrl-C stops the wait)
        else:
            for name, held in rows.items():
                self._write_rows(name, held)
        if self.overlay is not None:
            self.overlay.update(self.world)
        with slot_bookkeeping():  # a SIGTERM waits until the slot is both recorded and counted
            self.recorder.record_world(self.world)
            self.slots += 1
        self.max_vehicles = max(self.max_vehicles, len(snap))

    summary: dict | None = None
    #: SUMO's own outputs redirected into the results folder (cosim.sumo_outputs.Plan), if any
    sumo_outputs: Any = None

    def discard(self) -> None:
        """An error before the first slot: nothing worth keeping. Remove what this run wrote
        (the whole folder if it made it) instead of leaving an empty results folder."""
        self.finished = True
        if self.shards is not None:
            self.shards.close()
        with contextlib.suppress(Exception):
            self.recorder.close()
        if self.trace is not None:
            with contextlib.suppress(Exception):
                self.trace.close()
            if self.record is not None:
                shutil.rmtree(self.record, ignore_errors=True) if self.record.is_dir() else self.record.unlink(missing_ok=True)
        if self.created:
            shutil.rmtree(self.out_dir, ignore_errors=True)
        else:
            clear_run_outputs(self.out_dir)

    def finish(self, status: str = "completed", error: str | None = None) -> dict:
        """Close every table and write summary.json, whatever happens to one of them. A full
        disk turns the status into ``disk-full`` and raises :class:`DiskFull` once the rest is
        written; the parts flushed before it stay readable."""
        if self.finished:
            return self.summary
        self.finished = True
        layer_blocks: dict[str, Any] = {}
        for layer in self.layers:
            self.tables.current = layer.name
            try:
                layer_blocks[layer.name] = layer.end()
            except Exception as exc:  # keep the other results
                layer_blocks[layer.name] = {"error": f"{type(exc).__name__}: {exc}"}
        dropped = {layer.name: dict(layer.failed) for layer in self.layers}
        rows = self.tables.take()  # the rows written at the end (and those of a slot cut short)
        if self.shards is not None:
            try:
                layer_blocks, dropped = self.shards.end(rows, layer_blocks, dropped)
            finally:
                self.shards.close()
        else:
            for name, held in rows.items():
                self._write_rows(name, held)
        write_error: BaseException | None = None
        for closing in (self.recorder.close, self.trace.close if self.trace is not None else None):
            try:
                if closing is not None:
                    closing()
            except Exception as exc:
                write_error = write_error or exc
        if write_error is not None:
            if is_disk_full(write_error):
                status, error = "disk-full", f"disk full while writing the results: {write_error}"
            elif status == "completed":
                status, error = "failed", f"{type(write_error).__name__}: {write_error}"
        if write_error is None:
            self._pair(layer_blocks)
        outputs_block = self._sumo_outputs()
        r = self.world.rsus
        dwell_block: dict[str, Any] = {}
        if self.cfg.output.coverage and self.slots and write_error is None:
            try:
                dwell_block = dwell_error_from_parquet(self.out_dir / "coverage.parquet", self.cfg.scenario.slot_s,
                                                       self.cfg.world.dwell_cap_s)
                dwell_block["model"] = self.world.dwell_model  # "auto" resolved
                dwell_block["model_setting"] = self.cfg.world.dwell_model
                dwell_block["association"] = self.cfg.world.association
                if self.world.dwell_note:
                    dwell_block["note"] = self.world.dwell_note
            except Exception as exc:  # an analysis must not lose the run
                dwell_block = {"error": f"{type(exc).__name__}: {exc}"}
        wall = time.perf_counter() - self.timing.started
        self.summary = {
            "scenario": self.cfg.name,
            "scenario_file": self.cfg.source_file,
            "out_dir": str(self.out_dir),
            "sumocfg": self.cfg.scenario.sumocfg,
            "seed": self.cfg.scenario.seed,
            "status": status,
            "error": error,
            # the settings warned about before the run, and every policy a layer dropped mid-run
            "warnings": self.warnings + [dropped[name][p] for name, order in self.order.items()
                                         for p in order if p in dropped.get(name, {})],
            "versions": versions(self.sumo_version),
            "plugins": registry.plugin_versions(),
            "slot_s": self.cfg.scenario.slot_s,
            "slots": self.slots,
            "sim_time_end_s": self.world.time_s if self.slots else None,
            "vehicles_seen": len(self.world.vehicle_names),
            "max_concurrent_vehicles": self.max_vehicles,
            "rsus": [{"id": i, "x": float(x), "y": float(y), "radius_m": float(rad),
                      "compute_flops": float(c), "bandwidth_hz": float(w)}
                     for i, x, y, rad, c, w in zip(r.ids, r.x, r.y, r.radius_m, r.compute_flops, r.bandwidth_hz)],
            "wall_s": {**self.timing.split(wall), **({"workers_wait": self.shards.wait_s} if self.shards else {})},
            "cpu_s": {**self.timing.cpu(), **({"policy_workers": self.shards.cpu()} if self.shards else {})},
            "tables": {name: t.rows for name, t in self.recorder.tables.items()},
            "dwell_prediction": dwell_block,
            "request_window_s": self.windows,
            "layers": layer_blocks,
            **outputs_block,
        }
        try:
            self.recorder.write_json("summary.json", self.summary)
        except OSError as exc:
            write_error = write_error or exc
        if write_error is not None and is_disk_full(write_error):
            raise DiskFull(f"{self.out_dir}: disk full after slot {self.slots} (every table part flushed "
                           "before is readable; summary.json says disk-full if it fitted)") from None
        if write_error is not None:
            raise write_error
        return self.summary

    def _sumo_outputs(self) -> dict:
        """SUMO's outputs (written into the results folder; SUMO is closed now) converted to
        tables: summary.json's ``sumo_outputs`` block; nothing when the run declared none."""
        if self.sumo_outputs is None:
            return {}
        try:
            block, warnings = sumo_outputs.at_end(self.sumo_outputs, self.out_dir)
        except Exception as exc:  # noqa: BLE001 - converting must not lose the run
            block, warnings = {}, [f"SUMO outputs not converted: {type(exc).__name__}: {exc}"]
        self.warnings += self.sumo_outputs.notes + warnings
        return {"sumo_outputs": block}

    def _pair(self, layer_blocks: dict) -> None:
        """Every policy against its layer's first, task by task, from the closed task tables
        (:mod:`cosim.pairing`); policies run in worker processes are in the same tables."""
        for name, order in self.order.items():
            table = registry.layer_class(name).task_table
            block = layer_blocks.get(name)
            if table is None or not isinstance(block, dict) or not order:
                continue
            try:
                pairing.add_to_blocks(block, pairing.from_table(self.out_dir / f"{table}.parquet", order))
            except Exception as exc:  # noqa: BLE001 - an analysis must not lose the run
                self.warnings.append(f"layer {name}: no task-level comparison (vs_baseline): {type(exc).__name__}: {exc}")


class Progress:
    """One status line, refreshed about once a second (stderr)."""

    def __init__(self, enabled: bool, end_s: float | None):
        self.enabled, self.end_s = enabled, end_s
        self.last = 0.0

    def update(self, session: Session, t: float, n: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self.last < 1.0:
            return
        self.last = now
        tm = session.timing
        elapsed = max(now - tm.started, 1e-9)
        pct = lambda s: 100 * s / elapsed  # noqa: E731
        end = f"/{self.end_s:g}" if self.end_s else ""
        rate = session.slots / elapsed
        eta = ""
        if self.end_s and rate > 0 and not force:
            left = max(0.0, (self.end_s - t) / session.cfg.scenario.slot_s) / rate
            eta = f"  ETA {int(left // 60)}:{int(left % 60):02d}"
        workers = ""
        sh = session.shards
        if sh is not None and sh.workers:  # the plugin's busy share includes its wait for them
            behind = sh.behind(session.slots - 1)
            workers = (f" (of it {pct(sh.wait_s):.0f}% waiting for workers, {behind} "
                       f"slot{'' if behind == 1 else 's'} behind)")
        write_status(f"t={t:g}{end} s  slot {session.slots}  vehicles {n}  {rate:.0f} slots/s  "
                     f"(SUMO busy {pct(tm.sumo_s):.0f}% waits {pct(tm.sumo_wait_s):.0f}%, plugin busy "
                     f"{pct(tm.plugin_s):.0f}%{workers} waits {pct(tm.plugin_wait_s):.0f}%){eta}", final=force)


TRACE_SUFFIXES = (".parquet", ".csv", ".csv.gz", ".xml", ".xml.gz")


def check_record(record: str | Path | None, overwrite: bool = False) -> Path | None:
    """The ``--record`` path, checked before the run: a known suffix, a folder it can go in,
    and no earlier trace there unless ``overwrite`` (the caller removes it with
    :func:`remove_record` once every other check has passed)."""
    if not record:
        return None
    p = Path(record)
    if not p.name.lower().endswith(TRACE_SUFFIXES):
        raise CosimError(f"--record {p}: expected TRACE.parquet, TRACE.csv[.gz] or TRACE.xml[.gz]")
    anc = p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise CosimError(f"--record {p}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise CosimError(f"--record {p}: {anc} is not writable")
    if p.exists():
        if not overwrite:
            raise CosimError(f"--record {p}: exists already; add --overwrite to replace it, or choose another name")
    return p


def remove_record(p: Path | None) -> None:
    """An earlier trace at ``p`` (allowed by --overwrite), removed just before the run writes it."""
    if p is not None and p.exists():
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def run(cfg: Config, out_dir: str | Path | None = None, *, backend: str | None = None, gui: bool = False,
        port: int | None = None, progress: bool = True, sumo_binary: str | None = None,
        extra_sumo_args: list[str] | None = None, record: str | Path | None = None, overwrite: bool = False) -> dict:
    """Run SUMO with the plugin attached; returns the summary (also in ``out_dir/summary.json``).

    ``gui``: sumo-gui with the plugin's state drawn on the traffic (:mod:`cosim.overlay`).
    Every input is checked before anything is written (:func:`preflight`). Raises
    :class:`SumoDied` (after writing everything so far) if SUMO stops or freezes mid-run,
    :class:`~cosim.errors.Terminated` on SIGTERM and ``KeyboardInterrupt`` on Ctrl-C (idem).
    ``record``: also write the traffic as a trace — ``*.parquet`` (a part directory, like the
    result tables) or ``*.csv[.gz]``: cosim's snapshots at full precision (a replay reproduces the
    run exactly); ``*.xml[.gz]``: SUMO's FCD output. ``overwrite``: replace the results of an
    earlier run in ``out_dir`` (and an earlier trace) instead of refusing.
    """
    session, source, end_s = open_run(cfg, out_dir, backend=backend, gui=gui, port=port, sumo_binary=sumo_binary,
                                      extra_sumo_args=extra_sumo_args, record=record, overwrite=overwrite)
    return drive(session, source, cfg.scenario.slot_s, end_s, progress)


@contextlib.contextmanager
def warm_workers(cfg: Config, gui: bool = False):  # noqa: ANN201
    """The policy workers a run may need, started before its checks so that their start-up
    overlaps the plugin's (:class:`~cosim.layers.shards.Warm`); those the session did not take
    are ended on the way out, whether the run was refused or planned fewer."""
    warm = None if gui else Warm(cfg)
    try:
        yield warm
    finally:
        if warm is not None:
            warm.close()


def open_run(cfg: Config, out_dir: str | Path | None = None, *, backend: str | None = None, gui: bool = False,
             port: int | None = None, sumo_binary: str | None = None, extra_sumo_args: list[str] | None = None,
             record: str | Path | None = None, overwrite: bool = False,
             prepared: Prepared | None = None) -> tuple[Session, Any, float | None]:
    """What :func:`run` drives: the checked session, its SUMO source (not started) and the end
    time. ``prepared``: a :func:`preflight` of ``cfg`` already done (e.g. once per environment)."""
    with warm_workers(cfg, gui) as warm:
        return _open_run(cfg, out_dir, backend=backend, gui=gui, port=port, sumo_binary=sumo_binary,
                         extra_sumo_args=extra_sumo_args, record=record, overwrite=overwrite, prepared=prepared,
                         warm=warm)


def _open_run(cfg: Config, out_dir: str | Path | None, *, backend: str | None, gui: bool, port: int | None,
              sumo_binary: str | None, extra_sumo_args: list[str] | None, record: str | Path | None,
              overwrite: bool, prepared: Prepared | None, warm: Any) -> tuple[Session, Any, float | None]:
    if cfg.traffic.source != "sumo":  # a paper's own world: synthetic traffic, no SUMO
        if gui or extra_sumo_args or (record and Path(record).name.lower().endswith((".xml", ".xml.gz", ".fcd.parquet"))):
            what = "--gui" if gui else "--sumo-args" if extra_sumo_args else f"--record {record} (SUMO's FCD output)"
            raise CosimError(f"{what}: traffic.source = \"{cfg.traffic.source}\" runs no SUMO")
        return _open_synthetic(cfg, out_dir, record=record, overwrite=overwrite, prepared=prepared, warm=warm)
    prep = prepared or preflight(cfg)
    cfg = resolve_jobs(cfg, most=1 if gui else None)  # --jobs auto: as the cores allow (--gui: one process)
    sc = cfg.scenario
    backend = backend or sc.backend
    if gui and backend == "libsumo":
        backend = "traci"  # sumo-gui is only reachable over a socket
    if gui and sc.jobs > 1:
        raise CosimError("--gui draws on SUMO from the plugin's process: use it with --jobs 1 (scenario.jobs = 1)")
    if port is not None and not 1 <= port <= 65535:
        raise CosimError(f"--port {port}: not a TCP port (1-65535)")
    step = slot_step(cfg)
    begin_s, end_s = run_window(cfg)
    record_path = check_record(record, overwrite)
    out, created = results_dir(cfg, out_dir, overwrite)
    remove_record(record_path)  # only now: a refused run keeps the earlier trace
    try:
        claim(out, "sumo.log", *(["gui-settings.xml"] if gui else []))
        claim_record(out, record_path)
        gui_args = []
        if gui:
            from cosim.overlay import gui_settings

            # --start: sumo-gui otherwise waits for the play button before the first TraCI step
            gui_args = ["--start", "--quit-on-end", "--gui-settings-file", str(gui_settings(out / "gui-settings.xml"))]
        sumo_fcd = record_path is not None and record_path.name.lower().endswith((".xml", ".xml.gz", ".fcd.parquet"))
        # the outputs the sumocfg and the arguments declare: into out/sumo/ (cosim.sumo_outputs)
        outputs = sumo_outputs.plan(sc.sumocfg, out, [*sc.sumo_args, *(extra_sumo_args or [])],
                                    keep=("fcd-output",) if sumo_fcd else ())
        cmd = sumo_command(sc.sumocfg, seed=sc.seed, gui=gui, begin_s=sc.begin_s, end_s=sc.end_s,
                           step_length_s=sc.step_length_s, log_file=out / "sumo.log",
                           extra=[*gui_args, *outputs.user_args, *outputs.args], binary=sumo_binary)
        if sumo_fcd:
            # SUMO's own FCD trace (XML, or Parquet written by SUMO itself), one record per slot
            # SUMO labels a record with the time its step began: the state at slot boundary t is the
            # record labelled t - step, so start one step before the first boundary
            first = begin_s + sc.slot_s - step
            cmd += ["--fcd-output", str(record_path), "--fcd-output.acceleration", "--device.fcd.begin", f"{first:g}",
                    "--device.fcd.period", f"{sc.slot_s:g}", "--precision", "6"]
            record_path = None
        session = Session(cfg, out, prep, record=record_path, created=created, overlay=gui, workers=sc.jobs - 2,
                          warm=warm)
        session.sumo_outputs = outputs if outputs else None
    except BaseException:
        shutil.rmtree(out, ignore_errors=True) if created else clear_run_outputs(out)
        raise
    # a paused sumo-gui is not frozen; with jobs = 2 SUMO runs in a child process, one slot ahead
    source = make_source(cfg, "cosim.sources.sumo:SumoSource", cmd=cmd, backend=backend, port=port,
                         log_file=out / "sumo.log", end_s=end_s, timeout_s=0.0 if gui else sc.sumo_timeout_s,
                         fields=session.fields)
    return session, source, end_s


def _open_synthetic(cfg: Config, out_dir: str | Path | None, *, record: str | Path | None, overwrite: bool,
                    prepared: Prepared | None, warm: Any) -> tuple[Session, Any, float | None]:
    """A run whose traffic a synthetic source makes (``traffic.source``, e.g. ``paper000``:
    :mod:`cosim.sources.paper`): the same session, world, layers and tables as a SUMO run."""
    from cosim.sources.paper import Paper000Source, source_kwargs

    prep = prepared or preflight(cfg)
    cfg = resolve_jobs(cfg)
    begin_s, end_s = run_window(cfg)
    if end_s is None or end_s < 0:
        raise ConfigError(f"{cfg.source_file}: traffic.source = \"{cfg.traffic.source}\" needs an end: set "
                          "scenario.end_s")
    step = slot_step(cfg)
    kwargs = source_kwargs(cfg, prep.net.path, step, begin_s, end_s)
    Paper000Source(**kwargs)  # bad settings are an error before anything is written
    record_path = check_record(record, overwrite)
    out, created = results_dir(cfg, out_dir, overwrite)
    remove_record(record_path)
    try:
        claim_record(out, record_path)
        session = Session(cfg, out, prep, record=record_path, created=created, workers=cfg.scenario.jobs - 2,
                          warm=warm)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True) if created else clear_run_outputs(out)
        raise
    source = make_source(cfg, "cosim.sources.paper:Paper000Source", **kwargs)
    return session, source, end_s


def replay(cfg: Config, trace: str | Path, out_dir: str | Path | None = None, *, progress: bool = True,
           overwrite: bool = False) -> dict:
    """Run the plugin on a recorded trace (no SUMO): same world, same layers, same results.
    The trace is checked as it streams (:class:`~cosim.sources.replay.ReplaySource`)."""
    session, source, end_s = open_replay(cfg, trace, out_dir, overwrite=overwrite)
    summary = drive(session, source, cfg.scenario.slot_s, end_s, progress)
    for note in session.notes:
        print(f"cosim: warning: {note}", file=sys.stderr)
    return summary


def open_replay(cfg: Config, trace: str | Path, out_dir: str | Path | None = None, *, overwrite: bool = False,
                prepared: Prepared | None = None) -> tuple[Session, Any, float | None]:
    """What :func:`replay` drives: the checked session, its trace source and the end time."""
    with warm_workers(cfg) as warm:
        return _open_replay(cfg, trace, out_dir, overwrite=overwrite, prepared=prepared, warm=warm)


def _open_replay(cfg: Config, trace: str | Path, out_dir: str | Path | None, *, overwrite: bool,
                 prepared: Prepared | None, warm: Any) -> tuple[Session, Any, float | None]:
    from cosim.sources.replay import ReplaySource, trace_end_s

    last = trace_end_s(trace) if Path(trace).exists() else None
    note = None
    if last is not None:  # a replay ends where its trace ends, unless an earlier end is asked for
        _, end = run_window(cfg)
        if end is None or end > last + 1e-9:
            if end is not None:  # said once the trace has replayed (bad input says only its own line)
                note = (f"{trace}: the trace ends at {last:g} s, before the end {end:g} s ({cfg.source_file}): "
                        f"the replay ends at {last:g} s")
            cfg = cfg.replace(scenario={"end_s": last})
    prep = prepared or preflight(cfg)
    cfg = resolve_jobs(cfg)
    sc = cfg.scenario
    end_s = sc.end_s if sc.end_s >= 0 else None
    step = step_length_s(cfg)
    begin, _ = run_window(cfg)  # as run() starts
    kwargs = dict(path=trace, end_s=end_s, begin_s=begin, fcd_step_s=step, net=prep.net)
    ReplaySource(**kwargs)  # a missing or unknown trace is an error before anything starts
    source = make_source(cfg, "cosim.sources.replay:ReplaySource", **kwargs)
    out, created = results_dir(cfg, out_dir, overwrite, inputs=(trace,))
    try:
        session = Session(cfg, out, prep, created=created, workers=sc.jobs - 2, warm=warm)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True) if created else clear_run_outputs(out)
        raise
    if note is not None:  # not in summary.json's warnings: the replay's results are the live run's
        session.notes.append(note)
    return session, source, end_s


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_interrupts():  # noqa: ANN201
    """While a run is driven, SIGTERM raises :class:`Terminated` (handled like Ctrl-C) unless
    the program has its own SIGTERM handler. Main thread only (where signals are delivered)."""
    if not _main_thread() or signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, raise_terminated):
        yield
        return
    old = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


#: the signals each active :func:`deferred_interrupts` holds back (innermost last)
_HELD: list[list[int]] = []


def interrupt_pending() -> bool:
    """A Ctrl-C or SIGTERM is held back until the results are written (a wait that may be long,
    e.g. for a stuck policy worker, stops for it)."""
    return any(_HELD)


@contextlib.contextmanager
def deferred_interrupts():  # noqa: ANN201
    """While the results are written (seconds at most: every wait there is bounded, or gives up
    on :func:`interrupt_pending`), a first Ctrl-C or SIGTERM waits until they are, then
    interrupts; a second one interrupts at once."""
    if not _main_thread():
        yield
        return
    pending: list[int] = []

    def later(signum: int, frame: object) -> None:
        if pending:
            raise Terminated("terminated") if signum == signal.SIGTERM else KeyboardInterrupt()
        pending.append(signum)

    old = {sig: signal.signal(sig, later) for sig in (signal.SIGINT, signal.SIGTERM)}
    _HELD.append(pending)
    try:
        yield
    finally:
        _HELD.pop()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if pending:
        raise Terminated("terminated") if pending[0] == signal.SIGTERM else KeyboardInterrupt()


def drive(session: "Session", source, slot_s: float, end_s: float | None, progress: bool,
          signals: bool = True) -> dict:
    """The slot loop over any TrafficSource; however it ends, the session is finished (tables
    closed, summary.json with the status written) — or, when it ends before the first slot,
    discarded (no empty results folder). SIGTERM is handled like Ctrl-C. ``signals`` False: the
    process's signal handlers are left alone (a run paused inside a Gymnasium environment,
    whose caller owns them; Ctrl-C still ends it with the results written)."""
    prog = Progress(progress, end_s)
    status, error, failure = "completed", None, None
    summary: dict = {}
    with sigterm_interrupts() if signals else contextlib.nullcontext():
        try:
            session.source = source
            source.start()
            session.sumo_version = source.sumo_version
            if session.overlay is not None:
                session.overlay.connect(source.conn, session.world, session.layers)
            session.world.route_of = source.route_of
            begin = source.time_s()
            k = 0
            while True:
                k += 1
                target = begin + k * slot_s
                if end_s is not None and target > end_s + EPS:
                    break
                t0 = time.perf_counter()
                snap = source.step_to(target)
                t1 = time.perf_counter()
                session.on_snapshot(snap)
                t2 = time.perf_counter()
                session.timing.add_slot(t1 - t0, t2 - t1, source)
                prog.update(session, snap.time_s, len(snap))
                if end_s is None and source.finished():
                    break
            prog.update(session, session.world.time_s, len(session.world.snap), force=True)
        except SumoDied as exc:
            status, error, failure = "sumo-died", str(exc), exc
        except Terminated as exc:
            status, error, failure = "terminated", "terminated by a signal (SIGTERM)", exc
        except KeyboardInterrupt as exc:
            status, error, failure = "interrupted", "interrupted by the user", exc
        except BaseException as exc:
            if is_disk_full(exc):
                status, error = "disk-full", f"disk full while writing the results: {exc}"
                failure = DiskFull(f"{session.out_dir}: disk full after slot {session.slots} (every table part "
                                   "flushed before is readable; summary.json says disk-full if it fitted)")
            elif isinstance(exc, CosimError) and not isinstance(exc, (WorkerDied, DiskFull)):
                # bad input found after the first slot (a trace row while streaming, a plugin's
                # malformed result): exit 2 as any bad input; the slots before are kept
                status, error, failure = "bad-input", str(exc), exc
            else:
                status, error, failure = "failed", f"{type(exc).__name__}: {exc}", exc
        with deferred_interrupts() if signals else contextlib.nullcontext():
            try:
                source.close()
            except Exception:  # the source is gone either way; the results matter now
                pass
            if failure is not None and session.slots == 0:
                session.discard()
                if isinstance(failure, SumoDied):  # SUMO refused its input (e.g. a broken routes file)
                    failure = CosimError(str(failure))
            else:
                summary = session.finish(status, error)
    if failure is not None:
        raise failure
    return summary


class CosimListener(traci.StepListener):
    """Runs the plugin inside someone else's TraCI/libsumo loop (see :func:`attach`)."""

    def __init__(self, conn: Any, session: Session):
        self.conn = conn
        self.session = session
        self.reader = make_reader(conn, session.fields)
        self.slot_s = session.cfg.scenario.slot_s
        self.next_slot = float(conn.simulation.getTime()) + self.slot_s

    def step(self, t: float = 0) -> bool:
        now = float(self.conn.simulation.getTime())
        if now + EPS < self.next_slot:
            return True
        t0 = time.perf_counter()
        snap = self.reader.read(now)
        self.session.on_snapshot(snap)
        self.session.timing.plugin_s += time.perf_counter() - t0
        # the next boundary after `now` (a caller may step several slots at once)
        self.next_slot += self.slot_s * max(1, math.floor((now - self.next_slot) / self.slot_s + EPS) + 1)
        return True

    def cleanUp(self) -> None:
        self.session.finish("completed")

    def close(self) -> dict:
        """Write the results now (also happens on ``traci.close()``/``removeStepListener``)."""
        return self.session.finish("completed")


def attach(conn: Any = None, scenario: str | Path | Config | None = None, out_dir: str | Path | None = None,
           overlay: bool = False, overwrite: bool = False, **scenario_overrides: Any) -> CosimListener:
    """Attach the plugin to a running simulation with one call.

    ``conn`` is the ``traci`` module (default), the ``libsumo`` module, or a
    ``traci.Connection``. ``scenario`` is a scenario TOML path or :class:`Config`; without one,
    defaults are used with RSUs placed automatically on the running network. ``overlay``: draw
    the RSU discs and colour vehicles by role (:mod:`cosim.overlay`; for sumo-gui). Results are
    written when ``listener.close()`` is called, when the listener is removed or the TraCI
    connection closes (``traci.close()``), and at the latest when the interpreter exits.
    """
    conn = conn if conn is not None else traci
    if isinstance(scenario, Config):
        cfg = scenario
    elif scenario is not None:
        cfg = cfgmod.load_any(scenario)
    else:
        cfgfile = conn.simulation.getOption("configuration-file")
        seed = int(conn.simulation.getOption("seed") or 42)
        if cfgfile:
            cfg = cfgmod.for_sumocfg(cfgfile, seed=seed)
        else:
            netf = conn.simulation.getOption("net-file")
            cfg = cfgmod.from_dict({"scenario": {"sumocfg": netf, "name": Path(netf).stem, "seed": seed}},
                                   "<attach>", Path.cwd())
    if scenario_overrides:
        cfg = cfg.replace(scenario=scenario_overrides)
    cfg = cfg.replace(scenario={"jobs": 1})  # your loop drives SUMO: all in this process (what config.toml says)
    netf = conn.simulation.getOption("net-file")
    out, created = results_dir(cfg, out_dir, overwrite)
    try:
        session = Session(cfg, out, netf, created=created, overlay=overlay)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True) if created else clear_run_outputs(out)
        raise
    session.sumo_version = conn.getVersion()[1]
    found = sumo_outputs.found(conn)  # your SUMO opened its outputs: listed, collect() them after it closes
    session.sumo_outputs = found if found else None
    if session.overlay is not None:
        session.overlay.connect(conn, session.world, session.layers)
    listener = CosimListener(conn, session)
    session.world.route_of = listener.reader.routes
    conn.addStepListener(listener)
    # traci.close() calls cleanUp(); libsumo.close() does not, so results are also written at
    # interpreter exit if listener.close() was never called.
    atexit.register(session.finish, "completed")
    return listener
