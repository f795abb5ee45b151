"""Exact tiled evaluation: the whole-image score map, computed tile by tile in bounded memory.

Why it is exact (and MONAI-style sliding windows are not): graphconv knows each score
cell's receptive field, `offset + i * stride` to `+ size` on each axis. A tile whose
input box starts at a multiple of every layer's cumulative stride (`align`) computes,
at every layer, the same grid as the whole image does, shifted by a whole number of
cells; so every output cell whose field lies inside the tile's box gets exactly the
whole-image value, and the network's zero padding is seen only where the box touches
the true image border (where the whole-image pass sees it too). Each tile therefore
writes its own block of the map: no blending, no count buffers, and the only extra
work is the halo, the `size - stride` pixels neighbouring tiles both read.

The plan is a list of `Tile`s: the block of output cells each one writes and the input
box it reads. `run_tiled` runs them through the model's Executor (one plan per tile
size, buffers reused) and writes each block into `out`, which may be a numpy array, a
memory-mapped `.npy` or a zarr array. `graphconv.sources` reads images lazily, so
neither the input nor the output needs to fit in memory.

What is tiled is a `Grid`: a map whose cell (i, j) is computed from the field
`offset + (i, j) * stride`, `size` pixels wide. A model's own dense pass is a
`DenseGrid`; `CropGrid` is the classifier itself run on every crop (`graphconv run
--crops`), the only exact map of a network that cannot slide (squeeze-and-excitation
gates), and it streams through the same plans, files and Dask workers.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shlex
import zlib
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Protocol, Sequence

import numpy as np

from graphconv.background import NO_CALL_CLASS, NO_CLASS
from graphconv.errors import GraphconvError, counted, shown, warn_caller
from graphconv.georef import EPSG_URL, is_zarr_path
from graphconv.memory import FLOAT_BYTES, check_fits, format_size
from graphconv.receptive import Field, receptive_fields
from graphconv.shapes import FittingSizes


class Source(Protocol):
    """An image read a box at a time (graphconv.sources has the implementations)."""

    height: int
    width: int
    channels: int

    def read(self, top: int, left: int, bottom: int, right: int) -> np.ndarray:
        """(C, bottom - top, right - left) float32, preprocessed as the model expects."""


@dataclass(frozen=True)
class Tile:
    rows: tuple[int, int]  # output cells [start, stop) this tile writes
    cols: tuple[int, int]
    box: tuple[int, int, int, int]  # input pixels it reads: top, left, bottom, right (exclusive)

    @property
    def pixels(self) -> int:
        top, left, bottom, right = self.box
        return (bottom - top) * (right - left)


@dataclass(frozen=True)
class TilePlan:
    image_hw: tuple[int, int]
    map_hw: tuple[int, int]  # the whole-image pass's score map (what Model.run returns)
    tile_hw: tuple[int, int]  # the largest input box a tile reads
    cells_hw: tuple[int, int]  # output cells per full tile
    field: Field
    align: tuple[int, int]
    tiles: tuple[Tile, ...]

    @property
    def halo(self) -> tuple[int, int]:
        """Input pixels two neighbouring tiles both read, per axis."""
        return tuple(int(max(0, self.field.size[a] - self.field.stride[a])) for a in (0, 1))

    @property
    def overhead(self) -> float:
        """Input pixels read by all tiles over the image's: what tiling costs in extra work."""
        return sum(t.pixels for t in self.tiles) / (self.image_hw[0] * self.image_hw[1])

    def as_recorded(self) -> str:
        """The plan as a --resume job records it (and a map, with the tile that plans it:
        `recorded_plan`): the tiles' sums run in other orders than a whole image's or
        other tiles', so their bits differ in float32 rounding."""
        return (f"{len(self.tiles)} tile{'' if len(self.tiles) == 1 else 's'} of up to {self.tile_hw[0]}x"
                f"{self.tile_hw[1]} pixels, "
                f"{self.cells_hw[0]}x{self.cells_hw[1]} cells")

    def describe(self) -> str:
        th, tw = self.tile_hw
        ch = max((t.rows[1] - t.rows[0] for t in self.tiles), default=0)  # what tiles write, not what they could
        cw = max((t.cols[1] - t.cols[0] for t in self.tiles), default=0)
        return (f"{len(self.tiles)} tile{'' if len(self.tiles) == 1 else 's'} of up to {th}x{tw} pixels, up to "
                f"{ch}x{cw} score cells each; "
                f"halo {self.halo[0]}x{self.halo[1]} px, tiles aligned to {self.align[0]}x{self.align[1]} px; "
                f"{self.overhead:.2f}x the image's pixels computed")


def stitch_factors(graph) -> tuple[int, int]:
    """Shifted copies per axis of a shift-and-stitch network (its `shift_copies` layers'
    factors), (1, 1) for any other: fine cell j of the map is copy j % f's cell."""
    factors = [1, 1]
    for node in graph.find("shift_copies"):
        factors = [factors[a] * node.params["factor"][a] for a in (0, 1)]
    return factors[0], factors[1]


def alignment(graph) -> tuple[int, int]:
    """The least common multiple of every layer's cumulative stride (its numerator where
    it is a fraction), per axis: a tile starting at a multiple of it sees every layer's
    grid as the whole image does. A multiple of `FittingSizes.period`, so a box from
    there to the image's end fits where the image does."""
    align = [1, 1]
    for field in receptive_fields(graph).values():
        for a in (0, 1):
            # a fractional stride (after an upsample, an interleave) repeats every numerator pixels
            align[a] = math.lcm(align[a], Fraction(field.stride[a]).numerator)
    return align[0], align[1]


class DenseGrid:
    """A compiled model's score map: one forward pass per tile, every cell of the tile's
    map shared work with its neighbours."""

    def __init__(self, model):
        self.model = model

    @cached_property
    def field(self) -> Field:
        return self.model.field

    @property
    def cell_area(self) -> Field:
        """Where each cell stands on the image (`Model.cell_area`: a classifier's crop)."""
        return self.model.cell_area

    @cached_property
    def align(self) -> tuple[int, int]:
        return alignment(self.model.graph)

    @cached_property
    def stitch(self) -> tuple[int, int]:
        return stitch_factors(self.model.graph)

    @cached_property
    def whole_image_only(self) -> bool:
        """A segmentation network with a layer over its whole input (LR-ASPP's gate,
        DeepLabV3's image pooling, a group norm): PyTorch runs it on the whole image, and
        so does a tiled run, in one tile (`_whole_image_plan`)."""
        if not self.model.segmentation:
            return False
        try:
            _check_slides(self.model.graph)
        except GraphconvError:
            return True
        return False

    @property
    def sizes(self) -> FittingSizes | None:
        """The box sides the network's branches meet on (`Model.fitting_sizes`); None: any."""
        return self.model.fitting_sizes

    def smallest_tile(self) -> tuple[int, int]:
        _check_slides(self.model.graph)
        return tuple(int(self.field.size[a] + _lead(self.field, self.stitch, a) + _slack(self.field, self.align, a,
                                                                                         self.stitch[a])
                         + _fit_slack(self.sizes, a))
                     for a in (0, 1))

    def map_hw(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        return self.model.output_hw(*image_hw)

    def padded_hw(self, image_hw: tuple[int, int]) -> tuple[int, int] | None:
        """The size a segmentation network runs the image at (`Model.padded_hw`), or None."""
        return self.model.padded_hw(*image_hw)

    def trimmed_hw(self, image_hw: tuple[int, int]) -> tuple[int, int] | None:
        """The part of the image a classifier runs at (`Model.trimmed_hw`), or None."""
        return self.model.trimmed_hw(*image_hw)

    def run(self, x: np.ndarray, device: str) -> np.ndarray:
        """The map of an input box, uncut: cell (0, 0) is the first whose field starts in it."""
        return self.model.executor(device).run(x)

    def whole(self, x: np.ndarray, device: str) -> np.ndarray:
        """The map of a whole image, as `Model.run` returns it."""
        return self.model._scores(x, device)

    def peak_bytes(self, tile_hw: tuple[int, int]) -> int:
        from graphconv.memory import run_estimate
        tile_hw = tuple(tile_hw)
        return run_estimate(self.model.graph, 1, self.padded_hw(tile_hw) or self.trimmed_hw(tile_hw) or tile_hw)

    def largest_useful_tile(self, image_hw: tuple[int, int]) -> int:
        """The tile that holds the whole map in one: the smallest tile (one cell's field, its
        alignment slack, its rounding to a fitting side) plus a stride per further cell. A padded
        network's fields reach past the image by the halo on both sides, so this is about
        the image plus twice the halo: with anything less a small image is cut into many
        tiles that each recompute the halo. Its boxes still read only the image."""
        map_hw, smallest = self.map_hw(image_hw), self.smallest_tile()
        return max(int(math.ceil(smallest[a] + (map_hw[a] - 1) * self.field.stride[a])) for a in (0, 1))


class CropGrid:
    """The classifier itself on every crop, `stride` pixels apart, in batches: no
    work shared between crops, so exact for any network, including one that cannot slide.
    Crops start on the stride grid, so a tile box starting there holds whole crops. The
    classifier runs after the passes that keep it one (`CLASSIFIER_PIPELINE`: batch norm
    folded, activations fused): an imported network as exported ran its layers one by
    one, DenseNet-121 on 4 crops 59-63 ms with them against 66-76 ms without."""

    CELLS_PER_TILE = 32  # a tile of 32x32 crops: a progress step every ~1000 crops

    def __init__(self, classifier, stride: int | tuple[int, int]):
        from graphconv.compiler import compile_graph
        from graphconv.model import Model
        from graphconv.ops import pair
        from graphconv.pass_manager import CLASSIFIER_PIPELINE
        from graphconv.strides import at_its_own_stride

        # the same function in fewer passes, made once per model (a cluster's worker makes a grid per tile)
        self.model = classifier.derived("crop classifier", lambda: Model(compile_graph(
            at_its_own_stride(classifier.graph), CLASSIFIER_PIPELINE)[0]))
        _, crop_h, crop_w = classifier.crop_shape
        self.stride = pair(stride)
        self.field = Field((crop_h, crop_w), self.stride, (0, 0))
        self.cell_area = self.field  # each cell is its crop
        self.align = self.stride
        self.stitch = (1, 1)
        self.sizes = None

    def padded_hw(self, image_hw: tuple[int, int]) -> None:
        return None  # crops lie inside the image

    def trimmed_hw(self, image_hw: tuple[int, int]) -> None:
        return None  # the classifier runs on each crop alone

    def smallest_tile(self) -> tuple[int, int]:
        return self.field.size

    def map_hw(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        (crop_h, crop_w), (sy, sx) = self.field.size, self.stride
        if image_hw[0] < crop_h or image_hw[1] < crop_w:
            raise GraphconvError(f"--crops: the input is {image_hw[0]}x{image_hw[1]}, smaller than the "
                                 f"classifier's {crop_h}x{crop_w} crop")
        return (image_hw[0] - crop_h) // sy + 1, (image_hw[1] - crop_w) // sx + 1

    def run(self, x: np.ndarray, device: str) -> np.ndarray:
        from graphconv.dense import crop_loop
        self.map_hw(x.shape[2:])  # an image smaller than the crop is one clear error, not numpy's
        return crop_loop(self.model, x, self.stride, device)

    whole = run

    def crops(self, image_hw: tuple[int, int], images: int = 1) -> int:
        rows, cols = self.map_hw(image_hw)
        return images * rows * cols

    def describe(self, image_hw: tuple[int, int], images: int = 1, left_out: int = 0) -> str:
        """What a run costs: the classifier's whole work once per crop, but for the
        `left_out` crops not computed (--skip-background's, no-data's)."""
        from graphconv.cost import total_flops

        (crop_h, crop_w), (sy, sx) = self.field.size, self.stride
        crops = self.crops(image_hw, images)
        computed = f", {crops - left_out} of them computed ({left_out} left out)" if left_out else ""
        return (f"{crops} crops of {crop_h}x{crop_w}, {sy}x{sx} pixels apart{computed}: "
                f"{(crops - left_out) * total_flops(self.model.graph) / 1e9:.1f} GFLOP")

    def peak_bytes(self, tile_hw: tuple[int, int]) -> int:
        """A batch of crops through the classifier, plus the tile's pixels and its map."""
        from graphconv.dense import crops_per_batch
        from graphconv.memory import run_estimate

        batch = crops_per_batch(self.model, self.crops(tile_hw))
        pixels = self.model.crop_shape[0] * tile_hw[0] * tile_hw[1]
        return (run_estimate(self.model.graph, batch, self.field.size) + 4 * pixels
                + 4 * self.crops(tile_hw) * self.model.output_channels)

    def largest_useful_tile(self, image_hw: tuple[int, int]) -> int:
        """Past some hundreds of crops a bigger tile saves nothing (the halo is re-read, not
        recomputed) and only makes the progress bar coarser."""
        cells = self.CELLS_PER_TILE - 1
        return min(max(image_hw), max(self.field.size[a] + cells * self.stride[a] for a in (0, 1)))


Grid = DenseGrid | CropGrid


def as_grid(model_or_grid) -> Grid:
    """A Model (its dense pass) or a grid as it is."""
    return model_or_grid if isinstance(model_or_grid, (DenseGrid, CropGrid)) else DenseGrid(model_or_grid)


def min_tile(model) -> tuple[int, int]:
    """The smallest tile (input pixels per axis) that holds one score cell wherever it lies."""
    return as_grid(model).smallest_tile()


def check_tile_holds_a_cell(model, tile: int | Sequence[int],
                            image_hw: tuple[int, int] | None = None) -> tuple[int, int]:
    """`tile` as (h, w), refused where it is smaller than `min_tile`: whatever the image
    (an --images batch checks its --tile once, not once an image), or, given the image,
    on an axis the tile does not cover whole (a tile as large as the image reads the
    image, which runs whenever the image does)."""
    grid = as_grid(model)
    tile_hw = checked_tile(tile)
    smallest = grid.smallest_tile()
    covers = (False, False) if image_hw is None else tuple(tile_hw[a] >= image_hw[a] for a in (0, 1))
    if any(tile_hw[a] < smallest[a] and not covers[a] for a in (0, 1)):
        field, align = grid.field, grid.align
        raise GraphconvError(f"a tile of {tile_hw[0]}x{tile_hw[1]} is too small for this network: each "
                             f"tile needs one {field.size[0]}x{field.size[1]} receptive field plus "
                             f"its alignment to {align[0]}x{align[1]} px; the smallest tile that works "
                             f"is {max(smallest)} (or {smallest[0]}x{smallest[1]})"
                             + _cost_of_the_smallest(grid, image_hw))
    return tile_hw


def _cost_of_the_smallest(grid, image_hw: tuple[int, int] | None) -> str:
    """What the smallest tile would cost over the image, with the tile the memory budget
    allows: a user who took "the smallest tile that works is 634" over a 2048-pixel image
    ran 3364 tiles computing 296x its pixels, and gave up."""
    if image_hw is None:
        return ""
    from graphconv.memory import memory_limit
    overhead = plan_tiles(grid, image_hw, max(grid.smallest_tile())).overhead
    if overhead < WASTEFUL:
        return ""
    try:
        roomy = choose_tile(grid, image_hw, memory_limit())
    except GraphconvError:
        return ""
    better = plan_tiles(grid, image_hw, roomy)
    instead = "the whole image in one pass" if len(better.tiles) == 1 else f"tiles of {roomy} ({better.overhead:.2f}x)"
    return (f", but tiles that small compute {overhead:.0f}x the image's pixels (each its halo again); the memory "
            f"budget allows {instead}")


def plan_tiles(model, image_hw: tuple[int, int], tile: int | Sequence[int]) -> TilePlan:
    """Tiles of at most `tile` input pixels per axis covering `model.run`'s map of an
    image of `image_hw` (the crop grid; see Model.map_size). `model` may be a grid."""
    grid = as_grid(model)
    padded = grid.padded_hw(tuple(image_hw))
    if padded is not None:  # the padded image's plan, its cells past the image's dropped
        covering = tuple(max(side, padded[a]) if side >= image_hw[a] else side  # covers the image: the padding too
                         for a, side in enumerate(checked_tile(tile)))
        return _cut_to_image(plan_tiles(grid, padded, covering), tuple(image_hw), grid.map_hw(tuple(image_hw)))
    trimmed = grid.trimmed_hw(tuple(image_hw))
    if trimmed is not None:  # the part of the image the network runs at: the same cells, boxes inside it
        return replace(plan_tiles(grid, trimmed, tile), image_hw=tuple(image_hw))
    if isinstance(grid, DenseGrid) and grid.whole_image_only:
        return _whole_image_plan(grid, image_hw, tile)
    tile_hw = check_tile_holds_a_cell(grid, tile, image_hw)
    field, align = grid.field, grid.align
    map_hw = grid.map_hw(image_hw)
    cells = tuple(map_hw[a] if tile_hw[a] >= image_hw[a]  # the whole axis in one tile
                  else _cells_per_tile(tile_hw[a] - _fit_slack(grid.sizes, a), field, align, a, grid.stitch)
                  for a in (0, 1))
    _check_plan_fits(image_hw, map_hw, cells)
    row_spans = list(_spans(map_hw[0], cells[0]))
    col_spans = list(_spans(map_hw[1], cells[1]))
    tiles = tuple(Tile(rows, cols, _box(field, align, rows, cols, image_hw, grid.stitch, grid.sizes))
                  for rows in row_spans for cols in col_spans)
    largest = (max(t.box[2] - t.box[0] for t in tiles), max(t.box[3] - t.box[1] for t in tiles))
    return TilePlan(tuple(image_hw), map_hw, largest, cells, field, align, tiles)


TILE_PLAN_BYTES = 512  # a Tile in a plan, with its spans (measured: 450)


def _check_plan_fits(image_hw: tuple[int, int], map_hw: tuple[int, int], cells: tuple[int, int]) -> None:
    """Refuse a plan of more tiles than memory holds before listing them: a 65 KB TIFF
    whose header claims 4e9 x 4e9 pixels had the plan grow past 3.7 GB (and past any
    --memory-limit) until the process died."""
    count = math.prod(-(-map_hw[a] // cells[a]) for a in (0, 1))
    check_fits(TILE_PLAN_BYTES * count, f"a plan of {count:,} tiles for an image of {image_hw[0]}x{image_hw[1]} "
               "pixels", hint="is the size the file states right? (a damaged header can claim billions of pixels)")


def _cut_to_image(plan: TilePlan, image_hw: tuple[int, int], map_hw: tuple[int, int]) -> TilePlan:
    """A padded image's plan (`Model.padded_hw`) writing the image's map alone: tiles keep
    their boxes, which `read_box` fills with zeros past the image, and write only the
    cells of the image's map."""
    tiles = tuple(Tile((t.rows[0], min(t.rows[1], map_hw[0])), (t.cols[0], min(t.cols[1], map_hw[1])), t.box)
                  for t in plan.tiles if t.rows[0] < map_hw[0] and t.cols[0] < map_hw[1])
    return replace(plan, image_hw=image_hw, map_hw=map_hw, tiles=tiles)


def _whole_image_plan(grid: DenseGrid, image_hw: tuple[int, int], tile: int | Sequence[int]) -> TilePlan:
    """One tile, the image, for a network that needs it whole (`DenseGrid.whole_image_only`);
    a tile smaller than the image is refused, saying why."""
    tile_hw = checked_tile(tile)
    if tile_hw[0] < image_hw[0] or tile_hw[1] < image_hw[1]:
        _check_slides(grid.model.graph)  # raises: which layer, and what to do
    map_hw = grid.map_hw(image_hw)
    whole = Tile((0, map_hw[0]), (0, map_hw[1]), (0, 0, *image_hw))
    no_halo = Field((1, 1), (1, 1), (0, 0))  # what cuts the tile's map: it is the whole map, shared with no tile
    return TilePlan(tuple(image_hw), map_hw, tuple(image_hw), map_hw, no_halo, (1, 1), (whole,))


def checked_tile(tile) -> tuple[int, int]:
    """A tile size as (H, W) input pixels: one whole number for a square, or two."""
    from graphconv.params import size_pair
    return size_pair(tile, "a tile is a whole number of input pixels >= 1 (a square), or (H, W) of them")


_RUN_IT_WHOLE = ("needs the whole image in one pass and cannot be evaluated in tiles: run it whole (a tile at least "
                 "as large as the image, or none under a memory limit the whole image fits), or on a smaller image")


def _check_slides(graph) -> None:
    """Tiles need a network that slides: a layer that sees its whole input (an fc, a
    global pool) gives one answer per image, which no tile could compute alone."""
    from graphconv.strides import refuse_whole_map_layers, sliding_pass

    segmentation = graph.meta.get("task") == "segmentation"
    for node in graph.layers():
        reason = node.opdef.whole_map_reason(node.params) if segmentation else None
        if reason:  # no --crops for a segmentation network: its map is the whole image's
            raise node.error(f"{node.op} {reason}, so this segmentation network {_RUN_IT_WHOLE}")
    refuse_whole_map_layers(graph)
    for node in graph.layers():
        cure = sliding_pass(node)
        if cure and segmentation:
            # compiling would make a classifier's pool slide; a segmentation network's (an
            # LR-ASPP gate) is over the whole image by design
            raise node.error(f"{node.op} sees its whole input, so this segmentation network {_RUN_IT_WHOLE}")
        if cure:
            raise node.error(f"{node.op} sees its whole input, so the network cannot be evaluated in tiles: "
                             f"compile it first (graphconv compile; the {cure} pass makes it slide)")


def _cells_per_tile(tile: int, field: Field, align, axis: int, stitch=(1, 1)) -> int:
    """Cells whose fields fit a tile of `tile` pixels whatever its aligned start."""
    stride = field.stride[axis]
    room = tile - field.size[axis] - _lead(field, stitch, axis) - _slack(field, align, axis, stitch[axis])
    return int(room // stride) + 1


def _lead(field: Field, stitch, axis: int) -> int:
    """How far before a tile's first cell's field its box may have to start: a
    shift-and-stitch tile computes that cell in copy j % f, the tile shifted by
    (j % f) * stride, whose rows before the shift are gone, so the box starts where
    copy 0's cell of the same coarse cell starts, up to (f - 1) * stride earlier (see
    `_box`). 0 without shift-and-stitch."""
    return int((stitch[axis] - 1) * field.stride[axis])


def _slack(field: Field, align, axis: int, every: int = 1) -> int:
    """How far past its aligned start a tile's box can begin: the largest
    (offset + k * every * stride) mod align over the cells a box may start from (every
    cell; with shift-and-stitch, the first cell of each coarse cell: every f-th)."""
    stride, offset = int(field.stride[axis]) * every, int(field.offset[axis])
    return max((offset + k * stride) % align[axis] for k in range(align[axis] // math.gcd(stride, align[axis])))


def _fit_slack(sizes: FittingSizes | None, axis: int) -> int:
    """The most pixels a box grows by to a side the network's branches meet on."""
    return 0 if sizes is None else sizes.slack(axis)


def _spans(total: int, step: int, first: int = 0) -> Iterator[tuple[int, int]]:
    for start in range(first, total, step):
        yield start, min(total, start + step)


def _box(field: Field, align, rows, cols, image_hw, stitch=(1, 1),
         sizes: FittingSizes | None = None) -> tuple[int, int, int, int]:
    """The input box a tile reads: from the first cell's field start, rounded down to the
    alignment (at least 0, the image's true border), to the last cell's field end, grown
    to a side the network's branches meet on (`sizes`; at most the image's end, where
    the box fits as the image does, the alignment being a multiple of their period).

    With shift-and-stitch (f copies per axis), fine cell j is cell j // f of copy j % f,
    the box shifted by (j % f) * stride and cut there: a padded network pads that copy at
    its cut, so the box must start where copy 0's field of the same coarse cell starts,
    cell j - j % f's, for the copy to see the rows its padded field reads before the cut."""
    box = []
    for a, (start, stop) in enumerate((rows, cols)):
        first = field.offset[a] + (start - start % stitch[a]) * field.stride[a]
        last_end = field.offset[a] + (stop - 1) * field.stride[a] + field.size[a]
        box_start = max(0, (first // align[a]) * align[a])
        end = int(math.ceil(last_end))
        if sizes is not None:
            end = box_start + sizes.next_fit(end - box_start, a)
        box.append((box_start, min(image_hw[a], end)))
    (top, bottom), (left, right) = box
    return top, left, bottom, right


WASTEFUL = 1.5  # computing this many times the image's pixels, and a larger tile 1/WASTEFUL of it, is worth a note


def wasteful_tile_note(grid, image_hw: tuple[int, int], plan, budget: int, background=None, *,
                       tile_option: str = "--tile ", whole: str = "leave out --tile") -> str | None:
    """A --tile so small that each tile's halo, computed again by its neighbours, is most
    of the work (a 200 px tile over a slide: 15.9x the image's pixels) while the memory
    budget allows a tile that computes much less: say so, with that tile. Where cells
    are left out (`background`), the tiles of such cells alone are not computed, and the
    tile compared with is the one a run without --tile takes (`Background.cheapest_tile`):
    a 64 px tile over a scene with no-data computed 230x the work, unsaid. `tile_option`
    names the tile as the caller gives it ("--tile ", or Python's "tile="), `whole` how to
    run the image in one pass."""
    if plan.overhead < WASTEFUL:
        return None
    try:
        roomy = choose_tile(grid, image_hw, budget) if background is None else (
            background.cheapest_tile(grid, image_hw, budget))
    except GraphconvError:
        return None
    better = plan_tiles(grid, image_hw, roomy)
    pixels = image_hw[0] * image_hw[1]
    computed, better_computed = (
        (plan.overhead, better.overhead) if background is None else
        (sum(t.pixels for t in tiles if not background.is_blank(t)) / pixels for tiles in (plan.tiles, better.tiles)))
    if better_computed * WASTEFUL <= computed:
        instead = (f"the whole image fits in one tile ({whole})" if len(better.tiles) == 1 else
                   f"{tile_option}{roomy} would compute {better_computed:.2f}x" if background is None else
                   f"without {tile_option.strip(' =')}, tiles of {roomy} would compute {better_computed:.2f}x")
        skipped = ", less the tiles of cells left out alone" if background is not None else ""
        return (f"tiles of {plan.tile_hw[0]}x{plan.tile_hw[1]} compute {computed:.2f}x the image's pixels "
                f"(each tile's halo again{skipped}); {instead}, within the memory budget")
    return None


def run_tiled(model, source: Source | np.ndarray, tile: int | Sequence[int], *, out: Any = None,
              device: str = "cpu", transform: Callable[[np.ndarray], np.ndarray] | None = None,
              progress: Callable[[Tile], None] | None = None,
              blank_cells: Callable[[Tile], np.ndarray] | None = None,
              done: Collection[Tile] = (), damaged: "DamagedCells | None" = None,
              piece_cells: tuple[int, int] | None = None) -> Any:
    """The map `model.run` gives for the whole image (or a grid's map: `CropGrid`),
    computed tile by tile.

    `source`: a (N, C, H, W) float32 array (already preprocessed) or a Source. `out`: where
    to write the map (a numpy array, np.memmap or zarr array of the shape and dtype the
    result has); a new numpy array when None. `transform` maps each tile's (N, K, r, c)
    block before it is written (e.g. keep some classes, or argmax); `progress` is called
    after each tile. The cells `blank_cells(tile)` marks (`Background.blank_cells`: no
    tissue near their centres) are written as `background.fill_value` (NaN in a score
    map), and a tile of such cells alone is not computed. The tiles in `done` (a resumed
    run's: `MapFile.done`) are in `out` already, and are neither computed nor written.
    With `damaged` (--skip-damaged), the cells whose crops reach a TIFF tile or strip
    that cannot be decoded are left out as blank cells are, and listed there
    (`_around_damage`); without it such a tile stops the run. With `piece_cells`, each
    tile is computed in pieces of at most that many cells (`in_pieces`), `progress`
    still called once per tile."""
    from graphconv.background import blank_tiles, fill_value, without_blank_cells

    grid = as_grid(model)
    channels = grid.model.crop_shape[0]
    source = as_source(source, channels)
    pieces = in_pieces(grid, plan_tiles(grid, (source.height, source.width), tile), piece_cells)
    plan, progress = pieces.plan, pieces.per_tile(progress)
    _check_tiles_fit(grid, plan, getattr(source, "images", 1), out)
    if out is not None:
        check_out(out, (getattr(source, "images", 1), None if transform else grid.model.output_channels, *plan.map_hw),
                  float_scores=transform is None)
    done = pieces.done(done) if out is not None else frozenset()
    blank = blank_tiles(plan.tiles, blank_cells)
    if out is None and len(blank) == len(plan.tiles):
        blank = blank[1:]  # one tile computed, for the map's channels and type
    blank = [t for t in blank if t not in done]
    skipped = set(blank) | done
    unchecked = out is not None and transform is not None  # what a transform makes is checked on its first block
    for tile_ in plan.tiles:
        if tile_ in skipped:
            continue
        block = tile_block(grid, source, tile_, device, transform, damaged)
        block = without_blank_cells(block, blank_cells(tile_) if blank_cells is not None else None)
        if out is None:
            out = np.empty((block.shape[0], block.shape[1], *plan.map_hw), block.dtype)
        elif unchecked:
            check_out(out, (block.shape[0], block.shape[1], *plan.map_hw),
                      float_scores=np.issubdtype(block.dtype, np.floating))
            unchecked = False
        write_block(out, tile_, block, progress)
    for tile_ in blank:
        write_block(out, tile_, fill_value(out.dtype), progress)
    return out


@dataclass(frozen=True)
class Pieces:
    """A plan's tiles each computed as one or more pieces, a piece a tile of its own
    cells read on its own box: a stopped --resume run's tiles, planned for more memory
    than this run has (a larger machine, a Dask worker of more memory), done here in
    pieces that fit, the partial map's tiles kept as they are (`in_pieces`). Every piece
    is exact as any tile is, so a tile made of pieces holds what the tile would have."""

    plan: TilePlan  # the pieces, as a plan: what is read, run and checked against memory
    tile_of: dict[Tile, Tile]  # each piece's tile in the plan cut

    def done(self, tiles_done: Collection[Tile]) -> frozenset[Tile]:
        """The pieces of tiles done (a resumed run's), neither computed nor written."""
        return frozenset(piece for piece, tile in self.tile_of.items() if tile in tiles_done)

    def per_tile(self, progress: Callable[[Tile], None] | None) -> Callable[[Tile], None] | None:
        """`progress` called once per tile of the plan cut, when the last of its pieces is
        written (`MapFile.record` lists a tile once all its cells are on disk)."""
        if progress is None or all(piece == tile for piece, tile in self.tile_of.items()):
            return progress
        left = Counter(self.tile_of.values())

        def written(piece: Tile) -> None:
            tile = self.tile_of[piece]
            left[tile] -= 1
            if not left[tile]:
                progress(tile)
        return written


def in_pieces(model, plan: TilePlan, piece_cells: tuple[int, int] | None = None) -> Pieces:
    """`plan`'s tiles cut into pieces of at most `piece_cells` cells (None: each tile one
    piece, itself), each on the box its cells need (`_box`, as `_around_damage`'s halves).
    `model` may be a grid."""
    if piece_cells is None:
        return Pieces(plan, {tile: tile for tile in plan.tiles})
    grid = as_grid(model)
    tile_of = {}
    for tile in plan.tiles:
        for rows in _spans(tile.rows[1], piece_cells[0], tile.rows[0]):
            for cols in _spans(tile.cols[1], piece_cells[1], tile.cols[0]):
                whole = (rows, cols) == (tile.rows, tile.cols)
                tile_of[tile if whole else _tile_of_cells(grid, rows, cols, plan.image_hw)] = tile
    largest = (max(p.box[2] - p.box[0] for p in tile_of), max(p.box[3] - p.box[1] for p in tile_of))
    cells = tuple(min(plan.cells_hw[a], piece_cells[a]) for a in (0, 1))
    return Pieces(replace(plan, tile_hw=largest, cells_hw=cells, tiles=tuple(tile_of)), tile_of)


def piece_cells_within(model, plan: TilePlan, budget: int) -> tuple[int, int] | None:
    """Cells per piece (`in_pieces`) whose runs fit `budget`, for a plan whose tiles do
    not (a stopped run's, planned for more memory); None where they fit, or cannot be cut
    (a network that needs the whole image). Started from the tiles `choose_tile` fits,
    smaller while a piece's box, starting on another cell than a plan's tile, is over."""
    grid = as_grid(model)
    if tile_fits(grid, plan.tile_hw, budget) or (isinstance(grid, DenseGrid) and grid.whole_image_only):
        return None
    cells = plan_tiles(grid, plan.image_hw, choose_tile(grid, plan.image_hw, budget)).cells_hw
    while not tile_fits(grid, in_pieces(grid, plan, cells).plan.tile_hw, budget) and cells != (1, 1):
        cells = (max(1, cells[0] * 7 // 8), max(1, cells[1] * 7 // 8))
    return cells


def pieces_note(model, plan: TilePlan, piece_cells: tuple[int, int] | None, budget: int) -> str | None:
    """What a resumed run says where it computes the stopped run's tiles in pieces."""
    if piece_cells is None:
        return None
    grid = as_grid(model)
    (th, tw), (ph, pw) = plan.tile_hw, in_pieces(grid, plan, piece_cells).plan.tile_hw
    return (f"the stopped run's tiles of up to {th}x{tw} pixels need {format_size(tile_bytes(grid, plan.tile_hw))}, "
            f"over the {format_size(budget)} a tile may take here (it was begun with more memory): each is "
            f"computed in pieces of up to {ph}x{pw} pixels, and its tiles done are kept")


def tile_block(grid, source: Source, tile: Tile, device: str, transform: Callable[[np.ndarray], np.ndarray] | None,
               damaged: "DamagedCells | None" = None) -> np.ndarray:
    """One tile's cells of the map: its box read, run, cut to its own cells, transformed
    (a box that meets undecodable pixels, with `damaged`: `_around_damage`)."""
    from graphconv.sources import DamagedPixels

    try:
        x = read_box(source, tile.box, grid.model.crop_shape[0])
    except DamagedPixels as err:
        if damaged is None:
            raise
        return _around_damage(grid, source, tile, device, transform, damaged, err)
    full = grid.run(x, device)
    block = _cells_of(full, tile, grid.field)
    return block if transform is None else transform(block)


class DamagedCells:
    """What --skip-damaged left out of a map: the TIFF tiles or strips that could not be
    decoded (`sources.DamagedPixels.chunk`) and the cells whose crops reach them."""

    def __init__(self) -> None:
        self.chunks: set[str] = set()
        self.cells = 0

    def add(self, other: "DamagedCells") -> None:
        """`other`'s too (a worker's, sent back with its block)."""
        self.chunks |= other.chunks
        self.cells += other.cells

    def describe(self) -> str:
        listed = "; ".join(sorted(self.chunks)[:3]) + ("; ..." if len(self.chunks) > 3 else "")
        return (f"{counted(self.cells, 'cell')} of the map left out (not computed), their crops reaching "
                f"{counted(len(self.chunks), 'TIFF tile or strip', 'TIFF tiles or strips')} that cannot be "
                f"decoded: {listed}")


def _around_damage(grid, source: Source, tile: Tile, device: str, transform, damaged: DamagedCells,
                   err) -> np.ndarray:
    """A tile whose box meets pixels the file cannot give (`err`), computed in halves,
    each a tile of its own cells read on its own box, down to single cells: a cell whose
    crop reaches the damage is left out (`background.fill_value`: NaN in a score map),
    every other one is what the whole image's map has there, as any tile's are. A slide
    with one damaged tile could not be mapped at all."""
    reaching = _cells_reaching(grid, tile, err.box) if err.box is not None and err.reader == id(source) else None
    if reaching is not None:
        return _around_cells(grid, source, tile, device, transform, damaged, err, reaching)
    rows, cols = tile.rows[1] - tile.rows[0], tile.cols[1] - tile.cols[0]
    if rows == cols == 1:
        damaged.chunks.add(err.chunk)
        damaged.cells += 1
        return _left_out_cell(grid, source, transform)
    axis = 0 if rows >= cols else 1
    start, stop = (tile.rows, tile.cols)[axis]
    middle = (start + stop) // 2
    halves = []
    for part in ((start, middle), (middle, stop)):
        cells = (part, tile.cols) if axis == 0 else (tile.rows, part)
        half = _tile_of_cells(grid, *cells, (source.height, source.width))
        halves.append(tile_block(grid, source, half, device, transform, damaged))
    return np.concatenate(halves, axis=2 + axis)


def _cells_reaching(grid, tile: Tile, box: tuple[int, int, int, int]) -> tuple[tuple[int, int], ...] | None:
    """The tile's cells whose crops (`Grid.cell_area`) reach the pixels `box` (top, left,
    bottom, right) of the image: a (rows, cols) rectangle of them, or None where none does."""
    area, spans = grid.cell_area, []
    for axis, (first, stop) in enumerate((tile.rows, tile.cols)):
        starts = area.starts(axis, first, stop)
        hit = np.nonzero((starts < box[axis + 2]) & (starts + area.size[axis] > box[axis]))[0]
        if not len(hit):
            return None
        spans.append((first + int(hit[0]), first + int(hit[-1]) + 1))
    return tuple(spans)


def _around_cells(grid, source: Source, tile: Tile, device: str, transform, damaged: DamagedCells, err,
                  reaching: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    """`_around_damage` where the file says which pixels the damaged tile or strip holds,
    in the coordinates of the image read: the cells whose crops reach them (`reaching`)
    left out at once, the tile's other cells computed as up to four tiles around them.
    Halving alone found each left-out cell by a read of its own: a TIFF that lost its
    last third took 3 minutes for 3000x3000 pixels."""
    from graphconv.sources import parts_around

    (a, b), (c, d) = reaching
    damaged.chunks.add(err.chunk)
    damaged.cells += (b - a) * (d - c)
    filler = _left_out_cell(grid, source, transform)
    (r0, r1), (c0, c1) = tile.rows, tile.cols
    block = np.empty((*filler.shape[:2], r1 - r0, c1 - c0), filler.dtype)
    block[:, :, a - r0:b - r0, c - c0:d - c0] = filler
    for top, left, bottom, right in parts_around((r0, c0, r1, c1), (a, c, b, d)):
        part = _tile_of_cells(grid, (top, bottom), (left, right), (source.height, source.width))
        block[:, :, top - r0:bottom - r0, left - c0:right - c0] = tile_block(grid, source, part, device, transform,
                                                                             damaged)
    return block


def _tile_of_cells(grid, rows: tuple[int, int], cols: tuple[int, int], image_hw: tuple[int, int]) -> Tile:
    """A tile of these cells of the map, on the box they need (`_box`; a padded image's)."""
    image_hw = grid.padded_hw(tuple(image_hw)) or tuple(image_hw)
    return Tile(rows, cols, _box(grid.field, grid.align, rows, cols, image_hw, grid.stitch, grid.sizes))


def _left_out_cell(grid, source: Source, transform) -> np.ndarray:
    """A (N, K, 1, 1) block of the map as written, of `background.fill_value`: K and the
    type a transform gives (argmax: one channel of classes) found on a block of zeros."""
    from graphconv.background import fill_value

    images = getattr(source, "images", 1)
    probe = np.zeros((images, grid.model.output_channels, 1, 1), np.float32)
    probe = probe if transform is None else transform(probe)
    return np.full(probe.shape, fill_value(probe.dtype), probe.dtype)


def write_block(out: Any, tile: Tile, block, progress: Callable[[Tile], None] | None = None) -> None:
    """A tile's cells (a block, or one value: `background.fill_value`) into the map `out`."""
    out[:, :, tile.rows[0]:tile.rows[1], tile.cols[0]:tile.cols[1]] = block
    if progress is not None:
        progress(tile)


def _cells_of(full: np.ndarray, tile: Tile, field: Field) -> np.ndarray:
    """The tile's own cells of the map it computed: its box starts `box / stride` cells
    into the whole image's map (a whole number: boxes start on the alignment)."""
    first_row = int(Fraction(tile.box[0]) / Fraction(field.stride[0]))
    first_col = int(Fraction(tile.box[1]) / Fraction(field.stride[1]))
    r0, r1 = tile.rows[0] - first_row, tile.rows[1] - first_row
    c0, c1 = tile.cols[0] - first_col, tile.cols[1] - first_col
    if r1 > full.shape[2] or c1 > full.shape[3] or r0 < 0 or c0 < 0:
        raise AssertionError(f"tile {tile} computed a {full.shape[2]}x{full.shape[3]} map, too small for "
                             f"its cells: the tile plan is wrong")
    return full[:, :, r0:r1, c0:c1]


def check_out(out: Any, shape: tuple, *, float_scores: bool) -> None:
    """Refuse, before a tile is computed, an `out` that cannot hold the map: its shape is
    not (N, K, rows, cols) of the planned map (`shape`; K None when a transform decides
    it), it is read-only (refused here: writing found it only after the first tile's
    work), or scores would be written into integers (truncated; a transform's integer classes, `--reduce argmax`, go into
    any integer type). A float16 one is warned of: a map stored small on purpose, but
    no longer the network's numbers."""
    held = getattr(out, "shape", None)
    dtype = getattr(out, "dtype", None)
    if held is None or dtype is None:
        raise GraphconvError(f"out= is where the map is written: a numpy array, np.memmap or zarr array, not "
                             f"{type(out).__name__}")
    if len(held) != 4 or any(want is not None and int(have) != want for have, want in zip(held, shape)):
        want = "(" + ", ".join("K" if v is None else str(v) for v in shape) + ")"
        raise GraphconvError(f"out= has shape {tuple(held)}, but the map is {want} (images, channels, rows, "
                             "columns)")
    flags = getattr(out, "flags", None)
    if getattr(out, "read_only", False) or (flags is not None and not getattr(flags, "writeable", True)):
        raise GraphconvError("out= is read-only (a zarr array opened with mode='r', np.memmap with mode='r', or a "
                             "numpy array not writeable): give one opened for writing")
    if float_scores and not np.issubdtype(np.dtype(dtype), np.floating):
        raise GraphconvError(f"out= is {np.dtype(dtype)}, but the map holds scores: give a floating-point out "
                             "(float32), or they would be truncated")
    if float_scores and np.dtype(dtype).itemsize < 4:
        narrow = np.finfo(dtype)
        warn_caller(f"out= is {np.dtype(dtype)}: each score is kept to about {narrow.precision} significant digits "
                    f"(and one beyond {narrow.max:g} becomes inf), not as the network computed it; float32 keeps it")


def _check_tiles_fit(grid, plan: TilePlan, images: int, out: Any) -> None:
    """Refuse, before any tile runs, tiles whose run is over the memory limit, or a map
    held in memory (out=None) that with one tile's run is (`Model.run`'s check, per tile:
    a whole-image run refused for memory pointed at run_tiled, which then ran tiles of
    any size)."""
    from graphconv.memory import check_fits, memory_limit

    th, tw = plan.tile_hw
    peak = grid.peak_bytes(plan.tile_hw)
    if peak > memory_limit():
        check_fits(peak, f"a tile of {th}x{tw} pixels",
                   hint=f"a smaller tile: {fitting_tile(grid, plan.image_hw, images, map_held=out is None)}")
    if out is None:
        held = FLOAT_BYTES * images * grid.model.output_channels * plan.map_hw[0] * plan.map_hw[1]
        check_fits(peak + held, f"the {plan.map_hw[0]}x{plan.map_hw[1]} map held in memory (out=None) beside a "
                                f"tile's run", hint="pass out= a np.memmap or zarr array to write it to")


def held_map_bytes(model, image_hw: tuple[int, int], images: int = 1) -> int:
    """Bytes of the float32 map of `images` images of `image_hw` held in memory (run_tiled
    with out=None; a padded segmentation image's map as computed, before it is cut back).
    `model` may be a grid."""
    grid = as_grid(model)
    rows, cols = _held_map_hw(grid, image_hw)
    return FLOAT_BYTES * images * grid.model.output_channels * rows * cols


def _held_map_hw(grid, image_hw: tuple[int, int]) -> tuple[int, int]:
    return grid.map_hw(grid.padded_hw(tuple(image_hw)) or tuple(image_hw))


def fitting_tile(model, image_hw: tuple[int, int], images: int = 1, *, map_held: bool = True) -> str:
    """'tile=400 fits': the tile `run_tiled` takes under the memory limit, beside the map
    it holds in memory where `map_held` (out=None; `run`'s hint suggested the tile that
    fit alone, which run_tiled then refused beside its map), or why none does."""
    from graphconv.memory import memory_limit

    budget, held = memory_limit(), held_map_bytes(model, image_hw, images) if map_held else 0
    if held >= budget:
        rows, cols = _held_map_hw(as_grid(model), image_hw)
        return (f"its {rows}x{cols} map alone takes {format_size(held)} in memory: pass out= a np.memmap or zarr "
                f"array to write it to")
    try:
        tile = choose_tile(model, image_hw, budget - held)
    except GraphconvError as err:
        return err.message
    return f"tile={tile} fits" + (" beside the map it holds in memory (out=None)" if held else "")


def read_box(source: Source, box: tuple[int, int, int, int], channels: int) -> np.ndarray:
    """The source's pixels in `box`, as a (N, C, h, w) float32 batch checked as `Model.run`
    checks its input (`model.as_batch`): a reader's block of another size, type or
    channel count is refused, naming the box it was asked for. A box past the image's
    bottom or right (a padded image's, `Model.padded_hw`) gets zeros there."""
    from graphconv.model import as_batch, padded_batch

    top, left, bottom, right = box
    inside = (min(bottom, source.height), min(right, source.width))
    if inside != (bottom, right):
        return padded_batch(read_box(source, (top, left, *inside), channels), (bottom - top, right - left))
    x = np.asarray(source.read(top, left, bottom, right))
    hw = (bottom - top, right - left)
    if x.ndim not in (3, 4) or tuple(x.shape[-2:]) != hw:
        raise GraphconvError(f"the reader returned an array of shape {tuple(x.shape)} for the box (top, left, "
                             f"bottom, right) = {box}: it was asked for ({channels}, {hw[0]}, {hw[1]}), "
                             f"{hw[0]}x{hw[1]} pixels")
    try:
        return as_batch(x, channels)
    except GraphconvError as err:
        raise GraphconvError(f"the reader's block for the box (top, left, bottom, right) = {box}: {err.message}") \
            from None


class ArraySource:
    """An in-memory (N, C, H, W) or (C, H, W) float32 array, already preprocessed."""

    def __init__(self, array: np.ndarray):
        self.array = array if array.ndim == 4 else array[None]
        self.images, self.channels, self.height, self.width = self.array.shape

    def read(self, top: int, left: int, bottom: int, right: int) -> np.ndarray:
        return np.ascontiguousarray(self.array[:, :, top:bottom, left:right], dtype=np.float32)


def as_source(source, channels: int) -> Source:
    """A Source as it is (it must say its height and width and read boxes), or an array
    (anything numpy reads as one: a list, a CPU torch tensor) checked as `Model.run`
    checks its input (`model.as_batch`), and read a box at a time."""
    if callable(getattr(source, "read", None)):
        missing = [name for name in ("height", "width") if not isinstance(getattr(source, name, None), (int, np.integer))]
        if missing:
            raise GraphconvError(f"a reader (a source with read(top, left, bottom, right)) must say its "
                                 f"{' and '.join(missing)} in pixels, as whole numbers")
        return source
    from graphconv.model import as_batch
    return ArraySource(as_batch(source, channels, convert=False))


# ---- what a tiled run writes ------------------------------------------------------------------------

def map_transform(reduce: str | None = None, classes: Sequence[int] | None = None, num_classes: int | None = None,
                  call_cut: float | None = None) -> tuple[Callable[[np.ndarray], np.ndarray] | None, int, np.dtype]:
    """The per-tile transform that makes a huge map small, with the channel count and
    dtype it produces: `classes` keeps those score channels; `reduce="argmax"` keeps the
    winning class per cell as uint16 (one channel), NO_CALL_CLASS where its score is under
    `call_cut` (`images.argmax_cut`: a sigmoid's classes, each called on its own, where
    the best may be a 0.02) and NO_CLASS where the cell was not computed."""
    if classes is not None and num_classes is not None:
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad:
            raise GraphconvError(f"--classes {','.join(map(str, bad))}: the model has {num_classes} classes")
    index = np.asarray(classes, np.intp) if classes is not None else None
    if reduce == "argmax":
        if num_classes is not None and num_classes > 65535:
            raise GraphconvError(f"--reduce argmax writes uint16 class indices; the model has {num_classes} classes")

        def argmax(block: np.ndarray) -> np.ndarray:
            scores = block if index is None else block[:, index]
            winners = scores.argmax(axis=1)
            classes = (winners if index is None else index[winners]).astype(np.uint16)
            if call_cut is not None:
                classes[np.take_along_axis(scores, winners[:, None], axis=1)[:, 0] < call_cut] = NO_CALL_CLASS
            classes[np.isnan(scores).any(axis=1)] = NO_CLASS  # np.argmax takes a NaN for the winner
            return classes[:, None]
        return argmax, 1, np.dtype(np.uint16)
    if index is not None:
        return (lambda block: block[:, index]), len(index), np.dtype(np.float32)
    return None, num_classes or 0, np.dtype(np.float32)


def model_map_transform(model, reduce: str | None, classes: Sequence[int] | None):
    """`map_transform` of `model`'s map: its classes, and the cut under which a --reduce
    argmax cell calls no class (a sigmoid's)."""
    from graphconv.images import argmax_cut
    return map_transform(reduce, classes, model.output_channels, argmax_cut(model.graph))


@contextmanager
def _removed_if_failed_empty(partial: PartialMap, new: bool, empty_and_ours: Callable[[], bool]) -> Iterator[None]:
    """A --resume run's partial folder that this run made is removed if the run fails
    (not stopped: Ctrl-C keeps it, as it says) while holding it, before a tile is done: a
    scheduler that could not be reached left an empty one, which the next run without
    --resume stepped around and the user was left to wonder about. Not when another run
    took the folder's lock first: that run is writing into it."""
    try:
        yield
    except Exception:
        if new and empty_and_ours() and partial.exists():
            from graphconv.files import remove_temporary
            remove_temporary(partial.folder)
        raise


class MapFile:
    """A score map written tile by tile into a file that appears only when complete:
    `.npy` (memory-mapped, so it need not fit in memory), a chunked `.zarr` array
    (N, K, rows, cols), or a tiled `.tif` of K bands (georeferenced by `georeference`,
    a `graphconv.georef.GeoReference`, where given), written from a memory-mapped
    scratch copy once every tile is in. A zarr or TIFF map carries `placement` (a
    `graphconv.georef.CellPlacement`: where its cells stand on the image) where
    given. Used as a context manager: the file is renamed into place on success and
    removed on failure, so nothing is left half-written (`_write`).

    With `resume` (`run --resume`: a dict saying what the run computes, its "job", and
    `tiles`, its plan's tiles in order), the map is written into `PartialMap`'s folder
    beside the output instead, kept when the run fails or is stopped: `done` is the set
    of tiles an earlier run of the same job wrote there (another job's partial map is
    refused, saying what differs), `record(tile)` lists a tile once its block is written
    (call it after each), and the map is renamed into place once complete. A partial map
    damaged since (its .npy cut short) is refused; in a zarr one, the tiles listed as done
    whose blocks are missing or unreadable are left out of `done` (computed again) and
    kept in `damaged`; `blank` names the tiles written as not computed alone (no block of
    theirs need be stored: zarr stores no chunk of fill values). `unchanged` is called
    just before the map is renamed into place, and may refuse it (`files.replacing_checked`:
    another batch wrote that name meanwhile). A partial map another run is writing now is
    refused (`files.HeldByAnotherRun`), or with `waiting` waited for
    (`files.held_exclusively`)."""

    def __init__(self, path: str, shape: tuple[int, ...], dtype: np.dtype, chunk_hw: tuple[int, int],
                 georeference=None, placement=None, resume: dict | None = None, tiles: Sequence[Tile] = (),
                 blank: Collection[Tile] = (), unchanged: Callable[[], None] | None = None,
                 waiting: Callable[[], None] | None = None):
        from graphconv.files import check_writable
        from graphconv.georef import is_tiff_output
        self.path, self.shape, self.dtype, self.chunk_hw = str(path), tuple(shape), np.dtype(dtype), chunk_hw
        self.georeference, self.placement, self.unchanged, self.waiting = georeference, placement, unchanged, waiting
        self.is_zarr = is_zarr_path(self.path)
        self.is_tiff = is_tiff_output(self.path)
        if self.is_zarr:
            check_zarr_target(self.path)
        else:
            check_writable(self.path)
        self.array = None
        self._tmp = None
        self._writing = None
        self.partial = PartialMap(self.path) if resume is not None else None
        self.job, self.tiles = _as_json(resume), tuple(tiles)
        self.done: frozenset[Tile] = frozenset()
        self.damaged: frozenset[Tile] = frozenset()
        self.blank = frozenset(blank)
        self._index: dict[Tile, int] = {}
        self._recorded = False  # a tile listed as done by this run
        self._holding = False  # this run holds the partial folder's lock (another run may have taken it first)

    @property
    def _scratch(self) -> str:
        """Where the map is computed: the partial file itself, or a TIFF's memory-mapped copy."""
        return self._tmp + ".npy" if self.is_tiff else self._tmp

    def __enter__(self):
        self._writing = self._write() if self.partial is None else self._write_partial()
        return self._writing.__enter__()

    def __exit__(self, kind, value, traceback):
        return self._writing.__exit__(kind, value, traceback)

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """The map's life, as `graphconv.files` writes any output: the folders it needs
        made (and removed again on failure), a temporary beside it that a later run
        removes should this one be killed, the temporary renamed into place only once
        every tile is in, and whatever fails (creating it, a tile's write, the TIFF)
        leaving nothing behind; a full disk is an error naming the map."""
        from graphconv.files import (move_into_place, output_folders, remove_temporary, temporary_beside,
                                     write_errors_named)
        target = os.path.abspath(self.path.rstrip("/"))
        with output_folders(target):
            self._tmp = str(temporary_beside(target))
            try:
                with write_errors_named(self.path, self._tmp, self._scratch):
                    self.array = self._create(self._tmp if self.is_zarr else self._scratch)
                    yield self.array
                    self._finish()
                    move_into_place(self._tmp, target, self.unchanged)
            finally:
                self.array = None
                for partial in {self._tmp, self._scratch}:
                    remove_temporary(partial)

    @contextmanager
    def _write_partial(self) -> Iterator[Any]:
        """A --resume run's map: the partial folder made (or an earlier run's of the same
        job opened, held by this run alone), kept whatever happens, and once every tile is
        in, its map finished (a TIFF written from the scores) and renamed into place, and
        the folder renamed to a temporary, with signals held back between the two renames:
        a Ctrl-C after the first left the folder without its map, which a later --resume
        took for a new job and computed whole again. The folder and any old map the new
        one replaced are removed after, with signals not held back (a map of many GB takes
        long: a job scheduler's SIGTERM kept waiting is followed by its SIGKILL)."""
        from graphconv.files import (as_temporary, held_exclusively, output_folders, put_in_place,
                                     remove_temporary, replacing_checked, signals_deferred, write_errors_named)
        target = os.path.abspath(self.path.rstrip("/"))
        partial = self.partial
        new = not partial.exists()
        with output_folders(target), write_errors_named(self.path, partial.folder), \
                _removed_if_failed_empty(partial, new, lambda: self._holding and not self._recorded):
            partial.make_or_check(self.job, self._create)
            with held_exclusively(partial.folder, partial.shown, self.waiting):
                self._holding = True
                partial.check(self.job)  # again, now that no other run can change it
                self._index = {tile: i for i, tile in enumerate(self.tiles)}
                self.done = partial.done(self.tiles)
                self._tmp = os.path.join(partial.folder, "map.tif" if self.is_tiff else partial.map_name)
                self.array = self._reopen(partial.map_path)
                self.damaged = self._damaged_blocks(self.done)
                self.done -= self.damaged
                try:
                    yield self.array
                    self._finish()
                    with replacing_checked(os.path.dirname(target), self.unchanged), signals_deferred():
                        replaced = put_in_place(self._tmp, target)
                        # the lock is on the folder's descriptor, which outlives its name
                        left = as_temporary(Path(partial.folder))
                finally:
                    self.array = None
        for folder in (replaced, left):
            if folder is not None:
                remove_temporary(folder)

    def record(self, tile: Tile) -> None:
        """A --resume run: `tile`'s block is written into the map; flush it to disk, then
        list the tile in the partial folder's log (a kill at any moment leaves a log of
        tiles whose blocks are there). Nothing without --resume."""
        if self.partial is None or tile not in self._index:
            return
        self._sync_block(tile)
        self.partial.record(self._index[tile], tile, None if self.is_zarr else self._block_checksum(tile))
        self._recorded = True

    def _block_checksum(self, tile: Tile) -> int:
        """The CRC-32 of `tile`'s block of an .npy map: a bit flipped on the disk, or a
        block another program wrote over, since the tile was listed as done decoded into
        other scores silently, and the tile stayed done (a zarr map's chunks carry zstd's
        checksum: `_checksummed_codecs`)."""
        block = self.array[:, :, tile.rows[0]:tile.rows[1], tile.cols[0]:tile.cols[1]]
        return zlib.crc32(np.ascontiguousarray(block).data)

    def _sync_block(self, tile: Tile) -> None:
        """`tile`'s block on disk, not only in this machine's memory: a memory map
        flushed; a zarr map's chunks, which `chunk_hw` makes the tile's own, synced."""
        if not self.is_zarr:
            self.array.flush()
            return
        from graphconv.files import sync_file
        for path in self._chunk_files(tile) or ():  # a zarr without zarr 3's metadata: left to the system
            sync_file(path, folder_too=True)

    def _chunk_files(self, tile: Tile) -> list[str] | None:
        """The files of the zarr chunks `tile`'s block lies in (one a channel chunk where,
        as `chunk_hw` makes them, a tile's block is a chunk), or None for a zarr without
        zarr 3's metadata, which does not say how it names them."""
        chunks = self.array.chunks
        ranges = [range(start // size, -(-stop // size)) for (start, stop), size in
                  zip(((0, self.shape[0]), (0, self.shape[1]), tile.rows, tile.cols), chunks)]
        try:
            keys = [self.array.metadata.encode_chunk_key(index) for index in itertools.product(*ranges)]
        except AttributeError:
            return None
        return [os.path.join(self.partial.map_path, *key.split("/")) for key in keys]

    def _damaged_blocks(self, tiles: Collection[Tile]) -> frozenset[Tile]:
        """Of `tiles` (listed as done), those whose blocks in a zarr partial map are not
        all there and readable: a chunk file missing (but for a tile of cells not computed
        alone, whose chunk holds fill values only and is not stored), or one that does not
        decode (emptied, cut short: it would make the finished map unreadable). Each tile's
        block is read once, a tile at a time. An .npy's blocks are those whose CRC-32 is
        not the one the log lists (its size is checked as a whole: `PartialMap.check_intact`)."""
        if not tiles:
            return frozenset()
        if not self.is_zarr:
            listed = self.partial.checksums(self.tiles)
            return frozenset(tile for tile in tiles
                             if listed.get(tile) is not None and self._block_checksum(tile) != listed[tile])
        damaged = set()
        for tile in tiles:
            files = self._chunk_files(tile) or []  # a zarr without zarr 3's metadata: its blocks are only read
            if tile not in self.blank and not all(os.path.isfile(path) for path in files):
                damaged.add(tile)
                continue
            try:
                self.array[:, :, tile.rows[0]:tile.rows[1], tile.cols[0]:tile.cols[1]]
            except Exception:  # noqa: BLE001 - a codec's error for bytes that are not its chunk
                damaged.add(tile)
        return frozenset(damaged)

    def _reopen(self, path: str) -> Any:
        """The partial map made earlier, opened for writing; it must hold the map's shape and
        type, and be whole (`PartialMap.check_intact`)."""
        self.partial.check_intact(self.shape, self.dtype)
        if self.is_zarr:
            from graphconv.sources import require
            array = require("zarr").open_array(path, mode="r+")
        else:
            array = np.lib.format.open_memmap(path, mode="r+")
        if tuple(array.shape) != self.shape or np.dtype(array.dtype) != self.dtype:
            raise GraphconvError(f"holds a {np.dtype(array.dtype)} {tuple(array.shape)} map, not this run's "
                                 f"{self.dtype} {self.shape}: delete it to start over", file=self.partial.shown)
        return array

    def _create(self, path: str) -> Any:
        """The empty map at `path` (the temporary, or a new partial folder's): a zarr
        array, or a memory map whose disk blocks are reserved now (a sparse one would
        SIGBUS when a full disk refuses a tile)."""
        from graphconv.files import check_free_space, reserve_space
        if self.is_zarr:
            from graphconv.background import fill_value
            from graphconv.georef import georeference_of_placement
            from graphconv.sources import require
            zarr = require("zarr")
            chunks = (1, min(self.shape[1], 64), *self.chunk_hw)
            zarr_3 = ({"dimension_names": MAP_DIMENSIONS, "codecs": _checksummed_codecs()} if _writes_zarr_3(zarr)
                      else {})
            array = zarr.open_array(path, mode="w", shape=self.shape, chunks=chunks, dtype=self.dtype,
                                    fill_value=fill_value(self.dtype), **zarr_3)
            geo = self.georeference if self.georeference is not None else georeference_of_placement(self.placement)
            array.attrs.update(zarr_map_attributes(self.placement, geo, self.dtype))
            return array
        nbytes = math.prod(self.shape) * np.dtype(self.dtype).itemsize
        check_free_space(os.path.dirname(os.path.abspath(path)), nbytes, self.path)  # before the file is made
        try:
            array = np.lib.format.open_memmap(path, mode="w+", dtype=self.dtype, shape=self.shape)
        except (OSError, ValueError) as err:  # past the file system's largest file; mmap under `ulimit -v`
            raise GraphconvError(f"cannot make the {format_size(nbytes)} map memory-mapped: "
                                 f"{getattr(err, 'strerror', None) or err}", file=self.path) from None
        reserve_space(path, self.path)
        return array

    def _finish(self) -> None:
        """Every tile is in: flush a memory map to disk; a TIFF is written from it; a zarr
        map states how many chunks it stores (`missing_zarr_chunks`)."""
        if self.is_zarr:
            own = dict(self.array.attrs[ZARR_MAP_ATTRIBUTE])
            self.array.attrs[ZARR_MAP_ATTRIBUTE] = {**own, CHUNKS_STORED: int(self.array.nchunks_initialized)}
            return
        self.array.flush()
        if self.is_tiff:
            from graphconv.georef import write_map_tiff
            write_map_tiff(self._tmp, self.array, self.georeference, self.placement)


PARTIAL_SUFFIX = ".partial"
PARTIAL_JOB = "job.json"
PARTIAL_LOG = "tiles-done.txt"


def _partial_name(output: str) -> str:
    """`<output>.partial`; where the file system would refuse that name (a map named after
    a slide of 250 characters: the map was refused only with --resume, "File name too
    long"), the output's name cut to fit, with a digest of the whole name so that two
    outputs cut alike keep apart: `<start of the name>-<digest>.partial`."""
    from graphconv.files import name_max

    folder, name = os.path.split(output)
    limit = name_max(os.path.dirname(os.path.abspath(output)))
    if len(os.fsencode(name + PARTIAL_SUFFIX)) <= limit:
        return output + PARTIAL_SUFFIX
    digest = "-" + hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    while len(os.fsencode(name + digest + PARTIAL_SUFFIX)) > limit:
        name = name[:-1]
    return os.path.join(folder, name + digest + PARTIAL_SUFFIX)


class PartialMap:
    """`run --resume`'s map in progress: the folder `<output>.partial` beside the output
    (`_partial_name`), holding the map as it is written (`map.zarr` or `map.npy`; a .tif
    output's scores as `map.npy`, the TIFF written from them at the end), `job.json` (what
    the run computes, written before the folder appears under its name) and
    `tiles-done.txt`, one line `index rows cols` per tile, appended and synced after the
    tile's block is on disk. A line cut short by a kill, or naming no tile of the plan,
    counts for nothing."""

    def __init__(self, output: str):
        self.output = output
        self.shown = _partial_name(output.rstrip("/"))
        self.folder = os.path.abspath(self.shown)
        self.map_name = "map.zarr" if is_zarr_path(output) else "map.npy"
        self.map_path = os.path.join(self.folder, self.map_name)
        self.stale_tiles_removed: int | None = None  # tiles of an image changed since, removed (`make_or_check`)

    def exists(self) -> bool:
        return os.path.lexists(self.folder)

    def job(self) -> dict | None:
        """What the run that made the folder computes; None where it is not a partial map
        graphconv made (no readable job.json)."""
        try:
            with open(os.path.join(self.folder, PARTIAL_JOB), encoding="utf-8") as fp:
                job = json.load(fp)
        except (OSError, ValueError):
            return None
        return job if isinstance(job, dict) else None

    def make_or_check(self, job: dict, create: Callable[[str], Any]) -> None:
        """Make the folder (under a temporary name, renamed once its job and empty map are
        in, so a folder of that name always has both), or check an existing one is this
        job's. One whose map is gone was renamed into place by a run killed before it
        removed the folder: removed, and made anew."""
        from graphconv.files import remove_temporary, temporary_beside, write_synced_text
        if self.exists() and self.of_the_image_before_it_changed(job):
            tiles = self.count_done()
            if self.remove_unless_in_use():
                self.stale_tiles_removed = tiles
        if self.exists():
            self.check(job)
            if os.path.lexists(self.map_path):
                return
            self.remove()
        tmp = temporary_beside(self.folder)
        try:
            os.mkdir(tmp)
            write_synced_text(tmp / PARTIAL_JOB, json.dumps(job, indent=1) + "\n")
            array = create(str(tmp / self.map_name))
            if isinstance(array, np.memmap):
                array.flush()
            del array
            open(tmp / PARTIAL_LOG, "ab").close()
            os.rename(tmp, self.folder)
        finally:
            remove_temporary(tmp)

    def check(self, job: dict) -> None:
        """Refuse a folder that is not a partial map graphconv made, or is another job's,
        saying what differs and how to start over (or, where only the tile plan does,
        how to go on)."""
        held = self.job()
        if not os.path.isdir(self.folder) or held is None:
            raise GraphconvError("is there and is not a partial map graphconv wrote (--resume writes the map there "
                                 "until it is complete): delete it or choose another --output", file=self.shown)
        differences = job_differences(held, job)
        if not differences:
            return
        start_over = f"delete it to start over (rm -r {shlex.quote(self.shown)})"
        job = _as_json(job)
        if [key for key in {*held, *job} if held.get(key) != job.get(key)] == ["tile plan"]:
            start_over = (f"leave out --tile to go on from its {counted(self.count_done(), 'tile')} done (--resume "
                          f"without --tile takes the partial map's tiles), or {start_over}")
        raise GraphconvError(f"is the partial map of another run ({'; '.join(differences)}): --resume continues "
                             f"only the same run; {start_over}", file=self.shown)

    def stale_tiles_note(self, image: str) -> str | None:
        """What became of a stopped --resume run's partial map of `image` as it was before
        its file changed (`of_the_image_before_it_changed`), where there was one."""
        if self.stale_tiles_removed is None:
            return None
        return (f"{self.shown} held {counted(self.stale_tiles_removed, 'tile')} a stopped --resume run computed of "
                f"{image} before the file changed (its size, time or inode differ): removed, as no run can go on "
                "from them, and the map computed from the start")

    def of_the_image_before_it_changed(self, job: dict) -> bool:
        """Whether the folder is a partial map of this job's image path whose file has
        changed since (rescanned, rewritten, copied over): its tiles are of the image as
        it was, which no run can go on from (`make_or_check` removes it, and says so
        through `stale_tiles_removed`; the user had to `rm -r` it by hand)."""
        held = self.job()
        return (held is not None and held.get("image") == job.get("image")
                and held.get("image file") != _as_json(job).get("image file"))

    def check_intact(self, shape: tuple[int, ...], dtype) -> None:
        """Refuse a partial map whose map file cannot be this run's as it stands: an .npy
        (a .tif output's scores too) whose header is not the map's shape and type or whose
        size is not what that header needs (cut short: a memory map would silently extend
        it with zeros, and the tiles listed as done would keep them), a zarr array that
        cannot be opened or is of another shape or type. Nothing where there is no map yet
        (`make_or_check` makes it). A zarr map's blocks are checked tile by tile when it is
        opened (`MapFile`), and the damaged ones computed again."""
        if not os.path.lexists(self.map_path):
            return
        damage = (_npy_damage(self.map_path, tuple(shape), np.dtype(dtype)) if self.map_name == "map.npy"
                  else _zarr_damage(self.map_path, tuple(shape), np.dtype(dtype)))
        if damage:
            raise GraphconvError(f"the partial map is damaged ({damage}): remove it to start again "
                                 f"(rm -r {shlex.quote(self.shown)})", file=self.shown)

    def done(self, tiles: Sequence[Tile]) -> frozenset[Tile]:
        """The tiles of `tiles` (the plan's, in order) the log lists as written."""
        return frozenset(self.checksums(tiles))

    def checksums(self, tiles: Sequence[Tile]) -> dict[Tile, int | None]:
        """The tiles of `tiles` the log lists as written, each with the CRC-32 of its
        block as written (an .npy map's; None for a zarr's, whose chunks carry zstd's, and
        in a log of an earlier version). A tile listed again (computed again) counts by
        its last line."""
        try:
            with open(os.path.join(self.folder, PARTIAL_LOG), encoding="utf-8", errors="replace") as fp:
                text = fp.read()
        except OSError:
            return {}
        written: dict[Tile, int | None] = {}
        for line in text.split("\n")[:-1]:  # the part after the last newline was cut short
            fields = line.split()
            try:
                index, r0, r1, c0, c1 = (int(v) for v in fields[:5])
                checksum = int(fields[5], 16) if len(fields) == 6 else None
            except ValueError:
                continue
            if len(fields) in (5, 6) and 0 <= index < len(tiles) and tiles[index].rows == (r0, r1) \
                    and tiles[index].cols == (c0, c1):
                written[tiles[index]] = checksum
        return written

    def count_done(self) -> int:
        """How many tiles the log lists (for a note; `done` checks them against a plan)."""
        try:
            with open(os.path.join(self.folder, PARTIAL_LOG), "rb") as fp:
                return len({line.split(b" ", 1)[0] for line in fp.read().split(b"\n")[:-1] if line.strip()})
        except OSError:
            return 0

    def record(self, index: int, tile: Tile, checksum: int | None = None) -> None:
        from graphconv.files import append_synced
        summed = f" {checksum:08x}" if checksum is not None else ""
        append_synced(os.path.join(self.folder, PARTIAL_LOG),
                      f"{index} {tile.rows[0]} {tile.rows[1]} {tile.cols[0]} {tile.cols[1]}{summed}\n")

    def remove(self) -> None:
        from graphconv.files import remove_temporary
        remove_temporary(self.folder)

    def remove_unless_in_use(self) -> bool:
        """Remove the folder unless a --resume run is writing it now (its lock held):
        whether it was removed."""
        from graphconv.files import held_exclusively
        try:
            with held_exclusively(self.folder, self.shown):
                self.remove()
        except (GraphconvError, OSError):
            return False
        return True


def stopped_partial_map(output: str, job: dict | None) -> tuple[PartialMap | None, list[str]]:
    """A stopped --resume run's partial map beside `output`, which a run without --resume
    is about to write whole: (it, []) where it is of this same `job`, to be removed once
    the whole map is written over it (left behind, it was stale, and a later --resume
    refused it once the image changed); (None, how the two jobs differ) where it is
    another's, to be left as it is; (None, []) where there is none. `job` None: this run
    computes the image whole, in no tiles, which a --resume run never does."""
    partial = PartialMap(output)
    held = partial.job() if partial.exists() else None
    if held is None:
        return None, []
    differences = job_differences(held, job) if job is not None else ["this run computes the image whole"]
    return (None, differences) if differences else (partial, [])


def _npy_damage(path: str, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    """What is wrong with the .npy at `path` as a (shape, dtype) map, or None."""
    name = os.path.basename(path)
    try:
        with open(path, "rb") as fp:
            version = np.lib.format.read_magic(fp)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            held_shape, fortran, held_dtype = read_header(fp)
            start, size = fp.tell(), os.fstat(fp.fileno()).st_size
    except OSError as err:
        return f"its {name} cannot be read: {err.strerror or err}"
    except ValueError:
        return f"its {name} has no readable .npy header"
    if tuple(held_shape) != shape or np.dtype(held_dtype) != dtype or fortran:
        return f"its {name} holds a {np.dtype(held_dtype)} {tuple(held_shape)} map, not this run's {dtype} {shape}"
    whole = start + int(np.prod(shape)) * dtype.itemsize
    if size != whole:
        return f"its {name} is {size} bytes, {whole} when whole"
    return None


def _zarr_damage(path: str, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    """What is wrong with the zarr array at `path` as a (shape, dtype) map, or None."""
    from graphconv.sources import require
    try:
        array = require("zarr").open_array(path, mode="r")
    except Exception as err:  # noqa: BLE001 - whatever the store holds instead of an array's metadata
        return f"its {os.path.basename(path)} cannot be opened as a zarr array: {type(err).__name__}"
    if tuple(array.shape) != shape or np.dtype(array.dtype) != dtype:
        return (f"its {os.path.basename(path)} holds a {np.dtype(array.dtype)} {tuple(array.shape)} map, not this "
                f"run's {dtype} {shape}")
    return None


def _as_json(job: dict | None) -> dict | None:
    """`job` as json.load gives it back (tuples as lists), so a stored job compares equal."""
    return None if job is None else json.loads(json.dumps(job))


def job_differences(held: dict, job: dict) -> list[str]:
    """What differs between a partial map's job (as json.load gives it back) and this
    run's, one phrase each ("--classes 2,7 there, 3 here"; "model file w.npz changed")."""
    job = _as_json(job)
    def shown(value) -> str:
        if value is None:
            return "not given"
        if isinstance(value, list):
            return ",".join(map(str, value))
        return str(value)

    differences = []
    for key in dict.fromkeys([*held, *job]):
        old, new = held.get(key), job.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):  # files: name -> their file_stamp or sha256
            owner = key.removesuffix(" files").removesuffix(" file")  # "model files": the model's
            if held.get(owner) != job.get(owner):
                continue  # another model or image altogether, said once, not as every file of both
            changed = [name for name in dict.fromkeys([*old, *new]) if old.get(name) != new.get(name)]
            differences.append(f"{key} changed since: {', '.join(os.path.basename(n) for n in changed)}")
        else:
            differences.append(f"{key} {shown(old)} there, {shown(new)} here")
    return differences


WHOLE_IMAGE_PLAN = "the whole image in one pass"  # a map's "tile_plan" when it was not tiled


def recorded_plan(plan: TilePlan, tile: int | Sequence[int]) -> str:
    """A tiled map's "tile_plan": its tiles, and the `--tile` that plans them again, the
    one asked for or chosen for the memory budget. The largest box a tile reads does not
    (`--tile 1024` planned tiles of up to 992 pixels, whose `--tile 992` made fewer cells
    a tile: other tiles, other bits)."""
    height, width = checked_tile(tile)
    again = f"--tile {height}" if height == width else f"tiles of {height}x{width} pixels asked for"
    return f"{plan.as_recorded()} ({again} plans them again)"

ZARR_MAP_ATTRIBUTE = "graphconv"
"""The attribute every zarr map carries: who wrote it (so a later run may replace it,
`cluster.is_a_map_graphconv_wrote`) and, where known, where its cells stand."""


MAP_DIMENSIONS = ["image", "class", "y", "x"]
"""A map's axes, (N, K, rows, cols), named as xarray reads a zarr array's
(`_ARRAY_DIMENSIONS`, zarr 3's dimension_names): one image per index of the first, one
channel per class (a `--reduce argmax` map's one: the class), then the cells' rows and
columns."""


def zarr_map_attribute(placement) -> dict:
    from graphconv import __version__

    return {"written_by": f"graphconv {__version__}", **(placement.as_dict() if placement is not None else {})}


CHUNKS_STORED = "chunks_stored"  # in a zarr map's own attribute: the chunks it was written with


def missing_zarr_chunks(array) -> tuple[int, int]:
    """(chunks missing, chunks the map was written with) of a zarr map graphconv wrote:
    zarr reads a chunk not there as the fill value, for a map NaN, not computed, so a map
    copied in part was read as fewer cells without a word (a review: `cells` said "160052
    of 160052 computed cells" of a map that had 174936). (0, 0) for a map that does not
    say (written before it did)."""
    stated = dict(array.attrs.get(ZARR_MAP_ATTRIBUTE) or {}).get(CHUNKS_STORED)
    if not isinstance(stated, int):
        return 0, 0
    return max(0, stated - int(array.nchunks_initialized)), stated


def zarr_map_attributes(placement, geo, dtype) -> dict:
    """Every attribute of a zarr map: graphconv's own (`zarr_map_attribute`: who wrote
    it, where its cells stand and what they hold, its no-data value and its
    georeference, `GeoReference.as_dict`), and the attributes xarray, rioxarray, GDAL
    and GeoZarr conventions name for these (written to those conventions, but not checked
    against those readers, none of which is a dependency: a reader may look for some on a
    grid-mapping variable or in a group rather than on the array): the axes' names (`_ARRAY_DIMENSIONS`), the no-data value
    (`_FillValue`, as xarray writes it: a float's the base64 of its little-endian double;
    the array's fill_value is the same, so a chunk never written reads as not
    computed), the CRS (GDAL's `_CRS`, GeoZarr's `proj:code`, where the GeoKeys give an
    EPSG code) and the cells' affine transform (`GeoTransform` in GDAL's order, as CF's
    spatial_ref holds it, and GeoZarr's `spatial:transform` in rasterio's: a, b, c, d,
    e, f with x = a col + b row + c), of pixel corners whatever the image's raster type.
    A map of ground control points states them in `graphconv.georeference` alone."""
    import base64

    from graphconv.background import fill_value

    nodata = fill_value(np.dtype(dtype))
    own = zarr_map_attribute(placement)
    own["nodata"] = "NaN" if isinstance(nodata, float) else int(nodata)
    attributes = {"_ARRAY_DIMENSIONS": MAP_DIMENSIONS,
                  "_FillValue": base64.b64encode(np.array(nodata, "<f8").tobytes()).decode()
                  if isinstance(nodata, float) else int(nodata)}
    if geo is not None:
        own["georeference"] = geo.as_dict()
        if geo.epsg:
            attributes["_CRS"] = {"url": f"{EPSG_URL}{geo.epsg}"}
            attributes["proj:code"] = f"EPSG:{geo.epsg}"
        transform = geo.geotransform()
        if transform is not None:
            x0, a, b, y0, c, d = transform
            attributes["GeoTransform"] = " ".join(repr(v) for v in transform)
            attributes["spatial:dimensions"] = ["y", "x"]
            attributes["spatial:transform"] = [a, b, x0, c, d, y0]
            attributes["spatial:registration"] = "pixel"
    return {ZARR_MAP_ATTRIBUTE: own, **attributes}


def _checksummed_codecs() -> list:
    """zarr 3's default codecs for a map (bytes, then zstd), with zstd's checksum of each
    chunk on: a bit flipped on disk made a chunk decode into other scores without a word
    (a resumed partial map kept the tile as done), where the checksum fails its read. Any
    zstd reader checks it, or reads past it (4 bytes a chunk)."""
    from zarr.codecs import BytesCodec, ZstdCodec
    return [BytesCodec(), ZstdCodec(level=0, checksum=True)]


def _writes_zarr_3(zarr) -> bool:
    """Whether `zarr.open_array` makes a zarr 3 array here, which names its axes itself."""
    try:
        return int(zarr.__version__.split(".")[0]) >= 3 and int(zarr.config.get("default_zarr_format", 3)) == 3
    except (AttributeError, ValueError, TypeError):
        return False


def check_zarr_target(path: str) -> None:
    """A .zarr output replaces only a zarr array: never a file, nor a folder holding
    anything else (the user's data), nor a zarr group."""
    from graphconv.files import check_writable

    target = path.rstrip("/")
    if os.path.isdir(target):
        entries = set(os.listdir(target))
        is_array = ".zarray" in entries or ("zarr.json" in entries and _zarr_v3_array(target))
        if entries and not is_array:
            raise GraphconvError("is a folder that is not a zarr array; graphconv replaces only a zarr "
                                 "array (choose a new name)", file=path)
    elif os.path.exists(target):
        raise GraphconvError("exists and is not a folder; a .zarr output is a folder", file=path)
    check_writable(os.path.join(os.path.dirname(os.path.abspath(target)), "probe.npy"), shown=path)


def _zarr_v3_array(folder: str) -> bool:
    import json
    try:
        with open(os.path.join(folder, "zarr.json")) as fp:
            return json.load(fp).get("node_type") == "array"
    except (OSError, ValueError):
        return False


def choose_tile(model, image_hw: tuple[int, int], budget: int) -> int:
    """The largest square tile, on the alignment grid, whose run fits the memory budget
    (`tile_bytes`: the run, weights included, and the box's pixels as read): what a run
    without --tile uses when the whole image would not fit. `model` may be a grid.

    It used to fit half the budget, "the rest for the weights, the image and the map",
    though the run's estimate holds the weights already and a tiled run reads the image
    a box at a time: AlexNet over a 2048x2048 TIFF under a 700 MB limit, which the whole
    image fits, ran in 400 tiles of 449 pixels (18x the pixels, 38 s against 7.5 s in 4),
    and VGG-16 there was refused under 1.5 GB."""
    grid = as_grid(model)
    image_hw = grid.padded_hw(tuple(image_hw)) or image_hw  # what its tiles read
    if isinstance(grid, DenseGrid) and grid.whole_image_only:
        return _whole_image_tile(grid, image_hw, budget)
    align = max(grid.align)
    low = max(grid.smallest_tile())
    high = max(low, grid.largest_useful_tile(image_hw))

    def fits(tile: int) -> bool:
        return tile_fits(grid, _largest_box(grid, image_hw, tile), budget)

    if not fits(low):
        need = tile_bytes(grid, _largest_box(grid, image_hw, low))
        raise GraphconvError(f"even the smallest tile ({low}x{low}) needs {format_size(need)}, over the "
                             f"{format_size(budget)} a tile may take")
    if fits(high):
        return high
    while high - low > align:
        mid = (low + high) // 2
        if fits(mid):
            low = mid
        else:
            high = mid
    return low


def balanced_tile(model, image_hw: tuple[int, int], tile: int | Sequence[int]) -> int | tuple[int, int]:
    """`tile`'s plan, as many tiles along each axis, each holding as even a share of the
    map's cells as they allow: the budget's largest tile left a sliver (an 8000-pixel
    slide in 3x3 tiles of 4080, the last 208 pixels wide), which reads its halo for a
    few cells and, as the largest tiles hold the most, sets the peak memory. `model` may
    be a grid."""
    grid = as_grid(model)
    if isinstance(grid, DenseGrid) and grid.whole_image_only:
        return tile
    plan = plan_tiles(grid, image_hw, tile)
    pieces = [len({(t.rows, t.cols)[a] for t in plan.tiles}) for a in (0, 1)]
    even = tile_for_cells(grid, image_hw, tuple(-(-plan.map_hw[a] // pieces[a]) for a in (0, 1)))
    return even if len(plan_tiles(grid, image_hw, even).tiles) == len(plan.tiles) else tile


def spread_tile(model, image_hw: tuple[int, int], tile: int | Sequence[int], parts: int) -> int | tuple[int, int]:
    """`tile` (the budget's, `choose_tile`'s), or smaller tiles where it gives fewer than
    `parts` workers running at once a tile each, if that ends sooner: a slide the budget
    fits in one tile ran on one of two --workers while the other idled. The tiles split
    each axis into at least as many pieces as `tile` does (so each still fits the budget),
    as many as make the fewest rounds of the largest box: a square image for 3 workers is
    cut in 3 strips, not 4 squares of which one waits for a second round. `model` may be
    a grid."""
    grid = as_grid(model)
    planned = plan_tiles(grid, image_hw, tile)
    if parts <= len(planned.tiles) or (isinstance(grid, DenseGrid) and grid.whole_image_only):
        return tile

    def rounds_by_box(plan: TilePlan) -> int:
        return -(-len(plan.tiles) // parts) * math.prod(plan.tile_hw)

    pieces_now = tuple(len({(t.rows, t.cols)[a] for t in planned.tiles}) for a in (0, 1))
    best_tile, best_cost = tile, rounds_by_box(planned)
    tried = set()
    for down in range(pieces_now[0], parts + 1):
        across = max(pieces_now[1], -(-parts // down))
        if across in tried:  # more pieces down for as many across: more tiles, no sooner
            continue
        tried.add(across)
        sides = tile_for_cells(grid, image_hw, (-(-planned.map_hw[0] // down), -(-planned.map_hw[1] // across)))
        plan = plan_tiles(grid, image_hw, sides)
        if rounds_by_box(plan) < best_cost:
            best_tile, best_cost = sides, rounds_by_box(plan)
    return best_tile


def tile_for_cells(model, image_hw: tuple[int, int], cells_hw: tuple[int, int]) -> tuple[int, int]:
    """The smallest tile whose tiles hold `cells_hw` cells of the map each (the whole axis
    where the map has fewer): the tile that plans a recorded plan's tiles again, which a
    --resume run must find. Its largest box does not: tiles at the image's border read
    less, so where every tile meets one (2x2 tiles of a padded network) planning again
    from the box gave smaller tiles, and the stopped run's tiles done were not this run's.
    `model` may be a grid."""
    grid = as_grid(model)
    reach = grid.padded_hw(tuple(image_hw)) or tuple(image_hw)
    sides = [max(reach[0], grid.smallest_tile()[0]), max(reach[1], grid.smallest_tile()[1])]
    for axis in (0, 1):
        def cells_along(side: int) -> int:
            trial = list(sides)
            trial[axis] = side
            return plan_tiles(grid, image_hw, tuple(trial)).cells_hw[axis]

        low, high = grid.smallest_tile()[axis], sides[axis]
        if cells_along(low) >= cells_hw[axis]:
            sides[axis] = low
            continue
        while high - low > 1:  # cells_along(low) < wanted <= cells_along(high)
            mid = (low + high) // 2
            low, high = (low, mid) if cells_along(mid) >= cells_hw[axis] else (mid, high)
        sides[axis] = high
    return sides[0], sides[1]


def _whole_image_tile(grid: DenseGrid, image_hw: tuple[int, int], budget: int) -> int:
    """The image's side, where its one tile fits the budget; else why not, naming the
    layer that makes it so, as --tile does (`_check_slides`)."""
    if not tile_fits(grid, tuple(image_hw), budget):
        need = tile_bytes(grid, tuple(image_hw))
        try:
            _check_slides(grid.model.graph)
            why = "a layer sees its whole input"
        except GraphconvError as err:
            why = f"layer {shown(str(err.layer))}: {err.message.split(', so ')[0]}" if err.layer else err.message
        raise GraphconvError(f"{grid.model.graph.name} needs the whole {image_hw[0]}x{image_hw[1]} image in one "
                             f"pass ({why}), which needs {format_size(need)}, over the "
                             f"{format_size(budget)} a tile may take: raise --memory-limit, or run a smaller image")
    return max(image_hw)


def budget_beside(source, budget: int) -> int:
    """What tiles may take of `budget` beside what `source` keeps between reads outside
    any tile (`held_bytes`: a TIFF's decoded chunks kept, up to a quarter of the budget; a
    picture decoded whole). Sized to the whole budget beside them, an 8000x8000 JPEG slide's
    tiles under --memory-limit 300M held 340 MB."""
    return max(budget - getattr(source, "held_bytes", 0), 0)


def tile_fits(grid, box_hw: tuple[int, int], budget: int) -> bool:
    """Whether a tile's run on a box of `box_hw` input pixels fits the memory budget."""
    return tile_bytes(grid, box_hw) <= budget


def tile_bytes(grid, box_hw: tuple[int, int]) -> int:
    """What a tile on a box of `box_hw` input pixels holds at its peak: its run
    (`peak_bytes`: weights, input, activations, scratch, its map) and the box as the
    source hands it over (decoded, then converted to float32 and preprocessed into the
    run's input: one more float copy at most)."""
    return grid.peak_bytes(box_hw) + FLOAT_BYTES * grid.model.crop_shape[0] * box_hw[0] * box_hw[1]


def _largest_box(grid, image_hw: tuple[int, int], tile: int) -> tuple[int, int]:
    """The largest input box a square tile of `tile` pixels reads, whose run is what
    memory must hold: no larger than the image (a tile past it reads only the image), and
    of a side the network's branches meet on (`_box` grows boxes to one: an estimate at
    any other size fails as the network would)."""
    sizes = grid.sizes
    if sizes is None:
        return min(image_hw[0], tile), min(image_hw[1], tile)
    return tuple(min(image_hw[a], max(sizes.next_fit(1, a), sizes.last_fit(tile, a))) for a in (0, 1))


def plan_report(model, image_hw: tuple[int, int], tile: int | Sequence[int]) -> str:
    """What `graphconv inspect --tile` prints: the plan, the FLOPs the tiles compute over
    the whole-image pass's, and the peak memory of one tile's run."""
    from graphconv.cost import total_flops
    from graphconv.memory import format_size, run_estimate

    plan = plan_tiles(model, image_hw, tile)
    sizes: dict[tuple[int, int], int] = {}
    for t in plan.tiles:
        hw = (t.box[2] - t.box[0], t.box[3] - t.box[1])
        sizes[hw] = sizes.get(hw, 0) + 1
    tiled = sum(count * total_flops(model.graph, hw) for hw, count in sizes.items())
    whole = total_flops(model.graph, tuple(image_hw))
    peak = max(run_estimate(model.graph, 1, hw) for hw in sizes)
    return "\n".join([
        f"tile plan for {image_hw[0]}x{image_hw[1]} with --tile {tile}: {plan.describe()}",
        f"  score map {plan.map_hw[0]}x{plan.map_hw[1]}; tiles compute {tiled / 1e9:.2f} GFLOP, "
        f"{tiled / whole:.2f}x the whole-image pass's {whole / 1e9:.2f}",
        f"  peak memory of one tile's run: {format_size(peak)} (the whole image: "
        f"{format_size(run_estimate(model.graph, 1, tuple(image_hw)))})",
    ])
