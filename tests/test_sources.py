"""Lazily read images (graphconv.sources): whole-slide pyramids level by level, JPEG
tiles, and the clear errors for what cannot be read."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("zarr")
pytest.importorskip("imagecodecs")  # writes (and decodes) the JPEG tiles slides hold

from graphconv.errors import GraphconvError  # noqa: E402
from graphconv.sources import open_source  # noqa: E402

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
    with pytest.raises(GraphconvError, match=r"--level 3: the image has 3 level\(s\) "
                                             r"\(0: 300x400, 1: 150x200, 2: 75x100\)"):
        open_source(slide, 3, None, 3)


def test_level_of_an_image_without_levels_is_refused(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "page.png")
    with pytest.raises(GraphconvError, match="page.png: --level 1: only a TIFF pyramid"):
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


def test_a_thumbnail_of_an_image_without_levels_takes_the_nearest_pixels(tmp_path, monkeypatch):
    import graphconv.sources as sources

    pixels = (np.random.default_rng(2).random((70, 45)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "flat.tif", pixels, tile=(16, 16))
    monkeypatch.setattr(sources, "THUMBNAIL_BOX", 32)  # boxes cut across the sampled rows and columns
    picture, scale = sources.thumbnail(open_source(tmp_path / "flat.tif", 1, None), longest=20)
    assert picture.shape == (1, 18, 12) and scale == (70 / 18, 45 / 12)
    rows = np.minimum(((np.arange(18) + 0.5) * 70 / 18).astype(int), 69)
    cols = np.minimum(((np.arange(12) + 0.5) * 45 / 12).astype(int), 44)
    np.testing.assert_array_equal(picture[0], pixels[rows[:, None], cols[None, :]])
