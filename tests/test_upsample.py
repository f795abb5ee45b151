"""Networks that upsample (graphconv/ops/upsample): they slide, tile and verify exactly.

The kernels are checked against the reference and PyTorch by the registry tests
(test_ops.py, test_torch_bridge.py, test_cuda.py); here the network-level promises:
the dense map equals the crop loop, tiles equal the whole map, every cell's receptive
field holds every pixel it depends on, and what cannot work says why."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphconv
from graphconv.dense import crop_loop, padding_reach, verify
from graphconv.errors import GraphconvError
from graphconv.ops import get_op
from graphconv.receptive import receptive_fields, total_stride
from graphconv.shapes import FittingSizes, fitting_sizes
from graphconv.tiling import min_tile, run_tiled
from conftest import SPECS, random_input
from test_ops import STORAGE_CHOICES, check_op

# unpadded, nearest only: every cell of the dense map equals the classifier on its crop
NEAREST = """
name: nearest
input: {shape: [2, 20, 20]}
layers:
  - {name: stem, op: conv, out_channels: 4, kernel_size: 2, stride: 2}
  - {name: low, op: conv, out_channels: 4, kernel_size: 2, stride: 2}
  - {name: up, op: upsample, factor: 2}
  - {name: sum, op: add, inputs: [stem, up]}
  - {name: pool, op: maxpool, kernel_size: 2}
  - {name: fc, op: fc, out_features: 3}
"""

# HRNet's shape with padded convs: a stride-8 branch enlarged 4x (nearest) and a stride-4
# branch enlarged 2x (bilinear) added to a stride-2 one
BRANCHES = """
name: branches
input: {shape: [3, 32, 32]}
layers:
  - {name: stem, op: conv, out_channels: 4, kernel_size: 3, stride: 2, padding: 1}
  - {name: mid, op: conv, out_channels: 6, kernel_size: 3, stride: 2, padding: 1}
  - {name: low, op: conv, out_channels: 4, kernel_size: 3, stride: 2, padding: 1}
  - {name: low_up, op: upsample, factor: 4}
  - {name: mid_proj, op: conv, out_channels: 4, kernel_size: 1, inputs: [mid]}
  - {name: mid_up, op: upsample, factor: 2, mode: bilinear}
  - {name: fused, op: add, inputs: [stem, low_up, mid_up]}
  - {name: act, op: relu}
  - {name: head, op: conv, out_channels: 5, kernel_size: 3, stride: 2, padding: 1}
  - {name: gap, op: globalavgpool}
  - {name: fc, op: fc, out_features: 3}
"""


def models(write_spec, text):
    classifier = graphconv.load(write_spec(text))
    return classifier, graphconv.compile_model(classifier.graph)


@pytest.mark.parametrize("extra", [(0, 0), (4, 8), (12, 28)])
def test_an_unpadded_nearest_network_slides_exactly(write_spec, rng, extra):
    classifier, fcn = models(write_spec, NEAREST)
    image = random_input(rng, (2, 2, 20 + extra[0], 20 + extra[1]))
    dense = fcn.run(image)
    expected = crop_loop(classifier, image, total_stride(fcn.graph))
    assert dense.shape == expected.shape == (2, 3, extra[0] // 4 + 1, extra[1] // 4 + 1)
    np.testing.assert_allclose(dense, expected, rtol=1e-5, atol=1e-5)
    assert verify(classifier, fcn, image).exact_by_construction


def test_tiles_of_an_upsampling_network_equal_its_whole_map(write_spec, rng):
    _, fcn = models(write_spec, BRANCHES)
    image = random_input(rng, (1, 3, 96, 120))
    whole = fcn.run(image)
    tile = max(min_tile(fcn))
    tiled = run_tiled(fcn, image, tile)
    assert tiled.shape == whole.shape and tile < 120
    np.testing.assert_array_equal(tiled, whole)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bilinear, asymmetric: true"])
@pytest.mark.parametrize("factor", [2, 3])
def test_every_cell_field_holds_every_pixel_it_depends_on(write_spec, rng, mode, factor):
    """Change one pixel: exactly the cells whose receptive field holds it may change. A
    field that is too small (the floored window's lag forgotten) fails here."""
    spec = f"""
    name: field
    input: {{shape: [1, 24, 24]}}
    layers:
      - {{name: down, op: conv, out_channels: 2, kernel_size: 3, stride: 3}}
      - {{name: up, op: upsample, factor: {factor}, mode: {mode}}}
      - {{name: mix, op: conv, out_channels: 2, kernel_size: 2}}
    """
    model = graphconv.load(write_spec(spec))
    field = receptive_fields(model.graph)[model.graph.output.name]
    image = random_input(rng, (1, 1, 24, 24))
    base = model.run(image, full=True)
    for y, x in rng.integers(0, 24, size=(12, 2)):
        poked = image.copy()
        poked[0, 0, y, x] += 10.0
        changed = np.abs(model.run(poked, full=True) - base).max(axis=(0, 1)) > 0
        for i, j in zip(*np.nonzero(changed)):
            top, left, bottom, right = field.box(i, j)
            assert top <= y < bottom and left <= x < right, f"cell {(i, j)} changed, its field {field.box(i, j)}"


def test_bilinear_edges_are_reported_like_padding(write_spec, rng):
    classifier, fcn = models(write_spec, BRANCHES)
    reach, sources = padding_reach(classifier.graph)
    assert "mid_up" in sources and "low_up" not in sources  # nearest never reads outside its map
    rows, _ = reach["mid_up"]
    assert rows[0] and rows[-1]
    report = verify(classifier, fcn, random_input(rng, (1, 3, 64, 64)))
    assert report.conversion_exact and report.passed
    [line] = [layer for layer in report.layers if layer.name == "mid_up"]
    assert line.why == "interpolation at the edges" and "edge rows and columns" in line.fill


def test_dilation_is_refused_and_shift_and_stitch_works(write_spec, rng):
    path = write_spec(NEAREST)
    with pytest.raises(GraphconvError, match="layer 'up'.*makes its map finer.*--stride-method shift"):
        graphconv.compile_model(path, output_stride=2, stride_method="dilate")
    classifier = graphconv.load(path)
    fine = graphconv.compile_model(path, output_stride=2)  # auto: shift, the only method
    assert fine.graph.find("interleave")
    image = random_input(rng, (1, 2, 28, 32))
    np.testing.assert_allclose(fine.run(image), crop_loop(classifier, image, (2, 2)), rtol=1e-5, atol=1e-5)


def test_an_image_the_branches_do_not_meet_on_runs_from_the_part_they_meet_on(write_spec, rng):
    """Three stride-2 convs padded by 1 make ceil(side / 8) cells: the branches meet on
    sides of 8k and of 8k+7 alone (found, not assumed: a multiple of 8 was once the rule).
    A 70x75 image maps from its top-left 64x72, which holds every crop of its grid."""
    _, fcn = models(write_spec, BRANCHES)
    assert fitting_sizes(fcn.graph) == FittingSizes((8, 8), (frozenset({0, 7}), frozenset({0, 7})))
    odd = random_input(rng, (1, 3, 70, 75))
    assert fcn.trimmed_hw(70, 75) == (64, 72)
    np.testing.assert_array_equal(fcn.run(odd), fcn.run(odd[:, :, :64, :72]))
    np.testing.assert_array_equal(fcn.run_tiled(odd, 58), fcn.run(odd))
    image = random_input(rng, (1, 3, 71, 79))
    whole = fcn.run(image)
    for tile in (58, 63, 70):  # boxes grown to 8k or 8k+7 sides, or cut at the image's end
        np.testing.assert_array_equal(fcn.run_tiled(image, tile), whole)
    assert fitting_sizes(graphconv.load_spec(SPECS / "lenet.yaml")) is None


@settings(max_examples=60, deadline=None)
@given(fy=st.integers(1, 4), fx=st.integers(1, 4),
       mode=st.sampled_from(["nearest", "bilinear", "align_corners", "asymmetric"]),
       c=st.integers(1, 9), h=st.integers(1, 6), w=st.integers(1, 6), batch=st.integers(1, 3),
       storage=st.sampled_from(STORAGE_CHOICES))
def test_upsample_kernel_hypothesis(fy, fx, mode, c, h, w, batch, storage):
    """Every factor pair, one-pixel maps, channel counts that are and are not a vector's,
    with the input and output stored each way (a channels-last map into an NCHW output:
    an FCN head's last resize, stored down the planes a cache line of columns at a time)."""
    params = dict(factor=[fy, fx], mode="bilinear", **{mode: True}) if mode in ("align_corners", "asymmetric") \
        else dict(factor=[fy, fx], mode=mode)
    check_op("upsample", params, [(c, h, w)], np.random.default_rng(h * 7 + w), batch=batch, storage=storage)


# PyTorch's F.interpolate(..., mode="bilinear", align_corners=True), as older segmentation
# code (PSPNet, DeepLabV3+ ports) writes it
CORNERS = """
name: corners
task: segmentation
input: {shape: [2, 12, 12]}
layers:
  - {name: stem, op: conv, out_channels: 4, kernel_size: 3, stride: 2, padding: 1}
  - {name: up, op: upsample, factor: 2, mode: bilinear, align_corners: true}
  - {name: classes, op: conv, out_channels: 3, kernel_size: 1}
"""


def test_align_corners_runs_as_written_and_is_refused_where_it_would_slide_or_tile(write_spec, rng):
    """Its samples move with the map's size: a segmentation network runs on the whole
    image (as PyTorch does), a classifier on its crop or crop by crop; tiles and compiling
    to slide are refused, naming the layer and why."""
    from graphconv.torch_bridge import torch, torch_forward

    model = graphconv.load(write_spec(CORNERS))
    image = random_input(rng, (1, 2, 30, 22))
    whole = model.run(image)
    if torch is not None:
        np.testing.assert_allclose(whole, torch_forward(model.graph, image), rtol=1e-5, atol=1e-5)
    with pytest.raises(GraphconvError, match="layer 'up': upsample interpolates with align_corners.*every one of "
                                             "them moves, so this segmentation network needs the whole image"):
        run_tiled(model, image, 16)
    classifier_spec = CORNERS.replace("task: segmentation\n", "") + "  - {name: fc, op: fc, out_features: 2}\n"
    classifier = graphconv.load(write_spec(classifier_spec, "classifier.yaml"))
    with pytest.raises(GraphconvError, match="layer 'up': upsample interpolates with align_corners.*cannot be "
                                             "compiled to slide; `graphconv run MODEL --image IMAGE --crops`"):
        graphconv.compile_model(classifier.graph)
    scores = crop_loop(classifier, image, 2)  # what run --crops writes
    np.testing.assert_allclose(scores[:, :, 1, 2], classifier.run(image[:, :, 2:14, 4:16]), rtol=1e-5, atol=1e-6)
    with pytest.raises(GraphconvError, match="align_corners applies to bilinear interpolation, not nearest"):
        graphconv.load(write_spec(CORNERS.replace("mode: bilinear, ", ""), "nearest.yaml"))


@pytest.mark.parametrize("asymmetric", [False, True])
@pytest.mark.parametrize("factor", [2, 3, 4, 5])
@pytest.mark.parametrize("size", [3, 6])
def test_the_positions_said_to_read_a_bilinear_upsample_s_edges_are_those_that_differ(write_spec, rng, factor,
                                                                                     size, asymmetric):
    """Of a 2x upsample's 12x12 map per 6x6 crop, verify said 80 positions (2 rows a side)
    read the clamped edges; 44 do (1 a side): exactly those whose value differs between
    the crop interpolated alone and inside a larger map. An asymmetric one's are its last
    factor - 1 rows and columns alone."""
    graph = graphconv.load(write_spec(f"input: {{shape: [1, {size}, {size}]}}\nlayers:\n"
                                      f"  - {{name: up, op: upsample, factor: {factor}, mode: bilinear, "
                                      f"asymmetric: {str(asymmetric).lower()}}}\n")).graph
    rows, cols = padding_reach(graph)[0]["up"]
    params = dict(graph.node("up").params)
    big = rng.standard_normal((1, 1, size + 4, size + 4)).astype(np.float32)
    reference = get_op("upsample").reference
    inside = reference(params, {}, [big])[0, 0, 2 * factor:(size + 2) * factor, 2 * factor:(size + 2) * factor]
    alone = reference(params, {}, [big[:, :, 2:size + 2, 2:size + 2]])[0, 0]
    differs = np.abs(inside - alone) > 1e-6
    np.testing.assert_array_equal(differs, rows[:, None] | cols[None, :])


# TF1's resize_bilinear (ONNX asymmetric coordinates) in a network that slides: its
# taps are floor(p / 2) and the next, so only the bottom and right edges are clamped
ASYMMETRIC = BRANCHES.replace("{name: mid_up, op: upsample, factor: 2, mode: bilinear}",
                              "{name: mid_up, op: upsample, factor: 2, mode: bilinear, asymmetric: true}")


def test_an_asymmetric_bilinear_network_tiles_and_verifies(write_spec, rng):
    """Its clamped far edges are reported like padding (which positions: the test above)."""
    classifier, fcn = models(write_spec, ASYMMETRIC)
    assert "mid_up" in padding_reach(classifier.graph)[1]
    image = random_input(rng, (1, 3, 96, 120))
    whole = fcn.run(image)
    np.testing.assert_array_equal(run_tiled(fcn, image, max(min_tile(fcn))), whole)
    report = verify(classifier, fcn, random_input(rng, (1, 3, 64, 64)))
    assert report.conversion_exact and report.passed
    [line] = [layer for layer in report.layers if layer.name == "mid_up"]
    assert line.why == "interpolation at the edges"


def test_asymmetric_is_for_bilinear_alone_and_not_with_align_corners(write_spec):
    up = "  - {name: up, op: upsample, factor: 2, %s}\n"
    with pytest.raises(GraphconvError, match="layer 'up'.*asymmetric applies to bilinear interpolation, not nearest"):
        graphconv.load(write_spec("input: {shape: [1, 4, 4]}\nlayers:\n" + up % "asymmetric: true"))
    with pytest.raises(GraphconvError, match="layer 'up'.*align_corners and asymmetric are two ways to place the "
                                             "samples: give one"):
        graphconv.load(write_spec("input: {shape: [1, 4, 4]}\nlayers:\n"
                                  + up % "mode: bilinear, asymmetric: true, align_corners: true", "both.yaml"))
