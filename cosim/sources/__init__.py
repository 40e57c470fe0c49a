"""Traffic sources: live SUMO (libsumo, TraCI) and recorded traces, behind one interface."""

from cosim.sources.base import SNAPSHOT_FIELDS, Snapshot, TrafficSource
from cosim.sources.sumo import DirectReader, SubscriptionReader, SumoSource, TraciReader, make_reader, sumo_command

__all__ = ["SNAPSHOT_FIELDS", "Snapshot", "TrafficSource", "DirectReader", "SubscriptionReader", "TraciReader", "make_reader", "SumoSource", "sumo_command"]
