"""``cosim/DViTPlacement-v0``: where the next denoising step of a DViT task runs.

The layer (:mod:`cosim.layers.dvit.layer`) runs with ``gym:agent`` as its scheduler, registered
``replan = "step"``: it is asked before every step of every task that is not one of the user's
last ``local_steps`` — at the request (the first step, from the RSU) and at every step
completion (from the device holding the latent). One question = one task's sub-problem
(:class:`~cosim.layers.dvit.problem.Problem`: its device 0 is the holder). The answer is the
device of the next step; the layer executes it with the world of the slot it starts in, exactly
as it executes any scheduler's plan (and reschedules if the device cannot be reached or is too
slow, which asks the agent again).

**Devices** (a fixed layout, ``D = max_helpers + 2`` rows): row 0 is the holder (the RSU at the
first step, then the helper holding the latent; C1 keeps the RSU out once a helper holds it),
rows 1..``max_helpers`` the candidate helpers (nearest to the user first, padded), row ``D - 1``
the user. Action ``a`` puts the step on row ``a``'s device; the user takes every remaining step
(C2).

**Observation** (``Dict``): ``devices`` (D, 13) float32, one row per device, columns
:data:`DEVICE_FEATURES`; ``task`` (5,) float32, :data:`TASK_FEATURES`. Times in seconds
(infinite — no link — is :data:`NO_LINK_S`), bandwidth in MHz, compute in TFLOP/s, positions
as road-grid cells (``world.grid_cell_m``) relative to the holder's. Dwell times are what is
left from the decision (the world's, read at the slot's start, less ``Problem.elapsed_s``: a
decision at a step completion mid-slot must not see the slot's start again).

**Mask** (``info["action_mask"]`` and :meth:`action_masks`): devices present, allowed by C1/C2,
with a link from the holder and whose step fits T_max (C3); when none fits, every reachable one.
The mask is what a good agent chooses among; an action outside it that is still *possible*
(a device present, allowed and reachable — only too slow for T_max) runs as chosen: the layer
then reschedules that step as for any scheduler, which asks the agent again, and a step run
late breaks C3. An *impossible* action (padding, a transition C1/C2 forbid, no link) is
replaced by the masked device of least step time (``info["invalid_action"] = True``), so an
agent that ignores the mask still runs.

**Reward**: minus the task time spent between this decision and the next (the steps of the
agent's tasks that ran in between — the one just placed, and the user's local steps of tasks
with no decision left), minus ``failure_penalty_s`` for every task that failed in between
(C3, C4, a lost device or link; not the tasks cut off by the episode's end). The return of an
episode is therefore minus the sum of its tasks' step latencies (eq. 14 without the request
uploads, which no decision changes) minus the penalties. Our choice: with concurrent tasks a
cost is charged to the decision that precedes it in time, the usual rule for event-driven
decisions; the per-task latencies are in the episode's ``dvit_tasks`` table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from cosim.errors import ConfigError
from cosim.gym.episode import AGENT, CosimEnv
from cosim.layers.dvit.problem import Problem

DEVICE_FEATURES = (
    "present",  # 1 for a device, 0 for padding
    "is_rsu",  # the RSU (only row 0, before a helper holds the latent)
    "is_user",  # the requesting vehicle (row D - 1)
    "comm_s",  # hand-off time from the holder [s] (0 for the holder itself)
    "comp_s",  # one step's computation L D / c [s]
    "queue_s",  # its queue time [s] (eq. 6, or the simulated backlog)
    "to_user_s",  # hand-off time from it to the user [s]
    "bandwidth_mhz",  # its bandwidth [MHz] (the RSU: its band)
    "compute_tflops",  # its compute [TFLOP/s]
    "dwell_s",  # predicted time left in the RSU's coverage, from the decision [s] (the RSU: DWELL_CAP_S)
    "cell_dx",  # road-grid cells east of the holder's
    "cell_dy",  # road-grid cells north of the holder's
    "dist_to_rsu_m",  # distance to the serving RSU [m]
)
TASK_FEATURES = (
    "steps_left",  # denoising steps still to run (K - k)
    "decisions_left",  # of them, the ones not reserved for the user (steps_left - local steps)
    "user_dwell_s",  # the user's predicted time left in coverage, from the decision [s] (C4)
    "t_max_s",  # C3's limit per step [s]
    "holder_is_rsu",  # 1 at the first step (the RSU holds the noise), 0 once a helper holds the latent
)
NO_LINK_S = 10.0  # what an infinite time reads as in the observation
DWELL_CAP_S = 600.0
LIMIT = 1e5  # every feature is clipped to [-LIMIT, LIMIT]


def layout(problem: Problem, max_devices: int) -> np.ndarray:
    """Row of each of the problem's devices in the fixed layout (the user goes last)."""
    V = problem.n_devices
    if V > max_devices:
        raise ValueError(f"the problem has {V} devices, the layout {max_devices}")
    rows = np.arange(V)
    rows[-1] = max_devices - 1
    return rows


def step_cost(problem: Problem) -> np.ndarray:
    """(V,) the next step's time on each device, from the holder (device 0) [s]."""
    comm = problem.comm_s[0].copy()
    comm[0] = 0.0
    return comm + problem.comp_s + problem.queue_s


def device_mask(problem: Problem, cost: np.ndarray | None = None) -> np.ndarray:
    """(V,) the devices the next step may go to: reachable from the holder, within T_max; all
    reachable ones if none is within T_max. (C1/C2 allow every device from device 0: a
    sub-problem held by a helper has no RSU in it.)"""
    cost = step_cost(problem) if cost is None else cost
    ok = np.isfinite(cost)
    fast = ok & (cost <= problem.t_max_s + 1e-12)
    mask = fast if fast.any() else ok
    mask[0] = mask[0] or not mask.any()  # the holder can always go on (it may break C3)
    return mask


def observe(problem: Problem, max_devices: int) -> tuple[dict, np.ndarray]:
    """The observation and the action mask of one question (see the module docstring)."""
    V = problem.n_devices
    rows = layout(problem, max_devices)
    U = V - 1
    cols = np.zeros((V, len(DEVICE_FEATURES)))
    cols[:, 0] = 1.0
    cols[0, 1] = float(problem.origin_rsu)
    cols[U, 2] = 1.0
    cost = step_cost(problem)
    cols[:, 3] = problem.comm_s[0]
    cols[0, 3] = 0.0
    cols[:, 4] = problem.comp_s
    cols[:, 5] = problem.queue_s
    cols[:, 6] = problem.comm_s[:, U]
    if len(problem.bandwidth_hz):
        cols[:, 7] = problem.bandwidth_hz / 1e6
    if len(problem.compute_flops):
        cols[:, 8] = problem.compute_flops / 1e12
    # the world's dwell times are as of its snapshot (the slot's start); a decision later in the
    # slot (a step completion) has that much less left
    cols[:, 9] = (np.minimum(np.maximum(problem.dwell_s - problem.elapsed_s, 0.0), DWELL_CAP_S)
                  if len(problem.dwell_s) else DWELL_CAP_S)
    if len(problem.xy):
        cell = np.floor(problem.xy / problem.cell_m)
        cols[:, 10:12] = cell - cell[0]
    if len(problem.dist_to_rsu_m):
        cols[:, 12] = problem.dist_to_rsu_m
    np.minimum(cols[:, 3:7], NO_LINK_S, out=cols[:, 3:7])  # times: infinite (no link) and very long alike
    np.clip(cols, -LIMIT, LIMIT, out=cols)
    dev = np.zeros((max_devices, len(DEVICE_FEATURES)), dtype=np.float32)
    dev[rows] = np.nan_to_num(cols)
    task = np.array([problem.steps, problem.steps - problem.local_steps,
                     min(max(problem.user_dwell_s - problem.elapsed_s, 0.0), DWELL_CAP_S),
                     problem.t_max_s, float(problem.origin_rsu)], dtype=np.float32)
    mask = np.zeros(max_devices, dtype=bool)
    mask[rows] = device_mask(problem, cost)
    return {"devices": dev, "task": np.clip(task, -LIMIT, LIMIT)}, mask


def plan_for(problem: Problem, device: int) -> list[int]:
    """The plan that runs the next step on ``device`` (a problem index): the steps not reserved
    for the user there too (it is asked again before each), the local steps on the user."""
    U = problem.user
    if device == U:
        return [U] * problem.steps
    free = problem.steps - problem.local_steps
    return [device] * free + [U] * problem.local_steps


def choose(problem: Problem, row: int, max_devices: int) -> tuple[int, bool]:
    """The problem device of action ``row``: (device, False) when it is possible (present and
    reachable from the holder), else (the masked device of least step time, True)."""
    V = problem.n_devices
    device = V - 1 if row == max_devices - 1 else row if 0 <= row < V - 1 else -1
    cost = step_cost(problem)
    if device >= 0 and np.isfinite(cost[device]):
        return device, False
    cost = np.where(device_mask(problem, cost), cost, np.inf)
    return int(np.argmin(cost)), True


class DViTPlacementEnv(CosimEnv):
    """``cosim/DViTPlacement-v0`` (see the module docstring; arguments: :class:`CosimEnv`, and
    ``failure_penalty_s``: the reward lost per failed task, in seconds of latency)."""

    layer = "dvit"
    agent_traits = {"replan": "step", "looks_ahead": False}
    env_id = "cosim/DViTPlacement-v0"

    def __init__(self, scenario: str | Path = "scenarios/grid6_dvit.toml", *, failure_penalty_s: float = 10.0,
                 **kwargs: Any):
        super().__init__(scenario, **kwargs)
        if not failure_penalty_s >= 0:
            raise ConfigError(f"failure_penalty_s: {failure_penalty_s!r} must be >= 0")
        self.failure_penalty_s = float(failure_penalty_s)
        self.max_devices = self.layer_cfg.max_helpers + 2
        D = self.max_devices
        self.action_space = gym.spaces.Discrete(D)
        self.observation_space = gym.spaces.Dict({
            "devices": gym.spaces.Box(-LIMIT, LIMIT, (D, len(DEVICE_FEATURES)), np.float32),
            "task": gym.spaces.Box(-LIMIT, LIMIT, (len(TASK_FEATURES),), np.float32),
        })

    def observe(self, question: tuple) -> tuple[dict, np.ndarray, dict]:
        problem = question[0]
        obs, mask = observe(problem, self.max_devices)
        task, _world, names = self.agent_layer.deciding
        rows = layout(problem, self.max_devices)
        padded = [""] * self.max_devices
        for j, r in enumerate(rows):
            padded[r] = names[j]
        return obs, mask, {"task": task.task_id, "step": task.k, "devices": padded}

    def answer(self, question: tuple, action: Any) -> tuple[list, dict]:
        problem = question[0]
        device, invalid = choose(problem, action, self.max_devices)
        return plan_for(problem, device), {"invalid_action": invalid}

    def cost_since(self, layer: Any, start: bool) -> float:
        spent = layer.stats[AGENT]["task_s"]
        failed = sum(layer.kernel.stats[AGENT].failed.values())  # censored tasks are not failures
        if start:
            self._spent, self._failed = spent, failed
            return 0.0
        cost = (spent - self._spent) + self.failure_penalty_s * (failed - self._failed)
        self._spent, self._failed = spent, failed
        return float(cost)

    def final_observation(self) -> dict:
        return {k: np.zeros(space.shape, dtype=np.float32) for k, space in self.observation_space.spaces.items()}
