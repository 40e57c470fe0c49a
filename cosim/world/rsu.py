"""Road-side units: explicit sites or an automatic lattice that covers the network."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cosim.config import Config, range_pair, site_ids
from cosim.errors import ConfigError
from cosim.world.channel import RSU_BW, RSU_CPU, hash_uniform
from cosim.world.network import NetInfo


@dataclass(frozen=True)
class RsuSet:
    ids: tuple
    x: np.ndarray  # [m]
    y: np.ndarray  # [m]
    radius_m: np.ndarray
    compute_flops: np.ndarray  # c0 [FLOP/s]
    bandwidth_hz: np.ndarray  # w0 [Hz]
    tx_power_dbm: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def associate(self, x: np.ndarray, y: np.ndarray, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distance [m] from each point to every RSU (n, m), the serving RSU per point, -1 if none).

        The serving RSU is the nearest one whose disc holds the point (``world.association =
        "nearest"``). With ``keep`` (an RSU index per point, -1 none), a point inside its ``keep``
        RSU's disc stays with it, the others go to the nearest in range (``"sticky"``)."""
        n, m = len(x), len(self)
        if not (n and m):
            return np.zeros((n, m)), np.full(n, -1, dtype=np.int64)
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        d = np.hypot(x[:, None] - self.x[None, :], y[:, None] - self.y[None, :])
        masked = np.where(d <= self.radius_m[None, :], d, np.inf)
        nearest = np.argmin(masked, axis=1)
        srv = np.where(np.isfinite(masked[np.arange(n), nearest]), nearest, -1).astype(np.int64)
        if keep is not None:
            keep = np.broadcast_to(np.asarray(keep, dtype=np.int64), (n,))
            k = np.maximum(keep, 0)
            stay = (keep >= 0) & (d[np.arange(n), k] <= self.radius_m[k])
            srv = np.where(stay, keep, srv)
        return d, srv


#: more lattice points than this is a configuration error (a tiny rsu.spacing_m), not a run
MAX_LATTICE_RSUS = 10_000


def lattice_counts(bounds: tuple, spacing_m: float) -> tuple[int, int]:
    xmin, ymin, xmax, ymax = bounds
    return tuple(max(1, math.ceil((hi - lo) / spacing_m - 1e-9)) for lo, hi in ((xmin, xmax), (ymin, ymax)))


def lattice_sites(bounds: tuple, spacing_m: float, junction_xy: np.ndarray, radius_m: float) -> np.ndarray:
    """Square lattice centred on the network bounds; points with no junction in range dropped.

    With spacing <= radius * sqrt(2) the discs cover every point of the bounding box.
    """
    xmin, ymin, xmax, ymax = bounds
    pts = []
    for (lo, hi), n in zip(((xmin, xmax), (ymin, ymax)), lattice_counts(bounds, spacing_m)):
        first = lo + ((hi - lo) - (n - 1) * spacing_m) / 2
        pts.append(first + spacing_m * np.arange(n))
    gx, gy = np.meshgrid(pts[0], pts[1])
    sites = np.column_stack([gx.ravel(), gy.ravel()])
    if len(junction_xy):
        keep = np.zeros(len(sites), dtype=bool)
        for i in range(0, len(sites), 64):  # in blocks: memory stays small on large networks
            d2 = ((sites[i:i + 64, None, :] - junction_xy[None, :, :]) ** 2).sum(-1)
            keep[i:i + 64] = (d2 <= radius_m ** 2).any(axis=1)
        if keep.any():
            sites = sites[keep]
    return sites


def sites_off_network(rsus: "RsuSet", bounds: tuple) -> list[int]:
    """Indices of RSUs whose disc does not reach the network's bounding box (no vehicle can
    ever be in their coverage)."""
    xmin, ymin, xmax, ymax = bounds
    dx = np.maximum(np.maximum(xmin - rsus.x, rsus.x - xmax), 0.0)
    dy = np.maximum(np.maximum(ymin - rsus.y, rsus.y - ymax), 0.0)
    return [int(i) for i in np.flatnonzero(np.hypot(dx, dy) > rsus.radius_m)]


def build_rsus(cfg: Config, net: NetInfo) -> RsuSet:
    rc = cfg.rsu
    if rc.placement == "sites":
        ids = tuple(site_ids(rc.sites))
        xy = np.array([[float(s["x"]), float(s["y"])] for s in rc.sites])
    else:
        spacing = rc.spacing_m if rc.spacing_m > 0 else rc.radius_m * math.sqrt(2)
        nx, ny = lattice_counts(net.bounds, spacing)
        if nx * ny > MAX_LATTICE_RSUS:
            key = f"rsu.spacing_m = {rc.spacing_m:g}" if rc.spacing_m > 0 else f"rsu.radius_m = {rc.radius_m:g}"
            raise ConfigError(f"{cfg.source_file}: {key} puts {nx} x {ny} lattice RSUs on this network "
                              f"({net.bounds[2] - net.bounds[0]:.0f} x {net.bounds[3] - net.bounds[1]:.0f} m; "
                              f"at most {MAX_LATTICE_RSUS})")
        xy = lattice_sites(net.bounds, spacing, net.junction_xy, rc.radius_m)
        ids = tuple(f"rsu{i}" for i in range(len(xy)))
    m = len(ids)
    idx = np.arange(m)
    seed = cfg.scenario.seed
    c_lo, c_hi = range_pair(rc.compute_flops, "rsu.compute_flops")
    w_lo, w_hi = range_pair(rc.bandwidth_hz, "rsu.bandwidth_hz")
    return RsuSet(
        ids=ids, x=xy[:, 0].copy(), y=xy[:, 1].copy(), radius_m=np.full(m, rc.radius_m),
        compute_flops=c_lo + (c_hi - c_lo) * hash_uniform(seed, RSU_CPU, idx),
        bandwidth_hz=w_lo + (w_hi - w_lo) * hash_uniform(seed, RSU_BW, idx),
        tx_power_dbm=np.full(m, rc.tx_power_dbm),
    )
