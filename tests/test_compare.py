"""cosim.compare / `cosim compare`: results folders built by hand, each difference worked out by hand."""

import json

import numpy as np
import pytest

from cosim.compare import MEASURED, compare, differences
from cosim.errors import CosimError
from cosim.recorder import Coded, Lists, TableWriter

from .conftest import GRID6_TOML, run_cli

NAN = float("nan")
VEHICLES = ["veh0", "veh1", "veh2"]


def tasks(**change):
    """A small DViT-like task table: floats with NaN, a categorical column, a list column, a timing."""
    cols = {
        "task": np.array([0, 1, 2, 3]),
        "vehicle": Coded(np.array([2, 0, -1, 1]), VEHICLES),
        "latency_s": np.array([0.25, NAN, 0.5, 1.5]),
        "steps_s": Lists([[0.1, 0.2], [], [0.3, NAN], [1.0]]),
        "solve_ms": np.array([1.0, 2.0, 3.0, 4.0]),
    }
    cols.update(change)
    return cols


SUMMARY = {"scenario": "hand", "seed": 42, "slots": 4, "out_dir": "/somewhere", "plugins": {},
           "wall_s": {"total": 1.0}, "cpu_s": {"plugin_process": 0.5},
           "layers": {"moe": {"gecpa": {"mean_latency_s": 1.0, "mean_solve_ms": 3.5, "nash_gap": None}}}}


def make_run(path, tables=None, summary=None, flush=2):
    """A results folder as `cosim run` writes it: part-folder tables and summary.json."""
    path.mkdir(parents=True)
    for name, cols in (tables if tables is not None else {"dvit_tasks": tasks()}).items():
        w = TableWriter(path / f"{name}.parquet", flush_batches=flush)
        for i in range(len(_cells(next(iter(cols.values()))))):  # one row per append: several part files when n > flush
            w.append({k: _row(v, i) for k, v in cols.items()})
        w.close()
    (path / "summary.json").write_text(json.dumps(summary if summary is not None else SUMMARY))
    return path


def _cells(col):
    return col.codes if isinstance(col, Coded) else col.values if isinstance(col, Lists) else col


def _row(col, i):
    if isinstance(col, Coded):
        return Coded(col.codes[i:i + 1], col.names)
    if isinstance(col, Lists):
        return Lists(col.values[i:i + 1], col.item)
    return col[i:i + 1]


def test_identical_folders_are_the_same(tmp_path):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b", flush=3)  # other part files, same table
    assert len(list((a / "dvit_tasks.parquet").glob("part-*"))) == 2
    assert differences(a, b) == [] and differences(a, b, ignore_order=True) == []


def test_a_changed_float_names_table_row_column_and_both_values(tmp_path):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", {"dvit_tasks": tasks(latency_s=np.array([0.25, NAN, 0.5 + 2**-53 * 2, 1.5]))})
    assert differences(a, b) == ["dvit_tasks.parquet: row 2, column latency_s: 0.5 vs 0.5000000000000002 "
                                 "(1 of 4 rows differ, in latency_s)"]


def test_first_differing_row_and_every_differing_column_counted(tmp_path):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", {"dvit_tasks": tasks(task=np.array([0, 1, 2, 7]),
                                                      vehicle=Coded(np.array([2, 1, -1, 1]), VEHICLES))})
    # row 1 differs in vehicle only, row 3 in task only: the first row shown, both columns named
    assert differences(a, b) == ["dvit_tasks.parquet: row 1, column vehicle: 'veh0' vs 'veh1' "
                                 "(2 of 4 rows differ, in task, vehicle)"]


def test_nan_equals_nan_and_null_but_not_a_number(tmp_path):
    a = make_run(tmp_path / "a")
    assert differences(a, make_run(tmp_path / "b")) == []  # NaN in a float column, in a list, a null category
    c = make_run(tmp_path / "c", {"dvit_tasks": tasks(latency_s=np.array([0.25, 0.0, 0.5, 1.5]))})
    assert differences(a, c) == ["dvit_tasks.parquet: row 1, column latency_s: nan vs 0.0 (1 of 4 rows differ, in latency_s)"]
    d = make_run(tmp_path / "d", {"dvit_tasks": tasks(vehicle=Coded(np.array([2, 0, 0, 1]), VEHICLES))})
    assert differences(a, d) == ["dvit_tasks.parquet: row 2, column vehicle: nan vs 'veh0' (1 of 4 rows differ, in vehicle)"]


def test_a_changed_list_cell(tmp_path):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", {"dvit_tasks": tasks(steps_s=Lists([[0.1, 0.2], [], [0.3, 0.0], [1.0]]))})
    assert differences(a, b) == ["dvit_tasks.parquet: row 2, column steps_s: [0.3, nan] vs [0.3, 0.0] "
                                 "(1 of 4 rows differ, in steps_s)"]
    c = make_run(tmp_path / "c", {"dvit_tasks": tasks(steps_s=Lists([[0.1, 0.2], [], [0.3, NAN], [1.0, 1.0]]))})
    assert differences(a, c) == ["dvit_tasks.parquet: row 3, column steps_s: [1.0] vs [1.0, 1.0] "
                                 "(1 of 4 rows differ, in steps_s)"]


def test_a_missing_table_and_changed_shapes(tmp_path):
    a = make_run(tmp_path / "a", {"dvit_tasks": tasks(), "rsus": {"slot": np.array([0, 1, 2])}})
    b = make_run(tmp_path / "b")
    assert differences(a, b) == ["rsus.parquet: a table of 3 rows vs (absent)"]
    assert differences(b, a) == ["rsus.parquet: (absent) vs a table of 3 rows"]
    fewer = {k: v for k, v in tasks().items() if k != "steps_s"}
    c = make_run(tmp_path / "c", {"dvit_tasks": {"latency_s": fewer.pop("latency_s"), **fewer}})
    assert differences(b, c) == ["dvit_tasks.parquet: columns task, vehicle, latency_s, steps_s vs "
                                 "latency_s, task, vehicle"]  # solve_ms: measured, not listed
    d = make_run(tmp_path / "d", {"dvit_tasks": {k: _row(v, 0) for k, v in tasks().items()}})
    assert differences(b, d) == ["dvit_tasks.parquet: 4 rows vs 1 rows"]
    e = make_run(tmp_path / "e", {"dvit_tasks": tasks(task=np.array([0.0, 1.0, 2.0, 3.0]))})
    assert differences(b, e) == ["dvit_tasks.parquet: column types differ: task int64 vs float64"]


def test_measured_columns_and_keys_are_left_out(tmp_path):
    assert MEASURED == {"wall_s", "cpu_s", "out_dir", "plugins", "solve_ms", "mean_solve_ms"}
    a = make_run(tmp_path / "a")
    timed = json.loads(json.dumps(SUMMARY))
    timed.update(out_dir="/elsewhere", plugins={"cosim-example": "0.1"}, wall_s={"total": 9.0}, cpu_s=None)
    timed["layers"]["moe"]["gecpa"]["mean_solve_ms"] = 99.0
    b = make_run(tmp_path / "b", {"dvit_tasks": tasks(solve_ms=np.array([9.0, 9.0, 9.0, 9.0]))}, timed)
    assert differences(a, b) == []
    timed["layers"]["moe"]["gecpa"].update(mean_latency_s=2.0, nash_gap=0.0)
    timed["slots"] = 5
    del timed["seed"]
    timed["status"] = "completed"
    c = make_run(tmp_path / "c", summary=timed)
    assert differences(a, c) == ["summary.json: seed: 42 vs (absent)", "summary.json: slots: 4 vs 5",
                                 "summary.json: layers.moe.gecpa.mean_latency_s: 1.0 vs 2.0",
                                 "summary.json: layers.moe.gecpa.nash_gap: None vs 0.0",
                                 "summary.json: status: (absent) vs 'completed'"]


def test_summary_lists_compare_item_by_item(tmp_path):
    rsus = [{"id": "rsu0", "x": 1.5}, {"id": "rsu1", "x": 2.5}]
    a = make_run(tmp_path / "a", summary={"rsus": rsus, "warnings": []})
    b = make_run(tmp_path / "b", summary={"rsus": [rsus[0], {"id": "rsu1", "x": 2.0}], "warnings": ["w"]})
    assert differences(a, b) == ["summary.json: rsus[1].x: 2.5 vs 2.0", "summary.json: warnings: [] vs ['w']"]
    c = make_run(tmp_path / "c", summary={"rsus": rsus, "warnings": [], "slots": True})
    d = make_run(tmp_path / "d", summary={"rsus": rsus, "warnings": [], "slots": 1})
    assert differences(c, d) == ["summary.json: slots: True vs 1"]  # JSON true is not the number 1


def test_reordered_rows_differ_unless_order_is_ignored(tmp_path):
    a = make_run(tmp_path / "a")
    perm = [3, 1, 0, 2]
    cols = tasks()
    shuffled = {k: (Coded(v.codes[perm], v.names) if isinstance(v, Coded) else
                    Lists([v.values[i] for i in perm]) if isinstance(v, Lists) else v[perm]) for k, v in cols.items()}
    b = make_run(tmp_path / "b", {"dvit_tasks": shuffled})
    assert differences(a, b) == ["dvit_tasks.parquet: row 0, column task: 0 vs 3 "  # row 1 stayed in place
                                 "(3 of 4 rows differ, in task, vehicle, latency_s, steps_s)"]
    assert differences(a, b, ignore_order=True) == []
    # the same rows in another order but one row twice: not the same multiset
    dup = {k: (Coded(v.codes[[3, 1, 1, 2]], v.names) if isinstance(v, Coded) else
               Lists([v.values[i] for i in [3, 1, 1, 2]]) if isinstance(v, Lists) else v[[3, 1, 1, 2]])
           for k, v in cols.items()}
    c = make_run(tmp_path / "c", {"dvit_tasks": dup})
    # sorted by task: a's rows 0, 1, 2, 3 against c's 1, 1, 2, 3: sorted row 0 differs first
    assert differences(a, c, ignore_order=True) == ["dvit_tasks.parquet: row 0 (sorted), column task: 0 vs 1 "
                                                    "(1 of 4 rows differ, in task, vehicle, latency_s, steps_s)"]


def test_ignore_order_sorts_by_every_column_nan_and_lists_too(tmp_path):
    """Rows equal in the first columns are ordered by the later ones: NaN, categories, lists."""
    cols = {"slot": np.array([1, 1, 1, 1, 0]), "x": np.array([NAN, 2.0, 2.0, -0.0, 5.0]),
            "vehicle": Coded(np.array([0, 1, 0, -1, 2]), VEHICLES),
            "steps": Lists([[1.0], [2.0, NAN], [2.0], [], [0.5]])}
    a = make_run(tmp_path / "a", {"t": cols})
    rev = {k: (Coded(v.codes[::-1], v.names) if isinstance(v, Coded) else Lists(v.values[::-1])
               if isinstance(v, Lists) else v[::-1].copy()) for k, v in cols.items()}
    rev["x"][1] = 0.0  # -0.0 in a, 0.0 here: equal numbers
    b = make_run(tmp_path / "b", {"t": rev})
    assert differences(a, b, ignore_order=True) == []
    rev["steps"].values[3] = [2.0, 2.0]  # a's row 1 (x 2.0, veh1, [2.0, nan]) now differs
    c = make_run(tmp_path / "c", {"t": rev})
    # sorted by slot, x, vehicle: a's rows 4, 3 (-0.0), 2 (2.0, veh0), 1 (2.0, veh1), 0 (NaN last)
    assert differences(a, c, ignore_order=True) == ["t.parquet: row 3 (sorted), column steps: [2.0, nan] vs [2.0, 2.0] "
                                                    "(1 of 5 rows differ, in steps)"]


def test_csv_tables_compare_as_text(tmp_path):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")
    (a / "trace.csv").write_text("time_s,ids,x\n0.0,v0,1.5\n1.0,v0,\n")
    (b / "trace.csv").write_text("time_s,ids,x\n0.0,v0,1.5\n1.0,v0,\n")
    assert differences(a, b) == []
    (b / "trace.csv").write_text("time_s,ids,x\n0.0,v0,1.50\n1.0,v0,\n")  # the same number, other text
    assert differences(a, b) == ["trace.csv: row 0, column x: '1.5' vs '1.50' (1 of 2 rows differ, in x)"]


def test_bad_input_is_one_line_naming_the_folder(tmp_path):
    a = make_run(tmp_path / "a")
    with pytest.raises(CosimError, match=f"^{tmp_path / 'nope'}: no such results folder$"):
        differences(a, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CosimError, match=r"empty: not a results folder \(no summary.json"):
        differences(tmp_path / "empty", a)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text('{"slots": ')
    with pytest.raises(CosimError, match=r"broken/summary.json: broken JSON at line 1: Expecting value$"):
        differences(a, tmp_path / "broken")
    b = make_run(tmp_path / "b")
    (b / "moe_tasks.parquet").write_bytes(b"PAR1 cut short")
    with pytest.raises(CosimError, match=r"b/moe_tasks.parquet: cannot read the table \("):
        differences(a, b)


def test_cli_exit_codes(tmp_path):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")
    c = make_run(tmp_path / "c", {"dvit_tasks": tasks(), "rsus": {"slot": np.array([0, 1])}})
    same = run_cli("compare", str(a), str(b))
    assert (same.returncode, same.stdout, same.stderr) == (0, "same: 1 tables, summary\n", "")
    diff = run_cli("compare", str(a), str(c))
    assert (diff.returncode, diff.stdout) == (1, "rsus.parquet: (absent) vs a table of 2 rows\n")
    bad = run_cli("compare", str(a), str(tmp_path / "nope"), "--ignore-order")
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == f"cosim: error: {tmp_path / 'nope'}: no such results folder\n"


def test_provenance_is_reported_not_a_different_result_unless_strict(tmp_path):
    a = make_run(tmp_path / "a", summary={**SUMMARY, "versions": {"sumo": "SUMO 1.28.0", "numpy": "2.4"},
                                          "scenario_file": "/x/s.toml"})
    b = make_run(tmp_path / "b", summary={**SUMMARY, "versions": {"sumo": "replay", "numpy": "2.4"},
                                          "scenario_file": "s.toml"})
    c = compare(a, b)
    assert c.results == []
    assert c.provenance == ["summary.json: versions.sumo: 'SUMO 1.28.0' vs 'replay'",
                            "summary.json: scenario_file: '/x/s.toml' vs 's.toml'"]
    assert differences(a, b) == [] and differences(a, b, strict=True) == c.provenance
    same = run_cli("compare", str(a), str(b))
    assert same.returncode == 0 and same.stdout == ("same: 1 tables, summary (provenance differs: versions.sumo: "
                                                    "'SUMO 1.28.0' vs 'replay'; scenario_file: '/x/s.toml' vs 's.toml')\n")
    strict = run_cli("compare", str(a), str(b), "--strict")
    assert strict.returncode == 1 and strict.stdout.splitlines() == c.provenance


def test_ignore_a_table_a_column_and_a_summary_subtree(tmp_path):
    a = make_run(tmp_path / "a", {"dvit_tasks": tasks(), "rsus": {"slot": np.array([0, 1])}})
    changed = {**SUMMARY, "seed": 7, "layers": {"moe": {"gecpa": {"mean_latency_s": 2.0, "nash_gap": None}}}}
    b = make_run(tmp_path / "b", {"dvit_tasks": tasks(latency_s=np.array([0.25, NAN, 0.5, 9.0])),
                                  "rsus": {"slot": np.array([0, 2])}}, changed)
    assert len(differences(a, b)) == 4  # dvit_tasks, rsus, seed, the MoE block
    assert differences(a, b, ignore=("latency_s", "rsus.parquet", "layers.moe", "seed")) == []
    assert differences(a, b, ignore=("rsus", "layers.moe.gecpa.mean_latency_s")) == [
        "dvit_tasks.parquet: row 3, column latency_s: 1.5 vs 9.0 (1 of 4 rows differ, in latency_s)",
        "summary.json: seed: 42 vs 7"]
    cli = run_cli("compare", str(a), str(b), "--ignore", "latency_s", "--ignore", "rsus", "--ignore", "layers",
                  "--ignore", "seed")
    assert cli.returncode == 0, cli.stdout


@pytest.mark.sumo
def test_two_real_runs_are_the_same_and_another_seed_is_not(tmp_path):
    outs = {}
    for name, seed in (("a", "42"), ("b", "42"), ("s7", "7")):
        proc = run_cli("run", str(GRID6_TOML), "--end", "20", "--seed", seed, "--out", str(tmp_path / name), "-q")
        assert proc.returncode == 0, proc.stderr
        outs[name] = tmp_path / name
    assert differences(outs["a"], outs["b"]) == []
    other = differences(outs["a"], outs["s7"])
    assert any(line.startswith("coverage.parquet: ") for line in other)
    assert "summary.json: seed: 42 vs 7" in other


def test_rtol_lets_floats_differ_within_it_and_says_so(tmp_path):
    """--rtol R: floats equal when |a - b| <= R max(|a|, |b|), counted with the largest relative
    difference; integers, categories, NaN against a number and larger differences stay different."""
    a = make_run(tmp_path / "a")
    # 0.5 -> 0.5 (1 + 1e-10): relative 1e-10; 1.5 -> 1.5 + 3e-12: relative 2e-12; a list element 0.3 (1 + 5e-11)
    b = make_run(tmp_path / "b", {"dvit_tasks": tasks(latency_s=np.array([0.25, NAN, 0.5 * (1 + 1e-10), 1.5 + 3e-12]),
                                                      steps_s=Lists([[0.1, 0.2], [], [0.3 * (1 + 5e-11), NAN], [1.0]]))},
                 summary={**SUMMARY, "layers": {"moe": {"gecpa": {"mean_latency_s": 1.0 + 4e-10, "mean_solve_ms": 3.5,
                                                                  "nash_gap": None}}}})
    assert differences(a, b) == [  # exact: one line for the table (both columns), one for the summary key
        "dvit_tasks.parquet: row 2, column latency_s: 0.5 vs 0.50000000005 (2 of 4 rows differ, in latency_s, steps_s)",
        "summary.json: layers.moe.gecpa.mean_latency_s: 1.0 vs 1.0000000004"]
    c = compare(a, b, rtol=1e-9)
    assert c.results == []
    assert c.tolerated == [
        "dvit_tasks.parquet: 3 float values differ within rtol 1e-09 (largest relative difference 1e-10; "
        "in latency_s, steps_s)",
        "summary.json: 1 float values differ within rtol 1e-09 (largest relative difference 4e-10; "
        "in layers.moe.gecpa.mean_latency_s)"]
    # a tolerance smaller than a difference: that one stays different (the table line names latency_s only)
    assert differences(a, b, rtol=2e-10) == ["summary.json: layers.moe.gecpa.mean_latency_s: 1.0 vs 1.0000000004"]
    assert differences(a, b, rtol=7e-11) == [
        "dvit_tasks.parquet: row 2, column latency_s: 0.5 vs 0.50000000005 (1 of 4 rows differ, in latency_s)",
        "summary.json: layers.moe.gecpa.mean_latency_s: 1.0 vs 1.0000000004"]
    # integers, categories and NaN against a number are exact whatever rtol
    d = make_run(tmp_path / "d", {"dvit_tasks": tasks(task=np.array([0, 1, 2, 4]), latency_s=np.array([0.25, 0.0, 0.5, 1.5]),
                                                      vehicle=Coded(np.array([2, 0, -1, 2]), VEHICLES))})
    assert differences(a, d, rtol=0.5) == ["dvit_tasks.parquet: row 1, column latency_s: nan vs 0.0 "
                                           "(2 of 4 rows differ, in task, vehicle, latency_s)"]
    out = run_cli("compare", str(a), str(b), "--rtol", "1e-9")
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == "same within --rtol 1e-09: 1 tables, summary"
    assert out.stdout.splitlines()[0].startswith("within --rtol: dvit_tasks.parquet: 3 float values")
    assert run_cli("compare", str(a), str(b)).returncode == 1
    bad = run_cli("compare", str(a), str(b), "--rtol", "-1")
    assert (bad.returncode, bad.stderr) == (2, "cosim: error: --rtol -1: expected a finite number >= 0\n")


@pytest.mark.sumo
def test_a_run_of_a_results_folders_config_toml_compares_same(tmp_path):
    """config.toml says `cosim run config.toml` re-runs it: the re-run is the same run, named as
    the first (config.toml holds the resolved scenario name, not "" that would name it "config")."""
    scen = tmp_path / "mine.toml"
    scen.write_text(GRID6_TOML.read_text().replace('sumocfg = "', f'sumocfg = "{GRID6_TOML.parent}/'))
    first = run_cli("run", str(scen), "--end", "20", "--out", str(tmp_path / "a"), "-q", "--no-coverage")
    assert first.returncode == 0, first.stderr
    again = run_cli("run", str(tmp_path / "a" / "config.toml"), "--out", str(tmp_path / "b"), "-q")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["scenario"] == "mine"
    same = run_cli("compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert same.returncode == 0 and same.stdout.startswith("same: "), same.stdout


def test_an_ignore_that_matches_nothing_is_warned_about(tmp_path):
    a = make_run(tmp_path / "a", {"dvit_tasks": tasks(), "rsus": {"slot": np.array([0, 1])}})
    b = make_run(tmp_path / "b", {"dvit_tasks": tasks(), "rsus": {"slot": np.array([0, 1])}})
    used = ("rsus", "coverage.parquet", "latency_s", "layers.moe.gecpa", "seed", "wall_s")
    c = compare(a, b, ignore=(*used, "nosuchkey", "layers.moe.nope", "latency"))
    # coverage.parquet: in neither folder; wall_s: measured, left out anyway
    assert c.unmatched == ["coverage.parquet", "nosuchkey", "layers.moe.nope", "latency"]
    cli = run_cli("compare", str(a), str(b), "--ignore", "nosuchkey", "--ignore", "seed")
    assert cli.returncode == 0 and cli.stdout == "same: 2 tables, summary\n"
    assert cli.stderr == ("cosim: warning: --ignore nosuchkey: no table, column or summary.json key of either folder "
                          "is called that (left nothing out)\n")


@pytest.mark.parametrize("argv, code", [(["compare", "A", "B"], 141), (["compare", "--help"], 0)])
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path, argv, code):
    """`cosim compare A B | head -1`: the reader closes the pipe before cosim writes; cosim ends
    with 141 (128 + SIGPIPE) and no BrokenPipeError traceback or 'Exception ignored' line (--help:
    argparse itself ignores a failed write of the help and exits 0)."""
    import os
    import subprocess
    import sys

    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")
    argv = [str(a) if x == "A" else str(b) if x == "B" else x for x in argv]
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first line is written
    proc = subprocess.run([sys.executable, "-m", "cosim", *argv], stdout=w, stderr=subprocess.PIPE, text=True,
                          timeout=120)
    os.close(w)
    assert (proc.returncode, proc.stderr) == (code, "")
