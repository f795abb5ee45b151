"""A finished map's cells as vector data, for the tools that show, count or join them:
GeoJSON (QuPath's tiles over a slide, or polygons in a GeoTIFF's CRS for QGIS and
geopandas) and CSV (a row per cell). `graphconv cells MAP -o CELLS.geojson`.

It reads the .tif and .zarr maps `graphconv run` writes, because they say what a viewer
needs and an .npy cannot: where their cells stand on the image at full resolution
(`georef.CellPlacement.as_dict`), what their channels hold (classes, labels, a
`--reduce argmax` map's class values) and, over a georeferenced image, the map's own
georeference. An --images batch's .npy maps too: the batch's graphconv-maps.csv records
the same of each (`manifest.listed_map`). Each cell becomes the square a stride wide
centred on its centre, so the squares tile the image as the map's pixels do (its crop,
`cell_area_hw`, is wider: crops overlap); cells not computed (NaN, 65535 in a class map: glass, no-data, outside a
--mask) are left out.

The coordinates follow the tool that reads them. Over an image with no georeference
(a slide, a photo): pixels of the image at full resolution, x right and y down, pixel k
spanning k..k+1, as QuPath's GeoJSON import reads them, each cell a QuPath "tile" with
its best class as its classification and its scores as measurements. Over a
georeferenced image: the image's CRS through the map's affine (named in the "crs" member
GDAL reads where the GeoKeys give an EPSG code), each cell's properties flat (row, col,
top_class, top_score, a score per class) as QGIS and geopandas list attributes.
"""
from __future__ import annotations

import csv
import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Iterator, Sequence, TextIO

import numpy as np

from graphconv.background import NO_CALL_CLASS
from graphconv.classes import class_index, rejoined_names
from graphconv.errors import GraphconvError, agreeing, shown, shown_path, warn_caller
from graphconv.georef import is_zarr_path

CELL_FORMATS = {".geojson": ".geojson", ".json": ".geojson", ".csv": ".csv"}  # a name's suffix -> what is written
BLOCK_BYTES = 32 << 20  # of a map read at once: a slide's map of 1000 classes is far larger than memory
NOT_COMPUTED_CLASS = 65535  # a --reduce argmax map's cells not computed (its no-data)
COORDINATE_DIGITS = 10  # significant digits of a coordinate: 0.1 mm in UTM metres, ~1 mm in degrees
SCORE_DIGITS = 9  # what float32 needs to come back bit for bit
PIXEL_UNITS = "pixels of the image at full resolution (a pyramid's level 0), x right, y down, pixel k spanning k..k+1"
CSV_LEAD = ("row", "col", "x", "y")  # how a CSV of cells graphconv wrote begins
MICRON_COLUMNS = ("x_um", "y_um")  # a slide's cell centres in µm from its top-left corner, where it states its pixels
IN_MEMORY = "<scores>"  # a StoredMap's path where it is a map held in memory (`write_cells_of`)


@dataclass(frozen=True)
class StoredMap:
    """A map graphconv wrote, opened for reading: `bands` (K, rows, cols) read as sliced,
    `placement` what it says of its cells (`CellPlacement.as_dict`, its contents
    included), `geo` its own georeference (raster (col, row) of its cells -> the image's
    CRS), or None."""

    path: str
    bands: Any
    placement: dict
    geo: Any

    @property
    def is_class_map(self) -> bool:
        """A --reduce argmax map: one band of class values, no scores."""
        return np.dtype(self.bands.dtype) == np.uint16 and self.bands.shape[0] == 1

    @property
    def classes(self) -> list[int]:
        """The model's class index of each band (of each candidate, in a class map)."""
        stated = self.placement.get("classes")
        return [int(c) for c in stated] if stated else list(range(self.bands.shape[0]))

    @property
    def class_rule(self) -> str:
        """How a cell's class is told from the scores the map keeps:
        - "best": the map holds every class of the model (or is a --reduce argmax map, or
          an older map that does not say): its best score;
        - "threshold": the model gives one score (a sigmoid's probability, or its logit):
          its class where the probability is at least one half (the logit at least 0);
          or it ends in a sigmoid, each class a finding of its own (an X-ray's findings,
          a satellite tile's labels): its best class where that is at least one half
          (no finding called: unclassified), and --top-class keeps the cells calling a
          class, whichever scores highest (`independent`);
        - "majority": some classes of a softmax model (--classes): a kept class whose
          probability is over one half, which no other class can beat;
        - "unknown": some classes of a model whose scores do not tell whether another
          class, not kept, beats them.
        The best of the kept scores alone called every tissue tile of a one-score tumour
        model "Tumour" (6e-06 included), and QuPath showed the slide as tumour."""
        model_classes = self.placement.get("model_classes")
        if self.is_class_map or not isinstance(model_classes, int):
            return "best"
        if model_classes == 1 or self.independent:
            return "threshold"
        if len(self.classes) == model_classes:
            return "best"
        return "majority" if self.placement.get("output_activation") == "softmax" else "unknown"

    @property
    def independent(self) -> bool:
        """Whether each class is called on its own (a model of several classes ending in a
        sigmoid: multi-label), not picked as the best of them."""
        return (not self.is_class_map and self.placement.get("output_activation") == "sigmoid"
                and self.placement.get("model_classes", 1) != 1)

    @property
    def threshold(self) -> float:
        """A one-score model's: 0.5 of a probability, 0 of a logit (sigmoid(0) = 0.5)."""
        return 0.0 if self.placement.get("output_activation") is None else 0.5

    def class_rule_note(self) -> str | None:
        """What `graphconv cells` says of a map whose cells are not all classified by
        their best score."""
        rule, names = self.class_rule, self.names
        if self.is_class_map and self.placement.get("output_activation") == "sigmoid":
            return (f"note: the model ends in a sigmoid, each class called on its own: the map's cells calling none "
                    f"({NO_CALL_CLASS}) are written unclassified")
        if rule == "threshold" and self.independent:
            return ("note: the model ends in a sigmoid, each class a finding of its own: a cell is classified by its "
                    "best class where that one's probability is at least 0.5 (written unclassified, with its scores, "
                    "where no class is), and --top-class keeps the cells whose own probability of a class named is "
                    "at least --min-score (0.5 unless given), whichever class scores highest")
        if rule == "threshold":
            what = "probability" if self.threshold else "score (a logit: the probability 0.5)"
            return (f"note: the model gives one score: a cell is classified {names[0]} where its {what} is at least "
                    f"{self.threshold:g}, and written unclassified, with its score, elsewhere")
        if rule == "majority":
            return (f"note: the map holds {len(self.classes)} of the model's {self.placement['model_classes']} "
                    "classes (--classes): a cell is classified by a kept class only where its probability is over "
                    "0.5 (then no other class beats it), and written unclassified, with its scores, elsewhere")
        if rule == "unknown":
            return (f"note: the map holds {len(self.classes)} of the model's {self.placement['model_classes']} "
                    "classes (--classes), whose scores do not say whether a class not kept beats them: its cells "
                    "are written unclassified, with their scores (map every class to classify them)")
        return None

    @property
    def names(self) -> list[str]:
        """Each class's name: its label, or "class K" (made distinct, a measurement's key)."""
        labels = self.placement.get("labels") or []
        names = [str(labels[i]) if i < len(labels) else f"class {c}" for i, c in enumerate(self.classes)]
        return _distinct(names)


def _distinct(names: list[str], taken: Sequence[str] = ()) -> list[str]:
    """`names`, a repeated or `taken` one given its position ("tumour (2)"): two columns or
    measurements of one name would lose one."""
    seen, out = set(taken), []
    for i, name in enumerate(names):
        unique = name if name not in seen else f"{name} ({i})"
        seen.add(unique)
        out.append(unique)
    return out


@contextmanager
def opened_map(path: str) -> Iterator[StoredMap]:
    """The .tif or .zarr map at `path`, or an .npy an --images batch lists, refused
    unless graphconv wrote it with a placement (a lone .npy, a user's raster, a map of an
    --input array, a batch of several images)."""
    path = str(path)
    if is_zarr_path(path):
        yield _zarr_map(path)
        return
    from graphconv.georef import is_tiff_output
    if path.lower().endswith(".npy"):
        yield _listed_npy_map(path)
        return
    if not is_tiff_output(path):
        raise GraphconvError("cells reads a .tif or .zarr map graphconv run wrote, or an .npy map of an --images "
                             "batch", file=path)
    with _tiff_map(path) as stored:
        yield stored


@contextmanager
def _tiff_map(path: str) -> Iterator[StoredMap]:
    from graphconv.georef import _tifffile, read_georeference, stated_placement
    from graphconv.sources import check_tiff_opens

    if not os.path.isfile(path):
        raise GraphconvError("no such file", file=path)
    check_tiff_opens(path)  # a damaged file said as such, not as "not a map graphconv wrote"
    placement = stated_placement(path)
    if placement is None:
        raise GraphconvError("is not a map graphconv wrote (its description does not say so): cells reads the "
                             ".tif and .zarr maps of graphconv run", file=path)
    _check_placed(placement, path)
    with _tifffile().TiffFile(path) as tif:
        series = tif.series[0]
        bands = _lazy_bands(series)
        yield StoredMap(path, bands, placement, read_georeference(path))


def _lazy_bands(series) -> Any:
    """A TIFF map's bands as (K, rows, cols), read a slice at a time through zarr where it
    is installed (the `scale` extra), else whole (within the memory budget)."""
    try:
        import zarr
        bands = zarr.open(series.aszarr(), mode="r")
    except ImportError:
        from graphconv.memory import check_fits
        check_fits(int(np.prod(series.shape)) * np.dtype(series.dtype).itemsize, "the map, read whole "
                   "(pip install zarr reads it a slice at a time)")
        bands = series.asarray()
    return bands if bands.ndim == 3 else _OneBand(bands)


class _OneBand:
    """A one-band TIFF map (rows, cols) seen as (1, rows, cols)."""

    def __init__(self, band):
        self.band, self.dtype, self.shape = band, band.dtype, (1, *band.shape)

    def __getitem__(self, index):
        _, rows, cols = index
        return np.asarray(self.band[rows, cols])[None]


def _zarr_map(path: str) -> StoredMap:
    from graphconv.georef import read_zarr_georeference
    from graphconv.sources import require
    from graphconv.tiling import ZARR_MAP_ATTRIBUTE, missing_zarr_chunks

    if not os.path.isdir(path):
        raise GraphconvError("no such zarr map (a folder)", file=path)
    try:
        array = require("zarr").open_array(path, mode="r")
    except Exception as err:  # noqa: BLE001 - zarr's own errors for a group, a damaged store
        raise GraphconvError(f"is not a zarr array graphconv wrote: {err}", file=path) from None
    placement = dict(array.attrs).get(ZARR_MAP_ATTRIBUTE)
    if not isinstance(placement, dict):
        raise GraphconvError("is not a map graphconv wrote (no 'graphconv' attribute): cells reads the .tif "
                             "and .zarr maps of graphconv run", file=path)
    _check_placed(placement, path)
    if array.ndim != 4 or array.shape[0] != 1:
        raise GraphconvError(f"holds a {tuple(array.shape)} array; cells reads the map of one image "
                             "(1, classes, rows, cols)", file=path)
    missing, stated = missing_zarr_chunks(array)
    if missing:
        raise GraphconvError(f"is damaged: {missing} of the {stated} chunks it was written with "
                             f"{agreeing(missing, 'is', 'are')} missing "
                             "(deleted, or lost in copying), and their cells would read as not computed", file=path)
    return StoredMap(path, _FirstImage(array), placement, read_zarr_georeference(path)[0])


def _listed_npy_map(path: str) -> StoredMap:
    """An --images batch's .npy map, placed and described by its row of the batch's
    graphconv-maps.csv (`manifest.listed_map`): an .npy holds nothing but the scores."""
    from graphconv.georef import georeference_from_dict, georeference_of_placement
    from graphconv.manifest import MANIFEST_NAME, listed_map, placement_of, row_settings

    if not os.path.isfile(path):
        raise GraphconvError("no such file", file=path)
    listed = listed_map(path)
    if listed is None:
        raise GraphconvError(f"an .npy holds no word of where its cells stand, and no {MANIFEST_NAME} of an "
                             "--images batch beside it or above it lists it: write the map with --output MAP.tif "
                             "or MAP.zarr (or --output-format tif with --images)", file=path)
    listing, row = listed
    placement = placement_of(row)
    if placement is None:
        raise GraphconvError(f"its row in {shown_path(str(listing))} states no placement for its cells (a --scales "
                             "vector, or a map an earlier graphconv listed): write the map as .tif to place its "
                             "cells", file=path)
    try:
        scores = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise GraphconvError(f"cannot be read as an .npy map: {err}", file=path) from None
    if scores.ndim != 4 or scores.shape[0] != 1:
        raise GraphconvError(f"holds a {tuple(scores.shape)} array; cells reads the map of one image "
                             "(1, classes, rows, cols)", file=path)
    made_with = row_settings(listing.parent, row)
    contents = {key: made_with[key] for key in ("model", "model_digest", "classes", "labels", "model_classes",
                                                "output_activation") if made_with.get(key) is not None}
    contents["image"] = row["image"]
    if made_with.get("classes") is None and isinstance(made_with.get("model_classes"), int):
        contents["classes"] = list(range(made_with["model_classes"]))  # all: a class map's values are among them
    elif made_with.get("classes") is None and made_with.get("reduce") == "argmax":
        raise GraphconvError(f"its row in {shown_path(str(listing))}, of an earlier graphconv, does not say the "
                             "model's classes, which the map's values are: map the image again", file=path)
    placement = replace(placement, contents=contents)
    stated = made_with.get("map_georeference")
    if "model_classes" in made_with:  # this version's row: it records the map's georeference, where it has one
        geo = georeference_from_dict(stated) if isinstance(stated, dict) else None
    else:  # an earlier version's: the image's own, where it is still there
        geo = georeference_of_placement(placement)
    return StoredMap(path, _FirstImage(scores), placement.as_dict(), geo)


class _FirstImage:
    """A zarr map's one image, (1, K, rows, cols) seen as (K, rows, cols)."""

    def __init__(self, array):
        self.array, self.dtype, self.shape = array, array.dtype, tuple(array.shape[1:])

    def __getitem__(self, index):
        return self.array[(0, *index)]


def _check_placed(placement: dict, path: str) -> None:
    if not all(isinstance(placement.get(key), list) and len(placement[key]) == 2
               for key in ("first_cell_centre_yx", "cell_step_yx")):
        raise GraphconvError("states no placement for its cells (a map of an --input array stands on no "
                             "image): cells places them on the image it was made of", file=path)


@dataclass(frozen=True)
class CellsWritten:
    """What `write_cells` wrote: how many cells of how many computed, and in which coordinates."""

    written: int
    computed: int
    coordinates: str
    notes: tuple[str, ...] = ()
    regions: int | None = None  # --regions: the patches the cells were merged into
    classes: int | None = None  # --regions: of how many classes


def write_cells(map_path: str, output: str, top_classes: Sequence[int | str] | None = None,
                min_score: float | None = None, regions: bool = False) -> CellsWritten:
    """Write the cells of the map at `map_path` (a .tif or .zarr `graphconv run` wrote)
    to `output`, GeoJSON (.geojson) or CSV (.csv) as its name says, replacing only a file
    graphconv wrote. `top_classes` (indices of the model's classes, or their labels)
    keeps the cells whose best class is one of them (of a multi-label model, those
    calling one: its own score at least `min_score`, 0.5 unless given,
    `StoredMap.independent`); `min_score` the cells whose best score is at least it (not
    of a class map, which holds no scores). `regions`: GeoJSON of each class's cells
    merged into polygons, one feature per class (`_write_regions`), not a feature per
    cell. The file appears only once complete. What the command notes (a georeference
    that names no CRS) is a GraphconvWarning here, and in `notes`."""
    output = str(output)
    kind = _format_of(output)
    if os.path.abspath(output.rstrip("/")) == os.path.abspath(str(map_path).rstrip("/")):
        raise GraphconvError("the output is the map itself; write the cells somewhere else", file=output)
    _check_replaceable(output, kind)
    with opened_map(map_path) as stored:
        return _cells_written(stored, output, kind, top_classes, min_score, regions)


def write_cells_of(scores, model, output: str, *, image=None,
                   top_classes: Sequence[int | str] | None = None, min_score: float | None = None,
                   regions: bool = False) -> CellsWritten:
    """`write_cells` of a map held in memory: `scores`, one image's map as `model.run`,
    `run_image` or `run_tiled` returned it ((1, K, rows, cols) or (K, rows, cols); or a
    `reduce="argmax"` class map), its cells placed by `model.cell_area`. `image`, the
    image it is the map of: its path, for a map of the image run whole at its full
    resolution; or the source `run_tiled` read (`graphconv.sources.open_source(path, ...,
    mpp=, level=, downsample=)`), whose level and factor place the cells on the
    full-resolution image, as `run --mpp` and `cells` do. Where it is a GeoTIFF or a
    georeferenced zarr, the cells are written in its CRS (else in its pixels). A map of
    another size than the image's map is refused: one read coarser, with a path, put
    every cell at a fraction of its place. A notebook had to write the map to a file
    first, and only the command wrote one that `write_cells` reads."""
    output = str(output)
    kind = _format_of(output)
    _check_replaceable(output, kind)
    return _cells_written(_map_in_memory(scores, model, image), output, kind, top_classes, min_score, regions)


def _map_in_memory(scores, model, image) -> StoredMap:
    """`scores` as `opened_map` gives a file graphconv wrote: placed by the model's cells
    on the image (a path, or a source opened), and described as `georef.map_contents`
    describes a run's map."""
    from graphconv.georef import cell_placement, cells_on_pixels, image_georeference, placed_georeference
    from graphconv.images import output_activation

    bands = np.asarray(scores)
    if bands.ndim == 4 and bands.shape[0] == 1:
        bands = bands[0]
    if bands.ndim != 3:
        raise GraphconvError(f"scores: one image's map, (1, K, rows, cols) or (K, rows, cols), not shape "
                             f"{tuple(np.shape(scores))}")
    classes = model.output_channels
    class_map = bands.dtype == np.uint16 and bands.shape[0] == 1
    if not class_map and bands.shape[0] != classes:
        raise GraphconvError(f"scores: {bands.shape[0]} channels, but {model.graph.name} gives {classes} classes: "
                             "the map of this model, as run returned it")
    opened = image is not None and not isinstance(image, (str, os.PathLike))
    path = os.fspath(image.path if opened else image) if image is not None else None
    if image is not None:
        _check_the_map_is_the_image_s(bands.shape[1:], model, image if opened else None, path)
    contents = {"image": os.path.abspath(path) if path else None, "classes": list(range(classes)),
                "model_classes": classes, "output_activation": output_activation(model.graph)}
    if model.graph.meta.get("labels"):
        contents["labels"] = list(model.graph.meta["labels"])
    placement = cell_placement(image, model.cell_area) if opened else cells_on_pixels(model.cell_area)
    placement = replace(placement, contents=contents)
    geo = image_georeference(path) if path else None
    return StoredMap(IN_MEMORY, bands, placement.as_dict(), geo and placed_georeference(geo, placement))


def _check_the_map_is_the_image_s(map_hw: tuple[int, int], model, source, path: str) -> None:
    """Refuse a map of another size than `model`'s map of the image (`source` as opened,
    else the image at `path` read whole at full resolution): a map of a slide read at
    --mpp 0.5, given its path, had every cell written at half its place. A raster whose
    bands the network takes only some of (`bands=`) is not checked."""
    how = "as opened" if source is not None else "read whole at full resolution"
    hw = (source.height, source.width) if source is not None else _full_resolution_hw(path, model)
    if hw is None:
        return
    expected = model.output_hw(*hw)
    if tuple(map_hw) != tuple(expected):
        raise GraphconvError(f"scores: a map of {map_hw[0]}x{map_hw[1]} cells, but {model.graph.name}'s map of "
                             f"{os.path.basename(path)} ({hw[0]}x{hw[1]} pixels) {how} has "
                             f"{expected[0]}x{expected[1]}: a map of the image read coarser or resized is placed by "
                             "passing the source it was run on, "
                             "image=graphconv.sources.open_source(path, ..., mpp=...)")


def _full_resolution_hw(path: str, model) -> tuple[int, int] | None:
    """(height, width) of the image at `path`: a picture's from its header (decoding it
    whole again only to measure it doubled the work), a TIFF's or zarr's from the array
    opened lazily; None for a raster the network takes only some bands of."""
    from graphconv.images import PICTURE_SUFFIXES, image_size
    from graphconv.sources import open_source

    if os.path.splitext(path)[1].lower() in PICTURE_SUFFIXES:
        return image_size(path)
    try:
        source = open_source(path, model.crop_shape[0], None)
    except GraphconvError:
        return None
    return source.height, source.width


def _cells_written(stored: StoredMap, output: str, kind: str, top_classes, min_score,
                   regions: bool = False) -> CellsWritten:
    """The cells of `stored` written to `output` (its `kind`, ".geojson" or ".csv"), as
    the user selected them (merged into each class's regions), the file appearing only
    once complete."""
    from graphconv.files import atomic_write

    if regions and kind != ".geojson":
        raise GraphconvError("--regions writes polygons, which a CSV has no room for: name the output .geojson",
                             file=output)
    keep = _Selection.of(stored, top_classes, min_score)
    frame = _Frame.of(stored)
    notes = (*frame.notes, *filter(None, [stored.class_rule_note()]))
    counts: list[int] = []
    writer = _write_regions if regions else _write_geojson if kind == ".geojson" else _write_csv

    def write(path: str) -> None:
        with open(path, "w", encoding="utf-8", newline="") as fp:
            counts[:] = writer(fp, stored, frame, keep)

    atomic_write(output, write, suffix=os.path.splitext(output.rstrip("/"))[1])
    for text in notes:  # a Python caller's warning; the command says it as a note
        warn_caller(text.removeprefix("note: "))
    return CellsWritten(counts[0], counts[1], frame.describe(), notes, *counts[2:])


def _format_of(output: str) -> str:
    """".geojson" or ".csv", as the output's name says (QuPath imports GeoJSON named .json too)."""
    suffix = os.path.splitext(output.rstrip("/"))[1].lower()
    if suffix not in CELL_FORMATS:
        raise GraphconvError("cells writes GeoJSON (.geojson or .json) or CSV (.csv): name the output so (the name "
                             "says the format)", file=output)
    return CELL_FORMATS[suffix]


def _check_replaceable(output: str, kind: str) -> None:
    """An existing output is replaced only where graphconv wrote it (its first bytes say so)."""
    if not os.path.lexists(output):
        return
    if os.path.isdir(output):
        raise GraphconvError("is a folder; give a file name", file=output)
    try:
        with open(output, encoding="utf-8", errors="replace") as fp:
            head = fp.read(256)
    except OSError:
        head = ""
    ours = head.startswith(_GEOJSON_HEAD) if kind == ".geojson" else head.startswith(",".join(CSV_LEAD) + ",")
    if not ours:
        raise GraphconvError("is already there and is not a file of cells graphconv wrote: choose another name",
                             file=output)


@dataclass(frozen=True)
class _Selection:
    """Which computed cells are written: by their best class (band positions) and score."""

    bands: frozenset[int] | None
    min_score: float | None

    @classmethod
    def of(cls, stored: StoredMap, top_classes, min_score) -> _Selection:
        if min_score is not None and stored.is_class_map:
            raise GraphconvError("--min-score keeps cells by their best score: this map holds each cell's class "
                                 "alone (--reduce argmax); map the scores to choose by them", file=stored.path)
        activation = stored.placement.get("output_activation")
        if min_score is not None and activation in ("softmax", "sigmoid") and not 0 <= min_score <= 1:
            raise GraphconvError(f"--min-score {min_score:g}: this map's scores are probabilities (its model ends "
                                 f"in {activation}), 0 to 1, so no cell would be kept: give one in 0..1",
                                 file=stored.path)
        if top_classes is None:
            return cls(None, min_score)

        labels = stored.placement.get("labels")  # the kept classes' own, band by band
        positions = set()
        for name in rejoined_names(list(top_classes), labels):
            index = class_index(name, labels, "--top-class", "or write the map with a labelled model")
            if isinstance(name, str):  # a label: `index` is its band
                positions.add(index)
                continue
            if index not in stored.classes:
                raise GraphconvError(f"--top-class {name}: class {index} is not in this map (its classes: "
                                     f"{', '.join(map(str, stored.classes))})", file=stored.path)
            positions.add(stored.classes.index(index))
        return cls(frozenset(positions), min_score)

    def cells(self, block: np.ndarray, stored: StoredMap) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Of a (K, h, w) block: the kept cells' (rows, cols) in the block, their class's
        band (-1: not known, `StoredMap.class_rule`), and how many cells were computed.
        --top-class and --min-score keep only classified cells."""
        if stored.is_class_map:
            values = block[0].astype(np.int64)
            computed = values != NOT_COMPUTED_CLASS
            best = _band_of_class(values, stored.classes, computed & (values != NO_CALL_CLASS))
            score = None
        else:
            computed = ~np.isnan(block).all(axis=0)
            filled = np.where(np.isnan(block), -np.inf, block)
            best = filled.argmax(axis=0)
            score = np.take_along_axis(filled, best[None], axis=0)[0]
            best = np.where(_classified(stored, score), best, -1)
        keep = computed.copy()
        if self.bands is not None and stored.independent:
            return self._calling(filled, computed, stored)
        if self.bands is not None:
            keep &= np.isin(best, list(self.bands))
        if self.min_score is not None:
            keep &= (best >= 0) & (score >= self.min_score)
        rows, cols = np.nonzero(keep)
        return rows, cols, best[rows, cols], int(computed.sum())

    def _calling(self, filled: np.ndarray, computed: np.ndarray,
                 stored: StoredMap) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """`cells` of a map of independent classes (`StoredMap.independent`) with --top-class:
        the cells whose own score of a class named is at least --min-score (0.5 unless
        given), each classified by the best of the named classes it calls."""
        named = np.array(sorted(self.bands))
        scores = filled[named]
        calls = scores >= (stored.threshold if self.min_score is None else self.min_score)
        rows, cols = np.nonzero(computed & calls.any(axis=0))
        called = np.where(calls, scores, -np.inf)[:, rows, cols]
        return rows, cols, named[called.argmax(axis=0)], int(computed.sum())


def _classified(stored: StoredMap, best_score: np.ndarray) -> np.ndarray | bool:
    """Which cells the best of their kept scores classifies (`StoredMap.class_rule`)."""
    rule = stored.class_rule
    if rule == "threshold":
        return best_score >= stored.threshold
    if rule == "majority":
        return best_score > 0.5
    return rule == "best"


def _band_of_class(values: np.ndarray, classes: list[int], computed: np.ndarray) -> np.ndarray:
    """A class map's values (the model's class indices) as positions in its `classes`."""
    lookup = np.full(max(classes) + 1, -1, np.int64)
    lookup[classes] = np.arange(len(classes))
    best = np.where(computed & (values < len(lookup)), lookup[np.clip(values, 0, len(lookup) - 1)], -1)
    stray = computed & (best < 0)
    if stray.any():
        raise GraphconvError(f"a class map holding class {int(values[stray][0])}, which is not among the classes "
                             f"it states ({', '.join(map(str, classes))}): damaged, or not graphconv's")
    return best


@dataclass(frozen=True)
class _Frame:
    """Where cell (r, c)'s square lies in the output's coordinates: `corners(rows, cols)`,
    (n, 5, 2) closed rings of x, y counter-clockwise as RFC 7946 asks, and `centres`."""

    affine: np.ndarray  # 2x3: (col, row, 1) of the map's cell grid, corners at whole numbers -> (x, y)
    crs: str | None  # the GeoJSON "crs" name, where the coordinates are a georeference's
    georeferenced: bool
    notes: tuple[str, ...] = ()

    @classmethod
    def of(cls, stored: StoredMap) -> _Frame:
        geo = stored.geo
        if geo is None:
            (fy, fx), (sy, sx) = stored.placement["first_cell_centre_yx"], stored.placement["cell_step_yx"]
            affine = np.array([[sx, 0.0, fx - sx / 2], [0.0, sy, fy - sy / 2]], np.float64)
            return cls(affine, None, False)
        corner = geo.corner_affine()
        if corner is None:
            raise GraphconvError("is placed by ground control points, which no affine fits exactly: GeoJSON "
                                 "polygons need one (warp the .tif map with gdalwarp, then gdal_polygonize)",
                                 file=stored.path)
        epsg = geo.epsg
        if epsg is None:
            return cls(np.asarray(corner, np.float64), None, True,
                       ("note: the map's georeference names no EPSG code: the coordinates are in its CRS, which "
                        "the file does not name (set it when you open it in QGIS)",))
        name = "urn:ogc:def:crs:OGC:1.3:CRS84" if epsg == 4326 else f"urn:ogc:def:crs:EPSG::{epsg}"
        return cls(np.asarray(corner, np.float64), name, True)

    def describe(self) -> str:
        if not self.georeferenced:
            return PIXEL_UNITS
        return f"the image's CRS ({self.crs.rsplit(':', 1)[-1] if self.crs else 'not named'})"

    def _place(self, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
        (a, b, c), (d, e, f) = self.affine
        return np.stack([a * cols + b * rows + c, d * cols + e * rows + f], axis=-1)

    def _ring_steps(self) -> tuple[np.ndarray, np.ndarray]:
        """The corners of a cell's square, as (column, row) steps from its first, in
        the order that turns counter-clockwise in the output's x, y."""
        dc = np.array([0, 1, 1, 0, 0])
        dr = np.array([0, 0, 1, 1, 0])
        if self.flipped:
            return dc[::-1].copy(), dr[::-1].copy()
        return dc, dr

    @property
    def cell_area(self) -> float:
        """A cell's square's area in the output's units (the affine's determinant)."""
        (a, b, _), (d, e, _) = self.affine
        return abs(float(a * e - b * d))

    @property
    def flipped(self) -> bool:
        """Whether the grid's (column, row) turn the other way in x, y: north-up, rows run
        south, and a ring counter-clockwise on the grid would turn clockwise."""
        (a, b, _), (d, e, _) = self.affine
        return a * e - b * d < 0

    def corners(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        dc, dr = self._ring_steps()
        return self._place(cols[:, None] + dc, rows[:, None] + dr)

    def rings(self, rows: np.ndarray, cols: np.ndarray) -> list[str]:
        """Each cell's square as GeoJSON's ring, `[x, y], ...`. Where x follows the
        column alone and y the row (a slide's pixels, a north-up GeoTIFF), each edge's
        number is formatted once, not for each of the four cells that share it: half of
        the GeoJSON's time."""
        (a, b, c), (d, e, f) = self.affine
        if b != 0 or d != 0 or not len(rows):
            return [", ".join(f"[{_number(x, COORDINATE_DIGITS)}, {_number(y, COORDINATE_DIGITS)}]" for x, y in ring)
                    for ring in self.corners(rows, cols).tolist()]
        first_col, first_row = int(cols.min()), int(rows.min())
        xs = [_number(a * k + c, COORDINATE_DIGITS) for k in range(first_col, int(cols.max()) + 2)]
        ys = [_number(e * k + f, COORDINATE_DIGITS) for k in range(first_row, int(rows.max()) + 2)]
        steps = list(zip(*self._ring_steps()))
        return [", ".join(f"[{xs[col + dc]}, {ys[row + dr]}]" for dc, dr in steps)
                for row, col in zip((rows - first_row).tolist(), (cols - first_col).tolist())]

    def centres(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self._place(cols + 0.5, rows + 0.5)

    def polygon(self, polygon) -> str:
        """A `regions.Polygon` (corners of the cell grid) as GeoJSON's polygon
        coordinates, its outline counter-clockwise and its holes clockwise in x, y."""
        flipped = self.flipped
        rings = []
        for ring in (polygon.exterior, *polygon.holes):
            placed = self._place(ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64))
            rings.append("[" + ", ".join(f"[{_number(x, COORDINATE_DIGITS)}, {_number(y, COORDINATE_DIGITS)}]"
                                         for x, y in (placed[::-1] if flipped else placed).tolist()) + "]")
        return "[" + ", ".join(rings) + "]"


def _blocks(stored: StoredMap) -> Iterator[tuple[int, np.ndarray]]:
    """The map in blocks of whole rows, each (first row, (K, h, w) array) within BLOCK_BYTES."""
    classes, rows, cols = stored.bands.shape
    per_row = max(1, classes * cols * np.dtype(stored.bands.dtype).itemsize)
    step = max(1, BLOCK_BYTES // per_row)
    for first in range(0, rows, step):
        try:
            block = np.asarray(stored.bands[:, first:first + step, :])
        except Exception as err:  # noqa: BLE001 - a codec's or zarr's error for a chunk damaged since
            last = min(rows, first + step) - 1
            raise GraphconvError(f"cannot read rows {first}..{last} of the map (damaged since it was written?): "
                                 f"{type(err).__name__}: {shown(str(err), 120)}", file=stored.path) from None
        yield first, block


def _number(value: float, digits: int, missing: str = "null") -> str:
    """A number as JSON and CSV write it; a score the network made infinite or NaN is
    `missing` (JSON has no word for them)."""
    return f"{value:.{digits}g}" if math.isfinite(value) else missing


_GEOJSON_HEAD = '{"type": "FeatureCollection", "graphconv": '


def _write_header(fp: TextIO, stored: StoredMap, frame: _Frame, features: dict[str, str]) -> None:
    """A FeatureCollection's start: what it is of, in which coordinates, what its
    `features` are (a member saying so), the CRS, and the opening of its features."""
    from graphconv import __version__

    about = {"written_by": f"graphconv {__version__}",
             "map": None if stored.path == IN_MEMORY else os.path.abspath(stored.path),
             "image": stored.placement.get("image"), "model": stored.placement.get("model"),
             "coordinates": frame.describe(), **features}
    fp.write(_GEOJSON_HEAD + json.dumps(about))
    if frame.crs:
        fp.write(', "crs": ' + json.dumps({"type": "name", "properties": {"name": frame.crs}}))
    fp.write(', "features": [')


def _write_geojson(fp: TextIO, stored: StoredMap, frame: _Frame, keep: _Selection) -> tuple[int, int]:
    """A FeatureCollection written a block of rows at a time: its header (what it is of,
    in which coordinates, the CRS), then one Feature per kept cell."""
    from graphconv.images import class_colours

    names = stored.names
    colours = class_colours(stored.classes).round().astype(int).tolist()
    _write_header(fp, stored, frame, {"cells": "each the square a stride wide centred on its cell's centre"})
    quoted = [json.dumps(name) for name in names]
    score_keys = [json.dumps(name) for name in _distinct(names, _FLAT_KEYS)]  # a class named "row" keeps its row
    written = computed = 0
    for first, block in _blocks(stored):
        rows, cols, best, counted = keep.cells(block, stored)
        computed += counted
        rings = frame.rings(rows + first, cols)
        cell_scores = None if stored.is_class_map else block[:, rows, cols].T.tolist()  # Python floats: faster
        for i, (row, col, top) in enumerate(zip((rows + first).tolist(), cols.tolist(), best.tolist())):
            ring = rings[i]
            values = None if cell_scores is None else cell_scores[i]
            called = None if values is None else _called(stored, values, names)
            properties = (_flat_properties(row, col, top, values, quoted, score_keys, called)
                          if frame.georeferenced else _qupath_properties(top, values, quoted, colours))
            fp.write(("," if written else "") + '\n{"type": "Feature", "geometry": {"type": "Polygon", '
                     f'"coordinates": [[{ring}]]}}, "properties": {properties}}}')
            written += 1
    fp.write("\n]}\n")
    return written, computed


def _write_regions(fp: TextIO, stored: StoredMap, frame: _Frame, keep: _Selection) -> tuple[int, int, int, int]:
    """A FeatureCollection of one Feature per class: its kept cells merged into polygons
    (`regions.polygons_of`: each patch's outline and holes along the cells' squares), a
    MultiPolygon. Over a slide a QuPath annotation of that class, whose area QuPath
    measures; over a georeferenced image flat attributes (class, cells, regions, area).
    The map is read in blocks, each class's kept cells held as indices into it (8 bytes
    a cell). Returns (cells written, cells computed, patches, classes)."""
    from graphconv.images import class_colours

    width = stored.bands.shape[2]
    found: dict[int, list[np.ndarray]] = {}
    written = computed = 0
    for first, block in _blocks(stored):
        calls, kept, counted = _block_calls(block, stored, keep)
        written, computed = written + kept, computed + counted
        for band, flat in calls:
            found.setdefault(band, []).append(flat + first * width)
    _write_header(fp, stored, frame, {"regions": REGIONS_ARE})
    quoted = [json.dumps(name) for name in stored.names]
    colours = class_colours(stored.classes).round().astype(int).tolist()
    cell_area = frame.cell_area
    microns = stored.placement.get("microns_per_pixel") if not frame.georeferenced else None
    patches, classes = 0, len(found)
    for n, band in enumerate(sorted(found)):
        cells = np.concatenate(found.pop(band))
        polygons = _patches(cells, width)
        patches += len(polygons)
        area = len(cells) * cell_area
        if frame.georeferenced:
            properties = (f'{{"class": {quoted[band]}, "cells": {len(cells)}, "regions": {len(polygons)}, '
                          f'"area": {_number(area, COORDINATE_DIGITS)}}}')
        else:
            in_microns = f', "area µm^2": {_number(area * microns ** 2, COORDINATE_DIGITS)}' if microns else ""
            properties = (f'{{"objectType": "annotation", "name": {quoted[band]}, '
                          f'{_classification(quoted[band], colours[band])}, "measurements": '
                          f'{{"cells": {len(cells)}, "regions": {len(polygons)}, '
                          f'"area pixels^2": {_number(area, COORDINATE_DIGITS)}{in_microns}}}}}')
        fp.write(("," if n else "") + '\n{"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": ['
                 + ", ".join(frame.polygon(polygon) for polygon in polygons) + f']}}, "properties": {properties}}}')
    fp.write("\n]}\n")
    return written, computed, patches, classes


REGIONS_ARE = ("each class's cells (the squares a stride wide centred on their centres) merged into polygons, one "
               "feature per class: a MultiPolygon of each patch's outline and holes")


def _block_calls(block: np.ndarray, stored: StoredMap,
                 keep: _Selection) -> tuple[list[tuple[int, np.ndarray]], int, int]:
    """A block's kept cells by class: (band, their flat indices in the block) of each
    class, how many cells are in one, and how many were computed. A cell is in its best
    class (`_Selection.cells`), but a multi-label model's in every class it calls (its
    own probability at least --min-score, 0.5 unless given; of those --top-class names):
    the regions of forest and of water overlap where a tile holds both."""
    if not stored.independent:
        rows, cols, best, computed = keep.cells(block, stored)
        flat = rows * block.shape[2] + cols
        classified = best >= 0
        return ([(band, flat[best == band]) for band in np.unique(best[classified]).tolist()],
                int(classified.sum()), computed)
    computed = ~np.isnan(block).all(axis=0)
    threshold = stored.threshold if keep.min_score is None else keep.min_score
    called = computed & (np.where(np.isnan(block), -np.inf, block) >= threshold)
    bands = sorted(keep.bands) if keep.bands is not None else range(block.shape[0])
    calls = [(band, np.flatnonzero(called[band])) for band in bands]
    return calls, int(called[list(bands)].any(axis=0).sum()), int(computed.sum())


def _patches(cells: np.ndarray, width: int) -> list:
    """The polygons of the cells at flat indices `cells` of a map `width` cells wide, in
    (column, row) corners of the map's cell grid."""
    from graphconv.regions import polygons_of

    rows, cols = np.divmod(cells, width)
    top, left = int(rows.min()), int(cols.min())
    mask = np.zeros((int(rows.max()) - top + 1, int(cols.max()) - left + 1), bool)
    mask[rows - top, cols - left] = True
    return [polygon.moved(left, top) for polygon in polygons_of(mask)]


def _qupath_properties(best: int, values: np.ndarray | None, quoted: list[str], colours: list) -> str:
    """A QuPath tile: its classification (name and colour, the class picture's; none
    where its class is not known, `StoredMap.class_rule`) and, for a map of scores, every
    class's score as a measurement (QuPath reads them as a map of numbers: an infinite or
    NaN score, which JSON cannot write, is left out, not null)."""
    text = '{"objectType": "tile"'
    if best >= 0:
        text += ", " + _classification(quoted[best], colours[best])
    if values is not None:
        text += ', "measurements": {' + ", ".join(
            f"{name}: {_number(v, SCORE_DIGITS)}" for name, v in zip(quoted, values) if math.isfinite(v)) + "}"
    return text + "}"


def _classification(quoted_name: str, colour: list[int]) -> str:
    """A QuPath object's classification member: its class's name (JSON-quoted) and colour."""
    return f'"classification": {{"name": {quoted_name}, "color": [{colour[0]}, {colour[1]}, {colour[2]}]}}'


def _flat_properties(row: int, col: int, best: int, values: np.ndarray | None, quoted: list[str],
                     score_keys: list[str], called: str | None = None) -> str:
    """A GIS feature's attributes, one column each: the cell's row and column in the map,
    its best class and score (null where not known), a multi-label model's classes
    `called`, and every class's score."""
    text = f'{{"row": {row}, "col": {col}, "top_class": {quoted[best] if best >= 0 else "null"}'
    if values is not None:
        top = _number(values[best], SCORE_DIGITS) if best >= 0 else "null"
        text += f', "top_score": {top}, '
        if called is not None:
            text += f'"{CALLED_KEY}": {json.dumps(called)}, '
        text += ", ".join(f"{key}: {_number(v, SCORE_DIGITS)}" for key, v in zip(score_keys, values))
    return text + "}"


CALLED_KEY = "labels"  # a multi-label model's cell's classes called, "Forest; Water" (`_called`)
_FLAT_KEYS = ("row", "col", "top_class", "top_score", CALLED_KEY)
CALLED_SEPARATOR = "; "  # BigEarthNet's labels hold commas


def _called(stored: StoredMap, values: list[float], names: list[str]) -> str | None:
    """A multi-label model's (`StoredMap.independent`) cell's classes called, each whose
    probability is at least 0.5, in the map's order, joined by "; " (empty: none): its
    best class alone hid the rest (a satellite tile's forest and water, an X-ray's
    effusion beside its cardiomegaly). None for the other maps."""
    if not stored.independent:
        return None
    return CALLED_SEPARATOR.join(name for name, v in zip(names, values) if v >= stored.threshold)


def _write_csv(fp: TextIO, stored: StoredMap, frame: _Frame, keep: _Selection) -> tuple[int, int]:
    """A row per kept cell: its row and column in the map, its centre (x, y) in the
    GeoJSON's coordinates (and, over a slide that states its pixel size, in µm: a lab's
    tables measure tissue so), its best class and score (empty where not known), a
    multi-label model's classes called (`_called`), and every class's score."""
    names = stored.names
    scored = not stored.is_class_map
    called = [CALLED_KEY] if stored.independent else []
    microns = None if frame.georeferenced else stored.placement.get("microns_per_pixel")
    lead = (*CSV_LEAD, *(MICRON_COLUMNS if microns else ()), "top_class")
    out = csv.writer(fp, lineterminator="\n")
    out.writerow([*lead, *(["top_score", *called, *_distinct(names, (*lead, "top_score", *called))] if scored else [])])
    written = computed = 0
    for first, block in _blocks(stored):
        rows, cols, best, counted = keep.cells(block, stored)
        computed += counted
        centres = frame.centres(rows + first, cols)
        in_microns = (centres * microns).tolist() if microns else None
        centres = centres.tolist()
        cell_scores = block[:, rows, cols].T.tolist() if scored else None
        for i, (row, col, top) in enumerate(zip((rows + first).tolist(), cols.tolist(), best.tolist())):
            line = [row, col, *(_number(v, COORDINATE_DIGITS, "") for v in centres[i]),
                    *(_number(v, COORDINATE_DIGITS, "") for v in (in_microns[i] if microns else ())),
                    names[top] if top >= 0 else ""]
            if scored:
                line += [_number(cell_scores[i][top], SCORE_DIGITS, "") if top >= 0 else "",
                         *([_called(stored, cell_scores[i], names)] if called else []),
                         *(_number(v, SCORE_DIGITS, "") for v in cell_scores[i])]
            out.writerow(line)
            written += 1
    return written, computed
