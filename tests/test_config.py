import dataclasses
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
    assert again == cfg


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
    from cosim.layers.cache.layer import CacheConfig
    from cosim.layers.dvit.layer import DViTConfig

    text = config.describe()
    for table, cls in (("layers.cache", CacheConfig), ("layers.dvit", DViTConfig)):
        block = text.split(f"[{table}]")[1].split("\n[")[0]
        for f in dataclasses.fields(cls):
            assert f"\n{f.name} = " in block, (table, f.name)
    assert "gpu_memory_gb = 80.0  # GPU memory per RSU [GB]" in text
