"""The Stackelberg compute-pricing game between infrastructure vehicles (IVs, leaders) and the
task vehicle (TV, follower), and the solvers that price it. **Our formulation**: the MoE paper
(001) publishes only its abstract, which names the game and GECPA but gives no equations.

One task routes expert work W_i [TFLOP] to IV i. Each IV announces a unit price p_i for compute;
the TV buys f_i [TFLOP/s] from each (then computes its experts' work in W_i / f_i seconds).

**Follower** (linear-quadratic, substitutes). The TV values compute with diminishing returns and
treats IVs as partial substitutes (physical gating can shift tokens between experts):

    U_TV(f) = sum_i a_i f_i - beta/2 sum_i f_i^2 - gamma/2 sum_{i != j} f_i f_j - sum_i p_i f_i,

a_i = v W_i / mean(W) (compute is worth more where more work is routed), beta = v / F_sat,
gamma = sigma * beta (0 <= sigma < 1: substitutability). Its best response is closed form: on
the set A of IVs it buys from, f_A = M_A^-1 (a - p)_A with M = (beta - gamma) I + gamma 11^T,

    f_i = [(a_i - p_i) - g_n sum_{j in A} (a_j - p_j)] / (beta - gamma),  g_n = gamma / (beta - gamma + n gamma),

A being the n IVs with the largest a_i - p_i for the largest n whose last member still buys
(water-filling; tested against dropping IVs one pass at a time); an IV sells at most its
capacity F_i (rationing). Buying nothing is always possible, so U_TV >= 0 at the best response.

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
* ``gradient`` — gradient play alone from the uniform price; ``evolutionary`` — the evolutionary
  loop alone; ``random`` — log-uniform random prices; ``uniform`` — one fixed price for all;
  ``nearest`` — the fixed price, on the nearest vehicles with plain gating.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cosim.config import option
from cosim.registry import register_policy


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

    @property
    def n(self) -> int:
        return len(self.W)

    def follower(self, p: np.ndarray) -> np.ndarray:
        """The TV's best response f (same shape as ``p``, last axis = IVs).

        Every bought IV gets f_i = (x_i - g_n tot) / (beta - gamma) with x = a - p: one common
        threshold, so the set bought is the n largest x for the largest n whose n-th largest
        still buys (water-filling over the sorted x; prefix sums, no iteration)."""
        d, gm = self.beta - self.gamma, self.gamma
        x = self.a - p
        xs = -np.sort(-x, axis=-1)
        cs = np.cumsum(xs, axis=-1)
        g = gm / (d + np.arange(1, x.shape[-1] + 1) * gm)
        n = ((xs - g * cs) > 0).sum(axis=-1, keepdims=True)  # the bought IVs: a prefix of the sorted
        last = np.maximum(n - 1, 0)
        tot = np.take_along_axis(cs, last, axis=-1)
        f = np.where((n > 0) & (x >= np.take_along_axis(xs, last, axis=-1)), (x - gm / (d + n * gm) * tot) / d, 0.0)
        return np.minimum(np.maximum(f, 0.0), self.F)

    def outcome(self, p: np.ndarray) -> dict[str, np.ndarray]:
        """f, U_iv, U_tv and whether the TV bought nothing, for price vectors ``p`` (..., N)."""
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
        f = (self.follower(pp) * eye).sum(axis=-1)  # f_i of deviation i: (B, N, G)
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

    def nash_gap(self, p: np.ndarray, **kw) -> np.ndarray:
        """max_i (best deviation utility - current utility), per price vector: (B,)."""
        if not p.shape[-1]:
            return np.zeros(len(p))
        _, best = self.best_responses(p, **kw)
        return np.max(np.maximum(best - self.outcome(p)["u_iv"], 0.0), axis=-1)

    def gradient(self, p: np.ndarray, h: float = 1e-4) -> np.ndarray:
        """dU_i/d(log p_i) for every IV i (central differences in log-price): (B, N)."""
        both = np.stack([p * np.exp(h), p * np.exp(-h)], axis=-1)
        up, dn = np.moveaxis(self.deviation_utility(p, both), -1, 0)
        return (up - dn) / (2.0 * h)


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
    generations: int = option(5, lo=1, doc="generations (gecpa, evolutionary); gradient runs grad_steps x (generations + 1)")
    grad_steps: int = option(4, lo=1, doc="gradient steps per generation (gecpa)")
    lr: float = option(0.3, lo=0.0, lo_open=True, doc="log-price step per unit of normalised gradient")
    elite: float = option(0.25, lo=0.0, lo_open=True, hi=1.0, doc="share of the population kept each generation")
    mutation: float = option(0.3, lo=0.0, doc="sigma of the log-normal mutation")
    mutation_rate: float = option(0.3, lo=0.0, hi=1.0, doc="probability a price mutates")
    uniform_price: float = option(10.0, lo=0.0, lo_open=True,
                                  doc="the posted price (uniform, nearest); where gradient play and the population start")
    init_decades: float = option(1.0, lo=0.0, doc="initial population within this many decades of uniform_price")
    fitness_grid: int = option(10, lo=2, doc="grid of the Nash gap used as fitness (the reported gap uses a finer one)")


def _ascend(game: Game, p: np.ndarray, steps: int, lr: float) -> np.ndarray:
    """Simultaneous gradient play in log-price, each IV on its own utility: a damped Newton step
    (gradient over curvature, from central differences) where the utility curves down, a step of
    ``lr`` along the gradient's sign elsewhere, down for an IV priced out of the market; at most
    half a log-unit per step."""
    lo, hi = np.log(game.p_min), np.log(game.p_max)
    x = np.log(p)
    h = 1e-3
    for _ in range(steps):
        q = np.exp(x[:, :, None] + np.array([h, 0.0, -h]))
        up, mid, dn = np.moveaxis(game.deviation_utility(np.exp(x), q), -1, 0)
        g = (up - dn) / (2 * h)
        curv = (up - 2 * mid + dn) / (h * h)
        newton = np.where(curv < -1e-12, -g / np.where(curv < -1e-12, curv, -1.0), lr * np.sign(g))
        # priced out (sells nothing, utility flat at 0): come down
        newton = np.where((mid == 0) & (g == 0), -lr, newton)
        x = np.clip(x + 0.5 * np.clip(newton, -0.5, 0.5), lo, hi)
    return np.exp(x)


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
    return game.nash_gap(pop, grid=grid, refine=refine) + np.where(game.outcome(pop)["declined"], np.inf, 0.0)


def _best(game: Game, pop: np.ndarray) -> np.ndarray:
    return pop[int(np.argmin(_fitness(game, pop, 24, 6)))]


@register_policy("moe", "gecpa", options=SolverConfig, stochastic=True)
def solve_gecpa(game: Game, rng: np.random.Generator, cfg: SolverConfig = SolverConfig()) -> np.ndarray:
    """GECPA: gradient ascent + an evolutionary population, ranked by Nash gap."""
    pop = _initial(game, cfg, rng)
    for _ in range(cfg.generations):
        pop = _ascend(game, pop, cfg.grad_steps, cfg.lr)
        pop = _evolve(game, pop, _fitness(game, pop, cfg.fitness_grid, 4), cfg, rng)
    return _best(game, _ascend(game, pop, cfg.grad_steps, cfg.lr))


@register_policy("moe", "gradient", options=SolverConfig)
def solve_gradient(game: Game, rng: np.random.Generator, cfg: SolverConfig = SolverConfig()) -> np.ndarray:
    """Gradient play alone, from the posted price."""
    p = np.full((1, game.n), np.clip(cfg.uniform_price, game.p_min, game.p_max))
    return _ascend(game, p, cfg.grad_steps * (cfg.generations + 1), cfg.lr)[0]


@register_policy("moe", "evolutionary", options=SolverConfig, stochastic=True)
def solve_evolutionary(game: Game, rng: np.random.Generator, cfg: SolverConfig = SolverConfig()) -> np.ndarray:
    """The evolutionary loop alone."""
    pop = _initial(game, cfg, rng)
    for _ in range(cfg.generations):
        pop = _evolve(game, pop, _fitness(game, pop, cfg.fitness_grid, 6), cfg, rng)
    return _best(game, pop)


@register_policy("moe", "random", options=SolverConfig, stochastic=True)
def solve_random(game: Game, rng: np.random.Generator, cfg: SolverConfig = SolverConfig()) -> np.ndarray:
    """Log-uniform random prices over the price range."""
    return np.exp(rng.uniform(np.log(game.p_min), np.log(game.p_max), game.n))


@register_policy("moe", "uniform", options=SolverConfig)
def solve_uniform(game: Game, rng: np.random.Generator, cfg: SolverConfig = SolverConfig()) -> np.ndarray:
    """One posted price for every IV."""
    return np.full(game.n, np.clip(cfg.uniform_price, game.p_min, game.p_max))


@register_policy("moe", "nearest", options=SolverConfig, link_aware=False)
def solve_nearest(game: Game, rng: np.random.Generator, cfg: SolverConfig = SolverConfig()) -> np.ndarray:
    """The posted price on the nearest vehicles, with plain top-k gating (no link awareness)."""
    return solve_uniform(game, rng, cfg)
