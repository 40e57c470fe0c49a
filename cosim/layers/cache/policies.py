"""One RSU's model cache with Age-of-Context bookkeeping, and the eviction policies.

**Age of Context (our formulation of Sec. V-B).** Every request an RSU serves with a model
that learns in context (a Table I window K > 0: the GPT-3 models; vision and multimodal models
have none, "-") leaves one example in that model's context at that RSU. An example of age ``dt`` counts
``exp(-dt / tau)`` (the non-increasing age utility of Fig. 2); for a request of service ``s``
an example of the same service counts fully and one of another service of the same model counts
``cross_relevance`` (relevance). The effective number of examples is the weighted sum, capped by
the task's context window (Table I's K):

    K_s(t) = min(window_s, S_s(t) + cross_relevance * sum_{s' != s, same model} S_s'(t)),
    S_s(t) = sum over examples e of service s: exp(-(t - t_e) / tau).

S_s is kept as one decayed sum per (RSU, service), capped by the window when an example is added
(the window holds at most K_s examples: a new one pushes the oldest out), so adding an example
and reading K are O(1). A model's context (LC's key) is the sum of its services' S, each at most
its window; a model without in-context learning has none (LC then ranks it by its tie-break,
least recently used). Evicting a model drops its context (S = 0 for its services).

**Policies** (registered with :func:`cosim.register_policy` on layer ``cache``, as a plugin's
are): passive caching for all — a request for a model that is not ready
at its RSU goes to the cloud (or, with ``miss = "wait"``, waits for a load of at most
``miss_wait_max_s``: the layer's docstring), and the RSU loads the model (reserving its memory
at once; it is ready ``size / load_bandwidth`` later), evicting cached models one at a time, in
the policy's order, until the model fits. A model larger than the GPU memory is never loaded.
A key must not be NaN (it compares false with everything, so the victim would be arbitrary):
the layer drops a policy that returns one, with its one line.

* ``lc`` — least context first (sum of S over the model's services); ties: least recently used.
  A freshly loaded model has no context (eviction dropped it), so the literal LC makes it the
  first victim as soon as it is ready — before it could gather any. Option ``grace_s`` (ours,
  default 0 = the paper's LC) ranks a model ready for less than ``grace_s`` after every older one;
* ``lfu`` — least frequently used as usually defined: requests for the model at this RSU while it
  is cached (the request that loaded it counts one; requests while it loads count), forgotten
  on eviction — so a freshly loaded model, like LC's (zero context), is an early victim;
* ``lfu-perfect`` — "perfect" LFU: every request for the model at this RSU since the run began,
  hits and misses, kept after eviction (a popular model evicted once keeps its claim);
* ``fifo`` — first loaded first; ``lru`` — least recently used first; ``random`` — uniform;
* ``cloud`` — never caches;
* ``lc-predictive`` (ours) — LC's context plus the demand SUMO's routes predict: the value of a
  cached model is ``context + predicted requests in the horizon``; it evicts the lowest value,
  admits a missed model only if its predicted demand pays for its switching cost, and preloads
  models for the vehicles about to enter coverage (active caching).

**The policy contract.** An eviction policy is a key function, called as
``keys(cache, candidates, t, rng, options) -> list`` with one sortable key per candidate model
(cached, loaded, not the model being loaded): the smallest key is evicted first. During the
call ``cache.incoming`` is the model being made room for, ``cache.need`` the memory still to
free [GB] and ``cache.rsu`` the RSU's index. ``rng`` is a generator for policies registered
``stochastic=True`` (else None). Traits: ``caches=False`` for a policy that never caches (every
request to the cloud); ``predictive=True`` for one that wants ``cache.demand`` (requests per
model predicted along SUMO routes) filled, admission control and preloads, as
``lc-predictive``; ``per_victim=True`` (ours, for policies that decide one victim at a time,
such as a learned agent: :mod:`cosim.gym.cache`) for one asked once per victim — only its
smallest key counts, the victim is set aside and, while more room is needed, it is asked again
with the candidates left. A deterministic key function picks the same victims either way
(victims are evicted only once all are chosen, so the cache it sees does not change between
the calls).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from cosim.config import option
from cosim.registry import register_policy


class EdgeCache:
    """One RSU's GPU memory under one policy. Plain Python lists: there are few models, and per
    element list access is several times faster than numpy scalar access."""

    __slots__ = ("capacity", "size", "service_model", "model_services", "tau", "cross", "window",
                 "cached", "ready_at", "loaded_at", "last_used", "freq", "count", "hits", "used", "busy_until", "S",
                 "S_t", "demand", "rsu", "incoming", "need")

    def __init__(self, capacity_gb: float, size_gb: list[float], service_model: list[int],
                 window: list[int], tau_s: float, cross_relevance: float, rsu: int = -1):
        m, s = len(size_gb), len(service_model)
        self.rsu = rsu  # the RSU whose GPU this is (index into world.rsus; -1 outside a layer)
        self.incoming = -1  # during a key call: the model being made room for
        self.need = 0.0  # during a key call: memory still to free for it [GB]
        self.capacity = capacity_gb
        self.size = size_gb
        self.service_model = service_model
        self.model_services = [[j for j in range(s) if service_model[j] == i] for i in range(m)]
        self.tau, self.cross, self.window = tau_s, cross_relevance, window
        self.cached = [False] * m
        self.ready_at = [math.inf] * m
        self.loaded_at = [math.inf] * m
        self.last_used = [-math.inf] * m
        self.freq = [0] * m  # requests at this RSU since the run began (lfu-perfect)
        self.count = [0] * m  # requests while cached, since the last load (lfu); 0 when not cached
        self.hits = [0] * m  # requests served at the edge since the last load
        self.used = 0.0
        self.busy_until = 0.0
        self.S = [0.0] * s
        self.S_t = [0.0] * s
        self.demand = [0.0] * m  # predicted requests in the horizon (lc-predictive)

    # -- Age of Context -------------------------------------------------------------------
    def _decayed(self, j: int, t: float) -> float:
        v = self.S[j]
        return v * math.exp(-(t - self.S_t[j]) / self.tau) if v else 0.0

    def examples(self, service: int, t: float) -> float:
        """K_s(t): effective examples in context for a request of ``service`` at ``t``."""
        own = self._decayed(service, t)
        other = 0.0
        for j in self.model_services[self.service_model[service]]:
            if j != service:
                other += self._decayed(j, t)
        return min(float(self.window[service]), own + self.cross * other)

    def add_example(self, service: int, t: float) -> None:
        """One more example of ``service`` in context, the oldest pushed out of a full window;
        nothing for a service without in-context learning (window 0)."""
        w = self.window[service]
        if w:
            v = self._decayed(service, t) + 1.0
            self.S[service] = v if v < w else float(w)
            self.S_t[service] = t

    def context(self, model: int, t: float) -> float:
        """Examples the model holds at this RSU (LC's eviction key): each service's at most its window."""
        total = 0.0
        for j in self.model_services[model]:
            total += self._decayed(j, t)
        return total

    # -- memory ---------------------------------------------------------------------------
    def evict(self, model: int) -> None:
        self.cached[model] = False
        self.used -= self.size[model]
        self.ready_at[model] = self.loaded_at[model] = math.inf
        self.count[model] = 0
        for j in self.model_services[model]:
            self.S[j] = 0.0

    def load(self, model: int, t: float, load_s: float) -> None:
        self.cached[model] = True
        self.used += self.size[model]
        self.loaded_at[model] = t
        self.ready_at[model] = t + load_s
        self.count[model] = self.hits[model] = 0

    def free(self) -> float:
        return self.capacity - self.used


# An eviction rule gives each candidate (cached, ready, not the model being loaded) a key; the
# smallest key goes first. Keys are computed once per decision (evicting one model does not
# change another's key) and victims popped from a heap: O(models + victims log models); a
# per_victim policy is asked once per victim: O(victims x models).
Keys = Callable[[EdgeCache, list, float, "np.random.Generator | None", Any], list]


@dataclass(frozen=True)
class LcOptions:
    grace_s: float = option(0.0, lo=0.0, doc="ours: a model ready for less than this is evicted after every older "
                                             "one (0: the paper's LC, a fresh model with zero context goes first)")


@register_policy("cache", "lc", options=LcOptions, cost=0.07)
def lc(c: EdgeCache, cands: list, t: float, rng=None, opts: LcOptions | None = None) -> list:
    """Least context first (ties: least recently used); optionally a grace period for fresh models."""
    grace = opts.grace_s if opts is not None else 0.0
    if grace > 0:
        return [(c.ready_at[m] > t - grace, c.context(m, t), c.last_used[m]) for m in cands]
    return [(c.context(m, t), c.last_used[m]) for m in cands]


@register_policy("cache", "lfu", cost=0.07)
def lfu(c: EdgeCache, cands: list, t: float, rng=None, opts=None) -> list:  # noqa: ANN001
    """Least frequently used: requests for the model while cached (since its last load), ties: LRU."""
    return [(c.count[m], c.last_used[m]) for m in cands]


@register_policy("cache", "lfu-perfect", cost=0.07)
def lfu_perfect(c: EdgeCache, cands: list, t: float, rng=None, opts=None) -> list:  # noqa: ANN001
    """Perfect LFU: requests for the model at this RSU since the run began, kept after eviction."""
    return [(c.freq[m], c.last_used[m]) for m in cands]


@register_policy("cache", "fifo", cost=0.07)
def fifo(c: EdgeCache, cands: list, t: float, rng=None, opts=None) -> list:  # noqa: ANN001
    """First loaded first."""
    return [(c.loaded_at[m], m) for m in cands]


@register_policy("cache", "lru", cost=0.07)
def lru(c: EdgeCache, cands: list, t: float, rng=None, opts=None) -> list:  # noqa: ANN001
    """Least recently used first."""
    return [(c.last_used[m], m) for m in cands]


@register_policy("cache", "random", stochastic=True, cost=0.07)
def random(c: EdgeCache, cands: list, t: float, rng=None, opts=None) -> list:  # noqa: ANN001
    """A uniformly random victim."""
    return rng.random(len(cands)).tolist()


@register_policy("cache", "cloud", caches=False, cost=0.07)
def cloud(c: EdgeCache, cands: list, t: float, rng=None, opts=None) -> list:  # noqa: ANN001
    """Never caches: every request goes to the cloud (never asked for keys)."""
    return [0.0] * len(cands)


def _value(c: EdgeCache, m: int, t: float) -> float:
    return c.context(m, t) + c.demand[m]


@register_policy("cache", "lc-predictive", predictive=True, cost=0.22)
def lc_predictive(c: EdgeCache, cands: list, t: float, rng=None, opts=None) -> list:  # noqa: ANN001
    """Ours: context plus the demand SUMO's routes predict; admission control and preloads."""
    return [(_value(c, m, t), c.last_used[m]) for m in cands]


def make_room(c: EdgeCache, model: int, t: float, keys: Keys, rng, admit_value: float | None = None,
              per_victim: bool = False) -> list[int] | None:
    """Evict models (smallest key first) until ``model`` fits. Returns the evicted models, or
    None (and evicts nothing) if it cannot fit — too large, or the rest is still loading — or,
    when ``admit_value`` is given, if the victims together are worth more than that.
    ``per_victim``: ask ``keys`` once per victim, with the candidates still left (the trait)."""
    if c.size[model] > c.capacity:
        return None
    need = c.size[model] - c.free()
    if need <= 1e-9:
        return []
    cands = [m for m in range(len(c.size)) if c.cached[m] and m != model and c.ready_at[m] <= t]
    c.incoming, c.need = model, need
    chosen: list[int] = []
    if per_victim:
        while need > 1e-9:
            if not cands:
                return None
            c.need = need
            v = min(zip(keys(c, cands, t, rng), cands))[1]  # ties: the lower model index, as the heap's
            cands.remove(v)
            chosen.append(v)
            need -= c.size[v]
    else:
        ranked = list(zip(keys(c, cands, t, rng), cands))
        heapq.heapify(ranked)
        while need > 1e-9:
            if not ranked:
                return None
            v = heapq.heappop(ranked)[1]
            chosen.append(v)
            need -= c.size[v]
    # a victim picked early (a small model) may be unneeded once a large one is out: keep it
    for v in list(chosen):
        if c.size[v] <= -need - 1e-9:
            chosen.remove(v)
            need += c.size[v]
    if admit_value is not None and sum(_value(c, v, t) for v in chosen) > admit_value:
        return None
    for v in chosen:
        c.evict(v)
    return chosen
