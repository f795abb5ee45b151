"""sigmoid: 1 / (1 + exp(-x)), elementwise (torch.sigmoid).

The worked example of docs/adding-an-op.md: this folder is all it took to add the op.
"""
from __future__ import annotations

import numpy as np

from graphconv.ops.registry import Example, OpDef, numel, onnx_as, register


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0].astype(np.float64)
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch
    return torch.sigmoid(inputs[0])


register(OpDef(
    name="sigmoid", doc="1 / (1 + exp(-x)), elementwise",
    params=(), shape=lambda params, shapes: shapes[0], reference=reference,
    flops=lambda params, shapes, out: 4 * numel(out),  # negate, exp, add, divide
    package=__name__, torch=torch_equivalent, onnx=onnx_as("Sigmoid"), per_element=True,
    gives_probabilities=True,
    examples=(Example({}, [(3, 2, 4)]), Example({}, [(1, 1, 1)])),
))
