"""A real torch MoE layer with the *physical gating* of paper 001, and its expert-parallel
execution across vehicles.

Physical gating (our formulation of the abstract's "physical gating network that dynamically
adapts to wireless environments"): the gate's softmax scores are multiplied by the link quality
q_e in [0, 1] of the vehicle hosting expert e (rate, outage probability, remaining V2V contact),
experts with q_e = 0 (unreachable, or not placed) are masked, and the top-k of the re-weighted
scores are combined with weights renormalised over the chosen k. With q = 1 everywhere it is the
ordinary top-k gate.

:func:`expert_parallel` runs the same layer the distributed way: the task vehicle gates, sends
each host vehicle the tokens routed to its experts (serialised, so the bytes on the air are
measured), each host runs its own copy of its experts, and the task vehicle combines the
results in expert order — the same arithmetic as :meth:`MoELayer.forward`, so the output is
identical (tested).
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field

import torch
from torch import nn


class Expert(nn.Module):
    def __init__(self, dim: int, ffn: int):
        super().__init__()
        self.up = nn.Linear(dim, ffn)
        self.down = nn.Linear(ffn, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.gelu(self.up(x)))


def route_from_logits(logits: torch.Tensor, top_k: int, quality: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(expert index, combine weight), each (tokens, k), from gate logits (tokens, E).

    Physical gating: softmax scores times the hosts' link quality; quality 0 masks an expert
    (weight 0 even if fewer than k experts are reachable)."""
    scores = torch.softmax(logits, dim=-1)
    if quality is not None:
        q = quality.to(scores.dtype)
        scores = torch.where(q > 0, scores * q, torch.full_like(scores, -1.0))
    top, idx = torch.topk(scores, top_k, dim=-1)
    top = top.clamp_min(0.0)
    total = top.sum(dim=-1, keepdim=True)
    weights = torch.where(total > 0, top / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(top))
    return idx, weights


class MoELayer(nn.Module):
    def __init__(self, dim: int, ffn: int, experts: int, top_k: int):
        super().__init__()
        self.top_k = top_k
        self.gate = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList(Expert(dim, ffn) for _ in range(experts))

    def route(self, x: torch.Tensor, quality: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return route_from_logits(self.gate(x), self.top_k, quality)

    def forward(self, x: torch.Tensor, quality: torch.Tensor | None = None) -> torch.Tensor:
        """The monolithic layer: every expert local."""
        idx, w = self.route(x, quality)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            keep = w[tok, slot] > 0
            tok, slot = tok[keep], slot[keep]
            if len(tok):
                out.index_add_(0, tok, w[tok, slot, None] * expert(x[tok]))
        return out


def _wire(obj) -> tuple[object, int]:
    """Serialise and deserialise ``obj`` as it would cross a V2V link; returns (copy, bytes)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    n = buf.tell()
    buf.seek(0)
    return torch.load(buf, weights_only=True), n


@dataclass
class Host:
    """One infrastructure vehicle: its own copies of the experts placed on it."""

    name: str
    experts: dict = field(default_factory=dict)  # expert index -> module
    bytes_in: int = 0
    bytes_out: int = 0
    tokens: int = 0


def place(layer: MoELayer, host_of_expert: list[str | None]) -> dict[str, Host]:
    """Copy each expert's weights to its host vehicle (None: not placed)."""
    hosts: dict[str, Host] = {}
    for e, h in enumerate(host_of_expert):
        if h is not None:
            hosts.setdefault(h, Host(h)).experts[e] = copy.deepcopy(layer.experts[e])
    return hosts


def expert_parallel(layer: MoELayer, x: torch.Tensor, hosts: dict[str, Host], host_of_expert: list[str | None],
                    quality: torch.Tensor | None = None) -> torch.Tensor:
    """The distributed layer: gate on the task vehicle, expert FFNs on their hosts."""
    idx, w = layer.route(x, quality)  # on the task vehicle
    results: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, host in hosts.items():
        batch = {}
        for e in host.experts:
            tok, slot = (idx == e).nonzero(as_tuple=True)
            keep = w[tok, slot] > 0
            if keep.any():
                batch[e] = x[tok[keep]]
                results[e] = (tok[keep], slot[keep])
        if not batch:
            continue
        arrived, n_in = _wire(batch)  # TV -> host
        host.bytes_in += n_in
        host.tokens += sum(len(v) for v in arrived.values())
        with torch.no_grad():
            done = {e: host.experts[e](v) for e, v in arrived.items()}
        back, n_out = _wire(done)  # host -> TV
        host.bytes_out += n_out
        for e, y in back.items():
            results[e] = (*results[e][:2], y)
    out = torch.zeros_like(x)
    for e in range(len(host_of_expert)):  # combine in expert order, as the monolithic layer does
        if e in results and len(results[e]) == 3:
            tok, slot, y = results[e]
            out.index_add_(0, tok, w[tok, slot, None] * y)
    return out
