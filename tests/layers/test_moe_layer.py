"""The MoE layer on scripted worlds: placement, latency terms by hand, IVs leaving range."""

import numpy as np
import pytest

from cosim.config import from_dict
from cosim.errors import ConfigError
from cosim.layers.base import LayerContext
from cosim.layers.moe.layer import MoELayer
from cosim.recorder import Recorder
from cosim.sources.base import Snapshot
from cosim.world.network import NetInfo
from cosim.world.world import World

NET = NetInfo("mem", {"e": 5000.0}, np.array([[0.0, 0.0]]), (0.0, 0.0, 5000.0, 0.0))
TINY = {"policies": ["uniform"], "request_rate_per_s": 0.0, "moe_layers": 2, "experts": 2, "top_k": 1, "tokens": 6,
        "hidden": 8, "expert_ffn": 16, "ivs_per_task": 2, "iv_memory_gb": [1.0], "iv_compute_tflops": [0.5],
        "energy_kappa": [10.0], "tv_compute_tflops": 1.0, "memory_gbps": 1e-5}


def advance(lay, task, w, index, until):
    """Run one task's MoE layers that start before ``until`` (what the kernel does for each task)."""
    while task.status == "running" and task.clock < until:
        lay._advance(task, w, index)


def world():
    cfg = from_dict({"scenario": {"sumocfg": "/dev/null", "seed": 3},
                     "rsu": {"placement": "sites", "sites": [{"id": "A", "x": 0.0, "y": 0.0}]},
                     "channel": {"fading": "none", "interference": False, "vehicle_bandwidth_hz": 50e6}}, "t.toml")
    return World(cfg, NET)


def snap(t, ids, xs):
    n = len(ids)
    xs = np.asarray(xs, float)
    return Snapshot(t, np.array(ids, dtype=object), xs, np.zeros(n), np.zeros(n), np.full(n, 90.0), np.zeros(n),
                    np.array(["e"] * n, dtype=object), np.array(["e_0"] * n, dtype=object), xs, np.full(n, 5.0))


def layer(tmp_path, **cfg):
    rec = Recorder(tmp_path)
    lay = MoELayer({**TINY, **cfg}, LayerContext(seed=3, slot_s=1.0, scenario_file="t.toml", table=rec.table))
    lay.on_start()
    return lay


def test_placement_ranks_by_link_and_respects_memory(tmp_path):
    w = world().update(snap(0.0, ["tv", "near", "far", "gone"], [0.0, 50.0, 250.0, 900.0]))
    lay = layer(tmp_path, ivs_per_task=3)
    cand = lay.candidates(w, 0)
    assert [str(w.snap.ids[i]) for i in cand["idx"]] == ["near", "far"]  # "gone" is beyond V2V range
    assert cand["quality"][0] > cand["quality"][1] > 0  # nearer: better link
    chosen, host = lay.place(cand, link_aware=True)
    assert chosen.tolist() == [0, 1]
    assert host.tolist() == [[0, 1], [0, 1]]  # round robin: one expert per layer on each IV
    # memory for one expert each (expert = 2 * 8 * 16 * 2 bytes = 512 B): the rest are not placed
    lay2 = layer(tmp_path / "b", iv_memory_gb=[512e-9])
    _, host = lay2.place(lay2.candidates(w, 0), link_aware=True)
    assert host.tolist() == [[0, 1], [-1, -1]]


def test_layer_latency_terms_by_hand(tmp_path):
    w = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 120.0]))
    lay = layer(tmp_path)
    lay.submit(w, 0, 0.0)
    task = lay.kernel.active[0]
    assert task.ivs == ["a", "b"] and task.tokens.sum() == 2 * 6  # top-1: every token once per layer
    index = {v: i for i, v in enumerate(w.snap.ids)}
    advance(lay, task, w, index, 1.0)
    assert task.status == "done" and len(task.comm) == 2
    bits = 8 * 2 * 8  # hidden 8 x 2 bytes
    flop = 4 * 8 * 16 / 1e12  # TFLOP per (token, expert)
    tv = (8 * 6 * 64 + 4 * 36 * 8 + 2 * 6 * 8 * 2) / 1e12 / 1.0
    expected = 0.0
    for layer_i in range(2):
        worst = 0.0
        for j, name in enumerate(task.ivs):
            n = task.tokens[layer_i][task.layer_iv[layer_i] == j].sum()
            if n == 0:
                continue
            k = index[name]
            up, down = w.v2v_rate_bps([0], [k])[0], w.v2v_rate_bps([k], [0])[0]
            t = n * bits / up + n * bits / down + n * flop / task.f[j] + 512e-9 / 1e-5
            worst = max(worst, t)
        expected += tv + worst
    assert task.clock - task.t_request == pytest.approx(expected)
    assert task.tv_s == pytest.approx([tv, tv])


def test_an_iv_leaving_range_reroutes_then_fails(tmp_path):
    w0 = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 120.0]))
    lay = layer(tmp_path)
    lay.submit(w0, 0, 0.0)
    task = lay.kernel.active[0]
    moved = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 2000.0]))  # b out of V2V range
    advance(lay, task, moved, {"tv": 0, "a": 1, "b": 2}, 1.0)
    assert task.status == "done" and task.reroutes >= 1
    assert set(np.unique(task.layer_iv)) <= {0}  # everything went to "a"
    lay.submit(w0, 0, 0.0)
    task = lay.kernel.active[-1]
    gone = world().update(snap(0.0, ["tv"], [0.0]))  # both IVs left the simulation
    advance(lay, task, gone, {"tv": 0}, 1.0)
    assert (task.status, task.reason) == ("failed", "iv-left-range")


def test_no_iv_in_range_and_pricing_out_are_failures_with_reasons(tmp_path):
    lay = layer(tmp_path, policies=["uniform"], options={"uniform": {"uniform_price": 900.0}})  # above any value: the TV buys nothing
    w = world().update(snap(0.0, ["tv", "a"], [0.0, 60.0]))
    lay.submit(w, 0, 0.0)
    lay.submit(world().update(snap(0.0, ["tv"], [0.0])), 0, 0.0)
    st = lay.on_end()["uniform"]
    assert st["tasks"] == 2 and st["success_rate"] == 0.0 and st["declined"] == 1


def test_bad_config_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="layers.moe.policies: unknown policy 'gecpo'"):
        layer(tmp_path, policies=["gecpo"])
    with pytest.raises(ConfigError, match="layers.moe.top_k: 3 is more than experts"):
        layer(tmp_path, top_k=3)
    with pytest.raises(ConfigError, match="layers.moe.price_range"):
        layer(tmp_path, price_range=[5.0, 1.0])
    with pytest.raises(ConfigError, match="layers.moe.gate_model_dim: 33 must be even"):
        layer(tmp_path, gate_model_dim=33)
    with pytest.raises(ConfigError, match="layers.moe.reroute"):
        layer(tmp_path, reroute="teleport")
    with pytest.raises(ConfigError, match="layers.moe.placement"):
        layer(tmp_path, placement="free")


def test_a_reroute_in_one_policy_leaves_the_others_placement_alone(tmp_path):
    w0 = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 120.0]))
    lay = layer(tmp_path, policies=["uniform", "gecpa"])
    lay.submit(w0, 0, 0.0)
    first, second = lay.kernel.active
    before = second.layer_iv.copy()
    moved = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 2000.0]))
    advance(lay, first, moved, {"tv": 0, "a": 1, "b": 2}, 10.0)
    assert first.reroutes >= 1
    np.testing.assert_array_equal(second.layer_iv, before)


def layer_terms(lay, task, w, index, layer_i):
    """comm, comp and memory-load terms of the slowest IV of one layer, by hand."""
    bits, flop = 8 * 2 * 8, 4 * 8 * 16 / 1e12  # hidden 8 x 2 bytes; TFLOP per (token, expert)
    worst = 0.0
    for j, name in enumerate(task.ivs):
        on_j = task.layer_iv[layer_i] == j
        n = task.tokens[layer_i][on_j].sum()
        if n == 0:
            continue
        k = index[name]
        up, down = w.v2v_rate_bps([0], [k])[0], w.v2v_rate_bps([k], [0])[0]
        used = ((task.tokens[layer_i] > 0) & on_j).sum()
        worst = max(worst, n * bits / up + n * bits / down + n * flop / task.f[j] + used * 512e-9 / 1e-5)
    return worst


def test_a_reroute_moves_the_experts_free_when_preloaded(tmp_path):
    """placement = "preloaded" (default): b (hosting expert 1 of both layers) leaves range before
    layer 0; its two experts go to a (a already holds their weights: no transfer), the gate
    re-runs (expert 1 now has a's link quality); a's price and compute are not renegotiated."""
    w0 = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 120.0]))
    lay = layer(tmp_path)
    lay.submit(w0, 0, 0.0)
    task = lay.kernel.active[0]
    assert task.layer_iv.tolist() == [[0, 1], [0, 1]] and task.tokens[0, 1] > 0  # layer 0 needs b
    f_before, q_a = task.f.copy(), task.gate_q[0, 0]
    moved = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 2000.0]))
    index = {"tv": 0, "a": 1, "b": 2}
    lay._advance(task, moved, index)
    assert task.reroutes == 1 and task.moved_experts == 2
    assert task.move == [0.0]
    assert task.layer_iv.tolist() == [[0, 0], [0, 0]]
    np.testing.assert_allclose(task.gate_q, np.full((2, 2), q_a))  # expert 1 now gated by a's link
    np.testing.assert_array_equal(task.f, f_before)  # prices not renegotiated
    # the gate re-ran: with equal quality on both experts the forward pass decides, every token once (top-1)
    assert task.tokens.sum(axis=1).tolist() == [6, 6]
    assert task.clock == pytest.approx(lay.tv_layer_s + layer_terms(lay, task, moved, index, 0))
    lay._advance(task, moved, index)
    assert task.move == [0.0, 0.0] and task.status == "done"


def test_placement_load_pays_the_initial_weights_and_every_move(tmp_path):
    """placement = "load": before layer 0 the TV sends all four experts (512 B = 4096 bits each)
    to their hosts, two to a and two to b, one after another at that slot's rates:
    2 * 4096 / r(tv->a) + 2 * 4096 / r(tv->b). Before layer 1 (which routes every token to expert
    0, on a) a has left: a's expert of layer 1 is sent again, to b: 4096 / r(tv->b) at the new
    slot's rate."""
    w0 = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 120.0]))
    lay = layer(tmp_path, placement="load")
    lay.submit(w0, 0, 0.0)
    task = lay.kernel.active[0]
    assert task.layer_iv.tolist() == [[0, 1], [0, 1]] and (task.f > 0).all() and task.tokens[1, 0] > 0
    index = {"tv": 0, "a": 1, "b": 2}
    ra, rb = w0.v2v_rate_bps([0, 0], [1, 2])
    lay._advance(task, w0, index)
    assert task.move == pytest.approx([2 * 4096 / ra + 2 * 4096 / rb])
    assert task.clock == pytest.approx(lay.tv_layer_s + 2 * 4096 / ra + 2 * 4096 / rb
                                       + layer_terms(lay, task, w0, index, 0))
    clock = task.clock
    moved = world().update(snap(1.0, ["tv", "a", "b"], [0.0, 2000.0, 150.0]))
    lay._advance(task, moved, index)
    rb2 = moved.v2v_rate_bps([0], [2])[0]
    assert rb2 != pytest.approx(rb)  # b moved too: the slot's rate, not the first one
    assert task.moved_experts == 1 and task.layer_iv.tolist() == [[0, 1], [1, 1]]
    assert task.move[1] == pytest.approx(4096 / rb2)
    assert task.clock - clock == pytest.approx(lay.tv_layer_s + 4096 / rb2 + layer_terms(lay, task, moved, index, 1))
    # the same task under "preloaded" pays neither
    lay = layer(tmp_path / "pre")
    lay.submit(w0, 0, 0.0)
    task = lay.kernel.active[0]
    lay._advance(task, w0, index)
    lay._advance(task, moved, index)
    assert task.moved_experts == 1 and task.move == [0.0, 0.0]


def test_placement_load_does_not_pay_twice_for_an_expert_rerouted_before_it_was_sent(tmp_path):
    """b leaves before layer 0 under "load": nothing was sent yet, so its experts are re-placed on
    a for free and the initial load sends all four to a: 4 * 4096 / r(tv->a)."""
    w0 = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 120.0]))
    lay = layer(tmp_path, placement="load")
    lay.submit(w0, 0, 0.0)
    task = lay.kernel.active[0]
    moved = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 2000.0]))
    lay._advance(task, moved, {"tv": 0, "a": 1, "b": 2})
    assert task.moved_experts == 2 and task.move == pytest.approx([4 * 4096 / moved.v2v_rate_bps([0], [1])[0]])


def test_a_reroute_checks_the_new_hosts_memory(tmp_path):
    """Memory for three experts: a holds its two, so only layer 0's expert 1 moves; layer 1's is
    masked and the re-run gate sends all of layer 1's tokens to expert 0."""
    w0 = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 120.0]))
    lay = layer(tmp_path, iv_memory_gb=[3 * 512e-9])
    lay.submit(w0, 0, 0.0)
    task = lay.kernel.active[0]
    moved = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 2000.0]))
    lay._advance(task, moved, {"tv": 0, "a": 1, "b": 2})
    assert task.moved_experts == 1 and task.move == [0.0]  # preloaded: no transfer
    assert task.layer_iv.tolist() == [[0, 0], [0, -1]] and task.gate_q[1, 1] == 0.0
    assert task.tokens[1].tolist() == [6, 0]


def test_regate_masks_the_lost_experts_without_a_transfer(tmp_path):
    w0 = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 120.0]))
    lay = layer(tmp_path, reroute="regate")
    lay.submit(w0, 0, 0.0)
    task = lay.kernel.active[0]
    moved = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 2000.0]))
    index = {"tv": 0, "a": 1, "b": 2}
    advance(lay, task, moved, index, 10.0)
    assert task.status == "done" and task.reroutes == 1 and task.moved_experts == 0
    assert task.move == [0.0, 0.0] and task.layer_iv.tolist() == [[0, -1], [0, -1]]
    assert task.tokens.tolist() == [[6, 0], [6, 0]]
    assert task.clock == pytest.approx(sum(lay.tv_layer_s + layer_terms(lay, task, moved, index, i) for i in (0, 1)))


def test_physical_gating_off_keeps_the_placement_and_gates_plainly(tmp_path):
    w0 = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 120.0]))
    on, off = layer(tmp_path / "on"), layer(tmp_path / "off", physical_gating=False)
    on.submit(w0, 0, 0.0)
    off.submit(w0, 0, 0.0)
    a, b = on.kernel.active[0], off.kernel.active[0]
    assert a.ivs == b.ivs and a.layer_iv.tolist() == b.layer_iv.tolist()
    assert (b.gate_q == 1.0).all() and (a.gate_q < 1.0).all()
    np.testing.assert_array_equal(b.tokens, off.route(b.prompt, np.ones((2, 2))))


def test_a_tasks_links_are_computed_once_per_slot_with_the_per_call_rates_bit_for_bit(tmp_path):
    """_links: each IV's range and both directions' rates, in one v2v_rate_bps call per slot and
    kept for the task's other layers in that slot: the same bytes as one call per IV and direction
    (Rayleigh fading on: the hash draws too); a new slot's snapshot computes them again."""
    cfg = from_dict({"scenario": {"sumocfg": "/dev/null", "seed": 3},
                     "rsu": {"placement": "sites", "sites": [{"id": "A", "x": 0.0, "y": 0.0}]},
                     "channel": {"fading": "rayleigh", "interference": False, "vehicle_bandwidth_hz": [50e6, 80e6]}},
                    "t.toml")
    ids = ["tv", "a", "b", "c", "d"]
    w = World(cfg, NET).update(snap(0.0, ids, [0.0, 37.0, 120.0, 210.0, 290.0]))
    lay = layer(tmp_path, ivs_per_task=4, experts=4)
    lay.submit(w, 0, 0.0)
    task = lay.kernel.active[0]
    assert sorted(task.ivs) == ["a", "b", "c", "d"]
    index = {v: i for i, v in enumerate(w.snap.ids)}
    ok, rates = lay._links(task, w, index, 0)
    for j, name in enumerate(task.ivs):
        up = w.v2v_rate_bps([0], [index[name]])[0]
        down = w.v2v_rate_bps([index[name]], [0])[0]
        assert up > 0 and down > 0 and up != down  # each direction its own bandwidth draw
        assert np.float64(rates[j][0]).tobytes() == up.tobytes() and np.float64(rates[j][1]).tobytes() == down.tobytes()
        assert ok[j]
    assert lay._links(task, w, index, 0)[1] is rates  # the same slot: kept
    later = w.update(snap(1.0, ["tv", "a", "b", "c"], [0.0, 400.0, 120.0, 210.0]))  # a out of range, d gone
    ok2, rates2 = lay._links(task, later, {v: i for i, v in enumerate(later.snap.ids)}, 0)
    assert rates2 is not rates
    assert [ok2[task.ivs.index(n)] for n in ("a", "b", "c", "d")] == [False, True, True, False]
    assert "d" not in [task.ivs[j] for j in rates2] and rates2[task.ivs.index("a")] == (0.0, 0.0)  # beyond range: 0


def _layer_terms_numpy(lay, host, toks, rates, f):
    """The latency terms as the layer computed them before issue 32's fourth pass: numpy arrays
    over the layer's IVs (in the order its experts first name them), np.argmax of the sums."""
    per_iv: dict = {}
    for e in np.flatnonzero(toks > 0):
        per_iv.setdefault(int(host[e]), []).append(int(e))
    ivs = list(per_iv)
    if not ivs:
        return 0.0, 0.0, 0.0
    up, down = np.array([rates[j][0] for j in ivs]), np.array([rates[j][1] for j in ivs])
    n_tok = np.array([toks[per_iv[j]].sum() for j in ivs], dtype=float)
    with np.errstate(divide="ignore"):
        comm = n_tok * lay.token_bits / up + n_tok * lay.token_bits / down
        comp = n_tok * lay.flop_per_token / np.array([f[j] for j in ivs])
    mem = np.array([len(per_iv[j]) for j in ivs]) * lay.expert_gb / lay.cfg.memory_gbps
    k = int(np.argmax(comm + comp + mem))
    return float(comm[k]), float(comp[k]), float(mem[k])


def test_a_layers_latency_terms_in_python_floats_are_the_numpy_codes_bit_for_bit(tmp_path):
    """_layer_terms (issue 32, fourth pass) against the numpy code it replaced, on random layers of
    1-8 IVs (experts masked, IVs with several experts, equal sums: the first IV wins) and with a
    rate of 0 (inf, as numpy divided) — the same three floats, bit for bit."""
    lay = layer(tmp_path, experts=8, top_k=2)
    rng = np.random.default_rng(4)
    seen_tie = seen_inf = 0
    for trial in range(400):
        n_iv = int(rng.integers(1, 9))
        host = rng.integers(-1, n_iv, 8)
        toks = np.where(host >= 0, rng.integers(0, 40, 8), 0) * (rng.random(8) < 0.8)
        rates = {j: tuple(float(v) for v in rng.uniform(1e6, 4e8, 2)) for j in range(n_iv)}
        f = rng.uniform(0.05, 1.0, n_iv)
        if trial % 5 == 0:  # every IV alike: equal sums, np.argmax takes the first
            rates = {j: (2e8, 1e8) for j in range(n_iv)}
            f[:] = 0.5
            toks = np.where(host >= 0, 10, 0)
        if trial % 7 == 0:
            j = int(rng.integers(0, n_iv))
            rates[j] = (0.0, rates[j][1])
        got = lay._layer_terms(host.tolist(), toks.tolist(), rates, f)
        want = _layer_terms_numpy(lay, host, toks, rates, f)
        assert np.array(got).tobytes() == np.array(want).tobytes(), trial
        seen_inf += not np.isfinite(got[0])
        seen_tie += trial % 5 == 0 and len(set(host[toks > 0].tolist())) > 1
    assert seen_inf and seen_tie


def games_made(monkeypatch) -> list:
    """The games the layer builds from here on (one interior_equilibrium each), in a list."""
    from cosim.layers.moe import layer as moe_layer

    games: list = []
    real = moe_layer.interior_equilibrium
    monkeypatch.setattr(moe_layer, "interior_equilibrium", lambda g: games.append(g) or real(g))
    return games


def test_policies_that_see_the_same_free_capacity_share_one_game_and_one_links_call(tmp_path, monkeypatch):
    """Simulated queue (issue 32, fourth pass): policies whose running tasks leave the candidates
    the same compute and memory place, route and price one game (one Game object, one interior
    equilibrium); a policy that holds part of an IV gets its own. In a slot, the tasks of every
    policy on the same TV and IVs share one links computation (one v2v_rate_bps call)."""
    w = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 120.0]))
    lay = layer(tmp_path, policies=["uniform", "gecpa", "best-response", "nearest"])
    games = games_made(monkeypatch)
    lay.submit(w, 0, 0.0)
    # uniform, gecpa, best-response: one link-aware game; nearest: its own placement's
    assert len(games) == 2
    tasks = {t.policy: t for t in lay.kernel.active}
    assert tasks["uniform"].ivs == tasks["gecpa"].ivs == tasks["best-response"].ivs
    assert tasks["gecpa"].layer_iv is not tasks["uniform"].layer_iv  # each task its own copy
    calls = []
    rate = w.v2v_rate_bps
    monkeypatch.setattr(w, "v2v_rate_bps", lambda *a: calls.append(1) or rate(*a))
    index = {v: i for i, v in enumerate(w.snap.ids)}
    links = {p: lay._links(t, w, index, 0) for p, t in tasks.items()}
    assert links["uniform"] is links["gecpa"] is links["best-response"]
    assert len(calls) == 1  # "nearest" placed on the same two vehicles (same TV, same IV list)
    # every task holds what it bought until it ends: end all but gecpa's, whose next game is then
    # its own while uniform and best-response again share one (nearest: its own placement's)
    for p in ("uniform", "best-response", "nearest"):
        lay._finish(tasks[p], "failed", "censored")
    assert tasks["gecpa"].f.sum() > 0
    games.clear()
    lay.submit(w, 0, 0.0)
    assert len(games) == 3


def test_the_layer_keeps_long_lived_objects_out_of_full_collections_until_its_end(tmp_path):
    """_keep_long_lived (issue 32, fourth pass): the layer freezes what is alive when its gate model
    is built (torch's objects, the model: at its first use, not with the layer) and after its first
    priced task (the solvers' kernels), so the collector's full passes skip them; its end
    unfreezes them all."""
    import gc

    gc.unfreeze()
    lay = layer(tmp_path, policies=["gecpa"])
    assert gc.get_freeze_count() == 0 and lay._gate is None  # built, not used: no model yet
    assert lay.gate_model is lay.gate_model  # built once, at the first use
    built = gc.get_freeze_count()
    assert built > 0
    kept = [object() for _ in range(10)] + [[] for _ in range(1000)]  # tracked containers made since
    lay.submit(world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 120.0])), 0, 0.0)
    assert gc.get_freeze_count() >= built + 1000
    lay.on_end()
    assert gc.get_freeze_count() == 0 and kept


@pytest.mark.parametrize("queue", ["simulated", "analytic"])
def test_a_policy_prices_its_own_view_of_a_shared_game_whichever_policies_run(tmp_path, queue):
    """Review of the fourth pass: policies that see the same free capacity (with the analytic
    queue: every link-aware policy) share one game, but each prices its own view (Game.view) — a
    policy that spends a budget of ``game.evals`` and keeps a warm start on the game gets the same
    prices alone, after gecpa, and before it."""
    from cosim.registry import register_policy

    @register_policy("moe", "evals-and-stash")
    def evals_and_stash(game, rng, options):  # noqa: ARG001
        assert game.evals == 0 and "_warm" not in game.__dict__  # nothing of another policy's
        p = np.full((1, game.n), 1.0)
        while game.evals < 300:  # a budget of follower evaluations, as the built-in searches
            game.outcome(p)
            p = p * 1.001
        object.__setattr__(game, "_warm", p[0])
        return np.clip(p[0], game.p_min, game.p_max)

    w = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 120.0]))
    got = {}
    for i, order in enumerate((["evals-and-stash"], ["gecpa", "evals-and-stash"], ["evals-and-stash", "gecpa"],
                               ["evals-and-stash", "uniform"])):
        lay = layer(tmp_path / str(i), policies=order, queue=queue)
        lay.submit(w, 0, 0.0)
        assert not lay.failed
        tasks = {t.policy: t for t in lay.kernel.active}
        got[i] = (tasks["evals-and-stash"].prices.tobytes(), tasks["evals-and-stash"].evals)
    assert got[0][1] == 300  # 1.001^n with one evaluation each: 300 evaluations counted, its own
    assert got[0] == got[1] == got[2] == got[3]


def test_a_layers_latency_terms_tie_nan_and_no_compute_by_hand(tmp_path):
    """_layer_terms' edge cases in exactly representable numbers (b = 1 bit a token, 1 TFLOP a
    token, no memory term): a tie of two IVs with different splits keeps the first (np.argmax); a
    NaN sum wins, as in np.argmax, even after a finite one; no compute bought gives comp = inf."""
    import math

    from cosim.layers.moe.layer import _div

    lay = layer(tmp_path)
    lay.token_bits, lay.flop_per_token, lay.expert_gb = 1.0, 1.0, 0.0
    # IV0: 4 tokens, rates (2, 2), f 2 -> comm 4/2 + 4/2 = 4, comp 4/2 = 2; IV1: (4, 4), f 1 -> 2, 4
    rates, f = {0: (2.0, 2.0), 1: (4.0, 4.0)}, np.array([2.0, 1.0])
    assert lay._layer_terms([0, 1], [4, 4], rates, f) == (4.0, 2.0, 0.0)
    assert lay._layer_terms([1, 0], [4, 4], rates, f) == (2.0, 4.0, 0.0)  # the first the experts name
    got = lay._layer_terms([0, 1], [4, 4], {0: (2.0, 2.0), 1: (math.nan, 4.0)}, f)
    assert math.isnan(got[0]) and got[1:] == (4.0, 0.0)  # IV1's: np.argmax([6, nan]) = 1
    assert lay._layer_terms([0, 1], [4, 4], rates, np.array([2.0, 0.0])) == (2.0, math.inf, 0.0)
    for host, toks, r, ff in (([0, 1], [4, 4], {0: (2.0, 2.0), 1: (math.nan, 4.0)}, f),
                              ([0, 1], [4, 4], rates, np.array([2.0, 0.0]))):
        want = _layer_terms_numpy(lay, np.array(host), np.array(toks), r, ff)
        assert np.array(lay._layer_terms(host, toks, r, ff)).tobytes() == np.array(want).tobytes()
    # _div against numpy's float64 division: the same number with its sign, or NaN where numpy's is
    with np.errstate(divide="ignore", invalid="ignore"):
        for a in (3.0, -3.0, 0.0, -0.0, math.nan, math.inf):
            for b in (2.0, 0.0, -0.0):
                got, want = _div(a, b), float(np.float64(a) / np.float64(b))
                assert (math.isnan(got) and math.isnan(want)) or (got == want and math.copysign(1, got)
                                                                   == math.copysign(1, want)), (a, b)


def test_a_policy_that_holds_only_memory_of_an_iv_gets_its_own_game(tmp_path, monkeypatch):
    """The sharing key's memory part: a policy whose running task holds memory of IV "a" but none
    of its compute sees the same free compute as the others, yet room for one expert fewer on "a"
    (experts of 512 B, 1024 B an IV: two each, one left) — its own placement and its own game."""
    w = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 120.0]))
    lay = layer(tmp_path, policies=["uniform", "gecpa"], iv_memory_gb=[1024e-9])
    lay.kernel.capacity.hold("an earlier task", ("gecpa", "mem", "a"), 512e-9)
    games = games_made(monkeypatch)
    lay.submit(w, 0, 0.0)
    assert len(games) == 2
    tasks = {t.policy: t for t in lay.kernel.active}
    assert tasks["uniform"].layer_iv.tolist() == [[0, 1], [0, 1]]
    assert (tasks["gecpa"].layer_iv == 0).sum() == 1  # one expert on "a"


def test_the_second_freeze_waits_for_the_first_priced_task(tmp_path):
    """A first task with no IV in range is priced by no policy (it loads no solver kernel): the
    layer freezes after the first task that was priced, whatever its id."""
    import gc

    gc.unfreeze()
    lay = layer(tmp_path, policies=["gecpa"])
    lay.submit(world().update(snap(0.0, ["tv"], [0.0])), 0, 0.0)  # alone: "no-ivs"
    after_none = gc.get_freeze_count()
    kept = [[] for _ in range(1000)]  # tracked containers made since
    lay.submit(world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 120.0])), 0, 0.0)
    assert lay.next_id == 2 and gc.get_freeze_count() >= after_none + 1000
    lay.on_end()
    assert gc.get_freeze_count() == 0 and kept


def test_a_policy_that_writes_into_its_games_arrays_fails_alone(tmp_path, capsys):
    """Third review of the deal: a policy's view has read-only arrays — one that scales the shared
    game's capacity in place (``game.F[:] = ...``) raises, is dropped with one line, and ``uniform``
    after it prices and buys exactly what it does alone; the kernels' operands stay the shared
    game's writable arrays, so no compiled signature is added for read-only ones."""
    from cosim import jit
    from cosim.registry import register_policy

    @register_policy("moe", "writes-capacity")
    def writes_capacity(game, rng, options):  # noqa: ARG001
        game.F[:] = game.F * 0.01  # in place: would be every other policy's capacity
        return np.full(game.n, 1.0)

    w = world().update(snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 120.0]))
    got = {}
    for i, order in enumerate((["uniform"], ["writes-capacity", "gecpa", "uniform"])):  # gecpa: the kernels on a view
        lay = layer(tmp_path / str(i), policies=order, queue="analytic")
        lay.submit(w, 0, 0.0)
        t = {t.policy: t for t in lay.kernel.active}["uniform"]
        got[i] = (t.prices.tobytes(), np.asarray(t.f).tobytes(), t.u_tv)
        assert [p for p in order if p in lay.failed] == order[:-2]
    err = capsys.readouterr().err
    assert "'writes-capacity'" in err and "raised ValueError" in err and len(err.strip().splitlines()) == 1
    assert got[0] == got[1]
    if jit.use() and jit.exact_exp() >= 0:  # the kernels ran: every signature on writable arrays
        from cosim.layers.moe import kernels

        sigs = [s for k in vars(kernels).values() if hasattr(k, "signatures") for s in k.signatures]
        from numba import types

        assert sigs and all(t.mutable for s in sigs for t in s if isinstance(t, types.Array)), sigs
