"""The conformance suite every registered layer and policy passes (``cosim check``).

Runs on recorded snapshots shipped with cosim (30 slots of the grid6 scenario, ~450 vehicles,
in ``cosim/data/conformance/``) — no SUMO. Each check returns the list of what the target
violates, one line each; an empty list means it conforms. What a policy is checked for is its
layer's to say (:meth:`cosim.layers.base.Layer.check_policy`; the built-in layers' checks are in
their ``contract`` modules, built from this module's kit: :func:`probe`, :func:`call`,
:func:`run_layer`, :func:`first`, ...); a policy of a layer that says nothing is checked by the
layer running only it over the recorded slots and dropping nothing. The built-in kinds:

* a **DViT scheduler**: on planning problems built by the DViT layer from the recorded worlds
  (requests from the RSU and re-plans from a helper, K = 50 and K = 8), a plan is None or
  ``problem.steps`` integer devices of the problem; it respects C1/C2 (never back to the RSU,
  the user keeps the task) and the layer's local-step rule; the same generator seed gives the
  same plan; the problem is not modified; and a layer running only this scheduler over the
  recorded slots drops nothing;
* a **cache eviction policy**: one sortable key per candidate, the same for the same seed, the
  cache not modified; over the recorded slots at a memory size that forces evictions, no RSU's
  cache ever holds more than its memory or forgets what it holds;
* a **MoE pricing solver**: on games of 1, 3 and 8 IVs, ``game.n`` finite prices within the
  price range, the same for the same seed, the game not modified; a layer running only this
  solver over the recorded slots drops nothing;
* a **layer**: built from an empty table (every key has a default), it runs ``on_start``,
  ``on_slot`` on every recorded world and ``on_end``; every table append is equal-length
  columns with the same names each time; the ``on_end`` block is a dict that JSON can write,
  one entry per policy for a layer that compares policies.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from cosim import registry
from cosim.errors import ConfigError
from cosim.registry import PolicySpec

DATA = Path(__file__).parent / "data" / "conformance"


# -- the recorded worlds ---------------------------------------------------------------------
def recorded_worlds(seed: int = 1) -> tuple[Any, list]:
    """(config, [World after each recorded slot]) — every world is a separate object."""
    from cosim import config
    from cosim.sources.replay import ReplaySource
    from cosim.world import World, read_net

    cfg = config.from_dict({"scenario": {"sumocfg": str(DATA / "grid6.sumocfg"), "seed": seed, "name": "conformance"}},
                           "<conformance>")
    net = read_net(DATA / "grid6.net.xml.gz")
    world = World(cfg, net)
    src = ReplaySource(DATA / "grid6_trace.parquet", end_s=None, begin_s=180.0)
    src.start()
    worlds = []
    t = src.time_s()
    while not src.finished():
        t += cfg.scenario.slot_s
        snap = src.step_to(t)
        if not len(snap):
            break
        world.update(snap)
        worlds.append(copy.copy(world))  # the per-slot arrays are replaced, not changed, by update()
    src.close()
    return cfg, worlds


class Tables:
    """A stand-in for the recorder that checks what a layer appends."""

    def __init__(self) -> None:
        self.columns: dict[str, list] = {}
        self.problems: list[str] = []

    def table(self, name: str) -> Any:
        outer = self

        class Writer:
            def append(self, cols: dict) -> None:
                if not isinstance(cols, dict) or not cols:
                    outer.problems.append(f"table '{name}': append() got {type(cols).__name__}, not a dict of columns")
                    return
                from cosim.recorder import _column

                try:
                    lengths = {k: len(_column([v])) for k, v in cols.items()}  # as the recorder writes it
                except Exception as exc:  # noqa: BLE001
                    outer.problems.append(f"table '{name}': a column the recorder cannot write ({exc})")
                    return
                if len(set(lengths.values())) > 1:
                    outer.problems.append(f"table '{name}': columns of different lengths in one append ({lengths})")
                known = outer.columns.setdefault(name, sorted(cols))
                if sorted(cols) != known:
                    outer.problems.append(f"table '{name}': columns changed between appends "
                                          f"({', '.join(known)} -> {', '.join(sorted(cols))})")

        return Writer()


def context(tables: Tables, seed: int = 1) -> Any:
    from cosim.layers.base import LayerContext

    return LayerContext(seed=seed, slot_s=1.0, scenario_file="<conformance>", table=tables.table)


def run_layer(cls: type, table: dict, worlds: list, label: str, subject: str = "policy") -> tuple[Any, list[str]]:
    """Build ``cls`` from ``table``, run it over ``worlds``; (layer, problems). ``subject``:
    what is under test (:func:`_drive_layer`)."""
    tables = Tables()
    out: list[str] = []
    try:
        layer = cls(table, context(tables))
    except ConfigError as exc:
        return None, [f"{label}: cannot be built from {table or 'an empty table'}: {exc}"]
    with contextlib.redirect_stderr(io.StringIO()):  # a dropped policy is reported below, not as a run's warning
        return layer, out + _drive_layer(layer, tables, worlds, label, subject)


#: the start of a line that reports a bug in cosim, not a violation (cosim check counts them apart)
INTERNAL = "cosim internal error"


def _drive_layer(layer: Any, tables: "Tables", worlds: list, label: str, subject: str = "layer") -> list[str]:
    """Run ``layer`` over ``worlds``; what it violates. ``subject``: what is under test — the
    ``layer`` itself, or a ``policy`` the layer runs. A layer catches what its policies raise
    (:meth:`~cosim.layers.base.Layer.call`), so an exception that escapes it while a policy is
    checked is the layer's: a plugin layer's fault, or — for a built-in layer, and for a built-in
    layer under test — a bug in cosim, reported with its traceback in a file, not as a violation."""
    out: list[str] = []
    try:
        layer.on_start()
        for w in worlds:
            layer.on_slot(w)
        block = layer.end()
    except Exception as exc:  # noqa: BLE001 - report, do not crash the suite
        cls = type(layer)
        if cls.__module__.startswith("cosim."):
            return [_internal(label, exc)]
        if subject == "policy":
            return [f"{label}: its layer '{cls.name}' ({registry.shown_module(cls.__module__)}) raised "
                    f"{type(exc).__name__}: {exc} while "
                    "running it (a fault of the layer, not of the policy)"]
        return [f"{label}: raised {type(exc).__name__}: {exc}"]
    out += [f"{label}: {p}" for p in tables.problems]
    if not isinstance(block, dict):
        out.append(f"{label}: on_end() returned {type(block).__name__}, not a dict")
        return out
    try:
        json.dumps(block, allow_nan=True)
    except (TypeError, ValueError) as exc:
        out.append(f"{label}: the on_end() block cannot be written as JSON ({exc})")
    if getattr(layer, "policies", None):
        missing = [p for p in layer.policies if p not in block]
        extra = [k for k in block if k not in layer.policies]
        if missing or extra:
            out.append(f"{label}: the on_end() block must hold one entry per policy "
                       f"(missing {missing or 'none'}, unexpected {extra or 'none'})")
        bad = [k for k, v in block.items() if not isinstance(v, dict)]
        if bad:
            out.append(f"{label}: the on_end() entries of {bad} are not dicts")
    for name, msg in getattr(layer, "failed", {}).items():
        why = msg.split(f"'{name}' (", 1)[-1].split(") ", 1)[-1].split("; its results stop here")[0]
        out.append(f"{label}: the layer dropped policy '{name}' mid-run: it {why}")
    return out


def _internal(label: str, exc: BaseException) -> str:
    """The line for a bug in cosim met while checking ``label``; the traceback goes to a file."""
    import tempfile
    import traceback

    with tempfile.NamedTemporaryFile("w", prefix="cosim-check-", suffix=".txt", delete=False) as f:
        f.write(f"cosim check: {label}\n\n")
        traceback.print_exception(exc, file=f)
    return (f"{INTERNAL} while checking {label}: {type(exc).__name__}: {exc} — not a verdict on it; please "
            f"report it with the traceback in {f.name}")


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f"
                                                 else a == b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def state(obj: Any, skip: tuple = ()) -> dict:
    """A deep copy of ``obj``'s attributes but ``skip`` (those a policy may move, e.g. a counter)."""
    names = getattr(obj, "__slots__", None) or list(vars(obj))
    return {k: copy.deepcopy(getattr(obj, k)) for k in names if hasattr(obj, k) and k not in skip}


def call(spec: PolicySpec, args: tuple, seed: int | None, opts: Any) -> Any:
    """The policy called as its layer calls it (:func:`cosim.layers.base.call_policy`), with a
    generator of ``seed`` for a stochastic one."""
    from cosim.layers.base import call_policy

    return call_policy(spec.fn, args, np.random.default_rng(seed) if spec.stochastic else None, opts)


def probe(spec: PolicySpec, args: tuple, seed: int, opts: Any, subject: Any, changed: str, label: str, where: str,
           out: list[str], skip: tuple = ()) -> tuple[bool, Any]:
    """Call the policy on ``args``; raising, or changing ``subject`` (its input; ``skip``: the
    attributes it may move) is a violation (``changed`` says which). (returned normally, result)."""
    before = state(subject, skip)
    try:
        res = call(spec, args, seed, opts)
    except Exception as exc:  # noqa: BLE001
        out.append(f"{label}: raised {type(exc).__name__}: {exc} ({where})")
        return False, None
    if not all(same(v, getattr(subject, k)) for k, v in before.items()):
        out.append(f"{label}: {changed} ({where})")
    return True, res


def reproduces(spec: PolicySpec, args: tuple, seed: int, opts: Any, first_result: Any, equal, what: str,
               label: str, where: str, out: list[str]) -> None:
    """Call the policy again on the same ``args`` and ``seed``; a second answer that ``equal``
    (first, again) rejects is "not reproducible: the same <what> and seed gave ..." and raising on
    the repeat call is a violation too (it was a traceback out of ``cosim check``)."""
    try:
        again = call(spec, args, seed, opts)
    except Exception as exc:  # noqa: BLE001
        out.append(f"{label}: raised {type(exc).__name__} when called again on the same input: {exc} ({where})")
        return
    try:
        ok = again is not None and equal(first_result, again)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        out.append(f"{label}: not reproducible: the same {what} and seed gave another answer ({where})")


def label(spec: PolicySpec, kind: str) -> str:
    return f"{spec.layer} {kind} '{spec.name}' ({spec.origin})"


def default_options(spec: PolicySpec) -> Any:
    return spec.options() if spec.options is not None else None


def first(lines: list[str], most: int = 3) -> list[str]:
    """The first ``most`` lines of each kind (a systematic violation repeats on every case)."""
    seen: dict[str, int] = {}
    out = []
    for ln in lines:
        key = ln.split(" (")[0]
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= most:
            out.append(ln)
    return out


def runs_alone(cls: type, spec: PolicySpec, worlds: list) -> list[str]:
    """The check of a policy whose layer declares none (``Layer.check_policy = None``): the
    layer, running only this policy over the recorded slots, drops nothing."""
    _, run = run_layer(cls, {"policies": [spec.name]}, worlds, label(spec, cls.policy_kind))
    return run


def check_policy(spec: PolicySpec, worlds: list) -> list[str]:
    """What the policy's layer declares ``cosim check`` runs on it (``Layer.check_policy``;
    :func:`runs_alone` where it declares none)."""
    cls = registry.layer_class(spec.layer)
    return cls.check_policy(spec, worlds) if cls.check_policy is not None else runs_alone(cls, spec, worlds)


def check_layer(cls: type, worlds: list) -> list[str]:
    _, out = run_layer(cls, {}, worlds, f"layer '{cls.name}' ({registry.shown_module(cls.__module__)})", subject="layer")
    return out


# -- targets ---------------------------------------------------------------------------------
def resolve(target: str) -> list[tuple[str, Any]]:
    """``module:attr`` (or ``module.attr``) of a registered layer or policy, a layer name (the
    layer and all its policies), a made policy ``PREFIX:ARG`` (``rl:PATH``), or ``all``."""
    if target == "all":
        return [("layer", registry.layer_class(n)) for n in registry.layer_names()] + \
            [("policy", s) for s in registry.all_policies()]
    if target in registry.layer_names() and ":" not in target:
        return [("layer", registry.layer_class(target))] + [("policy", s) for s in registry.policies(target).values()]
    if ":" not in target:  # a registered policy's name (e.g. my-greedy), in whichever layer has it
        named = [("policy", s) for s in registry.all_policies() if s.name == target]
        if named:
            return named
    mod, sep, attr = target.partition(":")
    if sep and registry.is_loader_prefix(mod):  # a made policy, e.g. rl:runs/agent.pt (its loader names the layer)
        return [("policy", registry.make_policy("", target, "cosim check"))]
    if not sep:
        mod, _, attr = target.rpartition(".")
    if not mod or not attr:
        raise ConfigError(f"cosim check: '{target}' is not MODULE:NAME (NAME: the Python function or class), a "
                          f"registered policy's name, a layer name ({', '.join(registry.layer_names())}) or 'all' "
                          "(a module of yours: --plugin my_lab or --plugin my_lab.py)")
    registry.load_entry_points()
    try:
        module = importlib.import_module(mod)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"cosim check: cannot import '{mod}': {type(exc).__name__}: {exc}") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise ConfigError(f"cosim check: module '{mod}' has no '{attr}'")
    return [registry.find(obj)]


def run_checks(targets: list[tuple[str, Any]]) -> tuple[int, list[str]]:
    """(checks run, violations)."""
    _, worlds = recorded_worlds()
    out: list[str] = []
    for kind, obj in targets:
        out += check_layer(obj, worlds) if kind == "layer" else check_policy(obj, worlds)
    return len(targets), out
