"""AI workloads attached to the traffic. Importing this package registers every layer.

Each layer module registers itself with ``@register_layer("name")``; add the module's import
below when adding a layer.
"""

from cosim.layers.base import LAYERS, Layer, LayerContext, PolicyLayer, register_layer
from cosim.layers.dvit import layer as _dvit  # noqa: F401  registers "dvit"

__all__ = ["LAYERS", "Layer", "LayerContext", "PolicyLayer", "register_layer"]
