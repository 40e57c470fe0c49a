"""Result tables written as they grow: parquet row groups every ``flush_slots`` slots.

Every table is closed (footer written) when the run ends, however it ends — finished, SUMO
died, interrupted — so what was computed up to the last slot is readable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


class TableWriter:
    """Append column batches; they are concatenated and written as parquet row groups."""

    def __init__(self, path: Path, flush_batches: int = 50):
        self.path = path
        self.flush_batches = flush_batches
        self._batches: list[pa.Table] = []
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def append(self, columns: dict[str, Any]) -> None:
        table = pa.table({k: _column(v) for k, v in columns.items()})
        if table.num_rows == 0:
            return
        self._batches.append(table)
        if len(self._batches) >= self.flush_batches:
            self.flush()

    def flush(self) -> None:
        if not self._batches:
            return
        if self._writer is None:
            schema = self._batches[0].schema
            self._writer = pq.ParquetWriter(str(self.path), schema, compression="zstd")
        table = pa.concat_tables([b.cast(self._writer.schema) for b in self._batches])
        self._writer.write_table(table)
        self.rows += table.num_rows
        self._batches.clear()

    def close(self, empty_schema: dict[str, pa.DataType] | None = None) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        elif empty_schema is not None and not self.path.exists():
            pq.write_table(pa.table({k: pa.array([], type=t) for k, t in empty_schema.items()}), str(self.path))


def _column(v: Any) -> pa.Array:
    if isinstance(v, pa.Array):
        return v
    arr = np.asarray(v)
    if arr.dtype == object:
        return pa.array(arr.tolist(), type=pa.string())
    return pa.array(arr)


COVERAGE_SCHEMA = {
    "slot": pa.int64(), "time_s": pa.float64(), "vehicle": pa.string(), "x": pa.float64(), "y": pa.float64(),
    "speed_mps": pa.float64(), "cell": pa.int64(), "rsu": pa.string(), "dwell_s": pa.float64(),
    "rate_v2i_bps": pa.float64(),
}
RSUS_SCHEMA = {
    "slot": pa.int64(), "time_s": pa.float64(), "rsu": pa.string(), "connected": pa.int64(),
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
            names = np.array([*r.ids, None], dtype=object)
            self.table("coverage").append({
                "slot": np.full(len(s), slot), "time_s": np.full(len(s), s.time_s), "vehicle": s.ids,
                "x": s.x, "y": s.y, "speed_mps": s.speed, "cell": world.cell, "rsu": names[world.serving],
                "dwell_s": world.dwell_s, "rate_v2i_bps": world.rate_v2i_bps,
            })
        m = len(r)
        if m:
            self.table("rsus").append({
                "slot": np.full(m, slot), "time_s": np.full(m, s.time_s), "rsu": np.array(r.ids, dtype=object),
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
