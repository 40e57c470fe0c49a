"""Helpers the figure tools share: run `cosim run` in a subprocess with overrides, and plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cosim  # noqa: E402 - results are read with cosim.load, the one reader


def run_cosim(scenario: Path, out: Path, *, end: float, seed: int, sets: dict) -> dict:
    """`cosim run SCENARIO --set K=V ...` into ``out``; returns summary.json (exits on failure)."""
    cmd = [sys.executable, "-m", "cosim", "run", str(scenario), "--out", str(out), "--overwrite", "-q", "--no-coverage",
           "--end", str(end), "--seed", str(seed)]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={json.dumps(v)}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{out.name}: {proc.stderr.strip()}")
    return cosim.load(out).require_summary()


def line_plot(df, x: str, y: str, path: Path, xlabel: str, ylabel: str, title: str, logx: bool = False,
              marker: str = "o") -> None:
    """One line per policy (column ``policy``) of ``y`` against ``x``; needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.figure(figsize=(5.5, 3.6))
    for policy, g in df.groupby("policy", sort=False):
        g = g.sort_values(x)
        plt.plot(g[x], g[y], marker=marker or None, label=policy)
    if logx:
        plt.xscale("log", base=2)
    plt.xlabel(xlabel)
    plt.ylabel(ylabel)
    plt.title(title)
    plt.legend(fontsize=7)
    plt.tight_layout()
    plt.savefig(path, dpi=120)
    plt.close()
