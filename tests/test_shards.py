"""A layer's policies spread over worker processes (scenario.jobs >= 3): the rows of a slot are
written grouped by policy in the configured order, the dealing is by cost, and the results
are those of one process — live, replayed, with every layer and both queue models; a layer
raising and a worker dying end the run with the right status and the slots so far (Ctrl-C:
tests/test_pipelined.py)."""

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
    # by hand, registered costs gecpa 2.38, nearest 1.77, vidi 1.44, sdi 0.28, optimal 0.22 and the
    # plugin's own 1.3: loads [1.3, 0, 0] -> gecpa to 1 (tie: the lower), nearest to 2, vidi to 0
    # (1.3 < 1.77), sdi to 2 (1.77 < 2.38 < 2.74), optimal to 2 (2.05 < 2.38 < 2.74)
    assert p.order == {"dvit": ["optimal", "sdi", "vidi"], "moe": ["gecpa", "nearest"]}
    pols = [{n: t["policies"] for n, t in s.layers.items()} for s in p.shares]
    assert pols == [{"dvit": ["vidi"]}, {"moe": ["gecpa"]}, {"dvit": ["optimal", "sdi"], "moe": ["nearest"]}]
    assert p.shares[0].layers["dvit"]["options"] == {"vidi": {"rho": 0.5}}  # options go with their policy
    assert p.shares[2].layers["dvit"]["options"] == {}
    assert p.owner[("moe", "nearest")] == 2 and p.owner[("dvit", "optimal")] == 2
    # more workers than policies: one policy each, the shares left empty dropped
    assert [len(s.layers) for s in workers.plan(cfg, workers=9).shares] == [0, 1, 1, 1, 1, 1]


def test_jobs_auto_starts_what_the_cores_and_the_policies_can_use(tmp_path, monkeypatch):
    from cosim.layers.base import validate_layers

    moe = validate_layers(_cfg(tmp_path, "[layers.moe]\n"))  # all seven solvers
    # by hand: costs 19.6 (best-response), 3.17, 2.38, 2.33, 1.9, 1.84, 1.77 (sum 32.99) and the
    # plugin's 1.3, each worker 0.5 of its own: k shares take at least
    # max(19.6, (34.29 + 0.5 (k - 1)) / k) = 34.29, 19.6, 19.6 for k = 1..3: the second share
    # saves 14.69, the third nothing (best-response alone bounds a share)
    assert [workers.auto_jobs(moe, c) for c in (1, 2, 3, 4, 16)] == [1, 3, 3, 3, 3]
    six = validate_layers(_cfg(tmp_path, '[layers.moe]\npolicies = ["gecpa", "gradient", "evolutionary", "random", '
                                         '"uniform", "nearest"]\n'))
    # costs 3.17, 2.38, 2.33, 1.9, 1.84, 1.77 (sum 13.39) + 1.3: max(3.17, (14.69 + 0.5 (k - 1)) / k)
    # = 14.69, 7.60, 5.23, 4.05, 3.34, 3.17 for k = 1..6: each step to k = 5 saves more than 0.5,
    # the sixth 0.17
    assert [workers.auto_jobs(six, c) for c in (2, 3, 4, 5, 16)] == [3, 4, 5, 6, 6]
    dvit = validate_layers(_cfg(tmp_path, '[layers.dvit]\npolicies = ["vidi", "sdi"]\n'))
    # 1.3 + 1.44 + 0.28 = 3.02 in one share; two: max(1.44, 3.52 / 2 = 1.76), 1.26 less (> 0.5, a
    # worker's own load); three: max(1.44, 4.02 / 3 = 1.34) = 1.44, only 0.32 less: one worker
    assert [workers.auto_jobs(dvit, c) for c in (2, 8)] == [3, 3]
    alone = validate_layers(_cfg(tmp_path, '[layers.cache]\npolicies = ["lru"]\n'))
    assert workers.auto_jobs(alone, 8) == 2  # 1.3 + 0.07: a worker (0.5 of its own) would save 0.07
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
    # loads [1.3, 0]: vidi (1.44) to the worker; my-greedy (registered without a cost: 1) to the
    # plugin's (1.3 < 1.44); optimal (0.22) to the worker (1.44 < 2.3)
    assert p.shares[0].layers["rsu_load"] == {"overload_vehicles": 5}
    assert p.shares[0].layers["dvit"]["policies"] == ["my-greedy"]
    assert set(p.shares[1].layers) == {"dvit"} and p.shares[1].layers["dvit"]["policies"] == ["vidi", "optimal"]
    # one policy alone goes to a worker: the plugin's process keeps the world and the recording
    assert [s.layers for s in workers.plan(_cfg(tmp_path, '[layers.dvit]\npolicies = ["vidi"]\n'), workers=3).shares] \
        == [{}, {"dvit": {"policies": ["vidi"], "options": {}}}]


def test_a_policy_cost_must_be_a_positive_number():
    with pytest.raises(ConfigError, match="cost must be a positive number"):
        register_policy("dvit", "test-shards-free", cost=0)(lambda problem, rng, opts: None)


def test_a_policy_registered_in_the_main_script_stays_in_the_plugin_s_process(tmp_path):
    def mine(problem, rng, opts):
        return np.full(problem.steps, problem.user)

    mine.__module__ = "__main__"  # as if defined in the script that started the run
    register_policy("dvit", "test-shards-main", cost=5.0)(mine)
    cfg = _cfg(tmp_path, '[layers.dvit]\npolicies = ["vidi", "test-shards-main", "optimal", "sdi"]\n')
    p = workers.plan(cfg, workers=1)
    # pinned to 0 whatever it costs; then vidi (1.44) to 1 (0 < 1.3), sdi (0.28) to 0 (1.3 < 1.44),
    # optimal (0.22) to 1 (1.44 < 1.58)
    assert [s.layers["dvit"]["policies"] for s in p.shares] == [["test-shards-main", "sdi"], ["vidi", "optimal"]]


# -- the results of one process ------------------------------------------------------------------
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
    assert set(moe["policy"]) == {"gecpa", "nearest", "uniform"}  # from all three processes
    # one batch per slot: the parts as output.flush_slots (50) says, 20 slots -> one part each
    assert [len(list((d / "cache_requests.parquet").glob("part-*.parquet"))) for d in (serial, spread)] == [1, 1]


@pytest.mark.sumo
def test_simulated_queues_and_a_replay_spread_match_one_process(tmp_path):
    sim = MANY.replace("[layers.cache]", 'queue = "simulated"\nhandover = "migrate"\n[layers.cache]')
    sim = sim.replace('policies = ["gecpa", "nearest", "uniform"]',
                      'policies = ["gecpa", "nearest", "uniform"]\nqueue = "simulated"')
    trace = tmp_path / "t.parquet"
    serial = run_grid6(tmp_path, sim, "--record", str(trace), end_s=30, out="serial")
    spread = run_grid6(tmp_path, sim, "--jobs", "3", end_s=30, out="spread")
    same_results(serial, spread, tables_at_least=5)
    proc = run_cli("replay", str(trace), "--scenario", str(tmp_path / "scenario.toml"), "--out",
                   str(tmp_path / "rep3"), "-q", "--jobs", "3")
    assert proc.returncode == 0, proc.stderr
    # the replay spread gives the live run's results (the routes reached the workers too): what
    # a replay in one process gives, as tests/test_replay.py has it
    same_results(serial, tmp_path / "rep3", tables_at_least=5)


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
