"""The default pipeline on a ResNet-style classifier, end to end: batchnorms folded, the
global pool made a window, the flatten dropped, the fc made a conv; at the crop the
output is the classifier's, and on a larger image the map is what PyTorch computes for
the same converted network, built from the classifier's own (unfolded) weights."""
import numpy as np
import pytest

import graphconv
from graphconv.model import as_map
from graphconv.receptive import receptive_fields
from graphconv.shapes import infer_shapes
from graphconv.torch_bridge import torch
from conftest import SPECS, random_input

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
    assert f"run it on every crop with `run --crops {stride}` instead (crops {stride} pixel(s) apart" in str(err.value)
    image = random_input(rng, (1, 3, 24, 24))
    grid = CropGrid(classifier, classifier.output_stride)
    assert grid.map_hw((64, 64)) == classifier.map_size(64, 64)
    scores = crop_loop(classifier, image, classifier.output_stride)
    assert scores.shape == (1, 3) + classifier.map_size(24, 24)
    top, left = stride, 2 * stride  # cell (1, 2) is the classifier on the crop there
    np.testing.assert_allclose(scores[:, :, 1, 2], classifier.run(image[:, :, top:top + 16, left:left + 16]),
                               rtol=1e-5, atol=1e-6)


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
