"""A cache eviction policy: least recently used, weighted by what a model costs to reload.

The key of a cached model is its last use [s] plus ``seconds_per_gb`` times its size [GB]: a
large model (slow to load again) is kept as if it had been used that much later.
"""

from dataclasses import dataclass

from cosim import register_policy
from cosim.config import option


@dataclass(frozen=True)
class SizeLruOptions:
    seconds_per_gb: float = option(1.0, lo=0.0, doc="credit per GB of model size [s/GB]")


@register_policy("cache", "size-lru", options=SizeLruOptions)
def size_lru(cache, candidates, t, rng, opts: SizeLruOptions):
    """LRU with a credit for large models: evict the smallest last_used + w * size."""
    return [(cache.last_used[m] + opts.seconds_per_gb * cache.size[m], m) for m in candidates]
