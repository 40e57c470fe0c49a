"""The compiled kernels (cosim.jit, issue 32) against the numpy code they stand for: the same
results bit for bit (prices, follower evaluations counted, Nash gaps, VIDI's sweeps, v and Q, every
plan), on random games and problems and on the recorded grid6 worlds; and the COSIM_JIT switch."""

import numpy as np
import pytest

from cosim import jit, registry
from cosim.errors import CosimError
from cosim.layers.dvit.problem import evaluate
from cosim.layers.dvit.schedulers import VidiOptions, optimal, vidi, vidi_mdp
from cosim.layers.moe.game import Game, SolverConfig, gecpa_evals

numba = pytest.importorskip("numba")  # the numpy path alone is what runs without it

MOE = {name: spec.fn for name, spec in registry.policies("moe").items()}


ENTRY = {"moe": ("fitness", "ascend", "best_response", "follower"), "dvit": ("mdp_build", "mdp_solve", "optimal_plan", "vidi_plan")}


def both(monkeypatch, fn):
    """fn() with the kernels, then with the numpy code; the kernels' entry points are counted
    (each kernel the run needs must have run, and none with COSIM_JIT=off)."""
    from cosim.layers.dvit import kernels as dk
    from cosim.layers.moe import kernels as mk

    calls = []
    for mod, names in ((mk, ENTRY["moe"]), (dk, ENTRY["dvit"])):
        for name in names:
            kernel = getattr(mod, name)
            monkeypatch.setattr(mod, name, lambda *a, _k=kernel, _n=name: calls.append(_n) or _k(*a))
    monkeypatch.setenv("COSIM_JIT", "on")
    a = fn()
    used, n = set(calls), len(calls)
    monkeypatch.setenv("COSIM_JIT", "off")
    b = fn()
    assert len(calls) == n  # no kernel with COSIM_JIT=off
    both.used = used
    return a, b


def test_pairwise_sum_is_numpys_sum():
    from cosim._jitexp import pw_sum

    rng = np.random.default_rng(0)
    for n in list(range(0, 40)) + [63, 64, 65, 127, 128]:
        for _ in range(20):
            row = rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 8, n)
            # a plain left-to-right sum differs from numpy's in the last bits for n >= 8
            assert pw_sum(row, n) == row.sum(), n


def test_exp_is_numpys_exp():
    from cosim._jitexp import probe

    kind = jit.exact_exp()
    assert kind >= 0  # on this machine numpy's exp (SVML or libm) is reproduced
    x = np.random.default_rng(1).uniform(-30, 30, 100_000)
    y = np.exp(np.random.default_rng(2).uniform(-20, 20, x.size))
    ref = np.stack([np.exp(x), np.expm1(x), np.log2(y), y ** (x / 16.0)])
    assert probe(x, y, kind).tobytes() == ref.tobytes()


def games():
    """Random games: 1 to 20 IVs, no substitution to strong substitution, capacities that bind."""
    out = []
    for seed in range(14):
        rng = np.random.default_rng(seed)
        n = [1, 2, 3, 8, 8, 20, 5][seed % 7]
        sigma = [0.0, 0.3, 0.9][seed % 3]
        F = rng.uniform(0.2, 1.0, n) * (0.2 if seed % 4 == 0 else 1.0)
        out.append((rng.uniform(0.01, 0.05, n), F, rng.uniform(5, 20, n), sigma))
    return out


@pytest.mark.parametrize("k", range(len(games())))
def test_moe_solvers_bit_identical(monkeypatch, k):
    W, F, kappa, sigma = games()[k]

    def solve():
        out = []
        for name, fn in MOE.items():
            g = Game(W, F, kappa, sigma=sigma)
            p = fn(g, np.random.default_rng(k), SolverConfig())
            gap = g.nash_gap(np.stack([p, p * 1.07, np.full(g.n, 3.0)]), grid=48, refine=12)
            outcome = g.outcome(p[None])  # what the layer records of the prices (the follower kernel)
            out.append((name, p.tobytes(), g.evals, gap.tobytes(), [v.tobytes() for v in outcome.values()]))
        return out

    kernels, numpy_ = both(monkeypatch, solve)
    assert kernels == numpy_ and both.used == set(ENTRY["moe"])
    # the kernels counted GECPA's evaluations as the numpy code does (= the formula)
    assert kernels[0][0] == "gecpa" and kernels[0][2] == gecpa_evals(len(W), SolverConfig()) + 3 * len(W) * (48 + 2 * 12 + 1) + 3 + 1


def test_best_response_reaches_the_sorted_total(monkeypatch):
    """Best-response iteration starts the follower at candidate totals on a break of its piecewise
    response, where the Newton steps may not settle and the sorted method answers: the kernels
    have it too (the numpy code counts the vectors that need it)."""
    from cosim.layers.moe import game as G

    calls = []
    orig = G.Game._total_sorted
    monkeypatch.setattr(G.Game, "_total_sorted", lambda self, x, F: calls.append(len(x)) or orig(self, x, F))
    rng = np.random.default_rng(0)
    W, F, kappa = rng.uniform(0.01, 0.05, 8), rng.uniform(0.2, 1.0, 8), rng.uniform(5, 20, 8)

    def solve():
        g = Game(W, F, kappa)
        return MOE["best-response"](g, None, SolverConfig()).tobytes(), g.evals

    assert both(monkeypatch, solve)[0] == both(monkeypatch, solve)[1]
    assert sum(calls) > 0


def test_ascend_keeps_the_iterates_bit_identical(monkeypatch):
    from cosim.layers.moe.game import _ascend

    W, F, kappa, _ = games()[3]
    pop = np.exp(np.random.default_rng(3).uniform(-1, 4, (6, len(W))))

    def run():
        g = Game(W, F, kappa)
        return _ascend(g, pop, 7, 0.3, keep=3).tobytes(), _ascend(g, pop, 4, 0.3).tobytes(), g.evals

    kernels, numpy_ = both(monkeypatch, run)
    assert kernels == numpy_ and both.used == {"ascend"} and kernels[2] == (7 + 4) * 3 * pop.size


def dvit_problems():
    from tests.layers.test_dvit_schedulers import random_problem

    out = []
    for seed in range(16):
        rng = np.random.default_rng(700 + seed)
        p = random_problem(rng, n_helpers=int(rng.integers(0, 20)), K=int(rng.integers(5, 50)),
                           local=int(rng.integers(1, 5)))
        if seed % 2:
            p.handoff_bits, p.v2v_range_m, p.cell_offset_m = 16.8e6, 300.0, rng.uniform(0, 25, p.n_devices)
            p.dwell_s = rng.uniform(0.2, 10.0, p.n_devices)
        out.append(p)
    from cosim.conformance import Tables, context, recorded_worlds
    from cosim.layers.dvit.layer import DViTLayer

    _, worlds = recorded_worlds()
    layer = DViTLayer({}, context(Tables()))
    for w in worlds[::7]:
        for u in np.flatnonzero(w.serving >= 0)[::60]:
            p, names = layer.build_problem(w, int(u), int(w.serving[u]), None, 50)
            out.append(p)
            if p.n_devices > 2:  # a re-plan from a helper
                out.append(layer.build_problem(w, int(u), int(w.serving[u]), w.index[names[1]], 45, upload=False)[0])
    return out


def test_dvit_planning_bit_identical(monkeypatch):
    problems = dvit_problems()
    assert len(problems) > 30

    def plan():
        out = []
        for p in problems:
            for opts in (VidiOptions(), VidiOptions(rho=0.97, phi=1e-7, max_iter=40)):
                m = vidi_mdp(p, opts)
                out.append((m.sweeps, m.v.tobytes(), m.Q.tobytes(), vidi(p, None, opts).tobytes()))
            best = optimal(p)
            out.append(None if best is None else best.tobytes())
        return out

    kernels, numpy_ = both(monkeypatch, plan)
    assert kernels == numpy_ and both.used == set(ENTRY["dvit"])


def test_vidi_state_space_no_kernel_builds_runs_the_numpy_set_up(monkeypatch):
    """A floor of the state space that is no integer (here a parked helper whose offset into its
    cell is NaN): mdp_build says so, and vidi_mdp builds the states with numpy and calls mdp_links
    from Python, as before mdp_build — the same sweeps, v, Q and plan as the numpy code."""
    from cosim.layers.dvit import kernels as dk
    from tests.layers.test_dvit_schedulers import random_problem

    problems = []
    for seed in range(6):
        rng = np.random.default_rng(900 + seed)
        p = random_problem(rng, n_helpers=6, K=30, local=3)
        p.speed_xy[2] = 0.0
        p.cell_offset_m = rng.uniform(0, 25, p.n_devices)
        p.cell_offset_m[2] = np.nan
        if seed % 2:
            p.handoff_bits, p.v2v_range_m = 16.8e6, 300.0
        problems.append(p)
    links, calls = dk.mdp_links, []
    monkeypatch.setattr(dk, "mdp_links", lambda *a: calls.append(1) or links(*a))

    def plan():
        with np.errstate(invalid="ignore"):  # numpy's cast of the NaN floor (both ways)
            return [(m.sweeps, m.v.tobytes(), m.Q.tobytes(), vidi(p).tobytes()) for p in problems
                    for m in [vidi_mdp(p)]]

    kernels, numpy_ = both(monkeypatch, plan)
    assert kernels == numpy_ and len(calls) == 2 * len(problems) and "mdp_build" in both.used


def test_vidi_with_a_device_whose_step_never_ends_returns_and_never_uses_it(monkeypatch):
    """A device without compute (step time inf), parked or moving: its advance floor(v T / g')
    was NaN or inf, cast to -2^63, and the numpy value iteration's wrapping gather never
    returned (found in issue 32's fifth pass). Now the plan comes back, never on that device, the
    same with the kernels and the numpy code, its latency finite (evaluate)."""
    from tests.layers.test_dvit_schedulers import random_problem

    problems = []
    for seed in range(4):
        rng = np.random.default_rng(950 + seed)
        p = random_problem(rng, n_helpers=6, K=30, local=3)
        p.comp_s[2] = np.inf
        if seed % 2 == 0:
            p.speed_xy[2] = 0.0  # parked (0 x inf); else moving (inf)
        problems.append(p)

    def plan():
        with np.errstate(invalid="ignore"):
            return [(m.sweeps, m.v.tobytes(), m.Q.tobytes(), vidi(p).tobytes()) for p in problems
                    for m in [vidi_mdp(p)]]

    kernels, numpy_ = both(monkeypatch, plan)
    assert kernels == numpy_
    for p, (_, _, _, raw) in zip(problems, numpy_):
        chosen = np.frombuffer(raw, dtype=np.int64)
        assert 2 not in chosen
        assert np.isfinite(evaluate(p, chosen).total_s)  # (a deadline may still fail: C3)


@pytest.mark.parametrize("jit_mode", ["on", "off"])
def test_an_inconsistent_hand_built_problem_is_refused_before_the_kernels(monkeypatch, jit_mode):
    """comm_s trimmed to fewer devices than comp_s: the kernels (no bounds checks) made a plan out
    of memory past the array; now optimal and vidi refuse it alike, naming the shapes."""
    from tests.layers.test_dvit_schedulers import random_problem

    monkeypatch.setenv("COSIM_JIT", jit_mode)
    p = random_problem(np.random.default_rng(3), n_helpers=6, K=20, local=3)
    p.comm_s = p.comm_s[:6, :6].copy()
    for planner in (optimal, vidi):
        with pytest.raises(ValueError, match=r"comp_s has 8 devices.*comm_s shape \(6, 6\)"):
            planner(p)


def test_switch(monkeypatch):
    monkeypatch.setenv("COSIM_JIT", "off")
    assert not jit.use()
    monkeypatch.setenv("COSIM_JIT", "on")
    assert jit.use()
    monkeypatch.setenv("COSIM_JIT", "fast")
    with pytest.raises(CosimError, match="COSIM_JIT='fast': expected one of auto, on, off"):
        jit.use()
    # numba missing: auto runs the numpy code, on is an error that says what to install
    monkeypatch.setitem(jit._state, "numba", False)
    monkeypatch.setenv("COSIM_JIT", "auto")
    assert not jit.use()
    monkeypatch.setenv("COSIM_JIT", "on")
    with pytest.raises(CosimError, match="pip install numba"):
        jit.use()


def test_without_numba_the_numpy_code_runs(monkeypatch):
    """With numba reported missing no kernel is called (they would raise here)."""
    from cosim.layers.dvit import kernels as dk
    from cosim.layers.moe import kernels as mk

    monkeypatch.setitem(jit._state, "numba", False)
    monkeypatch.setenv("COSIM_JIT", "auto")
    for mod in (mk, dk):
        for name in dir(mod):
            if hasattr(getattr(mod, name), "py_func"):
                monkeypatch.setattr(mod, name, None)
    g = Game(*games()[4][:3])
    assert MOE["gecpa"](g, np.random.default_rng(0), SolverConfig()).shape == (g.n,)
    p = dvit_problems()[1]
    assert vidi(p).shape == (p.steps,)


def test_a_signal_during_a_compiled_kernel_stops_the_run_not_the_policy(tmp_path):
    """A signal whose handler raises while a numba kernel runs surfaces when the kernel returns,
    as numba's SystemError around the interrupt: the layer must pass the interrupt on (the run
    stops, terminated) instead of dropping the policy as failed (seen under load: SIGTERM in
    VIDI's mdp_solve dropped VIDI and the run went on to exit 0)."""
    numba = pytest.importorskip("numba")
    import os
    import signal
    import subprocess
    import time
    import types

    from cosim.engine.signals import raise_terminated
    from cosim.errors import Terminated
    from cosim.layers.base import Layer

    @numba.njit(cache=False)
    def spin(n):  # returns arrays, as the kernels do: boxing them runs the pending signal's handler
        x = 0.0
        for i in range(n):
            x += (i % 7) * 1e-9
        out = np.zeros(3)
        out[0] = x
        return out, np.ones(2)

    spin(10)  # compiled before the clock starts

    def policy(n, rng, opts):
        return spin(n)

    fake = types.SimpleNamespace(policies={"p": types.SimpleNamespace(spec=types.SimpleNamespace(fn=policy), options=None)},
                                 policy_inputs=None, name="probe")
    old = signal.signal(signal.SIGTERM, raise_terminated)
    sent = tmp_path / "sent"  # when the SIGTERM went (the epoch, in ns), written by the killer
    killer = subprocess.Popen(["sh", "-c", f"sleep 0.3; kill -TERM {os.getpid()}; date +%s%N > {sent}"])
    try:
        with pytest.raises(Terminated):
            Layer.call(fake, "p", 2_000_000_000)  # ~3 s of compiled work: the SIGTERM lands inside it
        returned = time.time_ns()
    finally:
        killer.wait()
        signal.signal(signal.SIGTERM, old)
    # inside it: sent before the kernel returned (else the handler raised after it, not through it)
    assert int(sent.read_text()) < returned


@pytest.mark.parametrize("policies,loads", [(["mddi", "mbdi", "mcpdi", "vli", "sdi"], False), (["vidi"], True)])
def test_numba_is_imported_only_where_a_policy_calls_a_kernel(tmp_path, policies, loads):
    """numba's start (~0.35 s of CPU a process, docs/performance.md) is paid only by a run whose
    policies call a kernel: the five baselines plan without it, VIDI loads it (a fresh process
    replaying the bundled grid6 trace (t = 181-210 s) with the DViT layer)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = (
        "import sys\n"
        "from cosim.cli import main\n"
        f"sys.argv = ['cosim', 'replay', {str(root / 'cosim/data/conformance/grid6_trace.parquet')!r}, '--scenario', "
        f"{str(root / 'scenarios/grid6.toml')!r}, '--end', '210', '--out', {str(tmp_path / 'out')!r}, '-q', "
        f"'--no-coverage', '--set', 'layers.dvit.policies={json.dumps(policies)}']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('numba' in sys.modules)\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "COSIM_JIT"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str(loads)
    tasks = __import__("pandas").read_parquet(tmp_path / "out" / "dvit_tasks.parquet")
    assert set(tasks["policy"]) == set(policies) and len(tasks) >= 5 * len(policies)  # they planned


@pytest.mark.parametrize("k", range(len(games())))
def test_outcome_by_the_follower_kernel_bit_identical(monkeypatch, k):
    """Game.outcome (the layer's f, utilities and declines of a policy's prices; issue 32, fourth
    pass) with the follower kernel and with the numpy code: the same bytes and the same count of
    follower evaluations, on one and on several price vectors (a batch's rows: the single calls') — at the uniform price, capacities
    binding (cheap prices), priced out (every price above what the TV values), mixed."""
    from cosim.layers.moe import kernels as mk

    W, F, kappa, sigma = games()[k]
    ran = []
    kernel = mk.follower
    monkeypatch.setattr(mk, "follower", lambda *a: ran.append(1) or kernel(*a))

    def outcomes():
        g = Game(W, F, kappa, sigma=sigma)
        rng = np.random.default_rng(k)
        p = np.stack([np.full(g.n, 10.0), np.full(g.n, g.p_min), np.full(g.n, g.p_max),
                      np.exp(rng.uniform(np.log(g.p_min), np.log(g.p_max), g.n))])
        out = [g.outcome(p[i:i + 1]) for i in range(len(p))] + [g.outcome(p)]
        for i in range(len(p)):  # a batch's rows are the single calls' (the layer batches a game's policies)
            assert all(out[i][key].tobytes() == out[-1][key][i:i + 1].tobytes() for key in out[i])
        return [{key: v.tobytes() for key, v in o.items()} for o in out], g.evals

    monkeypatch.setenv("COSIM_JIT", "on")
    kernels = outcomes()
    assert len(ran) == 5
    monkeypatch.setenv("COSIM_JIT", "off")
    assert outcomes() == kernels and len(ran) == 5
    declined = [np.frombuffer(o["declined"], dtype=bool) for o in kernels[0]]
    assert declined[2].all() and not declined[0].any()  # p_max: the TV buys nothing; 10: it buys


def test_outcome_of_prices_that_are_not_finite_is_numpys(monkeypatch):
    """A NaN or infinite price (a plugin's) takes the numpy code, kernels on or off: np.clip keeps
    the NaN the follower kernel's clip would turn into 0 (review of the fourth pass)."""
    from cosim.layers.moe import kernels as mk

    W, F, kappa, sigma = games()[0]
    ran = []
    kernel = mk.follower
    monkeypatch.setattr(mk, "follower", lambda *a: ran.append(1) or kernel(*a))

    def outcome():
        g = Game(W, F, kappa, sigma=sigma)
        p = np.stack([np.full(g.n, 10.0), np.full(g.n, 10.0), np.full(g.n, 10.0)])
        p[0, 0], p[1, -1], p[2, 0] = np.nan, np.inf, -np.inf
        with np.errstate(invalid="ignore"):  # inf - inf, 0 * inf: numpy warns
            return {key: v.tobytes() for key, v in g.outcome(p).items()}, g.outcome(p[:1])["f"], g.evals

    monkeypatch.setenv("COSIM_JIT", "on")
    kernels = outcome()
    assert not ran and np.isnan(kernels[1]).all()  # numpy's: S and every f NaN
    monkeypatch.setenv("COSIM_JIT", "off")
    numpy_ = outcome()
    assert kernels[0] == numpy_[0] and kernels[2] == numpy_[2] == 4
