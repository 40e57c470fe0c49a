import math

import numpy as np
import pytest

from cosim.world.coverage import dwell_idm, dwell_straight, lane_leaders, rival_table

R = 500.0
CAP = 600.0


@pytest.mark.parametrize(
    "p, v, expected",
    [
        ((0, 0), (10, 0), 50.0),  # at the centre: R / |v|
        ((-300, 0), (20, 0), 40.0),  # approaching: (500 + 300) / 20
        ((300, 0), (20, 0), 10.0),  # leaving: (500 - 300) / 20
        ((0, 400), (10, 0), 30.0),  # chord: sqrt(500^2 - 400^2) / 10 = 300 / 10
        ((0, 500), (10, 0), 0.0),  # on the rim, tangent: leaves at once
        ((0, 0), (0, 0), CAP),  # stopped: capped
        ((0, 0), (0, 0.05), CAP),  # creeping below 0.1 m/s counts as stopped
        ((0, 0), (0, 0.5), CAP),  # 1000 s to leave, capped at 600
        ((3, 4), (-6, -8), (5 + 500) / 10),  # heading through the centre and out the far side
    ],
)
def test_dwell_by_hand(p, v, expected):
    t = dwell_straight(p[0], p[1], v[0], v[1], 0.0, 0.0, R, cap_s=CAP)
    assert float(t) == pytest.approx(expected, abs=1e-9)


def test_outside_is_nan_and_eq12_form():
    assert math.isnan(float(dwell_straight(600, 0, -10, 0, 0, 0, R, cap_s=CAP)))
    # eq. (12) for motion along +x: (sqrt(d^2 - (y_r - y)^2) - (x - x_r)) / |v|
    x, y, xr, yr, v = 120.0, -250.0, 40.0, 10.0, 13.0
    eq12 = (math.sqrt(R**2 - (yr - y) ** 2) - (x - xr)) / v
    assert float(dwell_straight(x, y, v, 0, xr, yr, R, cap_s=1e9)) == pytest.approx(eq12)


def test_lane_leaders():
    lane = np.array(["l1", "l1", "l2", "l1"], dtype=object)
    pos = np.array([10.0, 50.0, 5.0, 30.0])
    np.testing.assert_array_equal(lane_leaders(lane, pos), [3, -1, -1, 1])


IDM = dict(dt=1.0, horizon_s=120.0, a_max=2.6, b_max=4.5, v_des=15.0, delta=4.0, s0=2.5, headway=1.0)


def test_idm_free_road_at_desired_speed_equals_straight_line():
    # no leader and v = v_des: eq. (8) gives zero acceleration, so the rollout is a straight line
    args = dict(px=np.array([-300.0]), py=np.array([0.0]), speed=np.array([15.0]), angle_deg=np.array([90.0]),
                lane=np.array(["l"], dtype=object), lane_pos=np.array([0.0]), length=np.array([5.0]))
    t = dwell_idm(**args, cx=0.0, cy=0.0, radius=R, cap_s=CAP, **IDM)
    assert t[0] == pytest.approx(800 / 15.0, rel=1e-9)


def test_idm_accelerating_vehicle_leaves_sooner_than_constant_speed():
    # starts at 5 m/s, free road: IDM accelerates towards 15 m/s -> leaves before 800/5 = 160 s,
    # but not before 800/15 = 53.3 s
    args = dict(px=np.array([-300.0]), py=np.array([0.0]), speed=np.array([5.0]), angle_deg=np.array([90.0]),
                lane=np.array(["l"], dtype=object), lane_pos=np.array([0.0]), length=np.array([5.0]))
    t = dwell_idm(**args, cx=0.0, cy=0.0, radius=R, cap_s=CAP, **IDM)[0]
    assert 800 / 15.0 < t < 800 / 5.0


def test_idm_blocked_by_stopped_leader_stays_capped():
    # follower heading east at 10 m/s, a stopped leader 20 m ahead on the same lane: the follower
    # assumes the leader keeps its speed (0), brakes and stays; the leader has a free road and leaves
    args = dict(px=np.array([0.0, 25.0]), py=np.array([0.0, 0.0]), speed=np.array([10.0, 0.0]),
                angle_deg=np.array([90.0, 90.0]), lane=np.array(["l", "l"], dtype=object),
                lane_pos=np.array([100.0, 125.0]), length=np.array([5.0, 5.0]))
    t = dwell_idm(**args, cx=0.0, cy=0.0, radius=R, cap_s=CAP, **IDM)
    assert t[0] == CAP
    assert 475 / 15.0 < t[1] < CAP


def test_rival_table_by_hand():
    # centres on a line at 0, 900 and 2000 m, radius 500: only 0 and 900 are within 2 R + 1 m
    table = rival_table([0.0, 900.0, 2000.0], [0.0, 0.0, 0.0], [500.0, 500.0, 500.0])
    np.testing.assert_array_equal(table, [[1], [0], [2]])  # RSU 2 has none: padded with itself


@pytest.mark.parametrize("radii", ["equal", "unequal"])
def test_rivals_from_the_table_give_the_same_dwell_bit_for_bit(radii):
    """Looking only at the rivals within 2 R of the serving RSU changes no bit of the dwell."""
    rng = np.random.default_rng(7)
    gx, gy = np.meshgrid(np.arange(12) * 700.0, np.arange(9) * 700.0)  # a city-like lattice
    jx, jy = gx.ravel(), gy.ravel()
    jr = np.full(len(jx), 500.0) if radii == "equal" else rng.uniform(350.0, 650.0, len(jx))
    n = 4000
    px, py = rng.uniform(-300, 8000, n), rng.uniform(-300, 5900, n)
    d = np.hypot(px[:, None] - jx, py[:, None] - jy)
    srv = np.argmin(np.where(d <= jr, d, np.inf), axis=1)
    inside = np.isfinite(np.where(d <= jr, d, np.inf)[np.arange(n), srv])
    px, py, srv = px[inside], py[inside], srv[inside]
    speed, heading = rng.uniform(0, 40, len(px)), rng.uniform(0, 2 * np.pi, len(px))
    vx, vy = speed * np.sin(heading), speed * np.cos(heading)
    args = (px, py, vx, vy, jx[srv], jy[srv], jr[srv])
    full = dwell_straight(*args, cap_s=600.0, rivals=(jx, jy, jr, srv))
    near = dwell_straight(*args, cap_s=600.0, rivals=(jx, jy, jr, srv, rival_table(jx, jy, jr)))
    np.testing.assert_array_equal(near, full)
    assert len(px) > 2000 and (full < 600.0).mean() > 0.5
