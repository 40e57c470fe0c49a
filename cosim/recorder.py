"""Result tables written as they grow, so that no way a run can end loses what was flushed.

A table ``NAME.parquet`` is a *directory* of part files ``part-000000.parquet``, ... : every
``flush_slots`` slots the buffered rows become one complete Parquet file, written under a hidden
temporary name (``.part-….tmp``, which Parquet readers skip) and renamed into place. A kill at any
moment (SIGTERM, SIGKILL, an OOM kill, a power cut, a full disk) therefore leaves every part up to
the last flush readable: ``pandas.read_parquet("coverage.parquet")`` and ``pyarrow.parquet.read_table``
read the directory as one table, and :func:`cosim.load` (:mod:`cosim.results`, the one reader)
reads a whole results folder.
``summary.json`` is written the same way (temporary file + rename), and only ever as valid JSON
(NaN and infinities become ``null``). A trace ``*.csv`` is one CSV file appended at each flush.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq



def write_atomic(path: Path, data: bytes) -> None:
    """``path`` holds either its old content or all of ``data``, never a part: written to a
    hidden temporary file, synced, then renamed. On error the temporary file is removed."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def finite_json(o: Any) -> Any:
    """``o`` with every non-finite float (NaN, ±inf, numpy's too) as None and numpy values as
    Python ones, so that ``json.dumps(..., allow_nan=False)`` always succeeds."""
    if isinstance(o, dict):
        return {str(k): finite_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite_json(v) for v in o]
    if isinstance(o, np.ndarray):
        return finite_json(o.tolist())
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, Path):
        return str(o)
    return o


def dumps_json(data: Any, indent: int | None = 2) -> str:
    """Valid JSON always (see :func:`finite_json`); anything else unknown is written as its str."""
    return json.dumps(finite_json(data), indent=indent, allow_nan=False, default=str)


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


def columns_of(names: Sequence[str], rows: Sequence[tuple]) -> dict[str, tuple]:
    """Row tuples (each its values in the order of ``names``) as columns: name -> the rows'
    values, in row order. A row of another length than ``names`` (a column added to one and not
    the other) is a :class:`ValueError`, not a silent shift or drop of the columns after it (a
    plain ``zip`` stops at the shorter). For a layer that keeps its rows as tuples and hands
    them to its table as one batch (the DViT and cache layers)."""
    if not rows:
        return {n: () for n in names}
    return dict(zip(names, zip(*rows, strict=True), strict=True))


class TableWriter:
    """Append column batches (numpy arrays, lists or :class:`Coded`); every ``flush_batches``
    appends they are concatenated per column and written on a background thread (Arrow's
    compression releases the GIL, so it overlaps the simulation) as one complete part file of
    the table directory ``path`` (see the module docstring), or, for a ``*.csv[.gz]`` path, as
    rows appended to that file. A failed write (a full disk) is raised by the next ``append``,
    ``flush`` or ``close``; the parts written before stay readable."""

    def __init__(self, path: Path, flush_batches: int = 50):
        self.path = Path(path)
        self.flush_batches = flush_batches
        self.csv = self.path.name.lower().endswith((".csv", ".csv.gz"))
        self._cols: dict[str, list] = {}
        self._pending = 0
        self._schema: pa.Schema | None = None
        self._parts = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cosim-{self.path.stem}")
        self._jobs: list[Future] = []
        self._failed: BaseException | None = None  # the first failed write (set by the writing thread)
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
        # after a failed part no later one is written: a part queued behind it would otherwise
        # land once the failed one's space was freed, and the table would have a gap
        if self._failed is not None:
            raise self._failed
        try:
            self._write_now(parts)
        except BaseException as exc:
            self._failed = exc
            raise

    def _write_now(self, parts: dict[str, list]) -> None:
        table = pa.table({k: _column(p) for k, p in parts.items()})
        if table.num_rows == 0:
            return
        if self._schema is None:
            self._schema = table.schema
        if not table.schema.equals(self._schema, check_metadata=True):  # a cast to itself is the
            table = table.cast(self._schema)  # same table, and imports pyarrow.compute (~0.1 s)
        if self.csv:
            self._append_csv(table)
        else:
            self._write_part(table)
        self.rows += table.num_rows

    def _write_part(self, table: pa.Table) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, compression="zstd")
        write_atomic(self.path / f"part-{self._parts:06d}.parquet", buf.getvalue().to_pybytes())
        self._parts += 1

    def _append_csv(self, table: pa.Table) -> None:
        df = table.to_pandas()
        text = df.to_csv(index=False, header=self.rows == 0)  # floats as repr: round-trip exact
        opener = gzip.open if self.path.name.lower().endswith(".gz") else open
        with opener(self.path, "ab") as f:  # a gzip member per flush: still one valid .gz
            f.write(text.encode())

    def _check(self) -> None:
        done = [j for j in self._jobs if j.done()]
        self._jobs = [j for j in self._jobs if not j.done()]
        for j in done:
            j.result()  # re-raise a failed write here

    def close(self, empty_schema: dict[str, pa.DataType] | None = None) -> None:
        """Write what is buffered and wait for it. A table that got no row is written with
        ``empty_schema`` (one empty part) when given, so that readers find its columns."""
        try:
            self.flush()
            for j in self._jobs:
                j.result()
        finally:
            self._jobs.clear()
            self._pool.shutdown(wait=True)
        if self.rows == 0 and empty_schema is not None and not self.csv and not self.path.exists():
            self._write_part(pa.schema(list(empty_schema.items())).empty_table())  # (pa.array imports pandas)


def _column(parts: list) -> pa.Array:
    """One Arrow column from the appended pieces (arrays, lists, scalars, :class:`Lists` or
    :class:`Coded` per batch): what ``pa.array`` makes of them, built from buffers (see
    :func:`_numeric` for why)."""
    if parts and isinstance(parts[0], Lists):
        rows = [row for p in parts for row in p.values]
        return _lists(rows, parts[0].item)
    if parts and isinstance(parts[0], Coded):
        codes = np.concatenate([p.codes for p in parts]).astype(np.int64)
        names = parts[-1].names
        used, inverse = np.unique(codes, return_inverse=True)
        valid = used >= 0
        dictionary = _strings([names[i] for i in used[valid]])
        shift = 0 if valid.all() else 1  # used[0] == -1 when there are nulls
        idx = (inverse - shift).astype(np.int32)
        mask = codes < 0
        return pa.DictionaryArray.from_arrays(_numeric(idx, mask if mask.any() else None), dictionary)
    arr = np.concatenate([np.atleast_1d(np.asarray(p)) for p in parts])
    if arr.dtype == object or arr.dtype.kind == "U":
        return _strings(arr.tolist())
    if arr.dtype.kind in "iuf" and arr.dtype.isnative:
        return _numeric(arr)
    if arr.dtype.kind == "b":
        return _booleans(arr)
    return pa.array(arr)


def _validity(mask: np.ndarray) -> tuple[pa.Buffer | None, int]:
    """Arrow's validity bitmap (bit i set = row i holds a value) of ``mask`` (True = null), and
    the null count; no bitmap when nothing is null (as Arrow's builders leave it)."""
    nulls = int(np.count_nonzero(mask))
    return (pa.py_buffer(np.packbits(~mask, bitorder="little")) if nulls else None), nulls


def _strings(items: list) -> pa.Array:
    """``pa.array(items, type=pa.string())`` (see :func:`_numeric` for why not that call): when
    every item is a ``str`` or None (a null: no bytes, its offset repeated, its validity bit
    clear), built from the UTF-8 bytes, their offsets and the validity bitmap; otherwise (a
    non-string, more than 2 GiB of text) left to ``pa.array``, which decides what those mean."""
    kinds = set(map(type, items))
    if kinds <= {str, type(None)}:
        try:
            data = [b"" if x is None else x.encode("utf-8") for x in items]
        except UnicodeEncodeError:  # a lone surrogate: pa.array's own error
            return pa.array(items, type=pa.string())
        offsets = np.zeros(len(data) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, data), np.int64, len(data)), out=offsets[1:])
        if offsets[-1] < 2**31:
            validity, nulls = _validity(np.fromiter((x is None for x in items), bool, len(items))) \
                if type(None) in kinds else (None, 0)
            return pa.Array.from_buffers(pa.string(), len(data), [validity, pa.py_buffer(offsets.astype(np.int32)),
                                                                  pa.py_buffer(b"".join(data))], null_count=nulls)
    return pa.array(items, type=pa.string())


def _booleans(arr: np.ndarray) -> pa.Array:
    """``pa.array(arr)`` of a numpy bool array: Arrow's bit-packed values (least significant bit
    first), no nulls (see :func:`_numeric` for why not that call)."""
    return pa.Array.from_buffers(pa.bool_(), len(arr), [None, pa.py_buffer(np.packbits(arr, bitorder="little"))],
                                 null_count=0)


#: the Python types of list items that :func:`_items` converts itself, per item type (with None:
#: a null item); any other item goes to ``pa.array``. Integers become doubles only where exact
#: (pyarrow refuses the others).
_ITEM_KINDS = {pa.float64(): {float, np.float64, int, type(None)}, pa.int64(): {int, np.int64, type(None)}}


def _items(items: list, item: pa.DataType) -> pa.Array | None:
    """``pa.array(items, type=item)`` for a list column's items (str, float64 or int64; None a
    null), or None where :func:`_lists` must leave the whole column to ``pa.array``."""
    if item == pa.string():
        kinds = set(map(type, items))
        return _strings(items) if kinds <= {str, type(None)} else None
    allowed = _ITEM_KINDS.get(item)
    if allowed is None:
        return None
    kinds = set(map(type, items))
    if not kinds <= allowed:
        return None
    if item == pa.float64() and int in kinds and any(type(x) is int and abs(x) > 2**53 for x in items):
        return None  # not exactly a double: pa.array's error
    mask = None
    if type(None) in kinds:
        mask = np.fromiter((x is None for x in items), bool, len(items))
        items = [0 if x is None else x for x in items]  # a null's value slot holds 0, as Arrow's builders write
    try:
        values = np.array(items, dtype=np.float64 if item == pa.float64() else np.int64)
    except OverflowError:  # an int beyond int64: pa.array's error
        return None
    return _numeric(values, mask)


def _lists(rows: list, item: pa.DataType | None) -> pa.Array:
    """``pa.array(rows, type=pa.list_(item))`` (see :func:`_numeric` for why not that call): when
    every row is a list or tuple (or None: a null list) of items :func:`_items` converts, built
    from the int32 offsets, the validity bitmap and the items' array; otherwise (an inferred item
    type, another item type or row, more than 2**31 items) left to ``pa.array``."""
    typ = pa.list_(item) if item is not None else None
    kinds = set(map(type, rows))
    if item is None or not kinds <= {list, tuple, type(None)}:
        return pa.array(rows, type=typ)
    n = len(rows)
    has_null = type(None) in kinds
    lengths = np.fromiter((0 if r is None else len(r) for r in rows), np.int64, n) if has_null else \
        np.fromiter(map(len, rows), np.int64, n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = _items([x for r in rows if r is not None for x in r], item) if offsets[-1] < 2**31 else None
    if values is None:
        return pa.array(rows, type=typ)
    validity, nulls = _validity(np.fromiter((r is None for r in rows), bool, n)) if has_null else (None, 0)
    return pa.Array.from_buffers(typ, n, [validity, pa.py_buffer(offsets.astype(np.int32))], null_count=nulls,
                                 children=[values])


def _numeric(arr: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """``pa.array(arr, mask=mask)`` for a native-endian int/uint/float array (the same Arrow
    type, values and nulls: NaN stays a value, ``mask`` True = null), built from its buffers.

    ``pa.array`` asks pyarrow's pandas shim whether ``arr`` is a pandas object, which imports
    pandas (~0.3 s of CPU, a tenth of the core's own cost on a 600 s grid6 run) on the first
    call when pandas is installed; a run never needs it (issue 32, third pass: the core's fixed
    cost; fourth pass: the layers' booleans, nullable strings and lists, :func:`_booleans`,
    :func:`_strings`, :func:`_lists`)."""
    arr = np.ascontiguousarray(arr)
    validity, nulls = _validity(mask) if mask is not None else (None, 0)
    return pa.Array.from_buffers(pa.from_numpy_dtype(arr.dtype), len(arr), [validity, pa.py_buffer(arr)],
                                 null_count=nulls)


COVERAGE_SCHEMA = {
    "slot": pa.int64(), "time_s": pa.float64(), "vehicle": pa.dictionary(pa.int32(), pa.string()), "x": pa.float64(), "y": pa.float64(),
    "speed_mps": pa.float64(), "cell": pa.int64(), "rsu": pa.dictionary(pa.int32(), pa.string()), "dwell_s": pa.float64(),
    "rate_v2i_bps": pa.float64(),
}
RSUS_SCHEMA = {
    "slot": pa.int64(), "time_s": pa.float64(), "rsu": pa.dictionary(pa.int32(), pa.string()), "connected": pa.int64(),
    "handover_in": pa.int64(), "handover_out": pa.int64(), "joined": pa.int64(), "left": pa.int64(),
}


#: the results folder's own list of what cosim wrote there: one top-level name a line, each
#: added *before* the file or table folder is created (so a SIGKILL leaves no unlisted output).
#: ``--overwrite`` removes exactly these names (and their ``.NAME.tmp``), then the manifest.
MANIFEST = ".cosim-manifest"
_MANIFEST_HEAD = "# written by cosim: the files of this folder that cosim wrote (--overwrite removes only these)\n"


def _plain_name(name: str) -> bool:
    """A top-level entry's name: a manifest line naming anything else (``../x``, ``/x``) is ignored."""
    return bool(name) and name not in (".", "..", MANIFEST) and "/" not in name and "\\" not in name and "\0" not in name


def claim(folder: str | Path, *names: str) -> None:
    """Add ``names`` (entries directly in ``folder``) to its manifest, before they are written."""
    folder = Path(folder)
    have = read_manifest(folder)
    new = [n for n in dict.fromkeys(names) if _plain_name(n) and n not in (have or [])]
    if not new:
        return
    path = folder / MANIFEST
    with open(path, "a", encoding="utf-8") as f:
        if have is None:
            f.write(_MANIFEST_HEAD)
        f.write("".join(f"{n}\n" for n in new))
        f.flush()
        os.fsync(f.fileno())


def claim_output(run_dir: str | Path, path: str | Path) -> None:
    """``cosim view``/``report`` writing ``path``: listed in the run folder's manifest when it lies
    directly in that folder and the folder has one (a folder from before the manifest gets none:
    a manifest listing only the page would hide the older outputs from ``--overwrite``)."""
    run, path = Path(run_dir), Path(path)
    if path.resolve().parent == run.resolve() and read_manifest(run) is not None:
        claim(run, path.name)


def read_manifest(folder: str | Path) -> list[str] | None:
    """The names the manifest of ``folder`` lists (None: the folder has no manifest)."""
    path = Path(folder) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return []
    return [n for n in (line.rstrip("\n") for line in text.splitlines()) if not n.startswith("#") and _plain_name(n)]


class Recorder:
    """Owns the results folder: core tables, layer tables, summary.json (each listed in the
    folder's manifest, :data:`MANIFEST`, before it is written)."""

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
            claim(self.out_dir, f"{name}.parquet")
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
        """Close every table, even when one fails (a full disk); then raise the first error."""
        for name in self._schemas:
            self.table(name)
        first: BaseException | None = None
        for name, t in self.tables.items():
            try:
                t.close(self._schemas.get(name))
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first

    def write_json(self, name: str, data: dict) -> Path:
        """``name`` in the results folder, atomically and as valid JSON (see :func:`dumps_json`)."""
        path = self.out_dir / name
        claim(self.out_dir, name)
        write_atomic(path, (dumps_json(data) + "\n").encode())
        return path


# -- a layer's rows, held per slot and written grouped by policy -------------------------------
# In one process the rows of a layer's tables would come in the order events happen,
# interleaving the policies; spread over processes (cosim.engine.workers) that order is lost. So
# every run, in one process or several, writes a slot's rows of a layer grouped by policy, in the
# configured order, each policy's rows in the order it produced them (PolicyRows; rows without a
# ``policy`` column come last, in their order). Rows written after the last slot (the tasks still
# running at the end) are one more such group. The tables and summary.json are then the same
# whatever ``scenario.jobs`` is.
def select_rows(columns: dict[str, Any], idx: np.ndarray) -> dict[str, Any]:
    """The rows ``idx`` of a batch of columns (arrays, lists, :class:`Lists`, :class:`Coded`)."""
    out = {}
    for k, v in columns.items():
        if isinstance(v, Coded):
            out[k] = Coded(np.asarray(v.codes)[idx], v.names)
        elif isinstance(v, Lists):
            out[k] = Lists([v.values[i] for i in idx], v.item)
        elif isinstance(v, np.ndarray) and v.ndim:
            out[k] = v[idx]
        elif isinstance(v, (list, tuple)):
            out[k] = [v[i] for i in idx]
        else:  # a scalar: the same for every row
            out[k] = v
    return out


def _policies_of(columns: dict[str, Any]) -> list | None:
    """The policy name of each row of a batch, or None where it has no ``policy`` column."""
    col = columns.get("policy")
    if col is None:
        return None
    if isinstance(col, Coded):
        names = col.names
        return [names[c] if c >= 0 else None for c in np.asarray(col.codes).tolist()]
    return list(np.atleast_1d(np.asarray(col, dtype=object)))


class PolicyRows:
    """A layer's table as the layer sees it (``append(columns)``, like a
    :class:`TableWriter`): a slot's batches are held per policy until
    :meth:`drain` hands them over (see :func:`write_grouped`)."""

    def __init__(self) -> None:
        self.held: dict[Any, list] = {}

    def append(self, columns: dict[str, Any]) -> None:
        pols = _policies_of(columns)
        if pols is None or not pols:
            self.held.setdefault(None, []).append(columns)
            return
        first = pols[0]
        if all(p == first for p in pols):
            self.held.setdefault(first, []).append(columns)
            return
        groups: dict[Any, list[int]] = {}
        for i, p in enumerate(pols):
            groups.setdefault(p, []).append(i)
        for p, rows in groups.items():
            self.held.setdefault(p, []).append(select_rows(columns, np.asarray(rows, dtype=np.int64)))

    def drain(self) -> dict[Any, list]:
        held, self.held = self.held, {}
        return held


def write_grouped(writer: Any, held: dict[Any, list], order: list[str]) -> None:
    """Append ``held`` (policy -> batches) to ``writer`` as one batch (a table's writer flushes
    every ``output.flush_slots`` batches: one per slot): the policies in ``order``, then any
    other (a row naming no configured policy), then the rows without a policy."""
    batches = [b for p in order for b in held.get(p, ())]
    batches += [b for p, bs in held.items() if p is not None and p not in order for b in bs]
    batches += held.get(None, [])
    if batches:
        joined = concat(batches)
        for b in [joined] if joined is not None else batches:
            writer.append(b)


def concat(batches: list[dict]) -> dict | None:
    """The batches as one (their columns joined), or None where they cannot be (other columns,
    a scalar column standing for several rows)."""
    if len(batches) == 1:
        return batches[0]
    keys = list(batches[0])
    if any(list(b) != keys for b in batches):
        return None
    out = {}
    for k in keys:
        parts = [b[k] for b in batches]
        first = parts[0]
        if isinstance(first, Coded) and all(isinstance(v, Coded) for v in parts):
            out[k] = Coded(np.concatenate([np.asarray(v.codes) for v in parts]), parts[-1].names)
        elif isinstance(first, Lists) and all(isinstance(v, Lists) for v in parts):
            out[k] = Lists([row for v in parts for row in v.values], first.item)
        elif all(isinstance(v, np.ndarray) and v.ndim == 1 for v in parts):
            out[k] = np.concatenate(parts)
        elif all(isinstance(v, list) for v in parts):
            out[k] = [x for v in parts for x in v]
        else:
            return None
    return out


class LayerTables:
    """The layer tables of one process: ``open(name)`` gives the layer its :class:`PolicyRows`
    (``LayerContext.table``); the layer that opens a table is the one running when it is opened
    (set :attr:`current` around a layer's calls)."""

    def __init__(self) -> None:
        self.tables: dict[str, PolicyRows] = {}
        self.owner: dict[str, str] = {}  # table -> layer name
        self.current = ""

    def open(self, name: str) -> PolicyRows:
        if name not in self.tables:
            self.tables[name] = PolicyRows()
            self.owner[name] = self.current
        return self.tables[name]

    def drain(self) -> dict[str, dict[Any, list]]:
        """table -> policy -> the batches appended since the last call (tables with none left out)."""
        out = {}
        for name, t in self.tables.items():
            held = t.drain()
            if held:
                out[name] = held
        return out
