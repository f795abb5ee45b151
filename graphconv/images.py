"""Images in and out: loading photos as CHW arrays, the spec's preprocessing, heatmaps.

Pillow is an optional dependency (`pip install 'graphconv[images]'`); everything else
in graphconv works on arrays without it.

A picture is where a small file costs the most: a 450 KB PNG can claim 12000x12000
pixels and take 8 GB and minutes to decode. Pillow opens files lazily, so
`load_image` reads the size from the header, asks the memory budget
(`graphconv.memory.check_fits`) and only then decodes; every way Pillow fails on a
bad file (truncated, corrupt, not an image, a directory) becomes one GraphconvError
naming the file. Only regular files are opened (`arrays.open_regular_file`): a FIFO
would block and /dev/zero never ends.
"""
from __future__ import annotations

import numbers
import struct
import warnings
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np

from graphconv.arrays import open_regular_file
from graphconv.errors import GraphconvError, shown
from graphconv.memory import check_fits, format_size, memory_limit
from graphconv.receptive import Field

CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # channels an image can provide -> Pillow mode
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
DEEP_MODES = SIXTEEN_BIT_MODES | {"I", "F"}  # one channel, more than 8 bits: scaled, never clipped
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


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise GraphconvError("reading and writing images needs Pillow: pip install 'graphconv[images]'") from None
    return Image


def load_image(path: str, resize: Sequence[int] | None = None, channels: int = 3) -> np.ndarray:
    """An image file as float32 (channels, H, W) with values 0..255, optionally resized
    to resize = (H, W) (bilinear), ready for the spec's `preprocess`.

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
    - 16-bit colour files: Pillow itself reduces them to 8 bits per channel (keeping
      the high byte), so they arrive on 0..255, within 1 of value / 257.

    Before decoding, the memory the load needs (`decode_bytes`) is checked against
    the budget; an over-budget file, a truncated or corrupt one, something that is not
    an image at all, and a bad `resize` or `channels` raise GraphconvError naming the file."""
    mode = _mode_for(channels, path)
    out_hw = _checked_resize(resize, channels, path)
    image_mod = _pil()
    pixels, deep_mode = _read_pixels(image_mod, path, mode, channels, out_hw)
    if deep_mode is None:
        return np.ascontiguousarray(np.atleast_3d(pixels).transpose(2, 0, 1), dtype=np.float32)
    plane = _deep_to_255(pixels, deep_mode, path)
    del pixels  # the float plane replaces them, as decode_bytes counts
    if out_hw is not None:
        plane = _resize_plane(image_mod, plane, out_hw)
    return _grey_as_channels(plane, channels)


def _read_pixels(image_mod, path: str, mode: str, channels: int,
                 out_hw: tuple[int, int] | None) -> tuple[np.ndarray, str | None]:
    """Decode within the budget: 8-bit images as `mode`, resized, with None; deep ones
    as they are, with their Pillow mode. Pillow's image is released on return."""
    with open_regular_file(path, "image", not_found="image not found") as fp, _pillow_errors(image_mod, path):
        image_mod.MAX_IMAGE_PIXELS = None  # any header may be read: the next line judges its size
        with image_mod.open(fp) as img:
            _check_decode_fits(img, channels, out_hw, path)
            _decode(image_mod, img)
            if img.mode in DEEP_MODES:
                return pixel_array(img), img.mode
            return pixel_array(_converted(image_mod, img, mode, out_hw)), None


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
                 resize: tuple[int, int] | None = None) -> int:
    """An upper estimate of what `load_image` holds at once for an image of `size_hw`
    pixels in Pillow `mode`, summing what is alive at some point rather than following
    each step (measured: 1.3 to 3.6x what a load holds, the most for 1-channel loads).

    Per pixel of the file: Pillow's decoded image (1 to 4 bytes) and SOURCE_PIXEL_OVERHEAD
    more, for the 8-bit converted copy (4 bytes) or, for deep images, the array numpy
    copies out of Pillow (up to 4) and its float32 plane (4). Per pixel of the result:
    a resized image or plane (4), the bytes numpy reads from Pillow (one a channel) and
    the float32 array itself (4 a channel). When resizing, Pillow's intermediate image
    (its horizontal pass: the new width by the old height, 4 bytes a pixel). And
    BAND_ALLOWANCE for `pixel_array`'s copying."""
    height, width = size_hw
    source = height * width
    out = resize[0] * resize[1] if resize else source
    intermediate = 4 * resize[1] * height if resize else 0
    return (source * (_pillow_pixel_bytes(mode) + SOURCE_PIXEL_OVERHEAD) + _output_bytes(out, channels)
            + intermediate + BAND_ALLOWANCE)


def _output_bytes(pixels: int, channels: int) -> int:
    return pixels * (4 + 5 * channels)


def _pillow_pixel_bytes(mode: str) -> int:
    """Bytes per pixel of Pillow's in-memory image (it stores 2 and 3 bands in 4 bytes)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode in SIXTEEN_BIT_MODES:
        return 2
    return 4


def _mode_for(channels, path: str) -> str:
    if not isinstance(channels, numbers.Integral) or isinstance(channels, bool) or channels not in CHANNEL_MODES:
        raise GraphconvError(f"a network with {shown(channels)} input channels cannot take an image: "
                             f"images provide 1 (greyscale), 3 (RGB) or 4 (RGBA)", file=path)
    return CHANNEL_MODES[channels]


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
        raise GraphconvError(f"resize takes a height and a width in pixels, got {shown(resize)}", file=path)
    if height < 1 or width < 1:
        raise GraphconvError(f"resize to {height}x{width}: height and width must be at least 1 pixel",
                             file=path)
    check_fits(_output_bytes(height * width, channels), f"an image resized to {height}x{width}", file=path)
    return height, width


def _check_decode_fits(img, channels: int, out_hw: tuple[int, int] | None, path: str) -> None:
    width, height = img.size
    if width < 1 or height < 1:
        raise GraphconvError(f"the image has no pixels ({height}x{width})", file=path)
    what = f"decoding a {height}x{width} image"
    if out_hw is not None:
        what += f" resized to {out_hw[0]}x{out_hw[1]}"
    check_fits(decode_bytes((height, width), img.mode, channels, out_hw), what, file=path)


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
            yield
    except image_mod.UnidentifiedImageError:
        raise GraphconvError("not an image file Pillow can read", file=path) from None
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


def _converted(image_mod, img, mode: str, out_hw: tuple[int, int] | None):
    """An 8-bit image in `mode`, resized (Pillow's bilinear, on 8 bits as before)."""
    img = img.convert(mode)
    if out_hw is not None:
        img = img.resize((out_hw[1], out_hw[0]), image_mod.BILINEAR)
    return img


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


def _resize_plane(image_mod, plane: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of one float32 plane, in Pillow's float mode (no 8-bit rounding)."""
    resized = image_mod.fromarray(plane).resize((out_hw[1], out_hw[0]), image_mod.BILINEAR)
    return pixel_array(resized)


def _grey_as_channels(plane: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) grey on 0..255 as (channels, H, W): repeated for RGB, with opaque alpha for RGBA."""
    planes = [plane] * min(channels, 3)
    if channels == 4:
        planes.append(np.full_like(plane, 255.0))
    return np.ascontiguousarray(np.stack(planes), dtype=np.float32)


def preprocess(image: np.ndarray, spec: dict | None) -> np.ndarray:
    """(image * scale - mean) / std per channel, as the spec's `preprocess` declares.
    A mean or std whose length is not the image's channel count is an error: numpy
    would broadcast a 3-number mean over a 1-channel image into 3 channels."""
    if not spec:
        return image
    x = image * float(spec.get("scale", 1.0))
    for key in ("mean", "std"):
        if key in spec and len(spec[key]) != image.shape[0]:
            raise GraphconvError(f"preprocess {key} lists {len(spec[key])} numbers for an image of "
                                 f"{image.shape[0]} channel(s)")
    if "mean" in spec:
        x = x - np.asarray(spec["mean"], np.float32)[:, None, None]
    if "std" in spec:
        x = x / np.asarray(spec["std"], np.float32)[:, None, None]
    return x.astype(np.float32)


def cell_index_map(field: Field, rows: int, cols: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """For each image row/column, the score-map row/column whose field is centred nearest."""
    def nearest(n_cells, size, stride, offset, length):
        centre = offset + (size - 1) / 2
        return np.clip(np.rint((np.arange(length) - centre) / stride), 0, n_cells - 1).astype(int)

    return (nearest(rows, field.size[0], field.stride[0], field.offset[0], height),
            nearest(cols, field.size[1], field.stride[1], field.offset[1], width))


def save_heatmap(image: np.ndarray, scores: np.ndarray, field: Field, path: str) -> None:
    """Blend one class's score map (rows, cols), placed by each cell's receptive field,
    over the (channels, H, W) image (grey repeated, alpha dropped) and write it as a PNG."""
    image_mod = _pil()
    _, height, width = image.shape
    ys, xs = cell_index_map(field, scores.shape[0], scores.shape[1], height, width)
    values = scores[ys[:, None], xs[None, :]].astype(np.float64)
    span = values.max() - values.min()
    level = (values - values.min()) / span if span > 0 else np.zeros_like(values)
    colour = np.stack([level, 1 - np.abs(2 * level - 1), 1 - level]) * 255  # blue -> green -> red
    base = np.clip(_as_rgb(image), 0, 255)
    blended = (0.5 * base + 0.5 * colour).clip(0, 255).astype(np.uint8).transpose(1, 2, 0)
    image_mod.fromarray(blended).save(path, format="PNG")


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """(3, H, W) from a grey, RGB or RGBA (C, H, W) image."""
    return np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
