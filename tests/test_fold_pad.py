"""fold-pad: a pad layer merges into the conv or pool it feeds where that layer's own
padding means the same thing and the sum is symmetric; everywhere else it stays. Either
way the network's output is unchanged."""
import numpy as np
import pytest

import graphconv
from graphconv.pass_manager import DEFAULT_PIPELINE, get_pass
from conftest import random_input

HEAD = """
input: {shape: [3, 11, 10]}
layers:
"""


def compiled_pair(write_spec, layers: str):
    """The network as written and after fold-pad (with shape inference, which it needs)."""
    graph = graphconv.load_spec(write_spec(HEAD + layers))
    return graph, graphconv.run_passes(graph, "fold-pad")


def same_output(before, after, rng):
    x = random_input(rng, (2, 3, 11, 10))
    np.testing.assert_allclose(graphconv.Model(after).run(x, full=True), graphconv.Model(before).run(x, full=True),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers,layer,padding", [
    ("  - {name: zp, op: pad, padding: [1, 2, 1, 2]}\n"
     "  - {name: c, op: conv, out_channels: 4, kernel_size: 3, stride: 2, padding: [1, 0], dilation: [1, 2]}\n",
     "c", (2, 2)),
    ("  - {name: zp, op: pad, padding: 1, value: -.inf}\n"
     "  - {name: m, op: maxpool, kernel_size: 5, stride: 2, padding: 1}\n",
     "m", (2, 2)),
    ("  - {name: zp, op: pad, padding: [1, 0, 1, 0]}\n"
     "  - {name: a, op: avgpool, kernel_size: 3, stride: 2, count_include_pad: true}\n",
     "a", (1, 0)),
])
def test_a_pad_the_next_layer_can_absorb_is_folded(write_spec, rng, layers, layer, padding):
    before, after = compiled_pair(write_spec, layers)
    assert not after.find("pad") and after.node(layer).params["padding"] == padding
    same_output(before, after, rng)


@pytest.mark.parametrize("why,layers", [
    ("an uneven remainder",
     "  - {name: zp, op: pad, padding: [0, 0, 1, 1]}\n"
     "  - {name: c, op: conv, out_channels: 4, kernel_size: 3, stride: 2, padding: 1}\n"),
    ("a nonzero value before a conv",
     "  - {name: zp, op: pad, padding: 1, value: 0.5}\n"
     "  - {name: c, op: conv, out_channels: 4, kernel_size: 3}\n"),
    ("-inf before a conv",
     "  - {name: zp, op: pad, padding: 1, value: -.inf}\n"
     "  - {name: c, op: conv, out_channels: 4, kernel_size: 3}\n"),
    ("zeros before a max pool",
     "  - {name: zp, op: pad, padding: 1}\n"
     "  - {name: m, op: maxpool, kernel_size: 3}\n"),
    ("an average that does not count its padding",
     "  - {name: zp, op: pad, padding: 1}\n"
     "  - {name: a, op: avgpool, kernel_size: 3, count_include_pad: false}\n"),
    ("a ceil-mode pool",
     "  - {name: zp, op: pad, padding: 1, value: -.inf}\n"
     "  - {name: m, op: maxpool, kernel_size: 3, stride: 2, ceil_mode: true}\n"),
    ("more than half a pool's window",
     "  - {name: zp, op: pad, padding: 2, value: -.inf}\n"
     "  - {name: m, op: maxpool, kernel_size: 3, stride: 2}\n"),
    ("a pad read by two layers",
     "  - {name: zp, op: pad, padding: 1}\n"
     "  - {name: c, op: conv, out_channels: 3, kernel_size: 3}\n"
     "  - {name: d, op: conv, out_channels: 3, kernel_size: 3, inputs: [zp]}\n"
     "  - {name: cat, op: concat, inputs: [c, d]}\n"),
    ("a reflect pad before a conv",
     "  - {name: zp, op: pad, padding: 1, mode: reflect}\n"
     "  - {name: c, op: conv, out_channels: 3, kernel_size: 3}\n"),
    ("an edge pad before an avgpool",
     "  - {name: zp, op: pad, padding: 1, mode: edge}\n"
     "  - {name: a, op: avgpool, kernel_size: 3, count_include_pad: true}\n"),
    ("a pad that is the output",
     "  - {name: c, op: conv, out_channels: 3, kernel_size: 3}\n"
     "  - {name: zp, op: pad, padding: 1}\n"),
])
def test_a_pad_that_cannot_be_absorbed_stays(write_spec, rng, why, layers):
    before, after = compiled_pair(write_spec, layers)
    assert [n.name for n in after.find("pad")] == ["zp"], why
    assert after.node("zp").params == before.node("zp").params
    assert get_pass("fold-pad").run(graphconv.run_passes(before, "shape-inference")) is False
    same_output(before, after, rng)


def test_a_pad_of_nothing_is_removed_wherever_it_is(write_spec, rng):
    before, after = compiled_pair(write_spec, "  - {name: zp, op: pad, padding: 0}\n  - {name: r, op: relu}\n"
                                              "  - {name: last, op: pad, padding: 0}\n")
    assert not after.find("pad") and after.output.name == "r"
    same_output(before, after, rng)


def test_fold_pad_is_in_the_default_pipeline_before_the_passes_that_read_convs():
    order = list(DEFAULT_PIPELINE)
    assert order.index("fold-pad") < min(order.index(p) for p in ("fold-batchnorm", "fc-to-conv",
                                                                   "fuse-conv-activation", "fuse-conv-add"))


def test_compile_folds_a_zero_pad2d_into_the_conv_and_keeps_the_uneven_one(write_spec, rng):
    """Keras' ZeroPadding2D((1, 1)) before an unpadded conv folds; ZeroPadding2D(((0, 1),
    (0, 1))) before a stride-2 conv (MobileNet's) stays a layer. The compiled network's
    map on a larger image equals the classifier on the crop at cell (0, 0)."""
    spec = write_spec("""
        input: {shape: [3, 16, 16]}
        layers:
          - {name: zp1, op: pad, padding: 1}
          - {name: c1, op: conv, out_channels: 4, kernel_size: 3}
          - {name: r1, op: relu}
          - {name: zp2, op: pad, padding: [0, 0, 1, 1]}
          - {name: c2, op: conv, out_channels: 4, kernel_size: 3, stride: 2, groups: 4}
          - {name: fc, op: fc, out_features: 3}
        """)
    classifier = graphconv.load(spec)
    fcn = graphconv.compile_model(spec)
    assert [n.name for n in fcn.graph.find("pad")] == ["zp2"] and fcn.graph.node("c1").params["padding"] == (1, 1)
    x = random_input(rng, (1, 3, 16, 16))
    np.testing.assert_allclose(fcn.run(x).reshape(1, -1), classifier.run(x), rtol=1e-4, atol=1e-5)
