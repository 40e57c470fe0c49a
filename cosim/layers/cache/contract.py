"""What the cache layer declares to cosim's tools (:class:`cosim.layers.base.Layer`'s contract):
the call signature of its eviction policies, what ``cosim check`` runs on one and which numbers
``cosim view``, ``cosim report`` and ``cosim plot`` show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np

from cosim.layers.base import Metric

if TYPE_CHECKING:
    from cosim.registry import PolicySpec
    from cosim.layers.cache.policies import EdgeCache


class EvictionPolicy(Protocol):
    """A cache eviction policy: ``cache`` (one RSU's GPU memory), ``candidates`` (the models it may
    evict), ``t`` (the time [s]), then ``rng`` (a generator for a stochastic policy, else None),
    then its options -> one sortable key per candidate, the smallest evicted first."""

    def __call__(self, cache: EdgeCache, candidates: list[int], t: float, rng: np.random.Generator | None,
                 options: Any, /) -> Sequence[Any]: ...


def check_eviction_policy(layer_cls: type, spec: PolicySpec, worlds: list) -> list[str]:
    """What ``cosim check`` runs on a cache eviction policy: one sortable key per candidate, the same for
    the same seed, the cache unchanged; over the recorded slots at a memory that forces evictions, no RSU's
    cache holds more than its memory or forgets what it holds (cosim.conformance has the kit)."""
    from cosim import conformance as cf

    from cosim.layers.cache.policies import EdgeCache

    label = cf.label(spec, layer_cls.policy_kind)
    out: list[str] = []
    opts = cf.default_options(spec)
    caches_at_all = spec.traits.get("caches", True)
    if caches_at_all:
        layer = layer_cls({"policies": [spec.name]}, cf.context(cf.Tables()))
        rng = np.random.default_rng(3)
        for trial in range(5):
            c = EdgeCache(1e9, layer.size_gb, layer.svc_model, layer.window, 120.0, 0.3)
            for m in rng.choice(len(layer.size_gb), size=min(6, len(layer.size_gb)), replace=False):
                c.load(int(m), float(rng.uniform(0, 50)), 0.0)
                c.last_used[int(m)] = float(rng.uniform(50, 100))
                c.freq[int(m)] = int(rng.integers(0, 20))
                c.count[int(m)] = int(rng.integers(1, c.freq[int(m)] + 2))
            for j in rng.choice(len(layer.svc_model), size=10):
                if c.cached[layer.svc_model[int(j)]]:
                    c.add_example(int(j), float(rng.uniform(60, 100)))
            cands = [m for m in range(len(c.size)) if c.cached[m]]
            where = f"cache {trial}, {len(cands)} candidates"
            ok, keys = cf.probe(spec, (c, cands, 100.0), 11, opts, c, "modified the cache while ranking it", label,
                              where, out)
            if not ok:
                continue
            try:
                n = len(keys)
            except TypeError:
                out.append(f"{label}: returned {type(keys).__name__}, not a list of keys ({where})")
                continue
            if n != len(cands):
                out.append(f"{label}: {n} keys for {len(cands)} candidate models ({where})")
                continue
            try:
                sorted(keys)
            except TypeError as exc:
                out.append(f"{label}: keys that cannot be ordered ({exc}) ({where})")
                continue
            cf.reproduces(spec, (c, cands, 100.0), 11, opts, list(keys), lambda a, b: cf.same(a, list(b)),
                          "cache", label, where, out)
    # over the recorded slots, with memory for one GPT3-13B copy and the small models: evictions happen
    layer, run = cf.run_layer(layer_cls, {"policies": [spec.name], "gpu_memory_gb": 40.0,
                                         "request_rate_per_vehicle_s": 0.2}, worlds, label)
    if layer is not None:
        for r, e in enumerate(layer.caches.get(spec.name, [])):
            held = sum(s for s, c in zip(e.size, e.cached) if c)
            if e.used > e.capacity + 1e-6 or abs(held - e.used) > 1e-6:
                out.append(f"{label}: RSU {r} holds {held:g} GB of models, books {e.used:g} GB, has {e.capacity:g} GB")
        if caches_at_all and not any(layer.stats[spec.name][k] for k in ("loads", "preloads")):
            out.append(f"{label}: never loaded a model over the recorded slots (register it with caches=False if it "
                       f"never caches)")
    return cf.first(out) + run


#: what cosim view, report and plot show of the cache layer (it has no task table)
HEADLINE_METRICS = (Metric("system_cost_per_request", "system cost per request"),
                    Metric("edge_execution_ratio", "edge execution ratio"), Metric("switching_cost", "switching cost"))
