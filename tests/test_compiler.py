"""The default pipeline on a ResNet-style classifier, end to end: batchnorms folded, the
global pool made a window, the flatten dropped, the fc made a conv; at the crop the
output is the classifier's, and on a larger image the map is what PyTorch computes for
the same converted network, built from the classifier's own (unfolded) weights."""
import os
import warnings

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

import graphconv
from graphconv.model import as_map
from graphconv.receptive import receptive_fields
from graphconv.shapes import infer_shapes
from graphconv.torch_bridge import torch
from conftest import SPECS, random_input
from nets import GROUP_NORMED

# A stem (conv, batchnorm, ReLU, max pool), a basic block and a downsampling block with
# a projection shortcut, a ReLU6 (clip), then global pool, flatten and fc: ResNet-18's
# shape, at a 32 x 28 crop that the global pool sees as a 4 x 4 map (total stride 8).
RESNET = """
name: tinyresnet
input: {name: data, shape: [3, 32, 28]}
layers:
  - {name: conv1, op: conv, out_channels: 8, kernel_size: 3, stride: 2, padding: 1, bias: false}
  - {name: bn1, op: batchnorm}
  - {name: relu1, op: relu}
  - {name: pool1, op: maxpool, kernel_size: 3, stride: 2, padding: 1}
  - {name: b1_conv1, op: conv, out_channels: 8, kernel_size: 3, padding: 1, bias: false}
  - {name: b1_bn1, op: batchnorm}
  - {name: b1_relu, op: relu}
  - {name: b1_conv2, op: conv, out_channels: 8, kernel_size: 3, padding: 1, bias: false}
  - {name: b1_bn2, op: batchnorm}
  - {name: b1_add, op: add, inputs: [b1_bn2, pool1]}
  - {name: b1_out, op: relu}
  - {name: b2_conv1, op: conv, out_channels: 16, kernel_size: 3, stride: 2, padding: 1, bias: false}
  - {name: b2_bn1, op: batchnorm}
  - {name: b2_relu, op: clip, min: 0, max: 6}
  - {name: b2_conv2, op: conv, out_channels: 16, kernel_size: 3, padding: 1, bias: false}
  - {name: b2_bn2, op: batchnorm, eps: 0.001}
  - {name: b2_down, op: conv, out_channels: 16, kernel_size: 1, stride: 2, bias: false, inputs: [b1_out]}
  - {name: b2_down_bn, op: batchnorm}
  - {name: b2_add, op: add, inputs: [b2_bn2, b2_down_bn]}
  - {name: b2_out, op: relu}
  - {name: gap, op: globalavgpool}
  - {name: flat, op: flatten}
  - {name: fc, op: fc, out_features: 10}
"""
torch_only = pytest.mark.skipif(torch is None, reason="torch not installed")


def torch_converted(graph, x: np.ndarray) -> np.ndarray:
    """The classifier as PyTorch would run it converted by hand: every layer by its
    PyTorch equivalent (batchnorms with their statistics, unfolded), but the global pool
    as avg_pool2d over its crop-size window at stride 1, no flatten, and the fc as a conv
    with its weight reshaped to the crop's C x H x W."""
    import torch.nn.functional as F
    crop = infer_shapes(graph)
    values = {graph.input.name: torch.from_numpy(x)}
    with torch.no_grad():
        for node in graph.layers():
            args = [values[i.name] for i in node.inputs]
            weights = {k: torch.tensor(v) for k, v in node.weights.items()}  # a copy: the IR's are read-only
            in_shape = crop[node.inputs[0].name]
            if node.op == "globalavgpool":
                values[node.name] = F.avg_pool2d(args[0], in_shape[1:], stride=1)
            elif node.op == "flatten":
                values[node.name] = args[0]
            elif node.op == "fc":
                weight = weights["weight"].reshape(node.params["out_features"], *in_shape)
                values[node.name] = F.conv2d(args[0], weight, weights.get("bias"))
            else:
                values[node.name] = node.opdef.torch(node.params, weights, args)
    return values[graph.output.name].numpy()


def test_default_pipeline_converts_a_resnet(write_spec):
    compiled = graphconv.compile_model(write_spec(RESNET)).graph
    ops = [n.op for n in compiled.layers()]
    assert "batchnorm" not in ops and "globalavgpool" not in ops and "flatten" not in ops and "fc" not in ops
    assert compiled.node("gap").op == "avgpool" and compiled.node("gap").params["kernel_size"] == (4, 4)
    assert compiled.node("conv1").params["activation"] == "relu"  # conv -> bn -> relu is one conv
    assert compiled.node("b2_conv1").params["activation"] == "relu6"  # and conv -> bn -> clip(0, 6)
    # from 23: six batchnorms, the flatten, the ReLUs and the ReLU6, both adds and the ReLUs after them
    assert len(ops) == 9
    assert sum(len(n.inputs) == 2 for n in compiled.find("conv")) == 2  # the adds, in the convs


def test_at_the_crop_the_output_is_the_classifiers(write_spec, rng):
    classifier = graphconv.load(write_spec(RESNET))
    fcn = graphconv.compile_model(classifier.graph)
    x = random_input(rng, (4, 3, 32, 28))
    want = classifier.run(x)
    assert want.shape == (4, 10)  # a classifier's vectors; the converted network's 1x1 maps
    np.testing.assert_allclose(fcn.run(x), as_map(want), rtol=1e-4, atol=1e-5)


@torch_only
@pytest.mark.parametrize("size", [(32, 28), (40, 28), (77, 64), (128, 96)])
def test_on_a_larger_image_the_map_is_pytorchs(write_spec, rng, size):
    classifier = graphconv.load(write_spec(RESNET))
    fcn = graphconv.compile_model(classifier.graph)
    x = random_input(rng, (2, 3, *size))
    want = torch_converted(classifier.graph, x)
    rows, cols = fcn.map_size(*size)
    assert want.shape[2] >= rows and want.shape[3] >= cols
    got = fcn.run(x)
    assert got.shape == (2, 10, rows, cols)
    np.testing.assert_allclose(got, want[:, :, :rows, :cols], rtol=1e-4, atol=1e-4)
    assert fcn.output_stride == (8, 8)
    field = receptive_fields(fcn.graph)[fcn.graph.output.name]
    assert field.stride == (8, 8) and field.size[0] >= 32


STRIDE_MIX = """
name: stridemix
input: {name: data, shape: [3, 16, 16]}
layers:
  - {name: a, op: conv, out_channels: 4, kernel_size: 2, stride: 2}
  - {name: b, op: conv, out_channels: 4, kernel_size: 9, inputs: [data]}
  - {name: s, op: add, inputs: [a, b]}
  - {name: fc, op: fc, out_features: 3}
"""


def test_a_classifier_whose_branches_meet_at_mixed_strides_runs_on_its_crop_but_does_not_compile(write_spec, rng):
    """Its branches reach the add at strides 2 and 1 but equal 8x8 maps at the crop: the
    classifier is legal (run and inspect worked out a field and failed after running),
    and compile_model accepted it and then failed on a larger image. Compiling must be
    refused naming the add (not the conv fuse-conv-add merged it into), and why."""
    from graphconv.inspect_report import inspect_report

    classifier = graphconv.load(write_spec(STRIDE_MIX))
    out = classifier.run(random_input(rng, (1, 3, 16, 16)))
    assert out.shape == (1, 3) and classifier.field.size == (16, 16)
    report = inspect_report(classifier)
    assert "layer 's': merges maps of different strides ('a' at stride 2x2, 'b' at stride 1x1)" in report
    with pytest.raises(graphconv.GraphconvError, match=r"net.yaml:6: layer 's': merges maps of different strides "
                                                          r"\('a' at stride 2x2.*cannot slide"):
        graphconv.compile_model(classifier.graph)
    graphconv.compile_model(classifier.graph, "shape-inference")  # still a classifier: nothing slides


def test_a_map_classifier_normalising_its_whole_map_is_refused_compiling_and_noted_running_larger(write_spec, rng):
    """A classifier that needs no pass to slide (no fc, no global pool) with an InstanceNorm
    compiled, and its map (the whole image's normalisation) was placed as crops': every
    cell differed from the classifier on its crop (MONAI's UNet imported without --task
    segmentation, 21% of top classes). Compiling is refused naming the norm, as for a
    classifier with a head; run on a larger image says what the map is; as a segmentation
    network it compiles and runs on the whole image."""
    classifier = graphconv.load(write_spec(GROUP_NORMED))
    with pytest.raises(graphconv.GraphconvError, match=r"net.yaml:5: layer 'gn': groupnorm \(a GroupNorm or "
                                                          r"InstanceNorm\).*--crops.*--task segmentation"):
        graphconv.compile_model(classifier.graph)
    crop = random_input(rng, (1, 3, 12, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*compiling kernels")  # a cold cache's, before or after the call
        classifier.run(crop)  # its own crop: the classifier, nothing to say
    with pytest.warns(graphconv.GraphconvWarning, match=r"grouped's groupnorm 'gn' .*its map of this 20x24 image is "
                                                        r"the network run on the whole image, not the classifier"):
        classifier.run(random_input(rng, (1, 3, 20, 24)))
    segmenter = graphconv.load(write_spec(GROUP_NORMED + "task: segmentation\n"))
    assert not segmenter.size_notes(20, 24)
    x = random_input(rng, (1, 3, 21, 25))
    np.testing.assert_array_equal(graphconv.compile_model(segmenter.graph).run(x), segmenter.run(x))


@pytest.mark.parametrize("stride", [1, 2])
def test_an_output_stride_given_twice_is_refused(stride):
    """--output-stride beside an output-stride pass in --passes ran the pass twice: 'output
    stride 2 does not divide the network's total stride 1x1', or the same stride twice."""
    from graphconv.compiler import build_pipeline

    with pytest.raises(graphconv.GraphconvError, match=r"--output-stride 1 and 'output-stride\{stride=" + str(stride)
                       + r"\}' in --passes both ask for an output stride: give one of them"):
        build_pipeline(f"fc-to-conv,output-stride{{stride={stride}}}", output_stride=1)
    assert build_pipeline("fc-to-conv", output_stride=2)[1] == ("output-stride", {"stride": 2, "method": "auto"})


STRIDE_MIX_POOLED = """
name: stridemix_pooled
input: {name: data, shape: [3, 16, 16]}
layers:
  - {name: a1, op: conv, out_channels: 4, kernel_size: 2, stride: 2}
  - {name: a, op: conv, out_channels: 4, kernel_size: 2, stride: 2}
  - {name: b, op: conv, out_channels: 4, kernel_size: 10, stride: 2, inputs: [data]}
  - {name: s, op: add, inputs: [a, b]}
  - {name: pool, op: maxpool, kernel_size: 2}
  - {name: fc, op: fc, out_features: 3}
"""


@pytest.mark.parametrize("spec,stride", [(STRIDE_MIX, 1), (STRIDE_MIX_POOLED, 4)])
def test_a_mixed_stride_classifier_is_run_crop_by_crop_at_its_finest_stride(write_spec, rng, spec, stride):
    """The error said "run it on every crop with `run --crops`", whose default stride,
    the model's, was the crop (16 crops 16 pixels apart on a 64x64 image). It names the
    stride now, the finest the branches sample the image at (STRIDE_MIX_POOLED: 'a' at 4,
    'b' at 2, then a pool of stride 2: 4), and that is the model's stride, which a bare
    `--crops` takes."""
    from graphconv.dense import crop_loop
    from graphconv.tiling import CropGrid

    classifier = graphconv.load(write_spec(spec))
    assert classifier.field.size == (16, 16) and classifier.output_stride == (stride, stride)
    assert classifier.map_size(64, 64) == ((64 - 16) // stride + 1,) * 2
    with pytest.raises(graphconv.GraphconvError) as err:
        graphconv.compile_model(classifier.graph)
    assert f"run it on every crop with `run --crops {stride}` instead (crops {stride} pixel{'s' if stride > 1 else ''} apart" in str(err.value)
    image = random_input(rng, (1, 3, 24, 24))
    grid = CropGrid(classifier, classifier.output_stride)
    assert grid.map_hw((64, 64)) == classifier.map_size(64, 64)
    scores = crop_loop(classifier, image, classifier.output_stride)
    assert scores.shape == (1, 3) + classifier.map_size(24, 24)
    top, left = stride, 2 * stride  # cell (1, 2) is the classifier on the crop there
    np.testing.assert_allclose(scores[:, :, 1, 2], classifier.run(image[:, :, top:top + 16, left:left + 16]),
                               rtol=1e-5, atol=1e-6)


def test_a_model_compiled_again_keeps_the_passes_that_made_it_on_record(tmp_path):
    """A plugin's pass baked into the weights (a folded temperature) was dropped from the
    record when the folder was compiled again, to a finer stride say."""
    from conftest import ROOT

    graphconv.load_plugin(str(ROOT / "examples" / "my_passes.py"))
    first = graphconv.compile_model(SPECS / "lenet.yaml", "default,strip-softmax")
    first.save(tmp_path / "logits")
    again = graphconv.compile_model(tmp_path / "logits", output_stride=2)
    again.save(tmp_path / "finer")
    record = graphconv.load(tmp_path / "finer").graph.meta["compiled"]
    assert record["earlier_passes"] == [first.graph.meta["compiled"]["passes"]]
    assert record["earlier_passes"][0].endswith("strip-softmax") and "output-stride{stride=2" in record["passes"]


def test_compile_model_names_its_own_misspelt_keywords_and_a_method_without_a_stride():
    """A misspelt keyword was a TypeError from PassManager's constructor; a stride
    method without a stride (or a method that is none) was silently ignored."""
    spec = SPECS / "lenet.yaml"
    with pytest.raises(TypeError, match="compile_model got unexpected keyword argument.*'output_strid'"):
        graphconv.compile_model(spec, output_strid=2)
    with pytest.raises(graphconv.GraphconvError, match="'shift' says how to reach a finer output stride: give "
                                                       "output_stride"):
        graphconv.compile_model(spec, stride_method="shift")
    with pytest.raises(graphconv.GraphconvError, match="stride_method is one of auto, dilate, shift, got 'fast'"):
        graphconv.compile_model(spec, output_stride=2, stride_method="fast")


# ---- random networks: the core promise over shapes nobody wrote by hand --------------------

RANDOM_NETWORKS = int(os.environ.get("GRAPHCONV_RANDOM_NETWORKS", 25))  # CI's; 1000 each for a longer hunt
RANDOM_SETTINGS = settings(max_examples=RANDOM_NETWORKS, deadline=None, derandomize=True,
                           suppress_health_check=[HealthCheck.function_scoped_fixture])


def _side_after(side: int, kernel: int, stride: int, dilation: int = 1, padding: int = 0, ceil: bool = False) -> int:
    """A window's output side, as PyTorch counts it (a ceil_mode window must start inside
    the input or its left padding)."""
    span = side + 2 * padding - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    cells = -(-span // stride) + 1 if ceil else span // stride + 1
    if ceil and (cells - 1) * stride >= side + padding:
        cells -= 1
    return cells


def _smallest_crop(windows: list[tuple]) -> int:
    """The smallest side on which every window in turn leaves at least one cell."""
    for side in range(1, 1000):
        left = side
        for window in windows:
            left = _side_after(left, *window) if left >= 1 else 0
        if left >= 1:
            return side
    raise AssertionError(f"no crop fits {windows}")


@st.composite
def random_classifiers(draw, padded: bool = False) -> dict:
    """A spec document: 1-3 stages (a conv, maybe grouped, depthwise or dilated, maybe with
    a twin added or concatenated to it; an activation or batchnorm; maybe a max or
    average pool, whose stride may pass its window), then a head (fc layers, a global
    pool with or without a flatten), at a crop a few pixels over the smallest that runs.
    `padded`: the convs and pools pad, and pools may round up (ceil_mode)."""
    channels = in_channels = draw(st.integers(1, 3))
    layers, windows, last = [], [], "data"
    for stage in range(draw(st.integers(1, 3))):
        kernel, stride, dilation = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
        padding = draw(st.integers(0, kernel - 1)) if padded else 0
        groups = draw(st.sampled_from([g for g in (1, 2, 3, channels) if channels % g == 0]))
        out = groups * draw(st.integers(1, 3))
        conv = {"op": "conv", "out_channels": out, "kernel_size": kernel, "stride": stride, "dilation": dilation,
                "groups": groups, "padding": padding, "inputs": [last]}
        layers.append({"name": f"conv{stage}", **conv})
        windows.append((kernel, stride, dilation, padding))
        last = f"conv{stage}"
        merge = draw(st.sampled_from([None, "add", "concat"]))
        if merge:
            layers.append({"name": f"twin{stage}", **conv})
            layers.append({"name": f"{merge}{stage}", "op": merge, "inputs": [last, f"twin{stage}"]})
            last, out = f"{merge}{stage}", out * (2 if merge == "concat" else 1)
        activation = draw(st.sampled_from(["relu", "batchnorm", "sigmoid", "tanh"]))
        layers.append({"name": f"act{stage}", "op": activation, "inputs": [last]})
        last = f"act{stage}"
        if draw(st.booleans()):
            kernel, stride = draw(st.integers(2, 3)), draw(st.integers(1, 4))
            padding = draw(st.integers(0, kernel // 2)) if padded else 0
            ceil = draw(st.booleans()) if padded else False
            layers.append({"name": f"pool{stage}", "op": draw(st.sampled_from(["maxpool", "avgpool"])),
                           "kernel_size": kernel, "stride": stride, "padding": padding, "ceil_mode": ceil,
                           "inputs": [last]})
            windows.append((kernel, stride, 1, padding, ceil))
            last = f"pool{stage}"
        channels = out
    layers += _random_head(draw)
    side = _smallest_crop(windows)
    crop = [side + draw(st.integers(0, 3)), side + draw(st.integers(0, 3))]
    return {"name": "random", "input": {"name": "data", "shape": [in_channels, *crop]}, "layers": layers}


def _random_head(draw) -> list[dict]:
    head = draw(st.sampled_from(["fc", "global pool, flatten, fc", "global pool, 1x1 conv"]))
    if head == "global pool, 1x1 conv":
        return [{"name": "gap", "op": "globalavgpool"},
                {"name": "classes", "op": "conv", "out_channels": 3, "kernel_size": 1}]
    layers = [{"name": "gap", "op": "globalavgpool"}, {"name": "flat", "op": "flatten"}] if head != "fc" else []
    layers.append({"name": "fc1", "op": "fc", "out_features": draw(st.integers(2, 5))})
    if draw(st.booleans()):
        layers += [{"name": "fc_relu", "op": "relu"}, {"name": "fc2", "op": "fc", "out_features": 3}]
    return layers


def _random_image(data, classifier, stride, rng) -> np.ndarray:
    c, hc, wc = classifier.crop_shape
    extra = data.draw(st.tuples(st.integers(0, 3 * stride[0]), st.integers(0, 3 * stride[1])), "pixels over the crop")
    return rng.standard_normal((1, c, hc + extra[0], wc + extra[1])).astype(np.float32)


def _finer_stride(data, stride) -> int:
    return data.draw(st.sampled_from([s for s in range(1, min(stride) + 1) if stride[0] % s == 0 and
                                      stride[1] % s == 0]), "output stride")


def _random_tile(data, model, stride) -> tuple[int, int]:
    from graphconv.tiling import min_tile

    th, tw = min_tile(model)
    return data.draw(st.tuples(st.integers(th, th + 4 * stride[0]), st.integers(tw, tw + 4 * stride[1])), "tile")


@RANDOM_SETTINGS
@given(spec=random_classifiers(), data=st.data())
def test_a_random_unpadded_classifier_compiled_equals_it_on_every_crop_at_every_stride(spec, data, write_spec):
    """Dense, tiled, dilated and shift-and-stitched maps against the crop loop (a 1000-
    example hunt over each of these two tests found nothing; CI runs a fixed few)."""
    from graphconv.dense import crop_loop
    from graphconv.tiling import run_tiled

    classifier = graphconv.load(write_spec(yaml.safe_dump(spec)))
    fcn = graphconv.compile_model(classifier.graph)
    stride = fcn.output_stride
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), "seed"))
    image = _random_image(data, classifier, stride, rng)
    got = fcn.run(image)
    np.testing.assert_allclose(got, crop_loop(classifier, image, stride), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(run_tiled(fcn, image, _random_tile(data, fcn, stride)), got, rtol=1e-5, atol=1e-6)
    finer = _finer_stride(data, stride)
    method = data.draw(st.sampled_from(["dilate", "shift"]), "method")
    fine = graphconv.compile_model(classifier.graph, output_stride=finer, stride_method=method)
    np.testing.assert_allclose(fine.run(image), crop_loop(classifier, image, finer), rtol=1e-4, atol=1e-5)


@RANDOM_SETTINGS
@given(spec=random_classifiers(padded=True), data=st.data())
def test_a_random_padded_classifier_converts_exactly_and_its_tiles_equal_the_whole_image(spec, data, write_spec):
    """Padding makes the crops differ from the dense map (verify says where), but the
    conversion is exact at the crop, and tiles, at any output stride, give what the whole
    image gives: the network's padding is seen at the image's edges alone."""
    from graphconv.tiling import run_tiled

    classifier = graphconv.load(write_spec(yaml.safe_dump(spec)))
    fcn = graphconv.compile_model(classifier.graph)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), "seed"))
    crop = rng.standard_normal((1, *classifier.crop_shape)).astype(np.float32)
    np.testing.assert_allclose(fcn.run(crop).reshape(1, -1), classifier.run(crop).reshape(1, -1), rtol=1e-4, atol=1e-5)
    stride = fcn.output_stride
    image = _random_image(data, classifier, stride, rng)
    method = data.draw(st.sampled_from(["dilate", "shift"]), "method")
    try:
        fine = graphconv.compile_model(classifier.graph, output_stride=_finer_stride(data, stride),
                                       stride_method=method)
    except graphconv.GraphconvError as err:  # dilate refuses some pools, saying so
        assert method == "dilate" and "use --stride-method shift" in str(err), err
        fine = fcn
    for model in (fcn, fine):
        np.testing.assert_allclose(run_tiled(model, image, _random_tile(data, model, stride)), model.run(image),
                                   rtol=1e-5, atol=1e-6)


def test_compiling_from_python_warns_where_padding_makes_cells_differ_from_the_crops():
    """The command notes a padded classifier's cells differing from the classifier on
    their crop; from Python (a notebook) the same words come as GraphconvWarnings, else
    the map read as exact: the lecturer's padded model differed from the crop loop by 3.3."""
    def warned(**options) -> list[warnings.WarningMessage]:
        with pytest.warns(graphconv.GraphconvWarning) as said:
            graphconv.compile_model(**options)
        return [w for w in said if "no trained weights" not in str(w.message)]  # the specs' weights are seeded

    padded = warned(source=SPECS / "alexnet.yaml")
    assert [str(w.message) for w in padded] == [
        "conv1, conv2, conv3 and 2 more pad: each crop is padded at its own border, the sliding network only at the "
        "image's, so cells differ from the classifier on their crop where that padding reaches (as in any fully "
        "convolutional use of such a network); `graphconv verify` shows where and by how much"]
    assert padded[0].filename == __file__  # the user's line
    shifted = warned(source=SPECS / "alexnet.yaml", output_stride=16, stride_method="shift")
    assert len(shifted) == 2 and "shifted cop" in str(shifted[1].message)
    assert warned(source=SPECS / "lenet.yaml") == []  # pads nowhere: nothing to say
