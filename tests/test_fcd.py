"""SUMO's own FCD as a trace: Parquet (recorded by `--record x.fcd.parquet` or any
`sumo --fcd-output x.parquet`) and the fast XML reader."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from lxml import etree

from cosim.sources import fcd
from cosim.sources.replay import ReplaySource, _by_time
from cosim.sources.sumo import sumo_command
from cosim.sumo_home import sumo_binary

from .conftest import GRID6_CFG, GRID6_TOML, run_cli
from .test_replay import table


#: SUMO's FCD carries no routes: its replay walks no route, so the live run it is compared with
#: predicts dwell without routes too (the default, auto, walks SUMO's routes in a live run)
STRAIGHT = ("--set", 'world.dwell_model="straight"')


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """grid6, 40 s, with SUMO's Parquet FCD recorded beside the results."""
    d = tmp_path_factory.mktemp("fcd")
    proc = run_cli("run", str(GRID6_TOML), "--end", "40", "--out", str(d / "live"), "-q", *STRAIGHT,
                   "--record", str(d / "t.fcd.parquet"))
    assert proc.returncode == 0, proc.stderr
    return d


@pytest.mark.sumo
def test_recorded_sumo_parquet_replays_exactly(live):
    import pyarrow.parquet as pq

    # --precision 6 makes SUMO write doubles: the replay is exact
    assert str(pq.ParquetFile(live / "t.fcd.parquet").schema_arrow.field("vehicle_speed").type) == "double"
    rep = run_cli("replay", str(live / "t.fcd.parquet"), "--scenario", str(GRID6_TOML), "--end", "40", *STRAIGHT,
                  "--out", str(live / "rep"), "-q")
    assert rep.returncode == 0, rep.stderr
    for name in ("coverage", "rsus"):
        pd.testing.assert_frame_equal(table(live / "live" / f"{name}.parquet"), table(live / "rep" / f"{name}.parquet"))
    a, b = (json.loads((live / d / "summary.json").read_text()) for d in ("live", "rep"))
    assert a["dwell_prediction"] == b["dwell_prediction"] and a["slots"] == b["slots"] == 40


@pytest.mark.sumo
def test_float32_sumo_parquet_within_its_precision(live, tmp_path):
    """SUMO's default precision writes speed, angle, lane position and acceleration as float32."""
    trace = tmp_path / "f32.parquet"
    cmd = sumo_command(GRID6_CFG, seed=42, end_s=40, step_length_s=0.25, binary=sumo_binary("sumo"),
                       extra=["--fcd-output", str(trace), "--fcd-output.acceleration", "--device.fcd.begin", "0.75",
                              "--device.fcd.period", "1"])
    import subprocess

    subprocess.run(cmd, check=True, capture_output=True)
    import pyarrow.parquet as pq

    assert str(pq.ParquetFile(trace).schema_arrow.field("vehicle_speed").type) == "float"
    rep = run_cli("replay", str(trace), "--scenario", str(GRID6_TOML), "--end", "40", "--out", str(tmp_path / "r"), "-q",
                  *STRAIGHT)
    assert rep.returncode == 0, rep.stderr
    a, b = table(live / "live" / "coverage.parquet"), table(tmp_path / "r" / "coverage.parquet")
    m = a.merge(b, on=["slot", "vehicle"], suffixes=("_l", "_r"))
    assert len(m) == len(a) == len(b) > 1000
    # x, y are doubles: positions, cells, association and rates are exact
    for c in ("x", "y", "cell", "rate_v2i_bps"):
        np.testing.assert_array_equal(m[f"{c}_l"], m[f"{c}_r"])
    assert (m.rsu_l.fillna("-") == m.rsu_r.fillna("-")).all()
    # float32 keeps 24 bits: speeds within 2**-24 relative, dwell (from speed and angle) within 1e-6
    rel = lambda c: ((m[f"{c}_l"] - m[f"{c}_r"]).abs() / m[f"{c}_l"].abs().clip(lower=1e-9)).max()  # noqa: E731
    assert 0 < rel("speed_mps") <= 2.0**-24
    assert rel("dwell_s") < 1e-6


def test_parquet_batches_cut_inside_a_timestep_give_the_same_snapshots(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {"timestep_time": [0.0, 0.0, 0.0, 1.0, 1.0, 2.0], "vehicle_id": ["a", "b", "c", "a", "c", "c"],
            "vehicle_x": [0.1 + 0.2, 1.0, 2.0, 3.0, 4.0, 5.0], "vehicle_y": [1.0] * 6,
            "vehicle_angle": pa.array([90.0] * 6, pa.float32()), "vehicle_speed": pa.array([1 / 3] * 6, pa.float32()),
            "vehicle_pos": pa.array([2.5] * 6, pa.float32()),
            "vehicle_lane": ["e_0", ":j_1_0", "e_1", "e_0", "f_0", "f_0"]}
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table(rows), path)
    whole = list(_by_time(path, fcd.parquet_chunks(path, shift=0.5)))
    cut = list(_by_time(path, fcd.parquet_chunks(path, shift=0.5, batch_rows=2)))
    assert [s.time_s for s in whole] == [s.time_s for s in cut] == [0.5, 1.5, 2.5]
    for a, b in zip(whole, cut):
        for f in ("ids", "x", "speed", "edge", "lane", "accel", "length"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    s = whole[0]
    assert list(s.ids) == ["a", "b", "c"] and list(s.edge) == ["e", ":j_1", "e"] and s.x[0] == 0.1 + 0.2
    assert s.speed[0] == np.float32(1 / 3) and s.accel[0] == 0.0 and s.length[0] == 5.0  # no acceleration column


def fcd_file(tmp_path, body, name="t.xml"):
    p = tmp_path / name
    p.write_text('<?xml version="1.0"?>\n<fcd-export>\n' + body + "</fcd-export>\n")
    return p


V = '        <vehicle id="{id}" x="{x}" y="2.5" angle="90.00" type="car" speed="3.25" pos="4.00" lane="e_0" ' \
    'slope="0.00" acceleration="-0.50"/>\n'


def test_xml_fast_and_strict_blocks_agree(tmp_path):
    body = (f'<timestep time="0.00">\n{V.format(id="a", x="1.5")}{V.format(id="b", x="7")}</timestep>\n'
            # another attribute set: read by the strict path
            '<timestep time="1.00">\n        <vehicle id="a" x="2.5" y="2.5" angle="90.00" speed="3.25" pos="4.00" '
            'lane="e_0" signals="8"/>\n</timestep>\n'
            # an XML entity and a person (not a vehicle): the strict path
            f'<timestep time="2.00">\n{V.format(id="a&amp;b", x="3.5")}        <person id="p" x="1" y="1" '
            'angle="0" speed="1" pos="1" edge="e"/>\n</timestep>\n'
            '<timestep time="3.00"/>\n'
            f'<timestep time="4.00">\n{V.format(id="c", x="-1e3")}</timestep>\n')
    src = ReplaySource(fcd_file(tmp_path, body), fcd_step_s=0.25)
    src.start()
    s = src.step_to(0.25)
    assert list(s.ids) == ["a", "b"] and list(s.x) == [1.5, 7.0] and list(s.accel) == [-0.5, -0.5]
    assert s.speed[0] == 3.25 and s.angle[0] == 90.0 and list(s.edge) == ["e", "e"] and s.length[0] == 5.0
    s = src.step_to(1.25)
    assert list(s.ids) == ["a"] and s.x[0] == 2.5 and s.accel[0] == 0.0 and s.speed[0] == 3.25
    s = src.step_to(2.25)
    assert list(s.ids) == ["a&b"] and s.x[0] == 3.5  # the entity decoded, the person skipped
    assert len(src.step_to(3.25)) == 0
    s = src.step_to(4.25)
    assert list(s.ids) == ["c"] and s.x[0] == -1000.0 and src.step_to(5.25) is not None and src.finished()


@pytest.mark.sumo
def test_xml_reader_matches_lxml_on_a_real_trace(tmp_path):
    trace = tmp_path / "t.xml.gz"
    cmd = sumo_command(GRID6_CFG, seed=42, end_s=60, step_length_s=0.25, binary=sumo_binary("sumo"),
                       extra=["--fcd-output", str(trace), "--fcd-output.acceleration", "--device.fcd.period", "1"])
    import subprocess

    subprocess.run(cmd, check=True, capture_output=True)
    ours = list(fcd.xml_snapshots(trace))
    ref = [ts for _, ts in etree.iterparse(gzip.open(trace), events=("end",), tag="timestep")]
    assert len(ours) == len(ref) == 60 and sum(map(len, ours)) > 3000
    for s, ts in zip(ours, ref):
        vs = ts.findall("vehicle")
        assert s.time_s == float(ts.get("time")) and list(s.ids) == [v.get("id") for v in vs]
        for f, a in (("x", "x"), ("y", "y"), ("speed", "speed"), ("angle", "angle"), ("lane_pos", "pos"),
                     ("accel", "acceleration")):
            np.testing.assert_array_equal(getattr(s, f), [float(v.get(a)) for v in vs])
        assert list(s.lane) == [v.get("lane") for v in vs]
