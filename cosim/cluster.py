"""Sweeps on a Ray cluster that shares nothing with the driver but the network (issue 30).

``cosim sweep FILE --engine ray [--address HOST:PORT]`` runs each cell as a Ray task. Nothing on a
node is assumed to exist on the driver or the other way round: what a cell needs travels with the
job, and what it writes travels back.

- **Inputs.** Every scenario file the sweep names, its SUMO configuration, the files that
  configuration's input options name (``net-file``, ``route-files``, ``additional-files``,
  ``weight-files``, ``load-state``) and the ``.py`` plugin files the scenario names are copied into
  one staging folder, each at its place relative to their common parent folder, which Ray ships
  as the job's ``working_dir`` (uploaded once, unpacked once per node). Relative paths inside
  the files keep working; absolute ones must exist on every node (the docs say so).
- **Plugins.** Every plugin module the driver loaded (through an entry point, or named by a
  scenario's ``plugins``) travels too: a package as one of Ray's ``py_modules``, a single-file
  module in the working_dir. The cell imports them by name before it loads its scenario, so a
  node needs only ``pip install 'cosim[ray]'`` — the driver's version, which :func:`check_nodes`
  compares on every node and reports in one line where it differs.
- **Results.** A cell runs the local engine's worker command into a temporary folder on its node
  and returns that folder as one tar archive (bytes through Ray's object store); the driver
  unpacks it into ``OUT/cells/<id>/`` — a folder appears whole or not at all, and no member of an
  archive may leave it. The driver fetches one archive at a time, so its memory does not grow
  with the number of cells.
- **Failures.** A node that dies takes its running cells with it; Ray starts them again on
  another node (:data:`RETRIES`). Only a finished attempt returns results, so no cell is merged
  twice; ``attempts`` and ``node`` in ``cells.csv`` say how often each cell started (Ray's attempt
  number of the finished attempt) and where it finished. A cell whose every attempt failed
  is ``failed`` with Ray's reason; stopping the driver cancels the cluster's cells, and running
  the same command again resumes (finished cells are kept).
- **Cores.** A cell asks Ray for the processes its run uses: ``scenario.jobs`` (``auto`` resolved
  on the driver for the largest node, and the cell then runs with exactly that many).
"""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosim.errors import ConfigError

#: how often Ray starts a cell again after its node or worker process died
RETRIES = 3
#: the SUMO options whose values are input files a cell's run reads (long and short names)
INPUT_OPTIONS = frozenset({"net-file", "n", "route-files", "r", "additional-files", "additional", "a",
                           "weight-files", "w", "load-state"})
#: Ray refuses a working_dir package larger than this (its own limit); we say so first, in one line
SHIP_LIMIT_BYTES = 500 * 2**20


# -- what travels to the nodes ------------------------------------------------------------------
@dataclass
class Shipment:
    """The job's inputs: ``stage`` (a folder cosim made, removed by :meth:`close`) holds every
    input file at its path relative to ``root``; ``py_modules`` are plugin packages; ``plugins``
    the plugin module names a cell imports first."""

    stage: Path
    root: Path
    py_modules: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)

    def relative(self, path: str | Path) -> str:
        return Path(path).resolve().relative_to(self.root).as_posix()

    def runtime_env(self) -> dict:
        env: dict[str, Any] = {"working_dir": str(self.stage)}
        if self.py_modules:
            env["py_modules"] = list(self.py_modules)
        return env

    def close(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)


def cell_config(cell: dict):  # noqa: ANN201 - cosim.config.Config
    """The configuration a cell runs, as the worker builds it (scenario file + overrides)."""
    from cosim import config as cfgmod

    return cfgmod.apply_overrides(cfgmod.load_any(cell["scenario"]), cell["overrides"], where=f"cell {cell['id']}")


def inputs_of(cfg: Any) -> list[Path]:
    """The files a run of ``cfg`` reads: the scenario file, its SUMO configuration and the input
    files that configuration names, and the scenario's ``.py`` plugins."""
    from cosim.sumo_outputs import _resolve, _split_files, sumocfg_options

    files = [Path(cfg.source_file)] if cfg.source_file else []
    sumocfg = Path(cfg.scenario.sumocfg)
    files.append(sumocfg)
    if sumocfg.is_file():
        for name, value in sumocfg_options(sumocfg).items():
            if name in INPUT_OPTIONS:
                files += [_resolve(v, sumocfg.parent) for v in _split_files(value)]
    files += [Path(p) for p in cfg.scenario.plugins if isinstance(p, str) and p.endswith(".py")]
    return [f.resolve() for f in files]


def _plugin_modules() -> tuple[list[str], list[Path], list[Path]]:
    """(module names, package folders, single-file modules) of the plugins this process loaded
    by name (entry points, module names in ``scenario.plugins``); ``.py`` files travel as inputs."""
    from cosim import registry

    registry.load_entry_points()
    names, packages, singles = [], [], []
    for entry in registry.PLUGINS:
        if entry.endswith(".py"):
            continue
        names.append(entry)
        top = importlib.import_module(entry.split(".")[0])
        where = Path(getattr(top, "__file__", "") or "")
        if hasattr(top, "__path__"):
            folder = Path(next(iter(top.__path__)))
            if folder not in packages:
                packages.append(folder)
        elif where.is_file() and where not in singles:
            singles.append(where)
    return names, packages, singles


def config_key(cell: dict) -> str:
    """What makes a cell's configuration (scenario and overrides), seeds aside: cells sharing it
    read the same inputs and ask for the same cores."""
    return json.dumps([cell["scenario"], {k: v for k, v in cell["overrides"].items() if k != "scenario.seed"}],
                      sort_keys=True, default=str)


def configs(cells: list[dict]) -> dict[str, Any]:
    """:func:`config_key` -> the configuration, built once per key."""
    out: dict[str, Any] = {}
    for cell in cells:
        key = config_key(cell)
        if key not in out:
            out[key] = cell_config(cell)
    return out


def ship(cfgs: Any) -> Shipment:
    """Stage the inputs of the configurations ``cfgs`` (an iterable of them)."""
    files = sorted({f for cfg in cfgs for f in inputs_of(cfg)})
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise ConfigError(f"--engine ray: {missing[0]}: an input of the sweep's cells does not exist")
    root = Path(os.path.commonpath([str(f.parent) for f in files])) if files else Path("/")
    names, packages, singles = _plugin_modules()
    stage = Path(tempfile.mkdtemp(prefix="cosim-ray-inputs-"))
    total = 0
    try:
        for f in files:
            dest = stage / f.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
            total += f.stat().st_size
        for f in singles:
            if (stage / f.name).exists():
                raise ConfigError(f"--engine ray: plugin module {f} has the name of an input file ({f.name})")
            shutil.copyfile(f, stage / f.name)
            total += f.stat().st_size
        if total > SHIP_LIMIT_BYTES:
            raise ConfigError(f"--engine ray: the sweep's inputs are {total / 2**20:.0f} MiB, more than Ray ships "
                              f"({SHIP_LIMIT_BYTES // 2**20} MiB): put the network and routes on every node and "
                              "name them by absolute path")
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return Shipment(stage, root, [str(p) for p in packages], names)


# -- the node's side ----------------------------------------------------------------------------
def versions() -> dict[str, str]:
    import cosim

    return {"cosim": cosim.__version__, "python": f"{sys.version_info[0]}.{sys.version_info[1]}"}


def attempt_number() -> int | None:
    """Which start of this Ray task this is (1 = the first; Ray runs it again after its node or
    worker process died), or None where this Ray does not say."""
    try:
        import ray

        return int(ray._private.worker.global_worker.core_worker.get_current_task_attempt_number()) + 1
    except Exception:  # noqa: BLE001 - a private call of Ray's: the count is a report, never a failure
        return None


def run_cell_on_node(cell: dict, cpus: int) -> dict:
    """A Ray task: run the cell (the local engine's worker, on this node's copy of the inputs)
    into a temporary folder and return ``{"record", "archive", "attempt", "node", "inputs_dir",
    "out_dir"}`` (the last two: this node's folders, which the driver names as its own)."""
    import ray

    from cosim.cells import run_in_process

    attempt = attempt_number()
    node = ray.util.get_node_ip_address()
    here = {**cell, "scenario": str(Path.cwd() / cell["scenario"])}  # the working_dir is this node's copy
    with tempfile.TemporaryDirectory(prefix="cosim-cell-") as tmp:
        out = Path(tmp) / "cell"
        record = run_in_process(here, out, set(), threading.Lock(), cpus)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for path in sorted(out.rglob("*")):
                tar.add(path, arcname=path.relative_to(out).as_posix(), recursive=False)
    return {"record": record, "archive": buf.getvalue(), "attempt": attempt, "node": node,
            "inputs_dir": str(Path.cwd()), "out_dir": str(out)}


# -- the driver's side --------------------------------------------------------------------------
def unpack(archive: bytes, dest: Path) -> None:
    """Put a cell's folder in place whole: extract next to ``dest``, then swap it in (what was
    there — an earlier attempt's leftovers, written by cosim — goes). No member may leave it."""
    incoming = dest.parent / f".{dest.name}.incoming-{uuid.uuid4().hex[:8]}"
    incoming.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
            tar.extractall(incoming, filter="data")  # refuses absolute paths, "..", links out of the folder
        if dest.exists():
            old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
            dest.rename(old)
            incoming.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            incoming.rename(dest)
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise


def relocate(run_dir: Path, moves: dict[str, str]) -> None:
    """The paths a run wrote under its node's folders, in its ``summary.json`` and
    ``config.toml``, named as the driver's (``moves``: node folder -> driver folder; the copy
    of the inputs -> their originals, the temporary results folder -> ``run_dir``): the folder
    reads as if the cell had run on the driver."""
    from cosim.recorder import dumps_json, write_atomic
    from cosim.results import summary_of

    def fix(v: Any) -> Any:
        if isinstance(v, str):
            for node, here in moves.items():
                if v == node or v.startswith(node + "/"):
                    return here + v[len(node):]
            return v
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v

    summary = summary_of(run_dir)  # the one reader; None: no summary, or a broken one (left as it is)
    if summary is not None:
        write_atomic(run_dir / "summary.json", (dumps_json(fix(summary)) + "\n").encode())
    config = run_dir / "config.toml"
    if config.is_file():  # paths are TOML strings: the same characters as in JSON on POSIX
        text = config.read_text()
        for node, here in moves.items():
            text = text.replace(json.dumps(node)[1:-1], json.dumps(here)[1:-1])
        write_atomic(config, text.encode())


def check_nodes(ray: Any) -> list[str]:
    """One line per node whose cosim or Python differs from the driver's (empty: all agree)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(versions)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
            for n in nodes]
    mine = versions()
    lines = []
    for node, theirs in zip(nodes, ray.get(refs, timeout=300)):
        if theirs != mine:
            show = lambda v: ", ".join(f"{k} {v[k]}" for k in sorted(v))  # noqa: E731
            lines.append(f"cosim sweep: node {node.get('NodeManagerAddress', node['NodeID'])} has {show(theirs)}, "
                         f"the driver {show(mine)}: its cells may differ (install the driver's versions there)")
    return lines


def _cpus(cfg: Any, largest: int) -> int:
    """The processes a cell's run uses: ``scenario.jobs``, ``auto`` resolved for ``largest`` cores."""
    jobs = cfg.scenario.jobs
    if jobs >= 1:
        return jobs
    from cosim.layers.base import validate_layers
    from cosim.engine.workers import auto_jobs

    return auto_jobs(validate_layers(cfg), max(1, largest))


def run(todo: list[tuple[dict, Path]], address: str | None, progress: Any, jobs: int | None) -> list[dict]:
    """Run the cells ``todo`` ((cell, its folder on the driver)) on Ray: the one at ``address``,
    else a local one of ``jobs`` CPUs. Returns the cells' records as the local engine does."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'cosim[ray]'") from None
    from cosim.cells import write_record

    if not todo:
        return []
    cfgs = configs([cell for cell, _ in todo])
    shipment = ship(cfgs.values())
    started = False
    try:
        env = shipment.runtime_env()
        if not ray.is_initialized():
            kw: dict[str, Any] = {"address": address or "local", "include_dashboard": False, "log_to_driver": False,
                                  "runtime_env": env, "logging_level": "WARNING"}
            if address is None and jobs:
                kw["num_cpus"] = jobs
            ray.init(**kw)
            started = True
            options: dict[str, Any] = {}
        else:  # the caller's own Ray session: the inputs go with each task
            options = {"runtime_env": env}
        for line in check_nodes(ray):
            print(line, file=sys.stderr)
        largest = int(max((n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1))
        task = ray.remote(run_cell_on_node)
        pending: dict[Any, tuple[dict, Path]] = {}
        cpus_of = {key: _cpus(cfg, largest) for key, cfg in cfgs.items()}
        for cell, d in todo:
            cpus = cpus_of[config_key(cell)]
            shipped = {**cell, "scenario": shipment.relative(cell["scenario"]), "plugins": shipment.plugins,
                       "overrides": {**cell["overrides"], "scenario.jobs": cpus}}
            ref = task.options(num_cpus=cpus, max_retries=RETRIES, retry_exceptions=False, **options).remote(
                shipped, cpus)
            pending[ref] = (cell, d)
        progress.running = min(len(pending), int(ray.cluster_resources().get("CPU", 1)) or 1)
        progress.show()
        out = []
        refs = list(pending)
        try:
            while refs:
                done, refs = ray.wait(refs, num_returns=1)
                cell, d = pending.pop(done[0])
                try:
                    res = ray.get(done[0])
                except ray.exceptions.RayError as exc:  # every attempt failed: the node's or Ray's reason
                    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    record = {**cell, "status": "failed", "error": f"ray: {type(exc).__name__}: {reason}"}
                    d.mkdir(parents=True, exist_ok=True)
                    write_record(d, record)
                else:
                    unpack(res["archive"], d)
                    relocate(d, {res["inputs_dir"]: str(shipment.root), res["out_dir"]: str(d.resolve())})
                    record = {**res["record"], **{k: cell[k] for k in ("scenario", "overrides")},
                              "attempts": res["attempt"], "node": res["node"]}
                    record.pop("plugins", None)
                    write_record(d, record)
                    del res
                out.append(record)
                progress.done += record["status"] == "completed"
                progress.failed += record["status"] != "completed"
                progress.running = min(len(refs), progress.running)
                progress.show()
        except KeyboardInterrupt:  # stop the cluster's cells too: a resumed sweep runs them again
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
        return out
    finally:
        if started:
            ray.shutdown()
        shipment.close()
