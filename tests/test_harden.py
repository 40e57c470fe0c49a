"""Hardening, second campaign (issue 29): --overwrite removes exactly what cosim wrote, bounds
on numeric keys, malformed lists and traces as one line, view/report of an interrupted run."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cosim import cli
from cosim.recorder import MANIFEST, read_manifest
from cosim.world import read_net

from .conftest import GRID6_NET, says
from .test_robust import scenario, trace


def _rows(n: int = 5) -> dict:
    edges = sorted(e for e in read_net(GRID6_NET).edge_length if not e.startswith(":"))[:n]
    return {"ids": [f"v{i}" for i in range(n)], "edge": edges, "lane": [f"{e}_0" for e in edges]}


def _replay(capsys, *argv: str) -> tuple[int, str]:
    """Exit code and stderr without warning lines (e.g. a trace ending before the scenario's end)."""
    code = cli.main(["replay", *argv, "-q"])
    err = capsys.readouterr().err
    return code, "\n".join(ln for ln in err.splitlines() if not ln.startswith("cosim: warning: "))


# -- --overwrite removes exactly what cosim wrote -------------------------------------------
def test_a_run_lists_what_it_wrote_and_overwrite_removes_only_that(tmp_path, capsys):
    toml, t = scenario(tmp_path), trace(tmp_path, _rows())
    out = tmp_path / "o"
    code, err = _replay(capsys, t, "--scenario", toml, "--out", str(out))
    assert code == 0, err
    written = sorted(p.name for p in out.iterdir() if p.name != MANIFEST)
    assert sorted(read_manifest(out)) == written == ["config.toml", "coverage.parquet", "rsus.parquet", "summary.json"]
    # the user's own files in the same folder: a Parquet file, a table folder, a note
    pq.write_table(pa.table({"a": [1, 2]}), out / "mine.parquet")
    (out / "own.parquet").mkdir()
    pq.write_table(pa.table({"a": [3]}), out / "own.parquet" / "data.parquet")
    (out / "notes.txt").write_text("mine")
    (out / "victim").write_text("outside the manifest's reach")
    with open(out / MANIFEST, "a") as f:  # a manifest line naming anything but a plain name is ignored
        f.write("../victim\n/etc/passwd\nmine.parquet/..\n")
    (tmp_path / "victim").write_text("keep")
    code, err = _replay(capsys, t, "--scenario", toml, "--out", str(out), "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted([*written, MANIFEST, "mine.parquet", "own.parquet",
                                                            "notes.txt", "victim"])
    assert pq.read_table(out / "mine.parquet").column("a").to_pylist() == [1, 2]
    assert (tmp_path / "victim").read_text() == "keep" and (out / "notes.txt").read_text() == "mine"
    assert sorted(read_manifest(out)) == written


def test_overwrite_refuses_a_folder_that_holds_an_input_of_the_run(tmp_path, capsys):
    toml = scenario(tmp_path)
    out = tmp_path / "o"
    code, err = _replay(capsys, trace(tmp_path, _rows()), "--scenario", toml, "--out", str(out))
    assert code == 0, err
    t = trace(out, _rows(), name="trace.parquet")  # the trace to replay lies in the results folder
    before = sorted(p.name for p in out.iterdir())
    code, err = _replay(capsys, t, "--scenario", toml, "--out", str(out), "--overwrite")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert says(lines[0], f"cosim: error: --out {out}: ", str(t), "--overwrite"), lines[0]
    assert sorted(p.name for p in out.iterdir()) == before
    # the scenario file in the folder likewise
    code, err = _replay(capsys, trace(tmp_path, _rows(), name="t2.parquet"), "--scenario", scenario(out),
                        "--out", str(out), "--overwrite")
    assert code == 2 and "s.toml, an input of this run" in err and len(err.strip().splitlines()) == 1


def test_overwrite_of_a_folder_from_before_the_manifest_removes_only_cosim_outputs(tmp_path):
    from cosim import config as cfgmod
    from cosim.engine.folder import results_dir

    from .conftest import GRID6_TOML

    out = tmp_path / "o"
    (out / "coverage.parquet").mkdir(parents=True)
    (out / "coverage.parquet" / "part-000000.parquet").write_text("old")
    (out / "dvit_tasks.parquet").mkdir()
    (out / "dvit_tasks.parquet" / ".part-000001.parquet.tmp").write_text("old")
    for name in ("summary.json", "config.toml", "sumo.log", "view.html", "report.png", ".summary.json.tmp"):
        (out / name).write_text("old")
    pq.write_table(pa.table({"a": [1]}), out / "mine.parquet")  # a single file: a user's, not a cosim table
    (out / "keep.txt").write_text("mine")
    path, created = results_dir(cfgmod.load(GRID6_TOML), out, overwrite=True)
    assert path == out and not created
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "mine.parquet"]


# -- bounds, lists, the sweep's seed ----------------------------------------------------------
@pytest.mark.parametrize("table, key, value, message", [
    ("world", "route_sample_m", "1e-7", "world.route_sample_m: 1e-07 is out of range (must be >= 0.1)"),
    ("world", "grid_cell_m", "1e-16", "world.grid_cell_m: 1e-16 is out of range (must be >= 0.01)"),
    ("world", "grid_cell_m", "1e300", "world.grid_cell_m: 1e+300 is out of range (must be <= 100000)"),
    ("world", "idm_horizon_s", "1e308", "world.idm_horizon_s: 1e+308 is out of range (must be <= 86400)"),
    ("world", "idm_max_accel_mps2", "1e308", "world.idm_max_accel_mps2: 1e+308 is out of range"),
    ("scenario", "end_s", "1e308", "scenario.end_s: 1e+308 is out of range (must be <= 1e+09)"),
    ("scenario", "step_length_s", "1e-9", "scenario.step_length_s: 1e-09 is out of range (must be >= 0.001"),
    ("scenario", "slot_s", "1e-300", "scenario.slot_s: 1e-300 is out of range (must be >= 0.001)"),
    ("scenario", "sumo_timeout_s", "1e300", "scenario.sumo_timeout_s: 1e+300 is out of range (must be <= 86400)"),
    ("scenario", "jobs", "1000000", "scenario.jobs: 1000000 is out of range (must be <= 1024)"),
    ("rsu", "radius_m", "1e308", "rsu.radius_m: 1e+308 is out of range (must be <= 100000)"),
    ("channel", "v2i_pl_ref_db", "-1e308", "channel.v2i_pl_ref_db: -1e+308 is out of range (must be >= -300)"),
    ("output", "flush_slots", "1000000000000", "output.flush_slots: 1000000000000 is out of range"),
    ("scenario", "sumo_args", "[1, 2]", "scenario.sumo_args: expected a list of strings (SUMO options"),
    ("scenario", "sumo_args", '[["--x"]]', "scenario.sumo_args: expected a list of strings"),
    ("scenario", "plugins", "[3]", "scenario.plugins: expected a list of strings"),
])
def test_extreme_and_malformed_values_are_one_line_naming_the_key(tmp_path, table, key, value, message):
    from cosim import config as cfgmod
    from cosim.errors import ConfigError

    p = tmp_path / "s.toml"
    extra = f"{key} = {value}\n" if table == "scenario" else f"[{table}]\n{key} = {value}\n"
    p.write_text('[scenario]\nsumocfg = "a.sumocfg"\n' + extra)
    with pytest.raises(ConfigError) as exc:
        cfgmod.load(p)
    assert message in str(exc.value) and "\n" not in str(exc.value) and str(p) in str(exc.value)


def test_cosim_config_shows_the_bounds():
    from cosim import config as cfgmod

    text = cfgmod.describe()
    for line in ("route_sample_m = 2.0", "grid_cell_m = 25.0", "end_s = -1.0", "idm_horizon_s = 60.0"):
        row = next(r for r in text.splitlines() if r.startswith(line))
        assert "<= " in row and (">= " in row or "> " in row), row
    assert "(>= 0.01; <= 100000)" in next(r for r in text.splitlines() if r.startswith("grid_cell_m"))


def test_a_valid_shipped_scenario_is_inside_every_bound():
    from cosim import config as cfgmod

    from .conftest import ROOT

    for f in sorted((ROOT / "scenarios").glob("*.toml")):
        cfgmod.load(f)


@pytest.mark.parametrize("text, message", [
    ('seeds = 300000000\n', "sweep.seeds: 300000000 is out of range (must be <= 10000)"),
    ('seeds = [1, -4]\n', "sweep.seeds[1]: -4 is out of range (must be >= 0)"),
    ('seeds = [1, 4294967296]\n', "sweep.seeds[1]: 4294967296 is out of range (must be <= 2147483647)"),
    ('end_s = 1e308\n', "sweep.end_s: 1e+308 is out of range (must be <= 1e+09)"),
    ('[grid]\n"scenario.seed" = [1, 2]\n', 'grid."scenario.seed": a sweep sets each cell\'s seed from sweep.seeds; '
                                           'use seeds = [1, 2, ...]'),
    ('[set]\n"scenario.seed" = 7\n', 'set."scenario.seed": a sweep sets each cell\'s seed from sweep.seeds'),
])
def test_sweep_extremes_and_a_seed_axis_are_one_line(tmp_path, text, message):
    from cosim import sweep
    from cosim.errors import ConfigError

    scen = scenario(tmp_path)
    head, _, rest = text.partition("[")
    body = f'[sweep]\nscenarios = ["{scen}"]\n{head}' + (f"[{rest}" if rest else "")
    (tmp_path / "sw.toml").write_text(body)
    with pytest.raises(ConfigError) as exc:
        sweep.load(tmp_path / "sw.toml")
    assert message in str(exc.value) and "\n" not in str(exc.value)


# -- traces with text where numbers belong, null ids ------------------------------------------
@pytest.mark.parametrize("name, change, message", [
    ("t.parquet", {"x": ["100.0"] * 5}, "row 1 (vehicle 'v0'): column x holds '100.0', not a number"),
    ("t.parquet", {"speed": [1.0, 1.0, None, 1.0, 1.0]}, "row 3 (vehicle 'v2'): speed is nan (must be finite)"),
    ("t.csv", {"y": ["abc"] * 5}, "line 2 (vehicle 'v0'): column y holds 'abc', not a number"),
    ("t.parquet", {"ids": ["v0", None, "v2", "v3", "v4"]}, "row 2 (vehicle None): column ids holds a null, not a "
                                                            "vehicle id"),
    ("t.parquet", {"ids": [0, 1, 2, 3, 4]}, "row 1 (vehicle 0): column ids holds 0, not a vehicle id"),
    ("t.parquet", {"time_s": ["abc"] * 5}, "chunk 0: column time_s holds 'abc', not a number"),
])
def test_a_trace_with_text_for_numbers_or_a_null_id_is_one_line(tmp_path, capsys, name, change, message):
    t = trace(tmp_path, {**_rows(), **change}, name=name)
    code, err = _replay(capsys, t, "--scenario", scenario(tmp_path), "--out", str(tmp_path / "o"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"cosim: error: {t}: ") and message in lines[0], err
    assert not (tmp_path / "o").exists()


# -- view / report of a run that did not complete ---------------------------------------------
KILL_LAYERS = '[output]\nflush_slots = 10\n[layers.dvit]\npolicies = ["vidi", "mddi"]\n'


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """A grid6 run SIGKILLed once it has flushed a few parts (a real kill, not a deleted file)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from .conftest import GRID6_CFG, ROOT

    d = tmp_path_factory.mktemp("killed")
    toml = d / "s.toml"
    toml.write_text(f'[scenario]\nsumocfg = "{GRID6_CFG}"\nend_s = 600\nstep_length_s = 0.5\n' + KILL_LAYERS)
    proc = subprocess.Popen([sys.executable, "-m", "cosim", "run", str(toml), "--out", str(d / "o"), "-q"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            parts = list((d / "o" / "coverage.parquet").glob("part-*.parquet"))
            if len(parts) >= 4 and list((d / "o" / "dvit_tasks.parquet").glob("part-*.parquet")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (d / "o" / "summary.json").exists()
    return d


@pytest.fixture(scope="module")
def done_run(killed_run):
    """The same scenario run to its end (5 s)."""
    from .conftest import run_grid6

    return run_grid6(killed_run, KILL_LAYERS, end_s=5, out="done")


@pytest.mark.sumo
def test_view_and_report_of_a_killed_run_show_what_was_flushed(killed_run, done_run, cli):
    import json

    import pandas as pd

    from cosim.view import build_data

    run = killed_run / "o"
    d = build_data(run)
    cov = pd.read_parquet(run / "coverage.parquet")
    assert d["incomplete"].startswith("incomplete: the run was killed (no summary.json); showing the ")
    assert d["title"].endswith("(incomplete)") and d["vehicles"]["rows"] == len(cov) > 0
    assert d["vehicles"]["slots"] == sorted(cov["slot"].unique())
    # the RSUs as the run placed them: those a completed run of the same scenario records
    want = json.loads((done_run / "summary.json").read_text())["rsus"]
    assert d["rsus"] == [{"id": r["id"], "x": r["x"], "y": r["y"], "r": r["radius_m"]} for r in want]
    # the policy table from the flushed task rows
    dv = pd.read_parquet(run / "dvit_tasks.parquet")
    s = d["layers"]["dvit"]["summary"]
    assert sorted(s) == sorted(dv["policy"].unique())
    for p, g in dv.groupby("policy"):
        assert s[p]["tasks"] == len(g)
        assert s[p]["success_rate"] == pytest.approx(g[g["outcome"] != "censored"]["success"].mean())
    for cmd, made in (("view", ["view.html"]), ("report", ["report.png", "report.pdf"])):
        p = cli(cmd, str(run))
        assert p.returncode == 0, p.stderr
        assert says(p.stderr, f"cosim: warning: {run}: ", "no summary.json", "incomplete"), p.stderr
        assert all((run / m).is_file() for m in made)
    from .test_view import _page

    with _page(run / "view.html") as browser:
        assert browser.execute_script("return document.getElementById('note').textContent") == d["incomplete"]
        assert browser.execute_script("return window.cosimView.nSlots") == len(d["vehicles"]["slots"])


@pytest.mark.sumo
def test_an_interrupted_run_is_marked_incomplete(done_run, tmp_path):
    import json
    import shutil

    from cosim.view import build_data

    done = done_run
    assert build_data(done)["incomplete"] is None
    copy = tmp_path / "c"
    shutil.copytree(done, copy)
    s = json.loads((copy / "summary.json").read_text())
    s["status"] = "terminated"
    (copy / "summary.json").write_text(json.dumps(s))
    d = build_data(copy)
    assert d["incomplete"] == "incomplete: the run ended terminated; showing the slots flushed"
    assert d["title"].endswith("(incomplete)")


# -- the rule: bad input is exit 2; a folder exists only when a slot ran -----------------------
def test_a_trace_found_bad_while_streaming_is_exit_2_and_keeps_the_slots_before(tmp_path, capsys):
    import json

    rows = _rows()
    n = len(rows["ids"])
    good = trace(tmp_path, rows, name="a.parquet")
    import pandas as pd

    df = pd.read_parquet(good)
    frames = []
    for t in range(1, 9):  # eight timesteps of the five vehicles; the sixth holds a NaN x
        f = df.copy()
        f["time_s"] = float(t)
        if t == 6:
            f.loc[2, "x"] = float("nan")
        frames.append(f)
    bad = tmp_path / "late.parquet"
    pd.concat(frames, ignore_index=True).to_parquet(bad)
    out = tmp_path / "o"
    code, err = _replay(capsys, str(bad), "--scenario", scenario(tmp_path), "--out", str(out))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    line = f"{bad}: row {5 * n + 3} (vehicle 'v2'): x is nan (must be finite)"
    assert lines[0] == f"cosim: error: {line}"
    s = json.loads((out / "summary.json").read_text())
    # t = 1..4 s ran; the reader looks one timestep ahead, so the bad row at t = 6 s stops the
    # run while it steps to t = 5 s
    assert s["status"] == "bad-input" and s["error"] == line and s["slots"] == 4
    assert sorted(pd.read_parquet(out / "rsus.parquet")["slot"].unique()) == [0, 1, 2, 3]


def test_a_trace_off_the_slot_grid_is_one_line_not_an_empty_run(tmp_path, capsys):
    import pandas as pd

    df = pd.read_parquet(trace(tmp_path, _rows(), name="a.parquet"))
    frames = []
    for t in range(8):  # every record half a slot off the grid (0.5, 1.5, ... s)
        f = df.copy()
        f["time_s"] = t + 0.5
        frames.append(f)
    off = tmp_path / "off.parquet"
    pd.concat(frames, ignore_index=True).to_parquet(off)
    out = tmp_path / "o"
    code, err = _replay(capsys, str(off), "--scenario", scenario(tmp_path), "--out", str(out))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert says(lines[0], f"cosim: error: {off}: ", "begin 0 s", "0.5 s, 1.5 s", "scenario.begin_s", "slot_s"), lines[0]
    # on the grid from its second record (an FCD-like trace every half slot): replays as before
    for f, t in zip(frames, range(8)):
        f["time_s"] = t * 0.5 + 0.5
    on = tmp_path / "on.parquet"
    pd.concat(frames, ignore_index=True).to_parquet(on)
    code, err = _replay(capsys, str(on), "--scenario", scenario(tmp_path), "--out", str(tmp_path / "o2"))
    assert code == 0, err


@pytest.mark.sumo
@pytest.mark.parametrize("backend", ["libsumo", "traci"])
def test_a_bad_sumo_option_is_one_line_naming_it(tmp_path, cli, backend):
    from .conftest import GRID6_TOML

    p = cli("run", str(GRID6_TOML), "--sumo-args=--no-such-option", "--end", "5", "--backend", backend,
            "--out", str(tmp_path / "o"), "-q")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0].startswith("cosim: error: --sumo-args: SUMO failed to start: Error: On processing option "
                               "'--no-such-option': "
                               "No option with the name 'no-such-option' exists."), p.stderr
    assert not (tmp_path / "o").exists()


def test_sumo_error_prefers_the_error_that_names_the_option_to_the_wrap_up():
    from cosim.sources.sumo import sumo_error

    text = ("Error: On processing option '--x':\n No option with the name 'x' exists.\n"
            "Error: Could not parse commandline options.\nQuitting (on error).\n")
    assert sumo_error(text) == ("Error: On processing option '--x': No option with the name 'x' exists. "
                                "(Could not parse commandline options.)")
    assert sumo_error("Error: Could not parse commandline options.\n") == "Error: Could not parse commandline options."
    assert sumo_error("Warning: w\nError: File 'a.xml' not found.\n") == "Error: File 'a.xml' not found."


@pytest.mark.parametrize("body, code, line", [
    ("import sys\nsys.exit(0)\n", 2, "cosim: error: sys.exit(0) was called while the command ran (by a plugin, or a "
                                     "library it uses?); it did not finish (no results were written: the run had not "
                                     "started)"),
    ("raise KeyboardInterrupt\n", 130, "cosim: interrupted (no results were written: the run had not started)"),
])
def test_a_plugin_that_exits_or_interrupts_at_import_says_so(tmp_path, cli, body, code, line):
    (tmp_path / "plug.py").write_text(body)
    toml = scenario(tmp_path, 'plugins = ["plug.py"]\n')
    p = cli("run", toml, "--out", str(tmp_path / "o"), "-q")
    assert p.returncode == code and p.stderr.strip().splitlines() == [line], p.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.sumo
def test_sumo_killed_under_three_processes_is_sumo_died_not_a_traceback(tmp_path):
    """SIGKILL to SUMO's process with policy workers (--jobs 3): the plugin may be answering the
    slot SUMO just delivered when the pipe breaks; the run still ends sumo-died, exit 3, one line."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from .conftest import ROOT

    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "cosim", "run", str(ROOT / "scenarios" / "grid6_all.toml"),
                             "--jobs", "3", "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in proc.stderr:  # a progress line a second
            if " slot " in line and int(line.split(" slot ")[1].split()[0]) >= 30:
                break
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        sumo = [int(c) for c in children if "libsumo" in open(f"/proc/{c}/maps").read()]
        assert len(sumo) == 1
        os.kill(sumo[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 3, err
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert err.strip().splitlines()[-1].startswith("cosim: error: SUMO's process ended at t=")
    assert json.loads((out / "summary.json").read_text())["status"] == "sumo-died"
