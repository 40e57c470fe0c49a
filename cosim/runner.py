"""The public way in: :func:`run`, :func:`replay` and :func:`attach` (the facade over
:mod:`cosim.engine`).

* :func:`run` — cosim drives SUMO (libsumo in-process by default, or TraCI) and the plugin acts
  every slot gamma; :func:`replay` — the same on a recorded trace, no SUMO.
* :func:`attach` — the user's own TraCI/libsumo script drives SUMO; one call registers a
  ``traci.StepListener`` that does the same work after each ``simulationStep``.

Each resolves the run (:mod:`cosim.engine.spec`), opens its results folder
(:mod:`cosim.engine.folder`) and :class:`~cosim.engine.session.Session`, and drives the slot
loop (:mod:`cosim.engine.loop`); all end in :meth:`Session.finish`, which closes every table and
writes ``summary.json`` — also when SUMO dies mid-run or the user interrupts.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
from pathlib import Path
from typing import Any

import traci

from cosim import config as cfgmod
from cosim import sumo_outputs
from cosim.config import Config, run_window
from cosim.engine.folder import check_record, claim_record, opened, remove_record, results_dir
from cosim.engine.loop import CosimListener, drive
from cosim.engine.session import Session
from cosim.engine.spec import resolve
from cosim.engine.workers import Warm
from cosim.errors import CosimError
from cosim.recorder import claim
from cosim.sources.pipelined import make_source
from cosim.sources.sumo import sumo_command
from cosim.world.network import NetInfo

__all__ = ["attach", "open_replay", "open_run", "replay", "run"]


def run(cfg: Config, out_dir: str | Path | None = None, *, backend: str | None = None, gui: bool = False,
        port: int | None = None, progress: bool = True, sumo_binary: str | None = None,
        extra_sumo_args: list[str] | None = None, record: str | Path | None = None, overwrite: bool = False) -> dict:
    """Run SUMO with the plugin attached; returns the summary (also in ``out_dir/summary.json``).

    ``gui``: sumo-gui with the plugin's state drawn on the traffic (:mod:`cosim.overlay`).
    Every input is checked before anything is written (:func:`~cosim.engine.spec.resolve`). Raises
    :class:`SumoDied` (after writing everything so far) if SUMO stops or freezes mid-run,
    :class:`~cosim.errors.Terminated` on SIGTERM and ``KeyboardInterrupt`` on Ctrl-C (idem).
    ``record``: also write the traffic as a trace — ``*.parquet`` (a part directory, like the
    result tables) or ``*.csv[.gz]``: cosim's snapshots at full precision (a replay reproduces the
    run exactly); ``*.xml[.gz]``: SUMO's FCD output. ``overwrite``: replace the results of an
    earlier run in ``out_dir`` (and an earlier trace) instead of refusing.
    """
    session, source = open_run(cfg, out_dir, backend=backend, gui=gui, port=port, sumo_binary=sumo_binary,
                               extra_sumo_args=extra_sumo_args, record=record, overwrite=overwrite)
    return drive(session, source, progress)


@contextlib.contextmanager
def warm_workers(cfg: Config, gui: bool = False):  # noqa: ANN201
    """The policy workers a run may need, started before its checks so that their start-up
    overlaps the plugin's (:class:`~cosim.engine.workers.Warm`); those the session did not take
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
             net: NetInfo | None = None) -> tuple[Session, Any]:
    """What :func:`run` drives: the checked session and its SUMO source (not started).
    ``net``: the network already read (e.g. once per environment)."""
    with warm_workers(cfg, gui) as warm:
        return _open_run(cfg, out_dir, backend=backend, gui=gui, port=port, sumo_binary=sumo_binary,
                         extra_sumo_args=extra_sumo_args, record=record, overwrite=overwrite, net=net, warm=warm)


def _open_run(cfg: Config, out_dir: str | Path | None, *, backend: str | None, gui: bool, port: int | None,
              sumo_binary: str | None, extra_sumo_args: list[str] | None, record: str | Path | None,
              overwrite: bool, net: NetInfo | None, warm: Any) -> tuple[Session, Any]:
    if cfg.traffic.source != "sumo":  # a paper's own world: synthetic traffic, no SUMO
        if gui or extra_sumo_args or (record and Path(record).name.lower().endswith((".xml", ".xml.gz", ".fcd.parquet"))):
            what = "--gui" if gui else "--sumo-args" if extra_sumo_args else f"--record {record} (SUMO's FCD output)"
            raise CosimError(f"{what}: traffic.source = \"{cfg.traffic.source}\" runs no SUMO")
        return _open_synthetic(cfg, out_dir, record=record, overwrite=overwrite, net=net, warm=warm)
    if port is not None and not 1 <= port <= 65535:
        raise CosimError(f"--port {port}: not a TCP port (1-65535)")
    spec = resolve(cfg, traffic="sumo", most=1 if gui else None, net=net)  # --jobs auto: one process with --gui
    cfg, sc, tl = spec.cfg, spec.cfg.scenario, spec.timeline
    backend = backend or sc.backend
    if gui and backend == "libsumo":
        backend = "traci"  # sumo-gui is only reachable over a socket
    if gui and sc.jobs > 1:
        raise CosimError("--gui draws on SUMO from the plugin's process: use it with --jobs 1 (scenario.jobs = 1)")
    record_path = check_record(record, overwrite)
    out, created = results_dir(cfg, out_dir, overwrite)
    remove_record(record_path)  # only now: a refused run keeps the earlier trace
    with opened(out, created):
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
            first = tl.begin_s + tl.slot_s - tl.step_s
            cmd += ["--fcd-output", str(record_path), "--fcd-output.acceleration", "--device.fcd.begin", f"{first:g}",
                    "--device.fcd.period", f"{sc.slot_s:g}", "--precision", "6"]
            record_path = None
        session = Session(spec, out, record=record_path, created=created, overlay=gui, warm=warm)
        session.sumo_outputs = outputs if outputs else None
    # a paused sumo-gui is not frozen; with jobs = 2 SUMO runs in a child process, one slot ahead
    source = make_source(cfg, "cosim.sources.sumo:SumoSource", cmd=cmd, backend=backend, port=port,
                         log_file=out / "sumo.log", end_s=tl.end_s, timeout_s=0.0 if gui else sc.sumo_timeout_s,
                         fields=session.fields,
                         blame=[(f"{cfg.source_file}: scenario.sumo_args", list(sc.sumo_args)),
                                ("--sumo-args", list(extra_sumo_args or [])),
                                (f"{cfg.source_file}: scenario.sumocfg {sc.sumocfg}", [])])
    return session, source


def _open_synthetic(cfg: Config, out_dir: str | Path | None, *, record: str | Path | None, overwrite: bool,
                    net: NetInfo | None, warm: Any) -> tuple[Session, Any]:
    """A run whose traffic a synthetic source makes (``traffic.source``, e.g. ``paper000``:
    :data:`cosim.sources.paper.SOURCES`): the same session, world, layers and tables as a SUMO run."""
    from cosim.sources.paper import synthetic_source

    spec = resolve(cfg, traffic="synthetic", net=net)
    cfg, tl = spec.cfg, spec.timeline
    cls, kwargs = synthetic_source(cfg, spec.net.path, tl.step_s, tl.begin_s, tl.end_s)  # bad settings: an error here
    record_path = check_record(record, overwrite)
    out, created = results_dir(cfg, out_dir, overwrite)
    remove_record(record_path)
    with opened(out, created):
        claim_record(out, record_path)
        session = Session(spec, out, record=record_path, created=created, warm=warm)
    source = make_source(cfg, cls, **kwargs)
    return session, source


def replay(cfg: Config, trace: str | Path, out_dir: str | Path | None = None, *, progress: bool = True,
           overwrite: bool = False, end_from: str | None = None) -> dict:
    """Run the plugin on a recorded trace (no SUMO): same world, same layers, same results.
    The trace is checked as it streams (:class:`~cosim.sources.replay.ReplaySource`).
    ``end_from``: where the end time came from when not the scenario (``--end 200``), for the
    warning that the trace ends before it."""
    session, source = open_replay(cfg, trace, out_dir, overwrite=overwrite, end_from=end_from)
    summary = drive(session, source, progress)
    for note in session.notes:
        print(f"cosim: warning: {note}", file=sys.stderr)
    return summary


def open_replay(cfg: Config, trace: str | Path, out_dir: str | Path | None = None, *, overwrite: bool = False,
                net: NetInfo | None = None, end_from: str | None = None) -> tuple[Session, Any]:
    """What :func:`replay` drives: the checked session and its trace source. ``net``: the
    network already read (e.g. once per environment)."""
    with warm_workers(cfg) as warm:
        return _open_replay(cfg, trace, out_dir, overwrite=overwrite, net=net, warm=warm, end_from=end_from)


def _open_replay(cfg: Config, trace: str | Path, out_dir: str | Path | None, *, overwrite: bool,
                 net: NetInfo | None, warm: Any, end_from: str | None = None) -> tuple[Session, Any]:
    from cosim.sources.replay import ReplaySource, trace_end_s

    last = trace_end_s(trace) if Path(trace).exists() else None
    note = None
    if last is not None:  # a replay ends where its trace ends, unless an earlier end is asked for
        _, end = run_window(cfg)
        if end is None or end > last + 1e-9:
            if end is not None:  # said once the trace has replayed (bad input says only its own line)
                src = end_from or (f"{cfg.source_file}: scenario.end_s" if cfg.scenario.end_s >= 0
                                   else f"{cfg.scenario.sumocfg}: <end>")
                note = (f"{trace}: the trace ends at {last:g} s, before the end {end:g} s ({src}): "
                        f"the replay ends at {last:g} s")
            cfg = cfg.replace(scenario={"end_s": last})
    spec = resolve(cfg, traffic="replay", net=net)
    cfg, tl = spec.cfg, spec.timeline
    kwargs = dict(path=trace, end_s=tl.end_s, begin_s=tl.begin_s, fcd_step_s=tl.step_s, net=spec.net)
    ReplaySource(**kwargs)  # a missing or unknown trace is an error before anything starts
    source = make_source(cfg, "cosim.sources.replay:ReplaySource", **kwargs)
    out, created = results_dir(cfg, out_dir, overwrite, inputs=(trace,))
    with opened(out, created):
        session = Session(spec, out, created=created, warm=warm)
    if note is not None:  # not in summary.json's warnings: the replay's results are the live run's
        session.notes.append(note)
    return session, source


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
    spec = resolve(cfg, traffic="attach", net_file=conn.simulation.getOption("net-file"))  # one process
    cfg = spec.cfg
    out, created = results_dir(cfg, out_dir, overwrite)
    with opened(out, created):
        session = Session(spec, out, created=created, overlay=overlay)
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
