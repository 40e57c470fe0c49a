"""Execution mode: the distributed run equals a single-device run; the local prompt stays local."""

import torch

from cosim.layers.dvit.costmodel import DViTShape
from cosim.layers.dvit.execute import execute_plan, execute_single, serialise
from cosim.layers.dvit.model import DiT

SHAPE = DViTShape(image_hw=32, patch=8, dim=32, layers=2, heads=4, mlp_dim=64)


def setup():
    torch.manual_seed(0)
    model = DiT(SHAPE).eval()
    public = torch.randn(1, SHAPE.dim)
    local = torch.randn(1, SHAPE.dim)
    return model, public, local


def test_distributed_equals_single_device_bit_for_bit():
    model, public, local = setup()
    plan = ["@rsu"] * 4 + ["h1"] * 3 + ["h2"] * 2 + ["u"] * 3
    dist = execute_plan(model, plan, "u", public, local, seed=7)
    ref = execute_single(model, plan, "u", public, local, seed=7)
    assert torch.equal(dist.image, ref)
    assert [(a, b) for a, b, _ in dist.handoffs] == [("@rsu", "h1"), ("h1", "h2"), ("h2", "u")]
    # a different seed or a different split of public/local steps gives another image
    assert not torch.equal(ref, execute_single(model, plan, "u", public, local, seed=8))
    assert not torch.equal(ref, execute_single(model, ["@rsu"] * 10 + ["u"] * 2, "u", public, local, seed=7))


def test_local_prompt_never_leaves_the_user():
    model, public, local = setup()
    plan = ["@rsu"] * 3 + ["h1"] * 3 + ["u"] * 2
    res = execute_plan(model, plan, "u", public, local, seed=1)
    for name, dev in res.devices.items():
        for payload in dev.received:
            assert set(payload) == {"latent", "step"}  # nothing but the intermediate result
            assert not any(torch.equal(v, local) for v in payload.values() if v.shape == local.shape)
        if name != "u":
            assert dev.local_cond is None and set(dev.conds_used) <= {"public"}
    assert res.devices["u"].conds_used == ["local", "local"]


def test_handoff_bytes_measured_against_n_prime_mu():
    model, public, local = setup()
    res = execute_plan(model, ["@rsu", "h", "u"], "u", public, local, seed=1)
    latent_bytes = 3 * SHAPE.image_hw ** 2 * 4  # the latent image, float32
    for _, _, nbytes in res.handoffs:
        assert latent_bytes < nbytes < latent_bytes + 2000  # plus torch.save's framing
    # eq. (4) counts n' tokens of mu bits: here 17 x 32 x 32 bit = 2176 B, the latent is 12288 B
    assert SHAPE.handoff_bits() / 8 == 17 * 32 * 4
    assert len(serialise(torch.zeros(1, 3, 32, 32), 0)) == res.handoffs[0][2]
