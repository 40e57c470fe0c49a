#!/usr/bin/env python3
"""Cache decisions per request, per policy, as the catalog grows (the issue asks for O(models)).

Synthetic request streams (Zipf popularity, 4 RSUs, 100 requests per slot, 300 slots) through
the cache layer's serving loop with catalogs of 6, 66 and 220 models (10 per-task copies of
Table I, memory scaled alike). A hit costs O(1); a miss ranks the cached models once (O(models))
and pops victims from a heap, so the time per request grows with the miss rate (in brackets)
times the number of models.

    python tools/bench_cache.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosim.layers.base import LayerContext  # noqa: E402
from cosim.layers.cache.catalog import per_task, table1  # noqa: E402
from cosim.layers.cache.layer import CacheLayer  # noqa: E402
from cosim import registry  # noqa: E402

POLICIES = registry.policies("cache")


def catalog(n_copies: int) -> list[dict]:
    models, services = per_task(*table1())
    out = []
    for c in range(n_copies):
        for m, s in zip(models, services):
            out.append({"name": f"{m.name}#{c}", "params_m": m.params_m, "per_token": m.per_token,
                        "services": [{"task": s.task, "gflops": s.gflops, "zero_shot": s.zero_shot,
                                      "one_shot": s.one_shot, "few_shot": s.few_shot, "window": s.window}]})
    return out


def main() -> None:
    rng = np.random.default_rng(1)
    slots, per_slot, rsus = 300, 100, 4
    print(f"{'models':>6s} " + " ".join(f"{p:>14s}" for p in POLICIES) + "   [us per request; misses %]")
    for copies in (1, 3, 10):
        models = catalog(copies) if copies > 1 else None
        cfg = {"catalog": "custom", "models": models} if models else {"catalog": "table1"}
        layer = CacheLayer({**cfg, "gpu_memory_gb": 80.0 * copies}, LayerContext(1, 1.0, "bench", lambda n: None))
        n_svc = len(layer.services)
        pop = layer.pop
        row, miss = [], []
        for name in POLICIES:
            edges = layer._edges(name, rsus)
            t_total, n, misses = 0.0, 0, 0
            for slot in range(slots):
                times = (slot + np.sort(rng.uniform(0, 1, per_slot))).tolist()
                svc = rng.choice(n_svc, size=per_slot, p=pop).tolist()
                rsu = rng.integers(0, rsus, per_slot).tolist()
                tr = rng.uniform(0.005, 0.05, per_slot).tolist()
                rows: list = []
                t0 = time.perf_counter()
                layer._serve(0, name, edges, times, rsu, svc, tr, np.random.default_rng(slot), rows)
                t_total += time.perf_counter() - t0
                n += per_slot
                misses += sum(1 for r in rows if r[5] in (1, 2, 3))
            row.append(1e6 * t_total / n)
            miss.append(100 * misses / n)
        print(f"{len(layer.models):6d} " + " ".join(f"{v:8.2f} ({m:3.0f})" for v, m in zip(row, miss)))


if __name__ == "__main__":
    main()
