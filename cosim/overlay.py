"""The plugin's state drawn live in sumo-gui (``cosim run --gui``, ``cosim.attach(..., overlay=True)``).

* every RSU's coverage disc as two TraCI polygons: a translucent filled disc under the roads and
  an opaque outline above them, in the RSU's colour (:mod:`cosim.palette`);
* every vehicle coloured each slot by what it does: a role from a layer's ``roles()`` (the
  strongest of all layers; each layer shows its *first configured policy*, so reorder
  ``layers.NAME.policies`` to watch another), else its serving RSU's colour, else grey;
* a task that fails colours its vehicle red for ``failed_hold_s`` (ours: 3 s, so a person sees
  it). Failures are read from the rows the layers write to their task tables (``success`` false,
  ``outcome`` "failed"; the vehicle in ``user`` or ``tv``), since a layer's running-task
  list no longer holds a task once it failed;
* a legend: one POI per colour left of the network, its id saying what the colour means
  (``cosim run --gui`` turns POI names on through a settings file; elsewhere hover or switch on
  "show POI id").

Batched: ``vehicle.setColor`` is called only for vehicles whose colour changed since the last slot
(or that are new), so a slot costs one call per changed vehicle. Nothing here runs without the
overlay: the session holds ``None`` then and checks it once per slot.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cosim.layers.base import ROLE_FAILED, ROLES, add_role
from cosim.palette import ROLE_COLORS, ROLE_LABELS, UNCOVERED, rsu_color

#: polygon / POI id prefixes and types
DISC_PREFIX = "cosim.rsu."
OUTLINE_PREFIX = "cosim.rsu-edge."
LEGEND_PREFIX = "cosim legend "
DISC_ALPHA = 50  # fill opacity of the discs (0-255)
OUTLINE_WIDTH_M = 4.0


def task_vehicle_columns() -> dict[str, str]:
    """Task table name -> the column naming a task's own vehicle, as each registered layer
    declares it (:attr:`cosim.layers.base.Layer.task_view`)."""
    from cosim import registry

    out = {}
    for name in registry.layer_names():
        cls = registry.layer_class(name)
        if cls.task_table is not None and cls.task_view is not None:
            out[cls.task_table] = cls.task_view.vehicle
    return out


def disc_shape(x: float, y: float, r: float, points: int = 72) -> list[tuple[float, float]]:
    a = np.linspace(0.0, 2 * math.pi, points, endpoint=False)
    return [(float(x + r * math.cos(t)), float(y + r * math.sin(t))) for t in a]


def gui_settings(path: Path) -> Path:
    """A sumo-gui settings file that shows POI names (the legend) and runs without delay."""
    path.write_text('<viewsettings>\n    <scheme name="cosim">\n'
                    '        <vehicles vehicle_exaggeration="4" vehicle_minSize="2"/>\n'
                    '        <pois poiName_show="1" poiName_size="60" poiName_color="0,0,0"/>\n'
                    '    </scheme>\n    <delay value="0"/>\n</viewsettings>\n')
    return path


class _TaskTap:
    """A table writer that also tells the overlay about failed tasks."""

    def __init__(self, writer: Any, on_failed: Callable[[list[str]], None], shown: Callable[[], set],
                 vehicle: str | None = None):
        self.writer, self.on_failed, self.shown, self.vehicle = writer, on_failed, shown, vehicle

    def append(self, columns: dict[str, Any]) -> None:
        self.writer.append(columns)
        who = columns.get(self.vehicle) if self.vehicle is not None else None
        if who is None or "outcome" not in columns:
            return
        policy = columns.get("policy", [None] * len(who))
        shown = self.shown()
        failed = [str(v) for v, p, out in zip(who, policy, columns["outcome"])
                  if out == "failed" and (p is None or p in shown)]
        if failed:
            self.on_failed(failed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.writer, name)


class Overlay:
    """Draws the world and the layers' roles into a (sumo-gui) TraCI connection."""

    def __init__(self, failed_hold_s: float = 3.0):
        self.failed_hold_s = failed_hold_s
        self.conn: Any = None
        self.now = 0.0
        self._failed_until: dict[str, float] = {}
        self._last: dict[str, int] = {}  # vehicle -> colour code it was given
        self._policies: list[tuple[Any, str | None]] = []
        #: the policies whose roles and failures are drawn
        self.shown: set = set()
        #: setColor calls made (all slots): what the batching saves is visible here
        self.color_calls = 0

    # -- wiring ------------------------------------------------------------------------------
    def tap(self, table: Callable[[str], Any]) -> Callable[[str], Any]:
        """Wrap a session's table factory so failed task rows reach the overlay (the rows of a
        layer's task table, its vehicle column as the layer's task view names it)."""
        columns: dict[str, str] = {}

        def tapped(name: str) -> _TaskTap:
            if not columns:  # asked once the layers are built (their plugins imported)
                columns.update(task_vehicle_columns() or {"": ""})
            return _TaskTap(table(name), self._saw_failed, lambda: self.shown, columns.get(name))

        return tapped

    def _saw_failed(self, vehicles: list[str]) -> None:
        for v in vehicles:
            self._failed_until[v] = self.now + self.failed_hold_s

    def connect(self, conn: Any, world, layers: list) -> None:  # noqa: ANN001 - World
        """Draw the RSU discs and the legend; remember which policy each layer shows."""
        self.conn = conn
        self._policies = [(layer, next(iter(layer.policies), None))
                          for layer in layers]
        self.shown = {p for _, p in self._policies}
        r = world.rsus
        for i, rid in enumerate(r.ids):
            col = rsu_color(i)
            shape = disc_shape(r.x[i], r.y[i], r.radius_m[i])
            conn.polygon.add(f"{DISC_PREFIX}{rid}", shape, (*col, DISC_ALPHA), fill=True,
                             polygonType="cosim-rsu", layer=-1)
            conn.polygon.add(f"{OUTLINE_PREFIX}{rid}", shape, (*col, 255), fill=False,
                             polygonType="cosim-rsu", layer=10, lineWidth=OUTLINE_WIDTH_M)
        xmin, _, _, ymax = world.net.bounds
        items = [(ROLE_LABELS[k], ROLE_COLORS[k]) for k in ROLES] + [
            ("covered (its RSU's colour)", rsu_color(0)), ("not covered", UNCOVERED)]
        step = max(20.0, 0.04 * (world.net.bounds[3] - world.net.bounds[1]))
        for k, (label, col) in enumerate(items):
            conn.poi.add(f"{LEGEND_PREFIX}{k + 1}: {label}", xmin - 8 * step, ymax - k * step, (*col, 255),
                         poiType="cosim-legend", layer=10, width=step / 2, height=step / 2)
        try:  # widen the view to show the legend (sumo-gui only; libsumo has no view)
            for view in conn.gui.getIDList():
                b = world.net.bounds
                conn.gui.setBoundary(view, xmin - 13 * step, b[1] - step, b[2] + step, b[3] + step)
        except Exception:  # noqa: BLE001 - no GUI behind this connection
            pass

    # -- per slot ----------------------------------------------------------------------------
    def roles(self) -> dict[str, str]:
        """Vehicle -> role now: every layer's (its shown policy), failures held for a while."""
        roles: dict[str, str] = {}
        for layer, policy in self._policies:
            for v, role in layer.roles(policy).items():
                add_role(roles, v, role)
        for v, until in list(self._failed_until.items()):
            if until < self.now:
                del self._failed_until[v]
            else:
                add_role(roles, v, ROLE_FAILED)
        return roles

    def update(self, world) -> None:  # noqa: ANN001 - World
        """Recolour the vehicles whose colour changed since the last slot."""
        self.now = world.time_s
        if self.conn is None:
            return
        roles = self.roles()
        # colour code: RSU index >= 0, -1 uncovered, -2 - k the k-th role
        codes = world.serving.tolist()
        ids = world.snap.ids.tolist()
        for v, role in roles.items():
            i = world.index.get(v)
            if i is not None:
                codes[i] = -2 - ROLES.index(role)
        last = self._last
        conn = self.conn
        for v, c in zip(ids, codes):
            if last.get(v) != c:
                col = rsu_color(c) if c >= -1 else ROLE_COLORS[ROLES[-2 - c]]
                try:
                    conn.vehicle.setColor(v, (*col, 255))
                except Exception:  # noqa: BLE001 - the vehicle left SUMO since the snapshot
                    continue
                self.color_calls += 1
        self._last = dict(zip(ids, codes))

