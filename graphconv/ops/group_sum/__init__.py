"""group_sum: the sum of `groups` runs of C / groups channels, C / groups channels out
(ONNX ReduceSum over the group axis of a (N, groups, C/groups, H, W) view): how
ResNeSt's split attention adds its radix branches, before and after weighting them.

It adds values at one position, so, like a 1x1 conv, it slides over a larger image.
"""
from __future__ import annotations

import numpy as np

from graphconv.errors import ShapeError
from graphconv.ops.registry import Example, OpDef, Param, numel, register


def shape(params: dict, shapes) -> tuple[int, int, int]:
    c, h, w = shapes[0]
    if c % params["groups"]:
        raise ShapeError(f"{c} channels do not split into {params['groups']} groups of equal size")
    return c // params["groups"], h, w


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0].astype(np.float64)
    n, c, h, w = x.shape
    return x.reshape(n, params["groups"], c // params["groups"], h, w).sum(axis=1).astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    x = inputs[0]
    n, c, h, w = x.shape
    return x.reshape(n, params["groups"], c // params["groups"], h, w).sum(dim=1)


def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    """The group axis made by a Reshape (sizes read at run time), then ReduceSum over it."""
    sizes = writer.node("Shape", inputs)
    spatial = writer.node("Slice", [sizes, writer.constant(np.array([2], np.int64)),
                                    writer.constant(np.array([4], np.int64))])
    target = writer.node("Concat", [writer.constant(np.array([0, params["groups"], -1], np.int64)), spatial],
                         axis=0)
    grouped = writer.node("Reshape", [inputs[0], target])
    writer.node("ReduceSum", [grouped, writer.constant(np.array([1], np.int64))], output, keepdims=0)


register(OpDef(
    name="group_sum", doc="the sum of `groups` runs of channels, C / groups channels out (ResNeSt's radix "
                          "branches added)",
    params=(Param("groups", "int", doc="how many runs of channels are added"),),
    shape=shape, reference=reference, flops=lambda params, shapes, out: numel(shapes[0]) - numel(out),
    package=__name__, torch=torch_equivalent, onnx=to_onnx, channels_last="like-input",
    examples=(
        Example({"groups": 2}, [(6, 3, 4)]),
        Example({"groups": 3}, [(3, 2, 2)], batch=1),
        Example({"groups": 1}, [(2, 2, 3)]),
    ),
))
