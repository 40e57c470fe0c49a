"""What the DViT layer declares to cosim's tools (:class:`cosim.layers.base.Layer`'s contract):
the call signature of its schedulers, what ``cosim check`` runs on one, how ``cosim view`` draws
a task and which numbers ``cosim view``, ``cosim report`` and ``cosim plot`` show."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np

from cosim.layers.base import Metric, TaskView

if TYPE_CHECKING:
    from cosim.registry import PolicySpec
    from cosim.layers.dvit.problem import Problem


class Scheduler(Protocol):
    """A DViT scheduler: ``problem`` (one task's planning problem), then ``rng`` (a generator for a
    stochastic scheduler, else None), then its options -> ``problem.steps`` device indices, or
    None when it finds no admissible plan (docs/plugins.md)."""

    def __call__(self, problem: Problem, rng: np.random.Generator | None, options: Any, /) -> Sequence[int] | None: ...


def check_scheduler(layer_cls: type, spec: PolicySpec, worlds: list) -> list[str]:
    """What ``cosim check`` runs on a scheduler: on problems the layer builds from the recorded worlds, a
    plan is None or ``problem.steps`` devices of the problem, admissible (:meth:`Problem.violation`), the
    same for the same seed, the problem unchanged; a layer running only it over the recorded slots drops
    nothing (cosim.conformance has the kit)."""
    from cosim import conformance as cf

    label = cf.label(spec, layer_cls.policy_kind)
    out: list[str] = []
    layer = layer_cls({"policies": [spec.name]}, cf.context(cf.Tables()))
    opts = cf.default_options(spec)
    cases = []
    for wi, w in enumerate(worlds[::6]):
        users = np.flatnonzero(w.serving >= 0)[:: max(1, int(np.sum(w.serving >= 0)) // 2)][:2]
        for u in users:
            rsu = int(w.serving[u])
            for steps in (50, 8):
                cases.append((f"world {wi}, user {w.snap.ids[u]}, K={steps}", layer.build_problem(w, int(u), rsu, None,
                                                                                                   steps)[0]))
            helpers = np.flatnonzero((w.serving == rsu) & (np.arange(len(w.snap)) != u))
            if len(helpers):
                cases.append((f"world {wi}, re-plan from helper {w.snap.ids[helpers[0]]}",
                              layer.build_problem(w, int(u), rsu, int(helpers[0]), 20)[0]))
    for where, p in cases:
        ok, plan = cf.probe(spec, (p,), 7, opts, p, "modified the problem it was given", label, where, out)
        if not ok or plan is None:
            continue
        try:
            arr = np.asarray(plan)
            ok_int = arr.ndim == 1 and (arr.dtype.kind in "iu" or (arr.dtype.kind == "f" and np.all(arr == np.round(arr))))
        except (TypeError, ValueError):
            ok_int = False
        if not ok_int:
            out.append(f"{label}: returned {type(plan).__name__}, not a 1-d sequence of device indices ({where})")
            continue
        arr = arr.astype(np.int64)
        if len(arr) != p.steps:
            out.append(f"{label}: a plan of {len(arr)} steps for a problem of {p.steps} ({where})")
            continue
        if arr.min() < 0 or arr.max() >= p.n_devices:
            out.append(f"{label}: devices {arr.min()}..{arr.max()} outside the problem's 0..{p.n_devices - 1} ({where})")
            continue
        why = p.violation(arr)
        if why is not None:
            out.append(f"{label}: {why} ({where})")
        cf.reproduces(spec, (p,), 7, opts, arr, lambda a, b: np.array_equal(np.asarray(b, dtype=np.int64), a),
                      "problem", label, where, out)
    _, run = cf.run_layer(layer_cls, {"policies": [spec.name], "request_rate_per_s": 2.0}, worlds, label)
    return cf.first(out) + run


# -- what cosim view, report and plot show -------------------------------------------------------
#: how the task table names the RSU as a device
RSU_DEVICE = "@rsu"


def _times(row: dict) -> tuple[list, float]:
    """[(device, start, end)] segments of consecutive steps on one device; the task's end time.
    Step k starts at t_request + upload + the durations of the steps before it, with upload =
    latency minus the steps' sum (a failed task records no latency: its steps are placed from
    the request time — ours)."""
    comm, comp, queue = (np.asarray(row[c], dtype=float) for c in ("step_comm_s", "step_comp_s", "step_queue_s"))
    dur = comm + comp + queue
    lat = float(row["latency_s"])
    upload = lat - float(dur.sum()) if math.isfinite(lat) else 0.0
    starts = row["t_request_s"] + max(upload, 0.0) + np.concatenate([[0.0], np.cumsum(dur)[:-1]])
    segs = []
    for dev, s, d in zip(row["devices"], starts, dur):
        if segs and segs[-1][0] == dev:
            segs[-1][2] = float(s + d)
        else:
            segs.append([dev, float(s), float(s + d)])
    end = float(starts[-1] + dur[-1]) if len(dur) else float(row["t_request_s"] + max(upload, 0.0))
    return segs, end


def task_segments(row: dict, index: Any, rsus: list) -> tuple[list, float, dict]:
    """A DViT task as cosim view draws it (:class:`~cosim.layers.base.TaskView`): the devices
    holding its latent one after the other (-1: the RSU), and where its RSU is."""
    segs, end = _times(row)
    r = int(row["rsu"])
    rx, ry = (rsus[r]["x"], rsus[r]["y"]) if 0 <= r < len(rsus) else (0, 0)
    segs = [[-1 if d == RSU_DEVICE else index(str(d)), round(s, 4), round(e, 4)] for d, s, e in segs]
    return segs, end, {"rsu": [round(rx, 2), round(ry, 2)]}


TASK_VIEW = TaskView(vehicle="user", segments=task_segments, draw="chain")
HEADLINE_METRICS = (Metric("mean_latency_s", "mean latency [s]"), Metric("success_rate", "success rate"))
