"""remove-flatten: a flatten that only fcs read (they flatten in the same order), directly
or through per-element layers, or that sees a C x 1 x 1 map changes nothing at the crop,
and goes, so the network can slide."""
import numpy as np
import pytest

import graphconv
from graphconv.dense import crop_loop
from graphconv.errors import GraphconvError
from graphconv.model import as_map
from graphconv.receptive import total_stride
from conftest import random_input

FLATTEN_FC = """
name: flatten_fc
input: {shape: [2, 11, 9]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 3, stride: 2}
  - {name: flat, op: flatten}
  - {name: fc1, op: fc, out_features: 6}
  - {name: fc2, op: fc, out_features: 6, inputs: [flat]}
  - {name: sum, op: add, inputs: [fc1, fc2]}
"""

FLATTEN_PER_ELEMENT_FC = """
name: flatten_relu_fc
input: {shape: [2, 8, 8]}
layers:
  - {name: c1, op: conv, out_channels: 3, kernel_size: 3, stride: 3}
  - {name: flat, op: flatten}
  - {name: r, op: relu}
  - {name: d, op: dropout}
  - {name: fc1, op: fc, out_features: 5}
  - {name: s, op: sigmoid, inputs: [flat]}
  - {name: fc2, op: fc, out_features: 5}
  - {name: sum, op: add, inputs: [fc1, fc2]}
"""

FLATTEN_KEPT = """
name: flatten_kept
input: {shape: [2, 8, 8]}
layers:
  - {name: c1, op: conv, out_channels: 3, kernel_size: 3, stride: 3}
  - {name: flat, op: flatten}
  - {name: r, op: relu}
  - {name: sm, op: softmax}
  - {name: fc, op: fc, out_features: 5}
"""

FLATTEN_LAST = """
name: flatten_last
input: {shape: [2, 8, 8]}
layers:
  - {name: c1, op: conv, out_channels: 3, kernel_size: 4, stride: 4}
  - {name: pool, op: globalavgpool}
  - {name: flat, op: flatten}
"""


def test_flatten_before_fcs_goes_and_they_become_convs(write_spec, rng):
    """Through compile: the flatten goes, both fcs become 4x4 convs over c1's map, the
    output at the crop is unchanged and on a larger image it is the crop loop."""
    classifier = graphconv.load(write_spec(FLATTEN_FC))
    fcn = graphconv.compile_model(classifier.graph)
    assert "flat" not in fcn.graph and not fcn.graph.find("fc")
    assert fcn.graph.node("fc1").params["kernel_size"] == (5, 4)
    assert [n.name for n in fcn.graph.node("fc2").inputs] == ["c1", "fc1"]  # fuse-conv-add: fc1 + fc2 is one conv
    x = random_input(rng, (2, 2, 11, 9))
    np.testing.assert_allclose(fcn.run(x), as_map(classifier.run(x)), rtol=1e-5, atol=1e-5)
    big = random_input(rng, (1, 2, 11 + 8, 9 + 6))
    stride = total_stride(fcn.graph)
    np.testing.assert_allclose(fcn.run(big), crop_loop(classifier, big, stride), rtol=1e-4, atol=1e-5)
    assert fcn.run(big).shape == (1, 6, 5, 4)


def test_flatten_read_by_fcs_through_per_element_layers_goes_and_the_network_slides(write_spec, rng):
    """A relu, a dropout or a sigmoid gives the same values whatever shape its input is
    read as, so the flatten before them goes, they see c1's map, and the fcs after them
    become convs: on a larger image, the crop loop."""
    classifier = graphconv.load(write_spec(FLATTEN_PER_ELEMENT_FC))
    removed = graphconv.compile_model(classifier.graph, "shape-inference,remove-flatten").graph
    assert not removed.find("flatten") and removed.node("r").shape == removed.node("s").shape == (3, 2, 2)
    fcn = graphconv.compile_model(classifier.graph)
    x = random_input(rng, (2, 2, 8, 8))
    np.testing.assert_allclose(fcn.run(x), as_map(classifier.run(x)), rtol=1e-5, atol=1e-5)
    big = random_input(rng, (1, 2, 8 + 9, 8 + 6))
    assert fcn.run(big).shape == (1, 5, 4, 3)
    np.testing.assert_allclose(fcn.run(big), crop_loop(classifier, big, 3), rtol=1e-4, atol=1e-5)


def test_flatten_read_by_other_layers_stays_and_compile_names_the_reader(write_spec, rng):
    """The flatten stays where a softmax (over the 12 features, not per element) reads it,
    even after a relu; a network converted around it would take its crop alone (on a
    larger image the softmax would get a map's channels, and the fc's weights would not
    fit), so compile refuses it, naming the layer that reads the flattened features."""
    classifier = graphconv.load(write_spec(FLATTEN_KEPT))
    kept = graphconv.compile_model(classifier.graph, "shape-inference,remove-flatten")
    assert kept.graph.node("flat").op == "flatten"
    x = random_input(rng, (2, 2, 8, 8))
    np.testing.assert_allclose(kept.run(x), classifier.run(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(GraphconvError, match=r"layer 'sm': this softmax reads the 12 features of flatten 'flat' "
                                             r"\(its 3x2x2 map\) before any fc: .*cannot be compiled to slide"):
        graphconv.compile_model(classifier.graph)
    with pytest.raises(GraphconvError, match="layer 'flat' is still flatten: run remove-flatten first"):
        graphconv.compile_model(classifier.graph, output_stride=1)


def test_flatten_of_a_one_cell_map_goes_even_as_the_output(write_spec, rng):
    """After a global pool the flatten is the identity at the crop: without it, the
    converted network answers a larger image with a map rather than one long vector."""
    classifier = graphconv.load(write_spec(FLATTEN_LAST))
    fcn = graphconv.compile_model(classifier.graph)
    assert [n.op for n in fcn.graph.layers()] == ["conv", "avgpool"] and fcn.graph.output.name == "pool"
    x = random_input(rng, (2, 2, 8, 8))
    np.testing.assert_allclose(fcn.run(x), as_map(classifier.run(x)), rtol=1e-6)
    big = random_input(rng, (1, 2, 16, 12))
    np.testing.assert_allclose(fcn.run(big), crop_loop(classifier, big, 4), rtol=1e-5, atol=1e-6)


def test_a_flatten_that_is_the_output_of_a_larger_map_stays_and_compile_refuses_it(write_spec):
    spec = write_spec(FLATTEN_KEPT.replace("  - {name: r, op: relu}\n", "").replace("  - {name: sm, op: softmax}\n", "")
                      .replace("  - {name: fc, op: fc, out_features: 5}\n", ""))
    graph = graphconv.compile_model(spec, "shape-inference,remove-flatten").graph
    assert graph.output.op == "flatten" and graph.output.shape == (12, 1, 1)
    with pytest.raises(GraphconvError, match=r"layer 'flat': this flatten's 12 features \(its 3x2x2 map\) are the "
                                             "network's output: .*cannot be compiled to slide"):
        graphconv.compile_model(spec)
