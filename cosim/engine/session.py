"""The session: the plugin's state for one run (world, layers, recorder, timing) and the summary
it writes (``summary.json``) however the run ends."""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import platform
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import cosim
from cosim import config as cfgmod
from cosim import pairing, registry, sumo_outputs
from cosim.analysis import dwell_error_from_parquet
from cosim.engine.folder import remove_record, rollback
from cosim.engine.signals import interrupts
from cosim.engine.spec import RunSpec
from cosim.engine.workers import Shards
from cosim.errors import CosimError, DiskFull, is_disk_full
from cosim.recorder import LayerTables, Recorder, claim, write_grouped
from cosim.sources.base import ON_DEMAND_FIELDS, SNAPSHOT_FIELDS, Snapshot
from cosim.world import World


def versions(sumo_version: str = "") -> dict[str, str]:
    out = {"cosim": cosim.__version__, "python": platform.python_version(), "sumo": sumo_version}
    for pkg in ("numpy", "pandas", "pyarrow", "torch", "eclipse-sumo", "libsumo", "traci", "sumolib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = ""
    return out


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


class Session:
    """The plugin's state for one run: world, layers, recorder, timing.

    ``spec``: the run resolved (:func:`cosim.engine.spec.resolve`: timeline, network, RSUs,
    layers, process count and worker plan). ``created``: the results folder was made for this
    run, so an error before the first slot removes it again."""

    def __init__(self, spec: RunSpec, out_dir: Path, *, record: Path | None = None, created: bool = False,
                 overlay: bool = False, warm: Any = None):
        cfg = spec.cfg
        self.spec = spec
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.created = created
        self.warnings = list(spec.warnings)
        #: warnings said once the run has ended well
        self.notes: list[str] = []
        self.windows = dict(spec.windows)
        for w in self.warnings:
            print(f"cosim: warning: {w}", file=sys.stderr)
        self.recorder = Recorder(self.out_dir, cfg.output.flush_slots, cfg.output.coverage)
        self.net = spec.net
        self.world = World(cfg, self.net, rsus=spec.rsus)
        #: the sumo-gui overlay (cosim.overlay), None when off; drawn once connect()ed to SUMO
        self.overlay = None
        # the layers' tables: a slot's rows are held and written grouped by policy (cosim.recorder.write_grouped)
        self.tables = LayerTables()
        table = self._open_table
        if overlay:
            from cosim.overlay import Overlay

            self.overlay = Overlay()
            table = self.overlay.tap(table)
        #: the policy workers (scenario.jobs >= 3), None in one process
        self.shards = None
        self.source = None  # set by drive(): the workers get the routes each snapshot brought
        self.plan = spec.plan
        # the layers resolve built (with a plan, each with the plugin's share of its policies), now
        # writing to this run's tables
        self.layers = spec.layers_for_run(table)
        self.order = self.plan.order if self.plan else {layer.name: list(layer.policies) for layer in self.layers}
        self.timing = Timing()
        self.trace = None
        if record is not None:
            from cosim.recorder import TableWriter

            record.parent.mkdir(parents=True, exist_ok=True)
            self.trace = TableWriter(record, cfg.output.flush_slots)
        self.record = record
        #: the on-demand snapshot fields the run reads: a trace records every column
        asked = {f: layer.name for layer in spec.layers for f in layer.snapshot_fields}
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
            self.shards = Shards(self.plan, self.world, spec, self.tables, self._write_rows, warm)
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
        rows = self.tables.drain()
        if self.shards is not None:
            self.shards.own(self.slots, rows)  # may wait for a lagging worker (Ctrl-C stops the wait)
        else:
            for name, held in rows.items():
                self._write_rows(name, held)
        if self.overlay is not None:
            self.overlay.update(self.world)
        # a SIGTERM waits until the slot is both recorded and counted
        with interrupts(signal.SIGTERM, hold=True, second=False, install=False):
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
            with contextlib.suppress(OSError):
                remove_record(self.record)  # the trace this run began
        rollback(self.out_dir, self.created)

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
        rows = self.tables.drain()  # the rows written at the end (and those of a slot cut short)
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
