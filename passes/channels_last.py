"""Store the values between channels-last-capable ops channels-last (the CPU backend's layout pass).

A value is annotated `layout: channels-last` when the op that writes it and every op
that reads it declare `channels_last` in the op registry (their CPU kernels take and
write values stored either way, `graphconv.ops.channels_last`), it is not the network's
output (callers get NCHW), and, for an op whose kernel would need a transposing copy
to change storage ("like-input": the pools), its input is stored channels-last too. Everything else stays NCHW; the kernels on an
edge between the two read one storage and write the other, so no conversion layer is
ever inserted. In ResNet-50 that is every value from conv1's output to the global
pooling's input: 1x1 convs then read and write contiguous runs of channels, and the
3x3 convs skip their transposing copy in and their transposing write out.

The annotation changes how values are stored, never what they are: shapes, receptive
fields and the numpy references are untouched. The CPU backend runs this pass on every
graph it binds (`Executor`), so saved models get it too; it can be run in a pipeline to
see its result (`graphconv compile --passes ...,channels-last --print-ir-after
channels-last`). GRAPHCONV_CHANNELS_LAST=0 turns it off (every value NCHW), to compare.
"""
import os

from graphconv.ir import Graph, Node
from graphconv.ops.channels_last import CHANNELS_LAST, LAYOUT
from graphconv.pass_manager import register_pass

ENABLED = os.environ.get("GRAPHCONV_CHANNELS_LAST", "1") != "0"


@register_pass("channels-last", "store values channels-last between ops whose CPU kernels take that layout",
               preserves=("shapes", "receptive-fields"))
def channels_last(graph: Graph) -> bool:
    changed = False
    for node in graph.layers():
        wanted = ENABLED and _can_store_channels_last(graph, node)
        if wanted != (node.annotations.get(LAYOUT) == CHANNELS_LAST):
            changed = True
            if wanted:
                graph.annotate(node, LAYOUT, CHANNELS_LAST)
            else:
                node.annotations.pop(LAYOUT, None)
    return changed


def _can_store_channels_last(graph: Graph, node: Node) -> bool:
    """Decided in topological order, so a "like-input" op's input is decided already."""
    users, kind = node.users, node.opdef.channels_last
    if kind == "like-input" and node.inputs[0].annotations.get(LAYOUT) != CHANNELS_LAST:
        return False  # its kernel would transpose a copy, which the next conv's input copy does anyway
    return (node.name != graph.output.name and bool(users) and bool(kind)
            and all(user.opdef.channels_last for user in users))

