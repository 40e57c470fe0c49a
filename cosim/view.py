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
cell, serving RSU and its tasks at the slot (from the layers' task views), clicking one of those
tasks its path over devices and RSUs drawn on the map and how it ended, clicking an RSU its disc,
load and a chart of its load and handovers over the run (``rsu_series``, from ``rsus.parquet``);
filters by layer, policy, role and outcome; a strip of task failures over the run that jumps to
the moment clicked; an A/B mode marks the tasks whose success differs between two policies.

**Encoding** (kept small so the page stays responsive): vehicle rows are quantised to 16-bit
coordinates over the network's bounding box (resolution = extent / 65535, 2.6 cm for grid6),
sorted by (slot, RSU) so the renderer changes colour once per RSU, and stored as base64 typed
arrays; edges likewise. Task times are rebuilt from the per-step columns by the layer's task view
(DViT: :func:`cosim.layers.dvit.contract.task_segments`). **Subsampling**: when the run has more than ``max_rows`` vehicle rows, only every k-th slot
is kept (k the smallest that fits; the page says so), so city runs degrade to a coarser replay
instead of a huge file.
"""

from __future__ import annotations

import base64
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

#: default budget of vehicle rows in the page (600 s x ~500 vehicles = 300 k)
MAX_ROWS = 1_500_000
Q = 65535  # quantisation levels per axis
#: coverage columns the vehicle panel shows (left out of the page when the table lacks them)
PANEL_COLUMNS = ("speed_mps", "cell")
#: speed quantum of the page [m/s]: one byte per row, 0 .. 63.75 m/s (229 km/h; faster clipped)
SPEED_Q = 0.25
#: timeline bins: about this many over the run, at least one slot wide
TIMELINE_BINS = 60
#: RSU chart bins (``rsu_series``): about this many over the run, at least one slot wide
RSU_BINS = 120


# -- encoding --------------------------------------------------------------------------------
def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()).decode("ascii")


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


def build_data(run_dir: str | Path, net: str | Path | None = None, max_rows: int = MAX_ROWS) -> dict:
    """The page's data (JSON-able)."""
    from cosim.world.network import edge_shapes

    res = load(run_dir)
    shown = res.shown(net)
    run, summary, rsus = res.path, shown.summary, shown.rsus
    shapes = edge_shapes(shown.net)
    allxy = np.concatenate([s for s in shapes] + [np.array([[r["x"] - r["radius_m"], r["y"] - r["radius_m"]],
                                                            [r["x"] + r["radius_m"], r["y"] + r["radius_m"]]])
                                                  for r in rsus])
    try:  # speed and cell for the vehicle panel, when the table has them (a run's always does)
        cov = res.table("coverage", [*COVERAGE_COLUMNS, *PANEL_COLUMNS])
    except CosimError:
        cov = res.table("coverage", COVERAGE_COLUMNS)
    if len(cov):
        allxy = np.concatenate([allxy, [[cov["x"].min(), cov["y"].min()], [cov["x"].max(), cov["y"].max()]]])
    qz = Quantiser(allxy[:, 0].min(), allxy[:, 1].min(), allxy[:, 0].max(), allxy[:, 1].max())
    # vehicles: keep every k-th slot within the row budget
    slots = np.sort(cov["slot"].unique()) if len(cov) else np.zeros(0, dtype=np.int64)
    stride = max(1, math.ceil(len(cov) / max_rows)) if max_rows > 0 else 1
    kept = slots[::stride]
    if stride > 1:
        cov = cov[cov["slot"].isin(kept)]
    rsu_ids = [r["id"] for r in rsus]
    rsu_index = {rid: i for i, rid in enumerate(rsu_ids)}
    rsu_of = cov["rsu"].astype(object).map(lambda v: rsu_index.get(v, -1) if isinstance(v, str) else -1)
    rsu_code = rsu_of.to_numpy(dtype=np.int64)
    none = 255 if len(rsus) < 255 else 65535
    rsu_arr = np.where(rsu_code >= 0, rsu_code, none).astype(np.uint8 if none == 255 else np.uint16)
    vcat = cov["vehicle"].astype("category")
    names = [str(v) for v in vcat.cat.categories]
    vid = vcat.cat.codes.to_numpy().astype(np.uint32)
    slot = cov["slot"].to_numpy()
    order = np.lexsort((rsu_arr, slot))
    slot_sorted = slot[order]
    start = np.searchsorted(slot_sorted, kept, side="left").astype(np.uint32)
    start = np.concatenate([start, [len(order)]]).astype(np.uint32)
    times = cov.groupby("slot")["time_s"].first().reindex(kept).to_numpy(dtype=float) if len(cov) else np.zeros(0)
    panel = {}
    if "speed_mps" in cov:
        sp = np.clip(np.rint(np.nan_to_num(cov["speed_mps"].to_numpy(dtype=float)) / SPEED_Q), 0, 255)
        panel["speed"] = _b64(sp.astype(np.uint8)[order])
        panel["speed_q"] = SPEED_Q
    if "cell" in cov:  # the world's cell index; -1 (none) and the widest code mean "no cell"
        cell = cov["cell"].to_numpy()
        wide = len(cell) and int(cell.max()) >= 65535
        nocell = 0xFFFFFFFF if wide else 65535
        code = np.where(cell >= 0, cell, nocell).astype(np.uint32 if wide else np.uint16)
        panel.update({"cell": _b64(code[order]), "cell_bytes": 4 if wide else 2, "no_cell": nocell})
    # edges
    flat = np.concatenate(shapes) if shapes else np.zeros((0, 2))
    eoff = np.concatenate([[0], np.cumsum([len(s) for s in shapes])]).astype(np.uint32)
    # tasks
    name_ix = {n: i for i, n in enumerate(names)}
    layers = {}
    slot_s = float(summary.get("slot_s") or 1.0)
    t_end = float(times[-1]) if len(times) else 0.0
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
                         "timeline": _timeline(df, t_end, slot_s), "columns": columns, "draw": view.draw}
    return {
        "title": f"{summary.get('scenario') or run.name} — seed {summary.get('seed')}, {summary.get('slots')} slots"
                 + (" (incomplete)" if shown.incomplete else ""),
        "incomplete": shown.incomplete,
        "transform": qz.meta(),
        "bounds": [float(v) for v in allxy.min(axis=0)] + [float(v) for v in allxy.max(axis=0)],
        "edges": {"xy": _b64(np.column_stack([qz.q(flat[:, 0], qz.x0), qz.q(flat[:, 1], qz.y0)]).ravel() if len(flat)
                             else np.zeros(0, np.uint16)), "off": _b64(eoff)},
        "rsus": [{"id": r["id"], "x": r["x"], "y": r["y"], "r": r["radius_m"]} for r in rsus],
        "vehicles": {"names": names, "slots": [int(s) for s in kept], "times": [round(float(t), 4) for t in times],
                     "start": _b64(start), "vid": _b64(vid[order]),
                     "x": _b64(qz.q(cov["x"].to_numpy()[order], qz.x0)), "y": _b64(qz.q(cov["y"].to_numpy()[order], qz.y0)),
                     "rsu": _b64(rsu_arr[order]), "rsu_bytes": 1 if none == 255 else 2, "none": none,
                     "rows": int(len(order)), "stride": stride, "all_slots": int(len(slots)), **panel},
        "layers": layers,
        "colors": {"rsu": [hex_color(c) for c in RSU_COLORS], "uncovered": hex_color(UNCOVERED),
                   "user": hex_color(ROLE_COLORS[ROLE_USER]), "helper": hex_color(ROLE_COLORS[ROLE_HELPER]),
                   "iv": hex_color(ROLE_COLORS[ROLE_IV]), "failed": hex_color(ROLE_COLORS[ROLE_FAILED])},
        "labels": {k: ROLE_LABELS[k] for k in (ROLE_USER, ROLE_HELPER, ROLE_IV, ROLE_FAILED)},
        "slot_s": slot_s,
        # the RSU panel's load and handover chart (None: no rsus.parquet)
        "rsu_series": _rsu_series(res, [r["id"] for r in rsus], slot_s),
    }


def write_view(run_dir: str | Path, out: str | Path | None = None, net: str | Path | None = None,
               max_rows: int = MAX_ROWS) -> Path:
    """Write the page (default ``RUN_DIR/view.html``); returns its path."""
    data = build_data(run_dir, net, max_rows)
    js = resources.files("cosim").joinpath("view.js").read_text()
    path = Path(out) if out else Path(run_dir) / "view.html"
    claim_output(run_dir, path)
    path.write_text(render_page(data, js), encoding="utf-8")
    return path


#: what JSON text must not carry into an HTML ``<script>`` element: ``<`` (``</script>``,
#: ``<!--``), ``>`` and ``&`` for symmetry with HTML, U+2028/2029 (line breaks to old JS parsers)
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_PLACEHOLDER = re.compile(r"@@(DATA|JS|TITLE)@@")


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
    parts = {"DATA": script_json(data), "JS": js, "TITLE": _esc(str(data["title"]))}
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
#cv{position:absolute;inset:0;width:100%;height:100%;background:#fff}
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
