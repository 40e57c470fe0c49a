"""Post-run analyses over the results tables.

``dwell_error``: predicted remaining time in coverage (eq. 12 or IDM) against what SUMO's
traffic really did. For a row where vehicle v is served by RSU r at time t with prediction
``dwell_s``, the *realised* dwell is measured from the vehicle's own later rows: the first later
slot at which v is outside r's disc, at time t', gives realised = t' - t - slot/2 (the exit
happened somewhere in the last slot; the midpoint keeps the estimate unbiased, error <= slot/2).
Rows whose vehicle never leaves the disc while observed (it arrives at its destination inside
coverage, or the run ends) are censored and left out; so are rows whose prediction hit the cap.

Works on numpy arrays (vehicle and RSU as integer codes) so it needs neither pandas nor string
sorting; :func:`dwell_error_from_parquet` reads ``coverage.parquet`` with pyarrow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def realised_dwell(vehicle: np.ndarray, slot: np.ndarray, time_s: np.ndarray, x: np.ndarray, y: np.ndarray,
                   rsu: np.ndarray, rsu_xyr: np.ndarray, slot_s: float) -> np.ndarray:
    """Realised dwell [s] per row (NaN where censored or unserved).

    ``vehicle``: integer code per row; ``rsu``: RSU index per row (-1 = none) into ``rsu_xyr``,
    an (M, 3) array of x, y, radius.
    """
    n = len(vehicle)
    out = np.full(n, np.nan)
    if n == 0:
        return out
    order = np.lexsort((np.asarray(slot), np.asarray(vehicle)))
    veh, t = np.asarray(vehicle)[order], np.asarray(time_s, dtype=float)[order]
    xs, ys, srv = np.asarray(x, dtype=float)[order], np.asarray(y, dtype=float)[order], np.asarray(rsu)[order]
    idx = np.arange(n)
    res = np.full(n, np.nan)
    for r, (rx, ry, rad) in enumerate(np.asarray(rsu_xyr, dtype=float).reshape(-1, 3)):
        served = srv == r
        if not served.any():
            continue
        inside = (xs - rx) ** 2 + (ys - ry) ** 2 <= rad * rad + 1e-9
        nxt = np.minimum.accumulate(np.where(inside, n, idx)[::-1])[::-1]  # first row >= i outside r's disc
        ok = served & (nxt < n)
        j = np.where(ok, nxt, 0)
        ok &= veh[j] == veh
        res[ok] = t[j[ok]] - t[ok] - slot_s / 2
    out[order] = res
    return out


def dwell_error(pred: np.ndarray, realised: np.ndarray, rsu: np.ndarray, cap_s: float) -> dict:
    """Summary of predicted - realised dwell over uncensored, uncapped served rows."""
    pred, realised, served = np.asarray(pred, dtype=float), np.asarray(realised, dtype=float), np.asarray(rsu) >= 0
    capped = served & (pred >= cap_s - 1e-9)
    known = np.isfinite(realised)
    use = served & ~capped & known
    err = pred[use] - realised[use]
    block = {"rows_served": int(served.sum()), "rows_compared": int(use.sum()),
             "rows_censored": int((served & ~capped & ~known).sum()), "rows_capped": int(capped.sum())}
    if len(err):
        ae = np.abs(err)
        block.update({"mean_error_s": float(err.mean()), "mean_abs_error_s": float(ae.mean()),
                      "median_abs_error_s": float(np.median(ae)), "p90_abs_error_s": float(np.quantile(ae, 0.9)),
                      "mean_realised_s": float(realised[use].mean())})
    return block


def dwell_error_from_parquet(path: str | Path, rsu_ids: list[str], rsu_xyr: np.ndarray, slot_s: float,
                             cap_s: float) -> dict:
    return dwell_error(*dwell_pairs_from_parquet(path, rsu_ids, rsu_xyr, slot_s), cap_s)


def dwell_pairs_from_parquet(path: str | Path, rsu_ids: list[str], rsu_xyr: np.ndarray,
                             slot_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predicted dwell, realised dwell, RSU index) per row of ``coverage.parquet``."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(str(path), columns=["vehicle", "slot", "time_s", "x", "y", "rsu", "dwell_s"])
    if table.num_rows == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)

    def codes(col: pa.ChunkedArray) -> tuple[np.ndarray, list]:
        enc = pc.dictionary_encode(col.cast(pa.string())).combine_chunks()
        idx = enc.indices.to_numpy(zero_copy_only=False)
        valid = pc.is_valid(enc.indices).to_numpy(zero_copy_only=False)
        return np.where(valid, np.nan_to_num(idx, nan=-1), -1).astype(np.int64), enc.dictionary.to_pylist()

    veh, _ = codes(table["vehicle"])
    rsu_local, names = codes(table["rsu"])
    to_global = np.array([rsu_ids.index(nm) for nm in names] + [-1], dtype=np.int64)
    rsu = to_global[np.where(rsu_local >= 0, rsu_local, len(names))]
    col = lambda c: table[c].to_numpy()  # noqa: E731
    realised = realised_dwell(veh, col("slot"), col("time_s"), col("x"), col("y"), rsu, rsu_xyr, slot_s)
    return col("dwell_s"), realised, rsu
