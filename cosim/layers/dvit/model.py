"""A real diffusion vision transformer of the configured shape (torch), for FLOP checks and
execution.

Structure (U-ViT/DiT style, the paper's Fig. 2): patch embedding of the H x W x C input into
n = HW/P^2 tokens of width d, one extra token carrying the timestep and prompt embedding
(n' = n + 1, as in eq. 5), learned position embeddings, L pre-norm encoder blocks (multi-head
attention with n_a heads of d_a = d / n_a, then an MLP of width d_f with GELU), and a linear
reconstruction of each token back to a P x P x C patch (the predicted noise).

Attention is written out as two matmuls so that ``torch.utils.flop_counter.FlopCounterMode``
sees exactly the products eq. (5) counts; one encoder block then costs exactly
D = 6 d n' d_a n_a + 4 n'^2 d_a n_a + 2 d n' d_a n_a + 4 d n' d_f FLOPs (multiply-add = 2).
What eq. (5) leaves out, and the model adds: the patch embedding 2 n (P^2 C) d, the
reconstruction 2 n' d (P^2 C) and the time/prompt token's small MLP (layer norms, softmax and
GELU are elementwise and not counted by either).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cosim.layers.dvit.costmodel import DViTShape


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        att = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(d // h), dim=-1)
        x = x + self.out((att @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class DiT(nn.Module):
    """Predicts the noise of ``x`` (B, C, H, W) at timestep ``t`` (B,) given ``cond`` (B, d)."""

    def __init__(self, shape: DViTShape, channels: int = 3):
        super().__init__()
        self.shape, self.channels = shape, channels
        d, p = shape.dim, shape.patch
        self.grid = shape.image_hw // p
        self.patch_embed = nn.Linear(p * p * channels, d)
        self.time_embed = nn.Sequential(nn.Linear(d, d), nn.SiLU())
        self.pos = nn.Parameter(torch.zeros(1, shape.tokens, d))
        self.blocks = nn.ModuleList(EncoderBlock(d, shape.heads, shape.mlp_dim) for _ in range(shape.layers))
        self.norm = nn.LayerNorm(d)
        self.reconstruct = nn.Linear(d, p * p * channels)
        nn.init.normal_(self.pos, std=0.02)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.shape
        p, g = self.shape.patch, self.grid
        return x.reshape(b, c, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(b, g * g, p * p * c)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        p, g, c = self.shape.patch, self.grid, self.channels
        return tokens.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, g * p, g * p)

    def timestep_features(self, t: torch.Tensor) -> torch.Tensor:
        half = self.shape.dim // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        ang = t.float()[:, None] * freqs[None, :]
        return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        token = self.time_embed(self.timestep_features(t)) + cond  # the extra (n'-th) token
        h = torch.cat([token[:, None, :], self.patch_embed(self.patchify(x))], dim=1) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.unpatchify(self.reconstruct(self.norm(h))[:, 1:])


def model_flops(shape: DViTShape, channels: int = 3, device: str = "meta") -> dict[str, int]:
    """FLOPs that ``FlopCounterMode`` counts for one forward pass (batch 1), by module."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device(device):
        model = DiT(shape, channels)
        x = torch.zeros(1, channels, shape.image_hw, shape.image_hw)
        t = torch.zeros(1)
        cond = torch.zeros(1, shape.dim)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x, t, cond)
    per_module = counter.get_flop_counts()
    blocks = sum(sum(v.values()) for k, v in per_module.items() if k.startswith("DiT.blocks.") and k.count(".") == 2)
    return {
        "total": int(counter.get_total_flops()),
        "encoder_blocks": int(blocks),
        "patch_embed": int(sum(per_module.get("DiT.patch_embed", {}).values())),
        "reconstruct": int(sum(per_module.get("DiT.reconstruct", {}).values())),
        "time_embed": int(sum(per_module.get("DiT.time_embed", {}).values())),
    }
