"""flatten: torch.flatten(x, 1) (ONNX Flatten, axis 1): the C x H x W map as one vector of
C*H*W channels in C, H, W order, shaped (C*H*W, 1, 1) since every value in the IR is a map.

Classifiers put one between their last pooling and their first fc. An fc already
flattens its input in that order, so the `remove-flatten` pass drops a flatten that
only fcs read, and fc-to-conv can then slide them. Its `window` is the whole input, as
an fc's is: every output channel comes from some input cell, so one output cell sees
them all.
"""
from __future__ import annotations

import numpy as np

from graphconv.ops.registry import Example, OpDef, Window, numel, register


def window(params: dict, shapes) -> Window:
    _, h, w = shapes[0]
    return Window((h, w), (1, 1), (0, 0), (1, 1))


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0]
    return x.reshape(x.shape[0], -1, 1, 1).copy()


def torch_equivalent(params: dict, weights: dict, inputs: list):
    return inputs[0].flatten(1)[:, :, None, None]


def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    """Kept 4-D (N, C*H*W, 1, 1), as every value graphconv exports."""
    writer.node("Reshape", [inputs[0], writer.constant(np.array([0, -1, 1, 1], np.int64))], output)


register(OpDef(
    name="flatten", doc="the map as one C*H*W vector in C, H, W order, shaped C*H*W x 1 x 1",
    params=(), shape=lambda params, shapes: (numel(shapes[0]), 1, 1), reference=reference,
    flops=lambda params, shapes, out: 0, package=__name__, window=window, torch=torch_equivalent,
    onnx=to_onnx, sees_whole_input=("remove-flatten", "a flatten folds the map's positions into channels"),
    fixes_input_size=True, keeps_values=True,
    examples=(Example({}, [(3, 2, 4)]), Example({}, [(5, 1, 1)]), Example({}, [(1, 3, 1)], batch=3)),
))
