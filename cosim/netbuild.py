"""Build SUMO networks and demand with SUMO's own tools (netgenerate, randomTrips, duarouter).

Everything here shells out to the binaries and scripts that ship in the ``eclipse-sumo`` wheel,
so no system SUMO is needed. Every random choice is driven by the ``seed`` argument.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cosim.errors import CosimError
from cosim.sumo_home import sumo_binary, sumo_tool


@dataclass(frozen=True)
class GridSpec:
    """A Manhattan grid built by ``netgenerate --grid``."""

    junctions_x: int = 6
    junctions_y: int = 6
    block_m: float = 200.0  # distance between junctions [m]
    lanes: int = 2  # lanes per direction
    speed_mps: float = 13.89  # speed limit [m/s] (50 km/h)
    traffic_lights: bool = True


@dataclass(frozen=True)
class DemandSpec:
    """Random trips routed by duarouter (through randomTrips.py)."""

    end_s: float = 3600.0  # last departure [s]
    period_s: float = 0.4  # mean time between departures [s]
    fringe_factor: float = 5.0  # how much likelier trips start/end at the fringe
    min_distance_m: float = 300.0  # shortest straight-line trip [m]
    seed: int = 42


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()
        raise CosimError(f"{what} failed: {last[-1] if last else 'exit ' + str(proc.returncode)}")


def netgenerate_grid(out_net: Path, spec: GridSpec, seed: int = 42) -> Path:
    cmd = [
        sumo_binary("netgenerate"), "--grid",
        "--grid.x-number", str(spec.junctions_x), "--grid.y-number", str(spec.junctions_y),
        "--grid.length", str(spec.block_m),
        "--default.lanenumber", str(spec.lanes), "--default.speed", str(spec.speed_mps),
        "--no-turnarounds", "true", "--seed", str(seed),
        "-o", str(out_net),
    ]
    if spec.traffic_lights:
        cmd += ["--default-junction-type", "traffic_light"]
    _run(cmd, "netgenerate")
    return out_net


def random_trips(net: Path, out_routes: Path, spec: DemandSpec) -> Path:
    """Random trips routed to full routes (``-r`` runs duarouter); trips file removed after."""
    trips = out_routes.with_suffix(".trips.xml")
    cmd = [
        sys.executable, sumo_tool("randomTrips.py"),
        "-n", str(net), "-o", str(trips), "-r", str(out_routes),
        "-b", "0", "-e", str(spec.end_s), "-p", str(spec.period_s),
        "--fringe-factor", str(spec.fringe_factor),
        "--min-distance", str(spec.min_distance_m),
        "--seed", str(spec.seed), "--validate",
        "--trip-attributes", 'departLane="best" departSpeed="max"',
    ]
    _run(cmd, "randomTrips.py")
    trips.unlink(missing_ok=True)
    for extra in out_routes.parent.glob(out_routes.stem.split(".")[0] + "*.alt.xml"):
        extra.unlink()
    return out_routes


def write_sumocfg(path: Path, net: Path, routes: Path, end_s: float, step_length_s: float = 1.0,
                  extra_inputs: tuple[Path, ...] = ()) -> Path:
    """A plain .sumocfg with paths relative to the config (as SUMO resolves them)."""
    rel = lambda p: Path(p).resolve().relative_to(path.parent.resolve()).as_posix()  # noqa: E731
    additional = ""
    if extra_inputs:
        additional = f'        <additional-files value="{",".join(rel(p) for p in extra_inputs)}"/>\n'
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<configuration>\n    <input>\n'
        f'        <net-file value="{rel(net)}"/>\n        <route-files value="{rel(routes)}"/>\n'
        f"{additional}    </input>\n    <time>\n        <begin value=\"0\"/>\n"
        f'        <end value="{end_s:g}"/>\n        <step-length value="{step_length_s:g}"/>\n'
        "    </time>\n    <processing>\n        <time-to-teleport value=\"300\"/>\n"
        "    </processing>\n    <report>\n        <no-step-log value=\"true\"/>\n"
        '        <duration-log.disable value="true"/>\n    </report>\n</configuration>\n'
    )
    return path
