"""cosim: a SUMO co-simulation plugin for edge generative AI in vehicular networks.

    import cosim
    cfg = cosim.load("scenarios/grid6.toml")
    summary = cosim.run(cfg, "runs/demo")

or, inside your own TraCI script, ``cosim.attach(traci)`` after ``traci.start(...)``.
The heavy modules (numpy, SUMO) load on first use, so ``cosim --help`` is instant.
"""

__version__ = "0.1.0"

__all__ = ["Config", "load", "run", "attach", "__version__"]


def __getattr__(name: str):
    if name in ("Config", "load"):
        from cosim import config

        return getattr(config, name)
    if name in ("run", "attach"):
        from cosim import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'cosim' has no attribute {name!r}")
