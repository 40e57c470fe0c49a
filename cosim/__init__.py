"""cosim: a SUMO co-simulation plugin for edge generative AI in vehicular networks.

    import cosim
    res = cosim.run("scenarios/grid6_dvit.toml", seed=3, end_s=120, out="runs/demo")
    res.summary, res["dvit_tasks"]         # summary.json parsed; a table as a pandas DataFrame
    rep = cosim.replay("t.parquet", "scenarios/grid6_dvit.toml", out="runs/rep")
    sw = cosim.sweep("tools/sweeps/dvit_queue_load.toml")   # sw.paired: paired.csv
    res = cosim.load("runs/demo")          # a results folder (or a sweep's, or a scenario file)

or, inside your own TraCI script, ``cosim.attach(traci)`` after ``traci.start(...)``. Your own
policies and layers: ``@cosim.register_policy(...)``, ``@cosim.register_layer(...)`` and
:class:`cosim.Layer` (docs/plugins.md).
The heavy modules (numpy, SUMO) load on first use, so ``cosim --help`` is instant.
"""

__version__ = "0.1.0"

__all__ = ["Config", "load", "run", "replay", "sweep", "attach", "Layer", "Metric", "TaskView", "register_layer",
           "register_policy", "__version__"]


def load(path):  # noqa: ANN001, ANN201
    """A results folder -> its tables as pandas frames (:class:`cosim.results.Results`,
    readable however the run ended); a sweep's results folder -> :class:`cosim.api.SweepResults`;
    a scenario .toml or .sumocfg -> its validated :class:`Config`."""
    from pathlib import Path

    if Path(path).is_dir():
        from cosim import api

        return api.load_sweep(path) if (Path(path) / "cells.csv").is_file() else api.load_run(path)
    from cosim.config import load_any

    return load_any(path)


def __getattr__(name: str):
    if name == "Config":
        from cosim import config

        return getattr(config, name)
    if name in ("register_layer", "register_policy"):
        from cosim import registry

        return getattr(registry, name)
    if name in ("Layer", "Metric", "TaskView"):
        from cosim.layers import base

        return getattr(base, name)
    if name in ("run", "replay"):
        from cosim import api

        return getattr(api, name)
    if name == "sweep":  # the module cosim.sweep, callable as cosim.api.sweep (see its end)
        import importlib

        return importlib.import_module("cosim.sweep")
    if name == "attach":
        from cosim import runner

        return runner.attach
    raise AttributeError(f"module 'cosim' has no attribute {name!r}")
