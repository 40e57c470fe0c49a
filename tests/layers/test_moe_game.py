"""The Stackelberg pricing game: the follower's best response by hand, the exact equilibrium
against the numerical Nash gap, rationality, and the solvers."""

import itertools

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
    # IV 1's capacity binds: the constrained best response, not the clipped one. f1 = 1 at its cap;
    # IV 2 free: 7 f2 + 3 (1 + f2) = 12 -> f2 = 0.9 (> 75/91: the TV buys more from the substitute);
    # IV 1 really is capped: (15 - 3 * 1.9) / 7 = 1.33 > 1
    assert two(F=(1.0, 1.0)).follower(np.array([[5.0, 8.0]]))[0] == pytest.approx([1.0, 0.9])
    # both capped: (15 - 3 * 2) / 7 > 1 and (12 - 6) / 7 < 1 -> IV 2 free: 10 f2 = 12 - 3 = 9
    assert two(F=(1.0, 0.5)).follower(np.array([[5.0, 8.0]]))[0] == pytest.approx([1.0, 0.5])
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


def u_tv(g: Game, p: np.ndarray, f: np.ndarray) -> float:
    tot = f.sum()
    return float(g.a @ f - 0.5 * (g.beta - g.gamma) * f @ f - 0.5 * g.gamma * tot * tot - p @ f)


def follower_by_faces(g: Game, p: np.ndarray) -> np.ndarray:
    """Reference best response, independent of the solver's: the maximiser of a strictly concave
    QP over a box is the stationary point of U_TV on one face of the box (each IV at 0, at its
    capacity, or free), so solve the linear system on every one of the 3^n faces, keep the
    feasible points and return the best."""
    n = g.n
    M = (g.beta - g.gamma) * np.eye(n) + g.gamma * np.ones((n, n))
    x = g.a - p
    best, best_u = np.zeros(n), 0.0
    for face in itertools.product((0, 1, 2), repeat=n):  # 0: none, 1: capacity, 2: free
        face = np.array(face)
        f = np.where(face == 1, g.F, 0.0)
        free = face == 2
        if free.any():
            rhs = x[free] - M[np.ix_(free, ~free)] @ f[~free]
            f[free] = np.linalg.solve(M[np.ix_(free, free)], rhs)
        if (f < -1e-12).any() or (f > g.F + 1e-12).any():
            continue
        u = u_tv(g, p, f)
        if u > best_u:
            best, best_u = f, u
    return best


def follower_by_projected_gradient(g: Game, p: np.ndarray, iters: int = 20000) -> np.ndarray:
    """A second reference: projected gradient ascent on U_TV with step 1 / ||M||."""
    M = (g.beta - g.gamma) * np.eye(g.n) + g.gamma * np.ones((g.n, g.n))
    step = 1.0 / np.linalg.eigvalsh(M).max()
    f = np.zeros(g.n)
    for _ in range(iters):
        f = np.clip(f + step * (g.a - p - M @ f), 0.0, g.F)
    return f


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 100_000), st.integers(1, 6), st.floats(0.0, 0.95), st.sampled_from([12, 1]))
def test_constrained_best_response_equals_a_reference_qp_solver(seed, n, sigma, newton):
    """Newton steps 12 (the default) and 1 (every vector not settled goes to the sorting method)."""
    import cosim.layers.moe.game as game_module

    rng = np.random.default_rng(seed)
    # capacities from tight (binding for most IVs) to loose
    g = Game(rng.uniform(0.01, 0.05, n), rng.uniform(0.05, 3.0, n), rng.uniform(5, 20, n), sigma=sigma)
    p = np.exp(rng.uniform(np.log(0.01), np.log(60), (3, n)))
    saved, game_module._NEWTON = game_module._NEWTON, newton
    try:
        f = g.follower(p)
    finally:
        game_module._NEWTON = saved
    for b in range(3):
        ref = follower_by_faces(g, p[b])
        np.testing.assert_allclose(f[b], ref, atol=1e-9)
        # and it is no worse than what the projected method reaches (an optimum, not only a KKT point)
        assert u_tv(g, p[b], f[b]) >= u_tv(g, p[b], follower_by_projected_gradient(g, p[b], 500)) - 1e-9


def test_binding_capacity_differs_from_clipping_and_matches_projected_gradient():
    rng = np.random.default_rng(7)
    g = Game(rng.uniform(0.01, 0.05, 6), np.full(6, 0.3), rng.uniform(5, 20, 6))
    p = np.full(6, 2.0)
    f = g.follower(p[None])[0]
    np.testing.assert_allclose(f, follower_by_projected_gradient(g, p), atol=1e-7)
    unconstrained = Game(g.W, np.full(6, 1e9), g.kappa).follower(p[None])[0]
    clipped = np.minimum(unconstrained, g.F)
    assert (unconstrained > g.F).any() and (unconstrained < g.F).any()  # some bind, some do not
    assert u_tv(g, p, f) > u_tv(g, p, clipped) + 1e-6


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


def test_an_ivs_best_response_by_hand():
    # two symmetric IVs (a = 20, beta = 10, gamma = 3, kappa = 5), IV 2 at p2 = 10. While both buy,
    # f1(q) = ((10/13)(20 - q) - (3/13)(20 - 10)) / 7 = (170 - 10 q) / 91; U1 = f1 (q - 5 f1);
    # dU1/dq = f1 + q f1' - 10 f1 f1' = 0 with f1' = -10/91  ->  q = 32470 / 2820
    g = two()
    q, u = g.best_responses(np.array([[10.0, 10.0]]), grid=96, refine=40)
    assert q[0] == pytest.approx([32470 / 2820] * 2, rel=1e-6)
    f1 = (170 - 10 * q[0, 0]) / 91
    assert u[0, 0] == pytest.approx(f1 * (q[0, 0] - 5 * f1), rel=1e-12)
    assert u[0, 0] > g.outcome(np.array([[10.0, 10.0]]))["u_iv"][0, 0] + 1e-3  # at 10 it was not a best reply


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6))
def test_best_response_search_matches_a_dense_scan(seed, n):
    """The grid + golden-section search against an independent 20 000-point scan of one IV's
    utility: it finds the maximum (to the scan's resolution) and never reports more than exists."""
    g = game_from(seed, n)
    rng = np.random.default_rng(seed + 1)
    p = np.exp(rng.uniform(np.log(1.0), np.log(60.0), (2, n)))
    q, best = g.best_responses(p, grid=96, refine=30)
    scan = np.exp(np.linspace(np.log(g.p_min), np.log(g.p_max), 20_000))
    dense = g.deviation_utility(p, np.broadcast_to(scan, (2, n, len(scan)))).max(axis=2)
    assert (best >= dense - 1e-6 * np.maximum(1.0, np.abs(dense))).all()
    np.testing.assert_allclose(g.deviation_utility(p, q[:, :, None])[:, :, 0], best, rtol=1e-12, atol=1e-12)
    assert (best <= dense + 1e-3 * np.maximum(1.0, np.abs(dense))).all()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 10))
def test_the_tv_never_loses_and_gecpa_leaves_no_iv_below_its_energy_cost(seed, n):
    g = game_from(seed, n)
    rng = np.random.default_rng(seed + 1)
    p = np.exp(rng.uniform(np.log(g.p_min), np.log(g.p_max), (5, n)))
    # the TV's best response is never worse than buying nothing
    assert (g.outcome(p)["u_tv"] >= -1e-9).all()
    # at GECPA's prices no IV sells below its energy cost (a price under kappa f loses money)
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


def test_gecpa_spends_what_gecpa_evals_says_and_the_searching_baselines_the_same_budget():
    from cosim.layers.moe.game import gecpa_evals

    for n in (1, 5, 20):
        for cfg in (SolverConfig(), SolverConfig(population=8, generations=3, grad_steps=2, fitness_grid=12)):
            g = game_from(n, n)
            SOLVERS["gecpa"](g, np.random.default_rng(0), cfg)
            budget = gecpa_evals(n, cfg)
            assert g.evals == budget
            for name in ("gradient", "evolutionary"):
                g = game_from(n, n)
                SOLVERS[name](g, np.random.default_rng(0), cfg)
                # within one unit of work (a scored gradient step: 3n + n (24 + 2 x 6 + 1) + 2; a
                # generation's fitness) of the budget
                unit = 3 * n + 37 * n + 2 if name == "gradient" else \
                    cfg.population * n * (cfg.fitness_grid + 13) + 2 * cfg.population
                assert budget - unit < g.evals <= budget, (name, n, g.evals, budget)
            g = game_from(n, n)
            SOLVERS["best-response"](g, np.random.default_rng(0), cfg)
            assert 0 < g.evals <= budget
            g = game_from(n, n)
            SOLVERS["random"](g, np.random.default_rng(0), cfg)
            assert g.evals == 0
    # an explicit budget
    g = game_from(3, 4)
    SOLVERS["gradient"](g, np.random.default_rng(0), SolverConfig(budget=120))
    assert g.evals == 120  # too small to score a step (12 + 150): 10 unscored steps x 3 x 4 IVs
    g = game_from(3, 4)
    SOLVERS["best-response"](g, np.random.default_rng(0), SolverConfig(budget=20))
    assert 0 < g.evals <= 20


def test_random_prices_lie_where_the_tv_would_buy():
    g = game_from(4, 10)
    p = np.stack([SOLVERS["random"](g, np.random.default_rng(s), SolverConfig()) for s in range(200)])
    assert (p >= g.p_min).all() and (p <= g.a).all()
    # uniform on [p_min, a_i]: the mean is (p_min + a_i) / 2 within sampling error (sd (a_i - p_min) / sqrt(12 x 200))
    np.testing.assert_allclose(p.mean(axis=0), (g.p_min + g.a) / 2, atol=4 * g.a.max() / np.sqrt(12 * 200))


def interior_game(seed: int, n: int) -> Game:
    """Capacities far above any purchase: no constraint binds at the equilibrium."""
    rng = np.random.default_rng(seed)
    return Game(rng.uniform(0.02, 0.05, n), rng.uniform(50, 60, n), rng.uniform(5, 20, n))


def test_best_response_reaches_the_exact_equilibrium_by_hand():
    # two symmetric IVs: p* = 19.1 f*, f* = 20 / 32.1 (test_exact_equilibrium_by_hand_...)
    g = two()
    p = SOLVERS["best-response"](g, np.random.default_rng(0), SolverConfig())
    assert p == pytest.approx([19.1 * 20 / 32.1] * 2, rel=1e-8)
    from cosim.layers.moe.game import gecpa_evals

    assert g.evals <= gecpa_evals(2, SolverConfig())


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 8))
def test_best_response_reaches_the_exact_equilibrium_where_no_constraint_binds(seed, n):
    from cosim.layers.moe.game import gecpa_evals

    g = interior_game(seed, n)
    pe, fe = exact_equilibrium(g)
    if (fe <= 0).any():
        return  # an IV priced out: the linear system does not apply
    p = SOLVERS["best-response"](g, np.random.default_rng(0), SolverConfig())
    np.testing.assert_allclose(p, pe, rtol=1e-7)
    assert g.evals <= gecpa_evals(n, SolverConfig())  # within GECPA's budget, counted


def test_the_exact_best_price_matches_the_hand_worked_one_and_a_dense_scan():
    from cosim.layers.moe.game import _best_price

    # test_an_ivs_best_response_by_hand: IV 1 against p2 = 10 plays 32470 / 2820 exactly
    q = _best_price(two(), np.array([10.0, 10.0]), 0)[0]
    g = two()
    pp = np.tile([10.0, 10.0], (len(q), 1))
    pp[:, 0] = q
    f = g.follower(pp)[:, 0]
    assert q[np.argmax(f * (q - 5 * f))] == pytest.approx(32470 / 2820, rel=1e-12)
    # random games with binding capacities: never below a 20 000-point scan of the utility
    for seed in range(10):
        g = game_from(seed, 6)
        p = np.exp(np.random.default_rng(seed).uniform(np.log(1.0), np.log(60.0), 6))
        scan = np.exp(np.linspace(np.log(g.p_min), np.log(g.p_max), 20_000))
        for i in range(6):
            for cand in (q := _best_price(g, p, i)[0], scan):
                pp = np.tile(p, (len(cand), 1))
                pp[:, i] = cand
                f = g.follower(pp)[:, i]
                u = (f * (cand - g.kappa[i] * f)).max()
                if cand is q:
                    best = u
            assert best >= u - 1e-9 * max(1.0, abs(u))


def test_gradient_returns_its_best_scored_iterate():
    from cosim.layers.moe.game import _FINAL, _ascend, _fitness, _fitness_evals, budget_of

    cfg = SolverConfig()
    for seed in range(4):
        g = game_from(seed, 8)
        p = SOLVERS["gradient"](g, np.random.default_rng(0), cfg)
        steps = budget_of(8, cfg) // (3 * 8 + _fitness_evals(1, 8, *_FINAL))
        assert steps == 9864 // (24 + 298) == 30
        it = _ascend(game_from(seed, 8), np.full((1, 8), cfg.uniform_price), steps, cfg.lr, keep=steps)[:, 0]
        fit = _fitness(g, it, *_FINAL)
        np.testing.assert_array_equal(p, it[int(np.argmin(fit))])
        assert fit.min() <= fit[-1]  # no worse than the last iterate it used to return
