#!/usr/bin/env python3
"""Rebuild the networks and demand shipped in sumo_nets/ with SUMO's own tools.

    python tools/build_nets.py            # rebuilds every network below
    python tools/build_nets.py grid6      # one of them

Everything is seeded, so a rebuild with the same SUMO version reproduces the committed files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosim.netbuild import DemandSpec, GridSpec, netgenerate_grid, random_trips, write_sumocfg  # noqa: E402

NETS = {
    # 6x6 junctions, 200 m blocks (1 km x 1 km), 2 lanes each way, traffic lights.
    # One departure every 0.4 s keeps a few hundred vehicles on the roads at once.
    "grid6": (GridSpec(), DemandSpec(end_s=3600, period_s=0.4, seed=42), 3600),
}


def build(name: str) -> None:
    grid, demand, end_s = NETS[name]
    out = ROOT / "sumo_nets" / name
    out.mkdir(parents=True, exist_ok=True)
    net = netgenerate_grid(out / f"{name}.net.xml", grid, seed=demand.seed)
    routes = random_trips(net, out / f"{name}.rou.xml", demand)
    cfg = write_sumocfg(out / f"{name}.sumocfg", net, routes, end_s=end_s)
    print(f"built {cfg.relative_to(ROOT)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"networks to build, of {sorted(NETS)} (default: all)")
    args = ap.parse_args()
    for name in args.names or NETS:
        build(name)


if __name__ == "__main__":
    main()
