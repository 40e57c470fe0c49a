"""How heavy is ``cosim view``'s page, and how fast does it draw?

    python tools/bench_view.py [RUN_DIR] [--max-rows N]

Without RUN_DIR, runs grid6 with the DViT layer (vidi, mddi) for 600 s (~450 vehicles at once)
into runs/bench-view first. Prints: the page's size and build time; in headless Chromium, the
time to draw one frame (every slot once, median and p95) and the frames per second while playing
at 60 slots/s (the browser caps animation at its refresh rate), and the time of one zoom or pan
step (background and frame redrawn; 120 steps about the centre, one slot). With --max-rows, the same for a
subsampled page. Needs chromium + chromedriver + selenium.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosim.view import MAX_ROWS, write_view  # noqa: E402


def browser():  # noqa: ANN201
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        opts.add_argument(a)
    return webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver") or "chromedriver"))


def measure(page: Path) -> dict:
    b = browser()
    try:
        t0 = time.perf_counter()
        b.get(page.as_uri())
        load_s = time.perf_counter() - t0
        ms = b.execute_script("""
            const v = window.cosimView, out = [];
            for (let i = 0; i < v.nSlots; i++) { const t = performance.now(); v.setSlot(i); out.push(performance.now() - t); }
            return out;""")
        zoom = b.execute_script("""  // a transform change redraws the background (edges, discs) and the frame
            const v = window.cosimView, c = document.getElementById('cv'), out = [];
            v.setSlot(Math.floor(v.nSlots / 2));
            for (let i = 0; i < 120; i++) {
              const t = performance.now();
              if (i % 3 === 2) v.panBy(7, -5); else v.zoomAt(c.width / 2, c.height / 2, i < 60 ? 1.05 : 1 / 1.05);
              out.push(performance.now() - t);
            }
            v.fit(); return out;""")
        zoom.sort()
        b.execute_script("document.getElementById('speed').value = '60'; window.cosimView.setSlot(0); window.cosimView.play()")
        f0, t0 = b.execute_script("return window.cosimView.state.frames"), time.perf_counter()
        time.sleep(4)
        f1, t1 = b.execute_script("return window.cosimView.state.frames"), time.perf_counter()
        n = b.execute_script("return window.cosimView.state.vehicles")
    finally:
        b.quit()
    ms.sort()
    return {"load_s": load_s, "draw_ms_median": ms[len(ms) // 2], "draw_ms_p95": ms[int(0.95 * (len(ms) - 1))],
            "fps_playing": (f1 - f0) / (t1 - t0), "vehicles_last_frame": n,
            "zoom_ms_median": zoom[len(zoom) // 2], "zoom_ms_p95": zoom[int(0.95 * (len(zoom) - 1))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", nargs="?", help="a results folder (default: run grid6 + DViT for 600 s)")
    ap.add_argument("--max-rows", type=int, help="also measure a page subsampled to this many vehicle rows")
    args = ap.parse_args()
    run = Path(args.run) if args.run else ROOT / "runs" / "bench-view"
    if not args.run and not (run / "summary.json").is_file():
        subprocess.run([sys.executable, "-m", "cosim", "run", str(ROOT / "scenarios" / "grid6_dvit.toml"), "--out",
                        str(run), "-q", "--set", 'layers.dvit.policies=["vidi", "mddi"]'], check=True)
    for rows in [MAX_ROWS] + ([args.max_rows] if args.max_rows else []):
        t0 = time.perf_counter()
        page = write_view(run, run / f"view-{rows}.html", max_rows=rows)
        build = time.perf_counter() - t0
        m = measure(page)
        print(f"max_rows {rows}: {page.stat().st_size / 1e6:.2f} MB, built in {build:.1f} s; page load {m['load_s']:.2f} s; "
              f"draw {m['draw_ms_median']:.2f} ms median, {m['draw_ms_p95']:.2f} ms p95; "
              f"{m['fps_playing']:.0f} frames/s playing at 60 slots/s; {m['vehicles_last_frame']} vehicles in the last frame; "
              f"zoom/pan step {m['zoom_ms_median']:.2f} ms median, {m['zoom_ms_p95']:.2f} ms p95")


if __name__ == "__main__":
    main()
