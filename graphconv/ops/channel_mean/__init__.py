"""channel_mean: the mean over the channels at each position, 1 x H x W (ONNX ReduceMean
over the channel axis, torch.mean(x, dim=1, keepdim=True)): ConvNeXt V2's GRN divides
each channel's norm by their mean; CBAM-style spatial attention pools channels so.

It looks at one position, so, like a 1x1 conv, it slides over a larger image unchanged.
"""
from __future__ import annotations

import numpy as np

from graphconv.ops.registry import Example, OpDef, numel, register


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return inputs[0].astype(np.float64).mean(axis=1, keepdims=True).astype(np.float32)


def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    """ReduceMean over axis 1 (op set 18 on: the axes an input)."""
    writer.node("ReduceMean", [inputs[0], writer.constant(np.array([1], np.int64))], output, keepdims=1)


register(OpDef(
    name="channel_mean", doc="the mean over the channels at each position, output 1 x H x W",
    params=(), shape=lambda params, shapes: (1, *shapes[0][1:]), reference=reference,
    flops=lambda params, shapes, out: numel(shapes[0]) + numel(out),  # the sums, one divide each
    package=__name__, torch=lambda params, weights, inputs: inputs[0].mean(dim=1, keepdim=True),
    onnx=to_onnx, channels_last="any",  # one channel: the same memory either way
    examples=(
        Example({}, [(3, 4, 5)]),
        Example({}, [(5, 1, 1)], batch=3),  # after a global pool (GRN)
        Example({}, [(1, 2, 3)]),
    ),
))
