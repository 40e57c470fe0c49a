"""Typed, frozen scenario configuration loaded from TOML.

A scenario file has these tables (every key optional except where noted; units in the names):

    [scenario]  name, sumocfg (required: path relative to this file), seed, begin_s, end_s,
                slot_s, step_length_s, backend, sumo_args, jobs, sumo_timeout_s, plugins
    [world]     grid_cell_m, association, dwell_model, route_*, dwell_cap_s, idm_* parameters
    [rsu]       radius_m, placement, spacing_m, compute_flops, bandwidth_hz, tx_power_dbm, sites
    [channel]   noise_dbm, interference, fading, vehicle_* ranges, path-loss parameters
    [output]    dir, coverage, flush_slots
    [traffic]   source (sumo, or a paper's own world without SUMO), that world's vehicles and speeds
    [layers.NAME]  one table per enabled layer (validated by the layer itself)

Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the file and
the dotted key. ``dump_toml`` writes the effective configuration (absolute paths), which loads
back to an equal object.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

import tomli_w

from cosim.errors import ConfigError


def option(default: Any, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           choices: tuple | None = None, doc: str = "", unset: float | None = None, words: dict | None = None,
           required: bool = False, pattern: tuple[str, str] | None = None, each: dict | None = None,
           unique: bool | str = False, min_items: int | None = None, max_items: int | None = None) -> Any:
    """A dataclass field with validation metadata, checked by :func:`build_section` against the
    field's type (``int``, ``float``, ``str``, ``bool``, ``list``/``list[T]``, ``dict``/``dict[str, T]``,
    a dataclass — a nested table checked the same way — or a union of these, ``int | list[int]``).

    ``lo``/``hi`` (``lo_open``: > instead of >=) bound a number; ``choices`` lists the values
    allowed; ``unset``: a value outside the range that means "not set here" (e.g. -1 = keep the
    sumocfg's) and is accepted as such; ``words``: strings that stand for a value (``{"auto": 0}``);
    ``required``: the key must be given; ``pattern``: (regular expression a string must match in
    full, what it allows in words). For a list or a table: ``min_items``/``max_items`` bound its
    length, ``unique`` refuses a value listed twice (1 and 1.0 are equal; a string: why, for the
    message), and ``each`` holds the
    same checks (``lo=``, ``choices=``, ...) for every element (a list) or value (a table)."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "choices": choices, "doc": doc, "unset": unset, "words": words,
            "required": required, "pattern": pattern, "each": each, "unique": unique, "min_items": min_items,
            "max_items": max_items}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


#: Bounds derived from what a key means, so that no value exhausts memory or overflows
#: (issue 29). Times: SUMO's clock counts integer milliseconds (shorter steps are 0 to it), and
#: the tables hold times as float64, exact to the millisecond up to 2^53 ms (~9e12 s): 1e9 s
#: (31.7 years of traffic) is far inside both and beyond any scenario.
TIME_MAX_S = 1e9
SUMO_TICK_S = 0.001
#: a length on the road beyond 100 km (a radius, a range) is not roadside radio; it also keeps
#: squares and areas of lengths finite
LENGTH_MAX_M = 1e5
#: a wait, cap or horizon beyond a day describes no vehicle or SUMO still moving
DAY_S = 86400.0
#: a path loss beyond ±300 dB describes no radio link; it keeps 10^(dB/10) a finite float
PATH_LOSS_MAX_DB = 300.0


@dataclass(frozen=True)
class ScenarioSection:
    sumocfg: str = option("", doc="SUMO configuration, relative to the scenario file")
    name: str = option("", doc="scenario name (default: the file's stem)")
    seed: int = option(42, lo=0, hi=2**31 - 1, doc="drives SUMO --seed and every random draw")
    begin_s: float = option(-1.0, lo=0.0, hi=TIME_MAX_S, unset=-1.0, doc="simulation begin [s]; -1 keeps the sumocfg's")
    end_s: float = option(-1.0, lo=0.0, hi=TIME_MAX_S, unset=-1.0, doc="simulation end [s]; -1 keeps the sumocfg's")
    slot_s: float = option(1.0, lo=SUMO_TICK_S, hi=TIME_MAX_S,
                           doc="slot length gamma [s]; a multiple of the step length (SUMO counts milliseconds)")
    step_length_s: float = option(-1.0, lo=SUMO_TICK_S, hi=TIME_MAX_S, unset=-1.0,
                                  doc="SUMO step length [s]; -1 keeps the sumocfg's (SUMO counts milliseconds)")
    backend: str = option("libsumo", choices=("libsumo", "traci"), doc="how SUMO is driven")
    sumo_args: list = option([], doc="extra SUMO command-line arguments")
    plugins: list = option([], doc="modules (or .py files, relative to this file) imported before the layers are "
                                   "built: your own policies and layers (docs/plugins.md)")
    jobs: int = option(1, lo=0, hi=1024, words={"auto": 0}, doc="processes per run: 1 = all in one (the reference); 2 = SUMO and its "
                                    "reading in a second process, one slot ahead; N >= 3 = also N - 2 worker "
                                    "processes over which the layers' policies are spread (same results); "
                                    "0 or \"auto\": as many as this machine's cores and the layers' "
                                    "policies can use")
    warmup_s: float = option(-1.0, lo=0.0, hi=TIME_MAX_S, unset=-1.0,
                             doc="no task (DViT, MoE) is requested in the run's first this many seconds, while the "
                                 "network fills [s]; -1 = auto: 60 s, at most a tenth of the run (docs/comparisons.md)")
    drain_s: float = option(-1.0, lo=0.0, hi=TIME_MAX_S, unset=-1.0,
                            doc="task requests stop this long before the run's end, so that few tasks are cut off "
                                "(censored) [s]; -1 = auto: each layer's longest task that can still succeed, at "
                                "most a tenth of the run")
    sumo_timeout_s: float = option(60.0, lo=0.0, hi=DAY_S, doc="a SUMO that answers no request for this long is taken as "
                                                     "frozen and the run ends as if it died [s]; 0 = wait forever "
                                                     "(TraCI, or with jobs >= 2 a slot SUMO's process does not "
                                                     "deliver; never with --gui)")


@dataclass(frozen=True)
class WorldSection:
    grid_cell_m: float = option(25.0, lo=0.01, hi=LENGTH_MAX_M,
                                doc="road grid cell length g' [m] (a cell under 1 cm, SUMO's position precision, "
                                    "is not a road grid)")
    association: str = option("nearest", choices=("nearest", "sticky"),
                              doc="serving RSU: the nearest in range, or stay until leaving its disc (sticky)")
    dwell_model: str = option("auto", choices=("auto", "straight", "idm", "route"),
                              doc="coverage dwell predictor: eq. 12 (straight), IDM rollout, SUMO route walk (route, "
                                  "ours; a source without routes falls back to straight with a note), or auto = "
                                  "route where the traffic source gives routes, straight where it gives none "
                                  "(silently; the model in force is summary.json's dwell_prediction.model)")
    route_speed: str = option("learned", choices=("learned", "limit", "current"),
                              doc="route dwell: expected speed per edge (running mean, speed limit, own speed)")
    route_speed_prior: float = option(10.0, lo=0.0, doc="route dwell: weight of the speed limit in the learned "
                                                        "mean [samples]")
    route_sample_m: float = option(2.0, lo=0.1, hi=LENGTH_MAX_M,
                                   doc="route dwell: spacing of coverage samples along an edge [m] (the exit point "
                                       "is found to half of it; under 10 cm, 0.007 s at 14 m/s, no prediction "
                                       "changes while the cached samples grow as 1/spacing)")
    dwell_cap_s: float = option(600.0, lo=0.0, lo_open=True, hi=DAY_S, doc="cap for stopped/slow vehicles [s]")
    idm_max_accel_mps2: float = option(2.6, lo=0.0, lo_open=True, hi=100.0, doc="IDM lambda_max [m/s^2] (10 g at most)")
    idm_max_decel_mps2: float = option(4.5, lo=0.0, lo_open=True, hi=100.0, doc="IDM zeta_max [m/s^2] (10 g at most)")
    idm_desired_speed_mps: float = option(13.89, lo=0.0, lo_open=True, hi=150.0, doc="IDM v_max [m/s] (540 km/h at most)")
    idm_delta: float = option(4.0, lo=1.0, hi=5.0, doc="IDM driver sensitivity delta")
    idm_min_gap_m: float = option(2.5, lo=0.0, hi=LENGTH_MAX_M, doc="IDM safe distance phi_min [m]")
    idm_headway_s: float = option(1.0, lo=0.0, hi=DAY_S, doc="IDM reaction time theta [s]")
    idm_horizon_s: float = option(60.0, lo=0.0, lo_open=True, hi=DAY_S,
                                  doc="IDM integration horizon [s] (one step per slot: a stopped vehicle "
                                      "is rolled out to the end)")


@dataclass(frozen=True)
class RsuSection:
    radius_m: float = option(500.0, lo=0.0, lo_open=True, hi=LENGTH_MAX_M, doc="coverage radius d'_m [m]")
    placement: str = option("lattice", choices=("lattice", "sites"), doc="auto lattice or explicit sites")
    spacing_m: float = option(-1.0, lo=0.0, lo_open=True, hi=LENGTH_MAX_M, unset=-1.0,
                              doc="lattice spacing [m]; -1 = radius*sqrt(2) (full cover)")
    compute_flops: list = option([15e9, 20e9], doc="RSU compute c0 [FLOP/s]: value or [lo, hi] (world.rsus, summary.json; "
                                                   "read by no built-in layer: DViT takes layers.dvit.rsu_compute_flops "
                                                   "/ preset)")
    bandwidth_hz: list = option([100e6, 200e6], doc="RSU bandwidth w0 [Hz]: value or [lo, hi]")
    tx_power_dbm: float = option(30.0, lo=-30.0, hi=60.0, doc="RSU transmit power [dBm]")
    sites: list = option([], doc="explicit sites: [{id, x, y}] in SUMO coordinates [m]")


@dataclass(frozen=True)
class ChannelSection:
    noise_dbm: float = option(-100.0, lo=-200.0, hi=0.0, doc="noise power sigma^2 [dBm]")
    interference: bool = option(True, doc="inter-RSU interference xi from the other RSUs")
    fading: str = option("rayleigh", choices=("rayleigh", "none"), doc="block fading per slot")
    vehicle_tx_power_dbm: float = option(23.0, lo=-30.0, hi=60.0, doc="vehicle transmit power [dBm]")
    vehicle_bandwidth_hz: list = option([50e6, 80e6], doc="vehicle bandwidth w_n [Hz]: value or [lo, hi]")
    vehicle_compute_flops: list = option([5e9, 10e9], doc="vehicle compute c_n [FLOP/s]: value or [lo, hi] "
                                                          "(world.compute_flops; read by no built-in layer: DViT "
                                                          "takes layers.dvit.vehicle_compute_flops / preset)")
    v2i_pl_ref_db: float = option(128.1, lo=-PATH_LOSS_MAX_DB, hi=PATH_LOSS_MAX_DB, doc="V2I path loss at 1 km [dB] (3GPP TR 36.814 UMa)")
    v2i_pl_exponent: float = option(3.76, lo=1.0, hi=8.0, doc="V2I path-loss exponent")
    v2v_pl_ref_db: float = option(63.3, lo=-PATH_LOSS_MAX_DB, hi=PATH_LOSS_MAX_DB, doc="V2V path loss at 1 m [dB] (3GPP TR 36.885 LOS)")
    v2v_pl_exponent: float = option(1.77, lo=1.0, hi=8.0, doc="V2V path-loss exponent")
    v2v_range_m: float = option(300.0, lo=0.0, lo_open=True, hi=LENGTH_MAX_M, doc="V2V contact range [m]")
    min_distance_m: float = option(1.0, lo=0.0, lo_open=True, hi=LENGTH_MAX_M, doc="distances are clipped to this [m]")


@dataclass(frozen=True)
class TrafficSection:
    source: str = option("sumo", choices=("sumo", "paper000", "paper001", "paper002"),
                         doc="where the vehicles come from: sumo (the sumocfg's network and demand) | paper000 (the "
                             "DViT paper's own world, no SUMO: vehicles on a straight road through one RSU's disc, "
                             "car-following by eqs. (8)-(11) with the world.idm_* parameters) | paper001 (the MoE "
                             "paper's world, ours: paper000's road world with its own random stream) | paper002 (the "
                             "cache paper's own world, no SUMO: vehicles circling a ring of lanes inside one edge "
                             "server's coverage, car-following as paper000); docs/paper_worlds.md")
    vehicles: int = option(20, lo=1, hi=10_000, doc="paper000, paper001: vehicles on the road at every moment (Sec. "
                                                    "IV: 20); one that leaves is replaced at the road's start (ours); "
                                                    "paper002: vehicles on the ring, none leaves (ours: 6, Table "
                                                    "II's ~88 requests in 300 s)")
    directions: int = option(2, lo=1, hi=2, doc="paper000, paper001: 1 = every vehicle drives the first edge; 2 = "
                                                "each picks one of the road's two directions by a fair coin (ours); "
                                                "paper002: unused (the ring is every edge)")
    initial_speed_mps: list = option([8.33, 13.89], doc="paper000, paper001, paper002: speed of a vehicle when placed "
                                                        "or inserted, uniform in [lo, hi] [m/s] (ours: 30-50 km/h)")


@dataclass(frozen=True)
class OutputSection:
    dir: str = option("", doc="results folder; empty = runs/<name>-<seed>-<timestamp>")
    coverage: bool = option(True, doc="write coverage.parquet (one row per slot and vehicle)")
    flush_slots: int = option(50, lo=1, hi=100_000, doc="slots buffered before a parquet row group is written (at "
                                                        "most 100 000: a buffer is memory, and what a kill loses)")


@dataclass(frozen=True)
class Config:
    scenario: ScenarioSection = field(default_factory=ScenarioSection)
    world: WorldSection = field(default_factory=WorldSection)
    rsu: RsuSection = field(default_factory=RsuSection)
    channel: ChannelSection = field(default_factory=ChannelSection)
    output: OutputSection = field(default_factory=OutputSection)
    traffic: TrafficSection = field(default_factory=TrafficSection)
    layers: dict = field(default_factory=dict)
    source_file: str = field(default="", compare=False)  # where it was loaded from (not saved)

    @property
    def sumocfg_path(self) -> Path:
        return Path(self.scenario.sumocfg)

    @property
    def name(self) -> str:
        return self.scenario.name or Path(self.source_file or self.scenario.sumocfg).stem

    def replace(self, **sections: dict) -> "Config":
        """A copy with some keys overridden: ``cfg.replace(scenario={"seed": 3})``."""
        out = self
        for sec, values in sections.items():
            if sec == "layers":
                out = dataclasses.replace(out, layers={**out.layers, **values})
                continue
            cur = getattr(out, sec)
            data = {**dataclasses.asdict(cur), **values}
            new = build_section(type(cur), data, out.source_file or "<override>", sec)
            out = dataclasses.replace(out, **{sec: new})
        return out


def parse_value(text: str) -> Any:
    """A command-line value as TOML reads it (``40``, ``1e9``, ``true``, ``[1, 2]``, ``"x"``);
    anything that is not a TOML value is taken as a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def key_parts(key: str) -> list[str] | None:
    """``"TABLE.KEY"`` -> [TABLE, KEY], ``"layers.NAME.KEY"`` -> [layers, NAME, KEY],
    ``"layers.NAME.options.POLICY.KEY"`` -> the five parts (one option of one policy); None for
    anything else (the shapes an override key may have)."""
    parts = key.split(".")
    ok = len(parts) == 2 or (parts[0] == "layers" and (len(parts) == 3 or (len(parts) == 5 and parts[2] == "options")))
    return parts if ok else None


def apply_overrides(cfg: "Config", values: dict[str, Any], where: str = "--set") -> "Config":
    """``{"scenario.seed": 3, "layers.cache.gpu_memory_gb": 40}`` -> a copy of ``cfg`` validated
    by the same checks as a scenario file (errors name ``where``, e.g. the flag, and the key);
    the layers' own tables are checked where they are built (``layers.base.validate_layers``).
    A layer key creates the layer's table if the scenario has none; relative paths resolve
    against the working directory."""
    data = to_dict(cfg)
    data["layers"] = {k: dict(v) for k, v in cfg.layers.items()}
    for key, value in values.items():
        parts = key_parts(key)
        if parts and len(parts) == 5:  # one option of one policy: merged into that policy's table
            layer = data["layers"].setdefault(parts[1], {})
            options = layer["options"] = {k: dict(v) if isinstance(v, dict) else v
                                          for k, v in layer.get("options", {}).items()}
            if not isinstance(options.setdefault(parts[3], {}), dict):
                raise ConfigError(f"{where}: layers.{parts[1]}.options.{parts[3]} is not a table")
            options[parts[3]][parts[4]] = value
        elif parts and len(parts) == 3:
            data["layers"].setdefault(parts[1], {})[parts[2]] = value
        elif parts and parts[0] in _SECTIONS:
            data[parts[0]][parts[1]] = value
        else:
            raise ConfigError(f"{where}: '{key}' is not a key (use TABLE.KEY, e.g. scenario.seed, "
                              f"layers.NAME.KEY or layers.NAME.options.POLICY.KEY; tables: {', '.join(_SECTIONS)}, "
                              "layers)")
    return from_dict(data, cfg.source_file, Path.cwd(), label=where)


_SECTIONS = {k: v for k, v in typing.get_type_hints(Config).items() if k not in ("layers", "source_file")}


def _resolve_hint(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def first_repeat(values: list) -> Any:
    """The first value equal to an earlier one (1 and 1.0 are equal; tables by content), else None."""
    seen = set()
    for v in values:
        key = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else json.dumps(v, sort_keys=True)
        if key in seen:
            return v
        seen.add(key)
    return None


#: what a value of each checked type is called in "expected ..." messages
_TYPE_WORDS = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "a table"}


def _base(hint: Any) -> Any:
    """``list[int]`` -> list, ``dict[str, str]`` -> dict, a dataclass -> dict (a table); else the hint."""
    if dataclasses.is_dataclass(hint):
        return dict
    return typing.get_origin(hint) or hint


def _fits(value: Any, hint: Any) -> bool:
    base = _base(hint)
    if base is Any:
        return True
    if base in (int, float) or base is bool:
        if isinstance(value, bool):
            return base is bool
        return isinstance(value, int) if base is int else isinstance(value, (int, float)) and base is float
    return isinstance(value, base) if isinstance(base, type) else True


def _num(bound: float) -> str:
    """A bound as messages write it: an integer in full (2147483647), a float short (1e+09)."""
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _check_value(value: Any, hint: Any, meta: dict, file: str, key: str) -> Any:
    """``value`` of the key ``key`` checked against its type and ``option`` metadata; errors
    are one line naming ``file`` and ``key``."""
    where = f"{file}: {key}"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = typing.get_args(hint)
        hint = next((h for h in members if _fits(value, h)), None)
        if hint is None:
            words = " or ".join(_TYPE_WORDS.get(_base(h), str(h)) for h in members)
            raise ConfigError(f"{where}: expected {words}, got {value!r}")
    if isinstance(value, str) and value.strip().lower() in (meta.get("words") or {}):
        value = meta["words"][value.strip().lower()]
    orig = value
    base = _base(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            also = "".join(f" or '{w}'" for w in (meta.get("words") or {}))
            raise ConfigError(f"{where}: expected an integer{also}, got {value!r}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where}: must be finite, got {value!r}")
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
    elif hint is list:  # a bare list: a number stands for [number] (a range [lo, hi] of one value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [float(value)]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
    elif base in (list, dict) and not isinstance(value, base):
        raise ConfigError(f"{where}: expected {_TYPE_WORDS[base]}, got {value!r}")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, file, key)
    if isinstance(value, (list, dict)):
        value = _check_items(value, hint, meta, file, key)
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
    pattern = meta.get("pattern")
    if pattern and isinstance(value, str) and not re.fullmatch(pattern[0], value):
        raise ConfigError(f"{where}: {value!r}: {pattern[1]}")
    lo, hi = meta.get("lo"), meta.get("hi")
    unset = meta.get("unset")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not (unset is not None and value == unset):
        if lo is not None and (value < lo or (meta.get("lo_open") and value == lo)):
            alt = f", or {unset:g} to leave it unset" if unset is not None else ""
            raise ConfigError(f"{where}: {orig!r} is out of range (must be {'>' if meta.get('lo_open') else '>='} "
                              f"{_num(lo)}{alt})")
        if hi is not None and value > hi:
            raise ConfigError(f"{where}: {orig!r} is out of range (must be <= {_num(hi)})")
    return value


def _check_items(value: list | dict, hint: Any, meta: dict, file: str, key: str) -> list | dict:
    """A list's or a table's length, repeats and (``each`` and the type's argument) elements."""
    where = f"{file}: {key}"
    lo, hi = meta.get("min_items"), meta.get("max_items")
    if lo is not None and len(value) < lo:
        raise ConfigError(f"{where}: must be a non-empty {'list' if isinstance(value, list) else 'table'}" if lo == 1
                          else f"{where}: needs at least {lo} values, got {len(value)}")
    if hi is not None and len(value) > hi:
        raise ConfigError(f"{where}: lists {len(value)} values; at most {hi}")
    args = typing.get_args(hint)
    each = meta.get("each") or {}
    if args or each:
        item = args[-1] if args else Any
        if isinstance(value, list):
            value = [_check_value(v, item, each, file, f"{key}[{i}]") for i, v in enumerate(value)]
        else:
            value = {k: _check_value(v, item, each, file, f"{key}.{toml_key(k)}") for k, v in value.items()}
    if meta.get("unique"):
        again = first_repeat(list(value.values()) if isinstance(value, dict) else value)
        if again is not None:
            why = meta["unique"] if isinstance(meta["unique"], str) else ""
            raise ConfigError(f"{where}: {again!r} is listed twice" + (f" ({why})" if why else ""))
    return value


def toml_key(key: str) -> str:
    """``key`` as a dotted TOML path writes it: bare, or quoted where it holds other characters
    (``grid."rsu.radius_m"``)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _build(cls: type, data: dict, file: str, prefix: str) -> Any:
    hints = _resolve_hint(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    # the top level of a file (prefix "") holds tables: [sweep]; below it, keys: sweep.name
    what, name_of = ("table", "[{}]".format) if not prefix else ("key", f"{prefix}.{{}}".format)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{file}: unknown {what} '{name_of(unknown[0])}' (known: {', '.join(sorted(fields))})")
    missing = [n for n, f in fields.items() if f.metadata.get("required") and n not in data]
    if missing:
        doc = fields[missing[0]].metadata.get("doc")
        raise ConfigError(f"{file}: missing {what} '{name_of(missing[0])}'" + (f" ({doc})" if doc else ""))
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{toml_key(name)}" if prefix else name
        kwargs[name] = _check_value(value, hints[name], dict(fields[name].metadata), file, key)
    return cls(**kwargs)


def build_section(cls: type, data: dict, file: str, prefix: str = "") -> Any:
    """Validate ``data`` against the dataclass ``cls`` (errors name ``file`` and ``prefix.key``;
    without a prefix, ``data`` is a whole file whose keys are tables)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: [{prefix}] must be a table")
    return _build(cls, data, file, prefix)


def check_folder_name(name: str, where: str, names: str) -> None:
    """A name that becomes one folder name (``names`` says which): no path separator, no "..",
    no leading dot, no control character; empty means "not set". One line naming ``where``."""
    if not name:
        return
    if ("/" in name or "\\" in name or ".." in name or name.startswith(".") or not name.strip()
            or any(ord(c) < 32 or c == "\x7f" for c in name)):
        raise ConfigError(f"{where}: {name!r} cannot name {names} (no '/', '\\', '..', leading '.' or "
                          "control characters)")


def range_pair(values: list, where: str) -> tuple[float, float]:
    """``[v]`` or ``[lo, hi]`` -> (lo, hi), validated."""
    if len(values) not in (1, 2) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"{where}: expected a number or [lo, hi], got {values!r}")
    lo, hi = float(values[0]), float(values[-1])
    if not (0 < lo <= hi < math.inf):
        raise ConfigError(f"{where}: need 0 < lo <= hi (finite), got {values!r}")
    return lo, hi


def site_ids(sites: list) -> list[str]:
    """The RSU ids of ``rsu.sites`` entries: their ``id``, else ``rsu<i>``."""
    return [str(site.get("id", f"rsu{i}")) for i, site in enumerate(sites)]


def _check_sites(sites: list, where: str) -> None:
    for i, site in enumerate(sites):
        if not isinstance(site, dict) or set(site) - {"id", "x", "y"} or not {"x", "y"} <= set(site):
            raise ConfigError(f"{where}: rsu.sites[{i}] must be {{id = \"...\", x = ..., y = ...}}")
        for k in ("x", "y"):
            v = site[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{where}: rsu.sites[{i}].{k}: expected a finite number [m], got {v!r}")
        if "id" in site and not (isinstance(site["id"], str) and site["id"].strip()):
            raise ConfigError(f"{where}: rsu.sites[{i}].id: expected a non-empty string, got {site['id']!r}")
    seen: dict[str, int] = {}
    for i, rid in enumerate(site_ids(sites)):
        if rid in seen:
            raise ConfigError(f"{where}: rsu.sites[{i}].id: '{rid}' is also the id of rsu.sites[{seen[rid]}] "
                              "(RSU ids must be unique)")
        seen[rid] = i


def from_dict(data: dict, file: str = "<dict>", base_dir: Path | None = None, *, label: str | None = None) -> Config:
    """Build and validate a :class:`Config`; relative paths resolve against ``base_dir``.
    Errors name ``label`` (default: ``file``) and the key."""
    where = label or file
    unknown = sorted(set(data) - set(_SECTIONS) - {"layers"})
    if unknown:
        raise ConfigError(f"{where}: unknown table '[{unknown[0]}]' (known: {', '.join([*_SECTIONS, 'layers'])})")
    sections = {name: build_section(cls, data.get(name, {}), where, name) for name, cls in _SECTIONS.items()}
    layers = data.get("layers", {})
    if not isinstance(layers, dict) or not all(isinstance(v, dict) for v in layers.values()):
        raise ConfigError(f"{where}: [layers] must hold one table per layer, e.g. [layers.dvit]")
    scen = sections["scenario"]
    check_folder_name(scen.name, f"{where}: scenario.name", "the results folder runs/<name>-<seed>-<time>")
    for key in ("sumo_args", "plugins"):
        bad = [v for v in getattr(scen, key) if not isinstance(v, str)]
        if bad:
            what = ("SUMO options and their values as strings, e.g. [\"--collision.action\", \"none\"]"
                    if key == "sumo_args" else "module names or .py files")
            raise ConfigError(f"{where}: scenario.{key}: expected a list of strings ({what}), got {bad[0]!r} "
                              f"in {getattr(scen, key)!r}")
    if not scen.sumocfg:
        raise ConfigError(f"{where}: missing key 'scenario.sumocfg' (the SUMO configuration to run)")
    if scen.begin_s >= 0 and scen.end_s >= 0 and scen.end_s <= scen.begin_s:
        raise ConfigError(f"{where}: scenario.end_s = {scen.end_s:g} is not after scenario.begin_s = {scen.begin_s:g}")
    base = base_dir if base_dir is not None else Path.cwd()
    sumocfg = Path(scen.sumocfg)
    if not sumocfg.is_absolute():
        sumocfg = (base / sumocfg).resolve()
    plugins = [str((base / p).resolve()) if isinstance(p, str) and p.endswith(".py") and not Path(p).is_absolute()
               else p for p in scen.plugins]
    sections["scenario"] = dataclasses.replace(scen, sumocfg=str(sumocfg), plugins=plugins)
    out = sections["output"]
    if out.dir and not Path(out.dir).is_absolute():
        sections["output"] = dataclasses.replace(out, dir=str((base / out.dir).resolve()))
    rsu = sections["rsu"]
    range_pair(rsu.compute_flops, f"{where}: rsu.compute_flops")
    range_pair(rsu.bandwidth_hz, f"{where}: rsu.bandwidth_hz")
    ch = sections["channel"]
    range_pair(ch.vehicle_bandwidth_hz, f"{where}: channel.vehicle_bandwidth_hz")
    range_pair(ch.vehicle_compute_flops, f"{where}: channel.vehicle_compute_flops")
    range_pair(sections["traffic"].initial_speed_mps, f"{where}: traffic.initial_speed_mps")
    _check_sites(rsu.sites, where)
    if rsu.placement == "sites" and not rsu.sites:
        raise ConfigError(f"{where}: rsu.placement = \"sites\" needs at least one [[rsu.sites]] entry")
    return Config(**sections, layers=dict(layers), source_file=file)


def load(path: str | Path) -> Config:
    """Load a scenario TOML file; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such scenario file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    return from_dict(data, str(path), path.parent.resolve())


def for_sumocfg(sumocfg: str | Path, **overrides: Any) -> Config:
    """Defaults for attaching to any existing ``.sumocfg`` (RSUs placed automatically)."""
    path = Path(sumocfg)
    if not path.is_file():
        raise ConfigError(f"{path}: no such SUMO configuration")
    scen = {"sumocfg": str(path.resolve()), "name": path.stem.replace(".sumocfg", ""), **overrides}
    return from_dict({"scenario": scen}, str(path), path.parent.resolve())


def load_any(path: str | Path) -> Config:
    """What ``cosim run`` takes: a scenario ``.toml``, or any SUMO ``.sumocfg`` (defaults for the rest)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    if path.suffix == ".toml":
        return load(path)
    if path.name.endswith(".sumocfg") or path.suffix == ".xml":
        return for_sumocfg(path)
    raise ConfigError(f"{path}: expected a scenario .toml or a SUMO .sumocfg")


def sumo_time(text: str) -> float:
    """A time as SUMO reads it: seconds (``"600"``, ``"1e3"``) or ``[[D:]H:]M:S`` (``"0:01:00"`` = 60)."""
    parts = str(text).strip().split(":")
    if len(parts) > 4:
        raise ValueError(f"not a time: {text!r}")
    value = 0.0
    for part, scale in zip(reversed(parts), (1.0, 60.0, 3600.0, 86400.0)):
        value += float(part) * scale
    return value


def sumocfg_time(sumocfg: str | Path, key: str) -> float | None:
    """``begin``/``end``/``step-length`` from a .sumocfg, if set there (SUMO's time formats)."""
    from lxml import etree

    try:
        node = etree.parse(str(sumocfg)).getroot().find(f".//{key}")
    except (OSError, etree.XMLSyntaxError):
        return None
    if node is None or node.get("value") is None:
        return None
    try:
        return sumo_time(node.get("value"))
    except ValueError:
        raise ConfigError(f"{sumocfg}: <{key} value=\"{node.get('value')}\"/> is not a time (seconds, or H:M:S)") from None


def run_window(cfg: Config) -> tuple[float, float | None]:
    """The run's begin and end [s]: the scenario's, else the sumocfg's (begin 0, end None: none set)."""
    sc = cfg.scenario
    begin = sc.begin_s if sc.begin_s >= 0 else (sumocfg_time(sc.sumocfg, "begin") or 0.0)
    end = sc.end_s if sc.end_s >= 0 else sumocfg_time(sc.sumocfg, "end")
    return begin, end


def to_dict(cfg: Config) -> dict:
    data = {name: dataclasses.asdict(getattr(cfg, name)) for name in _SECTIONS}
    if cfg.layers:
        data["layers"] = cfg.layers
    return data


def dump_toml(cfg: Config) -> str:
    header = "# Effective cosim configuration of this run; `cosim run config.toml` re-runs it.\n"
    data = to_dict(cfg)
    data["scenario"]["name"] = cfg.name  # the resolved name: a re-run from config.toml is named as this run
    return header + tomli_w.dumps(data)


def _limits(meta: dict) -> list[str]:
    """A key's checks in words, as ``cosim config`` shows them."""
    extra = []
    if meta.get("required"):
        extra.append("required")
    if meta.get("choices"):
        extra.append("one of " + ", ".join(map(str, meta["choices"])))
    if meta.get("pattern"):
        extra.append(meta["pattern"][1])
    if meta.get("lo") is not None:
        extra.append(f"{'>' if meta.get('lo_open') else '>='} {_num(meta['lo'])}")
    if meta.get("hi") is not None:
        extra.append(f"<= {_num(meta['hi'])}")
    if meta.get("min_items") is not None:
        extra.append("non-empty" if meta["min_items"] == 1 else f"at least {meta['min_items']} values")
    if meta.get("max_items") is not None:
        extra.append(f"at most {meta['max_items']} values")
    if meta.get("unique"):
        extra.append("no value twice")
    if meta.get("each"):
        extra.append("each " + ", ".join(_limits(meta["each"])))
    return extra


def field_docs(cls: type) -> list[tuple[str, Any, str]]:
    """(key, default, meaning with its checks) of every field of an ``option`` dataclass."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        extra = _limits(f.metadata)
        limits = f"({'; '.join(extra)})" if extra else ""
        out.append((f.name, default, " ".join(filter(None, (f.metadata.get("doc", ""), limits)))))
    return out


def describe_fields(cls: type) -> list[str]:
    lines = []
    for name, default, doc in field_docs(cls):
        lines.append(f"{name} = {_toml_value(default)}" + (f"  # {doc}" if doc else ""))
    return lines


def _toml_value(value: Any) -> str:
    """``value`` as TOML writes it inline (``[42]``, ``{ dvit = "vidi" }``, ``{}``)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    if isinstance(value, list):
        return json.dumps(value)
    return tomli_w.dumps({"v": value})[4:].strip()


def describe() -> str:
    """Every key of every table with its default and documentation (``cosim config``): the
    scenario tables, every registered layer's table (built-in, and those of the plugins loaded
    so far) and every policy's options table."""
    from cosim import registry

    lines = ["# cosim scenario keys: [table] key = default  # meaning", ""]
    for name, cls in _SECTIONS.items():
        lines += [f"[{name}]", *describe_fields(cls), ""]
    for name in registry.layer_names():
        layer = registry.layer_class(name)
        mod = __import__(layer.__module__, fromlist=["_"])
        title = ((layer.__doc__ or mod.__doc__ or "").strip().splitlines() or [""])[0].rstrip(".:,")
        if layer.config_class is not None:
            lines += [f"[layers.{name}]  # {title}", *describe_fields(layer.config_class), ""]
        else:
            lines += [f"[layers.{name}]  # {title} (free-form table)", ""]
        for pname, spec in sorted(registry.policies(name).items()):
            doc = ((getattr(spec.fn, "__doc__", None) or "").strip().splitlines() or [""])[0]
            head = f"[layers.{name}.options.{pname}]  # {spec.origin}" + (f": {doc}" if doc else "")
            lines += [head, *(describe_fields(spec.options) if spec.options else ["# (no options)"]), ""]
    return "\n".join(lines)
