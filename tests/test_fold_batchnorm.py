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
