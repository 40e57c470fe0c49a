"""The one reader of a results folder: :func:`load` (``cosim.load(run_dir)``).

Everything that reads what a run wrote — ``cosim view``, ``cosim report``, ``cosim compare``,
``cosim status``, the dwell analysis, the task-level pairing, the tools — reads it through a
:class:`Results`: the parsed ``summary.json`` (None when the run was killed before writing it;
:meth:`Results.require_summary` for a command that needs a finished run: one line naming what is
wrong), ``config.toml`` (its text, and parsed: :attr:`Results.settings`), every table
(``res["coverage"]``, :meth:`Results.table` with only some columns, :meth:`Results.arrow` as an
Arrow table) and the layers' own contract (:meth:`Results.layers`: the registered class of each
layer the run had, its plugins loaded from ``config.toml``; :meth:`Results.task_tables`).

A table ``NAME.parquet`` is a folder of part files (:mod:`cosim.recorder` writes it so that no
way a run ends loses what was flushed) or a single file; a part folder without a complete part
yet reads as an empty table, a broken file is one line naming it.
"""

from __future__ import annotations

import functools
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosim.errors import CosimError, ConfigError

#: the columns of coverage.parquet that ``cosim view`` and ``cosim report`` draw
COVERAGE_COLUMNS = ("slot", "time_s", "vehicle", "x", "y", "rsu")
#: the files of a folder that are tables (a run writes Parquet; ``--record`` may put a CSV trace there)
TABLE_SUFFIXES = (".parquet", ".csv", ".csv.gz")


def read_table(path: str | Path, columns: list[str] | None = None):  # noqa: ANN201 - pandas.DataFrame, lazily
    """One table (a part directory or a single Parquet file) as a DataFrame (``columns``: only
    those); a part directory with no complete part yet (killed before its first flush) reads as
    an empty frame; a broken or truncated file is one line naming it (:class:`CosimError`)."""
    import pandas as pd

    path = Path(path)
    if path.is_dir() and not any(path.glob("part-*.parquet")):
        return pd.DataFrame()
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as exc:  # noqa: BLE001 - a broken or truncated file is bad input
        raise unreadable(path, exc) from None


def read_arrow(path: str | Path, columns: list[str] | None = None):  # noqa: ANN201 - pyarrow.Table, lazily
    """:func:`read_table` as an Arrow table (no pandas conversion: for the large tables)."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        return pq.read_table(str(path), columns=columns)
    except Exception as exc:  # noqa: BLE001
        raise unreadable(path, exc) from None


def arrow_batches(path: str | Path, columns: list[str], batch_rows: int = 1 << 16):  # noqa: ANN201 - (int, iterator)
    """:func:`read_arrow` walked in record batches, for an analysis that must not hold a long table
    whole: ``(rows, batches)``, the batches (at most ``batch_rows`` rows each) in the very row
    order of :func:`read_arrow` (part by part, as the dataset lists them: the folder's files not
    starting with ``.`` or ``_``, sorted by name), each cast to the table's schema (its first
    part's). A part folder without a complete part yet has no rows; a broken file is one line
    naming it (:class:`CosimError`), raised where it is met, as is a column the table lacks.

    The parts are read with ``pyarrow.parquet.ParquetFile``, not ``ParquetDataset``: importing
    ``pyarrow.dataset`` imports pandas (~0.3 s of CPU), which a run's own dwell analysis never
    needs (issue 32, third pass: the core's fixed cost)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir() and not any(path.glob("part-*.parquet")):
        return 0, iter(())
    try:
        names = sorted(p for p in path.iterdir() if not p.name.startswith((".", "_"))) if path.is_dir() else [path]
        metas = [pq.read_metadata(str(p)) for p in names]  # (each file opened and closed in turn)
        schema = metas[0].schema.to_arrow_schema()
        rows = sum(m.num_rows for m in metas)
    except Exception as exc:  # noqa: BLE001
        raise unreadable(path, exc) from None
    missing = [c for c in columns if not schema.get_all_field_indices(c)]
    if missing:  # (ParquetFile.iter_batches would leave it out)
        raise CosimError(f"{path}: the table has no column {', '.join(map(repr, missing))}")
    twice = [c for c in columns if len(schema.get_all_field_indices(c)) > 1]
    if twice:  # (get_field_index is -1 for these too; which one a batch gives is not defined)
        raise CosimError(f"{path}: the table has a column named twice: {', '.join(map(repr, twice))}")

    def walk():  # noqa: ANN202
        try:
            for p in names:
                with pq.ParquetFile(str(p)) as f:
                    for b in f.iter_batches(batch_size=batch_rows, columns=columns):
                        want = pa.schema([schema.field(c) for c in b.schema.names])
                        yield b if b.schema.equals(want) else b.cast(want)
        except Exception as exc:  # noqa: BLE001
            raise unreadable(path, exc) from None

    return rows, walk()


def numpy_of(arr, fill: int | float | None = None):  # noqa: ANN001, ANN201 - pyarrow.Array -> numpy.ndarray
    """``arr.to_numpy(zero_copy_only=False)`` of an Arrow int/uint/float array, read from its data
    buffer when it has no null (a read-only view, as ``to_numpy`` gives); with nulls and a
    ``fill``, the values with each null replaced by ``fill`` (``pyarrow.compute.fill_null(arr,
    fill).to_numpy()``, for an integer ``fill`` that the type holds). A bool array without nulls
    is its bools (unpacked from the bitmap); a string array, or a dictionary array of strings,
    its Python strings in an object array, None for a null (what ``to_numpy`` gives). A chunked
    array is its chunks' joined (none: an empty array of its type). Any other array goes to ``to_numpy``.

    Why not ``to_numpy`` itself: in pyarrow 23 it imports pandas on its first call (~0.3 s of
    CPU), which a run's own analyses never need (issue 32, third pass: the core's fixed cost;
    fourth pass: the task-level pairing)."""
    import numpy as np
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        if not arr.num_chunks:  # no chunk at all: an empty array of the type (what to_numpy gives)
            return numpy_of(pa.array([], type=arr.type), fill)
        parts = [numpy_of(c, fill) for c in arr.chunks]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _objects(arr.to_pylist())
    if pa.types.is_dictionary(t) and pa.types.is_string(t.value_type) and pa.types.is_integer(t.index_type):
        words = _objects(arr.dictionary.to_pylist() + [None])  # [-1]: a null row's
        if not len(arr):
            return _objects([])
        # a null index becomes -1, in int64: len(words) - 1 may not fit the index type (int8 + 128 words)
        idx = arr.indices.cast(pa.int64()) if arr.null_count else arr.indices
        return words[numpy_of(idx, fill=-1)]
    if pa.types.is_boolean(t) and not arr.null_count:
        validity, data = arr.buffers()[:2]
        n = len(arr)
        if not n:
            return np.zeros(0, dtype=bool)
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little", count=arr.offset + n)
        return bits[arr.offset:].astype(bool)
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)) or (arr.null_count and fill is None):
        return arr.to_numpy(zero_copy_only=False)
    kind = "f" if pa.types.is_floating(t) else "i" if pa.types.is_signed_integer(t) else "u"
    dt = np.dtype(f"<{kind}{t.bit_width // 8}")
    validity, data = arr.buffers()[:2]
    n = len(arr)
    values = np.frombuffer(data, dtype=dt, count=n, offset=arr.offset * dt.itemsize) if n else np.zeros(0, dt)
    if not arr.null_count:
        return values
    bits = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little", count=arr.offset + n)
    values = values.copy()
    values[bits[arr.offset:] == 0] = fill
    return values


def _objects(items: list):  # noqa: ANN202 - numpy.ndarray
    """``items`` as a 1-d numpy object array (``np.array`` would make a list of lists 2-d)."""
    import numpy as np

    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def read_columns(path: str | Path, columns: list[str]) -> dict:
    """Some columns of a table (a part directory or a single Parquet file) as numpy arrays, in
    :func:`read_arrow`'s row order, without pandas: read by :func:`arrow_batches`, each batch's
    column converted by :func:`numpy_of` (numbers and bools as numbers and bools, strings and
    dictionary columns as object arrays of str with None for null), the batches joined. A part
    directory with no complete part yet gives empty columns; a column the table lacks is one line
    naming it (:class:`CosimError`), as is a broken file. For a run's own analyses at its close
    (the task-level pairing), which must not pay pandas' import (issue 32, fourth pass)."""
    import numpy as np

    _, batches = arrow_batches(path, list(columns))
    parts: dict[str, list] = {c: [] for c in columns}
    for b in batches:
        for c in columns:
            parts[c].append(numpy_of(b.column(c)))
    if not all(parts.values()):  # no batch at all (a table without rows)
        return {c: _objects([]) for c in columns}
    return {c: np.concatenate(v) for c, v in parts.items()}


def unreadable(path: str | Path, exc: BaseException) -> CosimError:
    """The one line saying that the table file ``path`` is broken (what the reader said, cut short)."""
    return CosimError(f"{path}: cannot read the table ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})")


@dataclass
class Shown:
    """A run as ``cosim view`` and ``cosim report`` draw it: the summary (a killed run's rebuilt
    from what it flushed, :meth:`Results.flushed_summary`), the network file, and the line saying
    that the run did not complete (None when it did)."""

    results: "Results"
    summary: dict
    net: Path
    incomplete: str | None
    #: None, or why the folder has no coverage.parquet (a completed run with output.coverage =
    #: false): what needs the vehicle rows (map density, handovers, dwell, the vehicles) is left out
    no_coverage: str | None = None

    @property
    def rsus(self) -> list[dict]:
        return self.summary.get("rsus", [])


class Results(Mapping):
    """A results folder read back: a mapping ``{table name: DataFrame}`` (``res["coverage"]``),
    plus ``summary`` (the parsed ``summary.json``; None when the run was killed before writing
    it, or when it is broken: ``summary_error`` says why), ``config`` (``config.toml``'s text),
    ``settings`` (it parsed) and ``path``. Tables are read on first access."""

    def __init__(self, path: Path, names: list[str], summary: dict | None, config: str | None,
                 summary_error: str | None = None):
        self.path, self.names, self.summary, self.config = Path(path), names, summary, config
        self.summary_error = summary_error
        self._frames: dict[str, Any] = {}

    # -- tables ----------------------------------------------------------------------------
    def __getitem__(self, name: str):  # noqa: ANN204
        self._known(name)
        if name not in self._frames:
            self._frames[name] = read_table(self.path / f"{name}.parquet")
        return self._frames[name]

    def _known(self, name: str) -> None:
        if name not in self.names:
            raise KeyError(f"{name!r}: no such table in {self.path} (tables: {', '.join(self.names) or 'none'})")

    def table(self, name: str, columns: list[str] | None = None):  # noqa: ANN201 - pandas.DataFrame
        """Table ``name`` (only ``columns``, when given) as a DataFrame; ``res[name]`` keeps it."""
        if columns is None:
            return self[name]
        self._known(name)
        return read_table(self.path / f"{name}.parquet", list(columns))

    def arrow(self, name: str, columns: list[str] | None = None):  # noqa: ANN201 - pyarrow.Table
        """Table ``name`` (only ``columns``) as an Arrow table."""
        self._known(name)
        return read_arrow(self.path / f"{name}.parquet", None if columns is None else list(columns))

    def files(self) -> list[str]:
        """Every table file of the folder, sorted (``coverage.parquet``, ``trace.csv``)."""
        return sorted(p.name for p in self.path.iterdir() if p.name.lower().endswith(TABLE_SUFFIXES)
                      and not p.name.startswith("."))

    def read_file(self, name: str):  # noqa: ANN201 - pandas.DataFrame
        """The table file ``name`` of :meth:`files`: a Parquet table as its values, a CSV trace as
        its text (every cell a string: what was written, unparsed)."""
        import pandas as pd

        path = self.path / name
        if name.lower().endswith(".parquet"):
            return read_table(path)
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()
        except Exception as exc:  # noqa: BLE001 - a broken or truncated file is bad input
            raise unreadable(path, exc) from None

    def __iter__(self):  # noqa: ANN204
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        status = (self.summary or {}).get("status", "no summary")
        return f"Results({str(self.path)!r}, tables={self.names}, status={status!r})"

    # -- summary and configuration ------------------------------------------------------------
    def require_summary(self) -> dict:
        """``summary.json``, for the commands that read a finished run; one line naming what is
        wrong (not a results folder, broken JSON)."""
        if self.summary is not None:
            return self.summary
        raise CosimError(self.summary_error or f"{self.path}: not a results folder (no summary.json; made by "
                                               "`cosim run` or `cosim replay`)")

    @functools.cached_property
    def settings(self) -> dict:
        """``config.toml`` parsed (the run's effective configuration); one line if it is missing or broken."""
        file = self.path / "config.toml"
        try:
            return tomllib.loads(self.config if self.config is not None else file.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CosimError(f"{file}: cannot read the run's configuration ({exc})") from None

    @property
    def killed(self) -> bool:
        """Killed before it wrote ``summary.json`` (SIGKILL, an OOM kill): its configuration and
        flushed table parts are there, its summary is not."""
        return self.summary is None and self.summary_error is None and self.config is not None

    # -- the layers' contract -----------------------------------------------------------------
    @functools.cached_property
    def _layers(self) -> dict[str, type]:
        from cosim import registry

        names = list((self.summary or {}).get("layers") or {})
        try:
            configured = self.settings.get("layers", {}) if self.config is not None else {}
            plugins = self.settings.get("scenario", {}).get("plugins", []) if self.config is not None else []
        except CosimError:
            configured, plugins = {}, []
        names += [n for n, t in configured.items() if n not in names and not (isinstance(t, dict) and
                                                                              t.get("enabled") is False)]
        try:  # the run's plugin layers (config.toml names .py plugins by absolute path)
            registry.load_plugins(list(plugins), f"{self.path / 'config.toml'}: scenario.plugins")
        except ConfigError:
            pass  # a plugin not importable here: its layer is not shown; the others are
        out = {}
        for name in names:
            try:
                out[name] = registry.layer_class(name)
            except ConfigError:
                continue  # a layer not registered here (its plugin is missing): nothing to draw it with
        return out

    def layers(self) -> dict[str, type]:
        """Layer name -> its registered class, for every layer of the run (in the summary's order,
        then the configuration's), after importing the plugins its ``config.toml`` names; a layer
        whose class cannot be found here (its plugin is not installed) is left out."""
        return dict(self._layers)

    def task_tables(self) -> dict[str, Any]:
        """Layer name -> its task table (:attr:`cosim.layers.base.Layer.task_table`) as a
        DataFrame, for every layer of the run that declares one and wrote it."""
        return {name: self[cls.task_table] for name, cls in self._layers.items()
                if cls.task_table is not None and cls.task_table in self.names}

    # -- what view and report draw ------------------------------------------------------------
    def net_file(self, net: str | Path | None = None) -> Path:
        """The network file: ``net``, else the one the run's ``scenario.sumocfg`` names; one line
        when it is not here (results copied elsewhere: pass ``--net``)."""
        if net is None:
            from cosim.world import net_file_of

            cfg_file = self.path / "config.toml"
            sumocfg = self.settings.get("scenario", {}).get("sumocfg", "")
            if not sumocfg:
                raise CosimError(f"{cfg_file}: no scenario.sumocfg")
            if not Path(sumocfg).is_file():
                raise CosimError(f"{cfg_file}: scenario.sumocfg {sumocfg} does not exist here; pass the network with --net")
            net = net_file_of(sumocfg)
        net = Path(net)
        if not net.is_file():
            raise CosimError(f"{net}: no such network file (pass it with --net)")
        return net

    def shown(self, net: str | Path | None = None) -> Shown:
        """What ``cosim view`` and ``cosim report`` draw (:class:`Shown`); one line naming what is
        missing. A run that did not complete is shown as far as it was flushed: ``incomplete``
        says so. A killed run gets its summary rebuilt (:meth:`flushed_summary`). A completed run
        with ``output.coverage = false`` is shown without its vehicle rows: ``no_coverage`` says so
        (or, where the run wrote coverage.parquet and it was removed since, that it is missing)."""
        killed = self.killed
        summary = {} if killed else self.require_summary()
        self.settings  # noqa: B018 - a broken config.toml is one line before anything is drawn
        net = self.net_file(net)
        if killed:
            summary = self.flushed_summary(net)
        if "coverage" not in self.names:
            if killed or summary.get("status") != "completed":
                raise CosimError(f"{self.path}: no coverage.parquet: the run stopped before its first flush "
                                 "(output.flush_slots), there is nothing to show")
            if self.settings.get("output", {}).get("coverage", True) is not False:  # on, and the file since removed
                return Shown(self, summary, net, None, f"no vehicle rows: {self.path / 'coverage.parquet'} is missing "
                                                       "(the run had output.coverage = true)")
            return Shown(self, summary, net, None, "no vehicle rows: the run had output.coverage = false "
                                                   "(no coverage.parquet)")
        status = summary.get("status")
        incomplete = None
        if killed:
            incomplete = (f"incomplete: the run was killed (no summary.json); showing the {summary['slots']} slots "
                          "flushed before")
        elif status != "completed":
            incomplete = f"incomplete: the run ended {status or 'without a status'}; showing the slots flushed"
        return Shown(self, summary, net, incomplete)

    def flushed_summary(self, net: Path) -> dict:
        """The summary of a killed run, rebuilt from what it left: the RSUs from ``config.toml``
        and the network (placed as the run placed them), the slots and vehicles from the flushed
        table parts, per layer with a task table and policy the task counts, success rate (over
        the tasks that ended) and latencies of the flushed task rows. ``status`` is ``killed``."""
        import numpy as np

        from cosim import config as cfgmod
        from cosim.world import read_net
        from cosim.world.rsu import build_rsus

        try:
            cfg = cfgmod.load(self.path / "config.toml")
            rs = build_rsus(cfg, read_net(net))
        except ConfigError as exc:
            raise CosimError(f"{self.path}: the run was killed and its configuration cannot be read back ({exc})") from None
        slots: set = set()
        vehicles = 0
        for name in ("rsus", "coverage"):
            if name in self.names:
                df = self.table(name, ["slot"] + (["vehicle"] if name == "coverage" else []))
                slots |= set(df["slot"].tolist()) if len(df) else set()
                if name == "coverage" and len(df):
                    vehicles = int(df["vehicle"].nunique())
        layers = {}
        for layer, df in self.task_tables().items():
            if df.empty:
                continue
            block = {}
            for policy, g in df.groupby("policy", sort=False):
                lat = g["latency_s"].to_numpy(dtype=float)
                lat = lat[np.isfinite(lat)]
                ended = g[g["outcome"] != "censored"] if "outcome" in g else g
                block[str(policy)] = {
                    "tasks": int(len(g)),
                    "success_rate": float(ended["success"].mean()) if len(ended) else None,
                    "mean_latency_s": float(lat.mean()) if len(lat) else None,
                    "p95_latency_s": float(np.percentile(lat, 95)) if len(lat) else None,
                    **({"mean_iv_utility": float(g["iv_utility"].mean())} if "iv_utility" in g else {}),
                }
            layers[layer] = block
        return {"scenario": cfg.scenario.name or self.path.name, "seed": cfg.scenario.seed, "status": "killed",
                "slot_s": cfg.scenario.slot_s, "slots": len(slots), "vehicles_seen": vehicles,
                "rsus": [{"id": i, "x": float(x), "y": float(y), "radius_m": float(r)}
                         for i, x, y, r in zip(rs.ids, rs.x, rs.y, rs.radius_m)],
                "layers": layers}


def load(run_dir: str | Path) -> Results:
    """Read a results folder (``cosim run``'s ``--out``), however the run ended; one line when
    ``run_dir`` is no folder. A broken ``summary.json`` reads as None, with ``summary_error``."""
    path = Path(run_dir)
    if not path.is_dir():
        raise CosimError(f"{path}: no such results folder")
    names = sorted(p.name[: -len(".parquet")] for p in path.glob("*.parquet"))
    summary, error = None, None
    file = path / "summary.json"
    if file.is_file():
        try:
            summary = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            error = f"{file}: broken JSON at line {exc.lineno}: {exc.msg}"
        except UnicodeDecodeError:
            error = f"{file}: not UTF-8 text"
        if summary is not None and not isinstance(summary, dict):
            summary, error = None, f"{file}: not a JSON object"
    config = (path / "config.toml").read_text() if (path / "config.toml").is_file() else None
    return Results(path, names, summary, config, error)


def summary_of(run_dir: str | Path) -> dict | None:
    """The parsed ``summary.json`` of ``run_dir`` (:func:`load`'s); None where there is no such
    folder, no summary or a broken one (a sweep's cell that then runs again)."""
    try:
        return load(run_dir).summary
    except CosimError:
        return None


__all__ = ["COVERAGE_COLUMNS", "Results", "Shown", "load", "summary_of", "read_arrow", "read_columns", "read_table",
           "unreadable"]
