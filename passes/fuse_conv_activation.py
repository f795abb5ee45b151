"""Fold the activation after a conv (any of `activations.FUSED`; a gelu only in its exact
form, a clip only to [0, 6], ReLU6) into the conv, whose kernel applies it as it writes
its outputs: one full pass over the map in memory saved (the activation reading
and writing it again). The name it had when it folded ReLUs only, `fuse-conv-relu`,
still runs it."""
from graphconv.ir import Graph
from graphconv.ops.activations import FUSED_FROM, fusable, fused_activation_names
from graphconv.pass_manager import register_pass


@register_pass("fuse-conv-activation", f"fold a {fused_activation_names()} into the conv before it "
               "(one kernel: conv+bias+activation)", preserves=("shapes",))
def fuse_conv_activation(graph: Graph) -> bool:
    return fold_activations_into(graph, "conv")


def fold_activations_into(graph: Graph, op: str) -> bool:
    """Give each layer of `op` (one with an `activation` param, `activations.FUSED`)
    without an activation the one its only reader applies, and drop that reader."""
    fused = False
    for activation_op in FUSED_FROM:
        for layer, activation in graph.match_chain([op, activation_op]):
            if layer.params["activation"] == "none" and fusable(activation):
                graph.set_params(layer, activation=fusable(activation))
                graph.remove(activation)
                fused = True
    return fused
