"""The layer owns its contract: one policy call order declared by the layer (a typed call
signature), the DViT admissibility helper, and a policy written another way refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
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


# -- a plugin layer in cosim view, cosim report and cosim plot -----------------------------------
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin"
PLUGIN_RUN = """[scenario]
sumocfg = "{cfg}"
end_s = {end}
step_length_s = 0.5
plugins = ["cosim_example_plugin"]
[layers.dvit]
policies = ["vidi", "my-greedy"]
[layers.rsu_load]
overload_vehicles = 20
"""


def _cosim(*args: str) -> subprocess.CompletedProcess:
    """`cosim ...` in a fresh process that can import the example plugin (scenario.plugins names it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLE), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "cosim", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600, env=env)


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
    from .conftest import GRID6_CFG

    folder = tmp_path_factory.mktemp("plugin-run")
    (folder / "s.toml").write_text(PLUGIN_RUN.format(cfg=GRID6_CFG, end=60))
    proc = _cosim("run", str(folder / "s.toml"), "--out", str(folder / "run"), "-q")
    assert proc.returncode == 0, proc.stderr
    return folder / "run"


def _js_fixed(v: float, digits: int) -> str:
    """What JavaScript's ``v.toFixed(digits)`` writes (the exact binary value, halves up)."""
    return str(Decimal(v).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


@pytest.mark.sumo
def test_the_example_plugin_layer_is_in_view_html(plugin_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from .test_view import _page

    proc = _cosim("view", str(plugin_run), "--out", str(tmp_path / "view.html"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((plugin_run / "summary.json").read_text())
    block = summary["layers"]["rsu_load"]
    assert sorted(block) == sorted(r["id"] for r in summary["rsus"])
    with _page(tmp_path / "view.html") as browser:
        layer = Select(browser.find_element(By.ID, "layer"))
        assert [o.text for o in layer.options] == ["dvit", "rsu_load"]  # the run's layers, the plugin's too
        assert browser.execute_script("return window.cosimView.state.tasks") >= 0
        layer.select_by_visible_text("rsu_load")
        rows = [[td.text for td in tr.find_elements(By.CSS_SELECTOR, "th,td")]
                for tr in browser.find_elements(By.CSS_SELECTOR, "#summary tr")]
        # the columns the layer declares (headline_metrics), one row per entry of its summary block
        assert rows[0] == ["policy", "peak vehicles", "mean vehicles", "overloaded share"]
        assert rows[1:] == [[rsu, _js_fixed(b["peak_vehicles"], 0), _js_fixed(b["mean_vehicles"], 1),
                             _js_fixed(b["overloaded_share"], 3)] for rsu, b in block.items()]
        assert [o.text for o in Select(browser.find_element(By.ID, "policy")).options] == list(block)
        assert browser.execute_script("return window.cosimView.state.tasks") == 0  # it has no tasks to draw
        layer.select_by_visible_text("dvit")
        browser.execute_script("window.cosimView.setSlot(50)")
        assert browser.execute_script("return window.cosimView.state.tasks") > 0  # the task layer still draws


@pytest.mark.sumo
def test_the_example_plugin_layer_is_in_report_png(plugin_run, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from cosim.report import FIXED_PANELS

    proc = _cosim("report", str(plugin_run), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    panels = Image.open(tmp_path / "report.png").info["Description"].split("; ")
    assert panels == [*FIXED_PANELS, "dvit: latency CDF per policy", "dvit: success rate per policy",
                      "rsu_load: peak vehicles served", "rsu_load: mean vehicles served",
                      "rsu_load: share of slots overloaded"]


@pytest.mark.sumo
def test_cosim_plot_draws_the_example_plugin_layers_headline_metrics(tmp_path):
    pytest.importorskip("matplotlib")
    from .conftest import GRID6_CFG

    (tmp_path / "s.toml").write_text(PLUGIN_RUN.format(cfg=GRID6_CFG, end=20).replace(
        '["vidi", "my-greedy"]', '["mddi"]'))
    (tmp_path / "sw.toml").write_text(f'[sweep]\nname = "plug"\nscenarios = ["{tmp_path / "s.toml"}"]\nseeds = [1]\n'
                                      '[set]\n"output.coverage" = false\n'
                                      '[grid]\n"layers.rsu_load.overload_vehicles" = [2, 1000]\n')
    proc = _cosim("sweep", str(tmp_path / "sw.toml"), "--out", str(tmp_path / "sw"), "-q")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    proc = _cosim("plot", str(tmp_path / "sw"))
    assert proc.returncode == 0, proc.stderr
    names = sorted(Path(p).name for p in proc.stdout.split())
    assert [n for n in names if "rsu_load" in n] == ["s-rsu_load-mean_vehicles.png", "s-rsu_load-overloaded_share.png",
                                                     "s-rsu_load-paired.png", "s-rsu_load-peak_vehicles.png"]
    # what the overloaded-share figure draws: every RSU of the run at both thresholds, from summary.csv
    import pandas as pd

    df = pd.read_csv(tmp_path / "sw" / "summary.csv")
    rows = df[df["layer"] == "rsu_load"]
    assert len(rows) == 2 * 4 and set(rows["layers.rsu_load.overload_vehicles"]) == {2, 1000}
    high = rows[rows["layers.rsu_load.overload_vehicles"] == 1000]["overloaded_share.mean"]
    low = rows[rows["layers.rsu_load.overload_vehicles"] == 2]["overloaded_share.mean"]
    assert (high == 0).all() and (low > 0).all()


def test_the_overlay_finds_a_tasks_vehicle_where_the_layer_says():
    from cosim.overlay import Overlay, task_vehicle_columns

    assert {"dvit_tasks": "user", "moe_tasks": "tv"}.items() <= task_vehicle_columns().items()
    ov, rows = Overlay(), []
    ov.shown = {"vidi"}
    tables = ov.tap(lambda name: type("W", (), {"append": lambda self, cols: rows.append((name, cols))})())
    cols = {"policy": ["vidi", "mddi", "vidi"], "user": ["a", "b", "c"], "outcome": ["failed", "failed", "done"]}
    tables("dvit_tasks").append(cols)
    tables("other").append({**cols})  # not a task table: written, never a failure on the map
    assert [n for n, _ in rows] == ["dvit_tasks", "other"]
    assert set(ov._failed_until) == {"a"}  # failed, of a shown policy, in the column the DViT layer names
