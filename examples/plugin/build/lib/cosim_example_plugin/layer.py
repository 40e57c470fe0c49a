"""A small layer: RSU load.

Every slot it writes, per RSU, the vehicles served and the handovers in, and counts the slots in
which an RSU served more than ``overload_vehicles``; its summary block gives, per RSU, the peak
and mean load and the share of overloaded slots.
"""

from dataclasses import dataclass

import numpy as np

from cosim import Layer, register_layer
from cosim.config import option


@dataclass(frozen=True)
class RsuLoadConfig:
    overload_vehicles: int = option(100, lo=0, doc="an RSU serving more vehicles than this is overloaded")


@register_layer("rsu_load")
class RsuLoadLayer(Layer):
    """RSU load: vehicles served and handovers per RSU and slot, overloaded slots."""

    config_class = RsuLoadConfig

    def on_start(self):
        self.table = self.ctx.table("rsu_load")
        self.peak = self.total = self.over = None
        self.slots = 0

    def on_slot(self, world):
        n = world.connected  # (M,) vehicles served by each RSU this slot
        if self.peak is None:
            self.ids = [str(r) for r in world.rsus.ids]
            self.peak, self.total, self.over = np.zeros_like(n), np.zeros(len(n)), np.zeros(len(n), dtype=int)
        self.peak = np.maximum(self.peak, n)
        self.total += n
        self.over += n > self.cfg.overload_vehicles
        self.slots += 1
        self.table.append({"slot": np.full(len(n), world.slot), "rsu": np.asarray(world.rsus.ids, dtype=object),
                           "vehicles": n, "handover_in": world.handover_in})

    def on_end(self):
        if self.peak is None:
            return {}
        return {rsu: {"peak_vehicles": int(p), "mean_vehicles": float(t / self.slots),
                      "overloaded_share": float(o / self.slots)}
                for rsu, p, t, o in zip(self.ids, self.peak, self.total, self.over)}
