"""The docs name what exists: commands, Problem fields (and, below, every result column)."""

import argparse
import ast
import dataclasses
import math
import re
from pathlib import Path

import pytest

from .conftest import ROOT, run_grid6


def commands() -> set[str]:
    from cosim.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


#: ``cosim WORD`` in the docs that is no command: the prefix of cosim's internal-error line
#: (docs/plugins.md) and a row label of docs/performance.md's timing table
NOT_COMMANDS = {"internal", "serial"}


def test_the_docs_name_only_real_commands():
    names = commands()
    assert {"run", "replay", "sweep", "compare", "view", "report"} <= names  # the parser is the one listed
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for word in re.findall(r"`cosim ([a-z][a-z-]*)", md.read_text()):
            assert word in names | NOT_COMMANDS, f"{md.name}: `cosim {word}` is no command"
    # docs/api.md's list of the commands that read a results folder through Results
    api = (ROOT / "docs" / "api.md").read_text()
    listed = re.search(r"the one reader of a results folder: (.*?), a sweep's merge", api, re.S).group(1)
    words = re.findall(r"`([a-z-]+)`", listed)
    assert words and set(words) <= names, words



def test_plugins_md_documents_every_problem_field_its_example_reads():
    from cosim.layers.dvit.problem import Problem

    text = (ROOT / "docs" / "plugins.md").read_text()
    start = text.index("| field | shape | unit | meaning |")
    rows = text[start:text.index("\n\n", start)].splitlines()[2:]
    documented = {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    fields = {f.name for f in dataclasses.fields(Problem)}
    assert fields <= documented, sorted(fields - documented)
    # every attribute (not a method call) the page reads off a problem is in the table
    read = set(re.findall(r"(?<![.\w])problem\.(\w+)\b(?!\()", text))
    assert "n_devices" in read and read <= documented, sorted(read - documented)


def command_help(name: str) -> str:
    from cosim.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return " ".join(sub.choices[name].format_help().split())


def test_replay_help_names_every_trace_format_and_no_record_option():
    text = command_help("replay")
    assert all(f in text for f in ("TRACE.parquet", "TRACE.csv[.gz]", "TRACE.fcd.parquet", "TRACE.xml[.gz]"))
    assert "--record trace" not in text and "earlier --record" not in text  # replay has no --record
    assert "--record" in command_help("run") and "earlier --record trace" in command_help("run")


def test_netgen_and_import_osm_help_say_what_each_choice_and_end_do():
    text = command_help("netgen")
    for kind in ("grid:", "spider:", "random:"):
        assert kind in text, kind
    for cmd in ("netgen", "import-osm"):
        assert "also the sumocfg's <end>; the scenario's end_s is the smaller of it and 600" in command_help(cmd)


# -- docs/columns.md: every result column, summary key and categorical value ------------------------
def test_the_column_page_is_generated_from_cosim_columns():
    from cosim.columns import page

    assert (ROOT / "docs" / "columns.md").read_text() == page(), \
        "docs/columns.md is stale: python -c \"from cosim.columns import page; print(page(), end='')\" > docs/columns.md"


def finish_codes(path: Path) -> tuple[set[str], set[str]]:
    """(statuses, reasons) every ``self._finish(task, STATUS, REASON, ...)`` call in a layer's
    source can write to the ``outcome`` and ``failure`` columns: its string constants, both
    branches of a conditional, and the kernel's named constants (``kn.CENSORED``)."""
    from cosim.layers import kernel

    def strings(node: ast.AST) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.IfExp):
            return strings(node.body) | strings(node.orelse)
        if isinstance(node, ast.Attribute) and isinstance(getattr(kernel, node.attr, None), str):
            return {getattr(kernel, node.attr)}
        raise AssertionError(f"{path.name}:{node.lineno}: a _finish argument this test cannot read")

    statuses, reasons = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "_finish" \
                and len(node.args) >= 3:
            statuses |= strings(node.args[1])
            reasons |= strings(node.args[2])
    return statuses, reasons


def test_every_declared_column_and_every_outcome_and_failure_code_has_a_line():
    from cosim import columns
    from cosim.layers.cache.layer import OUTCOMES
    from cosim.layers.dvit.layer import DViTLayer
    from cosim.recorder import COVERAGE_SCHEMA, RSUS_SCHEMA

    tables = columns.run_tables()
    assert list(tables["coverage"][1]) == list(COVERAGE_SCHEMA) and list(tables["rsus"][1]) == list(RSUS_SCHEMA)
    assert list(tables["dvit_tasks"][1]) == list(DViTLayer.COLUMNS)
    vals = columns.values()
    assert list(vals[("cache_requests", "outcome")]) == list(OUTCOMES)  # every outcome, no stale one
    layers = ROOT / "cosim" / "layers"
    for layer, table in (("dvit", "dvit_tasks"), ("moe", "moe_tasks")):
        statuses, reasons = finish_codes(layers / layer / "layer.py")
        assert len(reasons) >= 8, reasons  # the test reads the calls (DViT writes 11 codes, MoE 9)
        assert set(vals[(table, "outcome")]) == statuses, (table, statuses)
        assert set(vals[(table, "failure")]) == reasons, (table, sorted(reasons ^ set(vals[(table, "failure")])))
    # the sweep's core rows: the keys of the dict merge() writes with layer = "core"
    tree = ast.parse((ROOT / "cosim" / "sweep.py").read_text())
    core = next(n for n in ast.walk(tree) if isinstance(n, ast.Dict) and any(
        isinstance(k, ast.Constant) and k.value == "layer" and isinstance(v, ast.Constant) and v.value == "core"
        for k, v in zip(n.keys, n.values)))
    assert {k.value for k in core.keys} - {"layer", "policy"} == set(columns.CORE_ROW)


def documented_keys(tree: dict, documented: set[str], open_keys: tuple[str, ...] = (), prefix: str = "") -> list[str]:
    """The dotted keys of ``tree`` (a list of objects: ``KEY[].``) that have no line in ``documented``."""
    missing = []
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if key not in documented and not (isinstance(v, dict) and v and k not in open_keys):
            missing.append(key)
        if k in open_keys:
            continue
        if isinstance(v, dict):
            missing += documented_keys(v, documented, open_keys, key + ".")
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for x in v:
                missing += documented_keys(x, documented, open_keys, key + "[].")
    return sorted(set(missing))


ALL_LAYERS = ('[layers.dvit]\npolicies = ["vidi", "mddi"]\n[layers.cache]\npolicies = ["lc-predictive", "lru"]\n'
              '[layers.moe]\npolicies = ["gecpa", "nearest"]\n')


@pytest.mark.sumo
def test_every_column_key_and_value_of_a_run_has_a_line(tmp_path):
    """A run of all three layers: each table's columns, each summary.json key (each layer's
    block's too) and each categorical value it holds is on the column page; and dvit_tasks' rsu
    is what the page says: a position in summary.json["rsus"], the user's RSU of coverage.parquet."""
    from cosim import columns
    from cosim.results import load

    res = load(run_grid6(tmp_path, ALL_LAYERS, end_s=40))
    tables = columns.run_tables()
    assert set(res.names) == set(tables)
    for name in res.names:
        have = list(res.arrow(name).schema.names)
        assert [c for c in have if c not in tables[name][1]] == [], name
    for (table, column), vals in columns.values().items():
        if table in res.names:
            seen = {v if isinstance(v, str) else "" for v in res.table(table, [column])[column].unique() if v == v}
            assert seen and seen <= set(vals), (table, column, seen - set(vals))
    s = res.summary
    assert documented_keys(s, set(columns.SUMMARY), columns.OPEN_KEYS) == []
    assert s["status"] in columns.values()[("summary.json", "status")]
    assert set(s["layers"]) == set(columns.LAYER_BLOCKS)
    for layer, block in s["layers"].items():
        for policy, numbers in block.items():
            assert documented_keys(numbers, set(columns.layer_block(layer))) == [], (layer, policy)
    # dvit_tasks.rsu indexes summary.json["rsus"]: mapped to ids, the RSU coverage.parquet gives the
    # user in the slot the task was requested in (final_rsu: the same index, where no migration moved it)
    ids = [r["id"] for r in s["rsus"]]
    tasks = res["dvit_tasks"]
    assert len(tasks) > 10 and tasks["rsu"].between(0, len(ids) - 1).all()
    cov = res.table("coverage", ["time_s", "vehicle", "rsu"])
    cov = cov.assign(vehicle=cov["vehicle"].astype(str), rsu=cov["rsu"].astype(object))
    slot_s = s["slot_s"]
    at = {(v, round(t / slot_s)): r for v, t, r in zip(cov["vehicle"], cov["time_s"], cov["rsu"])}
    for user, t, rsu, final, moved in zip(tasks["user"], tasks["t_request_s"], tasks["rsu"], tasks["final_rsu"],
                                          tasks["migrations"]):
        assert at[(user, math.floor(t / slot_s))] == ids[rsu], (user, t, rsu)
        assert moved or final == rsu


@pytest.mark.sumo
def test_every_column_of_a_sweeps_tables_has_a_line(tmp_path):
    """merge() of a small sweep (a [grid] axis, two seeds, a baseline): every column of
    results.parquet, summary.csv, paired.csv and cells.csv is on the column page (SWEEP_TABLES),
    by name or by its pattern: GRID.KEY (a [grid] key), KEY (a number of the core row or the
    layer's block), KEY.SUFFIX (KEY: such a number), "A.*, B.*" (A or B with a KEY.* suffix)."""
    import pandas as pd

    from cosim import columns, sweep

    from .conftest import GRID6_CFG, run_cli

    (tmp_path / "scen.toml").write_text(f'[scenario]\nsumocfg = "{GRID6_CFG}"\n[layers.cache]\npolicies = ["lc", "lfu"]\n'
                                        'catalog = "table1-variants"\n[output]\ncoverage = false\n')
    f = tmp_path / "sw.toml"
    f.write_text('[sweep]\nname = "cols"\nscenarios = ["scen.toml"]\nseeds = [1, 2]\nend_s = 20\n'
                 'baseline = { cache = "lfu" }\n[grid]\n"layers.cache.aoc_tau_s" = [60.0]\n')
    out = tmp_path / "out"
    proc = run_cli("sweep", str(f), "--out", str(out), "--jobs", "1")
    assert proc.returncode == 0, proc.stderr
    for table in columns.SWEEP_TABLES:
        (out / table).unlink()
    sw = sweep.load(f)
    sweep.merge(sw, out)
    grid = set(sw.grid)
    keys = set(columns.CORE_ROW) | set(columns.layer_block("cache"))
    have = {"results.parquet": list(pd.read_parquet(out / "results.parquet").columns),
            **{t: list(pd.read_csv(out / t).columns) for t in ("summary.csv", "paired.csv", "cells.csv")}}
    assert set(have) == set(columns.SWEEP_TABLES)
    for table, (_, page) in columns.SWEEP_TABLES.items():
        suffixes = {n.split(".", 1)[1] for n in page if n.startswith("KEY.")}
        prefixes = {p.split(".*")[0] for n in page if ".*" in n for p in n.split(", ")}
        allowed = {n for n in page if "KEY" not in n and ".*" not in n}
        allowed |= grid if "GRID.KEY" in page else set()
        allowed |= keys if "KEY" in page else set()
        allowed |= {f"{k}.{x}" for k in keys | prefixes for x in suffixes}
        assert [c for c in have[table] if c not in allowed] == [], table
        assert len(have[table]) > len(grid) + 3 and grid <= set(have[table]), table  # the sweep made the table
    assert set(pd.read_parquet(out / "results.parquet")["layer"]) == {"core", "cache"}
    assert len(pd.read_csv(out / "paired.csv")) == 1  # lc vs lfu: paired.csv has its row


def test_the_layer_pages_link_the_column_page_and_list_every_code():
    from cosim import columns

    for page in ("api", "plugins", "cache", "dvit", "moe"):
        assert "(columns.md)" in (ROOT / "docs" / f"{page}.md").read_text(), page
    vals = columns.values()
    cache = " ".join((ROOT / "docs" / "cache.md").read_text().split())
    assert all(f"`{v}`" in cache for v in vals[("cache_requests", "outcome")])
    dvit = " ".join((ROOT / "docs" / "dvit.md").read_text().split())
    assert all(f"`{v}`" in dvit for v in vals[("dvit_tasks", "failure")] if v)
    assert 'indices into `summary.json["rsus"]`' in dvit
