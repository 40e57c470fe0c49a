"""A layer's policies spread over worker processes (``scenario.jobs >= 3``), with the results
of one process.

The policies of a layer are compared side by side: each sees the same world and the same
requests and shares no state with the others (DViT's schedulers, MoE's pricing policies, the
cache's eviction policies each keep their own tasks, devices and caches). So with ``jobs = N >=
3`` (SUMO's process, the plugin's, and N - 2 workers) the policies of every layer that says so
(:attr:`cosim.layers.base.Layer.shardable`) are dealt over the plugin's process and the
workers — N - 1 shares — so that the busiest is as light as the deal finds, by each policy's
registered ``cost`` and each layer's ``shared_cost`` (what a process holding any of its
policies spends once: a layer stays whole in one process unless splitting it pays; :func:`plan`).
Each worker keeps its
own copy of the world, built from the same snapshots (and the same routes) as the plugin's, and
runs its layers (each with its share of the policies) on it; it sends each slot's table rows
back, and the plugin's process writes them. A worker may fall behind by up to
:data:`LAG_SLOTS` slots, so a slot in which one policy is slow does not hold up the others.

**Row order.** Every run, in one process or several, writes a slot's rows of a layer grouped
by policy in the configured order (:func:`cosim.recorder.write_grouped`), so the tables and
``summary.json`` are the same whatever ``jobs`` is (tested on every shipped layer).

**What stays in the plugin's process**: layers that do not declare themselves shardable (a
layer of your own, unless it sets ``shardable = True``), and every policy a fresh process could
not import — one registered in the script that started the run (``__main__``) rather than in a
module named in ``scenario.plugins``. ``attach`` (your own TraCI loop) and ``--gui`` run in one
process.

**Failures.** A layer raising in a worker ends the run as it would in one process (status
``failed``, the error line naming the layer); a worker that dies ends it too. Every slot all
processes finished is on disk; the summary has every policy's block.
"""

from __future__ import annotations

import dataclasses
import itertools
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

import numpy as np

from cosim.engine import processes
from cosim.engine.processes import available_cores
from cosim.engine.signals import interrupt_pending, interrupts
from cosim.errors import CosimError, WorkerDied
from cosim.recorder import Coded, LayerTables

if TYPE_CHECKING:
    from cosim.config import Config
    from cosim.world import World

#: the plugin's own load when policies are dealt (world and recording: CPU seconds per 300 s of
#: grid6, in the unit of :attr:`cosim.registry.PolicySpec.cost`)
PLUGIN_LOAD = 1.3
#: a worker's own load besides its policies (its copy of the world and the snapshots' pipe: 0.46 s
#: per 300 s of grid6, measured in issue 14's second pass), in the same unit
WORKER_LOAD = 0.5
#: how many slots a worker may be behind the plugin's process before it waits for it
LAG_SLOTS = 8
#: the marker a worker sends instead of its world's vehicle id list (the plugin's is the same)
VEHICLES = "<world.vehicle_names>"


class WorkerError(RuntimeError):
    """A layer raised in a policy worker (as it would have raised in one process)."""


# -- dealing the policies ------------------------------------------------------------------------
@dataclass
class Plan:
    """How a run's policies are dealt: the configuration of each share (0 = the plugin's process)
    and, per layer, the configured policy order (the order rows are written in)."""

    shares: list["Config"]
    layers: list = field(default_factory=list)  # every layer with all its policies (bound, not run)
    modules: list[list[str]] = field(default_factory=list)  # per share: the modules of its policies
    order: dict[str, list[str]] = field(default_factory=dict)
    owner: dict[tuple[str, str], int] = field(default_factory=dict)  # (layer, policy) -> share
    #: per share, the load the deal expects (in the unit of the policies' ``cost``)
    loads: list[float] = field(default_factory=list)


#: at most this many layers are considered for splitting (the costliest; the rest stay whole)
SPLIT_AT_MOST = 8


@dataclass(frozen=True)
class _Dealable:
    """A layer as the deal sees it: its shared cost, the policies a worker may take, with their
    costs (configured order), and whether share 0 holds some of its policies whatever the deal."""

    name: str
    shared: float
    costs: tuple[tuple[str, float], ...]
    pinned: bool


@dataclass
class _Deal:
    owner: dict[tuple[str, str], int]
    loads: list[float]  # per share, 0 .. workers (an empty worker keeps WORKER_LOAD: not started)
    used: list[int]  # the shares holding a policy, and 0

    @property
    def top(self) -> float:
        return max(self.loads[s] for s in self.used)


def _dealable(layers: list) -> tuple[float, list[_Dealable], dict[tuple[str, str], int]]:
    """(share 0's load before the deal, the layers to deal, the policies fixed in share 0).
    Share 0 starts with :data:`PLUGIN_LOAD`, plus, for each layer that runs there whatever the
    deal (one that is not shardable or has no policy a worker could take, or with a policy a
    fresh process cannot make), the layer's ``shared_cost`` and those policies' costs."""
    base, out, fixed = PLUGIN_LOAD, [], {}
    for layer in layers:
        shared = float(getattr(layer, "shared_cost", 0.0))
        here = [p for p, pol in layer.policies.items() if not layer.shardable or _pinned(pol.spec)]
        costs = tuple((p, float(pol.spec.cost)) for p, pol in layer.policies.items() if p not in here)
        if here or not costs:  # (some of) the layer runs in the plugin's process
            base += shared + sum(layer.policies[p].spec.cost for p in here)
            fixed.update({(layer.name, p): 0 for p in here})
        out.append(_Dealable(layer.name, shared, costs, bool(here) or not costs))
    return base, out, fixed


def _deal_split(base: float, layers: list[_Dealable], workers: int, split: frozenset) -> _Deal:
    """Deal over 1 + ``workers`` shares the layers not in ``split`` whole and those in it policy
    by policy: costliest unit first (a whole layer costs its shared cost plus its policies'; a
    policy of a split layer, the layer's shared cost plus its own; ties: the configured order),
    each to the share it leaves least loaded (ties: the lower share), where a unit costs its
    policies' costs plus the layer's shared cost unless that share holds the layer already.
    Share 0 starts at ``base``, each worker at :data:`WORKER_LOAD`."""
    load = [base] + [WORKER_LOAD] * max(0, workers)
    held: list[set[str]] = [{d.name for d in layers if d.pinned}] + [set() for _ in range(max(0, workers))]
    units = []  # (cost alone, layer position, policy position, layer, its policies)
    for i, d in enumerate(layers):
        if d.name in split:
            units += [(d.shared + c, i, j, d, ((p, c),)) for j, (p, c) in enumerate(d.costs)]
        elif d.costs:
            units.append((d.shared + sum(c for _, c in d.costs), i, 0, d, d.costs))
    owner: dict[tuple[str, str], int] = {}
    for _, _, _, d, pols in sorted(units, key=lambda u: (-u[0], u[1], u[2])):
        own = sum(c for _, c in pols)
        s = min(range(len(load)), key=lambda i: (load[i] + own + (0.0 if d.name in held[i] else d.shared), i))
        load[s] += own + (0.0 if d.name in held[s] else d.shared)
        held[s].add(d.name)
        owner.update({(d.name, p): s for p, _ in pols})
    return _Deal(owner, load, sorted({0, *owner.values()}))


def _deal(layers: list, workers: int) -> tuple[_Deal, dict[tuple[str, str], int]]:
    """The deal of ``layers``' policies over 1 + ``workers`` shares (:func:`plan`), and the
    policies fixed in share 0."""
    base, dealable, fixed = _dealable(layers)
    candidates = [d for d in dealable if len(d.costs) >= 2]
    if len(candidates) > SPLIT_AT_MOST:
        total = {d.name: d.shared + sum(c for _, c in d.costs) for d in candidates}
        keep = sorted(range(len(candidates)), key=lambda i: (-total[candidates[i].name], i))[:SPLIT_AT_MOST]
        candidates = [candidates[i] for i in sorted(keep)]
    best = _deal_split(base, dealable, workers, frozenset())
    if workers > 0:
        floor = _floor(base, dealable, workers)
        whole = {d.name: WORKER_LOAD + d.shared + sum(c for _, c in d.costs) for d in dealable if d.costs}
        for size in range(1, len(candidates) + 1):
            for chosen in itertools.combinations(candidates, size):
                names = frozenset(c.name for c in chosen)
                # a whole layer's unit lands on a share starting at >= WORKER_LOAD (share 0 at
                # base > WORKER_LOAD): a deal leaving a layer whole that alone reaches the best
                # maximum cannot lower it — skipped, the same deal kept (auto_jobs' cost)
                if max(floor, max((w for n, w in whole.items() if n not in names), default=0.0)) >= best.top:
                    continue
                d = _deal_split(base, dealable, workers, names)
                if d.top < best.top - 1e-9:  # strictly lower than every earlier choice: ties keep fewer splits
                    best = d
    return best, fixed


def _floor(base: float, dealable: list[_Dealable], workers: int) -> float:
    """A lower bound of the busiest share's load in every deal over 1 + ``workers`` shares,
    whichever layers are split: share 0's ``base``; the mean load (every share's start, every
    policy's cost, every layer's shared cost at least once; an unused worker's WORKER_LOAD is
    below ``base``); and each policy alone with its layer's shared cost on a worker's start."""
    total = base + WORKER_LOAD * workers + sum(c for d in dealable for _, c in d.costs) \
        + sum(d.shared for d in dealable if d.costs and not d.pinned)
    one = max((d.shared + c for d in dealable for _, c in d.costs), default=0.0)
    return max(base, total / (workers + 1), WORKER_LOAD + one if workers else 0.0)


def plan(cfg: "Config", workers: int, layers: list | None = None) -> Plan:
    """Deal the policies of every shardable layer over 1 + ``workers`` shares so that the
    busiest share is as light as this finds, by each policy's registered ``cost`` and each
    layer's ``shared_cost`` (:attr:`cosim.layers.base.Layer.shared_cost`: what a share holding
    any of its policies spends once — imports, start-up, the work its policies share), which a
    share pays once per layer it holds. Each layer is kept whole — in one share — unless
    splitting it lowers the busiest share's load: every choice of layers to split is dealt
    (fewer splits first; the costliest :data:`SPLIT_AT_MOST` layers are considered) and the one
    with the lowest maximum over every choice is kept; ties (within 1e-9) go to the earliest dealt
    — fewer splits, then the earlier layers — so no layer is split unless that lowers the
    maximum. A deal goes costliest unit first — a whole
    layer, or one policy of a split layer — each to the share it leaves least loaded (ties: the
    lower share); share 0, the plugin's process, starts with :data:`PLUGIN_LOAD` (the world and
    the recording), each worker with :data:`WORKER_LOAD`. Policies a fresh process cannot
    import, and layers that are not shardable, stay in share 0 (their costs, and their layer's
    shared cost, counted there). Shares left without a policy are dropped (fewer workers start).
    The deal depends only on the costs and, for ties, on the configured order; the rows are
    written in the configured order whatever it is. ``layers``: ``cfg``'s layers with their
    policies bound (:func:`cosim.layers.base.bind_layers`, as :func:`cosim.engine.spec.resolve`
    passes them; built layers do too), else they are bound here."""
    if layers is None:
        from cosim.layers.base import bind_layers

        layers = bind_layers(cfg)
    order = {layer.name: list(layer.policies) for layer in layers}
    shardable = {layer.name: layer.shardable for layer in layers}
    deal, fixed = _deal(layers, workers)
    owner = {**fixed, **deal.owner}
    renum = {s: i for i, s in enumerate(deal.used)}
    owner = {key: renum[s] for key, s in owner.items()}
    shares = []
    for s in range(len(deal.used)):
        tables = {}
        for name, table in cfg.layers.items():
            if table.get("enabled", True) is False or name not in order:
                continue
            if not shardable.get(name, False) or not order[name]:  # runs whole in the plugin's process
                if s == 0:
                    tables[name] = dict(table)
                continue
            mine = [p for p in order[name] if owner[(name, p)] == s]
            if not mine:
                continue
            opts = {p: o for p, o in (table.get("options") or {}).items() if p in mine}
            tables[name] = {**table, "policies": mine, "options": opts}
        shares.append(dataclasses.replace(cfg, layers=tables))
    specs = {(layer.name, p): pol.spec for layer in layers for p, pol in layer.policies.items()}
    modules = [sorted({specs[k].module for k, s in owner.items() if s == i and specs[k].module
                       and not specs[k].module.startswith("cosim.")}) for i in range(len(shares))]
    return Plan(shares, layers=layers, modules=modules, order=order, owner=owner,
                loads=[deal.loads[s] for s in deal.used])


def auto_jobs(layers: list, cores: int) -> int:
    """``scenario.jobs = 0`` (``--jobs auto``): the processes worth starting on ``cores`` cores
    for these (built, not run) layers. One core: 1. Else SUMO in its own process (2), plus up to
    a worker per core left over (SUMO's process is light next to the layers'), each only if it
    pays: with k shares the busiest share's load is that of :func:`plan`'s deal over k shares
    (the policies' costs, each layer's ``shared_cost`` paid once per share holding it, the
    plugin's own :data:`PLUGIN_LOAD`, each worker's own :data:`WORKER_LOAD`); a worker more is
    started only if it lowers that by more than WORKER_LOAD.

    Cost: one :func:`plan` deal per k tried, each up to 2^:data:`SPLIT_AT_MOST` deals of the
    layers' units over k + 1 shares; a choice of layers to split is skipped where a layer it
    leaves whole alone reaches the best maximum found, and k stops where a lower bound of every
    deal (:func:`_floor`) shows it cannot pay — the same answer, for less (8 layers of 40
    policies on 64 cores: 8.4 -> 0.95 CPU s; grid6_all: milliseconds)."""
    if cores <= 1:
        return 1
    n = sum(1 for layer in layers if layer.shardable for pol in layer.policies.values() if not _pinned(pol.spec))
    if not n:
        return 2
    k, top = 1, _deal(layers, 0)[0].top
    base, dealable, _ = _dealable(layers)
    while k < min(cores, n + 1):
        if _floor(base, dealable, k) >= top - WORKER_LOAD + 1e-9:  # no deal over k shares pays
            break
        nxt = _deal(layers, k)[0].top
        if not nxt < top - WORKER_LOAD:
            break
        k, top = k + 1, nxt
    return 2 + (k - 1)


def resolve_jobs(cfg: "Config", most: int | None = None, layers: list | None = None) -> "Config":
    """``cfg`` with ``scenario.jobs = 0`` replaced by :func:`auto_jobs` (at most ``most``);
    any other value as it is. ``layers``: ``cfg``'s layers with their policies bound
    (:func:`cosim.layers.base.bind_layers`) or built, else they are bound here."""
    if cfg.scenario.jobs != 0:
        return cfg
    if layers is None:
        from cosim.layers.base import bind_layers

        layers = bind_layers(cfg)
    n = auto_jobs(layers, available_cores())
    return cfg.replace(scenario={"jobs": min(n, most) if most else n})


def _pinned(spec: Any) -> bool:
    """A policy a fresh process could not make: one registered in the script that started the
    run, or made by a loader (``PREFIX:ARGUMENT``: a trained agent, a Gymnasium environment's)."""
    return spec.module in ("__main__", "") or getattr(spec.fn, "__module__", "") == "__main__" or ":" in spec.name


# -- the plugin's side ---------------------------------------------------------------------------
def _spawn(layers: list[str]) -> tuple[subprocess.Popen, Connection]:
    """A worker process, importing the built-in ``layers``' modules while it waits for its start."""
    return processes.spawn("cosim.engine.workers", *layers)


class Warm:
    """Worker processes started before the run is checked and planned, so that their start-up
    (Python, numpy, torch, the layers' modules: ~2 s of CPU each) overlaps the plugin's own
    instead of following it. :class:`Shards` takes what it needs; :meth:`close` ends the rest
    (a run refused by its checks, or dealt over fewer workers)."""

    def __init__(self, cfg: "Config"):
        sc = cfg.scenario
        # auto: at most 3, what it deals the built-in layers' policies over (Shards starts any more)
        n = sc.jobs - 2 if sc.jobs >= 3 else min(3, available_cores() - 1) if sc.jobs == 0 else 0
        from cosim.registry import BUILTIN_LAYERS

        names = [k for k, t in cfg.layers.items() if t.get("enabled", True) is not False]
        self.spawned = [_spawn([k for k in names if k in BUILTIN_LAYERS]) for _ in range(n if names else 0)]

    def pop(self) -> tuple[subprocess.Popen, Connection] | None:
        """A started process for a worker, None when none is left."""
        return self.spawned.pop(0) if self.spawned else None

    def close(self) -> None:
        """End the processes not taken (they hold nothing yet: killed, not waited for to finish
        their imports)."""
        while self.spawned:
            proc, conn = self.spawned.pop()
            conn.close()
            processes.stop(proc, 0)


class Worker:
    """One worker process and the thread that feeds it (sending never blocks the slot loop)."""

    def __init__(self, index: int, start_msg: bytes, spawned: tuple[subprocess.Popen, Connection] | None = None):
        self.index = index
        self.proc, self.conn = spawned or _spawn([])
        self.outbox: queue.Queue = queue.Queue()
        self.outbox.put(start_msg)
        self.thread = threading.Thread(target=self._send, name=f"cosim-shard-{index}", daemon=True)
        self.thread.start()
        self.done = -1  # the last slot whose rows arrived
        self.cpu_s = 0.0
        self.error: str | None = None

    def _send(self) -> None:
        while True:
            data = self.outbox.get()
            if data is None:
                return
            try:
                processes.send_packed(self.conn, data)
            except OSError:  # gone: the reader notices and says so
                return

    def gone(self, what: str) -> CosimError:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return WorkerDied(f"policy worker {self.index} ended {what} (exit code {code}); "
                          "its policies' results stop at the last slot it sent")

    def close(self) -> None:
        """Stop feeding it and wait for it to exit (it does once told to end, or its pipe closes)."""
        self.outbox.put(None)
        self.thread.join(timeout=10)
        try:
            self.conn.close()
        except OSError:
            pass
        processes.stop(self.proc, 10)


class Shards:
    """The plugin's process side: starts the workers of ``plan`` (shares 1..), feeds them every
    slot and merges their rows with the plugin's own in the configured order."""

    def __init__(self, plan_: Plan, world: "World", prep: Any, own_tables: LayerTables, write: Any,
                 warm: Warm | None = None):
        self.plan = plan_
        self.world = world
        self.own_tables = own_tables  # the plugin's process's own
        self.write = write  # write(table name, held) in the plugin's process
        self.workers: list[Worker] = []
        self.pending: dict[int, list] = {}  # slot -> per share its rows (None until they arrived)
        self.next_write = 0
        self.tables: dict[str, str] = {}  # table -> layer, of the tables the workers opened
        self.wait_s = 0.0
        try:
            for s in range(1, len(plan_.shares)):
                msg = processes.pack(("start", plan_.shares[s], prep.net, prep.rsus, list(sys.path), plan_.modules[s]))
                self.workers.append(Worker(s, msg, warm.pop() if warm is not None else None))
            for w in self.workers:
                reply = self._recv(w, "at the start")
                if reply[0] != "started":
                    raise CosimError(f"policy worker {w.index} could not start its layers: {reply[1]}")
                self.tables.update(reply[1])
        except BaseException:
            self.close()
            raise

    def layer_of(self, table: str) -> str:
        """The layer that writes ``table`` (opened in the plugin's process or in a worker)."""
        return self.own_tables.owner.get(table) or self.tables.get(table, "")

    # -- every slot -------------------------------------------------------------------------
    def feed(self, slot: int, routes: Any) -> None:
        """Send slot ``slot``'s snapshot (the world was just updated with it) to every worker."""
        data = processes.pack(("slot", slot, self.world.snap.columns(), routes))
        self.pending[slot] = [None] * (1 + len(self.workers))  # before a worker can answer it
        for w in self.workers:
            w.outbox.put(data)

    def behind(self, slot: int) -> int:
        """How many slots the slowest live worker is behind the plugin's ``slot``."""
        done = [w.done for w in self.workers if w.error is None]
        return max(0, slot - min(done)) if done else 0

    def own(self, slot: int, rows: dict) -> None:
        """The plugin's own rows of ``slot``; writes every slot all shares have finished, and
        waits while a worker is more than :data:`LAG_SLOTS` behind."""
        self.pending[slot][0] = self._unpack(rows)
        self._poll(block_until=slot - LAG_SLOTS)
        self._write_ready()

    def _poll(self, block_until: int) -> None:
        """Take every message that arrived; block until each worker has done ``block_until``."""
        live = [w for w in self.workers if w.error is None]
        while live:
            behind = [w for w in live if w.done < block_until]
            t0 = time.perf_counter()
            ready = wait([w.conn for w in live], timeout=None if behind else 0)
            self.wait_s += time.perf_counter() - t0
            if not ready:
                return
            for w in live:
                if w.conn in ready:
                    self._receive(w, self._recv(w, "mid-run"), raise_error=True)  # all there: not cut
            live = [w for w in live if w.error is None]
            if not [w for w in live if w.done < block_until] and not any(w.conn.poll() for w in live):
                return

    def _receive(self, w: Worker, msg: tuple, raise_error: bool) -> None:
        """A worker's message: a slot's rows (kept until every share has that slot), or the error
        a layer raised there (said with its traceback, and raised when ``raise_error``)."""
        if msg[0] == "rows":
            _, slot, rows, tables, w.cpu_s = msg
            self.tables.update(tables)  # a table a layer opened after its start
            w.done = slot
            if slot in self.pending:
                self.pending[slot][w.index] = self._unpack(rows)
        elif msg[0] == "error":
            w.error = msg[1]
            sys.stderr.write(f"in policy worker {w.index}:\n{msg[2]}")
            if raise_error:
                raise WorkerError(f"{msg[1]} (in policy worker {w.index}: its traceback above)")

    def _write_ready(self) -> None:
        while self.next_write in self.pending and all(r is not None for r in self.pending[self.next_write]):
            self._write_merged(self.pending.pop(self.next_write))
            self.next_write += 1

    def _write_merged(self, shares: list[dict]) -> None:
        names = list(dict.fromkeys(n for rows in shares for n in rows))
        for name in names:
            held: dict[Any, list] = {}
            for rows in shares:
                for p, batches in rows.get(name, {}).items():
                    held.setdefault(p, []).extend(batches)
            self.write(name, held)

    def _unpack(self, rows: dict) -> dict:
        """A share's rows with a worker's world's vehicle id list replaced by the plugin's (the
        same list: both worlds saw the same snapshots) and policy codes put into the layer's
        configured order (a share's layer codes them by its own share of the policies)."""
        for name, held in rows.items():
            order = self.plan.order.get(self.layer_of(name), [])
            pos = {p: i for i, p in enumerate(order)}
            for batches in held.values():
                for b in batches:
                    for k, v in b.items():
                        if isinstance(v, Coded) and isinstance(v.names, str) and v.names == VEHICLES:
                            b[k] = Coded(v.codes, self.world.vehicle_names)
                        elif k == "policy" and isinstance(v, Coded) and list(v.names) != order and order:
                            remap = np.array([pos.get(p, -1) for p in v.names], dtype=np.int64)
                            codes = np.asarray(v.codes, dtype=np.int64)
                            b[k] = Coded(np.where(codes >= 0, remap[np.maximum(codes, 0)], -1), list(order))
        return rows

    # -- the end ------------------------------------------------------------------------------
    def end(self, own_rows: dict, own_blocks: dict, own_failed: dict) -> tuple[dict, dict]:
        """End every worker's layers: takes the rows of the slots they still had (a worker may
        lag), writes every slot fed — in full, or, where a worker failed, the rows the others sent
        — then the rows written at the end (grouped like a slot's), and returns (layer -> policy ->
        block, layer -> policy -> why it was dropped) merged in the configured order. A worker
        that is gone, or not waited for after a further Ctrl-C, has its policies' blocks say so."""
        results: list = [(self._unpack(own_rows), own_blocks, own_failed)] + [None] * len(self.workers)
        for w in self.workers:
            if w.proc.poll() is None:
                w.outbox.put(processes.pack(("end",)))
        try:
            for w in self.workers:
                while w.proc.poll() is None or w.conn.poll():
                    try:
                        msg = self._recv(w, "at the end")
                    except WorkerDied as exc:
                        w.error = w.error or str(exc)
                        break
                    if msg[0] == "ended":
                        _, rows, blocks, failed, w.cpu_s = msg
                        results[w.index] = (self._unpack(rows), blocks, failed)
                        break
                    self._receive(w, msg, raise_error=False)
        except KeyboardInterrupt:  # Ctrl-C while the workers finish their last slots: stop waiting
            for w in self.workers:
                if results[w.index] is None:
                    w.error = w.error or "not waited for after Ctrl-C"
                    processes.stop(w.proc, 0)
        for slot in sorted(self.pending):  # in order; a slot a failed worker left: the others' rows
            self._write_merged([r for r in self.pending.pop(slot) if r is not None])
        self._write_merged([r[0] for r in results if r is not None])
        blocks: dict[str, Any] = {}
        failed: dict[str, dict] = {}
        for layer, order in self.plan.order.items():
            merged: dict[str, Any] = {}
            for r in results:
                if r is not None and layer in r[1]:
                    for k, v in r[1][layer].items():
                        if k not in order:
                            merged.setdefault(k, v)  # a layer-wide key: the same in every share
            for p in order:
                s = self.plan.owner[(layer, p)]
                r = results[s]
                if r is None:
                    merged[p] = {"error": f"policy worker {s} ended before the run did: {self.workers[s - 1].error}"}
                elif p in r[1].get(layer, {}):
                    merged[p] = r[1][layer][p]
                if r is not None and p in r[2].get(layer, {}):
                    failed.setdefault(layer, {})[p] = r[2][layer][p]
            blocks[layer] = {**{p: merged[p] for p in order if p in merged},
                             **{k: v for k, v in merged.items() if k not in order}}
        return blocks, failed

    def cpu(self) -> list[float]:
        return [w.cpu_s for w in self.workers]

    def close(self) -> None:
        for w in self.workers:
            w.close()

    def _recv(self, w: Worker, what: str) -> tuple:
        """The next message of ``w``: the wait for it can be interrupted (Ctrl-C); reading it,
        once there, cannot (a message cut in two would lose the rest of the run's results)."""
        try:
            while not w.conn.poll(0.25):
                if interrupt_pending():  # Ctrl-C while the results are written: stop waiting for it
                    raise KeyboardInterrupt
            with interrupts(signal.SIGINT, signal.SIGTERM, hold=True):
                return processes.recv(w.conn)
        except (EOFError, OSError, pickle.UnpicklingError):
            w.error = w.error or "gone"
            raise w.gone(what) from None


# -- the worker ----------------------------------------------------------------------------------
def _pack(rows: dict, world: "World") -> dict:
    for held in rows.values():
        for batches in held.values():
            for b in batches:
                for k, v in b.items():
                    if isinstance(v, Coded) and v.names is world.vehicle_names:
                        b[k] = Coded(v.codes, VEHICLES)
    return rows


def _serve(conn: Connection) -> None:
    import importlib

    from cosim.layers.base import LayerContext, make_layers
    from cosim.registry import BUILTIN_LAYERS
    from cosim.sources.base import Routes, Snapshot
    from cosim.world import World

    for name in sys.argv[2:]:  # started early (Warm): import what the layers need while waiting
        try:
            importlib.import_module(BUILTIN_LAYERS[name])
        except Exception:  # noqa: BLE001 - make_layers below says it, in one line, if it matters
            pass

    def send(msg: tuple) -> None:
        processes.send(conn, msg)

    _, cfg, net, rsus, path, modules = processes.recv(conn)
    sys.path[:] = path + [p for p in sys.path if p not in path]  # the plugin's, as it imported them
    tables = LayerTables()
    try:
        import importlib.util

        for m in modules:  # the modules that registered its policies (a script may import one;
            if importlib.util.find_spec(m) is not None:  # a plugin file is loaded by make_layers)
                importlib.import_module(m)
        world = World(cfg, net, rsus=rsus)
        world.say_notes = False  # the plugin's process says them once
        layers = make_layers(cfg, LayerContext.for_run(cfg, tables.open))
        for layer in layers:
            tables.current = layer.name
            layer.on_start()
    except Exception as exc:  # noqa: BLE001 - said in one line by the plugin's process
        send(("error", f"{type(exc).__name__}: {exc}", ""))
        return
    send(("started", dict(tables.owner)))
    failed = None
    while True:
        msg = processes.recv(conn)
        if msg[0] == "end":
            break
        if failed is not None:  # a layer raised: the run is ending; wait for the end
            continue
        _, slot, cols, routes = msg
        if routes is not None:
            if world.route_of is None:
                world.route_of = Routes()
            world.route_of.receive(*routes)
        try:
            world.update(Snapshot(*cols), slot=slot)
            for layer in layers:
                tables.current = layer.name
                layer.on_slot(world)
        except Exception as exc:  # noqa: BLE001
            import traceback

            failed = f"{type(exc).__name__}: {exc}"
            send(("error", failed, traceback.format_exc()))
            continue
        send(("rows", slot, _pack(tables.drain(), world), dict(tables.owner), time.process_time()))
    blocks, dropped = {}, {}
    for layer in layers:
        try:
            blocks[layer.name] = layer.end()
        except Exception as exc:  # noqa: BLE001 - keep the other results
            blocks[layer.name] = {"error": f"{type(exc).__name__}: {exc}"}  # as the plugin's process says it
        dropped[layer.name] = dict(layer.failed)
    send(("ended", _pack(tables.drain(), world), blocks, dropped, time.process_time()))


def _serve_until_gone(conn: Connection) -> None:
    try:
        _serve(conn)
    except (EOFError, OSError):  # the plugin's process is gone (or closed the pipe): nothing to say
        pass


if __name__ == "__main__":
    processes.child_main(_serve_until_gone)
