"""cosim's decoder of the TraCI step response (cosim.sources.traci_step) against hand-built
messages and against traci's own decoding of the same responses from a real SUMO run."""

import struct

import numpy as np
import pytest
import traci.constants as tc
from traci.storage import Storage

from cosim.sources.sumo import SumoSource, snapshot_from_results, sumo_command
from cosim.sources.traci_step import ContextDecoder

from .conftest import GRID6_CFG

VARS4 = (tc.VAR_POSITION, tc.VAR_SPEED, tc.VAR_LANEPOSITION, tc.VAR_LANE_ID)


def _s(text: str) -> bytes:
    b = text.encode("utf8")
    return struct.pack("!i", len(b)) + b


def _record(vid: str, x: float, y: float, speed: float, lane_pos: float, lane: str, speed_status: int = 0) -> bytes:
    speed_part = (struct.pack("!BBBd", tc.VAR_SPEED, 0, tc.TYPE_DOUBLE, speed) if speed_status == 0
                  else struct.pack("!BBB", tc.VAR_SPEED, speed_status, tc.TYPE_STRING) + _s("no speed"))
    return (_s(vid) + struct.pack("!BBBdd", tc.VAR_POSITION, 0, tc.POSITION_2D, x, y) + speed_part
            + struct.pack("!BBBd", tc.VAR_LANEPOSITION, 0, tc.TYPE_DOUBLE, lane_pos)
            + struct.pack("!BBB", tc.VAR_LANE_ID, 0, tc.TYPE_STRING) + _s(lane))


def _response(records: list[bytes], anchor: str = "J0", response: int = tc.RESPONSE_SUBSCRIBE_JUNCTION_CONTEXT,
              nvars: int = 4) -> bytes:
    body = (struct.pack("!B", response) + _s(anchor) + struct.pack("!BBi", tc.CMD_GET_VEHICLE_VARIABLE, nvars,
                                                                      len(records)) + b"".join(records))
    if len(body) + 1 <= 255:
        return struct.pack("!B", len(body) + 1) + body
    return struct.pack("!Bi", 0, len(body) + 5) + body  # the long form counts its 5 length bytes


def test_decodes_a_hand_built_response():
    recs = [_record("v1", 1.5, -2.25, 13.0, 7.5, "e1_0"),
            _record("Fahrzeug ü 東", 1e6, 0.1, 0.0, 250.125, ":j 3_0" + "x" * 300)]
    buf = b"\x07" + _response(recs)  # not at offset 0, as inside a step response
    assert buf[1] == 0  # long enough for the int32 length form
    end, (ids, lanes, cols) = ContextDecoder("J0", VARS4).decode(buf, 1)
    assert end == len(buf)
    assert ids == ["v1", "Fahrzeug ü 東"] and lanes == ["e1_0", ":j 3_0" + "x" * 300]
    assert set(cols) == {"x", "y", "speed", "lane_pos"}
    for c, want in {"x": [1.5, 1e6], "y": [-2.25, 0.1], "speed": [13.0, 0.0], "lane_pos": [7.5, 250.125]}.items():
        assert cols[c].dtype == np.float64 and cols[c].tolist() == want, c


def test_short_length_form_and_no_vehicles():
    buf = _response([])
    assert buf[0] == len(buf)  # one length byte
    end, (ids, lanes, cols) = ContextDecoder("J0", VARS4).decode(buf, 0)
    assert end == len(buf) and ids == [] and lanes == [] and all(len(v) == 0 for v in cols.values())
    one = _response([_record("a", 1.0, 2.0, 3.0, 4.0, "l_0")])
    assert ContextDecoder("J0", VARS4).decode(one, 0)[1][2]["speed"].tolist() == [3.0]


@pytest.mark.parametrize("case", ["error status", "other anchor", "other response", "other variable count", "cut",
                                  "cut in the header"])
def test_anything_else_is_left_to_traci(case):
    good = [_record("v1", 1.0, 2.0, 3.0, 4.0, "e_0")]
    buf = {"error status": lambda: _response(good + [_record("v2", 1.0, 2.0, 3.0, 4.0, "e_0", speed_status=0xFF)]),
           "other anchor": lambda: _response(good, anchor="J1"),
           "other response": lambda: _response(good, response=tc.RESPONSE_SUBSCRIBE_SIM_VARIABLE),
           "other variable count": lambda: _response(good, nvars=5),
           "cut": lambda: _response(good)[:-3],
           "cut in the header": lambda: _response(good)[:9]}[case]()
    assert ContextDecoder("J0", VARS4).decode(buf, 0) is None


def test_layout_must_end_with_the_one_string():
    with pytest.raises(ValueError):
        ContextDecoder("J0", (tc.VAR_LANE_ID, tc.VAR_SPEED))


def _traci_decodes(conn, step_raw: bytes, context_raw: bytes, anchor: str):
    """traci's own decoding of a step's answer and of the context subscription's answer (what
    ``Connection.simulationStep`` and ``subscribeContext`` do with them)."""
    st = Storage(step_raw)
    st.read("!BBB")
    st.readString()
    for results in conn._subscriptionMapping.values():
        results.reset()
    for _ in range(st.readInt()):
        conn._readSubscription(st)
    assert not st.ready()
    st = Storage(context_raw)
    assert st.read("!BBB")[1:] == (tc.CMD_SUBSCRIBE_JUNCTION_CONTEXT, 0) and st.readString() == ""
    conn._readSubscription(st)
    assert not st.ready()
    now = conn.simulation.getSubscriptionResults()[tc.VAR_TIME]
    return dict(conn.junction.getContextSubscriptionResults(anchor)), now


FIELDS = ("ids", "x", "y", "speed", "angle", "accel", "edge", "lane", "lane_pos", "length")


@pytest.mark.sumo
@pytest.mark.parametrize("accel", [True, False])
def test_matches_traci_on_the_same_responses_of_a_real_run(accel):
    """grid6, 100 s: every slot's answers decoded by cosim and by traci, column for column, in
    SUMO's order; vehicles enter and leave, and vehicles with odd ids (non-ASCII, spaces, a tab,
    XML's special characters, 300 characters) are added over TraCI."""
    src = SumoSource(sumo_command(GRID6_CFG, seed=42, end_s=100, step_length_s=0.5), "traci",
                     fields=("accel",) if accel else ())
    src.start()
    try:
        conn, reader = src.conn, src.reader
        raws = []
        recv = conn._recvExact

        def keep():  # every response SUMO sends, as received
            r = recv()
            raws.append(r._content)
            return r

        conn._recvExact = keep
        odd = ["Fahrzeug ü 東", "a b", "tab\there", "<&>\"'", "é" * 300]
        seen, ever, entered, left = set(), set(), 0, 0
        for t in range(1, 101):
            if t == 3:
                conn.route.add("odd route", list(src.route_of[next(iter(seen))]))
                for vid in odd:
                    conn.vehicle.add(vid, "odd route")
            raws.clear()
            snap = src.step_to(float(t))
            assert len(raws) >= 2  # the step's answer, the subscription's, then any first-sight lookups
            res, now = _traci_decodes(conn, raws[0], raws[1], reader.anchor)
            ref = snapshot_from_results(now, res, reader.lengths.__getitem__, variables=reader.vars)
            assert snap.time_s == now == float(t)
            for f in FIELDS:
                np.testing.assert_array_equal(getattr(snap, f), getattr(ref, f), err_msg=f"{f} at t={t}")
            ids = set(snap.ids)
            entered += len(ids - seen)
            left += len(seen - ids) if seen else 0
            seen = ids
            ever |= ids
        assert reader.decoded == 100  # every step through cosim's decoder, none left to traci
        assert entered > 50 and left > 0 and len(snap) > 100
        assert set(odd) <= ever
        assert np.isfinite(snap.accel).all() if accel else np.isnan(snap.accel).all()
    finally:
        src.close()


@pytest.mark.sumo
def test_a_response_left_to_traci_reads_the_same():
    """When the decoder declines (not our shape), traci's decoding fills the snapshot: the same
    columns as a run that decodes every step itself."""
    cmd = sumo_command(GRID6_CFG, seed=42, end_s=30, step_length_s=0.5)
    fast, slow = SumoSource(cmd, "traci"), SumoSource(cmd, "traci")
    fast.start()
    slow.start()
    try:
        slow.reader.decoder.decode = lambda buf, p: None
        for t in range(1, 31):
            a, b = fast.step_to(float(t)), slow.step_to(float(t))
            for f in FIELDS:
                np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f"{f} at t={t}")
        assert fast.reader.decoded == 30 and slow.reader.decoded == 0 and len(a) > 20
        assert not fast.finished() and fast.time_s() == 30.0
    finally:
        fast.close()
        slow.close()


@pytest.mark.sumo
def test_a_users_own_stepping_reads_through_the_decoder_too():
    """``attach``'s case: someone else steps SUMO one step at a time (0.5 s, two per slot) and the
    reader reads at each slot boundary; the same columns as libsumo's at those times."""
    from cosim.sources.sumo import make_reader

    cmd = sumo_command(GRID6_CFG, seed=42, end_s=40, step_length_s=0.5)
    tra, lib = SumoSource(cmd, "traci"), SumoSource(cmd, "libsumo")
    tra.start()
    lib.start()
    try:
        reader = make_reader(tra.conn, ())
        for t in range(1, 41):
            tra.conn.simulationStep()
            tra.conn.simulationStep()
            a = reader.read(tra.conn.simulation.getTime()).sorted_by_id()
            b = lib.step_to(float(t)).sorted_by_id()
            assert a.time_s == b.time_s == float(t)
            for f in FIELDS:
                if f != "accel":
                    np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f"{f} at t={t}")
        assert reader.decoded == 40 and len(a) > 20 and np.isnan(a.accel).all()
    finally:
        tra.close()
        lib.close()
