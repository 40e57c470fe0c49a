"""The results folder: where a run writes, what ``--overwrite`` may remove, and the one rollback.

A run writes into one folder (``--out``, ``output.dir``, or a new ``runs/NAME-sSEED-TIME-PID``)
and lists what it wrote in the folder's manifest (:data:`cosim.recorder.MANIFEST`), so that
``--overwrite`` removes cosim's files and nothing else. A run refused or failing before its
first slot leaves no trace: :func:`rollback` removes the folder if the run made it, else empties
it of what the run wrote — the one place that says so (:func:`opened` around the setup).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import os
import re
import shutil
from pathlib import Path

from cosim.config import Config
from cosim.errors import CosimError
from cosim.recorder import MANIFEST, claim, read_manifest


def default_out_dir(cfg: Config) -> Path:
    """runs/<name>-s<seed>-<time>-<pid>: two runs started in the same second differ by their
    process id (and :func:`results_dir` adds -2, -3, ... within one process)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.name}-s{cfg.scenario.seed}-{stamp}-{os.getpid()}"


#: a results folder from before the manifest (:data:`cosim.recorder.MANIFEST`): ``--overwrite``
#: removes these names (and ``.NAME.tmp``) and the ``*.parquet`` folders of cosim part files,
#: nothing else (a single ``mine.parquet`` is not cosim's: a run writes tables as part folders)
LEGACY_OUTPUTS = ("summary.json", "config.toml", "sumo.log", "gui-settings.xml", "view.html", "report.png",
                  "report.pdf")


def _part_folder(p: Path) -> bool:
    """A table folder as cosim writes it: nothing in it but part files (and their temporaries)."""
    if not p.is_dir() or p.is_symlink():
        return False
    return all(re.fullmatch(r"\.?part-\d+\.parquet(\.tmp)?", q.name) for q in p.iterdir())


def run_outputs(folder: Path) -> list[Path]:
    """What ``--overwrite`` removes from ``folder``: the names its manifest lists (with their
    temporaries, and the manifest); without a manifest, :data:`LEGACY_OUTPUTS` and part folders."""
    names = read_manifest(folder)
    if names is None:
        names = [*LEGACY_OUTPUTS, *(p.name for p in folder.glob("*.parquet") if _part_folder(p))]
        extra = []
    else:
        extra = [MANIFEST]
    paths = [folder / n for n in names] + [folder / f".{n}.tmp" for n in names] + [folder / n for n in extra]
    return [p for p in paths if p.exists() or p.is_symlink()]


def clear_run_outputs(folder: Path) -> None:
    """Remove what cosim wrote into ``folder`` (:func:`run_outputs`), nothing else."""
    for p in run_outputs(folder):
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)


def run_inputs(cfg: Config) -> list[Path]:
    """The files a run reads: the scenario file, its sumocfg, its plugin files."""
    paths = [cfg.source_file, cfg.scenario.sumocfg, *(p for p in cfg.scenario.plugins if str(p).endswith(".py"))]
    return [Path(p) for p in paths if p and not str(p).startswith("<")]


#: the results folder the last run of this process opened (``cosim run``/``replay`` say after
#: an interrupt whether it holds results, instead of claiming so where no run had started)
last_results_dir: Path | None = None


def results_dir(cfg: Config, out_dir: str | Path | None, overwrite: bool = False,
                inputs: tuple[str | Path, ...] = ()) -> tuple[Path, bool]:
    """The results folder, created: the argument (``--out``), else ``output.dir``, else a new
    runs/<name>-s<seed>-<time>-<pid>. Returns (folder, whether this call created it).

    An existing folder with anything in it is refused unless ``overwrite``, which removes what
    cosim wrote there (:func:`run_outputs`) and nothing else; refused also with ``overwrite``
    when an input of the run (``inputs``: a replayed trace; the scenario file, sumocfg and plugin
    files) lies in the folder."""
    global last_results_dir
    if not out_dir and not cfg.output.dir:
        base = default_out_dir(cfg)
        for i in itertools.count(1):
            path = base if i == 1 else base.with_name(f"{base.name}-{i}")
            try:
                path.mkdir(parents=True)
                last_results_dir = path
                return path, True
            except FileExistsError:
                continue
            except OSError as exc:
                raise CosimError(f"{path}: cannot create the results folder ({exc.strerror or exc})") from None
    path, flag = (Path(out_dir), "--out") if out_dir else (Path(cfg.output.dir), f"{cfg.source_file}: output.dir")
    if path.exists() and not path.is_dir():
        raise CosimError(f"{flag} {path}: is a file, not a folder")
    created = not path.exists()
    if not created and any(path.iterdir()):
        if not overwrite:
            raise CosimError(f"{flag} {path}: the folder is not empty (a previous run's results?); "
                             "add --overwrite to replace them, or choose another folder")
        here = path.resolve()
        for p in [*map(Path, inputs), *run_inputs(cfg)]:
            if p.resolve().is_relative_to(here):
                raise CosimError(f"{flag} {path}: holds {p}, an input of this run; --overwrite would clear the "
                                 "folder it lies in: move it out, or choose another folder")
        clear_run_outputs(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CosimError(f"{flag} {path}: cannot create the results folder ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        if created:
            path.rmdir()
        raise CosimError(f"{flag} {path}: the folder is not writable")
    last_results_dir = path
    return path, created


def rollback(folder: Path, created: bool) -> None:
    """Undo a run's results folder: remove it if the run made it (``created``), else remove
    what the run wrote there (:func:`clear_run_outputs`) and nothing else."""
    if created:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        clear_run_outputs(folder)


@contextlib.contextmanager
def opened(folder: Path, created: bool):  # noqa: ANN201
    """Around what a run sets up in its results folder before the first slot: whatever is raised
    rolls the folder back (:func:`rollback`) and goes on."""
    try:
        yield folder
    except BaseException:
        rollback(folder, created)
        raise


def claim_record(out: Path, record: Path | None) -> None:
    """A trace recorded into the results folder is cosim's output too (``--overwrite`` removes it)."""
    if record is not None and record.resolve().parent == out.resolve():
        claim(out, record.name)


TRACE_SUFFIXES = (".parquet", ".csv", ".csv.gz", ".xml", ".xml.gz")


def check_record(record: str | Path | None, overwrite: bool = False) -> Path | None:
    """The ``--record`` path, checked before the run: a known suffix, a folder it can go in,
    and no earlier trace there unless ``overwrite`` (the caller removes it with
    :func:`remove_record` once every other check has passed)."""
    if not record:
        return None
    p = Path(record)
    if not p.name.lower().endswith(TRACE_SUFFIXES):
        raise CosimError(f"--record {p}: expected TRACE.parquet, TRACE.csv[.gz] or TRACE.xml[.gz]")
    anc = p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise CosimError(f"--record {p}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise CosimError(f"--record {p}: {anc} is not writable")
    if p.exists():
        if not overwrite:
            raise CosimError(f"--record {p}: exists already; add --overwrite to replace it, or choose another name")
    return p


def remove_record(p: Path | None) -> None:
    """The trace at ``p`` (a file or a part folder), if any: an earlier one (allowed by
    --overwrite) just before the run writes it, or the run's own when it is discarded."""
    if p is not None and p.exists():
        shutil.rmtree(p) if p.is_dir() else p.unlink()


@contextlib.contextmanager
def new_folders(*paths: Path, flag: str = ""):  # noqa: ANN201
    """Create each folder of ``paths`` with its missing parents (``mkdir -p``); when the block
    raises, remove again the folders this call created that are still empty, deepest first —
    a command that fails (``cosim plot``, ``cosim import-osm``, ``cosim netgen``) leaves no empty
    folder behind, and never removes one it did not make or anything in it. Yields the folders
    this call created, parents first. An uncreatable folder is one line naming it (after ``flag``)."""
    made: list[Path] = []
    try:
        for p in map(Path, paths):
            missing = [q for q in (p, *p.parents) if not q.exists()]
            try:
                p.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                made += [q for q in reversed(missing) if q.is_dir()]
                at = f"{flag} {p}" if flag else str(p)
                raise CosimError(f"{at}: cannot create the folder ({exc.strerror or exc})") from None
            made += reversed(missing)
        yield made
    except BaseException:
        for d in reversed(made):
            try:
                d.rmdir()
            except OSError:
                pass  # not empty: something else is in it now
        raise
