"""SUMO's own outputs belong to the run: redirected into the results folder, the common ones
also as Parquet tables (issue 27, item 1; docs/sumo_outputs.md).

A sumocfg (or ``scenario.sumo_args`` / ``--sumo-args``) may declare output files: options such
as ``tripinfo-output`` or ``summary-output``, and ``file=`` attributes of detectors and other
elements in its additional files. Left where they point, every run and every parallel sweep cell
writes the same files. :func:`plan` gives each of them a path in the run's ``sumo/`` folder:

* **options** (the sumocfg's or the command line's): the sumocfg's are overridden on the command
  line (SUMO's command line wins over its configuration file), the user's own arguments are
  rewritten in place (SUMO refuses an option given twice);
* **additional files** that declare outputs are copied into ``sumo/additional/`` with each
  output attribute pointing into ``sumo/`` and each relative input reference made absolute, and
  ``--additional-files`` lists the copies (the others by their absolute path).

Why not SUMO's ``--output-prefix``: SUMO puts the prefix in front of the *file name*, in the
directory the path resolves to (relative to the sumocfg or the additional file), so it cannot
move an output into another folder: ``--output-prefix /abs/run/`` with ``summary.xml`` declared
in ``scen/x.sumocfg`` asks for ``scen//abs/run/summary.xml`` (tried with SUMO 1.28). A per-run
prefix would keep runs apart, but in the scenario's own folder (often read-only, e.g. an
installed package) and applied to cosim's own ``--fcd-output`` and ``--log`` too. A prefix or
suffix the sumocfg declares is switched off (``--output-prefix ""``) for the same reason; the
run's folder keeps runs apart.

:func:`convert`, at the end of the run (SUMO closed, its files complete), writes
``sumo_tripinfo``, ``sumo_summary``, ``sumo_e1``, ``sumo_e2`` and ``sumo_emissions`` tables
(one Parquet file each) from the XML with lxml's ``iterparse``; the other outputs stay XML. A
malformed file loses its table, not the run: one warning each.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosim.recorder import claim

#: the sub-folder of the results folder that receives SUMO's outputs
SUMO_DIR = "sumo"

#: SUMO's options that name an output file (the ``<output>`` section's FILE options of
#: ``sumo --save-template`` in SUMO 1.28, less the two input filters, plus the FILE outputs of
#: other sections) -> their synonyms. tests/test_sumo_outputs.py checks this against the SUMO
#: installed. ``log`` is left out: cosim writes SUMO's log to the results folder itself.
OUTPUT_OPTIONS: dict[str, tuple[str, ...]] = {
    "netstate-dump": ("ndump", "netstate", "netstate-output"), "emission-output": (), "battery-output": (),
    "elechybrid-output": (), "chargingstations-output": (), "overheadwiresegments-output": (),
    "substations-output": (), "fcd-output": (), "person-fcd-output": ("person-fcd",), "full-output": (),
    "queue-output": (), "vtk-output": (), "amitran-output": (), "summary-output": ("summary",),
    "person-summary-output": (), "tripinfo-output": ("tripinfo",), "personinfo-output": ("personinfo",),
    "vehroute-output": ("vehroutes",), "personroute-output": ("personroutes",), "link-output": (),
    "railsignal-block-output": (), "railsignal-vehicle-output": (), "bt-output": (), "lanechange-output": (),
    "stop-output": (), "collision-output": (), "edgedata-output": (), "lanedata-output": (),
    "statistic-output": ("statistics-output",), "deadlock-output": (), "save-state.prefix": (),
    "save-state.files": (), "pedestrian.jupedsim.wkt": (), "pedestrian.jupedsim.py": (),
    "device.rerouting.output": (), "device.taxi.dispatch-algorithm.output": (),
    "device.taxi.idle-algorithm.output": (), "message-log": (), "error-log": (),
}
#: any name (option or synonym) -> the option's name
_OPTION_OF = {alias: name for name, aliases in OUTPUT_OPTIONS.items() for alias in (name, *aliases)}
#: options whose value is a list of files
_LISTS = frozenset({"save-state.files"})
_ADDITIONAL = frozenset({"additional-files", "additional", "a"})
_PREFIXES = frozenset({"output-prefix", "output-suffix"})

#: elements of additional files that write a file: tag -> (attribute, kind). The kind names the
#: table the output is converted to (:data:`TABLES`) where it is one of the common ones.
ADDITIONAL_OUTPUTS: dict[str, tuple[str, str]] = {
    "e1Detector": ("file", "e1"), "inductionLoop": ("file", "e1"),
    "e2Detector": ("file", "e2"), "laneAreaDetector": ("file", "e2"),
    "e3Detector": ("file", "e3"), "entryExitDetector": ("file", "e3"),
    "instantInductionLoop": ("file", "instant-e1"),
    "edgeData": ("file", "edgedata"), "laneData": ("file", "lanedata"),
    "edgeRelations": ("file", "edgerelations"), "tazRelations": ("file", "tazrelations"),
    "routeProbe": ("file", "routeprobe"), "vTypeProbe": ("file", "vtypeprobe"),
    "calibrator": ("output", "calibrator"), "timedEvent": ("dest", "tls"),
}
#: attributes of additional files that name an input file (made absolute in a copy)
ADDITIONAL_INPUTS: dict[str, str] = {"include": "href", "rerouter": "file", "variableSpeedSign": "file",
                                     "poly": "imgFile", "poi": "imgFile"}
#: the option outputs converted to tables: option -> kind
_OPTION_KINDS = {"tripinfo-output": "tripinfo", "summary-output": "summary", "emission-output": "emissions"}
#: kind -> (table name, the XML element that is one row, (its parent's tag, the parent's attribute
#: copied to each row) or None)
TABLES: dict[str, tuple[str, str, tuple[str, str] | None]] = {
    "tripinfo": ("sumo_tripinfo", "tripinfo", None),
    "summary": ("sumo_summary", "step", None),
    "e1": ("sumo_e1", "interval", None),
    "e2": ("sumo_e2", "interval", None),
    "emissions": ("sumo_emissions", "vehicle", ("timestep", "time")),
}
#: columns kept as text (ids and names; a vehicle id "12" stays the string the layers' tables hold)
TEXT_COLUMNS = frozenset({"id", "vType", "type", "departLane", "arrivalLane", "lane", "eclass", "route", "devices",
                          "vaporized", "edge", "file"})
_NULL_FILES = frozenset({"nul", "/dev/null"})


@dataclass
class Output:
    """One output file SUMO writes into the results folder."""

    kind: str  # the option's name, or the additional element's kind (e1, e2, ...)
    declared_in: str  # the sumocfg, "sumo_args" or the additional file
    declared: str  # the value as written there
    path: Path  # where SUMO now writes it (absolute)
    element: str = ""  # for an additional file's output: the element's tag and id


@dataclass
class Plan:
    """What :func:`plan` decided: the user's SUMO arguments rewritten (``user_args``), the
    arguments to add (``args``) and the outputs, each with its new path."""

    user_args: list[str]
    args: list[str] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    #: the outputs of a SUMO cosim did not start (:func:`found`): where SUMO writes them, not moved
    attached: bool = False

    def __bool__(self) -> bool:
        return bool(self.outputs)


class _Names:
    """New, distinct file names in a folder: the declared base name, ``-2``, ``-3``, ... on a
    clash; one declared path (after resolution) keeps one name (detectors may share a file)."""

    def __init__(self, folder: Path):
        self.folder, self.by_source, self.taken = folder, {}, set()

    def __call__(self, source: Path) -> Path:
        key = os.path.normpath(str(source))
        if key in self.by_source:
            return self.by_source[key]
        name = source.name or "output"
        stem, dot, ext = name.partition(".")
        i = 1
        while name.lower() in self.taken:
            i += 1
            name = f"{stem}-{i}{dot}{ext}"
        self.taken.add(name.lower())
        self.by_source[key] = path = self.folder / name
        return path


def _split_files(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _resolve(value: str, base: Path) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else base / p


def sumocfg_options(sumocfg: str | Path) -> dict[str, str]:
    """The options a sumocfg sets (name -> value): ``<section><name value=".."/></section>``
    (or directly under ``<configuration>``)."""
    from lxml import etree

    root = etree.parse(str(sumocfg), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
    out = {}
    for sec in root:
        if not isinstance(sec.tag, str):
            continue
        for el in ([sec] if sec.get("value") is not None else sec):
            if isinstance(el.tag, str) and el.get("value") is not None:
                out[el.tag] = el.get("value")
    return out


def _is_configuration(path: Path) -> bool:
    """A SUMO configuration file (not, say, a network given in its place): by its name, else by
    its first bytes (a large network is never parsed here)."""
    if path.name.lower().endswith((".sumocfg", ".sumocfg.xml")):
        return True
    try:
        with open(path, "rb") as f:
            return b"<configuration" in f.read(4096)
    except OSError:
        return False


def _parse_args(args: list[str]) -> list[tuple[int, str, str | None, bool]]:
    """(index of the value token, option name, value, written as --name=value) for each option
    of a SUMO command line whose value we may rewrite."""
    found = []
    i = 0
    while i < len(args):
        tok = str(args[i])
        if tok.startswith("-") and len(tok) > 1:
            name = tok.lstrip("-")
            if "=" in name:
                name, _, value = name.partition("=")
                found.append((i, name, value, True))
            elif i + 1 < len(args) and (name in _OPTION_OF or name in _ADDITIONAL or name in _PREFIXES):
                found.append((i + 1, name, str(args[i + 1]), False))
                i += 1
        i += 1
    return found


def plan(sumocfg: str | Path | None, out_dir: str | Path, sumo_args: list[str] | tuple[str, ...] = (), *,
         cwd: str | Path | None = None, keep: tuple[str, ...] = (), options: dict[str, str] | None = None,
         dry: bool = False) -> Plan:
    """Where each output the sumocfg and ``sumo_args`` declare goes: ``out_dir/sumo/``.

    ``keep``: options cosim sets itself on the command line after these arguments (e.g.
    ``fcd-output`` for ``--record x.xml``): the sumocfg's value is overridden by cosim's anyway,
    so it is not redirected. Writes only the copies of additional files that declare outputs
    (into ``out_dir/sumo/additional/``); declares nothing: returns an empty plan, writes nothing.
    ``options``: the option values instead of the sumocfg's (paths relative to ``cwd``);
    ``dry``: each output keeps its path (nothing is written, no argument made).
    """
    t0 = time.process_time()
    out_dir = Path(out_dir).absolute()
    folder = out_dir / SUMO_DIR
    names = _Names(folder) if not dry else (lambda p: Path(os.path.normpath(p.absolute())))
    cwd = Path(cwd or os.getcwd())
    user_args = [str(a) for a in sumo_args]
    res = Plan(user_args=list(user_args))
    cfg_opts: dict[str, str] = {}
    cfg_base = cwd
    if options is not None:
        cfg_opts = dict(options)
    elif sumocfg is not None and _is_configuration(Path(sumocfg)):
        try:
            cfg_opts = sumocfg_options(sumocfg)
        except Exception:  # noqa: BLE001 - SUMO itself says what is wrong with its configuration
            cfg_opts = {}
        cfg_base = Path(sumocfg).absolute().parent
    cli = _parse_args(user_args)
    on_cli = {_OPTION_OF.get(n, "additional-files" if n in _ADDITIONAL else n) for _, n, _, _ in cli}

    def new_paths(option: str, value: str, base: Path, where: str) -> str:
        vals = _split_files(value) if option in _LISTS else [value.strip()]
        new = []
        for v in vals:
            if not v or v.lower() in _NULL_FILES:
                new.append(v)
                continue
            dest = names(_resolve(v, base))
            res.outputs.append(Output(option, where, v, dest))
            new.append(str(dest))
        return ",".join(new)

    # the sumocfg's options (the user's command line ones win: SUMO takes those)
    for name, value in cfg_opts.items():
        option = _OPTION_OF.get(name)
        if option is None or option in keep or option in on_cli or not value.strip():
            continue
        res.args += [f"--{option}", new_paths(option, value, cfg_base, str(sumocfg))]
    # the user's own arguments, rewritten in place
    for idx, name, value, joined in cli:
        option = _OPTION_OF.get(name)
        if option is None or not value.strip():
            continue
        new = new_paths(option, value, cwd, "sumo_args")
        res.user_args[idx] = f"{res.user_args[idx].partition('=')[0]}={new}" if joined else new
    # additional files: the command line's list replaces the sumocfg's
    add_cli = [(idx, value, joined) for idx, name, value, joined in cli if name in _ADDITIONAL]
    if add_cli:
        sources = [(idx, value, joined, cwd, "sumo_args") for idx, value, joined in add_cli]
    else:
        value = next((cfg_opts[k] for k in ("additional-files", "additional", "a") if k in cfg_opts), "")
        sources = [(None, value, False, cfg_base, str(sumocfg))] if value.strip() else []
    copies = _Names(folder / "additional") if not dry else None
    for idx, value, joined, base, _where in sources:
        files = [_resolve(v, base) for v in _split_files(value)]
        rewritten = [_rewrite_additional(f, names, copies, res) for f in files]
        if all(r is None for r in rewritten):
            continue
        new = ",".join(str(r if r is not None else f.absolute()) for f, r in zip(files, rewritten))
        if idx is None:
            res.args += ["--additional-files", new]
        else:
            res.user_args[idx] = f"{res.user_args[idx].partition('=')[0]}={new}" if joined else new
    if res.outputs and not dry:
        declared = [n for n in _PREFIXES if n in cfg_opts and cfg_opts[n]] + \
                   [n for _, n, v, _ in cli if n in _PREFIXES and v]
        if declared:
            for k in sorted(set(declared)):
                if k not in {n for _, n, _, _ in cli}:
                    res.args += [f"--{k}", ""]
                else:
                    for idx, n, _, joined in cli:
                        if n == k:
                            res.user_args[idx] = f"{res.user_args[idx].partition('=')[0]}=" if joined else ""
            res.notes.append(f"{', '.join(sorted(set(declared)))} switched off: the outputs are in the run's "
                             f"{SUMO_DIR}/ folder under their declared names")
        folder.mkdir(parents=True, exist_ok=True)
        claim(out_dir, SUMO_DIR)  # --overwrite removes it with the rest of the run
    res.cpu_s = time.process_time() - t0
    return res


def _rewrite_additional(path: Path, names, copies: _Names | None, res: Plan, depth: int = 0) -> Path | None:
    """A copy of additional file ``path`` whose outputs point into the results folder, or None
    when it (and what it includes) declares none. A file that cannot be read is left to SUMO,
    which says what is wrong with it. ``copies`` None: the outputs are listed, nothing is
    written (returns ``path`` when it declares some)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    # a plain byte search first: a file without any such element is not parsed at all
    if not any(f"<{tag}".encode() in data for tag in (*ADDITIONAL_OUTPUTS, "include")) or depth > 8:
        return None
    from lxml import etree

    try:
        tree = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True))
    except etree.XMLSyntaxError:
        return None
    base = path.absolute().parent
    declares = False  # outputs here, or in a file this one includes
    for el in tree.iter():
        if not isinstance(el.tag, str):
            continue
        spec = ADDITIONAL_OUTPUTS.get(el.tag)
        if spec is not None:
            attr, kind = spec
            value = el.get(attr)
            if value and value.strip().lower() not in _NULL_FILES:
                dest = names(_resolve(value.strip(), base))
                res.outputs.append(Output(kind, str(path), value, dest, f"{el.tag} '{el.get('id', '')}'"))
                el.set(attr, str(dest))
                declares = True
            continue
        attr = ADDITIONAL_INPUTS.get(el.tag)
        value = el.get(attr) if attr else None
        if value:  # the copy lives elsewhere: its relative inputs made absolute
            target = _resolve(value, base)
            sub = _rewrite_additional(target, names, copies, res, depth + 1) if el.tag == "include" else None
            declares = declares or sub is not None
            el.set(attr, str(sub if sub is not None else target.absolute()))
    if not declares or copies is None:
        return path if declares else None
    copy = copies(path)
    copy.parent.mkdir(parents=True, exist_ok=True)
    etree.ElementTree(tree).write(str(copy), xml_declaration=True, encoding="UTF-8")
    return copy


# -- conversion --------------------------------------------------------------------------------

def _rows(path: Path, row_tag: str, parent: tuple[str, str] | None) -> tuple[list[dict[str, str]], Exception | None]:
    """Every ``row_tag`` element's attributes (and its children's, as ``child_attr``), in file
    order; ``parent`` = (tag, attribute): the enclosing element's attribute added first to each
    row (the emission output's ``timestep`` ``time``). Streamed: what was read is dropped. A
    malformed file (e.g. SUMO killed mid-run): the rows before the fault, and the error."""
    rows: list[dict[str, str]] = []
    try:
        _read_rows(path, row_tag, parent, rows)
    except Exception as exc:  # noqa: BLE001 - lxml's XMLSyntaxError, or the file gone
        return rows, exc
    return rows, None


def _read_rows(path: Path, row_tag: str, parent: tuple[str, str] | None, rows: list) -> None:
    from lxml import etree

    current: dict[str, str] = {}
    tags = (row_tag, parent[0]) if parent else (row_tag,)
    for event, el in etree.iterparse(str(path), events=("start", "end"), tag=tags, huge_tree=True):
        if parent is not None and el.tag == parent[0]:
            if event == "start":
                value = el.get(parent[1])
                current = {parent[1]: value} if value is not None else {}
                continue
        elif event == "end":
            row = {**current, **el.attrib}
            for child in el:
                if isinstance(child.tag, str):
                    row.update({f"{child.tag}_{k}": v for k, v in child.attrib.items()})
            rows.append(row)
        else:
            continue
        if event == "end":
            el.clear(keep_tail=True)
            while el.getprevious() is not None:
                del el.getparent()[0]


def _frame(rows: list[dict[str, str]], text: frozenset = TEXT_COLUMNS):  # noqa: ANN201 - pyarrow.Table
    """A table from the rows (the general path, for rows whose columns differ): a column is
    int64 where every value is an integer, else float64 where every value is a number, else
    text (the ids in ``text`` always); a value a row lacks, or an empty one in a numeric column,
    is null. The conversions are Arrow's, the same as the fast path's (:func:`_read_table`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = list(dict.fromkeys(k for r in rows for k in r))
    arrays = {}
    for c in names:
        values = [r.get(c) for r in rows]
        arr = pa.array(values, pa.string())
        if c not in text:
            given = pa.array([v if v != "" else None for v in values], pa.string())
            for typ in (pa.int64(), pa.float64()):
                try:
                    arr = pc.cast(given, typ)
                    break
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    continue
        arrays[c] = arr
    return pa.table(arrays)


#: joins a row's values for pyarrow's CSV reader: a character XML 1.0 cannot hold (nor can an
#: attribute value), so no value contains it and none needs quoting
_SEP = "\x1f"


class _Lines:
    """An lxml parser target (SAX-like: no tree is built) collecting each ``row_tag`` element's
    attribute values (and its children's, as ``child_attr``; ``parent``'s attribute first) as
    one :data:`_SEP`-joined line. ``uniform`` stays True while every row has the same columns
    and no value holds a line break: then pyarrow's CSV reader turns the lines into typed
    columns in C (4x faster than building the columns in Python on SUMO's emission output)."""

    def __init__(self, row_tag: str, parent: tuple[str, str] | None):
        self.row_tag = row_tag
        self.parent_tag, self.parent_attr = parent or (None, None)
        self.lines: list[str] = []
        self.columns: tuple[str, ...] | None = None
        self.uniform = True
        self.depth = 0
        self.pre_keys: list[str] = []
        self.pre_vals: list[str] = []

    def start(self, tag, attrib) -> None:
        if self.depth:
            self.depth += 1
            self.keys += [f"{tag}_{k}" for k in attrib]
            self.vals += attrib.values()
        elif tag == self.row_tag:
            self.depth = 1
            self.keys = [*self.pre_keys, *attrib]
            self.vals = [*self.pre_vals, *attrib.values()]
        elif tag == self.parent_tag:
            value = attrib.get(self.parent_attr)
            self.pre_keys, self.pre_vals = ([self.parent_attr], [value]) if value is not None else ([], [])

    def end(self, tag) -> None:
        if not self.depth:
            return
        self.depth -= 1
        if self.depth:
            return
        keys = tuple(self.keys)
        if keys != self.columns:
            if self.columns is not None:
                self.uniform = False
            self.columns = keys
        line = _SEP.join(self.vals)
        if "\n" in line or "\r" in line:
            self.uniform = False
        self.lines.append(line)

    def close(self) -> None:
        return None


def _read_table(path: Path, row_tag: str, parent: tuple[str, str] | None):  # noqa: ANN202 - (pa.Table, error)
    """The rows of one output file as an Arrow table, and the error that stopped the reading
    (a malformed file: the rows before the fault) or None."""
    import pyarrow as pa
    from lxml import etree

    target = _Lines(row_tag, parent)
    error = None
    try:
        etree.parse(str(path), etree.XMLParser(target=target, huge_tree=True, resolve_entities=False, no_network=True))
    except Exception as exc:  # noqa: BLE001 - lxml's XMLSyntaxError, or the file gone
        error = exc
    if not target.lines:
        return pa.table({}), error
    if target.uniform:
        from pyarrow import csv

        data = pa.py_buffer(("\n".join(target.lines) + "\n").encode())
        cols = list(target.columns)
        table = csv.read_csv(data, read_options=csv.ReadOptions(column_names=cols, block_size=1 << 24),
                             parse_options=csv.ParseOptions(delimiter=_SEP, quote_char=False, double_quote=False),
                             convert_options=csv.ConvertOptions(
                                 null_values=[""], strings_can_be_null=False, true_values=["\x1e"],
                                 false_values=["\x1e"],  # no booleans: text stays text, as below
                                 column_types={c: pa.string() for c in cols if c in TEXT_COLUMNS}))
        return table, error
    rows, error2 = _rows(path, row_tag, parent)  # mixed columns (rare): the general path
    return _frame(rows), error or error2


def _write_parquet(table, path: Path) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def is_xml(path: Path) -> bool:
    """SUMO writes XML unless the name ends in .csv or .parquet (``output.format`` aside)."""
    name = path.name.lower().removesuffix(".gz")
    return not name.endswith((".csv", ".parquet"))


def convert(outputs: list[Output], out_dir: str | Path, plan_cpu_s: float = 0.0) -> tuple[dict[str, Any], list[str]]:
    """The common outputs as Parquet tables in ``out_dir``: returns summary.json's
    ``sumo_outputs`` block (each output's declared and new path, the rows of each table) and
    one warning per output that could not be converted (missing or malformed: the run keeps
    the rest)."""
    import pyarrow as pa

    out_dir = Path(out_dir)
    t0 = time.process_time()
    warnings: list[str] = []
    by_kind: dict[str, list[Output]] = {}
    for o in outputs:
        kind = _OPTION_KINDS.get(o.kind, o.kind)
        if kind in TABLES:
            by_kind.setdefault(kind, []).append(o)
    tables: dict[str, int] = {}
    for kind, outs in by_kind.items():
        table, row_tag, parent_attr = TABLES[kind]
        parts = []
        seen: set[Path] = set()
        for o in outs:
            if o.path in seen:
                continue
            seen.add(o.path)
            rel = _rel(o.path, out_dir)
            if not is_xml(o.path):
                continue  # SUMO wrote it as CSV/Parquet itself: kept as it is
            if not o.path.is_file():
                warnings.append(f"SUMO output {rel} ({o.kind} declared in {o.declared_in}): not written by SUMO, "
                                f"no {table} table")
                continue
            try:
                got, error = _read_table(o.path, row_tag, parent_attr)
            except Exception as exc:  # noqa: BLE001 - converting must not lose the run
                warnings.append(f"SUMO output {rel}: not converted ({type(exc).__name__}: {exc})")
                continue
            if error is not None:  # a malformed output must not lose the run: the rows before the fault
                warnings.append(f"SUMO output {rel} is malformed ({type(error).__name__}: {error}): "
                                f"{table}.parquet holds the {got.num_rows} rows before the fault")
            if kind in ("e1", "e2") and got.num_columns:
                got = got.append_column("file", pa.array([rel] * got.num_rows, pa.string()))
            parts.append(got)
        if not parts:
            continue
        try:
            merged = pa.concat_tables([t for t in parts if t.num_columns] or parts[:1], promote_options="permissive")
            claim(out_dir, f"{table}.parquet")
            _write_parquet(merged, out_dir / f"{table}.parquet")
            tables[table] = merged.num_rows
        except Exception as exc:  # noqa: BLE001
            warnings.append(f"SUMO outputs: {table}.parquet not written ({type(exc).__name__}: {exc})")
    block = {
        "files": [{"output": o.kind, **({"element": o.element} if o.element else {}), "declared_in": o.declared_in,
                   "declared": o.declared, "file": _rel(o.path, out_dir)} for o in outputs],
        "tables": tables,
    }
    # CPU seconds of planning (before the run) and converting (after it); compare leaves cpu_s out
    return block | {"cpu_s": plan_cpu_s + time.process_time() - t0}, warnings


def _rel(path: Path, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base.absolute()))
    except ValueError:
        return str(path)


# -- a SUMO cosim did not start (attach) ---------------------------------------------------------

def found(conn: Any, cwd: str | Path | None = None) -> Plan:
    """The outputs a running SUMO writes (``conn``: libsumo, traci or a connection), read from
    its options (paths relative to the working directory SUMO was started in, ``cwd``) and its
    additional files. Nothing is moved: SUMO opened these files when it started."""
    opts = {}
    for name in (*OUTPUT_OPTIONS, "additional-files"):
        try:
            value = conn.simulation.getOption(name)
        except Exception:  # noqa: BLE001 - an option this SUMO does not know
            continue
        if value:
            opts[name] = str(value)
    try:  # save-state.prefix has a default ("state"): an output only when states are saved
        period = float(conn.simulation.getOption("save-state.period") or -1)
        saves = bool(conn.simulation.getOption("save-state.times")) or period > 0
    except Exception:  # noqa: BLE001
        saves = False
    if not saves:
        opts.pop("save-state.prefix", None)
    res = plan(None, ".", options=opts, cwd=cwd, dry=True)
    for o in res.outputs:
        if o.declared_in == "None":
            o.declared_in = "the running SUMO's options"
    res.attached = True
    return res


def at_end(p: Plan, out_dir: str | Path) -> tuple[dict[str, Any], list[str]]:
    """summary.json's ``sumo_outputs`` block at the end of a run, and its warnings: the tables
    converted (SUMO closed, its files complete) or, for a SUMO cosim did not start, where its
    outputs are (SUMO still runs: :func:`collect` them after closing it)."""
    if not p.attached:
        return convert(p.outputs, out_dir, p.cpu_s)
    return {"redirected": False, "files": [{"output": o.kind, **({"element": o.element} if o.element else {}),
                                            "declared_in": o.declared_in, "declared": o.declared, "file": str(o.path)}
                                           for o in p.outputs],
            "note": "SUMO was started by your script: its outputs stay where it writes them; after closing SUMO, "
                    "cosim.sumo_outputs.collect(RUN_DIR) copies them into RUN_DIR/sumo/ and converts them"}, []


def collect(run_dir: str | Path) -> dict[str, Any]:
    """After an ``attach`` run, once SUMO is closed (its files complete): copy the outputs its
    summary.json lists into ``run_dir/sumo/`` and convert the common ones to tables, as a run
    cosim started does. Updates summary.json's ``sumo_outputs`` block (and ``warnings``) and
    returns the block."""
    import shutil

    from cosim.errors import CosimError
    from cosim.recorder import dumps_json, write_atomic
    from cosim.results import load

    run = Path(run_dir)
    summary_path = run / "summary.json"
    summary = load(run).require_summary()  # one line when it is missing or broken
    block = summary.get("sumo_outputs")
    if not block or block.get("redirected", True):
        raise CosimError(f"{run}: no outputs of a SUMO cosim did not start to collect (summary.json: sumo_outputs)")
    names = _Names(run.absolute() / SUMO_DIR)
    outputs, warnings = [], []
    for entry in block["files"]:
        src = Path(entry["file"])
        dest = names(src)
        if src.is_file():
            claim(run, SUMO_DIR)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        outputs.append(Output(entry["output"], entry["declared_in"], str(src), dest, entry.get("element", "")))
    new, warnings = convert(outputs, run)
    new["redirected"] = False
    new["collected"] = True
    summary["sumo_outputs"] = new
    summary["warnings"] = list(summary.get("warnings") or []) + warnings
    write_atomic(summary_path, (dumps_json(summary) + "\n").encode())
    return new
