"""FC -> CONV: the rewrite that lets a classifier slide over images of any size.

An fc layer that sees a C x H x W map computes one dot product per output over the
flattened (C, H, W) map: exactly a conv with an H x W kernel, no padding, stride 1.
Its [out, C*H*W] weight, flattened in C,H,W order, reshapes to [out, C, H, W] without
moving a number. Every later fc sees a (K, 1, 1) map and becomes a 1x1 conv the same way.
"""
from graphconv.ir import Graph
from graphconv.ops import get_op
from graphconv.params import normalize_params
from graphconv.pass_manager import register_pass
from graphconv.strides import refuse_whole_map_layers


@register_pass("fc-to-conv", "rewrite every fc layer as the equivalent convolution",
               requires=("shapes",), preserves=("shapes",))
def fc_to_conv(graph: Graph) -> bool:
    fcs = graph.find("fc")
    if fcs:
        refuse_whole_map_layers(graph)  # it would slide, and be wrong
    for fc in fcs:
        c, h, w = fc.inputs[0].shape
        weight = fc.weights["weight"].reshape(fc.params["out_features"], c, h, w)
        params = normalize_params(get_op("conv"), {"out_channels": fc.params["out_features"],
                                                   "kernel_size": (h, w), "bias": fc.params["bias"]})
        shape = fc.shape
        conv = graph.replace(fc, "conv", params, {**fc.weights, "weight": weight})
        graph.set_shape(conv, shape)
    return bool(fcs)
