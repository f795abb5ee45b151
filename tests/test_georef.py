"""Score maps as GeoTIFFs (graphconv.georef): each cell lands on the ground its crop
covers, in the image's projection, whichever convention (pixel corners or centres) and
whatever rotation the image's georeference has."""
from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

tifffile = pytest.importorskip("tifffile")

from graphconv.georef import (GEO_KEY_DIRECTORY, GeoReference, cell_placement, map_georeference,  # noqa: E402
                              read_georeference, tiff_tags, write_map_tiff)
from graphconv.receptive import Field  # noqa: E402

UTM_33N_AREA = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633)
UTM_33N_POINT = UTM_33N_AREA[:8] + (1025, 0, 1, 2) + UTM_33N_AREA[12:]


def geotiff(path, directory=UTM_33N_AREA, scale=(10.0, 10.0), tiepoint=(0, 0, 0, 500000.0, 4600000.0, 0),
            matrix=None):
    """A 3-band GeoTIFF as GDAL writes one: tiepoint and pixel scale, or a matrix."""
    geo = [(34264, 12, 16, matrix, True)] if matrix is not None else [
        (33550, 12, 3, (*scale, 0.0), True), (33922, 12, 6, tiepoint, True)]
    tifffile.imwrite(path, np.zeros((40, 60, 3), np.uint8), photometric="rgb",
                     extratags=geo + [(GEO_KEY_DIRECTORY, 3, len(directory), directory, True)])
    return path


def model_xy(geo: GeoReference, col: float, row: float) -> np.ndarray:
    return geo.affine @ np.array([col, row, 1.0])


@pytest.mark.parametrize("crop, stride", [((64, 64), (4, 4)), ((224, 200), (32, 16))])
def test_a_map_cell_s_corner_and_size_in_pixel_corner_rasters(tmp_path, crop, stride):
    image = read_georeference(geotiff(tmp_path / "scene.tif"))
    cells = map_georeference(image, Field(crop, stride, (0, 0)))
    for r, c in [(0, 0), (3, 7)]:
        # cell (r, c) is the crop at (r, c) x stride: its centre, less half a stride, is the cell's corner
        top = r * stride[0] + crop[0] / 2 - stride[0] / 2
        left = c * stride[1] + crop[1] / 2 - stride[1] / 2
        np.testing.assert_allclose(model_xy(cells, c, r), (500000 + 10 * left, 4600000 - 10 * top))
        np.testing.assert_allclose(model_xy(cells, c + 1, r + 1) - model_xy(cells, c, r),
                                   (10 * stride[1], -10 * stride[0]))


def test_pixel_centre_rasters_place_each_cell_at_its_crop_s_centre(tmp_path):
    image = read_georeference(geotiff(tmp_path / "scene.tif", UTM_33N_POINT))
    assert image.pixel_is_point
    cells = map_georeference(image, Field((64, 64), (8, 8), (0, 0)))
    # raster point (c, r) is the centre of cell (r, c): the crop's centre, 32 pixels in, is
    # between pixels 31 and 32, which the image's centre convention counts as 31.5
    np.testing.assert_allclose(model_xy(cells, 2, 1), (500000 + 10 * (16 + 31.5), 4600000 - 10 * (8 + 31.5)))


def test_a_pyramid_level_s_cells_are_in_level_0_s_units(tmp_path):
    image = read_georeference(geotiff(tmp_path / "scene.tif"))
    cells = map_georeference(image, Field((64, 64), (4, 4), (0, 0)), pixel_size=(4.0, 4.0))
    np.testing.assert_allclose(model_xy(cells, 1, 0) - model_xy(cells, 0, 0), (160.0, 0.0))
    np.testing.assert_allclose(model_xy(cells, 0, 0), (500000 + 10 * 4 * 30, 4600000 - 10 * 4 * 30))


def test_a_rotated_georeference_goes_through_the_matrix(tmp_path):
    matrix = (8.66, -5.0, 0, 500000.0, -5.0, -8.66, 0, 4600000.0, 0, 0, 0, 0, 0, 0, 0, 1)
    image = read_georeference(geotiff(tmp_path / "scene.tif", matrix=matrix))
    cells = map_georeference(image, Field((64, 64), (4, 4), (0, 0)))
    np.testing.assert_allclose(model_xy(cells, 0, 0), (500000 + 8.66 * 30 - 5 * 30, 4600000 - 5 * 30 - 8.66 * 30))
    tags = {code: value for code, _, _, value, _ in tiff_tags(cells, None)}
    assert 34264 in tags and 33922 not in tags  # no tiepoint and scale can say a rotation


def test_a_written_map_reads_back_with_its_georeference_keys_and_no_data(tmp_path):
    image = read_georeference(geotiff(tmp_path / "scene.tif"))
    cells = map_georeference(image, Field((64, 64), (4, 4), (0, 0)))
    scores = np.random.default_rng(0).random((1, 5, 30, 40)).astype(np.float32)
    scores[0, :, 0, 0] = np.nan  # a cell --skip-background left out
    write_map_tiff(str(tmp_path / "map.tif"), scores, cells)
    with tifffile.TiffFile(tmp_path / "map.tif") as tif:
        np.testing.assert_array_equal(tif.asarray(), scores[0])
        tags = tif.pages[0].tags
        assert tags["GeoKeyDirectoryTag"].value == UTM_33N_AREA
        assert tags["GDAL_NODATA"].value == "nan"
    again = read_georeference(str(tmp_path / "map.tif"))
    np.testing.assert_allclose(again.affine, cells.affine)
    classes = np.random.default_rng(1).integers(0, 5, (1, 1, 30, 40)).astype(np.uint16)
    write_map_tiff(str(tmp_path / "classes.tif"), classes, None)  # no georeference: a plain TIFF
    assert read_georeference(str(tmp_path / "classes.tif")) is None
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "classes.tif"), classes[0, 0])


def test_an_image_without_georeference_has_none(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((10, 10), np.uint8))
    assert read_georeference(str(tmp_path / "plain.tif")) is None


def test_a_segmentation_map_lies_on_its_image_s_pixels(tmp_path):
    """A padded U-Net's output pixel p reads the field centred on input pixel p
    (Model.cell_area is that field): the map's georeference is the image's."""
    image = read_georeference(geotiff(tmp_path / "scene.tif"))
    for size, offset in ((3, -1), (61, -30)):
        cells = map_georeference(image, Field((size, size), (1, 1), (offset, offset)))
        np.testing.assert_allclose(cells.affine, image.affine)


SCALE, TIEPOINT = (33550, 12, 3, (10.0, 10.0, 0.0), True), (33922, 12, 6, (0, 0, 0, 5e5, 4.2e6, 0), True)


@pytest.mark.parametrize("tags, why", [
    ([SCALE, (33922, 12, 3, (0.0, 0.0, 500000.0), True)], "a ModelTiepoint of 3"),
    ([(34264, 12, 12, tuple(range(12)), True)], "12"),
    ([SCALE, TIEPOINT, (34735, 3, 10, (1, 1, 0, 4, 1024, 0, 1, 1, 1025, 0), True)],  # 4 keys stated, 1.5 there
     "a GeoKeyDirectory of 10 numbers states 4 keys"),
    ([(33550, 12, 3, (0.0, 0.0, 0.0), True), TIEPOINT], "a ModelPixelScale of 0 x 0"),  # GDAL ignores it
    ([(34264, 12, 16, (10.0, 0, 0, 5e5, 20.0, 0, 0, 4e6) + (0,) * 8, True)], "pixels of no size"),
])
def test_malformed_geotiff_tags_are_one_error_naming_the_file(tmp_path, tags, why):
    """A GeoKeyDirectory cut short failed reading its keys with a traceback; a pixel scale
    of 0 went on into the map as cells of 0 x 0 map units."""
    from graphconv.errors import GraphconvError

    tifffile.imwrite(tmp_path / "bad.tif", np.zeros((8, 8), np.uint8), extratags=tags)
    with pytest.raises(GraphconvError, match="its GeoTIFF tags do not make a georeference") as err:
        read_georeference(str(tmp_path / "bad.tif"))
    assert str(err.value).startswith("bad.tif: ") and why in str(err.value)


@pytest.mark.parametrize("cells, level_size", [(Field((16, 16), (4, 4), (0, 0)), (10, 15)),
                                               (Field((7, 7), (1, 1), (-3, -3)), (40, 60)),
                                               (Field((28, 20), (8, 4), (0, 0)), (20, 30))])
def test_a_cell_s_placement_is_where_its_georeference_puts_it(tmp_path, cells, level_size):
    """Two roads to one point: a cell's centre by its placement, in level-0 pixels, then
    through the image's georeference; and the map's own georeference at the cell's
    centre (col c + 0.5, row r + 0.5 in a pixel-corner raster)."""
    image = read_georeference(geotiff(tmp_path / "scene.tif"))
    level = SimpleNamespace(path=str(tmp_path / "scene.tif"), height=level_size[0], width=level_size[1],
                            full_hw=(40, 60), microns_per_pixel=None)
    placement = cell_placement(level, cells)
    geo = map_georeference(image, cells, (40 / level_size[0], 60 / level_size[1]))
    for r, c in [(0, 0), (2, 5)]:
        y, x = (placement.first[a] + placement.step[a] * (r, c)[a] for a in (0, 1))
        np.testing.assert_allclose(model_xy(image, x, y), model_xy(geo, c + 0.5, r + 0.5))


def test_a_slide_s_map_says_where_its_cells_are_and_how_large(tmp_path):
    """A slide is no GeoTIFF: its map's description carries the placement, and its
    resolution tags the cells' size (8 pixels of 0.25 µm: 2 µm, 5000 cells per cm)."""
    slide = SimpleNamespace(path="slide.svs", height=300, width=400, microns_per_pixel=0.25)
    placement = cell_placement(slide, Field((32, 32), (8, 8), (0, 0)))
    assert (placement.first, placement.step) == ((16.0, 16.0), (8.0, 8.0))
    assert placement.describe().endswith("(y, x) = (16 + 8 r, 16 + 8 c) of the image at full resolution, in pixel "
                                         "coordinates where pixel k spans k..k+1 (16 is the corner between pixels "
                                         "15 and 16); cells 2 µm apart")
    write_map_tiff(str(tmp_path / "map.tif"), np.zeros((1, 2, 5, 6), np.float32), None, placement)
    with tifffile.TiffFile(tmp_path / "map.tif") as tif:
        first_line, stated = tif.pages[0].description.split("\n", 1)
        tags = tif.pages[0].tags
        assert first_line == "graphconv score map" and json.loads(stated) == placement.as_dict()
        assert json.loads(stated)["cell_step_microns_yx"] == [2.0, 2.0]
        assert tags["XResolution"].value == (5000, 1) and tags["ResolutionUnit"].value == 3  # centimetres


def test_a_small_many_class_map_is_small_on_disk_and_reads_back_bit_for_bit(tmp_path):
    """An ImageNet map of 2x2 cells is 16 kB of scores: its file must be of that order,
    not 1000 bands of whole 256x256 tiles (262 MB), and compression must lose nothing:
    the same bits, no-data NaNs and signed zeros included, with the float predictor and
    tiles GDAL reads."""
    scores = np.random.default_rng(0).standard_normal((1, 1000, 2, 3)).astype(np.float32)
    scores[0, 7, 1, 2], scores[0, 9, 0, 0] = np.nan, -0.0
    write_map_tiff(str(tmp_path / "imagenet.tif"), scores, None)
    assert (tmp_path / "imagenet.tif").stat().st_size < 200_000
    with tifffile.TiffFile(tmp_path / "imagenet.tif") as tif:
        page = tif.pages[0]
        assert (page.tilelength, page.tilewidth) == (16, 16)  # TIFF tiles are multiples of 16
        assert page.compression == 8 and page.predictor == 3  # deflate, floating-point predictor
        np.testing.assert_array_equal(tif.asarray().view(np.uint32), scores[0].view(np.uint32))


def test_a_large_map_keeps_256_pixel_tiles(tmp_path):
    scores = np.random.default_rng(1).random((1, 2, 300, 20)).astype(np.float32)
    write_map_tiff(str(tmp_path / "map.tif"), scores, None)
    with tifffile.TiffFile(tmp_path / "map.tif") as tif:
        assert (tif.pages[0].tilelength, tif.pages[0].tilewidth) == (256, 32)
        np.testing.assert_array_equal(tif.asarray(), scores[0])


GCPS = ((0.0, 0.0, 0.0, 500000.0, 4600000.0, 0.0), (59.0, 0.0, 0.0, 500590.0, 4600000.0, 0.0),
        (0.0, 39.0, 0.0, 500000.0, 4599610.0, 0.0))  # on the grid of 10 m pixels from (500000, 4600000)


def gcp_geotiff(path, shape=(40, 60), directory=UTM_33N_AREA, gcps=GCPS):
    """A grey GeoTIFF tied to the ground by ground control points alone: several
    ModelTiepoints, no ModelPixelScale (GDAL's GCPs)."""
    points = tuple(v for p in gcps for v in p)
    pixels = (np.random.default_rng(5).random(shape) * 255).astype(np.uint8)
    tifffile.imwrite(path, pixels, extratags=[(33922, 12, len(points), points, True),
                                              (GEO_KEY_DIRECTORY, 3, len(directory), directory, True)])
    return path


def test_ground_control_points_are_carried_onto_the_map_s_cells(tmp_path):
    """Each tiepoint's image position becomes the same point's position among the map's
    cells (cell c spans image columns 30 + 4c .. 34 + 4c: a 64 px crop's centre, less
    half the 4 px stride), so the map's points describe the same ground: the affine they
    fit is the one a pixel-scale georeference of the same grid gives the map."""
    from graphconv.georef import cell_size

    image = read_georeference(gcp_geotiff(tmp_path / "gcps.tif"))
    assert image.affine is None and [p[:4] for p in image.gcps] == [(p[0], p[1], p[3], p[4]) for p in GCPS]
    cells = Field((64, 64), (4, 4), (0, 0))
    geo = map_georeference(image, cells)
    assert [p[:2] for p in geo.gcps] == [(-7.5, -7.5), (7.25, -7.5), (-7.5, 2.25)]
    same_grid = map_georeference(read_georeference(geotiff(tmp_path / "scene.tif", tiepoint=(0, 0, 0, 500000.0,
                                                                                                  4600000.0, 0))),
                                 cells)
    raster = np.array([(c, r, 1.0) for c, r, *_ in geo.gcps])
    fitted = np.linalg.lstsq(raster, np.array([(x, y) for _, _, x, y, _ in geo.gcps]), rcond=None)[0].T
    np.testing.assert_allclose(fitted, same_grid.affine, atol=1e-6)
    np.testing.assert_allclose(cell_size(geo), (40.0, 40.0))
    write_map_tiff(str(tmp_path / "map.tif"), np.zeros((1, 2, 5, 6), np.float32), geo)
    with tifffile.TiffFile(tmp_path / "map.tif") as tif:
        tags = tif.pages[0].tags
        assert "ModelPixelScaleTag" not in tags and "ModelTransformationTag" not in tags
        assert tags["GeoKeyDirectoryTag"].value == UTM_33N_AREA
    assert read_georeference(str(tmp_path / "map.tif")).gcps == geo.gcps


# ---- through the CLI, as users run it ---------------------------------------------------------------

def _cli(*args):
    from conftest import graphconv_process
    return graphconv_process(*args)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digit classifier (28x28 grey crops, stride 4, labels 0-9 and background), compiled."""
    from conftest import SPECS

    folder = tmp_path_factory.mktemp("m") / "digits-fcn"
    result = _cli("compile", SPECS / "digits.yaml", "-o", folder)
    assert result.returncode == 0, result.stderr
    return folder


def grey_geotiff(path, directory=UTM_33N_AREA, shape=(120, 150)):
    pixels = (np.random.default_rng(7).random(shape) * 255).astype(np.uint8)
    tifffile.imwrite(path, pixels, tile=(64, 64),
                     extratags=[(33550, 12, 3, (10.0, 10.0, 0.0), True),
                                (33922, 12, 6, (0, 0, 0, 500000.0, 4600000.0, 0), True),
                                (GEO_KEY_DIRECTORY, 3, len(directory), directory, True)])
    return path


def test_a_gcp_georeferenced_image_s_map_carries_its_points(digits, tmp_path):
    """An image tied to the ground by GCPs gave a map with no georeference, silently."""
    image = gcp_geotiff(tmp_path / "gcps.tif", shape=(120, 150),
                        gcps=((0, 0, 0, 500000.0, 4600000.0, 0), (149, 119, 0, 501490.0, 4598810.0, 0)))
    result = _cli("run", digits, "--image", image, "--tile", "64", "--output", tmp_path / "map.tif")
    assert result.returncode == 0, result.stderr
    assert "map georeferenced as the image" in result.stderr
    geo = read_georeference(str(tmp_path / "map.tif"))
    # cell c spans image columns 14 - 2 + 4c .. : image column 149 is cell (149 - 12) / 4
    assert [p[:2] for p in geo.gcps] == [(-3.0, -3.0), (34.25, 26.75)]
    assert [p[2:4] for p in geo.gcps] == [(500000.0, 4600000.0), (501490.0, 4598810.0)]


@pytest.mark.parametrize("directory", [UTM_33N_AREA, UTM_33N_POINT])
def test_a_zarr_map_of_a_geotiff_lands_where_its_tif_map_does(digits, tmp_path, directory):
    """A .zarr map held only pixel-space placement: now the axes' names, the CRS, the
    cells' GeoTransform and the no-data value xarray, rioxarray and GDAL look for, from
    the georeference the .tif map gets; a cell's centre lands on the same ground."""
    zarr = pytest.importorskip("zarr")
    import base64

    image = grey_geotiff(tmp_path / "scene.tif", directory)
    for output in ("map.tif", "map.zarr"):
        result = _cli("run", digits, "--image", image, "--tile", "64", "--output", tmp_path / output)
        assert result.returncode == 0, result.stderr
    tif = read_georeference(str(tmp_path / "map.tif"))
    stored = zarr.open_array(str(tmp_path / "map.zarr"), mode="r")
    attrs = dict(stored.attrs)
    assert attrs["_ARRAY_DIMENSIONS"] == ["image", "class", "y", "x"] and stored.ndim == 4
    assert attrs["_CRS"] == {"url": "http://www.opengis.net/def/crs/EPSG/0/32633"}
    assert attrs["graphconv"]["georeference"]["crs"] == "EPSG:32633"
    assert attrs["graphconv"]["georeference"]["geokeys"]["GeoKeyDirectoryTag"] == list(directory)
    gt = [float(v) for v in attrs["GeoTransform"].split()]
    assert gt == attrs["graphconv"]["georeference"]["geotransform"]
    assert np.isnan(stored.fill_value)
    assert np.isnan(np.frombuffer(base64.b64decode(attrs["_FillValue"]), "<f8")[0])
    point = 0.0 if directory == UTM_33N_POINT else 0.5  # where a cell's centre is in the .tif's raster
    for r, c in [(0, 0), (3, 7), (stored.shape[2] - 1, stored.shape[3] - 1)]:
        from_zarr = (gt[0] + (c + 0.5) * gt[1] + (r + 0.5) * gt[2], gt[3] + (c + 0.5) * gt[4] + (r + 0.5) * gt[5])
        np.testing.assert_allclose(from_zarr, model_xy(tif, c + point, r + point))
    # cell (0, 0)'s crop is centred 14 pixels in: 140 m from the corner of pixel (0, 0), which the tiepoint
    # places at (500000, 4600000), or 135 m from its centre, which a pixel-centre raster's tiepoint places there
    shift = 5.0 if directory == UTM_33N_POINT else 0.0
    np.testing.assert_allclose((gt[0] + 0.5 * gt[1], gt[3] + 0.5 * gt[5]), (500140.0 - shift, 4599860.0 + shift))
    result = _cli("run", digits, "--image", image, "--tile", "64", "--reduce", "argmax", "--output",
                  tmp_path / "classes.zarr")
    assert result.returncode == 0, result.stderr
    classes = zarr.open_array(str(tmp_path / "classes.zarr"), mode="r")
    assert classes.fill_value == 65535 and classes.attrs["_FillValue"] == 65535


def test_a_tif_map_names_its_bands_for_gdal_and_says_what_it_was_read_at(digits, tmp_path):
    """Class names were only in the description's JSON: GDAL's metadata tag now gives
    each band its class's name (QGIS's band names), a class map its legend; and the map
    states the level, downsample and bands it was read at."""
    import json
    import re

    image = grey_geotiff(tmp_path / "scene.tif", shape=(240, 300))
    result = _cli("run", digits, "--image", image, "--tile", "64", "--classes", "7,background", "--downsample", "2",
                  "--output", tmp_path / "map.tif")
    assert result.returncode == 0, result.stderr
    with tifffile.TiffFile(tmp_path / "map.tif") as tif:
        xml = tif.pages[0].tags[42112].value
        stated = json.loads(tif.pages[0].description.split("\n", 1)[1])
    assert re.findall(r'<Item name="DESCRIPTION" sample="(\d+)" role="description">([^<]*)</Item>', xml) == [
        ("0", "7"), ("1", "background")]
    assert (stated["level"], stated["downsample"], stated["bands"]) == (0, 2.0, None)
    result = _cli("run", digits, "--image", image, "--tile", "64", "--reduce", "argmax", "--output",
                  tmp_path / "classes.tif")
    assert result.returncode == 0, result.stderr
    with tifffile.TiffFile(tmp_path / "classes.tif") as tif:
        xml = tif.pages[0].tags[42112].value
        colours, values = tif.pages[0].colormap, tif.asarray()
    assert '<Item name="CLASS_10" sample="0">background</Item>' in xml
    # a colour table GDAL and QGIS show the classes by, each class the colour its picture and cells give it
    from graphconv.images import class_palette
    np.testing.assert_array_equal(colours[:, :11].T, class_palette(11).round() * 257)
    assert colours[:, 11:].max() == 0 and values.dtype == np.uint16 and set(np.unique(values)) <= set(range(11))
    assert '<Item name="CLASS_3" sample="0">3</Item>' in xml
    assert 'sample="0" role="description">class (the best class' in xml


# ---- a zarr array's georeference: the attributes graphconv's own .zarr maps carry -------------------------

def zarr_scene(path, pixels, **attrs):
    zarr = pytest.importorskip("zarr")
    array = zarr.open_array(str(path), mode="w", shape=pixels.shape, dtype=pixels.dtype, chunks=(64, 64))
    array[:] = pixels
    array.attrs.update(attrs)
    return path


@pytest.mark.parametrize("directory", [UTM_33N_AREA, UTM_33N_POINT])
def test_a_zarr_array_s_georeference_is_read_as_graphconv_writes_it(tmp_path, directory):
    """GeoTransform (GDAL's order, pixel corners) with proj:code or _CRS, rasterio's
    spatial:transform, or graphconv's own georeference attribute: each reads back as the
    GeoTIFF's georeference it was written from, corner for corner."""
    from graphconv.georef import read_zarr_georeference

    tif = read_georeference(str(grey_geotiff(tmp_path / "scene.tif", directory)))
    gt = tif.geotransform()
    pixels = np.zeros((120, 150), np.uint8)
    stated = {"GDAL": {"GeoTransform": " ".join(repr(v) for v in gt), "proj:code": "EPSG:32633"},
              "rasterio": {"spatial:transform": [gt[1], gt[2], gt[0], gt[4], gt[5], gt[3]],
                           "_CRS": {"url": "http://www.opengis.net/def/crs/EPSG/0/32633"}},
              "own": {"graphconv": {"georeference": tif.as_dict()}}}
    for name, attrs in stated.items():
        geo, unread = read_zarr_georeference(str(zarr_scene(tmp_path / f"{name}.zarr", pixels, **attrs)))
        np.testing.assert_allclose(geo.corner_affine(), tif.corner_affine(), err_msg=name)
        assert geo.epsg == 32633 and unread == []
        assert geo.keys == (tif.keys if name == "own" else ((GEO_KEY_DIRECTORY, 3, UTM_33N_AREA),))
    wgs84, _ = read_zarr_georeference(str(zarr_scene(tmp_path / "wgs84.zarr", pixels, GeoTransform=[10, 0.1, 0, 50, 0, -0.1],
                                                     **{"proj:epsg": 4326})))
    assert wgs84.keys == ((GEO_KEY_DIRECTORY, 3, (1, 1, 0, 3, 1024, 0, 1, 2, 1025, 0, 1, 1, 2048, 0, 1, 4326)),)


def test_a_zarr_scene_s_map_is_georeferenced_like_the_geotiff_s(digits, tmp_path):
    """A (y, x) zarr with the GeoTransform and proj:code graphconv writes on its own .zarr
    maps gave a .tif map with no GeoTIFF tags and no word: its maps now land where the
    same scene's GeoTIFF maps do, .tif and .zarr alike; attributes that look like a
    georeference graphconv does not read are a note."""
    zarr = pytest.importorskip("zarr")
    image = grey_geotiff(tmp_path / "scene.tif")
    gt = read_georeference(str(image)).geotransform()
    scene = zarr_scene(tmp_path / "scene.zarr", tifffile.imread(image),
                       GeoTransform=" ".join(repr(v) for v in gt), **{"proj:code": "EPSG:32633"})
    for source, name in ((image, "tif"), (scene, "zarr")):
        for output in (f"{name}.tif", f"{name}-map.zarr"):
            result = _cli("run", digits, "--image", source, "--tile", "64", "--output", tmp_path / output)
            assert result.returncode == 0, result.stderr
            assert "map georeferenced as the image" in result.stderr and "note: the zarr array" not in result.stderr
    with tifffile.TiffFile(tmp_path / "tif.tif") as want, tifffile.TiffFile(tmp_path / "zarr.tif") as got:
        for code in (33550, 33922, GEO_KEY_DIRECTORY):
            assert got.pages[0].tags[code].value == want.pages[0].tags[code].value
    want, got = (dict(zarr.open_array(str(tmp_path / f"{n}-map.zarr"), mode="r").attrs) for n in ("tif", "zarr"))
    assert got["GeoTransform"] == want["GeoTransform"] and got["proj:code"] == want["proj:code"] == "EPSG:32633"
    odd = zarr_scene(tmp_path / "odd.zarr", tifffile.imread(image), crs="+proj=utm +zone=33", transform=[1, 2, 3])
    result = _cli("run", digits, "--image", odd, "--tile", "64", "--output", tmp_path / "odd.tif")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("note: the zarr array's attributes crs, transform look like a georeference "
                               "graphconv does not read") == 1
    assert 33922 not in tifffile.TiffFile(tmp_path / "odd.tif").pages[0].tags
    plain = zarr_scene(tmp_path / "plain.zarr", tifffile.imread(image))
    result = _cli("run", digits, "--image", plain, "--tile", "64", "--output", tmp_path / "plain.tif")
    assert result.returncode == 0 and "georeference" not in result.stderr, result.stderr


# ---- an EPSG code's kind: geographic or projected, where it can be known ----------------------------------

def _no_pyproj(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "pyproj", None)  # `import pyproj` raises ImportError


def _stub_pyproj(monkeypatch, kinds):
    """A pyproj whose CRS.from_epsg answers from `kinds` (code -> "projected",
    "geographic" or "compound"), and knows no other code."""
    import sys

    def from_epsg(code):
        kind = kinds[code]  # KeyError: a code its database does not hold
        return SimpleNamespace(is_projected=kind == "projected", is_geographic=kind in ("geographic", "compound"),
                               sub_crs_list=[1, 2] if kind == "compound" else [], is_bound=False)
    monkeypatch.setitem(sys.modules, "pyproj", SimpleNamespace(CRS=SimpleNamespace(from_epsg=from_epsg)))


def test_an_epsg_code_s_kind_is_not_guessed_from_its_range_without_pyproj(monkeypatch):
    """EPSG 4000-4999 was taken as geographic: 4087 World Equidistant Cylindrical, 4491
    CGCS2000 Gauss-Kruger, 4647 ETRS89 UTM 32N zE-N are projected (a map written as in
    degrees lands across the world), and 6318 NAD83(2011), 7844 GDA2020 are geographic
    though outside it. Without pyproj only the common codes have a kind; another's is
    not guessed."""
    from graphconv.georef import crs_kind

    _no_pyproj(monkeypatch)
    for code in (4326, 4269, 4258, 6318, 7844, 4490):
        assert crs_kind(code) == "geographic", code
    for code in (32633, 32760, 25832, 26910, 3857, 27700):
        assert crs_kind(code) == "projected", code
    for code in (4087, 4491, 4647, 4978, 5773):
        assert crs_kind(code) is None, code


def test_pyproj_says_an_epsg_code_s_kind_where_it_is_installed(monkeypatch):
    from graphconv.georef import crs_kind

    _stub_pyproj(monkeypatch, {4087: "projected", 4647: "projected", 7844: "geographic", 9518: "compound"})
    assert (crs_kind(4087), crs_kind(4647), crs_kind(7844)) == ("projected", "projected", "geographic")
    assert crs_kind(9518) is None, "a compound CRS is neither of a GeoTIFF's two kinds"
    assert crs_kind(4326) == "geographic", "a code pyproj does not hold: the table's answer"


def test_a_real_pyproj_agrees():
    pytest.importorskip("pyproj")
    from graphconv.georef import crs_kind

    assert [crs_kind(c) for c in (4087, 4491, 4647, 32633)] == ["projected"] * 4
    assert [crs_kind(c) for c in (4326, 6318, 7844)] == ["geographic"] * 3
    assert crs_kind(4978) is None  # geocentric


@pytest.mark.parametrize("code, model_type, key", [(4087, None, None), (4491, None, None), (4326, 2, 2048),
                                                   (32633, 1, 3072), (7844, 2, 2048)])
def test_a_zarr_scene_s_epsg_code_is_written_as_its_kind_or_as_a_code_alone(tmp_path, monkeypatch, code,
                                                                            model_type, key):
    """Without pyproj: a known code's GeoKeys as GDAL writes them; another's (4087, 4491:
    projected, once written as geographic) claims no kind, records the code as the
    citation, which reads back as the map's EPSG code (.tif and .zarr maps), and a note
    says so."""
    from graphconv.georef import (GEOGRAPHIC_TYPE_KEY, MODEL_TYPE_KEY, PROJECTED_CS_TYPE_KEY,
                                  read_zarr_georeference, zarr_georeference_note)

    _no_pyproj(monkeypatch)
    scene = zarr_scene(tmp_path / "scene.zarr", np.zeros((64, 64), np.uint8),
                       GeoTransform=[300000, 10, 0, 5000000, 0, -10], **{"proj:epsg": code})
    geo, unread = read_zarr_georeference(str(scene))
    assert geo.epsg == code and unread == []
    assert geo.geokey(MODEL_TYPE_KEY) == model_type
    assert geo.geokey(GEOGRAPHIC_TYPE_KEY) == (code if key == 2048 else None)
    assert geo.geokey(PROJECTED_CS_TYPE_KEY) == (code if key == 3072 else None)
    write_map_tiff(str(tmp_path / "map.tif"), np.zeros((1, 1, 4, 4), np.float32), geo)
    back = read_georeference(str(tmp_path / "map.tif"))
    assert back.epsg == code and back.geokey(MODEL_TYPE_KEY) == model_type and not back.pixel_is_point
    np.testing.assert_allclose(back.corner_affine(), geo.corner_affine())
    from graphconv.georef import georeference_from_dict
    assert georeference_from_dict(back.as_dict()).epsg == code, "a .zarr map's own georeference reads it back"
    note = zarr_georeference_note(str(scene))
    if model_type is None:
        assert f"EPSG:{code}, is not one graphconv can tell geographic or projected without pyproj" in note
        with tifffile.TiffFile(tmp_path / "map.tif") as tif:
            assert tif.pages[0].tags[34737].value.rstrip("|") == f"EPSG:{code}"
    else:
        assert note is None


def test_a_wkt_says_its_crs_s_kind(tmp_path, monkeypatch):
    """A WKT's root (PROJCS, GEOGCRS, ...) tells the kind its EPSG code needs pyproj for."""
    from graphconv.georef import MODEL_TYPE_KEY, PROJECTED_CS_TYPE_KEY, read_zarr_georeference

    _no_pyproj(monkeypatch)
    wkt = ('PROJCS["ETRS89 / UTM zone 32N (zE-N)",GEOGCS["ETRS89",AUTHORITY["EPSG","4258"]],'
           'PROJECTION["Transverse_Mercator"],AUTHORITY["EPSG","4647"]]')
    geo, _ = read_zarr_georeference(str(zarr_scene(tmp_path / "scene.zarr", np.zeros((64, 64), np.uint8),
                                                   GeoTransform=[0, 1, 0, 0, 0, -1], crs_wkt=wkt)))
    assert geo.geokey(MODEL_TYPE_KEY) == 1 and geo.geokey(PROJECTED_CS_TYPE_KEY) == 4647


def test_a_node_registered_spatial_transform_counts_pixel_centres(tmp_path):
    """GeoZarr's `spatial:registration: node` (the transform names pixel centres, as
    GeoTIFF's RasterPixelIsPoint) was taken as read and ignored: the map landed half a
    pixel off. Its corner affine is the "pixel" one shifted by half a pixel; a
    registration of another name is not read (no georeference, and a note names it)."""
    from graphconv.georef import read_zarr_georeference

    pixels = np.zeros((64, 64), np.uint8)
    transform = [10.0, 0.0, 300000.0, 0.0, -10.0, 5000000.0]
    affine = {}
    for registration in ("pixel", "node", None):
        attrs = {"spatial:transform": transform, "spatial:dimensions": ["y", "x"], "proj:code": "EPSG:32633"}
        if registration:
            attrs["spatial:registration"] = registration
        geo, unread = read_zarr_georeference(str(zarr_scene(tmp_path / f"{registration}.zarr", pixels, **attrs)))
        assert unread == [] and not geo.pixel_is_point
        affine[registration] = geo.corner_affine()
    np.testing.assert_array_equal(affine[None], affine["pixel"])
    np.testing.assert_allclose(affine["pixel"], [[10, 0, 300000], [0, -10, 5000000]])
    np.testing.assert_allclose(affine["node"], [[10, 0, 300000 - 5], [0, -10, 5000000 + 5]])
    geo, unread = read_zarr_georeference(str(zarr_scene(tmp_path / "odd.zarr", pixels, **{
        "spatial:transform": transform, "spatial:registration": "centre"})))
    assert geo is None and {"spatial:transform", "spatial:registration"} <= set(unread)


def test_a_segmentation_map_of_one_label_per_pixel_is_georeferenced_as_its_image(tmp_path, write_spec):
    """Its cells were placed at their receptive fields' centres: a bilinear head's map
    came out 1.5 pixels off the image (3.5 for a stride-8 head), each label shifted from
    its pixel. A network whose output is smaller than its input (unpadded convs) keeps
    its fields' centres, which is where its labels are."""
    import graphconv

    head = graphconv.load(write_spec("name: seg\ntask: segmentation\ninput: {shape: [3, 16, 16]}\nlayers:\n"
                                     "  - {name: c1, op: conv, out_channels: 4, kernel_size: 3, stride: 2, padding: 1}\n"
                                     "  - {name: c2, op: conv, out_channels: 4, kernel_size: 3, stride: 2, padding: 1}\n"
                                     "  - {name: up, op: upsample, factor: 4, mode: bilinear}\n"))
    assert head.cell_area == Field((1, 1), (1, 1), (0, 0)) and head.field.offset != (0, 0)
    image = read_georeference(geotiff(tmp_path / "scene.tif"))
    np.testing.assert_allclose(map_georeference(image, head.cell_area).affine, image.affine)
    valid = graphconv.load(write_spec("name: valid\ntask: segmentation\ninput: {shape: [3, 16, 16]}\nlayers:\n"
                                      "  - {name: c1, op: conv, out_channels: 4, kernel_size: 3}\n"))
    assert valid.cell_area == valid.field == Field((3, 3), (1, 1), (0, 0))


def test_a_map_on_pixels_blends_the_cells_around_each_pixel_and_holds_the_edges():
    """MONAI's sliding window returns a map the image's size: each pixel here is the
    bilinear blend of the cells whose centres surround it (a ramp of cells is a ramp of
    pixels), held beyond the outermost centres; a NaN cell reaches only the pixels it
    weighs in."""
    from graphconv.georef import CellPlacement

    rows, cols = 5, 4
    ramp = (10 * np.arange(rows)[:, None] + np.arange(cols)[None, :]).astype(np.float32)[None, None]
    placement = CellPlacement((16.0, 16.0), (4.0, 4.0), None)  # LeNet's: a 32x32 crop at stride 4
    pixels = placement.on_pixels(np.concatenate([ramp, -ramp], axis=1), (48, 44))
    assert pixels.shape == (1, 2, 48, 44) and pixels.dtype == np.float32
    y = np.clip((np.arange(48) + 0.5 - 16) / 4, 0, rows - 1)
    x = np.clip((np.arange(44) + 0.5 - 16) / 4, 0, cols - 1)
    np.testing.assert_allclose(pixels[0, 0], 10 * y[:, None] + x[None, :], rtol=1e-6)
    np.testing.assert_allclose(pixels[0, 1], -pixels[0, 0])
    holed = ramp.copy()
    holed[0, 0, 2, 1] = np.nan
    nan = np.isnan(placement.on_pixels(holed, (48, 44))[0, 0])
    touched_y = (np.abs(y - 2) < 1)[:, None]
    touched_x = (np.abs(x - 1) < 1)[None, :]
    np.testing.assert_array_equal(nan, touched_y & touched_x)


@pytest.mark.parametrize("cells,pixels", [((1, 1, 4, 3), (20, 20, 8, 4)), ((0, 0, 5, 4), (0, 0, 48, 44))])
def test_a_region_of_a_map_on_pixels_is_the_whole_map_on_those_pixels(rng, cells, pixels):
    """The README's recipe for a slide's map, a region at a time: the region's cells with
    `first` moved, and its pixels' origin (cells 1-3 centred on pixel rows 20-28: the
    pixels between them). Without an origin the region's pixels were the image's first
    ones (off by up to a whole score)."""
    from graphconv.georef import CellPlacement

    scores = rng.random((1, 2, 5, 4)).astype(np.float32)
    whole = CellPlacement((16.0, 16.0), (4.0, 4.0), None).on_pixels(scores, (48, 44))
    r0, c0, r1, c1 = cells
    y0, x0, h, w = pixels
    region = CellPlacement((16.0 + 4 * r0, 16.0 + 4 * c0), (4.0, 4.0), None)
    np.testing.assert_allclose(region.on_pixels(scores[..., r0:r1, c0:c1], (h, w), origin_yx=(y0, x0)),
                               whole[..., y0:y0 + h, x0:x0 + w], rtol=1e-6)


def test_a_model_s_scores_on_pixels_are_placed_by_its_cells_and_checked_against_the_image(rng):
    import graphconv
    from conftest import SPECS

    fcn = graphconv.compile_model(SPECS / "lenet.yaml")
    x = rng.standard_normal((1, 1, 41, 37)).astype(np.float32)
    scores = fcn.run(x)  # 3x2 cells centred at (16 + 4 r, 16 + 4 c)
    pixels = fcn.scores_on_pixels(scores, (41, 37))
    assert pixels.shape == (1, 10, 41, 37)
    np.testing.assert_array_equal(pixels[0, :, :16, :16], np.broadcast_to(scores[0, :, :1, :1], (10, 16, 16)))
    np.testing.assert_array_equal(pixels[0, :, 24:, 20:], np.broadcast_to(scores[0, :, 2:, 1:], (10, 17, 17)))
    # pixel rows 17 and 18 (centres 17.5, 18.5) are 3/8 and 5/8 of the way from cell row 0 to row 1
    np.testing.assert_allclose((pixels[0, :, 17, 0] + pixels[0, :, 18, 0]) / 2,
                               (scores[0, :, 0, 0] + scores[0, :, 1, 0]) / 2, rtol=1e-5, atol=1e-6)
    with pytest.raises(graphconv.GraphconvError, match=r"a 60x37 image's map has 8x2 cells, got 3x2"):
        fcn.scores_on_pixels(scores, (60, 37))
    np.testing.assert_array_equal(fcn.scores_on_pixels(scores[0], (41, 37)), pixels[0])  # one image's (K, rows, cols)
    square = fcn.run(x[..., :37, :])
    np.testing.assert_array_equal(fcn.scores_on_pixels(square, 37), fcn.scores_on_pixels(square, (37, 37)))
    for size, message in (((41,), r"image_size is the image's \(H, W\) in pixels"), ((41.0, 37), r"got \(41.0, 37\)")):
        with pytest.raises(graphconv.GraphconvError, match=message):
            fcn.scores_on_pixels(scores, size)
    with pytest.raises(graphconv.GraphconvError, match=r"\(N, K, rows, cols\), or one image's \(K, rows, cols\); "
                                                       r"got shape \(10,\)"):
        fcn.scores_on_pixels(scores[0, :, 0, 0], (41, 37))


def mean_of_covering_crops(scores: np.ndarray, first, step, area, image_hw) -> np.ndarray:
    """MONAI's mode="constant", written out: every cell's score added over its crop's
    pixels, divided by how many crops cover each; a pixel no crop covers takes the cell
    whose centre is nearest along each uncovered axis."""
    n, k, rows, cols = scores.shape
    total, count = np.zeros((n, k, *image_hw)), np.zeros(image_hw)
    for r in range(rows):
        for c in range(cols):
            top, left = first[0] + step[0] * r - area[0] / 2, first[1] + step[1] * c - area[1] / 2
            ys = [y for y in range(image_hw[0]) if top <= y + 0.5 < top + area[0]]
            xs = [x for x in range(image_hw[1]) if left <= x + 0.5 < left + area[1]]
            total[:, :, ys[0]:ys[-1] + 1 if ys else 0, xs[0]:xs[-1] + 1 if xs else 0] += scores[:, :, r:r + 1, c:c + 1]
            count[ys[0]:ys[-1] + 1 if ys else 0, xs[0]:xs[-1] + 1 if xs else 0] += 1
    return total / np.where(count, count, np.nan)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 5), cols=st.integers(1, 5), step=st.integers(1, 6), crop=st.integers(1, 14),
       offset=st.integers(0, 3), seed=st.integers(0, 99))
def test_the_mean_blend_is_the_mean_of_the_crops_covering_each_pixel(rows, cols, step, crop, offset, seed):
    """Crops of any size against the step (gaps between them where the crop is smaller,
    many covering a pixel where larger): each covered pixel the mean of the crops' cells,
    as MONAI's constant mode blends its windows."""
    from graphconv.georef import CellPlacement

    rng = np.random.default_rng(seed)
    scores = rng.random((2, 3, rows, cols)).astype(np.float32)
    first = (offset + crop / 2, offset + 1 + crop / 2)
    image_hw = (offset + crop + step * (rows - 1), offset + 1 + crop + step * (cols - 1))
    placed = CellPlacement(first, (step, step), None, area=(crop, crop)).on_pixels(scores, image_hw, blend="mean")
    expected = mean_of_covering_crops(scores, first, (step, step), (crop, crop), image_hw)
    covered = ~np.isnan(expected)
    np.testing.assert_allclose(placed[covered], expected[covered], rtol=1e-5, atol=1e-6)
    assert not np.isnan(placed).any()  # uncovered pixels (gaps, the border) hold a cell


def test_a_not_computed_cell_is_nan_in_the_mean_only_where_its_crop_covers():
    from graphconv.georef import CellPlacement

    scores = np.ones((1, 1, 4, 4), np.float32)
    scores[0, 0, 1, 2] = np.nan
    placed = CellPlacement((4.0, 4.0), (4.0, 4.0), None, area=(8.0, 8.0)).on_pixels(scores, (20, 20), blend="mean")
    nan = np.isnan(placed[0, 0])
    assert nan[4:12, 8:16].all() and nan.sum() == 64
    np.testing.assert_array_equal(placed[0, 0][~nan], 1.0)


def test_scores_on_pixels_blends_as_monai_and_places_a_padded_image_s_map(rng):
    """blend="mean" on lenet (crop 32, stride 4) is the mean of the classifier's scores on
    every crop covering a pixel, MONAI's constant mode; a --pad-image map was refused as
    the wrong size, with no word of how to place it (padded=True)."""
    import graphconv
    from conftest import SPECS
    from graphconv.sources import pad_batch

    fcn = graphconv.compile_model(SPECS / "lenet.yaml")
    x = rng.standard_normal((1, 1, 44, 40)).astype(np.float32)  # (44 - 32) and (40 - 32) whole strides
    scores = fcn.run(x)
    expected = mean_of_covering_crops(scores, (16, 16), (4, 4), (32, 32), (44, 40))
    np.testing.assert_allclose(fcn.scores_on_pixels(scores, (44, 40), blend="mean"), expected, rtol=1e-5, atol=1e-6)
    padded_x, (top, left) = pad_batch(x, "reflect", fcn.cell_area)
    bordered = fcn.run(padded_x)
    with pytest.raises(graphconv.GraphconvError, match=r"a 44x40 image's map has 4x3 cells, got 11x10; that is the "
                                                       r"padded image's map .*: give padded=True"):
        fcn.scores_on_pixels(bordered, (44, 40))
    on_image = fcn.scores_on_pixels(bordered, (44, 40), padded=True, blend="mean")
    whole = fcn.scores_on_pixels(bordered, padded_x.shape[2:], blend="mean")
    np.testing.assert_array_equal(on_image, whole[..., top:top + 44, left:left + 40])
    with pytest.raises(graphconv.GraphconvError, match=r"blend is one of 'bilinear', 'mean', 'gaussian', got 'max'"):
        fcn.scores_on_pixels(scores, (44, 40), blend="max")


def gaussian_of_covering_crops(scores: np.ndarray, corner: tuple[int, int], step: int, crop: int, image_hw,
                               sigma_scale: float) -> np.ndarray:
    """MONAI's mode="gaussian", written out as its sliding_window_inference computes it:
    one importance map for every window (compute_importance_map: a float32 Gaussian
    along each side, sigma = sigma_scale x the side, centred between the middle pixels,
    their product clamped from below at max(its least value, 1e-3)), each window's
    score times that map added over its pixels, divided by the maps' sum. The first
    crop's top-left pixel is `corner`."""
    sigma = sigma_scale * crop
    along = np.exp(-(np.arange(crop, dtype=np.float32) - (crop - 1) / 2) ** 2 / np.float32(2 * sigma ** 2))
    importance = np.outer(along, along).astype(np.float32)
    importance = np.maximum(importance, max(importance.min(), np.float32(1e-3)))
    n, k, rows, cols = scores.shape
    total, weights = np.zeros((n, k, *image_hw)), np.zeros(image_hw)
    for r in range(rows):
        for c in range(cols):
            top, left = corner[0] + step * r, corner[1] + step * c
            window = np.s_[top:top + crop, left:left + crop]
            total[(..., *window)] += scores[:, :, r:r + 1, c:c + 1] * importance
            weights[window] += importance
    return total / np.where(weights, weights, np.nan)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 5), cols=st.integers(1, 5), step=st.integers(1, 6), crop=st.integers(1, 14),
       offset=st.integers(0, 3), sigma_scale=st.sampled_from([0.125, 0.05, 0.3, 2.0]), seed=st.integers(0, 99))
def test_the_gaussian_blend_weights_the_crops_covering_each_pixel_as_monai(rows, cols, step, crop, offset, sigma_scale,
                                                                          seed):
    """Each covered pixel the mean of the covering crops' cells weighted by MONAI's
    importance map, its clamp included (where a pixel lies near the edges of every crop
    that covers it, at the image's borders, the clamped weights decide: without the
    clamp a 32-pixel crop at stride 4 was off by 0.007 of scores near 0.5). Checked
    also against MONAI 1.6.1 itself, which is not a test dependency: equal to 4e-7."""
    from graphconv.georef import CellPlacement

    rng = np.random.default_rng(seed)
    scores = rng.random((2, 3, rows, cols)).astype(np.float32)
    first = (offset + crop / 2, offset + 1 + crop / 2)
    image_hw = (offset + crop + step * (rows - 1), offset + 1 + crop + step * (cols - 1))
    placed = CellPlacement(first, (step, step), None, area=(crop, crop)).on_pixels(scores, image_hw, blend="gaussian",
                                                                                   sigma_scale=sigma_scale)
    expected = gaussian_of_covering_crops(scores, (offset, offset + 1), step, crop, image_hw, sigma_scale)
    covered = ~np.isnan(expected)
    np.testing.assert_allclose(placed[covered], expected[covered], rtol=2e-5, atol=1e-6)
    assert not np.isnan(placed).any()  # uncovered pixels (gaps, the border) hold a cell


def test_the_gaussian_blend_holds_the_edges_and_a_not_computed_cell_is_nan_where_its_crop_covers():
    from graphconv.georef import CellPlacement

    scores = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    placement = CellPlacement((6.0, 6.0), (4.0, 4.0), None, area=(8.0, 8.0))  # crops from pixel 2: 0-1 uncovered
    placed = placement.on_pixels(scores, (22, 22), blend="gaussian")
    np.testing.assert_allclose(placed[0, 0, :2, :2], 0.0, atol=1e-6)  # the corner cell held, not extrapolated
    np.testing.assert_allclose(placed[0, 0, 20:, 20:], 15.0, rtol=1e-6)
    holed = scores.copy()
    holed[0, 0, 1, 2] = np.nan
    nan = np.isnan(placement.on_pixels(holed, (22, 22), blend="gaussian")[0, 0])
    assert nan[6:14, 10:18].all() and nan.sum() == 64


def test_scores_on_pixels_blends_as_monai_s_gaussian_mode_and_refuses_a_sigma_scale_that_is_not_one(rng):
    import graphconv
    from conftest import SPECS

    fcn = graphconv.compile_model(SPECS / "lenet.yaml")
    x = rng.standard_normal((1, 1, 44, 40)).astype(np.float32)
    scores = fcn.run(x)
    for sigma_scale in (0.125, 0.5):
        expected = gaussian_of_covering_crops(scores, (0, 0), 4, 32, (44, 40), sigma_scale)
        placed = fcn.scores_on_pixels(scores, (44, 40), blend="gaussian", sigma_scale=sigma_scale)
        np.testing.assert_allclose(placed, expected, rtol=2e-5, atol=1e-6)
    assert not np.allclose(fcn.scores_on_pixels(scores, (44, 40), blend="gaussian"),
                           fcn.scores_on_pixels(scores, (44, 40), blend="mean"), rtol=1e-3)
    for sigma_scale in (0, -0.1, float("nan"), float("inf"), "0.1", True):
        with pytest.raises(graphconv.GraphconvError, match=r"sigma_scale is a positive number \(MONAI's default "
                                                           rf"0.125.*got {re.escape(repr(sigma_scale))}"):
            fcn.scores_on_pixels(scores, (44, 40), blend="gaussian", sigma_scale=sigma_scale)


def mask_geotiff(path, shape, pixel_metres, directory=UTM_33N_AREA):
    """A --mask as GIS tools write one: its left half marked, georeferenced from the corner
    grey_geotiff's image starts at."""
    marked = np.zeros(shape, np.uint8)
    marked[:, :shape[1] // 2] = 255
    tifffile.imwrite(path, marked, extratags=[(33550, 12, 3, (pixel_metres, pixel_metres, 0.0), True),
                                              (33922, 12, 6, (0, 0, 0, 500000.0, 4600000.0, 0), True),
                                              (GEO_KEY_DIRECTORY, 3, len(directory), directory, True)])
    return path


@pytest.mark.parametrize("mask, refusal", [
    ((60, 75, 20.0, UTM_33N_AREA), None),  # the image's area, coarser: stretched over it
    ((60, 75, 10.0, UTM_33N_AREA), r"the mask is georeferenced over another area than the image \(mask x "
                                   r"500000..500750, y 4.5994e\+06..4.6e\+06; image x 500000..501500, y "
                                   r"4.5988e\+06..4.6e\+06\), .*gdalwarp -te 500000 4598800 501500 4600000\)"),
    ((60, 75, 20.0, UTM_33N_AREA[:-1] + (32632,)), r"the mask is in EPSG:32632 and the image in EPSG:32633"),
])
def test_a_georeferenced_mask_of_another_area_or_crs_is_refused(digits, tmp_path, mask, refusal):
    """A GeoTIFF mask of a quarter of a scene (the same aspect ratio) was stretched over the
    whole scene by its pixels, its marks put over ground it does not cover, silently."""
    image = grey_geotiff(tmp_path / "scene.tif")
    *shape, metres, directory = mask
    mask_file = mask_geotiff(tmp_path / "mask.tif", tuple(shape), metres, directory)
    result = _cli("run", digits, "--image", image, "--mask", mask_file, "--output", tmp_path / "map.npy")
    if refusal is None:
        assert result.returncode == 0, result.stderr
        scores = np.load(tmp_path / "map.npy")
        assert not np.isnan(scores[0, 0, :, 0]).any() and np.isnan(scores[0, 0, :, -1]).all()
        return
    assert result.returncode == 2 and re.search(rf"mask.tif: {refusal}", result.stderr), result.stderr
    assert not (tmp_path / "map.npy").exists()


@pytest.mark.parametrize("placement, said", [
    ("world file", r"note: the image is placed by a world file \(scene.tfw\), which graphconv does not read: the map "
                   r"is not georeferenced; make the image a GeoTIFF first"),
    ("rpcs", r"note: the image carries RPCs .* the map is not georeferenced; orthorectify the scene first"),
    ("none", None),
])
def test_a_tif_placed_by_a_world_file_or_rpcs_is_said_to_give_a_map_without_georeference(digits, tmp_path,
                                                                                         placement, said):
    """QGIS places both, so a map with no georeference came as a surprise: nothing said so."""
    pixels = (np.random.default_rng(7).random((60, 80)) * 255).astype(np.uint8)
    rpcs = [(50844, 12, 92, tuple(np.linspace(0.0, 1.0, 92)), True)] if placement == "rpcs" else []
    tifffile.imwrite(tmp_path / "scene.tif", pixels, extratags=rpcs)
    if placement == "world file":
        (tmp_path / "scene.tfw").write_text("10.0\n0.0\n0.0\n-10.0\n500005.0\n4599995.0\n")
    result = _cli("run", digits, "--image", tmp_path / "scene.tif", "--output", tmp_path / "map.tif")
    assert result.returncode == 0, result.stderr
    assert read_georeference(str(tmp_path / "map.tif")) is None
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: the image")]
    assert (re.match(said, notes[0]) is not None if said else notes == []), result.stderr


@pytest.mark.parametrize("model_type, geographic, projected, epsg", [
    (1, 4258, 32767, None),  # a user-defined projection (Lambert azimuthal) on ETRS89: not EPSG:4258
    (1, 4326, 32633, 32633), (2, 4326, None, 4326), (None, 4326, None, 4326)])
def test_a_user_defined_projection_has_no_epsg_code(model_type, geographic, projected, epsg):
    """A scene in a user-defined projection had its geographic system's code taken for
    its CRS: a .zarr map's attributes said "crs": "EPSG:4258" for a LAEA grid; and the
    run's line says which system the map is in, or that it names none."""
    from graphconv.tiled_cli import _coordinate_system

    keys = [(k, 0, 1, v) for k, v in ((1024, model_type), (2048, geographic), (3072, projected)) if v is not None]
    directory = (1, 1, 0, len(keys), *(n for key in keys for n in key))
    geo = GeoReference(np.eye(3)[:2], ((34735, 3, directory),))
    assert geo.epsg == epsg
    assert geo.as_dict()["crs"] == (f"EPSG:{epsg}" if epsg else None)
    assert _coordinate_system(geo) == (f"in EPSG:{epsg}" if epsg else
                                       "in its coordinate system (no EPSG code: as the image's GeoKeys define it)")
    assert _coordinate_system(GeoReference(np.eye(3)[:2], ())).startswith("with no coordinate system")


def _with_box(jp2: bytes, box_type: bytes, payload: bytes) -> bytes:
    """A JPEG 2000 file with a box inserted before its codestream, as GDAL writes GeoJP2 and GMLJP2."""
    at = 0
    while at < len(jp2):
        length, kind = int.from_bytes(jp2[at:at + 4], "big"), jp2[at + 4:at + 8]
        if kind == b"jp2c":
            box = (8 + len(payload)).to_bytes(4, "big") + box_type + payload
            return jp2[:at] + box + jp2[at:]
        at += length
    raise AssertionError("no codestream box")


@pytest.mark.parametrize("picture, said", [
    ("png world file", r"note: the image is placed by a world file \(scene.pgw\), which graphconv does not read"),
    ("geojp2", r"note: the JPEG 2000 image is georeferenced \(GeoJP2 or GMLJP2\), which graphconv does not read: "
               r"the map is not georeferenced"),
    ("gmljp2", r"note: the JPEG 2000 image is georeferenced"),
    ("plain jp2", None),
])
def test_a_picture_placed_by_a_world_file_or_jp2_boxes_is_said_to_give_a_map_without_georeference(
        digits, tmp_path, picture, said):
    """A Sentinel-2 band (.jp2 with GMLJP2 and GeoJP2 boxes) mapped to .tif lost its place
    on the ground without a word."""
    from PIL import Image

    from graphconv.georef import GEOJP2_UUID

    pixels = (np.random.default_rng(7).random((60, 80)) * 255).astype(np.uint8)
    name = "scene.png" if picture.startswith("png") else "scene.jp2"
    Image.fromarray(pixels).save(tmp_path / name)
    if picture == "png world file":
        (tmp_path / "scene.pgw").write_text("10.0\n0.0\n0.0\n-10.0\n500005.0\n4599995.0\n")
    elif picture != "plain jp2":
        box = ((b"uuid", GEOJP2_UUID + b"II*\x00") if picture == "geojp2"
               else (b"asoc", b"\x00\x00\x00\x19lbl gml.root-instance"))
        (tmp_path / name).write_bytes(_with_box((tmp_path / name).read_bytes(), *box))
    result = _cli("run", digits, "--image", tmp_path / name, "--output", tmp_path / "map.tif")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: the")]
    assert (re.match(said, notes[0]) is not None if said else notes == []), result.stderr
