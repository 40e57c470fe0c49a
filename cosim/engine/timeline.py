"""The run's timeline: the slot boundaries every slot loop steps to.

A run acts every slot gamma (``scenario.slot_s``) from its begin time. The loop of
:func:`cosim.engine.loop.drive` and the pipelined source's child process
(:mod:`cosim.sources.pipelined`), which steps SUMO one slot ahead in another process, must ask
for the very same floats — both take them from :func:`slot_times`.
"""

from __future__ import annotations

from collections.abc import Iterator

#: how far past the end [s] a boundary may lie and still be stepped to (float round-off)
EPS = 1e-6


def slot_times(begin: float, slot_s: float, end: float | None) -> Iterator[float]:
    """The slot boundaries ``begin + k * slot_s`` for k = 1, 2, ... up to ``end`` (within
    :data:`EPS`); without an end, without a last one (the caller stops when the traffic does)."""
    k = 0
    while True:
        k += 1
        target = begin + k * slot_s
        if end is not None and target > end + EPS:
            return
        yield target
