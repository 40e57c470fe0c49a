"""Robustness (issue 17): every bad input is one line naming the flag/key with exit code 2 and
leaves no results folder; traces are checked as they stream; results folders never collide."""

from __future__ import annotations

import gzip
import json
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cosim import cli
from cosim import config as cfgmod
from cosim.errors import CosimError
from cosim.engine.folder import results_dir
from cosim.sources.replay import TRACE_COLUMNS, ReplaySource
from cosim.world import read_net

from .conftest import GRID6_CFG, GRID6_NET, GRID6_TOML

SITE = "[[rsu.sites]]\nid = \"{id}\"\nx = {x}\ny = {y}\n"


def scenario(tmp_path, extra: str = "", name: str = "s.toml") -> str:
    p = tmp_path / name
    p.write_text(f'[scenario]\nsumocfg = "{GRID6_CFG}"\nend_s = 20\n' + extra)
    return str(p)


def trace(tmp_path, rows: dict, name: str = "t.parquet") -> str:
    """A parquet trace from column lists (missing columns get plausible grid6 values)."""
    n = len(rows["ids"])
    base = {"time_s": [1.0] * n, "x": [100.0] * n, "y": [100.0] * n, "speed": [1.0] * n, "angle": [0.0] * n,
            "accel": [0.0] * n, "edge": ["A0A1"] * n, "lane": ["A0A1_0"] * n, "lane_pos": [5.0] * n, "length": [5.0] * n}
    table = pa.table({c: ({**base, **rows})[c] for c in TRACE_COLUMNS})
    if name.endswith(".csv"):
        table.to_pandas().to_csv(tmp_path / name, index=False)
    else:
        pq.write_table(table, tmp_path / name)
    return str(tmp_path / name)


def sweep_dir(tmp_path, summary: str = "scenario,rsu.radius_m,layer,policy,n\ns,1,core,,1\ns,2,core,,1\n") -> str:
    d = tmp_path / "sw"
    d.mkdir()
    (d / "sweep.toml").write_text('[sweep]\nscenarios = ["x.toml"]\n[grid]\n"rsu.radius_m" = [1, 2]\n')
    (d / "summary.csv").write_text(summary)
    return str(d)


# case: (argv builder, the word(s) the one-line message must contain)
CASES = {
    "end_negative_flag": (lambda t: ["run", str(GRID6_TOML), "--end", "-3"], "--end -3: scenario.end_s: -3"),
    "end_negative_key": (lambda t: ["run", _write(t / "e.toml", f'[scenario]\nsumocfg = "{GRID6_CFG}"\nend_s = -5\n')],
                         "e.toml: scenario.end_s: -5"),
    "step_length_zero": (lambda t: ["run", str(GRID6_TOML), "--step-length", "0"], "--step-length 0: scenario.step_length_s"),
    "step_length_negative": (lambda t: ["run", str(GRID6_TOML), "--step-length", "-3"], "--step-length -3"),
    "slot_zero": (lambda t: ["run", str(GRID6_TOML), "--slot", "0"], "--slot 0: scenario.slot_s"),
    "end_before_begin": (lambda t: ["run", str(GRID6_TOML), "--begin", "100", "--end", "50"],
                         "scenario.end_s = 50 is not after scenario.begin_s = 100"),
    "end_before_sumocfg_end": (lambda t: ["run", str(GRID6_CFG), "--begin", "4000"],
                               "the sumocfg's end = 3600 s is not after the begin time 4000 s"),
    "timeout_negative": (lambda t: ["run", str(GRID6_TOML), "--sumo-timeout", "-1"], "--sumo-timeout -1"),
    "duplicate_rsu_ids": (lambda t: ["run", scenario(t, '[rsu]\nplacement = "sites"\n' + SITE.format(id="a", x=1, y=1)
                                                     + SITE.format(id="a", x=500, y=500))],
                          "rsu.sites[1].id: 'a' is also the id of rsu.sites[0]"),
    "default_id_collides": (lambda t: ["run", scenario(t, '[rsu]\nplacement = "sites"\n' + SITE.format(id="rsu1", x=1, y=1)
                                                       + "[[rsu.sites]]\nx = 5\ny = 5\n")], "rsu.sites[1].id: 'rsu1'"),
    "sites_off_network": (lambda t: ["run", scenario(t, '[rsu]\nplacement = "sites"\nradius_m = 100\n'
                                                     + SITE.format(id="a", x=50000, y=8.5))],
                          "rsu.sites: no RSU's coverage reaches the network"),
    "site_x_text": (lambda t: ["run", scenario(t, '[rsu]\nplacement = "sites"\n' + SITE.format(id="a", x='"abc"', y=1))],
                    "rsu.sites[0].x: expected a finite number"),
    "site_y_inf": (lambda t: ["run", scenario(t, '[rsu]\nplacement = "sites"\n' + SITE.format(id="a", x=1, y="inf"))],
                   "rsu.sites[0].y"),
    "compute_inf": (lambda t: ["run", scenario(t, "[rsu]\ncompute_flops = inf\n")], "rsu.compute_flops"),
    "bandwidth_nan": (lambda t: ["run", str(GRID6_TOML), "--set", "rsu.bandwidth_hz=[1e6, nan]"],
                      "--set rsu.bandwidth_hz=[1e6, nan]: rsu.bandwidth_hz"),
    "spacing_tiny": (lambda t: ["run", str(GRID6_TOML), "--set", "rsu.spacing_m=0.001"], "rsu.spacing_m = 0.001 puts"),
    "spacing_negative": (lambda t: ["run", str(GRID6_TOML), "--set", "rsu.spacing_m=-5"], "rsu.spacing_m: -5"),
    "set_placement_sites": (lambda t: ["run", str(GRID6_TOML), "--set", "rsu.placement=sites"],
                            '--set rsu.placement=sites: rsu.placement = "sites" needs at least one'),
    "set_bad_value": (lambda t: ["run", str(GRID6_TOML), "--set", "rsu.radius_m=-1"], "--set rsu.radius_m=-1: rsu.radius_m"),
    "set_bad_layer_value": (lambda t: ["run", str(GRID6_TOML), "--set", "layers.cache.gpu_memory_gb=-1"],
                            "--set layers.cache.gpu_memory_gb=-1: layers.cache.gpu_memory_gb"),
    "set_unknown_policy": (lambda t: ["run", str(GRID6_TOML), "--set", "layers.dvit.policies=['nope']"],
                           "unknown policy 'nope'"),
    "port_out_of_range": (lambda t: ["run", str(GRID6_TOML), "--backend", "traci", "--port", "99999"], "--port 99999"),
    "sumo_args_unclosed": (lambda t: ["run", str(GRID6_TOML), "--sumo-args", "--log 'x"], "--sumo-args"),
    "record_under_file": (lambda t: ["run", str(GRID6_TOML), "--record", str(t / "afile" / "t.parquet")],
                          "afile is a file, not a folder"),
    "record_suffix": (lambda t: ["run", str(GRID6_TOML), "--record", str(t / "t.txt")], "--record"),
    "record_exists": (lambda t: ["run", str(GRID6_TOML), "--record", _write(t / "old.parquet", "x")],
                      "exists already; add --overwrite"),
    "out_is_file": (lambda t: ["run", str(GRID6_TOML), "--out", str(t / "afile")], "is a file, not a folder"),
    "out_under_file": (lambda t: ["run", str(GRID6_TOML), "--out", str(t / "afile" / "sub")], "--out"),
    "out_not_empty": (lambda t: ["run", str(GRID6_TOML), "--out", str(t / "full")], "add --overwrite"),
    "output_dir_is_file": (lambda t: ["run", scenario(t, f'[output]\ndir = "{t / "afile"}"\n')],
                           "output.dir"),
    "config_unknown_policy": (lambda t: ["config", scenario(t, "[layers.cache]\npolicies = [\"lc\", \"zz\"]\n")],
                              "unknown policy 'zz'"),
    "config_unknown_layer": (lambda t: ["config", scenario(t, "[layers.teleport]\n")], "unknown layer '[layers.teleport]'"),
    "replay_net_as_trace": (lambda t: ["replay", str(GRID6_NET), "--scenario", str(GRID6_TOML)],
                            "not an FCD trace (root element <net>"),
    "replay_nan": (lambda t: ["replay", trace(t, {"ids": ["a", "b"], "y": [1.0, float("nan")]}), "--scenario",
                              str(GRID6_TOML)], "t.parquet: row 2 (vehicle 'b'): y is nan"),
    "replay_inf_csv": (lambda t: ["replay", trace(t, {"ids": ["a", "b", "c"], "speed": [1.0, 2.0, float("inf")]},
                                                  name="t.csv"), "--scenario", str(GRID6_TOML)],
                       "t.csv: line 4 (vehicle 'c'): speed is inf"),
    "replay_repeated_id": (lambda t: ["replay", trace(t, {"ids": ["a", "b", "a"]}), "--scenario", str(GRID6_TOML)],
                           "row 3 (vehicle 'a'): vehicle 'a' occurs twice at time 1 s"),
    "replay_other_network": (lambda t: ["replay", trace(t, {"ids": ["a", "b", "c"], "edge": ["x", "A0A1", "y"],
                                                            "lane": ["x_0", "A0A1_0", "y_0"]}),
                                        "--scenario", str(GRID6_TOML)],
                             "does not match the scenario's network grid6.net.xml: 67 %"),
    "replay_empty": (lambda t: ["replay", trace(t, {"ids": []}), "--scenario", str(GRID6_TOML)],
                     "the trace holds no vehicle record"),
    "sweep_grid_scalar": (lambda t: ["sweep", str(_write(t / "g.toml", f'grid = 5\n[sweep]\nscenarios = ["{GRID6_TOML}"]\n'))],
                          "grid: expected a table, got 5"),
    "sweep_folder": (lambda t: ["sweep", str(t)], "is a folder, not a sweep file"),
    "sweep_binary": (lambda t: ["sweep", str(_write(t / "b.toml", bytes(range(256))))], "not a UTF-8 text file"),
    "sweep_duplicate_seed": (lambda t: ["sweep", str(_write(t / "d.toml", f'[sweep]\nscenarios = ["{GRID6_TOML}"]\n'
                                                                          "seeds = [1, 1]\n"))], "sweep.seeds: 1 is listed twice"),
    "sweep_escape": (lambda t: ["sweep", str(_write(t / "n.toml", '[sweep]\nname = "../../../escape"\n'
                                                                  f'scenarios = ["{GRID6_TOML}"]\n'))], "sweep.name"),
    "plot_out_is_file": (lambda t: ["plot", sweep_dir(t), "--out", str(t / "afile")], "--out"),
    "plot_garbled_summary": (lambda t: ["plot", sweep_dir(t, "\x00\x01garbage\n1,2,3\n4\n"), "--out", str(t / "p")],
                             "summary.csv"),
    "netgen_root_is_file": (lambda t: ["netgen", "grid", "--name", "x", "--root", str(t / "afile")],
                            "--root"),
}
def _write(path, data):
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return str(path)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_naming_the_flag_or_key(tmp_path, capsys, case):
    build, expect = CASES[case]
    (tmp_path / "afile").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    argv = build(tmp_path)
    if argv[0] in ("run", "replay") and "--out" not in argv and case != "output_dir_is_file":
        argv += ["--out", str(tmp_path / "out")]
    before = sorted(p.name for p in tmp_path.iterdir())
    code = cli.main([*argv, *(["-q"] if argv[0] in ("run", "replay", "sweep") else [])])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("cosim: error: ") and expect in lines[0], err
    assert not (tmp_path / "out").exists()  # no results folder for a run that never started
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"


# -- traces checked by every reader --------------------------------------------------------------
def test_trace_checks_run_on_every_reader(tmp_path):
    """The same bad record is found in a parquet trace, its CSV twin and an FCD trace."""
    rows = {"ids": ["a", "b"], "time_s": [1.0, 1.0], "x": [1.0, float("nan")]}
    fcd = tmp_path / "t.xml.gz"
    with gzip.open(fcd, "wt") as f:
        f.write('<fcd-export>\n<timestep time="0.00">\n<vehicle id="a" x="1" y="2" angle="0" speed="1" pos="1" '
                'lane="A0A1_0"/>\n<vehicle id="b" x="nan" y="2" angle="0" speed="1" pos="1" lane="A0A1_0"/>\n'
                "</timestep>\n</fcd-export>\n")
    for path, where in ((trace(tmp_path, rows), "row 2 (vehicle 'b'): x is nan"),
                        (trace(tmp_path, rows, "t.csv"), "line 3: a row with a missing value"),  # CSV: NaN is empty
                        (str(fcd), "timestep 1, vehicle 'b': x is nan")):
        src = ReplaySource(path, fcd_step_s=1.0)
        with pytest.raises(CosimError) as exc:
            src.start()
            src.step_to(1.0)
        assert str(exc.value).startswith(path) and where in str(exc.value)


def test_a_matching_trace_passes_the_network_check(tmp_path):
    net = read_net(GRID6_NET)
    edges = sorted(e for e in net.edge_length if not e.startswith(":"))[:40]
    n = len(edges)
    rows = {"ids": [f"v{i}" for i in range(n)], "edge": edges, "lane": [f"{e}_0" for e in edges],
            "lane_pos": [min(1.0, net.edge_length[e]) for e in edges], "x": [net.bounds[0]] * n, "y": [net.bounds[3]] * n}
    src = ReplaySource(trace(tmp_path, rows), net=net)
    src.start()
    assert len(src.step_to(1.0)) == n
    # the same records 200 m beyond the network's bounds are off it
    far = ReplaySource(trace(tmp_path, {**rows, "x": [net.bounds[2] + 200.0] * n}, "far.parquet"), net=net)
    with pytest.raises(CosimError, match=r"far.parquet: the trace does not match .*: 100 % .*first: row 1 \(vehicle 'v0'\)"):
        far.start()
        far.step_to(1.0)


# -- results folders -------------------------------------------------------------------------
def test_default_results_folders_never_collide(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = cfgmod.load(GRID6_TOML)
    a, made_a = results_dir(cfg, None)
    b, made_b = results_dir(cfg, None)  # same process, same second
    assert made_a and made_b and a != b and a.is_dir() and b.is_dir()
    assert a.name.startswith("grid6-s42-") and a.name.split("-")[-1].isdigit()
    if b.name.split("-")[:4] == a.name.split("-")[:4]:  # the same second (a loaded machine may cross one)
        assert b.name == f"{a.name}-2"


def test_overwrite_removes_a_previous_run_and_nothing_else(tmp_path):  # a folder from before the manifest
    out = tmp_path / "o"
    (out / "coverage.parquet").mkdir(parents=True)
    (out / "coverage.parquet" / "part-000000.parquet").write_text("old")
    for name in ("summary.json", "config.toml", "sumo.log", ".summary.json.tmp", "keep.txt"):
        (out / name).write_text("old")
    cfg = cfgmod.load(GRID6_TOML)
    with pytest.raises(CosimError, match="the folder is not empty"):
        results_dir(cfg, out)
    path, created = results_dir(cfg, out, overwrite=True)
    assert path == out and not created and sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_sumo_timeout_is_a_scenario_key_with_a_flag():
    cfg = cfgmod.load(GRID6_TOML)
    assert cfg.scenario.sumo_timeout_s == 60.0
    assert cfgmod.apply_overrides(cfg, {"scenario.sumo_timeout_s": 0}).scenario.sumo_timeout_s == 0.0
    assert "sumo_timeout_s = 60.0" in cfgmod.describe()
    assert cfgmod.to_dict(cfg)["scenario"]["sumo_timeout_s"] == 60.0  # saved in config.toml


def test_a_site_off_the_network_is_a_warning_printed_once_and_kept_in_the_summary(tmp_path, capsys):
    net = read_net(GRID6_NET)
    xmax = net.bounds[2]
    toml = scenario(tmp_path, '[rsu]\nplacement = "sites"\nradius_m = 100\n' + SITE.format(id="in", x=500, y=500)
                    + SITE.format(id="far", x=xmax + 150, y=500))  # 150 m beyond the bounds: no coverage
    edges = sorted(e for e in net.edge_length if not e.startswith(":"))[:5]
    rows = {"ids": [f"v{i}" for i in range(5)], "edge": edges, "lane": [f"{e}_0" for e in edges]}
    # --end 1: where the trace ends (a later end would add its own warning line)
    code = cli.main(["replay", trace(tmp_path, rows), "--scenario", toml, "--out", str(tmp_path / "o"), "-q",
                     "--end", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    warned = [ln for ln in err.splitlines() if ln.startswith("cosim: warning: ")]
    assert len(warned) == 1 and "rsu.sites[1] ('far'" in warned[0] and "will cover no vehicle" in warned[0]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["warnings"] == [warned[0].removeprefix("cosim: warning: ")] and summary["slots"] >= 1
