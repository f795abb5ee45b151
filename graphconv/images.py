"""Images in and out: loading photos as CHW arrays, the spec's preprocessing, heatmaps.

Pillow is an optional dependency (`pip install 'graphconv[images]'`): it reads, writes
and resizes images (`resize_planes`, so `--scales` needs it on arrays too); the rest of
graphconv works on arrays without it.

A picture is where a small file costs the most: a 450 KB PNG can claim 12000x12000
pixels and take 8 GB and minutes to decode. Pillow opens files lazily, so
`load_image` reads the size from the header, asks the memory budget
(`graphconv.memory.check_fits`) and only then decodes; every way Pillow fails on a
bad file (truncated, corrupt, not an image, a directory) becomes one GraphconvError
naming the file. Only regular files are opened (`arrays.open_regular_file`): a FIFO
would block and /dev/zero never ends.
"""
from __future__ import annotations

import functools
import numbers
import os
import struct
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from graphconv.arrays import open_regular_file
from graphconv.errors import GraphconvError, counted, shown
from graphconv.georef import is_zarr_path
from graphconv.memory import check_fits, format_size, memory_limit
from graphconv.receptive import Field

CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # channels an image can provide -> Pillow mode
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
DEEP_MODES = SIXTEEN_BIT_MODES | {"I", "F"}  # one channel, more than 8 bits: scaled, never clipped
COLOUR_16 = "RGB;16"  # `_read_pixels`' mode for a 16-bit colour PNG imagecodecs decodes: (H, W, 2|3|4) uint16
SIXTEEN_BIT_SCALE = 257.0  # 65535 / 255: 16-bit 0..65535 lands exactly on 0..255
FLOAT_SCALE = 255.0  # float images hold 0..1
SIXTEEN_BIT_MAX = 65535
# What Pillow's plugins raise on a truncated or corrupt file (found by fuzzing the
# formats Pillow writes): OSError (UnidentifiedImageError too), ValueError, SyntaxError;
# EOFError and struct.error from a few plugins' header parsers.
PILLOW_FAILURES = (OSError, ValueError, SyntaxError, EOFError, struct.error)
# `decode_bytes` counts at least MIN_BYTES_PER_SOURCE_PIXEL a pixel of the file, so
# no image of more than budget / MIN_BYTES_PER_SOURCE_PIXEL pixels can be decoded.
SOURCE_PIXEL_OVERHEAD = 8
MIN_BYTES_PER_SOURCE_PIXEL = 1 + SOURCE_PIXEL_OVERHEAD
BAND_BYTES = 1 << 20  # pixel_array's copies out of Pillow
MAX_PIXEL_BYTES = 16  # 4 channels of 4 bytes: the widest pixel Pillow's modes hold
BAND_ALLOWANCE = 4 * BAND_BYTES  # a band, its bytes twice over (tobytes), and its numpy copy
# the names of pictures, the images Pillow reads whole (--images takes them beside TIFFs and zarr arrays)
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# what the commands add to the error of an image smaller than the crop (`errors.SmallerThanTheCrop`):
# how reading it padded makes crops fit, and, for a picture, reading it resized
SMALLER_THAN_A_CROP_HINT = (": --pad-image reflect (or constant) pads its border, so that crops fit and the map "
                            "reaches its edges")
RESIZE_HINT = "; or --resize S brings a picture's shorter side to S pixels"


def _pil():
    from graphconv.errors import import_optional
    return import_optional("PIL.Image", "reading, writing and resizing images (--scales, --resize) needs Pillow: "
                                        "pip install 'graphconv[images]'")


def load_image(path: str, resize: int | Sequence[int] | None = None, channels: int = 3,
               stored_values: bool = False, keep_8_bits: bool = False) -> np.ndarray:
    """An image file as float32 (channels, H, W) with values 0..255, optionally resized
    to resize = (H, W), or to its shorter side resize = S (`resized_size`), by
    `resize_planes` (Pillow's antialiased bilinear, in float), ready for the spec's
    `preprocess`.

    `channels` is the network's input channel count: 1 gives greyscale (ITU-R 601
    luma for colour files), 3 RGB (grey files repeated), 4 RGBA (opaque where the file
    has no alpha); no other count can come from an image.

    Pixel values always land on 0..255, never clipped:
    - 8-bit files as they are;
    - 16-bit greyscale (Pillow modes I;16, I;16B, I;16L, I;16N, and I, the mode Pillow
      gives 16-bit PGMs and 32-bit integer TIFFs) divided by 257, so 65535 -> 255;
      an I image with values outside 0..65535 is refused, as it is not 16-bit data;
    - 32-bit float (mode F) is taken to hold 0..1 and multiplied by 255; values
      outside 0..1, NaN or infinity are refused;
    - 16-bit colour PNGs divided by 257 as well, decoded by imagecodecs (the `scale`
      extra); without it Pillow reduces them to 8 bits a channel (keeping the high
      byte), within 1 of value / 257, and `value_scaling` says so.
    The picture is the one viewers show: stored pixels turned as the file's EXIF (or
    TIFF) Orientation says (`upright`), so its map and heatmap are of that picture.
    With `stored_values` (the spec's `values: stored`) deep files keep the values they
    store, unscaled (NaN and infinity are still refused); a 16-bit colour PNG without
    imagecodecs, whose stored values Pillow does not give, is refused.

    With `keep_8_bits`, an 8-bit file not resized comes back as uint8, the same values
    in a quarter of the memory (a slide held whole while it is cut into tiles).

    Before decoding, the memory the load needs (`decode_bytes`) is checked against
    the budget; an over-budget file, a truncated or corrupt one, something that is not
    an image at all, and a bad `resize` or `channels` raise GraphconvError naming the file."""
    mode = _mode_for(channels, path)
    out_hw = _checked_resize(resized_size(resize, path), channels, path)
    image_mod = _pil()
    pixels, deep_mode = _read_pixels(image_mod, path, mode, channels, out_hw, stored_values)
    if deep_mode == COLOUR_16:
        picture = _colour_16_as_channels(pixels, channels, stored_values)
        del pixels
        return picture if out_hw is None else resize_planes(picture, *out_hw)
    if deep_mode is None:
        dtype = np.uint8 if keep_8_bits and out_hw is None else np.float32
        picture = np.ascontiguousarray(np.atleast_3d(pixels).transpose(2, 0, 1), dtype=dtype)
        del pixels
        return picture if out_hw is None else resize_planes(picture, *out_hw)
    plane = _deep_as_stored(pixels, deep_mode, path) if stored_values else _deep_to_255(pixels, deep_mode, path)
    del pixels  # the float plane replaces them, as decode_bytes counts
    if out_hw is not None:
        plane = resize_planes(plane, *out_hw)
    return _grey_as_channels(plane, channels)


def resize_planes(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """(..., H, W) float32 planes resized to (..., height, width): Pillow's bilinear on
    float planes (mode F: no rounding to 8 bits), antialiased when shrinking (its
    triangle filter widened by the factor, so every pixel counts), as torchvision's
    Resize (antialias on) and PIL-based training pipelines resize. The one resize
    graphconv uses: --resize, --scales and `classify`'s centre crop, so the same size
    from either gives the same scores."""
    image_mod = _pil()
    planes = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, *x.shape[-2:])
    out = np.empty((len(planes), height, width), np.float32)
    for index, plane in enumerate(planes):
        out[index] = pixel_array(image_mod.fromarray(plane).resize((width, height), image_mod.BILINEAR))
    return out.reshape(*x.shape[:-2], height, width)


def _sixteen_bit_colour(img) -> bool:
    """Whether Pillow decodes `img` from 16 bits a channel into its 8-bit RGB(A) (PNG's
    RGB;16B raw mode)."""
    return img.mode not in DEEP_MODES and any("16" in str(getattr(tile, "args", ""))
                                              for tile in getattr(img, "tile", ()) or ())


def _png_codec():
    """imagecodecs (the `scale` extra) where it can decode PNG, else None: it gives a
    16-bit colour PNG's 16 bits, which Pillow cuts to their high byte."""
    try:
        import imagecodecs
    except ImportError:
        return None
    return imagecodecs if imagecodecs.PNG.available else None


def _sixteen_bit_png(img) -> bool:
    """Whether `img` is a 16-bit colour PNG that imagecodecs is there to decode whole."""
    return img.format == "PNG" and _sixteen_bit_colour(img) and _png_codec() is not None


def _decode_sixteen_bit_png(fp, turn: int, path: str) -> np.ndarray:
    """A 16-bit colour PNG's stored pixels, (H, W, 2|3|4) uint16, upright (`stored_as_shown`)."""
    fp.seek(0)
    try:
        pixels = _png_codec().png_decode(fp.read())
    except Exception as err:  # imagecodecs' PngError, or a MemoryError of a lying header
        raise GraphconvError(f"cannot decode this 16-bit PNG: {shown(str(err), 200)}", file=path) from None
    if pixels.dtype != np.uint16 or pixels.ndim != 3:
        raise GraphconvError(f"a 16-bit colour PNG decoded as {pixels.dtype} {pixels.shape}: not what its header "
                             "says", file=path)
    return stored_as_shown(pixels, turn)


def stored_as_shown(pixels: np.ndarray, orientation_tag: int) -> np.ndarray:
    """(H, W, ...) stored pixels as an Orientation tag of 1..8 says to show them, as
    Pillow's `ImageOps.exif_transpose` turns an image (a view, not a copy)."""
    mirrored = {2: pixels[:, ::-1], 3: pixels[::-1, ::-1], 4: pixels[::-1]}
    swapped = pixels.swapaxes(0, 1)
    mirrored.update({5: swapped, 6: swapped[:, ::-1], 7: swapped[::-1, ::-1], 8: swapped[::-1]})
    return mirrored.get(orientation_tag, pixels)


LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as Pillow's RGB -> L


def _colour_16_as_channels(pixels: np.ndarray, channels: int, stored_values: bool) -> np.ndarray:
    """(H, W, 2|3|4) 16-bit grey+alpha, RGB or RGBA as (channels, H, W) float32, divided
    by 257 onto 0..255 (as stored with `stored_values`), converted as Pillow converts 8-bit
    files (`load_image`): luma for 1 channel, alpha left out for 3, opaque alpha added."""
    scale = 1.0 if stored_values else 1.0 / SIXTEEN_BIT_SCALE
    colour = pixels.shape[2] >= 3
    alpha = pixels[..., -1] if pixels.shape[2] in (2, 4) else None
    out = np.empty((channels, *pixels.shape[:2]), np.float32)
    if channels == 1:
        if colour:
            out[0] = sum(np.float32(weight) * pixels[..., band] for band, weight in enumerate(LUMA))
        else:
            out[0] = pixels[..., 0]
    else:
        for band in range(3):
            out[band] = pixels[..., band if colour else 0]
    if channels == 4:
        out[3] = SIXTEEN_BIT_MAX if alpha is None else alpha
    out *= np.float32(scale)
    return out


def _read_pixels(image_mod, path: str, mode: str, channels: int,
                 out_hw: tuple[int, int] | None, stored_values: bool = False) -> tuple[np.ndarray, str | None]:
    """Decode within the budget: 8-bit images as `mode`, upright (`upright`), resized,
    with None; deep ones upright as they are, with their Pillow mode. Pillow's image is
    released on return."""
    refuse_camera_raw(path)
    with open_regular_file(path, "image", not_found="image not found") as fp, _pillow_errors(image_mod, path):
        image_mod.MAX_IMAGE_PIXELS = None  # any header may be read: the next line judges its size
        with image_mod.open(fp) as img:
            sixteen_bit_png = _sixteen_bit_png(img)  # before decoding, which forgets the raw mode
            _check_decode_fits(img, channels, out_hw, path, COLOUR_16 if sixteen_bit_png else img.mode)
            if sixteen_bit_png:
                return _decode_sixteen_bit_png(fp, orientation(img), path), COLOUR_16
            if stored_values and _sixteen_bit_colour(img):
                raise GraphconvError("16-bit colour: Pillow reads it as 8 bits, so its stored values are lost "
                                     "(`values: stored`); pip install imagecodecs, which reads all 16, or save "
                                     "it as a TIFF, which is read as stored", file=path)
            _decode(image_mod, img)
            white_top = _miniswhite_top(img, path)
            img = upright(img)
            if img.mode in DEEP_MODES:
                pixels = pixel_array(img)
                return (pixels if white_top is None else white_top - pixels), img.mode
            return pixel_array(_converted(image_mod, img, mode, out_hw)), None


TIFF_PHOTOMETRIC, TIFF_BITS, MINISWHITE = 262, 258, 0  # a TIFF's tags, and its photometric of inverted grey


def _miniswhite_top(img, path: str):
    """For a deep TIFF stored MINISWHITE (inverted grey: 0 is white), the value its
    samples are inverted from (2**bits - 1), else None. Pillow inverts 1- and 8-bit ones
    itself but gives 16-bit ones as stored, so their map was of the negative, and not
    the one the tiled reader (`sources._as_shown`) makes of the same file."""
    tags = getattr(img, "tag_v2", None)
    if img.format != "TIFF" or img.mode not in DEEP_MODES or tags is None or tags.get(TIFF_PHOTOMETRIC) != MINISWHITE:
        return None
    if img.mode not in SIXTEEN_BIT_MODES:
        raise GraphconvError(f"a MINISWHITE (inverted grey) TIFF of Pillow mode {img.mode}: graphconv inverts "
                             "unsigned integer ones of up to 16 bits; save it as MINISBLACK", file=path)
    bits = tags.get(TIFF_BITS, 16)
    bits = bits[0] if isinstance(bits, tuple) else bits
    return np.uint16((1 << int(bits)) - 1)


EXIF_ORIENTATION = 0x0112  # EXIF's and TIFF's Orientation tag: how to turn the stored pixels to show them
TURNED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # those that swap width and height (a phone's portrait: 6)


def orientation(img) -> int:
    """The Orientation the file states (EXIF in a JPEG, PNG or WebP; the TIFF tag in a
    TIFF), 1 (as stored) where it states none or a value outside 1..8. Read from the
    header: Pillow's PNG `getexif` decodes the whole image to look for an eXIf chunk
    after the pixels, before the memory check may judge its size, so a PNG's is taken
    from the chunk before them (where Pillow and cameras write it); after decoding,
    one after them counts too."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        value = img.getexif().get(EXIF_ORIENTATION, 1)
    except PILLOW_FAILURES:  # a corrupt EXIF block: shown as stored, as viewers do
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(img):
    """`img` as every viewer shows it: its stored pixels turned and mirrored as its
    Orientation says (Pillow's `ImageOps.exif_transpose`, all 8 orientations). A phone
    stores a portrait photo landscape with Orientation 6; mapped as stored, the map, its
    heatmap and its cells' places would be of a picture lying on its side."""
    if orientation(img) == 1:
        return img
    from PIL import ImageOps
    return ImageOps.exif_transpose(img)


def upright_size(img) -> tuple[int, int]:
    """(height, width) of `img` as shown upright, from its header (nothing decoded).
    Pillow's TIFF reader gives a TIFF's size upright already (and turns its pixels as
    it decodes them); other formats give the stored size."""
    width, height = img.size
    turned = orientation(img) in TURNED_ORIENTATIONS and img.format != "TIFF"
    return (width, height) if turned else (height, width)


def pixel_array(img) -> np.ndarray:
    """A Pillow image's pixels as a new numpy array, copied a band of rows at a time.
    `np.asarray(img)` goes through `img.tobytes()`, which holds the pixels twice over
    (encoded chunks, then their join) beside the image: a band at a time, that costs
    BAND_BYTES instead of twice the image."""
    width, height = img.size
    rows = max(1, BAND_BYTES // (MAX_PIXEL_BYTES * width))
    first = np.asarray(img.crop((0, 0, width, min(rows, height))))
    pixels = np.empty((height, *first.shape[1:]), first.dtype)
    pixels[:len(first)] = first
    for top in range(len(first), height, rows):
        pixels[top:top + rows] = np.asarray(img.crop((0, top, width, min(top + rows, height))))
    return pixels


def decode_bytes(size_hw: tuple[int, int], mode: str, channels: int,
                 resize: tuple[int, int] | None = None, turned: bool = False) -> int:
    """An upper estimate of what `load_image` holds at once for an image of `size_hw`
    pixels in Pillow `mode`, summing what is alive at some point rather than following
    each step (measured: 1.3 to 3.6x what a load holds, the most for 1-channel loads).

    Per pixel of the file: Pillow's decoded image (1 to 4 bytes) and SOURCE_PIXEL_OVERHEAD
    more, for the 8-bit converted copy (4 bytes) or, for deep images, the array numpy
    copies out of Pillow (up to 4) and its float32 plane (4). Per pixel of the result:
    a resized image or plane (4), the bytes numpy reads from Pillow (one a channel) and
    the float32 array itself (4 a channel). When resizing (in float, `resize_planes`),
    the same again for the picture at its full size, which counts a float plane
    Pillow's copy of one channel, and Pillow's intermediate image (its horizontal pass:
    the new width by the old height, 4 bytes a pixel). When
    `turned` (an image stored in another orientation, `upright`), the turned copy of
    Pillow's image beside the decoded one. And BAND_ALLOWANCE for `pixel_array`'s copying."""
    height, width = size_hw
    source = height * width
    out = resize[0] * resize[1] if resize else source
    intermediate = 4 * resize[1] * height + _output_bytes(source, channels) if resize else 0
    copy = source * _pillow_pixel_bytes(mode) if turned else 0
    return (source * (_pillow_pixel_bytes(mode) + SOURCE_PIXEL_OVERHEAD) + _output_bytes(out, channels)
            + intermediate + copy + BAND_ALLOWANCE)


def _output_bytes(pixels: int, channels: int) -> int:
    return pixels * (4 + 5 * channels)


def _pillow_pixel_bytes(mode: str) -> int:
    """Bytes per pixel of Pillow's in-memory image (it stores 2 and 3 bands in 4 bytes), or
    of imagecodecs' decoded 16-bit colour PNG (up to 4 bands of 2 bytes)."""
    if mode == COLOUR_16:
        return 8
    if mode in ("1", "L", "P"):
        return 1
    if mode in SIXTEEN_BIT_MODES:
        return 2
    return 4


def _mode_for(channels, path: str) -> str:
    if not isinstance(channels, numbers.Integral) or isinstance(channels, bool) or channels < 1:
        raise GraphconvError(f"a network with {shown(channels)} input channels cannot take an image: "
                             f"images provide 1 (greyscale), 3 (RGB) or 4 (RGBA)", file=path)
    if channels not in CHANNEL_MODES:
        raise GraphconvError(_no_picture_for(channels, path), file=path)
    return CHANNEL_MODES[channels]


def _no_picture_for(channels: int, path: str) -> str:
    """Why a network of `channels` bands (a multispectral scene's 12) cannot be fed the
    picture at `path`: what is wrong with the file first, where something is (random
    bytes named .tif were told the network "cannot take an image", as if no raster
    could feed it), else that pictures hold 1, 3 or 4 bands and rasters any number."""
    from graphconv.sources import is_tiff

    rasters = (f"a network of {channels} input channels takes a raster of {channels} bands (a TIFF or a zarr "
               "array), not a picture (grey, RGB or RGBA)")
    if path == "<image>" or not os.path.isfile(path):
        return (f"{rasters}; from Python, graphconv.sources.open_source(path, {channels}, model.preprocess) "
                "reads such a raster and run_tiled maps it")
    if is_tiff(path):
        from graphconv.sources import open_source
        try:
            open_source(path, channels, None)
        except GraphconvError as err:  # what is wrong with the file (its bands, its bytes) comes first
            return err.message
        return (f"a raster, which graphconv run --image reads band by band, as from Python "
                f"graphconv.sources.open_source(path, {channels}, model.preprocess) does for run_tiled; run_image, "
                "classify and heatmap read pictures (grey, RGB or RGBA)")
    bands = picture_bands(path)
    return _unidentified(path) if bands is None else f"{rasters}: it holds {counted(bands, 'band')}"


def resized_size(resize, image: str | tuple[int, int]):
    """`resize` as (H, W) for `image` (a path, or its (H, W)): as given, or for one side S
    (an int or a sequence of one: `run --resize S`) the size whose shorter side is S, the
    aspect kept (`scales.scaled_size`, as --scales resizes and torchvision's Resize(S)),
    a file's size from its header. Anything else is left for `_checked_resize` to refuse."""
    side = resize[0] if isinstance(resize, Sequence) and not isinstance(resize, str) and len(resize) == 1 else resize
    if not isinstance(side, (int, np.integer)) or isinstance(side, bool):
        return resize
    path = image if isinstance(image, str) else None
    if side < 1:
        raise GraphconvError(f"resize to a shorter side of {side}: it must be at least 1 pixel", file=path)
    from graphconv.scales import scaled_size
    return scaled_size(*(image_size(image) if path else image), int(side))


def _checked_resize(resize, channels: int, path: str) -> tuple[int, int] | None:
    """(H, W) of at least one pixel each, whose result alone fits the budget; None for none."""
    if resize is None:
        return None
    try:
        height, width = (int(v) for v in resize)
        exact = all(int(v) == v and not isinstance(v, bool) for v in resize)
    except (TypeError, ValueError, OverflowError):  # not two numbers; NaN; infinity
        exact = False
    if not exact:
        raise GraphconvError(f"resize takes a height and a width in pixels, or the shorter side's, got "
                             f"{shown(resize)}", file=path)
    if height < 1 or width < 1:
        raise GraphconvError(f"resize to {height}x{width}: height and width must be at least 1 pixel",
                             file=path)
    check_fits(_output_bytes(height * width, channels), f"an image resized to {height}x{width}", file=path)
    return height, width


def _check_decode_fits(img, channels: int, out_hw: tuple[int, int] | None, path: str, mode: str) -> None:
    width, height = img.size
    if width < 1 or height < 1:
        raise GraphconvError(f"the image has no pixels ({height}x{width})", file=path)
    what = f"decoding a {height}x{width} image"
    if out_hw is not None:
        what += f" resized to {out_hw[0]}x{out_hw[1]}"
    turned = orientation(img) != 1
    check_fits(decode_bytes((height, width), mode, channels, out_hw, turned), what, file=path)


def _decode(image_mod, img) -> None:
    """Decode, with Pillow's decompression-bomb limit set from the budget. Opening ran
    without it so that `_check_decode_fits` could judge the header's size in a message
    naming it (Pillow's names only a pixel count); while loading it guards the formats
    whose size can change then (icons that pick their largest image, frames of
    another size), which the header check could not see."""
    image_mod.MAX_IMAGE_PIXELS = max(1, memory_limit() // MIN_BYTES_PER_SOURCE_PIXEL)
    img.load()


@contextmanager
def _pillow_errors(image_mod, path: str) -> Iterator[None]:
    """Turn whatever Pillow raises on a bad file into one GraphconvError naming it, and
    leave Pillow's global decompression-bomb limit (and the warnings filter) as found.
    (Files that are missing, unreadable, folders or devices never reach Pillow.)"""
    saved_limit = image_mod.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", image_mod.DecompressionBombWarning)
            _leave_exif_damage_unsaid()
            yield
    except image_mod.UnidentifiedImageError:
        raise GraphconvError(_unidentified(path), file=path) from None
    except (image_mod.DecompressionBombError, image_mod.DecompressionBombWarning) as err:
        raise GraphconvError(f"refused as a possible decompression bomb under the memory limit of "
                             f"{format_size(memory_limit())} (Pillow: {shown(str(err), 120)})",
                             file=path) from None
    except MemoryError:
        raise GraphconvError("ran out of memory decoding the image: the machine has less free than "
                             "the memory limit allows (set a lower --memory-limit)", file=path) from None
    except PILLOW_FAILURES as err:
        raise GraphconvError(f"cannot read image: truncated or corrupt? "
                             f"({type(err).__name__}: {shown(str(err))})", file=path) from None
    finally:
        image_mod.MAX_IMAGE_PIXELS = saved_limit


def _leave_exif_damage_unsaid() -> None:
    """Within a `warnings.catch_warnings()`: Pillow's "Corrupt EXIF data" UserWarning,
    which it gave at each open of a photo with a damaged EXIF block (three times a photo,
    naming none, on stderr), left out; the orientation is read as viewers read it."""
    warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning)


HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")  # an ftyp box's brands
CAMERA_RAW_SUFFIXES = (".nef", ".nrw", ".cr2", ".cr3", ".crw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf",
                       ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".erf", ".mrw", ".kdc", ".dcr", ".dng")


def _unidentified(path: str) -> str:
    """What to say of a file Pillow does not recognise: that it is empty (a 0-byte file,
    an interrupted copy or download, is no image of an unknown format), a phone's HEIC
    photo (with the conversion that makes it one), or else that Pillow cannot read it."""
    try:
        with open(path, "rb") as fp:
            head = fp.read(16)
    except OSError:
        head = None
    if head == b"":
        return "is empty (0 bytes), not an image"
    if head is not None and head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return ("a HEIC/HEIF photo (an iPhone's own format), which Pillow does not read: convert it to JPEG first "
                "(macOS: sips -s format jpeg IN.heic --out OUT.jpg; elsewhere: heif-convert IN.heic OUT.jpg)")
    return "not an image file Pillow can read"


def refuse_camera_raw(path: str) -> None:
    """A camera's raw file is refused by its name, before it is opened: many (NEF, ARW,
    CR2, DNG) are TIFFs whose first image is a small preview, which Pillow or the TIFF
    reader would read and map."""
    import os
    if os.path.splitext(path)[1].lower() in CAMERA_RAW_SUFFIXES:
        raise GraphconvError("a camera's raw file: graphconv reads its sensor data no more than Pillow does (a "
                             "raw TIFF's first image is a small preview); develop it into a JPEG, PNG or 16-bit TIFF "
                             "first (darktable-cli, dcraw, rawpy)", file=path)


def _converted(image_mod, img, mode: str, out_hw: tuple[int, int] | None):
    """An 8-bit image in `mode` (resized afterwards, in float: `resize_planes`)."""
    return img.convert(mode)


def _deep_to_255(raw: np.ndarray, mode: str, path: str) -> np.ndarray:
    """One deep channel (16-bit, 32-bit integer or float) as float32 on 0..255, scaled
    in place (one float32 plane, as `decode_bytes` counts)."""
    if mode not in SIXTEEN_BIT_MODES:
        _check_deep_range(raw, mode, path)
    plane = raw.astype(np.float32)
    if mode == "F":
        plane *= np.float32(FLOAT_SCALE)
    else:
        plane /= np.float32(SIXTEEN_BIT_SCALE)
    return plane


def _deep_as_stored(raw: np.ndarray, mode: str, path: str) -> np.ndarray:
    """One deep channel as float32 with the values it stores."""
    plane = raw.astype(np.float32)
    if mode == "F" and not np.isfinite(plane).all():
        raise GraphconvError("float pixels that are NaN or infinite", file=path)
    return plane


def _check_deep_range(raw: np.ndarray, mode: str, path: str) -> None:
    """Refuse values the scale does not map onto 0..255, rather than clip them silently."""
    low, high = raw.min(), raw.max()  # NaN propagates into both
    if mode == "I" and (low < 0 or high > SIXTEEN_BIT_MAX):
        raise GraphconvError(f"32-bit integer pixels from {low} to {high}: integer images are read "
                             f"as 16-bit, 0..{SIXTEEN_BIT_MAX}", file=path)
    if mode == "F" and not (np.isfinite(low) and np.isfinite(high)):
        raise GraphconvError("float pixels that are NaN or infinite", file=path)
    if mode == "F" and (low < 0 or high > 1):
        raise GraphconvError(f"float pixels from {low:.6g} to {high:.6g}: float images are read as 0..1",
                             file=path)


def _grey_as_channels(plane: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) grey on 0..255 as (channels, H, W): repeated for RGB, with opaque alpha for RGBA."""
    planes = [plane] * min(channels, 3)
    if channels == 4:
        planes.append(np.full_like(plane, 255.0))
    return np.ascontiguousarray(np.stack(planes), dtype=np.float32)


def stores_values(spec: dict | None) -> bool:
    """Whether the spec's preprocess takes pixel values as stored (`values: stored`)
    rather than on 0..255."""
    return bool(spec) and spec.get("values") == "stored"


def preprocess(image: np.ndarray, spec: dict | None, *, in_place: bool = False) -> np.ndarray:
    """(image * scale - mean) / std per channel, as the spec's `preprocess` declares.
    A mean or std whose length is not the image's channel count is an error: numpy
    would broadcast a 3-number mean over a 1-channel image into 3 channels.
    `in_place`: a float32 `image` the caller owns is normalised where it is, the same
    numbers without a copy for each step (a slide's tile of 2128x2128 RGB took 54 MB a
    copy, three more at once than the memory budget held)."""
    if not spec:
        return image
    for key in ("mean", "std"):
        if key in spec and len(spec[key]) != image.shape[0]:
            raise GraphconvError(f"preprocess {key} lists {len(spec[key])} numbers for an image of "
                                 f"{counted(image.shape[0], 'channel')}")
    if image.dtype == np.float32:
        return _normalised_float32(image if in_place else image.copy(), spec)
    x = image * float(spec.get("scale", 1.0))
    if "mean" in spec:
        x = x - np.asarray(spec["mean"], np.float32)[:, None, None]
    if "std" in spec:
        x = x / np.asarray(spec["std"], np.float32)[:, None, None]
    return x.astype(np.float32)


def _normalised_float32(x: np.ndarray, spec: dict) -> np.ndarray:
    """`preprocess` of a float32 array, in place: float32 steps as numpy takes them on a
    copy (a Python float scale and float32 means act in float32), so the numbers are the
    same."""
    x *= float(spec.get("scale", 1.0))
    if "mean" in spec:
        x -= np.asarray(spec["mean"], np.float32)[:, None, None]
    if "std" in spec:
        x /= np.asarray(spec["std"], np.float32)[:, None, None]
    return x


def same_pixels(x: np.ndarray, given: dict | None, wanted: dict | None) -> np.ndarray:
    """`x` (..., C, H, W), a network input preprocess `given` made from some pixels, as
    preprocess `wanted` makes those same pixels: what a model whose pass moved the
    normalisation into its first conv (and dropped its `preprocess`) must be checked on
    against the classifier, which still normalises outside."""
    if (given or {}) == (wanted or {}):
        return x

    def channelwise(spec: dict | None, key: str, default: float) -> np.ndarray:
        return np.asarray((spec or {}).get(key, default), np.float64).reshape(-1, 1, 1)

    pixels = (x * channelwise(given, "std", 1.0) + channelwise(given, "mean", 0.0)) / channelwise(given, "scale", 1.0)
    return ((pixels * channelwise(wanted, "scale", 1.0) - channelwise(wanted, "mean", 0.0))
            / channelwise(wanted, "std", 1.0)).astype(np.float32)


def preprocess_scale_note(spec: dict | None, deep: str | None = None) -> str | None:
    """What to say of a preprocess whose mean and std are on another scale than the
    pixels it gets (0..255 times `scale`): torchvision's mean 0.485 and std 0.229 on
    0..255 pixels (an import without --scale 0.00392157), or Caffe's mean 104 on pixels
    scaled to 0..1, or a reflectance model's scale 0.0001 and mean 0.08 imported without
    --values stored. Each runs, and maps nonsense. None when they agree, or the pixels
    are taken as stored (their range is the file's). `deep`: how an image of more than 8
    bits was brought onto 0..255 (`value_scaling`), which makes stored values the likely
    reading of a mean beyond the scaled range."""
    if not spec or spec.get("values") == "stored":
        return None
    scale = float(spec.get("scale", 1.0))
    top = 255.0 * abs(scale)  # a negative scale inverts (dark ink on white paper -> high values): same range
    stated = [abs(v) for v in spec.get("mean", ()) if v != 0] + [abs(v) for v in spec.get("std", ()) if v != 1]
    if not stated:
        return None
    if top >= 25 and max(stated) <= 1:
        return (f"note: the preprocess mean and std are for pixels in 0..1, but pixels arrive in 0..{top:g} "
                f"(scale {scale:g}): did you mean scale 0.00392157 (1/255; import --scale)?")
    if top <= 2 and max(stated) >= 2 * top:
        head = f"note: the preprocess mean or std reaches {max(stated):g}, but its scale makes pixels 0..{top:g}"
        if deep:
            return (f"{head}, and the image's {deep}: are they for the values the file stores (reflectances)? Then feed those: "
                    "graphconv import --values stored, or `values: stored` in the spec's preprocess")
        return (f"{head}: are they for pixels in 0..255 (then leave out the scale), or for the values a raster of "
                "more than 8 bits stores (16-bit reflectances: then import --values stored)?")
    return None


def unpreprocessed_pixels(x: np.ndarray, spec: dict | None) -> tuple[float, float, float] | None:
    """(its largest value, low, high) where `x`, given as a network's preprocessed input
    (N, C, H, W), looks like the pixels before the preprocess: its values reach 20 and
    beyond four times low..high, the range `spec` makes of pixels on 0..255 (0..1 for
    scale 1/255, about -2.1..2.6 for ImageNet's mean and std). Such a run maps nonsense
    without a word. None without a preprocess that narrows the range, with stored
    values (their range is the file's), or for values in range; a sixteenth of the
    pixels is looked at (raw pixels reach 255 anywhere)."""
    if not spec or spec.get("values") == "stored" or x.ndim != 4 or not x.size:
        return None
    ends = preprocess(np.tile(np.array([0.0, 255.0], np.float32), (x.shape[1], 1, 1)), spec)
    top = float(np.max(x[:, :, ::4, ::4]))
    low, high = float(ends.min()), float(ends.max())
    return (top, low, high) if top >= 20 and top > 4 * max(abs(low), abs(high)) else None


EIGHT_BIT_MODES = frozenset({"L", "LA", "P", "RGB", "RGBA"})  # Pillow's modes of 8 bits a channel
SHALLOW_TOP = 0.1  # 8-bit pixels taken as stored that a spec's scale brings under this are read as nearly black


def eight_bit_picture(path: str) -> bool:
    """Whether a picture Pillow decodes (not a TIFF or zarr, `sources.eight_bit`) holds 8
    bits a channel as the file stores it (not a 16-bit colour PNG Pillow cuts to 8)."""
    return _picture_header(path, lambda img: img.mode in EIGHT_BIT_MODES and not _sixteen_bit_colour(img), False)


def shallow_pixels_note(spec: dict | None, whose: str = "the image's") -> str | None:
    """What to say of 8-bit pixels taken as stored (`values: stored`) by a spec whose scale
    is for values far deeper (a 16-bit X-ray model's 1/65535, a reflectance model's
    0.0001): they go in as 0..0.004, nearly black, and the map is nearly flat, silently
    (an 8-bit copy of a 16-bit X-ray). None where the spec's scale suits 8-bit values."""
    if not stores_values(spec):
        return None
    scale = float(spec.get("scale", 1.0))
    top = 255.0 * abs(scale)
    if top >= SHALLOW_TOP:
        return None
    return (f"note: {whose} pixels are 8-bit (0..255), but the spec's preprocess takes the values a file stores "
            f"(`values: stored`) times {scale:.6g}, a scale for values up to about {1 / abs(scale):.0f}: they go in "
            f"as 0..{top:.2g}, nearly black, and the map means little; give the image at the depth the model was "
            "trained on (the 16-bit file, not an 8-bit copy)")


def value_scaling(path: str) -> str | None:
    """How a picture Pillow decodes (`load_image`) of more than 8 bits a channel is
    brought onto 0..255 (`deep_scaling`): a 16-bit PNG divided by 257; None
    for 8-bit pictures (the quick start's digits) and for TIFFs and zarr arrays, which
    `sources.value_scaling` says of."""
    return _picture_header(path, lambda img: _sixteen_bit_colour_scaling(img) or deep_scaling(img.mode), None)


def _sixteen_bit_colour_scaling(img) -> str | None:
    """How a 16-bit colour picture's pixels came onto 0..255: divided by 257 (a PNG that
    imagecodecs decodes), or cut to their high byte by Pillow; None for other pictures."""
    if not _sixteen_bit_colour(img):
        return None
    if _sixteen_bit_png(img):
        return deep_scaling("uint16")
    how = "; pip install imagecodecs reads a PNG's 16 bits" if img.format == "PNG" else ""
    return f"16-bit colour pixels were cut to 8 bits by Pillow (their high byte, within 1 of value / 257{how})"


def deep_scaling(kind: str) -> str | None:
    """"16-bit pixels were divided by 257 onto 0..255" for a Pillow mode or a numpy
    dtype's name of more than 8 bits that is scaled onto 0..255 (not `values: stored`);
    None for 8 bits."""
    if kind in SIXTEEN_BIT_MODES or kind == "uint16":
        return "16-bit pixels were divided by 257 onto 0..255"
    if kind == "I":
        return "32-bit integer pixels were divided by 257 onto 0..255 (read as 16-bit)"
    if kind == "F" or kind.startswith("float"):
        return f"{'float' if kind == 'F' else kind} pixels were read as 0..1 and multiplied by 255"
    return None


def cell_index_map(field: Field, rows: int, cols: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """For each image row/column, the score-map row/column whose `field` (`Model.cell_area`)
    is centred nearest; a pixel half way between two centres goes to the later cell, so
    every cell but the first and last gets `stride` pixels (rounding half to even gave an odd field on an
    even stride cells of 1 and 3 pixels in turn)."""
    def nearest(n_cells, size, stride, offset, length):
        centre = offset + (size - 1) / 2
        return np.clip(np.floor((np.arange(length) - centre) / stride + 0.5), 0, n_cells - 1).astype(int)

    return (nearest(rows, field.size[0], field.stride[0], field.offset[0], height),
            nearest(cols, field.size[1], field.stride[1], field.offset[1], width))


def outside_the_cells(field: Field, rows: int, cols: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """For each image row/column, whether it lies outside the squares of one stride around
    the cells' centres (in pixel-area coordinates, as the map's georeference has them):
    the image's edge, (crop - stride) / 2 pixels of a classifier's, where no cell is
    centred; a heatmap leaves it as it is rather than stretch the edge cells over it."""
    def outside(n_cells, size, stride, offset, length):
        first = offset + size / 2 - stride / 2
        centres = np.arange(length) + 0.5
        return (centres < first) | (centres >= first + n_cells * stride)

    return (outside(rows, field.size[0], field.stride[0], field.offset[0], height),
            outside(cols, field.size[1], field.stride[1], field.offset[1], width))


# ---- heatmaps ---------------------------------------------------------------------------------
#
# A heatmap is the picture the network saw with one class's score map blended over it
# (each pixel coloured by the cell centred nearest: a classifier's cell at its crop's
# centre, `Model.cell_area`, where the map's georeference puts it), a title naming the
# class, and a colour bar with the real values its colours stand for. The colour scale
# is honest: fixed 0..1 for probabilities (a softmax or sigmoid output), so a map
# with nothing in it looks empty; otherwise, or with range "map", the map's own min..max,
# and the bar says so and shows the numbers. `render_top_map` draws the best class of
# every cell instead, with a legend and each region named.

HEATMAP_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP", "GIF")
"""The formats --heatmap-out may name: RGB, and able to carry HEATMAP_MARK (a BMP holds no
text, and one graphconv drew could never be told from a user's picture to replace it)."""
HEATMAP_MIN_SIDE = 320  # smaller pictures are enlarged (whole pixels) so the text fits
BAR_WIDTH = 14
TICK_LENGTH = 4  # the tick's pixels right of the colour bar
TICK_GAP = 6  # between the tick and its number: nearer, the tick reads as a minus sign
MARGIN = 6
BLEND = 0.5  # the map's share of each pixel (--heatmap-opacity)
ONE_SCORE_TOP = ("gives one score per cell (a sigmoid's probability?), so every cell's best class is that one "
                 "class, whatever its score")  # why "top" of such a map is refused: it drew every cell "tumour"
TOP_BLEND = 0.45
LEGEND_MOST = 30  # classes a best-class legend lists; the rest are summed on one line


def heatmap_format(path: str) -> str:
    """The Pillow format `path`'s extension names (.png, .jpg, ...), or a GraphconvError."""
    image_mod = _pil()
    suffix = Path(path).suffix.lower()
    fmt = image_mod.registered_extensions().get(suffix)
    if fmt not in HEATMAP_FORMATS or fmt not in image_mod.SAVE:
        known = sorted(ext for ext, f in image_mod.registered_extensions().items()
                       if f in HEATMAP_FORMATS and f in image_mod.SAVE)
        raise GraphconvError(f"cannot tell the image format from {shown(suffix or 'no extension')}; "
                             f"name the heatmap {', '.join(known)}", file=path)
    return fmt


def outputs_probabilities(graph) -> bool:
    """Whether the network's output values are probabilities (0..1): it ends in a
    softmax or sigmoid, possibly followed by layers that only move values around."""
    return output_activation(graph) is not None


def output_activation(graph) -> str | None:
    """"softmax" or "sigmoid" where the network ends in one (possibly followed by layers
    that only move values around), else None: its scores are raw (logits)."""
    node = graph.output
    while node.opdef.keeps_values and len(node.inputs) == 1:
        node = node.inputs[0]
    return node.op if node.opdef.gives_probabilities else None


def class_colours(classes: Sequence[int]) -> np.ndarray:
    """(len(classes), 3) colours of these classes of a model (its indices), each the
    colour its index has in `class_palette`: a class keeps its colour in a map of
    some classes (--classes) and in the model's full map alike."""
    classes = [int(c) for c in classes]
    return class_palette(max(classes) + 1)[classes] if classes else np.zeros((0, 3))


def heatmap_range(scores: np.ndarray, how: str | tuple[float, float], probabilities: bool,
                  extremes: tuple[float, float] | None = None) -> tuple[float, float, str]:
    """(low, high, what the colours mean) for a score map: `how` is "auto" (0..1 for
    probabilities, else "map"), "map" (this map's min..max: `extremes` where given, for
    a map read a block at a time) or a fixed (low, high)."""
    if isinstance(how, tuple):
        low, high = how
        beyond = _clipped(extremes or finite_range(scores), low, high)
        return low, high, f"fixed scale {_number(low)}..{_number(high)}{beyond}"
    if how == "auto" and probabilities:
        return 0.0, 1.0, "probability, fixed scale 0..1"
    if how not in ("auto", "map"):
        raise GraphconvError(f"a heatmap range is 'auto', 'map' or LOW,HIGH, got {shown(how)}")
    low, high = extremes or finite_range(scores) or (0.0, 1.0)
    what = "probability" if probabilities else "score"
    if low == high:
        return low, high, f"{what}: every cell {_number(low)}"
    return low, high, f"{what}, scale stretched to this map's min..max"


def _clipped(extremes: tuple[float, float] | None, low: float, high: float) -> str:
    """What a fixed scale does not show of a map whose finite values span `extremes`: cells
    beyond it take the colour of its end, so the picture alone would not tell."""
    if extremes is None:
        return ""
    beyond = [f"below {_number(low)} drawn as {_number(low)}"] if extremes[0] < low else []
    beyond += [f"above {_number(high)} drawn as {_number(high)}"] if extremes[1] > high else []
    return f" (values {' and '.join(beyond)})" if beyond else ""


def finite_range(scores: np.ndarray) -> tuple[float, float] | None:
    """The least and greatest finite score; None where none is finite (no cell computed)."""
    finite = scores[np.isfinite(scores)]
    return (float(finite.min()), float(finite.max())) if finite.size else None


@dataclass
class MapSample:
    """The cells of a map that a heatmap's pixels show, read from a map too large to hold
    whole (a stride-1 slide's: billions of cells, drawn over a picture of at most
    `sources.THUMBNAIL_SIDE` a side): `values[i, j]` (what is drawn) is cell (cells[0][i],
    cells[1][j]); the picture's pixel (y, x) shows values[at[0][y], at[1][x]]. Of the
    whole map: `extremes`, the finite range of the class drawn (None: none is finite),
    or `counts`, how many cells each class is best in; and how many cells were
    `not_computed` (--skip-background's) and how many call `no_call` class (`best_class`'s
    NO_CALL); `map_hw`, the whole map's rows and columns."""
    values: np.ndarray
    cells: tuple[np.ndarray, np.ndarray]
    at: tuple[np.ndarray, np.ndarray]
    map_hw: tuple[int, int]
    extremes: tuple[float, float] | None = None
    counts: np.ndarray | None = None
    not_computed: int = 0
    no_call: int = 0


HEATMAP_MARK = "graphconv heatmap"  # a heatmap's Software (PNG text, EXIF or TIFF tag), or comment: not a photo
HEATMAP_SETTINGS = "graphconv heatmap settings"  # a PNG heatmap's text: how it was drawn (`drawn_with`)
EXIF_SOFTWARE = 0x0131


def save_picture(picture, path: str, fmt: str | None = None, settings: str | None = None) -> None:
    """Save a heatmap marked as graphconv's (`is_graphconv_heatmap`), so a later run may
    replace it where it must never replace a user's picture of the same name, and
    `--images` over a folder does not take it for an image to map. A PNG also keeps
    `settings`, what drew it (`drawn_with`)."""
    from PIL import PngImagePlugin

    fmt = fmt or heatmap_format(path)
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", HEATMAP_MARK)
        if settings is not None:
            info.add_text(HEATMAP_SETTINGS, settings)
        picture.save(path, format=fmt, pnginfo=info)
    elif fmt == "GIF":
        picture.save(path, format=fmt, comment=HEATMAP_MARK.encode())
    else:  # JPEG, WebP, TIFF: the EXIF (TIFF's own) Software tag; a JPEG's comment too, as earlier ones had
        exif = _pil().Exif()
        exif[EXIF_SOFTWARE] = HEATMAP_MARK
        extra = {"comment": HEATMAP_MARK.encode()} if fmt == "JPEG" else {}
        picture.save(path, format=fmt, exif=exif if fmt == "TIFF" else exif.tobytes(), **extra)


def is_graphconv_heatmap(path: str | Path) -> bool:
    """Whether `path` is a picture `save_picture` wrote (read from its header alone)."""
    Image = _pil()  # without Pillow, an --images batch of photos is one error, not a traceback
    try:
        with warnings.catch_warnings(), open_regular_file(path, "picture") as fp:  # a pipe would block Pillow
            _leave_exif_damage_unsaid()
            with Image.open(fp) as picture:
                return HEATMAP_MARK in (picture.info.get("Software"),
                                        picture.info.get("comment", b"").decode("latin-1"),
                                        picture.getexif().get(EXIF_SOFTWARE))
    except Exception:  # not a picture Pillow reads: not a heatmap either
        return False


def drawn_with(path: str | Path) -> str | None:
    """The settings a PNG heatmap was drawn with (`save_picture`), read from its header;
    None where it has none (an older graphconv's, or not a PNG) or cannot be read."""
    try:
        with warnings.catch_warnings(), _pil().open(path) as picture:
            return picture.info.get(HEATMAP_SETTINGS)
    except Exception:  # gone, or not a picture: nothing drew it as this run would
        return None


def save_heatmap(image: np.ndarray, scores: np.ndarray, field: Field, path: str, *,
                 title: str | None = None, value_range: tuple[float, float] | None = None,
                 scale_note: str | None = None, display_hw: tuple[int, int] | None = None,
                 fmt: str | None = None) -> None:
    """Write one class's score map (rows, cols) over the (channels, H, W) image (values
    0..255; grey repeated, alpha dropped), with `title`, a colour bar from
    `value_range` (default: the map's min..max) labelled with `scale_note`, as `fmt`
    (default: from the extension). `display_hw` is the image's size before the network's
    resize: the picture is shown with that aspect ratio, not stretched."""
    picture = render_heatmap(image, scores, field, title=title, value_range=value_range,
                             scale_note=scale_note, display_hw=display_hw)
    save_picture(picture, path, fmt)


def drawn_heatmap(model, picture: np.ndarray, field: Field, klass: int | str, *, one: np.ndarray | None = None,
                  best: np.ndarray | None = None, classes: Sequence[int] | None = None,
                  value_range: str | tuple[float, float] = "auto", opacity: float | None = None,
                  display_hw: tuple[int, int] | None = None, sample: MapSample | None = None):
    """`run --heatmap`'s picture of `model`'s map (named by its labels, coloured 0..1 where
    it gives probabilities) over `picture`, and what it shows, 'class 7 (probability, fixed
    scale 0..1; its values run 0..0.93)': class `klass`'s (rows, cols) scores `one`, or
    (`klass` "top") `best`, the best class of each cell among `classes` (--classes); of
    a map too large to read whole, the cells `sample` says. `value_range`: "auto", "map"
    or (low, high), as --heatmap-range; `opacity` as --heatmap-opacity."""
    labels = model.graph.meta.get("labels")
    if klass == "top":
        title = class_map_title(classes, labels)
        drawn = render_class_map(picture, best, model.output_channels, field, labels, display_hw=display_hw,
                                 sample=sample, title=title, opacity=opacity or TOP_BLEND)
        return drawn, f"the {title}"
    extremes = sample.extremes if sample is not None else finite_range(one)
    low, high, scale_note = heatmap_range(one, value_range, outputs_probabilities(model.graph), extremes)
    what = heatmap_title(klass, labels)
    drawn = render_heatmap(picture, one, field, title=what, value_range=(low, high), scale_note=scale_note,
                           display_hw=display_hw, sample=sample, opacity=opacity or BLEND)
    values = f"its values run {extremes[0]:.3g}..{extremes[1]:.3g}" if extremes else "no cell computed"
    return drawn, f"{what} ({scale_note}; {values})"


def render_heatmap(image: np.ndarray, scores: np.ndarray, field: Field, *, title: str | None = None,
                   value_range: tuple[float, float] | None = None, scale_note: str | None = None,
                   display_hw: tuple[int, int] | None = None, sample: MapSample | None = None,
                   opacity: float = BLEND):
    """The heatmap as a Pillow RGB image (see `save_heatmap`), the map's colour `opacity`
    of each pixel; `scores` may be a `sample`'s values (the cells its pixels show, of a
    map too large to read whole)."""
    _pil()
    if value_range is None:
        low, high, auto_note = heatmap_range(scores, "map", False)
        scale_note = scale_note or auto_note
    else:
        low, high = value_range

    edge = _edge(field, scores, sample, image.shape[1:])

    def colours(rows: slice) -> tuple[np.ndarray, np.ndarray]:
        values = _per_pixel(scores, field, image.shape[1:], sample, rows)
        return _colours(_level(values, low, high)), np.isnan(values) | edge[0][rows, None] | edge[1][None, :]

    panel = _panel(_blended(image, colours, opacity), display_hw)
    bar = _colours(np.linspace(1, 0, max(panel.size[1], 96))[:, None])
    ticks = [(0.0, high), (0.5, (low + high) / 2), (1.0, low)] if high > low else [(0.5, low)]
    lines = [title or "score map"]
    if scale_note:
        lines.append(scale_note)
    missing = sample.not_computed if sample is not None else int(np.count_nonzero(np.isnan(scores)))
    if missing:
        lines.append(f"{_cells(missing)} not computed show the picture as it is")
    return _compose(panel, lines + _edge_note(edge), bar=(bar, ticks))


def _cells(count: int) -> str:
    return f"{count} cell{'' if count == 1 else 's'}"


NOT_COMPUTED = -1  # the best class of a cell with no score (a tile `--skip-background` did not compute)


NO_CALL = -2  # the best class of a cell calling none (a sigmoid's findings, none at 0.5): drawn clear


def best_class(scores: np.ndarray, cut: float | None = None) -> np.ndarray:
    """The index of the best class of each cell of a (K, rows, cols) score map (NaN never
    wins), NOT_COMPUTED where no score is finite. With `cut` (`call_cut`: a model whose
    classes are findings of their own), NO_CALL where the best score is under it: a
    cell calling no finding was coloured by its best one, at 0.02 as at 0.98."""
    filled = np.where(np.isfinite(scores), scores, -np.inf)
    best = np.argmax(filled, axis=0)
    if cut is not None:
        best = np.where(np.take_along_axis(filled, best[None], axis=0)[0] >= cut, best, NO_CALL)
    return np.where(np.isfinite(scores).any(axis=0), best, NOT_COMPUTED)


def call_cut(graph, classes: int) -> float | None:
    """0.5 for a model of several classes ending in a sigmoid, each a finding of its own
    (an X-ray's findings, a satellite tile's labels: several may hold, or none), whose
    best class is an answer only where its probability is at least one half; None for
    a model that picks one class per cell."""
    return 0.5 if classes > 1 and output_activation(graph) == "sigmoid" else None


def argmax_cut(graph) -> float | None:
    """The probability under which a `--reduce argmax` cell's best class is not called:
    0.5 for a model ending in a sigmoid (a one-score model's, a multi-label model's
    findings), None for one that picks a class per cell."""
    return 0.5 if output_activation(graph) == "sigmoid" else None


def render_top_map(image: np.ndarray, scores: np.ndarray, field: Field, labels: list[str] | None = None,
                   *, display_hw: tuple[int, int] | None = None, title: str | None = None,
                   opacity: float = TOP_BLEND):
    """The best class of every cell of a (K, rows, cols) score map, as a Pillow RGB image:
    each class a colour blended over the picture, every region of one class named at
    its middle, and a legend of the classes shown (largest area first)."""
    return render_class_map(image, best_class(scores), scores.shape[0], field, labels, display_hw=display_hw,
                            title=title, opacity=opacity)


def render_class_map(image: np.ndarray, best: np.ndarray, classes: int, field: Field,
                     labels: list[str] | None = None, *, display_hw: tuple[int, int] | None = None,
                     title: str | None = None, sample: MapSample | None = None, opacity: float = TOP_BLEND):
    """`render_top_map` of a (rows, cols) map of class indices below `classes` (or a
    `sample`'s, of a tiled run's map: the cells its pixels show, made a block of rows at
    a time, and the whole map's counts); cells NOT_COMPUTED or NO_CALL leave the picture
    as it is."""
    _pil()
    palette = class_palette(classes)

    edge = _edge(field, best, sample, image.shape[1:])

    def colours(rows: slice) -> tuple[np.ndarray, np.ndarray]:
        cells = _per_pixel(best, field, image.shape[1:], sample, rows)
        return (palette.astype(np.float32)[cells].transpose(2, 0, 1),
                (cells < 0) | edge[0][rows, None] | edge[1][None, :])

    panel = _panel(_blended(image, colours, opacity), display_hw)
    sy, sx = panel.size[1] / image.shape[1], panel.size[0] / image.shape[2]
    from PIL import ImageDraw
    counts = sample.counts if sample is not None else np.bincount(best[best >= 0].ravel(), minlength=classes)
    missing = sample.not_computed if sample is not None else int(np.count_nonzero(best == NOT_COMPUTED))
    no_call = sample.no_call if sample is not None else int(np.count_nonzero(best == NO_CALL))
    legend = _class_legend(counts, palette, labels, missing, no_call)
    draw = ImageDraw.Draw(panel)
    lines = [title or "best class of each cell", *_edge_note(edge)]
    size = text_size(panel.size)
    font, _ = text_font([*lines, *(text for _, text in legend)], size)  # as `_compose`'s, which says what it lacks
    stroke = max(2, size // 7)
    taken: list[tuple[float, float, float, float]] = []
    labelled = _regions(best, min_cells=max(1, int(np.count_nonzero(best >= 0) * LABELLED_SHARE)))
    for klass, (row, col) in labelled:  # largest first; a label that would overlap one is left out
        if klass < 0:
            continue
        if sample is not None:
            row, col = int(sample.cells[0][row]), int(sample.cells[1][col])
        top, left, bottom, right = field.box(row, col)
        x, y = (left + right) / 2 * sx, (top + bottom) / 2 * sy
        text = _class_name(klass, labels)
        box = draw.textbbox((x, y), text, font=font, anchor="mm", stroke_width=stroke)
        x, y = x + _inside(box[0], box[2], panel.size[0]), y + _inside(box[1], box[3], panel.size[1])
        box = draw.textbbox((x, y), text, font=font, anchor="mm", stroke_width=stroke)  # at the edge: not cut
        if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in taken):
            continue
        taken.append(box)
        draw.text((x, y), text, fill="white", font=font, anchor="mm", stroke_width=stroke, stroke_fill="black")
    return _compose(panel, lines, legend=legend)


def _class_legend(counts: np.ndarray, palette: np.ndarray, labels: list[str] | None,
                  not_computed: int, no_call: int = 0) -> list[tuple[tuple[int, int, int] | None, str]]:
    """(swatch colour, text) for each class best in some cell, most cells first: at most
    LEGEND_MOST, the rest on one line (a 1000-class map's full legend stood 17,000 px
    tall); then the cells calling no class and those not computed, which have no colour
    (None: no swatch)."""
    shown = [int(k) for k in np.argsort(-counts, kind="stable") if counts[k]]
    listed = shown if len(shown) <= LEGEND_MOST else shown[:LEGEND_MOST - 1]
    legend = [(tuple(int(v) for v in palette[k]), f"{_class_name(k, labels)} ({_cells(int(counts[k]))})")
              for k in listed]
    if rest := shown[len(listed):]:
        legend.append((None, f"{len(rest)} more classes ({_cells(int(counts[rest].sum()))})"))
    if no_call:
        legend.append((None, f"no class at 0.5: the picture as it is ({_cells(no_call)})"))
    if not_computed:
        legend.append((None, f"not computed: the picture as it is ({_cells(not_computed)})"))
    return legend


def _inside(start: float, end: float, size: int) -> float:
    """How far to move [start, end) to lie within [0, size) (its start, where it is wider)."""
    return -start if start < 0 or end - start > size else min(0.0, size - end)


def class_palette(classes: int) -> np.ndarray:
    """(classes, 3) distinct colours, 0..255: twenty well-separated ones (ten, then their
    light versions), then hues spaced by the golden angle."""
    base = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                     (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
                     (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
                     (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229)],
                    np.float64)
    if classes <= len(base):
        return base[:classes]
    hues = (np.arange(classes - len(base)) * 0.618033988749895) % 1.0
    extra = np.stack([_hue_rgb(h) for h in hues]) * 255
    return np.concatenate([base, extra])


def _hue_rgb(hue: float) -> np.ndarray:
    """A saturated colour of `hue` (0..1), each channel 0..1."""
    return np.clip(np.abs((hue * 6 + np.array([0, 4, 2])) % 6 - 3) - 1, 0, 1) * 0.8 + 0.1


LABELLED_SHARE = 0.001  # of the computed cells: a region smaller is coloured but not named (133 of a slide's 200
# names were of one-cell tumour specks, and the picture read as tumour everywhere)


def _regions(best: np.ndarray, min_cells: int = 1, most: int = 200) -> list[tuple[int, tuple[int, int]]]:
    """(class, cell nearest the region's centroid; ties: the first in row order) for each
    4-connected region of cells with one best class, largest first (at most `most`;
    equal sizes in the order their first cells come)."""
    rows, cols = best.shape
    if not best.size:
        return []
    from graphconv.ops.regions import label_regions  # numba, imported only when a class map is drawn

    labels = label_regions(np.ascontiguousarray(best, np.int64)).ravel()
    sizes = np.bincount(labels)
    row_of, col_of = np.divmod(np.arange(labels.size), cols)
    centre_row, centre_col = np.bincount(labels, row_of) / sizes, np.bincount(labels, col_of) / sizes
    distance = (row_of - centre_row[labels]) ** 2 + (col_of - centre_col[labels]) ** 2
    order = np.lexsort((distance, labels))  # by region, nearest its centroid first, then row order
    nearest = order[np.concatenate([[0], np.cumsum(sizes)[:-1]])]
    kept = [region for region in np.argsort(-sizes, kind="stable") if sizes[region] >= min_cells][:most]
    return [(int(best.flat[nearest[region]]), (int(row_of[nearest[region]]), int(col_of[nearest[region]])))
            for region in kept]


def _class_name(klass: int, labels: list[str] | None) -> str:
    return labels[klass] if labels and klass < len(labels) else str(klass)


def class_map_title(classes: Sequence[int] | None, labels: list[str] | None) -> str:
    """The best-class picture's title, naming the classes it chose among where --classes
    kept some (every cell then shows one of them, however small its score)."""
    if not classes:
        return "best class of each cell"
    return "best class of each cell among " + ", ".join(_class_name(k, labels) for k in classes)


def heatmap_title(klass: int, labels: list[str] | None) -> str:
    """The heatmap's title: 'class 7', or 'class 10: background' when the label says
    more than the number."""
    label = labels[klass] if labels and klass < len(labels) else None
    return f"class {klass}" + (f": {label}" if label and label != str(klass) else "")


def _edge(field: Field, cells: np.ndarray, sample: MapSample | None, image_hw) -> tuple[np.ndarray, np.ndarray]:
    """`outside_the_cells` of the map drawn (a `sample`'s whole map's)."""
    rows, cols = sample.map_hw if sample is not None else cells.shape
    return outside_the_cells(field, rows, cols, *image_hw)


EDGE_NOTE = "its edge, where no cell is centred, shows the picture as it is"


def _edge_note(edge: tuple[np.ndarray, np.ndarray]) -> list[str]:
    return [EDGE_NOTE] if edge[0].any() or edge[1].any() else []


def _per_pixel(cells: np.ndarray, field: Field, image_hw, sample: MapSample | None = None,
               rows: slice = slice(None)) -> np.ndarray:
    """A (rows, cols) map spread over the image's `rows`: each pixel takes the cell whose
    cell is centred nearest (`cells` is a `sample`'s values, where given: it says which)."""
    height, width = image_hw
    ys, xs = sample.at if sample is not None else cell_index_map(field, cells.shape[0], cells.shape[1], height, width)
    return cells[ys[rows, None], xs[None, :]]


BLEND_ROWS = 128  # rows of the picture blended at a time


def _blended(image: np.ndarray, colours: Callable[[slice], tuple[np.ndarray, np.ndarray]],
             share: float) -> np.ndarray:
    """The (C, H, W) image (grey, RGB or RGBA on 0..255) as (H, W, 3) uint8 RGB, `share`
    of each pixel's colour the one `colours(rows)` gives ((3, h, W) on 0..255, and where
    to leave the picture as it is), BLEND_ROWS rows at a time: blended whole in float, a
    2048x2048 heatmap took 330-420 MB over a run's own memory, a band 6 MB."""
    height, width = image.shape[1:]
    out = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, BLEND_ROWS):
        rows = slice(top, min(height, top + BLEND_ROWS))
        picture = _as_rgb(image[:, rows])
        over, kept = colours(rows)
        blended = np.where(kept, picture, (1 - share) * picture + share * over)
        out[rows] = np.clip(blended, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return out


def _level(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Values as 0..1 on the low..high scale (clipped; NaN at the bottom; a scale of one
    value, a constant map's, in the middle, where its one tick is)."""
    span = high - low
    level = (values.astype(np.float64) - low) / span if span > 0 else np.full(values.shape, 0.5)
    return np.nan_to_num(np.clip(level, 0, 1), nan=0.0).astype(np.float32)


VIRIDIS = np.array([
    [68, 1, 84], [71, 13, 96], [72, 24, 106], [72, 35, 116], [71, 45, 123], [69, 55, 129], [66, 64, 134],
    [62, 73, 137], [59, 82, 139], [55, 91, 141], [51, 99, 141], [47, 107, 142], [44, 114, 142], [41, 122, 142],
    [38, 130, 142], [35, 137, 142], [33, 145, 140], [31, 151, 139], [31, 159, 136], [33, 166, 133], [39, 173, 129],
    [49, 181, 123], [61, 188, 116], [76, 194, 108], [92, 200, 99], [110, 206, 88], [129, 211, 77], [149, 216, 64],
    [170, 220, 50], [192, 223, 37], [213, 226, 26], [234, 229, 26], [253, 231, 37]], np.float32)
"""matplotlib's viridis at 33 even steps (its entries 0, 8, ..., 255), linearly between
(at most 1.7 of 255 off its 256 entries): dark violet -> blue -> green -> yellow, its
lightness rising all the way, so an order of values is seen by colour-blind readers and
in a grey print alike (a blue -> green -> red rainbow had neither: its middle was its
lightest, and 0.7..1.0 one olive under deuteranopia)."""


def _colours(level: np.ndarray) -> np.ndarray:
    """(3, ...) RGB 0..255 for levels 0..1 (VIRIDIS)."""
    position = np.clip(level.astype(np.float32), 0, 1) * np.float32(len(VIRIDIS) - 1)
    below = np.minimum(position.astype(np.intp), len(VIRIDIS) - 2)
    share = (position - below)[..., None]
    rgb = VIRIDIS[below] * (1 - share) + VIRIDIS[below + 1] * share
    return np.moveaxis(rgb, -1, 0)


def _panel(rgb: np.ndarray, display_hw: tuple[int, int] | None):
    """The (H, W, 3) uint8 picture as a Pillow image, with the aspect ratio of `display_hw`
    (the image before the network's resize) and enlarged when small, so text fits beside it."""
    image_mod = _pil()
    panel = image_mod.fromarray(rgb)
    height, width = rgb.shape[:2]
    if display_hw is not None and display_hw[0] * width != display_hw[1] * height:
        width = max(1, round(height * display_hw[1] / display_hw[0]))
    factor = max(1, -(-HEATMAP_MIN_SIDE // max(height, width)))
    size = (width * factor, height * factor)
    if size != panel.size:
        smooth = (width, height) != panel.size  # an aspect correction: bilinear; enlarging only: blocks
        panel = panel.resize(size, image_mod.BILINEAR if smooth else image_mod.NEAREST)
    return panel


FONT_SIZE = 13
TEXT_SCALE_SIDE = 1000  # a picture longer than this a side gets text as many times larger


def text_size(panel_size: tuple[int, int]) -> int:
    """The font size for a heatmap of a `panel_size` picture: 13 px, larger on pictures over
    TEXT_SCALE_SIDE a side, so the text keeps its share of a heatmap viewed fitted to a
    screen (13 px on an 8000 px picture is a speck there)."""
    return max(FONT_SIZE, round(FONT_SIZE * max(panel_size) / TEXT_SCALE_SIDE))


FALLBACK_FONTS = (
    "DejaVuSans.ttf", "NotoSans-Regular.ttf",  # Linux: Latin with accents, Greek, Cyrillic
    "NotoSansCJK-Regular.ttc", "NotoSansCJKjp-Regular.otf", "NotoSansCJKsc-Regular.otf",  # Chinese, Japanese, Korean
    "wqy-microhei.ttc", "wqy-zenhei.ttc", "DroidSansFallbackFull.ttf",
    "Arial Unicode.ttf", "Hiragino Sans GB.ttc", "AppleSDGothicNeo.ttc",  # macOS
    "arial.ttf", "msyh.ttc", "msgothic.ttc", "malgun.ttf",  # Windows
)
"""Fonts tried, in order, for text that Pillow's own font (Latin letters without accents
only) cannot draw: class labels in German, Greek, Japanese... Pillow looks each name up
in the system's font folders."""


def text_font(texts: Sequence[str], size: int = FONT_SIZE) -> tuple[object, str]:
    """The font to draw `texts` in: Pillow's own where it has every character, else the
    first of FALLBACK_FONTS installed that has them all, else the one that lacks the
    fewest; and the characters it lacks ("" mostly), which show as boxes
    (`heatmap_font_note` says so)."""
    characters = sorted(set("".join(texts)) - set(" \t\n"))
    best = _default_font(size)
    lacking = [c for c in characters if not _draws(best, c)]
    for name in FALLBACK_FONTS if lacking else ():
        font = _truetype(name, size)
        missing = [c for c in characters if not _draws(font, c)] if font is not None else lacking
        if len(missing) < len(lacking):
            best, lacking = font, missing
        if not lacking:
            break
    return best, "".join(lacking)


def heatmap_font_note(picture) -> str | None:
    """What to say of a heatmap whose text has characters no installed font draws."""
    undrawn = picture.info.get("undrawn", "")
    if not undrawn:
        return None
    return (f"no font found on this machine draws {undrawn[:20]!r}{'...' if len(undrawn) > 20 else ''}: the "
            f"heatmap shows boxes for them (install one that does, e.g. Noto Sans CJK for Chinese or Japanese, and "
            f"draw it again)")


@functools.lru_cache(maxsize=None)
def _default_font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


@functools.lru_cache(maxsize=None)
def _truetype(name: str, size: int):
    from PIL import ImageFont
    try:
        return ImageFont.truetype(name, size)
    except OSError:  # not installed
        return None


@functools.lru_cache(maxsize=65536)
def _draws(font, character: str) -> bool:
    """Whether `font` has a glyph for `character`: it draws something else than the box
    it draws for a character no font has (a private-use code point). A font without
    FreeType (Pillow's bitmap one) draws ASCII only."""
    if not hasattr(font, "getmetrics"):
        return character.isascii()
    return _glyph(font, character) != _glyph(font, "\U000F0000")


def _glyph(font, character: str) -> tuple:
    mask = font.getmask(character)
    return mask.size, np.asarray(mask, dtype=np.uint8).tobytes() if mask.size[0] * mask.size[1] else b""


def _number(value: float) -> str:
    return f"{value:.3g}"


def _compose(panel, lines: list[str], bar=None, legend=None):
    """Title lines above the panel; the colour bar ((3, H, 1) array, [(position 0..1, value)]) or the
    legend ([(rgb or None for no swatch, text)]) to its right; white background; text,
    margins and bar as much larger as `text_size` makes the text. Its info: "lines", the
    title's; "legend", its lines; "undrawn", the characters no font found draws (`text_font`)."""
    image_mod = _pil()
    from PIL import ImageDraw
    size = text_size(panel.size)
    font, undrawn = text_font([*lines, *(text for _, text in legend or ())], size)
    margin, bar_width, tick_length, tick_gap = (round(v * size / FONT_SIZE)
                                                for v in (MARGIN, BAR_WIDTH, TICK_LENGTH, TICK_GAP))
    measure = ImageDraw.Draw(image_mod.new("RGB", (1, 1)))

    def text_width(text):
        left, _, right, _ = measure.textbbox((0, 0), text, font=font)
        return right - left

    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (11, 2)
    line_h = ascent + descent + 2
    title_h = margin + line_h * len(lines) + margin
    side_w, side_h = 0, 0
    if bar is not None:
        colours, ticks = bar
        colours = colours.repeat(bar_width, 2)
        side_w = bar_width + tick_length + tick_gap + max(text_width(_number(v)) for _, v in ticks)
        side_h = colours.shape[1]
    if legend:
        side_w = line_h + 4 + max(text_width(t) for _, t in legend)
        side_h = line_h * len(legend)
    width = max(margin + panel.size[0] + (margin + side_w if side_w else 0) + margin,
                margin + max(text_width(t) for t in lines) + margin)
    height = title_h + max(panel.size[1], side_h) + margin
    canvas = image_mod.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for index, text in enumerate(lines):
        draw.text((margin, margin + index * line_h), text, fill="black", font=font)
    canvas.paste(panel, (margin, title_h))
    canvas.info["panel_box"] = (margin, title_h, margin + panel.size[0], title_h + panel.size[1])
    canvas.info["undrawn"] = undrawn
    canvas.info["lines"] = lines
    canvas.info["legend"] = [text for _, text in legend or ()]
    x = margin + panel.size[0] + margin
    if bar is not None:
        strip = image_mod.fromarray(colours.clip(0, 255).astype(np.uint8).transpose(1, 2, 0))
        canvas.paste(strip, (x, title_h))
        for position, value in ticks:
            y = title_h + round(position * (strip.size[1] - 1))
            draw.line([(x + bar_width, y), (x + bar_width + tick_length - 1, y)], fill="black",
                      width=max(1, size // FONT_SIZE))
            draw.text((x + bar_width + tick_length + tick_gap, y), _number(value), fill="black", font=font,
                      anchor="lm")
    for index, (rgb, text) in enumerate(legend or ()):
        y = title_h + index * line_h
        if rgb is not None:
            draw.rectangle([x, y + 1, x + line_h - 3, y + line_h - 2], fill=rgb, outline="black")
        draw.text((x + line_h + 2, y), text, fill="black", font=font)
    return canvas


STRETCH_PERCENTILES = (2.0, 98.0)  # what GIS viewers map onto black and white by default


def stretched(picture: np.ndarray) -> np.ndarray:
    """Each band's 2nd..98th percentile onto 0..255 (clipped): raw reflectances or
    elevations as a picture. NaN (no data) becomes 0, black."""
    out = np.empty_like(picture)
    for band, values in enumerate(picture):
        finite = values[np.isfinite(values)]
        low, high = np.percentile(finite, STRETCH_PERCENTILES) if finite.size else (0.0, 1.0)
        out[band] = np.clip((values - low) * (255.0 / max(high - low, 1e-12)), 0.0, 255.0)
    return np.nan_to_num(out, nan=0.0)  # no data shows black


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """(3, H, W) on 0..255 from a grey, RGB or RGBA (C, H, W) image."""
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    return np.clip(rgb, 0, 255).astype(np.float32, copy=False)


def image_size(path: str) -> tuple[int, int]:
    """(height, width) of an image file as shown upright (`upright_size`), from its header
    (nothing decoded)."""
    image_mod = _pil()
    with open_regular_file(path, "image", not_found="image not found") as fp, _pillow_errors(image_mod, path):
        with image_mod.open(fp) as img:
            return upright_size(img)


def frame_count(path: str) -> int:
    """How many frames a picture holds (an animated GIF, PNG or WebP: more than 1; Pillow
    decodes the first), from its header; 1 for anything Pillow does not open."""
    return _picture_header(path, lambda img: int(getattr(img, "n_frames", 1)), 1)


def turned_upright(path: str) -> bool:
    """Whether the CLI maps this picture turned from its stored pixels (`upright`: an EXIF
    Orientation other than 1), which the run counts in a note. TIFFs read tile by tile
    are mapped as stored (`cluster.stored_orientation_note`), so False for them."""
    return _picture_header(path, lambda img: orientation(img) != 1, False)


def _picture_header(path: str, fact, default):
    """`fact(img)` of a picture Pillow opens (its header only), or `default` for a TIFF
    or zarr (read tile by tile, not as a picture) and for anything Pillow cannot open
    (its own read reports that)."""
    from graphconv.sources import is_tiff

    if is_tiff(path) or is_zarr_path(path):
        return default
    try:
        with warnings.catch_warnings():
            _leave_exif_damage_unsaid()
            with _pil().open(path) as img:
                return fact(img)
    except Exception:  # whatever is wrong with it, its own read reports
        return default


def as_picture(image, channels: int = 3, stored_values: bool = False,
               resize: int | Sequence[int] | None = None) -> np.ndarray:
    """What users have, as `load_image` returns it: float32 (channels, H, W) on 0..255,
    resized as `load_image` resizes where `resize` is given (H W, or the shorter side S).

    `image` is a path (loaded by `load_image`, within the memory budget), a Pillow image
    (any mode `load_image` reads; converted to the channels the network takes), or a
    uint8 numpy array of pixels: (H, W) grey or (H, W, C) with C = 1, 3 or 4, as Pillow,
    imageio and OpenCV (after cv2.cvtColor(..., COLOR_BGR2RGB)) give them; or such a
    uint16 array (an X-ray, a microscope's camera), read as a 16-bit file of it is:
    divided by 257 onto 0..255, or as stored with `stored_values`; or anything numpy
    reads as such an array (a CPU torch tensor of pixels). Arrays of other types are
    refused: a float array is ambiguous (0..1 or 0..255? already preprocessed?); give it
    to `Model.run` preprocessed instead."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(os.fspath(image), resize, channels=channels, stored_values=stored_values)
    _mode_for(channels, "<image>")
    if isinstance(image, np.ndarray) or hasattr(image, "__array__"):
        picture = _array_picture(np.asarray(image), channels, stored_values)
    elif isinstance(image, _pil().Image):
        picture = _pil_picture(_pil(), upright(image), channels, stored_values)
    else:
        raise GraphconvError(f"an image is a file path, a Pillow image or a uint8 or uint16 (H, W, C) array, "
                             f"not {type(image).__name__}")
    if resize is None:
        return picture
    return resize_planes(picture, *_checked_resize(resized_size(resize, picture.shape[1:]), channels, "<image>"))


def _array_picture(pixels: np.ndarray, channels: int, stored_values: bool = False) -> np.ndarray:
    if pixels.dtype not in (np.uint8, np.uint16):
        raise GraphconvError(f"an image array must hold uint8 or uint16 pixels (H, W) or (H, W, C), got "
                             f"{pixels.dtype}; for float input already preprocessed, use Model.run")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in CHANNEL_MODES or min(pixels.shape[:2]) < 1:
        channels_first = pixels.ndim == 3 and pixels.shape[0] in CHANNEL_MODES
        raise GraphconvError(f"an image array is (H, W) or (H, W, C) with C = 1, 3 or 4, got shape "
                             f"{tuple(pixels.shape)}" + ("; channels first (as torchvision reads pictures)? "
                                                         "give it as (H, W, C): .transpose(1, 2, 0)"
                                                         if channels_first else ""))
    if pixels.dtype == np.uint16 and pixels.shape[2] == 1:  # as a 16-bit PNG of it reads
        deep = _deep_as_stored if stored_values else _deep_to_255
        return _grey_as_channels(deep(pixels[:, :, 0], "I;16", "<image>"), channels)
    if pixels.dtype == np.uint16:
        return _colour_16_as_channels(pixels, channels, stored_values)
    if pixels.shape[2] == channels:
        return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)
    image_mod = _pil()  # another channel count: converted as a file of that mode would be
    return _pil_picture(image_mod, image_mod.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels),
                        channels)


def _pil_picture(image_mod, img, channels: int, stored_values: bool = False) -> np.ndarray:
    """A Pillow image as `load_image` reads a file of its mode (`stored_values`: deep
    pixels keep the values they store, as with the spec's `values: stored`)."""
    if img.mode in DEEP_MODES:
        deep = _deep_as_stored if stored_values else _deep_to_255
        plane = deep(pixel_array(img), img.mode, "<image>")
        return _grey_as_channels(plane, channels)
    pixels = pixel_array(img.convert(CHANNEL_MODES[channels]))
    return np.ascontiguousarray(np.atleast_3d(pixels).transpose(2, 0, 1), dtype=np.float32)


def picture_bands(path: str) -> int | None:
    """How many bands a picture Pillow decodes holds, from its header: 1 grey, 2 grey with
    alpha, 3 colour, 4 colour with alpha (a palette picture counts as colour, CMYK and
    other colour modes as the RGB Pillow converts them to); None for a TIFF or zarr (its
    source counts its bands) and anything Pillow cannot open. `channel_conversion` says
    from it what the network is fed."""
    return _picture_header(path, _bands_of_mode, None)


def _bands_of_mode(img) -> int:
    if img.mode in ("LA", "La"):
        return 2
    if img.mode in ("RGBA", "RGBa", "PA"):
        return 4
    return 1 if len(img.getbands()) == 1 and img.mode != "P" else 3


def channel_conversion(stored: int, channels: int, bands_flag: bool, alpha_is_nodata: bool = False,
                       fourth_is_alpha: bool = True) -> str | None:
    """What an image of `stored` bands (`picture_bands`: 1 grey, 2 grey and alpha, 3 RGB,
    4 RGBA) becomes for a network of `channels`, said where they differ: a grey model
    on an RGB slide was fed ITU-601 luma without a word, where the user may have wanted
    one band. `bands_flag`: whether --bands can pick a band of this image (TIFF, zarr),
    else the way to one band is a grey file. Completes "the image is ..."; None where
    nothing is converted (a grey model on a grey picture: the quick start's digits).
    `alpha_is_nodata`: the alpha is the image's no-data mask (a GeoTIFF's, `sources._alpha_plane`).
    `fourth_is_alpha` False: a 4th band the file does not call an alpha (a TIFF's
    ExtraSamples 0: RGB and near infrared), left out as such, not as transparency."""
    if stored == channels:
        return None
    if stored == 4 and not fourth_is_alpha and channels in (1, 3):
        return _fourth_band_left_out(channels, bands_flag)
    alpha = stored in (2, 4)
    colour = "RGBA" if stored == 4 else "RGB" if stored == 3 else "grey with alpha" if alpha else "grey"
    dropped = ", the alpha left out" if alpha and channels != 4 else ""
    if channels == 1 and stored >= 3:
        pick = ("give --bands N (1 red, 2 green, 3 blue)" if bands_flag
                else "save that band as a grey image (--bands picks bands of TIFF and zarr images)")
        return (f"{colour}: converted to grey for the 1-channel model, each pixel its luma 0.299 R + 0.587 G + "
                f"0.114 B (ITU-R 601, as Pillow's \"L\"){dropped}; to feed one band as it is instead, {pick}")
    if channels == 3 and stored <= 2:
        return f"{colour}: the grey goes into all three channels of the RGB model{dropped}"
    if channels == 3 and alpha_is_nodata:
        return ("RGBA: the alpha (4th band) is left out for the RGB model; it marks the no-data pixels, alpha 0 "
                "(as GDAL's mask)")
    if channels == 3:
        return ("RGBA: the alpha (4th band) is left out for the RGB model, which gets the colours stored under "
                "transparent pixels as they are (flatten the image onto your background first if that matters)")
    if channels == 4:
        grey = "the grey goes into R, G and B, and " if stored <= 2 else ""
        kept = "the image's own alpha is kept" if alpha else "alpha is 255 (opaque) everywhere"
        return f"{colour}: for the 4-channel (RGBA) model, {grey}{kept}"
    return f"{colour}: converted to grey for the 1-channel model{dropped}"  # grey with alpha


def _fourth_band_left_out(channels: int, bands_flag: bool) -> str:
    """`channel_conversion` of RGB and a 4th band that is no alpha (its TIFF's ExtraSamples
    says unspecified: a near-infrared band), which the note called "the alpha"."""
    picked = "--bands picks others (e.g. --bands 4,1,2)" if bands_flag else "save the bands to feed as an image"
    if channels == 3:
        return f"RGB and a 4th band (not an alpha: its meaning unstated): the 4th is left out for the RGB model; {picked}"
    return ("RGB and a 4th band (not an alpha: its meaning unstated): R, G and B converted to grey for the 1-channel "
            "model, each pixel its luma 0.299 R + 0.587 G + 0.114 B (ITU-R 601), the 4th left out; "
            + ("--bands N feeds one band as it is" if bands_flag else "save one band as a grey image to feed it"))
