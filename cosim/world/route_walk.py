"""Points ahead of a vehicle along its route (SUMO's edges, walked junction to junction).

Used by every layer that looks ahead along routes (the cache layer's demand prediction, DViT's
VIDI positions H'). Each drivable edge is the straight segment between its end junctions
(``NetInfo.edge_ends``), which is what the network file gives without lane shapes.
"""

from __future__ import annotations


def route_index(route: tuple, edge: str, hint: int = 0) -> int:
    """Index of ``edge`` in ``route`` (from ``hint`` on first, then from the start); -1 if absent."""
    try:
        return route.index(edge, max(hint, 0))
    except ValueError:
        try:
            return route.index(edge)
        except ValueError:
            return -1


def point_along(route: tuple, k: int, dist: float, ends: dict, lengths: dict) -> tuple[float, float] | None:
    """The point ``dist`` metres from the start of edge ``route[k]`` along ``route``; None past
    the route's end or on an edge the network does not know."""
    return points_along(route, k, (dist,), ends, lengths)[0]


def points_along(route: tuple, k: int, dists, ends: dict, lengths: dict) -> list:
    """:func:`point_along` for increasing ``dists`` in one walk; None from where the route ends
    or leaves the known network."""
    out, base = [], 0.0  # base: distance from the start of route[k] to the start of the current edge
    for dist in dists:
        while k < len(route) and route[k] in ends and dist - base > lengths[route[k]]:
            base += lengths[route[k]]
            k += 1
        if k >= len(route) or route[k] not in ends:
            out.append(None)
            continue
        fx, fy, tx, ty = ends[route[k]]
        f = min(1.0, (dist - base) / max(lengths[route[k]], 1e-9))
        out.append((fx + f * (tx - fx), fy + f * (ty - fy)))
    return out
