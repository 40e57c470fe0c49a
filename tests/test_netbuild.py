"""cosim netgen / import-osm build networks that cosim runs as they are."""

import json
from pathlib import Path

import pytest

from .conftest import ROOT, run_cli, says

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
    proc = run_cli("import-osm", str(osm), "--name", "empty", "--root", str(tmp_path / "bad"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cosim: error: ") and "no_roads.osm" in lines[0], proc.stderr
    assert not (tmp_path / "bad").exists()  # the folders the failed call made are gone again


@pytest.mark.parametrize("args, expect", [
    (["netgen", "grid", "--name", "a b"], "--name 'a b'"),
    (["netgen", "grid", "--name", "x", "--size", "1"], "--size >= 2"),
    (["import-osm", "missing.osm", "--name", "x"], "missing.osm: no such OSM file"),
])
def test_bad_arguments(tmp_path, args, expect):
    proc = run_cli(*args, "--root", str(tmp_path))
    assert proc.returncode == 2 and expect in proc.stderr and "Traceback" not in proc.stderr


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes) and every folder (-> None)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_netgen_refuses_to_replace_a_build_and_overwrite_replaces_only_its_files(tmp_path):
    args = ("netgen", "grid", "--name", "g3", "--size", "3", "--length", "150", "--period", "2", "--end", "60",
            "--root", str(tmp_path))
    assert run_cli(*args).returncode == 0
    scen, net_dir = tmp_path / "scenarios" / "g3.toml", tmp_path / "sumo_nets" / "g3"
    first = tree(tmp_path)
    assert sorted(first) == ["scenarios", "scenarios/g3.toml", "sumo_nets", "sumo_nets/g3", "sumo_nets/g3/g3.net.xml",
                             "sumo_nets/g3/g3.rou.xml", "sumo_nets/g3/g3.sumocfg"]  # no trips, no scratch folder
    scen.write_text(scen.read_text().replace("radius_m = 500.0", "radius_m = 321.0"))  # the user's edit
    (net_dir / "notes.txt").write_text("mine")  # a file cosim never wrote
    (net_dir / "g3.rou.alt.xml").write_text("mine too")  # named like duarouter's alternatives
    edited = tree(tmp_path)
    proc = run_cli(*args, "--seed", "7")
    assert proc.returncode == 2 and tree(tmp_path) == edited, proc.stderr  # refused: nothing touched
    assert says(proc.stderr, "cosim: error: --name g3: ", str(net_dir / "g3.net.xml"), " exists", "3 more",
                "--overwrite"), proc.stderr
    proc = run_cli(*args, "--seed", "7", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    now = tree(tmp_path)
    assert sorted(now) == sorted(edited)  # the same files: nothing removed, nothing left over
    assert now["sumo_nets/g3/notes.txt"] == b"mine" and now["sumo_nets/g3/g3.rou.alt.xml"] == b"mine too"
    assert b"radius_m = 500.0" in now["scenarios/g3.toml"] and b"seed = 7" in now["scenarios/g3.toml"]
    assert now["sumo_nets/g3/g3.rou.xml"] != first["sumo_nets/g3/g3.rou.xml"]  # seed 7's demand, not seed 42's
    assert now["sumo_nets/g3/g3.sumocfg"] == first["sumo_nets/g3/g3.sumocfg"]


def test_import_osm_refuses_to_replace_and_a_failed_overwrite_keeps_the_earlier_build(tmp_path):
    proc = run_cli("import-osm", str(OSM), "--name", "bh", "--end", "60", "--root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    before = tree(tmp_path)
    proc = run_cli("import-osm", str(OSM), "--name", "bh", "--end", "60", "--root", str(tmp_path))
    assert proc.returncode == 2 and "bh.net.xml exists" in proc.stderr and "--overwrite" in proc.stderr
    assert tree(tmp_path) == before
    # an extract without roads fails in netconvert's check: the earlier build stays as it was
    bad = tmp_path / "no_roads.osm"
    bad.write_text('<?xml version="1.0"?>\n<osm version="0.6">\n<node id="1" lat="50.0" lon="9.0"/>'
                   '<node id="2" lat="50.001" lon="9.0"/>\n<way id="10"><nd ref="1"/><nd ref="2"/>'
                   '<tag k="building" v="yes"/></way>\n</osm>\n')
    before = tree(tmp_path)
    proc = run_cli("import-osm", str(bad), "--name", "bh", "--overwrite", "--root", str(tmp_path))
    assert proc.returncode == 2 and "no_roads.osm" in proc.stderr, proc.stderr
    assert tree(tmp_path) == before  # no scratch folder left, the earlier files untouched


def test_a_build_that_fails_names_the_file_it_was_for_and_leaves_nothing(tmp_path):
    """The network is built in a scratch folder inside sumo_nets/NAME/: an error names the file it
    was built for, and neither the scratch folder nor a folder this call made stays."""
    from cosim.errors import CosimError
    from cosim.netbuild import DemandSpec, build_scenario

    def no_roads(out: Path) -> Path:
        out.write_text('<?xml version="1.0"?>\n<net version="1.20"></net>\n')
        return out

    with pytest.raises(CosimError) as exc:
        build_scenario("x", tmp_path / "root", no_roads, DemandSpec(end_s=60))
    assert str(exc.value) == f"{tmp_path / 'root' / 'sumo_nets' / 'x' / 'x.net.xml'}: the network has no drivable edge"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "root" / "sumo_nets").mkdir(parents=True)  # an existing folder stays, and stays empty
    with pytest.raises(CosimError):
        build_scenario("x", tmp_path / "root", no_roads, DemandSpec(end_s=60))
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")] == ["root", "root/sumo_nets"]


def test_netgen_builds_into_a_net_folder_linked_to_another_filesystem(tmp_path):
    """sumo_nets/NAME may be a link to a folder on another filesystem (a RAM disk, a data drive):
    the scratch folder is made inside sumo_nets/NAME/, so moving the built files in never crosses
    filesystems (os.replace cannot: EXDEV)."""
    import os
    import shutil
    import tempfile

    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a filesystem other than the test's tmp folder")
    elsewhere = Path(tempfile.mkdtemp(prefix="cosim-netdir-", dir=shm))
    try:
        (tmp_path / "sumo_nets").mkdir()
        (tmp_path / "sumo_nets" / "g").symlink_to(elsewhere)
        proc = run_cli("netgen", "grid", "--name", "g", "--size", "3", "--end", "100", "--root", str(tmp_path))
        assert proc.returncode == 0, proc.stderr
        assert sorted(os.listdir(elsewhere)) == ["g.net.xml", "g.rou.xml", "g.sumocfg"]  # no scratch left
        assert (tmp_path / "sumo_nets" / "g").is_symlink()
        assert run_built(tmp_path, "g")["slots"] == 30
    finally:
        shutil.rmtree(elsewhere)


def test_overwrite_replaces_a_broken_link_and_a_failed_move_puts_every_earlier_file_back(tmp_path, monkeypatch):
    """--overwrite writes the .toml in a scratch folder and moves it in last; an earlier file (a
    link too, even a broken one) is moved aside and put back when a later move fails: the earlier
    build stays as it was, no scratch folder stays, and the error is one line naming the file."""
    import errno
    import os

    from cosim.errors import CosimError
    from cosim.netbuild import DemandSpec, build_scenario, netgenerate

    args = ("netgen", "grid", "--name", "g", "--size", "3", "--end", "100", "--root", str(tmp_path))
    assert run_cli(*args).returncode == 0
    scen = tmp_path / "scenarios" / "g.toml"
    scen.unlink()
    scen.symlink_to(tmp_path / "missing" / "g.toml")  # the user's link, to a folder not there (now)
    proc = run_cli(*args, "--seed", "7", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert not scen.is_symlink() and "seed = 7\n" in scen.read_text()  # --overwrite replaced the link

    scen.unlink()
    scen.symlink_to(tmp_path / "missing" / "g.toml")
    before = tree(tmp_path)
    real_replace = os.replace

    def full_disk(src, dst):  # noqa: ANN001, ANN202
        if Path(dst) == scen and Path(src).name == scen.name:  # the built .toml's move in (not putting back)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(CosimError) as exc:
        build_scenario("g", tmp_path, lambda out: netgenerate("grid", out, size=3), DemandSpec(end_s=100, seed=9),
                       overwrite=True)
    monkeypatch.undo()
    assert str(exc.value) == f"{scen}: cannot write (No space left on device)"
    assert tree(tmp_path) == before  # the three network files as they were, no scratch folder anywhere
    assert scen.is_symlink() and os.readlink(scen) == str(tmp_path / "missing" / "g.toml")

    # interrupted right after any one rename (Ctrl-C between moving an earlier file aside and moving
    # the new one in, or after it): every earlier file is put back, no scratch folder stays
    for n in range(1, 9):
        calls = [0]

        def interrupted(src, dst, n=n):  # noqa: ANN001, ANN202
            real_replace(src, dst)
            calls[0] += 1
            if calls[0] == n:
                raise KeyboardInterrupt

        monkeypatch.setattr(os, "replace", interrupted)
        with pytest.raises(KeyboardInterrupt):
            build_scenario("g", tmp_path, lambda out: netgenerate("grid", out, size=3),
                           DemandSpec(end_s=100, seed=9), overwrite=True)
        monkeypatch.undo()
        assert tree(tmp_path) == before, n

    # every rename failing from the second on (the earlier net file aside, nothing can be put back):
    # the earlier file is kept in the scratch folder, which the error names — never deleted
    calls = [0]

    def stuck(src, dst):  # noqa: ANN001, ANN202
        calls[0] += 1
        if calls[0] >= 2:
            raise OSError(errno.EIO, "I/O error")
        return real_replace(src, dst)

    net = tmp_path / "sumo_nets" / "g" / "g.net.xml"
    old = net.read_bytes()
    monkeypatch.setattr(os, "replace", stuck)
    with pytest.raises(CosimError, match="could not be put back; they are kept as ") as exc:
        build_scenario("g", tmp_path, lambda out: netgenerate("grid", out, size=3), DemandSpec(end_s=100, seed=9),
                       overwrite=True)
    monkeypatch.undo()
    kept = Path(str(exc.value).rsplit("kept as ", 1)[1])
    assert kept.name == "old-g.net.xml" and kept.read_bytes() == old and not net.exists()


def test_an_interrupted_build_says_nothing_was_built_not_a_runs_message():
    """Ctrl-C/SIGTERM during netgen or import-osm ends with 'terminated (…)': what is true of a
    build (its scratch folders removed, earlier files as they were), not a run's 'results up to the
    last slot are on disk'."""
    import argparse

    from cosim import cli

    for func in (cli.cmd_netgen, cli.cmd_import_osm):
        assert cli._kept(argparse.Namespace(func=func)) == "nothing was built: earlier files as they were"
    assert cli._kept(argparse.Namespace(func=cli.cmd_sweep)) == "results up to the last slot are on disk"
