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
import numbers
import os
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from graphconv.background import NO_CALL_CLASS
from graphconv.errors import GraphconvError, agreeing
from graphconv.receptive import Field

# TIFF tag codes (GeoTIFF 1.1, and GDAL's for no-data)
MODEL_PIXEL_SCALE, MODEL_TIEPOINT, MODEL_TRANSFORMATION = 33550, 33922, 34264
GEO_KEY_DIRECTORY, GEO_DOUBLE_PARAMS, GEO_ASCII_PARAMS = 34735, 34736, 34737
GDAL_METADATA, GDAL_NODATA = 42112, 42113
MODEL_TYPE_KEY, RASTER_TYPE_KEY, CITATION_KEY, PIXEL_IS_POINT = 1024, 1025, 1026, 2
GEOGRAPHIC_TYPE_KEY, PROJECTED_CS_TYPE_KEY, USER_DEFINED = 2048, 3072, 32767
PROJECTED_MODEL, GEOGRAPHIC_MODEL = 1, 2  # GTModelTypeGeoKey's values
GEO_KEY_NAMES = {GEO_KEY_DIRECTORY: "GeoKeyDirectoryTag", GEO_DOUBLE_PARAMS: "GeoDoubleParamsTag",
                 GEO_ASCII_PARAMS: "GeoAsciiParamsTag"}
GEOTRANSFORM_ORDER = ("GDAL GeoTransform: (x0, x per column, x per row, y0, y per column, y per row); the "
                      "corner (x, y) of cell (row r, column c) is (gt[0] + c gt[1] + r gt[2], gt[3] + c gt[4] + "
                      "r gt[5]), its centre at c + 0.5, r + 0.5")
SHORT, ASCII, DOUBLE = 3, 2, 12  # TIFF data types
MAP_TILE = 256  # the written map's TIFF tiles, at most (less for a smaller map)
NO_CALL_GREY = 160  # a class map's cells calling no class, in its colour table (not computed: black)
TIFF_TILE_MULTIPLE = 16  # what the TIFF standard requires of a tile's sides
MAP_DESCRIPTION = "graphconv score map"  # how a map this module wrote is told from a user's image
BLENDS = ("bilinear", "mean", "gaussian")  # how `CellPlacement.on_pixels` puts cells on the pixels
MONAI_SIGMA_SCALE = 0.125  # sliding_window_inference's default: a window's Gaussian has sigma 0.125 x its side
MONAI_LEAST_WEIGHT = 1e-3  # where MONAI clamps a window's Gaussian weights from below


@dataclass(frozen=True)
class GeoReference:
    """Raster (col, row) -> model (x, y) as `affine` (2x3: x = a[0] . (col, row, 1)),
    plus the GeoKey tags (code, type, values) that say what x and y are. An image tied
    to the ground by ground control points alone (several ModelTiepoints, no pixel
    scale: a warp GIS tools fit) has `gcps` instead, each (col, row, x, y, z), and no
    affine."""

    affine: np.ndarray | None
    keys: tuple[tuple[int, int, tuple | str], ...]
    gcps: tuple[tuple[float, float, float, float, float], ...] | None = None

    @property
    def pixel_is_point(self) -> bool:
        directory = next((values for code, _, values in self.keys if code == GEO_KEY_DIRECTORY), ())
        entries = [directory[i:i + 4] for i in range(4, len(directory), 4)]
        return any(key == RASTER_TYPE_KEY and value == PIXEL_IS_POINT for key, _, _, value in entries)

    def geokey(self, key: int) -> int | None:
        """A GeoKey's SHORT value held in the directory itself (a code such as
        ProjectedCSTypeGeoKey's EPSG number), or None."""
        directory = next((values for code, _, values in self.keys if code == GEO_KEY_DIRECTORY), ())
        entries = [directory[i:i + 4] for i in range(4, len(directory), 4)]
        return next((int(value) for k, location, count, value in entries if k == key and location == 0), None)

    @property
    def epsg(self) -> int | None:
        """The EPSG code of the projection, or of the geographic system where the raster
        is not projected, where the GeoKeys give one (not 32767, user-defined); or, with
        no model type at all, the code a citation "EPSG:NNNN" names (`_geokeys_of`, for a
        code not known to be geographic or projected). A user-defined projection has none:
        its geographic system's code (a Lambert azimuthal scene on ETRS89) was taken for
        the map's CRS."""
        model_type = self.geokey(MODEL_TYPE_KEY)
        keys = {PROJECTED_MODEL: (PROJECTED_CS_TYPE_KEY,), GEOGRAPHIC_MODEL: (GEOGRAPHIC_TYPE_KEY,)}.get(
            model_type, (PROJECTED_CS_TYPE_KEY, GEOGRAPHIC_TYPE_KEY))
        for key in keys:
            code = self.geokey(key)
            if code is not None and 1 <= code < USER_DEFINED:
                return code
        return self.cited_epsg

    @property
    def cited_epsg(self) -> int | None:
        """The EPSG code of a directory with no GTModelTypeGeoKey whose GTCitationGeoKey is
        "EPSG:NNNN" alone: a CRS recorded by its code, its kind unknown (`_geokeys_of`)."""
        import re

        if self.geokey(MODEL_TYPE_KEY) is not None:
            return None
        directory = next((values for code, _, values in self.keys if code == GEO_KEY_DIRECTORY), ())
        text = next((values for code, _, values in self.keys if code == GEO_ASCII_PARAMS), "")
        for key, location, count, offset in (directory[i:i + 4] for i in range(4, len(directory), 4)):
            if key == CITATION_KEY and location == GEO_ASCII_PARAMS and isinstance(text, str):
                found = re.fullmatch(r"EPSG:(\d+)\|?", text[offset:offset + count])
                code = int(found[1]) if found else None
                return code if code and code < USER_DEFINED else None
        return None

    def corner_affine(self) -> np.ndarray | None:
        """`affine` counting pixel corners, as GDAL does whichever the raster type: a
        pixel-centre (RasterPixelIsPoint) raster's point (c, r) is corner (c + 0.5, r + 0.5)."""
        if self.affine is None:
            return None
        shift = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]]) if self.pixel_is_point else np.eye(3)
        return self.affine @ shift

    def geotransform(self) -> list[float] | None:
        """GDAL's GeoTransform of the corner affine: (x0, x per column, x per row, y0, y
        per column, y per row), the corner (x, y) of raster (col, row) being
        (gt[0] + col gt[1] + row gt[2], gt[3] + col gt[4] + row gt[5])."""
        corner = self.corner_affine()
        if corner is None:
            return None
        (a, b, x0), (c, d, y0) = corner
        return [float(v) for v in (x0, a, b, y0, c, d)]

    def as_dict(self) -> dict:
        """The georeference as a zarr map's attributes state it (`zarr_attributes`)."""
        stated = {"crs": f"EPSG:{self.epsg}" if self.epsg else None,
                  "raster_type": "pixel centres (RasterPixelIsPoint)" if self.pixel_is_point
                  else "pixel corners (RasterPixelIsArea)",
                  "geokeys": {GEO_KEY_NAMES[code]: list(values) if not isinstance(values, str) else values
                              for code, _, values in self.keys}}
        if self.gcps is not None:
            stated["gcps"] = [list(p) for p in self.gcps]
            stated["gcps_order"] = ("(col, row, x, y, z): raster position of the map, in its raster type's "
                                    "convention, and the model (x, y, z) there; a warp GIS tools fit")
        else:
            stated["geotransform"] = self.geotransform()
            stated["geotransform_order"] = GEOTRANSFORM_ORDER
        return stated


def mask_misplaced(mask_path: str, mask_hw: tuple[int, int], image: GeoReference | None,
                   image_hw: tuple[int, int]) -> str | None:
    """Why a georeferenced --mask cannot be stretched over a georeferenced image by its
    pixels (another CRS, or another area: a mask of a quarter of the scene put its marks
    over the whole scene, silently), or None where it can (either has no affine
    georeference, or both cover one area to within a pixel of either). `image_hw` counts
    the pixels of the image's level 0, whose georeference `image` is."""
    mask = image_georeference(mask_path)
    if mask is None or image is None or mask.corner_affine() is None or image.corner_affine() is None:
        return None
    if mask.epsg != image.epsg:
        crs = (lambda geo: f"EPSG:{geo.epsg}" if geo.epsg else "a CRS of its own")
        return (f"the mask is in {crs(mask)} and the image in {crs(image)}: warp the mask to the image's grid "
                "first (gdalwarp -t_srs, -te and -ts with the image's CRS, bounds and size)")
    mask_corners, image_corners = _corners(mask, mask_hw), _corners(image, image_hw)
    slack = max(_pixel_diagonal(mask), _pixel_diagonal(image))
    if np.abs(mask_corners - image_corners).max() <= slack:
        return None
    (x0, y0), (x1, y1) = image_corners.min(axis=0), image_corners.max(axis=0)
    (mx0, my0), (mx1, my1) = mask_corners.min(axis=0), mask_corners.max(axis=0)
    return (f"the mask is georeferenced over another area than the image (mask x {mx0:.6g}..{mx1:.6g}, "
            f"y {my0:.6g}..{my1:.6g}; image x {x0:.6g}..{x1:.6g}, y {y0:.6g}..{y1:.6g}), and a mask is stretched "
            f"over the whole image by its pixels: cut it to the image's area first (gdalwarp -te {x0:.10g} "
            f"{y0:.10g} {x1:.10g} {y1:.10g})")


def _corners(geo: GeoReference, hw: tuple[int, int]) -> np.ndarray:
    """(4, 2): the model (x, y) of a raster's four outer corners."""
    h, w = hw
    raster = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64)
    return raster @ geo.corner_affine().T


def _pixel_diagonal(geo: GeoReference) -> float:
    (a, b, _), (c, d, _) = geo.corner_affine()
    return float(np.hypot(a + b, c + d))


def read_georeference(path: str) -> GeoReference | None:
    """The georeference of a TIFF's first page (its full resolution), or None."""
    with _tifffile().TiffFile(path) as tif:
        tags = tif.pages[0].tags
        values = {code: tags[code].value for code in (MODEL_PIXEL_SCALE, MODEL_TIEPOINT, MODEL_TRANSFORMATION,
                                                      GEO_KEY_DIRECTORY, GEO_DOUBLE_PARAMS, GEO_ASCII_PARAMS)
                  if code in tags}
    try:
        affine = _affine(values)
        gcps = _gcps(values) if affine is None else None
        _check_key_directory(values.get(GEO_KEY_DIRECTORY, ()))
    except (ValueError, TypeError) as err:
        raise GraphconvError(f"its GeoTIFF tags do not make a georeference ({err}): ModelPixelScale takes 3 "
                             "numbers, ModelTiepoint 6 per point, ModelTransformation 16, GeoKeyDirectory 4 "
                             "per key after its 4-number header; remove the broken tags (gdal_edit.py -unsetgt "
                             "-unsetsrs) to map the image without one", file=path) from None
    if affine is None and gcps is None:
        return None
    keys = tuple((code, ASCII if code == GEO_ASCII_PARAMS else SHORT if code == GEO_KEY_DIRECTORY else DOUBLE,
                  values[code] if code == GEO_ASCII_PARAMS else tuple(values[code]))
                 for code in (GEO_KEY_DIRECTORY, GEO_DOUBLE_PARAMS, GEO_ASCII_PARAMS) if code in values)
    return GeoReference(affine, keys, gcps)


def _gcps(values: dict) -> tuple | None:
    """Ground control points: ModelTiepoints without a ModelPixelScale, each (I, J, K,
    X, Y, Z) read as (col, row, x, y, z)."""
    if MODEL_TIEPOINT not in values:
        return None
    points = [float(v) for v in values[MODEL_TIEPOINT]]
    if not points or len(points) % 6:
        raise ValueError(f"{len(points)} ModelTiepoint numbers")
    return tuple((i, j, x, y, z) for i, j, _, x, y, z in (points[k:k + 6] for k in range(0, len(points), 6)))


def _check_key_directory(directory) -> None:
    """A GeoKeyDirectory's header (version, revision, minor revision, number of keys)
    and as many keys of 4 numbers each as it states: one cut short was read key by key
    and failed with a traceback."""
    if not directory:
        return
    stated = int(directory[3]) if len(directory) >= 4 else None
    if stated is None or len(directory) < 4 + 4 * stated:
        raise ValueError(f"a GeoKeyDirectory of {len(directory)} numbers"
                         + (f" states {stated} keys" if stated is not None else ""))


def _affine(values: dict) -> np.ndarray | None:
    """Raster (col, row) -> model (x, y) from a ModelTransformation, or from a
    ModelPixelScale and the first ModelTiepoint; None without either. One that maps the
    raster to a line or a point (a pixel scale of 0, which GDAL ignores) is refused: a
    map would carry it on as a georeference of cells of no size."""
    if MODEL_TRANSFORMATION in values:
        affine = np.asarray(values[MODEL_TRANSFORMATION], np.float64).reshape(4, 4)[:2, [0, 1, 3]]
    elif MODEL_PIXEL_SCALE in values and MODEL_TIEPOINT in values:
        scale, tiepoints = values[MODEL_PIXEL_SCALE], values[MODEL_TIEPOINT]
        if len(scale) < 2 or len(tiepoints) < 6:
            raise ValueError(f"a ModelPixelScale of {len(scale)} numbers, a ModelTiepoint of {len(tiepoints)}")
        sx, sy = scale[:2]
        i, j, _, x, y, _ = tiepoints[:6]  # the first tiepoint; more are a warp GIS tools fit
        affine = np.array([[sx, 0.0, x - sx * i], [0.0, -sy, y + sy * j]], np.float64)
    else:
        return None
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:, :2])) == 0.0:
        raise ValueError("a raster-to-model transform with pixels of no size"
                         if MODEL_TRANSFORMATION in values else
                         f"a ModelPixelScale of {float(sx):g} x {float(sy):g}")
    return affine


def map_georeference(image: GeoReference, cells: Field, pixel_size: tuple[float, float] = (1.0, 1.0)) -> GeoReference:
    """The georeference of a score map over `image`: cell (r, c) is centred on the box
    `cells` places at r, c (`Model.cell_area`: a classifier's crop), in pixels of the
    image as read, each `pixel_size` (rows, cols) pixels of the georeferenced resolution
    (a pyramid level's downsample), and `cells.stride` pixels wide."""
    return placed_georeference(image, cells_on_pixels(cells, pixel_size))


def placed_georeference(image: GeoReference, placement: CellPlacement) -> GeoReference:
    """The georeference of a map whose cells stand at `placement` on the image of
    georeference `image` (its level 0): cell (r, c) is `placement.step` pixels wide and
    centred on its placed pixel. Ground control points are moved onto the map's raster:
    each tiepoint's image position becomes the same point's position among the cells,
    exactly, since the cells are a regular grid over the image."""
    point = 0.5 if image.pixel_is_point else 0.0
    # raster (col, row) of the image = (start[1] + step[1] * c, start[0] + step[0] * r): in pixel corners (area),
    # cell 0 starts half a step before its centre; in pixel centres (point) it is at its centre, pixel k's at k
    start = [placement.first[a] - (point if point else 0.5 * placement.step[a]) for a in (0, 1)]
    step = placement.step
    if image.gcps is not None:
        gcps = tuple(((col - start[1]) / step[1], (row - start[0]) / step[0], x, y, z)
                     for col, row, x, y, z in image.gcps)
        return GeoReference(None, image.keys, gcps)
    cell_to_image = np.array([[step[1], 0.0, start[1]], [0.0, step[0], start[0]], [0.0, 0.0, 1.0]])
    return GeoReference(image.affine @ cell_to_image, image.keys)


def georeference_of_placement(placement: CellPlacement | None) -> GeoReference | None:
    """The georeference of a map from its `placement` alone, where its contents name a
    georeferenced image (`map_contents`): the same as `georeference_of_map` gives from
    the source, which the level-0 placement already holds."""
    image = (placement.contents or {}).get("image") if placement is not None else None
    geo = image_georeference(image) if image else None
    return None if geo is None else placed_georeference(geo, placement)


def georeference_of_map(source, cells: Field) -> GeoReference | None:
    """The georeference of a map of `cells` over what `source` reads (`graphconv.sources`),
    where that is a GeoTIFF (at any pyramid level) or a zarr array that states one
    (`read_zarr_georeference`); else None. A padded source's cells (`run --pad-image`)
    stand on the image itself, shifted by its border."""
    from graphconv.sources import level0_span, on_image

    source, cells = on_image(source, cells)
    image = image_georeference(source.path)
    if image is None:
        return None
    return map_georeference(image, cells, level0_span(source))


def image_georeference(path: str) -> GeoReference | None:
    """The georeference of the image at `path`, level 0: a GeoTIFF's tags, a zarr array's
    attributes; None for other images and for those that state none."""
    from graphconv.sources import is_tiff

    if is_tiff(path):
        return read_georeference(path) if os.path.isfile(path) else None
    if is_zarr_array(path):
        return read_zarr_georeference(path)[0]
    return None


def is_zarr_array(path: str) -> bool:
    """Whether `path` is a plain zarr array (not an OME-Zarr image, a group of levels)."""
    from pathlib import Path

    from graphconv.sources import is_ome_zarr

    folder = Path(path)
    return folder.is_dir() and ((folder / ".zarray").exists() or (folder / "zarr.json").exists()) \
        and not is_ome_zarr(path)


# ---- a zarr array's georeference, from the attributes graphconv's own .zarr maps carry -----------------

LOOKS_GEOREFERENTIAL = ("crs", "proj", "spatial", "geo", "transform", "grid_mapping", "epsg", "srs", "wkt",
                        "affine", "bounds", "bbox")
EPSG_URL = "http://www.opengis.net/def/crs/EPSG/0/"  # GDAL's `_CRS` url, with the code after it
# Whether an EPSG code is a geographic or a projected CRS, where pyproj (not a dependency) is not there to
# say: the common ones only. No range of codes tells: 4000-4999 holds 4326 WGS 84 but also over 200
# projected systems (4087 World Equidistant Cylindrical, 4491-4554 CGCS2000 Gauss-Kruger, 4647 ETRS89 UTM
# 32N zE-N), and 6318 NAD83(2011), 7844 GDA2020 are geographic. Any other code's kind is not guessed.
GEOGRAPHIC_EPSG = frozenset({
    4326,  # WGS 84
    4269, 6318, 4617,  # NAD83, NAD83(2011), NAD83(CSRS)
    4267,  # NAD27
    4258, 4230, 4277,  # ETRS89, ED50, OSGB36
    4283, 7844,  # GDA94, GDA2020
    4167, 4674, 4490,  # NZGD2000, SIRGAS 2000, CGCS2000 (China)
    4612, 6668,  # JGD2000, JGD2011
    4019, 4030,  # unknown datums on the GRS 1980 and WGS 84 ellipsoids
})
PROJECTED_EPSG = (
    range(32601, 32662), range(32701, 32762),  # WGS 84 / UTM zones 1N-60N, 1S-60S, and UPS North, South
    range(25828, 25839), range(26901, 26924),  # ETRS89 / UTM 28N-38N, NAD83 / UTM 1N-23N
    range(28348, 28359), range(7846, 7860),  # GDA94 / MGA 48-58, GDA2020 / MGA 46-59
    (3857, 3395, 3035, 2154, 27700, 2193, 3031, 3413),  # Web and World Mercator, LAEA Europe, Lambert-93,
)  # British National Grid, NZTM2000, Antarctic and Arctic (NSIDC) polar stereographic


def read_zarr_georeference(path: str) -> tuple[GeoReference | None, list[str]]:
    """A zarr array's georeference, from the attributes graphconv writes on its own .zarr
    maps (`tiling.zarr_map_attributes`) and GDAL, rioxarray and GeoZarr read: the cells'
    affine as `GeoTransform` (GDAL's order, pixel corners, text or 6 numbers) or
    `spatial:transform` (rasterio's a, b, c, d, e, f), the CRS as `proj:code` / `proj:epsg`
    ("EPSG:32633"), `_CRS` (GDAL's {"url": ".../EPSG/0/32633"}) or a WKT's EPSG
    authority (`crs_wkt`, `spatial_ref`); those of a CF grid-mapping variable beside the
    array (`grid_mapping: spatial_ref`, as rioxarray writes) where the array has none;
    graphconv's own `graphconv.georeference` (its GeoKeys whole) before all. The GeoKeys
    of an EPSG code are made as GDAL writes them where its kind is known (`crs_kind`: a
    projected or a geographic system), pixel corners; else they record the code alone
    (`_geokeys_of`). Also the names of the attributes that look like a
    georeference and were not read (for a note, `zarr_georeference_note`). (None, names)
    where there is no affine."""
    from pathlib import Path

    from graphconv.sources import _group_attributes

    attrs = _group_attributes(Path(path))
    mapping = attrs.get("grid_mapping")
    if isinstance(mapping, str) and mapping and "/" not in mapping and ".." not in mapping:
        attrs = {**_group_attributes(Path(path).parent / mapping), **attrs}
    own = attrs.get("graphconv", {}).get("georeference") if isinstance(attrs.get("graphconv"), dict) else None
    geo = georeference_from_dict(own) if isinstance(own, dict) else None
    used = {"graphconv"} if geo is not None else set()
    if geo is None:
        corner, used = _stated_affine(attrs)
        if corner is not None:
            epsg, named, kind = _stated_epsg(attrs)
            used |= named
            geo = GeoReference(corner, _geokeys_of(epsg, kind or crs_kind(epsg)) if epsg else ())
    unread = [name for name in attrs if name not in used and name not in ("grid_mapping",) and
              any(word in name.lower() for word in LOOKS_GEOREFERENTIAL)]
    return geo, unread


def zarr_georeference_note(path: str) -> str | None:
    """What to say where a zarr array's map is written as .tif or .zarr: nothing where its
    attributes hold a georeference graphconv reads, or nothing that looks like one; else
    that the map is not georeferenced (or has no projection), naming the attributes."""
    if not is_zarr_array(path):
        return None
    geo, unread = read_zarr_georeference(path)
    if geo is not None and geo.cited_epsg:
        return (f"note: the zarr array's CRS, EPSG:{geo.cited_epsg}, is not one graphconv can tell geographic or "
                "projected without pyproj: a .tif map records the code (its GeoTIFF citation) but states no CRS "
                "GIS tools read; install pyproj for the map to state it")
    if not unread:
        return None
    names = ", ".join(unread[:6]) + (f" and {len(unread) - 6} more" if len(unread) > 6 else "")
    reads = ("graphconv reads GeoTransform or spatial:transform, with proj:code, proj:epsg, _CRS or a WKT's EPSG "
             "code, as its own .zarr maps carry them")
    attributes = (f"the zarr array's {agreeing(len(unread), 'attribute', 'attributes')} {names} "
                  f"{agreeing(len(unread), 'looks', 'look')} like")
    if geo is None:
        return f"note: {attributes} a georeference graphconv does not read ({reads}): the map is not georeferenced"
    if not geo.keys:
        return (f"note: {attributes} a projection graphconv does not read ({reads}): the map is placed by its "
                "GeoTransform but names no projection")
    return None


RPC_COEFFICIENTS = 50844  # RPCCoefficientTag: a satellite scene's sensor model, not yet on the ground
GEOJP2_UUID = bytes.fromhex("b14bf8bd083d4b43a5ae8cd7d5a6ce03")  # the uuid box of a GeoJP2 (GeoTIFF tags)
GMLJP2_LABELS = (b"gml.root-instance", b"gml.data")  # the labels of a GMLJP2's association boxes
JP2_SUFFIXES = (".jp2", ".j2k", ".jpx", ".jpf")
JP2_HEAD = 4 << 20  # bytes of a JPEG 2000 file looked through for its georeference boxes (they precede the code)


def unread_georeference_note(path: str) -> str | None:
    """What to say where an image without a georeference graphconv reads has its map
    written as .tif or .zarr but is placed another way GIS tools read: a world file
    beside it (QGIS shows the scene in place, and its map came out with no georeference,
    silently), a TIFF's RPCs, or a JPEG 2000's GeoJP2 or GMLJP2 boxes (a Sentinel-2 band)."""
    from graphconv.sources import is_tiff

    if not os.path.isfile(path) or (is_tiff(path) and image_georeference(path) is not None):
        return None
    world = _world_file(path)
    if world:
        return (f"note: the image is placed by a world file ({os.path.basename(world)}), which graphconv does "
                "not read: the map is not georeferenced; make the image a GeoTIFF first (gdal_translate -of GTiff "
                "writes the world file's placement, and a .prj's CRS, as tags)")
    if is_tiff(path):
        with _tifffile().TiffFile(path) as tif:
            rpcs = RPC_COEFFICIENTS in tif.pages[0].tags
        if rpcs:
            return ("note: the image carries RPCs (a sensor model, TIFF tag 50844) and no georeference, and "
                    "graphconv does not read RPCs: the map is not georeferenced; orthorectify the scene first "
                    "(gdalwarp -rpc)")
    elif path.lower().endswith(JP2_SUFFIXES) and _jp2_georeferenced(path):
        return ("note: the JPEG 2000 image is georeferenced (GeoJP2 or GMLJP2), which graphconv does not read: the "
                "map is not georeferenced; make the image a GeoTIFF first (gdal_translate -of GTiff)")
    return None


def _world_file(path: str) -> str | None:
    """The world file GDAL would find beside `path`: the extension's first and last
    letters and a w (scene.tfw, photo.jgw, band.j2w), the extension and a w (.tifw), or .wld."""
    stem, extension = os.path.splitext(path)
    extension = extension[1:]
    suffixes = dict.fromkeys(s for s in ((extension[:1] + extension[-1:] + "w") if extension else "",
                                         extension + "w" if extension else "", "wld") if s)
    return next((name for suffix in suffixes for name in (f"{stem}.{suffix}", f"{stem}.{suffix.upper()}")
                 if os.path.isfile(name)), None)


def _jp2_georeferenced(path: str) -> bool:
    with open(path, "rb") as fp:
        head = fp.read(JP2_HEAD)
    return GEOJP2_UUID in head or any(label in head for label in GMLJP2_LABELS)


def georeference_from_dict(own: dict) -> GeoReference | None:
    """graphconv's `GeoReference.as_dict` read back: its GeoKeys whole, its affine in the
    raster type's convention; None where it does not fit."""
    codes = {name: code for code, name in GEO_KEY_NAMES.items()}
    try:
        keys = tuple((codes[name], ASCII if codes[name] == GEO_ASCII_PARAMS else
                      SHORT if codes[name] == GEO_KEY_DIRECTORY else DOUBLE,
                      str(values) if codes[name] == GEO_ASCII_PARAMS else tuple(values))
                     for name, values in dict(own.get("geokeys") or {}).items())
        if own.get("gcps") is not None:
            return GeoReference(None, keys, tuple(tuple(float(v) for v in p) for p in own["gcps"]))
        x0, a, b, y0, c, d = (float(v) for v in own["geotransform"])
    except (KeyError, TypeError, ValueError):
        return None
    geo = GeoReference(np.array([[a, b, x0], [c, d, y0]]), keys)
    if geo.pixel_is_point:  # as_dict states corners; the affine counts the raster's pixel centres
        geo = GeoReference(geo.affine @ np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]]), keys)
    return geo


def _stated_affine(attrs: dict) -> tuple[np.ndarray | None, set[str]]:
    """The corner affine (2x3) of `GeoTransform` or `spatial:transform`, and the names
    read. GDAL's GeoTransform counts pixel corners; GeoZarr's spatial:transform does
    where `spatial:registration` is "pixel" (or absent), and pixel centres where it is
    "node" (as GeoTIFF's RasterPixelIsPoint: its corner affine is shifted by half a
    pixel, as `GeoReference.corner_affine` shifts one); one of another registration is
    not read."""
    registration = attrs.get("spatial:registration", "pixel")
    for name in ("GeoTransform", "spatial:transform"):
        if name == "spatial:transform" and registration not in ("pixel", "node"):
            continue
        value = attrs.get(name)
        try:
            numbers = [float(v) for v in (value.split() if isinstance(value, str) else value)]
        except (AttributeError, TypeError, ValueError):
            continue
        if len(numbers) != 6 or not all(np.isfinite(numbers)):
            continue
        if name == "GeoTransform":
            x0, a, b, y0, c, d = numbers
        else:
            a, b, x0, c, d, y0 = numbers
        if a * d - b * c == 0:
            continue
        affine = np.array([[a, b, x0], [c, d, y0]])
        if name == "spatial:transform" and registration == "node":
            affine = affine @ np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
        used = {name} | ({"spatial:dimensions"} & set(attrs)) | \
            ({"spatial:registration"} & set(attrs) if registration in ("pixel", "node") else set())
        return affine, used
    return None, set()


def _stated_epsg(attrs: dict) -> tuple[int | None, set[str], str | None]:
    """The EPSG code the attributes state, the names it was read from, and the CRS's
    kind where a WKT says it ("projected", "geographic"; None)."""
    import re

    for name in ("proj:code", "proj:epsg", "_CRS", "crs_wkt", "spatial_ref"):
        value = attrs.get(name)
        if isinstance(value, dict):
            value = value.get("url") or value.get("wkt")
        if isinstance(value, int) and not isinstance(value, bool):
            code = value
        elif isinstance(value, str):
            found = (re.fullmatch(r"\s*EPSG:(\d+)\s*", value) or re.search(r"/EPSG/\d+/(\d+)\s*$", value) or
                     (re.findall(r'(?:AUTHORITY|ID)\["EPSG",\s*"?(\d+)"?\]', value) or [None])[-1])
            code = int(found if isinstance(found, str) else found[1]) if found else None
        else:
            code = None
        if code and 1 <= code < USER_DEFINED:
            root = re.match(r"\s*([A-Z]+)\s*\[", value.upper()) if isinstance(value, str) else None
            kind = {"PROJCS": "projected", "PROJCRS": "projected", "PROJECTEDCRS": "projected",
                    "GEOGCS": "geographic", "GEOGCRS": "geographic", "GEOGRAPHICCRS": "geographic"}.get(
                        root[1] if root else "")
            return code, {name} | ({"_CRS", "proj:code"} & set(attrs) if name in ("proj:code", "_CRS") else set()), kind
    return None, set(), None


def crs_kind(epsg: int) -> str | None:
    """Whether EPSG code `epsg` is a "projected" or a "geographic" CRS: pyproj's answer
    where it is installed (it is not a dependency), else `GEOGRAPHIC_EPSG` and
    `PROJECTED_EPSG`'s; None where neither knows, and for other kinds (geocentric,
    vertical, compound), which a GeoTIFF's two keys do not state."""
    try:
        from pyproj import CRS
    except ImportError:
        CRS = None
    if CRS is not None:
        try:
            crs = CRS.from_epsg(epsg)
        except Exception:  # a code this pyproj's database does not hold: the tables below may know it
            pass
        else:
            if crs.sub_crs_list or crs.is_bound:
                return None
            return "projected" if crs.is_projected else "geographic" if crs.is_geographic else None
    if epsg in GEOGRAPHIC_EPSG:
        return "geographic"
    if any(epsg in codes for codes in PROJECTED_EPSG):
        return "projected"
    return None


def _geokeys_of(epsg: int, kind: str | None) -> tuple:
    """The GeoKey directory GDAL writes for an EPSG code of `kind` (`crs_kind`):
    GTModelType (1 projected, 2 geographic), RasterPixelIsArea, and the code as
    ProjectedCSTypeGeoKey or GeographicTypeGeoKey. Where the kind is not known no key
    claims one: RasterPixelIsArea and the code as the citation ("EPSG:NNNN", which
    `GeoReference.epsg` reads back), so the map keeps its place and names its CRS
    without stating a wrong one (a projected code written as geographic lands a map
    in degrees, across the world)."""
    if kind not in ("projected", "geographic"):
        citation = f"EPSG:{epsg}|"
        directory = (1, 1, 0, 2, RASTER_TYPE_KEY, 0, 1, 1, CITATION_KEY, GEO_ASCII_PARAMS, len(citation), 0)
        return ((GEO_KEY_DIRECTORY, SHORT, directory), (GEO_ASCII_PARAMS, ASCII, citation))
    geographic = kind == "geographic"
    directory = (1, 1, 0, 3, MODEL_TYPE_KEY, 0, 1, 2 if geographic else 1, RASTER_TYPE_KEY, 0, 1, 1,
                 GEOGRAPHIC_TYPE_KEY if geographic else PROJECTED_CS_TYPE_KEY, 0, 1, epsg)
    return ((GEO_KEY_DIRECTORY, SHORT, directory),)


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
    read: dict | None = None  # what the image was read at: its level, downsample and bands (`read_as`)
    area: tuple[float, float] | None = None  # `Model.cell_area`'s size: a classifier's crop, centred on its cell

    def describe(self) -> str:
        """The console's "cells:" line, in the coordinates `as_dict` states (pixel k
        spanning k..k+1): "centred on pixel 224" read as pixel 224's centre, where 224 is
        the corner between pixels 223 and 224, so the line says which coordinates it
        counts in and where its first centre falls on the pixels."""
        y, x = (f"{self.first[a]:.6g} + {self.step[a]:.6g} {'rc'[a]}" for a in (0, 1))
        where = "; ".join(dict.fromkeys(_on_the_pixels(v) for v in self.first))
        apart = f"; cells {self.step[1] * self.microns_per_pixel:.4g} µm apart" if self.microns_per_pixel else ""
        return (f"cell (r, c) of the map is centred at (y, x) = ({y}, {x}) of the image at full resolution, in "
                f"pixel coordinates where pixel k spans k..k+1 ({where}){apart}")

    def as_dict(self) -> dict:
        area = {"cell_area_hw": list(self.area)} if self.area is not None else {}
        microns = ({"cell_step_microns_yx": [step * self.microns_per_pixel for step in self.step]}
                   if self.microns_per_pixel else {})  # what a lab asks of a map: its cells' size on the tissue
        return {"first_cell_centre_yx": list(self.first), "cell_step_yx": list(self.step), **area,
                "units": "pixels of the image at full resolution (a pyramid's level 0), pixel k spanning k..k+1",
                "microns_per_pixel": self.microns_per_pixel, **microns, **(self.read or {}), **(self.contents or {})}

    def on_pixels(self, scores: np.ndarray, image_hw: tuple[int, int], origin_yx: tuple[int, int] = (0, 0),
                  blend: str = "bilinear", sigma_scale: float = MONAI_SIGMA_SCALE) -> np.ndarray:
        """A (N, K, rows, cols) map placed so as (N, K, H, W), one value per pixel of the
        image at full resolution. `blend` "bilinear": each pixel the bilinear blend of the
        four cells whose centres surround its centre, a smooth picture of the cells a
        stride apart. "mean": each pixel the mean of the cells whose crops (`area`) cover
        it, what MONAI's sliding_window_inference(mode="constant") returns for the same
        windows (its last window moved flush with the image's edge where the crops' grid
        stops short of it; graphconv keeps the grid). "gaussian": their mean weighted as
        MONAI's mode="gaussian" weights its windows' pixels (`_gaussian_of_covering`),
        `sigma_scale` its argument of that name. Any way a pixel beyond the
        outermost centres (crops) holds the edge's cells (not extrapolated), and a NaN cell
        (not computed) is NaN in every pixel it weighs in. A slide's is far larger than
        memory: a region of the map, `map[..., r0:r1, c0:c1]`, placed with `first` moved by
        r0 and c0 steps, gives the H x W pixels from `origin_yx` (their top-left pixel)
        on; pixels past the region's outermost cells hold its edge cells, so take the cells
        of every crop covering the pixels (a crop's worth more on each side)."""
        from graphconv.memory import check_fits

        scores = np.asarray(scores)
        if scores.ndim != 4:
            raise GraphconvError(f"on_pixels places a (N, K, rows, cols) map, got shape {scores.shape}")
        if blend not in BLENDS:
            raise GraphconvError(f"blend is one of {', '.join(map(repr, BLENDS))}, got {blend!r}")
        if blend in ("mean", "gaussian") and self.area is None:
            raise GraphconvError(f"blend {blend!r} averages the cells whose crops cover a pixel: this placement "
                                 "states no crop (area)")
        if isinstance(sigma_scale, bool) or not isinstance(sigma_scale, numbers.Real) or not 0 < sigma_scale < np.inf:
            raise GraphconvError(f"sigma_scale is a positive number (MONAI's default 0.125: each window's "
                                 f"weights a Gaussian of sigma 0.125 x its side), got {sigma_scale!r}")
        height, width = (int(v) for v in image_hw)
        check_fits(4 * scores.shape[0] * scores.shape[1] * height * width, f"a {height}x{width} map per pixel")
        first = [self.first[a] - origin_yx[a] for a in (0, 1)]
        if blend == "bilinear":
            rows = _blend(scores, _taps(first[0], self.step[0], scores.shape[2], height), axis=2)
            return _blend(rows, _taps(first[1], self.step[1], scores.shape[3], width), axis=3)
        if blend == "gaussian":
            return _gaussian_of_covering(scores, *(_gaussian_taps(first[a], self.step[a], self.area[a], sigma_scale,
                                                                  scores.shape[2 + a], (height, width)[a])
                                                   for a in (0, 1)))
        return _mean_of_covering(scores, _covering(first[0], self.step[0], self.area[0], scores.shape[2], height),
                                 _covering(first[1], self.step[1], self.area[1], scores.shape[3], width))

    def tiff_resolution(self) -> dict:
        """tifffile's resolution arguments: cells per centimetre, where the size is known."""
        if not self.microns_per_pixel:
            return {}
        per_cm = tuple(1e4 / (self.step[a] * self.microns_per_pixel) for a in (1, 0))
        return {"resolution": per_cm, "resolutionunit": "CENTIMETER"}


def _taps(first: float, step: float, cells: int, pixels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of `pixels` pixel centres (k + 0.5) along one axis, the two cells whose
    centres (first + step * i) surround it and the second one's weight, held at the ends."""
    at = np.clip((np.arange(pixels) + 0.5 - first) / step, 0, cells - 1)
    before = np.floor(at).astype(np.int64)
    return before, np.minimum(before + 1, cells - 1), (at - before).astype(np.float32)


def _blend(scores: np.ndarray, taps, axis: int) -> np.ndarray:
    before, after, weight = taps
    shape = [1] * scores.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    a, b = np.take(scores, before, axis=axis), np.take(scores, after, axis=axis)
    return np.where(weight == 0, a, a * (1 - weight) + b * weight).astype(np.float32)


def _covering(first: float, step: float, area: float, cells: int, pixels: int) -> np.ndarray:
    """(pixels, cells) weights along one axis: for each pixel, 1 / n for each of the n
    cells whose crop (`area` wide, centred first + step * i) holds its centre, or 1
    for the nearest cell where none does (the edge held). Crops cover a box of pixels
    when they cover its rows and its columns, so the mean over a box is these weights
    applied along each axis in turn."""
    centres = np.arange(pixels) + 0.5
    starts = first + step * np.arange(cells) - area / 2
    covers = (starts[None, :] <= centres[:, None]) & (centres[:, None] < starts[None, :] + area)
    nearest = np.clip(np.round((centres - first) / step), 0, cells - 1).astype(np.int64)
    uncovered = ~covers.any(axis=1)
    covers[uncovered, nearest[uncovered]] = True
    return covers / covers.sum(axis=1, keepdims=True)


MEAN_BLOCK_VALUES = 1 << 22  # float64 pixels a block of classes of "mean" holds at once (32 MB)


def _mean_of_covering(scores: np.ndarray, row_weights: np.ndarray, col_weights: np.ndarray) -> np.ndarray:
    """`scores` (N, K, rows, cols) averaged by `_covering` weights along both axes, into
    float32 (N, K, height, width); a NaN cell NaN wherever it weighs in, not in every
    pixel of its row (0 x NaN). A few classes at a time: 1000 classes over a 320x352
    picture made 900 MB float64 temporaries, 28 s (bilinear's kernel: 0.5 s)."""
    height, width = row_weights.shape[0], col_weights.shape[0]
    out = np.empty((*scores.shape[:2], height, width), np.float32)
    block = max(1, MEAN_BLOCK_VALUES // (height * width))
    for image in range(scores.shape[0]):
        for start in range(0, scores.shape[1], block):
            part = scores[image, start:start + block]
            missing = np.isnan(part)
            mean = row_weights @ np.where(missing, 0.0, part).astype(np.float64) @ col_weights.T
            if missing.any():
                mean[row_weights @ missing @ col_weights.T > 0] = np.nan
            out[image, start:start + block] = mean
    return out


def _gaussian_taps(first: float, step: float, area: float, sigma_scale: float, cells: int,
                   pixels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Along one axis, for each pixel: how many cells' crops hold its centre (`_covering`),
    which cells (the first `count` columns of `cell`, in order) and each one's weight
    along this axis, MONAI's: exp(-d^2 / (2 sigma^2)) at d from the crop's centre to
    the pixel's, sigma = sigma_scale x the crop's side. A pixel no crop holds (past the
    outermost ones, in a gap between them) takes its nearest cell, weighted 1 (the edge held)."""
    holding = _covering(first, step, area, cells, pixels) > 0
    count = holding.sum(axis=1)
    cell = np.argsort(~holding, axis=1, kind="stable")[:, :int(count.max())]  # the holding cells first, in order
    distance = np.arange(pixels)[:, None] + 0.5 - (first + step * cell)
    covered = (-area / 2 <= distance) & (distance < area / 2)
    weight = np.where(covered, np.exp(-distance ** 2 / (2 * (sigma_scale * area) ** 2)), 1.0)
    return count, cell, weight


def _gaussian_of_covering(scores: np.ndarray, rows: tuple, cols: tuple) -> np.ndarray:
    """Each pixel the weighted mean of the cells whose crops cover it, a cell's weight its
    row weight times its column weight (`_gaussian_taps`), clamped from below at
    MONAI_LEAST_WEIGHT as MONAI clamps its importance map: MONAI's mode="gaussian" over
    these crops. Not two matrix products along the axes as "mean" is: the clamp of the
    product (at a crop's corners, and along the image's edges where every crop covering
    a pixel has it near its own edge) does not factor into the axes."""
    from graphconv.ops.pixel_blends import weighted_means

    out = np.empty((*scores.shape[:2], rows[0].size, cols[0].size), np.float32)
    weighted_means(np.ascontiguousarray(scores, np.float32), *rows, *cols, MONAI_LEAST_WEIGHT, out)
    return out


def _on_the_pixels(coordinate: float) -> str:
    """Where a coordinate (pixel k spanning k..k+1) falls: '224 is the corner between
    pixels 223 and 224', '33.5 is pixel 33's centre', '33.6 lies in pixel 33'."""
    pixel = int(np.floor(coordinate))
    if coordinate == pixel:
        return f"{coordinate:.6g} is the corner between pixels {pixel - 1} and {pixel}"
    if coordinate == pixel + 0.5:
        return f"{coordinate:.6g} is pixel {pixel}'s centre"
    return f"{coordinate:.6g} lies in pixel {pixel}"


def digest_of_model(model_path: str, model) -> str:
    """`files.model_digest` of the files `model` was read from (`model_path` among them)."""
    from graphconv.files import model_digest
    return model_digest([model_path, *model.graph.meta.get("read_from", ())])


def map_contents(image: str, model_path: str, model, classes: Sequence[int] | None = None,
                 reduce: str | None = None, left_out: dict | None = None) -> dict:
    """What a map's channels hold, and of what image and model, for the map itself to
    say (a .zarr's attribute, a .tif's description): after `--classes 3,1` which band is
    which class, and a `--reduce argmax` map's legend, were known only to the command
    that made it. The model (`model_path`, as loaded into `model`) by its path and by the
    digest of its files' contents (`files.model_digest`): a path alone does not tell a
    model compiled again, or retrained, in place. `left_out`: which cells the run did not
    compute (`left_out_settings`). `model_classes` and `output_activation` ("softmax",
    "sigmoid" or None) tell `graphconv cells` which class a cell's kept scores make the
    model's best (`cells.StoredMap.class_rule`)."""
    from graphconv.images import output_activation

    kept = list(classes) if classes is not None else list(range(model.output_channels))
    values = ("class scores, one channel per class of `classes` (NaN where not computed)" if reduce != "argmax"
              else "the class of each cell: the best of `classes` where its probability is at least 0.5, 65534 "
              "where none is (each class called on its own: a sigmoid's); 65535 where not computed"
              if output_activation(model.graph) == "sigmoid"
              else "the class of each cell: the best of `classes` (65535 where not computed)")
    contents = {"image": os.path.abspath(image), "model": os.path.abspath(model_path),
                "model_digest": digest_of_model(model_path, model),
                "values": values, "classes": kept, "model_classes": model.output_channels,
                "output_activation": output_activation(model.graph)}
    labels = model.graph.meta.get("labels")
    if labels:
        contents["labels"] = [labels[c] for c in kept]
    if left_out is not None:
        contents["cells_left_out"] = left_out
    return contents


def left_out_settings(skip_background: float | None, max_nodata: float, nodata: float | None = None,
                      mask: str | None = None) -> dict:
    """The settings that choose which cells a map leaves out (NaN, or 65535 in a class
    map), for it to state: --skip-background's saturation, if given, the share of a
    crop that may be no-data (--max-nodata; 1 with --compute-nodata) and the raster's
    no-data value given by --nodata (None: its file's own, if any; NaN as "NaN", which
    compares equal to itself), and --mask, by its path and file stamp (only where given,
    so maps of before it compare equal). --skip-existing and --resume compare them, so a
    map made with other ones is made again (`cluster.holds_its_map`)."""
    if nodata is not None:
        nodata = "NaN" if np.isnan(nodata) else float(nodata)
    settings = {"skip_background": skip_background, "max_nodata": float(max_nodata), "nodata": nodata}
    if mask is not None:
        from graphconv.files import file_stamp
        settings["mask"] = {os.path.abspath(mask): file_stamp(mask)}
    return settings


def cell_placement(source, cells: Field) -> CellPlacement:
    """Where the cells `cells` places (`Model.cell_area`: each on its crop) stand on the
    level-0 image behind `source` (`graphconv.sources`: a level, read coarser or not,
    padded or not: a padded image's cells stand on the image itself)."""
    from graphconv.sources import level0_span, on_image

    read = read_as(source)
    source, cells = on_image(source, cells)
    placement = cells_on_pixels(cells, level0_span(source), getattr(source, "microns_per_pixel", None))
    return replace(placement, read=read)


def read_as(source) -> dict:
    """What the map was read at, for it to state: the pyramid level (`--level`, or the
    one `--mpp` chose; 0 for an image of one), how many times coarser than that level
    (`--downsample`, or `--mpp`'s factor; 1 as stored) and the bands the network took,
    numbered from 1 as GDAL does (`--bands`; None: every band, in the file's order), and
    the --resize a picture was resized by, where it was (H W, or the shorter side S), and
    the --pad-image border's mode, where it has one."""
    from graphconv.sources import Bordered

    return read_settings(int(getattr(source, "level", 0) or 0), float(getattr(source, "factor", 1)),
                         getattr(source, "bands", None), getattr(source, "resize", None),
                         source.mode if isinstance(source, Bordered) else None)


def read_settings(level: int = 0, downsample: float = 1.0, bands=None, resize=None, pad_image: str | None = None
                  ) -> dict:
    """`read_as`'s statement, also of an image run whole (level 0, as stored)."""
    read = {"level": level, "downsample": downsample, "bands": list(bands) if bands is not None else None}
    if resize is not None:
        read["resize"] = list(resize)
    if pad_image is not None:
        read["pad_image"] = pad_image
    return read


def cells_on_pixels(cells: Field, span: tuple[float, float] = (1.0, 1.0),
                    microns_per_pixel: float | None = None) -> CellPlacement:
    """The placement of `cells` on pixels each `span` (rows, cols) level-0 pixels wide:
    an image run whole (an .npy, a picture) is its own level 0."""
    first = tuple(span[a] * (cells.offset[a] + cells.size[a] / 2) for a in (0, 1))
    step = tuple(span[a] * cells.stride[a] for a in (0, 1))
    area = tuple(span[a] * cells.size[a] for a in (0, 1))
    return CellPlacement(first, step, microns_per_pixel, area=area)


def cell_size(geo: GeoReference) -> tuple[float, float]:
    """A cell's width and height in map units: of ground control points, as the affine
    that fits them best gives it (three or more not in a line), or the distance of two
    over their distance in cells."""
    affine = geo.affine if geo.affine is not None else _fitted(geo.gcps)
    if affine is None:
        (c0, r0, x0, y0, _), (c1, r1, x1, y1, _) = geo.gcps[0], geo.gcps[-1]
        apart = float(np.hypot(c1 - c0, r1 - r0))
        size = float(np.hypot(x1 - x0, y1 - y0)) / apart if apart else float("nan")
        return size, size
    (a, b, _), (c, d, _) = affine
    return float(np.hypot(a, c)), float(np.hypot(b, d))


def _fitted(gcps) -> np.ndarray | None:
    """The least-squares affine of three or more ground control points not in a line."""
    if gcps is None or len(gcps) < 3:
        return None
    raster = np.array([(col, row, 1.0) for col, row, *_ in gcps])
    if np.linalg.matrix_rank(raster) < 3:
        return None
    model = np.array([(x, y) for _, _, x, y, _ in gcps])
    return np.linalg.lstsq(raster, model, rcond=None)[0].T


def tiff_tags(geo: GeoReference | None, nodata: str | None) -> list[tuple]:
    """tifffile extratags for a map: its georeference (tiepoint and pixel scale where
    the axes are not rotated, else the transformation matrix) and GDAL's no-data."""
    tags: list[tuple] = []
    if geo is not None and geo.gcps is not None:
        points = tuple(float(v) for col, row, x, y, z in geo.gcps for v in (col, row, 0.0, x, y, z))
        tags.append((MODEL_TIEPOINT, DOUBLE, len(points), points, True))
    elif geo is not None:
        (a, b, x0), (c, d, y0) = geo.affine
        if b == 0 and c == 0 and a > 0 and d < 0:
            tags += [(MODEL_PIXEL_SCALE, DOUBLE, 3, (a, -d, 0.0), True),
                     (MODEL_TIEPOINT, DOUBLE, 6, (0.0, 0.0, 0.0, x0, y0, 0.0), True)]
        else:
            matrix = (a, b, 0.0, x0, c, d, 0.0, y0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
            tags.append((MODEL_TRANSFORMATION, DOUBLE, 16, matrix, True))
    if geo is not None:  # the projection, whichever way the cells are placed in it
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
    from graphconv import __version__

    tifffile = _tifffile()
    if scores.shape[0] != 1:
        raise GraphconvError(f"a TIFF map holds one image's map; this output has {scores.shape[0]}: write .npy "
                             "or .zarr", file=path)
    bands = scores[0]
    nodata = "65535" if bands.dtype == np.uint16 else "nan" if np.issubdtype(bands.dtype, np.floating) else None
    data = bands[0] if bands.shape[0] == 1 else bands
    description = MAP_DESCRIPTION + (f"\n{json.dumps(placement.as_dict())}" if placement else "")
    resolution = placement.tiff_resolution() if placement and geo is None else {}
    contents = placement.contents if placement is not None else None
    metadata = gdal_metadata(band_descriptions(bands.shape[0], bands.dtype, contents),
                             class_names(bands.dtype, contents))
    extratags = tiff_tags(geo, nodata) + [(GDAL_METADATA, ASCII, len(metadata) + 1, metadata, True)]
    colours = class_colour_table(bands.dtype, contents) if data.ndim == 2 else None
    tifffile.imwrite(path, data, photometric="minisblack" if colours is None else "palette", colormap=colours,
                     planarconfig="separate" if data.ndim == 3 else None,
                     tile=map_tile(bands.shape[1:]), **map_compression(bands.dtype),
                     extratags=extratags, bigtiff=data.nbytes > 2 ** 31, description=description,
                     metadata=None, software=f"graphconv {__version__}", **resolution)


def band_descriptions(count: int, dtype: np.dtype, contents: dict | None) -> list[str]:
    """Each band's name, as GDAL shows it (QGIS's band names): its class's label, or
    "class K" where the model has no labels; a class map's one band says what its
    values are."""
    contents = contents or {}
    if np.dtype(dtype) == np.uint16 and count == 1:
        no_call = "65534: no class called; " if _calls_on_its_own(contents) else ""
        return [f"class (the best class of each cell; {no_call}65535: not computed)"]
    classes = contents.get("classes") or list(range(count))
    labels = contents.get("labels")
    return [labels[i] if labels and i < len(labels) else f"class {classes[i] if i < len(classes) else i}"
            for i in range(count)]


def class_names(dtype: np.dtype, contents: dict | None) -> dict[int, str]:
    """A class map's legend, value -> name, for its band's metadata (`CLASS_<value>`
    items): the candidate classes, by label where the model has labels."""
    if np.dtype(dtype) != np.uint16 or not contents:
        return {}
    classes, labels = contents.get("classes") or [], contents.get("labels")
    legend = {int(c): labels[i] if labels and i < len(labels) else f"class {c}" for i, c in enumerate(classes)}
    return {**legend, NO_CALL_CLASS: "no class called"} if _calls_on_its_own(contents) else legend


def _calls_on_its_own(contents: dict) -> bool:
    """Whether a class map's model calls each class on its own (ends in a sigmoid), so
    its map holds NO_CALL_CLASS where none is called."""
    return contents.get("output_activation") == "sigmoid"


def class_colour_table(dtype: np.dtype, contents: dict | None) -> np.ndarray | None:
    """A class map's TIFF colour map, (3, 65536) 16-bit red, green and blue: each
    candidate class the colour the class picture and `graphconv cells` give it, any
    other value (65535: not computed) black, but 65534 (no class called) grey. GDAL reads it as the band's colour table,
    so QGIS and ArcGIS show the classes in colour unasked; the values stay the classes.
    None for a score map."""
    if np.dtype(dtype) != np.uint16 or not contents or not contents.get("classes"):
        return None
    from graphconv.images import class_colours

    classes = [int(c) for c in contents["classes"]]
    table = np.zeros((3, 2 ** 16), np.uint16)
    table[:, classes] = (class_colours(classes).round().astype(np.uint16) * 257).T
    if _calls_on_its_own(contents):
        table[:, NO_CALL_CLASS] = NO_CALL_GREY * 257
    return table


def gdal_metadata(descriptions: Sequence[str], legend: dict[int, str]) -> str:
    """GDAL's metadata tag (42112): each band's description (`role="description"`,
    what GDAL's GetDescription and QGIS's band names read) and, for a class map, each
    class value's name as band metadata (gdalinfo lists it; GDAL keeps category names
    only in a .aux.xml beside the file, which graphconv does not write)."""
    from xml.sax.saxutils import escape, quoteattr

    items = [f'<Item name="DESCRIPTION" sample="{i}" role="description">{escape(text)}</Item>'
             for i, text in enumerate(descriptions)]
    items += [f'<Item name={quoteattr(f"CLASS_{value}")} sample="0">{escape(name)}</Item>'
              for value, name in sorted(legend.items())]
    # an ASCII tag: other characters as XML character references, which GDAL's parser reads back
    return ("<GDALMetadata>" + "".join(items) + "</GDALMetadata>").encode("ascii", "xmlcharrefreplace").decode()


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
    from graphconv.sources import tifffile_warnings_kept
    try:
        with tifffile_warnings_kept(), _tifffile().TiffFile(path) as tif:
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


def is_zarr_path(path: str | None) -> bool:
    """Whether `path` names a zarr store (a folder called *.zarr, with or without its slash)."""
    return bool(path) and path.rstrip("/").lower().endswith(".zarr")
