"""Sweeps: the sweep file, the cell expansion, the statistics, and real sweeps on grid6 with
the local and Ray engines, resuming, failures and plots."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cosim import sweep
from cosim.errors import ConfigError, CosimError

from .conftest import ROOT, run_cli

SCEN = ROOT / "scenarios" / "grid6_cache.toml"


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def tiny(tmp_path: Path, grid: str = '"layers.cache.gpu_memory_gb" = [40, 80]', seeds: str = "[1, 2]",
         end: float = 20) -> Path:
    return write(tmp_path, f'[sweep]\nname = "tiny"\nscenarios = ["{SCEN}"]\nseeds = {seeds}\nend_s = {end}\n'
                           '[set]\n"output.coverage" = false\n"scenario.step_length_s" = 0.5\n'
                           '"layers.cache.policies" = ["lc", "lfu"]\n'
                           f"[grid]\n{grid}\n")


def test_cells_are_the_product_with_stable_ids(tmp_path):
    sw = sweep.load(tiny(tmp_path, grid='"layers.cache.gpu_memory_gb" = [40, 80, 160]\n"rsu.radius_m" = [300, 500]',
                         seeds="3"))
    cells = sw.cells()
    assert len(cells) == 3 * 2 * 3 and sw.seeds == [1, 2, 3]
    assert len({c.cell_id for c in cells}) == len(cells)
    assert [c.cell_id for c in sweep.load(tiny(tmp_path, grid='"layers.cache.gpu_memory_gb" = [40, 80, 160]\n'
                                                              '"rsu.radius_m" = [300, 500]', seeds="3")).cells()] \
        == [c.cell_id for c in cells]  # same definition, same ids (what resuming relies on)
    c = cells[0]
    assert c.overrides == {"output.coverage": False, "scenario.step_length_s": 0.5,
                           "layers.cache.policies": ["lc", "lfu"], "scenario.end_s": 20.0,
                           "layers.cache.gpu_memory_gb": 40, "rsu.radius_m": 300, "scenario.seed": 1}


@pytest.mark.parametrize("text, message", [
    ("[sweep]\nscenarios = []\n", "sweep.scenarios: must be a non-empty list"),
    ('[sweep]\nscenarios = ["nope.toml"]\n', "no such file 'nope.toml'"),
    (f'[sweep]\nscenarios = ["{SCEN}"]\nseeds = ["a"]\n', "sweep.seeds[0]: expected an integer, got 'a'"),
    (f'[sweep]\nscenarios = ["{SCEN}"]\nspeed = 1\n', "unknown key 'sweep.speed'"),
    (f'[sweep]\nscenarios = ["{SCEN}"]\n[grid]\n"layers.cache.gpu_memory_gb" = []\n', "must be a non-empty list"),
    (f'[sweep]\nscenarios = ["{SCEN}"]\n[grid]\nseed = [1]\n', "expected TABLE.KEY"),
    (f'[sweep]\nscenarios = ["{SCEN}"]\n[grids]\n', "unknown table '[grids]'"),
    ("[sweep\n", "bad TOML"),
    (f'[sweep]\nscenarios = ["{SCEN}"]\nseeds = [1, 2, 1]\n', "sweep.seeds: 1 is listed twice"),
    (f'[sweep]\nscenarios = ["{SCEN}"]\nseeds = 0\n', "sweep.seeds: 0 is out of range (must be >= 1)"),
    (f'[sweep]\nscenarios = ["{SCEN}", "{SCEN}"]\n', "is listed twice"),
    (f'[sweep]\nscenarios = ["{SCEN}"]\n[grid]\n"rsu.radius_m" = [300, 500, 300.0]\n',
     'grid."rsu.radius_m": 300.0 is listed twice'),
    (f'[sweep]\nname = "../../../escape"\nscenarios = ["{SCEN}"]\n', "sweep.name: '../../../escape': letters, digits"),
    (f'[sweep]\nname = "/abs"\nscenarios = ["{SCEN}"]\n', "sweep.name: '/abs': letters, digits"),
    (f'grid = 5\n[sweep]\nscenarios = ["{SCEN}"]\n', "grid: expected a table, got 5"),
    (f'set = 5\n[sweep]\nscenarios = ["{SCEN}"]\n', "set: expected a table, got 5"),
    (f'[sweep]\nscenarios = ["{SCEN}"]\nend_s = inf\n', "sweep.end_s: must be finite, got inf"),
    (f'[sweep]\nscenarios = ["{SCEN}"]\n[set]\n"rsu.radius_m" = 3\n[grid]\n"rsu.radius_m" = [1, 2]\n',
     "is also a [grid] axis"),
])
def test_bad_sweep_files_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        sweep.load(write(tmp_path, text))


def test_the_sweep_file_keys_are_dataclasses_checked_as_scenario_keys_are(tmp_path):
    """[sweep] is SweepSection's keys: defaults where a key is left out (the name is the file's
    stem, no end time), a count of seeds is 1..N, and each key's type and bounds are checked."""
    sw = sweep.load(write(tmp_path, f'[sweep]\nscenarios = ["{SCEN}"]\nseeds = 3\n', "my-sweep.toml"))
    assert (sw.name, sw.seeds, sw.end_s, sw.baseline, sw.grid, sw.fixed) == ("my-sweep", [1, 2, 3], None, {}, {}, {})
    assert sweep.load(write(tmp_path, f'[sweep]\nscenarios = ["{SCEN}"]\nend_s = -1\n')).end_s is None
    assert sweep.load(write(tmp_path, f'[sweep]\nscenarios = ["{SCEN}"]\nend_s = 30\n')).end_s == 30.0
    assert sweep.load(write(tmp_path, f'[sweep]\nscenarios = ["{SCEN}"]\nseeds = {sweep.MAX_SEEDS}\n')).seeds[-1] \
        == sweep.MAX_SEEDS
    for body, message in [
        ("", "missing table '[sweep]'"),
        ('[sweep]\nname = "x"\n', "missing key 'sweep.scenarios'"),
        (f'[sweep]\nscenarios = ["{SCEN}"]\nseeds = true\n', "sweep.seeds: expected a list or an integer, got True"),
        (f'[sweep]\nscenarios = ["{SCEN}"]\nseeds = {sweep.MAX_SEEDS + 1}\n',
         f"sweep.seeds: {sweep.MAX_SEEDS + 1} is out of range (must be <= {sweep.MAX_SEEDS})"),
        (f'[sweep]\nscenarios = ["{SCEN}"]\nseeds = [1.5]\n', "sweep.seeds[0]: expected an integer, got 1.5"),
        (f'[sweep]\nscenarios = ["{SCEN}"]\nend_s = 0\n', "sweep.end_s: 0 is out of range (must be > 0, or -1"),
        (f'[sweep]\nscenarios = ["{SCEN}"]\nbaseline = {{ dvit = 5 }}\n', "sweep.baseline.dvit: expected a string, "
                                                                         "got 5"),
        ("[sweep]\nscenarios = [5]\n", "sweep.scenarios[0]: expected a string or a table, got 5"),
        ('[sweep]\nscenarios = [{ name = "x" }]\n', "missing key 'sweep.scenarios[0].file'"),
        (f'[sweep]\nscenarios = [{{ file = "{SCEN}", name = "a/b" }}]\n', "sweep.scenarios[0].name: 'a/b': letters"),
        (f'[sweep]\nscenarios = [{{ file = "{SCEN}", set = 3 }}]\n', "sweep.scenarios[0].set: expected a table, got 3"),
        (f'[sweep]\nscenarios = ["{SCEN}"]\n[grid]\n"rsu.radius_m" = 5\n',
         'grid."rsu.radius_m": expected a list, got 5'),
    ]:
        with pytest.raises(ConfigError) as exc:
            sweep.load(write(tmp_path, body, "bad.toml"))
        assert str(exc.value).startswith(f"{tmp_path / 'bad.toml'}: {message}") and "\n" not in str(exc.value)
    # the same keys, documented from the dataclasses: `cosim sweep --help` and docs/comparisons.md
    table = sweep.keys_table()
    assert [ln.split("`")[1] for ln in table.splitlines()[2:]] == [
        "sweep.name", "sweep.scenarios", "sweep.seeds", "sweep.end_s", "sweep.baseline", "sweep.scenarios[i].file",
        "sweep.scenarios[i].name", "sweep.scenarios[i].set", "[set]", "[grid]"]
    assert table in (ROOT / "docs" / "comparisons.md").read_text()
    assert f"at most {sweep.MAX_SEEDS} values" in table
    helptext = run_cli("sweep", "--help").stdout
    assert all(f"{key} =" in helptext for key in ("name", "scenarios", "seeds", "end_s", "baseline"))


def test_a_folder_or_a_binary_is_not_a_sweep_file(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a sweep file"):
        sweep.load(tmp_path)
    (tmp_path / "b.toml").write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        sweep.load(tmp_path / "b.toml")


@pytest.mark.parametrize("grid, message", [
    ('"layers.cache.gpu_memory_gb" = [40, -1]', 'grid."layers.cache.gpu_memory_gb" = -1: layers.cache.gpu_memory_gb'),
    ('"rsu.radius_m" = ["far"]', "grid.\"rsu.radius_m\" = 'far': rsu.radius_m: expected a number"),
    ('"layers.cache.nokey" = [1]', "unknown key 'layers.cache.nokey'"),
    ('"layers.nolayer.x" = [1]', "unknown layer '[layers.nolayer]'"),
    ('"scenario.end_s" = [-5]', "scenario.end_s: -5 is out of range"),
])
@pytest.mark.parametrize("dry", [[], ["--dry-run"]])
def test_every_cell_is_validated_before_anything_runs(tmp_path, grid, message, dry):
    f = tiny(tmp_path, grid=grid)  # --dry-run makes the same checks: it must not list a cell as [to run] that fails
    proc = run_cli("sweep", str(f), "--out", str(tmp_path / "out"), "-q", *dry)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(f) in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_corrupt_finished_cell_runs_again_and_merges_without_a_traceback(tmp_path):
    sw = sweep.load(tiny(tmp_path, seeds="[1]", grid='"layers.cache.gpu_memory_gb" = [40]'))
    (cell,) = sw.cells()
    d = tmp_path / "out" / "cells" / cell.cell_id
    d.mkdir(parents=True)
    (d / "cell.json").write_text(json.dumps({"status": "completed"}))
    for corrupt in ('{"status": "compl', "[]", ""):
        (d / "summary.json").write_text(corrupt)
        assert sweep.finished(d) is None  # so the next run of the sweep runs it again
        res = sweep.merge(sw, tmp_path / "out")
        assert res == {"cells": 1, "completed": 0, "failed": 1, "rerun": 0, "out": str(tmp_path / "out")}
        cells = pd.read_csv(tmp_path / "out" / "cells.csv")
        assert cells["error"].str.contains("summary.json missing or corrupt").all()
    (d / "cell.json").write_text("[1, 2]")  # valid JSON, not a record
    assert sweep.finished(d) is None and sweep.merge(sw, tmp_path / "out")["failed"] == 0


def test_mean_and_student_t_interval_by_hand(tmp_path):
    res = pd.DataFrame({"scenario": ["a"] * 4, "k": [1, 1, 1, 2], "layer": ["x"] * 4, "policy": ["p"] * 4,
                        "cell": list("abcd"), "seed": [1, 2, 3, 1], "m": [1.0, 2.0, 3.0, 5.0]})
    out = sweep.summary_csv(res, ["k"], tmp_path / "s.csv")
    row = out[out.k == 1].iloc[0]
    # mean 2, sample sd 1, n 3: 4.302653 * 1 / sqrt(3) = 2.48414
    assert row["n"] == 3 and row["m.mean"] == 2.0 and row["m.ci95"] == pytest.approx(2.48414, abs=1e-5)
    one = out[out.k == 2].iloc[0]
    assert one["m.mean"] == 5.0 and pd.isna(one["m.ci95"])  # one seed: no interval
    assert row["m.n"] == 3 and one["m.n"] == 1


# -- real sweeps on grid6 -----------------------------------------------------------------------
sumo = pytest.mark.sumo


@sumo
def test_local_sweep_merges_and_reports_a_broken_cell(tmp_path):
    # a spacing the scenario checks accept but the network does not (too many RSUs): found when the run starts
    f = tiny(tmp_path, grid='"layers.cache.gpu_memory_gb" = [40]\n"rsu.spacing_m" = [-1, 0.5]')
    proc = run_cli("sweep", str(f), "--out", str(tmp_path / "out"), "--jobs", "2", "-q")
    assert proc.returncode == 2  # one run failed
    cells = pd.read_csv(tmp_path / "out" / "cells.csv")
    assert sorted(cells["status"]) == ["completed", "completed", "failed", "failed"]
    bad = cells[cells.status == "failed"]
    assert (bad["rsu.spacing_m"] == 0.5).all()
    assert bad["error"].str.contains("rsu.spacing_m = 0.5 puts").all()
    res = pd.read_parquet(tmp_path / "out" / "results.parquet")
    lc = res[(res.layer == "cache") & (res.policy == "lc")]
    assert sorted(lc["seed"]) == [1, 2] and (lc["layers.cache.gpu_memory_gb"] == 40).all()
    # each row is that run's summary block, unchanged
    for _, row in lc.iterrows():
        block = json.loads((tmp_path / "out" / "cells" / row["cell"] / "summary.json").read_text())["layers"]["cache"]["lc"]
        assert row["system_cost"] == pytest.approx(block["system_cost"]) and row["requests"] == block["requests"]
    summ = pd.read_csv(tmp_path / "out" / "summary.csv")
    s = summ[(summ.layer == "cache") & (summ.policy == "lc")].iloc[0]
    assert s["n"] == 2 and s["system_cost.mean"] == pytest.approx(lc["system_cost"].mean())


def _workers(parent: int) -> list[int]:
    """The sweep workers started by process ``parent`` — only its own children: other sweeps
    may run on the same machine and must not be touched."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == parent and b"cosim.sweep" in cmd and len(cmd) > 2 and cmd[1] == b"-m":
                pids.append(int(d.name))
    return pids


@sumo
def test_resume_after_a_killed_worker_runs_only_the_missing_cells(tmp_path):
    f = tiny(tmp_path, end=240)  # 4 cells, long enough (~2 s) to be killed mid-run
    out = tmp_path / "out"
    env = {**os.environ}
    proc = subprocess.Popen([sys.executable, "-m", "cosim", "sweep", str(f), "--out", str(out), "--jobs", "2", "-q"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    victim = None
    while time.time() < deadline and victim is None:  # kill the first worker we see mid-run
        if _workers(proc.pid):
            time.sleep(1.0)  # mid-run, not at its start
            for pid in _workers(proc.pid):  # one still running (the first may have finished meanwhile)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                victim = pid
                break
        time.sleep(0.05)
    assert victim is not None
    proc.communicate(timeout=300)
    cells = pd.read_csv(out / "cells.csv")
    assert (cells.status == "failed").sum() == 1 and cells.error.str.contains("worker died").sum() == 1
    before = {c: (out / "cells" / c / "cell.json").stat().st_mtime_ns for c in cells[cells.status == "completed"].cell}
    again = run_cli("sweep", str(f), "--out", str(out), "--jobs", "2", "-q")
    assert again.returncode == 0, again.stderr
    cells = pd.read_csv(out / "cells.csv")
    assert (cells.status == "completed").all() and len(cells) == 4
    after = {c: (out / "cells" / c / "cell.json").stat().st_mtime_ns for c in before}
    assert after == before  # the finished ones were not run again


@pytest.fixture(scope="module")
def tiny_local(tmp_path_factory) -> Path:
    """The tiny sweep (2 GPU sizes x 2 seeds) run by the local engine, once for the tests that
    only read its results (the Ray engine's table is compared with it; `cosim plot` draws it)."""
    folder = tmp_path_factory.mktemp("tiny")
    f = tiny(folder)
    proc = run_cli("sweep", str(f), "--out", str(folder / "local"), "--jobs", "2", "-q")
    assert proc.returncode == 0, proc.stderr
    return folder / "local"


@sumo
def test_ray_engine_gives_the_local_engine_s_table(tmp_path, tiny_local):
    pytest.importorskip("ray")
    f = tiny(tmp_path)
    ray = run_cli("sweep", str(f), "--out", str(tmp_path / "ray"), "--engine", "ray", "--jobs", "2", "-q")
    assert ray.returncode == 0, ray.stderr
    a, b = (pd.read_parquet(d / "results.parquet") for d in (tiny_local, tmp_path / "ray"))
    assert len(a) == len(b) and a.cell.nunique() == 4  # every cell of both, compared below row by row
    cols = [c for c in a.columns if not c.startswith("wall_s")]  # everything but timings
    key = ["cell", "layer", "policy"]
    pd.testing.assert_frame_equal(a[cols].sort_values(key).reset_index(drop=True),
                                  b[cols].sort_values(key).reset_index(drop=True))


@sumo
def test_plot_draws_the_standard_figures(tmp_path, tiny_local):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    shutil.copytree(tiny_local, out)  # plots are written into the folder: the shared one stays as run
    proc = run_cli("plot", str(out))
    assert proc.returncode == 0, proc.stderr
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert "grid6_cache-cache-system_cost_per_request.png" in pngs
    assert all((out / "plots" / p).stat().st_size > 5000 for p in pngs)
    bad = run_cli("plot", str(tmp_path))
    assert bad.returncode == 2 and "not a sweep results folder" in bad.stderr
    # a sweep whose every run failed: one line, no traceback
    f = tiny(tmp_path, grid='"rsu.spacing_m" = [0.5]', seeds="[1]")
    assert run_cli("sweep", str(f), "--out", str(tmp_path / "bad"), "-q").returncode == 2
    none = run_cli("plot", str(tmp_path / "bad"))
    assert none.returncode == 2 and "no finished run to plot" in none.stderr
    assert len(none.stderr.strip().splitlines()) == 1


def test_every_shipped_sweep_file_loads():
    files = sorted((ROOT / "tools" / "sweeps").glob("*.toml"))
    assert len(files) >= 6
    for f in files:
        sw = sweep.load(f)
        assert sw.cells() and all(Path(s).is_file() for s in sw.scenarios), f


def test_paired_differences_by_hand():
    """Policy - baseline within each seed, then mean and Student-t interval over the seeds."""
    rows = []
    for seed, (a, b) in enumerate([(1.0, 1.5), (2.0, 2.1), (3.0, 3.7)], start=1):
        rows += [{"cell": f"c{seed}", "scenario": "s", "seed": seed, "layer": "dvit", "policy": "vidi", "lat": a},
                 {"cell": f"c{seed}", "scenario": "s", "seed": seed, "layer": "dvit", "policy": "mddi", "lat": b},
                 {"cell": f"c{seed}", "scenario": "s", "seed": seed, "layer": "core", "policy": "", "lat": 9.0}]
    rows.append({"cell": "c4", "scenario": "s", "seed": 4, "layer": "dvit", "policy": "mddi", "lat": 99.0})  # unpaired
    df = sweep.paired_differences(pd.DataFrame(rows), [])
    assert len(df) == 1
    r = df.iloc[0]
    assert (r["policy"], r["baseline"], r["n"]) == ("mddi", "vidi", 3)
    d = [0.5, 0.1, 0.7]  # per-seed differences
    mean = sum(d) / 3
    sd = (sum((x - mean) ** 2 for x in d) / 2) ** 0.5
    assert r["lat.diff"] == pytest.approx(mean) and r["lat.ci95"] == pytest.approx(4.302653 * sd / 3 ** 0.5)
    # another baseline on request
    assert r["lat.n"] == 3
    t = mean / (sd / 3 ** 0.5)
    assert r["lat.p"] == pytest.approx(1 - t / (2 + t * t) ** 0.5)  # Student t, 2 dof: closed form
    assert r["lat.p_holm"] == pytest.approx(r["lat.p"])  # a family of one
    # another baseline on request
    df = sweep.paired_differences(pd.DataFrame(rows), [], baseline={"dvit": "mddi"})
    assert df.iloc[0]["policy"] == "vidi" and df.iloc[0]["lat.diff"] == pytest.approx(-mean)


def test_paired_n_counts_the_seeds_with_a_finite_value():
    """A seed whose value is NaN (a policy that completed no task) is paired but not counted."""
    rows = []
    for seed, (a, b) in enumerate([(1.0, 1.5), (2.0, float("nan")), (3.0, 3.7), (4.0, 4.0)], start=1):
        rows += [{"cell": f"c{seed}", "scenario": "s", "seed": seed, "layer": "dvit", "policy": "vidi", "lat": a},
                 {"cell": f"c{seed}", "scenario": "s", "seed": seed, "layer": "dvit", "policy": "mddi", "lat": b}]
    r = sweep.paired_differences(pd.DataFrame(rows), []).iloc[0]
    assert r["n"] == 4 and r["lat.n"] == 3
    d = [0.5, 0.7, 0.0]
    mean = sum(d) / 3
    sd = (sum((x - mean) ** 2 for x in d) / 2) ** 0.5
    assert r["lat.diff"] == pytest.approx(mean) and r["lat.ci95"] == pytest.approx(4.302653 * sd / 3 ** 0.5)


def test_paired_task_level_columns_and_holm_family():
    """latency_diff_s / success_diff are each run's own task-level differences (not differenced
    again); Holm adjusts over the policies of one (scenario, layer) family, per metric."""
    rows = []
    base_lat = {1: 10.0, 2: 11.0, 3: 12.0}
    own = {"mddi": [0.2, 0.4, 0.3], "sdi": [1.0, 1.2, 0.8], "vli": [0.0, 0.1, -0.1]}
    for seed in (1, 2, 3):
        rows.append({"cell": f"c{seed}", "scenario": "s", "seed": seed, "layer": "dvit", "policy": "vidi",
                     "lat": base_lat[seed], "vs_baseline.baseline": "vidi", "vs_baseline.latency_diff_s": 0.0})
        for pol, d in own.items():
            rows.append({"cell": f"c{seed}", "scenario": "s", "seed": seed, "layer": "dvit", "policy": pol,
                         "lat": base_lat[seed] + d[seed - 1], "vs_baseline.baseline": "vidi",
                         "vs_baseline.latency_diff_s": d[seed - 1]})
    df = sweep.paired_differences(pd.DataFrame(rows), []).set_index("policy")
    for pol, d in own.items():
        assert df.loc[pol, "latency_diff_s.diff"] == pytest.approx(sum(d) / 3)
        assert df.loc[pol, "latency_diff_s.n"] == 3
    raw = df["lat.p"].to_numpy()
    order = sorted(range(3), key=lambda i: raw[i])
    want, running = [0.0] * 3, 0.0
    for rank, i in enumerate(order):  # Holm by hand: (m - rank) * p, running maximum, capped at 1
        running = max(running, min(1.0, (3 - rank) * raw[i]))
        want[i] = running
    assert df["lat.p_holm"].to_numpy() == pytest.approx(want)
    # against another baseline the runs' own task-level blocks do not apply: NaN, not a wrong number
    other = sweep.paired_differences(pd.DataFrame(rows), [], baseline={"dvit": "mddi"}).set_index("policy")
    assert other["latency_diff_s.diff"].isna().all() and (other["latency_diff_s.n"] == 0).all()


def test_a_baseline_that_no_cell_runs_is_one_line(tmp_path):
    good = tiny(tmp_path)
    text = good.read_text().replace('end_s = 20\n', 'end_s = 20\nbaseline = { cache = "LFU" }\n')
    bad = write(tmp_path, text, "bad.toml")
    with pytest.raises(ConfigError, match=r"sweep\.baseline\.cache: 'LFU' is not among the policies run \(lc, lfu\)"):
        sweep.check_cells(sweep.load(bad))
    bad2 = write(tmp_path, text.replace('cache = "LFU"', 'dvit = "vidi"'), "bad2.toml")
    with pytest.raises(ConfigError, match=r"sweep\.baseline\.dvit: no cell runs layer 'dvit' \(layers run: cache\)"):
        sweep.check_cells(sweep.load(bad2))
    sweep.check_cells(sweep.load(write(tmp_path, text.replace('"LFU"', '"lfu"'), "ok.toml")))
    proc = run_cli("sweep", str(bad), "--dry-run")  # --dry-run refuses it as the sweep does
    assert proc.returncode == 2 and "'LFU' is not among the policies run" in proc.stderr and not proc.stdout


def test_plot_of_a_seeds_only_sweep_draws_the_paired_forest(tmp_path):
    """A sweep that varies only seeds has nothing to draw lines against, but every comparison in
    paired.csv is drawn: policy - baseline with its interval, one panel per metric."""
    pytest.importorskip("matplotlib")
    from cosim.plot import plot

    (tmp_path / "sweep.toml").write_text('[sweep]\nname = "x"\nscenarios = ["a.toml"]\nseeds = 10\n')
    pd.DataFrame({"scenario": ["g"] * 3, "layer": ["dvit"] * 3, "policy": ["vidi", "mddi", "sdi"], "n": [10] * 3,
                  "success_rate.mean": [0.9, 0.8, 0.7], "success_rate.ci95": [0.01] * 3}).to_csv(
        tmp_path / "summary.csv", index=False)
    pd.DataFrame({"scenario": ["g"] * 2, "layer": ["dvit"] * 2, "policy": ["mddi", "sdi"], "baseline": ["vidi"] * 2,
                  "n": [10, 10], "latency_diff_s.diff": [0.4, 1.2], "latency_diff_s.ci95": [0.1, 0.3],
                  "latency_diff_s.p_holm": [0.01, 0.001], "success_diff.diff": [-0.1, -0.2],
                  "success_diff.ci95": [0.02, 0.05], "success_diff.p_holm": [0.002, 0.001]}).to_csv(
        tmp_path / "paired.csv", index=False)
    written = plot(tmp_path)
    assert [p.name for p in written] == ["g-dvit-paired.png"]
    assert written[0].stat().st_size > 5000


def test_a_failed_plot_leaves_no_folder_and_no_figure_it_made(tmp_path):
    """`cosim plot SWEEP --metric nosuch --out bad/p1` fails after the forest and a line figure
    were drawn: those figures and the folders the call made go again; an --out that existed keeps
    what was in it."""
    pytest.importorskip("matplotlib")
    from cosim.plot import plot

    sw = tmp_path / "sw"
    sw.mkdir()
    (sw / "sweep.toml").write_text('[sweep]\nname = "x"\nscenarios = ["a.toml"]\nseeds = 3\n'
                                   '[grid]\n"layers.dvit.steps" = [10, 20]\n')
    pd.DataFrame({"scenario": ["g"] * 4, "layer": ["dvit"] * 4, "policy": ["vidi", "mddi"] * 2,
                  "layers.dvit.steps": [10, 10, 20, 20], "n": [3] * 4, "success_rate.mean": [0.9, 0.8, 0.7, 0.6],
                  "success_rate.ci95": [0.01] * 4}).to_csv(sw / "summary.csv", index=False)
    pd.DataFrame({"scenario": ["g"] * 2, "layer": ["dvit"] * 2, "policy": ["mddi"] * 2, "baseline": ["vidi"] * 2,
                  "layers.dvit.steps": [10, 20], "n": [3, 3], "success_rate.diff": [-0.1, -0.1],
                  "success_rate.ci95": [0.02, 0.02], "success_rate.p_holm": [0.01, 0.01]}).to_csv(
        sw / "paired.csv", index=False)
    out = tmp_path / "bad" / "p1"
    with pytest.raises(CosimError, match="--metric nosuch: layer 'dvit' has no such number"):
        plot(sw, metrics=["success_rate", "nosuch"], out=out)
    assert not (tmp_path / "bad").exists()
    kept = tmp_path / "old"
    kept.mkdir()
    (kept / "g-dvit-paired.png").write_bytes(b"an earlier figure")
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(CosimError, match="--metric nosuch"):
        plot(sw, metrics=["success_rate", "nosuch"], out=kept)
    assert sorted(p.name for p in kept.iterdir()) == ["g-dvit-paired.png", "notes.txt"]
    # the same call without the bad metric draws both figures there (so the failure came after them)
    assert sorted(p.name for p in plot(sw, metrics=["success_rate"], out=out)) == [
        "g-dvit-paired.png", "g-dvit-success_rate.png"]


@sumo
def test_a_sweep_takes_a_sumocfg_as_cosim_run_does(tmp_path):
    from .conftest import GRID6_CFG

    f = write(tmp_path, f'[sweep]\nname = "cfg"\nscenarios = ["{GRID6_CFG}"]\nseeds = [1, 2]\nend_s = 10\n'
                        '[set]\n"output.coverage" = false\n"scenario.step_length_s" = 0.5\n'
                        '"layers.dvit.policies" = ["vidi", "mddi"]\n')
    proc = run_cli("sweep", str(f), "--out", str(tmp_path / "out"), "-q")
    assert proc.returncode == 0, proc.stderr
    cells = pd.read_csv(tmp_path / "out" / "cells.csv")
    assert list(cells.status) == ["completed", "completed"] and set(cells.scenario) == {"grid6"}
    bad = write(tmp_path, '[sweep]\nname = "bad"\nscenarios = ["s.toml"]\n', "bad.toml")
    (tmp_path / "net.txt").write_text("x")
    bad.write_text(bad.read_text().replace("s.toml", "net.txt"))
    proc = run_cli("sweep", str(bad), "--out", str(tmp_path / "o2"), "-q")
    assert proc.returncode == 2 and "net.txt: expected a scenario .toml or a SUMO .sumocfg" in proc.stderr


@sumo
def test_task_level_columns_against_a_sweep_baseline_that_is_not_the_first_policy(tmp_path):
    """[sweep] baseline = { dvit = "mddi" }: the runs pair against VIDI (their first policy); the
    merge re-pairs every run against MDDI from its task table — checked by a pandas merge here."""
    f = write(tmp_path, f'[sweep]\nname = "rb"\nscenarios = ["{ROOT / "scenarios" / "grid6_dvit.toml"}"]\n'
                        'seeds = [1, 2]\nend_s = 40\nbaseline = { dvit = "mddi" }\n[set]\n"output.coverage" = false\n'
                        '"scenario.warmup_s" = 0\n"layers.dvit.policies" = ["vidi", "mddi", "sdi"]\n')
    proc = run_cli("sweep", str(f), "--out", str(tmp_path / "out"), "-q")
    assert proc.returncode == 0, proc.stderr
    per_seed = {"vidi": [], "sdi": []}
    for cell in (tmp_path / "out" / "cells").iterdir():
        df = pd.read_parquet(cell / "dvit_tasks.parquet")
        b = df[df.policy == "mddi"].set_index("task")
        for pol in per_seed:
            m = df[df.policy == pol].set_index("task").merge(b, left_index=True, right_index=True, suffixes=("", "_b"))
            m = m.dropna(subset=["latency_s", "latency_s_b"])
            per_seed[pol].append((m.latency_s - m.latency_s_b).mean())
    paired = pd.read_csv(tmp_path / "out" / "paired.csv").set_index("policy")
    for pol, d in per_seed.items():
        assert paired.loc[pol, "baseline"] == "mddi" and paired.loc[pol, "latency_diff_s.n"] == 2
        assert paired.loc[pol, "latency_diff_s.diff"] == pytest.approx(sum(d) / 2)


def test_a_sweep_with_a_missing_cell_exits_nonzero_and_says_how_many(tmp_path, monkeypatch, capsys):
    """A cell that never reported back (a Ray node lost, a folder the driver cannot see) is not a
    success: the command says how many and exits 2, as for a failed one (issue 30)."""
    from cosim import cli

    f = tiny(tmp_path, seeds="[1, 2, 3]")
    monkeypatch.setattr(sweep, "execute", lambda *a, **k: {"cells": 3, "completed": 2, "failed": 0,
                                                           "out": str(tmp_path / "o")})
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "2/3 runs completed, 0 failed, 1 missing (see cells.csv)" in capsys.readouterr().out
    monkeypatch.setattr(sweep, "execute", lambda *a, **k: {"cells": 3, "completed": 3, "failed": 0,
                                                           "out": str(tmp_path / "o")})
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o"), "-q"]) == 0


def test_scenario_entries_with_their_own_overrides_and_names(tmp_path):
    """scenarios = [file, { file, name, set }]: each entry's set applies to its runs only, its name
    labels its rows; the plain entry keeps the ids it had (a resumed sweep still finds them)."""
    plain = sweep.load(tiny(tmp_path))
    f = write(tmp_path, f'[sweep]\nname = "two"\nscenarios = ["{SCEN}", {{ file = "{SCEN}", name = "small-radius", '
                        'set = { "rsu.radius_m" = 300.0 } }]\nseeds = [1, 2]\nend_s = 20\n[set]\n"output.coverage" = '
                        'false\n"scenario.step_length_s" = 0.5\n"layers.cache.policies" = ["lc", "lfu"]\n'
                        '[grid]\n"layers.cache.gpu_memory_gb" = [40, 80]\n', "two.toml")
    sw = sweep.load(f)
    assert sw.name == "two" and sweep.default_out(sw).name == "two"  # not the last entry's name
    cells = sw.cells()
    assert sw.name == "two" and plain.name == "tiny"  # the [sweep] name, not a scenario's (it names the folder)
    assert sweep.default_out(sw).name == "two"
    assert len(cells) == 2 * 2 * 2
    assert [c.name for c in cells[:4]] == ["grid6_cache"] * 4 and [c.name for c in cells[4:]] == ["small-radius"] * 4
    assert all(c.overrides.get("rsu.radius_m") is None for c in cells[:4])
    assert all(c.overrides["rsu.radius_m"] == 300.0 for c in cells[4:])
    assert [c.cell_id for c in cells[:4]] == [c.cell_id for c in plain.cells()]
    assert len({c.cell_id for c in cells}) == 8
    sweep.check_cells(sw)  # every entry's configuration checked
    # errors: one line each, naming the entry
    base = f.read_text()
    for text, msg in [
        (base.replace(', name = "small-radius"', ""), r"scenarios\[1\]: two scenario entries are both called 'grid6_cache'"),
        (base.replace('name = "small-radius"', 'nam = "x"'),
         r"unknown key 'sweep\.scenarios\[1\]\.nam' \(known: file, name, set\)"),
        (base.replace('"rsu.radius_m" = 300.0', '"layers.cache.gpu_memory_gb" = 10'),
         r"sweep.scenarios\[1\].set.\"layers.cache.gpu_memory_gb\" is also a \[grid\] axis"),
        (base.replace('"rsu.radius_m" = 300.0', '"rsu.radius_m" = -1.0'), r"rsu.radius_m"),
    ]:
        bad = write(tmp_path, text, "bad.toml")
        with pytest.raises(ConfigError, match=msg):
            sweep.check_cells(sweep.load(bad))


def _dropped_rows(drop: dict) -> list[dict]:
    """vidi / mddi over seeds 1-4 (lat = the seed, mddi + 0.5 s, + 0.2 on seed 2); ``drop``: seed -> the
    policies dropped mid-run there, as merge leaves them (metrics blank, task-level column kept)."""
    rows = []
    for seed in range(1, 5):
        for pol, lat in (("vidi", float(seed)), ("mddi", seed + 0.5 + 0.2 * (seed == 2))):
            gone = pol in drop.get(seed, ())
            rows.append({"cell": f"c{seed}", "scenario": "s", "seed": seed, "layer": "dvit", "policy": pol,
                         "lat": None if gone else lat, "vs_baseline.baseline": "vidi",
                         "vs_baseline.success_diff": 0.0 if pol == "vidi" else -0.1 * seed, "dropped": int(gone)})
    return rows


def test_a_policy_dropped_mid_run_is_not_differenced_on_that_seed_and_is_counted(tmp_path):
    res = pd.DataFrame(_dropped_rows({2: ("mddi",)}))
    r = sweep.paired_differences(res, []).iloc[0]
    # seed 2 left out: differences 0.5, 0.5, 0.5 over seeds 1, 3, 4
    assert (r["n"], r["dropped"], r["lat.n"]) == (4, 1, 3) and r["lat.diff"] == pytest.approx(0.5)
    # the task-level column (already over the tasks both served) keeps every seed: -0.1 x (1 + 2 + 3 + 4) / 4
    assert r["success_diff.n"] == 4 and r["success_diff.diff"] == pytest.approx(-0.25)
    s = sweep.summary_csv(res, [], tmp_path / "s.csv").set_index("policy")
    assert s.loc["mddi", "dropped"] == 1 and s.loc["vidi", "dropped"] == 0
    assert s.loc["mddi", "lat.n"] == 3 and s.loc["mddi", "lat.mean"] == pytest.approx((1.5 + 3.5 + 4.5) / 3)
    assert "dropped.mean" not in s.columns
    # a dropped baseline blanks every comparison of that seed: seeds 3 (baseline) and 2 (mddi) out
    r = sweep.paired_differences(pd.DataFrame(_dropped_rows({2: ("mddi",), 3: ("vidi",)})), []).iloc[0]
    assert (r["n"], r["dropped"], r["lat.n"]) == (4, 2, 2) and r["lat.diff"] == pytest.approx(0.5)


@sumo
def test_a_plugin_policy_that_raises_mid_run_is_blanked_and_counted(tmp_path):
    """The test plugin's scheduler "raiser" (tests/data/plugins/bad_plugins.py) raising on its 11th
    call in every seed: dropped mid-run, its per-policy metrics are not compared with VIDI's over all
    of VIDI's tasks (they were: the reviewer's success 0.5 of 10 tasks against 103), the task-level
    columns stay, mddi's comparison is untouched."""
    plugin = Path(__file__).resolve().parent / "data" / "plugins" / "bad_plugins.py"
    f = write(tmp_path, f'[sweep]\nname = "fl"\nscenarios = ["{ROOT / "scenarios" / "grid6_dvit.toml"}"]\n'
                        'seeds = [1, 2]\nend_s = 150\n[set]\n"output.coverage" = false\n'
                        f'"scenario.plugins" = ["{plugin}"]\n"layers.dvit.options.raiser.after" = 10\n'
                        '"layers.dvit.policies" = ["vidi", "raiser", "mddi"]\n')
    done = sweep.execute(sweep.load(f), tmp_path / "out", jobs=1, progress=False)
    assert done["completed"] == 2
    out = sweep.load_sweep(tmp_path / "out")
    fl = out.results[out.results.policy == "raiser"]
    assert (fl["dropped"] == 1).all() and fl["error"].str.contains("raised RuntimeError: deliberate failure").all()
    assert fl["success_rate"].isna().all() and fl["tasks"].isna().all()
    assert fl["vs_baseline.given_tasks"].notna().all() and (fl["vs_baseline.given_tasks"] > 0).all()
    p = out.paired.set_index("policy")
    assert (p.loc["raiser", "n"], p.loc["raiser", "dropped"], p.loc["raiser", "success_rate.n"]) == (2, 2, 0)
    assert p.loc["raiser", "success_diff.n"] == 2 and p.loc["mddi", "dropped"] == 0
    assert p.loc["mddi", "success_rate.n"] == 2
    s = out.summary[out.summary.layer == "dvit"].set_index("policy")
    assert list(s["dropped"]) == [0, 2, 0] and s.loc["raiser", "success_rate.n"] == 0


def test_a_baseline_missing_from_one_grid_point_is_one_line_naming_it(tmp_path):
    """[["vidi", "mddi"], ["mddi", "sdi"]] with baseline vidi: the second point has no vidi, and its
    sdi - mddi comparison would silently vanish from paired.csv."""
    scen = ROOT / "scenarios" / "grid6_dvit.toml"
    text = (f'[sweep]\nscenarios = ["{scen}"]\nseeds = 2\nend_s = 60\nbaseline = {{ dvit = "vidi" }}\n'
            '[grid]\n"layers.dvit.policies" = [["vidi", "mddi"], ["mddi", "sdi"]]\n')
    with pytest.raises(ConfigError) as exc:
        sweep.check_cells(sweep.load(write(tmp_path, text)))
    msg = str(exc.value)
    assert "\n" not in msg and "sweep.baseline.dvit: 'vidi' is not among the policies run at grid6_dvit with " \
        "layers.dvit.policies = ['mddi', 'sdi'] (mddi, sdi)" in msg
    sweep.check_cells(sweep.load(write(tmp_path, text.replace('["mddi", "sdi"]', '["sdi", "vidi"]'), "ok.toml")))


def test_the_forest_plot_marks_a_comparison_without_an_interval(tmp_path, monkeypatch):
    """mddi over 10 seeds, sdi over one (ci95 and p NaN): sdi is a hollow marker said to have no
    interval, not a zero-width bar under 'mean ± 95 %'; the title gives the seeds as 1–10."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from cosim.plot import plot

    (tmp_path / "sweep.toml").write_text('[sweep]\nname = "x"\nscenarios = ["a.toml"]\nseeds = 10\n')
    pd.DataFrame({"scenario": ["g"] * 3, "layer": ["dvit"] * 3, "policy": ["vidi", "mddi", "sdi"], "n": [10, 10, 1],
                  "success_rate.mean": [0.9, 0.8, 0.7], "success_rate.ci95": [0.01, 0.01, float("nan")]}).to_csv(
        tmp_path / "summary.csv", index=False)
    pd.DataFrame({"scenario": ["g"] * 2, "layer": ["dvit"] * 2, "policy": ["mddi", "sdi"], "baseline": ["vidi"] * 2,
                  "n": [10, 1], "latency_diff_s.diff": [0.4, 0.558], "latency_diff_s.ci95": [0.1, float("nan")],
                  "latency_diff_s.p_holm": [0.01, float("nan")]}).to_csv(tmp_path / "paired.csv", index=False)
    figs = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figs.append(self), save(self, *a, **k))[1])
    plot(tmp_path)
    (fig,) = [f for f in figs if "paired per seed" in f._suptitle.get_text()]
    ax = fig.axes[0]
    notes = {t.get_text(): t.xy for t in ax.texts}
    assert notes == {"p_holm=0.01": (0.4, 1), "no interval: n < 2": (0.558, 0)}
    assert "hollow: n < 2, no interval" in ax.get_xlabel()
    title = fig._suptitle.get_text()
    assert "(1–10 seeds)" in title and "with one seed neither interval nor p" in title
    hollow = [line for line in ax.get_lines() if line.get_markerfacecolor() == "none"]
    assert len(hollow) == 1 and list(hollow[0].get_xdata()) == [0.558]


# -- a finished cell is reused only while its inputs are unchanged (its fingerprint) -------------
def _own_scenario(folder: Path, tau: float = 120.0, plugin: str = "X = 1\n") -> Path:
    """grid6's cache scenario with a .py plugin, both in ``folder`` (relative paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plug.py").write_text(plugin)
    net = ROOT / "sumo_nets" / "grid6"
    return write(folder, f'[scenario]\nsumocfg = "{net / "grid6.sumocfg"}"\nplugins = ["plug.py"]\n'
                         '[layers.cache]\npolicies = ["lc", "lfu"]\ncatalog = "table1-variants"\n'
                         f"aoc_tau_s = {tau}\n", "mine.toml")


def test_fingerprint_covers_config_sumo_inputs_and_plugins_and_survives_a_move(tmp_path):
    from cosim import config as cfgmod

    net = tmp_path / "net"
    shutil.copytree(ROOT / "sumo_nets" / "grid6", net)
    scen = _own_scenario(tmp_path / "a")
    scen.write_text(scen.read_text().replace(str(ROOT / "sumo_nets" / "grid6" / "grid6.sumocfg"), "../net/grid6.sumocfg"))
    fp = sweep.fingerprint(cfgmod.load(scen))
    assert set(fp) == {"config", "sumocfg", "net-file:grid6.net.xml", "route-files:grid6.rou.xml", "plugin:plug.py:plug.py"}
    import hashlib
    assert fp["route-files:grid6.rou.xml"] == hashlib.sha1((net / "grid6.rou.xml").read_bytes()).hexdigest()
    # the whole tree moved elsewhere: the same fingerprint (paths are relative to the scenario file)
    shutil.copytree(tmp_path, tmp_path.parent / (tmp_path.name + "-moved"))
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    assert sweep.fingerprint(cfgmod.load(moved / "a" / "mine.toml")) == fp
    # one route changed, one scenario value, one plugin line, the seed (the cell id has it), jobs (same results)
    rou = net / "grid6.rou.xml"
    rou.write_text(rou.read_text().replace('depart="', 'depart="1', 1))
    assert sweep.stale({"fingerprint": fp}, sweep.fingerprint(cfgmod.load(scen))) == ["route-files grid6.rou.xml"]
    scen.write_text(scen.read_text().replace("aoc_tau_s = 120.0", "aoc_tau_s = 60.0"))
    (tmp_path / "a" / "plug.py").write_text("X = 2\n")
    now = sweep.fingerprint(cfgmod.apply_overrides(cfgmod.load(scen), {"scenario.seed": 7, "scenario.jobs": 3}))
    assert sweep.stale({"fingerprint": fp}, now) == ["the configuration", "plugin plug.py:plug.py",
                                                      "route-files grid6.rou.xml"]
    assert sweep.stale({}, now) == ["no fingerprint in its cell.json (made by an older cosim)"]
    # a .py plugin's helper beside it (`import helper` in plug.py): hashed too; one in a subfolder is not
    (tmp_path / "a" / "helper.py").write_text("K = 1\n")
    (tmp_path / "a" / "sub").mkdir()
    (tmp_path / "a" / "sub" / "deep.py").write_text("D = 1\n")
    withhelper = sweep.fingerprint(cfgmod.load(scen))
    assert withhelper["plugin:plug.py:helper.py"] == hashlib.sha1(b"K = 1\n").hexdigest()
    assert {k for k in withhelper if k.startswith("plugin:")} == {"plugin:plug.py:plug.py", "plugin:plug.py:helper.py"}
    (tmp_path / "a" / "helper.py").write_text("K = 2\n")
    assert sweep.stale({"fingerprint": withhelper}, sweep.fingerprint(cfgmod.load(scen))) == ["plugin plug.py:helper.py"]
    (tmp_path / "a" / "helper.py").unlink()
    shutil.rmtree(tmp_path / "a" / "sub")
    # an input file named in scenario.sumo_args (relative to the working folder, as SUMO takes it)
    (tmp_path / "a" / "extra.add.xml").write_text("<additional/>\n")
    args = {"scenario.sumo_args": ["--additional-files", str(tmp_path / "a" / "extra.add.xml")]}
    withadd = sweep.fingerprint(cfgmod.apply_overrides(cfgmod.load(scen), args))
    key = f"sumo_args additional-files:{tmp_path / 'a' / 'extra.add.xml'}"
    assert withadd[key] == hashlib.sha1(b"<additional/>\n").hexdigest()
    (tmp_path / "a" / "extra.add.xml").write_text("<additional></additional>\n")
    assert sweep.stale({"fingerprint": withadd}, sweep.fingerprint(cfgmod.apply_overrides(cfgmod.load(scen), args))) \
        == [key.replace(":", " ", 1)]
    # the one-word form --additional-files=FILE names the same file (SUMO takes both)
    (tmp_path / "a" / "extra.add.xml").write_text("<additional/>\n")
    eq = {"scenario.sumo_args": [f"--additional-files={tmp_path / 'a' / 'extra.add.xml'}"]}
    witheq = sweep.fingerprint(cfgmod.apply_overrides(cfgmod.load(scen), eq))
    assert witheq[key] == hashlib.sha1(b"<additional/>\n").hexdigest()
    (tmp_path / "a" / "extra.add.xml").write_text("<additional></additional>\n")
    assert sweep.stale({"fingerprint": witheq}, sweep.fingerprint(cfgmod.apply_overrides(cfgmod.load(scen), eq))) \
        == [key.replace(":", " ", 1)]


def test_fingerprint_hashes_the_plugin_package_the_cell_imports(tmp_path, monkeypatch):
    """A module plugin is looked up as the cell's run imports it (cosim.registry.find_plugin_module,
    which load_plugins imports from): sys.path as a process starts, then the scenario's folder —
    not whatever sys.modules holds (another scenario's same-named package) and not the scenario's
    folder first."""
    import hashlib

    from cosim import config as cfgmod
    from cosim import registry

    def lab(folder: Path, who: str) -> Path:
        (folder / "fplab").mkdir(parents=True)
        (folder / "fplab" / "__init__.py").write_text(f"WHO = {who!r}\nfrom . import helper\n")
        (folder / "fplab" / "helper.py").write_text(f"H = {who!r}\n")
        return write(folder, f'[scenario]\nsumocfg = "{ROOT / "sumo_nets" / "grid6" / "grid6.sumocfg"}"\n'
                             'plugins = ["fplab"]\n', "q.toml")

    def sha(f: Path) -> str:
        return hashlib.sha1(f.read_bytes()).hexdigest()

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(registry, "_APPENDED", set())
    monkeypatch.setattr(registry, "PLUGINS", {})
    monkeypatch.delitem(sys.modules, "fplab", raising=False)
    monkeypatch.delitem(sys.modules, "fplab.helper", raising=False)
    qa, qb = lab(tmp_path / "a" / "scenarios", "a"), lab(tmp_path / "b" / "scenarios", "b")
    registry.load_plugins(["fplab"], "test", qa.parent)  # as a driver that checked scenario A first
    assert sys.modules["fplab"].WHO == "a"
    fa, fb = sweep.fingerprint(cfgmod.load(qa)), sweep.fingerprint(cfgmod.load(qb))
    assert fa["plugin:fplab:helper.py"] == sha(qa.parent / "fplab" / "helper.py")
    assert fb["plugin:fplab:helper.py"] == sha(qb.parent / "fplab" / "helper.py") != fa["plugin:fplab:helper.py"]
    (qb.parent / "fplab" / "helper.py").write_text("H = 'b, edited'\n")  # B's cell is stale, A's is not
    assert sweep.stale({"fingerprint": fb}, sweep.fingerprint(cfgmod.load(qb))) == ["plugin fplab:helper.py"]
    assert sweep.stale({"fingerprint": fa}, sweep.fingerprint(cfgmod.load(qa))) == []
    # a same-named package in the working folder comes before the scenario's folder (load_plugins
    # appends that at the end): the cell (`python -m cosim.sweep`: the working folder first on its
    # sys.path) imports it, and the fingerprint hashes it even where the driver's own first entry is
    # elsewhere (the `cosim` script's folder)
    for m in ("fplab", "fplab.helper"):
        del sys.modules[m]
    registry.PLUGINS.clear()
    lab(tmp_path / "cwd", "cwd")
    monkeypatch.chdir(tmp_path / "cwd")
    sys.path.insert(0, str(tmp_path / "bin"))  # the driver started as the `cosim` script
    fb = sweep.fingerprint(cfgmod.load(qb))
    assert fb["plugin:fplab:helper.py"] == sha(tmp_path / "cwd" / "fplab" / "helper.py")
    sys.path[0] = str(tmp_path / "cwd")  # the cell, as python -m starts it
    registry.load_plugins(["fplab"], "test", qb.parent)
    assert sys.modules["fplab"].WHO == "cwd" and sys.modules["fplab"].__file__ == str(tmp_path / "cwd" / "fplab" /
                                                                                       "__init__.py")
    for m in ("fplab", "fplab.helper"):
        del sys.modules[m]


@sumo
def test_a_finished_cell_runs_again_when_its_scenario_or_plugin_changed(tmp_path):
    scen = _own_scenario(tmp_path / "lab")
    f = write(tmp_path, f'[sweep]\nname = "fp"\nscenarios = ["lab/mine.toml"]\nseeds = [1]\nend_s = 20\n'
                        '[set]\n"output.coverage" = false\n"scenario.step_length_s" = 0.5\n')
    out = tmp_path / "out"
    (cell,) = sweep.load(f).cells()
    d = out / "cells" / cell.cell_id

    def again() -> tuple[subprocess.CompletedProcess, float]:
        proc = run_cli("sweep", str(f), "--out", str(out), "--jobs", "1")
        assert proc.returncode == 0, proc.stderr
        return proc, json.loads((d / "cell.json").read_text())["started"]

    _, t0 = again()
    (d / "my-notes.txt").write_text("mine")  # a file cosim did not write stays through a re-run
    proc, t = again()  # unchanged: reused
    assert t == t0 and "1/1 cells done (1 earlier)" in proc.stderr and "again" not in proc.stdout
    dry = run_cli("sweep", str(f), "--out", str(out), "--dry-run")
    assert "[finished]" in dry.stdout
    scen.write_text(scen.read_text().replace("aoc_tau_s = 120.0", "aoc_tau_s = 60.0"))
    dry = run_cli("sweep", str(f), "--out", str(out), "--dry-run")
    assert "[stale: the configuration; runs again]" in dry.stdout, dry.stdout
    proc, t1 = again()
    assert t1 > t0 and "1 re-run: inputs changed" in proc.stderr and "the configuration" in proc.stderr
    assert "1 of them again: their inputs changed" in proc.stdout
    assert "aoc_tau_s = 60.0" in (d / "config.toml").read_text()
    (tmp_path / "lab" / "plug.py").write_text("X = 2\n")
    proc, t2 = again()
    assert t2 > t1 and "plugin plug.py:plug.py" in proc.stderr, proc.stderr
    proc, t3 = again()
    assert t3 == t2 and (d / "my-notes.txt").read_text() == "mine"


def test_jobs_follows_one_rule_for_run_and_sweep(tmp_path):
    """--jobs N|auto of `cosim run` and `cosim sweep`: a count >= 1, or auto or 0 (scenario.jobs = 0) = auto."""
    from cosim.cli import build_parser

    ap = build_parser()
    for cmd, target in (("run", str(SCEN)), ("sweep", "s.toml")):
        for text, jobs in (("0", 0), ("auto", 0), ("AUTO", 0), ("3", 3)):
            assert ap.parse_args([cmd, target, "--jobs", text]).jobs == jobs
    f = tiny(tmp_path)
    for cmd, target in (("run", str(SCEN)), ("sweep", str(f))):
        bad = run_cli(cmd, target, "--jobs", "-1", "--out", str(tmp_path / "o"))
        assert bad.returncode == 2 and "expected a number of processes >= 1 or 'auto', not '-1'" in bad.stderr
        helptext = " ".join(run_cli(cmd, "--help").stdout.split())
        assert "--jobs N|auto" in helptext and "auto (or 0," in helptext
    dry = run_cli("sweep", str(f), "--jobs", "0", "--dry-run", "--out", str(tmp_path / "o"))
    assert dry.returncode == 0 and "4 runs;" in dry.stdout, dry.stderr


def test_paired_csv_has_no_core_columns_and_summary_csv_no_mean_of_half_widths(tmp_path):
    """The core rows' numbers (vehicles_seen, max_concurrent_vehicles, wall_s) are no policy's:
    paired.csv has no columns for them; a run's own half-width (vs_baseline.latency_diff_ci95_s)
    is not averaged over seeds in summary.csv (its interval over seeds is latency_diff_s.ci95)."""
    rows = []
    for seed, (a, b, h) in enumerate([(1.0, 1.5, 0.2), (2.0, 2.1, 0.4)], start=1):
        base = {"cell": f"c{seed}", "scenario": "s", "seed": seed}
        rows += [{**base, "layer": "core", "policy": "", "vehicles_seen": 100 + seed, "max_concurrent_vehicles": 50,
                  "wall_s": 3.0},
                 {**base, "layer": "dvit", "policy": "vidi", "lat": a, "vs_baseline.latency_diff_s": 0.0,
                  "vs_baseline.latency_diff_ci95_s": 0.0},
                 {**base, "layer": "dvit", "policy": "mddi", "lat": b, "vs_baseline.latency_diff_s": b - a,
                  "vs_baseline.latency_diff_ci95_s": h}]
    res = pd.DataFrame(rows)
    paired = sweep.paired_differences(res, [])
    assert not [c for c in paired.columns if c.split(".")[0] in ("vehicles_seen", "max_concurrent_vehicles", "wall_s")]
    assert paired.iloc[0]["lat.diff"] == pytest.approx((0.5 + 0.1) / 2)
    summ = sweep.summary_csv(res, [], tmp_path / "s.csv")
    assert not [c for c in summ.columns if c.startswith("vs_baseline.latency_diff_ci95_s")]
    mddi = summ[summ.policy == "mddi"].iloc[0]
    assert mddi["vs_baseline.latency_diff_s.mean"] == pytest.approx(0.3)
    # 12.706 * sd([0.5, 0.1]) / sqrt(2): the interval over seeds
    assert mddi["vs_baseline.latency_diff_s.ci95"] == pytest.approx(12.706 * (0.08 ** 0.5) / 2 ** 0.5, rel=1e-4)
    core = summ[summ.layer == "core"].iloc[0]
    assert core["vehicles_seen.mean"] == 101.5 and core["wall_s.n"] == 2  # the core rows stay in summary.csv


def test_fingerprint_of_a_plugin_module_covers_its_whole_package(tmp_path):
    """plugins = ["my_lab.schedulers"]: every .py file of the package my_lab (a module may import
    its siblings), found where load_plugins finds it (the scenario's folder)."""
    from cosim import config as cfgmod

    (tmp_path / "my_lab" / "sub").mkdir(parents=True)
    for rel, text in (("__init__.py", ""), ("schedulers.py", "X = 1\n"), ("sub/util.py", "Y = 1\n")):
        (tmp_path / "my_lab" / rel).write_text(text)
    scen = write(tmp_path, f'[scenario]\nsumocfg = "{ROOT / "sumo_nets" / "grid6" / "grid6.sumocfg"}"\n'
                           'plugins = ["my_lab.schedulers"]\n', "m.toml")
    fp = sweep.fingerprint(cfgmod.load(scen))
    assert sorted(k for k in fp if k.startswith("plugin:")) == [
        "plugin:my_lab.schedulers:__init__.py", "plugin:my_lab.schedulers:schedulers.py",
        "plugin:my_lab.schedulers:sub/util.py"]
    (tmp_path / "my_lab" / "sub" / "util.py").write_text("Y = 2\n")
    assert sweep.stale({"fingerprint": fp}, sweep.fingerprint(cfgmod.load(scen))) == [
        "plugin my_lab.schedulers:sub/util.py"]


def test_a_layer_block_with_its_own_dropped_key_is_refused_not_overwritten():
    """`dropped` is the sweep tables' column (policies dropped mid-run): a layer whose summary block
    had a key of that name would have lost it silently; now the merge says so in one line."""
    from cosim.errors import CosimError
    from cosim.sweep import _dropped

    assert _dropped({"tasks": 10})["dropped"] == 0
    assert _dropped({"tasks": 10, "error": "it raised"}) == {"tasks": None, "error": "it raised", "dropped": 1}
    with pytest.raises(CosimError, match="key 'dropped'.*reserve"):
        _dropped({"tasks": 10, "dropped": 3})
