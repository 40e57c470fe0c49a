import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import cosim
from cosim.recorder import COVERAGE_SCHEMA, Coded, Recorder, TableWriter, dumps_json
from cosim.results import load

from .conftest import ROOT


def test_table_writer_round_trip_with_dictionary_codes_and_nulls(tmp_path):
    names = ["v0", "v1"]
    w = TableWriter(tmp_path / "t.parquet", flush_batches=2)
    w.append({"slot": np.array([0, 0]), "veh": Coded(np.array([0, 1]), names), "rsu": Coded(np.array([-1, 0]), ("A",)),
              "x": np.array([1.5, 2.5])})
    names.append("v2")  # a vehicle appears later: the name list grows
    w.append({"slot": np.array([1]), "veh": Coded(np.array([2]), names), "rsu": Coded(np.array([0]), ("A",)),
              "x": np.array([3.5])})
    w.append({"slot": np.array([2]), "veh": Coded(np.array([1]), names), "rsu": Coded(np.array([-1]), ("A",)),
              "x": np.array([4.5])})
    w.close()
    df = pd.read_parquet(tmp_path / "t.parquet")
    assert df["slot"].tolist() == [0, 0, 1, 2]
    assert df["veh"].astype(str).tolist() == ["v0", "v1", "v2", "v1"]
    assert df["rsu"].astype(object).where(df["rsu"].notna(), None).tolist() == [None, "A", "A", None]
    assert df["x"].tolist() == [1.5, 2.5, 3.5, 4.5]
    # flushed after 2 appends, then at close: two complete part files
    assert sorted(p.name for p in (tmp_path / "t.parquet").iterdir()) == ["part-000000.parquet", "part-000001.parquet"]
    assert [pq.ParquetFile(p).metadata.num_rows for p in sorted((tmp_path / "t.parquet").iterdir())] == [3, 1]


def test_recorder_writes_empty_core_tables_with_schema(tmp_path):
    r = Recorder(tmp_path)
    r.close()
    table = pq.read_table(tmp_path / "coverage.parquet")
    assert table.num_rows == 0 and table.schema.names == list(COVERAGE_SCHEMA)
    assert pq.read_table(tmp_path / "rsus.parquet").num_rows == 0


def test_a_kill_leaves_every_flushed_part_readable(tmp_path):
    """What a SIGKILL leaves: parts written so far, one half-written hidden temporary file and
    no close() at all. Readers see exactly the flushed rows."""
    w = TableWriter(tmp_path / "t.parquet", flush_batches=1)
    for i in range(3):
        w.append({"slot": np.array([i, i]), "x": np.array([0.5 * i, 1.0])})
    w._pool.shutdown(wait=True)  # the writes have landed; no close(): the process "died" here
    (tmp_path / "t.parquet" / ".part-000003.parquet.tmp").write_bytes(b"PAR1 half a footer")
    df = pd.read_parquet(tmp_path / "t.parquet")
    assert df["slot"].tolist() == [0, 0, 1, 1, 2, 2] and df["x"].tolist() == [0.0, 1.0, 0.5, 1.0, 1.0, 1.0]
    res = load(tmp_path)
    assert list(res) == ["t"] and res.summary is None and res["t"]["slot"].tolist() == [0, 0, 1, 1, 2, 2]


def test_load_reads_a_results_folder_with_its_summary(tmp_path):
    r = Recorder(tmp_path, flush_slots=1)
    r.table("probe").append({"slot": np.array([0]), "v": Coded(np.array([0]), ["a"])})
    r.close()
    r.write_json("summary.json", {"status": "terminated", "x": np.float64("nan"), "y": np.float32(np.inf),
                                  "z": [1.5, float("-inf")], "n": np.int64(3)})
    res = cosim.load(tmp_path)  # a folder: the results; a file: a scenario
    assert sorted(res) == ["coverage", "probe", "rsus"] and res.summary["status"] == "terminated"
    assert res["probe"]["v"].astype(str).tolist() == ["a"] and len(res["coverage"]) == 0
    assert res.summary == {"status": "terminated", "x": None, "y": None, "z": [1.5, None], "n": 3}
    with pytest.raises(KeyError, match="no such table"):
        res["nope"]
    assert isinstance(cosim.load(ROOT / "scenarios" / "grid6.toml"), cosim.Config)


@pytest.mark.parametrize("value, text", [
    (float("nan"), "null"), (np.float64("inf"), "null"), (np.float32(-np.inf), "null"), (np.float64(2.5), "2.5"),
    ({"a": (np.nan, np.int32(4))}, '{"a": [null, 4]}'), (np.array([1.0, np.nan]), "[1.0, null]"),
    (np.bool_(True), "true"), (Path("/x"), '"/x"'),
])
def test_json_outputs_are_valid_json_always(value, text):
    out = dumps_json(value, indent=None)
    assert out == text
    json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))  # NaN/Infinity would land here


def test_no_part_is_written_after_a_failed_one(tmp_path, monkeypatch):
    """A part queued behind one that failed (a full disk) is not written when the space comes
    back: the table keeps every slot up to the failure, without a gap."""
    import errno
    import threading

    from cosim import recorder

    release, calls = threading.Event(), []
    real = recorder.write_atomic

    def failing_first(path, data):  # noqa: ANN001
        calls.append(path.name)
        if len(calls) == 1:
            release.wait(10)  # the second part is queued meanwhile
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(recorder, "write_atomic", failing_first)
    w = recorder.TableWriter(tmp_path / "t.parquet", flush_batches=1)
    w.append({"slot": np.array([0])})  # part 0: blocked, then fails
    w.append({"slot": np.array([1])})  # part 1: queued behind it
    release.set()
    with pytest.raises(OSError, match="No space"):
        w.close()
    assert calls == ["part-000000.parquet"]  # part 1 never reached the disk
    assert not list((tmp_path / "t.parquet").glob("part-*"))
