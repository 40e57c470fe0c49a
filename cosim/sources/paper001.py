"""The MoE paper's world (paper 001) as a :class:`~cosim.sources.base.TrafficSource`: no SUMO.

Paper 001 (Xie et al., IEEE TCCN 2025) publishes only its abstract, so this world is ours
throughout: paper 000's road world (:mod:`cosim.sources.paper`) with its own random stream
(docs/paper_worlds.md, "Paper 001").
"""

from __future__ import annotations

from cosim.sources.paper import Paper000Source, source_kwargs

__all__ = ["Paper001Source", "source_kwargs"]


class Paper001Source(Paper000Source):
    """The MoE paper's world (paper 001, Xie et al., IEEE TCCN 2025): **ours throughout** — the
    paper publishes only its abstract, which names vehicles that host experts ("infrastructure
    vehicles"), vehicles that ask for GAI inference, V2V links between them and a "dynamic IoV
    environment", and states no road, no vehicle count, no speeds and no request process.

    Our reading: the world the same first author measured in a year earlier (paper 000, Sec. IV
    and II-D) — ``traffic.vehicles`` = 20 vehicles on one straight two-way road of 996 m
    (``sumo_nets/paper000/road.net.xml``), placed at random and following each other by eqs.
    (8)-(11), a vehicle that leaves replaced — with its own random stream (seeded by (seed,
    "paper001"), so its vehicles are not paper 000's). Every vehicle can be a task vehicle and an
    infrastructure vehicle, as on SUMO traffic; whatever the MoE layer draws per vehicle (compute,
    memory, energy coefficient, bandwidth) and the request process (``layers.moe.request_rate_per_s``)
    are the layer's and the channel's keys, the same as in the SUMO runs. Each of these is a knob
    of ``scenarios/paper001.toml`` (docs/paper_worlds.md, "Paper 001")."""

    world = "paper001"
