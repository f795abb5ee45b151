"""keep-crop-cells: a classifier that makes its map finer after a strided layer slides
exactly only on the coarser lattice; compiled, its map holds those cells alone, each the
classifier on its crop (it held cells between, silently wrong, at the finer stride)."""
import numpy as np
import pytest

import graphconv
from graphconv.dense import crop_loop, verify
from graphconv.receptive import first_output_cell, receptive_fields, sliding_periods, total_stride
from conftest import random_input

# conv of stride 2, then a nearest upsample: the map is at stride 1, its lattice at 2
NEAREST_AFTER_STRIDE = """
name: finer
input: {shape: [3, 20, 24]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 3}
  - {name: c2, op: conv, out_channels: 4, kernel_size: 3, stride: 2}
  - {name: up, op: upsample, factor: 2}
  - {name: c3, op: conv, out_channels: 4, kernel_size: 3}
  - {name: fc, op: fc, out_features: 3}
"""

# the same made finer by a pixel shuffle (a ConvTranspose imports as a conv and this)
PIXEL_SHUFFLE_AFTER_STRIDE = """
name: shuffle
input: {shape: [3, 20, 24]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 3}
  - {name: c2, op: conv, out_channels: 16, kernel_size: 3, stride: 2}
  - {name: up, op: depth_to_space, block: 2}
  - {name: c3, op: conv, out_channels: 4, kernel_size: 3}
  - {name: fc, op: fc, out_features: 3}
"""

# HRNet's fusion, unpadded: a stride-4 branch enlarged 2x added to a stride-2 one
FUSED_BRANCHES = """
name: fused
input: {shape: [2, 32, 32]}
layers:
  - {name: fine, op: conv, out_channels: 4, kernel_size: 2, stride: 2}
  - {name: coarse, op: conv, out_channels: 4, kernel_size: 2, stride: 2}
  - {name: coarse_up, op: upsample, factor: 2}
  - {name: fine_cut, op: conv, out_channels: 4, kernel_size: 1, inputs: [fine]}
  - {name: sum, op: add, inputs: [fine_cut, coarse_up]}
  - {name: head, op: conv, out_channels: 4, kernel_size: 3}
  - {name: fc, op: fc, out_features: 3}
"""


@pytest.mark.parametrize("spec,stride,extra", [
    (spec, stride, extra) for spec, stride, extras in [(NEAREST_AFTER_STRIDE, 2, [(0, 0), (5, 2), (12, 9)]),
                                                       (PIXEL_SHUFFLE_AFTER_STRIDE, 2, [(1, 6), (11, 4)]),
                                                       (FUSED_BRANCHES, 4, [(0, 0), (4, 8), (12, 20)])]
    for extra in extras])  # the fused branches meet on sides of multiples of 4 alone
def test_every_cell_of_a_network_made_finer_is_the_classifier_on_its_crop(write_spec, rng, spec, stride, extra):
    classifier = graphconv.load(write_spec(spec))
    fcn = graphconv.compile_model(classifier.graph)
    c, h, w = classifier.crop_shape
    image = random_input(rng, (2, c, h + extra[0], w + extra[1]))
    assert total_stride(fcn.graph) == (stride, stride)
    dense = fcn.run(image)
    assert dense.shape[2:] == (extra[0] // stride + 1, extra[1] // stride + 1)
    np.testing.assert_allclose(dense, crop_loop(classifier, image, stride), rtol=1e-5, atol=1e-5)
    assert verify(classifier, fcn, image).exact_by_construction


def test_without_the_pass_the_cells_between_are_no_crop_s(write_spec, rng):
    """What the pass is for: the map at the finer stride is wrong off the lattice."""
    from graphconv.pass_manager import DEFAULT_PIPELINE
    classifier = graphconv.load(write_spec(NEAREST_AFTER_STRIDE))
    image = random_input(rng, (1, 3, 26, 30))
    pipeline = ",".join(name for name in DEFAULT_PIPELINE if name != "keep-crop-cells")
    fine = graphconv.compile_model(classifier.graph, passes=pipeline).executor("cpu").run(image)
    crops = crop_loop(classifier, image, 1)
    np.testing.assert_allclose(fine[:, :, ::2, ::2], crops[:, :, ::2, ::2], rtol=1e-5, atol=1e-5)
    assert not np.allclose(fine[:, :, 1::2], crops[:, :, 1::2], atol=1e-3)


def test_shift_and_stitch_gives_the_finer_stride_exactly(write_spec, rng):
    classifier = graphconv.load(write_spec(NEAREST_AFTER_STRIDE))
    fcn = graphconv.compile_model(classifier.graph, output_stride=1, stride_method="shift")
    image = random_input(rng, (1, 3, 27, 30))
    np.testing.assert_allclose(fcn.run(image), crop_loop(classifier, image, 1), rtol=1e-5, atol=1e-5)


def test_a_folder_compiled_to_a_finer_stride_verifies_and_compiles_again_to_itself(write_spec, rng, tmp_path,
                                                                                    capsys):
    """verify of such a folder compiles it again: global-pool-to-window took the appended
    1x1 subsample, one window over the 1x1 map at the crop, for a global pool and gave it
    stride 1, and verify stopped on a broken-IR error."""
    from graphconv.cli import main

    assert main(["compile", str(write_spec(NEAREST_AFTER_STRIDE)), "-o", str(tmp_path / "m"),
                 "--output-stride", "1", "--stride-method", "shift"]) == 0
    assert main(["verify", str(tmp_path / "m"), "--input-size", "27", "30"]) == 0
    assert "PASS" in capsys.readouterr().out
    compiled = graphconv.load(tmp_path / "m")
    again = graphconv.compile_model(compiled.graph)
    image = random_input(rng, (1, 3, 27, 30))
    np.testing.assert_array_equal(again.run(image), compiled.run(image))


def test_the_lattice_and_the_first_cell_are_worked_out_exactly(write_spec):
    classifier = graphconv.load(write_spec(NEAREST_AFTER_STRIDE))
    periods = sliding_periods(classifier.graph)
    fields = receptive_fields(classifier.graph)
    assert (periods["c2"], periods["up"], periods["c3"]) == ((2, 2), (2, 2), (2, 2))
    assert (fields["up"].stride, fields["c3"].stride) == ((1, 1), (1, 1))
    # every cell's box (a Field) reaches a pixel further back than cell 0's: odd cells repeat a value
    assert fields["fc"].offset == (-1, -1)
    cell = first_output_cell(classifier.graph)
    assert (cell.box, cell.stride, cell.period) == ((0, 0, 19, 23), (1, 1), (2, 2))  # c2 leaves row 19 out
    compiled = first_output_cell(graphconv.compile_model(classifier.graph).graph)
    assert (compiled.box, compiled.stride, compiled.period) == ((0, 0, 19, 23), (2, 2), (2, 2))


def test_networks_on_their_lattice_and_segmentation_are_left_alone(write_spec):
    lenet = graphconv.compile_model(graphconv.load(write_spec(NEAREST_AFTER_STRIDE.replace(
        "op: upsample, factor: 2", "op: maxpool, kernel_size: 1"))).graph)
    assert not any(node.name.endswith("_crop_cells") for node in lenet.graph.layers())
    seg = graphconv.load(write_spec("name: seg\ntask: segmentation\ninput: {shape: [2, 8, 8]}\nlayers:\n"
                                    "  - {name: down, op: conv, out_channels: 4, kernel_size: 2, stride: 2}\n"
                                    "  - {name: up, op: upsample, factor: 2}\n"))
    compiled = graphconv.compile_model(seg.graph)
    assert [node.op for node in compiled.graph.layers()] == ["conv", "upsample"]


def test_verify_compares_a_finer_layer_s_maps_on_crops_of_its_lattice(write_spec, rng):
    """A bilinear upsample pads (it repeats its map's edge), so cells differ where that
    reaches; verify compared its map on crops at every pixel, off the lattice, and called
    the positions clear of padding a bug."""
    classifier = graphconv.load(write_spec(NEAREST_AFTER_STRIDE.replace("factor: 2}", "factor: 2, mode: bilinear}")))
    fcn = graphconv.compile_model(classifier.graph)
    report = verify(classifier, fcn, random_input(rng, (1, 3, 26, 30)))
    [up] = report.layers
    assert up.name == "up" and up.clear_agrees and up.differing > 0
    assert report.passed


@pytest.mark.parametrize("spec", [NEAREST_AFTER_STRIDE, FUSED_BRANCHES])
def test_tiles_of_a_network_kept_to_its_crop_cells_equal_its_whole_map(write_spec, rng, spec):
    from graphconv.tiling import min_tile, run_tiled
    fcn = graphconv.compile_model(graphconv.load(write_spec(spec)).graph)
    c, h, w = fcn.crop_shape
    image = random_input(rng, (1, c, 4 * h, 3 * w))
    whole = fcn.run(image)
    tile = max(min_tile(fcn))
    np.testing.assert_allclose(run_tiled(fcn, image, tile), whole, rtol=1e-5, atol=1e-6)


def test_a_map_compiled_without_the_pass_says_which_cells_are_crops(write_spec, rng, tmp_path, capsys):
    from graphconv.cli import main
    from graphconv.pass_manager import DEFAULT_PIPELINE

    spec = write_spec(NEAREST_AFTER_STRIDE)
    np.save(tmp_path / "x.npy", random_input(rng, (1, 3, 26, 30)))
    pipeline = ",".join(name for name in DEFAULT_PIPELINE if name != "keep-crop-cells")
    for passes, said in ((pipeline, True), (None, False)):
        extra = ["--passes", passes] if passes else []
        assert main(["compile", str(spec), "-o", str(tmp_path / "m"), *extra]) == 0
        capsys.readouterr()
        assert main(["run", str(tmp_path / "m"), "--input", str(tmp_path / "x.npy")]) == 0
        note = ("note: finer makes its map finer than its strides let it slide (an upsample after a stride): only "
                "every 2x2-th cell is the classifier on its crop")
        assert (note in capsys.readouterr().err) == said


def test_python_is_warned_of_a_map_whose_cells_between_are_no_crops(write_spec, rng, tmp_path):
    """From Python the note is a GraphconvWarning at the caller's `run`, loaded from a
    folder compiled without the pass (as a model compiled before it was); none with it."""
    import warnings

    from graphconv.pass_manager import DEFAULT_PIPELINE

    spec = write_spec(NEAREST_AFTER_STRIDE)
    x = random_input(rng, (1, 3, 26, 30))
    pipeline = [name for name in DEFAULT_PIPELINE if name != "keep-crop-cells"]
    graphconv.compile_model(spec, pipeline).save(tmp_path / "old")
    model = graphconv.load(tmp_path / "old")
    for run in (model.run, lambda x: model.run_tiled(x, 26)):
        with pytest.warns(graphconv.GraphconvWarning, match="only every 2x2-th cell is the classifier") as caught:
            run(x)
        assert caught[0].filename == __file__
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graphconv.compile_model(spec).run(x)
    assert not [w for w in caught if "classifier on its crop" in str(w.message)]


def test_inspect_of_an_uncompiled_all_conv_classifier_says_which_cells_are_crops(write_spec, capsys):
    """With no fc to compile away, inspect showed the fine map as the scores and offered
    finer strides of the fine stride (1 only), where compiling makes the stride the
    period (2) and offers 1 from there, by shift (costing 2x2 copies)."""
    from graphconv.cli import main
    from graphconv.strides import method_flops

    spec = write_spec(NEAREST_AFTER_STRIDE.replace("  - {name: fc, op: fc, out_features: 3}\n",
                                                   "  - {name: head, op: conv, out_channels: 3, kernel_size: 5}\n"))
    assert main(["inspect", str(spec), "--input-size", "40", "44"]) == 0
    out = capsys.readouterr().out
    assert "only every 2x2-th cell is the classifier on its crop" in out
    assert "--output-stride 1: dilate not possible" in out
    compiled = graphconv.compile_model(spec)
    assert method_flops(graphconv.load(spec).graph, 1, (40, 44))["shift"] == \
        4 * method_flops(compiled.graph, 2, (40, 44))["shift"]


@pytest.mark.parametrize("mode, fields", [("nearest", ["4*", "8*", "24*"]), ("bilinear", ["8*", "12*", "32*"])])
def test_inspect_shows_the_first_cell_s_own_field_after_an_upsample(write_spec, capsys, mode, fields):
    """After an upsample one Field for every kind of cell is wider than any cell's and
    starts before the crop with nothing padded (nearest: 6 from -2; the classifier 28 from
    -2, where it reads its 24x24 crop): inspect shows cell (0,0)'s own, and marks the rows.
    Bilinear's reads the two cells its interpolation weighs (the window holds three)."""
    from graphconv.cli import main

    spec = write_spec(f"""
input: {{shape: [1, 24, 24]}}
layers:
  - {{name: c1, op: conv, out_channels: 4, kernel_size: 2, stride: 2}}
  - {{name: c2, op: conv, out_channels: 4, kernel_size: 2, stride: 2}}
  - {{name: up, op: upsample, factor: 2, mode: {mode}}}
  - {{name: c3, op: conv, out_channels: 4, kernel_size: 3}}
  - {{name: fc, op: fc, out_features: 5}}
""")
    assert main(["inspect", str(spec)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert [rows[name][5] for name in ("up", "c3", "fc")] == fields
    assert rows["fc"][7] == ("0" if mode == "nearest" else "-4")  # bilinear: cell 0 reads the cell before it
    assert "*: the map's cells are of several kinds" in out and rows["c2"][5] == "4"


def test_a_segmentation_map_finer_than_its_period_still_takes_a_finer_stride(write_spec, rng):
    """Shift-and-stitch of a map of several phases: each copy's cells keep their own boxes
    (every phase's union made the first cell's box grow, and compile refused)."""
    seg = graphconv.load(write_spec("name: seg\ntask: segmentation\ninput: {shape: [2, 16, 16]}\nlayers:\n"
                                    "  - {name: d1, op: conv, out_channels: 4, kernel_size: 2, stride: 2}\n"
                                    "  - {name: d2, op: conv, out_channels: 4, kernel_size: 2, stride: 2}\n"
                                    "  - {name: up, op: upsample, factor: 2}\n"
                                    "  - {name: head, op: conv, out_channels: 3, kernel_size: 1}\n"))
    fine = graphconv.compile_model(seg.graph, output_stride=1, stride_method="shift")
    cell = first_output_cell(fine.graph)
    assert (cell.box, cell.stride, cell.period) == ((0, 0, 4, 4), (1, 1), (4, 4))
    x = random_input(rng, (1, 2, 32, 32))
    out, plain = fine.run(x), graphconv.compile_model(seg.graph)
    for a in (0, 1):
        for b in (0, 1):  # copy (a, b): the network on the image shifted by (a, b)
            shifted = np.zeros_like(x)
            shifted[:, :, :32 - a, :32 - b] = x[:, :, a:, b:]
            np.testing.assert_allclose(out[:, :, a::2, b::2][:, :, :15, :15], plain.run(shifted)[:, :, :15, :15],
                                       rtol=1e-5, atol=1e-5)


def test_upsampling_twice_in_a_row_meets_its_skip_on_every_size_and_tiles(write_spec, rng):
    """Two pixel shuffles in a row (EDSR x4) meeting an upsampled skip: the second's input
    stride is 1/2, which the multiple of sides once took as 0 (a ZeroDivisionError)."""
    from graphconv.shapes import fitting_sizes
    seg = graphconv.load(write_spec("name: sr\ntask: segmentation\ninput: {shape: [1, 8, 8]}\nlayers:\n"
                                    "  - {name: c1, op: conv, out_channels: 4, kernel_size: 1}\n"
                                    "  - {name: s1, op: depth_to_space, block: 2}\n"
                                    "  - {name: c2, op: conv, out_channels: 16, kernel_size: 1}\n"
                                    "  - {name: s2, op: depth_to_space, block: 2}\n"
                                    "  - {name: up, op: upsample, factor: 4, mode: nearest, inputs: [c1]}\n"
                                    "  - {name: sum, op: add, inputs: [s2, up]}\n"))
    assert fitting_sizes(seg.graph) is None
    x = random_input(rng, (1, 1, 13, 11))
    np.testing.assert_array_equal(seg.run_tiled(x, 5), seg.run(x))
