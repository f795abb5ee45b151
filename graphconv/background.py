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
image, where it is darker than white by at least the threshold. The image is judged as
stored, whatever the network is fed (`sources.own_channels`: a grey slide repeated into
an RGB model's channels has no saturation, and every cell of it was left out), and an RGB
image whose three bands are equal but for a few levels is grey too, its colour still
tested (`tissue_mask`). This assumes a bright,
colourless background (brightfield slides, scanned pages), not fluorescence or
satellite images, so it is opt-in.

A raster with no-data (GDAL's tag: a satellite scene's pixels outside the swath; a zarr
array's `_FillValue`; NaN in a float raster) is judged by that instead, by default,
with or without --skip-background: its no-data pixels (the no-data value, or NaN, in
every band the network is fed from, as GDAL's dataset mask has it) go into the network
as 0 after the preprocess (`sources.ArrayLikeSource.read_masked`; so does a NaN sample
of a pixel that is data), and a cell is left out when more than `max_nodata` (`run
--max-nodata`, default DEFAULT_MAX_NODATA) of its crop's pixels are no-data. A cell
whose field holds no no-data pixel, and no NaN, is exactly the cell of a run over the
same pixels without a no-data tag; with --downsample or --mpp, no pixel whose square
covers a no-data pixel of the image read (that pixel is the mean of the valid ones
alone). A raster of bands that is not a picture
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
MASK_PIXELS = 1 << 23  # the most pixels one read for the no-data cells takes (fewer where the budget asks)
MASK_BUDGET_SHARE = 8  # that read's stored bands and masks stay within 1/8 of the memory budget


class Background:
    """Which cells of a run are left out, and so which tiles need not be computed.

    A raster with no-data (`source.missing_value`: a declared value, or NaN in floats)
    is judged by it, with or without --skip-background: a cell is left out when more
    than `max_nodata` of its crop's pixels (`area`, the map's `cell_area`; the
    receptive field where not given) are no-data, a pixel being no-data where every
    band the network is fed from holds the no-data value (`sources.ArrayLikeSource.
    read_masked`). Counted at the resolution read, once for the whole map, so the cells
    left out do not depend on the tiling. Other images with --skip-background: the
    tissue mask of `source` at thumbnail size, a cell left out when no pixel of it in
    the square of one stride around the cell's centre is tissue. A user's `mask` (run
    --mask: True where to compute, stretched over the whole image) stands for the
    tissue mask, and a raster's no-data cells are left out as well."""

    def __init__(self, source, field, threshold: float | None = DEFAULT_THRESHOLD,
                 max_nodata: float = DEFAULT_MAX_NODATA, area=None, mask: np.ndarray | None = None):
        from graphconv.sources import nodata_can_occur

        # a declared value no pixel can hold (-9999 in 8 bits): every pixel is data, so tissue is looked for
        self.nodata = getattr(source, "missing_value", None) if nodata_can_occur(source) else None
        self.source, self.field, self.area, self.max_nodata = source, field, area or field, max_nodata
        self._picture = self._blank = self._sums = None
        self.masked = mask is not None
        if self.masked:
            self.tissue = mask
            self.fy, self.fx = source.height / mask.shape[0], source.width / mask.shape[1]
        if self.nodata is not None:
            self.declared = getattr(source, "nodata", None) is not None
            return
        if self.masked:
            return
        if threshold is None or not 0 < threshold < 1:
            raise GraphconvError(f"--skip-background {threshold}: the threshold is a saturation between 0 and 1")
        if not getattr(source, "picture", True):
            raise GraphconvError(f"--skip-background: a raster of {source.band_count} band(s) that is not a picture "
                                 "(grey, RGB or RGBA) and declares no no-data value: the tissue test reads colour "
                                 "on a bright background, which bands are not; give the raster a no-data value "
                                 "(--nodata VALUE, or GDAL's no-data tag in a TIFF, a _FillValue attribute in a zarr "
                                 "array) or run without --skip-background", file=source.path)
        self.tissue = tissue_mask(self.picture, threshold)

    @property
    def picture(self) -> np.ndarray:
        """The small copy of the image as stored (`sources.thumbnail`, `own_channels`): kept,
        a tiled run's heatmap is drawn over it."""
        if self._picture is None:
            from graphconv.sources import own_channels, thumbnail
            self._picture, self._scale = thumbnail(self.source, channels=own_channels(self.source))
            if not self.masked:  # a --mask spans its own pixels
                self.fy, self.fx = self._scale
        return self._picture

    @property
    def scale(self) -> tuple[float, float]:
        """How many image pixels (rows, columns) one pixel of `picture` spans."""
        return self.picture is not None and self._scale

    def cheapest_tile(self, grid, image_hw: tuple[int, int], budget: int | None = None) -> int:
        """The tile size, for a run without --tile, whose tiles with tissue read the fewest
        pixels in all. Small tiles skip the glass in fine pieces but each reads its halo
        (about a receptive field) again; large ones the reverse, so the best size depends
        on the network's field and on where the tissue is. Sizes from SMALLEST_TILE to
        LARGEST_TILE (less where the memory budget asks) are tried, each a shape-arithmetic
        plan. ResNet-18's FCN (a 627-pixel field) over a 4096x4096 slide with 19% tissue:
        tiles of 1024 skipped 71 of 100 and took 4.9 s, of 1536 17 of 25 and 3.1 s, of
        2432 5 of 9 and 8.2 s, one of 3546 (3 of 4 skipped, the fewest pixels) 9.4 s, most
        of it faulting in its 800 MB of buffers; without skipping, 8.0 s. `budget`: the
        memory budget (this process's when None; an --images worker's share of the command's)."""
        from graphconv.memory import memory_limit
        from graphconv.tiling import choose_tile, plan_tiles

        budget = memory_limit() if budget is None else budget
        if getattr(grid, "whole_image_only", False):
            return choose_tile(grid, image_hw, budget)  # the image, in one tile (or why not)
        largest = min(choose_tile(grid, image_hw, budget), max(LARGEST_TILE, *grid.smallest_tile()))
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
            return (cells | self._without_tissue(tile)) if self.masked else cells
        return self._without_tissue(tile)

    def _without_tissue(self, tile) -> np.ndarray:
        """The tile's cells no tissue (or the --mask) reaches near their centres."""
        y0, y1 = self._spans(tile.rows, 0, self.fy, self.tissue.shape[0])
        x0, x1 = self._spans(tile.cols, 1, self.fx, self.tissue.shape[1])
        sums = self._tissue_sums
        y0, y1, x0, x1 = y0[:, None], y1[:, None], x0[None, :], x1[None, :]
        return sums[y1, x1] - sums[y0, x1] - sums[y1, x0] + sums[y0, x0] == 0

    def nodata_cells(self) -> np.ndarray:
        """(rows, cols) bool over every cell whose crop starts in the image: True where more
        than `max_nodata` of the crop's pixels are no-data. `self.fraction` keeps each
        cell's share. Nothing is read where no pixel can be no-data (`sources.
        nodata_can_occur`: a declared value an integer raster cannot hold); else see
        `_nodata_counts`."""
        if self._blank is not None:
            return self._blank
        source, area = self.source, self.area
        y0, y1 = _crop_spans(area, 0, source.height)
        x0, x1 = _crop_spans(area, 1, source.width)
        pixels = (y1 - y0)[:, None] * (x1 - x0)[None, :]
        counts = self._nodata_counts(y0, y1, x0, x1)
        if counts is None:
            counts = np.zeros(pixels.shape, np.int64)
        self.fraction = np.where(pixels > 0, counts / np.maximum(pixels, 1), 1.0).astype(np.float32)
        self._blank = self.fraction > self.max_nodata
        return self._blank

    def _nodata_counts(self, y0, y1, x0, x1) -> np.ndarray | None:
        """(rows, cols) int64: how many no-data pixels each cell's crop [y0, y1) x [x0, x1)
        holds; None where no pixel can be no-data. Each image row in some crop is read
        once (`sources.nodata_mask`: the values as stored, no preprocess), in reads of
        at most `_rows_per_read` rows, full width. Each read is summed into blocks of
        rows between consecutive crop edges (at most a stride each) and then at the
        crops' column edges; a running count of the no-data pixels above each row edge,
        up to each column edge, is kept for the edges that cells still open need, so a
        cell's count is four lookups and memory is a few rows of cell edges, not the
        image's. A read with no no-data pixel adds nothing (a float raster with no NaN
        costs one read and no arrays)."""
        from graphconv.sources import nodata_can_occur, nodata_mask

        source = self.source
        if not nodata_can_occur(source):
            return None
        width = source.width
        row_edges = np.unique(np.concatenate([y0, y1]))
        col_edges = np.unique(np.concatenate([[0], x0, x1]))
        col_starts = col_edges[col_edges < width]  # np.add.reduceat's segments: [edge, next edge)
        ix0, ix1 = np.searchsorted(col_edges, x0), np.searchsorted(col_edges, x1)
        iy0, iy1 = np.searchsorted(row_edges, y0), np.searchsorted(row_edges, y1)
        counts = np.zeros((len(y0), len(x0)), np.int64)
        above = np.zeros(len(col_starts) + 1, np.int64)  # no-data pixels in the rows read so far, left of each edge
        kept: dict[int, np.ndarray] = {}  # row edge -> `above` there, while a cell not yet counted needs it
        state = {"edge": 0, "cell": 0}

        def reach(row: int) -> None:
            """Record `above` at every row edge up to `row` (all rows before it counted) and
            count the cells whose crops end there."""
            while state["edge"] < len(row_edges) and row_edges[state["edge"]] <= row:
                edge = state["edge"]
                kept[edge] = above.copy()
                cell = state["cell"]
                while cell < len(y0) and iy1[cell] <= edge:
                    top, bottom = kept[iy0[cell]], kept[iy1[cell]]
                    counts[cell] = bottom[ix1] - top[ix1] - bottom[ix0] + top[ix0]
                    cell += 1
                state["cell"] = cell
                needed = iy0[cell] if cell < len(y0) else len(row_edges)
                for old in [k for k in kept if k < needed]:
                    del kept[old]
                state["edge"] += 1

        covered = np.zeros(len(row_edges) + 1, np.int64)  # how many crops hold each run of rows between edges
        np.add.at(covered, iy0, 1)
        np.add.at(covered, iy1, -1)
        covered = np.cumsum(covered)[:-1] > 0
        rows_per_read = self._rows_per_read(width)
        starts = np.nonzero(covered & ~np.concatenate([[False], covered[:-1]]))[0]
        stops = np.nonzero(covered & ~np.concatenate([covered[1:], [False]]))[0] + 1
        for first, last in zip(starts, stops):  # runs of rows that some crop holds
            for top in range(int(row_edges[first]), int(row_edges[last]), rows_per_read):
                bottom = min(int(row_edges[last]), top + rows_per_read)
                reach(top)
                mask = nodata_mask(source, top, 0, bottom, width)
                if mask is None or not mask.any():
                    continue
                cuts = row_edges[(row_edges > top) & (row_edges < bottom)]
                blocks = np.add.reduceat(mask, np.concatenate([[0], cuts - top]), axis=0, dtype=np.int32)
                blocks = np.add.reduceat(blocks, col_starts, axis=1).cumsum(axis=1)
                for cut, block in zip(cuts, blocks):
                    above[1:] += block
                    reach(int(cut))
                above[1:] += blocks[-1]
        reach(int(row_edges[-1]))
        return counts

    def _rows_per_read(self, width: int) -> int:
        """Rows of the image one read for the no-data counts takes: MASK_PIXELS pixels, or
        fewer where the memory budget asks (the stored bands and the masks made of them)."""
        from graphconv.memory import memory_limit

        source = getattr(self.source, "inner", self.source)
        array = getattr(source, "array", None)
        itemsize = np.dtype(array.dtype).itemsize if array is not None else 4
        per_pixel = (getattr(source, "band_count", 3) * itemsize + 4) * getattr(self.source, "factor", 1) ** 2
        pixels = min(MASK_PIXELS, memory_limit() // (MASK_BUDGET_SHARE * per_pixel))
        return max(1, int(pixels // max(1, width)))

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


def cells_left_out(source, grid, skip_background: float | None, max_nodata: float = DEFAULT_MAX_NODATA,
                   mask: np.ndarray | None = None):
    """The `Background` of a run: for a raster with no-data, where some cell is left out
    or --skip-background is given; with --skip-background for other images; None where
    no cell is left out (`max_nodata` 1; a float raster without NaN, found in one read
    as stored; a no-data value the raster's type cannot hold, found without reading),
    so such a run picks its tiles as any other does. A raster whose declared no-data
    value none of its pixels can hold (-9999 in 8 bits) is an image like any other:
    --skip-background's tissue test applies to it. A user's `mask` (`load_mask`) leaves
    out what it does not cover, and a raster's no-data as well."""
    from graphconv.sources import nodata_can_occur

    if mask is not None:
        return Background(source, grid.field, None, max_nodata, grid.cell_area, mask)
    if nodata_can_occur(source):
        if max_nodata >= 1 and skip_background is None:
            return None
        background = Background(source, grid.field, skip_background, max_nodata, grid.cell_area)
        if skip_background is None and not background.nodata_cells().any():
            return None
        return background
    if skip_background is None:
        return None
    return Background(source, grid.field, skip_background)


MASK_ASPECT_SLACK = 0.02  # how far a --mask's aspect ratio may be from the image's (a thumbnail's rounding)


def load_mask(path: str, image_hw: tuple[int, int]) -> np.ndarray:
    """run --mask: an image (a QuPath or HistoQC export, any size) whose non-zero pixels
    mark where to compute, as (h, w) bool; stretched over the whole image, so it must
    have the image's aspect ratio (a mask of another region would put cells wrong)."""
    from graphconv.images import load_image

    mask = load_image(path, None, channels=1, stored_values=True)[0] > 0
    height, width = image_hw
    if abs(mask.shape[0] / mask.shape[1] - height / width) > MASK_ASPECT_SLACK * height / width:
        raise GraphconvError(f"the mask is {mask.shape[0]}x{mask.shape[1]} and the image {height}x{width}: a mask is "
                             "stretched over the whole image, so it must have the image's aspect ratio", file=path)
    return mask


def tissue_mask(picture: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """(h, w) bool: the pixels of a (C, h, w) picture on 0..255 that are tissue (see the
    module); an RGB picture whose bands are equal but for JPEG's or a scanner's few
    levels (`GREY_SPREAD`) is grey (a grey slide saved as RGB)."""
    if picture.shape[0] < 3:
        return picture[0] <= 255 * (1 - threshold)
    rgb = picture[:3].astype(np.float32)
    brightest, dullest = rgb.max(axis=0), rgb.min(axis=0)
    coloured = np.where(brightest > 0, (brightest - dullest) / np.maximum(brightest, 1e-6), 0.0) >= threshold
    if not _grey(picture[:3]):
        return coloured
    # grey but for a few pixels: darkness, and any colour there is (a small stained biopsy is under 0.1%)
    return coloured | (rgb.mean(axis=0) <= 255 * (1 - threshold))


GREY_SPREAD = 4  # levels of 255 an RGB picture's bands may differ by in 99.9% of its pixels and it be grey


def _grey(rgb: np.ndarray) -> bool:
    """Whether an RGB picture is grey: the spread of its bands (max - min) within
    GREY_SPREAD levels in all but 0.1% of its pixels (a stained slide's tissue spreads
    by tens of levels; a grey one's JPEG or a scanner's cast by a few)."""
    spread = rgb.max(axis=0).astype(np.float32) - rgb.min(axis=0)
    return bool(np.quantile(spread, 0.999) <= GREY_SPREAD) if spread.size else True


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
