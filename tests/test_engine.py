"""The engine's pieces, each by hand: the slot boundaries, the one signal hold, the one process
stop, a run resolved once (frozen; its layers built once and run by the session)."""

import dataclasses
import itertools
import os
import signal
import subprocess
import sys

import pytest

from cosim.config import load as load_config
from cosim.engine import processes
from cosim.engine.signals import interrupt_pending, interrupts, raise_terminated, raised_mark, reraise_dropped
from cosim.engine.spec import resolve
from cosim.engine.timeline import slot_times
from cosim.errors import Terminated

from .conftest import GRID6_CFG


def test_slot_times_are_the_boundaries_up_to_the_end_within_eps():
    assert list(slot_times(0.0, 0.5, 2.0)) == [0.5, 1.0, 1.5, 2.0]
    assert list(slot_times(10.0, 1.0, 12.0 - 5e-7)) == [11.0, 12.0]  # 12 lies within 1e-6 of the end
    assert list(slot_times(10.0, 1.0, 12.0 - 2e-6)) == [11.0]
    assert list(slot_times(0.0, 1.0, 0.5)) == []
    assert list(itertools.islice(slot_times(3.0, 0.25, None), 3)) == [3.25, 3.5, 3.75]  # no end: on and on
    # begin + k * slot, not a running sum: 0.1 added ten times is 0.9999999999999999
    assert list(slot_times(0.0, 0.1, 1.0))[-1] == 10 * 0.1 == 1.0


def _term() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def test_a_hold_keeps_the_first_signal_until_its_block_ends_and_lets_a_second_through():
    old = signal.getsignal(signal.SIGTERM)
    reached = []
    with pytest.raises(Terminated):
        with interrupts(signal.SIGINT, signal.SIGTERM, hold=True):
            _term()
            reached.append(interrupt_pending())  # held: the block goes on
    assert reached == [True] and not interrupt_pending()
    with pytest.raises(Terminated):
        with interrupts(signal.SIGINT, signal.SIGTERM, hold=True):
            _term()
            _term()  # a second one: at once
            reached.append("not reached")
    assert reached == [True]
    assert signal.getsignal(signal.SIGTERM) is old  # the handler before is back


def test_a_slot_s_hold_keeps_every_sigterm_and_only_where_the_run_s_handler_is_in_place():
    done = []
    with pytest.raises(Terminated):
        with interrupts(signal.SIGTERM, install=True):  # the slot loop's
            with interrupts(signal.SIGTERM, hold=True, second=False, install=False):  # a slot's bookkeeping
                _term()
                _term()  # a second one waits too
                done.append("recorded and counted")
    assert done == ["recorded and counted"]
    got = []
    old = signal.signal(signal.SIGTERM, lambda s, f: got.append(s))  # a program's own handler
    try:
        with interrupts(signal.SIGTERM, install="unowned"):  # left alone
            with interrupts(signal.SIGTERM, hold=True, second=False, install=False):
                _term()
        assert got == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, old)
    with pytest.raises(Terminated):  # outside any hold the handler raises at once
        raise_terminated(signal.SIGTERM, None)


def _child(code: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def test_stop_signals_waits_its_grace_then_kills():
    p = _child("import time; print('ready', flush=True); time.sleep(60)")
    assert processes.stop(p, 10, signal.SIGTERM) == -signal.SIGTERM  # ended by the signal, within its grace
    p = _child("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
               "time.sleep(60)")
    assert processes.stop(p, 0.2, signal.SIGTERM) == -signal.SIGKILL  # ignored it: killed after the grace
    p = _child("print('ready', flush=True)")
    p.wait()
    assert processes.stop(p, 0) == 0  # already gone: its exit code


def test_the_wire_is_one_pickled_message_per_frame():
    from multiprocessing.connection import Pipe

    import numpy as np

    a, b = Pipe()
    msg = ("slot", 3, {"x": np.arange(5.0)}, None)
    processes.send(a, msg)
    processes.send_packed(a, processes.pack(("end",)))
    got = processes.recv(b)
    assert got[:2] == ("slot", 3) and got[2]["x"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert processes.recv(b) == ("end",)


def _count_builds(monkeypatch) -> list:
    """The names of the layers constructed from now on, in order (Layer.__init__ counted)."""
    from cosim.layers.base import Layer

    built = []
    init = Layer.__init__

    def counting(self, config, ctx):
        built.append(self.name)
        init(self, config, ctx)

    monkeypatch.setattr(Layer, "__init__", counting)
    return built


def _cfg(tmp_path, extra="", cache=""):
    f = tmp_path / "s.toml"
    f.write_text(f'[scenario]\nsumocfg = "{GRID6_CFG}"\nbegin_s = 5\nend_s = 25\nslot_s = 1.0\nstep_length_s = 0.25\n'
                 f'{extra}[layers.dvit]\npolicies = ["vidi", "optimal", "sdi", "mddi"]\n[layers.cache]\n{cache}')
    return load_config(f)


def test_a_run_is_resolved_once_into_a_frozen_spec(tmp_path):
    spec = resolve(_cfg(tmp_path, "jobs = 3\n"))
    tl = spec.timeline
    assert (tl.begin_s, tl.end_s, tl.step_s, tl.slot_s) == (5.0, 25.0, 0.25, 1.0)
    assert list(tl.slots())[:2] == [6.0, 7.0] and len(list(tl.slots())) == 20
    assert [layer.name for layer in spec.layers] == ["dvit", "cache"]
    assert spec.jobs == spec.cfg.scenario.jobs == 3 and spec.plan is not None
    assert spec.plan.order["dvit"] == ["vidi", "optimal", "sdi", "mddi"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.jobs = 1  # type: ignore[misc]
    one = resolve(_cfg(tmp_path, "jobs = 1\n"))
    assert one.plan is None and one.jobs == 1
    replay = resolve(_cfg(tmp_path).replace(scenario={"end_s": -1.0}), traffic="replay")
    assert replay.timeline.end_s is None  # a replay without an end runs to the trace's
    attached = resolve(_cfg(tmp_path, "jobs = 3\n"), traffic="attach")
    assert attached.jobs == 1 and attached.plan is None  # your loop drives SUMO: one process


def test_a_session_runs_the_layers_resolve_built(tmp_path, monkeypatch):
    from cosim.engine.session import Session
    built = _count_builds(monkeypatch)
    spec = resolve(_cfg(tmp_path, "jobs = 1\n"))
    assert built == ["dvit", "cache"]
    session = Session(spec, tmp_path / "out", created=True)
    try:
        assert built == ["dvit", "cache"]  # not built again
        assert [id(x) for x in session.layers] == [id(x) for x in spec.layers]
        assert set(session.tables.tables) == {"dvit_tasks", "cache_requests"}  # on_start opened the run's tables
        second = Session(spec, tmp_path / "out2", created=True)  # a second session of one spec builds its own
        assert built == ["dvit", "cache", "dvit", "cache"] and second.layers[0] is not spec.layers[0]
        second.discard()
    finally:
        session.discard()
    assert not (tmp_path / "out").exists()  # made for the run, removed by the rollback


def test_with_policy_workers_the_plugin_s_process_builds_each_layer_once(tmp_path, monkeypatch):
    """--jobs 3: resolve deals the policies by their bound specs (no layer built for it) and
    builds each layer once, with the plugin's share of its policies, checked against all of
    them; the session runs those very objects. Before: every layer built whole by resolve, then
    share 0's built again by the session."""
    from cosim.engine.session import Session
    built = _count_builds(monkeypatch)
    # two cache policies: the deal (by the registered costs) then splits DViT over both processes
    spec = resolve(_cfg(tmp_path, "jobs = 3\n", 'policies = ["lc", "lru"]\n'))
    assert built == ["dvit", "cache"]
    owner = spec.plan.owner
    mine = [p for p in ["vidi", "optimal", "sdi", "mddi"] if owner[("dvit", p)] == 0]
    theirs = [p for p in ["vidi", "optimal", "sdi", "mddi"] if owner[("dvit", p)] != 0]
    assert mine and theirs  # dealt over both processes
    dvit = spec.layers[0]
    assert list(dvit.policies) == mine and list(dvit.configured) == ["vidi", "optimal", "sdi", "mddi"]
    assert list(dvit.kernel.stats) == mine  # state kept for its share only
    session = Session(spec, tmp_path / "out", created=True)
    try:
        assert built == ["dvit", "cache"]  # the session runs them: not built again
        assert [id(x) for x in session.layers] == [id(x) for x in spec.layers if x.name in spec.plan.shares[0].layers]
    finally:
        session.discard()


def test_a_policy_dealt_to_a_worker_is_still_checked_before_the_run(tmp_path):
    """A check across the policies (MoE: a posted price inside price_range) walks every
    configured policy, so a bad one is refused by resolve whichever process it was dealt to."""
    from cosim.errors import ConfigError

    f = tmp_path / "m.toml"
    f.write_text(f'[scenario]\nsumocfg = "{GRID6_CFG}"\nend_s = 20\njobs = 3\n[layers.moe]\n'
                 'policies = ["uniform", "nearest"]\n')
    cfg = load_config(f)
    ok = resolve(cfg)
    away = [p for p in ("uniform", "nearest") if ok.plan.owner[("moe", p)] != 0]
    assert away and not set(away) & set(ok.layers[0].policies)  # dealt to a worker: the plugin's layer does not run it
    p = away[0]  # every solver's options carry uniform_price (its posted or starting price)
    bad = cfg.replace(layers={"moe": {**cfg.layers["moe"], "options": {p: {"uniform_price": 5000.0}}}})
    assert resolve(cfg.replace(layers={"moe": {**cfg.layers["moe"], "options": {p: {"uniform_price": 50.0}}}})).plan.owner == ok.plan.owner
    with pytest.raises(ConfigError, match=rf"layers\.moe\.options\.{p}\.uniform_price: 5000 is outside price_range \[0\.01, 1000\]"):
        resolve(bad)


def test_set_items_of_layer_keys_build_the_layers_once_and_an_error_names_its_item(tmp_path, monkeypatch):
    """`cosim run --set layers.…` checks the layers with every --set applied, built once (before:
    once per item); when that fails, the first item whose configuration fails is named."""
    import argparse

    from cosim.cli import _apply_output_args
    from cosim.errors import CosimError
    built = _count_builds(monkeypatch)
    cfg = _cfg(tmp_path)

    def args(*items):
        return argparse.Namespace(set=list(items), no_layers=False, no_coverage=False, jobs=None)

    good = ["layers.cache.gpu_memory_gb=40", "layers.dvit.request_rate_per_s=0.5", "rsu.radius_m=300"]
    out = _apply_output_args(cfg, args(*good))
    assert built == ["dvit", "cache"]  # one build of each layer for three items, two of them layer keys
    assert out.layers["cache"]["gpu_memory_gb"] == 40 and out.layers["dvit"]["request_rate_per_s"] == 0.5
    built.clear()
    with pytest.raises(CosimError) as e:
        _apply_output_args(cfg, args(good[0], "layers.cache.gpu_memory_gb=-1", good[1]))
    assert "--set layers.cache.gpu_memory_gb=-1" in str(e.value) and "layers.cache.gpu_memory_gb" in str(e.value)


def test_a_sigterm_dropped_inside_a_c_callback_is_raised_again_at_the_next_slot(monkeypatch):
    """A SIGTERM whose handler runs inside a C callback (as llvmlite's object-cache hook while numba
    loads a kernel; here libc's qsort calling a ctypes comparison) is dropped by Python ("Exception
    ignored"): the run went on and completed. The slot loop now raises it at the next slot
    (reraise_dropped), and the dropped one prints no traceback."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    cmp_t = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
    sent = []

    def cmp(a, b):  # noqa: ANN001, ANN202
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):  # the handler runs between these bytecodes, inside the callback
                pass
        return a[0] - b[0]

    arr = (ctypes.c_int * 5)(5, 1, 4, 2, 3)
    printed = []  # what reaches the unraisable hook that was in place (Python's prints a traceback)
    monkeypatch.setattr(sys, "unraisablehook", printed.append)
    with interrupts(signal.SIGTERM):
        mark = raised_mark()
        libc.qsort(arr, 5, ctypes.sizeof(ctypes.c_int), cmp_t(cmp))  # no exception comes out of it
        assert sent and raised_mark() == mark + 1
        with pytest.raises(Terminated):
            reraise_dropped(mark)
        reraise_dropped(mark + 1)  # nothing raised since: nothing to raise
    assert printed == [] and sys.unraisablehook == printed.append  # the hook in place again
    with interrupts(signal.SIGTERM):  # anything else dropped in a callback still reaches it
        ctypes.CFUNCTYPE(None)(lambda: 1 / 0)()
    assert [type(u.exc_value) for u in printed] == [ZeroDivisionError]
