"""A class's cells merged into polygons (graphconv.regions): every cell inside exactly
the polygon of its patch and no other, each patch 4-connected, rings simple and turning
as GeoJSON wants, on masks hypothesis draws."""
from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from graphconv.regions import polygons_of


def inside(rings: list[np.ndarray], x: float, y: float) -> bool:
    """Even-odd rule over a polygon's rings (the outline and its holes)."""
    crossings = 0
    for ring in rings:
        for (x0, y0), (x1, y1) in zip(ring[:-1].tolist(), ring[1:].tolist()):
            if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
                crossings += 1
    return crossings % 2 == 1


def signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0].astype(float), ring[:, 1].astype(float)
    return float((x[:-1] * y[1:] - x[1:] * y[:-1]).sum() / 2)


def patches(mask: np.ndarray) -> int:
    """How many 4-connected patches of True cells."""
    seen, count = np.zeros_like(mask), 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        seen[start] = True
        queue = deque([start])
        while queue:
            r, c = queue.popleft()
            for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= nr < mask.shape[0] and 0 <= nc < mask.shape[1] and mask[nr, nc] and not seen[nr, nc]:
                    seen[nr, nc] = True
                    queue.append((nr, nc))
    return count


@settings(max_examples=300, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 10), st.integers(1, 10))))
def test_each_cell_is_inside_exactly_its_patch_s_polygon(mask):
    polygons = polygons_of(mask)
    assert len(polygons) == patches(mask)
    assert sum(polygon.cells for polygon in polygons) == mask.sum()
    for r, c in np.ndindex(mask.shape):
        holding = sum(inside([p.exterior, *p.holes], c + 0.5, r + 0.5) for p in polygons)
        assert holding == int(mask[r, c]), (r, c)
    for polygon in polygons:
        assert signed_area(polygon.exterior) > 0
        for ring in (polygon.exterior, *polygon.holes):
            assert (ring[0] == ring[-1]).all()
            assert len({tuple(corner) for corner in ring[:-1].tolist()}) == len(ring) - 1  # simple: no corner twice
            steps = np.diff(ring, axis=0)
            assert ((steps == 0).sum(axis=1) == 1).all()  # along the cells' edges
            after = np.roll(steps, -1, axis=0)
            assert (steps[:, 0] * after[:, 1] != steps[:, 1] * after[:, 0]).all()  # corners only: each one turns
        assert all(signed_area(hole) < 0 for hole in polygon.holes)


def test_a_ring_of_cells_is_one_polygon_with_its_hole():
    mask = np.ones((3, 3), bool)
    mask[1, 1] = False
    (polygon,) = polygons_of(mask)
    assert polygon.exterior.tolist() == [[0, 0], [3, 0], [3, 3], [0, 3], [0, 0]]
    assert [hole.tolist() for hole in polygon.holes] == [[[1, 1], [1, 2], [2, 2], [2, 1], [1, 1]]]
    assert polygon.cells == 8


def test_cells_meeting_at_a_corner_alone_are_two_patches():
    polygons = polygons_of(np.eye(2, dtype=bool))
    assert sorted(p.exterior.min(axis=0).tolist() for p in polygons) == [[0, 0], [1, 1]]


def test_a_hole_meeting_the_outline_at_a_corner_is_a_hole_of_its_own():
    """The cycle around the outline passes the corner the hole meets it at twice: cut
    there, the outline and the hole are each a simple ring (as simple features want)."""
    mask = np.array([[0, 1, 1], [1, 0, 1], [1, 1, 1]], bool)
    (polygon,) = polygons_of(mask)
    assert len(polygon.holes) == 1 and polygon.cells == 7
    assert [1, 1] in polygon.exterior.tolist() and [1, 1] in polygon.holes[0].tolist()


def test_an_island_in_a_hole_is_a_polygon_of_its_own_and_the_hole_is_the_outer_patch_s():
    mask = np.ones((5, 5), bool)
    mask[1:4, 1:4] = False
    mask[2, 2] = True
    outer, island = sorted(polygons_of(mask), key=lambda p: -p.cells)
    assert (outer.cells, len(outer.holes), island.cells, len(island.holes)) == (16, 1, 1, 0)


@pytest.mark.parametrize("mask, count", [(np.zeros((3, 4), bool), 0), (np.ones((3, 4), bool), 1)])
def test_an_empty_mask_has_no_polygon_and_a_full_one_its_rectangle(mask, count):
    polygons = polygons_of(mask)
    assert len(polygons) == count
    if count:
        assert polygons[0].exterior.tolist() == [[0, 0], [4, 0], [4, 3], [0, 3], [0, 0]]


def test_polygons_moved_keep_their_shape():
    (polygon,) = polygons_of(np.ones((1, 2), bool))
    moved = polygon.moved(5, 7)
    assert moved.exterior.tolist() == [[5, 7], [7, 7], [7, 8], [5, 8], [5, 7]] and moved.cells == 2
