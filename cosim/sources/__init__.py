"""Traffic sources: live SUMO (libsumo, TraCI) and recorded traces, behind one interface."""

from cosim.sources.base import SNAPSHOT_FIELDS, Snapshot, TrafficSource
from cosim.sources.sumo import SubscriptionReader, SumoSource, sumo_command

__all__ = ["SNAPSHOT_FIELDS", "Snapshot", "TrafficSource", "SubscriptionReader", "SumoSource", "sumo_command"]
