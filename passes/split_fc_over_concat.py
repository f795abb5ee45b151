"""Split an fc over concatenated flattened maps into one fc per map, summed.

A network with two branches may flatten each, concatenate the features and end in one
fc (`torch.cat([a.flatten(1), b.flatten(1)], 1)` then `nn.Linear`). remove-flatten must
keep those flattens (on a larger image the concat would join each flatten's features as
a map's channels), so the network could not slide. But an fc is a sum over its input
features: over a concat it is the sum of one fc per concatenated input, each with the
weight's columns for that input's features, the bias added once. Then each flatten is
read by an fc alone, remove-flatten drops it, fc-to-conv makes each fc a conv over its
branch's map, and an add sums the branches' score maps cell by cell (where they line up:
the compiler refuses branches of different strides, naming the layer).
"""
from graphconv.ir import Graph, Node
from graphconv.pass_manager import register_pass


@register_pass("split-fc-over-concat", "make an fc over a concat of flattened maps one fc per concatenated input, "
                                       "summed, so that remove-flatten can drop the flattens",
               requires=("shapes",), preserves=("shapes",))
def split_fc_over_concat(graph: Graph) -> bool:
    fcs = [fc for fc in graph.find("fc")
           if fc.inputs[0].op == "concat" and any(_flattened(part) for part in fc.inputs[0].inputs)]
    for fc in fcs:
        _split(graph, fc)
    return bool(fcs)


def _flattened(node: Node) -> bool:
    """Whether `node` is a flatten, or per-element layers after one (what remove-flatten
    drops a flatten through)."""
    while node.op != "flatten":
        if len(node.inputs) != 1 or not node.opdef.per_element:
            return False
        node = node.inputs[0]
    return True


def _split(graph: Graph, fc: Node) -> None:
    """`fc` (named, placed and read as before) becomes an add of one fc per input of the
    concat it reads; the concat goes where nothing else reads it."""
    concat, shape = fc.inputs[0], fc.shape
    outputs = fc.params["out_features"]
    weight = fc.weights["weight"].reshape(outputs, *concat.shape)  # C, H, W order: an input's channels are a slice
    parts, first = [], 0
    for part in concat.inputs:
        channels = part.shape[0]
        bias = fc.weights.get("bias") if not parts else None
        part_fc = graph.add(graph.fresh_name(f"{fc.name}_over_{part.name}"), "fc", [part],
                            {"out_features": outputs, "bias": bias is not None},
                            {"weight": weight[:, first:first + channels].reshape(outputs, -1), "bias": bias}, fc.loc)
        graph.set_shape(part_fc, shape)
        parts.append(part_fc)
        first += channels
    total = graph.replace(fc, "add")
    graph.set_inputs(total, parts)
    graph.set_shape(total, shape)
    if not concat.users and concat != graph.output:
        graph.erase(concat)
