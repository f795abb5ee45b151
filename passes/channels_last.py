"""Store the values between channels-last-capable ops channels-last (the CPU backend's layout pass).

A value is annotated `layout: channels-last` when the op that writes it and every op
that reads it declare `channels_last` in the op registry (their CPU kernels take and
write values stored either way, `graphconv.ops.channels_last`), it is not the network's
output (callers get NCHW), and, where an op's kernel would need a transposing copy to
change storage (the input of a "like-input" op, an activation's; a conv's residual
input), the op's input and output are stored alike. An "into-planes" op (the pools)
writes an NCHW output from a channels-last input row by row at no extra cost, so only
its output follows its input: its input is channels-last wherever its producer can write
it so (a pool that is the network's output: ResNet-style stem conv then pool, 1.25 ->
0.52 ms at 224x224, the conv channels-last).
Everything else stays NCHW; the kernels on an edge between the two read one storage
and write the other, so no conversion layer is ever inserted. In ResNet-50 that is every value from conv1's output to the global
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
from graphconv.ops.layout import CHANNELS_LAST, LAYOUT
from graphconv.pass_manager import register_pass

ENABLED = os.environ.get("GRAPHCONV_CHANNELS_LAST", "1") != "0"
KEEPS_STORAGE = ("like-input", "into-planes")  # ops whose channels-last output needs a channels-last input


@register_pass("channels-last", "store values channels-last between ops whose CPU kernels take that layout",
               preserves=("shapes", "receptive-fields"))
def channels_last(graph: Graph) -> bool:
    changed = False
    may_write: dict[str, bool] = {}
    for node in graph.layers():
        wanted = ENABLED and _can_store_channels_last(graph, node, may_write)
        if wanted != (node.annotations.get(LAYOUT) == CHANNELS_LAST):
            changed = True
            if wanted:
                graph.annotate(node, LAYOUT, CHANNELS_LAST)
            else:
                node.annotations.pop(LAYOUT, None)
    return changed


def _can_store_channels_last(graph: Graph, node: Node, may_write: dict[str, bool]) -> bool:
    """Decided in topological order, so a "like-input" or "into-planes" op's input is decided already."""
    if node.opdef.channels_last in KEEPS_STORAGE and node.inputs[0].annotations.get(LAYOUT) != CHANNELS_LAST:
        return False
    return _may_write_channels_last(graph, node, may_write)


def _may_write_channels_last(graph: Graph, node: Node, may_write: dict[str, bool]) -> bool:
    """Whether `node`'s value can be channels-last as far as the ops reading it go. An op
    that reads it in the storage of its own output (a "like-input" op's input; a conv's
    residual input, which it adds while writing) would otherwise convert it with a transposing
    copy, where the producer writes either storage for free: then the value is
    channels-last only if that reader's own value can be. Memoised in `may_write`, as
    the readers' answers are asked again by every value they read."""
    if node.name not in may_write:
        may_write[node.name] = bool(node.opdef.channels_last) and _readers_take_it(graph, node) and all(
            _may_write_channels_last(graph, user, may_write)
            for user in node.users if _reads_in_output_storage(user, node))
    return may_write[node.name]


def _reads_in_output_storage(user: Node, node: Node) -> bool:
    """Whether `user`'s kernel wants `node`'s value stored as `user`'s output is: the
    input of a "like-input" op, any input but the first of an "any" op (a conv's residual)."""
    if user.opdef.channels_last == "like-input":
        return True
    return any(source.name == node.name for source in user.inputs[1:])


def _readers_take_it(graph: Graph, node: Node) -> bool:
    """Whether every op reading `node`'s value takes channels-last, and a caller does not."""
    users = node.users
    return node.name != graph.output.name and bool(users) and all(user.opdef.channels_last for user in users)
