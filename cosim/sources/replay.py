"""Recorded traffic as a :class:`TrafficSource`: no SUMO process needed.

Three formats, all streamed (memory stays flat however long the trace):

* ``.parquet`` — what ``cosim run --record trace.parquet`` writes: every snapshot field of every
  slot at full double precision, so a replay reproduces the live run's results exactly; and a
  ``route`` column, the vehicle's SUMO route (edge ids separated by spaces) on its first row and
  null on the others, which a replay hands to the world as ``route_of`` (the other formats, and
  traces written before the column existed, have no routes).
* ``.csv`` / ``.csv.gz`` — the same columns as the parquet trace (header row, sorted by time),
  read in chunks with round-trip float parsing (exact when written with full precision).
* SUMO FCD XML (``.xml`` or ``.xml.gz``, e.g. ``cosim run --record trace.xml.gz`` or any
  ``sumo --fcd-output``): read with lxml's ``iterparse``, each ``<timestep>`` cleared once read.
  Values carry the precision SUMO wrote (``--precision``), so results match the live run only to
  that precision. ``length`` is taken as 5 m unless the trace has it. SUMO labels a record with
  the time its step *began*: the record labelled t is the state at t + step length, which is
  what a live run sees at that time, so FCD times are shifted by ``fcd_step_s``.

Bad input (broken or truncated XML, a timestep going backwards, a vehicle without a required
attribute) raises :class:`~cosim.errors.CosimError` naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from cosim.errors import CosimError
from cosim.sources.base import SNAPSHOT_FIELDS, Snapshot

EPS = 1e-6
TRACE_COLUMNS = ["time_s", *SNAPSHOT_FIELDS]  # the parquet trace layout (one row per vehicle and slot)


def snapshot_columns(snap: Snapshot, routes: np.ndarray | None = None) -> dict:
    """A snapshot as trace columns (for the recorder); ``routes``: the ``route`` column (a route
    string on a vehicle's first row, None elsewhere)."""
    n = len(snap)
    cols = {"time_s": np.full(n, snap.time_s), **{f: getattr(snap, f) for f in SNAPSHOT_FIELDS}}
    if routes is not None:
        cols["route"] = routes
    return cols


class Routes(dict):
    """vehicle id -> route (tuple of edge ids) read from a trace; () for a vehicle it lacks."""

    def __missing__(self, key):
        return ()


def _by_time(path: Path, chunks: Iterator[dict]) -> Iterator[Snapshot]:
    """Snapshots from column chunks sorted by time (a time may continue into the next chunk)."""
    carry: dict | None = None
    last_t = -np.inf
    for i, cols in enumerate(chunks):
        for c in ("ids", "edge", "lane"):
            cols[c] = np.asarray(cols[c]).astype(object)
        if carry is not None:
            cols = {c: np.concatenate([carry[c], cols[c]]) for c in TRACE_COLUMNS}
        times = np.asarray(cols["time_s"], dtype=float)
        if len(times) and (np.any(np.diff(times) < 0) or times[0] < last_t - EPS):
            raise CosimError(f"{path}: chunk {i}: time goes backwards (a trace must be sorted by time)")
        if not len(times):
            continue
        bounds = np.flatnonzero(np.diff(times)) + 1
        starts, ends = np.concatenate([[0], bounds]), np.concatenate([bounds, [len(times)]])
        for s, e in list(zip(starts, ends))[:-1]:
            yield Snapshot(float(times[s]), *(cols[f][s:e] for f in SNAPSHOT_FIELDS))
        s, e = starts[-1], ends[-1]
        carry = {c: cols[c][s:e] for c in TRACE_COLUMNS}
        last_t = float(times[s])
    if carry is not None:
        yield Snapshot(float(carry["time_s"][0]), *(carry[f] for f in SNAPSHOT_FIELDS))


def _parquet_snapshots(path: Path, routes: Routes | None = None) -> Iterator[Snapshot]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(str(path))
    except Exception as exc:
        raise CosimError(f"{path}: not a readable parquet trace ({exc})") from None
    missing = [c for c in TRACE_COLUMNS if c not in pf.schema_arrow.names]
    if missing:
        raise CosimError(f"{path}: trace lacks column(s) {', '.join(missing)}")
    cols = TRACE_COLUMNS + (["route"] if routes is not None and "route" in pf.schema_arrow.names else [])

    def chunk(t) -> dict:
        if "route" in cols:  # known before the vehicle's first snapshot is yielded
            rows = t["route"].is_valid().to_numpy(zero_copy_only=False).nonzero()[0]
            ids, rts = t["ids"].take(rows).to_pylist(), t["route"].take(rows).to_pylist()
            routes.update(zip(ids, (tuple(r.split()) for r in rts)))
        return {c: t[c].to_numpy(zero_copy_only=False) for c in TRACE_COLUMNS}

    chunks = (chunk(pf.read_row_group(rg, columns=cols)) for rg in range(pf.num_row_groups))
    yield from _by_time(path, chunks)


def _csv_snapshots(path: Path) -> Iterator[Snapshot]:
    """A CSV with the parquet trace's columns (header row), sorted by time; gzip by suffix."""
    import pandas as pd

    try:
        # pandas >= 3 parses floats round-trip exactly by default
        reader = pd.read_csv(path, chunksize=200_000, dtype={"ids": str, "edge": str, "lane": str})
        for i, df in enumerate(reader):
            missing = [c for c in TRACE_COLUMNS if c not in df.columns]
            if missing:
                raise CosimError(f"{path}: trace lacks column(s) {', '.join(missing)} (line 1)")
            bad = df[TRACE_COLUMNS].isna().any(axis=1).to_numpy()
            if bad.any():
                line = int(np.flatnonzero(bad)[0]) + 2 + i * 200_000
                raise CosimError(f"{path}: line {line}: a row with a missing value")
            yield {c: df[c].to_numpy() for c in TRACE_COLUMNS}
    except (ValueError, pd.errors.ParserError) as exc:
        raise CosimError(f"{path}: unreadable CSV trace ({' '.join(str(exc).split())})") from None


_REQUIRED = ("id", "x", "y", "angle", "speed", "lane", "pos")
_NUMERIC = ("x", "y", "angle", "speed", "pos", "acceleration", "length")


def _fcd_snapshots(path: Path, shift: float = 0.0) -> Iterator[Snapshot]:
    from lxml import etree

    import gzip

    last_t = -np.inf
    stream = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    try:
        for _, ts in etree.iterparse(stream, events=("end",), tag="timestep", huge_tree=True):
            try:
                t = float(ts.get("time")) + shift
            except (TypeError, ValueError):
                raise CosimError(f"{path}: line {ts.sourceline}: <timestep> without a numeric time") from None
            if t < last_t - EPS:
                raise CosimError(f"{path}: line {ts.sourceline}: timestep {t:g} comes after {last_t:g} (unsorted)")
            last_t = t
            vehs = list(ts)  # SUMO writes every vehicle's attributes in the same order
            n = len(vehs)
            keys = vehs[0].keys() if n else []
            rows = [v.values() for v in vehs]  # one C call per vehicle
            if any(len(r) != len(keys) for r in rows) or any(v.keys() != keys for v in vehs[:: max(1, n // 8)]):
                rows = None  # irregular trace: the checked path below
            cols = dict(zip(keys, zip(*rows))) if rows else {}
            if rows is None or any(k not in cols for k in _REQUIRED):
                cols = {k: [v.get(k) for v in vehs] for k in ("id", "lane") + _NUMERIC}
                for v in vehs:
                    miss = [k for k in _REQUIRED if v.get(k) is None]
                    if miss:
                        raise CosimError(f"{path}: line {v.sourceline}: vehicle {v.get('id', '?')!r} lacks "
                                         f"{', '.join(miss)}")
            try:
                f = lambda k: np.array(cols[k], dtype=float)  # noqa: E731  (C-level string -> float)
                opt = lambda k, d: (np.array(cols[k], dtype=float)  # noqa: E731
                                    if k in cols and None not in cols[k] else np.full(n, d))
                lanes = cols["lane"] if n else ()
                snap = Snapshot(t, np.array(cols["id"] if n else (), dtype=object), f("x") if n else np.zeros(0),
                                f("y") if n else np.zeros(0), f("speed") if n else np.zeros(0),
                                f("angle") if n else np.zeros(0), opt("acceleration", 0.0),
                                np.array([ln.rpartition("_")[0] for ln in lanes], dtype=object),
                                np.array(lanes, dtype=object), f("pos") if n else np.zeros(0), opt("length", 5.0))
            except ValueError as exc:
                raise CosimError(f"{path}: line {ts.sourceline}: a non-numeric vehicle attribute ({exc})") from None
            ts.clear()
            while ts.getprevious() is not None:  # drop what was already read: flat memory
                del ts.getparent()[0]
            yield snap
    except etree.XMLSyntaxError as exc:
        raise CosimError(f"{path}: broken or truncated XML at line {exc.lineno}: {exc.msg}") from None
    except (OSError, EOFError) as exc:  # gzip: a truncated or corrupt archive
        raise CosimError(f"{path}: cannot read the trace ({exc})") from None
    finally:
        stream.close()


def _has_routes(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        return "route" in pq.read_schema(str(path)).names
    except Exception:  # unreadable: opening it says so
        return False


class ReplaySource:
    """Yields the recorded snapshot at each slot boundary (empty where the trace has none)."""

    def __init__(self, path: str | Path, end_s: float | None = None, begin_s: float = 0.0, fcd_step_s: float = 0.0):
        self.path = Path(path)
        if not self.path.is_file():
            raise CosimError(f"{self.path}: no such trace file")
        name = self.path.name.lower()
        #: vehicle id -> its route, where the trace carries routes (cosim's parquet trace); else None
        self.route_of: Routes | None = None
        if name.endswith(".parquet"):
            self.route_of = Routes() if _has_routes(self.path) else None
            self._open = lambda p: _parquet_snapshots(p, self.route_of)
        elif name.endswith((".csv", ".csv.gz")):
            self._open = lambda p: _by_time(p, _csv_snapshots(p))
        elif name.endswith((".xml", ".xml.gz")):
            self._open = lambda p: _fcd_snapshots(p, fcd_step_s)
        else:
            raise CosimError(f"{self.path}: expected a .parquet, .csv[.gz] or FCD .xml[.gz] trace")
        self.end_s = end_s
        self.sumo_version = "replay"
        self._it: Iterator[Snapshot] | None = None
        self._next: Snapshot | None = None
        self._done = False
        self.begin_s = begin_s  # slots fall at begin + k * slot, as in the live run

    def start(self) -> None:
        self._it = self._open(self.path)
        self._advance()

    def _advance(self) -> None:
        try:
            self._next = next(self._it)
        except StopIteration:
            self._next, self._done = None, True

    def step_to(self, time_s: float) -> Snapshot:
        while self._next is not None and self._next.time_s < time_s - EPS:
            self._advance()  # a record between slots (e.g. FCD written every SUMO step)
        if self._next is not None and abs(self._next.time_s - time_s) <= EPS:
            snap = self._next
            self._advance()
            return snap
        return Snapshot.empty(time_s)

    def finished(self) -> bool:
        return self._done

    def time_s(self) -> float:
        return self.begin_s

    def close(self) -> None:
        self._it = None
