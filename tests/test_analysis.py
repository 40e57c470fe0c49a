import math

import numpy as np
import pytest

import cosim.analysis as analysis
from cosim.analysis import dwell_error, dwell_error_from_parquet, dwell_pairs_from_parquet, realised_dwell
from .conftest import run_grid6


def rows_v():
    # vehicle 0 drives east at 30 m/s from x = -60, served by RSU 0 at t = 1..6, by nobody at t = 7.
    # Realised from t: 7 - t - 0.5 (the change happened somewhere in (6, 7]).
    return [(0, k, float(k), 0 if k <= 6 else -1) for k in range(1, 8)]


def arrays(rows, shuffle=True):
    a = np.array(rows, dtype=float)
    if shuffle:
        a = a[np.random.default_rng(0).permutation(len(a))]  # order must not matter
    return a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2], a[:, 3].astype(int)


def test_realised_dwell_by_hand():
    # vehicle 1 is served to the table's last slot, 7 (censored); vehicle 2 is never served
    rows = rows_v() + [(1, k, float(k), 0) for k in range(1, 8)] + [(2, 1, 1.0, -1)]
    veh, slot, t, rsu = arrays(rows)
    r, arrived = realised_dwell(veh, slot, t, rsu, slot_s=1.0)
    for k, e in {1: 5.5, 2: 4.5, 3: 3.5, 4: 2.5, 5: 1.5, 6: 0.5}.items():
        assert r[(veh == 0) & (slot == k)].item() == pytest.approx(e)
    assert math.isnan(r[(veh == 0) & (slot == 7)].item())  # not served
    assert np.isnan(r[veh == 1]).all() and np.isnan(r[veh == 2]).all()
    assert not arrived.any()


@pytest.mark.parametrize("part_rows", [1, 3, analysis.PART_ROWS])  # one vehicle a partition, some, all
def test_realised_dwell_ends_at_a_handover_and_at_arrival(part_rows):
    # vehicle 0: RSU 0 at t = 1..3, then RSU 1 at t = 4..5 (nearest rule: it crossed the bisector;
    # still inside RSU 0's disc, but no longer served by it), then it leaves the simulation after t = 5
    # while the run goes on to t = 9 (vehicle 1 is there until then): it arrived inside RSU 1's coverage.
    rows = [(0, 1, 1.0, 0), (0, 2, 2.0, 0), (0, 3, 3.0, 0), (0, 4, 4.0, 1), (0, 5, 5.0, 1)]
    rows += [(1, k, float(k), -1) for k in range(1, 10)]
    veh, slot, t, rsu = arrays(rows)
    r, arrived = realised_dwell(veh, slot, t, rsu, slot_s=1.0, part_rows=part_rows)
    v0 = veh == 0
    by_slot = dict(zip(slot[v0], r[v0]))
    # RSU 0 until somewhere in (3, 4]: 4 - t - 0.5
    assert by_slot[1] == pytest.approx(2.5) and by_slot[3] == pytest.approx(0.5)
    # RSU 1 until it left in (5, 6]: 5 - t + 0.5
    assert by_slot[4] == pytest.approx(1.5) and by_slot[5] == pytest.approx(0.5)
    np.testing.assert_array_equal(np.sort(slot[arrived]), [4, 5])


def test_dwell_error_summary():
    # straight-line predictions for vehicle 0 (x = -60 + 30 (k - 1), disc |x| <= 100):
    # (100 - x) / 30 = 5.333, 4.333, ..., 0.333; a capped (stopped) vehicle 3 is left out
    rows = rows_v() + [(3, 1, 1.0, 0), (3, 2, 2.0, -1)]
    veh, slot, t, rsu = arrays(rows, shuffle=False)
    x = -60.0 + 30 * (slot - 1)
    pred = np.where(rsu >= 0, (100 - x) / 30, np.nan)
    pred[7] = 600.0
    realised, arrived = realised_dwell(veh, slot, t, rsu, 1.0)
    d = dwell_error(pred, realised, rsu, cap_s=600.0, arrived=arrived)
    assert d["rows_served"] == 7 and d["rows_capped"] == 1 and d["rows_compared"] == 6 and d["rows_censored"] == 0
    assert d["rows_arrived"] == 0
    # each prediction is 1/6 s short of the midpoint estimate: 5.333 - 5.5 = -0.1667
    assert d["mean_error_s"] == pytest.approx(-1 / 6)
    assert d["mean_abs_error_s"] == pytest.approx(1 / 6)


def test_dwell_error_from_a_coverage_table(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # the same rows as test_realised_dwell_ends_at_a_handover_and_at_arrival, as coverage.parquet
    # writes them (RSU names, nulls): realised 2.5, 1.5, 0.5 with r0, then 1.5, 0.5 with r1 (arrival);
    # predicted exactly with r0, 0.5 s short with r1 -> bias -0.2 s over 5 rows
    rows = [("a", 1, "r0", 2.5), ("a", 2, "r0", 1.5), ("a", 3, "r0", 0.5), ("a", 4, "r1", 1.0), ("a", 5, "r1", 0.0)]
    rows += [("b", k, None, None) for k in range(1, 10)]
    veh, slot, rsu, pred = zip(*rows)
    pq.write_table(pa.table({"vehicle": pa.array(veh).dictionary_encode(), "slot": list(slot),
                             "time_s": [float(k) for k in slot], "rsu": pa.array(rsu, pa.string()).dictionary_encode(),
                             "dwell_s": [float("nan") if p is None else p for p in pred]}), tmp_path / "coverage.parquet")
    d = dwell_error_from_parquet(tmp_path / "coverage.parquet", slot_s=1.0, cap_s=600.0)
    assert d["rows_served"] == 5 and d["rows_compared"] == 5 and d["rows_arrived"] == 2
    assert d["mean_error_s"] == pytest.approx(-0.2) and d["mean_abs_error_s"] == pytest.approx(0.2)


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint64) if a.dtype == np.float64 else a


def test_dwell_pairs_equal_a_per_vehicle_loop_on_a_grid6_run(tmp_path, monkeypatch):
    # 120 s of real grid6 traffic, coverage flushed every 20 slots (parts with their own dictionaries);
    # the realised dwell by a plain loop over each vehicle's rows, read with pandas: the same floats
    out = run_grid6(tmp_path, "[output]\nflush_slots = 20\n", "--no-layers", end_s=120)
    path = out / "coverage.parquet"
    assert len(list(path.glob("part-*.parquet"))) >= 5
    from cosim.results import read_table

    df = read_table(path, ["vehicle", "slot", "time_s", "rsu", "dwell_s"])
    veh, sl, t, rsu = df["vehicle"].astype(str).to_numpy(), df["slot"].to_numpy(), df["time_s"].to_numpy(), \
        df["rsu"].astype(object).to_numpy()
    want, gone = np.full(len(df), np.nan), np.zeros(len(df), dtype=bool)
    last = sl.max()
    rows_of: dict[str, list[int]] = {}
    for i, v in enumerate(veh):
        rows_of.setdefault(v, []).append(i)
    for rows in rows_of.values():
        rows.sort(key=lambda i: sl[i])
        for a, i in enumerate(rows):
            if rsu[i] is None or rsu[i] != rsu[i]:  # unserved (None or NaN)
                continue
            b = a
            while b + 1 < len(rows) and rsu[rows[b + 1]] == rsu[i]:
                b += 1
            if b + 1 < len(rows):  # handed over (or out of coverage) at the next row
                want[i] = t[rows[b + 1]] - t[i] - 0.5
            elif sl[rows[b]] < last:  # left the simulation while served
                want[i], gone[i] = t[rows[b]] - t[i] + 0.5, True
    assert np.isfinite(want).sum() > 1000 and gone.any()
    calls = []
    part = analysis._realised_part
    monkeypatch.setattr(analysis, "_realised_part", lambda *a: (calls.append(len(a[0])), part(*a)))
    whole = dwell_pairs_from_parquet(path, 1.0)
    assert calls == [len(df)]  # one partition: the table is small
    calls.clear()
    cut = dwell_pairs_from_parquet(path, 1.0, part_rows=100, batch_rows=777)  # a few vehicles a partition
    assert len(calls) > 10 and sum(calls) == len(df)
    for got in (whole, cut):
        pred, realised, codes, arrived = got
        np.testing.assert_array_equal(bits(realised), bits(want))
        np.testing.assert_array_equal(arrived, gone)
        np.testing.assert_array_equal(bits(pred), bits(df["dwell_s"].to_numpy(dtype=float)))
        served = codes >= 0
        np.testing.assert_array_equal(served, [r is not None and r == r for r in rsu])
        # codes number the RSU names as they first appear
        names = list(dict.fromkeys(rsu[served]))
        np.testing.assert_array_equal(codes[served], [names.index(r) for r in rsu[served]])
    # the summary: every value as the straightforward formulas give it
    d = dwell_error_from_parquet(path, 1.0, cap_s=600.0)
    pred = df["dwell_s"].to_numpy(dtype=float)
    use = served & (pred < 600.0 - 1e-9) & np.isfinite(want)
    err = pred[use] - want[use]
    assert d == {"rows_served": int(served.sum()), "rows_compared": int(use.sum()),
                 "rows_censored": int((served & (pred < 600.0 - 1e-9) & ~np.isfinite(want)).sum()),
                 "rows_capped": int((served & (pred >= 600.0 - 1e-9)).sum()), "rows_arrived": int((use & gone).sum()),
                 "mean_error_s": float(err.mean()), "mean_abs_error_s": float(np.abs(err).mean()),
                 "median_abs_error_s": float(np.median(np.abs(err))),
                 "p90_abs_error_s": float(np.quantile(np.abs(err), 0.9)), "mean_realised_s": float(want[use].mean())}


@pytest.mark.parametrize("n", [1, 2, 999, 1000])
def test_dwell_error_equals_the_formulas_with_copies(n):
    # dwell_error partitions the absolute errors in place for the median and the p90: the same
    # floats as the formulas on fresh copies, odd and even counts, ties, censored and capped rows
    rng = np.random.default_rng(n)
    pred = np.round(rng.uniform(0, 700, n), 1)
    realised = np.where(rng.random(n) < 0.2, np.nan, np.round(rng.uniform(0, 300, n), 1))
    rsu = np.where(rng.random(n) < 0.1, -1, rng.integers(0, 5, n))
    arrived = rng.random(n) < 0.3
    served = rsu >= 0
    use = served & (pred < 600.0 - 1e-9) & np.isfinite(realised)
    d = dwell_error(pred.copy(), realised.copy(), rsu, 600.0, arrived)
    assert d["rows_compared"] == use.sum() and d["rows_arrived"] == (use & arrived).sum()
    if use.any():
        err = pred[use] - realised[use]
        assert (d["mean_error_s"], d["mean_abs_error_s"], d["median_abs_error_s"], d["p90_abs_error_s"],
                d["mean_realised_s"]) == (float(err.mean()), float(np.abs(err).mean()), float(np.median(np.abs(err))),
                                          float(np.quantile(np.abs(err), 0.9)), float(realised[use].mean()))
    else:
        assert "mean_error_s" not in d


@pytest.mark.parametrize("skew", [0.0, 0.25])
def test_dwell_pairs_read_in_batches_across_parts_equal_the_per_row_arrays(tmp_path, skew):
    # three parts (own dictionaries); with skew the third part's vehicle "c" reports its time
    # 0.25 s late, so that slot has two times: every realised dwell is still the one of the
    # plain per-row arrays
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "coverage.parquet"
    path.mkdir()
    rsu_of = {"a": lambda k: "r0" if k < 5 else "r1", "b": lambda k: None if k % 4 == 0 else "r1",
              "c": lambda k: "r2" if k < 11 else None}
    rows = []
    for part, slots in enumerate((range(1, 5), range(5, 9), range(9, 13))):
        chunk = [(v, k, k + (skew if part == 2 and v == "c" else 0.0), rsu_of[v](k)) for k in slots
                 for v in ("c", "a", "b") if not (v == "b" and k > 10)]
        rows += chunk
        veh, slot, t, rsu = zip(*chunk)
        pq.write_table(pa.table({"vehicle": pa.array(veh).dictionary_encode(), "slot": list(slot), "time_s": list(t),
                                 "rsu": pa.array(rsu, pa.string()).dictionary_encode(),
                                 "dwell_s": [3.0] * len(chunk)}), path / f"part-{part:06d}.parquet")
    n, cols = analysis._columns(path, ("vehicle", "slot", "time_s", "rsu"), 5)
    assert n == len(cols["time_s"]) == 34
    np.testing.assert_array_equal(cols["time_s"], [r[2] for r in rows])  # the times as written, row by row
    veh, slot, t, rsu = zip(*rows)
    names = {"r0": 0, "r1": 1, "r2": 2}
    want, gone = realised_dwell(np.array([ord(v) for v in veh]), np.array(slot), np.array(t),
                                np.array([names.get(r, -1) for r in rsu]), 1.0)
    assert np.isfinite(want).sum() >= 15 and gone.any()  # handed over, arrived, censored rows
    for part_rows in (2, 1000):
        _, realised, _, arrived = dwell_pairs_from_parquet(path, 1.0, part_rows=part_rows, batch_rows=5)
        np.testing.assert_array_equal(bits(realised), bits(want))
        np.testing.assert_array_equal(arrived, gone)
