"""The Gymnasium environments (cosim.gym) on replayed and live grid6 traffic."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import cosim
import cosim.gym
from cosim.errors import ConfigError
from cosim.gym import dvit as gdvit
from cosim.gym.episode import AGENT
from cosim.layers.dvit import schedulers
from cosim.layers.dvit.layer import DViTLayer
from cosim.registry import register_policy
from cosim.runner import replay

from .conftest import ROOT

DVIT_TOML = ROOT / "scenarios" / "grid6_dvit.toml"
CACHE_TOML = ROOT / "scenarios" / "grid6_cache.toml"
#: every registered environment: its scenario, and overrides that bring decisions early in a short run
SCENARIOS = {
    "cosim/DViTPlacement-v0": (DVIT_TOML, {}),
    "cosim/CacheEviction-v0": (CACHE_TOML, {"layers.cache.gpu_memory_gb": 30.0,
                                            "layers.cache.request_rate_per_vehicle_s": 0.2}),
}




def make(trace, end_s=40, **kw):
    overrides = {"scenario.end_s": end_s, "layers.dvit.request_rate_per_s": 2.0, **kw.pop("overrides", {})}
    return gym.make("cosim/DViTPlacement-v0", scenario=str(DVIT_TOML), trace=str(trace), overrides=overrides, **kw)


@pytest.mark.parametrize("env_id", sorted(cosim.gym.ENVS))
def test_every_environment_passes_gymnasiums_checker(env_id, trace):
    toml, overrides = SCENARIOS[env_id]
    env = gym.make(env_id, scenario=str(toml), trace=str(trace), overrides={"scenario.end_s": 20, **overrides})
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


def rollout(env, seed, n, info_key="task"):
    """``n`` steps (across episode ends) with actions drawn from the mask by a seeded generator:
    (action, reward, observation, info[info_key]) each."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    out = []
    for _ in range(n):
        a = int(rng.choice(np.flatnonzero(info["action_mask"])))
        obs, r, term, trunc, info = env.step(a)
        out.append((a, r, {k: v.copy() for k, v in obs.items()}, info.get(info_key)))
        if term or trunc:
            obs, info = env.reset()
    return out


def assert_same_rollouts(ra, rb):
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        assert x[0] == y[0] and x[1] == y[1] and x[3] == y[3]
        for k in x[2]:
            np.testing.assert_array_equal(x[2][k], y[2][k])


def test_same_seed_same_episode_and_another_seed_another(trace):
    a, b = make(trace), make(trace)
    try:
        ra, rb = rollout(a, 5, 300), rollout(b, 5, 300)
        assert len(ra) == 300
        assert_same_rollouts(ra, rb)
        rc = rollout(a, 6, 50)  # another seed: other requests
        assert [x[3] for x in rc] != [x[3] for x in ra[:50]] or [x[1] for x in rc] != [x[1] for x in ra[:50]]
    finally:
        a.close()
        b.close()


# a built-in scheduler asked before every step, as the environment's agent is: the layer's run
# of it and the environment driven by the same function must realise the same latencies
def mcpdi_each_step(p, rng=None, opts=None):
    return schedulers.mcpdi(p, rng, None)


@pytest.fixture
def each_step(_isolated_registry):
    """mcpdi-each-step registered for one test (the registry is as it was after it)."""
    register_policy("dvit", "mcpdi-each-step", replan="step")(mcpdi_each_step)


@pytest.mark.parametrize("queue", ["analytic", "simulated"])
def test_environment_realises_what_the_layer_does_for_the_same_decisions(trace, tmp_path, queue, each_step):
    toml = tmp_path / "s.toml"
    toml.write_text(DVIT_TOML.read_text().replace('policies = ["vidi", "optimal", "mddi", "mbdi", "mcpdi", "vli", "sdi"]',
                                                   'policies = ["mcpdi-each-step"]'))
    toml.write_text(toml.read_text().replace("../sumo_nets", str(ROOT / "sumo_nets")))
    cfg = cosim.config.apply_overrides(cosim.config.load(toml), {
        "scenario.end_s": 40, "scenario.seed": 3, "layers.dvit.request_rate_per_s": 2.0, "layers.dvit.queue": queue,
        "output.coverage": False})
    replay(cfg, trace, tmp_path / "layer", progress=False)
    ref = cosim.load(tmp_path / "layer")["dvit_tasks"].set_index("task")

    env = make(trace, out_dir=tmp_path / "env", overrides={"layers.dvit.queue": queue}).unwrapped
    out = env.out_dir
    assert out.parent == tmp_path / "env"
    obs, info = env.reset(seed=3)
    ret, done, steps = 0.0, False, 0
    while not done:
        problem = env._question[0]
        device = int(schedulers.mcpdi(problem, None, None)[0])
        obs, r, term, trunc, info = env.step(int(gdvit.layout(problem, env.max_devices)[device]))
        assert not info["invalid_action"]
        ret += r
        steps += 1
        done = term or trunc
    got = cosim.load(out)["dvit_tasks"].set_index("task")
    env.close()
    assert steps > 100 and len(ref) > 40
    assert list(got.index) == list(ref.index)
    np.testing.assert_array_equal(got["latency_s"].to_numpy(), ref["latency_s"].to_numpy())
    assert [list(d) for d in got["devices"]] == [list(d) for d in ref["devices"]]
    assert list(got["failure"]) == list(ref["failure"])
    # the return, worked out independently from the task table: minus every task's step time
    # (and backhaul time) after its upload, minus the penalty per failed task (not cut off)
    spent = (got["comm_s"] + got["comp_s"] + got["queue_s"] + got["migrate_s"]).sum()
    failed = int((got["outcome"] == "failed").sum())
    assert ret == pytest.approx(-spent - 10.0 * failed, rel=1e-9)


def test_an_impossible_action_runs_the_fastest_masked_device(trace):
    env = make(trace).unwrapped
    try:
        obs, info = env.reset(seed=1)
        pad = np.flatnonzero(obs["devices"][:, 0] == 0)
        assert len(pad)  # fewer helpers than max_helpers in this slot
        problem = env._question[0]
        fastest = int(np.argmin(np.where(gdvit.device_mask(problem), gdvit.step_cost(problem), np.inf)))
        _, _, _, _, info = env.step(int(pad[0]))
        assert info["invalid_action"]
        assert gdvit.choose(problem, int(pad[0]), env.max_devices) == (fastest, True)
    finally:
        env.close()


def test_observation_rows_by_hand():
    """Three devices (RSU, one helper, the user) placed in the fixed layout of 5 rows."""
    from cosim.layers.dvit.problem import Problem

    inf = np.inf
    p = Problem(comp_s=np.array([0.03, 0.08, 0.1]), queue_s=np.array([0.075, 0.0056, 0.0056]),
                comm_s=np.array([[0, 0.05, 0.06], [inf, 0, 0.02], [inf, inf, 0]]), upload_s=0.01,
                user_dwell_s=40.0, steps=10, local_steps=2, t_max_s=0.1,
                dist_to_rsu_m=np.array([0.0, 30.0, 50.0]), bandwidth_hz=np.array([20e6, 10e6, 10e6]),
                compute_flops=np.array([1.5e12, 0.6e12, 0.5e12]), xy=np.array([[0.0, 0.0], [30.0, 0.0], [26.0, -1.0]]),
                dwell_s=np.array([inf, 12.0, 40.0]), cell_m=25.0)
    obs, mask = gdvit.observe(p, 5)
    d = obs["devices"]
    assert d.shape == (5, len(gdvit.DEVICE_FEATURES))
    np.testing.assert_array_equal(d[:, 0], [1, 1, 0, 0, 1])  # rows 2, 3 are padding
    np.testing.assert_allclose(d[0, 1:7], [1, 0, 0, 0.03, 0.075, 0.06], rtol=1e-6)
    np.testing.assert_allclose(d[4, 1:7], [0, 1, 0.06, 0.1, 0.0056, 0], rtol=1e-6)
    np.testing.assert_allclose(d[1, [9, 10, 11]], [12.0, 1, 0])  # dwell; 30 m east = one 25 m cell
    np.testing.assert_allclose(d[4, [10, 11]], [1, -1])  # (26, -1): cell (1, -1)
    assert d[0, 9] == gdvit.DWELL_CAP_S
    np.testing.assert_allclose(obs["task"], [10, 8, 40.0, 0.1, 1])
    # the next step from the RSU: RSU 0.105 s, helper 0.05 + 0.0856 = 0.1356 s, user 0.06 + 0.1056
    # = 0.1656 s; none fits T_max = 0.1 s, so every reachable device is offered
    np.testing.assert_array_equal(mask, [True, True, False, False, True])
    assert gdvit.plan_for(p, 1) == [1] * 8 + [2] * 2
    assert gdvit.plan_for(p, 2) == [2] * 10


def test_gym_agent_outside_an_environment_is_a_clear_error(tmp_path):
    from cosim.layers.base import bind_policies

    pol = bind_policies("dvit", [AGENT], {}, "s.toml: layers.dvit", DViTLayer.policy_traits)[AGENT]
    assert pol.traits["replan"] == "step"
    with pytest.raises(RuntimeError, match="takes its decisions from a cosim Gymnasium environment"):
        pol.spec.fn(None, None, None)
    with pytest.raises(ConfigError, match="no cosim Gymnasium environment drives layer 'moe'"):
        bind_policies("moe", [AGENT], {}, "s.toml: layers.moe", {})
    with pytest.raises(ConfigError, match="'gym:me'"):
        bind_policies("dvit", ["gym:me"], {}, "s.toml: layers.dvit", DViTLayer.policy_traits)


def test_a_bad_override_is_one_line_naming_the_key(trace):
    with pytest.raises(ConfigError, match="layers.dvit.steps"):
        make(trace, overrides={"layers.dvit.steps": 0})


def test_live_sumo_episode_reset_mid_episode_and_again(tmp_path):
    """libsumo in the environment's run thread: a reset mid-episode closes SUMO (one per
    process) and starts the next; the same seed gives the same first observations."""
    code = textwrap.dedent(f"""
        import gymnasium as gym, numpy as np, cosim.gym
        env = gym.make("cosim/DViTPlacement-v0", scenario={str(DVIT_TOML)!r}, seed=4,
                       overrides={{"scenario.end_s": 30, "layers.dvit.request_rate_per_s": 2.0}})
        firsts = []
        for episode in range(2):
            obs, info = env.reset(seed=4)
            firsts.append(obs["devices"].copy())
            for _ in range(20):
                obs, r, term, trunc, info = env.step(int(np.flatnonzero(info["action_mask"])[0]))
                assert np.isfinite(r) and r <= 0
        np.testing.assert_array_equal(firsts[0], firsts[1])
        env.close()
        print("ok", env.unwrapped.summary is None)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok", "True"]


def test_async_vector_of_two_workers_matches_single_environments(trace):
    """gym.make_vec(..., vectorization_mode="async"): one run per worker process; worker k with
    seed s sees what a single environment with seed s sees."""
    kw = dict(scenario=str(DVIT_TOML), trace=str(trace),
              overrides={"scenario.end_s": 20, "layers.dvit.request_rate_per_s": 2.0})
    envs = gym.make_vec("cosim/DViTPlacement-v0", num_envs=2, vectorization_mode="async", **kw)
    try:
        obs, info = envs.reset(seed=[7, 8])
        assert obs["devices"].shape == (2, 22, len(gdvit.DEVICE_FEATURES))
        first = obs["devices"].copy()
        ends = 0
        for _ in range(400):
            acts = np.array([int(np.flatnonzero(m)[-1]) for m in info["action_mask"]])  # the user, mostly
            obs, r, term, trunc, info = envs.step(acts)
            assert np.all(r <= 0)
            ends += int(np.sum(term | trunc))
        assert ends >= 1  # 20 s episodes end and the workers go on (autoreset)
    finally:
        envs.close()
    for k, seed in enumerate((7, 8)):
        env = gym.make("cosim/DViTPlacement-v0", **kw)
        o, _ = env.reset(seed=seed)
        env.close()
        np.testing.assert_array_equal(o["devices"], first[k])


def test_ctrl_c_close_after_an_interrupted_step_and_a_dropped_environment_end_the_run(trace):
    """Ctrl-C inside the run ends it as `cosim run` does (results written, status interrupted)
    and reaches the caller; a Ctrl-C between an answer and the next question leaves the run
    waiting: close() still ends it; an environment dropped without close() is collected and
    its run ended."""
    import gc
    import json

    env = make(trace).unwrapped
    env.reset(seed=1)
    while env.session.slots < 3:  # past the first slots (a run stopped before its first is discarded)
        env.step(int(np.flatnonzero(env.action_masks())[0]))

    def interrupted(*args):
        raise KeyboardInterrupt

    env.agent_layer._step = interrupted  # the next step the layer runs
    with pytest.raises(KeyboardInterrupt):
        for _ in range(100):
            env.step(int(np.flatnonzero(env.action_masks())[0]))
    summary = json.loads((env.out_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["slots"] >= 1
    env.close()

    env = make(trace).unwrapped
    env.reset(seed=1)
    bridge = env._bridge
    bridge.answer(env.answer(env._question, 0)[0])  # answered; the next question is never read
    env.close()
    assert bridge.run.dead

    env = make(trace)
    env.reset(seed=1)
    run = env.unwrapped._bridge.run
    del env
    gc.collect()
    assert run.dead


def test_bad_actions_and_misuse_are_one_line_errors(trace, tmp_path):
    env = make(trace, out_dir=tmp_path, compare="optimal")  # one policy named as a string
    try:
        with pytest.raises(RuntimeError, match=r"action_masks\(\) before reset"):
            env.unwrapped.action_masks()
        with pytest.raises(RuntimeError, match=r"step\(\) before reset"):
            env.unwrapped.step(0)  # (gym.make's OrderEnforcing says so too)
        obs, info = env.reset(seed=2)
        for bad in (22, -1, 2.7, "3", None, np.array([1, 2])):
            with pytest.raises(ValueError, match="action .*Discrete\\(22\\)"):
                env.step(bad)
        env.step(np.array([0]))  # a one-element integer array is an action
        mask = env.unwrapped.action_masks()
        mask[:] = False
        assert env.unwrapped.action_masks().any()  # a copy
        with pytest.raises(TypeError, match="cannot be copied or pickled"):
            import copy

            copy.deepcopy(env.unwrapped)
        other = make(trace, out_dir=tmp_path)
        assert other.unwrapped.out_dir != env.unwrapped.out_dir  # one folder per environment
        assert other.unwrapped.out_dir.parent == env.unwrapped.out_dir.parent == tmp_path
        other.close()
    finally:
        env.close()
    with pytest.raises(cosim.errors.CosimError, match="no such trace"):
        make(tmp_path / "nope.parquet")
