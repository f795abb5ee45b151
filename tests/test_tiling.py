"""Tiled evaluation is exact: for every kind of network graphconv compiles (unpadded,
padded, padded unevenly by pad layers, dilated, shift-and-stitch, global pooling made
dense, DAGs, the ops of newer classifiers) and many tile sizes
(the smallest that works, ones that do not divide the image, images barely larger than
a crop), the stitched map equals the whole-image pass."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphconv
from graphconv.compiler import compile_model
from graphconv.errors import GraphconvError
from graphconv.tiling import (CropGrid, MapFile, as_grid, balanced_tile, choose_tile, map_transform, min_tile,
                              plan_tiles,
                              run_tiled, tile_bytes)

from conftest import SPECS, random_input
from nets import GATED, GROUP_NORMED, PADDED, UNPADDED

RESNETISH = """
name: resnetish
input: {name: data, shape: [3, 32, 32]}
layers:
  - {name: stem, op: conv, out_channels: 8, kernel_size: 3, stride: 2, padding: 1, bias: false}
  - {name: bn, op: batchnorm}
  - {name: relu, op: relu}
  - {name: c1, op: conv, out_channels: 8, kernel_size: 3, padding: 1}
  - {name: sum, op: add, inputs: [relu, c1]}
  - {name: down, op: conv, out_channels: 12, kernel_size: 3, stride: 2, padding: 1}
  - {name: gap, op: globalavgpool}
  - {name: flat, op: flatten}
  - {name: fc, op: fc, out_features: 4}
"""

# the ops of newer classifiers: ConvNeXt's layernorm, 7x7 depthwise conv and GELU,
# ShuffleNet's channel slices and shuffle, MobileNetV3's hard activations, a product
MODERN = """
name: modern
input: {name: data, shape: [4, 28, 28]}
layers:
  - {name: stem, op: conv, out_channels: 8, kernel_size: 2, stride: 2}
  - {name: ln, op: layernorm}
  - {name: dw, op: conv, out_channels: 8, kernel_size: 7, padding: 3, groups: 8}
  - {name: pw1, op: conv, out_channels: 16, kernel_size: 1}
  - {name: act, op: gelu}
  - {name: pw2, op: conv, out_channels: 8, kernel_size: 1}
  - {name: res, op: add, inputs: [ln, pw2]}
  - {name: half, op: slice_channels, start: 0, stop: 4}
  - {name: other, op: slice_channels, start: 4, stop: 8, inputs: [res]}
  - {name: branch, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: hs, op: hardswish}
  - {name: cat, op: concat, inputs: [half, hs]}
  - {name: shuffle, op: channel_shuffle, groups: 2}
  - {name: gate, op: hardsigmoid}
  - {name: prod, op: mul, inputs: [shuffle, gate]}
  - {name: down, op: conv, out_channels: 12, kernel_size: 3, stride: 2, padding: 1, groups: 4}
  - {name: sw, op: silu}
  - {name: gap, op: globalavgpool}
  - {name: fc, op: fc, out_features: 5}
"""

# TensorFlow's stride-2 "same" padding and Keras' ZeroPadding2D as graphconv imports them: a
# pad layer carrying the far side before a conv, a -inf one before a max pool, one before
# a depthwise conv of its own padding
UNEVEN = """
name: uneven
input: {name: data, shape: [3, 24, 22]}
layers:
  - {name: c1.pad, op: pad, padding: [0, 0, 1, 1]}
  - {name: c1, op: conv, out_channels: 6, kernel_size: 3, stride: 2}
  - {name: r1, op: relu}
  - {name: p1.pad, op: pad, padding: [1, 0, 0, 1], value: -.inf}
  - {name: p1, op: maxpool, kernel_size: 2, stride: 2}
  - {name: zp, op: pad, padding: [0, 2, 1, 0]}
  - {name: c2, op: conv, out_channels: 6, kernel_size: 3, stride: 2, padding: 1, groups: 6}
  - {name: fc1, op: fc, out_features: 5}
"""

# anti-aliased pooling (a reflect pad before a blur at stride 2) and an edge pad before a
# conv: borders copied from the map, which a tile must take from the image's real edge
MIRRORED = """
name: mirrored
input: {name: data, shape: [3, 22, 20]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: r1, op: relu}
  - {name: blur.pad, op: pad, padding: 1, mode: reflect}
  - {name: blur, op: conv, out_channels: 4, kernel_size: 3, stride: 2, groups: 4}
  - {name: c2.pad, op: pad, padding: [0, 1, 2, 1], mode: edge}
  - {name: c2, op: conv, out_channels: 6, kernel_size: 3, stride: 2}
  - {name: fc1, op: fc, out_features: 5}
"""

NETWORKS = {
    **{name: (text, {}) for name, text in UNPADDED.items()},
    "padded": (PADDED, {}),
    "resnetish": (RESNETISH, {}),
    "modern": (MODERN, {}),
    "padded-dilated": (PADDED, {"output_stride": 4, "stride_method": "dilate"}),
    # each shifted copy is padded where the shift cuts it: a tile's box starts at copy 0's field
    "padded-shift": (PADDED, {"output_stride": 4, "stride_method": "shift"}),
    "strided-shift": (UNPADDED["strided"], {"output_stride": 2, "stride_method": "shift"}),
    "dag-dilated": (UNPADDED["dag"], {"output_stride": 1, "stride_method": "dilate"}),
    "uneven": (UNEVEN, {}),
    "uneven-dilated": (UNEVEN, {"output_stride": 2, "stride_method": "dilate"}),
    "uneven-shift": (UNEVEN, {"output_stride": 4, "stride_method": "shift"}),
    "mirrored": (MIRRORED, {}),
    "mirrored-shift": (MIRRORED, {"output_stride": 2, "stride_method": "shift"}),
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            text, options = NETWORKS[name]
            path = tmp_path_factory.mktemp(name) / "net.yaml"
            path.write_text(text)
            cache[name] = compile_model(path, **options)
        return cache[name]
    return get


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("extra", [(0, 0), (1, 3), (45, 38)])
def test_tiled_equals_whole_for_every_kind_of_network(compiled, name, extra, rng):
    model = compiled(name)
    _, hc, wc = model.crop_shape
    x = rng.standard_normal((2, model.crop_shape[0], hc + extra[0], wc + extra[1])).astype(np.float32)
    whole = model.run(x)
    smallest = max(min_tile(model))
    for tile in (smallest, smallest + 7, 3 * smallest + 1, 10_000):
        tiled = run_tiled(model, x, tile)
        assert tiled.shape == whole.shape
        np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-5, err_msg=f"tile {tile}")


@settings(max_examples=25, deadline=None)
@given(height=st.integers(0, 60), width=st.integers(0, 60), tile_h=st.integers(0, 40),
       tile_w=st.integers(0, 40))
def test_tiled_equals_whole_over_sizes_and_rectangular_tiles(height, width, tile_h, tile_w):
    model = _PADDED_MODEL()
    _, hc, wc = model.crop_shape
    x = np.random.default_rng(height * 61 + width).standard_normal((1, 3, hc + height, wc + width)).astype(np.float32)
    low_h, low_w = min_tile(model)
    tiled = run_tiled(model, x, (low_h + tile_h, low_w + tile_w))
    np.testing.assert_allclose(tiled, model.run(x), rtol=1e-4, atol=1e-5)


def _PADDED_MODEL(cache={}):
    if "model" not in cache:
        import tempfile
        from pathlib import Path
        path = Path(tempfile.mkdtemp()) / "padded.yaml"
        path.write_text(PADDED)
        cache["model"] = compile_model(path, output_stride=4, stride_method="dilate")
    return cache["model"]


def test_every_cell_is_written_once_and_tiles_read_only_their_halo(compiled):
    model = compiled("padded")
    plan = plan_tiles(model, (300, 200), 80)
    covered = np.zeros(plan.map_hw, int)
    for tile in plan.tiles:
        covered[tile.rows[0]:tile.rows[1], tile.cols[0]:tile.cols[1]] += 1
        assert tile.box[2] - tile.box[0] <= 80 and tile.box[3] - tile.box[1] <= 80
        assert tile.box[0] % plan.align[0] == 0 and tile.box[1] % plan.align[1] == 0
    assert (covered == 1).all()
    bigger = plan_tiles(model, (300, 200), 200)
    assert 1 < bigger.overhead < plan.overhead


def test_a_tile_too_small_names_the_smallest_that_works(compiled):
    model = compiled("padded")
    smallest = min_tile(model)
    with pytest.raises(GraphconvError, match=f"the smallest tile that works is {max(smallest)}"):
        plan_tiles(model, (200, 200), max(smallest) - 1)
    with pytest.raises(GraphconvError, match=r"tiles that small compute \d+x the image's pixels \(each its halo "
                                             r"again\); the memory budget allows the whole image in one pass"):
        plan_tiles(model, (2000, 2000), max(smallest) - 1)  # a user took the smallest: 296x the work


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_a_tile_as_large_as_the_image_is_one_tile_however_small(compiled, name, rng):
    """A tile that covers the image on an axis reads the whole axis, which runs whenever
    the image does: --tile 400 on a 296x296 image was refused as smaller than the 529 a
    tile needs where it cuts the image, though without --tile it ran in one tile."""
    model = compiled(name)
    _, hc, wc = model.crop_shape
    x = rng.standard_normal((1, model.crop_shape[0], hc, wc)).astype(np.float32)
    plan = plan_tiles(model, (hc, wc), (hc, wc))
    assert len(plan.tiles) == 1
    np.testing.assert_allclose(run_tiled(model, x, max(hc, wc)), model.run(x), rtol=1e-4, atol=1e-5)
    smallest = min_tile(model)
    with pytest.raises(GraphconvError, match=f"the smallest tile that works is {max(smallest)}"):
        plan_tiles(model, (hc, wc + 3 * smallest[1]), (hc, smallest[1] - 1))  # cuts the columns


@pytest.mark.parametrize("name", ["padded", "resnetish"])
@pytest.mark.parametrize("image_hw, tile", [((400, 410), 150), ((300, 900), 260), ((517, 240), 517), ((90, 70), 60)])
def test_balanced_tiles_are_as_many_and_as_even_as_the_cells_allow(compiled, name, image_hw, tile):
    """The budget's largest tile left a sliver (3x3 tiles of 4080 over 8000 pixels, the
    last 208 wide): as many tiles each way, holding near-equal shares of the cells, none
    larger than before, the same map."""
    grid = as_grid(compiled(name))
    before = plan_tiles(grid, image_hw, tile)
    after = plan_tiles(grid, image_hw, balanced_tile(grid, image_hw, tile))
    assert len(after.tiles) == len(before.tiles) and after.map_hw == before.map_hw
    assert all(after.tile_hw[a] <= before.tile_hw[a] for a in (0, 1))
    for axis in (0, 1):
        spans = sorted({(t.rows, t.cols)[axis] for t in after.tiles})
        cells = [hi - lo for lo, hi in spans]
        assert max(cells) - min(cells) < len(spans)  # uniform tiles: the last holds what is left
        assert min(cells) >= min(hi - lo for lo, hi in {(t.rows, t.cols)[axis] for t in before.tiles})


@pytest.mark.parametrize("classes", [None, [2, 0]])
def test_argmax_of_findings_called_on_their_own_marks_the_cells_calling_none(rng, classes):
    """A sigmoid model's best class is an answer only at 0.5: under it the class map holds
    65534 (no class called), not the best of the kept classes at 0.02; 65535 where any
    kept score is NaN (not computed)."""
    scores = rng.random((2, 3, 6, 7)).astype(np.float32)
    scores[0, :, 0, 0] = np.nan
    transform, channels, dtype = map_transform("argmax", classes, 3, call_cut=0.5)
    kept = scores if classes is None else scores[:, classes]
    index = np.arange(3) if classes is None else np.array(classes)
    expected = np.where(kept.max(axis=1) >= 0.5, index[kept.argmax(axis=1)], 65534)
    expected[0, 0, 0] = 65535
    got = transform(scores)
    assert (channels, dtype, got.dtype) == (1, np.uint16, np.uint16)
    np.testing.assert_array_equal(got[:, 0], expected)
    assert (got == 65534).any() and (got < 3).any()


def test_reduce_argmax_and_classes(compiled, rng):
    model = compiled("padded")
    x = rng.standard_normal((1, 3, 90, 70)).astype(np.float32)
    whole = model.run(x)
    transform, channels, dtype = map_transform("argmax", None, whole.shape[1])
    classes = run_tiled(model, x, 70, transform=transform)
    assert classes.dtype == np.uint16 and channels == 1
    np.testing.assert_array_equal(classes[:, 0], whole.argmax(axis=1))
    transform, channels, _ = map_transform(None, [3, 1], whole.shape[1])
    np.testing.assert_allclose(run_tiled(model, x, 70, transform=transform), whole[:, [3, 1]], rtol=1e-4, atol=1e-5)
    transform, _, _ = map_transform("argmax", [3, 1], whole.shape[1])
    np.testing.assert_array_equal(run_tiled(model, x, 70, transform=transform)[:, 0],
                                  np.array([3, 1])[whole[:, [3, 1]].argmax(axis=1)])
    with pytest.raises(GraphconvError, match="--classes 9: the model has 5 classes"):
        map_transform(None, [9], 5)


@pytest.mark.parametrize("classes", [None, [3, 1]])
def test_reduce_argmax_gives_a_cell_with_nan_scores_no_class(classes):
    """A cell over declared no-data (NaN pixels) has NaN scores; np.argmax calls the
    first NaN the winner, and such cells were class 0, a real class, in the map."""
    from graphconv.background import NO_CLASS
    scores = np.random.default_rng(0).standard_normal((1, 5, 3, 4)).astype(np.float32)
    scores[0, 2, 1, 1] = np.nan
    scores[0, :, 2, 3] = np.nan
    transform, _, _ = map_transform("argmax", classes, 5)
    kept = scores if classes is None else scores[:, classes]
    winners = kept.argmax(axis=1) if classes is None else np.array(classes)[kept.argmax(axis=1)]
    nan_cells = np.isnan(kept).any(axis=1)
    out = transform(scores)[:, 0]
    assert (out[nan_cells] == NO_CLASS).all() and nan_cells[0, 2, 3]
    np.testing.assert_array_equal(out[~nan_cells], winners[~nan_cells])


@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_map_file_appears_only_when_complete(tmp_path, suffix):
    path = tmp_path / f"map{suffix}"
    with pytest.raises(RuntimeError):
        with MapFile(str(path), (1, 2, 5, 5), np.float32, (2, 2)) as out:
            out[:, :, :2] = 1
            raise RuntimeError("killed half way")
    assert list(tmp_path.iterdir()) == []
    with MapFile(str(path), (1, 2, 5, 5), np.float32, (2, 2)) as out:
        out[:] = 7
    if suffix == ".npy":
        assert np.load(path).sum() == 7 * 50
    else:
        import zarr
        assert zarr.open_array(str(path), mode="r")[:].sum() == 7 * 50


def test_tiled_on_cuda_simulator_equals_cpu(compiled, rng):
    pytest.importorskip("numba.cuda")
    model = compiled("strided")
    x = rng.standard_normal((1, 2, 23, 27)).astype(np.float32)
    np.testing.assert_allclose(run_tiled(model, x, max(min_tile(model)) + 2, device="cuda"), model.run(x),
                               rtol=1e-4, atol=1e-5)


def test_alexnet_tiled_equals_whole(rng):
    model = compile_model(SPECS / "alexnet.yaml")
    x = rng.standard_normal((1, 3, 227 + 200, 227 + 120)).astype(np.float32)
    tiled = run_tiled(model, x, max(min_tile(model)) + 40)
    np.testing.assert_allclose(tiled, model.run(x), rtol=1e-4, atol=1e-6)


class CountingReader:
    """A user's own reader (as OpenSlide would be wrapped): only boxes are ever read."""

    def __init__(self, array):
        self.array, self.reads = array, []
        _, self.channels, self.height, self.width = array.shape

    def read(self, top, left, bottom, right):
        self.reads.append((top, left, bottom, right))
        return self.array[0, :, top:bottom, left:right]


def test_model_run_tiled_takes_a_users_reader(compiled, rng):
    model = compiled("padded")
    x = rng.standard_normal((1, 3, 120, 140)).astype(np.float32)
    reader = CountingReader(x)
    out = np.full((1, 5, *model.output_hw(120, 140)), np.nan, np.float32)
    assert model.run_tiled(reader, 70, out=out) is out
    np.testing.assert_allclose(out, model.run(x), rtol=1e-4, atol=1e-5)
    assert len(reader.reads) > 1 and all(b - t <= 70 and r - l <= 70 for t, l, b, r in reader.reads)


def test_missing_scale_extra_says_how_to_get_it(monkeypatch):
    import sys
    from graphconv.sources import require

    monkeypatch.setitem(sys.modules, "zarr", None)  # what an environment without zarr imports
    with pytest.raises(GraphconvError, match=r"needs the zarr package: pip install 'graphconv\[scale\]'"):
        require("zarr")


def test_an_uncompiled_classifier_is_refused_with_the_way_out(rng):
    from graphconv.model import Model

    classifier = Model.load(SPECS / "lenet.yaml")
    with pytest.raises(GraphconvError, match="fc sees its whole input.*compile it first.*fc-to-conv"):
        plan_tiles(classifier, (100, 100), 50)



def test_a_segmentation_network_with_a_whole_image_gate_is_not_sent_to_compile(write_spec):
    """An LR-ASPP-style gate (a global pool): tiles said 'compile it first', compile said
    'run --crops', and --crops refused a segmentation network, in a circle."""
    from graphconv.model import Model

    seg = Model.load(write_spec("name: seg\ntask: segmentation\ninput: {shape: [3, 16, 16]}\nlayers:\n"
                                "  - {name: c1, op: conv, out_channels: 4, kernel_size: 3, padding: 1}\n"
                                "  - {name: gp, op: globalavgpool}\n  - {name: g, op: sigmoid}\n"
                                "  - {name: m, op: mul, inputs: [c1, g]}\n"))
    with pytest.raises(GraphconvError, match="needs the whole image in one pass and cannot be evaluated in tiles: "
                                             "run it whole"):
        plan_tiles(seg, (100, 100), 50)


def test_a_network_that_needs_the_whole_image_runs_as_one_tile_when_memory_holds_it(write_spec, rng, tmp_path):
    """A whole-image segmentation network on a TIFF (which is always read in tiles) was
    refused with or without --tile, where the same pixels as a PNG ran: it is one tile
    now, when --tile covers the image or the memory limit holds the image's run."""
    from graphconv.cli import main
    from graphconv.model import Model

    tifffile = pytest.importorskip("tifffile")
    spec = write_spec("name: seg\ntask: segmentation\ninput: {shape: [1, 16, 16]}\nlayers:\n"
                      "  - {name: c1, op: conv, out_channels: 4, kernel_size: 3, padding: 1}\n"
                      "  - {name: gp, op: globalavgpool}\n  - {name: g, op: sigmoid}\n"
                      "  - {name: m, op: mul, inputs: [c1, g]}\n")
    seg = Model.load(spec)
    x = rng.standard_normal((1, 1, 90, 70)).astype(np.float32)
    assert len(plan_tiles(seg, (90, 70), (90, 70)).tiles) == 1
    np.testing.assert_array_equal(run_tiled(seg, x, 100), seg.run(x))
    assert choose_tile(seg, (90, 70), 2 ** 30) == 90
    with pytest.raises(GraphconvError, match=r"seg needs the whole 90x70 image in one pass \(layer 'gp': "
                                             r"globalavgpool sees its whole input\), .* raise --memory-limit"):
        choose_tile(seg, (90, 70), 10_000)
    tifffile.imwrite(tmp_path / "page.tif", rng.integers(0, 255, (300, 200), np.uint8), tile=(64, 64))
    for extra in ([], ["--tile", "300"], ["--skip-background"]):  # background: the one tile's cheapest
        assert main(["run", str(spec), "--image", str(tmp_path / "page.tif"), "--output", str(tmp_path / "map.npy"),
                     "--quiet", *extra]) == 0
        assert np.load(tmp_path / "map.npy").shape == (1, 4, 300, 200)
        (tmp_path / "map.npy").unlink()


@pytest.mark.parametrize("gate", [False, True])
def test_a_tile_that_covers_a_padded_image_covers_its_padding(write_spec, rng, gate):
    """A segmentation network whose sides must be even pads a 41x39 image to 42x40: a
    tile of 41 covers the image, and was refused (too small; or, with a whole-image
    gate, 'a tile at least as large as the image')."""
    from graphconv.model import Model

    gated = ("  - {name: gp, op: globalavgpool}\n  - {name: g, op: sigmoid}\n"
             "  - {name: m, op: mul, inputs: [up, g]}\n") if gate else ""
    seg = Model.load(write_spec("name: seg\ntask: segmentation\ninput: {shape: [1, 16, 16]}\nlayers:\n"
                                "  - {name: c1, op: conv, out_channels: 4, kernel_size: 3, padding: 1}\n"
                                "  - {name: p, op: maxpool, kernel_size: 2}\n"
                                "  - {name: c2, op: conv, out_channels: 4, kernel_size: 3, padding: 1}\n"
                                "  - {name: up, op: upsample, factor: 2}\n" + gated))
    assert seg.padded_hw(41, 39) == (42, 40)
    x = rng.standard_normal((1, 1, 41, 39)).astype(np.float32)
    for tile in (41, (41, 39), 42):
        np.testing.assert_array_equal(run_tiled(seg, x, tile), seg.run(x))


# ---- the classifier on every crop (run --crops), streamed in tiles ---------------------------------

def _gated_classifier(cache={}):
    """A squeeze-and-excitation classifier on 3x12x12 crops: it cannot slide, so only the crop grid maps it."""
    if "model" not in cache:
        import tempfile
        from pathlib import Path
        from graphconv.model import Model
        path = Path(tempfile.mkdtemp()) / "gated.yaml"
        path.write_text(GATED)
        cache["model"] = Model.load(path)
    return cache["model"]


@settings(max_examples=25, deadline=None)
@given(height=st.integers(0, 40), width=st.integers(0, 40), stride=st.integers(1, 9),
       tile_h=st.integers(0, 30), tile_w=st.integers(0, 30))
def test_crop_grid_in_tiles_equals_the_crop_loop(height, width, stride, tile_h, tile_w):
    """Every tile reads whole crops on the stride grid and writes its own cells, so the
    stitched map is the classifier on every crop, whatever the tile and the stride."""
    from graphconv.dense import crop_loop

    classifier = _gated_classifier()
    x = np.random.default_rng(height * 41 + width).standard_normal((1, 3, 12 + height, 12 + width)).astype(np.float32)
    grid = CropGrid(classifier, stride)
    assert min_tile(grid) == (12, 12)
    tiled = run_tiled(grid, x, (12 + tile_h, 12 + tile_w))
    np.testing.assert_allclose(tiled, crop_loop(classifier, x, stride), rtol=1e-5, atol=1e-6)


def test_crop_grid_cell_is_the_classifier_on_its_crop(rng):
    classifier = _gated_classifier()
    x = rng.standard_normal((2, 3, 40, 33)).astype(np.float32)
    scores = run_tiled(CropGrid(classifier, (3, 5)), x, 20)
    assert scores.shape == (2, 3, (40 - 12) // 3 + 1, (33 - 12) // 5 + 1)
    for i, j in ((0, 0), (4, 2), (scores.shape[2] - 1, scores.shape[3] - 1)):
        crop = x[:, :, 3 * i:3 * i + 12, 5 * j:5 * j + 12]
        np.testing.assert_allclose(scores[:, :, i, j], classifier.run(crop), rtol=1e-5, atol=1e-6)


def test_crop_grid_tiles_are_capped_by_work_and_memory():
    """Without --tile: tiles of 32x32 crops (progress every ~1000 crops), fewer when memory is short."""
    classifier = _gated_classifier()
    grid = CropGrid(classifier, 4)
    assert choose_tile(grid, (5000, 5000), 8 << 30) == 12 + 31 * 4
    assert choose_tile(grid, (30, 5000), 8 << 30) == 12 + 31 * 4
    assert choose_tile(grid, (50, 60), 8 << 30) == 60
    budget = tile_bytes(grid, (60, 60))
    short = choose_tile(grid, (5000, 5000), budget)
    assert 60 <= short < 12 + 31 * 4 and tile_bytes(grid, (short, short)) <= budget
    with pytest.raises(GraphconvError, match="smaller than the classifier's 12x12 crop"):
        plan_tiles(grid, (11, 50), 20)


def test_crop_grid_runs_the_classifier_with_its_batch_norm_folded_and_activations_fused(write_spec, rng):
    """What `run --crops` runs: the passes that keep a classifier one, none that make it slide."""
    from graphconv.dense import crop_loop
    from graphconv.model import Model

    classifier = Model.load(write_spec("""
        name: gated_bn
        input: {shape: [3, 12, 12]}
        layers:
          - {name: c1, op: conv, out_channels: 6, kernel_size: 3, stride: 2}
          - {name: bn, op: batchnorm}
          - {name: act, op: relu}
          - {name: squeeze, op: globalavgpool}
          - {name: gate, op: sigmoid}
          - {name: excite, op: mul, inputs: [act, gate]}
          - {name: head, op: globalavgpool}
          - {name: flat, op: flatten}
          - {name: fc, op: fc, out_features: 3}
    """))
    grid = CropGrid(classifier, 4)
    assert [n.op for n in grid.model.graph.layers()] == ["conv", "globalavgpool", "sigmoid", "mul", "globalavgpool",
                                                         "flatten", "fc"]
    assert CropGrid(classifier, 3).model is grid.model  # one per model: its prepared weights and plans kept
    assert grid.model.graph.node("c1").params["activation"] == "relu"
    x = rng.standard_normal((2, 3, 30, 27)).astype(np.float32)
    np.testing.assert_allclose(run_tiled(grid, x, 20), crop_loop(classifier, x, 4), rtol=1e-5, atol=1e-6)


def test_a_network_that_normalises_whole_maps_is_not_tiled_but_its_crops_are(write_spec, rng):
    """A groupnorm's statistics are its whole input's: tiles of the dense pass would each
    normalise by their own, so tiling refuses it; the crop grid runs the classifier on
    each crop and tiles exactly."""
    model = graphconv.load(write_spec(GROUP_NORMED))
    with pytest.raises(GraphconvError, match=r"layer 'gn': groupnorm \(a GroupNorm or InstanceNorm\) takes "
                                             r"statistics"):
        min_tile(model)
    image = random_input(rng, (1, 3, 40, 36))
    grid = CropGrid(model, 4)
    np.testing.assert_array_equal(run_tiled(grid, image, 24), grid.whole(image, "cpu"))


@pytest.mark.parametrize("image_hw", [(100, 100), (90, 150), (300, 260)])
def test_without_tile_an_image_memory_holds_is_one_tile(compiled, image_hw, rng):
    """A padded network's fields reach past the image by its halo on both sides: the
    automatic tile must leave room for that, or a small image is cut into tiles that
    each recompute the halo (a 128x128 image in 81 tiles, 60x its pixels)."""
    model = compiled("padded")
    tile = choose_tile(model, image_hw, 8 << 30)
    plan = plan_tiles(model, image_hw, tile)
    assert len(plan.tiles) == 1 and plan.overhead == pytest.approx(1.0)
    assert plan.tile_hw == image_hw  # the one tile reads the image, not the halo past it
    x = rng.standard_normal((1, 3, *image_hw)).astype(np.float32)
    np.testing.assert_allclose(run_tiled(model, x, tile), model.run(x), rtol=1e-4, atol=1e-5)


def test_without_tile_memory_is_estimated_for_the_box_a_tile_reads(compiled):
    """The estimate is for what runs: a tile past the image reads only the image, so a
    budget that holds the image's run holds the one tile."""
    model = compiled("padded")
    budget = tile_bytes(as_grid(model), (100, 100))
    plan = plan_tiles(model, (100, 100), choose_tile(model, (100, 100), budget))
    assert len(plan.tiles) == 1
    smaller = plan_tiles(model, (100, 100), choose_tile(model, (100, 100), budget - 1))
    assert len(smaller.tiles) > 1



@pytest.mark.parametrize("name", ["padded", "strided", "uneven", "mirrored-shift", "padded-dilated", "dag"])
@pytest.mark.parametrize("image_hw, parts", [((300, 260), 2), ((300, 260), 3), ((90, 400), 4), ((260, 300), 8)])
def test_workers_that_run_at_once_get_a_tile_each_of_even_size_and_the_map_is_the_same(compiled, name, image_hw,
                                                                                      parts, rng):
    """An image memory holds in one tile ran on one of the workers while the others idled:
    `spread_tile` cuts it for `parts` workers into tiles no larger than the budget's (so
    each fits), and ends sooner, rounds of the largest box counted; pieces of equal cells,
    not the largest that fits and a sliver."""
    from graphconv.tiling import spread_tile

    model = compiled(name)
    fitted = choose_tile(model, image_hw, 8 << 30)
    whole = plan_tiles(model, image_hw, fitted)
    spread = spread_tile(model, image_hw, fitted, parts)
    plan = plan_tiles(model, image_hw, spread)
    assert plan.tile_hw[0] <= whole.tile_hw[0] and plan.tile_hw[1] <= whole.tile_hw[1]

    def rounds_by_box(p):
        return -(-len(p.tiles) // parts) * p.tile_hw[0] * p.tile_hw[1]
    assert rounds_by_box(plan) < rounds_by_box(whole)  # each image fits one tile: cut, it ends sooner
    assert 1 < len(plan.tiles) <= 2 * parts
    for axis in (0, 1):
        pieces = sorted({(t.rows, t.cols)[axis] for t in plan.tiles})
        cells = [end - start for start, end in pieces]
        assert max(cells) - min(cells) <= max(cells) // 2 + 1, pieces  # no sliver beside a whole tile
    x = rng.standard_normal((1, model.crop_shape[0], *image_hw)).astype(np.float32)
    np.testing.assert_allclose(run_tiled(model, x, spread), model.run(x), rtol=1e-4, atol=1e-5)


def test_a_large_image_for_two_workers_is_cut_in_two_and_more_tiles_than_workers_are_left(compiled):
    from graphconv.tiling import spread_tile

    model = compiled("strided")
    fitted = choose_tile(model, (300, 260), 8 << 30)
    halves = plan_tiles(model, (300, 260), spread_tile(model, (300, 260), fitted, 2))
    assert len(halves.tiles) == 2
    assert spread_tile(model, (300, 260), fitted, 1) == fitted
    small = max(min_tile(model)) + 8
    assert spread_tile(model, (300, 260), small, 2) == small  # as many tiles as workers already


@pytest.mark.parametrize("name", ["padded", "strided", "mirrored-shift", "padded-dilated", "padded-shift"])
@pytest.mark.parametrize("side", [60, 150, 200, 250, 400])
def test_the_cells_a_plan_s_tiles_hold_plan_its_tiles_again(compiled, name, side):
    """--resume without --tile plans the stopped run's tiles again from its record. From
    the largest box a tile reads it planned other tiles where every tile meets the
    image's border (2x2 tiles of a padded network read less than their tile there)."""
    from graphconv.tiling import tile_for_cells

    model = compiled(name)
    image_hw = (300, 260)
    planned = plan_tiles(model, image_hw, max(side, max(min_tile(model))))
    again = plan_tiles(model, image_hw, tile_for_cells(model, image_hw, planned.cells_hw))
    assert again.tiles == planned.tiles and again.as_recorded() == planned.as_recorded()

@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("piece_cells", [(1, 1), (2, 3), (5, 4), (7, 100)])
def test_tiles_computed_in_pieces_hold_what_the_tiles_do(compiled, name, piece_cells, rng):
    """A stopped run's tiles resumed on less memory are computed in pieces, each a tile of
    its own cells on its own box (`in_pieces`): the map is the whole image's; `progress`
    hears of each tile of the plan once, after its last piece; the tiles done are left."""
    from graphconv.tiling import in_pieces

    model = compiled(name)
    image_hw = (model.crop_shape[1] + 45, model.crop_shape[2] + 38)
    tile = 2 * max(min_tile(model)) + 5
    plan = plan_tiles(model, image_hw, tile)
    x = rng.standard_normal((1, model.crop_shape[0], *image_hw)).astype(np.float32)
    heard = []
    tiled = run_tiled(model, x, tile, piece_cells=piece_cells, progress=heard.append)
    np.testing.assert_allclose(tiled, model.run(x), rtol=1e-4, atol=1e-5)
    assert sorted(heard, key=plan.tiles.index) == list(plan.tiles)
    pieces = in_pieces(model, plan, piece_cells)
    assert all(p.rows[1] - p.rows[0] <= piece_cells[0] and p.cols[1] - p.cols[0] <= piece_cells[1]
               for p in pieces.plan.tiles)
    first = plan.tiles[0]
    kept = np.full_like(tiled, 7.0)
    run_tiled(model, x, tile, out=kept, piece_cells=piece_cells, done=[first])
    assert (kept[:, :, first.rows[0]:first.rows[1], first.cols[0]:first.cols[1]] == 7.0).all()
    assert (kept != 7.0).sum() == tiled.size - kept[:, :, first.rows[0]:first.rows[1], first.cols[0]:first.cols[1]].size


def test_pieces_fit_the_budget_the_stopped_run_s_tiles_are_over(compiled):
    from graphconv.tiling import DenseGrid, in_pieces, piece_cells_within, tile_bytes

    model = DenseGrid(compiled("padded"))
    image_hw = (300, 260)
    plan = plan_tiles(model, image_hw, 200)
    assert piece_cells_within(model, plan, tile_bytes(model, plan.tile_hw)) is None  # they fit: no pieces
    tight = (tile_bytes(model, plan.tile_hw) + tile_bytes(model, min_tile(model.model))) // 2
    cells = piece_cells_within(model, plan, tight)
    assert tile_bytes(model, in_pieces(model, plan, cells).plan.tile_hw) <= tight
    assert cells[0] < plan.cells_hw[0]


# ---- map files: nothing lost, nothing left behind ------------------------------------------------

def _write_map_and_die(path, value, fault=None, die_inside=False):
    """A subprocess writing a (1, 2, 5, 5) map of `value` through MapFile: killed at the
    files.py checkpoint `fault`, or by SIGKILL half way through its tiles."""
    import subprocess
    import sys
    from graphconv.files import FAULT_ENV

    code = ("import os, signal, sys, numpy as np\n"
            "from graphconv.tiling import MapFile\n"
            "with MapFile(sys.argv[1], (1, 2, 5, 5), np.float32, (2, 2)) as out:\n"
            f"    out[:] = {value}\n"
            + ("    os.kill(os.getpid(), signal.SIGKILL)\n" if die_inside else ""))
    env = {**os.environ, **({FAULT_ENV: fault} if fault else {})}
    return subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, timeout=120)


def _read_map(path):
    if str(path).endswith(".zarr"):
        import zarr
        return zarr.open_array(str(path), mode="r")[:]
    if str(path).endswith(".tif"):
        import tifffile
        return tifffile.imread(path)
    return np.load(path)


@pytest.mark.parametrize("fault, survivor", [("output-set-aside", 1), ("output-replaced", 2)])
def test_a_zarr_map_replaced_is_the_old_or_the_new_whenever_the_run_is_killed(tmp_path, fault, survivor):
    """A folder cannot be renamed over a folder: the old map is renamed aside, the new
    one in, then the old one removed. Killed between the renames, the next run in the
    folder puts the old map back; killed after, it removes the old one. Either way one
    whole map, never neither (the old code deleted the old map first)."""
    pytest.importorskip("zarr")
    path = tmp_path / "map.zarr"
    assert _write_map_and_die(path, 1).returncode == 0
    assert _write_map_and_die(path, 2, fault=fault).returncode == -9
    with MapFile(str(tmp_path / "other.npy"), (1, 1, 2, 2), np.float32, (2, 2)) as out:
        out[:] = 0  # any map written into the folder settles what the killed run left
    assert (_read_map(path) == survivor).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.zarr", "other.npy"]


@pytest.mark.parametrize("suffix", [".npy", ".zarr", ".tif"])
def test_a_killed_run_s_partial_map_is_removed_by_the_next_run_in_its_folder(tmp_path, suffix):
    """SIGKILL or SIGTERM runs no cleanup: the partial map, as large as the map, stays,
    but under a temporary name carrying its process id, which the next run writing into
    the folder removes once that process is gone."""
    if suffix != ".npy":
        pytest.importorskip("zarr" if suffix == ".zarr" else "tifffile")
    path = tmp_path / f"map{suffix}"
    assert _write_map_and_die(path, 3, die_inside=True).returncode == -9
    assert [p.name for p in tmp_path.iterdir()] != [] and not path.exists()
    with MapFile(str(path), (1, 2, 5, 5), np.float32, (2, 2)) as out:
        out[:] = 4
    assert [p.name for p in tmp_path.iterdir()] == [path.name] and (_read_map(path) == 4).all()


@pytest.mark.parametrize("suffix", [".npy", ".zarr", ".tif"])
def test_a_failed_map_leaves_no_folder_it_made(tmp_path, suffix):
    if suffix != ".npy":
        pytest.importorskip("zarr" if suffix == ".zarr" else "tifffile")
    path = tmp_path / "nd3" / "nd4" / f"map{suffix}"
    with pytest.raises(RuntimeError):
        with MapFile(str(path), (1, 2, 5, 5), np.float32, (2, 2)) as out:
            assert (tmp_path / "nd3" / "nd4").is_dir()
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with MapFile(str(path), (1, 2, 5, 5), np.float32, (2, 2)) as out:
        out[:] = 5
    assert (_read_map(path) == 5).all()


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
@pytest.mark.parametrize("fallocate", ["full", "unsupported", "past the free space"])
def test_a_memory_mapped_map_that_the_disk_cannot_hold_is_refused_before_any_tile(tmp_path, monkeypatch,
                                                                                   suffix, fallocate):
    """A memory map is a sparse file: on a full disk the first tile written into it
    killed the process with SIGBUS. Its blocks are reserved when it is made (or, where
    the file system cannot, the free space checked): a full disk is one error naming
    the map, and nothing is left, folders included. A map past the free space is refused
    before posix_fallocate is asked (one for 2.5 TB with 61 GB free left 0 B free)."""
    import errno

    def refuse(fd, offset, length):
        if fallocate == "past the free space":
            pytest.fail("posix_fallocate was asked for more than the free space")
        raise OSError(errno.ENOSPC if fallocate == "full" else errno.EOPNOTSUPP, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", refuse, raising=False)
    if fallocate != "full":
        from graphconv import files
        monkeypatch.setattr(files, "_free_bytes", lambda folder: 1000)
    path = tmp_path / "new" / f"map{suffix}"
    with pytest.raises(GraphconvError, match=rf"^new/map\{suffix}: not enough disk space: it needs 77\.[56] KB"):
        with MapFile(str(path), (1, 20, 31, 32), np.float32, (8, 8)):
            pytest.fail("no tile may be written")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_a_full_disk_while_a_map_is_written_names_the_map(tmp_path, monkeypatch, suffix):
    """zarr's chunk writes and the TIFF written at the end say "No space left on device"
    without a file name: the error names the map, and nothing is left."""
    import errno

    pytest.importorskip("zarr" if suffix == ".zarr" else "tifffile")
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write_map_tiff(*args, **kwargs):
        raise full
    monkeypatch.setattr("graphconv.georef.write_map_tiff", write_map_tiff)
    with pytest.raises(GraphconvError, match=rf"^map\{suffix}: cannot write: No space left on device$"):
        with MapFile(str(tmp_path / f"map{suffix}"), (1, 2, 5, 5), np.float32, (2, 2)) as out:
            out[:] = 1
            if suffix == ".zarr":
                raise full  # what a chunk write on a full disk raises
    assert list(tmp_path.iterdir()) == []


def test_an_input_s_os_error_is_not_reported_as_the_map_s(tmp_path):
    with pytest.raises(FileNotFoundError, match="slide.svs"):
        with MapFile(str(tmp_path / "map.npy"), (1, 2, 5, 5), np.float32, (2, 2)):
            raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "slide.svs"))
    assert list(tmp_path.iterdir()) == []


def test_a_budget_no_tile_fits_says_what_the_smallest_needs():
    """It said only that the smallest tile needs more than the budget allows."""
    from graphconv.memory import format_size

    grid = as_grid(compile_model(SPECS / "lenet.yaml"))
    need = tile_bytes(grid, (max(grid.smallest_tile()),) * 2)
    with pytest.raises(GraphconvError, match=rf"even the smallest tile \(\d+x\d+\) needs {format_size(need)}, over "
                                             rf"the {format_size(need // 2)} a tile may take$"):
        choose_tile(grid, (5000, 5000), need // 2)
    assert choose_tile(grid, (5000, 5000), need) >= max(grid.smallest_tile())


def test_a_plan_describes_the_cells_its_tiles_write():
    """A 40x40 image in one tile of a 400 px capacity writes its own few cells, not the
    tile's capacity."""
    plan = plan_tiles(compile_model(SPECS / "lenet.yaml"), (40, 40), 400)
    assert plan.map_hw == (3, 3) and "up to 3x3 score cells each" in plan.describe()


def test_a_plan_of_more_tiles_than_memory_holds_is_refused_before_listing_them():
    """A 65 KB TIFF whose header claims 4e9 x 4e9 pixels: its plan grew past 3.7 GB, and
    past any memory limit, until the process died. Refused at once, saying why."""
    import time

    start = time.perf_counter()
    with pytest.raises(GraphconvError, match=r"a plan of [\d,]+ tiles for an image of 4000000000x4000000000 pixels "
                                             r"needs about .*is the size the file states right"):
        plan_tiles(compile_model(SPECS / "lenet.yaml"), (4_000_000_000, 4_000_000_000), 1024)
    assert time.perf_counter() - start < 5


def test_a_map_the_file_system_cannot_make_names_the_map(tmp_path, monkeypatch):
    """open_memmap's OSError past the file system's largest file (EINVAL from its seek)
    or under `ulimit -v` (ENOMEM) said only "Invalid argument"."""
    import errno

    def refuse(*args, **kwargs):
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    monkeypatch.setattr(np.lib.format, "open_memmap", refuse)
    with pytest.raises(GraphconvError, match=r"map\.npy: cannot make the .* map memory-mapped: Invalid argument"):
        with MapFile(str(tmp_path / "map.npy"), (1, 2, 5, 5), np.float32, (2, 2)):
            pytest.fail("no tile may be written")
    assert list(tmp_path.iterdir()) == []


# ---- a local Dask cluster as the CLI runs one (graphconv.cluster.client_for) -----------------------

def test_more_local_workers_than_memory_holds_are_refused_before_any_starts():
    """--workers 100000 on 2 cores grew to 3.8 GB spawning processes, and hung on SIGTERM."""
    pytest.importorskip("distributed")
    from graphconv.cluster import client_for

    with pytest.raises(GraphconvError, match=r"--workers 100000 \(a process each.*needs about .*give fewer"):
        with client_for(100000, None):
            pytest.fail("no cluster may start")


def test_a_local_cluster_stopped_mid_run_closes_without_a_word(monkeypatch, caplog):
    """Ctrl-C in a --workers run: the scheduler, closing with tasks in flight, logged
    "Closed comm ... while trying to write" at CRITICAL with tracebacks (3 stops in 8)
    before the command's one line. Its close says nothing now after a stop, and logging
    is on again afterwards: a close after a finished run still says what it says."""
    import logging

    distributed = pytest.importorskip("distributed")
    from graphconv.cluster import client_for

    close = distributed.LocalCluster.close

    def loud_close(self, *args, **kwargs):
        logging.getLogger("distributed.scheduler").critical("Closed comm <BatchedSend: closed> while trying to write")
        return close(self, *args, **kwargs)

    monkeypatch.setattr(distributed.LocalCluster, "close", loud_close)
    with pytest.raises(KeyboardInterrupt):
        with client_for(1, None):
            raise KeyboardInterrupt
    assert "Closed comm" not in caplog.text
    assert logging.root.manager.disable == logging.NOTSET
    with client_for(1, None):
        pass
    assert "Closed comm" in caplog.text


def _graphconv_cli(*args, env=None, **popen):
    import subprocess
    import sys
    return subprocess.Popen([sys.executable, "-m", "graphconv", *map(str, args)], env=env, text=True, **popen)


def _ignores_sigint(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as fp:
        mask = next(int(line.split()[1], 16) for line in fp if line.startswith("SigIgn:"))
    return bool(mask & (1 << (2 - 1)))  # SIGINT is 2


def _children(pid: int) -> list[int]:
    import glob
    found = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        with open(path) as fp:
            found += [int(p) for p in fp.read().split()]
    return found


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="reads /proc (Linux)")
def test_ctrl_c_with_workers_is_one_line_and_leaves_no_scratch_space(tmp_path):
    """Ctrl-C at a terminal reaches the whole process group: the command said its one
    line, then each Dask worker printed some 30 lines of KeyboardInterrupt and
    CancelledError tracebacks. And every --workers run left dask-scratch-space in the
    system's temporary folder."""
    import signal
    import subprocess
    import time

    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("distributed")
    from conftest import SPECS

    model = tmp_path / "lenet-fcn"
    compiled = subprocess.run([__import__("sys").executable, "-m", "graphconv", "compile", SPECS / "lenet.yaml",
                               "-o", model], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr
    pixels = np.random.default_rng(0).integers(0, 256, (6000, 6000), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "big.tif", pixels, tile=(256, 256))
    tifffile.imwrite(tmp_path / "small.tif", pixels[:200, :300], tile=(64, 64))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}

    done = _graphconv_cli("run", model, "--image", tmp_path / "small.tif", "--tile", "100", "--workers", "1",
                          "--output", tmp_path / "small.npy", env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert (tmp_path / "small.npy").exists() and os.listdir(scratch) == []  # no dask-scratch-space

    run = _graphconv_cli("run", model, "--image", tmp_path / "big.tif", "--tile", "300", "--workers", "2",
                         "--output", tmp_path / "big.tif.npy", env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    # the cluster is up once its two workers are there and the command heeds Ctrl-C again
    while run.poll() is None and not (len(_children(run.pid)) >= 2 and not _ignores_sigint(run.pid)):
        assert time.monotonic() < deadline, "the cluster did not start"
        time.sleep(0.05)
    assert run.poll() is None, "the run ended before it could be interrupted: make the image larger"
    time.sleep(1.0)  # tiles under way
    os.killpg(run.pid, signal.SIGINT)  # as a terminal's Ctrl-C: every process of the group
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert err.strip().splitlines()[-1] == "graphconv: interrupted (what it was writing is removed)", err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "CancelledError" not in err, err
    assert not (tmp_path / "big.tif.npy").exists()
    assert os.listdir(scratch) == []


@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_a_resumable_map_file_keeps_its_tiles_and_its_log_trusts_only_whole_lines(compiled, tmp_path, suffix):
    """MapFile(resume=job): the map in <output>.partial, kept on failure; the tiles
    recorded are `done` on reopening (a line cut short by a kill counts for nothing);
    run_tiled leaves those alone; another job is refused; complete, it is renamed into
    place and the folder removed."""
    if suffix == ".zarr":
        pytest.importorskip("zarr")
    model = compiled("padded")
    x = np.random.default_rng(4).standard_normal((1, 3, 150, 130)).astype(np.float32)
    plan = plan_tiles(model, (150, 130), 60)
    whole = run_tiled(model, x, 60)
    path = str(tmp_path / f"map{suffix}")
    job = {"model": "unpadded", "tile": (24, 24)}

    def open_map(job=job):
        return MapFile(path, whole.shape, np.float32, plan.cells_hw, resume=job, tiles=plan.tiles)

    with pytest.raises(KeyboardInterrupt):
        with open_map() as out:
            assert out is not None
            out[:, :, :3, :] = -1.0  # written, never recorded: computed again
            raise KeyboardInterrupt
    partial = tmp_path / f"map{suffix}.partial"
    assert partial.is_dir() and not (tmp_path / f"map{suffix}").exists()

    first = open_map()
    with pytest.raises(KeyboardInterrupt):
        with first as out:
            assert first.done == frozenset()
            run_tiled(model, x, 60, out=out, progress=first.record, done=set(plan.tiles[:0]))
            raise KeyboardInterrupt
    log = partial / "tiles-done.txt"
    lines = log.read_text().splitlines()
    assert len(lines) == len(plan.tiles)
    log.write_text("\n".join(lines[:4]) + "\n" + lines[4][:-1])  # a kill while the fifth line was written
    with pytest.raises(GraphconvError, match=r"another run \(tile 24,24 there, 20,20 here\).*rm -r"):
        with open_map({**job, "tile": (20, 20)}):
            pass
    again = open_map()
    computed = []
    with again as out:
        assert again.done == frozenset(plan.tiles[:4])
        run_tiled(model, x, 60, out=out, progress=lambda t: (computed.append(t), again.record(t)), done=again.done)
    assert computed == list(plan.tiles[4:])
    assert not partial.exists()
    got = np.load(path) if suffix == ".npy" else __import__("zarr").open_array(path, mode="r")[:]
    np.testing.assert_array_equal(got, whole)


def test_a_resumable_map_that_fails_before_its_first_tile_leaves_no_partial_folder(compiled, tmp_path):
    """An error before any tile (a scheduler not reached) left an empty <output>.partial;
    one with a tile in, or an earlier run's, or a stopped run's (Ctrl-C) is kept."""
    model = compiled("padded")
    x = np.random.default_rng(4).standard_normal((1, 3, 150, 130)).astype(np.float32)
    plan = plan_tiles(model, (150, 130), 60)
    path, partial = str(tmp_path / "map.npy"), tmp_path / "map.npy.partial"

    def open_map():
        return MapFile(path, (1, model.output_channels, *plan.map_hw), np.float32, plan.cells_hw,
                       resume={"model": "padded"}, tiles=plan.tiles)

    with pytest.raises(GraphconvError, match="unreachable"):
        with open_map():
            raise GraphconvError("unreachable")
    assert os.listdir(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        with open_map():
            raise KeyboardInterrupt
    assert partial.is_dir()
    with pytest.raises(GraphconvError, match="unreachable"):
        with open_map():  # an earlier run's, still without a tile
            raise GraphconvError("unreachable")
    assert partial.is_dir()
    shutil.rmtree(partial)
    first = open_map()
    with pytest.raises(GraphconvError, match="a tile's reader failed"):
        with first as out:
            run_tiled(model, x, 60, out=out, progress=first.record)
            raise GraphconvError("a tile's reader failed")
    assert len((partial / "tiles-done.txt").read_text().splitlines()) == len(plan.tiles)


def test_a_partial_map_of_another_model_is_said_so_once_and_its_removal_quoted(tmp_path):
    """Resuming another model's partial listed every file of both models as 'changed', and
    the `rm -r` it suggested for a path with a space would delete other things."""
    from graphconv.tiling import PartialMap, job_differences

    held = {"model": "/m/a", "model files": {"/m/a/model.yaml": [1, 2]}, "tile": [24, 24]}
    other = {"model": "/m/b", "model files": {"/m/b/model.yaml": [1, 2]}, "tile": [24, 24]}
    assert job_differences(held, other) == ["model /m/a there, /m/b here"]
    touched = {**held, "model files": {"/m/a/model.yaml": [1, 3]}}
    assert job_differences(held, touched) == ["model files changed since: model.yaml"]
    folder = tmp_path / "my maps"
    folder.mkdir()
    partial = PartialMap(str(folder / "map.zarr"))
    partial.make_or_check(held, lambda path: np.lib.format.open_memmap(path, "w+", np.float32, (1, 1, 2, 2)))
    with pytest.raises(GraphconvError, match=r"delete it to start over \(rm -r '.*my maps/map\.zarr\.partial'\)"):
        partial.check(other)
