"""Build SUMO networks and demand with SUMO's own tools (netgenerate, randomTrips, duarouter).

Everything here shells out to the binaries and scripts that ship in the ``eclipse-sumo`` wheel,
so no system SUMO is needed. Every random choice is driven by the ``seed`` argument.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cosim.errors import CosimError, last_error_line
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
        why = last_error_line((proc.stderr or "") + "\n" + (proc.stdout or ""))
        raise CosimError(f"{what} failed: {why or 'exit ' + str(proc.returncode)}")


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
    """Random trips routed to full routes (``-r`` runs duarouter); the trips file (and the route
    alternatives an older duarouter writes beside the routes) removed after — those two files
    only, and only when the call made them."""
    trips = out_routes.with_suffix(".trips.xml")
    alt = out_routes.with_name(out_routes.name.removesuffix(".xml") + ".alt.xml")
    made = [p for p in (trips, alt) if not p.exists()]
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
    for p in made:
        p.unlink(missing_ok=True)
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


def netgenerate(kind: str, out_net: Path, *, size: int = 5, length_m: float = 200.0, lanes: int = 2,
                speed_mps: float = 13.89, traffic_lights: bool = True, seed: int = 42) -> Path:
    """A generated network: ``grid`` (size x size junctions), ``spider`` (size arms and circles)
    or ``random`` (size * 20 growth iterations); ``length_m`` is the block / ring / mean edge length."""
    if kind == "grid":
        return netgenerate_grid(out_net, GridSpec(size, size, length_m, lanes, speed_mps, traffic_lights), seed)
    if kind == "spider":
        shape = ["--spider", "--spider.arm-number", str(max(3, size)), "--spider.circle-number", str(size),
                 "--spider.space-radius", str(length_m)]
    elif kind == "random":
        shape = ["--rand", "--rand.iterations", str(20 * size), "--rand.min-distance", str(0.5 * length_m),
                 "--rand.max-distance", str(1.5 * length_m), "--rand.grid"]
    else:
        raise CosimError(f"unknown network kind '{kind}' (use grid, spider or random)")
    cmd = [sumo_binary("netgenerate"), *shape, "--default.lanenumber", str(lanes), "--default.speed", str(speed_mps),
           "--no-turnarounds", "true", "--seed", str(seed), "-o", str(out_net)]
    if traffic_lights:
        cmd += ["--default-junction-type", "traffic_light"]
    _run(cmd, "netgenerate")
    return out_net


#: netconvert settings for urban OSM extracts (SUMO's recommended import options)
OSM_NETCONVERT_ARGS = [
    "--geometry.remove", "--ramps.guess", "--junctions.join", "--tls.guess-signals", "--tls.discard-simple",
    "--tls.join", "--tls.default-type", "actuated", "--roundabouts.guess", "--keep-edges.by-vclass", "passenger",
    "--remove-edges.isolated", "--output.street-names", "--output.original-names",
]


def netconvert_osm(osm: Path, out_net: Path) -> Path:
    if not Path(osm).is_file():
        raise CosimError(f"{osm}: no such OSM file")
    _run([sumo_binary("netconvert"), "--osm-files", str(osm), *OSM_NETCONVERT_ARGS, "-o", str(out_net)],
         f"netconvert on {osm}")
    if not out_net.is_file() or out_net.stat().st_size < 200:
        raise CosimError(f"{osm}: the extract holds no road a passenger car can drive")
    return out_net


def polyconvert_osm(osm: Path, net: Path, out_poly: Path) -> Path:
    typemap = Path(sumo_tool("../data/typemap/osmPolyconvert.typ.xml")).resolve()
    cmd = [sumo_binary("polyconvert"), "--osm-files", str(osm), "--net-file", str(net), "-o", str(out_poly)]
    if typemap.is_file():
        cmd += ["--type-file", str(typemap)]
    _run(cmd, "polyconvert")
    return out_poly


def write_scenario(path: Path, sumocfg: Path, *, seed: int, end_s: float, step_length_s: float = 0.25,
                   comment: str = "", at: Path | None = None) -> Path:
    """The scenario .toml at ``path``; ``at``: where it will be read from (its sumocfg is named
    relative to that), when it is written elsewhere first."""
    rel = Path(os.path.relpath(Path(sumocfg).resolve(), Path(at or path).parent.resolve())).as_posix()
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    path.write_text(f"{head}[scenario]\nsumocfg = \"{rel}\"\nseed = {seed}\nend_s = {end_s:g}\nslot_s = 1.0\n"
                    f"step_length_s = {step_length_s:g}\n\n[rsu]\nradius_m = 500.0\nplacement = \"lattice\"\n")
    return path


def scenario_files(name: str, root: Path, polygons: bool = False) -> list[Path]:
    """What :func:`build_scenario` writes under ``root`` — the only files ``--overwrite`` replaces:
    sumo_nets/NAME/NAME.{net.xml, rou.xml, sumocfg[, poly.xml]} and scenarios/NAME.toml."""
    net_dir = Path(root) / "sumo_nets" / name
    exts = [".net.xml", ".rou.xml", ".sumocfg", *([".poly.xml"] if polygons else [])]
    return [net_dir / f"{name}{e}" for e in exts] + [Path(root) / "scenarios" / f"{name}.toml"]


def _guard(path: Path, action):  # noqa: ANN001, ANN202
    """``action()``, an OSError turned into one line naming ``path``."""
    try:
        return action()
    except OSError as exc:
        raise CosimError(f"{path}: cannot write ({exc.strerror or exc})") from None


def _scratch(folder: Path, name: str) -> Path:
    return _guard(folder, lambda: Path(tempfile.mkdtemp(prefix=f".{name}-building-", dir=folder)))


def _install(moves: list[tuple[Path, Path, Path]]) -> None:
    """Move each built file ``src`` to ``dst``; an earlier file at ``dst`` (a link too, even a broken
    one) is first moved aside into ``scratch`` (the folder ``src`` is in: the same filesystem). When a
    move fails (or the call is interrupted), every file moved so far is taken out again and the
    earlier ones are put back — the destination is as it was — and the error is one line naming the
    file. Each move is noted before it is made, so an interruption between two renames is undone
    too; an earlier file that cannot be put back stays in its scratch folder, which the error names
    (the caller keeps a scratch folder holding ``old-*`` files after a failure)."""
    done: list[tuple[Path, Path, Path | None]] = []
    try:
        for src, dst, scratch in moves:
            aside = scratch / f"old-{dst.name}" if os.path.lexists(dst) else None
            done.append((src, dst, aside))
            if aside is not None:
                _guard(dst, lambda: os.replace(dst, aside))  # noqa: B023
            _guard(dst, lambda: os.replace(src, dst))  # noqa: B023
    except BaseException:
        kept = []
        for src, dst, aside in reversed(done):
            try:
                if not os.path.lexists(src) and os.path.lexists(dst):
                    os.unlink(dst)  # the new file was moved in (the earlier one, if any, is aside)
                if aside is not None and os.path.lexists(aside):
                    os.replace(aside, dst)
            except OSError:
                pass  # best effort: named below
            if aside is not None and os.path.lexists(aside):
                kept.append(aside)
        if kept:
            raise CosimError(f"{moves[0][1].parent}: the build failed and {len(kept)} earlier file(s) could not be "
                             f"put back; they are kept as {', '.join(map(str, kept))}") from None
        raise


def build_scenario(name: str, root: Path, net_builder, demand: DemandSpec, *, polygons: Path | None = None,
                   comment: str = "", overwrite: bool = False) -> tuple[Path, Path]:
    """sumo_nets/NAME/{NAME.net.xml, NAME.rou.xml, NAME.sumocfg} + scenarios/NAME.toml under ``root``.

    An existing one of these files (:func:`scenario_files`) is refused unless ``overwrite``,
    which replaces those files and no other (anything else in sumo_nets/NAME/ stays). Everything
    is built in scratch folders inside sumo_nets/NAME/ and scenarios/ (the .toml), and moved into
    place only when all of it is built, the .toml last; an earlier file is moved aside first and put
    back when a later move fails: a failure leaves the earlier files (and links) as they were, no
    folder this call created, and is one line naming the file (an earlier file that cannot be put
    back stays in its scratch folder, which the error names: :func:`_install`)."""
    from cosim.engine.folder import new_folders

    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise CosimError(f"--name {name!r}: use letters, digits, '-' or '_'")
    root = Path(root)
    targets = scenario_files(name, root, polygons is not None)
    net_dir, scen_path = targets[0].parent, targets[-1]
    for d in (root, root / "sumo_nets", net_dir, scen_path.parent):
        if d.exists() and not d.is_dir():
            raise CosimError(f"{d}: is a file, not a folder")
    there = [p for p in targets if p.exists() or p.is_symlink()]
    if there and not overwrite:
        more = f" (and {len(there) - 1} more of the files it writes)" if len(there) > 1 else ""
        raise CosimError(f"--name {name}: {there[0]} exists{more}; add --overwrite to replace the files cosim writes "
                         "(nothing else), or choose another --name")
    for p in there:
        if p.is_dir():
            raise CosimError(f"{p}: is a folder; cosim writes a file there")
    with new_folders(net_dir, scen_path.parent):
        # scratch folders on the filesystem of each destination: inside sumo_nets/NAME/ (which may be
        # a link to another filesystem) and in scenarios/; the moves in are renames on one filesystem
        work, swork, installed = _scratch(net_dir, name), None, False
        try:
            try:
                net = net_builder(work / targets[0].name)
                from cosim.world.network import read_net

                read_net(net)  # fails clearly on a network without drivable edges
                routes = random_trips(net, work / targets[1].name, demand)
                extra = ()
                if polygons is not None:
                    extra = (polyconvert_osm(polygons, net, work / targets[3].name),)
                write_sumocfg(work / targets[2].name, net, routes, end_s=demand.end_s, extra_inputs=extra)
            except CosimError as exc:  # named as the file it was built for
                raise CosimError(str(exc).replace(str(work), str(net_dir))) from None
            swork = _scratch(scen_path.parent, name)  # made only now: a killed build leaves none in scenarios/
            _guard(scen_path, lambda: write_scenario(
                swork / scen_path.name, targets[2], seed=demand.seed, end_s=min(demand.end_s, 600.0),
                comment=comment, at=scen_path))
            # the sumocfg names its inputs relative to itself: all move together, the .toml last
            _install([(work / p.name, p, work) for p in targets[:-1]] + [(swork / scen_path.name, scen_path, swork)])
            installed = True
        finally:
            for folder in (swork, work):  # after a failure, one holding an earlier file (old-*) is kept
                if folder is not None and (installed or not any(folder.glob("old-*"))):
                    shutil.rmtree(folder, ignore_errors=True)
    return targets[2], scen_path
