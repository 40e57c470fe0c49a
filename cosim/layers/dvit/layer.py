"""The DViT distributed-inference layer: schedules denoising steps against live SUMO traffic.

Every slot, tasks arrive as a Poisson stream (``request_rate_per_s`` over the whole network),
each from a vehicle drawn among those in coverage. Each task is planned at its request time by
every configured policy on the world of that slot (same request, same fading for every policy),
then *executed* over the following slots as SUMO moves the vehicles:

* the request upload D_req / B(user -> RSU) comes first; then each step k starts when step k-1
  ends and is charged with the rates of the slot it starts in (eq. 7);
* a helper that has left the simulation or the RSU's coverage before its step, or a step that
  cannot run within T_max on its device — whoever holds the latent — while another device can
  do it in time, makes the RSU reschedule the remaining steps with the same policy (the paper's
  rule; ours: on a sub-problem whose origin is the device holding the result, once per step);
* a scheduler registered ``replan = "every-step"`` (VIDI, ``optimal-cl``) decides again at every
  step completion from the holder, on that slot's world (the paper's decision epochs, closed
  loop; once per slot and holder: within a slot the world does not change); one registered
  ``replan = "step"`` decides before every single step, also within a slot (the Gymnasium
  environment's agent, :mod:`cosim.gym`, whose decision is one step's device); the layer-wide
  ``replan`` (not "policy") puts every policy on the same level instead;
* a helper that vanishes while holding the result loses the task ("device-lost"); the user
  leaving coverage before the result reaches it breaks C4; a step over T_max breaks C3;
* ``handover = "fail"`` (the paper): a user served by another RSU when the result is due fails
  C4; ``"migrate"`` (ours, beyond the paper): at the next step the old RSU forwards the latent
  (if it holds it) over the backhaul and the new RSU reschedules with its own helpers.

Ours, not the paper's: the last ``local_steps`` steps run on the user (the paper puts the
final steps on the user with its local prompt but does not say how many); the ``calibrated``
preset (Sec. IV's compute figures read as x100, see costmodel); migration at a handover.

Success is judged on what happened: all K steps done, no step over T_max, C4 held.
Results: ``dvit_tasks.parquet`` (one row per task and policy) and a ``dvit`` block per policy in
``summary.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from cosim.config import option, range_pair
from cosim.errors import ConfigError
from cosim.layers import kernel as kn
from cosim.layers.base import ROLE_HELPER, ROLE_USER, Layer, LayerContext, PolicyFailed, add_role, arrivals, register_layer
from cosim.layers.dvit import contract, schedulers  # noqa: F401 - registers the built-in schedulers
from cosim.layers.dvit.costmodel import PRESETS, DViTShape, mm1_wait_s
from cosim.layers.dvit.problem import Problem, evaluate
from cosim.recorder import Lists, columns_of
from cosim.world import World
from cosim.world import channel as ch


@dataclass(frozen=True)
class DViTConfig:
    policies: list = option(["vidi", "optimal", "optimal-cl", "mddi", "mbdi", "mcpdi", "vli", "sdi"],
                            doc="schedulers run side by side (built-in or registered by a plugin)")
    options: dict = option({}, doc="per-scheduler options: [layers.dvit.options.NAME] tables (see `cosim config`)")
    queue: str = option("analytic", choices=kn.QUEUES,
                        doc="analytic: eq. (6) M/M/1 mean wait per step; simulated: steps of a policy's concurrent "
                            "tasks wait for the same RSU, vehicles and radios")
    preset: str = option("calibrated", choices=tuple(PRESETS),
                         doc="compute ranges: calibrated (ours: Sec. IV's GFLOP/s read as x100) | paper-literal "
                             "(Sec. IV as printed); see docs/dvit.md")
    request_rate_per_s: float = option(1.0, lo=0.0, doc="tasks per second over the whole network")
    steps: int = option(50, lo=1, doc="K denoising steps per task")
    local_steps: int = option(5, lo=1, doc="the last steps run on the user (local prompt), at most steps (ours: "
                                           "the paper does not say how many)")
    t_max_s: float = option(0.8, lo=0.0, lo_open=True, doc="C3: the most a step may take [s]")
    request_bits: float = option(1e6, lo=0.0, doc="D_req, the request upload [bit]")
    image_hw: int = option(512, lo=1, doc="image height = width [px]")
    patch: int = option(16, lo=1, doc="patch size [px]")
    dim: int = option(512, lo=1, doc="transformer width")
    layers: int = option(6, lo=1, doc="L encoder layers")
    heads: int = option(8, lo=1, doc="attention heads")
    mlp_dim: int = option(2048, lo=1, doc="encoder MLP width")
    token_bits: int = option(32, lo=1, doc="bits per latent value handed over (mu)")
    max_helpers: int = option(20, lo=0, doc="candidate vehicles per task (nearest to the user within V2V range)")
    vehicle_compute_flops: list = option([], doc="[lo, hi] vehicle compute [FLOP/s]; empty = the preset's")
    rsu_compute_flops: list = option([], doc="[lo, hi] RSU compute [FLOP/s]; empty = the preset's")
    vehicle_queue: list = option([], doc="[beta, eta] M/M/1 arrival and service rates [1/s]; empty = the preset's")
    rsu_queue: list = option([], doc="[beta, eta] of the RSU [1/s]; empty = the preset's")
    handover: str = option("fail", choices=("fail", "migrate"),
                           doc="the user handed over to another RSU mid-task: fail (the paper: C4 at the hand-off) | "
                               "migrate (ours: the old RSU forwards the latent over the backhaul, the new RSU "
                               "reschedules the remaining steps with its own helpers)")
    backhaul_rate_bps: float = option(1e9, lo=0.0, lo_open=True,
                                      doc="RSU-to-RSU backhaul rate for handover = migrate [bit/s] (ours: 1 Gbit/s)")
    backhaul_latency_s: float = option(0.005, lo=0.0,
                                       doc="RSU-to-RSU backhaul latency for handover = migrate [s] (ours: 5 ms)")
    ahead: str = option("route", choices=("route", "straight"),
                        doc="where the schedulers see each vehicle going (VIDI's H'): along its SUMO route (straight "
                            "ahead where the source has none, as in a replayed trace) | straight ahead always (a "
                            "replay then reproduces a live run exactly)")
    replan: str = option("policy", choices=("policy", "request", "every-step", "step"),
                         doc="when every policy decides: policy (each its registered trait: VIDI and optimal-cl "
                             "every-step, the others request) | request (plan once; re-plan only to reschedule) | "
                             "every-step (also at each step completion in a new slot or on a new holder) | step "
                             "(before every step): one information level for all (a policy registered step refuses "
                             "request and every-step), see docs/dvit.md")
    execute: bool = option(False, doc="really run the scheduled steps (torch DiT + DDIM) for some tasks")
    execute_max_tasks: int = option(2, lo=0, doc="tasks executed per policy (~2.7 TFLOP each at the default shape)")


def _check(cfg: DViTConfig, where: str) -> None:
    """What the fields' own ranges cannot say: the keys that bound one another."""
    if cfg.local_steps > cfg.steps:
        raise ConfigError(f"{where}.local_steps: must be between 1 and steps ({cfg.steps})")
    if cfg.dim % cfg.heads or cfg.image_hw % cfg.patch:
        raise ConfigError(f"{where}: dim must divide by heads and image_hw by patch")


@dataclass
class Task(kn.Task):
    user: str = ""
    rsu: int = -1  # the RSU in charge (changes when the task migrates)
    request_rsu: int = -1  # the RSU that received the request
    plan: list = field(default_factory=list)  # device names for the remaining steps ("@rsu" = the RSU)
    holder: str = "@rsu"
    devices: list = field(default_factory=list)
    comm: list = field(default_factory=list)
    comp: list = field(default_factory=list)
    queue: list = field(default_factory=list)
    planned_s: float = float("nan")
    planned_ok: bool = False  # the plan met C1-C4 on the world it was made on
    reschedules: int = 0
    c3_violations: int = 0
    rescheduled_at: int = -1  # step index of the last reschedule (at most one per step)
    migrations: int = 0  # handovers of the user the task followed (handover = "migrate")
    migrate_s: float = 0.0  # time spent forwarding the latent between RSUs [s]
    replans: int = 0  # decisions taken again at a step completion (replan = "every-step" | "step")
    planned_at: tuple = ()  # (slot, holder) of the last plan
    planned_k: int = 0  # steps done when the last plan was made

    @property
    def k(self) -> int:
        return len(self.devices)


RSU_NAME = "@rsu"


@dataclass
class _SlotCache:
    """What the layer derives from one slot's world, kept for that slot only."""

    cpu: np.ndarray | None = None  # c_n of every vehicle of the snapshot
    v2v: dict = field(default_factory=dict)  # (i, j) -> V2V rate, one pair at a time
    problems: dict = field(default_factory=dict)  # build_problem's arguments -> (problem, names)
    near: dict = field(default_factory=dict)  # (user, rsu) -> its neighbourhood (_near)
    ahead: "_SlotAhead | None" = None  # every vehicle's cells ahead, walked on first need (_ahead_of)
    # what a step reads of one vehicle, as Python lists by snapshot index (_step_view): the serving
    # RSU, the I2V rate from it [bit/s], c_n [FLOP/s] — the world's numbers as Python ones
    serving: list | None = None
    i2v: list | None = None
    cpu_list: list | None = None


@dataclass
class _SlotAhead:
    """The cells ahead of the snapshot's vehicles (:meth:`DViTLayer._ahead_of`), by snapshot index."""

    xy: np.ndarray  # (n, M, 2) cell centres
    offset: np.ndarray  # (n,) how far into its cell [m]
    done: np.ndarray  # (n,) walked

    @classmethod
    def empty(cls, n: int, cells: int) -> "_SlotAhead":
        return cls(np.empty((n, cells, 2)), np.empty(n), np.zeros(n, dtype=bool))


@register_layer("dvit")
class DViTLayer(Layer):
    config_class = DViTConfig
    policy_kind = "scheduler"
    shardable = True  # its policies share nothing but the world and the requests
    #: what a process holding any of its policies spends once (the requests, each task's problems,
    #: numba's start): CPU s per 300 s of grid6 (docs/performance.md, "Issue 32, fourth pass:
    #: dealing whole layers")
    shared_cost = 0.32
    task_table = "dvit_tasks"  # one row per task and policy: cosim.pairing compares the policies on it
    policy_protocol = contract.Scheduler
    check_policy = classmethod(contract.check_scheduler)  # what `cosim check` runs on one of its policies
    task_view = contract.TASK_VIEW  # how cosim view draws a task
    headline_metrics = contract.HEADLINE_METRICS  # what cosim view, report and plot show
    #: ``replan``: when the layer asks the scheduler for a plan — "request" (at the request, and
    #: again only to reschedule) or "every-step" (also at every step completion, from the device
    #: holding the result, on that slot's world: a closed loop over the decision epochs, once per
    #: slot and holder) or "step" (before every step, also within a slot: one decision per step).
    #: ``looks_ahead``: the scheduler reads ``problem.ahead_xy`` / ``cell_offset_m`` (each device's
    #: route ahead, a walk per device); False spares that work (they are then empty)
    policy_traits = {"replan": "request", "looks_ahead": True}
    REPLAN = ("request", "every-step", "step")

    def __init__(self, config: dict, ctx: LayerContext):
        super().__init__(config, ctx)
        c, where = self.cfg, self.where
        _check(c, where)
        preset = PRESETS[c.preset]
        self.shape = DViTShape(c.image_hw, c.patch, c.dim, c.layers, c.heads, c.mlp_dim, c.token_bits)
        self.veh_cpu = range_pair(c.vehicle_compute_flops or list(preset.vehicle_compute_flops), f"{where}.vehicle_compute_flops")
        self.rsu_cpu = range_pair(c.rsu_compute_flops or list(preset.rsu_compute_flops), f"{where}.rsu_compute_flops")
        vq = c.vehicle_queue or list(preset.vehicle_queue)
        rq = c.rsu_queue or list(preset.rsu_queue)
        for key, q in (("vehicle_queue", vq), ("rsu_queue", rq)):
            if len(q) != 2 or not 0 <= q[0] < q[1]:
                raise ConfigError(f"{where}.{key}: expected [beta, eta] with 0 <= beta < eta, got {q!r}")
        self.veh_wait = mm1_wait_s(*vq)
        self.rsu_wait = mm1_wait_s(*rq)
        self.flops_step = self.shape.flops_per_step()
        self.bits = self.shape.handoff_bits()
        for name, pol in self.configured.items():
            if pol.traits["replan"] not in self.REPLAN:
                raise ConfigError(f"{where}.policies: scheduler '{name}' ({pol.spec.origin}) declares replan = "
                                  f"{pol.traits['replan']!r}; expected one of {', '.join(self.REPLAN)}")
        if c.replan in ("request", "every-step"):
            for name, pol in self.configured.items():
                if pol.traits["replan"] == "step":  # its plan is one step's decision, the rest filler
                    raise ConfigError(f"{where}.replan: {c.replan!r} would ask '{name}' less often than it decides "
                                      f"(registered replan = \"step\": one step per decision); use \"policy\" or \"step\"")
        #: when each policy decides: its registered trait, or the layer-wide ``replan`` for all alike
        self.replan = {name: pol.traits["replan"] if c.replan == "policy" else c.replan
                       for name, pol in self.policies.items()}
        #: road-grid cells of each vehicle's route walked for the schedulers (``problem.ahead_xy``):
        #: AHEAD_CELLS, or more where a configured policy's options ask for more ``horizon_cells``
        #: (VIDI's H'; every configured policy, so every process of a sharded run walks alike), so that no
        #: scheduler's horizon is cut short by the walk
        self.ahead_cells = max([self.AHEAD_CELLS] + [int(getattr(pol.options, "horizon_cells", 0) or 0)
                                                     for pol in self.configured.values()])
        #: (task, world, device names) while a policy is asked for a plan (for observers: cosim.gym reads it)
        self.deciding: tuple | None = None
        self.kernel = kn.Kernel(list(self.policies), c.queue)
        #: task_s: the task time spent so far by each policy's tasks after their uploads (steps,
        #: migrations) [s]: what a decision costs, read by cosim.gym between decisions
        self.stats = {p: {"planned": [], "reschedules": 0, "migrations": 0, "task_s": 0.0} for p in self.policies}
        self.next_id = 0
        self._rsu_cpu: dict[int, float] = {}
        self._cache_slot, self._cache = -1, _SlotCache()
        self._rows: dict[str, list] = {}  # policy -> the rows of its tasks finished this slot (_finish)

    def on_start(self) -> None:
        self.table = self.ctx.table(self.task_table)

    # -- the world as a scheduling problem ---------------------------------------------------
    def _compute(self, world: World, idx: np.ndarray) -> np.ndarray:
        """c_n of the vehicles at snapshot indices ``idx`` (fixed per vehicle, cached per slot)."""
        return self._cpu(self._slot_cache(world), world)[idx]

    def _cpu(self, c: "_SlotCache", world: World) -> np.ndarray:
        """c_n of every vehicle in the slot: the world's c_n draw, mapped onto this layer's range
        (drawn once a slot, kept in the slot's cache ``c``)."""
        if c.cpu is None:
            c.cpu = world.vehicle_draw(ch.VEH_CPU, *self.veh_cpu)
        return c.cpu

    def _step_view(self, world: World) -> "_SlotCache":
        """The slot's cache with its per-vehicle lists filled (:class:`_SlotCache`): a step reads
        a few numbers of one vehicle, which a Python list gives faster than a numpy array (the
        same float64 values, so the same arithmetic)."""
        c = self._slot_cache(world)
        if c.serving is None:
            c.serving, c.i2v = world.serving.tolist(), world.rate_i2v_bps.tolist()
            c.cpu_list = self._cpu(c, world).tolist()
        return c

    def _slot_cache(self, world: World) -> "_SlotCache":
        """What this layer derived from ``world`` in its slot (the world is fixed within a slot);
        emptied when the slot changes."""
        if self._cache_slot != world.slot:
            self._cache_slot, self._cache = world.slot, _SlotCache()
        return self._cache

    def _rsu_compute(self, rsu: int) -> float:
        if rsu not in self._rsu_cpu:
            lo, hi = self.rsu_cpu
            self._rsu_cpu[rsu] = float(lo + (hi - lo) * ch.hash_uniform(self.ctx.seed, ch.RSU_CPU, rsu))
        return self._rsu_cpu[rsu]

    def build_problem(self, world: World, user: int, rsu: int, origin: int | None, steps: int,
                      upload: bool = True, ahead: bool = True, elapsed_s: float = 0.0) -> tuple[Problem, list]:
        """Devices: [origin (the RSU if None, else the holding helper)] + helpers + [user].
        ``upload``: the request upload comes first (a request; False for a re-plan mid-task).
        ``ahead``: fill ``ahead_xy`` and ``cell_offset_m`` (some scheduler reads them).
        ``elapsed_s``: the decision's time after the world's snapshot (``Problem.elapsed_s``).

        The world is fixed within a slot, so the problem is a function of the slot and these
        arguments: it is built once per slot and reused (with ``steps`` and ``elapsed_s`` set)
        by every later ask — a scheduler asked before every step asks many times from the same
        holder."""
        problems = self._slot_cache(world).problems
        key = (user, rsu, origin, upload, ahead)
        hit = problems.get(key)
        if hit is not None:
            p, names = hit
            if p.steps != steps or p.elapsed_s != elapsed_s:
                p = dataclasses.replace(p, steps=steps, local_steps=min(self.cfg.local_steps, steps),
                                        elapsed_s=elapsed_s)
            return p, names
        p, names = self._build_problem(world, user, rsu, origin, steps, upload, ahead, elapsed_s)
        problems[key] = (p, names)
        return p, names

    def _near(self, world: World, user: int, rsu: int) -> tuple:
        """The vehicles ``rsu`` serves within V2V range of ``user``, nearest first (not the user),
        and the V2V rates among the nearest ``max_helpers + 1`` of them and the user: (order,
        the vehicles of the rate matrix, the matrix, vehicle -> row, how many the RSU serves). Once per slot, user and
        RSU: a task re-planned from one holder after another (a helper is a candidate of the
        same user) finds its candidates and most of its hand-offs here."""
        key = (user, rsu)
        near_cache = self._slot_cache(world).near
        hit = near_cache.get(key)
        if hit is None:
            s = world.snap
            served = np.flatnonzero(world.serving == rsu)
            cand = served[served != user]
            d_user = np.hypot(s.x[cand] - s.x[user], s.y[cand] - s.y[user])
            near = d_user <= world.cfg.channel.v2v_range_m
            order = cand[near][d_user[near].argsort(kind="stable")]
            members = np.concatenate([order[: self.cfg.max_helpers + 1], [user]]).astype(np.int64)
            rates = world.v2v_rate_bps(members[:, None], members[None, :])  # (n, n) by broadcasting
            hit = near_cache[key] = (order, members, rates, {v: i for i, v in enumerate(members.tolist())},
                                           len(served))
        return hit

    def _build_problem(self, world: World, user: int, rsu: int, origin: int | None, steps: int, upload: bool,
                       ahead: bool, elapsed_s: float) -> tuple[Problem, list]:
        s = world.snap
        # the candidates: the served vehicles within V2V range of the user, nearest first
        # (stable), neither the user nor the origin, at most max_helpers of them
        order, _, near_rates, row_of, n_served = self._near(world, user, rsu)
        cand = (order if origin is None else order[order != origin])[: self.cfg.max_helpers]
        veh_l = ([] if origin is None else [int(origin)]) + cand.tolist() + [int(user)]
        veh = np.array(veh_l, dtype=np.int64)
        V = len(veh_l) + (1 if origin is None else 0)
        first = V - len(veh_l)  # the vehicles' rows and columns (after the RSU's, if any)
        r = world.rsus
        c_veh = self._compute(world, veh)  # c_n of the vehicles (a new array)
        comp = np.empty(V)
        queue = np.full(V, self.veh_wait)
        comp[first:] = self.flops_step / c_veh
        if origin is None:
            vidx = np.array([-1] + veh_l, dtype=np.int64)
            comp[0] = self.flops_step / self._rsu_compute(rsu)
            queue[0] = self.rsu_wait
            cpu = np.empty(V)
            cpu[0] = self._rsu_compute(rsu)
            cpu[1:] = c_veh
        else:
            vidx = veh
            cpu = c_veh
        # hand-off times n' mu / B, inf without a link (a zero rate); 0 on the diagonal (set last)
        comm = np.full((V, V), np.inf)
        rows = [row_of.get(v, -1) for v in veh_l]
        if min(rows) >= 0:  # every device among the user's neighbours of this slot: their rates
            rows = np.array(rows)
            rate = near_rates[rows[:, None], rows]
        else:  # an origin farther away: the same formula for this set
            rate = world.v2v_rate_bps(veh[:, None], veh[None, :])
        link = rate > 0
        comm[first:, first:] = np.where(link, self.bits / np.where(link, rate, 1.0), np.inf)
        if origin is None:
            i2v = world.rate_i2v_bps[veh]
            link = i2v > 0
            comm[0, 1:] = np.where(link, self.bits / np.where(link, i2v, 1.0), np.inf)
        np.fill_diagonal(comm, 0.0)
        # C1 for a helper origin: the sub-problem's device 0 is that helper (no RSU in it)
        up = world.rate_v2i_bps[user]
        upload = (self.cfg.request_bits / up if up > 0 else np.inf) if upload else 0.0
        at = np.maximum(vidx, 0)
        xy = np.empty((V, 2), dtype=np.result_type(s.x, s.y))
        xy[:, 0], xy[:, 1] = s.x[at], s.y[at]
        vel = np.empty((V, 2), dtype=np.result_type(world.vx, world.vy))
        vel[:, 0], vel[:, 1] = world.vx[at], world.vy[at]
        bw = world.bandwidth_hz[at]
        if origin is None:
            xy[0], vel[0], bw[0] = (r.x[rsu], r.y[rsu]), (0.0, 0.0), r.bandwidth_hz[rsu]
        dist = np.hypot(xy[:, 0] - r.x[rsu], xy[:, 1] - r.y[rsu])
        dwell = float(world.dwell_s[user])
        dwell = dwell if math.isfinite(dwell) else 0.0
        # the one coverage truth: the world's serving RSU and predicted dwell, per device (the RSU
        # stays; a vehicle with none predicted: 0)
        dev_dwell = world.dwell_s[at]
        dev_dwell[np.isnan(dev_dwell)] = 0.0
        if origin is None:
            dev_dwell[0] = np.inf
        dev_dwell[-1] = dwell
        ahead, offset = self._ahead_of(world, vidx, xy) if ahead else (np.zeros((0, 0, 2)), np.zeros(0))
        cc = world.cfg.channel
        p = Problem(comp, queue, comm, float(upload), dwell, steps,
                    min(self.cfg.local_steps, steps), self.cfg.t_max_s, dist_to_rsu_m=dist, bandwidth_hz=bw,
                    compute_flops=cpu, xy=xy, speed_xy=vel, rsu_share=n_served, origin_rsu=origin is None,
                    ahead_xy=ahead, cell_offset_m=offset, cell_m=world.cfg.world.grid_cell_m, dwell_s=dev_dwell,
                    handoff_bits=self.bits, v2v_range_m=cc.v2v_range_m, v2v_pl_exponent=cc.v2v_pl_exponent,
                    v2i_pl_exponent=cc.v2i_pl_exponent, min_distance_m=cc.min_distance_m, elapsed_s=elapsed_s)
        names = [str(v) for v in s.ids[at].tolist()]
        if origin is None:
            names[0] = RSU_NAME
        return p, names

    AHEAD_CELLS = 8  # road-grid cells of each device's route ahead handed to the schedulers (200 m) at least

    def _ahead_of(self, world: World, vidx: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(V, M, 2) centres of the next road-grid cells along each device's route (cell 0: where
        it is; the RSU stays put) and (V,) how far each is into its cell, walked once per vehicle
        and slot by the world's route walker (:meth:`World.route_ahead`: lane shapes, junctions
        crossed on their internal edges). Where the source knows no routes (a replayed trace) or
        the vehicle has none known (off its route, on an internal edge its route does not name),
        straight ahead along its velocity (the stated fallback).

        The walks of a slot are kept in arrays over the snapshot's vehicles (:class:`_SlotAhead`):
        a problem walks only the vehicles no earlier problem of the slot walked, the straight-ahead
        ones all at once, and gathers its rows in one indexing."""
        c = self._slot_cache(world)
        if c.ahead is None:
            c.ahead = _SlotAhead.empty(len(world.snap.ids), self.ahead_cells)
        at = c.ahead
        veh = vidx[vidx >= 0]
        new = veh[~at.done[veh]]
        if len(new):
            self._walk(world, new, at)
        # the RSU's rows (vidx -1) read snapshot row 0 and are overwritten below: row 0 exists because
        # the one caller (_build_problem) always puts the user, a snapshot vehicle, among the devices
        # (and has already indexed the snapshot with these rows for xy); an empty snapshot never gets here
        assert len(veh), "_ahead_of: no vehicle among the devices (a problem always holds its user)"
        rows = np.maximum(vidx, 0)
        out, offset = at.xy[rows], at.offset[rows]
        rsu = vidx < 0
        if rsu.any():  # the RSU stays where it is
            out[rsu] = xy[rsu][:, None, :]
            offset[rsu] = 0.0
        return out, offset

    def _walk(self, world: World, idx: np.ndarray, at: "_SlotAhead") -> None:
        """Walk snapshot vehicles ``idx`` (not walked yet this slot) into ``at``: along the route
        where the world knows one, else straight ahead (vectorised: the same elementwise
        operations as one vehicle at a time)."""
        g, M, s = world.cfg.world.grid_cell_m, self.ahead_cells, world.snap
        cells = np.arange(M) * g  # where each cell starts, from the start of the current one [m]
        half = g / 2
        offs = [p % g for p in s.lane_pos[idx].tolist()]  # how far into its cell [m]
        at.offset[idx] = offs
        at.done[idx] = True
        straight = idx
        if self.cfg.ahead == "route" and world.route_of is not None:
            straight = []
            xy = at.xy
            route_ahead = world.route_ahead
            # cell m's centre ahead [m], every vehicle's at once (the same subtraction, then addition,
            # as one vehicle's in Python): m >= 1 starts past the vehicle (m g >= off), so the
            # straight-ahead path's clip at 0 changes nothing here; cell 0 is where it is
            ahead_m = np.empty((len(offs), M))
            ahead_m[:, 0] = 0.0
            np.subtract(cells[1:], at.offset[idx][:, None], out=ahead_m[:, 1:])
            ahead_m[:, 1:] += half
            for i, r, x, y in zip(idx.tolist(), ahead_m.tolist(), s.x[idx].tolist(), s.y[idx].tolist()):
                pts, _ = route_ahead(i, r)
                if pts is None:
                    straight.append(i)
                    continue
                if pts[-1] is None:  # past the route's end (a suffix of the points): it stays at the end
                    last = (x, y)
                    for j, pt in enumerate(pts):
                        pts[j] = last = pt if pt is not None else last
                xy[i] = pts
            if not straight:
                return
            straight = np.array(straight, dtype=np.int64)
        off = at.offset[straight]
        r = np.maximum(cells[None, :] - off[:, None] + half, 0.0)
        r[:, 0] = 0.0
        vx, vy = world.vx[straight], world.vy[straight]
        sp = np.hypot(vx, vy)
        moving = sp > 0
        unit = np.zeros((len(straight), 2))
        unit[moving, 0] = vx[moving] / sp[moving]
        unit[moving, 1] = vy[moving] / sp[moving]
        at.xy[straight] = np.column_stack([s.x[straight], s.y[straight]])[:, None, :] + r[:, :, None] * unit[:, None, :]

    def _plan(self, policy: str, problem: Problem, task: Task, world: World, names: list) -> list | None:
        """The policy's plan for ``problem`` (devices ``names``): device indices, or None if it
        found none. A plan that is not ``problem.steps`` devices of the problem, or that
        :meth:`Problem.violation` finds inadmissible, is PolicyFailed."""
        # a stochastic policy's draws: one stream per task, reschedule and re-plan (a task never
        # re-planned keeps the key it had before re-plans were counted in it)
        again = f".{task.replans}" if task.replans else ""
        rng = self.rng_for(policy, world, f"dvit.{policy}.{task.task_id}.{task.reschedules}{again}")
        self.deciding = (task, world, names)
        try:
            plan = self.call(policy, problem, rng=rng)
        finally:
            self.deciding = None
        if plan is None:
            return None
        try:  # an integer array's own list is the same Python ints (the built-ins return one)
            out = plan.tolist() if isinstance(plan, np.ndarray) and plan.ndim == 1 and plan.dtype.kind in "iu" else \
                [int(x) for x in plan]
        except (TypeError, ValueError):
            raise PolicyFailed(f"returned {type(plan).__name__}, not a sequence of device indices") from None
        if len(out) != problem.steps:
            raise PolicyFailed(f"returned a plan of {len(out)} steps for a problem of {problem.steps}")
        if min(out) < 0 or max(out) >= problem.n_devices:
            raise PolicyFailed(f"returned a plan using device {min(out) if min(out) < 0 else max(out)}, outside the "
                               f"problem's devices 0..{problem.n_devices - 1}")
        why = problem.violation(out)
        if why is not None:
            raise PolicyFailed(f"returned a plan that {why}")
        return out

    def _drop(self, policy: str, exc: PolicyFailed, world: World) -> None:
        """A failed policy: one line, and its running tasks end "policy-error"."""
        self.fail(policy, str(exc))
        for task in self.kernel.running(policy):
            self._finish(task, "failed", "policy-error", world.time_s)

    # -- per slot ---------------------------------------------------------------------------
    def on_slot(self, world: World) -> None:
        with self._rows_written():  # the slot's rows, also where it raised (as they were appended one by one)
            self._slot(world)

    @contextlib.contextmanager
    def _rows_written(self):  # noqa: ANN202
        """:meth:`_write_rows` after the block, also when it raises: then a failure to write them is
        noted on the block's exception (which goes on propagating) rather than raised in its place,
        which would hide it."""
        try:
            yield
        except BaseException as exc:
            try:
                self._write_rows()
            except Exception as also:  # noqa: BLE001
                exc.add_note(f"dvit: writing the rows finished so far also failed: {type(also).__name__}: {also}")
            raise
        self._write_rows()

    def _slot(self, world: World) -> None:
        t, gamma = world.time_s, self.ctx.slot_s
        users, when = self.requested(*arrivals(world.rng("dvit.requests"), self.cfg.request_rate_per_s * gamma,
                                               np.flatnonzero(world.serving >= 0), t, gamma))
        for u, t_request in zip(users, when):
            self.submit(world, int(u), t_request)
        # every step that starts in [t, t + gamma) runs with this slot's world
        index = world.index
        self.kernel.run(t + gamma, lambda task: self._step(task, world, index, t + gamma))

    def submit(self, world: World, user: int, t_request: float) -> int:
        """A request from vehicle ``user`` (snapshot index) at ``t_request``: planned now by every
        policy on this world. Returns the task id."""
        tid = self.next_id
        self.next_id += 1
        rsu = int(world.serving[user])
        if rsu < 0:
            raise ValueError("the requesting vehicle is not in any RSU's coverage")
        ahead = any(self.policies[p].traits["looks_ahead"] for p in self.live())
        problem, names = self.build_problem(world, user, rsu, None, self.cfg.steps, ahead=ahead,  # shared by all
                                            elapsed_s=max(t_request - world.time_s, 0.0))
        for policy in self.live():
            task = Task(tid, policy, t_request, user=str(world.snap.ids[user]), rsu=rsu, request_rsu=rsu)
            p = self._contended(problem, names, policy, rsu, t_request)
            try:
                plan = self._plan(policy, p, task, world, names)
            except PolicyFailed as exc:
                self._drop(policy, exc, world)
                continue
            self.kernel.count(policy)
            if plan is None:
                self._finish(task, "failed", "infeasible", world.time_s)
                continue
            ev = evaluate(p, np.array(plan))
            task.planned_s, task.planned_ok = ev.total_s, ev.feasible
            task.plan = [names[j] for j in plan]
            task.planned_at = (world.slot, RSU_NAME)
            task.clock = task.t_request + p.upload_s
            if not math.isfinite(task.clock):
                self._finish(task, "failed", "no-uplink", world.time_s)
                continue
            self.kernel.start(task)
        return tid

    def _contended(self, problem: Problem, names: list, policy: str, rsu: int, t: float) -> Problem:
        """With the simulated queue a policy plans with each device's current backlog as its
        queue time (what its own running tasks have booked), instead of eq. (6)'s mean."""
        res = self.kernel.resources
        if res is None:
            return problem
        queue = np.array([res.wait(self._cpu_key(policy, n, rsu), t) for n in names])
        return dataclasses.replace(problem, queue_s=queue)

    @staticmethod
    def _cpu_key(policy: str, dev: str, rsu: int) -> tuple:
        return (policy, "cpu", f"{RSU_NAME}{rsu}" if dev == RSU_NAME else dev)

    def _step_time(self, world: World, index: dict, task: Task, dev: str, rsu: int,
                   c: "_SlotCache") -> tuple[float, float, float]:
        """(comm, comp, queue) of ``task``'s next step on ``dev``; ``c``: the slot's :meth:`_step_view`."""
        src = task.holder
        if dev == src:
            comm = 0.0
        elif src == RSU_NAME:
            i = index[dev]
            rate = c.i2v[i] if c.serving[i] == rsu else 0.0
            comm = self.bits / rate if rate > 0 else np.inf
        else:
            key = (index[src], index[dev])
            pairs = c.v2v  # the world is fixed within a slot: pair rates once
            rate = pairs.get(key)
            if rate is None:
                rate = pairs[key] = world.v2v_rate_pair(key[0], key[1])
            comm = self.bits / rate if rate > 0 else np.inf
        if dev == RSU_NAME:
            comp, queue = self.flops_step / self._rsu_compute(rsu), self.rsu_wait
        else:
            comp, queue = self.flops_step / c.cpu_list[index[dev]], self.veh_wait
        res = self.kernel.resources
        if res is not None:  # the sender's radio, then the device's compute, first come first served
            wait_tx = res.wait((task.policy, "tx", self._holder_key(task)), task.clock) if comm > 0 else 0.0
            queue = wait_tx + res.wait(self._cpu_key(task.policy, dev, rsu), task.clock + wait_tx + comm)
        return comm, comp, queue

    @staticmethod
    def _holder_key(task: Task) -> str:
        return f"{RSU_NAME}{task.rsu}" if task.holder == RSU_NAME else task.holder

    def _step(self, task: Task, world: World, index: dict, until: float) -> None:
        """One step of ``task`` (with the analytic queue, also the steps that follow on the same
        device and start before ``until``), or its end. Each step start is a decision epoch:
        the user's handover (``handover = "migrate"``) and a step that cannot run in time make
        the task's RSU reschedule."""
        cfg = self.cfg
        K = cfg.steps
        view = self._step_view(world)  # (the world and so the slot's cache stay the same through this call)
        serving = view.serving  # the RSU serving each vehicle, by snapshot index
        while True:
            if task.user not in index:
                return self._finish(task, "failed", "user-vanished", world.time_s)
            if task.holder != RSU_NAME and task.holder not in index:
                return self._finish(task, "failed", "device-lost", world.time_s)
            if cfg.handover == "migrate" and task.holder != task.user:
                srv = serving[index[task.user]]
                if 0 <= srv != task.rsu:
                    before = task.clock
                    if not self._migrate(task, world, index, srv):
                        return
                    if task.clock > before:
                        return  # the next step starts once the latent has arrived
            mode = self.replan[task.policy]
            if mode != "request" and task.holder != task.user and K - len(task.devices) > cfg.local_steps and (
                    task.planned_k != len(task.devices) if mode == "step" else task.planned_at != (world.slot, task.holder)):
                # a decision epoch of a closed-loop scheduler: decide again from this slot's world
                # ("every-step": within a slot the world and so the decision from the same holder
                # do not change; "step": every step is a decision of its own)
                task.replans += 1
                if not self._replan(task, world, *self._subproblem(task, world, index)):
                    return
            rsu = task.rsu
            dev = task.plan[0]
            # the holder keeps computing what it holds (no link needed); a device that is to
            # receive the result must still be in the simulation and, unless it is the user, in
            # the RSU's coverage
            reachable = dev == RSU_NAME or dev == task.holder or (
                dev in index and (dev == task.user or serving[index[dev]] == rsu))
            comm = comp = queue = 0.0
            if reachable:
                comm, comp, queue = self._step_time(world, index, task, dev, rsu, view)
            in_time = reachable and comm + comp + queue <= cfg.t_max_s
            if not in_time and dev != task.user:
                # the paper: a step that cannot be done within T_max is rescheduled to another
                # device — whoever holds the latent (once per step)
                if task.rescheduled_at != len(task.devices):
                    task.rescheduled_at = len(task.devices)
                    moved = self._reschedule(task, world, index, must=not reachable)
                    if task.status != "running":
                        return
                    if moved:
                        continue
                if not reachable:  # the new plan did not help either
                    if not (dev == RSU_NAME or dev in index):
                        return self._finish(task, "failed", "device-lost", world.time_s)
                    comm, comp, queue = self._step_time(world, index, task, dev, rsu, view)
            break
        if dev == task.user and task.holder != task.user:
            if serving[index[task.user]] != rsu:  # C4: the user must still be in coverage
                return self._finish(task, "failed", "C4", world.time_s)
        if not math.isfinite(comm):
            return self._finish(task, "failed", "no-link", world.time_s)
        step = comm + comp + queue
        if step > cfg.t_max_s + 1e-12:
            task.c3_violations += 1
        res = self.kernel.resources
        if res is not None:
            if comm > 0:
                res.use((task.policy, "tx", self._holder_key(task)), task.clock, comm)
            res.use(self._cpu_key(task.policy, dev, rsu), task.clock + step - comp, comp)
        task.devices.append(dev)
        task.comm.append(comm)
        task.comp.append(comp)
        task.queue.append(queue)
        task.clock += step
        self.stats[task.policy]["task_s"] += step
        task.holder = dev
        task.plan.pop(0)
        # the world is fixed within a slot and the analytic queue the same for every step: further
        # steps on the same device cost comp + queue each, so run the ones that start before
        # `until` as one batch (with the simulated queue every step books its device in turn)
        same = 0
        if res is None and self.replan[task.policy] != "step":
            for d in task.plan:
                if d != dev:
                    break
                same += 1
        per = comp + queue
        if same and task.clock < until and per > 0:
            j = min(same, math.ceil((until - task.clock) / per))
            if per > cfg.t_max_s + 1e-12:
                task.c3_violations += j
            task.devices += [dev] * j
            task.comm += [0.0] * j
            task.comp += [comp] * j
            task.queue += [queue] * j
            task.clock += j * per
            self.stats[task.policy]["task_s"] += j * per
            del task.plan[:j]
        if len(task.devices) >= K:
            if task.c3_violations:
                self._finish(task, "failed", "C3", world.time_s)
            else:
                self._finish(task, "done", "", world.time_s)

    def _reschedule(self, task: Task, world: World, index: dict, must: bool) -> bool:
        """Re-plan the remaining steps from the holder. ``must``: the planned device cannot be
        reached; else it is too slow, and the task moves only where another device can do the
        step within T_max. True if the plan changed; a task that cannot go on is finished."""
        if task.holder == task.user:
            task.plan = [task.user] * (self.cfg.steps - task.k)
            return True
        problem, names = self._subproblem(task, world, index)
        if not must:
            cost = problem.step_cost() + problem.comm_s[0]  # the next step on each device
            if task.plan[0] in names:
                cost[names.index(task.plan[0])] = np.inf  # ... other than the slow one
            if not np.any(cost <= self.cfg.t_max_s):
                return False  # no device can do it in time: it runs as planned, late (C3)
        task.reschedules += 1
        self.stats[task.policy]["reschedules"] += 1
        return self._replan(task, world, problem, names)

    def _subproblem(self, task: Task, world: World, index: dict) -> tuple[Problem, list]:
        """The remaining steps as a problem whose device 0 is the holder (the task's RSU, or a
        helper), on this slot's world."""
        origin = None if task.holder == RSU_NAME else index[task.holder]
        problem, names = self.build_problem(world, index[task.user], task.rsu, origin, self.cfg.steps - task.k,
                                            upload=False, ahead=self.policies[task.policy].traits["looks_ahead"],
                                            elapsed_s=max(task.clock - world.time_s, 0.0))
        return self._contended(problem, names, task.policy, task.rsu, task.clock), names

    def _replan(self, task: Task, world: World, problem: Problem, names: list) -> bool:
        try:
            plan = self._plan(task.policy, problem, task, world, names)
        except PolicyFailed as exc:
            self._drop(task.policy, exc, world)
            return False
        if plan is None:
            self._finish(task, "failed", "reschedule-infeasible", world.time_s)
            return False
        task.plan = [names[j] for j in plan]
        task.planned_at = (world.slot, task.holder)
        task.planned_k = task.k
        return True

    def _migrate(self, task: Task, world: World, index: dict, rsu: int) -> bool:
        """``handover = "migrate"`` (ours, beyond the paper): the user is now served by ``rsu``.
        If the old RSU holds the latent it forwards it (n' mu bits) over the backhaul; a helper
        holding it keeps it. The new RSU reschedules the remaining steps with its own helpers."""
        if task.holder == RSU_NAME:
            cost = self.cfg.backhaul_latency_s + self.bits / self.cfg.backhaul_rate_bps
            task.clock += cost
            task.migrate_s += cost
            self.stats[task.policy]["task_s"] += cost
        task.migrations += 1
        self.stats[task.policy]["migrations"] += 1
        task.rsu = rsu
        return self._replan(task, world, *self._subproblem(task, world, index))

    def _finish(self, task: Task, status: str, reason: str, now: float) -> None:
        st = self.stats[task.policy]
        # all K steps ran: the latency is defined, also when a step broke C3
        latency = self.kernel.finish(task, status, reason, completed=status == "done" or reason == "C3")
        if status == "done" and self.cfg.execute and st.setdefault("executed", 0) < self.cfg.execute_max_tasks:
            self._execute(task, st)
        if math.isfinite(task.planned_s):
            st["planned"].append(task.planned_s)
        rows = self._rows.get(task.policy)
        if rows is None:
            rows = self._rows[task.policy] = []
        rows.append((
            task.task_id, task.policy, task.t_request, task.user, task.request_rsu, self.cfg.steps,
            list(task.devices), float(np.add.reduce(task.comm)), float(np.add.reduce(task.comp)),
            float(np.add.reduce(task.queue)), list(task.comm), list(task.comp), list(task.queue),
            task.planned_s, task.planned_ok, latency, task.reschedules, task.migrations, task.migrate_s, task.rsu,
            task.replans, status == "done", reason, status))

    #: ``dvit_tasks``' columns in the order of the row tuples :meth:`_finish` keeps; the list
    #: columns with their Arrow item type, the string columns (object arrays), the number and
    #: boolean columns with their numpy dtype (the types numpy inferred from the values before,
    #: now said, so a value of another type is converted or refused, not a new column type)
    COLUMNS = ("task", "policy", "t_request_s", "user", "rsu", "steps", "devices", "comm_s", "comp_s", "queue_s",
               "step_comm_s", "step_comp_s", "step_queue_s", "planned_latency_s", "planned_feasible", "latency_s",
               "reschedules", "migrations", "migrate_s", "final_rsu", "replans", "success", "failure", "outcome")
    LIST_COLUMNS = {"devices": pa.string(), "step_comm_s": pa.float64(), "step_comp_s": pa.float64(),
                    "step_queue_s": pa.float64()}
    STRING_COLUMNS = frozenset({"policy", "user", "failure", "outcome"})
    NUMBER_COLUMNS = {"task": np.int64, "t_request_s": np.float64, "rsu": np.int64, "steps": np.int64,
                      "comm_s": np.float64, "comp_s": np.float64, "queue_s": np.float64,
                      "planned_latency_s": np.float64, "planned_feasible": np.bool_, "latency_s": np.float64,
                      "reschedules": np.int64, "migrations": np.int64, "migrate_s": np.float64,
                      "final_rsu": np.int64, "replans": np.int64, "success": np.bool_}

    def _write_rows(self) -> None:
        """Hand the rows of the tasks finished since the last call to the table: one batch per
        policy (in the configured order; each its rows in the order they finished), a column a
        list of the rows' values. The session joins a slot's batches grouped by policy in that
        order (:func:`cosim.recorder.write_grouped`) and the recorder builds each column's array
        once per flush, so the table is the same as with one batch of one-element arrays a row;
        called at the end of every slot and of the run."""
        if not self._rows:
            return
        held, self._rows = self._rows, {}
        lists, strings, numbers = self.LIST_COLUMNS, self.STRING_COLUMNS, self.NUMBER_COLUMNS
        for policy in [*self.policies, *(p for p in held if p not in self.policies)]:
            rows = held.get(policy)
            if not rows:
                continue
            batch = {}
            for name, col in columns_of(self.COLUMNS, rows).items():
                if name in lists:
                    batch[name] = Lists(list(col), lists[name])
                elif name in strings:
                    batch[name] = np.array(col, dtype=object)
                else:
                    batch[name] = np.array(col, dtype=numbers[name])
            self.table.append(batch)

    def _execute(self, task: Task, st: dict) -> None:
        """Run the task's schedule for real; compare with one device; measure the hand-offs."""
        import torch

        from cosim.layers.dvit.execute import execute_plan, execute_single
        from cosim.layers.dvit.model import DiT

        if not hasattr(self, "_model"):
            torch.manual_seed(self.ctx.seed)
            self._model = DiT(self.shape).eval()
        g = torch.Generator().manual_seed(self.ctx.seed)
        public = torch.randn(1, self.shape.dim, generator=g)  # the RSU's public prompt embedding
        local = torch.randn(1, self.shape.dim, generator=torch.Generator().manual_seed(int(ch.stable_uid(task.user)) % 2**62))
        seed = self.ctx.seed * 1_000_003 + task.task_id
        res = execute_plan(self._model, task.devices, task.user, public, local, seed, rsu=RSU_NAME)
        ref = execute_single(self._model, task.devices, task.user, public, local, seed)
        st["executed"] += 1
        st["max_abs_diff"] = max(st.get("max_abs_diff", 0.0), float((res.image - ref).abs().max()))
        st.setdefault("handoff_bytes", []).extend(b for _, _, b in res.handoffs)
        leaked = any(d.name != task.user and "local" in d.conds_used for d in res.devices.values())
        st["local_prompt_left_user"] = bool(st.get("local_prompt_left_user", False) or leaked)

    def on_end(self) -> dict:
        with self._rows_written():  # the rows censored before anything raised are kept
            for task in self.kernel.running():  # no outcome yet: neither success nor failure
                self._finish(task, kn.CENSORED, kn.CENSORED, float("nan"))
        out = {}
        for p, st in self.stats.items():
            out[p] = {
                **self.kernel.block(p),
                "mean_planned_latency_s": float(np.mean(st["planned"])) if st["planned"] else None,
                "reschedules": st["reschedules"],
                "migrations": st["migrations"],
            }
            if self.cfg.execute:
                hb = st.get("handoff_bytes", [])
                out[p]["execution"] = {
                    "tasks_executed": st.get("executed", 0),
                    "max_abs_diff_vs_single_device": st.get("max_abs_diff"),
                    "local_prompt_left_user": st.get("local_prompt_left_user", False),
                    "handoff_bytes_mean": float(np.mean(hb)) if hb else None,
                    "handoff_bytes_eq4": self.bits / 8,  # n' mu
                }
        return out

    def longest_task_s(self) -> float:
        """Every step within C3's T_max: ``steps x t_max_s`` (the upload and a migration's backhaul
        come on top; a drain of this long leaves few tasks censored)."""
        return self.cfg.steps * self.cfg.t_max_s

    def roles(self, policy: str | None = None) -> dict[str, str]:
        """The users of running tasks, and the vehicle holding each one's latent (it runs, or has
        just run, the current denoising step; the RSU is no vehicle)."""
        out: dict[str, str] = {}
        for task in self.kernel.running(policy):
            add_role(out, task.user, ROLE_USER)
            if task.holder not in (RSU_NAME, task.user):
                add_role(out, task.holder, ROLE_HELPER)
        return out
