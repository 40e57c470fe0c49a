#!/usr/bin/env python3
"""CPU a full gate block (attend + finish) of the layer's model, interleaved: this checkout's block
with its functions compiled by TorchScript (what the layer runs), the same functions run by Python,
and optionally a baseline checkout's block (issue 32, third pass).

    python tools/gate_block_bench.py [--rounds 20] [--baseline-src DIR]

Each round runs every variant on the 8 blocks of one corpus prompt (256 tokens) with a random gate
quality, 10 passes, and takes ms of CPU a block (``time.process_time``, one thread, the freed-memory
setting the layer uses); it prints min / median over the rounds and checks that every variant gives
the same bytes per block.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import bench_moe  # noqa: E402 - its --baseline-src loading


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--baseline-src", metavar="DIR", help="a checkout whose block to run alongside (e.g. main's)")
    args = ap.parse_args()

    import torch

    from cosim.layers.moe import model as gm

    gm.keep_freed_memory()
    torch.set_num_threads(1)
    vocab = gm.Vocabulary()
    this = gm.GateModel(len(vocab), 64, 128, 8, 8, 2, 0)  # the layer's defaults
    models = {}
    if args.baseline_src:
        base = bench_moe.baseline_gate(args.baseline_src)
        models["base"] = (base.GateModel(len(vocab), 64, 128, 8, 8, 2, 0), None)
    models["python"] = (this, gm._kernels(False))
    models["script"] = (this, gm._kernels(True))
    quality = torch.rand(8, 8, generator=torch.Generator().manual_seed(0))
    prompt = vocab.prompt(256, torch.Generator().manual_seed(1))
    compiled = gm._kernels

    def run(name: str) -> list[bytes]:
        model, kernels = models[name]
        gm._kernels = compiled if kernels is None else (lambda script, k=kernels: k)
        try:
            with torch.inference_mode():
                x = model.embed(prompt) + model.positions(256)
                got = []
                for layer, block in enumerate(model.blocks):
                    x = block.finish(block.attend(x), quality[layer])[0]
                    got.append(x.numpy().tobytes())
            return got
        finally:
            gm._kernels = compiled

    outputs = {name: run(name) for name in models}  # warm-up, and the bytes of each
    assert all(v == outputs["script"] for v in outputs.values()), "the variants' blocks differ"
    cpu: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name in models:
            c0 = time.process_time()
            for _ in range(10):
                run(name)
            cpu[name].append((time.process_time() - c0) / 80 * 1e3)
    print(f"ms of CPU a full block (one thread), min / median of {args.rounds} rounds; every variant's blocks "
          "identical bit for bit")
    for name, v in cpu.items():
        print(f"  {name:7s} {min(v):6.3f} / {statistics.median(v):6.3f}")


if __name__ == "__main__":
    main()
