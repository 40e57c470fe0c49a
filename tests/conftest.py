from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
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


def as_foreground() -> None:
    """``preexec_fn`` of a child the test will Ctrl-C (SIGINT): the default disposition, as a
    terminal's foreground job has. A shell's background job — a suite started with ``&`` from a
    script — ignores SIGINT, and Python keeps an ignored SIGINT ignored: the child would never
    see the Ctrl-C (a run blocked on a frozen SUMO then waits forever)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def says(text: str, *facts: str) -> bool:
    """``text`` is one line holding each of ``facts`` (key names, paths, numbers), in that order:
    what a message must say, not how it words it."""
    at = 0
    for fact in facts:
        at = text.find(fact, at)
        if at < 0:
            return False
        at += len(fact)
    return "\n" not in text.strip()


def wait_for(cond, timeout: float = 60.0, every: float = 0.05):  # noqa: ANN001, ANN201
    """``cond()``'s first true value, polled every ``every`` s for at most ``timeout`` s; else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every)
    return None


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300,
            env_drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`cosim ...` in a fresh process (libsumo allows one SUMO per process)."""
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    return subprocess.run([sys.executable, "-m", "cosim", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout, env=env)


def record_grid6(folder: Path, end_s: float) -> Path:
    """``end_s`` seconds of real grid6 traffic (SUMO, seed 42) recorded to ``folder/grid6.parquet``."""
    path = folder / "grid6.parquet"
    proc = run_cli("run", str(GRID6_TOML), "--no-layers", "--end", str(end_s), "--record", str(path), "--out",
                   str(folder / "rec"), "-q", "--no-coverage")
    assert proc.returncode == 0, proc.stderr
    return path


def run_grid6(folder: Path, layers_toml: str, *args: str, end_s: float = 90, out: str = "out") -> Path:
    """`cosim run` of grid6 (0.5 s steps, ``end_s``) with ``layers_toml`` appended to the
    scenario, into ``folder/out``; asserts the run succeeded and returns its results folder."""
    toml = folder / "scenario.toml"
    toml.write_text(f'[scenario]\nsumocfg = "{GRID6_CFG}"\nend_s = {end_s}\nstep_length_s = 0.5\n' + layers_toml)
    proc = run_cli("run", str(toml), "--out", str(folder / out), "-q", *args)
    assert proc.returncode == 0, proc.stderr
    return folder / out


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def trace(tmp_path_factory):
    """120 s of real grid6 traffic (SUMO, seed 42), recorded once per test session."""
    return record_grid6(tmp_path_factory.mktemp("grid6trace"), 120)


#: the layers of the run the viewer and the report tests read (two policies of each task layer)
DVIT_MOE = '[layers.dvit]\npolicies = ["vidi", "mddi"]\n[layers.moe]\npolicies = ["gecpa", "nearest"]\n'


@pytest.fixture(scope="session")
def dvit_moe_run(tmp_path_factory):
    """60 s of grid6 with DViT and MoE (``DVIT_MOE``), run once per test session for the tests
    that only read its results (tests/test_view.py, tests/test_report.py): they write elsewhere."""
    return run_grid6(tmp_path_factory.mktemp("dvitmoe"), DVIT_MOE, end_s=60)


@pytest.fixture(scope="session")
def raiser_run(tmp_path_factory):
    """40 s of grid6 (0.5 s steps) with DViT's vidi and optimal and the test plugin's "raiser"
    (tests/data/plugins/bad_plugins.py: raises after 5 tasks), in one process, once per test
    session: (its scenario file, the finished ``cosim run``, its results folder). Read by
    tests/test_plugins.py (the policy dropped) and tests/test_shards.py (the same in a worker)."""
    d = tmp_path_factory.mktemp("raiser")
    scen = d / "s.toml"
    scen.write_text(f'[scenario]\nsumocfg = "{GRID6_CFG}"\nend_s = 40\nstep_length_s = 0.5\n'
                    f'plugins = ["{DATA / "plugins" / "bad_plugins.py"}"]\n'
                    '[layers.dvit]\npolicies = ["vidi", "raiser", "optimal"]\nrequest_rate_per_s = 2.0\n'
                    '[layers.dvit.options.raiser]\nafter = 5\n')
    proc = run_cli("run", str(scen), "--out", str(d / "j1"), "-q", "--jobs", "1")
    return scen, proc, d / "j1"


def _cosims_own(module: str) -> bool:
    return module == "cosim" or module.startswith("cosim.")


def _restore(now: dict, before: dict, module_of, imported_before: set[str]) -> set[str]:
    """``now`` back to ``before``, keeping what cosim itself added meanwhile (a built-in module
    imported for the first time registers its layers and policies once: they stay); the modules
    of the registrations dropped. A registration whose function comes from a cosim module that
    was imported already (``imported_before``) was made by the test — e.g. a policy wrapped by
    ``cosim.gym.cache.as_policy`` — and goes."""
    dropped = {module_of(v) for k, v in now.items() if before.get(k) is not v and not _cosims_own(module_of(v))}
    kept = {k: v for k, v in now.items()
            if k not in before and _cosims_own(module_of(v)) and module_of(v) not in imported_before}
    now.clear()
    now.update({**before, **kept})
    return dropped


@contextmanager
def scoped_registry():
    """Whatever is registered inside — by a test, a module's fixture, a plugin it loads — is
    unregistered at the end, the plugin modules it imported are forgotten (a later load
    imports them again) and the folders it put on ``sys.path`` (a scenario's, for its plugins)
    leave it; cosim's built-in layers, policies and loaders, registered once when their module
    is first imported, stay."""
    from cosim import registry as r

    layers, loaders = dict(r._LAYERS), dict(r._LOADERS)
    policies = {k: dict(v) for k, v in r._POLICIES.items()}
    plugins, versions, loaded = dict(r.PLUGINS), dict(r._EP_VERSIONS), r._entry_points_loaded
    path = list(sys.path)
    imported = set(sys.modules)
    try:
        yield
    finally:
        gone = _restore(r._LAYERS, layers, lambda cls: cls.__module__, imported)
        gone |= _restore(r._LOADERS, loaders, lambda fn: getattr(fn, "__module__", "") or "", imported)
        for layer, table in r._POLICIES.items():
            gone |= _restore(table, policies.get(layer, {}), lambda spec: spec.module, imported)
        gone |= {f"cosim_plugin_{Path(e).stem}" if e.endswith(".py") else e for e in set(r.PLUGINS) - set(plugins)}
        for saved, before in ((r.PLUGINS, plugins), (r._EP_VERSIONS, versions)):
            saved.clear()
            saved.update(before)
        r._entry_points_loaded = loaded
        sys.path[:] = path
        for mod in {m.split(".")[0] for m in gone} - {"", "__main__", "tests"}:  # pytest's test modules stay
            # the whole package: a later `import pkg` must run its registrations again
            for name in [m for m in sys.modules if m == mod or m.startswith(mod + ".")]:
                del sys.modules[name]


@pytest.fixture(autouse=True)
def _isolated_registry():
    """Every test starts from the registry as it was and leaves it so (its registrations, and the
    plugins it loaded, do not leak into the next test)."""
    with scoped_registry():
        yield


def drive_source(src, end_s, slot_s=1.0):
    """Start a traffic source and step it slot by slot to ``end_s``: its snapshots."""
    src.start()
    t, out = src.time_s(), []
    while t < end_s - 1e-9:
        t += slot_s
        out.append(src.step_to(t))
    return out
