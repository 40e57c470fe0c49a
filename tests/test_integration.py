"""Integration tier: real SUMO (libsumo and TraCI) on the shipped grid6 network."""

import json
import socket
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cosim.sources.sumo import SumoSource, sumo_command

from .conftest import DATA, GRID6_CFG, GRID6_TOML, ROOT, run_cli

pytestmark = pytest.mark.sumo


def coverage(out: Path) -> pd.DataFrame:
    df = pd.read_parquet(out / "coverage.parquet")
    for col in ("vehicle", "rsu"):
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    return df.sort_values(["slot", "vehicle"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "res"
    proc = run_cli("run", str(GRID6_TOML), "--end", "60", "--out", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    return out


def test_run_writes_the_results_folder(default_run):
    s = json.loads((default_run / "summary.json").read_text())
    assert s["status"] == "completed" and s["slots"] == 60 and s["seed"] == 42
    assert s["versions"]["sumo"] == "SUMO 1.28.0" and s["versions"]["numpy"] and s["versions"]["torch"]
    assert set(s["wall_s"]) == {"total", "sumo", "plugin", "sumo_wait", "plugin_wait"}
    assert s["wall_s"]["sumo_wait"] == s["wall_s"]["plugin"]  # one process: each side waits while the other works
    assert s["cpu_s"]["plugin_process"] > 0 and s["cpu_s"]["sumo_process"] is None
    assert s["layers"] == {}
    assert len(s["rsus"]) == 4  # 1 km x 1 km grid, 500 m radius, lattice spacing 707 m -> 2 x 2
    cov = coverage(default_run)
    assert list(cov.columns) == ["slot", "time_s", "vehicle", "x", "y", "speed_mps", "cell", "rsu", "dwell_s",
                                 "rate_v2i_bps"]
    assert cov["slot"].nunique() == 60 and cov["time_s"].max() == 60.0
    assert s["vehicles_seen"] == cov["vehicle"].nunique()
    served = cov[cov["rsu"].notna()]
    assert (served["dwell_s"] >= 0).all() and (served["rate_v2i_bps"] > 0).all()
    assert cov.loc[cov["rsu"].isna(), "dwell_s"].isna().all()
    assert (cov["cell"] >= 0).all()
    # rsus.parquet counts agree with an independent count over coverage.parquet
    rsus = pd.read_parquet(default_run / "rsus.parquet")
    rsus["rsu"] = rsus["rsu"].astype(str)
    assert len(rsus) == 60 * 4
    counted = served.groupby(["slot", "rsu"]).size()
    merged = rsus.set_index(["slot", "rsu"])["connected"]
    assert (merged.reindex(counted.index) == counted).all()
    assert merged.sum() == len(served)
    # predicted vs realised dwell is measured and plausible (errors within the 600 s cap); live
    # SUMO gives routes, so the default dwell model ("auto") walks them
    d = s["dwell_prediction"]
    assert d["model"] == "route" and d["model_setting"] == "auto" and d["rows_served"] == len(served)
    assert d["rows_compared"] + d["rows_censored"] + d["rows_capped"] == d["rows_served"]
    assert d["rows_compared"] > 100 and 0 <= d["mean_abs_error_s"] < 600


def test_effective_config_reruns_identically(default_run, tmp_path):
    proc = run_cli("run", str(default_run / "config.toml"), "--out", str(tmp_path / "again"), "-q")
    assert proc.returncode == 0, proc.stderr
    pd.testing.assert_frame_equal(coverage(default_run), coverage(tmp_path / "again"))


def test_traci_backend_gives_the_same_results(default_run, tmp_path):
    proc = run_cli("run", str(GRID6_TOML), "--end", "60", "--out", str(tmp_path / "t"), "-q", "--backend", "traci")
    assert proc.returncode == 0, proc.stderr
    pd.testing.assert_frame_equal(coverage(default_run), coverage(tmp_path / "t"))


def test_other_seed_differs(default_run, tmp_path):
    proc = run_cli("run", str(GRID6_TOML), "--end", "60", "--seed", "7", "--out", str(tmp_path / "s7"), "-q")
    assert proc.returncode == 0, proc.stderr
    a, b = coverage(default_run), coverage(tmp_path / "s7")
    assert len(a) != len(b) or not a.equals(b)
    assert not np.array_equal(a["rate_v2i_bps"].to_numpy()[:100], b["rate_v2i_bps"].to_numpy()[:100])


def test_libsumo_and_traci_snapshots_are_identical():
    cmd = sumo_command(GRID6_CFG, seed=42, end_s=40, step_length_s=0.5)
    lib, tra = SumoSource(cmd, "libsumo"), SumoSource(cmd, "traci")
    lib.start()
    tra.start()
    try:
        for t in range(1, 41):
            a, b = lib.step_to(float(t)).sorted_by_id(), tra.step_to(float(t)).sorted_by_id()
            assert len(a) == len(b)
            for f in ("ids", "x", "y", "speed", "angle", "accel", "edge", "lane", "lane_pos", "length"):
                np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f"{f} at t={t}")
        assert len(a) > 20
    finally:
        lib.close()
        tra.close()


@pytest.mark.parametrize("no_accel", ["libsumo", "traci"])
def test_a_reader_not_asked_for_acceleration_reads_the_rest_alike(no_accel):
    """``fields=()``: acceleration is NaN (not read), every other column as when it is read."""
    cmd = sumo_command(GRID6_CFG, seed=42, end_s=30, step_length_s=0.5)
    lib = SumoSource(cmd, "libsumo", fields=() if no_accel == "libsumo" else ("accel",))
    tra = SumoSource(cmd, "traci", fields=() if no_accel == "traci" else ("accel",))
    lib.start()
    tra.start()
    try:
        for t in range(1, 31):
            a, b = lib.step_to(float(t)).sorted_by_id(), tra.step_to(float(t)).sorted_by_id()
            for f in ("ids", "x", "y", "speed", "angle", "edge", "lane", "lane_pos", "length"):
                np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f"{f} at t={t}")
            dropped, read = (a, b) if no_accel == "libsumo" else (b, a)
            assert np.isnan(dropped.accel).all() and np.isfinite(read.accel).all()
        assert len(a) > 20 and (read.accel != 0).any()
    finally:
        lib.close()
        tra.close()


ATTACH_SCRIPT = """
import sys, traci, libsumo, cosim
from cosim.sumo_home import sumo_binary
mod = libsumo if sys.argv[1] == "libsumo" else traci
mod.start([sumo_binary("sumo"), "-c", sys.argv[2], "--seed", "42", "--no-step-log", "true"])
listener = cosim.attach(mod, out_dir=sys.argv[3])
for _ in range(30):
    mod.simulationStep()
mod.close()
listener.close()
"""


@pytest.mark.parametrize("backend", ["traci", "libsumo"])
def test_attach_in_a_users_script_matches_cosim_run(tmp_path, backend):
    import subprocess

    ref = tmp_path / "ref"
    proc = run_cli("run", str(GRID6_CFG), "--end", "30", "--out", str(ref), "-q")
    assert proc.returncode == 0, proc.stderr
    script = tmp_path / "user.py"
    script.write_text(ATTACH_SCRIPT)
    out = tmp_path / "attached"
    p = subprocess.run([sys.executable, str(script), backend, str(GRID6_CFG), str(out)], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "summary.json").read_text())["slots"] == 30
    pd.testing.assert_frame_equal(coverage(ref), coverage(out))


def test_idm_dwell_model_runs_on_real_traffic(tmp_path):
    toml = tmp_path / "idm.toml"
    toml.write_text(f'[scenario]\nsumocfg = "{GRID6_CFG}"\nend_s = 30\n[world]\ndwell_model = "idm"\n')
    proc = run_cli("run", str(toml), "--out", str(tmp_path / "o"), "-q")
    assert proc.returncode == 0, proc.stderr
    cov = coverage(tmp_path / "o")
    served = cov[cov["rsu"].notna()]
    assert served["dwell_s"].between(0, 600).all()


@pytest.mark.parametrize("backend, jobs", [("libsumo", "1"), ("traci", "1"), ("libsumo", "2")])
def test_sumo_dying_mid_run_keeps_results(tmp_path, backend, jobs):
    out = tmp_path / "o"
    proc = run_cli("run", str(DATA / "late_error" / "late_error.sumocfg"), "--out", str(out), "--backend", backend,
                   "--jobs", jobs)
    assert proc.returncode == 3
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("cosim: error: SUMO stopped at t=101s") and "no_such_edge" in err
    assert "Traceback" not in proc.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "sumo-died" and s["slots"] == 100
    rsus = pd.read_parquet(out / "rsus.parquet")  # a row per RSU and slot, up to the last slot
    assert rsus["slot"].max() == 99 and rsus["slot"].nunique() == 100
    cov = coverage(out)  # the one vehicle drove its two edges in the first ~31 s
    assert set(cov["vehicle"]) == {"ok"} and 25 <= cov["slot"].max() <= 40


def _busy_port():
    s = socket.socket()
    s.bind(("localhost", 0))
    s.listen(1)
    return s


@pytest.mark.parametrize("case", ["missing", "broken_xml", "bad_toml", "no_binary", "port_busy", "unknown_layer",
                                  "wrong_suffix", "slot_not_multiple", "gui_without_display"])
def test_bad_input_is_one_line_and_nonzero(tmp_path, case):
    args: list[str]
    keep = None
    if case == "missing":
        args = ["run", str(tmp_path / "nope.toml")]
        expect = "nope.toml: no such file"
    elif case == "broken_xml":
        args = ["run", str(DATA / "broken" / "broken.sumocfg")]
        expect = "broken.sumocfg: broken XML at line"
    elif case == "bad_toml":
        (tmp_path / "b.toml").write_text("[scenario\n")
        args = ["run", str(tmp_path / "b.toml")]
        expect = "b.toml: invalid TOML"
    elif case == "no_binary":
        args = ["run", str(GRID6_TOML), "--backend", "traci", "--sumo-binary", str(tmp_path / "sumo")]
        expect = "SUMO binary not found"
    elif case == "port_busy":
        keep = _busy_port()
        args = ["run", str(GRID6_TOML), "--backend", "traci", "--port", str(keep.getsockname()[1])]
        expect = f"port {keep.getsockname()[1]} is busy"
    elif case == "unknown_layer":
        (tmp_path / "l.toml").write_text(f'[scenario]\nsumocfg = "{GRID6_CFG}"\n[layers.teleport]\nx = 1\n')
        args = ["run", str(tmp_path / "l.toml")]
        expect = "unknown layer '[layers.teleport]'"
    elif case == "wrong_suffix":
        (tmp_path / "x.txt").write_text("")
        args = ["run", str(tmp_path / "x.txt")]
        expect = "expected a scenario .toml or a SUMO .sumocfg"
    elif case == "slot_not_multiple":
        args = ["run", str(GRID6_TOML), "--slot", "0.3"]
        expect = "is not a multiple of the SUMO step length"
    else:
        args = ["run", str(GRID6_TOML), "--gui"]
        expect = "--gui needs a display"
    try:
        proc = run_cli(*args, "--out", str(tmp_path / "out"), "-q", env_drop=("DISPLAY",))
    finally:
        if keep:
            keep.close()
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cosim: error: ") and expect in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_for_every_command():
    top = run_cli("--help")
    assert top.returncode == 0 and "run" in top.stdout
    sub = run_cli("run", "--help")
    assert sub.returncode == 0 and "--backend" in sub.stdout and "--out" in sub.stdout
