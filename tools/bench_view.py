"""How heavy is ``cosim view``'s page, how soon is its first frame, and how fluid is it?

    python tools/bench_view.py [RUN_DIR] [--page HTML ...] [--out DIR] [--max-rows N] [--repeat N]

Without RUN_DIR, runs grid6 with the DViT layer (vidi, mddi) for 600 s (~450 vehicles at once)
into runs/bench-view first. Builds the page (``cosim view``; into ``--out``, default the run's
folder) or measures the pages given with ``--page`` (an older page too: the measurement needs only
``window.cosimView`` with ``state.frames``, ``setSlot``, ``play``, ``zoomAt`` and ``nSlots``),
each in a fresh headless Chromium (1400 x 900 window) on this machine. Every time is the
browser's own clock (``performance.now()``, from navigation start; frame times are
``requestAnimationFrame`` timestamps, recorded by a script installed before the page's own):

* **first frame**: the first animation frame after the page drew its first map frame
  (``cosimView.state.frames`` >= 1), i.e. when that frame is on screen;
* **loaded**: when the page says every time window is decoded (``state.loaded``; a page
  without progressive loading: the first frame);
* **rows filled**: the page's own time putting every time window's rows in place
  (``state.fillMs``, summed over the windows; read when all are loaded);
* **fps playing**: frames per second over 5 s of play at 10 slots/s (the page's default) and at
  60 slots/s, from the first to the last animation-frame timestamp, with the longest frame;
* **fps zooming**: 240 animation frames each calling ``zoomAt`` about the map's centre (x 1.03
  for 60 frames, then / 1.03, then x 1.03 ... : four sweeps between the fitted view and
  ~6x, paused, then again while playing at 10 slots/s); with the longest frame;
* **draw ms**: the page's own time for one frame's drawing commands (every slot once; median,
  p95): the browser rasterises afterwards.

``--repeat N`` measures each page N times, alternating between pages (this machine is shared;
compare pages measured in one call), and ends with one line a page: each number's minimum and
median over its runs. Needs chromium + chromedriver + selenium.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosim.view import write_view  # noqa: E402

#: installed before the page's scripts: records animation-frame timestamps, and the first frame
#: after the page drew its first map frame
HARNESS = """
(() => {
  const B = window.__bench = { first: null, loaded: null, ts: [], rec: false, hook: null };
  function tick(ts) {
    const v = window.cosimView;
    if (B.first === null && v && v.state && v.state.slot >= 0) B.first = performance.now();
    if (B.first !== null && B.loaded === null && v && (v.state.loaded === undefined || v.state.loaded)) B.loaded = performance.now();
    if (B.hook) B.hook(ts);
    if (B.rec) B.ts.push(ts);
    requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);
})();
"""


def browser():  # noqa: ANN201
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        opts.add_argument(a)
    b = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver") or "chromedriver"))
    b.set_script_timeout(120)
    b.set_page_load_timeout(300)
    b.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HARNESS})
    return b


def _fps(ts: list[float]) -> tuple[float, float]:
    """Frames per second between the first and last timestamp, and the longest frame [ms]."""
    if len(ts) < 2:
        return 0.0, float("nan")
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    return (len(ts) - 1) / (ts[-1] - ts[0]) * 1000, max(gaps)


RECORD = """  // arguments: seconds, play speed (0: paused), zoom (bool); resolves with the rAF timestamps
  const [secs, speed, zoom, done] = arguments, B = window.__bench, v = window.cosimView;
  const c = document.getElementById('cv'), sp = document.getElementById('speed');
  v.pause(); v.fit(); v.setSlot(0);
  if (speed) { sp.value = String(speed); v.play(); }
  let n = 0;
  B.ts = []; B.rec = true;
  B.hook = zoom ? () => { const f = Math.floor(n / 60) % 2 ? 1 / 1.03 : 1.03; n++;
                          v.zoomAt(c.width / 2, c.height / 2, f); } : null;
  const t0 = performance.now();
  (function wait() {
    if ((zoom && n >= 240) || (!zoom && performance.now() - t0 >= secs * 1000)) {
      B.rec = false; B.hook = null; v.pause(); v.fit(); done(B.ts.slice());
    } else setTimeout(wait, 50);
  })();
"""


def measure(page: Path) -> dict:
    b = browser()
    try:
        t0 = time.perf_counter()
        b.get(page.as_uri())
        load_wall = time.perf_counter() - t0
        for _ in range(600):  # until the page says it is fully decoded
            first, loaded = b.execute_script("return [window.__bench.first, window.__bench.loaded]")
            if first is not None and loaded is not None:
                break
            time.sleep(0.1)
        out = {"first_frame_ms": first, "loaded_ms": loaded, "load_wall_s": load_wall,
               "slots": b.execute_script("return window.cosimView.nSlots"),
               # the page's own time putting every window's rows in place (view.js, state.fillMs)
               "fill_ms": b.execute_script("return window.cosimView.state.fillMs")}
        ms = b.execute_script("""
            const v = window.cosimView, out = [];
            for (let i = 0; i < v.nSlots; i++) { const t = performance.now(); v.setSlot(i); out.push(performance.now() - t); }
            return out;""")
        ms.sort()
        out["draw_ms_median"], out["draw_ms_p95"] = ms[len(ms) // 2], ms[int(0.95 * (len(ms) - 1))]
        for name, args in (("play10", (5, 10, False)), ("play60", (5, 60, False)),
                           ("zoom", (0, 0, True)), ("zoom_play10", (0, 10, True))):
            ts = b.execute_async_script(RECORD, *args)
            out[f"fps_{name}"], out[f"max_frame_ms_{name}"] = _fps(ts)
        out["loadavg"] = os.getloadavg()[0]  # this machine is shared: how busy it was
        out["vehicles_max"] = b.execute_script(
            "const v = window.cosimView; let m = 0; for (let i = 0; i < v.nSlots; i += 10) { v.setSlot(i);"
            " m = Math.max(m, v.state.vehicles); } return m")
        errors = [e["message"] for e in b.get_log("browser") if e["level"] == "SEVERE"]
        if errors:
            out["errors"] = errors[:3]
    finally:
        b.quit()
    return out


def line(page: Path, m: dict) -> str:
    return (f"{page}: {page.stat().st_size / 1e6:.2f} MB, {m['slots']} slots, up to {m['vehicles_max']} vehicles; "
            f"first frame {m['first_frame_ms'] / 1000:.2f} s, all loaded {m['loaded_ms'] / 1000:.2f} s "
            f"(filling the windows' rows {m['fill_ms'] / 1000:.2f} s); "
            f"draw {m['draw_ms_median']:.2f} ms median, {m['draw_ms_p95']:.2f} ms p95; fps playing "
            f"{m['fps_play10']:.1f} (10 slots/s, longest frame {m['max_frame_ms_play10']:.0f} ms), "
            f"{m['fps_play60']:.1f} (60 slots/s, {m['max_frame_ms_play60']:.0f} ms); zooming "
            f"{m['fps_zoom']:.1f} ({m['max_frame_ms_zoom']:.0f} ms), zooming while playing "
            f"{m['fps_zoom_play10']:.1f} ({m['max_frame_ms_zoom_play10']:.0f} ms)"
            + f"; load average {m['loadavg']:.1f}" + (f"; console errors: {m['errors']}" if m.get("errors") else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", nargs="?", help="a results folder (default: run grid6 + DViT for 600 s)")
    ap.add_argument("--page", action="append", default=[], help="measure this page (repeatable) instead of building one")
    ap.add_argument("--out", help="folder for the built page (default: the run's folder)")
    ap.add_argument("--max-rows", type=int, help="build with this row budget (cosim view --max-rows)")
    ap.add_argument("--repeat", type=int, default=1, help="measure each page this many times, alternating")
    ap.add_argument("--json", help="also write the measurements here")
    args = ap.parse_args()
    pages = [Path(p) for p in args.page]
    if not pages:
        run = Path(args.run) if args.run else ROOT / "runs" / "bench-view"
        if not args.run and not (run / "summary.json").is_file():
            subprocess.run([sys.executable, "-m", "cosim", "run", str(ROOT / "scenarios" / "grid6_dvit.toml"), "--out",
                            str(run), "-q", "--set", 'layers.dvit.policies=["vidi", "mddi"]'], check=True)
        out = Path(args.out) if args.out else run
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.process_time()
        kw = {"max_rows": args.max_rows} if args.max_rows else {}
        pages = [write_view(run, out / "view.html", **kw)]
        print(f"built {pages[0]} in {time.process_time() - t0:.1f} CPU s")
    results = []
    for _ in range(args.repeat):
        for page in pages:
            m = measure(page)
            results.append({"page": str(page), "bytes": page.stat().st_size, **m})
            print(line(page, m), flush=True)
    if args.repeat > 1:  # per page: the minimum and median of each number over the repeats
        for page in pages:
            print(summary(page, [r for r in results if r["page"] == str(page)]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


#: the numbers summary() gives min / median of: (key, label, scale, digits)
SUMMARY = (("first_frame_ms", "first frame s", 1e-3, 2), ("loaded_ms", "all loaded s", 1e-3, 2),
           ("fill_ms", "windows' rows filled s", 1e-3, 2),
           ("draw_ms_median", "draw ms", 1, 2), ("fps_play10", "fps playing 10/s", 1, 1),
           ("fps_play60", "fps playing 60/s", 1, 1), ("fps_zoom", "fps zooming", 1, 1),
           ("fps_zoom_play10", "fps zooming while playing", 1, 1))


def summary(page: Path, runs: list[dict]) -> str:
    """One line: each of :data:`SUMMARY`'s numbers as min / median over the page's runs."""
    import statistics

    parts = []
    for key, label, scale, digits in SUMMARY:
        v = [r[key] * scale for r in runs if r.get(key) is not None]
        if v:
            parts.append(f"{label} {min(v):.{digits}f} / {statistics.median(v):.{digits}f}")
    return f"{page} ({len(runs)} runs, min / median): " + "; ".join(parts)


if __name__ == "__main__":
    main()
