"""cosim: a SUMO co-simulation plugin for edge generative AI in vehicular networks.

    import cosim
    cfg = cosim.load("scenarios/grid6.toml")
    summary = cosim.run(cfg, "runs/demo")
    res = cosim.load("runs/demo")          # a results folder: {table: DataFrame}, .summary

or, inside your own TraCI script, ``cosim.attach(traci)`` after ``traci.start(...)``. Your own
policies and layers: ``@cosim.register_policy(...)``, ``@cosim.register_layer(...)`` and
:class:`cosim.Layer` (docs/plugins.md).
The heavy modules (numpy, SUMO) load on first use, so ``cosim --help`` is instant.
"""

__version__ = "0.1.0"

__all__ = ["Config", "load", "run", "attach", "Layer", "register_layer", "register_policy", "__version__"]


def load(path):  # noqa: ANN001, ANN201
    """A scenario file -> its validated :class:`Config`; a results folder -> its tables as
    pandas frames (:class:`cosim.recorder.Results`, readable however the run ended)."""
    from pathlib import Path

    if Path(path).is_dir():
        from cosim.recorder import load as load_results

        return load_results(path)
    from cosim.config import load as load_config

    return load_config(path)


def __getattr__(name: str):
    if name == "Config":
        from cosim import config

        return getattr(config, name)
    if name in ("register_layer", "register_policy"):
        from cosim import registry

        return getattr(registry, name)
    if name == "Layer":
        from cosim.layers.base import Layer

        return Layer
    if name in ("run", "attach"):
        from cosim import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'cosim' has no attribute {name!r}")
