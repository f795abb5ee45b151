"""A map's cells as GeoJSON and CSV (graphconv.cells, `graphconv cells`): each cell's
square where the map says its cell stands (a slide's pixels for QuPath, a GeoTIFF's CRS
for QGIS), its best class and every score as the map holds them, bit for bit."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")

from conftest import SPECS, graphconv_in_process  # noqa: E402
from graphconv.cells import write_cells  # noqa: E402
from graphconv.errors import GraphconvError, GraphconvWarning  # noqa: E402
from graphconv.georef import CellPlacement, read_georeference, write_map_tiff  # noqa: E402
from test_georef import UTM_33N_AREA, UTM_33N_POINT, gcp_geotiff, grey_geotiff  # noqa: E402

LABELS = ["stroma", "tumour", "necrosis"]


def slide_map(path, scores, first=(112.0, 112.0), step=(32.0, 32.0), classes=None, labels=LABELS, **model):
    """A .tif map as a tiled run over a slide writes one: `scores` (K, rows, cols);
    `model`: what it says of its model (model_classes, output_activation)."""
    classes = list(range(scores.shape[0])) if classes is None else classes
    contents = {"classes": classes, **({"labels": labels} if labels else {}), "image": "/slides/a.svs", **model}
    write_map_tiff(str(path), scores[None], None, CellPlacement(first, step, 0.25, contents=contents,
                                                                 area=(224.0, 224.0)))
    return str(path)


def random_scores(rng, shape=(3, 7, 9), holes=0.2):
    """Scores with some cells not computed (NaN in every channel: glass)."""
    scores = rng.random(shape, dtype=np.float32)
    scores[:, rng.random(shape[1:]) < holes] = np.nan
    return scores


def features(path):
    with open(path, encoding="utf-8") as fp:
        return json.load(fp)["features"]


def square_of(feature) -> tuple[float, float, float, float]:
    """(centre x, centre y, width, height) of a feature's axis-aligned square."""
    ring = np.array(feature["geometry"]["coordinates"][0])
    assert ring.shape == (5, 2) and (ring[0] == ring[-1]).all()
    lo, hi = ring.min(axis=0), ring.max(axis=0)
    return (*((lo + hi) / 2), *(hi - lo))


def signed_area(ring) -> float:
    x, y = np.array(ring).T
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


@pytest.mark.parametrize("first, step", [((112.0, 112.0), (32.0, 32.0)), ((14.5, 20.0), (4.0, 8.0))])
def test_each_computed_cell_is_a_qupath_tile_on_its_square_with_its_scores(tmp_path, rng, first, step):
    """What the 20 lines a pathologist wrote from the .tif's attributes did: a tile per
    cell centred where the map says, a stride wide, classified by its best class, its
    scores as measurements exactly as the map holds them; glass (NaN) left out."""
    scores = random_scores(rng)
    result = write_cells(slide_map(tmp_path / "map.tif", scores, first, step), tmp_path / "cells.geojson")
    computed = ~np.isnan(scores[0])
    assert result.written == result.computed == computed.sum()
    found = features(tmp_path / "cells.geojson")
    assert len(found) == computed.sum()
    for feature, (r, c) in zip(found, zip(*np.nonzero(computed))):
        cx, cy, width, height = square_of(feature)
        assert (cx, cy) == (first[1] + step[1] * c, first[0] + step[0] * r)
        assert (width, height) == (step[1], step[0])
        assert signed_area(feature["geometry"]["coordinates"][0]) > 0  # counter-clockwise (RFC 7946)
        props = feature["properties"]
        assert props["objectType"] == "tile"
        assert props["classification"]["name"] == LABELS[int(np.argmax(scores[:, r, c]))]
        assert len(props["classification"]["color"]) == 3
        measured = np.array([props["measurements"][name] for name in LABELS], np.float32)
        assert measured.tobytes() == scores[:, r, c].tobytes()


def test_a_json_name_is_geojson_as_qupath_imports_it(tmp_path, rng):
    stored = slide_map(tmp_path / "map.tif", random_scores(rng))
    write_cells(stored, tmp_path / "cells.geojson")
    write_cells(stored, tmp_path / "cells.json")
    assert (tmp_path / "cells.json").read_text().replace(str(tmp_path / "cells.json"), "") == (
        tmp_path / "cells.geojson").read_text().replace(str(tmp_path / "cells.geojson"), "")
    write_cells(stored, tmp_path / "cells.json")  # its own output: replaced


def test_a_slide_stating_no_pixel_size_has_no_micron_columns(tmp_path, rng):
    scores = random_scores(rng)
    write_map_tiff(str(tmp_path / "map.tif"), scores[None], None,
                   CellPlacement((16.0, 16.0), (32.0, 32.0), None, contents={"classes": [0, 1, 2]}))
    write_cells(str(tmp_path / "map.tif"), tmp_path / "cells.csv")
    assert list(csv_rows(tmp_path / "cells.csv")[0])[:5] == ["row", "col", "x", "y", "top_class"]


def test_the_csv_holds_the_geojson_s_cells_centre_class_and_scores(tmp_path, rng):
    scores = random_scores(rng)
    stored = slide_map(tmp_path / "map.tif", scores)
    write_cells(stored, tmp_path / "cells.geojson")
    write_cells(stored, tmp_path / "cells.csv")
    with open(tmp_path / "cells.csv", newline="") as fp:
        rows = list(csv.DictReader(fp))
    assert list(rows[0]) == ["row", "col", "x", "y", "x_um", "y_um", "top_class", "top_score", *LABELS]
    for row, feature in zip(rows, features(tmp_path / "cells.geojson"), strict=True):
        cx, cy, _, _ = square_of(feature)
        assert (float(row["x"]), float(row["y"])) == (cx, cy)
        assert (float(row["x_um"]), float(row["y_um"])) == pytest.approx((cx * 0.25, cy * 0.25))  # 0.25 µm pixels
        assert row["top_class"] == feature["properties"]["classification"]["name"]
        r, c = int(row["row"]), int(row["col"])
        assert np.array([row[name] for name in LABELS], np.float32).tobytes() == scores[:, r, c].tobytes()
        assert np.float32(row["top_score"]) == scores[:, r, c].max()


@pytest.mark.parametrize("top_classes, min_score", [(["tumour"], None), ([0, "necrosis"], None), (None, 0.7),
                                                    (["TUMOUR"], 0.5)])
def test_top_class_and_min_score_keep_exactly_the_cells_asked_for(tmp_path, rng, top_classes, min_score):
    scores = random_scores(rng, (3, 12, 15))
    result = write_cells(slide_map(tmp_path / "map.tif", scores), tmp_path / "cells.csv", top_classes, min_score)
    best, top = np.nanargmax(np.nan_to_num(scores, nan=-1), axis=0), scores.max(axis=0)
    wanted = ~np.isnan(scores[0])
    if top_classes is not None:
        indices = [c if isinstance(c, int) else [x.lower() for x in LABELS].index(c.lower()) for c in top_classes]
        wanted &= np.isin(best, indices)
    if min_score is not None:
        wanted &= top >= min_score
    with open(tmp_path / "cells.csv", newline="") as fp:
        kept = {(int(row["row"]), int(row["col"])) for row in csv.DictReader(fp)}
    assert kept == set(zip(*map(lambda a: a.tolist(), np.nonzero(wanted))))
    assert result.written == wanted.sum() and result.computed == (~np.isnan(scores[0])).sum()


def test_a_map_of_some_classes_names_them_by_the_model_s_indices(tmp_path, rng):
    """After --classes 2,0 the bands are classes 2 and 0: --top-class names the model's
    class, and a map without labels names each "class K"."""
    scores = random_scores(rng, (2, 5, 6))
    stored = slide_map(tmp_path / "map.tif", scores, classes=[2, 0], labels=None)
    write_cells(stored, tmp_path / "cells.csv", top_classes=[2])
    with open(tmp_path / "cells.csv", newline="") as fp:
        rows = list(csv.DictReader(fp))
    assert list(rows[0])[8:] == ["class 2", "class 0"]
    assert rows and {row["top_class"] for row in rows} == {"class 2"}
    with pytest.raises(GraphconvError, match="class 1 is not in this map"):
        write_cells(stored, tmp_path / "other.csv", top_classes=[1])


def csv_rows(path) -> list[dict]:
    with open(path, newline="") as fp:
        return list(csv.DictReader(fp))


@pytest.mark.parametrize("activation, threshold", [("sigmoid", 0.5), (None, 0.0)])
def test_a_one_score_model_s_cells_are_its_class_only_past_its_threshold(tmp_path, rng, activation, threshold):
    """A tumour model of one sigmoid output: the best of one score is that score, so every
    tissue tile was "tumour" (6e-06 included) and QuPath showed the slide as tumour. A
    cell is the class where its probability is at least 0.5 (a logit at least 0), else
    unclassified with its score; --top-class and --min-score keep classified cells."""
    scores = random_scores(rng, (1, 12, 15)) - (0 if activation else 0.5)
    stored = slide_map(tmp_path / "map.tif", scores, labels=["tumour"], model_classes=1,
                       output_activation=activation)
    with pytest.warns(GraphconvWarning, match="the model gives one score: a cell is classified tumour where"):
        result = write_cells(stored, tmp_path / "cells.geojson")
    computed = ~np.isnan(scores[0])
    assert result.written == computed.sum()
    for feature, (r, c) in zip(features(tmp_path / "cells.geojson"), zip(*np.nonzero(computed)), strict=True):
        props = feature["properties"]
        assert ("classification" in props) == (scores[0, r, c] >= threshold)
        assert props["measurements"]["tumour"] == pytest.approx(float(scores[0, r, c]))
    write_cells(stored, tmp_path / "cells.csv")
    for row in csv_rows(tmp_path / "cells.csv"):
        tumour = scores[0, int(row["row"]), int(row["col"])] >= threshold
        assert (row["top_class"], bool(row["top_score"])) == (("tumour", True) if tumour else ("", False))
        assert "labels" not in row  # the column of a multi-label model's calls: one score is its class
    write_cells(stored, tmp_path / "tumour.csv", top_classes=["tumour"])
    assert len(csv_rows(tmp_path / "tumour.csv")) == (scores[0] >= threshold).sum()


@pytest.mark.parametrize("top_classes, min_score", [(None, None), (["necrosis"], None), (["necrosis"], 0.8),
                                                    (["tumour", "necrosis"], None), (None, 0.7)])
def test_a_multi_label_model_s_cells_call_each_class_on_its_own_score(tmp_path, rng, top_classes, min_score):
    """A model ending in a sigmoid over several classes (an X-ray's findings, a satellite
    tile's labels) calls each on its own: `--top-class Effusion --min-score 0.5` kept 0
    of 228 cells where Effusion was at least 0.5 in 200, as the best of 14 findings was
    another one. A named class is kept where its own probability is at least --min-score
    (0.5 unless given) and is the cell's classification (the best named one it calls);
    without --top-class a cell is its best class where that is at least 0.5, else
    unclassified, with its scores."""
    scores = random_scores(rng, (3, 12, 15))
    stored = slide_map(tmp_path / "map.tif", scores, model_classes=3, output_activation="sigmoid")
    with pytest.warns(GraphconvWarning, match="the model ends in a sigmoid, each class a finding of its own"):
        result = write_cells(stored, tmp_path / "cells.csv", top_classes, min_score)
    computed = ~np.isnan(scores[0])
    cut = 0.5 if min_score is None else min_score
    expected = {}
    for r, c in zip(*np.nonzero(computed)):
        if top_classes is None:
            best = int(scores[:, r, c].argmax())
            if min_score is None or scores[best, r, c] >= min_score:
                expected[(r, c)] = LABELS[best] if scores[best, r, c] >= 0.5 else ""
            continue
        called = [(scores[LABELS.index(name), r, c], name) for name in top_classes
                  if scores[LABELS.index(name), r, c] >= cut]
        if called:
            expected[(r, c)] = max(called)[1]
    rows = csv_rows(tmp_path / "cells.csv")
    got = {(int(row["row"]), int(row["col"])): row["top_class"] for row in rows}
    assert got == expected and result.written == len(expected) and result.computed == computed.sum()
    for row in rows:  # every class the cell calls, not its best alone
        r, c = int(row["row"]), int(row["col"])
        assert row["labels"] == "; ".join(name for k, name in enumerate(LABELS) if scores[k, r, c] >= 0.5)
    if top_classes == ["necrosis"] and min_score is None:
        assert sum(label == "necrosis" for label in got.values()) > (scores.argmax(axis=0)[computed] == 2).sum()


def test_a_map_of_some_softmax_classes_classifies_a_cell_only_where_its_class_must_be_best(tmp_path, rng):
    """--classes tumour of a softmax model: a kept probability over 0.5 is the model's
    best class whatever the others are; below, the cell is written unclassified. A
    model of raw scores tells nothing: every cell unclassified, said."""
    probabilities = random_scores(rng, (1, 12, 15))
    stored = slide_map(tmp_path / "map.tif", probabilities, classes=[1], labels=["tumour"], model_classes=3,
                       output_activation="softmax")
    with pytest.warns(GraphconvWarning, match="holds 1 of the model's 3 classes"):
        write_cells(stored, tmp_path / "cells.csv")
    rows = csv_rows(tmp_path / "cells.csv")
    assert len(rows) == (~np.isnan(probabilities[0])).sum()
    assert {(int(r["row"]), int(r["col"])) for r in rows if r["top_class"] == "tumour"} == set(
        zip(*map(lambda a: a.tolist(), np.nonzero(probabilities[0] > 0.5))))
    raw = slide_map(tmp_path / "raw.tif", probabilities, classes=[1], labels=["tumour"], model_classes=3,
                    output_activation=None)
    with pytest.warns(GraphconvWarning, match="written unclassified, with their scores"):
        write_cells(raw, tmp_path / "raw.csv")
    assert {r["top_class"] for r in csv_rows(tmp_path / "raw.csv")} == {""}


def test_top_class_by_name_and_class_colours_follow_the_model_s_classes_in_a_map_of_some(tmp_path, rng):
    """--top-class tumour on a --classes tumour map looked the name up as class 0 ("class
    0 is not in this map"); and a class's colour was its band's, so tumour was blue in that
    map and orange in the full one."""
    scores = random_scores(rng, (3, 6, 7))
    full = slide_map(tmp_path / "full.tif", scores, model_classes=3, output_activation="softmax")
    some = slide_map(tmp_path / "some.tif", scores[[2, 1]], classes=[2, 1], labels=["necrosis", "tumour"],
                     model_classes=3, output_activation="softmax")
    write_cells(full, tmp_path / "full.geojson")
    with pytest.warns(GraphconvWarning):
        write_cells(some, tmp_path / "some.geojson", top_classes=["tumour"])
    colour = {f["properties"]["classification"]["name"]: f["properties"]["classification"]["color"]
              for f in features(tmp_path / "full.geojson")}
    kept = features(tmp_path / "some.geojson")
    assert kept and {f["properties"]["classification"]["name"] for f in kept} == {"tumour"}
    assert all(f["properties"]["classification"]["color"] == colour["tumour"] for f in kept)


def test_a_class_map_gives_each_cell_its_class_and_no_scores(tmp_path, rng):
    values = rng.choice(np.array([4, 9, 65535], np.uint16), size=(6, 8))
    contents = {"classes": [9, 4], "labels": ["water", "forest"]}
    write_map_tiff(str(tmp_path / "classes.tif"), values[None, None],
                   None, CellPlacement((16.0, 16.0), (32.0, 32.0), None, contents=contents))
    result = write_cells(str(tmp_path / "classes.tif"), tmp_path / "cells.geojson")
    assert result.written == (values != 65535).sum()
    for feature in features(tmp_path / "cells.geojson"):
        cx, cy, _, _ = square_of(feature)
        value = values[int((cy - 16) // 32), int((cx - 16) // 32)]
        assert feature["properties"]["classification"]["name"] == {9: "water", 4: "forest"}[int(value)]
        assert "measurements" not in feature["properties"]
    with pytest.raises(GraphconvError, match="--min-score keeps cells by their best score"):
        write_cells(str(tmp_path / "classes.tif"), tmp_path / "cells.csv", min_score=0.5)
    assert not (tmp_path / "cells.csv").exists()


# ---- maps of real runs, through the command ---------------------------------------------------------------

@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("m") / "digits-fcn"
    assert graphconv_in_process("compile", SPECS / "digits.yaml", "-o", folder).returncode == 0
    return folder


@pytest.mark.parametrize("directory", [UTM_33N_AREA, UTM_33N_POINT])
def test_a_geotiff_s_cells_are_polygons_on_the_ground_its_crops_cover(digits, tmp_path, directory):
    """Over a GeoTIFF: coordinates in its CRS, named for GDAL; each polygon centred on
    the ground where the image's georeference puts the cell's crop centre, a stride of
    10 m pixels wide; attributes flat, as QGIS lists them."""
    image = grey_geotiff(tmp_path / "scene.tif", directory)
    assert graphconv_in_process("run", digits, "--image", image, "--tile", "64", "--output", "map.tif",
                                "--quiet").returncode == 0
    result = graphconv_in_process("cells", "map.tif", "-o", "cells.geojson")
    assert result.returncode == 0, result.stderr
    assert "coordinates: the image's CRS (32633)" in result.stdout
    with open(tmp_path / "cells.geojson") as fp:
        collection = json.load(fp)
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    image_geo = read_georeference(str(image))
    corner = image_geo.corner_affine()
    found = collection["features"]
    assert found
    for feature in found[::7]:
        props = feature["properties"]
        r, c = props["row"], props["col"]
        # the digits net: crops 28 wide, 4 apart, the first centred 14 pixels in
        centre = corner @ np.array([14.0 + 4 * c, 14.0 + 4 * r, 1.0])
        cx, cy, width, height = square_of(feature)
        np.testing.assert_allclose((cx, cy), centre, rtol=0, atol=1e-6)
        assert (width, height) == pytest.approx((40.0, 40.0))
        assert signed_area(feature["geometry"]["coordinates"][0]) > 0
        assert props["top_class"] in [str(d) for d in range(10)] + ["background"]
        assert props["top_score"] == max(props[name] for name in [str(d) for d in range(10)] + ["background"])


def test_a_georeference_naming_no_epsg_code_is_said_and_no_crs_is_named(digits, tmp_path):
    """A user-defined projection (ProjectedCSTypeGeoKey 32767): the coordinates are in it,
    and the file cannot name it; the command notes it, Python warns."""
    from graphconv.errors import GraphconvWarning

    user_defined = UTM_33N_AREA[:-1] + (32767,)
    image = grey_geotiff(tmp_path / "scene.tif", user_defined)
    assert graphconv_in_process("run", digits, "--image", image, "--tile", "64", "--output", "map.tif",
                                "--quiet").returncode == 0
    result = graphconv_in_process("cells", "map.tif", "-o", "cells.geojson")
    assert result.returncode == 0 and "names no EPSG code: the coordinates are in its CRS" in result.stderr
    with open(tmp_path / "cells.geojson") as fp:
        assert "crs" not in json.load(fp)
    with pytest.warns(GraphconvWarning, match="names no EPSG code"):
        write_cells("map.tif", "again.csv")


def test_a_zarr_map_gives_the_cells_its_tif_map_gives(digits, tmp_path):
    pytest.importorskip("zarr")
    image = grey_geotiff(tmp_path / "scene.tif")
    for output in ("map.tif", "map.zarr"):
        assert graphconv_in_process("run", digits, "--image", image, "--tile", "64", "--output", output,
                                    "--quiet").returncode == 0
        assert graphconv_in_process("cells", output, "-o", f"{output}.csv").returncode == 0
    assert (tmp_path / "map.tif.csv").read_text() == (tmp_path / "map.zarr.csv").read_text()
    chunks = [path for path in (tmp_path / "map.zarr").rglob("*") if path.is_file() and not path.name.startswith(
        (".", "zarr.json"))]  # a map copied in part read as fewer cells, without a word
    chunks[0].unlink()
    damaged = graphconv_in_process("cells", "map.zarr", "-o", "part.csv")
    assert damaged.returncode == 2 and f"map.zarr: is damaged: 1 of the {len(chunks)} chunks it was written with is " \
        "missing (deleted, or lost in copying)" in damaged.stderr


def test_a_slide_map_of_the_command_places_cells_on_level_0_pixels(digits, tmp_path):
    """The picture run with --tile: the map states cells 4 pixels apart from 14; the
    GeoJSON's squares are there, and the command says how many cells it wrote."""
    from conftest import ROOT
    assert graphconv_in_process("run", digits, "--image", ROOT / "examples/digits_page.png", "--tile", "256",
                                "--output", "map.tif", "--quiet").returncode == 0
    result = graphconv_in_process("cells", "map.tif", "-o", "cells.geojson", "--top-class", "7", "--min-score",
                                  "0.9")
    assert result.returncode == 0, result.stderr
    found = features(tmp_path / "cells.geojson")
    assert found and f"{len(found)} of 6486 computed cells of map.tif -> cells.geojson" in result.stdout
    scores = tifffile.imread(tmp_path / "map.tif")
    for feature in found:
        cx, cy, width, _ = square_of(feature)
        r, c = int((cy - 14) / 4), int((cx - 14) / 4)
        assert (cx, cy, width) == (14 + 4 * c, 14 + 4 * r, 4)
        assert feature["properties"]["classification"]["name"] == "7"
        assert np.argmax(scores[:, r, c]) == 7 and scores[7, r, c] >= 0.9


def test_the_command_s_map_of_some_classes_says_what_its_model_gives(digits, tmp_path):
    """`run --classes 7` records the model's class count (11: digits and background) and
    its softmax, so `cells` classifies a cell 7 only where its probability is over 0.5,
    and --top-class 7 keeps exactly those: the cells the full map's best class calls 7
    with that probability."""
    from conftest import ROOT
    page = ROOT / "examples/digits_page.png"
    for name, more in (("some.tif", ["--classes", "7"]), ("full.tif", [])):
        assert graphconv_in_process("run", digits, "--image", page, "--output", name, "--quiet",
                                    *more).returncode == 0
    result = graphconv_in_process("cells", "some.tif", "-o", "sevens.csv", "--top-class", "7")
    assert result.returncode == 0 and "holds 1 of the model's 11 classes" in result.stderr, result.stderr
    full = tifffile.imread(tmp_path / "full.tif")
    sure = (full.argmax(axis=0) == 7) & (full[7] > 0.5)
    assert sure.any() and {(int(r["row"]), int(r["col"])) for r in csv_rows(tmp_path / "sevens.csv")} == set(
        zip(*map(lambda a: a.tolist(), np.nonzero(sure))))


# ---- an --images batch's .npy maps, placed by its graphconv-maps.csv -------------------------------------

def batch_maps(model, images, output_format, *more):
    """The maps of a batch over `images` into out-<format>/, as --output-format writes them."""
    out = f"out-{output_format}"
    result = graphconv_in_process("run", model, "--images", *images, "--output-dir", out, "--output-format",
                                  output_format, "--quiet", *more)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("more", [[], ["--classes", "7"], ["--reduce", "argmax"]])
def test_a_batch_s_npy_map_gives_the_cells_its_tif_map_gives(digits, tmp_path, more):
    """An .npy of an --images batch says nothing of its cells; the batch's list does:
    their placement, the model's classes, labels and activation. Its cells are the .tif
    map's, and so is the note on which cells are classified."""
    from conftest import ROOT
    page = ROOT / "examples/digits_page.png"
    said = {}
    for output_format in ("tif", "npy"):
        out = batch_maps(digits, [page], output_format, "--tile", "256", *more)
        result = graphconv_in_process("cells", f"{out}/digits_page.{output_format}", "-o", f"{output_format}.csv")
        assert result.returncode == 0, result.stderr
        said[output_format] = result.stderr
    assert (tmp_path / "npy.csv").read_text() == (tmp_path / "tif.csv").read_text()
    assert said["npy"] == said["tif"] and ("holds 1 of the model's 11 classes" in said["npy"]) == bool(
        "--classes" in more)


def test_a_batch_s_npy_map_of_a_geotiff_gives_polygons_in_its_crs(digits, tmp_path):
    """Over a GeoTIFF: the list records the map's georeference, as the .tif map states
    its own. A list of before that (no such record, nor labels) places them by the
    image's own, while it is there."""
    from test_georef import grey_geotiff
    scene = grey_geotiff(tmp_path / "scene.tif")
    for output_format in ("tif", "npy"):
        out = batch_maps(digits, [scene], output_format, "--tile", "64")
        result = graphconv_in_process("cells", f"{out}/scene.{output_format}", "-o", f"{output_format}.csv")
        assert result.returncode == 0 and "the image's CRS (32633)" in result.stdout, result.stderr
    expected = (tmp_path / "tif.csv").read_text()
    assert (tmp_path / "npy.csv").read_text() == expected
    listing = tmp_path / "out-npy" / "graphconv-maps.csv"
    with open(listing, newline="") as fp:
        rows = list(csv.DictReader(fp))
    made_with = json.loads(rows[0]["made_with"])
    assert made_with["map_georeference"]["crs"] == "EPSG:32633"
    for key in ("map_georeference", "model_classes", "output_activation", "labels_digest"):
        del made_with[key]
    rows[0]["made_with"] = json.dumps(made_with)
    with open(listing, "w", newline="") as fp:
        writer = csv.DictWriter(fp, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert graphconv_in_process("cells", "out-npy/scene.npy", "-o", "earlier.csv").returncode == 0
    placed = [[row[:4] for row in csv.reader(open(tmp_path / name))] for name in ("earlier.csv", "tif.csv")]
    assert len(placed[0]) > 1 and placed[0] == placed[1]  # the same squares (the classes then unnamed)


def test_a_batch_s_npy_map_changed_since_its_row_is_refused(digits, tmp_path):
    """A map replaced since the batch listed it (another array of that name) would be
    placed by another map's row."""
    from conftest import ROOT
    out = batch_maps(digits, [ROOT / "examples/digits_page.png"], "npy")
    assert graphconv_in_process("cells", f"{out}/digits_page.npy", "-o", "cells.csv").returncode == 0
    np.save(tmp_path / out / "digits_page.npy", np.zeros((1, 11, 5, 5), np.float32))
    result = graphconv_in_process("cells", f"{out}/digits_page.npy", "-o", "again.csv")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "graphconv-maps.csv lists this map, but the file changed since graphconv wrote it" in result.stderr
    assert not (tmp_path / "again.csv").exists()


# ---- what is refused, and nothing written --------------------------------------------------------------

def test_without_tifffile_a_tif_map_is_refused_naming_the_extra(tmp_path, rng, monkeypatch):
    """It was "is not a map graphconv wrote", which sent the user looking at the map."""
    import sys
    stored = slide_map(tmp_path / "map.tif", random_scores(rng))
    monkeypatch.setitem(sys.modules, "tifffile", None)
    with pytest.raises(GraphconvError, match=r"needs the tifffile package: pip install 'graphconv\[scale\]'"):
        write_cells(stored, tmp_path / "cells.csv")


def test_an_npy_map_no_batch_lists_is_refused_with_the_way_to_a_placed_map(tmp_path):
    np.save(tmp_path / "map.npy", np.zeros((1, 3, 4, 4), np.float32))
    result = graphconv_in_process("cells", "map.npy", "-o", "cells.geojson")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "map.npy: an .npy holds no word of where its cells stand" in result.stderr
    assert "--output MAP.tif" in result.stderr and not (tmp_path / "cells.geojson").exists()


def test_a_user_s_file_is_not_replaced_but_its_own_output_is(tmp_path, rng):
    stored = slide_map(tmp_path / "map.tif", random_scores(rng))
    (tmp_path / "cells.csv").write_text("patient,grade\n1,3\n")
    result = graphconv_in_process("cells", stored, "-o", "cells.csv")
    assert result.returncode == 2 and "is not a file of cells graphconv wrote" in result.stderr
    assert (tmp_path / "cells.csv").read_text() == "patient,grade\n1,3\n"
    for output in ("mine.csv", "mine.geojson"):
        for _ in range(2):  # written, then replaced
            assert graphconv_in_process("cells", stored, "-o", output).returncode == 0


@pytest.mark.parametrize("args, said", [
    (["-o", "cells.txt"], "cells writes GeoJSON (.geojson or .json) or CSV (.csv)"),
    (["-o", "cells.csv", "--top-class", "lymph"], "map.tif: --top-class 'lymph': no class of that name"),
    (["-o", "cells.csv", "--min-score", "nan"], "expected a finite number"),
    (["-o", "-"], "cells writes a file, not standard output"),
    (["-o", "cells.csv", "--regions"], "cells.csv: --regions writes polygons, which a CSV has no room for"),
])
def test_bad_options_are_one_message_and_write_nothing(tmp_path, rng, args, said):
    stored = slide_map(tmp_path / "map.tif", random_scores(rng))
    result = graphconv_in_process("cells", stored, *args)
    assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif"]


@pytest.mark.parametrize("activation, min_score, refused", [
    ("softmax", "2", True), ("sigmoid", "-0.5", True), ("softmax", "1", False), (None, "2", False)])
def test_a_min_score_no_probability_reaches_is_refused(tmp_path, rng, activation, min_score, refused):
    """--min-score 2 on probabilities kept no cell, silently; raw scores (logits) reach it."""
    stored = slide_map(tmp_path / "map.tif", random_scores(rng), model_classes=3, output_activation=activation)
    result = graphconv_in_process("cells", stored, "-o", "cells.csv", "--min-score", min_score)
    assert result.returncode == (2 if refused else 0), result.stderr
    assert ("this map's scores are probabilities" in result.stderr) == refused
    assert (tmp_path / "cells.csv").exists() != refused


def test_a_damaged_tiff_is_said_damaged_in_one_line(tmp_path):
    """tifffile's own log line ("invalid offset to first page") came first, then "is not a
    map graphconv wrote", which sent the user asking where the map came from."""
    pytest.importorskip("tifffile")
    damaged = tmp_path / "map.tif"
    damaged.write_bytes(b"II*\x00\xff\xff\xff\x7f" + bytes(100))
    result = graphconv_in_process("cells", damaged, "-o", "cells.csv")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "map.tif: is not a readable TIFF image" in result.stderr and not (tmp_path / "cells.csv").exists()


def test_a_user_s_image_and_a_gcp_map_are_refused(digits, tmp_path):
    image = grey_geotiff(tmp_path / "scene.tif")
    result = graphconv_in_process("cells", image, "-o", "cells.geojson")
    assert result.returncode == 2 and "is not a map graphconv wrote" in result.stderr
    gcps = gcp_geotiff(tmp_path / "gcps.tif", shape=(120, 150),
                       gcps=((0, 0, 0, 500000.0, 4600000.0, 0), (149, 119, 0, 501490.0, 4598810.0, 0)))
    assert graphconv_in_process("run", digits, "--image", gcps, "--tile", "64", "--output", "map.tif",
                                "--quiet").returncode == 0
    result = graphconv_in_process("cells", "map.tif", "-o", "cells.geojson")
    assert result.returncode == 2 and "ground control points" in result.stderr
    assert not (tmp_path / "cells.geojson").exists()


def test_run_says_how_to_get_cells_where_output_names_geojson(digits, tmp_path):
    from conftest import ROOT
    result = graphconv_in_process("run", digits, "--image", ROOT / "examples/digits_page.png", "--output",
                                  "cells.geojson")
    assert result.returncode == 2 and "graphconv cells MAP.tif -o cells.geojson" in result.stderr


def test_a_score_json_cannot_write_is_left_out_of_qupath_s_measurements(tmp_path, rng):
    """A network can make a score infinite or NaN in a computed cell; JSON has no word for
    either and QuPath reads measurements as numbers: left out there, null for GIS, empty in CSV."""
    scores = rng.random((3, 2, 2), dtype=np.float32)
    scores[1, 0, 0], scores[2, 0, 0] = np.inf, np.nan
    stored = slide_map(tmp_path / "map.tif", scores)
    write_cells(stored, tmp_path / "cells.geojson")
    write_cells(stored, tmp_path / "cells.csv")
    with open(tmp_path / "cells.geojson") as fp:
        first = json.load(fp)["features"][0]["properties"]  # strict JSON: no Infinity, no NaN
    assert first["classification"]["name"] == "tumour"
    assert list(first["measurements"]) == ["stroma"]
    assert np.float32(first["measurements"]["stroma"]) == scores[0, 0, 0]
    with open(tmp_path / "cells.csv", newline="") as fp:
        row = next(csv.DictReader(fp))
    assert (row["top_score"], row["tumour"], row["necrosis"]) == ("", "", "")


def test_a_map_damaged_since_it_was_written_is_one_message_and_writes_nothing(tmp_path, rng):
    """A tile of the map that no longer decodes stopped `cells` with the codec's traceback."""
    stored = slide_map(tmp_path / "map.tif", rng.random((3, 40, 40), dtype=np.float32))
    with tifffile.TiffFile(stored) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    with open(stored, "r+b") as fp:
        fp.seek(offset)
        fp.write(b"\xff" * count)  # the first tile's deflate stream garbled
    result = graphconv_in_process("cells", stored, "-o", "cells.geojson")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "map.tif: cannot read rows 0..39 of the map (damaged since it was written?)" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif"]


def test_a_map_held_in_memory_gives_the_cells_the_command_s_map_file_gives(digits, tmp_path):
    """A notebook with the map `run_image` returned had no way to its cells: `write_cells`
    read only a file the command wrote. `write_cells_of` places them by the model's cells
    and the image's georeference, as the command's map does."""
    import graphconv
    from graphconv.cells import write_cells_of
    image = grey_geotiff(tmp_path / "scene.tif")
    assert graphconv_in_process("run", digits, "--image", image, "--output", "map.tif", "--quiet").returncode == 0
    assert graphconv_in_process("cells", "map.tif", "-o", "command.csv").returncode == 0
    assert graphconv_in_process("cells", "map.tif", "-o", "command.geojson").returncode == 0
    model = graphconv.load(digits)
    scores = model.run_image(image)
    result = write_cells_of(scores, model, "python.csv", image=image)
    assert (tmp_path / "python.csv").read_text() == (tmp_path / "command.csv").read_text()
    assert result.coordinates == "the image's CRS (32633)" and result.written == result.computed == \
        scores.shape[2] * scores.shape[3]
    write_cells_of(scores[0], model, "python.geojson", image=str(image))
    assert features(tmp_path / "python.geojson") == features(tmp_path / "command.geojson")
    write_cells_of(scores, model, "pixels.csv", top_classes=["3"])  # no image: in its pixels
    rows = csv_rows(tmp_path / "pixels.csv")
    assert rows and {row["top_class"] for row in rows} == {"3"}
    assert (float(rows[0]["x"]), float(rows[0]["y"])) == model.cell_area.centre(int(rows[0]["row"]),
                                                                                 int(rows[0]["col"]))[::-1]
    for bad, said in ((scores[:, :3], r"scores: 3 channels, but digits gives 11 classes"),
                      (np.concatenate([scores, scores]), r"scores: one image's map, .* not shape \(2, 11, ")):
        with pytest.raises(GraphconvError, match=said):
            write_cells_of(bad, model, "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_a_class_whose_name_holds_a_comma_can_be_kept(tmp_path, rng):
    labels = ["Urban fabric", "Moors, heathland and sclerophyllous vegetation", "Water bodies"]
    scores = random_scores(rng, (3, 12, 15))
    stored = slide_map(tmp_path / "map.tif", scores, labels=labels)
    result = graphconv_in_process("cells", stored, "-o", "moors.csv", "--top-class",
                                  "Moors, heathland and sclerophyllous vegetation,Water bodies")
    assert result.returncode == 0, result.stderr
    kept = {row["top_class"] for row in csv_rows(tmp_path / "moors.csv")}
    assert kept == set(labels[1:])


def test_a_multi_label_model_s_gis_cells_list_every_label_they_call(tmp_path, write_spec):
    """A satellite tile's labels (forest and water, say) showed as its best one alone: a
    flat GeoJSON attribute `labels` lists every class called (probability at least 0.5),
    joined by "; " (labels may hold commas), beside top_class and each score."""
    import graphconv
    from graphconv.cells import write_cells_of
    spec = write_spec("""
        name: land
        input: {name: data, shape: [1, 8, 8]}
        layers:
          - {name: conv1, op: conv, out_channels: 3, kernel_size: 8, stride: 4}
        """)
    names = ["forest", "water, inland", "urban"]
    model = graphconv.load(spec, activation="sigmoid", labels=names)
    image = grey_geotiff(tmp_path / "scene.tif")
    scores = model.run_image(image)
    with pytest.warns(GraphconvWarning, match="each class a finding of its own"):
        write_cells_of(scores, model, "cells.geojson", image=image)
    found = features(tmp_path / "cells.geojson")
    assert len(found) == scores.shape[2] * scores.shape[3]
    assert {feature["properties"]["labels"].count(";") for feature in found} >= {0, 1}  # cells calling one, two
    for feature in found:
        props = feature["properties"]
        called = [name for name in names if props[name] >= 0.5]
        assert props["labels"] == "; ".join(called)


def test_a_map_of_an_image_read_coarser_is_placed_by_its_source_and_refused_by_its_path(digits, tmp_path):
    """A slide's map run through `open_source(..., downsample=2)` and given to
    write_cells_of by its path had every cell written at half its place, labelled
    full-resolution pixels. The source places it as `run --downsample 2` + `cells` do;
    the path alone is refused, naming the way."""
    import graphconv
    from graphconv.cells import write_cells_of
    from graphconv.sources import open_source
    image = grey_geotiff(tmp_path / "scene.tif", shape=(240, 300))
    assert graphconv_in_process("run", digits, "--image", image, "--downsample", "2", "--output", "map.tif",
                                "--quiet").returncode == 0
    assert graphconv_in_process("cells", "map.tif", "-o", "command.csv").returncode == 0
    model = graphconv.load(digits)
    source = open_source(image, model.crop_shape[0], model.preprocess, downsample=2)
    scores = model.run_tiled(source, 64)
    write_cells_of(scores, model, "python.csv", image=source)
    python, command = csv_rows(tmp_path / "python.csv"), csv_rows(tmp_path / "command.csv")
    placed = lambda rows: [(row["row"], row["col"], row["x"], row["y"]) for row in rows]  # noqa: E731
    assert placed(python) == placed(command) and float(python[-1]["x"]) > 200 * 10 + 500000
    np.testing.assert_allclose([float(row["top_score"]) for row in python],
                               [float(row["top_score"]) for row in command], rtol=1e-4, atol=1e-6)
    with pytest.raises(GraphconvError, match=r"scores: a map of \d+x\d+ cells, but digits's map of scene.tif "
                                             r"\(240x300 pixels\) read whole at full resolution has .*open_source"):
        write_cells_of(scores, model, "wrong.csv", image=image)
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((240, 300), np.uint8)).save(tmp_path / "scene.png")  # measured from its header
    with pytest.raises(GraphconvError, match=r"scene.png \(240x300 pixels\) read whole at full resolution"):
        write_cells_of(scores, model, "wrong.csv", image=tmp_path / "scene.png")
    assert not (tmp_path / "wrong.csv").exists()


# ---- --regions: each class's cells merged into polygons --------------------------------------------------
def in_region(feature, x: float, y: float) -> bool:
    """Whether (x, y) is inside a feature's MultiPolygon."""
    from test_regions import inside
    return any(inside([np.array(ring) for ring in polygon], x, y)
               for polygon in feature["geometry"]["coordinates"])


def regions_by_class(path) -> dict:
    return {(f["properties"].get("classification") or {}).get("name", f["properties"].get("class")): f
            for f in features(path)}


@pytest.mark.parametrize("first, step", [((112.0, 112.0), (32.0, 32.0)), ((14.5, 20.0), (4.0, 8.0))])
def test_a_slide_s_regions_are_qupath_annotations_holding_exactly_each_class_s_cells(tmp_path, rng, first, step):
    """A tumour map as one annotation per class QuPath measures, not a tile per cell:
    every computed cell's centre inside its best class's region and no other's, glass in
    none; the cells, and their area in pixels and in µm (0.25 µm pixels), as
    measurements."""
    scores = random_scores(rng, (3, 12, 15))
    result = write_cells(slide_map(tmp_path / "map.tif", scores, first, step), tmp_path / "regions.geojson",
                         regions=True)
    computed = ~np.isnan(scores[0])
    best = np.where(computed, np.nan_to_num(scores, nan=-1).argmax(axis=0), -1)
    found = regions_by_class(tmp_path / "regions.geojson")
    assert sorted(found) == sorted(LABELS) and result.classes == 3
    assert result.written == result.computed == computed.sum()
    assert result.regions == sum(f["properties"]["measurements"]["regions"] for f in found.values())
    for band, name in enumerate(LABELS):
        feature = found[name]
        properties = feature["properties"]
        assert properties["objectType"] == "annotation" and properties["classification"]["name"] == name
        assert properties["measurements"]["cells"] == (best == band).sum()
        assert properties["measurements"]["area pixels^2"] == pytest.approx((best == band).sum() * step[0] * step[1])
        assert properties["measurements"]["area µm^2"] == pytest.approx(
            (best == band).sum() * step[0] * step[1] * 0.25 ** 2)
        for polygon in feature["geometry"]["coordinates"]:
            assert signed_area(polygon[0]) > 0 and all(signed_area(hole) < 0 for hole in polygon[1:])
        for r, c in np.ndindex(best.shape):
            assert in_region(feature, first[1] + step[1] * c, first[0] + step[0] * r) == (best[r, c] == band)


@pytest.mark.parametrize("top_classes, min_score", [(None, None), (["necrosis", "stroma"], 0.8)])
def test_a_multi_label_model_s_regions_are_where_each_class_is_called_and_overlap(tmp_path, rng, top_classes,
                                                                                  min_score):
    """A satellite tile holding forest and water is in both regions: each class's region
    is the cells whose own probability of it is at least --min-score (0.5 unless given)."""
    scores = random_scores(rng, (3, 10, 11))
    stored = slide_map(tmp_path / "map.tif", scores, model_classes=3, output_activation="sigmoid")
    with pytest.warns(GraphconvWarning):
        result = write_cells(stored, tmp_path / "regions.geojson", top_classes, min_score, regions=True)
    cut = 0.5 if min_score is None else min_score
    calls = np.nan_to_num(scores, nan=-1) >= cut
    named = range(3) if top_classes is None else [LABELS.index(name) for name in top_classes]
    found = regions_by_class(tmp_path / "regions.geojson")
    assert sorted(found) == sorted(LABELS[k] for k in named)
    assert result.written == calls[list(named)].any(axis=0).sum()
    for band in named:
        feature = found[LABELS[band]]
        assert feature["properties"]["measurements"]["cells"] == calls[band].sum()
        for r, c in np.ndindex(calls.shape[1:]):
            assert in_region(feature, 112 + 32 * c, 112 + 32 * r) == calls[band, r, c]


def test_a_class_map_s_regions_are_its_scores_map_s(digits, tmp_path):
    """`run --reduce argmax` keeps each cell's class alone: its regions are those of the
    map of every score, the same polygons."""
    from conftest import ROOT
    for output, more in (("scores.tif", []), ("classes.tif", ["--reduce", "argmax"])):
        assert graphconv_in_process("run", digits, "--image", ROOT / "examples/digits_page.png", "--output", output,
                                    "--quiet", *more).returncode == 0
        result = graphconv_in_process("cells", output, "-o", output.replace(".tif", ".geojson"), "--regions")
        assert result.returncode == 0, result.stderr
        assert "6486 of 6486 computed cells of " + output + " in " in result.stdout
    assert features(tmp_path / "scores.geojson") == features(tmp_path / "classes.geojson")
    assert len(features(tmp_path / "scores.geojson")) == 11


def test_a_geotiff_s_regions_are_polygons_in_its_crs_holding_each_class_s_cells(digits, tmp_path):
    """Over a GeoTIFF: the regions in its CRS (north-up: rows run south, and the rings
    still turn as RFC 7946 asks), their area in m², each cell's square centre in its
    class's region alone."""
    image = grey_geotiff(tmp_path / "scene.tif", UTM_33N_AREA)
    assert graphconv_in_process("run", digits, "--image", image, "--output", "map.tif", "--quiet").returncode == 0
    assert graphconv_in_process("cells", "map.tif", "-o", "cells.geojson").returncode == 0
    result = graphconv_in_process("cells", "map.tif", "-o", "regions.geojson", "--regions")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "regions.geojson") as fp:
        assert json.load(fp)["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    regions = regions_by_class(tmp_path / "regions.geojson")
    for feature in regions.values():
        assert feature["properties"]["area"] == pytest.approx(feature["properties"]["cells"] * 40.0 ** 2)
        assert all(signed_area(polygon[0]) > 0 for polygon in feature["geometry"]["coordinates"])
    cells = features(tmp_path / "cells.geojson")
    assert sum(f["properties"]["cells"] for f in regions.values()) == len(cells)
    for cell in cells[::5]:
        cx, cy, _, _ = square_of(cell)
        held = [name for name, feature in regions.items() if in_region(feature, cx, cy)]
        assert held == [cell["properties"]["top_class"]]
