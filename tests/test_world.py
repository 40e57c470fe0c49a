import math

import numpy as np
import pytest

from cosim.config import from_dict
from cosim.sources.base import Snapshot
from cosim.world.network import NetInfo
from cosim.world.world import World

NET = NetInfo("mem", {"e": 2000.0, ":j_0": 10.0}, np.array([[0.0, 0.0], [1000.0, 0.0]]), (0.0, 0.0, 1000.0, 0.0))


def make_world(**channel):
    cfg = from_dict({
        "scenario": {"sumocfg": "/dev/null", "seed": 5},
        "rsu": {"placement": "sites", "radius_m": 500.0, "compute_flops": 20e9, "bandwidth_hz": 100e6,
                "tx_power_dbm": 30.0, "sites": [{"id": "A", "x": 0.0, "y": 0.0}, {"id": "B", "x": 1000.0, "y": 0.0}]},
        "channel": {"fading": "none", "interference": False, "vehicle_bandwidth_hz": 50e6,
                    "vehicle_compute_flops": 5e9, **channel},
    }, "test.toml")
    return World(cfg, NET)


def snap(t, ids, xs, ys=None, speed=None, angle=None):
    n = len(ids)
    ys = np.zeros(n) if ys is None else np.asarray(ys, float)
    return Snapshot(t, np.array(ids, dtype=object), np.asarray(xs, float), ys,
                    np.full(n, 10.0) if speed is None else np.asarray(speed, float),
                    np.full(n, 90.0) if angle is None else np.asarray(angle, float), np.zeros(n),
                    np.array(["e"] * n, dtype=object), np.array(["e_0"] * n, dtype=object),
                    np.asarray(xs, float), np.full(n, 5.0))


def test_association_nearest_in_range():
    w = make_world()
    w.update(snap(1.0, ["a", "b", "c", "d"], [100, 900, 499, 300], ys=[0, 0, 0, 450]))
    # a -> A (100 m), b -> B (100 m), c -> A (499 vs 501 m), d at (300, 450): 540.8 m from A, 840 m from B -> none
    np.testing.assert_array_equal(w.serving, [0, 1, 0, -1])
    assert w.dist_m[0] == pytest.approx(100.0) and math.isnan(w.dist_m[3])
    np.testing.assert_array_equal(w.connected, [2, 1])
    # heading east at 10 m/s: a leaves A's disc after (500-100)/10 = 40 s, b leaves B's after (500+100)/10 = 60 s
    assert w.dwell_s[0] == pytest.approx(40.0) and w.dwell_s[1] == pytest.approx(60.0)
    assert math.isnan(w.dwell_s[3])
    assert w.rate_v2i_bps[3] == 0.0 and w.rate_i2v_bps[3] == 0.0


def test_rates_by_hand_without_fading():
    w = make_world()
    w.update(snap(1.0, ["a"], [300.0]))
    g = 10 ** (-(128.1 + 37.6 * math.log10(0.3)) / 10)  # 300 m from A
    noise = 1e-10  # -100 dBm in mW
    up = 50e6 * math.log2(1 + 10 ** 2.3 * g / noise)  # vehicle: 23 dBm, w_n = 50 MHz
    down = 100e6 * math.log2(1 + 1000 * g / noise)  # RSU: 30 dBm, w0 = 100 MHz
    assert w.rate_v2i_bps[0] == pytest.approx(up, rel=1e-12)
    assert w.rate_i2v_bps[0] == pytest.approx(down, rel=1e-12)


def test_interference_from_the_other_rsu():
    w = make_world(interference=True)
    w.update(snap(1.0, ["a"], [300.0]))
    g_a = 10 ** (-(128.1 + 37.6 * math.log10(0.3)) / 10)
    g_b = 10 ** (-(128.1 + 37.6 * math.log10(0.7)) / 10)  # 700 m to B
    xi = 1000 * g_b
    assert w.interference_mw[0] == pytest.approx(xi, rel=1e-12)
    assert w.rate_i2v_bps[0] == pytest.approx(100e6 * math.log2(1 + 1000 * g_a / (1e-10 + xi)), rel=1e-12)


def test_handovers_joins_and_leaves():
    w = make_world()
    w.update(snap(1.0, ["a", "b", "c"], [450, 100, 900]))  # a->A, b->A, c->B
    np.testing.assert_array_equal(w.joined, [2, 1])
    w.update(snap(2.0, ["a", "b", "d"], [550, 100, 100], ys=[0, 0, 0]))  # a moves A->B, c vanished, d appears at A
    np.testing.assert_array_equal(w.handover_out, [1, 0])
    np.testing.assert_array_equal(w.handover_in, [0, 1])
    np.testing.assert_array_equal(w.joined, [1, 0])  # d
    np.testing.assert_array_equal(w.left, [0, 1])  # c left the simulation while on B
    np.testing.assert_array_equal(w.connected, [2, 1])
    w.update(snap(3.0, ["a", "b", "d"], [550, 100, 100], ys=[0, 600, 0]))  # b drives out of coverage
    np.testing.assert_array_equal(w.left, [1, 0])
    np.testing.assert_array_equal(w.handover_in + w.handover_out, [0, 0])


def test_fading_is_per_slot_and_independent_of_other_vehicles():
    w = make_world(fading="rayleigh")
    w.update(snap(1.0, ["a", "b"], [300, 350]))
    r1 = w.rate_v2i_bps.copy()
    w2 = make_world(fading="rayleigh")
    w2.update(snap(1.0, ["b", "zz", "a"], [350, 10, 300]))  # other order, another vehicle alongside
    assert w2.rate_v2i_bps[2] == r1[0] and w2.rate_v2i_bps[0] == r1[1]
    w.update(snap(2.0, ["a", "b"], [300, 350]))  # same place, next slot: a new fading draw
    assert w.rate_v2i_bps[0] != r1[0]


def test_v2v_rate_symmetric_fading_and_range():
    w = make_world(fading="rayleigh", v2v_range_m=300.0)
    w.update(snap(1.0, ["a", "b", "c"], [0, 100, 500]))
    r_ab, r_ba = w.v2v_rate_bps([0], [1])[0], w.v2v_rate_bps([1], [0])[0]
    assert r_ab > 0 and r_ab == pytest.approx(r_ba)  # same w_n (50 MHz), same power, same draw
    assert w.v2v_rate_bps([0], [2])[0] == 0.0  # 500 m > 300 m range
    assert w.v2v_rate_bps([1], [1])[0] == 0.0
    w_nf = make_world(v2v_range_m=300.0)
    w_nf.update(snap(1.0, ["a", "b"], [0, 100]))
    g = 10 ** (-(63.3 + 17.7 * 2) / 10)  # 100 m
    assert w_nf.v2v_rate_bps([0], [1])[0] == pytest.approx(50e6 * math.log2(1 + 10 ** 2.3 * g / 1e-10))


def test_vehicle_capabilities_fixed_per_vehicle_and_in_range():
    cfg_range = dict(vehicle_bandwidth_hz=[50e6, 80e6], vehicle_compute_flops=[5e9, 10e9])
    w = make_world(**cfg_range)
    w.update(snap(1.0, [f"v{i}" for i in range(500)], np.linspace(0, 1000, 500)))
    bw, cpu = w.bandwidth_hz.copy(), w.compute_flops.copy()
    assert bw.min() >= 50e6 and bw.max() <= 80e6 and cpu.min() >= 5e9 and cpu.max() <= 10e9
    w.update(snap(2.0, ["v7", "v3"], [5, 6]))
    assert w.bandwidth_hz[0] == bw[7] and w.compute_flops[1] == cpu[3]


def test_empty_snapshot_and_rng_streams():
    w = make_world()
    w.update(Snapshot.empty(1.0))
    assert len(w.serving) == 0 and w.connected.tolist() == [0, 0]
    a = w.rng("dvit.requests").random(3)
    assert np.array_equal(a, w.rng("dvit.requests").random(3))
    assert not np.array_equal(a, w.rng("moe.requests").random(3))


def test_uids_of_many_arriving_vehicles_converted_once():
    """Each vehicle's uid is its id's stable_uid whatever the order vehicles arrive and leave in;
    the uid array is grown by doubling (issue 32: rebuilt from every id ever seen each slot a new
    vehicle departed, it grew with the run's length)."""
    from cosim.world import channel as ch

    w = make_world()
    arrays = []
    for t in range(1, 41):  # vehicle k departs at slot k (two at slots 10, 20, ...) and leaves after 7 slots
        ids = [f"v{k}" for k in range(max(0, t - 7), t)] + ([f"w{t}"] if t % 10 == 0 else [])
        w.update(snap(float(t), ids, [10.0 * (i + 1) for i in range(len(ids))]))
        assert w.uid.tolist() == [ch.stable_uid(v) for v in ids]
        arrays.append(w._uid_arr)
    assert w._n_uid == len(w.vehicle_names) == 44
    # doubling: the array was replaced a handful of times, not at each of the 40 slots with a new vehicle
    assert len({id(a) for a in arrays}) <= 8


def test_vehicle_indices_in_order_of_first_appearance_and_repeated_ids():
    """New vehicles are numbered in the order a snapshot lists them, known ones keep their index,
    and an id listed twice in one snapshot (a foreign trace) gets one index for both rows."""
    w = make_world()
    w.update(snap(1.0, ["b", "a"], [10.0, 20.0]))
    assert w.vidx.tolist() == [0, 1] and w.vehicle_names == ["b", "a"]
    w.update(snap(2.0, ["c", "a", "d", "c", "b"], [10.0, 20.0, 30.0, 40.0, 50.0]))
    assert w.vidx.tolist() == [2, 1, 3, 2, 0] and w.vehicle_names == ["b", "a", "c", "d"]
    assert w.vidx.dtype == np.int64
    from cosim.world import channel as ch

    assert w.uid.tolist() == [ch.stable_uid(v) for v in ["c", "a", "d", "c", "b"]]


def test_kept_vehicle_draws_are_the_fresh_draws_bit_for_bit():
    """bandwidth_hz, compute_flops and World.vehicle_draw (any tag and range), drawn once per
    vehicle and kept, equal drawing every vehicle of the slot again (lo + (hi - lo) x
    hash_uniform(seed, tag, uid)), while vehicles come and go; one tag under two ranges is two
    draws."""
    from cosim.world import channel as ch

    def fresh(w, tag, lo, hi):  # noqa: ANN001, ANN202 - every vehicle of the slot drawn anew
        return (lo + (hi - lo) * ch.hash_uniform(w.seed, tag, w.uid)).tobytes()

    w = make_world(vehicle_bandwidth_hz=[50e6, 80e6], vehicle_compute_flops=[5e9, 10e9])
    for t in range(1, 30):
        ids = [f"v{k}" for k in range(max(0, t - 6), t, 1 + t % 2)] + ([f"x{t}", "v0"] if t % 7 == 0 else [])
        w.update(snap(float(t), ids, np.linspace(0.0, 900.0, len(ids))))
        assert w.bandwidth_hz.tobytes() == fresh(w, ch.VEH_BW, 50e6, 80e6)
        if t % 3:  # not asked every slot: the draws of vehicles that came meanwhile are made later
            assert w.compute_flops.tobytes() == fresh(w, ch.VEH_CPU, 5e9, 10e9)
        if t % 4 == 1:  # a layer's own range of the same stream
            assert w.vehicle_draw(ch.VEH_CPU, 0.5e12, 1e12).tobytes() == fresh(w, ch.VEH_CPU, 0.5e12, 1e12)
    w.update(Snapshot.empty(40.0))
    assert w.bandwidth_hz.shape == (0,) and w.bandwidth_hz.dtype == np.float64
