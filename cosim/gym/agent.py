"""A trained DViT placement agent, and the ``rl:PATH`` policy that runs it in any cosim run.

The agent scores every device row of ``cosim/DViTPlacement-v0``'s observation
(:func:`cosim.gym.dvit.observe`) with the same small network and takes the best-scored row the
action mask allows. The network (:class:`DeviceScorer`, torch) sees one device at a time — its
13 features, the task's 5 and four derived ones (ours: ``decisions_left * (comp_s + queue_s)``,
what the remaining free steps cost there; ``comm_s + that + to_user_s``, the cost of going
there and staying until the user takes over; ``user_dwell_s`` minus that, C4's slack; and the
device's ``dwell_s`` minus the time to get there and run the free steps, whether it stays long
enough; both slacks clipped to +-10 s, since dwell reads up to 600 s and only its margin near 0
matters) — plus the mean of every present device's hidden
vector (a DeepSets context, so a score can depend on the alternatives). It therefore does not
care how many helpers a task has, nor in which order: an agent trained on grid6 runs unchanged
on another network or with another ``max_helpers``.

``rl:PATH`` (a scheduler of the ``dvit`` layer; ``policies = ["vidi", "rl:runs/agent.pt"]``,
``cosim run``/``replay``/``sweep``/``check``) loads an agent file and is registered
``replan = "step"`` like the environment's agent: the layer asks it before every step, it builds
the environment's observation of that question and returns :func:`cosim.gym.dvit.plan_for` its
greedy masked choice — the decision the agent took in training. ``PATH`` is a file (relative to
the working directory) or the name of an agent shipped with cosim (``rl:dvit_grid6``:
``cosim/data/agents/dvit_grid6.pt``). Inference runs the network's weights in numpy (one forward
pass is a few 10 µs; torch's per-call overhead is larger than the network).

The file (``torch.save`` of a dict; :func:`save_agent`, :func:`load_agent`)::

    {"format": "cosim-agent/1", "layer": "dvit", "env_id": "cosim/DViTPlacement-v0",
     "obs": {"max_devices": D, "device_features": [...], "task_features": [...]},
     "arch": {"hidden": H, "derived_features": [...]}, "state_dict": {...},
     "trained": {"seeds": [...], "scenario": ..., "trace": [...], "steps": N, "wall_s": ..., "versions": {...}}}

``device_features``, ``task_features`` and ``derived_features`` must be this cosim's
(:data:`cosim.gym.dvit.DEVICE_FEATURES`, :data:`~cosim.gym.dvit.TASK_FEATURES`,
:data:`DERIVED_FEATURES`): an agent trained on another observation is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cosim.errors import ConfigError
from cosim.gym.dvit import DEVICE_FEATURES, TASK_FEATURES, DViTPlacementEnv, choose, observe, plan_for
from cosim.registry import PolicySpec, register_policy_loader

FORMAT = "cosim-agent/1"
LAYER = DViTPlacementEnv.layer
#: where the agents shipped with cosim live (``rl:NAME`` finds ``NAME.pt`` there)
SHIPPED = Path(__file__).resolve().parent.parent / "data" / "agents"

_COMM, _COMP, _QUEUE, _TO_USER, _DWELL = (DEVICE_FEATURES.index(k) for k in ("comm_s", "comp_s", "queue_s", "to_user_s",
                                                                            "dwell_s"))
_PRESENT = DEVICE_FEATURES.index("present")
_DECISIONS, _USER_DWELL = TASK_FEATURES.index("decisions_left"), TASK_FEATURES.index("user_dwell_s")
#: the derived per-device inputs (ours), after the device's and the task's features
DERIVED_FEATURES = ("free_steps_there_s", "go_there_and_stay_s", "c4_slack_s", "stay_slack_s")
SLACK_CLIP_S = 10.0  # the slacks are clipped to +-10 s: what matters is near 0, and dwell reads up to 600 s
N_IN = len(DEVICE_FEATURES) + len(TASK_FEATURES) + len(DERIVED_FEATURES)
MASKED = -1e9  # the score of a row the mask forbids


def row_inputs(devices: Any, task: Any, xp: Any = np) -> Any:
    """(..., D, N_IN) the network's per-row input (not yet normalised), for numpy (``xp=np``)
    or torch (``xp=torch``) arrays of shape (..., D, 13) and (..., 5)."""
    stay = task[..., _DECISIONS, None] * (devices[..., _COMP] + devices[..., _QUEUE])
    go = devices[..., _COMM] + stay + devices[..., _TO_USER]
    c4 = xp.clip(task[..., _USER_DWELL, None] - go, -SLACK_CLIP_S, SLACK_CLIP_S)
    keep = xp.clip(devices[..., _DWELL] - devices[..., _COMM] - stay, -SLACK_CLIP_S, SLACK_CLIP_S)
    t = xp.broadcast_to(task[..., None, :], devices.shape[:-1] + task.shape[-1:])
    cat = xp.concatenate if xp is np else xp.cat
    return cat([devices, t, stay[..., None], go[..., None], c4[..., None], keep[..., None]], -1)


def _torch_net(hidden: int) -> Any:
    import torch
    from torch import nn

    class DeviceScorer(nn.Module):
        """One score per device row (masked), and a value of the whole observation."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(N_IN))
            self.register_buffer("std", torch.ones(N_IN))
            self.embed = nn.Sequential(nn.Linear(N_IN, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
            self.score = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            self.value = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

        def forward(self, devices: torch.Tensor, task: torch.Tensor, mask: torch.Tensor) -> tuple:
            """(B, D, 13), (B, 5), (B, D) bool -> masked scores (B, D), value (B,)."""
            x = (row_inputs(devices, task, torch) - self.mean) / self.std
            h = self.embed(x)
            present = devices[..., _PRESENT:_PRESENT + 1]
            ctx = (h * present).sum(-2) / present.sum(-2).clamp(min=1.0)
            s = self.score(torch.cat([h, ctx[..., None, :].expand_as(h)], -1))[..., 0]
            return s.masked_fill(~mask, MASKED), self.value(ctx)[..., 0]

    return DeviceScorer()


def new_network(hidden: int = 64, seed: int = 0) -> Any:
    """A freshly initialised :class:`DeviceScorer` (torch; ``seed`` draws its weights)."""
    import torch

    torch.manual_seed(seed)
    return _torch_net(hidden)


class NumpyScorer:
    """The network's scores in numpy, from its state_dict (inference without torch's overhead)."""

    def __init__(self, state: dict):
        g = {k: v.detach().cpu().numpy().astype(np.float64) for k, v in state.items()}
        self.mean, self.std = g["mean"], g["std"]
        self.e = [(g["embed.0.weight"].T, g["embed.0.bias"]), (g["embed.2.weight"].T, g["embed.2.bias"])]
        self.s = [(g["score.0.weight"].T, g["score.0.bias"]), (g["score.2.weight"].T, g["score.2.bias"])]

    def scores(self, devices: np.ndarray, task: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(D,) masked scores of one observation."""
        h = (row_inputs(devices.astype(np.float64), task.astype(np.float64)) - self.mean) / self.std
        for w, b in self.e:
            h = np.maximum(h @ w + b, 0.0)
        present = devices[:, _PRESENT:_PRESENT + 1]
        ctx = (h * present).sum(0) / max(float(present.sum()), 1.0)
        z = np.maximum(np.concatenate([h, np.broadcast_to(ctx, h.shape)], 1) @ self.s[0][0] + self.s[0][1], 0.0)
        s = (z @ self.s[1][0] + self.s[1][1])[:, 0]
        return np.where(mask, s, MASKED)

    def act(self, obs: dict, mask: np.ndarray) -> int:
        """The greedy masked row (the first best one)."""
        return int(np.argmax(self.scores(obs["devices"], obs["task"], mask)))


# -- the file ----------------------------------------------------------------------------------
def save_agent(path: str | Path, net: Any, max_devices: int, trained: dict) -> Path:
    """Write ``net`` (a :func:`new_network`) as an agent file (see the module docstring)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hidden = net.embed[0].out_features
    torch.save({"format": FORMAT, "layer": LAYER, "env_id": DViTPlacementEnv.env_id,
                "obs": {"max_devices": int(max_devices), "device_features": list(DEVICE_FEATURES),
                        "task_features": list(TASK_FEATURES)},
                "arch": {"hidden": int(hidden), "derived_features": list(DERIVED_FEATURES)},
                "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
                "trained": trained}, path)
    return path


def resolve_path(arg: str) -> Path:
    """``rl:ARG``'s file: ARG itself, else a shipped agent named ARG (``NAME`` or ``NAME.pt``)."""
    path = Path(arg).expanduser()
    if path.exists() or path.parent != Path("."):
        return path
    shipped = SHIPPED / (arg if arg.endswith(".pt") else f"{arg}.pt")
    return shipped if shipped.is_file() else path


def load_agent(path: str | Path, where: str = "agent") -> tuple[dict, Any]:
    """(the file's dict, its :class:`DeviceScorer` with the weights loaded); a missing or wrong
    file is one :class:`ConfigError` line naming ``where`` and the file."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.pt"))) or "none"
        raise ConfigError(f"{where}: {path}: no such agent file (train one with tools/train_dvit_agent.py; "
                          f"shipped: {known})")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{where}: {path}: not a cosim agent file (torch.load: {first[:160]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{where}: {path}: format {got!r}, expected {FORMAT!r} (a file of tools/train_dvit_agent.py)")
    if data.get("layer") != LAYER:
        raise ConfigError(f"{where}: {path}: an agent for layer {data.get('layer')!r}, not '{LAYER}'")
    obs = data.get("obs") or {}
    for key, mine in (("device_features", DEVICE_FEATURES), ("task_features", TASK_FEATURES)):
        if list(obs.get(key) or []) != list(mine):
            raise ConfigError(f"{where}: {path}: obs.{key} {obs.get(key)!r} differ from this cosim's observation "
                              f"{list(mine)!r} (train the agent again)")
    derived = (data.get("arch") or {}).get("derived_features") if isinstance(data.get("arch"), dict) else None
    if list(derived or []) != list(DERIVED_FEATURES):
        raise ConfigError(f"{where}: {path}: arch.derived_features {derived!r} differ from this cosim's "
                          f"{list(DERIVED_FEATURES)!r} (train the agent again)")
    try:
        net = _torch_net(int(data["arch"]["hidden"]))
        net.load_state_dict(data["state_dict"])
        int(obs["max_devices"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{where}: {path}: arch/state_dict do not make a DeviceScorer ({first[:160]})") from None
    return data, net.eval()


def scheduler(data: dict, net: Any) -> Any:
    """The DViT scheduler ``fn(problem, rng, opts)`` of a loaded agent: the environment's
    observation of the question, the network's greedy masked row, the plan that runs it."""
    scorer = NumpyScorer(net.state_dict())
    max_devices = int(data["obs"]["max_devices"])

    def rl_scheduler(problem: Any, rng: Any, opts: Any) -> list[int]:
        D = max(max_devices, problem.n_devices)  # padding rows change no score (they are masked out of the context)
        obs, mask = observe(problem, D)
        device, _ = choose(problem, scorer.act(obs, mask), D)
        return plan_for(problem, device)

    return rl_scheduler


_CACHE: dict[tuple, PolicySpec] = {}


@register_policy_loader("rl")
def _rl_policy(layer: str, arg: str, where: str) -> PolicySpec:
    """``rl:PATH``: the agent in PATH as a scheduler of ``layer`` (dvit). ``layer`` "" (``cosim
    check rl:PATH``): the layer the file says."""
    name = f"rl:{arg}"
    key_where = f"{where}.policies: '{name}'" if layer else f"{where} '{name}'"
    if not arg:
        raise ConfigError(f"{key_where}: expected rl:PATH, the file of a trained agent")
    path = resolve_path(arg)
    if layer not in ("", LAYER):
        raise ConfigError(f"{key_where}: trained agents place DViT steps (layer '{LAYER}'), not layer '{layer}'")
    stamp = path.stat().st_mtime_ns if path.is_file() else None
    hit = _CACHE.get((str(path.resolve()), stamp))
    if hit is None:
        data, net = load_agent(path, key_where)
        hit = PolicySpec(LAYER, name, scheduler(data, net), None, False, dict(DViTPlacementEnv.agent_traits), __name__)
        _CACHE[(str(path.resolve()), stamp)] = hit
    return hit if hit.name == name else PolicySpec(LAYER, name, hit.fn, None, False, dict(hit.traits), __name__)
