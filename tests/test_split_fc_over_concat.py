"""split-fc-over-concat: an fc over concatenated flattened maps is one fc per map, summed,
so the flattens go and a two-branch classifier slides."""
import numpy as np
import pytest

import graphconv
from graphconv.dense import crop_loop
from graphconv.errors import GraphconvError
from graphconv.model import as_map
from conftest import random_input

TWO_BRANCHES = """
name: two_branches
input: {name: data, shape: [2, 12, 10]}
layers:
  - {name: a, op: conv, out_channels: 4, kernel_size: 3, stride: 2}
  - {name: fa, op: flatten}
  - {name: ra, op: relu}
  - {name: b, op: conv, out_channels: 3, kernel_size: 2, stride: 2, inputs: [data]}
  - {name: fb, op: flatten}
  - {name: cat, op: concat, inputs: [ra, fb]}
  - {name: fc, op: fc, out_features: 6}
  - {name: r, op: relu}
  - {name: fc2, op: fc, out_features: 5}
"""

THREE_PARTS = """
name: three_parts
input: {name: data, shape: [2, 8, 8]}
layers:
  - {name: a, op: conv, out_channels: 4, kernel_size: 3, stride: 2}
  - {name: fa, op: flatten}
  - {name: pooled, op: globalavgpool, inputs: [a]}
  - {name: b, op: conv, out_channels: 2, kernel_size: 2, stride: 2, inputs: [data]}
  - {name: fb, op: flatten}
  - {name: cat, op: concat, inputs: [fa, pooled, fb]}
  - {name: fc, op: fc, out_features: 7, bias: BIAS}
"""

MIXED_STRIDES = """
name: mixed
input: {name: data, shape: [2, 12, 12]}
layers:
  - {name: a, op: conv, out_channels: 4, kernel_size: 2, stride: 2}
  - {name: fa, op: flatten}
  - {name: b, op: conv, out_channels: 3, kernel_size: 4, stride: 4, inputs: [data]}
  - {name: fb, op: flatten}
  - {name: cat, op: concat, inputs: [fa, fb]}
  - {name: fc, op: fc, out_features: 6}
"""


def test_an_fc_over_flattened_branches_slides_and_equals_the_crop_loop(write_spec, rng):
    """Both branches' flattens go (one through a relu), each part of the fc becomes a conv
    over its branch's map, the concat goes; at the crop the output is the classifier's,
    on larger images the classifier on every crop at stride 2."""
    classifier = graphconv.load(write_spec(TWO_BRANCHES))
    fcn = graphconv.compile_model(classifier.graph)
    assert not {"fa", "fb", "cat"} & {node.name for node in fcn.graph}
    assert {node.op for node in fcn.graph.layers()} == {"conv"}
    assert fcn.graph.node("fc_over_ra").params["kernel_size"] == (5, 4)  # a's map
    assert fcn.graph.node("fc_over_fb").params["kernel_size"] == (6, 5)  # b's
    x = random_input(rng, (2, 2, 12, 10))
    np.testing.assert_allclose(fcn.run(x), as_map(classifier.run(x)), rtol=1e-5, atol=1e-5)
    for height, width in ((18, 14), (20, 16)):
        big = random_input(rng, (1, 2, height, width))
        out = fcn.run(big)
        assert out.shape == (1, 5, (height - 12) // 2 + 1, (width - 10) // 2 + 1)
        np.testing.assert_allclose(out, crop_loop(classifier, big, 2), rtol=1e-4, atol=1e-5)
    odd = random_input(rng, (1, 2, 19, 15))  # the branches meet on even sides: the last row and column lie in no crop
    np.testing.assert_allclose(fcn.run(odd), crop_loop(classifier, odd, 2), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_each_part_takes_its_columns_and_the_bias_once(write_spec, rng, bias):
    """Three inputs, one of them a pooled C x 1 x 1 value: each part's fc has the weight's
    columns of that input's features and only the first the bias (none without one);
    the network gives the classifier's output."""
    classifier = graphconv.load(write_spec(THREE_PARTS.replace("BIAS", str(bias).lower())))
    split = graphconv.compile_model(classifier.graph, "shape-inference,split-fc-over-concat").graph
    parts = [node.name for node in split.node("fc").inputs]
    assert split.node("fc").op == "add" and parts == ["fc_over_fa", "fc_over_pooled", "fc_over_fb"]
    assert "cat" not in split
    weight = classifier.graph.node("fc").weights["weight"]
    columns = [weight[:, :36], weight[:, 36:40], weight[:, 40:]]  # 4x3x3, 4x1x1, 2x4x4 features
    for name, expected in zip(parts, columns):
        np.testing.assert_array_equal(split.node(name).weights["weight"], expected)
    assert [("bias" in split.node(name).weights) for name in parts] == [bias, False, False]
    x = random_input(rng, (3, 2, 8, 8))
    np.testing.assert_allclose(graphconv.Model(split).run(x), classifier.run(x), rtol=1e-5, atol=1e-5)
    fcn = graphconv.compile_model(classifier.graph)
    big = random_input(rng, (1, 2, 14, 12))
    np.testing.assert_allclose(fcn.run(big), crop_loop(classifier, big, 2), rtol=1e-4, atol=1e-5)


def test_an_fc_over_a_concat_of_maps_is_left_alone(write_spec):
    """Without a flatten among its inputs the concat is a map, and fc-to-conv makes the fc
    one conv over it."""
    spec = write_spec(THREE_PARTS.replace("BIAS", "true").replace("{name: fa, op: flatten}", "{name: fa, op: relu}")
                      .replace("inputs: [fa, pooled, fb]", "inputs: [fa, a]").replace("{name: fb, op: flatten}",
                                                                                       "{name: fb, op: relu}"))
    graph = graphconv.compile_model(spec, "shape-inference,split-fc-over-concat").graph
    assert graph.node("fc").op == "fc" and graph.node("fc").inputs[0].name == "cat"


def test_branches_of_different_strides_are_refused_naming_the_fc(write_spec):
    with pytest.raises(GraphconvError, match=r"layer 'fc': merges maps of different strides \('fc_over_fa' at stride "
                                             r"2x2, 'fc_over_fb' at stride 4x4\).*`run --crops 2`"):
        graphconv.compile_model(write_spec(MIXED_STRIDES))


def test_a_pytorch_two_branch_classifier_from_onnx_slides(tmp_path, rng):
    """torch.cat of two flattened branches into nn.Linear, exported to ONNX: the compiled
    network's map is PyTorch's classifier on every crop."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    nn = torch.nn

    class TwoBranches(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, stride=2), nn.Conv2d(3, 4, 5, stride=2)
            self.fc = nn.Linear(8 * 7 * 7 + 4 * 6 * 6, 10)

        def forward(self, x):
            return self.fc(torch.cat([torch.relu(self.a(x)).flatten(1), self.b(x).flatten(1)], 1))

    torch.manual_seed(0)
    net = TwoBranches().eval()
    torch.onnx.export(net, (torch.randn(1, 3, 15, 15),), str(tmp_path / "two.onnx"), dynamo=False)
    fcn = graphconv.compile_model(graphconv.load(tmp_path / "two.onnx").graph)
    image = random_input(rng, (1, 3, 15 + 2 * 4, 15 + 2 * 3))
    with torch.no_grad():
        want = np.stack([[net(torch.from_numpy(image[:, :, 2 * i:2 * i + 15, 2 * j:2 * j + 15]))[0].numpy()
                          for j in range(4)] for i in range(5)]).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(fcn.run(image), want, rtol=1e-4, atol=1e-4)
