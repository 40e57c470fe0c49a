import math

import numpy as np
import pytest

from cosim.analysis import dwell_error, realised_dwell

RSU = np.array([[0.0, 0.0, 100.0]])


def rows_v():
    # vehicle 0 drives east at 30 m/s from x = -60: inside A (|x| <= 100) at t = 1 (x=-60), 2 (-30),
    # 3 (0), 4 (30), 5 (60), 6 (90); outside at t = 7 (x = 120). Realised from t: 7 - t - 0.5.
    return [(0, k, float(k), -60.0 + 30 * (k - 1), 0 if k <= 6 else -1) for k in range(1, 8)]


def arrays(rows, shuffle=True):
    a = np.array(rows, dtype=float)
    if shuffle:
        a = a[np.random.default_rng(0).permutation(len(a))]  # order must not matter
    return a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2], a[:, 3], np.zeros(len(a)), a[:, 4].astype(int)


def test_realised_dwell_by_hand():
    # vehicle 1 stays inside until the end (censored); vehicle 2 is never served
    rows = rows_v() + [(1, k, float(k), 10.0, 0) for k in range(1, 4)] + [(2, 1, 1.0, 500.0, -1)]
    veh, slot, t, x, y, rsu = arrays(rows)
    r = realised_dwell(veh, slot, t, x, y, rsu, RSU, slot_s=1.0)
    for k, e in {1: 5.5, 2: 4.5, 3: 3.5, 4: 2.5, 5: 1.5, 6: 0.5}.items():
        assert r[(veh == 0) & (slot == k)].item() == pytest.approx(e)
    assert math.isnan(r[(veh == 0) & (slot == 7)].item())  # not served
    assert np.isnan(r[veh == 1]).all() and np.isnan(r[veh == 2]).all()


def test_dwell_error_summary():
    # straight-line predictions for vehicle 0: (100 - x) / 30 = 5.333, 4.333, ..., 0.333; a capped
    # (stopped) vehicle 3 is left out
    rows = rows_v() + [(3, 1, 1.0, 0.0, 0), (3, 2, 2.0, 200.0, -1)]
    veh, slot, t, x, y, rsu = arrays(rows, shuffle=False)
    pred = np.where(rsu >= 0, (100 - x) / 30, np.nan)
    pred[7] = 600.0
    d = dwell_error(pred, realised_dwell(veh, slot, t, x, y, rsu, RSU, 1.0), rsu, cap_s=600.0)
    assert d["rows_served"] == 7 and d["rows_capped"] == 1 and d["rows_compared"] == 6 and d["rows_censored"] == 0
    # each prediction is 1/6 s short of the midpoint estimate: 5.333 - 5.5 = -0.1667
    assert d["mean_error_s"] == pytest.approx(-1 / 6)
    assert d["mean_abs_error_s"] == pytest.approx(1 / 6)
