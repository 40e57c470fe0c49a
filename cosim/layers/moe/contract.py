"""What the MoE layer declares to cosim's tools (:class:`cosim.layers.base.Layer`'s contract):
the call signature of its pricing solvers, what ``cosim check`` runs on one, how ``cosim view``
draws a task and which numbers ``cosim view``, ``cosim report`` and ``cosim plot`` show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from cosim.layers.base import Metric, TaskView

if TYPE_CHECKING:
    from cosim.registry import PolicySpec
    from cosim.layers.moe.game import Game


class PricingSolver(Protocol):
    """A MoE pricing solver: ``game`` (one task's Stackelberg game), then ``rng`` (a generator for
    a stochastic solver, else None), then its options -> ``game.n`` prices in [p_min, p_max]."""

    def __call__(self, game: Game, rng: np.random.Generator | None, options: Any, /) -> np.ndarray: ...


def check_solver(layer_cls: type, spec: PolicySpec, worlds: list) -> list[str]:
    """What ``cosim check`` runs on a pricing solver: on games of 1, 3 and 8 IVs, ``game.n`` finite prices
    in the price range, the same for the same seed, the game unchanged; a layer running only it over the
    recorded slots drops nothing (cosim.conformance has the kit)."""
    from cosim import conformance as cf

    from cosim.layers.moe.game import Game

    label = cf.label(spec, layer_cls.policy_kind)
    out: list[str] = []
    opts = cf.default_options(spec)
    rng = np.random.default_rng(5)
    for n in (1, 3, 8):
        g = Game(rng.uniform(0.01, 0.05, n), rng.uniform(0.2, 1.0, n), rng.uniform(5, 20, n))
        where = f"a game of {n} IVs"
        ok, p = cf.probe(spec, (g,), 13, opts, g, "modified the game it was given", label, where, out,
                       skip=("_evals",))  # the follower-evaluation counter moves
        if not ok:
            continue
        try:
            arr = np.asarray(p, dtype=float)
        except (TypeError, ValueError):
            out.append(f"{label}: returned {type(p).__name__}, not an array of prices ({where})")
            continue
        if arr.shape != (n,):
            out.append(f"{label}: prices of shape {arr.shape}, expected ({n},) ({where})")
            continue
        if not np.all(np.isfinite(arr)):
            out.append(f"{label}: non-finite prices {arr.tolist()} ({where})")
        elif np.any(arr <= 0):
            out.append(f"{label}: negative or zero prices {arr.tolist()} ({where})")
        elif np.any(arr < g.p_min * (1 - 1e-9)) or np.any(arr > g.p_max * (1 + 1e-9)):
            out.append(f"{label}: prices outside the price range [{g.p_min:g}, {g.p_max:g}] ({where})")
        cf.reproduces(spec, (g,), 13, opts, arr, lambda a, b: np.array_equal(np.asarray(b, dtype=float), a),
                      "game", label, where, out)
    _, run = cf.run_layer(layer_cls, {"policies": [spec.name], "request_rate_per_s": 1.0}, worlds, label)
    return cf.first(out) + run


# -- what cosim view, report and plot show -------------------------------------------------------
def _times(row: dict) -> tuple[list, float]:
    """[(IVs, start, end)] segments of consecutive model layers run on the same IVs; the end time."""
    parts = [np.asarray(row[c], dtype=float) for c in ("layer_tv_s", "layer_comm_s", "layer_comp_s", "layer_mem_s")]
    dur = sum(parts) if len(parts[0]) else np.zeros(0)
    starts = row["t_request_s"] + np.concatenate([[0.0], np.cumsum(dur)[:-1]]) if len(dur) else np.zeros(0)
    segs = []
    for ivs, s, d in zip(row["layer_ivs"], starts, dur):
        names = [v for v in str(ivs).split("|") if v]
        if segs and segs[-1][0] == names:
            segs[-1][2] = float(s + d)
        else:
            segs.append([names, float(s), float(s + d)])
    end = float(starts[-1] + dur[-1]) if len(dur) else float(row["t_request_s"])
    return segs, end


def task_segments(row: dict, index: Any, rsus: list) -> tuple[list, float, dict]:
    """A MoE task as cosim view draws it (:class:`~cosim.layers.base.TaskView`): the IVs
    executing each stretch of model layers, joined to the task vehicle."""
    segs, end = _times(row)
    return [[[index(v) for v in ivs], round(s, 4), round(e, 4)] for ivs, s, e in segs], end, {}


TASK_VIEW = TaskView(vehicle="tv", segments=task_segments, draw="group")
HEADLINE_METRICS = (Metric("mean_latency_s", "mean latency [s]"), Metric("success_rate", "success rate"),
                    Metric("mean_iv_utility", "IV utility", 2))
