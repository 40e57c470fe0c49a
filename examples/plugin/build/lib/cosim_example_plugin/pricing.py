"""A MoE pricing solver: cost-plus.

Each IV charges its marginal energy cost of selling a fair share of its capacity, 2 kappa_i f_i
with f_i = F_i / 2, times (1 + markup), clipped to the game's price range.
"""

from dataclasses import dataclass

import numpy as np

from cosim import register_policy
from cosim.config import option


@dataclass(frozen=True)
class CostPlusOptions:
    markup: float = option(0.5, lo=0.0, doc="margin over the marginal energy cost")


@register_policy("moe", "cost-plus", options=CostPlusOptions)
def cost_plus(game, rng, opts: CostPlusOptions):
    """Cost-plus prices: (1 + markup) x the marginal energy cost at half capacity."""
    price = (1.0 + opts.markup) * 2.0 * game.kappa * (game.F / 2.0)
    return np.clip(price, game.p_min, game.p_max)
