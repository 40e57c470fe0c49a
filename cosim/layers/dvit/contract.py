"""What the DViT layer declares to cosim's tools (:class:`cosim.layers.base.Layer`'s contract):
the call signature of its schedulers, what ``cosim check`` runs on one, how ``cosim view`` draws
a task and which numbers ``cosim view``, ``cosim report`` and ``cosim plot`` show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np

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
        again = cf.call(spec, (p,), 7, opts)
        if again is None or not np.array_equal(np.asarray(again, dtype=np.int64), arr):
            out.append(f"{label}: not reproducible: the same problem and seed gave another plan ({where})")
    _, run = cf.run_layer(layer_cls, {"policies": [spec.name], "request_rate_per_s": 2.0}, worlds, label)
    return cf.first(out) + run
