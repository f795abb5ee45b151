"""clip: clamp every element to [min, max] (torch.clamp, ONNX Clip; ReLU6 is min 0, max 6).

Either bound may be absent, as in ONNX's Clip: the defaults are float32's extremes, so
a missing bound clamps nothing. NaN stays NaN, as in PyTorch.
"""
from __future__ import annotations

import numpy as np

from graphconv.errors import ShapeError
from graphconv.ops.registry import Example, OpDef, Param, numel, register

FLOAT32_MAX = 3.4028234663852886e38


def shape(params: dict, shapes) -> tuple[int, int, int]:
    if params["min"] > params["max"]:
        raise ShapeError(f"min {params['min']} is greater than max {params['max']}")
    return shapes[0]


def bounds(params: dict) -> tuple[np.float32, np.float32]:
    """The bounds as the float32 numbers the kernels compare with (PyTorch casts a
    scalar bound to the tensor's type the same way)."""
    return np.float32(params["min"]), np.float32(params["max"])


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    low, high = bounds(params)
    return np.clip(inputs[0], low, high).astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch
    return torch.clamp(inputs[0], params["min"], params["max"])


def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    bounds = [writer.constant(np.array(params[key], np.float32)) for key in ("min", "max")]
    writer.node("Clip", [inputs[0], *bounds], output)


register(OpDef(
    name="clip", doc="clamp to [min, max] elementwise (ReLU6: min 0, max 6)",
    params=(Param("min", "float", -FLOAT32_MAX, doc="lower bound (default: none)"),
            Param("max", "float", FLOAT32_MAX, doc="upper bound (default: none)")),
    shape=shape, reference=reference,
    flops=lambda params, shapes, out: 2 * numel(out),  # two compares
    package=__name__, torch=torch_equivalent, onnx=to_onnx, channels_last="like-input", per_element=True,
    examples=(
        Example(dict(min=0.0, max=6.0), [(3, 2, 4)]),  # ReLU6 (inputs are standard normal)
        Example(dict(min=-0.5, max=0.25), [(2, 3, 3)]),
        Example(dict(min=0.1), [(2, 2, 3)]),  # no upper bound
        Example(dict(max=-0.2), [(1, 3, 2)]),  # no lower bound
        Example(dict(min=0.3, max=0.3), [(2, 1, 2)]),  # a single value
    ),
))
