"""Live SUMO as a :class:`TrafficSource`: in-process through libsumo, or over a TraCI socket.

How state is read was chosen by measurement (``tools/bench_read.py``, grid6, ~450 vehicles,
0.25 s steps, 1 s slots; wall time of SUMO + reading relative to SUMO alone):

=========  ==================  =====================  ======================
backend    getter per vehicle  per-vehicle subscribe  one context subscribe
=========  ==================  =====================  ======================
libsumo    1.01x               1.35x                  1.35x
TraCI      13.8x               3.2x                   3.4x
=========  ==================  =====================  ======================

* **TraCI**: one *context subscription* on a junction with a range larger than the network
  returns every vehicle's variables in one message per slot and picks up new vehicles by
  itself (no per-vehicle subscribe calls, works when attaching mid-run). It is made anew at
  each read, valid until then (:class:`TraciReader`), and cosim decodes its answer in bulk
  (:mod:`cosim.sources.traci_step`): a standing subscription is evaluated by SUMO after every
  simulation step, and traci's value-by-value decoding was most of the plugin's CPU time
  (docs/performance.md, issue 14's third pass).
* **libsumo**: subscriptions cost SUMO extra work every slot, while a getter is a plain
  in-process C++ call (no socket, no message): :class:`DirectReader` reads each variable for
  all vehicles with ``map`` over the id list. (Over TraCI that pattern is the slow one.)

``simulationStep(t)`` advances SUMO to the slot boundary in one call however many SUMO steps
the slot holds.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import operator
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import traci.constants as tc

from cosim.engine import processes
from cosim.errors import CosimError, SumoDied, last_error_line
from cosim.sources.base import ON_DEMAND_FIELDS, Routes, Snapshot
from cosim.sumo_home import sumo_binary

#: variables read for every vehicle each slot. Each one costs ~0.15 ms per slot for ~450
#: vehicles in libsumo's result conversion, so the edge is derived from the lane id, the
#: (constant) length is fetched once per new vehicle, and the acceleration only when asked
#: (``fields``; see :data:`~cosim.sources.base.ON_DEMAND_FIELDS`). The one string comes last:
#: the shape :class:`~cosim.sources.traci_step.ContextDecoder` decodes.
VARS = (tc.VAR_POSITION, tc.VAR_SPEED, tc.VAR_ANGLE, tc.VAR_ACCELERATION, tc.VAR_LANEPOSITION, tc.VAR_LANE_ID)
#: the on-demand snapshot field each optional variable fills
_ON_DEMAND_VARS = {tc.VAR_ACCELERATION: "accel"}


def read_vars(fields=ON_DEMAND_FIELDS) -> tuple[int, ...]:
    """:data:`VARS` less the on-demand variables whose field is not in ``fields``."""
    return tuple(v for v in VARS if _ON_DEMAND_VARS.get(v, "") in ("", *fields))
#: context range [m] that covers any network
_EVERYWHERE_M = 1e9
_labels = itertools.count()


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("localhost", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def sumo_command(sumocfg: str | Path, *, seed: int, gui: bool = False, begin_s: float = -1,
                 end_s: float = -1, step_length_s: float = -1, log_file: str | Path | None = None,
                 extra: list[str] | tuple[str, ...] = (), binary: str | None = None) -> list[str]:
    """The SUMO command line cosim uses (also for the bare-SUMO benchmark baseline)."""
    cmd = [binary or sumo_binary("sumo-gui" if gui else "sumo"), "-c", str(sumocfg),
           "--seed", str(seed), "--no-step-log", "true", "--duration-log.disable", "true"]
    if begin_s >= 0:
        cmd += ["--begin", f"{begin_s:g}"]
    if end_s >= 0:
        cmd += ["--end", f"{end_s:g}"]
    if step_length_s > 0:
        cmd += ["--step-length", f"{step_length_s:g}"]
    if log_file is not None:
        cmd += ["--log", str(log_file)]
    return cmd + [str(a) for a in extra]


def _edge_of_lane(lane: str) -> str:
    return lane.rpartition("_")[0] if lane else ""


class _Cache(dict):
    """dict with a fallback: ``cache[k]`` computes and keeps ``fn(k)`` on a miss; emptied when it
    reaches ``max_items`` so that very long runs (vehicles come and go) stay bounded."""

    def __init__(self, fn, max_items: int = 50_000):
        super().__init__()
        self.fn = fn
        self.max_items = max_items

    def __missing__(self, key):
        if len(self) >= self.max_items:
            self.clear()
        value = self[key] = self.fn(key)
        return value


class _FirstSight(_Cache):
    """vehicle id -> length [m]; a vehicle's constants are asked of SUMO once, at first sight:
    its length, and its route into ``routes``. Bounded like :class:`_Cache` (both empty together)."""

    def __init__(self, get_length, get_route):
        super().__init__(self._fetch)
        self.get_length, self.get_route = get_length, get_route
        self.routes = Routes()

    def _fetch(self, vid: str) -> float:
        routes = self.routes
        if not self:  # first call, or the cache was just emptied: routes go with it
            routes.clear()
            routes.cleared = True
        routes.add(vid, tuple(self.get_route(vid)))
        return self.get_length(vid)


def snapshot_from_results(time_s: float, res: dict[str, dict[int, Any]], length_of=None,
                          edge_cache: dict | None = None, variables: tuple[int, ...] = VARS) -> Snapshot:
    """Columns from a ``{vehicle: {var: value}}`` subscription result (C-level transposition)
    holding ``variables`` (an on-demand one missing there: its column is NaN).

    ``length_of(vehicle_id)`` supplies lengths (cached by the caller); 5 m when not given.
    """
    if not res:
        return Snapshot.empty(time_s)
    cols = dict(zip(variables, zip(*map(operator.itemgetter(*variables), res.values()))))
    pos = np.array(cols[tc.VAR_POSITION], dtype=float)
    f = lambda v: np.array(cols[v], dtype=float) if v in cols else None  # noqa: E731
    return _assemble(time_s, list(res), cols[tc.VAR_LANE_ID], length_of, edge_cache,
                     {"x": pos[:, 0], "y": pos[:, 1], "speed": f(tc.VAR_SPEED), "angle": f(tc.VAR_ANGLE),
                      "accel": f(tc.VAR_ACCELERATION), "lane_pos": f(tc.VAR_LANEPOSITION)})


def _assemble(time_s: float, ids: list, lanes, length_of, edge_cache: dict | None, cols: dict) -> Snapshot:
    """A snapshot from the vehicles' ids and lanes (in one order) and the float columns in
    ``cols`` (one missing or None: NaN); edges from the lanes, lengths from ``length_of``."""
    n = len(ids)
    if n == 0:
        return Snapshot.empty(time_s)
    f = lambda c: cols[c] if cols.get(c) is not None else np.full(n, np.nan)  # noqa: E731
    edges = edge_cache if edge_cache is not None else _Cache(_edge_of_lane)
    edge = np.array(list(map(edges.__getitem__, lanes)), dtype=object)
    length = np.fromiter(map(length_of, ids), float, n) if length_of else np.full(n, 5.0)
    return Snapshot(time_s=time_s, ids=np.array(ids, dtype=object), x=f("x"), y=f("y"), speed=f("speed"),
                    angle=f("angle"), accel=f("accel"), edge=edge, lane=np.array(lanes, dtype=object),
                    lane_pos=f("lane_pos"), length=length)


class SubscriptionReader:
    """Reads all vehicles through one standing context subscription on an existing connection,
    from the results its client decoded (the TraCI path measured before :class:`TraciReader`;
    that one's fallback).

    ``conn`` is the ``libsumo`` module, the ``traci`` module, or a ``traci.Connection``;
    ``fields``: the on-demand snapshot fields to read (the others are NaN).
    """

    def __init__(self, conn: Any, fields=ON_DEMAND_FIELDS):
        self.conn = conn
        junctions = conn.junction.getIDList()
        if not junctions:
            raise CosimError("the SUMO network has no junction to anchor the vehicle subscription on")
        self.anchor = junctions[0]
        self.vars = read_vars(fields)
        self._subscribe()
        self.lengths = _FirstSight(conn.vehicle.getLength, conn.vehicle.getRoute)  # once per vehicle
        self.routes = self.lengths.routes
        self.edges = _Cache(_edge_of_lane)

    def _subscribe(self) -> None:
        self.conn.junction.subscribeContext(self.anchor, tc.CMD_GET_VEHICLE_VARIABLE, _EVERYWHERE_M, list(self.vars))

    def read(self, time_s: float) -> Snapshot:
        res = self.conn.junction.getContextSubscriptionResults(self.anchor)
        return snapshot_from_results(time_s, res or {}, self.lengths.__getitem__, self.edges, self.vars)

    def unsubscribe(self) -> None:
        try:
            self.conn.junction.unsubscribeContext(self.anchor, tc.CMD_GET_VEHICLE_VARIABLE, _EVERYWHERE_M)
        except Exception:  # connection already gone
            pass


class TraciReader(SubscriptionReader):
    """TraCI, whoever steps SUMO (cosim's loop or a user's under ``attach``): each :meth:`read`
    makes the context subscription anew, valid until now (``end`` = the time read): SUMO answers
    it at once with every vehicle's values and drops it at its next step. A standing
    subscription costs SUMO its whole evaluation after *every* simulation step, of which only the
    slot's last would be read (measured: docs/performance.md). The answer is decoded in bulk
    (:class:`~cosim.sources.traci_step.ContextDecoder`), the values ``traci`` decodes (tested on
    the same answers); one not in our shape is left to ``traci``."""

    def _subscribe(self) -> None:
        from cosim.sources.traci_step import ContextDecoder, context_request

        self.decoder = ContextDecoder(self.anchor, self.vars)
        self.request = context_request(self.anchor, self.vars, _EVERYWHERE_M)
        self.decoded = 0  # reads our decoder answered (the others: traci's generic path)

    def read(self, time_s: float) -> Snapshot:
        from cosim.sources.traci_step import read_context

        link = self.conn.junction._connection  # the traci.Connection (``conn`` may be the traci module)
        got = read_context(link, self.request(time_s), self.decoder, self.anchor)
        if got is None:  # not in our shape this time: traci decoded it into its results
            return super().read(time_s)
        self.decoded += 1
        ids, lanes, cols = got
        return _assemble(time_s, ids, lanes, self.lengths.__getitem__, self.edges, cols)

    def step(self, time_s: float) -> Snapshot:
        """Advance SUMO to ``time_s`` and read the state there; the time reached comes with the
        step's answer (``VAR_TIME`` in the simulation's subscription, which the caller makes)."""
        self.conn.simulationStep(time_s)
        return self.read(self.conn.simulation.getSubscriptionResults()[tc.VAR_TIME])

    def unsubscribe(self) -> None:
        pass  # each subscription ends by itself


class DirectReader:
    """libsumo only: in-process getters, one ``map`` per variable over all vehicles.

    The SWIG functions of ``libsumo._libsumo`` are called directly, skipping the Python
    wrapper frame that ``libsumo.vehicle.getX`` adds to every call. ``fields``: the on-demand
    snapshot fields to read (the others are NaN).
    """

    def __init__(self, conn: Any, fields=ON_DEMAND_FIELDS):
        self.conn = conn
        raw = getattr(conn, "_libsumo", None)
        V = conn.vehicle
        pick = lambda name, fallback: getattr(raw, name, None) or fallback  # noqa: E731
        self._ids = pick("vehicle_getIDList", V.getIDList)
        self._pos = pick("vehicle_getPosition", V.getPosition)
        self._speed = pick("vehicle_getSpeed", V.getSpeed)
        self._angle = pick("vehicle_getAngle", V.getAngle)
        self._accel = pick("vehicle_getAcceleration", V.getAcceleration) if "accel" in fields else None
        self._lane = pick("vehicle_getLaneID", V.getLaneID)
        self._lanepos = pick("vehicle_getLanePosition", V.getLanePosition)
        self.lengths = _FirstSight(pick("vehicle_getLength", V.getLength), pick("vehicle_getRoute", V.getRoute))
        self.routes = self.lengths.routes
        self.edges = _Cache(_edge_of_lane)

    def read(self, time_s: float) -> Snapshot:
        ids = self._ids()
        n = len(ids)
        if n == 0:
            return Snapshot.empty(time_s)
        # (x, y) tuples flattened lazily: 3x cheaper than numpy converting a list of tuples
        pos = np.fromiter(itertools.chain.from_iterable(map(self._pos, ids)), float, 2 * n).reshape(n, 2)
        f = lambda fn: np.fromiter(map(fn, ids), float, n)  # noqa: E731
        lanes = list(map(self._lane, ids))
        return _assemble(time_s, ids, lanes, self.lengths.__getitem__, self.edges,
                         {"x": pos[:, 0], "y": pos[:, 1], "speed": f(self._speed), "angle": f(self._angle),
                          "accel": f(self._accel) if self._accel is not None else None,
                          "lane_pos": f(self._lanepos)})

    def step(self, time_s: float) -> Snapshot:
        """Advance SUMO to ``time_s`` and read the state there."""
        self.conn.simulationStep(time_s)
        return self.read(self.conn.simulation.getTime())

    def unsubscribe(self) -> None:
        pass


def is_libsumo(conn: Any) -> bool:
    return getattr(conn, "__name__", "").split(".")[0] == "libsumo"


def make_reader(conn: Any, fields=ON_DEMAND_FIELDS) -> "DirectReader | TraciReader":
    """The fastest measured reader for this connection (see the module docstring), reading the
    on-demand snapshot fields in ``fields`` (default: all)."""
    return DirectReader(conn, fields) if is_libsumo(conn) else TraciReader(conn, fields)


def check_api_version(conn: Any, client: str) -> str:
    """Fail clearly when the SUMO server speaks another TraCI API version than the client."""
    api, sumo_version = conn.getVersion()
    if api != tc.TRACI_VERSION:
        raise CosimError(
            f"TraCI API mismatch: {client} speaks version {tc.TRACI_VERSION} but {sumo_version} speaks {api}; "
            "install matching versions: pip install eclipse-sumo==X traci==X libsumo==X sumolib==X"
        )
    return sumo_version




def _names(message: str, arg: str) -> bool:
    """Whether SUMO's ``message`` names the option ``arg`` standing alone — not "-b" inside a path
    such as ".../net-bad/grid6.rou.xml"."""
    return arg.startswith("-") and re.search(rf"(?<![\w./-]){re.escape(arg)}(?![\w./-])", message) is not None


class SumoSource:
    """A SUMO run driven by cosim. ``backend`` is ``"libsumo"`` (default) or ``"traci"``.

    ``timeout_s`` (TraCI only; the scenario key ``scenario.sumo_timeout_s``): a SUMO that does
    not answer a request for that long is taken as frozen (e.g. stopped with SIGSTOP, or hung):
    the run ends as if SUMO had died (:class:`SumoDied`) and the process is killed. 0 waits
    forever. In-process libsumo cannot be watched this way. ``fields``: the on-demand snapshot
    fields to read (:data:`~cosim.sources.base.ON_DEMAND_FIELDS`; default all, the others NaN).
    """

    def __init__(self, cmd: list[str], backend: str = "libsumo", port: int | None = None,
                 log_file: str | Path | None = None, end_s: float | None = None, timeout_s: float = 0.0,
                 fields=ON_DEMAND_FIELDS, blame: list | None = None):
        if backend not in ("libsumo", "traci"):
            raise CosimError(f"unknown backend '{backend}' (use libsumo or traci)")
        self.cmd, self.backend, self.port = list(cmd), backend, port
        self.log_file = Path(log_file) if log_file else None
        self.end_s = end_s
        self.timeout_s = timeout_s
        self.fields = frozenset(fields)
        self.conn: Any = None
        self.reader: DirectReader | TraciReader | None = None
        self.route_of: Routes | None = None
        self.proc: subprocess.Popen | None = None
        self.sumo_version = ""
        self._label = ""
        self._stderr: Any = None  # SUMO's stderr: a file, never a pipe (a chatty SUMO would fill it and hang)
        self._kill_on_close = False
        #: [(where, its arguments), ...]: what a failed start names (:meth:`_failed`)
        self.blame = [tuple(b) for b in blame or []]

    def _failed(self, why: str) -> CosimError:
        """"SUMO failed to start", prefixed with what caused it: of :attr:`blame`, the first whose
        options SUMO's error names (``FILE: scenario.sumo_args``, ``--sumo-args``), else the last
        (the scenario's sumocfg) with the extra arguments SUMO also ran with — SUMO's error may be
        about one of their values (``Invalid Number Format (double) abc``), which names no option:
        ``FILE: scenario.sumocfg X (with scenario.sumo_args ["--step-length", "abc"])``."""
        where = next((w for w, args in self.blame if any(_names(why, a) for a in args)), None)
        if where is None and self.blame:
            extra = [f"{w.rsplit(': ', 1)[-1]} {json.dumps(args)}" for w, args in self.blame[:-1] if args]
            where = self.blame[-1][0] + (f" (with {', '.join(extra)})" if extra else "")
        return CosimError(f"{where + ': ' if where else ''}SUMO failed to start: {why}")

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.backend == "libsumo":
            self._start_libsumo()
        else:
            self._start_traci()
        self.reader = make_reader(self.conn, self.fields)
        self.conn.simulation.subscribe([tc.VAR_MIN_EXPECTED_VEHICLES, tc.VAR_TIME])
        self.route_of = self.reader.routes

    def _start_libsumo(self) -> None:
        import libsumo

        if libsumo.simulation.isLoaded():
            raise CosimError("libsumo already runs a simulation in this process (one per process; use processes)")
        failed, said = None, ""
        # SUMO in this process writes its start-up errors to file descriptor 2 itself: caught
        # here, so that a refused option is one line, not SUMO's lines before cosim's
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile(prefix="cosim-libsumo-stderr-") as cap:
            os.dup2(cap.fileno(), 2)
            try:
                libsumo.start(self.cmd)
            except Exception as exc:  # libsumo raises its own TraCIException / FatalTraCIError
                failed = exc
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            cap.seek(0)
            said = cap.read().decode(errors="replace")
        if failed is not None:
            raise self._failed(sumo_error(said) or self._why(failed)) from None
        if said.strip():
            sys.stderr.write(said)  # its warnings while loading, as SUMO printed them
        self.conn = libsumo
        self.sumo_version = check_api_version(libsumo, "libsumo")

    def _start_traci(self) -> None:
        import traci

        binary = self.cmd[0]
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise CosimError(f"SUMO binary not found or not executable: {binary}")
        if self.port is not None and not port_is_free(self.port):
            raise CosimError(f"port {self.port} is busy: choose another with --port, or leave it out for a free one")
        port = self.port or free_port()
        self._label = f"cosim-{os.getpid()}-{next(_labels)}"
        cmd = self.cmd + ["--remote-port", str(port)]
        self._stderr = tempfile.TemporaryFile(prefix="cosim-sumo-stderr-")
        self.proc = processes.start(cmd, die_with_parent=True, stdout=subprocess.DEVNULL, stderr=self._stderr,
                                    text=True)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # traci prints "Retrying in 1 seconds"
                traci.init(port, numRetries=100, label=self._label, proc=self.proc)
        except Exception as exc:
            processes.stop(self.proc, 0)
            raise self._failed(sumo_error(self._stderr_text()) or str(exc)) from None
        self.conn = traci.getConnection(self._label)
        if self.timeout_s > 0:
            self.conn._socket.settimeout(self.timeout_s)  # a frozen SUMO: recv raises TimeoutError
        self.sumo_version = check_api_version(self.conn, f"traci {traci.__version__ if hasattr(traci, '__version__') else ''}".strip())

    # -- stepping ----------------------------------------------------------------------------
    def step_to(self, time_s: float) -> Snapshot:
        t0 = time.monotonic()
        try:
            return self.reader.step(time_s)
        except KeyboardInterrupt:  # Ctrl-C/SIGTERM while waiting for SUMO: the reply is half read,
            self._kill_on_close = True    # the connection unusable; close() kills SUMO instead of asking
            raise
        except Exception as exc:
            # traci turns the socket's timeout into "connection closed": a SUMO that is still
            # there after the whole timeout went by is frozen, not dead
            if (self.timeout_s > 0 and self.proc is not None and self.proc.poll() is None
                    and time.monotonic() - t0 >= 0.99 * self.timeout_s):
                self._kill_on_close = True
                raise SumoDied(f"SUMO did not answer for {self.timeout_s:g} s at t={time_s:g}s (frozen or stopped; "
                               "the limit is scenario.sumo_timeout_s)") from None
            if type(exc).__name__ in ("FatalTraCIError", "TraCIException") or isinstance(exc, (OSError, EOFError)):
                raise SumoDied(f"SUMO stopped at t={time_s:g}s: {self._why(exc)}") from None
            raise

    def finished(self) -> bool:
        res = self.conn.simulation.getSubscriptionResults() or {}
        return res.get(tc.VAR_MIN_EXPECTED_VEHICLES, 1) <= 0

    def time_s(self) -> float:
        return float(self.conn.simulation.getTime())

    def close(self) -> None:
        """End SUMO; bounded in time (a frozen or stopped SUMO is killed), so that an
        interrupted run always gets to write its results."""
        conn, self.conn = self.conn, None
        answered = False
        if conn is not None and not self._kill_on_close:
            try:
                if self.proc is not None:
                    conn._socket.settimeout(min(self.timeout_s, 5.0) if self.timeout_s > 0 else 5.0)
                    conn.close(wait=False)
                else:
                    conn.close()
                answered = True
            except BaseException:  # connection gone, SUMO frozen, or a second Ctrl-C: kill below
                pass
        if self.proc is not None:  # frozen, never connected or not answering the close: no reason to wait
            processes.stop(self.proc, 10 if answered else 0)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(max(0, self._stderr.seek(0, io.SEEK_END) - 65536))  # its last lines suffice
        return self._stderr.read().decode(errors="replace")

    # -- diagnostics -------------------------------------------------------------------------
    def _why(self, exc: Exception) -> str:
        """SUMO's own last error line (from its log or stderr) or the exception text."""
        msg = ""
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    self.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
            if self.proc.poll() is not None:
                msg = self._last_error(self._stderr_text())
        if not msg and self.log_file and self.log_file.is_file():
            msg = self._last_error(self.log_file.read_text(errors="replace"))
        return msg or str(exc).strip() or type(exc).__name__

    @staticmethod
    def _last_error(text: str) -> str:
        return sumo_error(text)


#: SUMO's closing lines after the error that says what is wrong
_WRAP_UP = ("Could not parse commandline options", "Quitting (on error)")


def sumo_error(text: str) -> str:
    """SUMO's error as one line: its last "Error..." line (:func:`last_error_line`), or, where that
    only wraps up ("Could not parse commandline options."), the error before it — the one that
    names the option — with the wrap-up in parentheses."""
    msg = last_error_line(text)
    if not any(w in msg for w in _WRAP_UP):
        return msg
    lines = text.splitlines()
    last = max((i for i, ln in enumerate(lines) if ln.startswith("Error")), default=None)
    earlier = last_error_line("\n".join(lines[:last])) if last else ""
    if earlier.startswith("Error"):
        return f"{earlier} ({msg.removeprefix('Error: ').strip()})"
    return msg
