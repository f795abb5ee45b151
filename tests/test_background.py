"""Skipping the tiles of a slide with no tissue (graphconv.background): which tiles are
blank, and that a run that skips them writes every other cell exactly as the whole
image's pass, the skipped ones as "not computed"."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphconv
from conftest import SPECS
from graphconv.background import NO_CLASS, Background, tissue_mask
from graphconv.errors import GraphconvError
from graphconv.tiling import DenseGrid, map_transform, plan_tiles, run_tiled

GLASS = 235  # a slide's background: bright and grey


def test_tissue_is_colour_on_rgb_and_darkness_on_grey():
    rgb = np.full((3, 2, 3), GLASS, np.float32)
    rgb[:, 0, 0] = (200, 120, 180)  # eosin pink: saturated
    rgb[:, 0, 1] = (90, 90, 92)     # a dark grey smudge: unsaturated, so glass
    rgb[:, 1, 2] = (250, 238, 250)  # pale tissue, saturation 0.048: under the default 0.05
    assert tissue_mask(rgb).tolist() == [[True, False, False], [False, False, False]]
    assert tissue_mask(rgb, 0.04)[1, 2]
    grey = np.array([[[255, 244, 240, 10]]], np.float32)
    assert tissue_mask(grey).tolist() == [[False, False, True, True]]
    biopsy = np.full((3, 1000, 1000), 245, np.float32)  # a stained speck under 0.1% of a grey-looking slide
    biopsy[:, 500:530, 500:530] = np.array([235, 160, 200], np.float32)[:, None, None]
    assert tissue_mask(biopsy, 0.1).sum() == 900


@pytest.mark.parametrize("glass", [(242, 242, 242), (238, 239, 242), (250, 250, 250)])
@pytest.mark.parametrize("biopsy_side", [0, 20, 200])
def test_off_white_glass_is_glass_around_any_size_of_biopsy(glass, biopsy_side):
    """Glass of 242 (or tinted 238-242) was more than 0.05 darker than white: a blank
    slide, or one with a biopsy under 0.1% of it (so judged grey), had all its glass
    counted as tissue (a review: 0 cells left out, no "no tissue" note). Darkness is
    measured against the picture's own glass."""
    slide = np.empty((3, 1000, 1000), np.float32)
    slide[:] = np.array(glass, np.float32)[:, None, None]
    slide[:, 400:400 + biopsy_side, 400:400 + biopsy_side] = np.array([180, 80, 160], np.float32)[:, None, None]
    assert tissue_mask(slide).sum() == biopsy_side ** 2
    grey = slide.mean(axis=0, keepdims=True)
    grey[:, 400:400 + biopsy_side, 400:400 + biopsy_side] = 140  # a grey slide's dark tissue
    assert tissue_mask(grey).sum() == biopsy_side ** 2
    edge_to_edge = np.full((1, 100, 100), 200, np.float32)  # tissue everywhere, no glass to measure by
    assert tissue_mask(edge_to_edge).all()


@pytest.fixture(scope="module")
def lenet():
    return graphconv.compile_model(SPECS / "lenet.yaml")


def page_with_a_blot(height=150, width=170):
    """A grey page (LeNet reads one channel), white but for a dark blot at its bottom right."""
    page = np.full((1, 1, height, width), 250.0, np.float32)
    page[0, 0, 110:130, 130:160] = 40.0
    return page


class PixelSource:
    """The page as a source: what `Background` makes its mask from (values on 0..255)."""

    def __init__(self, pixels):
        self.pixels, self.path = pixels, None
        _, self.channels, self.height, self.width = pixels.shape

    def read(self, top, left, bottom, right):
        return self.pixels[0, :, top:bottom, left:right]


def page_background(page, grid) -> Background:
    """The cells a page's tissue mask leaves out, as the page gives it (not a thumbnail):
    a --mask of the page's own size."""
    return Background(PixelSource(page), grid.cell_area, None, mask=tissue_mask(page[0]))


def test_a_tile_is_blank_when_no_tissue_is_near_its_cells_centres(lenet, monkeypatch):
    import graphconv.sources as sources
    page = page_with_a_blot()
    monkeypatch.setattr(sources, "thumbnail", lambda source, **_: (source.pixels[0], (1.0, 1.0)))
    grid = DenseGrid(lenet)
    background = Background(PixelSource(page), grid.cell_area)
    plan = plan_tiles(grid, page.shape[2:], 48)
    blank = {t for t in plan.tiles if background.is_blank(t)}
    tissue = np.argwhere(page[0, 0] < 128) + 0.5  # the pixels' centres
    field = grid.cell_area

    def centres(cells, axis):  # from the first cell's centre less half a stride to the last's plus half
        centre = lambda cell: field.offset[axis] + cell * field.stride[axis] + field.size[axis] / 2
        return centre(cells[0]) - field.stride[axis] / 2, centre(cells[1] - 1) + field.stride[axis] / 2

    def tissue_within(tile, margin):
        (y0, y1), (x0, x1) = centres(tile.rows, 0), centres(tile.cols, 1)
        return ((tissue[:, 0] >= y0 - margin) & (tissue[:, 0] <= y1 + margin)
                & (tissue[:, 1] >= x0 - margin) & (tissue[:, 1] <= x1 + margin)).any()

    for tile in plan.tiles:
        if tissue_within(tile, 0):
            assert tile not in blank, f"{tile}: tissue within half a stride of its cells' centres"
        if not tissue_within(tile, 2):
            assert tile in blank, f"{tile}: no tissue near its cells"
    assert 0 < len(blank) < len(plan.tiles)


@pytest.mark.parametrize("reduce", [None, "argmax"])
def test_blank_cells_are_not_computed_whatever_the_tiling_and_the_others_are_exact(lenet, reduce):
    """A cell with no tissue near its centre is written as not computed in every tiling
    (it used to get scores when its tile also held tissue, so the map depended on --tile);
    a tile of such cells alone is not read; every other cell is the whole image's."""
    page = page_with_a_blot()
    x = (page - 128) / 64  # what the network reads; the mask is made from the page itself
    grid = DenseGrid(lenet)
    whole = lenet.run(x)
    transform, _, _ = map_transform(reduce, None, lenet.output_channels)
    background = page_background(page, grid)
    want = whole if transform is None else transform(whole)
    maps = []
    for tile in (48, 64):
        read = []
        source = PixelSource(x)
        original = source.read
        source.read = lambda *box: read.append(box) or original(*box)
        maps.append(run_tiled(grid, source, tile, transform=transform, blank_cells=background.blank_cells))
        plan = plan_tiles(grid, page.shape[2:], tile)
        assert sorted(read) == sorted(t.box for t in plan.tiles if not background.is_blank(t))
        blank = np.zeros(want.shape[2:], bool)
        for t in plan.tiles:
            blank[t.rows[0]:t.rows[1], t.cols[0]:t.cols[1]] = background.blank_cells(t)
        assert 0 < blank.sum() < blank.size
        np.testing.assert_allclose(maps[-1][:, :, ~blank], want[:, :, ~blank], rtol=1e-4, atol=1e-6)
        skipped = maps[-1][:, :, blank]
        assert (np.isnan(skipped) if reduce is None else skipped == NO_CLASS).all()
    np.testing.assert_array_equal(np.isnan(maps[0]) if reduce is None else maps[0] == NO_CLASS,
                                  np.isnan(maps[1]) if reduce is None else maps[1] == NO_CLASS)


def test_a_cell_is_blank_exactly_when_no_tissue_lies_within_half_a_stride_of_its_centre(lenet):
    """The pixels counted are those the square of one stride around the cell's centre
    (its crop's, in pixel-area coordinates, where the map's georeference puts it)
    overlaps; the pixel just past its edge, which it only touches, is not (it was, so
    the rule kept a cell row more than it said)."""
    page = page_with_a_blot()
    grid = DenseGrid(lenet)
    background = page_background(page, grid)
    plan = plan_tiles(grid, page.shape[2:], 48)
    field, tissue = grid.cell_area, background.tissue
    for t in plan.tiles:
        mask = background.blank_cells(t)
        assert background.is_blank(t) == mask.all() and background.blank_count(t) == mask.sum()
        for i, row in enumerate(range(*t.rows)):
            for j, col in enumerate(range(*t.cols)):
                cy = field.offset[0] + row * field.stride[0] + field.size[0] / 2
                cx = field.offset[1] + col * field.stride[1] + field.size[1] / 2
                near = tissue[max(0, int(np.floor(cy - field.stride[0] / 2))):int(np.ceil(cy + field.stride[0] / 2)),
                              max(0, int(np.floor(cx - field.stride[1] / 2))):int(np.ceil(cx + field.stride[1] / 2))]
                assert mask[i, j] == (not near.any()), (row, col)


def test_a_threshold_outside_0_to_1_is_refused(lenet):
    with pytest.raises(GraphconvError, match="between 0 and 1"):
        Background(PixelSource(page_with_a_blot()), DenseGrid(lenet).cell_area, 1.5)


def test_the_default_tile_reads_the_fewest_pixels_with_tissue(lenet, monkeypatch):
    """Without --tile, the size whose tiles with tissue read the fewest pixels, of the
    sizes tried (here from LeNet's smallest tile, the bounds lowered to this small page)."""
    import graphconv.background as background_module
    import graphconv.sources as sources

    page = np.full((1, 1, 400, 500), 250.0, np.float32)
    page[0, 0, 30:60, 40:90] = 40.0  # two blots far apart: small tiles skip the glass between them
    page[0, 0, 330:350, 420:470] = 40.0
    monkeypatch.setattr(sources, "thumbnail", lambda source, **_: (source.pixels[0], (1.0, 1.0)))
    monkeypatch.setattr(background_module, "SMALLEST_TILE", 40)
    monkeypatch.setattr(background_module, "LARGEST_TILE", 500)
    grid = DenseGrid(lenet)
    background = Background(PixelSource(page), grid.cell_area)
    chosen = background.cheapest_tile(grid, (400, 500))

    def pixels_read(size):
        return sum(t.pixels for t in plan_tiles(grid, (400, 500), size).tiles if not background.is_blank(t))

    fewest = min(pixels_read(size) for size in range(40, 501, 10))
    assert pixels_read(chosen) <= 1.2 * fewest  # the sizes tried are a sample
    assert pixels_read(chosen) < pixels_read(500) / 4  # against one tile of the whole page
    # within a budget of its own (an --images worker's share of the command's), not this process's
    from graphconv.tiling import choose_tile, tile_bytes
    budget = tile_bytes(grid, (64, 64))
    small = choose_tile(grid, (400, 500), budget)
    assert background.cheapest_tile(grid, (400, 500), budget) <= small < max(chosen, 100)


# ---- rasters of bands: judged by their no-data value, or refused ---------------------------------

def test_bands_that_are_no_picture_and_declare_no_no_data_are_refused(lenet, tmp_path):
    """A satellite scene's bands are no colours: a bright cloud, equal in every band, has
    no saturation and was skipped as glass (NaN cells, exit 0). Without a no-data value
    there is nothing to tell its blank pixels by, so --skip-background says what it needs."""
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("zarr")
    from graphconv.sources import open_source

    bands = np.random.default_rng(0).integers(0, 10000, (4, 40, 50), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "scene.tif", bands, photometric="minisblack", planarconfig="separate")
    write_zarr(tmp_path / "scene.zarr", bands)
    for name in ("scene.tif", "scene.zarr"):
        source = open_source(tmp_path / name, 3, {"values": "stored"}, bands=(3, 2, 1))
        with pytest.raises(GraphconvError, match=rf"^{name}: --skip-background: a raster of 4 bands that is not a "
                                                 r"picture .* declares no no-data value: .*give the raster a "
                                                 r"no-data value \(--nodata VALUE, or GDAL's no-data tag in a "
                                                 r"TIFF, a _FillValue attribute in a zarr array\) or run without "
                                                 r"--skip-background$"):
            Background(source, DenseGrid(lenet).cell_area)


def write_zarr(path, bands, **attrs):
    import zarr

    stored = zarr.open_array(str(path), mode="w", shape=bands.shape, chunks=(4, 16, 16), dtype=bands.dtype,
                             dimension_names=["band", "y", "x"])
    stored[:] = bands
    stored.attrs.update(attrs)


def test_a_zarr_s_fill_value_leaves_out_cells_whose_crop_is_mostly_no_data_not_colour(lenet, tmp_path):
    """A scene whose left part is outside the swath (its `_FillValue`, 0, in every band)
    and with a bright cloud (9000 in every band): a cell is left out when more than
    --max-nodata of its crop is no-data, counted at full resolution (it was a thumbnail
    test of the square at the cell's centre, which computed cells 81% no-data); the
    cloud, colourless as it is, is data to compute."""
    pytest.importorskip("zarr")
    from graphconv.sources import open_source

    bands = np.random.default_rng(1).integers(1, 10000, (4, 60, 80), dtype=np.uint16)
    bands[:, :, :30] = 0
    bands[:, 10:30, 50:70] = 9000
    write_zarr(tmp_path / "swath.zarr", bands, _FillValue=0)
    source = open_source(tmp_path / "swath.zarr", 3, {"values": "stored"}, bands=(3, 2, 1))
    grid = DenseGrid(lenet)
    area = grid.cell_area
    plan = plan_tiles(grid, (60, 80), 40)
    for max_nodata in (0.0, 0.5, 0.9):
        background = Background(source, area, None, max_nodata)
        assert background.nodata == 0
        for t in plan.tiles:
            blank = background.blank_cells(t)
            for i, row in enumerate(range(*t.rows)):
                for j, col in enumerate(range(*t.cols)):
                    top, left, bottom, right = area.box(row, col)
                    share = (bands[0, top:bottom, left:right] == 0).mean()
                    assert blank[i, j] == (share > max_nodata), (max_nodata, row, col, share)


def rgb_lenet(write_spec):
    """LeNet on three channels, with a preprocess whose mean is not 0."""
    text = (SPECS / "lenet.yaml").read_text().replace("shape: [1, 32, 32]", "shape: [3, 32, 32]")
    return graphconv.compile_model(write_spec("preprocess: {scale: 0.00392, mean: [0.5, 0.5, 0.5], "
                                              "std: [0.25, 0.25, 0.25]}\n" + text))


def test_a_colour_with_zero_bands_is_data_and_its_cells_are_computed(write_spec, tmp_path):
    """An 8-bit RGB picture with GDAL no-data 0 (the common tag): saturated red (220, 0,
    0) has G = B = 0, and a pixel counted as no-data where any band held the no-data
    value, so the red field's cells were left out (NaN) and the cells at its edge fed
    its G and B as the preprocess mean. Now a pixel is no-data only where every band
    holds 0 (GDAL's dataset mask): the red field's cells are computed, each exactly the
    cell of a run over the same pixels with no no-data tag; the black corner's are not."""
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("zarr")
    from graphconv.background import cells_left_out
    from graphconv.sources import open_source

    model = rgb_lenet(write_spec)
    picture = np.full((96, 96, 3), 128, np.uint8)
    picture[:, 40:] = (220, 0, 0)
    picture[:40, :40] = 0  # no-data
    tifffile.imwrite(tmp_path / "red.tif", picture, photometric="rgb", extratags=[(42113, 2, 2, "0", True)])
    tifffile.imwrite(tmp_path / "plain.tif", picture, photometric="rgb")
    preprocess = model.graph.meta.get("preprocess")
    grid = DenseGrid(model)
    tagged = open_source(tmp_path / "red.tif", 3, preprocess)
    background = cells_left_out(tagged, grid, None)
    scores = run_tiled(grid, tagged, 48, blank_cells=background.blank_cells)
    plain = run_tiled(grid, open_source(tmp_path / "plain.tif", 3, preprocess), 48)
    left_out = np.isnan(scores[0, 0])
    corner = np.zeros(left_out.shape, bool)
    for row in range(corner.shape[0]):
        for col in range(corner.shape[1]):
            top, left, bottom, right = grid.cell_area.box(row, col)
            corner[row, col] = (picture[top:bottom, left:right] == 0).all(axis=2).mean() > 0.5
    assert corner.any() and not corner.all()
    np.testing.assert_array_equal(left_out, corner)
    clear = np.ones(corner.shape, bool)  # cells whose field holds no no-data pixel
    for row in range(corner.shape[0]):
        for col in range(corner.shape[1]):
            top, left, bottom, right = grid.field.box(row, col)
            clear[row, col] = not (picture[max(top, 0):bottom, max(left, 0):right] == 0).all(axis=2).any()
    red = np.arange(corner.shape[1]) * 4 >= 40  # cells whose crops start in the red field
    assert clear[:, red].all()
    np.testing.assert_array_equal(scores[:, :, clear], plain[:, :, clear])


@pytest.mark.parametrize("factor", [1, 2, 2.5])
def test_the_no_data_cells_read_each_row_once_as_stored(tmp_path, monkeypatch, factor):
    """The no-data cells were counted from bands of cell rows each read with the rows
    the next band reads again ((rows - 1) x stride + crop rows for rows x stride: 1.9x
    to 3.9x the image, 20x for a very wide one), through the spec's full preprocess, on
    an int64 summed-area table of the band (3.2 s and 594 MB for 2048x20000 RGB where a
    read took 0.7 s; 61 s and 3.6 GB for 700x100000). Now each row of the image is read
    once, as stored, into counts at the crops' edges; the cells are the same: each
    left out exactly when more than max_nodata of its crop is no-data."""
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("zarr")
    import graphconv.background as background
    from graphconv.receptive import Field
    from graphconv.sources import ArrayLikeSource, open_source

    rng = np.random.default_rng(3)
    picture = rng.integers(1, 255, (230, 310, 3), dtype=np.uint8)
    for _ in range(12):
        y, x = rng.integers(0, 200), rng.integers(0, 280)
        picture[y:y + rng.integers(5, 60), x:x + rng.integers(5, 90)] = 0
    picture[:, :70] = 0
    tifffile.imwrite(tmp_path / "nd.tif", picture, photometric="rgb", tile=(32, 32),
                     extratags=[(42113, 2, 2, "0", True)])
    source = open_source(tmp_path / "nd.tif", 3, {"scale": 2.0}, downsample=factor)
    _, mask = source.read_masked(0, 0, source.height, source.width)
    read, stored = [], ArrayLikeSource._stored
    monkeypatch.setattr(ArrayLikeSource, "_stored", lambda self, *box: read.append(box) or stored(self, *box))
    monkeypatch.setattr(ArrayLikeSource, "_finish", lambda *_: pytest.fail("the no-data cells ran the preprocess"))
    monkeypatch.setattr(background, "MASK_PIXELS", 40 * 310)  # reads of a few rows
    for field in (Field((61, 61), (8, 8), (-30, -30)), Field((16, 16), (16, 16), (0, 0)), Field((5, 5), (9, 9), (2, 2))):
        read.clear()
        cells = Background(source, field, None, 0.4)
        blank = cells.nodata_cells()
        blank = blank.box(0, blank.shape[0], 0, blank.shape[1])
        rows = [row for top, _, bottom, _ in read for row in range(top, bottom)]
        assert len(rows) == len(set(rows)) or factor != int(factor)  # each row once (a 2.5x square shares one)
        assert len(rows) <= picture.shape[0] * 1.05 and all(box[3] - box[1] == picture.shape[1] for box in read)
        for row in range(blank.shape[0]):
            for col in range(blank.shape[1]):
                top, left, bottom, right = field.box(row, col)
                crop = mask[0, max(top, 0):bottom, max(left, 0):right]
                assert blank[row, col] == (crop.mean() > 0.4), (field, row, col)


def test_a_float_raster_without_nan_leaves_nothing_out_at_the_cost_of_one_read(lenet, tmp_path, monkeypatch):
    """Any float raster may hold NaN, its no-data: the no-data cells were worked out for
    every one (the image read 1.9x or more through the preprocess), and a run took the
    --skip-background tile choice (tiles of at most 2048, no note that the whole image
    would need more). Now one read as stored finds no no-data and the run is one that
    leaves nothing out (no Background); a raster with NaN still leaves its cells out."""
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("zarr")
    from graphconv.background import cells_left_out
    from graphconv.sources import ArrayLikeSource, open_source

    pixels = np.random.default_rng(4).random((120, 90)).astype(np.float32)
    tifffile.imwrite(tmp_path / "clear.tif", pixels, tile=(32, 32))
    pixels[:60] = np.nan
    tifffile.imwrite(tmp_path / "holes.tif", pixels, tile=(32, 32))
    read, stored = [], ArrayLikeSource._stored
    monkeypatch.setattr(ArrayLikeSource, "_stored", lambda self, *box: read.append(box) or stored(self, *box))
    grid = DenseGrid(lenet)
    assert cells_left_out(open_source(tmp_path / "clear.tif", 1, None), grid, None) is None
    assert sum((b - t) * (r - l) for t, l, b, r in read) <= pixels.size
    holes = cells_left_out(open_source(tmp_path / "holes.tif", 1, None), grid, None)
    assert holes is not None
    blank = holes.nodata_cells()
    assert 0 < blank.count() < blank.shape[0] * blank.shape[1]


def test_skip_background_on_a_raster_whose_no_data_value_its_pixels_cannot_hold_tests_for_tissue(
        write_spec, tmp_path):
    """An 8-bit TIFF tagged with GDAL's no-data -9999 (a value no pixel of it can hold, so
    every pixel is data): --skip-background's tissue test was switched off as for a raster
    with no-data, and every cell computed. It is an image like any other: the cells over
    its bright empty glass are left out."""
    tifffile = pytest.importorskip("tifffile")
    from graphconv.background import cells_left_out
    from graphconv.sources import open_source, tiff_notes

    model = rgb_lenet(write_spec)
    picture = np.full((96, 96, 3), 245, np.uint8)  # bright glass
    picture[:, :40] = (200, 40, 90)  # stained tissue on the left
    tifffile.imwrite(tmp_path / "slide.tif", picture, photometric="rgb", extratags=[(42113, 2, 6, "-9999", True)])
    source = open_source(tmp_path / "slide.tif", 3, model.graph.meta.get("preprocess"))
    assert source.missing_value == -9999
    assert tiff_notes(source) == ["its no-data value -9999 is no value its uint8 pixels can hold, so no pixel is "
                                  "no-data and every cell is computed (GDAL reads it so too)"]  # it was said nowhere
    background = cells_left_out(source, DenseGrid(model), 0.1)
    assert background is not None
    tiles = plan_tiles(DenseGrid(model), (96, 96), 96).tiles
    blank = background.blank_cells(tiles[0])
    assert blank[:, -3:].all() and not blank[:, :2].any()


def test_a_grey_picture_has_its_darkness_tested_whatever_channels_the_network_takes(write_spec, tmp_path):
    """A grey slide run through an RGB model (its grey repeated into three channels), or
    saved as RGB with equal bands, has no saturation: every cell of it was left out, the
    dark tissue with the glass. It is judged as the grey image it is; an RGB slide through
    a grey model still by its colour, not by its luma."""
    tifffile = pytest.importorskip("tifffile")
    from graphconv.background import cells_left_out
    from graphconv.sources import open_source

    grey = np.full((96, 96), 250, np.uint8)
    grey[:, :40] = 80  # dark tissue on the left
    tifffile.imwrite(tmp_path / "grey.tif", grey, tile=(32, 32))
    tifffile.imwrite(tmp_path / "as-rgb.tif", np.repeat(grey[:, :, None], 3, axis=2), photometric="rgb")
    cast = np.random.default_rng(0).integers(-1, 2, (96, 96, 3))  # a scanner's, or JPEG's, level or two
    tifffile.imwrite(tmp_path / "near-grey.tif", (grey[:, :, None] + cast).astype(np.uint8), photometric="rgb")
    colour = np.full((96, 96, 3), 235, np.uint8)  # glass a grey model's luma calls dark
    colour[:, :40] = (200, 40, 90)
    tifffile.imwrite(tmp_path / "colour.tif", colour, photometric="rgb")
    rgb_model, grey_model = rgb_lenet(write_spec), graphconv.compile_model(SPECS / "lenet.yaml")
    for model, image in ((rgb_model, "grey.tif"), (rgb_model, "as-rgb.tif"), (rgb_model, "near-grey.tif"),
                         (grey_model, "grey.tif"),
                         (grey_model, "colour.tif"), (rgb_model, "colour.tif")):
        source = open_source(tmp_path / image, model.crop_shape[0], model.graph.meta.get("preprocess"))
        grid = DenseGrid(model)
        [tile] = plan_tiles(grid, (96, 96), 96).tiles
        blank = cells_left_out(source, grid, 0.1).blank_cells(tile)
        assert blank[:, -3:].all() and not blank[:, :2].any(), (model.graph.name, image)


def test_a_run_whose_tissue_test_finds_nothing_says_so(write_spec, tmp_path):
    """A dark-field image, or too high a threshold: every cell left out, exit 0, and no
    word of it but the count."""
    from conftest import graphconv_in_process

    pil = pytest.importorskip("PIL.Image")
    pil.fromarray(np.full((96, 96, 3), 250, np.uint8)).save(tmp_path / "glass.png")
    assert graphconv_in_process("compile", SPECS / "lenet.yaml", "-o", tmp_path / "m").returncode == 0
    result = graphconv_in_process("run", tmp_path / "m", "--image", tmp_path / "glass.png", "--skip-background",
                                  "--output", tmp_path / "map.npy")
    assert result.returncode == 0 and "--skip-background 0.05 found no tissue anywhere" in result.stderr
    assert np.isnan(np.load(tmp_path / "map.npy")).all()
    stained = np.full((96, 96, 3), 250, np.uint8)
    stained[30:70, 30:70] = (200, 40, 90)
    pil.fromarray(stained).save(tmp_path / "stained.png")
    batch = graphconv_in_process("run", tmp_path / "m", "--images", tmp_path / "*.png", "--skip-background",
                                 "--output-dir", tmp_path / "maps")
    assert batch.returncode == 0 and batch.stderr.count("found no tissue in it") == 1
    assert "glass.png: --skip-background 0.05 found no tissue in it" in batch.stderr


def test_a_users_mask_leaves_out_the_cells_it_does_not_mark_and_keeps_the_rest_exact(tmp_path):
    """A pathologist's tissue mask (QuPath, HistoQC) could go in only through Python's
    run_tiled(blank_cells=...). --mask: a cell is computed where a marked pixel lies in
    the square of one stride around its centre, the mask stretched over the image."""
    from conftest import graphconv_in_process as run

    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(1)
    pil.fromarray(rng.integers(0, 256, (100, 120), dtype=np.uint8)).save(tmp_path / "page.png")
    mask = np.zeros((50, 60), np.uint8)  # half the image's size: stretched 2x
    mask[20:30, 15:25] = 255  # image rows 40..60, columns 30..50
    pil.fromarray(mask).save(tmp_path / "mask.png")
    assert run("compile", SPECS / "lenet.yaml", "-o", tmp_path / "m").returncode == 0
    masked = run("run", tmp_path / "m", "--image", tmp_path / "page.png", "--mask", tmp_path / "mask.png",
                 "--output", tmp_path / "masked.npy")
    assert masked.returncode == 0 and "lie outside" in masked.stderr, masked.stderr
    assert run("run", tmp_path / "m", "--image", tmp_path / "page.png", "--output", tmp_path / "all.npy").returncode == 0
    scores, everything = np.load(tmp_path / "masked.npy"), np.load(tmp_path / "all.npy")
    kept = ~np.isnan(scores[0, 0])
    expected = np.zeros_like(kept)
    expected[6:12, 4:9] = True  # the squares [14 + 4 r, 18 + 4 r) around the crops' centres 16 + 4 r (where the
    # map's georeference puts them) that overlap image rows [40, 60) and columns [30, 50), mask rows 20..29 and
    # columns 15..24 stretched 2x: cell column 9's square [50, 54) only touches the mask's edge
    np.testing.assert_array_equal(kept, expected)
    np.testing.assert_allclose(scores[..., kept], everything[..., kept], rtol=1e-5, atol=1e-6)
    pil.fromarray(np.zeros((50, 90), np.uint8)).save(tmp_path / "wide.png")
    for extra, message in ((["--mask", tmp_path / "wide.png"], "must have the image's aspect ratio"),
                           (["--mask", tmp_path / "mask.png", "--skip-background"], "give one"),
                           (["--mask", tmp_path / "mask.png", "--resize", "50"], "not with --crops or --resize")):
        refused = run("run", tmp_path / "m", "--image", tmp_path / "page.png", *extra, "--output", tmp_path / "x.npy")
        assert refused.returncode == 2 and message in refused.stderr and not (tmp_path / "x.npy").exists()
    batch = run("run", tmp_path / "m", "--images", tmp_path / "page.png", "--mask", tmp_path / "mask.png",
                "--output-dir", tmp_path / "maps")
    assert batch.returncode == 2 and "a batch's images each have their own" in batch.stderr


@st.composite
def cell_maps(draw):
    """A bool map of cells as no-data makes them: rectangles set (a swath's outside, a
    cloud), some noise, on blocks of 4 to 16 cells a side."""
    block = draw(st.sampled_from([4, 5, 16]))
    rows, cols = draw(st.integers(1, 70)), draw(st.integers(1, 70))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    cells = rng.random((rows, cols)) < draw(st.sampled_from([0.0, 0.02, 0.5, 1.0]))
    for _ in range(draw(st.integers(0, 4))):
        y, x = rng.integers(0, rows), rng.integers(0, cols)
        cells[y:y + rng.integers(1, rows + 1), x:x + rng.integers(1, cols + 1)] = draw(st.booleans())
    return block, cells


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cell_maps(), st.data())
def test_cell_blocks_give_back_every_box_of_the_map_they_were_built_from(monkeypatch, case, data):
    """A run's no-data cells are kept as blocks (all set, none, or mixed bits) so that a
    stride-1 map of a large scene does not hold a byte a cell; whatever box is asked
    (across blocks, past the map's edge: not set there), its cells, whether all are set
    and how many are, are the map's; the cells not set are bounded and found nearest a
    point as a search of the whole map finds them."""
    from graphconv import background as module
    from graphconv.background import CellBlocks

    block, cells = case
    monkeypatch.setattr(module, "BLOCK_CELLS", block)
    blocks = CellBlocks.of(cells)
    rows, cols = cells.shape
    assert blocks.any() == cells.any() and blocks.count() == cells.sum()
    for _ in range(6):
        top, left = data.draw(st.integers(0, rows - 1)), data.draw(st.integers(0, cols - 1))
        bottom, right = data.draw(st.integers(top + 1, rows + 9)), data.draw(st.integers(left + 1, cols + 9))
        want = np.zeros((bottom - top, right - left), bool)
        part = cells[top:bottom, left:right]
        want[:part.shape[0], :part.shape[1]] = part
        np.testing.assert_array_equal(blocks.box(top, bottom, left, right), want)
        assert blocks.all_set(top, bottom, left, right) == want.all()
        assert blocks.count(top, bottom, left, right) == want.sum()
    clear_rows, clear_cols = np.nonzero(~cells)
    if not clear_rows.size:
        assert blocks.clear_bounds() is None and blocks.nearest_clear(0, 0) is None
        return
    assert blocks.clear_bounds() == (clear_rows.min(), clear_rows.max(), clear_cols.min(), clear_cols.max())
    point = data.draw(st.floats(-5, rows + 5)), data.draw(st.floats(-5, cols + 5))
    nearest = int(np.argmin((clear_rows - point[0]) ** 2 + (clear_cols - point[1]) ** 2))
    assert blocks.nearest_clear(*point) == (clear_rows[nearest], clear_cols[nearest])
