"""fc: a fully-connected layer over the whole incoming map, flattened in C, H, W order
(torch.nn.Linear after flatten(1)). Its output is a (out_features, 1, 1) map so every
layer in the IR has a C x H x W shape."""
from __future__ import annotations

import numpy as np

from graphconv.ops.registry import Example, OpDef, Param, Window, numel, register


def weight_shapes(params: dict, shapes) -> dict[str, tuple]:
    expected = {"weight": (params["out_features"], numel(shapes[0]))}
    if params["bias"]:
        expected["bias"] = (params["out_features"],)
    return expected


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0].reshape(inputs[0].shape[0], -1).astype(np.float64)
    y = x @ weights["weight"].astype(np.float64).T
    if "bias" in weights:
        y += weights["bias"]
    return y.astype(np.float32)[:, :, None, None]


def window(params: dict, shapes) -> Window:
    """An fc layer is a window over its whole input: what fc-to-conv makes explicit."""
    _, h, w = shapes[0]
    return Window((h, w), (1, 1), (0, 0), (1, 1))


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.linear(inputs[0].flatten(1), weights["weight"], weights.get("bias"))[:, :, None, None]


def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    """Flatten, Gemm, then back to (N, K, 1, 1): every value graphconv exports is 4-D."""
    flat = writer.node("Flatten", inputs, axis=1)
    args = [flat, writer.weight("weight")] + ([writer.weight("bias")] if params["bias"] else [])
    gemm = writer.node("Gemm", args, transB=1)
    writer.node("Unsqueeze", [gemm, writer.constant(np.array([2, 3], np.int64))], output)


register(OpDef(
    name="fc", doc="fully-connected layer over the flattened C,H,W map",
    params=(Param("out_features", "int"), Param("bias", "bool", True)),
    shape=lambda params, shapes: (params["out_features"], 1, 1),
    reference=reference,
    flops=lambda params, shapes, out: 2 * numel(shapes[0]) * params["out_features"],
    package=__name__, weight_shapes=weight_shapes, window=window, torch=torch_equivalent,
    onnx=to_onnx, sees_whole_input=("fc-to-conv", "an fc layer only ever sees one crop"), fixes_input_size=True,
    examples=(
        Example(dict(out_features=5), [(3, 2, 3)]),
        Example(dict(out_features=7, bias=False), [(10, 1, 1)]),
    ),
))
