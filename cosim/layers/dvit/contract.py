"""What the DViT layer declares to cosim's tools (:class:`cosim.layers.base.Layer`'s contract):
the call signature of its schedulers, what ``cosim check`` runs on one, how ``cosim view`` draws
a task and which numbers ``cosim view``, ``cosim report`` and ``cosim plot`` show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Sequence

if TYPE_CHECKING:
    import numpy as np

    from cosim.layers.dvit.problem import Problem


class Scheduler(Protocol):
    """A DViT scheduler: ``problem`` (one task's planning problem), then ``rng`` (a generator for a
    stochastic scheduler, else None), then its options -> ``problem.steps`` device indices, or
    None when it finds no admissible plan (docs/plugins.md)."""

    def __call__(self, problem: Problem, rng: np.random.Generator | None, options: Any, /) -> Sequence[int] | None: ...
