"""Issue 32, third pass (the core's fixed cost): a core-alone run imports no module it never
uses; fourth pass: nor does a run with layers import pandas, pyarrow.compute or pyarrow.dataset.
The pandas-free Arrow conversions that make that true give what pyarrow's own calls give, bit
for bit (checked against those calls, in a process where pandas is loaded anyway)."""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cosim.errors import CosimError
from cosim.recorder import Coded, _column, _strings
from cosim.results import numpy_of

from .conftest import GRID6_TOML, ROOT

#: modules a run with every layer off never uses: pandas (its tables are written and its dwell
#: analysis read through Arrow alone; pyarrow.compute: no cast or compute function is needed),
#: the layers' torch and numba, the plots' matplotlib
NOT_IMPORTED = ("pandas", "pyarrow.dataset", "pyarrow.compute", "torch", "numba", "matplotlib", "scipy")


@pytest.mark.sumo
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


# -- issue 32, fourth pass: a run with layers imports no pandas --------------------------------
#: what a run with layers on never uses (its layers do use torch and numba)
NOT_IMPORTED_BY_LAYERS = ("pandas", "pyarrow.dataset", "pyarrow.compute")
SCENARIOS = ROOT / "scenarios"


@pytest.mark.sumo
def test_layer_runs_import_no_pandas_and_their_numpy_vs_baseline_is_the_dataframes(tmp_path, trace):
    """In one process: each layer alone (a replay of the session's recorded grid6 trace), then all
    three on live SUMO (libsumo); after each, none of :data:`NOT_IMPORTED_BY_LAYERS` is loaded. The
    runs did write their list, boolean and nullable-string columns and paired their policies at
    the close from numpy columns (:func:`cosim.results.read_columns`): the summary's
    ``vs_baseline`` blocks equal :func:`cosim.pairing.vs_baseline` of the task table read as a
    pandas DataFrame (the same function on the other input; no pandas-era code is run)."""
    import pandas as pd

    from cosim import pairing
    from cosim.results import load

    runs = {
        layer: ["replay", str(trace), "--scenario", str(SCENARIOS / f"grid6_{layer}.toml"), "--end", "30"]
        for layer in ("dvit", "moe", "cache")
    }
    runs["all"] = ["run", str(SCENARIOS / "grid6_all.toml"), "--end", "20"]
    code = (
        "import sys, json\n"
        "from cosim.cli import main\n"
        "seen = {}\n"
        f"for name, args in {runs!r}.items():\n"
        f"    rc = main([*args, '-q', '--out', {str(tmp_path)!r} + '/' + name])\n"
        f"    seen[name] = [rc, sorted(m for m in {NOT_IMPORTED_BY_LAYERS!r} if m in sys.modules)]\n"
        "print(json.dumps(seen))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    seen = json.loads(p.stdout.strip().splitlines()[-1])
    assert seen == {name: [0, []] for name in runs}
    for name in runs:
        res = load(tmp_path / name)
        summary = res.require_summary()
        assert summary["status"] == "completed" and not summary["warnings"]
        for layer in ("dvit", "moe") if name == "all" else (name,) if name != "cache" else ():
            table = f"{layer}_tasks"
            df = pd.read_parquet(tmp_path / name / f"{table}.parquet")
            assert len(df) and df["success"].dtype == bool
            lists = "step_comm_s" if layer == "dvit" else "prices"
            assert df[lists].map(len).sum() > 0  # a list column with items
            order = list(summary["layers"][layer]["policies"]) if "policies" in summary["layers"][layer] else \
                [p for p, v in summary["layers"][layer].items() if isinstance(v, dict) and "vs_baseline" in v]
            want = pairing.vs_baseline(df[pairing.COLUMNS], order)
            got = {p: summary["layers"][layer][p]["vs_baseline"] for p in order}
            assert len(want) > 1 and got == json.loads(json.dumps(want))
        if name in ("cache", "all"):
            df = res["cache_requests"]
            assert len(df) and df["edge"].dtype == bool and df["evicted"].dtype != bool


@pytest.mark.sumo
def test_the_plugins_process_imports_no_torch_when_moes_policies_run_in_a_worker(tmp_path):
    """grid6_all with one policy worker (``--jobs 3``): the deal (by the registered costs) gives the
    worker every MoE policy, and the plugin's process, which only checks the MoE layer, never
    imports torch: the gate model is built at its first use (``MoELayer._gate_parts``). The MoE
    table is still written, by the worker, and equals the same run's table in one process."""
    from cosim import compare

    out = {"three": tmp_path / "three", "one": tmp_path / "one"}
    code = (
        "import sys, json\n"
        "from cosim.cli import main\n"
        f"rc = main(['run', {str(ROOT / 'scenarios' / 'grid6_all.toml')!r}, '--jobs', '3', '--end', '40', '-q', "
        f"'--out', {str(out['three'])!r}])\n"
        "print(json.dumps([rc, 'torch' in sys.modules]))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == [0, False]
    summary = json.loads((out["three"] / "summary.json").read_text())
    assert len(summary["cpu_s"]["policy_workers"]) == 1
    subprocess.run([sys.executable, "-m", "cosim", "run", str(ROOT / "scenarios" / "grid6_all.toml"), "--jobs", "1",
                    "--end", "40", "-q", "--out", str(out["one"])], check=True, cwd=ROOT, capture_output=True)
    assert json.loads((out["one"] / "summary.json").read_text())["layers"]["moe"]["gecpa"]["tasks"] > 0
    assert compare.differences(out["one"], out["three"]) == []


def ipc(arr: pa.Array) -> bytes:
    """``arr`` as Arrow IPC bytes: its type, length, null count and every buffer (validity bits,
    offsets, values, and what lies under a null) as written, bit for bit."""
    return pa.record_batch([arr], names=["c"]).serialize().to_pybytes()


NAN = float("nan")


@pytest.mark.parametrize("rows, item", [
    ([[1.0, 2.5], [], None, [NAN, 3, -(2**53)], [np.float64(-0.0)], []], pa.float64()),
    ([[1, None, 3], [], [None], None, [2**63 - 1, np.int64(-7)]], pa.int64()),
    ([["a", "é🚗"], [], [None, ""], None, ["x"], ["ünï", "\u0000"]], pa.string()),
    ([], pa.float64()), ([[]], pa.string()), ([None], pa.int64()), ([[], [], []], pa.int64()),
    ([(0.5,), [0.25]], pa.float64()),
])
def test_list_columns_are_pa_arrays_bit_for_bit_also_sliced(rows, item):
    from cosim.recorder import Lists

    want = pa.array(rows, type=pa.list_(item))
    got = _column([Lists(rows[:2], item), Lists(rows[2:], item)])  # two batches, joined
    got.validate(full=True)
    assert ipc(got) == ipc(want)
    for at in [(1,), (1, 2), (0, 0), (len(rows),), (2, 3)]:
        if sum(at) <= len(rows):
            assert ipc(got.slice(*at)) == ipc(want.slice(*at))


@pytest.mark.parametrize("rows, item", [
    ([[True, 0.5]], pa.float64()),     # a bool among doubles: pa.array makes it 1.0
    ([[np.int64(3), 1.5]], pa.float64()), ([[np.float32(0.1)]], pa.float64()),
    ([[2**53 + 1]], pa.float64()),     # not exactly a double: pa.array's error
    ([[2**63]], pa.int64()),           # beyond int64: pa.array's error
    ([[3.0]], pa.int64()), ([[True]], pa.int64()), ([["a", 1]], pa.string()), ([[b"a"]], pa.string()),
    ([np.array([1.0, 2.0])], pa.float64()),  # a numpy row
    ([[1.0], 7], pa.float64()),        # a row that is no list
    ([[[1.0], []]], pa.list_(pa.float64())),  # nested lists
    ([[1, 2], None], None),            # an inferred item type
])
def test_list_items_it_does_not_build_itself_get_pa_arrays_answer(rows, item):
    from cosim.recorder import _lists

    try:
        want = pa.array(rows, type=pa.list_(item) if item is not None else None)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        with pytest.raises(type(exc)):
            _lists(rows, item)
        return
    assert ipc(_lists(rows, item)) == ipc(want)


@pytest.mark.parametrize("items", [
    ["a", None, "ü", None, ""], [None, None], [None], ["🚗", "é"], [], ["x" * 70, None, "y"] * 5,
])
def test_nullable_strings_are_pa_arrays_bit_for_bit(items):
    want = pa.array(items, type=pa.string())
    got = _column([np.array(items[:1], dtype=object), np.array(items[1:], dtype=object)])
    got.validate(full=True)
    assert ipc(got) == ipc(want) and ipc(got.slice(1)) == ipc(want.slice(1))


def test_boolean_columns_are_pa_arrays_bitmap_bit_for_bit():
    rng = np.random.default_rng(5)
    b = rng.random(37) < 0.5
    for arr in (b, b[::3], b[5:], b[:0], b[::-1], b[:8], b[:9], np.ones(16, bool)):
        want = pa.array(arr)
        got = _column([arr[:3], arr[3:]])
        assert ipc(got) == ipc(want) and ipc(got.slice(2)) == ipc(want.slice(2))


def test_an_empty_table_is_written_with_its_schemas_columns(tmp_path):
    import pyarrow.parquet as pq

    from cosim.recorder import COVERAGE_SCHEMA, TableWriter

    w = TableWriter(tmp_path / "c.parquet")
    w.close(COVERAGE_SCHEMA)
    t = pq.read_table(tmp_path / "c.parquet")
    assert t.num_rows == 0 and t.schema.equals(pa.table({k: pa.array([], type=v) for k, v in COVERAGE_SCHEMA.items()}).schema)


def test_numpy_of_strings_dictionaries_bools_and_chunks_is_to_numpy():
    s = pa.array(["a", None, "ünï", "", "b"], type=pa.string())
    d = pa.DictionaryArray.from_arrays(pa.array([1, 0, None, 1, 2], type=pa.int32()), pa.array(["x", "ÿ", None]))
    b = pa.array([True, False, True, True, False, True, False, False, True])
    for arr in (s, s.slice(1), s.slice(2, 2), d, d.slice(2), b, b.slice(3), b.slice(9), s.slice(5)):
        got, want = numpy_of(arr), arr.to_numpy(zero_copy_only=False)
        assert got.dtype == want.dtype and got.tolist() == want.tolist()
    c = pa.chunked_array([pa.array([1.5, 2.0]), pa.array([], type=pa.float64()), pa.array([-3.0])])
    assert numpy_of(c).tolist() == c.to_numpy().tolist() and numpy_of(c).dtype == np.float64
    # a chunked array of no chunk: an empty array of the type's dtype, as to_numpy gives
    for t in (pa.int32(), pa.uint8(), pa.float32(), pa.bool_(), pa.string()):
        z = pa.chunked_array([], type=t)
        got, want = numpy_of(z), z.to_numpy()
        assert len(got) == 0 and got.dtype == want.dtype
    # a small index type whose range ends at the dictionary's length: a null row is None, not an overflow
    for it, n in ((pa.int8(), 128), (pa.uint8(), 256)):
        words = pa.array([f"w{i}" for i in range(n)])
        idx = pa.array([0, None, n - 1, 5, None], type=it)
        arr = pa.DictionaryArray.from_arrays(idx, words)
        got, want = numpy_of(arr), arr.to_numpy(zero_copy_only=False)
        assert got.tolist() == want.tolist() == ["w0", None, f"w{n - 1}", "w5", None] and got.dtype == want.dtype


def test_read_columns_is_what_pandas_reads_and_pairs_the_same(tmp_path):
    import math

    import pandas as pd

    from cosim import pairing
    from cosim.recorder import Coded, TableWriter
    from cosim.results import read_columns

    rng = np.random.default_rng(7)
    pols = ["base", "p1", "p2"]
    rows = [(t, p) for t in range(8) for p in range(3)]  # every task for every policy, shuffled, some left out
    rows = [rows[i] for i in rng.permutation(len(rows))[:20]]
    w = TableWriter(tmp_path / "t.parquet", flush_batches=1)
    for a, b in ((0, 3), (3, 4), (4, 12), (12, 20)):  # four parts of different lengths
        task, policy = np.array([r[0] for r in rows[a:b]]), np.array([r[1] for r in rows[a:b]])
        n = b - a
        w.append({"task": task, "policy": np.array([pols[i] for i in policy], dtype=object),
                  "pcode": Coded(policy, pols), "latency_s": np.where(rng.random(n) < 0.2, NAN, rng.random(n)),
                  "outcome": np.array(rng.choice(["done", "failed", "censored", None], n), dtype=object),
                  "ok": rng.random(n) < 0.5})
    w.close()
    cols = ["task", "policy", "pcode", "latency_s", "outcome", "ok"]
    got = read_columns(tmp_path / "t.parquet", cols)
    df = pd.read_parquet(tmp_path / "t.parquet")
    plain = lambda v: None if isinstance(v, float) and math.isnan(v) else v  # noqa: E731 - pandas' missing string
    for c in ("task", "policy", "pcode", "outcome", "ok"):
        assert got[c].tolist() == [plain(v) for v in df[c].tolist()] and len(got[c]) == 20
    assert np.array_equal(got["latency_s"], df["latency_s"].to_numpy(), equal_nan=True)
    assert got["ok"].dtype == bool and got["task"].dtype == np.int64
    # the pairing: from numpy columns (plain or dictionary policies) as from the DataFrame, value for value
    want = pairing.vs_baseline(df[pairing.COLUMNS], pols)
    assert want["p1"]["common_tasks"] > 0 and want["p2"]["given_tasks"] > 0
    assert pairing.vs_baseline(got, pols) == want == pairing.vs_baseline({**got, "policy": got["pcode"]}, pols)
    assert pairing.vs_baseline(df.assign(policy=df["pcode"])[pairing.COLUMNS], pols) == want
    with pytest.raises(CosimError, match="no column 'nope'"):
        read_columns(tmp_path / "t.parquet", ["task", "nope"])
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["x", "x"]), tmp_path / "twice.parquet")
    with pytest.raises(CosimError, match="column named twice: 'x'"):
        read_columns(tmp_path / "twice.parquet", ["x"])
