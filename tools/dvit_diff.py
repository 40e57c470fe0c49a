#!/usr/bin/env python3
"""Which DViT tasks changed between two runs of the same scenario and seed, policy by policy.

    python tools/dvit_diff.py RUN_A RUN_B

``cosim compare`` says that the task tables differ (a policy whose tasks end at other times
reorders every later row); this says, per policy, how many tasks changed plan, outcome or
latency, and each policy's summary before and after — what a changelog has to explain.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cosim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    ra, rb = cosim.load(args.a), cosim.load(args.b)
    ta, tb = ra["dvit_tasks"], rb["dvit_tasks"]
    sa, sb = (r.require_summary()["layers"]["dvit"] for r in (ra, rb))
    for policy in list(dict.fromkeys([*sa, *sb])):
        if policy not in sa or policy not in sb:
            print(f"{policy:11s} only in {'B' if policy in sb else 'A'}: "
                  f"{json.dumps({k: v for k, v in (sb.get(policy) or sa[policy]).items() if not isinstance(v, dict)})}")
            continue
        a = ta[ta.policy == policy].set_index("task").sort_index()
        b = tb[tb.policy == policy].set_index("task").sort_index()
        common = a.index.intersection(b.index)
        a, b = a.loc[common], b.loc[common]
        plan = (a["devices"].map(list) != b["devices"].map(list)).sum()
        outcome = ((a["success"] != b["success"]) | (a["failure"] != b["failure"])).sum()
        lat = ((a["latency_s"] - b["latency_s"]).abs() > 1e-12).sum()
        changed = {k: (sa[policy][k], sb[policy][k]) for k in sa[policy]
                   if not isinstance(sa[policy][k], dict) and sa[policy][k] != sb[policy].get(k)}
        print(f"{policy:11s} tasks {len(common)}: plan differs {plan}, outcome {outcome}, latency {lat}"
              + (f"; summary {changed}" if changed else "; summary same"))


if __name__ == "__main__":
    main()
