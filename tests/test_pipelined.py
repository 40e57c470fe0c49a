"""SUMO in its own process one slot ahead (scenario.jobs = 2): same results as the serial path,
and failures (SUMO dying, a frozen SUMO, Ctrl-C) end the run with the right status."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from cosim.compare import differences, table_names
from cosim.errors import SumoDied
from cosim.sources.pipelined import PipelinedSource
from cosim.sources.sumo import sumo_command

from .conftest import GRID6_CFG, ROOT, as_foreground, run_cli, run_grid6

pytestmark = pytest.mark.sumo

ALL_LAYERS = """
[layers.dvit]
request_rate_per_s = 1.0
[layers.cache]
policies = ["lc", "lfu", "lc-predictive"]
request_rate_per_vehicle_s = 0.1
[layers.moe]
request_rate_per_s = 0.5
policies = ["gecpa", "nearest"]
"""


def same_results(a, b, tables_at_least=2):
    """Every table equal value for value, and the summaries equal but for what is measured."""
    assert len(table_names(a)) >= tables_at_least, table_names(a)
    assert differences(a, b) == []


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The serial path's run of every layer (40 s), the reference of the tests below."""
    return run_grid6(tmp_path_factory.mktemp("serial"), ALL_LAYERS, end_s=40, out="serial")


def test_all_layers_bit_identical_to_the_serial_path(tmp_path, serial):
    piped = run_grid6(tmp_path, ALL_LAYERS, "--jobs", "2", end_s=40, out="piped")
    same_results(serial, piped, tables_at_least=5)
    s = json.loads((piped / "summary.json").read_text())
    assert s["slots"] == 40 and set(s["layers"]) == {"dvit", "cache", "moe"}
    assert s["cpu_s"]["sumo_process"] > 0  # SUMO really ran in a second process
    w = s["wall_s"]
    assert set(w) == {"total", "sumo", "plugin", "sumo_wait", "plugin_wait"}
    assert 0 < w["sumo"] < w["total"] and 0 < w["plugin"] < w["total"]
    # the routes lc-predictive walked came through the pipe: its decisions equal the serial ones
    req = pd.read_parquet(piped / "cache_requests.parquet")
    assert (req["policy"].astype(str) == "lc-predictive").sum() > 0


def test_acceleration_read_for_a_trace_only_and_results_alike(tmp_path, serial):
    """No layer reads acceleration: a run reads it only to record a trace, with the same results."""
    rec = run_grid6(tmp_path, ALL_LAYERS, "--jobs", "2", "--record", str(tmp_path / "t.parquet"), end_s=40, out="rec")
    same_results(serial, rec, tables_at_least=5)
    accel = pd.read_parquet(tmp_path / "t.parquet")["accel"]
    assert len(accel) > 500 and accel.notna().all() and (accel != 0).any()


def test_traci_and_replay_pipelined_match_serial(tmp_path):
    dvit = "[layers.dvit]\nrequest_rate_per_s = 2.0\n"
    ref = run_grid6(tmp_path, dvit, "--record", str(tmp_path / "t.parquet"), end_s=30, out="ref")
    same_results(ref, run_grid6(tmp_path, dvit, "--backend", "traci", "--jobs", "2", end_s=30, out="tra"))
    for jobs in ("1", "2"):
        rep = run_cli("replay", str(tmp_path / "t.parquet"), "--scenario", str(tmp_path / "scenario.toml"), "--out",
                      str(tmp_path / f"rep{jobs}"), "-q", "--jobs", jobs)
        assert rep.returncode == 0, rep.stderr
    same_results(tmp_path / "rep1", tmp_path / "rep2")


def _source(timeout_s=60.0):
    cmd = sumo_command(GRID6_CFG, seed=42, end_s=100, step_length_s=0.5)
    src = PipelinedSource("cosim.sources.sumo:SumoSource", {"cmd": cmd, "end_s": 100.0}, 1.0, 100.0, timeout_s)
    src.start()
    return src


def test_worker_killed_mid_run_is_sumo_died():
    src = _source()
    try:
        assert len(src.step_to(1.0)) >= 0 and src.time_s() == 0.0
        src.step_to(2.0)
        src.proc.kill()
        with pytest.raises(SumoDied, match=r"SUMO's process ended at t=\ds \(exit code -9\)"):
            for t in range(3, 10):  # the slot already prepared may still arrive
                src.step_to(float(t))
    finally:
        src.close()
    assert src.proc.poll() is not None


def test_frozen_worker_times_out():
    src = _source(timeout_s=1.0)
    try:
        src.step_to(1.0)
        os.kill(src.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(SumoDied, match=r"SUMO did not answer for 1 s at t=\ds \(scenario.sumo_timeout_s\)"):
            for t in range(2, 10):
                src.step_to(float(t))
        assert time.monotonic() - t0 < 10
    finally:
        src.close()
    assert src.proc.poll() is not None  # killed, not left behind


@pytest.mark.parametrize("jobs, scenario, sig", [("1", "grid6.toml", signal.SIGINT), ("2", "grid6.toml", signal.SIGINT),
                                                  # 3: the layers' policies over a worker
                                                  ("3", "grid6_all.toml", signal.SIGINT),
                                                  ("3", "grid6_all.toml", signal.SIGTERM)])
def test_ctrl_c_keeps_results_and_status(tmp_path, jobs, scenario, sig):
    """Ctrl-C (or SIGTERM: `timeout`, a scheduler) reaches the whole process group."""
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "cosim", "run", str(ROOT / "scenarios" / scenario), "--out",
                             str(out), "--jobs", jobs, "--set", "output.flush_slots=5",
                             "--set", "scenario.warmup_s=0"], cwd=ROOT,  # tasks from the start: some by slot 20
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=as_foreground)  # Ctrl-C reaches it even from a background job
    try:
        for line in proc.stderr:  # one progress line a second when stderr is not a terminal
            if " slot " in line and int(line.split(" slot ")[1].split()[0]) >= 20:
                break
        os.killpg(proc.pid, sig)  # what Ctrl-C does: the whole foreground group
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    status = "interrupted" if sig == signal.SIGINT else "terminated"
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), err
    assert status in err and "Traceback" not in err
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == status and s["slots"] >= 20
    rsus = pd.read_parquet(out / "rsus.parquet")
    assert rsus["slot"].nunique() == s["slots"]  # every slot so far on disk
    if jobs == "3":  # every policy's rows and block, from both processes
        assert len(s["cpu_s"]["policy_workers"]) == 1
        assert not [p for layer in s["layers"].values() for p, b in layer.items() if "error" in b]
        moe = pd.read_parquet(out / "moe_tasks.parquet")
        assert moe.groupby("policy", observed=True).size().to_dict() == {p: b["tasks"] for p, b in s["layers"]["moe"].items()}
    with pytest.raises(ProcessLookupError):  # neither SUMO's process nor a worker outlived the run
        os.killpg(proc.pid, 0)
