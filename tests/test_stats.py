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


def test_t95_against_closed_forms_and_printed_tables():
    # closed forms: 1 dof (Cauchy) tan(0.475 pi); 2 dof t / sqrt(2 + t^2) = 0.95; 4 dof (Hill 1970):
    # a = 4 p (1 - p), q = cos(arccos(sqrt a) / 3) / sqrt a, t = 2 sqrt(q - 1) with p = 0.975
    assert stats.t95(1) == pytest.approx(math.tan(0.475 * math.pi), rel=1e-12)
    assert stats.t95(2) == pytest.approx(0.95 * math.sqrt(2 / (1 - 0.95 ** 2)), rel=1e-12)
    a = 4 * 0.975 * 0.025
    assert stats.t95(4) == pytest.approx(2 * math.sqrt(math.cos(math.acos(math.sqrt(a)) / 3) / math.sqrt(a) - 1),
                                         rel=1e-12)
    # printed tables (4 decimals, e.g. Abramowitz & Stegun 26.10): beyond 30 dof the old 1.96 was wrong
    for dof, q in ((30, 2.0423), (31, 2.0395), (40, 2.0211), (60, 2.0003), (100, 1.9840), (120, 1.9799),
                   (1000, 1.9623)):
        assert stats.t95(dof) == pytest.approx(q, abs=5e-5)
    # and towards the normal's 1.959964 from above
    assert 1.959964 < stats.t95(100_000) < 1.95999
    with pytest.raises(ValueError):
        stats.t95(0)


@pytest.mark.parametrize("dof", [1, 3, 7, 31, 99, 1000])
def test_t95_inverts_the_tail(dof):
    assert stats.t_two_sided_p(stats.t95(dof), dof) == pytest.approx(0.05, abs=1e-12)


def test_interval_and_p_agree_at_the_boundary():
    # 32 values with t = 2.0 exactly (mean 2 sd / sqrt 32): 2.0 < t95(31) = 2.0395, so the interval
    # must hold 0 and p must be above 0.05 (with the old 1.96 the interval excluded 0 at p = 0.054)
    base = [(-1) ** i * (1 + i % 5) for i in range(32)]
    m, sd = sum(base) / 32, math.sqrt(sum((x - sum(base) / 32) ** 2 for x in base) / 31)
    v = [(x - m) / sd + 2.0 / math.sqrt(32) for x in base]  # sd 1, mean 2 / sqrt(32): t = 2
    st = stats.mean_ci(v)
    assert st["p"] == pytest.approx(stats.t_two_sided_p(2.0, 31)) and 0.05 < st["p"] < 0.055
    assert st["mean"] - st["ci95"] < 0 < st["mean"]
    # just over the quantile, both flip together
    w = [x + (stats.t95(31) - 2.0 + 1e-6) / math.sqrt(32) for x in v]
    st = stats.mean_ci(w)
    assert st["p"] < 0.05 and st["mean"] - st["ci95"] > 0


def test_mean_ci_by_hand():
    st = stats.mean_ci([0.5, 0.1, 0.7, float("nan"), float("inf")])
    mean = 1.3 / 3
    sd = math.sqrt(((0.5 - mean) ** 2 + (0.1 - mean) ** 2 + (0.7 - mean) ** 2) / 2)
    assert st["n"] == 3 and st["mean"] == pytest.approx(mean)
    assert st["ci95"] == pytest.approx(4.302653 * sd / math.sqrt(3))
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
    assert stats.fmt(-1.0, float("nan")) == "-1.000 (no interval: n < 2)"  # one seed: not an exact number
    one = stats.mean_ci([0.558])
    assert stats.fmt(one["mean"], one["ci95"], one["p"]) == "+0.558 (no interval: n < 2)"
    assert stats.fmt(float("nan"), 1.0) == "n/a"
    assert stats.fmt(0.5, 0.1, 1e-5) == "+0.500 ± 0.100 (p_holm < 0.001)"
