"""Fold a residual add (and the activation after it, a relu in ResNet) into the conv before it.

ResNet's blocks end in `relu(conv3(x) + identity)`: three passes over the activation
(the conv writing it, the add reading two maps and writing one, the relu reading and
writing it again). The conv op takes an optional second input that its kernel adds while
writing its output, before the activation, so the chain becomes one kernel and one
pass over memory (onnxruntime fuses Conv+Add+Relu the same way).

Only a conv whose output nothing but the add reads, with no activation of its own (a
ReLU before the add is another network), is folded. When both inputs of the add are
such convs (a block with a projection shortcut), the one that runs later takes the
other's output as its residual input.
"""
from graphconv.ir import Graph, Node
from graphconv.ops.activations import fusable, fused_activation_names
from graphconv.pass_manager import register_pass


@register_pass("fuse-conv-add", f"fold a residual add (and a {fused_activation_names()} after it) "
               "into the conv before it (one kernel: conv+bias+residual+activation)", preserves=("shapes",))
def fuse_conv_add(graph: Graph) -> bool:
    fused = False
    order = {node.name: index for index, node in enumerate(graph.layers())}
    for add in graph.find("add"):
        if len(add.inputs) != 2:
            continue
        candidates = [n for n in add.inputs if _foldable(graph, n, add)]
        if not candidates:
            continue
        conv = max(candidates, key=lambda n: order[n.name])
        residual = next(n for n in add.inputs if n != conv)
        graph.set_inputs(conv, [conv.inputs[0], residual])
        graph.replace_all_uses(add, conv)
        graph.erase(add)
        users = conv.users
        if len(users) == 1 and fusable(users[0]) and graph.output != conv:
            graph.set_params(conv, activation=fusable(users[0]))
            graph.remove(users[0])
        fused = True
    return fused


def _foldable(graph: Graph, node: Node, add: Node) -> bool:
    """Whether the add can be folded into `node`; not when the add's other input is the
    conv's own input: the fused conv would read that value twice, the second time through
    an identity copy (`Graph._connect`), which costs about what fusing saves."""
    if not (node.op == "conv" and node.params["activation"] == "none" and len(node.inputs) == 1
            and node.users == [add] and graph.output != node):
        return False
    residual = next(n for n in add.inputs if n != node)
    return residual != node.inputs[0]
