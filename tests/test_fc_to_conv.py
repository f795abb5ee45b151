"""fc-to-conv and dense evaluation: one pass over a big image equals the crop loop."""
import numpy as np
import pytest

import graphconv
from graphconv.dense import crop_loop, padded_layers, verify
from graphconv.errors import GraphconvError
from graphconv.receptive import total_stride
from conftest import SPECS, random_input
from nets import UNPADDED
from graphconv.torch_bridge import torch, torch_forward


def load_net(name, write_spec):
    if name in UNPADDED:
        return graphconv.load(write_spec(UNPADDED[name], f"{name}.yaml"))
    return graphconv.load(SPECS / f"{name}.yaml")


def test_fc_becomes_conv_with_exactly_reshaped_weights():
    original = graphconv.load(SPECS / "lenet.yaml")
    compiled = graphconv.compile_model(original.graph, "fc-to-conv")
    fc3, conv3 = original.graph.node("fc3"), compiled.graph.node("fc3")
    assert conv3.op == "conv" and conv3.params["kernel_size"] == (5, 5) and conv3.params["out_channels"] == 120
    np.testing.assert_array_equal(conv3.weights["weight"].reshape(120, -1), fc3.weights["weight"])
    assert compiled.graph.node("fc4").params["kernel_size"] == (1, 1)
    assert [n.op for n in compiled.graph.layers()][-1] == "softmax"
    assert sum(n.op == "conv" for n in compiled.graph.layers()) == 5


@pytest.mark.parametrize("name", ["lenet", "tinydag", "strided", "grouped_lrn", "dag"])
@pytest.mark.parametrize("extra", [(0, 0), (9, 5), (13, 22)])
def test_dense_pass_equals_crop_loop(name, extra, write_spec, rng):
    classifier = load_net(name, write_spec)
    fcn = graphconv.compile_model(classifier.graph)
    assert not padded_layers(classifier.graph)
    c, hc, wc = classifier.crop_shape
    image = random_input(rng, (2, c, hc + extra[0], wc + extra[1]))
    dense = fcn.run(image)
    stride = total_stride(fcn.graph)
    expected = crop_loop(classifier, image, stride)
    assert dense.shape == expected.shape == (2, expected.shape[1], extra[0] // stride[0] + 1,
                                             extra[1] // stride[1] + 1)
    np.testing.assert_allclose(dense, expected, rtol=1e-4, atol=1e-5)


def test_verify_reports_exact_networks(write_spec, rng):
    classifier = load_net("dag", write_spec)
    report = verify(classifier, graphconv.compile_model(classifier.graph), random_input(rng, (1, 3, 40, 33)))
    assert report.passed and report.exact_by_construction and report.max_abs < 1e-4
    assert "PASS" in str(report)


def test_padded_alexnet_matches_direct_reference_and_reports_border_differences(rng):
    """AlexNet pads, so the dense map is not the crop loop near crop borders: graphconv
    must say which layers cause it. The dense map itself must equal a direct evaluation
    of the conv-reshaped network (here: PyTorch on the rewritten graph)."""
    classifier = graphconv.load(SPECS / "alexnet.yaml")
    fcn = graphconv.compile_model(classifier.graph)
    image = random_input(rng, (1, 3, 256, 288))
    dense = fcn.run(image)
    assert dense.shape == (1, 1000, 2, 3)
    if torch is not None:
        np.testing.assert_allclose(dense, torch_forward(fcn.graph, image), rtol=1e-3, atol=1e-7)
    report = verify(classifier, fcn, image)
    assert not report.exact_by_construction and report.conversion_exact and not report.agrees
    assert report.passed  # the conversion is right; the crop loop differs only where padding reaches
    assert not verify(classifier, fcn, image, strict=True).passed
    assert report.padded_layers == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert [layer.name for layer in report.layers] == report.padded_layers
    assert all(layer.clear_agrees and layer.differing > 0 for layer in report.layers)
    assert "zero padding in conv1, conv2, conv3, conv4, conv5" in str(report)


def test_alexnet_at_384_gives_a_6x6_map():
    fcn = graphconv.compile_model(SPECS / "alexnet.yaml")
    assert fcn.map_size(384, 384) == (6, 6)
    assert fcn.output_stride == (32, 32)


def test_cell_boxes_follow_the_receptive_field():
    fcn = graphconv.compile_model(SPECS / "lenet.yaml")
    assert fcn.cell_box(0, 0) == (0, 0, 32, 32)
    assert fcn.cell_box(2, 3) == (8, 12, 40, 44)
    alex = graphconv.compile_model(SPECS / "alexnet.yaml")
    top, left, bottom, right = alex.cell_box(1, 1)
    assert (bottom - top, right - left) == alex.field.size and top == alex.field.offset[0] + 32


def test_image_smaller_than_crop_is_a_user_error():
    fcn = graphconv.compile_model(SPECS / "lenet.yaml")
    with pytest.raises(GraphconvError, match="smaller than the 32x32 crop"):
        fcn.map_size(20, 40)
