"""`graphconv run --tile`, lazily read TIFF/zarr inputs, .zarr outputs, Dask workers and
`--images`, through the CLI as users run them: the same map as the whole-image pass."""
from __future__ import annotations

import contextlib
import csv
import functools
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")
Image = pytest.importorskip("PIL.Image")

from conftest import ROOT, SPECS, graphconv_in_process, graphconv_process  # noqa: E402
from nets import PADDED  # noqa: E402
from graphconv.cluster import MapOptions, ModelRef, run_images  # noqa: E402
from graphconv.errors import GraphconvError  # noqa: E402
from graphconv.model import Model  # noqa: E402
from graphconv.sources import open_source  # noqa: E402


graphconv = graphconv_process  # the command, in a process of its own


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("m") / "lenet-fcn"
    result = graphconv("compile", SPECS / "lenet.yaml", "-o", folder)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    """A 150x170 grey picture as PNG, tiled TIFF, striped TIFF and zarr (H, W)."""
    folder = tmp_path_factory.mktemp("img")
    pixels = (np.random.default_rng(3).random((150, 170)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / "page.png")
    tifffile.imwrite(folder / "tiled.tif", pixels, tile=(64, 64))
    tifffile.imwrite(folder / "striped.tif", pixels, rowsperstrip=16)
    stored = zarr.open_array(str(folder / "page.zarr"), mode="w", shape=pixels.shape, chunks=(40, 40),
                             dtype=pixels.dtype)
    stored[:] = pixels
    return folder


def whole_map(model_dir, image, tmp_path) -> np.ndarray:
    out = tmp_path / "whole.npy"
    result = graphconv("run", model_dir, "--image", image, "--output", out)
    assert result.returncode == 0, result.stderr
    return np.load(out)


@pytest.mark.parametrize("name", ["tiled.tif", "striped.tif", "page.zarr"])
def test_lazy_sources_read_the_same_pixels_as_pillow(picture, name):
    model = Model.load(SPECS / "lenet.yaml")
    pre = model.graph.meta.get("preprocess")
    png = open_source(picture / "page.png", 1, pre)
    other = open_source(picture / name, 1, pre)
    assert (other.height, other.width) == (png.height, png.width)
    np.testing.assert_array_equal(other.read(10, 20, 90, 130), png.read(10, 20, 90, 130))


def test_cli_tile_npy_zarr_and_tiff_equal_the_whole_image(model_dir, picture, tmp_path):
    whole = whole_map(model_dir, picture / "page.png", tmp_path)
    for image, out, extra in ((picture / "page.png", tmp_path / "t.npy", ["--tile", "40"]),
                              (picture / "tiled.tif", tmp_path / "t.zarr", ["--tile", "57"]),
                              (picture / "page.zarr", tmp_path / "z.npy", [])):
        result = graphconv("run", model_dir, "--image", image, "--output", out, *extra)
        assert result.returncode == 0, result.stderr
        assert "tiles:" in result.stderr
        got = zarr.open_array(str(out), mode="r")[:] if str(out).endswith(".zarr") else np.load(out)
        np.testing.assert_allclose(got, whole, rtol=1e-4, atol=1e-6)


def test_cli_reduce_argmax_and_classes(model_dir, picture, tmp_path):
    whole = whole_map(model_dir, picture / "page.png", tmp_path)
    result = graphconv("run", model_dir, "--image", picture / "page.png", "--tile", "48", "--reduce", "argmax",
                       "--output", tmp_path / "a.npy")
    assert result.returncode == 0, result.stderr
    classes = np.load(tmp_path / "a.npy")
    assert classes.dtype == np.uint16
    np.testing.assert_array_equal(classes[:, 0], whole.argmax(axis=1))
    result = graphconv("run", model_dir, "--image", picture / "page.png", "--classes", "2,7",
                       "--output", tmp_path / "c.npy")
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), whole[:, [2, 7]], rtol=1e-4, atol=1e-6)
    assert "argmax over one score channel" not in result.stderr
    # Of one channel (a binary segmentation's sigmoid, here one class kept) argmax is one class
    # everywhere: said, where it wrote one class (0 for a sigmoid output) without a word.
    result = graphconv("run", model_dir, "--image", picture / "page.png", "--classes", "7", "--reduce", "argmax",
                       "--output", tmp_path / "one.npy")
    assert result.returncode == 0 and "note: --reduce argmax over one score channel gives its class" in result.stderr
    assert (np.load(tmp_path / "one.npy") == 7).all()


def test_a_tile_cut_to_whole_cells_says_so(model_dir, picture, tmp_path):
    """LeNet's cells are 4 pixels apart on 32-pixel crops: --tile 63 reads boxes of 60
    (32 + 4 k), and the tiles line says why it reports 60; a --tile of whole cells, none."""
    for tile, said in (("63", True), ("60", False)):
        result = graphconv("run", model_dir, "--image", picture / "page.png", "--tile", tile, "--output",
                           tmp_path / f"{tile}.npy")
        assert result.returncode == 0, result.stderr
        assert "tiles of up to 60x60 pixels" in result.stderr
        assert ("(--tile 63: a tile reads the boxes of whole cells, 60x60 the largest within it)"
                in result.stderr) == said


def test_a_sigmoid_model_s_class_map_marks_the_cells_calling_no_class(picture, tmp_path, write_spec):
    """A satellite model's findings (sigmoid): `--reduce argmax` wrote each cell's best
    class at 0.02 as at 0.98; now 65534 where none reaches 0.5, named in the map's
    legend, left unclassified by `graphconv cells` and clear in --heatmap top."""
    spec = write_spec("""
        name: land
        input: {name: data, shape: [1, 8, 8]}
        weights: land.npz
        layers:
          - {name: conv1, op: conv, out_channels: 3, kernel_size: 8, stride: 4}
          - {name: prob, op: sigmoid}
        """)
    weights = np.random.default_rng(5).standard_normal((3, 1, 8, 8)).astype(np.float32) * 0.3
    np.savez(tmp_path / "land.npz", **{"conv1.weight": weights, "conv1.bias": np.full(3, -2.0, np.float32)})
    assert graphconv("compile", spec, "-o", tmp_path / "land").returncode == 0
    common = ("run", tmp_path / "land", "--image", picture / "page.png")
    assert graphconv(*common, "--output", tmp_path / "scores.npy").returncode == 0
    result = graphconv(*common, "--reduce", "argmax", "--output", tmp_path / "classes.tif", "--heatmap", "top",
                       "--heatmap-out", tmp_path / "top.png")
    assert result.returncode == 0, result.stderr
    assert "best class where its probability is at least 0.5, and 65534 where no class is" in result.stderr
    scores = np.load(tmp_path / "scores.npy")[0]
    classes = tifffile.imread(tmp_path / "classes.tif")
    np.testing.assert_array_equal(classes, np.where(scores.max(axis=0) >= 0.5, scores.argmax(axis=0), 65534))
    assert (classes == 65534).any() and (classes < 3).any()
    with tifffile.TiffFile(tmp_path / "classes.tif") as tif:
        metadata = tif.pages[0].tags["GDAL_METADATA"].value
        colours = tif.pages[0].colormap
    assert "65534: no class called" in metadata and 'name="CLASS_65534"' in metadata
    assert tuple(colours[:, 65534]) == (160 * 257,) * 3
    cells = graphconv("cells", tmp_path / "classes.tif", "-o", tmp_path / "cells.csv")
    assert cells.returncode == 0 and "calling none (65534) are written unclassified" in cells.stderr
    with open(tmp_path / "cells.csv", newline="") as fp:
        rows = list(csv.DictReader(fp))
    assert len(rows) == classes.size
    assert sum(row["top_class"] == "" for row in rows) == (classes == 65534).sum()


def test_cli_too_small_tile_is_exit_2_with_the_smallest_size(model_dir, picture, tmp_path):
    result = graphconv("run", model_dir, "--image", picture / "page.png", "--tile", "8", "--output", tmp_path / "x.npy")
    assert result.returncode == 2
    assert "the smallest tile that works is" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "x.npy").exists()


def test_cli_level_of_a_slide_maps_that_level(model_dir, tmp_path):
    """--level 1 of a JPEG-tiled pyramid: the map of that level's pixels, as the same
    pixels saved as a PNG give it, with a line saying which level ran."""
    pytest.importorskip("imagecodecs")
    from test_sources import write_pyramid

    levels = write_pyramid(tmp_path / "slide.tif", channels=1)
    Image.fromarray(tifffile.imread(tmp_path / "slide.tif", level=1)).save(tmp_path / "level1.png")
    result = graphconv("run", model_dir, "--image", tmp_path / "slide.tif", "--level", "1", "--tile", "64",
                       "--output", tmp_path / "level1.npy")
    assert result.returncode == 0, result.stderr
    assert (f"image: {levels[1].shape[0]}x{levels[1].shape[1]} pixels, level 1 of a 3-level pyramid, 2x coarser "
            "than level 0 (the network reads these; cells are placed in level-0 pixels all the same)") in result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "level1.npy"), whole_map(model_dir, tmp_path / "level1.png",
                                                                           tmp_path), rtol=1e-4, atol=1e-6)
    refused = graphconv("run", model_dir, "--image", tmp_path / "level1.png", "--level", "1")
    assert refused.returncode == 2 and "--level picks a level of a pyramid" in refused.stderr


@pytest.mark.parametrize("heatmap", ["3", "top"])
def test_cli_heatmap_of_a_tiled_run_is_the_whole_image_run_s(model_dir, picture, tmp_path, heatmap):
    """A picture small enough to be drawn whole: the tiled run's heatmap is the very
    picture the whole-image run draws (the map the same, the cells placed alike)."""
    whole = graphconv("run", model_dir, "--image", picture / "page.png", "--heatmap", heatmap,
                      "--heatmap-out", tmp_path / "whole.png")
    assert whole.returncode == 0, whole.stderr
    for image, extra in ((picture / "page.png", ["--tile", "40"]), (picture / "tiled.tif", [])):
        tiled = graphconv("run", model_dir, "--image", image, "--heatmap", heatmap, "--heatmap-out",
                          tmp_path / "tiled.png", "--output", tmp_path / "map.zarr", *extra)
        assert tiled.returncode == 0, tiled.stderr
        assert "heatmap of" in tiled.stdout and "tiles:" in tiled.stderr
        drawn, want = (np.asarray(Image.open(tmp_path / name), np.int16) for name in ("tiled.png", "whole.png"))
        assert drawn.shape == want.shape and np.abs(drawn - want).max() <= 1


def test_cli_heatmap_of_a_tiled_run_from_a_reduced_map(model_dir, picture, tmp_path):
    """--reduce argmax keeps the best class, which --heatmap top draws; class K's scores it
    does not keep, and --heatmap K is refused before anything is written."""
    ok = graphconv("run", model_dir, "--image", picture / "tiled.tif", "--reduce", "argmax", "--heatmap", "top",
                   "--output", tmp_path / "classes.npy")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "classes-heatmap-top.png").exists()
    for extra, message in ((["--reduce", "argmax"], "which --reduce argmax does not keep"),
                           (["--classes", "1,2"], "--heatmap 3: that class is not among --classes 1,2")):
        refused = graphconv("run", model_dir, "--image", picture / "tiled.tif", "--heatmap", "3", *extra,
                            "--output", tmp_path / "refused.npy")
        assert refused.returncode == 2 and message in refused.stderr
        assert not (tmp_path / "refused.npy").exists() and not (tmp_path / "tiled-heatmap-3.png").exists()


@pytest.fixture(scope="module")
def sparse_page(tmp_path_factory):
    """A 300x340 white TIFF with the picture in its top left quarter: most tiles blank."""
    folder = tmp_path_factory.mktemp("sparse")
    page = np.full((300, 340), 252, np.uint8)
    page[:150, :170] = np.asarray(Image.open(Path(__file__).parent.parent / "examples" / "digits_page.png")
                                  .convert("L"))[:150, :170]
    tifffile.imwrite(folder / "sparse.tif", page, tile=(64, 64))
    return folder / "sparse.tif"


def test_cli_skip_background_computes_the_tissue_tiles_exactly(model_dir, sparse_page, tmp_path):
    full = graphconv("run", model_dir, "--image", sparse_page, "--tile", "60", "--output", tmp_path / "full.npy")
    assert full.returncode == 0, full.stderr
    want = np.load(tmp_path / "full.npy")
    runs = [("local", ["--skip-background"]), ("dask", ["--skip-background", "0.05", "--workers", "1"])]
    if importlib.util.find_spec("distributed") is None:
        runs = runs[:1]
    for name, extra in runs:
        result = graphconv("run", model_dir, "--image", sparse_page, "--tile", "60", *extra,
                           "--output", tmp_path / f"{name}.npy")
        assert result.returncode == 0, result.stderr
        assert "cells show no tissue near their centre and are not computed (NaN)" in result.stderr
        got = np.load(tmp_path / f"{name}.npy")
        computed = np.isfinite(got).all(axis=(0, 1))
        assert 0.1 < computed.mean() < 0.6, computed.mean()  # the picture's quarter, with its tiles' margins
        np.testing.assert_allclose(got[:, :, computed], want[:, :, computed], rtol=1e-4, atol=1e-6)
        assert np.isnan(got[:, :, ~computed]).all()
        assert computed[:20, :20].all() and not computed[-10:, -10:].any()
    classes = graphconv("run", model_dir, "--image", sparse_page, "--tile", "60", "--skip-background",
                        "--reduce", "argmax", "--heatmap", "top", "--output", tmp_path / "classes.npy")
    assert classes.returncode == 0, classes.stderr
    assert "are not computed (65535)" in classes.stderr
    assert (np.load(tmp_path / "classes.npy")[0, 0, -10:, -10:] == 65535).all()
    other_tiling = graphconv("run", model_dir, "--image", sparse_page, "--tile", "84", "--skip-background",
                             "--output", tmp_path / "other.npy")
    assert other_tiling.returncode == 0, other_tiling.stderr
    np.testing.assert_array_equal(np.isnan(np.load(tmp_path / "other.npy")), np.isnan(np.load(tmp_path / "local.npy")))
    refused = graphconv("run", model_dir, "--input", tmp_path / "full.npy", "--skip-background")
    assert refused.returncode == 2 and "--skip-background looks for tissue in an image" in refused.stderr


def test_a_grey_model_on_an_rgb_image_says_once_it_feeds_luma_and_how_to_pick_a_band(model_dir, tmp_path):
    """The 1-channel model on an RGB TIFF was fed ITU-601 luma without a word: one note
    says so and names --bands; with --bands, and on a grey image, nothing is said. An
    --images batch says it once, counting the images."""
    rgb = (np.random.default_rng(4).random((80, 90, 3)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb", tile=(32, 32))
    luma = graphconv_in_process("run", model_dir, "--image", tmp_path / "rgb.tif", "--output", tmp_path / "a.npy")
    assert luma.returncode == 0, luma.stderr
    notes = [line for line in luma.stderr.splitlines() if "converted to grey" in line]
    assert notes == [line for line in notes if line.startswith("note: the image is RGB: converted to grey for the "
                                                              "1-channel model")] and len(notes) == 1
    assert "0.299 R + 0.587 G + 0.114 B" in notes[0] and "--bands N" in notes[0]
    picked = graphconv_in_process("run", model_dir, "--image", tmp_path / "rgb.tif", "--bands", "2",
                                  "--output", tmp_path / "b.npy")
    assert picked.returncode == 0 and "converted" not in picked.stderr, picked.stderr
    (tmp_path / "photos").mkdir()
    Image.fromarray(rgb).save(tmp_path / "photos" / "c.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "photos" / "g.png")
    batch = graphconv_in_process("run", model_dir, "--images", tmp_path / "photos", "--output-dir", tmp_path / "maps")
    assert batch.returncode == 0, batch.stderr
    assert batch.stderr.count("note: 1 of 2 images is RGB: converted to grey for the 1-channel model") == 1


class _Bar:
    """A stand-in for tqdm that keeps its total and where it got to."""
    made: list = []

    def __init__(self, total, **_):
        self.total, self.n, self.closed_at = total, 0, None
        _Bar.made.append(self)

    def set_postfix_str(self, *_, **__):
        pass

    def update(self, count):
        self.n += count

    def close(self):
        self.closed_at = self.n


def _with_a_bar(monkeypatch) -> list:
    """Run the command as on a terminal, its tqdm bars recorded (returned)."""
    import types

    _Bar.made = []
    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=_Bar))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    return _Bar.made


def test_a_log_gets_a_progress_line_a_minute_and_no_bar(model_dir, picture, monkeypatch):
    """stderr a file (a batch job's log): no bar, whose carriage returns pile up on one
    line, and for hours nothing at all; a plain line every LOG_EVERY seconds instead."""
    import graphconv.tiled_cli
    command = ["run", model_dir, "--image", picture / "tiled.tif", "--tile", "64"]
    monkeypatch.setattr(graphconv.tiled_cli, "LOG_EVERY", 1e9)
    within_the_interval = graphconv_in_process(*command)
    assert within_the_interval.returncode == 0 and "progress:" not in within_the_interval.stderr
    monkeypatch.setattr(graphconv.tiled_cli, "LOG_EVERY", 0.0)
    result = graphconv_in_process(*command)
    lines = [line for line in result.stderr.splitlines() if line.startswith("progress: ")]
    tiles = int(re.search(r"over (\d+) tiles?", result.stdout).group(1))
    assert len(lines) == tiles - 1 and "\r" not in result.stderr  # the last tile's line is the command's own
    assert re.fullmatch(rf"progress: 1 of {tiles} tiles \(\d+%\), [0-9.]+ Mpx/s, 0:\d\d so far, about \d+:\d\d left",
                        lines[0]), lines[0]
    assert "progress:" not in graphconv_in_process(*command, "--quiet").stderr


@pytest.mark.parametrize("workers", [[], ["--workers", "1"]])
def test_skip_background_s_bar_counts_only_the_tiles_computed(model_dir, sparse_page, tmp_path, monkeypatch, capsys,
                                                              workers):
    """The progress bar's total is the tiles the network computes: the tiles over glass
    alone are known before the run and not counted, so the bar ends at 100% and its rate
    and time left are the computed tiles' (it counted 121 tiles, 82 of them glass, and
    vanished at 32%)."""
    if workers:
        pytest.importorskip("distributed")
    from graphconv.cli import main

    bars = _with_a_bar(monkeypatch)
    assert main(["run", str(model_dir), "--image", str(sparse_page), "--tile", "60", "--skip-background", *workers,
                 "--output", str(tmp_path / "map.npy")]) == 0
    captured = capsys.readouterr()
    blank, total = map(int, re.search(r"(\d+) of (\d+) tiles? holds? only such cells", captured.err).groups())
    assert 0 < blank < total
    [bar] = bars
    assert bar.total == total - blank and bar.closed_at == bar.total
    assert f"over {total - blank} of {total} tiles ({blank} over background only, not computed)" in captured.out


def test_resume_with_skip_background_counts_only_the_tiles_to_compute(model_dir, sparse_page, tmp_path, monkeypatch,
                                                                      capsys):
    """--resume's line says how many tiles are left to compute, not counting those over
    background alone (said apart), and its bar counts those only."""
    from graphconv.cli import main

    run = ["run", str(model_dir), "--image", str(sparse_page), "--tile", "60", "--skip-background",
           "--output", str(tmp_path / "map.zarr"), "--resume"]
    _stop_after(monkeypatch, 3)
    assert main(run) == 130
    blank, total = map(int, re.search(r"(\d+) of (\d+) tiles? holds? only such cells",
                                      capsys.readouterr().err).groups())
    monkeypatch.undo()
    bars = _with_a_bar(monkeypatch)
    assert main(run) == 0
    err = capsys.readouterr().err
    left = total - 3 - blank
    assert (f"resume: 3 of {total} tiles were done by an earlier run" in err
            and f"computing {left} ({blank} more hold only background and are not computed)" in err), err
    assert bars[0].total == left and bars[0].closed_at == left


@pytest.mark.parametrize("workers", [[], ["--workers", "1"]])
def test_resume_counts_the_tiles_over_background_once_whatever_was_listed_as_done(model_dir, sparse_page, tmp_path,
                                                                                  monkeypatch, capsys, workers):
    """Tiles over background alone are listed as done when written (a --workers run writes
    them first): the resume line counted them as done ('65 of 81 tiles were done ...
    computing 16') while the final line counted them as background ('over 16 tiles (10
    over background only, 55 done before ...)'). Both count them apart, once, and the
    counts add up to the plan's tiles; the map is a straight run's."""
    if workers:
        pytest.importorskip("distributed")
    from graphconv.cli import main

    run = ["run", str(model_dir), "--image", str(sparse_page), "--tile", "60", "--skip-background", *workers]
    assert main([*run, "--output", str(tmp_path / "straight.zarr")]) == 0
    blank, total = map(int, re.search(r"(\d+) of (\d+) tiles? holds? only such cells",
                                      capsys.readouterr().err).groups())
    stop = blank + 3 if workers else total - blank + 2  # some tiles over background among those written
    _stop_after(monkeypatch, stop)
    assert main([*run, "--output", str(tmp_path / "map.zarr"), "--resume"]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*run, "--output", str(tmp_path / "map.zarr"), "--resume"]) == 0
    captured = capsys.readouterr()
    done, said_total, computing = map(int, re.search(r"resume: (\d+) of (\d+) tiles? (?:was|were) done by an earlier run "
                                                     r".* computing (\d+)", captured.err).groups())
    assert said_total == total and done == (3 if workers else total - blank)
    assert f"computing {computing} ({blank} more hold only background and are not computed)" in captured.err
    assert (f"over {computing} of {total} tiles ({blank} over background only, {done} done before, not computed)"
            in captured.out)
    assert done + computing + blank == total
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "map.zarr"))[:],
                                  zarr.open_array(str(tmp_path / "straight.zarr"))[:])


def test_skip_background_on_many_images(model_dir, sparse_page, tmp_path):
    results = run_images(ModelRef(str(model_dir)), [str(sparse_page)], str(tmp_path / "o"),
                         MapOptions(skip_background=0.05), tile=60)  # without, one 1024-pixel tile: not blank
    assert results[0].error is None
    got = np.load(tmp_path / "o" / "sparse.npy")
    assert np.isnan(got[0, 0, -10:, -10:]).all() and np.isfinite(got[0, 0, :20, :20]).all()


def test_cli_tiles_automatically_when_the_whole_image_is_over_the_budget(picture, tmp_path):
    big = tmp_path / "big.png"  # whole, LeNet's run is estimated at 145 MB
    Image.fromarray((np.random.default_rng(0).random((1300, 1300)) * 255).astype(np.uint8)).save(big)
    folder = tmp_path / "alex"
    assert graphconv("compile", SPECS / "lenet.yaml", "-o", folder).returncode == 0
    whole = whole_map(folder, big, tmp_path)
    result = graphconv("run", folder, "--image", big, "--output", tmp_path / "auto.npy", "--memory-limit", "100M")
    assert result.returncode == 0, result.stderr
    assert "over the" in result.stderr and "evaluating it in exact tiles" in result.stderr
    said = re.search(r"exact tiles of up to (\d+x\d+) pixels", result.stderr).group(1)
    planned = re.search(r"tiles? of up to (\d+x\d+) pixels", result.stdout + result.stderr).group(1)
    assert said == planned  # the note said the tile chosen, a few pixels over the tiles planned in whole cells
    np.testing.assert_allclose(np.load(tmp_path / "auto.npy"), whole, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("output", ["map.npy", None])
def test_running_out_of_memory_in_a_tile_says_what_it_needed_and_a_smaller_tile(model_dir, picture, tmp_path,
                                                                               monkeypatch, output):
    """The machine with less free than the budget (a ulimit, other processes): "ran out of
    memory" alone left the user to guess; the message names the tile, its need and a
    --tile asking half, and no map is left behind."""
    _stop_after(monkeypatch, 1, MemoryError)
    saved = ["--output", tmp_path / output] if output else []
    result = graphconv_in_process("run", model_dir, "--image", picture / "tiled.tif", "--tile", "120", *saved)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "tiled.tif" in message and "ran out of memory in a 120x120 tile, which needs about" in message, message
    half = int(re.search(r"pass --tile (\d+) \(about", message).group(1))
    assert 28 <= half < 120 and "--memory-limit" in message
    assert os.listdir(tmp_path) == []


def test_a_tile_over_each_local_worker_s_share_is_refused_before_any_worker_starts(model_dir, picture, tmp_path):
    """--tile with --workers 2: two tiles run at once, so each must fit half the limit
    left beside the workers' processes (it was checked against the whole, and the run
    took twice the limit)."""
    common = ["run", model_dir, "--image", picture / "tiled.tif", "--tile", "120", "--memory-limit", "450M"]
    result = graphconv_in_process(*common, "--workers", "2", "--output", tmp_path / "map.npy")
    assert result.returncode == 2, result.stderr
    assert re.search(r"a 120x120 tile needs about 3\d\.\d MB, over the 24\.\d MB each of the 2 workers may take",
                     result.stderr), result.stderr  # the tile's scratch grows with numba's thread count; 24.8 MB
    # less the TIFF's decoded chunks the worker's reader keeps (`held_bytes`)
    assert "fewer --workers" in result.stderr and os.listdir(tmp_path) == []
    assert graphconv_in_process(*common, "--output", tmp_path / "one.npy").returncode == 0  # one at a time fits


def test_a_map_records_the_graphconv_and_the_model_contents_that_made_it(model_dir, picture, tmp_path):
    """For a run to be reproduced later, a .zarr or .tif map names graphconv's version and
    the digest of the model's files, not only its path (a .tif said neither)."""
    from graphconv import __version__
    from graphconv.files import model_digest

    digest = model_digest([model_dir])
    for name in ("map.zarr", "map.tif"):
        result = graphconv_in_process("run", model_dir, "--image", picture / "tiled.tif", "--tile", "64",
                                      "--output", tmp_path / name)
        assert result.returncode == 0, result.stderr
    attributes = dict(zarr.open_array(str(tmp_path / "map.zarr")).attrs)["graphconv"]
    assert attributes["written_by"] == f"graphconv {__version__}" and attributes["model_digest"] == digest
    with tifffile.TiffFile(tmp_path / "map.tif") as tif:
        page = tif.pages[0]
        assert page.software == f"graphconv {__version__}"
        assert json.loads(page.description.split("\n", 1)[1])["model_digest"] == digest


def test_a_tiled_map_records_the_tile_that_plans_its_tiles_again(tmp_path, rng):
    """The map's tile_plan names the --tile that makes the same map again, bit for bit:
    the largest box a tile reads (which it also says) planned other tiles for a padded
    network, and the exactness page told users to give that."""
    (tmp_path / "net.yaml").write_text(PADDED)
    assert graphconv_in_process("compile", tmp_path / "net.yaml", "-o", tmp_path / "fcn").returncode == 0
    Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)).save(tmp_path / "scene.png")

    def tiled(tile: int, name: str) -> tuple[str, np.ndarray]:
        done = graphconv_in_process("run", tmp_path / "fcn", "--image", tmp_path / "scene.png", "--tile", tile,
                                    "--output", tmp_path / name)
        assert done.returncode == 0, done.stderr
        array = zarr.open_array(str(tmp_path / name), mode="r")
        return array.attrs["graphconv"]["tile_plan"], array[:]

    plan, scores = tiled(167, "first.zarr")
    assert plan.endswith("(--tile 167 plans them again)"), plan
    again_plan, again = tiled(int(re.search(r"--tile (\d+) plans", plan).group(1)), "again.zarr")
    assert again_plan == plan and np.array_equal(again, scores)
    box = int(re.search(r"tiles of up to (\d+)x", plan).group(1))
    assert box != 167 and tiled(box, "box.zarr")[0] != plan  # why the record names the tile
    batch = ["run", tmp_path / "fcn", "--images", tmp_path / "scene.png", "--output-dir", tmp_path / "maps"]
    assert graphconv_in_process(*batch, "--tile", 167).returncode == 0
    assert _made_with(tmp_path / "maps", "scene.npy")["tile_plan"] == plan  # an .npy's row records it
    again = graphconv_in_process(*batch, "--tile", 200, "--skip-existing")
    assert again.returncode == 0 and "no map to make" in again.stdout  # provenance: another tile, the same map


def test_images_with_a_tile_too_small_for_the_network_is_one_error(model_dir, picture, tmp_path):
    """The tile's size is the network's matter, not an image's: a batch of 1000 slides
    said the same error 1000 times, each after opening its slide."""
    folder = tmp_path / "slides"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(picture / "page.png", folder / name)
    result = graphconv_in_process("run", model_dir, "--images", folder, "--output-dir", tmp_path / "maps",
                                  "--tile", "8")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("graphconv: a tile of 8x8 is too small for this network")
    assert not (tmp_path / "maps").exists()


def test_images_over_the_memory_budget_are_mapped_in_exact_tiles(model_dir, tmp_path):
    """A single --image over the memory budget is run in tiles; in an --images batch the
    same image was refused, its whole-image run over the budget (a folder of slides
    needed --tile). It is tiled as a single --image's run tiles it, the same map, and
    one note says so."""
    from graphconv.tiling import DenseGrid

    folder = tmp_path / "slides"
    folder.mkdir()
    Image.fromarray((np.random.default_rng(7).random((900, 900)) * 255).astype(np.uint8)).save(folder / "s.png")
    Image.fromarray((np.random.default_rng(8).random((120, 100)) * 255).astype(np.uint8)).save(folder / "t.png")
    budget = DenseGrid(Model.load(model_dir)).peak_bytes((900, 900)) * 3 // 4
    whole = whole_map(model_dir, folder / "s.png", tmp_path)
    result = graphconv_in_process("run", model_dir, "--images", folder, "--output-dir", tmp_path / "maps",
                                  "--memory-limit", budget)
    assert result.returncode == 0, result.stderr
    assert "note: 1 image would need more than the" in result.stderr and "exact tiles of up to" in result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "maps" / "s.npy"), whole, rtol=1e-5, atol=1e-6)
    alone = graphconv_in_process("run", model_dir, "--image", folder / "s.png", "--memory-limit", budget,
                                 "--output", tmp_path / "alone.npy")
    assert alone.returncode == 0, alone.stderr
    sizes = [re.search(r"exact tiles of up to (\d+x\d+) pixels", run.stderr).group(1) for run in (result, alone)]
    assert sizes[0] == sizes[1]  # the tiles planned, in both (the batch said the tile chosen, a pixel over)
    np.testing.assert_array_equal(np.load(tmp_path / "maps" / "s.npy"), np.load(tmp_path / "alone.npy"))


def test_many_images_with_one_corrupt(model_dir, picture, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.open(picture / "page.png").crop((0, 0, 100 + 10 * i, 120)).save(folder / f"p{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = graphconv("run", model_dir, "--images", folder / "*.png", "--output-dir", tmp_path / "maps")
    assert result.returncode == 2
    assert "broken.png" in result.stderr and "3 of 4 images" in result.stdout
    written = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert written == ["graphconv-maps.csv", "p0.npy", "p1.npy", "p2.npy"]
    model = Model.load(model_dir)
    x = open_source(folder / "p1.png", 1, model.graph.meta.get("preprocess")).read(0, 0, 120, 110)
    np.testing.assert_allclose(np.load(tmp_path / "maps" / "p1.npy"), model.run(x[None]), rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    """The trained digit classifier, compiled: labels, and scores that mean something."""
    folder = tmp_path_factory.mktemp("digits") / "digits-fcn"
    assert graphconv("compile", SPECS / "digits.yaml", "-o", folder).returncode == 0
    return folder


def test_many_images_with_scales_give_each_picture_the_class_vector_one_image_s_run_gives(digits_dir, tmp_path):
    """--scales was refused with --images: a photo collection's multi-scale class
    vectors took a process per photo. Each .npy holds what `run --image --scales`
    writes, bit for bit; --skip-existing keeps them until the scales change."""
    folder = tmp_path / "photos"
    folder.mkdir()
    page = Image.open(ROOT / "examples" / "digits_page.png")
    page.crop((0, 0, 200, 150)).save(folder / "a.png")
    page.crop((100, 50, 300, 300)).convert("RGB").save(folder / "b.jpg")
    out = tmp_path / "vectors"
    run = ["run", digits_dir, "--images", folder, "--output-dir", out, "--scales", "60,80", "--flip",
           "--reduce", "max", "--top", "2"]
    result = graphconv(*run)
    assert result.returncode == 0, result.stderr
    with open(out / "graphconv-maps.csv", newline="", encoding="utf-8") as file:
        rows = {row["map"]: row for row in csv.DictReader(file)}
    for name in ("a.png", "b.jpg"):
        alone = graphconv("run", digits_dir, "--image", folder / name, "--scales", "60,80", "--flip", "--reduce",
                          "max", "--output", tmp_path / "alone.npy")
        assert alone.returncode == 0, alone.stderr
        vector = np.load(out / f"{Path(name).stem}.npy")
        np.testing.assert_array_equal(vector, np.load(tmp_path / "alone.npy"))
        row = rows[f"{Path(name).stem}.npy"]
        assert row["shape"] == "1x11" and json.loads(row["made_with"])["scales"] == {
            "sizes": [60, 80], "flip": True, "reduce": "max"}
        best = [label for label, _ in json.loads(row["top"])]
        assert best == [str(i) if i < 10 else "background" for i in np.argsort(-vector[0], kind="stable")[:2]]
    assert "no map to make" in graphconv(*run, "--skip-existing").stdout
    other = graphconv(*[arg if arg != "60,80" else "60,90" for arg in run], "--skip-existing")
    assert "2 of 2 images ->" in other.stdout, "made with other scales: made again"


@pytest.mark.parametrize("extra, message", [
    (["--heatmap", "3"], "--scales gives each picture one class vector"),
    (["--tile", "64"], "--scales gives each picture one class vector"),
    (["--classes", "1,2"], "--scales gives each picture one class vector"),
])
def test_many_images_with_scales_refuse_what_a_vector_cannot_have(digits_dir, picture, tmp_path, extra, message):
    result = graphconv("run", digits_dir, "--images", picture / "page.png", "--output-dir", tmp_path / "out",
                       "--scales", "60", *extra)
    assert result.returncode == 2 and message in result.stderr and not (tmp_path / "out").exists()


def test_many_images_with_scales_refuse_a_classifier_as_written_and_name_a_tiff_image(digits_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    page = Image.open(ROOT / "examples" / "digits_page.png")
    page.crop((0, 0, 90, 80)).save(folder / "a.png")
    page.crop((0, 0, 90, 80)).save(folder / "scan.tif")
    unconverted = graphconv("run", SPECS / "digits.yaml", "--images", folder, "--output-dir", tmp_path / "o1",
                            "--scales", "60")
    assert unconverted.returncode == 2 and "compile the model first" in unconverted.stderr
    result = graphconv("run", digits_dir, "--images", folder, "--output-dir", tmp_path / "o2", "--scales", "60")
    assert result.returncode == 2 and "1 of 2 images ->" in result.stdout
    assert "scan.tif: --scales resizes a picture (JPEG, PNG, ...) read whole" in result.stderr
    one = graphconv("run", digits_dir, "--image", folder / "scan.tif", "--scales", "60")
    assert one.returncode == 2 and one.stderr.count("\n") == 1  # said as for a batch, with what to do instead
    assert "scan.tif: --scales resizes a picture (JPEG, PNG, ...) read whole; a TIFF or zarr image is read in " \
           "tiles at one resolution: map a slide without --scales, once per resolution wanted (--mpp" in one.stderr
    (folder / "a.png").unlink()  # TIFFs only: one error before any work, not the same one for each image
    (folder / "scan2.tif").write_bytes((folder / "scan.tif").read_bytes())
    slides = graphconv("run", digits_dir, "--images", folder, "--output-dir", tmp_path / "o3", "--scales", "60")
    assert slides.returncode == 2 and slides.stderr.count("\n") == 1 and not (tmp_path / "o3").exists()
    assert f"--images {folder}: all 2 of its images are TIFF or zarr: --scales resizes a picture" in slides.stderr


def test_many_images_top_ranks_each_image_s_classes_by_their_mean_over_its_map(model_dir, picture, tmp_path):
    """--top was refused with --images: a photo collection's per-image classes took a
    process per photo (1.35 s of start-up each)."""
    from graphconv.scales import top_classes

    digits = tmp_path / "digits-fcn"
    assert graphconv("compile", SPECS / "digits.yaml", "-o", digits).returncode == 0  # trained, with labels
    folder = tmp_path / "photos"
    folder.mkdir()
    page = Image.open(ROOT / "examples" / "digits_page.png")
    for i in range(2):
        page.crop((60 * i, 0, 60 * i + 90, 80)).save(folder / f"p{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "maps"
    result = graphconv("run", digits, "--images", folder, "--output-dir", out, "--top", "2", "--classes", "1,3,10")
    assert result.returncode == 2 and "broken.png" in result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith(str(folder))]
    assert len(lines) == 2
    for i in range(2):
        scores = np.load(out / f"p{i}.npy")[0].mean(axis=(1, 2))
        assert scores.max() > 0.1
        labels = ["1", "3", "background"]
        ranked = ", ".join(f"{label} {score:.4g}" for _, label, score in top_classes(scores, 2, labels))
        assert f"{folder / f'p{i}.png'}: {ranked}" in lines
    again = graphconv("run", digits, "--images", folder, "--output-dir", out, "--top", "2", "--classes", "1,3,10",
                      "--skip-existing")  # said nothing of the images it left out as mapped
    assert "2 of 3 images have their map" in again.stderr
    assert sorted(line for line in again.stdout.splitlines() if line.startswith(str(folder))) == sorted(lines)
    by_max = graphconv("run", digits, "--images", folder, "--output-dir", out, "--top", "2", "--top-by", "max",
                       "--classes", "1,3,10", "--skip-existing")  # a camera trap's animal in a corner: its best cell, not the frame's mean
    for i in range(2):
        scores = np.nanmax(np.load(out / f"p{i}.npy")[0], axis=(1, 2))
        ranked = ", ".join(f"{label} {score:.4g}" for _, label, score in top_classes(scores, 2, labels))
        assert f"{folder / f'p{i}.png'}: {ranked}" in by_max.stdout.splitlines()


@pytest.mark.parametrize("tile", [(), ("--tile", "48")])
def test_top_by_max_ranks_a_map_s_classes_by_their_best_cell(model_dir, picture, tmp_path, tile):
    """One --image, whole or tiled: --top-by max ranks by each class's best cell; the mean
    (the default) and max differ, and --top-by asks for --top."""
    from graphconv.scales import top_classes

    run = ["run", model_dir, "--image", picture / "page.png", *tile, "--output", tmp_path / "map.npy", "--top", "3"]
    computed = " (the computed ones)" if tile else ""
    for how, reduce in (("mean", np.mean), ("max", np.max)):
        result = graphconv(*run, "--top-by", how)
        assert result.returncode == 0, result.stderr
        scores = reduce(np.load(tmp_path / "map.npy")[0], axis=(1, 2))
        ranked = ", ".join(f"{label} {score:.4g}" for _, label, score in top_classes(scores, 3, None))
        said = {"mean": "mean score over", "max": "best score in"}[how]
        assert [line for line in result.stdout.splitlines() if line.startswith(f"top 3 classes by their {said} its ")
                and line.endswith(f" cells{computed}: {ranked}")], (ranked, result.stdout)
        (tmp_path / "map.npy").unlink()
    alone = graphconv("run", model_dir, "--image", picture / "page.png", "--top-by", "max")
    assert alone.returncode == 2 and "--top-by says how --top ranks the classes: give --top K too" in alone.stderr


def test_many_images_resize_each_picture_as_one_image_s_resize_does(model_dir, tmp_path):
    """--resize was refused with --images: photos of many sizes could not be brought to
    the scale the classifier was trained at (and those smaller than the crop failed).
    --resize S keeps each photo's aspect; each map is bit for bit --image --resize's, its
    cells placed on the photo as stored; --skip-existing redoes a map of another resize."""
    run = graphconv_in_process
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(5)
    sizes = {"wide.png": (40, 90), "tall.png": (120, 50), "small.png": (20, 24)}
    for name, size in sizes.items():
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(folder / name)
    tifffile.imwrite(folder / "scan.tif", rng.integers(0, 256, (60, 60), dtype=np.uint8))
    out = tmp_path / "maps"
    result = run("run", model_dir, "--images", folder, "--output-dir", out, "--resize", "48")
    assert result.returncode == 2 and "3 of 4 images" in result.stdout
    assert "scan.tif: --resize resizes a picture (JPEG, PNG, ...) read whole" in result.stderr
    for name in sizes:
        alone = tmp_path / f"{Path(name).stem}.npy"
        assert run("run", model_dir, "--image", folder / name, "--resize", "48", "--output", alone).returncode == 0
        np.testing.assert_array_equal(np.load(out / alone.name), np.load(alone))
    tiled = run("run", model_dir, "--image", folder / "tall.png", "--resize", "48", "--tile", "40",
                "--skip-background", "0.01", "--output", tmp_path / "tiled.npy")  # was refused for --resize
    assert tiled.returncode == 0 and "tiles: " in tiled.stderr, tiled.stderr
    np.testing.assert_allclose(np.load(tmp_path / "tiled.npy"), np.load(tmp_path / "tall.npy"), rtol=1e-5, atol=1e-6)
    # 48x108 and 115x48 (rounded, as --scales rounds), through LeNet's 32x32 crop at stride 4
    assert np.load(out / "wide.npy").shape[2:] == (5, 20) and np.load(out / "tall.npy").shape[2:] == (21, 5)
    tifs = tmp_path / "tifs"
    (folder / "scan.tif").unlink()
    assert run("run", model_dir, "--images", folder, "--output-dir", tifs, "--resize", "48",
               "--output-format", "tif").returncode == 0
    assert run("run", model_dir, "--image", folder / "wide.png", "--output", tmp_path / "wide.tif").returncode == 0
    stated, unresized = (json.loads(tifffile.TiffFile(path).pages[0].description.split("\n", 1)[1])
                         for path in (tifs / "wide.tif", tmp_path / "wide.tif"))
    assert stated["resize"] == [48] and "resize" not in unresized
    np.testing.assert_allclose(stated["cell_step_yx"], np.multiply(unresized["cell_step_yx"], [40 / 48, 90 / 108]))
    again = run("run", model_dir, "--images", folder, "--output-dir", tifs, "--resize", "48", "--output-format",
                "tif", "--skip-existing")
    assert again.returncode == 0 and "every image has its map" in again.stdout
    other = run("run", model_dir, "--images", folder, "--output-dir", tifs, "--resize", "64", "--output-format",
                "tif", "--skip-existing")
    assert other.returncode == 0 and "3 of 3 images" in other.stdout
    unresized = tmp_path / "unresized"
    assert "2 of 3 images" in run("run", model_dir, "--images", folder, "--output-dir", unresized, "--output-format",
                                     "tif").stdout  # small.png is smaller than the crop
    resized = run("run", model_dir, "--images", folder, "--output-dir", unresized, "--resize", "64", "--output-format",
                  "tif", "--skip-existing")  # a map made without --resize was kept as this run's
    assert resized.returncode == 0 and "3 of 3 images" in resized.stdout
    assert tifffile.imread(tifs / "small.tif").shape[-2:] == ((64 - 32) // 4 + 1, (77 - 32) // 4 + 1)


def test_many_images_of_a_classifier_as_written_resized_to_its_crop_are_classified(tmp_path):
    """--resize H W to the crop: a classifier spec as written (no compile) gives each photo
    its class vector, and --top its best classes, one line each."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(6)
    for i, size in enumerate([(50, 70), (33, 31)]):
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(folder / f"p{i}.png")
    result = graphconv_in_process("run", SPECS / "lenet.yaml", "--images", folder, "--output-dir", tmp_path / "v",
                                  "--resize", "32", "32", "--top", "1")
    assert result.returncode == 0, result.stderr
    model = Model.load(SPECS / "lenet.yaml")
    from graphconv.images import load_image
    as_tif = graphconv_in_process("run", SPECS / "lenet.yaml", "--images", folder, "--output-dir", tmp_path / "t",
                                  "--resize", "32", "32", "--output-format", "tif")  # tifffile's IndexError
    assert as_tif.returncode == 2 and "gives one class vector per image: --output-format npy" in as_tif.stderr
    for i in range(2):
        vector = model.run(load_image(str(folder / f"p{i}.png"), (32, 32), channels=1)[None])
        np.testing.assert_allclose(np.load(tmp_path / "v" / f"p{i}.npy"), vector, rtol=1e-5, atol=1e-6)
        assert f"p{i}.png: class {int(vector.argmax())} " in result.stdout


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_map(model_dir, picture, tmp_path):
    """Bit for bit the map the same tiles give without workers (the workers set numba up
    as the command does: they once compiled before the process was configured, with
    narrower vectors, and differed in the last bits). And it says nothing of Dask's HTTP
    port, which another cluster (here, a socket) may hold: "UserWarning: Port 8787 is
    already in use" leaked to stderr."""
    import contextlib
    import socket
    pytest.importorskip("distributed")
    whole = whole_map(model_dir, picture / "page.png", tmp_path)
    run = ["run", model_dir, "--image", picture / "tiled.tif", "--tile", "50"]
    assert graphconv(*run, "--output", tmp_path / "here.npy").returncode == 0
    with socket.socket() as taken:
        with contextlib.suppress(OSError):  # already taken: as good
            taken.bind(("", 8787))
            taken.listen()
        result = graphconv(*run, "--workers", "2", "--output", tmp_path / "d.npy")
    assert result.returncode == 0, result.stderr
    assert "already in use" not in result.stderr and "Warning" not in result.stderr, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), np.load(tmp_path / "here.npy"))
    np.testing.assert_allclose(np.load(tmp_path / "d.npy"), whole, rtol=1e-4, atol=1e-6)


def test_run_images_api_in_process(model_dir, picture, tmp_path):
    results = run_images(ModelRef(str(model_dir)), [str(picture / "page.png")], str(tmp_path / "o"),
                         MapOptions(reduce="argmax"), tile=60)
    assert results[0].error is None and results[0].shape[1] == 1
    assert np.load(tmp_path / "o" / "page_png.npy").dtype == np.uint16  # page.zarr is beside it


def test_images_on_a_cluster_go_to_the_paths_the_client_sees_and_a_map_it_cannot_see_is_an_error(
        model_dir, picture, tmp_path, monkeypatch):
    """On a scheduler the workers run in their own folders: relative image and output
    paths were resolved there (images "not found"; maps written into each worker's
    folder while the command said "5 of 5 images -> maps"), and a map written where
    the client cannot see it (an output folder the worker does not share) was a success."""
    from graphconv.cluster import _one_image_at, _seen_here

    shutil.copy(picture / "page.png", tmp_path / "page.png")
    monkeypatch.chdir(tmp_path)
    worker_folder = tmp_path / "worker"
    worker_folder.mkdir()
    (tmp_path / "maps").mkdir()
    client_paths = (str(tmp_path / "page.png"), str(tmp_path / "maps" / "page.npy"))
    monkeypatch.chdir(worker_folder)  # the worker's own folder
    result = _one_image_at(ModelRef(str(model_dir)), "page.png", "maps/page.npy", *client_paths, MapOptions(), 60)
    assert result.error is None and (result.image, result.output) == ("page.png", "maps/page.npy")
    assert (tmp_path / "maps" / "page.npy").exists() and not (worker_folder / "maps").exists()
    monkeypatch.chdir(tmp_path)
    assert _seen_here(result).error is None
    lost = _seen_here(replace(result, output="elsewhere/page.npy"))
    assert "a worker wrote this map, but it is not here" in lost.error and "shared file system" in lost.error
    unseen = _one_image_at(ModelRef(str(model_dir)), "page.png", "maps/p.npy", str(tmp_path / "gone.png"),
                           str(tmp_path / "maps" / "p.npy"), MapOptions(), 60)
    assert "image not found" in unseen.error and "(on the Dask worker on" in unseen.error
    assert f"which does not see {tmp_path / 'gone.png'}: the workers must reach the model" in unseen.error


@pytest.mark.parametrize("tile", [None, 60])
@pytest.mark.parametrize("suffix", [".tif", ".npy"])
def test_a_map_another_batch_wrote_while_this_one_ran_is_left_as_it_is(model_dir, picture, tmp_path, tile, suffix):
    """Two batches of like-named images (two cameras' cards) into one --output-dir at once
    each checked the names before any work, found them free, and replaced each other's
    maps, both saying every map was written. A map is renamed into place only if its
    name is as the batch found it (here: not there), checked under the folder's lock."""
    from graphconv.cluster import _one_image
    from graphconv.files import file_stamp

    (tmp_path / "maps").mkdir()
    output = tmp_path / "maps" / f"page{suffix}"
    output.write_bytes(b"the other batch's map")
    result = _one_image(ModelRef(str(model_dir)), str(picture / "page.png"), str(output), MapOptions(), tile,
                        found=None)
    assert "was written by another run while this one computed its map" in result.error
    assert output.read_bytes() == b"the other batch's map" and os.listdir(tmp_path / "maps") == [output.name]
    result = _one_image(ModelRef(str(model_dir)), str(picture / "page.png"), str(output), MapOptions(), tile,
                        found=file_stamp(output))  # as found before the work: this batch's to replace
    assert result.error is None and output.read_bytes() != b"the other batch's map"


def test_maps_another_batch_wrote_meanwhile_are_explained_once_a_batch():
    """Two whole batches into one folder at once: the losing one printed the same
    300-character explanation for every image."""
    from graphconv.cluster import WRITTEN_MEANWHILE, ImageResult
    from graphconv.tiled_cli import _error_line

    error = f"maps/{{}}.npy: {WRITTEN_MEANWHILE} (two batches into one --output-dir at once?): left as that run wrote it"
    explained = set()
    lines = [_error_line(ImageResult(f"photos/{name}.jpg", error=error.format(name)), explained) for name in "abc"]
    assert lines[0] == f"graphconv: photos/a.jpg: {error.format('a')}"
    assert lines[1] == f"graphconv: photos/b.jpg: maps/b.npy: {WRITTEN_MEANWHILE}: left as that run wrote it (see above)"
    assert len(lines[2]) < len(lines[0]) - 30 and "c.npy" in lines[2]
    other = _error_line(ImageResult("photos/d.jpg", error="cannot identify image file"), explained)
    assert other == "graphconv: photos/d.jpg: cannot identify image file"


@pytest.mark.parametrize("tile", [None, 60])
@pytest.mark.parametrize("suffix", [".tif", ".npy"])
def test_a_skip_existing_batch_keeps_a_map_another_run_made_meanwhile_as_it_would(model_dir, picture, tmp_path,
                                                                                   monkeypatch, tile, suffix):
    """Two array tasks given overlapping lists (or a batch started again before the first
    ended), both with --skip-existing: each found an image unmapped at its start, both
    computed it, and the second to finish refused to replace the first's map and exited
    2. A map another run made as this one would, before the image's turn or while it was
    computed, is kept: not computed again, not an error. One of another model is not."""
    from graphconv import cluster
    from graphconv.cluster import _one_image, output_names
    from graphconv.files import file_stamp

    out, image = tmp_path / "maps", str(picture / "page.png")
    [output] = output_names([image], str(out), suffix[1:])  # page_png: page.tif lies beside it
    ref, listed = ModelRef(str(model_dir)), MapOptions(listed_in=str(out))

    def another_run(options=MapOptions()):
        [made] = run_images(ref, [image], str(out), options, tile, output_format=suffix[1:])
        assert made.error is None

    another_run()  # before this image's turn
    before = file_stamp(output)
    result = _one_image(ref, image, output, listed, tile, found=None)
    assert result.error is None and result.made_meanwhile and file_stamp(output) == before
    assert result.shape == np.load(output).shape if suffix == ".npy" else len(result.shape) == 4

    os.remove(output)
    stamp_image, runs = cluster.image_stamp, []

    def stamp_while_another_run_maps_it(path):  # called as this run starts reading the image
        if not runs:
            runs.append(path)  # first: the other run stamps the image too
            another_run()
        return stamp_image(path)
    monkeypatch.setattr(cluster, "image_stamp", stamp_while_another_run_maps_it)
    result = _one_image(ref, image, output, listed, tile, found=None)
    assert result.error is None and result.made_meanwhile and runs
    assert _one_image(ref, image, output, MapOptions(), tile, found=None).error, "without --skip-existing: refused"

    os.remove(output)
    runs.clear()
    another_run = functools.partial(another_run, MapOptions(classes=(1,)))  # a map this run would not make
    result = _one_image(ref, image, output, listed, tile, found=None)
    assert "was written by another run while this one computed its map" in result.error


def test_cli_skip_existing_batch_says_which_maps_another_run_made_meanwhile(model_dir, picture, tmp_path,
                                                                           monkeypatch):
    from graphconv import cluster
    from graphconv.manifest import Manifest

    out, image = tmp_path / "maps", str(picture / "page.png")
    stamp_image, runs = cluster.image_stamp, []

    def stamp_while_another_run_maps_it(path):
        if not runs:
            runs.append(path)
            run_images(ModelRef(str(model_dir)), [image], str(out), MapOptions())
        return stamp_image(path)
    monkeypatch.setattr(cluster, "image_stamp", stamp_while_another_run_maps_it)
    result = graphconv_in_process("run", model_dir, "--images", image, "--output-dir", out, "--skip-existing")
    assert result.returncode == 0, result.stderr
    assert "note: 1 image had its map made meanwhile by another run into" in result.stderr
    assert "1 of 1 image ->" in result.stdout
    assert Manifest(out).image_of(str(out / "page_png.npy")) == os.path.abspath(image)


def test_run_images_in_one_process_maps_with_the_weights_as_they_are_now(picture, tmp_path):
    """A notebook maps, retrains and maps again in one process: the second batch uses
    the new weights, not the model the first one loaded."""
    for name in ("digits.yaml", "digits.labels.txt", "digits.npz"):
        shutil.copy(SPECS / name, tmp_path / name)
    ref, image = ModelRef(str(tmp_path / "digits.yaml")), [str(picture / "page.png")]
    options = MapOptions(crops=(8, 8))
    assert run_images(ref, image, str(tmp_path / "before"), options)[0].error is None
    weights = dict(np.load(tmp_path / "digits.npz", allow_pickle=False))
    weights["fc4.weight"] = -weights["fc4.weight"]
    np.savez(tmp_path / "retrained.npz", **weights)
    os.replace(tmp_path / "retrained.npz", tmp_path / "digits.npz")
    assert run_images(ref, image, str(tmp_path / "after"), options)[0].error is None
    fresh = graphconv("run", tmp_path / "digits.yaml", "--images", image[0], "--crops", 8, "--output-dir",
                      tmp_path / "fresh")
    assert fresh.returncode == 0, fresh.stderr
    after = np.load(tmp_path / "after" / "page_png.npy")
    np.testing.assert_array_equal(after, np.load(tmp_path / "fresh" / "page_png.npy"))
    assert not np.allclose(after, np.load(tmp_path / "before" / "page_png.npy"))


def test_inspect_prints_the_tile_plan(model_dir):
    result = graphconv("inspect", model_dir, "--input-size", "2000", "3000", "--tile", "256")
    assert result.returncode == 0, result.stderr
    assert "tile plan for 2000x3000 with --tile 256" in result.stdout
    assert "halo" in result.stdout and "x the whole-image pass's" in result.stdout and "peak memory" in result.stdout
    too_small = graphconv("inspect", model_dir, "--input-size", "2000", "3000", "--tile", "8")
    assert too_small.returncode == 2 and "too small for this network" in too_small.stderr
    assert too_small.stdout == ""  # not the whole table above the one-line error


def test_a_zarr_output_never_replaces_what_is_not_a_zarr_array(model_dir, picture, tmp_path):
    folder = tmp_path / "thesis.zarr"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    result = graphconv("run", model_dir, "--image", picture / "page.png", "--tile", "48", "--output", folder)
    assert result.returncode == 2 and "not a zarr array" in result.stderr
    assert (folder / "chapter1.tex").read_text() == "precious"
    result = graphconv("run", model_dir, "--image", picture / "page.zarr", "--output", picture / "page.zarr")
    assert result.returncode == 2 and "is the input image" in result.stderr
    assert zarr.open_array(str(picture / "page.zarr"), mode="r").shape == (150, 170)
    out = tmp_path / "map.zarr"
    for _ in range(2):  # a map it wrote is replaced by the next run
        result = graphconv("run", model_dir, "--image", picture / "page.png", "--tile", "48", "--output", out)
        assert result.returncode == 0, result.stderr


# ---- --crops streamed: the classifier on every crop of an image read a tile at a time ------------

@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """GATED (tests/nets.py), a squeeze-and-excitation classifier that cannot slide, and a
    70x90 RGB picture as PNG and tiled TIFF."""
    from nets import GATED
    folder = tmp_path_factory.mktemp("gated")
    (folder / "gated.yaml").write_text(GATED)
    pixels = (np.random.default_rng(5).random((70, 90, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / "rgb.png")
    tifffile.imwrite(folder / "rgb.tif", pixels, tile=(32, 32))
    return folder


def test_cli_crops_over_background_counts_only_the_crops_it_computes(gated, tmp_path):
    """--crops with --skip-background said the crops and GFLOP of every cell, those over
    glass too; the count is of the crops computed, the others said left out."""
    pixels = (np.random.default_rng(6).random((70, 90, 3)) * 120 + 60).astype(np.uint8)
    pixels[:, 45:] = 255  # white glass
    Image.fromarray(pixels).save(tmp_path / "half.png")
    result = graphconv("run", gated / "gated.yaml", "--image", tmp_path / "half.png", "--crops", "5",
                       "--skip-background", "--tile", "40", "--output", tmp_path / "m.npy")
    assert result.returncode == 0, result.stderr
    cells = np.load(tmp_path / "m.npy")[0, 0]
    left_out = int(np.isnan(cells).sum())
    assert 0 < left_out < cells.size
    assert (f"{cells.size} crops of 12x12, 5x5 pixels apart, {cells.size - left_out} of them computed ({left_out} "
            "left out): ") in result.stdout, result.stdout


def test_cli_crops_stream_tiles_of_a_lazy_image(gated, tmp_path):
    """A TIFF is read a tile at a time; --tile, zarr outputs, --classes and --reduce argmax
    give the map the whole-image --crops run gives, and each cell is its crop's scores."""
    spec, png, tif = gated / "gated.yaml", gated / "rgb.png", gated / "rgb.tif"
    result = graphconv("run", spec, "--image", png, "--crops", "5", "--output", tmp_path / "whole.npy")
    assert result.returncode == 0, result.stderr
    assert "tiles:" not in result.stderr
    whole = np.load(tmp_path / "whole.npy")
    assert whole.shape == (1, 3, (70 - 12) // 5 + 1, (90 - 12) // 5 + 1)
    classifier = Model.load(spec)
    x = open_source(png, 3, classifier.graph.meta.get("preprocess")).read(0, 0, 70, 90)
    np.testing.assert_allclose(whole[0, :, 3, 7], classifier.run(x[None, :, 15:27, 35:47])[0], rtol=1e-5, atol=1e-6)
    for image, out, extra in ((tif, tmp_path / "t.zarr", []), (png, tmp_path / "t.npy", ["--tile", "30"])):
        result = graphconv("run", spec, "--image", image, "--crops", "5", "--output", out, *extra)
        assert result.returncode == 0, result.stderr
        assert "tiles:" in result.stderr and f"{whole[0, 0].size} crops of 12x12, 5x5 pixels apart" in result.stdout
        got = zarr.open_array(str(out), mode="r")[:] if str(out).endswith(".zarr") else np.load(out)
        np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-6)
    result = graphconv("run", spec, "--image", tif, "--crops", "5", "--classes", "2,0", "--output", tmp_path / "c.npy")
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), whole[:, [2, 0]], rtol=1e-5, atol=1e-6)
    result = graphconv("run", spec, "--image", tif, "--crops", "5", "--reduce", "argmax", "--output", tmp_path / "a.npy")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy")[:, 0], whole.argmax(axis=1))


def test_cli_crops_on_an_image_smaller_than_the_crop_names_it(gated, tmp_path):
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.zeros((10, 40, 3), np.uint8))
    result = graphconv("run", gated / "gated.yaml", "--image", small, "--crops", "--output", tmp_path / "o.npy")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "small.tif: the image is 10x40, smaller than the classifier's 12x12 crop" in result.stderr
    assert not (tmp_path / "o.npy").exists()


def test_crops_on_many_images(gated, tmp_path):
    """--images with --crops: one crop map per image, tiled or whole, as `run --crops` gives it."""
    ref = ModelRef(str(gated / "gated.yaml"))
    images = [str(gated / "rgb.png"), str(gated / "rgb.tif")]
    for tile in (None, 40):
        results = run_images(ref, images, str(tmp_path / f"maps{tile}"), MapOptions(crops=(4, 6)), tile=tile)
        assert [r.error for r in results] == [None, None]
        assert [Path(r.output).name for r in results] == ["rgb_png.npy", "rgb_tif.npy"]  # one stem, two formats
        maps = [np.load(r.output) for r in results]
        assert maps[0].shape == (1, 3, (70 - 12) // 4 + 1, (90 - 12) // 6 + 1)
        np.testing.assert_allclose(maps[0], maps[1], rtol=1e-5, atol=1e-6)
    result = graphconv("run", gated / "gated.yaml", "--images", gated / "*.tif", "--crops", "--output-dir",
                       tmp_path / "cli")
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "cli" / "rgb_tif.npy").shape == (1, 3, (70 - 12) // 2 + 1, (90 - 12) // 2 + 1)
    Image.fromarray(np.zeros((8, 9, 3), np.uint8)).save(tmp_path / "tiny.png")
    [small] = run_images(ref, [str(tmp_path / "tiny.png")], str(tmp_path / "small"), MapOptions(crops=(4, 6)))
    assert small.error.endswith("--crops: the input is 8x9, smaller than the classifier's 12x12 crop"), small.error
    with pytest.raises(GraphconvError, match="smaller than the classifier's"):  # --traceback: raised, not one line
        run_images(ref, [str(tmp_path / "tiny.png")], str(tmp_path / "small"), MapOptions(crops=(4, 6), traceback=True))


@pytest.mark.slow
def test_dask_workers_map_crops_too(gated, tmp_path):
    pytest.importorskip("distributed")
    spec, tif = gated / "gated.yaml", gated / "rgb.tif"
    assert graphconv("run", spec, "--image", tif, "--crops", "4", "--output", tmp_path / "one.npy").returncode == 0
    result = graphconv("run", spec, "--image", tif, "--crops", "4", "--tile", "40", "--workers", "2",
                       "--output", tmp_path / "d.npy")
    assert result.returncode == 0, result.stderr
    one = np.load(tmp_path / "one.npy")  # a worker has one thread, so its sums may be ordered otherwise
    np.testing.assert_allclose(np.load(tmp_path / "d.npy"), one, rtol=1e-5, atol=2e-6 * np.abs(one).max())


def test_many_images_sharing_a_stem_get_distinct_maps_whatever_the_batch(tmp_path):
    """A photo's map name depended on the other photos of the batch: same.png alone wrote
    same.npy, and a later run over same.jpg replaced it. A namesake on disk in the same
    folder, in the batch or not, names both by format (numbered in the folder's order
    where the formats differ only in case: a.JPG and a.jpg refused the whole batch);
    other folders mirror below --output-dir; names that still meet are refused, naming
    both images."""
    from graphconv.cluster import output_names
    for name in ("a/slide.png", "a/slide.tif", "a/other.png", "b/slide.png", "a/.slide.jpg", "a/slide.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    names = output_names(["a/slide.png", "b/slide.png", "a/other.png"], "maps", base=".")
    assert names == ["maps/a/slide_png.npy", "maps/b/slide.npy", "maps/a/other.npy"]
    assert output_names(["a/slide.png"], "maps", base="a") == ["maps/slide_png.npy"], "alone, the same name"
    assert output_names(["a/slide.tif"], "maps", "tif", base="a") == ["maps/slide_tif.tif"]
    (tmp_path / "a" / "slide.PNG").write_bytes(b"")
    assert output_names(["a/slide.png", "a/slide.PNG", "a/slide.tif"], "maps", base=".") == [
        "maps/a/slide_png_2.npy", "maps/a/slide_png.npy", "maps/a/slide_tif.npy"]
    assert output_names(["a/slide.png"], "maps", base=".") == ["maps/a/slide_png_2.npy"], "whatever the batch"
    (tmp_path / "b" / "scan.ome.tif").write_bytes(b"")
    assert output_names(["b/scan.ome.tif"], "maps", "tif", base="b") == ["maps/scan.tif"], "not scan.ome.tif"
    with pytest.raises(Exception, match=r"b/slide.png and a/../b/slide.png would both write"):
        output_names(["b/slide.png", "a/../b/slide.png"], "maps")


def test_cli_many_images_mirror_their_folders_below_the_output_dir(model_dir, picture, tmp_path):
    """A library of 2023/01/IMG_0001.JPG and 2024/01/IMG_0001.JPG stopped the whole batch
    with a message naming neither; each map now has its photo's place in the tree, and
    two runs over one folder's namesakes keep both maps."""
    for name in ("lib/2023/01/IMG_0001.JPG", "lib/2024/01/IMG_0001.JPG", "lib/same.png", "lib/same.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.open(picture / "page.png").save(tmp_path / name, format="PNG" if name.endswith(".png") else "JPEG")
    result = graphconv("run", model_dir, "--images", "lib/**/*.JPG", "--output-dir", "maps", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(str(p.relative_to(tmp_path / "maps")) for p in (tmp_path / "maps").rglob("*.npy")) == [
        "2023/01/IMG_0001.npy", "2024/01/IMG_0001.npy"]
    for name in ("same.png", "same.jpg"):
        result = graphconv("run", model_dir, "--images", f"lib/{name}", "--output-dir", "two", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["graphconv-maps.csv", "same_jpg.npy", "same_png.npy"]
    Image.open(tmp_path / "lib/same.jpg").save(tmp_path / "lib/same.JPG", format="JPEG")  # a copy, 'JPG' < 'jpg'
    result = graphconv("run", model_dir, "--images", "lib", "--output-dir", "two", "--skip-existing", cwd=tmp_path)
    assert result.returncode == 0 and "2 of 3 images have their map in two" in result.stderr, result.stderr
    assert sorted(p.name for p in (tmp_path / "two").glob("*.npy")) == ["same_jpg.npy", "same_jpg_2.npy", "same_png.npy"]
    listed = {row["image"]: row["map"] for row in manifest_rows(tmp_path / "two")}
    assert listed[str(tmp_path / "lib/same.jpg")] == "same_jpg.npy", "the mapped photo keeps its map's name"
    assert listed[str(tmp_path / "lib/same.JPG")] == "same_jpg_2.npy"



def manifest_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "graphconv-maps.csv", newline="", encoding="utf-8") as fp:
        return list(csv.DictReader(fp))


def test_a_namesake_added_later_leaves_the_mapped_photo_its_map(model_dir, picture, tmp_path):
    """A photo review: lib/b.jpg mapped to b.npy, then lib/b.png added, and the rerun with
    --skip-existing mapped b.jpg again as b_jpg.npy beside its old map, with two written
    rows for it. The listed map keeps its name; the newcomer takes the format's; a third
    run finds both done."""
    (tmp_path / "lib").mkdir()
    Image.open(picture / "page.png").save(tmp_path / "lib" / "b.jpg", format="JPEG")
    run = ("run", model_dir, "--images", "lib/*", "--output-dir", "maps", "--skip-existing")
    assert graphconv(*run, cwd=tmp_path).returncode == 0
    before = (tmp_path / "maps" / "b.npy").stat().st_mtime_ns
    Image.open(picture / "page.png").save(tmp_path / "lib" / "b.png")
    result = graphconv(*run, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "maps").glob("*.npy")) == ["b.npy", "b_png.npy"]
    assert (tmp_path / "maps" / "b.npy").stat().st_mtime_ns == before, "b.jpg's map was made again"
    assert "at another place" not in result.stderr
    assert sorted((Path(r["image"]).name, r["map"]) for r in manifest_rows(tmp_path / "maps")) == [
        ("b.jpg", "b.npy"), ("b.png", "b_png.npy")]
    again = graphconv(*run, cwd=tmp_path)
    assert again.returncode == 0 and "2 of 2 images have their map" in again.stderr


def test_a_moved_library_s_kept_maps_name_where_the_photos_are_now(model_dir, picture, tmp_path):
    """After `mv lib moved`, a rerun with --skip-existing kept every map, and the list still
    named the photos' old paths."""
    (tmp_path / "lib").mkdir()
    for name in ("a.png", "c.png"):
        Image.open(picture / "page.png").save(tmp_path / "lib" / name)
    assert graphconv("run", model_dir, "--images", "lib/*", "--output-dir", "maps", cwd=tmp_path).returncode == 0
    (tmp_path / "lib").rename(tmp_path / "moved")
    result = graphconv("run", model_dir, "--images", "moved/*", "--output-dir", "maps", "--skip-existing",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 of 2 images have their map" in result.stderr
    assert "2 maps kept (such as maps/a.npy) were listed under a path their images are no longer at" in result.stderr
    assert sorted(r["image"] for r in manifest_rows(tmp_path / "maps")) == [
        str(tmp_path / "moved" / "a.png"), str(tmp_path / "moved" / "c.png")]


# ---- satellite scenes: many bands, values as stored ---------------------------------------------

SCENE_NET = """name: scene-net
input: {name: data, shape: [3, 20, 20]}
preprocess: {values: stored, scale: 0.0001, mean: [0.1, 0.1, 0.1], std: [0.05, 0.05, 0.05]}
layers:
  - {name: conv1, op: conv, out_channels: 8, kernel_size: 5}
  - {name: relu1, op: relu}
  - {name: pool1, op: maxpool, kernel_size: 2}
  - {name: fc2, op: fc, out_features: 4}
"""


@pytest.fixture(scope="module")
def scene_net(tmp_path_factory):
    """A compiled 3-band classifier trained on reflectances / 10000, and a 13-band scene."""
    folder = tmp_path_factory.mktemp("scene")
    (folder / "net.yaml").write_text(SCENE_NET)
    assert graphconv("compile", folder / "net.yaml", "-o", folder / "fcn").returncode == 0
    bands = np.random.default_rng(4).integers(0, 10000, (13, 70, 90), dtype=np.uint16)
    tifffile.imwrite(folder / "scene.tif", bands.transpose(1, 2, 0), tile=(32, 32), photometric="minisblack",
                     planarconfig="contig")
    return folder, bands


def test_cli_bands_of_a_scene_map_as_the_model_on_those_bands(scene_net, tmp_path):
    """--bands 4,3,2 of a 13-band scene, tiled: the compiled model on exactly those bands,
    read as stored and preprocessed as the spec says."""
    folder, bands = scene_net
    result = graphconv("run", folder / "fcn", "--image", folder / "scene.tif", "--bands", "4,3,2", "--tile", "48",
                       "--output", tmp_path / "map.npy", "--heatmap", "1", "--heatmap-out", tmp_path / "map.png")
    assert result.returncode == 0, result.stderr
    x = (bands[[3, 2, 1]].astype(np.float32) * np.float32(1e-4) - np.float32(0.1)) / np.float32(0.05)
    expected = Model.load(folder / "fcn").run(x[None])
    np.testing.assert_allclose(np.load(tmp_path / "map.npy"), expected, rtol=1e-4, atol=1e-5)
    assert Image.open(tmp_path / "map.png").mode == "RGB"


def test_a_logits_model_run_with_activation_sigmoid_maps_probabilities_and_its_map_says_so(scene_net, tmp_path):
    """A multi-label model exported as logits (BCEWithLogitsLoss), declared so on the
    command line: the tiled map is the logits' sigmoid, stated as such for `cells`, and
    --heatmap top hears that each class is a finding of its own."""
    folder, bands = scene_net
    result = graphconv("run", folder / "fcn", "--activation", "sigmoid", "--image", folder / "scene.tif",
                       "--bands", "4,3,2", "--tile", "48", "--output", tmp_path / "map.tif", "--heatmap", "top",
                       "--heatmap-out", tmp_path / "top.png")
    assert result.returncode == 0, result.stderr
    assert "ends in a sigmoid, each class a finding of its own" in result.stderr
    x = (bands[[3, 2, 1]].astype(np.float32) * np.float32(1e-4) - np.float32(0.1)) / np.float32(0.05)
    logits = Model.load(folder / "fcn").run(x[None])
    with tifffile.TiffFile(tmp_path / "map.tif") as tif:
        scores = tif.asarray()
        stated = json.loads(tif.pages[0].description.split("\n", 1)[1])
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-logits[0])), rtol=1e-4, atol=1e-6)
    assert stated["output_activation"] == "sigmoid" and stated["activation"] == "sigmoid"


def test_heatmap_bands_draw_the_heatmap_over_the_bands_chosen_each_stretched(scene_net, tmp_path):
    """A 13-band scene's heatmap was drawn over band 1 (coastal aerosol), grey: nothing
    showed where the map lay, and nothing said how to choose. The picture is now the
    bands asked, each stretched 2..98%, and the default says how to choose; a band the
    scene lacks is refused before any work."""
    from graphconv.images import stretched
    from graphconv.sources import thumbnail
    folder, bands = scene_net
    source = open_source(folder / "scene.tif", 3, {"values": "stored"}, bands=[4, 3, 2])
    for chosen in ([5, 6, 7], [8]):
        picture, scale = thumbnail(source, bands=chosen)
        assert scale == (1, 1)
        np.testing.assert_allclose(picture, stretched(bands[np.asarray(chosen) - 1].astype(np.float32)), atol=1e-3)
    common = ["run", folder / "fcn", "--image", folder / "scene.tif", "--bands", "4,3,2", "--heatmap", "1"]
    drawn = {}
    for chosen in ("5,6,7", "8", None):
        options = ["--heatmap-bands", chosen] if chosen else []
        result = graphconv(*common, *options, "--heatmap-out", tmp_path / f"{chosen}.png")
        assert result.returncode == 0, result.stderr
        assert "--heatmap-bands R,G,B" not in result.stderr  # the bands it takes, 4,3,2, make a picture
        drawn[chosen] = np.asarray(Image.open(tmp_path / f"{chosen}.png"))
    assert (drawn["5,6,7"] != drawn["8"]).any() and (drawn["8"] != drawn[None]).any()
    (tmp_path / "all.yaml").write_text("name: all-bands\ninput: {name: data, shape: [13, 8, 8]}\n"
                                       "preprocess: {values: stored, scale: 0.0001}\nlayers:\n"
                                       "  - {name: conv1, op: conv, out_channels: 2, kernel_size: 3}\n")
    every_band = graphconv("run", tmp_path / "all.yaml", "--image", folder / "scene.tif", "--heatmap", "1",
                           "--heatmap-out", tmp_path / "all.png")
    assert every_band.returncode == 0, every_band.stderr
    assert "drawn over the first of the 13 bands the network takes, grey: --heatmap-bands R,G,B" in every_band.stderr
    refused = graphconv(*common, "--heatmap-bands", "4,3,14", "--output", tmp_path / "map.npy")
    assert refused.returncode == 2 and "--heatmap-bands 4,3,14: the image has bands 1 to 13, not 14" in refused.stderr
    assert not (tmp_path / "map.npy").exists()


def test_a_zero_swath_border_without_a_no_data_tag_is_said_with_the_flag_that_leaves_it_out(scene_net, tmp_path):
    """A scene whose border outside the swath is 0 in every band, with no GDAL no-data
    tag, was mapped as data without a word. The run says what share of the pixels read
    were 0 in every band and names --nodata 0; with it, or a scene without such a
    border, nothing is said."""
    folder, bands = scene_net
    scene = bands.copy()
    scene[:, :, :50] = 0
    tifffile.imwrite(tmp_path / "swath.tif", scene, photometric="minisblack", planarconfig="separate")
    common = ["run", folder / "fcn", "--bands", "4,3,2", "--output", tmp_path / "map.npy"]
    unmarked = graphconv_in_process(*common, "--image", tmp_path / "swath.tif")
    assert unmarked.returncode == 0, unmarked.stderr
    said = re.search(r"(\d+)% of the pixels read are 0 in every band, and the image declares no no-data value.*"
                     r"--nodata 0 leaves the cells over them out", unmarked.stderr)
    assert said and 40 <= int(said.group(1)) <= 70, unmarked.stderr
    assert not np.isnan(np.load(tmp_path / "map.npy")).any()
    for options, left_out in ((["--image", tmp_path / "swath.tif", "--nodata", "0"], True),
                              (["--image", folder / "scene.tif"], False)):
        quiet = graphconv_in_process(*common, *options)
        assert quiet.returncode == 0 and "0 in every band" not in quiet.stderr, quiet.stderr
        assert np.isnan(np.load(tmp_path / "map.npy")).any() == left_out


def test_a_map_states_the_no_data_value_of_its_image_that_left_cells_out(scene_net, tmp_path):
    """Its `cells_left_out` records the options given: a GeoTIFF's own no-data tag left
    cells out while the map said `"nodata": null`."""
    folder, bands = scene_net
    scene = bands.copy()
    scene[:, :, :50] = 0
    (tmp_path / "scenes").mkdir()
    tifffile.imwrite(tmp_path / "scenes" / "swath.tif", scene, photometric="minisblack", planarconfig="separate",
                     extratags=[(42113, 2, 2, "0", True)])
    common = ["run", folder / "fcn", "--bands", "4,3,2"]
    assert graphconv(*common, "--image", tmp_path / "scenes" / "swath.tif", "--tile", "40",
                     "--output", tmp_path / "tiled.zarr").returncode == 0
    stated = zarr.open_array(str(tmp_path / "tiled.zarr"), mode="r").attrs["graphconv"]
    assert stated["image_nodata"] == 0 and stated["cells_left_out"]["nodata"] is None
    assert graphconv(*common, "--images", tmp_path / "scenes", "--output-dir", tmp_path / "maps",
                     "--output-format", "tif").returncode == 0
    with tifffile.TiffFile(tmp_path / "maps" / "swath.tif") as tif:
        assert json.loads(tif.pages[0].description.split("\n", 1)[1])["image_nodata"] == 0


def test_a_gdal_nodata_tag_that_is_no_number_is_said_to_be_put_aside(scene_net, tmp_path):
    """GDAL_NODATA "abc": every pixel was read as data and nothing said so (tifffile's own
    warning is filtered out). One note, in a single run and in a batch; --nodata quiets it."""
    folder, bands = scene_net
    tifffile.imwrite(tmp_path / "odd.tif", bands.transpose(1, 2, 0), photometric="minisblack",
                     planarconfig="contig", extratags=[(42113, 2, 4, "abc", True)])
    common = ["run", folder / "fcn", "--bands", "4,3,2"]
    single = graphconv_in_process(*common, "--image", tmp_path / "odd.tif", "--output", tmp_path / "odd.npy")
    assert single.returncode == 0, single.stderr
    assert single.stderr.count("GDAL_NODATA tag 'abc' is not a number") == 1, single.stderr
    assert not np.isnan(np.load(tmp_path / "odd.npy")).any()
    batch = graphconv_in_process(*common, "--images", tmp_path / "odd.tif", "--output-dir", tmp_path / "maps")
    assert batch.returncode == 0 and "GDAL_NODATA tag 'abc' is not a number" in batch.stdout + batch.stderr
    given = graphconv_in_process(*common, "--image", tmp_path / "odd.tif", "--nodata", "0")
    assert given.returncode == 0 and "GDAL_NODATA" not in given.stderr


def test_an_internal_mask_marks_no_data_as_a_nan_would(scene_net, tmp_path):
    """A GDAL internal mask (a page of NewSubfileType 4, one a level, as cloud-optimised
    GeoTIFFs of JPEG carry) was passed over, its masked pixels read as data. They are
    no-data now: the map equals that of the same pixels with NaN where the mask is 0, at
    level 0 and at a coarser level, tiled or whole, and records the mask."""
    folder, bands = scene_net
    pixels = bands.transpose(1, 2, 0)[..., :3]  # (H, W, 3) uint16
    valid = np.ones(pixels.shape[:2], bool)
    valid[:, :45] = False  # the left half is no data
    valid[60:, 50:70] = False
    coarse, coarse_valid = pixels[::2, ::2], valid[::2, ::2]
    with tifffile.TiffWriter(tmp_path / "cog.tif") as tif:  # GDAL's order: image, mask, overview, overview's mask
        tif.write(pixels, photometric="minisblack", planarconfig="contig", tile=(32, 32))
        tif.write(valid, photometric="minisblack", subfiletype=4, tile=(32, 32), compression="zlib")
        tif.write(coarse, photometric="minisblack", planarconfig="contig", subfiletype=1, tile=(32, 32))
        tif.write(coarse_valid, photometric="minisblack", subfiletype=5, tile=(32, 32), compression="zlib")
    for name, stored, kept in (("nan.tif", pixels, valid), ("nan_l1.tif", coarse, coarse_valid)):
        floats = stored.astype(np.float32)  # the model reads values as stored
        floats[~kept] = np.nan
        tifffile.imwrite(tmp_path / name, floats, photometric="minisblack", planarconfig="contig")
    common = ["run", folder / "fcn", "--bands", "1,2,3"]
    for masked, level, tile in ((("--image", tmp_path / "cog.tif"), (), ()),
                                (("--image", tmp_path / "cog.tif"), ("--level", "1"), ()),
                                (("--image", tmp_path / "cog.tif"), (), ("--tile", "40"))):
        result = graphconv_in_process(*common, *masked, *level, *tile, "--output", tmp_path / "masked.zarr")
        assert result.returncode == 0, result.stderr
        assert "the image's GDAL internal mask" in result.stderr and "is an internal mask" not in result.stderr
        nan = tmp_path / ("nan_l1.tif" if level else "nan.tif")
        assert graphconv_in_process(*common, "--image", nan, *tile, "--output", tmp_path / "nan.npy").returncode == 0
        scores = zarr.open_array(str(tmp_path / "masked.zarr"), mode="r")
        np.testing.assert_array_equal(scores[...], np.load(tmp_path / "nan.npy"))
        assert np.isnan(scores[..., 0]).all() and not np.isnan(scores[..., -1]).any()
        assert scores.attrs["graphconv"]["image_nodata_mask"] == "internal"
        shutil.rmtree(tmp_path / "masked.zarr")
        (tmp_path / "nan.npy").unlink()


@pytest.mark.parametrize("planar, extra", [("contig", 2), ("separate", 1)])
def test_a_tiff_s_alpha_band_marks_its_no_data_as_gdal_s_mask_does(scene_net, tmp_path, planar, extra):
    """A GeoTIFF whose alpha band marks the swath (gdalwarp -dstalpha) had the area outside
    it scored as data (4900 cells of a review's scene): GDAL masks a dataset without an
    internal mask by its alpha band, 0 no data. The map equals that of the same pixels
    with NaN where alpha is 0, whole or tiled, and says what masked them; a fourth band
    of no stated meaning (ExtraSamples 0) masks nothing."""
    folder, bands = scene_net
    pixels = bands[:3]  # (3, H, W) uint16, read as stored
    alpha = np.full(pixels.shape[1:], 65535, np.uint16)
    alpha[:, :40] = 0
    alpha[50:, 60:] = 0
    alpha[10:20, 50:52] = 1  # any other alpha is data
    rgba = np.concatenate([pixels, alpha[None]])
    layout = {"planarconfig": planar, "photometric": "rgb", "tile": (32, 32)}
    tifffile.imwrite(tmp_path / "alpha.tif", rgba if planar == "separate" else rgba.transpose(1, 2, 0),
                     extrasamples=[extra], **layout)
    tifffile.imwrite(tmp_path / "fourth.tif", rgba if planar == "separate" else rgba.transpose(1, 2, 0),
                     extrasamples=[0], **layout)
    floats = pixels.astype(np.float32)
    floats[:, alpha == 0] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", floats.transpose(1, 2, 0), photometric="minisblack", planarconfig="contig")
    common = ["run", folder / "fcn", "--bands", "1,2,3"]
    for tile in ((), ("--tile", "40")):
        result = graphconv_in_process(*common, "--image", tmp_path / "alpha.tif", *tile, "--output",
                                      tmp_path / "alpha.zarr")
        assert result.returncode == 0, result.stderr
        assert "the image's alpha band 4 (0: no data, as GDAL masks it)" in result.stderr
        assert graphconv_in_process(*common, "--image", tmp_path / "nan.tif", *tile, "--output",
                                    tmp_path / "nan.npy").returncode == 0
        scores = zarr.open_array(str(tmp_path / "alpha.zarr"), mode="r")
        np.testing.assert_array_equal(scores[...], np.load(tmp_path / "nan.npy"))
        assert np.isnan(scores[..., 0]).all() and not np.isnan(scores[..., :5, -1]).any()
        assert scores.attrs["graphconv"]["image_nodata_mask"] == "alpha"
        shutil.rmtree(tmp_path / "alpha.zarr")
        (tmp_path / "nan.npy").unlink()
    result = graphconv_in_process(*common, "--image", tmp_path / "fourth.tif", "--output", tmp_path / "fourth.npy")
    assert result.returncode == 0 and "alpha band" not in result.stderr
    assert not np.isnan(np.load(tmp_path / "fourth.npy")).any()


def test_a_scene_s_gdal_scale_and_offset_are_noted_by_a_run_and_a_batch(scene_net, tmp_path):
    from test_sources import gdal_scaled_tiff

    folder, _ = scene_net
    (tmp_path / "photos").mkdir()
    gdal_scaled_tiff(tmp_path / "photos" / "scene.tif", (1e-4,) * 3, (-0.1,) * 3)
    said = "note: its GDAL metadata states a scale and offset (every band: stored x 0.0001 - 0.1)"
    result = graphconv_in_process("run", folder / "fcn", "--image", tmp_path / "photos" / "scene.tif", "--output",
                                  tmp_path / "map.npy")
    assert result.returncode == 0 and said in result.stderr, result.stderr
    result = graphconv_in_process("run", folder / "fcn", "--images", tmp_path / "photos", "--output-dir",
                                  tmp_path / "maps")
    assert result.returncode == 0 and "states a scale and offset (every band" in result.stderr, result.stderr


def test_an_rgba_tiff_s_note_says_its_alpha_marks_no_data(tmp_path):
    from graphconv.sources import channel_conversion, open_source

    rgba = np.random.default_rng(0).integers(1, 255, (40, 50, 4), np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=[2])
    source = open_source(tmp_path / "rgba.tif", 3, None)
    assert channel_conversion(source) == ("RGBA: the alpha (4th band) is left out for the RGB model; it marks the "
                                          "no-data pixels, alpha 0 (as GDAL's mask)")
    rgba[:10, :, 3] = 0
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=[2])
    _, mask = open_source(tmp_path / "rgba.tif", 3, None).read_masked(0, 0, 40, 50)
    np.testing.assert_array_equal(mask, np.broadcast_to(rgba[..., 3] == 0, (3, 40, 50)))


def test_an_internal_mask_of_no_level_s_size_is_said_to_be_unread_and_the_way_the_note_gives_it_works(
        scene_net, tmp_path):
    """A mask page of another size than the level read (a mask of level 0 alone, read at
    level 1) is not read: the note names the page and how to give it as --mask; done so,
    the cells it masks are left out."""
    folder, bands = scene_net
    pixels = bands.transpose(1, 2, 0)
    valid = np.full(pixels.shape[:2], 255, np.uint8)
    valid[:, :45] = 0  # the left half is no data
    with tifffile.TiffWriter(tmp_path / "cog.tif") as tif:
        tif.write(pixels, photometric="minisblack", planarconfig="contig", tile=(32, 32))
        tif.write(valid > 0, photometric="minisblack", subfiletype=4, tile=(32, 32), compression="zlib")
        tif.write(pixels[::2, ::2], photometric="minisblack", planarconfig="contig", subfiletype=1, tile=(32, 32))
    common = ["run", folder / "fcn", "--bands", "4,3,2", "--image", tmp_path / "cog.tif", "--level", "1"]
    result = graphconv_in_process(*common, "--output", tmp_path / "plain.npy")
    assert result.returncode == 0, result.stderr
    note = [line for line in result.stderr.splitlines() if "internal mask" in line]
    assert len(note) == 1 and "its page 1 is an internal mask (GDAL's) not of the size of the level read" in note[0]
    written = re.search(r"tifffile\.imwrite\('mask\.tif', tifffile\.imread\(IMAGE, key=1\), "
                        r"photometric='minisblack'\)", note[0]).group(0)
    exec(written.replace("IMAGE", repr(str(tmp_path / "cog.tif"))).replace("'mask.tif'", repr(str(tmp_path / "m.tif"))),
         {"tifffile": tifffile})
    masked = graphconv_in_process(*common, "--mask", tmp_path / "m.tif", "--output", tmp_path / "masked.npy")
    assert masked.returncode == 0 and "internal mask" not in masked.stderr, masked.stderr
    scores = np.load(tmp_path / "masked.npy")
    assert np.isnan(scores[..., 0]).all() and not np.isnan(scores[..., -1]).any()


def test_cli_many_scenes_take_bands_and_downsample_too(scene_net, tmp_path):
    folder, _ = scene_net
    single = tmp_path / "single.npy"
    assert graphconv("run", folder / "fcn", "--image", folder / "scene.tif", "--bands", "8,4,3", "--downsample", "2",
                     "--output", single).returncode == 0
    result = graphconv("run", folder / "fcn", "--images", folder / "*.tif", "--bands", "8,4,3", "--downsample", "2",
                       "--output-dir", tmp_path / "maps")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "maps" / "scene.npy"), np.load(single))


@pytest.mark.parametrize("args, message", [
    (["--bands", "4,3,2", "--input", "x.npy"], "--bands picks bands of an image: give --image or --images"),
    (["--image", "scene.tif"], "scene.tif: has 13 bands; the model takes 3: pick them with --bands"),
    (["--image", "scene.tif", "--bands", "4,3,20"], "the image has bands 1 to 13, not 20"),
    (["--image", "scene.tif", "--bands", "4,0,2"], "--bands: expected positive integers"),
    (["--image", "scene.tif", "--bands", "2,2,3"], "--bands 2,2,3: band 2 is listed more than once; list each band "
                                                   "once (one band in every channel is --bands 2,2,2)"),
])
def test_cli_bands_errors_exit_2_naming_what_is_wrong(scene_net, tmp_path, args, message):
    folder, _ = scene_net
    np.save(tmp_path / "x.npy", np.zeros((3, 20, 20), np.float32))
    result = graphconv("run", folder / "fcn", *args, "--output", tmp_path / "out.npy", cwd=folder)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.npy").exists()


def test_cli_one_band_in_every_channel_is_no_duplicate(scene_net, tmp_path):
    """--bands 4,4,4 feeds one band (as grey) to each of an RGB network's channels: meant,
    not the typo a band repeated among others (2,2,3) is."""
    folder, _ = scene_net
    result = graphconv("run", folder / "fcn", "--image", "scene.tif", "--bands", "4,4,4", "--output",
                       tmp_path / "out.npy", cwd=folder)
    assert result.returncode == 0, result.stderr


def test_cli_tif_map_of_a_geotiff_scene_lands_on_its_ground(scene_net, tmp_path):
    """A GeoTIFF scene's map written as .tif: the .npy map's values, one band a class,
    georeferenced so that cell (0, 0) is centred on the first crop, and its class means
    printed by --top from the same run."""
    from graphconv.georef import read_georeference

    folder, bands = scene_net
    tags = [(33550, 12, 3, (10.0, 10.0, 0.0), True), (33922, 12, 6, (0, 0, 0, 500000.0, 4600000.0, 0.0), True),
            (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True)]
    tifffile.imwrite(tmp_path / "geo.tif", bands, photometric="minisblack", planarconfig="separate",
                     extratags=tags)
    common = ["run", folder / "fcn", "--image", tmp_path / "geo.tif", "--bands", "4,3,2", "--tile", "48"]
    result = graphconv(*common, "--output", tmp_path / "map.tif", "--top", "2")
    assert result.returncode == 0, result.stderr
    assert "map georeferenced as the image, cells of 20 x 20 in the image's map units" in result.stderr
    assert graphconv(*common, "--output", tmp_path / "map.npy").returncode == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "map.tif"), np.load(tmp_path / "map.npy")[0])
    geo = read_georeference(str(tmp_path / "map.tif"))
    # the crop is 20x20 at stride 2: cell (0, 0)'s corner is 10 - 1 pixels in
    np.testing.assert_allclose(geo.affine, [[20.0, 0.0, 500090.0], [0.0, -20.0, 4599910.0]])
    assert "(the computed ones): class" in result.stdout
    assert not list(tmp_path.glob(".*partial*"))
    many = graphconv("run", folder / "fcn", "--images", tmp_path / "geo.tif", "--bands", "4,3,2",
                     "--output-dir", tmp_path / "maps", "--output-format", "tif")
    assert many.returncode == 0, many.stderr
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "maps" / "geo.tif"), np.load(tmp_path / "map.npy")[0])
    np.testing.assert_allclose(read_georeference(str(tmp_path / "maps" / "geo.tif")).affine, geo.affine)
    before = (tmp_path / "geo.tif").read_bytes()
    refused = graphconv("run", folder / "fcn", "--images", tmp_path / "geo.tif", "--bands", "4,3,2",
                        "--output-dir", tmp_path, "--output-format", "tif")
    assert refused.returncode == 2 and "the map of geo.tif would replace that image" in refused.stderr
    assert (tmp_path / "geo.tif").read_bytes() == before
    (tmp_path / "pngs").mkdir()
    (tmp_path / "out").mkdir()  # a scene where a map would go: not among the images, still the user's
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "pngs" / "geo.png")
    (tmp_path / "out" / "geo.tif").write_bytes(before)
    refused = graphconv("run", folder / "fcn", "--images", tmp_path / "pngs" / "*.png", "--output-dir",
                        tmp_path / "out", "--output-format", "tif")
    assert refused.returncode == 2 and "geo.tif: is already there and is not a map graphconv wrote" in refused.stderr
    assert (tmp_path / "out" / "geo.tif").read_bytes() == before
    (tmp_path / "pngs" / "geo.tif").write_bytes(before)  # beside its namesake image: both named by format
    named = graphconv("run", folder / "fcn", "--images", tmp_path / "pngs" / "*.png", "--output-dir",
                      tmp_path / "pngs", "--output-format", "tif")
    assert named.returncode == 0 and (tmp_path / "pngs" / "geo_png.tif").exists(), named.stderr
    assert (tmp_path / "pngs" / "geo.tif").read_bytes() == before
    again = graphconv("run", folder / "fcn", "--images", tmp_path / "geo.tif", "--bands", "4,3,2",
                      "--output-dir", tmp_path / "maps", "--output-format", "tif")
    assert again.returncode == 0, again.stderr  # its own maps it replaces


def test_cli_tif_map_of_a_downsampled_scene_keeps_the_ground_exact(scene_net, tmp_path):
    """70x90 pixels read 3x coarser are 23x30 (the last row fills no block); each map
    cell still spans exactly 3 x stride pixels of 10 m."""
    from graphconv.georef import read_georeference

    folder, bands = scene_net
    tags = [(33550, 12, 3, (10.0, 10.0, 0.0), True), (33922, 12, 6, (0, 0, 0, 500000.0, 4600000.0, 0.0), True),
            (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True)]
    tifffile.imwrite(tmp_path / "geo.tif", bands, photometric="minisblack", planarconfig="separate",
                     extratags=tags)
    result = graphconv("run", folder / "fcn", "--image", tmp_path / "geo.tif", "--bands", "4,3,2", "--downsample",
                       "3", "--output", tmp_path / "map.tif")
    assert result.returncode == 0, result.stderr
    geo = read_georeference(str(tmp_path / "map.tif"))
    # a 20x20 crop at stride 2 in pixels 3x coarser: cell (0, 0)'s corner 9 of those pixels in
    np.testing.assert_allclose(geo.affine, [[60.0, 0.0, 500270.0], [0.0, -60.0, 4599730.0]])


def test_cli_tif_map_of_a_picture_and_vectors_refused(model_dir, picture, tmp_path):
    result = graphconv("run", model_dir, "--image", picture / "page.png", "--output", tmp_path / "map.tif")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "map.tif"),
                                  whole_map(model_dir, picture / "page.png", tmp_path)[0])
    np.save(tmp_path / "x.npy", np.zeros((1, 32, 32), np.float32))
    refused = graphconv("run", SPECS / "lenet.yaml", "--input", tmp_path / "x.npy", "--output", tmp_path / "v.tif")
    assert refused.returncode == 2 and "a .tif or .zarr output holds a map; this run gives a vector" in refused.stderr
    assert not (tmp_path / "v.tif").exists()


def test_cli_a_scene_s_no_data_is_left_out_by_default_and_other_cells_are_exact(scene_net, tmp_path):
    """A scene whose left part is outside the swath (GDAL's no-data value 0 in every
    band). Without --skip-background its no-data went into the network as pixels and
    those cells got confident classes, silently. Now, by default: a cell more than half
    of whose crop is no-data is NaN, with a note saying how many and why, whatever the
    tiling (and the same with --skip-background); a cell whose crop holds no no-data is
    exactly the cell of the run that knows no no-data; --compute-nodata computes all."""
    folder, bands = scene_net
    scene = bands.copy()
    scene[:, :, :50] = 0
    tifffile.imwrite(tmp_path / "swath.tif", scene, photometric="minisblack", planarconfig="separate",
                     extratags=[(42113, 2, 2, "0", True)])
    tifffile.imwrite(tmp_path / "plain.tif", scene, photometric="minisblack", planarconfig="separate")
    common = ["run", folder / "fcn", "--bands", "4,3,2"]
    maps = {}
    for name, image, extra in (("tiled", "swath.tif", ["--tile", "24"]), ("whole", "swath.tif", []),
                               ("skip", "swath.tif", ["--skip-background", "--tile", "40"]),
                               ("plain", "plain.tif", ["--tile", "24"]), ("all", "swath.tif", ["--compute-nodata"])):
        result = graphconv(*common, "--image", tmp_path / image, *extra, "--output", tmp_path / f"{name}.npy")
        assert result.returncode == 0, result.stderr
        maps[name] = np.load(tmp_path / f"{name}.npy")
        if name in ("tiled", "whole"):
            assert re.search(r"note: \d+ of \d+ cells? \(\d+%\) (?:is|are) not computed \(NaN in the map\): more "
                             r"than 50% of each one's crop is no-data \(the image's no-data value 0\)",
                             result.stderr), result.stderr
        if name in ("plain", "all"):
            assert "not computed" not in result.stderr
    rows, cols = maps["tiled"].shape[2:]
    missing = (scene[[3, 2, 1]] == 0).all(axis=0)  # a pixel is no-data where every band read is (GDAL's dataset mask)
    share = np.array([[missing[2 * r:2 * r + 20, 2 * c:2 * c + 20].mean() for c in range(cols)]
                      for r in range(rows)])
    np.testing.assert_array_equal(np.isnan(maps["tiled"][0, 0]), share > 0.5)
    for name in ("whole", "skip"):
        np.testing.assert_array_equal(maps[name], maps["tiled"])
    clean = share == 0
    assert clean.any() and (share > 0.5).any() and ((share > 0) & (share <= 0.5)).any()
    np.testing.assert_array_equal(maps["tiled"][:, :, clean], maps["plain"][:, :, clean])
    assert not np.isnan(maps["all"]).any()
    np.testing.assert_array_equal(maps["all"][:, :, share <= 0.5], maps["tiled"][:, :, share <= 0.5])
    batch = graphconv(*common, "--images", tmp_path / "swath.tif", "--output-dir", tmp_path / "batch")
    assert batch.returncode == 0, batch.stderr  # an --images batch leaves out the same cells (it computed them)
    np.testing.assert_array_equal(np.load(tmp_path / "batch" / "swath.npy"), maps["tiled"])


def test_skip_background_on_a_scene_with_no_data_says_it_does_nothing_and_is_not_part_of_the_job(
        scene_net, tmp_path, monkeypatch, capsys):
    """A raster with no-data is judged by its no-data alone, with or without
    --skip-background: the flag changed nothing (the map bit for bit the same), yet the
    map recorded it, --resume without it was refused as another job, and the final line
    said the tiles left out for no-data were 'over background only'. Now one note says
    the flag does nothing there; the job and the map are the run's without it; the
    counts say no-data."""
    from graphconv.cli import main

    folder, bands = scene_net
    scene = bands.copy()
    scene[:, :, :50] = 0
    tifffile.imwrite(tmp_path / "swath.tif", scene, photometric="minisblack", planarconfig="separate",
                     extratags=[(42113, 2, 2, "0", True)])
    common = ["run", str(folder / "fcn"), "--bands", "4,3,2", "--image", str(tmp_path / "swath.tif"), "--tile", "24"]
    assert main([*common, "--output", str(tmp_path / "plain.zarr")]) == 0
    capsys.readouterr()
    _stop_after(monkeypatch, 2)
    assert main([*common, "--skip-background", "--output", str(tmp_path / "map.zarr"), "--resume"]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*common, "--output", str(tmp_path / "map.zarr"), "--resume"]) == 0  # was refused: another job
    captured = capsys.readouterr()
    assert "resume: 2 of" in captured.err
    blank = int(re.search(r"(\d+) of \d+ tiles? holds? only such cells", captured.err).group(1))
    assert blank and f"{blank} over no-data only" in captured.out and "background only" not in captured.out
    assert main([*common, "--skip-background", "--output", str(tmp_path / "skip.zarr")]) == 0
    err = capsys.readouterr().err
    assert err.count("note: --skip-background does nothing here") == 1, err
    assert "(the image's no-data value 0)" in err
    plain, skip = zarr.open_array(str(tmp_path / "plain.zarr")), zarr.open_array(str(tmp_path / "skip.zarr"))
    np.testing.assert_array_equal(skip[:], plain[:])
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "map.zarr"))[:], plain[:])
    assert dict(skip.attrs) == dict(plain.attrs)


def test_cli_top_over_a_scene_of_no_data_alone_says_nothing_was_computed(scene_net, tmp_path):
    """Every cell left out: --top printed numpy's 'Mean of empty slice' warning and NaN scores."""
    folder, bands = scene_net
    tifffile.imwrite(tmp_path / "void.tif", np.zeros_like(bands), photometric="minisblack", planarconfig="separate",
                     extratags=[(42113, 2, 2, "0", True)])
    result = graphconv("run", folder / "fcn", "--bands", "4,3,2", "--image", tmp_path / "void.tif", "--top", "3")
    assert result.returncode == 0, result.stderr
    assert "--top: no cell was computed" in result.stdout and "Warning" not in result.stderr, result.stderr


@pytest.mark.parametrize("image, factor, described", [
    ("tiled.tif", "2", "averaged in 2x2 blocks, 2x coarser"), ("page.png", "2", "averaged in 2x2 blocks, 2x coarser"),
    ("page.zarr", "2", "averaged in 2x2 blocks, 2x coarser"),
    ("tiled.tif", "2.5", "area-averaged over 2.5x2.5 squares, 2.5x coarser"),
    ("page.png", "1.3", "area-averaged over 1.3x1.3 squares, 1.3x coarser")])
def test_cli_downsample_maps_the_area_averaged_image(model_dir, picture, tmp_path, image, factor, described):
    """--downsample F, in tiles: the map of the image area-averaged F times coarser (2x2
    blocks for F = 2, its odd last row and column left out), as that image run whole
    gives it."""
    from test_sources import area_reference

    pixels = np.asarray(Image.open(picture / "page.png"), np.float32)[None]
    coarse = area_reference(pixels, float(factor)).astype(np.float32)
    np.save(tmp_path / "coarse.npy", coarse[None])
    assert graphconv("run", model_dir, "--input", tmp_path / "coarse.npy", "--output", tmp_path / "want.npy",
                     "--full-map").returncode == 0
    result = graphconv("run", model_dir, "--image", picture / image, "--downsample", factor, "--tile", "40",
                       "--output", tmp_path / "got.npy")
    assert result.returncode == 0, result.stderr
    assert f"image: {coarse.shape[1]}x{coarse.shape[2]} pixels, {described} than level 0" in result.stderr
    got = np.load(tmp_path / "got.npy")
    np.testing.assert_allclose(got, np.load(tmp_path / "want.npy")[:, :, :got.shape[2], :got.shape[3]],
                               rtol=1e-4, atol=1e-5)


def test_cli_an_ome_zarr_slide_at_its_classifier_s_pixel_size(model_dir, tmp_path):
    """--mpp 1.0 of a 0.25 um/px OME-Zarr: its level 2, in tiles, the map that level's
    pixels saved as a PNG give; its heatmap drawn over the same level."""
    from test_sources import write_ome_zarr

    levels = write_ome_zarr(tmp_path / "slide.ome.zarr", channels=1)
    Image.fromarray(levels[2][0]).save(tmp_path / "level2.png")
    result = graphconv("run", model_dir, "--image", tmp_path / "slide.ome.zarr", "--mpp", "1.0", "--tile", "48",
                       "--heatmap", "top", "--heatmap-out", tmp_path / "top.png", "--output", tmp_path / "map.npy")
    assert result.returncode == 0, result.stderr
    assert "level 2 of a 3-level pyramid, 4x coarser than level 0, 1 µm per pixel (--mpp 1)" in result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "map.npy"), whole_map(model_dir, tmp_path / "level2.png", tmp_path),
                               rtol=1e-4, atol=1e-6)
    assert Image.open(tmp_path / "top.png").size[0] >= levels[2].shape[2]


def test_cli_maps_say_where_their_cells_stand_on_the_slide(model_dir, tmp_path):
    """--mpp 0.6 of a 0.25 µm/px slide: level 1 (0.5 µm) read 1.2x coarser, 2.4 level-0
    pixels a pixel. Cell (r, c) is the crop at (r, c) x stride of what was read: its
    centre, in level-0 pixels, is what the run prints and the .zarr and .tif maps carry."""
    from test_sources import write_aperio

    slide = write_aperio(tmp_path / "slide.svs", channels=1)
    top, left, bottom, right = Model.load(model_dir).cell_box(3, 5)
    centre = (2.4 * (top + bottom) / 2, 2.4 * (left + right) / 2)
    for output in ("map.zarr", "map.tif"):
        result = graphconv("run", model_dir, "--image", slide, "--mpp", "0.6", "--output", tmp_path / output)
        assert result.returncode == 0, result.stderr
        line = next(line for line in result.stderr.splitlines() if line.startswith("cells: "))
        terms = re.findall(r"([\d.]+) \+ ([\d.]+) [rc]", line)
        (first_y, step_y), (first_x, step_x) = [map(float, pair) for pair in terms]
        assert (first_y + 3 * step_y, first_x + 5 * step_x) == pytest.approx(centre)
        stated = (dict(zarr.open_array(str(tmp_path / output), mode="r").attrs)["graphconv"] if output == "map.zarr"
                  else json.loads(tifffile.TiffFile(tmp_path / output).pages[0].description.split("\n", 1)[1]))
        assert [stated["first_cell_centre_yx"][a] + (3, 5)[a] * stated["cell_step_yx"][a] for a in (0, 1)] \
            == pytest.approx(centre)
        assert stated["microns_per_pixel"] == 0.25


@pytest.mark.parametrize("first, said", [((224.0, 224.0), "224 is the corner between pixels 223 and 224"),
                                         ((33.5, 33.5), "33.5 is pixel 33's centre"),
                                         ((33.6, 16.0), "33.6 lies in pixel 33; 16 is the corner between pixels 15 "
                                                        "and 16")])
def test_the_cells_line_counts_in_the_maps_pixel_coordinates(first, said):
    """"centred on pixel 224" read as pixel 224's centre, where the maps' attributes
    count pixel k as spanning k..k+1 (224 is a corner): the line says so."""
    from graphconv.georef import CellPlacement

    line = CellPlacement(first, (64.0, 64.0), 0.25).describe()
    assert "centred on pixel" not in line and "pixel k spans k..k+1" in line
    assert f"({said}); cells 16 µm apart" in line
    assert f"= ({first[0]:g} + 64 r, {first[1]:g} + 64 c)" in line


def test_cli_a_pyramid_level_read_coarser_still(model_dir, tmp_path):
    """--level 1 --downsample 2 of a 3-level pyramid: level 1's pixels averaged in 2x2
    blocks, 4x coarser than level 0; its heatmap drawn from the pyramid's overview."""
    pytest.importorskip("imagecodecs")
    from test_sources import write_pyramid

    write_pyramid(tmp_path / "slide.tif", channels=1)
    result = graphconv("run", model_dir, "--image", tmp_path / "slide.tif", "--level", "1", "--downsample", "2",
                       "--heatmap", "top", "--heatmap-out", tmp_path / "top.png", "--output", tmp_path / "map.npy")
    assert result.returncode == 0, result.stderr
    assert ("image: 75x100 pixels, level 1 of a 3-level pyramid, averaged in 2x2 blocks, 4x coarser than "
            "level 0") in result.stderr
    assert Image.open(tmp_path / "top.png").size[0] >= 100


@pytest.mark.parametrize("args, message", [
    (["--input", "x.npy", "--downsample", "2"], "--downsample reads an image coarser: give --image or --images"),
    (["--image", "page.png", "--downsample", "2", "--resize", "40", "40"], "--downsample and --resize/--scales"),
    (["--image", "page.png", "--downsample", "400"], "--downsample 400: the image is 150x170, smaller than one block"),
    (["--image", "page.png", "--downsample", "0.5"], "argument --downsample: expected a factor of at least 1, got '0.5'"),
])
def test_cli_downsample_errors(model_dir, picture, tmp_path, args, message):
    np.save(tmp_path / "x.npy", np.zeros((1, 32, 32), np.float32))
    args = [str(picture / a) if a == "page.png" else str(tmp_path / a) if a == "x.npy" else a for a in args]
    result = graphconv("run", model_dir, *args, "--output", tmp_path / "out.npy")
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_cli_mpp_reads_the_slide_at_the_classifier_s_pixel_size(model_dir, tmp_path):
    """--mpp 1.0 on a 0.25 um/px slide with levels 2x and 4x coarser: level 2, the same
    map as --level 2 gives; --mpp 2.0: level 2 averaged in 2x2 blocks; --mpp 0.6: level 1
    (0.5) area-averaged 1.2x coarser."""
    from test_sources import write_aperio

    slide = write_aperio(tmp_path / "slide.svs", channels=1)
    for mpp, same in (("1.0", ["--level", "2"]), ("2.0", ["--level", "2", "--downsample", "2"]),
                      ("0.6", ["--level", "1", "--downsample", "1.2"])):
        result = graphconv("run", model_dir, "--image", slide, "--mpp", mpp, "--output", tmp_path / f"mpp{mpp}.npy")
        assert result.returncode == 0, result.stderr
        assert f"{float(mpp):g} µm per pixel (--mpp {float(mpp):g})" in result.stderr
        same_map = tmp_path / f"same{mpp}.npy"  # one name a shape: a .npy is replaced only by its own shape
        assert graphconv("run", model_dir, "--image", slide, *same, "--output", same_map).returncode == 0
        np.testing.assert_array_equal(np.load(tmp_path / f"mpp{mpp}.npy"), np.load(same_map))
    refused = graphconv("run", model_dir, "--image", slide, "--mpp", "0.5", "--level", "1")
    assert refused.returncode == 2 and "--mpp picks the level and the downsampling itself" in refused.stderr
    finer = graphconv("run", model_dir, "--image", slide, "--mpp", "0.23", "--output", tmp_path / "finer.npy")
    assert finer.returncode == 0, finer.stderr  # read as level 0 is: within 15% of its 0.25 µm pixels
    assert ("0.25 µm per pixel (--mpp 0.23: 9% coarser, the slide's finest pixels; graphconv does not enlarge "
            "images)") in finer.stderr


def test_a_slide_of_pixels_not_square_is_said_so_not_read_as_one_of_no_size(model_dir, tmp_path):
    """A slide whose file states pixels of 0.25 by 0.31 µm ran as one of no stated size:
    no word of it, its map's cells of no size in µm, until --mpp was refused."""
    from test_sources import OME_PIXELS

    slide = tmp_path / "slide.ome.tif"
    tifffile.imwrite(slide, np.zeros((48, 64, 3), np.uint8), photometric="rgb", metadata=None,
                     description=OME_PIXELS.format(sizes='PhysicalSizeX="0.31" PhysicalSizeY="0.25"'))
    result = graphconv_in_process("run", model_dir, "--image", slide, "--output", tmp_path / "m.npy")
    assert result.returncode == 0, result.stderr
    assert ("image: 48x64 pixels, pixels of 0.25 µm high by 0.31 µm wide at level 0 as the file states: not square, "
            "so the map gives its cells no size in µm and --mpp cannot read it (the network reads these)") \
        in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--image", "page.png", "--full-map", "--downsample", "2"],
     "--full-map takes a whole-image run, and this one goes in tiles: --downsample runs it in tiles"),
    (["--image", "page.png", "--profile", "--scheduler", "tcp://127.0.0.1:1"],
     "--profile takes a whole-image run, and this one goes in tiles: --scheduler runs it in tiles"),
    (["--image", "page.png", "--profile", "--output", "map.zarr"],
     "--profile takes a whole-image run, and this one goes in tiles: a .zarr map is written tile by tile"),
    (["--image", "page.png", "--output", "same.tif", "--heatmap", "1", "--heatmap-out", "same.tif"],
     "--output and --heatmap-out name the same file"),
    (["--image", "page.png", "--output", "{model}/model.yaml"], "--output would write into the model being run"),
])
def test_cli_outputs_and_whole_image_flags_refused_before_any_work(model_dir, picture, tmp_path, args, message):
    before = (model_dir / "model.yaml").read_bytes()
    args = [str(picture / a) if a == "page.png" else a.format(model=model_dir) if "{model}" in a
            else str(tmp_path / a) if a.endswith(".tif") else a for a in args]
    result = graphconv("run", model_dir, *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert (model_dir / "model.yaml").read_bytes() == before and not (tmp_path / "same.tif").exists()


def _unet_on_a_scene(tmp_path, hw: tuple[int, int], seed: int) -> np.ndarray:
    """onnx_zoo's small U-Net imported to unet.yaml as a segmentation network, a random
    scene of `hw` as scene.png and a tiled scene.tif, and its map from the PNG, whole."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import onnx_zoo

    torch.manual_seed(0)
    onnx_zoo.export(onnx_zoo.UNetSmall().eval(), tmp_path / "unet.onnx")
    imported = graphconv("import", tmp_path / "unet.onnx", "-o", tmp_path / "unet.yaml", "--task", "segmentation",
                         "--crop-size", 32, 32)
    assert imported.returncode == 0, imported.stderr
    pixels = (np.random.default_rng(seed).random((*hw, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "scene.png")
    tifffile.imwrite(tmp_path / "scene.tif", pixels, tile=(64, 64), photometric="rgb")
    return whole_map(tmp_path / "unet.yaml", tmp_path / "scene.png", tmp_path)


def test_cli_an_upsampling_network_on_a_tiff_picks_its_own_tiles(tmp_path):
    """Without --tile, the tile size is searched by estimating runs of candidate sizes: a
    U-Net's branches meet only on boxes of a multiple of 2 pixels, so every estimate must
    be of such a box (an odd one failed with "concat needs inputs of one spatial size").
    The map is the whole image's, in one tile or, with less memory, in several."""
    whole = _unet_on_a_scene(tmp_path, (256, 192), seed=5)
    for memory, one_tile in (([], True), (["--memory-limit", "40M"], False)):
        result = graphconv("run", tmp_path / "unet.yaml", "--image", tmp_path / "scene.tif", *memory,
                           "--output", tmp_path / "tiled.npy")
        assert result.returncode == 0, result.stderr
        tiles = int(re.search(r"tiles: (\d+) tiles? ", result.stderr).group(1))
        assert (tiles == 1) == one_tile, result.stderr
        np.testing.assert_allclose(np.load(tmp_path / "tiled.npy"), whole, rtol=1e-4, atol=1e-6)


def test_cli_a_u_net_on_a_slide_of_a_side_its_pools_do_not_divide_pads_it(tmp_path):
    """A U-Net takes sides its pools divide evenly (this one even sides); a 251x190 slide
    was refused (with advice to --resize, which a TIFF refuses and which moves the labels
    off the pixels).
    It is padded with zeros at the bottom and right, and its map cut back to the
    image's pixels, said in a note: tiled from a TIFF, and whole from a PNG, alike."""
    whole = _unet_on_a_scene(tmp_path, (251, 190), seed=6)
    assert whole.shape[2:] == (251, 190)
    for tile, workers in (("64", []), ("100", []), ("300", []), ("64", ["--workers", "2"])):
        # Dask's workers read their boxes past the image as zeros too (they read the image's pixels only)
        result = graphconv("run", tmp_path / "unet.yaml", "--image", tmp_path / "scene.tif", "--tile", tile,
                           *workers, "--output", tmp_path / "tiled.npy")
        assert result.returncode == 0, result.stderr
        assert "padded with zeros (after the preprocess) to 252x190" in result.stderr
        np.testing.assert_allclose(np.load(tmp_path / "tiled.npy"), whole, rtol=1e-4, atol=1e-6)
        (tmp_path / "tiled.npy").unlink()


def test_cli_many_images_each_get_their_heatmap_beside_their_map(model_dir, picture, tmp_path):
    """--images --heatmap K: <name>-heatmap-K.png beside each map, the picture one --image
    run of that image in tiles draws; --heatmap-out, one name for many, is refused."""
    folder = tmp_path / "pages"
    folder.mkdir()
    (folder / "a.png").write_bytes((picture / "page.png").read_bytes())
    Image.open(picture / "page.png").crop((10, 20, 110, 120)).save(folder / "b.png")
    result = graphconv("run", model_dir, "--images", folder / "*.png", "--output-dir", tmp_path / "maps",
                       "--heatmap", "3")
    assert result.returncode == 0, result.stderr
    for name in ("a", "b"):
        alone = graphconv("run", model_dir, "--image", folder / f"{name}.png", "--tile", "64", "--heatmap", "3",
                          "--heatmap-out", tmp_path / "alone.png", "--output", tmp_path / f"alone-{name}.npy")
        assert alone.returncode == 0, alone.stderr
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "maps" / f"{name}-heatmap-3.png")),
                                      np.asarray(Image.open(tmp_path / "alone.png")))
    refused = graphconv("run", model_dir, "--images", folder / "*.png", "--output-dir", tmp_path / "maps",
                        "--heatmap", "3", "--heatmap-out", tmp_path / "one.png")
    assert refused.returncode == 2 and "drop --heatmap-out" in refused.stderr


def test_cli_many_images_from_a_folder_or_through_subfolders(model_dir, picture, tmp_path):
    """--images photos/ is every image in the folder; 'photos/**/*.png' reaches into
    subfolders (their maps in the same subfolders below --output-dir)."""
    folder = tmp_path / "photos"
    (folder / "2024").mkdir(parents=True)
    for path in (folder / "a.png", folder / "2024" / "a.png", folder / "b.tif"):
        path.write_bytes((picture / ("tiled.tif" if path.suffix == ".tif" else "page.png")).read_bytes())
    (folder / "notes.txt").write_text("not an image")
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", tmp_path / "flat")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["a.npy", "b.npy", "graphconv-maps.csv"]
    result = graphconv("run", model_dir, "--images", folder / "**" / "*.png", "--output-dir", tmp_path / "deep")
    assert result.returncode == 0, result.stderr
    assert sorted(str(p.relative_to(tmp_path / "deep")) for p in (tmp_path / "deep").rglob("*.npy")) == [
        "2024/a.npy", "a.npy"]


def test_cli_many_images_spare_pictures_that_are_not_their_heatmaps(model_dir, picture, tmp_path):
    """A heatmap of --images would have replaced an image, or a user's picture, of its
    name (exit 0); an earlier run's heatmap is replaced, and is not taken for an image."""
    folder = tmp_path / "pages"
    folder.mkdir()
    (folder / "a.png").write_bytes((picture / "page.png").read_bytes())
    (folder / "a-heatmap-3.png").write_bytes((picture / "page.png").read_bytes())  # the user's own picture
    refused = graphconv("run", model_dir, "--images", folder, "--output-dir", folder, "--heatmap", "3")
    assert refused.returncode == 2 and "a-heatmap-3.png: is already there and is not a heatmap" in refused.stderr
    assert (folder / "a-heatmap-3.png").read_bytes() == (picture / "page.png").read_bytes()
    (folder / "a-heatmap-3.png").unlink()
    for _ in range(2):
        result = graphconv("run", model_dir, "--images", folder, "--output-dir", folder, "--heatmap", "3")
        assert result.returncode == 0, result.stderr
        assert "1 of 1 image" in result.stdout
    assert sorted(p.name for p in folder.iterdir()) == ["a-heatmap-3.png", "a.npy", "a.png", "graphconv-maps.csv"]


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_a_tiled_run_replaces_its_own_map_but_not_a_users_raster(model_dir, picture, tmp_path, suffix):
    """A zarr array or TIFF of the user's (a scene) named as --output was replaced by the
    map, exit 0; an earlier run's map of that name is replaced as before."""
    scene = (np.arange(4 * 30 * 40) % 65535).astype(np.uint16).reshape(30, 40, 4)
    users = tmp_path / f"scene{suffix}"
    if suffix == ".zarr":
        zarr.open_array(str(users), mode="w", shape=scene.shape, dtype=scene.dtype)[:] = scene
    else:
        tifffile.imwrite(users, scene)
    result = graphconv("run", model_dir, "--image", picture / "tiled.tif", "--tile", "60", "--output", users)
    assert result.returncode == 2 and "is already there and is not a map graphconv wrote" in result.stderr
    kept = zarr.open_array(str(users), mode="r")[:] if suffix == ".zarr" else tifffile.imread(users)
    assert np.array_equal(kept, scene)
    if suffix == ".zarr":  # float32 (N, K, rows, cols), a map's shape and type, but not marked as graphconv's
        features = np.ones((1, 4, 30, 40), np.float32)
        zarr.open_array(str(tmp_path / "features.zarr"), mode="w", shape=features.shape, dtype=np.float32)[:] = features
        result = graphconv("run", model_dir, "--image", picture / "tiled.tif", "--tile", "60",
                           "--output", tmp_path / "features.zarr")
        assert result.returncode == 2 and "is already there and is not a map graphconv wrote" in result.stderr
        assert np.array_equal(zarr.open_array(str(tmp_path / "features.zarr"), mode="r")[:], features)
        (tmp_path / "made-ahead.zarr").mkdir()  # an empty folder holds nothing to lose
        result = graphconv("run", model_dir, "--image", picture / "tiled.tif", "--tile", "60",
                           "--output", tmp_path / "made-ahead.zarr")
        assert result.returncode == 0, result.stderr
    ours = tmp_path / f"map{suffix}"
    for _ in range(2):
        result = graphconv("run", model_dir, "--image", picture / "tiled.tif", "--tile", "60", "--output", ours)
        assert result.returncode == 0, result.stderr


def test_local_workers_get_their_share_of_the_cores_and_this_process_keeps_its_environment(monkeypatch):
    """--workers set NUMBA_NUM_THREADS in the calling process for its workers to inherit,
    and left it there: a library caller's (a test session's) next numba run then refused
    it ('Cannot set NUMBA_NUM_THREADS to a different value once the threads have been
    launched'), 379 tests after one in-process --workers run. The share is of the cores
    this process may use (its affinity: taskset, Slurm's CPU sets), not the machine's."""
    from graphconv.cluster import client_for

    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    with client_for(2, None) as client:
        assert set(client.run(lambda: os.environ.get("NUMBA_NUM_THREADS")).values()) == {"2"}
    assert "NUMBA_NUM_THREADS" not in os.environ
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")  # the user's own setting wins, as before
    with client_for(1, None) as client:
        assert set(client.run(lambda: os.environ.get("NUMBA_NUM_THREADS")).values()) == {"1"}


def test_a_scheduler_without_workers_is_said_not_waited_on_for_ever(monkeypatch):
    """Its bar sat at 0 with no word until the user killed the run."""
    distributed = pytest.importorskip("distributed")
    from graphconv import cluster

    monkeypatch.setattr(cluster, "WORKER_WAIT_S", 0.5)
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None) as empty:
        with pytest.raises(GraphconvError, match=f"the Dask scheduler at {empty.scheduler_address} has no workers "
                                                 r"\(waited 0.5 s\): start `dask worker"):
            with cluster.client_for(None, empty.scheduler_address):
                pass


def test_a_worker_with_other_versions_of_the_packages_that_compute_is_refused(monkeypatch):
    """Client and workers were never compared: a worker with another graphconv or numba
    computed its tiles with other code, silently. The workers are asked through
    importlib.metadata alone, which a worker with an older graphconv (or none) has."""
    distributed = pytest.importorskip("distributed")
    import importlib.metadata
    import threading

    from graphconv import cluster

    real_version = importlib.metadata.version
    here = cluster.installed_version("numba")
    on_a_worker = {"numba": "0.1.0"}

    def version(name):  # the in-process worker runs off the main thread; the client checks on it
        if threading.current_thread() is threading.main_thread() or name not in on_a_worker:
            return real_version(name)
        return on_a_worker[name]

    monkeypatch.setattr(importlib.metadata, "version", version)
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as one:
        with pytest.raises(GraphconvError, match=r"the Dask worker \S+ of \S+ runs numba 0.1.0 \(this machine: "
                                                 + re.escape(str(here)) + r"\): install the same"):
            with cluster.client_for(None, one.scheduler_address):
                pass
        on_a_worker.clear()
        with cluster.client_for(None, one.scheduler_address):
            pass


def test_a_cluster_whose_every_worker_left_is_said_not_waited_on_for_ever(monkeypatch):
    """Its only worker killed mid-run, the tasks waited for a new one and the command sat
    silent (ten minutes in a review, until a worker joined)."""
    distributed = pytest.importorskip("distributed")
    import time

    from graphconv import cluster

    monkeypatch.setattr(cluster, "WORKER_WAIT_S", 0.5)
    monkeypatch.setattr(cluster, "WORKER_CHECK_S", 0.2)
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as one, \
            distributed.Client(one) as client:
        quick = client.submit(lambda: 1, pure=False)
        assert [r for _, r in cluster.results_with_workers(client, [quick])] == [1]
        slow = client.submit(time.sleep, 60, pure=False)
        [worker] = one.workers.values()
        one.sync(worker.close)  # as a worker killed: its task not handed on
        started = time.monotonic()
        with pytest.raises(GraphconvError, match=r"every worker of the Dask scheduler at \S+ left during the run, "
                                                 r"and none joined in 0.5 s: start `dask worker` again"):
            list(cluster.results_with_workers(client, [slow]))
        assert time.monotonic() - started < 30


def test_a_result_lost_with_the_last_worker_is_said_not_waited_on_for_ever(monkeypatch):
    """Every worker stopped after some tiles finished: a finished tile's result, held by a
    worker that left, is computed again, and fetching it waited for ever (a review's
    pathology run, two workers stopped mid-slide: still running minutes later)."""
    distributed = pytest.importorskip("distributed")
    import threading

    from graphconv import cluster

    monkeypatch.setattr(cluster, "WORKER_WAIT_S", 0.5)
    monkeypatch.setattr(cluster, "WORKER_CHECK_S", 0.2)
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as one, \
            distributed.Client(one) as client:
        finished = [client.submit(lambda: 1, pure=False) for _ in range(2)]
        distributed.wait(finished)
        results = cluster.results_with_workers(client, finished)
        assert next(results)[1] == 1  # the other one seen finished too, its result not fetched yet
        [worker] = one.workers.values()
        one.sync(worker.close)  # that result leaves with it
        raised = []

        def fetch():
            try:
                list(results)
            except GraphconvError as err:
                raised.append(str(err))

        fetching = threading.Thread(target=fetch, daemon=True)
        fetching.start()
        fetching.join(timeout=30)
        assert not fetching.is_alive(), "still waiting for a result no worker holds"
        assert re.search(r"every worker of the Dask scheduler at \S+ left during the run", raised[0])


def test_dask_s_lost_result_logs_are_kept_off_stderr_and_others_are_not():
    """After the command's one line, dask logged "Couldn't gather 1 keys, rescheduling" and
    asyncio an AllExit traceback from the gather the run stopped waiting for."""
    import logging

    from graphconv import cluster

    class AllExit(Exception):  # distributed.client's, matched by name
        pass

    def record(message, raised=None):
        exc_info = (type(raised), raised, None) if raised else None
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, (), exc_info)

    keeps = cluster._LostResultLogs().filter
    assert not keeps(record("Task exception was never retrieved", AllExit()))
    assert not keeps(record("Couldn't gather 1 keys, rescheduling (%s,)"))
    assert keeps(record("Task exception was never retrieved", ValueError("a real one")))
    assert keeps(record("Removing worker caused the cluster to lose computed tasks"))


def test_a_task_s_own_timeout_error_is_raised_not_waited_on():
    distributed = pytest.importorskip("distributed")

    from graphconv import cluster

    def timing_out():
        raise TimeoutError("the tile's own")

    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as one, \
            distributed.Client(one) as client:
        with pytest.raises(TimeoutError, match="the tile's own"):
            list(cluster.results_with_workers(client, [client.submit(timing_out, pure=False)]))



def test_a_cluster_whose_every_worker_is_paused_for_memory_is_said_not_waited_on_for_ever(monkeypatch):
    """Dask pauses a worker over 80% of its memory limit; a paused worker is still listed,
    so a run whose every worker was paused waited silently for ever (a review, following
    the README's --memory-limit advice)."""
    distributed = pytest.importorskip("distributed")
    import time

    from distributed.core import Status

    from graphconv import cluster

    monkeypatch.setattr(cluster, "WORKER_WAIT_S", 0.5)
    monkeypatch.setattr(cluster, "WORKER_CHECK_S", 0.2)
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None,
                                  memory_limit=0) as one, distributed.Client(one) as client:  # 0: no monitor resumes it
        [worker] = one.workers.values()
        worker.status = Status.paused  # what Dask's memory monitor does
        deadline = time.monotonic() + 10
        while cluster._paused_workers(client) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        waiting = client.submit(lambda: 1, pure=False)
        with pytest.raises(GraphconvError, match=r"every worker of the Dask scheduler at \S+ \(1 paused\) has been "
                                                 r"paused for memory for 0.5 s, so no tile could run: Dask pauses a "
                                                 r"worker whose process passes 80% of its memory limit"):
            list(cluster.results_with_workers(client, [waiting]))
        with pytest.raises(GraphconvError, match=r"every worker of the Dask scheduler at \S+ \(1 paused\) is paused "
                                                 r"for memory \(waited 0.5 s\)"):
            cluster._wait_for_a_worker(client, one.scheduler_address)
        worker.status = Status.running
        assert [r for _, r in cluster.results_with_workers(client, [waiting])] == [1]

    monkeypatch.setattr(cluster, "WORKER_WAIT_S", 3)
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None,
                                  memory_limit=0) as one, distributed.Client(one) as client:

        def pausing_its_worker():  # a tile whose memory passes the pause line: it finishes, then the worker resumes
            distributed.get_worker().status = Status.paused
            time.sleep(6)
            return 2

        busy = client.submit(pausing_its_worker, pure=False)
        assert [r for _, r in cluster.results_with_workers(client, [busy])] == [2]


def test_an_address_where_no_scheduler_speaks_is_refused_not_waited_on(monkeypatch):
    """The dashboard's port, or any server that is not a scheduler, kept dask's Client
    waiting for ever (its timeout covers connecting, not the handshake): a scheduler
    speaks first, so a silent listener is refused after SCHEDULER_ANSWER_S."""
    import socket
    import threading

    from graphconv import cluster

    monkeypatch.setattr(cluster, "SCHEDULER_ANSWER_S", 0.5)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        accepted = []
        threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
        with pytest.raises(GraphconvError, match=rf"no Dask scheduler at tcp://127.0.0.1:{port}: what listens there "
                                                 r"said nothing in 0.5 s, where a scheduler speaks first; give the "
                                                 r"address `dask scheduler` prints"):
            cluster._check_a_scheduler_answers(f"tcp://127.0.0.1:{port}")

        def speak():
            connection, _ = listener.accept()
            connection.sendall(b"x")
            accepted.append(connection)

        threading.Thread(target=speak, daemon=True).start()
        cluster._check_a_scheduler_answers(f"127.0.0.1:{port}")  # a scheme left out is tcp://
        cluster._check_a_scheduler_answers(f"tls://127.0.0.1:{port}")  # TLS: left to dask
    for connection, *_ in (a if isinstance(a, tuple) else (a,) for a in accepted):
        connection.close()


def test_a_worker_keeps_an_image_open_only_for_the_same_file_and_read_options(model_dir, tmp_path):
    """A cluster's worker outlives the command: its open image, keyed by the path alone,
    served the next run with other --bands (or --downsample, --level) and an image
    replaced at the same path the previous run's pixels, the map wrong without a word."""
    from graphconv import cluster

    assert graphconv("compile", SPECS / "digits.yaml", "-o", tmp_path / "digits").returncode == 0  # trained weights
    path = tmp_path / "scene.tif"
    pixels = np.random.default_rng(3).integers(0, 255, (36, 36, 3), dtype=np.uint8)
    tifffile.imwrite(path, pixels)
    ref, box = ModelRef(str(tmp_path / "digits")), (0, 0, 36, 36)

    def block(**options):
        return cluster._tile_block(ref, str(path), box, (0, 2), (0, 2), MapOptions(**options))[0]

    first, green = block(bands=(1,)), block(bands=(2,))
    assert not np.array_equal(first, green)
    np.testing.assert_array_equal(block(bands=(1,)), first)
    assert not np.array_equal(block(bands=(1,), downsample=2), first)
    tifffile.imwrite(tmp_path / "new.tif", 255 - pixels)
    os.replace(tmp_path / "new.tif", path)  # another image at the same path
    replaced = block(bands=(1,))
    assert not np.array_equal(replaced, first)
    spec = (SPECS / "digits.yaml").read_text().replace("scale: -0.00392156862745098", "scale: -0.002")
    for name in ("digits.npz", "digits.labels.txt"):
        shutil.copy(SPECS / name, tmp_path / name)
    (tmp_path / "digits.yaml").write_text(spec)
    assert graphconv("compile", tmp_path / "digits.yaml", "-o", tmp_path / "digits").returncode == 0  # again
    assert not np.array_equal(block(bands=(1,)), replaced), "the image read with the new model's preprocess"

def test_a_worker_killed_on_every_try_or_a_lost_scheduler_is_one_line_saying_what_to_do():
    """distributed's KilledWorker (a worker killed for memory, and each that took its
    task over) came out as a traceback, exit 1; a scheduler lost mid-run as dask's
    'in <TCP (closed) ConnectionPool.gather ...>: Stream is closed'."""
    distributed = pytest.importorskip("distributed")
    from graphconv import cluster

    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as one:
        with pytest.raises(GraphconvError, match=r"a Dask worker of .* died running this run's tasks.*--memory-limit"):
            with cluster.client_for(None, one.scheduler_address):
                raise distributed.KilledWorker("_tile_block-1", None, 3)
        from distributed.comm.core import CommClosedError
        with pytest.raises(GraphconvError, match=r"lost the Dask scheduler at .* during the run \(Stream is closed\)"):
            with cluster.client_for(None, one.scheduler_address):
                raise CommClosedError("Stream is closed")  # the scheduler killed mid-run
        from types import SimpleNamespace
        tasks = [SimpleNamespace(key=f"_tile_block-{i}", msg=None) for i in range(30)]
        cancelled = distributed.client.CancelledFuturesGroup(errors=tasks, reason="scheduler-connection-lost")
        with pytest.raises(GraphconvError, match=r"lost the Dask scheduler at \S+ during the run \(its tasks "
                                                 r"cancelled: scheduler-connection-lost\): a map written with"):
            with cluster.client_for(None, one.scheduler_address):  # killed with -9: the tasks are cancelled
                raise distributed.client.FuturesCancelledError([cancelled])


def test_a_scheduler_killed_mid_run_is_one_line_without_dask_s_tracebacks(model_dir, big_page, tmp_path):
    """A scheduler killed with -9 mid-run: dask's client logged "Failed to reconnect" and
    two tracebacks of a CancelledError from its own closing, 30 lines before graphconv's
    one line saying what happened and what to do."""
    pytest.importorskip("distributed")
    import time

    address_file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m"]
    scheduler = subprocess.Popen([*dask, "distributed.cli.dask_scheduler", "--scheduler-file", address_file, "--port",
                                  "0", "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([*dask, "distributed.cli.dask_worker", "--scheduler-file", address_file, "--nthreads",
                               "1", "--no-dashboard", "--memory-limit", "0"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not address_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(address_file.read_text())["address"]
        folder = tmp_path / "slides"
        folder.mkdir()
        for k in range(4):
            shutil.copy(big_page, folder / f"{k}.png")
        run = subprocess.Popen([sys.executable, "-m", "graphconv", "run", str(model_dir), "--images", str(folder),
                                "--output-dir", str(tmp_path / "maps"), "--tile", "40", "--resume", "--scheduler",
                                address], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while time.monotonic() < deadline and not list(tmp_path.glob("maps/*.partial/tiles-done.txt")):
            time.sleep(0.05)
        scheduler.kill()
        _, err = run.communicate(timeout=120)
        assert run.returncode == 2, err
        assert "lost the Dask scheduler at" in err and "Traceback" not in err and "Failed to reconnect" not in err, err
    finally:
        for process in (scheduler, worker):
            process.kill()
            process.wait()


def test_ctrl_c_of_images_on_a_cluster_stops_the_maps_in_progress_too(model_dir, tmp_path):
    """On a cluster of the user's own (the command does not close its workers), Ctrl-C
    left the images in progress running: their maps landed in the output folder after
    the command said it was interrupted (and a --resume run's lock refused the next run).
    They stop at their next tile now, leaving nothing (or, with --resume, their tiles)."""
    distributed = pytest.importorskip("distributed")
    import time

    folder = tmp_path / "slides"
    folder.mkdir()
    for name in ("a", "b"):
        Image.fromarray((np.random.default_rng(1).random((700, 700)) * 255).astype(np.uint8)).save(folder / f"{name}.png")
    images = [str(folder / "a.png"), str(folder / "b.png")]

    def interrupted(result):
        raise KeyboardInterrupt  # as the first map comes back, the second being computed

    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as one, \
            distributed.Client(one) as client:
        with pytest.raises(KeyboardInterrupt):
            run_images(ModelRef(str(model_dir)), images, str(tmp_path / "maps"), MapOptions(), tile=48,
                       client=client, progress=interrupted)
        deadline = time.monotonic() + 60
        while any(client.processing().values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(client.processing().values())
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["a.npy", "graphconv-maps.csv"]  # b: no map


@pytest.mark.parametrize("resume", [False, True])
def test_images_sent_by_a_client_that_went_away_stop_at_their_next_tile(model_dir, tmp_path, resume):
    """A client killed with -9 sets no stop Event: its --images tasks went on computing
    and renamed their maps into the output folder, which no graphconv-maps.csv listed,
    and a resumed batch called the image failed while the orphan finished it. The
    scheduler releases a gone client's tasks; each notices at its next tile and stops
    (with --resume leaving its partial map to go on from)."""
    distributed = pytest.importorskip("distributed")
    from graphconv.cluster import _one_image_at
    from graphconv.tiling import PartialMap

    Image.fromarray((np.random.default_rng(1).random((1600, 1600)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    output = tmp_path / "maps" / "a.npy"
    output.parent.mkdir()
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as one:
        sender = distributed.Client(one)
        task = sender.submit(_one_image_at, ModelRef(str(model_dir)), "a.png", "maps/a.npy", str(tmp_path / "a.png"),
                             str(output), MapOptions(resume=resume), 48, None, None, pure=False)
        worker = next(iter(one.workers.values()))
        deadline = time.monotonic() + 60
        while worker.state.tasks.get(task.key) is None or worker.state.tasks[task.key].state != "executing":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        while resume and PartialMap(str(output)).count_done() == 0:  # a tile kept before the client goes
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        sender.close()  # the command gone, with no word to its tasks
        deadline = time.monotonic() + 60
        while worker.state.executing_count and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not worker.state.executing_count, "the orphan task still running"
    assert not output.exists()
    if resume:
        assert PartialMap(str(output)).count_done() > 0  # its tiles kept for the next run
    else:
        assert sorted(p.name for p in output.parent.iterdir()) == []


def test_memory_limit_given_with_a_scheduler_is_each_worker_s_budget():
    """--images on a --scheduler ignored --memory-limit: each worker took its own
    machine's default, and a worker with less memory was killed."""
    import argparse

    from graphconv.memory import memory_limit_set
    from graphconv.tiled_cli import _budget_per_process

    with memory_limit_set("300M"):
        given = _budget_per_process(argparse.Namespace(scheduler="tcp://h:8786", workers=None, memory_limit="300M"),
                                    None)
    assert given == 300 * 2 ** 20
    assert _budget_per_process(argparse.Namespace(scheduler="tcp://h:8786", workers=None, memory_limit=None),
                               None) is None


def test_a_tile_s_budget_is_the_limit_shared_among_local_workers_less_a_map_held_in_memory(model_dir):
    """With --workers 2 each tile was chosen for the whole --memory-limit, and two ran at
    once: 758 MB -> 2.1 GB under 1 GB. A map held in memory (no --output) is beside them;
    so are the workers' processes and the command's own copy of the model (AlexNet with
    --workers 2 in a 1.5 GB job was killed), which come off before the budget is shared."""
    import argparse

    from graphconv.cluster import WORKER_PROCESS_BYTES
    from graphconv.memory import memory_limit_set, weight_bytes
    from graphconv.tiled_cli import _budget_per_process, _tile_budget
    from graphconv.tiling import DenseGrid

    grid = DenseGrid(Model.load(model_dir))
    cells = grid.model.output_channels * math.prod(grid.map_hw((4000, 4000)))
    limit, weights = 2000 << 20, weight_bytes(grid.model.graph)

    def budget(**given):
        args = argparse.Namespace(**{**dict(scheduler=None, workers=None, output="map.npy"), **given})
        return _tile_budget(args, grid, (4000, 4000))

    with memory_limit_set(limit):
        assert budget() == limit
        assert budget(workers=3) == (limit - 3 * WORKER_PROCESS_BYTES - weights) // 3
        assert budget(workers=1) == limit - WORKER_PROCESS_BYTES - weights  # a worker process all the same
        assert budget(output=None) == limit - 4 * cells
        assert budget(output=None, workers=2) == (limit - 4 * cells - 2 * WORKER_PROCESS_BYTES - weights) // 2
        assert budget(scheduler="tcp://h:8786", workers=None) == limit  # each worker has its own machine
        batch = argparse.Namespace(scheduler=None, workers=2, memory_limit=str(limit))
        assert _budget_per_process(batch, grid.model) == budget(workers=2)  # an --images batch's workers alike
    with memory_limit_set("300M"), pytest.raises(GraphconvError, match="leaving nothing of the 300.0 MB memory budget"):
        budget(workers=3)  # less than the workers' processes: said, not a negative share
    with memory_limit_set(limit):
        assert _tile_budget(argparse.Namespace(scheduler="tcp://h:8786", workers=None, output="m.npy"), grid,
                            (4000, 4000), worker_share=300 << 20) == 300 << 20  # the tightest worker's share
        given = argparse.Namespace(scheduler="tcp://h:8786", workers=None, output="m.npy", memory_limit="2000M")
        assert _tile_budget(given, grid, (4000, 4000), worker_share=300 << 20) == limit  # --memory-limit: the user's


def test_a_scheduler_s_tiles_fit_its_workers_memory_and_its_threads_each_get_one(model_dir, big_page, tmp_path):
    """Tiles on a --scheduler were chosen for the client's memory: workers of 1 GB were
    sent a 7998x7998 tile (7.8 GB) and died. And a slide that fits one tile ran on one
    thread of the cluster while the others idled. The budget is the tightest worker's
    share of its memory limit below where dask spills, less what its process holds, with the
    weights its threads share; the tiles at least as many as the workers' threads."""
    distributed = pytest.importorskip("distributed")
    from graphconv import cluster
    from graphconv.memory import PROCESS_BYTES, weight_bytes

    weights = weight_bytes(Model.load(model_dir).graph)
    spill = 0.7  # dask's default share where it starts spilling (pausing at 0.8)
    fresh = (int(1e9 * spill) - PROCESS_BYTES - weights) // 2 + weights  # as one that has run (held 253-263 MB)
    assert cluster.worker_task_budget(1_000_000_000, 2, weights) == fresh
    assert cluster.worker_task_budget(1_000_000_000, 2, weights, held=480 << 20) == (
        (int(1e9 * spill) - (480 << 20) - weights) // 2 + weights)  # a worker holding earlier runs' models
    assert cluster.worker_task_budget(0, 2, weights) is None  # no limit: the command's budget
    assert cluster.this_worker_s_budget(weights) is None  # not on a worker
    # In process, the worker's memory is the whole test process's: a limit it never nears (at 1 GB dask paused it)
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=2, memory_limit="64GB",
                                  dashboard_address=None) as one, distributed.Client(one) as client:
        roomy = cluster.worker_task_budget(64_000_000_000, 2, weights)
        threads, share = cluster.scheduler_capacity(one.scheduler_address, weights)
        assert threads == 2 and weights < share <= roomy  # less what this process holds
        assert weights < client.submit(cluster.this_worker_s_budget, weights).result() <= roomy  # an --images task's
        result = graphconv_in_process("run", model_dir, "--image", big_page, "--scheduler", one.scheduler_address,
                                      "--output", tmp_path / "m.npy")
    assert result.returncode == 0, result.stderr
    assert "note: 2 tiles, smaller than the memory budget allows, for the workers to run 2 at once" in result.stderr
    assert "tiles: 2 tiles of up to" in result.stderr
    lone = graphconv_in_process("run", model_dir, "--image", big_page, "--output", tmp_path / "lone.npy")
    assert lone.returncode == 0 and "tiles" not in lone.stderr, lone.stderr
    np.testing.assert_allclose(np.load(tmp_path / "m.npy"), np.load(tmp_path / "lone.npy"), rtol=1e-5, atol=1e-6)


def test_a_worker_s_share_is_the_same_after_a_run_as_before(model_dir):
    """A long-lived worker's share was measured with what graphconv keeps for reuse held
    (each model's arena: the largest tile's activations), so it shrank run to run (467 MB,
    then 114 MB) and the same slide's tiles and map bits changed. Measured after letting
    go of it (`memory_held_between_runs`), a run between leaves it as it was."""
    distributed = pytest.importorskip("distributed")
    from graphconv import cluster
    from graphconv.memory import weight_bytes

    ref = cluster.ModelRef(str(model_dir))
    weights = weight_bytes(Model.load(model_dir).graph)

    def run_a_large_tile() -> int:
        model = cluster.worker_model(ref)
        model.run(np.zeros((1, 1, 1500, 1500), np.float32))
        return model.executor()._arena.nbytes

    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1, memory_limit="64GB",
                                  dashboard_address=None) as one, distributed.Client(one) as client:
        client.submit(run_a_large_tile, pure=False).result()  # the model and its kernels loaded
        before = cluster.scheduler_capacity(one.scheduler_address, weights)[1]
        arena = client.submit(run_a_large_tile, pure=False).result()
        after = cluster.scheduler_capacity(one.scheduler_address, weights)[1]
    assert arena > 50 << 20  # what the share lost before
    assert abs(after - before) < 20 << 20, (before, after)


def test_local_workers_each_get_a_tile_of_an_image_that_fits_one(model_dir, big_page, tmp_path):
    result = graphconv_in_process("run", model_dir, "--image", big_page, "--workers", "2", "--output",
                                  tmp_path / "m.npy")
    assert result.returncode == 0, result.stderr
    assert "for the workers to run 2 at once" in result.stderr and "tiles: 2 tiles of up to 300x" in result.stderr
    lone = graphconv_in_process("run", model_dir, "--image", big_page, "--output", tmp_path / "lone.npy")
    assert lone.returncode == 0, lone.stderr
    np.testing.assert_allclose(np.load(tmp_path / "m.npy"), np.load(tmp_path / "lone.npy"), rtol=1e-5, atol=1e-6)


def test_a_scheduler_address_dask_cannot_parse_is_one_line(model_dir, picture, tmp_path):
    pytest.importorskip("distributed")
    result = graphconv("run", model_dir, "--image", picture / "tiled.tif", "--tile", "60", "--scheduler", "nonsense",
                       "--output", tmp_path / "m.npy")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot reach the Dask scheduler at nonsense: missing port number" in result.stderr
    assert not (tmp_path / "m.npy").exists()
    both = graphconv_in_process("run", model_dir, "--image", picture / "tiled.tif", "--workers", "2", "--scheduler",
                                "tcp://127.0.0.1:1", "--output", tmp_path / "m.npy")
    assert both.returncode == 2 and "--workers starts a Dask cluster on this machine and --scheduler" in both.stderr


@pytest.mark.parametrize("orientation,noted", [(1, False), (6, True), (3, True)])
def test_a_tiff_read_tile_by_tile_says_its_map_is_in_its_stored_orientation(model_dir, tmp_path, orientation,
                                                                            noted):
    """A TIFF read tile by tile is mapped as stored; one that viewers show turned says so,
    in a tiled run and in --images."""
    pixels = (np.random.default_rng(5).random((60, 80)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "scan.tif", pixels, tile=(32, 32), extratags=[(274, "H", 1, orientation, True)])
    result = graphconv("run", model_dir, "--image", tmp_path / "scan.tif", "--output", tmp_path / "m.npy")
    assert result.returncode == 0, result.stderr
    assert (f"note: the TIFF's Orientation is {orientation}, not 1" in result.stderr) is noted, result.stderr
    assert np.load(tmp_path / "m.npy").shape[2:] == ((60 - 32) // 4 + 1, (80 - 32) // 4 + 1), "the stored pixels' map"
    result = graphconv("run", model_dir, "--images", tmp_path / "scan.tif", "--output-dir", tmp_path / "maps")
    assert result.returncode == 0, result.stderr
    assert ("scan.tif: the TIFF's Orientation is" in result.stderr) is noted, result.stderr


@pytest.mark.parametrize("pattern", ["{folder}", "{folder}/*"])
def test_cli_many_images_leave_out_graphconv_s_own_files_hidden_files_and_other_formats(model_dir, picture, tmp_path,
                                                                                       pattern):
    """A rerun with --output-format tif into the photos' folder mapped its own .tif maps as
    photos ("pick them with --bands"); 'dir/*' tried the .npy maps (then counted them as
    files of an unread format: the folder's list of maps names them); macOS's ._a.png
    AppleDouble file failed the batch and .hidden.png got a map. All are left out, and one
    note says how many and why."""
    folder = tmp_path / "pages"
    folder.mkdir()
    for name in ("a.png", "b.png", ".hidden.png"):
        (folder / name).write_bytes((picture / "page.png").read_bytes())
    (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # hidden, not a file of 'no suffix'
    (folder / "notes.txt").write_text("not an image")
    for output_format in ("tif", "tif", "npy", "npy"):
        result = graphconv("run", model_dir, "--images", pattern.format(folder=folder), "--output-dir", folder,
                           "--output-format", output_format)
        assert result.returncode == 0, result.stderr
        assert "2 of 2 images" in result.stdout
    hidden = ", 3 hidden (a name starting with '.')" if pattern == "{folder}" else ""  # a shell's * leaves them out
    assert (f"left out {6 + bool(hidden) * 3} files: 5 written by graphconv (its maps, heatmaps and lists of maps)"
            f"{hidden}, 1 not of an image format graphconv reads (.txt x1)\n") in result.stderr, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == [".DS_Store", "._a.png", ".hidden.png", "a.npy", "a.png",
                                                        "a.tif", "b.npy", "b.png", "b.tif", "graphconv-maps.csv",
                                                        "notes.txt"]


@pytest.mark.parametrize("output, options, classes, values", [
    ("map.zarr", ("--classes", "3,1"), [3, 1], "class scores"),
    ("map.tif", ("--reduce", "argmax"), list(range(10)), "the class of each cell"),
])
def test_cli_maps_say_what_their_channels_hold_and_of_what(model_dir, picture, tmp_path, output, options, classes,
                                                          values):
    """After --classes 3,1, which band was which class, and a class map's legend, were
    known only to the command that made them."""
    result = graphconv("run", model_dir, "--image", picture / "tiled.tif", "--tile", "60", *options,
                       "--output", tmp_path / output)
    assert result.returncode == 0, result.stderr
    stated = (dict(zarr.open_array(str(tmp_path / output), mode="r").attrs)["graphconv"] if output == "map.zarr"
              else json.loads(tifffile.TiffFile(tmp_path / output).pages[0].description.split("\n", 1)[1]))
    assert stated["classes"] == classes and stated["values"].startswith(values)
    assert stated["image"] == str(picture / "tiled.tif") and stated["model"] == str(model_dir)


@pytest.fixture
def library(tmp_path):
    """Six small photos in two year folders, and a list of them as `find` writes one."""
    for i in range(6):
        folder = tmp_path / "lib" / ("2023" if i % 2 else "2024")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (np.random.default_rng(i).random((60, 70)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    photos = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "lib").rglob("*.png"))
    return tmp_path, photos


def test_cli_images_from_a_list_file_map_each_listed_image_once(model_dir, library, monkeypatch):
    """A job array's images come as a list (`find slides -name '*.svs' > slides.txt`):
    each listed image is mapped, in its subfolder below the images' common folder;
    blank lines and comments are skipped, one listed twice is mapped once, a file of
    another format is left out with the note a glob gets."""
    folder, photos = library
    monkeypatch.chdir(folder)  # relative paths in a list are from the current folder, as the shell made them
    (folder / "notes.txt").write_text("not an image")
    Path("photos.txt").write_text("# the 2023-24 photos\n\n" + "\n".join(photos) + f"\n./{photos[0]}  \nnotes.txt\n")
    result = graphconv_in_process("run", model_dir, "--images", "@photos.txt", "--output-dir", "maps")
    assert result.returncode == 0, result.stderr
    assert "6 of 6 images -> maps" in result.stdout
    assert "--images @photos.txt: left out 1 file: 1 not of an image format graphconv reads (.txt x1)" in result.stderr
    made = sorted(str(p.relative_to(folder / "maps")) for p in (folder / "maps").rglob("*.npy"))
    assert made == sorted(str(Path(p).relative_to("lib").with_suffix(".npy")) for p in photos)


@pytest.mark.usefixtures("fails_if_it_hangs")
def test_cli_a_list_naming_missing_images_maps_the_others_and_records_them(model_dir, library, monkeypatch):
    """One slide lost from a 300-slide list refused the whole night's batch: the missing
    are noted before any work, by line, and each is its own row's error; a list none of
    whose paths is there (run from another folder) is refused before any work."""
    folder, photos = library
    monkeypatch.chdir(folder)
    Path("photos.txt").write_text("\n".join([photos[0], "lib/2023/gone.png", photos[1], "lib/2024"]) + "\n")
    result = graphconv_in_process("run", model_dir, "--images", "@photos.txt", "--output-dir", "maps")
    assert result.returncode != 0
    assert ("note: photos.txt:2: 'lib/2023/gone.png' is not there (and 1 more listed path: line 4); the other "
            "images are mapped, and a missing image's row in graphconv-maps.csv records its error (relative paths "
            f"are read from the current folder, {folder})") in result.stderr
    assert "left out 1 file: 1 not of an image format graphconv reads" in result.stderr  # the folder
    rows = {row["image"]: row for row in csv.DictReader(open(folder / "maps" / "graphconv-maps.csv"))}
    gone = rows[str(folder / "lib/2023/gone.png")]
    assert (gone["status"], gone["error"]) == ("failed", "image not found")
    assert rows[str(folder / photos[0])]["status"] == rows[str(folder / photos[1])]["status"] == "written"
    Path("lost.txt").write_text("lib/2023/gone.png\nlib/2023/also-gone.png\n")
    lost = graphconv_in_process("run", model_dir, "--images", "@lost.txt", "--output-dir", "lost")
    assert lost.returncode == 2 and lost.stderr.count("\n") == 1, lost.stderr
    assert ("lost.txt:1: 'lib/2023/gone.png' is not there (nor is any other listed path: 1 more); relative paths "
            f"are read from the current folder, {folder}") in lost.stderr
    assert not (folder / "lost").exists()
    missing = graphconv_in_process("run", model_dir, "--images", "@nowhere.txt", "--output-dir", "maps")
    assert missing.returncode == 2 and "nowhere.txt: cannot read this list of --images" in missing.stderr
    os.symlink("/dev/zero", "zeros.txt")  # read without end: 6 GB in 15 s
    os.mkfifo("fifo.txt")  # read: waited for ever
    for special in ("zeros.txt", "fifo.txt"):
        refused = graphconv_in_process("run", model_dir, "--images", f"@{special}", "--output-dir", "maps")
        assert refused.returncode == 2 and f"{special}: cannot read this list of --images: not a regular file" \
            in refused.stderr
    np.savez("weights.npz", w=np.zeros(3))
    binary = graphconv_in_process("run", model_dir, "--images", "@weights.npz", "--output-dir", "maps")
    assert binary.returncode == 2 and "weights.npz: is a zip archive such as an .npz, not a list of images" \
        in binary.stderr
    Path("empty.txt").write_text("# none yet\n")
    empty = graphconv_in_process("run", model_dir, "--images", "@empty.txt", "--output-dir", "maps")
    assert empty.returncode == 2 and "empty.txt: lists no image graphconv reads" in empty.stderr


def test_cli_a_listed_broken_link_is_that_image_s_error_as_in_a_folder_s_batch(model_dir, library, monkeypatch):
    """`find photos -type f -o -type l` lists a broken link: the whole batch was refused
    ("is not there"), while a folder's batch says it is a broken link and maps the rest."""
    folder, photos = library
    monkeypatch.chdir(folder)
    os.symlink("moved.png", "lib/2023/link.png")
    Path("photos.txt").write_text("\n".join([photos[0], "lib/2023/link.png", photos[1]]) + "\n")
    for batch in ("@photos.txt", "lib/2023"):
        result = graphconv_in_process("run", model_dir, "--images", batch, "--output-dir", "maps")
        assert result.returncode != 0 and "is a broken link: what it points to, moved.png, is not there" in \
            result.stderr, result.stderr
        assert "is not there;" not in result.stderr  # the list's refusal of a path it cannot find
        assert list((folder / "maps").rglob(Path(photos[1]).stem + ".npy")), "the other images are mapped"
        shutil.rmtree(folder / "maps")


@pytest.mark.parametrize("parts", [1, 2, 4, 7])
@pytest.mark.parametrize("listed", [True, False])
def test_cli_shards_of_a_batch_together_map_each_image_once(model_dir, library, monkeypatch, parts, listed):
    """A job array of N tasks, each given --shard K/N of one batch into one --output-dir:
    together they map every image once, each in the subfolder the whole batch gives it,
    and the list names them all. More parts than images: the extra ones have nothing to do."""
    from graphconv.manifest import Manifest

    folder, photos = library
    monkeypatch.chdir(folder)
    Path("photos.txt").write_text("\n".join(photos) + "\n")
    images = "@photos.txt" if listed else "lib/**/*.png"
    for part in range(parts):
        result = graphconv_in_process("run", model_dir, "--images", images, "--shard", f"{part}/{parts}",
                                      "--output-dir", "maps")
        assert result.returncode == 0, result.stderr
        mine = len(photos[part::parts])
        assert (f"{mine} of {mine} image{'s' if mine > 1 else ''} -> maps" if mine else "holds none of the batch's images") in result.stdout
    made = sorted(str(p.relative_to(folder / "maps")) for p in (folder / "maps").rglob("*.npy"))
    assert made == sorted(str(Path(p).relative_to("lib").with_suffix(".npy")) for p in photos)
    manifest = Manifest(folder / "maps")
    assert sorted(manifest.image_of(str(folder / "maps" / p)) for p in made) == sorted(map(os.path.abspath, photos))


@pytest.mark.parametrize("shard,said", [("3/3", "K counts from 0 to 2"), ("1/0", "is not K/N"), ("a/b", "is not K/N"),
                                        ("-1/3", "is not K/N"), ("2", "is not K/N")])
def test_cli_a_shard_that_is_not_part_k_of_n_is_refused(model_dir, library, monkeypatch, shard, said):
    folder, _ = library
    monkeypatch.chdir(folder)
    for shard_option in ([f"--shard={shard}"], ["--shard", shard]):  # '--shard -1/3' was argparse's "expected one argument"
        result = graphconv_in_process("run", model_dir, "--images", "lib", *shard_option, "--output-dir", "maps")
        assert result.returncode == 2 and said in result.stderr and not (folder / "maps").exists()
    alone = graphconv_in_process("run", model_dir, "--image", "lib/2023/img1.png", "--shard", "0/2")
    assert alone.returncode == 2 and "--shard maps a part of an --images batch" in alone.stderr


@given(count=st.integers(0, 40), parts=st.integers(1, 12))
def test_shards_partition_the_batch(count, parts):
    from graphconv.tiled_cli import _shard_of

    images = [f"img{i}.png" for i in range(count)]
    shards = [_shard_of(images, part, parts) for part in range(parts)]
    assert sorted(sum(shards, [])) == sorted(images)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # even shares


def test_cli_images_leave_out_a_zarr_map_graphconv_wrote_into_the_photos_folder(model_dir, library, monkeypatch):
    """A .zarr map kept beside the photos failed every later batch of that folder ("an
    image array of shape (1, 10, ...)"), where .tif maps and heatmaps were left out."""
    folder, _ = library
    monkeypatch.chdir(folder)
    made = graphconv_in_process("run", model_dir, "--image", "lib/2023/img1.png", "--output", "lib/2023/img1-map.zarr")
    assert made.returncode == 0, made.stderr
    result = graphconv_in_process("run", model_dir, "--images", "lib/2023", "--output-dir", "maps")
    assert result.returncode == 0, result.stderr
    assert "left out 1 file: 1 written by graphconv" in result.stderr and "3 of 3 images" in result.stdout


def test_cli_the_same_images_by_another_path_are_not_another_image_s(model_dir, library, monkeypatch):
    """A job array's shards given as folders of links, then the images' own folder (or
    the same files through a linked mount): graphconv's own maps were refused as "the map
    of shA/0/img_000.png, another image than imgs/img_000.png", exit 2 before any work."""
    folder, photos = library
    monkeypatch.chdir(folder)
    Path("shard").mkdir()
    for photo in photos[:3]:  # lib/2023's
        (Path("shard") / Path(photo).name).symlink_to(folder / photo)
    for images in ("shard", "lib/2023"):  # their maps alike named: img1.npy
        for fmt in ("npy", "tif"):
            result = graphconv_in_process("run", model_dir, "--images", images, "--output-dir", f"maps-{fmt}",
                                          "--output-format", fmt)
            assert result.returncode == 0, result.stderr


def test_a_batch_stopped_before_its_first_map_leaves_the_rows_of_a_batch_beside_it(tmp_path):
    """The task that made --output-dir, stopped before it wrote a map, removed the folder
    it had made, and the list in it of another task's images with it."""
    from graphconv.manifest import Manifest
    from graphconv.tiled_cli import _remove_if_empty

    out = tmp_path / "a" / "maps"
    out.mkdir(parents=True)
    Manifest(out).record("/b/img_9.png", str(out / "img_9.npy"), None, "cannot be read", False)
    _remove_if_empty([out, out.parent], ["/a/img_0.png"])
    assert (out / "graphconv-maps.csv").exists()
    _remove_if_empty([out, out.parent], ["/b/img_9.png"])  # its own rows alone: gone, as any failed command's
    assert not (tmp_path / "a").exists()


def test_cli_many_images_skip_existing_redraws_heatmaps_drawn_otherwise(model_dir, picture, tmp_path):
    """A rerun with another --heatmap-range (or opacity) kept the earlier heatmaps, newer
    than their maps, as done: "no map to make", and the pictures still showed the old
    scale. Each heatmap keeps how it was drawn; one drawn otherwise is drawn again."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a", "b"):
        (folder / f"{name}.png").write_bytes((picture / "page.png").read_bytes())
    out, fresh = tmp_path / "maps", tmp_path / "fresh"
    batch = ["run", model_dir, "--images", folder, "--heatmap", "3"]
    assert graphconv(*batch, "--output-dir", out).returncode == 0
    maps = {name: (out / f"{name}.npy").stat().st_mtime_ns for name in ("a", "b")}
    for settings in (["--heatmap-range", "0,1"], ["--heatmap-range", "0,1", "--heatmap-opacity", "0.8"], []):
        result = graphconv(*batch, "--output-dir", out, "--skip-existing", *settings)
        assert result.returncode == 0 and "2 heatmaps drawn from their maps in" in result.stderr, result.stderr
        assert graphconv(*batch, "--output-dir", fresh, *settings).returncode == 0
        for name in ("a", "b"):
            np.testing.assert_array_equal(np.asarray(Image.open(out / f"{name}-heatmap-3.png")),
                                          np.asarray(Image.open(fresh / f"{name}-heatmap-3.png")))
        again = graphconv(*batch, "--output-dir", out, "--skip-existing", *settings)
        assert "no map to make" in again.stdout and "drawn from" not in again.stderr, "drawn so already: kept"
    assert maps == {name: (out / f"{name}.npy").stat().st_mtime_ns for name in ("a", "b")}, "maps kept"


def test_cli_many_images_skip_existing_goes_on_where_a_stopped_batch_stopped(model_dir, picture, tmp_path):
    """A batch of slides killed half way was computed again whole; --skip-existing leaves
    out each image whose map (and, with --heatmap, heatmap) is there already."""
    folder = tmp_path / "slides"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.png").write_bytes((picture / "page.png").read_bytes())
    out = tmp_path / "maps"
    result = graphconv("run", model_dir, "--images", folder / "a.png", "--output-dir", out)
    assert result.returncode == 0, result.stderr
    first = (out / "a.npy").stat().st_mtime_ns
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--skip-existing")
    assert result.returncode == 0, result.stderr
    assert "1 of 3 images has its map in" in result.stderr and "2 of 2 images" in result.stdout
    assert (out / "a.npy").stat().st_mtime_ns == first and (out / "c.npy").exists()
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--skip-existing", "--heatmap", "3")
    assert result.returncode == 0, result.stderr
    assert "3 heatmaps drawn from their maps in" in result.stderr, "a map without its heatmap gets it, not remade"
    assert (out / "a.npy").stat().st_mtime_ns == first and "no map to make" in result.stdout
    fresh = tmp_path / "fresh"
    assert graphconv("run", model_dir, "--images", folder, "--output-dir", fresh, "--heatmap", "3").returncode == 0
    for name in ("a", "b", "c"):
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{name}-heatmap-3.png")),
                                      np.asarray(Image.open(fresh / f"{name}-heatmap-3.png")))
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--skip-existing", "--heatmap", "3")
    assert "no map to make" in result.stdout and "drawn from" not in result.stderr
    edited = np.asarray(Image.open(folder / "b.png")).copy()  # a photo edited, its map made again without --heatmap:
    edited[: edited.shape[0] // 2] = 255  # its heatmap, the old picture's, was counted done
    Image.fromarray(edited).save(folder / "b.png")
    assert graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--skip-existing").returncode == 0
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--skip-existing", "--heatmap", "3")
    assert result.returncode == 0 and "1 heatmap drawn from its map in" in result.stderr, result.stderr
    assert graphconv("run", model_dir, "--images", folder, "--output-dir", fresh, "--heatmap", "3").returncode == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out / "b-heatmap-3.png")),
                                  np.asarray(Image.open(fresh / "b-heatmap-3.png")))
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--skip-existing", "--classes", "1")
    assert "have their map" not in result.stderr, "a map of all classes is not this run's: it is done again"
    assert result.returncode == 0, result.stderr  # graphconv's own map (graphconv-maps.csv says so) is replaced
    assert np.load(out / "a.npy").shape[:2] == (1, 1) and "3 of 3 images" in result.stdout
    for output_format in ("tif", "tif"):  # written, then each found done
        result = graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--skip-existing",
                           "--output-format", output_format)
        assert result.returncode == 0, result.stderr
    assert "3 of 3 images have their map" in result.stderr
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", out, "--skip-existing",
                       "--output-format", "tif", "--compute-nodata")
    assert result.returncode == 0 and "have their map" not in result.stderr, "other cells left out: not done"
    assert "cells_left_out" in tifffile.TiffFile(out / "a.tif").pages[0].description


def _two_cards(picture, tmp_path) -> tuple[Path, Path]:
    """Two memory cards, each with an IMG_0001.png: two different pictures of one name."""
    cards = []
    for name, flip in (("cardA", False), ("cardB", True)):
        (tmp_path / name).mkdir()
        pixels = np.asarray(Image.open(picture / "page.png"))
        Image.fromarray(pixels[:, ::-1] if flip else pixels).save(tmp_path / name / "IMG_0001.png")
        cards.append(tmp_path / name)
    return cards[0], cards[1]


def test_cli_a_tif_map_of_another_image_of_the_same_name_is_refused_not_replaced_or_skipped(model_dir, picture,
                                                                                            tmp_path):
    """Cameras reuse IMG_0001.JPG: card B's photo mapped into the folder of card A's maps
    silently replaced A's map, and with --skip-existing was left out as done although the
    map there was A's. A .tif map records its image: another image's is refused, exit 2,
    naming both, before any work. An .npy records nothing: graphconv-maps.csv, the list of
    the maps a batch wrote, records its image, and another image's is refused as well; an
    .npy it does not list (the list deleted) is replaced, and its replacement noted."""
    card_a, card_b = _two_cards(picture, tmp_path)
    out = tmp_path / "maps"
    result = graphconv_in_process("run", model_dir, "--images", card_a, "--output-dir", out, "--output-format", "tif")
    assert result.returncode == 0, result.stderr
    before = (out / "IMG_0001.tif").read_bytes()
    for extra in ([], ["--skip-existing"]):
        result = graphconv_in_process("run", model_dir, "--images", card_b, "--output-dir", out,
                                      "--output-format", "tif", *extra)
        assert result.returncode == 2 and "no map to make" not in result.stdout
        assert "is the map of" in result.stderr and "cardA" in result.stderr and "cardB" in result.stderr
        assert "separate --output-dir" in result.stderr and "Traceback" not in result.stderr
        assert (out / "IMG_0001.tif").read_bytes() == before
    result = graphconv_in_process("run", model_dir, "--images", card_a, "--output-dir", out, "--output-format", "tif")
    assert result.returncode == 0, "the image's own map is replaced as before"
    result = graphconv_in_process("run", model_dir, "--images", card_a, "--output-dir", out)
    assert result.returncode == 0 and ".npy map" not in result.stderr
    result = graphconv_in_process("run", model_dir, "--images", card_b, "--output-dir", out)
    assert result.returncode == 2 and "is the map of" in result.stderr and "cardA" in result.stderr
    (out / "graphconv-maps.csv").unlink()
    result = graphconv_in_process("run", model_dir, "--images", card_b, "--output-dir", out)
    assert result.returncode == 0 and "1 .npy map in" in result.stderr
    assert "does not record which image" in result.stderr


def test_cli_skip_existing_maps_an_image_edited_since_its_map_again(model_dir, picture, tmp_path):
    """--skip-existing kept the map of a photo edited after it was made. A .tif map, and
    an .npy's row in the list, record the image's file stamp (size, time, inode): another
    stamp is not done, even with the old time put back."""
    folder = tmp_path / "edit"
    folder.mkdir()
    photo = folder / "IMG_1.png"
    shutil.copy(picture / "page.png", photo)
    out = tmp_path / "maps"
    for output_format in ("tif", "npy"):
        run = ("run", model_dir, "--images", folder, "--output-dir", out, "--output-format", output_format,
               "--skip-existing")
        assert graphconv_in_process(*run).returncode == 0
        assert "no map to make" in graphconv_in_process(*run).stdout
        stamp = [photo.stat().st_size, photo.stat().st_mtime_ns, photo.stat().st_ino]
        if output_format == "tif":
            stated = json.loads(tifffile.TiffFile(out / "IMG_1.tif").pages[0].description.split("\n", 1)[1])
            assert stated["image_stamp"] == stamp
        else:
            assert _made_with(out, "IMG_1.npy")["image_stamp"] == stamp
        times = photo.stat().st_atime_ns, photo.stat().st_mtime_ns
        Image.open(picture / "page.png").rotate(180).save(tmp_path / "edited.png")
        os.replace(tmp_path / "edited.png", photo)  # saved as editors save: a new file renamed into place
        os.utime(photo, ns=times)  # the old time back (a copy keeping it): the stamp's inode still differs
        result = graphconv_in_process(*run)
        assert result.returncode == 0 and "1 of 1 image ->" in result.stdout, result.stderr


def _made_with(output_dir, map_name: str) -> dict:
    """The settings graphconv-maps.csv records for `map_name`."""
    rows = {row["map"]: row for row in csv.DictReader((output_dir / "graphconv-maps.csv").open())}
    return json.loads(rows[map_name]["made_with"])


@pytest.mark.parametrize("output_format", ["tif", "npy"])
def test_cli_skip_existing_keeps_the_map_of_an_image_whose_time_is_in_the_future(model_dir, picture, tmp_path,
                                                                                 output_format):
    """A photo from a camera whose clock ran ahead (or copied from such a host) is newer
    than any map of it: every --skip-existing made its map again, as of an image edited
    since. Its recorded stamp says it is the same file."""
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = folder / "IMG_1.png"
    shutil.copy(picture / "page.png", photo)
    next_year = time.time_ns() + 365 * 24 * 3600 * 10**9
    os.utime(photo, ns=(next_year, next_year))
    run = ("run", model_dir, "--images", folder, "--output-dir", tmp_path / "maps", "--output-format", output_format,
           "--skip-existing")
    assert graphconv_in_process(*run).returncode == 0
    result = graphconv_in_process(*run)
    assert result.returncode == 0 and "no map to make" in result.stdout, result.stdout + result.stderr


def test_cli_skip_existing_without_a_recorded_stamp_maps_an_image_newer_than_its_map_again(model_dir, picture,
                                                                                           tmp_path):
    """A row of a graphconv from before the image's stamp was recorded: the image's time
    against the map's still tells a photo edited since."""
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = folder / "IMG_1.png"
    shutil.copy(picture / "page.png", photo)
    out = tmp_path / "maps"
    run = ("run", model_dir, "--images", folder, "--output-dir", out, "--skip-existing")
    assert graphconv_in_process(*run).returncode == 0
    listing = out / "graphconv-maps.csv"
    rows = list(csv.DictReader(listing.open()))
    for row in rows:
        row["made_with"] = json.dumps({k: v for k, v in json.loads(row["made_with"]).items() if k != "image_stamp"})
    with listing.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert "image_stamp" not in _made_with(out, "IMG_1.npy") and "no map to make" in graphconv_in_process(*run).stdout
    later = (out / "IMG_1.npy").stat().st_mtime_ns + 10**9
    os.utime(photo, ns=(later, later))
    result = graphconv_in_process(*run)
    assert result.returncode == 0 and "1 of 1 image ->" in result.stdout, result.stderr


def test_cli_many_images_through_an_uncompiled_classifier_are_one_error_before_any_image(picture, tmp_path):
    """A spec as written (its fc layer takes its crop alone) failed on every image, the
    same "compile with fc-to-conv" line once per image: one error, exit 2, nothing made."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(picture / "page.png", folder / f"{name}.png")
    result = graphconv("run", SPECS / "lenet.yaml", "--images", folder, "--output-dir", tmp_path / "maps")
    assert result.returncode == 2 and result.stderr.count("graphconv:") == 1, result.stderr
    assert "takes only its 32x32 crop as written" in result.stderr and "graphconv compile" in result.stderr
    assert "lenet.yaml" in result.stderr and "150x170" in result.stderr
    assert "or classify each picture resized to the crop: --resize 32 32" in result.stderr
    assert not (tmp_path / "maps").exists()


def test_cli_many_images_one_too_small_for_a_pooling_classifier_is_its_own_error_not_the_batch_s(tmp_path):
    """A classifier that pools over any size (conv, global average pool, flatten, fc) and
    one image smaller than its crop: the check meant for an uncompiled fc stopped the whole
    batch, blaming 'an fc or flatten layer', and no map was made. Now that image's own
    error is reported and the others are mapped."""
    (tmp_path / "gap.yaml").write_text("""name: gap
input: {name: data, shape: [3, 8, 8]}
layers:
  - {name: conv1, op: conv, out_channels: 4, kernel_size: 5}
  - {name: gap, op: globalavgpool}
  - {name: flat, op: flatten}
  - {name: fc, op: fc, out_features: 3}
""")
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((36, 40, 3)) * 255).astype(np.uint8)).save(folder / "big.png")
    Image.fromarray((rng.random((3, 3, 3)) * 255).astype(np.uint8)).save(folder / "tiny.png")
    result = graphconv("run", tmp_path / "gap.yaml", "--images", folder, "--output-dir", tmp_path / "maps")
    assert result.returncode == 2 and result.stderr.count("graphconv:") == 1, result.stderr
    assert "tiny.png" in result.stderr and "smaller than the classifier's 8x8 crop" in result.stderr
    assert ("--pad-image reflect (or constant) pads its border, so that crops fit and the map reaches its edges; or "
            "--resize S brings a picture's shorter side to S pixels") in result.stderr  # as --image says it
    assert "fc or flatten" not in result.stderr
    assert np.load(tmp_path / "maps" / "big.npy").shape[:2] == (1, 3)


def test_compiling_an_onnx_file_that_states_no_preprocess_says_its_pixels_go_in_as_they_are(tmp_path, picture):
    """`run model.onnx` says an ONNX file states no preprocess; a model folder compiled
    from one ran (--image, --images) on raw 0..255 pixels without a word. Compiling says
    it, with the same note, and the folder names its source (`compiled: {source}`), so
    each run of it says it too, as does a folder recompiled from it."""
    pytest.importorskip("onnx")
    from graphconv.frontends import load_network
    from graphconv.frontends.onnx_export import save_onnx
    graph = load_network(SPECS / "lenet.yaml")
    graph.meta.pop("preprocess", None)
    save_onnx(graph, tmp_path / "lenet.onnx")
    result = graphconv_in_process("compile", tmp_path / "lenet.onnx", "-o", tmp_path / "fcn")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("lenet.onnx states no preprocess (an ONNX file has no place for one)") == 1
    assert ("so images it runs on (--image) go in as they are, pixels 0..255 (an --input array goes in as given)"
            in result.stderr)  # compile cannot tell how it will be fed: an --input user was told of pixels
    assert graphconv_in_process("compile", tmp_path / "fcn", "-o", tmp_path / "again").returncode == 0
    said = "was compiled from lenet.onnx, which states no preprocess (an ONNX file has no place for one)"
    for runs in (["--image", picture / "page.png", "--output", tmp_path / "map.npy"],
                 ["--images", picture / "page.png", "--output-dir", tmp_path / "maps"]):
        for folder in ("fcn", "again"):
            result = graphconv_in_process("run", tmp_path / folder, *runs)
            assert result.returncode == 0 and result.stderr.count(f"{folder} {said}") == 1, result.stderr
    result = graphconv_in_process("compile", SPECS / "lenet.yaml", "-o", tmp_path / "fcn2")
    assert result.returncode == 0 and "states no preprocess" not in result.stderr
    result = graphconv_in_process("run", tmp_path / "fcn2", "--image", picture / "page.png")
    assert result.returncode == 0 and "states no preprocess" not in result.stderr
    assert "source" not in (tmp_path / "fcn2" / "model.yaml").read_text()  # only an ONNX file's name is kept
    from graphconv import compile_model, load
    assert compile_model(load(tmp_path / "lenet.onnx")).graph.meta["compiled"]["source"] == "lenet.onnx"


def test_a_spec_imported_without_a_preprocess_says_its_pixels_go_in_as_they_are_at_each_run(tmp_path, picture):
    """import notes once that the ONNX file states no preprocess; a review then ran the
    imported spec, and the folder compiled from it, on photos (raw 0..255 pixels, scores
    in the hundreds) without a word. Each run says it now, and how to state it; a spec
    imported with --scale, or given a preprocess block by hand, does not."""
    pytest.importorskip("onnx")
    from graphconv.frontends import load_network
    from graphconv.frontends.onnx_export import save_onnx
    graph = load_network(SPECS / "lenet.yaml")
    graph.meta.pop("preprocess", None)
    save_onnx(graph, tmp_path / "lenet.onnx")
    image = ["--image", picture / "page.png"]
    resized = [*image, "--resize", "32", "32"]  # the classifier itself, on the picture resized to its crop
    assert graphconv_in_process("import", tmp_path / "lenet.onnx", "-o", tmp_path / "net.yaml").returncode == 0
    result = graphconv_in_process("run", tmp_path / "net.yaml", *resized)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("net.yaml was imported from lenet.onnx without a preprocess block, so the pixels go in "
                               "as they are, 0..255: if the model was trained on normalised pixels, write one into "
                               "the spec (preprocess: {scale: 0.00392157") == 1, result.stderr
    assert graphconv_in_process("compile", tmp_path / "net.yaml", "-o", tmp_path / "fcn").returncode == 0
    result = graphconv_in_process("run", tmp_path / "fcn", *image, "--output", tmp_path / "map.npy")
    assert result.returncode == 0 and "fcn was compiled from lenet.onnx, which states no preprocess" in result.stderr
    assert graphconv_in_process("import", tmp_path / "lenet.onnx", "-o", tmp_path / "scaled.yaml",
                                "--scale", "0.00392157").returncode == 0
    text = (tmp_path / "net.yaml").read_text().replace("\nlayers:", "\npreprocess: {scale: 0.00392157}\nlayers:", 1)
    (tmp_path / "edited.yaml").write_text(text)
    for spec in ("scaled.yaml", "edited.yaml"):
        result = graphconv_in_process("run", tmp_path / spec, *resized)
        assert result.returncode == 0 and "go in as they are" not in result.stderr, result.stderr


def test_cli_images_with_control_characters_in_their_names_are_named_once_and_escaped(model_dir, picture, tmp_path,
                                                                                       capsys):
    """A downloaded folder's file names can hold a terminal's escape sequences: each
    failing image is named once, its control characters escaped, a CJK name's ideographic
    space kept as it is."""
    from graphconv.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(picture / "page.png", folder / "ok.png")
    for name in ("bad\x1b[31m.png", "\u5199\u771f\u30001.png"):
        (folder / name).write_bytes(b"\x89PNG broken")
    assert main(["run", str(model_dir), "--images", str(folder), "--output-dir", str(tmp_path / "maps")]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and err.count("bad\\x1b[31m.png") == 1
    assert err.count("\u5199\u771f\u30001.png") == 1


def test_cli_many_images_from_a_messy_folder_say_what_they_leave_out_and_why(model_dir, picture, tmp_path, capsys):
    """A folder's subfolders were not searched, without a word; raw and HEIC photos were
    "not of an image format" with no name; an animated GIF was mapped from its first
    frame unsaid; a broken link was "image not found"."""
    from graphconv.cli import main

    folder = tmp_path / "photos"
    (folder / "2023" / "trip").mkdir(parents=True)
    (folder / "2024").mkdir()
    (folder / "empty").mkdir()
    for image in (folder / "a.png", folder / "2023" / "trip" / "b.png", folder / "2024" / "c.png"):
        shutil.copy(picture / "page.png", image)
    for name in ("IMG_1.HEIC", "IMG_2.heic", "DSC_1.NEF"):
        (folder / name).write_bytes(b"raw")
    frames = [Image.open(picture / "page.png").convert("L"), Image.open(picture / "page.png").rotate(180)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    (folder / "broken.png").symlink_to(folder / "gone.png")
    assert main(["run", str(model_dir), "--images", str(folder), "--output-dir", str(tmp_path / "maps")]) == 2
    err = capsys.readouterr().err
    assert "left out 3 files: 3 not of an image format graphconv reads (.heic x2, .nef x1)" in err
    assert "2 subfolders with images in them were not searched" in err and f"'{folder}/**/*' maps them too" in err
    assert "anim.gif: it has 2 frames, and its map is of the first only" in err
    assert "broken.png: is a broken link: what it points to, " in err and "image not found" not in err
    assert main(["run", str(model_dir), "--images", str(folder / "2024"), "--output-dir", str(tmp_path / "m2")]) == 0
    assert "subfolder" not in capsys.readouterr().err


def test_cli_a_pattern_whose_folder_has_brackets_says_they_are_a_wildcard(model_dir, picture, tmp_path, capsys):
    """'Wedding [2023]/*.jpg' matched no file, as [2023] is a wildcard: say so, and how."""
    from graphconv.cli import main

    folder = tmp_path / "Wedding [2023]"
    folder.mkdir()
    shutil.copy(picture / "page.png", folder / "IMG_1.png")
    assert main(["run", str(model_dir), "--images", f"{folder}/*.png", "--output-dir", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "matches no file: [...] in a pattern is a wildcard" in err and f"--images '{folder}'" in err
    assert main(["run", str(model_dir), "--images", str(tmp_path / "Wedding [[]2023]" / "*.png"), "--output-dir",
                 str(tmp_path / "m")]) == 0, "the escaped pattern the hint gives maps it"
    assert main(["run", str(model_dir), "--images", str(tmp_path / "nowhere" / "*.png"), "--output-dir",
                 str(tmp_path / "m")]) == 2
    assert "wildcard" not in capsys.readouterr().err


def test_cli_a_folder_with_brackets_gets_patterns_that_match_its_subfolders(model_dir, picture, tmp_path, capsys):
    """A folder 'Wed [2023]' whose subfolders hold images: the pattern the note (and the
    error, where the folder itself holds none) suggests was not glob-escaped, so it
    matched nothing. Escaped, it maps them."""
    from graphconv.cli import main

    folder = tmp_path / "Wed [2023]"
    (folder / "day1").mkdir(parents=True)
    shutil.copy(picture / "page.png", folder / "day1" / "IMG_2.png")
    assert main(["run", str(model_dir), "--images", str(folder), "--output-dir", str(tmp_path / "m")]) == 2
    suggested = re.search(r"give --images '([^']+)'", capsys.readouterr().err).group(1)
    assert main(["run", str(model_dir), "--images", suggested, "--output-dir", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "day1" / "IMG_2.npy").is_file()
    shutil.copy(picture / "page.png", folder / "IMG_1.png")
    capsys.readouterr()
    assert main(["run", str(model_dir), "--images", str(folder), "--output-dir", str(tmp_path / "n")]) == 0
    suggested = re.search(r"--images '([^']+)' maps them too", capsys.readouterr().err).group(1)
    assert main(["run", str(model_dir), "--images", suggested, "--output-dir", str(tmp_path / "o")]) == 0
    assert sorted(str(p.relative_to(tmp_path / "o")) for p in (tmp_path / "o").rglob("*.npy")) == \
        ["IMG_1.npy", os.path.join("day1", "IMG_2.npy")]


def _interrupted_at(monkeypatch, name: str):
    """Ctrl-C as a batch reaches the image `name` (`cluster._one_image` raises
    KeyboardInterrupt for it); the function it stood for, to put back."""
    from graphconv import cluster

    one_image = cluster._one_image

    def stopped(ref, image, *rest):
        if image.endswith(name):
            raise KeyboardInterrupt
        return one_image(ref, image, *rest)
    monkeypatch.setattr(cluster, "_one_image", stopped)
    return one_image


def test_cli_a_stopped_batch_keeps_the_heatmaps_of_its_maps_and_has_said_its_bad_images(model_dir, picture, tmp_path,
                                                                                     monkeypatch, capsys):
    """Heatmaps were drawn after the last map, and errors said after it: Ctrl-C kept 15
    maps, no heatmap and no word of the broken photos, and --skip-existing then redid
    every map for its missing heatmap. Each image's heatmap is now drawn and its error
    said as it is done."""
    from graphconv import cluster
    from graphconv.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(picture / "page.png", folder / "a.png")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    shutil.copy(picture / "page.png", folder / "c.png")
    one_image = _interrupted_at(monkeypatch, "c.png")
    run = ["run", str(model_dir), "--images", str(folder), "--output-dir", str(tmp_path / "maps"), "--heatmap", "1"]
    assert main(run) == 130
    err = capsys.readouterr().err
    assert err.index("b.png") < err.index("interrupted (")
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["a-heatmap-1.png", "a.npy", "graphconv-maps.csv"]
    monkeypatch.setattr(cluster, "_one_image", one_image)
    (tmp_path / "maps" / "a-heatmap-1.png").unlink()  # as a batch of --workers stopped before drawing it
    assert main([*run, "--skip-existing"]) == 2  # b.png is still broken
    captured = capsys.readouterr()
    assert "1 of 3 images has its map in" in captured.err and "replaced" not in captured.err
    assert "1 heatmap drawn from its map" in captured.err and (tmp_path / "maps" / "a-heatmap-1.png").exists()
    assert "1 of 2 images -> " in captured.out


def test_cli_a_batch_stopped_by_ctrl_c_says_how_many_maps_it_kept_and_how_to_go_on(model_dir, picture, tmp_path,
                                                                                  monkeypatch, capsys):
    """Ctrl-C said "what it was writing is removed" alone: the maps finished are kept, and
    --skip-existing goes on from there."""
    from graphconv import cluster
    from graphconv.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(picture / "page.png", folder / f"{name}.png")
    _interrupted_at(monkeypatch, "b.png")
    run = ["run", str(model_dir), "--images", str(folder), "--output-dir", str(tmp_path / "maps")]
    assert main(run) == 130
    err = capsys.readouterr().err
    assert "interrupted (what it was writing is removed; 1 of 3 maps was finished and is kept in " in err
    assert "the same command with --skip-existing continues the batch)" in err
    assert main([*run, "--skip-existing"]) == 130
    err = capsys.readouterr().err
    assert "interrupted (what it was writing is removed)" in err and "finished and" not in err
    shutil.rmtree(tmp_path / "maps")
    monkeypatch.setattr(cluster, "_one_image", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main(run) == 130  # nothing finished: the folder it made is gone, and not said to keep maps
    err = capsys.readouterr().err
    assert "interrupted (what it was writing is removed)" in err and "kept in" not in err, err
    assert not (tmp_path / "maps").exists()


def test_cli_a_batch_counts_the_npy_maps_it_replaced_and_says_its_notes_after_the_work(model_dir, picture, tmp_path):
    """The .npy maps 'replaced' were counted before any image ran, so a map whose image
    then failed (and was kept) counted too; now they are counted from the maps written.
    And the batch's notes came some at once, some after the work (their order on stderr
    depended on which): all come after it now, as every command's notes do."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for name in ("a", "b"):
        shutil.copy(picture / "page.png", folder / f"{name}.png")
    shutil.copy(picture / "page.png", folder / "more" / "c.png")
    (folder / "notes.txt").write_text("not an image")
    run = ["run", model_dir, "--images", folder, "--output-dir", tmp_path / "maps"]
    first = graphconv(*run)
    assert first.returncode == 0, first.stderr
    kept = (tmp_path / "maps" / "b.npy").read_bytes()
    (folder / "b.png").write_bytes((folder / "b.png").read_bytes()[:100])  # cut short: b fails now
    (tmp_path / "maps" / "graphconv-maps.csv").unlink()  # maps it does not list: their replacement is noted
    result = graphconv(*run)
    assert result.returncode == 2, result.stderr
    assert "note: 1 .npy map in" in result.stderr, result.stderr  # a's; b's is kept as it was
    assert (tmp_path / "maps" / "b.npy").read_bytes() == kept
    lines = result.stderr.splitlines()
    error = next(i for i, line in enumerate(lines) if line.startswith("graphconv:") and "b.png" in line)
    notes = [i for i, line in enumerate(lines) if line.startswith("note:")]
    assert len(notes) >= 3 and min(notes) > error, result.stderr  # left out notes.txt, the subfolder, replaced


def test_cli_many_photos_turned_upright_per_their_exif_orientation_are_counted_in_one_note(model_dir, picture,
                                                                                          tmp_path):
    """Photos were turned upright per their EXIF orientation without a word (while a TIFF,
    mapped as stored, got a note): one line for the batch says how many were turned."""
    folder = tmp_path / "phone"
    folder.mkdir()
    page = Image.open(picture / "page.png")
    for name, value in (("a.jpg", 6), ("b.jpg", 3), ("c.jpg", 1)):
        exif = Image.Exif()
        exif[0x0112] = value
        page.save(folder / name, exif=exif)
    result = graphconv("run", model_dir, "--images", folder, "--output-dir", tmp_path / "maps")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("turned upright") == 1
    assert "note: 2 photos turned upright per their EXIF orientation (their maps and cells are the upright " \
           "pictures')" in result.stderr


def test_cli_a_tile_whose_halo_is_most_of_the_work_is_noted(model_dir, picture, tmp_path):
    """--tile 200 over a slide computed 15.9x its pixels without a word; the note names
    a tile the memory budget allows."""
    small = graphconv("run", model_dir, "--image", picture / "tiled.tif", "--tile", "48", "--output", tmp_path / "s.npy")
    assert small.returncode == 0, small.stderr
    assert re.search(r"note: tiles of 48x48 compute [\d.]+x the image's pixels \(each tile's halo again\); the "
                     r"whole image fits in one tile \(leave out --tile\)", small.stderr), small.stderr
    whole = graphconv("run", model_dir, "--image", picture / "tiled.tif", "--output", tmp_path / "w.npy")
    assert whole.returncode == 0 and "each tile's halo again" not in whole.stderr
    (tmp_path / "slides").mkdir()  # a batch said nothing: 7 slides at --tile 400 took 575 s, at 512 31 s
    shutil.copy(picture / "tiled.tif", tmp_path / "slides")
    batch = graphconv_in_process("run", model_dir, "--images", tmp_path / "slides", "--output-dir", tmp_path / "maps",
                                 "--tile", "48")
    assert batch.returncode == 0, batch.stderr
    assert re.search(r"note: \S*tiled.tif: tiles of 48x48 compute [\d.]+x the image's pixels \(each tile's halo again\); the "
                     r"whole image fits in one tile \(leave out --tile\)", batch.stderr + batch.stdout), batch.stderr
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), np.load(tmp_path / "w.npy"), rtol=1e-5, atol=1e-7)


def test_a_raster_with_no_data_gets_the_tile_notes_too(model_dir, tmp_path):
    """Where a raster declares a no-data value (most satellite products), neither the
    wasteful --tile note nor the memory budget's was given: --tile 64 over a scene
    started 540,225 one-cell tiles, 230x the work, unsaid."""
    pixels = (np.random.default_rng(1).random((1000, 1000)) * 254 + 1).astype(np.uint8)
    pixels[700:, :300] = 0
    tifffile.imwrite(tmp_path / "scene.tif", pixels, tile=(64, 64), extratags=[(42113, 2, 2, "0", True)])
    small = graphconv("run", model_dir, "--image", tmp_path / "scene.tif", "--tile", "48", "--output",
                      tmp_path / "s.npy")
    assert small.returncode == 0, small.stderr
    assert re.search(r"note: tiles of 48x48 compute [\d.]+x the image's pixels \(each tile's halo again, less the "
                     r"tiles of cells left out alone\); the whole image fits in one tile", small.stderr), small.stderr
    tight = graphconv("run", model_dir, "--image", tmp_path / "scene.tif", "--memory-limit", "40M", "--output",
                      tmp_path / "t.npy")
    assert tight.returncode == 0, tight.stderr
    assert re.search(r"note: the whole 1000x1000 image would need [\d.]+ MB, over the 40.0 MB budget \(39.0 MB of it "
                     r"beside the 1000.0 KB the image's reader keeps\): evaluating it in exact tiles", tight.stderr), \
        tight.stderr  # 1024 rows of its decoded chunks


def test_a_wasteful_tile_s_note_names_a_roomier_tile_where_the_image_needs_several(model_dir, capsys):
    """...and not a tile larger than the image (--tile 4015 for a 4000x4000 one) where
    one tile holds it all."""
    import graphconv.tiled_cli as tiled_cli
    from graphconv.tiling import DenseGrid, plan_tiles, tile_bytes

    grid = DenseGrid(Model.load(model_dir))
    budget = tile_bytes(grid, (240, 240))  # room for a tile of about 240, not the whole image (the estimate is this machine's)
    tiled_cli._note_a_wasteful_tile(grid, (600, 700), plan_tiles(grid, (600, 700), 48), budget)
    note = re.search(r"--tile (\d+) would compute ([\d.]+)x, within the memory budget", capsys.readouterr().err)
    assert note and int(note.group(1)) < 700 and len(plan_tiles(grid, (600, 700), int(note.group(1))).tiles) > 1


def test_cli_inspect_plans_for_a_slide_as_run_reads_it(model_dir, tmp_path):
    """inspect took only --input-size: planning tiles for a slide's level meant working
    out the level's size by hand. --image (with --level, --mpp, ...) takes it as run does."""
    from test_sources import write_pyramid

    pytest.importorskip("imagecodecs")
    slide = tmp_path / "slide.tif"
    write_pyramid(slide)
    planned = graphconv("inspect", model_dir, "--image", slide, "--level", "1", "--tile", "64")
    assert planned.returncode == 0, planned.stderr
    assert "image: 150x200 pixels, level 1 of a 3-level pyramid" in planned.stderr
    by_size = graphconv("inspect", model_dir, "--input-size", "150", "200", "--tile", "64")
    assert planned.stdout == by_size.stdout
    both = graphconv("inspect", model_dir, "--image", slide, "--input-size", "150", "200")
    assert both.returncode == 2 and "--image gives the input size: drop --input-size" in both.stderr
    alone = graphconv("inspect", model_dir, "--level", "1")
    assert alone.returncode == 2 and "say how to read an --image" in alone.stderr


def test_a_picture_s_map_shape_comes_from_its_header(model_dir, picture, monkeypatch):
    """Checking an existing .npy before a rerun decoded every photo of the batch, one after
    another, before any worker started: the map's shape needs only the picture's size."""
    from graphconv import images
    from graphconv.cluster import image_map_shape
    from graphconv.model import Model

    model = Model.load(model_dir)
    options = MapOptions(downsample=2)
    expected = image_map_shape(model, options.grid(model), str(picture / "page.png"), options, None)
    monkeypatch.setattr(images, "load_image", lambda *a, **k: pytest.fail("a picture was decoded"))
    assert image_map_shape(model, options.grid(model), str(picture / "page.png"), options, None) == expected
    assert expected[1] == (1, model.output_channels, *model.map_size(75, 85))


# ---- run --resume: a stopped tiled run goes on where it stopped -------------------------------------

def _read_any_map(path: Path) -> np.ndarray:
    if path.suffix == ".zarr":
        return zarr.open_array(str(path), mode="r")[:]
    if path.suffix == ".tif":
        return tifffile.imread(path)
    return np.load(path)


def _stop_after(monkeypatch, tiles: int, exception=KeyboardInterrupt) -> list:
    """Make the tiled run raise `exception` (Ctrl-C's) as it is about to write its tile
    number `tiles` + 1, in-process or on a Dask run's client; returns the tiles written."""
    import graphconv.tiling

    written, write = [], graphconv.tiling.write_block

    def stopping(out, tile, block, progress=None):
        if len(written) == tiles:
            raise exception()
        write(out, tile, block, progress)
        written.append(tile)
    monkeypatch.setattr(graphconv.tiling, "write_block", stopping)
    return written


@pytest.fixture(scope="module")
def big_page(tmp_path_factory):
    """A 300x340 picture: 598 tiles of 40 px, 20 of 100."""
    path = tmp_path_factory.mktemp("big") / "big.png"
    Image.fromarray((np.random.default_rng(5).random((300, 340)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("suffix", [".zarr", ".npy", ".tif"])
def test_resume_after_ctrl_c_computes_only_the_tiles_not_done_and_equals_a_straight_run(model_dir, big_page, tmp_path,
                                                                                     monkeypatch, capsys, suffix):
    from graphconv.cli import main

    run = ["run", str(model_dir), "--image", str(big_page), "--tile", "100", "--classes", "1,4"]
    straight, out = tmp_path / f"straight{suffix}", tmp_path / f"map{suffix}"
    assert main([*run, "--output", str(straight)]) == 0
    written = _stop_after(monkeypatch, 7)
    assert main([*run, "--output", str(out), "--resume"]) == 130
    assert "the tiles done are kept in" in capsys.readouterr().err
    partial = tmp_path / f"map{suffix}.partial"
    assert not out.exists() and partial.is_dir()
    assert len((partial / "tiles-done.txt").read_text().splitlines()) == 7
    monkeypatch.undo()
    written = _stop_after(monkeypatch, 10 ** 6)  # counts the tiles written
    capsys.readouterr()
    assert main([*run, "--output", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "resume: 7 of 20 tiles were done by an earlier run" in err and "computing 13" in err
    assert len(written) == 13
    assert not partial.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".graphconv")]
    np.testing.assert_array_equal(_read_any_map(out), _read_any_map(straight))
    if suffix == ".zarr":
        assert dict(zarr.open_array(str(out)).attrs) == dict(zarr.open_array(str(straight)).attrs)
    assert main([*run, "--output", str(out), "--resume"]) == 0  # the finished command again: said, computed again
    assert "--resume has nothing to go on from, so the whole map is computed again" in capsys.readouterr().err
    np.testing.assert_array_equal(_read_any_map(out), _read_any_map(straight))


def test_a_resumable_run_whose_disk_fills_says_its_tiles_done_are_kept(model_dir, big_page, tmp_path, monkeypatch,
                                                                      capsys):
    """A full disk mid-run under --resume said "No space left on device" alone, though
    the tiles done were kept for the same command to go on from."""
    import errno

    from graphconv.cli import main

    run = ["run", str(model_dir), "--image", str(big_page), "--tile", "100", "--output", str(tmp_path / "m.zarr")]
    _stop_after(monkeypatch, 5, lambda: OSError(errno.ENOSPC, "No space left on device"))
    assert main([*run, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("graphconv: ") and "No space left on device" in err, err
    assert err.endswith(f"(the tiles done are kept in {tmp_path / 'm.zarr.partial'}: the same command with --resume "
                        "continues it)"), err
    monkeypatch.undo()
    assert main([*run, "--resume"]) == 0
    assert "resume: 5 of 20 tiles were done by an earlier run" in capsys.readouterr().err


@pytest.mark.parametrize("output_format", ["npy", "tif"])
def test_images_resume_goes_on_from_the_tiles_done_of_the_map_in_progress(model_dir, big_page, tmp_path, monkeypatch,
                                                                         capsys, output_format):
    """An --images batch of slides stopped mid-slide lost that slide's tiles: the same
    command with --skip-existing computed it from the start. With --resume, each map
    computed in tiles is written as `run --image --resume` writes one (a partial map
    beside it), finished maps are left out, and the map in progress goes on from its
    tiles done; the maps equal a straight run's bit for bit."""
    from graphconv.cli import main

    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(big_page, folder / "a.png")
    Image.fromarray((np.random.default_rng(9).random((300, 340)) * 255).astype(np.uint8)).save(folder / "b.png")
    run = ["run", str(model_dir), "--images", str(folder), "--tile", "100", "--output-format", output_format]
    assert main([*run, "--output-dir", str(tmp_path / "straight")]) == 0
    out = tmp_path / "maps"
    _stop_after(monkeypatch, 27)  # a's 20 tiles, 7 of b's
    capsys.readouterr()
    assert main([*run, "--output-dir", str(out), "--resume"]) == 130
    err = capsys.readouterr().err
    partial = f"{out}/b.{output_format}.partial"
    assert (f"graphconv: interrupted (1 of 2 maps was finished and is kept in {out}, and the tiles done of 1 "
            f"more in {partial}; the same command goes on from them)") in err, err
    assert len(Path(partial, "tiles-done.txt").read_text().splitlines()) == 7
    monkeypatch.undo()
    written = _stop_after(monkeypatch, 10 ** 6)  # counts the tiles written
    capsys.readouterr()
    assert main([*run, "--output-dir", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "1 of 2 images has its map in" in err and "left out (--resume)" in err
    assert "note: --resume: 1 map went on from the tiles an earlier run had done (7 of 20 tiles)" in err, err
    assert len(written) == 13
    assert sorted(p.name for p in out.iterdir()) == [f"a.{output_format}", f"b.{output_format}", "graphconv-maps.csv"]
    for name in ("a", "b"):
        np.testing.assert_array_equal(_read_any_map(out / f"{name}.{output_format}"),
                                      _read_any_map(tmp_path / "straight" / f"{name}.{output_format}"))
    if output_format == "tif":
        with tifffile.TiffFile(out / "b.tif") as done, tifffile.TiffFile(tmp_path / "straight" / "b.tif") as straight:
            assert done.pages[0].description == straight.pages[0].description


def test_resume_takes_an_image_whose_name_fills_the_file_system_s_limit(model_dir, big_page, tmp_path, monkeypatch,
                                                                       capsys):
    """A slide named in 247 characters mapped without --resume, and was refused with it
    ("File name too long": `<name>.npy.partial` is 259); its partial map's name is now cut
    to fit, with a digest, and the stopped batch goes on from it."""
    from graphconv.cli import main

    folder = tmp_path / "slides"
    folder.mkdir()
    long_name = "s" * 247
    shutil.copy(big_page, folder / f"{long_name}.png")
    run = ["run", str(model_dir), "--images", str(folder), "--tile", "100"]
    assert main([*run, "--output-dir", str(tmp_path / "straight")]) == 0
    out = tmp_path / "maps"
    _stop_after(monkeypatch, 7)
    assert main([*run, "--output-dir", str(out), "--resume"]) == 130
    [partial] = [path for path in out.iterdir() if path.name.endswith(".partial")]
    assert partial.name.startswith("s" * 200) and len(partial.name) == 255
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*run, "--output-dir", str(out), "--resume"]) == 0
    assert "went on from the tiles an earlier run had done (7 of 20 tiles)" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(out / f"{long_name}.npy"),
                                  np.load(tmp_path / "straight" / f"{long_name}.npy"))
    assert not partial.exists()


@pytest.mark.parametrize("on_a_cluster", [False, True], ids=["here", "cluster"])
@pytest.mark.parametrize("other_run", ["stops", "finishes"])
def test_a_resume_batch_waits_for_the_map_another_batch_is_writing(model_dir, big_page, tmp_path, monkeypatch,
                                                                   other_run, on_a_cluster):
    """Two --resume batches over one --output-dir (a requeued array task beside its
    predecessor): an image whose partial map the other is writing failed in both ("another
    graphconv run is writing it now"), both exited 2, and every map ended written. Now it
    waits until the rest are done, then for the other run: the map that run finishes is
    kept, one it stops goes on from its tiles; both equal a straight run's."""
    import fcntl

    from graphconv import cluster
    from graphconv.cli import main

    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(big_page, folder / "a.png")
    Image.fromarray((np.random.default_rng(9).random((300, 340)) * 255).astype(np.uint8)).save(folder / "b.png")
    run = ["run", str(model_dir), "--images", str(folder), "--tile", "100"]
    assert main([*run, "--output-dir", str(tmp_path / "straight")]) == 0
    out = tmp_path / "maps"
    _stop_after(monkeypatch, 27)  # a's 20 tiles, 7 of b's
    assert main([*run, "--output-dir", str(out), "--resume"]) == 130
    monkeypatch.undo()
    os.remove(out / "a.npy")  # for this batch to map while b's partial map is held
    held = os.open(out / "b.npy.partial", os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # the other batch, writing b
    ref, options = ModelRef(str(model_dir)), MapOptions(resume=True, listed_in=str(out))
    waited = []

    def the_other_run_ends(image):
        waited.append((Path(image).name, (out / "a.npy").exists()))
        os.close(held)
        if other_run == "finishes":
            [made] = run_images(ref, [str(folder / "b.png")], str(out), options, 100)
            assert made.error is None and made.resumed == (7, 20)
    monkeypatch.setattr(cluster, "waiting_note", the_other_run_ends)
    with contextlib.ExitStack() as stack:
        client = None
        if on_a_cluster:
            distributed = pytest.importorskip("distributed")
            one = stack.enter_context(distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1,
                                                               dashboard_address=None, memory_limit="64GB"))
            client = stack.enter_context(distributed.Client(one))
        a, b = run_images(ref, [str(folder / "a.png"), str(folder / "b.png")], str(out), options, 100, client=client)
    assert waited == [("b.png", True)], "b waited for after a was mapped"
    assert a.error is None and b.error is None, (a.error, b.error)
    assert b.made_meanwhile if other_run == "finishes" else b.resumed == (7, 20)
    for name in ("a.npy", "b.npy"):
        np.testing.assert_array_equal(np.load(out / name), np.load(tmp_path / "straight" / name))
    assert not (out / "b.npy.partial").exists()


@pytest.mark.parametrize("other_run", ["stops", "finishes"])
def test_a_resumed_image_waits_for_the_run_resuming_its_partial_map(model_dir, big_page, tmp_path, monkeypatch,
                                                                    capsys, other_run):
    """`run --image --resume` beside another run resuming the same partial map (a
    requeued job beside its predecessor) was refused at once (exit 2), though that run
    was making this very map. Now it waits: a map that run finishes is kept (exit 0),
    one it stops goes on from its tiles; either equals a straight run's."""
    import fcntl

    from graphconv import cluster
    from graphconv.cli import main

    run = ["run", str(model_dir), "--image", str(big_page), "--tile", "100"]
    assert main([*run, "--output", str(tmp_path / "straight.npy")]) == 0
    output, partial = tmp_path / "map.npy", tmp_path / "map.npy.partial"
    _stop_after(monkeypatch, 7)
    assert main([*run, "--output", str(output), "--resume"]) == 130
    monkeypatch.undo()
    held = os.open(partial, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # the other run, resuming it
    waited = []

    def the_other_run_ends(image):
        waited.append(image)
        if other_run == "finishes":  # its map renamed into place, its partial map gone, then its lock let go
            shutil.copy(tmp_path / "straight.npy", output)
            shutil.rmtree(partial)
        os.close(held)
    monkeypatch.setattr(cluster, "waiting_note", the_other_run_ends)
    capsys.readouterr()
    assert main([*run, "--output", str(output), "--resume"]) == 0
    captured = capsys.readouterr()
    assert waited == [str(big_page)]
    if other_run == "finishes":
        assert "another graphconv run finished" in captured.err and f"-> {output}" in captured.out
    else:
        assert "over 13 of 20 tiles (7 done before, not computed)" in captured.out
    np.testing.assert_array_equal(np.load(output), np.load(tmp_path / "straight.npy"))
    assert not partial.exists()


def test_images_without_resume_removes_the_stopped_run_s_partial_map_of_a_map_it_wrote_whole(model_dir, big_page,
                                                                                          tmp_path, monkeypatch,
                                                                                          capsys):
    """An --images --resume batch stopped mid-slide, then run again without --resume: the
    slide's map was written whole and its partial map stayed beside it, unsaid (a single
    --image run removes it), and a later --resume refused it once the image changed. A
    partial map of another job (other tiles) is left, and said."""
    from graphconv.cli import main

    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(big_page, folder / "a.png")
    shutil.copy(big_page, folder / "b.png")
    out = tmp_path / "maps"
    run = ["run", str(model_dir), "--images", str(folder), "--output-dir", str(out)]
    _stop_after(monkeypatch, 27)  # a's 20 tiles, 7 of b's
    assert main([*run, "--tile", "100", "--resume"]) == 130
    partial = out / "b.npy.partial"
    assert partial.is_dir()
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*run, "--tile", "120"]) == 0  # another tile plan: another job's partial map
    err = capsys.readouterr().err
    assert partial.is_dir() and "note: 2 partial maps" not in err
    assert (f"note: 1 partial map of a stopped --resume run of another job is left as it is (such as {partial}, "
            "7 tiles done: tile plan") in err, err
    assert main([*run, "--tile", "100"]) == 0
    err = capsys.readouterr().err
    assert not partial.exists()
    assert (f"note: removed 1 partial map of a stopped --resume run of the same map (such as {partial}, 7 tiles "
            "done): this run computed the whole map without --resume") in err, err
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "b.npy", "graphconv-maps.csv"]


def _resumed_page_runs(model_dir, tmp_path, batch: bool, seed: int) -> tuple[list, list, list, tuple]:
    """A 900x900 page in a folder, and the --resume command mapping it (--images over the
    folder, or --image), the arguments of its output and of a straight run's, and the two
    maps' paths."""
    folder = tmp_path / "slides"
    folder.mkdir()
    big_page = folder / "big.png"
    Image.fromarray((np.random.default_rng(seed).random((900, 900)) * 255).astype(np.uint8)).save(big_page)
    if batch:
        return (["run", str(model_dir), "--images", str(folder), "--resume"],
                ["--output-dir", str(tmp_path / "maps")], ["--output-dir", str(tmp_path / "straight")],
                (tmp_path / "maps" / "big.npy", tmp_path / "straight" / "big.npy"))
    return (["run", str(model_dir), "--image", str(big_page), "--resume"],
            ["--output", str(tmp_path / "map.npy")], ["--output", str(tmp_path / "straight.npy")],
            (tmp_path / "map.npy", tmp_path / "straight.npy"))


@pytest.mark.parametrize("batch", [False, True], ids=["image", "images"])
def test_resume_without_tile_keeps_the_stopped_run_s_tiles_under_another_memory_budget(model_dir, tmp_path,
                                                                                     monkeypatch, capsys, batch):
    """Without --tile the tiles follow the memory budget, so resuming with another
    --workers count (each worker's share), another --memory-limit or on a machine with
    more memory chose other tiles: the partial map was another job's and refused. Now a
    --resume without --tile takes the stopped run's tile where it fits the budget."""
    from graphconv.cli import main
    from graphconv.tiling import DenseGrid

    run, out, straight, maps = _resumed_page_runs(model_dir, tmp_path, batch, seed=7)
    small = DenseGrid(Model.load(model_dir)).peak_bytes((900, 900)) * 3 // 4  # 16 tiles; 4x: the whole image
    assert main([*run, *straight, "--memory-limit", str(small)]) == 0
    _stop_after(monkeypatch, 2)
    assert main([*run, *out, "--memory-limit", str(small)]) == 130
    monkeypatch.undo()
    written = _stop_after(monkeypatch, 10 ** 6)
    capsys.readouterr()
    assert main([*run, *out, "--memory-limit", str(small * 4)]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    tiles = len(written) + 2
    assert tiles > 3 and ("went on from the tiles an earlier run had done (2 of" in err if batch
                          else f"resume: 2 of {tiles} tiles were done by an earlier run" in err), err
    np.testing.assert_array_equal(np.load(maps[0]), np.load(maps[1]))


@pytest.mark.parametrize("how", ["image", "images", "scheduler"])
def test_resume_with_less_memory_computes_the_stopped_run_s_tiles_in_pieces(model_dir, tmp_path, monkeypatch, capsys,
                                                                            how):
    """A run begun with more memory (a larger Dask worker picked the slide up, then a
    smaller one resumed it) planned tiles this run's budget does not fit: the partial map
    was refused as another job's (its tile plan). Now its tiles are computed here in
    pieces that fit, and its tiles done are kept."""
    from graphconv.tiling import DenseGrid, tile_bytes

    batch = how == "images"
    run, out, straight, maps = _resumed_page_runs(model_dir, tmp_path, batch, seed=8)
    whole = tile_bytes(DenseGrid(Model.load(model_dir)), (900, 900))
    roomy, tight = whole // 2, whole // 3  # 4 tiles; their boxes over the tight budget
    with contextlib.ExitStack() as stack:
        one = None
        if how == "scheduler":  # the tiles sent as tasks: in process, the worker's memory is the test's (far under)
            distributed = pytest.importorskip("distributed")
            one = stack.enter_context(distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=1,
                                                               memory_limit="64GB", dashboard_address=None))
            run += ["--scheduler", one.scheduler_address]
        _resume_with_less_memory(run, out, straight, roomy, tight, monkeypatch, capsys, batch, model_dir, one)
    np.testing.assert_allclose(np.load(maps[0]), np.load(maps[1]), rtol=1e-5, atol=1e-6)


def _resume_with_less_memory(run, out, straight, roomy, tight, monkeypatch, capsys, batch, model_dir, cluster):
    from graphconv.cli import main
    from graphconv.tiling import DenseGrid, tile_bytes

    assert main([*run, *straight, "--memory-limit", str(roomy)]) == 0
    _stop_after(monkeypatch, 1)
    assert main([*run, *out, "--memory-limit", str(roomy)]) == 130
    monkeypatch.undo()
    deadline = time.monotonic() + 60  # the stopped run's tile tasks running finish their tile (a thread runs on)
    while cluster is not None and any(w.state.executing_count for w in cluster.workers.values()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    import graphconv.tiling
    boxes, read = [], graphconv.tiling.read_box
    monkeypatch.setattr(graphconv.tiling, "read_box", lambda source, box, channels: boxes.append(box) or read(
        source, box, channels))
    capsys.readouterr()
    assert main([*run, *out, "--memory-limit", str(tight)]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "the stopped run's tiles of up to" in err and "computed in pieces of up to" in err, err
    whose = "an earlier run (or a worker of this run that died)" if cluster is not None else "an earlier run"
    assert (f"went on from the tiles {whose} had done (1 of 4 tiles)" in err if batch
            else "resume: 1 of 4 tiles was done by an earlier run" in err), err
    assert len(boxes) > 3 and all(tile_bytes(DenseGrid(Model.load(model_dir)),
                                             (b[2] - b[0], b[3] - b[1])) <= tight for b in boxes)


def test_resume_of_a_run_whose_workers_each_had_a_tile_goes_on_from_its_tiles(model_dir, big_page, tmp_path,
                                                                              monkeypatch, capsys):
    """A slide cut for --workers 2 into 2 tiles that each meet the image's border reads
    boxes smaller than its tile: --resume planned again from the box, other tiles, and the
    stopped run's tile done was not this run's. It plans from the cells a tile holds."""
    from graphconv.cli import main

    run = ["run", str(model_dir), "--image", str(big_page), "--output", str(tmp_path / "m.npy"), "--resume",
           "--workers", "2"]
    _stop_after(monkeypatch, 1)
    assert main(run) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main(run) == 0
    assert "resume: 1 of 2 tiles was done by an earlier run" in capsys.readouterr().err
    assert main(["run", str(model_dir), "--image", str(big_page), "--output", str(tmp_path / "lone.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "m.npy"), np.load(tmp_path / "lone.npy"), rtol=1e-5, atol=1e-6)

@pytest.fixture(scope="module")
def damaged_slide(tmp_path_factory):
    """A 400x420 zlib-tiled TIFF (tiles of 64) whose tile 9 (rows 64..127, columns
    128..191) is noise, its intact twin, and the cells of lenet's map (a 32-pixel crop
    every 4) whose crops reach that tile."""
    folder = tmp_path_factory.mktemp("damaged")
    pixels = (np.random.default_rng(1).random((400, 420)) * 255).astype(np.uint8)
    for name in ("intact.tif", "damaged.tif"):
        tifffile.imwrite(folder / name, pixels, tile=(64, 64), compression="zlib")
    with tifffile.TiffFile(folder / "damaged.tif") as tif:
        offset, count = tif.pages[0].dataoffsets[9], tif.pages[0].databytecounts[9]
    data = bytearray((folder / "damaged.tif").read_bytes())
    data[offset:offset + count] = np.random.default_rng(0).integers(0, 255, count, np.uint8).tobytes()
    (folder / "damaged.tif").write_bytes(bytes(data))
    reach = np.zeros((93, 98), bool)
    rows, cols = np.arange(93) * 4, np.arange(98) * 4
    reach[np.ix_((rows < 128) & (rows + 32 > 64), (cols < 192) & (cols + 32 > 128))] = True
    return folder, reach


@pytest.mark.parametrize("how", [[], ["--reduce", "argmax"], ["--workers", "2"], ["--tile", "100"], ["--images"]])
def test_skip_damaged_leaves_out_the_cells_whose_crops_reach_an_undecodable_tile_and_maps_the_rest(
        model_dir, damaged_slide, tmp_path, how):
    """A slide with one tile that cannot be decoded could not be mapped at all (and the
    error named the tile graphconv read, not the TIFF's). With --skip-damaged the cells
    whose crops reach it are left out, every other cell is the intact slide's, and a
    note names the tile."""
    folder, reach = damaged_slide
    images = how == ["--images"]
    options = [] if images else how

    def mapped(name: str, *more: str):
        where = (["--images", str(folder / name), "--output-dir", str(tmp_path / name)] if images
                 else ["--image", str(folder / name), "--output", str(tmp_path / f"{name}.npy")])
        result = graphconv_in_process("run", model_dir, *where, *options, *more)
        return result, (tmp_path / name / Path(name).with_suffix(".npy").name if images else tmp_path / f"{name}.npy")

    refused, _ = mapped("damaged.tif")
    assert refused.returncode == 2
    assert ("(TIFF tile 9 of page 0 (rows 64..127, columns 128..191), at byte" in refused.stderr
            and "--skip-damaged maps the rest of the image" in refused.stderr), refused.stderr
    result, damaged_map = mapped("damaged.tif", "--skip-damaged")
    assert result.returncode == 0, result.stderr
    assert ("529 cells of the map left out (not computed), their crops reaching 1 TIFF tile or strip that cannot be "
            "decoded: TIFF tile 9 of page 0 (rows 64..127, columns 128..191)") in result.stderr + result.stdout
    intact, intact_map = mapped("intact.tif")
    assert intact.returncode == 0, intact.stderr
    got, want = np.load(damaged_map), np.load(intact_map)
    left_out = got[0, 0] == 65535 if "argmax" in how else np.isnan(got[0, 0])
    np.testing.assert_array_equal(left_out, reach)
    np.testing.assert_allclose(got[..., ~reach], want[..., ~reach], rtol=1e-5, atol=1e-6)
    if images:  # the batch's list records the holes, which the stderr note alone said
        import csv

        def row(name: str) -> dict:
            with open(tmp_path / name / "graphconv-maps.csv", newline="") as file:
                return next(csv.DictReader(file))
        assert (row("damaged.tif")["damaged_cells"], row("damaged.tif")["damaged_tiff_tiles"]) == ("529", "1")
        assert (row("intact.tif")["damaged_cells"], row("intact.tif")["damaged_tiff_tiles"]) == ("", "")
        assert mapped("intact.tif", "--skip-damaged")[0].returncode == 0
        assert (row("intact.tif")["damaged_cells"], row("intact.tif")["damaged_tiff_tiles"]) == ("0", "0")


def test_skip_damaged_counts_the_no_data_around_an_undecodable_tile_of_a_band(model_dir, tmp_path):
    """Satellite products declare a no-data value, whose cells are counted over the whole
    raster before the first tile: that count read the damaged tile and stopped the run
    --skip-damaged was to map around it. The damage is now named by its band and
    pixels (a separate-planes TIFF's tile index runs over every band's tiles)."""
    pixels = (np.random.default_rng(1).random((2, 400, 420)) * 254 + 1).astype(np.uint8)
    pixels[:, 300:, :100] = 0  # no data
    nodata = [(42113, 2, 2, "0", True)]  # GDAL_NODATA
    for name in ("intact.tif", "damaged.tif"):
        tifffile.imwrite(tmp_path / name, pixels, tile=(64, 64), compression="zlib", planarconfig="separate",
                         photometric="minisblack", extratags=nodata)
    with tifffile.TiffFile(tmp_path / "damaged.tif") as tif:
        offset, count = tif.pages[0].dataoffsets[49 + 9], tif.pages[0].databytecounts[49 + 9]  # band 2's tile 9
    data = bytearray((tmp_path / "damaged.tif").read_bytes())
    data[offset:offset + count] = np.random.default_rng(0).integers(0, 255, count, np.uint8).tobytes()
    (tmp_path / "damaged.tif").write_bytes(bytes(data))

    def mapped(name: str, *more: str):
        result = graphconv_in_process("run", model_dir, "--image", tmp_path / name, "--bands", "2", "--output",
                                      tmp_path / f"{name}.npy", *more)
        assert result.returncode == 0, result.stderr
        return result, np.load(tmp_path / f"{name}.npy")[0, 0]

    refused = graphconv_in_process("run", model_dir, "--image", tmp_path / "damaged.tif", "--bands", "2")
    assert refused.returncode == 2 and "(TIFF tile 58 of page 0 (band 2, rows 64..127, columns 128..191), at byte" \
        in refused.stderr, refused.stderr
    result, got = mapped("damaged.tif", "--skip-damaged")
    assert "crops reaching 1 TIFF tile or strip that cannot be decoded: TIFF tile 58 of page 0 (band 2, " in (
        result.stderr), result.stderr
    _, want = mapped("intact.tif")
    rows, cols = np.arange(93) * 4, np.arange(98) * 4
    reach = np.zeros((93, 98), bool)
    reach[np.ix_((rows < 128) & (rows + 32 > 64), (cols < 192) & (cols + 32 > 128))] = True
    assert np.isnan(want).any() and not np.isnan(want[reach]).any()  # no-data cells, none where the damage is
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want) | reach)
    np.testing.assert_allclose(got[~reach], want[~reach], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compression", ["zlib", None])
def test_skip_damaged_maps_the_tiles_a_file_cut_short_still_holds(model_dir, tmp_path, compression):
    """A TIFF that lost its tail (a copy cut short) whose tile table is whole was refused
    even with --skip-damaged, whose help says it maps such files; its tiles past the end
    are now what the cells left out reach (uncompressed ones too, read short), found a
    tile at a time, not a cell at a time."""
    pixels = (np.random.default_rng(1).random((400, 420)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "intact.tif", pixels, tile=(64, 64), compression=compression)
    with tifffile.TiffFile(tmp_path / "intact.tif") as tif:
        offsets, counts = tif.pages[0].dataoffsets, tif.pages[0].databytecounts
    kept = offsets[40] + counts[40] // 2  # tile 40 cut in the middle, 41.. gone
    (tmp_path / "cut.tif").write_bytes((tmp_path / "intact.tif").read_bytes()[:kept])
    lost = [k for k in range(len(offsets)) if offsets[k] + counts[k] > kept]

    def cells_reaching(tiles):
        starts = np.arange(93) * 4, np.arange(98) * 4  # lenet's 32-pixel crops, every 4 pixels
        reach = np.zeros((93, 98), bool)
        for k in tiles:
            top, left = k // 7 * 64, k % 7 * 64
            reach |= np.outer((starts[0] < top + 64) & (starts[0] + 32 > top),
                              (starts[1] < left + 64) & (starts[1] + 32 > left))
        return reach
    refused = graphconv_in_process("run", model_dir, "--image", tmp_path / "cut.tif", "--output", tmp_path / "x.npy")
    assert refused.returncode == 2 and f"{len(lost)} of level 0's 49 tiles lie past its {kept}-byte end" in (
        refused.stderr) and "--skip-damaged maps the rest" in refused.stderr, refused.stderr

    result = graphconv_in_process("run", model_dir, "--image", tmp_path / "cut.tif", "--output", tmp_path / "cut.npy",
                                  "--skip-damaged")
    assert result.returncode == 0, result.stderr
    reach = cells_reaching(lost)
    assert f"{reach.sum()} cells of the map left out (not computed), their crops reaching" in result.stderr, (
        result.stderr)
    assert graphconv_in_process("run", model_dir, "--image", tmp_path / "intact.tif", "--output",
                                tmp_path / "intact.npy").returncode == 0
    got, want = np.load(tmp_path / "cut.npy")[0], np.load(tmp_path / "intact.npy")[0]
    np.testing.assert_array_equal(np.isnan(got[0]), reach)
    np.testing.assert_allclose(got[:, ~reach], want[:, ~reach], rtol=1e-5, atol=1e-6)


def test_resume_with_another_tile_of_the_same_plan_goes_on(model_dir, big_page, tmp_path, monkeypatch, capsys):
    """The job compares the tile plan, not the --tile number: --tile 101 and 100 plan the
    same 20 tiles of 100x100 (the tiles line and the memory note show that size, which a
    user may then give), so either goes on from the other's tiles done."""
    from graphconv.cli import main

    run = ["run", str(model_dir), "--image", str(big_page), "--output", str(tmp_path / "m.npy"), "--resume"]
    _stop_after(monkeypatch, 5)
    assert main([*run, "--tile", "101"]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*run, "--tile", "100"]) == 0
    assert "resume: 5 of 20 tiles were done by an earlier run" in capsys.readouterr().err
    assert main(["run", str(model_dir), "--image", str(big_page), "--tile", "100", "--output",
                 str(tmp_path / "straight.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), np.load(tmp_path / "straight.npy"))


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_resume_after_a_real_signal_equals_a_straight_run(model_dir, big_page, tmp_path, signal_name):
    """The command stopped by a signal while it writes (Ctrl-C, a scheduler's SIGTERM,
    kill -9): its partial map lists only tiles really written, and --resume finishes it
    into the map a straight run writes, bit for bit."""
    import signal
    import time

    run = [sys.executable, "-m", "graphconv", "run", str(model_dir), "--image", str(big_page), "--tile", "40"]
    out = tmp_path / "map.zarr"
    log = tmp_path / "map.zarr.partial" / "tiles-done.txt"
    process = subprocess.Popen([*run, "--output", str(out), "--resume"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and log.read_text().count("\n") >= 40:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be stopped"
    process.send_signal(getattr(signal, signal_name))
    _, err = process.communicate(timeout=60)
    assert process.returncode == {"SIGINT": 130, "SIGTERM": 143, "SIGKILL": -9}[signal_name], err
    assert not out.exists()
    done = log.read_text().count("\n")
    assert 40 <= done < 598
    resumed = graphconv(*run[3:], "--output", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resume: {done} of 598 tiles were done by an earlier run" in resumed.stderr
    assert not (tmp_path / "map.zarr.partial").exists()
    straight = graphconv(*run[3:], "--output", tmp_path / "straight.zarr")
    assert straight.returncode == 0, straight.stderr
    np.testing.assert_array_equal(zarr.open_array(str(out))[:], zarr.open_array(str(tmp_path / "straight.zarr"))[:])


def test_resume_with_dask_workers_records_tiles_on_the_client(model_dir, big_page, tmp_path, monkeypatch, capsys):
    pytest.importorskip("distributed")
    from graphconv.cli import main

    run = ["run", str(model_dir), "--image", str(big_page), "--tile", "100", "--workers", "1"]
    out = tmp_path / "map.zarr"
    _stop_after(monkeypatch, 5)
    assert main([*run, "--output", str(out), "--resume"]) == 130
    assert len((tmp_path / "map.zarr.partial" / "tiles-done.txt").read_text().splitlines()) == 5
    monkeypatch.undo()
    written = _stop_after(monkeypatch, 10 ** 6)
    capsys.readouterr()
    assert main([*run, "--output", str(out), "--resume"]) == 0
    assert "resume: 5 of 20 tiles were done" in capsys.readouterr().err and len(written) == 15
    assert main([*run[:-2], "--output", str(tmp_path / "straight.zarr")]) == 0
    np.testing.assert_array_equal(zarr.open_array(str(out))[:], zarr.open_array(str(tmp_path / "straight.zarr"))[:])


@pytest.mark.parametrize("images", [False, True], ids=["image", "images"])
def test_resume_starts_over_where_the_image_changed_since_the_run_stopped(model_dir, big_page, tmp_path, monkeypatch,
                                                                          capsys, images):
    """A slide rescanned (or copied over) after its --resume run stopped: its partial map
    was refused as another job's, which only `rm -r` by hand got past, though its tiles
    are of the image as it was and nothing can go on from them. It is removed, said, and
    the map computed from the start: the new image's, as a straight run gives it."""
    from graphconv.cli import main

    folder = tmp_path / "slides"
    folder.mkdir()
    image = folder / "slide.png"
    shutil.copy(big_page, image)
    out = tmp_path / "maps"
    where = ["--images", str(folder), "--output-dir", str(out)] if images else ["--image", str(image), "--output",
                                                                                str(out / "slide.npy")]
    run = ["run", str(model_dir), *where, "--tile", "100", "--resume"]
    _stop_after(monkeypatch, 5)
    assert main(run) == 130
    monkeypatch.undo()
    Image.fromarray((np.random.default_rng(9).random((300, 340)) * 255).astype(np.uint8)).save(image)  # rescanned
    capsys.readouterr()
    assert main(run) == 0
    err = capsys.readouterr().err
    assert (f"slide.npy.partial held 5 tiles a stopped --resume run computed of {image} before the file changed"
            in err and "resume: 5 of 20" not in err), err
    assert not (out / "slide.npy.partial").exists()
    assert main(["run", str(model_dir), "--image", str(image), "--output", str(tmp_path / "straight.npy")]) == 0
    np.testing.assert_array_equal(np.load(out / "slide.npy"), np.load(tmp_path / "straight.npy"))


def test_resume_refuses_another_run_s_partial_map_saying_what_differs(model_dir, big_page, tmp_path, monkeypatch,
                                                                     capsys):
    from graphconv.cli import main

    run = ["run", str(model_dir), "--image", str(big_page), "--output", str(tmp_path / "map.zarr"), "--resume"]
    _stop_after(monkeypatch, 3)
    assert main([*run, "--tile", "100"]) == 130
    monkeypatch.undo()
    partial = tmp_path / "map.zarr.partial"
    before = sorted((p.relative_to(partial), p.stat().st_mtime_ns) for p in partial.rglob("*"))
    capsys.readouterr()
    for extra, differs in ((["--tile", "100", "--classes", "2,7"], "--classes not given there, 2,7 here"),
                           (["--tile", "120"], "tile plan 20 tiles"),
                           (["--tile", "100", "--reduce", "argmax"], "--reduce not given there, argmax here")):
        assert main([*run, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is the partial map of another run" in err and differs in err, err
        assert f"rm -r {tmp_path / 'map.zarr.partial'}" in err
        assert ("leave out --tile to go on from its 3 tiles done" in err) == (extra == ["--tile", "120"]), err
    spec = model_dir / "model.yaml"  # compiled again into the same folder, say
    compiled = spec.read_text()
    spec.write_text(compiled + "# compiled again\n")
    try:
        assert main([*run, "--tile", "100"]) == 2
        assert "model files changed since: model.yaml" in capsys.readouterr().err
    finally:
        spec.write_text(compiled)
    monkeypatch.setattr("graphconv.kernel_cache.sources_digest", lambda: "0123456789abcdef")  # another build
    assert main([*run, "--tile", "100"]) == 2
    assert "kernels 0123456789abcdef here" in capsys.readouterr().err
    monkeypatch.undo()
    assert sorted((p.relative_to(partial), p.stat().st_mtime_ns) for p in partial.rglob("*")) == before
    assert not (tmp_path / "map.zarr").exists()


def test_resume_goes_on_after_a_file_is_added_to_the_model_s_folder(model_dir, big_page, tmp_path, monkeypatch,
                                                                    capsys):
    """The job recorded the model folder's time, so notes left beside a model (or a
    weights file copied back with a new time) made every partial map "another run's"."""
    from graphconv.cli import main

    run = ["run", str(model_dir), "--image", str(big_page), "--output", str(tmp_path / "map.npy"), "--resume",
           "--tile", "100"]
    _stop_after(monkeypatch, 3)
    assert main(run) == 130
    monkeypatch.undo()
    (model_dir / "NOTES.txt").write_text("trained on the March slides\n")
    weights = next(model_dir.glob("weights-*.npz"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10 ** 9))
    try:
        capsys.readouterr()
        assert main(run) == 0
        assert "resume: 3 of 20 tiles were done" in capsys.readouterr().err
    finally:
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns - 10 ** 9))
        (model_dir / "NOTES.txt").unlink()
    assert main([*run[:-5], "--output", str(tmp_path / "straight.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "map.npy"), np.load(tmp_path / "straight.npy"))


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_resume_refuses_a_partial_npy_cut_short_since(model_dir, big_page, tmp_path, monkeypatch, capsys, suffix):
    """A partial .npy cut short (a full disk, a copy stopped half way, `truncate`) was
    opened as a memory map, which silently extended it with zeros: the tiles listed as
    done were kept as zeros and the run ended with exit 0. Refused, before any work."""
    from graphconv.cli import main

    run = ["run", str(model_dir), "--image", str(big_page), "--tile", "100", "--output", str(tmp_path / f"map{suffix}"),
           "--resume"]
    _stop_after(monkeypatch, 7)
    assert main(run) == 130
    monkeypatch.undo()
    scores = tmp_path / f"map{suffix}.partial" / "map.npy"
    whole = scores.stat().st_size
    os.truncate(scores, 1000)
    written = _stop_after(monkeypatch, 10 ** 6)
    capsys.readouterr()
    assert main(run) == 2
    err = capsys.readouterr().err
    line = [text for text in err.splitlines() if text.startswith("graphconv:")]
    assert line == [f"graphconv: {tmp_path / f'map{suffix}.partial'}: the partial map is damaged (its map.npy is "
                    f"1000 bytes, {whole} when whole): remove it to start again "
                    f"(rm -r {tmp_path / f'map{suffix}.partial'})"], err
    assert written == [] and scores.stat().st_size == 1000 and not (tmp_path / f"map{suffix}").exists()


@pytest.mark.parametrize("damage", ["emptied", "removed", "bit flipped"])
def test_resume_computes_again_the_tiles_whose_zarr_chunks_were_damaged(model_dir, big_page, tmp_path, monkeypatch,
                                                                        capsys, damage):
    """A done tile's chunk emptied (the finished map failed to read: a Zstd error),
    removed (read back as NaN) or with one bit flipped on disk (decoded into other scores
    without a word before the chunks carried zstd's checksum) since the run stopped: that
    tile is computed again, said so, and the map is the straight run's."""
    from graphconv.cli import main

    run = ["run", str(model_dir), "--image", str(big_page), "--tile", "100"]
    out = tmp_path / "map.zarr"
    assert main([*run, "--output", str(tmp_path / "straight.zarr")]) == 0
    _stop_after(monkeypatch, 7)
    assert main([*run, "--output", str(out), "--resume"]) == 130
    monkeypatch.undo()
    chunk = tmp_path / "map.zarr.partial" / "map.zarr" / "c" / "0" / "0" / "0" / "0"  # the first tile's
    assert chunk.is_file()
    if damage == "bit flipped":
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0x10
        chunk.write_bytes(bytes(data))
    else:
        chunk.write_bytes(b"") if damage == "emptied" else chunk.unlink()
    written = _stop_after(monkeypatch, 10 ** 6)
    capsys.readouterr()
    assert main([*run, "--output", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert ("resume: 1 tile listed as done in" in err and "has blocks missing, unreadable or changed" in err
            and "resume: 6 of 20 tiles were done by an earlier run" in err and "computing 14" in err), err
    assert len(written) == 14
    np.testing.assert_array_equal(zarr.open_array(str(out))[:], zarr.open_array(str(tmp_path / "straight.zarr"))[:])


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_resume_computes_again_a_tile_whose_npy_block_changed(model_dir, big_page, tmp_path, monkeypatch, capsys,
                                                              suffix):
    """An .npy partial map (a .tif output's scores too) with one bit flipped in a done
    tile's block since the run stopped: the finished map kept the other score, without a
    word. The log lists each block's CRC-32: that tile is computed again, said so."""
    from graphconv.cli import main

    run = ["run", str(model_dir), "--image", str(big_page), "--tile", "100"]
    out = tmp_path / f"map{suffix}"
    assert main([*run, "--output", str(tmp_path / f"straight{suffix}")]) == 0
    _stop_after(monkeypatch, 7)
    assert main([*run, "--output", str(out), "--resume"]) == 130
    monkeypatch.undo()
    scores = np.lib.format.open_memmap(tmp_path / f"map{suffix}.partial" / "map.npy", mode="r+")
    scores.view(np.uint32)[0, 3, 2, 1] ^= 0x10  # a cell of the first tile's block
    scores.flush()
    del scores
    written = _stop_after(monkeypatch, 10 ** 6)
    capsys.readouterr()
    assert main([*run, "--output", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert ("resume: 1 tile listed as done in" in err and "has blocks missing, unreadable or changed" in err
            and "resume: 6 of 20 tiles were done by an earlier run" in err), err
    assert len(written) == 14
    read = np.load if suffix == ".npy" else tifffile.imread
    np.testing.assert_array_equal(read(out), read(tmp_path / f"straight{suffix}"))


def test_without_resume_a_stopped_run_leaves_nothing_and_a_partial_map_is_kept_until_written_over(
        model_dir, big_page, tmp_path, monkeypatch, capsys):
    """A run without --resume beside a stopped --resume run's partial map: stopped, it
    leaves that partial map as it was; finished, it has written the whole map, so the
    partial map of the same job goes, said once (it was left behind, stale, with a note
    that --resume continued it). Another job's partial map is left as it is, its
    differences said, and not as 'the same command with --resume continues it'."""
    from graphconv.cli import main

    run = ["run", str(model_dir), "--image", str(big_page), "--tile", "100", "--output", str(tmp_path / "map.zarr")]
    _stop_after(monkeypatch, 3)
    assert main(run) == 130
    assert "what it was writing is removed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    _stop_after(monkeypatch, 3)
    assert main([*run, "--resume"]) == 130
    monkeypatch.undo()
    partial = tmp_path / "map.zarr.partial"
    before = sorted((p.relative_to(partial), p.stat().st_mtime_ns) for p in partial.rglob("*"))
    _stop_after(monkeypatch, 5)
    assert main(run) == 130  # stopped without --resume: the partial map is kept as it was
    monkeypatch.undo()
    assert sorted((p.relative_to(partial), p.stat().st_mtime_ns) for p in partial.rglob("*")) == before
    capsys.readouterr()
    assert main([*run, "--classes", "1,2"]) == 0  # another job's: left as it is
    err = capsys.readouterr().err
    assert err.count("map.zarr.partial holds 3 tiles of a stopped --resume run of another job "
                     "(--classes not given there, 1,2 here;") == 1 and "); left as it is: " in err, err
    assert "the same command with --resume" not in err
    assert sorted((p.relative_to(partial), p.stat().st_mtime_ns) for p in partial.rglob("*")) == before
    assert main(run) == 0
    err = capsys.readouterr().err
    assert err.count("note: removed") == 1 and "map.zarr.partial, the 3 tiles a stopped --resume run of this same " \
        "map had done" in err, err
    assert "resume:" not in err and "--resume continues it" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.zarr"]


@pytest.mark.parametrize("args, message", [
    (["--input", "in.npy", "--output", "map.npy"], "give --image and --output (or an --images batch)"),
    (["--image", "IMG"], "give --output MAP.zarr, MAP.npy or MAP.tif"),
    (["--image", "IMG", "--output", "map.png"], "give --output MAP.zarr, MAP.npy or MAP.tif"),
])
def test_resume_needs_an_image_and_a_map_file(model_dir, picture, tmp_path, args, message):
    args = [str(picture / "page.png") if a == "IMG" else a for a in args]
    result = graphconv("run", model_dir, *args, "--resume", cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_images_say_once_for_the_batch_how_their_pixels_are_read(model_dir, tmp_path, capsys):
    """What a single --image says of a raster (its 16-bit pixels scaled onto 0..255;
    --max-nodata with no no-data to act on), an --images batch said of none of its
    images: now once for the batch, with how many images it concerns."""
    import tifffile
    from graphconv.cli import main

    folder = tmp_path / "scans"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        tifffile.imwrite(folder / f"{name}.tif", (rng.random((60, 70)) * 4000).astype(np.uint16))
    Image.fromarray((rng.random((60, 70)) * 255).astype(np.uint8)).save(folder / "c.png")
    assert main(["run", str(model_dir), "--images", str(folder / "*"), "--output-dir", str(tmp_path / "maps"),
                 "--max-nodata", "0.3"]) == 0
    err = capsys.readouterr().err
    assert err.count("16-bit pixels") == 1 and "note: 2 of 3 images' 16-bit pixels" in err, err
    assert err.count("has nothing to act on") == 1, err
    assert "note: --max-nodata 0.3 has nothing to act on: none of the 3 images can hold no-data" in err, err


@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_a_ctrl_c_as_a_resumed_map_is_renamed_into_place_leaves_it_complete_not_to_be_resumed(
        model_dir, big_page, tmp_path, monkeypatch, capsys, suffix):
    """Ctrl-C landing just after a --resume run renamed its finished map into place left
    the partial folder without its map and said to continue with --resume, which then
    computed the whole map again over the good one. The folder now goes with the rename,
    the signal is honoured after, and the message says the map is written and complete."""
    import signal

    import graphconv.files
    from graphconv.cli import main

    run = ["run", str(model_dir), "--image", str(big_page), "--tile", "100"]
    assert main([*run, "--output", str(tmp_path / f"straight{suffix}")]) == 0
    move = graphconv.files.put_in_place

    def move_then_ctrl_c(source, target):
        replaced = move(source, target)
        os.kill(os.getpid(), signal.SIGINT)
        return replaced
    monkeypatch.setattr(graphconv.files, "put_in_place", move_then_ctrl_c)
    out = tmp_path / f"map{suffix}"
    capsys.readouterr()
    assert main([*run, "--output", str(out), "--resume"]) == 130
    stopped = [line for line in capsys.readouterr().err.splitlines() if line.startswith("graphconv: interrupted")]
    assert stopped == [f"graphconv: interrupted (it had written {out}, complete; nothing else is left)"], stopped
    assert not (tmp_path / f"map{suffix}.partial").exists()
    load = np.load if suffix == ".npy" else (lambda path: zarr.open_array(str(path))[:])
    np.testing.assert_array_equal(load(out), load(tmp_path / f"straight{suffix}"))


def test_a_sigterm_as_a_resumed_run_removes_the_map_it_replaced_stops_it_at_once(model_dir, big_page, tmp_path,
                                                                                 monkeypatch, capsys):
    """A --resume run's finish held signals back while it removed the old .zarr map its
    new one replaced: many GB take long, and a job scheduler's SIGTERM kept waiting is
    followed by its SIGKILL. Only the renames hold them now: the removal stops at the
    signal, the new map complete under the output's name, no partial folder to resume."""
    import signal
    import shutil as real_shutil

    import graphconv.files
    from graphconv.cli import main

    run = ["run", str(model_dir), "--image", str(big_page), "--tile", "100"]
    out = tmp_path / "map.zarr"
    assert main([*run, "--output", str(tmp_path / "straight.zarr")]) == 0
    assert main([*run, "--output", str(out), "--classes", "0"]) == 0  # the old map, to be replaced
    went_on = []
    real_rmtree = real_shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if any(Path(path).rglob("c")) or any(Path(path).rglob("0")):  # a map's chunks: the old map
            os.kill(os.getpid(), signal.SIGTERM)
            went_on.append(str(path))
        real_rmtree(path, *args, **kwargs)
    monkeypatch.setattr(graphconv.files.shutil, "rmtree", rmtree)
    capsys.readouterr()
    assert main([*run, "--output", str(out), "--resume"]) == 143
    stopped = [line for line in capsys.readouterr().err.splitlines() if line.startswith("graphconv: terminated")]
    assert stopped == [f"graphconv: terminated (it had written {out}, complete; nothing else is left)"], stopped
    assert went_on == [], "the removal went on after the SIGTERM"
    assert not (tmp_path / "map.zarr.partial").exists()
    np.testing.assert_array_equal(zarr.open_array(str(out))[:], zarr.open_array(str(tmp_path / "straight.zarr"))[:])


def test_cli_skip_existing_maps_a_raster_again_for_another_nodata(model_dir, picture, tmp_path):
    """--nodata was recorded nowhere: `--skip-existing --nodata 0` left out a scene's .tif
    map made without it as done, though a map made with other settings is made again. The
    map records it (a picture's, to which --nodata does not apply, does not change); a
    map that records none (an older version's) counts as made without it."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    shutil.copy(picture / "tiled.tif", folder / "scene.tif")
    shutil.copy(picture / "page.png", folder / "photo.png")
    out = tmp_path / "maps"
    run = ("run", model_dir, "--images", folder, "--output-dir", out, "--output-format", "tif", "--skip-existing")

    def stated(name):
        with tifffile.TiffFile(out / name) as tif:
            return json.loads(tif.pages[0].description.split("\n", 1)[1])["cells_left_out"]

    result = graphconv_in_process(*run)
    assert result.returncode == 0, result.stderr
    assert stated("scene.tif")["nodata"] is None and stated("photo.tif")["nodata"] is None
    for nodata, recorded in (("0", 0.0), ("nan", "NaN")):
        result = graphconv_in_process(*run, "--nodata", nodata)
        assert result.returncode == 0, result.stderr
        assert "1 of 2 images has its map in" in result.stderr, "the scene's is made again, not the photo's"
        assert stated("scene.tif")["nodata"] == recorded and stated("photo.tif")["nodata"] is None
        assert "no map to make" in graphconv_in_process(*run, "--nodata", nodata).stdout
    result = graphconv_in_process(*run)
    assert result.returncode == 0 and "1 of 2 images has its map in" in result.stderr
    with tifffile.TiffFile(out / "scene.tif") as tif:
        first, placement = tif.pages[0].description.split("\n", 1)
    placement = json.loads(placement)
    del placement["cells_left_out"]["nodata"]
    tifffile.tiffcomment(out / "scene.tif", first + "\n" + json.dumps(placement))  # as an older version wrote it
    assert "no map to make" in graphconv_in_process(*run).stdout
    assert "1 of 2 images has its map in" in graphconv_in_process(*run, "--nodata", "0").stderr


@pytest.mark.parametrize("heatmap, reduce, classes", [(1, None, None), (2, None, (4, 2)), ("top", None, None),
                                                      ("top", None, (4, 2)), ("top", "argmax", None)])
def test_a_tiled_run_s_heatmap_reads_only_the_cells_its_pixels_show(monkeypatch, heatmap, reduce, classes):
    """A stride-1 slide's map has billions of cells and its heatmap a picture of at most
    2048 a side: the map is read a block of rows at a time and only the cells the
    picture's pixels show are kept (it read a class's whole channel, 2.9 GB over a 275 MB
    run), yet the picture, the colour scale's range and the legend's counts are those of
    the whole map."""
    import argparse

    from graphconv import images, tiled_cli
    from graphconv.background import NO_CLASS
    from graphconv.receptive import Field

    rng = np.random.default_rng(7)
    scores = rng.normal(size=(1, 5, 61, 83)).astype(np.float32)
    scores[:, :, 10:20, 30:50] = np.nan  # cells not computed
    if classes:
        scores = scores[:, list(classes)]
    if reduce:
        best = images.best_class(scores[0]).astype(np.uint16)
        scores = np.where(best == images.NOT_COMPUTED, NO_CLASS, best)[None, None].astype(np.uint16)
    monkeypatch.setattr(tiled_cli, "BEST_CLASS_FLOATS", 3 * 83)  # a few rows a block
    args = argparse.Namespace(reduce=reduce, classes=classes)
    field, picture_hw = Field((4, 4), (1.7, 2.3), (0.5, -1)), (29, 37)  # the map shrunk onto a smaller picture
    if heatmap == "top":
        sample = tiled_cli._sample_map(args, scores, field, picture_hw, 5)
        best = tiled_cli._best_of(args, scores[0])
        want_counts = np.bincount(best[best != images.NOT_COMPUTED], minlength=5)
        np.testing.assert_array_equal(sample.counts, want_counts)
        want = best
    else:
        channel = classes.index(heatmap) if classes else heatmap
        sample = tiled_cli._sample_map(args, scores, field, picture_hw, channel=channel)
        want = scores[0, channel]
        assert sample.extremes == images.finite_range(want)
    assert sample.values.shape[0] < want.shape[0] and sample.values.shape[1] < want.shape[1]
    np.testing.assert_array_equal(images._per_pixel(sample.values, field, picture_hw, sample),
                                  images._per_pixel(want, field, picture_hw))
    rows, cols = sample.cells
    np.testing.assert_array_equal(sample.values, want[rows][:, cols])
    assert sample.not_computed == 10 * 20  # the whole map's, which the legend or a line above it counts


# ---- run --pad-image: a cell on every block of the image -----------------------------------------

NUMPY_PAD = {"reflect": "reflect", "replicate": "edge"}  # the modes np.pad can stand for before the preprocess


def _blocks_and_lead(model_dir, image_hw) -> tuple[tuple[int, int], int]:
    """ceil(H/stride) x ceil(W/stride), and the border before the image, in cells."""
    from graphconv.sources import border_margins

    cells = Model.load(model_dir).cell_area
    top = border_margins(cells, image_hw)[0]
    assert top % cells.stride[0] == 0  # whole cells: the unpadded map's are among the padded map's
    return tuple(-(-n // cells.stride[0]) for n in image_hw), top // cells.stride[0]


@pytest.mark.parametrize("mode", ["reflect", "replicate", "constant"])
def test_pad_image_maps_every_block_the_same_whole_tiled_and_crop_by_crop(model_dir, picture, tmp_path, mode):
    """The map reaches the image's edges: a cell on every stride x stride block, equal
    read whole (a PNG), in tiles of a TIFF and crop by crop; its inner cells are the
    unpadded map's. Reflect and replicate are the network on the picture np.pad pads
    (mirroring commutes with the per-pixel preprocess); constant is 0 after it."""
    pixels = np.asarray(Image.open(picture / "page.png"))
    blocks, lead = _blocks_and_lead(model_dir, pixels.shape)
    padded = tmp_path / "padded.npy"
    assert graphconv("run", model_dir, "--image", picture / "page.png", "--pad-image", mode,
                     "--output", padded).returncode == 0
    got = np.load(padded)
    assert got.shape[2:] == blocks
    for name, extra in (("tiled", ["--image", picture / "tiled.tif", "--tile", "50"]),
                        ("crops", ["--image", picture / "page.png", "--crops"])):
        result = graphconv("run", model_dir, *extra, "--pad-image", mode, "--output", tmp_path / f"{name}.npy")
        assert result.returncode == 0, result.stderr
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.npy"), got, rtol=1e-4, atol=1e-5)
    unpadded = whole_map(model_dir, picture / "page.png", tmp_path)
    rows, cols = unpadded.shape[2:]
    np.testing.assert_array_equal(got[:, :, lead:lead + rows, lead:lead + cols], unpadded)
    if mode in NUMPY_PAD:
        from graphconv.sources import border_margins
        top, left, bottom, right = border_margins(Model.load(model_dir).cell_area, pixels.shape)
        Image.fromarray(np.pad(pixels, ((top, bottom), (left, right)), mode=NUMPY_PAD[mode])).save(
            tmp_path / "padded.png")
        (tmp_path / "np").mkdir()
        np.testing.assert_array_equal(whole_map(model_dir, tmp_path / "padded.png", tmp_path / "np"), got)
    else:
        reflected = graphconv("run", model_dir, "--image", picture / "page.png", "--pad-image", "reflect",
                              "--output", tmp_path / "reflected.npy")
        assert reflected.returncode == 0
        assert not np.allclose(np.load(tmp_path / "reflected.npy")[:, :, 0], got[:, :, 0])  # the border differs


def test_pad_image_on_dask_workers_and_many_images_is_the_same_map(model_dir, picture, tmp_path):
    pytest.importorskip("distributed")
    here = graphconv("run", model_dir, "--image", picture / "tiled.tif", "--tile", "50", "--pad-image", "reflect",
                     "--output", tmp_path / "here.npy")
    assert here.returncode == 0, here.stderr
    workers = graphconv("run", model_dir, "--image", picture / "tiled.tif", "--tile", "50", "--pad-image", "reflect",
                        "--workers", "1", "--output", tmp_path / "workers.npy")
    assert workers.returncode == 0, workers.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "workers.npy"), np.load(tmp_path / "here.npy"))
    many = graphconv("run", model_dir, "--images", picture / "page.png", "--pad-image", "reflect", "--output-dir",
                     tmp_path / "maps")
    assert many.returncode == 0, many.stderr
    np.testing.assert_allclose(np.load(tmp_path / "maps" / "page_png.npy"), np.load(tmp_path / "here.npy"),
                               rtol=1e-4, atol=1e-5)
    # a map made without the border is not this run's: --skip-existing computes it again
    plain = graphconv("run", model_dir, "--images", picture / "page.png", "--output-dir", tmp_path / "maps",
                      "--skip-existing")
    assert plain.returncode == 0, plain.stderr
    assert np.load(tmp_path / "maps" / "page_png.npy").shape[2:] == whole_map(model_dir, picture / "page.png",
                                                                           tmp_path).shape[2:]


def test_pad_image_s_map_stands_on_the_scene_s_ground_and_on_its_tissue(scene_net, model_dir, sparse_page, tmp_path):
    """A GeoTIFF's padded map is georeferenced on the scene itself: the crop is 20x20 at
    stride 2, so the border is 5 strides (4.5 rounded up) and cell (0, 0) is centred on
    the scene's corner, half a stride before its first 2x2 block. --skip-background looks for tissue on the image
    itself: the padded map computes the cells near the tissue (the top left quarter),
    and those equal the padded map computed whole."""
    from graphconv.georef import read_georeference

    folder, bands = scene_net
    tags = [(33550, 12, 3, (10.0, 10.0, 0.0), True), (33922, 12, 6, (0, 0, 0, 500000.0, 4600000.0, 0.0), True),
            (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True)]
    tifffile.imwrite(tmp_path / "geo.tif", bands, photometric="minisblack", planarconfig="separate",
                     extratags=tags)
    result = graphconv("run", folder / "fcn", "--image", tmp_path / "geo.tif", "--bands", "4,3,2", "--tile", "48",
                       "--pad-image", "reflect", "--output", tmp_path / "map.tif")
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(read_georeference(str(tmp_path / "map.tif")).affine,
                               [[20.0, 0.0, 499990.0], [0.0, -20.0, 4600010.0]])
    assert tifffile.imread(tmp_path / "map.tif").shape[1:] == (35, 45)  # 70x90 pixels in blocks of 2
    full = graphconv("run", model_dir, "--image", sparse_page, "--tile", "60", "--pad-image", "replicate",
                     "--output", tmp_path / "full.npy")
    tissue = graphconv("run", model_dir, "--image", sparse_page, "--tile", "60", "--pad-image", "replicate",
                       "--skip-background", "--output", tmp_path / "tissue.npy")
    assert full.returncode == 0 and tissue.returncode == 0, tissue.stderr
    got, want = np.load(tmp_path / "tissue.npy"), np.load(tmp_path / "full.npy")
    computed = np.isfinite(got).all(axis=(0, 1))
    assert computed[:20, :20].all() and not computed[-10:, -10:].any()
    np.testing.assert_allclose(got[:, :, computed], want[:, :, computed], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--scales", "1"], "--pad-image pads an image for its map to reach the edges (not with --scales"),
    (["--full-map"], "or --full-map, which keeps the cells past them"),
])
def test_pad_image_refuses_runs_without_a_map_of_the_image(model_dir, picture, args, message):
    result = graphconv("run", model_dir, "--image", picture / "page.png", "--pad-image", "reflect", *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_pad_image_of_a_classifier_as_written_asks_for_a_map(picture):
    result = graphconv("run", SPECS / "lenet.yaml", "--image", picture / "page.png", "--pad-image", "constant")
    assert result.returncode == 2
    assert "lenet as written gives one class vector per image: compile it, or add --crops" in result.stderr


@pytest.mark.parametrize("frame", [30, 1])
def test_pad_image_counts_a_cell_s_no_data_over_its_image_pixels_whatever_the_border(model_dir, tmp_path, frame):
    """A raster with a frame of no-data: the border is neither data nor no-data, so every
    mode leaves out the same cells, those whose crop's image pixels are mostly no-data
    (a 30-pixel frame: the corner cells, all no-data, which a border counted as data kept
    in constant mode); a 1-pixel frame, which replicate repeated over the whole border,
    leaves out none."""
    pixels = np.random.default_rng(5).integers(1, 255, (120, 150), dtype=np.uint8)
    pixels[:frame], pixels[-frame:], pixels[:, :frame], pixels[:, -frame:] = 0, 0, 0, 0
    tifffile.imwrite(tmp_path / "framed.tif", pixels, tile=(32, 32))
    left_out = {}
    for mode in ("constant", "reflect", "replicate"):
        result = graphconv("run", model_dir, "--image", tmp_path / "framed.tif", "--nodata", "0", "--pad-image", mode,
                           "--output", tmp_path / f"{mode}.npy")
        assert result.returncode == 0, result.stderr
        left_out[mode] = np.isnan(np.load(tmp_path / f"{mode}.npy")).all(axis=(0, 1))
    np.testing.assert_array_equal(left_out["constant"], left_out["reflect"])
    np.testing.assert_array_equal(left_out["replicate"], left_out["reflect"])
    assert left_out["reflect"][0, 0] == (frame == 30) and left_out["reflect"].any() == (frame == 30)


def test_a_map_made_again_removes_its_own_older_heatmaps_named_by_label_not_another_maps(tmp_path):
    """--heatmap dog names the file by the label (a-heatmap-dog.png); when a's map is made
    again, its older heatmaps go whatever class they name, but not those of a map whose own
    name starts with a's (a-heatmap-1.npy's a-heatmap-1-heatmap-3.png), nor a user's picture."""
    from PIL import Image

    from graphconv.images import save_picture
    from graphconv.tiled_cli import _remove_heatmaps_of_earlier_maps

    picture = Image.new("RGB", (4, 4))
    for name in ("a-heatmap-dog.png", "a-heatmap-7.png", "a-heatmap-top.png", "a-heatmap-1-heatmap-3.png"):
        save_picture(picture, str(tmp_path / name))
    picture.save(tmp_path / "a-heatmap-cat.png")  # the user's, not drawn by graphconv
    time.sleep(0.01)
    np.save(tmp_path / "a.npy", np.zeros((1, 1, 1, 1), np.float32))
    removed = _remove_heatmaps_of_earlier_maps(str(tmp_path / "a.npy"))
    assert sorted(Path(p).name for p in removed) == ["a-heatmap-7.png", "a-heatmap-dog.png", "a-heatmap-top.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-heatmap-1-heatmap-3.png", "a-heatmap-cat.png", "a.npy"]


def test_cli_a_collection_mapped_again_says_what_its_folder_keeps_from_earlier_runs(model_dir, library, monkeypatch):
    """A photo collection's user, re-running into one --output-dir: a sub-folder's run
    wrote every map a second time at another place without a word; heatmaps of a map
    made again (another --resize, no --heatmap now) stayed beside the new map; and maps of
    photos deleted since stayed listed as written."""
    folder, photos = library
    monkeypatch.chdir(folder)
    first = graphconv_in_process("run", model_dir, "--images", "lib/**/*.png", "--output-dir", "maps",
                                 "--heatmap", "top", "--resize", "40")
    assert first.returncode == 0, first.stderr
    assert len(list(Path("maps").rglob("*-heatmap-top.png"))) == 6

    part = graphconv_in_process("run", model_dir, "--images", "lib/2023", "--output-dir", "maps")
    assert part.returncode == 0, part.stderr
    assert ("note: 3 images of this run have maps in maps already at another place (graphconv-maps.csv lists "
            "2023/img1.npy; this run writes img1.npy: a map's place below --output-dir follows the folder the --images "
            "pattern starts from); to replace those instead, give --output-dir maps/2023") in part.stderr

    Path("lib/2024/img0.png").unlink()
    again = graphconv_in_process("run", model_dir, "--images", "lib/**/*.png", "--output-dir", "maps")
    assert again.returncode == 0, again.stderr
    # drawn from the 40-pixel maps, replaced; the deleted photo's map keeps its own
    assert [str(p) for p in Path("maps").rglob("*-heatmap-top.png")] == ["maps/2024/img0-heatmap-top.png"]
    assert ("note: 5 heatmaps of the maps this run replaced were removed (such as maps/2023/img1-heatmap-top.png): "
            "drawn from the earlier maps, they no longer showed what the maps hold") in again.stderr
    assert ("note: 1 map in maps is of an image no longer there (deleted or moved since; such as 2024/img0.npy, of "
            f"{folder / 'lib/2024/img0.png'}): its row in graphconv-maps.csv and its map are kept") in again.stderr


@pytest.mark.parametrize("batch", [False, True])
def test_an_image_replaced_while_it_is_mapped_leaves_no_mixed_map(model_dir, picture, tmp_path, monkeypatch, batch):
    """A slide copied over in place during its mapping gave a map half of one slide and
    half of the other, exit 0 and recorded as written: the image's stamp is checked again
    before the map is renamed into place."""
    import graphconv.tiling

    (tmp_path / "slides").mkdir()
    image = tmp_path / "slides" / "slide.tif"
    shutil.copy(picture / "tiled.tif", image)
    write = graphconv.tiling.write_block

    def replacing_the_image(out, tile, block, progress=None):
        if not (tmp_path / "other.tif").exists():  # the first tile: another slide is copied over this one
            tifffile.imwrite(tmp_path / "other.tif", np.zeros((150, 170), np.uint8), tile=(64, 64))
            os.replace(tmp_path / "other.tif", image)
            (tmp_path / "other.tif").touch()
        write(out, tile, block, progress)
    monkeypatch.setattr(graphconv.tiling, "write_block", replacing_the_image)
    where = ["--images", tmp_path / "slides", "--output-dir", tmp_path / "maps"] if batch else [
        "--image", image, "--output", tmp_path / "maps" / "slide.npy"]
    result = graphconv_in_process("run", model_dir, *where, "--tile", "64")
    assert result.returncode != 0
    assert "slide.tif: the image file changed while it was mapped" in result.stderr and "none was written" in \
        result.stderr
    assert not (tmp_path / "maps" / "slide.npy").exists()

