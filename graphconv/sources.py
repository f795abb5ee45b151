"""Images read a box at a time, for tiled evaluation (graphconv.tiling).

* TIFF and BigTIFF, tiled or striped, through `tifffile`: only the TIFF tiles under a
  box are decoded, so memory does not grow with the image. Of a pyramid (a whole-slide
  image: .svs, .ndpi, OME-TIFF) level 0, the full resolution, or the level asked for
  (`run --level K`: a slide scanned at 40x read at the 10x its classifier was trained
  on). JPEG and JPEG 2000 tiles, what most slides hold, are decoded by `imagecodecs`.
* zarr arrays (a `.zarr` folder): read lazily the same way.
* Everything else through Pillow (graphconv.images.load_image): PNG and JPEG have no
  random access, so these are decoded whole, within the memory budget, then cut.

Every source gives (C, h, w) float32 boxes with the model's `preprocess` applied, the
values on 0..255 as `load_image` gives them (16-bit and float data scaled the same way).
tifffile, imagecodecs and zarr are the optional `scale` extra (`pip install 'graphconv[scale]'`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from graphconv.errors import GraphconvError

TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".btf", ".tf8")
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, what Pillow's "L" uses


def require(module: str):
    """An optional dependency of tiled runs, or a clear message on how to get it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise GraphconvError(f"this needs the {module} package: pip install 'graphconv[scale]'") from None


class _Preprocessed:
    """Shared by the sources: channel checks and the spec's preprocess on each box."""

    def __init__(self, path: str, channels: int, preprocess: dict | None):
        self.path, self.channels, self.preprocess = path, channels, preprocess

    def _finish(self, chw: np.ndarray) -> np.ndarray:
        from graphconv.images import preprocess
        return np.ascontiguousarray(preprocess(chw.astype(np.float32, copy=False), self.preprocess),
                                    dtype=np.float32)


class PillowSource(_Preprocessed):
    """An ordinary image, decoded whole by graphconv.images.load_image, then cut."""

    def __init__(self, path: str, channels: int, preprocess: dict | None):
        super().__init__(path, channels, preprocess)
        from graphconv.images import load_image
        self.pixels = load_image(path, None, channels)
        _, self.height, self.width = self.pixels.shape

    def read(self, top: int, left: int, bottom: int, right: int) -> np.ndarray:
        return self._finish(self.pixels[:, top:bottom, left:right])


class ArrayLikeSource(_Preprocessed):
    """A lazily read (H, W), (H, W, C) or (C, H, W) array: a zarr array, or a TIFF's
    level 0 seen through tifffile's zarr store. Integer data is scaled to 0..255 as
    load_image scales it (16-bit / 257); float data is taken as 0..1."""

    def __init__(self, path: str, array, channels: int, preprocess: dict | None):
        super().__init__(path, channels, preprocess)
        self.array = array
        self.layout = _layout(array.shape, channels, path)
        if self.layout == "hw":
            self.height, self.width = array.shape
        elif self.layout == "hwc":
            self.height, self.width = array.shape[:2]
        else:
            self.height, self.width = array.shape[1:]
        self.scale = _to_255(np.dtype(array.dtype), path)

    def read(self, top: int, left: int, bottom: int, right: int) -> np.ndarray:
        if self.layout == "hw":
            chw = np.asarray(self.array[top:bottom, left:right])[None]
        elif self.layout == "hwc":
            chw = np.asarray(self.array[top:bottom, left:right]).transpose(2, 0, 1)
        else:
            chw = np.asarray(self.array[:, top:bottom, left:right])
        chw = chw.astype(np.float32) * self.scale
        if self.channels == 1 and chw.shape[0] >= 3:
            chw = np.tensordot(LUMA, chw[:3], axes=1)[None]  # as Pillow's "L" conversion
        elif chw.shape[0] == 1 and self.channels == 3:
            chw = np.repeat(chw, 3, axis=0)
        return self._finish(chw[:self.channels])


def _layout(shape, channels: int, path: str) -> str:
    if len(shape) == 2:
        return "hw"
    if len(shape) == 3 and shape[2] in (1, 3, 4) and shape[0] not in (1, 3, 4):
        return "hwc"
    if len(shape) == 3 and shape[0] in (1, 3, 4):
        return "chw"
    if len(shape) == 3 and shape[2] in (1, 3, 4):
        return "hwc"
    raise GraphconvError(f"an image array of shape {tuple(shape)}: expected (H, W), (H, W, C) or "
                         f"(C, H, W) with C of 1, 3 or 4", file=path)


def _to_255(dtype: np.dtype, path: str) -> float:
    if dtype == np.uint8:
        return 1.0
    if dtype == np.uint16:
        return 1.0 / 257.0
    if np.issubdtype(dtype, np.floating):
        return 255.0
    raise GraphconvError(f"pixel type {dtype} is not supported (8- or 16-bit integers, or floats on 0..1)",
                         file=path)


def is_tiff(path: str | os.PathLike) -> bool:
    """Whether `path` names a TIFF (whole-slide formats included), which is read lazily."""
    return Path(path).suffix.lower() in TIFF_SUFFIXES


def open_source(path: str | os.PathLike, channels: int, preprocess: dict | None, level: int = 0):
    """The right source for `path`: TIFF and zarr lazily, other images through Pillow;
    `level` is a pyramid TIFF's level (0: full resolution)."""
    path = str(path)
    suffix = Path(path).suffix.lower()
    folder = Path(path)
    if is_tiff(path):
        return _checked(_tiff_source(path, channels, preprocess, level), channels)
    if level:
        raise GraphconvError(f"--level {level}: only a TIFF pyramid (.svs, .ndpi, .tif) has levels; "
                             "this image has one", file=path)
    if suffix == ".zarr" or (folder.is_dir() and ((folder / ".zarray").exists() or (folder / "zarr.json").exists())):
        zarr = require("zarr")
        try:
            array = zarr.open_array(path, mode="r")
        except Exception as err:  # zarr raises several types for a folder that is not an array
            raise GraphconvError(f"cannot open as a zarr array: {err}", file=path) from None
        return _checked(ArrayLikeSource(path, array, channels, preprocess), channels)
    return PillowSource(path, channels, preprocess)


def _tiff_source(path: str, channels: int, preprocess: dict | None, level: int) -> ArrayLikeSource:
    tifffile = require("tifffile")
    if not Path(path).is_file():
        raise GraphconvError("image not found", file=path)
    try:
        tif = tifffile.TiffFile(path)
        series = tif.series[0]
        levels = list(series.levels) if getattr(series, "levels", None) else [series]
    except (tifffile.TiffFileError, ValueError, OSError, KeyError, IndexError) as err:
        raise GraphconvError(f"cannot read as a TIFF image: {err}", file=path) from None
    if level >= len(levels):
        raise GraphconvError(f"--level {level}: the image has {_level_list(levels)}", file=path)
    source = ArrayLikeSource(path, _decodable_array(path, series, level, levels[level]), channels, preprocess)
    source.tiff = tif  # keep the file open as long as the source lives
    source.level, source.levels = level, len(levels)
    source.downsample = _axis_sizes(levels[0])[0] / source.height  # how much coarser than level 0
    return source


def _axis_sizes(level) -> tuple[int, int]:
    """(H, W) of a TIFF series or pyramid level."""
    axes = level.axes.upper()
    return level.shape[axes.index("Y")], level.shape[axes.index("X")]


def _level_list(levels) -> str:
    sizes = ", ".join(f"{i}: {h}x{w}" for i, (h, w) in enumerate(map(_axis_sizes, levels)))
    return f"{len(levels)} level(s) ({sizes})"


def _decodable_array(path: str, series, level: int, pages):
    """Level `level` of the series as a lazily read zarr array, one pixel of it decoded
    now: a compression this install cannot decode (JPEG or JPEG 2000, what most slides
    hold, without imagecodecs) is one clear error before the run, not a failure at the
    first tile. (Without `level`, tifffile gives a pyramid as a group of all its levels.)"""
    zarr = require("zarr")
    try:
        array = zarr.open_array(series.aszarr(level=level), mode="r")
        np.asarray(array[(slice(0, 1),) * len(array.shape)])
    except Exception as err:  # tifffile, zarr and the codecs raise many types for what they cannot decode
        raise GraphconvError(f"cannot decode its pixels: {err}{_codec_hint(pages)}", file=path) from None
    return array


def _codec_hint(pages) -> str:
    """What to install, when the tiles are compressed and imagecodecs is missing."""
    import importlib.util

    compression = getattr(getattr(pages, "keyframe", None), "compression", None)
    if compression is None or getattr(compression, "name", "") == "NONE" or importlib.util.find_spec("imagecodecs"):
        return ""
    return (f" (its tiles are {getattr(compression, 'name', compression)}-compressed: decoding them needs the "
            "imagecodecs package, pip install 'graphconv[scale]')")


def _checked(source: ArrayLikeSource, channels: int) -> ArrayLikeSource:
    have = 1 if source.layout == "hw" else (source.array.shape[2] if source.layout == "hwc"
                                            else source.array.shape[0])
    if have < channels and not (have == 1 and channels == 3):
        raise GraphconvError(f"has {have} channel(s); the model takes {channels}", file=source.path)
    return source


# ---- the picture a tiled run's heatmap is drawn over -------------------------------------------

THUMBNAIL_SIDE = 2048  # the longer side of that picture, at most
THUMBNAIL_BOX = 1024  # the boxes a level is read in, when it is read whole to be shrunk


def thumbnail(source, longest: int = THUMBNAIL_SIDE) -> tuple[np.ndarray, tuple[float, float]]:
    """The image `source` reads, shrunk to at most `longest` pixels on its longer side, as
    (C, h, w) on 0..255 without the spec's preprocess, and how many of the source's pixels
    one of its pixels spans on each axis: what a tiled run's heatmap is drawn over. It is
    taken from the coarsest pyramid level at least that large (a slide's level 2 or 3:
    a few MB to decode), else from the image itself read a box at a time; each of its
    pixels is the nearest pixel there (a preview, not a resampling)."""
    step = max(1, -(-max(source.height, source.width) // longest))
    out_hw = (-(-source.height // step), -(-source.width // step))
    level = _coarsest_level_for(source, step)
    raw = open_source(source.path, source.channels, None, level)
    picture = _sampled(raw, out_hw)
    return picture, (source.height / out_hw[0], source.width / out_hw[1])


def _coarsest_level_for(source, step: int) -> int:
    """The pyramid level of the largest downsample that is at most `step` times coarser
    than the level `source` reads; that level itself for other images."""
    level = getattr(source, "level", 0)
    if getattr(source, "levels", 1) == 1:
        return level
    series = source.tiff.series[0]
    finest = _axis_sizes(series.levels[level])[0]
    coarser = [k for k in range(level, len(series.levels)) if finest / _axis_sizes(series.levels[k])[0] <= step]
    return max(coarser)


def _sampled(raw, out_hw: tuple[int, int]) -> np.ndarray:
    """(C, out_h, out_w): the pixels of `raw` nearest to an even grid of out_hw points,
    read THUMBNAIL_BOX x THUMBNAIL_BOX pixels at a time, so a level read whole costs no
    more memory than a box."""
    rows = np.minimum((np.arange(out_hw[0]) + 0.5) * raw.height / out_hw[0], raw.height - 1).astype(np.int64)
    cols = np.minimum((np.arange(out_hw[1]) + 0.5) * raw.width / out_hw[1], raw.width - 1).astype(np.int64)
    picture = np.empty((raw.channels, *out_hw), np.float32)
    for top in range(0, raw.height, THUMBNAIL_BOX):
        in_rows = np.nonzero((rows >= top) & (rows < top + THUMBNAIL_BOX))[0]
        if not in_rows.size:
            continue
        for left in range(0, raw.width, THUMBNAIL_BOX):
            in_cols = np.nonzero((cols >= left) & (cols < left + THUMBNAIL_BOX))[0]
            if not in_cols.size:
                continue
            box = raw.read(top, left, min(raw.height, top + THUMBNAIL_BOX), min(raw.width, left + THUMBNAIL_BOX))
            picture[:, in_rows[:, None], in_cols[None, :]] = box[:, rows[in_rows][:, None] - top,
                                                                cols[in_cols][None, :] - left]
    return picture
