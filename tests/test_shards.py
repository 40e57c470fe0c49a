"""A layer's policies spread over worker processes (scenario.jobs >= 3): the rows of a slot are
written grouped by policy in the configured order, the dealing is by cost, and the results
are those of one process — live, replayed, with every layer and both queue models; a layer
raising and a worker dying end the run with the right status and the slots so far (Ctrl-C:
tests/test_pipelined.py)."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cosim import register_policy
from cosim.config import load as load_config
from cosim.errors import ConfigError, CosimError
from cosim import recorder
from cosim.engine import processes, workers
from cosim.recorder import Coded, Lists, TableWriter

from .conftest import GRID6_CFG, ROOT, as_foreground, run_cli, run_grid6, says, wait_for
from .test_pipelined import same_results

PLUGINS = ROOT / "tests" / "data" / "plugins"

MANY = """
[layers.dvit]
request_rate_per_s = 1.0
policies = ["vidi", "optimal", "sdi", "mddi"]
[layers.cache]
policies = ["lc", "lfu", "lc-predictive"]
request_rate_per_vehicle_s = 0.1
[layers.moe]
request_rate_per_s = 0.5
policies = ["gecpa", "nearest", "uniform"]
"""


def _cfg(tmp_path, layers_toml):
    f = tmp_path / "s.toml"
    f.write_text(f'[scenario]\nsumocfg = "{GRID6_CFG}"\nend_s = 10\n' + layers_toml)
    return load_config(f)


# -- rows grouped by policy ----------------------------------------------------------------------
def test_a_slot_s_rows_are_written_grouped_by_policy_in_the_configured_order(tmp_path):
    rows = recorder.PolicyRows()
    rows.append({"policy": np.array(["b"], dtype=object), "v": np.array([1.0]), "l": Lists([[1]])})
    rows.append({"policy": Coded(np.array([0, 1, 0]), ["a", "b"]), "v": np.array([2.0, 3.0, 4.0]),
                 "l": Lists([[2], [3, 3], []])})
    rows.append({"note": np.array(["no policy"], dtype=object)})
    rows.append({"policy": np.array(["a"], dtype=object), "v": np.array([5.0]), "l": Lists([[5]])})
    held = rows.drain()
    assert rows.drain() == {}  # handed over once
    got = []

    class Writer:
        def append(self, cols):
            got.append(cols)

    recorder.write_grouped(Writer(), held, ["a", "b"])
    # a's rows (2, 4 from the mixed batch, then 5), b's (1, then 3), then the row without a policy
    values = [list(np.atleast_1d(c["v"])) if "v" in c else c["note"].tolist() for c in got]
    assert values == [[2.0, 4.0], [5.0], [1.0], [3.0], ["no policy"]]
    assert got[0]["l"].values == [[2], []] and list(got[0]["policy"].codes) == [0, 0]
    assert got[3]["l"].values == [[3, 3]] and got[3]["policy"].names == ["a", "b"]
    # and written as a table: a Coded policy column split by policy reads back as its names
    rows.append({"policy": Coded(np.array([1, 0, 1]), ["a", "b"]), "v": np.array([1.0, 2.0, 3.0])})
    rows.append({"policy": Coded(np.array([0]), ["a", "b"]), "v": np.array([4.0])})
    w = TableWriter(tmp_path / "t.parquet")
    recorder.write_grouped(w, rows.drain(), ["a", "b"])
    w.close()
    df = pd.read_parquet(tmp_path / "t.parquet")
    assert df["policy"].astype(str).tolist() == ["a", "a", "b", "b"]
    assert df["v"].tolist() == [2.0, 4.0, 1.0, 3.0]


# -- dealing the policies ------------------------------------------------------------------------
def test_policies_are_dealt_costliest_first_to_the_least_loaded_share(tmp_path):
    cfg = _cfg(tmp_path, '[layers.dvit]\npolicies = ["optimal", "sdi", "vidi"]\n[layers.dvit.options.vidi]\n'
                         'rho = 0.5\n[layers.moe]\npolicies = ["gecpa", "nearest"]\n')
    p = workers.plan(cfg, workers=2)
    # by hand, registered costs: dvit shared 0.32 + vidi 0.97, optimal 0.38, sdi 0.05 (1.72 whole);
    # moe shared 2.78 + gecpa 0.10, nearest 0.98 (3.86 whole); loads start [1.3, 0.5, 0.5]. Whole:
    # moe to 1 (4.36; tie with 2: the lower), dvit to 2 (2.22 < 3.02): 4.36. Split dvit (vidi
    # 1.29, optimal 0.70, sdi 0.37 alone): moe to 1, vidi to 2 (1.79), optimal to 0 (2.0 < 2.17),
    # sdi to 2 (1.84 < 2.05): 4.36, not lower. Split moe (nearest 3.76, gecpa 2.88 alone): nearest
    # to 1 (4.26), gecpa to 2 (3.38 < 4.18 < 4.36), dvit to 0 (3.02): 4.26, lower. Both: nearest to
    # 1, gecpa to 2, vidi, optimal and sdi to 0 (2.59, 2.97, 3.02): 4.26, not lower than that
    assert p.order == {"dvit": ["optimal", "sdi", "vidi"], "moe": ["gecpa", "nearest"]}
    pols = [{n: t["policies"] for n, t in s.layers.items()} for s in p.shares]
    assert pols == [{"dvit": ["optimal", "sdi", "vidi"]}, {"moe": ["nearest"]}, {"moe": ["gecpa"]}]
    assert p.loads == pytest.approx([3.02, 4.26, 3.38])
    assert p.shares[0].layers["dvit"]["options"] == {"vidi": {"rho": 0.5}}  # options go with their policy
    assert p.owner[("moe", "nearest")] == 1 and p.owner[("dvit", "optimal")] == 0
    # dvit alone over one worker: whole 2.17 (the worker); split vidi to 1 (1.79), optimal to 0
    # (2.0 < 2.17): 2.0, lower; the options go with vidi
    one = workers.plan(dataclasses.replace(cfg, layers={"dvit": {"policies": ["optimal", "vidi"],
                                                                 "options": {"vidi": {"rho": 0.5}}}}), workers=1)
    assert [s.layers["dvit"]["options"] for s in one.shares] == [{}, {"vidi": {"rho": 0.5}}]
    assert [s.layers["dvit"]["policies"] for s in one.shares] == [["optimal"], ["vidi"]]
    # more workers than that needs: split moe, dvit whole (2.22) in a third worker; splitting
    # dvit too lowers nothing (4.26 stays): the shares left empty dropped
    assert [len(s.layers) for s in workers.plan(cfg, workers=9).shares] == [0, 1, 1, 1]


def _made(shared: float, **costs: float):
    """A hand-made shardable layer (as :func:`cosim.layers.base.bind_layers` gives it) with this
    ``shared_cost`` and policies of these costs, registered by this module (a worker could make them)."""
    from cosim.layers.base import Bound, Policy
    from cosim.registry import PolicySpec

    def fn(*args):  # pragma: no cover - never called: only dealt
        return None

    return lambda name: Bound(name, True, {p: Policy(PolicySpec(name, p, fn, module=__name__, cost=c), None, {})
                                           for p, c in costs.items()}, shared)


def _made_cfg(tmp_path, layers):
    return dataclasses.replace(_cfg(tmp_path, ""), layers={b.name: {"policies": list(b.policies)} for b in layers})


def _dealt(p):
    return [{n: t["policies"] for n, t in s.layers.items()} for s in p.shares]


def test_a_layer_is_kept_whole_where_splitting_it_pays_its_shared_cost_again(tmp_path):
    # a: shared 3 + policies 2, 2 (7 whole); b: shared 1 + 1, 1 (3 whole); loads start [1.3, 0.5]
    # (the plugin's own, a worker's own). Whole: a (7) to 1 (7.5 < 8.3), b (3) to 0 (4.3 < 10.5):
    # [4.3, 7.5]. Splitting a (each policy 5 alone): a1 to 1 (5.5), a2 to 0 (6.3 < 7.5), b to 1
    # (8.5 < 9.3): 8.5. Splitting b: a to 1, b1 (2) to 0 (3.3), b2 to 0 (4.3 < 9.5): 7.5, not
    # lower. Both: a1 to 1, a2 to 0, b1 to 1 (7.5 < 8.3), b2 to 0 (8.3 < 8.5): 8.3. So whole.
    layers = [_made(3.0, a1=2.0, a2=2.0)("a"), _made(1.0, b1=1.0, b2=1.0)("b")]
    p = workers.plan(_made_cfg(tmp_path, layers), 1, layers)
    assert _dealt(p) == [{"b": ["b1", "b2"]}, {"a": ["a1", "a2"]}]
    assert p.loads == pytest.approx([4.3, 7.5])
    # counted without the shared costs (each policy alone, as before) a would be split
    free = [_made(0.0, a1=5.0, a2=5.0)("a"), _made(0.0, b1=2.0, b2=2.0)("b")]
    assert workers.plan(_made_cfg(tmp_path, free), 1, free).owner[("a", "a1")] != \
        workers.plan(_made_cfg(tmp_path, free), 1, free).owner[("a", "a2")]
    # auto: one share 11.3; two 7.5 (3.8 less: a worker); three: split a (a1 to 1, a2 to 2, 5.5
    # each; b to 0, 4.3): 5.5 (2.0 less: a worker); four: a1, a2, b (3.5) one each: 5.5, no less
    assert [workers.auto_jobs(layers, c) for c in (1, 2, 3, 8)] == [1, 3, 4, 4]
    p3 = workers.plan(_made_cfg(tmp_path, layers), 2, layers)
    assert _dealt(p3) == [{"b": ["b1", "b2"]}, {"a": ["a1"]}, {"a": ["a2"]}]
    assert p3.loads == pytest.approx([4.3, 5.5, 5.5])
    # a layer that is not shardable runs in share 0 and pays its shared cost there (2, no
    # policies): 3.3 to start with; a whole to the worker (7.5 < 10.3); split, a1 and a2 both to
    # the worker (5.5, then 7.5 < 8.3): 7.5, not lower
    from cosim.layers.base import Bound

    fixed = [Bound("f", False, {}, 2.0), layers[0]]
    pf = workers.plan(_made_cfg(tmp_path, fixed), 1, fixed)
    assert _dealt(pf) == [{"f": []}, {"a": ["a1", "a2"]}] and pf.loads == pytest.approx([3.3, 7.5])


def test_a_layer_is_split_where_that_lowers_the_busiest_share(tmp_path):
    # a: shared 1 + policies 6, 6, 2 (15 whole); b: shared 0.5 + 1 (1.5; one policy: never split).
    # Whole: a to 1 (15.5), b to 0 (2.8): 15.5. Split a (alone: 7, 7, 3): a1 to 1 (7.5 < 8.3), a2
    # to 0 (8.3 < 13.5), a3 to 1 (9.5 < 10.3), b to 0 (9.8 < 11.0): 9.8, lower: split
    layers = [_made(1.0, a1=6.0, a2=6.0, a3=2.0)("a"), _made(0.5, b1=1.0)("b")]
    p = workers.plan(_made_cfg(tmp_path, layers), 1, layers)
    assert _dealt(p) == [{"a": ["a2"], "b": ["b1"]}, {"a": ["a1", "a3"]}]
    assert p.loads == pytest.approx([9.8, 9.5])
    # the configured order only breaks ties: the same deal with the policies listed the other way
    back = [_made(0.5, b1=1.0)("b"), _made(1.0, a3=2.0, a2=6.0, a1=6.0)("a")]
    pb = workers.plan(_made_cfg(tmp_path, back), 1, back)
    assert pb.loads == pytest.approx([9.8, 9.5]) and pb.owner[("a", "a3")] == 1 and pb.owner[("b", "b1")] == 0
    assert pb.owner[("a", "a1")] != pb.owner[("a", "a2")]
    # auto: one share 17.8; two 9.8 (a worker); three: a1, a2 one worker each (7.5), a3 (3) and
    # b to 0 (5.8): 7.5 (2.3 less: a worker); four: a3 to the third worker (3.5): 7.5, no less
    assert [workers.auto_jobs(layers, c) for c in (2, 3, 4, 16)] == [3, 4, 4, 4]


def test_a_policy_joining_its_layer_s_pinned_policy_in_share_0_pays_no_shared_cost_again(tmp_path):
    # a: shared 2, a0 pinned (registered in the script: stays in share 0) 1, a1 dealable 1; b:
    # shared 0, b1 10. Share 0 starts at 1.3 + 2 + 1 = 4.3 (a's shared cost counted with a0),
    # a worker at 0.5. b (10) to 1 (10.5 < 14.3); a1 (alone 3) to 0, which holds a already:
    # 4.3 + 1 = 5.3 (< 13.5), not 4.3 + 3 = 7.3
    from cosim.layers.base import Policy

    a = _made(2.0, a0=1.0, a1=1.0)("a")
    a.policies["a0"] = Policy(dataclasses.replace(a.policies["a0"].spec, module="__main__"), None, {})
    layers = [a, _made(0.0, b1=10.0)("b")]
    p = workers.plan(_made_cfg(tmp_path, layers), 1, layers)
    assert _dealt(p) == [{"a": ["a0", "a1"]}, {"b": ["b1"]}]
    assert p.loads == pytest.approx([5.3, 10.5])


def test_units_of_equal_cost_go_in_the_configured_order_of_their_layers(tmp_path):
    # a: shared 1 + a1 2 = 3; b: shared 2 + b1 1 = 3 — an exact tie. The first dealt (the earlier
    # layer, a) goes to the worker (0.5 + 3 = 3.5 < 4.3), the second to share 0 (4.3 < 6.5)
    layers = [_made(1.0, a1=2.0)("a"), _made(2.0, b1=1.0)("b")]
    p = workers.plan(_made_cfg(tmp_path, layers), 1, layers)
    assert _dealt(p) == [{"b": ["b1"]}, {"a": ["a1"]}] and p.loads == pytest.approx([4.3, 3.5])
    back = layers[::-1]
    assert _dealt(workers.plan(_made_cfg(tmp_path, back), 1, back)) == [{"a": ["a1"]}, {"b": ["b1"]}]


def test_jobs_auto_starts_what_the_cores_and_the_policies_can_use(tmp_path, monkeypatch):
    from cosim.layers.base import validate_layers

    moe = validate_layers(_cfg(tmp_path, "[layers.moe]\n"))  # all seven solvers
    # by hand: shared 2.78 + evolutionary 1.38, nearest 0.98, random 0.96, uniform 0.73, gradient
    # 0.21, gecpa 0.10, best-response 0.05 (7.19 whole); the plugin's 1.3, each worker 0.5 of its
    # own. One share: 8.49. Two: whole 7.69; split (alone: 4.16, 3.76, 3.74, 3.51, 2.99, 2.88,
    # 2.83) evolutionary to 1 (4.66), nearest to 0 (5.06), random to 1 (5.62), uniform to 0 (5.79),
    # gradient to 1 (5.83), gecpa to 0 (5.89), best-response to 1 (5.88): 5.89, 2.60 less (a
    # worker). Three: 4.66, 4.26 for evolutionary and nearest in the workers, random to 0 (5.04),
    # uniform to 2 (4.99), gradient, gecpa and best-response to 1 (5.02): 5.04, 0.85 less (a
    # worker). Four: evolutionary, nearest, random one worker each (4.66, 4.26, 4.24), uniform to 0
    # (4.81), gradient to 3 (4.45), gecpa and best-response to 2 (4.41): 4.81, only 0.23 less
    assert [workers.auto_jobs(moe, c) for c in (1, 2, 3, 4, 16)] == [1, 3, 4, 4, 4]
    dvit = validate_layers(_cfg(tmp_path, '[layers.dvit]\npolicies = ["vidi", "sdi"]\n'))
    # shared 0.32 + vidi 0.97 + sdi 0.05: one share 2.64; two: whole 1.84 (the worker), split:
    # vidi to 1 (1.79), sdi to 0 (1.67): 1.79, 0.85 less; three: vidi, sdi a worker each: 1.79
    assert [workers.auto_jobs(dvit, c) for c in (2, 8)] == [3, 3]
    alone = validate_layers(_cfg(tmp_path, '[layers.cache]\npolicies = ["lru"]\n'))
    assert workers.auto_jobs(alone, 8) == 2  # 1.3 + 0.06 + 0.07: a worker makes it 1.3, 0.13 less
    assert workers.auto_jobs([], 8) == 2  # the core alone: SUMO in its own process
    monkeypatch.setenv("COSIM_CPUS", "2")
    assert processes.available_cores() == 2
    cfg = _cfg(tmp_path, "[layers.moe]\n").replace(scenario={"jobs": 0})
    assert workers.resolve_jobs(cfg).scenario.jobs == 3
    assert workers.resolve_jobs(cfg, most=2).scenario.jobs == 2
    assert workers.resolve_jobs(cfg.replace(scenario={"jobs": 4})).scenario.jobs == 4  # a number stays
    for bad in ("two", "0"):
        monkeypatch.setenv("COSIM_CPUS", bad)
        with pytest.raises(CosimError, match=f"COSIM_CPUS='{bad}': expected a whole number of cores >= 1"):
            processes.available_cores()


def test_workers_started_early_are_taken_or_ended(tmp_path):
    cfg = _cfg(tmp_path, '[layers.cache]\npolicies = ["lru", "lc"]\n').replace(scenario={"jobs": 5})
    warm = workers.Warm(cfg)
    procs = [p for p, _ in warm.spawned]
    assert len(procs) == 3 and all(p.args[-1] == "cache" for p in procs)  # importing the cache layer meanwhile
    proc, conn = warm.pop()
    warm.close()  # the two not taken: ended, none left running
    assert [p.poll() is not None for p in procs] == [False, True, True]
    conn.close()  # the one taken ends when its pipe closes, as a worker does
    assert proc.wait(timeout=60) == 0
    assert workers.Warm(cfg.replace(scenario={"jobs": 2})).spawned == []  # no policy workers: none started


@pytest.mark.sumo
def test_jobs_auto_on_the_command_line_records_the_count_it_chose(tmp_path):
    env = {**os.environ, "COSIM_CPUS": "2"}
    out = tmp_path / "auto"
    proc = subprocess.run([sys.executable, "-m", "cosim", "run", str(ROOT / "scenarios" / "grid6_dvit.toml"), "--end",
                           "3", "--jobs", "auto", "--out", str(out)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # the progress line's last refresh: the plugin's wait for the worker and how far behind it is
    last = [line for line in proc.stderr.splitlines() if line.startswith("t=")][-1]
    assert re.search(r"plugin busy \d+% \(of it \d+% waiting for workers, \d+ slots? behind\) waits \d+%", last), last
    assert "jobs = 3" in (out / "config.toml").read_text()  # DViT's seven schedulers on 2 cores: one worker
    assert len(json.loads((out / "summary.json").read_text())["cpu_s"]["policy_workers"]) == 1
    bad = run_cli("run", str(ROOT / "scenarios" / "grid6.toml"), "--jobs", "many")
    assert bad.returncode == 2 and "--jobs: expected a number of processes or 'auto', not 'many'" in bad.stderr
    bad = run_cli("run", str(ROOT / "scenarios" / "grid6.toml"), "--set", "scenario.jobs=many")
    assert bad.returncode == 2 and "scenario.jobs: expected an integer or 'auto', got 'many'" in bad.stderr


def test_a_run_takes_the_workers_started_before_its_checks(tmp_path, monkeypatch, trace):
    """The early start (Warm) is what the run uses: one process spawned per worker, not two."""
    from cosim.runner import open_replay

    spawned = []
    real = workers._spawn
    monkeypatch.setattr(workers, "_spawn", lambda layers: spawned.append(real(layers)) or spawned[-1])
    cfg = load_config(ROOT / "scenarios" / "grid6_dvit.toml").replace(scenario={"jobs": "auto"})
    monkeypatch.setenv("COSIM_CPUS", "2")
    session, source = open_replay(cfg, trace, tmp_path / "r")
    try:
        assert session.cfg.scenario.jobs == 3 and len(session.shards.workers) == 1
        assert len(spawned) == 1 and session.shards.workers[0].proc is spawned[0][0]
        assert spawned[0][0].args[-1] == "dvit"  # it imported the DViT layer while the run was checked
    finally:
        session.discard()


def test_a_layer_that_is_not_shardable_runs_whole_in_the_plugin_s_process(tmp_path):
    sys.path.insert(0, str(ROOT / "examples" / "plugin"))
    try:
        import cosim_example_plugin  # noqa: F401 - registers rsu_load (not shardable) and my-greedy

        cfg = _cfg(tmp_path, '[layers.rsu_load]\noverload_vehicles = 5\n'
                             '[layers.dvit]\npolicies = ["vidi", "optimal", "my-greedy"]\n')
        p = workers.plan(cfg, workers=1)
        # nothing to spread (only a layer that is not shardable): one share, no worker
        assert len(workers.plan(_cfg(tmp_path, '[layers.rsu_load]\n'), workers=3).shares) == 1
    finally:
        sys.path.remove(str(ROOT / "examples" / "plugin"))
    # loads [1.3, 0.5] (rsu_load: no policies, shared cost 0 by default); dvit shared 0.32 + vidi
    # 0.97, optimal 0.38, my-greedy (registered without a cost: 1): whole in the worker 3.17;
    # split (alone 1.29, 0.70, 1.32): my-greedy to 1 (1.82), vidi to 0 (2.59 < 2.79), optimal to 1
    # (2.20 < 2.97): 2.59, lower
    assert p.shares[0].layers["rsu_load"] == {"overload_vehicles": 5}
    assert p.shares[0].layers["dvit"]["policies"] == ["vidi"]
    assert set(p.shares[1].layers) == {"dvit"} and p.shares[1].layers["dvit"]["policies"] == ["optimal", "my-greedy"]
    assert p.loads == pytest.approx([2.59, 2.20])
    # one policy alone goes to a worker: the plugin's process keeps the world and the recording
    assert [s.layers for s in workers.plan(_cfg(tmp_path, '[layers.dvit]\npolicies = ["vidi"]\n'), workers=3).shares] \
        == [{}, {"dvit": {"policies": ["vidi"], "options": {}}}]


def test_a_policy_cost_must_be_a_positive_number_and_a_layer_s_shared_cost_one_at_least_0():
    with pytest.raises(ConfigError, match="cost must be a positive number"):
        register_policy("dvit", "test-shards-free", cost=0)(lambda problem, rng, opts: None)
    from cosim import Layer, register_layer

    for bad in (-1.0, float("nan"), "2", True):
        cls = type("Bad", (Layer,), {"shared_cost": bad})
        with pytest.raises(ConfigError, match=r"layer 'test-shards-bad' \(tests.test_shards\): shared_cost must "
                                              r"be a number >= 0, got"):
            cls.__module__ = __name__
            register_layer("test-shards-bad")(cls)


def test_grid6_all_on_two_cores_deals_moe_whole_to_the_worker_as_the_measured_costs_say(tmp_path, monkeypatch):
    # registered (measured, docs/performance.md): moe shared 2.78 + 4.41 (its seven solvers) =
    # 7.19 whole; dvit 0.32 + 2.27 = 2.59; cache 0.06 + 0.71 = 0.77. One worker, whole: moe to
    # the worker (0.5 + 7.19 = 7.69 < 8.49), dvit and cache to the plugin's (3.89, then 4.66): 7.69.
    # Splitting moe (each solver alone 2.78 + its own): evolutionary to 1 (4.66), nearest to 0
    # (5.06), random to 1 (5.62), uniform to 0 (5.79), gradient to 1 (5.83), gecpa to 0 (5.89),
    # best-response to 1 (5.88), then dvit to 1 (8.47 < 8.48): 8.47, higher; dvit or cache split:
    # moe to 1 (7.69) and the rest to 0 (4.66 at most): 7.69, not lower. So whole.
    monkeypatch.setenv("COSIM_CPUS", "2")
    cfg = load_config(ROOT / "scenarios" / "grid6_all.toml").replace(scenario={"jobs": 0})
    cfg = workers.resolve_jobs(cfg)
    assert cfg.scenario.jobs == 3  # one shares 1.3 + 7.19 + 2.59 + 0.77 = 11.85; two 7.69
    p = workers.plan(cfg, 1)
    assert {n: len(t["policies"]) for n, t in p.shares[0].layers.items()} == {"dvit": 8, "cache": 8}
    assert list(p.shares[1].layers) == ["moe"] and p.shares[1].layers["moe"]["policies"] == p.order["moe"]
    assert p.loads == pytest.approx([4.66, 7.69])


def test_a_policy_registered_in_the_main_script_stays_in_the_plugin_s_process(tmp_path):
    def mine(problem, rng, opts):
        return np.full(problem.steps, problem.user)

    mine.__module__ = "__main__"  # as if defined in the script that started the run
    register_policy("dvit", "test-shards-main", cost=5.0)(mine)
    cfg = _cfg(tmp_path, '[layers.dvit]\npolicies = ["vidi", "test-shards-main", "optimal", "sdi"]\n')
    p = workers.plan(cfg, workers=1)
    # pinned to 0 whatever it costs, and counted there with dvit's shared cost: 1.3 + 0.32 + 5 =
    # 6.62; the rest whole (0.32 + 0.97 + 0.38 + 0.05) to the worker (2.22 < 8.02); splitting
    # cannot lower share 0
    assert [s.layers["dvit"]["policies"] for s in p.shares] == [["test-shards-main"], ["vidi", "optimal", "sdi"]]
    assert p.loads == pytest.approx([6.62, 2.22])


# -- the results of one process ------------------------------------------------------------------
def _without_moe(layers_toml: str) -> str:
    return layers_toml[:layers_toml.index("[layers.moe]")]


def _spread_without_moe_matches_one_process(tmp_path, layers_toml, end_s):
    """``layers_toml`` less MoE at ``--jobs 3``: DViT and the cache each split over the plugin's
    process and the one worker — {dvit: optimal, cache: lc, lfu} | {dvit: vidi, sdi, mddi;
    cache: lc-predictive} (the registered costs, docs/performance.md: 1.3 + dvit 0.32 + 0.38 +
    cache 0.06 + 0.07 + 0.07 = 2.2 against 0.5 + dvit 0.32 + 0.97 + 0.05 + 0.05 + cache 0.06 +
    0.22 = 2.17) — so both layers run in a worker, and their tables equal one process's."""
    toml = _without_moe(layers_toml)
    p = workers.plan(_cfg(tmp_path, toml), 1)
    assert [{n: t["policies"] for n, t in s.layers.items()} for s in p.shares] == [
        {"dvit": ["optimal"], "cache": ["lc", "lfu"]}, {"dvit": ["vidi", "sdi", "mddi"], "cache": ["lc-predictive"]}]
    assert p.loads == pytest.approx([2.2, 2.17])
    serial = run_grid6(tmp_path, toml, end_s=end_s, out="serial-nomoe")
    spread = run_grid6(tmp_path, toml, "--jobs", "3", end_s=end_s, out="spread-nomoe")
    same_results(serial, spread, tables_at_least=3)
    assert len(json.loads((spread / "summary.json").read_text())["cpu_s"]["policy_workers"]) == 1
    for table, policy in (("dvit_tasks", "vidi"), ("cache_requests", "lc-predictive")):  # rows from the worker
        assert (pd.read_parquet(spread / f"{table}.parquet")["policy"].astype(str) == policy).sum() > 0


@pytest.mark.sumo
def test_spread_over_two_workers_gives_the_results_of_one_process(tmp_path):
    serial = run_grid6(tmp_path, MANY, end_s=20, out="serial")  # 20 slots: every table has rows
    spread = run_grid6(tmp_path, MANY, "--jobs", "4", end_s=20, out="spread")
    same_results(serial, spread, tables_at_least=5)
    s = json.loads((spread / "summary.json").read_text())
    assert len(s["cpu_s"]["policy_workers"]) == 2 and min(s["cpu_s"]["policy_workers"]) > 0
    assert 0 <= s["wall_s"]["workers_wait"] < s["wall_s"]["total"]
    assert "policy_workers" not in json.loads((serial / "summary.json").read_text())["cpu_s"]
    assert all(len(pd.read_parquet(serial / f"{t}.parquet")) > 0 for t in ("dvit_tasks", "cache_requests", "moe_tasks"))
    moe = pd.read_parquet(spread / "moe_tasks.parquet")
    assert set(moe["policy"]) == {"gecpa", "nearest", "uniform"}  # split over both workers (plan: MoE split)
    # one batch per slot: the parts as output.flush_slots (50) says, 20 slots -> one part each
    assert [len(list((d / "cache_requests.parquet").glob("part-*.parquet"))) for d in (serial, spread)] == [1, 1]
    _spread_without_moe_matches_one_process(tmp_path, MANY, end_s=20)  # the cache layer in a worker


@pytest.mark.sumo
def test_simulated_queues_and_a_replay_spread_match_one_process(tmp_path):
    sim = MANY.replace("[layers.cache]", 'queue = "simulated"\nhandover = "migrate"\n[layers.cache]')
    sim = sim.replace('policies = ["gecpa", "nearest", "uniform"]',
                      'policies = ["gecpa", "nearest", "uniform"]\nqueue = "simulated"')
    trace = tmp_path / "t.parquet"
    serial = run_grid6(tmp_path, sim, "--record", str(trace), end_s=30, out="serial")
    spread = run_grid6(tmp_path, sim, "--jobs", "4", end_s=30, out="spread")  # MoE split over the two workers
    same_results(serial, spread, tables_at_least=5)
    proc = run_cli("replay", str(trace), "--scenario", str(tmp_path / "scenario.toml"), "--out",
                   str(tmp_path / "rep3"), "-q", "--jobs", "3")
    assert proc.returncode == 0, proc.stderr
    # the replay spread gives the live run's results (the routes reached the workers too): what
    # a replay in one process gives, as tests/test_replay.py has it
    same_results(serial, tmp_path / "rep3", tables_at_least=5)
    # DViT's simulated queue (and the cache) in a worker, with handover = "migrate"
    _spread_without_moe_matches_one_process(tmp_path, sim, end_s=30)


@pytest.mark.sumo
def test_a_raising_policy_in_a_worker_is_dropped_as_in_one_process(tmp_path, raiser_run):
    scen, one, j1 = raiser_run  # the session's run in one process: vidi, raiser (raises after 5 tasks), optimal
    three = run_cli("run", str(scen), "--out", str(tmp_path / "j3"), "-q", "--jobs", "3")
    for proc in (one, three):
        assert proc.returncode == 0, proc.stderr
        warn = [ln for ln in proc.stderr.splitlines() if ln.startswith("cosim: warning")]
        assert len(warn) == 1 and "scheduler 'raiser'" in warn[0] and "deliberate failure" in warn[0]
    same_results(j1, tmp_path / "j3")


def _picks(tmp_path, extra, jobs="3"):
    scen = tmp_path / "s.toml"
    scen.write_text(f'[scenario]\nsumocfg = "{GRID6_CFG}"\nend_s = 40\nplugins = ["{PLUGINS / "picks_plugin.py"}"]\n'
                    f'[layers.picks]\n{extra}')
    out = tmp_path / "o"
    return run_cli("run", str(scen), "--out", str(out), "-q", "--jobs", jobs), out


@pytest.mark.sumo
def test_a_layer_raising_in_a_worker_with_another_worker_keeps_what_that_one_computed(tmp_path):
    proc, out = _picks(tmp_path, "fail_at_s = 20\n", jobs="4")  # second: worker 1; first: worker 2
    assert proc.returncode == 1 and "picks broke at t=20s" in proc.stderr
    s = json.loads((out / "summary.json").read_text())
    picks = pd.read_parquet(out / "picks.parquet")
    # every row a policy's block counts is on disk, whichever worker it came from
    assert picks.groupby("policy").size().to_dict() == {p: b["slots"] for p, b in s["layers"]["picks"].items()}
    assert s["layers"]["picks"]["second"] == {"slots": 20} and s["layers"]["picks"]["first"]["slots"] >= 20


@pytest.mark.sumo
def test_a_layer_raising_in_a_worker_ends_the_run_with_the_slots_every_process_finished(tmp_path):
    proc, out = _picks(tmp_path, "fail_at_s = 20\n")
    assert proc.returncode == 1  # as in one process: a layer's bug, with the traceback from where it raised
    err = proc.stderr.strip().splitlines()
    assert "WorkerError: RuntimeError: picks broke at t=20s (in policy worker 1" in err[-1]
    assert "in policy worker 1:" in proc.stderr and 'picks_plugin.py", line' in proc.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "failed" and "picks broke at t=20s" in s["error"]
    picks = pd.read_parquet(out / "picks.parquet")
    # the worker raised in slot 19 (t = 20 s) after writing its row: nothing computed is lost;
    # the plugin's process may have gone on a few slots (a worker may lag) and keeps those too
    second = picks[picks["policy"] == "second"]["slot"].tolist()
    first = picks[picks["policy"] == "first"]["slot"].tolist()
    assert second == list(range(20)) and first == list(range(len(first))) and len(first) >= 20
    assert s["layers"]["picks"]["second"] == {"slots": 20}
    assert s["layers"]["picks"]["first"] == {"slots": len(first)}
    # the raising slot's row comes with the rows written at the end, as in one process
    assert picks["slot"].tolist()[-1] == 19 and picks["slot"].iloc[:-1].is_monotonic_increasing


@pytest.mark.sumo
def test_a_worker_that_dies_ends_the_run_with_one_line_and_the_results_so_far(tmp_path):
    proc, out = _picks(tmp_path, "exit_at_s = 20\n")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert says(last, "cosim: error: policy worker 1 ", "exit code 3"), last
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "failed"
    assert "policy worker 1 ended before the run did" in s["layers"]["picks"]["second"]["error"]
    picks = pd.read_parquet(out / "picks.parquet")
    assert picks[picks["policy"] == "second"]["slot"].tolist() == list(range(19))  # what the worker sent
    assert len(picks[picks["policy"] == "first"]) >= 19


SCRIPT = """
import sys
import mypol  # registers its policy in a module the script imports (no scenario.plugins)
from cosim.config import from_dict
from cosim.runner import run

cfg = from_dict({"scenario": {"sumocfg": sys.argv[1], "end_s": 30, "jobs": int(sys.argv[3])},
                 "layers": {"dvit": {"policies": ["optimal", "test-mine"], "request_rate_per_s": 2.0}}}, "s.toml")
run(cfg, sys.argv[2], progress=False)
"""
MYPOL = """
import numpy as np
from cosim import register_policy


@register_policy("dvit", "test-mine", cost=9.0)  # the costliest: dealt to the worker
def mine(problem, rng, opts):
    return np.full(problem.steps, problem.user)
"""


@pytest.mark.sumo
def test_a_policy_from_a_module_the_script_imports_runs_in_a_worker(tmp_path):
    (tmp_path / "mypol.py").write_text(MYPOL)
    (tmp_path / "drive.py").write_text(SCRIPT)
    for jobs in ("1", "3"):
        proc = subprocess.run([sys.executable, str(tmp_path / "drive.py"), str(GRID6_CFG), str(tmp_path / f"j{jobs}"),
                               jobs], capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "j3" / "summary.json").read_text())
    assert len(s["cpu_s"]["policy_workers"]) == 1 and s["layers"]["dvit"]["test-mine"]["tasks"] > 20
    same_results(tmp_path / "j1", tmp_path / "j3")


def test_a_gymnasium_environment_keeps_its_policies_in_its_process(monkeypatch):
    import gymnasium as gym

    import cosim.gym  # noqa: F401 - registers the environments

    with pytest.raises(ConfigError, match="scenario.jobs = 3: an environment runs its layer's policies in its own"):
        gym.make("cosim/DViTPlacement-v0", scenario=str(ROOT / "scenarios" / "grid6_dvit.toml"),
                 overrides={"scenario.jobs": 3})
    monkeypatch.setenv("COSIM_CPUS", "8")  # auto: at most SUMO in its own process
    env = gym.make("cosim/DViTPlacement-v0", scenario=str(ROOT / "scenarios" / "grid6_dvit.toml"),
                   overrides={"scenario.jobs": 0})
    assert env.unwrapped.cfg.scenario.jobs == 2
    env.close()


@pytest.mark.sumo
def test_a_second_ctrl_c_stops_waiting_for_a_stuck_worker_and_the_summary_says_so(tmp_path):
    scen = tmp_path / "s.toml"
    stalled, ending = tmp_path / "stalled", tmp_path / "ending"
    scen.write_text(f'[scenario]\nsumocfg = "{GRID6_CFG}"\nend_s = 200\nplugins = ["{PLUGINS / "picks_plugin.py"}"]\n'
                    f'[layers.picks]\nstall_at_s = 10\nstalled_file = "{stalled}"\nending_file = "{ending}"\n')
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "cosim", "run", str(scen), "--out", str(out), "--jobs", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=as_foreground)
    try:
        # the worker stalls at 10 s; the plugin's process runs up to 8 slots ahead, then waits for it
        assert wait_for(lambda: stalled.exists() or proc.poll() is not None, timeout=180) and proc.poll() is None
        os.killpg(proc.pid, signal.SIGINT)  # stops the plugin's wait; the run ends, waiting for the workers
        # the plugin's process has ended its own layer (results being written: Ctrl-C is held), next it waits
        assert wait_for(lambda: ending.exists() or proc.poll() is not None, timeout=60) and proc.poll() is None
        os.killpg(proc.pid, signal.SIGINT)  # stops waiting for the stalled one
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "interrupted"
    assert "not waited for after Ctrl-C" in s["layers"]["picks"]["second"]["error"]
    picks = pd.read_parquet(out / "picks.parquet")
    assert picks[picks["policy"] == "second"]["slot"].tolist() == list(range(9))  # what it sent before stalling
    assert s["layers"]["picks"]["first"]["slots"] == (picks["policy"] == "first").sum() >= 10
    with pytest.raises(ProcessLookupError):  # the stalled worker did not outlive the run
        os.killpg(proc.pid, 0)


def test_a_split_that_only_ties_the_busiest_share_is_not_taken(tmp_path):
    # f: not shardable, shared 9: share 0 starts at 1.3 + 9 = 10.3, the busiest whatever is dealt.
    # a: shared 0, a1 3, a2 3. Whole: a (6) to worker 1 (6.5): top 10.3. Split: a1 to 1 (3.5), a2
    # to 2 (3.5): top 10.3 too — a tie, so a stays whole (the fewest splits)
    from cosim.layers.base import Bound

    layers = [Bound("f", False, {}, 9.0), _made(0.0, a1=3.0, a2=3.0)("a")]
    p = workers.plan(_made_cfg(tmp_path, layers), 2, layers)
    assert _dealt(p) == [{"f": []}, {"a": ["a1", "a2"]}] and p.loads == pytest.approx([10.3, 6.5])


def test_a_worker_is_started_only_where_it_lowers_the_busiest_share_by_more_than_its_own_load():
    # one share: 1.3 + a's policies; a worker takes a whole (0.5 + a) and leaves share 0 at 1.3.
    # a1 = a2 = 0.15: 1.6 -> 1.3, 0.3 less (< WORKER_LOAD 0.5): no worker. 0.3 each: 1.9 -> 1.3,
    # 0.6 less: a worker
    assert workers.WORKER_LOAD == 0.5
    assert workers.auto_jobs([_made(0.0, a1=0.15, a2=0.15)("a")], 2) == 2
    assert workers.auto_jobs([_made(0.0, a1=0.3, a2=0.3)("a")], 2) == 3
