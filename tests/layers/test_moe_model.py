"""The torch MoE layer: physical gating and expert-parallel execution across vehicles."""

import warnings

import pytest
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


def test_the_gate_model_routes_real_text_and_physical_gating_changes_the_later_layers():
    from cosim.layers.moe.model import GateModel, Vocabulary

    vocab = Vocabulary()
    ids = vocab.encode("Find a charging station near the exit.")
    assert [vocab.words[i] for i in ids] == ["find", "a", "charging", "station", "near", "the", "exit", "."]
    assert vocab.encode("zebra")[0] == 0  # not in the corpus: <unk>
    model = GateModel(len(vocab), 32, 64, layers=3, experts=4, top_k=2, seed=0)
    prompt = vocab.prompt(64, torch.Generator().manual_seed(5))
    assert len(prompt) == 64 and torch.equal(prompt, vocab.prompt(64, torch.Generator().manual_seed(5)))
    load = model.load(prompt)
    assert load.sum(dim=1).tolist() == [128, 128, 128]  # top-2 of 64 tokens per layer
    # layer 0 by hand: embedding + positions, attention, then the gate's top-2 on the normed state
    block = model.blocks[0]
    x = model.embed(prompt) + model.positions(64)
    q, k, v = block.qkv(block.norm1(x)).chunk(3, dim=-1)
    x = x + block.out(torch.nn.functional.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True)[0])
    idx, _ = route_from_logits(block.moe.gate(block.norm2(x)), 2)
    assert torch.equal(load[0], torch.bincount(idx.flatten(), minlength=4))
    # which experts are picked follows from the text: different texts load the experts differently
    other = model.load(vocab.prompt(64, torch.Generator().manual_seed(6)))
    assert not torch.equal(load, other)
    # an expert masked in layer 0 gets nothing there, and the changed outputs reach layers 1 and 2
    quality = torch.ones(3, 4)
    quality[0, int(load[0].argmax())] = 0.0
    masked = model.load(prompt, quality)
    assert masked[0, int(load[0].argmax())] == 0 and masked[0].sum() == 128
    assert not torch.equal(masked[1:], load[1:])
    # built from its seed alone: the same model whatever torch's global state
    torch.manual_seed(123)
    assert torch.equal(GateModel(len(vocab), 32, 64, 3, 4, 2, seed=0).load(prompt), load)


def test_the_gate_memo_reuses_shared_prefixes_and_gives_the_same_routing_bit_for_bit():
    from cosim.layers.moe.model import GateModel, Vocabulary

    vocab = Vocabulary()
    model = GateModel(len(vocab), 32, 64, layers=4, experts=4, top_k=2, seed=0)
    prompt = vocab.prompt(64, torch.Generator().manual_seed(5))
    attended, finished = [], []
    for i, block in enumerate(model.blocks):  # record which blocks run their attention, and their gate + experts
        block.attend = lambda x, f=block.attend, i=i: (attended.append(i), f(x))[1]
        block.finish = lambda *a, f=block.finish, i=i, **k: (finished.append(i), f(*a, **k))[1]
    base = torch.rand(4, 4, generator=torch.Generator().manual_seed(1))
    later = base.clone()
    later[2, 1] = 0.0  # differs from layer 2 on (a reroute before layer 2)
    first = base.clone()
    first[0, 3] = 0.0  # differs from layer 0 on (another placement)
    memo: dict = {}
    # block l's output is remembered under the quality of layers 0..l, its attention under 0..l-1
    # (its input): a routing that differs from layer l on runs the attention from l + 1 on only
    for q, blocks, attentions in ((base, [0, 1, 2, 3], [0, 1, 2, 3]), (base, [], []), (later, [2, 3], [3]),
                                  (first, [0, 1, 2, 3], [1, 2, 3]), (later, [], [])):
        attended.clear()
        finished.clear()
        got = model.load(prompt, q, memo)
        assert finished == blocks and attended == attentions
        attended.clear()
        assert torch.equal(got, model.load(prompt, q))  # the same as without the memo
        assert attended == [0, 1, 2, 3]  # (which runs every block)
    assert model.load(prompt, later, memo)[2, 1] == 0


def _route_before(logits, top_k, quality):  # noqa: ANN001, ANN202
    """route_from_logits as it was written before issue 32 (full/ones/zeros tensors as fills)."""
    scores = torch.softmax(logits, dim=-1)
    if quality is not None:
        q = quality.to(scores.dtype)
        scores = torch.where(q > 0, scores * q, torch.full_like(scores, -1.0))
    top, idx = torch.topk(scores, top_k, dim=-1)
    top = top.clamp_min(0.0)
    total = top.sum(dim=-1, keepdim=True)
    weights = torch.where(total > 0, top / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(top))
    return idx, weights


def _mask_loop(layer, x, quality):  # noqa: ANN001, ANN202
    """The layer's forward as it was written before issue 32: one mask per expert, gradients on."""
    idx, w = _route_before(layer.gate(x), layer.top_k, quality)
    out = torch.zeros_like(x)
    for e, expert in enumerate(layer.experts):
        tok, slot = (idx == e).nonzero(as_tuple=True)
        keep = w[tok, slot] > 0
        tok, slot = tok[keep], slot[keep]
        if len(tok):
            out.index_add_(0, tok, w[tok, slot, None] * expert(x[tok]))
    return out, idx, w


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_the_grouped_experts_and_inference_mode_give_the_mask_loop_bit_for_bit_on_real_prompts(top_k):
    # the layer's own model (width 64, 8 blocks of 8 experts, 256 tokens; top-1, the default
    # top-2, top-3) on corpus prompts; each block's input is the reference's, and every block's
    # output must have the same bytes
    from cosim.layers.moe.model import GateModel, Vocabulary

    torch.set_num_threads(1)  # as the layer runs it
    vocab = Vocabulary()
    model = GateModel(len(vocab), 64, 128, layers=8, experts=8, top_k=top_k, seed=0)
    gen = torch.Generator().manual_seed(3)
    checked = 0
    for seed in range(3):
        prompt = vocab.prompt(256, torch.Generator().manual_seed(seed))
        sparse = torch.zeros(8, 8)  # one reachable expert per layer (the other slots' weight 0), none in layer 5
        sparse[torch.arange(8), torch.randint(8, (8,), generator=gen)] = 0.5
        sparse[5] = 0.0
        for q in (torch.ones(8, 8), torch.rand(8, 8, generator=gen) * (torch.rand(8, 8, generator=gen) > 0.3), sparse):
            x = model.embed(prompt).detach() + model.positions(256)
            counts = []
            for layer, block in enumerate(model.blocks):
                h = x
                a, b, c = block.qkv(block.norm1(h)).chunk(3, dim=-1)
                h = h + block.out(torch.nn.functional.scaled_dot_product_attention(a[None], b[None], c[None],
                                                                                  is_causal=True)[0])
                y, idx, w = _mask_loop(block.moe, block.norm2(h), q[layer])
                want = (h + y).detach()
                with torch.inference_mode():
                    got, idx2, w2 = block(x, q[layer])
                assert got.numpy().tobytes() == want.numpy().tobytes()
                assert torch.equal(idx2, idx) and w2.numpy().tobytes() == w.detach().numpy().tobytes()
                checked += (w > 0).sum().item()
                counts.append(torch.bincount(idx[w > 0], minlength=8))
                x = want
            # and the whole pass: the counts the reference's routings give
            assert torch.equal(model.load(prompt, q), torch.stack(counts))
    # thousands of routed (token, expert) pairs, masked experts included (all-ones alone: 3 x 8 x 256 x k)
    assert checked > 3 * 8 * 256 * top_k


def test_masked_attention_with_the_causal_mask_is_torchs_causal_attention_bit_for_bit():
    # what the block runs (attend_block: masked_attention with _causal_mask), compiled and not
    from cosim.layers.moe import model as gm

    with warnings.catch_warnings():  # torch.jit.script is deprecated (as in _kernels)
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(gm.masked_attention)
    gen = torch.Generator().manual_seed(7)
    for T, d in ((1, 8), (7, 16), (64, 32), (256, 64), (300, 64)):
        q, k, v = (torch.randn(T, d, generator=gen) * 3 for _ in range(3))
        want = torch.nn.functional.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True)[0]
        got = gm.masked_attention(q, k, v, gm._causal_mask(T, q.device))
        assert scripted(q, k, v, gm._causal_mask(T, q.device)).numpy().tobytes() == want.numpy().tobytes(), (T, d)
        assert got.numpy().tobytes() == want.numpy().tobytes(), (T, d)
        assert torch.allclose(got[0], v[0])  # the first token sees only itself


def test_the_split_attention_is_torchs_causal_attention_bit_for_bit_for_every_T_it_runs():
    # issue 32, fifth pass: masked_attention(..., split) computes rows 0..split-1 against keys
    # 0..split-1 only; _split_rows picks the split it runs (checked against the square on its own
    # four inputs). Here, on other inputs: every T from 1 to 300 and some longer prompts, q, k, v
    # as the block's views of one (T, 3d) product at scales 0.01 to 100 (many for the layer's T =
    # 256), against torch's scaled_dot_product_attention, byte for byte, compiled and not
    from cosim.layers.moe import model as gm

    torch.set_num_threads(1)  # as the layer runs it
    with warnings.catch_warnings():  # torch.jit.script is deprecated (as in _kernels)
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(gm.masked_attention)
    cpu = torch.device("cpu")
    if torch.backends.cpu.get_cpu_capability() == "AVX512":
        # MKL 2024.2's AVX-512 path (the project's machine, AMD EPYC): the first half of the rows
        # fits its first cut of the inner dimension (up to 192 whole, 193..383 in halves), no
        # split below 128 tokens, and for 512 (cut at 192) half of 256. Its AVX2 path cuts
        # elsewhere (under valgrind, which hides AVX-512: split 64 for 256 tokens)
        assert [gm._split_rows(T, 64, cpu, 1) for T in (64, 127, 128, 200, 256, 300, 512)] == [0, 0, 64, 96, 128,
                                                                                               144, 128]
    gen = torch.Generator().manual_seed(11)
    split_runs = 0
    with torch.inference_mode():
        for T in [*range(1, 301), 384, 512, 1000]:
            split = gm._split_rows(T, 64, cpu, 1)
            assert split == 0 or (split % 16 == 0 and 64 <= split <= T // 2)
            mask = gm._causal_mask(T, cpu)
            scales = (0.01, 0.3, 1.0, 3.0, 30.0, 100.0) * (8 if T == 256 else 1)
            for scale in scales if split else ():
                q, k, v = (torch.randn(T, 3 * 64, generator=gen) * scale).chunk(3, dim=-1)
                want = torch.nn.functional.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True)[0]
                got = gm.masked_attention(q, k, v, mask, split)
                assert got.numpy().tobytes() == want.numpy().tobytes(), (T, split, scale)
                assert scripted(q, k, v, mask, split).numpy().tobytes() == want.numpy().tobytes(), (T, split, scale)
                split_runs += 1
    if torch.backends.cpu.get_cpu_capability() == "AVX512":
        assert split_runs == 6 * (300 - 127 + 3 + 7)  # every T from 128 on was split
    assert split_runs > 0


def test_split_rows_keeps_the_square_where_one_byte_differs(monkeypatch):
    # the check behind the split: masked_attention's split result with one value moved by one
    # unit in the last place (as a BLAS that cuts the sum elsewhere would give) -> no split
    from cosim.layers.moe import model as gm

    real = gm.masked_attention

    def off_by_one_ulp(q, k, v, mask, split=0):  # noqa: ANN001, ANN202
        out = real(q, k, v, mask, split)
        if split:
            out.view(torch.int32)[split + 3, 5] += 1  # a row of the second half
        return out

    cpu = torch.device("cpu")
    assert gm._split_rows.__wrapped__(256, 64, cpu, 1) > 0
    monkeypatch.setattr(gm, "masked_attention", off_by_one_ulp)
    assert gm._split_rows.__wrapped__(256, 64, cpu, 1) == 0


def test_keep_freed_memory_stops_the_gates_page_faults_and_changes_no_value():
    # glibc serves the blocks' 256 KB buffers with fresh pages unless told to keep freed memory:
    # 4 routings with a fresh memo each (as 4 tasks) took ~2,400 minor page faults before; after
    # keep_freed_memory() the freed buffers are reused (~130, the memos' own growth)
    import resource
    import sys

    from cosim.layers.moe.model import GateModel, Vocabulary, keep_freed_memory

    torch.set_num_threads(1)
    vocab = Vocabulary()
    model = GateModel(len(vocab), 64, 128, layers=8, experts=8, top_k=2, seed=0)
    gen = torch.Generator().manual_seed(2)
    cases = [(vocab.prompt(256, torch.Generator().manual_seed(s)), torch.rand(8, 8, generator=gen)) for s in range(4)]
    before = [model.load(p, q, {}) for p, q in cases]
    if not keep_freed_memory():
        pytest.skip(f"no glibc mallopt here ({sys.platform})")
    [model.load(p, q, {}) for p, q in cases]  # the heap grows once
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    after = [model.load(p, q, {}) for p, q in cases]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults < 600
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_the_torchscript_block_runs_the_python_functions_bit_for_bit():
    # issue 32, third pass: the block's functions compiled by TorchScript (the same aten calls, its
    # interpreter between them) give the bytes of the same functions run by Python, every block
    # of real prompts, plain, masked and one-expert qualities, full and routing-only
    from cosim.layers.moe import model as gm

    torch.set_num_threads(1)
    scripted, python = gm._kernels(True), gm._kernels(False)
    assert scripted.scripted and not python.scripted  # TorchScript works with this torch
    assert isinstance(scripted.finish, torch.jit.ScriptFunction)
    vocab = gm.Vocabulary()
    model = gm.GateModel(len(vocab), 64, 128, layers=8, experts=8, top_k=2, seed=0)
    gen = torch.Generator().manual_seed(4)
    one = torch.zeros(8, 8)
    one[torch.arange(8), torch.randint(8, (8,), generator=gen)] = 0.7
    split = gm._split_rows(256, 64, torch.device("cpu"), 1)
    assert split > 0  # what the blocks run (128 here: test_the_split_attention_...)
    with torch.inference_mode():
        for seed in range(2):
            prompt = vocab.prompt(256, torch.Generator().manual_seed(10 + seed))
            for q in (None, torch.rand(8, 8, generator=gen) * (torch.rand(8, 8, generator=gen) > 0.3), one):
                x = model.embed(prompt) + model.positions(256)
                for layer, b in enumerate(model.blocks):
                    n1, n2 = b.norm1, b.norm2
                    args = (x, n1.weight, n1.bias, n2.weight, n2.bias, n1.eps, b.qkv.weight, b.out.weight,
                            b.moe.gate.weight, gm._causal_mask(256, x.device), split)
                    a_s, a_p = scripted.attend(*args), python.attend(*args)
                    assert all(s.numpy().tobytes() == p.numpy().tobytes() for s, p in zip(a_s, a_p))
                    square = scripted.attend(*args[:-1], 0)  # and the whole square (fifth pass): the same bytes
                    assert all(s.numpy().tobytes() == p.numpy().tobytes() for s, p in zip(a_s, square))
                    ql = None if q is None else q[layer]
                    for route_only in (True, False):
                        f_s = scripted.finish(*a_s, ql, 2, route_only, *b.moe.weights())
                        f_p = python.finish(*a_p, ql, 2, route_only, *b.moe.weights())
                        assert all(s.numpy().tobytes() == p.numpy().tobytes() for s, p in zip(f_s, f_p))
                    # the loads a block reports are its kept (token, expert) pairs counted
                    assert torch.equal(f_s[3], torch.bincount(f_s[1][f_s[2] > 0], minlength=8))
                    x = f_s[0]


def test_the_experts_weights_are_kept_and_collected_afresh_after_a_move():
    """MoELayer.weights (issue 32, fourth pass) keeps the lists of the experts' parameters: the
    very tensors the modules hold, in expert order; an in-place edit reaches them (the same
    tensors), and ``.to()`` (which may replace them: here a dtype change does) makes it collect
    them again, so the combine runs on the new ones."""
    torch.manual_seed(0)
    layer = MoELayer(dim=8, ffn=16, experts=3, top_k=2).eval()
    kept = layer.weights()
    assert layer.weights() is kept
    ups, downs = [e.up for e in layer.experts], [e.down for e in layer.experts]
    want = [m.weight for m in ups], [m.bias for m in ups], [m.weight for m in downs], [m.bias for m in downs]
    assert all(a is b for got, ref in zip(kept, want) for a, b in zip(got, ref))
    x = torch.randn(5, 8)
    with torch.no_grad():
        before = layer(x)
        layer.experts[1].up.bias.add_(1.0)  # in place: the kept list sees it
        assert not torch.equal(layer(x), before)
    layer.double()
    again = layer.weights()
    assert again is not kept and again[0][0].dtype == torch.float64 and again[0][0] is layer.experts[0].up.weight
    with torch.no_grad():
        assert layer(x.double()).dtype == torch.float64


def test_the_kept_weights_follow_a_state_dict_assigned_and_a_parameter_replaced():
    """load_state_dict(assign=True) replaces the experts' parameters: the kept lists are dropped
    and the layer computes what a fresh layer given that state dict computes; a parameter assigned
    to a submodule is picked up after forget_weights (review of the fourth pass)."""
    torch.manual_seed(0)
    layer = MoELayer(dim=8, ffn=16, experts=3, top_k=2).eval()
    x = torch.randn(5, 8)
    layer.weights()
    sd = {k: v.clone() + 1.0 for k, v in layer.state_dict().items()}
    layer.load_state_dict(sd, assign=True)
    assert layer.weights()[0][0] is layer.experts[0].up.weight
    fresh = MoELayer(dim=8, ffn=16, experts=3, top_k=2).eval()
    fresh.load_state_dict(sd)
    with torch.no_grad():
        assert torch.equal(layer(x), fresh(x))
        layer.experts[1].up.weight = torch.nn.Parameter(torch.zeros(16, 8))
        layer.forget_weights()
        assert layer.weights()[0][1] is layer.experts[1].up.weight
        assert not torch.equal(layer(x), fresh(x))
