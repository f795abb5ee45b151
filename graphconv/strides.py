"""Finer score maps: the arithmetic of output stride S below the network's total stride T.

Two ways, giving the same map:

* shift (shift-and-stitch): run the converted net on f x f copies of the image shifted
  by k*S pixels (f = T/S, k = 0..f-1 on each axis) and interleave the maps. The layers do
  not change: a `shift_copies` layer after the input makes the copies (one batch, one
  pass) and an `interleave` layer before the output merges their maps, so receptive
  fields, FLOPs, memory plans and the runtime see ordinary layers.
* dilate (a trous): give each layer the cumulative stride gcd(c, S) instead of c. A layer
  whose input stride drops by r = c_in / gcd(c_in, S) keeps its place on the image grid by
  multiplying its dilation and padding by r; its own stride becomes gcd(c_out, S) /
  gcd(c_in, S). One pass then computes the whole fine grid and the early layers are not
  recomputed f*f times.

The `output-stride` pass applies this; `graphconv inspect` uses `method_flops` to show
what each choice costs. Both live here so library code never imports a pass.
"""
from __future__ import annotations

from math import gcd

from graphconv.cost import total_flops
from graphconv.errors import GraphconvError, shown
from graphconv.ir import Graph
from graphconv.ops import pair
from graphconv.receptive import receptive_fields, total_stride

METHODS = ("auto", "dilate", "shift")


def check_output_stride(stride: object, total: tuple[int, int]) -> None:
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1 or total[0] % stride \
            or total[1] % stride:
        divisors = [d for d in range(1, min(total) + 1) if total[0] % d == 0 and total[1] % d == 0]
        raise GraphconvError(f"output stride {shown(stride)} does not divide the network's total "
                             f"stride {total[0]}x{total[1]}; choose one of {', '.join(map(str, divisors))}")


def stitch_factor(graph: Graph, stride: int) -> tuple[int, int]:
    """How many shifted copies per axis reach output stride `stride` (checked)."""
    total = total_stride(graph)
    check_output_stride(stride, total)
    return total[0] // stride, total[1] // stride


def dilate(graph: Graph, stride: int) -> None:
    """Rewrite every windowed layer for cumulative strides gcd(c, stride) (see module doc)."""
    fields = receptive_fields(graph)
    for node in graph.layers():
        window = node.opdef.window(node.params, [s.shape for s in node.inputs])
        if window is None:
            continue
        c_in = fields[node.inputs[0].name].stride
        c_out = fields[node.name].stride
        rate = [c_in[a] // gcd(c_in[a], stride) for a in (0, 1)]
        new_stride = [gcd(c_out[a], stride) // gcd(c_in[a], stride) for a in (0, 1)]
        graph.set_params(node,
                         stride=tuple(new_stride),
                         dilation=tuple(pair(node.params["dilation"])[a] * rate[a] for a in (0, 1)),
                         padding=tuple(pair(node.params["padding"])[a] * rate[a] for a in (0, 1)))


def cheaper_method(graph: Graph, stride: int) -> str:
    """Pick the method with fewer FLOPs on an image a few strides larger than the crop."""
    flops = method_flops(graph, stride)
    return "dilate" if flops["dilate"] <= flops["shift"] else "shift"


def method_flops(graph: Graph, stride: int, image_hw: tuple[int, int] | None = None) -> dict[str, int]:
    """FLOPs per image of both methods for an image of `image_hw` (default: crop + 4 strides)."""
    fy, fx = stitch_factor(graph, stride)
    total = total_stride(graph)
    if image_hw is None:
        image_hw = (graph.input_shape[1] + 4 * total[0], graph.input_shape[2] + 4 * total[1])
    dilated = graph.copy()
    dilate(dilated, stride)
    return {"shift": fy * fx * total_flops(graph, image_hw),
            "dilate": total_flops(dilated, image_hw)}


def insert_stitch(graph: Graph, factor: tuple[int, int], step: int) -> None:
    """Shift-and-stitch as two layers: `shift_copies` right after the input and
    `interleave` right before the output (see the module docstring)."""
    from graphconv.ops import get_op
    from graphconv.params import normalize_params

    copies = normalize_params(get_op("shift_copies"), {"factor": list(factor), "step": step})
    graph.insert_after(graph.input, graph.fresh_name("shift_copies"), "shift_copies", copies)
    merge = normalize_params(get_op("interleave"), {"factor": list(factor)})
    graph.insert_after(graph.output, graph.fresh_name("interleave"), "interleave", merge)


def stitch_copies(graph: Graph) -> int:
    """How many shifted copies of each image the network runs (1 without shift-and-stitch)."""
    copies = 1
    for node in graph.find("shift_copies"):
        copies *= node.params["factor"][0] * node.params["factor"][1]
    return copies
