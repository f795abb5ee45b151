"""Per-layer cost: output shapes, parameter counts and FLOPs for a given input size."""
from __future__ import annotations

from dataclasses import dataclass

from graphconv.ir import Graph
from graphconv.shapes import batch_scales, infer_shapes


@dataclass(frozen=True)
class LayerCost:
    name: str
    op: str
    shape: tuple[int, int, int]
    params: int
    flops: int  # per input image: a layer between shift-and-stitch's halves runs on every copy


def layer_costs(graph: Graph, input_hw: tuple[int, int] | None = None) -> list[LayerCost]:
    shapes = infer_shapes(graph, input_hw, check_weights=False)
    scales = batch_scales(graph)
    rows = []
    for node in graph.layers():
        in_shapes = [shapes[s.name] for s in node.inputs]
        per_image = node.opdef.flops(node.params, in_shapes, shapes[node.name])
        rows.append(LayerCost(node.name, node.op, shapes[node.name],
                              sum(int(w.size) for w in node.weights.values()),
                              int(per_image * scales[node.inputs[0].name])))
    return rows


def total_flops(graph: Graph, input_hw: tuple[int, int] | None = None) -> int:
    return sum(row.flops for row in layer_costs(graph, input_hw))
