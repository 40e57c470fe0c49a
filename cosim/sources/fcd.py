"""Readers for SUMO's own FCD output (``sumo --fcd-output``), streamed: memory stays flat.

* **Parquet** (``--fcd-output trace.parquet``, SUMO >= 1.20 with Arrow; what
  ``cosim run --record trace.fcd.parquet`` asks SUMO for). Columns ``timestep_time``,
  ``vehicle_id``, ``vehicle_x``/``_y`` (double), ``vehicle_angle``, ``vehicle_speed``,
  ``vehicle_pos``, ``vehicle_acceleration`` (**float32**), ``vehicle_lane``. Read in record
  batches with the id and lane columns dictionary-encoded, so a string is built once per
  distinct id/lane per batch, not once per row. Float32 columns carry 24 bits of mantissa:
  speed, angle, lane position and acceleration differ from a live run by up to 2**-24 of their
  value (6e-8 relative: 2 µm/s at 30 m/s, 30 µm at 500 m along a lane); x and y are exact.
  A vehicle whose lane position lies within that of a 25 m cell boundary can fall into the
  neighbouring cell (tested: none in the test run).
* **XML** (``.xml`` / ``.xml.gz``). lxml's ``iterparse`` builds an element tree (one Python
  object per vehicle and attribute) and tops out at ~141 k rows/s here. SUMO writes every
  ``<vehicle>`` of a trace with the same attributes in the same order, so this reader cuts the
  text into ``<timestep>`` blocks and reads each with one compiled regular expression built from
  the first vehicle's attribute order (numbers converted column-wise in C). A block the pattern
  does not cover completely (another attribute set, a malformed line) is parsed by lxml instead,
  with the checks and line numbers of the strict path, so results never depend on which path read a
  block. ``<person>`` and ``<container>`` elements are not vehicles and are skipped (live SUMO
  does not list them among vehicles either).

SUMO has no vehicle length in FCD: 5 m is used. SUMO labels a record with the time its step
began; ``shift`` (the step length) moves it to the slot boundary the live run sees.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from cosim.engine.timeline import EPS  # the run's one time tolerance (the slot loop's)
from cosim.errors import CosimError
from cosim.sources.base import Snapshot

DEFAULT_LENGTH_M = 5.0

# -- Parquet ------------------------------------------------------------------------------------
#: SUMO's Parquet FCD column -> trace column
PARQUET_COLUMNS = {"timestep_time": "time_s", "vehicle_id": "ids", "vehicle_x": "x", "vehicle_y": "y",
                   "vehicle_speed": "speed", "vehicle_angle": "angle", "vehicle_pos": "lane_pos",
                   "vehicle_lane": "lane"}
OPTIONAL = {"vehicle_acceleration": "accel"}


def is_sumo_parquet(path: Path) -> bool:
    """True for a file with the columns of SUMO's own Parquet FCD (rather than cosim's trace)."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(str(path)).names
    except Exception:  # a directory, or unreadable: the regular reader reports it
        return False
    return "timestep_time" in names and "vehicle_id" in names


def _lanes_edges(lanes) -> tuple[np.ndarray, np.ndarray]:
    """Object arrays (lane ids, edge ids) from an Arrow string or dictionary array of lane ids:
    one Python str per distinct lane, the edge derived once per distinct lane."""
    import pyarrow as pa

    d = lanes if pa.types.is_dictionary(lanes.type) else lanes.dictionary_encode()
    words = d.dictionary.to_numpy(zero_copy_only=False)  # (to_pylist is ~10x slower)
    idx = d.indices.to_numpy(zero_copy_only=False)
    return words[idx], np.array([w.rpartition("_")[0] for w in words], dtype=object)[idx]


def _ids(col) -> np.ndarray:
    import pyarrow as pa

    if pa.types.is_dictionary(col.type):
        return col.dictionary.to_numpy(zero_copy_only=False)[col.indices.to_numpy(zero_copy_only=False)]
    return col.to_numpy(zero_copy_only=False)


def parquet_chunks(path: Path, shift: float = 0.0, batch_rows: int = 262_144) -> Iterator[dict]:
    """Trace-column chunks (``cosim.sources.replay.TRACE_COLUMNS``) from SUMO's Parquet FCD."""
    import pyarrow.parquet as pq

    try:  # pages streamed (no pre-buffering): memory follows the batch, not SUMO's row groups
        pf = pq.ParquetFile(str(path), read_dictionary=["vehicle_id", "vehicle_lane"], pre_buffer=False,
                            buffer_size=1 << 20)
    except Exception as exc:
        raise CosimError(f"{path}: not a readable parquet trace ({exc})") from None
    names = pf.schema_arrow.names
    missing = [c for c in PARQUET_COLUMNS if c not in names]
    if missing:
        raise CosimError(f"{path}: SUMO FCD trace lacks column(s) {', '.join(missing)}")
    cols = [*PARQUET_COLUMNS, *(c for c in OPTIONAL if c in names)]
    for batch in pf.iter_batches(batch_size=batch_rows, columns=cols):
        n = batch.num_rows
        get = lambda c: batch.column(cols.index(c))  # noqa: E731
        num = lambda c: get(c).to_numpy(zero_copy_only=False).astype(np.float64)  # noqa: E731  (float32 -> exact)
        if any(get(c).null_count for c in cols):
            raise CosimError(f"{path}: a SUMO FCD row with a missing value")
        lanes, edges = _lanes_edges(get("vehicle_lane"))
        yield {"time_s": num("timestep_time") + shift, "ids": _ids(get("vehicle_id")), "x": num("vehicle_x"),
               "y": num("vehicle_y"), "speed": num("vehicle_speed"), "angle": num("vehicle_angle"),
               "accel": num("vehicle_acceleration") if "vehicle_acceleration" in cols else np.zeros(n),
               "edge": edges, "lane": lanes, "lane_pos": num("vehicle_pos"),
               "length": np.full(n, DEFAULT_LENGTH_M)}


# -- XML ----------------------------------------------------------------------------------------
REQUIRED = ("id", "x", "y", "angle", "speed", "lane", "pos")
NUMERIC = ("x", "y", "angle", "speed", "pos", "acceleration", "length")
_TIME = re.compile(rb'<timestep\s+time="([^"]*)"')
_ATTR = re.compile(rb'\s([\w:.-]+)="')
_CHUNK = 1 << 22


def _pattern(attrs: list[bytes]) -> re.Pattern:
    """One regular expression for a ``<vehicle .../>`` with exactly these attributes in this order;
    the values of the ones cosim reads are captured, in the order of ``attrs``."""
    parts = [rb"<vehicle"]
    for a in attrs:
        val = rb'([^"]*)' if a.decode() in REQUIRED or a.decode() in NUMERIC else rb'[^"]*'
        parts.append(rb"\s+" + re.escape(a) + rb'="' + val + rb'"')
    parts.append(rb"\s*/>")
    return re.compile(b"".join(parts))


class _FastBlocks:
    """The fast path: one compiled pattern for this trace's vehicle attribute order (taken from
    its first vehicle); the captured values joined into tab-separated text and converted by
    Arrow's CSV reader (C++), so no Python object is made per number."""

    def __init__(self):
        self.pattern: re.Pattern | None = None
        self.keys: list[str] = []
        self.options: tuple = ()

    def _learn(self, block: bytes) -> bool:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        i = block.index(b"<vehicle")
        attrs = _ATTR.findall(block[i:block.index(b">", i) + 1])
        if not all(k.encode() in attrs for k in REQUIRED):
            return False
        self.pattern = _pattern(attrs)
        self.keys = [a.decode() for a in attrs if a.decode() in REQUIRED or a.decode() in NUMERIC]
        self.options = (pcsv.ReadOptions(column_names=self.keys, use_threads=False),
                        pcsv.ParseOptions(delimiter="\t", quote_char=False),
                        pcsv.ConvertOptions(column_types={k: pa.float64() if k in NUMERIC else pa.string()
                                                          for k in self.keys}, strings_can_be_null=False))
        return True

    def read(self, block: bytes):
        """An Arrow table of ``block``'s vehicles, or None when the pattern does not account for
        every ``<vehicle`` in it or the text holds an XML entity (then the strict path reads it)."""
        import io

        import pyarrow as pa
        import pyarrow.csv as pcsv

        n = block.count(b"<vehicle")
        if n == 0:
            return pa.table({k: pa.array([], pa.string()) for k in REQUIRED})
        if b"&" in block or (self.pattern is None and not self._learn(block)):
            return None
        rows = self.pattern.findall(block)
        if len(rows) != n:
            return None
        try:
            return pcsv.read_csv(io.BytesIO(b"\n".join(map(b"\t".join, rows))), *self.options)
        except pa.ArrowInvalid:
            return None  # e.g. a non-numeric value: the strict path names its line


def _strict_block(path: Path, block: bytes, line0: int):
    """A ``<timestep>`` block parsed by lxml, every vehicle checked; errors name the file line."""
    import pyarrow as pa
    from lxml import etree

    try:
        ts = etree.fromstring(block, etree.XMLParser(huge_tree=True))
    except etree.XMLSyntaxError as exc:
        raise CosimError(f"{path}: broken XML at line {line0 + exc.lineno - 1}: {exc.msg}") from None
    vehs = ts.findall("vehicle")
    for v in vehs:
        miss = [k for k in REQUIRED if v.get(k) is None]
        if miss:
            raise CosimError(f"{path}: line {line0 + v.sourceline - 1}: vehicle {v.get('id', '?')!r} lacks "
                             f"{', '.join(miss)}")
    cols = {k: [v.get(k) for v in vehs] for k in dict.fromkeys((*REQUIRED, *NUMERIC))}
    cols = {k: vals for k, vals in cols.items() if None not in vals}  # optional ones absent somewhere: default
    try:
        return pa.table({k: pa.array(vals, pa.string()).cast(pa.float64() if k in NUMERIC else pa.string())
                         for k, vals in cols.items()})
    except pa.ArrowInvalid as exc:
        raise CosimError(f"{path}: line {line0}: a non-numeric vehicle attribute ({exc})") from None


def xml_snapshots(path: Path, shift: float = 0.0) -> Iterator[Snapshot]:
    """Snapshots from an FCD XML trace (gzip by suffix), one per ``<timestep>``."""
    fast = _FastBlocks()
    last_t = -np.inf
    stream = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    buf, pos, line = b"", 0, 1  # line: the file line where buf[pos] is
    eof = False
    try:
        while True:
            start = buf.find(b"<timestep", pos)
            end = -1
            if start >= 0:
                close = buf.find(b">", start)
                if close >= 0 and buf[close - 1:close] == b"/":
                    end = close + 1
                elif close >= 0:
                    k = buf.find(b"</timestep>", close)
                    end = k + len(b"</timestep>") if k >= 0 else -1
            if end < 0:  # need more text
                if eof:
                    break
                chunk = stream.read(_CHUNK)
                eof = not chunk
                line += buf.count(b"\n", 0, pos)
                buf, pos = buf[pos:] + chunk, 0
                continue
            line += buf.count(b"\n", pos, start)
            block = buf[start:end]
            m = _TIME.match(block)
            try:
                t = float(m.group(1)) + shift if m else None
            except ValueError:
                t = None
            if t is None:
                raise CosimError(f"{path}: line {line}: <timestep> without a numeric time")
            if t < last_t - EPS:
                raise CosimError(f"{path}: line {line}: timestep {t:g} comes after {last_t:g} (unsorted)")
            last_t = t
            table = fast.read(block)
            if table is None:
                table = _strict_block(path, block, line)
            yield _snapshot(t, table)
            line += block.count(b"\n")
            pos = end
        rest = buf[pos:].strip()
        if b"<timestep" in rest or not rest.endswith(b"</fcd-export>"):
            line += buf.count(b"\n", pos, pos + max(0, len(buf[pos:]) - len(buf[pos:].lstrip())))
            raise CosimError(f"{path}: broken or truncated XML at line {line}: the trace does not end "
                             "with </fcd-export>")
    except (OSError, EOFError) as exc:  # gzip: a truncated or corrupt archive
        raise CosimError(f"{path}: cannot read the trace ({exc})") from None
    finally:
        stream.close()


def _snapshot(t: float, table) -> Snapshot:
    n = table.num_rows
    if not n:
        return Snapshot.empty(t)
    names = table.column_names
    num = lambda k, d=0.0: table[k].to_numpy() if k in names else np.full(n, d)  # noqa: E731
    lanes, edges = _lanes_edges(table["lane"].combine_chunks())
    return Snapshot(t, table["id"].to_numpy(), num("x"), num("y"), num("speed"), num("angle"), num("acceleration"),
                    edges, lanes, num("pos"), num("length", DEFAULT_LENGTH_M))
