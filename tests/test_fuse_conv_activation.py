"""fuse-conv-activation: the relu, silu, hardswish, exact gelu, relu6 or mish after a conv becomes the
conv's own `activation`, the same map (whole, exported to ONNX, put back by conv-to-fc),
and nothing else is fused."""
import numpy as np
import pytest

import graphconv
from graphconv.frontends.onnx_export import to_onnx_model
from graphconv.runtime import Executor, run_reference
from conftest import random_input

# The activations of ReLU networks, EfficientNet, MobileNetV3, ConvNeXt, MobileNetV2
# (ReLU6, a clip to [0, 6]) and CSPDarknet (mish) after convs of each CPU strategy (3x3, 1x1,
# depthwise), and a residual block ending in silu.
MODERN = """
name: modern
input: {shape: [6, 13, 11]}
layers:
  - {name: stem, op: conv, out_channels: 8, kernel_size: 3, stride: 2, padding: 1}
  - {name: stem_act, op: silu}
  - {name: dw, op: conv, out_channels: 8, kernel_size: 3, padding: 1, groups: 8}
  - {name: dw_act, op: hardswish}
  - {name: expand, op: conv, out_channels: 16, kernel_size: 1}
  - {name: expand_act, op: gelu}
  - {name: project, op: conv, out_channels: 8, kernel_size: 1}
  - {name: sum, op: add, inputs: [project, dw_act]}
  - {name: sum_act, op: silu}
  - {name: head, op: conv, out_channels: 4, kernel_size: 3}
  - {name: head_act, op: relu}
  - {name: tail, op: conv, out_channels: 4, kernel_size: 1}
  - {name: tail_act, op: clip, min: 0, max: 6}
  - {name: neck, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: neck_act, op: mish}
"""

# Not fused: the tanh form of gelu (the kernels compute the erf form), a clip that is not
# ReLU6, an activation on a conv another layer reads too, an activation after a layer
# that is not a conv.
UNFUSABLE = """
name: unfusable
input: {shape: [4, 9, 9]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: tanh_gelu, op: gelu, approximate: tanh}
  - {name: c3, op: conv, out_channels: 4, kernel_size: 1}
  - {name: clip_5, op: clip, min: 0, max: 5}
  - {name: c2, op: conv, out_channels: 4, kernel_size: 1}
  - {name: shared, op: silu}
  - {name: side, op: relu, inputs: [c2]}
  - {name: both, op: add, inputs: [shared, side]}
  - {name: pooled, op: maxpool, kernel_size: 2}
  - {name: after_pool, op: hardswish}
"""


def test_every_fusable_activation_joins_its_conv(write_spec):
    graph = graphconv.compile_model(graphconv.load(write_spec(MODERN)).graph).graph
    activations = {n.name: n.params["activation"] for n in graph.find("conv")}
    assert activations == {"stem": "silu", "dw": "hardswish", "expand": "gelu", "project": "silu", "head": "relu",
                           "tail": "relu6", "neck": "mish"}
    assert [n.op for n in graph.layers()] == ["conv"] * 7
    assert [i.name for i in graph.node("project").inputs] == ["expand", "dw"]  # the add, then silu: fuse-conv-add


@pytest.mark.parametrize("device", ["cpu", "reference"])
def test_fusing_keeps_the_map(write_spec, rng, device):
    model = graphconv.load(write_spec(MODERN))
    fused = graphconv.compile_model(model.graph, "shape-inference,fuse-conv-activation,fuse-conv-add")
    x = random_input(rng, (2, 6, 30, 27))
    want = run_reference(model.graph, x)
    got = run_reference(fused.graph, x) if device == "reference" else Executor(fused.graph).run(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_nothing_else_is_fused(write_spec):
    graph = graphconv.run_passes(graphconv.load(write_spec(UNFUSABLE)).graph, "shape-inference,fuse-conv-activation")
    assert {n.name: n.params["activation"] for n in graph.find("conv")} == {"c1": "none", "c2": "none", "c3": "none"}
    assert len(list(graph.layers())) == 10


def test_the_old_name_runs_it(write_spec):
    graph = graphconv.run_passes(graphconv.load(write_spec(MODERN)).graph, "shape-inference,fuse-conv-relu")
    assert graph.node("stem").params["activation"] == "silu"


def test_a_fused_model_exports_to_onnx_and_runs_there(write_spec, rng):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = graphconv.compile_model(graphconv.load(write_spec(MODERN)).graph)
    x = random_input(rng, (1, 6, 13, 11))
    session = ort.InferenceSession(to_onnx_model(model.graph).SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, Executor(model.graph).run(x), rtol=1e-4, atol=1e-5)


def test_conv_to_fc_puts_the_activation_back_as_a_layer(write_spec, rng):
    """An fc applies no activation itself: the conv's fused one comes back after it."""
    spec = write_spec("""
        name: head
        input: {shape: [3, 4, 4]}
        layers:
          - {name: c, op: conv, out_channels: 5, kernel_size: 4, activation: gelu}
    """)
    model = graphconv.load(spec)
    graph = graphconv.run_passes(model.graph, "shape-inference,conv-to-fc")
    assert [(n.op, n.params.get("approximate")) for n in graph.layers()] == [("fc", None), ("gelu", "none")]
    x = random_input(rng, (2, 3, 4, 4))
    np.testing.assert_allclose(run_reference(graph, x), run_reference(model.graph, x), rtol=1e-5, atol=1e-6)


def test_fusing_changes_no_flop_total(write_spec):
    """A fused activation is counted as its layer was: FLOP columns compare across passes."""
    from graphconv.cost import total_flops
    model = graphconv.load(write_spec(MODERN))
    fused = graphconv.compile_model(model.graph, "shape-inference,fuse-conv-activation")
    assert total_flops(fused.graph) == total_flops(model.graph)


def test_a_new_activation_of_no_params_fuses_once_listed(write_spec, monkeypatch):
    """What docs/adding-an-op.md promises: an op of no params named in both FUSED and
    FUSED_FROM is `fusable` as itself, with no line of its own there; one in only one of
    them is not, and neither is an op with params that has no line of its own."""
    from graphconv.ops import activations
    graph = graphconv.load(write_spec("""
        name: new
        input: {shape: [2, 4, 4]}
        layers:
          - {name: c, op: conv, out_channels: 2, kernel_size: 1}
          - {name: t, op: tanh}
          - {name: l, op: leaky_relu}
    """)).graph
    tanh, leaky = graph.node("t"), graph.node("l")
    assert activations.fusable(tanh) is None
    monkeypatch.setattr(activations, "FUSED", activations.FUSED + ("tanh", "leaky_relu"))
    assert activations.fusable(tanh) is None  # not in FUSED_FROM yet
    monkeypatch.setattr(activations, "FUSED_FROM", activations.FUSED_FROM + ("tanh", "leaky_relu"))
    assert activations.fusable(tanh) == "tanh"
    assert activations.fusable(leaky) is None  # alpha: which values, fusable must say
    monkeypatch.setattr(activations, "FUSED", activations.FUSED[:-2])
    assert activations.fusable(tanh) is None  # no code for the kernels


def test_the_description_names_every_fusable_activation(monkeypatch):
    """`graphconv passes` prints it: built from FUSED, it names an entry added there."""
    from graphconv.ops import activations
    from graphconv.pass_manager import get_pass
    description = get_pass("fuse-conv-activation").description
    assert description.startswith(f"fold a {activations.fused_activation_names()} into the conv")
    assert [name for name in activations.FUSED if name in description] == list(activations.FUSED[1:])
    monkeypatch.setattr(activations, "FUSED", activations.FUSED + ("softsign",))
    assert activations.fused_activation_names().endswith(", mish or softsign")
