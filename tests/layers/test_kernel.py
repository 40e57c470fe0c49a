"""The task kernel: resources first come first served, held capacities, the run order, and the
simulated queue worked by hand in the DViT and MoE layers."""

import math

import pandas as pd
import pytest

from cosim.layers.kernel import Capacity, Kernel, Resources, Task

from .test_dvit_layer import layer as dvit_layer
from .test_dvit_layer import snap as dvit_snap
from .test_dvit_layer import world as dvit_world
from .test_moe_layer import layer as moe_layer
from .test_moe_layer import snap as moe_snap
from .test_moe_layer import world as moe_world


def test_resources_first_come_first_served():
    r = Resources()
    assert r.use("rsu", 1.0, 0.5) == 1.0  # free: starts at once
    assert r.wait("rsu", 1.2) == pytest.approx(0.3)
    assert r.use("rsu", 1.2, 0.5) == pytest.approx(1.5)  # waits for the first
    assert r.wait("rsu", 2.5) == 0.0 and r.wait("other", 1.2) == 0.0
    r.forget(2.1)
    assert "rsu" not in r.free_at  # free since 2.0


def test_capacity_held_until_released():
    c = Capacity()
    c.hold("t1", "iv", 0.4)
    c.hold("t2", "iv", 0.25)
    assert c.held("iv") == pytest.approx(0.65)
    c.release("t1")
    assert c.held("iv") == pytest.approx(0.25)
    c.release("t2")
    c.release("t2")  # twice: nothing
    assert c.held("iv") == 0.0


def test_capacity_a_tiny_hold_left_under_another_is_released_without_error():
    # t2 bought 1e-13 of an IV t1 holds 0.5 of: t1's release leaves 1e-13 <= 1e-12 and drops the
    # key; t2's release then found no key (a KeyError that ended the MoE layer of a paper-world
    # run, seed 8 of tools/reproduce.py 001). Now: nothing held, and the IV can be held again
    c = Capacity()
    c.hold("t1", "iv", 0.5)
    c.hold("t2", "iv", 1e-13)
    c.release("t1")
    assert c.held("iv") == 0.0
    c.release("t2")
    assert c.held("iv") == 0.0
    c.hold("t3", "iv", 0.25)
    assert c.held("iv") == 0.25


def _stepper(log, dur):
    def step(task):
        log.append((task.task_id, task.clock))
        task.clock += dur[task.task_id]
        if task.clock >= 3.0:
            task.status = "done"
    return step


def test_run_order_analytic_is_task_by_task_simulated_is_by_clock():
    for queue, expected in (("analytic", [(0, 0.0), (0, 1.0), (1, 0.5)]),
                            ("simulated", [(0, 0.0), (1, 0.5), (0, 1.0)])):
        k = Kernel(["p"], queue)
        for i, t0 in enumerate((0.0, 0.5)):
            k.count("p")
            k.start(Task(i, "p", t0, clock=t0))
        log = []
        k.run(1.2, _stepper(log, {0: 1.0, 1: 1.0}))
        assert log == expected, queue


def test_a_step_that_does_not_move_the_clock_is_an_error_not_a_hang():
    k = Kernel(["p"])
    k.count("p")
    k.start(Task(0, "p", 0.0))
    with pytest.raises(RuntimeError, match="did not advance its clock"):
        k.run(1.0, lambda task: None)


def test_finish_and_block_by_hand():
    k = Kernel(["p"])
    tasks = [Task(i, "p", 0.0, clock=c) for i, c in enumerate((0.2, 0.4, 0.9))]
    for t in tasks:
        k.count("p")
    k.count("p")  # a fourth request never started
    assert math.isnan(k.finish(tasks[0], "failed", "C4", completed=False))
    assert k.finish(tasks[1], "done", "", completed=True) == pytest.approx(0.4)
    assert k.finish(tasks[2], "failed", "C3", completed=True) == pytest.approx(0.9)
    b = k.block("p")
    assert b["tasks"] == 4 and b["completed"] == 2 and b["success_rate"] == 0.25
    assert b["mean_latency_s"] == pytest.approx(0.65)
    assert b["p95_latency_s"] == pytest.approx(0.4 + 0.95 * 0.5)


def test_censored_tasks_are_neither_success_nor_failure():
    k = Kernel(["p"])
    tasks = [Task(i, "p", 0.0, clock=c) for i, c in enumerate((0.2, 0.4, 0.9, 1.5))]
    for t in tasks:
        k.count("p")
    k.finish(tasks[0], "done", "", completed=True)
    k.finish(tasks[1], "failed", "C4", completed=False)
    k.finish(tasks[2], "done", "", completed=True)
    assert math.isnan(k.finish(tasks[3], "censored", "censored", completed=False))  # the run ended
    b = k.block("p")
    # 2 successes of the 3 tasks that ended; the censored one counts in tasks, not in the rate
    assert b["tasks"] == 4 and b["censored"] == 1 and b["success_rate"] == pytest.approx(2 / 3)
    assert k.stats["p"].failed == {"C4": 1}


def test_dvit_simulated_queue_by_hand(tmp_path):
    """Two users at the same distance ask at the same instant; mcpdi runs the first K-1 steps on
    the RSU (the fastest device), the last on the user. Analytic (an idle RSU's M/M/1 wait is 0):
    both take U + 3c + h + c_u. Simulated: the RSU serves one step at a time, first come first
    served, so the steps interleave: the first task waits c twice, the second c three times."""
    out = {}
    for queue in ("analytic", "simulated"):
        w = dvit_world().update(dvit_snap(1.0, ["u1", "u2"], [100.0, -100.0]))
        lay, rec = dvit_layer(tmp_path / queue, policies=["mcpdi"], steps=4, local_steps=1, queue=queue,
                              rsu_compute_flops=[2e12, 2e12], vehicle_compute_flops=[1e12, 1e12],
                              rsu_queue=[0.0, 10.0], vehicle_queue=[0.0, 10.0])
        lay.submit(w, 0, 1.0)
        lay.submit(w, 1, 1.0)
        lay.on_slot(w)
        lay.on_end()
        rec.close()
        out[queue] = pd.read_parquet(tmp_path / queue / "dvit_tasks.parquet")
    c = lay.flops_step / 2e12  # one step on the RSU
    cu = lay.flops_step / 1e12  # one step on a user
    a, s = out["analytic"], out["simulated"]
    assert list(a["devices"].iloc[0]) == ["@rsu"] * 3 + ["u1"] and list(s["devices"].iloc[1]) == ["@rsu"] * 3 + ["u2"]
    h = a["step_comm_s"].iloc[0][3]
    assert h < c  # the RSU's radio is free again when the second hand-off comes
    base = a["latency_s"].iloc[0]
    assert a["latency_s"].tolist() == pytest.approx([base, base]) and a["queue_s"].tolist() == [0.0, 0.0]
    assert base - 3 * c - h - cu == pytest.approx(1e6 / w.rate_v2i_bps[0])  # U: the upload
    by_user = s.set_index("user")
    assert by_user.loc["u1", "step_queue_s"].tolist() == pytest.approx([0.0, c, c, 0.0])
    assert by_user.loc["u2", "step_queue_s"].tolist() == pytest.approx([c, c, c, 0.0])
    assert by_user.loc["u1", "latency_s"] == pytest.approx(base + 2 * c)
    assert by_user.loc["u2", "latency_s"] == pytest.approx(base + 3 * c)


def test_moe_simulated_queue_tasks_share_an_ivs_memory_and_compute(tmp_path):
    """IVs with memory for one expert: analytic, two tasks at once both use the same two IVs;
    simulated, the first holds their memory and the second finds none ("no-ivs") until the
    first ends and releases it."""
    w = moe_world().update(moe_snap(0.0, ["tv", "a", "b"], [0.0, 60.0, 120.0]))
    expert_gb = 2 * 8 * 16 * 2 / 1e9
    for queue, second in (("analytic", "running"), ("simulated", "no-ivs")):
        lay = moe_layer(tmp_path / queue, iv_memory_gb=[expert_gb * 1.5], moe_layers=1, queue=queue)
        lay.submit(w, 0, 0.0)
        lay.submit(w, 0, 0.0)
        running = lay.kernel.running()
        if second == "running":
            assert len(running) == 2 and running[0].ivs == running[1].ivs == ["a", "b"]
            continue
        assert len(running) == 1 and lay.stats["uniform"]["declined"] == 0
        first = running[0]
        cap = lay.kernel.capacity
        assert cap.held(("uniform", "mem", "a")) == pytest.approx(expert_gb)
        assert cap.held(("uniform", "cpu", "a")) == pytest.approx(first.f[0])
        assert lay.kernel.stats["uniform"].tasks == 2  # the second counted, failed "no-ivs"
        lay.kernel.run(10.0, lambda t: lay._advance(t, w, w.index))
        assert first.status == "done" and cap.held(("uniform", "mem", "a")) == 0.0
        lay.submit(w, 0, 5.0)  # after the release: placed again
        assert len(lay.kernel.running()) == 1 and lay.kernel.running()[0].ivs == ["a", "b"]


def test_moe_two_tasks_share_one_ivs_compute(tmp_path):
    """One IV (F = 1.5 TFLOP/s, memory for both tasks' expert), one expert, posted price 10.
    One IV alone: a = v = 20, beta = 10, gamma = 3, so the TV buys f = (20 - 10) / 10 = 1.0.
    Analytic: both tasks buy 1.0 (the IV serves each as if alone). Simulated: the first holds
    1.0, the second's game sees F = 0.5 left, and its constrained best response buys exactly
    that; its six tokens take twice as long on the IV."""
    w = moe_world().update(moe_snap(0.0, ["tv", "a"], [0.0, 60.0]))
    flop = 4 * 8 * 16 / 1e12
    for queue, f2 in (("analytic", 1.0), ("simulated", 0.5)):
        lay = moe_layer(tmp_path / queue, moe_layers=1, experts=1, ivs_per_task=1, iv_compute_tflops=[1.5], queue=queue)
        lay.submit(w, 0, 0.0)
        lay.submit(w, 0, 0.0)
        first, second = lay.kernel.running()
        assert first.ivs == second.ivs == ["a"]
        assert first.f.tolist() == pytest.approx([1.0]) and second.f.tolist() == pytest.approx([f2])
        if queue == "simulated":
            assert lay.kernel.capacity.held(("uniform", "cpu", "a")) == pytest.approx(1.5)
        lay.kernel.run(10.0, lambda t: lay._advance(t, w, w.index))
        assert first.status == second.status == "done"
        assert second.comp == pytest.approx([6 * flop / f2]) and first.comp == pytest.approx([6 * flop / 1.0])
        lat = [t.clock - t.t_request for t in (first, second)]
        assert lat[1] - lat[0] == pytest.approx(6 * flop / f2 - 6 * flop)


def test_simulated_run_skips_a_task_another_step_ended():
    """A step may end other tasks (a dropped policy ends all of its running tasks): those are not
    stepped again, as with the analytic order."""
    for queue in ("analytic", "simulated"):
        k = Kernel(["p"], queue)
        tasks = [Task(i, "p", 0.0, clock=0.1 * i) for i in range(3)]
        for t in tasks:
            k.count("p")
            k.start(t)
        stepped = []

        def step(task, k=k, tasks=tasks, stepped=stepped):
            stepped.append(task.task_id)
            for other in tasks[1:]:
                if other.status == "running":
                    k.finish(other, "failed", "policy-error", completed=False)
            task.clock += 1.0

        k.run(0.5, step)
        assert stepped == [0], queue
        assert [t.status for t in tasks] == ["running", "failed", "failed"]
