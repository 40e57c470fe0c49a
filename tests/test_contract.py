"""The layer owns its contract: one policy call order declared by the layer (a typed call
signature), the DViT admissibility helper, and a policy written another way refused in one line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pytest

from cosim import registry
from cosim.config import option
from cosim.errors import ConfigError
from cosim.layers.base import Layer, LayerContext, PolicyFailed, call_policy, protocol_inputs
from cosim.layers.dvit.problem import Problem
from cosim.registry import PolicySpec


def _problem(n_helpers: int = 2, steps: int = 5, local: int = 2) -> Problem:
    v = n_helpers + 2
    return Problem(comp_s=np.full(v, 0.05), queue_s=np.zeros(v), comm_s=np.full((v, v), 0.01), upload_s=0.0,
                   user_dwell_s=60.0, steps=steps, local_steps=local, t_max_s=1.0)


def test_admissible_is_the_layers_rule_by_hand():
    p = _problem()  # devices: 0 the RSU, 1 and 2 helpers, 3 the user; 5 steps, the last 2 on the user
    assert p.admissible(0, 0).tolist() == [True, True, True, True]  # the RSU holds the request: anywhere
    assert p.admissible(1, 1).tolist() == [False, True, True, True]  # C1: never back to the RSU
    assert p.admissible(0, 2).tolist() == [True, True, True, True]  # the RSU still holds it at step 3
    assert p.admissible(3, 1).tolist() == [False, False, False, True]  # C2: the user keeps it
    assert p.admissible(1, 3).tolist() == [False, False, False, True]  # a local step
    assert p.admissible(0, 4).tolist() == [False, False, False, True]
    a = p.admissible(1, 1)
    a[:] = False
    assert p.admissible(1, 1).tolist() == [False, True, True, True]  # a new array each time


def test_every_plan_walked_through_admissible_devices_passes_violation():
    # the independent check: Problem.violation, the rule the layer applies to every plan
    rng = np.random.default_rng(4)
    for trial in range(200):
        p = _problem(int(rng.integers(0, 4)), int(rng.integers(1, 9)), int(rng.integers(1, 4)))
        plan, cur = [], 0
        for k in range(p.steps):
            cur = int(rng.choice(np.flatnonzero(p.admissible(cur, k))))
            plan.append(cur)
        assert p.violation(np.array(plan)) is None, (trial, plan)
    # and a plan leaving them is refused: helper 1 back to the RSU
    p = _problem()
    assert not p.admissible(1, 2)[0]
    assert p.violation(np.array([1, 0, 3, 3, 3])) == "breaks C1/C2 at step 2: device 1 -> 0"


def test_the_built_in_layers_declare_their_call_signature():
    from cosim.layers.cache.layer import CacheLayer
    from cosim.layers.dvit.layer import DViTLayer
    from cosim.layers.moe.layer import MoELayer

    assert DViTLayer.policy_inputs == ("problem",)
    assert CacheLayer.policy_inputs == ("cache", "candidates", "t")
    assert MoELayer.policy_inputs == ("game",)
    seen = []
    assert call_policy(lambda *a: seen.append(a) or 7, (1, 2), None, "opts") == 7
    assert seen == [(1, 2, None, "opts")]  # inputs, then rng, then options


class _Pick(Protocol):
    def __call__(self, world: Any, rng: np.random.Generator | None, options: Any, /) -> int: ...


@dataclass(frozen=True)
class _PickConfig:
    policies: list = option(["new-way"], doc="policies")
    options: dict = option({}, doc="per-policy options")


@pytest.fixture
def pick_layer(monkeypatch):
    """A layer declaring ``(world, rng, options)`` and three policies, registered only for the test."""
    monkeypatch.setitem(registry._POLICIES, "pick", {})

    class PickLayer(Layer):
        name = "pick"
        config_class = _PickConfig
        policy_protocol = _Pick

    def new_way(world, rng, opts):
        return world + (0 if rng is None else 100)

    def old_way(world, opts):
        return world

    def stochastic(world, rng, opts):
        return int(rng.integers(10, 20))

    for fn, sto in ((new_way, False), (old_way, False), (stochastic, True)):
        registry._POLICIES["pick"][fn.__name__.replace("_", "-")] = PolicySpec("pick", fn.__name__.replace("_", "-"),
                                                                               fn, None, sto, {}, "my_lab")
    return PickLayer


def _ctx():
    return LayerContext(seed=1, slot_s=1.0, scenario_file="s.toml", table=lambda name: None)


def test_a_policy_written_without_rng_is_one_line_naming_the_order(pick_layer):
    assert pick_layer.policy_inputs == ("world",)
    with pytest.raises(ConfigError) as err:
        pick_layer({"policies": ["new-way", "old-way"]}, _ctx())
    assert str(err.value) == ("s.toml: layers.pick.policies: policy 'old-way' (plugin my_lab) takes (world, opts), "
                              "but every pick policy is called (world, rng, options): the layer's inputs, then rng "
                              "(None unless stochastic), then options (docs/plugins.md)")
    layer = pick_layer({"policies": ["new-way", "stochastic"]}, _ctx())
    assert layer.call("new-way", 5) == 5  # rng None for a deterministic policy
    assert 10 <= layer.call("stochastic", 5, rng=np.random.default_rng(1)) < 20
    with pytest.raises(TypeError, match=r"layer 'pick' called policy 'new-way' with 2 input\(s\); its protocol "
                                        r"takes \(world\) and rng= by keyword"):
        layer.call("new-way", 5, None)  # rng passed by position: the old order of the built-in layers
    with pytest.raises(PolicyFailed, match="raised AttributeError"):
        layer.call("stochastic", 5)  # a stochastic policy without its generator fails as a policy


def test_a_protocol_must_end_with_rng_and_options():
    class Bad(Protocol):
        def __call__(self, world: Any, options: Any, rng: Any) -> int: ...

    with pytest.raises(TypeError, match=r"must end with \(rng, options\), got \(world, options, rng\)"):
        protocol_inputs(Bad)
    assert protocol_inputs(None) is None
