"""Recorded traffic as a :class:`TrafficSource`: no SUMO process needed.

Three formats, all streamed (memory stays flat however long the trace):

* ``.parquet`` — what ``cosim run --record trace.parquet`` writes: every snapshot field of every
  slot at full double precision, so a replay reproduces the live run's results exactly; and a
  ``route`` column, the vehicle's SUMO route (edge ids separated by spaces) on its first row and
  null on the others, which a replay hands to the world as ``route_of`` (cosim's CSV trace has the
  same column; SUMO's FCD, and traces written before the column existed, have no routes).
* ``.csv`` / ``.csv.gz`` — the same columns as the parquet trace (header row, sorted by time),
  read in chunks with round-trip float parsing (exact when written with full precision).
* SUMO's own FCD (:mod:`cosim.sources.fcd`): Parquet (any ``sumo --fcd-output x.parquet``,
  e.g. ``cosim run --record trace.fcd.parquet``; recognised by its columns) and XML (``.xml`` or
  ``.xml.gz``). Values carry the precision SUMO wrote (``--precision``; cosim's recordings ask
  for 6, with which SUMO's Parquet holds doubles and a replay is exact), ``length`` is 5 m.
  SUMO labels a record with the time its step *began*: the record labelled t is the state at
  t + step length, which is what a live run sees at that time, so FCD times are shifted by
  ``fcd_step_s``.

Bad input (broken or truncated XML, a timestep going backwards, a vehicle without a required
attribute) raises :class:`~cosim.errors.CosimError` naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from cosim.engine.timeline import EPS  # the run's one time tolerance (the slot loop's)
from cosim.errors import CosimError
from cosim.sources.base import SNAPSHOT_FIELDS, Routes, Snapshot
from cosim.sources.check import TraceCheck

TRACE_COLUMNS = ["time_s", *SNAPSHOT_FIELDS]  # the parquet trace layout (one row per vehicle and slot)


def snapshot_columns(snap: Snapshot, routes: np.ndarray | None = None) -> dict:
    """A snapshot as trace columns (for the recorder); ``routes``: the ``route`` column (a route
    string on a vehicle's first row, None elsewhere)."""
    n = len(snap)
    cols = {"time_s": np.full(n, snap.time_s), **{f: getattr(snap, f) for f in SNAPSHOT_FIELDS}}
    if routes is not None:
        cols["route"] = routes
    return cols


def _is_float(v) -> bool:  # noqa: ANN001
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _by_time(path: Path, chunks: Iterator[dict]) -> Iterator[Snapshot]:
    """Snapshots from column chunks sorted by time (a time may continue into the next chunk)."""
    carry: dict | None = None
    last_t = -np.inf
    for i, cols in enumerate(chunks):
        for c in ("ids", "edge", "lane"):
            cols[c] = np.asarray(cols[c]).astype(object)
        if carry is not None:
            cols = {c: np.concatenate([carry[c], cols[c]]) for c in TRACE_COLUMNS}
        try:
            times = np.asarray(cols["time_s"], dtype=float)
        except (TypeError, ValueError):
            bad = next(v for v in np.asarray(cols["time_s"]).tolist() if not isinstance(v, (int, float)) or
                       not _is_float(v))
            raise CosimError(f"{path}: chunk {i}: column time_s holds {bad!r}, not a number (store time_s as a "
                             "numeric column)") from None
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
    """A parquet trace: one file, or a part directory as ``--record t.parquet`` writes it (its
    parts in name order; a part still being written when the run was killed is hidden). With
    ``routes``, the ``route`` column (each vehicle's route on its first row) fills it as read."""
    import pyarrow.parquet as pq

    from cosim.results import numpy_of

    files = sorted(path.glob("part-*.parquet")) if path.is_dir() else [path]
    if not files:
        raise CosimError(f"{path}: a trace directory without any part-*.parquet file")

    def chunks() -> Iterator[dict]:
        for f in files:
            try:
                pf = pq.ParquetFile(str(f))
            except Exception as exc:
                raise CosimError(f"{f}: not a readable parquet trace ({exc})") from None
            missing = [c for c in TRACE_COLUMNS if c not in pf.schema_arrow.names]
            if missing:
                raise CosimError(f"{f}: trace lacks column(s) {', '.join(missing)}")
            cols = TRACE_COLUMNS + (["route"] if routes is not None and "route" in pf.schema_arrow.names else [])
            for rg in range(pf.num_row_groups):
                t = pf.read_row_group(rg, columns=cols)
                # numpy_of: Arrow's to_numpy, is_valid and take would import pandas and
                # pyarrow.compute (~0.3 s of CPU), which a replay never needs (issue 32)
                out = {c: numpy_of(t[c]) for c in TRACE_COLUMNS}
                if "route" in cols:  # known before the vehicle's first snapshot is yielded
                    route = numpy_of(t["route"])  # str, None where null
                    rows = np.flatnonzero(np.not_equal(route, None))
                    for vid, r in zip(out["ids"][rows].tolist(), route[rows].tolist()):
                        routes.add(vid, tuple(r.split()))
                yield out

    yield from _by_time(path, chunks())


def _csv_snapshots(path: Path, routes: Routes | None = None) -> Iterator[Snapshot]:
    """A CSV with the parquet trace's columns (header row), sorted by time; gzip by suffix.
    ``routes``: filled from the ``route`` column (each vehicle's route on its first row), as a
    chunk is read — before any of its vehicles' snapshots is yielded."""
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
            if routes is not None and "route" in df.columns:
                has = df["route"].notna().to_numpy()
                for vid, r in zip(df["ids"].to_numpy()[has], df["route"].to_numpy()[has]):
                    routes.add(vid, tuple(str(r).split()))
            yield {c: df[c].to_numpy() for c in TRACE_COLUMNS}
    except (ValueError, pd.errors.ParserError) as exc:
        raise CosimError(f"{path}: unreadable CSV trace ({' '.join(str(exc).split())})") from None


def _check_fcd_root(path: Path) -> None:
    """An XML trace must be SUMO FCD output (``<fcd-export>``): a network or routes file passed
    by mistake would otherwise replay as an empty trace."""
    from lxml import etree

    import gzip

    try:
        with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")) as f:
            for _, el in etree.iterparse(f, events=("start",)):
                if el.tag != "fcd-export":
                    raise CosimError(f"{path}: line {el.sourceline}: not an FCD trace (root element <{el.tag}>, "
                                     "expected <fcd-export> as sumo --fcd-output writes it)")
                return
    except (etree.XMLSyntaxError, OSError, EOFError):
        return  # the reader reports a broken file with its line


def _has_routes(path: Path) -> bool:
    import pyarrow.parquet as pq

    if path.name.lower().endswith((".csv", ".csv.gz")):  # the header names its columns
        import gzip

        try:
            with (gzip.open(path, "rt") if path.name.lower().endswith(".gz") else open(path)) as f:
                return "route" in f.readline().strip().split(",")
        except (OSError, EOFError, UnicodeDecodeError):  # unreadable: opening it says so
            return False
    try:
        first = min(path.glob("part-*.parquet"), default=path) if path.is_dir() else path
        return "route" in pq.read_schema(str(first)).names
    except Exception:  # unreadable: opening it says so
        return False


def trace_end_s(path: str | Path) -> float | None:
    """The last time in a trace of cosim's own (``--record t.parquet`` or ``t.csv[.gz]``), read
    cheaply (Parquet: the row groups' statistics; CSV: its last line); None where that cannot be
    known without reading the whole trace (SUMO's FCD, a compressed CSV) or it cannot be read."""
    import pyarrow.parquet as pq

    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            from cosim.sources import fcd

            if fcd.is_sumo_parquet(path):
                return None
            files = sorted(path.glob("part-*.parquet")) if path.is_dir() else [path]
            last = None
            for f in files:
                meta = pq.ParquetFile(str(f)).metadata
                col = meta.schema.to_arrow_schema().get_field_index("time_s")
                for rg in range(meta.num_row_groups):
                    st = meta.row_group(rg).column(col).statistics
                    if st is None or not st.has_min_max:
                        return None
                    last = float(st.max) if last is None else max(last, float(st.max))
            return last
        if name.endswith(".csv"):
            with open(path, "rb") as f:
                header = f.readline().decode().strip().split(",")
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - 65536))
                lines = f.read().decode(errors="replace").strip().splitlines()
            if len(lines) < 2 or "time_s" not in header:
                return None
            return float(lines[-1].split(",")[header.index("time_s")])
    except Exception:  # noqa: BLE001 - unknown here; reading the trace says what is wrong with it
        return None
    return None


class ReplaySource:
    """Yields the recorded snapshot at each slot boundary (empty where the trace has none)."""

    def __init__(self, path: str | Path, end_s: float | None = None, begin_s: float = 0.0, fcd_step_s: float = 0.0,
                 net=None):  # noqa: ANN001 - NetInfo: also check that the trace matches this network
        self.path = Path(path)
        if not (self.path.is_file() or (self.path.is_dir() and self.path.name.lower().endswith(".parquet"))):
            raise CosimError(f"{self.path}: no such trace file")
        name = self.path.name.lower()
        #: vehicle id -> its route, where the trace carries routes (cosim's parquet and CSV traces); else None
        self.route_of: Routes | None = None
        if name.endswith(".parquet"):
            from cosim.sources import fcd

            if fcd.is_sumo_parquet(self.path):  # SUMO's own FCD (sumo --fcd-output x.parquet)
                self._open = lambda p: _by_time(p, fcd.parquet_chunks(p, fcd_step_s))
            else:
                self.route_of = Routes() if _has_routes(self.path) else None
                self._open = lambda p: _parquet_snapshots(p, self.route_of)
        elif name.endswith((".csv", ".csv.gz")):
            self.route_of = Routes() if _has_routes(self.path) else None
            self._open = lambda p: _by_time(p, _csv_snapshots(p, self.route_of))
        elif name.endswith((".xml", ".xml.gz")):
            _check_fcd_root(self.path)
            from cosim.sources.fcd import xml_snapshots

            self._open = lambda p: xml_snapshots(p, fcd_step_s)
        else:
            raise CosimError(f"{self.path}: expected a .parquet, .csv[.gz] or FCD .xml[.gz] trace")
        self.end_s = end_s
        self.net = net
        self.sumo_version = "replay"
        self._it: Iterator[Snapshot] | None = None
        self._next: Snapshot | None = None
        self._done = False
        self.begin_s = begin_s  # slots fall at begin + k * slot, as in the live run
        self._on_grid = False  # some record lay on a slot boundary
        self._off_slots = 0  # slots in a row that skipped records and found none on their boundary
        self._between: list[float] = []  # the first times of records skipped between slots

    def start(self) -> None:
        self._it = TraceCheck(self.path, self.net)(self._open(self.path))  # every reader's snapshots checked
        self._advance()

    def _advance(self) -> None:
        try:
            self._next = next(self._it)
        except StopIteration:
            self._next, self._done = None, True

    def step_to(self, time_s: float) -> Snapshot:
        skipped = False
        while self._next is not None and self._next.time_s < time_s - EPS:
            if len(self._next) and len(self._between) < 3:
                self._between.append(self._next.time_s)
            skipped = skipped or bool(len(self._next))
            self._advance()  # a record between slots (e.g. FCD written every SUMO step)
        if self._next is not None and abs(self._next.time_s - time_s) <= EPS:
            snap = self._next
            self._advance()
            self._on_grid = True
            return snap
        # records in two slots running and none ever on a slot boundary: the trace's times are off
        # the slot grid, and the run would replay nothing and say nothing
        self._off_slots = self._off_slots + 1 if skipped and not self._on_grid else 0
        if self._off_slots >= 2 or (self._done and self._between and not self._on_grid):
            times = ", ".join(f"{t:g} s" for t in self._between)
            raise CosimError(f"{self.path}: no record lies on a slot boundary (begin {self.begin_s:g} s + k x slot): "
                             f"records at {times}, ... fall between slots; set scenario.begin_s and slot_s to the "
                             "trace's times")
        return Snapshot.empty(time_s)

    def finished(self) -> bool:
        return self._done

    def time_s(self) -> float:
        return self.begin_s

    def close(self) -> None:
        self._it = None
