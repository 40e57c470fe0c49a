"""Experiment sweeps: a grid of scenario keys x seeds x scenarios, run in parallel processes on
this machine (or as Ray tasks on a cluster), merged into one table.

A sweep file::

    [sweep]
    name = "cache-memory"
    scenarios = ["../scenarios/grid6_cache.toml"]   # relative to this file
    seeds = [1, 2, 3]
    end_s = 300                                     # optional: every run's end time [s]

    [set]                                           # optional: the same override for every run
    "output.coverage" = false

    [grid]                                          # one axis per key; runs = the cartesian product
    "layers.cache.gpu_memory_gb" = [40, 80, 160]

Each run (a *cell*: scenario x grid point x seed) is one ``cosim run`` in its own process (libsumo
allows one SUMO per process) writing ``cells/<id>/`` under the sweep's results folder, where
``<id>`` is a hash of what names the cell. A cell is finished when ``cells/<id>/cell.json``
says ``completed``: re-running an interrupted sweep skips finished cells and runs the rest —
but a finished cell whose inputs changed since (its :func:`fingerprint`: the effective
configuration, the files SUMO reads, the plugin sources) runs again, and says so; a
cell whose configuration is broken or whose run fails is recorded with its error (``failed``) and
the others go on. ``results.parquet`` has one row per (cell, layer, policy) with every number of
the layer's summary block; ``summary.csv`` the mean and 95 % confidence interval (Student t) over
seeds per (scenario, grid point, layer, policy).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import signal
import sys
import threading
import time
import types
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from cosim.cells import finished, read_json, run_cell, run_in_process
from cosim.config import (TIME_MAX_S, ScenarioSection, build_section, describe_fields, field_docs, key_parts,
                          option)
from cosim.errors import ConfigError, CosimError, Terminated
from cosim.results import summary_of
from cosim.stats import holm, mean_ci
from cosim.status import write_status

#: the most seeds a sweep runs per grid point: a 95 % interval's half-width shrinks as 1/sqrt(n),
#: to 1 % of one run's spread at 10 000 (more buys nothing and only fills memory with cells)
MAX_SEEDS = 10_000
_SEED = {f.name: f for f in dataclasses.fields(ScenarioSection)}["seed"].metadata

#: a sweep's or an entry's name is a folder name under runs/sweeps: no separators, no "..", no leading dot
_NAME = (r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]*", "letters, digits, '.', '_' and '-' only, no '..': it names a folder")
_TWICE = "its runs would count twice"


@dataclass(frozen=True)
class ScenarioEntry:
    """An entry of ``sweep.scenarios`` written as a table: a scenario with its own overrides."""

    file: str = option("", required=True, doc="scenario .toml or SUMO .sumocfg, relative to the sweep file")
    name: str = option("", pattern=_NAME, doc="its name in the results (default: the file's stem)")
    set: dict = option({}, doc="'TABLE.KEY' = value for this entry's runs only, on top of [set]")


@dataclass(frozen=True)
class SweepSection:
    """The ``[sweep]`` table."""

    name: str = option("", pattern=_NAME, doc="the results folder runs/sweeps/NAME (default: the file's stem)")
    scenarios: list[str | ScenarioEntry] = option(
        [], required=True, min_items=1, doc="scenario files (.toml or .sumocfg, relative to this file), or tables "
                                            "{ file = \"...\", name = \"...\", set = { \"TABLE.KEY\" = value } }")
    seeds: list[int] | int = option(
        [42], lo=1, hi=MAX_SEEDS, min_items=1, max_items=MAX_SEEDS, unique=_TWICE + " in the confidence intervals",
        each={"lo": _SEED["lo"], "hi": _SEED["hi"]}, doc="the seeds of every grid point, or a count N for 1..N")
    end_s: float = option(-1.0, lo=0.0, lo_open=True, hi=TIME_MAX_S, unset=-1.0,
                          doc="every run's end [s] (as scenario.end_s); -1 keeps each scenario's")
    baseline: dict[str, str] = option({}, doc="layer = \"policy\" the paired differences are taken against, e.g. "
                                              "{ dvit = \"vidi\" } (default: the layer's first policy)")


@dataclass(frozen=True)
class SweepFile:
    """A sweep file's tables."""

    sweep: SweepSection = option(SweepSection(), required=True, doc="name, scenarios, seeds")
    set: dict = option({}, doc="'TABLE.KEY' = value: the same override for every run")
    grid: dict[str, list[Any]] = option({}, each={"min_items": 1, "unique": _TWICE},
                                        doc="one axis per key, 'TABLE.KEY' = [values...]: the runs are the product "
                                            "of all axes x seeds x scenarios")


@dataclass(frozen=True)
class Cell:
    scenario: str  # absolute path of the scenario file
    params: tuple  # ((key, value), ...) of the grid point, in the sweep's key order
    seed: int
    fixed: tuple = ()  # ((key, value), ...) of [set] and the scenario entry's set, plus the sweep's end time
    cell_id: str = ""
    label: str = ""  # the scenario's name in the results (default: the file's stem)

    @property
    def name(self) -> str:
        return self.label or Path(self.scenario).stem

    @property
    def overrides(self) -> dict[str, Any]:
        return {**dict(self.fixed), **dict(self.params), "scenario.seed": self.seed}

    def to_json(self) -> dict:
        return {"id": self.cell_id, "scenario": self.scenario, "name": self.name, "params": dict(self.params),
                "seed": self.seed, "fixed": dict(self.fixed), "overrides": self.overrides}


@dataclass
class Sweep:
    name: str
    file: Path
    scenarios: list[Path]
    seeds: list[int]
    grid: dict[str, list]
    fixed: dict[str, Any] = field(default_factory=dict)
    end_s: float | None = None
    #: layer -> the policy paired differences are taken against (default: the layer's first policy)
    baseline: dict = field(default_factory=dict)
    #: per scenario entry (in ``scenarios``' order): its own ``set`` overrides and its name ("" = the stem)
    scenario_sets: list = field(default_factory=list)
    labels: list = field(default_factory=list)

    def entries(self) -> list[tuple[Path, dict, str]]:
        """(scenario file, its overrides: [set], the entry's set, the end time; its label)."""
        out = []
        for i, scen in enumerate(self.scenarios):
            fixed = {**self.fixed, **(self.scenario_sets[i] if i < len(self.scenario_sets) else {})}
            if self.end_s is not None:
                fixed["scenario.end_s"] = self.end_s
            out.append((scen, fixed, self.labels[i] if i < len(self.labels) else ""))
        return out

    def cells(self) -> list[Cell]:
        keys = list(self.grid)
        out = []
        for scen, fixed, label in self.entries():
            fixed_t = tuple(sorted(fixed.items()))
            for values in itertools.product(*(self.grid[k] for k in keys)):
                params = tuple(zip(keys, values))
                # ids hash the scenario as the sweep file names it, so a moved checkout resumes
                where = os.path.relpath(scen, self.file.parent)
                for seed in self.seeds:
                    parts = [where, [list(p) for p in params], seed, [list(f) for f in fixed_t]]
                    key = json.dumps(parts + ([label] if label else []), sort_keys=True, default=str)
                    cid = hashlib.sha1(key.encode()).hexdigest()[:12]
                    out.append(Cell(str(scen), params, seed, fixed_t, cid, label))
        return out


def load(path: str | Path) -> Sweep:
    """Read and check a sweep file (:class:`SweepFile`'s keys, checked as scenario keys are);
    bad input is a one-line :class:`ConfigError`."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such sweep file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a sweep file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file (a sweep file is TOML)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the sweep file ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: bad TOML: {exc}") from None
    f = build_section(SweepFile, data, str(path))
    sw, grid, fixed = f.sweep, f.grid, f.set
    scenarios, sets, labels, seen = [], [], [], set()
    for i, s in enumerate(sw.scenarios):
        at = f"{path}: sweep.scenarios[{i}]"
        own: dict = {}
        label = ""
        if isinstance(s, ScenarioEntry):
            own, label = s.set, s.name
            for k in own:
                _check_key(path, f"sweep.scenarios[{i}].set.\"{k}\"", k)
                _not_the_seed(path, f"sweep.scenarios[{i}].set.\"{k}\"", k)
            s = s.file
        p = Path(s) if Path(s).is_absolute() else (path.parent / s).resolve()
        if not p.is_file():
            raise ConfigError(f"{path}: sweep.scenarios: no such file {s!r} (paths are relative to the sweep file)")
        key = (p, json.dumps(own, sort_keys=True, default=str))
        if key in seen:
            raise ConfigError(f"{path}: sweep.scenarios: {s!r} is listed twice ({_TWICE})")
        seen.add(key)
        shown = label or p.stem  # not `name`: that is the sweep's
        if shown in [lb or q.stem for lb, q in zip(labels, scenarios)]:
            raise ConfigError(f"{at}: two scenario entries are both called '{shown}' in the results: give each a "
                              "name (scenarios = [{ file = ..., name = \"...\", set = {...} }])")
        scenarios.append(p)
        sets.append(own)
        labels.append(label)
    seeds = list(range(1, sw.seeds + 1)) if isinstance(sw.seeds, int) else sw.seeds
    for k in grid:
        _check_key(path, f"grid.\"{k}\"", k)
        _not_the_seed(path, f"grid.\"{k}\"", k)
    for k in fixed:
        _check_key(path, f"set.\"{k}\"", k)
        _not_the_seed(path, f"set.\"{k}\"", k)
        if k in grid:
            raise ConfigError(f"{path}: set.\"{k}\" is also a [grid] axis")
    for i, own in enumerate(sets):
        for k in own:
            if k in grid:
                raise ConfigError(f"{path}: sweep.scenarios[{i}].set.\"{k}\" is also a [grid] axis")
    return Sweep(sw.name or path.stem, path, scenarios, seeds, grid, fixed, None if sw.end_s < 0 else sw.end_s,
                 sw.baseline, sets, labels)


def describe() -> str:
    """The sweep file's keys with their defaults and checks, as ``cosim config`` lists a
    scenario's (``cosim sweep --help``)."""
    docs = {name: doc for name, _, doc in field_docs(SweepFile)}
    return "\n".join(["sweep file keys (examples in tools/sweeps/):", "[sweep]", *describe_fields(SweepSection),
                      "# an entry of sweep.scenarios written as a table:", *describe_fields(ScenarioEntry),
                      f"[set]  # {docs['set']}", f"[grid]  # {docs['grid']}"]) + "\n"


def keys_table() -> str:
    """The sweep file's keys as a Markdown table (docs/comparisons.md holds it; a test keeps it current)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for table, cls in (("sweep", SweepSection), ("sweep.scenarios[i]", ScenarioEntry), ("", SweepFile)):
        for name, default, doc in field_docs(cls):
            if cls is SweepFile and name == "sweep":
                continue
            shown = "" if isinstance(default, (list, dict)) and not default or default == "" else json.dumps(default)
            key = f"{table}.{name}" if table else f"[{name}]"
            rows.append(f"| `{key}` | {f'`{shown}`' if shown else ''} | {doc.replace('|', '&#124;')} |")
    return "\n".join(rows) + "\n"


def check_cells(sw: Sweep) -> None:
    """Every cell's configuration validated as a scenario file is (keys, ranges, layers,
    policies) before anything runs; the error names the sweep file and the value at fault."""
    from cosim import config as cfgmod
    from cosim.layers.base import validate_layers

    checked: set = set()
    runs: dict[str, set] = {}  # layer -> the policies some cell runs
    points: list = []  # (where, layer -> the policies run there) per scenario entry and grid point
    cells = sw.cells()
    for scen, fixed, entry in sw.entries():
        base = cfgmod.load_any(scen)
        base = cfgmod.apply_overrides(base, fixed, where=f"{sw.file}: [set] and {scen.name}'s set") if fixed else base
        for k, values in sw.grid.items():
            for v in values:
                where = f"{sw.file}: grid.\"{k}\" = {v!r}"
                one = cfgmod.apply_overrides(base, {k: v}, where=where)
                if k.startswith("layers."):
                    validate_layers(one, label=where)
        for c in cells:
            point = json.dumps(c.params, sort_keys=True, default=str)  # grid values may be tables
            if c.scenario != str(scen) or c.label != entry or c.fixed != tuple(sorted(fixed.items())) \
                    or point in checked:
                continue
            checked.add(point)
            label = ", ".join(f"{k} = {v!r}" for k, v in c.params) or "[set]"
            cfg = cfgmod.apply_overrides(base, dict(c.params), where=f"{sw.file}: {Path(scen).name} with {label}")
            here = {}
            for layer in validate_layers(cfg, label=f"{sw.file}: {Path(scen).name} with {label}"):
                runs.setdefault(layer.name, set()).update(layer.policies)
                here[layer.name] = list(layer.policies)
            points.append((f"{entry or Path(scen).stem} with {label}", here))
        checked.clear()
    for layer, policy in sw.baseline.items():  # a typo would leave paired.csv silently empty
        if layer not in runs:
            raise ConfigError(f"{sw.file}: sweep.baseline.{layer}: no cell runs layer '{layer}' "
                              f"(layers run: {', '.join(sorted(runs)) or 'none'})")
        if policy not in runs[layer]:
            raise ConfigError(f"{sw.file}: sweep.baseline.{layer}: '{policy}' is not among the policies run "
                              f"({', '.join(sorted(runs[layer]))})")
        for where, here in points:  # a grid point without it would vanish from paired.csv
            if layer in here and policy not in here[layer]:
                raise ConfigError(f"{sw.file}: sweep.baseline.{layer}: '{policy}' is not among the policies run at "
                                  f"{where} ({', '.join(here[layer])}): that grid point would have no comparison "
                                  "in paired.csv")


def _not_the_seed(path: Path, where: str, key: str) -> None:
    """The seed of a cell is sweep.seeds': as a grid axis or a [set] key it would be overridden
    by them (every cell ran seed 42 and was labelled by the grid value)."""
    if key == "scenario.seed":
        raise ConfigError(f"{path}: {where}: a sweep sets each cell's seed from sweep.seeds; use "
                          "seeds = [1, 2, ...] (or a count N) in [sweep] instead")


def _check_key(path: Path, where: str, key: str) -> None:
    if key_parts(key) is None:
        raise ConfigError(f"{path}: {where}: expected TABLE.KEY, layers.NAME.KEY or layers.NAME.options.POLICY.KEY")


# -- fingerprints: is a finished cell's result still what its inputs give? ----------------------
#: keys left out of a cell's configuration text in its fingerprint: they do not change what a run
#: computes (``scenario.jobs``: the same results whatever N; ``output.dir``: a cell writes into its
#: own folder)
_NOT_RESULTS = (("scenario", "jobs"), ("output", "dir"))


def _sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _file_sha(path: Path, cache: dict) -> str:
    if path not in cache:
        try:
            cache[path] = _sha(path.read_bytes())
        except OSError as exc:
            cache[path] = f"unreadable ({exc.strerror or exc})"
    return cache[path]


def _plugin_files(entry: str, base: Path) -> list[Path]:
    """The source files of a ``scenario.plugins`` entry: a ``.py`` file and every ``.py`` file
    beside it (the top level of its folder: what ``import helper`` in it most likely reads); a
    module's file; a package's every ``.py`` file (a module of a package may import its siblings).
    A module is looked up where the cell's run imports it (:func:`cosim.registry.find_plugin_module`).
    Not covered (ours; docs/comparisons.md): what a plugin imports from elsewhere — a subfolder of
    a ``.py`` plugin's folder, another folder on ``sys.path``, an installed package."""
    from cosim.registry import find_plugin_module

    if entry.endswith(".py"):
        path = Path(entry) if Path(entry).is_absolute() else base / entry
        beside = [p for p in path.parent.glob("*.py") if p.is_file() and p.name != path.name]
        return [path, *sorted(beside)]
    spec = find_plugin_module(entry, base, main_dir=os.getcwd())  # the cell: python -m, cwd first
    where = list(spec.submodule_search_locations or []) if spec else []
    if where:
        return sorted(p for w in where for p in Path(w).rglob("*.py") if "__pycache__" not in p.parts)
    return [Path(spec.origin)] if spec and spec.origin and Path(spec.origin).is_file() else []


def fingerprint(cfg: Any, cache: dict | None = None) -> dict[str, str]:
    """What a cell's results depend on beyond its id, as ``{what: sha1}``: ``config`` (the
    effective configuration's text, seed aside: the id has it; paths relative to the scenario
    file, so that a moved checkout still matches; less :data:`_NOT_RESULTS`), every file SUMO
    reads (the sumocfg and the input files it names: net, routes, additionals, ...; by name
    relative to the sumocfg's folder; and those ``scenario.sumo_args`` names, as
    ``--additional-files FILE`` or ``--additional-files=FILE``) and every plugin source file
    (``plugin:ENTRY:FILE``; a ``.py`` plugin's files beside it too, see :func:`_plugin_files`).
    Written into ``cell.json`` when the cell runs and compared before a finished cell is reused
    (:func:`stale`). cosim's own code is not in it: a new cosim does not re-run a sweep."""
    from cosim.cluster import INPUT_OPTIONS
    import tomli_w

    from cosim.config import to_dict
    from cosim.sumo_outputs import _resolve, _split_files, sumocfg_options

    cache = {} if cache is None else cache
    home = Path(cfg.source_file).resolve().parent if cfg.source_file and not cfg.source_file.startswith("<") \
        else Path(cfg.scenario.sumocfg).parent
    data = to_dict(cfg)
    for table, key in (*_NOT_RESULTS, ("scenario", "seed")):
        data[table].pop(key, None)
    sumocfg = Path(cfg.scenario.sumocfg)
    data["scenario"]["sumocfg"] = os.path.relpath(sumocfg, home)
    # a .py plugin by its path relative to the scenario's folder (as a moved checkout still names it)
    shown = {p: os.path.relpath(p, home) if p.endswith(".py") and Path(p).is_absolute() else p
             for p in cfg.scenario.plugins}
    data["scenario"]["plugins"] = [shown[p] for p in cfg.scenario.plugins]
    out = {"config": _sha(tomli_w.dumps(data).encode())}
    out["sumocfg"] = _file_sha(sumocfg, cache)
    try:
        options = sumocfg_options(sumocfg)
    except Exception:  # noqa: BLE001 - an unreadable sumocfg: its hash above says so, the run will too
        options = {}
    for name, value in options.items():
        if name in INPUT_OPTIONS:
            for v in _split_files(value):
                f = _resolve(v, sumocfg.parent)
                out[f"{name}:{v}"] = _file_sha(f, cache)
    args = list(cfg.scenario.sumo_args)  # input files named on SUMO's command line (relative to the working folder)
    for i, a in enumerate(args):  # both forms SUMO takes: --opt FILE and --opt=FILE
        opt, eq, val = a.partition("=")
        name = opt.lstrip("-")
        if not a.startswith("-") or name not in INPUT_OPTIONS or not (eq or i + 1 < len(args)):
            continue
        for v in _split_files(val if eq else args[i + 1]):
            out[f"sumo_args {name}:{v}"] = _file_sha(_resolve(v, Path.cwd()), cache)
    for entry in cfg.scenario.plugins:
        files = _plugin_files(entry, home)
        root = os.path.commonpath([str(f.parent) for f in files]) if files else ""
        for f in files:
            rel = os.path.relpath(f, root)
            out[f"plugin:{shown[entry]}:{rel}"] = _file_sha(f, cache)
        if not files:
            out[f"plugin:{shown[entry]}"] = "not found"
    return out


def fingerprints(sw: "Sweep", cells: list[Cell]) -> dict[str, dict[str, str]]:
    """cell id -> :func:`fingerprint` of its configuration, built once per configuration."""
    from cosim.cluster import config_key, configs

    specs = {c.cell_id: c.to_json() for c in cells}
    cfgs = configs(list(specs.values()))
    cache: dict = {}
    by_key = {k: fingerprint(cfg, cache) for k, cfg in cfgs.items()}
    return {cid: by_key[config_key(spec)] for cid, spec in specs.items()}


def stale(rec: dict, now: dict[str, str]) -> list[str]:
    """What changed since a finished cell ran (``rec``: its cell.json; ``now``: its fingerprint
    today), in words; empty when it may be reused."""
    then = rec.get("fingerprint")
    if not isinstance(then, dict):
        return ["no fingerprint in its cell.json (made by an older cosim)"]
    changed = []
    for k in sorted(set(then) | set(now)):
        if then.get(k) != now.get(k):
            what = {"config": "the configuration", "sumocfg": "the sumocfg"}.get(k, k.replace(":", " ", 1))
            changed.append(what + (" (new)" if k not in then else " (gone)" if k not in now else ""))
    return changed


def cell_states(sw: "Sweep", out: Path, cells: list[Cell]) -> tuple[dict[str, tuple[str, list[str]]], dict]:
    """(cell id -> (``finished`` | ``stale`` | ``to run``, what changed for a stale one),
    cell id -> its fingerprint)."""
    fps = fingerprints(sw, cells)
    states = {}
    for c in cells:
        rec = finished(out / "cells" / c.cell_id)
        if rec is None:
            states[c.cell_id] = ("to run", [])
            continue
        why = stale(rec, fps[c.cell_id])
        states[c.cell_id] = ("stale", why) if why else ("finished", [])
    return states, fps


# -- engines ----------------------------------------------------------------------------------
class Progress:
    """cells done / failed / running / total and an ETA, on one line (stderr)."""

    def __init__(self, total: int, skipped: int, enabled: bool, stale: int = 0):
        self.total, self.skipped, self.enabled, self.stale = total, skipped, enabled, stale
        self.done = self.failed = self.running = 0
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def show(self, final: bool = False) -> None:
        if not self.enabled or (final and not self.tty):  # a log already has the last line
            return
        ran = self.done + self.failed
        left = self.total - self.skipped - ran
        el = time.perf_counter() - self.t0
        eta = f"  ETA {_hms(el / ran * left)}" if ran and left else ""
        rate = f", {ran / el * 60:.1f} cells/min" if ran and el > 0 else ""
        write_status(f"sweep: {self.skipped + self.done}/{self.total} cells done ({self.skipped} earlier"
                     f"{f', {self.stale} re-run: inputs changed' if self.stale else ''}), "
                     f"{self.failed} failed, {self.running} running{rate}{eta}  [{_hms(el)}]", final)


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run_local(todo: list[tuple[dict, Path]], jobs: int, progress: Progress) -> list[dict]:
    procs: set = set()
    lock = threading.Lock()
    out = []
    pool = ThreadPoolExecutor(max_workers=jobs)
    from cosim.engine.processes import available_cores

    cores = max(1, available_cores() // max(1, min(jobs, len(todo))))  # a run's share, for scenario.jobs = 0 (auto)
    try:
        pending = set()
        it = iter(todo)
        for cell, d in itertools.islice(it, jobs):
            pending.add(pool.submit(run_in_process, cell, d, procs, lock, cores))
        progress.running = len(pending)
        progress.show()
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                rec = fut.result()
                out.append(rec)
                progress.done += rec["status"] == "completed"
                progress.failed += rec["status"] != "completed"
            for cell, d in itertools.islice(it, len(done)):
                pending.add(pool.submit(run_in_process, cell, d, procs, lock, cores))
            progress.running = len(pending)
            progress.show()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (Terminated): stop the workers cleanly
        _stop_workers(procs, lock)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def _stop_workers(procs: set, lock: threading.Lock, grace_s: float = 20.0) -> None:
    """SIGTERM every running worker (each closes its tables and writes its summary and
    cell.json), wait up to ``grace_s``, then SIGKILL what is left: no orphan either way."""
    from cosim.engine import processes

    with lock:
        running = list(procs)
    for p in running:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s  # one grace for all: they stop at once
    for p in running:
        processes.stop(p, deadline - time.monotonic())


# -- the whole sweep ----------------------------------------------------------------------------
def default_out(sw: Sweep) -> Path:
    return Path("runs") / "sweeps" / sw.name


def execute(sw: Sweep, out: Path | None = None, *, engine: str = "local", jobs: int | None = None,
            address: str | None = None, progress: bool = True) -> dict:
    """Run every unfinished cell, then merge. Returns {"cells", "completed", "failed", "out"}."""
    out = Path(out) if out else default_out(sw)
    if engine not in ("local", "ray"):
        raise ConfigError(f"unknown engine '{engine}' (use local or ray)")
    check_cells(sw)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder")
    try:
        (out / "cells").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create the results folder ({exc.strerror or exc})") from None
    (out / "sweep.toml").write_text(sw.file.read_text())
    cells = sw.cells()
    states, fps = cell_states(sw, out, cells)
    todo, skipped, changed = [], 0, []
    for c in cells:
        d = out / "cells" / c.cell_id
        state, why = states[c.cell_id]
        if state == "finished":
            skipped += 1
            continue
        if state == "stale":
            changed.append((c, why))
        todo.append(({**c.to_json(), "fingerprint": fps[c.cell_id]}, d))
    if not jobs:
        from cosim.engine.processes import available_cores

        jobs = available_cores()
    prog = Progress(len(cells), skipped, progress, stale=len(changed))
    if changed and progress:  # what made finished cells stale, once per distinct reason
        reasons = sorted({r for _, why in changed for r in why})
        first = changed[0][0]
        write_status(f"sweep: {len(changed)} finished cell(s) run again, their inputs changed since they ran "
                     f"(e.g. {first.cell_id} {first.name} seed={first.seed}): {'; '.join(reasons)}", True)
    try:
        if engine == "local":
            run_local(todo, jobs, prog)
        else:
            from cosim import cluster

            cluster.run(todo, address, prog, jobs if address is None else None)
    except KeyboardInterrupt:  # the workers have stopped: merge what finished, then stop
        merge(sw, out, cells)
        raise
    prog.show(final=True)
    return {**merge(sw, out, cells), "stale": len(changed)}


def _flatten(prefix: str, block: Any, row: dict) -> None:
    for k, v in block.items():
        if isinstance(v, dict):
            _flatten(f"{prefix}{k}.", v, row)
        elif v is None or isinstance(v, (int, float)):  # bools too
            row[f"{prefix}{k}"] = v
        elif k in ("error", "baseline") and isinstance(v, str):  # a policy dropped mid-run; vs_baseline's policy
            row[f"{prefix}{k}"] = v


def merge(sw: Sweep, out: Path, cells: list[Cell] | None = None) -> dict:
    """results.parquet (one row per cell, layer, policy) and summary.csv (mean, 95 % CI)."""
    import pandas as pd

    cells = cells if cells is not None else sw.cells()
    rows, status = [], []
    for c in cells:
        d = out / "cells" / c.cell_id
        base = {"cell": c.cell_id, "scenario": c.name, "seed": c.seed,
                **{k: _cellvalue(v) for k, v in c.params}}
        rec = read_json(d / "cell.json") or {}
        st = rec.get("status", "missing")
        summary = summary_of(d) if st == "completed" else None
        if st == "completed" and summary is None:
            st, rec = "failed", {**rec, "error": "summary.json missing or corrupt (re-run the sweep to run it again)"}
        status.append({**base, "status": st, "error": rec.get("error"), "wall_s": rec.get("wall_s"),
                       **{k: rec[k] for k in ("attempts", "node") if k in rec}})  # the ray engine's
        if summary is None:
            continue
        core = {"layer": "core", "policy": "", "vehicles_seen": summary.get("vehicles_seen"),
                "max_concurrent_vehicles": summary.get("max_concurrent_vehicles"),
                "wall_s": summary.get("wall_s", {}).get("total")}
        rows.append({**base, **core})
        for layer, block in (summary.get("layers") or {}).items():
            _rebase(d, layer, block, sw.baseline.get(layer))
            for policy, values in block.items():
                if not isinstance(values, dict):
                    continue
                own: dict = {}
                _flatten("", values, own)
                rows.append({**base, "layer": layer, "policy": policy, **_dropped(own)})
    res = pd.DataFrame(rows)
    tmp = out / ".results.parquet.tmp"
    res.to_parquet(tmp, index=False)
    tmp.replace(out / "results.parquet")  # a reader never sees half a table
    st = pd.DataFrame(status)
    st.to_csv(out / "cells.csv", index=False)
    attempts = {r["cell"]: r["attempts"] for r in status if r.get("attempts") is not None}  # the ray engine's
    summary_csv(res, list(sw.grid), out / "summary.csv", attempts)
    paired_differences(res, list(sw.grid), sw.baseline).to_csv(out / "paired.csv", index=False)
    n_ok = int((st["status"] == "completed").sum()) if len(st) else 0
    return {"cells": len(cells), "completed": n_ok, "failed": int((st["status"] == "failed").sum()) if len(st) else 0,
            "rerun": sum(1 for a in attempts.values() if a > 1), "out": str(out)}


def _dropped(own: dict) -> dict:
    """A policy dropped mid-run (its block has an ``error`` line) served only the tasks before it
    raised: its per-policy metrics of that seed describe other tasks than its peers' and are blanked
    (None: NaN in the tables, so no mean or paired difference counts that seed) and ``dropped`` is 1;
    its task-level ``vs_baseline.*`` stay (already over the tasks both served). 0 for the others."""
    if "dropped" in own:  # the merged tables' own column: a layer's block may not use the name
        raise CosimError(f"a layer's summary block has a key 'dropped', which the sweep tables reserve "
                         f"(policies dropped mid-run); rename it in the layer")
    if not isinstance(own.get("error"), str):
        return {**own, "dropped": 0}
    return {**{k: None if k not in ("error", "vs_baseline.baseline") and not k.startswith("vs_baseline.") else v
               for k, v in own.items()}, "dropped": 1}


def _rebase(run_dir: Path, layer: str, block: dict, baseline: str | None) -> None:
    """A run's task-level ``vs_baseline`` is against its layer's first policy; a sweep whose
    ``baseline`` names another gets them recomputed against it from the run's task table."""
    from cosim import pairing

    first = next((v.get("vs_baseline", {}).get("baseline") for v in block.values() if isinstance(v, dict)), None)
    if baseline is None or first is None or first == baseline:
        return
    try:
        pairing.add_to_blocks(block, pairing.against(run_dir, layer, [p for p, v in block.items() if isinstance(v, dict)],
                                                        baseline))
    except Exception as exc:  # noqa: BLE001 - the other numbers of the run stay; its task-level ones say why not
        for v in block.values():
            if isinstance(v, dict):
                v.pop("vs_baseline", None)
                v["vs_baseline_error"] = f"{type(exc).__name__}: {exc}"


def _cellvalue(v: Any) -> Any:
    """Grid values as table cells: lists become their TOML-like text (e.g. SUMO args)."""
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def summary_csv(res, grid_keys: list[str], path: Path, attempts: dict[str, int] | None = None):  # noqa: ANN001, ANN201
    """Mean, 95 % CI half-width and n (seeds with a finite value) over seeds of every numeric
    column but a run's own half-widths (``*ci95*``: see below), per group; with ``attempts`` (cell -> how often it started: the ray engine's) also
    ``reruns``, the group's cells that started more than once (a node died under them)."""
    import pandas as pd

    if res.empty:
        pd.DataFrame().to_csv(path, index=False)
        return pd.DataFrame()
    keys = ["scenario", *grid_keys, "layer", "policy"]
    skip = set(keys) | {"cell", "seed", "dropped"}
    # a run's own half-widths (vs_baseline.latency_diff_ci95_s, .success_diff_ci95: over its tasks)
    # are left out: their mean over seeds is no interval of anything, and beside the interval over
    # seeds (vs_baseline.latency_diff_s.ci95) it reads as one
    metrics = [c for c in res.columns if c not in skip and pd.api.types.is_numeric_dtype(res[c])
               and "ci95" not in c.rsplit(".", 1)[-1]]
    out = []
    for group, g in res.groupby(keys, dropna=False, sort=False):
        row = dict(zip(keys, group if isinstance(group, tuple) else (group,)))
        row["n"] = len(g)
        if "dropped" in g:  # seeds where the policy was dropped mid-run (its metrics there are NaN)
            row["dropped"] = int(g["dropped"].fillna(0).sum())
        if attempts:
            row["reruns"] = sum(1 for c in g["cell"] if attempts.get(c, 1) > 1)
        for m in metrics:
            st = mean_ci(g[m].astype(float))
            row[f"{m}.mean"], row[f"{m}.ci95"], row[f"{m}.n"] = st["mean"], st["ci95"], st["n"]
        out.append(row)
    df = pd.DataFrame(out)
    df.to_csv(path, index=False)
    return df


#: the task-level comparisons a run's summary holds per policy, against the layer's first policy
#: (``vs_baseline``, :func:`cosim.pairing.vs_baseline`): already paired within the run, task by task
TASK_LEVEL = ("latency_diff_s", "success_diff")


def paired_differences(res, grid_keys: list[str], baseline: dict[str, str] | None = None):  # noqa: ANN001, ANN201
    """Per-seed paired differences ``policy - baseline`` of every numeric metric, per scenario,
    grid point and layer (:mod:`cosim.stats`): for each metric ``M``, ``M.diff`` (mean over seeds),
    ``M.ci95`` (Student-t 95 % half-width), ``M.n`` (seeds where the difference is finite),
    ``M.p`` (two-sided paired t-test) and ``M.p_holm`` (Holm-adjusted over the family: every policy
    compared with the baseline on ``M`` in this scenario, grid point and layer). ``n``: the seeds
    both policies ran; ``dropped``: those where either was dropped mid-run (:func:`merge` blanks
    such a policy's metrics of that seed, so ``M.n`` leaves them out).

    Every policy of a layer sees the same traffic and requests in one run, so the difference
    within a seed removes what the seeds share; its interval is what a comparison must quote.
    ``baseline``: layer -> policy; default the layer's first policy (in the scenario's
    ``policies`` order: the paper's proposal in the shipped scenarios).

    The task-level columns ``latency_diff_s.*`` and ``success_diff.*`` (:data:`TASK_LEVEL`) come
    from each run's own ``vs_baseline`` block — per seed, the mean latency difference over the
    tasks both policies completed and the success-rate difference over the tasks both were given,
    censored tasks excluded — where that block's baseline is this comparison's baseline (the
    layer's first policy, or the sweep's ``baseline``: :func:`merge` recomputes the blocks against
    it from each run's task table); they are NaN otherwise.
    """
    import numpy as np
    import pandas as pd

    res = res[res["layer"] != "core"] if len(res) else res
    if res.empty:
        return pd.DataFrame()
    keys = ["scenario", *grid_keys, "layer"]
    skip = set(keys) | {"cell", "seed", "policy", "dropped"}
    # a column no layer row fills (the core rows' vehicles_seen, max_concurrent_vehicles, wall_s:
    # not a policy's) would only be empty diff/ci95/n/p/p_holm columns
    metrics = [c for c in res.columns if c not in skip and not c.startswith("vs_baseline.")
               and pd.api.types.is_numeric_dtype(res[c]) and res[c].notna().any()]
    out = []
    for group, g in res.groupby(keys, dropna=False, sort=False):
        row0 = dict(zip(keys, group if isinstance(group, tuple) else (group,)))
        base = (baseline or {}).get(row0["layer"]) or g["policy"].iloc[0]
        b = g[g["policy"] == base].set_index("seed")
        if b.empty:
            continue
        family = []
        for policy, gp in g[g["policy"] != base].groupby("policy", sort=False):
            p = gp.set_index("seed")
            seeds = p.index.intersection(b.index)
            row = {**row0, "policy": policy, "baseline": base, "n": len(seeds)}
            if "dropped" in p:  # seeds where it or the baseline was dropped mid-run: no per-policy difference there
                row["dropped"] = int(((p.loc[seeds, "dropped"].fillna(0) > 0)
                                      | (b.loc[seeds, "dropped"].fillna(0) > 0)).sum())
            for m in metrics:
                _put(row, m, mean_ci(p.loc[seeds, m].astype(float) - b.loc[seeds, m].astype(float)))
            theirs = p["vs_baseline.baseline"] if "vs_baseline.baseline" in p else pd.Series(index=p.index, dtype=object)
            for m in TASK_LEVEL:
                col = f"vs_baseline.{m}"
                v = p.loc[seeds, col].astype(float) if col in p else pd.Series(np.nan, index=seeds)
                _put(row, m, mean_ci(v.where(theirs.loc[seeds] == base)))
            family.append(row)
        for m in [*metrics, *TASK_LEVEL]:
            for row, adj in zip(family, holm([row[f"{m}.p"] for row in family])):
                row[f"{m}.p_holm"] = adj
        out += family
    return pd.DataFrame(out)


def _put(row: dict, metric: str, st: dict) -> None:
    row[f"{metric}.diff"] = st["mean"]
    for k in ("ci95", "n", "p"):
        row[f"{metric}.{k}"] = st[k]


# -- the Python API: a sweep run and read back (cosim.sweep(file), cosim.api.sweep) -----------------
@dataclass
class SweepResults:
    """A sweep's results folder read back: ``results`` (one row per run, layer and policy),
    ``summary`` (mean and 95 % half-width per policy), ``paired`` (each policy - baseline, paired
    per seed, with ``.p_holm``; docs/comparisons.md) and ``cells`` (every run's status)."""

    path: Path
    results: "pd.DataFrame"
    summary: "pd.DataFrame"
    paired: "pd.DataFrame"
    cells: "pd.DataFrame"
    completed: int
    failed: int


def sweep(file: str | Path, out: str | Path | None = None, *, jobs: int | None = None, engine: str = "local",
          address: str | None = None, progress: bool = False) -> SweepResults:
    """Run a sweep file (as ``cosim sweep``: resumes a folder it finds half done) and read it back
    (``cosim.sweep(file)``, ``cosim.api.sweep``)."""
    done = execute(load(file), Path(out) if out else None, engine=engine, jobs=jobs, address=address,
                   progress=progress)
    return load_sweep(done["out"])


def load_sweep(folder: str | Path) -> SweepResults:
    """A sweep's results folder (``cosim sweep``'s ``--out``) read back."""
    import pandas as pd

    from cosim.errors import CosimError

    folder = Path(folder)
    if not (folder / "cells.csv").is_file():
        raise CosimError(f"{folder}: not a sweep results folder (no cells.csv; run `cosim sweep`)")

    def csv(name: str) -> pd.DataFrame:
        try:
            return pd.read_csv(folder / name)
        except (FileNotFoundError, pd.errors.EmptyDataError):
            return pd.DataFrame()

    res = pd.read_parquet(folder / "results.parquet") if (folder / "results.parquet").exists() else pd.DataFrame()
    cells = csv("cells.csv")
    status = cells["status"] if "status" in cells else pd.Series(dtype=object)
    return SweepResults(folder, res, csv("summary.csv"), csv("paired.csv"), cells,
                        int((status == "completed").sum()), int((status == "failed").sum()))



def _worker_main(argv: list[str]) -> int:
    """``python -m cosim.sweep CELL_SPEC.json OUT_DIR``: run one cell (what the engines start)."""
    from cosim.engine.signals import interrupts

    try:
        with interrupts(signal.SIGTERM):  # the sweep stops its workers with SIGTERM: results written
            cell = json.loads(Path(argv[0]).read_text())
            rec = run_cell(cell, Path(argv[1]))
    except Terminated:
        return 143
    except KeyboardInterrupt:
        return 130
    return 0 if rec["status"] == "completed" else 1


class _CallableModule(types.ModuleType):
    """``cosim.sweep(file, ...)`` is :func:`sweep` — the Python API's name — while
    ``cosim.sweep`` stays this module (``cosim.sweep.load``, ``from cosim import sweep``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


if __name__ == "__main__":
    raise SystemExit(_worker_main(sys.argv[1:]))
