"""The fuse-inverted-residual pass, as the CPU backend runs it when it binds a network."""
import numpy as np
import pytest

import graphconv
from graphconv.ops.inverted_residual import cpu
from graphconv.pass_manager import get_pass
from graphconv.runtime import Executor, run_reference
from graphconv.passes.fuse_inverted_residual import FUSED_LAYERS

# two of MobileNetV2's blocks (expand 1x1, depthwise 3x3, project 1x1; the second adds
# its input), with the ReLU6s and the add as layers of their own, as an ONNX file has them
MOBILENET_BLOCKS = """
name: blocks
input: {name: data, shape: [8, 20, 20]}
layers:
  - {name: stem, op: conv, out_channels: 16, kernel_size: 3, padding: 1}
  - {name: b1_expand, op: conv, out_channels: 64, kernel_size: 1}
  - {name: b1_expand_relu6, op: clip, min: 0, max: 6}
  - {name: b1_dw, op: conv, out_channels: 64, kernel_size: 3, stride: 2, padding: 1, groups: 64}
  - {name: b1_dw_relu6, op: clip, min: 0, max: 6}
  - {name: b1_project, op: conv, out_channels: 24, kernel_size: 1}
  - {name: b2_expand, op: conv, out_channels: 96, kernel_size: 1}
  - {name: b2_expand_relu6, op: clip, min: 0, max: 6}
  - {name: b2_dw, op: conv, out_channels: 96, kernel_size: 3, padding: 1, groups: 96}
  - {name: b2_dw_relu6, op: clip, min: 0, max: 6}
  - {name: b2_project, op: conv, out_channels: 24, kernel_size: 1}
  - {name: b2_add, op: add, inputs: [b2_project, b1_project]}
  - {name: head, op: conv, out_channels: 5, kernel_size: 1}
"""


@pytest.fixture
def blocks(write_spec):
    return graphconv.compile_model(write_spec(MOBILENET_BLOCKS))


@pytest.mark.parametrize("size", [20, 96], ids=["layers", "fused-rows"])
def test_the_cpu_runs_each_block_as_one_layer_with_the_same_scores(blocks, size, rng):
    """Both blocks fused (the second with its input added), the model's own graph
    untouched; the scores those of the layers one by one, on maps small enough for the
    kernel's "layers" and large enough for its "fused rows"."""
    executor = Executor(blocks.graph.copy())
    fused = executor.graph.find("inverted_residual")
    assert [node.name for node in fused] == ["b1_project", "b2_project"]  # b2_add was folded into b2_project
    assert fused[0].annotations[FUSED_LAYERS] == ("b1_expand", "b1_dw", "b1_project")
    assert [node.params["add_input"] for node in fused] == [False, True]
    assert not blocks.graph.find("inverted_residual") and "b1_dw" in blocks.graph
    hidden = size * size * 96 * 4
    assert (cpu.describe_inverted_residual(fused[1].params, (1, 24, size, size), True) == "fused rows") == (
        hidden >= cpu.FUSED_MIN_HIDDEN_BYTES)
    x = rng.standard_normal((2, 8, size, size)).astype(np.float32)
    layers = Executor(blocks.graph.copy(), fuse_blocks=False)
    assert not layers.graph.find("inverted_residual")
    np.testing.assert_allclose(executor.run(x), layers.run(x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(executor.run(x), run_reference(blocks.graph, x), rtol=1e-4, atol=1e-4)


def test_a_fused_layer_cannot_be_tapped_unless_the_executor_leaves_blocks_alone(blocks, rng):
    x = rng.standard_normal((1, 8, 20, 20)).astype(np.float32)
    with pytest.raises(ValueError, match="'b1_dw'.*fuse_blocks=False"):
        Executor(blocks.graph.copy()).run(x, taps={"b1_dw": None})
    taps = {"b1_dw": None}
    Executor(blocks.graph.copy(), fuse_blocks=False).run(x, taps=taps)
    assert taps["b1_dw"].shape == (1, 64, 10, 10)


@pytest.mark.parametrize("other_reads,fused", [(None, 1), ("expand", 0), ("dw", 0)],
                         ids=["fused", "expand-read-elsewhere", "depthwise-read-elsewhere"])
def test_only_chains_whose_inner_values_nothing_else_reads_are_fused(write_spec, other_reads, fused):
    spec = ("name: chain\ninput: {name: data, shape: [4, 9, 9]}\nlayers:\n"
            "  - {name: expand, op: conv, out_channels: 12, kernel_size: 1}\n"
            "  - {name: dw, op: conv, out_channels: 12, kernel_size: 3, padding: 1, groups: 12}\n"
            "  - {name: project, op: conv, out_channels: 4, kernel_size: 1}\n")
    if other_reads:
        spec += (f"  - {{name: other, op: conv, out_channels: 4, kernel_size: 1, inputs: [{other_reads}]}}\n"
                 "  - {name: join, op: add, inputs: [project, other]}\n")
    graph = graphconv.load(write_spec(spec)).graph.copy()
    get_pass("fuse-inverted-residual").run(graph)
    assert len(graph.find("inverted_residual")) == fused


@pytest.mark.parametrize("layer,why", [
    ("{name: dw, op: conv, out_channels: 24, kernel_size: 3, groups: 12}", "two outputs an input channel"),
    ("{name: dw, op: conv, out_channels: 12, kernel_size: 3, groups: 4}", "grouped, not depthwise"),
], ids=["multiplier-2", "grouped"])
def test_a_middle_conv_that_is_not_depthwise_one_to_one_is_left_alone(write_spec, layer, why):
    spec = ("name: chain\ninput: {name: data, shape: [4, 9, 9]}\nlayers:\n"
            "  - {name: expand, op: conv, out_channels: 12, kernel_size: 1}\n"
            f"  - {layer}\n"
            "  - {name: project, op: conv, out_channels: 4, kernel_size: 1}\n")
    graph = graphconv.load(write_spec(spec)).graph.copy()
    assert not get_pass("fuse-inverted-residual").run(graph), why
