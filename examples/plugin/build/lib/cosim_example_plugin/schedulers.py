"""A DViT scheduler: greedy with look-ahead.

At each step, from the device holding the latent, pick the admissible device whose next
``lookahead`` steps (hand-off once, then computing there) cost the least, within C3. The last
``problem.local_steps`` steps run on the user, as every cosim scheduler's must.
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
    K, U = problem.steps, problem.user
    cost = problem.step_cost()  # compute + queue per step on each device [s]
    allowed = problem.allowed()  # C1/C2: which hand-offs i -> j are allowed
    plan = np.empty(K, dtype=np.int64)
    cur = 0  # the RSU holds the request
    for k in range(K):
        if k >= K - problem.local_steps:
            cur = U
        else:
            hand = np.where(np.arange(problem.n_devices) == cur, 0.0, problem.comm_s[cur])
            score = hand + opts.lookahead * cost
            ok = (allowed[cur] | (k == 0)) & (hand + cost <= problem.t_max_s)
            ok[U] = ok[U] and k > 0  # move to the user only once the RSU handed the task over
            cur = int(np.argmin(np.where(ok, score, np.inf))) if ok.any() else U
        plan[k] = cur
    return plan
