"""Lazily read images (graphconv.sources): whole-slide pyramids level by level, JPEG
tiles, and the clear errors for what cannot be read."""
from __future__ import annotations

import contextlib
import importlib.util

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("zarr")
pytest.importorskip("imagecodecs")  # writes (and decodes) the JPEG tiles slides hold

from graphconv.errors import GraphconvError  # noqa: E402
from graphconv.sources import open_source, unread_images_note, unstored_chunks_note  # noqa: E402

LEVEL_SIZES = [(300, 400), (150, 200), (75, 100)]


def write_pyramid(path, channels: int = 3) -> list[np.ndarray]:
    """A slide as scanners write one: JPEG-compressed tiles, each level half the last,
    the smaller levels as SubIFDs of the first (as OME-TIFF; .svs lists them as pages)."""
    rng = np.random.default_rng(5)
    shape = LEVEL_SIZES[0] + ((channels,) if channels > 1 else ())
    full = (rng.random(shape) * 255).astype(np.uint8)
    levels = [full, full[::2, ::2], full[::4, ::4]]
    photometric = "rgb" if channels > 1 else "minisblack"
    with tifffile.TiffWriter(path) as tif:
        tif.write(levels[0], tile=(64, 64), compression="jpeg", subifds=2, photometric=photometric)
        for level in levels[1:]:
            tif.write(level, tile=(64, 64), compression="jpeg", subfiletype=1, photometric=photometric)
    return levels


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    path = tmp_path_factory.mktemp("slide") / "slide.tif"
    write_pyramid(path)
    return path


@pytest.mark.parametrize("level", [0, 1, 2])
def test_each_level_of_a_jpeg_pyramid_reads_as_tifffile_decodes_it(slide, level):
    source = open_source(slide, 3, None, level)
    assert (source.height, source.width) == LEVEL_SIZES[level]
    assert (source.level, source.levels, source.downsample) == (level, 3, 2 ** level)
    decoded = tifffile.imread(slide, level=level).transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(source.read(0, 0, *LEVEL_SIZES[level]), decoded)
    np.testing.assert_array_equal(source.read(10, 30, 70, 90), decoded[:, 10:70, 30:90])


def test_a_level_past_the_pyramid_names_the_levels_it_has(slide):
    with pytest.raises(GraphconvError, match=r"--level 3: the image has 3 levels "
                                             r"\(0: 300x400, 1: 150x200, 2: 75x100\)"):
        open_source(slide, 3, None, 3)


def test_level_of_an_image_without_levels_is_refused(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "page.png")
    with pytest.raises(GraphconvError, match="page.png: --level 1: only a pyramid"):
        open_source(tmp_path / "page.png", 1, None, 1)


def undecodable_tiff(path) -> None:
    """A zlib-compressed TIFF whose compression tag is changed to a code no codec knows."""
    tifffile.imwrite(path, np.zeros((40, 50), np.uint8), tile=(16, 16), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        at = tif.pages[0].tags["Compression"].valueoffset
    data = bytearray(path.read_bytes())
    data[at:at + 2] = (40000).to_bytes(2, "little")
    path.write_bytes(bytes(data))


def test_pixels_that_cannot_be_decoded_are_one_error_when_the_image_opens(tmp_path):
    undecodable_tiff(tmp_path / "odd.tif")
    with pytest.raises(GraphconvError, match="odd.tif: cannot decode its pixels") as caught:
        open_source(tmp_path / "odd.tif", 1, None)
    assert "imagecodecs" not in str(caught.value)  # it is installed: that is not the reason


def test_without_imagecodecs_the_error_says_to_install_it(tmp_path, monkeypatch):
    undecodable_tiff(tmp_path / "odd.tif")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "imagecodecs"
                        else find_spec(name, *a))
    with pytest.raises(GraphconvError, match="needs the imagecodecs package, pip install 'graphconv\\[scale\\]'"):
        open_source(tmp_path / "odd.tif", 1, None)


def test_a_thumbnail_comes_from_the_coarsest_level_large_enough(slide):
    from graphconv.sources import thumbnail

    picture, scale = thumbnail(open_source(slide, 3, {"scale": 0.5}, 0), longest=100)
    assert scale == (4.0, 4.0)  # level 2, 75x100: the preprocess not applied
    np.testing.assert_array_equal(picture, tifffile.imread(slide, level=2).transpose(2, 0, 1))
    picture, scale = thumbnail(open_source(slide, 3, None, 1), longest=150)
    assert picture.shape == (3, 75, 100) and scale == (2.0, 2.0)  # from level 1, 150x200: level 2 is 2x coarser


def _block_means(pixels: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """The plain reference of an area shrink: pixel (i, j) the mean of rows
    i*H//h..(i+1)*H//h and the columns alike, NaN left out (0 where all are)."""
    rows = np.arange(out_hw[0] + 1) * pixels.shape[0] // out_hw[0]
    cols = np.arange(out_hw[1] + 1) * pixels.shape[1] // out_hw[1]
    out = np.zeros(out_hw, np.float64)
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            block = pixels[rows[i]:rows[i + 1], cols[j]:cols[j + 1]].astype(np.float64)
            out[i, j] = block[np.isfinite(block)].mean() if np.isfinite(block).any() else 0
    return out


def test_a_thumbnail_of_an_image_without_levels_averages_the_pixels_each_one_covers(tmp_path, monkeypatch):
    import graphconv.sources as sources

    pixels = (np.random.default_rng(2).random((70, 45)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "flat.tif", pixels, tile=(16, 16))
    monkeypatch.setattr(sources, "THUMBNAIL_BOX", 32)  # boxes cut across the blocks a pixel averages
    picture, scale = sources.thumbnail(open_source(tmp_path / "flat.tif", 1, None), longest=20)
    assert picture.shape == (1, 18, 12) and scale == (70 / 18, 45 / 12)
    np.testing.assert_allclose(picture[0], _block_means(pixels, (18, 12)), rtol=1e-5)


def test_a_thumbnail_leaves_no_data_out_of_its_means(tmp_path, monkeypatch):
    import graphconv.images
    import graphconv.sources as sources

    values = np.random.default_rng(3).random((40, 40)).astype(np.float32) * 100
    values[:9, :13] = np.nan  # three whole blocks of 4x4 and parts of others
    values[20:22, 30] = -9999
    tifffile.imwrite(tmp_path / "scene.tif", values, tile=(16, 16), extratags=[(42113, "s", 0, "-9999", True)])
    monkeypatch.setattr(sources, "THUMBNAIL_BOX", 16)
    monkeypatch.setattr(graphconv.images, "stretched", lambda picture: picture)  # the means as they are
    picture, _ = sources.thumbnail(open_source(tmp_path / "scene.tif", 1, {"values": "stored"}), longest=10)
    expected = _block_means(np.where(values == -9999, np.nan, values), (10, 10))
    np.testing.assert_allclose(picture[0], expected, rtol=1e-5)
    assert picture[0, 1, 2] == 0 and 0 < picture[0, 2, 2]  # all of a block no-data, and a row of one


def test_a_level_rounded_below_the_thumbnail_size_is_stretched_not_averaged():
    from graphconv.sources import _averaged

    class Level:
        channels, height, width = 1, 5, 4
        values = np.arange(20, dtype=np.float32).reshape(1, 5, 4)

        def read(self, top, left, bottom, right):
            return self.values[:, top:bottom, left:right]

    picture = _averaged(Level(), (6, 2))
    np.testing.assert_array_equal(picture[0], [[0.5, 2.5], [4.5, 6.5], [8.5, 10.5], [8.5, 10.5],
                                               [12.5, 14.5], [16.5, 18.5]])


# ---- rasters of any number of bands (satellite scenes) --------------------------------------------

SCENE_SHAPE = (13, 90, 120)  # a Sentinel-2 scene's 13 bands, small


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """13 bands of uint16 reflectances as GDAL writes them: pixel-interleaved (contig)
    and band-interleaved (separate) TIFFs, and zarr arrays in both orders."""
    folder = tmp_path_factory.mktemp("scene")
    bands = np.random.default_rng(8).integers(0, 10000, SCENE_SHAPE, dtype=np.uint16)
    tifffile.imwrite(folder / "contig.tif", bands.transpose(1, 2, 0), tile=(32, 32), photometric="minisblack",
                     planarconfig="contig")
    tifffile.imwrite(folder / "separate.tif", bands, photometric="minisblack", planarconfig="separate")
    for name, array in (("bhw.zarr", bands), ("hwb.zarr", bands.transpose(1, 2, 0))):
        stored = zarr_array(folder / name, array)
        assert stored.shape == array.shape
    return folder, bands


def zarr_array(path, array):
    import zarr
    stored = zarr.open_array(str(path), mode="w", shape=array.shape, chunks=(16,) * array.ndim, dtype=array.dtype)
    stored[:] = array
    return stored


@pytest.mark.parametrize("name", ["contig.tif", "separate.tif", "bhw.zarr", "hwb.zarr"])
@pytest.mark.parametrize("bands", [None, (4, 3, 2), (8, 8)])
def test_a_scene_s_bands_read_as_stored_in_either_order(scene, name, bands):
    folder, raw = scene
    channels = len(bands) if bands else SCENE_SHAPE[0]
    source = open_source(folder / name, channels, {"values": "stored", "scale": 1e-4}, bands=bands)
    assert (source.height, source.width, source.band_count) == (90, 120, 13)
    picked = raw if bands is None else raw[np.asarray(bands) - 1]
    np.testing.assert_allclose(source.read(10, 20, 70, 110), picked[:, 10:70, 20:110] * np.float32(1e-4),
                               rtol=1e-6)


def test_without_stored_values_16_bit_bands_land_on_0_to_255(scene):
    folder, raw = scene
    source = open_source(folder / "separate.tif", 3, None, bands=(2, 3, 4))
    np.testing.assert_allclose(source.read(0, 0, 90, 120), raw[1:4] / np.float32(257.0), rtol=1e-6)


def test_a_zarr_array_s_band_axis_is_the_one_of_the_network_s_channel_count(tmp_path):
    """(6, 6, 40): six bands of 6x40 pixels or 40 bands of 6x6; the network says which."""
    array = np.arange(6 * 6 * 40, dtype=np.uint8).reshape(6, 6, 40)
    zarr_array(tmp_path / "a.zarr", array)
    assert open_source(tmp_path / "a.zarr", 6, None).layout == "chw"
    assert open_source(tmp_path / "a.zarr", 40, None).layout == "hwc"


def test_a_zarr_image_s_chunks_not_stored_are_noted(tmp_path):
    """zarr reads a chunk not stored as the fill value (a sparse array, or one lost in
    copying): a run mapped a lost chunk as a black square without a word."""
    zarr = pytest.importorskip("zarr")

    image = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=(1, 40, 60), chunks=(1, 20, 20), dtype="u1",
                            fill_value=0)
    image[:] = 7
    assert unstored_chunks_note(open_source(tmp_path / "a.zarr", 1, None)) is None
    chunk = tmp_path / "a.zarr" / "c" / "0" / "1" / "2"  # chunk (0, 1, 2) as zarr 3 stores it; zarr 2: 0.1.2
    (chunk if chunk.exists() else tmp_path / "a.zarr" / "0.1.2").unlink()
    assert unstored_chunks_note(open_source(tmp_path / "a.zarr", 1, None)) == (
        "1 of the zarr array's 6 chunks is not stored, and read as 0, as zarr leaves out a chunk holding nothing but "
        "its fill value (its default: a scene's empty corners); one lost in copying would read the same")


def test_a_sparse_tiff_s_tiles_not_stored_are_noted(tmp_path):
    """A TIFF's tiles of offset and length 0 (GDAL's SPARSE_OK) read as 0, said nowhere."""
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "a.tif", np.full((64, 96), 7, np.uint8), tile=(32, 32))
    assert unstored_chunks_note(open_source(tmp_path / "a.tif", 1, None)) is None
    with tifffile.TiffFile(tmp_path / "a.tif", mode="r+b") as tif:  # tiles 1 and 4 emptied, as GDAL leaves them
        page = tif.pages[0]
        offsets, counts = list(page.dataoffsets), list(page.databytecounts)
        for tile in (1, 4):
            offsets[tile] = counts[tile] = 0
        page.tags["TileOffsets"].overwrite(offsets)
        page.tags["TileByteCounts"].overwrite(counts)
    assert unstored_chunks_note(open_source(tmp_path / "a.tif", 1, None)) == (
        "2 of the TIFF's 6 tiles are not stored, and read as 0, as a sparse TIFF's are (GDAL's SPARSE_OK); one lost "
        "in copying would read the same")


@pytest.mark.parametrize("channels, bands, message", [
    (3, None, r"has 13 bands; the model takes 3: pick them with --bands \(numbered from 1, as GDAL numbers "
              r"them; e\.g\. --bands 1,2,3\)"),
    (3, (4, 3), r"--bands lists 2 bands; the model takes 3"),
    (3, (4, 14, 0), r"--bands 4,14,0: the image has bands 1 to 13, not 14,0"),
    (16, None, r"has 13 bands; the model takes 16: --bands feeds it 16 of them, a band again where need be \(e\.g\. "
               r"--bands 1,2,3,4,5,6,7,8,9,10,11,12,13,13,13,13\), if that is what it was trained on"),
])
def test_bands_that_do_not_fit_the_scene_or_the_network_are_named(scene, channels, bands, message):
    folder, _ = scene
    with pytest.raises(GraphconvError, match=message) as err:
        open_source(folder / "separate.tif", channels, None, bands=bands)
    assert str(err.value).startswith(f"{folder / 'separate.tif'}: ")


def test_bands_of_a_picture_are_refused_with_what_they_apply_to(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "photo.png")
    with pytest.raises(GraphconvError, match="--bands picks bands of a raster"):
        open_source(tmp_path / "photo.png", 3, None, bands=(3, 2, 1))


def test_signed_data_needs_stored_values_and_then_reads_as_stored(tmp_path):
    """Elevations, SAR backscatter: int16 has no 0..255 reading, so the error says what to write."""
    heights = np.random.default_rng(1).integers(-400, 3000, (40, 50), dtype=np.int16)
    tifffile.imwrite(tmp_path / "dem.tif", heights)
    with pytest.raises(GraphconvError, match=r"pixel type int16 is not supported .*`values: stored`"):
        open_source(tmp_path / "dem.tif", 1, None)
    source = open_source(tmp_path / "dem.tif", 1, {"values": "stored"})
    np.testing.assert_array_equal(source.read(0, 0, 40, 50), heights[None].astype(np.float32))


def test_a_thumbnail_of_stored_values_is_stretched_and_of_many_bands_shows_the_first(scene):
    from graphconv.sources import thumbnail

    folder, raw = scene
    picture, scale = thumbnail(open_source(folder / "separate.tif", 13, {"values": "stored"}), longest=60)
    assert picture.shape == (1, 45, 60) and scale == (2.0, 2.0)
    first = raw[0].astype(np.float32).reshape(45, 2, 60, 2).mean(axis=(1, 3))  # each pixel a 2x2 block's mean
    low, high = np.percentile(first, (2, 98))
    np.testing.assert_allclose(picture[0], np.clip((first - low) * 255 / (high - low), 0, 255), rtol=1e-5,
                               atol=1e-3)
    rgb, _ = thumbnail(open_source(folder / "separate.tif", 3, {"values": "stored"}, bands=(4, 3, 2)), longest=60)
    assert rgb.shape == (3, 45, 60) and rgb.min() == 0 and rgb.max() == 255


@pytest.mark.parametrize("how, microns", [
    ("aperio", 0.252), ("centimetres", 0.5), ("inches", None), ("none", None)])
def test_a_slide_s_pixel_size_is_read_where_the_file_says_it(tmp_path, how, microns):
    """Aperio's MPP in the description, a resolution in pixels per centimetre; not the
    inch resolution screens fill in."""
    pixels = np.zeros((30, 40, 3), np.uint8)
    kwargs = {"aperio": dict(description="Aperio Image Library v12.0.15\n40x30 (256x256) JPEG/RGB Q=70|AppMag = "
                                         "40|MPP = 0.2520|Filename = slide"),
              "centimetres": dict(resolution=(20000, 20000), resolutionunit="CENTIMETER"),
              "inches": dict(resolution=(72, 72), resolutionunit="INCH"), "none": {}}[how]
    tifffile.imwrite(tmp_path / "slide.tif", pixels, photometric="rgb", **kwargs)
    got = open_source(tmp_path / "slide.tif", 3, None).microns_per_pixel
    assert got == pytest.approx(microns) if microns else got is None


def write_aperio(path, channels: int = 3):
    """A 0.25 µm/px slide with levels 2x and 4x coarser, its MPP in Aperio's description."""
    shape = LEVEL_SIZES[0] + ((channels,) if channels > 1 else ())
    full = (np.random.default_rng(6).random(shape) * 255).astype(np.uint8)
    photometric = "rgb" if channels > 1 else "minisblack"
    with tifffile.TiffWriter(path) as tif:
        tif.write(full, tile=(64, 64), subifds=2, photometric=photometric,
                  description="Aperio Image Library v12.0.15\n400x300 (64x64) RGB|AppMag = 40|MPP = 0.25")
        for step in (2, 4):
            tif.write(full[::step, ::step], tile=(64, 64), subfiletype=1, photometric=photometric)
    return path


@pytest.fixture(scope="module")
def aperio(tmp_path_factory):
    return write_aperio(tmp_path_factory.mktemp("aperio") / "slide.svs")


@pytest.mark.parametrize("mpp, level, downsample", [
    (0.25, 0, 1), (0.5, 1, 1), (0.505, 1, 1), (1.0, 2, 1), (2.0, 2, 2), (3.0, 2, 3), (0.52, 1, 1.04), (0.31, 0, 1.24),
    (2.5, 2, 2.5), (0.23, 0, 1)])
def test_mpp_picks_the_coarsest_level_at_most_that_fine_and_the_factor_left(aperio, mpp, level, downsample):
    """Whole factors within 2% are taken whole (blocks); others are area-averaged; a
    little finer than the scan (0.23 of 0.25: 8%) reads level 0 as it is."""
    from graphconv.sources import resolution_for

    assert resolution_for(str(aperio), mpp) == (level, pytest.approx(downsample))
    source = open_source(aperio, 3, None, mpp=mpp)
    assert (source.level, getattr(source, "factor", 1)) == (level, pytest.approx(downsample))
    assert source.downsample * source.microns_per_pixel == pytest.approx(0.25 * 2 ** level * downsample)


def test_mpp_finer_than_the_scan_is_refused(aperio):
    with pytest.raises(GraphconvError, match=r"--mpp 0.2: the slide's pixels are 0.25 µm at level 0, more than 15% "
                                             r"larger; graphconv does not enlarge images"):
        open_source(aperio, 3, None, mpp=0.2)


def test_mpp_coarser_than_the_whole_slide_names_mpp_not_downsample(aperio):
    with pytest.raises(GraphconvError, match=r"--mpp 1e\+09 reads it [0-9.e+]+ times coarser: the image is \d+x\d+, "
                                             r"smaller than one block"):
        open_source(aperio, 3, None, mpp=1e9)


def test_mpp_of_a_scan_at_no_whole_multiple_reads_it_at_that_size(tmp_path):
    """A Hamamatsu-like 0.2265 µm/px scan for a 0.5 µm/px classifier: the nearest whole
    factor, 2, would read it at 0.453 (9% finer); read 2.2075x coarser it is 0.5."""
    from graphconv.sources import resolution_for

    with tifffile.TiffWriter(tmp_path / "scan.svs") as tif:
        tif.write(np.zeros((300, 400, 3), np.uint8), tile=(64, 64), photometric="rgb",
                  description="Aperio Image Library v12\n400x300|MPP = 0.2265")
    level, factor = resolution_for(str(tmp_path / "scan.svs"), 0.5)
    assert level == 0 and factor == pytest.approx(0.5 / 0.2265)
    source = open_source(tmp_path / "scan.svs", 3, None, mpp=0.5)
    assert (source.height, source.width) == (135, 181)
    assert source.downsample * source.microns_per_pixel == pytest.approx(0.5)


class InMemory:
    """A source over an array, to check a Downsampled read against the numpy reference."""

    path, channels = "memory", 3

    def __init__(self, pixels: np.ndarray):
        self.pixels, (self.height, self.width) = pixels, pixels.shape[1:]

    def read(self, top: int, left: int, bottom: int, right: int) -> np.ndarray:
        return self.pixels[:, top:bottom, left:right].copy()


def area_reference(pixels: np.ndarray, factor: float) -> np.ndarray:
    """Each coarse pixel: the overlap-weighted mean of the fine ones its factor x factor
    square covers, written out as one dense weight matrix per axis."""
    def weights(coarse: int, fine: int) -> np.ndarray:
        low = np.arange(coarse)[:, None] * factor
        return np.clip(np.minimum(np.arange(fine)[None] + 1, low + factor)
                       - np.maximum(np.arange(fine)[None], low), 0, None) / factor

    _, height, width = pixels.shape
    rows, cols = weights(int(height / factor), height), weights(int(width / factor), width)
    return np.einsum("ih,chw,jw->cij", rows, pixels.astype(np.float64), cols)


@given(factor=st.floats(1.0, 6.0), height=st.integers(6, 60), width=st.integers(6, 60),
       tile=st.tuples(st.integers(1, 9), st.integers(1, 9)))
@settings(max_examples=60, deadline=None)
def test_a_downsampled_read_is_the_area_mean_and_the_same_in_any_tiles(factor, height, width, tile):
    from graphconv.sources import Downsampled

    pixels = (np.random.default_rng(height * width).random((3, height, width)) * 255).astype(np.float32)
    source = Downsampled(InMemory(pixels), factor)
    whole = source.read(0, 0, source.height, source.width)
    np.testing.assert_allclose(whole, area_reference(pixels, factor), rtol=1e-6, atol=1e-4)
    tiled = np.concatenate([np.concatenate([source.read(top, left, min(top + tile[0], source.height),
                                                        min(left + tile[1], source.width))
                                            for left in range(0, source.width, tile[1])], axis=2)
                            for top in range(0, source.height, tile[0])], axis=1)
    np.testing.assert_array_equal(tiled, whole)  # bit for bit: the tiles of a map stay exact


def test_a_downsampled_read_of_a_large_box_goes_a_strip_at_a_time(monkeypatch):
    """A tile of a slide read 8x coarser is 64 tiles of level 0: the read is split in
    strips of rows under READ_PIXELS, with the same result."""
    from graphconv import sources

    pixels = (np.random.default_rng(1).random((3, 90, 70)) * 255).astype(np.float32)
    reads = []

    class Counting(InMemory):
        def read(self, top, left, bottom, right):
            reads.append((bottom - top) * (right - left))
            return super().read(top, left, bottom, right)

    for factor in (3, 2.6):
        expected = sources.Downsampled(InMemory(pixels), factor).read(0, 0, 30, 23)
        monkeypatch.setattr(sources, "READ_PIXELS", 600)
        reads.clear()
        np.testing.assert_array_equal(sources.Downsampled(Counting(pixels), factor).read(0, 0, 30, 23), expected)
        assert len(reads) > 5 and max(reads) <= 2 * 600 + 4 * 90
        monkeypatch.undo()


def test_mpp_of_an_image_that_does_not_state_its_pixel_size(slide, tmp_path):
    with pytest.raises(GraphconvError, match="--mpp: the image does not state its pixel size"):
        open_source(slide, 3, None, mpp=0.5)
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "photo.png")
    with pytest.raises(GraphconvError, match="--mpp reads a slide at a pixel size its file states: give a TIFF"):
        open_source(tmp_path / "photo.png", 3, None, mpp=0.5)


def test_mpp_on_levels_that_are_not_exact_multiples_still_takes_the_coarse_level(tmp_path):
    """Scanners' levels are seldom exact: 4001 rows over 4 is 1000.25. --mpp 1.0 on a
    0.25 µm/px slide must read the 4x level, not level 0 averaged in 4x4 blocks (16 times
    the pixels decoded), though the level is 0.02% off and the blocks exact."""
    from graphconv.sources import resolution_for

    full = np.zeros((4001, 3999), np.uint8)
    with tifffile.TiffWriter(tmp_path / "uneven.svs") as tif:
        tif.write(full, tile=(256, 256), subifds=2, description="Aperio Image Library v12\n3999x4001|MPP = 0.25")
        tif.write(np.zeros((1000, 999), np.uint8), tile=(256, 256), subfiletype=1)
        tif.write(np.zeros((250, 249), np.uint8), tile=(256, 256), subfiletype=1)
    assert resolution_for(str(tmp_path / "uneven.svs"), 1.0) == (1, 1)
    assert resolution_for(str(tmp_path / "uneven.svs"), 4.0) == (2, 1)
    assert resolution_for(str(tmp_path / "uneven.svs"), 8.0) == (2, 2)


def test_a_raster_of_bands_is_not_a_picture_but_an_rgba_tiff_is(tmp_path):
    """Four bands stored as bands (PlanetScope's blue, green, red, near infrared) do not
    silently feed their first three to an RGB network; an RGBA picture drops its alpha."""
    pixels = np.random.default_rng(2).integers(0, 255, (20, 30, 4), dtype=np.uint8)
    pixels[..., 3] |= 1  # alpha 0 would mark no-data (test_tiled_cli's alpha tests)
    tifffile.imwrite(tmp_path / "bands.tif", pixels, photometric="minisblack", planarconfig="contig")
    tifffile.imwrite(tmp_path / "rgba.tif", pixels, photometric="rgb", extrasamples=["unassalpha"])
    with pytest.raises(GraphconvError, match="has 4 bands; the model takes 3: pick them with --bands"):
        open_source(tmp_path / "bands.tif", 3, None)
    np.testing.assert_array_equal(open_source(tmp_path / "rgba.tif", 3, None).read(0, 0, 20, 30),
                                  pixels[..., :3].transpose(2, 0, 1))
    np.testing.assert_array_equal(open_source(tmp_path / "bands.tif", 3, None, bands=(3, 2, 1)).read(0, 0, 20, 30),
                                  pixels[..., [2, 1, 0]].transpose(2, 0, 1))


def test_grey_pages_of_one_series_are_bands_not_a_picture_s_colours(tmp_path):
    """Three grey pages (a z-stack: tifffile's axes QYX) were read as red, green and blue
    and fed to a grey network as luma without a word; they are bands to pick from. Three
    samples of one page stay an RGB picture."""
    stack = np.random.default_rng(3).integers(0, 255, (3, 20, 30), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    tifffile.imwrite(tmp_path / "rgb.tif", stack, photometric="rgb")
    with pytest.raises(GraphconvError, match="has 3 bands; the model takes 1: pick them with --bands"):
        open_source(tmp_path / "stack.tif", 1, None)
    np.testing.assert_array_equal(open_source(tmp_path / "stack.tif", 1, None, bands=(2,)).read(0, 0, 20, 30),
                                  stack[1:2])
    assert open_source(tmp_path / "rgb.tif", 1, None).read(0, 0, 20, 30).shape == (1, 20, 30)  # luma



@pytest.mark.parametrize("shape, bands_first", [((60, 80, 5), False), ((5, 60, 80), True), ((60, 80, 2), False)])
def test_an_array_tifffile_was_given_bare_is_read_in_the_order_its_shape_tells(tmp_path, shape, bands_first):
    """`tifffile.imwrite('x.tif', scene)` of a (60, 80, 5) scene stores 60 pages of 80x5
    pixels and names its axes QYX (Q: unknown): it was read as 60 bands of 80x5. Its axes
    are told as a bare array's are: (H, W, bands) here, as an .npy of that shape is."""
    scene = np.random.default_rng(5).random(shape, dtype=np.float32)
    tifffile.imwrite(tmp_path / "scene.tif", scene)
    assert tifffile.TiffFile(tmp_path / "scene.tif").series[0].axes == "QYX"  # tifffile's guess, kept in the file
    source = open_source(tmp_path / "scene.tif", 1, {"values": "stored"}, bands=(2,))
    chw = scene if bands_first else scene.transpose(2, 0, 1)
    assert (source.height, source.width, source.band_count) == (60, 80, chw.shape[0])
    np.testing.assert_array_equal(source.read(10, 20, 50, 70), chw[1:2, 10:50, 20:70])

def test_an_alpha_band_the_network_reads_as_a_channel_is_data_not_a_mask(tmp_path):
    """tifffile writes a 4-band uint16 array (RGB and near infrared) as RGB plus alpha: that
    band, fed to a 4-channel network, was also GDAL's mask, and every pixel where it was
    0 (dark water) became no-data. Fed, it is data (noted); not fed, it masks."""
    from graphconv.sources import alpha_fed_note

    scene = np.random.default_rng(4).integers(1, 10000, (4, 20, 30), dtype=np.uint16)
    scene[3, :5, :5] = 0
    tifffile.imwrite(tmp_path / "rgbn.tif", scene, photometric="rgb", planarconfig="separate",
                     extrasamples=["unassalpha"])  # what tifffile's defaults write (until a later version)
    assert tifffile.TiffFile(tmp_path / "rgbn.tif").pages[0].extrasamples  # stored as alpha
    fed = open_source(tmp_path / "rgbn.tif", 4, None)
    assert fed.valid_pixels is None and fed.alpha_band is None
    assert alpha_fed_note(fed).startswith("band 4 is stored as an alpha band (the file's ExtraSamples), but the "
                                          "model reads it as a channel: it is fed as data")
    assert alpha_fed_note(open_source(tmp_path / "rgbn.tif", 4, None, bands=(4, 3, 2, 1))) is not None
    masked = open_source(tmp_path / "rgbn.tif", 3, None, bands=(1, 2, 3))
    assert masked.alpha_band == 4 and alpha_fed_note(masked) is None
    np.testing.assert_array_equal(np.asarray(masked.valid_pixels[0:20, 0:30]) != 0, scene[3] != 0)


def test_a_zarr_group_is_refused_naming_its_image_arrays(tmp_path):
    """A Dataset written by xarray is a group: "No array found in store" said nothing of
    the path that works, the image array in it."""
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(tmp_path / "scene.zarr"), mode="w")
    group.create_array("reflectance", shape=(4, 20, 30), dtype="uint16")
    group.create_array("x", shape=(30,), dtype="float64")  # coordinates: no image
    with pytest.raises(GraphconvError, match="it is a zarr group \\(as xarray writes a Dataset\\); give one of its "
                                             "arrays: .*scene.zarr/reflectance 4x20x30$"):
        open_source(tmp_path / "scene.zarr", 4, None)


def test_images_written_one_by_one_are_noted_as_unread(tmp_path):
    """Pages written one by one are series of their own and only the first is read: said,
    counting those of the first's size only (a slide's label and thumbnail are not)."""
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        for z in range(3):
            tif.write(np.full((20, 30), z, np.uint8), photometric="minisblack", contiguous=False)
        tif.write(np.zeros((8, 8), np.uint8), photometric="minisblack", contiguous=False)  # a thumbnail
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((20, 30), np.uint8), photometric="minisblack")
    source = open_source(tmp_path / "pages.tif", 1, None)
    np.testing.assert_array_equal(source.read(0, 0, 20, 30), 0)
    assert unread_images_note(source).startswith("the file holds 3 images of 20x30 pixels (pages written one by one")
    assert "only the first is read" in unread_images_note(source)
    assert unread_images_note(open_source(tmp_path / "one.tif", 1, None)) is None


def test_the_largest_image_of_a_tiff_is_read_not_an_overview_stored_first(tmp_path):
    """An OME-TIFF converted from VSI, CZI or SCN may hold the overview first: the slide,
    the largest image, is read, at its own pixel size, and the note says which."""
    from graphconv.sources import _pixel_size_and_level_heights

    slide = np.random.default_rng(0).integers(0, 255, (60, 90), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "overview_first.ome.tif", ome=True) as tif:
        tif.write(np.full((20, 30), 7, np.uint8), photometric="minisblack",
                  metadata={"PhysicalSizeX": 40.0, "PhysicalSizeY": 40.0})
        tif.write(slide, photometric="minisblack", metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    source = open_source(tmp_path / "overview_first.ome.tif", 1, None)
    np.testing.assert_array_equal(source.read(0, 0, 60, 90)[0], slide)
    assert source.microns_per_pixel == 0.5
    assert _pixel_size_and_level_heights(str(tmp_path / "overview_first.ome.tif")) == ((0.5, 0.5), [60])
    said = unread_images_note(source)
    assert said.startswith("the file holds 2 images; graphconv reads the largest, image 1 (counting from 0), of "
                           "60x90 pixels, not the first, of 20x30") and "bfconvert -series N" in said


def test_a_downsampled_source_spans_exact_level_0_pixels(scene):
    """A 90x120 scene read 7x coarser is 12x17 pixels (the last rows and columns fill no
    block): each still spans exactly 7x7 of the file's, which its size cannot say."""
    from graphconv.sources import level0_span

    folder, _ = scene
    source = open_source(folder / "separate.tif", 3, None, bands=(4, 3, 2), downsample=7)
    assert (source.height, source.width) == (12, 17) and level0_span(source) == (7.0, 7.0)


@pytest.mark.parametrize("names, layout", [(("band", "y", "x"), "chw"), (("y", "x", "band"), "hwc"),
                                           (("lat", "lon", "wavelength"), "hwc"), (("a", "b", "c"), None)])
def test_a_zarr_array_s_dimension_names_say_where_its_bands_are(tmp_path, names, layout):
    """(64, 64, 224): a hyperspectral chip with more bands than rows, which the shape alone
    cannot place; xarray's dimension names can (unnamed or unspatial names: the shape)."""
    import zarr

    data = np.arange(64 * 64 * 224, dtype=np.uint16).reshape(64, 64, 224)
    if layout == "chw":
        data = data.transpose(2, 0, 1)
    stored = zarr.open_array(str(tmp_path / "cube.zarr"), mode="w", shape=data.shape, chunks=(32, 32, 32),
                             dtype=data.dtype, dimension_names=list(names))
    stored[:] = data
    if layout is None:
        with pytest.raises(GraphconvError, match=r"cannot tell its band axis .* name its dimensions"):
            open_source(tmp_path / "cube.zarr", 3, {"values": "stored"}, bands=(30, 20, 10))
        return
    source = open_source(tmp_path / "cube.zarr", 3, {"values": "stored"}, bands=(30, 20, 10))
    assert source.layout == layout and (source.height, source.width) == (64, 64)
    chw = data if layout == "chw" else data.transpose(2, 0, 1)
    np.testing.assert_array_equal(source.read(0, 0, 64, 64), chw[[29, 19, 9]].astype(np.float32))


def test_a_z_stack_is_refused_naming_its_axes(tmp_path):
    """An OME-TIFF of 2 z-planes of 3 channels: one plane is what a map is of."""
    tifffile.imwrite(tmp_path / "stack.ome.tif", np.zeros((1, 2, 3, 16, 20), np.uint8),
                     metadata={"axes": "TZCYX"}, ome=True)
    with pytest.raises(GraphconvError, match=r"shape \(2, 3, 16, 20\) \(axes ZCYX: Z 2, C 3, Y 16, X 20\): expected "
                                             r"\(H, W\), \(H, W, C\) or \(C, H, W\); graphconv maps one plane"):
        open_source(tmp_path / "stack.ome.tif", 3, None)


def write_ome_zarr(path, zarr_format: int = 2, channels: int = 3, unit: str = "micrometer",
                   microns: float = 0.25, extra: dict | None = None):
    """An OME-Zarr as bioformats2raw and ome-zarr-py write one: (t, c, z, y, x) levels
    "0", "1", "2", each half the last, each with its scale; NGFF 0.4 on zarr 2, 0.5
    (under "ome") on zarr 3."""
    import zarr

    full = (np.random.default_rng(7).random((1, channels, 1, *LEVEL_SIZES[0])) * 255).astype(np.uint8)
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    levels = []
    for k in range(3):
        levels.append(full[..., ::2 ** k, ::2 ** k])
        group.create_array(str(k), data=levels[-1], chunks=(1, channels, 1, 64, 64))
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}, {"name": "z", "type": "space"},
            {"name": "y", "type": "space", "unit": unit}, {"name": "x", "type": "space", "unit": unit}]
    datasets = [{"path": str(k), "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, 1.0, 1.0, microns * 2 ** k, microns * 2 ** k]}]} for k in range(3)]
    multiscale = {"version": "0.4", "axes": axes, "datasets": datasets, **(extra or {})}
    if zarr_format == 2:
        group.attrs["multiscales"] = [multiscale]
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [dict(multiscale, version="0.5")]}
    return [level[0, :, 0] for level in levels]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_each_level_of_an_ome_zarr_reads_as_stored(tmp_path, zarr_format):
    levels = write_ome_zarr(tmp_path / "slide.ome.zarr", zarr_format)
    for level, pixels in enumerate(levels):
        source = open_source(tmp_path / "slide.ome.zarr", 3, None, level)
        assert (source.height, source.width, source.levels, source.downsample) == (*LEVEL_SIZES[level], 3, 2 ** level)
        assert source.microns_per_pixel == 0.25
        np.testing.assert_array_equal(source.read(10, 30, 70, 90), pixels[:, 10:70, 30:90])
    with pytest.raises(GraphconvError, match=r"--level 3: the image has 3 levels \(0: 300x400, 1: 150x200"):
        open_source(tmp_path / "slide.ome.zarr", 3, None, 3)


OME_PIXELS = ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
              '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="64" SizeY="48" '
              'SizeC="3" SizeZ="1" SizeT="1" {sizes}><Channel ID="Channel:0:0" SamplesPerPixel="3"/>'
              '<TiffData/></Pixels></Image></OME>')


@pytest.mark.parametrize("sizes, microns, refusal", [
    ('PhysicalSizeX="0.25" PhysicalSizeY="0.25"', 0.25, None),
    ('PhysicalSizeX="250" PhysicalSizeXUnit="nm" PhysicalSizeY="250" PhysicalSizeYUnit="nm"', 0.25, None),
    ('PhysicalSizeX="0.0005" PhysicalSizeXUnit="mm"', 0.5, None),  # Y unstated: square
    ('PhysicalSizeX="0.25" PhysicalSizeY="0.5"', None, r"pixels are not square \(0\.5 µm high, 0\.25 µm wide\)"),
    ('PhysicalSizeX="3" PhysicalSizeXUnit="pixel"', None, "its OME PhysicalSizeXUnit is 'pixel', not a length"),
])
def test_an_ome_tiff_s_pixel_size_is_read_in_its_units_and_must_be_square(tmp_path, sizes, microns, refusal):
    """An OME-TIFF in nanometres "did not state its pixel size"; one with pixels twice as
    high as wide was read by its width alone, so --mpp 0.5 read it 1 µm per pixel in y."""
    path = tmp_path / "slide.ome.tif"
    tifffile.imwrite(path, np.zeros((48, 64, 3), np.uint8), photometric="rgb",
                     description=OME_PIXELS.format(sizes=sizes), metadata=None)
    assert open_source(path, 3, None).microns_per_pixel == (pytest.approx(microns) if microns else None)
    if refusal:
        with pytest.raises(GraphconvError, match=refusal):
            open_source(path, 3, None, mpp=0.5)
    else:
        assert open_source(path, 3, None, mpp=2 * microns).downsample == pytest.approx(2)


@pytest.mark.parametrize("unit, resolution, microns, refusal", [
    ("CENTIMETER", (40000, 40000), 0.25, None),
    ("CENTIMETER", (40000, 20000), None, r"not square \(0\.5 µm high, 0\.25 µm wide\)"),
    ("INCH", (101600, 101600), 0.25, None),  # a microscope's, in inches
    ("INCH", (300, 300), None, r"its resolution is 300 pixels per inch \(84\.67 µm a pixel\), which graphconv takes "
                               "for a screen's or a document scanner's"),
    ("NONE", (1, 1), None, "no Aperio MPP"),
])
def test_a_tiff_resolution_gives_the_pixel_size_in_centimetres_or_a_microscope_s_inches(tmp_path, unit, resolution, microns, refusal):
    path = tmp_path / "scan.tif"
    tifffile.imwrite(path, np.zeros((48, 64, 3), np.uint8), photometric="rgb", resolution=resolution,
                     resolutionunit=unit)
    assert open_source(path, 3, None).microns_per_pixel == (pytest.approx(microns) if microns else None)
    if refusal:
        with pytest.raises(GraphconvError, match=refusal):
            open_source(path, 3, None, mpp=0.5)


def test_mpp_of_an_ome_zarr_comes_from_its_scale_and_unit(tmp_path):
    """A pixel of 250 nanometres at level 0, 2x and 4x at levels 1 and 2, and a
    multiscale-wide scale of 2 on top: 0.5 µm at level 0."""
    from graphconv.sources import resolution_for

    write_ome_zarr(tmp_path / "nm.zarr", unit="nanometer", microns=250.0,
                   extra={"coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1, 2, 2]}]})
    assert open_source(tmp_path / "nm.zarr", 3, None).microns_per_pixel == pytest.approx(0.5)
    assert resolution_for(str(tmp_path / "nm.zarr"), 1.2) == (1, pytest.approx(1.2))
    write_ome_zarr(tmp_path / "unitless.zarr", unit="")
    with pytest.raises(GraphconvError, match="does not state its pixel size"):
        open_source(tmp_path / "unitless.zarr", 3, None, mpp=0.5)


def test_an_ome_zarr_s_channels_are_bands(tmp_path):
    levels = write_ome_zarr(tmp_path / "six.zarr", channels=6)
    with pytest.raises(GraphconvError, match="has 6 bands; the model takes 3: pick them with --bands"):
        open_source(tmp_path / "six.zarr", 3, None)
    source = open_source(tmp_path / "six.zarr", 3, None, bands=(6, 1, 3))
    np.testing.assert_array_equal(source.read(5, 6, 40, 50), levels[0][[5, 0, 2], 5:40, 6:50])


def test_an_ome_zarr_z_stack_is_refused_naming_its_axes(tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "stack.zarr"), mode="w", zarr_format=2)
    group.create_array("0", data=np.zeros((1, 3, 4, 20, 20), np.uint8))
    group.attrs["multiscales"] = [{"version": "0.3", "axes": ["t", "c", "z", "y", "x"], "datasets": [{"path": "0"}]}]
    with pytest.raises(GraphconvError, match=r"shape \(1, 3, 4, 20, 20\) \(axes t, c, z, y, x\) with z 4 positions: "
                                             "graphconv maps one plane"):
        open_source(tmp_path / "stack.zarr", 3, None)


def test_float_rasters_are_read_as_0_to_1_or_refused(tmp_path):
    """A float TIFF of 0..3 was scaled by 255 and mapped to nonsense (exit 0), where
    load_image refuses it; as stored, values of any range pass. NaN is no-data, never a
    pixel: it goes into the network as 0 after the preprocess; infinity is refused."""
    rng = np.random.default_rng(4)
    tifffile.imwrite(tmp_path / "wide.tif", (rng.random((40, 50)) * 3).astype(np.float32), tile=(16, 16))
    with pytest.raises(GraphconvError, match=r"wide.tif: float pixels from .* to 2\.9.* in rows 0..39, columns "
                                             r"0..49: float images are read as 0..1; .* `values: stored`"):
        open_source(tmp_path / "wide.tif", 1, None).read(0, 0, 40, 50)
    assert open_source(tmp_path / "wide.tif", 1, {"values": "stored"}).read(0, 0, 40, 50).max() > 2
    holes = rng.random((40, 50)).astype(np.float32)
    holes[30:, 40:] = np.nan
    tifffile.imwrite(tmp_path / "holes.tif", holes, tile=(16, 16))
    tifffile.imwrite(tmp_path / "nodata.tif", holes, tile=(16, 16), extratags=[(42113, 2, 4, "nan", True)])
    for name, preprocess in (("holes.tif", None), ("holes.tif", {"values": "stored", "mean": [3.0]}),
                             ("nodata.tif", None)):
        values, missing = open_source(tmp_path / name, 1, preprocess).read_masked(20, 20, 40, 50)
        np.testing.assert_array_equal(missing[0], np.isnan(holes[20:, 20:]))
        assert (values[missing] == 0).all() and not np.isnan(values).any()
    infinite = holes.copy()
    infinite[33, 27] = -np.inf
    tifffile.imwrite(tmp_path / "inf.tif", infinite, tile=(16, 16))
    with pytest.raises(GraphconvError, match=r"inf.tif: float pixels that are infinite, the first at row 33, column 27 "
                                             r"\(band 0\), read in rows 20..39, columns 10..49$"):
        open_source(tmp_path / "inf.tif", 1, None).read(20, 10, 40, 50)


def test_a_declared_no_data_value_is_no_pixel_for_the_float_range_or_the_network(tmp_path):
    """A float 0..1 raster declaring -9999 was refused as 'float pixels from -9999 to 1'
    (the no-data counted as a pixel); with values stored, -9999 went into the network
    as a pixel. Now no-data pixels (-9999 in every band) are left out of the check and
    read as 0 after the preprocess, the value of the network's own padding; other
    pixels as before. A -9999 in one band of a pixel whose other band holds a value is
    data, as GDAL's dataset mask has it: fed as stored (it was replaced, and the pixel
    counted as no-data), and a 0..1 raster's range check says why it counts."""
    rng = np.random.default_rng(5)
    scene = rng.random((2, 30, 40)).astype(np.float32)
    scene[:, :, :10] = -9999
    tifffile.imwrite(tmp_path / "nd.tif", scene, photometric="minisblack", planarconfig="separate",
                     extratags=[(42113, 2, 6, "-9999", True)])
    tifffile.imwrite(tmp_path / "plain.tif", np.where(scene == -9999, 0.5, scene).astype(np.float32),
                     photometric="minisblack", planarconfig="separate")
    stored = {"values": "stored", "scale": 2.0, "mean": [0.5, 0.25], "std": [0.5, 2.0]}
    nodata = np.broadcast_to(scene[0] == -9999, scene.shape)
    for preprocess in (None, stored):
        values, missing = open_source(tmp_path / "nd.tif", 2, preprocess).read_masked(0, 0, 30, 40)
        plain = open_source(tmp_path / "plain.tif", 2, preprocess).read(0, 0, 30, 40)
        np.testing.assert_array_equal(missing, nodata)
        assert (values[missing] == 0).all()
        np.testing.assert_array_equal(values[~missing], plain[~missing])
    lone = scene.copy()
    lone[1, 20:, 30:] = -9999  # one band's -9999 in pixels whose first band is data
    tifffile.imwrite(tmp_path / "lone.tif", lone, photometric="minisblack", planarconfig="separate",
                     extratags=[(42113, 2, 6, "-9999", True)])
    tifffile.imwrite(tmp_path / "lone_plain.tif", np.where(nodata, 0.5, lone).astype(np.float32),
                     photometric="minisblack", planarconfig="separate")
    values, missing = open_source(tmp_path / "lone.tif", 2, stored).read_masked(0, 0, 30, 40)
    np.testing.assert_array_equal(missing, nodata)
    plain = open_source(tmp_path / "lone_plain.tif", 2, stored).read(0, 0, 30, 40)
    np.testing.assert_array_equal(values[~missing], plain[~missing])
    assert values[1, 25, 35] == (-9999 * 2.0 - 0.25) / 2.0  # as stored, through the preprocess
    with pytest.raises(GraphconvError, match=r"lone.tif: float pixels from -9999 to .*, no-data pixels \(-9999 in "
                                             r"every band\) left out; -9999 in some bands of a pixel that is data "
                                             r"is a value \(a pixel is no-data only where every band read"):
        open_source(tmp_path / "lone.tif", 2, None).read(0, 0, 30, 40)


def test_a_colour_with_zero_bands_is_data_not_no_data(tmp_path):
    """GDAL no-data 0 on an 8-bit RGB picture, the common case: saturated red (220, 0,
    0) has G = B = 0. A pixel counted as no-data where any band held 0, and each 0
    sample went in as the preprocess mean (0 after it) instead of raw 0: red, dark and
    water colours changed and their cells left out. Now, as GDAL's dataset mask and
    rasterio's dataset_mask(), a pixel is no-data only where every band read holds 0:
    the red field reads exactly as the same pixels without a no-data tag."""
    picture = np.full((64, 64, 3), 128, np.uint8)
    picture[:, 32:] = (220, 0, 0)
    picture[:8, :8] = 0
    tifffile.imwrite(tmp_path / "red.tif", picture, photometric="rgb", extratags=[(42113, 2, 2, "0", True)])
    tifffile.imwrite(tmp_path / "plain.tif", picture, photometric="rgb")
    for channels in (3, 1):  # RGB, and grey from it (the three bands feed it)
        preprocess = {"scale": 1 / 255, "mean": [0.5] * channels, "std": [0.25] * channels}
        values, missing = open_source(tmp_path / "red.tif", channels, preprocess).read_masked(0, 0, 64, 64)
        plain = open_source(tmp_path / "plain.tif", channels, preprocess).read(0, 0, 64, 64)
        corner = np.zeros((channels, 64, 64), bool)
        corner[:, :8, :8] = True
        np.testing.assert_array_equal(missing, corner)
        np.testing.assert_array_equal(values[~corner], plain[~corner])
        assert (values[corner] == 0).all()
    # Pillow's L of (220, 0, 0): 65.78, rounded
    assert values.shape[0] == 1 and np.isclose(values[0, 40, 40], (66 / 255 - 0.5) / 0.25)
    preprocess = {"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.25] * 3}
    red = open_source(tmp_path / "red.tif", 3, preprocess).read(40, 40, 41, 41)[:, 0, 0]
    np.testing.assert_allclose(red, [(220 / 255 - 0.5) / 0.25, -2.0, -2.0], rtol=1e-6)  # raw 0, not the mean


def test_a_nan_sample_of_a_pixel_that_is_data_goes_in_as_0_and_the_pixel_stays_data(tmp_path):
    """NaN never reaches the network: in a pixel all of whose bands are NaN it is
    no-data; in one whose other bands hold values only that sample is replaced (0
    after the preprocess) and the pixel is data, its other bands as stored."""
    rng = np.random.default_rng(9)
    scene = rng.random((2, 20, 30)).astype(np.float32)
    scene[:, :5] = np.nan
    scene[0, 10:, 20:] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", scene, photometric="minisblack", planarconfig="separate")
    preprocess = {"values": "stored", "mean": [0.5, 0.5], "std": [2.0, 2.0]}
    values, missing = open_source(tmp_path / "nan.tif", 2, preprocess).read_masked(0, 0, 20, 30)
    np.testing.assert_array_equal(missing[0], np.isnan(scene).all(axis=0))
    assert not np.isnan(values).any() and (values[np.isnan(scene)] == 0).all()
    np.testing.assert_array_equal(values[1, 10:, 20:], (scene[1, 10:, 20:] - 0.5) / 2.0)


@pytest.mark.parametrize("tag", ["inf", "-inf", "1e400", "300", "-9999", "0.5"])
def test_a_no_data_value_an_integer_raster_cannot_hold_marks_no_pixel(tmp_path, tag):
    """GDAL_NODATA 'inf', '-inf' or '1e400' on an 8-bit raster raised OverflowError (a
    traceback, exit 1) at the first read. A value the type cannot hold marks no pixel:
    every pixel is data, the cells of a no-data run are none, and nothing is read to
    find that out."""
    from types import SimpleNamespace

    from graphconv.background import cells_left_out
    from graphconv.receptive import Field

    pixels = np.random.default_rng(8).integers(0, 255, (40, 40), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "nd.tif", pixels, extratags=[(42113, 2, len(tag) + 1, tag, True)])
    source = open_source(tmp_path / "nd.tif", 1, None)
    values, missing = source.read_masked(0, 0, 40, 40)
    assert missing is None and source.nodata_can_occur is False
    np.testing.assert_array_equal(values[0], pixels)
    source._stored = None  # nothing read for the cells
    field = Field((8, 8), (4, 4), (0, 0))
    assert cells_left_out(source, SimpleNamespace(field=field, cell_area=field), None, 0.5) is None


def test_a_downsampled_read_in_a_forked_child_after_openmp_is_an_error_not_a_killed_process(tmp_path, monkeypatch):
    """--downsample's area means are numba parallel kernels: run in a process forked
    after numba's GNU OpenMP started, they killed it (as the network's kernels did before
    `threads.check_not_forked_after_openmp`); now the same error names the fix."""
    import graphconv.threads as threads

    pixels = np.random.default_rng(8).integers(1, 255, (40, 40), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "page.tif", pixels)
    tifffile.imwrite(tmp_path / "nd.tif", pixels, extratags=[(42113, 2, 2, "0", True)])
    monkeypatch.setattr(threads, "_forked_after_openmp", True)
    for name in ("page.tif", "nd.tif"):  # area_means, valid_area_means (graphconv/ops/area_means.py)
        with pytest.raises(threads.ForkedAfterOpenMPError, match="spawn"):
            open_source(tmp_path / name, 1, None, downsample=2).read(0, 0, 20, 20)


def test_downsampling_averages_only_valid_pixels(tmp_path):
    """--downsample's area means averaged -9999 into real pixels (190 and -9999 made
    -3206.7): now a pixel is the mean of the valid pixels its square covers, no-data
    where it covers none, and exactly the old mean where its square holds no no-data."""
    from graphconv.sources import Downsampled

    rng = np.random.default_rng(6)
    scene = rng.integers(100, 200, (1, 30, 30)).astype(np.float32)
    scene[0, :10] = -9999
    scene[0, 10, 4:6] = -9999
    tifffile.imwrite(tmp_path / "nd.tif", scene[0], extratags=[(42113, 2, 6, "-9999", True)])
    tifffile.imwrite(tmp_path / "plain.tif", scene[0])
    stored = {"values": "stored"}
    for factor in (2, 2.5):
        source = open_source(tmp_path / "nd.tif", 1, stored, downsample=factor)
        plain = open_source(tmp_path / "plain.tif", 1, stored, downsample=factor)
        values, missing = source.read_masked(0, 0, source.height, source.width)
        assert values.min() >= 0 and missing[0, 0].all() and not missing[0, -1].any()
        whole = plain.read(0, 0, plain.height, plain.width)
        clean = np.zeros(values.shape, bool)
        for i in range(source.height):
            clean[:, i] = np.floor(i * factor) >= 11  # squares reaching rows 0..10 hold no-data
        assert clean.any()
        np.testing.assert_array_equal(values[clean], whole[clean])
        assert isinstance(source, Downsampled)
    source = open_source(tmp_path / "nd.tif", 1, stored, downsample=2)
    assert source.read(5, 2, 6, 3)[0, 0, 0] == np.mean(scene[0, 10:12, 4:6][scene[0, 10:12, 4:6] != -9999])


def garble_tiles(path, first: int) -> None:
    """Overwrite the bytes of the first page's tiles from `first` on with noise, in place
    (a damaged file of the right length: a truncated one is refused on opening)."""
    with tifffile.TiffFile(path) as tif:
        spans = list(zip(tif.pages[0].dataoffsets, tif.pages[0].databytecounts))[first:]
    data = bytearray(path.read_bytes())
    noise = np.random.default_rng(0).integers(0, 255, len(data), np.uint8).tobytes()
    for offset, count in spans:
        data[offset:offset + count] = noise[offset:offset + count]
    path.write_bytes(bytes(data))


def test_a_damaged_tile_is_one_error_naming_the_file_and_the_box(tmp_path):
    """_decodable_array decodes one pixel up front; a tile damaged further in failed with
    tifffile's traceback at the first read that met it."""
    pixels = np.random.default_rng(5).integers(0, 255, (128, 128), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "cut.tif", pixels, tile=(64, 64), compression="zlib")
    garble_tiles(tmp_path / "cut.tif", 2)  # the second row of tiles
    source = open_source(tmp_path / "cut.tif", 1, None)
    np.testing.assert_array_equal(source.read(0, 0, 64, 64), pixels[None, :64, :64])
    with pytest.raises(GraphconvError, match=r"cut.tif: cannot decode its pixels in rows 64..127, columns 0..127 "
                                             r"\(TIFF tile 2 of page 0 \(rows 64..127, columns 0..63\), at byte "
                                             r"\d+\): "):
        source.read(64, 0, 128, 128)


def zero_bytes(path, tile: int, start: float, end: float) -> None:
    """Overwrite with zeros the part `start`..`end` (fractions) of the first page's tile
    `tile`, in place: what a partial copy into a preallocated file leaves."""
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[tile], tif.pages[0].databytecounts[tile]
    data = bytearray(path.read_bytes())
    data[offset + int(start * count):offset + int(end * count)] = bytes(int(end * count) - int(start * count))
    path.write_bytes(bytes(data))


@pytest.fixture
def jpeg_tiles(tmp_path):
    """A 256x256 RGB TIFF of four 128x128 JPEG tiles, smooth enough that a lost tail decodes
    to visibly wrong pixels, and its pixels as tifffile decodes them."""
    y, x = np.mgrid[0:256, 0:256]
    pixels = np.stack([(x + y) % 256, (2 * x) % 256, (3 * y) % 256], -1).astype(np.uint8)
    path = tmp_path / "scan.tif"
    tifffile.imwrite(path, pixels, tile=(128, 128), compression="jpeg", photometric="rgb")
    return path, tifffile.imread(path).transpose(2, 0, 1).astype(np.float32)


@pytest.mark.parametrize("start", [0.4, 0.7, 0.99])
def test_a_jpeg_tile_whose_tail_is_zeros_is_refused_naming_the_tile(jpeg_tiles, start):
    """libjpeg decodes a JPEG tile whose end was lost (zeros, as a partial copy into a
    preallocated file leaves) without a word, the rest of the tile grey and smeared
    (pixels 212 off): the run scored it. The tile lacks the end-of-image marker."""
    path, _ = jpeg_tiles
    zero_bytes(path, 1, start, 1.0)
    tifffile.imread(path)  # libjpeg's word on it: none
    source = open_source(path, 3, None)
    np.testing.assert_array_equal(source.read(128, 0, 256, 128), jpeg_tiles[1][:, 128:, :128])  # other tiles read
    with pytest.raises(GraphconvError, match=r"scan.tif: cannot decode its pixels in rows 0..127, columns 100..199 "
                                             r"\(TIFF tile 1 of page 0 \(rows 0..127, columns 128..255\), at "
                                             r"byte \d+\): its JPEG data has no end "
                                             r"marker: the file was cut short or damaged there"):
        source.read(0, 100, 128, 200)


@pytest.mark.parametrize("seed", [1, 2, 4])  # garbage libjpeg decodes without a word (other seeds' it refuses)
def test_a_jpeg_tile_with_bytes_overwritten_inside_is_refused_naming_the_tile(jpeg_tiles, seed):
    """Half a tile's coded bytes overwritten with garbage (end marker intact) decoded
    without a word into a stripe of garbage pixels: 1380 cells of a slide's map wrong,
    exit 0. Random bytes hold a marker that cannot stand inside a scan's coded data."""
    path, pixels = jpeg_tiles
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[2], tif.pages[0].databytecounts[2]
    data = bytearray(path.read_bytes())
    garbage = np.random.default_rng(seed).integers(0, 256, count // 4, dtype=np.uint8).tobytes()
    data[offset + count // 2:offset + count // 2 + len(garbage)] = garbage
    path.write_bytes(bytes(data))
    tifffile.imread(path)  # libjpeg's word on it: none
    source = open_source(path, 3, None)
    np.testing.assert_array_equal(source.read(0, 0, 128, 256), pixels[:, :128])  # the intact tiles read
    with pytest.raises(GraphconvError, match=r"scan.tif: cannot decode its pixels in rows 128..255, columns 0..127 "
                                             r"\(TIFF tile 2 of page 0 \(rows 128..255, columns 0..127\), at "
                                             r"byte \d+\): its JPEG data holds marker "
                                             r"0x[0-9A-F]{2} at byte \d+ of \d+, inside its coded pixels"):
        source.read(128, 0, 256, 128)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 16), side=st.sampled_from([8, 16, 24, 40, 64]), quality=st.integers(5, 100),
       subsampling=st.sampled_from([0, 1, 2]), restart=st.sampled_from([None, 1, 2, 5]), grey=st.booleans())
def test_no_intact_jpeg_is_taken_for_a_damaged_one(seed, side, quality, subsampling, restart, grey):
    """The marker check on every sequential JPEG Pillow (libjpeg) writes, restart markers
    included: a false alarm would refuse a whole intact slide."""
    import io

    from PIL import Image

    from graphconv.sources import _misplaced_jpeg_marker, _single_scan_start

    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (side, side) if grey else (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).save(out, "JPEG", quality=quality, subsampling=subsampling,
                                **({"restart_marker_blocks": restart} if restart else {}))
    assert _single_scan_start(out.getvalue()) is not None
    assert _misplaced_jpeg_marker(out.getvalue()) is None


def test_intact_jpeg_tiles_and_strips_read_as_tifffile_decodes_them(jpeg_tiles, tmp_path):
    path, pixels = jpeg_tiles
    np.testing.assert_array_equal(open_source(path, 3, None).read(0, 0, 256, 256), pixels)
    tifffile.imwrite(tmp_path / "strips.tif", pixels.transpose(1, 2, 0).astype(np.uint8), rowsperstrip=64,
                     compression="jpeg", photometric="rgb")
    np.testing.assert_array_equal(open_source(tmp_path / "strips.tif", 3, None).read(0, 0, 256, 256),
                                  tifffile.imread(tmp_path / "strips.tif").transpose(2, 0, 1))


def test_a_damaged_first_tile_is_named_when_the_image_is_opened(jpeg_tiles):
    """`_decodable_array` decodes one pixel of the first tile up front."""
    path, _ = jpeg_tiles
    zero_bytes(path, 0, 0.5, 1.0)
    with pytest.raises(GraphconvError, match=r"scan.tif: cannot decode its pixels \(TIFF tile 0 of page 0 "
                                             r"\(rows 0..127, columns 0..127\), at byte \d+\): its JPEG data has "
                                             r"no end marker"):
        open_source(path, 3, None)


def test_a_pipe_named_like_an_image_is_refused_not_waited_on(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.tif")
    with pytest.raises(GraphconvError, match="pipe.tif: cannot read image: not a regular file"):
        open_source(tmp_path / "pipe.tif", 1, None)


def write_bioformats2raw(path) -> list[np.ndarray]:
    """bioformats2raw's layout: the top group says `bioformats2raw.layout: 3`, and the
    image is the OME-Zarr group in its folder "0"."""
    import zarr

    path.mkdir()
    levels = write_ome_zarr(path / "0")
    zarr.open_group(str(path), mode="a", zarr_format=2).attrs["bioformats2raw.layout"] = 3
    return levels


def test_a_bioformats2raw_folder_reads_its_first_image(tmp_path):
    levels = write_bioformats2raw(tmp_path / "slide.zarr")
    source = open_source(tmp_path / "slide.zarr", 3, None, 1)
    assert source.levels == 3 and source.microns_per_pixel == 0.25
    np.testing.assert_array_equal(source.read(0, 0, 150, 200), levels[1])
    assert unread_images_note(source) is None


def test_a_bioformats2raw_folder_reads_its_largest_image_not_an_overview_stored_first(tmp_path):
    """bioformats2raw writes each image of a VSI or CZI as a numbered group; the overview
    may be "0". The slide, the largest, is read, the note says so and how to read another."""
    import zarr

    (tmp_path / "slide.zarr").mkdir()
    overview = tmp_path / "slide.zarr" / "0"
    zarr.open_group(str(overview), mode="w", zarr_format=2).create_array("0", data=np.full((1, 3, 1, 30, 40), 9,
                                                                                             np.uint8))
    zarr.open_group(str(overview), mode="a").attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}]}]
    levels = write_ome_zarr(tmp_path / "slide.zarr" / "1", microns=0.5)
    zarr.open_group(str(tmp_path / "slide.zarr"), mode="a", zarr_format=2).attrs["bioformats2raw.layout"] = 3
    source = open_source(tmp_path / "slide.zarr", 3, None)
    assert source.microns_per_pixel == 0.5
    np.testing.assert_array_equal(source.read(0, 0, *LEVEL_SIZES[0]), levels[0])
    assert unread_images_note(source) == (
        "the folder holds 2 images (bioformats2raw's layout); graphconv reads the largest, image 1, of 300x400 "
        "pixels, not the first, of 30x40 (an overview stored before the slide?). To map another, give its folder: "
        "slide.zarr/0")  # the path as given, relative to the working folder
    assert (open_source(overview, 3, None).read(0, 0, 30, 40) == 9).all()


@pytest.mark.parametrize("change, message", [
    (lambda m: m["datasets"].append({"path": "9"}), "cannot read as an OME-Zarr image: KeyError"),
    (lambda m: m.update(axes=m["axes"][2:]), "level 0 has 5 axes; its metadata names 3"),
    (lambda m: m.update(datasets=[]), "cannot read as an OME-Zarr image: IndexError"),
    (lambda m: m.update(axes=["t", "c", "z", "row", "x"]), "axes t, c, z, row, x and 3 levels: expected y and x"),
    (lambda m: m["datasets"][0].update(coordinateTransformations=[{"type": "scale", "scale": [1]}]),
     "cannot read as an OME-Zarr image: IndexError"),
])
def test_malformed_ome_zarr_metadata_is_one_error(tmp_path, change, message):
    import zarr

    write_ome_zarr(tmp_path / "bad.zarr")
    group = zarr.open_group(str(tmp_path / "bad.zarr"), mode="a")
    multiscales = group.attrs["multiscales"]
    change(multiscales[0])
    group.attrs["multiscales"] = multiscales
    with pytest.raises(GraphconvError, match=message):
        open_source(tmp_path / "bad.zarr", 3, None)


def test_an_ome_zarr_channel_axis_is_told_by_its_type_not_its_name(tmp_path):
    import zarr

    levels = write_ome_zarr(tmp_path / "named.zarr")
    group = zarr.open_group(str(tmp_path / "named.zarr"), mode="a")
    multiscales = group.attrs["multiscales"]
    multiscales[0]["axes"][1]["name"] = "ch"
    group.attrs["multiscales"] = multiscales
    np.testing.assert_array_equal(open_source(tmp_path / "named.zarr", 3, None).read(0, 0, 9, 9), levels[0][:, :9, :9])


def test_a_reader_running_out_of_memory_is_not_called_a_damaged_tile(tmp_path):
    from graphconv.sources import ArrayLikeSource

    class Exhausted:
        shape, dtype = (50, 60), np.dtype(np.uint8)

        def __getitem__(self, key):
            raise MemoryError()

    with pytest.raises(MemoryError):
        ArrayLikeSource("big.zarr", Exhausted(), 1, None).read(0, 0, 50, 60)


# ---- zarr arrays: pictures only where they look like one; axes in any named order; no-data ---------

def named_zarr(path, data, names=None, **attrs):
    import zarr

    stored = zarr.open_array(str(path), mode="w", shape=data.shape, chunks=(8,) * data.ndim, dtype=data.dtype,
                             dimension_names=list(names) if names else None)
    stored[:] = data
    stored.attrs.update(attrs)
    return stored


@pytest.mark.parametrize("order", ["bhw", "hwb", "named hwb"])
@pytest.mark.parametrize("channels", [1, 3])
def test_a_zarr_raster_of_four_16_bit_bands_is_not_taken_for_rgba(tmp_path, order, channels):
    """A 4-band uint16 zarr (PlanetScope's blue, green, red, near infrared) fed a grey or
    RGB network was read as RGBA: its first three bands mixed to grey or fed as colours,
    exit 0. As a TIFF of the same bands it is refused: so it is as a zarr array."""
    bands = np.random.default_rng(3).integers(0, 10000, (4, 20, 30), dtype=np.uint16)
    data = bands if order == "bhw" else bands.transpose(1, 2, 0)
    named_zarr(tmp_path / "scene.zarr", data, ("y", "x", "band") if order == "named hwb" else None)
    with pytest.raises(GraphconvError, match=f"scene.zarr: has 4 bands; the model takes {channels}: pick them "
                                             "with --bands"):
        open_source(tmp_path / "scene.zarr", channels, None)
    picked = (3, 2, 1)[:channels]
    source = open_source(tmp_path / "scene.zarr", channels, {"values": "stored"}, bands=picked)
    np.testing.assert_array_equal(source.read(2, 3, 17, 29), bands[np.asarray(picked) - 1, 2:17, 3:29])


def test_an_8_bit_rgba_zarr_is_still_a_picture_and_16_bit_rgb_needs_bands_for_grey(tmp_path):
    """An 8-bit RGBA zarr array drops its alpha for an RGB network and is mixed to grey
    for a grey one, exactly as Pillow converts it to "L" (rounded: a PNG of the same
    pixels gives the same map); the same three bands in 16 bits are a raster (a
    microscope's or a scene's), not colours to mix."""
    from PIL import Image

    rgba = np.random.default_rng(5).integers(0, 255, (20, 30, 4), dtype=np.uint8)
    named_zarr(tmp_path / "rgba.zarr", rgba)
    np.testing.assert_array_equal(open_source(tmp_path / "rgba.zarr", 3, None).read(0, 0, 20, 30),
                                  rgba[..., :3].transpose(2, 0, 1))
    np.testing.assert_array_equal(open_source(tmp_path / "rgba.zarr", 1, None).read(0, 0, 20, 30)[0],
                                  np.asarray(Image.fromarray(rgba[..., :3]).convert("L")))
    named_zarr(tmp_path / "rgb16.zarr", rgba[..., :3].astype(np.uint16) * 257)
    with pytest.raises(GraphconvError, match="has 3 bands; the model takes 1: pick them with --bands"):
        open_source(tmp_path / "rgb16.zarr", 1, None)


def test_a_16_bit_ome_zarr_s_three_channels_are_no_colours_to_mix(tmp_path):
    import zarr

    levels = write_ome_zarr(tmp_path / "fluo.zarr")
    group = zarr.open_group(str(tmp_path / "fluo.zarr"), mode="a")
    for k in range(3):
        del group[str(k)]
        group.create_array(str(k), data=levels[k][None, :, None].astype(np.uint16) * 100, chunks=(1, 3, 1, 64, 64))
    with pytest.raises(GraphconvError, match="has 3 bands; the model takes 1: pick them with --bands"):
        open_source(tmp_path / "fluo.zarr", 1, None)
    assert open_source(tmp_path / "fluo.zarr", 1, {"values": "stored"}, bands=(2,)).read(0, 0, 5, 5).shape == (1, 5, 5)


@pytest.mark.parametrize("names", [("x", "y", "band"), ("band", "x", "y"), ("x", "band", "y"), ("lon", "lat"),
                                   ("x", "y"), ("column", "row", "band")])
@pytest.mark.parametrize("bands", [None, (3, 1)])
def test_a_zarr_array_s_axes_are_read_in_the_order_its_dimension_names_say(tmp_path, names, bands):
    """An array stored (x, y, band) was read as (y, x, band): its map transposed, exit 0.
    Every box, not only the whole image, reads the pixels it names."""
    rng = np.random.default_rng(6)
    image = rng.integers(0, 10000, (3, 26, 41), dtype=np.uint16)  # (band, y, x), as it should read
    if len(names) == 2:
        image, bands = image[:1], None
    role = {"x": "x", "lon": "x", "column": "x", "y": "y", "lat": "y", "row": "y", "band": "band"}
    stored = image.transpose([["band", "y", "x"].index(role[name]) for name in names]) if len(names) == 3 \
        else image[0].transpose([["y", "x"].index(role[name]) for name in names])
    named_zarr(tmp_path / "scene.zarr", stored, names)
    channels = len(bands) if bands else image.shape[0]
    source = open_source(tmp_path / "scene.zarr", channels, {"values": "stored"}, bands=bands)
    assert (source.height, source.width) == (26, 41)
    want = image if bands is None else image[np.asarray(bands) - 1]
    for top, left, bottom, right in ((0, 0, 26, 41), (5, 17, 19, 40), (25, 0, 26, 3)):
        np.testing.assert_array_equal(source.read(top, left, bottom, right), want[:, top:bottom, left:right])


def test_dimension_names_that_place_y_but_not_x_are_refused(tmp_path):
    named_zarr(tmp_path / "odd.zarr", np.zeros((3, 20, 30), np.uint8), ("band", "y", "depth"))
    with pytest.raises(GraphconvError, match=r"odd.zarr: an image array of shape \(3, 20, 30\) with dimension names "
                                             r"band, y, depth: expected one y and one x axis"):
        open_source(tmp_path / "odd.zarr", 3, None)


def test_an_ome_zarr_stored_x_before_y_reads_its_own_pixels(tmp_path):
    """NGFF orders the space axes only by SHOULD: a level stored (t, c, z, x, y) reads as
    (c, y, x), every box its own pixels."""
    import zarr

    levels = write_ome_zarr(tmp_path / "xy.zarr")
    group = zarr.open_group(str(tmp_path / "xy.zarr"), mode="a")
    for k in range(3):
        del group[str(k)]
        group.create_array(str(k), data=levels[k][None, :, None].swapaxes(-1, -2), chunks=(1, 3, 1, 64, 64))
    multiscales = group.attrs["multiscales"]
    axes = multiscales[0]["axes"]
    axes[3], axes[4] = axes[4], axes[3]
    group.attrs["multiscales"] = multiscales
    source = open_source(tmp_path / "xy.zarr", 3, None, 1)
    assert (source.height, source.width) == LEVEL_SIZES[1]
    np.testing.assert_array_equal(source.read(10, 30, 70, 90), levels[1][:, 10:70, 30:90])
    np.testing.assert_array_equal(open_source(tmp_path / "xy.zarr", 1, None, bands=(3,)).read(5, 6, 40, 90),
                                  levels[0][2:, 5:40, 6:90])


@pytest.mark.parametrize("attribute, nodata", [
    (None, None),                        # zarr's fill_value 0 alone is no statement: 0 is data
    (-9999, -9999.0), ("-9999", -9999.0), ("NaN", "nan"),
    ("AAAAAAAA+H8=", "nan"),             # xarray's base64 of a little-endian double NaN
    ("AAAAAICHw8A=", -9999.0),
])
def test_a_zarr_array_s_no_data_is_its_fill_value_attribute(tmp_path, attribute, nodata):
    attrs = {} if attribute is None else {"_FillValue": attribute}
    named_zarr(tmp_path / "scene.zarr", np.zeros((2, 10, 12), np.float32), ("band", "y", "x"), **attrs)
    got = open_source(tmp_path / "scene.zarr", 2, {"values": "stored"}).nodata
    assert (got is None) if nodata is None else (np.isnan(got) if nodata == "nan" else got == nodata)


def test_a_float_zarr_s_nan_fill_value_is_its_no_data(tmp_path):
    """What xarray writes a float raster's _FillValue as on zarr 2; an integer array's
    fill_value is no statement of anything."""
    import zarr

    stored = zarr.open_array(str(tmp_path / "f.zarr"), mode="w", shape=(10, 12), dtype=np.float32, zarr_format=2,
                             fill_value=np.nan)
    stored[:5] = 0.5
    assert np.isnan(open_source(tmp_path / "f.zarr", 1, {"values": "stored"}).nodata)
    zarr.open_array(str(tmp_path / "u.zarr"), mode="w", shape=(10, 12), dtype=np.uint16, zarr_format=2,
                    fill_value=7)[:] = 1
    assert open_source(tmp_path / "u.zarr", 1, {"values": "stored"}).nodata is None


# ---- TIFFs of huge strips: each decoded once, not once per tile ------------------------------------

@pytest.fixture
def chunk_reads(monkeypatch):
    """How many times tifffile's zarr store decodes a chunk of pixels (not metadata)."""
    from tifffile.zarr import ZarrTiffStore

    counted = []
    original = ZarrTiffStore.get

    async def get(self, key, prototype, byte_range=None):
        if not key.endswith(("zarr.json", ".zarray", ".zattrs", ".zgroup")):
            counted.append(key)
        return await original(self, key, prototype, byte_range)

    monkeypatch.setattr(ZarrTiffStore, "get", get)
    return counted


def test_a_tiff_of_one_strip_is_decoded_once_for_all_its_tiles(tmp_path, chunk_reads):
    """A 12-band 3000x3000 TIFF written as one zlib strip was decoded whole (216 MB) for
    every tile read: 37 s where the tiled TIFF took 2.5 s. Its strip is kept."""
    bands = np.random.default_rng(9).integers(0, 10000, (60, 80, 5), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "strip.tif", bands, photometric="minisblack", planarconfig="contig", rowsperstrip=60,
                     compression="zlib")
    source = open_source(tmp_path / "strip.tif", 3, {"values": "stored"}, bands=(4, 3, 2))
    for top in range(0, 60, 20):
        for left in range(0, 80, 20):
            np.testing.assert_array_equal(source.read(top, left, top + 25, left + 25),
                                          bands[top:top + 25, left:left + 25, [3, 2, 1]].transpose(2, 0, 1))
    assert len(chunk_reads) == 1


def test_kept_strips_stay_within_their_budget(tmp_path, chunk_reads, monkeypatch):
    """Of a TIFF of 10-row strips, ROWS_KEPT rows' worth are kept, the least recently
    read dropped first: reading the image again, top to bottom, decodes every strip again."""
    import graphconv.sources as sources

    monkeypatch.setattr(sources, "ROWS_KEPT", 20)
    pixels = np.random.default_rng(10).integers(0, 255, (100, 40), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "strips.tif", pixels, rowsperstrip=10)
    source = open_source(tmp_path / "strips.tif", 1, None)
    for _ in range(2):
        for top in range(0, 100, 5):
            np.testing.assert_array_equal(source.read(top, 0, top + 5, 40)[0], pixels[top:top + 5])
    assert len(chunk_reads) == 2 * 10  # each strip once a pass (the first, for the pixel read on opening)
    assert source.array.store.held <= 20 * 40


def test_a_strip_too_large_to_decode_within_the_budget_is_refused(tmp_path, monkeypatch):
    import graphconv.memory as memory

    tifffile.imwrite(tmp_path / "strip.tif", np.zeros((300, 400, 3), np.uint16), photometric="minisblack",
                     planarconfig="contig", rowsperstrip=300, compression="zlib")
    monkeypatch.setattr(memory, "_limit", 1 << 20)
    with pytest.raises(GraphconvError, match=r"^strip.tif: decoding one strip of 300 x 400 x 3 values needs about "
                                             r"1\.4 MB, over the memory limit of 1\.0 MB"):
        open_source(tmp_path / "strip.tif", 3, {"values": "stored"})


def test_a_truncated_pyramid_s_missing_levels_are_blamed_on_the_file(slide, tmp_path):
    """A slide cut short lost its pyramid's levels: '--level 1: the image has 1 level'
    said nothing of why; tifffile's own warning now comes with it."""
    cut = tmp_path / "cut.tif"
    cut.write_bytes(slide.read_bytes()[:slide.stat().st_size // 2])
    with pytest.raises(GraphconvError, match=r"--level 1: the image has 1 level \(0: 300x400\) \(tifffile "
                                             r"warned: .*corrupted tag list.*: is the file complete\?\)"):
        open_source(cut, 3, None, level=1)


@pytest.mark.parametrize("kept, said", [
    (3000, r"35 of level 0's 35 tiles lie past its 3000-byte end \(cut short in copying or downloading\?\)$"),
    (20000, r"32 of level 0's 35 tiles lie past its 20000-byte end \(cut short in copying or downloading\?\); "
            r"--skip-damaged maps the rest of the image")])
def test_a_slide_cut_short_before_its_tiles_is_refused_not_read_as_black(slide, tmp_path, kept, said):
    """A slide cut short in copying kept its first page's tags but lost its tiles:
    tifffile reads such a level as zeros, and the map was the network on a black image,
    exit 0, tifffile's warnings printed above it. The error says how much is missing,
    and where some tiles are left, that --skip-damaged maps them."""
    cut = tmp_path / "cut.tif"
    cut.write_bytes(slide.read_bytes()[:kept])
    with pytest.raises(GraphconvError, match=rf"^cut.tif: is truncated or damaged: {said}"):
        open_source(cut, 3, None)
    with pytest.raises(GraphconvError, match=rf"^cut.tif: is truncated or damaged: {said}") if kept == 3000 else (
            contextlib.nullcontext()):
        open_source(cut, 3, None, skip_damaged=True)


def test_a_sparse_tiff_s_empty_tiles_are_not_taken_for_missing_ones(tmp_path):
    """GDAL's SPARSE_OK writes a tile that is all no-data as offset 0, length 0: no damage."""
    from types import SimpleNamespace

    from graphconv.sources import _refuse_pixels_past_the_end

    path = tmp_path / "sparse.tif"
    path.write_bytes(bytes(1000))
    _refuse_pixels_past_the_end(str(path), SimpleNamespace(dataoffsets=(0, 500), databytecounts=(0, 500)), 0, [])
    with pytest.raises(GraphconvError, match="1 of level 0's 2 tiles lie past its 1000-byte end"):
        _refuse_pixels_past_the_end(str(path), SimpleNamespace(dataoffsets=(0, 600), databytecounts=(0, 500)), 0, [])


def test_the_other_chunks_of_a_tile_that_failed_to_decode_are_not_logged(tmp_path, monkeypatch):
    """zarr decodes a tile's chunks as concurrent tasks and raises the first failure,
    which graphconv reports in one line; asyncio logged every other failed or unfinished
    task's traceback as the process ended, a hundred lines after it."""
    import logging

    from graphconv import sources

    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (256, 256, 3), np.uint8), photometric="rgb",
                     tile=(32, 32), compression="jpeg")
    garble_tiles(path, 32)
    with pytest.raises(GraphconvError, match="cannot decode its pixels"):
        open_source(path, 3, None).read(0, 0, 256, 256)

    def record(message: str, error: BaseException | None = None) -> logging.LogRecord:
        exc_info = (type(error), error, None) if error else None
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None, exc_info)

    marked = ValueError("Empty input file")
    setattr(marked, sources.CHUNK_ERROR_MARK, True)
    asyncio_log = logging.getLogger("asyncio")
    assert not asyncio_log.filter(record("Task exception was never retrieved", marked))
    assert not asyncio_log.filter(record("Task was destroyed but it is pending!\ntask: <Task pending>"))
    assert asyncio_log.filter(record("Task exception was never retrieved", ValueError("someone else's")))
    assert asyncio_log.filter(record("Executing <Task> took 0.2 seconds"))

    import sys
    from types import SimpleNamespace

    import zarr
    passed_on = []
    monkeypatch.setattr(sys, "unraisablehook", passed_on.append)
    monkeypatch.setattr(sources, "_KeptChunks", None)
    sources._kept_chunks(zarr.storage.MemoryStore())
    hook = sys.unraisablehook  # installed when zarr first reads a chunk, over the hook there was
    assert hook.__qualname__.startswith("_unraisable_hook_without_sibling_reads")

    async def run():  # named as zarr's concurrent_map's coroutines are
        pass
    run.__qualname__ = "concurrent_map.<locals>.run"
    pending, other = run(), SimpleNamespace(object=len)
    hook(SimpleNamespace(object=pending, exc_value=RuntimeError("Event loop is closed")))
    hook(other)
    assert passed_on == [other], "only the pending chunk reads of a failed tile are silenced"
    pending.close()


def test_a_file_that_is_no_tiff_says_so_without_python_internals(tmp_path):
    """Random bytes named .tif said "cannot read as a TIFF image: list index out of range"."""
    (tmp_path / "garbage.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    with pytest.raises(GraphconvError) as caught:
        open_source(tmp_path / "garbage.tif", 1, None)
    assert "garbage.tif: is not a readable TIFF image" in str(caught.value)
    assert "index" not in str(caught.value)


def test_a_gdal_no_data_with_a_trailing_space_is_read_quietly(tmp_path, capfd):
    """GDAL writes "0.0 " on a uint8 raster; tifffile logged a ValueError line about it,
    printed amid the run's output. graphconv reads it as 0, silently."""
    pixels = np.random.default_rng(7).integers(1, 255, (40, 40), dtype=np.uint8)
    pixels[:, :10] = 0
    tifffile.imwrite(tmp_path / "nd.tif", pixels, extratags=[(42113, 2, 5, "0.0 ", True)])
    source = open_source(tmp_path / "nd.tif", 1, None)
    _, missing = source.read_masked(0, 0, 40, 40)
    assert source.nodata == 0 and missing[0, :, :10].all() and not missing[0, :, 10:].any()
    captured = capfd.readouterr()
    assert "GDAL_NODATA" not in captured.err + captured.out


def test_what_an_image_s_bands_become_for_the_network_is_said_where_they_are_converted(tmp_path):
    """A grey model on an RGB slide is fed each pixel's luma, an RGB model on a grey page
    its grey three times, an RGB model on an RGBA picture no alpha: each said (with the
    way to one band, --bands, where it applies), nothing where the bands go in as stored."""
    from PIL import Image

    from graphconv.sources import channel_conversion

    rgb = np.zeros((40, 40, 3), np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "grey.tif", rgb[..., 0])
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.zeros((40, 40, 4), np.uint8)).save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")

    def said(name, channels, **kw):
        return channel_conversion(open_source(tmp_path / name, channels, None, **kw))

    luma = said("rgb.tif", 1)
    assert luma.startswith("RGB: converted to grey for the 1-channel model") and "0.299 R + 0.587 G + 0.114 B" in luma
    assert "--bands N (1 red, 2 green, 3 blue)" in luma
    assert said("rgb.tif", 1, bands=[2]) is None and said("rgb.tif", 3) is None
    assert said("rgb.tif", 1, downsample=2) == luma
    assert "save that band as a grey image" in said("rgb.png", 1)
    assert said("grey.tif", 3) == said("grey.png", 3) == "grey: the grey goes into all three channels of the RGB model"
    assert said("rgba.png", 3).startswith("RGBA: the alpha (4th band) is left out for the RGB model")
    for extra, alpha in ((0, False), (2, True)):  # ExtraSamples: unspecified (RGB + near infrared), alpha
        tifffile.imwrite(tmp_path / "four.tif", np.zeros((40, 40, 4), np.uint8), photometric="rgb",
                         extrasamples=[extra])
        assert said("four.tif", 3).startswith("RGBA: the alpha" if alpha else
                                              "RGB and a 4th band (not an alpha: its meaning unstated): the 4th is "
                                              "left out for the RGB model; --bands picks others")
        assert ("the 4th left out" in said("four.tif", 1)) is not alpha
    assert said("rgb.png", 4) == "RGB: for the 4-channel (RGBA) model, alpha is 255 (opaque) everywhere"
    assert said("grey.png", 1) is None and said("grey.tif", 1) is None  # the quick start's digits: no note


def test_messages_spell_micrometres_one_way():
    """The --mpp errors said "0.25 um" where the run's lines say "0.5 µm per pixel": every
    message of the package writes µm (OME's "um" is read as a unit, not written)."""
    import re
    from pathlib import Path

    import graphconv

    ascii_um = re.compile(r"(\d|\}) um\b|\bum/px|\bum (per|a) pixel")
    found = [f"{path.name}:{number}" for path in Path(graphconv.__file__).parent.glob("*.py")
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if ascii_um.search(line)]
    assert found == []


# ---- run --nodata: a raster's no-data value given on the command line ----------------------------------------

TINY_STORED = """
name: tiny
input: {shape: [2, 8, 8]}
preprocess: {values: stored, scale: 0.001}
layers:
  - {name: conv1, op: conv, out_channels: 3, kernel_size: 3}
  - {name: relu1, op: relu}
  - {name: pool1, op: maxpool, kernel_size: 2}
  - {name: fc, op: fc, out_features: 3}
"""


def swath_scene(path, nodata_tag: bool):
    """A 2-band 16-bit scene whose swath border (the left columns, a corner) is 0 in every band."""
    scene = np.random.default_rng(3).integers(200, 4000, (40, 48, 2)).astype(np.uint16)
    scene[:, :14] = 0
    scene[30:, 36:] = 0
    tifffile.imwrite(path, scene, photometric="minisblack", planarconfig="contig",
                     extratags=[(42113, 2, 2, "0", True)] if nodata_tag else [])
    return path


def _main(*args) -> int:
    from graphconv.cli import main
    return main([str(a) for a in args])


@pytest.fixture
def tiny_fcn(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(TINY_STORED)
    assert _main("compile", tmp_path / "tiny.yaml", "-o", tmp_path / "tiny-fcn") == 0
    capsys.readouterr()
    return tmp_path / "tiny-fcn"


def test_nodata_given_on_the_command_line_is_the_file_s_own(tmp_path):
    """A GeoTIFF without GDAL's no-data tag whose swath border is 0 was computed over the
    zeros, with no way to say they are no-data: --nodata (open_source's `nodata`) makes
    it read exactly as the same scene with the tag; a picture has no no-data to name."""
    tagged, plain = swath_scene(tmp_path / "tagged.tif", True), swath_scene(tmp_path / "plain.tif", False)
    stored = {"values": "stored", "scale": 0.001}
    want, want_missing = open_source(tagged, 2, stored).read_masked(0, 0, 40, 48)
    got, missing = open_source(plain, 2, stored, nodata=0).read_masked(0, 0, 40, 48)
    assert missing is not None and missing[0, :, :14].all() and missing.sum() == want_missing.sum()
    np.testing.assert_array_equal(got, want)
    assert open_source(plain, 2, stored).read_masked(0, 0, 40, 48)[1] is None
    assert open_source(plain, 2, stored, downsample=2, nodata=0).nodata_mask(0, 0, 20, 24)[:, :7].all()
    from PIL import Image
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "page.png")
    with pytest.raises(GraphconvError, match="--nodata marks the no-data pixels of a raster read tile by tile"):
        open_source(tmp_path / "page.png", 1, None, nodata=0)


def test_run_nodata_maps_a_scene_as_its_no_data_tag_would_and_max_nodata_alone_says_it_does_nothing(
        tmp_path, tiny_fcn, capsys):
    tagged, plain = swath_scene(tmp_path / "tagged.tif", True), swath_scene(tmp_path / "plain.tif", False)
    assert _main("run", tiny_fcn, "--image", tagged, "--max-nodata", "0.2", "--output", tmp_path / "tagged.npy") == 0
    assert "has nothing to act on" not in capsys.readouterr().err
    assert _main("run", tiny_fcn, "--image", plain, "--max-nodata", "0.2", "--nodata", "0",
                 "--output", tmp_path / "given.npy") == 0
    err = capsys.readouterr().err
    assert "are not computed" in err and "has nothing to act on" not in err
    want, got = np.load(tmp_path / "tagged.npy"), np.load(tmp_path / "given.npy")
    assert np.isnan(want).any()
    np.testing.assert_array_equal(got, want)
    assert _main("run", tiny_fcn, "--image", plain, "--max-nodata", "0.2", "--output", tmp_path / "zeros.npy") == 0
    err = capsys.readouterr().err
    assert err.count("--max-nodata 0.2 has nothing to act on: the image declares no no-data value") == 1, err
    assert "--nodata VALUE" in err and not np.isnan(np.load(tmp_path / "zeros.npy")).any()
    assert _main("run", tiny_fcn, "--image", plain, "--output", tmp_path / "quiet.npy") == 0
    assert "nothing to act on" not in capsys.readouterr().err  # no option given: nothing to say


def test_a_nodata_value_the_pixels_cannot_hold_is_said_to_put_the_file_s_own_aside(tmp_path, tiny_fcn, capsys):
    """--nodata -9999 on a uint16 scene whose file declares 0 (a habit from other tools):
    no pixel can hold it, so the file's 0 border was computed as data, without a word."""
    tagged = swath_scene(tmp_path / "tagged.tif", True)
    assert _main("run", tiny_fcn, "--image", tagged, "--nodata", "-9999", "--output", tmp_path / "m.npy") == 0
    err = capsys.readouterr().err
    assert err.count("note: --nodata -9999 has nothing to act on: it is none of the image's uint16 pixels' values, "
                     "so every pixel is data and every cell is computed; the file's own no-data value, 0, is put "
                     "aside by --nodata") == 1, err
    assert not np.isnan(np.load(tmp_path / "m.npy")).any()
    folder = tmp_path / "scenes"
    folder.mkdir()
    swath_scene(folder / "a.tif", True)
    assert _main("run", tiny_fcn, "--images", folder, "--nodata", "-9999", "--output-dir", tmp_path / "maps") == 0
    assert "note: --nodata -9999 has nothing to act on: none of the 1 image" in capsys.readouterr().err


def test_skip_background_on_bands_without_no_data_names_nodata(tmp_path, tiny_fcn, capsys):
    plain = swath_scene(tmp_path / "plain.tif", False)
    assert _main("run", tiny_fcn, "--image", plain, "--skip-background", "--output", tmp_path / "m.npy") == 2
    assert "give the raster a no-data value (--nodata VALUE, or GDAL's no-data tag" in capsys.readouterr().err
    assert _main("run", tiny_fcn, "--image", plain, "--skip-background", "--nodata", "0",
                 "--output", tmp_path / "m.npy") == 0


# ---- pixels of more than 8 bits scaled onto 0..255: said, with how to feed them as stored --------------------

TINY_SCALED = TINY_STORED.replace("{values: stored, scale: 0.001}", "{scale: 0.0001, mean: [0.08, 0.25], std: [0.03, 0.08]}")


def test_a_16_bit_raster_read_onto_0_to_255_says_so_and_names_values_stored(tmp_path, tiny_fcn, capsys):
    """A reflectance model imported without --values stored mapped a 16-bit scene's
    pixels divided by 257 (200..4000 as 0.8..15.6) with no word, or with advice to drop
    the scale; now one note names the factor and --values stored. Nothing for 8 bits or
    for a spec that takes the stored values."""
    from graphconv.sources import value_scaling

    plain = swath_scene(tmp_path / "plain.tif", False)
    tifffile.imwrite(tmp_path / "bytes.tif", (tifffile.imread(plain) // 16).astype(np.uint8),
                     photometric="minisblack", planarconfig="contig")
    assert value_scaling(open_source(plain, 2, None)) == "16-bit pixels were divided by 257 onto 0..255"
    assert value_scaling(open_source(plain, 2, None, downsample=2)) == value_scaling(open_source(plain, 2, None))
    assert value_scaling(open_source(plain, 2, {"values": "stored"})) is None
    assert value_scaling(open_source(tmp_path / "bytes.tif", 2, None)) is None
    (tmp_path / "scaled.yaml").write_text(TINY_SCALED)
    (tmp_path / "bare.yaml").write_text(TINY_SCALED.replace("{scale: 0.0001, mean: [0.08, 0.25], std: [0.03, 0.08]}",
                                                            "{scale: 0.0001}"))
    for name in ("scaled", "bare"):
        assert _main("compile", tmp_path / f"{name}.yaml", "-o", tmp_path / f"{name}-fcn") == 0
    capsys.readouterr()
    assert _main("run", tmp_path / "bare-fcn", "--image", plain, "--output", tmp_path / "a.npy") == 0
    err = capsys.readouterr().err
    assert err.count("note: the image's 16-bit pixels were divided by 257 onto 0..255, as the spec's preprocess "
                     "does not say `values: stored`") == 1 and "--values stored" in err
    assert _main("run", tmp_path / "scaled-fcn", "--image", plain, "--output", tmp_path / "b.npy") == 0
    err = capsys.readouterr().err
    assert err.count("note: the preprocess mean or std reaches 0.25, but its scale makes pixels 0..0.0255, and the "
                     "image's 16-bit pixels were divided by 257 onto 0..255") == 1
    assert "leave out the scale" not in err and "as the spec's preprocess does not say" not in err
    for model, image in ((tiny_fcn, plain), (tmp_path / "bare-fcn", tmp_path / "bytes.tif")):
        assert _main("run", model, "--image", image, "--output", tmp_path / "c.npy") == 0
        assert "divided by 257" not in capsys.readouterr().err


def test_8_bit_pixels_taken_as_stored_by_a_spec_scaled_for_16_bits_are_said_to_go_in_nearly_black(tmp_path, capsys):
    """An 8-bit copy of a 16-bit X-ray run through a model imported with --values stored
    --scale 1/65535 went in as 0..0.0039 and gave a nearly flat map without a word: one
    note now, for a picture, a raster and a batch (with its count); none where the
    spec's scale suits 8 bits. And a 16-bit picture through the photo route with scale
    1/255 (value / 257 / 255 = value / 65535, an X-ray model's input) was told to import
    --values stored, as if wrong: the note now says what it amounts to."""
    from PIL import Image

    grey = np.random.default_rng(5).integers(0, 256, (20, 24), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "x8.png")
    tifffile.imwrite(tmp_path / "x8.tif", grey)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "x16.png")
    deep = TINY_STORED.replace("[2, 8, 8]", "[1, 8, 8]").replace("scale: 0.001", "scale: 1.5259022e-05")
    (tmp_path / "deep.yaml").write_text(deep)
    (tmp_path / "bytes.yaml").write_text(deep.replace("1.5259022e-05", "0.00392157"))
    (tmp_path / "photo.yaml").write_text(deep.replace("values: stored, scale: 1.5259022e-05", "scale: 0.00392157"))
    for name in ("deep", "bytes", "photo"):
        assert _main("compile", tmp_path / f"{name}.yaml", "-o", tmp_path / name) == 0
    capsys.readouterr()
    said = ("pixels are 8-bit (0..255), but the spec's preprocess takes the values a file stores (`values: stored`) "
            "times 1.5259e-05, a scale for values up to about 65535: they go in as 0..0.0039, nearly black")
    for image in ("x8.png", "x8.tif"):
        assert _main("run", tmp_path / "deep", "--image", tmp_path / image, "--output",
                     tmp_path / f"{image}.npy") == 0
        assert capsys.readouterr().err.count("note: the image's " + said) == 1
        assert _main("run", tmp_path / "bytes", "--image", tmp_path / image, "--output",
                     tmp_path / f"{image}-bytes.npy") == 0
        assert "nearly black" not in capsys.readouterr().err
    assert _main("run", tmp_path / "deep", "--images", tmp_path / "x*.*", "--output-dir", tmp_path / "maps") == 0
    assert capsys.readouterr().err.count("note: 2 of 3 images' " + said) == 1
    assert _main("run", tmp_path / "deep", "--image", tmp_path / "x16.png", "--output", tmp_path / "d.npy") == 0
    assert "nearly black" not in capsys.readouterr().err
    assert _main("run", tmp_path / "photo", "--image", tmp_path / "x16.png", "--output", tmp_path / "p.npy") == 0
    assert "as the spec's preprocess does not say `values: stored`, and its scale 0.00392157 (1/255) then makes " \
           "them value / 65535, 0..1: right for a model trained on 16-bit images scaled to 0..1" in \
           capsys.readouterr().err
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), np.load(tmp_path / "d.npy"), rtol=1e-5, atol=1e-6)


def test_an_8_bit_picture_is_held_in_8_bits_and_read_as_load_image_reads_it(tmp_path):
    """Held as float32 while cut into tiles, an 8000x8000 RGB PNG took 768 MB beside
    them: 1 GB over --memory-limit 2000M, where the same pixels as a TIFF kept within it."""
    from PIL import Image
    from graphconv.images import load_image
    from graphconv.sources import PillowSource

    picture = np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "photo.png")
    for channels in (1, 3):
        source = PillowSource(str(tmp_path / "photo.png"), channels, None)
        assert source.pixels.dtype == np.uint8
        whole = load_image(str(tmp_path / "photo.png"), None, channels)
        np.testing.assert_array_equal(source.read(5, 7, 33, 41), whole[:, 5:33, 7:41])
        assert source.read(0, 0, 40, 50).dtype == np.float32


# ---- TIFFs whose stored samples are not the picture: palette, inverted grey, few bits, CMYK -------------

def shown_tiffs(folder) -> dict[str, object]:
    """TIFFs whose stored samples are not what a viewer shows, each as its writer makes
    it; Pillow's own conversion of each is the picture graphconv must feed."""
    from PIL import Image

    rng = np.random.default_rng(11)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 52, 3), dtype=np.uint8))
    grey = np.asarray(rgb.convert("L"))
    cmyk = rng.integers(0, 256, (40, 52, 4), dtype=np.uint8)
    indices = np.asarray(rgb.convert("P"))
    colormap = np.full((3, 256), 0x7F, np.uint16)  # the low bytes Pillow leaves out
    palette = np.asarray(rgb.convert("P").getpalette("RGB"), np.uint16).reshape(-1, 3).T
    colormap[:, :palette.shape[1]] |= palette << 8
    writers = {
        "palette.tif": lambda path: rgb.convert("P").save(path),
        "palette_tiled.tif": lambda path: tifffile.imwrite(path, indices, photometric="palette",
                                                           colormap=colormap, tile=(16, 16)),
        "miniswhite.tif": lambda path: tifffile.imwrite(path, 255 - grey, photometric="miniswhite", tile=(16, 16)),
        "bilevel.tif": lambda path: rgb.convert("1").save(path),
        "bilevel_miniswhite.tif": lambda path: tifffile.imwrite(path, grey > 128, photometric="miniswhite"),
        "grey_4_bits.tif": lambda path: tifffile.imwrite(path, grey >> 4, bitspersample=4, photometric="minisblack"),
        "cmyk.tif": lambda path: Image.fromarray(cmyk, "CMYK").save(path),
        "cmyk_tiled.tif": lambda path: tifffile.imwrite(path, cmyk, photometric="separated", tile=(16, 16)),
    }
    paths = {}
    for name, write in writers.items():
        write(folder / name)
        paths[name] = folder / name
    return paths


@pytest.mark.parametrize("name", ["palette.tif", "palette_tiled.tif", "miniswhite.tif", "bilevel.tif",
                                  "bilevel_miniswhite.tif", "grey_4_bits.tif", "cmyk.tif", "cmyk_tiled.tif"])
@pytest.mark.parametrize("channels, mode", [(3, "RGB"), (1, "L")])
def test_a_tiff_is_fed_as_the_picture_pillow_shows_in_any_window(tmp_path, name, channels, mode):
    """A palette TIFF went in as its indices taken for grey (up to 240 off), MINISWHITE
    grey inverted (up to 247 off), a 1-bit page was refused ("pixel type bool"), CMYK
    refused as 4 bands. Each now reads as Pillow converts it, box by box (the tiled ones
    across their tiles), for RGB and grey models alike."""
    from PIL import Image

    path = shown_tiffs(tmp_path)[name]
    with Image.open(path) as img:
        shown = np.atleast_3d(np.asarray(img.convert(mode))).transpose(2, 0, 1).astype(np.float32)
    source = open_source(path, channels, None)
    np.testing.assert_array_equal(source.read(0, 0, 40, 52), shown)
    np.testing.assert_array_equal(source.read(7, 13, 35, 41), shown[:, 7:35, 13:41])
    assert source.picture


def test_a_planar_cmyk_tiff_or_one_with_alpha_reads_as_its_contiguous_twin(tmp_path):
    """CMYK with an alpha sample was refused as 5 bands, advising --bands 1,2,3 (cyan,
    magenta and yellow fed as red, green and blue); its alpha is left out, as an RGBA
    picture's is."""
    cmyk = np.random.default_rng(12).integers(0, 256, (30, 20, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "contig.tif", cmyk, photometric="separated")
    tifffile.imwrite(tmp_path / "planar.tif", cmyk.transpose(2, 0, 1), photometric="separated",
                     planarconfig="separate")
    alpha = np.full((30, 20, 1), 255, np.uint8)
    tifffile.imwrite(tmp_path / "alpha.tif", np.concatenate([cmyk, alpha], axis=2), photometric="separated",
                     extrasamples=["unassalpha"])
    want = open_source(tmp_path / "contig.tif", 3, None).read(3, 2, 30, 17)
    np.testing.assert_array_equal(open_source(tmp_path / "planar.tif", 3, None).read(3, 2, 30, 17), want)
    np.testing.assert_array_equal(open_source(tmp_path / "alpha.tif", 3, None).read(3, 2, 30, 17), want)


@pytest.mark.parametrize("photometric, data, message", [
    ("miniswhite", np.zeros((8, 8), np.float32), "a MINISWHITE (inverted grey) TIFF of float32 samples"),
    ("separated", np.zeros((8, 8, 4), np.int16), "a CMYK TIFF of int16 samples"),
    ("palette", np.zeros((2, 8, 8), np.uint8), "a PALETTE TIFF of shape (2, 8, 8)"),
])
def test_a_tiff_whose_picture_cannot_be_made_is_refused_in_one_line(tmp_path, photometric, data, message):
    extra = {"colormap": np.zeros((3, 256), np.uint16)} if photometric == "palette" else {}
    tifffile.imwrite(tmp_path / "odd.tif", data, photometric=photometric, **extra)
    with pytest.raises(GraphconvError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        open_source(tmp_path / "odd.tif", 3, None)
    assert "odd.tif" in str(caught.value) and "\n" not in str(caught.value)


def test_an_inverted_grey_s_no_data_value_is_inverted_with_it(tmp_path):
    """GDAL's no-data tag holds a stored value: 255 stored in MINISWHITE is shown as 0."""
    stored = np.full((20, 20), 100, np.uint8)
    stored[:, :5] = 255
    tifffile.imwrite(tmp_path / "w.tif", stored, photometric="miniswhite", extratags=[(42113, 2, 4, "255", True)])
    source = open_source(tmp_path / "w.tif", 1, None)
    values, missing = source.read_masked(0, 0, 20, 20)
    assert source.nodata == 0 and missing[0, :, :5].all() and not missing[0, :, 5:].any()
    assert (values[0, :, 5:] == 155).all()


# ---- a file is read by what it holds, not by its name ---------------------------------------------------

@pytest.mark.parametrize("name, fmt", [("jpeg_named.tif", "JPEG"), ("png_named.tiff", "PNG"),
                                       ("tiff_named.jpg", "TIFF"), ("tiff_named.png", "TIFF")])
def test_an_image_is_read_by_its_content_whatever_its_suffix(tmp_path, name, fmt):
    """A JPEG or PNG saved as .tif was refused ("not a TIFF file: header=b'\\xff\\xd8...'")
    while a TIFF named .jpg was read: each is read by what its first bytes say."""
    from PIL import Image

    from graphconv.sources import is_tiff

    picture = np.random.default_rng(13).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / name, format=fmt)
    assert is_tiff(tmp_path / name) == (fmt == "TIFF")
    with Image.open(tmp_path / name) as img:
        shown = np.asarray(img.convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(open_source(tmp_path / name, 3, None).read(0, 0, 24, 32), shown)


def test_a_tiff_that_cannot_be_read_is_still_told_by_its_suffix(tmp_path):
    from graphconv.sources import is_tiff

    assert is_tiff(tmp_path / "missing.svs") and not is_tiff(tmp_path / "missing.png")
    (tmp_path / "slides.tif").mkdir()
    assert is_tiff(tmp_path / "slides.tif")


TINY_RGB = """
name: tiny_rgb
input: {shape: [3, 8, 8]}
layers:
  - {name: conv1, op: conv, out_channels: 3, kernel_size: 3}
  - {name: relu1, op: relu}
  - {name: pool1, op: maxpool, kernel_size: 2}
  - {name: fc, op: fc, out_features: 3}
"""


def test_run_maps_each_tiff_and_misnamed_image_as_the_picture_pillow_shows(tmp_path, capsys):
    """The batch (--images), the single image (--image) and its tiled read all feed the
    converted picture: each map is the model's map of Pillow's RGB of the file."""
    import shutil

    import graphconv
    from PIL import Image

    (tmp_path / "tiny.yaml").write_text(TINY_RGB)
    assert _main("compile", tmp_path / "tiny.yaml", "-o", tmp_path / "tiny-fcn") == 0
    folder = tmp_path / "images"
    folder.mkdir()
    paths = shown_tiffs(folder)
    picture = Image.fromarray(np.random.default_rng(14).integers(0, 255, (40, 52, 3), dtype=np.uint8))
    picture.save(folder / "jpeg_named.tif", format="JPEG")
    paths["jpeg_named.tif"] = folder / "jpeg_named.tif"
    assert _main("run", tmp_path / "tiny-fcn", "--images", folder, "--output-dir", tmp_path / "maps", "--quiet") == 0
    model = graphconv.load(tmp_path / "tiny-fcn")
    for name, path in paths.items():
        with Image.open(path) as img:
            want = model.run_image(img.convert("RGB"))
        np.testing.assert_allclose(np.load(tmp_path / "maps" / f"{path.stem}.npy"), want, atol=1e-5, err_msg=name)
    single = tmp_path / "one.tif"
    shutil.copy(paths["palette_tiled.tif"], single)
    assert _main("run", tmp_path / "tiny-fcn", "--image", single, "--output", tmp_path / "one.npy") == 0
    with Image.open(single) as img:
        np.testing.assert_allclose(np.load(tmp_path / "one.npy"), model.run_image(img.convert("RGB")), atol=1e-5)


def test_a_palette_shorter_than_its_indices_reach_reads_the_missing_entries_as_black():
    """A damaged colour map: an index past its end stopped the read with an IndexError."""
    from graphconv.sources import _palette_rgb

    class Page:
        tags = {320: type("Tag", (), {"value": tuple([0x1000] * 4 + [0x2000] * 4 + [0xff00] * 4)})()}
    table = _palette_rgb(Page(), "short.tif", 8)
    assert table.shape == (256, 3) and table[:4].tolist() == [[0x10, 0x20, 0xff]] * 4
    assert not table[4:].any()


# ---- run --pad-image's border (sources.Bordered) ------------------------------------------------

NUMPY_PAD = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}  # numpy's names for PAD_MODES


class _Held:
    """An image held in memory, read a box at a time, with no-data where `missing` says."""

    def __init__(self, pixels: np.ndarray, missing: np.ndarray | None = None):
        self.pixels, self.missing, self.path = pixels, missing, "held.tif"
        self.height, self.width = pixels.shape[1:]
        self.missing_value = None if missing is None else 0.0

    def read_masked(self, top, left, bottom, right):
        mask = None if self.missing is None else np.broadcast_to(self.missing[top:bottom, left:right],
                                                                  (self.pixels.shape[0], bottom - top, right - left))
        return self.pixels[:, top:bottom, left:right], mask


@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 9), width=st.integers(1, 9), margins=st.tuples(*[st.integers(0, 20)] * 4),
       mode=st.sampled_from(sorted(NUMPY_PAD)), box=st.tuples(*[st.floats(0, 1)] * 4))
def test_a_padded_image_reads_as_numpy_pads_it_from_any_box(height, width, margins, mode, box):
    """Every box of the padded image holds what np.pad gives there (reflection repeating
    past a border wider than the image, as numpy's does), so tiles of it are exact;
    a border pixel is no-data where the pixel it repeats is, never in "constant"."""
    from graphconv.sources import Bordered, nodata_mask

    rng = np.random.default_rng(height * 100 + width)
    pixels = rng.random((2, height, width), dtype=np.float32)
    missing = rng.random((height, width)) < 0.3
    padded = Bordered(_Held(pixels, missing), mode, margins)
    top, left, bottom, right = margins
    want = np.pad(pixels, ((0, 0), (top, bottom), (left, right)), mode=NUMPY_PAD[mode])
    want_missing = np.pad(missing, ((top, bottom), (left, right)), mode=NUMPY_PAD[mode])  # constant: False
    assert (padded.height, padded.width) == want.shape[1:]
    y0, y1 = sorted(int(f * padded.height) for f in box[:2])
    x0, x1 = sorted(int(f * padded.width) for f in box[2:])
    y0, x0 = min(y0, padded.height - 1), min(x0, padded.width - 1)
    y1, x1 = max(y1, y0 + 1), max(x1, x0 + 1)
    values, mask = padded.read_masked(y0, x0, y1, x1)
    np.testing.assert_array_equal(values, want[:, y0:y1, x0:x1])
    np.testing.assert_array_equal(mask[0], want_missing[y0:y1, x0:x1])
    np.testing.assert_array_equal(nodata_mask(padded, y0, x0, y1, x1), want_missing[y0:y1, x0:x1])


@pytest.mark.parametrize("mode", sorted(NUMPY_PAD))
def test_a_batch_held_whole_is_padded_as_a_source_is(mode):
    from graphconv.receptive import Field
    from graphconv.sources import Bordered, pad_batch, padded_image

    x = np.random.default_rng(0).random((2, 3, 11, 6), dtype=np.float32)
    cells = Field((7, 7), (3, 3), (0, 0))
    padded, margin = pad_batch(x, mode, cells)
    source = padded_image(_Held(x[1]), mode, cells)
    assert isinstance(source, Bordered) and margin == source.margin
    np.testing.assert_array_equal(padded[1], source.read_masked(0, 0, source.height, source.width)[0])
    assert padded_image(source, None, cells) is source


@settings(max_examples=100, deadline=None)
@given(crop=st.integers(1, 40), stride=st.integers(1, 40), length=st.integers(1, 200))
def test_the_border_gives_a_cell_centred_on_every_block(crop, stride, length):
    """ceil(H / stride) cells, cell i's crop centred on block i to within half a stride,
    the border before the image whole strides (the unpadded map's cells among the
    padded's); no border is wider than the crop."""
    from graphconv.receptive import Field
    from graphconv.sources import border_margins

    top, left, bottom, right = border_margins(Field((crop, 5), (stride, 5), (0, 0)), (length, 5))
    cells = (length + top + bottom - crop) // stride + 1
    assert cells == -(-length // stride) and max(top, bottom) <= crop and top % stride == 0
    if crop >= stride:
        centre = -top + crop / 2  # cell 0's, on the image
        assert abs(centre - stride / 2) <= stride / 2


def gdal_scaled_tiff(path, scales, offsets):
    """A 3-band uint16 TIFF whose GDAL metadata states each band's scale and offset."""
    items = "".join(f'<Item name="{name}" sample="{band}" role="{name.lower()}">{value!r}</Item>'
                    for band, (s, o) in enumerate(zip(scales, offsets))
                    for name, value in (("OFFSET", o), ("SCALE", s)))
    tifffile.imwrite(path, np.zeros((40, 40, 3), np.uint16), photometric="minisblack", planarconfig="contig",
                     extratags=[(42112, "s", 0, f"<GDALMetadata>{items}</GDALMetadata>", True)])
    return path


@pytest.mark.parametrize("scales, offsets, preprocess, said", [
    ((1e-4,) * 3, (-0.1,) * 3, None, "(every band: stored x 0.0001 - 0.1), which graphconv does not apply, as GDAL "
                                     "and rasterio do not: the network gets the values as stored. For a model trained "
                                     "on the scaled values, give them in the spec's preprocess: values: stored, scale: "
                                     "the file's, and each mean less the offset (so + 0.1 for band 1)"),
    ((1e-4, 2e-4, 1e-4), (0, 0, 0), None, "(band 1: stored x 0.0001; band 2: stored x 0.0002; band 3: stored x "
                                          "0.0001), which"),
    ((1e-4,) * 3, (-0.1,) * 3, {"values": "stored", "scale": 1e-4}, "(every band: stored x 0.0001 - 0.1)"),
    ((1e-4,) * 3, (0,) * 3, {"values": "stored", "scale": 1e-4}, None),  # the spec takes them so already
    ((1,) * 3, (0,) * 3, None, None),
])
def test_a_gdal_scale_and_offset_is_said_not_applied(tmp_path, scales, offsets, preprocess, said):
    """A reflectance product stored as integers with GDAL's scale/offset went in as stored
    without a word (scores 0.997 off for a model trained on the scaled values)."""
    from graphconv.sources import scale_offset_note

    source = open_source(gdal_scaled_tiff(tmp_path / "scene.tif", scales, offsets), 3, preprocess)
    note = scale_offset_note(source)
    assert (note is None) if said is None else said in note
    if said:
        np.testing.assert_array_equal(source.read(0, 0, 40, 40), 0)  # read as stored: nothing applied


def test_a_tiff_without_gdal_metadata_or_with_other_items_says_nothing_of_scaling(tmp_path):
    from graphconv.sources import scale_offset_note

    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((40, 40, 3), np.uint8), photometric="rgb")
    tifffile.imwrite(tmp_path / "other.tif", np.zeros((40, 40, 3), np.uint8), photometric="rgb", extratags=[
        (42112, "s", 0, '<GDALMetadata><Item name="DESCRIPTION" sample="0" role="description">red</Item>'
                        '<Item name="SCALE" sample="1" role="scale">not a number</Item></GDALMetadata>', True)])
    assert scale_offset_note(open_source(tmp_path / "plain.tif", 3, None)) is None
    assert scale_offset_note(open_source(tmp_path / "other.tif", 3, None)) is None


IMAGENET = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def test_a_box_is_read_with_one_float_copy_of_it_at_a_time(tmp_path):
    """The memory budget counts a tile's box as read once decoded and once as float32;
    converted, scaled and preprocessed a copy at each step, a 2128x2128 RGB box's read
    peaked at 184 MB where 68 MB were counted. The numbers are those of the copies."""
    import tracemalloc

    zarr = pytest.importorskip("zarr")
    pixels = (np.random.default_rng(2).random((600, 800, 3)) * 255).astype(np.uint8)
    stored = zarr.open_array(str(tmp_path / "rgb.zarr"), mode="w", shape=pixels.shape, chunks=(600, 800, 3),
                             dtype="u1")
    stored[:] = pixels
    source = open_source(tmp_path / "rgb.zarr", 3, IMAGENET)
    source.read(0, 0, 8, 8)  # zarr's codecs set up before tracing
    tracemalloc.start()
    try:
        box = source.read(0, 0, 600, 800)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= box.nbytes + 3 * pixels.nbytes + (256 << 10), (peak, box.nbytes, pixels.nbytes)  # zarr's chunk
    # as stored, decoded and cut to the box: 3 bytes a pixel at most; two float copies at once are 8 more
    expected = (pixels.transpose(2, 0, 1) * (1 / 255) - np.reshape(IMAGENET["mean"], (3, 1, 1))) / np.reshape(
        IMAGENET["std"], (3, 1, 1))
    np.testing.assert_allclose(box, expected, rtol=1e-5, atol=1e-5)


def test_what_a_source_keeps_between_reads_comes_out_of_the_tiles_budget(tmp_path):
    """A TIFF's reader keeps decoded chunks (up to a quarter of the budget), a picture is
    held decoded whole: outside any tile, so tiles are sized to the budget less them
    (`budget_beside`); beside them, an 8000x8000 JPEG slide's tiles held 340 MB under
    --memory-limit 300M."""
    from PIL import Image

    from graphconv.memory import memory_limit_set
    from graphconv.tiling import budget_beside

    write_pyramid(tmp_path / "slide.tif")
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(tmp_path / "page.png")
    with memory_limit_set("100M"):
        slide, page = open_source(tmp_path / "slide.tif", 3, None), open_source(tmp_path / "page.png", 3, None)
    kept = slide.array.store.budget
    assert kept > 0 and slide.held_bytes == kept and page.held_bytes == 300 * 400 * 3
    assert budget_beside(slide, 100 << 20) == (100 << 20) - kept
    assert budget_beside(page, 100 << 20) == (100 << 20) - 360_000 and budget_beside(page, 1000) == 0


def test_an_ome_tiff_storing_each_level_as_an_image_of_its_own_reads_them_as_levels(tmp_path):
    """Levels written as OME Images of their own (tifffile's series) were images the run
    did not read: `--level 1` was refused ("1 level") and --mpp read level 0 only. Images
    after the slide that halve it are its levels; a label of another shape ends them."""
    full = (np.random.default_rng(4).random((96, 128, 3)) * 255).astype(np.uint8)
    levels = [full, full[::2, ::2], full[::4, ::4]]
    path = tmp_path / "slide.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        for index, level in enumerate(levels + [full[:20, :50]]):  # the last: a label, not half the one before
            tif.write(level, tile=(16, 16), photometric="rgb", metadata={
                "axes": "YXS", "PhysicalSizeX": 0.25 * 2 ** index, "PhysicalSizeY": 0.25 * 2 ** index})
    source = open_source(path, 3, {"values": "stored"}, level=2)
    assert source.level_hw == [(96, 128), (48, 64), (24, 32)]
    np.testing.assert_array_equal(source.read(0, 0, 24, 32), levels[2].transpose(2, 0, 1))
    by_mpp = open_source(path, 3, {"values": "stored"}, mpp=0.5)
    assert (by_mpp.level, by_mpp.microns_per_pixel) == (1, 0.25)
    np.testing.assert_array_equal(by_mpp.read(0, 0, 48, 64), levels[1].transpose(2, 0, 1))
    with pytest.raises(GraphconvError, match=r"--level 3: the image has 3 levels \(0: 96x128, 1: 48x64, 2: 24x32\)"):
        open_source(path, 3, None, level=3)
