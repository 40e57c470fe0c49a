"""Sweeps on a real multi-node Ray cluster started on this machine (issue 30): a head node that
runs no cells and worker nodes in their own mount namespace, where the driver's folder — the
sweep file, the scenario, its network, the results, a plugin installed for the driver only — is
covered by an empty tmpfs. What the cells need must travel with the job and what they write must
come back; a worker node killed mid-sweep and a driver killed mid-sweep lose nothing finished.

Skipped, with the reason, where Ray is missing or mount namespaces cannot be made (not root)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cosim.compare import differences

from .conftest import ROOT

pytestmark = pytest.mark.sumo
ray_bin = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _why_not() -> str | None:
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray is not installed"
    if not ray_bin.exists():
        return f"no {ray_bin}"
    if shutil.which("unshare") is None:
        return "no unshare(1) to give a worker node its own mount namespace"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs none /mnt"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a mount namespace here ({probe.stderr.strip()[:80]}): needs root"
    return None


class Cluster:
    """``ray start --head --num-cpus=0`` plus worker nodes that cannot see ``hidden``."""

    def __init__(self, hidden: Path):
        self.hidden = hidden
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        # a killed node is declared dead after 3 missed health checks 1 s apart (Ray's defaults: 5,
        # 3 s apart), each check still allowed Ray's 10 s to answer: the node-kill test waits
        # seconds, not half a minute, for Ray to notice, twice
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
        self.workers: list[subprocess.Popen] = []
        self.spare: list[subprocess.Popen] = []  # idle nodes a test left for the next (see take_worker)
        self.logs = hidden.parent / f"ray-logs-{self.port}"
        self.logs.mkdir()
        subprocess.run([str(ray_bin), "start", "--head", "--num-cpus=0", f"--port={self.port}",
                        "--include-dashboard=false", "--disable-usage-stats"], env=self.env, check=True,
                       capture_output=True, timeout=120)

    def add_worker(self, cpus: int = 1) -> subprocess.Popen:
        """One more worker node, up and registered before this returns (one at a time: Ray gives
        a starting node 30 s to register, which a loaded 2-core machine can miss: then again)."""
        want = self.nodes_with_cpus() + 1
        for attempt in range(3):
            cmd = (f"mount -t tmpfs none {self.hidden} && exec {ray_bin} start --address={self.address} "
                   f"--num-cpus={cpus} --block --disable-usage-stats --dashboard-agent-listen-port={_free_port()}")
            log = open(self.logs / f"worker-{len(self.workers)}-{attempt}.log", "w")  # noqa: SIM115
            p = subprocess.Popen(["unshare", "-m", "sh", "-c", cmd], env=self.env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 120
            while p.poll() is None and time.monotonic() < deadline:
                if self.nodes_with_cpus() == want:
                    p.cpus = cpus
                    self.workers.append(p)
                    return p
                time.sleep(1.0)
            if p.poll() is None:
                self.kill(p)
        raise AssertionError(f"no worker node would start (logs: {self.logs})")

    def take_worker(self, cpus: int = 1) -> subprocess.Popen:
        """An idle node with ``cpus`` CPUs that an earlier test left (``leave``), else a new one
        (a start costs ~10 s)."""
        for p in self.spare:
            if p.cpus == cpus and p.poll() is None:
                self.spare.remove(p)
                return p
        return self.add_worker(cpus)

    def leave(self, p: subprocess.Popen) -> None:
        """Node ``p`` stays up, idle, for the next test that takes one like it."""
        self.spare.append(p)

    def nodes_with_cpus(self) -> int:
        code = ("import ray; ray.init(address='%s', log_to_driver=False, logging_level='ERROR'); "
                "print('NODES=%%d' %% sum(1 for n in ray.nodes() if n['Alive'] and n['Resources'].get('CPU', 0) > 0))")
        out = subprocess.run([sys.executable, "-c", code % self.address], env=self.env, capture_output=True,
                             text=True, timeout=120)
        found = [ln for ln in out.stdout.splitlines() if ln.startswith("NODES=")]  # Ray may print warnings too
        return int(found[-1][6:]) if out.returncode == 0 and found else -1

    def wait_for(self, n: int, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while self.nodes_with_cpus() != n:
            assert time.monotonic() < deadline, f"the cluster never had {n} worker nodes"
            time.sleep(1.0)

    @staticmethod
    def processes(p: subprocess.Popen) -> dict[int, bytes]:
        """The node's processes (pid -> command line): its session's (Ray puts each worker in a
        process group of its own, but they stay in the node's session)."""
        out = {}
        for proc in Path("/proc").iterdir():
            try:
                sid = int((proc / "stat").read_text().rpartition(")")[2].split()[3])
                if sid == p.pid:
                    out[int(proc.name)] = (proc / "cmdline").read_bytes()
            except (OSError, ValueError, IndexError):
                continue
        return out

    def running_a_cell(self, p: subprocess.Popen) -> bool:
        """Whether a cell's run (``python -m cosim.sweep``) is among the node's processes."""
        return any(b"cosim.sweep" in cmd for cmd in self.processes(p).values())

    def kill(self, p: subprocess.Popen) -> None:
        """The node dies at once: its raylet, its workers and the cells they run (SIGKILL)."""
        for pid in self.processes(p):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait()

    def stop_node(self, p: subprocess.Popen) -> None:
        """The node leaves as ``ray stop`` has it leave (SIGTERM to ``ray start --block``): it tells
        the head it is going, so the head counts it out at once; a killed node is counted out only
        after three missed health checks (the node-kill test's subject, not every test's cleanup).
        What did not end within 60 s is killed."""
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
        finally:
            self.kill(p)  # any of its processes still there (none, when it left as asked)

    def stop(self) -> None:
        for p in self.workers:
            if p.poll() is None:
                self.kill(p)
        subprocess.run([str(ray_bin), "stop", "--force"], env=self.env, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = _why_not()
    if why:
        pytest.skip(why)
    hidden = tmp_path_factory.mktemp("driver")
    c = Cluster(hidden)
    try:
        yield c
    finally:
        c.stop()


def project(root: Path, plugin: bool = False) -> Path:
    """The driver's own copy of a scenario and its network (nothing of /work visible to a node
    is used), and a sweep file naming it; with ``plugin`` the example plugin is installed into
    the driver's folder only and one of its schedulers runs."""
    (root / "scen").mkdir(parents=True)
    shutil.copytree(ROOT / "sumo_nets" / "grid6", root / "nets" / "grid6")
    text = (ROOT / "scenarios" / "grid6_dvit.toml").read_text().replace("../sumo_nets/", "../nets/")
    (root / "scen" / "grid6_dvit.toml").write_text(text)
    policies = '["vidi", "my-greedy"]' if plugin else '["vidi", "mddi"]'
    sweep = root / "sweep.toml"
    sweep.write_text('[sweep]\nname = "cluster"\nscenarios = ["scen/grid6_dvit.toml"]\nseeds = [1, 2, 3, 4]\n'
                     f'end_s = 40\n[set]\n"layers.dvit.policies" = {policies}\n"output.coverage" = false\n')
    if plugin:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(root / "site"), str(ROOT / "examples" / "plugin")], check=True,
                       capture_output=True, timeout=300)
    return sweep


def sweep_cmd(cluster: Cluster, sweep: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cosim", "sweep", str(sweep), "--out", str(out), "-q", *extra,
            *(["--engine", "ray", "--address", cluster.address] if cluster else [])]


def driver_env(cluster: Cluster, site: Path | None = None) -> dict:
    env = {**cluster.env}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    return env


def same_cells(a: Path, b: Path) -> None:
    cells = sorted(p.name for p in (a / "cells").iterdir())
    assert cells == sorted(p.name for p in (b / "cells").iterdir())
    for c in cells:
        assert differences(a / "cells" / c, b / "cells" / c) == [], c


def test_nodes_that_cannot_see_the_driver_run_a_plugin_they_do_not_have(cluster, tmp_path):
    root = cluster.hidden / "plugin"
    sweep = project(root, plugin=True)
    cluster.add_worker(cpus=2)
    # the worker node cannot see the driver's folder: the sweep's inputs and the plugin must travel
    probe = subprocess.run(["nsenter", "-t", str(cluster.workers[-1].pid), "-m", "ls", str(root)],
                           capture_output=True, text=True)
    assert probe.returncode != 0 or probe.stdout.strip() == "", probe.stdout
    env = driver_env(cluster, root / "site")
    ray = subprocess.run(sweep_cmd(cluster, sweep, root / "ray"), env=env, capture_output=True, text=True,
                         timeout=600, cwd=root)
    assert ray.returncode == 0, ray.stderr[-3000:]
    local = subprocess.run(sweep_cmd(None, sweep, root / "local"), env=env, capture_output=True, text=True,
                           timeout=600, cwd=root)
    assert local.returncode == 0, local.stderr[-3000:]
    same_cells(root / "local", root / "ray")  # every table and summary, less timings and provenance
    cells = pd.read_csv(root / "ray" / "cells.csv")
    assert (cells.status == "completed").all() and len(cells) == 4 and (cells.attempts == 1).all()
    res = pd.read_parquet(root / "ray" / "results.parquet")
    assert set(res.policy) >= {"vidi", "my-greedy"}
    summary = json.loads(next((root / "ray" / "cells").glob("*/summary.json")).read_text())
    assert summary["scenario_file"] == str(root / "scen" / "grid6_dvit.toml")  # the driver's names, not the node's
    assert "cosim_example_plugin" in summary["plugins"]
    cluster.stop_node(cluster.workers[-1])
    cluster.wait_for(0)


def test_a_node_killed_mid_sweep_loses_no_finished_cell_and_merges_none_twice(cluster, tmp_path):
    root = cluster.hidden / "kill"
    sweep = project(root)
    sweep.write_text(sweep.read_text().replace("seeds = [1, 2, 3, 4]", "seeds = [1, 2, 3, 4, 5, 6]"))
    first = cluster.take_worker(cpus=1)
    second = cluster.add_worker(cpus=1)
    out = root / "out"
    proc = subprocess.Popen(sweep_cmd(cluster, sweep, out), env=driver_env(cluster), cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not cluster.running_a_cell(second):
        assert proc.poll() is None and time.monotonic() < deadline, "the second node never ran a cell"
        time.sleep(0.2)
    cluster.kill(second)  # the cell it runs dies with it
    said, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    cells = pd.read_csv(out / "cells.csv")
    assert (cells.status == "completed").all() and len(cells) == 6
    assert cells.attempts.sum() > len(cells)  # the killed node's cell ran again elsewhere
    assert (pd.read_csv(out / "summary.csv").reruns >= 1).all()  # every policy's group holds that cell
    assert "1 ran more than once (a node died" in said, said
    res = pd.read_parquet(out / "results.parquet")
    assert res.groupby("cell").size().eq(res.groupby("cell").size().iloc[0]).all()  # no cell merged twice
    assert len(res[res.layer == "core"]) == 6
    assert not list((out / "cells").glob(".*"))  # no half-unpacked folder left
    cluster.wait_for(1)  # the killed node counted out: the next test's sweep cannot be offered it
    cluster.leave(first)  # for the next test (the resume test takes a node like it)


def test_a_killed_driver_resumes_against_the_same_cluster(cluster, tmp_path):
    root = cluster.hidden / "resume"
    sweep = project(root)
    node = cluster.take_worker(cpus=1)
    out = root / "out"
    proc = subprocess.Popen(sweep_cmd(cluster, sweep, out), env=driver_env(cluster), cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not any((d / "summary.json").exists() for d in (out / "cells").glob("[!.]*")):
        assert proc.poll() is None and time.monotonic() < deadline, "no cell finished"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver dies without a word
    proc.wait()
    done = {d.name: (d / "cell.json").stat().st_mtime_ns for d in (out / "cells").glob("[!.]*")
            if (d / "summary.json").exists()}
    again = subprocess.run(sweep_cmd(cluster, sweep, out), env=driver_env(cluster), cwd=root, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    cells = pd.read_csv(out / "cells.csv")
    assert (cells.status == "completed").all() and len(cells) == 4
    assert {c: (out / "cells" / c / "cell.json").stat().st_mtime_ns for c in done} == done  # not run again
    cluster.stop_node(node)
    cluster.wait_for(0)
