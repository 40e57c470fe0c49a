"""The task kernel: work that spans slots, advanced as SUMO moves, on shared devices.

A layer whose tasks take longer than a slot (DViT's denoising steps, MoE's layers) hands them
to a :class:`Kernel`. Each task has a clock (when its next unit of work may start); every slot
the layer calls ``kernel.run(until, step)`` and the kernel calls ``step(task)`` — one unit of
work with the world of the slot it starts in — for every task whose clock is before ``until``
(the end of the slot), until each is past it or finished. ``finish(task, status, reason,
completed)`` ends a task with a reason; the per-policy statistics (tasks, completed, censored,
success rate, mean and p95 latency) are computed once, here (:meth:`Kernel.block`).

**Censoring.** A task still running when the run ends has no outcome: the layer finishes it
``censored`` (:data:`CENSORED`), which counts neither as a success nor as a failure — the success
rate is over the tasks that ended (``tasks - censored``). A task whose failure is already certain
at the end (e.g. past its deadline) is finished ``failed`` instead. Policies are compared task by
task on the tasks both completed (:mod:`cosim.pairing`); per-policy means over each policy's own
completed tasks (``mean_latency_s``) are descriptive only.

**Shared resources.** With ``queue = "analytic"`` (the papers' model) a task's waiting time is
the analytic M/M/1 mean (eq. 6) and tasks never meet: the kernel advances them one after the
other, in the order they started. With ``queue = "simulated"`` the devices are
:class:`Resources` that the concurrent tasks of one policy really share: a unit of work waits
while its device is busy with another task's, first come first served. The kernel then
advances the tasks in the order of their clocks (a heap), one unit of work at a time, so that
whoever asks for a device first gets it first — a discrete-event simulation inside each slot.
Each policy has its own devices (the policies are compared side by side, each as if it ran the
network alone).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Callable, Hashable

import numpy as np

QUEUES = ("analytic", "simulated")
#: the statuses a task ends with; ``outcome`` in the layers' task tables
DONE, FAILED, CENSORED = "done", "failed", "censored"


@dataclass
class Task:
    """What the kernel needs of a task; layers subclass it with their own fields."""

    task_id: int
    policy: str
    t_request: float
    clock: float = 0.0  # when the next unit of work may start [s]
    status: str = "running"  # running | done | failed | censored
    reason: str = ""


class Resources:
    """Devices shared first come first served: for each key, when it is next free [s].

    A key names one device of one policy (e.g. ``("vidi", "cpu", "@rsu3")``). ``wait(key, t)``
    says how long work arriving at ``t`` would wait; ``use(key, t, duration)`` books it and
    returns the time it starts.
    """

    def __init__(self) -> None:
        self.free_at: dict[Hashable, float] = {}

    def wait(self, key: Hashable, t: float) -> float:
        free = self.free_at.get(key, -math.inf)
        return free - t if free > t else 0.0

    def use(self, key: Hashable, t: float, duration: float) -> float:
        start = t + self.wait(key, t)
        self.free_at[key] = start + duration
        return start

    def forget(self, before: float) -> None:
        """Drop the devices free before ``before`` (bounded memory on long runs)."""
        self.free_at = {k: v for k, v in self.free_at.items() if v >= before}


class Capacity:
    """Divisible capacities (an IV's compute, its memory) that concurrent tasks hold while they
    run: ``held(key)`` is what the running tasks hold of device ``key``; ``hold(owner, key,
    amount)`` adds to it until ``release(owner)``."""

    def __init__(self) -> None:
        self._held: dict[Hashable, float] = {}
        self._by_owner: dict[Hashable, list] = {}

    def held(self, key: Hashable) -> float:
        return self._held.get(key, 0.0)

    def hold(self, owner: Hashable, key: Hashable, amount: float) -> None:
        self._held[key] = self._held.get(key, 0.0) + amount
        self._by_owner.setdefault(owner, []).append((key, amount))

    def release(self, owner: Hashable) -> None:
        for key, amount in self._by_owner.pop(owner, ()):
            # get/pop: an earlier release dropped the key while this owner's hold was left, if
            # that was 1e-12 or less (a task that bought ~0 of an IV another task held)
            left = self._held.get(key, 0.0) - amount
            if left <= 1e-12:
                self._held.pop(key, None)
            else:
                self._held[key] = left


@dataclass
class Stats:
    """One policy's task statistics."""

    tasks: int = 0
    completed: int = 0  # all the work done (latency defined), in time or not
    success: int = 0
    censored: int = 0  # still running at the run's end: neither success nor failure
    latency: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)  # reason -> tasks ended "failed" with it


class Kernel:
    """Tasks of one layer, per policy; see the module docstring."""

    def __init__(self, policies: list[str], queue: str = "analytic"):
        if queue not in QUEUES:
            raise ValueError(f"queue must be one of {', '.join(QUEUES)}")
        self.queue = queue
        self.active: list[Task] = []
        self.stats = {p: Stats() for p in policies}
        #: the devices the tasks share (simulated queue), else None
        self.resources = Resources() if queue == "simulated" else None
        #: capacities the running tasks hold (simulated queue), else None; released at finish
        self.capacity = Capacity() if queue == "simulated" else None

    def count(self, policy: str) -> None:
        """A task of ``policy`` was requested (started or not)."""
        self.stats[policy].tasks += 1

    def start(self, task: Task) -> None:
        """``task`` (already counted) runs from its clock on."""
        self.active.append(task)

    def run(self, until: float, step: Callable[[Task], None]) -> None:
        """Advance every running task whose clock is before ``until`` by calling ``step(task)``
        (one unit of work; it moves the clock or finishes the task) until each is done or past."""
        if self.resources is None:
            for task in self.active:
                while task.status == "running" and task.clock < until:
                    before = task.clock
                    step(task)
                    if task.status == "running" and task.clock <= before:
                        raise RuntimeError(f"task {task.task_id} ({task.policy}): a step did not advance its clock")
        else:
            heap = [(t.clock, i, t) for i, t in enumerate(self.active) if t.status == "running" and t.clock < until]
            heapq.heapify(heap)
            while heap:
                _, i, task = heapq.heappop(heap)
                if task.status != "running":  # ended by another task's step (e.g. its policy was dropped)
                    continue
                before = task.clock
                step(task)
                if task.status == "running":
                    if task.clock <= before:
                        raise RuntimeError(f"task {task.task_id} ({task.policy}): a step did not advance its clock")
                    if task.clock < until:
                        heapq.heappush(heap, (task.clock, i, task))
            self.resources.forget(until - 3600.0)
        self.active = [t for t in self.active if t.status == "running"]

    def finish(self, task: Task, status: str, reason: str, completed: bool) -> float:
        """End ``task``; returns its latency (NaN unless ``completed``: all its work done)."""
        task.status, task.reason = status, reason
        if self.capacity is not None:
            self.capacity.release(id(task))
        st = self.stats[task.policy]
        latency = task.clock - task.t_request if completed else math.nan
        if completed:
            st.completed += 1
            st.latency.append(latency)
        if status == DONE:
            st.success += 1
        elif status == CENSORED:
            st.censored += 1
        else:
            st.failed[reason] = st.failed.get(reason, 0) + 1
        return latency

    def running(self, policy: str | None = None) -> list[Task]:
        return [t for t in self.active if t.status == "running" and (policy is None or t.policy == policy)]

    def block(self, policy: str) -> dict:
        """The statistics every task layer reports per policy: ``success_rate`` over the tasks
        that ended (censored ones excluded); latencies over this policy's own completed tasks."""
        st = self.stats[policy]
        lat = np.asarray(st.latency)
        ended = st.tasks - st.censored
        return {
            "tasks": st.tasks,
            "completed": st.completed,
            "censored": st.censored,
            "success_rate": st.success / ended if ended else None,
            "mean_latency_s": float(lat.mean()) if len(lat) else None,
            "p95_latency_s": float(np.quantile(lat, 0.95)) if len(lat) else None,
        }
