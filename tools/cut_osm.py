#!/usr/bin/env python3
"""Cut a bounding box out of an OpenStreetMap extract (streamed; .gz in and out).

    python tools/cut_osm.py IN.osm[.gz] OUT.osm[.gz] --bbox MINLON,MINLAT,MAXLON,MAXLAT

Keeps the nodes inside the box and the ways with at least two of them (their node lists cut to
the box); relations are dropped. OSM data is (c) OpenStreetMap contributors, ODbL 1.0: keep that
attribution beside any extract you ship.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

from lxml import etree


def _open(path: Path, mode: str):
    return gzip.open(path, mode) if path.name.endswith(".gz") else open(path, mode)


def cut(src: Path, dst: Path, bbox: tuple[float, float, float, float]) -> tuple[int, int]:
    lo_lon, lo_lat, hi_lon, hi_lat = bbox
    keep: set[str] = set()
    nodes, ways = [], []
    with _open(src, "rb") as f:
        for _, el in etree.iterparse(f, events=("end",), tag=("node", "way")):
            if el.tag == "node":
                lat, lon = float(el.get("lat")), float(el.get("lon"))
                if lo_lat <= lat <= hi_lat and lo_lon <= lon <= hi_lon:
                    keep.add(el.get("id"))
                    nodes.append(etree.tostring(el))
            else:
                refs = [nd for nd in el.findall("nd") if nd.get("ref") in keep]
                if len(refs) >= 2:
                    for nd in el.findall("nd"):
                        if nd.get("ref") not in keep:
                            el.remove(nd)
                    ways.append(etree.tostring(el))
            el.clear()
            while el.getprevious() is not None:
                del el.getparent()[0]
    with _open(dst, "wb") as out:
        out.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6" generator="cosim tools/cut_osm.py">\n')
        out.write(f'<bounds minlat="{lo_lat}" minlon="{lo_lon}" maxlat="{hi_lat}" maxlon="{hi_lon}"/>\n'.encode())
        for blob in nodes + ways:
            out.write(blob.strip() + b"\n")
        out.write(b"</osm>\n")
    return len(nodes), len(ways)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--bbox", required=True, help="minlon,minlat,maxlon,maxlat")
    args = ap.parse_args()
    bbox = tuple(float(v) for v in args.bbox.split(","))
    n, w = cut(args.src, args.dst, bbox)  # type: ignore[arg-type]
    print(f"{args.dst}: {n} nodes, {w} ways")


if __name__ == "__main__":
    main()
