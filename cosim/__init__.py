"""cosim: a SUMO co-simulation plugin for edge generative AI in vehicular networks.

    import cosim
    cfg = cosim.load("scenarios/grid6.toml")
    summary = cosim.run(cfg, "runs/demo")

or, inside your own TraCI script, ``cosim.attach(traci)`` after ``traci.start(...)``.
"""

__version__ = "0.1.0"

from cosim.config import Config, load  # noqa: E402
from cosim.runner import attach, run  # noqa: E402

__all__ = ["Config", "load", "run", "attach", "__version__"]
