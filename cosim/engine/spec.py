"""A run resolved: every check that needs no results folder and no SUMO, and every choice made
before the run, done once.

:func:`resolve` reads the network, builds the RSUs, builds and checks the layers, chooses the
process count and deals the policies over the workers, and returns a frozen :class:`RunSpec`
that everything downstream takes; bad input raises one :class:`~cosim.errors.CosimError` before
anything is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosim.config import Config, run_window, sumocfg_time
from cosim.engine.timeline import slot_times
from cosim.engine.workers import Plan, resolve_jobs
from cosim.engine.workers import plan as deal
from cosim.errors import ConfigError, CosimError
from cosim.layers.base import LayerContext, bind_layers, make_layers
from cosim.world import net_file_of, read_net
from cosim.world.network import NetInfo
from cosim.world.rsu import RsuSet, build_rsus, sites_off_network


def step_length_s(cfg: Config) -> float:
    """SUMO's step length: the scenario's override, else the sumocfg's, else SUMO's 1 s default."""
    sc = cfg.scenario
    return sc.step_length_s if sc.step_length_s > 0 else (sumocfg_time(sc.sumocfg, "step-length") or 1.0)


def slot_step(cfg: Config) -> float:
    """The step length [s], checked: the slot must be a whole number of steps."""
    sc = cfg.scenario
    step = step_length_s(cfg)
    ratio = sc.slot_s / step
    if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
        raise CosimError(f"{cfg.source_file}: scenario.slot_s = {sc.slot_s:g} is not a multiple of the "
                         f"{'' if cfg.traffic.source != 'sumo' else 'SUMO '}step length {step:g} s")
    return step


@dataclass(frozen=True)
class Timeline:
    """When a run acts: from ``begin_s``, every ``slot_s`` (a whole number of SUMO steps of
    ``step_s``), up to ``end_s`` (None: until the traffic ends)."""

    begin_s: float
    end_s: float | None
    step_s: float
    slot_s: float

    def slots(self):  # noqa: ANN201 - Iterator[float]
        """The slot boundaries the loop steps to (:func:`cosim.engine.timeline.slot_times`)."""
        return slot_times(self.begin_s, self.slot_s, self.end_s)


def build_layers(cfg: Config, plan: Plan | None, table: Callable[[str], Any], label: str | None = None) -> list:
    """The configured layers built for the plugin's process, each once: every one whole without
    a plan; with one, each with the policies of share 0 (the plugin's; ``LayerContext.policies``)
    — every policy still bound and checked — and a layer none of whose policies stays here whole,
    built to be checked, not run (:func:`run_here`). Errors name ``label`` (default: the
    scenario file)."""
    ctx = LayerContext.for_run(cfg, table, label)
    if plan is not None:
        mine = plan.shares[0].layers
        ctx.policies = {name: tuple(t["policies"]) for name, t in mine.items()
                        if name in plan.order and isinstance(t.get("policies"), list)}
    return make_layers(cfg, ctx)


def run_here(layers: list, plan: Plan | None) -> list:
    """Those of ``layers`` (:func:`build_layers`) the plugin's process runs: all without a plan,
    else those with policies in share 0 and the layers not dealt."""
    return list(layers) if plan is None else [layer for layer in layers if layer.name in plan.shares[0].layers]


class _Tables:
    """``ctx.table`` of the layers built at resolve time: no table while they are only checked,
    the session's once it runs them (:meth:`RunSpec.layers_for_run`)."""

    def __init__(self) -> None:
        self.open: Callable[[str], Any] = lambda name: None

    def __call__(self, name: str) -> Any:
        return self.open(name)


@dataclass(frozen=True)
class RunSpec:
    """A run resolved once (Gymnasium's ``EnvSpec``): everything downstream — the results folder,
    the :class:`~cosim.engine.session.Session`, the policy workers, the traffic source — takes
    this, and nothing is worked out twice.

    ``cfg`` has ``scenario.jobs`` resolved (``auto`` replaced by the count chosen); ``layers``
    are the configured layers, validated and built once for the plugin's process (not run yet;
    with a plan, each with the plugin's share of its policies: :func:`build_layers`); ``plan``
    deals their policies over the worker processes (None: every policy in the plugin's
    process)."""

    cfg: Config
    timeline: Timeline
    net: NetInfo
    rsus: RsuSet
    layers: tuple
    jobs: int
    plan: Plan | None
    #: said before the run and kept in summary.json
    warnings: tuple[str, ...] = ()
    #: layer -> [from, until) [s] in which its tasks are requested (Layer.request_window)
    windows: dict = field(default_factory=dict)
    _tables: _Tables = field(default_factory=_Tables, repr=False, compare=False)
    _unused: list = field(default_factory=lambda: [True], repr=False, compare=False)

    def layers_for_run(self, table: Callable[[str], Any]) -> list:
        """The layers the plugin's process runs (:func:`run_here`), writing to ``table``: the
        ones resolve built for the first session, built anew (the same way) for any later one."""
        if not self._unused[0]:
            return run_here(build_layers(self.cfg, self.plan, table), self.plan)
        self._unused[0] = False
        self._tables.open = table
        return run_here(self.layers, self.plan)


def resolve(cfg: Config, *, traffic: str = "sumo", most: int | None = None, net: NetInfo | None = None,
            net_file: str | None = None, label: str | None = None) -> RunSpec:
    """Every check that needs no results folder and no SUMO, and every choice made before the
    run, once: the timeline, the network, the RSUs, the layers (validated and built), the
    process count (``scenario.jobs = 0``: :func:`~cosim.engine.workers.resolve_jobs`, at most
    ``most``) and the worker plan. Bad input raises one :class:`CosimError` before anything is
    written.

    ``traffic``: ``"sumo"`` (a live run: the slot a whole number of SUMO steps), ``"synthetic"``
    (a paper's world: needs an end), ``"replay"`` (the loop ends at ``scenario.end_s``, which the
    replay sets to the trace's end, else where the trace does) or
    ``"attach"`` (your own loop drives SUMO: one process, no end). ``net``: the network already
    read (an environment's episodes); ``net_file``: the network to read (attach: the running
    SUMO's), else the sumocfg's; ``label``: what the layers' errors name instead of the scenario
    file (an environment's ``overrides``)."""
    sc = cfg.scenario
    if net is None and not net_file and not Path(sc.sumocfg).is_file():
        raise ConfigError(f"{cfg.source_file}: scenario.sumocfg: {sc.sumocfg}: no such SUMO configuration "
                          "(relative paths are relative to the scenario file)")
    begin, end = run_window(cfg)
    if end is not None and end >= 0 and end <= begin:
        which = "scenario.end_s" if sc.end_s >= 0 else "the sumocfg's end"
        raise ConfigError(f"{cfg.source_file}: {which} = {end:g} s is not after the begin time {begin:g} s")
    if net is None:
        net = read_net(net_file or net_file_of(sc.sumocfg))
    rsus = build_rsus(cfg, net)
    warnings = []
    if cfg.rsu.placement == "sites":
        off = sites_off_network(rsus, net.bounds)
        b = ", ".join(f"{v:.0f}" for v in net.bounds)
        if len(off) == len(rsus):
            raise ConfigError(f"{cfg.source_file}: rsu.sites: no RSU's coverage reaches the network (bounds {b} m): "
                              "sites are SUMO network x/y in metres")
        warnings += [f"{cfg.source_file}: rsu.sites[{i}] ('{rsus.ids[i]}' at {rsus.x[i]:g}, {rsus.y[i]:g}) is more "
                     f"than radius_m from the network (bounds {b} m): it will cover no vehicle" for i in off]
    if traffic == "attach":
        cfg = cfg.replace(scenario={"jobs": 1})  # your loop drives SUMO: all in this process (what config.toml says)
    plan = None
    if cfg.scenario.jobs == 0 or cfg.scenario.jobs >= 3:  # the count and the deal go by the policies, bound
        bound = bind_layers(cfg, label)
        cfg = resolve_jobs(cfg, most, bound)  # auto (0): as the cores allow
        plan = deal(cfg, cfg.scenario.jobs - 2, bound) if cfg.scenario.jobs >= 3 else None
        if plan is not None and len(plan.shares) == 1:
            plan = None  # nothing to spread (one policy, or none that a worker could import)
    jobs = cfg.scenario.jobs
    tables = _Tables()
    layers = build_layers(cfg, plan, tables, label)  # built once: checked here, run by the session
    windows = {layer.name: [float(t) if math.isfinite(t) else None for t in layer.request_window]
               for layer in layers if layer.task_table is not None}
    if traffic == "synthetic" and (end is None or end < 0):
        raise ConfigError(f"{cfg.source_file}: traffic.source = \"{cfg.traffic.source}\" needs an end: set "
                          "scenario.end_s")
    if traffic in ("sumo", "synthetic"):
        step = slot_step(cfg)
    else:
        step = step_length_s(cfg)
        end = (sc.end_s if sc.end_s >= 0 else None) if traffic == "replay" else None
    return RunSpec(cfg, Timeline(begin, end, step, sc.slot_s), net, rsus, tuple(layers), jobs, plan,
                   tuple(warnings), windows, tables)
