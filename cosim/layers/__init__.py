"""AI workloads attached to the traffic.

Layer modules register themselves with ``@register_layer("name")``; :data:`LAYER_MODULES` names
the module of each built-in layer, imported only when a scenario enables that layer (so a run
without layers does not pay for importing them). Add a line there when adding a layer.
"""

from cosim.layers.base import LAYERS, Layer, LayerContext, PolicyLayer, register_layer

#: built-in layer name -> module that registers it
LAYER_MODULES = {
    "dvit": "cosim.layers.dvit.layer",
    "cache": "cosim.layers.cache.layer",
    "moe": "cosim.layers.moe.layer",
}

__all__ = ["LAYERS", "LAYER_MODULES", "Layer", "LayerContext", "PolicyLayer", "register_layer"]
