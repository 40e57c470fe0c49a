"""What every cosim Gymnasium environment shares: an ordinary cosim run, paused at each decision.

An environment *is* a cosim run — the same :class:`~cosim.engine.session.Session`, traffic source and
slot loop as ``cosim run`` and ``cosim replay`` (:func:`cosim.runner.open_run`,
:func:`~cosim.runner.open_replay`, :func:`~cosim.engine.loop.drive`) — in which one policy of one
layer is ``gym:agent``. The run goes on in a greenlet of its own (a second stack in the same
thread); whenever the layer asks ``gym:agent`` for a decision, the run switches to the
environment with the question, and ``env.step(action)`` switches back with the answer and lets
the run go on to the next question. The environment therefore executes exactly what the layer
executes (same cost model, same rules, same result tables, written to the environment's folder)
— no second model of the layer to keep in step.

A greenlet and not a thread: the run and the agent never work at once, and a switch costs
about a microsecond where waking a thread costs ~12 µs on a free core and far more when the
cores are busy (two async vector workers on two cores ran slower than one with threads).
libsumo's one-SUMO-per-process rule holds per environment; a vector of environments
(``gym.make_vec(..., vectorization_mode="async")``) puts each in a process of its own.

A subclass says which layer it drives (``layer``, with the traits ``gym:agent`` registers with,
``agent_traits``), how a question becomes an observation (:meth:`CosimEnv.observe`), how an
action becomes the policy's answer (:meth:`CosimEnv.answer`) and what a decision costs
(:meth:`CosimEnv.cost_since`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Callable

import greenlet
import gymnasium as gym
import numpy as np

import cosim
from cosim import config as cfgmod
from cosim.errors import ConfigError, CosimError
from cosim.registry import PolicySpec, register_policy_loader

#: name of the environments' policy in a layer's ``policies`` (and in its result tables)
AGENT = "gym:agent"

#: layer -> the environment class driving it (filled as the environment modules are imported)
_ENVS: dict[str, type["CosimEnv"]] = {}


class EpisodeAbort(BaseException):
    """Raised in the run when the environment is reset or closed mid-episode (a BaseException:
    no layer or policy wrapper may swallow it)."""


def _ask(*question: Any) -> Any:
    """In the run: hand ``question`` to the environment, return its answer."""
    bridge = getattr(greenlet.getcurrent(), "bridge", None)
    if bridge is None:
        raise RuntimeError(f"policy '{AGENT}' takes its decisions from a cosim Gymnasium environment "
                           "(cosim.gym); in a run, use a trained agent (rl:PATH) or another policy")
    return bridge.ask(question)


@register_policy_loader("gym")
def _agent_policy(layer: str, arg: str, where: str) -> PolicySpec:
    """``gym:agent``: the policy whose decisions come from the environment."""
    import cosim.gym  # noqa: F401 - registers the environments (and so _ENVS)

    if f"gym:{arg}" != AGENT:
        raise ConfigError(f"{where}.policies: 'gym:{arg}' — the Gymnasium environments' policy is '{AGENT}'")
    env = _ENVS.get(layer)
    if env is None:
        raise ConfigError(f"{where}.policies: '{AGENT}': no cosim Gymnasium environment drives layer '{layer}' "
                          f"(environments: {', '.join(f'{c.env_id} ({lay})' for lay, c in _ENVS.items())})")
    return PolicySpec(layer, AGENT, _ask, None, False, dict(env.agent_traits), __name__)


class _Run(greenlet.greenlet):
    """The run's greenlet; ``bridge``: the environment's side of it."""

    bridge: "_Bridge | None" = None


class _Bridge:
    """The run and the environment, taking turns: the run is a greenlet (a second stack in the
    same thread) that switches to the environment at each question and back at the answer —
    about a microsecond, no thread to wake, so environments in several processes scale."""

    def __init__(self, episode: Callable[[], dict], local: Callable[[tuple], Any] | None = None):
        self.local = local  # answers the questions the agent is not asked (None: it is asked)
        self.episode = episode
        self.waiting = False  # the run waits for an answer
        self.started = False
        self.reply: Any = None
        self.run = _Run(self._main)
        self.run.bridge = self

    def _main(self) -> tuple[str, Any]:
        try:
            return "end", self.episode()
        except EpisodeAbort:
            return "aborted", None
        finally:
            self.run.bridge = None

    # the run's side
    def ask(self, question: tuple) -> Any:
        if self.local is not None:
            answer = self.local(question)
            if answer is not None:
                return answer
        return self.run.parent.switch(("decide", question))  # the environment's answer (or EpisodeAbort)

    # the environment's side
    def next(self) -> tuple[str, Any]:
        """Run on to the next event: ("decide", question) or ("end", summary); an error of the
        run is raised here."""
        self.run.parent = greenlet.getcurrent()
        self.waiting = False
        if not self.started:
            self.started = True
            kind, what = self.run.switch()
        else:
            kind, what = self.run.switch(self.reply)
        self.waiting = kind == "decide"
        return kind, what

    def answer(self, answer: Any) -> None:
        self.reply = answer

    def abort(self) -> None:
        """End the episode now (its results so far are written, status ``failed``), wherever
        the run waits — also after a Ctrl-C between an answer and the next question."""
        if not self.started or self.run.dead or greenlet.getcurrent() is self.run:
            return
        self.run.parent = greenlet.getcurrent()
        with contextlib.suppress(EpisodeAbort):
            self.run.throw(EpisodeAbort("the environment was reset or closed mid-episode"))
        self.waiting = False


class CosimEnv(gym.Env):
    """A cosim run as a Gymnasium environment (see the module docstring).

    ``scenario``: a scenario TOML file (its ``[layers.LAYER]`` table configures the layer; the
    other layers are left out). ``trace``: a recorded trace (or a list of them, one drawn per
    episode) to replay instead of running SUMO — fast, for training. ``overrides``: keys as
    ``cosim run --set`` takes them (``{"scenario.end_s": 300, "layers.dvit.request_rate_per_s":
    2}``). ``compare``: other policies of the layer run side by side on the same traffic and
    requests (their results land in the same tables; slower). ``backend``: libsumo or traci for
    live SUMO. ``out_dir``: a folder in which the environment makes its own (``self.out_dir``,
    one per environment, so that vector workers never share one), where each episode's results
    are written; the last episode's stay there until the next reset. Default: a temporary folder,
    removed on close. ``seed``: the first episode's seed (as ``cosim run --seed``);
    ``reset(seed=...)`` too.
    """

    metadata = {"render_modes": []}
    #: the layer this environment drives, and the traits its agent policy declares
    layer: str = ""
    agent_traits: dict = {}
    env_id: str = ""

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if cls.layer:
            _ENVS[cls.layer] = cls

    def __init__(self, scenario: str | Path, *, seed: int | None = None, trace: str | Path | list | None = None,
                 overrides: dict | None = None, compare: list | tuple | str = (), backend: str | None = None,
                 out_dir: str | Path | None = None):
        from cosim.engine.workers import resolve_jobs
        from cosim.engine.spec import resolve
        from cosim.sources.replay import ReplaySource

        self._bridge: _Bridge | None = None
        self._tmp: str | None = None
        self._mask: np.ndarray | None = None
        cfg = cfgmod.load(self.find_scenario(scenario))
        if self.layer not in cfg.layers:
            gym.logger.warn(f"{cfg.source_file} has no [layers.{self.layer}] table: the layer's defaults are used")
        table = {k: v for k, v in cfg.layers.get(self.layer, {}).items() if k != "enabled"}
        table["policies"] = [AGENT, *([compare] if isinstance(compare, str) else compare)]
        cfg = dataclasses.replace(cfg, layers={self.layer: table})
        values = {"scenario.jobs": 1, "output.coverage": False, **(overrides or {})}
        self.cfg = resolve_jobs(cfgmod.apply_overrides(cfg, values, where="overrides"), most=2)  # 0: auto
        if self.cfg.scenario.jobs > 2:  # the agent's policy answers in this process, between steps
            raise ConfigError(f"overrides: scenario.jobs = {self.cfg.scenario.jobs}: an environment runs its layer's "
                              "policies in its own process (1, or 2 with SUMO in its own)")
        #: the run resolved once, checked before the first reset (each episode resolves its seed's)
        self.prepared = resolve(self.cfg, traffic="replay" if trace is not None else "sumo", label="overrides")
        self.checked_layer = self.prepared.layers[0]  # built once, not run: its catalog etc.
        self.layer_cfg = self.checked_layer.cfg
        traces = trace if isinstance(trace, (list, tuple)) else [trace] if trace is not None else []
        self.traces = [Path(t) for t in traces]
        for t in self.traces:  # a missing or unknown trace is an error now, not at the first reset
            ReplaySource(t, net=self.prepared.net)
        self.backend = backend
        if out_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="cosim-gym-")
            self.out_dir = Path(self._tmp)
        else:
            try:
                Path(out_dir).mkdir(parents=True, exist_ok=True)
                self.out_dir = Path(tempfile.mkdtemp(prefix="env-", dir=out_dir))
            except OSError as exc:
                raise CosimError(f"out_dir {out_dir}: cannot create a folder there ({exc.strerror or exc})") from None
        self._first_seed = seed
        self.session = None
        self.episode_seed: int | None = None
        self.summary: dict | None = None

    @staticmethod
    def find_scenario(scenario: str | Path) -> Path:
        """``scenario`` as given (relative to the working directory), else, for a relative path
        that is not there, the same path in the cosim checkout (``scenarios/...`` from anywhere)."""
        path = Path(scenario)
        if not path.exists() and not path.is_absolute():
            shipped = Path(cosim.__file__).resolve().parents[1] / path
            if shipped.exists():
                return shipped
        return path

    def check_action(self, action: Any) -> int:
        """``action`` as an int of the Discrete action space; anything else is one ValueError
        line (an integer scalar or a one-element integer array is accepted)."""
        a = np.asarray(action)
        if a.size != 1 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"action {action!r}: expected one integer of {self.action_space}")
        a = int(a.reshape(()))
        if not 0 <= a < self.action_space.n:
            raise ValueError(f"action {a}: outside {self.action_space} (0..{self.action_space.n - 1})")
        return a

    # -- what a subclass says --------------------------------------------------------------
    def observe(self, question: tuple) -> tuple[dict, np.ndarray, dict]:
        """The observation, the action mask and the info of a question the layer asks."""
        raise NotImplementedError

    def answer(self, question: tuple, action: Any) -> tuple[Any, dict]:
        """What ``gym:agent`` returns to the layer for ``action``, and info about it."""
        raise NotImplementedError

    def cost_since(self, layer: Any, start: bool) -> float:
        """What the agent's decisions cost since the last call (``start``: a new episode; reset
        the counters and return 0)."""
        raise NotImplementedError

    def local_answers(self) -> Callable[[tuple], Any] | None:
        """For the episode starting (``self.episode_seed`` is set): a function the run
        calls on each question first — its answer, or None to ask the agent — for the decisions
        the agent does not take (e.g. at an RSU it does not drive). It must not hold the
        environment. Default: None, every question goes to the agent."""
        return None

    def final_observation(self) -> dict:
        """The observation returned with the episode's end (no question is pending)."""
        raise NotImplementedError

    # -- Gymnasium ---------------------------------------------------------------------------
    @property
    def agent_layer(self) -> Any:
        """The layer instance of the current episode."""
        return self.session.layers[0] if self.session is not None else None

    @staticmethod
    def _episode(ref: weakref.ref, cfg: Any, net: Any, out_dir: Path, backend: str | None, seed: int,
                 trace: Path | None) -> dict:
        """One run, in the run's greenlet (the same calls as cosim run / cosim replay). It holds
        the environment only weakly: an environment dropped without close() is collected, and
        its finaliser ends the run."""
        from cosim.engine.loop import drive
        from cosim.runner import open_replay, open_run

        cfg = cfgmod.apply_overrides(cfg, {"scenario.seed": seed}, where="reset(seed)")
        # the network is read once; the RSUs' compute and bandwidth are drawn from the seed
        if trace is not None:
            session, source = open_replay(cfg, trace, out_dir, overwrite=True, net=net)
        else:
            session, source = open_run(cfg, out_dir, backend=backend, overwrite=True, net=net)
        env = ref()
        if env is None:
            raise EpisodeAbort("the environment is gone")
        env.session = session
        env.cost_since(session.layers[0], start=True)
        del env
        return drive(session, source, progress=False, signals=False)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """A new episode (``options`` are not used). An episode in which the agent is never
        asked (no request came) is skipped: the next seed is drawn, up to five times."""
        if seed is None and self._first_seed is not None:
            seed, self._first_seed = self._first_seed, None
        elif seed is not None:
            self._first_seed = None
        super().reset(seed=seed)
        self._stop()
        for attempt in range(5):
            ep_seed = seed if seed is not None and attempt == 0 else int(self.np_random.integers(2**31 - 1))
            trace = self.traces[int(self.np_random.integers(len(self.traces)))] if self.traces else None
            self.episode_seed, self.trace = ep_seed, trace
            self.summary = None
            ref, cfg, net, out, backend = weakref.ref(self), self.cfg, self.prepared.net, self.out_dir, self.backend
            self._bridge = _Bridge(lambda: CosimEnv._episode(ref, cfg, net, out, backend, ep_seed, trace),
                                   self.local_answers())
            kind, what = self._bridge.next()
            if kind == "decide":
                self._question = what
                obs, mask, info = self.observe(what)
                self._mask = mask
                return obs, {**info, "action_mask": mask, "episode_seed": ep_seed}
            self.summary = what
        raise RuntimeError(f"{self.cfg.source_file}: five episodes without a single decision for layer "
                           f"'{self.layer}' (no requests? check its rate and the RSUs' coverage)")

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        if self._bridge is None or not self._bridge.waiting:
            raise RuntimeError("step() before reset(), or after the episode ended: call reset()")
        reply, info = self.answer(self._question, self.check_action(action))
        self._bridge.answer(reply)
        kind, what = self._bridge.next()
        reward = -self.cost_since(self.agent_layer, start=False)
        if kind == "decide":
            self._question = what
            obs, mask, more = self.observe(what)
            self._mask = mask
            return obs, reward, False, False, {**info, **more, "action_mask": mask}
        self.summary = what
        obs = self.final_observation()
        mask = np.zeros(self.action_space.n, dtype=bool)
        mask[0] = True
        # the end of the run is a time limit (the scenario's end or the traffic's), not a state
        # the agent reached: truncated
        return obs, reward, False, True, {**info, "action_mask": mask, "summary": what}

    def action_masks(self) -> np.ndarray:
        """The current action mask (what sb3-contrib's MaskablePPO asks for)."""
        if self._mask is None:
            raise RuntimeError("action_masks() before reset(): call reset() first")
        return self._mask.copy()

    def __getstate__(self) -> dict:
        raise TypeError(f"a {type(self).__name__} cannot be copied or pickled (it holds a running simulation); "
                        "make another with gym.make, or gym.make_vec for several")

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _stop(self) -> None:
        if getattr(self, "_bridge", None) is not None:
            self._bridge.abort()
            self._bridge = None

    def close(self) -> None:
        self._stop()
        if getattr(self, "_tmp", None) is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        super().close()
