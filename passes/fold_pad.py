"""Fold a pad layer into the conv or pool it feeds: one layer, and no padded copy of the map.

Keras' ZeroPadding2D and PyTorch's nn.ZeroPad2d / F.pad write a padding of their own before
a conv; ONNX files carry it as a Pad node and the importer keeps it as a `pad` layer. A
conv pads with zeros, a max pool with what no max picks and an average pool that counts
its padding with zeros that count, so a pad of the matching value in front of one of them
is the same as that layer padding by the pad's amounts more:

* a pad of 0 before a conv,
* a pad of -inf before a maxpool,
* a pad of 0 before an avgpool with count_include_pad,

provided the sum is symmetric (graphconv's convs and pools pad the two sides of an axis
alike), the pad is read by that layer alone (another reader needs the padded map), and
the pool is not in ceil mode (its last window's place depends on where the image ends
and the padding starts; a pad moves that). A pool whose padding would then be more than
half its window is left as it is too: graphconv's pools refuse that. A pad of zeros on
every side is the identity and is removed wherever it is.

Which ops take a pad, and of what value, their OpDefs say (`padding_value`).

What is left (an uneven remainder, a pad read twice, a nonzero pad before a conv, a
reflect or edge pad) stays a `pad` layer and its own kernel runs it: the result is the
same either way, only slower.
"""
from graphconv.errors import ShapeError
from graphconv.ir import Graph, Node
from graphconv.pass_manager import register_pass


@register_pass("fold-pad", "fold a pad layer into the conv or pool after it where the sum pads "
               "symmetrically (zeros into a conv, -inf into a maxpool)", requires=("shapes",),
               preserves=("shapes",))
def fold_pad(graph: Graph) -> bool:
    folded = False
    for pad in graph.find("pad"):
        if not any(pad.params["padding"]):
            graph.remove(pad)
            folded = True
            continue
        layer = _sole_reader(graph, pad)
        if layer is not None and _absorbs(layer, pad):
            _fold(graph, pad, layer)
            folded = True
    return folded


def _sole_reader(graph: Graph, pad: Node) -> Node | None:
    """The conv or pool that alone reads `pad`, as its only input (a conv's residual
    input is added, not padded); None otherwise, or when the pad is the output."""
    users = pad.users
    if len(users) != 1 or graph.output == pad or users[0].opdef.padding_value is None or len(users[0].inputs) != 1:
        return None
    return users[0]


def _absorbs(layer: Node, pad: Node) -> bool:
    """Whether `layer`, with the pad's amounts added to its padding, computes exactly
    what it computes on the padded map (`OpDef.padding_value`: the pad's value is what
    the layer's own padding stands for)."""
    value = layer.opdef.padding_value(layer.params)
    if pad.params["mode"] != "constant" or value is None or pad.params["value"] != value:
        return False
    top, left, bottom, right = pad.params["padding"]
    if (top, left) != (bottom, right):
        return False  # the conv's own padding is symmetric, so the sum would not be
    try:
        layer.opdef.shape(_with_padding(layer, pad), [pad.inputs[0].shape])
    except ShapeError:
        return False  # a pool padded by more than half its window
    return True


def _with_padding(layer: Node, pad: Node) -> dict:
    """`layer`'s params with the pad's (symmetric) amounts added to its padding."""
    top, left, _, _ = pad.params["padding"]
    ph, pw = layer.params["padding"]
    return {**layer.params, "padding": (ph + top, pw + left)}


def _fold(graph: Graph, pad: Node, layer: Node) -> None:
    graph.set_params(layer, padding=_with_padding(layer, pad)["padding"])
    graph.remove(pad)
