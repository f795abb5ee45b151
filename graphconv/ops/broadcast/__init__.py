"""broadcast: a map of one value per channel (C x 1 x 1) repeated over the rows and
columns of a second input (ONNX Expand; PyTorch's `x.expand(-1, -1, H, W)`).

DeepLabV3's image-pooling branch ends so: the pooled, projected C x 1 x 1 vector is
resized "to the size of" the ASPP's input (`F.interpolate(x, size=feature.shape[-2:])`)
and concatenated with the other branches. Resizing a 1 x 1 map repeats its one value
whatever the mode, and a fixed factor (the crop's, 16 at a 128 crop) would fit the crop
alone; repeating it over the second input's rows and columns fits every size. Only the
second input's size is read, never its values. The op has no window: each output cell
is the value, whose own receptive field (a global pool's: the whole map) says what it
depends on, and the second input's cells set the map's lattice.
"""
from __future__ import annotations

import numpy as np

from graphconv.errors import ShapeError
from graphconv.ops.registry import Example, OpDef, register


def shape(params: dict, shapes) -> tuple[int, int, int]:
    (c, h, w), (_, rows, cols) = shapes
    if (h, w) != (1, 1):
        raise ShapeError(f"broadcast repeats one value per channel (C x 1 x 1), got a {h}x{w} map: its first input "
                         "must be 1x1 at every image size (a global pool's)")
    return c, rows, cols


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    value, like = inputs
    return np.broadcast_to(value, (value.shape[0], value.shape[1], *like.shape[2:])).copy()


def torch_equivalent(params: dict, weights: dict, inputs: list):
    value, like = inputs
    return value.expand(-1, -1, like.shape[2], like.shape[3])


def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    """Expand to (1, 1, H, W) of the second input, computed from its Shape so that the
    export keeps taking any size: Expand broadcasts the value's N and C against the 1s."""
    spatial = writer.node("Slice", [writer.node("Shape", [inputs[1]]), writer.constant(np.array([2], np.int64)),
                                    writer.constant(np.array([4], np.int64))])
    target = writer.node("Concat", [writer.constant(np.array([1, 1], np.int64)), spatial], axis=0)
    writer.node("Expand", [inputs[0], target], output)


register(OpDef(
    name="broadcast", doc="one value per channel (C x 1 x 1) repeated over the second input's rows and columns "
                          "(ONNX Expand: DeepLabV3's image-pooling branch resized to its feature map)",
    params=(), shape=shape, reference=reference, arity=(2, 2),
    flops=lambda params, shapes, out: 0,  # copies, no arithmetic
    package=__name__, torch=torch_equivalent, onnx=to_onnx,
    channels_last="any",  # numpy's broadcasting assignment writes either storage
    examples=(
        Example({}, [(3, 1, 1), (5, 4, 6)]),
        Example({}, [(2, 1, 1), (1, 9, 11)]),  # more pixels than a CUDA block has threads
        Example({}, [(4, 1, 1), (4, 1, 1)], batch=1),
    ),
))
