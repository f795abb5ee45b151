"""Score maps as (Geo)TIFF files that land where their image lies, and where any map's
cells stand on their image (`CellPlacement`).

A satellite scene is a GeoTIFF: its tags tie raster coordinates to a map projection
(ModelTiepoint and ModelPixelScale, or a ModelTransformation matrix) and name that
projection (the GeoKey directory). A score map is another raster over the same ground,
one cell per crop, `stride` pixels apart, so its georeference is the image's composed
with where cell (0, 0) sits and how far apart cells are (`Field`): written with the map,
GIS tools (QGIS, GDAL, rasterio) overlay it on the scene with no further work.

The GeoKeys are copied as they are, so the map keeps the image's projection and its
raster type: with RasterPixelIsArea (the default) raster coordinates count pixel
corners, with RasterPixelIsPoint pixel centres, and both are honoured. Only the
georeferencing tags are read and written, with tifffile (the `scale` extra); an image
without them gives a plain TIFF map.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from graphconv.errors import GraphconvError
from graphconv.receptive import Field

# TIFF tag codes (GeoTIFF 1.1, and GDAL's for no-data)
MODEL_PIXEL_SCALE, MODEL_TIEPOINT, MODEL_TRANSFORMATION = 33550, 33922, 34264
GEO_KEY_DIRECTORY, GEO_DOUBLE_PARAMS, GEO_ASCII_PARAMS = 34735, 34736, 34737
GDAL_NODATA = 42113
RASTER_TYPE_KEY, PIXEL_IS_POINT = 1025, 2
SHORT, ASCII, DOUBLE = 3, 2, 12  # TIFF data types
MAP_TILE = 256  # the written map's TIFF tiles, at most (less for a smaller map)
TIFF_TILE_MULTIPLE = 16  # what the TIFF standard requires of a tile's sides
MAP_DESCRIPTION = "graphconv score map"  # how a map this module wrote is told from a user's image


@dataclass(frozen=True)
class GeoReference:
    """Raster (col, row) -> model (x, y) as `affine` (2x3: x = a[0] . (col, row, 1)),
    plus the GeoKey tags (code, type, values) that say what x and y are."""

    affine: np.ndarray
    keys: tuple[tuple[int, int, tuple | str], ...]

    @property
    def pixel_is_point(self) -> bool:
        directory = next((values for code, _, values in self.keys if code == GEO_KEY_DIRECTORY), ())
        entries = [directory[i:i + 4] for i in range(4, len(directory), 4)]
        return any(key == RASTER_TYPE_KEY and value == PIXEL_IS_POINT for key, _, _, value in entries)


def read_georeference(path: str) -> GeoReference | None:
    """The georeference of a TIFF's first page (its full resolution), or None."""
    with _tifffile().TiffFile(path) as tif:
        tags = tif.pages[0].tags
        values = {code: tags[code].value for code in (MODEL_PIXEL_SCALE, MODEL_TIEPOINT, MODEL_TRANSFORMATION,
                                                      GEO_KEY_DIRECTORY, GEO_DOUBLE_PARAMS, GEO_ASCII_PARAMS)
                  if code in tags}
    try:
        affine = _affine(values)
    except (ValueError, TypeError) as err:
        raise GraphconvError(f"its GeoTIFF tags do not make a georeference ({err}): ModelPixelScale takes 3 "
                             "numbers, ModelTiepoint 6, ModelTransformation 16", file=path) from None
    if affine is None:
        return None
    keys = tuple((code, ASCII if code == GEO_ASCII_PARAMS else SHORT if code == GEO_KEY_DIRECTORY else DOUBLE,
                  values[code] if code == GEO_ASCII_PARAMS else tuple(values[code]))
                 for code in (GEO_KEY_DIRECTORY, GEO_DOUBLE_PARAMS, GEO_ASCII_PARAMS) if code in values)
    return GeoReference(affine, keys)


def _affine(values: dict) -> np.ndarray | None:
    if MODEL_TRANSFORMATION in values:
        m = np.asarray(values[MODEL_TRANSFORMATION], np.float64).reshape(4, 4)
        return m[:2, [0, 1, 3]]
    if MODEL_PIXEL_SCALE in values and MODEL_TIEPOINT in values:
        sx, sy = values[MODEL_PIXEL_SCALE][:2]
        i, j, _, x, y, _ = values[MODEL_TIEPOINT][:6]  # the first tiepoint; more are a warp GIS tools fit
        return np.array([[sx, 0.0, x - sx * i], [0.0, -sy, y + sy * j]])
    return None


def map_georeference(image: GeoReference, cells: Field, pixel_size: tuple[float, float] = (1.0, 1.0)) -> GeoReference:
    """The georeference of a score map over `image`: cell (r, c) is centred on the box
    `cells` places at r, c (`Model.cell_area`: a classifier's crop), in pixels of the
    image as read, each `pixel_size` (rows, cols) pixels of the georeferenced resolution
    (a pyramid level's downsample), and `cells.stride` pixels wide."""
    point = 0.5 if image.pixel_is_point else 0.0
    columns = _axis(cells.offset[1], cells.size[1], cells.stride[1], pixel_size[1], point)
    rows = _axis(cells.offset[0], cells.size[0], cells.stride[0], pixel_size[0], point)
    # raster (col, row) of the image = (columns[0] + columns[1] * c, rows[0] + rows[1] * r)
    cell_to_image = np.array([[columns[1], 0.0, columns[0]], [0.0, rows[1], rows[0]], [0.0, 0.0, 1.0]])
    return GeoReference(image.affine @ cell_to_image, image.keys)


def georeference_of_map(source, cells: Field) -> GeoReference | None:
    """The georeference of a map of `cells` over what `source` reads (`graphconv.sources`),
    where that is a GeoTIFF (at any pyramid level); else None."""
    from graphconv.sources import is_tiff, level0_span

    if not is_tiff(source.path):
        return None
    image = read_georeference(source.path)
    if image is None:
        return None
    return map_georeference(image, cells, level0_span(source))


@dataclass(frozen=True)
class CellPlacement:
    """Where a map's cells stand on the image at its full resolution (a pyramid's level
    0): cell (r, c) is centred on level-0 pixel (first[0] + step[0] * r, first[1] +
    step[1] * c), counting pixel k as the span k..k+1, whichever level, factor and tiles
    the run read. What a viewer needs to lay the map over a slide (QuPath, napari): an
    .npy map has no room for it, so a tiled run prints it; .zarr and .tif maps carry it
    (`as_dict`: the zarr's `graphconv` attribute, the TIFF's description after its first
    line), and a .tif of a slide whose pixel size is known says its cells' size in its
    resolution tags."""

    first: tuple[float, float]
    step: tuple[float, float]
    microns_per_pixel: float | None  # level 0's, where the file says it
    contents: dict | None = None  # what the map's channels hold, and of what (`map_contents`)

    def describe(self) -> str:
        y, x = (f"{self.first[a]:.6g} + {self.step[a]:.6g} {'rc'[a]}" for a in (0, 1))
        size = f"; cells {self.step[1] * self.microns_per_pixel:.4g} µm apart" if self.microns_per_pixel else ""
        return f"cell (r, c) of the map is centred on pixel (y, x) = ({y}, {x}) of the image at full resolution{size}"

    def as_dict(self) -> dict:
        return {"first_cell_centre_yx": list(self.first), "cell_step_yx": list(self.step),
                "units": "pixels of the image at full resolution (a pyramid's level 0), pixel k spanning k..k+1",
                "microns_per_pixel": self.microns_per_pixel, **(self.contents or {})}

    def tiff_resolution(self) -> dict:
        """tifffile's resolution arguments: cells per centimetre, where the size is known."""
        if not self.microns_per_pixel:
            return {}
        per_cm = tuple(1e4 / (self.step[a] * self.microns_per_pixel) for a in (1, 0))
        return {"resolution": per_cm, "resolutionunit": "CENTIMETER"}


def map_contents(image: str, model: str, num_classes: int, classes: Sequence[int] | None = None,
                 reduce: str | None = None, labels: Sequence[str] | None = None) -> dict:
    """What a map's channels hold, and of what image and model, for the map itself to
    say (a .zarr's attribute, a .tif's description): after `--classes 3,1` which band is
    which class, and a `--reduce argmax` map's legend, were known only to the command
    that made it."""
    kept = list(classes) if classes is not None else list(range(num_classes))
    values = ("the class of each cell: the best of `classes` (65535 where not computed)" if reduce == "argmax"
              else "class scores, one channel per class of `classes` (NaN where not computed)")
    contents = {"image": os.path.abspath(image), "model": os.path.abspath(model), "values": values, "classes": kept}
    if labels:
        contents["labels"] = [labels[c] for c in kept]
    return contents


def cell_placement(source, cells: Field) -> CellPlacement:
    """Where the cells `cells` places (`Model.cell_area`: each on its crop) stand on the
    level-0 image behind `source` (`graphconv.sources`: a level, read coarser or not)."""
    from graphconv.sources import level0_span

    return cells_on_pixels(cells, level0_span(source), getattr(source, "microns_per_pixel", None))


def cells_on_pixels(cells: Field, span: tuple[float, float] = (1.0, 1.0),
                    microns_per_pixel: float | None = None) -> CellPlacement:
    """The placement of `cells` on pixels each `span` (rows, cols) level-0 pixels wide:
    an image run whole (an .npy, a picture) is its own level 0."""
    first = tuple(span[a] * (cells.offset[a] + cells.size[a] / 2) for a in (0, 1))
    step = tuple(span[a] * cells.stride[a] for a in (0, 1))
    return CellPlacement(first, step, microns_per_pixel)


def cell_size(geo: GeoReference) -> tuple[float, float]:
    """A cell's width and height in map units."""
    (a, b, _), (c, d, _) = geo.affine
    return float(np.hypot(a, c)), float(np.hypot(b, d))


def _axis(offset: int, size: int, stride: int, pixel: float, point: float) -> tuple[float, float]:
    """(start, step) of cell raster coordinates in the image's along one axis. In pixel
    corners (area): cell 0 starts half a stride before its box's centre, offset + size / 2;
    in pixel centres (point), at it."""
    start = offset + size / 2 - (0.5 * stride if not point else 0.0)
    return pixel * start - point, pixel * stride


def tiff_tags(geo: GeoReference | None, nodata: str | None) -> list[tuple]:
    """tifffile extratags for a map: its georeference (tiepoint and pixel scale where
    the axes are not rotated, else the transformation matrix) and GDAL's no-data."""
    tags: list[tuple] = []
    if geo is not None:
        (a, b, x0), (c, d, y0) = geo.affine
        if b == 0 and c == 0 and a > 0 and d < 0:
            tags += [(MODEL_PIXEL_SCALE, DOUBLE, 3, (a, -d, 0.0), True),
                     (MODEL_TIEPOINT, DOUBLE, 6, (0.0, 0.0, 0.0, x0, y0, 0.0), True)]
        else:
            matrix = (a, b, 0.0, x0, c, d, 0.0, y0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
            tags.append((MODEL_TRANSFORMATION, DOUBLE, 16, matrix, True))
        tags += [(code, kind, len(values) + (kind == ASCII), values, True) for code, kind, values in geo.keys]
    if nodata is not None:
        tags.append((GDAL_NODATA, ASCII, len(nodata) + 1, nodata, True))
    return tags


def write_map_tiff(path: str, scores: np.ndarray, geo: GeoReference | None,
                   placement: CellPlacement | None = None) -> None:
    """A (1, K, rows, cols) map as a tiled TIFF of K bands (one band: a class map),
    georeferenced by `geo` where given, its cells' `placement` in its description and,
    where no georeference says it, their size in its resolution tags; cells not computed
    (NaN, or 65535 in a class map) marked as GDAL's no-data. `scores` may be a memory
    map: it is read a tile at a time."""
    tifffile = _tifffile()
    if scores.shape[0] != 1:
        raise GraphconvError(f"a TIFF map holds one image's map; this output has {scores.shape[0]}: write .npy "
                             "or .zarr", file=path)
    bands = scores[0]
    nodata = "65535" if bands.dtype == np.uint16 else "nan" if np.issubdtype(bands.dtype, np.floating) else None
    data = bands[0] if bands.shape[0] == 1 else bands
    description = MAP_DESCRIPTION + (f"\n{json.dumps(placement.as_dict())}" if placement else "")
    resolution = placement.tiff_resolution() if placement and geo is None else {}
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="separate" if data.ndim == 3 else None,
                     tile=map_tile(bands.shape[1:]), **map_compression(bands.dtype),
                     extratags=tiff_tags(geo, nodata), bigtiff=data.nbytes > 2 ** 31, description=description,
                     metadata=None, **resolution)


def map_tile(map_hw: tuple[int, int]) -> tuple[int, int]:
    """The TIFF tile of a map: MAP_TILE, or the smallest multiple of 16 (the standard's
    least) that holds a smaller map, per axis. A tile is stored whole whatever the map
    fills of it, per band: fixed 256x256 tiles made a 1000-class map of 2x2 cells 262 MB."""
    step = TIFF_TILE_MULTIPLE
    return tuple(min(MAP_TILE, -(-max(1, n) // step) * step) for n in map_hw)


def map_compression(dtype: np.dtype) -> dict:
    """Lossless zlib for every map, with the predictor GDAL writes and reads for its kind:
    floating point (3) for scores, whose bytes are regrouped before the deflate so the
    values come back bit for bit; none for class indices, which compress well as they are."""
    if np.issubdtype(dtype, np.floating):
        return {"compression": "zlib", "predictor": 3}
    return {"compression": "zlib"}


def is_graphconv_map(path: str) -> bool:
    """Whether `path` is a TIFF map graphconv wrote (its description says so)."""
    return _map_description(path) is not None


def _map_description(path: str) -> str | None:
    """The description of a TIFF map graphconv wrote; None for any other file."""
    try:
        with _tifffile().TiffFile(path) as tif:
            description = tif.pages[0].description or ""
    except Exception:  # not a TIFF at all, unreadable: not ours either
        return None
    return description if description.startswith(MAP_DESCRIPTION) else None


def stated_placement(path: str) -> dict | None:
    """What a TIFF map graphconv wrote says of itself (`CellPlacement.as_dict`, its
    contents included); None for any other file."""
    description = _map_description(path)
    if description is None:
        return None
    try:
        return json.loads(description.split("\n", 1)[1]) if "\n" in description else {}
    except ValueError:  # a description that is no JSON: says nothing more
        return {}


def _tifffile():
    from graphconv.sources import require
    return require("tifffile")


def is_tiff_output(path: str | None) -> bool:
    return bool(path) and path.lower().endswith((".tif", ".tiff"))
