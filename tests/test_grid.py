import numpy as np

from cosim.world.grid import RoadGrid


def test_cells_by_hand():
    # edges sorted by id: "a" (60 m -> 3 cells: 0,1,2), "b" (25 m -> 1 cell: 3), "c" (50.0 m -> 2 cells: 4,5)
    g = RoadGrid.from_edge_lengths({"c": 50.0, "a": 60.0, "b": 25.0}, cell_m=25.0)
    assert g.offset == {"a": 0, "b": 3, "c": 4}
    assert g.n_cells == {"a": 3, "b": 1, "c": 2}
    assert g.total == 6
    edges = np.array(["a", "a", "a", "a", "b", "c", "c", "zz"], dtype=object)
    pos = np.array([0.0, 24.99, 25.0, 60.0, 25.0, 49.9, 50.0, 3.0])
    # 60.0 on a 60 m edge stays in its last cell; 50.0 on a 50 m edge likewise; unknown edge -> -1
    np.testing.assert_array_equal(g.cells(edges, pos), [0, 0, 1, 2, 3, 5, 5, -1])


def test_negative_lane_pos_clamps_to_first_cell_and_empty_input():
    g = RoadGrid.from_edge_lengths({"e": 100.0}, cell_m=25.0)
    assert g.cells(np.array(["e"], dtype=object), np.array([-0.5]))[0] == 0
    assert g.cells(np.array([], dtype=object), np.array([])).shape == (0,)
