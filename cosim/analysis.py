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
sorting; :func:`dwell_error_from_parquet` walks ``coverage.parquet`` in record batches with the
one results reader (:func:`cosim.results.arrow_batches`; :func:`dwell_pairs_from_parquet`: the
per-row pairs, for plots). Its memory (issue 32): a run's last act, so it must not set the run's
peak. The table is never held whole: each batch goes into compact full-length columns (int32
vehicle and RSU codes and slots, float64 times), the realised dwell is worked out a
partition of vehicles at a time (:data:`PART_ROWS`) and scattered back in row order, the
predictions are read in a second walk once the vehicles and slots are let go, and the summary
frees each column once used and takes the median and p90 in place. What is left grows with the
rows only by the arrays the summary needs in row order (~25–30 bytes a row); the values are the
whole-table algorithm's, bit for bit (the same arrays in the same order reach the same numpy
reductions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


#: rows per partition of :func:`realised_dwell`: its sort and temporaries (~15 arrays) are of this
#: length, not of the table's
PART_ROWS = 1 << 18


def realised_dwell(vehicle: np.ndarray, slot: np.ndarray, time_s: np.ndarray, rsu: np.ndarray,
                   slot_s: float, *, last_slot: int | None = None,
                   part_rows: int = PART_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """(realised dwell [s] per row, NaN where censored or unserved; True where it ended by the
    vehicle leaving the simulation).

    ``vehicle``: integer code per row; ``rsu``: serving RSU code per row (-1 = none);
    ``last_slot``: the run's last slot (default ``slot.max()``). A row's value depends only on its
    own vehicle's rows and the last slot, so the rows are taken in partitions of about
    ``part_rows`` (vehicle code modulo the number of partitions) and each partition's values are
    scattered back in row order: the temporaries are of a partition's length, and the result is
    the same value for value whatever ``part_rows`` is.
    """
    n = len(vehicle)
    out, arrived = np.full(n, np.nan), np.zeros(n, dtype=bool)
    if n == 0:
        return out, arrived
    vehicle, slot, rsu, time_s = np.asarray(vehicle), np.asarray(slot), np.asarray(rsu), np.asarray(time_s, dtype=float)
    last = slot.max() if last_slot is None else last_slot
    k = -(-n // max(1, int(part_rows)))
    if k <= 1 or not np.issubdtype(vehicle.dtype, np.integer):
        _realised_part(vehicle, slot, time_s, rsu, slot_s, last, None, out, arrived)
        return out, arrived
    part = np.remainder(vehicle, k).astype(np.min_scalar_type(k - 1))
    for j in range(k):
        rows = np.flatnonzero(part == j)
        if len(rows):
            _realised_part(vehicle[rows], slot[rows], time_s[rows], rsu[rows], slot_s, last, rows, out, arrived)
    return out, arrived


def _realised_part(veh: np.ndarray, sl: np.ndarray, t: np.ndarray, srv: np.ndarray, slot_s: float, last,
                   rows: np.ndarray | None, out: np.ndarray, arrived: np.ndarray) -> None:
    """:func:`realised_dwell` on the rows of whole vehicles (``rows``: where they sit in ``out``
    and ``arrived``; None: all of them): sorted by vehicle then slot, a run of rows with one
    vehicle and one RSU ends at ``end``; its rows were handed over (a later row of the vehicle
    follows) or the vehicle left before ``last``."""
    n = len(veh)
    order = np.lexsort((sl, veh))
    veh, t, srv, sl = veh[order], t[order], srv[order], sl[order]
    same_next = np.zeros(n, dtype=bool)
    same_next[:-1] = veh[1:] == veh[:-1]
    del veh
    change = np.ones(n, dtype=bool)  # the last row of a run of rows with one vehicle and one RSU
    change[:-1] = ~same_next[:-1] | (srv[1:] != srv[:-1])
    ix = np.int32 if n < 2**31 - 1 else np.int64  # indices only
    end = np.minimum.accumulate(np.where(change, np.arange(n, dtype=ix), ix(n))[::-1])[::-1]
    del change
    served = srv >= 0
    handed = served & same_next[end]  # a later row of the same vehicle with another RSU (or none)
    gone = served & ~same_next[end] & (sl[end] < last)  # left the simulation before the run ended
    del served, same_next, sl
    res = np.full(n, np.nan)
    nxt = np.minimum(end + 1, n - 1)
    res[handed] = t[nxt[handed]] - t[handed] - slot_s / 2
    res[gone] = t[end[gone]] - t[gone] + slot_s / 2
    dest = order if rows is None else rows[order]
    out[dest], arrived[dest] = res, gone


def dwell_error(pred: np.ndarray, realised: np.ndarray, rsu: np.ndarray, cap_s: float,
                arrived: np.ndarray | None = None) -> dict:
    """Summary of predicted - realised dwell over uncensored, uncapped served rows.

    Its temporaries are bool masks and the compared rows (no copy for the median and the p90:
    they partition the absolute errors in place, after their mean has been taken)."""
    return _summary({"pred": np.asarray(pred, dtype=float), "realised": np.asarray(realised, dtype=float),
                     "served": np.asarray(rsu) >= 0, "arrived": arrived}, cap_s)


def _summary(cols: dict, cap_s: float) -> dict:
    """:func:`dwell_error` of the arrays in ``cols`` (``pred``, ``realised``, ``served``,
    ``arrived`` or None), taken out of it and let go as soon as they are used: where ``cols``
    held the only reference, a full-length column is freed before the next is made."""
    pred, realised, served, arrived = cols.pop("pred"), cols.pop("realised"), cols.pop("served"), cols.pop("arrived")
    capped = pred >= cap_s - 1e-9
    capped &= served
    known = np.isfinite(realised)
    use = served & known
    use &= ~capped
    censored = served & ~known
    censored &= ~capped
    block = {"rows_served": int(served.sum()), "rows_compared": int(use.sum()),
             "rows_censored": int(censored.sum()), "rows_capped": int(capped.sum())}
    del served, capped, known, censored
    if arrived is not None:
        block["rows_arrived"] = int((use & np.asarray(arrived)).sum())
    del arrived
    if block["rows_compared"]:
        seen = realised[use]
        del realised
        mean_realised = float(seen.mean())
        err = pred[use]
        del pred, use
        err -= seen  # pred[use] - realised[use], element by element
        del seen
        mean_error = float(err.mean())
        ae = np.abs(err, out=err)
        block.update({"mean_error_s": mean_error, "mean_abs_error_s": float(ae.mean()),
                      "median_abs_error_s": float(np.median(ae, overwrite_input=True)),
                      "p90_abs_error_s": float(np.quantile(ae, 0.9, overwrite_input=True)),
                      "mean_realised_s": mean_realised})
    return block


def dwell_error_from_parquet(path: str | Path, slot_s: float, cap_s: float, *, part_rows: int = PART_ROWS,
                             batch_rows: int = 1 << 16) -> dict:
    """:func:`dwell_error` of ``coverage.parquet`` (:func:`dwell_pairs_from_parquet`), each
    full-length column let go once used: the peak is about 25 bytes a row plus the batches'
    and partitions' temporaries (a tenth of a whole-table analysis's)."""
    cols = _pairs(path, slot_s, part_rows, batch_rows)
    cols["served"] = cols.pop("rsu") >= 0
    return _summary(cols, cap_s)


def dwell_pairs_from_parquet(path: str | Path, slot_s: float, *, part_rows: int = PART_ROWS,
                             batch_rows: int = 1 << 16) -> tuple:
    """(predicted dwell, realised dwell, serving RSU code (-1 none), ended by arrival) per row of
    ``coverage.parquet`` (the arguments of :func:`dwell_error`, cap aside).

    The table is walked in record batches (:func:`cosim.results.arrow_batches`) into compact
    full-length columns (int32 codes and slots, float64 times); :func:`realised_dwell` then works
    in partitions of ``part_rows``; the predictions are read in a second walk, once the
    vehicles, slots and times are let go."""
    c = _pairs(path, slot_s, part_rows, batch_rows)
    return c["pred"], c["realised"], c["rsu"], c["arrived"]


def _pairs(path: str | Path, slot_s: float, part_rows: int, batch_rows: int) -> dict:
    n, c = _columns(path, ("vehicle", "slot", "time_s", "rsu"), batch_rows)
    if n == 0:
        return {"pred": np.zeros(0), "realised": np.zeros(0), "rsu": np.zeros(0, dtype=np.int32),
                "arrived": np.zeros(0, dtype=bool)}
    realised, arrived = realised_dwell(c.pop("vehicle"), c.pop("slot"), c.pop("time_s"), c["rsu"], slot_s,
                                       part_rows=part_rows)
    m, p = _columns(path, ("dwell_s",), batch_rows)
    if m != n:
        raise ValueError(f"{path}: {m} rows where a first reading had {n}")
    return {"pred": p["dwell_s"], "realised": realised, "rsu": c["rsu"], "arrived": arrived}


def _columns(path: str | Path, names: tuple[str, ...], batch_rows: int) -> tuple[int, dict]:
    """(rows, {column: full-length array}) of coverage ``names``, read batch by batch:
    ``vehicle`` and ``rsu`` as int32 codes (:class:`_Codes`), ``slot`` as int32 (int64 where a
    slot needs it), ``time_s`` and ``dwell_s`` as float64."""
    from cosim.results import arrow_batches, numpy_of

    n, batches = arrow_batches(path, list(names), batch_rows)
    out = {c: np.empty(n, dtype=np.int32 if c in ("vehicle", "slot", "rsu") else np.float64) for c in names}
    codes = {c: _Codes() for c in ("vehicle", "rsu")}
    at = 0
    for b in batches:
        m = b.num_rows
        if at + m > n:
            raise ValueError(f"{path}: more rows than its parts say ({n})")
        for c in names:
            col = b.column(c)
            if c in codes:
                out[c][at:at + m] = codes[c](col)
                continue
            a = numpy_of(col)
            if c == "slot" and m and out[c].dtype == np.int32 and \
                    (a.max() > np.iinfo(np.int32).max or a.min() < np.iinfo(np.int32).min):
                out[c] = out[c].astype(np.int64)
            out[c][at:at + m] = a
        at += m
    if at != n:
        raise ValueError(f"{path}: {at} rows read where its parts say {n}")
    return n, out


class _Codes:
    """A string column, batch by batch, as int32 codes that hold across batches (each part
    file has its own dictionary): codes in order of first appearance, as Arrow's
    ``dictionary_encode`` of the whole column numbers them; null -> -1."""

    def __init__(self) -> None:
        self.code: dict[str, int] = {}

    def __call__(self, arr) -> np.ndarray:  # noqa: ANN001 - pyarrow.Array
        import pyarrow as pa

        from cosim.results import numpy_of

        if not pa.types.is_dictionary(arr.type):
            import pyarrow.compute as pc

            arr = pc.dictionary_encode(arr.cast(pa.string()))
        dictionary = arr.dictionary  # a cast to its own type would import pyarrow.compute (~0.1 s)
        values = (dictionary if dictionary.type == pa.string() else dictionary.cast(pa.string())).to_pylist()
        d = len(values)
        ind = numpy_of(arr.indices, fill=d)
        lut = np.full(d + 1, -1, dtype=np.int32)
        new = []
        for i, v in enumerate(values):
            if v is not None:
                c = self.code.get(v)
                if c is None:
                    new.append(i)
                else:
                    lut[i] = c
        if new:
            used = np.bincount(ind, minlength=d + 1)
            new = [i for i in new if used[i]]
            if len(new) > 1:  # number them as they first appear in the batch
                uniq, first = np.unique(ind, return_index=True)
                pos = dict(zip(uniq.tolist(), first.tolist()))
                new.sort(key=pos.__getitem__)
            for i in new:
                c = self.code.get(values[i])
                if c is None:
                    c = self.code[values[i]] = len(self.code)
                lut[i] = c
        return lut[ind]
