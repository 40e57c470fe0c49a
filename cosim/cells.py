"""One cell of a sweep: what both sweep engines start — the local one (threads on this machine,
:func:`cosim.sweep.run_local`) and Ray's (:mod:`cosim.cluster`) — and how its record is kept.

A cell runs in a fresh Python process, ``python -m cosim.sweep CELL_SPEC.json OUT_DIR``
(:func:`run_in_process`; the process is started by :mod:`cosim.engine.processes`), which runs
:func:`run_cell`; its ``cell.json`` says how it ended, and :func:`finished` whether a resumed
sweep runs it again.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

from cosim.errors import Terminated
from cosim.results import summary_of


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
        if cell.get("plugins"):  # shipped by a cluster's driver (cosim.cluster): imported by name first
            from cosim.registry import load_plugins

            load_plugins(cell["plugins"], where="the plugins the sweep's driver shipped")
        cfg = cfgmod.apply_overrides(cfgmod.load_any(cell["scenario"]), cell["overrides"], where=f"cell {cell['id']}")
        run(cfg, out, progress=False, overwrite=True)
        record["status"] = "completed"
    except CosimError as exc:
        record.update(status="failed", error=str(exc))
    except KeyboardInterrupt as exc:  # Terminated (SIGTERM) included
        stopped = exc
        done = (summary_of(out) or {}).get("status") == "completed"  # stopped while closing
        record.update(status="completed" if done else "terminated" if isinstance(exc, Terminated) else "interrupted",
                      error=None if done else "stopped by a signal; runs again when the sweep is resumed")
    except Exception as exc:  # keep the sweep going; the error is in the record
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    record["wall_s"] = time.perf_counter() - t0
    write_record(out, record)
    if stopped is not None:
        raise stopped
    return record


def write_record(out: Path, record: dict) -> None:
    from cosim.recorder import dumps_json, write_atomic

    write_atomic(out / "cell.json", (dumps_json(record, indent=1) + "\n").encode())


def read_json(path: Path) -> dict | None:
    """A JSON object from ``path``; None if missing, unreadable or not an object (a corrupt file)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_in_process(cell: dict, out: Path, procs: set, lock: threading.Lock, cores: int = 1) -> dict:
    """Run a cell in a fresh Python process (``python -m cosim.sweep CELL_SPEC.json OUT_DIR``, one
    SUMO per process, dying with this one); returns its record. ``procs``: the running processes,
    under ``lock`` (so that a stopped sweep can stop them).
    ``cores``: the run's share of the machine (what its ``scenario.jobs = 0``, auto, may use)."""
    out.mkdir(parents=True, exist_ok=True)
    spec = out / "cell-spec.json"
    spec.write_text(json.dumps(cell, default=str))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "COSIM_CPUS": str(cores)}
    from cosim.engine import processes

    proc = processes.python("cosim.sweep", str(spec), str(out), die_with_parent=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    with lock:
        procs.add(proc)
    _, err = proc.communicate()
    with lock:
        procs.discard(proc)
    rec = read_json(out / "cell.json")
    if rec is not None and rec.get("status") in ("completed", "failed", "terminated", "interrupted"):
        return rec
    last = (err or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
    rec = {**cell, "status": "failed", "error": f"worker died ({proc.returncode}): {last[0]}"}
    write_record(out, rec)
    return rec


def finished(out: Path) -> dict | None:
    """The cell's record if it finished: cell.json and summary.json both readable and
    ``completed``; a corrupt or partial one means the cell runs again."""
    rec = read_json(out / "cell.json")
    if rec is None or rec.get("status") != "completed":
        return None
    summary = summary_of(out)
    return rec if summary is not None and summary.get("status") == "completed" else None
