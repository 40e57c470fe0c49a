"""The one registry of layers and policies, and plugin loading.

Everything a run can name — a layer (``[layers.NAME]``) and the policies a layer compares (DViT
schedulers, cache eviction policies, MoE pricing solvers) — is registered here, the built-in
ones exactly as a plugin's:

    from cosim import register_policy

    @register_policy("dvit", "my-greedy", options=MyGreedyOptions)
    def my_greedy(problem, rng, opts): ...

    from cosim import Layer, register_layer

    @register_layer("my_layer")
    class MyLayer(Layer): ...

A policy can also be *made* from its name: ``PREFIX:ARGUMENT`` names a policy that the loader
registered for ``PREFIX`` builds (``rl:runs/agent.pt`` loads a trained agent,
:mod:`cosim.gym.agent`; ``gym:agent`` is a Gymnasium environment's agent, :mod:`cosim.gym`).
Loaders register with :func:`register_policy_loader`; the built-in ones are imported on first use.

Plugins are modules imported before the layers are built: the scenario's ``scenario.plugins``
list (module names, or ``.py`` files relative to the scenario file) and every entry point of
the group ``cosim.plugins`` of the installed packages (found without any scenario key).

This module imports neither :mod:`cosim.config` nor :mod:`cosim.layers`: the built-in layers are
named here by module and imported when first asked for, so a run without layers does not pay
for them, and the config and the layers can both use the registry without an import circle.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import math
import sys
from dataclasses import dataclass, field
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any, Callable, Mapping

from cosim.errors import ConfigError

#: built-in layer name -> the module that registers it (imported on first use)
BUILTIN_LAYERS = {
    "dvit": "cosim.layers.dvit.layer",
    "cache": "cosim.layers.cache.layer",
    "moe": "cosim.layers.moe.layer",
}
ENTRY_POINT_GROUP = "cosim.plugins"
#: built-in policy-name prefix -> the module that registers its loader (imported on first use)
BUILTIN_LOADERS = {
    "rl": "cosim.gym.agent",
    "gym": "cosim.gym.episode",
}

_LAYERS: dict[str, type] = {}
_POLICIES: dict[str, dict[str, "PolicySpec"]] = {}
#: plugin modules loaded in this process: module name -> where it came from (a scenario key or an entry point)
PLUGINS: dict[str, str] = {}
_EP_VERSIONS: dict[str, str] = {}
#: the module name a ``.py`` plugin file is imported as (``cosim_plugin_<stem>``) -> that file's path
FILE_PLUGINS: dict[str, str] = {}
_LOADERS: dict[str, Callable[[str, str, str], "PolicySpec"]] = {}
_entry_points_loaded = False


@dataclass(frozen=True)
class PolicySpec:
    """One registered policy of one layer."""

    layer: str
    name: str
    fn: Callable[..., Any]
    #: the dataclass of its ``[layers.LAYER.options.NAME]`` keys (``cosim.config.option`` fields), or None
    options: type | None = None
    #: it draws random numbers: the layer passes it a generator (else ``None``)
    stochastic: bool = False
    #: layer-specific properties declared at registration (see each layer's ``policy_traits``)
    traits: Mapping[str, Any] = field(default_factory=dict)
    #: the module that registered it (named in errors: "the plugin")
    module: str = ""
    #: what one policy costs, roughly, relative to the others: CPU seconds per 300 s of grid6 at
    #: its layer's default load (built-ins: measured by tools/bench_policy_split.py), less what its
    #: layer's policies share (the layer's ``shared_cost``); used only to deal the policies over
    #: processes (``scenario.jobs >= 3``), never for a result
    cost: float = 1.0

    @property
    def origin(self) -> str:
        return "built-in" if self.module.startswith("cosim.") else f"plugin {shown_module(self.module)}"


def shown_module(module: str) -> str:
    """How messages name a plugin module: the path of a ``.py`` file plugin (the name it is
    imported as, ``cosim_plugin_<stem>``, is nothing the user wrote), else the module name."""
    return FILE_PLUGINS.get(module, module)


def _module_of(obj: Any) -> str:
    return getattr(obj, "__module__", "") or ""


def register_layer(name: str) -> Callable[[type], type]:
    """Class decorator: make ``name`` usable as ``[layers.NAME]``. Its ``shared_cost``
    (:attr:`cosim.layers.base.Layer.shared_cost`, the CPU a process holding any of its policies
    spends once) must be a number >= 0."""

    def deco(cls: type) -> type:
        old = _LAYERS.get(name)
        if old is not None and old is not cls and f"{old.__module__}.{old.__qualname__}" != \
                f"{cls.__module__}.{cls.__qualname__}":
            raise ConfigError(f"layer '{name}' is registered twice ({shown_module(old.__module__)} and "
                              f"{shown_module(cls.__module__)})")
        shared = getattr(cls, "shared_cost", 0.0)
        if not (isinstance(shared, (int, float)) and not isinstance(shared, bool) and math.isfinite(shared)
                and shared >= 0):
            raise ConfigError(f"layer '{name}' ({shown_module(cls.__module__)}): shared_cost must be a number >= 0, "
                              f"got {shared!r}")
        cls.name = name
        _LAYERS[name] = cls
        return cls

    return deco


def register_policy(layer: str, name: str | None = None, *, options: type | None = None, stochastic: bool = False,
                    cost: float = 1.0, **traits: Any) -> Callable[[Callable], Callable]:
    """Function (or callable class) decorator: make ``name`` a policy of ``layer``.

    ``options``: a dataclass whose fields (``cosim.config.option``) are the policy's keys under
    ``[layers.LAYER.options.NAME]``; the validated instance is passed to every call.
    ``stochastic``: the policy draws random numbers and gets a generator that depends only on
    (seed, slot, policy, task) — the same draws whichever other policies run.
    ``cost``: its CPU cost relative to other policies (CPU seconds per 300 s of grid6 at the
    layer's default load, beyond the layer's ``shared_cost``; 1 if unknown) — only how policies
    are dealt over processes.
    ``traits``: what the layer needs to know beyond the call (e.g. ``caches=False`` for a cache
    policy that never caches); each layer lists the traits it reads in ``policy_traits``.
    """

    def deco(fn: Callable) -> Callable:
        pname = name or fn.__name__.replace("_", "-")
        table = _POLICIES.setdefault(layer, {})
        old = table.get(pname)
        if old is not None and old.fn is not fn and (old.module, getattr(old.fn, "__qualname__", "")) != \
                (_module_of(fn), getattr(fn, "__qualname__", "")):
            raise ConfigError(f"policy '{pname}' of layer '{layer}' is registered twice "
                              f"({shown_module(old.module)} and {shown_module(_module_of(fn))}): give yours another "
                              "name")
        if not (isinstance(cost, (int, float)) and math.isfinite(cost) and cost > 0):
            raise ConfigError(f"policy '{pname}' of layer '{layer}' ({shown_module(_module_of(fn))}): cost must be a positive number")
        if options is not None and not hasattr(options, "__dataclass_fields__"):
            raise ConfigError(f"policy '{pname}' of layer '{layer}' ({shown_module(_module_of(fn))}): options must be a dataclass")
        table[pname] = PolicySpec(layer, pname, fn, options, stochastic, dict(traits), _module_of(fn), float(cost))
        return fn

    return deco


def register_policy_loader(prefix: str) -> Callable[[Callable], Callable]:
    """Function decorator: ``loader(layer, argument, where) -> PolicySpec`` builds the policy
    named ``PREFIX:ARGUMENT`` for ``layer`` (errors name ``where``: the scenario key; ``layer``
    "": ``cosim check PREFIX:ARGUMENT``, the loader says which layer)."""

    def deco(fn: Callable) -> Callable:
        _LOADERS[prefix] = fn
        return fn

    return deco


def is_loader_prefix(prefix: str) -> bool:
    """``PREFIX:...`` names a made policy (a built-in or a registered loader's prefix)."""
    return prefix in _LOADERS or prefix in BUILTIN_LOADERS


def make_policy(layer: str, name: str, where: str) -> "PolicySpec | None":
    """The policy ``PREFIX:ARGUMENT`` built by the loader of ``PREFIX``; None if ``name`` has no
    known prefix (then it is no made policy)."""
    prefix, sep, arg = name.partition(":")
    if not sep:
        return None
    if prefix not in _LOADERS and prefix in BUILTIN_LOADERS:
        try:
            importlib.import_module(BUILTIN_LOADERS[prefix])
        except ImportError as exc:  # e.g. an optional dependency missing: one line naming the key
            raise ConfigError(f"{where}.policies: '{name}': {exc}") from None
    loader = _LOADERS.get(prefix)
    return loader(layer, arg, where) if loader is not None else None


# -- lookups ---------------------------------------------------------------------------------
def layer_class(name: str, where: str = "") -> type:
    """The class registered for ``[layers.NAME]`` (importing a built-in layer on first use)."""
    load_entry_points()
    if name not in _LAYERS and name in BUILTIN_LAYERS:
        importlib.import_module(BUILTIN_LAYERS[name])
    if name not in _LAYERS:
        known = ", ".join(layer_names()) or "none"
        raise ConfigError(f"{where}: unknown layer '[layers.{name}]' (known: {known})" if where else
                          f"unknown layer '{name}' (known: {known})")
    return _LAYERS[name]


def layer_names() -> list[str]:
    """Every layer a scenario can name: the built-in ones and those plugins registered."""
    return sorted(set(BUILTIN_LAYERS) | set(_LAYERS))


def policies(layer: str) -> dict[str, PolicySpec]:
    """The policies of ``layer`` by name (its built-in ones and those plugins registered)."""
    if layer in BUILTIN_LAYERS and layer not in _LAYERS:
        importlib.import_module(BUILTIN_LAYERS[layer])
    return dict(_POLICIES.get(layer, {}))


def all_policies() -> list[PolicySpec]:
    """Every registered policy of every registered layer (built-in layers imported)."""
    for name in layer_names():
        layer_class(name)
    return [spec for table in _POLICIES.values() for spec in table.values()]


def find(obj: Any) -> tuple[str, Any]:
    """What a registered object is: ``("layer", cls)`` or ``("policy", spec)``."""
    for name in layer_names():
        if layer_class(name) is obj:
            return "layer", obj
    for spec in all_policies():
        if spec.fn is obj:
            return "policy", spec
    raise ConfigError(f"{_module_of(obj)}.{getattr(obj, '__qualname__', obj)!s} is neither a registered layer nor a "
                      f"registered policy (use @register_layer or @register_policy)")


# -- plugins ---------------------------------------------------------------------------------
def load_plugins(modules: list[str], where: str, base_dir: str | Path | None = None) -> None:
    """Import the plugin modules a scenario names (``scenario.plugins``), once each.

    An entry is a module name (importable from ``sys.path``; the scenario file's folder is
    searched too) or a path to a ``.py`` file, relative to the scenario file. A module that
    cannot be imported, or raises while importing, is one line naming it and ``where``.
    """
    load_entry_points()
    base = Path(base_dir) if base_dir else None
    if base is not None and str(base) not in sys.path:
        sys.path.append(str(base))
        _APPENDED.add(str(base))
    for entry in modules:
        if not isinstance(entry, str) or not entry:
            raise ConfigError(f"{where}: expected module names or .py files, got {entry!r}")
        if entry in PLUGINS:
            continue
        try:
            if entry.endswith(".py"):
                path = Path(entry) if Path(entry).is_absolute() or base is None else base / entry
                if not path.is_file():
                    raise ConfigError(f"{where}: plugin file {path} does not exist")
                modname = f"cosim_plugin_{path.stem}"
                FILE_PLUGINS[modname] = str(path)
                spec = importlib.util.spec_from_file_location(modname, path)
                mod = importlib.util.module_from_spec(spec)
                sys.modules[modname] = mod
                spec.loader.exec_module(mod)
            else:
                top = entry.split(".")[0]
                spec = None if top in sys.modules else find_plugin_module(top, base)
                if spec is not None:  # what the sweep's fingerprint hashes (find_plugin_module) is what runs
                    mod = importlib.util.module_from_spec(spec)
                    sys.modules[top] = mod
                    try:
                        spec.loader.exec_module(mod)
                    except BaseException:
                        sys.modules.pop(top, None)
                        raise
                importlib.import_module(entry)  # its submodule, if any, from the package found above
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of someone else's module is one line
            raise ConfigError(f"{where}: plugin '{entry}' failed to import: {type(exc).__name__}: {exc}") from None
        PLUGINS[entry] = where


#: the scenario folders :func:`load_plugins` appended to ``sys.path`` (not there when a process starts)
_APPENDED: set[str] = set()


def find_plugin_module(name: str, base_dir: str | Path | None = None, main_dir: str | None = None):  # noqa: ANN201
    """The spec of the top-level module of plugin entry ``name`` where :func:`load_plugins` (in a
    fresh process, as a sweep's cell runs) imports it from: the import system's finders in order,
    over ``sys.path`` as the process started, then the scenario's folder ``base_dir`` (appended at
    the end: a same-named module on ``sys.path`` wins). ``sys.modules`` is not consulted (another
    scenario's same-named package may be imported there), nor the folders appended for other
    scenarios. None: not found.

    ``main_dir``: another process's first ``sys.path`` entry in place of this one's — a sweep's
    cell runs as ``python -m cosim.sweep``, whose first entry is the working folder, while the
    driver's is the ``cosim`` script's folder (or the working folder under ``python -m cosim``)."""
    top = name.split(".")[0]
    path = [p for p in sys.path if p not in _APPENDED]
    if main_dir is not None:
        path = [main_dir, *path[1:]]
    path += [str(base_dir)] if base_dir else []
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        try:
            spec = find(top, path if finder is PathFinder else None)
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            return spec
    return None


def load_entry_points() -> None:
    """Import every module announced under the ``cosim.plugins`` entry-point group (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        if ep.value.split(":")[0] in PLUGINS:
            continue
        try:
            ep.load()
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"entry point '{ep.name} = {ep.value}' ({ENTRY_POINT_GROUP}) failed to load: "
                              f"{type(exc).__name__}: {exc}") from None
        mod = ep.value.split(":")[0]
        PLUGINS[mod] = f"entry point {ep.name}"
        _EP_VERSIONS[mod] = ep.dist.version if getattr(ep, "dist", None) is not None else ""
    _entry_points_loaded = True  # only once all loaded: a failing one is reported again, not skipped


def plugin_versions() -> dict[str, str]:
    """The loaded plugins and the version of the distribution each comes from ("" if unknown):
    an entry point's own distribution, else a distribution named like the module's package
    (no scan of every installed file: that costs ~0.5 s with torch installed)."""
    out = {}
    for mod, where in PLUGINS.items():
        version = _EP_VERSIONS.get(mod, "")
        if not version:
            try:
                version = md.version(mod.split(".")[0])
            except (md.PackageNotFoundError, ValueError):
                version = ""
        out[mod] = version
    return out
