"""The Stackelberg pricing game: the follower's best response by hand, the exact equilibrium
against the numerical Nash gap, rationality, and the solvers."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cosim import registry
from cosim.layers.moe.game import Game, SolverConfig, exact_equilibrium

SOLVERS = {name: spec.fn for name, spec in registry.policies("moe").items()}


def two(F=(10.0, 10.0), kappa=(5.0, 5.0)):
    # equal work -> a = v = 20 each; beta = 20 / 2 = 10; gamma = 0.3 * 10 = 3
    return Game(np.array([0.03, 0.03]), np.array(F), np.array(kappa), value=20.0, f_sat=2.0, sigma=0.3)


def test_follower_best_response_by_hand():
    g = two()
    # [10 3; 3 10] f = a - p = (15, 12)  ->  f = (150 - 36, 120 - 45) / 91
    f = g.follower(np.array([[5.0, 8.0]]))[0]
    assert f == pytest.approx([114 / 91, 75 / 91])
    # IV 2 priced above its value (a - p < 0): the TV buys from IV 1 alone, (a1 - p1) / beta = 1.5
    assert g.follower(np.array([[5.0, 25.0]]))[0] == pytest.approx([1.5, 0.0])
    # capacities ration the purchase
    assert two(F=(1.0, 1.0)).follower(np.array([[5.0, 8.0]]))[0] == pytest.approx([1.0, 75 / 91])
    out = g.outcome(np.array([[5.0, 8.0]]))
    f1, f2 = 114 / 91, 75 / 91
    # U_TV = a.f - (beta - gamma)/2 |f|^2 - gamma/2 (f1 + f2)^2 - p.f; U_i = f_i (p_i - kappa f_i)
    u_tv = 20 * (f1 + f2) - 3.5 * (f1**2 + f2**2) - 1.5 * (f1 + f2) ** 2 - (5 * f1 + 8 * f2)
    assert out["u_tv"][0] == pytest.approx(u_tv)
    assert out["u_iv"][0] == pytest.approx([f1 * (5 - 5 * f1), f2 * (8 - 5 * f2)])


def test_exact_equilibrium_by_hand_for_two_symmetric_ivs():
    g = two()
    p, f = exact_equilibrium(g)
    # s = (1 - g_2) / (beta - gamma) with g_2 = 3 / 13: s = (10/13) / 7 = 10 / 91
    # p = f (1 + 2 kappa s) / s = f (1 + 100/91) * 9.1 = 19.1 f; symmetric: (10 + 3) f + 19.1 f = 20
    assert f == pytest.approx([20 / 32.1, 20 / 32.1])
    assert p == pytest.approx(19.1 * f)
    assert g.nash_gap(p[None], grid=256, refine=40)[0] < 1e-9


def follower_by_passes(g: Game, p: np.ndarray) -> np.ndarray:
    """Reference best response: solve on the active set, drop IVs that would buy < 0, repeat."""
    x = g.a - p
    active = x > 0
    d = g.beta - g.gamma
    while True:
        n = active.sum(axis=-1, keepdims=True)
        tot = np.where(active, x, 0.0).sum(axis=-1, keepdims=True)
        f = np.where(active, (x - g.gamma / (d + n * g.gamma) * tot) / d, 0.0)
        drop = active & (f <= 0)
        if not drop.any():
            return np.minimum(np.maximum(f, 0.0), g.F)
        active &= ~drop


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 100_000), st.integers(1, 12), st.floats(0.0, 0.95))
def test_water_filling_equals_dropping_ivs_pass_by_pass(seed, n, sigma):
    rng = np.random.default_rng(seed)
    g = Game(rng.uniform(0.01, 0.05, n), rng.uniform(0.2, 5.0, n), rng.uniform(5, 20, n), sigma=sigma)
    p = np.exp(rng.uniform(np.log(0.01), np.log(100), (4, n)))
    np.testing.assert_allclose(g.follower(p), follower_by_passes(g, p), atol=1e-12)


def game_from(seed: int, n: int) -> Game:
    rng = np.random.default_rng(seed)
    return Game(rng.uniform(0.02, 0.05, n), rng.uniform(0.2, 1.0, n), rng.uniform(5, 20, n))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 8))
def test_exact_equilibrium_has_no_profitable_deviation(seed, n):
    g = Game(*[np.random.default_rng(seed).uniform(lo, hi, n) for lo, hi in ((0.02, 0.05), (50, 60), (5, 20))])
    p, f = exact_equilibrium(g)  # capacities far away: interior
    if (f <= 0).any():
        return  # an IV priced out: the linear system does not apply
    assert g.nash_gap(p[None], grid=256, refine=40)[0] < 1e-6 * max(1.0, float(np.abs(g.outcome(p[None])["u_iv"]).max()))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 10))
def test_rational_players_never_lose(seed, n):
    g = game_from(seed, n)
    rng = np.random.default_rng(seed + 1)
    p = np.exp(rng.uniform(np.log(g.p_min), np.log(g.p_max), (5, n)))
    # the TV's best response is never worse than buying nothing
    assert (g.outcome(p)["u_tv"] >= -1e-9).all()
    # an IV's best response never loses money, whatever the others charge
    _, best = g.best_responses(p, grid=64, refine=10)
    assert (best >= -1e-12).all()
    # and at GECPA's prices no IV loses
    q = SOLVERS["gecpa"](g, np.random.default_rng(seed), SolverConfig())
    assert (g.outcome(q[None])["u_iv"] >= -1e-9).all()


def test_gecpa_reaches_the_exact_equilibrium_when_it_is_interior():
    hits = 0
    for seed in range(12):
        g = Game(*[np.random.default_rng(seed).uniform(lo, hi, 8) for lo, hi in ((0.02, 0.05), (50, 60), (5, 20))])
        pe, fe = exact_equilibrium(g)
        if (fe <= 0).any():
            continue
        p = SOLVERS["gecpa"](g, np.random.default_rng(0), SolverConfig())
        assert p == pytest.approx(pe, rel=1e-2)
        hits += 1
    assert hits >= 6


def test_gecpa_has_a_smaller_nash_gap_than_random_and_uniform_pricing():
    wins = {"random": 0, "uniform": 0}
    total = {"gecpa": 0.0, "random": 0.0, "uniform": 0.0}
    for seed in range(10):
        g = game_from(seed, 8)
        gap = {name: g.nash_gap(SOLVERS[name](g, np.random.default_rng(seed), SolverConfig())[None], grid=128, refine=30)[0]
               for name in total}
        for name in total:
            total[name] += gap[name]
        for other in wins:
            wins[other] += gap["gecpa"] < gap[other]
    # always closer to equilibrium than random prices; nearly always than one fixed price (a
    # fixed price can happen to sit near a game's equilibrium), and far closer on average
    assert wins["random"] == 10 and wins["uniform"] >= 8
    assert total["gecpa"] < total["uniform"] / 5 and total["gecpa"] < total["random"] / 5
