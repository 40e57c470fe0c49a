"""The Python API: what ``cosim run``, ``cosim replay`` and ``cosim sweep`` do, from a script, a
notebook or a test, each returning the results read back::

    import cosim

    res = cosim.run("scenarios/grid6_dvit.toml", seed=3, end_s=120, out="runs/s3",
                    overrides={"layers.dvit.policies": ["vidi", "mddi"]})
    res.summary["layers"]["dvit"]["mddi"]["vs_baseline"]      # the paired comparison with VIDI
    res["dvit_tasks"]                                         # a pandas DataFrame
    rep = cosim.replay("t.parquet", "scenarios/grid6_dvit.toml", out="runs/rep")
    sw = cosim.sweep("tools/sweeps/dvit_queue_load.toml")    # sw.paired: paired.csv as a DataFrame
    res = cosim.load("runs/s3")                               # any results folder, however it ended

Keyword arguments without a dot are ``scenario`` keys (``seed``, ``end_s``, ``jobs``, …);
``overrides`` takes any dotted key as ``--set`` does (``"layers.dvit.steps": 20``). Bad input
raises :class:`cosim.errors.CosimError` with the one line the command line would print.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cosim.config import Config
    from cosim.results import Results
    from cosim.sweep import SweepResults


def configure(scenario: "str | Path | Config", overrides: dict[str, Any] | None = None, **keys: Any) -> "Config":
    """``scenario`` (a scenario .toml, any .sumocfg, or a :class:`~cosim.config.Config`) with
    ``keys`` (scenario keys: ``seed=3``) and ``overrides`` (dotted keys, as ``--set``) applied."""
    from cosim import config as cfgmod

    cfg = scenario if isinstance(scenario, cfgmod.Config) else cfgmod.load_any(scenario)
    values = {f"scenario.{k}": v for k, v in keys.items()}
    values.update(overrides or {})
    return cfgmod.apply_overrides(cfg, values, where="cosim API") if values else cfg


def run(scenario: "str | Path | Config", out: str | Path | None = None, *, overwrite: bool = False,
        progress: bool = False, overrides: dict[str, Any] | None = None, backend: str | None = None,
        record: str | Path | None = None, **keys: Any) -> "Results":
    """Run SUMO with the plugin attached (as ``cosim run``); returns the results folder read back
    (:class:`cosim.results.Results`: ``.summary``, ``.config``, ``res[table]`` as DataFrames).
    ``out``: the results folder (default ``runs/NAME-sSEED-TIME``); ``record``: also write the
    traffic as a trace; ``backend``: ``"libsumo"`` or ``"traci"``."""
    from cosim import runner

    summary = runner.run(configure(scenario, overrides, **keys), out, backend=backend, progress=progress,
                         record=record, overwrite=overwrite)
    return load_run(summary["out_dir"])


def replay(trace: str | Path, scenario: "str | Path | Config", out: str | Path | None = None, *,
           overwrite: bool = False, progress: bool = False, overrides: dict[str, Any] | None = None,
           **keys: Any) -> "Results":
    """Run the plugin on a recorded trace, no SUMO (as ``cosim replay``); returns its results."""
    from cosim import runner

    summary = runner.replay(configure(scenario, overrides, **keys), trace, out, progress=progress, overwrite=overwrite)
    return load_run(summary["out_dir"])


def sweep(file: str | Path, out: str | Path | None = None, *, jobs: int | None = None, engine: str = "local",
          address: str | None = None, progress: bool = False) -> "SweepResults":
    """Run a sweep file (as ``cosim sweep``: resumes a folder it finds half done) and read it back
    (:func:`cosim.sweep.sweep`)."""
    from cosim import sweep as sweepmod

    return sweepmod.sweep(file, out, jobs=jobs, engine=engine, address=address, progress=progress)


def load_sweep(folder: str | Path) -> "SweepResults":
    """A sweep's results folder (``cosim sweep``'s ``--out``) read back (:func:`cosim.sweep.load_sweep`)."""
    from cosim import sweep as sweepmod

    return sweepmod.load_sweep(folder)


def load_run(folder: str | Path) -> "Results":
    """A run's results folder read back (:func:`cosim.results.load`, the one reader)."""
    from cosim.results import load

    return load(folder)


def __getattr__(name: str):  # noqa: ANN202
    if name == "SweepResults":  # a sweep's results read back: where the sweep writes them
        from cosim.sweep import SweepResults

        return SweepResults
    raise AttributeError(f"module 'cosim.api' has no attribute {name!r}")


__all__ = ["SweepResults", "configure", "load_run", "load_sweep", "replay", "run", "sweep"]
