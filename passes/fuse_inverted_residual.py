"""Make each 1x1 conv -> depthwise conv -> 1x1 conv chain one `inverted_residual` layer
(the CPU backend's binding pass, with `channels-last`).

MobileNetV2's blocks (and EfficientNet's and MobileNetV3's without squeeze-and-excitation)
expand their input six times with a 1x1 conv, run a depthwise conv over that, and
project it back with another 1x1 conv, often adding the block's input. On a large map
the expanded map is what costs: layer by layer it goes to memory and back twice (written
by the expand conv, read by the depthwise one, whose output, as wide, is read by the
project conv). The fused layer's CPU kernel computes the three a few rows at a time so
the wide maps stay in cache (`graphconv/ops/inverted_residual/cpu.py`).

A chain is fused where the expand conv is a plain 1x1 conv read by the depthwise conv
alone, the depthwise conv (one output channel an input channel) is read by the project
conv alone, as its first input, and the project conv is a plain 1x1 conv (its residual
input, from `fuse-conv-add`, comes along). Neither inner value may be the network's
output. The CPU backend runs this pass on the copy of the graph it binds
(`runtime.Executor`), so saved models, `inspect` and every other backend see the three
convs; GRAPHCONV_FUSE_BLOCKS=0 turns it off, to compare.
"""
from __future__ import annotations

import os

import numpy as np

from graphconv.ir import FUSED_LAYERS, Graph, Node
from graphconv.ops.conv import is_depthwise
from graphconv.pass_manager import register_pass

ENABLED = os.environ.get("GRAPHCONV_FUSE_BLOCKS", "1") != "0"


@register_pass("fuse-inverted-residual", "make each 1x1 conv -> depthwise conv -> 1x1 conv chain one "
               "inverted_residual layer (the CPU backend's: its kernel runs the three by row bands)",
               preserves=("shapes",))
def fuse_inverted_residual(graph: Graph) -> bool:
    if not ENABLED:
        return False
    fused = False
    for spatial in graph.find("conv"):
        chain = _chain_around(graph, spatial) if spatial.name in graph and spatial.op == "conv" else None
        if chain is not None:
            _fuse(graph, *chain)
            fused = True
    return fused


def _chain_around(graph: Graph, spatial: Node) -> tuple[Node, Node, Node] | None:
    """(expand, depthwise, project) where `spatial` is the depthwise conv of a chain this
    pass fuses, else None."""
    if not (len(spatial.inputs) == 1 and spatial.params["out_channels"] == spatial.params["groups"]
            and _only_reader(graph, spatial)):
        return None
    expand, project = spatial.inputs[0], spatial.users[0]
    if not (_plain_1x1(expand) and len(expand.inputs) == 1 and _only_reader(graph, expand) == spatial
            and is_depthwise(spatial.params, expand.params["out_channels"])):
        return None
    if not (_plain_1x1(project) and project.inputs[0] == spatial and "weight" in expand.weights
            and "weight" in spatial.weights and "weight" in project.weights):
        return None
    return expand, spatial, project


def _only_reader(graph: Graph, node: Node) -> Node | None:
    """The one layer reading `node`'s value, where it is not also the network's output."""
    users = node.users
    return users[0] if len(users) == 1 and graph.output != node and node.op == "conv" else None


def _plain_1x1(node: Node) -> bool:
    """A 1x1, stride-1, unpadded, ungrouped conv."""
    params = node.params
    return (node.op == "conv" and params["groups"] == 1 and tuple(params["kernel_size"]) == (1, 1)
            and tuple(params["stride"]) == (1, 1) and tuple(params["padding"]) == (0, 0))


def _fuse(graph: Graph, expand: Node, spatial: Node, project: Node) -> None:
    block_input = expand.inputs[0]
    residual = project.inputs[1] if len(project.inputs) == 2 else None
    params = dict(out_channels=project.params["out_channels"], hidden_channels=expand.params["out_channels"],
                  kernel_size=spatial.params["kernel_size"], stride=spatial.params["stride"],
                  padding=spatial.params["padding"], dilation=spatial.params["dilation"],
                  expand_activation=expand.params["activation"], depthwise_activation=spatial.params["activation"],
                  activation=project.params["activation"], add_input=residual == block_input)
    weights = {f"{stage}_{key}": value for stage, conv in (("expand", expand), ("depthwise", spatial),
                                                           ("project", project))
               for key, value in _with_bias(conv).items()}
    names = (expand.name, spatial.name, project.name)
    block = graph.replace(project, "inverted_residual", params, weights)
    graph.set_inputs(block, [block_input] + ([residual] if residual is not None and residual != block_input else []))
    graph.erase(names[1])
    graph.erase(names[0])
    graph.annotate(block, FUSED_LAYERS, names)


def _with_bias(conv: Node) -> dict[str, np.ndarray]:
    """A conv's weight and bias, zeros where it has none."""
    weight = conv.weights["weight"]
    bias = conv.weights.get("bias")
    return {"weight": weight, "bias": np.zeros(weight.shape[0], np.float32) if bias is None else bias}
