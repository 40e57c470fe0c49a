import itertools

import numpy as np
import pytest

from cosim.layers.dvit.problem import Problem, evaluate
from cosim import registry
from cosim.layers.dvit.schedulers import optimal

SCHEDULERS = {name: spec.fn for name, spec in registry.policies("dvit").items()}


def toy(K=4, local=1, tmax=1.0, dwell=100.0, upload=0.1):
    # devices: 0 RSU, 1 helper, 2 user
    comp = np.array([0.1, 0.2, 0.4])
    queue = np.array([0.01, 0.02, 0.0])
    comm = np.array([[0.0, 0.3, 0.5], [np.inf, 0.0, 0.25], [np.inf, np.inf, 0.0]])
    return Problem(comp, queue, comm, upload, dwell, K, local, tmax,
                   dist_to_rsu_m=np.array([0.0, 50.0, 120.0]), bandwidth_hz=np.array([150e6, 60e6, 70e6]),
                   compute_flops=np.array([2e12, 1e12, 0.5e12]), xy=np.array([[0, 0], [50, 0], [120, 0.0]]),
                   speed_xy=np.zeros((3, 2)))


def test_evaluate_by_hand():
    p = toy()
    e = evaluate(p, [0, 1, 1, 2])
    # step 1 on RSU: 0 + 0.1 + 0.01; step 2 RSU->helper: 0.3 + 0.2 + 0.02; step 3 helper: 0.22;
    # step 4 helper->user: 0.25 + 0.4 + 0
    np.testing.assert_allclose(e.comm_s, [0, 0.3, 0, 0.25])
    np.testing.assert_allclose(e.step_s, [0.11, 0.52, 0.22, 0.65])
    assert e.total_s == pytest.approx(0.1 + 1.5)
    assert e.feasible
    # first step on the helper receives from the RSU (eq. 4, k = 1)
    assert evaluate(p, [1, 1, 1, 2]).comm_s[0] == 0.3


@pytest.mark.parametrize("plan, reason", [
    ([1, 0, 0, 2], "C1/C2"),  # back to the RSU
    ([2, 1, 1, 2], "C1/C2"),  # leaves the user
    ([0, 0, 0, 1], "local-steps"),
])
def test_constraint_violations(plan, reason):
    assert evaluate(toy(), plan).reason == reason


def test_c3_and_c4():
    assert evaluate(toy(tmax=0.6), [0, 1, 1, 2]).reason == "C3"  # the 0.65 s hand-off step
    # C4: non-user time = 0.1 + 0.11 + 0.52 + 0.22 = 0.95 s > 0.9 s of dwell
    assert evaluate(toy(dwell=0.9), [0, 1, 1, 2]).reason == "C4"
    assert evaluate(toy(dwell=0.95), [0, 1, 1, 2]).feasible


def brute_force(p):
    best = None
    for plan in itertools.product(range(p.n_devices), repeat=p.steps):
        e = evaluate(p, plan)
        if e.feasible and (best is None or e.total_s < best[1] - 1e-12):
            best = (plan, e.total_s)
    return best


def random_problem(rng, n_helpers, K, local):
    V = n_helpers + 2
    comp = rng.uniform(0.02, 0.3, V)
    queue = rng.uniform(0.0, 0.02, V)
    comm = rng.uniform(0.01, 0.4, (V, V))
    np.fill_diagonal(comm, 0.0)
    comm[rng.random((V, V)) < 0.15] = np.inf  # some pairs out of V2V range
    np.fill_diagonal(comm, 0.0)
    return Problem(comp, queue, comm, rng.uniform(0, 0.1), rng.uniform(0.3, 3.0), K, local, rng.uniform(0.25, 0.8),
                   dist_to_rsu_m=rng.uniform(0, 500, V), bandwidth_hz=rng.uniform(50e6, 200e6, V),
                   compute_flops=rng.uniform(0.5e12, 2e12, V), xy=rng.uniform(0, 500, (V, 2)),
                   speed_xy=rng.uniform(-15, 15, (V, 2)))


@pytest.mark.parametrize("seed", range(25))
def test_optimal_matches_brute_force_on_tiny_problems(seed):
    rng = np.random.default_rng(seed)
    p = random_problem(rng, n_helpers=int(rng.integers(0, 3)), K=int(rng.integers(2, 6)), local=int(rng.integers(0, 2)))
    bf = brute_force(p)
    plan = optimal(p)
    if bf is None:
        assert plan is None
    else:
        assert plan is not None
        e = evaluate(p, plan)
        assert e.feasible and e.total_s == pytest.approx(bf[1], abs=1e-12)


@pytest.mark.parametrize("seed", range(40))
def test_optimal_is_never_worse_than_any_policy(seed):
    rng = np.random.default_rng(100 + seed)
    p = random_problem(rng, n_helpers=int(rng.integers(0, 20)), K=int(rng.integers(5, 50)), local=int(rng.integers(1, 5)))
    best = optimal(p)
    best_e = evaluate(p, best) if best is not None else None
    for name, policy in SCHEDULERS.items():
        plan = policy(p, np.random.default_rng(seed))
        if plan is None:
            continue
        e = evaluate(p, plan)
        if e.feasible:
            assert best_e is not None and best_e.feasible, name
            assert best_e.total_s <= e.total_s + 1e-9, name


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_policy_returns_a_well_formed_plan(name):
    """Conformance: every registered policy honours the plan contract on random problems."""
    for seed in range(10):
        rng = np.random.default_rng(seed)
        p = random_problem(rng, n_helpers=int(rng.integers(0, 20)), K=50, local=5)
        plan = SCHEDULERS[name](p, np.random.default_rng(seed))
        if plan is None:
            assert name == "optimal"  # only the exact solver may prove infeasibility
            continue
        assert plan.shape == (50,) and plan.dtype.kind == "i"
        assert ((plan >= 0) & (plan < p.n_devices)).all()
        assert (plan[-5:] == p.user).all()
        e = evaluate(p, plan)
        assert e.reason != "local-steps"
        if name != "sdi":
            assert e.reason != "C1/C2"


def test_no_helpers_rsu_and_user_only():
    # V' = {RSU, user}: the optimum keeps as many steps on the (faster) RSU as T_max and C4 allow
    p = Problem(np.array([0.05, 0.2]), np.zeros(2), np.array([[0.0, 0.3], [np.inf, 0.0]]), 0.0, 10.0, 10, 2, 0.8)
    plan = optimal(p)
    np.testing.assert_array_equal(plan, [0] * 8 + [1] * 2)
    assert evaluate(p, plan).total_s == pytest.approx(8 * 0.05 + 0.3 + 2 * 0.2)
    # with 0.2 s of dwell only 4 RSU steps fit before the hand-off (C4)
    p.user_dwell_s = 0.2
    np.testing.assert_array_equal(optimal(p), [0] * 4 + [1] * 6)


def baseline_world(rsu_queue=0.01, inf_links=()):
    """RSU 0 (most compute, band 150 MHz shared by 10 vehicles = 15 MHz), helpers 1 (nearest the
    RSU), 2 (widest band), 3 (most compute of the vehicles), user 4. Every step fits T_max."""
    comp = np.array([0.05, 0.12, 0.11, 0.08, 0.10])
    queue = np.array([rsu_queue, 0.0, 0.0, 0.0, 0.0])
    comm = np.full((5, 5), 0.1)
    np.fill_diagonal(comm, 0.0)
    comm[1:, 0] = np.inf  # nobody sends to the RSU
    for i, j in inf_links:
        comm[i, j] = np.inf
    return Problem(comp, queue, comm, 0.01, 100.0, 6, 2, 0.5,
                   dist_to_rsu_m=np.array([0.0, 20.0, 150.0, 200.0, 90.0]),
                   bandwidth_hz=np.array([150e6, 55e6, 80e6, 60e6, 70e6]),
                   compute_flops=np.array([2e12, 0.6e12, 0.7e12, 0.95e12, 0.8e12]),
                   xy=np.zeros((5, 2)), speed_xy=np.zeros((5, 2)), rsu_share=10)


def test_every_baseline_differs_from_every_other():
    p = baseline_world()
    plans = {name: tuple(SCHEDULERS[name](p, np.random.default_rng(1))) for name in ("mddi", "mbdi", "mcpdi", "vli", "sdi")}
    assert plans["mddi"] == (1, 1, 1, 1, 4, 4)  # the helper nearest the RSU
    assert plans["mbdi"] == (2, 2, 2, 2, 4, 4)  # 80 MHz beats the RSU's 150/10 = 15 MHz
    assert plans["mcpdi"] == (0, 0, 0, 0, 4, 4)  # the RSU's 2 TFLOP/s
    assert plans["vli"] == (3, 3, 3, 3, 4, 4)  # the fastest vehicle, no RSU
    assert evaluate(p, plans["sdi"]).reason != "C1/C2"  # a random admissible device per step
    names = sorted(plans)
    for a, b in itertools.combinations(names, 2):
        assert plans[a] != plans[b], (a, b)


def test_baselines_fall_back_down_their_ranking():
    # a busy RSU (0.5 s queue: 0.55 s > T_max) -> mcpdi takes its next device, helper 3
    assert tuple(SCHEDULERS["mcpdi"](baseline_world(rsu_queue=0.5), None)) == (3, 3, 3, 3, 4, 4)
    # helper 2 out of range of the RSU (no I2V link) -> mbdi's next, helper 3 (60 MHz; then 1 at
    # 55 MHz, the RSU at 15 MHz); from helper 3, helper 2 is reachable again and ranked first
    assert tuple(SCHEDULERS["mbdi"](baseline_world(inf_links=[(0, 2)]), None)) == (3, 2, 2, 2, 4, 4)
    # nothing ranked can take the step (every helper unreachable): the user takes over at once
    cut = [(0, 1), (0, 2), (0, 3)]
    assert tuple(SCHEDULERS["mddi"](baseline_world(inf_links=cut), None)) == (4,) * 6
