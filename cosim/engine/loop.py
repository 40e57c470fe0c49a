"""The slot loop: SUMO -> snapshot -> world -> layers -> recorder, every slot gamma.

:func:`drive` steps any traffic source to the boundaries of :func:`cosim.engine.timeline.slot_times`
and ends in :meth:`~cosim.engine.session.Session.finish` however the run ends (SUMO dying, Ctrl-C,
SIGTERM, a bad trace row); :class:`CosimListener` does the same work inside someone else's
TraCI/libsumo loop (:func:`cosim.runner.attach`).
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from typing import Any

import traci

from cosim.engine.session import Session
from cosim.engine.signals import interrupts, raised_mark, reraise_dropped
from cosim.engine.timeline import EPS, slot_times
from cosim.errors import CosimError, DiskFull, SumoDied, Terminated, WorkerDied, interrupt_in, is_disk_full
from cosim.sources.sumo import make_reader
from cosim.status import write_status


def drive(session: Session, source: Any, progress: bool = True, signals: bool = True) -> dict:
    """The slot loop over any TrafficSource; however it ends, the session is finished (tables
    closed, summary.json with the status written) — or, when it ends before the first slot,
    discarded (no empty results folder). SIGTERM is handled like Ctrl-C. ``signals`` False: the
    process's signal handlers are left alone (a run paused inside a Gymnasium environment,
    whose caller owns them; Ctrl-C still ends it with the results written)."""
    tl = session.spec.timeline
    prog = Progress(progress, tl.end_s)
    status, error, failure = "completed", None, None
    summary: dict = {}
    with interrupts(signal.SIGTERM, install="unowned") if signals else contextlib.nullcontext():
        mark = raised_mark()  # a signal raised from here on that did not end the run was dropped
        try:
            session.source = source
            source.start()
            session.sumo_version = source.sumo_version
            if session.overlay is not None:
                session.overlay.connect(source.conn, session.world, session.layers)
            session.world.route_of = source.route_of
            for target in slot_times(source.time_s(), tl.slot_s, tl.end_s):
                t0 = time.perf_counter()
                snap = source.step_to(target)
                t1 = time.perf_counter()
                session.on_snapshot(snap)
                t2 = time.perf_counter()
                session.timing.add_slot(t1 - t0, t2 - t1, source)
                prog.update(session, snap.time_s, len(snap))
                reraise_dropped(mark)  # a SIGTERM/Ctrl-C that landed in a C callback (numba's) and was dropped
                if tl.end_s is None and source.finished():
                    break
            prog.update(session, session.world.time_s, len(session.world.snap), force=True)
        except SumoDied as exc:
            status, error, failure = "sumo-died", str(exc), exc
        except Terminated as exc:
            status, error, failure = "terminated", "terminated by a signal (SIGTERM)", exc
        except KeyboardInterrupt as exc:
            status, error, failure = "interrupted", "interrupted by the user", exc
        except BaseException as exc:
            stop = interrupt_in(exc)  # a signal that came while a compiled kernel ran (cosim.jit)
            if isinstance(stop, Terminated):
                status, error, failure = "terminated", "terminated by a signal (SIGTERM)", stop
            elif stop is not None:
                status, error, failure = "interrupted", "interrupted by the user", stop
            elif is_disk_full(exc):
                status, error = "disk-full", f"disk full while writing the results: {exc}"
                failure = DiskFull(f"{session.out_dir}: disk full after slot {session.slots} (every table part "
                                   "flushed before is readable; summary.json says disk-full if it fitted)")
            elif isinstance(exc, CosimError) and not isinstance(exc, (WorkerDied, DiskFull)):
                # bad input found after the first slot (a trace row while streaming, a plugin's
                # malformed result): exit 2 as any bad input; the slots before are kept
                status, error, failure = "bad-input", str(exc), exc
            else:
                status, error, failure = "failed", f"{type(exc).__name__}: {exc}", exc
        # a first Ctrl-C or SIGTERM waits until the results are written, a second one interrupts
        with interrupts(signal.SIGINT, signal.SIGTERM, hold=True) if signals else contextlib.nullcontext():
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
