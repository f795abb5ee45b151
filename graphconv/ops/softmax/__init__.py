"""softmax: over channels, independently at every spatial position (so it carries over
unchanged when fc layers become convolutions)."""
from __future__ import annotations

import numpy as np

from graphconv.ops.registry import Example, OpDef, numel, onnx_as, register


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0].astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.softmax(inputs[0], dim=1)


register(OpDef(
    name="softmax", doc="softmax over channels at each position",
    params=(), shape=lambda params, shapes: shapes[0], reference=reference,
    flops=lambda params, shapes, out: 4 * numel(out), package=__name__, torch=torch_equivalent,
    onnx=onnx_as("Softmax", axis=1),
    examples=(Example({}, [(4, 2, 3)]), Example({}, [(1, 2, 2)])),
))
