"""fuse-conv-add: a conv -> add (-> relu) chain becomes one conv with a residual input,
computing the same map (whole, tiled and exported), and nothing else is fused."""
import numpy as np
import pytest

import graphconv
from graphconv.frontends.onnx_export import to_onnx_model
from graphconv.pass_manager import DEFAULT_PIPELINE
from graphconv.runtime import Executor, run_reference
from graphconv.tiling import run_tiled
from conftest import random_input

# A bottleneck block with a projection shortcut (both add inputs are convs), an identity
# bottleneck and a basic block (3x3 convs, the Winograd path), as torchvision's ResNets.
RESIDUAL = """
name: residual
input: {shape: [8, 19, 17]}
layers:
  - {name: stem, op: conv, out_channels: 16, kernel_size: 3, padding: 1}
  - {name: stem_relu, op: relu}
  - {name: b1_conv1, op: conv, out_channels: 8, kernel_size: 1}
  - {name: b1_relu1, op: relu}
  - {name: b1_conv2, op: conv, out_channels: 8, kernel_size: 3, stride: 2, padding: 1}
  - {name: b1_relu2, op: relu}
  - {name: b1_conv3, op: conv, out_channels: 32, kernel_size: 1}
  - {name: b1_down, op: conv, out_channels: 32, kernel_size: 1, stride: 2, inputs: [stem_relu]}
  - {name: b1_add, op: add, inputs: [b1_conv3, b1_down]}
  - {name: b1_out, op: relu}
  - {name: b2_conv1, op: conv, out_channels: 16, kernel_size: 1}
  - {name: b2_relu1, op: relu}
  - {name: b2_conv2, op: conv, out_channels: 32, kernel_size: 3, padding: 1}
  - {name: b2_add, op: add, inputs: [b1_out, b2_conv2]}
  - {name: b2_out, op: relu}
  - {name: b3_conv1, op: conv, out_channels: 32, kernel_size: 3, padding: 1}
  - {name: b3_relu1, op: relu}
  - {name: b3_conv2, op: conv, out_channels: 32, kernel_size: 3, padding: 1}
  - {name: b3_add, op: add, inputs: [b3_conv2, b2_out]}
  - {name: b3_out, op: relu}
  - {name: head, op: conv, out_channels: 5, kernel_size: 3}
"""

# None of these adds can be folded: a ReLU already on the conv, a conv whose input is
# the add's other input, a conv something else reads too, three inputs, no conv at all.
UNFUSABLE = """
name: unfusable
input: {shape: [4, 9, 9]}
layers:
  - {name: c0, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: a0, op: add, inputs: [c0, data]}
  - {name: c1, op: conv, out_channels: 4, kernel_size: 3, padding: 1, activation: relu}
  - {name: a1, op: add, inputs: [c1, a0]}
  - {name: c2, op: conv, out_channels: 4, kernel_size: 1}
  - {name: a2, op: add, inputs: [c2, a1]}
  - {name: c3, op: conv, out_channels: 4, kernel_size: 1, inputs: [c2]}
  - {name: a3, op: add, inputs: [c3, a2, a1]}
  - {name: a4, op: add, inputs: [a3, a2]}
"""


def test_residual_blocks_become_single_convs(write_spec):
    graph = graphconv.compile_model(graphconv.load(write_spec(RESIDUAL)).graph).graph
    assert not graph.find("add") and not graph.find("relu")
    fused = {n.name: [i.name for i in n.inputs] for n in graph.find("conv") if len(n.inputs) == 2}
    assert fused == {"b1_down": ["stem", "b1_conv3"],  # the later of the two convs takes the other
                     "b2_conv2": ["b2_conv1", "b1_down"], "b3_conv2": ["b3_conv1", "b2_conv2"]}
    assert all(graph.node(name).params["activation"] == "relu" for name in fused)


def test_fusing_keeps_the_map(write_spec, rng):
    model = graphconv.load(write_spec(RESIDUAL))
    fused = graphconv.compile_model(model.graph, "shape-inference,fuse-conv-activation,fuse-conv-add")
    x = random_input(rng, (2, 8, 40, 37))
    want = run_reference(model.graph, x)
    np.testing.assert_allclose(run_reference(fused.graph, x), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(Executor(fused.graph).run(x), want, rtol=1e-4, atol=1e-4)


def test_a_fused_network_tiles_exactly(write_spec, rng):
    """The residual input joins the conv's receptive field after its window: tiles planned
    from it give the whole image's map."""
    model = graphconv.compile_model(graphconv.load(write_spec(RESIDUAL)).graph)
    x = random_input(rng, (1, 8, 61, 53))
    np.testing.assert_allclose(run_tiled(model, x, 40), model.run(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["dilate", "shift"])
def test_a_finer_output_stride_gives_the_unfused_networks_map(write_spec, rng, method):
    """With --output-stride the fused convs' strides and dilations change with the rest
    (b1_down, a strided projection, keeps its residual at its own resolution)."""
    path = write_spec(RESIDUAL)
    unfused = ",".join(name for name in DEFAULT_PIPELINE if name != "fuse-conv-add")
    x = random_input(rng, (1, 8, 38, 35))
    fused = graphconv.compile_model(path, output_stride=1, stride_method=method)
    assert sum(len(n.inputs) == 2 for n in fused.graph.find("conv")) == 3
    want = graphconv.compile_model(path, unfused, output_stride=1, stride_method=method).run(x)
    np.testing.assert_allclose(fused.run(x), want, rtol=1e-4, atol=1e-5)


def test_a_fused_network_exports_to_onnx(write_spec, rng):
    ort = pytest.importorskip("onnxruntime")
    model = graphconv.compile_model(graphconv.load(write_spec(RESIDUAL)).graph)
    session = ort.InferenceSession(to_onnx_model(model.graph).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    x = random_input(rng, (1, 8, 30, 33))
    got, = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(got, Executor(model.graph).run(x), rtol=1e-4, atol=1e-4)


def test_only_a_conv_that_feeds_the_add_alone_and_has_no_activation_is_fused(write_spec):
    graph = graphconv.compile_model(graphconv.load(write_spec(UNFUSABLE)).graph, "shape-inference,fuse-conv-add").graph
    assert [n.name for n in graph.find("add")] == ["a0", "a1", "a2", "a3", "a4"]
    assert all(len(n.inputs) == 1 for n in graph.find("conv"))


def test_a_residual_of_the_wrong_shape_is_a_shape_error(write_spec):
    spec = write_spec("""
        name: bad
        input: {shape: [4, 9, 9]}
        layers:
          - {name: c0, op: conv, out_channels: 4, kernel_size: 1}
          - {name: c1, op: conv, out_channels: 4, kernel_size: 3, inputs: [c0, data]}
        """)
    with pytest.raises(graphconv.GraphconvError, match="residual input added to the output must be 4x7x7, got 4x9x9"):
        graphconv.compile_model(graphconv.load(spec).graph)
