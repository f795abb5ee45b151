"""softsign: x / (1 + |x|), elementwise (torch.nn.Softsign, ONNX's Softsign, Keras'
"softsign" activation)."""
from __future__ import annotations

import numpy as np

from graphconv.ops.registry import Example, OpDef, numel, onnx_as, register


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0].astype(np.float64)
    return (x / (1.0 + np.abs(x))).astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.softsign(inputs[0])


register(OpDef(
    name="softsign", doc="x / (1 + |x|), elementwise",
    params=(), shape=lambda params, shapes: shapes[0], reference=reference,
    flops=lambda params, shapes, out: 3 * numel(out),  # abs, add, divide
    package=__name__, torch=torch_equivalent, onnx=onnx_as("Softsign"),
    examples=(Example({}, [(3, 2, 4)]), Example({}, [(1, 1, 1)], batch=3)),
    channels_last="like-input",  # one flat pass over memory stored either way
    per_element=True,
))
