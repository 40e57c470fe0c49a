#!/usr/bin/env python3
"""A compiled gate block (numba, float32) beside torch's, on the same weights and the routings of
a grid6_moe run: how fast, and how many routings differ (issue 32, third pass; a prototype, not
imported by cosim — the layer runs torch's model).

    python tools/gate_compiled_probe.py [--end 300] [--rounds 3] [--routings FILE]

The compiled block computes what :class:`cosim.layers.moe.model.Block` computes (pre-norm causal
single-head attention, the physically gated top-k softmax gate, the experts' FFNs with exact GELU)
with every output element summed in one fixed order — row by row, each product over its inner
index ascending, each row's softmax and norm left to right — so a row's value does not depend on
how many rows are computed with it (batch-invariant by construction, unlike a BLAS product whose
kernel choice depends on the shape), and the causal half of the attention is skipped (row i
reads keys 0..i only). ``exp`` and ``erf`` are our own float32 polynomials (Cody-Waite reduction
+ degree-6 polynomial; Abramowitz-Stegun 7.1.26, as torch's vectorised ``erf``), so the loops
vectorise without a vector maths library. The bits are not torch's: this measures what such a
results change would buy.

It prints, interleaved over ``--rounds``: CPU per task replaying the run's routings task by task
with a fresh memo each (torch: the layer's :meth:`GateModel.load`; compiled: the same memo logic
over the compiled block), ms a full block on a fixed prompt both ways, and over every recorded
routing without a memo: routings whose loads differ, (layer, expert) load cells that differ, and
tokens whose kept top-2 experts differ — each path on its own inputs, so differences compound
from block to block as they would in a run.
"""

from __future__ import annotations

import argparse
import math
import pickle
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

#: fused multiply-adds allowed, no reassociation: every sum in the order written
njit = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})

LN2_HI, LN2_LO, LOG2E = np.float32(0.693145751953125), np.float32(1.428606765330187e-06), np.float32(1.4426950408889634)


@njit
def vexp(x, out, bits):  # noqa: ANN001, ANN201
    """out = exp(x) elementwise, float32 (x <= 88); Cody-Waite reduction, a degree-6 polynomial
    and 2^n built from its bits (``bits``: an int32 scratch of x's size): loops LLVM vectorises."""
    n_ = x.size
    for i in range(n_):
        v = max(x[i], np.float32(-87.0))
        n = np.floor(v * LOG2E + np.float32(0.5))
        r = v - n * LN2_HI - n * LN2_LO
        p = np.float32(1.0 / 720)
        p = p * r + np.float32(1.0 / 120)
        p = p * r + np.float32(1.0 / 24)
        p = p * r + np.float32(1.0 / 6)
        p = p * r + np.float32(0.5)
        p = p * r + np.float32(1.0)
        out[i] = p * r + np.float32(1.0)
        bits[i] = (np.int32(n) + np.int32(127)) << 23
    scale = bits.view(np.float32)
    for i in range(n_):
        out[i] = out[i] * scale[i]


@njit
def layer_norm(x, w, b, eps, out):  # noqa: ANN001, ANN201
    T, D = x.shape
    for i in range(T):
        m = np.float32(0.0)
        for d in range(D):
            m += x[i, d]
        m /= np.float32(D)
        var = np.float32(0.0)
        for d in range(D):
            var += (x[i, d] - m) * (x[i, d] - m)
        inv = np.float32(1.0) / np.sqrt(var / np.float32(D) + eps)
        for d in range(D):
            out[i, d] = (x[i, d] - m) * inv * w[d] + b[d]


@njit
def rows_matmul(a, wt, out):  # noqa: ANN001, ANN201
    """out[i, :] = sum over k ascending of a[i, k] * wt[k, :] (wt: (K, N)), each row on its own
    (four rows share each load of wt[k]; a row's sums are the same whatever rows are beside it)."""
    T, K = a.shape
    N = wt.shape[1]
    out[:] = np.float32(0.0)
    i = 0
    while i + 4 <= T:
        for k in range(K):
            a0, a1, a2, a3 = a[i, k], a[i + 1, k], a[i + 2, k], a[i + 3, k]
            for j in range(N):
                wkj = wt[k, j]
                out[i, j] += a0 * wkj
                out[i + 1, j] += a1 * wkj
                out[i + 2, j] += a2 * wkj
                out[i + 3, j] += a3 * wkj
        i += 4
    for r in range(i, T):
        for k in range(K):
            ark = a[r, k]
            for j in range(N):
                out[r, j] += ark * wt[k, j]


@njit
def _softmax_row(s, e, bits, n):  # noqa: ANN001, ANN201
    """e[:n] = softmax(s[:n]): the maximum, exp of the differences, their sum left to right."""
    m = s[0]
    for j in range(1, n):
        m = max(m, s[j])
    for j in range(n):
        s[j] = s[j] - m
    vexp(s[:n], e[:n], bits[:n])
    tot = np.float32(0.0)
    for j in range(n):
        tot += e[j]
    inv = np.float32(1.0) / tot
    for j in range(n):
        e[j] = e[j] * inv


@njit
def causal_attention(qkv, out, s, e, bits):  # noqa: ANN001, ANN201
    """Row i: softmax over keys 0..i of (q_i / sqrt(d)) . k_j (each dot product over d
    ascending), then the weighted sum of v_j (j ascending); keys after i are not read. Four rows
    at a time share each load of a key and a value (row i + r still stops at key i + r). ``s``,
    ``e``: float32 scratch (4, T); ``bits``: int32 scratch of length T."""
    T = qkv.shape[0]
    D = qkv.shape[1] // 3
    scale = np.float32(1.0 / math.sqrt(D))
    kt = np.ascontiguousarray(qkv[:, D:2 * D].T)  # (D, T): the scores of a row vectorise over keys
    i = 0
    while i < T:
        rows = min(4, T - i)
        n = i + rows  # keys 0..i+rows-1; row i + r uses 0..i+r
        for r in range(rows):
            for j in range(n):
                s[r, j] = np.float32(0.0)
        if rows == 4:
            for d in range(D):
                q0, q1 = qkv[i, d] * scale, qkv[i + 1, d] * scale
                q2, q3 = qkv[i + 2, d] * scale, qkv[i + 3, d] * scale
                for j in range(n):
                    kdj = kt[d, j]
                    s[0, j] += q0 * kdj
                    s[1, j] += q1 * kdj
                    s[2, j] += q2 * kdj
                    s[3, j] += q3 * kdj
        else:
            for r in range(rows):
                for d in range(D):
                    qd = qkv[i + r, d] * scale
                    for j in range(n):
                        s[r, j] += qd * kt[d, j]
        for r in range(rows):
            _softmax_row(s[r], e[r], bits, i + r + 1)
            for j in range(i + r + 1, n):
                e[r, j] = np.float32(0.0)  # keys after row i + r: weight 0, added as +0
            for d in range(D):
                out[i + r, d] = np.float32(0.0)
        for j in range(n):
            e0, e1, e2, e3 = e[0, j], e[1, j], e[2, j], e[3, j]
            for d in range(D):
                vjd = qkv[j, 2 * D + d]
                out[i, d] += e0 * vjd
                if rows > 1:
                    out[i + 1, d] += e1 * vjd
                if rows > 2:
                    out[i + 2, d] += e2 * vjd
                if rows > 3:
                    out[i + 3, d] += e3 * vjd
        i += rows


@njit
def attend(x, n1w, n1b, n2w, n2b, eps, qkv_t, out_t, gate_t):  # noqa: ANN001, ANN201
    """(x + attention, its norm, the gate's logits), as :meth:`Block.attend`."""
    T, D = x.shape
    h = np.empty_like(x)
    layer_norm(x, n1w, n1b, eps, h)
    qkv = np.empty((T, 3 * D), np.float32)
    rows_matmul(h, qkv_t, qkv)
    att = np.empty_like(x)
    causal_attention(qkv, att, np.empty((4, T), np.float32), np.zeros((4, T), np.float32), np.empty(T, np.int32))
    proj = np.empty_like(x)
    rows_matmul(att, out_t, proj)
    x2 = x + proj
    h2 = np.empty_like(x)
    layer_norm(x2, n2w, n2b, eps, h2)
    logits = np.empty((T, gate_t.shape[1]), np.float32)
    rows_matmul(h2, gate_t, logits)
    return x2, h2, logits


@njit
def gelu(x, out, t, ex, ez, bits):  # noqa: ANN001, ANN201
    """out = x * (1 + erf(x / sqrt 2)) / 2, erf by Abramowitz-Stegun 7.1.26 (|error| <= 1.5e-7,
    the formula torch's vectorised erf uses), elementwise over flat arrays; ``t``, ``ex``, ``ez``
    (float32) and ``bits`` (int32): scratch of x's size. Every array distinct (an output that
    overlaps its input keeps LLVM from vectorising the loop)."""
    n = x.size
    for i in range(n):
        z = abs(x[i]) * np.float32(0.7071067811865476)
        t[i] = np.float32(1.0) / (np.float32(1.0) + np.float32(0.3275911) * z)
        ex[i] = -z * z
    vexp(ex, ez, bits)
    for i in range(n):
        ti = t[i]
        p = np.float32(1.061405429)
        p = p * ti + np.float32(-1.453152027)
        p = p * ti + np.float32(1.421413741)
        p = p * ti + np.float32(-0.284496736)
        p = p * ti + np.float32(0.254829592)
        xi = x[i]
        out[i] = np.float32(0.5) * xi * (np.float32(1.0) + np.copysign(np.float32(1.0) - p * ti * ez[i], xi))


@njit
def finish(x, h, logits, quality, top_k, route_only, up_t, up_b, down_t, down_b):  # noqa: ANN001, ANN201
    """(output, expert index (T, k), combine weight (T, k), tokens per expert) as
    :meth:`Block.finish`: softmax of the logits, times the quality (0: masked), top-k (ties to the
    lower index), weights renormalised over the k; each kept token through its experts' FFNs,
    added in expert order."""
    T, E = logits.shape
    scores = np.empty((T, E), np.float32)
    bits = np.empty(E, np.int32)
    tmp = np.empty(E, np.float32)
    for i in range(T):
        m = logits[i, 0]
        for e in range(1, E):
            m = max(m, logits[i, e])
        for e in range(E):
            tmp[e] = logits[i, e] - m
        vexp(tmp, scores[i], bits)
        tot = np.float32(0.0)
        for e in range(E):
            tot += scores[i, e]
        for e in range(E):
            s = scores[i, e] / tot
            scores[i, e] = s * quality[e] if quality[e] > 0 else np.float32(-1.0)
    idx = np.zeros((T, top_k), np.int64)
    w = np.zeros((T, top_k), np.float32)
    counts = np.zeros(E, np.int64)
    for i in range(T):
        tot = np.float32(0.0)
        for k in range(top_k):
            best = -1
            for e in range(E):
                taken = False
                for kk in range(k):
                    if idx[i, kk] == e:
                        taken = True
                if not taken and (best < 0 or scores[i, e] > scores[i, best]):
                    best = e
            idx[i, k] = best
            w[i, k] = max(scores[i, best], np.float32(0.0))
            tot += w[i, k]
        for k in range(top_k):
            w[i, k] = w[i, k] / tot if tot > 0 else np.float32(0.0)
            if w[i, k] > 0:
                counts[idx[i, k]] += 1
    if route_only:
        return x, idx, w, counts
    D = x.shape[1]
    F = up_t.shape[2]
    acc = np.zeros((T, D), np.float32)
    for e in range(E):  # expert order: each token's sum adds its experts in ascending order
        n = counts[e]
        if n == 0:
            continue
        tok = np.empty(n, np.int64)
        wt = np.empty(n, np.float32)
        r = 0
        for i in range(T):
            for k in range(top_k):
                if idx[i, k] == e and w[i, k] > 0:
                    tok[r] = i
                    wt[r] = w[i, k]
                    r += 1
        xs = np.empty((n, D), np.float32)
        for r in range(n):
            xs[r] = h[tok[r]]
        hid = np.empty((n, F), np.float32)
        rows_matmul(xs, up_t[e], hid)
        for r in range(n):
            for f in range(F):
                hid[r, f] += up_b[e, f]
        act = np.empty((n, F), np.float32)
        gelu(hid.reshape(n * F), act.reshape(n * F), np.empty(n * F, np.float32), np.empty(n * F, np.float32),
             np.empty(n * F, np.float32), np.empty(n * F, np.int32))
        ys = np.empty((n, D), np.float32)
        rows_matmul(act, down_t[e], ys)
        for r in range(n):
            for d in range(D):
                acc[tok[r], d] += wt[r] * (ys[r, d] + down_b[e, d])
    return x + acc, idx, w, counts


class CompiledGate:
    """:class:`GateModel`'s weights as float32 arrays, transposed for row-by-row products, and its
    :meth:`~GateModel.load` (the same memo logic) over the compiled block."""

    def __init__(self, model):  # noqa: ANN001
        import torch

        def a(t):  # noqa: ANN001, ANN202
            return np.ascontiguousarray(t.detach().numpy(), dtype=np.float32)

        self.model, self.torch = model, torch
        self.blocks = []
        for b in model.blocks:
            ex = b.moe.experts
            self.blocks.append((
                (a(b.norm1.weight), a(b.norm1.bias), a(b.norm2.weight), a(b.norm2.bias), np.float32(b.norm1.eps),
                 a(b.qkv.weight.t()), a(b.out.weight.t()), a(b.moe.gate.weight.t())),
                (b.moe.top_k, np.stack([a(e.up.weight.t()) for e in ex]), np.stack([a(e.up.bias) for e in ex]),
                 np.stack([a(e.down.weight.t()) for e in ex]), np.stack([a(e.down.bias) for e in ex]))))
        self.experts = model.experts

    def embed(self, ids):  # noqa: ANN001, ANN201
        with self.torch.inference_mode():
            return (self.model.embed(ids) + self.model.positions(len(ids))).numpy().copy()

    def block(self, layer: int, x: np.ndarray, quality: np.ndarray, route_only: bool = False):  # noqa: ANN201
        at, fin = self.blocks[layer]
        k, up_t, up_b, down_t, down_b = fin
        return finish(*attend(x, *at), quality, k, route_only, up_t, up_b, down_t, down_b)

    def load(self, ids, quality: np.ndarray, memo: dict | None = None,  # noqa: ANN001
             routes: list | None = None) -> np.ndarray:
        layers = len(self.blocks)
        out = np.zeros((layers, self.experts), np.int64)
        whole, row = quality.tobytes(), quality.shape[1] * 4
        rows = [whole[:layer * row] for layer in range(layers + 1)]
        keys = [(layer, rows[layer + 1]) for layer in range(layers)]
        memo = {} if memo is None else memo
        first = 0
        while first < layers and keys[first] in memo:
            out[first] = memo[keys[first]][1]
            first += 1
        if first == layers:
            return out
        if first == 0:
            x = memo.get("embed")
            if x is None:
                x = memo["embed"] = self.embed(ids)
        else:
            x = memo[keys[first - 1]][0]
        for layer in range(first, layers):
            at, fin = self.blocks[layer]
            attended = memo.get(("attend", layer, rows[layer]))
            if attended is None:
                attended = memo[("attend", layer, rows[layer])] = attend(x, *at)
            k, up_t, up_b, down_t, down_b = fin
            x, idx, w, out[layer] = finish(*attended, quality[layer], k, layer == layers - 1,
                                           up_t, up_b, down_t, down_b)
            if routes is not None:
                routes.append((idx, w))
            memo[keys[layer]] = (x, out[layer].copy())
        return out


def torch_routes(model, ids, quality):  # noqa: ANN001, ANN201
    """Every block's (expert index, combine weight) and the loads of torch's model (no memo)."""
    import torch

    with torch.inference_mode():
        x = model.embed(ids) + model.positions(len(ids))
        routes, loads = [], []
        for layer, b in enumerate(model.blocks):
            y, idx, w, per_expert = b.finish(b.attend(x), quality[layer], route_only=layer == len(model.blocks) - 1)
            routes.append((idx.numpy(), w.numpy()))
            loads.append(per_expert.numpy())
            x = y
    return routes, np.stack(loads)


def kept_sets(idx: np.ndarray, w: np.ndarray) -> list:
    return [frozenset(int(e) for e, v in zip(idx[i], w[i]) if v > 0) for i in range(len(idx))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--end", type=float, default=300.0, help="grid6_moe run to END s (seed 42) whose routings to use")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--routings", type=Path, help="a pickle of the run's routings (written if missing)")
    args = ap.parse_args()

    import torch

    from cosim.layers.moe.model import GateModel, Vocabulary, keep_freed_memory

    if args.routings and args.routings.exists():
        tasks = pickle.loads(args.routings.read_bytes())
    else:
        import bench_moe

        tasks = [[(p.numpy(), q) for p, q in calls] for calls in bench_moe.record_gate(args.end)]
        if args.routings:
            args.routings.write_bytes(pickle.dumps(tasks))
    keep_freed_memory()  # as the layer runs
    torch.set_num_threads(1)
    tasks_t = [[(torch.from_numpy(p), torch.as_tensor(q, dtype=torch.float32)) for p, q in c] for c in tasks]
    tasks_n = [[(torch.from_numpy(p), np.ascontiguousarray(q, dtype=np.float32)) for p, q in c] for c in tasks]
    vocab = Vocabulary()
    model = GateModel(len(vocab), 64, 128, 8, 8, 2, 0)  # the layer's defaults
    comp = CompiledGate(model)

    # batch-invariance by construction: a prefix of the prompt gives the prefix's rows, bit for bit
    ids = vocab.prompt(256, torch.Generator().manual_seed(1))
    x0, ones = comp.embed(ids), np.ones(8, np.float32)
    full, part = comp.block(0, x0, ones), comp.block(0, x0[:100].copy(), ones)
    assert full[0][:100].tobytes() == part[0].tobytes(), "the compiled block is not prefix-invariant"

    def replay_torch() -> None:
        for calls in tasks_t:
            memo: dict = {}
            for p, q in calls:
                model.load(p, q, memo)

    def replay_comp() -> None:
        for calls in tasks_n:
            memo: dict = {}
            for p, q in calls:
                comp.load(p, q, memo)

    q8 = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    q8t = torch.from_numpy(q8)
    with torch.inference_mode():
        xs = [torch.from_numpy(x0)]
        for layer, b in enumerate(model.blocks):
            xs.append(b(xs[-1], q8t[layer])[0])
    xs_n = [x.numpy().copy() for x in xs]

    def blocks_torch() -> None:
        with torch.inference_mode():
            for layer, b in enumerate(model.blocks):
                b.finish(b.attend(xs[layer]), q8t[layer])

    def blocks_comp() -> None:
        for layer in range(8):
            comp.block(layer, xs_n[layer], q8[layer])

    replay_comp()  # compile (or load numba's cache) before timing
    blocks_comp()
    replay_torch()
    cpu: dict[str, list[float]] = {k: [] for k in ("torch task", "compiled task", "torch block", "compiled block")}
    for _ in range(args.rounds):
        for name, fn, div in (("torch task", replay_torch, len(tasks)), ("compiled task", replay_comp, len(tasks)),
                              ("torch block", lambda: [blocks_torch() for _ in range(10)], 80),
                              ("compiled block", lambda: [blocks_comp() for _ in range(10)], 80)):
            c0 = time.process_time()
            fn()
            cpu[name].append((time.process_time() - c0) / div * 1e3)
    n_r = sum(map(len, tasks))
    print(f"grid6_moe seed 42, {len(tasks)} tasks, {n_r} routings; one thread; CPU ms, min / median of {args.rounds}")
    for name, v in cpu.items():
        note = "  (a full block)" if "block" in name else ""
        print(f"  {name:15s} {min(v):8.3f} / {statistics.median(v):8.3f}{note}")

    # how many routings differ (no memo: each path on its own inputs, every block)
    r_diff = cells = cells_diff = tokens = tok_diff = 0
    first_layer: dict[int, int] = {}
    for calls in tasks_t:
        for p, q in calls:
            rt, lt = torch_routes(model, p, q)
            rc: list = []
            lc = comp.load(p, q.numpy(), None, rc)
            r_diff += not np.array_equal(lt, lc)
            cells += lt.size
            cells_diff += int((lt != lc).sum())
            for layer, ((it, wt), (ic, wc)) in enumerate(zip(rt, rc)):
                d = sum(a != b for a, b in zip(kept_sets(it, wt), kept_sets(ic, wc)))
                tokens += len(it)
                tok_diff += d
                if d:
                    first_layer[layer] = first_layer.get(layer, 0) + 1
    print(f"  routings whose loads differ from torch's: {r_diff} of {n_r}; (layer, expert) load cells: {cells_diff} "
          f"of {cells}; tokens whose kept top-2 differ: {tok_diff} of {tokens} ({100 * tok_diff / tokens:.2f} %)")
    print(f"  (routings, by layer, with at least one token's top-2 differing: {dict(sorted(first_layer.items()))})")


if __name__ == "__main__":
    main()
