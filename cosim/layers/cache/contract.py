"""What the cache layer declares to cosim's tools (:class:`cosim.layers.base.Layer`'s contract):
the call signature of its eviction policies, what ``cosim check`` runs on one and which numbers
``cosim view``, ``cosim report`` and ``cosim plot`` show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Sequence

if TYPE_CHECKING:
    import numpy as np

    from cosim.layers.cache.policies import EdgeCache


class EvictionPolicy(Protocol):
    """A cache eviction policy: ``cache`` (one RSU's GPU memory), ``candidates`` (the models it may
    evict), ``t`` (the time [s]), then ``rng`` (a generator for a stochastic policy, else None),
    then its options -> one sortable key per candidate, the smallest evicted first."""

    def __call__(self, cache: EdgeCache, candidates: list[int], t: float, rng: np.random.Generator | None,
                 options: Any, /) -> Sequence[Any]: ...
