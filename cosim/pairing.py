"""Task-level pairing: every policy of a layer against the layer's baseline (or any two policies,
:func:`latency_pairs`), on the same tasks.

Every policy of a layer serves the same requests in one run, and a task keeps its request's id
across policies (``task`` in the layer's task table). So two policies are compared task by task:

* ``latency_diff_s`` — the mean over the **common tasks** (those both the policy and the baseline
  completed: all their work done, ``latency_s`` finite) of ``latency(policy) - latency(baseline)``.
  A policy that fails its hard tasks no longer looks faster: the hard tasks drop out of both sides.
* ``success_diff`` — the success rate of the policy minus the baseline's over the tasks **both
  were given**, a task censored for either (still running when the run ended) left out.

Each comes with the half-width of its Student-t 95 % interval *over the tasks of this run*
(``latency_diff_ci95_s``, ``success_diff_ci95``). The tasks of one run share its traffic, so that
interval understates how much the difference varies with the traffic: a claim rests on seeds
(a sweep's ``paired.csv``, :mod:`cosim.stats`).

The baseline is the layer's first configured policy (the paper's proposal in the shipped
scenarios). A layer opts in by naming its task table (:attr:`cosim.layers.base.Layer.task_table`:
one row per task and policy with at least ``task``, ``policy``, ``latency_s`` and ``outcome`` —
``done``, ``failed`` or ``censored``, :mod:`cosim.layers.kernel`). The pairing is computed from
that table once the run's tables are closed, so it covers policies that ran in other processes
(``--jobs 3``) too; it reads four columns (:func:`cosim.results.read_columns`: numpy arrays, no
pandas, which a run never imports) and costs a few milliseconds per thousand rows.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cosim.stats import mean_ci

#: the columns of a task table the pairing reads
COLUMNS = ["task", "policy", "latency_s", "outcome"]


def vs_baseline(table, policies: list[str]) -> dict[str, dict]:  # noqa: ANN001 - a DataFrame or {column: array}
    """``policy -> {"baseline", "common_tasks", "latency_diff_s", "latency_diff_ci95_s", "given_tasks",
    "success_diff", "success_diff_ci95"}`` for every policy in ``policies`` that has rows (the baseline too: 0 differences over its own
    tasks), against ``policies[0]``. ``given_tasks``: the tasks both were given and neither had
    censored, over which ``success_diff`` is taken. A difference over no task is None.
    ``table``: the task table's :data:`COLUMNS`, as a pandas DataFrame or a mapping of column
    name to array (:func:`cosim.results.read_columns`)."""
    if table is None or not policies:
        return {}
    cols = {c: np.asarray(table[c]) for c in COLUMNS} if len(table) else {}
    if not cols or not len(cols["task"]):
        return {}
    base = policies[0]
    policy = cols["policy"]
    rows = {name: np.flatnonzero(policy == name) for name in policies}  # each policy's rows, in table order
    if not len(rows[base]):
        return {}
    b = _index(cols, rows[base], base)
    out = {}
    for name in policies:
        if not len(rows[name]):
            continue
        lp, lb, op, ob = _common(_index(cols, rows[name], name), b)
        both = np.isfinite(lp) & np.isfinite(lb)
        given = (op != "censored") & (ob != "censored")
        lat = mean_ci(lp[both] - lb[both])
        succ = mean_ci((op[given] == "done").astype(float) - (ob[given] == "done"))
        out[name] = {
            "baseline": base,
            "common_tasks": lat["n"],
            "latency_diff_s": _num(lat["mean"]),
            "latency_diff_ci95_s": _num(lat["ci95"]),
            "given_tasks": succ["n"],
            "success_diff": _num(succ["mean"]),
            "success_diff_ci95": _num(succ["ci95"]),
        }
    return out


def latency_pairs(table, policy: str, baseline: str) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """The latencies of ``policy`` and ``baseline`` over the tasks both completed (the common
    tasks of :func:`vs_baseline`, in task-id order): two equal-length arrays, whose difference's
    mean is ``vs_baseline(table, [baseline, policy])[policy]["latency_diff_s"]``. Any two
    policies of the table (neither need be the layer's first); empty arrays where either has no
    rows. ``table`` as for :func:`vs_baseline`."""
    empty = (np.zeros(0), np.zeros(0))
    if table is None or not len(table):
        return empty
    cols = {c: np.asarray(table[c]) for c in COLUMNS}
    rp, rb = (np.flatnonzero(cols["policy"] == name) for name in (policy, baseline))
    if not len(rp) or not len(rb):
        return empty
    lp, lb, _, _ = _common(_index(cols, rp, policy), _index(cols, rb, baseline))
    both = np.isfinite(lp) & np.isfinite(lb)
    return lp[both], lb[both]


def _common(p: dict, b: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(latency of p, latency of b, outcome of p, outcome of b) over the tasks both were given
    (ids in both indexes, :func:`_index`), in task-id order."""
    common_ids = np.intersect1d(p["task"], b["task"], assume_unique=True)
    ip, ib = np.searchsorted(p["task"], common_ids), np.searchsorted(b["task"], common_ids)
    return p["latency"][ip], b["latency"][ib], p["outcome"][ip], b["outcome"][ib]


def _num(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def _index(cols: dict[str, np.ndarray], rows: np.ndarray, policy: str) -> dict[str, np.ndarray]:
    """A policy's rows (``rows``, in table order) sorted by task id (one row per task)."""
    task = cols["task"][rows].astype(np.int64)
    order = np.argsort(task, kind="stable")
    task = task[order]
    if len(task) > 1 and (task[1:] == task[:-1]).any():
        dup = int(task[1:][task[1:] == task[:-1]][0])
        raise ValueError(f"task {dup} has two rows for policy '{policy}': task ids must be unique per policy")
    return {"task": task, "latency": cols["latency_s"][rows].astype(float)[order],
            "outcome": cols["outcome"][rows].astype(object)[order]}


def from_table(path: str | Path, policies: list[str]) -> dict[str, dict]:
    """:func:`vs_baseline` of the task table at ``path`` (a part folder or Parquet file)."""
    from cosim.results import read_columns

    if not Path(path).exists():
        return {}
    return vs_baseline(read_columns(path, COLUMNS), policies)


def against(run_dir: str | Path, layer: str, policies: list[str], baseline: str) -> dict[str, dict]:
    """:func:`vs_baseline` of a finished run's ``layer`` against ``baseline`` instead of its first
    policy (e.g. a sweep's ``baseline``), from its task table; {} for a layer without one."""
    from cosim import registry

    table = registry.layer_class(layer).task_table
    if table is None:
        return {}
    return from_table(Path(run_dir) / f"{table}.parquet", [baseline, *(p for p in policies if p != baseline)])


def add_to_blocks(blocks: dict, pairs: dict[str, dict]) -> None:
    """Put each policy's pairing into its summary block (``blocks[policy]["vs_baseline"]``)."""
    for name, pair in pairs.items():
        block = blocks.get(name)
        if isinstance(block, dict):
            block["vs_baseline"] = pair


__all__ = ["COLUMNS", "add_to_blocks", "against", "from_table", "latency_pairs", "vs_baseline"]
