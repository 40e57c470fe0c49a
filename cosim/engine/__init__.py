"""The engine: how a run is resolved, started, driven, written and stopped — one place each.

=====================  ==========================================================================
``spec``               a run resolved once: :func:`resolve` -> the frozen :class:`RunSpec`
                       (timeline, network, RSUs, process count and worker plan — dealt by the
                       policies bound, no layer built for it — and the layers, each built once)
``folder``             the results folder: where a run writes, ``--overwrite``, the one rollback
``session``            the plugin's state for one run and the ``summary.json`` it writes
``loop``               the slot loop (:func:`drive`) and the listener inside your TraCI loop
``timeline``           the slot boundaries every slot loop steps to (:func:`slot_times`, ``EPS``)
``signals``            the one way Ctrl-C and SIGTERM are let through or held back (``interrupts``)
``processes``          the one way a process is started (SUMO, the pipelined source, policy
                       workers, a sweep's runs), talked to and stopped; available cores
``workers``            a layer's policies spread over worker processes (``scenario.jobs >= 3``)
=====================  ==========================================================================

A run goes ``resolve`` -> ``folder.results_dir`` -> ``Session`` -> ``drive`` -> ``Session.finish``;
:mod:`cosim.runner` is the public facade over it (``run``, ``replay``, ``attach``); the tables a
run writes (and a slot's rows grouped by policy) are :mod:`cosim.recorder`'s. No module of the
engine imports :mod:`cosim.runner` (tests/test_imports.py: no import circle anywhere).
"""
