"""The MoE expert-parallel layer (paper 001; our formulation — the paper publishes only its
abstract): experts on infrastructure vehicles, physical gating, V2V expert parallelism and a
Stackelberg pricing game solved by GECPA, against live SUMO traffic.

A task (Poisson, ``request_rate_per_s`` over the network) comes from a task vehicle (TV) that
runs the non-expert layers and the gate; its ``moe_layers`` x ``experts`` experts are placed on
infrastructure vehicles (IVs) within V2V range:

* **placement** — the ``ivs_per_task`` best candidates (link-aware policies: mean V2V rate x
  (1 - outage probability) x remaining contact / deadline; ``nearest``: distance), experts
  dealt round-robin so each IV holds one expert per layer where it can, within each IV's memory;
  an expert that fits nowhere is not placed (masked);
* **routing** — the task's prompt (``tokens`` tokens of real text, sentences of a built-in
  corpus drawn from the task's seed) through the gate model of :mod:`.model`, a small MoE
  transformer built from ``gate_model_seed``: its real forward pass decides which experts each
  token goes to, layer by layer. Physical gating (scores x the host's link quality, unreachable
  experts masked) for link-aware policies when ``physical_gating``; plain top-k otherwise;
* **pricing** — the Stackelberg game of :mod:`.game` on the work W_i routed to each IV: the IVs
  post unit prices (the policy's solver), the TV buys compute f_i from each by its constrained
  best response (0 <= f_i <= what the IV has free), or buys nothing (the task fails
  "priced-out"); experts on IVs it buys nothing from are masked and the gate re-run;
* **execution** — layer by layer over the following slots as SUMO moves: layer latency = TV
  compute (attention + gate) + weights moved before it (reroutes) + max over the IVs used of
  (upload of its tokens + W_il / f_i + loading its experts' weights from memory + download),
  with eq. (3) V2V rates at the slot's distances and fading. An IV a layer needs that has left
  V2V range (or the simulation) triggers a reroute (``reroute``: move its experts to another
  IV, memory permitting, or re-gate around them; see :meth:`MoELayer._reroute`), or the task
  fails "iv-left-range" if no IV it bought from is left;
* **weights** (``placement``, one rule for the initial placement and for reroutes; our choice,
  the paper's abstract "deploy[s] ... experts across vehicles"): ``"preloaded"`` (default) —
  every IV already holds the weights of the experts it is given, nothing is sent; ``"load"`` —
  the TV sends every expert it uses to its host before the first layer, and a reroute's moved
  experts, over V2V at the slot's rates (one 67 MB expert: ~2.7 s at 200 Mbit/s);
* **sharing** — ``queue = "simulated"`` (the default): a policy's running tasks hold the compute
  they bought and their experts' memory on each IV until they end (the kernel's capacities), so
  a later task's game sees only what is left; ``"analytic"``: every task sees every IV whole.

Success: every layer done within ``deadline_s`` and the TV still there. Results:
``moe_tasks.parquet`` (one row per task and policy) and a ``moe`` block per policy in
``summary.json``.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from cosim.config import option, range_pair
from cosim.errors import ConfigError
from cosim.layers import kernel as kn
from cosim.layers.base import ROLE_IV, ROLE_USER, Layer, LayerContext, PolicyFailed, add_role, arrivals, register_layer
from cosim.layers.moe import contract
from cosim.layers.moe.game import Game, exact_equilibrium
from cosim.recorder import Lists
from cosim.world import World
from cosim.world import channel as ch
from cosim.world.coverage import dwell_straight


@dataclass(frozen=True)
class MoEConfig:
    policies: list = option(["gecpa", "best-response", "gradient", "evolutionary", "random", "uniform", "nearest"],
                            doc="pricing/allocation policies run side by side (built-in or registered by a plugin)")
    options: dict = option({}, doc="per-policy options: [layers.moe.options.NAME] tables (see `cosim config`)")
    queue: str = option("simulated", choices=kn.QUEUES,
                        doc="simulated (default): a policy's concurrent tasks share each IV's compute and memory; "
                            "analytic: an IV serves every task at once (docs/moe.md: why, with numbers)")
    request_rate_per_s: float = option(0.2, lo=0.0, doc="tasks per second over the whole network")
    moe_layers: int = option(8, lo=1, doc="MoE layers in the model")
    experts: int = option(8, lo=1, doc="experts per MoE layer")
    top_k: int = option(2, lo=1, doc="experts per token")
    hidden: int = option(2048, lo=1, doc="hidden size d")
    expert_ffn: int = option(8192, lo=1, doc="expert FFN size")
    bytes_per_param: float = option(2.0, lo=0.0, lo_open=True, doc="bytes per weight and per activation (2 = fp16)")
    tokens: int = option(256, lo=1, doc="tokens per task")
    deadline_s: float = option(1.0, lo=0.0, lo_open=True, doc="a task must finish within this [s]")
    ivs_per_task: int = option(8, lo=1, doc="infrastructure vehicles a task uses at most")
    iv_memory_gb: list = option([0.5, 2.0], doc="IV memory for experts [GB]: value or [lo, hi] (fixed per vehicle)")
    iv_compute_tflops: list = option([0.2, 1.0], doc="IV compute capacity F_i [TFLOP/s]: value or [lo, hi]")
    tv_compute_tflops: float = option(2.0, lo=0.0, lo_open=True, doc="task vehicle compute (attention, gate) [TFLOP/s]")
    memory_gbps: float = option(50.0, lo=0.0, lo_open=True, doc="IV memory bandwidth for loading expert weights [GB/s]")
    energy_kappa: list = option([5.0, 20.0], doc="IV energy coefficient kappa_i: value or [lo, hi] (per vehicle)")
    tv_value: float = option(20.0, lo=0.0, lo_open=True, doc="v: the TV's marginal value of compute at an IV with average work")
    tv_saturation_tflops: float = option(2.0, lo=0.0, lo_open=True, doc="F_sat: compute at which that value falls to 0 [TFLOP/s]")
    substitutability: float = option(0.3, lo=0.0, hi=0.99, doc="sigma: how far compute at one IV replaces another's")
    price_range: list = option([1e-2, 1e3], doc="admissible unit prices [lo, hi] (cost per TFLOP/s)")
    physical_gating: bool = option(True, doc="link-aware policies re-weight the gate's scores by the hosts' link quality "
                                             "(false: plain top-k on the same placement; the ablation)")
    reroute: str = option("move", choices=("move", "regate"),
                          doc="an IV out of range: move: its experts go to the reachable IV with the best link and "
                              "memory left (their weights sent from the TV over V2V at the slot's rate with placement = "
                              "load, already there with preloaded); regate: its experts are masked "
                              "and the gate re-run (no transfer); either way the gate re-runs, prices are not renegotiated")
    placement: str = option("preloaded", choices=("preloaded", "load"),
                            doc="who pays for expert weights over V2V (one rule for the initial placement and for "
                                "reroutes): preloaded (default: the experts are deployed on the vehicles beforehand, "
                                "docs/moe.md) - neither pays; load - the TV sends every expert it uses to its host "
                                "before the first layer, and a reroute's moved experts, at the slot's V2V rates")
    gate_model_dim: int = option(64, lo=8, doc="width of the small MoE transformer whose forward pass on the prompt "
                                                 "picks the experts (the latency model uses hidden / expert_ffn)")
    gate_model_seed: int = option(0, lo=0, doc="seed of the gate model's weights (a fixed model for every run seed)")
    device: str = option("cpu", pattern=(r"cpu|auto|cuda(:[0-9]+)?", "expected cpu, auto, cuda or cuda:N"),
                         doc="where the gate model runs: cpu (default: the same routings on every machine), auto "
                             "(CUDA where torch finds it, else the CPU), cuda or cuda:N (an error without CUDA); "
                             "a GPU may route differently from the CPU (docs/moe.md, On a GPU)")
    min_rate_bps: float = option(50e6, lo=0.0, lo_open=True, doc="outage: a V2V rate below this [bit/s]")
    rate_ref_bps: float = option(200e6, lo=0.0, lo_open=True, doc="link-quality scale: q_rate = r / (r + rate_ref)")


def _check(cfg: MoEConfig, where: str) -> None:
    if cfg.top_k > cfg.experts:
        raise ConfigError(f"{where}.top_k: {cfg.top_k} is more than experts ({cfg.experts})")
    lo, hi = (cfg.price_range + [0, 0])[:2]
    if len(cfg.price_range) != 2 or not 0 < lo < hi:
        raise ConfigError(f"{where}.price_range: expected [lo, hi] with 0 < lo < hi, got {cfg.price_range!r}")
    if cfg.gate_model_dim % 2:
        raise ConfigError(f"{where}.gate_model_dim: {cfg.gate_model_dim} must be even (sinusoidal positions)")


def gate_device(value: str, where: str) -> tuple[object, str]:
    """(torch device, what the summary says of it) for ``device`` (``[layers.moe]``, already
    matched against cpu | auto | cuda | cuda:N): "auto" is CUDA where ``torch.cuda.is_available()``,
    else the CPU; "cuda" is the current CUDA device; "cuda" or "cuda:N" without CUDA, or N beyond
    the devices torch sees, is a config error naming the key."""
    import torch

    if value == "cpu" or (value == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu"), "cpu"
    if not torch.cuda.is_available():
        raise ConfigError(f"{where}.device: {value!r} but torch {torch.__version__} finds no CUDA device here "
                          f"(use \"auto\": CUDA where present, else the CPU; or \"cpu\")")
    n = torch.cuda.device_count()
    index = torch.cuda.current_device() if value in ("auto", "cuda") else int(value.split(":")[1])
    if index >= n:
        raise ConfigError(f"{where}.device: {value!r} but torch sees {n} CUDA device{'s' * (n != 1)} (cuda:0 to cuda:{n - 1})")
    return torch.device("cuda", index), f"cuda:{index} ({torch.cuda.get_device_name(index)})"


@contextlib.contextmanager
def _one_thread():
    """Torch's intra-op threads at one inside the ``with``, then as they were (also on an error)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def interior_equilibrium(game: Game) -> np.ndarray | None:
    """The prices of :func:`exact_equilibrium` where no constraint binds there (every IV sells,
    below its capacity, at a price within the price range), else None: the reference of each
    policy's ``eq_distance`` = max_i |p_i - p*_i| / p*_i (the largest relative price error;
    NaN where None). One linear solve per game, shared by the policies that price it."""
    if not game.n:
        return None
    p, f = exact_equilibrium(game)
    ok = (np.all(np.isfinite(p)) and np.all(f > 0) and np.all(f < game.F)
          and np.all(p >= game.p_min) and np.all(p <= game.p_max))
    return p if ok else None


def _div(a: float, b: float) -> float:
    """``a / b`` as numpy divides two float64 numbers, for Python floats: b = 0 gives +-inf (NaN
    for a = 0 or NaN) instead of raising."""
    if b:
        return a / b
    if a != a or a == 0:
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _none() -> np.ndarray:
    return np.zeros(0)


@dataclass
class Task(kn.Task):
    tv: str = ""
    ivs: list = field(default_factory=list)  # IV names, index j = player j of the game
    layer_iv: np.ndarray = field(default_factory=_none)  # (L, E) index into ivs of each expert's host, -1 not placed
    tokens: np.ndarray = field(default_factory=_none)  # (L, E) tokens routed to each expert
    prompt: object = None  # the prompt's token ids (torch, shared by the policies)
    gate_memo: dict = field(default_factory=dict)  # the gate model's block outputs on the prompt (shared, see GateModel.load)
    gate_q: np.ndarray = field(default_factory=_none)  # (L, E) the gate's quality of each expert (0: masked)
    evals: int = 0  # follower evaluations the policy's solver spent
    prices: np.ndarray = field(default_factory=_none)
    f: np.ndarray = field(default_factory=_none)  # TFLOP/s bought from each IV
    u_iv: np.ndarray = field(default_factory=_none)
    u_tv: float = 0.0
    nash_gap: float = math.nan
    solve_ms: float = 0.0
    layer: int = 0
    comm: list = field(default_factory=list)
    comp: list = field(default_factory=list)
    mem: list = field(default_factory=list)
    tv_s: list = field(default_factory=list)
    move: list = field(default_factory=list)  # per layer: weights moved to new hosts before it [s]
    reroutes: int = 0
    moved_experts: int = 0
    loaded: bool = False  # placement = "load": the initial weights have been sent
    links: tuple = ()  # (world, its snapshot, in range, rates): this slot's links, kept for its next layers (_links)
    eq_distance: float = math.nan  # max_i |p_i - p*_i| / p*_i against exact_equilibrium; NaN where undefined


@register_layer("moe")
class MoELayer(Layer):
    config_class = MoEConfig
    policy_kind = "pricing solver"
    # its policies share nothing but the world and the requests: a game shared by policies that see
    # the same free capacity reaches each as its own view (Game.view: own evals, own attributes)
    shardable = True
    #: what a process holding any of its policies spends once (torch and the gate model, ~1.8 s;
    #: the requests, the candidates, the link-aware placement's gate pass and game, the batched
    #: Nash gaps): CPU s per 300 s of grid6 (docs/performance.md, "Issue 32, fourth pass: dealing
    #: whole layers")
    shared_cost = 2.78
    task_table = "moe_tasks"  # one row per task and policy: cosim.pairing compares the policies on it
    policy_protocol = contract.PricingSolver
    check_policy = classmethod(contract.check_solver)  # what `cosim check` runs on one of its policies
    task_view = contract.TASK_VIEW  # how cosim view draws a task
    headline_metrics = contract.HEADLINE_METRICS  # what cosim view, report and plot show
    #: link_aware=False: experts on the nearest vehicles, plain top-k gating
    policy_traits = {"link_aware": True}

    def __init__(self, config: dict, ctx: LayerContext):
        super().__init__(config, ctx)
        c, where = self.cfg, self.where
        _check(c, where)
        self.mem_gb = range_pair(c.iv_memory_gb, f"{where}.iv_memory_gb")
        self.cpu = range_pair(c.iv_compute_tflops, f"{where}.iv_compute_tflops")
        self.kappa = range_pair(c.energy_kappa, f"{where}.energy_kappa")
        d, ff, b = c.hidden, c.expert_ffn, c.bytes_per_param
        self.expert_gb = 2 * d * ff * b / 1e9  # two weight matrices
        self.flop_per_token = 4.0 * d * ff / 1e12  # TFLOP per (token, expert): two matmuls, 2 FLOP per MAC
        self.token_bits = d * b * 8
        # TV per layer: Q, K, V, O projections + scores and weighted sum + the gate
        tv_tflop = (8.0 * c.tokens * d * d + 4.0 * c.tokens * c.tokens * d + 2.0 * c.tokens * d * c.experts) / 1e12
        self.tv_layer_s = tv_tflop / c.tv_compute_tflops
        lo, hi = c.price_range
        for name, pol in self.configured.items():  # a posted price outside the game's range would be clipped
            price = getattr(pol.options, "uniform_price", None)
            if price is not None and not lo <= price <= hi:
                raise ConfigError(f"{where}.options.{name}.uniform_price: {price:g} is outside price_range [{lo:g}, {hi:g}]")
        self.kernel = kn.Kernel(list(self.policies), c.queue)
        #: (world, its snapshot, {(TV, IV names): _links_of}): this slot's links, shared by the tasks
        #: of every policy that placed the same TV's experts on the same IVs (_links)
        self._slot_links: tuple = (None, None, {})
        self.next_id = 0
        self._priced_once = False  # a task has been priced (_keep_long_lived freezes after the first)
        self.stats = {p: {"u_iv": [], "u_tv": [], "gap": [], "eq": [], "solve_ms": [], "evals": [], "declined": 0,
                          "reroutes": 0, "moved": 0} for p in self.policies}
        #: where the gate model runs, and what the summary says of it (``device``: the default
        #: "cpu" says nothing, so a default run's summary is what it was before the key existed);
        #: any other value is checked now (torch imported): a device torch does not find is a
        #: config error before the run
        self.gate_device, self.gate_device_name = (None, "cpu") if c.device == "cpu" else gate_device(c.device, where)
        self._gate: tuple | None = None  # (Vocabulary, GateModel), built at the first use (_gate_parts)

    def _gate_parts(self) -> tuple:
        """(vocabulary, gate model), built at their first use, not with the layer: a process that
        holds none of this layer's policies (the layer only checked there, its policies dealt to a
        worker with ``--jobs``) imports no torch and builds no model (~1.2 s of CPU). The model's
        weights come from ``gate_model_seed`` under a forked RNG, so when it is built changes nothing."""
        if self._gate is None:
            from cosim.layers.moe.model import GateModel, Vocabulary, keep_freed_memory

            c = self.cfg
            keep_freed_memory()  # the gate's 256 KB buffers reused, not faulted in afresh (same values)
            if self.gate_device is None:
                self.gate_device, self.gate_device_name = gate_device(c.device, self.where)
            vocab = Vocabulary()
            model = GateModel(len(vocab), c.gate_model_dim, 2 * c.gate_model_dim, c.moe_layers, c.experts,
                              c.top_k, c.gate_model_seed).to(self.gate_device)
            self._gate = (vocab, model)
            self._keep_long_lived()  # torch's objects and the model's, out of the collector's full passes
        return self._gate

    @property
    def vocab(self):  # noqa: ANN201
        """The prompts' vocabulary (:class:`~cosim.layers.moe.model.Vocabulary`; built at first use)."""
        return self._gate_parts()[0]

    @property
    def gate_model(self):  # noqa: ANN201
        """The gate model (:class:`~cosim.layers.moe.model.GateModel`; built at first use)."""
        return self._gate_parts()[1]

    def on_start(self) -> None:
        self.table = self.ctx.table(self.task_table)

    # -- the world as IVs -------------------------------------------------------------------
    def candidates(self, world: World, tv: int) -> dict:
        """Vehicles within V2V range of ``tv``, with what the policies need to rank them."""
        c, s, chn = self.cfg, world.snap, world.cfg.channel
        d = np.hypot(s.x - s.x[tv], s.y - s.y[tv])
        idx = np.flatnonzero((d <= chn.v2v_range_m) & (np.arange(len(s)) != tv))
        dist = d[idx]
        gain = ch.path_gain(dist, chn.v2v_pl_ref_db, chn.v2v_pl_exponent, 1.0, chn.min_distance_m)
        snr = world.vehicle_p_mw * gain / world.noise_mw
        bw = world.bandwidth_hz[idx]
        mean_rate = bw * np.log2(1.0 + snr)
        outage = 1.0 - np.exp(-(2.0 ** (c.min_rate_bps / bw) - 1.0) / np.maximum(snr, 1e-300))
        contact = dwell_straight(s.x[idx] - s.x[tv], s.y[idx] - s.y[tv], world.vx[idx] - world.vx[tv],
                                 world.vy[idx] - world.vy[tv], 0.0, 0.0, chn.v2v_range_m, cap_s=600.0)
        contact = np.nan_to_num(contact, nan=0.0)
        quality = mean_rate / (mean_rate + c.rate_ref_bps) * (1.0 - outage) * np.minimum(1.0, contact / c.deadline_s)
        return {"idx": idx, "dist": dist, "quality": quality,
                "mem": world.vehicle_draw(ch.VEH_MEM, *self.mem_gb)[idx],
                "cpu": world.vehicle_draw(ch.VEH_CPU, *self.cpu)[idx],
                "kappa": world.vehicle_draw(ch.VEH_ENERGY, *self.kappa)[idx]}

    def place(self, cand: dict, link_aware: bool) -> tuple[np.ndarray, np.ndarray]:
        """(chosen candidate positions, (L, E) host of each expert as an index into them, -1 none)."""
        c = self.cfg
        order = np.argsort(-cand["quality"] if link_aware else cand["dist"], kind="stable")
        if link_aware:
            order = order[cand["quality"][order] > 0]
        chosen = order[: c.ivs_per_task]
        slots = np.floor(cand["mem"][chosen] / self.expert_gb).astype(np.int64)
        host = np.full((c.moe_layers, c.experts), -1, dtype=np.int64)
        n = len(chosen)
        if n == 0:
            return chosen, host
        k = 0
        for layer in range(c.moe_layers):
            for e in range(c.experts):
                for _ in range(n):  # the next IV in turn with memory left
                    j = k % n
                    k += 1
                    if slots[j] > 0:
                        slots[j] -= 1
                        host[layer, e] = j
                        break
        return chosen, host

    def gate_quality(self, host: np.ndarray, quality: np.ndarray | None) -> np.ndarray:
        """(L, E) what the gate multiplies each expert's score by: its host's link quality
        (physical gating; ``quality`` per chosen IV) or 1 (plain), 0 where not placed."""
        if quality is None or not len(quality):
            return (host >= 0).astype(float)
        return np.where(host >= 0, quality[np.maximum(host, 0)], 0.0)

    def route(self, prompt, gate_q: np.ndarray, memo: dict | None = None) -> np.ndarray:  # noqa: ANN001
        """Tokens routed to each expert, (L, E): the gate model's forward pass on the task's
        prompt, each layer gated by ``gate_q`` (on the CPU one thread: a small model on a shared
        machine; on CUDA the thread setting is left alone); ``memo``: the task's, shared by its
        policies (:meth:`GateModel.load`, which moves the prompt and the quality to the model's
        device and the loads back)."""
        import torch

        model = self.gate_model  # built at the first use, and with it gate_device
        with _one_thread() if self.gate_device.type == "cpu" else contextlib.nullcontext():
            return model.load(prompt, torch.as_tensor(gate_q, dtype=torch.float32), memo).numpy()

    # -- per slot ---------------------------------------------------------------------------
    def on_slot(self, world: World) -> None:
        t, gamma = world.time_s, self.ctx.slot_s
        users, when = self.requested(*arrivals(world.rng("moe.requests"), self.cfg.request_rate_per_s * gamma,
                                               np.arange(len(world.snap)), t, gamma))
        for u, t_request in zip(users, when):
            self.submit(world, int(u), t_request)
        index = world.index
        self.kernel.run(t + gamma, lambda task: self._advance(task, world, index))

    def _free(self, cand: dict, names: list, policy: str) -> dict:
        """``cand`` less what ``policy``'s running tasks hold of each vehicle's compute and memory
        (simulated queue); a vehicle with no compute left hosts nothing."""
        cap = self.kernel.capacity
        cpu = cand["cpu"] - np.array([cap.held((policy, "cpu", n)) for n in names])
        mem = cand["mem"] - np.array([cap.held((policy, "mem", n)) for n in names])
        mem = np.where(cpu > 1e-9, np.maximum(mem, 0.0), 0.0)
        return {**cand, "cpu": np.maximum(cpu, 0.0), "mem": mem}

    def _prices(self, policy: str, game: Game, rng) -> np.ndarray:  # noqa: ANN001
        """The policy's prices for ``game``, checked: ``game.n`` finite prices in the price range."""
        out = self.call(policy, game, rng=rng)
        try:
            p = np.asarray(out, dtype=float).reshape(-1)
        except (TypeError, ValueError):
            raise PolicyFailed(f"returned {type(out).__name__}, not an array of prices") from None
        if p.shape != (game.n,):
            raise PolicyFailed(f"returned {p.size} prices for a game of {game.n} IVs")
        if not np.all(np.isfinite(p)) or np.any(p < game.p_min * (1 - 1e-9)) or np.any(p > game.p_max * (1 + 1e-9)):
            raise PolicyFailed(f"returned prices outside price_range [{game.p_min:g}, {game.p_max:g}] "
                               f"(min {np.min(p):g}, max {np.max(p):g})")
        return p

    def submit(self, world: World, tv: int, t_request: float) -> int:
        import torch

        c = self.cfg
        tid = self.next_id
        self.next_id += 1
        cand = self.candidates(world, tv)
        cand_names = [str(v) for v in world.snap.ids[cand["idx"]]]
        seed = int(ch.stable_uid(f"moe.{self.ctx.seed}.{tid}") % 2**62)
        prompt = self.vocab.prompt(c.tokens, torch.Generator().manual_seed(seed))  # the same for every policy
        memo: dict = {}  # its forward pass, block by block, shared by the policies and their reroutes
        tv_name = str(world.snap.ids[tv])
        contention = self.kernel.capacity is not None
        # per placement (link-aware or not; with the simulated queue also what the policy's running
        # tasks leave free of each candidate, since each policy's tasks hold different IVs — policies
        # that see the same free compute and memory place, route and price the same game, so they
        # share it, each pricing its own view of it (Game.view): issue 32, fourth pass): (chosen,
        # host, gate quality, tokens, game, candidates)
        shared: dict = {}
        priced = []
        for policy in self.live():
            aware = self.policies[policy].traits["link_aware"]
            cp = self._free(cand, cand_names, policy) if contention else cand
            key = (aware, cp["cpu"].tobytes(), cp["mem"].tobytes()) if contention else aware
            if key not in shared:
                chosen, host = self.place(cp, aware)
                gq = self.gate_quality(host, cp["quality"][chosen] if aware and c.physical_gating else None)
                tokens = self.route(prompt, gq, memo) if len(chosen) else None
                game = None
                if len(chosen) and tokens.sum() > 0:
                    work = np.zeros(len(chosen))
                    np.add.at(work, host[host >= 0], tokens[host >= 0] * self.flop_per_token)
                    used = work > 0
                    g = Game(work[used], cp["cpu"][chosen][used], cp["kappa"][chosen][used], c.tv_value,
                             c.tv_saturation_tflops, c.substitutability, *c.price_range)
                    game = (g, used, interior_equilibrium(g))
                shared[key] = (chosen, host, gq, tokens, game, cp)
            chosen, host, gq, tokens, game, cp = shared[key]
            names = [cand_names[j] for j in chosen]
            if game is None:
                self.kernel.count(policy)
                task = Task(tid, policy, t_request, tv=tv_name, ivs=names, layer_iv=host,
                            tokens=np.zeros_like(host))
                self._finish(task, "failed", "no-ivs")
                continue
            rng = self.rng_for(policy, world, f"moe.{policy}.{tid}")
            t0 = time.perf_counter()
            view = game[0].view()  # its own: what one policy counts or sets on it never reaches another
            try:
                p_used = self._prices(policy, view, rng)
            except PolicyFailed as exc:
                self._drop(policy, exc)
                continue
            self.kernel.count(policy)
            priced.append((policy, key, names, p_used, 1e3 * (time.perf_counter() - t0), view.evals))
        # the Nash gap and the outcome of every policy's prices, one batched evaluation per game
        # (each row's values are those of a call of its own: the kernels and numpy's reductions
        # along the last axis go row by row)
        gaps, outs = {}, {}
        for key in dict.fromkeys(item[1] for item in priced):
            rows = [i for i, item in enumerate(priced) if item[1] == key]
            p = np.stack([priced[i][3] for i in rows])
            g, o = shared[key][4][0].nash_gap(p, grid=48, refine=12), shared[key][4][0].outcome(p)
            for r, i in enumerate(rows):
                gaps[i] = float(g[r])
                outs[i] = {k: v[r:r + 1] for k, v in o.items()}
        for i, (policy, key, names, p_used, solve_ms, evals) in enumerate(priced):
            chosen, host, gq, tokens, (game, used, p_eq), cp = shared[key]
            out = outs[i]
            prices, f, u_iv = np.zeros(len(chosen)), np.zeros(len(chosen)), np.zeros(len(chosen))
            prices[used], f[used], u_iv[used] = p_used, out["f"][0], out["u_iv"][0]
            if not out["declined"][0] and (f[used] == 0).any():
                # allocation: experts on IVs the TV bought nothing from are masked, and the gate
                # routes their tokens to the bought ones
                gq = np.where((host >= 0) & (f[np.maximum(host, 0)] > 0), gq, 0.0)
                tokens = self.route(prompt, gq, memo)  # policies that mask alike share it (the memo)
            # the placement is shared between policies: each task re-routes its own copy
            task = Task(tid, policy, t_request, clock=t_request, tv=tv_name, ivs=names, layer_iv=host.copy(),
                        tokens=tokens.copy(), prompt=prompt, gate_memo=memo, gate_q=gq.copy(), evals=evals, prices=prices, f=f,
                        u_iv=u_iv, u_tv=float(out["u_tv"][0]), nash_gap=gaps[i], solve_ms=solve_ms,
                        eq_distance=float(np.max(np.abs(p_used - p_eq) / p_eq)) if p_eq is not None else math.nan)
            if out["declined"][0]:
                self.stats[policy]["declined"] += 1
                self._finish(task, "failed", "priced-out")
                continue
            if contention:  # the task holds what it bought and the memory of its experts until it ends
                cap = self.kernel.capacity
                n_exp = np.bincount(host[host >= 0], minlength=len(chosen))
                for j, name in enumerate(names):
                    if f[j] > 0:
                        cap.hold(id(task), (policy, "cpu", name), float(f[j]))
                    if n_exp[j]:
                        cap.hold(id(task), (policy, "mem", name), float(n_exp[j] * self.expert_gb))
            self.kernel.start(task)
        if priced and not self._priced_once:  # the first priced task loaded the solvers' kernels
            self._priced_once = True  # (numba; a task with no IVs loads none): theirs too
            self._keep_long_lived()
        return tid

    @staticmethod
    def _keep_long_lived() -> None:
        """``gc.freeze()``, called when the gate model is built (at its first use) and after its
        first priced task (the first whose game a policy priced: it loaded the solvers' kernels);
        :meth:`on_end` calls ``gc.unfreeze()`` (issue 32, fourth pass; process-wide, like
        :func:`~cosim.layers.moe.model.keep_freed_memory`): it undoes every freeze in the process,
        not only this layer's — anything else in the process that froze objects sees them
        unfrozen at the layer's end.

        torch and numba bring some 270,000 objects the cyclic garbage collector tracks; each of
        its full (oldest-generation) passes walks all of them — ~0.11 s a pass here, two passes a
        grid6_moe run (0.22-0.25 s of CPU: ~4 ms a task at 300 s, ~2 ms at 600 s). Frozen, those
        objects sit in a permanent generation the passes skip (0.05 s for the same passes). Nothing
        is computed differently: reference counting still frees every frozen object that is let
        go, and only garbage in reference cycles among objects alive at the freeze would wait
        until :meth:`on_end` unfreezes them (moving them back to the oldest generation)."""
        gc.freeze()

    def _drop(self, policy: str, exc: PolicyFailed) -> None:
        """A failed policy: one line, and its running tasks end "policy-error"."""
        self.fail(policy, str(exc))
        for task in self.kernel.running(policy):
            self._finish(task, "failed", "policy-error")

    def _advance(self, task: Task, world: World, index: dict) -> None:
        """One MoE layer of ``task`` with this slot's world (or its end)."""
        c = self.cfg
        if task.tv not in index:
            return self._finish(task, "failed", "tv-vanished")
        tv = index[task.tv]
        ok, rates = self._links(task, world, index, tv)
        # IVs gone or out of range that this layer needs: move their experts or re-gate around them
        move_s = 0.0
        host, toks = task.layer_iv[task.layer].tolist(), task.tokens[task.layer].tolist()
        lost = sorted({host[e] for e, n in enumerate(toks) if n > 0} - {j for j in ok if ok[j]})
        if lost:  # every IV out of reach loses its experts (the re-run gate must not pick another)
            move_s = self._reroute(task, world, index, tv, [j for j in ok if not ok[j]], ok)
            if task.status != "running":
                return None
            host, toks = task.layer_iv[task.layer].tolist(), task.tokens[task.layer].tolist()
        if c.placement == "load" and not task.loaded:
            move_s += self._load(task, world, index, tv)
        comm, comp, mem = self._layer_terms(host, toks, rates, task.f)
        if not math.isfinite(comm):  # a V2V rate of 0 (cannot happen within range)
            return self._finish(task, "failed", "no-link")
        task.tv_s.append(self.tv_layer_s)
        task.move.append(move_s)
        task.comm.append(comm)
        task.comp.append(comp)
        task.mem.append(mem)
        task.clock += self.tv_layer_s + move_s + (comm + comp + mem)
        task.layer += 1
        if task.layer >= c.moe_layers:
            latency = task.clock - task.t_request
            self._finish(task, "done" if latency <= c.deadline_s + 1e-12 else "failed",
                         "" if latency <= c.deadline_s + 1e-12 else "deadline")

    def _layer_terms(self, host: list, toks: list, rates: dict, f: np.ndarray) -> tuple[float, float, float]:
        """(communication, computation, memory) seconds of one MoE layer: those of the IV whose sum
        of the three is largest (the first such, in the order the layer's experts first name them;
        0, 0, 0 where no token reached an expert). ``host`` and ``toks``: the layer's row of
        ``layer_iv`` and of ``tokens`` (lists); ``rates``: :meth:`_links`'; ``f``: the compute bought.

        Per IV i: comm = n_i b / r_up + n_i b / r_down (n_i its tokens, b bits a token), comp = n_i
        FLOP / f_i, mem = (its experts) x expert size / memory bandwidth. Issue 32, fourth pass: in
        Python floats, one IV at a time — the IEEE operations of the numpy code this replaced on
        arrays of 1-8 IVs in the same order (a rate of 0 gives inf, as numpy's division did; the
        first NaN wins as in ``np.argmax``), at a fifth of its CPU."""
        per_iv: dict[int, list] = {}
        memory_gbps = self.cfg.memory_gbps
        for e, n in enumerate(toks):
            if n > 0:
                per_iv.setdefault(host[e], []).append(n)
        best, out = None, (0.0, 0.0, 0.0)
        for j, ns in per_iv.items():
            n_tok = float(sum(ns))
            bits = n_tok * self.token_bits
            (up, down), fj = rates[j], float(f[j])
            comm = _div(bits, up) + _div(bits, down)
            comp = _div(n_tok * self.flop_per_token, fj)
            mem = len(ns) * self.expert_gb / memory_gbps
            total = comm + comp + mem
            if total != total:  # NaN: np.argmax takes the first one
                return comm, comp, mem
            if best is None or total > best:  # the first maximum, as np.argmax
                best, out = total, (comm, comp, mem)
        return out

    def _links(self, task: Task, world: World, index: dict, tv: int) -> tuple[dict, dict]:
        """This slot's links of ``task``: {IV j: within V2V range of the TV} and {IV j: (TV -> IV
        rate, IV -> TV rate)} for every IV still in the simulation. A task runs several layers in
        one slot, all with the slot's snapshot and fading: computed at its first layer in the slot
        and kept with the snapshot (each slot's is a new object) for the others (issue 32), both
        directions in one call — the rate is elementwise in the pairs, so the values are those of a
        call per layer and direction."""
        if task.links and task.links[0] is world and task.links[1] is world.snap:  # this slot's, kept
            return task.links[2], task.links[3]
        shared = self._slot_links
        if shared[0] is not world or shared[1] is not world.snap:  # a new slot: forget the last one's
            shared = self._slot_links = (world, world.snap, {})
        key = (task.tv, tuple(task.ivs))
        got = shared[2].get(key)
        if got is None:
            got = shared[2][key] = self._links_of(task.ivs, world, index, tv)
        task.links = (world, world.snap, *got)
        return got

    @staticmethod
    def _links_of(ivs: list, world: World, index: dict, tv: int) -> tuple[dict, dict]:
        """:meth:`_links` computed: the range test and both directions' rates of IVs ``ivs`` (names)
        from the vehicle at ``tv``, in one ``v2v_rate_bps`` call (rates as Python floats)."""
        s = world.snap
        ok, present = {}, []
        for j, name in enumerate(ivs):
            i = index.get(name)
            ok[j] = i is not None and math.hypot(s.x[i] - s.x[tv], s.y[i] - s.y[tv]) <= world.cfg.channel.v2v_range_m
            if i is not None:
                present.append((j, i))
        rates = {}
        if present:
            ids = np.array([i for _, i in present])
            tvs = np.full(len(ids), tv)
            both = world.v2v_rate_bps(np.concatenate([tvs, ids]), np.concatenate([ids, tvs])).tolist()
            rates = {j: (both[k], both[len(ids) + k]) for k, (j, _) in enumerate(present)}
        return ok, rates

    def _load(self, task: Task, world: World, index: dict, tv: int) -> float:
        """``placement = "load"``: the seconds the TV spends sending, before the first layer, the
        weights of every placed expert (all layers) hosted on an IV it bought compute from, one
        after another at this slot's TV -> IV V2V rates (bits / rate each, as a reroute's move);
        a reroute before it (an IV gone before the first layer) re-placed them for free, since
        nothing had been sent yet."""
        task.loaded = True
        host = task.layer_iv
        n_exp = np.bincount(host[host >= 0], minlength=len(task.ivs))
        js = [j for j in range(len(task.ivs)) if n_exp[j] and task.f[j] > 0]
        if not js:
            return 0.0
        rate = world.v2v_rate_bps(np.full(len(js), tv), np.array([index[task.ivs[j]] for j in js]))
        return float(sum(n_exp[j] * self.expert_gb * 8e9 / r for j, r in zip(js, rate)))

    def _reroute(self, task: Task, world: World, index: dict, tv: int, lost: list, ok: dict) -> float:
        """The experts of the remaining layers hosted on the ``lost`` IVs (out of V2V range of the
        TV, or gone), then the gate re-run on the prompt for the remaining layers; returns the
        seconds the TV spends sending weights before this layer can run (``placement = "load"``
        once the initial weights are sent; 0 with ``"preloaded"``: the new host holds them).

        ``reroute = "move"`` (our choice of source: the TV, which holds the model it serves — the
        departed IV is out of its range): expert by expert, in layer order, to the reachable IV the
        TV bought from with the best V2V rate this slot and memory left for it (its memory less
        what it already holds: this task's experts, or with the simulated queue what the policy's
        running tasks hold); the TV sends them one after another, bits / rate each (``"load"``). An expert that
        fits nowhere is masked. ``"regate"``: every such expert is masked (no transfer). Either
        way the gate re-runs (a moved expert's quality is its new host's), and prices are **not**
        renegotiated: the TV keeps the compute it bought (f_i), so more work on an IV takes longer.
        No reachable IV it bought from: the task fails "iv-left-range"."""
        c = self.cfg
        alive = [j for j in range(len(task.ivs)) if ok[j] and task.f[j] > 0]
        if not alive:
            self._finish(task, "failed", "iv-left-range")
            return 0.0
        task.reroutes += 1
        rest = task.layer_iv[task.layer:]  # a view: edits go to the task
        q = task.gate_q[task.layer:]
        moving = np.argwhere(np.isin(rest, lost))
        move_s = 0.0
        if c.reroute == "move":
            ids = np.array([index[task.ivs[j]] for j in alive])
            rate = world.v2v_rate_bps(np.full(len(ids), tv), ids)
            order = np.argsort(-rate, kind="stable")
            total = world.vehicle_draw(ch.VEH_MEM, *self.mem_gb)[ids]
            cap = self.kernel.capacity
            if cap is not None:
                held = np.array([cap.held((task.policy, "mem", task.ivs[j])) for j in alive])
            else:
                held = np.array([(task.layer_iv == j).sum() * self.expert_gb for j in alive])
            free = total - held
            aware = self.policies[task.policy].traits["link_aware"] and c.physical_gating
            quality = self.candidates(world, tv) if aware else None
            qual_of = dict(zip(world.snap.ids[quality["idx"]].tolist(), quality["quality"])) if aware else {}
            sent = np.zeros(len(alive))
            for layer, e in moving:
                k = next((k for k in order if free[k] >= self.expert_gb - 1e-12), None)
                if k is None:
                    rest[layer, e], q[layer, e] = -1, 0.0
                    continue
                free[k] -= self.expert_gb
                sent[k] += 1
                rest[layer, e] = alive[k]
                q[layer, e] = qual_of.get(task.ivs[alive[k]], 0.0) if aware else 1.0
            for k in np.flatnonzero(sent):
                if task.loaded:  # placement = "load" (and the weights sent): the move pays; "preloaded": free
                    move_s += sent[k] * self.expert_gb * 8e9 / rate[k]
                if cap is not None:
                    cap.hold(id(task), (task.policy, "mem", task.ivs[alive[k]]), float(sent[k] * self.expert_gb))
            task.moved_experts += int(sent.sum())
        else:
            rest[tuple(moving.T)] = -1
            q[tuple(moving.T)] = 0.0
        task.tokens[task.layer:] = self.route(task.prompt, task.gate_q, task.gate_memo)[task.layer:]
        return move_s

    def _finish(self, task: Task, status: str, reason: str) -> None:
        st = self.stats[task.policy]
        latency = self.kernel.finish(task, status, reason, completed=task.layer >= self.cfg.moe_layers)
        st["reroutes"] += task.reroutes
        st["moved"] += task.moved_experts
        offered = task.prices > 0 if len(task.prices) else np.zeros(0, dtype=bool)
        u_iv = float(task.u_iv[offered].mean()) if offered.any() else math.nan  # every IV offered a price
        if offered.any():
            st["u_iv"].append(u_iv)
            st["u_tv"].append(task.u_tv)
            st["gap"].append(task.nash_gap)
            st["eq"].append(task.eq_distance)
            st["solve_ms"].append(task.solve_ms)
            st["evals"].append(task.evals)
        used = [sorted({task.ivs[j] for j in row if j >= 0}) for row in task.layer_iv.tolist()] if task.ivs else []
        self.table.append({
            "task": np.array([task.task_id]), "policy": np.array([task.policy], dtype=object),
            "t_request_s": np.array([task.t_request]), "tv": np.array([task.tv], dtype=object),
            "ivs": Lists([list(task.ivs)], pa.string()),
            "layer_ivs": Lists([["|".join(u) for u in used]], pa.string()),
            "tokens_per_expert": Lists([task.tokens.ravel().tolist()], pa.int64()),
            "prices": Lists([task.prices.tolist()], pa.float64()),
            "compute_tflops": Lists([task.f.tolist()], pa.float64()),
            "layer_comm_s": Lists([task.comm], pa.float64()), "layer_comp_s": Lists([task.comp], pa.float64()),
            "layer_mem_s": Lists([task.mem], pa.float64()), "layer_tv_s": Lists([task.tv_s], pa.float64()),
            "layer_move_s": Lists([task.move], pa.float64()),
            "latency_s": np.array([latency]),
            "iv_utility": np.array([u_iv]),
            "tv_utility": np.array([task.u_tv]), "nash_gap": np.array([task.nash_gap]),
            "eq_distance": np.array([task.eq_distance]),
            "solve_ms": np.array([task.solve_ms]), "solver_evals": np.array([task.evals]),
            "reroutes": np.array([task.reroutes]), "moved_experts": np.array([task.moved_experts]),
            "success": np.array([status == "done"]), "failure": np.array([reason], dtype=object),
            "outcome": np.array([status], dtype=object),
        })

    def on_end(self) -> dict:
        gc.unfreeze()  # (_keep_long_lived)
        for task in self.kernel.running():  # past its deadline already: failed; else no outcome yet
            late = task.clock - task.t_request > self.cfg.deadline_s + 1e-12
            self._finish(task, "failed" if late else kn.CENSORED, "deadline" if late else kn.CENSORED)
        out = {}
        for p, st in self.stats.items():
            mean = (lambda v: float(np.mean(v)) if len(v) else None)
            out[p] = {
                **self.kernel.block(p),
                "mean_iv_utility": mean(st["u_iv"]),
                "mean_tv_utility": mean(st["u_tv"]),
                "mean_nash_gap": mean(st["gap"]),
                # over the tasks whose game has an interior equilibrium (eq_tasks of them)
                "mean_eq_distance": mean([v for v in st["eq"] if math.isfinite(v)]),
                "eq_tasks": sum(math.isfinite(v) for v in st["eq"]),
                "declined": st["declined"],
                "reroutes": st["reroutes"],
                "moved_experts": st["moved"],
                "mean_solve_ms": mean(st["solve_ms"]),
                "mean_solver_evals": mean(st["evals"]),
            }
            if self.cfg.device != "cpu":  # "auto" or "cuda": the device this process's gate model ran on
                out[p]["gate_device"] = self.gate_device_name
        return out

    def longest_task_s(self) -> float:
        """A task that succeeds ends within its deadline."""
        return self.cfg.deadline_s

    def roles(self, policy: str | None = None) -> dict[str, str]:
        """The task vehicles of running tasks, and the IVs hosting their experts of the layers still to run."""
        out: dict[str, str] = {}
        for task in self.kernel.running(policy):
            add_role(out, task.tv, ROLE_USER)
            for j in np.unique(task.layer_iv[task.layer:]):
                if j >= 0:
                    add_role(out, task.ivs[j], ROLE_IV)
        return out
