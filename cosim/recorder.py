"""Result tables written as they grow: parquet row groups every ``flush_slots`` slots.

Every table is closed (footer written) when the run ends, however it ends — finished, SUMO
died, interrupted — so what was computed up to the last slot is readable.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class Coded:
    """A string column given as integer codes into ``names`` (-1 = null).

    Written as an Arrow dictionary column: converting Python strings costs ~3 us each, codes
    cost nothing, so per-vehicle id columns stay cheap. ``names`` may grow between appends
    (append-only), as a run's vehicle list does.
    """

    codes: np.ndarray
    names: Sequence[str]


@dataclass(frozen=True)
class Lists:
    """A column whose cells are lists (e.g. per-step latencies): written as a parquet list column."""

    values: list  # one list per row
    item: Any = None  # pyarrow item type; None = inferred


class TableWriter:
    """Append column batches (numpy arrays, lists or :class:`Coded`); every ``flush_batches``
    appends they are concatenated per column and written as one parquet row group on a
    background thread (Arrow's compression releases the GIL, so it overlaps the simulation)."""

    def __init__(self, path: Path, flush_batches: int = 50):
        self.path = path
        self.flush_batches = flush_batches
        self._cols: dict[str, list] = {}
        self._pending = 0
        self._writer: pq.ParquetWriter | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cosim-{path.stem}")
        self._jobs: list[Future] = []
        self.rows = 0

    def append(self, columns: dict[str, Any]) -> None:
        if not self._cols:
            self._cols = {k: [] for k in columns}
        elif columns.keys() != self._cols.keys():
            raise ValueError(f"{self.path.name}: columns changed from {list(self._cols)} to {list(columns)}")
        for k, v in columns.items():
            self._cols[k].append(v)
        self._pending += 1
        if self._pending >= self.flush_batches:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        parts = {k: list(v) for k, v in self._cols.items()}
        for v in self._cols.values():
            v.clear()
        self._pending = 0
        self._check()
        self._jobs.append(self._pool.submit(self._write, parts))

    def _write(self, parts: dict[str, list]) -> None:
        table = pa.table({k: _column(p) for k, p in parts.items()})
        if table.num_rows == 0:
            return
        if self._writer is None:
            self._writer = pq.ParquetWriter(str(self.path), table.schema, compression="zstd")
        self._writer.write_table(table.cast(self._writer.schema))
        self.rows += table.num_rows

    def _check(self) -> None:
        done = [j for j in self._jobs if j.done()]
        self._jobs = [j for j in self._jobs if not j.done()]
        for j in done:
            j.result()  # re-raise a failed write here

    def close(self, empty_schema: dict[str, pa.DataType] | None = None) -> None:
        try:
            self.flush()
            for j in self._jobs:
                j.result()
            self._jobs.clear()
        finally:
            self._pool.shutdown(wait=True)
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            elif empty_schema is not None and not self.path.exists():
                pq.write_table(pa.table({k: pa.array([], type=t) for k, t in empty_schema.items()}), str(self.path))


def _column(parts: list) -> pa.Array:
    """One Arrow column from the appended pieces (arrays, lists, scalars or Coded per batch)."""
    if parts and isinstance(parts[0], Lists):
        rows = [row for p in parts for row in p.values]
        return pa.array(rows, type=pa.list_(parts[0].item) if parts[0].item is not None else None)
    if parts and isinstance(parts[0], Coded):
        codes = np.concatenate([p.codes for p in parts]).astype(np.int64)
        names = parts[-1].names
        used, inverse = np.unique(codes, return_inverse=True)
        valid = used >= 0
        dictionary = pa.array([names[i] for i in used[valid]], type=pa.string())
        shift = 0 if valid.all() else 1  # used[0] == -1 when there are nulls
        idx = (inverse - shift).astype(np.int32)
        mask = codes < 0
        return pa.DictionaryArray.from_arrays(pa.array(idx, mask=mask if mask.any() else None), dictionary)
    arr = np.concatenate([np.atleast_1d(np.asarray(p)) for p in parts])
    if arr.dtype == object or arr.dtype.kind == "U":
        return pa.array(arr.astype(object), type=pa.string())
    return pa.array(arr)


COVERAGE_SCHEMA = {
    "slot": pa.int64(), "time_s": pa.float64(), "vehicle": pa.dictionary(pa.int32(), pa.string()), "x": pa.float64(), "y": pa.float64(),
    "speed_mps": pa.float64(), "cell": pa.int64(), "rsu": pa.dictionary(pa.int32(), pa.string()), "dwell_s": pa.float64(),
    "rate_v2i_bps": pa.float64(),
}
RSUS_SCHEMA = {
    "slot": pa.int64(), "time_s": pa.float64(), "rsu": pa.dictionary(pa.int32(), pa.string()), "connected": pa.int64(),
    "handover_in": pa.int64(), "handover_out": pa.int64(), "joined": pa.int64(), "left": pa.int64(),
}


class Recorder:
    """Owns the results folder: core tables, layer tables, summary.json."""

    def __init__(self, out_dir: Path, flush_slots: int = 50, coverage: bool = True):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.flush_slots = flush_slots
        self.coverage_on = coverage
        self.tables: dict[str, TableWriter] = {}
        self._schemas: dict[str, dict] = {"rsus": RSUS_SCHEMA}
        if coverage:
            self._schemas["coverage"] = COVERAGE_SCHEMA

    def table(self, name: str) -> TableWriter:
        if name not in self.tables:
            self.tables[name] = TableWriter(self.out_dir / f"{name}.parquet", self.flush_slots)
        return self.tables[name]

    def record_world(self, world) -> None:  # noqa: ANN001
        s, r = world.snap, world.rsus
        slot = np.int64(world.slot)
        if self.coverage_on and len(s):
            self.table("coverage").append({
                "slot": np.full(len(s), slot), "time_s": np.full(len(s), s.time_s),
                "vehicle": Coded(world.vidx, world.vehicle_names),
                "x": s.x, "y": s.y, "speed_mps": s.speed, "cell": world.cell, "rsu": Coded(world.serving, r.ids),
                "dwell_s": world.dwell_s, "rate_v2i_bps": world.rate_v2i_bps,
            })
        m = len(r)
        if m:
            self.table("rsus").append({
                "slot": np.full(m, slot), "time_s": np.full(m, s.time_s), "rsu": Coded(np.arange(m), r.ids),
                "connected": world.connected, "handover_in": world.handover_in,
                "handover_out": world.handover_out, "joined": world.joined, "left": world.left,
            })

    def close(self) -> None:
        for name, schema in self._schemas.items():
            self.table(name)
        for name, t in self.tables.items():
            t.close(self._schemas.get(name))

    def write_json(self, name: str, data: dict) -> Path:
        path = self.out_dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")
        tmp.replace(path)
        return path


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
