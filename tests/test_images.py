"""Loading images: channel counts, 16-bit and float pixels, resizing, the memory budget
(decompression bombs), and one clean error for every kind of bad file."""
import os
import re
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from graphconv import images  # noqa: E402
from graphconv.errors import GraphconvError, shown_path  # noqa: E402
from graphconv.images import decode_bytes, load_image, preprocess, save_heatmap  # noqa: E402
from graphconv.memory import set_memory_limit  # noqa: E402
from graphconv.receptive import Field  # noqa: E402

CHANNEL_COUNTS = [1, 3, 4]


@pytest.fixture
def limit():
    """set_memory_limit for one test; the default comes back afterwards."""
    yield set_memory_limit
    set_memory_limit(None)


@pytest.fixture
def pillow_state():
    """Pillow's global limit and the warnings filters, to check load_image leaves them as found."""
    return Image.MAX_IMAGE_PIXELS, list(warnings.filters)


def assert_pillow_state_kept(state):
    assert (Image.MAX_IMAGE_PIXELS, list(warnings.filters)) == state


# ---- writing PNGs by hand: 16-bit colour (Pillow cannot write it) and bombs --------------------

def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def sixteen_bit_png(pixels: np.ndarray, colour_type: int) -> bytes:
    """(H, W, samples) uint16 as a PNG: colour type 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA."""
    height, width = pixels.shape[:2]
    rows = pixels.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    return png_bytes(width, height, 16, colour_type, zlib.compress(raw))


def zero_png(width: int, height: int, bit_depth: int = 1, colour_type: int = 0) -> bytes:
    """A real, valid all-black PNG of any size, compressed row by row (a 20000x20000
    1-bit one is about 50 KB): what a decompression bomb looks like."""
    row = b"\0" * (1 + (width * bit_depth + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return png_bytes(width, height, bit_depth, colour_type, idat)


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def save(tmp_path, name: str, img: Image.Image, **kwargs):
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


def colour_pixels(rng, height=5, width=7) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


# ---- 8-bit images and channel counts ------------------------------------------------------

def test_an_rgb_image_loads_as_float32_chw(tmp_path, rng):
    pixels = colour_pixels(rng)
    path = save(tmp_path, "a.png", Image.fromarray(pixels))
    got = load_image(str(path))
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == (3, 5, 7)
    np.testing.assert_array_equal(got, pixels.transpose(2, 0, 1))


@pytest.mark.parametrize("source_mode", ["RGB", "RGBA", "L", "LA", "P", "1"])
@pytest.mark.parametrize("channels", CHANNEL_COUNTS)
def test_every_8_bit_mode_gives_the_channels_asked_for(source_mode, channels, tmp_path, rng):
    img = Image.fromarray(colour_pixels(rng)).convert(source_mode)
    path = save(tmp_path, "a.png", img)
    got = load_image(str(path), channels=channels)
    want = np.asarray(Image.open(path).convert(images.CHANNEL_MODES[channels]), np.float32)
    assert got.shape == (channels, 5, 7)
    np.testing.assert_array_equal(got, np.atleast_3d(want).transpose(2, 0, 1))


def test_greyscale_for_one_channel_models_is_luma(tmp_path):
    path = save(tmp_path, "a.png", Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)))
    got = load_image(str(path), channels=1)
    np.testing.assert_array_equal(got, [[[76, 29]]])  # ITU-R 601: 0.299 R, 0.114 B


def test_rgba_keeps_the_alpha_and_is_opaque_without_one(tmp_path, rng):
    rgba = rng.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    with_alpha = load_image(str(save(tmp_path, "a.png", Image.fromarray(rgba))), channels=4)
    np.testing.assert_array_equal(with_alpha[3], rgba[..., 3])
    without = load_image(str(save(tmp_path, "b.png", Image.fromarray(rgba[..., :3]))), channels=4)
    assert (without[3] == 255).all()


@pytest.mark.parametrize("channels", [0, -1, 3.0, True, "3", None])
def test_channel_counts_images_cannot_provide(channels, tmp_path, rng):
    path = save(tmp_path, "a.png", Image.fromarray(colour_pixels(rng)))
    with pytest.raises(GraphconvError, match=r"images provide 1 \(greyscale\), 3 \(RGB\) or 4 \(RGBA\)") as err:
        load_image(str(path), channels=channels)
    assert str(err.value).startswith("a.png: ")


@pytest.mark.parametrize("channels", [2, 5, 12])
def test_a_multispectral_network_given_a_picture_is_told_what_is_wrong_with_it(channels, tmp_path, rng):
    """A 12-band model given random bytes named .tif, or a PNG, was told it "cannot take
    an image", as if no raster could feed it, where the digits model heard that the file
    was unreadable; and from Python the error named "<image>", not the file."""
    picture = save(tmp_path, "a.png", Image.fromarray(colour_pixels(rng)))
    with pytest.raises(GraphconvError, match=rf"^a.png: a network of {channels} input channels takes a raster of "
                                             rf"{channels} bands \(a TIFF or a zarr array\), not a picture "
                                             r"\(grey, RGB or RGBA\): it holds 3 bands$"):
        images.as_picture(str(picture), channels)
    (tmp_path / "noise.tif").write_bytes(rng.integers(0, 256, 100, dtype=np.uint8).tobytes())
    with pytest.raises(GraphconvError, match="^noise.tif: not an image file Pillow can read"):
        load_image(str(tmp_path / "noise.tif"), channels=channels)
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "scene.tif", rng.integers(0, 4000, (channels, 20, 20), dtype=np.uint16),
                     photometric="minisblack", planarconfig="separate")
    with pytest.raises(GraphconvError, match=r"^scene.tif: a raster, which graphconv run --image reads band by band, "
                                             rf"as from Python graphconv.sources.open_source\(path, {channels}, "
                                             r"model.preprocess\) does for run_tiled"):
        images.as_picture(str(tmp_path / "scene.tif"), channels)
    with pytest.raises(GraphconvError, match=r"^<image>: a network of .* from Python, graphconv.sources.open_source"):
        images.as_picture(colour_pixels(rng), channels)


# ---- 16-bit and float images ----------------------------------------------------------------

SIXTEEN_BIT_VALUES = np.array([[0, 257, 30000, 40000], [12345, 60000, 65534, 65535]], np.uint16)


def sixteen_bit_files(tmp_path) -> dict:
    """The same 16-bit grey pixels in the files Pillow opens as I;16, I;16B and I."""
    values = SIXTEEN_BIT_VALUES
    big_endian = Image.frombytes("I;16B", values.shape[::-1], values.astype(">u2").tobytes())
    height, width = values.shape
    return {
        "I;16": save(tmp_path, "grey16.png", Image.fromarray(values)),
        "I;16B": save(tmp_path, "grey16b.tif", big_endian),
        "I (16-bit PGM)": write(tmp_path, "grey16.pgm",
                                b"P5 %d %d 65535\n" % (width, height) + values.astype(">u2").tobytes()),
        "I (32-bit TIFF)": save(tmp_path, "grey32.tif", Image.fromarray(values.astype(np.int32))),
    }


@pytest.mark.parametrize("kind", ["I;16", "I;16B", "I (16-bit PGM)", "I (32-bit TIFF)"])
@pytest.mark.parametrize("channels", CHANNEL_COUNTS)
def test_16_bit_grey_is_scaled_by_257_not_clipped(kind, channels, tmp_path):
    path = sixteen_bit_files(tmp_path)[kind]
    assert Image.open(path).mode == kind.split(" ")[0]
    got = load_image(str(path), channels=channels)
    want = SIXTEEN_BIT_VALUES.astype(np.float32) / np.float32(257)
    assert got.shape == (channels, 2, 4) and got.dtype == np.float32
    for c in range(min(channels, 3)):
        np.testing.assert_allclose(got[c], want, rtol=1e-6)
    if channels == 4:
        assert (got[3] == 255).all()
    assert got[0].max() == 255 and 116 < got[0, 0, 2] < 117  # 30000 is not clipped to 255


@pytest.mark.parametrize("kind", ["I;16", "I (16-bit PGM)", "I (32-bit TIFF)"])
def test_16_bit_grey_keeps_its_stored_values_when_the_spec_says_so(kind, tmp_path):
    """From its file and, as `Model.run_image` takes it, opened in Pillow (which divided
    by 257 whatever the spec said)."""
    path = sixteen_bit_files(tmp_path)[kind]
    got = load_image(str(path), channels=1, stored_values=True)
    np.testing.assert_array_equal(got[0], SIXTEEN_BIT_VALUES.astype(np.float32))
    with Image.open(path) as opened:
        np.testing.assert_array_equal(images.as_picture(opened, channels=1, stored_values=True), got)
        np.testing.assert_array_equal(images.as_picture(opened, channels=1), load_image(str(path), channels=1))


@pytest.mark.parametrize("colour_type, samples", [(2, 3), (6, 4)])
def test_16_bit_colour_without_imagecodecs_arrives_within_1_of_value_over_257(colour_type, samples, tmp_path, rng,
                                                                             monkeypatch):
    """Pillow cuts a 16-bit colour PNG to its high byte; without imagecodecs that is what
    arrives, said so, and a spec wanting the stored values is refused."""
    monkeypatch.setattr(images, "_png_codec", lambda: None)
    values = rng.integers(0, 65536, (3, 5, samples), dtype=np.uint16)
    values[0, 0] = 65535
    path = write(tmp_path, "colour16.png", sixteen_bit_png(values, colour_type))
    got = load_image(str(path), channels=samples)
    assert got.shape == (samples, 3, 5)
    np.testing.assert_allclose(got, values.transpose(2, 0, 1) / 257.0, atol=1.0)
    assert got[:, 0, 0].tolist() == [255.0] * samples
    with pytest.raises(GraphconvError, match="16-bit colour: Pillow reads it as 8 bits, so its stored values are "
                                             "lost .*pip install imagecodecs"):  # not the high bytes for them
        load_image(str(path), channels=samples, stored_values=True)
    assert "cut to 8 bits by Pillow" in images.value_scaling(str(path))


@pytest.mark.parametrize("colour_type, samples", [(2, 3), (6, 4), (4, 2)])
@pytest.mark.parametrize("channels", CHANNEL_COUNTS)
def test_16_bit_colour_png_is_read_whole_by_imagecodecs_and_divided_by_257(colour_type, samples, channels, tmp_path,
                                                                           rng):
    """A 16-bit colour PNG arrived cut to its high byte by Pillow (up to 1 off value / 257,
    and no stored values); read by imagecodecs, it is divided by 257 like 16-bit grey,
    converted to the network's channels as Pillow converts 8-bit files."""
    pytest.importorskip("imagecodecs")
    values = rng.integers(0, 65536, (4, 6, samples), dtype=np.uint16)
    path = write(tmp_path, "colour16.png", sixteen_bit_png(values, colour_type))
    stored = values.transpose(2, 0, 1).astype(np.float64)
    grey = stored[:1] if samples == 2 else np.tensordot([0.299, 0.587, 0.114], stored[:3], 1)[None]
    colour = np.repeat(stored[:1], 3, 0) if samples == 2 else stored[:3]
    alpha = stored[-1:] if samples in (2, 4) else np.full((1, 4, 6), 65535.0)
    want = {1: grey, 3: colour, 4: np.concatenate([colour, alpha])}[channels]
    np.testing.assert_allclose(load_image(str(path), channels=channels), want / 257, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(load_image(str(path), channels=channels, stored_values=True), want, rtol=1e-6)
    assert images.value_scaling(str(path)) == "16-bit pixels were divided by 257 onto 0..255"


@pytest.mark.parametrize("tag", range(1, 9))
def test_stored_pixels_are_turned_as_pillow_turns_an_image_by_its_orientation(tag, rng):
    from PIL import ImageOps

    stored = rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[images.EXIF_ORIENTATION] = tag
    img.info["exif"] = exif.tobytes()
    img._exif = None
    shown_by_pillow = np.asarray(ImageOps.exif_transpose(img))
    assert shown_by_pillow.shape[:2] == ((5, 3) if tag in images.TURNED_ORIENTATIONS else (3, 5))
    np.testing.assert_array_equal(images.stored_as_shown(stored, tag), shown_by_pillow)


def test_classify_reads_stored_values_when_the_spec_says_so(tmp_path):
    """Model.classify on a 16-bit file goes through the same reading as `run --image`."""
    from graphconv.frontends import load_network
    from graphconv.model import Model

    path = sixteen_bit_files(tmp_path)["I;16"]
    spec = tmp_path / "net.yaml"
    spec.write_text("name: net\ninput: {name: data, shape: [1, 2, 4]}\npreprocess: {values: stored, scale: 0.0001}\n"
                    "layers:\n  - {name: fc, op: fc, out_features: 3}\n")
    model = Model(load_network(spec))
    want = model.run(SIXTEEN_BIT_VALUES.astype(np.float32)[None, None] * np.float32(1e-4))[0]
    got = {p.index: p.score for p in model.classify(str(path), top=None)}
    np.testing.assert_allclose([got[k] for k in range(3)], want, rtol=1e-5)


def test_16_bit_grey_with_alpha_loads(tmp_path, rng):
    values = rng.integers(0, 65536, (3, 5, 2), dtype=np.uint16)
    path = write(tmp_path, "la16.png", sixteen_bit_png(values, 4))
    got = load_image(str(path), channels=4)
    np.testing.assert_allclose(got[0], values[..., 0] / 257.0, atol=1.0)
    np.testing.assert_allclose(got[3], values[..., 1] / 257.0, atol=1.0)


def test_float_images_are_read_as_0_to_1(tmp_path):
    values = np.array([[0.0, 0.25, 0.5], [0.75, 1.0, 0.1]], np.float32)
    path = save(tmp_path, "f.tif", Image.fromarray(values))
    assert Image.open(path).mode == "F"
    np.testing.assert_allclose(load_image(str(path), channels=1)[0], values * 255, rtol=1e-6)
    assert load_image(str(path)).shape == (3, 2, 3)


@pytest.mark.parametrize("values, message", [
    ([[0.0, 1.5]], r"float pixels from 0 to 1.5: float images are read as 0..1"),
    ([[-0.5, 0.5]], r"float pixels from -0.5 to 0.5"),
    ([[np.nan, 0.5]], r"NaN or infinite"),
    ([[np.inf, 0.5]], r"NaN or infinite"),
])
def test_float_pixels_outside_0_to_1_are_refused(values, message, tmp_path):
    path = save(tmp_path, "f.tif", Image.fromarray(np.array(values, np.float32)))
    with pytest.raises(GraphconvError, match=message):
        load_image(str(path))


@pytest.mark.parametrize("values", [[[0, 70000]], [[-5, 100]]])
def test_32_bit_integers_outside_16_bits_are_refused(values, tmp_path):
    path = save(tmp_path, "i.tif", Image.fromarray(np.array(values, np.int32)))
    with pytest.raises(GraphconvError, match=r"i.tif: 32-bit integer pixels from .*read as 16-bit, 0..65535"):
        load_image(str(path))


# ---- resizing ----------------------------------------------------------------------------

@pytest.mark.parametrize("channels", CHANNEL_COUNTS)
def test_resize_is_height_then_width(channels, tmp_path, rng):
    path = save(tmp_path, "a.png", Image.fromarray(colour_pixels(rng, 10, 20)))
    assert load_image(str(path), (7, 13), channels).shape == (channels, 7, 13)
    assert load_image(str(path), [30, 4], channels).shape == (channels, 30, 4)


@pytest.mark.parametrize("channels", CHANNEL_COUNTS)
def test_resizing_a_16_bit_image_keeps_its_scale(channels, tmp_path):
    path = save(tmp_path, "flat16.png", Image.fromarray(np.full((8, 10), 40000, np.uint16)))
    got = load_image(str(path), (17, 23), channels)
    assert got.shape == (channels, 17, 23)
    np.testing.assert_allclose(got[:3], 40000 / 257, rtol=1e-5)


@pytest.mark.parametrize("resize", [(0, 0), (0, 5), (5, -1), (-3, -3)])
def test_resize_needs_a_positive_height_and_width(resize, tmp_path, rng):
    path = save(tmp_path, "a.png", Image.fromarray(colour_pixels(rng)))
    with pytest.raises(GraphconvError, match=rf"a.png: resize to {resize[0]}x{resize[1]}: height and width "
                                             rf"must be at least 1 pixel"):
        load_image(str(path), resize)


@pytest.mark.parametrize("resize", [(1, 2, 3), (2.5, 3), (True, 4), "ab", 7.5, (True,), ("5", "5"),
                                    (float("inf"), 3), (float("nan"), 3), (None, None)])
def test_resize_must_be_two_whole_numbers_or_one(resize, tmp_path, rng):
    path = save(tmp_path, "a.png", Image.fromarray(colour_pixels(rng)))
    with pytest.raises(GraphconvError, match=r"resize takes a height and a width in pixels"):
        load_image(str(path), resize)


@pytest.mark.parametrize("side", [7, (7,), [30], np.int64(100)])
def test_resize_to_one_side_brings_the_shorter_side_to_it_keeping_the_aspect(side, tmp_path, rng):
    """As --scales and torchvision's Resize(S): `run --resize S`, for photos of many sizes."""
    wide = save(tmp_path, "wide.png", Image.fromarray(colour_pixels(rng, 20, 30)))
    tall = save(tmp_path, "tall.png", Image.fromarray(colour_pixels(rng, 30, 20)))
    s = int(np.ravel(side)[0])
    assert load_image(str(wide), side).shape == (3, s, round(30 * s / 20))
    assert load_image(str(tall), side).shape == (3, round(30 * s / 20), s)
    np.testing.assert_array_equal(load_image(str(wide), side), load_image(str(wide), (s, round(30 * s / 20))))
    with pytest.raises(GraphconvError, match=r"wide.png: resize to a shorter side of 0: it must be at least 1 pixel"):
        load_image(str(wide), 0)


def test_a_huge_resize_is_refused_before_the_file_is_read(tmp_path, limit):
    limit("8G")
    started = time.perf_counter()
    with pytest.raises(GraphconvError) as err:
        load_image(str(tmp_path / "never-opened.png"), (100000, 100000))
    assert time.perf_counter() - started < 1
    assert str(err.value).startswith("never-opened.png: an image resized to 100000x100000 needs about ")
    assert "over the memory limit of 8.0 GB" in str(err.value)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16", "I;16B", "I", "F"])
def test_pixel_array_copies_band_by_band_what_asarray_gives(mode, monkeypatch, rng):
    monkeypatch.setattr(images, "BAND_BYTES", images.MAX_PIXEL_BYTES * 7 * 3)  # bands of 3 rows
    values = rng.integers(0, 256, (11, 7, 3), dtype=np.uint8)
    if mode in ("L", "RGB", "RGBA"):
        img = Image.fromarray(values).convert(mode)
    elif mode == "I;16B":
        img = Image.frombytes(mode, (7, 11), (values[..., 0].astype(">u2") * 257).tobytes())
    else:
        img = Image.fromarray(values[..., 0].astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
    assert img.mode == mode
    got = images.pixel_array(img)
    want = np.asarray(img)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


# ---- the memory budget: decompression bombs -------------------------------------------------

@pytest.mark.parametrize("width, height, bit_depth, colour_type", [
    (20000, 20000, 1, 0),  # 400 M pixels in a 50 KB file
    (12000, 12000, 16, 0),  # 16-bit grey, the 8 GB case
])
def test_a_decompression_bomb_is_refused_from_its_header(width, height, bit_depth, colour_type, tmp_path,
                                                         limit, pillow_state):
    path = write(tmp_path, "bomb.png", zero_png(width, height, bit_depth, colour_type))
    assert path.stat().st_size < 1 << 20
    limit("64M")
    started = time.perf_counter()
    with pytest.raises(GraphconvError) as err:
        load_image(str(path))
    assert time.perf_counter() - started < 2
    message = str(err.value)
    assert message.startswith(f"bomb.png: decoding a {height}x{width} image needs about ")
    assert "over the memory limit of 64.0 MB" in message and "\n" not in message
    assert_pillow_state_kept(pillow_state)


def test_a_header_claiming_a_huge_size_needs_no_data_to_be_refused(tmp_path, limit):
    path = write(tmp_path, "claim.png", png_bytes(100000, 100000, 8, 2, b""))
    with pytest.raises(GraphconvError, match=r"claim.png: decoding a 100000x100000 image needs about .* GB"):
        load_image(str(path))


def test_the_budget_counts_the_resized_result_too(tmp_path, limit):
    path = save(tmp_path, "small.png", Image.new("RGB", (40, 30)))
    need = decode_bytes((30, 40), "RGB", 3, (3000, 3000))
    limit(need - 1)
    with pytest.raises(GraphconvError, match=r"small.png: an image resized to 3000x3000 needs about|"
                                             r"small.png: decoding a 30x40 image resized to 3000x3000"):
        load_image(str(path), (3000, 3000))
    limit(need)
    assert load_image(str(path), (3000, 3000)).shape == (3, 3000, 3000)


@pytest.mark.parametrize("mode, channels", [("RGB", 3), ("L", 1), ("1", 4), ("I;16", 3), ("F", 1)])
def test_decode_bytes_covers_the_result_and_pillows_image(mode, channels):
    """An upper estimate: at least the float32 result plus Pillow's decoded image."""
    pillow_bytes = {"1": 1, "L": 1, "I;16": 2}.get(mode, 4)
    assert decode_bytes((100, 200), mode, channels) >= 100 * 200 * (4 * channels + pillow_bytes)
    assert decode_bytes((100, 200), mode, channels, (50, 60)) >= 50 * 60 * 4 * channels + 100 * 200 * pillow_bytes


def test_the_limit_just_at_the_estimate_loads(tmp_path, limit, rng):
    path = save(tmp_path, "a.png", Image.fromarray(colour_pixels(rng, 64, 80)))
    need = decode_bytes((64, 80), "RGB", 3)
    limit(need - 1)
    with pytest.raises(GraphconvError, match=r"a.png: decoding a 64x80 image needs about"):
        load_image(str(path))
    limit(need)
    assert load_image(str(path)).shape == (3, 64, 80)


@pytest.mark.parametrize("problem", [
    PIL.Image.DecompressionBombError("Image size (400000000 pixels) exceeds limit of 9 pixels"),
    PIL.Image.DecompressionBombWarning("Image size (400000000 pixels) exceeds limit of 9 pixels"),
])
def test_pillows_own_bomb_check_becomes_a_clean_error(problem, tmp_path, rng, monkeypatch, pillow_state):
    """Pillow's limit guards the formats whose size changes while loading: whether it
    raises its error or warns, the user gets one line."""
    path = save(tmp_path, "icon.png", Image.fromarray(colour_pixels(rng)))

    def load(self):
        if isinstance(problem, Warning):
            warnings.warn(str(problem), type(problem))
        raise problem

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", load)
    with pytest.raises(GraphconvError, match=r"^icon.png: refused as a possible decompression bomb under "
                                             r"the memory limit of .*Image size \(400000000 pixels\)"):
        load_image(str(path))
    assert_pillow_state_kept(pillow_state)


def test_running_out_of_memory_while_decoding_is_a_clean_error(tmp_path, rng, monkeypatch):
    path = save(tmp_path, "a.png", Image.fromarray(colour_pixels(rng)))

    def load(self):
        raise MemoryError()

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", load)
    with pytest.raises(GraphconvError, match=r"^a.png: ran out of memory decoding the image"):
        load_image(str(path))


def test_pillows_limit_while_decoding_comes_from_the_budget(tmp_path, rng, monkeypatch, limit, pillow_state):
    path = save(tmp_path, "a.png", Image.fromarray(colour_pixels(rng)))
    seen = []
    real_load = PIL.ImageFile.ImageFile.load

    def load(self):
        seen.append(Image.MAX_IMAGE_PIXELS)
        return real_load(self)

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", load)
    limit("130M")
    load_image(str(path))
    assert seen[0] == (130 << 20) // images.MIN_BYTES_PER_SOURCE_PIXEL
    assert_pillow_state_kept(pillow_state)


# ---- bad files ---------------------------------------------------------------------------

def bad_files(tmp_path, rng) -> dict:
    good = tmp_path / "good.png"
    Image.fromarray(colour_pixels(rng, 40, 40)).save(good)
    data = good.read_bytes()
    corrupt = bytearray(data)
    corrupt[60:80] = bytes(20)  # inside IDAT
    jpeg = tmp_path / "good.jpg"
    Image.fromarray(colour_pixels(rng, 40, 40)).save(jpeg)
    return {
        "truncated.png": data[: len(data) // 2],
        "corrupt.png": bytes(corrupt),
        "header-only.png": data[:40],
        "truncated.jpg": jpeg.read_bytes()[:200],
        "notes.txt": b"just some text, not a picture\n",
        "empty.png": b"",
        "zero-width.png": png_bytes(0, 10, 8, 0, zlib.compress(b"")),
        "bad-ihdr.png": b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", b"\0\0"),
    }


@pytest.mark.parametrize("name", ["truncated.png", "corrupt.png", "header-only.png", "truncated.jpg",
                                  "notes.txt", "empty.png", "zero-width.png", "bad-ihdr.png"])
def test_a_bad_file_is_one_clean_line(name, tmp_path, rng, pillow_state):
    path = write(tmp_path, name, bad_files(tmp_path, rng)[name])
    with pytest.raises(GraphconvError) as err:
        load_image(str(path))
    message = str(err.value)
    assert message.startswith(f"{name}: ") and "\n" not in message and len(message) < 400
    assert_pillow_state_kept(pillow_state)


def test_a_missing_file(tmp_path):
    with pytest.raises(GraphconvError, match=r"^nothing.png: image not found$"):
        load_image(str(tmp_path / "nothing.png"))


def test_a_directory(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(GraphconvError, match=r"^photos: cannot read image: it is a folder$"):
        load_image(str(tmp_path / "photos"))


@pytest.mark.parametrize("make", ["fifo", "/dev/zero"])
def test_a_pipe_or_a_device_is_refused_without_reading_it(make, tmp_path):
    """A FIFO would block until a writer comes, /dev/zero never ends: neither is read."""
    if make == "fifo":
        path = tmp_path / "pipe.png"
        os.mkfifo(path)
    else:
        path = Path(make)
    started = time.perf_counter()
    with pytest.raises(GraphconvError, match=rf"^{shown_path(str(path))}: cannot read image: not a regular file"):
        load_image(str(path))
    assert time.perf_counter() - started < 2


def test_a_file_name_with_a_newline_stays_on_one_line(tmp_path):
    path = write(tmp_path, "evil\ngraphconv: fake.png", b"not an image")
    with pytest.raises(GraphconvError) as err:
        load_image(str(path))
    assert "\n" not in str(err.value)


# ---- preprocess and heatmaps ---------------------------------------------------------------

def test_preprocess_applies_scale_mean_and_std_per_channel():
    image = np.full((3, 2, 2), 255, np.float32)
    spec = {"scale": 1 / 255, "mean": [0.5, 0.25, 0.0], "std": [0.5, 0.25, 1.0]}
    np.testing.assert_allclose(preprocess(image, spec)[:, 0, 0], [1.0, 3.0, 1.0], rtol=1e-6)
    assert preprocess(image, None) is image


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
@pytest.mark.parametrize("spec", [{"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                                  {"scale": 0.0001}, {"mean": [104.0, 117.0, 123.0]}, {"std": [58.4, 57.1, 57.4]}])
def test_preprocess_in_place_gives_the_numbers_of_the_copy_it_saves(spec, dtype, rng):
    """A slide's tile is normalised where it lies (`in_place`: each copy of a 2128x2128
    RGB tile is 54 MB), to the same float32 numbers as numpy's steps on a copy; a caller's
    array is not touched without it, and only a float32 array is changed in place."""
    pixels = rng.uniform(0, 255, (3, 17, 23)).astype(dtype)
    kept = pixels.copy()
    as_a_copy = preprocess(pixels, spec)
    np.testing.assert_array_equal(pixels, kept)
    reference = pixels.astype(np.float64) * spec.get("scale", 1.0)
    mean, std = (np.reshape(spec.get(key, default), (-1, 1, 1)) for key, default in (("mean", 0.0), ("std", 1.0)))
    reference = (reference - mean) / std
    np.testing.assert_allclose(as_a_copy, reference, rtol=2e-6, atol=1e-6)
    in_place = preprocess(pixels, spec, in_place=True)
    assert in_place.dtype == np.float32 and (in_place is pixels) == (dtype == np.float32)
    np.testing.assert_array_equal(in_place, as_a_copy)


def test_preprocess_refuses_a_mean_for_other_channels():
    with pytest.raises(GraphconvError, match=r"preprocess mean lists 3 numbers for an image of 1 channel"):
        preprocess(np.zeros((1, 4, 4), np.float32), {"mean": [0.1, 0.2, 0.3]})


@pytest.mark.parametrize("channels", CHANNEL_COUNTS)
def test_heatmaps_over_images_of_every_channel_count(channels, tmp_path, rng):
    image = rng.uniform(0, 255, (channels, 20, 24)).astype(np.float32)
    scores = rng.standard_normal((3, 4)).astype(np.float32)
    save_heatmap(image, scores, Field((8, 8), (4, 4), (0, 0)), str(tmp_path / "heat.png"))
    written = Image.open(tmp_path / "heat.png")
    assert written.format == "PNG" and written.mode == "RGB"
    # a 20x24 picture is enlarged by whole pixels (x16) so the title and the bar's numbers fit
    assert written.size[0] > 24 * 16 and written.size[1] > 20 * 16


# ---- heatmaps: scale, colour bar, title, aspect, format, best class --------------------------------

FIELD = Field((8, 8), (4, 4), (0, 0))
TILING = Field((4, 4), (4, 4), (0, 0))  # cells of 4x4 pixels that tile the picture: no edge outside them


def panel_of(picture: Image.Image) -> np.ndarray:
    """The picture part of a heatmap (below the title, left of the bar or legend)."""
    left, top, right, bottom = picture.info["panel_box"]
    return np.asarray(picture)[top:bottom, left:right].astype(int)


def test_a_fixed_scale_keeps_noise_dim_and_the_bar_shows_the_real_values(rng):
    """A probability map of small noise is drawn dark on 0..1, not stretched into
    violet-and-yellow as if it were signal; stretched, the bar says so and names its values."""
    grey = np.full((1, 40, 48), 128, np.float32)
    noise = rng.uniform(0.01, 0.02, (10, 12))
    fixed_picture = images.render_heatmap(grey, noise, TILING, title="class 3", value_range=(0, 1),
                                          scale_note="probability, fixed scale 0..1")
    panel_fixed = panel_of(fixed_picture)
    panel_stretched = panel_of(images.render_heatmap(grey, noise, TILING, title="class 3"))
    assert panel_fixed[..., 1].max() < 80  # no green or yellow anywhere: 0.02 of the way up
    assert panel_stretched[..., 1].max() > 170  # stretched, the largest noise value is yellow
    assert images.heatmap_range(noise, "auto", True)[:2] == (0.0, 1.0)
    low, high, note = images.heatmap_range(noise, "auto", False)
    assert (low, high) == (noise.min(), noise.max()) and "this map's min..max" in note
    assert images.heatmap_range(noise, (-1.0, 2.0), False)[:2] == (-1.0, 2.0)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_a_heatmap_blended_a_band_of_rows_at_a_time_is_the_one_blended_whole(rng, monkeypatch, channels):
    """The blend goes BLEND_ROWS rows at a time (whole, in float, a 2048x2048 heatmap
    took 330-420 MB over a run's own memory): bands that cut the picture and its cells
    anywhere give the same pixels, NaN cells showing the picture, for both renderers."""
    image = rng.uniform(0, 255, (channels, 203, 61)).astype(np.float32)
    scores = rng.uniform(0, 1, (50, 14))
    scores[3:7, 2:5] = np.nan
    best = rng.integers(-1, 5, (50, 14))

    def drawn():
        return (np.asarray(images.render_heatmap(image, scores, FIELD, title="t", value_range=(0, 1))),
                np.asarray(images.render_class_map(image, best, 5, FIELD)))

    monkeypatch.setattr(images, "BLEND_ROWS", 10_000)
    whole = drawn()
    monkeypatch.setattr(images, "BLEND_ROWS", 7)
    for banded, once in zip(drawn(), whole):
        np.testing.assert_array_equal(banded, once)
    panel = panel_of(images.render_heatmap(image, np.full_like(scores, np.nan), FIELD, title="t",
                                           value_range=(0, 1)))
    factor = panel.shape[0] // image.shape[1]  # a small picture is enlarged, pixel by pixel
    shown = np.repeat(image, 3, axis=0) if channels == 1 else image[:3]  # where no cell is computed
    np.testing.assert_array_equal(panel[::factor, ::factor], shown.transpose(1, 2, 0).astype(np.uint8))


def test_the_colour_bar_runs_yellow_to_violet_beside_the_picture(rng):
    picture = images.render_heatmap(np.zeros((3, 40, 40), np.float32), rng.uniform(0, 1, (9, 9)), FIELD,
                                    title="class 1: cat", value_range=(0, 1))
    pixels = np.asarray(picture).astype(int)
    _, y, right, bottom_y = picture.info["panel_box"]
    bar_x = right + images.MARGIN + images.BAR_WIDTH // 2
    top, bottom = pixels[y + 1, bar_x], pixels[bottom_y - 2, bar_x]
    assert np.abs(top - [253, 231, 37]).max() <= 3 and np.abs(bottom - [68, 1, 84]).max() <= 3
    assert picture.size[0] > bar_x + images.BAR_WIDTH + 10  # room for the numbers


def lightness(rgb: np.ndarray) -> np.ndarray:
    """CIE L* of sRGB colours 0..255 (..., 3)."""
    linear = rgb / 255.0
    linear = np.where(linear <= 0.04045, linear / 12.92, ((linear + 0.055) / 1.055) ** 2.4)
    y = linear @ np.array([0.2126, 0.7152, 0.0722])
    return np.where(y > (6 / 29) ** 3, 116 * np.cbrt(y) - 16, y * (29 / 3) ** 3)


def deuteranopia(rgb: np.ndarray) -> np.ndarray:
    """sRGB as a deuteranope sees it (Machado, Oliveira and Fernandes 2009, severity 1)."""
    linear = rgb / 255.0
    linear = np.where(linear <= 0.04045, linear / 12.92, ((linear + 0.055) / 1.055) ** 2.4)
    seen = np.clip(linear @ np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                                      [-0.011820, 0.042940, 0.968881]]).T, 0, 1)
    return 255 * np.where(seen <= 0.0031308, seen * 12.92, 1.055 * seen ** (1 / 2.4) - 0.055)


def test_higher_scores_are_lighter_for_every_reader():
    """The scale's order must survive a grey print and colour blindness: lightness rises
    with the score, for normal and deuteranope vision (the rainbow's middle was its
    lightest, and its top third one olive for a deuteranope)."""
    levels = np.linspace(0, 1, 201, dtype=np.float32)
    rgb = images._colours(levels).T
    for seen in (rgb, deuteranopia(rgb)):
        assert np.all(np.diff(lightness(seen)) > 0)
    assert lightness(rgb[-1]) - lightness(rgb[0]) > 60
    np.testing.assert_allclose(rgb[[0, -1]], images.VIRIDIS[[0, -1]])


def test_the_title_is_drawn(rng):
    scores = rng.uniform(0, 1, (9, 9))
    plain = np.asarray(images.render_heatmap(np.zeros((3, 40, 40), np.float32), scores, FIELD, title="x"))
    titled = np.asarray(images.render_heatmap(np.zeros((3, 40, 40), np.float32), scores, FIELD,
                                              title="class 10: background"))
    assert (titled[:20] < 128).sum() > (plain[:20] < 128).sum() + 50
    assert images.heatmap_title(10, [str(i) for i in range(10)] + ["background"]) == "class 10: background"
    assert images.heatmap_title(7, [str(i) for i in range(10)]) == "class 7"
    assert images.heatmap_title(7, None) == "class 7"


def test_a_resized_picture_is_shown_with_its_original_aspect_ratio(rng):
    """The network saw the picture squashed to 64x64 by --resize; the heatmap shows it as
    the 400x200 original was shaped."""
    image = rng.uniform(0, 255, (3, 64, 64)).astype(np.float32)
    scores = rng.uniform(0, 1, (15, 15))
    def panel_hw(display_hw):
        left, top, right, bottom = images.render_heatmap(image, scores, FIELD,
                                                         display_hw=display_hw).info["panel_box"]
        return bottom - top, right - left

    assert panel_hw(None) == (320, 320)  # square, enlarged x5
    assert panel_hw((64, 64)) == (320, 320)
    assert panel_hw((200, 400)) == (192, 384)  # 64x128, enlarged x3


def test_the_file_format_follows_the_extension(tmp_path, rng):
    image = rng.uniform(0, 255, (3, 20, 24)).astype(np.float32)
    for name, fmt in (("h.png", "PNG"), ("h.jpg", "JPEG"), ("h.JPEG", "JPEG"), ("h.webp", "WEBP"),
                      ("h.tif", "TIFF"), ("h.tiff", "TIFF"), ("h.gif", "GIF")):
        save_heatmap(image, rng.uniform(0, 1, (3, 4)), FIELD, str(tmp_path / name))
        assert Image.open(tmp_path / name).format == fmt
        assert images.is_graphconv_heatmap(tmp_path / name), name  # so a rerun may replace it
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"user.{name}")  # a user's picture
        assert not images.is_graphconv_heatmap(tmp_path / f"user.{name}"), name
    for bad in ("h.xyz", "h", "h.pdf", "h.bmp"):  # a BMP cannot say it is graphconv's heatmap
        with pytest.raises(GraphconvError, match="cannot tell the image format"):
            images.heatmap_format(str(tmp_path / bad))


def test_probability_outputs_are_recognised(write_spec):
    import graphconv
    from conftest import SPECS
    assert images.outputs_probabilities(graphconv.load_spec(SPECS / "lenet.yaml"))
    stitched = graphconv.compile_model(SPECS / "lenet.yaml", output_stride=2, stride_method="shift")
    assert stitched.graph.output.op == "interleave" and images.outputs_probabilities(stitched.graph)
    raw = write_spec("input: {shape: [1, 8, 8]}\nlayers:\n  - {name: c, op: conv, out_channels: 2, kernel_size: 3}\n")
    assert not images.outputs_probabilities(graphconv.load_spec(raw))


def test_the_best_class_map_names_its_regions_and_has_a_legend(rng):
    scores = np.zeros((3, 10, 12))
    scores[0] = 1.0
    scores[2, 2:5, 3:7] = 2.0  # one region of class 2
    labels = ["background", "cat", "dog"]
    picture = images.render_top_map(np.full((3, 48, 56), 200, np.float32), scores, FIELD, labels)
    regions = images._regions(np.argmax(scores, axis=0))
    assert [k for k, _ in regions] == [0, 2] and regions[1][1] in {(3, 4), (3, 5), (2, 4), (2, 5)}
    pixels = np.asarray(picture).astype(int)
    dog = images.class_palette(3)[2]
    assert (np.abs(pixels - dog).sum(axis=2) < 6).sum() > 20  # the legend's swatch
    assert picture.size[0] > 56 * 6 + 40  # a legend beside the picture
    assert len(images.class_palette(40)) == 40 and len({tuple(c) for c in images.class_palette(20)}) == 20


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 300), st.integers(1, 33), st.integers(-40, 40), st.integers(2, 30))
def test_every_inner_cell_of_a_heatmap_covers_stride_pixels(size, stride, offset, cells):
    """Each pixel shows the cell whose field is centred nearest; ties (an odd field on an
    even stride: AlexNet's 227 on 32) drew cells 1 and 3 pixels wide in turn."""
    field = Field(size=(size, size), stride=(stride, stride), offset=(offset, offset))
    length = max(0, offset) + size + (cells - 1) * stride + 2 * stride
    ys, xs = images.cell_index_map(field, cells, cells, length, length)
    assert np.array_equal(ys, xs) and np.all(np.diff(ys) >= 0)
    centres = offset + (size - 1) / 2 + stride * np.arange(cells)
    inside = (centres - stride >= 0) & (centres + stride < length)  # neither cut by the image's edge
    inside[[0, -1]] = False  # nor the first and last, which take the pixels beyond them
    widths = np.bincount(ys, minlength=cells)
    assert np.all(widths[inside] == stride), widths
    distance = np.abs(np.arange(length)[:, None] - centres[None, :])
    assert np.all(distance[np.arange(length), ys] <= distance.min(axis=1))  # still the nearest centre


def test_a_region_at_the_edge_has_its_name_drawn_whole(monkeypatch):
    """A region in the picture's corner had its name centred on it, cut by the edge."""
    drawn = []
    from PIL import ImageDraw
    text = ImageDraw.ImageDraw.text

    def recording(self, xy, words, *args, **kwargs):
        if kwargs.get("anchor") == "mm":
            drawn.append(self.textbbox(xy, words, font=kwargs["font"], anchor="mm", stroke_width=2))
        return text(self, xy, words, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", recording)
    best = np.zeros((10, 12), int)
    best[:2, :2] = 1  # a small region in the top-left corner
    best[-2:, -2:] = 2  # and one in the bottom-right
    picture = images.render_class_map(np.full((3, 48, 56), 200, np.float32), best, 3, FIELD,
                                      ["background", "a very long class name", "another long class name"])
    left, top, right, bottom = picture.info["panel_box"]
    assert len(drawn) == 3
    for box in drawn:
        assert 0 <= box[0] and box[2] <= right - left and 0 <= box[1] and box[3] <= bottom - top, box


def test_specks_smaller_than_a_thousandth_of_the_cells_are_coloured_but_not_named(monkeypatch):
    """133 of a slide's 200 region names were one-cell tumour specks: the picture read as
    tumour everywhere. A region under 0.1% of the computed cells is not named."""
    from PIL import ImageDraw
    named, text = [], ImageDraw.ImageDraw.text

    def recording(self, xy, words, *args, **kwargs):
        if kwargs.get("anchor") == "mm":
            named.append(words)
        return text(self, xy, words, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", recording)
    best = np.zeros((60, 60), int)  # 3600 cells: regions of 3 cells or less go unnamed
    best[10, 10] = best[30, 40] = best[50, 5] = 1  # specks
    best[40:43, 20:22] = 2  # 6 cells
    picture = images.render_class_map(np.full((3, 248, 248), 200, np.float32), best, 3, FIELD,
                                      ["glass", "tumour", "normal"])
    assert sorted(named) == ["glass", "normal"]
    pixels = np.asarray(picture).astype(int)
    assert (np.abs(pixels - images.class_palette(3)[1]).sum(axis=2) < 60).any()  # the specks still coloured


LABELS_BEYOND_ASCII = ["Hintergrund", "Straße", "γάτα", "собака"]


@pytest.mark.skipif(images._truetype("DejaVuSans.ttf", images.FONT_SIZE) is None,
                    reason="DejaVu Sans is not installed")
def test_labels_beyond_ascii_are_drawn_in_a_font_that_has_them():
    """Pillow's own font has no accented or Greek letters: 'Straße' was drawn 'Stra' and a
    box. A system font that has them is taken, and every label is drawn."""
    scores = np.stack([np.eye(4)[k % 4][:, None].repeat(5, 1) for k in range(4)], axis=1)  # four classes in rows
    picture = images.render_top_map(np.full((3, 32, 40), 200, np.float32), scores, FIELD,
                                     LABELS_BEYOND_ASCII)
    assert picture.info["undrawn"] == "" and images.heatmap_font_note(picture) is None
    font, undrawn = images.text_font(LABELS_BEYOND_ASCII)
    assert undrawn == "" and all(images._draws(font, c) for c in "ßγάсо")
    default = images._default_font(images.FONT_SIZE)
    assert not images._draws(default, "ß")  # why: the default font would draw boxes
    assert images.text_font(["cat", "dog"])[0] is default  # ASCII keeps the default look


def test_characters_no_font_draws_are_said_once_in_a_note(tmp_path, capsys):
    """Boxes in a figure should not be found by a reader: the run says which characters."""
    from conftest import SPECS
    from graphconv.cli import main
    nowhere = "\U000F0041"  # private use: no font draws it
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join([f"class {nowhere}{k}" for k in range(10)]) + "\n", encoding="utf-8")
    Image.fromarray(np.full((40, 44), 128, np.uint8)).save(tmp_path / "page.png")
    assert main(["compile", str(SPECS / "lenet.yaml"), "-o", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "m"), "--image", str(tmp_path / "page.png"), "--labels", str(labels),
                 "--heatmap", "top", "--heatmap-out", str(tmp_path / "h.png")]) == 0
    err = capsys.readouterr().err
    assert err.count("no font found on this machine draws") == 1 and repr(nowhere)[1:-1] in err, err
    assert (tmp_path / "h.png").exists()


def reference_regions(best: np.ndarray) -> list[tuple[int, tuple[int, int]]]:
    """`images._regions` by hand: a flood fill from each cell not yet seen, in row order."""
    rows, cols = best.shape
    seen, found = np.zeros(best.shape, bool), []
    for start in np.ndindex(rows, cols):
        if seen[start]:
            continue
        stack, members = [start], []
        seen[start] = True
        while stack:
            r, c = stack.pop()
            members.append((r, c))
            for cell in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= cell[0] < rows and 0 <= cell[1] < cols and not seen[cell] and best[cell] == best[start]:
                    seen[cell] = True
                    stack.append(cell)
        centre = np.mean(members, axis=0)
        nearest = min(members, key=lambda m: ((m[0] - centre[0]) ** 2 + (m[1] - centre[1]) ** 2, m))
        found.append((len(members), int(best[start]), nearest))
    found.sort(key=lambda f: -f[0])
    return [(klass, cell) for _, klass, cell in found[:200]]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 4), st.integers(0, 2 ** 16))
def test_the_regions_named_on_a_class_map_are_its_connected_regions(rows, cols, classes, seed):
    """The compiled labelling (a slide's best-class picture has millions of cells; the
    Python flood fill took 10 s for 4M) names the regions a flood fill finds: same
    classes, same cells, same order."""
    rng = np.random.default_rng(seed)
    best = rng.integers(0, classes, (rows, cols))
    best[rng.integers(0, rows):, rng.integers(0, cols):] = rng.integers(-1, classes)  # a block of one class
    assert images._regions(best) == reference_regions(best)


# ---- orientation ---------------------------------------------------------------------------

# How a camera stores a picture whose EXIF Orientation is k, so that a viewer turning it
# as k says shows the upright picture (the inverse of what `ImageOps.exif_transpose` does).
STORED_AS = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
             7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def stored_with_orientation(upright: Image.Image, orientation: int, path: Path) -> Path:
    """`upright` saved (losslessly) as a camera would store it with EXIF Orientation
    `orientation` (a TIFF: its Orientation tag)."""
    stored = upright if STORED_AS[orientation] is None else upright.transpose(STORED_AS[orientation])
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION] = orientation
    stored.save(path, exif=exif.tobytes(), **({"lossless": True} if path.suffix == ".webp" else {}))
    return path


def test_a_photo_whose_exif_is_damaged_loads_without_pillow_s_warnings(tmp_path):
    """Pillow warned "Corrupt EXIF data" on stderr three times for such a photo in a batch,
    naming none; it is read as stored, as viewers show it, without them."""
    Image = pytest.importorskip("PIL.Image")
    pixels = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION] = 6
    Image.fromarray(pixels).save(tmp_path / "ok.jpg", exif=exif.tobytes())
    data = (tmp_path / "ok.jpg").read_bytes()
    start = data.find(b"Exif")
    (tmp_path / "bad.jpg").write_bytes(data[:start + 10] + b"\xff" * 20 + data[start + 30:])
    with pytest.warns(UserWarning, match="Corrupt EXIF data"):  # as Pillow opens it
        Image.open(tmp_path / "bad.jpg").getexif()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_image(tmp_path / "bad.jpg", channels=3)
        assert loaded.shape == (3, 30, 40) and images.image_size(tmp_path / "bad.jpg") == (30, 40)
        assert not images.is_graphconv_heatmap(tmp_path / "bad.jpg")


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", [".png", ".webp", ".tif"])
def test_a_picture_is_loaded_upright_whatever_its_orientation(orientation, suffix, tmp_path, rng):
    """A phone stores a portrait photo landscape with Orientation 6: it was mapped lying on
    its side. Every orientation gives the upright picture, its size too, resized or not,
    and from a Pillow image (`as_picture`, what `classify` takes) as from its file."""
    upright = Image.fromarray(colour_pixels(rng, 10, 17))
    path = stored_with_orientation(upright, orientation, tmp_path / f"o{orientation}{suffix}")
    with Image.open(path) as opened:
        assert images.orientation(opened) == orientation, "the file says it"
    expected = load_image(str(stored_with_orientation(upright, 1, tmp_path / "upright.png")))
    np.testing.assert_array_equal(load_image(str(path)), expected)
    assert images.image_size(str(path)) == (10, 17)
    np.testing.assert_array_equal(load_image(str(path), (5, 9)), load_image(str(tmp_path / "upright.png"), (5, 9)))
    with Image.open(path) as opened:
        np.testing.assert_array_equal(images.as_picture(opened), expected)


def test_turning_a_picture_upright_is_in_the_decode_budget():
    """The turned copy sits beside Pillow's decoded image for a moment."""
    plain = decode_bytes((1000, 2000), "RGB", 3)
    assert decode_bytes((1000, 2000), "RGB", 3, turned=True) == plain + 1000 * 2000 * 4


@pytest.mark.parametrize("spec, says", [
    ({"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, "did you mean scale 0.00392157"),
    ({"scale": 0.00392157, "mean": [124, 116, 104], "std": [58, 57, 57]}, "reaches 124, but its scale makes pixels 0..1"),
    ({"scale": 0.00392157, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, None),  # torchvision
    ({"mean": [104, 117, 123]}, None),  # Caffe's BGR means on 0..255
    ({"mean": [127.5] * 3, "std": [127.5] * 3}, None),  # TensorFlow's -1..1
    ({"scale": 1 / 127.5, "mean": [1, 1, 1]}, None),  # the same, another way
    ({"values": "stored", "scale": 0.0001, "mean": [0.1], "std": [0.05]}, None),  # reflectance: the file's range
    ({"scale": 1.0}, None),
    ({"scale": -0.00392157, "mean": [-1.0]}, None),  # specs/digits.yaml: inverted, ink high, paper 0
    (None, None),
])
def test_a_preprocess_on_another_scale_than_its_pixels_is_noted(spec, says):
    """An import without --scale 0.00392157 of a torchvision model ran on 0..255 pixels
    and mapped nonsense without a word."""
    from graphconv.images import preprocess_scale_note
    note = preprocess_scale_note(spec)
    assert (note is None) if says is None else (says in note), note


def test_a_reflectance_preprocess_without_stored_values_points_at_them():
    """scale 0.0001 with mean 0.08..0.25 imported without --values stored: the note asked
    only whether they were for pixels on 0..255, the wrong advice for a 16-bit raster;
    it names --values stored, and said of an image of more than 8 bits, that alone."""
    from graphconv.images import deep_scaling, preprocess_scale_note

    spec = {"scale": 0.0001, "mean": [0.08, 0.07, 0.06, 0.25], "std": [0.03, 0.03, 0.035, 0.08]}
    plain = preprocess_scale_note(spec)
    assert "(then leave out the scale)" in plain and "then import --values stored" in plain
    deep = preprocess_scale_note(spec, deep_scaling("uint16"))
    assert "and the image's 16-bit pixels were divided by 257 onto 0..255: are they for the values the file stores" \
           in deep and "graphconv import --values stored" in deep and "leave out the scale" not in deep
    assert deep_scaling("uint8") is None and deep_scaling("L") is None and deep_scaling("RGB") is None
    assert deep_scaling("I;16") == deep_scaling("uint16")
    assert deep_scaling("float32") == "float32 pixels were read as 0..1 and multiplied by 255"


def test_a_16_bit_picture_s_scaling_is_said_and_an_8_bit_one_s_is_not(tmp_path):
    from PIL import Image

    from graphconv.images import value_scaling

    Image.fromarray(np.full((8, 8), 4000, np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "grey.png")
    assert value_scaling(str(tmp_path / "deep.png")) == "16-bit pixels were divided by 257 onto 0..255"
    assert value_scaling(str(tmp_path / "grey.png")) is None


@pytest.mark.parametrize("name", ["empty.png", "empty.jpg", "empty.tif"])
def test_an_empty_file_is_called_empty(tmp_path, name):
    """A 0-byte file (an interrupted copy) was "not an image file Pillow can read"."""
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(GraphconvError, match=r"is empty \(0 bytes\), not an image"):
        load_image(str(tmp_path / name))
    from graphconv.sources import open_source
    with pytest.raises(GraphconvError, match=r"is empty \(0 bytes\), not an image"):
        open_source(tmp_path / name, 3, None)


@pytest.mark.parametrize("name, head, said", [
    ("IMG_0001.HEIC", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "a HEIC/HEIF photo"),
    ("photo.jpg", b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "a HEIC/HEIF photo"),  # misnamed
    ("DSC_0001.NEF", None, "a camera's raw file"),
    ("mystery.png", b"not a picture at all", "not an image file Pillow can read"),
])
def test_a_phone_s_heic_photo_or_a_camera_s_raw_file_is_named_with_its_conversion(tmp_path, name, head, said):
    """A .HEIC --image said only "not an image file Pillow can read": a phone user was
    left to guess that the format, not the file, is the trouble. A camera's raw file is
    a TIFF whose first image is a small preview, which was mapped as the photo."""
    from graphconv.sources import open_source

    if head is None:  # a raw file: a TIFF, its first image a preview Pillow and tifffile read
        pytest.importorskip("tifffile").imwrite(tmp_path / name, np.zeros((120, 160, 3), np.uint8), photometric="rgb")
    else:
        (tmp_path / name).write_bytes(head)
    with pytest.raises(GraphconvError, match=re.escape(said)) as err:
        load_image(str(tmp_path / name))
    assert ("convert it to JPEG" in str(err.value)) == (said == "a HEIC/HEIF photo")
    with pytest.raises(GraphconvError, match=re.escape(said)):
        open_source(tmp_path / name, 3, None)


def test_a_16_bit_inverted_grey_tiff_is_inverted_back_as_the_tiled_reader_does(tmp_path):
    """Pillow inverts an 8-bit MINISWHITE TIFF but gives a 16-bit one as stored: load_image
    (--resize, classify) mapped its negative, while the tiled reader inverted it."""
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("zarr")
    from graphconv.sources import open_source

    top = 65535
    stored = np.random.default_rng(15).integers(0, top + 1, (12, 10)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "w.tif", stored, photometric="miniswhite")
    want = ((top - stored) / np.float32(257)).astype(np.float32)[None]
    np.testing.assert_allclose(load_image(str(tmp_path / "w.tif"), channels=1), want, rtol=1e-6)
    np.testing.assert_allclose(open_source(tmp_path / "w.tif", 1, None).read(0, 0, 12, 10), want, rtol=1e-6)


def test_resizing_a_wide_strip_is_budgeted_by_pillows_horizontal_pass(tmp_path, limit, rng):
    """Pillow resizes rows first: its intermediate image is the new width by the old
    height. The estimate took the longer old side for the height, so a 1x20000 strip
    resized to 4x20000 (80 MB at its peak) was refused at 1 GB as needing 1.5 GB."""
    path = save(tmp_path, "strip.png", Image.fromarray(colour_pixels(rng, 1, 20000)))
    need = decode_bytes((1, 20000), "RGB", 3, (4, 20000))
    assert need < 64 * 2 ** 20
    limit(need)
    assert load_image(str(path), (4, 20000)).shape == (3, 4, 20000)


def test_a_thousand_class_legend_lists_the_most_common_and_sums_the_rest(rng):
    """An ImageNet top map once had a 17,000 px tall legend: it lists LEGEND_MOST lines,
    the classes best in most cells first, the rest summed on the last."""
    best = rng.integers(0, 1000, (60, 80))
    best[:20] = 7  # the most common class by far
    best[0, :5] = images.NOT_COMPUTED
    counts = np.bincount(best[best >= 0], minlength=1000)
    legend = images._class_legend(counts, images.class_palette(1000), None, 5)
    assert len(legend) == images.LEGEND_MOST + 1 and legend[0][1] == f"7 ({counts[7]} cells)"
    classes_shown = (counts > 0).sum()
    listed = images.LEGEND_MOST - 1
    more = counts[np.argsort(-counts, kind="stable")[listed:]].sum()
    assert legend[-2] == (None, f"{classes_shown - listed} more classes ({more} cells)")
    assert legend[-1] == (None, "not computed: the picture as it is (5 cells)")
    picture = images.render_class_map(np.zeros((3, 240, 320), np.float32), best, 1000, FIELD)
    assert picture.size[1] < 1000  # the legend's 31 lines, not 1000


def test_a_map_with_cells_not_computed_says_so_above_its_picture(rng):
    scores = rng.uniform(0, 1, (9, 9))
    scores[:2] = np.nan
    image = np.zeros((3, 40, 40), np.float32)
    with_gaps, whole = (images.render_heatmap(image, s, FIELD, title="t", value_range=(0, 1))
                        for s in (scores, np.nan_to_num(scores)))
    assert with_gaps.info["panel_box"][1] > whole.info["panel_box"][1]  # one more line of title
    assert "18 cells not computed show the picture as it is" in with_gaps.info["lines"]


def test_text_grows_with_large_pictures_so_it_reads_when_fitted_to_a_screen(rng):
    assert images.text_size((320, 200)) == images.FONT_SIZE == images.text_size((1000, 1000))
    assert images.text_size((8000, 6000)) == 8 * images.FONT_SIZE
    small, large = (images.render_heatmap(np.zeros((3, side, side), np.float32), rng.uniform(0, 1, (9, 9)),
                                          FIELD, title="class 1", value_range=(0, 1)) for side in (500, 3000))
    assert large.info["panel_box"][1] >= 2.5 * small.info["panel_box"][1]  # the title band, 3x the text
    assert large.size[0] - large.info["panel_box"][2] >= 2.5 * (small.size[0] - small.info["panel_box"][2])


def test_a_constant_map_is_drawn_in_the_middle_colour_with_one_tick(rng):
    constant = np.full((10, 10), 0.37)
    low, high, note = images.heatmap_range(constant, "map", False)
    assert (low, high) == (0.37, 0.37) and note == "score: every cell 0.37"
    panel = panel_of(images.render_heatmap(np.zeros((3, 40, 40), np.float32), constant, TILING,
                                           value_range=(low, high), scale_note=note))
    middle = images._colours(np.float32(0.5)) * images.BLEND  # over black
    assert np.abs(panel - middle.astype(int)).max() <= 1


@pytest.mark.parametrize("extremes, says", [
    ((0.1, 0.4), ""),
    ((0.1, 0.9), " (values above 0.5 drawn as 0.5)"),
    ((-0.3, 0.9), " (values below 0 drawn as 0 and above 0.5 drawn as 0.5)"),
])
def test_a_fixed_scale_says_what_it_clips(extremes, says):
    """Cells beyond a fixed --heatmap-range take its end colours: the picture alone would
    show a map of 0.9s as one of 0.5s."""
    assert images.heatmap_range(np.zeros(1), (0.0, 0.5), True, extremes)[2] == f"fixed scale 0..0.5{says}"


@pytest.mark.parametrize("renderer", ["one class", "best class"])
def test_at_full_opacity_the_cells_have_the_colours_of_the_bar_or_legend(renderer, rng):
    image = rng.uniform(0, 255, (3, 40, 40)).astype(np.float32)
    if renderer == "one class":
        scores = np.full((10, 10), 0.75)
        panel = panel_of(images.render_heatmap(image, scores, TILING, value_range=(0, 1), opacity=1.0))
        expected = images._colours(np.float32(0.75))
    else:
        panel = panel_of(images.render_class_map(image, np.full((10, 10), 2), 3, TILING, opacity=1.0))
        expected = images.class_palette(3)[2]
    colours = panel.reshape(-1, 3)
    drawn = np.abs(colours - np.asarray(expected).astype(np.uint8)).max(axis=1) <= 0
    assert drawn.mean() > 0.9  # all but the region's name


@pytest.mark.parametrize("renderer", ["one class", "best class"])
def test_the_edge_no_cell_is_centred_on_shows_the_picture_as_it_is(renderer, rng):
    """8x8 crops at stride 4 centre their cells from pixel 4 on: the squares of one stride
    around them cover rows and columns 2..37 of a 40x40 picture, and the 2 pixels beyond
    (the map's georeference has no cell there) were painted with the edge cells' colour."""
    image = rng.uniform(0, 255, (3, 40, 40)).astype(np.float32)
    def drawn(field, cells):
        if renderer == "one class":
            return images.render_heatmap(image, np.full((cells, cells), 0.75), field, value_range=(0, 1), opacity=1)
        return images.render_class_map(image, np.full((cells, cells), 1), 2, field, opacity=1)

    picture = drawn(FIELD, 9)
    panel = panel_of(picture)
    factor = panel.shape[0] // 40
    inside = np.zeros((40, 40), bool)
    inside[2:38, 2:38] = True
    as_is = (panel[::factor, ::factor] == image.transpose(1, 2, 0).astype(np.uint8)).all(axis=2)
    np.testing.assert_array_equal(as_is, ~inside)
    assert images.EDGE_NOTE in picture.info["lines"]
    assert images.EDGE_NOTE not in drawn(TILING, 10).info["lines"]  # cells that tile the picture leave no edge
    assert images.outside_the_cells(FIELD, 9, 9, 40, 40)[0].nonzero()[0].tolist() == [0, 1, 38, 39]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("stored_values", [False, True])
def test_a_16_bit_array_is_read_as_a_16_bit_picture_of_it_is(tmp_path, rng, channels, stored_values):
    """An X-ray held as a uint16 array (from pydicom, tifffile, a camera's SDK) was refused
    by run_image and heatmap ("must hold uint8 pixels"), where the same pixels saved as a
    16-bit PNG were read: now the array reads as that file does, divided by 257 onto
    0..255, or as stored with `values: stored`; grey and colour alike."""
    grey = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "x.png")
    from_file = images.load_image(str(tmp_path / "x.png"), None, channels, stored_values=stored_values)
    for pixels in (grey, grey[:, :, None]):
        np.testing.assert_array_equal(images.as_picture(pixels, channels, stored_values), from_file)
    colour = rng.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    expected = colour.transpose(2, 0, 1).astype(np.float32) / (1 if stored_values else np.float32(257))
    got = images.as_picture(colour, 3, stored_values)
    np.testing.assert_allclose(got, expected, rtol=1e-6)



def test_a_torch_tensor_of_pixels_is_read_as_its_array_and_channels_first_is_named(rng):
    """`Model.run` took a torch tensor and `run_image` refused one ("not Tensor"); and a
    picture read channels first (torchvision's read_image) was refused without a word on
    why its shape was wrong."""
    torch = pytest.importorskip("torch")
    pixels = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    np.testing.assert_array_equal(images.as_picture(torch.from_numpy(pixels)), images.as_picture(pixels))
    with pytest.raises(GraphconvError, match=r"got shape \(3, 9, 11\); channels first .* \.transpose\(1, 2, 0\)"):
        images.as_picture(torch.from_numpy(pixels.transpose(2, 0, 1).copy()))
    with pytest.raises(GraphconvError, match="got float32; for float input already preprocessed, use Model.run"):
        images.as_picture(torch.from_numpy(pixels.astype(np.float32)))


@pytest.mark.parametrize("spec, in_range", [
    ({"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, (-2.118, 2.64)),  # ImageNet's
    ({"scale": 1 / 255}, (0.0, 1.0)),
    ({"mean": [104.0, 117.0, 123.0]}, None),  # Caffe's 0..255 less a mean: raw pixels are as likely
    ({"scale": 1 / 255, "values": "stored"}, None),  # a raster's own range
    (None, None)])
def test_raw_pixels_given_as_preprocessed_input_are_recognised(spec, in_range, rng):
    """Model.run and run --input take the network's input; raw 0..255 pixels given to a
    model with a preprocess mapped nonsense without a word."""
    pixels = rng.integers(0, 256, (1, 3, 40, 40)).astype(np.float32)
    found = images.unpreprocessed_pixels(pixels, spec)
    if in_range is None:
        assert found is None
    else:
        assert found[0] >= 250 and found[1:] == pytest.approx(in_range, abs=1e-3)
    if spec is not None:
        assert images.unpreprocessed_pixels(images.preprocess(pixels[0], spec)[None], spec) is None


def test_best_class_with_a_cut_calls_no_class_where_the_best_is_under_it():
    """A multi-label model's --heatmap top coloured each cell by its best finding, at 0.02
    as at 0.98: a cell calling no finding read as calling one."""
    scores = np.array([[[0.9, 0.2, np.nan], [0.4, 0.6, 0.5]],
                       [[0.1, 0.3, np.nan], [0.45, 0.7, 0.1]]], np.float32)
    assert images.best_class(scores).tolist() == [[0, 1, images.NOT_COMPUTED], [1, 1, 0]]
    assert images.best_class(scores, 0.5).tolist() == [[0, images.NO_CALL, images.NOT_COMPUTED],
                                                      [images.NO_CALL, 1, 0]]
