"""``cosim view``: the page's data against the results tables, and the page itself in a real
headless Chromium (Selenium): what it draws at a slot equals coverage.parquet's counts."""

from __future__ import annotations

import atexit
import base64
import contextlib
import functools
import gzip
import io
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cosim.palette import rsu_color
from cosim.view import build_data, write_view

from .conftest import GRID6_NET

@pytest.fixture(scope="module")
def run_dir(dvit_moe_run):
    return dvit_moe_run  # the session's run (60 s, DViT and MoE), shared with tests/test_report.py


def _arr(b64: str, dtype) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype=np.dtype(dtype).newbyteorder("<"))


def _rows_frame(rows, d) -> pd.DataFrame:
    """The page's decoded rows of one slot (``cosimView.rows(i)``) in metres, RSU ids, m/s."""
    t, v, ids = d["transform"], d["vehicles"], [r["id"] for r in d["rsus"]]
    return pd.DataFrame({"x": [t["x0"] + r[1] * t["scale"] for r in rows], "y": [t["y0"] + r[2] * t["scale"] for r in rows],
                         "rsu": [ids[r[3]] if r[3] != v["none"] else None for r in rows],
                         "speed": [r[4] * v["speed_q"] for r in rows],
                         "cell": [-1 if r[5] == v["no_cell"] else r[5] for r in rows]}, index=[r[0] for r in rows])


@pytest.mark.sumo
def test_decoded_page_data_in_headless_chromium_equals_the_tables(run_dir, tmp_path):
    """What the browser decodes (gzip-packed time windows with delta-coded columns, packed task
    lists) against coverage.parquet row by row, and against build_data's task lists; the page
    loads progressively: the first window drawn before the next is decoded, the slider reaching
    the last slot once all are in."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = build_data(run_dir, window_s=20)  # three windows: the delta chain starts again in each
    v = d["vehicles"]
    cov = pd.read_parquet(run_dir / "coverage.parquet")
    assert v["stride"] == 1 and v["rows"] == len(cov) and v["slots"] == sorted(cov["slot"].unique())
    assert [(w["s0"], w["s1"]) for w in v["windows"]] == [(0, 20), (20, 40), (40, len(v["slots"]))]
    page = write_view(run_dir, tmp_path / "view.html", window_s=20)
    text = page.read_text()
    assert '"tasks":{}' in text  # every built-in task list packed, none as JSON
    with _page(page) as browser:
        state = browser.execute_script("return window.cosimView.state")
        n = len(v["slots"])
        assert state["loaded"] and state["windows"] == 3
        assert state["loadLog"] == [[20, 0], [40, 20], [n, 40]]  # a frame showed each window before the next came
        assert browser.execute_script("return document.getElementById('loading')") is None  # the bar is gone
        slider = browser.find_element(By.ID, "slider")
        assert slider.get_attribute("max") == str(n - 1)
        slider.click()
        slider.send_keys(Keys.END)
        assert browser.execute_script("return window.cosimView.state.slot") == v["slots"][-1]
        rows = browser.execute_script("const v = window.cosimView; return v.slots.map((_, i) => v.rows(i))")
        t = d["transform"]
        for i, slot in enumerate(v["slots"]):  # every slot, row by row
            want = cov[cov["slot"] == slot].set_index("vehicle")
            got = _rows_frame(rows[i], d)
            assert sorted(got.index) == sorted(want.index.astype(str))
            want = want.loc[got.index]
            assert np.abs(got["x"] - want["x"].to_numpy()).max() <= t["scale"] / 2 + 1e-9  # half a grid step
            assert np.abs(got["y"] - want["y"].to_numpy()).max() <= t["scale"] / 2 + 1e-9
            assert list(got["rsu"]) == [r if isinstance(r, str) else None for r in want["rsu"].astype(object)]
            assert np.abs(got["speed"] - want["speed_mps"].clip(0, 63.75).to_numpy()).max() <= 0.125 + 1e-9
            assert list(got["cell"]) == [int(c) for c in want["cell"]]
            keys = [(r[3], v["names"].index(r[0])) for r in rows[i]]
            assert keys == sorted(keys)  # sorted by RSU, then vehicle (the page's binary search needs it)
            pred = np.array([np.nan if r[6] == v["no_dwell"] else r[6] * v["dwell_q"] for r in rows[i]])
            served = want["rsu"].notna().to_numpy()
            assert (np.isnan(pred) == ~served).all()  # the sentinel exactly where no RSU serves
            assert np.abs(pred[served] - want["dwell_s"].to_numpy()[served]).max(initial=0) <= v["dwell_q"] / 2 + 1e-9
        for layer, L in d["layers"].items():  # the task objects, rebuilt from the packed arrays
            for policy, tasks in L["tasks"].items():
                assert L["packed"][policy] is not None
                assert browser.execute_script(f"return window.cosimView.tasks('{layer}', '{policy}')") == tasks


@pytest.mark.sumo
def test_a_task_list_that_cannot_be_packed_travels_as_json(run_dir, tmp_path, monkeypatch):
    """A list pack_tasks refuses (a plugin layer's unrounded times) goes into the page as JSON and
    the page shows the same objects; the packed lists beside it are decoded as usual."""
    import cosim.view as view

    assert view.pack_tasks([{"u": 1, "t0": 0.123456, "end": 1.0, "ok": True, "why": "", "lat": None, "segs": []}]) is None
    real = view.pack_tasks
    monkeypatch.setattr(view, "pack_tasks", lambda tasks: None if any(  # DViT's lists (a device per segment) refused
        not isinstance(seg[0], list) for t in tasks for seg in t["segs"]) else real(tasks))
    d = build_data(run_dir)
    assert all(b is None for b in d["layers"]["dvit"]["packed"].values())
    assert all(b is not None for b in d["layers"]["moe"]["packed"].values())
    page = write_view(run_dir, tmp_path / "view.html")
    with _page(page) as browser:
        for layer in ("dvit", "moe"):
            for policy, tasks in d["layers"][layer]["tasks"].items():
                assert browser.execute_script(f"return window.cosimView.tasks('{layer}', '{policy}')") == tasks


@pytest.mark.sumo
def test_task_times_rebuilt_from_the_step_columns(run_dir):
    d = build_data(run_dir)
    dv = pd.read_parquet(run_dir / "dvit_tasks.parquet")
    tasks = d["layers"]["dvit"]["tasks"]["vidi"]
    done = [t for t in tasks if t["lat"] is not None]
    assert len(done) > 10
    for t in done:  # the last step ends when the task's latency says
        assert t["segs"][-1][2] == pytest.approx(t["t0"] + t["lat"], abs=2e-4)
        assert all(a[2] == pytest.approx(b[1], abs=2e-4) for a, b in zip(t["segs"], t["segs"][1:]))
    assert len(tasks) == (dv["policy"] == "vidi").sum()
    moe = d["layers"]["moe"]["tasks"]["gecpa"]
    for t in (t for t in moe if t["lat"] is not None):
        assert t["segs"][-1][2] == pytest.approx(t["t0"] + t["lat"], abs=2e-4)
    tl = d["layers"]["dvit"]["timeline"]["vidi"]
    sub = dv[dv["policy"] == "vidi"]
    # the bins' success rates average back to the policy's (weighted by tasks per bin)
    width = tl["t"][0] * 2
    counts = np.bincount(np.floor(sub["t_request_s"] / width).astype(int))
    rates = np.array([s if s is not None else 0.0 for s in tl["success"]])
    assert (counts[: len(rates)] * rates).sum() / counts.sum() == pytest.approx(sub["success"].mean())


def _blob(b: dict) -> dict:
    """A pack() blob's arrays, inflated in Python (gzip, little-endian, in the layout's order)."""
    raw, out, off = gzip.decompress(base64.b64decode(b["z"])), {}, 0
    for name, t, n in b["layout"]:
        dt = np.dtype({"u8": np.uint8, "u16": np.uint16, "u32": np.uint32, "i32": np.int32}[t]).newbyteorder("<")
        out[name] = np.frombuffer(raw, dt, n, off).astype(np.int64)
        off += dt.itemsize * n
    return out


@pytest.mark.sumo
def test_what_is_known_already_is_not_sent_again(run_dir):
    """The encoding's two savings, read back in Python: a window's rows go by vehicle, then slot —
    its (vehicle, slot) pairs, the sums of the ``vid`` and ``slot`` differences, strictly increasing
    and exactly coverage's rows of the window's slots —; a task's segment starts travel from the
    end of the segment before (0 wherever the task lists' segments follow one another, which they
    do here), its end from its last segment's end, its latency from end - request (a few ticks)."""
    d = build_data(run_dir, window_s=20)
    v = d["vehicles"]
    cov = pd.read_parquet(run_dir / "coverage.parquet", columns=["slot", "vehicle"])
    for w in v["windows"]:
        a = _blob(w)
        vid, slot = np.cumsum(a["vid"]) % 65536, np.cumsum(a["slot"]) % 65536 + w["s0"]
        assert len(vid) == w["rows"] and ((np.diff(vid) > 0) | ((np.diff(vid) == 0) & (np.diff(slot) > 0))).all()
        want = cov[cov["slot"].isin(v["slots"][w["s0"]:w["s1"]])]
        got = {(v["names"][i], v["slots"][s]) for i, s in zip(vid, slot)}
        assert got == set(zip(want["vehicle"].astype(str), want["slot"])) and len(got) == len(want)
    followers = 0
    for L in d["layers"].values():
        for policy, tasks in L["tasks"].items():
            a, segs = _blob(L["packed"][policy]), [s for t in tasks for s in t["segs"]]
            firsts = np.cumsum([0] + [len(t["segs"]) for t in tasks])[:-1][[bool(t["segs"]) for t in tasks]]
            later = np.ones(len(segs), dtype=bool)
            later[firsts] = False
            assert (a["s0"][later] == 0).all()  # each follows the one before
            followers += int(later.sum())
            assert (a["s0"][firsts] == [round((t["segs"][0][1] - t["t0"]) * 1e4) for t in tasks if t["segs"]]).all()
            ends = [round((t["end"] - (t["segs"][-1][2] if t["segs"] else t["t0"])) * 1e4) for t in tasks]
            assert (a["end"] == ends).all() and (a["end"] == 0).mean() > 0.9
            has = np.array([t["lat"] is not None for t in tasks])
            assert ((a["flags"] & 4) > 0).tolist() == has.tolist() and np.abs(a["lat"]).max() <= 10
    assert followers > 0  # segments after a task's first (88 on this run): the check above is not empty


@pytest.mark.sumo
def test_city_runs_are_subsampled_by_slot(run_dir):
    cov = pd.read_parquet(run_dir / "coverage.parquet")
    d = build_data(run_dir, max_rows=len(cov) // 3)
    v = d["vehicles"]
    k = math.ceil(len(cov) / (len(cov) // 3))
    slots = sorted(cov["slot"].unique())
    assert v["stride"] == k > 1
    assert v["slots"] == slots[::k]
    assert v["rows"] == cov["slot"].isin(slots[::k]).sum()


@pytest.mark.sumo
def test_the_byte_budget_keeps_the_smallest_stride_that_fits(run_dir, tmp_path):
    """--max-mb: the page is at most the budget, and one slot more often it would not be (the
    page written and measured on disk, each stride forced through the row budget)."""
    def page(**kw):
        path = write_view(run_dir, tmp_path / "v.html", **kw)
        return path.stat().st_size, json.loads(path.read_text().split('type="application/json">')[1].split("</script>")[0])

    full, d1 = page(max_bytes=None)
    assert d1["vehicles"]["stride"] == 1
    least, _ = page(max_bytes=None, max_rows=1)  # one slot kept: what the page costs beside the rows
    budget = int(least + 0.4 * (full - least))
    size, d = page(max_bytes=budget)
    k, rows = d["vehicles"]["stride"], d1["vehicles"]["rows"]
    assert k > 1 and size <= budget
    assert d["vehicles"]["slots"] == d1["vehicles"]["slots"][::k]
    finer, _ = page(max_bytes=None, max_rows=math.ceil(rows / (k - 1)))  # stride k - 1
    assert finer > budget
    # what is kept whole: every task of every policy, the summary, the timeline
    for layer, L in d1["layers"].items():
        assert d["layers"][layer]["packed"] == L["packed"] and d["layers"][layer]["timeline"] == L["timeline"]


@pytest.mark.sumo
def test_page_is_self_contained(run_dir, tmp_path):
    page = write_view(run_dir, tmp_path / "v.html").read_text()
    assert "<script src" not in page and "<link" not in page
    assert "http://" not in page and "https://" not in page
    assert "cosimView" in page


@pytest.mark.sumo
def test_bad_input_is_one_line(run_dir, tmp_path, cli):
    p = cli("view", str(tmp_path / "nope"))
    assert p.returncode == 2 and p.stderr.strip() == f"cosim: error: {tmp_path / 'nope'}: no such results folder"
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    cfg = (moved / "config.toml").read_text().replace(str(GRID6_NET.parent), "/gone")
    (moved / "config.toml").write_text(cfg)
    p = cli("view", str(moved))
    assert p.returncode == 2 and "--net" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = cli("view", str(moved), "--net", str(GRID6_NET))  # results copied elsewhere: the network named
    assert p.returncode == 0, p.stderr
    assert (moved / "view.html").is_file()
    for opt, val, msg in (("--max-mb", "-1", "--max-mb must be >= 0"), ("--window-s", "0", "--window-s must be > 0"),
                          ("--max-rows", "0", "--max-rows must be >= 1"), ("--dwell-step", "0", "--dwell-step must be > 0"),
                          ("--dwell-step", "nan", "--dwell-step must be > 0")):
        p = cli("view", str(run_dir), opt, val, "--out", str(tmp_path / "x.html"))
        assert p.returncode == 2 and p.stderr.strip() == f"cosim: error: {msg}", p.stderr
    p = cli("view", str(run_dir), "--window-s", "15", "--max-mb", "0", "--dwell-step", "0.5", "--out", str(tmp_path / "w.html"))
    assert p.returncode == 0, p.stderr
    d = json.loads((tmp_path / "w.html").read_text().split('type="application/json">')[1].split("</script>")[0])
    assert len(d["vehicles"]["windows"]) == 4 and d["vehicles"]["stride"] == 1
    big = pd.read_parquet(run_dir / "coverage.parquet")["dwell_s"].max() / 0.5 >= 255  # two bytes a row where needed
    assert d["vehicles"]["dwell_q"] == 0.5 and d["vehicles"]["no_dwell"] == (65535 if big else 255)


# -- the page in a real browser -------------------------------------------------------------
_SHARED: dict = {}  # the one Chromium the browser tests take turns with (a start costs ~2 s)


def _end_shared() -> None:
    browser = _SHARED.pop("browser", None)
    if browser is not None:
        browser.end()


@pytest.fixture(scope="module", autouse=True)
def _one_chromium():
    """The shared Chromium, if a test started it, ends with this module (the last of the
    suite's modules that use it; tests/test_contract.py and tests/test_harden.py take it too)."""
    yield
    _end_shared()


def _chromium():
    """The shared headless Chromium, started by the first test that asks; a test's
    ``browser.quit()`` hands it back blank (extra windows closed, on about:blank, its console
    log read and dropped: the next test starts on a page of its own, with a log of its own). If
    it cannot be handed back (a test left it broken), it is ended and the next test starts
    another. One still running when the tests end (another module's test ran alone) is ended
    at exit."""
    browser = _SHARED.get("browser")
    if browser is None:
        browser = _start_chromium()
        if not _SHARED.get("atexit"):
            atexit.register(_end_shared)
            _SHARED["atexit"] = True
        _SHARED["browser"] = browser
    return browser


#: installed before a page's own scripts by ``_page(..., held=True)``: ``requestIdleCallback``
#: (what the page waits on before each time window after the first) keeps its callbacks in
#: ``window.__held`` until the test runs them (``window.__held.shift()()``: one window more)
HOLD_IDLE = "window.__held = []; window.requestIdleCallback = (cb) => window.__held.push(cb);"


@contextlib.contextmanager
def _page(path, held: bool = False):  # noqa: ANN001, ANN202 - a Path -> the browser
    """The shared Chromium (:func:`_chromium`) on the page at ``path``, loaded (its data all
    decoded; ``held``: its first time window and its tasks, the rest held back by
    :data:`HOLD_IDLE`); when the block ends without an error, the page has logged no SEVERE
    console message; the browser is handed back either way. Every browser test opens its page
    through this."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _chromium()
    hold = None
    try:
        if held:
            hold = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOLD_IDLE})["identifier"]
            browser.open(Path(path).as_uri())
            WebDriverWait(browser, 120).until(lambda b: b.execute_script(
                "const v = window.cosimView; return !!v && v.state.tasksLoaded === true"
                " && (window.__held.length > 0 || v.state.loaded)"))
        else:
            browser.get(Path(path).as_uri())
        yield browser
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        try:
            if hold is not None:  # the next page loads as usual
                browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": hold})
        except Exception:  # noqa: BLE001 - a browser that cannot drop it is ended, not handed back
            _SHARED.pop("browser", None)
            browser.end()
        else:
            browser.quit()


def _start_chromium():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e '.[test]')")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("Chromium or chromedriver not installed (Debian: apt-get install chromium chromium-driver); "
                    ".ci/run installs them")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    from selenium.webdriver.support.ui import WebDriverWait

    opts = Options()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,800"):
        opts.add_argument(a)
    browser = webdriver.Chrome(options=opts, service=Service(driver))
    get = browser.get

    def get_loaded(url: str) -> None:  # a view page decodes its data after the load event: until it is all in
        get(url)
        WebDriverWait(browser, 120).until(
            lambda b: b.execute_script("return !window.cosimView || window.cosimView.state.loaded === true"))

    browser.get = get_loaded
    browser.open = get  # without waiting for the data (_page's held pages)
    browser.end = browser.quit

    def hand_back() -> None:
        try:
            for handle in browser.window_handles[1:]:
                browser.switch_to.window(handle)
                browser.close()
            browser.switch_to.window(browser.window_handles[0])
            get("about:blank")
            browser.get_log("browser")
        except Exception:  # noqa: BLE001 - whatever broke it, the next test gets a new one
            _SHARED.pop("browser", None)
            browser.end()

    browser.quit = hand_back
    return browser


@pytest.mark.sumo
def test_page_in_headless_chromium_draws_what_coverage_says(run_dir, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page = write_view(run_dir, tmp_path / "view.html")
    cov = pd.read_parquet(run_dir / "coverage.parquet")
    rsus = json.loads((run_dir / "summary.json").read_text())["rsus"]
    with _page(page) as browser:
        slider = browser.find_element(By.ID, "slider")
        slider.click()
        slider.send_keys(Keys.HOME)
        for _ in range(40):  # move the slider the way a person does: 40 slots to the right
            slider.send_keys(Keys.ARROW_RIGHT)
        state = browser.execute_script("return window.cosimView.state")
        slots = browser.execute_script("return window.cosimView.slots")
        assert state["slot"] == slots[40]
        rows = cov[cov["slot"] == state["slot"]]
        assert state["vehicles"] == len(rows) > 50
        assert state["rsus"] == len(rsus) == 4
        assert state["byRsu"] == {str(k): int(n) for k, n in rows["rsu"].astype(object).value_counts().items()}
        assert state["uncovered"] == int(rows["rsu"].isna().sum())
        assert state["tasks"] > 0
        assert browser.find_element(By.ID, "drawn").text == f"drawn: 4 RSU discs, {len(rows)} vehicles"
        # the pixels: a rich picture with every RSU's outline colour in it
        img = np.asarray(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")).astype(int)
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50
        for i in range(4):
            assert (np.abs(img - np.array(rsu_color(i))).sum(axis=-1) <= 6).sum() > 100, f"rsu{i} colour missing"
        # play advances the slider
        browser.find_element(By.ID, "play").click()
        browser.execute_script("return new Promise(r => setTimeout(r, 800))")
        assert browser.execute_script("return window.cosimView.slot") > 40
        assert browser.execute_script("return window.cosimView.state.frames") > 3


# -- a results folder whose strings are hostile ---------------------------------------------
PWN = "window.__pwned = (window.__pwned || []).concat"
HOSTILE_RSUS = [f"<img src=x onerror=\"{PWN}(['rsu']);document.title='PWNED'\">",
                f"</script><script>{PWN}(['rsu-script'])</script>",
                "<!--<script>",
                "/*JS*/ TITLE /*DATA*/ &amp; \u2028\u2029 __proto__"]
HOSTILE_VEHICLES = [f"</script><script>{PWN}(['veh'])</script>", "/*JS*/", "TITLE", "<!--<script>", "/*DATA*/",
                    "\u2028\u2029", f"<svg onload=\"{PWN}(['svg'])\">", "&lt;&amp;"]
HOSTILE_POLICIES = {"vidi": f"<img src=x onerror=\"{PWN}(['policy'])\">",
                    "mddi": f"</td><script>{PWN}(['td'])</script>",
                    "gecpa": "TITLE/*JS*/<!--<script>$\\frac{$",  # also mathtext to matplotlib
                    "nearest": "<b>nearest</b>&amp;"}
HOSTILE_TITLE = f"</title><script>{PWN}(['title'])</script>TITLE/*JS*/$\\left($"
HOSTILE_LAYER = f"<svg onload=\"{PWN}(['layer'])\">"  # the page lists only the layers it can draw


def _hostile_copy(run_dir, dest):
    """``run_dir`` (a real run) copied with every id and name the page shows rewritten to a hostile
    string: RSU ids, vehicle ids (coverage and task tables), policy names, the scenario name, an
    extra layer block. The tables are rewritten as single Parquet files (read_table reads either)."""
    shutil.copytree(run_dir, dest)
    s = json.loads((dest / "summary.json").read_text())
    rsu_map = {r["id"]: HOSTILE_RSUS[i] for i, r in enumerate(s["rsus"])}
    for r in s["rsus"]:
        r["id"] = rsu_map[r["id"]]
    s["scenario"] = HOSTILE_TITLE
    s["layers"] = {layer: {HOSTILE_POLICIES.get(p, p): v for p, v in block.items()} for layer, block in s["layers"].items()}
    s["layers"][HOSTILE_LAYER] = {HOSTILE_POLICIES["vidi"]: {"tasks": 1}}
    (dest / "summary.json").write_text(json.dumps(s))

    def veh(v):
        return None if v is None else f"{HOSTILE_VEHICLES[hash(str(v)) % len(HOSTILE_VEHICLES)]}{v}"

    def rewrite(name, fn):
        df = pd.read_parquet(dest / name)
        shutil.rmtree(dest / name)
        fn(df).to_parquet(dest / name)

    def cov(df):
        df["vehicle"] = [veh(v) for v in df["vehicle"].astype(object)]
        df["rsu"] = [rsu_map[r] if isinstance(r, str) else None for r in df["rsu"].astype(object)]
        return df

    def dvit(df):
        df["user"] = [veh(v) for v in df["user"]]
        df["devices"] = [[d if d == "@rsu" else veh(d) for d in ds] for ds in df["devices"]]
        df["policy"] = [HOSTILE_POLICIES[p] for p in df["policy"]]
        return df

    def moe(df):
        df["tv"] = [veh(v) for v in df["tv"]]
        df["layer_ivs"] = [["|".join(veh(v) for v in str(x).split("|") if v) for x in row] for row in df["layer_ivs"]]
        df["policy"] = [HOSTILE_POLICIES[p] for p in df["policy"]]
        return df

    rewrite("coverage.parquet", cov)
    rewrite("dvit_tasks.parquet", dvit)
    rewrite("moe_tasks.parquet", moe)
    return dest, rsu_map


@pytest.mark.sumo
def test_hostile_strings_stay_data_in_the_page_source(run_dir, tmp_path):
    run, _ = _hostile_copy(run_dir, tmp_path / "hostile")
    page = write_view(run, tmp_path / "v.html").read_text(encoding="utf-8")
    head, rest = page.split('<script id="cosim-data" type="application/json">', 1)
    data, rest = rest.split("</script>", 1)
    for ch in "<>&\u2028\u2029":  # every hostile string is inside the JSON, escaped
        assert ch not in data
    assert any(v.startswith("</script>") for v in json.loads(data)["vehicles"]["names"])
    assert sorted(r["id"] for r in json.loads(data)["rsus"]) == sorted(HOSTILE_RSUS)
    assert page.count("<script") == 2 and "PWNED" not in head.replace(HOSTILE_RSUS[0], "")
    assert "<title>cosim view: &lt;/title&gt;&lt;script&gt;" in head


@pytest.mark.sumo
def test_hostile_run_in_headless_chromium_runs_no_script_and_draws_everything(run_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    run, rsu_map = _hostile_copy(run_dir, tmp_path / "hostile")
    page = write_view(run, tmp_path / "view.html")
    cov = pd.read_parquet(run / "coverage.parquet")
    title = f"{HOSTILE_TITLE} — seed 42, " + str(json.loads((run / "summary.json").read_text())["slots"]) + " slots"
    with _page(page) as browser:
        browser.execute_script("return new Promise(r => setTimeout(r, 300))")  # an onerror would have fired
        assert browser.execute_script("return window.__pwned === undefined")
        assert browser.title == f"cosim view: {title}"
        assert browser.execute_script("return document.getElementById('title').textContent") == title
        assert browser.execute_script("return document.querySelectorAll('script').length") == 2
        assert browser.execute_script("return document.querySelectorAll('#side img, #side svg, #side b').length") == 0
        # the legend names every RSU, as text
        legend = browser.execute_script("return document.getElementById('legend').textContent")
        for rid in HOSTILE_RSUS:
            assert rid in legend
        # the page's layers: only those it can draw; each policy table lists the hostile names as text
        layer = Select(browser.find_element(By.ID, "layer"))
        assert [o.get_attribute("textContent") for o in layer.options] == ["dvit", "moe"]
        for name, pols in (("dvit", ["vidi", "mddi"]), ("moe", ["gecpa", "nearest"])):
            layer.select_by_visible_text(name)
            first = browser.execute_script(
                "return [...document.querySelectorAll('#summary tr')].slice(1).map(r => r.cells[0].textContent)")
            assert first == [HOSTILE_POLICIES[p] for p in pols]
            opts = browser.execute_script("return [...document.getElementById('policy').options].map(o => o.value)")
            assert sorted(opts) == sorted(HOSTILE_POLICIES[p] for p in pols)
        layer.select_by_visible_text("dvit")
        # vehicles drawn per RSU at a slot, keyed by the hostile ids; tasks found by hostile vehicle ids
        slots = browser.execute_script("return window.cosimView.slots")
        shown = 0
        for i in (10, 25, 40):
            browser.execute_script(f"window.cosimView.setSlot({i})")
            state = browser.execute_script("return window.cosimView.state")
            rows = cov[cov["slot"] == slots[i]]
            assert state["vehicles"] == len(rows) > 20
            assert state["rsus"] == 4
            assert state["byRsu"] == {str(k): int(n) for k, n in rows["rsu"].astype(object).value_counts().items()}
            shown += state["tasks"]
        assert shown > 0
        # the panel of a hostile vehicle: its id, RSU, tasks (hostile policies, helpers) as text
        v, _, me, want = _click_a_busy_vehicle(browser, run, build_data(run), cov)
        info, tasks = _panel(browser)
        assert info["vehicle"] == v and any(v.startswith(h) for h in HOSTILE_VEHICLES)
        assert info["serving RSU"] == (str(me["rsu"]) if isinstance(me["rsu"], str) else "not covered")
        assert tasks == want and any(w[1] in HOSTILE_POLICIES.values() for w in want)
        assert browser.execute_script("return document.querySelectorAll('#inspect *:not(div,table,tbody,tr,td,th)').length") == 0
        # a task's panel, the filters and the failure list show the hostile names as text
        browser.find_elements("css selector", "#vtasks tr")[1].click()
        path = browser.execute_script("return window.cosimView.state.path")
        assert path["policy"] in HOSTILE_POLICIES.values()
        text = browser.execute_script("return document.getElementById('task').textContent")
        assert path["policy"] in text and all(p["device"] in text for p in path["pts"])
        assert any(any(p["device"].startswith(h) for h in HOSTILE_VEHICLES) for p in path["pts"])
        filters = browser.execute_script("return document.getElementById('filters').textContent")
        assert all(p in filters for p in HOSTILE_POLICIES.values())
        f = browser.execute_script("return window.cosimView.failures()")
        x0, x1 = browser.execute_script("const s = window.cosimView.state.failStrip; return [s.x0, s.x1]")
        b = int(np.argmax(f["counts"]))
        browser.execute_script("const c = document.getElementById('fails'), r = c.getBoundingClientRect();"
                               "c.dispatchEvent(new MouseEvent('click', {clientX: r.left + r.width / c.width *"
                               f" {x0 + (b + 0.5) * (x1 - x0) / len(f['counts'])}}}))")
        listed = browser.execute_script("return window.cosimView.state.failList")
        assert listed and all(x[1] in HOSTILE_POLICIES.values() for x in listed)
        assert listed[0][1] in browser.execute_script("return document.getElementById('faillist').textContent")
        assert browser.execute_script(
            "return document.querySelectorAll('#task *:not(div,table,tbody,tr,td,th,button),"
            " #faillist *:not(div,table,tbody,tr,td,th), #filters *:not(div,span,label,input)').length") == 0
        assert browser.execute_script("return window.__pwned === undefined")
        assert browser.title == f"cosim view: {title}"


@pytest.mark.sumo
def test_report_of_the_hostile_run_draws_the_names_as_text(run_dir, tmp_path):
    from cosim.report import report

    run, _ = _hostile_copy(run_dir, tmp_path / "hostile")
    paths, titles = report(run, tmp_path / "rep")
    assert [p.name for p in paths] == ["report.png", "report.pdf"] and all(p.stat().st_size > 10_000 for p in paths)
    assert len(titles) == 7  # map, dwell x 2, two per layer


# -- zoom, pan, keyboard, inspecting ---------------------------------------------------------
def _view(browser):
    v = browser.execute_script("return window.cosimView.view")
    attr = json.loads(browser.execute_script("return document.getElementById('cv').dataset.view"))
    assert attr == pytest.approx([v["ax"], v["ay"], v["k"]], abs=1e-9)  # the attribute says the same
    return v


def _near(got, want):
    assert got == pytest.approx(want, rel=1e-9, abs=1e-6)


def _screen(v, t, x, y):
    """World (x, y) [m] -> canvas pixel, by hand: quantised like the page, then the transform."""
    qx = min(max(round((x - t["x0"]) / t["scale"]), 0), 65535)
    qy = min(max(round((y - t["y0"]) / t["scale"]), 0), 65535)
    return v["ax"] + qx * v["k"], v["ay"] - qy * v["k"]


def _click_canvas(browser, sx, sy):
    """A real click (pointer down/up) at canvas pixel (sx, sy); Selenium's offsets are from the
    element's centre, whole pixels."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    cv = browser.find_element(By.ID, "cv")
    w, h = browser.execute_script("const c = document.getElementById('cv'); return [c.width, c.height]")
    ActionChains(browser).move_to_element_with_offset(cv, round(sx - w / 2), round(sy - h / 2)).click().perform()


@pytest.mark.sumo
def test_zoom_pan_fit_and_keys_move_the_one_transform_as_computed_by_hand(run_dir, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page = write_view(run_dir, tmp_path / "view.html")
    d = build_data(run_dir)
    t, b = d["transform"], d["bounds"]
    with _page(page) as browser:
        cv = browser.find_element(By.ID, "cv")
        w, h = browser.execute_script("const c = document.getElementById('cv'); return [c.width, c.height]")
        # fit on load: the bounding box centred with a 12-pixel margin
        s = min((w - 24) / (b[2] - b[0]), (h - 24) / (b[3] - b[1]))
        v0 = _view(browser)
        _near(v0["k"], s * t["scale"])
        _near(v0["ax"], 12 + (t["x0"] - b[0]) * s + ((w - 24) - (b[2] - b[0]) * s) / 2)
        _near(v0["ay"], h - 12 - (t["y0"] - b[1]) * s - ((h - 24) - (b[3] - b[1]) * s) / 2)
        # the + button: x1.25 about the canvas centre (the world point there stays there)
        browser.find_element(By.ID, "zin").click()
        v1 = _view(browser)
        cx, cy = w / 2, h / 2
        _near(v1["k"], v0["k"] * 1.25)
        _near(v1["ax"], cx - (cx - v0["ax"]) * 1.25)
        _near(v1["ay"], cy - (cy - v0["ay"]) * 1.25)
        # the wheel: 200 pixels down at a point = two presses of "-" about that point (where the
        # pointer was, as the event says: a listener of the test's own records it)
        browser.execute_script(
            "const c = document.getElementById('cv');"
            "c.addEventListener('wheel', e => { const r = c.getBoundingClientRect();"
            " window.__ev = [e.clientX - r.left, e.clientY - r.top, e.deltaY, e.deltaMode]; })")
        ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(cv, 100, -50), 0, 200).perform()
        mx, my, dy, mode = browser.execute_script("return window.__ev")
        assert (dy, mode) == (200, 0) and abs(mx - (w / 2 + 100)) <= 1 and abs(my - (h / 2 - 50)) <= 1
        v2 = _view(browser)
        f = 1.25 ** -2
        _near(v2["k"], v1["k"] * f)
        _near(v2["ax"], mx - (mx - v1["ax"]) * f)
        _near(v2["ay"], my - (my - v1["ay"]) * f)
        # 100 pixels up elsewhere: one "+" there
        ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(cv, -80, 60), 0, -100).perform()
        mx, my, dy, mode = browser.execute_script("return window.__ev")
        v3 = _view(browser)
        _near(v3["k"], v2["k"] * 1.25)
        _near(v3["ax"], mx - (mx - v2["ax"]) * 1.25)
        _near(v3["ay"], my - (my - v2["ay"]) * 1.25)
        # drag: the offset moves by exactly the pointer's travel, the scale stays
        ActionChains(browser).move_to_element_with_offset(cv, -30, 20).click_and_hold().move_by_offset(35, 0) \
            .move_by_offset(25, -40).release().perform()
        v4 = _view(browser)
        _near(v4["k"], v3["k"])
        _near(v4["ax"], v3["ax"] + 60)
        _near(v4["ay"], v3["ay"] - 40)
        assert browser.execute_script("return window.cosimView.inspect()") is None  # a drag selects nothing
        # "-" then fit: back to the fitted transform
        browser.find_element(By.ID, "zout").click()
        _near(_view(browser)["k"], v4["k"] / 1.25)
        browser.find_element(By.ID, "fit").click()
        v5 = _view(browser)
        for key in ("ax", "ay", "k"):
            _near(v5[key], v0[key])
        # keys: right/left step one slot, space plays and pauses (also with a button focused)
        browser.execute_script("window.cosimView.setSlot(10)")
        body = browser.find_element(By.TAG_NAME, "body")
        ActionChains(browser).send_keys_to_element(body, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_LEFT).perform()
        assert browser.execute_script("return window.cosimView.slot") == 11
        assert browser.find_element(By.ID, "slider").get_attribute("value") == "11"
        ActionChains(browser).send_keys(Keys.SPACE).perform()  # focus is on the fit button
        assert browser.find_element(By.ID, "play").text == "pause"
        browser.execute_script("return new Promise(r => setTimeout(r, 500))")
        ActionChains(browser).send_keys(Keys.SPACE).perform()
        assert browser.find_element(By.ID, "play").text == "play"
        assert browser.execute_script("return window.cosimView.slot") > 11
        for key in ("ax", "ay", "k"):  # keys for time leave the map alone
            _near(_view(browser)[key], v0[key])


@functools.lru_cache(maxsize=4)
def _task_tables(run_dir: str):
    return pd.read_parquet(f"{run_dir}/dvit_tasks.parquet"), pd.read_parquet(f"{run_dir}/moe_tasks.parquet")


def _expected_tasks(run_dir, vehicle: str, t: float, known: set | None = None) -> list[tuple]:
    """(layer, policy, role, device) of every task ``vehicle`` takes part in at time ``t``, from the
    task tables: DViT step k runs from t_request + upload + the steps before it (upload = latency
    minus the steps, 0 for a failed task); MoE layer l from t_request + the layers before it. The
    user (task vehicle) at any time from request to end; a helper while it holds the current step;
    an IV while it hosts the current layer. A device not among ``known`` (the page's vehicles)
    reads "(not in the page)" (the MoE table joins IV ids with "|", so an id containing "|" falls
    apart into pieces that are no vehicle)."""
    shown = (lambda n: n if known is None or n in known else "(not in the page)")  # noqa: E731
    out = []
    dv, moe = _task_tables(str(run_dir))
    for r in dv.itertuples():
        dur = np.asarray(r.step_comm_s, float) + np.asarray(r.step_comp_s, float) + np.asarray(r.step_queue_s, float)
        up = max(r.latency_s - dur.sum(), 0.0) if np.isfinite(r.latency_s) else 0.0
        starts = r.t_request_s + up + np.concatenate([[0.0], np.cumsum(dur)[:-1]])
        if not r.t_request_s <= t <= (starts[-1] + dur[-1] if len(dur) else r.t_request_s + up):
            continue
        k = np.nonzero(starts[: len(dur)] <= t)[0]
        dev = str(r.devices[k[-1]]) if len(k) else None
        role = "user" if str(r.user) == vehicle else ("helper" if dev == vehicle else None)
        if role:
            out.append(("dvit", r.policy, role, "(upload)" if dev is None else ("RSU" if dev == "@rsu" else shown(dev))))
    for r in moe.itertuples():
        dur = sum(np.asarray(c, float) for c in (r.layer_tv_s, r.layer_comm_s, r.layer_comp_s, r.layer_mem_s))
        starts = r.t_request_s + np.concatenate([[0.0], np.cumsum(dur)[:-1]])[: len(dur)]
        if not r.t_request_s <= t <= (starts[-1] + dur[-1] if len(dur) else r.t_request_s):
            continue
        ivs = [v for v in str(r.layer_ivs[np.nonzero(starts <= t)[0][-1]]).split("|") if v] if len(dur) else None
        role = "user" if str(r.tv) == vehicle else ("iv" if ivs and vehicle in ivs else None)
        if role:
            out.append(("moe", r.policy, role, "(upload)" if ivs is None else ", ".join(map(shown, ivs))))
    return sorted(out)


def _panel(browser) -> tuple[dict, list[tuple]]:
    rows = browser.execute_script(
        "const b = document.getElementById('inspect'), t = b.querySelector('table');"
        "const tasks = document.getElementById('vtasks');"
        "return [[...t.rows].map(r => [...r.cells].map(c => c.textContent)),"
        " tasks ? [...tasks.rows].slice(1).map(r => [...r.cells].map(c => c.textContent)) : []]")
    return {a: b for a, b in rows[0]}, sorted((t[0], t[1], t[2], t[4]) for t in rows[1])


def _click_a_busy_vehicle(browser, run_dir, d, cov):
    """Go to the slot and vehicle with the most task roles (a helper or IV among them if any),
    click it (:func:`_click_vehicle`); returns its name, slot index, coverage row and expected
    tasks."""
    slots, times = d["vehicles"]["slots"], d["vehicles"]["times"]
    best = None
    for i in range(10, len(slots), 6):
        rows = cov[cov["slot"] == slots[i]]
        for v in rows["vehicle"].astype(str):
            want = _expected_tasks(run_dir, v, times[i], set(d["vehicles"]["names"]))
            score = (len({w[2] for w in want}), len(want))
            if want and (best is None or score > best[0]):
                best = (score, v, i, want)
        if best and best[0][0] >= 2:
            break
    assert best is not None
    _, v, i, want = best
    return v, i, _click_vehicle(browser, d, cov, v, i), want


def _click_vehicle(browser, d, cov, v: str, i: int):
    """Go to slot index ``i``, zoom in on vehicle ``v`` until no other vehicle is within 3x the
    pick radius, click it; returns its coverage row."""
    browser.execute_script(f"window.cosimView.setSlot({i})")
    rows = cov[cov["slot"] == d["vehicles"]["slots"][i]]
    me = rows[rows["vehicle"].astype(str) == v].iloc[0]
    t = d["transform"]
    for _ in range(12):
        view = _view(browser)
        sx, sy = _screen(view, t, me["x"], me["y"])
        w, h = browser.execute_script("const c = document.getElementById('cv'); return [c.width, c.height]")
        if not (20 < sx < w - 20 and 20 < sy < h - 20):  # bring it to the centre first
            browser.execute_script(f"window.cosimView.panBy({w / 2 - sx}, {h / 2 - sy})")
            continue
        others = [_screen(view, t, x, y) for x, y, n in zip(rows["x"], rows["y"], rows["vehicle"].astype(str)) if n != v]
        if min(math.hypot(ox - sx, oy - sy) for ox, oy in others) > 24:
            break
        browser.execute_script(f"window.cosimView.zoomAt({sx}, {sy}, 2)")
    _click_canvas(browser, sx, sy)
    return me


def _click_an_rsu(browser, d, cov, i):
    """Fit the map at slot index ``i``, click a point of an RSU's disc with no vehicle within 12
    pixels; returns the index of the RSU the page must pick (the nearest centre among the discs
    holding the point, worked out by hand) and the slot's coverage rows."""
    browser.execute_script(f"window.cosimView.setSlot({i}); window.cosimView.fit()")
    view, t = _view(browser), d["transform"]
    rows = cov[cov["slot"] == d["vehicles"]["slots"][i]]
    pts = [_screen(view, t, x, y) for x, y in zip(rows["x"], rows["y"])]
    rsus = d["rsus"]
    s_px = view["k"] / t["scale"]  # pixels per metre
    target = None
    for j, r in enumerate(rsus):
        for a in np.linspace(0, 2 * np.pi, 24, endpoint=False):
            cx, cy = _screen(view, t, r["x"], r["y"])
            px_, py_ = round(cx + 0.6 * r["r"] * s_px * np.cos(a)), round(cy + 0.6 * r["r"] * s_px * np.sin(a))
            if min(math.hypot(px_ - x, py_ - y) for x, y in pts) > 12:
                target = (j, px_, py_)
                break
        if target:
            break
    j, px_, py_ = target
    inside = [(math.hypot(px_ - _screen(view, t, r["x"], r["y"])[0], py_ - _screen(view, t, r["x"], r["y"])[1]), n)
              for n, r in enumerate(rsus)
              if math.hypot(px_ - _screen(view, t, r["x"], r["y"])[0], py_ - _screen(view, t, r["x"], r["y"])[1])
              <= r["r"] * s_px]
    _click_canvas(browser, px_, py_)
    return min(inside)[1], rows


@pytest.mark.sumo
def test_panning_past_the_drawn_background_shows_the_ground_not_white(run_dir, tmp_path):
    """While a pan shows the old background shifted (the stand-in, forced here with ``bgSyncMs``
    -1), the strip it uncovers is filled with the map's ground colour, the same as the drawn
    background's own ground (seamless), not white; once the view rests and the background is
    drawn again there, still the ground; the canvas's CSS background is the ground too."""
    page = write_view(run_dir, tmp_path / "view.html")
    d = build_data(run_dir)
    g = d["colors"]["ground"]
    ground = [int(g[i:i + 2], 16) for i in (1, 3, 5)] + [255]
    assert ground != [255, 255, 255, 255]
    px = "return [...document.getElementById('cv').getContext('2d').getImageData({}, {}, 1, 1).data]"
    with _page(page) as browser:
        w, h = browser.execute_script("const c = document.getElementById('cv'); return [c.width, c.height]")
        v0 = _view(browser)
        assert browser.execute_script("return window.cosimView.bgSyncMs") == 8
        browser.execute_script("window.cosimView.bgSyncMs = -1; window.cosimView.panBy(300, 0)")
        v1 = _view(browser)
        _near(v1["ax"], v0["ax"] + 300)
        # by hand: the old picture now covers x >= 300; everything drawn (the bounds hold network,
        # discs and vehicles) starts right of x = 300 + the network's left edge at the fit
        left = _screen(v1, d["transform"], d["bounds"][0], d["bounds"][1])[0]
        assert left > 300 and v0["ax"] + (d["bounds"][0] - d["transform"]["x0"]) / d["transform"]["scale"] * v0["k"] > 0
        assert browser.execute_script(px.format(150, h // 2)) == ground  # beyond the old picture
        assert browser.execute_script(px.format(150, 5)) == ground
        assert browser.execute_script(px.format(302, 2)) == ground  # the old picture's own ground (its top-left corner)
        time.sleep(0.4)  # the view has rested: the background drawn again for the new transform
        assert browser.execute_script(px.format(150, h // 2)) == ground
        browser.execute_script("window.cosimView.bgSyncMs = 8")
        css = browser.execute_script("return getComputedStyle(document.getElementById('cv')).backgroundColor")
        assert css == "rgb({}, {}, {})".format(*ground[:3])


@pytest.mark.sumo
def test_clicking_a_vehicle_shows_what_coverage_and_the_task_tables_say(run_dir, tmp_path):
    page = write_view(run_dir, tmp_path / "view.html")
    d = build_data(run_dir)
    cov = pd.read_parquet(run_dir / "coverage.parquet")
    with _page(page) as browser:
        v, i, me, want = _click_a_busy_vehicle(browser, run_dir, d, cov)
        info, tasks = _panel(browser)
        assert info["vehicle"] == v
        speed = float(info["speed"].split()[0])
        assert abs(speed - me["speed_mps"]) <= 0.125 + 0.005  # the page's 0.25 m/s quantum, shown to 0.01
        assert info["cell"] == str(int(me["cell"]))
        assert info["serving RSU"] == (str(me["rsu"]) if isinstance(me["rsu"], str) else "not covered")
        _check_dwell_text(info["dwell"], me, _realised(run_dir, cov).loc[(me["vehicle"], me["slot"])], d)
        assert tasks == want and len(want) >= 2
        assert len({w[2] for w in want}) >= 2  # a role beside "user" was checked too
        # the selection follows the vehicle through time: the next slot, its new tasks
        browser.execute_script(f"window.cosimView.setSlot({i + 1})")
        nxt = _expected_tasks(run_dir, v, d["vehicles"]["times"][i + 1])
        assert _panel(browser)[1] == nxt
        browser.execute_script(f"window.cosimView.setSlot({i})")
        # an RSU: a point of its disc with no vehicle near it; the panel counts its vehicles
        j, rows = _click_an_rsu(browser, d, cov, i)
        rsus = d["rsus"]
        info, _ = _panel(browser)
        assert info["RSU"] == rsus[j]["id"]
        assert info["vehicles served"] == str(int((rows["rsu"].astype(object) == rsus[j]["id"]).sum()))
        assert browser.execute_script("return window.cosimView.inspect().kind") == "rsu"
        # the empty corner clears the selection
        _click_canvas(browser, 3, 3)
        assert browser.execute_script("return window.cosimView.inspect()") is None


def _realised(run_dir, cov: pd.DataFrame) -> pd.DataFrame:
    """cosim.analysis.realised_dwell of the coverage table: (realised [s] or NaN, left the
    simulation) per (vehicle, slot)."""
    from cosim.analysis import realised_dwell

    slot_s = json.loads((run_dir / "summary.json").read_text())["slot_s"]
    veh = cov["vehicle"].astype("category").cat.codes.to_numpy().astype(np.int64)
    rsu = cov["rsu"].astype("category").cat.codes.to_numpy().astype(np.int64)  # -1: none
    real, arrived = realised_dwell(veh, cov["slot"].to_numpy(), cov["time_s"].to_numpy(), rsu, slot_s)
    return pd.DataFrame({"realised": real, "arrived": arrived},
                        index=pd.MultiIndex.from_arrays([cov["vehicle"].astype(str), cov["slot"]]))


def _check_dwell_text(text: str, me, want, d) -> None:
    """The panel's dwell line ("predicted P s · realised R s (+D s)", or "...realised: censored")
    against coverage's dwell_s (within half the page's quantum) and the realised dwell."""
    import re

    if not isinstance(me["rsu"], str):
        assert text == "not served"
        return
    m = re.fullmatch(r"predicted ([\d.]+) s · realised(?:: (censored)| ([\d.]+) s \(([+−])([\d.]+) s\))", text)
    assert m, text
    pred = float(m[1])
    assert abs(pred - me["dwell_s"]) <= d["vehicles"]["dwell_q"] / 2 + 0.05 + 1e-9  # the quantum, shown to 0.1 s
    if np.isnan(want["realised"]):
        assert m[2] == "censored"
    else:
        assert abs(float(m[3]) - want["realised"]) <= 0.05 + 1e-9
        diff = float(m[5]) * (1 if m[4] == "+" else -1)
        assert abs(diff - (pred - float(m[3]))) <= 0.1 + 1e-9


def _leaving_copy(run_dir, dest) -> dict:
    """``run_dir`` copied with its coverage rewritten so that every kind of row a realised dwell has
    occurs in 60 s of grid6: four vehicles leave the simulation (their rows after slot 20, 27, 34,
    41 dropped), one is off the map for slots 30-32 and back after (a gap, as a teleport makes;
    one served by the same RSU at slots 29 and 33, so that its run of rows goes on over the gap),
    one is not served in slots 40-44 (no RSU, no prediction). Returns {"gap": vehicle}."""
    shutil.copytree(run_dir, dest)
    df = pd.read_parquet(dest / "coverage.parquet")
    names = sorted(df["vehicle"].astype(str).unique())
    vname, slot = df["vehicle"].astype(str), df["slot"]
    drop = np.zeros(len(df), dtype=bool)
    for k, n in enumerate(names[:4]):
        drop |= (vname == n).to_numpy() & (slot > 20 + 7 * k).to_numpy()
    at = df.set_index(["slot", vname])["rsu"].astype(object)
    gap = next(n for n in names[4:] if (29, n) in at.index and (33, n) in at.index
               and isinstance(at[(29, n)], str) and at[(29, n)] == at[(33, n)])
    unserved = next(n for n in names[4:] if n != gap)
    drop |= (vname == gap).to_numpy() & slot.between(30, 32).to_numpy()
    off = (vname == unserved).to_numpy() & slot.between(40, 44).to_numpy()
    df["rsu"] = df["rsu"].astype(object).where(~off, None)
    df.loc[off, "dwell_s"] = np.nan
    shutil.rmtree(dest / "coverage.parquet")
    df[~drop].reset_index(drop=True).to_parquet(dest / "coverage.parquet")
    return {"gap": gap}


@pytest.mark.sumo
def test_the_vehicle_panel_shows_predicted_and_realised_dwell_as_the_tables_say(run_dir, tmp_path):
    """Predicted dwell: coverage.parquet's dwell_s within the page's quantum; realised: what
    cosim.analysis.realised_dwell gives on the same table (worked out here, in Python), computed by
    the page from its decoded rows — for rows handed over, rows of vehicles that left, censored
    rows and unserved rows, across the page's time windows and over a vehicle's gap; "≈" on a page
    that keeps every 2nd slot."""
    src, run_dir = run_dir, tmp_path / "run"
    gap = _leaving_copy(src, run_dir)["gap"]
    page = write_view(run_dir, tmp_path / "view.html", window_s=20)
    d = build_data(run_dir, window_s=20)
    v = d["vehicles"]
    cov = pd.read_parquet(run_dir / "coverage.parquet")
    real = _realised(run_dir, cov)
    cov = cov.assign(realised=real["realised"].to_numpy(), arrived=real["arrived"].to_numpy())
    served = cov["rsu"].notna()
    kinds = {"handed over": served & cov["realised"].notna() & ~cov["arrived"],
             "left": served & cov["arrived"], "censored": served & cov["realised"].isna(), "not served": ~served}
    picks = {k: cov[m].sample(min(8, int(m.sum())), random_state=7) for k, m in kinds.items()}
    assert all(len(p) for p in picks.values())  # every kind occurs
    g = cov[(cov["vehicle"].astype(str) == gap) & cov["slot"].between(24, 29) & served]  # the run goes on over the gap
    assert len(g) == 6
    picks["gap"] = g
    with _page(page) as browser:
        for kind, rows in picks.items():
            for _, me in rows.iterrows():
                i = v["slots"].index(int(me["slot"]))
                x = browser.execute_script(f"return window.cosimView.vehicleInfo({json.dumps(str(me['vehicle']))}, {i})")
                if kind == "not served":
                    assert x["predicted"] is None and x["realised"] is None and x["dwellEnd"] == "not served"
                    continue
                assert abs(x["predicted"] - me["dwell_s"]) <= v["dwell_q"] / 2 + 1e-9
                if kind == "gap":
                    kind = "censored" if np.isnan(me["realised"]) else ("left" if me["arrived"] else "handed over")
                assert x["dwellEnd"] == kind
                if kind == "censored":
                    assert x["realised"] is None
                else:
                    assert x["realised"] == pytest.approx(me["realised"], abs=1e-6)
                text = browser.execute_script(f"return window.cosimView.dwellText({json.dumps(str(me['vehicle']))}, {i})")
                _check_dwell_text(text, me, me, d)
        half = len(cov) // 2 + 1  # every 2nd slot kept: the realised dwell is approximate, and says so
        coarse = write_view(run_dir, tmp_path / "coarse.html", max_rows=half)
        kept = build_data(run_dir, max_rows=half)["vehicles"]["slots"]
        assert kept == v["slots"][::2]
        browser.get(coarse.as_uri())
        me = picks["handed over"][picks["handed over"]["slot"].isin(kept)].iloc[0]
        text = browser.execute_script(f"return window.cosimView.dwellText({json.dumps(str(me['vehicle']))}, "
                                      f"{kept.index(int(me['slot']))})")
        assert "· realised ≈ " in text


def _differ(df, a: str, b: str) -> dict[int, bool]:
    """Task id -> success under ``a``, for the tasks whose success differs between policies ``a``
    and ``b`` (both given the task, neither censored), from the task table."""
    df = df[df["outcome"] != "censored"]
    p = df.pivot(index="task", columns="policy", values="success").dropna()
    p = p[p[a] != p[b]]
    return {int(t): bool(s) for t, s in p[a].items()}


@pytest.mark.sumo
def test_ab_view_highlights_exactly_the_tasks_whose_success_differs(run_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    page = write_view(run_dir, tmp_path / "view.html")
    d = build_data(run_dir)
    cov = pd.read_parquet(run_dir / "coverage.parquet")
    dv, moe = _task_tables(str(run_dir))
    with _page(page) as browser:
        assert browser.execute_script("return window.cosimView.abDiffer()") is None  # no B chosen
        Select(browser.find_element(By.ID, "layer")).select_by_visible_text("dvit")
        Select(browser.find_element(By.ID, "policy")).select_by_visible_text("vidi")
        Select(browser.find_element(By.ID, "versus")).select_by_visible_text("mddi")
        want = _differ(dv, "vidi", "mddi")
        got = {int(k): v for k, v in browser.execute_script("return window.cosimView.abDiffer()").items()}
        assert got == want and len(want) >= 1
        note = browser.find_element(By.ID, "ab").text
        assert note.startswith(f"{len(want)} tasks differ in success: {sum(want.values())} only vidi completed")
        # on the map, at each slot: the differing vidi tasks that are shown (running, or failed
        # within 3 s) and whose user is on the map
        sub = dv[dv["policy"] == "vidi"].set_index("task")
        slots, times = d["vehicles"]["slots"], d["vehicles"]["times"]
        seen = set()
        for i in range(len(slots)):
            browser.execute_script(f"window.cosimView.setSlot({i})")
            on_map = set(cov.loc[cov["slot"] == slots[i], "vehicle"].astype(str))
            exp = set()
            for tid in want:
                r = sub.loc[tid]
                dur = (np.asarray(r["step_comm_s"], float) + np.asarray(r["step_comp_s"], float)
                       + np.asarray(r["step_queue_s"], float))
                end = r["t_request_s"] + (r["latency_s"] if np.isfinite(r["latency_s"]) else dur.sum())
                hold = 0.0 if r["success"] else 3.0
                if r["t_request_s"] <= times[i] <= end + hold and str(r["user"]) in on_map:
                    exp.add(tid)
            assert set(browser.execute_script("return window.cosimView.state.ab")) == exp, i
            seen |= exp
        assert seen  # some slot showed a highlight
        # swap: A and B change places, the same tasks with the other side's success
        browser.find_element(By.ID, "swap").click()
        assert Select(browser.find_element(By.ID, "policy")).first_selected_option.text == "mddi"
        got = {int(k): v for k, v in browser.execute_script("return window.cosimView.abDiffer()").items()}
        assert got == _differ(dv, "mddi", "vidi") == {k: not v for k, v in want.items()}
        # the MoE layer pairs its own tasks the same way
        Select(browser.find_element(By.ID, "layer")).select_by_visible_text("moe")
        Select(browser.find_element(By.ID, "versus")).select_by_visible_text("nearest")
        got = {int(k): v for k, v in browser.execute_script("return window.cosimView.abDiffer()").items()}
        assert got == _differ(moe, "gecpa", "nearest")


# -- a task's path, the RSU chart, filters, the failure strip ------------------------------------
def _steps(layer: str, r) -> tuple[list, list, float]:
    """A task row's work by hand: [(device(s), start [s])] of its runs of consecutive steps on
    the same device(s), and its end — DViT step k from t_request + upload + the steps before it
    (upload = latency minus the steps, 0 for a failed task); MoE layer l from t_request + the
    layers before it. Devices as the page names them ("RSU" for the RSU; MoE: a list of IVs)."""
    if layer == "dvit":
        dur = np.asarray(r.step_comm_s, float) + np.asarray(r.step_comp_s, float) + np.asarray(r.step_queue_s, float)
        up = max(r.latency_s - dur.sum(), 0.0) if np.isfinite(r.latency_s) else 0.0
        devs = ["RSU" if str(x) == "@rsu" else str(x) for x in r.devices]
    else:
        dur = sum(np.asarray(c, float) for c in (r.layer_tv_s, r.layer_comm_s, r.layer_comp_s, r.layer_mem_s))
        up = 0.0
        devs = [[v for v in str(x).split("|") if v] for x in r.layer_ivs]
    starts = r.t_request_s + up + np.concatenate([[0.0], np.cumsum(dur)[:-1]])
    runs = []
    for dv_, st in zip(devs, starts):
        if not runs or runs[-1][0] != dv_:
            runs.append((dv_, float(st)))
    return [x[0] for x in runs], [x[1] for x in runs], float(r.t_request_s + up + dur.sum())


def _slot_at(times, t) -> int:
    """The page's slot for time t: the last slot at or before it (the first when before all)."""
    return max(0, int(np.searchsorted(np.asarray(times), t + 1e-9, side="right")) - 1)


def _check_path(path, layer, row, d, cov):
    """The page's path of a task (window.cosimView.state.path) against the task table row and
    coverage.parquet: request, one point per run of steps on the same device(s), end; each
    device where coverage.parquet has it at the slot of that time (within the quantisation)."""
    devs, starts, end = _steps(layer, row)
    pts = path["pts"]
    user = str(row.user if layer == "dvit" else row.tv)
    names = set(d["vehicles"]["names"]) | {"RSU"}
    shown = (lambda n: n if n in names else "(not in the page)")  # noqa: E731
    assert [p["what"] for p in pts] == ["request"] + ["device" if layer == "dvit" else "group"] * len(devs) + ["end"]
    assert [p["device"] for p in pts] == [shown(user)] + [shown(x) if isinstance(x, str) else ", ".join(map(shown, x))
                                                         for x in devs] + [shown(user)]
    assert path["user"] == shown(user) and path["t0"] == pytest.approx(row.t_request_s, abs=1e-4)
    assert [p["t"] for p in pts[1:-1]] == pytest.approx(starts, abs=2e-4)
    assert path["end"] == pytest.approx(end, abs=2e-4)
    assert path["outcome"] == row.outcome and path["why"] == (row.failure or "")
    slots, times, t = d["vehicles"]["slots"], d["vehicles"]["times"], d["transform"]
    for p, who, when in zip(pts, [[user]] + [[x] if isinstance(x, str) else x for x in devs] + [[user]],
                            [row.t_request_s, *starts, end]):
        i = _slot_at(times, when)
        assert p["slot"] == slots[i]
        at = cov[cov["slot"] == slots[i]].set_index(cov.loc[cov["slot"] == slots[i], "vehicle"].astype(str))
        xy = []
        for w in who:
            if w == "RSU":
                rs = d["rsus"][int(row.rsu)]
                xy.append((rs["x"], rs["y"]))
            elif w in at.index:
                xy.append((at.loc[w, "x"], at.loc[w, "y"]))
        if not xy:
            assert p["xy"] is None
            continue
        want = np.mean(np.array(xy, float), axis=0)
        assert np.abs(np.array(p["xy"]) - want).max() <= t["scale"] / 2 + 1e-6


@pytest.mark.sumo
def test_clicking_a_task_draws_its_path_as_the_task_table_and_coverage_say(run_dir, tmp_path):
    page = write_view(run_dir, tmp_path / "view.html")
    d = build_data(run_dir)
    cov = pd.read_parquet(run_dir / "coverage.parquet")
    dv, moe = _task_tables(str(run_dir))
    with _page(page) as browser:
        v, i, me, want = _click_a_busy_vehicle(browser, run_dir, d, cov)
        # click the vehicle panel's first DViT row where it is not the user (a helper), else the first
        rows = browser.execute_script(
            "return [...document.querySelectorAll('#vtasks tr')].slice(1).map(r => [...r.cells].map(c => c.textContent))")
        pick = next((n for n, r in enumerate(rows) if r[0] == "dvit" and r[2] == "helper"),
                    next(n for n, r in enumerate(rows) if r[0] == "dvit"))
        browser.find_elements("css selector", "#vtasks tr")[pick + 1].click()
        path = browser.execute_script("return window.cosimView.state.path")
        assert path["layer"] == "dvit" and path["policy"] == rows[pick][1]
        row = next(dv[(dv["policy"] == path["policy"]) & (dv["task"] == path["id"])].itertuples())
        assert v in (str(row.user), *map(str, row.devices))
        _check_path(path, "dvit", row, d, cov)
        # the panel says it as text: id, outcome and one row per point
        box = browser.execute_script(
            "return [...document.querySelectorAll('#taskpath tr')].slice(1).map(r => [...r.cells].map(c => c.textContent))")
        assert [b[2] for b in box] == [p["device"] for p in path["pts"]]
        assert [b[4] for b in box] == [str(p["slot"]) for p in path["pts"]]
        # drawn: the last point of the path is a white dot at its screen position (in view)
        last = [p for p in path["pts"] if p["xy"]][-1]
        sx, sy = _screen(_view(browser), d["transform"], *last["xy"])
        px_ = browser.execute_script(
            f"return [...document.getElementById('cv').getContext('2d').getImageData({round(sx)}, {round(sy)}, 1, 1).data]")
        assert px_[:3] == [255, 255, 255]
        # a row of the path jumps the slider to its slot
        browser.find_elements("css selector", "#taskpath tr")[len(box)].click()
        assert browser.execute_script("return window.cosimView.state.slot") == path["pts"][-1]["slot"]
        # every task of both layers, each policy: the page's path equals the tables
        for layer, df in (("dvit", dv), ("moe", moe)):
            for policy, g in df.groupby("policy"):
                listed = browser.execute_script(f"return window.cosimView.taskIds({json.dumps(layer)}, {json.dumps(policy)})")
                assert sorted(listed) == sorted(g["task"].tolist())
                by_id = {int(r.task): r for r in g.itertuples()}
                for n, tid in enumerate(listed):
                    browser.execute_script(f"window.cosimView.selectTask({json.dumps(layer)}, {json.dumps(policy)}, {n})")
                    _check_path(browser.execute_script("return window.cosimView.state.path"), layer, by_id[tid], d, cov)
        browser.find_element("xpath", "//button[text()='clear task']").click()
        assert browser.execute_script("return window.cosimView.state.path") is None
        # Escape clears a path and the selection
        browser.execute_script("window.cosimView.selectTask('dvit', 'vidi', 0)")
        assert browser.execute_script("return window.cosimView.inspect()") is not None
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        ActionChains(browser).send_keys(Keys.ESCAPE).perform()
        assert browser.execute_script("return [window.cosimView.state.path, window.cosimView.inspect()]") == [None, None]


def _path_at(layer: str, row, d, cov, decoded: int) -> list:
    """What the task box's "at" column must say for each point of a task's path with the first
    ``decoded`` slots decoded, worked out from the task table and coverage.parquet: a point whose
    slot is not decoded yet and which has a vehicle of the page -> "not loaded yet"; else the mean
    position of its devices there ([x, y]; the RSU's from summary.json), or "not on the map"."""
    devs, starts, end = _steps(layer, row)
    user = str(row.user if layer == "dvit" else row.tv)
    slots, times, names = d["vehicles"]["slots"], d["vehicles"]["times"], set(d["vehicles"]["names"])
    out = []
    for who, when in zip([[user]] + [[x] if isinstance(x, str) else x for x in devs] + [[user]],
                         [row.t_request_s, *starts, end]):
        i = _slot_at(times, when)
        if i >= decoded and any(w in names for w in who):
            out.append("not loaded yet")
            continue
        at = cov[cov["slot"] == slots[i]].set_index(cov.loc[cov["slot"] == slots[i], "vehicle"].astype(str))
        xy = [(d["rsus"][int(row.rsu)]["x"], d["rsus"][int(row.rsu)]["y"]) if w == "RSU" else
              (at.loc[w, "x"], at.loc[w, "y"]) for w in who if w == "RSU" or w in at.index]
        out.append(np.mean(np.array(xy, float), axis=0).tolist() if xy else "not on the map")
    return out


def _check_path_text(browser, want: list, scale: float) -> None:
    """The task box's rows against :func:`_path_at` (positions shown to 0.1 m), and the pending
    note's count; the page's path has no position where the text has none."""
    got = browser.execute_script(
        "return [...document.querySelectorAll('#taskpath tr')].slice(1).map(r => r.cells[5].textContent)")
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w, str):
            assert g == w
        else:
            assert np.abs(np.array([float(x) for x in g.split(", ")]) - w).max() <= scale / 2 + 0.05 + 1e-9, (g, w)
    pts = browser.execute_script("return window.cosimView.state.path.pts")
    assert [p["loaded"] for p in pts] == [w != "not loaded yet" for w in want]
    assert [p["xy"] is None for p in pts] == [isinstance(w, str) for w in want]
    note = browser.execute_script("const n = document.getElementById('taskpending'); return n && n.textContent")
    pending = sum(w == "not loaded yet" for w in want)
    assert note == (f"{pending} point(s) not loaded yet: their time windows are still loading" if pending else None)


@pytest.mark.sumo
def test_a_path_or_vehicle_selected_while_windows_load_tells_not_loaded_from_not_on_the_map(run_dir, tmp_path):
    """Loading held after the first of three time windows (requestIdleCallback held, HOLD_IDLE):
    a task path selected then says "not loaded yet" for its points in the windows still to come and
    "not on the map" for a vehicle that coverage lacks at a decoded slot (a copy of the run with
    that row dropped); when the next window arrives the box fills in by itself, as the tables say.
    A vehicle selected then says its realised dwell is not known yet and, when the window with its
    handover arrives, says it as realised_dwell does; one whose dwell runs to the end says
    "censored" once every window is in."""
    from selenium.webdriver.support.ui import WebDriverWait

    src, run_dir = run_dir, tmp_path / "run"
    shutil.copytree(src, run_dir)
    d = build_data(run_dir, window_s=20)
    assert [(w["s0"], w["s1"]) for w in d["vehicles"]["windows"]] == [(0, 20), (20, 40), (40, len(d["vehicles"]["slots"]))]
    slots, times, scale = d["vehicles"]["slots"], d["vehicles"]["times"], d["transform"]["scale"]
    dv = pd.read_parquet(run_dir / "dvit_tasks.parquet")

    def crossing(b):  # the DViT tasks with path points on both sides of slot index b: policy, task
        out = []
        for r in dv.itertuples():
            devs, starts, end = _steps("dvit", r)
            i = [_slot_at(times, t) for t in (r.t_request_s, *starts, end)]
            if min(i) < b <= max(i):
                out.append((r.policy, int(r.task)))
        return out

    a, b = crossing(20)[0], crossing(40)[0]
    row_a = next(dv[(dv["policy"] == a[0]) & (dv["task"] == a[1])].itertuples())
    # task A's user is off the map at its request's slot: that point must say "not on the map"
    cov = pd.read_parquet(run_dir / "coverage.parquet")
    drop = (cov["vehicle"].astype(str) == str(row_a.user)) & (cov["slot"] == slots[_slot_at(times, row_a.t_request_s)])
    assert drop.sum() == 1
    cov = cov[~drop].reset_index(drop=True)
    shutil.rmtree(run_dir / "coverage.parquet")
    cov.to_parquet(run_dir / "coverage.parquet")
    page = write_view(run_dir, tmp_path / "view.html", window_s=20)
    d = build_data(run_dir, window_s=20)
    real = _realised(run_dir, cov)
    cov = cov.assign(realised=real["realised"].to_numpy(), arrived=real["arrived"].to_numpy())
    half = d["slot_s"] / 2
    served = cov["rsu"].notna() & cov["realised"].notna() & ~cov["arrived"]  # handed over, at the row's time + dwell + half
    ends = cov["time_s"] + cov["realised"] + half
    veh_a = cov[served & (cov["slot"] < slots[20]) & (ends >= times[20] - 1e-9) & (ends < times[40] - 1e-9)].iloc[0]
    veh_b = cov[cov["rsu"].notna() & cov["realised"].isna() & cov["slot"].between(slots[25], slots[39])].iloc[0]

    def ids(browser, policy):
        return browser.execute_script(f"return window.cosimView.taskIds('dvit', {json.dumps(policy)})")

    def dwell(browser):
        return browser.execute_script(
            "return [...document.querySelectorAll('#inspect table tr')].find(r => r.cells[0].textContent === 'dwell')"
            ".cells[1].textContent")

    with _page(page, held=True) as browser:
        state = browser.execute_script("return window.cosimView.state")
        assert state["windows"] == 1 and not state["loaded"] and browser.execute_script("return window.cosimView.nSlots") == 20
        browser.execute_script(f"window.cosimView.selectTask('dvit', {json.dumps(a[0])}, {ids(browser, a[0]).index(a[1])})")
        want = _path_at("dvit", row_a, d, cov, 20)
        assert want[0] == "not on the map" and "not loaded yet" in want and any(not isinstance(w, str) for w in want)
        _check_path_text(browser, want, scale)
        i_a = slots.index(int(veh_a["slot"]))
        _click_vehicle(browser, d, cov, str(veh_a["vehicle"]), i_a)
        assert dwell(browser).endswith(" · realised: not known yet (loading)")
        # the second window: the path and the panel fill in, nothing selected again
        browser.execute_script("window.__held.shift()()")
        WebDriverWait(browser, 60).until(lambda br: br.execute_script(
            "return window.cosimView.state.windows === 2 && window.__held.length === 1"))
        assert browser.execute_script("return window.cosimView.slot") == i_a
        _check_path_text(browser, _path_at("dvit", row_a, d, cov, 40), scale)
        _check_path(browser.execute_script("return window.cosimView.state.path"), "dvit", row_a, d, cov)
        _check_dwell_text(dwell(browser), veh_a, veh_a, d)
        # a task into the third window, and a vehicle whose dwell runs to the end, selected now
        row_b = next(dv[(dv["policy"] == b[0]) & (dv["task"] == b[1])].itertuples())
        browser.execute_script(f"window.cosimView.selectTask('dvit', {json.dumps(b[0])}, {ids(browser, b[0]).index(b[1])})")
        want = _path_at("dvit", row_b, d, cov, 40)
        assert "not loaded yet" in want
        _check_path_text(browser, want, scale)
        _click_vehicle(browser, d, cov, str(veh_b["vehicle"]), slots.index(int(veh_b["slot"])))
        assert dwell(browser).endswith(" · realised: not known yet (loading)")
        browser.execute_script("window.__held.shift()()")
        WebDriverWait(browser, 60).until(lambda br: br.execute_script("return window.cosimView.state.loaded"))
        _check_path_text(browser, _path_at("dvit", row_b, d, cov, len(slots)), scale)
        _check_path(browser.execute_script("return window.cosimView.state.path"), "dvit", row_b, d, cov)
        _check_dwell_text(dwell(browser), veh_b, veh_b, d)
        assert dwell(browser).endswith(" · realised: censored")


@pytest.mark.sumo
def test_clicking_an_rsu_charts_its_load_and_handovers_as_rsus_parquet_says(run_dir, tmp_path):
    page = write_view(run_dir, tmp_path / "view.html")
    d = build_data(run_dir)
    cov = pd.read_parquet(run_dir / "coverage.parquet")
    rs = pd.read_parquet(run_dir / "rsus.parquet")
    with _page(page) as browser:
        j, _ = _click_an_rsu(browser, d, cov, 30)
        rid = d["rsus"][j]["id"]
        chart = browser.execute_script("return window.cosimView.state.rsuChart")
        assert chart["rsu"] == rid
        # bins of max(slot, run / 120) seconds; load = mean of `connected` over a bin's slots
        t_end = rs["time_s"].max()
        width = max(d["slot_s"], t_end / 120)
        assert chart["width"] == pytest.approx(width)
        mine = rs[rs["rsu"].astype(str) == rid].assign(b=lambda x: np.floor(x["time_s"] / width).astype(int))
        n = int(np.floor(t_end / width)) + 1
        load = mine.groupby("b")["connected"].mean().reindex(range(n))
        assert [None if np.isnan(x) else round(x, 2) for x in load] == chart["load"]
        hin = mine.groupby("b")["handover_in"].sum().reindex(range(n), fill_value=0).tolist()
        hout = mine.groupby("b")["handover_out"].sum().reindex(range(n), fill_value=0).tolist()
        assert chart["hin"] == hin and chart["hout"] == hout
        assert sum(hin) > 0 and sum(hout) > 0
        info, _ = _panel(browser)
        assert info["handovers in / out (run)"] == f"{mine['handover_in'].sum()} / {mine['handover_out'].sum()}"
        # drawn: handovers in rising from the plot's middle, out hanging from it, on one right axis
        # whose half is the larger bin of either; each series named in the legend in its colour
        legend = browser.execute_script(
            "return [...document.querySelectorAll('#rsulegend [data-series]')].map(s => [s.dataset.series,"
            " s.textContent.trim(), getComputedStyle(s.querySelector('.sw')).backgroundColor])")
        assert [x[0] for x in legend] == ["load", "hin", "hout"]
        labels = {key: label for key, label, _ in legend}
        assert labels["hin"].startswith("handovers in") and labels["hout"].startswith("handovers out")
        drawn = {s["label"]: s for s in chart["drawn"]}
        assert sorted(drawn) == sorted(labels.values())  # every series drawn is in the legend, and only those
        for _, label, css in legend:  # the swatch's colour is the series' colour
            assert css == "rgb({}, {}, {})".format(*(int(drawn[label]["color"][k:k + 2], 16) for k in (1, 3, 5)))
        assert drawn[labels["load"]]["color"] == "#%02x%02x%02x" % rsu_color(j)
        assert drawn[labels["load"]]["y"] == chart["load"]
        s_in, s_out = drawn[labels["hin"]], drawn[labels["hout"]]
        assert s_out["y"] == hout and s_in["y"] == hin and s_out["color"] != s_in["color"]
        hmax = max(1, max(hin), max(hout))
        x0, x1, y0, y1, xmax = (chart[k] for k in ("x0", "x1", "y0", "y1", "xmax"))
        assert xmax == pytest.approx(n * width)
        X = lambda t: math.floor(x0 + (x1 - x0) * t / xmax + 0.5)  # noqa: E731 - whole pixels (Math.round)
        mid = (y0 + y1) / 2
        w, h, px = browser.execute_script("const c = document.getElementById('rsuchart');"
                                          " return [c.width, c.height, [...c.getContext('2d').getImageData(0, 0, c.width, c.height).data]]")
        img = np.array(px, dtype=np.int64).reshape(h, w, 4)
        for series, values, down in ((s_in, hin, False), (s_out, hout, True)):
            want = []
            for b, v in enumerate(values):
                a, e = X(b * width), X((b + 1) * width)
                size = (mid - y0) * v / hmax
                if v:
                    want.append([b, a, pytest.approx(mid if down else mid - size), max(1, e - a - (e - a >= 3)),
                                 pytest.approx(size)])
            assert series["rects"] == want
            rgb = [int(series["color"][k:k + 2], 16) for k in (1, 3, 5)]
            mine = (img[:, :, :3] == rgb).all(axis=2) & (img[:, :, 3] == 255)
            assert mine.sum() > 0
            for b, v in enumerate(values):  # its colour in the bin's column exactly where it has a bar, on its side
                a, e = X(b * width), X((b + 1) * width)
                col = mine[:, a:max(e, a + 1)]
                assert col.any() == bool(v), (b, v)
                if v:  # as long as the value (its far end may be blended, the 2-pixel load line may cross it)
                    rows = np.nonzero(col.any(axis=1))[0]
                    far = rows.max() + 1 if down else rows.min()
                    assert (rows.min() >= mid - 1 if down else rows.max() <= mid + 1), (b, v, rows)
                    assert abs(far - (mid + (mid - y0) * v / hmax if down else mid - (mid - y0) * v / hmax)) <= 3.5, (b, v, rows)
        # the chart is in the panel and drawn in the RSU's colour
        col = rsu_color(j)
        n_px = browser.execute_script(
            "const c = document.querySelector('#inspect #rsuchart'),"
            " a = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            f"let n = 0; for (let i = 0; i < a.length; i += 4) if (Math.abs(a[i] - {col[0]}) + Math.abs(a[i + 1] - {col[1]})"
            f" + Math.abs(a[i + 2] - {col[2]}) <= 6 && a[i + 3] === 255) n++; return n")
        assert n_px > 20


def _ends(run_dir) -> pd.DataFrame:
    """Every task of both task tables: layer, policy, task, outcome, failure, user, request, end
    (the end by hand, :func:`_steps`)."""
    dv, moe = _task_tables(str(run_dir))
    out = []
    for layer, df, who in (("dvit", dv, "user"), ("moe", moe, "tv")):
        for r in df.itertuples():
            out.append((layer, r.policy, int(r.task), r.outcome, r.failure, str(getattr(r, who)), r.t_request_s,
                        _steps(layer, r)[2]))
    return pd.DataFrame(out, columns=["layer", "policy", "task", "outcome", "failure", "user", "t0", "end"])


def _filter(browser, name: str, value: str, on: bool):
    box = browser.find_element("css selector", f"#filters input[data-filter='{name}'][data-value='{value}']")
    if box.is_selected() != on:
        box.click()


@pytest.mark.sumo
def test_the_failure_strip_counts_the_failures_and_jumps_to_the_one_clicked(run_dir, tmp_path):
    page = write_view(run_dir, tmp_path / "view.html")
    d = build_data(run_dir)
    ends = _ends(run_dir)
    with _page(page) as browser:
        times = d["vehicles"]["times"]
        width = max(d["slot_s"], times[-1] / 120)
        n = int(np.floor(times[-1] / width)) + 1

        def want(keep):
            f = ends[(ends["outcome"] == "failed") & keep]
            return np.bincount(np.minimum(np.floor(f["end"] / width).astype(int), n - 1), minlength=n).tolist()

        f = browser.execute_script("return window.cosimView.failures()")
        assert f["width"] == pytest.approx(width) and f["counts"] == want(ends["layer"] != "")
        assert sum(f["counts"]) == (ends["outcome"] == "failed").sum() >= 3
        # a real click on the strip, mid-bin of the busiest bin: the slider goes to the first slot
        # at or after the bin's first failure, the list names the bin's failures
        b = int(np.argmax(f["counts"]))
        x0, x1 = browser.execute_script("const s = window.cosimView.state.failStrip; return [s.x0, s.x1]")
        fcv = browser.find_element("id", "fails")
        cw, css = browser.execute_script(
            "const c = document.getElementById('fails'); return [c.width, c.getBoundingClientRect().width]")
        from selenium.webdriver.common.action_chains import ActionChains

        # canvas pixels -> CSS pixels from the element's centre (the panel may shrink the canvas)
        ActionChains(browser).move_to_element_with_offset(
            fcv, round((x0 + (b + 0.5) * (x1 - x0) / n - cw / 2) * css / cw), 0).click().perform()
        inbin = ends[(ends["outcome"] == "failed") & (np.minimum(np.floor(ends["end"] / width), n - 1) == b)]
        first = inbin["end"].min()
        i = next(j for j, t in enumerate(times) if t >= first - 1e-9)
        assert browser.execute_script("return window.cosimView.slot") == i
        listed = browser.execute_script("return window.cosimView.state.failList")
        assert sorted(map(tuple, listed)) == sorted(zip(inbin["layer"], inbin["policy"], inbin["task"]))
        # clicking the first listed failure shows its path and reason
        browser.find_elements("css selector", "#faillist tr")[0].click()
        path = browser.execute_script("return window.cosimView.state.path")
        hit = inbin[(inbin["layer"] == path["layer"]) & (inbin["policy"] == path["policy"]) & (inbin["task"] == path["id"])]
        assert len(hit) == 1 and path["outcome"] == "failed" and path["why"] == hit["failure"].iloc[0]
        assert "failed: " + hit["failure"].iloc[0] in browser.find_element("id", "task").text
        # filters change the strip: a policy, then a layer off
        _filter(browser, "policy", "mddi", False)
        assert browser.execute_script("return window.cosimView.failures()")["counts"] == want(ends["policy"] != "mddi")
        _filter(browser, "layer", "dvit", False)
        assert browser.execute_script("return window.cosimView.failures()")["counts"] == \
            want((ends["policy"] != "mddi") & (ends["layer"] != "dvit"))
        _filter(browser, "outcome", "failed", False)
        assert sum(browser.execute_script("return window.cosimView.failures()")["counts"]) == 0


@pytest.mark.sumo
def test_filters_hide_exactly_the_tasks_the_tables_say(run_dir, tmp_path):
    from selenium.webdriver.support.ui import Select

    page = write_view(run_dir, tmp_path / "view.html")
    d = build_data(run_dir)
    cov = pd.read_parquet(run_dir / "coverage.parquet")
    ends = _ends(run_dir)
    with _page(page) as browser:
        Select(browser.find_element("id", "layer")).select_by_visible_text("dvit")
        Select(browser.find_element("id", "policy")).select_by_visible_text("vidi")
        slots, times = d["vehicles"]["slots"], d["vehicles"]["times"]

        def drawn(i, outcomes):  # vidi tasks on the map at slot i: running, or failed within 3 s, user on the map
            on_map = set(cov.loc[cov["slot"] == slots[i], "vehicle"].astype(str))
            e = ends[(ends["layer"] == "dvit") & (ends["policy"] == "vidi") & ends["outcome"].isin(outcomes)]
            hold = np.where(e["outcome"] == "failed", 3.0, 0.0)
            return int(((e["t0"] <= times[i]) & (times[i] <= e["end"] + hold) & e["user"].isin(on_map)).sum())

        def counts(outcomes):
            got, exp = [], []
            for i in range(0, len(slots), 3):
                browser.execute_script(f"window.cosimView.setSlot({i})")
                got.append(browser.execute_script("return window.cosimView.state.tasks"))
                exp.append(drawn(i, outcomes))
            return got, exp

        got, exp = counts({"done", "failed", "censored"})
        assert got == exp and sum(exp) > 0
        _filter(browser, "outcome", "done", False)
        got, exp2 = counts({"failed", "censored"})
        assert got == exp2 and sum(exp2) < sum(exp) and sum(exp2) > 0
        _filter(browser, "outcome", "done", True)
        # the vehicle panel: a busy vehicle's list (two roles or more) without one role's rows,
        # then without one layer's, then (the role back) without one policy's
        v, i, me, want = _click_a_busy_vehicle(browser, run_dir, d, cov)
        assert _panel(browser)[1] == want and len({w[2] for w in want}) >= 2
        role = want[0][2]
        _filter(browser, "role", role, False)
        left = [w for w in want if w[2] != role]
        assert _panel(browser)[1] == left and 0 < len(left) < len(want)
        layer = left[0][0]
        _filter(browser, "layer", layer, False)
        assert _panel(browser)[1] == [w for w in left if w[0] != layer]
        _filter(browser, "role", role, True)
        _filter(browser, "layer", layer, True)
        policy = want[-1][1]
        _filter(browser, "policy", policy, False)
        left = [w for w in want if w[1] != policy]
        assert _panel(browser)[1] == left and len(left) < len(want)
        _filter(browser, "policy", policy, True)
        _filter(browser, "policy", "vidi", False)
        # the map: with the policy shown filtered out, nothing of it is drawn
        assert browser.execute_script("return window.cosimView.state.tasks") == 0


# -- a plugin layer, inspected through its declared contract alone -------------------------------
RELAY_PLUGIN = '''"""A plugin layer for the view test: relayed tasks, its own columns, its own TaskView."""
from cosim import Layer, TaskView, register_layer


def segments(row, index, rsus):
    """Hop k (a vehicle id, or "@here": the RSU) lasts hop_s[k], from the request on."""
    segs, t = [], float(row["t_request_s"])
    for who, d in zip(row["hops"], row["hop_s"]):
        segs.append([-1 if who == "@here" else index(str(who)), round(t, 4), round(t + float(d), 4)])
        t += float(d)
    r = rsus[int(row["at_rsu"])]
    return segs, t, {"rsu": [r["x"], r["y"]]}


@register_layer("relay")
class Relay(Layer):
    task_table = "relay_tasks"
    task_view = TaskView(vehicle="requester", segments=segments, draw="chain")
'''


def _relay_copy(run_dir, dest):
    """``run_dir`` copied with a plugin layer ``relay`` (a .py file its config.toml names): its
    task table ``relay_tasks`` made from the DViT rows — requester, the runs of steps on one
    device as hops (``@here``: the RSU) lasting ``hop_s``, policies renamed — and its summary
    block. Returns the folder and the relay table."""
    shutil.copytree(run_dir, dest)
    (dest / "relay_plugin.py").write_text(RELAY_PLUGIN)
    cfg = (dest / "config.toml").read_text()
    assert "plugins = []" in cfg
    (dest / "config.toml").write_text(cfg.replace("plugins = []", f'plugins = ["{dest / "relay_plugin.py"}"]', 1))
    dv = pd.read_parquet(dest / "dvit_tasks.parquet")
    rows = []
    for r in dv.itertuples():
        dur = np.asarray(r.step_comm_s, float) + np.asarray(r.step_comp_s, float) + np.asarray(r.step_queue_s, float)
        hops, hop_s = [], []
        for dev, du in zip(r.devices, dur):
            name = "@here" if str(dev) == "@rsu" else str(dev)
            if hops and hops[-1] == name:
                hop_s[-1] += float(du)
            else:
                hops.append(name)
                hop_s.append(float(du))
        rows.append({"task": r.task, "policy": f"relay-{r.policy}", "t_request_s": r.t_request_s,
                     "requester": str(r.user), "hops": hops, "hop_s": hop_s, "at_rsu": int(r.rsu),
                     "latency_s": float(sum(hop_s)) if r.success else np.nan, "success": r.success,
                     "failure": r.failure, "outcome": r.outcome})
    relay = pd.DataFrame(rows)
    relay.to_parquet(dest / "relay_tasks.parquet")
    s = json.loads((dest / "summary.json").read_text())
    s["layers"]["relay"] = {p: {"tasks": int(len(g)), "success_rate": float(g["success"].mean())}
                            for p, g in relay.groupby("policy")}
    (dest / "summary.json").write_text(json.dumps(s))
    return dest, relay


@pytest.mark.sumo
def test_a_plugin_layers_tasks_are_inspectable_through_its_task_view(run_dir, tmp_path):
    from selenium.webdriver.support.ui import Select

    run, relay = _relay_copy(run_dir, tmp_path / "relay")
    page = write_view(run, tmp_path / "view.html")
    d = build_data(run)
    cov = pd.read_parquet(run / "coverage.parquet")
    slots, times = d["vehicles"]["slots"], d["vehicles"]["times"]
    names = set(d["vehicles"]["names"])
    with _page(page) as browser:
        assert [o.text for o in Select(browser.find_element("id", "layer")).options] == ["dvit", "moe", "relay"]
        assert "relay" in browser.find_element("id", "filters").text
        # the path of every relay task: its hops in order, where coverage.parquet has them
        for policy, g in relay.groupby("policy"):
            ids = browser.execute_script(f"return window.cosimView.taskIds('relay', {json.dumps(policy)})")
            by_id = {int(r.task): r for r in g.itertuples()}
            for n, tid in enumerate(ids):
                browser.execute_script(f"window.cosimView.selectTask('relay', {json.dumps(policy)}, {n})")
                p = browser.execute_script("return window.cosimView.state.path")
                r = by_id[tid]
                ends = r.t_request_s + np.concatenate([[0.0], np.cumsum(r.hop_s)])
                assert [q["device"] for q in p["pts"][1:-1]] == \
                    ["RSU" if h == "@here" else (h if h in names else "(not in the page)") for h in r.hops]
                assert [q["t"] for q in p["pts"]] == pytest.approx([r.t_request_s, *ends[:-1], ends[-1]], abs=2e-4)
                assert p["outcome"] == r.outcome and p["why"] == (r.failure or "")
                for q, h, t0 in zip(p["pts"][1:-1], r.hops, ends):
                    i = _slot_at(times, t0)
                    at = cov[(cov["slot"] == slots[i]) & (cov["vehicle"].astype(str) == h)]
                    want = ((d["rsus"][r.at_rsu]["x"], d["rsus"][r.at_rsu]["y"]) if h == "@here" else
                            (at["x"].iloc[0], at["y"].iloc[0]) if len(at) else None)
                    if want is None:
                        assert q["xy"] is None
                    else:
                        assert np.abs(np.array(q["xy"]) - np.array(want, float)).max() <= d["transform"]["scale"] / 2 + 1e-6
        # the vehicle panel lists a vehicle's relay tasks with the roles the hops give, at a slot
        # where some vehicle helps a relay task
        seen = 0
        for i in range(5, len(slots), 7):
            t = times[i]
            run_ = relay[(relay["t_request_s"] <= t) & (relay["t_request_s"] + relay["hop_s"].map(sum) >= t)]
            for r in run_.itertuples():
                ends = r.t_request_s + np.concatenate([[0.0], np.cumsum(r.hop_s)])
                k = np.nonzero(ends[:-1] <= t)[0]
                helper = r.hops[k[-1]] if len(k) else None
                if helper in (None, "@here", r.requester) or helper not in names:
                    continue
                on = cov[(cov["slot"] == slots[i]) & (cov["vehicle"].astype(str) == helper)]
                if not len(on):
                    continue
                browser.execute_script(f"window.cosimView.setSlot({i})")
                listed = browser.execute_script(
                    f"return window.cosimView.vehicleTasks({json.dumps(helper)})")
                mine = sorted((x[1], x[2]) for x in listed if x[0] == "relay")
                exp = []
                for s in run_.itertuples():
                    e2 = s.t_request_s + np.concatenate([[0.0], np.cumsum(s.hop_s)])
                    k2 = np.nonzero(e2[:-1] <= t)[0]
                    h2 = s.hops[k2[-1]] if len(k2) else None
                    if s.requester == helper:
                        exp.append((s.policy, "user"))
                    elif h2 == helper:
                        exp.append((s.policy, "helper"))
                assert mine == sorted(exp) and (r.policy, "helper") in mine
                seen += 1
                break
        assert seen >= 2
        # its failures are on the strip; filtering the layer out takes exactly them off
        f = browser.execute_script("return window.cosimView.failures()")
        _filter(browser, "layer", "relay", False)
        g = browser.execute_script("return window.cosimView.failures()")
        failed = relay[relay["outcome"] == "failed"]
        b = np.minimum(np.floor((failed["t_request_s"] + failed["hop_s"].map(sum)) / f["width"]).astype(int),
                       len(f["counts"]) - 1)
        assert (np.array(f["counts"]) - np.array(g["counts"])).tolist() == \
            np.bincount(b, minlength=len(f["counts"])).tolist()
        assert len(failed) > 0


@pytest.mark.sumo
def test_report_and_view_of_a_run_without_coverage_draw_what_needs_no_vehicle_rows(tmp_path):
    """A completed run with output.coverage = false (README's sweep example sets it): the report
    draws the map (network, RSU discs) and every layer's panels, no dwell panels; the page shows
    the network, the RSUs and the layers' tasks and timelines, and says why there are no vehicles."""
    from selenium.webdriver.common.by import By

    from cosim.report import NO_COVERAGE_MAP, report

    from .conftest import GRID6_TOML, run_cli

    run = tmp_path / "run"
    proc = run_cli("run", str(GRID6_TOML.parent / "grid6_dvit.toml"), "--end", "60", "--no-coverage", "--out", str(run),
                   "-q")
    assert proc.returncode == 0, proc.stderr
    assert not (run / "coverage.parquet").exists()
    _, titles = report(run, tmp_path / "rep")
    assert titles == [NO_COVERAGE_MAP, "dvit: latency CDF per policy", "dvit: success rate per policy"]
    tasks = pd.read_parquet(run / "dvit_tasks.parquet")
    d = build_data(run)
    assert d["vehicles"]["all_slots"] == 0 and "output.coverage = false" in d["no_coverage"]
    assert {p: len(t) for p, t in d["layers"]["dvit"]["tasks"].items()} == tasks.groupby("policy", sort=False).size().to_dict()
    # the timeline runs to the run's end (60 s), not to the last vehicle row (none)
    assert max(tasks["t_request_s"]) > 30 and d["layers"]["dvit"]["timeline"]
    page = write_view(run, tmp_path / "view.html")
    with _page(page) as browser:
        assert "output.coverage = false" in browser.find_element(By.ID, "note").text
        assert browser.execute_script("return window.cosimView.state.rsus") == 4


@pytest.mark.sumo
def test_a_run_whose_coverage_parquet_was_removed_says_it_is_missing(tmp_path):
    """output.coverage was on (config.toml says so) and coverage.parquet was removed since: the
    note says the file is missing, not that the run had output.coverage = false."""
    from .conftest import GRID6_TOML, run_cli

    run = tmp_path / "run"
    proc = run_cli("run", str(GRID6_TOML), "--end", "20", "--no-layers", "--out", str(run), "-q")
    assert proc.returncode == 0, proc.stderr
    cov = run / "coverage.parquet"
    if cov.is_dir():  # a folder of parts
        shutil.rmtree(cov)
    else:
        cov.unlink()
    d = build_data(run)
    assert d["no_coverage"] == f"no vehicle rows: {run / 'coverage.parquet'} is missing (the run had output.coverage = true)"
    assert d["vehicles"]["all_slots"] == 0
