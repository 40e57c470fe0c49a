"""Four small cosim plugins, one per kind (see docs/plugins.md in the cosim repository).

Importing the package registers all four; cosim imports it through the ``cosim.plugins`` entry
point once the package is installed, or through ``scenario.plugins = ["cosim_example_plugin"]``.
"""

from cosim_example_plugin import eviction, layer, pricing, schedulers  # noqa: F401 - registers them

__all__ = ["eviction", "layer", "pricing", "schedulers"]
