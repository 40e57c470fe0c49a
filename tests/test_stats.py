"""cosim.stats: the t distribution's tail against closed forms, the paired summary and Holm's
correction worked out by hand."""

import math

import pytest

from cosim import stats


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 2.5, 12.706, 40.0])
def test_t_tail_one_and_two_dof_closed_forms(t):
    assert stats.t_two_sided_p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), abs=1e-12)
    assert stats.t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-12)
    assert stats.t_two_sided_p(-t, 2) == stats.t_two_sided_p(t, 2)


def test_t_tail_at_the_tabled_95_quantiles_and_the_normal_limit():
    for dof in (1, 2, 5, 9, 20, 30):
        # the table holds 3 decimals: the tail at the rounded quantile is 0.05 to within its rounding
        assert stats.t_two_sided_p(stats.t95(dof), dof) == pytest.approx(0.05, abs=2e-4)
    # 1.959964 is the normal's 97.5 % quantile; t with a million dof is the normal to 1e-6
    assert stats.t_two_sided_p(1.959964, 1e6) == pytest.approx(0.05, abs=1e-5)
    assert stats.t95(1) == 12.706 and stats.t95(100) == 1.96


def test_mean_ci_by_hand():
    st = stats.mean_ci([0.5, 0.1, 0.7, float("nan"), float("inf")])
    mean = 1.3 / 3
    sd = math.sqrt(((0.5 - mean) ** 2 + (0.1 - mean) ** 2 + (0.7 - mean) ** 2) / 2)
    assert st["n"] == 3 and st["mean"] == pytest.approx(mean)
    assert st["ci95"] == pytest.approx(4.303 * sd / math.sqrt(3))
    t = mean / (sd / math.sqrt(3))
    assert st["p"] == pytest.approx(1 - t / math.sqrt(2 + t * t))
    one = stats.mean_ci([2.0])
    assert one["n"] == 1 and one["mean"] == 2.0 and math.isnan(one["ci95"]) and math.isnan(one["p"])
    assert stats.mean_ci([0.2, 0.2])["p"] == 0.0 and stats.mean_ci([0.0, 0.0])["p"] == 1.0
    assert stats.mean_ci([])["n"] == 0


def test_holm_four_p_values_by_hand():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> running max 0.06)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # a NaN is no hypothesis of the family (m = 2 here): 0.02 x 2 = 0.04, then 0.6 x 1
    out = stats.holm([0.6, float("nan"), 0.02])
    assert out[0] == pytest.approx(0.6) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert stats.holm([0.7, 0.6]) == [1.0, 1.0]  # 0.6 x 2 = 1.2, capped at 1; the running max carries


def test_fmt():
    assert stats.fmt(0.1234, 0.0456, 0.0123) == "+0.123 ± 0.046 (p_holm 0.012)"
    assert stats.fmt(-1.0, float("nan")) == "-1.000"
    assert stats.fmt(float("nan"), 1.0) == "n/a"
    assert stats.fmt(0.5, 0.1, 1e-5) == "+0.500 ± 0.100 (p_holm < 0.001)"
