"""The docs name what exists: commands, Problem fields (and, below, every result column)."""

import argparse
import dataclasses
import re

from .conftest import ROOT


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
