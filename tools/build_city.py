#!/usr/bin/env python3
"""Build the city-scale benchmark scenario (issue 14) from the whole Bad Hersfeld OSM extract.

    python tools/build_city.py                        # -> build/city/ (ignored by git), ~15 s
    python tools/build_city.py --osm PATH --out DIR

What it builds, reproducibly (netconvert is deterministic; randomTrips/duarouter seeded 42):
the town's passenger-car network with ``cosim import-osm``'s netconvert settings (~7 MB, so it
is built, not shipped), 10,000 random trips departing one every 0.6 s over 6,000 s, and a
scenario ``DIR/scenarios/city.toml`` that runs all 6,000 s (1 h 40 min) at 0.5 s SUMO steps and
1 s slots. With SUMO 1.28 that keeps 600-1,300 vehicles on the roads at once (9,990 inserted,
~150 teleports at the town's worst junctions); bare ``sumo`` needs ~125 s of CPU for it.

The OSM data is the town extract published in the public DLR-TS/sumo-scenarios collection
(extracted 2021-10-27 with the Overpass API). Map data (c) OpenStreetMap contributors, ODbL 1.0
(https://www.openstreetmap.org/copyright); the attribution is written into the scenario file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosim.netbuild import DemandSpec, build_scenario, netconvert_osm, write_scenario  # noqa: E402

#: where the development machines keep the whole-town extract (beside the repository)
DEFAULT_OSM = ROOT.parent / "shared" / "osm" / "bad_hersfeld.osm.xml.gz"
DEMAND = DemandSpec(end_s=6000.0, period_s=0.6, fringe_factor=5.0, min_distance_m=100.0, seed=42)
STEP_S = 0.5
COMMENT = ("tools/build_city.py: the whole Bad Hersfeld OSM extract, 10,000 trips over 6,000 s (issue 14's city scale)\n"
           "Map data (c) OpenStreetMap contributors, ODbL 1.0 (extract from DLR-TS/sumo-scenarios)")


def build(osm: Path = DEFAULT_OSM, out: Path = ROOT / "build" / "city") -> Path:
    """Build (or rebuild) the scenario under ``out``; returns ``out/scenarios/city.toml``."""
    cfg, scen = build_scenario("city", out, lambda net: netconvert_osm(osm, net), DEMAND, comment=COMMENT,
                               overwrite=True)  # a rebuild replaces its own files
    # build_scenario's scenario runs 600 s at 0.25 s steps: this one runs the whole demand
    return write_scenario(scen, cfg, seed=DEMAND.seed, end_s=DEMAND.end_s, step_length_s=STEP_S, comment=COMMENT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--osm", type=Path, default=DEFAULT_OSM, help=f"the whole-town extract (default {DEFAULT_OSM})")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "city", help="output folder (default build/city)")
    args = ap.parse_args()
    if not args.osm.is_file():
        print(f"cosim: error: {args.osm}: no such OSM file (give the whole-town extract with --osm)", file=sys.stderr)
        sys.exit(2)
    print(f"built {build(args.osm, args.out)}")


if __name__ == "__main__":
    main()
