"""``cosim report``: the figure of a run, its panels, and the handovers it marks."""

from __future__ import annotations

import pandas as pd
import pytest

from cosim.report import FIXED_PANELS, handovers
from cosim.results import COVERAGE_COLUMNS, load

from .conftest import run_grid6


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return run_grid6(tmp_path_factory.mktemp("report"), '[layers.dvit]\npolicies = ["vidi", "mddi"]\n'
                     '[layers.moe]\npolicies = ["gecpa", "nearest"]\n', end_s=60)


@pytest.mark.sumo
def test_report_writes_png_and_pdf_with_every_panel(run_dir, tmp_path, cli):
    pytest.importorskip("matplotlib")
    from PIL import Image

    p = cli("report", str(run_dir), "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [str(tmp_path / "report.png"), str(tmp_path / "report.pdf")]
    img = Image.open(tmp_path / "report.png")
    panels = img.info["Description"].split("; ")
    assert panels == [*FIXED_PANELS, "dvit: latency CDF per policy", "dvit: success rate per policy",
                      "moe: latency CDF per policy", "moe: success rate per policy"]
    assert img.size[0] > 1000 and img.size[1] > 1000
    assert (tmp_path / "report.pdf").read_bytes()[:5] == b"%PDF-"


@pytest.mark.sumo
def test_handovers_match_the_worlds_count(run_dir):
    # the world counts handover_in per RSU and slot as the run goes; the report finds them again
    # from each vehicle's consecutive coverage rows
    rs = pd.read_parquet(run_dir / "rsus.parquet")
    assert len(handovers(load(run_dir).table("coverage", COVERAGE_COLUMNS))) == rs["handover_in"].sum() == rs["handover_out"].sum() > 0


def test_report_on_no_results_folder_is_one_line(tmp_path, cli):
    p = cli("report", str(tmp_path))
    assert p.returncode == 2
    assert p.stderr.strip() == f"cosim: error: {tmp_path}: not a results folder (no summary.json; made by `cosim run` or `cosim replay`)"


def test_success_axis_origin_and_latency_clip_by_hand():
    from cosim.report import CDF_CLIP, success_origin

    assert success_origin([0.89, 0.97]) == 0.8  # 0.89 - 0.25 x 0.11 = 0.8625, down to a tenth
    assert success_origin([0.99, 1.0]) == 0.9
    assert success_origin([0.3, 0.9]) == 0.0 and success_origin([]) == 0.0
    assert success_origin([float("nan"), 0.95]) == 0.9
    assert success_origin([1.0, 1.0]) == 0.9  # not 1.0: an axis from 1 to 1 is no axis
    assert CDF_CLIP == 0.99
