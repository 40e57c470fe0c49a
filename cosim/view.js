// cosim view: a canvas replay of one results folder (data inlined by cosim/view.py).
// window.cosimView exposes what was drawn (for tests and for measuring the frame rate).
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("cosim-data").textContent);
  // -- decoding (cosim/view.py: pack, vehicle_windows, pack_tasks) ---------------------------
  const TYPES = { u8: Uint8Array, u16: Uint16Array, u32: Uint32Array, i32: Int32Array, f64: Float64Array };
  function bytes(b64) {
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(b64);
    const s = atob(b64), u = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
    return u;
  }
  function dec(b64, T) { return new T(bytes(b64).buffer); }
  // a pack() blob: inflated by the browser's own gzip (DecompressionStream), each array viewed in place
  async function unpack(blob) {
    const gz = new Blob([bytes(blob.z)]).stream().pipeThrough(new DecompressionStream("gzip"));
    const buf = await new Response(gz).arrayBuffer(), out = {};
    let off = 0;
    for (const [name, t, n] of blob.layout) { const T = TYPES[t]; out[name] = new T(buf, off, n); off += n * T.BYTES_PER_ELEMENT; }
    return out;
  }
  const V = D.vehicles, TR = D.transform;
  const W0 = V.windows.length ? V.windows[0].layout : [];
  const colType = (name) => { const e = W0.find((l) => l[0] === name); return e ? TYPES[e[1]] : null; };
  // every kept slot's rows, sorted by (slot, RSU, vehicle); filled window by window as they decode
  const X = new Uint16Array(V.rows), Y = new Uint16Array(V.rows);
  const VID = new (colType("vid") || Uint16Array)(V.rows), RS = new (colType("rsu") || Uint8Array)(V.rows);
  const START = new Uint32Array(V.slots.length + 1);
  const EXY = dec(D.edges.xy, Uint16Array), EOFF = dec(D.edges.off, Uint32Array);
  const C = D.colors, NONE = V.none;
  let nSlots = 0;  // the slots decoded so far: a prefix of V.slots (all of them once loaded)
  const SPD = colType("speed") ? new Uint8Array(V.rows) : null;
  const CELL = colType("cell") ? new (colType("cell"))(V.rows) : null;
  const DW = colType("dwell") ? new (colType("dwell"))(V.rows) : null;  // predicted dwell, V.dwell_q quanta
  const rowOf = new Int32Array(V.names.length).fill(-1);  // vehicle -> row in the current slot
  let rowSlot = -1;
  // per vehicle: the last slot index it was seen in (a vehicle off the map comes back later: realisedDwell)
  const lastSlot = new Int32Array(V.names.length).fill(-1);
  // One decoded window into the arrays (vehicle_windows). Its rows go by vehicle, then slot: vid and
  // slot are differences to the row before, the columns differences along the vehicle's slots (the
  // row before, when it is the same vehicle's previous slot); typed arrays store modulo their width,
  // so the sums wrap as encoded. Then one stable counting sort by RSU (none last) and one by slot put
  // the rows in the page's order, (slot, RSU, vehicle), from the window's first row w.r0 on.
  function fillWindow(w, a) {
    const n = w.rows, ns = w.s1 - w.s0, vid = a.vid, slot = a.slot, rsu = a.rsu;
    for (let r = 1; r < n; r++) { vid[r] += vid[r - 1]; slot[r] += slot[r - 1]; }
    const run = new Uint8Array(n);  // per row: how many of the rows just before are its vehicle's previous slots (0-2)
    for (let r = 1; r < n; r++) {
      if (vid[r] === vid[r - 1] && slot[r] === slot[r - 1] + 1) run[r] = run[r - 1] ? 2 : 1;
    }
    const cols = [["x", X], ["y", Y], ["rsu", RS], ["speed", SPD], ["cell", CELL], ["dwell", DW]].filter((c) => c[1] && a[c[0]]);
    for (const name of V.planes || []) {  // zigzagged 16-bit differences in two byte planes (view.py _planes)
      const p = a[name], c = new Uint16Array(n);
      for (let r = 0; r < n; r++) { const z = p[r] | (p[n + r] << 8); c[r] = (z >>> 1) ^ -(z & 1); }
      a[name] = c;
    }
    for (const [name] of cols) {
      const c = a[name], order = V.delta[name] || 0;
      if (order === 1) { for (let r = 1; r < n; r++) if (run[r]) c[r] += c[r - 1]; }
      else if (order === 2) {
        for (let r = 1; r < n; r++) { const k = run[r]; if (k === 2) c[r] += 2 * c[r - 1] - c[r - 2]; else if (k) c[r] += c[r - 1]; }
      }
    }
    const nr = D.rsus.length, byRsu = new Uint32Array(n), at = new Uint32Array(Math.max(nr, ns) + 2);
    for (let r = 0; r < n; r++) at[(rsu[r] === NONE ? nr : rsu[r]) + 1]++;
    for (let g = 1; g <= nr + 1; g++) at[g] += at[g - 1];
    for (let r = 0; r < n; r++) byRsu[at[rsu[r] === NONE ? nr : rsu[r]]++] = r;
    at.fill(0);
    for (let r = 0; r < n; r++) at[slot[r] + 1]++;
    for (let i = 1; i <= ns; i++) at[i] += at[i - 1];
    for (let i = 0; i <= ns; i++) START[w.s0 + i] = w.r0 + at[i];
    const dest = new Uint32Array(n);
    for (let j = 0; j < n; j++) { const r = byRsu[j]; dest[r] = w.r0 + at[slot[r]]++; }
    for (const [name, dst] of [["vid", VID], ...cols]) scatter(a[name], dst, dest, n);
    for (let r = 0; r < n; r++) lastSlot[vid[r]] = w.s0 + slot[r];  // rows by slot within a vehicle: its last one wins
  }
  function scatter(src, dst, dest, n) { for (let r = 0; r < n; r++) dst[dest[r]] = src[r]; }
  function fillTasks(pb, a, list) {  // pack_tasks' arrays -> the task objects, appended to list
    // each time from the one before it: a segment's start from the end of the one before (the
    // first's from the request), the task's end from the last segment's, the latency from end - request
    // per: a whole number (view.py refuses at import a LAT_TICKS that is no multiple of TICKS)
    const extra = pb.extra.map((e) => JSON.parse(e)), T0 = D.ticks[0], TL = D.ticks[1], per = TL / T0;
    let t0 = 0, id = 0, k = 0, w = 0;
    for (let i = 0; i < pb.n; i++) {
      t0 += a.t0[i];
      const segs = [];
      let prev = t0;
      for (let j = 0; j < a.nseg[i]; j++, k++) {
        const s0 = prev + a.s0[k], n = a.wn[k];
        let who;
        if (n === 65535) who = a.wv[w++]; else { who = Array.from(a.wv.subarray(w, w + n)); w += n; }
        prev = s0 + a.s1[k];
        segs.push([who, s0 / T0, prev / T0]);
      }
      const end = prev + a.end[i];
      const task = { u: a.u[i], t0: t0 / T0, end: end / T0, ok: (a.flags[i] & 1) === 1,
                     why: pb.why[a.why[i]], lat: a.flags[i] & 4 ? ((end - t0) * per + a.lat[i]) / TL : null, segs };
      Object.assign(task, extra[a.extra[i]]);
      if (pb.has_id) { id += a.id[i]; task.id = id; }
      if (a.flags[i] & 2) task.c = 1;
      list.push(task);
    }
  }
  // packed task lists: an empty list now, filled in place once decoded
  Object.values(D.layers).forEach((L) => Object.keys(L.packed || {}).forEach((p) => { L.tasks[p] = []; }));

  const cv = document.getElementById("cv"), ctx = cv.getContext("2d");
  const bg = document.createElement("canvas"), bctx = bg.getContext("2d");
  const slider = document.getElementById("slider"), playBtn = document.getElementById("play");
  const layerSel = document.getElementById("layer"), policySel = document.getElementById("policy");
  const versusSel = document.getElementById("versus");
  const tl = document.getElementById("tl"), tctx = tl.getContext("2d");
  let cur = 0, playing = false, acc = 0, lastT = 0;
  // world -> screen: sx = ax + q * k, sy = ay - q * k (q: quantised coordinate). The one transform:
  // fit() sets it to the network's bounding box, zoom multiplies k about a fixed screen point, pan
  // shifts (ax, ay); everything drawn goes through it. Exposed as cosimView.view and data-view.
  let ax = 0, ay = 0, k = 1;
  const ZOOM_STEP = 1.25, ZOOM_MIN = 0.2, ZOOM_MAX = 2000;  // + / - buttons; limits relative to fit
  let kFit = 1, sel = null, hover = null;  // sel/hover: {kind: "vehicle", v} or {kind: "rsu", i}
  const state = { slot: -1, vehicles: 0, rsus: 0, byRsu: {}, uncovered: 0, tasks: 0, frames: 0, drawMs: [],
                  loaded: false, windows: 0, fillMs: 0, firstFrameMs: null, loadedMs: null, loadLog: [], drawnSlots: 0 };

  document.getElementById("title").textContent = D.title;
  slider.max = Math.max(0, nSlots - 1);
  const notes = [];
  if (D.incomplete) notes.push(D.incomplete);
  if (D.no_coverage) notes.push(D.no_coverage);
  if (V.stride > 1)
    notes.push("subsampled: every " + V.stride + "th of " + V.all_slots + " slots (" + V.rows + " vehicle rows kept)");
  document.getElementById("note").textContent = notes.join("; ");

  function resize() {
    const w = cv.clientWidth, h = cv.clientHeight;
    cv.width = bg.width = w; cv.height = bg.height = h;
    bgView = null;  // the background is drawn again now, at the new size
    fit();
  }
  function fit() {
    const w = cv.width, h = cv.height;
    const b = D.bounds, m = 12;
    const sw = (b[2] - b[0]) || 1, sh = (b[3] - b[1]) || 1;
    const s = Math.min((w - 2 * m) / sw, (h - 2 * m) / sh);  // pixels per metre
    k = s * TR.scale;
    ax = m + (TR.x0 - b[0]) * s + ((w - 2 * m) - sw * s) / 2;
    ay = h - m - (TR.y0 - b[1]) * s - ((h - 2 * m) - sh * s) / 2;
    kFit = k;
    redraw();
  }
  // The background (discs, edges, RSU marks) is drawn to its own canvas `bg` for one transform
  // (bgView) and copied under every frame. When the transform changes it is drawn again at once
  // if that took at most BG_SYNC_MS last time; otherwise the frames show the old picture scaled
  // and shifted to the new transform (one drawImage) until the view has rested BG_REST_MS. The
  // ground (C.ground) fills the background and, in the stand-in, the canvas beyond the old picture
  // (what a pan or a zoom out uncovers): the map's own colour there, not a white hole, until the
  // background is drawn again. cosimView.bgSyncMs reads and sets BG_SYNC_MS (tests: -1 forces the stand-in).
  let BG_SYNC_MS = 8;
  const BG_REST_MS = 150;
  let bgView = null, bgMs = 0, bgTimer = 0;
  function redraw() {
    cv.dataset.view = JSON.stringify([ax, ay, k]);
    clearTimeout(bgTimer);
    if (bgMs <= BG_SYNC_MS || !bgView) drawBackground(k / TR.scale);
    else bgTimer = setTimeout(() => { drawBackground(k / TR.scale); draw(); }, BG_REST_MS);
    draw();
  }
  // zoom by factor f about screen point (mx, my): the world point under it stays there
  function zoomAt(mx, my, f) {
    const k2 = Math.max(kFit * ZOOM_MIN, Math.min(kFit * ZOOM_MAX, k * f));
    f = k2 / k;
    ax = mx - (mx - ax) * f; ay = my - (my - ay) * f; k = k2;
    redraw();
  }
  function panBy(dx, dy) { ax += dx; ay += dy; redraw(); }
  const wx = (x) => ax + (x - TR.x0) / TR.scale * k, wy = (y) => ay - (y - TR.y0) / TR.scale * k;

  // per edge, its bounding box in quantised coordinates (to skip the edges off screen)
  const EBOX = new Uint16Array(Math.max(0, EOFF.length - 1) * 4);
  for (let e = 0; e + 1 < EOFF.length; e++) {
    let x0 = 65535, y0 = 65535, x1 = 0, y1 = 0;
    for (let j = EOFF[e]; j < EOFF[e + 1]; j++) {
      const x = EXY[2 * j], y = EXY[2 * j + 1];
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    EBOX.set([x0, y0, x1, y1], 4 * e);
  }
  function drawBackground(s) {
    const t0 = performance.now(), w = bg.width, h = bg.height;
    bctx.fillStyle = C.ground; bctx.fillRect(0, 0, w, h);
    const onScreen = (x, y, rad) => x + rad >= 0 && x - rad <= w && y + rad >= 0 && y - rad <= h;
    let n = 0;
    D.rsus.forEach((r, i) => {  // discs: translucent fill, opaque outline
      n++;
      if (!onScreen(wx(r.x), wy(r.y), r.r * s + 2)) return;
      const col = C.rsu[i % C.rsu.length];
      bctx.beginPath(); bctx.arc(wx(r.x), wy(r.y), r.r * s, 0, 2 * Math.PI);
      bctx.globalAlpha = 0.12; bctx.fillStyle = col; bctx.fill();
      bctx.globalAlpha = 1; bctx.lineWidth = 2; bctx.strokeStyle = col; bctx.stroke();
    });
    state.rsus = n;
    // edges: one path; those wholly off screen left out, points less than half a pixel from the
    // last one drawn skipped (an edge's last point always drawn)
    const qx0 = (0 - ax) / k, qx1 = (w - ax) / k, qy0 = (ay - h) / k, qy1 = ay / k;  // the screen in q units
    bctx.beginPath();
    for (let e = 0; e + 1 < EOFF.length; e++) {
      if (EBOX[4 * e + 2] < qx0 || EBOX[4 * e] > qx1 || EBOX[4 * e + 3] < qy0 || EBOX[4 * e + 1] > qy1) continue;
      let lx = 0, ly = 0;
      const j1 = EOFF[e + 1] - 1;
      for (let j = EOFF[e]; j <= j1; j++) {
        const px = ax + EXY[2 * j] * k, py = ay - EXY[2 * j + 1] * k;
        if (j === EOFF[e]) bctx.moveTo(px, py);
        else if (j === j1 || Math.abs(px - lx) + Math.abs(py - ly) >= 0.5) bctx.lineTo(px, py);
        else continue;
        lx = px; ly = py;
      }
    }
    bctx.lineWidth = 1; bctx.strokeStyle = "#777"; bctx.stroke();
    bctx.font = "11px sans-serif";
    D.rsus.forEach((r, i) => {
      if (!onScreen(wx(r.x), wy(r.y), 200)) return;
      bctx.fillStyle = C.rsu[i % C.rsu.length];
      bctx.fillRect(wx(r.x) - 4, wy(r.y) - 4, 8, 8);
      bctx.fillStyle = "#000"; bctx.fillText(r.id, wx(r.x) + 6, wy(r.y) - 6);
    });
    bgView = { ax, ay, k };
    bgMs = performance.now() - t0;
    state.bgMs = bgMs;
  }
  function drawBg() {  // the background under the frame: as drawn, or scaled to the current transform
    if (bgView && bgView.k === k && bgView.ax === ax && bgView.ay === ay) { ctx.drawImage(bg, 0, 0); return; }
    const f = k / bgView.k;
    ctx.fillStyle = C.ground; ctx.fillRect(0, 0, cv.width, cv.height);  // beyond the old picture: the ground
    ctx.imageSmoothingEnabled = false;  // a stand-in for a moment: the cheapest scaling
    ctx.drawImage(bg, ax - bgView.ax * f, ay - bgView.ay * f, bg.width * f, bg.height * f);
    ctx.imageSmoothingEnabled = true;
  }

  function indexSlot(i) {  // vehicle -> row for slot index i
    if (rowSlot >= 0) for (let r = START[rowSlot]; r < START[rowSlot + 1]; r++) rowOf[VID[r]] = -1;
    for (let r = START[i]; r < START[i + 1]; r++) rowOf[VID[r]] = r;
    rowSlot = i;
  }
  const px = (r) => ax + X[r] * k, py = (r) => ay - Y[r] * k;
  // -- rows of other slots: the one place the UI reads the vehicle arrays outside the current slot
  function slotAt(t) {  // the last kept slot at or before time t (the first slot before it)
    let lo = 0, hi = V.times.length - 1;
    if (hi < 0 || V.times[0] > t) return hi < 0 ? -1 : 0;
    while (lo < hi) { const m = (lo + hi + 1) >> 1; if (V.times[m] <= t) lo = m; else hi = m - 1; }
    return lo;
  }
  function rowAt(v, i) {  // vehicle v's row at slot index i, -1 if it is not on the map then (or not loaded)
    if (i < 0 || i >= nSlots) return -1;
    if (i === cur && rowSlot === cur) return rowOf[v];
    for (let r = START[i]; r < START[i + 1]; r++) if (VID[r] === v) return r;
    return -1;
  }
  function rowWith(v, g, i) {  // vehicle v's row at slot index i if RSU code g serves it then (rows sorted by RSU,
    let lo = START[i], hi = START[i + 1];  // then vehicle: a binary search), else -1
    while (lo < hi) {
      const m = (lo + hi) >> 1;
      if (RS[m] < g || (RS[m] === g && VID[m] < v)) lo = m + 1; else hi = m;
    }
    return lo < START[i + 1] && RS[lo] === g && VID[lo] === v ? lo : -1;
  }
  // realised dwell of vehicle v's row at slot index i, as cosim.analysis.realised_dwell defines it,
  // from the decoded rows: its run of rows with the same RSU ends with a row of another RSU (or
  // none) -> that row's time - t - slot/2; with the vehicle's last row before the run's last slot
  // (it left) -> that row's time - t + slot/2; at the last slot: censored. {s, end} (s null:
  // censored, not served or, before the rest is decoded, not known yet)
  let dwellKey = null, dwellVal = null;
  function realisedDwell(v, i) {
    const key = v + ":" + i + ":" + nSlots + ":" + state.loaded;  // "not known yet" holds until the load ends
    if (key === dwellKey) return dwellVal;
    const r = rowAt(v, i), g = r >= 0 ? RS[r] : NONE, t = V.times[i], half = D.slot_s / 2;
    let out = null, last = i;  // last: the slot of the run's latest row
    if (r < 0 || g === NONE) out = { s: null, end: "not served" };
    for (let j = i + 1; !out; j++) {
      if (j >= nSlots) { out = state.loaded ? { s: null, end: "censored" } : { s: null, end: "not known yet (loading)" }; break; }
      if (rowWith(v, g, j) >= 0) { last = j; continue; }
      const r2 = rowAt(v, j);
      if (r2 >= 0) out = { s: V.times[j] - t - half, end: "handed over" };  // another RSU, or none
      else if (lastSlot[v] > j) continue;  // not on the map at j, but later: the run goes on
      else if (!state.loaded) out = { s: null, end: "not known yet (loading)" };
      else out = { s: V.times[last] - t + half, end: "left" };  // its last row, before the run's last slot
    }
    dwellKey = key; dwellVal = out;
    return out;
  }
  const worldOf = (r) => [TR.x0 + X[r] * TR.scale, TR.y0 + Y[r] * TR.scale];  // row -> world [m]

  // -- filters: layer, policy, role, outcome (checkboxes; every box checked at load) -----------
  const outcomeOf = (t) => t.c ? "censored" : (t.ok ? "done" : "failed");
  const F = { layer: new Set(), policy: new Set(), role: new Set(["user", "helper", "iv"]),
              outcome: new Set(["done", "failed", "censored"]), version: 0 };
  Object.entries(D.layers).forEach(([l, L]) => {
    if (Object.keys(L.tasks).length) { F.layer.add(l); Object.keys(L.tasks).forEach((p) => F.policy.add(p)); }
  });
  const taskPasses = (layer, policy, task) => F.layer.has(layer) && F.policy.has(policy) && F.outcome.has(outcomeOf(task));

  function ring(x, y, rad, col, w) {
    ctx.beginPath(); ctx.arc(x, y, rad, 0, 2 * Math.PI); ctx.lineWidth = w; ctx.strokeStyle = col; ctx.stroke();
  }
  function arrow(x0, y0, x1, y1, col) {
    const a = Math.atan2(y1 - y0, x1 - x0), L = Math.hypot(x1 - x0, y1 - y0);
    if (L < 1) return;
    ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1);
    ctx.lineTo(x1 - 9 * Math.cos(a - 0.4), y1 - 9 * Math.sin(a - 0.4));
    ctx.moveTo(x1, y1); ctx.lineTo(x1 - 9 * Math.cos(a + 0.4), y1 - 9 * Math.sin(a + 0.4));
    ctx.lineWidth = 2; ctx.strokeStyle = col; ctx.stroke();
  }

  // -- A/B: the tasks of policy A (the shown one) whose success differs under policy B -------
  // Paired by the request's id (`task`, as cosim.pairing), a task censored under either left out.
  const AB_COL = "#0000ff";
  let abCache = null;
  function abDiffer() {  // id -> true: A succeeded and B failed; false: B succeeded and A failed
    const L = D.layers[layerSel.value], a = policySel.value, b = versusSel.value;
    if (!L || !b || b === a || !L.tasks[b]) return null;
    if (abCache && abCache.L === L && abCache.a === a && abCache.b === b) return abCache.m;
    const other = new Map();
    for (const t of L.tasks[b]) if (t.id !== undefined && !t.c) other.set(t.id, t.ok);
    const m = new Map();
    for (const t of (L.tasks[a] || [])) {
      if (t.id === undefined || t.c || !other.has(t.id)) continue;
      if (other.get(t.id) !== t.ok) m.set(t.id, t.ok);
    }
    abCache = { L, a, b, m };
    return m;
  }
  function square(x, y, r, diamond) {
    ctx.beginPath();
    if (diamond) { ctx.moveTo(x, y - r); ctx.lineTo(x + r, y); ctx.lineTo(x, y + r); ctx.lineTo(x - r, y); ctx.closePath(); }
    else ctx.rect(x - r, y - r, 2 * r, 2 * r);
    ctx.lineWidth = 3; ctx.strokeStyle = AB_COL; ctx.stroke();
  }

  function drawTasks(t) {
    const L = D.layers[layerSel.value];
    state.ab = [];
    if (!L) return 0;
    const tasks = L.tasks[policySel.value] || [];
    const hold = 3.0, differ = abDiffer();
    const showUser = F.role.has("user"), showHelper = F.role.has("helper"), showIv = F.role.has("iv");
    let n = 0;
    for (const task of tasks) {
      if (task.t0 > t) break;  // sorted by request time
      const failedShown = !task.ok && task.end <= t && t <= task.end + hold;
      if (task.end < t && !failedShown) continue;
      const u = task.u >= 0 ? rowOf[task.u] : -1;
      if (u < 0 || !taskPasses(layerSel.value, policySel.value, task)) continue;
      n++;
      if (differ && differ.has(task.id)) {  // square: A succeeded where B failed; diamond: the reverse
        square(px(u), py(u), 12, !differ.get(task.id));
        state.ab.push(task.id);
      }
      if (failedShown) { if (showUser) ring(px(u), py(u), 9, C.failed, 3); continue; }
      if (showUser) ring(px(u), py(u), 8, C.user, 3);
      let s = -1;
      for (let j = 0; j < task.segs.length; j++) if (task.segs[j][1] <= t) s = j;
      if (s < 0) continue;
      if (L.draw === "chain" && showHelper) {  // one device at a time, hand-offs from the RSU (-1) on
        const where = (d) => d === -1 ? [wx(task.rsu[0]), wy(task.rsu[1])] : (d >= 0 && rowOf[d] >= 0 ? [px(rowOf[d]), py(rowOf[d])] : null);
        const p = where(task.segs[s][0]);
        if (!p) continue;
        if (task.segs[s][0] !== task.u) ring(p[0], p[1], 7, C.helper, 3);
        if (s > 0) {
          const q = where(task.segs[s - 1][0]);
          if (q) arrow(q[0], q[1], p[0], p[1], C.helper);
        } else if (task.segs[s][0] !== -1) {
          arrow(wx(task.rsu[0]), wy(task.rsu[1]), p[0], p[1], C.helper);
        }
      } else if (L.draw === "group" && showIv) {  // every vehicle of the segment, joined to the task's vehicle
        for (const iv of task.segs[s][0]) {
          const r = iv >= 0 ? rowOf[iv] : -1;
          if (r < 0) continue;
          ctx.beginPath(); ctx.moveTo(px(u), py(u)); ctx.lineTo(px(r), py(r));
          ctx.lineWidth = 1.5; ctx.strokeStyle = C.iv; ctx.stroke();
          ring(px(r), py(r), 6, C.iv, 3);
        }
      }
    }
    return n;
  }

  function draw() {
    const t0 = performance.now();
    drawBg();
    const byRsu = Object.create(null);  // RSU ids are data: "__proto__" is one more key
    let nv = 0, unc = 0, nt = 0;
    if (nSlots) {
      indexSlot(cur);
      // one path per colour (the RSU colours, then grey), filled once each; off-screen rows counted, not drawn
      const nc = C.rsu.length, paths = new Array(nc + 1).fill(null), w = cv.width + 2, h = cv.height + 2;
      const perRsu = new Int32Array(D.rsus.length);
      for (let r = START[cur]; r < START[cur + 1]; r++) {
        const g = RS[r], x = ax + X[r] * k, y = ay - Y[r] * k;
        nv++;
        if (g === NONE) unc++; else perRsu[g]++;
        if (x < -2 || y < -2 || x > w || y > h) continue;
        const c = g === NONE ? nc : g % nc;
        (paths[c] || (paths[c] = new Path2D())).rect(x - 2, y - 2, 4, 4);
      }
      paths.forEach((p, c) => { if (p) { ctx.fillStyle = c === nc ? C.uncovered : C.rsu[c]; ctx.fill(p); } });
      perRsu.forEach((m, g) => { if (m) byRsu[D.rsus[g].id] = (byRsu[D.rsus[g].id] || 0) + m; });
      nt = drawTasks(V.times[cur]);
    }
    if (nSlots) state.drawnSlots = nSlots;
    state.slot = nSlots ? V.slots[cur] : -1; state.vehicles = nv; state.byRsu = byRsu; state.uncovered = unc;
    state.tasks = nt; state.frames++;
    drawPath();
    drawPicked();
    drawRsuChart();
    drawFailures();
    const ms = performance.now() - t0;
    state.drawMs.push(ms); if (state.drawMs.length > 600) state.drawMs.shift();
    document.getElementById("clock").textContent = nSlots
      ? "t = " + V.times[cur].toFixed(1) + " s (slot " + V.slots[cur] + "), " + nv + " vehicles, " + nt + " tasks shown"
      : (V.rows ? "loading the vehicles …" : "no vehicle rows");
    document.getElementById("drawn").textContent = "drawn: " + state.rsus + " RSU discs, " + nv + " vehicles";
    drawTimeline();
  }

  // -- inspecting: a vehicle (hover, or click to keep it) or an RSU (click) ------------------
  const PICK_PX = 8;
  function pick(mx, my) {
    let best = null, bd = PICK_PX * PICK_PX;
    if (nSlots) for (let r = START[cur]; r < START[cur + 1]; r++) {
      const d = (px(r) - mx) ** 2 + (py(r) - my) ** 2;
      if (d <= bd) { bd = d; best = { kind: "vehicle", v: VID[r] }; }
    }
    if (best) return best;
    let bi = -1, br = Infinity;  // else the RSU whose disc holds the point, the nearest centre first
    D.rsus.forEach((r, i) => {
      const d = Math.hypot(wx(r.x) - mx, wy(r.y) - my);
      if (d <= Math.max(r.r * k / TR.scale, PICK_PX) && d < br) { br = d; bi = i; }
    });
    return bi >= 0 ? { kind: "rsu", i: bi } : null;
  }
  const devName = (d) => d === -1 ? "RSU" : (d >= 0 ? V.names[d] : "(not in the page)");
  // what the panel says about a vehicle at the current slot (null: not on the map then)
  function vehicleInfo(v) {
    const r = rowOf[v];
    if (r < 0) return null;
    const t = V.times[cur], tasks = [];
    Object.entries(D.layers).forEach(([layer, L]) => Object.entries(L.tasks).forEach(([policy, list]) => {
      for (let ti = 0; ti < list.length; ti++) {
        const task = list[ti];
        if (task.t0 > t) break;
        if (task.end < t || !taskPasses(layer, policy, task)) continue;
        let s = -1;
        for (let j = 0; j < task.segs.length; j++) if (task.segs[j][1] <= t) s = j;
        const who = s >= 0 ? task.segs[s][0] : null;
        let role = null;
        if (task.u === v) role = "user";
        else if (L.draw === "chain" && who === v) role = "helper";
        else if (L.draw === "group" && Array.isArray(who) && who.indexOf(v) >= 0) role = "iv";
        if (!role || !F.role.has(role)) continue;
        const device = who === null ? "(upload)" : (Array.isArray(who) ? who.map(devName).join(", ") : devName(who));
        tasks.push({ layer, policy, role, stage: s < 0 ? "upload" : (s + 1) + "/" + task.segs.length, device,
                     outcome: task.ok ? "success" : ("failed" + (task.why ? ": " + task.why : "")), ref: [layer, policy, ti] });
      }
    }));
    const g = RS[r], real = realisedDwell(v, cur);
    return { kind: "vehicle", id: V.names[v], speed: SPD ? SPD[r] * V.speed_q : null,
             cell: CELL && CELL[r] !== V.no_cell ? CELL[r] : null,
             rsu: g === NONE ? null : D.rsus[g].id, tasks,
             predicted: DW && DW[r] !== V.no_dwell ? DW[r] * V.dwell_q : null,
             realised: real.s, dwellEnd: real.end, approx: V.stride > 1 };
  }
  function rsuInfo(i) {
    const id = D.rsus[i].id, t = V.times[cur], L = D.layers[layerSel.value];
    let tasks = 0;
    if (L && nSlots) for (const task of (L.tasks[policySel.value] || [])) {  // running, requested by a vehicle it serves
      if (task.t0 > t) break;
      if (task.end < t || task.u < 0 || rowOf[task.u] < 0 || !taskPasses(layerSel.value, policySel.value, task)) continue;
      if (RS[rowOf[task.u]] === i) tasks++;
    }
    const S = D.rsu_series, sr = S ? S.rsu[i] : null;
    return { kind: "rsu", i, id, radius_m: D.rsus[i].r, vehicles: state.byRsu[id] || 0, tasks,
             handovers: sr ? [sr.hin.reduce((a, b) => a + b, 0), sr.hout.reduce((a, b) => a + b, 0)] : null };
  }
  function info(p) { return !p ? null : (p.kind === "vehicle" ? vehicleInfo(p.v) : rsuInfo(p.i)); }
  function drawPicked() {
    const p = sel || hover;
    if (p && p.kind === "rsu") {
      const r = D.rsus[p.i];
      ctx.beginPath(); ctx.arc(wx(r.x), wy(r.y), r.r * k / TR.scale, 0, 2 * Math.PI);
      ctx.globalAlpha = 0.25; ctx.fillStyle = C.rsu[p.i % C.rsu.length]; ctx.fill(); ctx.globalAlpha = 1;
      ctx.lineWidth = 4; ctx.strokeStyle = "#000"; ctx.stroke();
    } else if (p && p.kind === "vehicle" && rowOf[p.v] >= 0) {
      ring(px(rowOf[p.v]), py(rowOf[p.v]), 11, "#000", 2);
    }
    showPanel(info(p), !!sel);
  }
  const secs = (s) => (Math.round(s * 10) / 10) + " s";
  function dwellText(x) {  // "predicted 42 s · realised 37 s (+5 s)" (predicted - realised), or why not
    if (x.rsu === null) return "not served";
    const pred = x.predicted === null ? "predicted –" : "predicted " + secs(x.predicted);
    if (x.realised === null) return pred + " · realised: " + x.dwellEnd;
    const d = x.predicted === null ? "" : " (" + (x.predicted >= x.realised ? "+" : "−") + secs(Math.abs(x.predicted - x.realised)) + ")";
    return pred + " · realised " + (x.approx ? "≈ " : "") + secs(x.realised) + d;
  }
  let panelKey = null;
  function showPanel(x, pinned) {  // rebuilt only when what it says changed (not every frame)
    const key = JSON.stringify([x, pinned, !!sel, layerSel.value, policySel.value, F.version]);
    if (key === panelKey) return;
    panelKey = key;
    const box = document.getElementById("inspect");
    box.replaceChildren();
    state.inspect = x;
    if (!x) {
      box.appendChild(el("div", sel ? "the selected vehicle is not on the map at this slot" :
        "hover or click a vehicle, click an RSU's disc", { class: "hint" }));
      return;
    }
    const tb = el("table");
    const row = (a, b) => { const tr = el("tr"); tr.appendChild(el("td", a)); tr.appendChild(el("td", b)); tb.appendChild(tr); };
    if (x.kind === "vehicle") {
      row("vehicle", x.id);
      row("speed", x.speed === null ? "–" : x.speed.toFixed(2) + " m/s");
      row("cell", x.cell === null ? "–" : String(x.cell));
      row("serving RSU", x.rsu === null ? "not covered" : x.rsu);
      row("dwell", dwellText(x));
    } else {
      row("RSU", x.id); row("radius", x.radius_m.toFixed(0) + " m");
      row("vehicles served", String(x.vehicles));
      row("running tasks of its vehicles (" + layerSel.value + ", " + policySel.value + ")", String(x.tasks));
      if (x.handovers) row("handovers in / out (run)", x.handovers[0] + " / " + x.handovers[1]);
    }
    box.appendChild(el("div", pinned ? "selected (click empty map to clear)" : "under the pointer", { class: "hint" }));
    box.appendChild(tb);
    if (x.kind === "vehicle") {
      const tt = el("table", undefined, { id: "vtasks" }), head = el("tr");
      ["layer", "policy", "role", "stage", "device", "outcome"].forEach((c) => head.appendChild(el("th", c)));
      tt.appendChild(head);
      x.tasks.forEach((t) => {
        const tr = el("tr", undefined, { class: "pick", title: "show this task's path" });
        [t.layer, t.policy, t.role, t.stage, t.device, t.outcome].forEach((c) => tr.appendChild(el("td", c)));
        tr.addEventListener("click", () => selectTask(t.ref[0], t.ref[1], t.ref[2]));
        tt.appendChild(tr);
      });
      box.appendChild(el("div", x.tasks.length + " task(s) at this slot (click one for its path)"));
      box.appendChild(tt);
    } else if (D.rsu_series) {
      box.appendChild(el("div", "over the run (cursor: the slider's time)", { class: "hint" }));
      box.appendChild(rsuCv);
      box.appendChild(rsuLegend(x.i));
    } else box.appendChild(el("div", "no rsus.parquet in this run: no load chart", { class: "hint" }));
  }

  // -- the one chart helper: a box over [0, xmax], bar and line series each on its own y scale
  // (ymax), labels at the corners, a cursor at time `cursor`; what it drew is returned (tests):
  // the plot's corners and per series its label, colour, values and (bars) the rectangles filled.
  // A bar series' bar j covers [x[j], x[j] + barW) on whole pixels (no blended edges), a pixel
  // left free at its right where it is 3 pixels wide or more; it rises from `base` (a fraction of
  // the plot's height from its bottom, 0 unless given; a grey line marks a base above 0), or with
  // `down` hangs from it, by y / ymax of the plot's height.
  function chart(c, o) {
    const g = c.getContext("2d"), w = c.width, h = c.height, m = o.margin || 28;
    g.clearRect(0, 0, w, h);
    const X_ = (t) => m + (w - 2 * m) * t / (o.xmax || 1);
    g.strokeStyle = "#999"; g.lineWidth = 1; g.setLineDash([]); g.strokeRect(m, m / 2, w - 2 * m, h - 1.5 * m);
    const Y_ = (v, ymax) => h - m - (h - 1.5 * m) * v / (ymax || 1);
    g.fillStyle = "#444"; g.font = "10px sans-serif";
    (o.labels || []).forEach(([text, x, y]) => g.fillText(text, x < 0 ? w + x : x, y < 0 ? h + y : y));
    const drawn = [];
    for (const sr of o.series) {
      g.strokeStyle = g.fillStyle = sr.color; g.lineWidth = sr.width || 1; g.setLineDash(sr.dash || []);
      const out = { label: sr.label || null, kind: sr.kind, color: sr.color, y: sr.y, ymax: sr.ymax || 1 };
      drawn.push(out);
      if (sr.kind === "bar") {
        out.rects = [];
        const yb = Y_(sr.base || 0, 1);
        sr.y.forEach((v, j) => {
          if (!v) return;
          const a = Math.round(X_(sr.x[j])), b = Math.round(X_(sr.x[j] + sr.barW));
          const bw = Math.max(1, b - a - (b - a >= 3 ? 1 : 0)), len = (h - 1.5 * m) * v / (sr.ymax || 1);
          const y = sr.down ? yb : yb - len;
          g.fillRect(a, y, bw, len);
          out.rects.push([j, a, y, bw, len]);
        });
        if (sr.base) { g.fillStyle = "#999"; g.fillRect(m, Math.round(yb), w - 2 * m, 1); }
      } else {
        g.beginPath(); let pen = false;
        sr.y.forEach((v, j) => { if (v === null) { pen = false; return; } const x = X_(sr.x[j]), y = Y_(v, sr.ymax); if (pen) g.lineTo(x, y); else g.moveTo(x, y); pen = true; });
        g.stroke();
      }
    }
    g.setLineDash([]);
    if (o.cursor !== undefined) { const x = X_(o.cursor); g.beginPath(); g.moveTo(x, m / 2); g.lineTo(x, h - m); g.strokeStyle = "#000"; g.lineWidth = 1; g.stroke(); }
    return { x0: m, x1: w - m, y0: m / 2, y1: h - m, xmax: o.xmax, drawn };
  }
  const rsuCv = el("canvas", undefined, { id: "rsuchart", width: 360, height: 160 });
  // the RSU chart's series: [key, label, colour], in the legend's order. Handovers in and out
  // share the right axis about its middle, in rising and out hanging (each bin's in over its out),
  // in light colours that are none of the RSU colours (the load line's).
  const HIN_COL = "#9ecae1", HOUT_COL = "#f4a3c8";
  const rsuSeries = (i) => [["load", "vehicles served (mean per " + D.rsu_series.width.toFixed(1) + " s, line, left axis)",
                             C.rsu[i % C.rsu.length]],
                            ["hin", "handovers in (bars up from the middle, right axis)", HIN_COL],
                            ["hout", "handovers out (bars down from the middle, right axis)", HOUT_COL]];
  function rsuLegend(i) {  // a swatch and a label per series of the chart, as text
    const box = el("div", undefined, { id: "rsulegend", class: "hint" });
    rsuSeries(i).forEach(([key, label, col]) => {
      const item = el("div", undefined, { "data-series": key });
      item.appendChild(el("span", undefined, { class: "sw", style: "background:" + col }));
      item.appendChild(document.createTextNode(label));
      box.appendChild(item);
    });
    return box;
  }
  function drawRsuChart() {  // the inspected RSU's load and handovers in and out (D.rsu_series), cursor at the slot
    const p = sel || hover, S = D.rsu_series;
    state.rsuChart = null;
    if (!p || p.kind !== "rsu" || !S || !nSlots) return;
    const sr = S.rsu[p.i], xs = sr.load.map((_, j) => j * S.width);
    const lmax = Math.max(1, ...sr.load.filter((v) => v !== null)), hmax = Math.max(1, ...sr.hin, ...sr.hout);
    const [ld, hi, ho] = rsuSeries(p.i);
    const drawn = chart(rsuCv, { xmax: S.n * S.width, cursor: V.times[cur], series: [
      { kind: "bar", x: xs, y: sr.hin, ymax: 2 * hmax, base: 0.5, barW: S.width, color: hi[2], label: hi[1] },
      { kind: "bar", x: xs, y: sr.hout, ymax: 2 * hmax, base: 0.5, down: true, barW: S.width, color: ho[2], label: ho[1] },
      { kind: "line", x: xs.map((v) => v + S.width / 2), y: sr.load, ymax: lmax, color: ld[2], width: 2, label: ld[1] }],
      labels: [[lmax.toFixed(0), 2, 18], ["0", 18, -24], [String(hmax), -26, 18], ["0", -26, rsuCv.height - 25 - (rsuCv.height - 42) / 2],
               [String(hmax), -26, -24], [(S.n * S.width).toFixed(0) + " s", -52, -12]] });
    state.rsuChart = { rsu: D.rsus[p.i].id, width: S.width, load: sr.load, hin: sr.hin, hout: sr.hout, ...drawn };
  }

  function setSlot(i) {
    cur = Math.max(0, Math.min(nSlots - 1, i | 0));
    slider.value = cur;
    draw();
  }

  function loop(ts) {
    if (!playing) return;
    const dt = lastT ? (ts - lastT) / 1000 : 0; lastT = ts;
    acc += dt * Number(document.getElementById("speed").value);
    if (acc >= 1) {
      const step = Math.floor(acc); acc -= step;
      if (cur + step >= nSlots && !state.loaded) setSlot(nSlots - 1);  // wait at the decoded end
      else if (cur + step >= nSlots) { setSlot(nSlots - 1); pause(); return; }
      else setSlot(cur + step);
    }
    requestAnimationFrame(loop);
  }
  function play() { if (nSlots < 2) return; if (cur >= nSlots - 1) cur = 0; playing = true; lastT = 0; acc = 0; playBtn.textContent = "pause"; requestAnimationFrame(loop); }
  function pause() { playing = false; playBtn.textContent = "play"; }

  // -- side panel ------------------------------------------------------------------------
  const fmt = (v, d) => v === null || v === undefined ? "–" : (typeof v === "number" ? v.toFixed(d) : String(v));
  function fillPolicies() {
    const L = D.layers[layerSel.value];
    policySel.replaceChildren();
    (L ? L.policies : []).forEach((p) => { const o = document.createElement("option"); o.textContent = p; policySel.appendChild(o); });
    fillVersus();
    fillSummary();
  }
  // every string from the data enters the page as text (textContent), never as markup
  function el(tag, text, attrs) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (attrs) Object.entries(attrs).forEach(([a, v]) => e.setAttribute(a, v));
    return e;
  }
  function fillVersus() {  // B: none, or another policy of the layer
    const L = D.layers[layerSel.value], keep = versusSel.value;
    versusSel.replaceChildren(el("option", "(none)", { value: "" }));
    (L ? L.policies : []).filter((p) => p !== policySel.value && L.tasks[p])
      .forEach((p) => versusSel.appendChild(el("option", p)));
    versusSel.value = [...versusSel.options].some((o) => o.value === keep) ? keep : "";
    abNote();
  }
  function abNote() {
    const m = abDiffer(), box = document.getElementById("ab");
    if (!m) { box.textContent = ""; return; }
    let aw = 0; m.forEach((ok) => { if (ok) aw++; });
    box.textContent = m.size + " tasks differ in success: " + aw + " only " + policySel.value + " completed (square), "
      + (m.size - aw) + " only " + versusSel.value + " completed (diamond); censored tasks left out";
  }
  function fillSummary() {
    const L = D.layers[layerSel.value], tb = document.getElementById("summary");
    tb.replaceChildren();
    if (!L) { const tr = el("tr"); tr.appendChild(el("td", "no task table in this run")); tb.appendChild(tr); return; }
    const cols = L.columns;  // the layer's own: [key, decimals]
    const head = el("tr");
    head.appendChild(el("th", "policy"));
    cols.forEach((c) => head.appendChild(el("th", c[0].replace(/_/g, " "))));
    tb.appendChild(head);
    Object.entries(L.summary).forEach(([p, s]) => {
      const tr = el("tr");
      if (p === policySel.value) tr.className = "sel";
      tr.appendChild(el("td", p));
      cols.forEach((c) => tr.appendChild(el("td", fmt(s[c[0]], c[1]))));
      tb.appendChild(tr);
    });
  }
  function drawTimeline() {
    const L = D.layers[layerSel.value];
    if (!L || !nSlots) { tctx.clearRect(0, 0, tl.width, tl.height); return; }
    const tmax = V.times[V.times.length - 1] || 1;
    let lmax = 0;
    Object.values(L.timeline).forEach((s) => s.latency.forEach((v) => { if (v !== null && v > lmax) lmax = v; }));
    lmax = lmax || 1;
    const series = [];
    Object.entries(L.timeline).forEach(([p, s]) => {
      const on = p === policySel.value, col = on ? "#d62728" : "#bbb", width = on ? 2 : 1;
      series.push({ kind: "line", x: s.t, y: s.latency, ymax: lmax, color: col, width },
                  { kind: "line", x: s.t, y: s.success, ymax: 1, color: col, width, dash: [4, 3] });
    });
    series.sort((a, b) => a.width - b.width);  // the chosen policy on top
    chart(tl, { xmax: tmax, cursor: V.times[cur], series,
                labels: [[lmax.toFixed(2) + " s", 0, 18], ["0", 18, -24], ["1", -24, 18], [tmax.toFixed(0) + " s", -52, -12]] });
  }

  // -- failures along the run: a strip of counts per bin of failure time; a click jumps there ---
  const FAIL_BINS = 120, fcv = document.getElementById("fails");
  let failCache = null;
  function failures() {  // {width, counts, first: earliest failure time per bin, tasks: [[layer, policy, i, end]]}
    let nt = 0;  // the cache holds while the filters and the task lists stay (they may fill as they load)
    Object.values(D.layers).forEach((L) => Object.values(L.tasks).forEach((l) => { nt += l.length; }));
    const key = F.version + "/" + nt;
    if (failCache && failCache.key === key) return failCache;
    const tmax = V.times.length ? V.times[V.times.length - 1] : 0, width = Math.max(D.slot_s, tmax / FAIL_BINS);
    const n = Math.floor(tmax / width) + 1, counts = new Array(n).fill(0), first = new Array(n).fill(null), tasks = [];
    Object.entries(D.layers).forEach(([layer, L]) => Object.entries(L.tasks).forEach(([policy, list]) => {
      if (!F.layer.has(layer) || !F.policy.has(policy) || !F.outcome.has("failed")) return;
      list.forEach((task, i) => {
        if (task.ok || task.c) return;
        const b = Math.min(n - 1, Math.floor(task.end / width));
        counts[b]++;
        if (first[b] === null || task.end < first[b]) first[b] = task.end;
        tasks.push([layer, policy, i, task.end]);
      });
    }));
    tasks.sort((a, b) => a[3] - b[3]);
    failCache = { key, width, counts, first, tasks };
    return failCache;
  }
  function drawFailures() {
    const f = failures(), cmax = Math.max(1, ...f.counts);
    state.failStrip = chart(fcv, { xmax: f.counts.length * f.width, cursor: nSlots ? V.times[cur] : undefined, margin: 12,
      series: [{ kind: "bar", x: f.counts.map((_, j) => j * f.width), y: f.counts, ymax: cmax, barW: f.width, color: C.failed }],
      labels: [[String(cmax), 0, 10]] });
  }
  function failuresAt(x) {  // the click: the bin under x -> slot of its first failure (the red ring shows), listed
    const f = failures(), s = state.failStrip;
    if (!s || !nSlots || x < s.x0 || x > s.x1) return;
    const b = Math.min(f.counts.length - 1, Math.floor((x - s.x0) / (s.x1 - s.x0) * f.counts.length));
    const t = f.first[b] !== null ? f.first[b] : b * f.width;
    let i = slotAt(t);
    if (V.times[i] < t && i + 1 < V.times.length) i++;  // the first slot at or after it
    pause(); setSlot(i);
    const box = document.getElementById("faillist");
    box.replaceChildren();
    const list = f.tasks.filter((e) => Math.min(f.counts.length - 1, Math.floor(e[3] / f.width)) === b);
    state.failList = list.map((e) => [e[0], e[1], D.layers[e[0]].tasks[e[1]][e[2]].id]);
    box.appendChild(el("div", list.length + " failure(s) between " + (b * f.width).toFixed(1) + " and "
      + ((b + 1) * f.width).toFixed(1) + " s (click one for its path)", { class: "hint" }));
    const tb = el("table");
    list.forEach(([layer, policy, ti, end]) => {
      const task = D.layers[layer].tasks[policy][ti], tr = el("tr", undefined, { class: "pick" });
      [end.toFixed(1) + " s", layer, policy, devName(task.u >= 0 ? task.u : -2), task.why || "failed"].forEach((c) => tr.appendChild(el("td", c)));
      tr.addEventListener("click", () => selectTask(layer, policy, ti));
      tb.appendChild(tr);
    });
    box.appendChild(tb);
  }
  fcv.addEventListener("click", (e) => {  // CSS pixels -> canvas pixels (the side panel may shrink it)
    const b = fcv.getBoundingClientRect();
    failuresAt((e.clientX - b.left) * fcv.width / (b.width || 1));
  });

  // -- a task: its path over devices and RSUs through time, drawn on the map, and how it ended --
  let selTask = null;  // {layer, policy, i}
  // A point whose slot is in a time window not decoded yet (a vehicle's row there unknown) is
  // "not loaded yet" (loaded: false, no position), not "not on the map"; loadWindow works the
  // path out again when that window arrives.
  function taskPath(ref) {  // the points: the user at the request, each segment's device(s) at its start, the user at the end
    const L = D.layers[ref.layer], task = L.tasks[ref.policy][ref.i], pts = [];
    const at = (who, t, what, stage) => {
      const i = slotAt(t), devs = Array.isArray(who) ? who : [who], xy = [];
      const loaded = !(i >= nSlots && devs.some((d) => d >= 0));
      if (loaded) for (const d of devs) {
        if (d === -1 && task.rsu) xy.push(task.rsu);
        else if (d >= 0) { const r = rowAt(d, i); if (r >= 0) xy.push(worldOf(r)); }
      }
      const c = xy.length ? [xy.reduce((a, p) => a + p[0], 0) / xy.length, xy.reduce((a, p) => a + p[1], 0) / xy.length] : null;
      pts.push({ what, stage, device: Array.isArray(who) ? who.map(devName).join(", ") : devName(who),
                 t: t, slot: i >= 0 ? V.slots[i] : null, si: i, xy: c, each: xy, loaded });
    };
    const u = task.u >= 0 ? task.u : -2;  // -1 is the RSU among devices; a user not in the page is -2
    at(u, task.t0, "request", 0);
    task.segs.forEach((sg, j) => at(sg[0], sg[1], L.draw === "group" ? "group" : "device", j + 1));
    at(u, task.end, "end", task.segs.length + 1);
    return { layer: ref.layer, policy: ref.policy, id: task.id === undefined ? null : task.id, user: devName(u),
             t0: task.t0, end: task.end, outcome: outcomeOf(task), why: task.why, lat: task.lat, pts };
  }
  function selectTask(layer, policy, i) {
    selTask = layer === null ? null : { layer, policy, i };
    showTask(); draw();
  }
  function showTask() {
    const box = document.getElementById("task");
    box.replaceChildren();
    state.path = null;
    if (!selTask) { box.appendChild(el("div", "click a task in the inspect panel or the failure list", { class: "hint" })); return; }
    const P = taskPath(selTask);
    state.path = P;
    const tb = el("table"), row = (a, b) => { const tr = el("tr"); tr.appendChild(el("td", a)); tr.appendChild(el("td", b)); tb.appendChild(tr); };
    row("task", (P.id === null ? "–" : String(P.id)) + " (" + P.layer + ", " + P.policy + ")");
    row("user", P.user);
    row("requested", P.t0.toFixed(2) + " s");
    row("ended", P.end.toFixed(2) + " s" + (P.lat !== null ? " (latency " + P.lat.toFixed(3) + " s)" : ""));
    row("outcome", P.outcome === "done" ? "done" : P.outcome === "censored" ? "censored: still running when the run ended"
      : "failed: " + (P.why || "(no reason recorded)"));
    box.appendChild(tb);
    const pt = el("table", undefined, { id: "taskpath" }), head = el("tr");
    ["#", "step", "device", "from", "slot", "at"].forEach((c) => head.appendChild(el("th", c)));
    pt.appendChild(head);
    P.pts.forEach((p) => {
      const tr = el("tr", undefined, { class: "pick", title: "go to this slot" });
      [String(p.stage), p.what, p.device, p.t.toFixed(2) + " s", p.slot === null ? "–" : String(p.slot),
       p.xy ? p.xy[0].toFixed(1) + ", " + p.xy[1].toFixed(1) : (p.loaded ? "not on the map" : "not loaded yet")]
        .forEach((c) => tr.appendChild(el("td", c)));
      if (!p.loaded) tr.setAttribute("title", "its time window is still loading");
      tr.addEventListener("click", () => { if (p.si < nSlots) { pause(); setSlot(p.si); } });
      pt.appendChild(tr);
    });
    box.appendChild(pt);
    const pending = P.pts.filter((p) => !p.loaded).length;
    if (pending) box.appendChild(el("div", pending + " point(s) not loaded yet: their time windows are still loading",
                                    { class: "hint", id: "taskpending" }));
    const clr = el("button", "clear task");
    clr.addEventListener("click", () => selectTask(null));
    box.appendChild(clr);
  }
  function drawPath() {  // the selected task's polyline, its points numbered in order
    if (!state.path) return;
    const pts = state.path.pts.filter((p) => p.xy);
    ctx.beginPath();
    pts.forEach((p, j) => { const x = wx(p.xy[0]), y = wy(p.xy[1]); if (j) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
    ctx.setLineDash([6, 4]); ctx.lineWidth = 2; ctx.strokeStyle = "#000"; ctx.stroke(); ctx.setLineDash([]);
    ctx.font = "bold 11px sans-serif";
    pts.forEach((p) => {
      p.each.forEach((q) => { if (p.each.length > 1) ring(wx(q[0]), wy(q[1]), 4, "#000", 1); });
      const x = wx(p.xy[0]), y = wy(p.xy[1]);
      ctx.beginPath(); ctx.arc(x, y, 6, 0, 2 * Math.PI); ctx.fillStyle = "#fff"; ctx.fill();
      ring(x, y, 6, "#000", 2); ctx.fillStyle = "#000"; ctx.fillText(String(p.stage), x + 8, y + 4);
    });
  }

  // -- the filter boxes ------------------------------------------------------------------------
  function filters() {
    const box = document.getElementById("filters");
    box.replaceChildren();
    const group = (name, values, label) => {
      const row = el("div", undefined, { class: "row" });
      row.appendChild(el("span", label));
      values.forEach((v) => {
        const lab = el("label"), cb = el("input", undefined, { type: "checkbox", "data-filter": name, "data-value": v });
        cb.checked = F[name].has(v);
        cb.addEventListener("change", () => {
          if (cb.checked) F[name].add(v); else F[name].delete(v);
          F.version++; abNote(); draw();
        });
        lab.appendChild(cb); lab.appendChild(document.createTextNode(v)); row.appendChild(lab);
      });
      box.appendChild(row);
    };
    group("layer", [...F.layer], "layers");
    group("policy", [...F.policy], "policies");
    group("role", ["user", "helper", "iv"], "roles");
    group("outcome", ["done", "failed", "censored"], "outcomes");
  }
  function legend() {
    const box = document.getElementById("legend");
    box.replaceChildren();
    const item = (col, text) => {
      box.appendChild(el("span", undefined, { class: "sw", style: "background:" + col }));
      box.appendChild(document.createTextNode(text + " "));
    };
    D.rsus.forEach((r, i) => item(C.rsu[i % C.rsu.length], String(r.id)));
    item(C.uncovered, "not covered");
    box.appendChild(el("br"));
    ["user", "helper", "iv", "failed"].forEach((k) => item(C[k], D.labels[k]));
  }

  Object.keys(D.layers).forEach((l) => { const o = document.createElement("option"); o.textContent = l; layerSel.appendChild(o); });
  if (!layerSel.options.length) { const o = document.createElement("option"); o.textContent = "(none)"; layerSel.appendChild(o); }
  layerSel.addEventListener("change", () => { fillPolicies(); draw(); });
  policySel.addEventListener("change", () => { fillVersus(); fillSummary(); draw(); });
  versusSel.addEventListener("change", () => { abNote(); draw(); });
  function swap() {  // A <-> B
    const a = policySel.value, b = versusSel.value;
    if (!b) return;
    policySel.value = b; fillVersus(); versusSel.value = a; abNote(); fillSummary(); draw();
  }
  document.getElementById("swap").addEventListener("click", swap);
  slider.addEventListener("input", () => { pause(); setSlot(Number(slider.value)); });
  playBtn.addEventListener("click", () => (playing ? pause() : play()));
  window.addEventListener("resize", resize);
  // -- zoom, pan, pick ------------------------------------------------------------------------
  const local = (e) => { const b = cv.getBoundingClientRect(); return [e.clientX - b.left, e.clientY - b.top]; };
  cv.addEventListener("wheel", (e) => {
    e.preventDefault();
    const dy = e.deltaY * (e.deltaMode === 1 ? 33 : e.deltaMode === 2 ? 300 : 1);  // lines, pages -> pixels
    const [mx, my] = local(e);
    zoomAt(mx, my, Math.pow(ZOOM_STEP, -dy / 100));  // one 100-pixel notch = one button press
  }, { passive: false });
  const ptrs = new Map();  // pointerId -> [x, y]: one drags, two pinch
  let moved = 0;
  cv.addEventListener("pointerdown", (e) => {
    cv.setPointerCapture(e.pointerId); ptrs.set(e.pointerId, local(e)); moved = 0;
  });
  cv.addEventListener("pointermove", (e) => {
    const p = local(e);
    if (!ptrs.has(e.pointerId)) {  // hover
      const h = pick(p[0], p[1]);
      const same = (a, b) => a === b || (a && b && a.kind === b.kind && a.v === b.v && a.i === b.i);
      if (!same(h && h.kind === "vehicle" ? h : null, hover)) { hover = h && h.kind === "vehicle" ? h : null; draw(); }
      return;
    }
    const q = ptrs.get(e.pointerId);
    if (ptrs.size === 2) {
      const o = [...ptrs.entries()].find(([id]) => id !== e.pointerId)[1];
      const d0 = Math.hypot(q[0] - o[0], q[1] - o[1]), d1 = Math.hypot(p[0] - o[0], p[1] - o[1]);
      ptrs.set(e.pointerId, p); moved += 10;
      if (d0 > 0 && d1 > 0) { ax += (p[0] - q[0]) / 2; ay += (p[1] - q[1]) / 2; zoomAt((p[0] + o[0]) / 2, (p[1] + o[1]) / 2, d1 / d0); }
      return;
    }
    ptrs.set(e.pointerId, p);
    moved += Math.abs(p[0] - q[0]) + Math.abs(p[1] - q[1]);
    panBy(p[0] - q[0], p[1] - q[1]);
  });
  const release = (e) => {
    if (!ptrs.has(e.pointerId)) return;
    ptrs.delete(e.pointerId);
    if (e.type === "pointerup" && moved < 4 && ptrs.size === 0) {  // a click, not a drag
      const [mx, my] = local(e);
      sel = pick(mx, my); hover = null; draw();
    }
  };
  cv.addEventListener("pointerup", release);
  cv.addEventListener("pointercancel", release);
  cv.addEventListener("pointerleave", () => { if (hover) { hover = null; draw(); } });
  const centre = () => [cv.width / 2, cv.height / 2];
  document.getElementById("zin").addEventListener("click", () => zoomAt(...centre(), ZOOM_STEP));
  document.getElementById("zout").addEventListener("click", () => zoomAt(...centre(), 1 / ZOOM_STEP));
  document.getElementById("fit").addEventListener("click", fit);
  document.addEventListener("keydown", (e) => {  // not while a control that uses these keys has focus
    const tag = e.target && e.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === " ") { e.preventDefault(); playing ? pause() : play(); }
    else if (e.key === "ArrowRight") { e.preventDefault(); pause(); setSlot(cur + 1); }
    else if (e.key === "ArrowLeft") { e.preventDefault(); pause(); setSlot(cur - 1); }
    else if (e.key === "+" || e.key === "=") zoomAt(...centre(), ZOOM_STEP);
    else if (e.key === "-") zoomAt(...centre(), 1 / ZOOM_STEP);
    else if (e.key === "0") fit();
    else if (e.key === "b") swap();
    else if (e.key === "Escape") { sel = null; hover = null; selectTask(null); }
  });
  document.addEventListener("keyup", (e) => {  // space on a focused button: play/pause, not a click
    if (e.key === " " && e.target && e.target.tagName === "BUTTON") e.preventDefault();
  });
  // -- progressive loading: the first time window, drawn; then the tasks; then the other windows,
  // one per idle moment; a bar in the side panel until all are in -----------------------------
  const bar = el("div", undefined, { id: "loading", class: "row hint" });
  const barMeter = el("progress", undefined, { max: String(V.windows.length + 1), value: "0" }), barText = el("span");
  bar.appendChild(barMeter); bar.appendChild(barText);
  document.getElementById("note").after(bar);
  const idle = () => new Promise((r) => (window.requestIdleCallback ? requestIdleCallback(r, { timeout: 100 }) : setTimeout(r, 0)));
  function progress(what) {
    barMeter.value = state.windows + (state.tasksLoaded ? 1 : 0);
    barText.textContent = " loading " + what + ": " + state.windows + " of " + V.windows.length + " time windows, "
      + "slots up to t = " + (nSlots ? V.times[nSlots - 1].toFixed(0) : "–") + " s";
  }
  async function loadWindow(w) {
    const a = await unpack(w), t0 = performance.now();
    fillWindow(w, a);
    state.fillMs += performance.now() - t0;  // the time spent putting windows' rows in place (bench_view.py)
    nSlots = w.s1; state.windows++;
    slider.max = Math.max(0, nSlots - 1);
    if (state.path && state.path.pts.some((p) => !p.loaded && p.si < nSlots)) showTask();  // its points now known
    state.loadLog.push([nSlots, state.drawnSlots]);  // slots decoded, and how many of them a frame had shown
  }
  async function load() {
    try {
      progress("vehicles");
      if (V.windows.length) { await loadWindow(V.windows[0]); draw(); }
      state.firstFrameMs = performance.now();
      progress("tasks");
      const shown = layerSel.value;  // the shown layer's tasks first
      const order = Object.keys(D.layers).sort((a, b) => (b === shown) - (a === shown));
      for (const name of order) {
        const L = D.layers[name];
        for (const [p, pb] of Object.entries(L.packed || {})) fillTasks(pb, await unpack(pb), L.tasks[p]);
        abCache = null; abNote(); draw();
      }
      state.tasksLoaded = true;
      for (let i = 1; i < V.windows.length; i++) {
        progress("vehicles");
        await idle();
        await loadWindow(V.windows[i]);
        if (!playing) draw();
      }
      state.loaded = true; state.loadedMs = performance.now();
      bar.remove();
      if (!playing) draw();  // what waited for the end (a dwell running to the last slot) is known now
    } catch (err) {  // an old browser (no DecompressionStream) or a damaged file: say so
      barText.textContent = " could not decode the page's data: " + err;
      throw err;
    }
  }

  legend(); filters(); fillPolicies(); showTask();
  window.cosimView = { state, setSlot, play, pause, get slot() { return cur; }, get nSlots() { return nSlots; }, slots: V.slots,
                       get view() { return { ax, ay, k }; }, zoomAt, panBy, fit,
                       get bgSyncMs() { return BG_SYNC_MS; }, set bgSyncMs(ms) { BG_SYNC_MS = ms; },
                       inspect() { return info(sel || hover); }, swap, selectTask,
                       taskIds(layer, policy) { return D.layers[layer].tasks[policy].map((t) => t.id); },
                       vehicleTasks(name) {  // what the panel lists for a vehicle at this slot
                         const x = vehicleInfo(V.names.indexOf(name));
                         return x ? x.tasks.map((t) => [t.layer, t.policy, t.role, t.stage, t.device, t.outcome]) : null; },
                       failures() { const f = failures(); return { width: f.width, counts: f.counts, first: f.first }; },
                       abDiffer() { const m = abDiffer(); return m ? Object.fromEntries(m) : null; },
                       fps(ms) { const a = state.drawMs.slice(-60); return a.length ? a.reduce((x, y) => x + y, 0) / a.length : 0; },
                       // decoded data (tests): slot index i's rows [vehicle, qx, qy, rsu index or none, speed
                       // quanta, cell, predicted dwell quanta], and a layer's task objects
                       rows(i) { const out = []; for (let r = START[i]; r < START[i + 1]; r++)
                         out.push([V.names[VID[r]], X[r], Y[r], RS[r], SPD ? SPD[r] : null, CELL ? CELL[r] : null, DW ? DW[r] : null]);
                         return out; },
                       tasks(layer, policy) { return D.layers[layer].tasks[policy]; },
                       vehicleInfo(name, i) {  // what the panel says about a vehicle at slot index i (tests)
                         setSlot(i); return vehicleInfo(V.names.indexOf(name)); },
                       dwellText(name, i) { const x = this.vehicleInfo(name, i); return x ? dwellText(x) : null; } };
  resize();
  load();
})();
