"""Environment steps per second of cosim's Gymnasium environments (issue 16).

    python tools/bench_gym.py                   # replay and live SUMO, 1 and 2 vector workers
    python tools/bench_gym.py --steps 5000 --only replay
    python tools/bench_gym.py --env cache        # cosim/CacheEviction-v0 (30 GB, 0.2 requests/vehicle-s)

Each case takes ``--steps`` decisions across episode ends — actions drawn uniformly from the
action mask (seeded), or a built-in scheduler's or the shipped trained agent's (rl) choices; the
agent's own time is not counted — on grid6 (the shipped scenario, seed 42): **replay** of a trace recorded
once into ``runs/bench_gym/`` (fast, for training) and **live** SUMO through libsumo. One worker
is a plain ``gym.make`` environment (its CPU seconds measured with ``time.process_time``); two
workers are ``gym.make_vec(..., vectorization_mode="async")``, one process each (their CPU per
step: the children's CPU seconds less those of the same vector started and closed idle). The **layer alone** row
is the same scenario replayed by ``cosim replay`` with a built-in scheduler asked before every
step (``replan = "step"``), so the difference to it is what the environment itself costs.
Target (issue 16): >= 2,000 environment steps per second per worker on replayed traffic.
Wall time on this shared machine drifts by tens of percent: CPU figures decide for one worker.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "grid6_dvit.toml"
ENV_ID = "cosim/DViTPlacement-v0"
#: --env cache: the cache environment where evictions are frequent (with the 80 GB default the
#: first comes after about a minute, and replaying the slots, not the environment, sets the rate)
CACHE = ("cosim/CacheEviction-v0", ROOT / "scenarios" / "grid6_cache.toml",
         {"layers.cache.gpu_memory_gb": 30, "layers.cache.request_rate_per_vehicle_s": 0.2})


def trace(end_s: float) -> Path:
    """grid6 (seed 42) recorded once: cosim's parquet trace."""
    path = ROOT / "runs" / "bench_gym" / f"grid6_s42_{end_s:g}.parquet"
    if not path.exists():
        proc = subprocess.run([sys.executable, "-m", "cosim", "run", str(ROOT / "scenarios" / "grid6.toml"), "--no-layers",
                               "--end", f"{end_s:g}", "--record", str(path), "--out", str(path.parent / "rec"),
                               "--overwrite", "-q", "--no-coverage"], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stderr)
    return path


def one_worker(kwargs: dict, steps: int, seed: int, agent: str = "random", env_id: str = ENV_ID) -> dict:
    """``agent``: random (uniform over the mask), mcpdi (the built-in scheduler's first device
    for each question: the same decisions as the layer-alone row) or rl (the shipped trained
    agent, rl:dvit_grid6, on the observation). The agent's own time is not counted: steps/s is
    over the time spent in ``env.step`` and ``env.reset``, CPU likewise minus the agent's."""
    import gymnasium as gym

    import cosim.gym  # noqa: F401
    from cosim.gym.dvit import layout
    from cosim.layers.dvit.schedulers import mcpdi

    env = gym.make(env_id, **kwargs)
    scorer = None
    if agent == "rl":
        from cosim.gym import agent as ag

        scorer = ag.NumpyScorer(ag.load_agent(ag.resolve_path("dvit_grid6"))[1].state_dict())
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    episodes, in_env, agent_cpu = 0, 0.0, 0.0
    c0 = time.process_time()
    for _ in range(steps):
        a0 = time.process_time()
        if agent == "mcpdi":
            p = env.unwrapped._question[0]
            action = int(layout(p, env.unwrapped.max_devices)[int(mcpdi(p, None, None)[0])])
        elif agent == "rl":
            action = scorer.act(obs, info["action_mask"])
        else:
            action = int(rng.choice(np.flatnonzero(info["action_mask"])))
        agent_cpu += time.process_time() - a0
        t0 = time.perf_counter()
        obs, r, term, trunc, info = env.step(action)
        if term or trunc:
            episodes += 1
            obs, info = env.reset()
        in_env += time.perf_counter() - t0
    cpu = time.process_time() - c0 - agent_cpu
    env.close()
    return {"steps_per_s": steps / in_env, "steps_per_cpu_s": steps / cpu, "episodes": episodes}


def vector(kwargs: dict, steps: int, seed: int, workers: int, env_id: str = ENV_ID) -> dict:
    """``workers`` async workers, random masked actions: total steps/s (wall, stepping only)
    and steps per worker-CPU-second — the workers' CPU (getrusage of the children once they
    are reaped) minus that of the same vector made, reset and closed without a step."""
    import resource

    import gymnasium as gym

    import cosim.gym  # noqa: F401

    def children() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def once(n_steps: int) -> tuple[float, float]:
        c0 = children()
        envs = gym.make_vec(env_id, num_envs=workers, vectorization_mode="async", **kwargs)
        rng = np.random.default_rng(seed)
        obs, info = envs.reset(seed=seed)
        n, wall = 0, 0.0
        while n < n_steps:
            acts = [int(rng.choice(np.flatnonzero(m))) if m.any() else 0 for m in info["action_mask"]]
            t0 = time.perf_counter()
            obs, r, term, trunc, info = envs.step(np.array(acts))
            wall += time.perf_counter() - t0
            n += workers
        envs.close()
        return wall, children() - c0

    _, idle_cpu = once(0)
    wall, cpu = once(steps)
    return {"steps_per_s": steps / wall, "per_worker": steps / wall / workers,
            "per_worker_cpu_s": steps / max(cpu - idle_cpu, 1e-9)}


def layer_alone(tr: Path, end_s: float) -> dict:
    """Decisions per CPU second of the layer itself (no environment): a replay with mcpdi asked
    before every step, in a fresh process."""
    code = f"""
import time, cosim, json
from cosim.layers.dvit import schedulers
from cosim.registry import register_policy
from cosim.runner import replay
register_policy("dvit", "mcpdi-each-step", replan="step", looks_ahead=False)(
    lambda p, rng, o: schedulers.mcpdi(p, rng, None))
cfg = cosim.config.apply_overrides(cosim.config.load({str(SCENARIO)!r}), {{
    "layers.dvit.policies": ["mcpdi-each-step"], "scenario.end_s": {end_s}, "output.coverage": False}})
c0 = time.process_time()
s = replay(cfg, {str(tr)!r}, {str(tr.parent / 'alone')!r}, progress=False, overwrite=True)
cpu = time.process_time() - c0
b = s["layers"]["dvit"]["mcpdi-each-step"]
decisions = int(cosim.load({str(tr.parent / 'alone')!r})["dvit_tasks"]["replans"].sum() + b["tasks"])
print(json.dumps({{"decisions": decisions, "cpu_s": cpu}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"decisions": out["decisions"], "per_cpu_s": out["decisions"] / out["cpu_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3000, help="decisions per case (default 3000)")
    ap.add_argument("--episode", type=float, default=300.0, help="episode length [s of traffic] (default 300)")
    ap.add_argument("--only", choices=("replay", "live"), help="one traffic source only")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--env", choices=("dvit", "cache"), default="dvit",
                    help="cosim/DViTPlacement-v0 (default) or cosim/CacheEviction-v0")
    args = ap.parse_args()
    tr = trace(args.episode)
    env_id, scenario, over = (ENV_ID, SCENARIO, {}) if args.env == "dvit" else CACHE
    over = {"scenario.end_s": args.episode, **over}
    cases = []
    if args.only != "live":
        cases.append(("replay", "random", {"scenario": str(scenario), "trace": str(tr), "overrides": over}))
        if args.env == "dvit":
            cases.append(("replay", "mcpdi", {"scenario": str(scenario), "trace": str(tr), "overrides": over}))
            cases.append(("replay", "rl", {"scenario": str(scenario), "trace": str(tr), "overrides": over}))
    if args.only != "replay":
        cases.append(("live (libsumo)", "random", {"scenario": str(scenario), "overrides": over}))
    import gymnasium

    print(f"{env_id} on grid6, {args.steps} decisions per case; agent: random (uniform over the mask) or "
          f"mcpdi (its first device); gymnasium {gymnasium.__version__}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'case':<16} {'agent':<7} {'workers':>7} {'steps/s':>9} {'per worker':>11} {'steps/CPU-s':>12}")
    for name, agent, kw in cases:
        # one worker in a fresh process (libsumo: one SUMO per process)
        code = (f"import sys, json; sys.path.insert(0, {str(ROOT / 'tools')!r}); import bench_gym as b; "
                f"print(json.dumps(b.one_worker({kw!r}, {args.steps}, {args.seed}, {agent!r}, {env_id!r})))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            raise SystemExit(proc.stderr)
        import json

        r1 = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{name:<16} {agent:<7} {1:>7} {r1['steps_per_s']:>9.0f} {r1['steps_per_s']:>11.0f} "
              f"{r1['steps_per_cpu_s']:>12.0f}")
        if agent == "random":
            r2 = vector(kw, args.steps, args.seed, 2, env_id)
            print(f"{name:<16} {agent:<7} {2:>7} {r2['steps_per_s']:>9.0f} {r2['per_worker']:>11.0f} "
                  f"{r2['per_worker_cpu_s']:>12.0f}")
    if args.only != "live" and args.env == "dvit":
        a = layer_alone(tr, args.episode)
        print(f"layer alone (no env): {a['decisions']} decisions of mcpdi asked before every step, "
              f"{a['per_cpu_s']:.0f} decisions per CPU-s")


if __name__ == "__main__":
    main()
