"""Road grid cells (TVT paper Sec. II-D): each edge is cut into cells of length g'.

A vehicle on edge ``e`` at lane position ``s`` is in cell ``offset[e] + floor(s / g')``; offsets
number the cells of all edges (junction-internal ones included) consecutively, edges taken in
sorted id order, so cell ids are stable for a given network and g'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import repeat

import numpy as np


@dataclass(frozen=True)
class RoadGrid:
    cell_m: float
    offset: dict  # edge id -> first cell id
    n_cells: dict  # edge id -> number of cells on the edge
    total: int
    index: dict = None  # edge id -> row in the arrays below
    _off: np.ndarray = None
    _cnt: np.ndarray = None

    def __post_init__(self) -> None:
        edges = list(self.offset)
        object.__setattr__(self, "index", {e: i for i, e in enumerate(edges)})
        # one extra row (-1 offset) for edges the network does not know
        object.__setattr__(self, "_off", np.array([*(self.offset[e] for e in edges), -1], dtype=np.int64))
        object.__setattr__(self, "_cnt", np.array([*(self.n_cells[e] for e in edges), 1], dtype=np.int64))

    @classmethod
    def from_edge_lengths(cls, lengths: dict[str, float], cell_m: float) -> "RoadGrid":
        offset, n_cells, nxt = {}, {}, 0
        for edge in sorted(lengths):
            n = max(1, math.ceil(lengths[edge] / cell_m - 1e-9))
            offset[edge], n_cells[edge] = nxt, n
            nxt += n
        return cls(cell_m, offset, n_cells, nxt)

    def rows(self, edges: np.ndarray) -> np.ndarray:
        """Row of each edge in this grid's edge order (``index``); ``len(index)`` for an edge the
        network does not know."""
        n = len(edges)
        return np.fromiter(map(self.index.get, edges, repeat(len(self.index))), np.int64, n)

    def cells(self, edges: np.ndarray, lane_pos: np.ndarray, row: np.ndarray | None = None) -> np.ndarray:
        """Cell id per vehicle; -1 for an edge the network does not know (``row``: :meth:`rows`
        of ``edges`` when the caller has it already)."""
        n = len(edges)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        row = self.rows(edges) if row is None else row
        off, cnt = self._off[row], self._cnt[row]
        k = np.floor(np.maximum(lane_pos, 0.0) / self.cell_m).astype(np.int64)
        k = np.minimum(k, cnt - 1)  # a position exactly at the edge end stays on the edge
        return np.where(off >= 0, off + k, -1)
