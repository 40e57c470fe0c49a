"""Deliberately broken plugins: `cosim check` must name what each one violates, and a run must
drop a policy that raises while the others go on. Never imported by the main test process (it
would register them there); the tests load it in subprocesses."""

from dataclasses import dataclass

import numpy as np

from cosim import Layer, register_layer, register_policy
from cosim.config import option


@register_policy("dvit", "back-to-rsu")
def back_to_rsu(problem, rng, opts):
    """Step 1 on a helper, step 2 back on the RSU: breaks C1."""
    plan = np.full(problem.steps, problem.user)
    plan[0], plan[1] = 1 if problem.n_devices > 2 else 0, 0
    return plan


@register_policy("dvit", "short-plan")
def short_plan(problem, rng, opts):
    """One step too few."""
    return np.full(problem.steps - 1, problem.user)


@dataclass(frozen=True)
class RaiseOptions:
    after: int = option(3, lo=0, doc="calls that succeed before it raises")


_calls = {"n": 0}


@register_policy("dvit", "raiser", options=RaiseOptions)
def raiser(problem, rng, opts):
    """Plans on the user alone, then raises on call `after` + 1."""
    _calls["n"] += 1
    if _calls["n"] > opts.after:
        raise RuntimeError("deliberate failure")
    return np.full(problem.steps, problem.user)


@register_policy("cache", "evicts-itself")
def evicts_itself(cache, candidates, t, rng, opts):
    """Evicts a model behind the cache's back while ranking."""
    if candidates:
        cache.evict(candidates[0])
    return [0.0] * len(candidates)


@register_policy("moe", "negative")
def negative(game, rng, opts):
    """Negative prices."""
    return -np.ones(game.n)


@register_layer("bad_block")
class BadBlock(Layer):
    """A layer whose summary block is a list."""

    def on_end(self):
        return [1, 2, 3]
