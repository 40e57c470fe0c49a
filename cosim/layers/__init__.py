"""AI workloads attached to the traffic.

The layer contract is :class:`cosim.layers.base.Layer`; layers and their policies register in
:mod:`cosim.registry` (built-in ones exactly as plugins do), and the built-in layers' modules
are imported only when a scenario enables them or a registry lookup asks for them.
"""

from cosim.layers.base import Layer, LayerContext, Policy, PolicyFailed, arrivals, make_layers
from cosim.registry import register_layer, register_policy

__all__ = ["Layer", "LayerContext", "Policy", "PolicyFailed", "arrivals", "make_layers", "register_layer",
           "register_policy"]
