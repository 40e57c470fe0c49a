"""The edge-cache layer: Table I's fit, Age of Context, each cost term and each eviction policy,
worked by hand on scripted request sequences."""

import math

import numpy as np
import pytest

from cosim.config import from_dict
from cosim.errors import ConfigError
from cosim.layers.base import LayerContext
from cosim.layers.cache.catalog import accuracy, per_task, table1, variants
from cosim.layers.cache.layer import CacheLayer, row_columns
from cosim import registry
from cosim.layers.cache.policies import EdgeCache, make_room

KEYS = {name: spec.fn for name, spec in registry.policies("cache").items()}
from cosim.recorder import Recorder
from cosim.sources.base import Snapshot
from cosim.world.network import NetInfo
from cosim.world.world import World


# -- Table I and Fig. 4 ------------------------------------------------------------------------
def test_fit_passes_through_every_table1_point():
    _, services = table1()
    lfm = [s for s in services if s.learns_in_context]
    assert len(lfm) == 6 and len(services) == 22
    for s in lfm:
        f = s.fit()
        assert accuracy(f, 0) == pytest.approx(s.zero_shot)
        assert accuracy(f, 1) == pytest.approx(s.one_shot)
        # every few-shot point but GPT3-13B arithmetic's (below its one-shot score, see below)
        few = s.one_shot if s.name == "gpt3-13b/arithmetic" else s.few_shot
        assert accuracy(f, s.window) == pytest.approx(few)
        assert s.best_accuracy == pytest.approx(max(s.one_shot, s.few_shot))


def test_negative_alpha_of_gpt3_13b_arithmetic_is_clamped_by_hand():
    s = {x.name: x for x in table1()[1]}["gpt3-13b/arithmetic"]
    # the unconstrained fit: a1 = 15.98 - 3.79 = 12.19; 50^alpha = 2^(10.55/12.19) - 1 = 0.821929,
    # alpha = ln 0.821929 / ln 50 = -0.196101 / 3.912023 = -0.050128: accuracy *falls* with K and
    # a(1e-6) = 3.79 + 12.19 log2(1 + e^(0.050128 * 13.815511)) = 3.79 + 12.19 log2(2.998664) = 23.10
    raw = (3.79, 12.19, math.log(2 ** (10.55 / 12.19) - 1) / math.log(50))
    assert raw[2] == pytest.approx(-0.050128, abs=2e-6)
    assert accuracy(raw, 1e-6) == pytest.approx(23.10, abs=0.01) and accuracy(raw, 50) == pytest.approx(14.34)
    # ours: alpha clamped at 0 (the least-squares fit with a(K) non-decreasing): one-shot for any K > 0
    a0, a1, alpha = s.fit()
    assert (a0, a1, alpha) == pytest.approx((3.79, 12.19, 0.0))
    for k in (1e-6, 0.3, 1.0, 7.0, 50.0):
        assert accuracy(s.fit(), k) == pytest.approx(15.98)
    assert s.best_accuracy == pytest.approx(15.98)
    # accuracy cost against the best: 0.1219 with no context, 0 with any; never negative
    assert (s.best_accuracy - accuracy(s.fit(), 0.0)) / 100 == pytest.approx(0.1219)


def test_accuracy_never_improves_by_dropping_context_nor_exceeds_the_best():
    grid = [0.0, 1e-9, 1e-6, 1e-3, 0.05, 0.2, 0.5, 0.9, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 16.0, 31.0, 32.0, 49.0, 50.0, 64.0]
    for s in table1()[1]:
        f = s.fit()
        ks = [k for k in grid if k <= max(s.window, 0)] or [0.0]
        acc = [accuracy(f, k) for k in ks]
        assert all(b >= a - 1e-12 for a, b in zip(acc, acc[1:])), s.name
        assert max(acc) <= s.best_accuracy + 1e-12 and min(acc) >= s.zero_shot - 1e-12, s.name


def test_vision_models_do_not_learn_in_context():
    s = {x.name: x for x in table1()[1]}["clip-vit-h14/classification"]
    assert not s.learns_in_context and s.best_accuracy == 77.97
    assert accuracy(s.fit(), 10) == 77.97


def test_per_task_catalog_has_one_copy_per_service_with_its_own_size():
    models, services = per_task(*table1())
    assert len(models) == len(services) == 22
    size = {m.name: m.params_m for m in models}
    assert size["uniformer-b:detection"] == 69 and size["uniformer-b:image-cls"] == 50  # Table I rows
    assert size["gpt3-175b:translation"] == 174600
    assert {s.model for s in services} == set(size)


def test_variants_catalog_serves_every_task_of_a_model_from_one_context():
    models, services = variants(*table1(), 3)
    assert len(models) == 18 and len(services) == 66
    assert [s.name for s in services[:3]] == ["gpt3-13b#1/translation", "gpt3-13b#1/arithmetic",
                                              "gpt3-13b#1/superglue"]
    assert {m.name: m.params_m for m in models}["clip-vit-h14#3"] == 986


def test_cross_task_relevance_acts_with_the_default_catalog(tmp_path):
    """GPT3-13B#1 (the default catalog's first model): translation at t=0 (miss; 25.7 GB load in
    3.2125 s) and t=10 (hit, no context), then SuperGLUE at t=20 sees the translation example at
    relevance 0.3: K = 0.3 e^(-10/120) = 0.276013. SuperGLUE's fit: a1 = 64.3 - 54.4 = 9.9,
    alpha = ln(2^(12.5/9.9) - 1) / ln 32 = ln 1.399362 / 3.465736 = 0.096945;
    a = 54.4 + 9.9 log2(1 + 0.276013^0.096945) = 54.4 + 9.9 log2(1.882679) = 63.4366."""
    out = {}
    for cross in (0.3, 0.0):
        rec = Recorder(tmp_path / str(cross))
        lay = CacheLayer({"policies": ["lc"], "cross_relevance": cross},
                         LayerContext(seed=3, slot_s=1.0, scenario_file="t.toml", table=rec.table))
        assert lay.cfg.catalog == "table1-variants" and lay.service_names[2] == "gpt3-13b#1/superglue"
        rows = []
        lay._serve(0, "lc", lay._edges("lc", 1), [0.0, 10.0, 20.0], [0] * 3, [0, 0, 2], [0.01] * 3, None, rows)
        out[cross] = row_columns(rows)
    assert out[0.3]["out"] == [1, 0, 0]
    assert out[0.3]["k"][2] == pytest.approx(0.276013, abs=1e-6) and out[0.0]["k"][2] == 0.0
    assert out[0.3]["acc"][2] == pytest.approx(63.4366, abs=1e-4) and out[0.0]["acc"][2] == pytest.approx(54.4)
    assert out[0.3]["acc_cost"][2] == pytest.approx((66.9 - 63.4366) / 100, abs=1e-6)


# -- Age of Context ----------------------------------------------------------------------------
def edge(capacity=10.0, sizes=(4.0, 4.0, 4.0, 6.0), tau=10.0, cross=0.5, window=(32, 32, 0, 0, 0)):
    # services: 0 and 1 belong to model 0; 2 -> model 1; 3 -> model 2; 4 -> model 3
    return EdgeCache(capacity, list(sizes), [0, 0, 1, 2, 3], list(window), tau, cross)


def test_age_of_context_decays_and_weighs_relevance_by_hand():
    c = edge()
    c.add_example(0, 0.0)
    assert c.examples(0, 10.0) == pytest.approx(math.exp(-1))  # one example, one tau old
    c.add_example(0, 10.0)
    assert c.S[0] == pytest.approx(1 + math.exp(-1))
    assert c.examples(0, 20.0) == pytest.approx((1 + math.exp(-1)) * math.exp(-1))  # 0.5032
    # service 1 of the same model sees service 0's examples at relevance 0.5
    assert c.examples(1, 20.0) == pytest.approx(0.5 * (1 + math.exp(-1)) * math.exp(-1))
    assert c.context(0, 20.0) == pytest.approx((1 + math.exp(-1)) * math.exp(-1))


def test_context_window_caps_k_and_eviction_drops_context():
    c = edge()
    c.load(0, 0.0, 0.0)
    for _ in range(40):
        c.add_example(0, 5.0)
    assert c.examples(0, 5.0) == 32.0  # the window
    assert c.context(0, 5.0) == 32.0  # LC's key too: the window holds at most 32 examples
    c.add_example(1, 5.0)  # plus one of the other task (relevance 0.5) -> 32.5, capped again
    assert c.context(0, 5.0) == 33.0 and c.examples(0, 5.0) == 32.0 and c.examples(1, 5.0) == 17.0
    c.evict(0)
    assert c.examples(0, 5.0) == 0.0 and c.context(0, 5.0) == 0.0 and c.used == 0.0


# -- eviction order on a scripted sequence -----------------------------------------------------
def scripted(policy: str) -> list[int]:
    """Models 0, 1, 2 (4 GB each, capacity 10 GB: two fit) requested as
    t=0: m0 (load), t=1: m1 (load), t=2..4: m0 x3 (hits), t=5: m1 (hit), then m2 needs room."""
    c = edge()
    rng = np.random.default_rng(0)
    seq = [(0.0, 0), (1.0, 2), (2.0, 0), (3.0, 0), (4.0, 0), (5.0, 2)]  # (time, service)
    for t, s in seq:  # the layer's bookkeeping (lfu-perfect: freq; lfu: count)
        m = c.service_model[s]
        c.freq[m] += 1
        if not c.cached[m]:
            make_room(c, m, t, KEYS[policy], rng)
            c.load(m, t, 0.0)
            c.count[m] = 1
        else:
            c.count[m] += 1
            c.add_example(s, t)
        c.last_used[m] = t
    return make_room(c, 3, 6.0, KEYS[policy], rng)


def test_each_policy_evicts_the_model_it_should():
    # m0: loaded first, 4 requests, 3 examples, last used t=4; m1: loaded second, 2 requests,
    # 1 example (t=5), last used t=5. m3 (6 GB) needs 2 GB more than the free 2 GB: one victim.
    assert scripted("fifo") == [0]  # first in
    assert scripted("lru") == [0]  # used at 4 < 5
    assert scripted("lfu") == [1]  # 2 requests < 4
    assert scripted("lfu-perfect") == [1]
    # LC: context of m0 = e^-0.4 + e^-0.3 + e^-0.2 = 2.231, of m1 = e^-0.1 = 0.905
    assert scripted("lc") == [1]


def test_lc_and_lfu_part_ways_when_context_has_aged():
    # m0 was popular long ago (3 examples at t=0..2), m1 requested once recently (t=60):
    # LFU keeps m0 (3 > 1 requests); LC keeps m1 (e^-6 * 3 = 0.0074 < e^-0.1 = 0.905)
    out = {}
    for policy in ("lc", "lfu"):
        c = edge(window=(32, 32, 32, 0, 0))  # model 1 learns in context here
        for m in (0, 1):
            c.load(m, 0.0, 0.0)
        for t in (0.0, 1.0, 2.0):
            c.add_example(0, t)
            c.freq[0] += 1
            c.count[0] += 1
        c.add_example(2, 59.0)
        c.freq[1] += 1
        c.count[1] += 1
        out[policy] = make_room(c, 3, 60.0, KEYS[policy], np.random.default_rng(0))
    assert out == {"lc": [0], "lfu": [1]}


def test_no_context_without_an_in_context_window():
    # service 2 (model 1) and 3 (model 2) have no window (Table I's "-"): serving them adds nothing,
    # so LC's key for them is zero context and its tie-break (least recently used) decides
    c = edge()
    for m in (1, 2):
        c.load(m, 0.0, 0.0)
    for t in (1.0, 2.0, 3.0):
        c.add_example(2, t)
    c.add_example(3, 4.0)
    assert c.S[2] == c.S[3] == 0.0 and c.context(1, 5.0) == c.context(2, 5.0) == 0.0
    c.last_used[1], c.last_used[2] = 3.0, 4.0
    assert KEYS["lc"](c, [1, 2], 5.0) == [(0.0, 3.0), (0.0, 4.0)]


def test_lfu_forgets_a_model_on_eviction_lfu_perfect_does_not():
    # m0 was requested 10 times but was evicted and has just been reloaded (1 request since);
    # m1 has had 3 requests, all while cached. In-cache LFU evicts m0, perfect LFU m1
    out = {}
    for policy in ("lfu", "lfu-perfect"):
        c = edge()
        for m in (0, 1):
            c.load(m, 0.0, 0.0)
        c.freq[:2], c.count[:2] = [10, 3], [1, 3]
        out[policy] = make_room(c, 3, 1.0, KEYS[policy], None)
    assert out == {"lfu": [0], "lfu-perfect": [1]}


def test_layer_counts_requests_in_cache_and_cold_evictions(tmp_path):
    lay, _ = tiny_layer(tmp_path, policies=["lfu"])
    e = lay._edges("lfu", 1)[0]
    rows = []
    # A (2 GB, 1 s): miss t=0, loading t=0.5, hit t=2; B (6 GB, 3 s) misses at t=4 and evicts A;
    # A misses at t=10 and evicts B, which never served a request (a cold eviction)
    lay._serve(0, "lfu", [e], [0.0, 0.5, 2.0, 4.0], [0] * 4, [0, 0, 0, 1], [0.01] * 4, None, rows)
    assert (e.freq[:2], e.count[:2], e.hits[:2]) == ([3, 1], [0, 1], [1, 0])  # A's count forgotten
    lay._serve(0, "lfu", [e], [10.0], [0], [0], [0.01], None, rows)
    assert (e.freq[:2], e.count[:2]) == ([4, 1], [1, 0])
    assert {k: lay.stats["lfu"][k] for k in ("loads", "evictions", "cold_evictions")} == \
        {"loads": 3, "evictions": 2, "cold_evictions": 1}


def test_lc_evicts_a_fresh_model_first_unless_given_grace():
    # m0: ready since t=0 with 2 examples; m1: loaded at t=5, ready at t=8, no context yet.
    # m3 (6 GB) needs one of them out at t=10
    grace = registry.policies("cache")["lc"].options(grace_s=5.0)
    out = []
    for keys in (KEYS["lc"], lambda c, cands, t, rng: KEYS["lc"](c, cands, t, rng, grace)):
        c = edge()
        c.load(0, -1.0, 1.0)
        c.add_example(0, 0.0)
        c.add_example(0, 1.0)
        c.load(1, 5.0, 3.0)
        out.append(make_room(c, 3, 10.0, keys, None))
    assert out == [[1], [0]]  # the paper's LC drops the fresh model; ready 2 s ago, within 5 s of grace, it stays


def test_make_room_restores_victims_that_were_not_needed():
    # 1 GB + 6 GB cached, capacity 10, free 3: loading 8 GB needs 5 more. LRU picks the small
    # one first (older), then the 6 GB one; the 1 GB eviction turns out unneeded and is undone
    c = EdgeCache(10.0, [1.0, 6.0, 8.0], [0, 1, 2], [0, 0, 0], 10.0, 0.0)
    c.load(0, 0.0, 0.0)
    c.load(1, 0.0, 0.0)
    c.last_used = [1.0, 2.0, -math.inf]
    assert make_room(c, 2, 3.0, KEYS["lru"], None) == [1]
    assert c.cached[:2] == [True, False] and c.free() == pytest.approx(9.0)


def test_per_victim_asks_once_per_victim_and_picks_what_the_heap_picks():
    # 1, 2, 3 GB cached (ready), capacity 7, free 1: a 5 GB model needs 4 GB more. In LRU order
    # m0 (need 3 left), m1 (1 left), m2 (2 GB too many): then m0 (1 GB <= 2) is restored, m1 not
    def cache():
        c = EdgeCache(7.0, [1.0, 2.0, 3.0, 5.0], [0, 1, 2, 3], [0, 0, 0, 0], 10.0, 0.0, rsu=2)
        for m in (0, 1, 2):
            c.load(m, 0.0, 0.0)
        c.last_used = [1.0, 2.0, 3.0, -math.inf]
        return c

    asked = []

    def lru_logged(c, cands, t, rng, opts=None):
        asked.append((list(cands), c.incoming, c.need, c.rsu))
        return KEYS["lru"](c, cands, t, rng)

    heap = make_room(cache(), 3, 4.0, KEYS["lru"], None)
    one_by_one = make_room(cache(), 3, 4.0, lru_logged, None, per_victim=True)
    assert heap == one_by_one == [1, 2]
    # asked three times, each with the candidates left and the memory still to free
    assert asked == [([0, 1, 2], 3, 4.0, 2), ([1, 2], 3, 3.0, 2), ([2], 3, 1.0, 2)]


def test_make_room_refuses_a_model_larger_than_memory_and_models_still_loading():
    c = edge(sizes=(4.0, 4.0, 4.0, 11.0))
    assert make_room(c, 3, 0.0, KEYS["lc"], None) is None
    c.load(0, 0.0, 5.0)  # ready at 5
    c.load(1, 0.0, 5.0)
    assert make_room(c, 2, 1.0, KEYS["lc"], None) is None and c.cached[:2] == [True, True]


# -- the layer's cost terms, by hand --------------------------------------------------------
NET = NetInfo("mem", {"e": 5000.0}, np.array([[0.0, 0.0]]), (0.0, 0.0, 1000.0, 0.0))
TINY = [
    {"name": "A", "params_m": 1000, "services": [{"task": "x", "gflops": 100, "zero_shot": 50, "one_shot": 60,
                                                  "few_shot": 70, "window": 8}]},
    {"name": "B", "params_m": 3000, "services": [{"task": "y", "gflops": 200, "zero_shot": 80}]},
]


def tiny_layer(tmp_path, **cfg):
    rec = Recorder(tmp_path)
    ctx = LayerContext(seed=3, slot_s=1.0, scenario_file="t.toml", table=rec.table)
    base = {"catalog": "custom", "models": TINY, "gpu_memory_gb": 7.0, "load_gbps": 2.0, "edge_tflops": 1.0,
            "cloud_tflops": 10.0, "cloud_latency_s": 0.2, "cloud_fee": 0.1, "aoc_tau_s": 10.0, "example_cost": 0.02,
            "request_rate_per_vehicle_s": 0.0}
    lay = CacheLayer({**base, **cfg}, ctx)
    lay.on_start()
    return lay, rec


def test_cost_terms_of_a_scripted_sequence_by_hand(tmp_path):
    lay, rec = tiny_layer(tmp_path, policies=["lc"])
    edges = lay._edges("lc", 1)
    rows = []
    # A: 2 GB, loads in 1 s; B: 6 GB, 3 s; memory 7 GB. A/x: 1e11 FLOP -> 0.1 s at the edge.
    lay._serve(0, "lc", edges, [0.0, 0.5, 2.0, 3.0, 4.0], [0] * 5, [0, 0, 0, 0, 1], [0.01] * 5, None, rows)
    cols = row_columns(rows)
    assert cols["out"] == [1, 4, 0, 0, 1]  # miss, loading, hit, hit, miss (evicts A)
    # cloud cost = transfer 0.01 + RTT 0.2 + fee 0.1 + 1e11 / 1e13 = 0.32
    assert cols["cloud"][:2] == pytest.approx([0.32, 0.32])
    assert cols["switch"] == pytest.approx([1.0, 0.0, 0.0, 0.0, 3.0])
    assert cols["evicted"] == ["", "", "", "", "A"]
    # hit at t=2: K = 0 -> a = 50; a_best = a(8) = 70; accuracy cost 0.2; inference 0.1 s
    assert cols["k"][2] == 0.0 and cols["acc"][2] == pytest.approx(50.0)
    assert cols["acc_cost"][2] == pytest.approx(0.2) and cols["infer"][2] == pytest.approx(0.1)
    assert cols["offload"][2] == 0.01
    # hit at t=3: K = e^-0.1 = 0.904837; alpha = ln 3 / ln 8 = 0.528321 (70 = 50 + 10 log2(1 + 8^alpha))
    # a = 50 + 10 log2(1 + e^(-0.0528321)) = 50 + 10 log2(1.948539) = 50 + 10 * 0.962393 = 59.6239
    assert cols["k"][3] == pytest.approx(0.904837, abs=1e-6)
    assert cols["acc"][3] == pytest.approx(59.6239, abs=1e-4)
    assert cols["infer"][3] == pytest.approx(0.1 * (1 + 0.02 * 0.904837))
    # B's miss at t=4 goes to the cloud: 0.01 + 0.3 + 2e11 / 1e13
    assert cols["cloud"][4] == pytest.approx(0.33)
    assert lay.stats["lc"] == {"loads": 2, "preloads": 0, "evictions": 1, "cold_evictions": 0, "handed_over": 0,
                               "lost_responses": 0}


def test_a_hit_is_never_charged_a_negative_accuracy_cost(tmp_path):
    # model A with GPT3-13B arithmetic's scores (few-shot below one-shot: alpha clamped at 0)
    arith = [{"name": "A", "params_m": 1000, "services": [{"task": "x", "gflops": 100, "zero_shot": 3.79,
                                                           "one_shot": 15.98, "few_shot": 14.34, "window": 50}]}]
    lay, _ = tiny_layer(tmp_path, policies=["lc"], models=arith)
    rows = []
    lay._serve(0, "lc", lay._edges("lc", 1), [0.0, 2.0, 3.0, 40.0], [0] * 4, [0] * 4, [0.01] * 4, None, rows)
    cols = row_columns(rows)
    assert cols["out"] == [1, 0, 0, 0]  # miss (loads in 1 s), three hits
    # t=2: no context, a = 3.79, cost (15.98 - 3.79)/100; t=3: K = e^-0.1; t=40: K = e^-3.8 + e^-3.7 = 0.0471
    assert cols["acc"][1:] == pytest.approx([3.79, 15.98, 15.98])
    assert cols["acc_cost"][1:] == pytest.approx([0.1219, 0.0, 0.0])
    assert cols["k"][3] == pytest.approx(math.exp(-3.8) + math.exp(-3.7))


def test_queue_and_outage_send_requests_elsewhere(tmp_path):
    lay, _ = tiny_layer(tmp_path, policies=["lru"], max_queue_s=0.15, transfer_timeout_s=1.0)
    edges = lay._edges("lru", 1)
    edges[0].load(0, -10.0, 1.0)  # A ready
    rows = []
    # three requests at t=0: 0.1 s each; the third would wait 0.2 s > 0.15 -> busy (cloud);
    # a fourth whose radio transfer takes 2 s is lost (outage) and costs the 1 s timeout
    lay._serve(0, "lru", edges, [0.0, 0.0, 0.0, 0.0], [0] * 4, [0] * 4, [0.01, 0.01, 0.01, 2.0], None, rows)
    cols = row_columns(rows)
    assert cols["out"] == [0, 0, 5, 8]
    assert cols["infer"][:2] == pytest.approx([0.1, 0.1 + 0.1 * (1 + 0.02 * 1.0)])
    assert cols["offload"][3] == 1.0 and cols["cloud"][3] == 0.0


def test_cloud_policy_never_caches(tmp_path):
    lay, _ = tiny_layer(tmp_path, policies=["cloud"])
    edges = lay._edges("cloud", 1)
    rows = []
    lay._serve(0, "cloud", edges, [0.0, 5.0], [0, 0], [0, 0], [0.01, 0.01], None, rows)
    cols = row_columns(rows)
    assert cols["out"] == [6, 6] and not any(edges[0].cached) and cols["acc_cost"] == [0.0, 0.0]


# -- drifting demand ---------------------------------------------------------------------------
def two_region_world(t: float, n: int = 200) -> World:
    """n vehicles next to RSU A (x=0) and n next to RSU B (x=5000), at time t."""
    net = NetInfo("mem", {"e": 6000.0}, np.array([[0.0, 0.0]]), (-100.0, -100.0, 5100.0, 100.0))
    cfg = from_dict({"scenario": {"sumocfg": "/dev/null", "seed": 3},
                     "rsu": {"placement": "sites", "radius_m": 300.0,
                             "sites": [{"id": "A", "x": 0.0, "y": 0.0}, {"id": "B", "x": 5000.0, "y": 0.0}]}}, "t.toml")
    w = World(cfg, net)
    x = np.r_[np.full(n, 10.0), np.full(n, 5010.0)]
    z = np.zeros(2 * n)
    w.update(Snapshot(t, np.array([f"v{i}" for i in range(2 * n)], dtype=object), x, z, z, z, z,
                      np.full(2 * n, "e", dtype=object), np.full(2 * n, "e_0", dtype=object), x, np.full(2 * n, 5.0)))
    return w


def test_a_response_queued_across_a_handover_is_charged_at_the_new_rsus_rate(tmp_path):
    """B/y (no context, 2e11 FLOP: 0.2 s at 1 TFLOP/s) is cached at both RSUs. Vehicle v0 asks
    three times at t=0.5 at RSU A: served at 0.7, 0.9 and 1.1 s; the third is served in the next
    slot, when v0 is under RSU B: its download goes at B's rate; with v0 out of coverage by then,
    the response is lost (the 1 s transfer timeout)."""
    import pandas as pd

    out = {}
    for case, x1 in (("handover", 5010.0), ("lost", 2500.0)):
        lay, rec = tiny_layer(tmp_path / case, policies=["lru"])
        w = two_region_world(0.0, 1)
        for e in lay._edges("lru", 2):
            e.load(1, -10.0, 1.0)
        lay.requests = lambda world: (np.array([0.5, 0.5, 0.5]), np.zeros(3, dtype=np.int64), np.ones(3, dtype=np.int64))
        lay.on_slot(w)
        up0, down0 = 8e5 / w.rate_v2i_bps[0], 8e5 / w.rate_i2v_bps[0]
        assert len(lay.pending) == 1 and lay.pending[0][0] == pytest.approx(1.1)
        snap = w.snap
        x = np.array([x1, 5010.0])
        w.update(Snapshot(1.0, snap.ids, x, snap.y, snap.speed, snap.angle, snap.accel, snap.edge, snap.lane, x,
                          snap.length))
        lay.requests = lambda world: (np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        lay.on_slot(w)
        lay.on_end()
        rec.close()
        df = pd.read_parquet(tmp_path / case / "cache_requests.parquet")
        assert list(df.outcome) == ["hit"] * 3 and list(df.inference_latency_s) == pytest.approx([0.2, 0.4, 0.6])
        assert list(df.offloading_latency_s[:2]) == pytest.approx([up0 + down0] * 2)
        out[case] = (df.delivered_by.tolist(), df.offloading_latency_s.iloc[2], lay.stats["lru"],
                     8e5 / w.rate_i2v_bps[0] if x1 > 3000 else None, up0)
    by, off, st, down1, up0 = out["handover"]
    assert by == ["A", "A", "B"] and off == pytest.approx(up0 + down1) and st["handed_over"] == 1
    by, off, st, _, up0 = out["lost"]
    assert by[:2] == ["A", "A"] and pd.isna(by[2]) and off == pytest.approx(up0 + 1.0) and st["lost_responses"] == 1


def drift_layer(tmp_path, **cfg):
    rec = Recorder(tmp_path)
    return CacheLayer({"policies": ["lc"], "request_rate_per_vehicle_s": 5.0, "preference": 0.0, **cfg},
                      LayerContext(seed=3, slot_s=1.0, scenario_file="t.toml", table=rec.table))


def test_popularity_drifts_every_period(tmp_path):
    lay = drift_layer(tmp_path, drift_every_s=60.0)
    assert lay.ranking(two_region_world(59.0)) is None  # period 0: the catalog order, as without drift
    r60, r90, r120 = (lay.ranking(two_region_world(t)).copy() for t in (60.0, 90.0, 120.0))
    n = len(lay.services)
    assert r60.shape == (1, n) and sorted(r60[0]) == list(range(n)) and (r60 != np.arange(n)).any()
    assert (r60 == r90).all() and (r60 != r120).any()  # one ranking per period
    assert (drift_layer(tmp_path / "b", drift_every_s=60.0).ranking(two_region_world(60.0)) == r60).all()
    # the requests follow it: the most requested service is the law's first rank (Zipf 0.8 over
    # 66 services: 14.0 % against 8.0 % for the second; 2000 requests per slot)
    for t, top in ((30.0, 0), (60.0, r60[0, 0]), (120.0, r120[0, 0])):
        _, _, svc = lay.requests(two_region_world(t))
        assert np.bincount(svc, minlength=n).argmax() == top


def test_popularity_by_region(tmp_path):
    lay = drift_layer(tmp_path, regional_popularity=True)
    w = two_region_world(0.0)
    rank = lay.ranking(w)
    assert rank.shape == (2, len(lay.services)) and (rank[0] != rank[1]).any()
    _, veh, svc = lay.requests(w)
    at_a = w.serving[veh] == 0
    assert np.bincount(svc[at_a]).argmax() == rank[0, 0] and np.bincount(svc[~at_a]).argmax() == rank[1, 0]
    # lc-predictive's law: each RSU's own, per model
    law = lay.law(w)
    assert law.shape == (2, len(lay.models)) and law.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert law[0, lay.svc_model[rank[0, 0]]] >= lay.pop[0]


# -- lc-predictive: where SUMO's route takes a vehicle -------------------------------------
def test_route_walk_follows_the_route_around_the_corner(tmp_path):
    net = NetInfo("mem", {"e1": 100.0, "e2": 100.0}, np.array([[0.0, 0.0]]), (0.0, 0.0, 100.0, 100.0),
                  {"e1": (0.0, 0.0, 100.0, 0.0), "e2": (100.0, 0.0, 100.0, 100.0)})
    cfg = from_dict({"scenario": {"sumocfg": "/dev/null", "seed": 3},
                     "rsu": {"placement": "sites", "sites": [{"id": "A", "x": 0.0, "y": 0.0}]}}, "t.toml")
    w = World(cfg, net)
    s = Snapshot(0.0, np.array(["v", "w"], dtype=object), np.array([50.0, 50.0]), np.zeros(2), np.array([10.0, 10.0]),
                 np.array([90.0, 90.0]), np.zeros(2), np.array(["e1", "e1"], dtype=object),
                 np.array(["e1_0", "e1_0"], dtype=object), np.array([50.0, 50.0]), np.full(2, 5.0))
    w.update(s)
    lay, _ = tiny_layer(tmp_path)
    w.route_of = {"v": ("e1", "e2"), "w": ("e1",)}
    x, y = lay._ahead(w, 10.0)  # 100 m: 50 m to the end of e1, 50 m up e2; w's route ends
    assert (x[0], y[0]) == pytest.approx((100.0, 50.0))
    assert math.isinf(x[1])
    w.route_of = None  # a replay has no routes: straight ahead
    x, y = lay._ahead(w, 10.0)
    assert (x[0], y[0]) == pytest.approx((150.0, 0.0), abs=1e-9)


def test_route_walk_crosses_the_junction_on_its_internal_edge(tmp_path):
    # the world's one walker: SUMO drives e1 -> e2 on ":J_0" (20 m, from (100, 0) to (100, 0)).
    # v at 50 m on e1 at 10 m/s, 10 s ahead = 100 m: 50 m to e1's end, 20 m across the
    # junction, 30 m up e2: (100, 30). w is inside the junction, 5 m into ":J_0": 15 m to e2,
    # then 85 m up it: (100, 85)
    net = NetInfo("mem", {"e1": 100.0, "e2": 100.0, ":J_0": 20.0}, np.array([[0.0, 0.0]]), (0.0, 0.0, 100.0, 100.0),
                  {"e1": (0.0, 0.0, 100.0, 0.0), "e2": (100.0, 0.0, 100.0, 100.0)}, edge_via={("e1", "e2"): ":J_0"})
    cfg = from_dict({"scenario": {"sumocfg": "/dev/null", "seed": 3},
                     "rsu": {"placement": "sites", "sites": [{"id": "A", "x": 0.0, "y": 0.0}]}}, "t.toml")
    w = World(cfg, net)
    w.route_of = {"v": ("e1", "e2"), "w": ("e1", "e2")}
    w.update(Snapshot(0.0, np.array(["v", "w"], dtype=object), np.array([50.0, 100.0]), np.zeros(2),
                      np.array([10.0, 10.0]), np.array([90.0, 0.0]), np.zeros(2),
                      np.array(["e1", ":J_0"], dtype=object), np.array(["e1_0", ":J_0_0"], dtype=object),
                      np.array([50.0, 5.0]), np.full(2, 5.0)))
    lay, _ = tiny_layer(tmp_path)
    x, y = lay._ahead(w, 10.0)
    assert (x[0], y[0]) == pytest.approx((100.0, 30.0)) and (x[1], y[1]) == pytest.approx((100.0, 85.0))


def test_bad_cache_config_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="layers.cache.policies: unknown policy 'lfru'"):
        tiny_layer(tmp_path, policies=["lfru"])
    with pytest.raises(ConfigError, match=r"layers.cache.models\[0\].services\[0\]: missing key 'gflops'"):
        tiny_layer(tmp_path, models=[{"name": "A", "params_m": 1, "services": [{"task": "x", "zero_shot": 1}]}])
    with pytest.raises(ConfigError, match=r"layers.cache.models\[0\].services\[0\]: .*one_shot 40.0 is below zero_shot"):
        tiny_layer(tmp_path, models=[{"name": "A", "params_m": 1, "services": [
            {"task": "x", "gflops": 1, "zero_shot": 50, "one_shot": 40.0, "few_shot": 60, "window": 8}]}])
    with pytest.raises(ConfigError, match="layers.cache.popularity: need 2"):
        tiny_layer(tmp_path, popularity=[1.0])
    with pytest.raises(ConfigError, match="layers.cache.miss: 'never' is not one of cloud, wait"):
        tiny_layer(tmp_path, miss="never")
    with pytest.raises(ConfigError, match="layers.cache.costs: 'paper' is not one of ours, table2"):
        tiny_layer(tmp_path, costs="paper")
    with pytest.raises(ConfigError, match="layers.cache.miss_wait_max_s: -1 is out of range"):
        tiny_layer(tmp_path, miss_wait_max_s=-1)


# -- the miss rule (miss = "cloud" | "wait") ----------------------------------------------------
def one_request(tmp_path, **cfg):
    """One RSU, one vehicle, one request for A/x at t = 0.5 (A: 2 GB, loads in 1 s; 1e11 FLOP:
    0.1 s at the edge), nothing cached: the run's summary block and the row."""
    import pandas as pd

    lay, rec = tiny_layer(tmp_path, policies=["lc"], **cfg)
    w = two_region_world(0.0, 1)
    lay.requests = lambda world: (np.array([0.5]), np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64))
    lay.on_slot(w)
    block = lay.on_end()["lc"]
    rec.close()
    tr = 8e5 / w.rate_v2i_bps[0] + 8e5 / w.rate_i2v_bps[0]
    return block, pd.read_parquet(tmp_path / "cache_requests.parquet").iloc[0], tr


def test_a_miss_goes_to_the_cloud_or_waits_for_a_short_load_by_hand(tmp_path):
    """cloud: the request is served by the cloud while A loads: switching 1 (the load) + cloud
    (transfer + 0.2 RTT + 0.1 fee + 1e11/1e13 = transfer + 0.31) = 1.31 + transfer.
    wait (load 1 s <= miss_wait_max_s = 1.5): A loads, then the request runs at the edge with no
    context: switching 1 + accuracy (70 - 50)/100 = 0.2 + inference (1 s load wait + 0.1 s) 1.1
    + offloading (the transfer) = 2.3 + transfer; edge ratio 1. wait with miss_wait_max_s = 0.5:
    the load is too long, as cloud."""
    cloud, row, tr = one_request(tmp_path / "cloud")
    assert row.outcome == "miss" and not row.edge
    assert (cloud["switching_cost"], cloud["cloud_cost"], cloud["inference_latency"]) == pytest.approx((1.0, tr + 0.31, 0.0))
    assert cloud["system_cost"] == pytest.approx(1.31 + tr) and cloud["edge_execution_ratio"] == 0.0
    wait, row, tr2 = one_request(tmp_path / "wait", miss="wait", miss_wait_max_s=1.5)
    assert tr2 == tr and row.outcome == "load-wait" and row.edge and row.accuracy == 50.0
    assert (wait["switching_cost"], wait["total_accuracy_cost"], wait["inference_latency"], wait["offloading_latency"],
            wait["cloud_cost"]) == pytest.approx((1.0, 0.2, 1.1, tr, 0.0))
    assert wait["system_cost"] == pytest.approx(2.3 + tr) and wait["edge_execution_ratio"] == 1.0
    assert wait["loads"] == 1 and wait["cold_evictions"] == 0
    short, row, _ = one_request(tmp_path / "short", miss="wait", miss_wait_max_s=0.5)
    assert row.outcome == "miss" and short["system_cost"] == pytest.approx(cloud["system_cost"])


def test_a_request_while_its_model_loads_waits_for_the_rest_of_the_load_by_hand(tmp_path):
    """A misses at t=0 (loads 0..1 s), a second A request at t=0.5, B (6 GB, 3 s) misses at t=0.6
    but cannot fit (A is still loading): miss_wait_max_s = 0.8.
    t=0: load 1 s <= 0.8? no -> cloud (miss), as with miss = cloud.
    t=0.5: 0.5 s of the load left <= 0.8 -> waits: ready at 1.0, no queue, K = 0 -> 0.1 s;
    inference 0.5 + 0.1 = 0.6, accuracy cost 0.2; under miss = cloud it is 'loading' (cloud)."""
    rows = {}
    for miss in ("cloud", "wait"):
        lay, _ = tiny_layer(tmp_path / miss, policies=["lc"], miss=miss, miss_wait_max_s=0.8)
        got = []
        lay._serve(0, "lc", lay._edges("lc", 1), [0.0, 0.5, 0.6], [0] * 3, [0, 0, 1], [0.01] * 3, None, got)
        rows[miss] = row_columns(got)
    cloud, wait = rows["cloud"], rows["wait"]
    assert cloud["out"] == [1, 4, 2] and wait["out"] == [1, 9, 2]  # miss, loading | load-wait, miss-no-room
    assert cloud["switch"] == wait["switch"] == [1.0, 0.0, 0.0]
    assert wait["infer"] == pytest.approx([0.0, 0.6, 0.0]) and wait["acc_cost"] == pytest.approx([0.0, 0.2, 0.0])
    assert wait["cloud"] == pytest.approx([0.32, 0.0, 0.33]) and cloud["cloud"] == pytest.approx([0.32, 0.32, 0.33])


def test_a_waited_request_queues_behind_the_gpu_after_the_load_by_hand(tmp_path):
    """miss = wait, miss_wait_max_s = 1.5: A at t=0 waits for its load (ready at 1.0) and runs
    1.0..1.1; A at t=0.5 waits for the rest of the load (0.5 s) and for the GPU (0.1 s after the
    load), with the first request's example in context, K = e^(-0.5/10) = 0.951229:
    computation 0.1 (1 + 0.02 K) = 0.101902, inference 0.5 + 0.1 + 0.101902 = 0.701902;
    alpha = ln 3 / ln 8 = 0.528321, K^alpha = e^(-0.026416) = 0.973930,
    a = 50 + 10 log2(1.973930) = 59.8107, accuracy cost (70 - 59.8107)/100 = 0.101893.
    With max_queue_s = 0.05 the second one finds the GPU busy for 0.1 s after the load: cloud."""
    lay, _ = tiny_layer(tmp_path, policies=["lc"], miss="wait", miss_wait_max_s=1.5)
    got = []
    lay._serve(0, "lc", lay._edges("lc", 1), [0.0, 0.5], [0, 0], [0, 0], [0.01] * 2, None, got)
    cols = row_columns(got)
    assert cols["out"] == [9, 9] and cols["infer"] == pytest.approx([1.1, 0.701902], abs=1e-6)
    assert cols["k"][1] == pytest.approx(0.951229, abs=1e-6) and cols["acc"][1] == pytest.approx(59.8107, abs=1e-4)
    assert cols["acc_cost"] == pytest.approx([0.2, 0.101893], abs=1e-6)
    lay, _ = tiny_layer(tmp_path / "q", policies=["lc"], miss="wait", miss_wait_max_s=1.5, max_queue_s=0.05)
    got = []
    lay._serve(0, "lc", lay._edges("lc", 1), [0.0, 0.5], [0, 0], [0, 0], [0.01] * 2, None, got)
    assert row_columns(got)["out"] == [9, 5]  # load-wait, busy


# -- the cost presets --------------------------------------------------------------------------
def test_table2_preset_weighs_each_term_by_hand(tmp_path):
    """The one-request example under costs = table2 (switching 0.29, accuracy 8.8, inference
    10.7, offloading 0.30, cloud 1): cloud: 0.29 x 1 + (0.31 + transfer); wait: 0.29 x 1 + 8.8 x 0.2
    + 10.7 x 1.1 + 0.30 x transfer = 0.29 + 1.76 + 11.77 + 0.3 transfer. accuracy_weight = 2
    doubles the accuracy term."""
    cloud, _, tr = one_request(tmp_path / "cloud", costs="table2")
    assert cloud["switching_cost"] == pytest.approx(0.29) and cloud["system_cost"] == pytest.approx(0.29 + 0.31 + tr)
    wait, _, _ = one_request(tmp_path / "wait", costs="table2", miss="wait", miss_wait_max_s=1.5)
    assert (wait["switching_cost"], wait["total_accuracy_cost"], wait["inference_latency"],
            wait["offloading_latency"]) == pytest.approx((0.29, 1.76, 11.77, 0.3 * tr))
    assert wait["system_cost"] == pytest.approx(13.82 + 0.3 * tr)
    double, _, _ = one_request(tmp_path / "double", costs="table2", miss="wait", miss_wait_max_s=1.5,
                               accuracy_weight=2.0)
    assert double["total_accuracy_cost"] == pytest.approx(3.52)


def test_table2_preset_gives_lc_the_shares_of_table2():
    """The derivation of the preset, checked: our LC's mean terms on grid6_cache (defaults, 300 s,
    seeds 101-110: switching 199.7, accuracy 9.08, inference 21.4, offloading 186.2, cloud 456.6)
    weighted by the preset have Table II's LC shares (0.32, 0.44, 1.26, 0.31, 2.52 of 4.85:
    6.6, 9.1, 26.0, 6.4, 52.0 %) within half a point; unweighted, accuracy is 1.0 %."""
    from cosim.layers.cache.layer import COST_PRESETS

    ours = np.array([199.7, 9.08, 21.4, 186.2, 456.6])
    paper = np.array([0.32, 0.44, 1.26, 0.31, 2.52]) / 4.85
    for name, tol in (("table2", 0.005), ("ours", None)):
        w = ours * np.array(COST_PRESETS[name])
        share = w / w.sum()
        if tol is not None:
            assert share == pytest.approx(paper, abs=tol)
        else:
            assert share[1] == pytest.approx(0.0104, abs=5e-4)
    assert COST_PRESETS["ours"] == (1.0,) * 5


# -- malformed keys ------------------------------------------------------------------------------
@pytest.mark.parametrize("key", [math.nan, (0.0, math.nan), np.float64("nan"), (True, (1.0, math.nan)), [2.0, math.nan]])
def test_a_policy_returning_nan_keys_is_dropped_with_one_line(tmp_path, capsys, key):
    """A is cached; a request for B needs room, so each policy ranks A: the one answering NaN (a
    key that compares false with everything, so the victim would be arbitrary) is dropped with
    the layer's one line; LC goes on and loads B."""
    registry.register_policy("cache", "nan-keys")(lambda c, cands, t, rng, opts: [key] * len(cands))
    try:
        lay, rec = tiny_layer(tmp_path, policies=["lc", "nan-keys"])
        w = two_region_world(0.0, 1)
        for p in ("lc", "nan-keys"):
            lay._edges(p, 2)[0].load(0, -10.0, 1.0)
        lay.requests = lambda world: (np.array([0.5]), np.zeros(1, dtype=np.int64), np.ones(1, dtype=np.int64))
        lay.on_slot(w)
        out = lay.on_end()
    finally:
        registry._POLICIES["cache"].pop("nan-keys")
    assert list(lay.failed) == ["nan-keys"] and "returned a NaN key" in lay.failed["nan-keys"]
    assert "for model A; 1 candidates" in lay.failed["nan-keys"]
    warn = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("cosim: warning")]
    assert len(warn) == 1 and "layers.cache.policies: eviction policy 'nan-keys'" in warn[0]
    assert out["lc"]["requests"] == 1 and out["lc"]["loads"] == 1 and out["nan-keys"]["requests"] == 0
