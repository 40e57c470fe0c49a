"""cosim/CacheEviction-v0 on replayed grid6 traffic: the environment executes what the cache
layer executes, its reward is the layer's Table II cost, an observation worked by hand."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest

import cosim
from cosim.errors import ConfigError
from cosim.gym import cache as gcache
from cosim.layers.cache.policies import EdgeCache
from cosim.registry import policies, register_policy
from cosim.runner import replay

from .conftest import ROOT
from .test_gym import assert_same_rollouts, rollout

CACHE_TOML = ROOT / "scenarios" / "grid6_cache.toml"
#: little GPU memory and many requests: evictions from the first seconds on
BUSY = {"scenario.end_s": 60, "layers.cache.gpu_memory_gb": 30.0, "layers.cache.request_rate_per_vehicle_s": 0.2}
COLUMNS = ["t_s", "vehicle", "rsu", "delivered_by", "model", "service", "outcome", "evicted", "examples", "accuracy",
           "switching_cost", "accuracy_cost", "inference_latency_s", "offloading_latency_s", "cloud_cost",
           "system_cost"]
TABLE2 = ["requests", "system_cost", "switching_cost", "total_accuracy_cost", "inference_latency", "offloading_latency",
          "cloud_cost", "edge_execution_ratio", "loads", "evictions", "cold_evictions"]

KEYS = {name: spec.fn for name, spec in policies("cache").items()}


@pytest.fixture(autouse=True)
def per_victim_policies(_isolated_registry):
    """Two cache policies asked once per victim, registered for each test only: LC itself (as
    the environment's agent is asked: the same victims) and LC read off the observation."""
    register_policy("cache", "lc-per-victim", per_victim=True)(lambda c, cands, t, rng, opts: KEYS["lc"](c, cands, t))
    register_policy("cache", "lc-observed", per_victim=True)(gcache.as_policy(lc_from_the_observation))


def make(trace, **kw):  # noqa: F811 - trace: the fixture's value
    return gym.make("cosim/CacheEviction-v0", scenario=str(CACHE_TOML), trace=str(trace),
                    overrides={**BUSY, **kw.pop("overrides", {})}, **kw).unwrapped


def layer_run(trace, tmp_path, policy_names, name="layer"):  # noqa: F811
    cfg = cosim.config.load(CACHE_TOML)
    cfg = cosim.config.apply_overrides(cfg, {**BUSY, "scenario.seed": 3, "layers.cache.policies": policy_names,
                                             "output.coverage": False})
    replay(cfg, trace, tmp_path / name, progress=False)
    res = cosim.load(tmp_path / name)
    return res["cache_requests"], res.summary["layers"]["cache"]


def drive(env, policy, seed=3):
    """Run one episode choosing, at every question, the victim ``policy``'s keys rank first;
    returns [(t_s of the question, rsu, reward)]."""
    obs, info = env.reset(seed=seed)
    steps, done = [], False
    while not done:
        c, cands, t = env._question[:3]
        victim = min(zip(KEYS[policy](c, cands, t, None), cands))[1]
        assert info["action_mask"][victim] and info["rsu"] == env.rsu_ids[c.rsu]
        at = (t, info["rsu"])
        obs, r, term, trunc, info = env.step(victim)
        assert not info["invalid_action"]
        steps.append((*at, r))
        done = term or trunc
    return steps


def same_rows(got, ref):
    assert len(got) == len(ref) > 500
    for col in COLUMNS:
        a, b = got[col].to_numpy(), ref[col].to_numpy()
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b, err_msg=col)
        else:
            assert [str(x) for x in a] == [str(x) for x in b], col


@pytest.mark.parametrize("policy", ["lc", "lfu"])
def test_environment_executes_what_the_layer_does_for_the_same_decisions(trace, tmp_path, policy):  # noqa: F811
    ref, ref_sum = layer_run(trace, tmp_path, [policy])
    env = make(trace, out_dir=tmp_path / "env")
    steps = drive(env, policy)
    got = cosim.load(env.out_dir)["cache_requests"]
    block = env.summary["layers"]["cache"]["gym:agent"]
    env.close()
    assert len(steps) > 50 and sum(ref["evicted"].astype(str).str.contains(",")) > 0  # some loads evict two
    same_rows(got, ref)
    assert {k: block[k] for k in TABLE2} == {k: ref_sum[policy][k] for k in TABLE2}
    # the return, independently: minus the sum of the table's Table II terms of every row
    terms = got[["switching_cost", "accuracy_cost", "inference_latency_s", "offloading_latency_s", "cloud_cost"]]
    assert sum(r for *_, r in steps) == pytest.approx(-terms.to_numpy().sum(), rel=1e-9)
    rewards_are_window_costs(steps, got)  # every RSU's requests, charged to the preceding decision


def rewards_are_window_costs(steps, rows):
    """Each reward is minus the system cost of the requests (``rows``) from its decision to the
    next (the first also takes those before it, the last those to the end of the run)."""
    bounds = [-math.inf] + [t for t, _, _ in steps[1:]] + [math.inf]
    for i, (_, _, r) in enumerate(steps):
        window = rows[(rows["t_s"] >= bounds[i]) & (rows["t_s"] < bounds[i + 1])]
        assert r == pytest.approx(-window["system_cost"].sum(), rel=1e-9, abs=1e-9), i


def test_at_one_rsu_each_reward_is_the_cost_until_the_next_decision_there(trace, tmp_path):  # noqa: F811
    ref, _ = layer_run(trace, tmp_path, ["lc"])
    env = make(trace, out_dir=tmp_path / "env", rsu="rsu1", default_policy="lc")
    steps = drive(env, "lc")
    got = cosim.load(env.out_dir)["cache_requests"]
    env.close()
    same_rows(got, ref)  # lc by the agent at rsu1, lc (default_policy) elsewhere: lc's run
    assert {rsu for _, rsu, _ in steps} == {"rsu1"} and len(steps) > 10
    at = got[got["rsu"].astype(str) == "rsu1"]
    assert len(at) < len(got)
    rewards_are_window_costs(steps, at)  # rsu1's requests until the next decision at rsu1
    assert sum(r for *_, r in steps) == pytest.approx(-at["system_cost"].sum(), rel=1e-9)


def test_asked_once_per_victim_a_built_in_picks_the_same_victims(trace, tmp_path):  # noqa: F811
    rows, block = layer_run(trace, tmp_path, ["lc", "lc-per-victim"])
    lc = rows[rows["policy"].astype(str) == "lc"].reset_index(drop=True)
    each = rows[rows["policy"].astype(str) == "lc-per-victim"].reset_index(drop=True)
    same_rows(each, lc)
    assert block["lc"]["system_cost"] == block["lc-per-victim"]["system_cost"]


def lc_from_the_observation(obs, mask):
    """LC read off the observation: least context, then least recently used (longest since used)."""
    m = obs["models"]
    context, since = m[:, gcache.MODEL_FEATURES.index("context")], m[:, gcache.MODEL_FEATURES.index("since_used_s")]
    return min(np.flatnonzero(mask), key=lambda i: (context[i], -since[i], i))



def test_a_policy_on_the_observation_plugs_back_into_an_ordinary_run(trace, tmp_path):  # noqa: F811
    """The observation is a function of a key function's arguments: an 'agent' that reads LC's
    rule off it, registered as a cache policy, runs in cosim run as lc does."""
    rows, block = layer_run(trace, tmp_path, ["lc", "lc-observed"])
    same_rows(rows[rows["policy"].astype(str) == "lc-observed"].reset_index(drop=True),
              rows[rows["policy"].astype(str) == "lc"].reset_index(drop=True))
    assert block["lc-observed"]["evictions"] == block["lc"]["evictions"] > 50


def test_same_seed_same_episode_and_another_seed_another(trace):  # noqa: F811
    a, b = make(trace), make(trace)
    try:
        ra, rb = rollout(a, 5, 150, "t_s"), rollout(b, 5, 150, "t_s")
        assert_same_rollouts(ra, rb)
        rc = rollout(a, 6, 50, "t_s")  # another seed: other requests, other times
        assert [x[3] for x in rc] != [x[3] for x in ra[:50]]
    finally:
        a.close()
        b.close()


def test_a_random_default_policy_elsewhere_is_seeded_by_the_episode(trace):  # noqa: F811
    a, b = make(trace, rsu=0, default_policy="random"), make(trace, rsu=0, default_policy="random")
    try:
        ra, rb = rollout(a, 7, 60, "t_s"), rollout(b, 7, 60, "t_s")
        assert_same_rollouts(ra, rb)
        assert {x[3] for x in ra} and all(x[2]["cache"][0] == 0 for x in ra)  # asked at RSU 0 only
    finally:
        a.close()
        b.close()


def test_an_action_outside_the_mask_runs_the_default_policys_choice(trace):  # noqa: F811
    env = make(trace, default_policy="lru")
    try:
        obs, info = env.reset(seed=2)
        c, cands, t = env._question[:3]
        outside = int(np.flatnonzero(~info["action_mask"])[0])
        lru_victim = min(zip(KEYS["lru"](c, cands, t, None), cands))[1]
        _, _, _, _, info = env.step(outside)
        assert info["invalid_action"] and info["evicted"] == env.model_names[lru_victim]
    finally:
        env.close()


def test_observation_by_hand():
    # models: 0 (4 GB, services 0, 1; window 32 each), 1 (4 GB, service 2, no window), 2 (9 GB),
    # 3 (2 GB, loading); capacity 14: 10 GB cached, 4 free, model 2 needs 5 GB more
    c = EdgeCache(14.0, [4.0, 4.0, 9.0, 2.0], [0, 0, 1, 2, 3], [32, 32, 0, 0, 0], 10.0, 0.5, rsu=1)
    c.load(0, 0.0, 1.0)  # ready at 1
    c.load(1, 2.0, 1.0)  # ready at 3
    c.load(3, 18.0, 5.0)  # ready at 23: loading at t=20
    c.freq[:4] = [5, 2, 3, 1]
    c.count[:4] = [4, 2, 0, 1]
    c.hits[:4] = [3, 1, 7, 0]  # model 2's 7 hits are from before an eviction: not shown
    c.last_used[:4] = [19.0, 10.0, -math.inf, 18.0]
    c.add_example(0, 10.0)  # model 0's context at t=20: e^-1 (service 0) + 1 (service 1)
    c.add_example(1, 20.0)
    c.busy_until = 20.25
    c.incoming, c.need = 2, 5.0
    obs, mask = gcache.observe(c, [0, 1], 20.0)
    m = obs["models"]
    assert m.shape == (4, len(gcache.MODEL_FEATURES)) and obs["request"].shape == (len(gcache.MODEL_FEATURES),)
    np.testing.assert_array_equal(mask, [True, True, False, False])
    e = math.exp(-1.0)  # one example 10 s old at tau = 10 s
    np.testing.assert_allclose(m[0], [1, 1, 0, 0, 4, e + 1, 64, 5, 4, 3, 1, 20, 0], rtol=1e-6)
    np.testing.assert_allclose(m[1], [1, 1, 0, 0, 4, 0, 0, 2, 2, 1, 10, 18, 0], rtol=1e-6)
    np.testing.assert_allclose(m[2], [0, 0, 0, 1, 9, 0, 0, 3, 0, 0, gcache.NEVER_S, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(m[3], [0, 1, 1, 0, 2, 0, 0, 1, 1, 0, 2, 2, 3], rtol=1e-6)
    np.testing.assert_array_equal(obs["request"], m[2])
    np.testing.assert_allclose(obs["cache"], [1, 14, 4, 5, 0.25, 0], rtol=1e-6)
    # asked again for a second victim after model 0 (4 GB) was set aside: 1 GB still needed
    c.need = 1.0
    obs, mask = gcache.observe(c, [1], 20.0)
    np.testing.assert_array_equal(mask, [False, True, False, False])
    np.testing.assert_allclose(obs["cache"], [1, 14, 4, 1, 0.25, 1], rtol=1e-6)
    assert gcache.keys_for(1, [1, 3]) == [0, 1]


def test_bad_arguments_are_one_line_naming_them(trace):  # noqa: F811
    with pytest.raises(ConfigError, match="rsu: 'rsu99' is no RSU"):
        make(trace, rsu="rsu99")
    with pytest.raises(ConfigError, match="default_policy: 'cloud' does not evict"):
        make(trace, default_policy="cloud")
    with pytest.raises(ConfigError, match="nosuch"):
        make(trace, default_policy="nosuch")


def test_live_sumo_episode_returns_minus_the_system_cost(tmp_path):
    """Live SUMO (libsumo, in the environment's run thread, in a process of its own): an episode
    to the end of the run; its return is minus the agent's system cost in summary.json."""
    code = textwrap.dedent(f"""
        import gymnasium as gym, numpy as np, cosim.gym
        env = gym.make("cosim/CacheEviction-v0", scenario={str(CACHE_TOML)!r}, seed=4,
                       overrides={{**{BUSY!r}, "scenario.end_s": 30}})
        obs, info = env.reset()
        ret, n, done = 0.0, 0, False
        while not done:
            obs, r, term, trunc, info = env.step(int(np.flatnonzero(info["action_mask"])[-1]))
            assert np.isfinite(r) and r <= 0
            ret, n, done = ret + r, n + 1, term or trunc
        cost = info["summary"]["layers"]["cache"]["gym:agent"]["system_cost"]
        assert abs(ret + cost) <= 1e-9 * cost, (ret, cost)
        env.close()
        print("ok", n > 20)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok", "True"]
