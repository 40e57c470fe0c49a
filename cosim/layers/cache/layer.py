"""The edge model-cache layer (paper 002): PFMs cached on RSU GPUs, Age of Context, LC eviction
and the baselines, against live SUMO traffic.

Requests. Every slot each vehicle in RSU coverage requests a service with rate
``request_rate_per_vehicle_s`` (Poisson), at a uniform time within the slot, from the RSU that
serves it then — a vehicle that hands over takes its next requests to the new RSU. A vehicle
asks for its own preferred service (a fixed draw per vehicle from the popularity law) with
probability ``preference``, else for a service drawn from the popularity law (Zipf over the
catalog's services). The same requests, at the same times, go to every policy.

Serving (per request, per policy; costs in the units of Table II, ours: seconds, and accuracy
as a fraction):

* **edge** — the model is cached and loaded at the RSU and the RSU's GPU queue is shorter than
  ``max_queue_s``: accuracy a(K) from the context the RSU holds (Age of Context), inference
  latency = queue wait + FLOPs x (1 + ``example_cost`` x K) / edge compute, offloading latency =
  request / V2I rate + response / I2V rate (eq. 3 rates from the world's channel, i.e. SUMO
  distances); accuracy cost = (a_best - a(K)) / 100, a_best being the full-window accuracy;
  the request then leaves an example in the context;
* **cloud** — otherwise: cloud cost = wireless transfer + ``cloud_latency_s`` + FLOPs / cloud
  compute + ``cloud_fee``; the cloud serves at a_best (no accuracy cost, as in Table II);
* **outage** — a request whose upload + download at this slot's rates would take longer than
  ``transfer_timeout_s`` (a deep fade) is lost for every policy alike; it costs the timeout as
  offloading latency and counts as not executed at the edge;
* **switching** — loading a model after a miss (or a preload) costs ``size / load_gbps`` seconds
  of the edge's time, charged to the request that triggered it.

System cost = switching + accuracy + inference latency + offloading latency + cloud (Table II).
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
from cosim.layers.cache.catalog import Model, Service, accuracy, per_task, table1, zipf
from cosim.layers.cache.policies import EdgeCache, Keys, make_room
from cosim.recorder import Coded
from cosim.world import World
from cosim.world import channel as ch
from cosim.world.route_walk import point_along, route_index
from cosim.world.world import grown

OUTCOMES = ("hit", "miss", "miss-no-room", "miss-rejected", "loading", "busy", "cloud", "preload", "outage")
# their codes in result rows; "hit" is the only outcome served at the edge
_EDGE, _MISS, _NO_ROOM, _REJECTED, _LOADING, _BUSY, _CLOUD, _PRELOAD, _OUTAGE = range(len(OUTCOMES))
#: fields of one result row, as ``_serve`` appends them
ROW = ("policy", "veh", "rsu", "svc", "mdl", "out", "evicted", "k", "acc", "switch", "acc_cost", "infer", "offload",
       "cloud", "t")
_SUMS = ("switch", "acc_cost", "infer", "offload", "cloud", "requests", "edge")


def row_columns(rows: list[tuple]) -> dict[str, list]:
    """Rows appended by ``_serve`` as columns (for inspection and tests)."""
    return {k: list(v) for k, v in zip(ROW, zip(*rows))} if rows else {k: [] for k in ROW}


@dataclass(frozen=True)
class CacheConfig:
    policies: list = option(["lc", "lfu", "fifo", "random", "cloud", "lru", "lc-predictive"],
                        doc="eviction policies run side by side (built-in or registered by a plugin)")
    options: dict = option({}, doc="per-policy options: [layers.cache.options.NAME] tables (see `cosim config`)")
    catalog: str = option("table1-per-task", choices=("table1", "table1-per-task", "custom"),
                      doc="table1: the six PFMs of Table I; table1-per-task: one fine-tuned copy per task "
                          "(22 models); custom: the `models` list")
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
    preference: float = option(0.7, lo=0.0, hi=1.0, doc="probability a vehicle asks for its own preferred service")
    request_tokens: int = option(100, lo=1, doc="tokens generated per LFM request")
    request_bits: float = option(8e5, lo=0.0, doc="request upload size [bit]")
    response_bits: float = option(8e5, lo=0.0, doc="response download size [bit]")
    aoc_tau_s: float = option(120.0, lo=0.0, lo_open=True, doc="Age of Context: an example's weight is exp(-age/tau)")
    cross_relevance: float = option(0.3, lo=0.0, hi=1.0, doc="weight of an example of another task of the same model")
    example_cost: float = option(0.02, lo=0.0, doc="compute per example in context, as a fraction of a request's")
    accuracy_weight: float = option(1.0, lo=0.0, doc="weight of the accuracy cost in the system cost")
    horizon_s: float = option(30.0, lo=0.0, lo_open=True, doc="lc-predictive: look-ahead along SUMO routes [s]")
    predict_every_s: float = option(5.0, lo=0.0, lo_open=True, doc="lc-predictive: how often it predicts and preloads [s]")
    predict_routes: bool = option(True, doc="lc-predictive: walk SUMO routes (false: extrapolate straight ahead)")
    predict_min_speed_mps: float = option(3.0, lo=0.0, doc="lc-predictive: speed floor for stopped vehicles [m/s]")


def _catalog(cfg: CacheConfig, where: str) -> tuple[list[Model], list[Service]]:
    if cfg.catalog == "table1":
        return table1()
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
    #: caches=False: never caches (all to the cloud); predictive: wants demand predicted along routes
    policy_traits = {"caches": True, "predictive": False}

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
        # lc-predictive's rule for whether a load pays: what serving one request of the model at
        # the edge saves against the cloud (no queue, no context; the best of its services)
        self.saving = [max(self.cloud_base[j] - self.flops[j] / (c.edge_tflops * 1e12)
                           for j in range(len(self.services)) if self.svc_model[j] == mdl)
                       for mdl in range(len(self.models))]
        self.predictive = any(pol.traits["predictive"] for pol in self.policies.values())
        self.caches: dict[str, list[EdgeCache]] = {}
        self.stats = {p: dict.fromkeys(("loads", "preloads", "evictions"), 0) for p in self.policies}
        self.sums = np.zeros((len(self.policies), len(_SUMS)))  # per policy: the Table II sums
        self.keys = {p: self._keys(p) for p in self.policies}
        self.last_model = np.full(0, -1, dtype=np.int64)  # per world vehicle index: model of its last request
        self.next_predict = -math.inf
        self.route_pos: dict[str, int] = {}

    def on_start(self) -> None:
        self.table = self.ctx.table("cache_requests")

    def _keys(self, policy: str) -> Keys | None:
        """The policy's eviction keys, checked (one sortable key per candidate); None: never caches."""
        if not self.policies[policy].traits["caches"]:
            return None

        def keys(c: EdgeCache, cands: list, t: float, rng) -> list:  # noqa: ANN001
            out = self.call(policy, c, cands, t, rng)
            try:
                if len(out) != len(cands):
                    raise PolicyFailed(f"returned {len(out)} keys for {len(cands)} candidate models")
                sorted(out)
            except TypeError as exc:
                raise PolicyFailed(f"returned keys that cannot be ordered ({exc})") from None
            return out

        return keys

    def _edges(self, policy: str, m: int) -> list[EdgeCache]:
        if policy not in self.caches:
            self.caches[policy] = [EdgeCache(self.cfg.gpu_memory_gb, self.size_gb, self.svc_model, self.window,
                                             self.cfg.aoc_tau_s, self.cfg.cross_relevance) for _ in range(m)]
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
        svc = np.where(rng.uniform(0.0, 1.0, n) < c.preference, own, other)
        return times, veh, np.minimum(svc, len(self.services) - 1)

    # -- per slot ------------------------------------------------------------------------
    def on_slot(self, world: World) -> None:
        times, veh, svc = self.requests(world)
        self.last_model = grown(self.last_model, len(world.vehicle_names), -1)
        m = len(world.rsus)
        c = self.cfg
        transfer = (c.request_bits / world.rate_v2i_bps[veh] + c.response_bits / world.rate_i2v_bps[veh]) \
            if len(veh) else np.zeros(0)
        rows: list[tuple] = []
        demand = None
        if self.predictive and world.time_s >= self.next_predict:
            self.next_predict = world.time_s + c.predict_every_s
            demand = self.predict_demand(world)
        times_l, rsu_l, svc_l, tr_l = times.tolist(), world.serving[veh].tolist(), svc.tolist(), transfer.tolist()
        for pi, policy in enumerate(self.policies):
            if policy in self.failed:
                continue
            edges = self._edges(policy, m)
            rng = self.rng_for(policy, world, f"cache.{policy}")
            mark = len(rows)
            try:
                if demand is not None and self.policies[policy].traits["predictive"]:
                    self._preload(pi, edges, demand, world.time_s, rng, rows)
                self._serve(pi, policy, edges, times_l, rsu_l, svc_l, tr_l, rng, rows)
            except PolicyFailed as exc:
                del rows[mark:]  # this slot's rows of the failed policy: its state is not to be trusted
                self.fail(policy, str(exc))
        if len(svc):
            self.last_model[world.vidx[veh]] = self.svc_model_arr[svc]
        self._write(rows, veh, world)

    def _serve(self, pi: int, policy: str, edges: list[EdgeCache], times: list, rsus: list, svcs: list,
               transfer: list, rng, rows: list) -> None:
        """Serve one policy's requests in time order, appending one :data:`ROW` tuple each."""
        c, st = self.cfg, self.stats[policy]
        edge_flops = c.edge_tflops * 1e12
        svc_model, best, window, fits, flops, cloud_base = (self.svc_model, self.best, self.window, self.fits,
                                                            self.flops, self.cloud_base)
        timeout, max_queue, w_acc, ex_cost = c.transfer_timeout_s, c.max_queue_s, c.accuracy_weight, c.example_cost
        keys, predictive, append = self.keys[policy], self.policies[policy].traits["predictive"], rows.append
        for i, (t, r, s, tr) in enumerate(zip(times, rsus, svcs, transfer)):
            e, mdl = edges[r], svc_model[s]
            if tr > timeout:  # lost in a deep fade: the same for every policy
                append((pi, i, r, s, mdl, _OUTAGE, "", 0.0, math.nan, 0.0, 0.0, 0.0, timeout, 0.0, t))
                continue
            if keys is None:  # the cloud policy
                append((pi, i, r, s, mdl, _CLOUD, "", 0.0, best[s], 0.0, 0.0, 0.0, 0.0, tr + cloud_base[s], t))
                continue
            e.freq[mdl] += 1
            if e.cached[mdl]:
                if e.ready_at[mdl] > t:
                    out = _LOADING
                else:
                    wait = e.busy_until - t if e.busy_until > t else 0.0
                    if wait > max_queue:
                        out = _BUSY
                    else:
                        k = e.examples(s, t) if window[s] else 0.0
                        acc = accuracy(fits[s], k) if window[s] else best[s]
                        infer = wait + flops[s] * (1.0 + ex_cost * k) / edge_flops
                        e.busy_until = t + infer
                        e.add_example(s, t)
                        e.last_used[mdl] = t
                        append((pi, i, r, s, mdl, _EDGE, "", k, acc, 0.0, w_acc * (best[s] - acc) / 100.0, infer, tr,
                                0.0, t))
                        continue
                append((pi, i, r, s, mdl, out, "", 0.0, best[s], 0.0, 0.0, 0.0, 0.0, tr + cloud_base[s], t))
                continue
            # miss: this request goes to the cloud; the model loads in the background
            admit = None
            if predictive:
                demand = e.demand[mdl] + 1.0
                admit = demand if demand * self.saving[mdl] > self.load_s[mdl] else -1.0
            gone = None if admit is not None and admit < 0 else make_room(e, mdl, t, keys, rng, admit)
            switch, evicted = 0.0, ""
            if gone is None:
                out = _NO_ROOM if admit is None or admit >= 0 else _REJECTED
            else:
                out = _MISS
                e.load(mdl, t, self.load_s[mdl])
                e.last_used[mdl] = t
                switch = self.load_s[mdl]
                evicted = ",".join(self.models[v].name for v in gone)
                st["loads"] += 1
                st["evictions"] += len(gone)
            append((pi, i, r, s, mdl, out, evicted, 0.0, best[s], switch, 0.0, 0.0, 0.0, tr + cloud_base[s], t))


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
        p = np.tile(self.pop_model, (n, 1))
        known = last >= 0
        p[known] *= 1.0 - c.preference
        p[np.flatnonzero(known), last[known]] += c.preference
        samples = 3
        per = c.request_rate_per_vehicle_s * c.horizon_s / samples
        for j in range(1, samples + 1):
            _, srv = r.associate(*self._ahead(world, c.horizon_s * j / samples))
            ok = srv >= 0
            np.add.at(out, srv[ok], per * p[ok])
        return out

    def _ahead(self, world: World, dt: float) -> tuple[np.ndarray, np.ndarray]:
        s = world.snap
        v = np.maximum(s.speed, self.cfg.predict_min_speed_mps)
        vx, vy = world.vx, world.vy
        scale = np.divide(v, s.speed, out=np.ones_like(v), where=s.speed > 0)
        x, y = s.x + vx * scale * dt, s.y + vy * scale * dt
        routes, ends, lengths = world.route_of, world.net.edge_ends, world.net.edge_length
        if routes is None or not self.cfg.predict_routes:
            return x, y
        x, y = x.copy(), y.copy()
        for i, (vid, edge) in enumerate(zip(s.ids, s.edge)):
            if edge not in ends:
                continue  # inside a junction: straight ahead is good enough
            route = routes[vid]
            k = route_index(route, edge, self.route_pos.get(vid, 0))
            if k < 0:
                continue
            self.route_pos[vid] = k
            pt = point_along(route, k, v[i] * dt + s.lane_pos[i], ends, lengths)
            # arrived (or off the known network): no demand from it
            x[i], y[i] = pt if pt is not None else (np.inf, np.inf)
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
                gone = make_room(e, mdl, t, keys, rng, admit_value=d)
                if gone is None:
                    continue
                e.load(mdl, t, self.load_s[mdl])
                st["preloads"] += 1
                st["evictions"] += len(gone)
                rows.append((pi, -1, r, -1, mdl, _PRELOAD, ",".join(self.models[v].name for v in gone), 0.0, math.nan,
                             self.load_s[mdl], 0.0, 0.0, 0.0, 0.0, t))

    # -- results ---------------------------------------------------------------------------
    def _write(self, rows: list, veh: np.ndarray, world: World) -> None:
        if not rows:
            return
        col = dict(zip(ROW, zip(*rows)))
        pol = np.asarray(col["policy"], dtype=np.int64)
        i = np.asarray(col["veh"], dtype=np.int64)
        out = np.asarray(col["out"], dtype=np.int64)
        terms = np.asarray([col[k] for k in _SUMS[:5]], dtype=float)  # switch, acc_cost, infer, offload, cloud
        system = terms.sum(axis=0)
        request = out != _PRELOAD
        edge = out == _EDGE
        p = len(self.policies)
        for j, w in enumerate(terms):
            self.sums[:, j] += np.bincount(pol, weights=w, minlength=p)
        self.sums[:, 5] += np.bincount(pol[request], minlength=p)
        self.sums[:, 6] += np.bincount(pol[edge], minlength=p)
        vcode = world.vidx[veh][np.maximum(i, 0)] if len(veh) else np.zeros(len(i), dtype=np.int64)
        self.table.append({
            "policy": Coded(pol, list(self.policies)),
            "t_s": np.asarray(col["t"], dtype=float),
            "vehicle": Coded(np.where(i >= 0, vcode, -1), world.vehicle_names),
            "rsu": Coded(np.asarray(col["rsu"], dtype=np.int64), world.rsus.ids),
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
            }
        return out
