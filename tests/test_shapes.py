"""graphconv/shapes.py's `fitting_sizes`: the input sides a network's branches meet on.

A merge meets only where its branches' floor divisions come out equal, which can depend
on the side modulo the strides: the rule must match shape inference on every side (not
just one period of them), and tiles must keep to it wherever they cut the image."""
import numpy as np
import pytest

import graphconv
from graphconv.errors import GraphconvError
from graphconv.shapes import FittingSizes, fitting_sizes, infer_shapes
from graphconv.tiling import min_tile
from conftest import SPECS, random_input
from nets import UNPADDED_BEFORE_UPSAMPLE

# no upsample at all: a stride-2 conv of kernel 2 makes floor(side / 2) cells, one of
# kernel 3 padded by 1 ceil(side / 2): they meet on even sides
STRIDED_BRANCHES = """
name: strided
input: {shape: [1, 16, 16]}
layers:
  - {name: a, op: conv, out_channels: 2, kernel_size: 2, stride: 2}
  - {name: b, op: conv, out_channels: 2, kernel_size: 3, stride: 2, padding: 1, inputs: [data]}
  - {name: cat, op: concat, inputs: [a, b]}
  - {name: head, op: conv, out_channels: 3, kernel_size: 1}
"""

# stride 3 after a x4 upsample of a stride-2 map: the layers' stride is 3/2, whose lattice
# repeats every 3 pixels; enlarged x3 and strided 2 again it makes a map of stride 1. No
# layer has a whole stride of 3, so the tiles' alignment must take it from the 3/2
THREE_HALVES = """
name: three_halves
input: {shape: [1, 24, 24]}
layers:
  - {name: c1, op: conv, out_channels: 2, kernel_size: 2, stride: 2}
  - {name: up, op: upsample, factor: 4}
  - {name: c2, op: conv, out_channels: 2, kernel_size: 3, stride: 3}
  - {name: skip, op: conv, out_channels: 2, kernel_size: 2, stride: 2, inputs: [data]}
  - {name: skip_up, op: upsample, factor: 4}
  - {name: skip_s, op: conv, out_channels: 2, kernel_size: 2, stride: 3}
  - {name: sum, op: add, inputs: [c2, skip_s]}
  - {name: fine, op: upsample, factor: 3}
  - {name: head, op: conv, out_channels: 3, kernel_size: 2, stride: 2}
"""


def compiled_classifier(write_spec, text):
    """The network with an fc over its crop's map, compiled to slide."""
    return graphconv.compile_model(write_spec(text + "  - {name: fc, op: fc, out_features: 3}\n"))


def meets(graph, h, w) -> bool:
    try:
        infer_shapes(graph, (h, w), check_weights=False)
    except GraphconvError:
        return False
    return True


@pytest.mark.parametrize("text, expected", [
    (UNPADDED_BEFORE_UPSAMPLE, FittingSizes((2, 2), (frozenset({1}), frozenset({1})))),
    (STRIDED_BRANCHES, FittingSizes((2, 2), (frozenset({0}), frozenset({0})))),
    (THREE_HALVES, FittingSizes((6, 6), (frozenset({0, 1, 2, 3}), frozenset({0, 1, 2, 3})))),
])
def test_the_sides_that_fit_are_those_shape_inference_takes_on_every_side(write_spec, text, expected):
    """Over four periods past the crop on each axis: what `fits` says is what shape
    inference does (the rule repeats, so trying one period is enough)."""
    model = graphconv.load(write_spec(text))
    compiled = graphconv.compile_model(model.graph)
    sizes = fitting_sizes(compiled.graph)
    assert sizes == expected
    _, hc, wc = compiled.graph.input_shape
    for extra in range(4 * sizes.period[0]):
        assert sizes.fits(hc + extra, 0) == meets(compiled.graph, hc + extra, wc), hc + extra
        assert sizes.fits(wc + extra, 1) == meets(compiled.graph, hc, wc + extra), wc + extra


def test_an_unpadded_layer_before_an_upsample_tiles_every_image_exactly(write_spec, rng):
    """Tiles of any size on images of any fitting side equal the whole map, which equals
    the classifier on every crop (the network is unpadded)."""
    from graphconv.dense import crop_loop

    classifier = graphconv.load(write_spec(UNPADDED_BEFORE_UPSAMPLE))
    fcn = graphconv.compile_model(classifier.graph)
    for side in (41, 47):
        image = random_input(rng, (1, 2, side, side + 2))
        whole = fcn.run(image)
        np.testing.assert_allclose(whole, crop_loop(classifier, image, (2, 2)), rtol=1e-5, atol=1e-5)
        for tile in (26, 27, 30, 33):
            np.testing.assert_array_equal(fcn.run_tiled(image, tile), whole)


def test_branches_that_meet_on_some_sides_tile_exactly(write_spec, rng):
    model = compiled_classifier(write_spec, STRIDED_BRANCHES)
    image = random_input(rng, (1, 1, 50, 62))
    whole = model.run(image)
    smallest = max(min_tile(model))
    for tile in (smallest, smallest + 3, smallest + 7):
        np.testing.assert_array_equal(model.run_tiled(image, tile), whole)


def test_tiles_start_on_the_lattice_of_a_fractional_stride(write_spec, rng):
    """A segmentation network whose layers of stride 3/2 repeat every 3 pixels: tiles
    aligned to 2 alone (the whole strides) cut boxes its branches do not meet on."""
    model = graphconv.load(write_spec(THREE_HALVES.replace("layers:", "task: segmentation\nlayers:", 1)))
    image = random_input(rng, (1, 1, 54, 66))
    whole = model.run(image)
    for tile in range(max(min_tile(model)), 40, 5):
        np.testing.assert_array_equal(model.run_tiled(image, tile), whole)


@pytest.mark.parametrize("size", [(60, 61), (62, 64), (59, 66)])
def test_a_classifier_maps_an_image_its_branches_do_not_meet_on_from_its_top_left_part(write_spec, rng, size):
    """The branches meet on sides 2k+1 only; the last row or column of an even side lies
    in no crop, so the classifier runs the top-left part they meet on: the same crop
    grid, each cell the classifier on its crop (the network is unpadded), whole or tiled.
    It was refused, though the rows it refused for fed no cell."""
    from graphconv.dense import crop_loop

    classifier = graphconv.load(write_spec(UNPADDED_BEFORE_UPSAMPLE))
    model = graphconv.compile_model(classifier.graph)
    image = random_input(rng, (1, 2, *size))
    part = tuple(side - 1 + side % 2 for side in size)
    assert model.trimmed_hw(*size) == part and model.output_hw(*size) == model.map_size(*size)
    whole = model.run(image)
    assert whole.shape[2:] == model.map_size(*size)
    np.testing.assert_array_equal(whole, model.run(image[:, :, :part[0], :part[1]]))
    np.testing.assert_allclose(whole, crop_loop(classifier, image, (2, 2)), rtol=1e-5, atol=1e-5)
    for tile in (26, 33):
        np.testing.assert_array_equal(model.run_tiled(image, tile), whole)


def test_a_padded_classifier_runs_the_largest_part_its_branches_meet_on(write_spec, rng):
    model = compiled_classifier(write_spec, STRIDED_BRANCHES)
    image = random_input(rng, (1, 1, 51, 63))
    assert model.trimmed_hw(51, 63) == (50, 62) and model.trimmed_hw(50, 62) is None
    whole = model.run(image)
    np.testing.assert_array_equal(whole, model.run(image[:, :, :50, :62]))
    np.testing.assert_array_equal(model.run_tiled(image, max(min_tile(model)) + 1), whole)


def test_a_segmentation_network_on_a_side_that_does_not_fit_is_told_the_nearest_that_does(write_spec, rng):
    """A segmentation network's map is everything it computes, so no row is dropped for
    it: the error says which sides fit."""
    spec = UNPADDED_BEFORE_UPSAMPLE.replace("layers:", "task: segmentation\nlayers:", 1).replace(
        "  - {name: fc, op: fc, out_features: 3}\n", "")
    model = graphconv.load(write_spec(spec))
    assert model.trimmed_hw(60, 61) is None
    with pytest.raises(GraphconvError, match=r"layer 'a4'.*meet only on images of height 2k\+1 and width 2k\+1 "
                                             r"pixels \(k whole\): crop the image to one \(e.g. its top-left "
                                             r"59x61\) or resize it \(an --image: --resize 59 61\)"):
        model.run(random_input(rng, (1, 2, 60, 61)))


def test_branches_of_different_strides_have_no_rule_and_no_hint(write_spec, rng):
    """A pooled branch enlarged by the crop's factor meets the map on the crop alone: the
    period of strides says nothing there ('any even side', then '--resize 32 48' to an
    image of 32x48), so there is no rule, and the error gives no sizes."""
    seg = graphconv.load(write_spec("name: pooled\ntask: segmentation\ninput: {shape: [1, 16, 16]}\nlayers:\n"
                                    "  - {name: c, op: conv, out_channels: 2, kernel_size: 2, stride: 2}\n"
                                    "  - {name: g, op: globalavgpool}\n  - {name: up, op: upsample, factor: 8}\n"
                                    "  - {name: cat, op: concat, inputs: [c, up]}\n"))
    assert fitting_sizes(seg.graph) is None
    with pytest.raises(GraphconvError) as err:
        infer_shapes(seg.graph, (32, 48))
    assert "layer 'cat'" in str(err.value) and "--resize" not in str(err.value)


def test_networks_whose_branches_meet_on_every_side_have_no_rule():
    for name in ("alexnet", "tinydag", "lenet"):
        assert fitting_sizes(graphconv.load_spec(SPECS / f"{name}.yaml")) is None


def test_describes_each_axis_and_finds_the_nearest_fits():
    sizes = FittingSizes((8, 4), (frozenset({0, 7}), frozenset({1})))
    assert sizes.describe() == "of height 8k or 8k+7 and width 4k+1 pixels (k whole)"
    assert FittingSizes((6, 6), (frozenset({0, 1, 2, 3}), frozenset({1, 2, 4}))).describe() == \
        "of height 6k to 6k+3 and width 6k+1 to 6k+2 or 6k+4 pixels (k whole)"
    assert [sizes.next_fit(v, 0) for v in (1, 8, 9, 15)] == [7, 8, 15, 15]
    assert [sizes.last_fit(v, 1) for v in (5, 6, 8, 9)] == [5, 5, 5, 9]
    assert (sizes.slack(0), sizes.slack(1)) == (6, 3)
