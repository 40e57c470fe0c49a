"""What the world needs from a SUMO network: edge lengths, junction positions, bounds.

Read with lxml's streaming parser (a large OSM-derived ``.net.xml`` loads in a fraction of the
time a full object model takes). Also finds the net file a ``.sumocfg`` names.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lxml import etree

from cosim.errors import CosimError


@dataclass(frozen=True)
class NetInfo:
    path: str
    edge_length: dict  # edge id (internal ':' edges included) -> length [m] (of its first lane)
    junction_xy: np.ndarray  # (J, 2) [m], non-internal junctions
    bounds: tuple  # (xmin, ymin, xmax, ymax) [m]
    #: drivable edge id -> (from x, from y, to x, to y) [m]: its end junctions, for walking routes
    edge_ends: dict = field(default_factory=dict)
    #: drivable edge id -> the shape of its first lane, as the net file writes it ("x,y x,y ...")
    edge_shape: dict = field(default_factory=dict)
    #: edge id (internal ones included) -> speed limit of its first lane [m/s]
    edge_speed: dict = field(default_factory=dict)
    #: (from edge, to edge) -> the junction-internal edge SUMO drives between them (first lane's)
    edge_via: dict = field(default_factory=dict)

    @property
    def drivable_edges(self) -> list[str]:
        return [e for e in self.edge_length if not e.startswith(":")]


def net_file_of(sumocfg: str | Path) -> Path:
    """The ``net-file`` a SUMO configuration names, resolved like SUMO does (relative to it)."""
    sumocfg = Path(sumocfg)
    try:
        root = etree.parse(str(sumocfg)).getroot()
    except OSError:
        raise CosimError(f"{sumocfg}: no such SUMO configuration") from None
    except etree.XMLSyntaxError as exc:
        raise CosimError(f"{sumocfg}: broken XML at line {exc.lineno}: {exc.msg}") from None
    node = root.find(".//net-file")
    if node is None or not node.get("value"):
        raise CosimError(f"{sumocfg}: no <net-file value=...> in the configuration")
    first = node.get("value").split(",")[0].strip()
    path = Path(first)
    return path if path.is_absolute() else (sumocfg.parent / path).resolve()


def read_net(path: str | Path) -> NetInfo:
    path = Path(path)
    if not path.is_file():
        raise CosimError(f"{path}: no such network file")
    edge_length: dict[str, float] = {}
    junctions: list[tuple[float, float]] = []
    junction_at: dict[str, tuple[float, float]] = {}
    edge_nodes: dict[str, tuple[str, str]] = {}
    edge_shape: dict[str, str] = {}
    edge_speed: dict[str, float] = {}
    edge_via: dict[tuple[str, str], str] = {}
    bounds = None
    cur_edge: str | None = None
    try:
        source = gzip.open(path) if str(path).endswith(".gz") else str(path)  # SUMO reads .net.xml.gz too
        for event, el in etree.iterparse(source, events=("start", "end"),
                                          tag=("location", "edge", "lane", "junction", "connection")):
            tag = el.tag
            if event == "start":
                if tag == "edge":
                    cur_edge = el.get("id")
                    if el.get("function") != "internal" and el.get("from") is not None:
                        edge_nodes[cur_edge] = (el.get("from"), el.get("to"))
                elif tag == "lane" and cur_edge is not None and cur_edge not in edge_length:
                    edge_length[cur_edge] = float(el.get("length"))
                    edge_speed[cur_edge] = float(el.get("speed", "13.89"))
                    if cur_edge in edge_nodes and el.get("shape"):
                        edge_shape[cur_edge] = el.get("shape")
                elif tag == "connection" and el.get("via") and (el.get("from"), el.get("to")) not in edge_via:
                    edge_via[el.get("from"), el.get("to")] = el.get("via").rpartition("_")[0]
                continue
            if tag == "location":
                bounds = tuple(float(v) for v in el.get("convBoundary").split(","))
            elif tag == "junction" and el.get("type") != "internal":
                xy = (float(el.get("x")), float(el.get("y")))
                junctions.append(xy)
                junction_at[el.get("id")] = xy
            elif tag == "edge":
                cur_edge = None
            if tag in ("edge", "junction", "location", "connection"):
                el.clear()
    except (etree.XMLSyntaxError, OSError, EOFError) as exc:
        if not isinstance(exc, etree.XMLSyntaxError):
            raise CosimError(f"{path}: cannot read the network ({exc})") from None
        raise CosimError(f"{path}: broken network XML at line {exc.lineno}: {exc.msg}") from None
    except (TypeError, ValueError) as exc:
        raise CosimError(f"{path}: malformed network element ({exc})") from None
    if not any(not e.startswith(":") for e in edge_length):
        raise CosimError(f"{path}: the network has no drivable edge")
    jxy = np.array(junctions, dtype=float).reshape(-1, 2)
    if bounds is None:
        bounds = (jxy[:, 0].min(), jxy[:, 1].min(), jxy[:, 0].max(), jxy[:, 1].max())
    ends = {e: (*junction_at[a], *junction_at[b]) for e, (a, b) in edge_nodes.items()
            if a in junction_at and b in junction_at}
    return NetInfo(str(path), edge_length, jxy, bounds, ends, edge_shape, edge_speed, edge_via)


def edge_shapes(path: str | Path) -> list[np.ndarray]:
    """The polyline (k, 2) [m] of every drivable edge (its first lane's shape, as
    :func:`read_net` keeps it), for drawing."""
    return [np.array([[float(v) for v in p.split(",")[:2]] for p in shape.split()], dtype=float)
            for shape in read_net(path).edge_shape.values()]
