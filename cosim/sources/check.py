"""Checks on a recorded trace as it streams, whatever reader produced its snapshots.

:class:`TraceCheck` wraps any iterator of :class:`~cosim.sources.base.Snapshot` (the replay
source puts it around every reader, so a new reader gets the checks for free) and stops with one
:class:`~cosim.errors.CosimError` line naming the file and the row/line (tabular traces) or the
timestep and vehicle (XML) at:

* a non-finite value (NaN, inf) in a numeric column or the time; a numeric column holding text
  or nulls (a column stored as strings); a vehicle id that is null or not a string;
* a vehicle id that occurs twice within one timestep;
* a trace that does not match the scenario's network: judged on the first ``probe_steps``
  timesteps with vehicles, a record is *off* the network when its edge is not one of the
  network's, its lane position exceeds that edge's length, or its position lies outside the
  network's bounds (with a ``margin_m``); more than ``max_off`` of them off is an error (a
  trace from another network has nearly all off; a matching one none);
* a trace without a single vehicle record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from cosim.errors import CosimError
from cosim.sources.base import Snapshot

#: numeric snapshot columns that must be finite
NUMERIC = ("x", "y", "speed", "angle", "accel", "lane_pos", "length")


class TraceCheck:
    def __init__(self, path: str | Path, net=None, probe_steps: int = 30, max_off: float = 0.5,  # noqa: ANN001
                 margin_m: float = 100.0):
        self.path = Path(path)
        name = self.path.name.lower()
        self.kind = "csv" if name.endswith((".csv", ".csv.gz")) else "xml" if name.endswith((".xml", ".xml.gz")) \
            else "parquet"
        self.net = net
        self.probe_steps, self.max_off, self.margin_m = probe_steps, max_off, margin_m
        self.rows = 0  # vehicle records seen so far
        self._probed = 0
        self._probe_rows = 0
        self._off_rows = 0
        self._first_off = ""

    def where(self, snap: Snapshot, i: int) -> str:
        """The place of record ``i`` of ``snap``: row (parquet), line (CSV) or timestep + vehicle (XML)."""
        vid = f"vehicle {snap.ids[i]!r}" if i < len(snap.ids) else ""
        if self.kind == "parquet":
            return f"row {self.rows + i + 1} ({vid})"
        if self.kind == "csv":
            return f"line {self.rows + i + 2} ({vid})"  # line 1 is the header
        return f"timestep {snap.time_s:g}, {vid}"

    def __call__(self, snaps: Iterator[Snapshot]) -> Iterator[Snapshot]:
        for snap in snaps:
            self.check(snap)
            yield snap
            self.rows += len(snap)
        if self.rows == 0:
            raise CosimError(f"{self.path}: the trace holds no vehicle record")
        self._judge()

    def check(self, snap: Snapshot) -> None:
        n = len(snap)
        if not np.isfinite(snap.time_s):
            raise CosimError(f"{self.path}: {self.where(snap, 0)}: the time is {snap.time_s}")
        if not n:
            return
        ids = snap.ids.tolist()
        for i, v in enumerate(ids):  # a null id (Parquet) or a number where a name belongs
            if not isinstance(v, str):
                raise CosimError(f"{self.path}: {self.where(snap, i)}: column ids holds "
                                 f"{'a null' if v is None else repr(v)}, not a vehicle id (a string)")
        for f in NUMERIC:
            col = np.asarray(getattr(snap, f))
            if col.dtype.kind not in "iuf":  # text (a column stored as strings), nulls, objects
                i = next((j for j, v in enumerate(col.tolist()) if isinstance(v, bool)
                          or not isinstance(v, (int, float))), 0)
                raise CosimError(f"{self.path}: {self.where(snap, i)}: column {f} holds {col[i]!r}, not a number "
                                 f"(store {f} as a numeric column)")
            bad = ~np.isfinite(col.astype(float))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise CosimError(f"{self.path}: {self.where(snap, i)}: {f} is {getattr(snap, f)[i]} (must be finite)")
        if len(set(ids)) != n:
            seen: dict = {}
            for i, v in enumerate(ids):
                if v in seen:
                    raise CosimError(f"{self.path}: {self.where(snap, i)}: vehicle {v!r} occurs twice at time "
                                     f"{snap.time_s:g} s (also {self.where(snap, seen[v])})")
                seen[v] = i
        if self.net is not None and self._probed < self.probe_steps:
            self._probe(snap)

    def _probe(self, snap: Snapshot) -> None:
        net = self.net
        lengths = net.edge_length
        edge_len = np.fromiter((lengths.get(e, -1.0) for e in snap.edge), float, len(snap))
        xmin, ymin, xmax, ymax = net.bounds
        m = self.margin_m
        off = ((edge_len < 0) | (snap.lane_pos > edge_len + 1.0)
               | (snap.x < xmin - m) | (snap.x > xmax + m) | (snap.y < ymin - m) | (snap.y > ymax + m))
        if off.any() and not self._first_off:
            i = int(np.flatnonzero(off)[0])
            self._first_off = (f"first: {self.where(snap, i)} on edge {snap.edge[i]!r} at "
                               f"({snap.x[i]:.1f}, {snap.y[i]:.1f})")
        self._probed += 1
        self._probe_rows += len(snap)
        self._off_rows += int(off.sum())
        if self._probed == self.probe_steps:
            self._judge()

    def _judge(self) -> None:
        if self.net is None or not self._probe_rows:
            return
        net, self.net = self.net, None  # judged once
        share = self._off_rows / self._probe_rows
        if share > self.max_off:
            raise CosimError(f"{self.path}: the trace does not match the scenario's network {Path(net.path).name}: "
                             f"{100 * share:.0f} % of the vehicle records of its first {self._probed} timesteps are on "
                             f"edges the network lacks or off its area ({self._first_off})")
