"""``cosim/CacheEviction-v0``: which cached model an RSU evicts to make room for a missed one.

The layer (:mod:`cosim.layers.cache.layer`) runs with ``gym:agent`` as its eviction policy,
registered with the trait ``per_victim = True``: at a miss whose model does not fit, the layer
asks for one victim at a time, among the candidates (cached, loaded, not the model being
loaded, not a victim already chosen for this load); while more memory is needed it asks again
with the candidates left. Victims are evicted once all are chosen, with the layer's rules for
every policy: a victim picked early that turns out unneeded (a larger one freed enough) stays
cached; a model larger than the GPU or with only loading models to evict is never loaded (no
question is asked). One decision = one victim. **Our choice**, as the paper (002) names the
policy's inputs but no decision protocol: one victim per decision keeps the action space
``Discrete(models)`` with a mask, where a set of victims would be combinatorial. A built-in
key function asked this way picks exactly the victims it picks when asked once (tested).

**Observation** (``Dict``), a pure function of what a key function receives
(:func:`observe`: the RSU's :class:`~cosim.layers.cache.policies.EdgeCache`, the candidates,
the time), so an agent trained here plugs back as an ordinary ``cache`` policy:

* ``models`` (M, 13) float32, one row per model of the catalog (M models, fixed per scenario),
  columns :data:`MODEL_FEATURES`: the paper's model configuration (Sec. III-A) — size, context
  (Age of Context: LC's key), the context it can hold, frequency of use (since the run began,
  since loaded, hits), recency, age, whether it is cached, loading, a candidate or the model
  being loaded;
* ``request`` (13,): the row of the model being loaded (the requested model's features);
* ``cache`` (6,): :data:`CACHE_FEATURES` — the RSU (its index), GPU memory, free memory, the
  memory still to free, the GPU's queue, victims already chosen for this load.

Times in seconds (never / more than :data:`NEVER_S` ago read as ``NEVER_S``), memory in GB.

**Action** ``Discrete(M)``: the model to evict. **Mask** (``info["action_mask"]``,
:meth:`action_masks`): the candidates. An action outside the mask (not a candidate) is
replaced by the choice of ``default_policy`` (``info["invalid_action"] = True``), so an agent
that ignores the mask still runs.

**Decisions at one RSU or at all** (``rsu``). ``rsu=None`` (default): the agent decides at
every RSU. ``rsu=`` an RSU id or index: the agent decides only there; the other RSUs run
``default_policy`` (a registered policy that caches; ``lc`` by default), answered inside the run
without a step.

**Reward**: minus the Table II system cost (switching + accuracy + inference latency +
offloading latency + cloud, the layer's cost of each request row) of the requests made between
this decision and the next — with ``rsu=``: the requests to that RSU, which is exactly "what
the decision incurs until the next decision at that RSU"; with ``rsu=None``: the requests to
every RSU, charged to the decision that precedes them in time (the exact per-RSU attribution
would need the future: the next decision at each RSU; the DViT environment's rule). A request
is counted at its request time (so the miss that asks, with its switching cost, is in the
reward of the decision it asks for); one exception: an edge response delivered in a later slot
than requested after a handover is re-priced at delivery (the layer's rule), and the
difference is charged to the step in which it is delivered. The costs before the first
decision go to the first reward, those after the last (to the run's end) to the last, so an
episode's return is exactly minus the system cost of the agent's policy (at ``rsu``, or in
all), as in ``cache_requests.parquet`` and ``summary.json``.

**Episode** = one cosim run (live SUMO or a replayed trace, :class:`~cosim.gym.episode.CosimEnv`),
truncated at its end; 0 questions are possible in a short run with ample memory (reset then
draws another seed, five times at most).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from cosim.errors import ConfigError
from cosim.gym.episode import CosimEnv
from cosim.layers.base import bind_policies, call_policy
from cosim.layers.cache.layer import ROW
from cosim.layers.cache.policies import EdgeCache
from cosim.world.channel import stable_uid

MODEL_FEATURES = (
    "candidate",  # 1: may be evicted now (the action mask)
    "cached",  # in GPU memory (loaded or loading)
    "loading",  # cached, not ready yet
    "incoming",  # the model being made room for
    "size_gb",  # its memory [GB]
    "context",  # examples in context at this RSU (Age of Context; LC's key)
    "window",  # the most context it can hold (its services' windows; 0: no in-context learning)
    "requests",  # requests for it at this RSU since the run began (frequency; lfu-perfect's key)
    "requests_cached",  # requests since it was loaded (lfu's key); 0 when not cached
    "hits",  # requests served at the edge since it was loaded; 0 when not cached
    "since_used_s",  # time since its last request served or loaded here [s] (recency)
    "since_loaded_s",  # time since it was loaded [s]; 0 when not cached
    "ready_in_s",  # time until it is loaded [s]; 0 unless loading
)
CACHE_FEATURES = (
    "rsu",  # the RSU's index (world.rsus)
    "capacity_gb",  # its GPU memory [GB]
    "free_gb",  # free memory now [GB]
    "need_gb",  # memory still to free for the incoming model [GB] (victims chosen so far deducted)
    "queue_s",  # time until its GPU is idle [s]
    "victims_chosen",  # victims already set aside for this load
)
NEVER_S = 3600.0  # what "never" (and anything longer ago) reads as
LIMIT = 1e5  # every feature is clipped to [-LIMIT, LIMIT]


def observe(c: EdgeCache, cands: list, t: float) -> tuple[dict, np.ndarray]:
    """The observation and the action mask of one question (a key function's arguments: the
    RSU's cache, the candidate models, the time [s]; see the module docstring)."""
    M = len(c.size)
    cand = np.zeros(M, dtype=bool)
    cand[cands] = True
    window = c.window
    rows = np.array([
        (0.0, 1.0, c.ready_at[m] > t, m == c.incoming, c.size[m], c.context(m, t),
         sum(window[j] for j in c.model_services[m]), c.freq[m], c.count[m], c.hits[m],
         min(t - c.last_used[m], NEVER_S), min(t - c.loaded_at[m], NEVER_S), max(c.ready_at[m] - t, 0.0))
        if c.cached[m] else
        (0.0, 0.0, 0.0, m == c.incoming, c.size[m], 0.0, sum(window[j] for j in c.model_services[m]), c.freq[m],
         0.0, 0.0, min(t - c.last_used[m], NEVER_S), 0.0, 0.0)
        for m in range(M)])
    rows[:, 0] = cand
    ready = sum(1 for m in range(M) if c.cached[m] and c.ready_at[m] <= t and m != c.incoming)
    glob = np.array([c.rsu, c.capacity, c.free(), c.need, max(c.busy_until - t, 0.0), ready - len(cands)])
    request = rows[c.incoming] if 0 <= c.incoming < M else np.zeros(len(MODEL_FEATURES))
    obs = {"models": np.clip(rows, -LIMIT, LIMIT).astype(np.float32),
           "request": np.clip(request, -LIMIT, LIMIT).astype(np.float32),
           "cache": np.clip(glob, -LIMIT, LIMIT).astype(np.float32)}
    return obs, cand


def keys_for(victim: int, cands: list) -> list[int]:
    """The key function's answer that evicts ``victim`` next (it is asked once per victim)."""
    return [0 if m == victim else 1 for m in cands]


def as_policy(choose: Callable[[dict, np.ndarray], int], fallback: Callable | None = None) -> Callable:
    """A cache key function that evicts ``choose(observation, mask)`` — the environment's
    observation and mask, built from the key function's own arguments — so that an agent
    trained here runs in any cosim run. Register it with the trait ``per_victim=True`` (as
    ``gym:agent`` is), e.g. ``register_policy("cache", "my-agent", per_victim=True)(as_policy(net))``.
    A victim outside the mask is replaced by ``fallback``'s (a key function; default ``lc``)."""
    if fallback is None:
        from cosim.layers.cache.policies import lc as fallback

    def keys(c: EdgeCache, cands: list, t: float, rng=None, opts=None) -> list:  # noqa: ANN001
        obs, mask = observe(c, cands, t)
        victim = int(choose(obs, mask))
        if not 0 <= victim < len(mask) or not mask[victim]:
            victim = min(zip(fallback(c, cands, t, rng), cands))[1]
        return keys_for(victim, cands)

    return keys


_POLICY, _RSU, _COSTS = ROW.index("policy"), ROW.index("rsu"), slice(ROW.index("switch"), ROW.index("cloud") + 1)


def row_cost(row: tuple) -> float:
    """A request row's Table II system cost (the layer's :data:`~cosim.layers.cache.layer.ROW`:
    switching + accuracy + inference + offloading + cloud)."""
    return sum(row[_COSTS])


class CacheEvictionEnv(CosimEnv):
    """``cosim/CacheEviction-v0`` (see the module docstring; arguments: :class:`CosimEnv`, and
    ``rsu``: the RSU (id or index) the agent decides at, None for all; ``default_policy``: the
    policy of the decisions the agent does not take)."""

    layer = "cache"
    agent_traits = {"per_victim": True}
    env_id = "cosim/CacheEviction-v0"

    def __init__(self, scenario: str | Path = "scenarios/grid6_cache.toml", *, rsu: int | str | None = None,
                 default_policy: str = "lc", **kwargs: Any):
        super().__init__(scenario, **kwargs)
        ids = list(self.prepared.rsus.ids)
        if rsu is None or isinstance(rsu, (int, np.integer)) and 0 <= rsu < len(ids):
            self.rsu = None if rsu is None else int(rsu)
        elif isinstance(rsu, str) and rsu in ids:
            self.rsu = ids.index(rsu)
        else:
            raise ConfigError(f"rsu: {rsu!r} is no RSU of {self.cfg.source_file} (ids {', '.join(ids[:6])}"
                              f"{', ...' if len(ids) > 6 else ''}; or an index 0..{len(ids) - 1}, or None: all)")
        self.rsu_ids = ids
        where = f"{self.cfg.source_file}: layers.cache"
        options = self.layer_cfg.options
        table = {default_policy: options[default_policy]} if default_policy in options else {}
        self.default = bind_policies("cache", [default_policy], table, where,
                                     type(self.checked_layer).policy_traits)[default_policy]
        if not self.default.traits["caches"] or default_policy == "gym:agent":
            raise ConfigError(f"default_policy: '{default_policy}' does not evict (name a caching policy, e.g. lc)")
        self.model_names = self.checked_layer.model_names
        M = len(self.model_names)
        F = len(MODEL_FEATURES)
        self.action_space = gym.spaces.Discrete(M)
        self.observation_space = gym.spaces.Dict({
            "models": gym.spaces.Box(-LIMIT, LIMIT, (M, F), np.float32),
            "request": gym.spaces.Box(-LIMIT, LIMIT, (F,), np.float32),
            "cache": gym.spaces.Box(-LIMIT, LIMIT, (len(CACHE_FEATURES),), np.float32),
        })
        self._default_rng: np.random.Generator | None = None
        self._known = 0.0

    def local_answers(self) -> Callable[[tuple], Any] | None:
        # a stochastic default_policy draws from its own stream, a function of the episode's seed
        rng = np.random.default_rng([self.episode_seed, stable_uid("cache.gym.default_policy")]) \
            if self.default.stochastic else None
        self._default_rng = rng
        if self.rsu is None:
            return None
        rsu, fn, opts = self.rsu, self.default.spec.fn, self.default.options

        def elsewhere(question: tuple) -> list | None:  # in the run: holds no environment
            c, cands, t = question[:3]
            return call_policy(fn, (c, cands, t), rng, opts) if c.rsu != rsu else None

        return elsewhere

    def _default_keys(self, c: EdgeCache, cands: list, t: float) -> list:
        return call_policy(self.default.spec.fn, (c, cands, t), self._default_rng, self.default.options)

    def observe(self, question: tuple) -> tuple[dict, np.ndarray, dict]:
        c, cands, t = question[:3]
        obs, mask = observe(c, cands, t)
        return obs, mask, {"rsu": self.rsu_ids[c.rsu], "model": self.model_names[c.incoming], "t_s": t}

    def answer(self, question: tuple, action: Any) -> tuple[list, dict]:
        c, cands, t = question[:3]
        victim, invalid = int(action), False
        if victim not in cands:
            victim, invalid = min(zip(self._default_keys(c, cands, t), cands))[1], True
        return keys_for(victim, cands), {"invalid_action": invalid, "evicted": self.model_names[victim]}

    def _cost_known(self, layer: Any) -> float:
        """The system cost of the agent's requests (at ``rsu``, or all) known so far: the rows
        written, those of the slot being served and those held back for a later delivery."""
        r, pi = self.rsu, 0  # the agent is the layer's first policy
        written = layer.rsu_cost[pi]
        cost = float(written.sum() if r is None else written[r] if len(written) else 0.0)
        for row in layer.slot_rows:
            if row is not None and row[_POLICY] == pi and (r is None or row[_RSU] == r):
                cost += row_cost(row)
        for _, row, _ in layer.pending:
            if row[_POLICY] == pi and (r is None or row[_RSU] == r):
                cost += row_cost(row)
        return cost

    def cost_since(self, layer: Any, start: bool) -> float:
        if start:
            self._known = 0.0
            return 0.0
        known = self._cost_known(layer)
        cost, self._known = known - self._known, known
        return float(cost)

    def final_observation(self) -> dict:
        return {k: np.zeros(space.shape, dtype=np.float32) for k, space in self.observation_space.spaces.items()}


__all__ = ["CACHE_FEATURES", "MODEL_FEATURES", "NEVER_S", "CacheEvictionEnv", "as_policy", "keys_for", "observe",
           "row_cost"]
