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
import datetime as _dt
import importlib.metadata as md
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import traci

import cosim
from cosim import config as cfgmod
from cosim.analysis import dwell_error_from_parquet
from cosim.config import Config
from cosim.errors import CosimError, SumoDied
from cosim.layers.base import LayerContext, make_layers
from cosim.recorder import Recorder
from cosim.sources.base import Snapshot
from cosim.sources.sumo import SumoSource, make_reader, route_lookup, sumo_command
from cosim.status import write_status
from cosim.world import World, net_file_of, read_net

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
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.name}-s{cfg.scenario.seed}-{stamp}"


def sumocfg_time(sumocfg: str | Path, key: str) -> float | None:
    """``begin``/``end``/``step-length`` from a .sumocfg, if set there."""
    from lxml import etree

    try:
        node = etree.parse(str(sumocfg)).getroot().find(f".//{key}")
    except (OSError, etree.XMLSyntaxError):
        return None
    try:
        return float(node.get("value")) if node is not None else None
    except (TypeError, ValueError):
        return None


def results_dir(cfg: Config, out_dir: str | Path | None) -> Path:
    """The results folder: the argument, else ``output.dir``, else runs/<name>-s<seed>-<time>."""
    out = Path(out_dir) if out_dir else (Path(cfg.output.dir) if cfg.output.dir else default_out_dir(cfg))
    out.mkdir(parents=True, exist_ok=True)
    return out


def step_length_s(cfg: Config) -> float:
    """SUMO's step length: the scenario's override, else the sumocfg's, else SUMO's 1 s default."""
    sc = cfg.scenario
    return sc.step_length_s if sc.step_length_s > 0 else (sumocfg_time(sc.sumocfg, "step-length") or 1.0)


@dataclass
class Timing:
    sumo_s: float = 0.0
    plugin_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)


class Session:
    """The plugin's state for one run: world, layers, recorder, timing."""

    def __init__(self, cfg: Config, out_dir: Path, net_file: str | Path, record: Path | None = None):
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.recorder = Recorder(self.out_dir, cfg.output.flush_slots, cfg.output.coverage)
        self.net = read_net(net_file)
        self.world = World(cfg, self.net)
        ctx = LayerContext(seed=cfg.scenario.seed, slot_s=cfg.scenario.slot_s,
                           scenario_file=cfg.source_file, table=self.recorder.table)
        self.layers = make_layers(cfg.layers, ctx)
        self.timing = Timing()
        self.trace = None
        if record is not None:
            from cosim.recorder import TableWriter

            record.parent.mkdir(parents=True, exist_ok=True)
            self.trace = TableWriter(record, cfg.output.flush_slots)
        self.slots = 0
        self.max_vehicles = 0
        self.sumo_version = ""
        self.finished = False
        (self.out_dir / "config.toml").write_text(cfgmod.dump_toml(cfg))
        for layer in self.layers:
            layer.on_start()

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
        for layer in self.layers:
            layer.on_slot(self.world)
        self.recorder.record_world(self.world)
        self.slots += 1
        self.max_vehicles = max(self.max_vehicles, len(snap))

    summary: dict | None = None

    def finish(self, status: str = "completed", error: str | None = None) -> dict:
        if self.finished:
            return self.summary
        self.finished = True
        layer_blocks: dict[str, Any] = {}
        for layer in self.layers:
            try:
                layer_blocks[layer.name] = layer.on_end()
            except Exception as exc:  # keep the other results
                layer_blocks[layer.name] = {"error": f"{type(exc).__name__}: {exc}"}
        self.recorder.close()
        if self.trace is not None:
            self.trace.close()
        r = self.world.rsus
        dwell_block: dict[str, Any] = {}
        if self.cfg.output.coverage and self.slots:
            try:
                dwell_block = dwell_error_from_parquet(self.out_dir / "coverage.parquet", self.cfg.scenario.slot_s,
                                                       self.cfg.world.dwell_cap_s)
                dwell_block["model"] = self.cfg.world.dwell_model
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
            "versions": versions(self.sumo_version),
            "slot_s": self.cfg.scenario.slot_s,
            "slots": self.slots,
            "sim_time_end_s": self.world.time_s if self.slots else None,
            "vehicles_seen": len(self.world.vehicle_names),
            "max_concurrent_vehicles": self.max_vehicles,
            "rsus": [{"id": i, "x": float(x), "y": float(y), "radius_m": float(rad),
                      "compute_flops": float(c), "bandwidth_hz": float(w)}
                     for i, x, y, rad, c, w in zip(r.ids, r.x, r.y, r.radius_m, r.compute_flops, r.bandwidth_hz)],
            "wall_s": {"total": wall, "sumo": self.timing.sumo_s, "plugin": self.timing.plugin_s},
            "tables": {name: t.rows for name, t in self.recorder.tables.items()},
            "dwell_prediction": dwell_block,
            "layers": layer_blocks,
        }
        self.recorder.write_json("summary.json", self.summary)
        return self.summary


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
        busy = tm.sumo_s + tm.plugin_s
        share = 100 * tm.plugin_s / busy if busy > 0 else 0.0
        end = f"/{self.end_s:g}" if self.end_s else ""
        rate = session.slots / elapsed
        eta = ""
        if self.end_s and rate > 0 and not force:
            left = max(0.0, (self.end_s - t) / session.cfg.scenario.slot_s) / rate
            eta = f"  ETA {int(left // 60)}:{int(left % 60):02d}"
        write_status(f"t={t:g}{end} s  slot {session.slots}  vehicles {n}  {rate:.0f} slots/s  "
                     f"(plugin {share:.0f}% of time){eta}", final=force)


def run(cfg: Config, out_dir: str | Path | None = None, *, backend: str | None = None, gui: bool = False,
        port: int | None = None, progress: bool = True, sumo_binary: str | None = None,
        extra_sumo_args: list[str] | None = None, record: str | Path | None = None) -> dict:
    """Run SUMO with the plugin attached; returns the summary (also in ``out_dir/summary.json``).

    Raises :class:`SumoDied` (after writing everything so far) if SUMO stops mid-run.
    ``record``: also write the traffic as a trace — ``*.parquet``: cosim's snapshots at full
    precision (a replay reproduces the run exactly); ``*.xml[.gz]``: SUMO's FCD output.
    """
    sc = cfg.scenario
    backend = backend or sc.backend
    if gui and backend == "libsumo":
        backend = "traci"  # sumo-gui is only reachable over a socket
    out = results_dir(cfg, out_dir)
    net_file = net_file_of(sc.sumocfg)
    step = step_length_s(cfg)
    ratio = sc.slot_s / step
    if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
        raise CosimError(f"{cfg.source_file}: scenario.slot_s = {sc.slot_s:g} is not a multiple of the "
                         f"SUMO step length {step:g} s")
    end_s = sc.end_s if sc.end_s >= 0 else sumocfg_time(sc.sumocfg, "end")
    cmd = sumo_command(sc.sumocfg, seed=sc.seed, gui=gui, begin_s=sc.begin_s, end_s=sc.end_s,
                       step_length_s=sc.step_length_s, log_file=out / "sumo.log",
                       extra=[*sc.sumo_args, *(extra_sumo_args or [])], binary=sumo_binary)
    record_path = Path(record) if record else None
    if record_path is not None and not record_path.name.endswith(".parquet"):
        # SUMO's own FCD trace, one record per slot
        # SUMO labels a record with the time its step began: the state at slot boundary t is the
        # record labelled t - step, so start one step before the first boundary
        first = (sc.begin_s if sc.begin_s >= 0 else (sumocfg_time(sc.sumocfg, "begin") or 0.0)) + sc.slot_s - step
        cmd += ["--fcd-output", str(record_path), "--fcd-output.acceleration", "--device.fcd.begin", f"{first:g}",
                "--device.fcd.period", f"{sc.slot_s:g}", "--precision", "6"]
        record_path = None
    session = Session(cfg, out, net_file, record=record_path)
    source = SumoSource(cmd, backend=backend, port=port, log_file=out / "sumo.log", end_s=end_s)
    return drive(session, source, sc.slot_s, end_s, progress)


def replay(cfg: Config, trace: str | Path, out_dir: str | Path | None = None, *, progress: bool = True) -> dict:
    """Run the plugin on a recorded trace (no SUMO): same world, same layers, same results."""
    from cosim.sources.replay import ReplaySource

    sc = cfg.scenario
    out = results_dir(cfg, out_dir)
    end_s = sc.end_s if sc.end_s >= 0 else None
    step = step_length_s(cfg)
    source = ReplaySource(trace, end_s=end_s, begin_s=sc.begin_s if sc.begin_s >= 0 else 0.0, fcd_step_s=step)
    session = Session(cfg, out, net_file_of(sc.sumocfg))
    return drive(session, source, sc.slot_s, end_s, progress)


def drive(session: "Session", source, slot_s: float, end_s: float | None, progress: bool) -> dict:
    """The slot loop over any TrafficSource; always finishes the session (results on disk)."""
    prog = Progress(progress, end_s)
    status, error = "completed", None
    try:
        source.start()
        session.sumo_version = source.sumo_version
        session.world.route_of = getattr(source, "route_of", None)
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
            session.timing.sumo_s += t1 - t0
            session.timing.plugin_s += t2 - t1
            prog.update(session, snap.time_s, len(snap))
            if end_s is None and source.finished():
                break
        prog.update(session, session.world.time_s, len(session.world.snap), force=True)
    except SumoDied as exc:
        status, error = "sumo-died", str(exc)
        raise
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by the user"
        raise
    except BaseException as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        source.close()
        summary = session.finish(status, error)
    return summary


class CosimListener(traci.StepListener):
    """Runs the plugin inside someone else's TraCI/libsumo loop (see :func:`attach`)."""

    def __init__(self, conn: Any, session: Session):
        self.conn = conn
        self.session = session
        self.reader = make_reader(conn)
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
           **scenario_overrides: Any) -> CosimListener:
    """Attach the plugin to a running simulation with one call.

    ``conn`` is the ``traci`` module (default), the ``libsumo`` module, or a
    ``traci.Connection``. ``scenario`` is a scenario TOML path or :class:`Config`; without one,
    defaults are used with RSUs placed automatically on the running network. Results are
    written when ``listener.close()`` is called, when the listener is removed or the TraCI
    connection closes (``traci.close()``), and at the latest when the interpreter exits.
    """
    conn = conn if conn is not None else traci
    if isinstance(scenario, Config):
        cfg = scenario
    elif scenario is not None:
        cfg = cfgmod.load(scenario)
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
    netf = conn.simulation.getOption("net-file")
    out = Path(out_dir) if out_dir else default_out_dir(cfg)
    session = Session(cfg, out, netf)
    session.sumo_version = conn.getVersion()[1]
    session.world.route_of = route_lookup(conn)
    listener = CosimListener(conn, session)
    conn.addStepListener(listener)
    # traci.close() calls cleanUp(); libsumo.close() does not, so results are also written at
    # interpreter exit if listener.close() was never called.
    atexit.register(session.finish, "completed")
    return listener
