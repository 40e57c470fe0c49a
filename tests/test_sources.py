import numpy as np
import pytest
import traci.constants as tc

from cosim.errors import CosimError
from cosim.sources.sumo import VARS, check_api_version, read_vars, snapshot_from_results


class _FakeConn:
    def __init__(self, api):
        self.api = api

    def getVersion(self):
        return self.api, "SUMO 9.9.9"


def test_api_version_mismatch_is_a_clear_error():
    assert check_api_version(_FakeConn(tc.TRACI_VERSION), "traci") == "SUMO 9.9.9"
    with pytest.raises(CosimError, match="TraCI API mismatch: traci speaks version .* but SUMO 9.9.9 speaks 1"):
        check_api_version(_FakeConn(1), "traci")


def test_snapshot_from_subscription_results():
    res = {
        "a": {tc.VAR_POSITION: (1.0, 2.0), tc.VAR_SPEED: 3.0, tc.VAR_ANGLE: 90.0, tc.VAR_ACCELERATION: -1.0,
              tc.VAR_LANE_ID: "e1_0", tc.VAR_LANEPOSITION: 12.5},
        "b": {tc.VAR_POSITION: (5.0, 6.0), tc.VAR_SPEED: 0.0, tc.VAR_ANGLE: 0.0, tc.VAR_ACCELERATION: 0.0,
              tc.VAR_LANE_ID: ":j_3_0", tc.VAR_LANEPOSITION: 1.0},
    }
    s = snapshot_from_results(7.0, res, {"a": 4.5, "b": 12.0}.__getitem__)
    assert s.time_s == 7.0 and list(s.ids) == ["a", "b"]
    np.testing.assert_array_equal(s.x, [1.0, 5.0])
    np.testing.assert_array_equal(s.y, [2.0, 6.0])
    assert list(s.edge) == ["e1", ":j_3"] and list(s.lane) == ["e1_0", ":j_3_0"]
    np.testing.assert_array_equal(s.length, [4.5, 12.0])
    vx, vy = s.velocity()  # 90 deg = east
    assert vx[0] == pytest.approx(3.0) and vy[0] == pytest.approx(0.0, abs=1e-12)
    assert len(snapshot_from_results(0.0, {})) == 0


def test_acceleration_is_read_only_when_asked():
    assert read_vars() == VARS
    assert read_vars(()) == tuple(v for v in VARS if v != tc.VAR_ACCELERATION)
    res = {"a": {tc.VAR_POSITION: (1.0, 2.0), tc.VAR_SPEED: 3.0, tc.VAR_ANGLE: 90.0, tc.VAR_LANE_ID: "e1_0",
                 tc.VAR_LANEPOSITION: 12.5}}
    s = snapshot_from_results(7.0, res, {"a": 4.5}.__getitem__, variables=read_vars(()))
    assert np.isnan(s.accel).all() and len(s.accel) == 1
    assert s.speed[0] == 3.0 and s.lane_pos[0] == 12.5 and list(s.edge) == ["e1"]
