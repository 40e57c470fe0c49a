"""A trained DViT agent (cosim.gym.agent) and the rl:PATH policy, on real replayed grid6 traffic."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import cosim
from cosim.errors import ConfigError
from cosim.gym import agent as ag
from cosim.gym import dvit as gdvit
from cosim.layers.base import bind_policies

from .conftest import ROOT, run_cli

DVIT_TOML = ROOT / "scenarios" / "grid6_dvit.toml"
TOOL = ROOT / "tools" / "train_dvit_agent.py"
WHERE = "s.toml: layers.dvit"




@pytest.fixture(scope="module")
def trained(trace, tmp_path_factory):
    """A tiny training run of the tool (300 imitation decisions on the trace)."""
    path = tmp_path_factory.mktemp("agent") / "tiny.pt"
    proc = subprocess.run([sys.executable, str(TOOL), "--trace", str(trace), "--episode-end", "30", "--iters", "1",
                           "--steps-per-iter", "300", "--epochs", "2", "--hidden", "16", "--out", str(path),
                           "--no-eval"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return path


def bind(name, layer="dvit"):
    from cosim.registry import layer_class

    return bind_policies(layer, [name], {}, f"s.toml: layers.{layer}", layer_class(layer).policy_traits)[name]


def saved(tmp_path, **change):
    """An agent file (random weights), with top-level keys of the dict changed."""
    path = tmp_path / "a.pt"
    ag.save_agent(path, ag.new_network(8), 22, {"seeds": []})
    data = torch.load(path, weights_only=True)
    for k, v in change.items():
        data[k] = v
    torch.save(data, path)
    return path


# -- the loader's errors ------------------------------------------------------------------------
def test_a_missing_agent_file_is_one_line_naming_the_key_and_the_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        bind(f"rl:{tmp_path / 'none.pt'}")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("s.toml: layers.dvit.policies: 'rl:") and f"{tmp_path / 'none.pt'}: no such agent file" in msg
    with pytest.raises(ConfigError, match="expected rl:PATH"):
        bind("rl:")


@pytest.mark.parametrize("change, says", [
    ({"format": "cosim-agent/0"}, "format 'cosim-agent/0', expected 'cosim-agent/1'"),
    ({"layer": "cache"}, "an agent for layer 'cache', not 'dvit'"),
    ({"obs": {"max_devices": 22, "device_features": ["present"], "task_features": list(gdvit.TASK_FEATURES)}},
     "obs.device_features"),
    ({"arch": {"hidden": 8, "derived_features": []}}, "arch.derived_features"),
    ({"arch": {"hidden": 9, "derived_features": list(ag.DERIVED_FEATURES)}}, "do not make a DeviceScorer"),
])
def test_a_wrong_agent_file_is_refused_naming_what_is_wrong(tmp_path, change, says):
    path = saved(tmp_path, **change)
    with pytest.raises(ConfigError, match=says) as e:
        bind(f"rl:{path}")
    assert str(e.value).startswith(f"s.toml: layers.dvit.policies: 'rl:{path}': {path}: ")


def test_a_file_that_is_no_agent_and_an_agent_for_another_layer(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_text("not torch\n")
    with pytest.raises(ConfigError, match="not a cosim agent file"):
        bind(f"rl:{junk}")
    with pytest.raises(ConfigError, match="not layer 'cache'"):
        bind(f"rl:{saved(tmp_path)}", layer="cache")


def test_a_bad_agent_in_cosim_run_exits_2_with_one_line(tmp_path):
    proc = run_cli("run", str(DVIT_TOML), "--end", "5", "--out", str(tmp_path / "r"), "--set",
                   'layers.dvit.policies=["vidi", "rl:missing.pt"]', cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "cosim: error: --set layers.dvit.policies=[\"vidi\", \"rl:missing.pt\"]: layers.dvit.policies: "
        "'rl:missing.pt': missing.pt: no such agent file "
        "(train one with tools/train_dvit_agent.py; shipped: dvit_grid6)"]
    assert not (tmp_path / "r").exists()


# -- the network ------------------------------------------------------------------------------
def test_scores_do_not_depend_on_padding_or_the_order_of_the_helpers():
    """The same devices in another layout (more padding rows, helpers swapped) get the same scores."""
    net = ag.new_network(16, seed=3)
    for p in net.parameters():  # a non-trivial normaliser too
        p.data.normal_(0, 0.5)
    net.mean.uniform_(-1, 1)
    net.std.uniform_(0.5, 2)
    scorer = ag.NumpyScorer(net.state_dict())
    rng = np.random.default_rng(0)
    dev = rng.uniform(0, 2, (4, len(gdvit.DEVICE_FEATURES)))
    dev[:, 0] = 1
    task = rng.uniform(0, 5, len(gdvit.TASK_FEATURES))
    mask = np.array([True, True, False, True])
    a = scorer.scores(dev, task, mask)
    padded = np.zeros((7, dev.shape[1]))
    order = [0, 2, 1]  # the two helpers swapped, then the user last, padding between
    padded[:3] = dev[order]
    padded[6] = dev[3]
    b = scorer.scores(padded, task, np.array([True, False, True, False, False, False, True]))
    np.testing.assert_allclose(b[[0, 2, 1, 6]], a, rtol=1e-12)
    assert np.all(b[[3, 4, 5]] == ag.MASKED) and b[1] == ag.MASKED
    # and numpy's scores are the torch network's
    with torch.no_grad():
        t, _ = net(torch.as_tensor(padded, dtype=torch.float32)[None], torch.as_tensor(task, dtype=torch.float32)[None],
                   torch.as_tensor(b > ag.MASKED)[None])
    np.testing.assert_allclose(t[0].numpy()[b > ag.MASKED], b[b > ag.MASKED], rtol=1e-4, atol=1e-4)


def test_row_inputs_by_hand():
    dev = np.zeros((2, len(gdvit.DEVICE_FEATURES)))
    dev[1, [0, 3, 4, 5, 6]] = [1, 0.05, 0.03, 0.01, 0.02]  # present, comm, comp, queue, to_user
    task = np.array([10, 8, 40.0, 0.1, 1])
    x = ag.row_inputs(dev, task)
    assert x.shape == (2, ag.N_IN)
    np.testing.assert_allclose(x[1, -4:], [8 * 0.04, 0.05 + 0.32 + 0.02, 10.0, -0.37])  # slacks: 39.61 clipped; 0 - 0.37
    np.testing.assert_array_equal(x[0, len(gdvit.DEVICE_FEATURES):-4], task)


# -- a trained agent in real runs -------------------------------------------------------------
def test_a_tiny_training_run_gives_an_agent_that_runs_beside_vidi_in_cosim_replay(trained, trace, tmp_path):
    data = torch.load(trained, weights_only=True)
    assert data["format"] == "cosim-agent/1" and data["env_id"] == "cosim/DViTPlacement-v0"
    assert data["trained"]["steps"] == 300 and data["trained"]["trace"] == [trace.name]
    assert data["obs"]["max_devices"] == 22
    out = tmp_path / "rp"
    proc = run_cli("replay", str(trace), "--scenario", str(DVIT_TOML), "--end", "40", "--out", str(out), "-q",
                   "--no-coverage", "--set", f'layers.dvit.policies=["vidi", "rl:{trained}"]')
    assert proc.returncode == 0, proc.stderr
    res = cosim.load(out)
    tasks = res["dvit_tasks"]
    name = f"rl:{trained}"
    assert set(tasks["policy"]) == {"vidi", name}
    mine, vidi = tasks[tasks["policy"] == name], tasks[tasks["policy"] == "vidi"]
    assert len(mine) == len(vidi) > 20  # the same requests
    assert sorted(mine["task"]) == sorted(vidi["task"])
    # asked before every step that is not one of the user's last 5 (45 at most)
    assert mine["replans"].max() <= 44 and mine["replans"].mean() > 10
    block = res.summary["layers"]["dvit"][name]
    assert block["tasks"] == len(mine) and 0 <= block["success_rate"] <= 1


def test_the_policy_decides_the_networks_greedy_masked_action_on_the_environments_observation(trained, trace):
    """Independent check: the torch network on the environment's observation and mask (padded to
    22 rows) picks the row whose device the rl policy's plan puts the next step on."""
    data, net = ag.load_agent(trained)
    fn = bind(f"rl:{trained}").spec.fn
    env = gym.make("cosim/DViTPlacement-v0", scenario=str(DVIT_TOML), trace=str(trace),
                   overrides={"scenario.end_s": 30, "layers.dvit.request_rate_per_s": 2.0}).unwrapped
    try:
        obs, info = env.reset(seed=2)
        n, same, devices = 0, 0, set()
        for _ in range(150):
            problem = env._question[0]
            with torch.no_grad():
                scores, _ = net(torch.as_tensor(obs["devices"])[None], torch.as_tensor(obs["task"])[None],
                                torch.as_tensor(info["action_mask"])[None])
            row = int(scores[0].argmax())
            plan = fn(problem, None, None)
            assert len(plan) == problem.steps and plan[-problem.local_steps:] == [problem.user] * problem.local_steps
            mine = int(gdvit.layout(problem, env.max_devices)[plan[0]])
            same += mine == row
            if mine != row:  # only a near-tie may fall either way (float32 vs float64)
                assert abs(float(scores[0, mine] - scores[0, row])) < 1e-4
            devices.add(row)
            obs, _, term, trunc, info = env.step(row)
            assert not info["invalid_action"]
            n += 1
            if term or trunc:
                obs, info = env.reset()
        assert same >= n - 2 and len(devices) > 2
    finally:
        env.close()


def test_cosim_check_accepts_rl_path(trained):
    proc = run_cli("check", f"rl:{trained}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"(dvit rl:{trained}): all conform" in proc.stderr


def test_the_shipped_agent_runs(trace, tmp_path):
    assert (ag.SHIPPED / "dvit_grid6.pt").stat().st_size < 1_000_000
    data, _ = ag.load_agent(ag.resolve_path("dvit_grid6"))
    assert data["trained"]["scenario"] == "grid6_dvit.toml" and data["trained"]["steps"] > 1000
    cfg = cosim.config.apply_overrides(cosim.config.load(DVIT_TOML), {
        "scenario.end_s": 30, "output.coverage": False, "layers.dvit.policies": ["rl:dvit_grid6", "optimal"]})
    from cosim.runner import replay

    replay(cfg, trace, tmp_path / "r", progress=False)
    block = cosim.load(tmp_path / "r").summary["layers"]["dvit"]
    assert block["rl:dvit_grid6"]["tasks"] == block["optimal"]["tasks"] > 10
    assert block["rl:dvit_grid6"]["completed"] > 0.5 * block["rl:dvit_grid6"]["tasks"]


def test_dwell_times_in_the_observation_are_left_from_the_decision():
    """A decision 0.5 s into the slot: the world's dwell times (as of the slot's start) less 0.5 s."""
    from cosim.layers.dvit.problem import Problem

    inf = np.inf
    p = Problem(comp_s=np.array([0.03, 0.08, 0.1]), queue_s=np.array([0.075, 0.0056, 0.0056]),
                comm_s=np.array([[0, 0.05, 0.06], [inf, 0, 0.02], [inf, inf, 0]]), upload_s=0.0,
                user_dwell_s=40.0, steps=10, local_steps=2, t_max_s=0.1, dwell_s=np.array([inf, 0.3, 40.0]),
                xy=np.zeros((3, 2)), elapsed_s=0.5)
    obs, _ = gdvit.observe(p, 3)
    np.testing.assert_allclose(obs["devices"][:, 9], [gdvit.DWELL_CAP_S, 0.0, 39.5])
    assert obs["task"][2] == 39.5
