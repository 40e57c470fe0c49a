"""The layer contract and the layer registry.

A layer is the AI workload attached to the traffic: it sees the :class:`~cosim.world.World`
once per slot and writes rows to result tables. The run calls

    layer = LayerClass(config_table, ctx)   # validate the [layers.NAME] table, allocate
    layer.on_start()                       # once, before the first slot
    layer.on_slot(world)                   # every slot
    block = layer.on_end()                 # once; a dict that goes to summary.json["layers"][NAME]

**Side-by-side policies.** A layer that compares policies (schedulers, pricing, eviction) runs
them all inside one run: it draws the slot's requests once from ``world.rng("<layer>.requests")``
and hands the same requests, the same world (same positions, same fading, which the world
derives from (seed, slot, link) alone) to every policy's own state. :class:`PolicyLayer` does
that bookkeeping.

Registering a layer is one decorator: ``@register_layer("dvit")``.

**Roles.** ``layer.roles()`` says what each vehicle does for the layer in the current slot
(vehicle id -> one of the ``ROLE_*`` names below; vehicles without a role are left out). The
sumo-gui overlay (:mod:`cosim.overlay`) colours vehicles by it; a layer never calls TraCI itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from cosim.config import build_section
from cosim.errors import ConfigError


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


class Layer:
    name: ClassVar[str] = ""
    #: the dataclass of the layer's ``[layers.NAME]`` keys (``config.option`` fields): validated
    #: into ``self.cfg`` at construction and listed by ``cosim config``; None for a free-form table
    config_class: ClassVar[type | None] = None

    def __init__(self, config: dict, ctx: LayerContext):
        self.config = config
        self.ctx = ctx
        #: how errors name this layer's table: "<scenario file>: layers.NAME"
        self.where = f"{ctx.scenario_file}: layers.{self.name}"
        if self.config_class is not None:
            self.cfg = build_section(self.config_class, config, ctx.scenario_file, f"layers.{self.name}")

    def on_start(self) -> None:
        pass

    def on_slot(self, world) -> None:  # noqa: ANN001 - World, kept loose to avoid an import cycle
        pass

    def on_end(self) -> dict:
        return {}

    def roles(self, policy: str | None = None) -> dict[str, str]:
        """Vehicle id -> ``ROLE_*`` for the current slot (after ``on_slot``), for one policy or,
        with None, for all of them (a vehicle with several roles gets the strongest). Default: none."""
        return {}


class PolicyLayer(Layer):
    """A layer that evaluates several registered policies on one shared request stream.

    Subclasses set ``policy_registry`` (name -> factory) and implement ``requests(world)`` (the
    slot's requests, drawn once) and ``serve(policy_name, state, world, requests)``.
    """

    policy_registry: ClassVar[dict[str, Callable[..., Any]]] = {}

    def __init__(self, config: dict, ctx: LayerContext):
        super().__init__(config, ctx)
        names = config.get("policies", list(self.policy_registry))
        if not isinstance(names, list):
            raise ConfigError(f"{self.where}.policies must be a non-empty list")
        check_policies(names, sorted(self.policy_registry), self.where)
        self.policies = {p: self.policy_registry[p]() for p in names}

    def requests(self, world) -> Any:  # noqa: ANN001
        raise NotImplementedError

    def serve(self, name: str, policy: Any, world, requests: Any) -> None:  # noqa: ANN001
        raise NotImplementedError

    def on_slot(self, world) -> None:  # noqa: ANN001
        reqs = self.requests(world)
        for name, policy in self.policies.items():
            self.serve(name, policy, world, reqs)


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
            raise ConfigError(f"{where}.policies: unknown policy '{p}' (known: {', '.join(known)})")


LAYERS: dict[str, type[Layer]] = {}


def register_layer(name: str) -> Callable[[type[Layer]], type[Layer]]:
    def deco(cls: type[Layer]) -> type[Layer]:
        if name in LAYERS and LAYERS[name] is not cls:
            raise ValueError(f"layer '{name}' registered twice")
        cls.name = name
        LAYERS[name] = cls
        return cls

    return deco


def make_layers(tables: dict[str, dict], ctx: LayerContext) -> list[Layer]:
    """Instantiate the configured layers; an unknown name is a config error."""
    import importlib

    from cosim.layers import LAYER_MODULES

    out = []
    for name, table in tables.items():
        if table.get("enabled", True) is False:
            continue
        if name not in LAYERS and name in LAYER_MODULES:
            importlib.import_module(LAYER_MODULES[name])
        if name not in LAYERS:
            known = ", ".join(sorted(set(LAYERS) | set(LAYER_MODULES))) or "none yet"
            raise ConfigError(f"{ctx.scenario_file}: unknown layer '[layers.{name}]' (known: {known})")
        out.append(LAYERS[name]({k: v for k, v in table.items() if k != "enabled"}, ctx))
    return out
