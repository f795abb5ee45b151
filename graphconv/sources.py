"""Images read a box at a time, for tiled evaluation (graphconv.tiling).

* TIFF and BigTIFF, tiled or striped, through `tifffile`: only the TIFF tiles under a
  box are decoded, so memory does not grow with the image. Of a pyramid (a whole-slide
  image: .svs, .ndpi, OME-TIFF) level 0, the full resolution, or the level asked for
  (`run --level K`: a slide scanned at 40x read at the 10x its classifier was trained
  on). JPEG and JPEG 2000 tiles, what most slides hold, are decoded by `imagecodecs`.
  A TIFF is told by its first bytes, whatever its suffix (`is_tiff`), and read as the
  picture Pillow shows, each box converted (`_as_shown`): a palette looked up in its
  colour map, MINISWHITE grey inverted, 1-, 2- and 4-bit grey spread over 0..255, CMYK
  made RGB.
* zarr arrays (a `.zarr` folder): read lazily the same way; and OME-Zarr images (a zarr
  group of pyramid levels, OME-NGFF 0.1-0.5, as bioformats2raw and QuPath write them),
  level by level as TIFF pyramids, their pixel size from the levels' scales.
* Everything else through Pillow (graphconv.images.load_image): PNG and JPEG have no
  random access, so these are decoded whole, within the memory budget, then cut.

Every source gives (C, h, w) float32 boxes with the model's `preprocess` applied, the
values on 0..255 as `load_image` gives them (16-bit and float data scaled the same way),
or as the file stores them where the spec's preprocess says `values: stored` (satellite
reflectances, any integer or float type).

A TIFF or zarr raster may hold any number of bands (a Sentinel-2 scene: 13), in either
order: (bands, H, W) or (H, W, bands); a TIFF's axes say which, and a zarr array's
dimension names (xarray's "band", "y", "x", in whatever order it stores them: (x, y,
band) is read as its names say) where it has them, else its shape. `bands` picks and
orders the ones the network takes (GDAL's numbering, from 1: Sentinel-2's true colour
is 4, 3, 2); without it the raster must have the network's channel count (or be the
grey, RGB or RGBA picture that converts to it, as Pillow would: a TIFF whose photometric
says so, an 8-bit zarr array; a 16-bit or float one is a raster of bands). A raster's
no-data value is GDAL's tag in a TIFF, a zarr array's `_FillValue` attribute.

tifffile, imagecodecs and zarr are the optional `scale` extra (`pip install 'graphconv[scale]'`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import stat
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from graphconv.errors import GraphconvError, agreeing, counted, shown, shown_path
from graphconv.images import stores_values
TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".btf", ".tf8")
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, what Pillow's "L" uses


def grey_of(rgb: np.ndarray) -> np.ndarray:
    """(1, H, W) luma of (3, H, W) R, G, B: for 8-bit pixels exactly Pillow's "L" (its
    integer weights, rounded), so that a TIFF or zarr and a PNG of the same pixels feed a
    grey model the same values (unrounded, 307 of an 8000x8000 image's pixels differed by
    over half a level); deeper or float pixels unrounded, 0.299 R + 0.587 G + 0.114 B."""
    if rgb.dtype == np.uint8:
        weighted = rgb[0] * np.uint32(19595) + rgb[1] * np.uint32(38470) + rgb[2] * np.uint32(7471)
        return ((weighted + np.uint32(0x8000)) >> np.uint32(16)).astype(np.uint8)[None]
    return np.tensordot(LUMA, rgb.astype(np.float32), axes=1)[None]


def require(module: str):
    """An optional dependency of tiled runs, or a clear message on how to get it."""
    from graphconv.errors import import_optional
    return import_optional(module, f"this needs the {module} package: pip install 'graphconv[scale]'")


class _Preprocessed:
    """Shared by the sources: channel checks and the spec's preprocess on each box."""

    missing_value = None  # no pixel is missing (a raster's: ArrayLikeSource.missing_value)
    held_bytes = 0  # what the source keeps between reads, outside any tile (`tiling.budget_beside`)

    def __init__(self, path: str, channels: int, preprocess: dict | None):
        self.path, self.channels, self.preprocess = path, channels, preprocess

    def read_masked(self, top: int, left: int, bottom: int, right: int) -> tuple[np.ndarray, None]:
        """The box and its no-data mask (`ArrayLikeSource.read_masked`): none here."""
        return self.read(top, left, bottom, right), None

    def _finish(self, chw: np.ndarray, owned: bool = False) -> np.ndarray:
        """`chw` preprocessed, as float32; `owned`: `chw` is this read's own float32 copy,
        preprocessed in place (each copy of a slide's tile is tens of MB)."""
        from graphconv.images import preprocess
        if not self.preprocess:
            return np.ascontiguousarray(chw, dtype=np.float32)
        mine = chw if owned and chw.dtype == np.float32 else chw.astype(np.float32)
        return np.ascontiguousarray(preprocess(mine, self.preprocess, in_place=True))


class PillowSource(_Preprocessed):
    """An ordinary image, decoded whole by graphconv.images.load_image, then cut. An 8-bit
    one is held as uint8, each tile made float32 as it is read: held as float32, an
    8000x8000 RGB PNG took 768 MB beside the tiles, 1 GB over --memory-limit 2000M."""

    picture = True  # PNG, JPEG: grey, RGB or RGBA, as Pillow reads them

    def __init__(self, path: str, channels: int, preprocess: dict | None, resize: Sequence[int] | None = None):
        """`resize`: (H, W), or (S,) for the shorter side (`images.resized_size`), the picture
        resized to as `run --image --resize` resizes it; its cells then stand on the stored
        picture's pixels by `full_hw` (`level0_span`)."""
        super().__init__(path, channels, preprocess)
        from graphconv.images import image_size, load_image
        self.pixels = load_image(path, resize, channels, stored_values=stores_values(preprocess), keep_8_bits=True)
        _, self.height, self.width = self.pixels.shape
        self.held_bytes = self.pixels.nbytes  # the picture, decoded whole
        self.resize = None if resize is None else (resize,) if isinstance(resize, (int, np.integer)) else tuple(resize)
        if resize is not None:
            self.full_hw = image_size(path)

    def read(self, top: int, left: int, bottom: int, right: int) -> np.ndarray:
        return self._finish(self.pixels[:, top:bottom, left:right])


class ArrayLikeSource(_Preprocessed):
    """A lazily read (H, W), (H, W, C) or (C, H, W) array: a zarr array, or a TIFF's
    level seen through tifffile's zarr store (`axes`: tifffile's names for its axes,
    such as "YXS" or "SYX"). Integer data is scaled to 0..255 as load_image scales it
    (16-bit / 257), float data is taken as 0..1; with `values: stored` neither is.
    `bands`: the 1-based bands to read, in order (see the module). `picture`: whether it
    is a grey, RGB or RGBA picture (`_checked_bands`; --skip-background's tissue test
    reads only pictures); None for an array that does not say (`_looks_like_picture`)."""

    def __init__(self, path: str, array, channels: int, preprocess: dict | None, axes: str | None = None,
                 bands: Sequence[int] | None = None, picture: bool | None = True):
        super().__init__(path, channels, preprocess)
        self.array = array
        self.layout = _layout(array.shape, channels, path, axes)
        if self.layout == "hw":
            self.height, self.width = array.shape
        elif self.layout == "hwc":
            self.height, self.width = array.shape[:2]
        else:
            self.height, self.width = array.shape[1:]
        self.band_count = {"hw": 1, "hwc": array.shape[-1], "chw": array.shape[0]}[self.layout]
        self.bands = tuple(bands) if bands is not None else None
        self.picture = _looks_like_picture(array.dtype, self.band_count) if picture is None else picture
        self._band_index = _checked_bands(bands, self.band_count, channels, path, self.picture)
        self.pixels_read = self.zero_pixels = 0  # `_count_unmarked_zeros`
        self.stored_values = stores_values(preprocess)
        self.scale = _stored_scale(np.dtype(array.dtype), path) if self.stored_values \
            else _to_255(np.dtype(array.dtype), path)

    nodata = None  # the no-data value the file declares (GDAL's tag, a zarr _FillValue); set by the openers
    nodata_given = False  # whether `nodata` is run --nodata's (`open_source`), not the file's
    valid_pixels = None  # a TIFF's internal mask at the level read, (H, W), 0 or False where no data (`_internal_mask`)
    valid_pixels_from = None  # "internal" (that mask) or "alpha" (its alpha band, `_alpha_plane`)
    alpha_band = None  # the TIFF's alpha band, numbered from 1 as GDAL numbers it, where it is the mask
    alpha_fed = None  # that band where the network reads it as a channel, and so it is no mask (`alpha_fed_note`)
    fourth_is_alpha = True  # False: a TIFF's 4th band of unstated meaning (`_fourth_is_alpha`)
    pixel_size_stated = None  # a slide's (height, width) in µm at level 0, or why unstated (`_stated_pixel_size`)

    @property
    def missing_value(self) -> float | None:
        """What marks a missing pixel: the declared no-data value, else NaN in a float
        raster (NaN is never a pixel's value), else None (every pixel is data)."""
        if self.nodata is not None:
            return self.nodata
        return math.nan if np.issubdtype(np.dtype(self.array.dtype), np.floating) else None

    @property
    def nodata_can_occur(self) -> bool:
        """Whether any pixel can be no-data: where the TIFF has an internal mask; else not
        without a missing value, nor in an integer raster whose declared value its type
        cannot hold (300 or -9999 in 8 bits, 0.5, inf: GDAL writes such tags)."""
        return self.valid_pixels is not None or self._missing_value_held

    @property
    def _missing_value_held(self) -> bool:
        """Whether some pixel can hold the missing value (`nodata_can_occur`)."""
        value = self.missing_value
        if value is None:
            return False
        dtype = np.dtype(self.array.dtype)
        return np.issubdtype(dtype, np.floating) or held_integer(value, dtype) is not None

    def read(self, top: int, left: int, bottom: int, right: int) -> np.ndarray:
        return self.read_masked(top, left, bottom, right)[0]

    def read_masked(self, top: int, left: int, bottom: int, right: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The box, preprocessed, and where it is no-data: (C, h, w) float32 values and a
        (C, h, w) bool mask (the same in every channel) of its no-data pixels, or None for
        a raster none of whose pixels can be (`nodata_can_occur`). A pixel is no-data
        where every band the network is fed from holds the no-data value (or NaN), as
        GDAL's dataset mask and rasterio's dataset_mask() have it: an 8-bit RGB scene
        with no-data 0 has saturated red (220, 0, 0) as data, fed as stored. A no-data
        pixel goes into the network as 0 after the preprocess in every channel, what the
        network's own zero padding gives, so a -9999 or a NaN never spreads into the
        cells around it; the map leaves out the cells over no-data
        (`background.Background.nodata_cells`). A NaN sample of a pixel that is data is
        no value either: it too goes in as 0 after the preprocess, the pixel still data."""
        raw = self._decoded(top, left, bottom, right)
        self._count_unmarked_zeros(raw)
        nodata = self._nodata_pixels(raw, (top, left, bottom, right))
        floating = np.issubdtype(raw.dtype, np.floating)
        nan = np.isnan(raw) if floating else None
        if nan is not None and not nan.any():
            nan = None
        if floating:
            left_out = nan if nodata is None else np.broadcast_to(nodata, raw.shape) if nan is None \
                else nan | nodata[None]
            self._check_floats(raw, top, left, left_out)
        chw = (grey_of(raw[:3]) if self.channels == 1 and raw.shape[0] >= 3 else raw).astype(np.float32, order="C")
        chw *= self.scale  # C order: a (H, W, C) array's transposed view made one copy, and the preprocess another
        if chw.shape[0] == 1 and self.channels == 3:
            chw = np.repeat(chw, 3, axis=0)
        chw = chw[:self.channels]
        replaced = None if nodata is None or not nodata.any() else np.broadcast_to(nodata, chw.shape)
        if nan is not None:
            replaced = np.isnan(chw) if replaced is None else replaced | np.isnan(chw)
        if replaced is not None:
            chw = np.where(replaced, np.float32(0), chw)
        out = self._finish(chw, owned=True)
        if replaced is not None:
            out[replaced] = 0  # the network's zero padding, after the preprocess
        return out, None if nodata is None else np.broadcast_to(nodata, out.shape)

    def nodata_mask(self, top: int, left: int, bottom: int, right: int,
                    around_damage: bool = False) -> np.ndarray | None:
        """(h, w) bool: the box's no-data pixels (see `read_masked`), from the values as
        stored, without the preprocess; None where no pixel can be (`nodata_can_occur`).
        `around_damage` (--skip-damaged): the pixels of a TIFF tile or strip that cannot
        be decoded count as data (the cells whose crops reach them are left out as
        damaged), the rest read around them."""
        if not self.nodata_can_occur:
            return None
        box = (top, left, bottom, right)
        try:
            return self._nodata_pixels(self._decoded(*box) if self._missing_value_held else None, box)
        except DamagedPixels as err:
            damage = _overlap(box, err.box) if around_damage and err.box is not None else None
            if damage is None:
                raise
            return self._nodata_around(box, damage)

    def _nodata_around(self, box: tuple[int, int, int, int], damage: tuple[int, int, int, int]) -> np.ndarray:
        """`nodata_mask` of `box` with the pixels of `damage` (inside it) counted as data:
        the four parts of the box around them read on their own (each may meet more)."""
        top, left, bottom, right = box
        mask = np.zeros((bottom - top, right - left), np.bool_)
        for part in parts_around(box, damage):
            got = self.nodata_mask(*part, around_damage=True)
            if got is not None:
                mask[part[0] - top:part[2] - top, part[1] - left:part[3] - left] = got
        return mask

    def _decoded(self, top: int, left: int, bottom: int, right: int) -> np.ndarray:
        """`_stored`, a damaged tile one error naming the file and the box."""
        try:
            return self._stored(top, left, bottom, right)
        except (GraphconvError, MemoryError):
            raise
        except Exception as err:  # tifffile, zarr and the codecs raise many types for a damaged tile
            message = (f"cannot decode its pixels in rows {top}..{bottom - 1}, columns {left}..{right - 1}"
                       f"{_chunk_failure(err)}")
            if getattr(err, CHUNK_ERROR_MARK, False):
                damaged = DamagedPixels(message + DAMAGED_HINT, file=self.path, chunk=getattr(err, CHUNK_NAME_MARK, ""),
                                        box=getattr(err, CHUNK_BOX_MARK, None))
                damaged.reader = id(self)
                raise damaged from None
            raise GraphconvError(message, file=self.path) from None

    def _nodata_pixels(self, raw: np.ndarray | None, box: tuple[int, int, int, int]) -> np.ndarray | None:
        """(h, w) bool: the no-data pixels of the box (top, left, bottom, right), `raw` its
        values as stored, (C, h, w): those the internal mask marks, and those every band
        of which that the network is fed from holds the missing value (`_pixels_missing`);
        None where none can be. (`raw` None: the mask alone, where no pixel can hold a
        missing value, so that counting a JPEG scene's no-data decodes no JPEG.)"""
        missing = None if raw is None else self._pixels_missing(raw)
        if self.valid_pixels is None:
            return missing
        top, left, bottom, right = box
        masked = np.asarray(self.valid_pixels[top:bottom, left:right]) == 0
        return masked if missing is None else missing | masked

    def _pixels_missing(self, raw: np.ndarray) -> np.ndarray | None:
        """(h, w) bool: the pixels of `raw` (as stored, (C, h, w)) every band of which that
        the network is fed from (the first three for grey from RGB, else the first
        `channels`) holds the missing value, or NaN; None where none can."""
        if not self._missing_value_held:
            return None
        value = self.missing_value
        floating = np.issubdtype(raw.dtype, np.floating)
        target = None if math.isnan(value) else \
            raw.dtype.type(value) if floating else raw.dtype.type(held_integer(value, raw.dtype))
        fed = raw[:3] if self.channels == 1 and raw.shape[0] >= 3 else raw[:self.channels]
        nodata = None
        for band in fed:
            if target is None:
                absent = np.isnan(band)
            elif floating:
                absent = (band == target) | np.isnan(band)
            else:
                absent = band == target
            nodata = absent if nodata is None else np.logical_and(nodata, absent, out=nodata)
        return nodata

    def _stored(self, top: int, left: int, bottom: int, right: int) -> np.ndarray:
        """The box's values as the file stores them, (C, h, w)."""
        if self._band_index is not None:
            return self._bands_read(top, left, bottom, right)
        if self.layout == "hw":
            return np.asarray(self.array[top:bottom, left:right])[None]
        if self.layout == "hwc":
            return np.asarray(self.array[top:bottom, left:right]).transpose(2, 0, 1)
        return np.asarray(self.array[:, top:bottom, left:right])

    def _count_unmarked_zeros(self, raw: np.ndarray) -> None:
        """Count the pixels read that are 0 in every band of a raster that declares no
        no-data (nor has a mask) and is no picture: a scene's zero border outside its
        swath, without GDAL's no-data tag, went into the network as data and was mapped
        without a word (`unmarked_zeros_note`). Tiles overlap by their halo, so this is a
        share, not a count of the image's pixels."""
        if self.nodata is None and self.valid_pixels is None and not self.picture:
            self.pixels_read += raw.shape[1] * raw.shape[2]
            self.zero_pixels += int(np.count_nonzero(~raw.any(axis=0)))

    def _check_floats(self, raw: np.ndarray, top: int, left: int, missing: np.ndarray | None = None) -> None:
        """Float pixels are read as 0..1 (as load_image reads them): refuse others rather
        than scale them to nonsense, and infinity, which would fill the map with NaN. The
        samples `missing` marks (no-data pixels', NaN) are no values and are not counted."""
        where = f"in rows {top}..{top + raw.shape[1] - 1}, columns {left}..{left + raw.shape[2] - 1}"
        values = raw if missing is None else raw[~missing]
        if np.isinf(values).any():
            infinite = np.isinf(raw) if missing is None else np.isinf(raw) & ~missing
            band, row, column = np.argwhere(infinite)[0]
            raise GraphconvError(f"float pixels that are infinite, the first at row {top + row}, column "
                                 f"{left + column} (band {band}), read {where}", file=self.path)
        low, high = values.min(initial=np.inf), values.max(initial=-np.inf)
        if not self.stored_values and values.size and (low < 0 or high > 1):
            declared = "" if self.nodata is None else f", no-data pixels ({self.nodata:g} in every band) left out"
            if self.nodata is not None and self.nodata in (low, high):
                declared += (f"; {self.nodata:g} in some bands of a pixel that is data is a value (a pixel is "
                             "no-data only where every band read holds the no-data value)")
            raise GraphconvError(f"float pixels from {low:.6g} to {high:.6g} {where}{declared}: float images are "
                                 "read as 0..1; a raster of other values takes the spec's preprocess "
                                 "`values: stored`", file=self.path)

    def _bands_read(self, top: int, left: int, bottom: int, right: int) -> np.ndarray:
        """The `bands` of a box, (C, h, w): of a band-interleaved raster only those bands are
        read (3 of a scene's 13 planes decoded, not all of them)."""
        wanted = np.unique(self._band_index)
        order = np.searchsorted(wanted, self._band_index)
        if self.layout == "chw":
            chw = np.asarray(self.array.oindex[wanted, top:bottom, left:right])
        else:
            chw = np.asarray(self.array[top:bottom, left:right]).transpose(2, 0, 1)[wanted]
        return chw[order]


PICTURE_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA: what a picture's channel axis holds


def _layout(shape, channels: int, path: str, axes: str | None = None) -> str:
    """Where the bands are: "hw" (one), "hwc" (last axis) or "chw" (first axis). A TIFF's
    axes name them (S: samples of a pixel, C: channels, I, Q: pages); a bare array's
    are told by which end axis has the network's channel count, else a picture's (1, 3
    or 4), else by which is shorter than both others (a 13-band scene of 10980x10980)."""
    if len(shape) == 2:
        return "hw"
    if len(shape) != 3:
        named = f" (axes {axes}: {', '.join(f'{a} {n}' for a, n in zip(axes, shape))})" \
            if axes and len(axes) == len(shape) else ""
        raise GraphconvError(f"an image array of shape {tuple(shape)}{named}: expected (H, W), (H, W, C) or "
                             "(C, H, W); graphconv maps one plane: save the one to map (a z-slice, a time "
                             "point) as its own file", file=path)
    if axes and len(axes) == 3 and axes[1:].upper() == "YX":
        return "chw"
    if axes and len(axes) == 3 and axes[:2].upper() == "YX":
        return "hwc"
    layout = _guessed_layout(shape, ((channels,), PICTURE_CHANNELS))
    if layout:
        return layout
    raise GraphconvError(f"an image array of shape {tuple(shape)}: cannot tell its band axis (the network takes "
                         f"{counted(channels, 'channel')}); name its dimensions (zarr's dimension_names, "
                         f"xarray's dims: band, y, x)", file=path)


def _guessed_layout(shape, band_counts: Sequence[tuple[int, ...]]) -> str | None:
    """"hwc" or "chw" for a 3-axis array no name places: the end axis of a band count
    (tried in the order given), else the axis shorter than both others; None if none tells."""
    for counts in band_counts:
        if shape[2] in counts and shape[0] not in counts:
            return "hwc"
        if shape[0] in counts:
            return "chw"
    if shape[0] < min(shape[1:]):
        return "chw"
    if shape[2] < min(shape[:2]):
        return "hwc"
    return None


def _checked_bands(bands: Sequence[int] | None, have: int, channels: int, path: str,
                   picture: bool = True) -> np.ndarray | None:
    """`bands` (1-based) as 0-based indices, checked against the raster's `have` bands and
    the network's `channels`; without them, whether the raster's bands convert to the
    network's channels: the same count, or, for a `picture` (a photometric RGB(A) or grey
    TIFF, an 8-bit zarr array of 1, 3 or 4 bands), grey for RGB, RGB or RGBA for grey,
    RGBA for RGB (alpha left out).
    A multi-band raster that is not a picture needs `bands` to feed fewer of them: its
    first three need not be red, green and blue (PlanetScope's are blue, green, red)."""
    if bands is None:
        if have < channels and not (have == 1 and channels == 3):
            repeated = ",".join(str(min(b, have)) for b in range(1, channels + 1))
            raise GraphconvError(f"has {counted(have, 'band')}; the model takes {channels}: --bands feeds it "
                                 f"{channels} of them, a band again where need be (e.g. --bands {repeated}), "
                                 f"if that is what it was trained on", file=path)
        if have > channels and not (picture and (channels == 1 and have in (3, 4) or channels == 3 and have == 4)):
            raise GraphconvError(f"has {have} bands; the model takes {channels}: pick them with --bands "
                                 f"(numbered from 1, as GDAL numbers them; e.g. --bands "
                                 f"{','.join(str(b) for b in range(1, channels + 1))})", file=path)
        return None
    if len(bands) != channels:
        raise GraphconvError(f"--bands lists {counted(len(bands), 'band')}; the model takes {channels}", file=path)
    outside = [b for b in bands if not 1 <= b <= have]
    if outside:
        raise GraphconvError(f"--bands {','.join(map(str, bands))}: the image has bands 1 to {have}, "
                             f"not {','.join(map(str, outside))}", file=path)
    repeated = [b for b in dict.fromkeys(bands) if list(bands).count(b) > 1]
    if repeated and len(set(bands)) > 1:  # 4,4,4 (one band as grey in every channel) is meant; 2,2,3,4 a typo
        raise GraphconvError(f"--bands {','.join(map(str, bands))}: band {','.join(map(str, repeated))} is listed "
                             "more than once; list each band once (one band in every channel is --bands "
                             f"{','.join([str(repeated[0])] * len(bands))})", file=path)
    return np.asarray(bands, np.int64) - 1


def held_integer(value: float, dtype: np.dtype) -> int | None:
    """`value` as an integer of `dtype`, or None where that type cannot hold it (a
    fraction, infinity, or outside its range: such a no-data value marks no pixel)."""
    if not (math.isfinite(value) and value == int(value)):
        return None
    info = np.iinfo(dtype)
    return int(value) if info.min <= value <= info.max else None


def _stored_scale(dtype: np.dtype, path: str) -> float:
    if np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating):
        return 1.0
    raise GraphconvError(f"pixel type {dtype} is not supported (integers or floats)", file=path)


def _to_255(dtype: np.dtype, path: str) -> float:
    if dtype == np.uint8:
        return 1.0
    if dtype == np.uint16:
        return 1.0 / 257.0
    if np.issubdtype(dtype, np.floating):
        return 255.0
    raise GraphconvError(f"pixel type {dtype} is not supported (8- or 16-bit unsigned integers, or floats on "
                         "0..1; for other data, such as reflectances, say `values: stored` in the spec's "
                         "preprocess)", file=path)


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic TIFF and BigTIFF, either byte order


def is_tiff(path: str | os.PathLike) -> bool:
    """Whether `path` holds a TIFF (whole-slide formats included), which is read lazily:
    told by its first bytes, as Pillow tells the other formats, so a JPEG or PNG saved
    as .tif is read by Pillow (it was refused as "not a TIFF file") and a TIFF named .jpg
    lazily, every caller choosing the same reader. A path whose bytes cannot be read (not
    there, a folder, a pipe: never opened, it could block) is told by its suffix, for its
    reader to report."""
    try:
        if stat.S_ISREG(os.stat(path).st_mode):
            with open(path, "rb") as fp:
                return fp.read(4) in TIFF_MAGIC
    except OSError:
        pass
    return Path(path).suffix.lower() in TIFF_SUFFIXES


class Downsampled:
    """`inner` read `factor` times coarser by area averaging: each pixel the mean of the
    factor x factor square of `inner`'s pixels it covers, a pixel the square covers in
    part weighted by the part (OpenCV's INTER_AREA; for a whole factor, the mean of a
    block, Pillow's `reduce`). The last rows and columns no whole square covers are left
    out. `run --downsample 2` on a 40x slide is a 20x classifier's input where the
    pyramid has no 20x level (Aperio's: 40x, 10x, 2.5x); `--mpp 0.5` on a 0.2265 µm/px
    scan reads it 2.2075x coarser, where the nearest whole factor would be 9% off.

    A box is read as the squares under it, each pixel's weights fixed by where it is,
    not by the box, and summed in one order: a pixel comes out the same, bit for bit,
    whichever tile reads it, so tiles stay exact. Since the spec's preprocess is
    per-channel affine and the weights sum to one, averaging after it is the same as
    before. Everything else (path, level, bands, no-data) is `inner`'s."""

    def __init__(self, inner, factor: float, asked: str | None = None):
        """`asked`: the flag that chose `factor` where it is not --downsample (--mpp's)."""
        self.inner, self.factor = inner, factor
        self.height, self.width = int(inner.height / factor), int(inner.width / factor)
        if not (self.height and self.width):
            flag = f"{asked} reads it {factor:.4g} times coarser" if asked else f"--downsample {factor:g}"
            raise GraphconvError(f"{flag}: the image is {inner.height}x{inner.width}, smaller than one block of "
                                 f"{factor:.4g}x{factor:.4g} pixels", file=inner.path)
        self.downsample = getattr(inner, "downsample", 1.0) * factor  # how much coarser than level 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def read(self, top: int, left: int, bottom: int, right: int) -> np.ndarray:
        return self.read_masked(top, left, bottom, right)[0]

    def read_masked(self, top: int, left: int, bottom: int, right: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The box and its no-data mask (`ArrayLikeSource.read_masked`). Where `inner`
        has no-data, each pixel is the mean of the valid pixels its square covers (each
        weighted by its share of the square, the weights of the missing ones left out),
        and no-data where it covers no valid pixel; a pixel whose square holds no no-data
        pixel is exactly what it is without any."""
        rows_at_once = self._rows_at_once(left, right)
        if bottom - top > rows_at_once:  # a tile of a slide read 8x coarser is 64 tiles' worth of level 0
            parts = [self.read_masked(row, left, min(bottom, row + rows_at_once), right)
                     for row in range(top, bottom, rows_at_once)]
            masks = [mask for _, mask in parts]
            mask = None if all(m is None for m in masks) else np.concatenate(
                [np.zeros(values.shape, bool) if m is None else m for (values, _), m in zip(parts, masks)], axis=1)
            return np.concatenate([values for values, _ in parts], axis=1), mask
        (rows, row_weights), (cols, col_weights) = _area_taps(top, bottom, self.factor), \
            _area_taps(left, right, self.factor)
        box, missing = read_masked(self.inner, rows[0, 0], cols[0, 0], min(self.inner.height, rows[-1, -1] + 1),
                                   min(self.inner.width, cols[-1, -1] + 1))
        out = np.empty((box.shape[0], bottom - top, right - left), np.float32)
        taps = (np.minimum(rows - rows[0, 0], box.shape[1] - 1), row_weights,
                np.minimum(cols - cols[0, 0], box.shape[2] - 1), col_weights)
        from graphconv.ops.area_means import area_means, valid_area_means
        from graphconv.threads import check_not_forked_after_openmp
        check_not_forked_after_openmp()  # numba's parallel kernels, as the network's: a forked child would die
        if missing is None:
            area_means(box, *taps, out)
            return out, None
        out_missing = np.empty(out.shape[1:], np.bool_)
        valid_area_means(box, np.ascontiguousarray(missing[0]), *taps, out, out_missing)
        return out, np.broadcast_to(out_missing, out.shape)

    def nodata_mask(self, top: int, left: int, bottom: int, right: int,
                    around_damage: bool = False) -> np.ndarray | None:
        """(h, w) bool: the box's no-data pixels, those whose square covers no valid pixel
        of `inner` (`read_masked`), from `inner`'s stored values alone; None where no
        pixel can be no-data. `around_damage` as `ArrayLikeSource.nodata_mask`'s."""
        if not nodata_can_occur(self.inner):
            return None
        rows_at_once = self._rows_at_once(left, right)
        if bottom - top > rows_at_once:
            parts = [self.nodata_mask(row, left, min(bottom, row + rows_at_once), right, around_damage)
                     for row in range(top, bottom, rows_at_once)]
            return np.concatenate(parts, axis=0)
        (rows, row_weights), (cols, col_weights) = _area_taps(top, bottom, self.factor), \
            _area_taps(left, right, self.factor)
        fine = nodata_mask(self.inner, rows[0, 0], cols[0, 0], min(self.inner.height, rows[-1, -1] + 1),
                           min(self.inner.width, cols[-1, -1] + 1), around_damage)
        rows, cols = np.minimum(rows - rows[0, 0], fine.shape[0] - 1), np.minimum(cols - cols[0, 0], fine.shape[1] - 1)
        across = np.ones((bottom - top, fine.shape[1]), bool)  # every tap with a share of the square missing
        for tap, weight in zip(rows, row_weights):
            across &= fine[tap] | (weight <= 0)[:, None]
        mask = np.ones((bottom - top, right - left), bool)
        for tap, weight in zip(cols, col_weights):
            mask &= across[:, tap] | (weight <= 0)[None, :]
        return mask

    def _rows_at_once(self, left: int, right: int) -> int:
        return max(1, int(READ_PIXELS / (self.factor ** 2 * max(1, right - left))))


PAD_MODES = ("constant", "reflect", "replicate")
"""How `run --pad-image` fills the border, as MONAI's and torch's padding modes name
them: "constant" is 0 after the preprocess (what a first conv's zero padding holds, the
mean colour of a normalised input), "reflect" mirrors the image about its
edge pixel (numpy's and torch's reflect), "replicate" repeats the edge pixel."""


def border_margins(cells, image_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right): the border `run --pad-image` adds so that the map has
    a cell for every stride x stride block of the image, ceil(H / stride) x ceil(W /
    stride) of them, cell (i, j)'s crop centred on block (i, j) to within half a stride.
    The border before the image is whole strides, so the unpadded map's cells are among
    the padded map's, at the same places (ResNet's 224 crop at stride 32: three cells
    before it, each centred on its block). `cells` is the map's `cell_area` (each cell's crop)."""
    margins = []
    for axis in (0, 1):
        size, stride, offset = float(cells.size[axis]), float(cells.stride[axis]), float(cells.offset[axis])
        lead = int(stride * max(0, math.floor((offset + (size - stride) / 2) / stride + 0.5)))
        count = max(1, int(math.ceil(image_hw[axis] / stride)))
        trail = max(0, int(math.ceil(offset + size + (count - 1) * stride - image_hw[axis] - lead)))
        margins.append((lead, trail))
    (top, bottom), (left, right) = margins
    return top, left, bottom, right


def border_taps(start: int, stop: int, lead: int, length: int, mode: str) -> tuple[np.ndarray, np.ndarray | None]:
    """For the rows (or columns) [start, stop) of an image of `length` padded by `lead`
    before: the image row each reads, and (mode "constant") which are border, else None.
    A function of the row alone, whatever box asks, so tiles of a padded image stay
    exact. Reflection repeats past a border wider than the image (numpy's reflect)."""
    at = np.arange(start, stop, dtype=np.int64) - lead
    if mode == "constant":
        return np.clip(at, 0, length - 1), (at < 0) | (at >= length)
    if mode == "replicate" or length == 1:
        return np.clip(at, 0, length - 1), None
    period = 2 * (length - 1)
    at = np.mod(at, period)
    return np.where(at >= length, period - at, at), None


class Bordered:
    """`unpadded` with a border of `margins` (top, left, bottom, right) around it, filled
    as `mode` says (`PAD_MODES`): what `run --pad-image` maps, so that the cells reach
    the image's edges. A box is read as the image pixels
    its rows and columns stand for (`border_taps`). A border pixel is no-data where the
    pixel it repeats is (reflect, replicate), never in "constant", so a cell at the edge
    is computed, not left out for its border. Everything else is `unpadded`'s;
    `margin` (top, left) is where the image starts in the padded one, which the map's
    placement subtracts (`on_image`)."""

    def __init__(self, unpadded, mode: str, margins: tuple[int, int, int, int]):
        self.unpadded, self.mode, self.margins = unpadded, mode, margins
        top, left, bottom, right = margins
        self.margin = (top, left)
        self.height, self.width = unpadded.height + top + bottom, unpadded.width + left + right

    def __getattr__(self, name: str):
        return getattr(self.unpadded, name)

    def read(self, top: int, left: int, bottom: int, right: int) -> np.ndarray:
        return self.read_masked(top, left, bottom, right)[0]

    def read_masked(self, top: int, left: int, bottom: int, right: int) -> tuple[np.ndarray, np.ndarray | None]:
        (rows, row_border), (cols, col_border), box = self._taps(top, left, bottom, right)
        values, missing = read_masked(self.unpadded, *box)
        picked = np.ix_(rows - box[0], cols - box[1])
        values = np.ascontiguousarray(np.asarray(values)[(slice(None), *picked)], np.float32)
        if missing is not None:
            missing = np.asarray(missing)[(slice(None), *picked)]
        if self.mode == "constant":
            values[:, row_border, :] = 0
            values[:, :, col_border] = 0
            if missing is not None:  # a copy: picked by index
                missing[:, row_border, :] = False
                missing[:, :, col_border] = False
        return values, missing

    def nodata_mask(self, top: int, left: int, bottom: int, right: int,
                    around_damage: bool = False) -> np.ndarray | None:
        (rows, row_border), (cols, col_border), box = self._taps(top, left, bottom, right)
        mask = nodata_mask(self.unpadded, *box, around_damage=around_damage)
        if mask is None:
            return None
        mask = np.asarray(mask)[np.ix_(rows - box[0], cols - box[1])]
        if self.mode == "constant":
            mask[row_border, :] = False
            mask[:, col_border] = False
        return mask

    def _taps(self, top: int, left: int, bottom: int, right: int):
        """The image rows and columns the box reads (`border_taps`), and the image box
        holding them all."""
        rows = border_taps(top, bottom, self.margins[0], self.unpadded.height, self.mode)
        cols = border_taps(left, right, self.margins[1], self.unpadded.width, self.mode)
        box = (int(rows[0].min()), int(cols[0].min()), int(rows[0].max()) + 1, int(cols[0].max()) + 1)
        return rows, cols, box


def padded_image(source, mode: str | None, cells):
    """`source` with `run --pad-image`'s border for a map of `cells` (`Bordered`), or
    `source` itself where `mode` is None."""
    if mode is None:
        return source
    return Bordered(source, mode, border_margins(cells, (source.height, source.width)))


def pad_batch(x: np.ndarray, mode: str, cells) -> tuple[np.ndarray, tuple[int, int]]:
    """An (N, C, H, W) input held whole, padded as `padded_image` pads a source (the same
    pixels: `border_taps`), and its `margin` (top, left)."""
    top, left, bottom, right = border_margins(cells, x.shape[2:])
    rows, row_border = border_taps(0, x.shape[2] + top + bottom, top, x.shape[2], mode)
    cols, col_border = border_taps(0, x.shape[3] + left + right, left, x.shape[3], mode)
    out = np.ascontiguousarray(x[:, :, rows][:, :, :, cols])
    if mode == "constant":
        out[:, :, row_border, :] = 0
        out[:, :, :, col_border] = 0
    return out, (top, left)


def on_image(source, cells):
    """The image behind `source` and where the cells `cells` stand on it: a padded
    source's (`Bordered`) shifted back by its margin; others as they are."""
    if not isinstance(source, Bordered):
        return source, cells
    return source.unpadded, shifted_cells(cells, source.margin)


def shifted_cells(cells, margin: tuple[int, int]):
    """`cells` (a receptive field, a cell area) on an image padded by `margin` (top,
    left), placed on the image itself."""
    from dataclasses import replace
    return replace(cells, offset=(cells.offset[0] - margin[0], cells.offset[1] - margin[1]))


def read_masked(source, top: int, left: int, bottom: int, right: int) -> tuple[np.ndarray, np.ndarray | None]:
    """`source.read_masked` (the box and its no-data mask), or for a reader of your own
    without one, its `read` and no mask."""
    if hasattr(source, "read_masked"):
        return source.read_masked(top, left, bottom, right)
    return source.read(top, left, bottom, right), None


def nodata_can_occur(source) -> bool:
    """Whether any pixel `source` reads can be no-data (`ArrayLikeSource.nodata_can_occur`;
    a reader of your own: its own `nodata_can_occur`, else where it has a `missing_value`)."""
    can_occur = getattr(source, "nodata_can_occur", None)
    if can_occur is not None:
        return bool(can_occur)
    return getattr(source, "missing_value", None) is not None


UNMARKED_ZEROS_SHARE = 0.01  # of the pixels read, 0 in every band, past which a raster without no-data is noted


def unmarked_zeros_note(source) -> str | None:
    """What to say after a run that read many pixels 0 in every band of a raster that
    declares no no-data (`ArrayLikeSource._count_unmarked_zeros`): a swath's border, most
    likely, mapped as data. None where few were, or none was counted (a picture, a raster
    with no-data, a run whose workers read the tiles)."""
    read, zeros = getattr(source, "pixels_read", 0), getattr(source, "zero_pixels", 0)
    if not read or zeros < UNMARKED_ZEROS_SHARE * read:
        return None
    return (f"{zeros / read:.0%} of the pixels read are 0 in every band, and the image declares no no-data value, "
            "so they went into the network as data: where they lie outside the scene (a swath's border), "
            "--nodata 0 leaves the cells over them out of the map (NaN)")


def nodata_named(source) -> str:
    """What marks the image's no-data pixels, completing "the image's ...": "no-data value
    0", "NaN, its no-data", "GDAL internal mask", or a value and the mask. For the notes
    that say why cells are left out (`nodata_can_occur` true)."""
    source = getattr(source, "inner", getattr(source, "unpadded", source))
    named = []
    if getattr(source, "_missing_value_held", getattr(source, "missing_value", None) is not None):
        value = source.missing_value
        named.append(f"no-data value {value:g}" if getattr(source, "nodata", None) is not None else "NaN, its no-data")
    if getattr(source, "valid_pixels", None) is not None:
        alpha = getattr(source, "alpha_band", None)
        named.append("GDAL internal mask" if alpha is None else f"alpha band {alpha} (0: no data, as GDAL masks it)")
    return " and ".join(named) or "no-data"


def nodata_mask(source, top: int, left: int, bottom: int, right: int,
                around_damage: bool = False) -> np.ndarray | None:
    """(h, w) bool: the box's no-data pixels, read without the preprocess where the
    source can (`ArrayLikeSource.nodata_mask`, `around_damage` as there); for a reader of
    your own, the pixels its `read_masked` marks in every channel. None where no pixel
    can be no-data."""
    if not nodata_can_occur(source):
        return None
    if hasattr(source, "nodata_mask"):
        box = (top, left, bottom, right)
        return source.nodata_mask(*box, around_damage=True) if around_damage else source.nodata_mask(*box)
    _, mask = read_masked(source, top, left, bottom, right)
    return None if mask is None else np.asarray(mask).all(axis=0)


READ_PIXELS = 1 << 23  # the most of `inner`'s pixels (a band's) one read of a Downsampled source decodes at once


def _area_taps(start: int, stop: int, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """For the coarse pixels start..stop-1 along one axis, the fine pixels each covers
    and the share of it each has: (taps, n) indices and weights (0 where the square ends
    sooner), tap k of pixel i at floor(i * factor) + k. The weights are float32, as the
    pixels are and `area_means` sums them: float64 would show nothing more of an 8-bit
    or a 16-bit image."""
    low = np.arange(start, stop, dtype=np.float64) * factor
    high = np.arange(start + 1, stop + 1, dtype=np.float64) * factor
    first = np.floor(low).astype(np.int64)
    taps = first[None, :] + np.arange(math.ceil(factor) + (factor != int(factor)))[:, None]
    cover = np.minimum(taps + 1, high[None, :]) - np.maximum(taps, low[None, :])
    return taps, (np.maximum(cover, 0.0) / factor).astype(np.float32)


NODATA_OF_A_PICTURE = ("--nodata marks the no-data pixels of a raster read tile by tile (a TIFF or a zarr array); "
                       "this image is read as a picture (grey, RGB or RGBA), all of whose pixels are data")


def open_source(path: str | os.PathLike, channels: int, preprocess: dict | None, level: int = 0,
                bands: Sequence[int] | None = None, downsample: float = 1, mpp: float | None = None,
                nodata: float | None = None, resize: Sequence[int] | None = None, skip_damaged: bool = False):
    """The right source for `path`: TIFF and zarr lazily, other images through Pillow;
    `level` is a pyramid TIFF's level (0: full resolution), `bands` a raster's bands to
    read (1-based, in order; see the module), `downsample` the factor (whole or not) it is
    read coarser by (`Downsampled`); or `mpp`, the micrometres per pixel to read a slide
    at, which picks both (`resolution_for`). `nodata` (run --nodata) is the raster's
    no-data value, in place of the one its file declares, if any (a scene whose swath
    border is 0 with no GDAL no-data tag). `resize` (run --resize: H W, or the shorter
    side S) resizes a picture read whole (`PillowSource`). `skip_damaged` (run
    --skip-damaged) opens a TIFF cut short whose tiles past its end it will map around."""
    if mpp is not None:
        level, downsample = resolution_for(str(path), mpp)
    source = _open(str(path), channels, preprocess, level, bands, resize, skip_damaged)
    if nodata is not None:
        if not isinstance(source, ArrayLikeSource):
            raise GraphconvError(NODATA_OF_A_PICTURE, file=str(path))
        source.declared_nodata, source.nodata = source.nodata, float(nodata)
        source.nodata_given = True
    return Downsampled(source, downsample, f"--mpp {mpp:g}" if mpp is not None else None) if downsample > 1 else source


def channel_conversion(source) -> str | None:
    """What the image's bands become for the network's channels (`images.channel_conversion`:
    RGB to luma for a grey model, grey repeated for an RGB one, alpha left out), completing
    "the image is ..."; None where they are fed as stored (the same count, or --bands
    picked them)."""
    source = getattr(source, "inner", source)  # --downsample's: the image read is inner's
    from graphconv.images import channel_conversion as conversion, picture_bands

    if isinstance(source, PillowSource):
        stored = picture_bands(source.path)
        return None if stored is None else conversion(stored, source.channels, bands_flag=False)
    if getattr(source, "bands", None) is not None or not hasattr(source, "band_count"):
        return None
    return conversion(source.band_count, source.channels, bands_flag=True,
                      alpha_is_nodata=getattr(source, "alpha_band", None) is not None,
                      fourth_is_alpha=source.fourth_is_alpha)


def value_scaling(source) -> str | None:
    """How the image's pixels were brought onto 0..255 where they hold more than 8 bits
    and the spec's preprocess does not take them as stored (`images.deep_scaling`: "16-bit
    pixels were divided by 257 onto 0..255"); None for 8 bits or `values: stored`."""
    from graphconv.images import deep_scaling, value_scaling as picture_scaling

    source = getattr(source, "inner", source)  # --downsample's: the image read is inner's
    if source is None or getattr(source, "stored_values", False) or stores_values(getattr(source, "preprocess", None)):
        return None
    if isinstance(source, PillowSource):
        return picture_scaling(source.path)
    array = getattr(source, "array", None)
    return None if array is None else deep_scaling(np.dtype(array.dtype).name)


def eight_bit(source) -> bool:
    """Whether the image read holds 8 bits a channel: a picture of 8-bit mode
    (`images.eight_bit_picture`), a TIFF or zarr array of uint8."""
    from graphconv.images import eight_bit_picture

    source = getattr(source, "inner", source)
    if isinstance(source, PillowSource):
        return eight_bit_picture(source.path)
    array = getattr(source, "array", None)
    return array is not None and np.dtype(array.dtype) == np.uint8


MPP_TOLERANCE = 1.15  # how much finer than the slide's own pixels (as a ratio) --mpp may ask for
MPP_EQUAL = 1.02  # pixel sizes this close (as a ratio) count as the same: levels are seldom exact multiples


def resolution_for(path: str, mpp: float) -> tuple[int, float]:
    """(level, downsample) that read the slide at `path` at `mpp` micrometres per pixel:
    the coarsest pyramid level whose pixels are no larger than that (the least to read),
    area-averaged by the factor left (`Downsampled`). A factor within MPP_EQUAL of a
    whole one is taken whole, as blocks: a 0.25 µm/px scan with levels 4 and 16x coarser
    reaches 0.5 as level 0 in 2x2 blocks, 2.0 as level 1 in 2x2; a 0.2265 µm/px scan
    reaches 0.5 as level 0 2.2075x coarser. Asked for pixels finer than level 0's,
    which would take enlarging, it reads level 0 as it is where that is within
    MPP_TOLERANCE, and refuses beyond. The slide must say its pixel size
    (`_stated_pixel_size`)."""
    stated, heights = _pixel_size_and_level_heights(path)
    if isinstance(stated, str):
        raise GraphconvError(f"--mpp: the image does not state its pixel size ({stated}); pick --level and "
                             "--downsample (--mpp is a microscope's µm per pixel; for a scene of 10 m pixels read "
                             "as 20 m, --downsample 2)", file=path)
    microns = square_microns(stated)
    if microns is None:
        raise GraphconvError(f"--mpp: the image's pixels are not square ({stated[0]:.4g} µm high, {stated[1]:.4g} µm "
                             "wide) and graphconv reads square pixels; pick --level and --downsample", file=path)
    sizes = [microns * heights[0] / height for height in heights]  # µm per pixel, level by level
    level = max((k for k, size in enumerate(sizes) if size <= mpp * MPP_EQUAL), default=0)
    factor = mpp / sizes[level]
    if factor < 1 / MPP_TOLERANCE:
        raise GraphconvError(f"--mpp {mpp:g}: the slide's pixels are {microns:.4g} µm at level 0, more than "
                             f"{MPP_TOLERANCE - 1:.0%} larger; graphconv does not enlarge images", file=path)
    whole = max(1, round(factor))
    return (level, whole) if abs(math.log(factor / whole)) <= math.log(MPP_EQUAL) or factor < 1 else (level, factor)


def _pixel_size_and_level_heights(path: str) -> tuple[PixelSize, list[int]]:
    """A pyramid's level-0 pixel size (`PixelSize`) and each level's height, from its
    metadata alone."""
    if is_ome_zarr(path):
        image = _read_ome_zarr(path)
        return image.pixel_size, [height for height, _ in image.level_hw]
    if not is_tiff(path):
        raise GraphconvError("--mpp reads a slide at a pixel size its file states: give a TIFF (.svs, .ndpi, "
                             "OME-TIFF) or an OME-Zarr, or pick --level and --downsample", file=path)
    tifffile = require("tifffile")
    try:
        with tifffile_warnings_kept(), tifffile.TiffFile(path) as tif:  # a damaged file's warnings: said by the opener
            return _stated_pixel_size(tif), [_axis_sizes(level)[0] for _, _, level in pyramid_levels(tif)]
    except (tifffile.TiffFileError, ValueError, OSError, KeyError, IndexError) as err:
        raise GraphconvError(_unreadable_tiff(err, tifffile), file=path) from None


def _open(path: str, channels: int, preprocess: dict | None, level: int, bands: Sequence[int] | None,
          resize: Sequence[int] | None = None, skip_damaged: bool = False):
    from graphconv.images import refuse_camera_raw

    refuse_camera_raw(path)
    suffix = Path(path).suffix.lower()
    folder = Path(path)
    if resize is not None and (is_tiff(path) or is_ome_zarr(path) or suffix == ".zarr" or folder.is_dir()):
        raise GraphconvError(RESIZE_OF_A_RASTER, file=path)
    if is_tiff(path):
        return _tiff_source(path, channels, preprocess, level, bands, skip_damaged)
    if is_ome_zarr(path):
        return _ome_zarr_source(path, channels, preprocess, level, bands)
    if level:
        raise GraphconvError(f"--level {level}: only a pyramid (a TIFF such as .svs, .ndpi, OME-TIFF, or an "
                             "OME-Zarr) has levels; this image has one", file=path)
    if suffix == ".zarr" or (folder.is_dir() and ((folder / ".zarray").exists() or (folder / "zarr.json").exists())):
        return _zarr_source(path, channels, preprocess, bands)
    if bands is not None:
        raise GraphconvError("--bands picks bands of a raster (a TIFF or a zarr array); this image is read "
                             "as a picture (grey, RGB or RGBA)", file=path)
    return PillowSource(path, channels, preprocess, resize)


RESIZE_OF_A_RASTER = ("--resize resizes a picture (JPEG, PNG, ...) read whole; a TIFF or zarr image is read in "
                      "tiles: --downsample F or --mpp UM reads it coarser")


SPATIAL_NAMES = {"y": "Y", "x": "X", "lat": "Y", "lon": "X", "latitude": "Y", "longitude": "X", "row": "Y",
                 "col": "X", "rows": "Y", "cols": "X", "column": "X", "columns": "X", "height": "Y", "width": "X"}


def _arrays_in_group(zarr, path: str) -> str | None:
    """Where `path` is a zarr group (xarray's Dataset.to_zarr writes one, its image an array
    in it), which of its arrays of two dimensions or more to give instead; None where it
    is no group or holds none."""
    try:
        group = zarr.open_group(path, mode="r")
        arrays = [(name, array.shape) for name, array in group.arrays() if len(array.shape) >= 2]
    except Exception:  # not a group either: zarr's own message says what it is
        return None
    if not arrays:
        return None
    listed = ", ".join(f"{shown_path(os.path.join(path, name))} {'x'.join(map(str, shape))}" for name, shape in arrays)
    return f"it is a zarr group (as xarray writes a Dataset); give one of its arrays: {listed}"


def _zarr_source(path: str, channels: int, preprocess: dict | None, bands: Sequence[int] | None) -> ArrayLikeSource:
    """A zarr array, its axes as its dimension names place them (`_named_view`), a
    picture only where it looks like one (`_looks_like_picture`: zarr says nothing of
    it), its no-data value its `_FillValue` (`_zarr_nodata`)."""
    zarr = require("zarr")
    try:
        array = zarr.open_array(path, mode="r")
    except Exception as err:  # zarr raises several types for a folder that is not an array
        raise GraphconvError(f"cannot open as a zarr array: {_arrays_in_group(zarr, path) or err}",
                             file=path) from None
    view, axes = _named_view(array, path)
    source = ArrayLikeSource(path, view, channels, preprocess, axes=axes, bands=bands, picture=None)
    source.nodata = _zarr_nodata(array)
    source.zarr_array = array  # for `unstored_chunks_note`
    return source


def _named_view(array, path: str) -> tuple[object, str | None]:
    """A zarr array as ArrayLikeSource reads it, and its axes as tifffile names them
    ("SYX", "YXS", "YX"), from the dimension names xarray and rioxarray write (zarr 3's
    `dimension_names`, zarr 2's `_ARRAY_DIMENSIONS` attribute: ("band", "y", "x")). Any
    order is honoured: an array stored (x, y, band) or (x, y) is read through an
    `_AxesView` as (band, y, x), each box from its own pixels (read as (y, x, ...) it
    came out transposed). Names that place neither y nor x leave the shape to decide
    (`_layout`: None); names that place one of them and not the other are refused."""
    names = getattr(getattr(array, "metadata", None), "dimension_names", None) \
        or dict(array.attrs).get("_ARRAY_DIMENSIONS")
    if not names or len(names) != len(array.shape) or len(names) not in (2, 3):
        return array, None
    roles = [SPATIAL_NAMES.get(str(name).lower(), "S") for name in names]
    if "Y" not in roles and "X" not in roles:
        return array, None
    if roles.count("Y") != 1 or roles.count("X") != 1:
        raise GraphconvError(f"an image array of shape {tuple(array.shape)} with dimension names "
                             f"{', '.join(map(str, names))}: expected one y and one x axis (y, x; lat, lon; row, "
                             "col) and at most one other, its bands", file=path)
    if roles == ["Y", "X", "S"]:
        return array, "YXS"  # pixel-interleaved, read as it is
    kept = [axis for axis, role in enumerate(roles) if role == "S"] + [roles.index("Y"), roles.index("X")]
    axes = "S" * (len(kept) - 2) + "YX"
    return (array if kept == sorted(kept) else _AxesView(array, kept)), axes


def _looks_like_picture(dtype, band_count: int, counts: tuple[int, ...] = PICTURE_CHANNELS) -> bool:
    """Whether an array that cannot say it (zarr has no photometric tag, `_is_picture`)
    is a picture: 8-bit grey, RGB or RGBA, as photos and slides are kept. 16-bit or
    float data is a raster of bands (a scene's reflectances, a microscope's channels),
    whose first three need not be red, green and blue: it feeds fewer bands to a
    network only as --bands picks them, as a TIFF of bands does, and its bands are no
    colours for --skip-background's tissue test."""
    return np.dtype(dtype) == np.uint8 and band_count in counts


def _zarr_nodata(array) -> float | None:
    """A zarr array's no-data value: its `_FillValue` attribute, the CF convention's
    marker of missing data (xarray writes it so on zarr 3, a float's as the base64 of a
    little-endian double; other writers as a number or text, -9999 or "NaN"), or the
    fill_value of a float array where that is NaN (xarray's _FillValue on zarr 2; NaN
    is never a pixel's value). Not the fill_value otherwise: zarr's is 0 unless told,
    what a chunk never written reads as, and 0 is real data in most rasters (a dark
    pixel, sea level, a band's zero reflectance), so taking it for no-data would skip
    real pixels no one marked. None where there is none."""
    value = dict(array.attrs).get("_FillValue")
    if value is not None:
        return _fill_number(value)
    fill = getattr(array, "fill_value", None)
    if np.issubdtype(np.dtype(array.dtype), np.floating) and fill is not None and np.isnan(fill):
        return math.nan
    return None


def _fill_number(value) -> float | None:
    """A `_FillValue` attribute as a number: as JSON holds it, as text, or as xarray's
    base64 of a little-endian double; None where it is none of these."""
    import base64
    import binascii
    import struct

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        packed = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        return None
    return struct.unpack("<d", packed)[0] if len(packed) == 8 else None


# ---- OME-Zarr (OME-NGFF): a pyramid of zarr arrays and the axes and pixel size that say what they hold ---

MICRONS_PER_UNIT = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3, "centimeter": 1e4, "meter": 1e6,
                    "angstrom": 1e-4}


def is_ome_zarr(path: str | os.PathLike) -> bool:
    """Whether `path` is an OME-Zarr image: a zarr group whose attributes hold OME-NGFF's
    `multiscales` (0.4 and before: at the top, zarr 2; 0.5: under `ome`, zarr 3), as
    QuPath and ome-zarr-py write them, or bioformats2raw's layout, whose first image is
    such a group in its folder "0"."""
    return _ngff_image(Path(path)) is not None


def _ngff_image(folder: Path) -> Path | None:
    """The group folder of the image at `folder` (itself, or the largest of
    bioformats2raw's numbered images: `bioformats2raw_images`), or None."""
    if "multiscales" in _ngff_attrs(folder):
        return folder
    images = bioformats2raw_images(folder)
    return folder / str(_largest(images)) if images else None


def bioformats2raw_images(folder: Path) -> list[tuple[int, tuple[int, int]]]:
    """(number, level 0's (H, W)) of each image of bioformats2raw's layout at `folder`
    (its groups "0", "1", ... in turn; [] where it is none). A slide converted from VSI,
    CZI or SCN may hold its overview as image 0: graphconv reads the largest, as of a
    TIFF (`main_series`)."""
    if "bioformats2raw.layout" not in _group_attributes(folder):
        return []
    images: list[tuple[int, tuple[int, int]]] = []
    while "multiscales" in _ngff_attrs(image := folder / str(len(images))):
        images.append((len(images), _ngff_level0_hw(image)))
    return images


def _ngff_level0_hw(folder: Path) -> tuple[int, int]:
    """Level 0's (H, W) of the OME-Zarr image group at `folder`, from its metadata files
    alone; (0, 0) where they do not say (reading it says what is wrong)."""
    try:
        multiscale = _ngff_attrs(folder)["multiscales"][0]
        axes = [_axis_role(axis) for axis in multiscale.get("axes", "tczyx")]
        level0 = folder / str(multiscale["datasets"][0]["path"])
        meta = next(json.loads((level0 / name).read_text()) for name in (".zarray", "zarr.json")
                    if (level0 / name).is_file())
        return int(meta["shape"][axes.index("y")]), int(meta["shape"][axes.index("x")])
    except (OSError, ValueError, KeyError, IndexError, TypeError, StopIteration):
        return 0, 0


def _ngff_attrs(folder: Path) -> dict:
    """A group's OME-NGFF attributes: under `ome` in 0.5, at the top before."""
    attrs = _group_attributes(folder)
    ome = attrs.get("ome", attrs)
    return ome if isinstance(ome, dict) else {}


def _group_attributes(folder: Path) -> dict:
    """A zarr group's attributes read from its metadata file (zarr 2's .zattrs, zarr 3's
    zarr.json), without zarr; {} where there are none."""
    for name, key in ((".zattrs", None), ("zarr.json", "attributes")):
        try:
            attrs = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        attrs = attrs.get(key, {}) if key and isinstance(attrs, dict) else attrs
        if isinstance(attrs, dict):
            return attrs
    return {}


@dataclass
class _OmeZarr:
    """What an OME-Zarr image's metadata says, checked: its levels' arrays, the role of
    each axis ("c" for the channel axis, "y", "x", and the others' own names: t, z),
    each level's (H, W) and level 0's pixel width in micrometres (None: not stated)."""

    arrays: list
    axes: list[str]
    level_hw: list[tuple[int, int]]
    pixel_size: PixelSize


def _read_ome_zarr(path: str) -> _OmeZarr:
    """The image's first multiscale. Axes: NGFF 0.4 describes them as objects (the
    channel axis by its type, whatever its name), 0.3 names them, 0.1-0.2 do not (t, c,
    z, y, x). Any metadata that does not fit is one error naming the file."""
    zarr = require("zarr")
    try:
        folder = _ngff_image(Path(path))
        group = zarr.open_group(str(folder), mode="r")
        multiscale = _ngff_attrs(folder)["multiscales"][0]
        axes = [_axis_role(axis) for axis in multiscale.get("axes", "tczyx")]
        arrays = [group[str(dataset["path"])] for dataset in multiscale["datasets"]]
        pixel_size = _ome_zarr_pixel_size(multiscale, axes)
    except GraphconvError:
        raise
    except Exception as err:  # zarr and malformed metadata raise many types
        raise GraphconvError(f"cannot read as an OME-Zarr image: {type(err).__name__}: {shown(str(err))}",
                             file=path) from None
    if not arrays or not {"y", "x"} <= set(axes):
        raise GraphconvError(f"an OME-Zarr image with axes {', '.join(axes)} and {counted(len(arrays), 'level')}: "
                             "expected y and x among its axes, and a level", file=path)
    for level, array in enumerate(arrays):
        if len(array.shape) != len(axes):
            raise GraphconvError(f"level {level} has {len(array.shape)} axes; its metadata names {len(axes)}",
                                 file=path)
    level_hw = [(array.shape[axes.index("y")], array.shape[axes.index("x")]) for array in arrays]
    return _OmeZarr(arrays, axes, level_hw, pixel_size)


def _axis_role(axis) -> str:
    if isinstance(axis, dict):
        return "c" if axis.get("type") == "channel" else str(axis.get("name", "")).lower()
    return str(axis).lower()


def _ome_zarr_pixel_size(multiscale: dict, axes: list[str]) -> PixelSize:
    """Level 0's pixel (height, width) in micrometres: its y and x scales (times the
    multiscale's own, where it has one), in their axes' units; why not, where no unit of
    length says it, or the scale is kept in a file of its own (NGFF 0.4's `path`)."""
    sizes = []
    for name in ("y", "x"):
        axis = next((a for a in multiscale.get("axes", ()) if isinstance(a, dict) and _axis_role(a) == name), {})
        unit = str(axis.get("unit", ""))
        per_unit = MICRONS_PER_UNIT.get(unit.lower())
        if per_unit is None:
            return f"its {name} axis's unit is {shown(unit)}, not a length" if unit else NO_PIXEL_SIZE
        scale = 1.0
        for transforms in (multiscale["datasets"][0].get("coordinateTransformations", ()),
                           multiscale.get("coordinateTransformations", ())):
            for transform in transforms:
                if transform.get("type") == "scale":
                    if "scale" not in transform:
                        return "its scale is kept in a file of its own"
                    scale *= float(transform["scale"][axes.index(name)])
        if not (math.isfinite(scale) and scale > 0):
            return f"its {name} scale is {scale:g}"
        sizes.append(scale * per_unit)
    return sizes[0], sizes[1]


class _AxesView:
    """An array seen as ArrayLikeSource indexes one, (C, Y, X) or (Y, X): `kept` lists
    the array's axes the view has, in the view's order, and every other axis (an
    OME-Zarr level's time point, its z-slice) holds one position, read at 0. A box's
    slices (and `oindex`'s bands) go to zarr on the axes they name, and what zarr gives,
    in the array's own order, is put in the view's: a zarr array stored (x, y, band) or
    an OME-Zarr level (c, x, y) reads each box from its own pixels, not their mirror."""

    def __init__(self, array, kept: list[int]):
        self.array, self.kept = array, list(kept)
        self.shape, self.dtype = tuple(array.shape[k] for k in kept), array.dtype
        self.order = [sorted(self.kept).index(k) for k in self.kept]  # where zarr's result has each view axis
        self.oindex = _ViewIndex(self, array.oindex)

    def index(self, key) -> tuple:
        key = key if isinstance(key, tuple) else (key,)
        full = [0] * len(self.array.shape)
        for axis, part in zip(self.kept, key + (slice(None),) * (len(self.kept) - len(key))):
            full[axis] = part
        return tuple(full)

    def arranged(self, values) -> np.ndarray:
        return np.asarray(values).transpose(self.order)

    def __getitem__(self, key):
        return self.arranged(self.array[self.index(key)])


class _ViewIndex:
    def __init__(self, view: _AxesView, oindex):
        self.view, self.oindex = view, oindex

    def __getitem__(self, key):
        return self.view.arranged(self.oindex[self.view.index(key)])


def _ome_zarr_source(path: str, channels: int, preprocess: dict | None, level: int,
                     bands: Sequence[int] | None) -> ArrayLikeSource:
    image = _read_ome_zarr(path)
    if level >= len(image.arrays):
        raise GraphconvError(f"--level {level}: the image has {_level_list(image.level_hw)}", file=path)
    array, axes = image.arrays[level], image.axes
    deep = [f"{name} {size}" for name, size in zip(axes, array.shape) if name not in PLANE_AXES and size > 1]
    if deep:
        raise GraphconvError(f"an OME-Zarr image of shape {tuple(array.shape)} (axes {', '.join(axes)}) with "
                             f"{' and '.join(deep)} positions: graphconv maps one plane: save the one to map as "
                             "its own image", file=path)
    plane = _AxesView(array, [axes.index(name) for name in PLANE_AXES if name in axes])
    band_count = array.shape[axes.index("c")] if "c" in axes else 1
    source = ArrayLikeSource(path, plane, channels, preprocess, axes="SYX" if "c" in axes else "YX", bands=bands,
                             picture=_looks_like_picture(array.dtype, band_count, (1, 3)))  # 4: DAPI and 3 more
    source.nodata = _zarr_nodata(array)
    source.pixel_size_stated = image.pixel_size
    source.microns_per_pixel = square_microns(image.pixel_size)
    return _as_level(source, level, image.level_hw)


PLANE_AXES = ("c", "y", "x")  # the axes a map is of; any other must hold one position


def _tiff_source(path: str, channels: int, preprocess: dict | None, level: int,
                 bands: Sequence[int] | None, skip_damaged: bool = False) -> ArrayLikeSource:
    from graphconv.arrays import open_regular_file

    tifffile = require("tifffile")
    open_regular_file(path, "image", "image not found").close()  # not a pipe, a folder or a device
    try:
        with tifffile_warnings_kept() as warned:
            tif = tifffile.TiffFile(path)
            pyramid = pyramid_levels(tif)
            levels = [each for _, _, each in pyramid]
    except (tifffile.TiffFileError, ValueError, OSError, KeyError, IndexError) as err:
        raise GraphconvError(_unreadable_tiff(err, tifffile), file=path) from None
    if level >= len(levels):
        damage = f" (tifffile warned: {shown(warned[0], 120)}: is the file complete?)" if warned else ""
        raise GraphconvError(f"--level {level}: the image has {_level_list([_axis_sizes(each) for each in levels])}"
                             f"{damage}", file=path)
    page = getattr(levels[level], "keyframe", None) or main_page(tif)
    _refuse_pixels_past_the_end(path, page, level, warned, skip_damaged)
    stored = _decodable_array(path, *pyramid[level])
    array, axes, nodata = _as_shown(path, page, stored, _tiff_axes(levels[level]), _nodata(main_page(tif)))
    source = ArrayLikeSource(path, array, channels, preprocess, axes=axes, bands=bands,
                             picture=_is_picture(page) and _bands_are_samples(axes))
    source.nodata = nodata
    source.valid_pixels = mask = _internal_mask(path, tif, _axis_sizes(levels[level]))
    source.valid_pixels_from = None if source.valid_pixels is None else "internal"
    if source.valid_pixels is None and array is stored:
        source.valid_pixels, source.alpha_band = _alpha_plane(page, array, axes)
        if source.alpha_band is not None and _feeds_band(source, source.alpha_band):
            source.valid_pixels, source.alpha_fed, source.alpha_band = None, source.alpha_band, None
        source.valid_pixels_from = None if source.valid_pixels is None else "alpha"
    source.fourth_is_alpha = _fourth_is_alpha(page)
    source.held_bytes = _chunks_kept(stored) + _chunks_kept(mask)
    source.pixel_size_stated = _stated_pixel_size(tif)
    source.microns_per_pixel = square_microns(source.pixel_size_stated)  # at level 0
    source.tiff = tif  # keep the file open as long as the source lives
    source.tiff_page = page  # the level's, for `unstored_chunks_note`
    return _as_level(source, level, [_axis_sizes(each) for each in levels])


def _internal_mask(path: str, tif, level_hw: tuple[int, int]):
    """The TIFF's internal mask at the size of the level read, as a lazily read (H, W)
    array, 0 (or False) where a pixel is no data; None where it has none. GDAL writes one
    (GDAL_TIFF_INTERNAL_MASK, what cloud-optimised GeoTIFFs of JPEG carry, whose no-data
    cannot be a value: JPEG changes it) as pages of NewSubfileType 4, and one for each
    overview (5), which tifffile gives as a series of their own, with levels. Unread, the
    masked pixels, JPEG's noise around a scene's edge, went in as data."""
    for series in tif.series:
        if not _is_mask(series):
            continue
        levels = list(series.levels) if getattr(series, "levels", None) else [series]
        for index, each in enumerate(levels):
            if _axis_sizes(each) == level_hw and len(each.shape) == 2:
                return _decodable_array(path, series, index, each)
    return None


FILETYPE_MASK = 4  # TIFF's NewSubfileType bit of a transparency mask


def _is_mask(series) -> bool:
    return bool(int(getattr(series.keyframe, "subfiletype", 0) or 0) & FILETYPE_MASK)


def _is_plane(series) -> bool:
    """Whether a TIFF series is an image of rows and columns (tifffile gives others too)."""
    return {"Y", "X"} <= set(series.axes.upper())


def main_series(tif) -> int:
    """The index of the TIFF's image graphconv reads: the largest (height x width at full
    resolution) of its images that is no mask, the first of equal ones. A slide's label,
    macro and thumbnail are smaller than it and a z-stack's pages equal, so this is the
    first image of most files; but an OME-TIFF converted from VSI, CZI or SCN may hold
    the overview first and the slide after it, and reading the first mapped the overview
    (a few hundred pixels of a whole glass slide) without a word."""
    sizes = [(index, _axis_sizes(series)) for index, series in enumerate(tif.series)
             if not _is_mask(series) and _is_plane(series)]
    return _largest(sizes) if sizes else 0


def _largest(images: list[tuple[int, tuple[int, int]]]) -> int:
    """The number of the largest of (number, (H, W)) images by pixels, the first of equal ones."""
    return max(images, key=lambda each: (each[1][0] * each[1][1], -each[0]))[0]


def pyramid_levels(tif) -> list[tuple[Any, int, Any]]:
    """The levels of the image graphconv reads (`main_series`), finest first, each as (the
    series it is stored in, its level there, the level): tifffile's own (SubIFDs, an SVS's
    pages), or, for an image of one level, the images right after it in the file that
    each halve the last, of its bands and type (an OME-TIFF that stores each level as an
    OME Image of its own, which tifffile gives as series: read as images of their own,
    `--level 1` was refused, "the image has 1 level", and --mpp read level 0 only)."""
    read = main_series(tif)
    series = tif.series[read]
    if len(getattr(series, "levels", None) or ()) > 1:
        return [(series, index, level) for index, level in enumerate(series.levels)]
    pyramid = [(series, 0, series)]
    for after in tif.series[read + 1:]:
        if not _halves(after, pyramid[-1][2]):
            break
        pyramid.append((after, 0, after))
    return pyramid


def _halves(smaller, larger) -> bool:
    """Whether TIFF series `smaller` is `larger` at half its height and width (within a
    pixel, as pyramids round), of the same axes, type and bands."""
    if _is_mask(smaller) or not _is_plane(smaller) or smaller.axes != larger.axes or smaller.dtype != larger.dtype:
        return False
    others = zip(smaller.axes, smaller.shape, larger.shape)
    return all(size == bigger for axis, size, bigger in others if axis not in "YX") and all(
        abs(2 * small - big) <= 1 for small, big in zip(_axis_sizes(smaller), _axis_sizes(larger)))


def main_page(tif):
    """The first page of the image `main_series` picks: the one whose tags (no-data
    value, pixel size, GDAL's scale and offset) describe it."""
    series = tif.series[main_series(tif)] if tif.series else None
    return getattr(series, "keyframe", None) or tif.pages[0]
ALPHA_SAMPLES = (1, 2)  # TIFF ExtraSamples: associated and unassociated alpha (0 is a band of no stated meaning)


def _alpha_plane(page, array, axes: str):
    """(the TIFF's alpha band as a lazily read (H, W) array, its number from 1), or
    (None, None) where it has none: GDAL masks a dataset without an internal mask by its
    alpha band, a pixel of alpha 0 no data (gdalwarp -dstalpha, gdal_translate -b mask
    write such scenes, the swath outside transparent). Read as data, the area outside a
    warped scene's swath was scored as whatever colours it held. Of a TIFF's samples
    held in one plane of pixels only (axes YXS or SYX)."""
    extras = tuple(int(e) for e in getattr(page, "extrasamples", ()) or ())
    upper = axes.upper()
    if not any(e in ALPHA_SAMPLES for e in extras) or sorted(upper) != ["S", "X", "Y"]:
        return None, None
    first_alpha = next(i for i, e in enumerate(extras) if e in ALPHA_SAMPLES)
    index = getattr(page, "samplesperpixel", 1) - len(extras) + first_alpha
    return _SamplePlane(array, upper.index("S"), index), index + 1


def _feeds_band(source, band: int) -> bool:
    """Whether the network reads band `band` (from 1) of `source` as one of its channels:
    one --bands picks, or, without --bands, one of a raster of as many bands as channels
    (an RGBA picture fed to an RGB network drops its alpha)."""
    if source._band_index is not None:
        return band - 1 in source._band_index
    return source.band_count == source.channels and band <= source.band_count


def alpha_fed_note(source) -> str | None:
    """What to say of a TIFF whose band stored as alpha (ExtraSamples) the network reads as
    a channel: tifffile's default for a 4-band uint16 array (RGB and near infrared) is
    RGB plus alpha, and that band, also taken as GDAL's mask, made every pixel where the
    near infrared was 0 no-data (18% of a scene's cells left out, and others changed)."""
    band = getattr(source, "alpha_fed", None)
    if band is None:
        return None
    return (f"band {band} is stored as an alpha band (the file's ExtraSamples), but the model reads it as a "
            "channel: it is fed as data and not taken as a no-data mask (to mask with it, feed the other bands: "
            "--bands)")


def _fourth_is_alpha(page) -> bool:
    """Whether a TIFF of four samples stores an alpha as its 4th (ExtraSamples 1 or 2), not
    a band of unstated meaning (0: RGB and near infrared, as GDAL writes a 4-band scene)."""
    extras = tuple(int(e) for e in getattr(page, "extrasamples", ()) or ())
    return getattr(page, "samplesperpixel", 1) != 4 or (len(extras) == 1 and extras[0] in ALPHA_SAMPLES)


class _SamplePlane:
    """One sample (band) of a (Y, X, S) or (S, Y, X) array as a lazily read (H, W) array:
    slicing it reads that band of the box only."""

    def __init__(self, array, sample_axis: int, index: int):
        self.array, self.sample_axis, self.index = array, sample_axis, index
        self.shape = tuple(n for i, n in enumerate(array.shape) if i != sample_axis)

    def __getitem__(self, box: tuple[slice, slice]) -> np.ndarray:
        key = list(box)
        key.insert(self.sample_axis, self.index)
        return np.asarray(self.array[tuple(key)])


def _refuse_pixels_past_the_end(path: str, page, level: int, warned: list[str], skip_damaged: bool = False) -> None:
    """Refuse a level whose strips or tiles the file does not hold: a slide cut short in
    copying kept its first page's tags but lost its tile table, and tifffile reads such a
    level as zeros, so the map was the network on a black image, exit 0. (A tile of
    offset and length 0 is a sparse TIFF's empty tile, GDAL's SPARSE_OK: kept.) Where the
    table is whole but some of its tiles lie past the file's end (the file's tail lost),
    `skip_damaged` maps the rest: each such tile fails to decode as it is read (tifffile
    reads it short), as a damaged one does."""
    with tifffile_warnings_kept() as more:  # what it says of the missing tags, kept from stderr
        offsets, counts = tuple(page.dataoffsets), tuple(page.databytecounts)
    warned = warned + more
    size = os.path.getsize(path)
    if not offsets or len(offsets) != len(counts):
        damage = f" (tifffile warned: {shown(warned[0], 120)})" if warned else ""
        raise GraphconvError(f"is truncated or damaged: level {level}'s pixels are not in the file (its strip or "
                             f"tile table is missing){damage}", file=path)
    past = sum(1 for o, c in zip(offsets, counts) if c and o + c > size)
    some_left = past < sum(1 for c in counts if c)
    if past and not (skip_damaged and some_left):
        kind = "tiles" if getattr(page, "is_tiled", True) else "strips"
        raise GraphconvError(f"is truncated or damaged: {past} of level {level}'s {len(offsets)} {kind} lie past its "
                             f"{size}-byte end (cut short in copying or downloading?)"
                             f"{DAMAGED_HINT if some_left else ''}", file=path)


def check_tiff_opens(path: str) -> None:
    """Refuse a TIFF tifffile cannot open, in its words (`_unreadable_tiff`), its log lines
    kept from stderr: `cells` on a damaged map printed tifffile's "invalid offset to first
    page" and called the file "not a map graphconv wrote"."""
    tifffile = require("tifffile")
    try:
        with tifffile_warnings_kept(), tifffile.TiffFile(path) as tif:
            tif.pages[0]
    except (tifffile.TiffFileError, ValueError, OSError, KeyError, IndexError) as err:
        raise GraphconvError(_unreadable_tiff(err, tifffile), file=path) from None


def _unreadable_tiff(err: Exception, tifffile) -> str:
    """What to say of a file tifffile cannot open: its own message where it says what is
    wrong with the file ("not a TIFF file"), else that the file is no readable TIFF (an
    IndexError's "list index out of range" says nothing to a user)."""
    if isinstance(err, (tifffile.TiffFileError, OSError)) and str(err):
        return f"is not a readable TIFF image: {shown(str(err), 200)}"
    return "is not a readable TIFF image: its header or its first image's tags are damaged, or it is not a TIFF"


@contextlib.contextmanager
def tifffile_warnings_kept():
    """The messages tifffile logs meanwhile, kept instead of printed (Python prints a
    logger's warnings only where it has no handler): what it says of a truncated slide
    ("invalid page offset") goes into the error a pyramid with levels missing makes."""
    warned: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warned.append(record.getMessage())

    handler, logger = Collect(logging.WARNING), logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        yield warned
    finally:
        logger.removeHandler(handler)


def _as_level(source: ArrayLikeSource, level: int, level_hw: list[tuple[int, int]]) -> ArrayLikeSource:
    """`source`, told it is level `level` of a pyramid of `level_hw` (each level's (H, W))."""
    source.level, source.levels, source.level_hw = level, len(level_hw), level_hw
    source.full_hw = level_hw[0]  # level 0's (H, W): what a GeoTIFF's georeference counts in
    source.downsample = source.full_hw[0] / source.height  # how much coarser than level 0
    return source


def _is_picture(page) -> bool:
    """Whether a TIFF holds a picture (grey, or RGB with or without alpha, as `_as_shown`
    reads it), not a raster of bands: what may convert to a network's channels without
    --bands. One sample is grey only where the photometric says grey (a palette's is
    read as RGB; a camera's raw mosaic is no grey picture)."""
    samples = getattr(page, "samplesperpixel", 1)
    photometric = _photometric(page)
    if photometric == "SEPARATED":
        return _is_cmyk(page)
    return photometric in ("RGB", "YCBCR", "PALETTE") or samples == 1 and photometric in GREY_PHOTOMETRICS


def _bands_are_samples(axes: str) -> bool:
    """Whether a TIFF's bands are the samples of its pixels (axes YXS or SYX, or one band):
    a picture's colours are. Three grey pages in one series (axes QYX, ZYX: a z-stack or
    a time series) were read as red, green and blue and fed as luma without a word."""
    return all(axis in "SYX" for axis in axes.upper())


GREY_PHOTOMETRICS = ("MINISBLACK", "MINISWHITE")
LOW_BITS = (1, 2, 4)  # grey samples of fewer than 8 bits: Pillow spreads them over 0..255 (x255, x85, x17)
INKSET_CMYK = 1  # TIFF's InkSet (tag 332): 1 (the default) cyan, magenta, yellow, black; 2 other inks


def _photometric(page) -> str:
    return getattr(getattr(page, "photometric", None), "name", "")


def _is_cmyk(page) -> bool:
    """Whether a SEPARATED page holds plain CMYK (InkSet 1, four samples, and any extra
    ones such as alpha, which are left out as an RGBA picture's alpha is), Pillow's "CMYK"."""
    inkset = page.tags.get(332)
    inks = getattr(page, "samplesperpixel", 1) - len(getattr(page, "extrasamples", ()) or ())
    return (inkset is None or inkset.value == INKSET_CMYK) and inks == 4


def _as_shown(path: str, page, array, axes: str, nodata: float | None) -> tuple[object, str, float | None]:
    """A TIFF level's array, axes and no-data value as the picture a viewer shows, as
    Pillow converts it: a palette's indices looked up in its colour map (RGB), MINISWHITE
    grey inverted (max - stored), grey of 1, 2 or 4 bits spread over 0..255, CMYK made
    RGB. Fed as stored, a palette went in as its indices taken for grey (up to 240 off)
    and a fax's white as black. Each conversion is pointwise, applied to each window
    read (`_ShownView`), so a huge TIFF still decodes only the tiles under a box. The
    no-data value is the stored one's shown value where that is one value (inversion,
    spreading), else none (a palette index or a CMYK sample is no RGB value)."""
    photometric, bits = _photometric(page), getattr(page, "bitspersample", 8)
    dtype = np.dtype(array.dtype)
    converted = photometric in ("PALETTE", "MINISWHITE") or photometric == "MINISBLACK" and bits in LOW_BITS \
        or photometric == "SEPARATED" and _is_cmyk(page)
    plane = ("SYX", "YXS") if photometric == "SEPARATED" else ("YX",)
    if converted and axes.upper() not in plane:
        raise GraphconvError(f"a {photometric} TIFF of shape {tuple(array.shape)} (axes {axes}): graphconv converts "
                             "such a TIFF's pixels to those it shows in one plane of pixels; save the one to map as "
                             "its own file", file=path)
    if photometric == "SEPARATED" and _is_cmyk(page):
        return _ShownView(array, axes, _cmyk_to_rgb, 3, _kind(dtype, path, "CMYK")), "YXS", None
    if photometric == "PALETTE":
        table = _palette_rgb(page, path, bits)
        return _ShownView(array, axes, lambda indices: table[indices], 3, np.dtype(np.uint8)), "YXS", None
    if photometric not in GREY_PHOTOMETRICS or (photometric == "MINISBLACK" and bits not in LOW_BITS):
        return array, axes, nodata
    grey = _grey_shown(photometric == "MINISWHITE", bits, dtype, path)
    out_dtype = np.dtype(np.uint8) if bits in LOW_BITS else dtype
    shown_nodata = None if nodata is None or dtype.kind not in "ui" or held_integer(nodata, dtype) is None \
        else float(grey(np.array([held_integer(nodata, dtype)], dtype))[0])
    return _ShownView(array, axes, grey, None, out_dtype), "YX", shown_nodata


def _kind(dtype: np.dtype, path: str, what: str) -> np.dtype:
    """`dtype`, where a `what` TIFF of it can be converted (8 or 16 bits, float)."""
    if dtype in (np.uint8, np.uint16) or np.issubdtype(dtype, np.floating):
        return dtype
    raise GraphconvError(f"a {what} TIFF of {dtype} samples: graphconv converts 8- and 16-bit or float ones",
                         file=path)


def _palette_rgb(page, path: str, bits: int) -> np.ndarray:
    """(2**bits, 3) uint8: the page's colour map as Pillow reads it, each 16-bit value's
    high byte; entries a damaged map lacks are black (an index past its end looked up
    in it would stop the read with an IndexError)."""
    colormap = page.tags.get(320)
    table = np.asarray(colormap.value if colormap is not None else (), np.uint16)
    if table.ndim == 1 and table.size and table.size % 3 == 0:
        table = table.reshape(3, -1)
    if table.ndim != 2 or table.shape[0] != 3 or table.shape[1] < 2:
        raise GraphconvError("a palette TIFF without a colour map of three rows (red, green, blue) to look its "
                             "indices up in", file=path)
    rgb = np.zeros((max(1 << bits, table.shape[1]), 3), np.uint8)
    rgb[:table.shape[1]] = (table >> 8).astype(np.uint8).T
    return rgb


def _grey_shown(inverted: bool, bits: int, dtype: np.dtype, path: str):
    """The pointwise map from stored grey to shown: max - stored where MINISWHITE (max =
    2**bits - 1), then x255/max for 1, 2 or 4 bits (Pillow's "1" and "L;4")."""
    if inverted and not np.issubdtype(dtype, np.unsignedinteger) and dtype != np.bool_:
        raise GraphconvError(f"a MINISWHITE (inverted grey) TIFF of {dtype} samples: graphconv inverts unsigned "
                             "integer ones; save it as MINISBLACK", file=path)
    top = (1 << bits) - 1
    spread = 255 // top if bits in LOW_BITS else 1
    work = np.uint8 if bits in LOW_BITS else dtype.type

    def grey(stored: np.ndarray) -> np.ndarray:
        values = stored.astype(work, copy=False)
        if inverted:
            values = work(top) - values
        return values * np.uint8(spread) if spread != 1 else values
    return grey


def _cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """(h, w, 3) RGB of (h, w, 4) CMYK as Pillow converts it: R = (max - C)(max - K) / max,
    for 8 bits rounded exactly as Pillow's MULDIV255, for 16 bits to the nearest value,
    for floats on 0..1 unrounded."""
    if np.issubdtype(cmyk.dtype, np.floating):
        return (1 - cmyk[..., :3]) * (1 - cmyk[..., 3:4])
    top = np.iinfo(cmyk.dtype).max
    product = (top - cmyk[..., :3].astype(np.int64)) * (top - cmyk[..., 3:4].astype(np.int64))
    if cmyk.dtype == np.uint8:
        product += 128
        return ((product + (product >> 8)) >> 8).astype(np.uint8)
    return ((product + top // 2) // top).astype(cmyk.dtype)


class _ShownView:
    """A TIFF level's (H, W) or (H, W, S) / (S, H, W) zarr array seen as (H, W) grey or
    (H, W, `bands`) colour, `convert` applied to each window read: `convert` takes the
    window as stored, samples last, and gives it as shown (`_as_shown`)."""

    def __init__(self, array, axes: str, convert, bands: int | None, dtype: np.dtype):
        self.array, self.convert, self.dtype = array, convert, dtype
        self.planar = axes.upper().startswith("S")
        height, width = _axis_sizes(_Shaped(array.shape, axes))
        self.shape = (height, width) if bands is None else (height, width, bands)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        rows, cols = (key + (slice(None), slice(None)))[:2]
        stored = np.asarray(self.array[:, rows, cols]).transpose(1, 2, 0) if self.planar \
            else np.asarray(self.array[rows, cols])
        return self.convert(stored)[(slice(None), slice(None)) + key[2:]]


@dataclass
class _Shaped:
    shape: tuple
    axes: str


GDAL_NODATA = 42113  # the TIFF tag GDAL writes a raster's no-data value in, as text
GDAL_METADATA = 42112  # and its other metadata, as XML (band scales and offsets: `stated_scaling`)


def _quiet_about_gdal_nodata(record: logging.LogRecord) -> bool:
    """False for tifffile's complaint that it cannot parse a GDAL_NODATA tag as the
    image's type ("0.0 " on uint8, as GDAL writes it): graphconv reads the tag itself
    (`_nodata`), and the line printed amid a run's output looked like an error."""
    try:
        return "parsing GDAL_NODATA tag" not in record.getMessage()
    except (TypeError, ValueError):  # a record whose arguments do not fit its message
        return True


logging.getLogger("tifffile").addFilter(_quiet_about_gdal_nodata)


def _nodata(page) -> float | None:
    """The raster's no-data value (GDAL's tag: "0", "-9999", "nan"), or None (for a tag
    that is no number too: `unread_nodata_note` says so)."""
    tag = page.tags.get(GDAL_NODATA)
    try:
        return float(_nodata_text(tag)) if tag is not None else None
    except ValueError:
        return None


def _nodata_text(tag) -> str:
    return str(tag.value).strip().strip("\x00")


def unread_nodata_note(source) -> str | None:
    """What to say of a TIFF whose GDAL_NODATA tag is no number ("abc", "none"): the tag
    is put aside and every pixel is data, which was said nowhere (tifffile's own warning
    is filtered out: `_quiet_about_gdal_nodata`), so a swath's border went in as data.
    Likewise of a no-data value (the tag's, a zarr's fill value or --nodata) that the
    pixels' type cannot hold (-9999 in 8 bits: GDAL writes such tags)."""
    source = getattr(source, "inner", getattr(source, "unpadded", source))
    tif = getattr(source, "tiff", None)
    tag = main_page(tif).tags.get(GDAL_NODATA) if tif is not None else None
    given = getattr(source, "nodata_given", False)
    if tag is not None and _nodata(main_page(tif)) is None and not given:
        return (f"its GDAL_NODATA tag {shown(_nodata_text(tag), 40)} is not a number, so it is put aside and every "
                "pixel is read as data (give the no-data value with --nodata)")
    value = getattr(source, "missing_value", None)
    if value is None or getattr(source, "_missing_value_held", True):
        return None
    said = f"--nodata {value:g}" if given else f"its no-data value {value:g}"
    return (f"{said} is no value its {np.dtype(source.array.dtype)} pixels can hold, so no pixel is no-data and "
            "every cell is computed (GDAL reads it so too)")


def tiff_notes(source, mask_given: bool = False) -> list[str]:
    """What to say of the TIFF `source` reads before its run (each completing "note: "):
    a no-data tag put aside, an internal mask not read (none where --mask is given:
    `mask_given`), a scale and offset GDAL states and no reader applies, images of the
    file it does not read, an alpha band fed as data, tiles or chunks not stored."""
    return [said for said in (unread_nodata_note(source), internal_mask_note(source, mask_given),
                              scale_offset_note(source), unread_images_note(source), alpha_fed_note(source),
                              unstored_chunks_note(source))
            if said]


def unstored_chunks_note(source) -> str | None:
    """What to say of a zarr image some of whose chunks are not stored, or a TIFF some of
    whose tiles are (offset and length 0, GDAL's SPARSE_OK): each is read as the fill
    value (a TIFF's 0), as it should be for a sparse image, and as it is for chunks lost
    (a copy cut short, a chunk deleted), which the run mapped as pixels of that value
    without a word (a review: 9806 cells of a black square)."""
    source = getattr(source, "inner", getattr(source, "unpadded", source))
    page, array = getattr(source, "tiff_page", None), getattr(source, "zarr_array", None)
    if page is not None:  # a sparse TIFF's tile (GDAL's SPARSE_OK): offset and length 0, read as 0
        chunks, fill = len(page.dataoffsets), 0
        stored = sum(1 for offset, count in zip(page.dataoffsets, page.databytecounts) if offset or count)
        kind, what = ("tiles" if page.is_tiled else "strips"), "TIFF's"
        why = "as a sparse TIFF's are (GDAL's SPARSE_OK)"
    elif array is not None:
        try:
            stored, chunks = array.nchunks_initialized, array.nchunks
        except Exception:  # noqa: BLE001 - a store that cannot list its keys: nothing to say
            return None
        fill = getattr(array.fill_value, "item", lambda: array.fill_value)()
        kind, what = "chunks", "zarr array's"
        why = "as zarr leaves out a chunk holding nothing but its fill value (its default: a scene's empty corners)"
    else:
        return None
    if stored >= chunks:
        return None
    missing = chunks - stored
    return (f"{missing} of the {what} {chunks} {kind} {agreeing(missing, 'is', 'are')} not stored, and read as "
            f"{fill}, {why}; one lost in copying would read the same")


def unread_images_note(source) -> str | None:
    """What to say of a TIFF holding other images than the one read (`main_series`, the
    largest), which tifffile gives as series of their own: a larger one read past the
    first (an OME-TIFF converted from VSI, CZI or SCN holding the overview first: it is
    said which is read, so that a user who meant the overview knows), or pages of its
    size written one by one (a z-stack, a time series), of which only the first is read.
    A slide's label, macro and thumbnail, smaller than it, and a mask (NewSubfileType 4)
    are not counted."""
    source = getattr(source, "inner", getattr(source, "unpadded", source))
    tif = getattr(source, "tiff", None)
    if tif is None:
        return _unread_bioformats2raw_images_note(getattr(source, "path", None))
    if len(tif.series) < 2:
        return None
    read = main_series(tif)
    h, w = _axis_sizes(tif.series[read])
    if read and _is_plane(tif.series[0]):
        first = _axis_sizes(tif.series[0])
        return (f"the file holds {counted(len(tif.series), 'image')}; graphconv reads the largest, image {read} "
                f"(counting from 0), of {h}x{w} pixels, not the first, of {first[0]}x{first[1]} (an overview "
                "stored before the slide?). To map another, write it as a file of its own (bfconvert -series N)")
    same = [index for index, series in enumerate(tif.series) if index and not _is_mask(series)
            and _is_plane(series) and _axis_sizes(series) == (h, w)]
    if not same:
        return None
    return (f"the file holds {counted(len(same) + 1, 'image')} of {h}x{w} pixels (pages written one by "
            "one: a z-stack, a time series, or bands as separate images?); only the first is read. To feed them as "
            "one image's bands, write them as one (tifffile.imwrite(path, stack) with the stack's axes, or "
            "gdal_merge.py -separate)")


def _unread_bioformats2raw_images_note(path) -> str | None:
    """What to say of bioformats2raw's folder whose largest image, the one read, is not
    its first; each image is an OME-Zarr of its own, so another is read by its folder."""
    images = bioformats2raw_images(Path(path)) if isinstance(path, (str, os.PathLike)) else []
    read = _largest(images) if images else 0
    if not read:
        return None
    (h, w), first = images[read][1], images[0][1]
    return (f"the folder holds {counted(len(images), 'image')} (bioformats2raw's layout); graphconv reads the "
            f"largest, image {read}, of {h}x{w} pixels, not the first, of {first[0]}x{first[1]} (an overview "
            f"stored before the slide?). To map another, give its folder: {shown_path(os.path.join(path, '0'))}")


GDAL_SCALING_ITEM = re.compile(r'<Item\s+name="(SCALE|OFFSET)"\s+sample="(\d+)"\s+role="(?:scale|offset)"\s*>'
                               r"\s*([^<]*?)\s*</Item>")


def stated_scaling(tif) -> dict[str, dict[int, float]]:
    """The per-band scale and offset GDAL's metadata tag states ({"SCALE": {band from 0:
    value}, "OFFSET": {...}}), the numbers only: read with a pattern, not an XML parser,
    as the tag is the file's text."""
    tag = main_page(tif).tags.get(GDAL_METADATA) if tif is not None and tif.pages else None
    stated: dict[str, dict[int, float]] = {"SCALE": {}, "OFFSET": {}}
    for name, band, value in GDAL_SCALING_ITEM.findall(str(tag.value) if tag is not None else ""):
        with contextlib.suppress(ValueError):
            stated[name][int(band)] = float(value)
    return stated


def scale_offset_note(source) -> str | None:
    """What to say of a TIFF whose GDAL metadata states a scale or offset for its bands
    (physical value = stored x scale + offset: a reflectance product stored as integers):
    graphconv feeds the values as stored, as GDAL and rasterio read them (neither applies
    them), which is right for a model trained on the stored numbers and wrong, without a
    word, for one trained on the physical ones (scores 0.997 off in a review). None where
    the file states none, or no offset and the spec already takes the values as stored at
    that scale (an offset may or may not be in the spec's mean: said)."""
    stated = stated_scaling(getattr(source, "tiff", None))
    scales = {band: v for band, v in stated["SCALE"].items() if v != 1}
    offsets = {band: v for band, v in stated["OFFSET"].items() if v != 0}
    if not scales and not offsets:
        return None
    preprocess = getattr(source, "preprocess", None) or {}
    file_scales = set(stated["SCALE"].values()) or {1.0}
    if not offsets and stores_values(preprocess) and len(file_scales) == 1 \
            and math.isclose(float(preprocess.get("scale", 1)), file_scales.pop()):
        return None
    bands = sorted(set(scales) | set(offsets))
    rules = {band: (stated["SCALE"].get(band, 1.0), stated["OFFSET"].get(band, 0.0)) for band in bands}
    if len(set(rules.values())) == 1 and len(bands) == len(set(stated["SCALE"]) | set(stated["OFFSET"])):
        said = f"every band: {_scaling_rule(*rules[bands[0]])}"
    else:
        said = "; ".join(f"band {band + 1}: {_scaling_rule(*rules[band])}" for band in bands[:4])
        said += " ..." if len(bands) > 4 else ""
    offset = rules[bands[0]][1]
    fold = f" (so {'-' if offset > 0 else '+'} {abs(offset):g} for band {bands[0] + 1})" if offset else ""
    return (f"its GDAL metadata states a scale and offset ({said}), which graphconv does not apply, as GDAL and "
            "rasterio do not: the network gets the values as stored. For a model trained on the scaled values, "
            f"give them in the spec's preprocess: values: stored, scale: the file's, and each mean less the "
            f"offset{fold}")


def _scaling_rule(scale: float, offset: float) -> str:
    return f"stored x {scale:g}" + (f" {'-' if offset < 0 else '+'} {abs(offset):g}" if offset else "")


MASK_PAGES_LOOKED_AT = 64  # pages of a TIFF `internal_mask_note` looks through (a pyramid has a dozen)


def internal_mask_note(source, mask_given: bool = False) -> str | None:
    """What to say of a TIFF that holds an internal mask (a page of NewSubfileType 4, as
    GDAL writes with GDAL_TIFF_INTERNAL_MASK, common in cloud-optimised GeoTIFFs) that is
    not read (`_internal_mask` finds none of the size of the level read, or of one plane):
    the pixels it marks invalid go in as data. The note says how to give it (none where a
    --mask is given: `mask_given`)."""
    tif = getattr(source, "tiff", None)
    if tif is None or mask_given or getattr(source, "valid_pixels", None) is not None:
        return None
    for index, page in enumerate(tif.pages[:MASK_PAGES_LOOKED_AT]):
        if int(getattr(page, "subfiletype", 0) or 0) & FILETYPE_MASK:
            return (f"its page {index} is an internal mask (GDAL's) not of the size of the level read, which "
                    "graphconv does not read: the pixels it "
                    "marks invalid are read as data. Where they hold one value, give it as --nodata (they then go "
                    "in as 0 after the preprocess, and cells mostly over them are left out); else give the mask "
                    "as --mask (tifffile.imwrite('mask.tif', tifffile.imread(IMAGE, "
                    f"key={index}), photometric='minisblack')), which only chooses the cells computed: masked "
                    "pixels in a computed cell's crop still go in as data")
    return None


INCH, CENTIMETER = 2, 3  # TIFF's ResolutionUnits (1: none; inches are what screens' 72 dpi fill in)
MICROSCOPE_MICRONS = 5.0  # an inch resolution finer than this a pixel (5080 dpi) is a microscope's, not a screen's

PixelSize = tuple[float, float] | str
"""Level 0's pixel (height, width) in micrometres as a file states it, or, where it
does not, why not (a phrase for messages)."""

NO_PIXEL_SIZE = "no Aperio MPP, OME PhysicalSizeX, OME-Zarr scale or resolution in centimetres"
OME_MICRONS_PER_UNIT = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "Å": 1e-4, "pm": 1e-6}
"""OME's UnitsLength symbols that a microscope's pixel may be given in (its default: µm)."""


def square_microns(size: PixelSize) -> float | None:
    """The side of a square pixel in micrometres; None where unstated, or not square
    within MPP_EQUAL (a map's cells then have no single size to state)."""
    if isinstance(size, str):
        return None
    height, width = size
    return width if abs(math.log(height / width)) <= math.log(MPP_EQUAL) else None


def _stated_pixel_size(tif) -> PixelSize:
    """Level 0's pixel size where the file says it: Aperio's "MPP = 0.2520" in its
    description, OME's PhysicalSizeY/X in their units, or a resolution in pixels per
    centimetre (Hamamatsu's NDPI) or per inch where that is a microscope's (101600 dpi:
    0.25 µm); a coarser inch resolution is a screen's (72 dpi) or a scanner's, no
    pixel size of the scene."""
    series = tif.series[main_series(tif)]
    page = getattr(series, "keyframe", None) or tif.pages[0]
    aperio = re.search(r"\bMPP\s*=\s*([0-9]*\.?[0-9]+)", page.description or "")
    if aperio:
        return float(aperio.group(1)), float(aperio.group(1))
    ome = _ome_pixel_size(tif.ome_metadata or "", _axis_sizes(series)) if tif.is_ome else NO_PIXEL_SIZE
    if not (ome == NO_PIXEL_SIZE and page.tags.get("XResolution") is not None):
        return ome
    unit = int(page.tags["ResolutionUnit"].value) if "ResolutionUnit" in page.tags else INCH  # TIFF's default
    per_pixel = [_length_per_pixel(page.tags.get(tag) or page.tags["XResolution"]) for tag in ("YResolution",
                                                                                           "XResolution")]
    if None in per_pixel or unit not in (INCH, CENTIMETER):
        return NO_PIXEL_SIZE
    microns = tuple((25400.0 if unit == INCH else 1e4) * length for length in per_pixel)
    if unit == INCH and max(microns) > MICROSCOPE_MICRONS:
        return (f"its resolution is {1 / per_pixel[1]:.6g} pixels per inch ({microns[1]:.4g} µm a pixel), which "
                "graphconv takes for a screen's or a document scanner's, not a microscope's")
    return microns


def _length_per_pixel(tag) -> float | None:
    pixels, per = tag.value
    return per / pixels if pixels and per else None


def _ome_pixel_size(xml: str, hw: tuple[int, int] | None = None) -> PixelSize:
    """The PhysicalSizeY/X of OME-XML's first Pixels element of `hw` (height, width; the
    first element where none is of it or `hw` is None), in micrometres (a missing Y is
    X's, as square pixels have it). Its size picks the element: the image read may not
    be the first (`main_series`), and tifffile skips images it cannot read, so the
    image's number is no element's."""
    elements = [dict(re.findall(r'(\w+)="([^"]*)"', each)) for each in re.findall(r"<(?:\w+:)?Pixels\b[^>]*>", xml)]
    sized = [each for each in elements if hw is not None and (each.get("SizeY"), each.get("SizeX")) == tuple(
        str(n) for n in hw)]
    attributes = (sized or elements or [{}])[0]
    if "PhysicalSizeX" not in attributes:
        return NO_PIXEL_SIZE
    sizes = []
    for axis in ("Y", "X"):
        axis = axis if f"PhysicalSize{axis}" in attributes else "X"
        unit = attributes.get(f"PhysicalSize{axis}Unit", "µm")
        if unit not in OME_MICRONS_PER_UNIT:
            return f"its OME PhysicalSize{axis}Unit is {shown(unit)}, not a length"
        try:
            size = float(attributes[f"PhysicalSize{axis}"]) * OME_MICRONS_PER_UNIT[unit]
        except ValueError:
            return f"its OME PhysicalSize{axis} is {shown(attributes[f'PhysicalSize{axis}'])}"
        if not (math.isfinite(size) and size > 0):
            return f"its OME PhysicalSize{axis} is {size:g}"
        sizes.append(size)
    return sizes[0], sizes[1]


def _axis_sizes(level) -> tuple[int, int]:
    """(H, W) of a TIFF series or pyramid level."""
    axes = _tiff_axes(level)
    return level.shape[axes.index("Y")], level.shape[axes.index("X")]


def _tiff_axes(level) -> str:
    """A TIFF series' or level's axes as tifffile names them, but where it names one Q (no
    name: an array given to tifffile bare, `imwrite('x.tif', hwc)`, its shape kept in the
    description and its first axis stored as pages), as a bare array's are told: a
    (60, 80, 5) scene had been read as 60 bands of 80x5 pixels. Its bands are channels (C),
    not a picture's samples (S): grey pages, or grey values, are no colours."""
    axes = level.axes.upper()
    if "Q" not in axes or len(level.shape) != 3:
        return axes
    return {"hwc": "YXC", "chw": "CYX", None: axes}[_guessed_layout(level.shape, (PICTURE_CHANNELS,))]


def _level_list(level_hw: list[tuple[int, int]]) -> str:
    sizes = ", ".join(f"{i}: {h}x{w}" for i, (h, w) in enumerate(level_hw))
    return f"{counted(len(level_hw), 'level')} ({sizes})"


def _decodable_array(path: str, series, level: int, pages):
    """Level `level` of the series as a lazily read zarr array, one pixel of it decoded
    now: a compression this install cannot decode (JPEG or JPEG 2000, what most slides
    hold, without imagecodecs) is one clear error before the run, not a failure at the
    first tile; a strip or tile too large to decode within the memory budget too. The
    chunks it decodes are kept (`_kept_chunks`). (Without `level`, tifffile gives a
    pyramid as a group of all its levels.)"""
    from graphconv.memory import check_fits, memory_limit

    zarr = require("zarr")
    try:
        store = _kept_chunks(series.aszarr(level=level))
        array = zarr.open_array(store, mode="r")
        itemsize = np.dtype(array.dtype).itemsize
        chunk, row = math.prod(array.chunks) * itemsize, math.prod(array.shape) * itemsize // _axis_sizes(pages)[0]
        check_fits(DECODE_BYTES_PER_CHUNK_BYTE * chunk, f"decoding one {_chunk_name(pages)} of "
                   f"{' x '.join(map(str, array.chunks))} values", file=path)
        store.budget = max(chunk, min(int(KEPT_SHARE * memory_limit()), ROWS_KEPT * row))
        np.asarray(array[(slice(0, 1),) * len(array.shape)])
    except GraphconvError:
        raise
    except Exception as err:  # tifffile, zarr and the codecs raise many types for what they cannot decode
        raise GraphconvError(f"cannot decode its pixels{_chunk_failure(err)}{_codec_hint(pages)}", file=path) from None
    return array


def _chunks_kept(array) -> int:
    """The bytes of decoded chunks `_decodable_array`'s store may keep for `array`: 0 for
    None, or a store that keeps none (zarr 2's)."""
    return getattr(getattr(array, "store", None), "budget", 0)


DECODE_BYTES_PER_CHUNK_BYTE = 2  # a chunk's decoded values and, at most as large, the compressed bytes read
KEPT_SHARE = 0.25  # of the memory budget, the most `_kept_chunks` keeps
ROWS_KEPT = 1024  # the level's rows whose chunks `_kept_chunks` keeps (or one chunk, where that is more)


def _chunk_name(pages) -> str:
    return "tile" if getattr(getattr(pages, "keyframe", None), "is_tiled", False) else "strip"


def _kept_chunks(store):
    """tifffile's zarr store with the chunks it decoded kept, the least recently read
    dropped first, up to `budget` bytes (`_decodable_array`: a row of tiles' worth,
    ROWS_KEPT rows of the level, within KEPT_SHARE of the memory budget, or one chunk
    where that is more: decoding one already took twice that). tifffile's chunk is a TIFF's strip or tile, decoded whole for
    every read that touches it: a 12-band 3000x3000 uint16 TIFF written as one zlib
    strip was decoded whole, 216 MB, for each of its 36 tiles (37 s, where a tiled TIFF
    of the same pixels took 2.5 s); a striped one of a few rows a strip, once for each
    tile across. Kept, a chunk is decoded once while the budget holds it. Without zarr
    3's WrapperStore (zarr 2), the store as it is."""
    global _KeptChunks
    if _KeptChunks is None:
        try:
            from zarr.storage import WrapperStore
        except ImportError:
            return store
        _KeptChunks = _kept_chunks_class(WrapperStore)
        logging.getLogger("asyncio").addFilter(_drop_sibling_chunk_errors)
        warnings.filterwarnings("ignore", message=r"coroutine 'concurrent_map\.", category=RuntimeWarning)
        sys.unraisablehook = _unraisable_hook_without_sibling_reads(sys.unraisablehook)
    return _KeptChunks(store)


def _drop_sibling_chunk_errors(record: logging.LogRecord) -> bool:
    """False for what asyncio logs about the other chunks of a tile that failed to
    decode: zarr reads a tile's chunks as concurrent tasks and raises the first failure
    (graphconv reports it as one line, naming the rows), and as the process ends asyncio
    logs each other failed task's traceback ("Task exception was never retrieved") and
    each unfinished one ("Task was destroyed but it is pending!"): a truncated slide
    printed a hundred lines after its one-line error."""
    error = record.exc_info[1] if record.exc_info else None
    if getattr(error, CHUNK_ERROR_MARK, False):
        return False
    return not (_CHUNK_FAILED and str(record.msg).startswith("Task was destroyed but it is pending"))


def _unraisable_hook_without_sibling_reads(previous):
    """`previous`, but silent about zarr's chunk reads still pending when a chunk failed
    and the process ends: each prints "Exception ignored in: <coroutine object
    concurrent_map...>" and a traceback ending "Event loop is closed" (150 lines after a
    truncated slide's one-line error)."""
    def hook(unraisable) -> None:
        name = getattr(unraisable.object, "__qualname__", "")
        if _CHUNK_FAILED and name.startswith("concurrent_map"):
            return
        previous(unraisable)
    return hook


CHUNK_ERROR_MARK = "_graphconv_chunk_error"  # set on an exception raised while reading a chunk
CHUNK_NAME_MARK = "_graphconv_chunk_name"  # and which chunk it was ("TIFF tile 5 of page 0, at byte 3414")
CHUNK_BOX_MARK = "_graphconv_chunk_box"  # and its pixels on its page, (top, left, bottom, right), or None
_CHUNK_FAILED = False  # whether a chunk of any slide failed to decode in this process


_KeptChunks = None  # made on first use: zarr is optional


def _kept_chunks_class(wrapper):
    import threading
    from collections import OrderedDict

    class KeptChunks(wrapper):
        def __init__(self, store, budget: int = 0):
            super().__init__(store)
            self.budget, self.held, self.chunks, self.lock = budget, 0, OrderedDict(), threading.Lock()

        def _with_store(self, store):
            return type(self)(store, self.budget)

        async def get(self, key, prototype, byte_range=None):
            if byte_range is None:
                with self.lock:
                    if key in self.chunks:
                        self.chunks.move_to_end(key)
                        return self.chunks[key]
            try:
                value = await self._store.get(key, prototype, byte_range)
                if value is not None:
                    _refuse_damaged_jpeg(self._store, key)
            except Exception as err:
                global _CHUNK_FAILED
                _CHUNK_FAILED = True
                with contextlib.suppress(AttributeError):  # an exception type without a __dict__
                    setattr(err, CHUNK_ERROR_MARK, True)
                    name, box = _chunk_where(self._store, key)
                    setattr(err, CHUNK_NAME_MARK, name)
                    setattr(err, CHUNK_BOX_MARK, box)
                raise
            if byte_range is None and value is not None and len(value) <= self.budget:
                with self.lock:
                    if key not in self.chunks:
                        self.chunks[key] = value
                        self.held += len(value)
                    while self.held > self.budget:
                        self.held -= len(self.chunks.popitem(last=False)[1])
            return value

    return KeptChunks


class DamagedChunk(ValueError):
    """A tile or strip whose bytes graphconv's own check found damaged (its message says how)."""


DAMAGED_HINT = ("; --skip-damaged maps the rest of the image, leaving out the cells whose crops reach the "
                "damage")


class DamagedPixels(GraphconvError):
    """A read that met a TIFF tile or strip that cannot be decoded (damaged, cut short):
    what --skip-damaged maps around (`tiling.run_tiled`'s `damaged`)."""

    def __init__(self, message: str, *, file: str | None = None, chunk: str = "",
                 box: tuple[int, int, int, int] | None = None):
        super().__init__(message, file=file)
        self.chunk = chunk or "a tile or strip"  # which, and where (`_chunk_where`)
        self.box = box  # its pixels (top, left, bottom, right) on its page, where the file says
        self.reader = 0  # id() of the source whose pixels `box` counts (the one that read the page)


JPEG_END = b"\xff\xd9"  # the EOI marker, the last two bytes of every JPEG stream
JPEG_SEQUENTIAL_FRAMES = (0xC0, 0xC1)  # SOF0, SOF1: baseline and extended sequential (whole-slide scanners' tiles)
JPEG_RESTARTS = range(0xD0, 0xD8)  # RST0..RST7, in turn, the only markers inside a single scan's data


def _refuse_damaged_jpeg(store, key: str) -> None:
    """Raise where the chunk `key` is a JPEG tile or strip whose bytes are damaged in
    either way a reader can see, which libjpeg decodes without a word (graphconv's
    decoder, imagecodecs, keeps its warnings unsaid), scored as tissue otherwise:
    - its end lost (zeros after it aside, no end-of-image marker): the tail of a file
      copied or downloaded in part and padded with zeros, decoded as grey and smeared
      colour (pixels 212 off);
    - a marker inside its one scan's coded data other than the restart markers in turn
      (`_misplaced_jpeg_marker`): bytes overwritten, by a bad sector or a broken copy,
      decoded as a stripe of garbage to the tile's end. Random bytes hold such a marker
      with near certainty past a few hundred; a run of zeros holds none (JPEG has no
      checksum, so a hole of zeros stays unseen).
    NDPI's chunks are runs between restart markers, not whole streams, and are not
    checked; neither is a store this tifffile lays out differently."""
    try:
        keyframe, page, _, offset, count = store._parse_key(key)
        if (keyframe.compression != 7 or keyframe.jpegheader is not None or page is None
                or not offset or not count or count < 4):
            return
        data = store._filecache.read(page.parent.filehandle, offset, count)
    except Exception:  # tifffile's private layout changed: the check is a courtesy, not a condition
        return
    data = data.rstrip(b"\0")
    if not data.endswith(JPEG_END):
        raise DamagedChunk("its JPEG data has no end marker: the file was cut short or damaged there "
                           "(copied or downloaded in part?); a JPEG decoder would fill the rest of the tile with grey")
    if (misplaced := _misplaced_jpeg_marker(data)) is not None:
        marker, at = misplaced
        raise DamagedChunk(f"its JPEG data holds marker 0x{marker:02X} at byte {at} of {len(data)}, inside its coded "
                           "pixels: the bytes there were overwritten (a bad disk sector, a broken copy?); a JPEG "
                           "decoder would decode garbage from there to the tile's end")


def _misplaced_jpeg_marker(data: bytes) -> tuple[int, int] | None:
    """(marker, byte offset) of the first marker in the coded data of a sequential JPEG
    whose one scan holds every component (a scanner's tile) that is not the next restart
    marker, or None. Progressive JPEG and scans of some components may hold tables
    between scans, and are not checked; nor is a stream not laid out as JPEG's segments."""
    scan = _single_scan_start(data)
    if scan is None:
        return None
    coded = np.frombuffer(data, np.uint8)[:len(data) - len(JPEG_END)]
    prefixes = np.flatnonzero(coded[scan:-1] == 0xFF) + scan
    markers = prefixes[(coded[prefixes + 1] != 0) & (coded[prefixes + 1] != 0xFF)]  # FF00: a stuffed FF; FFFF: fill
    expected = 0
    for at in markers.tolist():
        marker = data[at + 1]
        if marker != JPEG_RESTARTS[expected]:
            return marker, at
        expected = (expected + 1) % len(JPEG_RESTARTS)
    return None


def _single_scan_start(data: bytes) -> int | None:
    """Where the coded data of a sequential JPEG's first scan starts, where that scan holds
    every component of the frame (nothing but restart markers can then come before the
    end); None for any other stream (an abbreviated one whose frame is in JPEGTables too)."""
    at, frame_components, sequential = 2, None, False
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # fill before a marker
            at += 1
            continue
        length = data[at + 2] << 8 | data[at + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and at + 9 < len(data):  # a frame header
            sequential, frame_components = marker in JPEG_SEQUENTIAL_FRAMES, data[at + 9]
        if marker == 0xDA:
            whole = sequential and at + 4 < len(data) and data[at + 4] == frame_components
            return at + 2 + length if whole else None
        at += 2 + length
    return None


def _chunk_failure(err: Exception) -> str:
    """The end of a decode error's message: which tile or strip failed, where the read
    that failed was a chunk's, and why."""
    chunk = getattr(err, CHUNK_NAME_MARK, "")
    why = str(err) if isinstance(err, DamagedChunk) else f"{type(err).__name__}: {shown(str(err), 200)}"
    return f"{f' ({chunk})' if chunk else ''}: {why}"


def _overlap(box: tuple[int, int, int, int], other: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """The part of `box` (top, left, bottom, right) that `other` covers, or None."""
    top, left = max(box[0], other[0]), max(box[1], other[1])
    bottom, right = min(box[2], other[2]), min(box[3], other[3])
    return (top, left, bottom, right) if bottom > top and right > left else None


def parts_around(box: tuple[int, int, int, int], inner: tuple[int, int, int, int]) -> list[tuple[int, int, int, int]]:
    """The non-empty parts of `box` (top, left, bottom, right) outside `inner`, a box
    inside it: the rows above and below it whole, then the columns either side of it."""
    top, left, bottom, right = box
    i_top, i_left, i_bottom, i_right = inner
    parts = ((top, left, i_top, right), (i_bottom, left, bottom, right),
             (i_top, left, i_bottom, i_left), (i_top, i_right, i_bottom, right))
    return [part for part in parts if part[2] > part[0] and part[3] > part[1]]


def _chunk_where(store, key: str) -> tuple[str, tuple[int, int, int, int] | None]:
    """Which TIFF tile or strip the zarr chunk `key` is, for an error ("TIFF tile 5 of
    page 0 (band 2, rows 256..511, columns 0..255), at byte 3414"), and its pixels on its
    page, (top, left, bottom, right); ("", None) where tifffile's store does not say.
    The read that failed names a box graphconv asked for, a tile and its halo, not the
    damaged tile's."""
    try:
        keyframe, page, index, offset, _ = store._parse_key(key)
        kind = "tile" if keyframe.is_tiled else "strip"
        band, box = _chunk_box(keyframe, index)
    except Exception:  # tifffile's private layout changed
        return "", None
    top, left, bottom, right = box
    where = f"{'' if band is None else f'band {band + 1}, '}rows {top}..{bottom - 1}, columns {left}..{right - 1}"
    return f"TIFF {kind} {index} of page {page.index} ({where}), at byte {offset}", box


def _chunk_box(keyframe, index: int) -> tuple[int | None, tuple[int, int, int, int]]:
    """Where TIFF tile or strip `index` lies on its page: the band (from 0) it holds
    where the bands are stored as separate planes (None where interleaved), whose tiles
    come one plane after another, and its pixels (top, left, bottom, right)."""
    height, width = keyframe.imagelength, keyframe.imagewidth
    if keyframe.is_tiled:
        across = -(-width // keyframe.tilewidth)
        per_plane = across * -(-height // keyframe.tilelength)
    else:
        per_plane = -(-height // keyframe.rowsperstrip)
    band = index // per_plane if keyframe.planarconfig != 1 else None
    index %= per_plane
    if keyframe.is_tiled:
        top, left = index // across * keyframe.tilelength, index % across * keyframe.tilewidth
        bottom, right = min(height, top + keyframe.tilelength), min(width, left + keyframe.tilewidth)
    else:
        top, left = index * keyframe.rowsperstrip, 0
        bottom, right = min(height, top + keyframe.rowsperstrip), width
    return band, (top, left, bottom, right)


def _codec_hint(pages) -> str:
    """What to install, when the tiles are compressed and imagecodecs is missing."""
    import importlib.util

    compression = getattr(getattr(pages, "keyframe", None), "compression", None)
    if compression is None or getattr(compression, "name", "") == "NONE" or importlib.util.find_spec("imagecodecs"):
        return ""
    return (f" (its tiles are {getattr(compression, 'name', compression)}-compressed: decoding them needs the "
            "imagecodecs package, pip install 'graphconv[scale]')")


# ---- the picture a tiled run's heatmap is drawn over -------------------------------------------

THUMBNAIL_SIDE = 2048  # the longer side of that picture, at most
THUMBNAIL_BOX = 1024  # the boxes a level is read in, when it is read whole to be shrunk


def thumbnail(source, longest: int = THUMBNAIL_SIDE, channels: int | None = None,
              bands: Sequence[int] | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """The image `source` reads, shrunk to at most `longest` pixels on its longer side, as
    a grey, RGB or RGBA (C, h, w) picture on 0..255 without the spec's preprocess, and how
    many of the source's pixels one of its pixels spans on each axis: what a tiled run's
    heatmap is drawn over. It is taken from the coarsest pyramid level at least that
    large (a slide's level 2 or 3: a few MB to decode), else from the image itself read a
    box at a time; each of its pixels is the mean of those it covers there (`_averaged`).
    Values read as stored (`values: stored`) are stretched onto 0..255, and
    of bands that make no picture (2, or 5 and more) the first is shown, grey. `channels`:
    the picture's (default: the network's, as it is fed; `own_channels`: as stored).
    `bands`: the raster's bands to show instead (numbered from 1, `--heatmap-bands`: three
    as red, green and blue, or one grey), each stretched as stored values are: a
    satellite scene's first band is no picture of it, and its true colour is no band the
    network need take."""
    from graphconv.images import stretched

    step = max(1, -(-max(source.height, source.width) // longest))
    out_hw = (-(-source.height // step), -(-source.width // step))
    level = _preview_level(source, out_hw)
    stored = getattr(source, "stored_values", False) or bands is not None
    raw = _open(source.path, len(bands) if bands else channels or source.channels,
                {"values": "stored"} if stored else None, level, bands or getattr(source, "bands", None))
    picture = _averaged(raw, out_hw)
    if picture.shape[0] not in PICTURE_CHANNELS:
        picture = picture[:1]
    return stretched(picture) if stored else picture, (source.height / out_hw[0], source.width / out_hw[1])


def own_channels(source) -> int:
    """The channels a picture holds as stored, 3 for colour (RGB, RGBA, a palette) or 1
    for grey, whatever the network is fed (a grey slide repeated for an RGB model has no
    colour; an RGB one seen as luma by a grey model has): what --skip-background's tissue
    test reads. The network's channels for bands picked (--bands) and what is no picture."""
    inner = getattr(source, "inner", source)
    if getattr(inner, "bands", None) is not None or not getattr(inner, "picture", False):
        return source.channels
    if isinstance(inner, PillowSource):
        from graphconv.images import picture_bands
        stored = picture_bands(inner.path)
    else:
        stored = getattr(inner, "band_count", None)
    return source.channels if stored is None else (3 if stored >= 3 else 1)


def level0_span(source) -> tuple[float, float]:
    """How many level-0 pixels (rows, columns) one pixel of `source` spans: a pyramid
    level's downsample on each axis, times a `Downsampled` source's factor (whose image
    leaves out the last rows and columns that fill no block, so its size cannot say it)."""
    inner, factor = getattr(source, "inner", source), getattr(source, "factor", 1)
    full_h, full_w = getattr(inner, "full_hw", (inner.height, inner.width))
    return factor * full_h / inner.height, factor * full_w / inner.width


def _preview_level(source, out_hw: tuple[int, int]) -> int:
    """The level a preview of `out_hw` pixels (`thumbnail`) is read from."""
    return _coarsest_level_for(source, max(1, -(-max(source.height, source.width) // max(out_hw))))


def _coarsest_level_for(source, step: int) -> int:
    """The pyramid level of the largest downsample that is at most `step` of the source's
    pixels coarser than the level it reads (a `Downsampled` source's pixels span
    `factor` of that level's); that level itself for other images."""
    level = getattr(source, "level", 0)
    if getattr(source, "levels", 1) == 1:
        return level
    step *= getattr(source, "factor", 1)
    finest = source.level_hw[level][0]
    return max(k for k in range(level, source.levels) if finest / source.level_hw[k][0] <= step)


def _averaged(raw, out_hw: tuple[int, int]) -> np.ndarray:
    """(C, out_h, out_w): `raw` shrunk by area, each pixel the mean of the block of
    pixels it covers (rows i*H//out_h up to (i+1)*H//out_h, columns alike), no-data
    pixels left out (a pixel all of whose block is no-data is 0, as a read gives it).
    Not the nearest pixel: a flat slide shrunk tenfold would show, and be judged for
    tissue by, one pixel in a hundred, a pale lumen or a fat cell taken for glass. Read
    THUMBNAIL_BOX x THUMBNAIL_BOX pixels at a time, so a level read whole costs no more
    memory than a box. A level a pixel or so smaller than `out_hw` (a pyramid whose sizes
    were rounded down) is not shrunk but stretched, its nearest pixels repeated."""
    shrunk_hw = (min(out_hw[0], raw.height), min(out_hw[1], raw.width))
    if shrunk_hw != out_hw:
        rows = (2 * np.arange(out_hw[0]) + 1) * shrunk_hw[0] // (2 * out_hw[0])  # nearest each one's centre
        cols = (2 * np.arange(out_hw[1]) + 1) * shrunk_hw[1] // (2 * out_hw[1])
        return _averaged(raw, shrunk_hw)[:, rows[:, None], cols[None, :]]
    row_edges = np.arange(out_hw[0] + 1, dtype=np.int64) * raw.height // out_hw[0]
    col_edges = np.arange(out_hw[1] + 1, dtype=np.int64) * raw.width // out_hw[1]
    sums = np.zeros((raw.channels, *out_hw), np.float32)
    counts = np.zeros(out_hw, np.float32)
    for top in range(0, raw.height, THUMBNAIL_BOX):
        bottom = min(raw.height, top + THUMBNAIL_BOX)
        rows, row_starts = _blocks_in(row_edges, top, bottom)
        for left in range(0, raw.width, THUMBNAIL_BOX):
            right = min(raw.width, left + THUMBNAIL_BOX)
            cols, col_starts = _blocks_in(col_edges, left, right)
            box, nodata = raw.read_masked(top, left, bottom, right) if hasattr(raw, "read_masked") \
                else (raw.read(top, left, bottom, right), None)
            valid = np.ones(box.shape[1:], np.float32) if nodata is None else (~nodata[0]).astype(np.float32)
            if nodata is not None:
                box = box * valid
            sums[:, rows, cols] += np.add.reduceat(np.add.reduceat(box, row_starts, axis=1), col_starts, axis=2)
            counts[rows, cols] += np.add.reduceat(np.add.reduceat(valid, row_starts, axis=0), col_starts, axis=1)
    return np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)


def _blocks_in(edges: np.ndarray, start: int, stop: int) -> tuple[slice, np.ndarray]:
    """The picture's rows (or columns) whose blocks of source pixels (`edges`) meet
    source pixels [start, stop), and where each one's first pixel is within them."""
    first = int(np.searchsorted(edges, start, side="right")) - 1
    last = int(np.searchsorted(edges, stop - 1, side="right")) - 1
    starts = np.maximum(edges[first:last + 1], start) - start
    return slice(first, last + 1), starts
