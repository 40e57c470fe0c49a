"""Issue 32, third pass (the core's fixed cost): a core-alone run imports no module it never
uses, and the pandas-free Arrow conversions that make that true give what pyarrow's own calls
give (checked against those calls, in a process where pandas is loaded anyway)."""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cosim.recorder import Coded, _column, _strings
from cosim.results import numpy_of

from .conftest import GRID6_TOML, ROOT

#: modules a run with every layer off never uses: pandas (its tables are written and its dwell
#: analysis read through Arrow alone; pyarrow.compute: no cast or compute function is needed),
#: the layers' torch and numba, the plots' matplotlib
NOT_IMPORTED = ("pandas", "pyarrow.dataset", "pyarrow.compute", "torch", "numba", "matplotlib", "scipy")


def test_a_core_alone_run_imports_no_pandas_torch_numba_or_matplotlib(tmp_path):
    code = (
        "import sys, json\n"
        "from cosim.cli import main\n"
        f"rc = main(['run', {str(GRID6_TOML)!r}, '--no-layers', '--end', '20', '-q', '--out', {str(tmp_path / 'out')!r}])\n"
        f"print(json.dumps([rc, sorted(m for m in {NOT_IMPORTED!r} if m in sys.modules)]))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    rc, loaded = json.loads(p.stdout.strip().splitlines()[-1])
    assert rc in (0, None) and loaded == []
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    dwell = summary["dwell_prediction"]  # the dwell analysis did read the coverage table
    assert "error" not in dwell and dwell["rows_compared"] > 0


@pytest.mark.parametrize("arr", [
    np.array([3, -1, 2**40], dtype=np.int64), np.array([1.5, np.nan, -0.0, np.inf]), np.arange(5, dtype=np.int32),
    np.array([7, 255], dtype=np.uint8), np.array([0.25], dtype=np.float32), np.zeros(0, dtype=np.int64),
    np.array([True, False, True]),  # not numeric: left to pa.array
])
def test_numeric_columns_are_what_pa_array_makes(arr):
    got = _column([arr[:1], arr[1:]])
    want = pa.array(arr)
    assert got.type == want.type and got.null_count == want.null_count == 0
    bits = lambda a: a.to_numpy(zero_copy_only=False).tobytes()  # noqa: E731 - NaN bit for bit
    assert bits(got) == bits(want)


def test_coded_columns_with_and_without_nulls_are_pa_arrays_dictionary(tmp_path):
    names = ["v0", "vé", "v2", "x"]
    for codes in ([2, -1, 0, 2, -1], [1, 1, 3, 0]):
        got = _column([Coded(np.array(codes[:2]), names), Coded(np.array(codes[2:]), names)])
        used = sorted(set(c for c in codes if c >= 0))
        want = pa.DictionaryArray.from_arrays(
            pa.array([used.index(c) if c >= 0 else 0 for c in codes], type=pa.int32(),
                     mask=np.array([c < 0 for c in codes])),
            pa.array([names[c] for c in used], type=pa.string()))
        assert got.type == want.type and got.equals(want)
        assert got.to_pylist() == [names[c] if c >= 0 else None for c in codes]


@pytest.mark.parametrize("items", [["a", "", "ünï", "🚗x"], [], ["a", None, "b"], ["a", 1]])
def test_strings_are_pa_arrays_strings_or_pa_arrays_own_answer(items):
    try:
        want = pa.array(items, type=pa.string())
    except (pa.ArrowException, TypeError) as exc:
        with pytest.raises(type(exc)):
            _strings(items)
        return
    got = _strings(items)
    assert got.type == want.type and got.equals(want) and got.null_count == want.null_count


@pytest.mark.parametrize("typ", [pa.int8(), pa.int32(), pa.int64(), pa.uint16(), pa.float32(), pa.float64()])
def test_numpy_of_is_to_numpy_and_fill_null_on_sliced_arrays(typ):
    values = [3, None, 0, 7, None, 5, 1, 2, 9, None, 4]
    full = pa.array(values, type=typ)
    dense = pa.array([v for v in values if v is not None], type=typ)
    for arr in (full, full.slice(3), full.slice(1, 7), dense, dense.slice(2, 3), full.slice(4, 0)):
        filled = pc.fill_null(arr, 100).to_numpy(zero_copy_only=False)
        got = numpy_of(arr, fill=100)
        assert got.dtype == filled.dtype and np.array_equal(got, filled)
        if arr.null_count == 0:
            want = arr.to_numpy(zero_copy_only=False)
            assert numpy_of(arr).dtype == want.dtype and np.array_equal(numpy_of(arr), want)
    assert np.array_equal(numpy_of(full), full.to_numpy(zero_copy_only=False), equal_nan=True)  # no fill: to_numpy


def test_a_part_of_another_schema_is_still_cast_to_the_first_parts(tmp_path):
    import pyarrow.parquet as pq

    from cosim.recorder import TableWriter

    w = TableWriter(tmp_path / "t.parquet", flush_batches=1)
    w.append({"x": np.array([1.5]), "k": np.array([1], dtype=np.int64)})
    w.append({"x": np.array([2], dtype=np.int64), "k": np.array([3], dtype=np.int32)})  # cast: int -> double, int32 -> int64
    w.close()
    parts = sorted((tmp_path / "t.parquet").iterdir())
    assert len(parts) == 2
    for p in parts:
        assert pq.read_schema(p).types == [pa.float64(), pa.int64()]
    assert pq.read_table(tmp_path / "t.parquet").to_pydict() == {"x": [1.5, 2.0], "k": [1, 3]}


def test_arrow_batches_walk_the_rows_as_the_dataset_reads_them(tmp_path):
    import pyarrow.parquet as pq

    from cosim.results import arrow_batches

    folder = tmp_path / "t.parquet"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for part in (2, 0, 10, 1):  # written out of order; read by name
        n = int(rng.integers(1, 9))
        pq.write_table(pa.table({"k": np.arange(n) + 100 * part, "x": rng.normal(size=n),
                                 "s": pa.array([f"v{part}-{i % 3}" for i in range(n)]).dictionary_encode()}),
                       folder / f"part-{part:06d}.parquet")
    (folder / ".part-000011.parquet.tmp").write_bytes(b"half a part")  # a write under way: skipped
    want = pq.read_table(folder, columns=["k", "s"])
    for batch_rows in (1, 3, 1000):
        rows, batches = arrow_batches(folder, ["k", "s"], batch_rows)
        got = pa.Table.from_batches(list(batches))
        assert rows == want.num_rows and got.schema.equals(want.schema) and got.to_pydict() == want.to_pydict()
    single = folder / "part-000010.parquet"
    rows, batches = arrow_batches(single, ["x"])
    assert rows == pq.read_metadata(single).num_rows
    assert pa.Table.from_batches(list(batches)).to_pydict() == pq.read_table(single, columns=["x"]).to_pydict()
