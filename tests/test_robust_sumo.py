"""Robustness against what can end a real run (issue 17): signals at random points, a full disk,
a frozen SUMO, a chatty SUMO, a broken routes file, a stopped sweep. Real SUMO on grid6."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import cosim
from cosim.sources.sumo import sumo_binary

from .conftest import GRID6_CFG, GRID6_TOML, ROOT, as_foreground, run_cli, wait_for

pytestmark = pytest.mark.sumo

DVIT = ROOT / "scenarios" / "grid6_dvit.toml"


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cosim", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=as_foreground)


def children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parent[int(d.name)] = int(fields[1])
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def check_readable(out: Path) -> dict:
    """Every table of ``out`` reads back; each has every slot from 0 to its last without a gap,
    and a killed run's tables hold whole flushes. Returns {table: slots}."""
    res = cosim.load(out)
    slots = {}
    for name in res:
        df = res[name]
        if "slot" in df.columns and len(df):
            got = sorted(df["slot"].unique())
            assert got == list(range(len(got))), name
            slots[name] = len(got)
    return slots


# -- SIGTERM / SIGKILL at random points --------------------------------------------------------
def parts(table: Path) -> int:
    return len(list(table.glob("part-*.parquet"))) if table.is_dir() else 0


@pytest.mark.parametrize("trial", range(6))
def test_a_signal_at_a_random_point_leaves_every_flushed_slot_readable(tmp_path, trial):
    """The signal comes after the run's ``trial // 2 + 1``-th flush of 7 slots, a random moment
    later (within the next slots: mid-step, mid-layer or mid-write), never after its end."""
    rng = random.Random(1700 + trial)
    sig = (signal.SIGTERM, signal.SIGKILL)[trial % 2]
    flushes = trial // 2 + 1
    out = tmp_path / "o"
    proc = start("run", str(DVIT), "--out", str(out), "-q", "--set", "output.flush_slots=7")
    try:
        assert wait_for(lambda: parts(out / "rsus.parquet") >= flushes or proc.poll() is not None, timeout=120)
        assert proc.poll() is None, proc.communicate()[1]  # 600 s of DViT: far from its end
        time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    slots = check_readable(out)
    s = cosim.load(out).summary
    assert slots["rsus"] >= 7 * flushes
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "cosim: terminated" in err and "Traceback" not in err, err
        assert s["status"] == "terminated" and s["error"]
        # a SIGTERM flushes everything: every slot the summary counts is in the tables
        assert slots["rsus"] == s["slots"] and s["tables"]["rsus"] == 4 * s["slots"]
    else:
        assert proc.returncode == -signal.SIGKILL
        assert s is None  # killed without a word: what was flushed, in whole flushes of 7 slots
        assert slots["rsus"] % 7 == 0
    assert not [p for p in (out / "coverage.parquet").glob("part-*")  # no part is half-written
                if (out / "coverage.parquet").is_dir() and p.stat().st_size < 100]


def test_a_sigterm_before_the_first_slot_leaves_no_folder(tmp_path):
    """Stopped while SUMO starts (a SUMO that never answers: cosim is waiting to connect), a run
    ends with 143 and one line, removes the results folder it made and leaves no process."""
    ready = tmp_path / "started"
    wrapper = tmp_path / "sumo"
    wrapper.write_text(f"#!/bin/sh\ntouch {ready}\nexec sleep 300\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "o"
    proc = start("run", str(GRID6_TOML), "--backend", "traci", "--sumo-binary", str(wrapper), "--out", str(out),
                 "-q")
    try:
        assert wait_for(ready.exists, timeout=120)
        sumo = wait_for(lambda: [p for p in children(proc.pid) if "sleep" in cmdline(p)], timeout=30)
        assert sumo and not (out / "rsus.parquet").exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "cosim: terminated" in err and "Traceback" not in err, err
    assert not out.exists()
    assert wait_for(lambda: not alive(sumo[0]), timeout=10)  # the would-be SUMO was stopped with it


# -- a full disk -----------------------------------------------------------------------------
def test_a_full_disk_ends_with_one_line_and_readable_tables(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {exc}")
    try:
        out = mnt / "o"
        proc = run_cli("run", str(GRID6_TOML), "--out", str(out), "-q", "--set", "output.flush_slots=10")
        assert proc.returncode == 4, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cosim: error: ") and "disk full" in lines[0], proc.stderr
        slots = check_readable(out)
        assert slots["rsus"] >= 10 and slots["rsus"] < 600
        assert not list(out.glob("**/.*.tmp"))  # a failed part is removed, not left half-written
        s = cosim.load(out).summary
        if s is not None:  # it fits once the failed part is gone
            assert s["status"] == "disk-full" and "No space left" in s["error"]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# -- a frozen SUMO -----------------------------------------------------------------------------
def _sumo_of(proc: subprocess.Popen) -> int | None:
    kids = [p for p in children(proc.pid) if "sumo" in cmdline(p).split(" ")[0]]
    return kids[0] if kids else None


def test_a_frozen_sumo_ends_the_run_like_a_dead_one(tmp_path):
    out = tmp_path / "o"
    proc = start("run", str(GRID6_TOML), "--backend", "traci", "--sumo-timeout", "2", "--out", str(out), "-q")
    sumo = wait_for(lambda: _sumo_of(proc))
    assert sumo is not None
    wait_for(lambda: (out / "rsus.parquet").is_dir(), timeout=60)  # running, past the first flush
    os.kill(sumo, signal.SIGSTOP)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - t0
    assert proc.returncode == 3 and "did not answer for 2 s" in err and "scenario.sumo_timeout_s" in err, err
    assert 2.0 <= took < 20.0
    s = cosim.load(out).summary
    assert s["status"] == "sumo-died" and "did not answer" in s["error"]
    assert check_readable(out)["rsus"] == s["slots"]
    assert wait_for(lambda: not alive(sumo), timeout=10)  # the stopped SUMO was killed, not orphaned


def test_ctrl_c_works_while_sumo_is_frozen_without_a_timeout(tmp_path):
    out = tmp_path / "o"
    proc = start("run", str(GRID6_TOML), "--backend", "traci", "--sumo-timeout", "0", "--out", str(out), "-q")
    sumo = wait_for(lambda: _sumo_of(proc))
    assert sumo is not None and wait_for(lambda: (out / "rsus.parquet").is_dir(), timeout=120)  # past a flush
    os.kill(sumo, signal.SIGSTOP)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)  # the old code waited forever here
    finally:
        proc.kill()  # a run that did not stop leaves no process (its SUMO dies with it)
    assert proc.returncode == 130 and "cosim: interrupted" in err, err
    s = cosim.load(out).summary
    assert s["status"] == "interrupted" and check_readable(out)["rsus"] == s["slots"]
    assert wait_for(lambda: not alive(sumo), timeout=10)


def test_a_chatty_sumo_does_not_block_on_its_stderr(tmp_path):
    """4 MB on SUMO's stderr (a pipe holds 64 KB): the run must still go through."""
    wrapper = tmp_path / "sumo"
    wrapper.write_text(f"#!/bin/sh\nhead -c 4000000 /dev/zero | tr '\\0' 'w' >&2\nexec {sumo_binary('sumo')} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    proc = run_cli("run", str(GRID6_TOML), "--backend", "traci", "--sumo-binary", str(wrapper), "--end", "10",
                   "--out", str(tmp_path / "o"), "-q", timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["slots"] == 10


@pytest.mark.parametrize("backend", ["libsumo", "traci"])
def test_a_broken_routes_file_is_bad_input_and_leaves_no_folder(tmp_path, backend):
    (tmp_path / "r.rou.xml").write_text('<routes>\n<vehicle id="a" depart="0">\n<route edges="A0A1"/>\n</vehicle>\n'
                                        '<vehicle id="b" depart="5"\n')
    (tmp_path / "c.sumocfg").write_text(f'<configuration><input><net-file value="{GRID6_CFG.parent / "grid6.net.xml"}"/>'
                                        '<route-files value="r.rou.xml"/></input></configuration>')
    proc = run_cli("run", str(tmp_path / "c.sumocfg"), "--out", str(tmp_path / "o"), "-q", "--backend", backend)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cosim: error: ") and "r.rou.xml" in lines[0], proc.stderr
    assert not (tmp_path / "o").exists()


def test_record_csv_writes_cosim_s_columns_and_replays_like_parquet(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text(f'[scenario]\nsumocfg = "{GRID6_CFG}"\nend_s = 30\nstep_length_s = 0.5\n')
    for rec in ("t.csv", "t.parquet"):
        proc = run_cli("run", str(toml), "--out", str(tmp_path / f"live-{rec}"), "-q", "--record", str(tmp_path / rec))
        assert proc.returncode == 0, proc.stderr
    csv = pd.read_csv(tmp_path / "t.csv", dtype={"ids": str, "edge": str, "lane": str})
    from cosim.sources.replay import TRACE_COLUMNS

    assert list(csv.columns) == [*TRACE_COLUMNS, "route"]  # the route on each vehicle's first row
    pq = pd.read_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(csv, pq.astype({c: object for c in ("ids", "edge", "lane")}), check_dtype=False)
    for rec in ("t.csv", "t.parquet"):
        proc = run_cli("replay", str(tmp_path / rec), "--scenario", str(toml), "--out", str(tmp_path / f"rep-{rec}"), "-q")
        assert proc.returncode == 0, proc.stderr
    a, b = (cosim.load(tmp_path / f"rep-{r}")["coverage"] for r in ("t.csv", "t.parquet"))
    pd.testing.assert_frame_equal(a, b)


# -- a stopped sweep ---------------------------------------------------------------------------
def test_sigterm_stops_a_sweep_cleanly_and_it_resumes(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(f'[sweep]\nname = "t"\nscenarios = ["{GRID6_TOML}"]\nseeds = [1, 2]\nend_s = 120\n'
                 '[set]\n"scenario.step_length_s" = 0.5\n"output.flush_slots" = 5\n')
    out = tmp_path / "out"
    proc = start("sweep", str(f), "--out", str(out), "--jobs", "2", "-q")
    workers = wait_for(lambda: [p for p in children(proc.pid) if "cosim.sweep" in cmdline(p)])
    assert workers
    wait_for(lambda: list(out.glob("cells/*/rsus.parquet/part-*")), timeout=120)  # a worker is mid-run
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert not [p for p in workers if alive(p)]  # no orphan worker
    cells = pd.read_csv(out / "cells.csv")  # merged on the way out
    stopped = cells[cells.status == "terminated"]
    mid_run = [cid for cid in stopped.cell if (out / "cells" / cid / "rsus.parquet").exists()]
    assert mid_run  # the cell waited for above: stopped with tables written
    for cid in stopped.cell:
        if cid not in mid_run:  # the other worker may still have been starting (no run yet): nothing to close
            assert not (out / "cells" / cid / "summary.json").exists()
            continue
        s = cosim.load(out / "cells" / cid).summary
        assert s["status"] == "terminated"
        assert check_readable(out / "cells" / cid)["rsus"] == s["slots"]
    again = run_cli("sweep", str(f), "--out", str(out), "--jobs", "2", "-q")
    assert again.returncode == 0, again.stderr
    assert (pd.read_csv(out / "cells.csv").status == "completed").all()
