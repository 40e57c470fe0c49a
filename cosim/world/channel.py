"""Radio channel (TVT paper eq. 3) and order-independent seeded randomness.

    B = w * log2(1 + p * h / (sigma^2 + xi))            [bit/s]

``h`` = path gain(distance) x |g|^2, with |g|^2 ~ Exp(1) (Rayleigh block fading) drawn anew
every slot. Path loss is log-distance, ``PL(d) = ref_db + 10 n log10(d / d_ref)``:

* V2I/I2V: 128.1 + 37.6 log10(d / 1 km) (3GPP TR 36.814 urban macro);
* V2V:     63.3 + 17.7 log10(d / 1 m)   (3GPP TR 36.885 highway/urban LOS).

Interference xi (ours, the paper leaves it open): the mean power received from every other RSU
(no fading), for both directions (a reciprocity approximation of uplink interference). V2V links
are taken to use a dedicated sidelink band without interference.

Random numbers come from a counter-based hash (splitmix64) of (seed, slot, link ends, stream),
so a draw does not depend on which other draws were made or in which order: two policies that
look at the same link in the same slot see the same fading, and a replay sees what the live run
saw.
"""

from __future__ import annotations

import hashlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

# stream tags
V2I, I2V, V2V, VEH_BW, VEH_CPU, RSU_BW, RSU_CPU, VEH_PREF, VEH_MEM, VEH_ENERGY = (np.uint64(k) for k in range(1, 11))


_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


def _mix_into(z: np.ndarray, tmp: np.ndarray) -> None:
    """splitmix64 finaliser of uint64 array ``z``, in place (``tmp``: scratch of its shape);
    ~1.5x faster than the same operations making new arrays (integer arrays wrap silently)."""
    np.add(z, _GOLDEN, out=z)
    np.bitwise_xor(z, np.right_shift(z, _S30, out=tmp), out=z)
    np.multiply(z, _M1, out=z)
    np.bitwise_xor(z, np.right_shift(z, _S27, out=tmp), out=z)
    np.multiply(z, _M2, out=z)
    np.bitwise_xor(z, np.right_shift(z, _S31, out=tmp), out=z)


_MASK = (1 << 64) - 1


def _mix_int(z: int) -> int:
    """splitmix64 finaliser on a Python int (same function as :func:`_mix_into`)."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def hash_uniform(*keys) -> np.ndarray:
    """Uniform [0, 1) numbers, one per broadcast element of the integer ``keys``.

    h = mix(... mix(mix(0 ^ k1) ^ k2) ... ^ kn); leading scalar keys are folded in Python, so
    put scalars (seed, slot, stream tag) first and arrays last for speed.
    """
    i = 0
    while i < len(keys) and np.ndim(keys[i]) == 0:
        i += 1
    h0 = _fold(keys[:i])
    rest = keys[i:]
    if not rest:
        h = np.asarray(h0, dtype=np.uint64)
    else:
        arrays = np.broadcast_arrays(*(np.asarray(k).astype(np.uint64, copy=False) for k in rest))
        h = np.full(arrays[0].shape, h0, dtype=np.uint64)
        tmp = np.empty_like(h)
        for k in arrays:
            np.bitwise_xor(h, k, out=h)
            _mix_into(h, tmp)
    return (h >> _S11).astype(np.float64) * (1.0 / 9007199254740992.0)


def hash_uniform_rows(keys: tuple, tags, *arrays) -> np.ndarray:
    """:func:`hash_uniform` ``(*keys, tag, *arrays)`` for every stream tag in ``tags``, as the rows
    of one ``(len(tags), N)`` array: the same numbers, with one set of array operations for all
    the tags instead of one per tag (the world draws the uplink's and the downlink's fading of
    every vehicle each slot). ``keys``: scalars; ``arrays``: 1-D, each of length N."""
    heads = np.array([[_fold((*keys, t))] for t in tags], dtype=np.uint64)
    arrays = [np.asarray(k).astype(np.uint64, copy=False) for k in arrays]
    h = np.empty((len(heads), len(arrays[0]) if arrays else 1), dtype=np.uint64)
    h[:] = heads
    tmp = np.empty_like(h)
    for k in arrays:
        np.bitwise_xor(h, k, out=h)
        _mix_into(h, tmp)
    return (h >> _S11).astype(np.float64) * (1.0 / 9007199254740992.0)


def _fold(keys) -> int:
    """mix(... mix(mix(0 ^ k1) ^ k2) ... ^ kn) of scalar keys, on Python ints."""
    h = 0
    for k in keys:
        h = _mix_int(h ^ (int(k) & _MASK))
    return h


def hash_uniform_int(*keys: int) -> float:
    """:func:`hash_uniform` of scalar keys, in pure Python (a few microseconds, no arrays)."""
    return (_fold(keys) >> 11) * (1.0 / 9007199254740992.0)


def stable_uid(name: str) -> int:
    """A 63-bit integer that names a vehicle across runs, backends and replays."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") >> 1


def dbm_to_mw(dbm):
    return 10.0 ** (np.asarray(dbm, dtype=float) / 10.0)


def path_gain(d_m, ref_db: float, exponent: float, ref_m: float, min_m: float = 1.0) -> np.ndarray:
    """Linear gain 10^(-PL/10) of the log-distance model; distance clipped at ``min_m``."""
    d = np.maximum(np.asarray(d_m, dtype=float), min_m)
    pl_db = ref_db + 10.0 * exponent * np.log10(d / ref_m)
    return 10.0 ** (-pl_db / 10.0)


def rayleigh_power(u: np.ndarray) -> np.ndarray:
    """|g|^2 ~ Exp(1) from uniforms (inverse CDF)."""
    return -np.log1p(-u)


def shannon_rate(bandwidth_hz, p_mw, gain, noise_mw, interference_mw=0.0) -> np.ndarray:
    """Eq. (3): w log2(1 + p h / (sigma^2 + xi)) [bit/s]."""
    sinr = np.asarray(p_mw) * np.asarray(gain) / (noise_mw + np.asarray(interference_mw))
    return np.asarray(bandwidth_hz) * np.log2(1.0 + sinr)
