"""The engine: how a run is resolved, started, driven, written and stopped — one place each.

=====================  ==========================================================================
``timeline``           the slot boundaries every slot loop steps to (:func:`slot_times`, ``EPS``)
``signals``            the one way Ctrl-C and SIGTERM are let through or held back (``interrupts``)
``processes``          the one way a process is started, talked to and stopped; available cores
``workers``            a layer's policies spread over worker processes (``scenario.jobs >= 3``)
=====================  ==========================================================================

:mod:`cosim.runner` is the public facade (``run``, ``replay``, ``attach``); the tables a run
writes are :mod:`cosim.recorder`'s.
"""
