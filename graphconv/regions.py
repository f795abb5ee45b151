"""A map's cells of one class merged into polygons: the outline of each connected patch
(4-connected: cells meeting at a corner alone are two patches) with its holes, exactly
along the cells' edges, as GDAL's polygonize gives and QuPath, QGIS and shapely read.

`graphconv cells --regions` writes one feature per class from these: a slide's tumour
as one annotation whose area QuPath measures, not ten thousand tiles. Everything here
is in the map's cell grid, corner (x, y) = (column, row), a cell (r, c) spanning
c..c+1 by r..r+1; the caller places the corners on the image (`cells._Frame`).

Rings turn counter-clockwise in (x, y) (the patch on their left) and holes clockwise,
the orientation RFC 7946 asks of GeoJSON where x, y is a right-handed frame; where the
caller's frame flips it (a north-up raster's rows run south), it reverses them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Polygon", "polygons_of"]


@dataclass(frozen=True)
class Polygon:
    """A patch's outline and its holes, each a closed ring (n + 1, 2) of integer (x, y)
    corners (the first repeated last), only the corners where the outline turns."""

    exterior: np.ndarray
    holes: tuple[np.ndarray, ...]

    def moved(self, dx: int, dy: int) -> Polygon:
        """The polygon `dx` columns right and `dy` rows down."""
        step = np.array([dx, dy], np.int64)
        return Polygon(self.exterior + step, tuple(hole + step for hole in self.holes))

    @property
    def cells(self) -> int:
        """How many cells the patch holds (its area in cells: holes taken off)."""
        rings = (self.exterior, *self.holes)
        return int(round(sum(_signed_area(ring.tolist()) for ring in rings)))


def polygons_of(mask: np.ndarray) -> list[Polygon]:
    """The patches of the True cells of a 2-D `mask`, as polygons with their holes."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"polygons_of takes a 2-D mask, got shape {mask.shape}")
    rings = [ring for cycle in _cycles(*_boundary_edges(mask), mask.shape[1] + 1) for ring in _simple_rings(cycle)]
    areas = [_signed_area(ring) for ring in rings]
    exteriors = [ring for ring, area in zip(rings, areas) if area > 0]
    holes_of: list[list[list]] = [[] for _ in exteriors]
    finder = _ContainingExterior(exteriors, [area for area in areas if area > 0])
    for ring, area in zip(rings, areas):
        if area < 0:
            holes_of[finder.of(_cell_beside(ring))].append(ring)
    return [Polygon(_from_top_left(ring), tuple(_from_top_left(hole) for hole in holes))
            for ring, holes in zip(exteriors, holes_of)]


def _from_top_left(ring: list[tuple[int, int]]) -> np.ndarray:
    """The closed ring as an array starting at its top-left corner (the least y, then
    x): the same mask gives the same file."""
    start = min(range(len(ring) - 1), key=lambda i: (ring[i][1], ring[i][0]))
    return np.array(ring[start:-1] + ring[:start + 1], np.int64)


def _boundary_edges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every unit edge between a True cell and a False one (or the border), directed with
    the True cell on its left: (starts (n, 2), ends (n, 2), directions (n, 2)) of x, y."""
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), bool)
    padded[1:-1, 1:-1] = mask
    above, below = padded[:-1, 1:-1], padded[1:, 1:-1]  # the cells either side of line y = r
    left, right = padded[1:-1, :-1], padded[1:-1, 1:]  # of line x = c
    starts, steps = [], []
    for on_line, start_offset, step in (
            (below & ~above, (0, 0), (1, 0)),  # the patch below line y = r: rightwards
            (above & ~below, (1, 0), (-1, 0)),  # above it: leftwards
            (right & ~left, (0, 1), (0, -1)),  # right of line x = c: upwards (towards y = r)
            (left & ~right, (0, 0), (0, 1))):  # left of it: downwards
        r, c = np.nonzero(on_line)
        starts.append(np.stack([c + start_offset[0], r + start_offset[1]], axis=1))
        steps.append(np.broadcast_to(np.array(step), (len(r), 2)))
    start = np.concatenate(starts).astype(np.int64)
    step = np.concatenate(steps).astype(np.int64)
    return start, start + step, step


def _cycles(start: np.ndarray, end: np.ndarray, step: np.ndarray, row_length: int) -> list[list[tuple[int, int]]]:
    """The boundary edges joined into closed cycles, each the list of the corners where
    it turns. Each corner has as many edges leaving as arriving: one, or two where two
    patch cells meet at it alone; there an edge goes on with the left turn, along the
    same cell, so such cells are not joined (4-connected patches)."""
    if not len(start):
        return []
    start_id = start[:, 1] * row_length + start[:, 0]
    end_id = end[:, 1] * row_length + end[:, 0]
    order = np.argsort(start_id, kind="stable")
    first = np.searchsorted(start_id[order], end_id)  # the first edge leaving each edge's end
    candidate = order[first]
    second = order[np.minimum(first + 1, len(order) - 1)]
    two_leave = (first + 1 < len(order)) & (start_id[second] == end_id)
    left_turn = np.stack([-step[:, 1], step[:, 0]], axis=1)
    successor = np.where(two_leave & ~(step[candidate] == left_turn).all(axis=1), second, candidate)
    turns = (step[successor] != step).any(axis=1).tolist()  # at the edge's end
    corners = list(map(tuple, end.tolist()))
    successor = successor.tolist()
    seen = bytearray(len(successor))
    cycles = []
    for edge in range(len(successor)):
        if seen[edge]:
            continue
        cycle = []
        while not seen[edge]:
            seen[edge] = 1
            if turns[edge]:
                cycle.append(corners[edge])
            edge = successor[edge]
        cycles.append(cycle)
    return cycles


def _simple_rings(cycle: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """A cycle of corners cut where it passes a corner twice (a hole meeting the outline,
    or another hole, at a corner alone: a corner where both passes turn) into rings that
    pass each corner once, as simple features want a ring; each closed (its first corner
    repeated last)."""
    rings, path, where = [], [], {}
    for corner in cycle:
        if corner in where:
            cut = where[corner]
            rings.append(path[cut:] + [corner])
            for left_behind in path[cut + 1:]:
                del where[left_behind]
            del path[cut + 1:]
            continue
        where[corner] = len(path)
        path.append(corner)
    if path:
        rings.append(path + [path[0]])
    return rings


def _signed_area(ring: Sequence[Sequence[int]]) -> float:
    """The shoelace area of a closed ring: positive counter-clockwise."""
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:])) / 2


def _cell_beside(hole: list[tuple[int, int]]) -> tuple[float, float]:
    """The centre of the patch's cell on the left of a hole's first edge: inside the
    outline of the patch the hole is in, and in no smaller one."""
    (x, y), (x1, y1) = hole[0], hole[1]
    dx, dy = (x1 > x) - (x1 < x), (y1 > y) - (y1 < y)
    return x + (dx - dy) / 2, y + (dy + dx) / 2


class _ContainingExterior:
    """Which outline a hole belongs to: the smallest containing a cell of its patch. The
    outlines are filed by the squares of BUCKET cells their bounds cover, so a noisy
    map's many small islands are not each tried for each hole."""

    BUCKET = 16

    def __init__(self, exteriors: list[list[tuple[int, int]]], areas: list[float]) -> None:
        self.exteriors = [np.array(ring, np.int64) for ring in exteriors]
        self.bounds = [(*ring.min(axis=0).tolist(), *ring.max(axis=0).tolist()) for ring in self.exteriors]
        self.buckets: dict[tuple[int, int], list[int]] = {}
        for index in sorted(range(len(exteriors)), key=areas.__getitem__):  # smallest first
            x0, y0, x1, y1 = self.bounds[index]
            for by in range(y0 // self.BUCKET, (y1 - 1) // self.BUCKET + 1):
                for bx in range(x0 // self.BUCKET, (x1 - 1) // self.BUCKET + 1):
                    self.buckets.setdefault((by, bx), []).append(index)

    def of(self, point: tuple[float, float]) -> int:
        px, py = point
        for index in self.buckets.get((int(py // self.BUCKET), int(px // self.BUCKET)), ()):
            x0, y0, x1, y1 = self.bounds[index]
            if x0 < px < x1 and y0 < py < y1 and _contains(self.exteriors[index], px, py):
                return index
        raise AssertionError(f"a hole beside cell centre {point} lies in no outline")  # the edges say otherwise


def _contains(ring: np.ndarray, px: float, py: float) -> bool:
    """Whether (px, py), never on a grid line, is inside the ring: how many of its
    vertical edges a ray to the right crosses."""
    a, b = ring[:-1], ring[1:]
    vertical = a[:, 0] == b[:, 0]
    low, high = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    crossed = vertical & (a[:, 0] > px) & (low < py) & (py < high)
    return bool(crossed.sum() % 2)
