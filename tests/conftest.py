from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GRID6_CFG = ROOT / "sumo_nets" / "grid6" / "grid6.sumocfg"
GRID6_NET = ROOT / "sumo_nets" / "grid6" / "grid6.net.xml"
GRID6_TOML = ROOT / "scenarios" / "grid6.toml"
DATA = Path(__file__).resolve().parent / "data"

# small per-slot linear algebra is far faster single-threaded
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300,
            env_drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`cosim ...` in a fresh process (libsumo allows one SUMO per process)."""
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    return subprocess.run([sys.executable, "-m", "cosim", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout, env=env)


@pytest.fixture
def cli():
    return run_cli
