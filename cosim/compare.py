"""``cosim compare RUN_A RUN_B``: do two results folders hold the same results?

For checking that a change kept every result (a refactored policy, a faster path, ``--jobs 2``
against ``--jobs 1``, a replay against its live run): :func:`differences` compares

* **the tables**: every ``NAME.parquet`` (a part folder, as :class:`cosim.recorder.TableWriter`
  writes it, or a single file) and every ``NAME.csv[.gz]`` in the folder (a run writes its tables
  as Parquet; a CSV is there only when ``--record`` put a trace there). Both folders must hold the
  same set; each table the same columns in the same order, the same column types (a categorical
  column compares by its values, not by the order of its categories), the same number of rows
  and every value equal exactly — NaN and null equal to themselves, list cells element by
  element. A CSV table is compared as the text written (no parsing: exact by construction).
* **summary.json**, key by key at any depth.

Left out, because they are measured, not computed (two runs of the same code differ in them):
the keys and columns named in :data:`MEASURED`. **Provenance** — the top-level summary keys in
:data:`PROVENANCE` (versions, which scenario file and sumocfg) — says where and with what a run
was made, not what it computed: a replay says ``versions.sumo = "replay"`` where its live run says
``SUMO 1.28.0``. Provenance differences are reported (:attr:`Comparison.provenance`) but are not
different results unless ``strict``. ``ignore``: table names (``coverage.parquet`` or
``coverage``), column names (in every table) and summary.json key paths (``versions.torch``,
``layers.moe``: the key and everything under it) left out of the comparison. Not compared at all: ``config.toml`` (it holds
absolute paths and ``scenario.jobs``, which a user compares across), ``sumo.log`` and the files
``cosim view`` / ``cosim report`` write.

A difference is one line ``WHAT: A vs B``. Per table only the first differing row is shown
(its first differing column, both values) with the count of rows and the columns that differ;
summary keys are listed one per line (at most :data:`MAX_SUMMARY_LINES`).

``rtol`` > 0 (``cosim compare --rtol R``) lets floating-point values differ by a relative
``|a - b| <= R * max(|a|, |b|)`` — float columns, float elements of list cells and
summary.json's non-integer numbers; integers, booleans, text and categories (devices, routings,
outcomes) stay exact — for a change that computes the same numbers in another order (issue 32);
the values that differ within it are counted in :attr:`Comparison.tolerated`, so a ``same``
says how close.

``ignore_order=True`` compares each table as a multiset of rows: both are sorted by all their
columns (numbers by value with NaN last; text, categories and list cells by a canonical text
key) before the row-by-row comparison, for changes that only reorder rows; row numbers in the
lines are then those of the sorted tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cosim.results import TABLE_SUFFIXES, Results, load

#: Keys (at any depth of summary.json) and table columns left out of the comparison because they
#: are measured, not computed: wall-clock and CPU seconds, the results folder's own path, the
#: entry-point plugins installed in the environment (the test suite installs the example one), and
#: a policy's measured solve time (the MoE pricing solvers time themselves).
MEASURED = frozenset({"wall_s", "cpu_s", "out_dir", "plugins", "solve_ms", "mean_solve_ms"})
#: top-level summary.json keys that say where and with what a run was made, not what it computed
PROVENANCE = ("versions", "scenario_file", "sumocfg")
#: summary.json lines shown before the rest are counted in one line
MAX_SUMMARY_LINES = 20


def table_names(run: str | Path) -> list[str]:
    """The tables of a results folder, as file names (``coverage.parquet``, ``trace.csv``), sorted."""
    return load(run).files()


@dataclass
class Comparison:
    """What :func:`compare` found: ``results`` (different results: tables, layer blocks, …) and
    ``provenance`` (where and with what the runs were made), one line per difference each."""

    results: list[str]
    provenance: list[str]
    #: with ``rtol``: per table and for summary.json, the values that differ within it
    tolerated: list[str] = field(default_factory=list)
    #: the ``ignore`` entries that matched nothing in either folder (a table, a column of a compared
    #: table, a summary.json key path): most likely a typo, which would leave a difference counted
    unmatched: list[str] = field(default_factory=list)


def compare(a: str | Path, b: str | Path, *, ignore_order: bool = False, ignore: tuple[str, ...] = (),
            rtol: float = 0.0) -> Comparison:
    """Results folders ``a`` and ``b`` compared (see the module docstring).

    Raises :class:`CosimError` naming the folder when one does not exist, holds no
    ``summary.json`` or holds an unreadable table.
    """
    ra = load(a)
    sa = ra.require_summary()
    rb = load(b)
    sb = rb.require_summary()
    skip = set(ignore)
    used: set[str] = set()  # the ignore entries that left something out
    out: list[str] = []
    tol = _Tolerance(rtol)
    ta, tb = ra.files(), rb.files()
    for name in sorted(set(ta) | set(tb)):
        if name in skip or _stem(name) in skip:
            used |= {name, _stem(name)} & skip
            continue
        if name not in tb or name not in ta:
            here: Results = ra if name in ta else rb
            shape = f"a table of {len(here.read_file(name))} rows"
            out.append(f"{name}: {shape} vs (absent)" if name in ta else f"{name}: (absent) vs {shape}")
            continue
        x, y = ra.read_file(name), rb.read_file(name)
        used |= skip & {*x.columns, *y.columns}
        x, y = (t.drop(columns=[c for c in t.columns if c in skip]) for t in (x, y))
        line = table_difference(name, x, y, ignore_order=ignore_order, tol=tol)
        if line:
            out.append(line)
        tol.report(name)
    sa, sb = (_without(_unmeasured(s), skip, used) for s in (sa, sb))
    prov: list[str] = []
    for key in PROVENANCE:
        _json_diff({key: sa.pop(key, None)} if key in sa else {}, {key: sb.pop(key, None)} if key in sb else {}, "", prov)
    lines: list[str] = []
    _json_diff(sa, sb, "", lines, tol)
    tol.report("summary.json")
    out += [f"summary.json: {ln}" for ln in lines[:MAX_SUMMARY_LINES]]
    if len(lines) > MAX_SUMMARY_LINES:
        out.append(f"summary.json: {len(lines) - MAX_SUMMARY_LINES} more keys differ")
    return Comparison(out, [f"summary.json: {ln}" for ln in prov], tol.lines,
                      [k for k in dict.fromkeys(ignore) if k not in used and k.split(".")[-1] not in MEASURED])


def differences(a: str | Path, b: str | Path, *, ignore_order: bool = False, ignore: tuple[str, ...] = (),
                strict: bool = False, rtol: float = 0.0) -> list[str]:
    """One line per different result between results folders ``a`` and ``b`` (empty: the same
    results); with ``strict`` the provenance differences too."""
    c = compare(a, b, ignore_order=ignore_order, ignore=ignore, rtol=rtol)
    return c.results + (c.provenance if strict else [])


def _stem(name: str) -> str:
    low = name.lower()
    for suffix in TABLE_SUFFIXES[::-1]:  # .csv.gz before .csv
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _without(summary: dict, keys: set[str], used: set[str] | None = None) -> dict:
    """``summary`` less the dotted key paths in ``keys`` (a path's whole subtree); the paths
    found are added to ``used``."""
    for key in keys:
        node, parts = summary, key.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and parts[-1] in node:
            node.pop(parts[-1])
            if used is not None:
                used.add(key)
    return summary


class _Tolerance:
    """``rtol`` and what it let through: the count of float values that differ within it and the
    largest relative difference, per table (or summary.json), and in which columns / keys."""

    def __init__(self, rtol: float) -> None:
        self.rtol = float(rtol)
        self.lines: list[str] = []
        self._reset()

    def _reset(self) -> None:
        self.n, self.worst, self.where = 0, 0.0, {}

    def close(self, x: float, y: float, where: str) -> bool:
        """x and y (floats, not equal) within rtol; counted if so."""
        if not self.rtol or not (math.isfinite(x) and math.isfinite(y)):
            return False
        rel = abs(x - y) / max(abs(x), abs(y))
        if rel > self.rtol:
            return False
        self.n, self.worst = self.n + 1, max(self.worst, rel)
        self.where[where] = None
        return True

    def close_arrays(self, x: np.ndarray, y: np.ndarray, where: str) -> np.ndarray:
        """Elementwise :meth:`close` of two float arrays (the unequal, finite pairs within rtol)."""
        if not self.rtol:
            return np.zeros(x.shape, dtype=bool)
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.abs(x - y) / np.maximum(np.abs(x), np.abs(y))
            ok = (x != y) & np.isfinite(x) & np.isfinite(y) & (rel <= self.rtol)
        if ok.any():
            self.n, self.worst = self.n + int(ok.sum()), max(self.worst, float(rel[ok].max()))
            self.where[where] = None
        return ok

    def report(self, name: str) -> None:
        if self.n:
            where = list(self.where)
            more = f" and {len(where) - 6} more" if len(where) > 6 else ""
            self.lines.append(f"{name}: {self.n} float values differ within rtol {self.rtol:g} (largest relative "
                              f"difference {self.worst:.3g}; in {', '.join(where[:6])}{more})")
        self._reset()


# -- tables ---------------------------------------------------------------------------------------
def table_difference(name: str, a, b, *, ignore_order: bool = False, tol: _Tolerance | None = None) -> str | None:  # noqa: ANN001
    """How DataFrame ``b`` differs from ``a`` (one line starting with ``name``), or None. ``tol``:
    float values within its ``rtol`` count as equal (and are counted there)."""
    a = a.drop(columns=[c for c in a.columns if c in MEASURED])
    b = b.drop(columns=[c for c in b.columns if c in MEASURED])
    if list(a.columns) != list(b.columns):
        return f"{name}: columns {', '.join(map(str, a.columns))} vs {', '.join(map(str, b.columns))}"
    if len(a) != len(b):
        return f"{name}: {len(a)} rows vs {len(b)} rows"
    types = [f"{c} {_type(a[c])} vs {_type(b[c])}" for c in a.columns if _type(a[c]) != _type(b[c])]
    if types:
        return f"{name}: column types differ: {'; '.join(types)}"
    if ignore_order:
        a, b = _sorted(a), _sorted(b)
    tol = tol if tol is not None else _Tolerance(0.0)
    bad = {c: ~_equal_cells(a[c], b[c], tol, str(c)) for c in a.columns}
    bad = {c: m for c, m in bad.items() if m.any()}
    if not bad:
        return None
    rows = np.logical_or.reduce(list(bad.values()))
    i = int(np.argmax(rows))
    col = next(c for c, m in bad.items() if m[i])
    where = f"row {i} (sorted)" if ignore_order else f"row {i}"
    return (f"{name}: {where}, column {col}: {_show(a[col].iat[i])} vs {_show(b[col].iat[i])} "
            f"({int(rows.sum())} of {len(rows)} rows differ, in {', '.join(map(str, bad))})")


def _type(s) -> str:  # noqa: ANN001 - pandas.Series
    import pandas as pd

    if isinstance(s.dtype, pd.CategoricalDtype):
        return f"category of {s.cat.categories.dtype}"
    return str(s.dtype)


def _equal_cells(a, b, tol: _Tolerance | None = None, col: str = "") -> np.ndarray:  # noqa: ANN001 - two pandas.Series of one type
    """Per row: the cells are equal (NaN/null equal to NaN/null, list cells element by element;
    floats within ``tol``'s rtol)."""
    import pandas as pd

    tol = tol if tol is not None else _Tolerance(0.0)
    if isinstance(a.dtype, np.dtype) and a.dtype.kind in "biufcmM":
        x, y = a.to_numpy(), b.to_numpy()
        eq = x == y
        if a.dtype.kind in "fc":
            eq |= np.isnan(x) & np.isnan(y)
            if a.dtype.kind == "f" and tol.rtol and not eq.all():
                eq |= tol.close_arrays(x, y, col)
        elif a.dtype.kind in "mM":
            eq |= np.isnat(x) & np.isnat(y)
        return eq
    x, y = a.to_numpy(dtype=object), b.to_numpy(dtype=object)
    if isinstance(a.dtype, (pd.CategoricalDtype, pd.StringDtype)):  # scalars only: compare at once
        return (x == y) | (pd.isna(x) & pd.isna(y))
    return np.fromiter((_same(u, v, tol, col) for u, v in zip(x, y)), dtype=bool, count=len(x))


def _listlike(v: Any) -> bool:
    return isinstance(v, (list, tuple, np.ndarray))


def _missing(v: Any) -> bool:
    import pandas as pd

    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, (float, np.floating)) and math.isnan(v))


def _same(x: Any, y: Any, tol: _Tolerance | None = None, col: str = "") -> bool:
    """Two cells equal: lists element by element (recursively), NaN/None equal to NaN/None;
    floats within ``tol``'s rtol."""
    if _listlike(x) or _listlike(y):
        if not (_listlike(x) and _listlike(y)) or len(x) != len(y):
            return False
        if isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.dtype.kind in "biuf" and y.dtype.kind in "biuf":
            f = x.dtype.kind == "f" or y.dtype.kind == "f"
            if np.array_equal(x, y, equal_nan=f):
                return True
            if not (f and tol is not None and tol.rtol and x.dtype.kind == y.dtype.kind == "f"):
                return False
            eq = (x == y) | (np.isnan(x) & np.isnan(y))
            probe = _Tolerance(tol.rtol)  # count only if the whole cell passes
            if (eq | probe.close_arrays(x, y, col)).all():
                tol.close_arrays(x, y, col)
                return True
            return False
        return all(_same(u, v, tol, col) for u, v in zip(x, y))
    if _missing(x) or _missing(y):
        return _missing(x) and _missing(y)
    if bool(x == y) and isinstance(x, (bool, np.bool_)) == isinstance(y, (bool, np.bool_)):
        return True
    return (tol is not None and isinstance(x, (float, np.floating)) and isinstance(y, (float, np.floating))
            and tol.close(float(x), float(y), col))


def _key(v: Any) -> str | None:
    """A text sort key: equal for cells :func:`_same` calls equal (-0.0 as 0.0), None for missing."""
    if isinstance(v, np.ndarray) and v.dtype.kind in "iuf":  # a numeric list cell: the keys below, faster
        f = v.dtype.kind == "f"
        return "[" + ",".join("" if u != u else f"f{u + 0.0!r}" if f else f"i{u}" for u in v.tolist()) + "]"
    if _listlike(v):
        return "[" + ",".join("" if (k := _key(u)) is None else k for u in v) + "]"
    if _missing(v):
        return None
    if isinstance(v, str):
        return "s" + v
    if isinstance(v, (bool, np.bool_)):
        return f"b{bool(v)}"
    if isinstance(v, (int, np.integer)):
        return f"i{int(v)}"
    if isinstance(v, (float, np.floating)):
        return f"f{float(v) + 0.0!r}"  # + 0.0: -0.0 becomes 0.0
    return f"o{v!r}"


def _sorted(df):  # noqa: ANN001, ANN202 - pandas.DataFrame
    """``df``'s rows sorted by all columns (numbers by value, NaN last; the rest by :func:`_key`)."""
    import pandas as pd

    if len(df) < 2 or not len(df.columns):
        return df
    keys = {}
    for i, c in enumerate(df.columns):
        s = df[c]
        if isinstance(s.dtype, np.dtype) and s.dtype.kind in "biufmM":
            keys[i] = s.to_numpy()
        elif isinstance(s.dtype, pd.CategoricalDtype):  # a key per category, not per row (code -1: null)
            names = np.array([_key(v) for v in s.cat.categories] + [None], dtype=object)
            keys[i] = pd.Series(names[s.cat.codes.to_numpy()], dtype=object)
        else:
            keys[i] = pd.Series([_key(v) for v in s.to_numpy(dtype=object)], dtype=object)
    order = pd.DataFrame(keys).sort_values(list(keys), kind="mergesort", na_position="last").index
    return df.iloc[np.asarray(order)].reset_index(drop=True)


def _show(v: Any) -> str:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    elif isinstance(v, np.generic):
        v = v.item()
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


# -- summary.json ---------------------------------------------------------------------------------
def _unmeasured(o: Any) -> Any:
    """``o`` without the :data:`MEASURED` keys, at any depth."""
    if isinstance(o, dict):
        return {k: _unmeasured(v) for k, v in o.items() if k not in MEASURED}
    if isinstance(o, list):
        return [_unmeasured(v) for v in o]
    return o


def _json_diff(x: Any, y: Any, path: str, out: list[str], tol: _Tolerance | None = None) -> None:
    """Append ``PATH: X vs Y`` for every leaf where parsed JSON values ``x`` and ``y`` differ
    (non-integer numbers within ``tol``'s rtol are the same, and counted there)."""
    if isinstance(x, dict) and isinstance(y, dict):
        for k in list(x) + [k for k in y if k not in x]:
            sub = f"{path}.{k}" if path else str(k)
            if k not in y or k not in x:
                out.append(f"{sub}: {_show(x[k]) if k in x else '(absent)'} vs {_show(y[k]) if k in y else '(absent)'}")
            else:
                _json_diff(x[k], y[k], sub, out, tol)
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y)):
            _json_diff(u, v, f"{path}[{i}]", out, tol)
    elif not _same_json(x, y) and not (tol is not None and isinstance(x, float) and isinstance(y, float)
                                       and tol.close(x, y, path)):
        out.append(f"{path or '(top)'}: {_show(x)} vs {_show(y)}")


def _same_json(x: Any, y: Any) -> bool:
    if isinstance(x, list) or isinstance(y, list):
        return False  # lists of different lengths (equal lengths are compared item by item)
    return x == y and isinstance(x, bool) == isinstance(y, bool) and isinstance(x, dict) == isinstance(y, dict)
