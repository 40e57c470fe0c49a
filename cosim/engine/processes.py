"""Processes: the one way cosim starts, talks to and stops another process.

A run may start SUMO (:mod:`cosim.sources.sumo`), a traffic source one slot ahead
(:mod:`cosim.sources.pipelined`), policy workers (:mod:`cosim.engine.workers`) and a sweep its
runs (:mod:`cosim.sweep`). They all go through here:

* :func:`start` starts a process (SUMO), optionally dying with its parent
  (:data:`DIES_WITH_PARENT`); :func:`python` starts ``python -m MODULE ARGS`` with it (a sweep's
  runs); :func:`spawn` adds a socket pair to that and the child side runs :func:`child_main`
  (the pipelined source, the policy workers);
* :func:`send` / :func:`recv` / :func:`pack` are the one wire format on such a pair: pickled
  (highest protocol) messages framed by the connection;
* :func:`stop` ends a process: a signal if asked, a grace period, then SIGKILL;
* :func:`available_cores` says how many cores a run may use.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from multiprocessing.connection import Connection, Pipe
from typing import Any

from cosim.errors import CosimError


def _pdeathsig():  # noqa: ANN202
    """A ``preexec_fn`` (Linux) that makes the child get SIGTERM when cosim dies, however it
    dies (SIGKILL included), so that no SUMO or sweep worker outlives it; None elsewhere. libc
    is loaded here, in the parent: the child only makes the one system call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


#: the ``preexec_fn`` of a child that must not outlive cosim (None where the OS has none)
DIES_WITH_PARENT = _pdeathsig()

_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def start(cmd: list[str], die_with_parent: bool = False, **popen: Any) -> subprocess.Popen:
    """The one way cosim starts a process: ``cmd`` (SUMO's, or :func:`python`'s), dying with
    cosim where asked (:data:`DIES_WITH_PARENT`); ``popen``: more ``subprocess.Popen``
    arguments (env, stdout, stderr, pass_fds, ...)."""
    if die_with_parent:
        popen["preexec_fn"] = DIES_WITH_PARENT
    return subprocess.Popen(cmd, **popen)


def python(module: str, *args: str, die_with_parent: bool = False, **popen: Any) -> subprocess.Popen:
    """``python -m MODULE ARGS...`` with this interpreter (:func:`start`)."""
    return start([sys.executable, "-m", module, *args], die_with_parent, **popen)


def spawn(module: str, *args: str) -> tuple[subprocess.Popen, Connection]:
    """``python -m MODULE FD ARGS...``, a child of the run served by :func:`child_main`, and our
    end of its socket pair. It starts with Ctrl-C and SIGTERM blocked (a blocked signal stays
    blocked across exec), so one arriving while it imports does not print a traceback from it;
    :func:`child_main` then ignores them. In this process a signal that came meanwhile is only
    held until Popen returns."""
    parent, child = Pipe(duplex=True)
    fd = child.fileno()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        proc = python(module, str(fd), *args, pass_fds=(fd,))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        child.close()
    return proc, parent


def child_main(serve: Any) -> None:
    """A child process of the run (``python -m MODULE FD``): ``serve(conn)`` on the socket pair
    whose end is file descriptor FD, Ctrl-C and SIGTERM ignored (they reach the whole process
    group; the plugin's process handles them and tells the child to stop, so that nothing the
    child holds is lost), a bug said on stderr with exit code 1, no interpreter teardown."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)  # blocked since spawn: now ignored
    conn = Connection(int(sys.argv[1]))
    code = 0
    try:
        serve(conn)
    except BaseException:  # a bug here: say it on stderr; the plugin's process sees the exit code
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # skip interpreter teardown (libsumo is closed already)


# -- the wire ----------------------------------------------------------------------------------
def pack(msg: Any) -> bytes:
    """A message as sent (pickled once, e.g. to send the same slot to every worker)."""
    return pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)


def send(conn: Connection, msg: Any) -> None:
    conn.send_bytes(pack(msg))


def send_packed(conn: Connection, data: bytes) -> None:
    conn.send_bytes(data)


def recv(conn: Connection) -> Any:
    """The next message (raises ``EOFError``/``OSError`` when the other end is gone)."""
    return pickle.loads(conn.recv_bytes())


# -- the end -----------------------------------------------------------------------------------
def stop(proc: subprocess.Popen, grace_s: float = 10.0, sig: int | None = None) -> int:
    """End ``proc``: send ``sig`` first if given (and it still runs), wait up to ``grace_s`` for
    it to exit, then SIGKILL it (which also ends a SIGSTOPped process). Returns its exit code."""
    if sig is not None and proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=max(0.0, grace_s))
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def available_cores() -> int:
    """The cores this run may use: ``COSIM_CPUS`` when set (a sweep sets it to its share of the
    machine for each run it starts), else the cores this process may run on."""
    env = os.environ.get("COSIM_CPUS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise CosimError(f"COSIM_CPUS={env!r}: expected a whole number of cores >= 1")
        return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
