"""Locate SUMO's binaries and tools (from the ``eclipse-sumo`` wheel, or ``$SUMO_HOME``)."""

from __future__ import annotations

import os
import shutil
from functools import lru_cache
from pathlib import Path

from cosim.errors import CosimError


@lru_cache(maxsize=1)
def sumo_home() -> Path:
    try:
        import sumo  # the eclipse-sumo wheel

        return Path(sumo.SUMO_HOME)
    except ImportError:
        env = os.environ.get("SUMO_HOME")
        if env and Path(env).is_dir():
            return Path(env)
    raise CosimError("SUMO not found: install it with `pip install eclipse-sumo==1.28.0` or set SUMO_HOME")


def sumo_binary(name: str = "sumo") -> str:
    """Absolute path of a SUMO binary (``sumo``, ``sumo-gui``, ``netconvert``, ...)."""
    candidate = sumo_home() / "bin" / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise CosimError(f"SUMO binary '{name}' not found in {sumo_home() / 'bin'} or on PATH")


def sumo_tool(name: str) -> str:
    """Absolute path of a script in SUMO's ``tools/`` folder (e.g. ``randomTrips.py``)."""
    path = sumo_home() / "tools" / name
    if not path.is_file():
        raise CosimError(f"SUMO tool '{name}' not found in {sumo_home() / 'tools'}")
    return str(path)
