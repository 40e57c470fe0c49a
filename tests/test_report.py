"""``cosim report``: the figure of a run, its panels, and the handovers it marks."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from cosim.report import FIXED_PANELS, handovers
from cosim.results import COVERAGE_COLUMNS, load

from .conftest import says


@pytest.fixture(scope="module")
def run_dir(dvit_moe_run):
    return dvit_moe_run  # the session's run, shared with tests/test_view.py


@pytest.mark.sumo
def test_report_writes_png_and_pdf_with_every_panel(run_dir, tmp_path, cli):
    pytest.importorskip("matplotlib")
    from PIL import Image

    p = cli("report", str(run_dir), "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [str(tmp_path / "report.png"), str(tmp_path / "report.pdf")]
    img = Image.open(tmp_path / "report.png")
    panels = img.info["Description"].split("; ")
    assert panels[:3] == list(FIXED_PANELS)
    assert [t.split(":")[0] for t in panels[3:]] == ["dvit", "dvit", "moe", "moe"]  # two panels per task layer
    assert img.size[0] > 1000 and img.size[1] > 1000
    assert (tmp_path / "report.pdf").read_bytes()[:5] == b"%PDF-"


@pytest.mark.sumo
def test_the_report_s_numbers_are_the_tables(run_dir, tmp_path, monkeypatch):
    """The numbers the page states, each worked out again from the tables with pandas: slots and
    RSUs from rsus.parquet, vehicles from coverage.parquet, handovers from the world's own
    per-slot count, each policy's success rate from its tasks' outcomes (done / ended)."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from cosim.report import report

    figs = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figs.append(self), save(self, *a, **k))[1])
    report(run_dir, tmp_path)
    fig = figs[0]
    rs = pd.read_parquet(run_dir / "rsus.parquet")
    cov = pd.read_parquet(run_dir / "coverage.parquet", columns=["vehicle"])
    stated = {unit: int(n) for n, unit in re.findall(r"(\d+) (slots|vehicles|RSUs)", fig._suptitle.get_text())}
    assert stated == {"slots": rs["slot"].nunique(), "vehicles": cov["vehicle"].nunique(), "RSUs": rs["rsu"].nunique()}
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == [f"handovers ({int(rs['handover_in'].sum())})"]
    for layer, ax in (("dvit", fig.axes[-3]), ("moe", fig.axes[-1])):
        t = pd.read_parquet(run_dir / f"{layer}_tasks.parquet", columns=["policy", "outcome"])
        ended = t[t["outcome"] != "censored"]
        rate = {p: (g["outcome"] == "done").sum() / len(g) for p, g in ended.groupby("policy", sort=False)}
        labels = [x.get_text() for x in ax.get_xticklabels()]
        bars = [float(x.get_text().split("\n")[0]) for x in ax.texts]  # the rate; its difference under it
        assert labels == list(rate) and bars == pytest.approx([round(v, 3) for v in rate.values()], abs=5e-4)


@pytest.mark.sumo
def test_handovers_match_the_worlds_count(run_dir):
    # the world counts handover_in per RSU and slot as the run goes; the report finds them again
    # from each vehicle's consecutive coverage rows
    rs = pd.read_parquet(run_dir / "rsus.parquet")
    assert len(handovers(load(run_dir).table("coverage", COVERAGE_COLUMNS))) == rs["handover_in"].sum() == rs["handover_out"].sum() > 0


def test_report_on_no_results_folder_is_one_line(tmp_path, cli):
    p = cli("report", str(tmp_path))
    assert p.returncode == 2
    assert says(p.stderr, str(tmp_path), "summary.json")  # one line naming the folder and what it lacks


def test_success_axis_origin_and_latency_clip_by_hand():
    from cosim.report import CDF_CLIP, success_origin

    assert success_origin([0.89, 0.97]) == 0.8  # 0.89 - 0.25 x 0.11 = 0.8625, down to a tenth
    assert success_origin([0.99, 1.0]) == 0.9
    assert success_origin([0.3, 0.9]) == 0.0 and success_origin([]) == 0.0
    assert success_origin([float("nan"), 0.95]) == 0.9
    assert success_origin([1.0, 1.0]) == 0.9  # not 1.0: an axis from 1 to 1 is no axis
    assert CDF_CLIP == 0.99


@pytest.mark.sumo
def test_latency_cdf_over_uncensored_tasks_and_success_bars_with_the_paired_difference(tmp_path, monkeypatch):
    """drain_s = 0: tasks requested in the last 40 s of a 60 s run are cut off by the end (censored,
    no outcome). Each CDF ends at completed / (tasks - censored), the denominator of the success
    rate (it divided by every task, censored ones as never completed); under each success bar but
    the baseline's, the run's task-level success difference to VIDI ± its 95 % half-width."""
    pytest.importorskip("matplotlib")
    import json

    from matplotlib.figure import Figure

    from cosim.report import report
    from cosim.stats import fmt

    from .conftest import run_grid6

    run = run_grid6(tmp_path, '[layers.dvit]\npolicies = ["vidi", "mddi", "sdi"]\n', "--set", "scenario.drain_s=0",
                    end_s=60)
    figs = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figs.append(self), save(self, *a, **k))[1])
    report(run, tmp_path / "rep")
    cdf, bars = figs[0].axes[-2], figs[0].axes[-1]  # the last row: the one task layer
    t = pd.read_parquet(run / "dvit_tasks.parquet", columns=["policy", "outcome", "latency_s"])
    assert (t["outcome"] == "censored").sum() > 0  # the case this is about
    tops = {line.get_label(): line.get_ydata()[-1] for line in cdf.get_lines()}
    for policy, g in t.groupby("policy", sort=False):
        ended = (g["outcome"] != "censored").sum()
        assert tops[policy] == pytest.approx(g["latency_s"].notna().sum() / ended)
        assert tops[policy] > g["latency_s"].notna().sum() / len(g)  # what it was
    block = json.loads((run / "summary.json").read_text())["layers"]["dvit"]
    labels = [x.get_text().split("\n") for x in bars.texts]
    assert labels[0] == [f"{block['vidi']['success_rate']:.3f}"]  # the baseline: its rate alone
    for (rate, diff), policy in zip(labels[1:], ["mddi", "sdi"]):
        vs = block[policy]["vs_baseline"]
        assert rate == f"{block[policy]['success_rate']:.3f}"
        assert diff == fmt(vs["success_diff"], vs["success_diff_ci95"]) and "±" in diff
