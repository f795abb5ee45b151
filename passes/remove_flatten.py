"""Drop flatten layers that change nothing, so the layers after them can slide.

A flatten turns a C x H x W map into C*H*W channels of one cell: on a larger image it
would fold positions into channels instead of giving a map. Two kinds do nothing at
the crop size and go:

* a flatten whose every reader is an fc, directly or through per-element layers (a
  ReLU, a dropout: `OpDef.per_element`, which give the same values however their input
  is shaped): an fc already flattens its input in the same C, H, W order, so its
  weights mean the same thing either way, and fc-to-conv can then turn it into a conv
  over the H x W map;
* a flatten of a C x 1 x 1 map (after a global pool, say): at the crop it is the
  identity, and without it the 1 x 1 map becomes a map of cells on a larger image.
"""
from graphconv.ir import Graph, Node
from graphconv.pass_manager import register_pass


@register_pass("remove-flatten", "remove flatten layers that only fc layers read (through per-element layers such "
                                 "as a relu at most), or that see a C x 1 x 1 map",
               requires=("shapes",), preserves=("shapes",))
def remove_flatten(graph: Graph) -> bool:
    removed = False
    for flatten in graph.find("flatten"):
        source = flatten.inputs[0]
        between = _per_element_layers_to_fcs(graph, flatten)
        if between is not None or source.shape[1:] == (1, 1):
            graph.remove(flatten)
            for node in between or ():  # they now see the map the flatten saw
                graph.set_shape(node, source.shape)
            removed = True
    return removed


def _per_element_layers_to_fcs(graph: Graph, flatten: Node) -> list[Node] | None:
    """The per-element layers between `flatten` and the fcs that read it, where every path
    from it ends in an fc after such layers only ([] where fcs read it directly); None
    where any reader is something else, or a per-element one is the network's output."""
    between, readers = [], list(flatten.users)
    if not readers or flatten == graph.output:
        return None
    while readers:
        node = readers.pop()
        if node.op == "fc":
            continue
        if not node.opdef.per_element or node == graph.output:
            return None
        if node not in between:
            between.append(node)
            readers.extend(node.users)
    return between
