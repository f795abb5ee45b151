"""Drop flatten layers that change nothing, so the layers after them can slide.

A flatten turns a C x H x W map into C*H*W channels of one cell: on a larger image it
would fold positions into channels instead of giving a map. Two kinds do nothing at
the crop size and go:

* a flatten whose every reader is an fc: an fc already flattens its input in the same
  C, H, W order, so its weights mean the same thing either way, and fc-to-conv can then
  turn it into a conv over the H x W map;
* a flatten of a C x 1 x 1 map (after a global pool, say): at the crop it is the
  identity, and without it the 1 x 1 map becomes a map of cells on a larger image.
"""
from graphconv.ir import Graph
from graphconv.pass_manager import register_pass


@register_pass("remove-flatten", "remove flatten layers that only fc layers read, or that see a C x 1 x 1 map",
               requires=("shapes",), preserves=("shapes",))
def remove_flatten(graph: Graph) -> bool:
    removed = False
    for flatten in graph.find("flatten"):
        source = flatten.inputs[0]
        only_fcs = (bool(flatten.users) and all(user.op == "fc" for user in flatten.users)
                    and graph.output != flatten)
        if only_fcs or source.shape[1:] == (1, 1):
            graph.remove(flatten)
            removed = True
    return removed
