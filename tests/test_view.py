"""``cosim view``: the page's data against the results tables, and the page itself in a real
headless Chromium (Selenium): what it draws at a slot equals coverage.parquet's counts."""

from __future__ import annotations

import base64
import io
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from cosim.palette import rsu_color
from cosim.view import build_data, write_view

from .conftest import GRID6_NET, run_grid6

LAYERS = """
[layers.dvit]
policies = ["vidi", "mddi"]
[layers.moe]
policies = ["gecpa", "nearest"]
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return run_grid6(tmp_path_factory.mktemp("view"), LAYERS, end_s=60)


def _arr(b64: str, dtype) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype=np.dtype(dtype).newbyteorder("<"))


@pytest.mark.sumo
def test_page_data_reproduces_coverage(run_dir):
    d = build_data(run_dir)
    cov = pd.read_parquet(run_dir / "coverage.parquet")
    v = d["vehicles"]
    assert v["stride"] == 1 and v["rows"] == len(cov) and v["slots"] == sorted(cov["slot"].unique())
    start = _arr(v["start"], np.uint32)
    x, y = _arr(v["x"], np.uint16), _arr(v["y"], np.uint16)
    vid, rsu = _arr(v["vid"], np.uint32), _arr(v["rsu"], np.uint8)
    t = d["transform"]
    ids = [r["id"] for r in d["rsus"]]
    for i in (0, 17, len(v["slots"]) - 1):  # a few slots, row by row
        rows = cov[cov["slot"] == v["slots"][i]].set_index("vehicle")
        sl = slice(start[i], start[i + 1])
        assert start[i + 1] - start[i] == len(rows)
        names = [v["names"][j] for j in vid[sl]]
        got = pd.DataFrame({"x": t["x0"] + x[sl] * t["scale"], "y": t["y0"] + y[sl] * t["scale"],
                            "rsu": [ids[j] if j != v["none"] else None for j in rsu[sl]]}, index=names)
        want = rows.loc[names]
        # quantised to half a grid step
        assert np.abs(got["x"] - want["x"].to_numpy()).max() <= t["scale"] / 2 + 1e-9
        assert np.abs(got["y"] - want["y"].to_numpy()).max() <= t["scale"] / 2 + 1e-9
        assert list(got["rsu"]) == [r if isinstance(r, str) else None for r in want["rsu"].astype(object)]
        assert list(rsu[sl]) == sorted(rsu[sl])  # one colour run per RSU
    assert d["rsus"] and len(d["rsus"]) == len(json.loads((run_dir / "summary.json").read_text())["rsus"])


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


# -- the page in a real browser -------------------------------------------------------------
def _chromium():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e '.[test]')")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("Chromium or chromedriver not installed (Debian: apt-get install chromium chromium-driver); "
                    ".ci/run installs them")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,800"):
        opts.add_argument(a)
    return webdriver.Chrome(options=opts, service=Service(driver))


@pytest.mark.sumo
def test_page_in_headless_chromium_draws_what_coverage_says(run_dir, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page = write_view(run_dir, tmp_path / "view.html")
    cov = pd.read_parquet(run_dir / "coverage.parquet")
    rsus = json.loads((run_dir / "summary.json").read_text())["rsus"]
    browser = _chromium()
    try:
        browser.get(page.as_uri())
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
        logs = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert logs == []
    finally:
        browser.quit()
