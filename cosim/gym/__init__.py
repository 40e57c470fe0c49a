"""Gymnasium environments on cosim runs (live SUMO or a replayed trace); docs/gym.md.

``import cosim.gym`` registers them under the ``cosim/`` namespace:

* ``cosim/DViTPlacement-v0`` (:mod:`cosim.gym.dvit`): where the next denoising step runs;
* ``cosim/CacheEviction-v0`` (:mod:`cosim.gym.cache`): which cached model an RSU evicts;

and ``gym.make("cosim/DViTPlacement-v0", scenario=..., trace=..., seed=...)`` makes one.
Every environment is an ordinary cosim run paused at its agent's decisions
(:mod:`cosim.gym.episode`).
"""

from __future__ import annotations

try:
    import greenlet  # noqa: F401
    import gymnasium as gym
except ImportError as exc:  # an extra: say how to get it, in one line
    raise ImportError(f"cosim.gym needs Gymnasium and greenlet ({exc.name} is missing): pip install 'cosim[gym]'") \
        from None

from cosim.gym.cache import CacheEvictionEnv
from cosim.gym.dvit import DViTPlacementEnv
from cosim.gym.episode import AGENT, CosimEnv

ENVS = {
    "cosim/DViTPlacement-v0": "cosim.gym.dvit:DViTPlacementEnv",
    "cosim/CacheEviction-v0": "cosim.gym.cache:CacheEvictionEnv",
}

for _id, _entry in ENVS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry)

__all__ = ["AGENT", "ENVS", "CacheEvictionEnv", "CosimEnv", "DViTPlacementEnv"]
