"""A run resolved: every check that needs no results folder and no SUMO, done once.

:func:`preflight` reads the network, builds the RSUs and checks the layers; bad input raises one
:class:`~cosim.errors.CosimError` before anything is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cosim.config import Config, run_window, sumocfg_time
from cosim.errors import ConfigError, CosimError
from cosim.layers.base import validate_layers
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


@dataclass
class Prepared:
    """What :func:`preflight` checked and built, handed to the :class:`Session`."""

    net: NetInfo
    rsus: RsuSet
    warnings: list[str]
    #: layer -> [from, until) [s] in which its tasks are requested (Layer.request_window)
    windows: dict = field(default_factory=dict)


def preflight(cfg: Config) -> Prepared:
    """Every check that needs no results folder and no SUMO: the network, the RSUs, the layers.
    Bad input raises one :class:`CosimError` before anything is written."""
    sc = cfg.scenario
    begin, end = run_window(cfg)
    if end is not None and end >= 0 and end <= begin:
        which = "scenario.end_s" if sc.end_s >= 0 else "the sumocfg's end"
        raise ConfigError(f"{cfg.source_file}: {which} = {end:g} s is not after the begin time {begin:g} s")
    net = read_net(net_file_of(sc.sumocfg))
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
    windows = {layer.name: [float(t) if math.isfinite(t) else None for t in layer.request_window]
               for layer in validate_layers(cfg) if layer.task_table is not None}
    return Prepared(net, rsus, warnings, windows)
