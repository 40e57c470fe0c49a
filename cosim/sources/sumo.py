"""Live SUMO as a :class:`TrafficSource`: in-process through libsumo, or over a TraCI socket.

Reading is vectorised: one *context subscription* on a junction with a range larger than the
network returns every vehicle's variables in a single call per slot (one message over TraCI),
and picks up new vehicles without per-vehicle subscribe calls. ``simulationStep(t)`` advances
SUMO to the slot boundary in one call, so subscriptions are evaluated once per slot however many
SUMO steps the slot holds. ``tools/bench_overhead.py`` measures the alternatives.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import traci.constants as tc

from cosim.errors import CosimError, SumoDied
from cosim.sources.base import Snapshot
from cosim.sumo_home import sumo_binary

#: variables read for every vehicle each slot, in snapshot order
VARS = (tc.VAR_POSITION, tc.VAR_SPEED, tc.VAR_ANGLE, tc.VAR_ACCELERATION, tc.VAR_ROAD_ID,
        tc.VAR_LANE_ID, tc.VAR_LANEPOSITION, tc.VAR_LENGTH)
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


def snapshot_from_results(time_s: float, res: dict[str, dict[int, Any]]) -> Snapshot:
    """Columns from a ``{vehicle: {var: value}}`` subscription result."""
    if not res:
        return Snapshot.empty(time_s)
    vals = list(res.values())
    n = len(vals)
    pos = np.array([r[tc.VAR_POSITION] for r in vals], dtype=float).reshape(n, 2)
    col = lambda var: np.fromiter((r[var] for r in vals), float, n)  # noqa: E731
    obj = lambda var: np.array([r[var] for r in vals], dtype=object)  # noqa: E731
    return Snapshot(
        time_s=time_s, ids=np.array(list(res), dtype=object), x=pos[:, 0].copy(), y=pos[:, 1].copy(),
        speed=col(tc.VAR_SPEED), angle=col(tc.VAR_ANGLE), accel=col(tc.VAR_ACCELERATION),
        edge=obj(tc.VAR_ROAD_ID), lane=obj(tc.VAR_LANE_ID), lane_pos=col(tc.VAR_LANEPOSITION),
        length=col(tc.VAR_LENGTH),
    )


class SubscriptionReader:
    """Reads all vehicles through one context subscription on an existing connection.

    ``conn`` is the ``libsumo`` module, the ``traci`` module, or a ``traci.Connection``.
    """

    def __init__(self, conn: Any):
        self.conn = conn
        junctions = conn.junction.getIDList()
        if not junctions:
            raise CosimError("the SUMO network has no junction to anchor the vehicle subscription on")
        self.anchor = junctions[0]
        conn.junction.subscribeContext(self.anchor, tc.CMD_GET_VEHICLE_VARIABLE, _EVERYWHERE_M, list(VARS))

    def read(self, time_s: float) -> Snapshot:
        res = self.conn.junction.getContextSubscriptionResults(self.anchor)
        return snapshot_from_results(time_s, res or {})

    def unsubscribe(self) -> None:
        try:
            self.conn.junction.unsubscribeContext(self.anchor, tc.CMD_GET_VEHICLE_VARIABLE, _EVERYWHERE_M)
        except Exception:  # connection already gone
            pass


def check_api_version(conn: Any, client: str) -> str:
    """Fail clearly when the SUMO server speaks another TraCI API version than the client."""
    api, sumo_version = conn.getVersion()
    if api != tc.TRACI_VERSION:
        raise CosimError(
            f"TraCI API mismatch: {client} speaks version {tc.TRACI_VERSION} but {sumo_version} speaks {api}; "
            "install matching versions: pip install eclipse-sumo==X traci==X libsumo==X sumolib==X"
        )
    return sumo_version


class SumoSource:
    """A SUMO run driven by cosim. ``backend`` is ``"libsumo"`` (default) or ``"traci"``."""

    def __init__(self, cmd: list[str], backend: str = "libsumo", port: int | None = None,
                 log_file: str | Path | None = None, end_s: float | None = None):
        if backend not in ("libsumo", "traci"):
            raise CosimError(f"unknown backend '{backend}' (use libsumo or traci)")
        self.cmd, self.backend, self.port = list(cmd), backend, port
        self.log_file = Path(log_file) if log_file else None
        self.end_s = end_s
        self.conn: Any = None
        self.reader: SubscriptionReader | None = None
        self.proc: subprocess.Popen | None = None
        self.sumo_version = ""
        self._label = ""

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.backend == "libsumo":
            self._start_libsumo()
        else:
            self._start_traci()
        self.reader = SubscriptionReader(self.conn)
        self.conn.simulation.subscribe([tc.VAR_MIN_EXPECTED_VEHICLES])

    def _start_libsumo(self) -> None:
        import libsumo

        if libsumo.simulation.isLoaded():
            raise CosimError("libsumo already runs a simulation in this process (one per process; use processes)")
        try:
            libsumo.start(self.cmd)
        except Exception as exc:  # libsumo raises its own TraCIException / FatalTraCIError
            raise CosimError(f"SUMO failed to start: {self._why(exc)}") from None
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
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            traci.init(port, numRetries=100, label=self._label, proc=self.proc)
        except Exception as exc:
            self.proc.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise CosimError(f"SUMO failed to start: {self._last_error(err) or exc}") from None
        self.conn = traci.getConnection(self._label)
        self.sumo_version = check_api_version(self.conn, f"traci {traci.__version__ if hasattr(traci, '__version__') else ''}".strip())

    # -- stepping ----------------------------------------------------------------------------
    def step_to(self, time_s: float) -> Snapshot:
        try:
            self.conn.simulationStep(time_s)
            return self.reader.read(self.conn.simulation.getTime())
        except Exception as exc:
            if type(exc).__name__ in ("FatalTraCIError", "TraCIException") or isinstance(exc, (OSError, EOFError)):
                raise SumoDied(f"SUMO stopped at t={time_s:g}s: {self._why(exc)}") from None
            raise

    def finished(self) -> bool:
        res = self.conn.simulation.getSubscriptionResults() or {}
        return res.get(tc.VAR_MIN_EXPECTED_VEHICLES, 1) <= 0

    def time_s(self) -> float:
        return float(self.conn.simulation.getTime())

    def close(self) -> None:
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        try:
            conn.close()
        except Exception:
            pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

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
            if self.proc.poll() is not None and self.proc.stderr:
                msg = self._last_error(self.proc.stderr.read())
        if not msg and self.log_file and self.log_file.is_file():
            msg = self._last_error(self.log_file.read_text(errors="replace"))
        return msg or str(exc).strip() or type(exc).__name__

    @staticmethod
    def _last_error(text: str) -> str:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("Error")]
        if errors:
            return errors[-1]
        if lines and lines[-1].startswith("Quitting"):
            lines = lines[:-1]
        return lines[-1] if lines else ""

