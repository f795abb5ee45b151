"""maximum: the elementwise maximum of two or more maps of one shape (torch.maximum /
torch.max(a, b), ONNX's Max): FReLU's funnel activation, max(x, bn(depthwise_conv(x))),
and maxout across branches. NaN in any input gives NaN, as torch.maximum and numpy's
maximum do."""
from __future__ import annotations

import numpy as np

from graphconv.errors import ShapeError
from graphconv.ops.registry import Example, OpDef, numel, onnx_as, register


def _shape(params: dict, shapes):
    if any(s != shapes[0] for s in shapes):
        raise ShapeError("maximum needs inputs of one shape, got "
                         + ", ".join("x".join(map(str, s)) for s in shapes))
    return shapes[0]


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    result = inputs[0].astype(np.float64)
    for x in inputs[1:]:
        result = np.maximum(result, x)
    return result.astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch
    result = inputs[0]
    for x in inputs[1:]:
        result = torch.maximum(result, x)
    return result


register(OpDef(
    name="maximum", doc="elementwise maximum of its inputs (maps of one shape)",
    params=(), shape=_shape, reference=reference, arity=(2, None),
    flops=lambda params, shapes, out: (len(shapes) - 1) * numel(out),
    package=__name__, torch=torch_equivalent, onnx=onnx_as("Max"),
    examples=(Example({}, [(3, 2, 4)] * 2), Example({}, [(2, 3, 3)] * 3),
              Example({}, [(1, 1, 1)] * 2, batch=3)),
    channels_last="like-input",  # one flat pass over memory stored either way
))
