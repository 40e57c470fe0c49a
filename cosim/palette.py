"""The colours every view of a run uses (sumo-gui overlay, ``cosim view``, ``cosim report``), so a
vehicle, RSU or role looks the same in all three.

RSU colours are muted and cycle; role colours are saturated and none of them is an RSU colour."""

from __future__ import annotations

from cosim.layers.base import ROLE_FAILED, ROLE_HELPER, ROLE_IV, ROLE_USER

RGB = tuple[int, int, int]

#: RSU i gets RSU_COLORS[i % len(RSU_COLORS)]
RSU_COLORS: tuple[RGB, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75),
    (23, 190, 207), (0, 0, 128), (0, 128, 128), (128, 0, 0), (107, 110, 207),
)
UNCOVERED: RGB = (150, 150, 150)
ROLE_COLORS: dict[str, RGB] = {
    ROLE_FAILED: (255, 0, 0),
    ROLE_USER: (255, 0, 255),
    ROLE_HELPER: (255, 215, 0),
    ROLE_IV: (0, 255, 0),
}
#: legend text per role
ROLE_LABELS: dict[str, str] = {ROLE_FAILED: "task failed", ROLE_USER: "user (task running)",
                               ROLE_HELPER: "helper (DViT step)", ROLE_IV: "IV (MoE experts)"}


def rsu_color(i: int) -> RGB:
    """The colour of RSU index ``i`` (-1: not covered)."""
    return UNCOVERED if i < 0 else RSU_COLORS[i % len(RSU_COLORS)]


def hex_color(rgb: RGB) -> str:
    return "#%02x%02x%02x" % tuple(rgb)
