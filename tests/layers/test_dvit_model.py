"""Eq. (5) against torch's own FLOP counter on a real DiT of the same shape."""

import pytest
import torch

from cosim.layers.dvit.costmodel import DViTShape
from cosim.layers.dvit.model import DiT, model_flops


@pytest.mark.parametrize("shape", [
    DViTShape(),  # Sec. IV: 512x512, P = 16, d = 512, L = 6, 8 heads, d_f = 2048 (counted on the meta device)
    DViTShape(image_hw=64, patch=8, dim=64, layers=2, heads=4, mlp_dim=256),
])
def test_eq5_equals_flop_counter_on_the_encoder_blocks(shape):
    f = model_flops(shape)
    assert f["encoder_blocks"] == shape.layers * shape.flops_per_layer()  # exactly, multiply-add = 2 FLOPs
    # what eq. (5) leaves out, by hand: patch embedding 2 n (P^2 C) d, reconstruction 2 n' d (P^2 C),
    # and the time token's d x d linear layer
    n, c = shape.tokens - 1, 3
    assert f["patch_embed"] == 2 * n * shape.patch ** 2 * c * shape.dim
    assert f["reconstruct"] == 2 * shape.tokens * shape.dim * shape.patch ** 2 * c
    assert f["time_embed"] == 2 * shape.dim * shape.dim
    assert f["total"] == f["encoder_blocks"] + f["patch_embed"] + f["reconstruct"] + f["time_embed"]


def test_paper_shape_overhead_outside_eq5_is_about_3_percent():
    f = model_flops(DViTShape())
    assert f["total"] / f["encoder_blocks"] - 1 == pytest.approx(0.0312, abs=5e-4)


def test_model_runs_and_keeps_the_image_shape():
    torch.manual_seed(0)
    s = DViTShape(image_hw=32, patch=8, dim=32, layers=1, heads=4, mlp_dim=64)
    m = DiT(s)
    x = torch.randn(2, 3, 32, 32)
    out = m(x, torch.tensor([10, 500]), torch.zeros(2, 32))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(m.unpatchify(m.patchify(x)), x)  # patch round trip is exact
