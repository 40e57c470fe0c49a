"""``cosim view RUN_DIR``: one self-contained ``view.html`` replaying a results folder.

Built from the results folder alone (``summary.json``, ``config.toml``, ``coverage.parquet``,
the layers' task tables) and the network file the configuration names, so it works on a replayed
run and on results copied elsewhere (``--net`` when the network moved). Everything is inlined —
data and a small canvas renderer, no network access, no CDN.

**What the page shows**: the network's edges, the RSU discs, the vehicles of the slot under the
time slider (play/pause, speed) coloured by serving RSU (grey: not covered); on top the tasks of a
chosen layer and policy running at that time, as the layer's task view says
(:attr:`cosim.layers.base.Layer.task_view`) — DViT ("chain"): user (magenta ring), the device
holding the current step (gold ring; the RSU when it computes) and a hand-off arrow from the
previous device; MoE ("group"): task vehicle and the IVs of the layer being executed, joined by
lines; a task that fails is marked red for 3 s. The side panel has the layer's summary
(``summary.json``: the columns the layer declares, :meth:`~cosim.layers.base.Layer.shown_metrics`)
and a latency / success-rate timeline (per time bin of request times) with a cursor. A layer
without tasks (the cache, a plugin layer such as the example's ``rsu_load``) is listed with its
summary table alone; a layer whose class cannot be found (its plugin is not installed here) is
left out. The results folder is read with :func:`cosim.results.load`.

**Controls** (docs/view.md): zoom (wheel, buttons, pinch) and pan (drag) through one transform
the page exposes (``window.cosimView.view``, the canvas's ``data-view``), fit on load and on a
button, keys (space, left/right, +/-, 0, b); hovering or clicking a vehicle shows its id, speed,
cell, serving RSU, predicted (``dwell_s``, :data:`DWELL_Q`) against realised dwell (worked out by
the page from the decoded rows as :func:`cosim.analysis.realised_dwell` defines it) and its tasks at the slot (from the layers' task views), clicking one of those
tasks its path over devices and RSUs drawn on the map and how it ended, clicking an RSU its disc,
load and a chart of its load and handovers in and out over the run (``rsu_series``, from ``rsus.parquet``);
filters by layer, policy, role and outcome; a strip of task failures over the run that jumps to
the moment clicked; an A/B mode marks the tasks whose success differs between two policies.

**Encoding** (issue 31: a 10,000-vehicle city run in <= 20 MB; docs/view.md): positions are
quantised to 16-bit coordinates over the network's bounding box (resolution = extent / 65535,
2.6 cm for grid6), rows sorted by (slot, RSU, vehicle). The vehicle rows travel in time windows
(:data:`WINDOW_S`), each a gzip-compressed blob of typed arrays (:func:`pack`), its rows by
vehicle, then slot, with x and y as second differences and speed and cell as first differences
along each vehicle's slots (:func:`vehicle_windows`); the task lists are packed the same way,
each time from the time before it (:func:`pack_tasks`), and rebuilt by the page into the same
objects. The page inflates the blobs with the browser's own ``DecompressionStream`` and loads
progressively: the first window drawn, then the tasks, then the other windows. The map's ground
(:data:`GROUND`) fills the canvas, also beyond the drawn background while a pan shows it shifted. **Subsampling**: only every k-th slot's vehicle rows are kept, k the smallest
for which the page fits ``max_bytes`` (and ``max_rows``); the page says so.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import re
from importlib import resources
from pathlib import Path

import numpy as np

from cosim.errors import CosimError
from cosim.layers.base import ROLE_FAILED, ROLE_HELPER, ROLE_IV, ROLE_USER
from cosim.palette import RSU_COLORS, ROLE_COLORS, ROLE_LABELS, UNCOVERED, hex_color
from cosim.recorder import claim_output
from cosim.results import COVERAGE_COLUMNS, load

#: default budget of the page's size [bytes] (issue 31: a 10,000-vehicle city run in <= 20 MB):
#: beyond it only every k-th slot's vehicle rows are kept, k the smallest that fits
MAX_BYTES = 20_000_000
#: optional budget of vehicle rows (``--max-rows``; None: the byte budget alone decides)
MAX_ROWS = None
#: the vehicle rows travel in time windows of this many seconds of run time, each compressed on
#: its own; the page decodes the first, draws it, then decodes the others one by one
WINDOW_S = 300.0
#: task and segment times travel as integer ticks, this many per second (the page data's rounding:
#: times to 4 decimals, latencies to 5)
TICKS, LAT_TICKS = 10_000, 100_000  # LAT_TICKS a multiple of TICKS (pack_tasks; the page: LAT_TICKS / TICKS)
if LAT_TICKS % TICKS:  # else pack_tasks' latency (whole time ticks of LAT_TICKS // TICKS) decodes wrongly
    raise ValueError(f"cosim/view.py: LAT_TICKS ({LAT_TICKS}) must be a multiple of TICKS ({TICKS})")
Q = 65535  # quantisation levels per axis
#: coverage columns the vehicle panel shows (left out of the page when the table lacks them)
PANEL_COLUMNS = ("speed_mps", "cell", "dwell_s")
#: speed quantum of the page [m/s]: one byte per row, 0 .. 63.75 m/s (229 km/h; faster clipped)
SPEED_Q = 0.25
#: quantum of the predicted dwell (``dwell_s``) in the page [s] (``--dwell-step``; ours): one byte a row
#: (a sentinel, the type's largest code, for a row with no serving RSU or no prediction) while the
#: largest prediction / step < 255, else two. Coded as the difference to the same vehicle's previous
#: slot (a prediction falls about one slot a slot). On the 10,000-vehicle city run, per row of page
#: (base64, gzip): 0.22 bytes at 5 s, 0.41 at 1 s (two bytes), 0.53 at 0.5 s; 5 s keeps its page
#: <= 20 MB with every slot (docs/view.md)
DWELL_Q = 5.0
#: the map's ground colour (ours): under the network and RSUs, and beyond the background's picture
#: while a pan or zoom shows it scaled and shifted (the page's stand-in until the view rests)
GROUND = "#f2f1ec"
#: timeline bins: about this many over the run, at least one slot wide
TIMELINE_BINS = 60
#: RSU chart bins (``rsu_series``): about this many over the run, at least one slot wide
RSU_BINS = 120


# -- encoding --------------------------------------------------------------------------------
def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()).decode("ascii")


#: typed-array names the page knows (view.js ``TYPES``)
_TYPE_NAMES = {np.dtype(np.uint8): "u8", np.dtype(np.uint16): "u16", np.dtype(np.uint32): "u32",
               np.dtype(np.int32): "i32", np.dtype(np.float64): "f64"}


def pack(arrays: list[tuple[str, np.ndarray]]) -> dict:
    """Named 1-d arrays as one gzip-compressed, base64 blob: ``{"z": base64, "layout": [[name,
    type, length], ...]}``. The arrays are concatenated little-endian, the wider element types
    first (so the page can view each one in place, aligned); the page inflates the blob with the
    browser's own ``DecompressionStream("gzip")``."""
    arrays = sorted(arrays, key=lambda na: -na[1].dtype.itemsize)  # stable: same width keeps its order
    raw = b"".join(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes() for _, a in arrays)
    return {"z": base64.b64encode(gzip.compress(raw, GZIP_LEVEL, mtime=0)).decode("ascii"),
            "layout": [[n, _TYPE_NAMES[a.dtype], int(len(a))] for n, a in arrays]}


#: zlib level of the blobs (6: on the city run 2.5 % more bytes than 9 in a third of the time)
GZIP_LEVEL = 6


class Quantiser:
    """World [m] <-> 16-bit grid over the bounding box (one scale for both axes)."""

    def __init__(self, xmin: float, ymin: float, xmax: float, ymax: float):
        self.x0, self.y0 = xmin, ymin
        self.scale = max(xmax - xmin, ymax - ymin, 1.0) / Q

    def q(self, v: np.ndarray, origin: float) -> np.ndarray:
        return np.clip(np.rint((np.asarray(v, dtype=float) - origin) / self.scale), 0, Q).astype(np.uint16)

    def meta(self) -> dict:
        return {"x0": self.x0, "y0": self.y0, "scale": self.scale}


def _timeline(df, t_end: float, slot_s: float) -> dict:
    """Per policy: mean realised latency and success rate per bin of request time."""
    width = max(slot_s, t_end / TIMELINE_BINS) if t_end > 0 else slot_s
    out = {}
    for policy, g in df.groupby("policy", sort=False):
        b = np.floor(g["t_request_s"].to_numpy() / width).astype(int)
        lat, ok = g["latency_s"].to_numpy(dtype=float), g["success"].to_numpy(dtype=bool)
        n = int(b.max()) + 1 if len(b) else 0
        ended = (g["outcome"] != "censored").to_numpy() if "outcome" in g else np.ones(len(g), dtype=bool)
        cnt = np.bincount(b[ended], minlength=n)  # the success rate is over the tasks that ended
        fin = np.isfinite(lat)
        lsum = np.bincount(b[fin], weights=lat[fin], minlength=n)
        lcnt = np.bincount(b[fin], minlength=n)
        succ = np.bincount(b[ended], weights=ok[ended].astype(float), minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[str(policy)] = {"t": ((np.arange(n) + 0.5) * width).round(3).tolist(),
                                "latency": [None if c == 0 else round(float(v), 5) for v, c in zip(lsum / lcnt, lcnt)],
                                "success": [None if c == 0 else round(float(v), 4) for v, c in zip(succ / cnt, cnt)]}
    return out


def _rsu_series(res, rsu_ids: list, slot_s: float) -> dict | None:
    """The RSU panel's chart (key ``rsu_series``), from ``rsus.parquet``: per RSU (in the page's
    order) and per bin of time (``width`` seconds, about :data:`RSU_BINS` over the table's last
    ``time_s``, at least a slot; bin b holds the slots with ``b*width <= time_s < (b+1)*width``): ``load``, the mean of
    ``connected`` (vehicles served) over the bin's slots, and ``hin``/``hout``, the sums of
    ``handover_in``/``handover_out``. None when the run wrote no RSU table."""
    if "rsus" not in res.names:
        return None
    df = res.table("rsus", ["time_s", "rsu", "connected", "handover_in", "handover_out"])
    if df.empty:
        return None
    t_end = float(df["time_s"].max())
    width = max(slot_s, t_end / RSU_BINS) if t_end > 0 else slot_s
    n = int(math.floor(t_end / width)) + 1
    b = np.minimum(np.floor(df["time_s"].to_numpy(dtype=float) / width).astype(np.int64), n - 1)
    ix = {rid: i for i, rid in enumerate(rsu_ids)}
    r = df["rsu"].astype(object).map(lambda v: ix.get(str(v), -1)).to_numpy(dtype=np.int64)
    keep = r >= 0
    key = r[keep] * n + b[keep]
    size = len(rsu_ids) * n

    def total(col: str) -> np.ndarray:
        return np.bincount(key, weights=df[col].to_numpy(dtype=float)[keep], minlength=size).reshape(len(rsu_ids), n)

    rows = np.bincount(key, minlength=size).reshape(len(rsu_ids), n)
    with np.errstate(invalid="ignore", divide="ignore"):
        load = total("connected") / rows
    hin, hout = total("handover_in"), total("handover_out")
    return {"width": round(width, 6), "n": n,
            "rsu": [{"load": [None if c == 0 else round(float(v), 2) for v, c in zip(load[i], rows[i])],
                     "hin": [int(v) for v in hin[i]], "hout": [int(v) for v in hout[i]]}
                    for i in range(len(rsu_ids))]}


def _windows_of(times: np.ndarray, window_s: float) -> np.ndarray:
    """The time window of each kept slot: ``floor((t - t_first) / window_s)``, renumbered 0, 1, ..."""
    if not len(times):
        return np.zeros(0, dtype=np.int64)
    w = np.floor((times - times[0]) / max(window_s, 1e-9)).astype(np.int64)
    return np.unique(w, return_inverse=True)[1].ravel()


def vehicle_windows(si: np.ndarray, vid: np.ndarray, cols: list[tuple[str, np.ndarray, int]],
                    n_slots: int, win: np.ndarray) -> list[dict]:
    """The vehicle rows (``si``: each row's kept-slot index) as one :func:`pack` blob per time window
    (``win``: the window of each kept slot). A blob's rows go **by vehicle, then slot** (each
    vehicle's slots of the window one after another; the page puts them back in (slot, RSU,
    vehicle) order with two stable counting sorts): ``vid`` and ``slot`` (the slot's index in the
    window) as the difference, modulo their width, to the previous row's (mostly 0 and 1), then
    the columns ``cols`` ``(name, array, order)``, each an unsigned integer. A column of order 1 is
    written as the difference, modulo its width, to the same vehicle's value in the previous kept
    slot (the row before, when it is that vehicle's and that slot's), of order 2 as the difference
    to the linear prediction from the two slots before (``a[i] - 2 a[i-1] + a[i-2]``, where both
    are in the window; else order 1), then zigzagged in two byte planes (:func:`_planes`; 16-bit:
    x and y); otherwise as is. A vehicle moves about as far in one slot as in the one before, and
    one vehicle's differences side by side repeat (a vehicle cruising, waiting, keeping its cell
    and RSU), which the compression finds where a slot's rows interleaved ~1,300 vehicles: on the
    10,000-vehicle city run 2.42 bytes a row of page (2.66 without the byte planes) against 3.37 in
    slot order (docs/view.md). Each window decodes on its own."""
    n = len(si)
    o = np.lexsort((si, vid, win[si]) if n else (si,))  # by window, vehicle, slot
    a, b = o[:-1], o[1:]
    same = (vid[b] == vid[a]) & (si[b] == si[a] + 1)
    same &= win[si[b]] == win[si[a]]
    prev = np.full(n, -1, dtype=np.int64)
    prev[b[same]] = a[same]
    has = prev >= 0
    prev2 = np.full(n, -1, dtype=np.int64)
    prev2[has] = prev[prev[has]]
    has2 = prev2 >= 0
    enc = []
    for name, arr, order in cols:
        if order:
            wide = arr.astype(np.int64)
            d = wide.copy()
            d[has] -= wide[prev[has]]
            if order == 2:
                d[has2] -= wide[prev[has2]] - wide[prev2[has2]]
            arr = (d % (1 << (8 * arr.dtype.itemsize))).astype(arr.dtype)  # modulo the width, as the page adds back
        enc.append((name, arr[o], order))
    counts = np.bincount(si, minlength=n_slots)
    vo, so = vid[o], si[o]
    out = []
    for w in range(int(win.max()) + 1 if len(win) else 0):
        s0, s1 = np.searchsorted(win, w, "left"), np.searchsorted(win, w, "right")
        r0, r1 = int(counts[:s0].sum()), int(counts[:s1].sum())  # the window's rows, here and in the page
        v = vo[r0:r1].astype(np.int64)
        s = so[r0:r1].astype(np.int64) - s0
        sdt = np.uint16 if s1 - s0 <= 65536 else np.uint32
        blob = pack([("vid", (np.diff(v, prepend=0) % (1 << (8 * vid.dtype.itemsize))).astype(vid.dtype)),
                     ("slot", (np.diff(s, prepend=0) % (1 << (8 * np.dtype(sdt).itemsize))).astype(sdt))]
                    + [(nm, _planes(a[r0:r1]) if order == 2 else a[r0:r1]) for nm, a, order in enc])
        out.append({"s0": int(s0), "s1": int(s1), "r0": r0, "rows": r1 - r0, **blob})
    return out


def _planes(d: np.ndarray) -> np.ndarray:
    """16-bit differences (modulo 2^16) zigzagged (signed s -> 2s, or -2s - 1 below 0) and split
    into two byte planes, all low bytes then all high bytes, as one ``uint8`` array of twice the
    length (the page puts them back: view.js ``fillWindow``). On the city run x and y go from 0.73
    to 0.61 bytes a row of page each (the high bytes, mostly 0 or 255 as they were, are now 0)."""
    if d.dtype != np.uint16:
        raise ValueError(f"byte planes are for 16-bit columns, not {d.dtype}")
    v = d.astype(np.int64)
    v -= (v >= 32768) * 65536
    z = ((v << 1) ^ (v >> 63)).astype(np.uint16)
    return np.ascontiguousarray(z.astype("<u2").view(np.uint8).reshape(-1, 2).T).ravel()


def pack_tasks(tasks: list[dict]) -> dict | None:
    """One policy's task list (as :func:`build_data` makes it) as a :func:`pack` blob, the page
    rebuilding the same objects from it; None when it cannot be packed losslessly (then the list
    travels as JSON). Times are integer ticks of :data:`TICKS` per second (the precision the list
    carries), each from the time before it, so what is known already is not sent again: the
    request as the difference to the previous task's (the list is sorted by request time), a
    segment's start to the end of the segment before (the request for the first: the upload; the
    task views' segments follow one another, so 0 after the first), its end as its length, the
    task's end to the last segment's end (mostly 0), the latency in :data:`LAT_TICKS` as the
    difference to end − request (a few ticks of rounding; flag 4: the task has a latency);
    the failure reasons and the layer's extra keys (DViT: the RSU's position) as tables of the
    distinct values; a segment's vehicle as ``wn`` = 65535 and one value (a ``chain`` device), or
    ``wn`` values (a ``group``)."""
    core = {"u", "t0", "end", "ok", "why", "lat", "segs", "id", "c"}

    def ticks(v: float, per: int) -> int:  # exactly: the page's ticks / per gives v back
        t = round(v * per)
        if t / per != v:
            raise ValueError
        return t

    why, extra = {}, {}
    cols: dict[str, list] = {k: [] for k in ("u", "t0", "end", "lat", "flags", "why", "id", "extra", "nseg",
                                            "s0", "s1", "wn", "wv")}
    has_id = bool(tasks) and all("id" in t for t in tasks)
    try:
        last_t, last_id = 0, 0
        per = LAT_TICKS // TICKS  # latency ticks per time tick
        for t in tasks:
            t0 = ticks(t["t0"], TICKS)
            end = ticks(t["end"], TICKS)
            cols["u"].append(t["u"])
            cols["t0"].append(t0 - last_t)
            last_t = t0
            cols["lat"].append(0 if t["lat"] is None else ticks(t["lat"], LAT_TICKS) - (end - t0) * per)
            cols["flags"].append((1 if t["ok"] else 0) | (2 if t.get("c") else 0) | (0 if t["lat"] is None else 4))
            cols["why"].append(why.setdefault(t["why"], len(why)))
            if has_id:
                cols["id"].append(t["id"] - last_id)
                last_id = t["id"]
            ex = json.dumps({k: v for k, v in t.items() if k not in core}, separators=(",", ":"), sort_keys=True)
            cols["extra"].append(extra.setdefault(ex, len(extra)))
            cols["nseg"].append(len(t["segs"]))
            prev = t0  # the request, then the end of the segment before
            for who, a, b in t["segs"]:
                s0 = ticks(a, TICKS)
                cols["s0"].append(s0 - prev)
                prev = ticks(b, TICKS)
                cols["s1"].append(prev - s0)
                if isinstance(who, list):
                    if len(who) >= 65535:
                        raise ValueError
                    cols["wn"].append(len(who))
                    cols["wv"].extend(who)
                else:
                    cols["wn"].append(65535)
                    cols["wv"].append(who)
            cols["end"].append(end - prev)
        dtypes = {"u": np.int32, "t0": np.uint32, "end": np.int32, "lat": np.int32, "flags": np.uint8,
                  "why": np.uint32, "id": np.int32, "extra": np.uint32, "nseg": np.uint32, "s0": np.int32,
                  "s1": np.int32, "wn": np.uint16, "wv": np.int32}
        arrays = []
        for k, v in cols.items():
            a = np.asarray(v, dtype=np.int64)
            info = np.iinfo(dtypes[k])
            if len(a) and (a.min() < info.min or a.max() > info.max):
                raise ValueError
            arrays.append((k, a.astype(dtypes[k])))
    except (ValueError, TypeError, KeyError, OverflowError):
        return None
    return {"n": len(tasks), "has_id": has_id, "why": list(why), "extra": list(extra), **pack(arrays)}


def build_data(run_dir: str | Path, net: str | Path | None = None, max_rows: int | None = MAX_ROWS,
               max_bytes: int | None = MAX_BYTES, window_s: float = WINDOW_S, dwell_step: float = DWELL_Q) -> dict:
    """The page's data (JSON-able): the tasks as lists of objects (``layers[l]["tasks"]``) and
    packed (``layers[l]["packed"]``, what the page carries: :func:`page_payload`), the vehicle
    rows packed in time windows (:func:`vehicle_windows`). Every k-th slot is kept, k the smallest
    with at most ``max_rows`` rows (None: any) and a page of at most ``max_bytes`` (None: any)."""
    from cosim.world.network import edge_shapes

    res = load(run_dir)
    shown = res.shown(net)
    run, summary, rsus = res.path, shown.summary, shown.rsus
    shapes = edge_shapes(shown.net)
    allxy = np.concatenate([s for s in shapes] + [np.array([[r["x"] - r["radius_m"], r["y"] - r["radius_m"]],
                                                            [r["x"] + r["radius_m"], r["y"] + r["radius_m"]]])
                                                  for r in rsus])
    for extra in (PANEL_COLUMNS, PANEL_COLUMNS[:2], ()):  # speed, cell, dwell for the vehicle panel, when
        if shown.no_coverage:  # output.coverage = false: no vehicles; the network, RSUs and layers' panels
            import pandas as pd

            cov = pd.DataFrame({"slot": pd.Series(dtype=np.int64), "time_s": pd.Series(dtype=float),
                                "vehicle": pd.Series(dtype=object), "x": pd.Series(dtype=float),
                                "y": pd.Series(dtype=float), "rsu": pd.Series(dtype=object)})
            break
        try:                                                # the table has them (a run's always does)
            cov = res.table("coverage", [*COVERAGE_COLUMNS, *extra])
            break
        except CosimError:
            if not extra:
                raise
    if len(cov):
        allxy = np.concatenate([allxy, [[cov["x"].min(), cov["y"].min()], [cov["x"].max(), cov["y"].max()]]])
    qz = Quantiser(allxy[:, 0].min(), allxy[:, 1].min(), allxy[:, 0].max(), allxy[:, 1].max())
    # vehicles: every row's columns, sorted by (slot, serving RSU, vehicle); the slots kept are
    # chosen below, once the rest of the page's size is known
    slots = np.sort(cov["slot"].unique()) if len(cov) else np.zeros(0, dtype=np.int64)
    rsu_index = {r["id"]: i for i, r in enumerate(rsus)}
    rcat = cov["rsu"].astype("category")  # the ids seen, each looked up once (not once per row)
    lut = np.array([rsu_index.get(v, -1) if isinstance(v, str) else -1 for v in rcat.cat.categories] + [-1], np.int64)
    rsu_code = lut[rcat.cat.codes.to_numpy()]  # code -1 (no RSU) takes the last entry
    none = 255 if len(rsus) < 255 else 65535
    rsu_arr = np.where(rsu_code >= 0, rsu_code, none).astype(np.uint8 if none == 255 else np.uint16)
    vcat = cov["vehicle"].astype("category")
    names = [str(v) for v in vcat.cat.categories]
    vid = vcat.cat.codes.to_numpy().astype(np.uint16 if len(names) <= 65536 else np.uint32)
    slot_ix = np.searchsorted(slots, cov["slot"].to_numpy())
    order = np.lexsort((vid, rsu_arr, slot_ix))
    slot_ix, vid, rsu_arr = slot_ix[order], vid[order], rsu_arr[order]
    slot_times = cov.groupby("slot")["time_s"].first().reindex(slots).to_numpy(dtype=float) if len(cov) else np.zeros(0)
    # (name, values, order of differences): what the page's vehicle arrays hold per row
    cols = [("x", qz.q(cov["x"].to_numpy()[order], qz.x0), 2), ("y", qz.q(cov["y"].to_numpy()[order], qz.y0), 2),
            ("rsu", rsu_arr, 0)]
    panel = {}
    if "speed_mps" in cov:
        sp = np.clip(np.rint(np.nan_to_num(cov["speed_mps"].to_numpy(dtype=float)) / SPEED_Q), 0, 255)
        cols.append(("speed", sp.astype(np.uint8)[order], 1))
        panel["speed_q"] = SPEED_Q
    if "cell" in cov:  # the world's cell index; -1 (none) and the widest code mean "no cell"
        cell = cov["cell"].to_numpy()
        wide = len(cell) and int(cell.max()) >= 65535
        nocell = 0xFFFFFFFF if wide else 65535
        cols.append(("cell", np.where(cell >= 0, cell, nocell).astype(np.uint32 if wide else np.uint16)[order], 1))
        panel["no_cell"] = nocell
    if "dwell_s" in cov:  # the world's predicted dwell, in dwell_step quanta; the widest code: none
        qd = np.divide(cov["dwell_s"].to_numpy(dtype=float), dwell_step)  # one temporary of a row's float
        ok = np.isfinite(qd)
        ok &= rsu_code >= 0
        qd[~ok] = 0.0
        np.rint(qd, out=qd)
        np.maximum(qd, 0.0, out=qd)
        nodw = 255 if qd.max(initial=0.0) < 255 else 65535
        np.minimum(qd, nodw - 1, out=qd)
        code = qd.astype(np.uint8 if nodw == 255 else np.uint16)
        del qd
        code[~ok] = nodw
        cols.append(("dwell", code[order], 1))
        panel["dwell_q"], panel["no_dwell"] = dwell_step, nodw
        del code, ok
    del cov
    # edges
    flat = np.concatenate(shapes) if shapes else np.zeros((0, 2))
    eoff = np.concatenate([[0], np.cumsum([len(s) for s in shapes])]).astype(np.uint32)
    # tasks
    name_ix = {n: i for i, n in enumerate(names)}
    layers = {}
    slot_s = float(summary.get("slot_s") or 1.0)
    t_end = float(slot_times[-1]) if len(slot_times) else 0.0
    if shown.no_coverage:  # the layers' timelines run to the run's end, which no vehicle row says
        t_end = float(summary.get("sim_time_end_s") or 0.0)
    tables = res.task_tables()
    for layer, cls in res.layers().items():
        columns = [[m.key, m.digits] for m in cls.shown_metrics()]
        block = summary.get("layers", {}).get(layer, {})
        entries = {p: v for p, v in block.items() if isinstance(v, dict)}
        df = tables.get(layer)
        if cls.task_table is None and columns and entries:  # a layer without tasks: its summary
            layers[layer] = {"policies": list(entries), "tasks": {}, "summary": entries, "timeline": {},
                             "columns": columns, "draw": None}
        if df is None or df.empty or cls.task_view is None:
            continue
        view = cls.task_view
        index = lambda name: name_ix.get(name, -2)  # noqa: E731
        per_policy: dict[str, list] = {}
        for row in df.to_dict("records"):
            u = name_ix.get(str(row[view.vehicle]), -1)
            segs, end, extra = view.segments(row, index, rsus)
            per_policy.setdefault(str(row["policy"]), []).append({
                "u": u, "t0": round(float(row["t_request_s"]), 4), "end": round(end, 4),
                "ok": bool(row["success"]), "why": str(row["failure"] or ""),
                "lat": None if not math.isfinite(float(row["latency_s"])) else round(float(row["latency_s"]), 5),
                "segs": segs, **extra,
                # the request's id across policies (A/B pairing, as cosim.pairing); censored marked
                **({"id": int(row["task"])} if "task" in row else {}),
                **({"c": 1} if row.get("outcome") == "censored" else {})})
        for tasks in per_policy.values():
            tasks.sort(key=lambda t: t["t0"])
        layers[layer] = {"policies": list(per_policy), "tasks": per_policy, "summary": entries,
                         "timeline": _timeline(df, t_end, slot_s), "columns": columns, "draw": view.draw,
                         "packed": {p: pack_tasks(t) for p, t in per_policy.items()}}
    data = {
        "title": f"{summary.get('scenario') or run.name} — seed {summary.get('seed')}, {summary.get('slots')} slots"
                 + (" (incomplete)" if shown.incomplete else ""),
        "incomplete": shown.incomplete,
        "no_coverage": shown.no_coverage,
        "transform": qz.meta(),
        "bounds": [float(v) for v in allxy.min(axis=0)] + [float(v) for v in allxy.max(axis=0)],
        "edges": {"xy": _b64(np.column_stack([qz.q(flat[:, 0], qz.x0), qz.q(flat[:, 1], qz.y0)]).ravel() if len(flat)
                             else np.zeros(0, np.uint16)), "off": _b64(eoff)},
        "rsus": [{"id": r["id"], "x": r["x"], "y": r["y"], "r": r["radius_m"]} for r in rsus],
        "vehicles": {"names": names, "none": none, "all_slots": int(len(slots)), **panel},
        "layers": layers,
        "colors": {"rsu": [hex_color(c) for c in RSU_COLORS], "uncovered": hex_color(UNCOVERED), "ground": GROUND,
                   "user": hex_color(ROLE_COLORS[ROLE_USER]), "helper": hex_color(ROLE_COLORS[ROLE_HELPER]),
                   "iv": hex_color(ROLE_COLORS[ROLE_IV]), "failed": hex_color(ROLE_COLORS[ROLE_FAILED])},
        "labels": {k: ROLE_LABELS[k] for k in (ROLE_USER, ROLE_HELPER, ROLE_IV, ROLE_FAILED)},
        "slot_s": slot_s,
        # the RSU panel's load and handover chart (None: no rsus.parquet)
        "rsu_series": _rsu_series(res, [r["id"] for r in rsus], slot_s),
        "ticks": [TICKS, LAT_TICKS],
    }
    # the slots kept: every k-th, k the smallest that fits the row budget and the page's byte budget
    # (the page's bytes: the data's JSON, the template and the script)
    overhead = len(_PAGE) + len(resources.files("cosim").joinpath("view.js").read_text(encoding="utf-8").encode())

    def page_bytes() -> int:
        return len(script_json(page_payload(data)).encode()) + overhead

    stride = max(1, math.ceil(len(slot_ix) / max_rows)) if max_rows else 1
    while True:
        keep = slot_ix % stride == 0
        kept = slots[::stride]
        win = _windows_of(slot_times[::stride], window_s)
        windows = vehicle_windows(slot_ix[keep] // stride, vid[keep], [(n, a[keep], d) for n, a, d in cols], len(kept), win)
        data["vehicles"].update({"slots": [int(s) for s in kept], "times": [round(float(t), 4) for t in slot_times[::stride]],
                                 "rows": int(keep.sum()), "stride": stride, "window_s": window_s, "windows": windows,
                                 "delta": {n: d for n, _, d in cols if d},
                                 "planes": [n for n, _, d in cols if d == 2]})
        if not max_bytes or stride >= max(len(slots), 1):
            break
        size = page_bytes()
        if size <= max_bytes:
            break
        rows_bytes = sum(len(w["z"]) for w in windows)  # they fall about as 1/stride, a little slower
        avail = max(max_bytes - (size - rows_bytes), 1)
        stride = min(max(stride + 1, math.ceil(stride * rows_bytes / avail)), max(len(slots), 1))
    return data


def page_payload(data: dict) -> dict:
    """What the page carries: ``data`` with each layer's packed task lists in ``packed`` and only
    the lists that could not be packed left in ``tasks``."""
    layers = {}
    for name, L in data["layers"].items():
        packed = {p: b for p, b in (L.get("packed") or {}).items() if b is not None}
        layers[name] = {**L, "packed": packed, "tasks": {p: t for p, t in L["tasks"].items() if p not in packed}}
    return {**data, "layers": layers}


def write_view(run_dir: str | Path, out: str | Path | None = None, net: str | Path | None = None,
               max_rows: int | None = MAX_ROWS, max_bytes: int | None = MAX_BYTES, window_s: float = WINDOW_S,
               dwell_step: float = DWELL_Q) -> Path:
    """Write the page (default ``RUN_DIR/view.html``); returns its path."""
    data = build_data(run_dir, net, max_rows, max_bytes, window_s, dwell_step)
    js = resources.files("cosim").joinpath("view.js").read_text()
    path = Path(out) if out else Path(run_dir) / "view.html"
    claim_output(run_dir, path)
    path.write_text(render_page(data, js), encoding="utf-8")
    return path


#: what JSON text must not carry into an HTML ``<script>`` element: ``<`` (``</script>``,
#: ``<!--``), ``>`` and ``&`` for symmetry with HTML, U+2028/2029 (line breaks to old JS parsers)
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_PLACEHOLDER = re.compile(r"@@(DATA|JS|TITLE|GROUND)@@")


def script_json(data: dict) -> str:
    """``data`` as JSON that is inert inside ``<script type="application/json">``: every ``<``,
    ``>``, ``&``, U+2028 and U+2029 written as a ``\\uXXXX`` escape. These characters occur in JSON
    only inside strings, where the escape means the same character, so ``JSON.parse`` returns the
    data unchanged while no ``</script>``, ``<!--`` or other markup can appear in the page."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group()], text)


def render_page(data: dict, js: str) -> str:
    """The page: the template's placeholders substituted in one pass (a substituted text is never
    scanned again, so data that spells a placeholder stays data); the title HTML-escaped."""
    if re.search(r"</script", js, re.IGNORECASE):
        raise CosimError("view.js contains '</script': it cannot be inlined")
    parts = {"DATA": script_json(page_payload(data)), "JS": js, "TITLE": _esc(str(data["title"])), "GROUND": GROUND}
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], _PAGE)


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cosim view: @@TITLE@@</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
html,body{margin:0;height:100%;font:13px system-ui,sans-serif;color:#222}
#wrap{display:flex;height:100%}
#map{flex:1;position:relative;min-width:200px}
#cv{position:absolute;inset:0;width:100%;height:100%;background:@@GROUND@@}
#side{width:380px;overflow:auto;border-left:1px solid #ccc;padding:8px 10px;box-sizing:border-box}
#side h1{font-size:14px;margin:0 0 6px}
table{border-collapse:collapse;font-size:12px;width:100%}
td,th{border-bottom:1px solid #eee;padding:2px 4px;text-align:right}
td:first-child,th:first-child{text-align:left}
tr.sel{background:#fff3c4}
#slider{width:100%}
.row{display:flex;gap:6px;align-items:center;margin:4px 0;flex-wrap:wrap}
.sw{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:3px;vertical-align:middle}
#note{color:#a60;font-size:12px}
#zoom{position:absolute;top:8px;left:8px;display:flex;gap:4px}
#zoom button{min-width:28px}
#cv{touch-action:none;cursor:crosshair}
.hint{color:#666;font-size:12px}
#inspect td,#task td,#faillist td{text-align:left}
tr.pick{cursor:pointer}tr.pick:hover{background:#eef}
#fails{cursor:pointer;display:block}
#side canvas{max-width:100%}
#filters label{margin-right:4px}
</style></head><body>
<div id="wrap"><div id="map"><canvas id="cv"></canvas>
<div id="zoom"><button id="zin" title="zoom in (+)">+</button><button id="zout" title="zoom out (-)">&minus;</button>
<button id="fit" title="fit the network (0)">fit</button></div></div>
<div id="side"><h1 id="title"></h1>
<div class="row"><button id="play">play</button>
<label>speed <select id="speed"><option>1</option><option>2</option><option>5</option><option selected>10</option>
<option>30</option><option>60</option></select> slots/s</label></div>
<input id="slider" type="range" min="0" max="0" value="0" step="1">
<canvas id="fails" width="360" height="40" title="task failures over the run: click to jump there"></canvas>
<div id="faillist"></div>
<div class="row" id="clock"></div><div id="note"></div>
<div class="row"><label>tasks of <select id="layer"></select></label><label>policy <select id="policy"></select></label></div>
<div class="row"><label>A/B: against <select id="versus"></select></label><button id="swap" title="swap A and B (b)">swap A/B</button></div>
<div class="row hint" id="ab"></div>
<div id="legend"></div>
<h1>filters</h1><div id="filters"></div>
<h1>inspect</h1><div id="inspect"></div>
<h1>task</h1><div id="task"></div>
<h1>per-policy summary</h1><table id="summary"></table>
<h1>latency (solid, left) and success rate (dashed, right) by request time</h1>
<canvas id="tl" width="360" height="180"></canvas>
<div class="row" id="drawn"></div>
</div></div>
<script id="cosim-data" type="application/json">@@DATA@@</script>
<script>@@JS@@</script>
</body></html>
"""
