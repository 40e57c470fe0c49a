#!/usr/bin/env python3
"""Train a DViT placement agent on replayed grid6 traffic, then compare it with VIDI, optimal
and the baselines on held-out seeds and on another network (docs/gym.md, "Training an agent").

    python tools/train_dvit_agent.py --out runs/agents/dvit_grid6.pt
        [--train-seeds 1 2 3] [--trace-end 300] [--iters 6] [--steps-per-iter 8000] [--handover-weight 5]
        [--ppo-steps 0] [--eval-seeds 101 102 103] [--eval-end 300] [--jobs 2] [--no-eval]
    python tools/train_dvit_agent.py --eval-only runs/agents/dvit_grid6.pt

1. **Traffic.** ``cosim run scenarios/grid6.toml --no-layers --record`` for each training seed
   (kept under ``--traces``, reused when there); ``--trace FILE`` uses recorded traces instead.
2. **Imitation (DAgger, warm start).** Episodes of ``cosim/DViTPlacement-v0`` on those traces
   (each episode: a trace drawn, requests from the episode's seed). The expert is the exact
   ``optimal`` scheduler asked at every decision (its first step's device: a closed-loop
   optimal); iteration 0 follows the expert, iteration i follows it with probability 0.5^i and
   the agent otherwise, every decision labelled with the expert's choice (optimal is given the
   user's dwell as of the decision, as the observation reads it: the world's is as of the slot's
   start, and re-solved at every step of a slot the dwell would never run out); the network is fitted
   (masked cross-entropy) on everything collected so far. Ours: this is the imitation warm start
   the issue allows.
3. **PPO (optional, ``--ppo-steps N``).** Our compact masked PPO on the environment's reward
   (minus the task time between decisions, minus 10 s per failed task): rollouts of 2048
   decisions, GAE (gamma 0.99, lambda 0.95), clip 0.2; the value head is first fitted to the
   returns of the last imitation rollouts.
4. **Evaluation** (unless ``--no-eval``). One ``cosim sweep`` of live SUMO on held-out seeds on
   grid6 (scenarios/grid6_dvit.toml) and on the imported OSM town (scenarios/town.toml with the
   same DViT layer), every policy on the same traffic and requests: ``rl:OUT`` against ``vidi``,
   ``optimal``, ``mddi``, ``mbdi``, ``mcpdi``, ``vli``, ``sdi``; means, and per-seed paired
   differences to VIDI and to optimal with Student-t 95 % intervals
   (``cosim.sweep.paired_differences``). Written under ``OUT.eval/`` (the sweep folder,
   ``table.csv``).

Torch runs on one thread (set before anything else); everything is driven by ``--seed``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCENARIO = ROOT / "scenarios" / "grid6_dvit.toml"
EVAL_SCENARIOS = [ROOT / "scenarios" / "grid6_dvit.toml", ROOT / "scenarios" / "town.toml"]
COMPARED = ["vidi", "optimal", "optimal-cl", "mddi", "mbdi", "mcpdi", "vli", "sdi"]


def record_traces(seeds: list[int], end: float, folder: Path) -> list[Path]:
    """grid6 traffic, one trace per seed (recorded once; reused when the file is there)."""
    out = []
    for s in seeds:
        path = folder / f"grid6-s{s}-{int(end)}s.parquet"
        if not path.exists():
            print(f"recording {path} (SUMO, seed {s}, {end:g} s)", file=sys.stderr)
            proc = subprocess.run([sys.executable, "-m", "cosim", "run", str(ROOT / "scenarios" / "grid6.toml"),
                                   "--no-layers", "--end", str(end), "--seed", str(s), "--record", str(path),
                                   "--out", str(folder / f"rec-s{s}"), "--overwrite", "-q", "--no-coverage"],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr.strip())
        out.append(path)
    return out


# -- imitation ---------------------------------------------------------------------------------
def expert_row(problem, max_devices: int) -> int:  # noqa: ANN001
    """The row of the device ``optimal`` puts the next step on; when it finds no feasible plan
    the user (the result handed over now, if the user is in the mask), else the fastest masked
    device (also when its device is outside the mask)."""
    from cosim.gym.dvit import device_mask, layout, step_cost
    from cosim.layers.dvit import schedulers

    # optimal with the user's dwell as of the decision (the world's is as of the slot's start: per
    # step, within a slot, the dwell would never run out; the agent's observation reads it so too)
    plan = schedulers.optimal(replace(problem, user_dwell_s=max(problem.user_dwell_s - problem.elapsed_s, 0.0)),
                              None, None)
    mask = device_mask(problem)
    if plan is None and mask[problem.user]:  # no plan meets C4 (or C3): hand the result over now
        device = problem.user
    elif plan is None or not mask[plan[0]]:
        device = int(np.argmin(np.where(mask, step_cost(problem), np.inf)))
    else:
        device = int(plan[0])
    return int(layout(problem, max_devices)[device])


class Buffer:
    """Observations, masks, labels or actions, rewards, episode boundaries (numpy)."""

    def __init__(self) -> None:
        self.dev, self.task, self.mask, self.label, self.act, self.rew, self.done = [], [], [], [], [], [], []

    def add(self, obs: dict, mask: np.ndarray, label: int, act: int) -> None:
        self.dev.append(obs["devices"])
        self.task.append(obs["task"])
        self.mask.append(mask)
        self.label.append(label)
        self.act.append(act)

    def arrays(self) -> tuple:
        return (np.stack(self.dev), np.stack(self.task), np.stack(self.mask), np.array(self.label),
                np.array(self.act), np.array(self.rew, dtype=np.float64), np.array(self.done, dtype=bool))


def rollout(env, n: int, choose, rng: np.random.Generator, state: dict) -> Buffer:  # noqa: ANN001
    """``n`` decisions of ``choose(obs, mask, problem) -> (action, label)``, across episodes
    (``state`` keeps the current observation between calls)."""
    buf = Buffer()
    if "obs" not in state:
        state["obs"], state["info"] = env.reset(seed=int(rng.integers(2**31 - 1)))
    for _ in range(n):
        obs, mask = state["obs"], state["info"]["action_mask"]
        action, label = choose(obs, mask, env.unwrapped._question[0])
        buf.add(obs, mask, label, action)
        obs, r, term, trunc, info = env.step(action)
        buf.rew.append(r)
        buf.done.append(term or trunc)
        if term or trunc:
            obs, info = env.reset(seed=int(rng.integers(2**31 - 1)))
        state["obs"], state["info"] = obs, info
    return buf


def fit_normaliser(net, dev: np.ndarray, task: np.ndarray) -> None:  # noqa: ANN001
    """The network's input mean and std over the present device rows of the first data."""
    import torch

    from cosim.gym.agent import row_inputs

    x = row_inputs(dev, task)[dev[..., 0] > 0]
    net.mean.copy_(torch.as_tensor(x.mean(0), dtype=torch.float32))
    net.std.copy_(torch.as_tensor(np.maximum(x.std(0), 1e-3), dtype=torch.float32))


def fit_imitation(net, data: tuple, epochs: int, rng: np.random.Generator, handover_weight: float = 1.0,
                  lr: float = 1e-3) -> float:  # noqa: ANN001
    """Masked cross-entropy of the expert's labels, a decision whose label is the user (the hand-
    over: rare, and a late one fails C4) weighing ``handover_weight``; returns the accuracy."""
    import torch

    dev, task, mask, label = (torch.as_tensor(a) for a in data[:4])
    weight = torch.where(label == dev.shape[1] - 1, float(handover_weight), 1.0)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = len(label)
    for _ in range(epochs):
        order = torch.as_tensor(rng.permutation(n))
        for i in range(0, n, 256):
            b = order[i:i + 256]
            logits, _ = net(dev[b], task[b], mask[b])
            loss = (torch.nn.functional.cross_entropy(logits, label[b], reduction="none") * weight[b]).sum() / \
                weight[b].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        logits, _ = net(dev, task, mask)
        return float((logits.argmax(-1) == label).float().mean())


def greedy(net):  # noqa: ANN001, ANN201
    from cosim.gym.agent import NumpyScorer

    scorer = NumpyScorer(net.state_dict())
    return lambda obs, mask: scorer.act(obs, mask)


def dagger(env, net, args, rng: np.random.Generator) -> tuple[Buffer, int]:  # noqa: ANN001
    """Imitation of ``optimal`` (see the module docstring); returns the last rollout, decisions."""
    D = env.unwrapped.max_devices
    data, state, steps, last = None, {}, 0, None
    if args.init:  # the normaliser comes with the agent
        data = ()
    for it in range(args.iters):
        beta = 0.5 ** it
        act = greedy(net) if it else None

        def choose(obs, mask, problem, act=act, beta=beta):  # noqa: ANN001, ANN202
            label = expert_row(problem, D)
            return (label if act is None or rng.random() < beta else act(obs, mask)), label

        t0 = time.perf_counter()
        last = rollout(env, args.steps_per_iter, choose, rng, state)
        steps += args.steps_per_iter
        new = last.arrays()
        if data is None:
            fit_normaliser(net, new[0], new[1])
        data = new if not data else tuple(np.concatenate([a, b]) for a, b in zip(data, new))
        t1 = time.perf_counter()
        acc = fit_imitation(net, data, args.epochs, rng, args.handover_weight)
        agree = float(np.mean(new[3] == new[4]))
        print(f"dagger {it}: beta {beta:.3f}, {len(data[3])} labelled decisions, rollout {t1 - t0:.1f} s "
              f"(acted as the expert {agree:.3f}), fit {time.perf_counter() - t1:.1f} s, accuracy {acc:.3f}, "
              f"mean reward {np.mean(new[5]):.4f}", file=sys.stderr)
    return last, steps


# -- PPO ----------------------------------------------------------------------------------------
def gae(rew: np.ndarray, done: np.ndarray, value: np.ndarray, last_value: float, gamma: float = 0.99,
        lam: float = 0.95) -> np.ndarray:
    """Generalised advantage estimates; an episode end is a truncation (bootstrapped from 0:
    the environment's run ends with the traffic, its next observation is no state)."""
    adv = np.zeros(len(rew))
    run = 0.0
    for t in range(len(rew) - 1, -1, -1):
        nxt = last_value if t == len(rew) - 1 else value[t + 1]
        nxt = 0.0 if done[t] else nxt
        delta = rew[t] + gamma * nxt - value[t]
        run = delta + gamma * lam * (0.0 if done[t] else run)
        adv[t] = run
    return adv


def values_of(net, dev, task, mask) -> np.ndarray:  # noqa: ANN001
    import torch

    with torch.no_grad():
        return net(torch.as_tensor(dev), torch.as_tensor(task), torch.as_tensor(mask))[1].numpy().astype(np.float64)


def fit_value(net, buf: Buffer, epochs: int, rng: np.random.Generator) -> None:  # noqa: ANN001
    """The value head alone, on the discounted returns of ``buf`` (before PPO)."""
    import torch

    dev, task, mask, _, _, rew, done = buf.arrays()
    ret = gae(rew, done, np.zeros(len(rew)), 0.0, lam=1.0)
    opt = torch.optim.Adam(net.value.parameters(), lr=1e-3)
    dev_t, task_t, mask_t, ret_t = (torch.as_tensor(a) for a in (dev, task, mask, ret.astype(np.float32)))
    for _ in range(epochs):
        order = torch.as_tensor(rng.permutation(len(ret)))
        for i in range(0, len(ret), 256):
            b = order[i:i + 256]
            loss = ((net(dev_t[b], task_t[b], mask_t[b])[1] - ret_t[b]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()


def ppo(env, net, args, rng: np.random.Generator) -> int:  # noqa: ANN001
    """Masked PPO fine-tuning for ``args.ppo_steps`` decisions; returns the decisions taken."""
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=args.ppo_lr)
    state, steps, T = {}, 0, 2048
    while steps < args.ppo_steps:
        logp_of = {}

        def choose(obs, mask, problem):  # noqa: ANN001, ANN202
            with torch.no_grad():
                logits, _ = net(torch.as_tensor(obs["devices"])[None], torch.as_tensor(obs["task"])[None],
                                torch.as_tensor(mask)[None])
            p = torch.softmax(logits[0].double(), -1).numpy()
            a = int(rng.choice(len(p), p=p / p.sum()))
            logp_of[len(logp_of)] = float(np.log(max(p[a], 1e-12)))
            return a, -1

        t0 = time.perf_counter()
        buf = rollout(env, T, choose, rng, state)
        steps += T
        dev, task, mask, _, act, rew, done = buf.arrays()
        value = values_of(net, dev, task, mask)
        o = state["obs"]
        last = values_of(net, o["devices"][None], o["task"][None], state["info"]["action_mask"][None])[0]
        adv = gae(rew, done, value, float(last))
        ret = adv + value
        adv_n = (adv - adv.mean()) / (adv.std() + 1e-8)
        old = np.array([logp_of[i] for i in range(T)])
        tens = [torch.as_tensor(a) for a in (dev, task, mask, act, old.astype(np.float32), adv_n.astype(np.float32),
                                             ret.astype(np.float32))]
        for _ in range(4):
            order = torch.as_tensor(rng.permutation(T))
            for i in range(0, T, 256):
                b = order[i:i + 256]
                d, tk, m, a, lp0, ad, rt = (x[b] for x in tens)
                logits, v = net(d, tk, m)
                logp = torch.log_softmax(logits, -1)
                lp = logp.gather(1, a[:, None])[:, 0]
                ratio = torch.exp(lp - lp0)
                pol = -torch.min(ratio * ad, ratio.clamp(0.8, 1.2) * ad).mean()
                probs = logp.exp()
                ent = -(probs * torch.where(m, logp, torch.zeros_like(logp))).sum(-1).mean()
                loss = pol + 0.5 * ((v - rt) ** 2).mean() - 0.01 * ent
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
                opt.step()
        print(f"ppo {steps}/{args.ppo_steps}: rollout mean reward {rew.mean():.4f}, {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
    return steps


# -- evaluation ---------------------------------------------------------------------------------
def evaluate(agent: Path, args) -> None:  # noqa: ANN001
    """Held-out seeds on grid6 and on the town: one cosim sweep, then the table."""
    import pandas as pd

    import cosim
    from cosim import pairing
    from cosim.stats import fmt
    from cosim.sweep import paired_differences

    out = Path(f"{agent}.eval")
    out.mkdir(parents=True, exist_ok=True)
    rl = f"rl:{agent.resolve()}"
    lines = ["[sweep]", 'name = "dvit-agent-eval"', f"scenarios = {json.dumps([str(s) for s in EVAL_SCENARIOS])}",
             f"seeds = {json.dumps(args.eval_seeds)}", f"end_s = {args.eval_end}", 'baseline = { dvit = "vidi" }',
             "", "[set]", '"output.coverage" = false',
             f'"layers.dvit.policies" = {json.dumps(["vidi", rl, *COMPARED[1:]])}']
    spec = out / "sweep.toml"
    spec.write_text("\n".join(lines) + "\n")
    shutil.rmtree(out / "sweep", ignore_errors=True)  # a sweep resumes its finished cells: the agent may be new
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cosim", "sweep", str(spec), "--out", str(out / "sweep"), "-q",
                           "--jobs", str(args.jobs)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"evaluation sweep: {proc.stderr.strip()[-2000:]}")
    print(f"evaluation: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    res = cosim.load(out / "sweep").results
    res = res[res["layer"] == "dvit"]
    means = res.assign(policy=lambda d: d["policy"].replace({rl: "rl"})).groupby(
        ["scenario", "policy"], sort=False)[["mean_latency_s", "success_rate"]].mean()
    cols = []
    for base in ("vidi", "optimal"):  # task by task: each run re-paired against the baseline from its task table
        rows = []
        for cell, g in res.groupby("cell", sort=False):
            pairs = pairing.against(out / "sweep" / "cells" / cell, "dvit", list(g["policy"]), base)
            rows += [{"cell": cell, "scenario": g["scenario"].iloc[0], "seed": g["seed"].iloc[0], "layer": "dvit",
                      "policy": "rl" if p == rl else p, "vs_baseline.baseline": base,
                      **{f"vs_baseline.{k}": v[k] for k in ("latency_diff_s", "success_diff")}} for p, v in pairs.items()]
        pdf = paired_differences(pd.DataFrame(rows), [], {"dvit": base}).set_index(["scenario", "policy"])
        for m in ("latency_diff_s", "success_diff"):
            cols.append(pd.Series([fmt(r[f"{m}.diff"], r[f"{m}.ci95"], r[f"{m}.p_holm"]) for _, r in pdf.iterrows()],
                                  index=pdf.index, name=f"{m} vs {base}"))
    table = means.round(4).join(pd.concat(cols, axis=1)).reset_index()
    table.to_csv(out / "table.csv", index=False)
    print(f"\nheld-out seeds {args.eval_seeds}, {args.eval_end:g} s each; task by task (tasks both completed / both "
          "given), paired per seed: d ± 95 % half-width (Holm-adjusted p); mean latency and success descriptive")
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.fillna("").to_string(index=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/agents/dvit_grid6.pt", help="the agent file to write")
    ap.add_argument("--seed", type=int, default=0, help="drives the network's weights and every episode")
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[1, 2, 3], help="grid6 traffic seeds to train on")
    ap.add_argument("--trace-end", type=float, default=300.0, help="simulated seconds per training trace")
    ap.add_argument("--traces", default="runs/agents/traces", help="where the training traces are kept")
    ap.add_argument("--trace", nargs="+", help="train on these recorded traces instead")
    ap.add_argument("--episode-end", type=float, default=None, help="end each training episode here [s]")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--iters", type=int, default=6, help="DAgger iterations")
    ap.add_argument("--steps-per-iter", type=int, default=8000, help="decisions collected per DAgger iteration")
    ap.add_argument("--epochs", type=int, default=8, help="passes over the collected decisions per iteration")
    ap.add_argument("--handover-weight", type=float, default=5.0,
                    help="weight of a decision whose label hands the task to the user (rare; late = C4)")
    ap.add_argument("--ppo-steps", type=int, default=0, help="PPO fine-tuning decisions after imitation")
    ap.add_argument("--ppo-lr", type=float, default=1e-4)
    ap.add_argument("--init", metavar="AGENT", help="start from this agent file (with --iters 0: PPO only)")
    ap.add_argument("--eval-seeds", type=int, nargs="+", default=list(range(101, 111)), help="held-out seeds")
    ap.add_argument("--eval-end", type=float, default=300.0, help="simulated seconds per evaluation run")
    ap.add_argument("--jobs", type=int, default=2, help="evaluation runs in parallel")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--eval-only", metavar="AGENT", help="only evaluate this agent file")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    if args.eval_only:
        from cosim.gym.agent import load_agent

        load_agent(args.eval_only, "--eval-only")
        return evaluate(Path(args.eval_only), args)
    import gymnasium as gym

    import cosim.gym  # noqa: F401 - registers the environments
    from cosim.gym.agent import load_agent, new_network, save_agent
    from cosim.engine.session import versions

    t0 = time.perf_counter()
    traces = [Path(t) for t in args.trace] if args.trace else record_traces(args.train_seeds, args.trace_end,
                                                                             Path(args.traces))
    t_rec = time.perf_counter() - t0
    overrides = {} if args.episode_end is None else {"scenario.end_s": args.episode_end}
    env = gym.make("cosim/DViTPlacement-v0", scenario=str(TRAIN_SCENARIO), trace=[str(t) for t in traces],
                   overrides=overrides)
    rng = np.random.default_rng(args.seed)
    net = load_agent(args.init, "--init")[1] if args.init else new_network(args.hidden, args.seed)
    t1 = time.perf_counter()
    try:
        last, steps = dagger(env, net, args, rng)
        if args.ppo_steps:
            if last is None:  # no imitation now: the value head learns from the agent's own rollout
                last = rollout(env, 4096, lambda obs, mask, problem, act=greedy(net): (act(obs, mask), -1), rng, {})
            fit_value(net, last, 4, rng)
            steps += ppo(env, net, args, rng)
        D = env.unwrapped.max_devices
    finally:
        env.close()
    wall = time.perf_counter() - t1
    vers = versions()
    vers["gymnasium"] = gym.__version__
    trained = {"seeds": args.train_seeds if not args.trace else [], "seed": args.seed,
               "scenario": TRAIN_SCENARIO.name, "trace": [t.name for t in traces], "steps": steps,
               "wall_s": round(wall, 1), "versions": vers,
               "method": {"dagger_iters": args.iters, "steps_per_iter": args.steps_per_iter, "epochs": args.epochs,
                          "handover_weight": args.handover_weight, "expert": "optimal", "ppo_steps": args.ppo_steps, "ppo_lr": args.ppo_lr}}
    path = save_agent(args.out, net, D, trained)
    print(f"agent: {path} ({path.stat().st_size / 1e3:.0f} kB), {steps} decisions, training {wall:.0f} s "
          f"(+ {t_rec:.0f} s recording traffic)", file=sys.stderr)
    if not args.no_eval:
        evaluate(path, args)


if __name__ == "__main__":
    main()
