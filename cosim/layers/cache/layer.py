"""The edge model-cache layer (paper 002): PFMs cached on RSU GPUs, Age of Context, LC eviction
and the baselines, against live SUMO traffic.

Requests. Every slot each vehicle in RSU coverage requests a service with rate
``request_rate_per_vehicle_s`` (Poisson), at a uniform time within the slot, from the RSU that
serves it then — a vehicle that hands over takes its next requests to the new RSU. A vehicle
asks for its own preferred service (a fixed draw per vehicle from the popularity law) with
probability ``preference``, else for a service drawn from the popularity law (Zipf over the
catalog's services). The same requests, at the same times, go to every policy.

Drifting demand (ours; off by default). ``drift_every_s`` > 0: every that many seconds (at slot
granularity) the popularity law's ranking is redrawn — a fresh random permutation of the
services over the same Zipf weights, so which services are popular changes while how skewed
demand is does not; a vehicle's own preferred *rank* stays, so its preferred service drifts
too. ``regional_popularity``: every RSU's coverage (region) has its own ranking, so a vehicle
that hands over starts asking for what is popular in its new region. Rankings depend only on
(seed, period, RSU); period 0 without regions is the catalog order (no drift = as before).

Serving (per request, per policy; costs in the units of Table II, ours: seconds, and accuracy
as a fraction):

* **edge** — the model is cached and loaded at the RSU and the RSU's GPU queue is shorter than
  ``max_queue_s``: accuracy a(K) from the context the RSU holds (Age of Context), inference
  latency = queue wait + FLOPs x (1 + ``example_cost`` x K) / edge compute, offloading latency =
  request / V2I rate + response / I2V rate (eq. 3 rates from the world's channel, i.e. SUMO
  distances); accuracy cost = (a_best - a(K)) / 100, a_best being the full-window accuracy;
  the request then leaves an example in the context. The response goes back when the request
  is served (queue wait + inference later): if that is in a later slot, its download is charged
  at the rate of the RSU serving the vehicle *then* (a handover while queued: the result goes
  over the backhaul to the new RSU; column ``delivered_by``), and a vehicle out of coverage by
  then loses it (charged ``transfer_timeout_s``). Cloud responses keep the request-time rates;
* **cloud** — otherwise: cloud cost = wireless transfer + ``cloud_latency_s`` + FLOPs / cloud
  compute + ``cloud_fee``; the cloud serves at a_best (no accuracy cost, as in Table II);
* **outage** — a request whose upload + download at this slot's rates would take longer than
  ``transfer_timeout_s`` (a deep fade) is lost for every policy alike; it costs the timeout as
  offloading latency and counts as not executed at the edge;
* **switching** — loading a model after a miss (or a preload) costs ``size / load_gbps`` seconds
  of the edge's time, charged to the request that triggered it.

**The miss rule** (``miss``). The paper allows both: "If the edge server does not cache the model
requested by the user, it can migrate the user's request to the cloud for execution via core
networks or load the model and then execute the model requested by the user" (Sec. III-C 2), and
"Handling model misses at edge servers involves offloading service requests to cloud servers,
incurring extra core network latency, or loading missing models, leading to switching costs,
such as additional latency and energy consumption" (Sec. III-D). It does not say which its
experiment (Sec. V, Table II) uses. ``cloud`` (the default): a request whose model is not ready
goes to the cloud and the model loads in the background (passive caching, Sec. III-B). Ours, the
choice of default: Table II's Random row (edge execution ratio 9.8 % with the second-largest
switching cost, 18.72) fits this reading better — its loads do not serve the requests that trigger
them — where waiting for every load would serve each triggering request at the edge.
``wait``: a request waits for its model when it will be ready within ``miss_wait_max_s`` (a
miss: the whole load; a model already loading: the rest of it), then queues for the GPU and runs
at the edge (outcome ``load-wait``): its inference latency = load wait + GPU queue after the
load + its computation, and the request that triggered the load also pays the switching cost
(the load's "additional latency and energy consumption", Sec. III-D: the wait is the request's
latency, the switching cost the edge's). A model that takes longer, a GPU queue over
``max_queue_s`` after the load, or a model that cannot be loaded: the cloud, as with ``cloud``.
``miss_wait_max_s`` = 1 s (ours: ``max_queue_s``'s default, the longest an edge request waits in
the GPU queue): Table I's vision and multimodal models (10-250 ms at 8 GB/s) are waited for, a
GPT3-13B variant (3.2 s) is not.

System cost = switching + accuracy + inference latency + offloading latency + cloud (Table II),
each term weighted by the ``costs`` preset (:data:`COST_PRESETS`; ``ours``: 1 each).
Results: ``cache_requests.parquet`` (one row per request and policy, plus one per preload) and
a ``cache`` block per policy in ``summary.json`` with Table II's columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cosim.config import option
from cosim.errors import ConfigError
from cosim.layers.base import Layer, LayerContext, PolicyFailed, arrivals, register_layer
from cosim.layers.cache import contract
from cosim.layers.cache.catalog import Model, Service, accuracy, per_task, table1, variants, zipf
from cosim.layers.cache.policies import EdgeCache, Keys, make_room
from cosim.recorder import Coded, columns_of
from cosim.world import World
from cosim.world import channel as ch
from cosim.world.world import grown

OUTCOMES = ("hit", "miss", "miss-no-room", "miss-rejected", "loading", "busy", "cloud", "preload", "outage",
            "load-wait")
# their codes in result rows; "hit" and "load-wait" (miss = wait: served at the edge once its
# model had loaded) are the outcomes served at the edge
_EDGE, _MISS, _NO_ROOM, _REJECTED, _LOADING, _BUSY, _CLOUD, _PRELOAD, _OUTAGE, _WAITED = range(len(OUTCOMES))
#: fields of one result row, as ``_serve`` appends them
ROW = ("policy", "veh", "rsu", "svc", "mdl", "out", "evicted", "k", "acc", "switch", "acc_cost", "infer", "offload",
       "cloud", "t")
_SUMS = ("switch", "acc_cost", "infer", "offload", "cloud", "requests", "edge")

#: weights of Table II's terms (switching, accuracy, inference, offloading, cloud) in the system
#: cost. ``ours``: the terms as measured (seconds; accuracy as a fraction; the cloud fee).
#: ``table2`` (ours: the paper gives no weights): each term scaled by (Table II's share of it in
#: LC's system cost) / (our LC's share of it), measured on scenarios/grid6_cache.toml (defaults,
#: miss = cloud, 300 s, seeds 101-110, LC's mean terms 199.7 / 9.08 / 21.4 / 186.2 / 456.6;
#: Table II's LC row 0.32 / 0.44 / 1.26 / 0.31 / 2.52, shares 6.6 / 9.1 / 26.0 / 6.4 / 52.0 %),
#: normalised to a cloud weight of 1 and rounded to two digits. One set of weights for every
#: policy (none tuned per policy); docs/cache.md shows the shares each policy then has.
COST_PRESETS = {"ours": (1.0, 1.0, 1.0, 1.0, 1.0), "table2": (0.29, 8.8, 10.7, 0.30, 1.0)}


def _nan_at(keys: list) -> int:
    """The index of the first eviction key that is or holds a NaN (a tuple's or list's elements,
    nested ones too), -1 if none. Called once per eviction decision, after the keys sorted: a
    plain loop (~70 ns per element, below the ranking's own cost)."""
    i = -1
    try:
        for k in keys:
            i += 1
            c = k.__class__
            if c is tuple or c is list:
                for x in k:
                    if x != x:
                        return i
                    c = x.__class__
                    if (c is tuple or c is list) and _nan_at((x,)) == 0:
                        return i
            elif k != k:
                return i
    except (TypeError, ValueError):  # a key that does not compare with itself as a bool: not a NaN
        pass
    return -1


def row_columns(rows: list[tuple]) -> dict[str, list]:
    """Rows appended by ``_serve`` as columns (for inspection and tests)."""
    return {k: list(v) for k, v in zip(ROW, zip(*rows))} if rows else {k: [] for k in ROW}


@dataclass(frozen=True)
class CacheConfig:
    policies: list = option(["lc", "lfu", "lfu-perfect", "fifo", "random", "cloud", "lru", "lc-predictive"],
                        doc="eviction policies run side by side (built-in or registered by a plugin)")
    options: dict = option({}, doc="per-policy options: [layers.cache.options.NAME] tables (see `cosim config`)")
    catalog: str = option("table1-variants", choices=("table1", "table1-variants", "table1-per-task", "custom"),
                      doc="table1: the six PFMs of Table I; table1-variants: `variants` fine-tuned copies of each "
                          "(each serving all its tasks, so cross-task relevance acts); table1-per-task: one copy "
                          "per task (22 models); custom: the `models` list")
    variants: int = option(3, lo=1, doc="catalog = table1-variants: fine-tuned variants of each Table I model")
    models: list = option([], doc="catalog = custom: [{name, params_m, per_token, services = "
                              "[{task, gflops, zero_shot, one_shot, few_shot, window}]}]")
    gpu_memory_gb: float = option(80.0, lo=0.0, lo_open=True, doc="GPU memory per RSU [GB] (80: one A100-80GB)")
    bytes_per_param: float = option(2.0, lo=0.0, lo_open=True, doc="bytes per parameter (2 = fp16)")
    load_gbps: float = option(8.0, lo=0.0, lo_open=True, doc="model loading bandwidth into GPU memory [GB/s]")
    edge_tflops: float = option(312.0, lo=0.0, lo_open=True, doc="RSU GPU compute [TFLOP/s]")
    cloud_tflops: float = option(1000.0, lo=0.0, lo_open=True, doc="cloud compute per request [TFLOP/s]")
    cloud_latency_s: float = option(0.2, lo=0.0, doc="core-network round trip to the cloud [s]")
    cloud_fee: float = option(0.1, lo=0.0, doc="cloud price per request [cost units]")
    max_queue_s: float = option(1.0, lo=0.0, doc="an edge request that would wait longer goes to the cloud [s]")
    transfer_timeout_s: float = option(1.0, lo=0.0, lo_open=True,
                                   doc="a request whose radio transfer (this slot's fading) takes longer is lost [s]")
    request_rate_per_vehicle_s: float = option(0.05, lo=0.0, doc="requests per covered vehicle per second")
    popularity_exponent: float = option(0.8, lo=0.0, doc="Zipf exponent over services (catalog order)")
    popularity: list = option([], doc="explicit weight per service (catalog order); overrides the Zipf law")
    drift_every_s: float = option(0.0, lo=0.0, doc="ours: redraw which services are popular (a random permutation "
                                               "of the law's ranks) every this many seconds; 0 = fixed demand")
    regional_popularity: bool = option(False, doc="ours: each RSU's region has its own popularity ranking")
    preference: float = option(0.7, lo=0.0, hi=1.0, doc="probability a vehicle asks for its own preferred service")
    request_tokens: int = option(100, lo=1, doc="tokens generated per LFM request")
    request_bits: float = option(8e5, lo=0.0, doc="request upload size [bit]")
    response_bits: float = option(8e5, lo=0.0, doc="response download size [bit]")
    aoc_tau_s: float = option(120.0, lo=0.0, lo_open=True, doc="Age of Context: an example's weight is exp(-age/tau)")
    cross_relevance: float = option(0.3, lo=0.0, hi=1.0, doc="weight of an example of another task of the same model")
    example_cost: float = option(0.02, lo=0.0, doc="compute per example in context, as a fraction of a request's")
    accuracy_weight: float = option(1.0, lo=0.0, doc="weight of the accuracy cost in the system cost (multiplies "
                                                     "the `costs` preset's accuracy weight)")
    costs: str = option("ours", choices=tuple(COST_PRESETS),
                        doc="weights of Table II's five terms in the system cost: ours = 1 each (seconds, accuracy "
                            "as a fraction, the cloud fee); table2 = ours scaled so that LC's cost shares on "
                            "grid6_cache match Table II's LC row (accuracy 9 %; docs/cache.md)")
    miss: str = option("cloud", choices=("cloud", "wait"),
                       doc="a request whose model is not ready at its RSU: cloud = served by the cloud while the "
                           "model loads in the background (passive caching, Table II's reading); wait = served at "
                           "the edge once loaded when that is within miss_wait_max_s (the paper's 'load the model "
                           "and then execute'), else the cloud")
    miss_wait_max_s: float = option(1.0, lo=0.0, doc="miss = wait: the longest a request waits for its model to "
                                                     "load (a miss: the load time; a model loading: the rest of "
                                                     "it) before it goes to the cloud instead [s] (ours: "
                                                     "max_queue_s's default)")
    horizon_s: float = option(30.0, lo=0.0, lo_open=True, doc="lc-predictive: look-ahead along SUMO routes [s]")
    predict_every_s: float = option(5.0, lo=0.0, lo_open=True, doc="lc-predictive: how often it predicts and preloads [s]")
    predict_routes: bool = option(True, doc="lc-predictive: walk SUMO routes (false: extrapolate straight ahead)")
    predict_min_speed_mps: float = option(3.0, lo=0.0, doc="lc-predictive: speed floor for stopped vehicles [m/s]")


def _catalog(cfg: CacheConfig, where: str) -> tuple[list[Model], list[Service]]:
    if cfg.catalog == "table1":
        return table1()
    if cfg.catalog == "table1-variants":
        return variants(*table1(), cfg.variants)
    if cfg.catalog == "table1-per-task":
        return per_task(*table1())
    if not cfg.models:
        raise ConfigError(f"{where}.models: catalog = 'custom' needs a non-empty models list")
    models, services = [], []
    for i, row in enumerate(cfg.models):
        at = f"{where}.models[{i}]"
        if not isinstance(row, dict) or "name" not in row or "params_m" not in row or not row.get("services"):
            raise ConfigError(f"{at}: needs name, params_m and a non-empty services list")
        unknown = set(row) - {"name", "params_m", "per_token", "family", "services"}
        if unknown:
            raise ConfigError(f"{at}: unknown key '{sorted(unknown)[0]}'")
        m = Model(str(row["name"]), str(row.get("family", "")), float(row["params_m"]), bool(row.get("per_token", False)))
        models.append(m)
        for j, s in enumerate(row["services"]):
            sat = f"{at}.services[{j}]"
            try:
                svc = Service(f"{m.name}/{s['task']}", m.name, str(s["task"]), float(s["gflops"]),
                              float(s["zero_shot"]), s.get("one_shot"), s.get("few_shot"), int(s.get("window", 0)))
                svc.fit()
            except KeyError as exc:
                raise ConfigError(f"{sat}: missing key {exc.args[0]!r}") from None
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{sat}: {exc}") from None
            services.append(svc)
    return models, services


def _check(cfg: CacheConfig, n_services: int, where: str) -> None:
    if cfg.popularity and (len(cfg.popularity) != n_services or min(cfg.popularity) < 0 or sum(cfg.popularity) <= 0):
        raise ConfigError(f"{where}.popularity: need {n_services} non-negative weights (one per service), "
                          f"not all zero")


@register_layer("cache")
class CacheLayer(Layer):
    config_class = CacheConfig
    policy_kind = "eviction policy"
    shardable = True  # its policies share nothing but the world and the requests
    #: what a process holding any of its policies spends once (the requests): CPU s per 300 s of
    #: grid6 (docs/performance.md, "Issue 32, fourth pass: dealing whole layers")
    shared_cost = 0.06
    policy_protocol = contract.EvictionPolicy
    check_policy = classmethod(contract.check_eviction_policy)  # what `cosim check` runs on one of its policies
    headline_metrics = contract.HEADLINE_METRICS  # what cosim view, report and plot show
    #: caches=False: never caches (all to the cloud); predictive: wants demand predicted along routes;
    #: per_victim: asked once per victim (policies.py)
    policy_traits = {"caches": True, "predictive": False, "per_victim": False}

    def __init__(self, config: dict, ctx: LayerContext):
        super().__init__(config, ctx)
        c = self.cfg
        self.models, self.services = _catalog(c, self.where)
        _check(c, len(self.services), self.where)
        self.model_index = {m.name: i for i, m in enumerate(self.models)}
        self.model_names = [m.name for m in self.models]
        self.service_names = [sv.name for sv in self.services]
        self.svc_model = [self.model_index[s.model] for s in self.services]
        self.size_gb = [m.params_m * 1e6 * c.bytes_per_param / 1e9 for m in self.models]
        self.load_s = [g / c.load_gbps for g in self.size_gb]
        self.window = [s.window if s.learns_in_context else 0 for s in self.services]
        self.fits = [s.fit() for s in self.services]
        self.best = [s.best_accuracy for s in self.services]
        tokens = [c.request_tokens if self.models[self.svc_model[j]].per_token else 1 for j in range(len(self.services))]
        self.flops = [s.gflops * 1e9 * k for s, k in zip(self.services, tokens)]
        pop = np.asarray(c.popularity, float) if c.popularity else zipf(len(self.services), c.popularity_exponent)
        self.pop = pop / pop.sum()
        self.cdf = np.cumsum(self.pop)
        self.pop_model = np.bincount(self.svc_model, weights=self.pop, minlength=len(self.models))
        self.svc_model_arr = np.asarray(self.svc_model, dtype=np.int64)
        #: cloud cost of a request of each service, less its radio transfer
        self.cloud_base = [c.cloud_latency_s + c.cloud_fee + f / (c.cloud_tflops * 1e12) for f in self.flops]
        w = COST_PRESETS[c.costs]
        #: weights of (switching, accuracy, inference, offloading, cloud) in the system cost
        self.weights = (w[0], c.accuracy_weight * w[1], w[2], w[3], w[4])
        #: miss = wait: the longest a request waits for its model to load (-inf: never waits)
        self.wait_max = c.miss_wait_max_s if c.miss == "wait" else -math.inf
        # lc-predictive's rule for whether a load pays: what serving one request of the model at
        # the edge saves against the cloud (no queue, no context; the best of its services), in
        # the system cost's weights, against the load's weighted switching cost
        self.saving = [max(w[4] * self.cloud_base[j] - w[2] * self.flops[j] / (c.edge_tflops * 1e12)
                           for j in range(len(self.services)) if self.svc_model[j] == mdl) / w[0]
                       for mdl in range(len(self.models))]
        self.predictive = any(pol.traits["predictive"] for pol in self.policies.values())
        self.caches: dict[str, list[EdgeCache]] = {}
        self.stats = {p: dict.fromkeys(("loads", "preloads", "evictions", "cold_evictions", "handed_over",
                                        "lost_responses"), 0) for p in self.policies}
        #: edge responses served in a later slot than requested: (time served, row, download at request)
        self.pending: list[tuple[float, tuple, float]] = []
        self.world: World | None = None
        self.sums = np.zeros((len(self.policies), len(_SUMS)))  # per policy: the Table II sums
        #: per policy and RSU (the one requested): the system cost of the rows written so far
        self.rsu_cost = np.zeros((len(self.policies), 0))
        #: the rows of the slot being served, not yet written (what cost_since of cosim.gym.cache reads)
        self.slot_rows: list = []
        self.keys = {p: self._keys(p) for p in self.policies}
        self.last_model = np.full(0, -1, dtype=np.int64)  # per world vehicle index: model of its last request
        self._ranking: tuple | None = None  # (period, per-RSU rank -> service) of the drifting law
        self.next_predict = -math.inf
        self.route_pos: dict[str, int] = {}

    def on_start(self) -> None:
        self.table = self.ctx.table("cache_requests")

    def _keys(self, policy: str) -> Keys | None:
        """The policy's eviction keys, checked (one sortable key per candidate); None: never caches."""
        if not self.policies[policy].traits["caches"]:
            return None

        def keys(c: EdgeCache, cands: list, t: float, rng) -> list:  # noqa: ANN001
            out = self.call(policy, c, cands, t, rng=rng)
            try:
                if len(out) != len(cands):
                    raise PolicyFailed(f"returned {len(out)} keys for {len(cands)} candidate models")
                sorted(out)
            except (TypeError, ValueError) as exc:
                raise PolicyFailed(f"returned keys that cannot be ordered ({exc})") from None
            bad = _nan_at(out)
            if bad >= 0:  # NaN compares false with everything: the order, hence the victim, is arbitrary
                raise PolicyFailed(f"returned a NaN key ({out[bad]!r} for model {self.model_names[cands[bad]]}; "
                                   f"{len(cands)} candidates)")
            return out

        return keys

    def _edges(self, policy: str, m: int) -> list[EdgeCache]:
        if policy not in self.caches:
            self.caches[policy] = [EdgeCache(self.cfg.gpu_memory_gb, self.size_gb, self.svc_model, self.window,
                                             self.cfg.aoc_tau_s, self.cfg.cross_relevance, r) for r in range(m)]
        return self.caches[policy]

    # -- requests ------------------------------------------------------------------------
    def requests(self, world: World) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The slot's requests, drawn once: (times, snapshot indices, services), time-sorted."""
        c, gamma = self.cfg, self.ctx.slot_s
        rng = world.rng("cache.requests")
        covered = np.flatnonzero(world.serving >= 0)
        veh, times = arrivals(rng, c.request_rate_per_vehicle_s * len(covered) * gamma, covered, world.time_s, gamma)
        n = len(veh)
        own = np.searchsorted(self.cdf, ch.hash_uniform(world.seed, ch.VEH_PREF, world.uid[veh]), side="right")
        other = np.searchsorted(self.cdf, rng.uniform(0.0, 1.0, n), side="right")
        rank = np.minimum(np.where(rng.uniform(0.0, 1.0, n) < c.preference, own, other), len(self.services) - 1)
        ranking = self.ranking(world)
        if ranking is None:
            return times, veh, rank
        return times, veh, ranking[world.serving[veh] if len(ranking) > 1 else 0, rank]

    def ranking(self, world: World) -> np.ndarray | None:
        """Rank -> service of the popularity law now, one row per RSU (regional) or one row;
        None while demand is the catalog order (no drift, no regions, or the first period)."""
        c = self.cfg
        period = int(world.time_s // c.drift_every_s) if c.drift_every_s > 0 else 0
        if period == 0 and not c.regional_popularity:
            return None
        if self._ranking is None or self._ranking[0] != period:
            regions = len(world.rsus) if c.regional_popularity else 1
            self._ranking = (period, np.stack([
                np.random.default_rng([world.seed, ch.stable_uid("cache.drift"), period, r]).permutation(
                    len(self.services)) for r in range(regions)]))
        return self._ranking[1]

    def law(self, world: World) -> np.ndarray:
        """Popularity per model now, one row per RSU (a single row, broadcast, when it is the same)."""
        ranking = self.ranking(world)
        if ranking is None:
            return self.pop_model[None, :]
        out = np.zeros((len(ranking), len(self.models)))
        for r, row in enumerate(ranking):
            out[r] = np.bincount(self.svc_model_arr[row], weights=self.pop, minlength=len(self.models))
        return out

    # -- per slot ------------------------------------------------------------------------
    def on_slot(self, world: World) -> None:
        self.world = world
        times, veh, svc = self.requests(world)
        self.last_model = grown(self.last_model, len(world.vehicle_names), -1)
        m = len(world.rsus)
        c = self.cfg
        slot_end = world.time_s + self.ctx.slot_s
        self._deliver(world, slot_end)
        down = c.response_bits / world.rate_i2v_bps[veh] if len(veh) else np.zeros(0)
        transfer = c.request_bits / world.rate_v2i_bps[veh] + down if len(veh) else np.zeros(0)
        rows: list = []
        self.slot_rows = rows
        demand = None
        if self.predictive and world.time_s >= self.next_predict:
            self.next_predict = world.time_s + c.predict_every_s
            demand = self.predict_demand(world)
        times_l, rsu_l, svc_l, tr_l = times.tolist(), world.serving[veh].tolist(), svc.tolist(), transfer.tolist()
        vcode = world.vidx[veh]
        for pi, policy in enumerate(self.policies):
            if policy in self.failed:
                continue
            edges = self._edges(policy, m)
            rng = self.rng_for(policy, world, f"cache.{policy}")
            mark, late = len(rows), []
            try:
                if demand is not None and self.policies[policy].traits["predictive"]:
                    self._preload(pi, edges, demand, world.time_s, rng, rows)
                self._serve(pi, policy, edges, times_l, rsu_l, svc_l, tr_l, rng, rows, slot_end, late)
            except PolicyFailed as exc:
                del rows[mark:]  # this slot's rows of the failed policy: its state is not to be trusted
                self.fail(policy, str(exc))
                continue
            for ri, i, t_done in late:  # served in a later slot: delivered (and written) then
                row = rows[ri]
                self.pending.append((t_done, (row[0], int(vcode[i])) + row[2:], float(down[i])))
                rows[ri] = None
        if len(svc):
            self.last_model[world.vidx[veh]] = self.svc_model_arr[svc]
        rows = [r for r in rows if r is not None]
        self.slot_rows = []  # written now (the held-back ones are in self.pending)
        if rows:
            i = np.asarray([r[1] for r in rows], dtype=np.int64)
            self._write(rows, np.where(i >= 0, vcode[np.maximum(i, 0)] if len(vcode) else -1, -1),
                        np.asarray([r[2] for r in rows], dtype=np.int64), world)

    def _deliver(self, world: World | None, slot_end: float) -> None:
        """Deliver the responses served before ``slot_end`` that were held back (queued across a
        slot boundary): their download at the rate of the RSU serving the vehicle now; a vehicle
        out of coverage loses its response (the transfer timeout). ``world`` None (end of run):
        the rates at the request."""
        due = [p for p in self.pending if p[0] < slot_end]
        if not due:
            return
        self.pending = [p for p in self.pending if p[0] >= slot_end]
        timeout, bits, w_off = self.cfg.transfer_timeout_s, self.cfg.response_bits, self.weights[3]
        if world is not None:
            where = np.full(len(world.vehicle_names), -1, dtype=np.int64)
            where[world.vidx] = np.arange(len(world.vidx))
        rows, by = [], []
        for _, row, old_down in due:
            vc, r = row[1], row[2]
            j = where[vc] if world is not None and vc < len(where) else -2
            if j == -2:
                down, rsu = old_down, r
            elif j >= 0 and world.serving[j] >= 0:
                rsu = int(world.serving[j])
                down = min(bits / float(world.rate_i2v_bps[j]), timeout)
            else:
                down, rsu = timeout, -1
            if rsu != r:
                self.stats[list(self.policies)[row[0]]]["handed_over" if rsu >= 0 else "lost_responses"] += 1
            rows.append(row[:12] + (row[12] - w_off * old_down + w_off * down,) + row[13:])
            by.append(rsu)
        self._write(rows, np.asarray([r[1] for r in rows], dtype=np.int64), np.asarray(by, dtype=np.int64),
                    world if world is not None else self.world)

    def _serve(self, pi: int, policy: str, edges: list[EdgeCache], times: list, rsus: list, svcs: list,
               transfer: list, rng, rows: list, slot_end: float = math.inf, late: list | None = None) -> None:
        """Serve one policy's requests in time order, appending one :data:`ROW` tuple each. An edge
        hit served at or after ``slot_end`` is listed in ``late`` as (row index, request, time served).

        A request whose model is not ready (a miss, or the model still loading) goes to the cloud,
        unless ``miss = "wait"`` and the model is ready within ``miss_wait_max_s``: then it waits
        for the load and is served at the edge (outcome ``load-wait``), its inference latency being
        the load wait + the GPU queue after the load + its computation; the request that triggered
        the load also pays the switching cost. A queue over ``max_queue_s`` after the load sends it
        to the cloud (``busy``). Costs are weighted by ``self.weights`` (the ``costs`` preset)."""
        c, st = self.cfg, self.stats[policy]
        edge_flops = c.edge_tflops * 1e12
        svc_model, best, window, fits, flops, cloud_base = (self.svc_model, self.best, self.window, self.fits,
                                                            self.flops, self.cloud_base)
        timeout, max_queue, ex_cost, wait_max = c.transfer_timeout_s, c.max_queue_s, c.example_cost, self.wait_max
        w_sw, w_acc, w_inf, w_off, w_cl = self.weights
        keys, predictive, append = self.keys[policy], self.policies[policy].traits["predictive"], rows.append
        per_victim = self.policies[policy].traits["per_victim"]
        for i, (t, r, s, tr) in enumerate(zip(times, rsus, svcs, transfer)):
            e, mdl = edges[r], svc_model[s]
            if tr > timeout:  # lost in a deep fade: the same for every policy
                append((pi, i, r, s, mdl, _OUTAGE, "", 0.0, math.nan, 0.0, 0.0, 0.0, w_off * timeout, 0.0, t))
                continue
            if keys is None:  # the cloud policy
                append((pi, i, r, s, mdl, _CLOUD, "", 0.0, best[s], 0.0, 0.0, 0.0, 0.0, w_cl * (tr + cloud_base[s]), t))
                continue
            e.freq[mdl] += 1
            switch, evicted = 0.0, ""
            if e.cached[mdl]:
                e.count[mdl] += 1
                ready = e.ready_at[mdl]
                out = _EDGE if ready <= t else _WAITED if ready - t <= wait_max else _LOADING
            else:
                # a miss: the model loads (unless it cannot fit or is not admitted); the request
                # goes to the cloud, or with miss = wait and a short load, waits for it
                admit = None
                if predictive:
                    demand = e.demand[mdl] + 1.0
                    admit = demand if demand * self.saving[mdl] > self.load_s[mdl] else -1.0
                gone = None if admit is not None and admit < 0 else make_room(e, mdl, t, keys, rng, admit, per_victim)
                if gone is None:
                    out = _NO_ROOM if admit is None or admit >= 0 else _REJECTED
                else:
                    self._evicted(st, e, gone)
                    e.load(mdl, t, self.load_s[mdl])
                    e.count[mdl] = 1
                    e.last_used[mdl] = t
                    switch = w_sw * self.load_s[mdl]
                    evicted = ",".join(self.models[v].name for v in gone)
                    st["loads"] += 1
                    ready = e.ready_at[mdl]
                    out = _WAITED if ready - t <= wait_max else _MISS
            if out == _EDGE or out == _WAITED:
                start = t if out == _EDGE else ready  # the model is ready
                wait = e.busy_until - start if e.busy_until > start else 0.0  # the GPU queue then
                if wait > max_queue:
                    out = _BUSY
                else:
                    k = e.examples(s, t) if window[s] else 0.0
                    acc = accuracy(fits[s], k) if window[s] else best[s]
                    infer = wait + flops[s] * (1.0 + ex_cost * k) / edge_flops
                    if out == _WAITED:
                        infer = (start - t) + infer
                    e.busy_until = t + infer
                    if t + infer >= slot_end:
                        late.append((len(rows), i, t + infer))
                    e.add_example(s, t)
                    e.last_used[mdl] = t
                    e.hits[mdl] += 1
                    append((pi, i, r, s, mdl, out, evicted, k, acc, switch, w_acc * (best[s] - acc) / 100.0,
                            w_inf * infer, w_off * tr, 0.0, t))
                    continue
            append((pi, i, r, s, mdl, out, evicted, 0.0, best[s], switch, 0.0, 0.0, 0.0, w_cl * (tr + cloud_base[s]), t))

    @staticmethod
    def _evicted(st: dict, e: EdgeCache, gone: list[int]) -> None:
        """Count evictions, and the cold ones: victims that served no request since they were loaded."""
        st["evictions"] += len(gone)
        st["cold_evictions"] += sum(1 for v in gone if not e.hits[v])

    # -- lc-predictive: demand along SUMO routes --------------------------------------------
    def predict_demand(self, world: World) -> np.ndarray:
        """Expected requests per (RSU, model) within the horizon, from where each vehicle will be
        (its SUMO route walked at its current speed; straight ahead when the source has no routes,
        e.g. a replay) and what it asked for last (the popularity law if it has not asked yet)."""
        c, s, r = self.cfg, world.snap, world.rsus
        n, m = len(s), len(r)
        out = np.zeros((m, len(self.models)))
        if not n or not m:
            return out
        last = self.last_model[world.vidx]
        known = last >= 0
        law = self.law(world)  # the popularity law where each vehicle will be (drifting demand)
        samples = 3
        per = c.request_rate_per_vehicle_s * c.horizon_s / samples
        for j in range(1, samples + 1):
            _, srv = r.associate(*self._ahead(world, c.horizon_s * j / samples))
            ok = np.flatnonzero(srv >= 0)
            p = law[srv[ok] if len(law) > 1 else np.zeros(len(ok), dtype=np.int64)]
            kn = known[ok]
            p[kn] *= 1.0 - c.preference
            p[np.flatnonzero(kn), last[ok][kn]] += c.preference
            np.add.at(out, srv[ok], per * p)
        return out

    def _ahead(self, world: World, dt: float) -> tuple[np.ndarray, np.ndarray]:
        s = world.snap
        v = np.maximum(s.speed, self.cfg.predict_min_speed_mps)
        vx, vy = world.vx, world.vy
        scale = np.divide(v, s.speed, out=np.ones_like(v), where=s.speed > 0)
        x, y = s.x + vx * scale * dt, s.y + vy * scale * dt
        if world.route_of is None or not self.cfg.predict_routes:
            return x, y
        x, y = x.copy(), y.copy()
        ahead, route_pos = (v * dt).tolist(), self.route_pos
        for i, vid in enumerate(s.ids.tolist()):
            # the world's route walker (lane shapes, junctions on their internal edges); no known
            # route (off it, or on an internal edge it does not name): straight ahead
            pts, k = world.route_ahead(i, (ahead[i],), route_pos.get(vid, 0))
            if pts is None:
                continue
            route_pos[vid] = k
            # arrived (or off the known network): no demand from it
            x[i], y[i] = pts[0] if pts[0] is not None else (np.inf, np.inf)
        if len(self.route_pos) > 50_000:
            self.route_pos.clear()
        return x, y

    def _preload(self, pi: int, edges: list[EdgeCache], demand: np.ndarray, t: float, rng, rows: list) -> None:
        """Active caching: at each RSU, load the models with the most predicted demand whose
        demand pays for the load and outweighs what it would evict."""
        policy = list(self.policies)[pi]
        st, keys = self.stats[policy], self.keys[policy]
        for r, e in enumerate(edges):
            e.demand = demand[r].tolist()
            for mdl in np.argsort(-demand[r], kind="stable").tolist():
                d = e.demand[mdl]
                if e.cached[mdl] or d * self.saving[mdl] <= self.load_s[mdl]:
                    continue
                gone = make_room(e, mdl, t, keys, rng, admit_value=d,
                                 per_victim=self.policies[policy].traits["per_victim"])
                if gone is None:
                    continue
                self._evicted(st, e, gone)
                e.load(mdl, t, self.load_s[mdl])
                st["preloads"] += 1
                rows.append((pi, -1, r, -1, mdl, _PRELOAD, ",".join(self.models[v].name for v in gone), 0.0, math.nan,
                             self.weights[0] * self.load_s[mdl], 0.0, 0.0, 0.0, 0.0, t))

    # -- results ---------------------------------------------------------------------------
    def _write(self, rows: list, vcode: np.ndarray, delivered_by: np.ndarray, world: World) -> None:
        """Append rows (``vcode``: the world's vehicle code per row, -1 for a preload;
        ``delivered_by``: the RSU that delivered the response, -1 if lost) and add up Table II."""
        if not rows:
            return
        col = columns_of(ROW, rows)
        pol = np.asarray(col["policy"], dtype=np.int64)
        out = np.asarray(col["out"], dtype=np.int64)
        terms = np.asarray([col[k] for k in _SUMS[:5]], dtype=float)  # switch, acc_cost, infer, offload, cloud
        system = terms.sum(axis=0)
        request = out != _PRELOAD
        edge = (out == _EDGE) | (out == _WAITED)
        p = len(self.policies)
        for j, w in enumerate(terms):
            self.sums[:, j] += np.bincount(pol, weights=w, minlength=p)
        m = len(world.rsus)
        if not self.rsu_cost.shape[1]:  # the RSUs are known from the first slot on
            self.rsu_cost = np.zeros((p, m))
        self.rsu_cost += np.bincount(pol * m + np.asarray(col["rsu"], dtype=np.int64), weights=system,
                                     minlength=p * m).reshape(p, m)
        self.sums[:, 5] += np.bincount(pol[request], minlength=p)
        self.sums[:, 6] += np.bincount(pol[edge], minlength=p)
        self.table.append({
            "policy": Coded(pol, list(self.policies)),
            "t_s": np.asarray(col["t"], dtype=float),
            "vehicle": Coded(vcode, world.vehicle_names),
            "rsu": Coded(np.asarray(col["rsu"], dtype=np.int64), world.rsus.ids),
            "delivered_by": Coded(np.where((out == _PRELOAD) | (out == _OUTAGE), -1, delivered_by), world.rsus.ids),
            "model": Coded(np.asarray(col["mdl"], dtype=np.int64), self.model_names),
            "service": Coded(np.asarray(col["svc"], dtype=np.int64), self.service_names),
            "outcome": Coded(out, OUTCOMES),
            "edge": edge,
            "evicted": np.asarray(col["evicted"], dtype=object),
            "examples": np.asarray(col["k"], dtype=float),
            "accuracy": np.asarray(col["acc"], dtype=float),
            "switching_cost": terms[0],
            "accuracy_cost": terms[1],
            "inference_latency_s": terms[2],
            "offloading_latency_s": terms[3],
            "cloud_cost": terms[4],
            "system_cost": system,
        })

    def on_end(self) -> dict:
        if self.world is not None:
            self._deliver(None, math.inf)  # served after the last slot: at the request's rates
        out = {}
        for pi, p in enumerate(self.policies):
            switch, acc, infer, offload, cloud, n, edge = self.sums[pi]
            n, edge = int(n), int(edge)
            system = switch + acc + infer + offload + cloud
            st = self.stats[p]
            out[p] = {
                "requests": n,
                "system_cost": system,
                "switching_cost": switch,
                "total_accuracy_cost": acc,
                "average_accuracy_cost": acc / edge if edge else 0.0,
                "inference_latency": infer,
                "offloading_latency": offload,
                "cloud_cost": cloud,
                "edge_execution_ratio": edge / n if n else None,
                "system_cost_per_request": system / n if n else None,
                "loads": st["loads"], "preloads": st["preloads"], "evictions": st["evictions"],
                "cold_evictions": st["cold_evictions"], "handed_over": st["handed_over"],
                "lost_responses": st["lost_responses"],
            }
        return out
