"""channel_mean, channel_l2norm and channel_max: the mean, the L2 norm or the largest
value over the channels at each position, 1 x H x W.

- channel_mean (ONNX ReduceMean over the channel axis, torch.mean(x, dim=1,
  keepdim=True)): ConvNeXt V2's GRN divides each channel's norm by their mean;
  CBAM-style spatial attention pools channels so.
- channel_l2norm (ONNX ReduceL2 over the channel axis, torch.linalg.vector_norm(x,
  dim=1, keepdim=True)): F.normalize(x, dim=1) divides each position's features by it
  (cosine-similarity and metric-learning heads), as a Clip and a Div after it.
- channel_max (ONNX ReduceMax over the channel axis, torch.amax(x, dim=1, keepdim=True)
  or x.max(dim=1, keepdim=True)[0]): CBAM's spatial attention concatenates it with the
  channel mean and convolves the two into one gate per position. A NaN among a
  position's channels is its max, as in torch.amax and numpy.

Each looks at one position, so, like a 1x1 conv, it slides over a larger image
unchanged. They share a folder because their kernels are one loop with a different
reduction and finish.
"""
from __future__ import annotations

import numpy as np

from graphconv.ops.registry import Example, OpDef, numel, register

MEAN, L2NORM, MAX = 0, 1, 2  # which reduction the kernels' one loop makes


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return inputs[0].astype(np.float64).mean(axis=1, keepdims=True).astype(np.float32)


def l2norm_reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0].astype(np.float64)
    return np.sqrt((x * x).sum(axis=1, keepdims=True)).astype(np.float32)


def max_reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return inputs[0].max(axis=1, keepdims=True)


def _over_channels(onnx_op: str):
    def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
        """The reduction over axis 1 (op set 18 on: the axes an input)."""
        writer.node(onnx_op, [inputs[0], writer.constant(np.array([1], np.int64))], output, keepdims=1)
    return to_onnx


def _l2norm_torch(params: dict, weights: dict, inputs: list):
    import torch
    return torch.linalg.vector_norm(inputs[0], dim=1, keepdim=True)


EXAMPLES = (
    Example({}, [(3, 4, 5)]),
    Example({}, [(5, 1, 1)], batch=3),  # after a global pool (GRN)
    Example({}, [(1, 2, 3)]),
    Example({}, [(9, 3, 2)], batch=2),
)


register(OpDef(
    name="channel_mean", doc="the mean over the channels at each position, output 1 x H x W",
    params=(), shape=lambda params, shapes: (1, *shapes[0][1:]), reference=reference,
    flops=lambda params, shapes, out: numel(shapes[0]) + numel(out),  # the sums, one divide each
    package=__name__, torch=lambda params, weights, inputs: inputs[0].mean(dim=1, keepdim=True),
    onnx=_over_channels("ReduceMean"), channels_last="any",  # one channel: the same memory either way
    examples=EXAMPLES,
))

register(OpDef(
    name="channel_l2norm", doc="the L2 norm over the channels at each position, output 1 x H x W (ReduceL2 "
                               "over the channels: F.normalize(x, dim=1) divides by it)",
    params=(), shape=lambda params, shapes: (1, *shapes[0][1:]), reference=l2norm_reference,
    flops=lambda params, shapes, out: 2 * numel(shapes[0]) + numel(out),  # squares and sums, one root each
    package=__name__, torch=_l2norm_torch, onnx=_over_channels("ReduceL2"), channels_last="any",
    examples=EXAMPLES,
))

register(OpDef(
    name="channel_max", doc="the largest value over the channels at each position, output 1 x H x W (ReduceMax "
                            "over the channels: CBAM's spatial attention)",
    params=(), shape=lambda params, shapes: (1, *shapes[0][1:]), reference=max_reference,
    flops=lambda params, shapes, out: numel(shapes[0]),  # one comparison an input value
    package=__name__, torch=lambda params, weights, inputs: inputs[0].amax(dim=1, keepdim=True),
    onnx=_over_channels("ReduceMax"), channels_last="any",
    examples=EXAMPLES,
))
