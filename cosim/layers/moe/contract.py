"""What the MoE layer declares to cosim's tools (:class:`cosim.layers.base.Layer`'s contract):
the call signature of its pricing solvers, what ``cosim check`` runs on one, how ``cosim view``
draws a task and which numbers ``cosim view``, ``cosim report`` and ``cosim plot`` show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from cosim.layers.moe.game import Game


class PricingSolver(Protocol):
    """A MoE pricing solver: ``game`` (one task's Stackelberg game), then ``rng`` (a generator for
    a stochastic solver, else None), then its options -> ``game.n`` prices in [p_min, p_max]."""

    def __call__(self, game: Game, rng: np.random.Generator | None, options: Any, /) -> np.ndarray: ...
