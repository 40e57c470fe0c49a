"""Remaining time in RSU coverage (TVT paper eq. 12) and an IDM-based predictor (eqs. 8-11).

``dwell_straight`` generalises eq. (12) from motion along x to any heading: a vehicle at ``p``
with velocity ``v`` leaves the disc of radius R around ``c`` at the positive root of
``|p - c + v t| = R``:

    a = |v|^2,  b = (p - c) . v,  k = |p - c|^2 - R^2
    t = (-b + sqrt(b^2 - a k)) / a

For motion along x this is eq. (12): (sqrt(R^2 - (y_r - y)^2) -/+ (x_r - x)) / |v|.
Vehicles outside the disc get NaN; stopped vehicles (|v| below ``min_speed``) get ``cap_s``;
every value is capped at ``cap_s``.
"""

from __future__ import annotations

import numpy as np

MIN_SPEED_MPS = 0.1


def dwell_straight(px, py, vx, vy, cx, cy, radius, cap_s: float, min_speed: float = MIN_SPEED_MPS) -> np.ndarray:
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
    t = np.where(moving, np.maximum(t, 0.0), cap_s)
    t = np.minimum(t, cap_s)
    return np.where(inside, t, np.nan)


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
              s0: float, headway: float) -> np.ndarray:
    """Dwell from an IDM rollout (eqs. 8-11) along the current heading.

    Each vehicle follows its lane leader (assumed to keep its speed) with the IDM of eq. (8),
    desired gap eq. (9) (the paper's sqrt(phi_max zeta_max) read as sqrt(lambda_max zeta_max),
    the standard IDM), and integrates speed/position by eqs. (10)-(11) with step ``dt``. The
    crossing of the coverage circle is placed inside the step where it happens; a vehicle still
    inside after ``horizon_s`` goes on at its final speed (straight-line formula), capped.
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
        x1, y1 = px + ux * (s + ds), py + uy * (s + ds)
        new = pending & ((x1 - cx) ** 2 + (y1 - cy) ** 2 > radius ** 2)
        if new.any():
            left = dwell_straight(px[new] + ux[new] * s[new], py[new] + uy[new] * s[new], ux[new], uy[new],
                                  cx[new], cy[new], radius[new], cap_s=np.inf, min_speed=0.0)
            t_exit[new] = (i + np.clip(left / np.maximum(ds[new], 1e-9), 0.0, 1.0)) * dt
        s, v = s + ds, v_next
        gap = gap - ds + lead_v * dt
    rest = inside & np.isnan(t_exit)
    if rest.any():
        tail = dwell_straight(px[rest] + ux[rest] * s[rest], py[rest] + uy[rest] * s[rest],
                              ux[rest] * v[rest], uy[rest] * v[rest], cx[rest], cy[rest], radius[rest], cap_s=cap_s)
        t_exit[rest] = min(steps, i + 1) * dt + np.nan_to_num(tail, nan=0.0)
    return np.where(inside, np.minimum(t_exit, cap_s), np.nan)
