"""fold-batchnorm: a batchnorm right after a conv or fc becomes that layer's weight and
bias, exactly; every other batchnorm stays a layer and its kernel runs it."""
import numpy as np
import pytest

import graphconv
from graphconv.errors import GraphconvError
from graphconv.pass_manager import DEFAULT_PIPELINE
from graphconv.runtime import Executor, run_reference
from conftest import random_input

FOLDABLE = """
name: foldable
input: {shape: [3, 12, 10]}
layers:
  - {name: c1, op: conv, out_channels: 6, kernel_size: 3, padding: 1, bias: false}
  - {name: bn1, op: batchnorm}
  - {name: r1, op: relu}
  - {name: c2, op: conv, out_channels: 6, kernel_size: 3, stride: 2, groups: 3}
  - {name: drop, op: dropout}
  - {name: bn2, op: batchnorm, eps: 0.001}
  - {name: fc, op: fc, out_features: 5}
  - {name: bn3, op: batchnorm}
"""

# DenseNet-style: a batchnorm after a concat, one after a pooling, one after a conv that
# something else reads too, and one after a conv with a fused ReLU: none can be folded.
UNFOLDABLE = """
name: unfoldable
input: {shape: [4, 10, 10]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: c2, op: conv, out_channels: 4, kernel_size: 1, inputs: [data]}
  - {name: cat, op: concat, inputs: [c1, c2]}
  - {name: bn_cat, op: batchnorm}
  - {name: pool, op: avgpool, kernel_size: 2}
  - {name: bn_pool, op: batchnorm}
  - {name: c3, op: conv, out_channels: 8, kernel_size: 1}
  - {name: bn_shared, op: batchnorm}
  - {name: sum, op: add, inputs: [bn_shared, c3]}
  - {name: c4, op: conv, out_channels: 8, kernel_size: 1, activation: relu}
  - {name: bn_relu, op: batchnorm}
"""


def test_folding_keeps_the_output_and_drops_the_layers(write_spec, rng):
    model = graphconv.load(write_spec(FOLDABLE))
    folded = graphconv.compile_model(model.graph, "remove-dropout,fold-batchnorm")
    assert not folded.graph.find("batchnorm")
    assert len(folded.graph.layers()) == len(model.graph.layers()) - 4  # three batchnorms, a dropout
    assert folded.graph.node("c1").params["bias"] is True  # a conv without bias gets one
    x = random_input(rng, (3, 3, 12, 10))
    np.testing.assert_allclose(folded.run(x), model.run(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(folded.run(x, full=True), run_reference(model.graph, x), rtol=1e-5, atol=1e-5)


def test_folded_weights_are_the_formula_in_float64(write_spec):
    graph = graphconv.load(write_spec(FOLDABLE)).graph
    folded = graphconv.compile_model(graph, "remove-dropout,fold-batchnorm").graph
    for conv_name, bn_name in (("c2", "bn2"), ("fc", "bn3")):
        conv, bn = graph.node(conv_name), graph.node(bn_name)
        w = {k: v.astype(np.float64) for k, v in bn.weights.items()}
        scale = w["weight"] / np.sqrt(w["running_var"] + bn.params["eps"])
        weight = conv.weights["weight"].astype(np.float64)
        want_weight = weight * scale.reshape(-1, *[1] * (weight.ndim - 1))
        want_bias = (conv.weights["bias"] - w["running_mean"]) * scale + w["bias"]
        new = folded.node(conv_name)
        assert new.weights["weight"].dtype == np.float32
        np.testing.assert_array_equal(new.weights["weight"], want_weight.astype(np.float32))
        np.testing.assert_array_equal(new.weights["bias"], want_bias.astype(np.float32))


def test_batchnorms_that_cannot_fold_stay_and_run(write_spec, rng):
    model = graphconv.load(write_spec(UNFOLDABLE))
    compiled = graphconv.compile_model(model.graph)  # the default pipeline
    assert sorted(n.name for n in compiled.graph.find("batchnorm")) == ["bn_cat", "bn_pool", "bn_relu",
                                                                         "bn_shared"]
    x = random_input(rng, (2, 4, 10, 10))  # the whole 5x5 map, not the crop grid's one cell
    got = Executor(compiled.graph).run(x)
    np.testing.assert_allclose(got, Executor(model.graph).run(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, run_reference(model.graph, x), rtol=1e-5, atol=1e-5)


def test_the_graph_output_folds_too(write_spec):
    """A batchnorm that is the network's output: the conv becomes the output."""
    folded = graphconv.compile_model(write_spec(FOLDABLE), "fold-batchnorm").graph
    assert folded.output.name == "fc" and folded.output.op == "fc"


def test_statistics_that_are_not_a_variance_are_refused(write_spec):
    graph = graphconv.load(write_spec(FOLDABLE)).graph
    graph.set_weights("bn2", running_var=np.full(6, -1.0, np.float32))
    with pytest.raises(GraphconvError, match=r"layer 'bn2': running_var \+ eps must be positive"):
        graphconv.compile_model(graph, "remove-dropout,fold-batchnorm")


def test_default_pipeline_folds_before_fc_to_conv_and_fusion():
    """Folding first lets fuse-conv-activation fuse conv -> batchnorm -> relu, and folds an fc's
    batchnorm while it is still an fc; dropout goes first so conv -> dropout -> bn folds."""
    order = list(DEFAULT_PIPELINE)
    assert (order.index("remove-dropout") < order.index("fold-batchnorm") < order.index("fc-to-conv")
            < order.index("fuse-conv-activation"))


def test_conv_batchnorm_relu_becomes_one_conv(write_spec):
    compiled = graphconv.compile_model(write_spec(FOLDABLE)).graph
    assert compiled.node("c1").params["activation"] == "relu" and "r1" not in compiled


@pytest.mark.parametrize("norm", ["{op: groupnorm, groups: 2}", "{op: layernorm}"])
def test_batchnorms_after_a_normalisation_fold_into_its_affine(write_spec, rng, norm):
    """GroupNorm's affine as exporters write it (a Mul, then an Add: two identity-statistics
    batchnorms), and any batchnorm after a layernorm, fold into its weight and bias."""
    spec = f"""
    name: normed
    input: {{shape: [4, 5, 6]}}
    layers:
      - {{name: norm, {norm[1:-1]}}}
      - {{name: scale, op: batchnorm}}
      - {{name: shift, op: batchnorm, eps: 0.01}}
      - {{name: r, op: relu}}
    """
    model = graphconv.load(write_spec(spec))
    folded = graphconv.compile_model(model.graph, "fold-batchnorm")
    assert [n.op for n in folded.graph.layers()] == [norm.split()[1].rstrip(",}"), "relu"]
    x = random_input(rng, (2, 4, 5, 6))
    np.testing.assert_allclose(Executor(folded.graph).run(x), run_reference(model.graph, x), rtol=1e-5, atol=1e-5)


# A batchnorm that only an fc reads, after a ReLU (nothing to fold into before it): over a
# flatten's C*H*W features of one cell (BatchNorm1d after Flatten), and over a 3x3 map
# read by the fc directly (each channel's factor covers its 9 features).
INTO_FC = """
name: into_fc
input: {shape: [3, 9, 9]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 3, stride: 2, activation: relu}
  - {name: flat, op: flatten}
  - {name: bn_features, op: batchnorm, eps: 0.001}
  - {name: fc1, op: fc, out_features: 6, bias: false, inputs: [bn_features]}
  - {name: c2, op: conv, out_channels: 2, kernel_size: 2, activation: relu, inputs: [c1]}
  - {name: bn_map, op: batchnorm}
  - {name: fc2, op: fc, out_features: 6}
  - {name: sum, op: add, inputs: [fc1, fc2]}
"""


def test_a_batchnorm_only_an_fc_reads_folds_into_its_weights_in_float64(write_spec):
    """fc(s x + t) = (W diag s) x + (W t + b), each factor repeated over the features of
    its channel (C*H*W channels of one cell after a flatten, H*W positions of a map)."""
    graph = graphconv.load(write_spec(INTO_FC)).graph
    folded = graphconv.compile_model(graph, "shape-inference,fold-batchnorm").graph
    assert not folded.find("batchnorm") and folded.node("fc1").params["bias"] is True
    for fc_name, bn_name, per_channel in (("fc1", "bn_features", 1), ("fc2", "bn_map", 9)):
        fc, bn = graph.node(fc_name), graph.node(bn_name)
        w = {k: v.astype(np.float64) for k, v in bn.weights.items()}
        scale = w["weight"] / np.sqrt(w["running_var"] + bn.params["eps"])
        shift = w["bias"] - w["running_mean"] * scale
        weight = fc.weights["weight"].astype(np.float64)
        bias = fc.weights["bias"].astype(np.float64) if "bias" in fc.weights else 0.0
        new = folded.node(fc_name)
        np.testing.assert_array_equal(new.weights["weight"],
                                      (weight * np.repeat(scale, per_channel)).astype(np.float32))
        np.testing.assert_array_equal(new.weights["bias"],
                                      (bias + weight @ np.repeat(shift, per_channel)).astype(np.float32))


def test_a_flattened_head_with_a_batchnorm_slides_to_the_crop_loop(write_spec, rng):
    """Through the default pipeline: both batchnorms fold into their fcs, the flatten
    goes, and on a larger image every cell is the classifier on its crop (nothing pads)."""
    from graphconv.dense import crop_loop

    classifier = graphconv.load(write_spec(INTO_FC))
    fcn = graphconv.compile_model(classifier.graph)
    assert not {"batchnorm", "flatten", "fc"} & {n.op for n in fcn.graph.layers()}
    big = random_input(rng, (1, 3, 9 + 8, 9 + 6))
    out = fcn.run(big)
    assert out.shape == (1, 6, 5, 4)
    np.testing.assert_allclose(out, crop_loop(classifier, big, 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change", ["activation", "second reader"])
def test_a_batchnorm_that_is_not_only_an_fc_s_input_stays(write_spec, change):
    """A fused activation between the batchnorm and the fc, or another layer reading the
    normalised features: folding into the fc would change what they see."""
    spec = INTO_FC.replace("{name: bn_features, op: batchnorm, eps: 0.001}",
                           "{name: bn_features, op: batchnorm, eps: 0.001, activation: relu}"
                           if change == "activation" else "{name: bn_features, op: batchnorm, eps: 0.001}\n"
                           "  - {name: other, op: fc, out_features: 6, inputs: [bn_features]}")
    if change == "second reader":
        spec = spec.replace("inputs: [fc1, fc2]}", "inputs: [fc1, fc2]}\n  - {name: total, op: add, "
                                                   "inputs: [sum, other]}")
    folded = graphconv.compile_model(write_spec(spec), "shape-inference,fold-batchnorm").graph
    assert [n.name for n in folded.find("batchnorm")] == ["bn_features"]
