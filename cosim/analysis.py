"""Post-run analyses over the results tables.

``dwell_error``: predicted remaining time with the serving RSU (eq. 12, IDM or route walk)
against what SUMO's traffic really did. For a row where vehicle v is served by RSU r at time t
with prediction ``dwell_s``, the *realised* dwell is measured from the vehicle's own later rows
under the association rule the run applied (the recorded ``rsu`` column): the first later slot
at which v is no longer served by r (another RSU serves it, or none), at time t', gives
realised = t' - t - slot/2 (the change happened somewhere in the last slot; the midpoint keeps
the estimate unbiased, error <= slot/2). So under ``nearest`` a crossing of the bisector with a
neighbouring RSU ends the dwell, under ``sticky`` only leaving r's disc. A vehicle that leaves the
simulation while served (it arrives at its destination inside coverage) stops being served
then: realised = t_last - t + slot/2, t_last its last row. Rows whose vehicle is still served by
r in the table's last slot (the run ends) are censored and left out; so are rows whose
prediction hit the cap.

Works on numpy arrays (vehicle and RSU as integer codes) so it needs neither pandas nor string
sorting; :func:`dwell_error_from_parquet` reads ``coverage.parquet`` as an Arrow table with
the one results reader (:func:`cosim.results.read_arrow`; :func:`dwell_pairs_from_parquet`: the
per-row pairs, for plots).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def realised_dwell(vehicle: np.ndarray, slot: np.ndarray, time_s: np.ndarray, rsu: np.ndarray,
                   slot_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(realised dwell [s] per row, NaN where censored or unserved; True where it ended by the
    vehicle leaving the simulation).

    ``vehicle``: integer code per row; ``rsu``: serving RSU code per row (-1 = none).
    """
    n = len(vehicle)
    out, arrived = np.full(n, np.nan), np.zeros(n, dtype=bool)
    if n == 0:
        return out, arrived
    slot = np.asarray(slot)
    order = np.lexsort((slot, np.asarray(vehicle)))
    veh, t, srv, sl = np.asarray(vehicle)[order], np.asarray(time_s, dtype=float)[order], np.asarray(rsu)[order], slot[order]
    idx = np.arange(n)
    same_next = np.zeros(n, dtype=bool)
    same_next[:-1] = veh[1:] == veh[:-1]
    change = np.ones(n, dtype=bool)  # the last row of a run of rows with one vehicle and one RSU
    change[:-1] = ~same_next[:-1] | (srv[1:] != srv[:-1])
    end = np.minimum.accumulate(np.where(change, idx, n)[::-1])[::-1]
    served = srv >= 0
    handed = served & same_next[end]  # a later row of the same vehicle with another RSU (or none)
    gone = served & ~same_next[end] & (sl[end] < sl.max())  # left the simulation before the run ended
    res = np.full(n, np.nan)
    nxt = np.minimum(end + 1, n - 1)
    res[handed] = t[nxt[handed]] - t[handed] - slot_s / 2
    res[gone] = t[end[gone]] - t[gone] + slot_s / 2
    out[order], arrived[order] = res, gone
    return out, arrived


def dwell_error(pred: np.ndarray, realised: np.ndarray, rsu: np.ndarray, cap_s: float,
                arrived: np.ndarray | None = None) -> dict:
    """Summary of predicted - realised dwell over uncensored, uncapped served rows."""
    pred, realised, served = np.asarray(pred, dtype=float), np.asarray(realised, dtype=float), np.asarray(rsu) >= 0
    capped = served & (pred >= cap_s - 1e-9)
    known = np.isfinite(realised)
    use = served & ~capped & known
    err = pred[use] - realised[use]
    block = {"rows_served": int(served.sum()), "rows_compared": int(use.sum()),
             "rows_censored": int((served & ~capped & ~known).sum()), "rows_capped": int(capped.sum())}
    if arrived is not None:
        block["rows_arrived"] = int((use & np.asarray(arrived)).sum())
    if len(err):
        ae = np.abs(err)
        block.update({"mean_error_s": float(err.mean()), "mean_abs_error_s": float(ae.mean()),
                      "median_abs_error_s": float(np.median(ae)), "p90_abs_error_s": float(np.quantile(ae, 0.9)),
                      "mean_realised_s": float(realised[use].mean())})
    return block


def dwell_error_from_parquet(path: str | Path, slot_s: float, cap_s: float) -> dict:
    pred, realised, rsu, arrived = dwell_pairs_from_parquet(path, slot_s)
    return dwell_error(pred, realised, rsu, cap_s, arrived)


def dwell_pairs_from_parquet(path: str | Path, slot_s: float) -> tuple:
    """(predicted dwell, realised dwell, serving RSU code (-1 none), ended by arrival) per row of
    ``coverage.parquet`` (the arguments of :func:`dwell_error`, cap aside)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from cosim.results import read_arrow

    table = read_arrow(path, ["vehicle", "slot", "time_s", "rsu", "dwell_s"])
    if table.num_rows == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)

    def codes(col: pa.ChunkedArray) -> np.ndarray:
        enc = pc.dictionary_encode(col.cast(pa.string())).combine_chunks()
        return pc.fill_null(enc.indices.cast(pa.int64()), -1).to_numpy(zero_copy_only=False)

    col = lambda c: table[c].to_numpy()  # noqa: E731
    rsu = codes(table["rsu"])
    realised, arrived = realised_dwell(codes(table["vehicle"]), col("slot"), col("time_s"), rsu, slot_s)
    return col("dwell_s"), realised, rsu, arrived
