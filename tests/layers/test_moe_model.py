"""The torch MoE layer: physical gating and expert-parallel execution across vehicles."""

import torch

from cosim.layers.moe.model import MoELayer, expert_parallel, place, route_from_logits


def test_physical_gating_reweights_and_masks_by_hand():
    # one token, 3 experts with logits ln 1, ln 2, ln 3 -> softmax 1/6, 2/6, 3/6
    logits = torch.log(torch.tensor([[1.0, 2.0, 3.0]]))
    idx, w = route_from_logits(logits, 2)
    assert idx.tolist() == [[2, 1]] and torch.allclose(w, torch.tensor([[0.6, 0.4]]))
    # quality 1, 1, 0.25: scores 1/6, 2/6, 0.75/6 -> experts 1 and 0, weights 2/3 and 1/3
    idx, w = route_from_logits(logits, 2, torch.tensor([1.0, 1.0, 0.25]))
    assert idx.tolist() == [[1, 0]] and torch.allclose(w, torch.tensor([[2 / 3, 1 / 3]]))
    # expert 1 unreachable (quality 0): never chosen; with only one expert left, it takes all
    idx, w = route_from_logits(logits, 2, torch.tensor([0.0, 0.0, 1.0]))
    assert idx[0, 0] == 2 and torch.allclose(w, torch.tensor([[1.0, 0.0]]))


def test_expert_parallel_equals_the_monolithic_layer():
    torch.manual_seed(0)
    layer = MoELayer(dim=32, ffn=64, experts=8, top_k=2).eval()
    x = torch.randn(50, 32)
    quality = torch.tensor([1.0, 0.9, 0.0, 0.5, 1.0, 0.7, 0.0, 0.3])  # experts 2 and 6 unreachable
    hosts_of = ["iv-a", "iv-a", None, "iv-b", "iv-c", "iv-b", None, "iv-c"]
    hosts = place(layer, hosts_of)
    with torch.no_grad():
        mono = layer(x, quality)
        dist = expert_parallel(layer, x, hosts, hosts_of, quality)
    assert torch.equal(mono, dist)
    idx, w = layer.route(x, quality)
    assert not ((idx == 2) | (idx == 6))[w > 0].any()  # masked experts got no tokens
    # every routed (token, expert) pair crossed a link exactly once: tokens and bytes add up
    routed = int((w > 0).sum())
    assert sum(h.tokens for h in hosts.values()) == routed
    for h in hosts.values():
        # payload 32 floats x 4 bytes per token each way, plus serialisation overhead
        assert h.bytes_in >= h.tokens * 32 * 4 and h.bytes_out >= h.tokens * 32 * 4
        assert h.bytes_in < h.tokens * 32 * 4 + 4096


def test_plain_gating_matches_ordinary_top_k():
    torch.manual_seed(1)
    layer = MoELayer(dim=16, ffn=32, experts=4, top_k=1).eval()
    x = torch.randn(10, 16)
    idx, w = layer.route(x)
    assert torch.equal(idx[:, 0], layer.gate(x).argmax(dim=-1)) and torch.all(w == 1.0)
