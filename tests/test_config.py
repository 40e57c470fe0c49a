import dataclasses
import json
from pathlib import Path

import pytest

from cosim import config
from cosim.errors import ConfigError

from .conftest import GRID6_CFG, GRID6_TOML


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def test_shipped_scenario_loads_with_paths_resolved_against_the_file():
    cfg = config.load(GRID6_TOML)
    assert Path(cfg.scenario.sumocfg) == GRID6_CFG.resolve()
    assert cfg.scenario.slot_s == 1.0 and cfg.rsu.radius_m == 500.0 and cfg.world.grid_cell_m == 25.0
    assert cfg.name == "grid6"


def test_effective_config_round_trips(tmp_path):
    cfg = config.load(GRID6_TOML).replace(scenario={"seed": 9}, layers={"x": {"rate": 0.5}})
    again = config.load(write(tmp_path, config.dump_toml(cfg)))
    # the name resolved (the file's stem): loaded back from another file, it is still this run's
    assert again == cfg.replace(scenario={"name": "grid6"}) and again.name == cfg.name == "grid6"


@pytest.mark.parametrize(
    "text, message",
    [
        ('[scenario]\nsumocfg = "a.sumocfg"\nsed = 3\n', "s.toml: unknown key 'scenario.sed'"),
        ('[scenario]\nsumocfg = "a.sumocfg"\n[rsu]\nradius_m = -5\n', "s.toml: rsu.radius_m: -5 is out of range"),
        ('[scenario]\nsumocfg = "a.sumocfg"\nslot_s = 0\n', "scenario.slot_s: 0 is out of range (must be >= 0.001)"),
        ('[scenario]\nsumocfg = "a.sumocfg"\nbackend = "sockets"\n', "scenario.backend: 'sockets' is not one of libsumo, traci"),
        ('[scenario]\nsumocfg = "a.sumocfg"\nseed = "x"\n', "scenario.seed: expected an integer"),
        ('[scenario]\nsumocfg = "a.sumocfg"\n[world]\ngrid_cell_m = true\n', "world.grid_cell_m: expected a number"),
        ('[scenario]\nsumocfg = "a.sumocfg"\n[rsus]\n', "unknown table '[rsus]'"),
        ("[scenario]\nseed = 1\n", "missing key 'scenario.sumocfg'"),
        ('[scenario]\nsumocfg = "a.sumocfg"\n[channel]\nvehicle_bandwidth_hz = [80e6, 50e6]\n', "channel.vehicle_bandwidth_hz: need 0 < lo <= hi"),
        ('[scenario]\nsumocfg = "a.sumocfg"\n[rsu]\nplacement = "sites"\n', 'rsu.placement = "sites" needs at least one'),
        ('[scenario]\nsumocfg = "a.sumocfg"\n[[rsu.sites]]\nx = 1\n', "rsu.sites[0] must be"),
        ('[scenario\nsumocfg = "a"\n', "s.toml: invalid TOML"),
        ('[scenario]\nsumocfg = "a.sumocfg"\nname = "../../x"\n', "scenario.name: '../../x' cannot name the results folder"),
        ('[scenario]\nsumocfg = "a.sumocfg"\nname = "/tmp/x"\n', "scenario.name: '/tmp/x' cannot name"),
        ('[scenario]\nsumocfg = "a.sumocfg"\nname = ".hidden"\n', "scenario.name: '.hidden' cannot name"),
        ('[scenario]\nsumocfg = "a.sumocfg"\nname = "a\\\\b"\n', "scenario.name: 'a\\\\b' cannot name"),
    ],
)
def test_bad_input_names_file_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as exc:
        config.load(write(tmp_path, text))
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="no such scenario file"):
        config.load("nope.toml")


def test_for_sumocfg_defaults():
    cfg = config.for_sumocfg(GRID6_CFG)
    assert cfg.name == "grid6" and cfg.scenario.seed == 42 and cfg.rsu.placement == "lattice"
    with pytest.raises(ConfigError):
        config.for_sumocfg("missing.sumocfg")


def test_overrides_from_the_command_line_are_typed_and_validated():
    cfg = config.load(GRID6_TOML)
    assert [config.parse_value(v) for v in ("40", "1e9", "true", "[1, 2]", '"x"', "lc")] == [40, 1e9, True, [1, 2], "x", "lc"]
    out = config.apply_overrides(cfg, {"scenario.seed": 7, "layers.cache.gpu_memory_gb": 40})
    assert out.scenario.seed == 7 and out.layers == {"cache": {"gpu_memory_gb": 40}}
    assert cfg.scenario.seed == 42 and cfg.layers == {}  # the original is untouched
    with pytest.raises(ConfigError, match="'seed' is not a key"):
        config.apply_overrides(cfg, {"seed": 7})
    with pytest.raises(ConfigError, match="scenario.seed: expected an integer"):
        config.apply_overrides(cfg, {"scenario.seed": "x"})


def test_describe_documents_every_layer_key():
    """Every registered layer's keys and every policy's options, each in its own table."""
    from cosim import registry

    text = config.describe()

    def block(table: str) -> str:
        return text.split(f"\n[{table}]")[1].split("\n[")[0]

    assert set(registry.BUILTIN_LAYERS) <= set(registry.layer_names())
    for name in registry.layer_names():
        cls = registry.layer_class(name).config_class
        for f in dataclasses.fields(cls) if cls is not None else ():
            assert f"\n{f.name} = " in block(f"layers.{name}"), (name, f.name)
        for pname, spec in registry.policies(name).items():
            options = block(f"layers.{name}.options.{pname}")
            for f in dataclasses.fields(spec.options) if spec.options is not None else ():
                assert f"\n{f.name} = " in options, (name, pname, f.name)
    assert "\ngpu_memory_gb = 80.0  # " in block("layers.cache")


def test_option_checks_lists_tables_and_their_elements():
    """One mechanism for every key: the type (``list[int] | int``, ``dict[str, str]``, a nested
    dataclass) and each ``option`` check, on the value and on each element; one line per error
    naming the file and the key down to the element."""
    from dataclasses import dataclass

    from cosim.config import build_section, option

    @dataclass(frozen=True)
    class Inner:
        file: str = option("", required=True, doc="a file")
        tag: str = option("", pattern=(r"[a-z]+", "lower-case letters"))

    @dataclass(frozen=True)
    class Outer:
        counts: list[int] | int = option([1], lo=1, hi=9, min_items=1, max_items=3, unique="counted twice",
                                         each={"lo": 0, "hi": 5})
        names: dict[str, str] = option({}, each={"choices": ("a", "b")})
        parts: list[str | Inner] = option([], required=True)
        axes: dict[str, list] = option({}, each={"min_items": 1, "unique": True})

    ok = build_section(Outer, {"counts": [0, 5], "names": {"x": "b"}, "parts": ["p", {"file": "f", "tag": "ab"}],
                               "axes": {"a.b": [1, 2.5]}}, "f.toml", "t")
    assert ok.counts == [0, 5] and ok.names == {"x": "b"} and ok.parts == ["p", Inner("f", "ab")]
    assert build_section(Outer, {"counts": 9, "parts": []}, "f.toml", "t").counts == 9  # the int member of the union
    for data, message in [
        ({"counts": [1]}, "missing key 't.parts'"),
        ({"parts": [], "counts": 10}, "t.counts: 10 is out of range (must be <= 9)"),
        ({"parts": [], "counts": [6]}, "t.counts[0]: 6 is out of range (must be <= 5)"),
        ({"parts": [], "counts": [1, 2, 1]}, "t.counts: 1 is listed twice (counted twice)"),
        ({"parts": [], "axes": {"x": [1, 1.0]}}, "t.axes.x: 1.0 is listed twice"),
        ({"parts": [], "counts": [1, 2, 3, 4]}, "t.counts: lists 4 values; at most 3"),
        ({"parts": [], "counts": []}, "t.counts: must be a non-empty list"),
        ({"parts": [], "counts": "3"}, "t.counts: expected a list or an integer, got '3'"),
        ({"parts": [], "counts": [True]}, "t.counts[0]: expected an integer, got True"),
        ({"parts": [], "names": {"x": "c"}}, "t.names.x: 'c' is not one of a, b"),
        ({"parts": [], "names": ["a"]}, "t.names: expected a table, got ['a']"),
        ({"parts": [3]}, "t.parts[0]: expected a string or a table, got 3"),
        ({"parts": [{"tag": "x"}]}, "missing key 't.parts[0].file' (a file)"),
        ({"parts": [{"file": "f", "tag": "X"}]}, "t.parts[0].tag: 'X': lower-case letters"),
        ({"parts": [{"file": "f", "size": 1}]}, "unknown key 't.parts[0].size' (known: file, tag)"),
        ({"parts": [], "axes": {"a.b": []}}, 't.axes."a.b": must be a non-empty list'),
        ({"parts": [], "axes": {"a.b": [{"k": 1}, {"k": 1}]}}, "t.axes.\"a.b\": {'k': 1} is listed twice"),
    ]:
        with pytest.raises(ConfigError) as exc:
            build_section(Outer, data, "f.toml", "t")
        assert str(exc.value) == f"f.toml: {message}"
    # `cosim config` words for the same checks
    docs = dict((n, d) for n, _, d in config.field_docs(Outer))
    assert docs["counts"] == "(>= 1; <= 9; non-empty; at most 3 values; no value twice; each >= 0, <= 5)"
    assert docs["parts"] == "(required)" and docs["axes"] == "(each non-empty, no value twice)"


@pytest.mark.sumo
def test_options_of_a_policy_an_override_dropped_hint_how_to_drop_them(tmp_path):
    """Options for a policy not run stay an error, also when --set dropped the policy; the error
    says how to drop the table, and doing so runs."""
    from .conftest import ROOT, run_cli

    scen = tmp_path / "mine.toml"
    scen.write_text(f'[scenario]\nsumocfg = "{ROOT / "sumo_nets" / "grid6" / "grid6.sumocfg"}"\n'
                    '[layers.dvit]\npolicies = ["vidi", "nb-sticky"]\n[layers.dvit.options.nb-sticky]\npatience = 5\n')
    drop = "layers.dvit.policies=[\"vidi\"]"
    bad = run_cli("run", str(scen), "--set", drop, "--end", "5", "--out", str(tmp_path / "a"), "-q")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert ("'nb-sticky' is not among the policies run (vidi): add it to layers.dvit.policies or remove its options "
            "table (an override that drops policies: also --set 'layers.dvit.options={}'") in bad.stderr
    ok = run_cli("run", str(scen), "--set", drop, "--set", "layers.dvit.options={}", "--end", "5", "--out",
                 str(tmp_path / "b"), "-q", "--no-coverage")
    assert ok.returncode == 0, ok.stderr
    assert list(json.loads((tmp_path / "b" / "summary.json").read_text())["layers"]["dvit"]) == ["vidi"]


@pytest.mark.sumo
@pytest.mark.parametrize("scenario, message", [
    ('sumocfg = "nope/missing.sumocfg"', "{file}: scenario.sumocfg: {dir}/nope/missing.sumocfg: no such SUMO configuration"),
    ('sumocfg = "{cfg}"\nsumo_args = ["--no-such-opt"]',
     "{file}: scenario.sumo_args: SUMO failed to start: Error: On processing option '--no-such-opt'"),
    # SUMO's error names a value, not the option: the sumocfg and the extra arguments it ran with
    ('sumocfg = "{cfg}"\nsumo_args = ["--step-length", "abc"]',
     '{file}: scenario.sumocfg {cfg} (with scenario.sumo_args ["--step-length", "abc"]): SUMO failed to start: '),
    ('sumocfg = "{cfg}"\nsumo_args = ["--time-to-teleport", "60"]\n[rsu]\nradius_m = 300',
     None),  # an option SUMO takes: the run starts (no blame)
])
def test_a_run_that_cannot_start_names_the_scenario_file_and_key(tmp_path, scenario, message):
    from .conftest import run_cli

    f = tmp_path / "mine.toml"
    f.write_text("[scenario]\n" + scenario.replace("{cfg}", str(GRID6_CFG)) + "\n")
    p = run_cli("run", str(f), "--end", "5", "--out", str(tmp_path / "o"), "-q", "--no-coverage", "--no-layers")
    if message is None:
        assert p.returncode == 0, p.stderr
        return
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0].startswith("cosim: error: " + message.format(file=f, dir=tmp_path, cfg=GRID6_CFG)), lines[0]
    assert not (tmp_path / "o").exists()


def test_an_option_counts_as_named_by_sumos_error_only_where_it_stands_alone():
    """SUMO's error names a route file under '.../net-bad/...': the "-b" of sumo_args = ["-b", "0"]
    is inside that path, not named by the error — the sumocfg is blamed, with the extra arguments;
    an option SUMO's error quotes is blamed on the key that holds it."""
    from cosim.sources.sumo import SumoSource

    src = SumoSource(["sumo"], blame=[("s.toml: scenario.sumo_args", ["-b", "0"]), ("--sumo-args", []),
                                      ("s.toml: scenario.sumocfg /x/a.sumocfg", [])])
    why = "attribute value expected In file '/tmp/net-bad/grid6.rou.xml'"
    assert str(src._failed(why)) == ('s.toml: scenario.sumocfg /x/a.sumocfg (with scenario.sumo_args ["-b", "0"]): '
                                     f"SUMO failed to start: {why}")
    why = "Error: On processing option '-b':"
    assert str(src._failed(why)).startswith("s.toml: scenario.sumo_args: SUMO failed to start: ")
