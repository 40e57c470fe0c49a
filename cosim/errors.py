"""Exceptions meant for people: the CLI prints them as one line, without a traceback."""

from __future__ import annotations

import errno


class CosimError(Exception):
    """Expected bad input or environment: the message says what, where and what to do."""


class ConfigError(CosimError):
    """A scenario/config file is wrong; the message names the file and the key."""


class SumoDied(CosimError):
    """SUMO stopped answering (crash, error in its inputs, killed) in the middle of a run."""


class WorkerDied(CosimError):
    """A policy worker's process (``scenario.jobs >= 3``) ended mid-run: killed, out of memory,
    a crash in C code. The run ends ``failed``; what every process sent is on disk."""


def last_error_line(text: str) -> str:
    """The line of a SUMO tool's output that says what went wrong: its last "Error..." line,
    with the indented lines SUMO continues it with (" In file '...'", " At line/column ...")."""
    raw = [ln for ln in text.splitlines() if ln.strip()]
    starts = [i for i, ln in enumerate(raw) if ln.startswith("Error")]
    if starts:
        i = starts[-1]
        rest = []
        for ln in raw[i + 1:]:
            if not ln.startswith((" ", "\t")):
                break
            rest.append(ln.strip())
        return " ".join([raw[i].strip(), *rest])
    lines = [ln.strip() for ln in raw]
    lines = [ln for ln in lines if not ln.startswith("Quitting")]
    return lines[-1] if lines else ""


class DiskFull(CosimError):
    """Writing the results failed for lack of space: what was flushed before is readable."""


def is_disk_full(exc: BaseException) -> bool:
    """``exc`` says the disk (or the quota) is full."""
    return isinstance(exc, OSError) and (exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(exc))


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, ``timeout``, ``docker stop``, a sweep stopping its workers): handled
    like Ctrl-C — the run stops, its tables are closed and summary.json says ``terminated``
    (:mod:`cosim.engine.signals` raises it)."""


def interrupt_in(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The interrupt (Ctrl-C, or SIGTERM's :class:`Terminated`) that ``exc`` stands for, if any.

    A signal whose handler raises while compiled code runs (a numba kernel, :mod:`cosim.jit`) is
    raised when that code returns, and the dispatcher reports it as a ``SystemError`` ("returned a
    result with an exception set") whose context is the interrupt: without this, a layer would
    take it for its policy's own failure and the run would go on without its signal."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
