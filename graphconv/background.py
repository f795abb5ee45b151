"""Skip the blank glass of a slide: `graphconv run --image slide.svs --skip-background`.

Most of a whole-slide image is empty glass (or the white of a scanned page), and a
tiled run spends most of its time there for nothing. With `--skip-background` each tile
is first looked up in a tissue mask made from a small copy of the image
(`sources.thumbnail`, from a coarse pyramid level where there is one): a cell with no
tissue near its centre (within half the output stride) is written as "not computed" (NaN
in a score map, NO_CLASS in a `--reduce argmax` class map), whatever the tiling, and a
tile of such cells alone is not computed at all. Every other cell is exactly what the
whole image's pass gives.

A pixel is tissue where its colour is saturated (HSV saturation, (max - min) / max, at
least the threshold: stained tissue is coloured, glass is grey or white), or, in a grey
image, where it is darker than white by at least the threshold. This assumes a bright,
colourless background (brightfield slides, scanned pages), not fluorescence or
satellite images, so it is opt-in. A raster that declares a no-data value (GDAL's tag:
a satellite scene's pixels outside the swath; a zarr array's `_FillValue`) is judged by
that instead: a pixel counts where any band the run reads holds data
(`sources.data_mask`), whatever the threshold. A raster of bands that is not a picture
(`source.picture` false: a TIFF of bands not photometric RGB, a 16-bit or float zarr
array) and declares no no-data value is refused: its bands are no colours (a bright
cloud, equal in every band, has no saturation and was skipped as glass), and there is
nothing else to tell its blank pixels by.
"""
from __future__ import annotations

import numpy as np

from graphconv.errors import GraphconvError

DEFAULT_THRESHOLD = 0.05  # HSV saturation (or darkness) of the palest tissue kept: above JPEG noise on glass
NO_CLASS = np.iinfo(np.uint16).max  # what a --reduce argmax map holds for a cell not computed
SMALLEST_TILE = 512  # the smallest tile `cheapest_tile` tries (or the smallest that works, when larger)
LARGEST_TILE = 2048  # and the largest: a larger tile's buffers leave the caches and fault in fresh pages
TILE_SIZES_TRIED = 24  # evenly spaced between the two: the pixels read do not fall or rise steadily with the size


class Background:
    """Which tiles of a run are blank: the tissue mask of `source` at thumbnail size, and
    the cells' field (`grid.field`) to place each tile's cells on it."""

    def __init__(self, source, field, threshold: float = DEFAULT_THRESHOLD):
        from graphconv.sources import thumbnail

        if not 0 < threshold < 1:
            raise GraphconvError(f"--skip-background {threshold}: the threshold is a saturation between 0 and 1")
        self.nodata = getattr(source, "nodata", None)
        if self.nodata is None and not getattr(source, "picture", True):
            raise GraphconvError(f"--skip-background: a raster of {source.band_count} band(s) that is not a picture "
                                 "(grey, RGB or RGBA) and declares no no-data value: the tissue test reads colour "
                                 "on a bright background, which bands are not; give the raster a no-data value "
                                 "(GDAL's no-data tag in a TIFF, a _FillValue attribute in a zarr array) or run "
                                 "without --skip-background", file=source.path)
        self.picture, self.scale = thumbnail(source)  # kept: a tiled run's heatmap is drawn over it
        self.fy, self.fx = self.scale
        if self.nodata is None:
            self.tissue = tissue_mask(self.picture, threshold)
        else:
            from graphconv.sources import data_mask
            self.tissue = data_mask(source, self.picture.shape[1:])
        self.field = field

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
        """Whether no tissue lies within half a stride of any of the tile's cells' centres."""
        return bool(self.blank_cells(tile).all())

    def blank_cells(self, tile) -> np.ndarray:
        """(rows, cols) bool, True for each of the tile's cells with no tissue (or only
        no-data) within half a stride of its centre. Those are written as not computed
        whatever the tiling, so the map does not depend on where tiles fall (a cell of
        glass or of no-data in a tile that also holds tissue used to get scores, and the
        same cell in a tile of glass alone none). Counted on a summed-area table of the
        mask: four lookups a cell."""
        y0, y1 = self._spans(tile.rows, 0, self.fy, self.tissue.shape[0])
        x0, x1 = self._spans(tile.cols, 1, self.fx, self.tissue.shape[1])
        sums = self._tissue_sums
        y0, y1, x0, x1 = y0[:, None], y1[:, None], x0[None, :], x1[None, :]
        return sums[y1, x1] - sums[y0, x1] - sums[y1, x0] + sums[y0, x0] == 0

    @property
    def _tissue_sums(self) -> np.ndarray:
        if getattr(self, "_sums", None) is None:
            self._sums = np.pad(self.tissue.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        return self._sums

    def _spans(self, cells: tuple[int, int], axis: int, scale: float, length: int) -> tuple[np.ndarray, np.ndarray]:
        """The thumbnail pixels [start, stop) around the centre of each of cells [first,
        last) on `axis`, half a stride either side."""
        size, stride, offset = self.field.size[axis], self.field.stride[axis], self.field.offset[axis]
        centres = offset + np.arange(cells[0], cells[1]) * float(stride) + (size - 1) / 2
        starts = np.floor((centres - stride / 2) / scale).astype(np.int64)
        stops = np.ceil((centres + stride / 2) / scale).astype(np.int64) + 1
        return np.clip(starts, 0, length), np.clip(stops, 0, length)


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
