"""Hardening, second campaign (issue 29): --overwrite removes exactly what cosim wrote, bounds
on numeric keys, malformed lists and traces as one line, view/report of an interrupted run."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cosim import cli
from cosim.recorder import MANIFEST, read_manifest
from cosim.world import read_net

from .conftest import GRID6_NET
from .test_robust import scenario, trace


def _rows(n: int = 5) -> dict:
    edges = sorted(e for e in read_net(GRID6_NET).edge_length if not e.startswith(":"))[:n]
    return {"ids": [f"v{i}" for i in range(n)], "edge": edges, "lane": [f"{e}_0" for e in edges]}


def _replay(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(["replay", *argv, "-q"])
    return code, capsys.readouterr().err


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
    assert lines[0] == (f"cosim: error: --out {out}: holds {t}, an input of this run; --overwrite would clear the "
                        "folder it lies in: move it out, or choose another folder")
    assert sorted(p.name for p in out.iterdir()) == before
    # the scenario file in the folder likewise
    code, err = _replay(capsys, trace(tmp_path, _rows(), name="t2.parquet"), "--scenario", scenario(out),
                        "--out", str(out), "--overwrite")
    assert code == 2 and "s.toml, an input of this run" in err and len(err.strip().splitlines()) == 1


def test_overwrite_of_a_folder_from_before_the_manifest_removes_only_cosim_outputs(tmp_path):
    from cosim import config as cfgmod
    from cosim.runner import results_dir

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
