"""The Python API (cosim.run / replay / sweep / load) as a user's script calls it, in a fresh
process (libsumo allows one SUMO per process), against the command line's results."""

import json
import subprocess
import sys

import pytest

from .conftest import GRID6_TOML, ROOT, run_cli

SCRIPT = """
import json, sys
import cosim
out = sys.argv[1]
res = cosim.run("{scen}", seed=7, end_s=30, out=out + "/run", record=out + "/t.parquet",
                overrides={{"layers.dvit.policies": ["vidi", "mddi"], "scenario.warmup_s": 0}})
rep = cosim.replay(out + "/t.parquet", "{scen}", out=out + "/rep", seed=7, overrides={{"layers.dvit.policies": ["vidi", "mddi"], "scenario.warmup_s": 0}})
back = cosim.load(out + "/run")
print(json.dumps({{
    "seed": res.summary["seed"], "slots": res.summary["slots"],
    "tasks": len(res["dvit_tasks"]), "policies": sorted(res["dvit_tasks"]["policy"].astype(str).unique()),
    "vs": res.summary["layers"]["dvit"]["mddi"]["vs_baseline"]["baseline"],
    "rep_slots": rep.summary["slots"], "same_tasks": rep["dvit_tasks"].equals(res["dvit_tasks"]),
    "loaded": back.summary == res.summary,
    "config": type(cosim.load("{scen}")).__name__,
}}))
"""


@pytest.mark.sumo
def test_run_replay_and_load_from_a_script(tmp_path):
    scen = GRID6_TOML.parent / "grid6_dvit.toml"
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(scen=scen), str(tmp_path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["seed"] == 7 and got["slots"] == 30 and got["rep_slots"] == 30
    assert got["tasks"] > 0 and got["policies"] == ["mddi", "vidi"] and got["vs"] == "vidi"
    assert got["same_tasks"] and got["loaded"] and got["config"] == "Config"
    # the command line with the same keys gives the same results
    cli = run_cli("run", str(scen), "--seed", "7", "--end", "30", "--out", str(tmp_path / "cli"), "-q",
                  "--set", 'layers.dvit.policies=["vidi", "mddi"]', "--set", "scenario.warmup_s=0")
    assert cli.returncode == 0, cli.stderr
    same = run_cli("compare", str(tmp_path / "run"), str(tmp_path / "cli"))
    assert same.returncode == 0, same.stdout


def test_bad_input_raises_the_one_line_error(tmp_path):
    import cosim
    from cosim.errors import CosimError

    with pytest.raises(CosimError, match="nope.toml: no such file"):
        cosim.run(tmp_path / "nope.toml")
    with pytest.raises(CosimError, match=r"scenario\.seed"):
        cosim.api.configure(GRID6_TOML, seed=-1)
    with pytest.raises(CosimError, match="not a sweep results folder"):
        cosim.api.load_sweep(tmp_path)


@pytest.mark.sumo
def test_sweep_from_python(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(f'[sweep]\nname = "api"\nscenarios = ["{GRID6_TOML.parent / "grid6_dvit.toml"}"]\nseeds = [1, 2]\n'
                 'end_s = 20\n[set]\n"output.coverage" = false\n"scenario.warmup_s" = 0\n'
                 '"layers.dvit.policies" = ["vidi", "sdi"]\n')
    code = (f"import cosim; sw = cosim.sweep({str(f)!r}, {str(tmp_path / 'out')!r}, jobs=2); "
            "print(sw.completed, len(sw.paired), sw.paired['policy'].tolist(), type(cosim.load(sw.path)).__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2", "1", "['sdi']", "SweepResults"]
