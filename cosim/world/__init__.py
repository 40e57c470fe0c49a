"""Geometry and radio: road grid, RSUs, coverage dwell, channel; ``World`` ties them together."""

from cosim.world.network import NetInfo, net_file_of, read_net
from cosim.world.rsu import RsuSet, build_rsus
from cosim.world.world import World

__all__ = ["NetInfo", "net_file_of", "read_net", "RsuSet", "build_rsus", "World"]
