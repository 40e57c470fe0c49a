"""SUMO's own outputs belong to the run (cosim.sumo_outputs; issue 27, item 1).

The unit tests plan and convert without SUMO; the ``sumo`` tier runs real SUMO on a grid6
scenario whose sumocfg declares tripinfo, summary and an e1 detector, and checks the tables
against an independent parse of SUMO's XML (xml.etree, not lxml)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from cosim import sumo_outputs as so
from tests.conftest import GRID6_NET, ROOT, run_cli

GRID6_ROU = ROOT / "sumo_nets" / "grid6" / "grid6.rou.xml"
E1_LANE = "A0A1_0"  # a lane of grid6 (183.2 m)


def scenario(folder: Path, outputs: str = "", additional: str | None = None, end_s: float = 120) -> Path:
    """A grid6 sumocfg in ``folder`` declaring ``outputs`` (relative paths, as users write them)
    and, when given, an additional file with ``additional``; and its scenario TOML."""
    folder.mkdir(parents=True, exist_ok=True)
    add = ""
    if additional is not None:
        (folder / "det.add.xml").write_text(f"<additional>\n{additional}\n</additional>\n")
        add = '<additional-files value="det.add.xml"/>'
    (folder / "s.sumocfg").write_text(
        f'<configuration>\n<input><net-file value="{GRID6_NET}"/><route-files value="{GRID6_ROU}"/>{add}</input>\n'
        f'<time><begin value="0"/><end value="3600"/><step-length value="1"/></time>\n'
        f'<output>{outputs}</output>\n</configuration>\n')
    toml = folder / "s.toml"
    toml.write_text(f'[scenario]\nsumocfg = "s.sumocfg"\nend_s = {end_s}\nstep_length_s = 1\n')
    return toml


DECLARED = '<tripinfo-output value="out/tripinfos.xml"/><summary-output value="out/summary.xml"/>'
E1 = f'<e1Detector id="d1" lane="{E1_LANE}" pos="10" period="30" file="out/e1.xml"/>'


# -- planning (no SUMO) --------------------------------------------------------------------------

def test_plan_redirects_options_and_detectors_into_the_results_folder(tmp_path):
    scenario(tmp_path / "scen", DECLARED, E1 + f'\n<inductionLoop id="d2" lane="{E1_LANE}" pos="50" period="30" '
                                            'file="out/e1.xml"/>')
    out = tmp_path / "run"
    p = so.plan(tmp_path / "scen" / "s.sumocfg", out)
    sumo = out / "sumo"
    assert [(o.kind, o.declared, o.path) for o in p.outputs] == [
        ("tripinfo-output", "out/tripinfos.xml", sumo / "tripinfos.xml"),
        ("summary-output", "out/summary.xml", sumo / "summary.xml"),
        ("e1", "out/e1.xml", sumo / "e1.xml"), ("e1", "out/e1.xml", sumo / "e1.xml")]  # one shared file
    copy = sumo / "additional" / "det.add.xml"
    assert p.args == ["--tripinfo-output", str(sumo / "tripinfos.xml"), "--summary-output", str(sumo / "summary.xml"),
                      "--additional-files", str(copy)]
    dets = ET.parse(copy).getroot()
    assert [d.get("file") for d in dets] == [str(sumo / "e1.xml")] * 2
    assert [d.get("lane") for d in dets] == [E1_LANE] * 2  # the rest as written
    assert p.user_args == []


def test_plan_of_a_sumocfg_that_declares_nothing_is_empty_and_writes_nothing(tmp_path):
    scenario(tmp_path / "scen", "", additional=f'<busStop id="b" lane="{E1_LANE}" startPos="1" endPos="20"/>')
    out = tmp_path / "run"
    out.mkdir()
    p = so.plan(tmp_path / "scen" / "s.sumocfg", out, ["--time-to-teleport", "100"])
    assert not p and p.args == [] and p.user_args == ["--time-to-teleport", "100"]
    assert list(out.iterdir()) == []


def test_plan_rewrites_the_users_arguments_in_place(tmp_path):
    scenario(tmp_path / "scen", DECLARED + '<output-prefix value="X_"/>')
    out = tmp_path / "run"
    args = ["--tripinfo-output", "mine/trips.xml", "--statistic-output=stats.xml", "--fcd-output", "f.xml"]
    p = so.plan(tmp_path / "scen" / "s.sumocfg", out, args, cwd=tmp_path, keep=("fcd-output",))
    sumo = out / "sumo"
    # the command line's tripinfo wins over the sumocfg's (SUMO takes it): one tripinfo output
    assert p.user_args == ["--tripinfo-output", str(sumo / "trips.xml"), f"--statistic-output={sumo / 'stats.xml'}",
                           "--fcd-output", str(sumo / "f.xml")]
    assert p.args == ["--summary-output", str(sumo / "summary.xml"), "--output-prefix", ""]
    assert sorted(o.kind for o in p.outputs) == ["fcd-output", "statistic-output", "summary-output", "tripinfo-output"]
    assert p.notes and "output-prefix switched off" in p.notes[0]


def test_plan_keeps_cosims_own_fcd_output_and_names_clashes_apart(tmp_path):
    scenario(tmp_path / "scen", '<fcd-output value="a/x.xml"/><tripinfo-output value="b/x.xml"/>'
                                '<summary-output value="c/x.xml"/>')
    p = so.plan(tmp_path / "scen" / "s.sumocfg", tmp_path / "run", keep=("fcd-output",))
    assert [o.path.name for o in p.outputs] == ["x.xml", "x-2.xml"]  # fcd-output: cosim's --record sets it


def test_plan_follows_includes_and_makes_inputs_absolute(tmp_path):
    scen = tmp_path / "scen"
    scenario(scen, "", additional=f'<include href="inc.xml"/><rerouter id="r" edges="A0A1" file="rr.xml"/>')
    (scen / "inc.xml").write_text(f"<additional>{E1}</additional>")
    p = so.plan(scen / "s.sumocfg", tmp_path / "run")
    adds = tmp_path / "run" / "sumo" / "additional"
    top = ET.parse(adds / "det.add.xml").getroot()
    assert top[0].get("href") == str(adds / "inc.xml") and top[1].get("file") == str(scen / "rr.xml")
    assert ET.parse(adds / "inc.xml").getroot()[0].get("file") == str(tmp_path / "run" / "sumo" / "e1.xml")
    assert [o.declared_in for o in p.outputs] == [str(scen / "inc.xml")]


# -- converting (no SUMO) ------------------------------------------------------------------------

def test_convert_types_ids_as_text_and_a_malformed_file_is_a_warning(tmp_path):
    sumo = tmp_path / "sumo"
    sumo.mkdir()
    (sumo / "t.xml").write_text('<tripinfos><tripinfo id="12" depart="3.00" waitingCount="2" vaporized="">'
                                '<emissions CO2_abs="1.5"/></tripinfo>\n<tripinfo id="x" depart="4.50" '
                                'waitingCount="0" vaporized=""/></tripinfos>')
    (sumo / "s.xml").write_text('<summary><step time="1.00" running="3"/><step time="2.00" runn')  # cut short
    (sumo / "em.xml").write_text('<emission-export><timestep time="0.00"><vehicle id="a" CO2="1.0"/>'
                                 '<vehicle id="b" CO2="2.0"/></timestep><timestep time="1.00">'
                                 '<vehicle id="a" CO2="3.5"/></timestep></emission-export>')
    outs = [so.Output("tripinfo-output", "x", "t.xml", sumo / "t.xml"), so.Output("summary-output", "x", "s.xml", sumo / "s.xml"),
            so.Output("emission-output", "x", "em.xml", sumo / "em.xml"), so.Output("e1", "x", "e.xml", sumo / "e.xml")]
    block, warnings = so.convert(outs, tmp_path)
    trip = pd.read_parquet(tmp_path / "sumo_tripinfo.parquet")
    assert list(trip["id"]) == ["12", "x"] and list(trip["depart"]) == [3.0, 4.5]
    assert list(trip["waitingCount"]) == [2, 0] and trip["emissions_CO2_abs"].iloc[0] == 1.5
    assert pd.isna(trip["emissions_CO2_abs"].iloc[1])
    em = pd.read_parquet(tmp_path / "sumo_emissions.parquet")
    assert em[["time", "id", "CO2"]].values.tolist() == [[0.0, "a", 1.0], [0.0, "b", 2.0], [1.0, "a", 3.5]]
    # SUMO killed mid-file: the rows before the fault are kept, with a warning
    assert pd.read_parquet(tmp_path / "sumo_summary.parquet").values.tolist() == [[1.0, 3]]
    assert not (tmp_path / "sumo_e1.parquet").exists()
    assert len(warnings) == 2
    assert warnings[0].startswith("SUMO output sumo/s.xml is malformed (XMLSyntaxError")
    assert warnings[0].endswith("sumo_summary.parquet holds the 1 rows before the fault")
    assert warnings[1].startswith("SUMO output sumo/e.xml (e1 declared in x): not written by SUMO")
    assert block["tables"] == {"sumo_tripinfo": 2, "sumo_summary": 1, "sumo_emissions": 3}


# -- real SUMO -----------------------------------------------------------------------------------
sumo = pytest.mark.sumo


@sumo
def test_output_options_are_those_of_the_installed_sumo(tmp_path):
    from cosim.sumo_home import sumo_binary

    subprocess.run([sumo_binary("sumo"), "--save-template", str(tmp_path / "t.xml")], check=True, capture_output=True)
    root = ET.parse(tmp_path / "t.xml").getroot()
    files = {e.tag: tuple(e.get("synonymes", "").split()) for e in root.find("output")
             if e.get("type") == "FILE" and not e.tag.endswith("input-file")}
    assert {k: v for k, v in so.OUTPUT_OPTIONS.items() if k in files} == files  # none missing, synonyms alike


def _xml_rows(path: Path, tag: str) -> list[dict[str, str]]:
    return [dict(e.attrib) for e in ET.parse(path).getroot().iter(tag)]


def _same_values(table: pd.DataFrame, rows: list[dict[str, str]]) -> None:
    """Every attribute of every XML row equals the table's cell: numbers as numbers, text as text."""
    assert len(table) == len(rows) > 0
    for i, row in enumerate(rows):
        for k, v in row.items():
            cell = table[k].iloc[i]
            try:
                assert float(cell) == float(v), (i, k, cell, v)
            except ValueError:
                assert cell == v, (i, k, cell, v)


@sumo
def test_a_run_keeps_sumos_outputs_and_their_tables_match_the_xml(tmp_path):
    toml = scenario(tmp_path / "scen", DECLARED, E1)
    runs = []
    for name in ("a", "b"):  # twice, into two folders: nothing shared
        proc = run_cli("run", str(toml), "--no-layers", "--out", str(tmp_path / name), "-q")
        assert proc.returncode == 0, proc.stderr
        runs.append(tmp_path / name)
    assert not (tmp_path / "scen" / "out").exists()  # nothing where the sumocfg points
    for run in runs:
        sumo = run / "sumo"
        assert sorted(p.name for p in sumo.iterdir()) == ["additional", "e1.xml", "summary.xml", "tripinfos.xml"]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["warnings"] == []
        block = summary["sumo_outputs"]
        assert [f["file"] for f in block["files"]] == ["sumo/tripinfos.xml", "sumo/summary.xml", "sumo/e1.xml"]
        trip = _xml_rows(sumo / "tripinfos.xml", "tripinfo")
        steps = _xml_rows(sumo / "summary.xml", "step")
        e1 = _xml_rows(sumo / "e1.xml", "interval")
        assert len(steps) == 120 and len(e1) == 4  # 120 s of 1 s steps; 30 s intervals
        _same_values(pd.read_parquet(run / "sumo_tripinfo.parquet"), trip)
        _same_values(pd.read_parquet(run / "sumo_summary.parquet"), steps)
        _same_values(pd.read_parquet(run / "sumo_e1.parquet"), e1)
        assert block["tables"] == {"sumo_tripinfo": len(trip), "sumo_summary": 120, "sumo_e1": 4}
        # the vehicle ids are the ones cosim's tables hold: joinable
        cov = pd.read_parquet(run / "coverage.parquet")
        assert set(pd.read_parquet(run / "sumo_tripinfo.parquet")["id"]) <= set(cov["vehicle"].astype(str))
    # the same seed: the same traffic, in two files (SUMO's header comment differs: time, paths)
    assert _xml_rows(runs[0] / "sumo" / "tripinfos.xml", "tripinfo") == _xml_rows(runs[1] / "sumo" / "tripinfos.xml", "tripinfo")
    assert (runs[0] / "sumo" / "tripinfos.xml").stat().st_ino != (runs[1] / "sumo" / "tripinfos.xml").stat().st_ino
    assert run_cli("compare", str(runs[0]), str(runs[1])).returncode == 0
    # the outputs are cosim's: listed in the manifest, so --overwrite removes them (and keeps a file of yours)
    from cosim.recorder import read_manifest

    assert {"sumo", "sumo_tripinfo.parquet", "sumo_summary.parquet", "sumo_e1.parquet"} <= set(read_manifest(runs[0]))
    (runs[0] / "mine.txt").write_text("keep")
    again = run_cli("run", str(toml), "--no-layers", "--out", str(runs[0]), "-q", "--overwrite", "--end", "10")
    assert again.returncode == 0, again.stderr
    assert (runs[0] / "mine.txt").read_text() == "keep"
    assert len(pd.read_parquet(runs[0] / "sumo_summary.parquet")) == 10  # the new run's, not the old one's


@sumo
def test_nothing_is_written_when_nothing_is_declared(tmp_path):
    toml = scenario(tmp_path / "scen", "", end_s=30)
    proc = run_cli("run", str(toml), "--no-layers", "--out", str(tmp_path / "r"), "-q")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "r" / "sumo").exists() and not list((tmp_path / "r").glob("sumo_*"))
    assert "sumo_outputs" not in json.loads((tmp_path / "r" / "summary.json").read_text())


@sumo
def test_a_parallel_sweep_gives_every_cell_its_own_well_formed_outputs(tmp_path):
    toml = scenario(tmp_path / "scen", DECLARED, E1, end_s=90)
    sw = tmp_path / "sweep.toml"
    sw.write_text(f'[sweep]\nname = "outs"\nscenarios = ["{toml}"]\nseeds = [1, 2]\n')
    proc = run_cli("sweep", str(sw), "--out", str(tmp_path / "sw"), "--jobs", "2", "-q")
    assert proc.returncode == 0, proc.stderr
    cells = sorted((tmp_path / "sw" / "cells").iterdir())
    assert len(cells) == 2
    trips = []
    for cell in cells:
        for name, tag in (("tripinfos.xml", "tripinfo"), ("summary.xml", "step"), ("e1.xml", "interval")):
            rows = _xml_rows(cell / "sumo" / name, tag)  # parses: well-formed
            assert rows
        trips.append(_xml_rows(cell / "sumo" / "tripinfos.xml", "tripinfo"))
        assert (cell / "sumo_tripinfo.parquet").exists()
    assert trips[0] != trips[1]  # two seeds, two files
    assert not (tmp_path / "scen" / "out").exists()


ATTACH = """
import sys, libsumo, cosim.runner as runner
from cosim.sumo_outputs import collect
libsumo.start(["sumo", "-c", sys.argv[1], "--end", "60"])
listener = runner.attach(libsumo, out_dir=sys.argv[2], jobs=1)
for t in range(60):
    libsumo.simulationStep()
listener.close()  # the run's results: SUMO still runs, its outputs are listed
libsumo.close()   # now they are complete
print(collect(sys.argv[2])["tables"])
"""


@sumo
def test_attach_lists_the_outputs_of_your_sumo_and_collect_converts_them(tmp_path):
    scen = tmp_path / "scen"
    scenario(scen, DECLARED, E1)
    (scen / "out").mkdir()  # your SUMO writes where its sumocfg says (the folder must exist)
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", ATTACH, str(scen / "s.sumocfg"), str(run)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    block = summary["sumo_outputs"]
    assert block["redirected"] is False and block["collected"] is True
    files = {f["output"]: (f["declared"], f["file"]) for f in block["files"]}
    assert files == {k: (str(scen / "out" / n), f"sumo/{n}") for k, n in
                     (("tripinfo-output", "tripinfos.xml"), ("summary-output", "summary.xml"), ("e1", "e1.xml"))}
    _same_values(pd.read_parquet(run / "sumo_summary.parquet"), _xml_rows(scen / "out" / "summary.xml", "step"))
    _same_values(pd.read_parquet(run / "sumo_e1.parquet"), _xml_rows(scen / "out" / "e1.xml", "interval"))
    assert len(pd.read_parquet(run / "sumo_summary.parquet")) == 60


def test_the_fast_path_reads_what_the_general_one_reads(tmp_path):
    """pyarrow's CSV reader over lxml's values (uniform rows) against pandas over row dicts."""
    f = tmp_path / "t.xml"
    f.write_text('<tripinfos><tripinfo id="007" depart="3.00" waitingCount="2" vType="1" vaporized="" x="1e3"/>'
                 '<tripinfo id="b" depart="-1.5" waitingCount="0" vType="car" vaporized="" x="nan"/></tripinfos>')
    fast, error = so._read_table(f, "tripinfo", None)
    assert error is None and fast.num_rows == 2
    fast = fast.to_pandas()
    slow = so._frame(so._rows(f, "tripinfo", None)[0]).to_pandas()
    pd.testing.assert_frame_equal(fast, slow, check_dtype=False)
    assert list(fast["id"]) == ["007", "b"] and list(fast["vType"]) == ["1", "car"]  # ids stay text
    assert fast["waitingCount"].dtype == "int64" and fast["x"].iloc[0] == 1000.0 and pd.isna(fast["x"].iloc[1])


def _before_the_fault(path: Path, tag: str) -> list[dict[str, str]]:
    """The ``tag`` rows of a file cut short, with expat (not lxml): every element that ended
    before the parse error."""
    parser = ET.XMLPullParser(events=("end",))
    rows = []
    try:
        parser.feed(path.read_bytes())
        parser.close()
    except ET.ParseError:
        pass
    try:
        for _, el in parser.read_events():
            if el.tag == tag:
                rows.append(dict(el.attrib))
    except ET.ParseError:
        pass
    return rows


@sumo
def test_sumo_killed_mid_run_keeps_the_rows_before_the_fault(tmp_path):
    import signal
    import time

    toml = scenario(tmp_path / "scen", DECLARED, end_s=3600)
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "cosim", "run", str(toml), "--no-layers", "--backend", "traci",
                             "--out", str(out), "-q"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    trips = out / "sumo" / "tripinfos.xml"
    deadline = time.monotonic() + 120
    while not (trips.is_file() and trips.stat().st_size > 30_000) and time.monotonic() < deadline:
        time.sleep(0.02)
    sumo = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                           text=True).stdout.split()]
    assert sumo, "SUMO not found"
    os.kill(sumo[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "sumo-died"
    expected = _before_the_fault(trips, "tripinfo")
    table = pd.read_parquet(out / "sumo_tripinfo.parquet")
    _same_values(table, expected)
    assert summary["sumo_outputs"]["tables"]["sumo_tripinfo"] == len(expected)
    assert any(w.startswith("SUMO output sumo/tripinfos.xml is malformed") and
               w.endswith(f"holds the {len(expected)} rows before the fault") for w in summary["warnings"])
