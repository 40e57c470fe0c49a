"""A traffic source in its own process, one slot ahead of the plugin (``scenario.jobs >= 2``).

The plugin only reads SUMO, so SUMO can step to slot t+1 while the world and the layers work on
slot t. :class:`PipelinedSource` wraps any :class:`~cosim.sources.base.TrafficSource` (live SUMO
through libsumo or TraCI, or a replay: then the trace is parsed in the worker) and runs it in a
child process (``python -m cosim.sources.pipelined``, started by :mod:`cosim.engine.processes`) that:

1. steps the wrapped source to the next slot boundary and reads the snapshot,
2. sends it through a socket pair (pickled arrays, ~0.1 ms for 1,000 vehicles),
3. waits until the plugin has taken it — then starts on the next slot.

So SUMO is never more than one slot ahead, and it steps exactly where the serial loop would:
the child steps to the same boundaries (:func:`cosim.engine.timeline.slot_times`) and stops where
:func:`cosim.engine.loop.drive` would (past ``end_s``, or once
``finished()`` when no end is known), so SUMO's own outputs are the same too. Each snapshot
carries the routes of the vehicles first seen in it (see :class:`~cosim.sources.base.Routes`),
so ``route_of`` is answered in the plugin's process, with the values the serial path gives.
Results are bit-identical to the serial path (tested).

Failures keep their meaning: SUMO stopping mid-run raises :class:`~cosim.errors.SumoDied` at
the slot where the serial path raises it; the child exiting or not answering for
``scenario.sumo_timeout_s`` raises ``SumoDied`` too (the child is then killed). The child
ignores SIGINT (Ctrl-C reaches the whole process group): the plugin's process handles it and
closes the child, which closes SUMO properly.

Timing: the child reports how long it worked (stepping + reading) and how long it waited for
the plugin, and its CPU seconds; :attr:`PipelinedSource.sumo_side` hands them to the runner.
"""

from __future__ import annotations

import importlib
import subprocess
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from cosim.engine import processes
from cosim.engine.timeline import EPS, slot_times
from cosim.errors import CosimError, SumoDied, last_error_line
from cosim.sources.base import Snapshot


class PipelinedSource:
    """Runs ``factory(**kwargs)`` (``"module:Class"``, a TrafficSource) in a child process one
    slot ahead. ``end_s`` must be the end the runner's loop uses; ``timeout_s`` bounds every
    wait for the child (a frozen SUMO)."""

    def __init__(self, factory: str, kwargs: dict, slot_s: float, end_s: float | None, timeout_s: float = 60.0,
                 log_file: str | Path | None = None):
        self.factory, self.kwargs = factory, dict(kwargs)
        self.slot_s, self.end_s, self.timeout_s = slot_s, end_s, timeout_s
        self.log_file = Path(log_file) if log_file else None
        self.sumo_version = ""
        self.route_of = None
        self.delivered = None
        #: the SUMO side so far: busy (stepping + reading) and waiting for the plugin [s wall],
        #: and its process's CPU seconds
        self.sumo_side: dict[str, float] = {"busy": 0.0, "wait": 0.0, "cpu": 0.0}
        self.proc: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self._begin = 0.0
        self._slots: Any = iter(())  # the slot boundaries the child steps to, as the loop computes them
        self._finished = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.proc, self.conn = processes.spawn("cosim.sources.pipelined")
        processes.send(self.conn, (self.factory, self.kwargs, self.slot_s, self.end_s))
        msg = self._recv("start", max(self.timeout_s, 300.0) if self.timeout_s > 0 else 0)  # loading takes a while
        self._begin, self.sumo_version, has_routes = msg[1:]
        self._slots = slot_times(self._begin, self.slot_s, None)
        if has_routes:
            from cosim.sources.base import Routes

            self.route_of = Routes()

    def step_to(self, time_s: float) -> Snapshot:
        expected = next(self._slots)
        if abs(expected - time_s) > EPS:
            raise CosimError(f"pipelined source: asked for t={time_s:g}s, the worker prepared t={expected:g}s "
                             "(slots must follow one another)")
        msg = self._recv(f"t={time_s:g}s")
        _, cols, self._finished, routes, cleared, side = msg
        try:
            processes.send(self.conn, True)  # taken: the child goes on with the next slot
        except OSError:  # it died after delivering this slot, which counts: the next _recv says how it ended
            pass
        self.sumo_side = side
        #: the routes this slot brought (and whether the list was emptied first), for policy workers
        self.delivered = (routes, cleared) if self.route_of is not None else None
        if self.route_of is not None:
            self.route_of.receive(routes, cleared)
        return Snapshot(*cols)

    def finished(self) -> bool:
        return self._finished

    def time_s(self) -> float:
        return self._begin

    def close(self) -> None:
        conn, proc = self.conn, self.proc
        self.conn = None
        if proc is None:
            return
        if conn is not None:
            try:
                processes.send(conn, False)  # stop
                deadline = time.monotonic() + 30.0  # SUMO closing: writing its outputs
                while time.monotonic() < deadline and conn.poll(max(0.0, deadline - time.monotonic())):
                    msg = processes.recv(conn)  # a snapshot (or error) still in flight, then the last word
                    if msg[0] == "closed":
                        self.sumo_side = msg[1]
                        break
            except Exception:  # gone, or a message cut by Ctrl-C: the wait below decides
                pass
            conn.close()
        processes.stop(proc, 10)

    # -- messages ----------------------------------------------------------------------------
    def _recv(self, what: str, timeout_s: float | None = None) -> tuple:
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            ready = self.conn.poll(timeout_s if timeout_s > 0 else None)  # 0: wait forever
            msg = processes.recv(self.conn) if ready else None
        except (OSError, EOFError):
            msg, ready = None, True
        if msg is None:
            self._kill()
            if not ready:
                raise SumoDied(f"SUMO did not answer for {timeout_s:g} s at {what} "
                               "(scenario.sumo_timeout_s); its process was stopped") from None
            why = last_error_line(self.log_file.read_text(errors="replace")) if self.log_file and \
                self.log_file.is_file() else ""
            raise SumoDied(f"SUMO's process ended at {what} (exit code {self.proc.returncode})"
                           + (f": {why}" if why else "")) from None
        if msg[0] == "died":
            raise SumoDied(msg[1])
        if msg[0] == "error":
            raise CosimError(msg[1])
        return msg

    def _kill(self) -> None:
        if self.proc is not None:
            processes.stop(self.proc, 0)
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def make_source(cfg: Any, factory: str, **kwargs: Any) -> Any:
    """The traffic source a run uses: ``factory(**kwargs)`` in this process when
    ``scenario.jobs`` is 1 (the reference path), else in a child process one slot ahead."""
    sc = cfg.scenario
    if sc.jobs <= 1:
        mod, _, cls = factory.partition(":")
        return getattr(importlib.import_module(mod), cls)(**kwargs)
    # the source's own frozen-SUMO timeout when it takes one (0 for a sumo-gui that may be paused)
    timeout_s = kwargs.get("timeout_s", sc.sumo_timeout_s)
    return PipelinedSource(factory, kwargs, sc.slot_s, kwargs.get("end_s"), timeout_s, kwargs.get("log_file"))


# -- the child --------------------------------------------------------------------------------
def _serve(conn: Connection) -> None:
    factory, kwargs, slot_s, end_s = processes.recv(conn)
    mod, _, cls = factory.partition(":")
    busy = wait = 0.0
    side = lambda: {"busy": busy, "wait": wait, "cpu": time.process_time()}  # noqa: E731
    src = None
    stopped = False  # the plugin said stop
    try:
        src = getattr(importlib.import_module(mod), cls)(**kwargs)
        src.start()
        routes = getattr(src, "route_of", None)
        if routes is not None:
            routes.fresh = dict(routes)  # what start() read already (a replay reads its first rows there)
        begin = src.time_s()
        processes.send(conn, ("started", begin, src.sumo_version, routes is not None))
        for target in slot_times(begin, slot_s, end_s):
            t0 = time.perf_counter()
            snap = src.step_to(target)
            done = end_s is None and src.finished()
            t1 = time.perf_counter()
            busy += t1 - t0
            fresh, cleared = {}, False
            if routes is not None:
                fresh, routes.fresh, cleared, routes.cleared = routes.fresh, {}, routes.cleared, False
            processes.send(conn, ("snap", snap.columns(), done, fresh, cleared, side()))
            stopped = not processes.recv(conn)  # the plugin took it (True) or stops (False)
            wait += time.perf_counter() - t1
            if stopped or done:
                break
    except SumoDied as exc:
        processes.send(conn, ("died", str(exc)))
    except CosimError as exc:
        processes.send(conn, ("error", str(exc)))
    except (EOFError, OSError):  # the plugin's process is gone
        return
    except Exception as exc:  # keep the one-line contract; the plugin's process reports it
        processes.send(conn, ("error", f"traffic source failed: {type(exc).__name__}: {exc}"))
    finally:
        if src is not None:
            src.close()
    try:
        while not stopped:  # until the plugin says stop (it may still be on its last slot)
            stopped = not processes.recv(conn)
        processes.send(conn, ("closed", side()))
    except (EOFError, OSError):
        pass


if __name__ == "__main__":
    processes.child_main(_serve)
