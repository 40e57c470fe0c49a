"""tools/bench_sweep.py's measuring: the process tree's CPU (a child's CPU counted once, live or
reaped, against what the child says it used), the driver's memory now, and the samples taken
every N cells — the numbers docs/cluster.md's "Measured overheads" stands on."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import bench_sweep  # noqa: E402

# burns 0.6 s of its own CPU, says how much it used in all, then waits for a line on stdin
_BURN = ("import sys, time\nwhile time.process_time() < 0.6: pass\n"
         "print(time.process_time(), flush=True)\nsys.stdin.readline()\n")


# in a fresh process, whose only descendant is the burner (pytest's may have others: a Ray left running)
_MEASURE = f"""
import json, subprocess, sys
sys.path.insert(0, {str(ROOT / "tools")!r})
import bench_sweep
before = bench_sweep.tree_cpu()
p = subprocess.Popen([sys.executable, "-c", {_BURN!r}], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
used = float(p.stdout.readline())  # the child's own count, startup included
live = bench_sweep.tree_cpu() - before  # the child is alive: read from /proc
p.stdin.write("\\n"); p.stdin.flush(); p.wait()
reaped = bench_sweep.tree_cpu() - before  # the child is reaped: read from rusage
print(json.dumps({{"used": used, "live": live, "reaped": reaped}}))
"""


def test_tree_cpu_counts_a_child_once_live_and_reaped():
    out = subprocess.run([sys.executable, "-c", _MEASURE], capture_output=True, text=True, check=True, cwd=ROOT)
    m = json.loads(out.stdout)
    assert m["used"] >= 0.6
    # /proc counts in clock ticks (1/100 s); the measuring process's own CPU between the reads adds a little
    assert m["used"] - 0.05 <= m["live"] <= m["used"] + 0.3
    assert m["used"] - 0.05 <= m["reaped"] <= m["used"] + 0.3  # counted once, not in /proc and in rusage


def test_rss_is_the_memory_now():
    before = bench_sweep.rss_mib()
    block = b"\x01" * (64 << 20)  # 64 MiB, every page written
    assert bench_sweep.rss_mib() - before >= 60
    del block
    assert bench_sweep.rss_mib("no-such-pid") == 0.0


def test_sampler_takes_every_n_cells_and_the_last(tmp_path):
    log = tmp_path / "b.samples.jsonl"
    s = bench_sweep.Sampler(3, log)
    s.start("local, 2 workers")
    for ran in [0, 1, 2, 3, 3, 4, 5, 6, 7]:  # 3 twice: the Progress shows a line for each running change too
        s.take(ran, 7)
    assert [x["cells"] for x in s.samples] == [3, 6, 7]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [x["cells"] for x in lines] == [3, 6, 7]
    assert {x["variant"] for x in lines} == {"local, 2 workers"}
    assert all(x["driver_rss_mib"] > 0 and x["tree_rss_mib"] >= x["driver_rss_mib"] for x in lines)


def test_flatness_compares_the_second_half_with_the_first_tenth():
    rss = [100, 101, 99, 100, 102, 103, 101, 100, 102, 101]  # at 10, 20, ... 100 cells
    samples = [{"cells": 10 * (i + 1), "driver_rss_mib": r} for i, r in enumerate(rss)]
    # first sample at >= 10 cells: 100 MiB; over cells 50-100 the most is 103: +3
    assert bench_sweep.flatness(samples) == \
        "driver RSS at 10 cells 100 MiB, max over cells 50-100 103 MiB (+3 MiB)"
    assert bench_sweep.flatness(samples[:2]) == ""


def test_compare_two_runs_at_the_last_count_both_reached():
    def rec(samples):
        return {"variants": {"x": {"samples": [{"cells": c, "wall_s": w, "tree_cpu_s": t} for c, w, t in samples]}}}

    local = rec([(25, 20.0, 24.0), (50, 41.0, 49.0), (75, 60.0, 73.0)])
    ray = rec([(25, 30.0, 27.0), (50, 50.0, 52.0)])  # stopped before 75
    c = bench_sweep.compare(local, ray)
    # at 50 cells: (50 - 41) / 50 = 0.18 s wall, (52 - 49) / 50 = 0.06 s CPU a cell
    assert c["cells"] == 50
    assert c["per_cell_wall_s"] == pytest.approx(0.18)
    assert c["per_cell_cpu_s"] == pytest.approx(0.06)
    with pytest.raises(SystemExit, match="no sampled cell count"):
        bench_sweep.compare(local, rec([(10, 1.0, 1.0)]))
