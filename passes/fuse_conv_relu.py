"""Fuse conv -> relu into one conv whose kernel applies bias and ReLU in its epilogue,
saving a full pass over the activation in memory."""
from graphconv.ir import Graph
from graphconv.pass_manager import register_pass


@register_pass("fuse-conv-relu", "fold a relu into the conv before it (one kernel: conv+bias+relu)",
               preserves=("shapes",))
def fuse_conv_relu(graph: Graph) -> bool:
    fused = False
    for conv, relu in graph.match_chain(["conv", "relu"]):
        if conv.params["activation"] == "none":
            graph.set_params(conv, activation="relu")
            graph.remove(relu)
            fused = True
    return fused
