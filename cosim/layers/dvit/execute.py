"""Execution mode: the scheduled denoising steps really run, device to device.

A deterministic DDIM sampler (eta = 0) runs K steps of the :class:`~cosim.layers.dvit.model.DiT`.
Every device holds the same model weights (the paper: all vehicles and RSUs carry the same DViT
model). The initial noise is drawn on the RSU from the task's seed; whenever the plan moves to
another device, the intermediate result is *serialised* (``torch.save`` of the latent and the
step index — nothing else) and deserialised on the receiver, so the hand-off's real size is
measured. Steps on the RSU and helpers are conditioned on the **public** prompt embedding; the
user's steps on its **local** prompt, which only the user's device holds: it is never in a
payload, and every device records what it received, so a test can audit that.

The result equals a single-device run of the same schedule of conditions, bit for bit (same
operations on the same weights; the serialisation round trip is exact).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import torch

from cosim.layers.dvit.model import DiT


def ddim_timesteps(steps: int, train_steps: int = 1000) -> torch.Tensor:
    return torch.linspace(train_steps - 1, 0, steps).round().long()


def alphas_cumprod(train_steps: int = 1000) -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, train_steps, dtype=torch.float64)  # DDPM's linear schedule
    return torch.cumprod(1.0 - betas, dim=0).float()


@torch.no_grad()
def ddim_step(model: DiT, x: torch.Tensor, k: int, ts: torch.Tensor, abar: torch.Tensor,
              cond: torch.Tensor) -> torch.Tensor:
    """Step k of DDIM (eta = 0): x_t -> x_{t_prev}."""
    t = ts[k]
    a_t = abar[t]
    a_prev = abar[ts[k + 1]] if k + 1 < len(ts) else torch.tensor(1.0)
    eps = model(x, t.expand(x.shape[0]), cond)
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


@dataclass
class Device:
    name: str
    model: DiT
    local_cond: torch.Tensor | None = None  # only the user's device has one
    received: list = field(default_factory=list)  # payloads (dicts) this device received
    conds_used: list = field(default_factory=list)

    def receive(self, payload: bytes) -> dict:
        state = torch.load(io.BytesIO(payload), weights_only=True)
        self.received.append(state)
        return state


def serialise(x: torch.Tensor, k: int) -> bytes:
    buf = io.BytesIO()
    torch.save({"latent": x, "step": torch.tensor(k)}, buf)
    return buf.getvalue()


@dataclass
class ExecResult:
    image: torch.Tensor
    handoffs: list  # (from, to, bytes)
    devices: dict


def execute_plan(model: DiT, plan: list[str], user: str, public_cond: torch.Tensor, local_cond: torch.Tensor,
                 seed: int, rsu: str = "@rsu") -> ExecResult:
    """Run ``plan`` (device name per step) with the latent carried between devices."""
    s = model.shape
    ts, abar = ddim_timesteps(len(plan)), alphas_cumprod()
    devices: dict[str, Device] = {}

    def device(name: str) -> Device:
        if name not in devices:
            devices[name] = Device(name, model, local_cond if name == user else None)
        return devices[name]

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, model.channels, s.image_hw, s.image_hw, generator=g)  # drawn on the RSU
    holder, handoffs = rsu, []
    device(rsu)
    for k, name in enumerate(plan):
        dev = device(name)
        if name != holder:
            payload = serialise(x, k)
            handoffs.append((holder, name, len(payload)))
            x = dev.receive(payload)["latent"]
            holder = name
        cond = dev.local_cond if dev.local_cond is not None else public_cond
        dev.conds_used.append("local" if dev.local_cond is not None else "public")
        x = ddim_step(dev.model, x, k, ts, abar, cond)
    return ExecResult(x, handoffs, devices)


def execute_single(model: DiT, plan: list[str], user: str, public_cond: torch.Tensor, local_cond: torch.Tensor,
                   seed: int) -> torch.Tensor:
    """The same schedule of conditions on one device, no hand-offs (the reference)."""
    s = model.shape
    ts, abar = ddim_timesteps(len(plan)), alphas_cumprod()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, model.channels, s.image_hw, s.image_hw, generator=g)
    for k, name in enumerate(plan):
        x = ddim_step(model, x, k, ts, abar, local_cond if name == user else public_cond)
    return x
