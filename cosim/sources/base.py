"""The traffic-source contract: one struct-of-arrays :class:`Snapshot` per slot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

#: Columns of a snapshot, with units. Every array has one entry per vehicle, in one order.
SNAPSHOT_FIELDS = {
    "ids": "vehicle id (str)",
    "x": "position x [m] (SUMO network coordinates, front bumper)",
    "y": "position y [m]",
    "speed": "speed [m/s]",
    "angle": "heading [deg], SUMO convention: 0 = north, clockwise",
    "accel": "acceleration [m/s^2]",
    "edge": "edge id (str); ':'-prefixed ids are junction-internal edges",
    "lane": "lane id (str)",
    "lane_pos": "position along the lane [m]",
    "length": "vehicle length [m]",
}

#: Columns a live source reads only when something asks for them (``fields`` of the SUMO source
#: and readers); where not asked they are NaN. No built-in layer or output reads ``accel``: it
#: is read when a cosim trace is recorded (``--record x.parquet|csv``, a replay must reproduce
#: every column) or a layer declares it in ``Layer.snapshot_fields``. Measured: one libsumo
#: getter of six per vehicle and slot (docs/performance.md).
ON_DEMAND_FIELDS = frozenset({"accel"})


@dataclass
class Snapshot:
    """All vehicles in the simulation at ``time_s``, as parallel arrays."""

    time_s: float
    ids: np.ndarray  # object (str)
    x: np.ndarray
    y: np.ndarray
    speed: np.ndarray
    angle: np.ndarray
    accel: np.ndarray
    edge: np.ndarray  # object (str)
    lane: np.ndarray  # object (str)
    lane_pos: np.ndarray
    length: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls, time_s: float) -> "Snapshot":
        f = np.zeros(0)
        o = np.zeros(0, dtype=object)
        return cls(time_s, o, f, f, f, f, f, o, o, f, f)

    def columns(self) -> tuple:
        """(time_s, every field in SNAPSHOT_FIELDS' order): what another process rebuilds it from
        with ``Snapshot(*columns)`` (pickled arrays, no per-vehicle objects)."""
        return (self.time_s, *(getattr(self, k) for k in SNAPSHOT_FIELDS))

    def sorted_by_id(self) -> "Snapshot":
        order = np.argsort(self.ids.astype(str), kind="stable")
        return Snapshot(self.time_s, *(getattr(self, k)[order] for k in SNAPSHOT_FIELDS))

    def velocity(self) -> tuple[np.ndarray, np.ndarray]:
        """Velocity vector (vx, vy) [m/s] from speed and SUMO's compass angle."""
        rad = np.deg2rad(self.angle)
        return self.speed * np.sin(rad), self.speed * np.cos(rad)


class Routes(dict):
    """``routes[vehicle_id]`` -> the vehicle's route (tuple of edge ids) as SUMO had it when the
    vehicle first appeared in a snapshot (a rerouted vehicle keeps it); () for one never seen.

    A live reader fills it at first sight, together with the vehicle's length, so the answer does
    not depend on when a layer asks — which is what lets the pipelined source (SUMO one slot
    ahead, :mod:`cosim.sources.pipelined`) answer exactly as the serial path does. ``fresh``
    (when not None) collects what was fetched since it was last emptied, for shipping. A replay
    fills it from the trace's ``route`` column (each vehicle's route on its first row)."""

    def __init__(self):
        super().__init__()
        self.fresh: dict | None = None
        self.cleared = False  # emptied since ``fresh`` was last shipped

    def __missing__(self, key):
        return ()

    def receive(self, fresh: dict, cleared: bool) -> None:
        """Take what another process's ``Routes`` shipped: emptied first when it was (``cleared``),
        then its ``fresh`` routes — so that both answer alike."""
        if cleared:
            self.clear()
        self.update(fresh)

    def add(self, vehicle: str, route: tuple) -> None:
        """Record ``vehicle``'s route (and in ``fresh``, when collecting)."""
        self[vehicle] = route
        if self.fresh is not None:
            self.fresh[vehicle] = route


class TrafficSource(Protocol):
    """Anything that yields one snapshot per slot: live SUMO (libsumo, TraCI) or a replay."""

    #: the simulation end time [s] if known, else ``None``
    end_s: float | None
    #: the SUMO version that produced the traffic ("" if unknown, e.g. a foreign trace)
    sumo_version: str
    #: vehicle id -> its route as a tuple of edge ids (looked up once per vehicle), or None
    #: where the source has no routes; layers read it as ``world.route_of``
    route_of: Callable[[str], tuple] | None

    def start(self) -> None: ...

    def time_s(self) -> float:
        """The simulation time now [s] (after :meth:`start`: the begin time)."""
        ...

    def step_to(self, time_s: float) -> Snapshot:
        """Advance to ``time_s`` (a slot boundary) and return the state there."""
        ...

    def finished(self) -> bool:
        """True once no vehicle is left and none is expected (or the end time is reached)."""
        ...

    def close(self) -> None: ...
