"""Record a live run and replay it through the same TrafficSource interface (no SUMO)."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from cosim.errors import CosimError
from cosim.sources.replay import ReplaySource

from .conftest import GRID6_CFG, GRID6_TOML, run_cli


def table(path):
    df = pd.read_parquet(path)
    for col in df.columns:
        if isinstance(df[col].dtype, pd.CategoricalDtype):
            df[col] = df[col].astype(object)
    return df


@pytest.mark.sumo
def test_parquet_replay_reproduces_the_live_run_exactly(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text(f'[scenario]\nsumocfg = "{GRID6_CFG}"\nend_s = 60\nstep_length_s = 0.25\n'
                    # VIDI looks ahead along SUMO's routes, which a trace does not carry: straight ahead
                    "[layers.dvit]\nrequest_rate_per_s = 2.0\nahead = \"straight\"\n")
    live = run_cli("run", str(toml), "--out", str(tmp_path / "live"), "-q", "--record", str(tmp_path / "t.parquet"))
    assert live.returncode == 0, live.stderr
    rep = run_cli("replay", str(tmp_path / "t.parquet"), "--scenario", str(toml), "--out", str(tmp_path / "rep"), "-q")
    assert rep.returncode == 0, rep.stderr
    for name in ("coverage", "rsus", "dvit_tasks"):
        pd.testing.assert_frame_equal(table(tmp_path / "live" / f"{name}.parquet"), table(tmp_path / "rep" / f"{name}.parquet"))
    a = json.loads((tmp_path / "live" / "summary.json").read_text())
    b = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert a["layers"] == b["layers"] and a["slots"] == b["slots"] == 60 and b["versions"]["sumo"] == "replay"


@pytest.mark.sumo
def test_a_replay_ends_where_its_trace_ends_and_compares_same(tmp_path):
    """The scenario says 600 s, the trace holds 40: the replay ends at 40 s with one warning line,
    and `cosim compare` calls it the same as its live run (provenance reported, not failed)."""
    dvit = GRID6_TOML.parent / "grid6_dvit.toml"
    live = run_cli("run", str(dvit), "--end", "40", "--out", str(tmp_path / "live"), "-q",
                   "--record", str(tmp_path / "t.parquet"))
    assert live.returncode == 0, live.stderr
    rep = run_cli("replay", str(tmp_path / "t.parquet"), "--scenario", str(dvit), "--out", str(tmp_path / "rep"), "-q")
    assert rep.returncode == 0, rep.stderr
    assert rep.stderr.count("warning") == 1 and "the trace ends at 40 s, before the end 600 s" in rep.stderr
    assert f"before the end 600 s ({dvit}: scenario.end_s)" in rep.stderr  # where the end came from
    flag = run_cli("replay", str(tmp_path / "t.parquet"), "--scenario", str(dvit), "--end", "100", "--out",
                   str(tmp_path / "flag"), "-q", "--no-coverage")
    assert flag.returncode == 0 and "before the end 100 s (--end 100): the replay ends at 40 s" in flag.stderr, flag.stderr
    s = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert s["slots"] == 40 and s["sim_time_end_s"] == 40.0
    cmp = run_cli("compare", str(tmp_path / "live"), str(tmp_path / "rep"))
    assert cmp.returncode == 0 and cmp.stdout.startswith("same: ") and "versions.sumo" in cmp.stdout, cmp.stdout
    # an earlier end than the trace's is kept, without a warning
    short = run_cli("replay", str(tmp_path / "t.parquet"), "--scenario", str(GRID6_TOML), "--end", "20", "--out",
                    str(tmp_path / "short"), "-q")
    assert short.returncode == 0 and "warning" not in short.stderr
    assert json.loads((tmp_path / "short" / "summary.json").read_text())["slots"] == 20


def test_trace_end_of_parquet_and_csv_traces(tmp_path):
    from cosim.sources.replay import trace_end_s

    df = pd.DataFrame({"time_s": [1.0, 1.0, 2.0, 3.0], "ids": ["a", "b", "a", "a"]})
    df.to_parquet(tmp_path / "t.parquet", row_group_size=2)
    df.to_csv(tmp_path / "t.csv", index=False)
    assert trace_end_s(tmp_path / "t.parquet") == 3.0 and trace_end_s(tmp_path / "t.csv") == 3.0
    assert trace_end_s(tmp_path / "missing.csv") is None and trace_end_s(tmp_path / "t.xml") is None


@pytest.mark.sumo
def test_fcd_replay_matches_to_the_written_precision(tmp_path):
    live = run_cli("run", str(GRID6_TOML), "--end", "40", "--out", str(tmp_path / "live"), "-q",
                   "--record", str(tmp_path / "t.xml.gz"))
    assert live.returncode == 0, live.stderr
    rep = run_cli("replay", str(tmp_path / "t.xml.gz"), "--scenario", str(GRID6_TOML), "--end", "40",
                  "--out", str(tmp_path / "rep"), "-q")
    assert rep.returncode == 0, rep.stderr
    a, b = table(tmp_path / "live" / "coverage.parquet"), table(tmp_path / "rep" / "coverage.parquet")
    m = a.merge(b, on=["slot", "vehicle"], suffixes=("_l", "_r"))
    assert len(m) == len(a) == len(b)
    assert (m.x_l - m.x_r).abs().max() < 1e-5 and (m.y_l - m.y_r).abs().max() < 1e-5  # 6 decimals written
    assert (m.cell_l == m.cell_r).all() and (m.rsu_l.fillna("-") == m.rsu_r.fillna("-")).all()


def fcd(tmp_path, body, name="t.xml"):
    p = tmp_path / name
    p.write_text('<?xml version="1.0"?>\n<fcd-export>\n' + body + "</fcd-export>\n")
    return p


V = '<vehicle id="{id}" x="1.5" y="2.5" angle="90" speed="3" pos="4" lane="e_0" acceleration="0.5"/>\n'


def test_fcd_reader_by_hand(tmp_path):
    p = fcd(tmp_path, f'<timestep time="0.00">\n{V.format(id="a")}{V.format(id="b")}</timestep>\n'
                      '<timestep time="1.00"/>\n'
                      f'<timestep time="2.00">\n{V.format(id="b")}</timestep>\n')
    src = ReplaySource(p, fcd_step_s=1.0)  # record "t" = state at t + 1 s
    src.start()
    s1 = src.step_to(1.0)
    assert list(s1.ids) == ["a", "b"] and s1.x[0] == 1.5 and s1.accel[1] == 0.5 and list(s1.edge) == ["e", "e"]
    assert s1.length[0] == 5.0  # not in the trace: the 5 m default
    assert len(src.step_to(2.0)) == 0
    assert list(src.step_to(3.0).ids) == ["b"]
    assert len(src.step_to(4.0)) == 0 and src.finished()


@pytest.mark.parametrize("case, expect", [
    ("truncated", "broken or truncated XML at line"),
    ("unsorted", "line 6: timestep 1 comes after 2 (unsorted)"),
    ("missing", "line 4: vehicle 'x' lacks speed"),  # 1 <?xml, 2 <fcd-export>, 3 <timestep>, 4 <vehicle>
    ("gz_truncated", "t.xml.gz: "),
])
def test_bad_traces_name_file_and_line(tmp_path, case, expect):
    if case == "truncated":
        p = fcd(tmp_path, f'<timestep time="0.00">\n{V.format(id="a")}</timestep>\n<timestep time="1.00">\n<vehic')
        p.write_text(p.read_text().replace("</fcd-export>\n", ""))
    elif case == "unsorted":
        p = fcd(tmp_path, f'<timestep time="2.00">\n{V.format(id="a")}</timestep>\n'
                          f'<timestep time="1.00">\n{V.format(id="a")}</timestep>\n')
    elif case == "missing":
        p = fcd(tmp_path, '<timestep time="0.00">\n<vehicle id="x" x="1" y="2" angle="0" pos="1" lane="e_0"/>\n'
                          "</timestep>\n")
    else:
        data = gzip.compress(fcd(tmp_path, f'<timestep time="0.00">\n{V.format(id="a")}</timestep>\n').read_bytes())
        p = tmp_path / "t.xml.gz"
        p.write_bytes(data[: len(data) // 2])
    src = ReplaySource(p)
    with pytest.raises(CosimError) as exc:
        src.start()
        for t in np.arange(1.0, 5.0):
            src.step_to(float(t))
    msg = str(exc.value)
    assert str(p.name) in msg and expect in msg and "\n" not in msg


def test_missing_and_unknown_traces(tmp_path):
    with pytest.raises(CosimError, match="no such trace file"):
        ReplaySource(tmp_path / "nope.parquet")
    (tmp_path / "t.txt").write_text("x\n")
    with pytest.raises(CosimError, match="expected a .parquet, .csv"):
        ReplaySource(tmp_path / "t.txt")


def test_csv_trace_equals_parquet_trace_and_reports_bad_lines(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cosim.sources.replay import TRACE_COLUMNS

    rows = {"time_s": [1.0, 1.0, 2.0], "ids": ["a", "b", "a"], "x": [0.1 + 0.2, 5.0, 1 / 3], "y": [1.0, 2.0, 3.0],
            "speed": [1.0, 2.0, 3.0], "angle": [0.0, 90.0, 180.0], "accel": [0.0, -1.5, 0.25],
            "edge": ["e", "f", "e"], "lane": ["e_0", "f_1", "e_0"], "lane_pos": [1.0, 2.0, 3.0], "length": [5.0, 4.5, 5.0]}
    pq.write_table(pa.table(rows), tmp_path / "t.parquet")
    pd.DataFrame(rows)[TRACE_COLUMNS].to_csv(tmp_path / "t.csv", index=False, float_format="%.17g")
    a, b = ReplaySource(tmp_path / "t.parquet"), ReplaySource(tmp_path / "t.csv")
    a.start()
    b.start()
    for t in (1.0, 2.0):
        sa, sb = a.step_to(t), b.step_to(t)
        for f in ("ids", "x", "accel", "edge", "lane", "length"):
            np.testing.assert_array_equal(getattr(sa, f), getattr(sb, f))  # bit for bit (0.1 + 0.2, 1/3)
    bad = tmp_path / "bad.csv"
    bad.write_text((tmp_path / "t.csv").read_text().replace(",5,", ",,", 1))
    src = ReplaySource(bad)
    with pytest.raises(CosimError, match=r"bad.csv: line 3: a row with a missing value"):
        src.start()


@pytest.mark.sumo
def test_replay_starts_at_the_sumocfgs_begin_like_the_run(tmp_path):
    """A sumocfg that begins at 100 s: the replay's slots (and so every per-slot draw) fall where
    the live run's did, so the layer's results are the same."""
    cfgtext = GRID6_CFG.read_text().replace('<begin value="0"/>', '<begin value="100"/>')
    for name in ("grid6.net.xml", "grid6.rou.xml"):
        (tmp_path / name).symlink_to(GRID6_CFG.parent / name)
    (tmp_path / "g.sumocfg").write_text(cfgtext)
    scen = tmp_path / "s.toml"
    scen.write_text('[scenario]\nsumocfg = "g.sumocfg"\nend_s = 140\nstep_length_s = 0.5\n'
                    '[layers.dvit]\npolicies = ["vidi", "sdi"]\nrequest_rate_per_s = 2.0\nahead = "straight"\n')
    live = run_cli("run", str(scen), "--out", str(tmp_path / "live"), "-q", "--record", str(tmp_path / "t.parquet"))
    assert live.returncode == 0, live.stderr
    rep = run_cli("replay", str(tmp_path / "t.parquet"), "--scenario", str(scen), "--out", str(tmp_path / "rep"), "-q")
    assert rep.returncode == 0, rep.stderr
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("live", "rep"))
    assert a["slots"] == b["slots"] == 40
    assert a["layers"]["dvit"] == b["layers"]["dvit"]
