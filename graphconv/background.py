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
image, where it is darker than the glass by at least the threshold (the glass: the
image's own bright level, white or an off-white 240). The image is judged as
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
from typing import Callable

import numpy as np

from graphconv.errors import GraphconvError, counted

DEFAULT_THRESHOLD = 0.05  # HSV saturation (or darkness) of the palest tissue kept: above JPEG noise on glass
NO_CLASS = np.iinfo(np.uint16).max  # what a --reduce argmax map holds for a cell not computed
NO_CALL_CLASS = NO_CLASS - 1  # and for a sigmoid model's cell calling no class (its best under 0.5)
SMALLEST_TILE = 512  # the smallest tile `cheapest_tile` tries (or the smallest that works, when larger)
LARGEST_TILE = 2048  # and the largest: a larger tile's buffers leave the caches and fault in fresh pages
TILE_SIZES_TRIED = 24  # evenly spaced between the two: the pixels read do not fall or rise steadily with the size


DEFAULT_MAX_NODATA = 0.5  # the share of a cell's crop that may be no-data for the cell to be computed
MASK_PIXELS = 1 << 23  # the most pixels one read for the no-data cells takes (fewer where the budget asks)
MASK_BUDGET_SHARE = 8  # that read's stored bands, masks and sums stay within 1/8 of the memory budget
COUNT_BYTES = 16  # a pixel's share of the sums counting a read's no-data (at stride 1: rows, columns, running)


class Background:
    """Which cells of a run are left out, and so which tiles need not be computed.

    A raster with no-data (`source.missing_value`: a declared value, or NaN in floats)
    is judged by it, with or without --skip-background: a cell is left out when more
    than `max_nodata` of its crop's pixels (`cells`, the map's `cell_area`) are no-data,
    a pixel being no-data where every band the network is fed from holds the no-data
    value (`sources.ArrayLikeSource.read_masked`). Counted at the resolution read, once for the whole map, so the cells
    left out do not depend on the tiling. Other images with --skip-background: the
    tissue mask of `source` at thumbnail size, a cell left out when no pixel of it in
    the square of one stride around the cell's centre (its crop's: where the map's
    georeference, its heatmap and its `cells:` line put it) is tissue. A user's `mask` (run
    --mask: True where to compute, stretched over the whole image) stands for the
    tissue mask, and a raster's no-data cells are left out as well."""

    def __init__(self, source, cells, threshold: float | None = DEFAULT_THRESHOLD,
                 max_nodata: float = DEFAULT_MAX_NODATA, mask: np.ndarray | None = None, skip_damaged: bool = False):
        from graphconv.sources import nodata_can_occur, on_image

        # a declared value no pixel can hold (-9999 in 8 bits): every pixel is data, so tissue is looked for
        self.has_nodata = nodata_can_occur(source)  # a value, NaN or a TIFF's internal mask marks some pixels
        self.nodata = getattr(source, "missing_value", None) if self.has_nodata else None
        self.source, self.max_nodata = source, max_nodata
        self.skip_damaged = skip_damaged  # --skip-damaged: no-data counted around undecodable tiles (`_nodata_counts`)
        # tissue and no-data are looked for in the image itself: a padded one's cells (--pad-image) stand
        # shifted on it, and a crop's share of no-data is of its image pixels (the border is neither)
        self.image, self.cells = on_image(source, cells)
        self._picture = self._blank = self._sums = None
        self.masked = mask is not None
        if self.masked:
            self.tissue = mask
            self.fy, self.fx = self.image.height / mask.shape[0], self.image.width / mask.shape[1]
        if self.has_nodata:
            return
        if self.masked:
            return
        if threshold is None or not 0 < threshold < 1:
            raise GraphconvError(f"--skip-background {threshold}: the threshold is a saturation between 0 and 1")
        if not getattr(source, "picture", True):
            raise GraphconvError(f"--skip-background: a raster of {counted(source.band_count, 'band')} that is "
                                 f"not a picture "
                                 "(grey, RGB or RGBA) and declares no no-data value: the tissue test reads colour "
                                 "on a bright background, which bands are not; give the raster a no-data value "
                                 "(--nodata VALUE, or GDAL's no-data tag in a TIFF, a _FillValue attribute in a zarr "
                                 "array) or run without --skip-background", file=source.path)
        self.tissue = tissue_mask(self.picture, threshold)

    def nodata_record(self) -> dict:
        """What a map states of its image's own no-data (a GeoTIFF's tag, a zarr's fill
        value, or --nodata; a TIFF's internal mask), where it leaves cells out: its
        `cells_left_out` records the options given, which said `"nodata": null` of a value
        the file declared."""
        record = {}
        if self.nodata is not None:
            value = float(self.nodata)
            record["image_nodata"] = value if np.isfinite(value) else str(value)
        if getattr(self.image, "valid_pixels", None) is not None:  # GDAL's per-dataset mask, read at the level read,
            record["image_nodata_mask"] = getattr(self.image, "valid_pixels_from", None) or "internal"  # or alpha
        return record

    @property
    def picture(self) -> np.ndarray:
        """The small copy of the image as stored (`sources.thumbnail`, `own_channels`): kept,
        a tiled run's heatmap is drawn over it."""
        if self._picture is None:
            from graphconv.sources import own_channels, thumbnail
            self._picture, self._scale = thumbnail(self.image, channels=own_channels(self.image))
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
        """Whether every one of the tile's cells is left out: without building its cells'
        mask where the no-data blocks' states or the tissue around the whole tile tell
        (`cheapest_tile` asks this of every tile of ~24 plans)."""
        if not self.has_nodata:
            return self._tissue_in_tile(tile) == 0
        (r0, r1), (c0, c1) = tile.rows, tile.cols
        if self.nodata_cells().all_set(r0, r1, c0, c1):
            return True
        return self.masked and (self._tissue_in_tile(tile) == 0 or bool(self.blank_cells(tile).all()))

    def blank_count(self, tile) -> int:
        """How many of the tile's cells are left out."""
        (r0, r1), (c0, c1) = tile.rows, tile.cols
        if not self.has_nodata:
            small, rows, cols = self._tissue_spans(tile)
            return int(np.bincount(rows) @ small.astype(np.int64) @ np.bincount(cols))
        if not self.masked:
            return self.nodata_cells().count(r0, r1, c0, c1)
        return int(self.blank_cells(tile).sum())

    def blank_cells(self, tile) -> np.ndarray:
        """(rows, cols) bool, True for each of the tile's cells left out (see the class).
        Those are written as not computed whatever the tiling, so the map does not depend
        on where tiles fall (a cell of glass or of no-data in a tile that also holds
        tissue used to get scores, and the same cell in a tile of glass alone none).
        Made when asked, a tile at a time: a run keeps no mask of the whole map."""
        if self.has_nodata:
            (r0, r1), (c0, c1) = tile.rows, tile.cols
            cells = self.nodata_cells().box(r0, r1, c0, c1)  # a cell past those counted starts past the image
            return (cells | self._without_tissue(tile)) if self.masked else cells
        return self._without_tissue(tile)

    def _without_tissue(self, tile) -> np.ndarray:
        """The tile's cells no tissue (or the --mask) reaches near their centres."""
        small, rows, cols = self._tissue_spans(tile)
        return small[rows][:, cols]

    def _tissue_spans(self, tile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(small, rows, cols): small[i, j] True where no tissue lies in the i-th distinct
        span of thumbnail rows the tile's cells reach and the j-th of columns; `rows` and
        `cols` say which span each of the tile's rows and columns of cells has. Cells
        much finer than a thumbnail pixel (stride 1 on a slide: tens a pixel) share few
        spans, so the tissue sums are looked up per span, not per cell."""
        (y0, y1), rows = _distinct_spans(*self._spans(tile.rows, 0, self.fy, self.tissue.shape[0]))
        (x0, x1), cols = _distinct_spans(*self._spans(tile.cols, 1, self.fx, self.tissue.shape[1]))
        sums = self._tissue_sums
        y0, y1, x0, x1 = y0[:, None], y1[:, None], x0[None, :], x1[None, :]
        return sums[y1, x1] - sums[y0, x1] - sums[y1, x0] + sums[y0, x0] == 0, rows, cols

    def _tissue_in_tile(self, tile) -> int:
        """Tissue pixels in the union of the squares of the tile's cells: consecutive
        cells' squares meet (a cell's centre is one stride past the last's), so that union
        is one rectangle of the thumbnail, from the first cell's square to the last's."""
        (r0, r1), (c0, c1) = tile.rows, tile.cols
        y0 = self._spans((r0, r0 + 1), 0, self.fy, self.tissue.shape[0])[0][0]
        y1 = self._spans((r1 - 1, r1), 0, self.fy, self.tissue.shape[0])[1][0]
        x0 = self._spans((c0, c0 + 1), 1, self.fx, self.tissue.shape[1])[0][0]
        x1 = self._spans((c1 - 1, c1), 1, self.fx, self.tissue.shape[1])[1][0]
        sums = self._tissue_sums
        return int(sums[y1, x1] - sums[y0, x1] - sums[y1, x0] + sums[y0, x0])

    def nodata_cells(self) -> "CellBlocks":
        """Every cell whose crop starts in the image, set where more than `max_nodata` of
        the crop's pixels are no-data (of a padded image, --pad-image, of the crop's image
        pixels: the border is neither data nor no-data): counted once for the whole map (`_nodata_counts`),
        a row of cells at a time, and kept as `CellBlocks` (memory follows the no-data's
        edge, not the map's area). Nothing is read where no pixel can be no-data
        (`sources.nodata_can_occur`: a declared value an integer raster cannot hold)."""
        if self._blank is not None:
            return self._blank
        source, area = self.image, self.cells
        y0, y1 = _crop_spans(area, 0, source.height)
        x0, x1 = _crop_spans(area, 1, source.width)
        blank = CellBlocks((len(y0), len(x0)))
        widths = x1 - x0
        some_empty = not (widths > 0).all() or not (y1 > y0).all()

        def add_row(cell: int, counts: np.ndarray | None) -> None:
            if counts is None and not some_empty:
                return blank.add_row(None)
            pixels = (y1[cell] - y0[cell]) * widths
            counts = np.zeros(len(widths), np.int64) if counts is None else counts
            blank.add_row(np.where(pixels > 0, counts / np.maximum(pixels, 1), 1.0) > self.max_nodata)

        self._nodata_counts(y0, y1, x0, x1, add_row)
        self._blank = blank.finish()
        return self._blank

    def _nodata_counts(self, y0, y1, x0, x1, on_row: Callable[[int, np.ndarray | None], None]) -> None:
        """How many no-data pixels each cell's crop [y0, y1) x [x0, x1) holds, given to
        `on_row(row of cells, counts)` a row of cells at a time, in order (counts None: no
        no-data pixel in the row's crops). Each image row in some crop is read
        once (`sources.nodata_mask`: the values as stored, no preprocess), in reads of
        at most `_rows_per_read` rows, full width. Each read is summed into blocks of
        rows between consecutive crop edges (at most a stride each) and then at the
        crops' column edges; a running count of the no-data pixels above each row edge,
        up to each column edge, is kept for the edges that cells still open need, so a
        cell's count is four lookups and memory is a few rows of cell edges, not the
        image's. A read with no no-data pixel adds nothing (a float raster with no NaN
        costs one read and no arrays); nothing is read where no pixel can be no-data."""
        from graphconv.sources import nodata_can_occur, nodata_mask

        source = self.image
        if not nodata_can_occur(source):
            for cell in range(len(y0)):
                on_row(cell, None)
            return
        width = source.width
        row_edges = np.unique(np.concatenate([y0, y1]))
        col_edges = np.unique(np.concatenate([[0], x0, x1]))
        col_starts = col_edges[col_edges < width]  # np.add.reduceat's segments: [edge, next edge)
        ix0, ix1 = np.searchsorted(col_edges, x0), np.searchsorted(col_edges, x1)
        iy0, iy1 = np.searchsorted(row_edges, y0), np.searchsorted(row_edges, y1)
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
                    counts = bottom[ix1] - top[ix1] - bottom[ix0] + top[ix0]
                    on_row(cell, counts if counts.any() else None)
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
                mask = nodata_mask(source, top, 0, bottom, width, self.skip_damaged)
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

    def _rows_per_read(self, width: int) -> int:
        """Rows of the image one read for the no-data counts takes: MASK_PIXELS pixels, or
        fewer where the memory budget asks (the stored bands, their mask, and the sums
        made of it: COUNT_BYTES a pixel)."""
        from graphconv.memory import memory_limit

        source = getattr(self.source, "inner", self.source)
        array = getattr(source, "array", None)
        itemsize = np.dtype(array.dtype).itemsize if array is not None else 4
        stored = (getattr(source, "band_count", 3) * itemsize + 1) * getattr(self.source, "factor", 1) ** 2
        per_pixel = stored + COUNT_BYTES
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
        `scale` image pixels; one that only touches the square's edge is not counted).
        Centres and squares in pixel-area coordinates: pixel k spans [k, k + 1)."""
        size, stride, offset = self.cells.size[axis], self.cells.stride[axis], self.cells.offset[axis]
        centres = offset + np.arange(cells[0], cells[1]) * float(stride) + size / 2
        starts = np.floor((centres - stride / 2) / scale).astype(np.int64)
        stops = np.ceil((centres + stride / 2) / scale).astype(np.int64)
        return np.clip(starts, 0, length), np.clip(np.maximum(stops, starts + 1), 0, length)


def _crop_spans(area, axis: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """[start, stop) of the crop of every cell along `axis` whose crop starts in the
    image, cut to the image (a padded field reaching past it reads no pixel there)."""
    count = max(1, int(math.ceil((length - area.offset[axis]) / float(area.stride[axis]))))
    starts = area.starts(axis, 0, count)
    stops = starts + int(area.size[axis])
    return np.clip(starts, 0, length), np.clip(stops, 0, length)


def _distinct_spans(starts: np.ndarray, stops: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """The distinct [start, stop) spans of a run of cells (both rise with the cell, so equal
    spans are neighbours), and which of them each cell has."""
    new = np.concatenate([[True], (starts[1:] != starts[:-1]) | (stops[1:] != stops[:-1])])
    return (starts[new], stops[new]), np.cumsum(new) - 1


BLOCK_CELLS = 64  # cells a side of the blocks a `CellBlocks` keeps (a mixed one: 512 bytes of bits)


class CellBlocks:
    """A (rows, cols) bool map of cells, kept in square blocks of BLOCK_CELLS a side: a
    block all False or all True is one byte of `state`, and only a mixed block keeps its
    cells, as packed bits. A run's no-data cells are such a map: a stride-1 map of a
    50000x50000 scene has 2.5 billion cells (2.5 GB as a bool array, 21 GB as the counts
    they came from), and only the blocks along the no-data's edge are mixed. Built from
    its rows in order (`add_row`, then `finish`); read a box at a time (`box`)."""

    NONE, SOME, ALL = 0, 1, 2  # a block's state: no cell set, some, every one

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape
        self.state = np.zeros((-(-shape[0] // BLOCK_CELLS), -(-shape[1] // BLOCK_CELLS)), np.uint8)
        self.mixed: dict[tuple[int, int], np.ndarray] = {}  # (block row, block col) -> its packed bits
        self._band = np.zeros((BLOCK_CELLS, self.state.shape[1] * BLOCK_CELLS), bool)
        self._rows = 0

    @classmethod
    def of(cls, cells: np.ndarray) -> "CellBlocks":
        """The blocks of a (rows, cols) bool array."""
        blocks = cls(cells.shape)
        for row in cells:
            blocks.add_row(row)
        return blocks.finish()

    def add_row(self, row: np.ndarray | None) -> None:
        """The next row of cells (None: none set)."""
        within = self._rows % BLOCK_CELLS
        self._band[within] = False
        if row is not None:
            self._band[within, :self.shape[1]] = row
        self._rows += 1
        if within == BLOCK_CELLS - 1 or self._rows == self.shape[0]:
            self._keep_band(within + 1)

    def finish(self) -> "CellBlocks":
        if self._rows != self.shape[0]:
            raise ValueError(f"{self._rows} rows of cells added, of {self.shape[0]}")
        self._band = None
        return self

    def _keep_band(self, rows: int) -> None:
        band_row = (self._rows - 1) // BLOCK_CELLS
        blocks = self._band[:rows].reshape(rows, -1, BLOCK_CELLS)
        sums = blocks.sum(axis=(0, 2))
        widths = np.minimum(BLOCK_CELLS, self.shape[1] - np.arange(len(sums)) * BLOCK_CELLS)
        state = np.where(sums == 0, self.NONE, np.where(sums == rows * widths, self.ALL, self.SOME))
        self.state[band_row] = state
        for col in np.nonzero(state == self.SOME)[0]:
            block = np.zeros((BLOCK_CELLS, BLOCK_CELLS), bool)
            block[:rows] = blocks[:, col]
            self.mixed[band_row, int(col)] = np.packbits(block)

    def _mixed_block(self, row: int, col: int) -> np.ndarray:
        """Mixed block (row, col)'s cells, (BLOCK_CELLS, BLOCK_CELLS) bool (past the map: False)."""
        bits = np.unpackbits(self.mixed[row, col], count=BLOCK_CELLS * BLOCK_CELLS)
        return bits.reshape(BLOCK_CELLS, BLOCK_CELLS).astype(bool)

    def box(self, top: int, bottom: int, left: int, right: int) -> np.ndarray:
        """The cells [top, bottom) x [left, right), (rows, cols) bool; a cell past the map
        is not set."""
        out = np.zeros((bottom - top, right - left), bool)
        (b0, b1), (k0, k1), (inner_bottom, inner_right) = self._blocks_of(top, bottom, left, right)
        if b0 >= b1 or k0 >= k1:
            return out
        states = self.state[b0:b1, k0:k1]
        whole = np.repeat(np.repeat(states == self.ALL, BLOCK_CELLS, 0), BLOCK_CELLS, 1)
        y, x = b0 * BLOCK_CELLS, k0 * BLOCK_CELLS
        out[:inner_bottom - top, :inner_right - left] = whole[top - y:inner_bottom - y, left - x:inner_right - x]
        for row, col in zip(*np.nonzero(states == self.SOME)):
            y, x = (b0 + row) * BLOCK_CELLS, (k0 + col) * BLOCK_CELLS
            y0, y1 = max(y, top), min(y + BLOCK_CELLS, inner_bottom)
            x0, x1 = max(x, left), min(x + BLOCK_CELLS, inner_right)
            block = self._mixed_block(b0 + row, k0 + col)
            out[y0 - top:y1 - top, x0 - left:x1 - left] = block[y0 - y:y1 - y, x0 - x:x1 - x]
        return out

    def all_set(self, top: int, bottom: int, left: int, right: int) -> bool:
        """Whether every cell of the box is set: from the blocks' states alone unless the
        box meets a mixed block (a cell past the map is not set)."""
        if bottom > self.shape[0] or right > self.shape[1]:
            return False
        (b0, b1), (k0, k1), _ = self._blocks_of(top, bottom, left, right)
        states = self.state[b0:b1, k0:k1]
        if (states == self.NONE).any():
            return False
        return bool((states == self.ALL).all() or self.box(top, bottom, left, right).all())

    def count(self, top: int = 0, bottom: int | None = None, left: int = 0, right: int | None = None) -> int:
        """How many cells of the box (the whole map by default) are set."""
        bottom = self.shape[0] if bottom is None else bottom
        right = self.shape[1] if right is None else right
        (b0, b1), (k0, k1), (inner_bottom, inner_right) = self._blocks_of(top, bottom, left, right)
        if b0 >= b1 or k0 >= k1:
            return 0
        heights = _overlaps(np.arange(b0, b1), top, inner_bottom)
        widths = _overlaps(np.arange(k0, k1), left, inner_right)
        states = self.state[b0:b1, k0:k1]
        total = int((heights[:, None] * widths[None, :])[states == self.ALL].sum())
        for row, col in zip(*np.nonzero(states == self.SOME)):
            y, x = (b0 + row) * BLOCK_CELLS, (k0 + col) * BLOCK_CELLS
            total += int(self.box(max(y, top), min(y + BLOCK_CELLS, inner_bottom),
                                  max(x, left), min(x + BLOCK_CELLS, inner_right)).sum())
        return total

    def any(self) -> bool:
        return bool((self.state != self.NONE).any())

    def clear_bounds(self) -> tuple[int, int, int, int] | None:
        """(first row, last row, first column, last column) of the cells not set; None
        where every cell is."""
        open_blocks = self.state != self.ALL
        if not open_blocks.any():
            return None
        rows, cols = np.nonzero(open_blocks.any(axis=1))[0], np.nonzero(open_blocks.any(axis=0))[0]
        top, bottom = self._clear_lines(rows[0], 0), self._clear_lines(rows[-1], 0)
        left, right = self._clear_lines(cols[0], 1), self._clear_lines(cols[-1], 1)
        return int(top[0]), int(bottom[-1]), int(left[0]), int(right[-1])

    def _clear_lines(self, block: int, axis: int) -> np.ndarray:
        """The rows (axis 0) or columns (1) of block row (or column) `block` that hold a
        cell not set, as indices into the map."""
        start = block * BLOCK_CELLS
        stop = min(start + BLOCK_CELLS, self.shape[axis])
        band = self.box(start, stop, 0, self.shape[1]) if axis == 0 else self.box(0, self.shape[0], start, stop)
        return start + np.nonzero((~band).any(axis=1 - axis))[0]

    def nearest_clear(self, row: float, col: float) -> tuple[int, int] | None:
        """The cell not set nearest (row, col) (ties: the first in row order); None where
        every cell is. Blocks are looked in from the nearest, until none left can hold
        a nearer cell."""
        rows, cols = np.nonzero(self.state != self.ALL)
        if not rows.size:
            return None
        near = _outside(rows, row) ** 2 + _outside(cols, col) ** 2
        best = None
        for i in np.argsort(near, kind="stable"):
            if best is not None and near[i] > best[0]:
                break
            y, x = rows[i] * BLOCK_CELLS, cols[i] * BLOCK_CELLS
            bottom, right = min(y + BLOCK_CELLS, self.shape[0]), min(x + BLOCK_CELLS, self.shape[1])
            ys, xs = np.nonzero(~self.box(y, bottom, x, right))
            ys, xs = ys + y, xs + x
            distance = (ys - row) ** 2 + (xs - col) ** 2
            first = np.lexsort((xs, ys, distance))[0]
            best = min(best or (np.inf, 0, 0), (distance[first], int(ys[first]), int(xs[first])))
        return best[1], best[2]

    def _blocks_of(self, top, bottom, left, right):
        """The blocks [b0, b1) x [k0, k1) the box meets within the map, and the box's
        bottom and right cut to the map."""
        inner_bottom, inner_right = min(bottom, self.shape[0]), min(right, self.shape[1])
        rows = (top // BLOCK_CELLS, -(-inner_bottom // BLOCK_CELLS)) if top < inner_bottom else (0, 0)
        cols = (left // BLOCK_CELLS, -(-inner_right // BLOCK_CELLS)) if left < inner_right else (0, 0)
        return rows, cols, (inner_bottom, inner_right)


def _outside(blocks: np.ndarray, at: float) -> np.ndarray:
    """How far `at` lies outside each block's cells (by index along an axis); 0 within."""
    return np.maximum(0, np.maximum(blocks * BLOCK_CELLS - at, at - (blocks * BLOCK_CELLS + BLOCK_CELLS - 1)))


def _overlaps(blocks: np.ndarray, start: int, stop: int) -> np.ndarray:
    """How many of [start, stop) each block (by index along an axis) holds."""
    return np.clip(np.minimum((blocks + 1) * BLOCK_CELLS, stop) - np.maximum(blocks * BLOCK_CELLS, start), 0, None)


def cells_left_out(source, grid, skip_background: float | None, max_nodata: float = DEFAULT_MAX_NODATA,
                   mask: np.ndarray | None = None, skip_damaged: bool = False):
    """The `Background` of a run: for a raster with no-data, where some cell is left out
    or --skip-background is given; with --skip-background for other images; None where
    no cell is left out (`max_nodata` 1; a float raster without NaN, found in one read
    as stored; a no-data value the raster's type cannot hold, found without reading),
    so such a run picks its tiles as any other does. A raster whose declared no-data
    value none of its pixels can hold (-9999 in 8 bits) is an image like any other:
    --skip-background's tissue test applies to it. A user's `mask` (`load_mask`) leaves
    out what it does not cover, and a raster's no-data as well. `skip_damaged`
    (--skip-damaged): the no-data is counted around tiles that cannot be decoded (the
    count stopped a run that was to map around them)."""
    from graphconv.sources import nodata_can_occur

    if mask is not None:
        return Background(source, grid.cell_area, None, max_nodata, mask, skip_damaged)
    if nodata_can_occur(source):
        if max_nodata >= 1 and skip_background is None:
            return None
        background = Background(source, grid.cell_area, skip_background, max_nodata, skip_damaged=skip_damaged)
        if skip_background is None and not background.nodata_cells().any():
            return None
        return background
    if skip_background is None:
        return None
    return Background(source, grid.cell_area, skip_background)


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
        return _darker_than_glass(picture[0].astype(np.float32), threshold)
    rgb = picture[:3].astype(np.float32)
    brightest, dullest = rgb.max(axis=0), rgb.min(axis=0)
    coloured = np.where(brightest > 0, (brightest - dullest) / np.maximum(brightest, 1e-6), 0.0) >= threshold
    if not _grey(picture[:3]):
        return coloured
    # grey but for a few pixels: darkness, and any colour there is (a small stained biopsy is under 0.1%)
    return coloured | _darker_than_glass(rgb.mean(axis=0), threshold)


GLASS_QUANTILE = 0.99  # the brightness of a grey picture's glass: all but its brightest 1% (dust, glare) is no brighter


def _darker_than_glass(brightness: np.ndarray, threshold: float) -> np.ndarray:
    """Where a grey picture is darker than its glass by `threshold` of it. The glass is
    the picture's own bright level (`GLASS_QUANTILE`), not white: off-white glass (242, or
    a tint of 238-242) was more than 0.05 darker than white, so a blank slide, and a
    small biopsy's slide, had every cell computed as tissue. A picture with no bright
    background at all (tissue edge to edge) is measured against 1 - 2 x threshold of
    white at least, so its tissue stays tissue."""
    if not brightness.size:
        return brightness > 0
    glass = max(float(np.quantile(brightness, GLASS_QUANTILE)), 255 * (1 - 2 * threshold))
    return brightness <= glass * (1 - threshold)


GREY_SPREAD = 4  # levels of 255 an RGB picture's bands may differ by in 99.9% of its pixels and it be grey


def _grey(rgb: np.ndarray) -> bool:
    """Whether an RGB picture is grey: the spread of its bands (max - min) within
    GREY_SPREAD levels in all but 0.1% of its pixels (a stained slide's tissue spreads
    by tens of levels; a grey one's JPEG or a scanner's cast by a few)."""
    spread = rgb.max(axis=0).astype(np.float32) - rgb.min(axis=0)
    return bool(np.quantile(spread, 0.999) <= GREY_SPREAD) if spread.size else True


def blank_tiles(tiles, blank_cells) -> list:
    """The tiles all of whose cells `blank_cells(tile)` marks (none without it), which need
    not be computed: what `tiling.run_tiled` and `cluster.run_tiles_on_cluster` both skip.
    Each mask is made and dropped (a stride-1 map's masks are a byte a cell, the size of
    the map); a tile's is made again when its block is written."""
    return [t for t in tiles if blank_cells(t).all()] if blank_cells is not None else []


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
