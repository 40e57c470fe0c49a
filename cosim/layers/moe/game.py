"""The Stackelberg compute-pricing game between infrastructure vehicles (IVs, leaders) and the
task vehicle (TV, follower), and the solvers that price it. **Our formulation**: the MoE paper
(001) publishes only its abstract, which names the game and GECPA but gives no equations.

One task routes expert work W_i [TFLOP] to IV i. Each IV announces a unit price p_i for compute;
the TV buys f_i [TFLOP/s] from each (then computes its experts' work in W_i / f_i seconds).

**Follower** (linear-quadratic, substitutes). The TV values compute with diminishing returns and
treats IVs as partial substitutes (physical gating can shift tokens between experts):

    U_TV(f) = sum_i a_i f_i - beta/2 sum_i f_i^2 - gamma/2 sum_{i != j} f_i f_j - sum_i p_i f_i,

a_i = v W_i / mean(W) (compute is worth more where more work is routed), beta = v / F_sat,
gamma = sigma * beta (0 <= sigma < 1: substitutability). Its best response maximises U_TV over
the box 0 <= f_i <= F_i (F_i: what IV i has free), a strictly concave QP whose KKT conditions
give f_i = clip((a_i - p_i - gamma S) / (beta - gamma), 0, F_i) with S = sum_j f_j — one scalar
equation for S, solved exactly (:meth:`Game.follower`). When a capacity binds, the TV buys
more from the other IVs (not the clipped unconstrained purchase). Buying nothing is always
possible, so U_TV >= 0 at the best response.

**Leaders.** U_i = p_i f_i - kappa_i f_i^2 (revenue minus energy). Raising one's price shifts
the TV's demand to the other IVs: prices compete.

**Exact equilibrium where no constraint binds.** Every IV's first-order condition reads
p_i = f_i (1 + 2 kappa_i s) / s with s = (1 - g_N) / (beta - gamma) = -df_i/dp_i, so the Nash
equilibrium solves one linear system: (M + diag((1 + 2 kappa s) / s)) f = a, p = diag(...) f.
:func:`exact_equilibrium` returns it (an independent check of the solvers, tested); when
capacities or non-negativity bind, the solvers below are the general method.

**Nash gap** of a price vector: max_i [max_q U_i(q, p_-i) - U_i(p)] (0 at an equilibrium), the
inner maximum on a log-spaced grid refined by golden-section search, vectorised.

**Solvers** (registered with :func:`cosim.register_policy` on layer ``moe``, as a plugin's are:
called ``solver(game, rng, options) -> prices`` of shape ``(game.n,)`` in [p_min, p_max]; the
trait ``link_aware=False`` places experts on the nearest vehicles with plain gating), vectorised over a population of price vectors (numpy, shape (B, N)):

* ``gecpa`` — gradient ascent + evolutionary optimisation: each generation every IV takes
  damped Newton-scaled gradient steps on its own utility (simultaneous play, in log-price), then the
  population is ranked by Nash gap, the best quarter kept and the rest bred (tournament
  selection, uniform crossover, log-normal mutation);
* ``gradient`` — gradient play alone from the uniform price, returning its best iterate by
  GECPA's own criterion (every iterate scored); ``evolutionary`` — the evolutionary loop
  alone; both run until they have spent GECPA's follower evaluations (``budget``; the game
  counts them: :attr:`Game.evals`, :func:`gecpa_evals`);
* ``best-response`` — sequential best-response iteration, each IV's best price exact
  (:func:`_best_price`), GECPA's budget as a cap: the strongest plain baseline;
* ``random`` — IV i's price uniform on [p_min, a_i] (the prices at which the TV would buy from
  it at all); ``uniform`` — one fixed price for all; ``nearest`` — the fixed price, on the
  nearest vehicles with plain gating (these three do not search: no follower evaluation).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import numpy as np

from cosim import jit
from cosim.config import option
from cosim.registry import register_policy


#: Newton steps of the follower before the sorting method takes over (see Game.follower)
_NEWTON = 12


@dataclass(frozen=True)
class Game:
    W: np.ndarray  # (N,) expert work routed to each IV [TFLOP]
    F: np.ndarray  # (N,) IV compute capacity [TFLOP/s]
    kappa: np.ndarray  # (N,) energy coefficient
    value: float = 20.0  # v
    f_sat: float = 2.0  # F_sat [TFLOP/s]
    sigma: float = 0.3  # substitutability
    p_min: float = 1e-2
    p_max: float = 1e3

    def __post_init__(self) -> None:  # derived constants, computed once (the solvers call follower ~1e4 times)
        n = len(self.W)
        a = self.value * self.W / max(float(np.mean(self.W)), 1e-300) if n else self.W
        beta = self.value / self.f_sat
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "beta", beta)
        object.__setattr__(self, "gamma", self.sigma * beta)
        object.__setattr__(self, "_evals", [0])

    @property
    def evals(self) -> int:
        """Follower evaluations so far: one per price vector whose best response was computed
        (the unit of the solvers' budgets)."""
        return self._evals[0]

    def _count(self, p: np.ndarray) -> None:
        self._evals[0] += int(np.prod(p.shape[:-1])) if p.ndim > 1 else 1

    @property
    def n(self) -> int:
        return len(self.W)

    def view(self) -> "Game":
        """A shallow copy with its own :attr:`evals` counter, for one policy: policies that see the
        same free capacity share one game (the layer's ``submit``), each prices its own view — the
        evaluations it counts, attributes it sets on it and what it rebinds stay its own, whichever
        other policies run (issue 32, review of the fourth pass). Its arrays (W, F, kappa, a) are
        read-only views of the shared game's: a policy that writes into one raises (ValueError),
        which the layer reports as that policy's failure and drops it, leaving the other policies'
        games untouched (third review of the deal). The kernels' operands (``_ops``) stay the
        shared game's writable arrays, so the compiled signatures are the same whatever the view."""
        _jit(self)  # the kernels' operands, made once on the shared game, go with every view
        view = copy.copy(self)
        object.__setattr__(view, "_evals", [0])
        for name in ("W", "F", "kappa", "a"):
            x = getattr(self, name)
            if isinstance(x, np.ndarray):
                v = x.view()
                v.flags.writeable = False
                object.__setattr__(view, name, v)
        return view

    def follower(self, p: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        """The TV's best response f (same shape as ``p``, last axis = IVs): the maximiser of
        U_TV over the box 0 <= f <= F (a strictly concave QP), not a clipped unconstrained one.

        KKT with M = (beta - gamma) I + gamma 11^T: every IV gets f_i = clip((x_i - gamma S) / d,
        0, F_i) with x = a - p, d = beta - gamma and S = sum_j f_j, so S solves the scalar
        equation g(S) = S - sum_i clip((x_i - gamma S) / d, 0, F_i) = 0; g rises, piecewise
        linearly, from g(0) <= 0 to g(sum F) >= 0, with breaks where an IV reaches its capacity
        or stops buying. On the piece through S the root is (d U + X) / (d + gamma m) (U: the
        capacities of the capped IVs, X and m: the sum of x and the number of the free ones), so
        a Newton step lands on it exactly once S is on the right piece: a few steps, bracketed
        (bisection where a step leaves the bracket), vectorised; a vector not settled after
        ``_NEWTON`` steps (none in practice) is solved by :meth:`_total_sorted`. ``start``: a
        guess of S (..., 1), e.g. the total at nearby prices. A capped IV makes the TV buy *more*
        from its substitutes."""
        self._count(p)
        x = self.a - p
        F = np.broadcast_to(self.F, x.shape)
        return np.clip((x - self.gamma * self._total(x, F, start)) / (self.beta - self.gamma), 0.0, F)

    def _total(self, x: np.ndarray, F: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        """S, the total bought, for x = a - p (..., N): bracketed Newton from ``start`` (..., 1)
        (default 0), see :meth:`follower`."""
        d, gm = self.beta - self.gamma, self.gamma
        if gm <= 1e-12 * d:  # no substitution (sigma = 0): the IVs decouple, S does not matter
            return np.zeros(x.shape[:-1] + (1,))
        lo = np.zeros(x.shape[:-1] + (1,))
        hi = F.sum(axis=-1, keepdims=True)
        S = lo if start is None else np.clip(np.broadcast_to(start, lo.shape), lo, hi)
        done = np.zeros(lo.shape, dtype=bool)
        dF = d * F
        for _ in range(_NEWTON):
            r = x - gm * S
            free = (r > 0) & (r < dF)
            m = free.sum(axis=-1, keepdims=True)
            nxt = (d * np.where(r >= dF, F, 0.0).sum(axis=-1, keepdims=True)
                   + np.where(free, x, 0.0).sum(axis=-1, keepdims=True)) / (d + gm * m)
            done = nxt == S
            if done.all():
                return S
            up = nxt > S  # g(S) < 0: the root is above S
            lo = np.where(up, S, lo)
            hi = np.where(up, hi, S)
            S = np.where(done, S, np.where((nxt > lo) & (nxt < hi), nxt, 0.5 * (lo + hi)))
        rows = ~done[..., 0]
        S = S.copy()
        S[rows] = self._total_sorted(x[rows], F[rows])
        return S

    def _total_sorted(self, x: np.ndarray, F: np.ndarray) -> np.ndarray:
        """The same total by sorting the 2N breaks and summing along them (prefix sums):
        the segment holding the root, and the root, in closed form; O(N log N), no iteration."""
        d, gm = self.beta - self.gamma, self.gamma
        lo = (x - d * F) / gm  # below it IV i sells its capacity
        hi = x / gm  # above it IV i sells nothing
        br = np.concatenate([lo, hi], axis=-1)
        # crossing a break: (change of the capped sum U, of the free IVs' sum of x, of their count)
        dU = np.concatenate([-F, np.zeros_like(F)], axis=-1)
        dX = np.concatenate([x, -x], axis=-1)
        dn = np.concatenate([np.ones_like(x), -np.ones_like(x)], axis=-1)
        order = np.argsort(br, axis=-1, kind="stable")
        br = np.take_along_axis(br, order, axis=-1)
        U0 = F.sum(axis=-1, keepdims=True)  # before the first break: every IV at capacity
        U = U0 + np.cumsum(np.take_along_axis(dU, order, axis=-1), axis=-1)
        X = np.cumsum(np.take_along_axis(dX, order, axis=-1), axis=-1)
        m = np.cumsum(np.take_along_axis(dn, order, axis=-1), axis=-1)
        # g just after each break, at the break
        g = br - U - (X - gm * m * br) / d
        k = (g < 0).sum(axis=-1, keepdims=True)  # the root lies between break k-1 and break k
        km = np.maximum(k - 1, 0)
        Uk = np.where(k > 0, np.take_along_axis(U, km, axis=-1), U0)
        Xk = np.where(k > 0, np.take_along_axis(X, km, axis=-1), 0.0)
        mk = np.where(k > 0, np.take_along_axis(m, km, axis=-1), 0.0)
        return (d * Uk + Xk) / (d + gm * mk)

    def outcome(self, p: np.ndarray) -> dict[str, np.ndarray]:
        """f, U_iv, U_tv and whether the TV bought nothing, for price vectors ``p`` (..., N); the
        best response f by the kernels where they run (:func:`_jit_follower`: the same bits)."""
        f = _jit_follower(self, p)
        if f is None:
            f = self.follower(p)
        tot = f.sum(axis=-1)
        u_tv = (self.a * f).sum(-1) - 0.5 * (self.beta - self.gamma) * (f * f).sum(-1) \
            - 0.5 * self.gamma * tot * tot - (p * f).sum(-1)
        return {"f": f, "u_iv": f * (p - self.kappa * f), "u_tv": u_tv, "declined": tot <= 0}

    def deviation_utility(self, p: np.ndarray, q: np.ndarray) -> np.ndarray:
        """U_i when IV i alone moves its price to q[b, i, g] (others keep p[b]): (B, N, G)."""
        N = p.shape[1]
        eye = np.eye(N, dtype=bool)[None, :, None, :]
        pp = np.where(eye, q[..., None], p[:, None, None, :])  # (B, N, G, N): pp[b, i, g, i] = q[b, i, g]
        # one IV's price moved: the total at p is a close start for Newton
        start = self._total(self.a - p, np.broadcast_to(self.F, p.shape))[:, None, None, :]
        f = (self.follower(pp, start) * eye).sum(axis=-1)  # f_i of deviation i: (B, N, G)
        return f * (q - self.kappa[None, :, None] * f)

    def best_responses(self, p: np.ndarray, grid: int = 96, refine: int = 24) -> tuple[np.ndarray, np.ndarray]:
        """(best price, its utility) of each IV against the others' prices: (B, N) each."""
        B, N = p.shape
        lo, hi = np.log(self.p_min), np.log(self.p_max)
        g = np.exp(np.linspace(lo, hi, grid))
        u = self.deviation_utility(p, np.broadcast_to(g, (B, N, grid)))
        k = np.argmax(u, axis=2)
        step = (hi - lo) / (grid - 1)
        a = np.clip(np.log(g[k]) - step, lo, hi)
        b = np.clip(np.log(g[k]) + step, lo, hi)
        r = (np.sqrt(5.0) - 1.0) / 2.0
        for _ in range(refine):  # golden section on log-price, vectorised over (B, N)
            c, d = b - r * (b - a), a + r * (b - a)
            both = np.exp(np.stack([c, d], axis=-1))
            uc, ud = np.moveaxis(self.deviation_utility(p, both), -1, 0)
            left = uc >= ud
            b = np.where(left, d, b)
            a = np.where(left, a, c)
        best_q = np.exp((a + b) / 2.0)
        best_u = self.deviation_utility(p, best_q[:, :, None])[:, :, 0]
        grid_u = np.take_along_axis(u, k[:, :, None], axis=2)[:, :, 0]
        return np.where(grid_u > best_u, g[k], best_q), np.maximum(best_u, grid_u)

    def nash_gap(self, p: np.ndarray, grid: int = 96, refine: int = 24) -> np.ndarray:
        """max_i (best deviation utility - current utility), per price vector: (B,)."""
        if not p.shape[-1]:
            return np.zeros(len(p))
        gap = _jit_fitness(self, p, grid, refine, declined_inf=False)
        if gap is not None:
            return gap
        _, best = self.best_responses(p, grid=grid, refine=refine)
        return np.max(np.maximum(best - self.outcome(p)["u_iv"], 0.0), axis=-1)

    def gradient(self, p: np.ndarray, h: float = 1e-4) -> np.ndarray:
        """dU_i/d(log p_i) for every IV i (central differences in log-price): (B, N)."""
        both = np.stack([p * np.exp(h), p * np.exp(-h)], axis=-1)
        up, dn = np.moveaxis(self.deviation_utility(p, both), -1, 0)
        return (up - dn) / (2.0 * h)


def _jit(game: Game) -> tuple | None:
    """(the compiled kernels, how they compute exp, the game's operands) where they run
    (:mod:`cosim.jit`: ``COSIM_JIT``, numba installed, numpy's exp reproduced, 1 to 128 IVs,
    float64 operands), else None: the numpy code runs. The kernels' results are the numpy code's,
    bit for bit (tests/test_jit.py)."""
    if not (0 < game.n <= jit.PW_BLOCK) or not jit.use():
        return None
    ops = game.__dict__.get("_ops")
    if ops is None:
        arrays = (np.asarray(game.a), np.asarray(game.F), np.asarray(game.kappa))
        ok = all(x.dtype == np.float64 and x.shape == (game.n,) for x in arrays)
        ops = (*map(np.ascontiguousarray, arrays), game.beta - game.gamma, game.gamma,
               float(np.log(game.p_min)), float(np.log(game.p_max))) if ok else ()
        object.__setattr__(game, "_ops", ops)
    kind = jit.exact_exp() if ops else -1
    if kind < 0:
        return None
    from cosim.layers.moe import kernels

    return kernels, kind, ops


def _prices_of(game: Game, p: np.ndarray) -> np.ndarray | None:
    """``p`` as the kernels take it ((B, N) float64, C order, every price finite), or None (the
    numpy code runs: a NaN or infinite price — a plugin's, never a built-in solver's — gets
    numpy's answer, e.g. ``np.clip`` keeps a NaN where the follower kernel's clip gives 0)."""
    p = np.asarray(p)
    if p.ndim != 2 or p.shape[1] != game.n or p.dtype != np.float64 or not np.isfinite(p).all():
        return None
    return np.ascontiguousarray(p)


@functools.lru_cache(maxsize=16)
def _grid(lo: float, hi: float, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """(exp(linspace(lo, hi, grid)), its log): the Nash gap's deviation grid as the kernels take
    it, made once per (log price range, size) — a few per run — instead of once per call (issue 32,
    fourth pass; the same numbers). The kernels only read them."""
    g = np.exp(np.linspace(lo, hi, grid))
    return g, np.log(g)


def _jit_fitness(game: Game, p: np.ndarray, grid: int, refine: int, declined_inf: bool) -> np.ndarray | None:
    """:meth:`Game.nash_gap` (``declined_inf``: :func:`_fitness`) by the kernels, counting the
    follower evaluations the numpy code counts; None where they do not run."""
    k = _jit(game)
    p = _prices_of(game, p) if k else None
    if p is None:
        return None
    kernels, kind, (a, F, kappa, d, gm, lo, hi) = k
    g, log_g = _grid(lo, hi, grid)
    out = np.empty(len(p))
    if not kernels.fitness(a, F, kappa, d, gm, p, g, log_g, lo, hi, refine, (np.sqrt(5.0) - 1.0) / 2.0,
                           kind, declined_inf, out):
        return None
    B, N = p.shape
    game._evals[0] += B * N * (grid + 2 * refine + 1) + B * (2 if declined_inf else 1)
    return out


def _jit_follower(game: Game, p: np.ndarray) -> np.ndarray | None:
    """:meth:`Game.follower` of price vectors ``p`` (B, N) from S = 0 by the kernels (one
    compiled call instead of ~40 numpy calls on a row of a few IVs; issue 32, fourth pass),
    counting the evaluations the numpy code counts; None where they do not run."""
    k = _jit(game)
    pk = _prices_of(game, p) if k else None
    if pk is None:
        return None
    kernels, _, (a, F, kappa, d, gm, lo, hi) = k
    out = np.empty(pk.shape)
    if not kernels.follower(a, F, d, gm, pk, out):
        return None
    game._count(pk)
    return out


def exact_equilibrium(game: Game) -> tuple[np.ndarray, np.ndarray]:
    """(prices, purchases) of the Nash equilibrium when every IV sells and no capacity binds:
    the linear system (M + diag((1 + 2 kappa s) / s)) f = a. Check ``f > 0`` and ``f < F``."""
    n, b, g = game.n, game.beta, game.gamma
    d = b - g
    s = (1.0 - g / (d + n * g)) / d
    lam = (1.0 + 2.0 * game.kappa * s) / s
    M = d * np.eye(n) + g * np.ones((n, n))
    f = np.linalg.solve(M + np.diag(lam), game.a)
    return lam * f, f


@dataclass(frozen=True)
class SolverConfig:
    """The built-in solvers' options (``[layers.moe.options.NAME]``)."""

    population: int = option(6, lo=2, doc="price vectors in the population (gecpa, evolutionary)")
    generations: int = option(5, lo=1, doc="generations (gecpa); evolutionary runs as many as its budget buys")
    grad_steps: int = option(4, lo=1, doc="gradient steps per generation (gecpa)")
    lr: float = option(0.3, lo=0.0, lo_open=True, doc="log-price step per unit of normalised gradient")
    elite: float = option(0.25, lo=0.0, lo_open=True, hi=1.0, doc="share of the population kept each generation")
    mutation: float = option(0.3, lo=0.0, doc="sigma of the log-normal mutation")
    mutation_rate: float = option(0.3, lo=0.0, hi=1.0, doc="probability a price mutates")
    uniform_price: float = option(10.0, lo=0.0, lo_open=True,
                                  doc="the posted price (uniform, nearest); where gradient play and the population start")
    init_decades: float = option(1.0, lo=0.0, doc="initial population within this many decades of uniform_price")
    fitness_grid: int = option(10, lo=2, doc="grid of the Nash gap used as fitness (the reported gap uses a finer one)")
    budget: int = option(0, lo=0, doc="follower evaluations per pricing round for gradient, evolutionary and "
                                      "best-response; 0: exactly what gecpa spends with these options (equal budgets)")
    br_tol: float = option(1e-9, lo=0.0, doc="best-response stops when a round moves no price by more than this "
                                             "(relative)")


#: the final ranking of a population (grid, golden-section steps of the Nash gap)
_FINAL = (24, 6)
#: golden-section steps of the fitness (gecpa; evolutionary)
_REFINE_GECPA, _REFINE_EVO = 4, 6


def _fitness_evals(b: int, n: int, grid: int, refine: int) -> int:
    """Follower evaluations of :func:`_fitness` on ``b`` price vectors of ``n`` IVs: the
    deviation grid, two per golden-section step and the final point for every (vector, IV), and
    two outcomes per vector."""
    return b * n * (grid + 2 * refine + 1) + 2 * b


def gecpa_evals(n: int, cfg: "SolverConfig") -> int:
    """Follower evaluations GECPA spends on a game of ``n`` IVs (tested against the counter):
    three per (vector, IV) per gradient step, ``generations + 1`` rounds of ``grad_steps``; a
    fitness per generation; the final ranking."""
    B = cfg.population
    return ((cfg.generations + 1) * cfg.grad_steps * 3 * B * n + cfg.generations * _fitness_evals(B, n, cfg.fitness_grid,
            _REFINE_GECPA) + _fitness_evals(B, n, *_FINAL))


def budget_of(n: int, cfg: "SolverConfig") -> int:
    return cfg.budget if cfg.budget > 0 else gecpa_evals(n, cfg)


def _ascend(game: Game, p: np.ndarray, steps: int, lr: float, keep: int = 0) -> np.ndarray:
    """Simultaneous gradient play in log-price, each IV on its own utility: a damped Newton step
    (gradient over curvature, from central differences) where the utility curves down, a step of
    ``lr`` along the gradient's sign elsewhere, down for an IV priced out of the market; at most
    half a log-unit per step. ``keep`` > 0: return the iterates after steps ⌈j·steps/keep⌉,
    j = 1..keep (the last one is the final iterate), stacked on a new first axis."""
    marks = {-(-j * steps // keep): j - 1 for j in range(1, keep + 1)} if keep else {}
    kept = np.empty((keep, *p.shape))
    k, pk = _jit(game), _prices_of(game, p)
    if k and pk is not None:
        kernels, kind, (a, F, kappa, d, gm, lo, hi) = k
        at = np.full(steps + 1, -1, dtype=np.int64)
        for step, j in marks.items():
            at[step] = j
        out = np.empty(pk.shape)
        if kernels.ascend(a, F, kappa, d, gm, np.log(pk), steps, lr, lo, hi, at, kept, kind, out):
            game._evals[0] += steps * 3 * pk.size
            return kept if keep else out
    lo, hi = np.log(game.p_min), np.log(game.p_max)
    x = np.log(p)
    h = 1e-3
    for step in range(1, steps + 1):
        q = np.exp(x[:, :, None] + np.array([h, 0.0, -h]))
        up, mid, dn = np.moveaxis(game.deviation_utility(np.exp(x), q), -1, 0)
        g = (up - dn) / (2 * h)
        curv = (up - 2 * mid + dn) / (h * h)
        newton = np.where(curv < -1e-12, -g / np.where(curv < -1e-12, curv, -1.0), lr * np.sign(g))
        # priced out (sells nothing, utility flat at 0): come down
        newton = np.where((mid == 0) & (g == 0), -lr, newton)
        x = np.clip(x + 0.5 * np.clip(newton, -0.5, 0.5), lo, hi)
        if step in marks:
            kept[marks[step]] = np.exp(x)
    return kept if keep else np.exp(x)


def _evolve(game: Game, pop: np.ndarray, fit: np.ndarray, cfg: SolverConfig, rng: np.random.Generator) -> np.ndarray:
    """One generation: keep the elite, breed the rest (tournament, uniform crossover, mutation)."""
    B, N = pop.shape
    order = np.argsort(fit, kind="stable")  # ascending Nash gap
    n_elite = max(1, int(round(cfg.elite * B)))
    elite = pop[order[:n_elite]]
    n_child = B - n_elite
    a = rng.integers(0, B, (n_child, 2))
    b = rng.integers(0, B, (n_child, 2))
    pa = np.where(fit[a[:, 0]] <= fit[a[:, 1]], a[:, 0], a[:, 1])
    pb = np.where(fit[b[:, 0]] <= fit[b[:, 1]], b[:, 0], b[:, 1])
    child = np.where(rng.random((n_child, N)) < 0.5, pop[pa], pop[pb])
    mut = rng.random((n_child, N)) < cfg.mutation_rate
    child = child * np.exp(np.where(mut, rng.normal(0.0, cfg.mutation, (n_child, N)), 0.0))
    return np.clip(np.concatenate([elite, child]), game.p_min, game.p_max)


def _initial(game: Game, cfg: SolverConfig, rng: np.random.Generator) -> np.ndarray:
    """Log-uniform within ``init_decades`` of the uniform price; one individual at it."""
    centre = np.log(np.clip(cfg.uniform_price, game.p_min, game.p_max))
    w = cfg.init_decades * np.log(10.0)
    pop = np.exp(rng.uniform(centre - w, centre + w, (cfg.population, game.n)))
    pop[0] = np.exp(centre)
    return np.clip(pop, game.p_min, game.p_max)


def _fitness(game: Game, pop: np.ndarray, grid: int, refine: int) -> np.ndarray:
    """Nash gap; prices at which the TV buys nothing (a trivial equilibrium) rank last."""
    fit = _jit_fitness(game, pop, grid, refine, declined_inf=True) if game.n else None
    if fit is not None:
        return fit
    return game.nash_gap(pop, grid=grid, refine=refine) + np.where(game.outcome(pop)["declined"], np.inf, 0.0)


def _best(game: Game, pop: np.ndarray) -> np.ndarray:
    return pop[int(np.argmin(_fitness(game, pop, *_FINAL)))]


@register_policy("moe", "gecpa", options=SolverConfig, stochastic=True, cost=0.10)
def solve_gecpa(game: Game, rng: np.random.Generator, cfg: SolverConfig = SolverConfig()) -> np.ndarray:
    """GECPA: gradient ascent + an evolutionary population, ranked by Nash gap
    (:func:`gecpa_evals` follower evaluations)."""
    pop = _initial(game, cfg, rng)
    for _ in range(cfg.generations):
        pop = _ascend(game, pop, cfg.grad_steps, cfg.lr)
        pop = _evolve(game, pop, _fitness(game, pop, cfg.fitness_grid, _REFINE_GECPA), cfg, rng)
    return _best(game, _ascend(game, pop, cfg.grad_steps, cfg.lr))


@register_policy("moe", "gradient", options=SolverConfig, cost=0.21)
def solve_gradient(game: Game, rng: np.random.Generator, cfg: SolverConfig = SolverConfig()) -> np.ndarray:
    """Gradient play alone, from the posted price, returning its **best iterate** by the
    criterion GECPA picks its answer by (:func:`_best`: the Nash gap on GECPA's final grid,
    prices the TV declines last): every iterate is scored, so a step costs its three follower
    evaluations per IV plus one scoring (``_fitness_evals(1, n, *_FINAL)``: 298 at 8 IVs), and it
    runs as many steps as the budget buys (30 at 8 or 20 IVs). Our choice after measuring (20
    random games, mean Nash gap at 8 / 20 IVs): the last of 411 iterates 1.89 / 2.18 (what it
    returned before: gradient play settles within a few steps and then oscillates), the best of
    6 evenly spaced ones 2.05 / 0.82, the best of all 30 scored 0.15 / 0.07. A budget too small
    for one scored step buys unscored steps (the last iterate)."""
    p = np.full((1, game.n), np.clip(cfg.uniform_price, game.p_min, game.p_max))
    budget, per_step = budget_of(game.n, cfg), 3 * max(game.n, 1)
    scored = per_step + _fitness_evals(1, game.n, *_FINAL)
    if budget < scored:
        return _ascend(game, p, max(1, budget // per_step), cfg.lr)[0]
    steps = budget // scored
    return _best(game, _ascend(game, p, steps, cfg.lr, keep=steps)[:, 0])


def _best_price(game: Game, p: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
    """The candidate prices of IV i's exact 1-D best response against ``p`` (the others'
    prices), and for each the follower's total S there where known (NaN for p_min and p_max): the
    caller evaluates them with the follower, which starts from it.

    Parametrised by the follower's total S instead of q: the others buy
    r_j(S) = clip((a_j - p_j - gamma S) / d, 0, F_j) (d = beta - gamma), which does not depend on
    q, so IV i sells f_i(S) = S - sum_j r_j(S) and, while it sells without reaching its capacity,
    its price is q(S) = a_i - gamma S - d f_i(S) (its KKT row). Between consecutive breaks of the
    r_j (S = (x_j - d F_j) / gamma and x_j / gamma) f_i and q are linear in S and U_i = f_i (q -
    kappa_i f_i) is a concave quadratic: its maximiser on the piece (also kept within 0 <= f_i <=
    F_i and p_min <= q <= p_max) is in closed form. Where IV i is at its capacity U_i = F_i q -
    kappa_i F_i^2 rises with q, so its best is the end of that region, a piece end above (or
    p_max); where it sells nothing U_i = 0. The global maximum is therefore one of: each piece's
    maximiser, p_min, p_max — at most 2N + 1 prices."""
    n, d, gm = game.n, game.beta - game.gamma, game.gamma
    x = game.a - p
    others = np.arange(n) != i
    xo, Fo = x[others], game.F[others]
    if gm > 1e-12 * d:
        br = np.sort(np.concatenate([(xo - d * Fo) / gm, xo / gm]))
    else:  # no substitution: the others' purchases do not depend on S
        br = np.zeros(0)
    lo_b = np.concatenate([[-np.inf], br])
    hi_b = np.concatenate([br, [np.inf]])
    # a point inside each piece (the ends: one unit beyond the outer breaks)
    with np.errstate(invalid="ignore"):  # inf - inf at the ends, not taken
        mid = np.where(np.isfinite(lo_b) & np.isfinite(hi_b), 0.5 * (lo_b + hi_b),
                       np.where(np.isfinite(lo_b), lo_b + 1.0, hi_b - 1.0))
    if not len(br):
        mid = np.zeros(1)
    v = (xo[None, :] - gm * mid[:, None]) / d  # (pieces, N - 1)
    capped, free = v >= Fo, (v > 0) & (v < Fo)
    # on each piece: sum_j r_j = R0 + R1 S
    R0 = np.where(capped, Fo, 0.0).sum(1) + np.where(free, xo / d, 0.0).sum(1)
    R1 = -np.where(free, gm / d, 0.0).sum(1)
    alpha, f0 = 1.0 - R1, -R0  # f_i = alpha S + f0 (alpha >= 1)
    c, q0 = -gm - d * alpha, game.a[i] + d * R0  # q = c S + q0 (c < 0)
    k = game.kappa[i]
    # the piece within 0 <= f_i <= F_i and p_min <= q <= p_max: bounds on S
    lo = np.maximum.reduce([lo_b, -f0 / alpha, (game.p_max - q0) / c])
    hi = np.minimum.reduce([hi_b, (game.F[i] - f0) / alpha, (game.p_min - q0) / c])
    A = alpha * (c - k * alpha)  # U = A S^2 + B S + C, A < 0
    B = alpha * (q0 - k * f0) + f0 * (c - k * alpha)
    S = np.clip(-B / (2.0 * A), lo, hi)[lo <= hi]
    q = c[lo <= hi] * S + q0[lo <= hi]
    return (np.clip(np.concatenate([q, [game.p_min, game.p_max]]), game.p_min, game.p_max),
            np.concatenate([S, [np.nan, np.nan]]))


@register_policy("moe", "best-response", options=SolverConfig, cost=0.05)
def solve_best_response(game: Game, rng: np.random.Generator, cfg: SolverConfig = SolverConfig()) -> np.ndarray:
    """Sequential best-response iteration (Gauss-Seidel), the strongest plain baseline: from the
    posted price, each IV in turn plays its **exact** best price against the others' current
    prices, the TV's constrained best response recomputed; rounds until a whole round moves no
    price by more than ``br_tol`` (relative) or GECPA's follower-evaluation budget (``budget``)
    cannot pay for the next IV's turn.

    The exact best price: :func:`_best_price` proposes, in closed form, the maximiser of IV i's
    utility on each piece of the follower's piecewise-linear response (at most 2N + 1 prices,
    p_min and p_max among them); each is evaluated with :meth:`Game.follower` (one counted
    evaluation per price, the current price too) and the best taken. Exact to rounding: the
    global maximum is among the candidates, and the follower that scores them is the one the
    game uses. An IV moves only if it gains (ties keep its price), so a fixed point is a Nash
    equilibrium of the constrained game; where no constraint binds it is
    :func:`exact_equilibrium` (tested). Where capacities bind the iteration can cycle (a pure
    equilibrium need not exist, as in Bertrand-Edgeworth games) and spends the budget; it then
    returns the last iterate (on random 8-IV games its Nash gap, ~0.001, was smaller than that of
    the end of the round whose turns gained least, which we tried)."""
    budget = budget_of(game.n, cfg)
    start = game.evals
    p = np.full(game.n, np.clip(cfg.uniform_price, game.p_min, game.p_max))
    k = _jit(game)
    if k:
        kernels, _, (a, F, kappa, d, gm, _, _) = k
        pk = p.copy()
        ok, used = kernels.best_response(a, F, kappa, d, gm, pk, game.p_min, game.p_max, budget, cfg.br_tol)
        if ok:
            game._evals[0] += used
            return pk
    total = 0.0  # the follower's total at p: where its Newton iteration starts (a start only)
    while True:
        moved = 0.0
        for i in range(game.n):
            q, S = _best_price(game, p, i)
            q, S = np.concatenate([[p[i]], q]), np.concatenate([[total], S])
            if game.evals - start + len(q) > budget:
                return p
            pp = np.repeat(p[None], len(q), axis=0)
            pp[:, i] = q
            f = game.follower(pp, np.where(np.isnan(S), total, S)[:, None])
            u = f[:, i] * (q - game.kappa[i] * f[:, i])
            k = int(np.argmax(u))
            if u[k] <= u[0]:  # no gain: keep the price
                k = 0
            moved = max(moved, abs(q[k] - p[i]) / p[i])
            p[i] = q[k]
            total = float(f[k].sum())
        if moved <= cfg.br_tol:
            return p


@register_policy("moe", "evolutionary", options=SolverConfig, stochastic=True, cost=1.38)
def solve_evolutionary(game: Game, rng: np.random.Generator, cfg: SolverConfig = SolverConfig()) -> np.ndarray:
    """The evolutionary loop alone, for as many generations as the budget buys (a fitness per
    generation, then the final ranking)."""
    per_gen = _fitness_evals(cfg.population, game.n, cfg.fitness_grid, _REFINE_EVO)
    generations = max(1, (budget_of(game.n, cfg) - _fitness_evals(cfg.population, game.n, *_FINAL)) // per_gen)
    pop = _initial(game, cfg, rng)
    for _ in range(generations):
        pop = _evolve(game, pop, _fitness(game, pop, cfg.fitness_grid, _REFINE_EVO), cfg, rng)
    return _best(game, pop)


@register_policy("moe", "random", options=SolverConfig, stochastic=True, cost=0.96)
def solve_random(game: Game, rng: np.random.Generator, cfg: SolverConfig = SolverConfig()) -> np.ndarray:
    """Random prices over the plausible range: IV i's price uniform on [p_min, a_i], the prices
    at which the TV would buy from it at all (above a_i it buys nothing from i even if i were
    alone). No search: no follower evaluation."""
    hi = np.clip(game.a, game.p_min, game.p_max)
    return game.p_min + rng.random(game.n) * (hi - game.p_min)


@register_policy("moe", "uniform", options=SolverConfig, cost=0.73)
def solve_uniform(game: Game, rng: np.random.Generator, cfg: SolverConfig = SolverConfig()) -> np.ndarray:
    """One posted price for every IV."""
    return np.full(game.n, np.clip(cfg.uniform_price, game.p_min, game.p_max))


@register_policy("moe", "nearest", options=SolverConfig, link_aware=False, cost=0.98)
def solve_nearest(game: Game, rng: np.random.Generator, cfg: SolverConfig = SolverConfig()) -> np.ndarray:
    """The posted price on the nearest vehicles, with plain top-k gating (no link awareness)."""
    return solve_uniform(game, rng, cfg)
