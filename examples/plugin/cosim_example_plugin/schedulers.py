"""A DViT scheduler: greedy with look-ahead.

At each step, from the device holding the latent, pick the admissible device whose next
``lookahead`` steps (hand-off once, then computing there) cost the least, within C3.
``problem.admissible(cur, k)`` is the layer's rule (C1/C2, and the last ``problem.local_steps``
steps on the user), so every plan it returns is admissible.
"""

from dataclasses import dataclass

import numpy as np

from cosim import register_policy
from cosim.config import option


@dataclass(frozen=True)
class GreedyOptions:
    lookahead: int = option(1, lo=1, doc="steps a move must pay for: hand-off + lookahead x step cost")


@register_policy("dvit", "my-greedy", options=GreedyOptions)
def my_greedy(problem, rng, opts: GreedyOptions):
    """Greedy with look-ahead: the device whose next `lookahead` steps cost least."""
    cost = problem.step_cost()  # compute + queue per step on each device [s]
    plan = np.empty(problem.steps, dtype=np.int64)
    cur = 0  # device 0 (the RSU) holds the request
    for k in range(problem.steps):
        hand = np.where(np.arange(problem.n_devices) == cur, 0.0, problem.comm_s[cur])
        ok = problem.admissible(cur, k) & (hand + cost <= problem.t_max_s)  # the layer's rule, and C3
        cur = int(np.argmin(np.where(ok, hand + opts.lookahead * cost, np.inf))) if ok.any() else problem.user
        plan[k] = cur
    return plan
