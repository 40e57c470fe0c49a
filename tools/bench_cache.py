#!/usr/bin/env python3
"""Cache decisions per request, per policy, as the catalog grows: a hit must stay O(1).

Synthetic request streams (Zipf popularity, 4 RSUs, 100 requests per slot, 300 slots) through
the cache layer's serving loop with catalogs of 1, 3 (the default), 11 and 37 fine-tuned
variants of Table I's six models (6 to 222 models). Two columns per policy:

* ``hit``: GPU memory for the whole catalog, timed after every model has loaded (slot 60 on),
  so every request is a hit: the time per request must not grow with the catalog (O(1): the
  model's flags, its tasks' decayed sums, one row);
* ``mixed``: memory scaled with the catalog (80 GB per 3 variants, the default's pressure): a
  miss ranks the cached models once (O(models)) and pops victims from a heap, so the time per
  request grows with the miss rate (in brackets) times the number of models.

    python tools/bench_cache.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosim import registry  # noqa: E402
from cosim.layers.base import LayerContext  # noqa: E402
from cosim.layers.cache.layer import _EDGE, _LOADING, CacheLayer  # noqa: E402

POLICIES = [p for p, spec in registry.policies("cache").items() if spec.traits.get("caches", True)]


def run(layer: CacheLayer, name: str, rng: np.random.Generator, slots: int, warm: int) -> tuple[float, float, float]:
    """(us per timed request, % edge hits, % misses) over slots >= warm."""
    per_slot, rsus = 100, 4
    edges = layer._edges(name, rsus)
    t_total, n, hits, misses = 0.0, 0, 0, 0
    for slot in range(slots):
        times = (slot + np.sort(rng.uniform(0, 1, per_slot))).tolist()
        svc = rng.choice(len(layer.services), size=per_slot, p=layer.pop).tolist()
        rsu = rng.integers(0, rsus, per_slot).tolist()
        tr = rng.uniform(0.005, 0.05, per_slot).tolist()
        rows: list = []
        t0 = time.perf_counter()
        layer._serve(0, name, edges, times, rsu, svc, tr, np.random.default_rng(slot), rows)
        dt = time.perf_counter() - t0
        if slot >= warm:
            t_total += dt
            n += per_slot
            hits += sum(1 for r in rows if r[5] == _EDGE)
            misses += sum(1 for r in rows if r[5] not in (_EDGE, _LOADING))
    return 1e6 * t_total / n, 100 * hits / n, 100 * misses / n


def main() -> None:
    rng = np.random.default_rng(1)
    print(f"{'models':>6s} {'column':>6s} " + " ".join(f"{p:>16s}" for p in POLICIES)
          + "   [us per request; % hits or % misses]")
    for n in (1, 3, 11, 37):
        for column, memory in (("hit", 1e6), ("mixed", 80.0 * n / 3)):
            layer = CacheLayer({"catalog": "table1-variants", "variants": n, "gpu_memory_gb": memory,
                                "max_queue_s": 1e9}, LayerContext(1, 1.0, "bench", lambda name: None))
            cells = []
            for name in POLICIES:
                us, hit, miss = run(layer, name, rng, 300, 60 if column == "hit" else 0)
                cells.append(f"{us:8.2f} ({hit if column == 'hit' else miss:4.0f}%)")
            print(f"{len(layer.models):6d} {column:>6s} " + " ".join(f"{c:>16s}" for c in cells))


if __name__ == "__main__":
    main()
