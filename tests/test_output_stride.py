"""Finer output strides: shift-and-stitch and the dilated rewrite both equal the crop loop."""
import numpy as np
import pytest

import graphconv
from graphconv.dense import crop_loop
from graphconv.errors import GraphconvError
from graphconv.receptive import total_stride
from conftest import SPECS, random_input
from nets import UNPADDED

from graphconv.cost import total_flops
from graphconv.strides import dilated_ceil_note, method_flops


def nets(write_spec):
    out = {name: graphconv.load(write_spec(text, f"{name}.yaml")) for name, text in UNPADDED.items()}
    out["lenet"] = graphconv.load(SPECS / "lenet.yaml")
    out["tinydag"] = graphconv.load(SPECS / "tinydag.yaml")
    return out


def reachable_strides(total):
    return [s for s in range(1, min(total) + 1) if total[0] % s == 0 and total[1] % s == 0]


@pytest.mark.parametrize("name", ["lenet", "tinydag", "strided", "grouped_lrn", "dag"])
@pytest.mark.parametrize("method", ["dilate", "shift"])
def test_every_reachable_stride_equals_crop_loop(name, method, write_spec, rng):
    classifier = nets(write_spec)[name]
    c, hc, wc = classifier.crop_shape
    image = random_input(rng, (2, c, hc + 11, wc + 7))
    total = total_stride(graphconv.compile_model(classifier.graph).graph)
    for stride in reachable_strides(total):
        fine = graphconv.compile_model(classifier.graph, output_stride=stride, stride_method=method)
        assert fine.output_stride == (stride, stride)
        got = fine.run(image)
        want = crop_loop(classifier, image, stride)
        assert got.shape == want.shape, (stride, got.shape, want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"stride {stride}")


def test_dilate_rewrites_the_later_layers_only():
    fine = graphconv.compile_model(SPECS / "alexnet.yaml", output_stride=8, stride_method="dilate")
    params = {n.name: n.params for n in fine.graph.layers()}
    assert params["conv1"]["stride"] == (4, 4) and params["conv1"]["dilation"] == (1, 1)
    assert params["pool1"]["stride"] == (2, 2) and params["conv2"]["dilation"] == (1, 1)
    assert params["pool2"]["stride"] == (1, 1) and params["conv3"]["dilation"] == (2, 2)
    assert params["conv3"]["padding"] == (2, 2)
    assert params["pool5"]["stride"] == (1, 1) and params["pool5"]["dilation"] == (2, 2)
    assert params["fc6"]["dilation"] == (4, 4) and params["fc7"]["dilation"] == (4, 4)
    assert fine.map_size(384, 384) == (21, 21)


def test_shift_and_stitch_is_two_layers_that_the_saved_model_keeps(tmp_path, rng):
    """shift_copies after the input, interleave before the output: receptive field,
    FLOPs and the runtime need nothing else to know about it."""
    plain = graphconv.compile_model(SPECS / "lenet.yaml")
    fine = graphconv.compile_model(SPECS / "lenet.yaml", output_stride=2, stride_method="shift")
    layers = fine.graph.layers()
    assert layers[0].op == "shift_copies" and layers[0].params == {"factor": (2, 2), "step": (2, 2)}
    assert layers[-1].op == "interleave" and fine.graph.output.name == layers[-1].name
    assert fine.output_stride == (2, 2) and fine.field.size == plain.field.size
    assert fine.stitch_copies == 4
    assert total_flops(fine.graph, (41, 37)) == 4 * total_flops(plain.graph, (41, 37))
    fine.save(tmp_path / "m")
    again = graphconv.load(tmp_path / "m")
    assert [n.op for n in again.graph.layers()] == [n.op for n in layers]
    image = random_input(rng, (1, 1, 41, 37))
    np.testing.assert_array_equal(again.run(image), fine.run(image))
    assert again.run(image).shape == (1, 10, 5, 3)


def test_a_model_compiled_with_a_stitch_plan_loads_as_layers(tmp_path, rng):
    """Models compiled before shift-and-stitch became layers carry `compiled.stitch`."""
    fine = graphconv.compile_model(SPECS / "lenet.yaml", output_stride=2, stride_method="shift")
    plain = graphconv.compile_model(SPECS / "lenet.yaml")
    plain.graph.meta["compiled"]["stitch"] = {"factor": [2, 2], "step": 2}
    plain.save(tmp_path / "old")
    old = graphconv.load(tmp_path / "old")
    assert [n.op for n in old.graph.layers()] == [n.op for n in fine.graph.layers()]
    assert "stitch" not in old.graph.meta["compiled"]
    image = random_input(rng, (2, 1, 41, 37))
    np.testing.assert_array_equal(old.run(image), fine.run(image))


def test_a_shift_model_compiled_finer_again_says_to_compile_the_original(rng):
    """Refining a shift-and-stitch model took shift again, copies of copies (33x the
    work of dilating the original, measured on a VGG-like net), without a word; asked to
    dilate, it was told 'interleave covers its whole input'."""
    from graphconv.errors import GraphconvWarning
    fine = graphconv.compile_model(SPECS / "lenet.yaml", output_stride=2, stride_method="shift")
    with pytest.warns(GraphconvWarning, match="made finer by shift-and-stitch already.*compiling the original"):
        finer = graphconv.compile_model(fine, output_stride=1)
    image = random_input(rng, (1, 1, 41, 37))
    np.testing.assert_allclose(finer.run(image), graphconv.compile_model(SPECS / "lenet.yaml", output_stride=1)
                               .run(image), rtol=0, atol=1e-6)
    with pytest.raises(GraphconvError, match="shift-and-stitch already.*which dilation cannot undo: compile the "
                                             "original model"):
        graphconv.compile_model(fine, output_stride=1, stride_method="dilate")


def test_auto_picks_the_cheaper_method():
    graph = graphconv.load(SPECS / "alexnet.yaml").graph
    fine = graphconv.compile_model(graph, output_stride=16)
    flops = method_flops(graphconv.compile_model(graph).graph, 16)
    assert flops["dilate"] < flops["shift"]
    assert fine.graph.meta["compiled"]["stride_method"] == "dilate"


def test_stride_that_does_not_divide_is_a_user_error():
    with pytest.raises(GraphconvError, match="output stride 12 does not divide the network's total stride 32x32"):
        graphconv.compile_model(SPECS / "alexnet.yaml", output_stride=12)


@pytest.mark.parametrize("coarser", [2, 4])
def test_a_coarser_stride_for_a_model_compiled_finer_says_to_compile_the_classifier(coarser):
    finer = graphconv.compile_model(SPECS / "lenet.yaml", output_stride=1)
    with pytest.raises(GraphconvError, match="compiled to output stride 1 already.*compile the original classifier"):
        graphconv.compile_model(finer, output_stride=coarser)
    assert graphconv.compile_model(finer, output_stride=1).output_stride == (1, 1)


def test_output_stride_before_fc_to_conv_is_refused():
    with pytest.raises(GraphconvError, match="run fc-to-conv first"):
        graphconv.compile_model(SPECS / "lenet.yaml", "shape-inference", output_stride=2)


@pytest.mark.parametrize("size", [6, 7, 9])
def test_shift_and_stitch_on_images_shorter_than_its_largest_shift(size, write_spec, rng):
    """Total stride 8 on a 6x6 crop: at output stride 1 the shifts reach 7 pixels, past
    the end of the crop itself; those copies are all zeros and their cells are cut."""
    spec = write_spec("""
        name: short
        input: {shape: [1, 6, 6]}
        layers:
          - {name: c1, op: conv, out_channels: 2, kernel_size: 2, stride: 4}
          - {name: c2, op: conv, out_channels: 2, kernel_size: 1, stride: 2}
          - {name: fc, op: fc, out_features: 3}
    """)
    classifier = graphconv.load(spec)
    fine = graphconv.compile_model(spec, output_stride=1, stride_method="shift")
    x = random_input(rng, (1, 1, size, size))
    np.testing.assert_allclose(fine.run(x), crop_loop(classifier, x, 1), atol=1e-5)


def ceil_net(crop):
    """Unpadded, with two ceil-mode pools: on a crop of 13 their ceil mode adds no window
    (13 -> 12 -> 6 -> 5 -> 2 either way); on 14 both add one that hangs off the crop."""
    return f"""
        name: ceilnet
        input: {{shape: [2, {crop}, {crop}]}}
        layers:
          - {{name: c1, op: conv, out_channels: 4, kernel_size: 2}}
          - {{name: p1, op: maxpool, kernel_size: 2, stride: 2, ceil_mode: true}}
          - {{name: c2, op: conv, out_channels: 4, kernel_size: 2}}
          - {{name: p2, op: avgpool, kernel_size: 3, stride: 2, ceil_mode: true, count_include_pad: false}}
          - {{name: fc, op: fc, out_features: 3}}
    """


@pytest.mark.parametrize("method", ["dilate", "shift"])
@pytest.mark.parametrize("stride", [2, 1])
def test_ceil_mode_pools_that_add_no_window_at_the_crop_equal_the_crop_loop(method, stride, write_spec, rng):
    """No crop of the crop grid reads a window hanging off it, so the dilated rewrite may
    make such a pool a floor-mode one, and both methods equal the crop loop."""
    classifier = graphconv.load(write_spec(ceil_net(13)))
    fine = graphconv.compile_model(classifier.graph, output_stride=stride, stride_method=method)
    if method == "dilate":
        assert fine.graph.node("p2").params["ceil_mode"] is False and fine.graph.node("p2").params["stride"] == (1, 1)
        assert dilated_ceil_note(fine.graph) is None  # no layer pads after it: nothing reads a hanging window
    for extra in [(0, 0), (1, 2), (5, 7), (8, 3)]:
        image = random_input(rng, (1, 2, 13 + extra[0], 13 + extra[1]))
        np.testing.assert_allclose(fine.run(image), crop_loop(classifier, image, stride), rtol=1e-4, atol=1e-5)


CEIL_THEN_PADDED = """
name: ceilpad
input: {shape: [1, 17, 17]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: r1, op: relu}
  - {name: p1, op: maxpool, kernel_size: 3, stride: 2, ceil_mode: true}
  - {name: c2, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: p2, op: maxpool, kernel_size: 2, stride: 2}
  - {name: fc, op: fc, out_features: 3}
"""


def test_dilated_ceil_mode_pool_leaves_out_a_window_hanging_off_a_larger_image_and_compile_says_so(write_spec, rng):
    """p1 adds no window at the crop (17 -> 8 either way), so dilate makes it floor mode. An
    image whose size hangs a last window off p1's map (an even side) gives the whole-image
    pass that window, which c2's padding then reads; the dilated map has none: its cells
    on the network's own grid equal the whole-image pass's except at the bottom and right
    edges, and only where the image hangs a window there. Compile says so."""
    from conftest import graphconv_in_process

    spec = write_spec(CEIL_THEN_PADDED)
    done = graphconv_in_process("compile", spec, "-o", spec.parent / "fine", "--output-stride", 1,
                                "--stride-method", "dilate")
    assert done.returncode == 0, done.stderr
    assert "dilated, the ceil_mode pools (p1) compute no window hanging off the map's end (a crop gives them none)" \
           in " ".join(done.stderr.split()) and "later layers (c2)" in " ".join(done.stderr.split())
    fine, natural = graphconv.load(spec.parent / "fine"), graphconv.compile_model(spec)
    for rows, cols in [(29, 33), (30, 33), (41, 26)]:
        image = random_input(rng, (1, 1, rows, cols))
        whole, own_grid = natural.run(image), fine.run(image)[:, :, ::4, ::4]
        assert own_grid.shape == whole.shape
        agree = np.isclose(own_grid, whole, rtol=1e-4, atol=1e-5).all(axis=(0, 1))
        np.testing.assert_array_equal(agree[:-1, :-1], True)
        assert agree[-1, :-1].all() == (rows % 2 == 1) and agree[:-1, -1].all() == (cols % 2 == 1)


def test_ceil_mode_pool_hanging_off_the_crop_is_not_dilated(write_spec, rng):
    """A ceil-mode window hanging off the crop has no dilated form (the finer pool's map
    would come out shorter than the crop's): dilate says so, auto picks shift, and
    inspect's cost table still works."""
    spec = write_spec(ceil_net(14))
    with pytest.raises(GraphconvError, match="layer 'p2': a ceil_mode pool whose last window hangs off the "
                                             "crop cannot be dilated.*--stride-method shift"):
        graphconv.compile_model(spec, output_stride=2, stride_method="dilate")
    fine = graphconv.compile_model(spec, output_stride=2)
    assert fine.graph.meta["compiled"]["stride_method"] == "shift"
    flops = method_flops(graphconv.compile_model(spec).graph, 2)
    assert flops["dilate"] == float("inf") and flops["shift"] > 0
    image = random_input(rng, (1, 2, 22, 19))
    assert fine.run(image).shape == (1, 3, 5, 3)


def test_windows_of_the_whole_input_are_refused_by_dilate(write_spec):
    """An fc, globalavgpool or flatten has no stride to cut: dilate names the pass that
    makes it slide rather than breaking the IR."""
    from graphconv.strides import dilate
    graph = graphconv.compile_model(SPECS / "lenet.yaml", "shape-inference").graph
    with pytest.raises(GraphconvError, match="layer 'fc3': fc covers its whole input and cannot be dilated: "
                                             "compile with fc-to-conv first"):
        dilate(graph, 2)


# ---- pad layers after the point the stride is cut ------------------------------------------------

def padded_by(how: str) -> str:
    """Stride 8 in three steps; a conv after the second padded by its own padding or by a
    pad layer before it (the same network), or unevenly by a pad layer alone."""
    conv2 = {"own": "  - {name: c2, op: conv, out_channels: 3, kernel_size: 3, padding: 1}\n",
             "layer": "  - {name: c2.pad, op: pad, padding: 1}\n"
                      "  - {name: c2, op: conv, out_channels: 3, kernel_size: 3}\n",
             "uneven": "  - {name: c2.pad, op: pad, padding: [0, 2, 1, 1]}\n"
                       "  - {name: c2, op: conv, out_channels: 3, kernel_size: 3}\n"}[how]
    return ("name: padnet\ninput: {shape: [2, 20, 20]}\nlayers:\n"
            "  - {name: c1, op: conv, out_channels: 3, kernel_size: 3, stride: 2}\n"
            "  - {name: p1, op: maxpool, kernel_size: 2}\n" + conv2 +
            "  - {name: p2, op: avgpool, kernel_size: 2}\n"
            "  - {name: fc, op: fc, out_features: 4}\n")


NO_FOLD = ",".join(name for name in graphconv.pass_manager.DEFAULT_PIPELINE if name != "fold-pad")


@pytest.mark.parametrize("stride", [4, 2, 1])
def test_a_pad_layer_at_a_dilated_layer_pads_by_the_rate(stride, write_spec, rng):
    """At stride S the map c2 reads is 4 / gcd(4, S) times finer, so its pad layer pads
    that many times as much: the same numbers as the conv padding itself (which the
    dilated rewrite multiplies by the rate), on any image."""
    own = graphconv.load(write_spec(padded_by("own"), "own.yaml"))
    layer = graphconv.load(write_spec(padded_by("layer"), "layer.yaml"))
    for name in ("c1", "c2", "fc"):
        layer.graph.set_weights(name, **own.graph.node(name).weights)
    fine_own = graphconv.compile_model(own.graph, output_stride=stride, stride_method="dilate")
    fine_layer = graphconv.compile_model(layer.graph, NO_FOLD, output_stride=stride, stride_method="dilate")
    rate = 4 // stride
    assert fine_layer.graph.node("c2.pad").params["padding"] == (rate, rate, rate, rate)
    assert fine_own.graph.node("c2").params["padding"] == (rate, rate)
    image = random_input(rng, (1, 2, 33, 27))
    np.testing.assert_allclose(fine_layer.run(image), fine_own.run(image), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_a_mirroring_pad_after_the_cut_is_not_dilated_and_auto_shifts(mode, write_spec, rng):
    """A reflect or edge pad copies its map's own border rows: on the finer map dilate
    would make, those rows belong to the interleaved maps together, so dilate says to
    shift instead, and auto does; the shifted network's map equals the crop loop's."""
    from graphconv.dense import verify

    spec = write_spec(padded_by("layer").replace("padding: 1}", f"padding: 1, mode: {mode}}}"))
    with pytest.raises(GraphconvError, match=f"layer 'c2.pad': a {mode} pad cannot be dilated.*"
                                             "--stride-method shift"):
        graphconv.compile_model(spec, output_stride=2, stride_method="dilate")
    fine = graphconv.compile_model(spec, output_stride=2)
    assert fine.graph.meta["compiled"]["stride_method"] == "shift"
    report = verify(graphconv.load(spec), fine, random_input(rng, (1, 2, 37, 30)), where=None)  # random pixels
    assert report.passed, str(report)


@pytest.mark.parametrize("method", ["dilate", "shift"])
def test_an_uneven_pad_at_a_finer_stride_differs_from_the_crop_loop_only_where_padding_reaches(method, write_spec,
                                                                                                rng):
    from graphconv.dense import verify

    classifier = graphconv.load(write_spec(padded_by("uneven")))
    fine = graphconv.compile_model(classifier.graph, output_stride=2, stride_method=method)
    if method == "dilate":
        assert fine.graph.node("c2.pad").params["padding"] == (0, 4, 2, 2)
    report = verify(classifier, fine, random_input(rng, (1, 2, 37, 30)), where=None)  # random pixels
    assert report.conversion_exact and report.padding_explains and report.passed, str(report)


PADDED_POOLS = """
name: padded_pools
input: {shape: [3, 28, 28]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 3}
  - {name: p1, op: maxpool, kernel_size: 2, stride: 2, padding: 1}
  - {name: c2, op: conv, out_channels: 4, kernel_size: 3}
  - {name: p2, op: maxpool, kernel_size: 2, stride: 2, padding: 1}
  - {name: fc, op: fc, out_features: 3}
"""


def test_dilating_a_padded_pool_past_half_its_window_is_refused_for_shift(write_spec, rng):
    """Its padding times the rate passes the half window a pool allows: the output-stride
    pass 'broke the IR' (and export suggested dilate for such a network); shift works."""
    from graphconv.strides import dilate_problem
    spec = write_spec(PADDED_POOLS)
    with pytest.raises(GraphconvError, match=r"layer 'p2': dilated, padding 2 is more than half the pooling window "
                                             r"\(3\) .*; use --stride-method shift"):
        graphconv.compile_model(spec, output_stride=1, stride_method="dilate")
    assert "padding 2 is more than half" in dilate_problem(graphconv.load(spec).graph, 1)
    shifted = graphconv.compile_model(spec, output_stride=1, stride_method="shift")
    x = random_input(rng, (1, 3, 37, 34))
    coarse = graphconv.compile_model(spec).run(x)  # stride 4: every 4th cell of the fine map
    np.testing.assert_allclose(shifted.run(x)[:, :, ::4, ::4], coarse, rtol=1e-4, atol=1e-5)


def test_auto_dilates_a_network_that_pads_even_where_shift_costs_less(write_spec, monkeypatch):
    """Shift pads each copy where its shift cuts it, inside the image, so a network that
    pads at the start of an axis is dilated wherever it can be, whatever the FLOP estimate
    says; an unpadded one still goes by the estimate."""
    import graphconv.strides as strides

    monkeypatch.setattr(strides, "method_flops", lambda graph, stride: {"shift": 1.0, "dilate": 2.0})
    padded = graphconv.compile_model(write_spec(padded_by("own"))).graph
    at_the_end = padded_by("uneven").replace("[0, 2, 1, 1]", "[0, 0, 1, 1]")
    uneven_at_the_end = graphconv.compile_model(write_spec(at_the_end, "end.yaml")).graph
    assert strides.padded_at_the_start(padded) == ["c2"]
    assert strides.cheaper_method(padded, 2) == "dilate"
    assert strides.padded_at_the_start(uneven_at_the_end) == []  # padding the bottom and right only: no cut read
    assert strides.cheaper_method(uneven_at_the_end, 2) == "shift"
    assert strides.cheaper_method(graphconv.compile_model(SPECS / "lenet.yaml").graph, 2) == "shift"


@pytest.mark.parametrize("stride", [4, 2, 1])
def test_shift_and_dilate_agree_on_a_padded_network_beyond_the_largest_shift(stride, write_spec, rng):
    """What compile's note says: on a network that pads, a shifted copy reads padding where
    its shift cuts it, so the two methods differ in cells whose field starts within the
    largest shift (8 - S pixels) of the top or left edge; every cell whose field lies in
    the image further in is the same by both."""
    from graphconv.strides import shift_cut_padding

    classifier = graphconv.load(write_spec(padded_by("own")))
    x = random_input(rng, (1, 2, 53, 49))
    shifted = graphconv.compile_model(classifier.graph, output_stride=stride, stride_method="shift")
    dilated = graphconv.compile_model(classifier.graph, output_stride=stride, stride_method="dilate")
    a, b = shifted.run(x), dilated.run(x)
    reach = 8 - stride
    plural = "" if reach == 1 else "s"
    assert f"within {reach} row{plural} of the image's top or {reach} column{plural} of the image's left edge" in \
        shift_cut_padding(shifted.graph)
    assert "and a cell whose field reaches past the image's bottom or right edge reads the zeros a copy is filled " \
           "with there as pixels" in shift_cut_padding(shifted.graph)
    assert shift_cut_padding(dilated.graph) is None
    field = shifted.field
    rows = [i for i in range(a.shape[2]) if field.box(i, 0)[0] >= reach and field.box(i, 0)[2] <= x.shape[2]]
    cols = [j for j in range(a.shape[3]) if field.box(0, j)[1] >= reach and field.box(0, j)[3] <= x.shape[3]]
    inner = np.ix_(range(1), range(a.shape[1]), rows, cols)
    np.testing.assert_allclose(a[inner], b[inner], rtol=1e-4, atol=1e-5)
    assert not np.allclose(a[:, :, :rows[0]], b[:, :, :rows[0]], rtol=1e-4, atol=1e-5)
    for i, j in np.argwhere(~np.isclose(a, b, rtol=1e-4, atol=1e-5).all(axis=(0, 1))):  # as the note says
        top, left, bottom, right = field.box(i, j)
        assert top < reach or left < reach or bottom > x.shape[2] or right > x.shape[3], (i, j)


def test_compile_notes_the_padding_a_shifted_copy_reads(write_spec):
    from conftest import graphconv_in_process

    spec = write_spec(padded_by("own"))
    done = graphconv_in_process("compile", spec, "-o", spec.parent / "fine", "--output-stride", 2,
                                "--stride-method", "shift")
    assert done.returncode == 0, done.stderr
    assert "output stride 2x2 (shift-and-stitch), each cell the classifier on" in done.stdout
    assert "note: shift-and-stitch on a network that pads (c2): each shifted copy is also padded where its " \
           "shift cuts it, inside the image, so a cell whose field starts within 6 rows" in " ".join(done.stderr.split())
    done = graphconv_in_process("compile", spec, "-o", spec.parent / "auto", "--output-stride", 2)
    assert done.returncode == 0 and "shift-and-stitch" not in done.stderr
    assert "output stride 2x2 (dilated, as auto chose), each cell the classifier on" in done.stdout
    mirrored = write_spec(padded_by("layer").replace("padding: 1}", "padding: 1, mode: reflect}"), "mirrored.yaml")
    done = graphconv_in_process("compile", mirrored, "-o", spec.parent / "mirrored", "--output-stride", 2)
    assert done.returncode == 0, done.stderr
    assert "dilate, which pads only at the image's border, cannot make this network finer (layer 'c2.pad': a " \
           "reflect pad cannot be dilated" in " ".join(done.stderr.split())  # auto took shift: the note says why
    assert graphconv.load(spec.parent / "auto").graph.meta["compiled"]["stride_method"] == "dilate"


CEIL_NET = """
name: ceilnet
input: {name: data, shape: [1, 22, 22]}
layers:
  - {name: c1, op: conv, out_channels: 6, kernel_size: 3}
  - {name: r1, op: relu}
  - {name: p1, op: maxpool, kernel_size: 3, stride: 2, ceil_mode: true}
  - {name: c2, op: conv, out_channels: 8, kernel_size: 3}
  - {name: p2, op: maxpool, kernel_size: 2, stride: 2}
  - {name: fc, op: fc, out_features: 5}
"""


def test_shift_on_an_unpadded_ceil_mode_network_notes_the_zeros_its_copies_read_at_the_end(write_spec, rng):
    """No layer pads, but each shifted copy is filled with zeros past the image's end, which
    the last cells' hanging ceil_mode windows read as pixels: said, as it is."""
    from conftest import graphconv_in_process

    spec = write_spec(CEIL_NET)
    done = graphconv_in_process("compile", spec, "-o", spec.parent / "fine", "--output-stride", 1)
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())
    assert "note: shift-and-stitch on a network that has ceil_mode pools (p1), whose last window may hang off the " \
           "map: a cell whose field reaches past the image's bottom or right edge reads the zeros a copy is filled " \
           "with there as pixels" in said and "cannot make this network finer (layer 'p1'" in said
    fine, natural = graphconv.load(spec.parent / "fine"), graphconv.compile_model(spec)
    x = random_input(rng, (1, 1, 61, 61))
    stitched = fine.run(x)
    last = np.zeros(stitched.shape[2:], bool)
    for a in range(4):
        for b in range(4):  # copy (a, b) is the natural network on the image cut by a rows and b columns
            cut = natural.run(np.ascontiguousarray(x[:, :, a:, b:]))
            mine = stitched[:, :, a::4, b::4]
            agree = np.isclose(mine, cut[:, :, :mine.shape[2], :mine.shape[3]], rtol=1e-4, atol=1e-5).all(axis=(0, 1))
            np.testing.assert_array_equal(agree[:-1, :-1], True)  # away from the end, no zeros are read
            last[a::4, b::4] |= ~agree
    assert last.any() and not last[:-4, :-4].any()


@pytest.mark.parametrize("pipeline,said", [
    ("default,output-stride{stride=2}", "(dilated, as auto chose)"),
    ("default,output-stride{stride=2,method=auto}", "(dilated, as auto chose)"),
    ("default,output-stride{stride=2,method=dilate}", "(dilated), each"),
    ("default,output-stride{stride=2,method=shift}", "(shift-and-stitch), each"),
])
def test_compile_says_auto_chose_the_method_when_output_stride_comes_through_passes(write_spec, pipeline, said):
    from conftest import graphconv_in_process

    spec = write_spec(padded_by("own"))
    done = graphconv_in_process("compile", spec, "-o", spec.parent / "fine", "--passes", pipeline)
    assert done.returncode == 0, done.stderr
    assert f"output stride 2x2 {said}" in done.stdout


@pytest.mark.parametrize("how", ["own", "layer", "uneven", "unpadded"])
@pytest.mark.parametrize("method", ["dilate", "shift"])
def test_the_crop_loop_of_a_finer_model_runs_the_classifier_at_its_own_stride(how, method, write_spec, rng,
                                                                               tmp_path):
    """--crops on a model compiled with --output-stride ran the fine network on every crop
    (all 4x4 shifted copies, or the dilated layers' extra positions) to keep one cell of
    each: the same map as the classifier's crop loop, at up to 16 times its work. Its crop
    classifier is now the network at its own stride, also once saved and loaded."""
    from graphconv.strides import at_its_own_stride
    from graphconv.tiling import CropGrid

    text = UNPADDED["strided"] if how == "unpadded" else padded_by(how)
    classifier = graphconv.load(write_spec(text))
    passes = NO_FOLD if how in ("layer", "uneven") else None  # fold-pad would leave no pad layer to dilate
    fine = graphconv.compile_model(classifier.graph, passes, output_stride=2, stride_method=method)
    assert bool(fine.graph.find("pad")) == (passes is not None)
    fine.save(tmp_path / "fine")
    x = random_input(rng, (1, classifier.crop_shape[0], 37, 41))
    want = crop_loop(classifier, x, 2)
    for model in (fine, graphconv.load(tmp_path / "fine")):
        coarse = at_its_own_stride(model.graph)
        assert not coarse.find("shift_copies") and not coarse.find("interleave")
        assert total_stride(coarse) == total_stride(graphconv.compile_model(classifier.graph).graph)
        grid = CropGrid(model, 2)
        assert total_flops(grid.model.graph) == total_flops(graphconv.compile_model(classifier.graph).graph)
        np.testing.assert_allclose(grid.run(x, "cpu"), want, rtol=1e-4, atol=1e-5)


def test_a_dilated_layer_a_later_pass_changed_is_left_as_it_is_for_the_crop_loop(write_spec):
    """What output-stride recorded no longer matches: the fine network runs on each crop
    (exact, only slower) rather than a guess at the coarse one."""
    from graphconv.strides import at_its_own_stride

    fine = graphconv.compile_model(graphconv.load(write_spec(padded_by("own"))).graph, output_stride=2,
                                   stride_method="dilate")
    graph = fine.graph.copy()
    assert at_its_own_stride(graph) is not graph
    name, change = next(iter(graph.meta["compiled"]["undilated"].items()))
    assert graph.node(name).params["stride"] == tuple(change["after"]["stride"])
    graph.set_params(name, stride=tuple(v + 1 for v in change["after"]["stride"]))
    assert at_its_own_stride(graph) is graph
    replaced = fine.graph.copy()  # as conv-to-fc does to a recorded conv: a layer of no stride param
    name = next(name for name in replaced.meta["compiled"]["undilated"] if replaced.node(name).op == "conv")
    replaced.replace(name, "relu")
    assert at_its_own_stride(replaced) is replaced  # it raised KeyError: 'stride'


def test_two_dilations_in_one_pipeline_are_both_undone(write_spec):
    """A second output-stride step replaced the first one's record: the crop classifier
    stayed at the first step's stride."""
    from graphconv.strides import at_its_own_stride

    classifier = graphconv.load(write_spec(padded_by("own")))
    twice = graphconv.compile_model(classifier.graph, "default,output-stride{stride=4,method=dilate},"
                                                      "output-stride{stride=2,method=dilate}")
    assert twice.output_stride == (2, 2)
    coarse = at_its_own_stride(twice.graph)
    assert total_stride(coarse) == (8, 8)
    assert total_flops(coarse) == total_flops(graphconv.compile_model(classifier.graph).graph)
