import pytest

from cosim.layers.dvit.costmodel import PRESETS, DViTShape, mm1_wait_s


def test_eq5_sec4_defaults_by_hand():
    s = DViTShape()
    assert s.tokens == 1025 and s.head_dim == 64
    d, n = 512, 1025
    by_hand = 6 * d * n * 512 + 4 * n * n * 512 + 2 * d * n * 512 + 4 * d * n * 2048
    assert s.flops_per_layer() == by_hand
    assert s.flops_per_layer() == pytest.approx(8.60e9, rel=1e-3)  # DESIGN.md: D ~ 8.60 GFLOP
    assert s.flops_per_step() == pytest.approx(51.6e9, rel=1e-3)  # L D with L = 6
    assert s.handoff_bits() == 1025 * 512 * 32  # ~16.8 Mbit
    assert s.handoff_bits() == pytest.approx(16.8e6, rel=1e-3)


def test_paper_literal_preset_cannot_meet_tmax():
    lit = PRESETS["paper-literal"]
    step = lit.shape.flops_per_step()
    assert step / lit.vehicle_compute_flops[1] > lit.t_max_s * 6  # >= 5.2 s on the fastest vehicle
    assert step / lit.rsu_compute_flops[1] > lit.t_max_s * 3  # >= 2.6 s on the fastest RSU
    cal = PRESETS["calibrated"]
    assert step / cal.vehicle_compute_flops[0] < cal.t_max_s / 7  # 103 ms on the slowest vehicle


def test_mm1_queue_by_hand():
    assert mm1_wait_s(2.0, 20.0) == pytest.approx(2 / (20 * 18))  # 5.56 ms
    assert mm1_wait_s(0.0, 5.0) == 0.0
    assert mm1_wait_s(5.0, 5.0) == float("inf")
    with pytest.raises(ValueError):
        mm1_wait_s(1.0, 0.0)
