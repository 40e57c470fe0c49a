"""The PFM catalog of Xu et al. (paper 002), Table I, and the few-shot accuracy fit of its Fig. 4.

A *model* is what an RSU caches (GPU memory = parameters x bytes per parameter); a *service* is
one downstream task of one model — what a vehicle requests. Table I gives, per service, the
zero-shot score and, for the language models (GPT-3), the one-shot score and the few-shot score
at K examples in context (K is also the context window of that task: 2048 tokens hold 64, 50 or
32 examples).

Accuracy with K effective examples follows Fig. 4: ``a(K) = a0 + a1 * log2(1 + K**alpha)``.
The caption reads a0 as the zero-shot and a1 as the one-shot score; taken literally that gives
a(1) = zero + one-shot, above the one-shot score. We fit the curve *through* the three points of
Table I instead — a(0) = zero-shot, a(1) = one-shot (so a1 = one-shot - zero-shot) and
a(K_fs) = few-shot (which fixes alpha) — so the curve reproduces every number in the table
(tests check it). Vision and multimodal models have no in-context learning (one score): their
accuracy does not depend on K.

**alpha < 0 (ours: the monotone reading).** GPT3-13B arithmetic scores lower few-shot (14.34)
than one-shot (15.98); the unconstrained fit gives alpha = -0.050, a curve that *falls* as K
grows and tends to infinity as K -> 0+ (a(1e-6) = 23.1 > a(50) = 14.34): an RSU would gain
accuracy by dropping context, and the accuracy cost against the full window would be negative.
A server holding K examples can always present fewer of them, so holding more can never hurt:
accuracy must be non-decreasing in K and never above the model's best. Within Fig. 4's family
the least-squares fit under that constraint, keeping a(0) = zero-shot and a(1) = one-shot
exactly, is alpha = 0 (a(K_fs) grows with alpha, so the constrained optimum is on the bound):
a(K) = one-shot for every K > 0, the best is the one-shot score, and the few-shot score, the
one point below it, is missed by 1.64. We clamp alpha at 0 wherever few-shot <= one-shot. With
alpha >= 0 and a1 >= 0 the curve is non-decreasing and K is capped by the window, so
a0 <= a(K) <= a(window) = best for every K (tests check it on a grid). A catalog whose one-shot
score is below its zero-shot score admits no non-decreasing curve of this family and is refused.

Model sizes for caching: a UniFormer serves five tasks with task-specific heads of different
sizes; we cache the largest (backbone plus its heads), i.e. the maximum over its rows.
GFLOPs are per token for the GPT-3 models (a request generates ``request_tokens`` tokens) and
per input for the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Service:
    name: str  # "<model>/<task>"
    model: str
    task: str
    gflops: float  # per token (LFM) or per input
    zero_shot: float  # Table I score [%]
    one_shot: float | None = None
    few_shot: float | None = None
    window: int = 0  # K of Table I: examples that fit in the context window (0 = no in-context learning)

    @property
    def learns_in_context(self) -> bool:
        return self.window > 0 and self.one_shot is not None and self.few_shot is not None

    def fit(self) -> tuple[float, float, float]:
        """(a0, a1, alpha) of ``a0 + a1*log2(1 + K**alpha)`` through Table I's three points,
        alpha clamped at 0 (the monotone reading, see the module docstring)."""
        a0 = self.zero_shot
        if not self.learns_in_context:
            return a0, 0.0, 1.0
        a1 = self.one_shot - a0
        if a1 < 0:
            raise ValueError(f"{self.name}: one_shot {self.one_shot} is below zero_shot {a0}: no accuracy curve "
                             f"of Fig. 4's family is non-decreasing in the examples")
        if a1 == 0 or self.few_shot <= self.one_shot or self.window <= 1:
            return a0, a1, 0.0  # more examples do not help beyond the first (alpha >= 0 bound)
        # a0 + a1*log2(1 + K^alpha) = few  =>  K^alpha = 2^((few - a0)/a1) - 1  (> 1 here)
        target = 2.0 ** ((self.few_shot - a0) / a1) - 1.0
        return a0, a1, math.log(target) / math.log(self.window)

    @property
    def best_accuracy(self) -> float:
        """The reference accuracy: a full context window (what the cloud, holding every
        demonstration, serves with). Accuracy cost is measured against it."""
        return accuracy(self.fit(), self.window) if self.learns_in_context else self.zero_shot


def accuracy(fit: tuple[float, float, float], k: float) -> float:
    """Fig. 4: a(K) = a0 + a1*log2(1 + K^alpha) [%]; K = 0 gives a0 for any alpha (with alpha = 0,
    any K > 0 gives the one-shot score). Plain math: the cache layer calls it once per request
    served at the edge."""
    a0, a1, alpha = fit
    return a0 + a1 * math.log2(1.0 + k ** alpha) if k > 0 else a0


@dataclass(frozen=True)
class Model:
    name: str
    family: str  # LFM | VFM | MFM
    params_m: float  # parameters [millions]
    per_token: bool  # GFLOPs per generated token (LFM) or per input


def _gpt(name: str, params_m: float, gflops: float, scores: dict) -> tuple[Model, list[Service]]:
    m = Model(name, "LFM", params_m, True)
    return m, [Service(f"{name}/{t}", name, t, gflops, z, o, f, k) for t, (k, z, o, f) in scores.items()]


_TASK_SIZE: dict[str, float] = {}  # service name -> its own model size [M] where Table I gives one


def _vision(name: str, family: str, rows: dict) -> tuple[Model, list[Service]]:
    m = Model(name, family, max(r[0] for r in rows.values()), False)
    _TASK_SIZE.update({f"{name}/{t}": r[0] for t, r in rows.items()})
    return m, [Service(f"{name}/{t}", name, t, g, z) for t, (_, g, z) in rows.items()]


def table1() -> tuple[list[Model], list[Service]]:
    """Table I of Xu et al.: six PFMs and their 22 services, in the table's order."""
    gpt = {  # task: (K, zero, one, few)
        "13b": {"translation": (64, 15.45, 26.12, 30.83), "arithmetic": (50, 3.79, 15.98, 14.34),
                "superglue": (32, 54.4, 64.3, 66.9)},
        "175b": {"translation": (64, 22.03, 29.63, 33.77), "arithmetic": (50, 25.99, 40.71, 49.55),
                 "superglue": (32, 58.2, 68.9, 73.2)},
    }
    parts = [
        _gpt("gpt3-13b", 12850, 26.54, gpt["13b"]),
        _gpt("gpt3-175b", 174600, 354.03, gpt["175b"]),
        _vision("uniformer-s", "VFM", {  # task: (size M, GFLOPs, score)
            "image-cls": (22, 3.6, 82.9), "video-cls": (22, 167, 82.8), "detection": (41, 269, 45.6),
            "segmentation": (25, 247, 46.6), "pose": (25, 4.7, 74.0)}),
        _vision("uniformer-b", "VFM", {
            "image-cls": (50, 8.3, 83.9), "video-cls": (22, 389, 84.0), "detection": (69, 399, 47.4),
            "segmentation": (54, 471, 48.0), "pose": (54, 9.2, 75.0)}),
        _vision("clip-vit-l14", "MFM", {
            "classification": (428, 175.5, 75.20), "image-retrieval": (428, 175.5, 71.08),
            "text-retrieval": (428, 175.5, 84.00)}),
        _vision("clip-vit-h14", "MFM", {
            "classification": (986, 381.9, 77.97), "image-retrieval": (986, 381.9, 73.43),
            "text-retrieval": (986, 381.9, 86.04)}),
    ]
    return [m for m, _ in parts], [s for _, ss in parts for s in ss]


def per_task(models: list[Model], services: list[Service]) -> tuple[list[Model], list[Service]]:
    """The same catalog with one fine-tuned copy of its model per service ("model:task"): the
    reading in which an edge server caches task-specific PFMs (each copy with its own context).
    Sizes are the service's own rows of Table I where they differ (UniFormer heads)."""
    by_name = {m.name: m for m in models}
    out_m, out_s = [], []
    for s in services:
        base = by_name[s.model]
        name = f"{s.model}:{s.task}"
        size = _TASK_SIZE.get(s.name, base.params_m)
        out_m.append(Model(name, base.family, size, base.per_token))
        out_s.append(Service(f"{name}/{s.task}", name, s.task, s.gflops, s.zero_shot, s.one_shot, s.few_shot, s.window))
    return out_m, out_s


def variants(models: list[Model], services: list[Service], n: int) -> tuple[list[Model], list[Service]]:
    """The same catalog with ``n`` fine-tuned variants of every model ("model#1" .. "model#n", e.g.
    one per driving domain), each serving *all* of its model's tasks with its own context — the
    reading in which an edge server chooses between copies of the same size and each copy's tasks
    share its context (so cross-task relevance acts). Catalog order: variant 1's services in
    Table I's order, then variant 2's, ..."""
    out_m, out_s = [], []
    for v in range(1, n + 1):
        for m in models:
            out_m.append(Model(f"{m.name}#{v}", m.family, m.params_m, m.per_token))
        for s in services:
            name = f"{s.model}#{v}"
            out_s.append(Service(f"{name}/{s.task}", name, s.task, s.gflops, s.zero_shot, s.one_shot, s.few_shot,
                                 s.window))
    return out_m, out_s


def zipf(n: int, exponent: float) -> np.ndarray:
    """Popularity of ranks 1..n: p_i proportional to i^-exponent (exponent 0 = uniform)."""
    w = np.arange(1, n + 1, dtype=float) ** -exponent
    return w / w.sum()
