"""depth_to_space: each pixel's channels become a block x block patch of pixels, with
block² times fewer channels (ONNX DepthToSpace; PyTorch's pixel_shuffle with `order:
channels`): the inverse of `space_to_depth`. A transposed convolution of stride s that
enlarges its input s times (a U-Net's ConvTranspose2d(kernel_size=2, stride=2), or kernel 4
stride 2 padding 1) is a conv computing all s² phases of its output as s² times the
channels, followed by this; that is how the ONNX importer brings it in.

Input channel (by * block + bx) * C + c becomes output channel c at offset (by, bx) of each
patch ("blocks" order: ONNX's DCR mode); with order "channels" it is c * block² + by * block
+ bx (ONNX's CRD mode, pixel_shuffle's). For receptive fields output cell p reads input
cell floor(p / block): a floored window of stride 1/block, as a nearest upsample's, so it
slides.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from graphconv.errors import ShapeError
from graphconv.ops.registry import Example, OpDef, Param, Window, register

ORDERS = ("blocks", "channels")


def window(params: dict, shapes) -> Window:
    stride = Fraction(1, params["block"])
    return Window((1, 1), (stride, stride), (0, 0), (1, 1), floored=True)


def shape(params: dict, shapes) -> tuple[int, int, int]:
    (c, h, w), = shapes
    b = params["block"]
    if c % (b * b):
        raise ShapeError(f"depth_to_space of {c} channels into {b}x{b} blocks: the channels must be a multiple "
                         f"of {b * b}")
    return c // (b * b), h * b, w * b


def source_channel(oc: int, dy: int, dx: int, channels: int, block: int, channels_first: bool) -> int:
    """The input channel output channel `oc` (of `channels`) reads at offset (dy, dx) of
    its patch. Both kernels compile this one function."""
    if channels_first:
        return (oc * block + dy) * block + dx
    return (dy * block + dx) * channels + oc


def _permuted(x, params: dict, transpose):
    """The reference and the PyTorch form: the channels split into the patch's axes,
    permuted next to the rows and columns, flattened."""
    b = params["block"]
    n, c, h, w = x.shape
    out_c = c // (b * b)
    if params["order"] == "blocks":
        grouped, perm = x.reshape(n, b, b, out_c, h, w), (0, 3, 4, 1, 5, 2)
    else:
        grouped, perm = x.reshape(n, out_c, b, b, h, w), (0, 1, 4, 2, 5, 3)
    return transpose(grouped, perm).reshape(n, out_c, h * b, w * b)


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(_permuted(inputs[0], params, np.transpose))


def torch_equivalent(params: dict, weights: dict, inputs: list):
    return _permuted(inputs[0], params, lambda t, perm: t.permute(*perm))


def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    writer.node("DepthToSpace", inputs, output, blocksize=params["block"],
                mode="DCR" if params["order"] == "blocks" else "CRD")


register(OpDef(
    name="depth_to_space", doc="each pixel's channels as a block x block patch of pixels of block² times fewer "
                               "channels (ONNX DepthToSpace, pixel_shuffle; after a conv, a transposed conv)",
    params=(Param("block", "int", minimum=1, doc="the patch's side in pixels"),
            Param("order", "choice", "blocks", choices=ORDERS,
                  doc="blocks: input channel (by * block + bx) * C + c (ONNX DCR); channels: c * block² + "
                      "by * block + bx (ONNX CRD, pixel_shuffle)")),
    shape=shape, reference=reference, window=window, flops=lambda params, shapes, out: 0,
    package=__name__, torch=torch_equivalent, onnx=to_onnx,
    channels_last="any",  # its kernel follows the output's storage and reads the input through its own
    examples=(
        Example({"block": 2}, [(8, 2, 3)]),
        Example({"block": 2, "order": "channels"}, [(8, 3, 2)]),
        Example({"block": 3}, [(18, 2, 2)], batch=1),
        Example({"block": 1}, [(2, 2, 3)]),
        Example({"block": 2, "order": "channels"}, [(12, 3, 10)]),  # rows past a cache line of columns
    ),
))
