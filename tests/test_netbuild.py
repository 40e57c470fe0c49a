"""cosim netgen / import-osm build networks that cosim runs as they are."""

import json
from pathlib import Path

import pytest

from .conftest import ROOT, run_cli

pytestmark = pytest.mark.sumo
OSM = ROOT / "sumo_nets" / "osm" / "bad_hersfeld_centre.osm.xml.gz"


def run_built(tmp_path: Path, name: str) -> dict:
    proc = run_cli("run", str(tmp_path / "scenarios" / f"{name}.toml"), "--end", "30", "--out", str(tmp_path / "r"),
                   "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp_path / "r" / "summary.json").read_text())


@pytest.mark.parametrize("kind", ["grid", "spider", "random"])
def test_netgen_scenarios_run(tmp_path, kind):
    proc = run_cli("netgen", kind, "--name", f"n{kind}", "--size", "4", "--length", "150", "--period", "1",
                   "--end", "300", "--root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "sumo_nets" / f"n{kind}" / f"n{kind}.net.xml").is_file()
    # --end: the last departure, the sumocfg's <end> and (below 600 s) the scenario's end_s, as --help says
    assert '<end value="300"/>' in (tmp_path / "sumo_nets" / f"n{kind}" / f"n{kind}.sumocfg").read_text()
    assert "\nend_s = 300\n" in (tmp_path / "scenarios" / f"n{kind}.toml").read_text()
    s = run_built(tmp_path, f"n{kind}")
    assert s["slots"] == 30 and s["vehicles_seen"] > 5 and len(s["rsus"]) >= 1


def test_import_osm_shipped_extract(tmp_path):
    proc = run_cli("import-osm", str(OSM), "--name", "bh", "--end", "300", "--polygons", "--root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "sumo_nets" / "bh" / "bh.poly.xml").is_file()
    scen = (tmp_path / "scenarios" / "bh.toml").read_text()
    assert "OpenStreetMap contributors" in scen
    s = run_built(tmp_path, "bh")
    assert s["slots"] == 30 and s["vehicles_seen"] > 5


def test_osm_without_roads_is_one_line(tmp_path):
    osm = tmp_path / "no_roads.osm"
    osm.write_text('<?xml version="1.0"?>\n<osm version="0.6">\n'
                   '<node id="1" lat="50.0" lon="9.0"/><node id="2" lat="50.001" lon="9.0"/>'
                   '<node id="3" lat="50.001" lon="9.001"/>\n'
                   '<way id="10"><nd ref="1"/><nd ref="2"/><nd ref="3"/><nd ref="1"/><tag k="building" v="yes"/></way>\n'
                   "</osm>\n")
    proc = run_cli("import-osm", str(osm), "--name", "empty", "--root", str(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cosim: error: ") and "no_roads.osm" in lines[0], proc.stderr


@pytest.mark.parametrize("args, expect", [
    (["netgen", "grid", "--name", "a b"], "--name 'a b'"),
    (["netgen", "grid", "--name", "x", "--size", "1"], "--size >= 2"),
    (["import-osm", "missing.osm", "--name", "x"], "missing.osm: no such OSM file"),
])
def test_bad_arguments(tmp_path, args, expect):
    proc = run_cli(*args, "--root", str(tmp_path))
    assert proc.returncode == 2 and expect in proc.stderr and "Traceback" not in proc.stderr
