"""The layer contract.

A layer is the AI workload attached to the traffic: it sees the :class:`~cosim.world.World`
once per slot and writes rows to result tables. The run calls

    layer = LayerClass(config_table, ctx)   # validate the [layers.NAME] table, bind policies
    layer.on_start()                       # once, before the first slot
    layer.on_slot(world)                   # every slot
    block = layer.end()                    # once: on_end() plus each failed policy's error;
                                           # goes to summary.json["layers"][NAME]

**Side-by-side policies.** A layer that compares policies (schedulers, pricing, eviction) has a
``policies`` key and an ``options`` key in its config dataclass. The base binds each named
policy from the registry (:mod:`cosim.registry`, where built-in and plugin policies register
alike), validates its ``[layers.NAME.options.POLICY]`` table with the policy's own options
dataclass and its registration traits against the layer's ``policy_traits``. The layer draws a
slot's requests once from ``world.rng("<layer>.requests")`` and hands the same requests and the
same world to every policy; it calls a policy with :meth:`Layer.call`.

**The policy protocol** (one for every layer and kind of policy): a policy is called
``fn(*inputs, rng, options)``, positionally — the inputs the layer declares in
:attr:`Layer.policy_protocol` (a :class:`typing.Protocol` whose ``__call__`` is the typed call
signature, e.g. ``(problem, rng, options)`` for a DViT scheduler), then a
``numpy.random.Generator`` for a stochastic policy (None for the others), then its validated
options (None for a policy without options). :func:`call_policy` is that call, for the layers,
``cosim check`` and the Gymnasium environments alike; a policy that cannot take it is refused
with one line when the layer binds it. A policy that raises or returns something malformed is dropped with one
line (:meth:`Layer.fail`) naming the policy, where it comes from and the scenario key; the
others go on and their results are kept.

Registering a layer is one decorator: ``@register_layer("dvit")``; a policy:
``@register_policy("dvit", "vidi", options=VidiOptions)``.

**Roles.** ``layer.roles()`` says what each vehicle does for the layer in the current slot
(vehicle id -> one of the ``ROLE_*`` names below; vehicles without a role are left out). The
sumo-gui overlay (:mod:`cosim.overlay`) colours vehicles by it; a layer never calls TraCI itself.
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Sequence

import numpy as np

from cosim import registry
from cosim.config import build_section
from cosim.errors import ConfigError, interrupt_in
from cosim.registry import PolicySpec, register_layer, register_policy

if TYPE_CHECKING:
    from cosim.config import Config
    from cosim.world import World


#: the role names of :meth:`Layer.roles`, strongest first (a vehicle with several roles shows the first)
ROLE_FAILED = "failed"  # a task of this vehicle failed in this slot
ROLE_USER = "user"  # requested a task that is running (DViT user, MoE task vehicle)
ROLE_HELPER = "helper"  # holds a DViT task's latent: executing (or about to hand off) a denoising step
ROLE_IV = "iv"  # an infrastructure vehicle hosting experts of a running MoE task
ROLES = (ROLE_FAILED, ROLE_USER, ROLE_HELPER, ROLE_IV)


def add_role(roles: dict[str, str], vehicle: str, role: str) -> None:
    """Give ``vehicle`` ``role`` unless it already has a stronger one (earlier in ROLES)."""
    old = roles.get(vehicle)
    if old is None or ROLES.index(role) < ROLES.index(old):
        roles[vehicle] = role


@dataclass
class LayerContext:
    """What a layer gets at construction."""

    seed: int
    slot_s: float
    scenario_file: str
    table: Callable[[str], Any]  # table(name) -> writer with .append(columns: dict[str, array])
    begin_s: float = 0.0  # the run's begin [s]
    end_s: float | None = None  # the run's end [s]; None: not known in advance (attach, a sumocfg without one)
    warmup_s: float = 0.0  # scenario.warmup_s (-1: auto); see Layer.request_window
    drain_s: float = 0.0  # scenario.drain_s (-1: auto)
    #: layer name -> the policies this process runs of it (the plugin's share when policy workers
    #: run the others, :mod:`cosim.engine.workers`); a layer not named runs all it is configured
    #: with. Every configured policy is bound and checked either way (:attr:`Layer.configured`).
    policies: dict[str, tuple[str, ...]] | None = None

    @classmethod
    def for_run(cls, cfg: "Config", table: Callable[[str], Any], label: str | None = None) -> "LayerContext":
        """The context of a run of ``cfg`` (its timeline and request window from the scenario)."""
        from cosim.config import run_window

        begin, end = run_window(cfg)
        sc = cfg.scenario
        return cls(seed=sc.seed, slot_s=sc.slot_s, scenario_file=label or cfg.source_file, table=table,
                   begin_s=begin, end_s=end, warmup_s=sc.warmup_s, drain_s=sc.drain_s)


@dataclass(frozen=True)
class Metric:
    """A number of a layer's summary block (one per policy, or per entry), as the tools show it:
    ``cosim view``'s table, ``cosim report``'s panels, ``cosim plot``'s figures."""

    key: str  # its key in each entry of the layer's summary block (summary.csv: KEY.mean, KEY.ci95)
    label: str  # what it is, with its unit (an axis label)
    digits: int = 3  # decimals in cosim view's table


#: what every layer with a task table reports per policy (:meth:`cosim.layers.kernel.Kernel.block`),
#: the first columns of its table in ``cosim view``
TASK_METRICS = (Metric("tasks", "tasks", 0), Metric("success_rate", "success rate"),
                Metric("mean_latency_s", "mean latency [s]"), Metric("p95_latency_s", "95th-percentile latency [s]"))


@dataclass(frozen=True)
class TaskView:
    """How ``cosim view`` draws the rows of a layer's task table (:attr:`Layer.task_table`: one
    row per task and policy with ``policy``, ``t_request_s``, ``latency_s``, ``success``,
    ``failure``): ``vehicle`` names the column of the requesting vehicle; ``segments(row,
    index, rsus)`` turns one row (a dict) into ``(segments, end [s], extra)`` — each segment
    ``[who, start [s], end [s]]``, ``who`` a vehicle index (``index(id)``: -2 when it is not in
    the page) or -1 for the RSU, or a list of vehicle indices; ``rsus``: the run's RSUs from
    ``summary.json``; ``extra``: more keys for the page (JSON). ``draw`` is how the page shows a
    segment: ``"chain"`` (one device at a time, with hand-off arrows from the RSU at
    ``extra["rsu"]``: DViT) or ``"group"`` (the requesting vehicle joined to every vehicle of the
    segment: MoE)."""

    vehicle: str
    segments: Callable[[dict, Callable[[str], int], list], tuple[list, float, dict]]
    draw: str = "group"


#: ``scenario.warmup_s = -1`` (auto): this long, at most :data:`AUTO_SHARE` of the run [s]
AUTO_WARMUP_S = 60.0
#: the most of a run's length an automatic warm-up or drain takes
AUTO_SHARE = 0.1


def call_policy(fn: Callable[..., Any], inputs: Sequence[Any], rng: np.random.Generator | None, options: Any) -> Any:
    """The one way cosim calls a policy: ``fn(*inputs, rng, options)`` (the module docstring)."""
    return fn(*inputs, rng, options)


def protocol_inputs(protocol: type | None, where: str = "") -> tuple[str, ...] | None:
    """The input names of a policy protocol: the parameters of its ``__call__`` before ``rng``
    and ``options``, which must be its last two (None: no protocol declared)."""
    if protocol is None:
        return None
    params = [p.name for p in inspect.signature(protocol.__call__).parameters.values()][1:]  # less self
    if params[-2:] != ["rng", "options"]:
        raise TypeError(f"{where or protocol.__qualname__}: a policy protocol's __call__ must end with (rng, options), "
                        f"got ({', '.join(params)})")
    return tuple(params[:-2])


def check_signature(spec: PolicySpec, inputs: tuple[str, ...] | None, kind: str, where: str) -> None:
    """One line (ConfigError) when ``spec``'s function cannot be called as the protocol calls it:
    ``fn(*inputs, rng, options)`` — e.g. a policy written before every kind got ``rng`` (``fn(world,
    options)``). Callables whose signature Python cannot tell are let through."""
    if inputs is None:
        return
    try:
        sig = inspect.signature(spec.fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*range(len(inputs) + 2))
    except TypeError:
        shown = ", ".join(p.name for p in sig.parameters.values())
        raise ConfigError(f"{where}.policies: {kind} '{spec.name}' ({spec.origin}) takes ({shown}), but every "
                          f"{spec.layer} policy is called ({', '.join(inputs)}, rng, options): the layer's inputs, "
                          "then rng (None unless stochastic), then options (docs/plugins.md)") from None


class PolicyFailed(Exception):
    """A policy raised or returned something the layer cannot use; the message says what."""


@dataclass(frozen=True)
class Policy:
    """A registered policy bound to a layer: its spec, validated options and resolved traits."""

    spec: PolicySpec
    options: Any
    traits: dict

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def stochastic(self) -> bool:
        return self.spec.stochastic


class Layer:
    name: ClassVar[str] = ""
    #: the dataclass of the layer's ``[layers.NAME]`` keys (``config.option`` fields): validated
    #: into ``self.cfg`` at construction and listed by ``cosim config``; None for a free-form table
    config_class: ClassVar[type | None] = None
    #: the traits a policy of this layer may declare at registration, with their defaults
    policy_traits: ClassVar[dict[str, Any]] = {}
    #: what this layer calls a policy, for messages ("scheduler", "eviction policy", ...)
    policy_kind: ClassVar[str] = "policy"
    #: the on-demand snapshot fields this layer reads from ``world.snap``
    #: (:data:`cosim.sources.base.ON_DEMAND_FIELDS`, e.g. ``("accel",)``); a live run reads
    #: them from SUMO only when some layer (or a recorded trace) asks, else they are NaN
    snapshot_fields: ClassVar[tuple[str, ...]] = ()
    #: its policies may run in separate processes (``scenario.jobs >= 3``, :mod:`cosim.engine.workers`):
    #: each sees the same world and requests and shares no state with the others, every table row
    #: names its policy in a ``policy`` column, and :meth:`on_end` returns one block per policy
    shardable: ClassVar[bool] = False
    #: the CPU a process holding any of this layer's policies spends once, whichever of them it
    #: holds — imports, start-up, the work its policies share (the slot's requests, problems built
    #: for every policy, memos) — in the unit of the policies' ``cost=`` (CPU seconds per 300 s of
    #: grid6 at the layer's default load; 0 if not given). It decides only how policies are dealt
    #: over processes (:func:`cosim.engine.workers.plan`: a layer is split over processes only
    #: where that pays for this cost paid again), never a result
    shared_cost: ClassVar[float] = 0.0
    #: the table of one row per task and policy (columns ``task``, ``policy``, ``latency_s`` — NaN
    #: unless all the task's work was done — and ``outcome``: done | failed | censored) on which the
    #: run pairs every policy with the first, task by task (:mod:`cosim.pairing`: ``vs_baseline`` in
    #: each policy's summary block); None for a layer without tasks that span slots
    task_table: ClassVar[str | None] = None
    #: the typed call signature of this layer's policies: a :class:`typing.Protocol` whose
    #: ``__call__(self, *inputs, rng, options)`` names (and types) the inputs the layer passes
    #: (the module docstring); None: the layer does not say (its policies are still called
    #: ``fn(*inputs, rng, options)``, but nothing is checked before the first call)
    policy_protocol: ClassVar[type | None] = None
    #: how ``cosim view`` draws a task of :attr:`task_table` (None: the view lists the layer's
    #: summary but draws no task)
    task_view: ClassVar[TaskView | None] = None
    #: the numbers of its summary block that ``cosim plot`` draws against a swept parameter, and
    #: ``cosim view`` and ``cosim report`` show (after :data:`TASK_METRICS` for a layer with a task
    #: table; a layer without one gets a bar panel per metric in the report)
    headline_metrics: ClassVar[tuple[Metric, ...]] = ()
    #: the input names of :attr:`policy_protocol` (set from it for every subclass)
    policy_inputs: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def shown_metrics(cls) -> tuple[Metric, ...]:
        """The columns of this layer's table in ``cosim view``: :data:`TASK_METRICS` for a layer
        with a task table, then its :attr:`headline_metrics` not among them."""
        first = TASK_METRICS if cls.task_table is not None else ()
        return first + tuple(m for m in cls.headline_metrics if m.key not in {f.key for f in first})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.policy_inputs = protocol_inputs(cls.policy_protocol, f"{cls.__module__}.{cls.__qualname__}.policy_protocol")

    def __init__(self, config: dict, ctx: LayerContext):
        self.config = config
        self.ctx = ctx
        #: how errors name this layer's table: "<scenario file>: layers.NAME"
        self.where = f"{ctx.scenario_file}: layers.{self.name}"
        #: policy -> the one line saying why it was dropped mid-run
        self.failed: dict[str, str] = {}
        section, bound = self.bind(config, ctx.scenario_file)
        if section is not None:
            self.cfg = section
        #: every configured policy, bound and checked, in the configured order: what a check
        #: across the policies (a trait against a layer key, an option against a range) walks,
        #: so that a run with policy workers refuses a bad one before it starts
        self.configured: dict[str, Policy] = bound
        share = (ctx.policies or {}).get(self.name)
        #: the policies this process runs (all configured, unless ``ctx.policies`` deals some to
        #: policy workers), in the configured order: what a layer keeps state for and calls
        self.policies: dict[str, Policy] = bound if share is None else {p: v for p, v in bound.items() if p in share}

    @classmethod
    def bind(cls, config: dict, scenario_file: str) -> tuple[Any, dict[str, Policy]]:
        """The ``[layers.NAME]`` table validated into :attr:`config_class` (None without one) and
        its policies bound (:func:`bind_policies`) and checked against :attr:`policy_protocol` —
        without building the layer (what :func:`bind_layers` deals policies by)."""
        if cls.config_class is None:
            return None, {}
        section = build_section(cls.config_class, config, scenario_file, f"layers.{cls.name}")
        if not hasattr(section, "policies"):
            return section, {}
        where = f"{scenario_file}: layers.{cls.name}"
        bound = bind_policies(cls.name, section.policies, getattr(section, "options", {}), where, cls.policy_traits)
        for pol in bound.values():
            check_signature(pol.spec, cls.policy_inputs, cls.policy_kind, where)
        return section, bound

    # -- the run's calls -------------------------------------------------------------------
    def on_start(self) -> None:
        pass

    def on_slot(self, world: "World") -> None:
        pass

    def on_end(self) -> dict:
        return {}

    def end(self) -> dict:
        """:meth:`on_end`, with an ``error`` line in the block of every policy dropped mid-run."""
        block = self.on_end()
        for name, msg in self.failed.items():
            block.setdefault(name, {})["error"] = msg
        return block

    def longest_task_s(self) -> float:
        """The longest a task of this layer can take and still succeed [s] (``scenario.drain_s =
        -1`` drains this long before the end); 0 for a layer whose requests are served at once."""
        return 0.0

    @functools.cached_property
    def request_window(self) -> tuple[float, float]:
        """``[from, until)`` [s]: the times at which this layer's tasks may be requested — after
        ``scenario.warmup_s`` from the begin, until ``scenario.drain_s`` before the end (auto, -1:
        60 s of warm-up and :meth:`longest_task_s` of drain, each at most a tenth of the run; with
        no known end, no drain). A task still running at the end is censored, not failed."""
        c = self.ctx
        span = (c.end_s - c.begin_s) if c.end_s is not None else math.inf
        warm = c.warmup_s if c.warmup_s >= 0 else min(AUTO_WARMUP_S, AUTO_SHARE * span)
        drain = c.drain_s if c.drain_s >= 0 else min(self.longest_task_s(), AUTO_SHARE * span)
        return c.begin_s + warm, (c.end_s - drain if c.end_s is not None else math.inf)

    def requested(self, who: np.ndarray, when: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The requests of :func:`arrivals` that fall in :attr:`request_window`."""
        lo, hi = self.request_window
        keep = (when >= lo) & (when < hi)
        return (who, when) if keep.all() else (who[keep], when[keep])

    def roles(self, policy: str | None = None) -> dict[str, str]:
        """Vehicle id -> ``ROLE_*`` for the current slot (after ``on_slot``), for one policy or,
        with None, for all of them (a vehicle with several roles gets the strongest). Default: none."""
        return {}

    # -- policies ----------------------------------------------------------------------------
    #: What ``cosim check`` runs on a policy of this layer (:mod:`cosim.conformance`, on its
    #: recorded worlds): a classmethod ``check_policy(spec, worlds)`` returning one line per
    #: violation. None: the default, :func:`cosim.conformance.runs_alone` — the layer, running
    #: only this policy over the recorded slots, drops nothing. A layer adds the checks of its
    #: policy kind by setting it (the built-in ones: their ``contract`` modules), from
    #: :mod:`cosim.conformance`'s kit (``probe``, ``call``, ``run_layer``, ...).
    check_policy: ClassVar[Callable[..., list[str]] | None] = None

    def live(self) -> list[str]:
        """The configured policies still running (not dropped), in the configured order."""
        return [p for p in self.policies if p not in self.failed]

    def call(self, name: str, *inputs: Any, rng: np.random.Generator | None = None) -> Any:
        """Call policy ``name`` as the protocol says — ``fn(*inputs, rng, options)`` with its
        options (:func:`call_policy`; ``rng``: :meth:`rng_for`, None for a deterministic policy);
        its exception becomes PolicyFailed."""
        pol = self.policies[name]
        if self.policy_inputs is not None and len(inputs) != len(self.policy_inputs):
            raise TypeError(f"layer '{self.name}' called policy '{name}' with {len(inputs)} input(s); its protocol "
                            f"takes ({', '.join(self.policy_inputs)}) and rng= by keyword")
        try:
            return call_policy(pol.spec.fn, inputs, rng, pol.options)
        except Exception as exc:  # noqa: BLE001 - someone else's code: one line, the others go on
            stop = interrupt_in(exc)  # a signal that came while a compiled kernel ran: not the policy's fault
            if stop is not None:
                raise stop from None
            raise PolicyFailed(f"raised {type(exc).__name__}: {exc}") from exc

    def fail(self, name: str, what: str) -> None:
        """Drop policy ``name`` for the rest of the run, with one line on stderr and in the summary."""
        if name in self.failed:
            return
        spec = self.policies[name].spec
        msg = (f"{self.where}.policies: {self.policy_kind} '{name}' ({spec.origin}) {what}; "
               f"its results stop here, the other policies go on")
        self.failed[name] = msg
        print(f"cosim: warning: {msg}", file=sys.stderr)

    def rng_for(self, name: str, world: "World", stream: str) -> np.random.Generator | None:
        """A generator for a stochastic policy (a pure function of seed, slot and ``stream``),
        None for the others (making one costs ~40 us)."""
        return world.rng(stream) if self.policies[name].stochastic else None


def bind_policies(layer: str, names: Any, options: Any, where: str, traits: dict[str, Any]) -> dict[str, Policy]:
    """Resolve ``names`` in the registry, validate each policy's options table and traits.

    An options table for a policy not run is an error (a misspelt policy name would otherwise
    leave its options silently unused), also when an override (``--set``, a sweep's grid) dropped
    the policy: ours, chosen over ignoring it with a warning; the error says how to drop the table."""
    if not isinstance(names, list):
        raise ConfigError(f"{where}.policies must be a non-empty list")
    known = registry.policies(layer)
    for name in names:  # PREFIX:ARGUMENT names a policy a loader makes (e.g. rl:runs/agent.pt)
        if isinstance(name, str) and name not in known:
            made = registry.make_policy(layer, name, where)
            if made is not None:
                known[name] = made
    check_policies(names, sorted(known), where)
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"{where}.policies: '{dup}' is listed twice")
    if not isinstance(options, dict):
        raise ConfigError(f"{where}.options: must hold one table per policy, e.g. [layers.{layer}.options.NAME]")
    for name in options:
        if name not in names:
            raise ConfigError(f"{where}.options.{name}: '{name}' is not among the policies run "
                              f"({', '.join(map(str, names))}): add it to layers.{layer}.policies or remove its "
                              f"options table (an override that drops policies: also --set "
                              f"'layers.{layer}.options={{}}', which drops every policy's options)")
    out = {}
    for name in names:
        spec = known[name]
        table = options.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{where}.options.{name}: must be a table of that policy's keys")
        if spec.options is None:
            if table:
                raise ConfigError(f"{where}.options.{name}: the {spec.origin} policy '{name}' takes no options "
                                  f"(got {', '.join(sorted(table))})")
            opts = None
        else:
            file, _, prefix = where.partition(": ")
            opts = build_section(spec.options, table, file, f"{prefix}.options.{name}")
        unknown = sorted(set(spec.traits) - set(traits))
        if unknown:
            raise ConfigError(f"{where}.policies: policy '{name}' ({spec.origin}) declares trait '{unknown[0]}', "
                              f"which layer '{layer}' does not know (known: {', '.join(sorted(traits)) or 'none'})")
        out[name] = Policy(spec, opts, {**traits, **spec.traits})
    return out


def arrivals(rng, mean: float, pool: np.ndarray, t0: float, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """A slot's requests: Poisson(``mean``) many, each from a member of ``pool`` drawn uniformly
    (with replacement), at uniform times in [t0, t0 + gamma), time-sorted. (who, when)."""
    n = int(rng.poisson(mean)) if len(pool) else 0
    who = rng.choice(pool, size=n) if n else np.zeros(0, dtype=np.int64)
    return who, t0 + np.sort(rng.uniform(0.0, gamma, n))


def check_policies(names: list, known, where: str) -> None:
    """One line naming the key if ``names`` is empty or holds a policy not in ``known``."""
    if not names:
        raise ConfigError(f"{where}.policies: needs at least one policy")
    for p in names:
        if p not in known:
            raise ConfigError(f"{where}.policies: unknown policy '{p}' (known: {', '.join(known)}; a policy of "
                              "your own? name its module in scenario.plugins; a trained agent: rl:PATH)")


def load_plugins(cfg: "Config") -> None:
    """Import the scenario's plugin modules (and the installed entry points) before layers are built."""
    base = Path(cfg.source_file).resolve().parent if cfg.source_file and Path(cfg.source_file).exists() else None
    registry.load_plugins(list(cfg.scenario.plugins), f"{cfg.source_file}: scenario.plugins", base)


def make_layers(cfg: "Config", ctx: LayerContext) -> list[Layer]:
    """Load the plugins, then instantiate the configured layers; an unknown name is a config error."""
    return [cls(table, ctx) for _, cls, table in _enabled(cfg, ctx.scenario_file)]


def _enabled(cfg: "Config", where: str) -> Iterator[tuple[str, type[Layer], dict]]:
    """The plugins loaded, then each enabled ``[layers.NAME]`` of ``cfg`` as (NAME, its class, its
    table without ``enabled``), in the configured order, one at a time (a layer's own error comes
    before a later one's); an unknown name is a config error naming ``where``."""
    load_plugins(cfg)
    for name, table in cfg.layers.items():
        if table.get("enabled", True) is not False:
            yield name, registry.layer_class(name, where), {k: v for k, v in table.items() if k != "enabled"}


@dataclass(frozen=True)
class Bound:
    """A configured layer not built: its name, whether its policies may run in policy workers
    (:attr:`Layer.shardable`) and its policies bound and checked (:meth:`Layer.bind`) — what the
    process count and the worker plan are chosen by (:mod:`cosim.engine.workers`), and its
    :attr:`Layer.shared_cost`."""

    name: str
    shardable: bool
    policies: dict[str, Policy]
    #: :attr:`Layer.shared_cost`
    shared_cost: float = 0.0


def bind_layers(cfg: "Config", label: str | None = None) -> list[Bound]:
    """Every enabled layer of ``cfg`` with its policies bound, none built (errors name ``label``,
    default the scenario file). A layer's own checks run where it is built."""
    where = label or cfg.source_file
    return [Bound(name, cls.shardable, cls.bind(table, where)[1], cls.shared_cost)
            for name, cls, table in _enabled(cfg, where)]


def validate_layers(cfg: "Config", label: str | None = None) -> list[Layer]:
    """Build the configured layers once without a run (no tables): every layer key, policy and
    option checked as the run would. Errors name ``label`` (default: the scenario file)."""
    return make_layers(cfg, LayerContext.for_run(cfg, lambda name: None, label))


__all__ = ["Bound", "Layer", "LayerContext", "Metric", "Policy", "PolicyFailed", "TASK_METRICS", "TaskView", "arrivals", "call_policy", "check_signature",
           "protocol_inputs", "bind_policies", "check_policies",
           "bind_layers", "load_plugins", "make_layers", "validate_layers", "register_layer", "register_policy"]
