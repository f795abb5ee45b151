"""fuse-batchnorm-activation: the activation after a batchnorm that stays a layer becomes
the batchnorm's own; fold-batchnorm then carries a batchnorm's activation onto the conv
it folds into, and nothing is fused where another layer reads the batchnorm."""
import numpy as np
import pytest

import graphconv
from graphconv.runtime import Executor, run_reference
from conftest import random_input

# Pre-activation (ResNet v2, DenseNet transitions): batchnorms after a pooling and an
# add; one read by two layers; one ending in ReLU6.
PRE_ACTIVATION = """
name: pre_activation
input: {shape: [5, 12, 10]}
layers:
  - {name: pool, op: avgpool, kernel_size: 2}
  - {name: bn_pool, op: batchnorm}
  - {name: act_pool, op: relu}
  - {name: conv, op: conv, out_channels: 5, kernel_size: 3, padding: 1}
  - {name: sum, op: add, inputs: [conv, pool]}
  - {name: bn_sum, op: batchnorm}
  - {name: act_sum, op: clip, min: 0, max: 6}
  - {name: bn_shared, op: batchnorm}
  - {name: left, op: silu}
  - {name: right, op: relu, inputs: [bn_shared]}
  - {name: both, op: add, inputs: [left, right]}
"""


def test_activations_join_the_batchnorms_nothing_else_reads(write_spec):
    graph = graphconv.compile_model(graphconv.load(write_spec(PRE_ACTIVATION)).graph).graph
    assert {n.name: n.params["activation"] for n in graph.find("batchnorm")} == {
        "bn_pool": "relu", "bn_sum": "relu6", "bn_shared": "none"}
    assert sorted(n.op for n in graph.layers()) == ["add", "avgpool", "batchnorm", "batchnorm", "batchnorm",
                                                    "conv", "relu", "silu"]  # `sum` is the conv's (fuse-conv-add)


@pytest.mark.parametrize("batch", [1, 3])
def test_fusing_keeps_the_map(write_spec, rng, batch):
    model = graphconv.load(write_spec(PRE_ACTIVATION))
    compiled = graphconv.compile_model(model.graph)
    x = random_input(rng, (batch, 5, 20, 18))
    want = run_reference(model.graph, x)
    np.testing.assert_allclose(Executor(compiled.graph).run(x), want, rtol=1e-4, atol=1e-5)


def test_fold_batchnorm_moves_a_batchnorms_activation_onto_the_conv(write_spec, rng):
    spec = write_spec("""
        name: folded
        input: {shape: [3, 8, 8]}
        layers:
          - {name: c, op: conv, out_channels: 4, kernel_size: 3}
          - {name: bn, op: batchnorm, activation: hardswish}
          - {name: f, op: fc, out_features: 3}
          - {name: bn_fc, op: batchnorm, activation: relu}
    """)
    model = graphconv.load(spec)
    graph = graphconv.run_passes(model.graph, "shape-inference,fold-batchnorm")
    assert graph.node("c").params["activation"] == "hardswish"
    assert [n.name for n in graph.layers()] == ["c", "f", "bn_fc"]  # an fc applies no activation: it stays
    x = random_input(rng, (2, 3, 8, 8))
    np.testing.assert_allclose(run_reference(graph, x), run_reference(model.graph, x), rtol=1e-5, atol=1e-5)
