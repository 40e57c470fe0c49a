"""Remaining time in RSU coverage (TVT paper eq. 12) and an IDM-based predictor (eqs. 8-11).

``dwell_straight`` generalises eq. (12) from motion along x to any heading: a vehicle at ``p``
with velocity ``v`` leaves the disc of radius R around ``c`` at the positive root of
``|p - c + v t| = R``:

    a = |v|^2,  b = (p - c) . v,  k = |p - c|^2 - R^2
    t = (-b + sqrt(b^2 - a k)) / a

For motion along x this is eq. (12): (sqrt(R^2 - (y_r - y)^2) -/+ (x_r - x)) / |v|.
Vehicles outside the disc get NaN; stopped vehicles (|v| below ``min_speed``) get ``cap_s``;
every value is capped at ``cap_s``.

Under the ``nearest`` association rule (ours to state: the paper has one RSU) service by r also
ends where a neighbouring RSU j becomes nearer: ``rivals`` (every RSU's x, y, radius and the
serving index per vehicle) adds the crossing of each bisector,
|p + v t - c_j|^2 - |p + v t - c|^2 = D0 - 2 t v.(c_j - c) = 0, at t = D0 / (2 v.(c_j - c)) where
that is positive and the crossing point lies in j's disc (with equal radii it always does).

Only the RSUs whose centre lies within twice the serving radius (plus :data:`RIVAL_MARGIN_M`)
are looked at (:func:`rival_table`): a bisector with a farther centre never cuts the serving
disc (its nearest point to c is |c_j - c| / 2 away), so the path leaves the disc before
crossing it and the minimum is the same number. On a city lattice of ~100 RSUs that is ~20 of
them per vehicle instead of all (measured: docs/performance.md).
"""

from __future__ import annotations

import numpy as np

MIN_SPEED_MPS = 0.1


def dwell_straight(px, py, vx, vy, cx, cy, radius, cap_s: float, min_speed: float = MIN_SPEED_MPS,
                   rivals: tuple | None = None) -> np.ndarray:
    px, py, vx, vy, cx, cy = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (px, py, vx, vy, cx, cy)))
    rx, ry = px - cx, py - cy
    a = vx * vx + vy * vy
    b = rx * vx + ry * vy
    k = rx * rx + ry * ry - np.asarray(radius, dtype=float) ** 2
    inside = k <= 1e-9
    moving = a >= min_speed * min_speed
    disc = np.maximum(b * b - a * k, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (-b + np.sqrt(disc)) / a
        if rivals is not None and len(rivals[0]) > 1 and px.size:
            t = np.minimum(t, _bisector_time(px, py, vx, vy, cx, cy, *rivals))
    t = np.where(moving, np.maximum(t, 0.0), cap_s)
    t = np.minimum(t, cap_s)
    return np.where(inside, t, np.nan)


#: [m] a rival RSU is looked at when its centre is within 2 R + this of the serving one's: the
#: bisector crossing of one farther lies this far / 2 beyond the disc (far above rounding)
RIVAL_MARGIN_M = 1.0


def rival_table(x, y, radius) -> np.ndarray:
    """(M, K) RSU indices: row s lists the RSUs whose bisector with s can cut s's disc (centres
    within 2 R_s + :data:`RIVAL_MARGIN_M`), padded with s itself (never crossed: c_j - c = 0)."""
    x, y, radius = (np.asarray(a, dtype=float) for a in (x, y, radius))
    m = len(x)
    rows = []
    for lo in range(0, m, 1024):  # bounded memory for very many RSUs
        d = np.hypot(x[lo:lo + 1024, None] - x[None, :], y[lo:lo + 1024, None] - y[None, :])
        near = d <= 2.0 * radius[lo:lo + 1024, None] + RIVAL_MARGIN_M
        near[np.arange(len(d)), np.arange(lo, lo + len(d))] = False
        rows += [np.flatnonzero(r) for r in near]
    k = max([1, *map(len, rows)])
    table = np.repeat(np.arange(m, dtype=np.int64)[:, None], k, axis=1)
    for s, r in enumerate(rows):
        table[s, :len(r)] = r
    return table


def _bisector_time(px, py, vx, vy, cx, cy, jx, jy, jr, srv, near=None) -> np.ndarray:
    """Earliest time each vehicle's straight path gets nearer to another RSU j in range than to
    its serving one (inf if never); see the module docstring. |p - c_j|^2 - |p - c|^2 is written
    |c_j|^2 - |c|^2 - 2 p.(c_j - c), and the serving RSU itself drops out (c_j - c = 0).
    ``near``: :func:`rival_table` of the RSUs, to look at each vehicle's possible rivals only."""
    shape = np.shape(px)  # arrays are (RSU, vehicle): the minimum over RSUs is then elementwise (fast)
    px, py, vx, vy, cx, cy = (np.ravel(a)[None, :] for a in (px, py, vx, vy, cx, cy))
    jx, jy, jr = (np.asarray(a, dtype=float) for a in (jx, jy, jr))
    unequal = np.ptp(jr) > 0
    if near is not None:  # (K, vehicle): each vehicle's serving RSU's rivals
        idx = near[np.ravel(srv)].T
        jx, jy, jr = jx[idx], jy[idx], jr[idx]
    else:
        jx, jy, jr = jx[:, None], jy[:, None], jr[:, None]
    ex, ey = jx - cx, jy - cy
    d0 = (jx * jx + jy * jy) - (cx * cx + cy * cy) - 2.0 * (px * ex + py * ey)
    rate = 2.0 * (vx * ex + vy * ey)
    t = np.full(rate.shape, np.inf)
    np.divide(np.maximum(d0, 0.0), rate, out=t, where=rate > 1e-12)
    if unequal:  # unequal radii: the crossing counts only inside j's disc
        qx, qy = px + vx * t - jx, py + vy * t - jy
        t = np.where(qx * qx + qy * qy <= jr * jr + 1e-6, t, np.inf)
    return t.min(axis=0).reshape(shape)


def lane_leaders(lane: np.ndarray, lane_pos: np.ndarray) -> np.ndarray:
    """Index of the vehicle directly ahead on the same lane, or -1 (vectorised by sorting)."""
    n = len(lane)
    leader = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return leader
    lane_codes = np.unique(lane.astype(str), return_inverse=True)[1]
    order = np.lexsort((lane_pos, lane_codes))
    same = lane_codes[order][1:] == lane_codes[order][:-1]
    leader[order[:-1][same]] = order[1:][same]
    return leader


def dwell_idm(px, py, speed, angle_deg, lane, lane_pos, length, cx, cy, radius, *, cap_s: float,
              dt: float, horizon_s: float, a_max: float, b_max: float, v_des: float, delta: float,
              s0: float, headway: float, rivals: tuple | None = None) -> np.ndarray:
    """Dwell from an IDM rollout (eqs. 8-11) along the current heading.

    Each vehicle follows its lane leader (assumed to keep its speed) with the IDM of eq. (8),
    desired gap eq. (9) (the paper's sqrt(phi_max zeta_max) read as sqrt(lambda_max zeta_max),
    the standard IDM), and integrates speed/position by eqs. (10)-(11) with step ``dt``. The
    crossing of the coverage circle (and, with ``rivals``, of a bisector: see the module
    docstring) is placed inside the step where it happens; a vehicle still inside after
    ``horizon_s`` goes on at its final speed (straight-line formula), capped.
    """
    px, py, speed, lane_pos, length = (np.asarray(a, dtype=float) for a in (px, py, speed, lane_pos, length))
    n = len(px)
    cx, cy, radius = (np.broadcast_to(np.asarray(a, dtype=float), (n,)) for a in (cx, cy, radius))
    rad = np.deg2rad(angle_deg)
    ux, uy = np.sin(rad), np.cos(rad)
    leader = lane_leaders(np.asarray(lane), lane_pos)
    has_lead = leader >= 0
    li = np.where(has_lead, leader, 0)
    gap = np.where(has_lead, lane_pos[li] - length[li] - lane_pos, np.inf)
    lead_v = np.where(has_lead, speed[li], 0.0)
    v_des = max(v_des, 1e-3)
    inside = (px - cx) ** 2 + (py - cy) ** 2 <= radius ** 2 + 1e-9
    # [m] along the heading to where service ends (the straight-line exit at unit speed)
    exit_m = dwell_straight(px, py, ux, uy, cx, cy, radius, cap_s=np.inf, min_speed=0.0, rivals=rivals)
    s = np.zeros(n)  # distance travelled along the heading [m]
    v = speed.copy()
    t_exit = np.full(n, np.nan)
    sqrt_ab = np.sqrt(a_max * b_max)
    steps = int(np.ceil(horizon_s / dt))
    for i in range(steps):
        pending = inside & np.isnan(t_exit)
        if not pending.any():
            break
        s_star = s0 + np.maximum(0.0, v * headway + v * (v - lead_v) / (2 * sqrt_ab))  # eq. (9)
        inter = np.where(np.isfinite(gap), (s_star / np.maximum(gap, 0.1)) ** 2, 0.0)
        acc = np.maximum(a_max * (1 - (v / v_des) ** delta - inter), -2 * b_max)  # eq. (8)
        v_next = v + acc * dt  # eq. (10)
        stops = v_next < 0
        ds = np.where(stops, v * v / (2 * np.maximum(-acc, 1e-9)), v * dt + 0.5 * acc * dt * dt)  # eq. (11)
        v_next = np.maximum(v_next, 0.0)
        new = pending & (s + ds > exit_m)
        if new.any():
            left = exit_m[new] - s[new]
            t_exit[new] = (i + np.clip(left / np.maximum(ds[new], 1e-9), 0.0, 1.0)) * dt
        s, v = s + ds, v_next
        gap = gap - ds + lead_v * dt
    rest = inside & np.isnan(t_exit)
    if rest.any():
        vr = v[rest]
        with np.errstate(divide="ignore"):
            tail = np.where(vr >= MIN_SPEED_MPS, np.maximum(exit_m[rest] - s[rest], 0.0) / vr, cap_s)
        t_exit[rest] = min(steps, i + 1) * dt + tail
    return np.where(inside, np.minimum(t_exit, cap_s), np.nan)
