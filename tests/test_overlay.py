"""The sumo-gui overlay: the layers' roles() contract, and the overlay on real SUMO — libsumo in a
subprocess (polygons, colours, batching; no display needed) and sumo-gui under Xvfb (the same plus
a screenshot whose pixels show the discs)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cosim.layers.base import ROLE_FAILED, ROLE_HELPER, ROLE_IV, ROLE_USER, add_role
from cosim.layers.dvit.layer import RSU_NAME
from cosim.layers.dvit.layer import Task as DTask
from cosim.layers.moe.layer import Task as MTask
from cosim.palette import ROLE_COLORS, RSU_COLORS, rsu_color

from .conftest import GRID6_CFG, ROOT


def test_the_strongest_role_wins():
    roles: dict[str, str] = {}
    add_role(roles, "a", ROLE_IV)
    add_role(roles, "a", ROLE_USER)  # stronger: replaces
    add_role(roles, "a", ROLE_HELPER)  # weaker: kept out
    add_role(roles, "b", ROLE_USER)
    add_role(roles, "b", ROLE_FAILED)
    assert roles == {"a": ROLE_USER, "b": ROLE_FAILED}


def test_role_colours_are_no_rsu_colour():
    assert not set(ROLE_COLORS.values()) & set(RSU_COLORS)
    assert len(set(ROLE_COLORS.values())) == len(ROLE_COLORS)


def _bare(cls, active):
    from cosim.layers.kernel import Kernel

    obj = cls.__new__(cls)  # the roles() contract needs only the running tasks
    obj.kernel = Kernel(sorted({t.policy for t in active}))
    obj.kernel.active = list(active)
    return obj


def test_dvit_roles_are_users_and_the_holder_of_each_running_task():
    from cosim.layers.dvit.layer import DViTLayer

    t1 = DTask(0, "vidi", 0.0, user="u1", rsu=0, holder="h1")  # a helper holds the latent
    t2 = DTask(1, "vidi", 0.0, user="u2", rsu=0, holder=RSU_NAME)  # on the RSU: only the user
    t3 = DTask(2, "vidi", 0.0, user="u3", rsu=0, holder="u3")  # the user's local steps
    t4 = DTask(3, "optimal", 0.0, user="u1", rsu=0, holder="h4")  # another policy
    t5 = DTask(4, "vidi", 0.0, user="h1", rsu=0, holder="u2")  # h1 is also a user; u2 also a helper
    layer = _bare(DViTLayer, active=[t1, t2, t3, t4, t5])
    assert layer.roles("vidi") == {"u1": ROLE_USER, "h1": ROLE_USER, "u2": ROLE_USER, "u3": ROLE_USER}
    assert layer.roles("optimal") == {"u1": ROLE_USER, "h4": ROLE_HELPER}
    assert layer.roles() == {"u1": ROLE_USER, "h1": ROLE_USER, "u2": ROLE_USER, "u3": ROLE_USER, "h4": ROLE_HELPER}
    assert _bare(DViTLayer, active=[t1]).roles() == {"u1": ROLE_USER, "h1": ROLE_HELPER}


def test_moe_roles_are_task_vehicles_and_the_ivs_of_the_layers_still_to_run():
    from cosim.layers.moe.layer import MoELayer

    host = np.array([[0, 1], [2, -1], [2, 2]])  # layer 0 on IVs a, b; layers 1-2 on c
    t = MTask(0, "gecpa", 0.0, tv="tv", ivs=["a", "b", "c"], layer_iv=host, tokens=host * 0, layer=1)
    assert _bare(MoELayer, active=[t]).roles() == {"tv": ROLE_USER, "c": ROLE_IV}
    t.layer = 0
    assert _bare(MoELayer, active=[t]).roles("gecpa") == {"tv": ROLE_USER, "a": ROLE_IV, "b": ROLE_IV, "c": ROLE_IV}
    assert _bare(MoELayer, active=[t]).roles("uniform") == {}


# -- real SUMO ------------------------------------------------------------------------------
SCENARIO = """
[scenario]
sumocfg = "{cfg}"
seed = 42
end_s = 200
step_length_s = 0.5
[layers.dvit]
policies = ["mddi", "vidi"]
request_rate_per_s = 2.0
[layers.moe]
policies = ["gecpa", "nearest"]
request_rate_per_s = 0.5
"""

#: drives SUMO (libsumo, or sumo-gui over TraCI), attaches with overlay=True and checks, at
#: every slot, every vehicle's colour against the layers' roles and the world's association
OVERLAY_SCRIPT = r"""
import json, sys
import libsumo, traci
import cosim
from cosim.palette import ROLE_COLORS, rsu_color
from cosim.sumo_home import sumo_binary

backend, cfg, toml, out, shot = sys.argv[1:6]
args = ["-c", cfg, "--seed", "42", "--no-step-log", "true", "--step-length", "0.5"]
if backend == "gui":
    from cosim.overlay import gui_settings
    from pathlib import Path
    traci.start([sumo_binary("sumo-gui"), *args, "--start", "--quit-on-end", "--window-size", "900,700",
                 "--gui-settings-file", str(gui_settings(Path(out + "-gui.xml")))])
    mod = traci
else:
    libsumo.start([sumo_binary("sumo"), *args])
    mod = libsumo
listener = cosim.attach(mod, scenario=toml, out_dir=out, overlay=True)
ov, ses = listener.session.overlay, listener.session
shown = {l.name: l.cfg.policies[0] for l in ses.layers}
res = {"polygons": sorted(mod.polygon.getIDList()), "shown": shown, "checked": 0, "mismatch": [],
       "roles_seen": {}, "failed_seen": [], "expected_changes": 0}
last = {}
for step in range(2 * 120):
    mod.simulationStep()
    if step % 2 == 0:
        continue  # a slot ends every second step (1 s slots, 0.5 s steps)
    w = ses.world
    roles = {}
    for layer in ses.layers:
        for v, r in layer.roles(shown[layer.name]).items():
            roles.setdefault(v, []).append(r)
    held = {v for v, until in ov._failed_until.items() if until >= w.time_s}
    now = {}
    for i, v in enumerate(w.snap.ids):
        got = tuple(mod.vehicle.getColor(v))[:3]
        if v in held:
            want = ROLE_COLORS["failed"]
            res["failed_seen"].append(v)
        elif v in roles:
            order = ["user", "helper", "iv"]
            want = ROLE_COLORS[min(roles[v], key=order.index)]
            for r in roles[v]:
                res["roles_seen"][r] = res["roles_seen"].get(r, 0) + 1
        else:
            want = rsu_color(int(w.serving[i]))
        now[v] = want
        res["expected_changes"] += last.get(v) != want
        res["checked"] += 1
        if got != tuple(want):
            res["mismatch"].append([w.time_s, v, got, want])
    last = now
    if backend == "gui" and step == 119:
        mod.gui.screenshot("View #0", shot)
res["color_calls"] = ov.color_calls
res["legend"] = [p for p in mod.poi.getIDList() if p.startswith("cosim legend")]
mod.close()
listener.close()
json.dump(res, open(out + ".json", "w"))
"""


def _overlay_run(tmp_path, backend: str, prefix: list[str]) -> tuple[dict, object]:
    toml = tmp_path / "s.toml"
    toml.write_text(SCENARIO.format(cfg=GRID6_CFG))
    script = tmp_path / "overlay.py"
    script.write_text(OVERLAY_SCRIPT)
    out, shot = tmp_path / "out", tmp_path / "shot.png"
    p = subprocess.run([*prefix, sys.executable, str(script), backend, str(GRID6_CFG), str(toml), str(out), str(shot)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((tmp_path / "out.json").read_text()), out


def _check(res: dict, out) -> None:
    assert res["polygons"] == sorted([f"cosim.rsu.rsu{i}" for i in range(4)] + [f"cosim.rsu-edge.rsu{i}" for i in range(4)])
    assert len(res["legend"]) == 6
    assert res["checked"] > 10_000  # ~120 slots x ~100+ vehicles
    assert res["mismatch"] == []
    # every role appeared; helper and IV ones too
    assert {"user", "helper", "iv"} <= set(res["roles_seen"])
    # batched: one setColor per change of a vehicle's colour (new vehicles included), far fewer
    # than one per vehicle and slot
    assert res["color_calls"] == res["expected_changes"]
    assert res["color_calls"] < res["checked"] / 3
    # a vehicle shown red had a failed task of a shown policy
    if res["failed_seen"]:
        failed = set()
        for table, who in (("dvit_tasks.parquet", "user"), ("moe_tasks.parquet", "tv")):
            df = pd.read_parquet(out / table)
            bad = df[(df["outcome"] == "failed") & df["policy"].isin(res["shown"].values())]
            failed |= set(bad[who].astype(str))
        assert set(res["failed_seen"]) <= failed


@pytest.mark.sumo
def test_overlay_colours_every_vehicle_by_role_and_rsu_libsumo(tmp_path):
    res, out = _overlay_run(tmp_path, "libsumo", [])
    _check(res, out)


@pytest.mark.sumo
def test_overlay_in_sumo_gui_under_xvfb(tmp_path):
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run not installed (Debian: apt-get install xvfb); .ci/run installs it")
    res, out = _overlay_run(tmp_path, "gui", ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24"])
    _check(res, out)
    from PIL import Image

    img = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB")).astype(int)
    for i in range(4):  # each RSU's opaque outline is in the picture
        near = (np.abs(img - np.array(rsu_color(i))).sum(axis=-1) <= 12).sum()
        assert near > 300, f"rsu{i}: {near} pixels of its colour"


@pytest.mark.sumo
def test_cosim_run_gui_under_xvfb(tmp_path):
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run not installed (Debian: apt-get install xvfb); .ci/run installs it")
    toml = tmp_path / "s.toml"
    toml.write_text(SCENARIO.format(cfg=GRID6_CFG).replace("end_s = 200", "end_s = 20"))
    p = subprocess.run(["xvfb-run", "-a", sys.executable, "-m", "cosim", "run", str(toml), "--gui", "-q", "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["slots"] == 20
    assert (tmp_path / "out" / "gui-settings.xml").is_file()
