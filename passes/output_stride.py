"""Finer score maps: output stride S below the network's total stride, by dilating the
later layers or by shift-and-stitch (the arithmetic and the trade-off: graphconv.strides)."""
from __future__ import annotations

from graphconv.errors import GraphconvError, shown
from graphconv.ir import Graph
from graphconv.pass_manager import register_pass
from graphconv.strides import METHODS, cheaper_method, dilate, insert_stitch, merged_changes, stitch_factor



@register_pass("output-stride", "finer score map at output stride S, by dilation or shift-and-stitch",
               requires=("shapes",))
def output_stride(graph: Graph, stride: int, method: str = "auto") -> bool:
    if method not in METHODS:
        raise GraphconvError(f"method must be one of {', '.join(METHODS)}, got {shown(method)}")
    for node in graph.layers():  # it sees its whole input: a finer stride means nothing to it yet
        if node.opdef.sees_whole_input:
            cure, why = node.opdef.sees_whole_input
            raise GraphconvError(f"layer '{node.name}' is still {node.op}: run {cure} first, {why}")
    factor = stitch_factor(graph, stride)
    if factor == (1, 1):
        return False
    if method == "auto":
        method = cheaper_method(graph, stride)
    compiled = graph.meta.setdefault("compiled", {})
    compiled["output_stride"] = stride
    compiled["stride_method"] = method
    if method == "shift":
        insert_stitch(graph, factor, stride)
    else:
        # for the crop loop (`strides.at_its_own_stride`)
        compiled["undilated"] = merged_changes(compiled.get("undilated", {}), dilate(graph, stride))
    return True
