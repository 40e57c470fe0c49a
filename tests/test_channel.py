import math

import numpy as np
import pytest

from cosim.world import channel as ch


def test_path_gain_v2i_by_hand():
    # 3GPP UMa: PL(500 m) = 128.1 + 37.6 log10(0.5) = 128.1 - 11.3187 = 116.7813 dB
    pl = 128.1 + 37.6 * math.log10(0.5)
    assert pl == pytest.approx(116.7813, abs=1e-4)
    g = ch.path_gain(500.0, 128.1, 3.76, 1000.0)
    assert float(g) == pytest.approx(10 ** (-pl / 10), rel=1e-12)


def test_path_gain_clips_short_distances():
    assert float(ch.path_gain(0.0, 63.3, 1.77, 1.0, min_m=1.0)) == pytest.approx(10 ** (-6.33))


def test_shannon_rate_by_hand():
    # w = 100 MHz, p = 30 dBm = 1000 mW, PL = 116.7813 dB, noise -100 dBm = 1e-10 mW, no interference:
    # SNR = 1000 * 10^-11.67813 / 1e-10 = 10^1.32187 = 20.983 -> log2(21.983) = 4.4583 bit/s/Hz -> 445.83 Mbit/s
    g = 10 ** (-(128.1 + 37.6 * math.log10(0.5)) / 10)
    snr = 1000 * g / 1e-10
    assert snr == pytest.approx(20.983, rel=1e-4)
    rate = ch.shannon_rate(100e6, ch.dbm_to_mw(30), g, ch.dbm_to_mw(-100))
    assert float(rate) == pytest.approx(100e6 * math.log2(1 + snr), rel=1e-12)
    assert float(rate) == pytest.approx(445.83e6, rel=1e-4)
    # interference equal to the noise halves the SINR
    r2 = ch.shannon_rate(100e6, 1000.0, g, 1e-10, 1e-10)
    assert float(r2) == pytest.approx(100e6 * math.log2(1 + snr / 2), rel=1e-12)


def test_hash_uniform_is_uniform_and_order_independent():
    keys = np.arange(100_000, dtype=np.uint64)
    u = ch.hash_uniform(7, 3, keys, 1)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert u.mean() == pytest.approx(0.5, abs=0.005)
    assert u.var() == pytest.approx(1 / 12, abs=0.002)
    # the same (key) gives the same number whatever else is drawn alongside, in any order
    perm = np.random.default_rng(0).permutation(keys)
    np.testing.assert_array_equal(ch.hash_uniform(7, 3, perm, 1), u[perm])
    assert ch.hash_uniform(7, 3, np.uint64(12345), 1) == u[12345]
    # other seed or slot -> other numbers (uncorrelated)
    assert abs(np.corrcoef(u, ch.hash_uniform(8, 3, keys, 1))[0, 1]) < 0.02
    assert abs(np.corrcoef(u, ch.hash_uniform(7, 4, keys, 1))[0, 1]) < 0.02


def test_rayleigh_power_has_unit_mean_exponential_law():
    h = ch.rayleigh_power(ch.hash_uniform(1, np.arange(200_000), 2))
    assert h.mean() == pytest.approx(1.0, abs=0.01)
    # P(|g|^2 > 1) = e^-1 for Exp(1)
    assert (h > 1).mean() == pytest.approx(math.exp(-1), abs=0.005)


def test_stable_uid_is_deterministic_and_distinct():
    assert ch.stable_uid("veh0") == ch.stable_uid("veh0")
    ids = {ch.stable_uid(f"v{i}") for i in range(10_000)}
    assert len(ids) == 10_000
    assert all(0 <= i < 2**63 for i in ids)


def test_scalar_folding_matches_the_array_path():
    # folding leading scalar keys in Python must give the same numbers as mixing them as arrays
    keys = np.arange(50, dtype=np.uint64)
    folded = ch.hash_uniform(3, 9, 2, keys)
    as_arrays = ch.hash_uniform(np.full(50, 3), np.full(50, 9), np.full(50, 2), keys)
    np.testing.assert_array_equal(folded, as_arrays)
    assert float(ch.hash_uniform(3, 9, 2, 17)) == folded[17]


def test_pair_rate_matches_the_array_path():
    import numpy as np

    from cosim.config import from_dict
    from cosim.sources.base import Snapshot
    from cosim.world.network import NetInfo
    from cosim.world.world import World

    cfg = from_dict({"scenario": {"sumocfg": "/dev/null", "seed": 5}}, "t.toml")
    w = World(cfg, NetInfo("mem", {"e": 5000.0}, np.array([[0.0, 0.0]]), (0.0, 0.0, 5000.0, 0.0)))
    rng = np.random.default_rng(0)
    n = 40
    xs, ys = rng.uniform(0, 600, n), rng.uniform(0, 600, n)
    w.update(Snapshot(1.0, np.array([f"v{k}" for k in range(n)], dtype=object), xs, ys, np.zeros(n), np.zeros(n),
                      np.zeros(n), np.array(["e"] * n, dtype=object), np.array(["e_0"] * n, dtype=object), xs,
                      np.full(n, 5.0)), slot=7)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    arr = w.v2v_rate_bps(i.ravel(), j.ravel())
    pair = np.array([w.v2v_rate_pair(a, b) for a, b in zip(i.ravel(), j.ravel())])
    assert (arr > 0).sum() > 100 and ((arr == 0) == (pair == 0)).all()
    np.testing.assert_allclose(pair, arr, rtol=1e-12)


def test_hash_uniform_rows_are_the_per_tag_draws_bit_for_bit():
    """One (tags, N) call draws what one hash_uniform call per tag draws (the world's uplink and
    downlink fading each slot), checked against the pure-Python hash too."""
    rng = np.random.default_rng(3)
    uid = rng.integers(0, 2**63, 257, dtype=np.uint64)
    srv = rng.integers(-1, 40, 257)  # int64, with -1 (wraps to 2^64 - 1 as in hash_uniform)
    got = ch.hash_uniform_rows((42, 17), (ch.V2I, ch.I2V, ch.V2V), uid, srv)
    assert got.shape == (3, 257) and got.dtype == np.float64
    for row, tag in zip(got, (ch.V2I, ch.I2V, ch.V2V)):
        assert row.tobytes() == ch.hash_uniform(42, 17, tag, uid, srv).tobytes()
    for i in (0, 5, 256):
        want = ch.hash_uniform_int(42, 17, int(ch.I2V), int(uid[i]), int(srv[i]) & (2**64 - 1))
        assert got[1, i] == want
    assert ch.hash_uniform_rows((1, 2), (ch.V2I, ch.I2V), np.zeros(0, np.uint64), np.zeros(0, int)).shape == (2, 0)
