"""Signals: the one way a run holds back Ctrl-C and SIGTERM, or lets them interrupt it.

A run stops on Ctrl-C (``KeyboardInterrupt``) and on SIGTERM (:class:`~cosim.errors.Terminated`,
a ``KeyboardInterrupt`` too) and still writes its results. Three places need a say in when the
signal lands, and all use :class:`interrupts`:

* the slot loop: SIGTERM interrupts like Ctrl-C (``interrupts(SIGTERM)``), unless the program
  has a SIGTERM handler of its own;
* a slot's recording and counting: a SIGTERM waits until both are done, so the tables and the
  summary's slot count agree (``interrupts(SIGTERM, hold=True, second=False, install=False)``);
* writing the results: a first Ctrl-C or SIGTERM waits until they are written, a second one
  interrupts at once (``interrupts(SIGINT, SIGTERM, hold=True)``); a long wait inside (a stuck
  policy worker) stops early when :func:`interrupt_pending` says one is waiting.

One handler, :func:`raise_terminated`, serves them all: it raises at once unless an active
hold covers the signal, in which case the innermost such hold keeps it until its block ends.
"""

from __future__ import annotations

import signal
import sys
import threading

from cosim.errors import Terminated

#: the holds active now (innermost last)
_HOLDS: list["interrupts"] = []
#: every signal :func:`raise_terminated` raised, in order. A raise Python cannot deliver — the
#: handler ran inside a C callback, e.g. llvmlite's object-cache hook (ctypes) while numba loads
#: or compiles a kernel, where an exception is printed as "ignored" and dropped — is raised again
#: by the slot loop at the next slot (:func:`reraise_dropped`)
_RAISED: list[int] = []


def interruption(signum: int) -> KeyboardInterrupt:
    """What a signal raises: :class:`Terminated` for SIGTERM, ``KeyboardInterrupt`` for Ctrl-C."""
    return Terminated(f"terminated by signal {signum}") if signum == signal.SIGTERM else KeyboardInterrupt()


def raise_terminated(signum: int, frame: object) -> None:
    """The run's signal handler: interrupt the main thread now — or, inside a hold covering
    ``signum`` (:class:`interrupts` with ``hold``), once the held block has ended (a second
    signal interrupts at once where the hold says so)."""
    for h in reversed(_HOLDS):
        if signum in h.signals:
            if h.pending and h.second:
                raise interruption(signum)
            h.pending.append(signum)
            return
    _RAISED.append(signum)
    raise interruption(signum)


def raised_mark() -> int:
    """How many signals :func:`raise_terminated` has raised so far (for :func:`reraise_dropped`)."""
    return len(_RAISED)


def reraise_dropped(mark: int) -> None:
    """Called where the run goes on (the slot loop, after each slot): a signal raised since
    ``mark`` that did not end the run was dropped on its way (raised inside a C callback), so it
    is raised now."""
    if len(_RAISED) > mark:
        raise interruption(_RAISED[mark])


def _quiet_dropped(unraisable: object) -> None:
    """``sys.unraisablehook`` while our handler is in place: an interruption we raised that Python
    had to drop (it is raised again at the next slot) prints nothing — no "Exception ignored"
    traceback; anything else goes to the hook that was there."""
    exc = getattr(unraisable, "exc_value", None)
    if isinstance(exc, KeyboardInterrupt) and _RAISED:
        return
    _PREVIOUS_HOOK[-1](unraisable)


#: the unraisable hooks ``_quiet_dropped`` replaced (innermost last)
_PREVIOUS_HOOK: list = []


def interrupt_pending() -> bool:
    """A Ctrl-C or SIGTERM is being held back (a long wait inside a hold stops for it)."""
    return any(h.pending for h in _HOLDS)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class interrupts:  # noqa: N801 - a context manager, like contextlib's
    """While inside, ``signals`` interrupt the run through :func:`raise_terminated`.

    ``hold``: a signal arriving inside waits until the block ends and is raised then (not when
    the block ends by an exception: that one goes on); ``second``: a second one inside raises
    at once. ``install``: put :func:`raise_terminated` in place for ``signals`` for the block
    (main thread only, where signals are delivered): ``True`` over whatever handler is there,
    ``"unowned"`` only over Python's default or ours (a program's own handler is left alone),
    ``False`` not at all (the block is held only where ours is in place already)."""

    __slots__ = ("signals", "hold", "second", "install", "pending", "_old", "_held")

    def __init__(self, *signals: int, hold: bool = False, second: bool = True, install: bool | str = True):
        self.signals = frozenset(signals)
        self.hold, self.second, self.install = hold, second, install
        self.pending: list[int] = []
        self._old: dict = {}
        self._held = False

    def __enter__(self) -> "interrupts":
        if self.install and not _main_thread():  # signals reach the main thread only: nothing to do
            return self
        if self.install:
            for sig in sorted(self.signals):
                now = signal.getsignal(sig)
                if self.install == "unowned" and now not in (signal.SIG_DFL, signal.default_int_handler,
                                                              raise_terminated):
                    continue
                self._old[sig] = signal.signal(sig, raise_terminated)
            if self._old:
                _PREVIOUS_HOOK.append(sys.unraisablehook)
                sys.unraisablehook = _quiet_dropped
        if self.hold:
            _HOLDS.append(self)
            self._held = True
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if self._held:
            _HOLDS.remove(self)
            self._held = False
        if self._old:
            sys.unraisablehook = _PREVIOUS_HOOK.pop()
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}
        if self.pending and kind is None:
            signum = self.pending[0]
            self.pending = []
            raise interruption(signum)
