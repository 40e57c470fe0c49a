import dataclasses
import itertools

import numpy as np
import pytest

from cosim.layers.dvit.problem import Problem, evaluate
from cosim import registry
from cosim.layers.dvit.schedulers import available_bandwidth, optimal

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



def test_violation_in_python_says_what_the_numpy_rule_says():
    """Problem.violation checks a plan over the problem's devices step by step in Python; the
    numpy test over _allowed's matrix (_violation_arrays, the code it replaced) is the
    independent answer: every plan of 4 steps over 1-4 devices, and 3,000 random 12-step plans
    biased towards the admissible (runs of one device), give the same phrase or None. A device
    outside the problem still goes to numpy's indexing (an error, as before)."""
    rng = np.random.default_rng(5)
    checked = found = 0
    for V in (1, 2, 3, 4):
        for steps, local in ((4, 1), (4, 2), (12, 3)):
            p = toy(K=steps, local=local)
            p = dataclasses.replace(p, comp_s=np.zeros(V), queue_s=np.zeros(V), comm_s=np.zeros((V, V)))
            plans = list(itertools.product(range(V), repeat=steps)) if steps == 4 else \
                [np.minimum.accumulate(rng.integers(0, V, steps)[::-1])[::-1].tolist() if i % 2 else
                 np.sort(rng.integers(0, V, steps)).tolist() for i in range(1500)]
            for plan in plans:
                want = p._violation_arrays(np.asarray(plan, dtype=np.int64))
                assert p.violation(list(plan)) == want and p.violation(np.array(plan)) == want, (V, plan)
                checked += 1
                found += want is not None
    assert checked > 3000 and 0 < found < checked
    p = toy()
    assert p.violation([0, 1, 1, 2]) is None and p.violation([]) is None
    assert p.violation([0, 0, 1, 0]) == "breaks C1/C2 at step 4: device 1 -> 0"
    assert p.violation([0, 2, 1, 2]) == "breaks C1/C2 at step 3: device 2 -> 1"
    assert p.violation([0, 1, 1, 1]) == "does not run its last 1 steps on the user (device 2)"
    with pytest.raises(IndexError):
        p.violation([0, 1, 3, 2])

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
            assert name in ("optimal", "optimal-cl")  # only the exact solver may prove infeasibility
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


def baseline_world(rsu_queue=0.01, inf_links=(), rsu_band=40e6):
    """RSU 0 (most compute, band ``rsu_band``: 40 MHz, narrower than any vehicle's, unless
    said), helpers 1 (nearest the RSU), 2 (widest band), 3 (most compute of the vehicles), user
    4. Every step fits T_max. The RSU serves 10 vehicles (``rsu_share``, not applied)."""
    comp = np.array([0.05, 0.12, 0.11, 0.08, 0.10])
    queue = np.array([rsu_queue, 0.0, 0.0, 0.0, 0.0])
    comm = np.full((5, 5), 0.1)
    np.fill_diagonal(comm, 0.0)
    comm[1:, 0] = np.inf  # nobody sends to the RSU
    for i, j in inf_links:
        comm[i, j] = np.inf
    return Problem(comp, queue, comm, 0.01, 100.0, 6, 2, 0.5,
                   dist_to_rsu_m=np.array([0.0, 20.0, 150.0, 200.0, 90.0]),
                   bandwidth_hz=np.array([rsu_band, 55e6, 80e6, 60e6, 70e6]),
                   compute_flops=np.array([2e12, 0.6e12, 0.7e12, 0.95e12, 0.8e12]),
                   xy=np.zeros((5, 2)), speed_xy=np.zeros((5, 2)), rsu_share=10)


def test_every_baseline_differs_from_every_other():
    p = baseline_world()
    plans = {name: tuple(SCHEDULERS[name](p, np.random.default_rng(1))) for name in ("mddi", "mbdi", "mcpdi", "vli", "sdi")}
    assert plans["mddi"] == (1, 1, 1, 1, 4, 4)  # the helper nearest the RSU
    assert plans["mbdi"] == (2, 2, 2, 2, 4, 4)  # 80 MHz beats the RSU's 40 MHz
    assert plans["mcpdi"] == (0, 0, 0, 0, 4, 4)  # the RSU's 2 TFLOP/s
    assert plans["vli"] == (3, 3, 3, 3, 4, 4)  # the fastest vehicle, no RSU
    assert evaluate(p, plans["sdi"]).reason != "C1/C2"  # a random admissible device per step
    names = sorted(plans)
    for a, b in itertools.combinations(names, 2):
        assert plans[a] != plans[b], (a, b)


def test_mbdi_ranks_the_rsu_by_its_full_band():
    """One rule with the channel model, which gives every RSU downlink the full w0: the RSU's
    150 MHz beats the widest vehicle's 80 MHz, however many vehicles it serves (rsu_share = 10;
    the old rule ranked it by 150/10 = 15 MHz, last). Here MBDI keeps the steps on the RSU, as
    MCPDI does; with the RSU busy past T_max both fall to their next device — MBDI the widest
    band (helper 2), MCPDI the most compute (helper 3)."""
    p = baseline_world(rsu_band=150e6)
    np.testing.assert_array_equal(available_bandwidth(p), [150e6, 55e6, 80e6, 60e6, 70e6])
    assert tuple(SCHEDULERS["mbdi"](p, None)) == (0, 0, 0, 0, 4, 4) == tuple(SCHEDULERS["mcpdi"](p, None))
    busy = baseline_world(rsu_band=150e6, rsu_queue=0.5)  # 0.55 s on the RSU > T_max = 0.5 s
    assert tuple(SCHEDULERS["mbdi"](busy, None)) == (2, 2, 2, 2, 4, 4)
    assert tuple(SCHEDULERS["mcpdi"](busy, None)) == (3, 3, 3, 3, 4, 4)


def test_baselines_fall_back_down_their_ranking():
    # a busy RSU (0.5 s queue: 0.55 s > T_max) -> mcpdi takes its next device, helper 3
    assert tuple(SCHEDULERS["mcpdi"](baseline_world(rsu_queue=0.5), None)) == (3, 3, 3, 3, 4, 4)
    # helper 2 out of range of the RSU (no I2V link) -> mbdi's next, helper 3 (60 MHz; then 1 at
    # 55 MHz, the RSU at 40 MHz); from helper 3, helper 2 is reachable again and ranked first
    assert tuple(SCHEDULERS["mbdi"](baseline_world(inf_links=[(0, 2)]), None)) == (3, 2, 2, 2, 4, 4)
    # nothing ranked can take the step (every helper unreachable): the user takes over at once
    cut = [(0, 1), (0, 2), (0, 3)]
    assert tuple(SCHEDULERS["mddi"](baseline_world(inf_links=cut), None)) == (4,) * 6


def replan_from_helper():
    """A re-plan from the helper that holds the result (``origin_rsu`` False): device 0 is that
    helper — the nearest the RSU (10 m), the widest band (80 MHz), the most compute (0.05 s a
    step) of the vehicles; helpers 1 and 2, user 3. Every hand-off costs 0.1 s; 8 steps, the
    last 2 on the user. Keeping the result: 6 x 0.05 + 0.1 + 2 x 0.2 = 0.80 s; the best hand-off
    instead (to helper 1): 0.1 + 6 x 0.08 + 0.1 + 0.4 = 1.08 s."""
    comp = np.array([0.05, 0.08, 0.1, 0.2])
    comm = np.full((4, 4), 0.1)
    np.fill_diagonal(comm, 0.0)
    comm[1:, 0] = np.inf  # C1 as the problem has it (device 0's column)
    return Problem(comp, np.zeros(4), comm, 0.0, 100.0, 8, 2, 0.8,
                   dist_to_rsu_m=np.array([10.0, 60.0, 120.0, 200.0]),
                   bandwidth_hz=np.array([80e6, 60e6, 55e6, 70e6]),
                   compute_flops=np.array([1.0e12, 0.65e12, 0.5e12, 0.25e12]),
                   xy=np.array([[10.0, 0], [60, 0], [120, 0], [200, 0]]), speed_xy=np.zeros((4, 2)),
                   rsu_share=30, origin_rsu=False)


def test_a_replan_from_a_helper_may_keep_the_result_on_it():
    p = replan_from_helper()
    from cosim.layers.dvit.problem import HELPER, USER
    np.testing.assert_array_equal(p.kinds(), [HELPER, HELPER, HELPER, USER])  # no RSU in this problem
    keep = np.array([0] * 6 + [3] * 2)
    assert evaluate(p, keep).total_s == pytest.approx(0.80)
    assert evaluate(p, np.array([1] * 6 + [3] * 2)).total_s == pytest.approx(1.08)
    for name in ("optimal", "optimal-cl", "vidi", "mddi", "mbdi", "mcpdi", "vli"):
        # each one's rule ranks the holder first (or, optimal and VIDI, keeping is cheapest)
        np.testing.assert_array_equal(SCHEDULERS[name](p, None), keep, err_msg=name)
    # SDI's first device is uniform over all devices: the holder among them
    firsts = {int(SCHEDULERS["sdi"](p, np.random.default_rng(s))[0]) for s in range(40)}
    assert firsts == {0, 1, 2, 3}
    # the same problem labelled as a request's (device 0 the RSU): MDDI ranks helpers only and
    # VLI vehicles only, so neither may keep it there — what the re-plan used to do
    as_rsu = dataclasses.replace(p, origin_rsu=True)
    assert SCHEDULERS["mddi"](as_rsu, None)[0] == 1 and SCHEDULERS["vli"](as_rsu, None)[0] == 1


class _Fixed:
    """A stand-in generator whose ``random(n)`` returns ``n`` copies of one number."""

    def __init__(self, u):
        self.u = u

    def random(self, n):
        return np.full(n, self.u)


def test_sdi_never_draws_a_device_it_has_no_link_to():
    """Helper 2 is admissible (C1/C2) from every device but out of range of all (no finite
    hand-off into it): SDI draws among the linked devices only, at step 1 too. By hand, every
    draw u = 0.5: step 1 from the RSU among its links [0, 1, 3, 4] -> index int(0.5 * 4) = 2 ->
    helper 3; then from helper 3 among [1, 3, 4] -> index 1 -> 3 again; the last 2 steps on the
    user. (Drawing among all five devices, int(0.5 * 5) = 2 is the unlinked helper 2.)"""
    p = baseline_world(inf_links=[(i, 2) for i in (0, 1, 3, 4)])
    np.testing.assert_array_equal(SCHEDULERS["sdi"](p, _Fixed(0.5)), [3, 3, 3, 3, 4, 4])
    # u = 0.1: step 1 -> index 0 of [0, 1, 3, 4] = the RSU; from the RSU again index 0 -> RSU
    np.testing.assert_array_equal(SCHEDULERS["sdi"](p, _Fixed(0.1)), [0, 0, 0, 0, 4, 4])
    seen = set()
    for seed in range(300):
        plan = SCHEDULERS["sdi"](p, np.random.default_rng(seed))
        assert 2 not in plan.tolist(), seed
        assert evaluate(p, plan).reason not in ("no-link", "C1/C2"), seed
        seen.update(plan.tolist())
    assert seen == {0, 1, 3, 4}  # every linked device is drawn
    # with every link there, device 2 is drawn as often as the others at step 1 (uniform over 5)
    full = baseline_world()
    firsts = [int(SCHEDULERS["sdi"](full, np.random.default_rng(s))[0]) for s in range(2000)]
    counts = np.bincount(firsts, minlength=5)
    assert counts.min() > 0.8 * 2000 / 5 and counts.max() < 1.2 * 2000 / 5


# -- VIDI (Algorithm 1) on hand-worked MDPs -------------------------------------------------------
from cosim.layers.dvit.schedulers import VidiOptions, vidi, vidi_mdp  # noqa: E402

INF = np.inf


def three_device_mdp(helper_step=0.1, **kw):
    """RSU 0 (0.15 s a step), helper 1 at x = 10 m driving +x at 20 m/s (0.1 s), user 2 parked
    at x = 50 m (0.2 s); hand-offs RSU->helper 0.1 s, RSU->user 0.3 s, helper->user 0.05 s.
    K = 10 with 2 local steps. The helper passes 20 m in 10 of its steps: H' holds its cells 0
    and 1 (25 m); one of its steps moves it 2 m, so from either cell it stays or moves on, 1/2
    each (eq. 17)."""
    comm = np.array([[0.0, 0.1, 0.3], [INF, 0.0, 0.05], [INF, INF, 0.0]])
    args = dict(xy=np.array([[0.0, 0], [10, 0], [50, 0]]), speed_xy=np.array([[0.0, 0], [20, 0], [0, 0]]))
    args.update(kw)
    return Problem(np.array([0.15, helper_step, 0.2]), np.zeros(3), comm, 0.0, 100.0, 10, 2, 1.0, **args)


def test_vidi_value_iteration_fixed_point_by_hand():
    p = three_device_mdp()
    m = vidi_mdp(p, VidiOptions(rho=0.9, phi=1e-10))
    assert list(zip(m.dev.tolist(), m.cell.tolist())) == [(0, 0), (1, 0), (1, 1), (2, 0)]
    np.testing.assert_allclose(m.F, [[0.15, 0.2, 0.5], [INF, 0.1, 0.25], [INF, 0.1, 0.25], [INF, INF, 0.2]])
    # successors: (1,0) -> {(1,0), (1,1)}, (1,1) -> {(1,1)}, RSU -> helper lands in {(1,0), (1,1)}
    assert m.succ[:, 1, 1].tolist() == [1, 2] and m.succ[:, 2, 1].tolist() == [2, 2]
    assert m.succ[:, 0, 1].tolist() == [1, 2] and m.succ[:, 0, 2].tolist() == [3, 3]
    # Bellman by hand, rho = 0.9: v(user) = 0.2 / 0.1 = 2; the helper keeps the task:
    # 0.1 / 0.1 = 1 (handing over costs 0.25 + 0.9 * 2 = 2.05); the RSU hands it to the helper:
    # 0.2 + 0.9 * 1 = 1.1 (keeping it for good: 0.15 / 0.1 = 1.5; to the user: 0.5 + 1.8 = 2.3);
    # Q(RSU, keep) = 0.15 + 0.9 v(RSU) = 1.14
    np.testing.assert_allclose(m.v, [1.1, 1.0, 1.0, 2.0], atol=1e-8)
    np.testing.assert_allclose(m.Q[0], [1.14, 1.1, 2.3], atol=1e-8)
    np.testing.assert_array_equal(vidi(p), [1] * 8 + [2] * 2)


def test_vidi_fixed_point_with_hand_offs_priced_at_the_next_cell():
    """A slow helper (0.25 s); hand-offs priced by eq. (3) where the helper will be: its cell 1
    is centred at x = 10 + 37.5 = 47.5 m, 2.5 m from the user instead of 40 m. Today's hand-off
    (0.05 s at 60 MHz: 16.8 Mbit -> 5.6 bit/s/Hz, SNR 2^5.6 - 1) gains (40 / 2.5)^1.77 in SNR."""
    p = three_device_mdp(helper_step=0.25, bandwidth_hz=np.array([150e6, 60e6, 60e6]), handoff_bits=16.8e6)
    m = vidi_mdp(p, VidiOptions(rho=0.9, phi=1e-10, horizon_cells=2))  # H': cells 0 and 1 (the last absorbs)
    se0 = 16.8e6 / (0.05 * 60e6)
    f11 = 0.05 * se0 / np.log2(1 + (2 ** se0 - 1) * (40 / 2.5) ** 1.77) + 0.2
    assert m.F[2, 2] == pytest.approx(f11) and m.F[1, 2] == pytest.approx(0.25)  # from cell 0: today's
    # by hand: v(1,1) = min(keep 0.25 / 0.1, hand over f11 + 0.9 * 2); v(1,0) = min(hand over
    # 0.25 + 1.8, keep x = 0.25 + 0.45 x + 0.45 v(1,1)); v(RSU) = min(keep 1.5, helper
    # 0.1 + 0.25 + 0.45 (v(1,0) + v(1,1)), user 2.3)
    v11 = min(2.5, f11 + 1.8)
    v10 = min(2.05, (0.25 + 0.45 * v11) / 0.55)
    v0 = min(1.5, 0.35 + 0.45 * (v10 + v11), 2.3)
    np.testing.assert_allclose(m.v, [v0, v10, v11, 2.0], atol=1e-8)
    assert (v0, v10) == (1.5, 2.05) and v11 < 2.05  # the hand-off from cell 1 is the cheaper one
    np.testing.assert_array_equal(vidi(p, None, VidiOptions(horizon_cells=2)), [0] * 8 + [2] * 2)


def mobility_world(still=False):
    """RSU 0 busy (0.3 s), helper A = 1 fast (0.08 s) 50 m beyond the user and driving away at
    30 m/s (out of coverage in 1 s), helper B = 2 (0.1 s) parked 40 m on the other side of the
    user, user 3 (0.2 s) at x = 100 m. V2V range 150 m. Over 45 steps on A (3.6 s) A would be
    258 m away: out of range of the user and of B (no relay either)."""
    comm = np.array([[0.0, 0.05, 0.05, 0.05], [INF, 0.0, 0.03, 0.05], [INF, 0.03, 0.0, 0.04], [INF, INF, INF, 0.0]])
    vel = np.zeros((4, 2)) if still else np.array([[0.0, 0], [30, 0], [0, 0], [0, 0]])
    return Problem(np.array([0.3, 0.08, 0.1, 0.2]), np.zeros(4), comm, 0.01, 100.0, 50, 5, 0.8,
                   dist_to_rsu_m=np.array([0.0, 150, 60, 100]), bandwidth_hz=np.array([150e6, 60e6, 60e6, 60e6]),
                   compute_flops=np.array([0.2e12, 0.7e12, 0.5e12, 0.3e12]),
                   xy=np.array([[0.0, 0], [150, 0], [60, 0], [100, 0]]), speed_xy=vel,
                   dwell_s=np.array([INF, 1.0, 600, 600]), handoff_bits=16.8e6, v2v_range_m=150.0)


def test_mobility_changes_vidis_decision():
    # parked, A is the best helper (0.08 s a step) and VIDI (like optimal) keeps the task on it
    still = mobility_world(still=True)
    np.testing.assert_array_equal(vidi(still), [1] * 45 + [3] * 5)
    assert optimal(still)[0] == 1
    # moving, A's cell 4 (x = 262.5 m, reached at 3.33 s) is out of V2V range of the user (and
    # of B): the result could not reach the user after step 42, so VIDI takes B
    moving = mobility_world()
    np.testing.assert_array_equal(vidi(moving), [2] * 45 + [3] * 5)
    m = vidi_mdp(moving)
    s = m.state_at(1, 3.4)
    assert m.cell[s] == 4 and np.isinf(m.F[s, 3])
    assert np.isfinite(m.F[m.state_at(1, 3.2), 3])


def plain_value_iteration(m, rho, phi, max_iter):
    """Algorithm 1's lines 1-8 written out, one stop test per sweep: the reference for the
    blocked sweeps of vidi_mdp."""
    S = len(m.dev)
    F = np.where(np.isfinite(m.F), m.F, 1e9)
    n1, n2 = m.succ[0][np.arange(S), m.dev], m.succ[1][np.arange(S), m.dev]
    v = np.zeros(S)
    for sweep in range(1, max_iter + 1):
        W = (v[n1] + v[n2]) * (0.5 * rho)
        new = (F + W[m.recv]).min(axis=1)
        done = np.abs(new - v).max() <= phi
        v = new
        if done:
            break
    return sweep, v


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("rho, phi, max_iter, capped", [
    (0.9, 1e-4, 1000, False), (0.5, 1e-9, 1000, False), (0.97, 1e-6, 1000, False),
    (0.9, 1e-4, 1, True), (0.9, 1e-4, 17, True), (0.95, 1e-12, 90, True)])
def test_vidi_sweeps_blocked_equal_one_stop_test_per_sweep(seed, rho, phi, max_iter, capped):
    """The value iteration tests its stop rule over blocks of sweeps (fewer numpy calls): the
    sweeps counted and v must be those of a stop test after every sweep, bit for bit, also when
    max_iter ends it first."""
    rng = np.random.default_rng(500 + seed)
    p = random_problem(rng, n_helpers=int(rng.integers(0, 20)), K=int(rng.integers(5, 50)), local=int(rng.integers(1, 5)))
    p.handoff_bits, p.cell_offset_m = 16.8e6, rng.uniform(0, 25, p.n_devices)
    m = vidi_mdp(p, VidiOptions(rho=rho, phi=phi, max_iter=max_iter))
    sweeps, v = plain_value_iteration(m, rho, phi, max_iter)
    assert m.sweeps == sweeps and v.tobytes() == m.v.tobytes()
    assert capped == (sweeps == max_iter)  # ended by max_iter, or converged before


def test_vidi_respects_c4_with_a_short_dwell():
    """The issue's toy: a fast RSU (0.03 s) and 0.5 s of dwell. Keeping the 45 steps on the RSU
    breaks C4; VIDI hands over in time, like optimal (15 RSU steps: 0.01 + 15 * 0.03 = 0.46 s)."""
    p = Problem(np.array([0.03, 0.1]), np.zeros(2), np.array([[0.0, 0.05], [INF, 0.0]]), 0.01, 0.5, 50, 5, 0.8)
    plan = vidi(p)
    assert evaluate(p, plan).feasible
    np.testing.assert_array_equal(plan, [0] * 16 + [1] * 34)
    np.testing.assert_array_equal(optimal(p), [0] * 16 + [1] * 34)


@pytest.mark.parametrize("seed", range(20))
def test_optimal_is_never_worse_than_any_policy_with_mobility(seed):
    """The same property with everything VIDI looks at: hand-offs priced at future positions,
    V2V range, per-device dwell. Every plan is judged on the planning snapshot (evaluate)."""
    rng = np.random.default_rng(500 + seed)
    p = random_problem(rng, n_helpers=int(rng.integers(0, 20)), K=int(rng.integers(5, 50)), local=int(rng.integers(1, 5)))
    p.handoff_bits, p.v2v_range_m = 16.8e6, 300.0
    p.bandwidth_hz = rng.uniform(50e6, 80e6, p.n_devices)
    p.dwell_s = rng.uniform(0.2, 10.0, p.n_devices)
    best = optimal(p)
    for name, policy in SCHEDULERS.items():
        plan = policy(p, np.random.default_rng(seed))
        if plan is not None and evaluate(p, plan).feasible:
            assert best is not None and evaluate(p, best).total_s <= evaluate(p, plan).total_s + 1e-9, name


def test_optimal_is_never_worse_on_recorded_traffic():
    """On the recorded grid6 worlds (conformance data, no SUMO): requests and re-plans built by
    the layer, every policy's plan judged on the snapshot."""
    from cosim.conformance import Tables as _Tables, context as _ctx, recorded_worlds
    from cosim.layers.dvit.layer import DViTLayer

    _, worlds = recorded_worlds()
    layer = DViTLayer({}, _ctx(_Tables()))
    n = 0
    for w in worlds[::5]:
        for u in np.flatnonzero(w.serving >= 0)[::40]:
            p = layer.build_problem(w, int(u), int(w.serving[u]), None, 50)[0]
            best = optimal(p)
            for name, policy in SCHEDULERS.items():
                plan = policy(p, np.random.default_rng(0))
                if plan is not None and evaluate(p, plan).feasible:
                    n += 1
                    assert evaluate(p, best).total_s <= evaluate(p, plan).total_s + 1e-9, name
    assert n > 50


def test_vidi_relays_through_a_helper_when_the_rsus_downlink_to_the_user_is_too_slow():
    """RSU 0 (0.3 s a step) the fastest; its hand-off to the far user takes 0.6 s + the user's
    0.4 s step = 1.0 s > T_max, a helper next to the user hands over in 0.05 + 0.4 s. Like
    optimal, VIDI keeps the steps on the RSU and relays the last non-local one through the helper."""
    comm = np.array([[0.0, 0.1, 0.6], [INF, 0.0, 0.05], [INF, INF, 0.0]])
    p = Problem(np.array([0.3, 0.5, 0.4]), np.zeros(3), comm, 0.01, 100.0, 10, 2, 0.8)
    want = [0] * 7 + [1] + [2] * 2
    np.testing.assert_array_equal(optimal(p), want)
    np.testing.assert_array_equal(vidi(p), want)
    assert evaluate(p, vidi(p)).feasible
