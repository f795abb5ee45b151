"""verify: (a) the conversion on the classifier's crop, (b) the sliding evaluation against
the crop loop, and for padded networks which layers' padding makes which positions differ."""
import subprocess
from pathlib import Path
import sys

import numpy as np
import pytest

import graphconv
from graphconv import dense
from graphconv.dense import TOP_CLASS_SHARE, crop_loop, crops_per_batch, padding_reach, verify
from conftest import SPECS, random_input

PADDED = """
name: padded
input: {shape: [2, 16, 16]}
layers:
  - {name: conv1, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: relu1, op: relu}
  - {name: pool1, op: maxpool, kernel_size: 2}
  - {name: conv2, op: conv, out_channels: 4, kernel_size: 3}
  - {name: fc, op: fc, out_features: 3}
"""
UNPADDED = PADDED.replace(", padding: 1", "")
CEIL = """
name: ceil
input: {shape: [1, 13, 13]}
layers:
  - {name: conv1, op: conv, out_channels: 2, kernel_size: 3}
  - {name: pool1, op: maxpool, kernel_size: 2, ceil_mode: true}
  - {name: fc, op: fc, out_features: 3}
"""


def models(write_spec, text):
    classifier = graphconv.load(write_spec(text))
    return classifier, graphconv.compile_model(classifier.graph)


def test_an_unpadded_network_is_exact_both_ways(write_spec, rng):
    classifier, fcn = models(write_spec, UNPADDED.replace("[2, 16, 16]", "[2, 14, 14]"))
    report = verify(classifier, fcn, random_input(rng, (1, 2, 30, 26)))
    assert report.exact_by_construction and report.conversion_exact and report.agrees and report.passed
    assert report.layers == [] and "PASS: the conversion is exact and the sliding evaluation equals" in str(report)


def test_nan_pixels_reaching_the_map_and_the_crops_alike_are_no_difference(write_spec, rng):
    """A NaN pixel put NaN in the same cells of both, and verify called the conversion
    wrong (max abs difference nan, FAIL) while it counted no cell differing."""
    classifier, fcn = models(write_spec, UNPADDED.replace("[2, 16, 16]", "[2, 14, 14]"))
    x = random_input(rng, (1, 2, 30, 26))
    x[0, 0, 10, 10] = np.nan
    report = verify(classifier, fcn, x)
    assert np.isnan(fcn.run(x)).any()
    assert report.passed and report.conversion_exact and report.max_abs < report.tolerance, str(report)


@pytest.mark.parametrize("batches, expected_seconds", [([(8, 20.0), (54, 21.0)], 54 / 46), ([(54, 3.0)], 3.0)])
def test_the_crop_loop_s_cost_is_timed_at_the_pace_after_its_first_batch(monkeypatch, batches, expected_seconds):
    """verify said "39 ms a crop here" beside progress lines of 20 s for the first 8 crops
    (the first batch compiled kernels on a fresh install): the cost it quotes is the pace
    of the batches after the first, and a single batch's own time."""
    clock = iter([0.0, *(at for _, at in batches), batches[-1][1]])  # start, each batch heard, end
    monkeypatch.setattr(dense.time, "perf_counter", lambda: next(clock))
    heard = []

    def fake_loop(classifier, image, stride, device, progress, skip):
        for done, _ in batches:
            progress(done, 54)
        return np.zeros((1, 3, 6, 9), np.float32)
    monkeypatch.setattr(dense, "crop_loop", fake_loop)
    _, seconds = dense._timed_crop_loop(None, None, 32, "cpu", lambda done, total: heard.append(done), None)
    assert seconds == pytest.approx(expected_seconds) and heard == [done for done, _ in batches]


def test_a_padded_network_passes_and_says_where_padding_reaches(write_spec, rng):
    classifier, fcn = models(write_spec, PADDED)
    report = verify(classifier, fcn, random_input(rng, (2, 2, 36, 30)), where=None)  # random pixels
    assert report.conversion_exact and not report.agrees and report.passed
    assert not verify(classifier, fcn, random_input(rng, (2, 2, 36, 30)), strict=True).passed
    [conv1] = report.layers
    assert conv1.name == "conv1" and conv1.why == "padding 1x1" and conv1.map_hw == (16, 16)
    assert conv1.border == (1, 1, 1, 1) and conv1.reached == 16 * 16 - 14 * 14
    assert 0 < conv1.differing <= conv1.reached and conv1.max_abs > conv1.tolerance
    assert conv1.clear_agrees  # the positions no padding reaches equal the sliding network's
    text = str(report)
    assert "conv1 (padding 1x1): of its 16x16 map per crop, 60 positions read zero padding" in text
    assert "the 196 others agree" in text
    assert "every cell depends on positions padding reaches" in text
    assert "dilate and shift" not in text  # said only of a finer stride, where both can be asked for
    per_cell = report.cell_differences  # what a notebook draws: where the dense map and the crop loop differ
    assert per_cell.shape == (2, *report.shape[2:]) and per_cell.max() == report.max_abs
    assert int((per_cell > report.tolerance).sum()) == report.cells_differing
    finer = graphconv.compile_model(classifier.graph, output_stride=1, stride_method="dilate")
    assert "the stride methods dilate and shift disagreeing near the image's edges on such a network is this same " \
           "effect" in str(verify(classifier, finer, random_input(rng, (1, 2, 20, 20))))


DEEP = """
name: deep
input: {shape: [2, 20, 20]}
layers:
""" + "".join(f"  - {{name: c{i}, op: conv, out_channels: 3, kernel_size: 3, padding: 1}}\n" for i in range(1, 9)) + """
  - {name: side, op: conv, out_channels: 3, kernel_size: 3, padding: 1, inputs: [c4]}
  - {name: cat, op: concat, inputs: [c8, side]}
  - {name: pool, op: maxpool, kernel_size: 2}
  - {name: fc, op: fc, out_features: 3}
"""


def test_many_padded_layers_are_measured_in_one_run_each_and_summed_up(write_spec, rng):
    """Every padded layer's maps come from one run of the network up to the last of them
    (and one per side branch not upstream of it), as each layer's own prefix gives them;
    the report lists the first and last layers and sums up the ones between."""
    classifier, fcn = models(write_spec, DEEP)
    x = random_input(rng, (1, 2, 31, 27))
    report = verify(classifier, fcn, x)
    _, sources = padding_reach(classifier.graph)
    assert [layer.name for layer in report.layers] == sources and len(sources) == 9
    context = dense._PaddingContext(classifier, x, "cpu", padding_reach(classifier.graph)[0],
                                    dense.partial_receptive_fields(classifier.graph)[0],
                                    dense.partial_sliding_periods(classifier.graph),
                                    dense.infer_shapes(classifier.graph, check_weights=False))
    for layer in report.layers:  # what the layer's own prefix, run alone, measures
        [(alone)] = dense._measure_group(context, layer.name, [layer.name], []).values()
        assert alone == layer
        assert layer.reached > 0 and layer.clear_agrees
    text = str(report)
    assert "zero padding in c1, c2, c3 and 6 more:" in text
    assert text.count("    - ") == 7 and "- and 3 more padded layers between them" in text


def test_a_wrong_conversion_fails_whatever_the_padding(write_spec, rng):
    classifier, fcn = models(write_spec, PADDED)
    fcn.graph.set_weights("fc", weight=fcn.graph.node("fc").weights["weight"] * 1.01)
    report = verify(classifier, fcn, random_input(rng, (1, 2, 24, 24)))
    assert not report.conversion_exact and not report.passed
    assert "DIFFERENT: the conversion is wrong" in str(report) and "result: FAIL" in str(report)


def test_where_padding_reaches_follows_the_windows(write_spec):
    graph = graphconv.load_spec(write_spec(PADDED))
    reach, sources = padding_reach(graph)
    assert sources == ["conv1"]
    rows, cols = reach["conv1"]
    assert rows.tolist() == [True] + [False] * 14 + [True] and (cols == rows).all()
    assert reach["pool1"][0].tolist() == [True] + [False] * 6 + [True]
    assert reach["conv2"][0].tolist() == [True] + [False] * 4 + [True]  # windows over the pool's border rows
    assert reach["fc"][0].all()  # the fc reads all of it
    ceil = graphconv.load_spec(write_spec(CEIL, "ceil.yaml"))
    reach, sources = padding_reach(ceil)
    assert sources == ["pool1"] and reach["pool1"][0].tolist() == [False] * 5 + [True]


def test_a_ceil_mode_window_is_reported_like_padding(write_spec, rng):
    classifier = graphconv.load(write_spec(CEIL))
    fcn = graphconv.compile_model(classifier.graph)
    report = verify(classifier, fcn, random_input(rng, (1, 1, 17, 15)), where=None)  # random pixels
    assert not report.exact_by_construction and report.padded_layers == ["pool1"]
    assert report.conversion_exact and not report.agrees and report.passed
    assert [layer.why for layer in report.layers] == ["ceil_mode"] and report.padding_explains
    text = str(report)
    assert ("ceil_mode pools in pool1: their last windows reach past each crop's map and ignore the positions "
            "there (they read no zeros), where the sliding network sees the neighbouring pixels") in text
    assert "zero padding" not in text and "with zeros" not in text and "positions read beyond the map's edge, which the pool ignores" in text


# one layer of each kind of border: a conv's zeros, a reflection, edge copies, a constant,
# a max pool's padding (which it ignores) and an average pool's (which it counts as zeros)
BORDERS = """
name: borders
input: {shape: [2, 20, 20]}
layers:
  - {name: mirror, op: pad, padding: 1, mode: reflect}
  - {name: c1, op: conv, out_channels: 3, kernel_size: 3}
  - {name: edge, op: pad, padding: 1, mode: edge}
  - {name: c2, op: conv, out_channels: 3, kernel_size: 3, padding: 1}
  - {name: half, op: pad, padding: 1, value: 0.5}
  - {name: mp, op: maxpool, kernel_size: 3, stride: 2, padding: 1}
  - {name: ap, op: avgpool, kernel_size: 3, padding: 1}
  - {name: fc, op: fc, out_features: 3}
"""


def test_the_headline_names_each_kind_of_border_the_layers_pad_with(write_spec, rng):
    """A network padded by reflection alone was said to pad each crop "with zeros"."""
    classifier, fcn = models(write_spec, BORDERS)
    report = verify(classifier, fcn, random_input(rng, (1, 2, 27, 25)))
    assert report.padding_kinds == {"mirror": "reflection", "c2": "zeros", "edge": "edge copies",
                                    "half": "the value 0.5", "mp": "ignored", "ap": "zeros"}
    [headline] = [line for line in str(report).splitlines() if "where the sliding network sees" in line]
    assert headline == (
        "    reflection padding in mirror: each crop is padded with its own rows and columns mirrored at its border; "
        "edge padding in edge: each crop is padded with copies of its own edge rows and columns; "
        "zero padding in c2, ap: each crop is padded with zeros at its own border; "
        "padding of the value 0.5 in half: each crop is padded with the value 0.5 at its own border; "
        "pool padding that the pool ignores in mp: at each crop's border the windows reach past its map and ignore "
        "the positions there (they read no zeros), where the sliding network sees the neighbouring pixels (it pads "
        "only at the image's border)")
    assert "mp (padding 1x1): of its" in str(report) and "read beyond the map's edge, which the pool ignores" in str(report)
    reflected = verify(*models(write_spec, BORDERS.split("  - {name: edge")[0] + "  - {name: fc, op: fc, "
                                           "out_features: 3}\n"), random_input(rng, (1, 2, 27, 25)))
    assert "reflection padding in mirror" in str(reflected) and "zero" not in str(reflected)


def graphconv_cli(*args):
    return subprocess.run([sys.executable, "-m", "graphconv", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_verify_exits_0_for_a_right_conversion_of_a_padded_network_and_1_with_strict(write_spec):
    spec = write_spec(PADDED)
    result = graphconv_cli("verify", spec, "--input-size", 36, 30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(a) conversion" in result.stdout and "exact" in result.stdout
    assert "result: PASS: the conversion is exact; the sliding evaluation differs" in result.stdout
    strict = graphconv_cli("verify", spec, "--input-size", 36, 30, "--strict")
    assert strict.returncode == 1 and "result: FAIL (--strict)" in strict.stdout
    unpadded = graphconv_cli("verify", write_spec(UNPADDED, "unpadded.yaml"), "--input-size", 36, 30, "--strict")
    assert unpadded.returncode == 0, unpadded.stdout



def test_verify_of_a_compiled_folder_says_it_cannot_check_the_conversion(write_spec, tmp_path):
    """A compiled folder holds the converted network only: verify's classifier on each
    crop is then that network itself, so (a) compared it with itself and said "exact"
    even of a model whose conversion was wrong. It says (a) is not checked; (b) stands."""
    spec = write_spec(UNPADDED)
    assert graphconv_cli("compile", spec, "-o", tmp_path / "fcn").returncode == 0
    model = tmp_path / "fcn" / "model.yaml"
    model.write_text(model.read_text().replace("op: maxpool", "op: avgpool"))  # no longer the spec's network
    result = graphconv_cli("verify", tmp_path / "fcn", "--input-size", 36, 30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(a) conversion: not checked: the model given is already compiled" in result.stdout
    assert "the conversion is exact" not in result.stdout
    assert "result: PASS: the conversion was not checked (a compiled model) and the sliding evaluation equals " \
           "the crop loop" in result.stdout
    assert "the conversion is exact" in graphconv_cli("verify", spec, "--input-size", 36, 30).stdout


def test_verify_of_a_classifier_compiled_without_converting_it_still_checks_the_conversion(write_spec, rng):
    """Every compile records its passes; a classifier compiled with passes that leave it
    returning vectors is still converted by verify, so (a) holds for it."""
    from graphconv.pass_manager import CLASSIFIER_PIPELINE

    classifier = graphconv.compile_model(write_spec(UNPADDED), CLASSIFIER_PIPELINE)
    assert classifier.returns_vectors and "compiled" in classifier.graph.meta
    report = verify(classifier, graphconv.compile_model(classifier.graph), random_input(rng, (1, 2, 36, 30)))
    assert not report.conversion_unchecked and "(a) conversion: the converted network vs the classifier" in str(report)
    assert "PASS: the conversion is exact" in str(report)

# a stride-2 conv padded only at the bottom and right (TensorFlow's "same" on an even
# size), a max pool padded with -inf at the top and right, and a conv of its own padding
UNEVEN = """
name: uneven
input: {shape: [2, 16, 14]}
layers:
  - {name: conv1.pad, op: pad, padding: [0, 0, 1, 1]}
  - {name: conv1, op: conv, out_channels: 4, kernel_size: 3, stride: 2}
  - {name: pool1.pad, op: pad, padding: [1, 0, 0, 1], value: -.inf}
  - {name: pool1, op: maxpool, kernel_size: 2}
  - {name: conv2, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: fc, op: fc, out_features: 3}
"""


def test_where_uneven_padding_reaches_follows_each_side(write_spec):
    graph = graphconv.load_spec(write_spec(UNEVEN))
    reach, sources = padding_reach(graph)
    assert sources == ["conv1.pad", "pool1.pad", "conv2"]
    rows, cols = reach["conv1.pad"]
    assert rows.tolist() == [False] * 16 + [True] and cols.tolist() == [False] * 14 + [True]
    rows, cols = reach["conv1"]  # 17 -> 8 rows: only the last window reads the padding row
    assert rows.tolist() == [False] * 7 + [True] and cols.tolist() == [False] * 6 + [True]
    rows, cols = reach["pool1.pad"]
    assert rows.tolist() == [True] + [False] * 7 + [True] and cols.tolist() == [False] * 6 + [True, True]


def test_verify_of_a_second_model_that_does_not_slide_says_to_compile_it(rng):
    """verify(classifier, classifier) unpacked the rows and columns of a vector: a bare
    ValueError."""
    classifier = graphconv.load(SPECS / "lenet.yaml")
    with pytest.raises(graphconv.GraphconvError, match="the second model, lenet, returns one vector per image.*"
                                                        "graphconv.compile_model"):
        verify(classifier, classifier, random_input(rng, (1, 1, 40, 40)))


def test_verify_explains_a_network_padded_unevenly(write_spec, rng):
    """Each pad layer is named with its four sides (and its value where it is not 0), the
    positions clear of padding agree, and the -inf in a pad's border is compared as a
    value like any other (equal infinities agree), with no NaN."""
    import warnings

    classifier, fcn = models(write_spec, UNEVEN)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = verify(classifier, fcn, random_input(rng, (1, 2, 40, 31)), where=None)  # random pixels
    assert report.conversion_exact and report.padding_explains and report.passed
    assert [(layer.name, layer.why) for layer in report.layers] == [
        ("conv1.pad", "padding top 0, left 0, bottom 1, right 1"),
        ("pool1.pad", "padding top 1, left 0, bottom 0, right 1 of -inf"),
        ("conv2", "padding 1x1")]
    pool_pad = report.layers[1]
    assert pool_pad.tolerance < 1 and pool_pad.differing > 0 and pool_pad.clear_agrees
    assert "pool1.pad (padding top 1, left 0, bottom 0, right 1 of -inf): of its 9x8 map per crop, 30 " \
           "positions read padding of -inf (here or upstream: 1 row at the top, 1 at the bottom" in str(report)
    assert np.isfinite(pool_pad.max_abs) and pool_pad.infinite > 0, "a -inf border is counted, not 'by up to inf'"
    assert f"where both are finite ({pool_pad.infinite} hold an infinity, the padding's, or NaN in one only)" in str(report)
    assert "inf;" not in str(report)


def test_the_crop_loop_in_batches_with_a_zero_filled_last_one_equals_each_crop_alone(write_spec, rng, monkeypatch):
    """Crops spread over equal batches (one plan for all), the last one's spare places
    zero: every crop's scores are the classifier's on that crop alone."""
    classifier = graphconv.load(write_spec(UNPADDED))
    image = random_input(rng, (2, 2, 22, 22))  # 3x3 crops an image at stride 3: 18, in 4 batches of 5
    monkeypatch.setattr(dense, "MOST_CROPS_PER_BATCH", 5)
    batches = []
    run = classifier._scores
    monkeypatch.setattr(classifier, "_scores",
                        lambda x, *args, **kwargs: batches.append(len(x)) or run(x, *args, **kwargs))
    scores = crop_loop(classifier, image, 3)
    assert batches == [5, 5, 5, 5]
    for b, i, j in [(0, 0, 0), (1, 2, 2), (1, 1, 0), (0, 2, 1)]:
        alone = classifier.run(image[b:b + 1, :, 3 * i:3 * i + 16, 3 * j:3 * j + 16]).reshape(-1)
        np.testing.assert_allclose(scores[b, :, i, j], alone, rtol=1e-5, atol=1e-6)


def spec_with(width: int, fc: int) -> str:
    return f"""
    name: sized
    input: {{shape: [3, 64, 64]}}
    layers:
      - {{name: conv1, op: conv, out_channels: {width}, kernel_size: 3, padding: 1}}
      - {{name: fc, op: fc, out_features: {fc}}}
    """


@pytest.mark.parametrize("crops, thin_batch", [(1, 1), (7, 7), (64, 64), (65, 33), (1000, 63)])
def test_a_crop_batch_grows_with_the_weights_and_shrinks_with_the_activations(write_spec, crops, thin_batch,
                                                                            monkeypatch):
    """Wide maps and few weights: batches of one or two crops; fc weights of 131 MB:
    up to MOST_CROPS_PER_BATCH, the crops spread evenly over the batches."""
    monkeypatch.setattr(dense, "CROP_ACTIVATION_BUDGET", 8 << 20)
    few_weights_wide_maps = graphconv.load(write_spec(spec_with(256, 2), "wide.yaml"))  # 4 MB maps a crop
    many_weights_thin_maps = graphconv.load(write_spec(spec_with(4, 2000), "fc.yaml"))  # 131 MB of fc
    assert crops_per_batch(few_weights_wide_maps, crops) <= 2
    assert crops_per_batch(many_weights_thin_maps, crops) == thin_batch  # up to 64, spread evenly
    planned = []
    monkeypatch.setattr(dense, "_most_crops_per_batch", lambda model: planned.append(model) or 1)
    assert crops_per_batch(many_weights_thin_maps, crops) == thin_batch and not planned  # once per model
    many_weights_thin_maps.graph.name = "renamed"  # any edit: worked out again
    assert crops_per_batch(many_weights_thin_maps, crops) == 1 and planned == [many_weights_thin_maps]


SOFTMAX = UNPADDED.replace("[2, 16, 16]", "[2, 14, 14]") + "  - {name: prob, op: softmax}\n"


def test_a_plugin_pass_that_changes_the_scores_is_named_and_is_no_conversion_bug(write_spec, rng):
    """strip-softmax (the docs' own example) made (a) say 'DIFFERENT: the conversion is
    wrong (a bug)'. The pass that changed the crop's output is found by
    rerunning the pipeline a pass at a time, and the sliding map is checked against the
    network as the user's passes left it."""
    from graphconv import pass_manager

    pass_manager.load_plugin(str(Path(__file__).parent.parent / "examples" / "my_passes.py"))
    classifier = graphconv.load(write_spec(SOFTMAX))
    fcn = graphconv.compile_model(classifier.graph, "shape-inference,fc-to-conv,strip-softmax")
    report = verify(classifier, fcn, random_input(rng, (1, 2, 30, 26)))
    [change] = report.pass_changes
    assert change.name == "strip-softmax" and not change.builtin and report.changed_by_plugins
    assert not report.passed  # verify cannot know the change was meant
    text = str(report)
    assert "pass 'strip-softmax' (plugin " in text and "changed what the classifier computes on its crop" in text
    assert "a bug" not in text and "(b) sliding evaluation vs the classifier as your passes left it" in text
    assert "the sliding evaluation is right: it equals the crop loop of the network as changed" in text


def test_a_plugin_pass_that_converts_the_fc_layers_wrongly_is_named_as_the_wrong_conversion(write_spec, rng):
    """A lab's own fc-to-conv with H and W swapped in the weight's reshape was reported
    as 'the pipeline's own doing, not the conversion's' and 'if that is what your pass is
    for, the sliding evaluation is right': a pass that rewrites the fc layers is the
    conversion, and changing the crop's scores is its bug."""
    from graphconv.ops import get_op
    from graphconv.params import normalize_params
    from graphconv.pass_manager import register_pass

    @register_pass("swapped-fc-to-conv", "fc-to-conv with the kernel's H and W swapped", requires=("shapes",))
    def swapped_fc_to_conv(graph):
        for fc in graph.find("fc"):
            c, h, w = fc.inputs[0].shape
            weight = fc.weights["weight"].reshape(-1, c, w, h).transpose(0, 1, 3, 2)  # the bug
            params = normalize_params(get_op("conv"), {"out_channels": fc.params["out_features"],
                                                       "kernel_size": (h, w), "bias": fc.params["bias"]})
            graph.replace(fc, "conv", params, {**fc.weights, "weight": np.ascontiguousarray(weight)})
        return True

    classifier = graphconv.load(write_spec(SOFTMAX))
    fcn = graphconv.compile_model(classifier.graph, "shape-inference,remove-flatten,swapped-fc-to-conv")
    report = verify(classifier, fcn, random_input(rng, (1, 2, 30, 26)))
    assert [(c.name, c.converts) for c in report.pass_changes] == [("swapped-fc-to-conv", True)]
    text = str(report)
    assert "the conversion is wrong (a bug in your pass, which rewrote fc layers)" in text
    assert "FAIL: the conversion is wrong: 'swapped-fc-to-conv' rewrote fc or flatten layers" in text
    assert "own doing" not in text and "is right" not in text and not report.passed


def test_a_built_in_pass_that_changes_the_scores_is_named_as_a_graphconv_bug(write_spec, rng, monkeypatch):
    from dataclasses import replace

    from graphconv import pass_manager

    def scaling(graph):
        fc = graph.node("fc")
        graph.set_weights(fc, weight=fc.weights["weight"] * 1.5)
        return True

    info = pass_manager.get_pass("fuse-conv-activation")
    monkeypatch.setitem(pass_manager._REGISTRY, "fuse-conv-activation", replace(info, run=scaling))
    classifier = graphconv.load(write_spec(SOFTMAX))
    fcn = graphconv.compile_model(classifier.graph)
    report = verify(classifier, fcn, random_input(rng, (1, 2, 30, 26)))
    assert [c.name for c in report.pass_changes] == ["fuse-conv-activation"] and not report.passed
    assert "pass 'fuse-conv-activation' (built-in" in str(report) and "a graphconv bug" in str(report)


def test_the_tolerance_is_relative_to_the_scores_however_small(write_spec, rng):
    """Softmax over 1000 classes gives scores around 1e-3: an absolute tolerance of 1e-4
    passed differences of 5% of every score as 'equals the crop loop'."""
    spec = PADDED.replace("out_features: 3", "out_features: 1000") + "  - {name: prob, op: softmax}\n"
    classifier = graphconv.load(write_spec(spec))
    fc = classifier.graph.node("fc")
    classifier.graph.set_weights(fc, weight=fc.weights["weight"] * 0.05)  # near-uniform: every score ~1e-3
    fcn = graphconv.compile_model(classifier.graph)
    report = verify(classifier, fcn, random_input(rng, (1, 2, 36, 30)))
    assert report.scale < 0.01 and report.tolerance == pytest.approx(1e-4 * report.scale)
    assert report.max_abs > report.tolerance and not report.agrees  # padding makes cells differ
    assert report.max_rel == pytest.approx(report.max_abs / report.scale)
    assert "equals the crop loop" not in str(report) and "of the largest score" in str(report)


@pytest.mark.parametrize("strict", [False, True])
def test_scores_that_agree_while_padded_layers_differ_pass_without_saying_equal(write_spec, rng, strict):
    """Saturated scores (here an fc of zero weights: every cell its bias) agree with the
    crop loop while padding makes the layers before differ: verify --strict said "PASS:
    ... the sliding evaluation equals the crop loop" under its own list of differing
    layers. It passes (the scores are equal), saying so for these pixels only."""
    classifier = graphconv.load(write_spec(PADDED))
    fc = classifier.graph.node("fc")
    classifier.graph.set_weights(fc, weight=np.zeros_like(fc.weights["weight"]))
    fcn = graphconv.compile_model(classifier.graph)
    report = verify(classifier, fcn, random_input(rng, (1, 2, 36, 30)), strict=strict, where=None)
    assert report.agrees and report.passed and any(layer.differing for layer in report.layers)
    text = str(report)
    assert "equals the crop loop on these pixels" in text and "on other images the scores can differ" in text
    assert "(verify on one of your images measures it)" in text  # random pixels: the hint; on an image, none
    given = str(verify(classifier, fcn, random_input(rng, (1, 2, 36, 30)), strict=strict))
    assert "measures it" not in given and "--region" not in given and "the top class agrees in every cell" in given


def test_one_tolerance_for_the_conversion_names_the_passes_and_fails_the_run(write_spec, rng):
    """(a) used the larger of its own tolerance (1e-4 of the classifier's scores on the
    sampled crops) and 1e-4 of the crop loop's largest score, while the search for the
    pass that changed the scores used its own: a plugin pass whose change fell between
    the two was named and the verdict said "FAIL: ... changed", yet `passed` was True and
    verify exited 0. (a) has one tolerance now, printed apart from (b)'s."""
    from graphconv.pass_manager import register_pass

    @register_pass("scale-scores", "multiply the scores by `factor`")
    def scale_scores(graph, factor: float = 1.0):
        fc = graph.node("fc")
        graph.set_weights(fc, weight=fc.weights["weight"] * factor, bias=fc.weights["bias"] * factor)
        return True

    classifier = graphconv.load(write_spec(UNPADDED.replace("[2, 16, 16]", "[2, 14, 14]")))
    plain = graphconv.compile_model(classifier.graph, "shape-inference,fc-to-conv")
    for _ in range(20):  # an image whose largest score is on a crop (a) does not sample, by 10% at least:
        image = random_input(rng, (1, 2, 30, 26))  # room between (a)'s tolerance and (b)'s
        origins = dense._sample_origins(1, *plain.run(image).shape[2:], plain.output_stride)
        sampled = float(np.abs(classifier.run(dense._crops(classifier, image, origins))).max())
        everywhere = float(np.abs(crop_loop(classifier, image, plain.output_stride)).max())
        if everywhere > 1.1 * sampled:
            break
    else:
        pytest.fail("no image of 20 has its largest score off the sampled crops")
    factor = 1 + 1e-4 * (everywhere / sampled) ** 0.5  # a change of the scores in between
    fcn = graphconv.compile_model(classifier.graph, f"shape-inference,fc-to-conv,scale-scores{{factor={factor}}}")
    report = verify(classifier, fcn, image)
    assert report.conversion_tolerance == pytest.approx(1e-4 * sampled) and report.conversion_scale == sampled
    assert report.conversion_tolerance < report.conversion_max_abs <= report.tolerance  # the in-between case
    assert [change.name for change in report.pass_changes] == ["scale-scores"] and report.changed_by_plugins
    assert not report.conversion_exact and not report.passed  # verify's exit code: 1
    text = str(report)
    assert "result: FAIL: 'scale-scores' changed what the classifier computes" in text
    assert (f"max abs difference {report.conversion_max_abs:.3g} (tolerance {report.conversion_tolerance:.3g}: "
            f"1e-4 of the classifier's largest score on them, {sampled:.3g}): pass 'scale-scores'") in text
    assert f"tolerance {report.tolerance:.3g}: 1e-4 of it)" in text
    assert "(tolerances: 1e-4 of the largest score, unless tolerance=)" in text.splitlines()[0]


@pytest.mark.parametrize("asked", [dense.PYTHON_ASKED, dense.COMMAND_ASKED], ids=["python", "command"])
def test_verify_names_the_options_as_its_caller_sets_them(asked, write_spec, rng):
    """A notebook's report said "FAIL (--tolerance)", "--strict demands equality" and
    "run it on every crop: `graphconv run MODEL --image IMAGE --crops`": flags of a
    command it was not running. It names verify's keywords and crop_loop; the command's
    report (asked=COMMAND_ASKED) its flags."""
    classifier, fcn = models(write_spec, PADDED)
    other = dense.COMMAND_ASKED if asked is dense.PYTHON_ASKED else dense.PYTHON_ASKED
    image = random_input(rng, (1, 2, 36, 30))
    texts = [str(verify(classifier, fcn, image, asked=asked, where=None)),  # PASS, where padding reaches
             str(verify(classifier, fcn, image, strict=True, asked=asked, where=None)),
             str(verify(classifier, fcn, image, tolerance=0.0, asked=asked, where=None))]
    assert f"unless {asked.tolerance})" in texts[0] and f"({asked.strict} demands equality)" in texts[0]
    assert f"FAIL ({asked.strict}):" in texts[1]
    assert f"from {asked.tolerance})" in texts[2] and asked.on_yours in texts[2]
    for text in texts:
        assert other.tolerance not in text and other.strict not in text and other.on_yours not in text
    top = dense.TopClasses("the image given", 9, 9, np.ones(2, int), np.ones(2, int), 1.0, 0.5, 1.0, 9,
                           command=asked.crop_loop)
    assert f"`{asked.crop_loop}`" in "\n".join(top.lines())
    assert dense.TopClasses("x", 9, 9, np.ones(2, int), np.ones(2, int), 1.0, 0.5, 1.0, 9).command == \
        dense.PYTHON_ASKED.crop_loop


def test_a_tolerance_given_is_said_to_be_the_users(write_spec, rng):
    """With --tolerance 0.01 the first line read "(tolerance 0.01: 1e-4 of the largest
    score, 0.988, unless --tolerance)"."""
    classifier, fcn = models(write_spec, UNPADDED.replace("[2, 16, 16]", "[2, 14, 14]"))
    report = verify(classifier, fcn, random_input(rng, (1, 2, 30, 26)), tolerance=0.01)
    assert report.tolerance_given and report.tolerance == report.conversion_tolerance == 0.01 and report.passed
    lines = str(report).splitlines()
    assert lines[0].endswith("(tolerance 0.01, from tolerance=)") and "1e-4" not in str(report)
    assert "(tolerance 0.01): exact" in lines[1] and lines[2].endswith("; tolerance 0.01)")
    assert not verify(classifier, fcn, random_input(rng, (1, 2, 30, 26))).tolerance_given


def test_a_tolerance_of_zero_fails_on_rounding_and_says_it_is_rounding_not_a_bug(write_spec, rng):
    """--tolerance 0 (asking for bit-for-bit equality) said "the conversion is wrong (a
    graphconv bug in a built-in pass)" and "this difference is a bug" of float32 rounding:
    the crop loop and the sliding network sum the same products in other orders."""
    classifier, fcn = models(write_spec, UNPADDED.replace("[2, 16, 16]", "[2, 14, 14]"))
    image = random_input(rng, (1, 2, 30, 26))
    report = verify(classifier, fcn, image, tolerance=0.0)
    assert 0 < report.max_abs <= dense.ROUNDING * report.scale and not report.passed  # exit 1: not bit for bit
    text = str(report)
    assert "bug" not in text and "wrong" not in text, text
    assert "result: FAIL (tolerance=):" in text and "float32 rounding only" in text and "not bit for bit" in text
    assert verify(classifier, fcn, image, tolerance=1e-12 * report.scale).sliding_rounding  # any tolerance under it
    assert not verify(classifier, fcn, image).sliding_rounding  # agreeing: nothing to explain


# ---- verify --image: the check on a real image's pixels, and what it does to the top class ---------------

GREY_PADDED = PADDED.replace("[2, 16, 16]", "[1, 16, 16]")


def _cli(*args) -> int:
    from graphconv.cli import main
    return main([str(a) for a in args])


def _top_changed(dense_map: np.ndarray, crops_map: np.ndarray) -> int:
    return int((dense_map.argmax(axis=1) != crops_map.argmax(axis=1)).sum())


def _reported_change(out: str) -> tuple[int, int]:
    import re
    found = re.search(r"the top class differs between the dense map and the crop loop in (\d+) of (\d+) cells", out)
    assert found, out
    return int(found[1]), int(found[2])


def _verify_image(capsys, *args) -> str:
    """verify --image on a padded network of random weights, whose top class often changes
    on random pixels: its output, having checked the exit status is the verdict's (1 where
    more than 1% of the cells change their top class, else 0)."""
    status = _cli("verify", *args)
    out = capsys.readouterr().out
    changed, cells = _reported_change(out)
    fails = changed > TOP_CLASS_SHARE * cells
    assert status == int(fails), out
    assert out.splitlines()[-1].startswith("result: FAIL (top class)" if fails else "result: PASS"), out
    return out


def _grey_picture(path, rng, shape):
    from PIL import Image
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def test_verify_on_an_image_reports_the_top_class_changes_run_s_maps_show(write_spec, tmp_path, rng, capsys):
    """The cells verify --image counts as changing their top class are those where `run`
    (dense) and `run --crops` disagree on the same image."""
    pytest.importorskip("PIL")
    spec, png = write_spec(GREY_PADDED), _grey_picture(tmp_path / "page.png", rng, (40, 36))
    out = _verify_image(capsys, spec, "--image", png)
    assert _cli("compile", spec, "-o", tmp_path / "fcn") == 0
    assert _cli("run", tmp_path / "fcn", "--image", png, "--output", tmp_path / "dense.npy") == 0
    assert _cli("run", spec, "--image", png, "--crops", "--output", tmp_path / "crops.npy") == 0
    dense_map, crops_map = np.load(tmp_path / "dense.npy"), np.load(tmp_path / "crops.npy")
    assert _reported_change(out) == (_top_changed(dense_map, crops_map), crops_map[0, 0].size)
    assert "cells per top class, crop loop vs dense map: " in out
    assert "of level 0, 13x11 cells" in out  # the whole page: smaller than the default region


def test_verify_on_a_region_of_a_tiff_sees_the_cells_as_run_computes_them_on_the_whole_image(write_spec, tmp_path,
                                                                                               rng, capsys):
    """A region's dense cells are computed with the pixels around it, as run's whole-image
    pass computes them (not padded at the region's edge), on run's own grid."""
    tifffile = pytest.importorskip("tifffile")
    spec, tif = write_spec(GREY_PADDED), tmp_path / "slide.tif"
    tifffile.imwrite(tif, rng.integers(0, 256, (70, 64), dtype=np.uint8))
    out = _verify_image(capsys, spec, "--image", tif, "--region", 11, 9, 30, 26)
    assert _cli("compile", spec, "-o", tmp_path / "fcn") == 0
    assert _cli("run", tmp_path / "fcn", "--image", tif, "--output", tmp_path / "dense.npy") == 0
    assert _cli("run", spec, "--image", tif, "--crops", "--output", tmp_path / "crops.npy") == 0
    # the region (rows 11-40, columns 9-34) grows to whole cells of run's grid (stride 2) that cover it: rows 10-41,
    # columns 8-35, 9x7 cells from cell (5, 4) (ranges name their last row and column)
    assert "rows 10-41, columns 8-35 of level 0, 9x7 cells" in out
    assert "WARNING" in out or "other parts of the image may differ: --region picks another" in out  # it pads
    block = np.s_[:, :, 5:14, 4:11]
    dense_map, crops_map = np.load(tmp_path / "dense.npy")[block], np.load(tmp_path / "crops.npy")[block]
    assert _reported_change(out) == (_top_changed(dense_map, crops_map), 63)
    assert f"up to {np.abs(dense_map - crops_map).max():.3g}" in out
    # a 3x3 spot in the bottom right corner, smaller than a crop: run's last cell, whose 16x16 crop holds it
    assert _cli("verify", spec, "--image", tif, "--region", 60, 50, 3, 3) == 0
    out = capsys.readouterr().out
    assert "rows 54-69, columns 48-63 of level 0, 1x1 cells" in out
    block = np.s_[:, :, 27:28, 24:25]
    dense_map, crops_map = np.load(tmp_path / "dense.npy")[block], np.load(tmp_path / "crops.npy")[block]
    assert f"up to {np.abs(dense_map - crops_map).max():.3g}" in out


def test_verify_on_an_image_of_an_unpadded_network_is_exact(write_spec, tmp_path, rng, capsys):
    pytest.importorskip("PIL")
    spec, png = write_spec(GREY_PADDED.replace(", padding: 1", "")), _grey_picture(tmp_path / "p.png", rng, (40, 36))
    assert _cli("verify", spec, "--image", png, "--strict") == 0
    out = capsys.readouterr().out
    assert "no layer pads" in out and "in 0 of " in out and "WARNING" not in out
    assert "the top class agrees in every cell of this region (and in the rest of the image: nothing in " \
           "this network makes a crop differ" in out and "other parts of the image may differ" not in out


def test_a_top_class_changing_in_many_cells_fails_with_a_warning_pointing_at_crops(write_spec, rng):
    """A padding-only difference that changes the top class of more than 1% of the cells
    of the user's image fails (scripts read the verdict and the exit status), and the
    warning says what to run instead and what it costs; random pixels cannot say this."""
    classifier, fcn = models(write_spec, GREY_PADDED)
    x = random_input(rng, (1, 1, 30, 30))
    expected = crop_loop(classifier, x, fcn.output_stride)
    flipped = np.roll(expected, 1, axis=1)  # every cell's top class moved
    report = verify(classifier, fcn, x, dense=flipped, where="here", image_crops=1000,
                    command="graphconv run net.yaml --image s.tif --crops")
    text = str(report)
    assert report.top.changes_answers and report.top.share == 1.0
    assert "WARNING: on this image the dense map's top class is not the classifier's in 100.0% of the cells" in text
    assert "`graphconv run net.yaml --image s.tif --crops` (the crop loop took" in text
    assert "for the 1000 crops of the whole image" in text
    assert not report.passed and text.splitlines()[-1].startswith("result: FAIL (top class): the conversion is exact")
    assert "changes the top class of 100.0% of the cells (more than 1%)" in text and "see the WARNING above" in text
    random_pixels = verify(classifier, fcn, x, dense=flipped, where=None, asked=dense.COMMAND_ASKED)  # --input-size
    assert random_pixels.passed and "WARNING" not in str(random_pixels)
    assert "verify measures with --image IMAGE" in str(random_pixels)
    given = str(verify(classifier, fcn, x))  # an image from Python: not called random pixels, nor a region
    assert "WARNING" in given and "random pixels" not in given and "on your image (the image given)" in given
    assert "--region" not in given


@pytest.mark.parametrize("head, cut, called", [
    ("  - {name: fc, op: fc, out_features: 3}\n  - {name: p, op: sigmoid}\n", 0.5, "its probability >= 0.5"),
    ("  - {name: fc, op: fc, out_features: 1}\n", 0.0, "its score, a logit >= 0"),
])
def test_a_class_call_flipping_in_many_cells_fails_a_model_of_independent_findings(write_spec, rng, head, cut,
                                                                                    called):
    """A model ending in a sigmoid (findings on an X-ray: several can hold, or none) or
    giving one score is answered by each class's call, not by its top class: the top
    class of independent findings said 'differs in 0 cells, PASS' where one finding's
    call at 0.5 flipped in most cells, and a one-score model's top class cannot change."""
    from graphconv.dense import decision_cut

    classifier, fcn = models(write_spec, GREY_PADDED.replace("  - {name: fc, op: fc, out_features: 3}\n", head))
    x = random_input(rng, (1, 1, 30, 30))
    expected = crop_loop(classifier, x, fcn.output_stride)
    assert decision_cut(classifier.graph, expected.shape[1]) == cut
    last = expected.shape[1] - 1
    flipped = expected.copy()
    flipped[:, last] = np.where(expected[:, last] >= cut, cut - 1e-3, cut + 1e-3)  # called the other way, by a hair
    report = verify(classifier, fcn, x, dense=flipped, where="here")
    text = str(report)
    assert report.top.cut == cut and report.top.changes_answers and report.top.share == 1.0
    assert f"on your image (here): a class's call ({called}) differs between the dense map and the crop loop in " \
           "64 of 64 cells" in text
    assert "WARNING: on this image the dense map's calls are not the classifier's in 100.0% of the cells" in text
    assert not report.passed and text.splitlines()[-1].startswith("result: FAIL (calls): the conversion is exact, "
                                                                  f"but on this image padding changes some class's "
                                                                  f"call ({called}) in 100.0% of the cells")
    crop_calls, dense_calls = (int((m[:, last] >= cut).sum()) for m in (expected, flipped))
    assert f"class {last} {crop_calls} vs {dense_calls}" in text and crop_calls + dense_calls == 64
    kept = verify(classifier, fcn, x, dense=np.where(expected >= cut, np.maximum(expected, cut) + 1e-4,
                                                     np.minimum(expected, cut) - 1e-4).astype(np.float32), where="here")
    assert kept.top.changed == 0 and "every class's call agrees in every cell" in str(kept)


def test_the_crop_loop_reports_its_progress(write_spec, rng):
    classifier, fcn = models(write_spec, GREY_PADDED)
    heard = []
    crop_loop(classifier, random_input(rng, (1, 1, 30, 30)), 2, progress=lambda done, total: heard.append((done, total)))
    assert heard and heard[-1] == (64, 64) and [d for d, _ in heard] == sorted(d for d, _ in heard)


@pytest.mark.parametrize("args, message", [
    (["--image", "nowhere.png"], "nowhere.png"),
    (["--image", "IMG", "--region", 60, 0, 20, 20], "--region 60 0 20 20 reaches outside the image, which is 40x36"),
    (["--image", "IMG", "--seed", 3], "--batch and --seed make random pixels"),
    (["--input-size", 40, 40, "--region", 0, 0, 20, 20], "say which pixels of an --image to check"),
])
def test_verify_image_errors_exit_2_with_one_message(write_spec, tmp_path, rng, capsys, args, message):
    pytest.importorskip("PIL")
    png = _grey_picture(tmp_path / "p.png", rng, (40, 36))
    code = _cli("verify", write_spec(GREY_PADDED), *[png if a == "IMG" else a for a in args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and err.count("\n") == 1, err


def test_the_crop_loop_s_cost_keeps_two_or_three_figures(write_spec, rng):
    """A small network's crop 'took 0 ms a crop here, so about 0 s' for the whole image."""
    from graphconv.dense import TopClasses, _duration

    assert [_duration(t) for t in (0.00042, 0.0123, 3.74, 47.2, 600, 9000)] == [
        "0.42 ms", "12 ms", "3.7 s", "47 s", "10 min", "2.5 h"]
    top = TopClasses("here", 50, 100, np.ones(2, int), np.ones(2, int), 1.0, 0.5, 0.0123, 40, image_crops=500)
    assert "took 0.31 ms a crop here, so about 154 ms for the 500 crops" in top._cost()


def _scene_with_no_data(path, tifffile, rng):
    """A 1-band 16-bit raster whose left 40 columns are 0 (GDAL no-data 0)."""
    scene = rng.integers(200, 4000, (60, 90), dtype=np.uint16)
    scene[:, :40] = 0
    tifffile.imwrite(path, scene, extratags=[(42113, 2, 2, "0", True)])
    return path


def test_verify_on_an_image_leaves_out_the_cells_run_leaves_out_for_no_data(write_spec, tmp_path, rng, capsys):
    """A region wholly over no-data compared the network on zeros and said PASS; now the
    cells run leaves out are left out of the comparison and counted, a region of no-data
    alone is refused with one inside the data, the default region is the data's, and
    verify takes run's --nodata and --max-nodata."""
    tifffile = pytest.importorskip("tifffile")
    spec = write_spec(GREY_PADDED.replace("input: {shape: [1, 16, 16]}",
                                          "input: {shape: [1, 16, 16]}\npreprocess: {values: stored, scale: 0.001}"))
    tif = _scene_with_no_data(tmp_path / "scene.tif", tifffile, rng)
    assert _cli("verify", spec, "--image", tif, "--region", 0, 0, 40, 40) == 2
    err = capsys.readouterr().err
    assert "every cell of the region (rows 0-39, columns 0-39 of level 0, 13x13 cells) is left out by run for " \
           "no-data" in err and "the region holds no data to compare" in err
    assert "the cells run computes lie in rows 0-59, columns 32-89 of level 0: give a --region inside them" in err
    out = _verify_image(capsys, spec, "--image", tif, "--region", 0, 20, 40, 50)
    # cells 0..17 across: crop j spans columns 20 + 2j .. 36 + 2j, no-data (columns < 40) in more than half of it
    # for 2j < 12 - 2: j < 6; 6 of 18 columns, 13 rows
    assert "78 of the region's 234 cells are left out of the comparison, as run leaves them out: more than 50% " \
           "of each one's crop is no-data, the image's no-data value 0" in out
    assert _reported_change(out)[1] == 156
    out = _verify_image(capsys, spec, "--image", tif, "--region", 0, 20, 40, 50, "--max-nodata", 0)
    assert "130 of the region's 234 cells are left out" in out  # every crop reaching columns < 40: j < 10
    assert "left out" not in _verify_image(capsys, spec, "--image", tif, "--region", 0, 20, 40, 50, "--compute-nodata")
    out = _verify_image(capsys, spec, "--image", tif)  # the default: around the centre of the data's cells
    assert "around the centre of the cells run computes (the data)" in out and "left out" not in out
    tifffile.imwrite(tmp_path / "plain.tif", tifffile.imread(tif))
    assert _cli("verify", spec, "--image", tmp_path / "plain.tif", "--region", 0, 0, 40, 40, "--nodata", 0) == 2
    assert "the region holds no data to compare" in capsys.readouterr().err
    assert _cli("verify", spec, "--image", tmp_path / "plain.tif", "--region", 0, 0, 40, 40, "--max-nodata", .2) in (0, 1)
    err = capsys.readouterr().err
    assert "note: --max-nodata 0.2 has nothing to act on" in err and "--nodata VALUE" in err


def test_verify_on_an_image_gives_run_s_notes_on_how_it_is_read(write_spec, tmp_path, rng, capsys):
    """run on an ONNX file that states no preprocess says its pixels go in as they are,
    and on an RGB picture for a grey model that it is fed luma; verify --image said
    neither on the same image."""
    pytest.importorskip("PIL")
    pytest.importorskip("onnx")
    from PIL import Image

    spec = write_spec(GREY_PADDED)
    assert _cli("export", spec, "-o", tmp_path / "net.onnx") == 0
    Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    capsys.readouterr()
    assert _cli("verify", tmp_path / "net.onnx", "--image", tmp_path / "rgb.png") in (0, 1)  # its top class: _verify_image
    err = capsys.readouterr().err
    assert err.count("states no preprocess (an ONNX file has no place for one), so the pixels go in as they are") == 1
    assert err.count("note: the image is RGB: converted to grey for the 1-channel model") == 1


def test_the_readme_names_ceil_mode_pools_beside_padding_as_what_breaks_exactness(write_spec, rng):
    """The intro said the dense map was 'Equal exactly for a network that does not pad',
    but a ceil_mode pool with no padding anywhere differs too (verify reports it)."""
    root = Path(__file__).resolve().parent.parent  # the README's sections moved to docs/
    readme, exactness, cli = (root / "README.md").read_text(), (root / "docs" / "exactness.md").read_text(), \
        (root / "docs" / "cli.md").read_text()
    every_page = "\n".join([readme] + [page.read_text() for page in sorted((root / "docs").glob("*.md"))])
    assert "Equal exactly for a network that does not pad" not in every_page
    assert "**Exact** for a network that neither pads nor pools in `ceil_mode`." in readme
    assert "**Exact** for a network that neither pads nor pools in `ceil_mode`." in exactness
    assert "equal without padding and ceil_mode pools" in cli
    assert "a tiled run (and an `--images`\n  batch) says" not in every_page
    classifier, fcn = models(write_spec, CEIL)
    report = verify(classifier, fcn, random_input(rng, (1, 1, 27, 27)))
    assert not report.exact_by_construction and report.padded_layers == ["pool1"]


def test_verify_sums_up_many_hanging_ceil_mode_pools_without_calling_them_padded(write_spec, rng):
    """Seven 2x2/2 ceil_mode pools over odd sizes (129, 65, ..., 3): the report lists the
    first and last and sums up the rest, which it called "more padded layer(s)"."""
    pools = "".join(f"  - {{name: p{i}, op: maxpool, kernel_size: 2, stride: 2, ceil_mode: true}}\n" for i in range(7))
    spec = f"name: many\ninput: {{shape: [1, 129, 129]}}\nlayers:\n{pools}  - {{name: fc, op: fc, out_features: 2}}\n"
    classifier, fcn = models(write_spec, spec)
    text = str(verify(classifier, fcn, random_input(rng, (1, 1, 129 + 128, 129))))
    assert "more ceil_mode layer" in text and "between them" in text and "pad" not in text.lower(), text


@pytest.mark.parametrize("strict", [False, True])
def test_verify_of_a_network_that_only_hangs_ceil_mode_windows_never_says_it_pads(write_spec, rng, strict):
    """Its report said "the 196 clear of padding agree", "only where padding reaches" and
    "it pads only at the image's border" of a network whose spec pads nowhere."""
    classifier, fcn = models(write_spec, CEIL)
    report = verify(classifier, fcn, random_input(rng, (1, 1, 27, 27)), strict=strict, where=None)  # random pixels
    text = str(report)
    assert "pad" not in text.lower(), text
    assert "the overhang of ceil_mode windows" in text and "its windows hang only at the image's border" in text
    assert report.passed != strict


def test_verify_takes_either_model_as_a_path_or_graph_and_refuses_two_unrelated_ones(write_spec, rng):
    """A spec path or a Graph (which compile_model takes) gave AttributeError: 'str'
    object has no attribute 'crop_shape'; two unrelated models a numpy shape error."""
    spec = write_spec(UNPADDED.replace("[2, 16, 16]", "[2, 14, 14]"))
    fcn = graphconv.compile_model(spec)
    x = random_input(rng, (1, 2, 30, 26))
    assert verify(spec, fcn.graph, x).passed
    with pytest.raises(graphconv.GraphconvError, match=r"verify compares a classifier with the network compiled "
                                                       r"from it, but their crops differ \(lenet: \(1, 32, 32\)"):
        verify(SPECS / "lenet.yaml", fcn, x)


def test_verify_from_python_refuses_a_segmentation_network_as_the_cli_does(write_spec, rng):
    """It came out as numpy's 'all input arrays must have the same shape'."""
    seg = graphconv.load(write_spec("name: seg\ntask: segmentation\ninput: {shape: [2, 8, 8]}\nlayers:\n"
                                    "  - {name: c1, op: conv, out_channels: 3, kernel_size: 3, padding: 1}\n"))
    with pytest.raises(graphconv.GraphconvError, match="a segmentation network is dense already"):
        verify(seg, seg, random_input(rng, (1, 2, 30, 26)))


NORMALISED = """
name: normalised
input: {name: data, shape: [3, 12, 12]}
preprocess: {scale: 0.00392157, mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 3}
  - {name: r1, op: relu}
  - {name: p1, op: maxpool, kernel_size: 2}
  - {name: fc, op: fc, out_features: 3}
"""


def _fold_normalisation(graph, keep_preprocess: bool):
    """What docs/writing-passes.md suggests a user write: the mean and std moved into the
    first conv's weights (and, done right, out of the preprocess)."""
    conv, pre = graph.input.users[0], graph.meta["preprocess"]
    mean, std = (np.asarray(pre[key], np.float64)[None, :, None, None] for key in ("mean", "std"))
    weight = conv.weights["weight"] / std
    bias = conv.weights["bias"] - (weight * mean).sum(axis=(1, 2, 3))
    graph.set_weights(conv, weight=weight.astype(np.float32), bias=bias.astype(np.float32))
    if not keep_preprocess:
        graph.meta["preprocess"] = {"scale": pre["scale"]}
    return True


@pytest.mark.parametrize("done_right", [True, False])
def test_verify_gives_a_model_whose_pass_folded_the_normalisation_the_same_pixels(write_spec, rng, done_right):
    """A pass folding the preprocess into the first conv failed verify (exit 1) when done
    right: each model got the same tensor, not the same pixels. Done wrong (the
    preprocess kept, so images are normalised twice) it still fails."""
    from graphconv.pass_manager import register_pass

    name = f"fold-normalisation-{'right' if done_right else 'twice'}"
    register_pass(name, "test")(lambda graph: _fold_normalisation(graph, keep_preprocess=not done_right))
    spec = write_spec(NORMALISED)
    classifier = graphconv.load(spec)
    compiled = graphconv.compile_model(spec, f"shape-inference,{name},default")
    report = verify(classifier, compiled, random_input(rng, (1, 3, 30, 34)), where=None)
    assert report.passed == done_right, str(report)
    assert ("a pass moved it into the network, so each is given the same pixels" in str(report)) == done_right
    if done_right:  # and a run on an image, where each reads it by its own preprocess, agrees
        pixels = rng.integers(0, 256, (3, 30, 34)).astype(np.float32)
        from graphconv.images import preprocess
        np.testing.assert_allclose(compiled.run(preprocess(pixels, compiled.preprocess)[None]),
                                   graphconv.compile_model(spec).run(preprocess(pixels, classifier.preprocess)[None]),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("set_on", ["compiled", "classifier"])
def test_verify_of_a_preprocess_set_on_one_model_alone_checks_the_networks(write_spec, rng, set_on):
    """In a notebook, `fcn.preprocess = {...}` (for run_image) on the compiled model and
    not the classifier loaded beside it: verify gave each the same pixels and called a
    correct conversion 'wrong (a bug)', blaming a pass that never ran."""
    spec = write_spec(NORMALISED.replace("preprocess: {scale: 0.00392157, mean: [0.5, 0.4, 0.3], "
                                         "std: [0.2, 0.25, 0.3]}\n", ""))
    classifier, compiled = graphconv.load(spec), graphconv.compile_model(spec)
    block = {"scale": 1 / 255, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    if set_on == "compiled":
        compiled.preprocess = block
    else:
        classifier.preprocess = block
    report = verify(classifier, compiled, random_input(rng, (1, 3, 30, 34)), where=None)
    assert report.passed and report.conversion_exact, str(report)
    assert "no pass moved it into the network" in str(report) and "(classifier.preprocess = " in str(report)
