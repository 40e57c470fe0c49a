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
``<id>`` is a hash of what defines the cell. A cell is finished when ``cells/<id>/cell.json``
says ``completed``: re-running an interrupted sweep skips finished cells and runs the rest; a
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
import re
import signal
import subprocess
import sys
import threading
import time
import types
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from cosim.config import TIME_MAX_S, ScenarioSection, key_parts
from cosim.errors import ConfigError, Terminated
from cosim.stats import holm, mean_ci
from cosim.status import write_status

#: the most seeds a sweep runs per grid point: a 95 % interval's half-width shrinks as 1/sqrt(n),
#: to 1 % of one run's spread at 10 000 (more buys nothing and only fills memory with cells)
MAX_SEEDS = 10_000
_seed_field = {f.name: f for f in dataclasses.fields(ScenarioSection)}["seed"]

#: a sweep name is a folder name under runs/sweeps: no separators, no "..", no leading dot
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

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


_SWEEP_KEYS = {"name", "scenarios", "seeds", "end_s", "baseline"}


def _first_repeat(values: list) -> Any:
    """The first value equal to an earlier one (1 and 1.0 are equal), else None."""
    seen = set()
    for v in values:
        key = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else json.dumps(v, sort_keys=True)
        if key in seen:
            return v
        seen.add(key)
    return None


def load(path: str | Path) -> Sweep:
    """Read and check a sweep file; bad input is a one-line :class:`ConfigError`."""
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
    unknown = set(data) - {"sweep", "grid", "set"}
    if unknown:
        raise ConfigError(f"{path}: unknown table '[{sorted(unknown)[0]}]' (known: sweep, grid, set)")
    sw = data.get("sweep")
    if not isinstance(sw, dict):
        raise ConfigError(f"{path}: missing [sweep] table (name, scenarios, seeds)")
    bad = set(sw) - _SWEEP_KEYS
    if bad:
        raise ConfigError(f"{path}: unknown key 'sweep.{sorted(bad)[0]}' (known: {', '.join(sorted(_SWEEP_KEYS))})")
    name = sw.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"{path}: sweep.name {name!r}: letters, digits, '.', '_' and '-' only (it names a folder "
                          "under runs/sweeps)")
    scen = sw.get("scenarios")
    if not isinstance(scen, list) or not scen or not all(isinstance(s, (str, dict)) for s in scen):
        raise ConfigError(f"{path}: sweep.scenarios must be a non-empty list of scenario files (.toml or .sumocfg), "
                          "or tables {{ file = \"...\", name = \"...\", set = {{ \"KEY\" = value }} }}")
    scenarios, sets, labels, seen = [], [], [], set()
    for i, s in enumerate(scen):
        at = f"{path}: sweep.scenarios[{i}]"
        own: dict = {}
        label = ""
        if isinstance(s, dict):
            bad = set(s) - {"file", "name", "set"}
            if bad or not isinstance(s.get("file"), str):
                raise ConfigError(f"{at}: a scenario table takes file (required), name and set"
                                  + (f" (unknown key '{sorted(bad)[0]}')" if bad else ""))
            own, label = s.get("set", {}), s.get("name", "")
            if not isinstance(own, dict):
                raise ConfigError(f"{at}.set must be a table of 'TABLE.KEY' = value")
            if not isinstance(label, str) or (label and (not _NAME.fullmatch(label) or ".." in label)):
                raise ConfigError(f"{at}.name {label!r}: letters, digits, '.', '_' and '-' only")
            for k in own:
                _check_key(path, f"sweep.scenarios[{i}].set.\"{k}\"", k)
                _not_the_seed(path, f"sweep.scenarios[{i}].set.\"{k}\"", k)
            s = s["file"]
        p = Path(s) if Path(s).is_absolute() else (path.parent / s).resolve()
        if not p.is_file():
            raise ConfigError(f"{path}: sweep.scenarios: no such file {s!r} (paths are relative to the sweep file)")
        key = (p, json.dumps(own, sort_keys=True, default=str))
        if key in seen:
            raise ConfigError(f"{path}: sweep.scenarios: {s!r} is listed twice (its runs would count twice)")
        seen.add(key)
        shown = label or p.stem  # not `name`: that is the sweep's
        if shown in [lb or q.stem for lb, q in zip(labels, scenarios)]:
            raise ConfigError(f"{at}: two scenario entries are both called '{shown}' in the results: give each a "
                              "name (scenarios = [{ file = ..., name = \"...\", set = {...} }])")
        scenarios.append(p)
        sets.append(own)
        labels.append(label)
    seeds = sw.get("seeds", [42])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if not 1 <= seeds <= MAX_SEEDS:
            raise ConfigError(f"{path}: sweep.seeds = {seeds}: a count must be >= 1 and <= {MAX_SEEDS} ({MAX_SEEDS} "
                              "runs per grid point narrow an interval to 1 % of one run's spread)")
        seeds = list(range(1, seeds + 1))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds):
        raise ConfigError(f"{path}: sweep.seeds must be a list of integers (or a count N for 1..N)")
    if len(seeds) > MAX_SEEDS:
        raise ConfigError(f"{path}: sweep.seeds lists {len(seeds)} seeds; at most {MAX_SEEDS}")
    seed_lo, seed_hi = (_seed_field.metadata[k] for k in ("lo", "hi"))
    for x in seeds:
        if not seed_lo <= x <= seed_hi:
            raise ConfigError(f"{path}: sweep.seeds: {x} is out of range (scenario.seed must be >= {seed_lo} and "
                              f"<= {seed_hi})")
    if _first_repeat(seeds) is not None:
        raise ConfigError(f"{path}: sweep.seeds: seed {_first_repeat(seeds)} is listed twice (its runs would count "
                          "twice in the confidence intervals)")
    end = sw.get("end_s")
    if end is not None and (isinstance(end, bool) or not isinstance(end, (int, float)) or not 0 < end <= TIME_MAX_S):
        raise ConfigError(f"{path}: sweep.end_s must be a positive number of seconds, at most {TIME_MAX_S:g} "
                          f"(as scenario.end_s), got {end!r}")
    grid = data.get("grid", {})
    if not isinstance(grid, dict):
        raise ConfigError(f"{path}: [grid] must be a table of 'TABLE.KEY' = [values...], got {grid!r}")
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{path}: grid.\"{k}\" must be a non-empty list of values")
        _check_key(path, f"grid.\"{k}\"", k)
        _not_the_seed(path, f"grid.\"{k}\"", k)
        if _first_repeat(v) is not None:
            raise ConfigError(f"{path}: grid.\"{k}\": value {_first_repeat(v)!r} is listed twice (its runs would "
                              "count twice)")
    fixed = data.get("set", {})
    if not isinstance(fixed, dict):
        raise ConfigError(f"{path}: [set] must be a table of 'TABLE.KEY' = value, got {fixed!r}")
    for k in fixed:
        _check_key(path, f"set.\"{k}\"", k)
        _not_the_seed(path, f"set.\"{k}\"", k)
        if k in grid:
            raise ConfigError(f"{path}: set.\"{k}\" is also a [grid] axis")
    for i, own in enumerate(sets):
        for k in own:
            if k in grid:
                raise ConfigError(f"{path}: sweep.scenarios[{i}].set.\"{k}\" is also a [grid] axis")
    baseline = sw.get("baseline", {})
    if not isinstance(baseline, dict) or not all(isinstance(v, str) for v in baseline.values()):
        raise ConfigError(f"{path}: sweep.baseline must be a table layer = \"policy\", e.g. {{ dvit = \"vidi\" }}")
    return Sweep(name, path, scenarios, seeds, grid, fixed, None if end is None else float(end), baseline, sets,
                 labels)


def check_cells(sw: Sweep) -> None:
    """Every cell's configuration validated as a scenario file is (keys, ranges, layers,
    policies) before anything runs; the error names the sweep file and the value at fault."""
    from cosim import config as cfgmod
    from cosim.layers.base import validate_layers

    checked: set = set()
    runs: dict[str, set] = {}  # layer -> the policies some cell runs
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
            for layer in validate_layers(cfg, label=f"{sw.file}: {Path(scen).name} with {label}"):
                runs.setdefault(layer.name, set()).update(layer.policies)
        checked.clear()
    for layer, policy in sw.baseline.items():  # a typo would leave paired.csv silently empty
        if layer not in runs:
            raise ConfigError(f"{sw.file}: sweep.baseline.{layer}: no cell runs layer '{layer}' "
                              f"(layers run: {', '.join(sorted(runs)) or 'none'})")
        if policy not in runs[layer]:
            raise ConfigError(f"{sw.file}: sweep.baseline.{layer}: '{policy}' is not among the policies run "
                              f"({', '.join(sorted(runs[layer]))})")


def _not_the_seed(path: Path, where: str, key: str) -> None:
    """The seed of a cell is sweep.seeds': as a grid axis or a [set] key it would be overridden
    by them (every cell ran seed 42 and was labelled by the grid value)."""
    if key == "scenario.seed":
        raise ConfigError(f"{path}: {where}: a sweep sets each cell's seed from sweep.seeds; use "
                          "seeds = [1, 2, ...] (or a count N) in [sweep] instead")


def _check_key(path: Path, where: str, key: str) -> None:
    if key_parts(key) is None:
        raise ConfigError(f"{path}: {where}: expected TABLE.KEY, layers.NAME.KEY or layers.NAME.options.POLICY.KEY")


# -- one cell ---------------------------------------------------------------------------------
def run_cell(cell: dict, out: Path) -> dict:
    """Run one cell in this process (the worker side): load, override, run. Writes cell.json,
    also when the worker is stopped (SIGTERM, Ctrl-C: status ``terminated``/``interrupted``,
    the run's tables closed and readable), so that a resumed sweep runs it again."""
    from cosim import config as cfgmod
    from cosim.errors import CosimError
    from cosim.runner import run

    out.mkdir(parents=True, exist_ok=True)
    record = {**cell, "status": "running", "error": None, "started": time.time()}
    t0 = time.perf_counter()
    stopped: BaseException | None = None
    try:
        cfg = cfgmod.apply_overrides(cfgmod.load_any(cell["scenario"]), cell["overrides"], where=f"cell {cell['id']}")
        run(cfg, out, progress=False, overwrite=True)
        record["status"] = "completed"
    except CosimError as exc:
        record.update(status="failed", error=str(exc))
    except KeyboardInterrupt as exc:  # Terminated (SIGTERM) included
        stopped = exc
        done = (_read_json(out / "summary.json") or {}).get("status") == "completed"  # stopped while closing
        record.update(status="completed" if done else "terminated" if isinstance(exc, Terminated) else "interrupted",
                      error=None if done else "stopped by a signal; runs again when the sweep is resumed")
    except Exception as exc:  # keep the sweep going; the error is in the record
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    record["wall_s"] = time.perf_counter() - t0
    _write_record(out, record)
    if stopped is not None:
        raise stopped
    return record


def _write_record(out: Path, record: dict) -> None:
    from cosim.recorder import dumps_json, write_atomic

    write_atomic(out / "cell.json", (dumps_json(record, indent=1) + "\n").encode())


def _read_json(path: Path) -> dict | None:
    """A JSON object from ``path``; None if missing, unreadable or not an object (a corrupt file)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _subprocess_cell(cell: dict, out: Path, procs: set, lock: threading.Lock, cores: int = 1) -> dict:
    """Run a cell in a fresh Python process (one SUMO per process); returns its record.
    ``cores``: the run's share of the machine (what its ``scenario.jobs = 0``, auto, may use)."""
    out.mkdir(parents=True, exist_ok=True)
    spec = out / "cell-spec.json"
    spec.write_text(json.dumps(cell, default=str))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "COSIM_CPUS": str(cores)}
    from cosim.sources.sumo import CHILD_DIES_WITH_PARENT

    proc = subprocess.Popen([sys.executable, "-m", "cosim.sweep", str(spec), str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=CHILD_DIES_WITH_PARENT)
    with lock:
        procs.add(proc)
    _, err = proc.communicate()
    with lock:
        procs.discard(proc)
    rec = _read_json(out / "cell.json")
    if rec is not None and rec.get("status") in ("completed", "failed", "terminated", "interrupted"):
        return rec
    last = (err or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
    rec = {**cell, "status": "failed", "error": f"worker died ({proc.returncode}): {last[0]}"}
    _write_record(out, rec)
    return rec


def finished(out: Path) -> dict | None:
    """The cell's record if it finished: cell.json and summary.json both readable and
    ``completed``; a corrupt or partial one means the cell runs again."""
    rec = _read_json(out / "cell.json")
    if rec is None or rec.get("status") != "completed":
        return None
    summary = _read_json(out / "summary.json")
    return rec if summary is not None and summary.get("status") == "completed" else None


# -- engines ----------------------------------------------------------------------------------
class Progress:
    """cells done / failed / running / total and an ETA, on one line (stderr)."""

    def __init__(self, total: int, skipped: int, enabled: bool):
        self.total, self.skipped, self.enabled = total, skipped, enabled
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
        write_status(f"sweep: {self.skipped + self.done}/{self.total} cells done ({self.skipped} earlier), "
                     f"{self.failed} failed, {self.running} running{eta}  [{_hms(el)}]", final)


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run_local(todo: list[tuple[dict, Path]], jobs: int, progress: Progress) -> list[dict]:
    procs: set = set()
    lock = threading.Lock()
    out = []
    pool = ThreadPoolExecutor(max_workers=jobs)
    from cosim.layers.shards import available_cores

    cores = max(1, available_cores() // max(1, min(jobs, len(todo))))  # a run's share, for scenario.jobs = 0 (auto)
    try:
        pending = set()
        it = iter(todo)
        for cell, d in itertools.islice(it, jobs):
            pending.add(pool.submit(_subprocess_cell, cell, d, procs, lock, cores))
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
                pending.add(pool.submit(_subprocess_cell, cell, d, procs, lock, cores))
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
    with lock:
        running = list(procs)
    for p in running:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in running:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_ray(todo: list[tuple[dict, Path]], address: str | None, progress: Progress, jobs: int | None) -> list[dict]:
    """Each cell as a Ray task (1 CPU) running the same worker command as the local engine;
    the results folder must be on a filesystem every node sees."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'cosim[ray]'") from None
    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False}
        if address is None and jobs:
            kw["num_cpus"] = jobs
        ray.init(**kw)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(_ray_cell)
        refs = {remote.remote(cell, str(d)): cell for cell, d in todo}
        progress.running = min(len(refs), int(ray.available_resources().get("CPU", 1)) or 1)
        progress.show()
        out = []
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            rec = ray.get(done[0])
            out.append(rec)
            progress.done += rec["status"] == "completed"
            progress.failed += rec["status"] != "completed"
            progress.running = min(len(pending), progress.running)
            progress.show()
        return out
    finally:
        if started:
            ray.shutdown()


def _ray_cell(cell: dict, out: str) -> dict:
    return _subprocess_cell(cell, Path(out), set(), threading.Lock())


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
    todo, skipped = [], 0
    for c in cells:
        d = out / "cells" / c.cell_id
        if finished(d):
            skipped += 1
        else:
            todo.append((c.to_json(), d))
    jobs = jobs or os.cpu_count() or 1
    prog = Progress(len(cells), skipped, progress)
    try:
        if engine == "local":
            run_local(todo, jobs, prog)
        else:
            run_ray(todo, address, prog, jobs if address is None else None)
    except KeyboardInterrupt:  # the workers have stopped: merge what finished, then stop
        merge(sw, out, cells)
        raise
    prog.show(final=True)
    return merge(sw, out, cells)


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
        rec = _read_json(d / "cell.json") or {}
        st = rec.get("status", "missing")
        summary = _read_json(d / "summary.json") if st == "completed" else None
        if st == "completed" and summary is None:
            st, rec = "failed", {**rec, "error": "summary.json missing or corrupt (re-run the sweep to run it again)"}
        status.append({**base, "status": st, "error": rec.get("error"), "wall_s": rec.get("wall_s")})
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
                row = {**base, "layer": layer, "policy": policy}
                _flatten("", values, row)
                rows.append(row)
    res = pd.DataFrame(rows)
    tmp = out / ".results.parquet.tmp"
    res.to_parquet(tmp, index=False)
    tmp.replace(out / "results.parquet")  # a reader never sees half a table
    st = pd.DataFrame(status)
    st.to_csv(out / "cells.csv", index=False)
    summary_csv(res, list(sw.grid), out / "summary.csv")
    paired_differences(res, list(sw.grid), sw.baseline).to_csv(out / "paired.csv", index=False)
    n_ok = int((st["status"] == "completed").sum()) if len(st) else 0
    return {"cells": len(cells), "completed": n_ok, "failed": int((st["status"] == "failed").sum()) if len(st) else 0,
            "out": str(out)}


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


def summary_csv(res, grid_keys: list[str], path: Path):  # noqa: ANN001, ANN201
    """Mean, 95 % CI half-width and n (seeds with a finite value) over seeds of every numeric
    column, per group."""
    import pandas as pd

    if res.empty:
        pd.DataFrame().to_csv(path, index=False)
        return pd.DataFrame()
    keys = ["scenario", *grid_keys, "layer", "policy"]
    skip = set(keys) | {"cell", "seed"}
    metrics = [c for c in res.columns if c not in skip and pd.api.types.is_numeric_dtype(res[c])]
    out = []
    for group, g in res.groupby(keys, dropna=False, sort=False):
        row = dict(zip(keys, group if isinstance(group, tuple) else (group,)))
        row["n"] = len(g)
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
    both policies ran.

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
    skip = set(keys) | {"cell", "seed", "policy"}
    metrics = [c for c in res.columns if c not in skip and not c.startswith("vs_baseline.")
               and pd.api.types.is_numeric_dtype(res[c])]
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


def _worker_main(argv: list[str]) -> int:
    """``python -m cosim.sweep CELL_SPEC.json OUT_DIR``: run one cell (what the engines start)."""
    from cosim.errors import raise_terminated

    signal.signal(signal.SIGTERM, raise_terminated)  # the sweep stops its workers with SIGTERM
    try:
        cell = json.loads(Path(argv[0]).read_text())
        rec = run_cell(cell, Path(argv[1]))
    except Terminated:
        return 143
    except KeyboardInterrupt:
        return 130
    return 0 if rec["status"] == "completed" else 1


class _CallableModule(types.ModuleType):
    """``cosim.sweep(file, ...)`` is :func:`cosim.api.sweep` — the Python API's name — while
    ``cosim.sweep`` stays this module (``cosim.sweep.load``, ``from cosim import sweep``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from cosim.api import sweep

        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


if __name__ == "__main__":
    raise SystemExit(_worker_main(sys.argv[1:]))
