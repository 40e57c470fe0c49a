"""A small shardable layer for the policy-worker tests: two policies that each write one row per
slot; the layer breaks (raises, or its process exits) at a set time in the share holding 'second'."""

import os
import time
from dataclasses import dataclass

import numpy as np

from cosim import Layer, register_layer, register_policy
from cosim.config import option


@dataclass(frozen=True)
class PicksConfig:
    policies: list = option(["first", "second"], doc="the policies run")
    options: dict = option({}, doc="per-policy options")
    fail_at_s: float = option(1e9, doc="the share holding 'second' raises from this time on [s]")
    exit_at_s: float = option(1e9, doc="the process holding 'second' exits from this time on [s]")
    stall_at_s: float = option(1e9, doc="the process holding 'second' stalls (sleeps 120 s) at this time [s]")
    stalled_file: str = option("", doc="created by the process holding 'second' when it stalls")
    ending_file: str = option("", doc="created by the process holding 'first' as the run ends (on_end)")


@register_layer("picks")
class Picks(Layer):
    config_class = PicksConfig
    shardable = True

    def on_start(self):
        self.table = self.ctx.table("picks")
        self.slots = {p: 0 for p in self.policies}

    def on_slot(self, world):
        for p in self.live():
            self.table.append({"policy": np.array([p], dtype=object), "slot": np.array([world.slot]),
                               "value": np.array([float(self.call(p, world))])})
            self.slots[p] += 1
        if "second" in self.policies and world.time_s >= self.cfg.exit_at_s:
            os._exit(3)
        if "second" in self.policies and world.time_s == self.cfg.stall_at_s:
            if self.cfg.stalled_file:
                open(self.cfg.stalled_file, "w").close()
            time.sleep(120)
        if "second" in self.policies and world.time_s >= self.cfg.fail_at_s:
            raise RuntimeError(f"picks broke at t={world.time_s:g}s")

    def on_end(self):
        if "first" in self.policies and self.cfg.ending_file:
            open(self.cfg.ending_file, "w").close()
        return {p: {"slots": n} for p, n in self.slots.items()}


@register_policy("picks", "first")
def first(world, opts):
    return len(world.snap)


@register_policy("picks", "second", cost=2.0)  # dealt first: to the worker
def second(world, opts):
    return float(world.snap.x.sum())
