"""`graphconv run --tile`, lazily read TIFF/zarr inputs, .zarr outputs, Dask workers and
`--images`, through the CLI as users run them: the same map as the whole-image pass."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")
Image = pytest.importorskip("PIL.Image")

from conftest import SPECS  # noqa: E402
from graphconv.cluster import MapOptions, ModelRef, run_images  # noqa: E402
from graphconv.model import Model  # noqa: E402
from graphconv.sources import open_source  # noqa: E402


def graphconv(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "graphconv", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


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


def test_cli_too_small_tile_is_exit_2_with_the_smallest_size(model_dir, picture, tmp_path):
    result = graphconv("run", model_dir, "--image", picture / "page.png", "--tile", "8", "--output", tmp_path / "x.npy")
    assert result.returncode == 2
    assert "the smallest tile that works is" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "x.npy").exists()


def test_cli_tiles_automatically_when_the_whole_image_is_over_the_budget(picture, tmp_path):
    big = tmp_path / "big.png"  # whole, LeNet's run is estimated at 145 MB
    Image.fromarray((np.random.default_rng(0).random((1300, 1300)) * 255).astype(np.uint8)).save(big)
    folder = tmp_path / "alex"
    assert graphconv("compile", SPECS / "lenet.yaml", "-o", folder).returncode == 0
    whole = whole_map(folder, big, tmp_path)
    result = graphconv("run", folder, "--image", big, "--output", tmp_path / "auto.npy", "--memory-limit", "100M")
    assert result.returncode == 0, result.stderr
    assert "over the" in result.stderr and "evaluating it in exact tiles" in result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "auto.npy"), whole, rtol=1e-4, atol=1e-6)


def test_many_images_with_one_corrupt(model_dir, picture, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.open(picture / "page.png").crop((0, 0, 100 + 10 * i, 120)).save(folder / f"p{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = graphconv("run", model_dir, "--images", folder / "*.png", "--output-dir", tmp_path / "maps")
    assert result.returncode == 2
    assert "broken.png" in result.stderr and "3 of 4 image(s)" in result.stdout
    written = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert written == ["p0.npy", "p1.npy", "p2.npy"]
    model = Model.load(model_dir)
    x = open_source(folder / "p1.png", 1, model.graph.meta.get("preprocess")).read(0, 0, 120, 110)
    np.testing.assert_allclose(np.load(tmp_path / "maps" / "p1.npy"), model.run(x[None]), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_map(model_dir, picture, tmp_path):
    pytest.importorskip("distributed")
    whole = whole_map(model_dir, picture / "page.png", tmp_path)
    result = graphconv("run", model_dir, "--image", picture / "tiled.tif", "--tile", "50", "--workers", "2",
                       "--output", tmp_path / "d.npy")
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "d.npy"), whole, rtol=1e-4, atol=1e-6)


def test_run_images_api_in_process(model_dir, picture, tmp_path):
    results = run_images(ModelRef(str(model_dir)), [str(picture / "page.png")], str(tmp_path / "o"),
                         MapOptions(reduce="argmax"), tile=60)
    assert results[0].error is None and results[0].shape[1] == 1
    assert np.load(tmp_path / "o" / "page.npy").dtype == np.uint16


def test_inspect_prints_the_tile_plan(model_dir):
    result = graphconv("inspect", model_dir, "--input-size", "2000", "3000", "--tile", "256")
    assert result.returncode == 0, result.stderr
    assert "tile plan for 2000x3000 with --tile 256" in result.stdout
    assert "halo" in result.stdout and "x the whole-image pass's" in result.stdout and "peak memory" in result.stdout


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
