import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from cosim.recorder import COVERAGE_SCHEMA, Coded, Recorder, TableWriter


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
    assert pq.ParquetFile(tmp_path / "t.parquet").num_row_groups == 2  # flushed after 2 appends, then at close


def test_recorder_writes_empty_core_tables_with_schema(tmp_path):
    r = Recorder(tmp_path)
    r.close()
    table = pq.read_table(tmp_path / "coverage.parquet")
    assert table.num_rows == 0 and table.schema.names == list(COVERAGE_SCHEMA)
    assert pq.read_table(tmp_path / "rsus.parquet").num_rows == 0
