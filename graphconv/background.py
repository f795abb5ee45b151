"""Skip the blank glass of a slide: `graphconv run --image slide.svs --skip-background`.

Most of a whole-slide image is empty glass (or the white of a scanned page), and a
tiled run spends most of its time there for nothing. With `--skip-background` each tile
is first looked up in a tissue mask made from a small copy of the image
(`sources.thumbnail`, from a coarse pyramid level where there is one): a cell with no
tissue near its centre (in the square of one output stride around it) is written as "not computed" (NaN
in a score map, NO_CLASS in a `--reduce argmax` class map), whatever the tiling, and a
tile of such cells alone is not computed at all. Every other cell is exactly what the
whole image's pass gives.

A pixel is tissue where its colour is saturated (HSV saturation, (max - min) / max, at
least the threshold: stained tissue is coloured, glass is grey or white), or, in a grey
image, where it is darker than white by at least the threshold. This assumes a bright,
colourless background (brightfield slides, scanned pages), not fluorescence or
satellite images, so it is opt-in.

A raster with no-data (GDAL's tag: a satellite scene's pixels outside the swath; a zarr
array's `_FillValue`; NaN in a float raster) is judged by that instead, by default,
with or without --skip-background: its no-data pixels go into the network as 0 after
the preprocess (`sources.ArrayLikeSource.read_masked`), and a cell is left out when
more than `max_nodata` (`run --max-nodata`, default DEFAULT_MAX_NODATA) of its crop's
pixels are no-data. A cell whose crop and field hold no no-data pixel is exactly the
cell of a run that ignores no-data. A raster of bands that is not a picture
(`source.picture` false: a TIFF of bands not photometric RGB, a 16-bit zarr array) and
has no no-data is refused by --skip-background: its bands are no colours (a bright
cloud, equal in every band, has no saturation and was skipped as glass), and there is
nothing else to tell its blank pixels by.
"""
from __future__ import annotations

import math

import numpy as np

from graphconv.errors import GraphconvError

DEFAULT_THRESHOLD = 0.05  # HSV saturation (or darkness) of the palest tissue kept: above JPEG noise on glass
NO_CLASS = np.iinfo(np.uint16).max  # what a --reduce argmax map holds for a cell not computed
SMALLEST_TILE = 512  # the smallest tile `cheapest_tile` tries (or the smallest that works, when larger)
LARGEST_TILE = 2048  # and the largest: a larger tile's buffers leave the caches and fault in fresh pages
TILE_SIZES_TRIED = 24  # evenly spaced between the two: the pixels read do not fall or rise steadily with the size


DEFAULT_MAX_NODATA = 0.5  # the share of a cell's crop that may be no-data for the cell to be computed
MASK_PIXELS = 1 << 22  # the most pixels a band of rows read for the no-data cells holds at once


class Background:
    """Which cells of a run are left out, and so which tiles need not be computed.

    A raster with no-data (`source.missing_value`: a declared value, or NaN in floats)
    is judged by it, with or without --skip-background: a cell is left out when more
    than `max_nodata` of its crop's pixels (`area`, the map's `cell_area`; the
    receptive field where not given) are no-data, a pixel being no-data where any band
    the run reads is. Counted at full resolution, once for the whole map, so the cells
    left out do not depend on the tiling. Other images with --skip-background: the
    tissue mask of `source` at thumbnail size, a cell left out when no pixel of it in
    the square of one stride around the cell's centre is tissue."""

    def __init__(self, source, field, threshold: float | None = DEFAULT_THRESHOLD,
                 max_nodata: float = DEFAULT_MAX_NODATA, area=None):
        self.nodata = getattr(source, "missing_value", None)
        self.source, self.field, self.area, self.max_nodata = source, field, area or field, max_nodata
        self._picture = self._blank = self._sums = None
        if self.nodata is not None:
            self.declared = getattr(source, "nodata", None) is not None
            return
        if threshold is None or not 0 < threshold < 1:
            raise GraphconvError(f"--skip-background {threshold}: the threshold is a saturation between 0 and 1")
        if not getattr(source, "picture", True):
            raise GraphconvError(f"--skip-background: a raster of {source.band_count} band(s) that is not a picture "
                                 "(grey, RGB or RGBA) and declares no no-data value: the tissue test reads colour "
                                 "on a bright background, which bands are not; give the raster a no-data value "
                                 "(GDAL's no-data tag in a TIFF, a _FillValue attribute in a zarr array) or run "
                                 "without --skip-background", file=source.path)
        self.tissue = tissue_mask(self.picture, threshold)

    @property
    def picture(self) -> np.ndarray:
        """The small copy of the image (`sources.thumbnail`): kept, a tiled run's heatmap is drawn over it."""
        if self._picture is None:
            from graphconv.sources import thumbnail
            self._picture, self._scale = thumbnail(self.source)
            self.fy, self.fx = self._scale
        return self._picture

    @property
    def scale(self) -> tuple[float, float]:
        """How many image pixels (rows, columns) one pixel of `picture` spans."""
        return self.picture is not None and self._scale

    def cheapest_tile(self, grid, image_hw: tuple[int, int]) -> int:
        """The tile size, for a run without --tile, whose tiles with tissue read the fewest
        pixels in all. Small tiles skip the glass in fine pieces but each reads its halo
        (about a receptive field) again; large ones the reverse, so the best size depends
        on the network's field and on where the tissue is. Sizes from SMALLEST_TILE to
        LARGEST_TILE (less where the memory budget asks) are tried, each a shape-arithmetic
        plan. ResNet-18's FCN (a 627-pixel field) over a 4096x4096 slide with 19% tissue:
        tiles of 1024 skipped 71 of 100 and took 4.9 s, of 1536 17 of 25 and 3.1 s, of
        2432 5 of 9 and 8.2 s, one of 3546 (3 of 4 skipped, the fewest pixels) 9.4 s, most
        of it faulting in its 800 MB of buffers; without skipping, 8.0 s."""
        from graphconv.memory import memory_limit
        from graphconv.tiling import choose_tile, plan_tiles

        largest = min(choose_tile(grid, image_hw, memory_limit()), max(LARGEST_TILE, *grid.smallest_tile()))
        smallest = min(largest, max(SMALLEST_TILE, *grid.smallest_tile()))
        sizes = sorted({round(smallest + (largest - smallest) * i / (TILE_SIZES_TRIED - 1))
                        for i in range(TILE_SIZES_TRIED)})
        return min(sizes, key=lambda size: sum(t.pixels for t in plan_tiles(grid, image_hw, size).tiles
                                               if not self.is_blank(t)))

    def is_blank(self, tile) -> bool:
        """Whether every one of the tile's cells is left out."""
        return bool(self.blank_cells(tile).all())

    def blank_cells(self, tile) -> np.ndarray:
        """(rows, cols) bool, True for each of the tile's cells left out (see the class).
        Those are written as not computed whatever the tiling, so the map does not depend
        on where tiles fall (a cell of glass or of no-data in a tile that also holds
        tissue used to get scores, and the same cell in a tile of glass alone none)."""
        if getattr(self, "nodata", None) is not None:
            blank = self.nodata_cells()
            (r0, r1), (c0, c1) = tile.rows, tile.cols
            cells = np.zeros((r1 - r0, c1 - c0), bool)  # a cell past those counted starts past the image
            part = blank[r0:r1, c0:c1]
            cells[:part.shape[0], :part.shape[1]] = part
            return cells
        y0, y1 = self._spans(tile.rows, 0, self.fy, self.tissue.shape[0])
        x0, x1 = self._spans(tile.cols, 1, self.fx, self.tissue.shape[1])
        sums = self._tissue_sums
        y0, y1, x0, x1 = y0[:, None], y1[:, None], x0[None, :], x1[None, :]
        return sums[y1, x1] - sums[y0, x1] - sums[y1, x0] + sums[y0, x0] == 0

    def nodata_cells(self) -> np.ndarray:
        """(rows, cols) bool over every cell whose crop starts in the image: True where more
        than `max_nodata` of the crop's pixels are no-data. The image is read once, a band
        of cell rows at a time, full width; the no-data pixels counted on a summed-area
        table, four lookups a cell. `self.fraction` keeps each cell's share."""
        if self._blank is not None:
            return self._blank
        from graphconv.sources import read_masked

        source, area = self.source, self.area
        height, width = source.height, source.width
        rows = _crop_spans(area, 0, height)
        cols = _crop_spans(area, 1, width)
        fraction = np.zeros((len(rows[0]), len(cols[0])), np.float32)
        band_rows = max(1, MASK_PIXELS // max(1, width) // max(1, int(area.stride[0])))
        x0, x1 = cols
        for first in range(0, len(rows[0]), band_rows):
            y0, y1 = rows[0][first:first + band_rows], rows[1][first:first + band_rows]
            top, bottom = int(y0.min()), int(y1.max())
            if bottom <= top:
                fraction[first:first + len(y0)] = 1.0
                continue
            _, mask = read_masked(source, top, 0, bottom, width)
            if mask is None:
                continue
            sums = np.pad(mask.any(axis=0).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
            a0, a1 = (y0 - top)[:, None], (y1 - top)[:, None]
            b0, b1 = x0[None, :], x1[None, :]
            counts = sums[a1, b1] - sums[a0, b1] - sums[a1, b0] + sums[a0, b0]
            pixels = (a1 - a0) * (b1 - b0)
            fraction[first:first + len(y0)] = np.where(pixels > 0, counts / np.maximum(pixels, 1), 1.0)
        self.fraction = fraction
        self._blank = fraction > self.max_nodata
        return self._blank

    @property
    def _tissue_sums(self) -> np.ndarray:
        if getattr(self, "_sums", None) is None:
            self._sums = np.pad(self.tissue.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        return self._sums

    def _spans(self, cells: tuple[int, int], axis: int, scale: float, length: int) -> tuple[np.ndarray, np.ndarray]:
        """The thumbnail pixels [start, stop) that the square of one stride around the
        centre of each of cells [first, last) on `axis` overlaps (a thumbnail pixel spans
        `scale` image pixels; one that only touches the square's edge is not counted)."""
        size, stride, offset = self.field.size[axis], self.field.stride[axis], self.field.offset[axis]
        centres = offset + np.arange(cells[0], cells[1]) * float(stride) + (size - 1) / 2
        starts = np.floor((centres - stride / 2) / scale).astype(np.int64)
        stops = np.ceil((centres + stride / 2) / scale).astype(np.int64)
        return np.clip(starts, 0, length), np.clip(np.maximum(stops, starts + 1), 0, length)


def _crop_spans(area, axis: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """[start, stop) of the crop of every cell along `axis` whose crop starts in the
    image, cut to the image (a padded field reaching past it reads no pixel there)."""
    size, stride, offset = area.size[axis], float(area.stride[axis]), area.offset[axis]
    count = max(1, int(math.ceil((length - offset) / stride)))
    starts = np.floor(offset + np.arange(count) * stride).astype(np.int64)
    stops = starts + int(size)
    return np.clip(starts, 0, length), np.clip(stops, 0, length)


def cells_left_out(source, grid, skip_background: float | None, max_nodata: float = DEFAULT_MAX_NODATA):
    """The `Background` of a run: for a raster with no-data, always (unless `max_nodata`
    is 1 and --skip-background is not given: every cell computed); with
    --skip-background for other images; None where no cell is left out."""
    if getattr(source, "missing_value", None) is not None:
        if max_nodata >= 1 and skip_background is None:
            return None
        return Background(source, grid.field, skip_background, max_nodata, grid.cell_area)
    if skip_background is None:
        return None
    return Background(source, grid.field, skip_background)


def tissue_mask(picture: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """(h, w) bool: the pixels of a (C, h, w) picture on 0..255 that are tissue (see the module)."""
    if picture.shape[0] >= 3:
        rgb = picture[:3].astype(np.float32)
        brightest, dullest = rgb.max(axis=0), rgb.min(axis=0)
        saturation = np.where(brightest > 0, (brightest - dullest) / np.maximum(brightest, 1e-6), 0.0)
        return saturation >= threshold
    return picture[0] <= 255 * (1 - threshold)


def blank_masks(tiles, blank_cells) -> tuple[dict, list]:
    """Each tile's mask of the cells `blank_cells(tile)` marks (none without it), and the
    tiles all of whose cells are blank, which need not be computed: what `tiling.run_tiled`
    and `cluster.run_tiles_on_cluster` both skip."""
    masks = {t: blank_cells(t) for t in tiles} if blank_cells is not None else {}
    return masks, [t for t in tiles if t in masks and masks[t].all()]


def without_blank_cells(block: np.ndarray, blank: np.ndarray | None) -> np.ndarray:
    """A tile's (N, K, rows, cols) block with the cells `blank` marks (`Background.
    blank_cells`) written as not computed (`fill_value`)."""
    if blank is None or not blank.any():
        return block
    block = np.array(block)  # the network's own buffer may be a view
    block[:, :, blank] = fill_value(block.dtype)
    return block


def fill_value(dtype: np.dtype):
    """What a cell not computed holds in a map of `dtype`."""
    return np.nan if np.issubdtype(dtype, np.floating) else NO_CLASS
