"""CONV -> FC: the other direction of the equivalence.

A conv over a known C x H x W input is an fc layer whose [O*Ho*Wo, C*H*W] matrix is
zero outside each output's receptive field and repeats the shared kernel weights.
Useful for teaching, for FC-only targets and for checking the equivalence; the matrix
grows with the square of the map, so the pass refuses layers over `max_elements`.
Only convs whose output is consumed flattened (a 1x1 map, or read only by fc layers,
which flatten in the same C,H,W order) can become fc without a reshape.
"""
from __future__ import annotations

import numpy as np

from graphconv.errors import GraphconvError
from graphconv.ir import Graph, Node
from graphconv.ops import get_op, pair
from graphconv.ops.activations import fused_layer
from graphconv.params import normalize_params
from graphconv.pass_manager import register_pass

DEFAULT_MAX_ELEMENTS = 1 << 24  # 64 MB of float32


@register_pass("conv-to-fc", "rewrite convs as fc layers with the equivalent dense matrix",
               requires=("shapes",), preserves=("shapes",))
def conv_to_fc(graph: Graph, layer: str = "", max_elements: int = DEFAULT_MAX_ELEMENTS) -> bool:
    if layer:
        if layer not in graph or graph.node(layer).op != "conv":
            raise GraphconvError(f"conv-to-fc: there is no conv layer named '{layer}'")
        targets = [graph.node(layer)]
        problem = _why_not_flat(graph, targets[0])
        if problem:
            raise targets[0].error(f"cannot become fc: {problem}")
    else:
        targets = [n for n in graph.find("conv") if not _why_not_flat(graph, n)]
    for conv in targets:
        in_shape, out_shape = conv.inputs[0].shape, conv.shape
        size = int(np.prod(out_shape)) * int(np.prod(in_shape))
        if size > max_elements:
            raise conv.error(f"as fc it needs a {np.prod(out_shape)}x{np.prod(in_shape)} matrix "
                             f"({size:,} entries), over the limit of {max_elements:,}; raise it "
                             f"with conv-to-fc{{max_elements={size}}}")
        weight, bias = dense_matrix(conv.params, conv.weights, in_shape, out_shape)
        activation = conv.params["activation"]
        params = normalize_params(get_op("fc"), {"out_features": weight.shape[0], "bias": bias is not None})
        fc = graph.replace(conv, "fc", params,
                           {"weight": weight} if bias is None else {"weight": weight, "bias": bias})
        graph.set_shape(fc, (weight.shape[0], 1, 1))
        if activation != "none":  # an fc applies none itself: the layer the conv had fused
            op, op_params = fused_layer(activation)
            after = graph.insert_after(fc, graph.fresh_name(f"{fc.name}_{op}"), op, op_params)
            graph.set_shape(after, (weight.shape[0], 1, 1))
    return bool(targets)


def _why_not_flat(graph: Graph, conv: Node) -> str:
    if len(conv.inputs) > 1:
        return "it adds a residual input (an fc has one input)"
    if conv.shape[1:] == (1, 1):
        return ""
    if conv.users and all(u.op == "fc" for u in conv.users) and graph.output != conv:
        return ""
    return (f"its {conv.shape[1]}x{conv.shape[2]} output map is read by layers other than fc "
            "(only a 1x1 map, or one read by fc layers, is the same flattened)")


def dense_matrix(params: dict, weights: dict, in_shape, out_shape):
    """The [O*Ho*Wo, C*H*W] matrix and [O*Ho*Wo] bias of a conv over a C x H x W input."""
    w = weights["weight"]
    out_c, c_per_group, kh, kw = w.shape
    c, h, wd = in_shape
    _, ho, wo = out_shape
    groups = params["groups"]
    o_per_group = out_c // groups
    (sh, sw), (ph, pw), (dh, dw) = (pair(params[k]) for k in ("stride", "padding", "dilation"))
    matrix = np.zeros((out_c, ho, wo, c, h, wd), np.float32)
    for i in range(kh):
        rows = [(y, y * sh - ph + i * dh) for y in range(ho) if 0 <= y * sh - ph + i * dh < h]
        for j in range(kw):
            cols = [(x, x * sw - pw + j * dw) for x in range(wo) if 0 <= x * sw - pw + j * dw < wd]
            for g in range(groups):
                outs = slice(g * o_per_group, (g + 1) * o_per_group)
                ins = slice(g * c_per_group, (g + 1) * c_per_group)
                for y, iy in rows:
                    for x, ix in cols:
                        matrix[outs, y, x, ins, iy, ix] = w[outs, :, i, j]
    bias = weights.get("bias")
    if bias is not None:
        bias = np.repeat(bias, ho * wo).astype(np.float32)
    return matrix.reshape(out_c * ho * wo, c * h * wd), bias
