"""One DViT task's scheduling problem, and the exact evaluation of a plan against it.

Devices are indexed 0 = the serving RSU r'_m (v_0), 1..N = helper vehicles, U = N + 1 = the
requesting user v'_n; in a re-plan from a helper that holds the result, device 0 is that helper
(``origin_rsu`` False; :meth:`Problem.kinds` says what each device is). A plan assigns each of
the K denoising steps to a device. Latency of step k on device o_k (eq. 7): T_k = T_comm +
T_comp + T_queue, with T_comm = n' mu / B (eq. 4; from the RSU for k = 1, from o_{k-1}
otherwise, 0 when the device does not change). The task total (eq. 14) adds the request upload
D_req / B(user -> RSU).

Constraints (eq. 14): C1 a step never returns from a vehicle to the RSU; C2 once on the user,
the task stays there; C3 T_k <= T_max; C4 total - T_loc <= the user's dwell in coverage (T_loc
= the user's own steps); and the last ``local_steps`` steps run on the user (local prompt; ours:
the paper does not say how many).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

RSU, HELPER, USER = 0, 1, 2


@dataclass
class Problem:
    comp_s: np.ndarray  # (V,) per-step computation time L D / c_j [s]
    queue_s: np.ndarray  # (V,) eq. (6) waiting time [s]
    comm_s: np.ndarray  # (V, V) hand-off time i -> j [s]: 0 on the diagonal, inf without a link
    upload_s: float  # D_req / B(user -> RSU) [s]
    user_dwell_s: float  # remaining time of the user in coverage [s]
    steps: int  # K
    local_steps: int  # the last steps on the user
    t_max_s: float  # C3
    # device features the heuristic policies rank by
    dist_to_rsu_m: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bandwidth_hz: np.ndarray = field(default_factory=lambda: np.zeros(0))
    compute_flops: np.ndarray = field(default_factory=lambda: np.zeros(0))
    xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # positions [m]
    speed_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # velocities [m/s]
    rsu_share: int = 1  # vehicles the RSU serves this slot (information only: the channel gives every
    #   downlink the RSU's full band w0, eq. 3, and so does MBDI's ranking; see schedulers.mbdi)
    origin_rsu: bool = True  # device 0 is the RSU (False: a re-plan from the helper holding the result)
    # mobility, for the schedulers that look ahead (VIDI's H'): where each device will be, and the
    # channel model to price a hand-off between positions other than today's
    ahead_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 2)))  # (V, M, 2) cell m's centre
    #   along the device's route ahead (m = 0: where it is now); empty: straight ahead from xy
    cell_offset_m: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (V,) how far into its cell
    cell_m: float = 25.0  # g', the road grid cell [m]
    dwell_s: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (V,) time each device stays in
    #   the RSU's coverage [s] (inf: the RSU); empty: everyone stays
    handoff_bits: float = 0.0  # n' mu; 0: hand-off times do not change with distance
    v2v_range_m: float = float("inf")
    v2v_pl_exponent: float = 1.77
    v2i_pl_exponent: float = 3.76
    min_distance_m: float = 1.0
    # the time from the world's snapshot (the slot's start) to this decision [s]: user_dwell_s and
    # dwell_s are as of the snapshot (the built-in schedulers ignore it; cosim.gym's observation
    # reads the dwell times as of the decision)
    elapsed_s: float = 0.0

    def __post_init__(self) -> None:
        # C2: the last step(s) run on the user; the result has to reach the user at all
        self.local_steps = max(1, min(int(self.local_steps), int(self.steps)))

    @property
    def n_devices(self) -> int:
        return len(self.comp_s)

    @property
    def user(self) -> int:
        return self.n_devices - 1

    def kinds(self) -> np.ndarray:
        """(V,) what each device is: RSU, HELPER or USER. Device 0 is the RSU in a request's
        problem and the helper holding the result in a re-plan from a helper (``origin_rsu``
        False): a baseline that ranks helpers may then keep the result where it is."""
        k = np.full(self.n_devices, HELPER)
        k[0] = RSU if self.origin_rsu else HELPER
        k[-1] = USER
        return k

    def step_cost(self) -> np.ndarray:
        """(V,) compute + queue time of one step on each device [s]."""
        return self.comp_s + self.queue_s

    def allowed(self) -> np.ndarray:
        """(V, V) transitions i -> j allowed by C1 and C2 (a new array: the caller may change it)."""
        return _allowed(self.n_devices).copy()

    def admissible(self, cur: int, k: int) -> np.ndarray:
        """(V,) the devices step ``k`` (0-based) may run on when device ``cur`` holds the result of
        step k - 1 (for k = 0: device 0, which holds the request) — the rule the layer applies to
        every plan (:meth:`violation`): C1/C2 from ``cur``, and only the user for the last
        ``local_steps`` steps. C3 (T_max) and links are the scheduler's to weigh. A new array."""
        if k >= self.steps - self.local_steps:
            ok = np.zeros(self.n_devices, dtype=bool)
            ok[self.user] = True
            return ok
        return _allowed(self.n_devices)[0 if k == 0 else cur].copy()

    def violation(self, plan: np.ndarray) -> str | None:
        """What makes ``plan`` (``steps`` device indices within the problem) inadmissible — a
        transition C1/C2 forbid, or one of the last ``local_steps`` steps off the user — as a
        phrase; None for an admissible plan. A plugin's scheduler can call it too."""
        plan = np.asarray(plan, dtype=np.int64)
        seq, user = plan.tolist(), self.n_devices - 1
        if plan.ndim != 1 or (seq and (min(seq) < 0 or max(seq) > user)):
            return self._violation_arrays(plan)  # not a plan over the problem's devices: numpy's own indexing
        # the layer's case (every device in range, checked before): _allowed's rule as Python
        # comparisons step by step, the same answer as _violation_arrays at a fraction of the cost
        # on a plan of tens of steps — C1: no transition i -> 0 for i > 0 (device 0: the RSU, or in
        # a re-plan from a helper that helper); C2: from the user only to the user
        prev = seq[0] if seq else 0
        for k in range(1, len(seq)):
            cur = seq[k]
            if (cur == 0 and prev != 0) or (prev == user and cur != user):
                return f"breaks C1/C2 at step {k + 1}: device {prev} -> {cur}"
            prev = cur
        if any(d != user for d in seq[self.steps - self.local_steps:]):
            return f"does not run its last {self.local_steps} steps on the user (device {self.user})"
        return None

    def _violation_arrays(self, plan: np.ndarray) -> str | None:
        """:meth:`violation` with numpy on the int64 array ``plan`` (any plan numpy can index with)."""
        bad = np.flatnonzero(~_allowed(self.n_devices)[plan[:-1], plan[1:]])
        if len(bad):
            k = int(bad[0]) + 1
            return f"breaks C1/C2 at step {k + 1}: device {plan[k - 1]} -> {plan[k]}"
        if not np.all(plan[self.steps - self.local_steps:] == self.user):
            return f"does not run its last {self.local_steps} steps on the user (device {self.user})"
        return None


@functools.lru_cache(maxsize=64)
def _allowed(n_devices: int) -> np.ndarray:
    """:meth:`Problem.allowed` for ``n_devices`` devices (it depends on nothing else), built once."""
    ok = np.ones((n_devices, n_devices), dtype=bool)
    ok[1:, 0] = False  # C1: never back to the RSU
    ok[-1, :] = False  # C2: the user keeps the task ...
    ok[-1, -1] = True  # ... on itself
    ok.flags.writeable = False
    return ok


@dataclass
class Evaluation:
    total_s: float
    comm_s: np.ndarray  # (K,)
    comp_s: np.ndarray
    queue_s: np.ndarray
    feasible: bool
    reason: str  # "" when feasible, else the first violated constraint

    @property
    def step_s(self) -> np.ndarray:
        return self.comm_s + self.comp_s + self.queue_s


def evaluate(p: Problem, plan: np.ndarray) -> Evaluation:
    """Latency terms and constraint check of ``plan`` (device index per step)."""
    plan = np.asarray(plan, dtype=np.int64)
    if len(plan) != p.steps:
        raise ValueError(f"plan has {len(plan)} steps, the problem {p.steps}")
    prev = np.concatenate([[0], plan[:-1]])  # step 1 receives from the RSU (eq. 4, k = 1)
    comm = np.where(prev == plan, 0.0, p.comm_s[prev, plan])
    comp, queue = p.comp_s[plan], p.queue_s[plan]
    step = comm + comp + queue
    total = p.upload_s + float(step.sum())
    reason = ""
    if not _allowed(p.n_devices)[prev[1:], plan[1:]].all():
        reason = "C1/C2"
    elif p.local_steps and not (plan[p.steps - p.local_steps:] == p.user).all():
        reason = "local-steps"
    elif not np.isfinite(step).all():
        reason = "no-link"
    elif (step > p.t_max_s + 1e-12).any():
        reason = "C3"
    else:
        t_loc = float(step[plan == p.user].sum())
        if total - t_loc > p.user_dwell_s + 1e-12:
            reason = "C4"
    return Evaluation(total, comm, comp, queue, reason == "", reason)
