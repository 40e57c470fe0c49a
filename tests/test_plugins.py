"""The plugin API: policies and layers from outside cosim, used by name, checked by `cosim check`,
isolated when they fail, and the same in `cosim run`, `cosim replay`, `attach` and sweeps."""

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from cosim import conformance, registry
from cosim.config import from_dict
from cosim.errors import ConfigError
from cosim.layers.base import LayerContext, make_layers

from .conftest import DATA, GRID6_CFG, ROOT, says, scoped_registry

EXAMPLE = ROOT / "examples" / "plugin"
BAD = DATA / "plugins"


def cli_env(*paths):
    """run_cli with extra folders on PYTHONPATH (for the subprocess)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")])
    return env


def cosim(*args, paths=(), timeout=300):
    return subprocess.run([sys.executable, "-m", "cosim", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=cli_env(*paths))


@pytest.fixture(scope="module")
def example():
    """The example plugin package imported in this process (registers its four plugins) for
    this module's tests that ask for it; unregistered and forgotten after them."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        with scoped_registry():
            import cosim_example_plugin  # noqa: F401 - registers the four examples

            yield
    finally:
        sys.path.remove(str(EXAMPLE))


# -- the conformance suite ---------------------------------------------------------------------
def test_every_registered_layer_and_policy_conforms(example):
    """As Gymnasium checks every registered environment: built-in and example, all conform."""
    targets = conformance.resolve("all")
    names = {(k, getattr(o, "layer", ""), o.name) for k, o in targets}
    # exactly cosim's own (as a fresh process without plugins registers them) and the example's four
    fresh = subprocess.run([sys.executable, "-c", "from cosim import registry\n"
                            "for n in registry.layer_names(): print('layer', '', n, sep='/')\n"
                            "for s in registry.all_policies(): print('policy', s.layer, s.name, sep='/')"],
                           capture_output=True, text=True, timeout=120, check=True)
    builtin = {tuple(line.split("/")) for line in fresh.stdout.splitlines()}
    assert ("policy", "dvit", "vidi") in builtin and ("layer", "", "moe") in builtin
    example = {("layer", "", "rsu_load"), ("policy", "dvit", "my-greedy"), ("policy", "cache", "size-lru"),
               ("policy", "moe", "cost-plus")}
    assert names == builtin | example and len(targets) == len(builtin) + 4
    n, problems = conformance.run_checks(targets)
    assert n == len(targets)
    assert problems == []


def test_check_names_what_each_broken_plugin_violates():
    proc = cosim("check", "--plugin", "bad_plugins", "bad_plugins:back_to_rsu", "bad_plugins:short_plan",
                 "bad_plugins:evicts_itself", "bad_plugins:negative", "bad_plugins:BadBlock", "bad_plugins:raiser",
                 paths=[BAD])
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert "dvit scheduler 'back-to-rsu' (plugin bad_plugins): breaks C1/C2 at step 2: device 1 -> 0" in out
    # in a run the layer refuses the inadmissible plan and drops the policy (cosim itself does not fail)
    assert ("dvit scheduler 'back-to-rsu' (plugin bad_plugins): the layer dropped policy 'back-to-rsu' mid-run: "
            "it returned a plan that breaks C1/C2 at step 2") in out
    assert conformance.INTERNAL not in out
    assert "dvit scheduler 'short-plan' (plugin bad_plugins): a plan of 49 steps for a problem of 50" in out
    assert "cache eviction policy 'evicts-itself' (plugin bad_plugins): modified the cache while ranking it" in out
    assert "moe pricing solver 'negative' (plugin bad_plugins): negative or zero prices" in out
    assert "layer 'bad_block' (bad_plugins): on_end() returned list, not a dict" in out
    # raising when asked the same question again (the reproducibility check's second call) is a
    # violation, not a traceback out of cosim check
    assert ("dvit scheduler 'raiser' (plugin bad_plugins): raised RuntimeError when called again on the same "
            "input: deliberate failure") in out
    assert "Traceback" not in proc.stderr
    # one line per violation, each naming its target
    assert all(line.split(" ")[0] in ("dvit", "cache", "moe", "layer") for line in out.splitlines())
    assert "6 target(s)" in proc.stderr


def test_an_error_of_cosim_itself_is_not_a_verdict_on_the_policy(monkeypatch):
    """An exception escaping a built-in layer while it runs a policy is cosim's bug: reported apart,
    with the traceback in a file, never as the policy having raised."""
    from pathlib import Path

    from cosim.layers.dvit.layer import DViTLayer

    def broken(self, world):
        raise KeyError("@rsu")

    monkeypatch.setattr(DViTLayer, "on_slot", broken)
    spec = conformance.resolve("vidi")[0][1]
    _, worlds = conformance.recorded_worlds()
    lines = conformance.check_policy(spec, worlds)
    internal = [ln for ln in lines if ln.startswith(conformance.INTERNAL)]
    assert len(internal) == 1 and "while checking dvit scheduler 'vidi'" in internal[0]
    assert "KeyError: '@rsu'" in internal[0] and "not a verdict on it" in internal[0]
    assert not [ln for ln in lines if "raised KeyError" in ln]
    path = Path(internal[0].rsplit("traceback in ", 1)[1])
    text = path.read_text()
    assert "Traceback" in text and "def broken" not in text and "broken" in text and "KeyError: '@rsu'" in text
    path.unlink()


def test_check_of_something_unregistered_is_one_line():
    proc = cosim("check", "json:dumps")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "neither a registered layer nor a registered policy" in proc.stderr


# -- configuration -------------------------------------------------------------------------------
def _cfg(layers, plugins=()):
    return from_dict({"scenario": {"sumocfg": str(GRID6_CFG), "plugins": list(plugins)}, "layers": layers}, "s.toml")


CTX = LayerContext(seed=1, slot_s=1.0, scenario_file="s.toml", table=lambda name: None)


def test_per_policy_options_are_validated_by_the_policys_own_dataclass(example):
    lay, = make_layers(_cfg({"dvit": {"policies": ["vidi", "my-greedy"],
                                      "options": {"my-greedy": {"lookahead": 3}, "vidi": {"rho": 0.5}}}}), CTX)
    assert lay.policies["my-greedy"].options.lookahead == 3 and lay.policies["vidi"].options.rho == 0.5
    assert lay.policies["optimal" if "optimal" in lay.policies else "vidi"].options.phi == 1e-4
    cases = [
        ({"my-greedy": {"lookahed": 3}}, "layers.dvit.options.my-greedy.lookahed"),
        ({"my-greedy": {"lookahead": 0}}, "layers.dvit.options.my-greedy.lookahead: 0 is out of range"),
        ({"optimal": {"x": 1}}, "layers.dvit.options.optimal: 'optimal' is not among the policies run"),
        ({"my-greedy": 3}, "layers.dvit.options.my-greedy: must be a table"),
    ]
    for options, msg in cases:
        with pytest.raises(ConfigError, match=msg.replace(".", r"\.")):
            make_layers(_cfg({"dvit": {"policies": ["vidi", "my-greedy"], "options": options}}), CTX)
    with pytest.raises(ConfigError, match="the built-in policy 'mddi' takes no options"):
        make_layers(_cfg({"dvit": {"policies": ["mddi"], "options": {"mddi": {"a": 1}}}}), CTX)
    with pytest.raises(ConfigError, match="'vidi' is listed twice"):
        make_layers(_cfg({"dvit": {"policies": ["vidi", "vidi"]}}), CTX)


def test_a_plugin_that_cannot_be_imported_is_one_line_naming_the_key():
    with pytest.raises(ConfigError, match=r"s\.toml: scenario\.plugins: plugin 'no_such_lab' failed to import: "
                                          "ModuleNotFoundError"):
        make_layers(_cfg({}, plugins=["no_such_lab"]), CTX)
    with pytest.raises(ConfigError, match="plugin file .*missing.py does not exist"):
        make_layers(_cfg({}, plugins=["/nowhere/missing.py"]), CTX)


def test_a_py_file_plugin_is_named_by_its_path(tmp_path):
    """A plugin file is imported as ``cosim_plugin_<stem>``, a name the user never wrote: what
    messages show (``spec.origin``: `cosim check`, `cosim config`, a run's warnings) is its path,
    as summary.json's plugins list it."""
    shutil.copy(BAD / "bad_plugins.py", tmp_path / "my_sched.py")
    scen = tmp_path / "s.toml"
    make_layers(from_dict({"scenario": {"sumocfg": str(GRID6_CFG), "plugins": ["my_sched.py"]}}, str(scen), tmp_path),
                CTX)
    spec = registry.policies("dvit")["raiser"]
    assert spec.module == "cosim_plugin_my_sched" and spec.origin == f"plugin {tmp_path / 'my_sched.py'}"
    assert str(tmp_path / "my_sched.py") in registry.plugin_versions()  # the key summary.json lists
    assert conformance.label(spec, "scheduler") == f"dvit scheduler 'raiser' (plugin {tmp_path / 'my_sched.py'})"
    _, lines = conformance.run_checks([("layer", registry.layer_class("bad_block"))])  # `cosim check` of its layer
    assert lines and all(f"layer 'bad_block' ({tmp_path / 'my_sched.py'})" in ln for ln in lines), lines
    with pytest.raises(ConfigError, match=f"registered twice \\({tmp_path / 'my_sched.py'} and "):
        registry.register_policy("dvit", "raiser")(lambda p, rng, o: None)


def test_registering_a_different_policy_under_a_taken_name_is_an_error():
    with pytest.raises(ConfigError, match="policy 'vidi' of layer 'dvit' is registered twice"):
        registry.register_policy("dvit", "vidi")(lambda p, rng, o: None)


def test_cosim_config_lists_plugin_keys_and_options():
    proc = cosim("config", "--plugin", "cosim_example_plugin", paths=[EXAMPLE])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "[layers.rsu_load]  # RSU load" in out and "overload_vehicles = 100" in out
    assert "[layers.dvit.options.my-greedy]  # plugin cosim_example_plugin.schedulers" in out
    assert "lookahead = 1" in out and "[layers.dvit.options.vidi]  # built-in" in out and "rho = 0.9" in out
    assert "[layers.moe.options.cost-plus]" in out and "[layers.cache.options.size-lru]" in out


# -- runs ---------------------------------------------------------------------------------------
SCENARIO = f'''[scenario]
sumocfg = "{GRID6_CFG}"
end_s = 40
step_length_s = 0.5
seed = 3
plugins = ["cosim_example_plugin"]

[layers.dvit]
policies = ["vidi", "my-greedy"]
request_rate_per_s = 2.0
ahead = "straight"  # a trace carries no routes: the replay below must see what the run saw
[layers.dvit.options.my-greedy]
lookahead = 3

[layers.cache]
policies = ["lc", "size-lru"]
gpu_memory_gb = 100.0
[layers.cache.options.size-lru]
seconds_per_gb = 2.0

[layers.moe]
policies = ["gecpa", "cost-plus"]
request_rate_per_s = 0.5

[layers.rsu_load]
overload_vehicles = 50
'''


@pytest.mark.sumo
def test_all_four_examples_in_one_run_and_a_replay_of_it(tmp_path):
    scen = tmp_path / "s.toml"
    scen.write_text(SCENARIO)
    proc = cosim("run", str(scen), "--out", str(tmp_path / "run"), "-q", "--record", str(tmp_path / "t.parquet"),
                 paths=[EXAMPLE])
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    lay = s["layers"]
    assert set(lay) == {"dvit", "cache", "moe", "rsu_load"}
    assert lay["dvit"]["my-greedy"]["tasks"] == lay["dvit"]["vidi"]["tasks"] > 50  # the same requests
    assert lay["cache"]["size-lru"]["requests"] == lay["cache"]["lc"]["requests"] > 0
    assert lay["moe"]["cost-plus"]["tasks"] == lay["moe"]["gecpa"]["tasks"] > 5
    # the layer's block agrees with the core's own per-RSU counts
    rsus = pd.read_parquet(tmp_path / "run" / "rsus.parquet")
    load = pd.read_parquet(tmp_path / "run" / "rsu_load.parquet")
    peak = rsus.groupby(rsus["rsu"].astype(str))["connected"].max()
    assert {r: b["peak_vehicles"] for r, b in lay["rsu_load"].items()} == peak.to_dict()
    assert len(load) == len(rsus)
    assert s["plugins"] == {"cosim_example_plugin": ""} or "cosim_example_plugin" in s["plugins"]
    # replayed: the plugins act identically without SUMO
    proc = cosim("replay", str(tmp_path / "t.parquet"), "--scenario", str(scen), "--out", str(tmp_path / "rep"), "-q",
                 paths=[EXAMPLE])
    assert proc.returncode == 0, proc.stderr
    for table in ("dvit_tasks", "cache_requests", "moe_tasks", "rsu_load"):
        a = pd.read_parquet(tmp_path / "run" / f"{table}.parquet").drop(columns=["solve_ms"], errors="ignore")
        b = pd.read_parquet(tmp_path / "rep" / f"{table}.parquet").drop(columns=["solve_ms"], errors="ignore")
        pd.testing.assert_frame_equal(a, b, check_categorical=False)


@pytest.mark.sumo
def test_a_two_cell_sweep_with_the_examples(tmp_path):
    scen = tmp_path / "s.toml"
    scen.write_text(SCENARIO.replace("end_s = 40", "end_s = 20"))
    sw = tmp_path / "sweep.toml"
    sw.write_text(f'[sweep]\nname = "plug"\nscenarios = ["{scen}"]\nseeds = [1, 2]\n'
                  '[set]\n"output.coverage" = false\n[grid]\n"layers.dvit.options" = [{ my-greedy = { lookahead = 2 } }]\n')
    proc = cosim("sweep", str(sw), "--out", str(tmp_path / "sw"), "--jobs", "2", "-q", paths=[EXAMPLE], timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    res = pd.read_parquet(tmp_path / "sw" / "results.parquet")
    assert set(res["seed"]) == {1, 2}
    pols = set(zip(res["layer"], res["policy"]))
    assert {("dvit", "my-greedy"), ("cache", "size-lru"), ("moe", "cost-plus")} <= pols


@pytest.mark.sumo
def test_a_raising_policy_is_dropped_with_one_line_and_the_others_kept(raiser_run):
    scen, proc, out = raiser_run  # vidi, raiser (raises after 5 tasks) and optimal, 40 s
    assert proc.returncode == 0, proc.stderr
    warn = [ln for ln in proc.stderr.splitlines() if ln.startswith("cosim: warning")]
    assert len(warn) == 1
    assert says(warn[0], f"{scen}: layers.dvit.policies: ", "'raiser'", f"plugin {BAD / 'bad_plugins.py'}",
                "RuntimeError: deliberate failure"), warn[0]
    d = json.loads((out / "summary.json").read_text())["layers"]["dvit"]
    assert d["raiser"]["tasks"] == 5 and "deliberate failure" in d["raiser"]["error"]
    warnings = json.loads((out / "summary.json").read_text())["warnings"]
    assert [w for w in warnings if "raiser" in w] == [d["raiser"]["error"]]
    assert d["vidi"]["tasks"] == d["optimal"]["tasks"] > 30 and "error" not in d["vidi"]
    tasks = pd.read_parquet(out / "dvit_tasks.parquet")
    assert (tasks["policy"] == "vidi").sum() == d["vidi"]["tasks"]


def test_entry_point_plugins_are_found_without_a_scenario_key(tmp_path):
    """pip-installs the example package as a user would — built from its pyproject.toml, its
    entry point written by pip — but into a throwaway folder put on the path of one `cosim
    config`, never into the running venv; cosim finds it through the entry point alone."""
    src = shutil.copytree(EXAMPLE, tmp_path / "src",
                          ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(site), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    entry, = site.glob("cosim_example_plugin-*.dist-info/entry_points.txt")
    assert entry.read_text().split() == ["[cosim.plugins]", "example", "=", "cosim_example_plugin"]
    out = cosim("config", paths=[site])
    assert out.returncode == 0, out.stderr
    assert "[layers.rsu_load]" in out.stdout and "[layers.dvit.options.my-greedy]" in out.stdout
    # without the folder on the path no entry point announces them (the venv has no such package)
    bare = cosim("config")
    assert bare.returncode == 0 and "[layers.rsu_load]" not in bare.stdout and "my-greedy" not in bare.stdout


def test_one_option_of_one_policy_is_a_key_for_set_and_sweeps():
    from cosim.config import apply_overrides, key_parts

    assert key_parts("layers.dvit.options.vidi.rho") == ["layers", "dvit", "options", "vidi", "rho"]
    assert key_parts("layers.dvit.opts.vidi.rho") is None
    cfg = _cfg({"dvit": {"policies": ["vidi", "optimal"], "options": {"vidi": {"phi": 1e-3}}}})
    out = apply_overrides(cfg, {"layers.dvit.options.vidi.rho": 0.5})
    assert out.layers["dvit"]["options"] == {"vidi": {"phi": 1e-3, "rho": 0.5}}  # the other option stays
    assert cfg.layers["dvit"]["options"] == {"vidi": {"phi": 1e-3}}  # the original is untouched
    lay, = make_layers(out, CTX)
    assert (lay.policies["vidi"].options.rho, lay.policies["vidi"].options.phi) == (0.5, 1e-3)
    proc = cosim("run", str(ROOT / "scenarios" / "grid6_dvit.toml"), "--set", "layers.dvit.options.vidi.rho=7",
                 "--out", "/nonexistent/never")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--set layers.dvit.options.vidi.rho=7" in proc.stderr and "layers.dvit.options.vidi.rho" in proc.stderr


ACCEL_PLUGIN = '''
import numpy as np
from cosim import Layer, register_layer


class _Seen(Layer):
    def on_start(self):
        self.table = self.ctx.table(self.name)

    def on_slot(self, world):
        a = world.snap.accel
        self.table.append({"slot": np.array([world.slot]), "read": np.array([bool(np.isfinite(a).all())])})


@register_layer("accel_asks")
class Asks(_Seen):
    snapshot_fields = ("accel",)


@register_layer("accel_blind")
class Blind(_Seen):
    pass
'''


@pytest.mark.sumo
@pytest.mark.parametrize("layer, read", [("accel_asks", True), ("accel_blind", False)])
def test_a_layer_gets_the_acceleration_when_it_declares_it(tmp_path, layer, read):
    (tmp_path / "accel_plugin.py").write_text(ACCEL_PLUGIN)
    scen = tmp_path / "s.toml"
    scen.write_text(f'[scenario]\nsumocfg = "{GRID6_CFG}"\nend_s = 15\nplugins = ["accel_plugin.py"]\n[layers.{layer}]\n')
    proc = cosim("run", str(scen), "--out", str(tmp_path / "run"), "-q", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr
    seen = pd.read_parquet(tmp_path / "run" / f"{layer}.parquet")
    assert len(seen) == 15 and (seen["read"] == read).all()
