"""space_to_depth: each block x block patch of pixels becomes one pixel of block² times
the channels (ONNX SpaceToDepth; TResNet's stem; PyTorch's pixel_unshuffle with
`order: channels`).

Output channel (by * block + bx) * C + c holds input channel c at offset (by, bx) of each
patch ("blocks" order: ONNX's and TResNet's); with order "channels" it is
c * block² + by * block + bx (pixel_unshuffle's). For receptive fields it is a window of
block x block pixels at stride block, like a conv of that kernel and stride, so it slides:
on an image whose sides are not multiples of the block the last rows and columns that
fill no patch are left out, as such a conv leaves them.
"""
from __future__ import annotations

import numpy as np

from graphconv.ops.registry import Example, OpDef, Param, Window, register, window_output

ORDERS = ("blocks", "channels")


def window(params: dict, shapes) -> Window:
    b = params["block"]
    return Window((b, b), (b, b), (0, 0), (1, 1))


def shape(params: dict, shapes) -> tuple[int, int, int]:
    c = shapes[0][0]
    return (c * params["block"] ** 2, *window_output(window(params, shapes), shapes[0], "space_to_depth"))


def source_channel(oc: int, channels: int, block: int, channels_first: bool) -> tuple[int, int, int]:
    """(input channel, row offset, column offset) of output channel `oc`. Both kernels
    compile this one function."""
    if channels_first:
        return oc // (block * block), (oc // block) % block, oc % block
    return oc % channels, oc // (channels * block), (oc // channels) % block


def _permuted(x, params: dict, transpose):
    """The reference and the PyTorch form: the patches as axes, permuted, flattened."""
    b = params["block"]
    n, c, h, w = x.shape
    rows, cols = h // b, w // b
    patches = x[:, :, :rows * b, :cols * b].reshape(n, c, rows, b, cols, b)
    perm = (0, 3, 5, 1, 2, 4) if params["order"] == "blocks" else (0, 1, 3, 5, 2, 4)
    return transpose(patches, perm).reshape(n, c * b * b, rows, cols)


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(_permuted(inputs[0], params, np.transpose))


def torch_equivalent(params: dict, weights: dict, inputs: list):
    return _permuted(inputs[0], params, lambda t, perm: t.permute(*perm))


def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    """SpaceToDepth is the blocks order, once the rows and columns that fill no patch are
    sliced off (it refuses them). The channels order regroups its channels: viewed as
    (N, block², C, H', W') with the sizes read at run time, axes 1 and 2 swapped."""
    b = params["block"]
    block = writer.constant(np.array([b], np.int64))
    sides = writer.node("Slice", [writer.node("Shape", inputs), writer.constant(np.array([2], np.int64)),
                                  writer.constant(np.array([4], np.int64))])
    whole = writer.node("Mul", [writer.node("Div", [sides, block]), block])
    patches = writer.node("Slice", [inputs[0], writer.constant(np.zeros(2, np.int64)), whole,
                                    writer.constant(np.array([2, 3], np.int64))])
    if params["order"] == "blocks":
        writer.node("SpaceToDepth", [patches], output, blocksize=b)
        return
    blocks = writer.node("SpaceToDepth", [patches], blocksize=b)
    sizes = writer.node("Shape", [blocks])
    batch = writer.node("Slice", [sizes, writer.constant(np.array([0], np.int64)),
                                  writer.constant(np.array([1], np.int64))])
    rows_cols = writer.node("Slice", [sizes, writer.constant(np.array([2], np.int64)),
                                      writer.constant(np.array([4], np.int64))])
    split_shape = writer.node("Concat", [batch, writer.constant(np.array([b * b, -1], np.int64)), rows_cols], axis=0)
    flat_shape = writer.node("Concat", [batch, writer.constant(np.array([-1], np.int64)), rows_cols], axis=0)
    swapped = writer.node("Transpose", [writer.node("Reshape", [blocks, split_shape])], perm=[0, 2, 1, 3, 4])
    writer.node("Reshape", [swapped, flat_shape], output)


register(OpDef(
    name="space_to_depth", doc="each block x block patch of pixels as block² times the channels of one pixel "
                               "(ONNX SpaceToDepth, TResNet's stem, pixel_unshuffle)",
    params=(Param("block", "int", doc="the patch's side in pixels"),
            Param("order", "choice", "blocks", choices=ORDERS,
                  doc="blocks: channel (by * block + bx) * C + c (ONNX, TResNet); channels: c * block² + "
                      "by * block + bx (pixel_unshuffle)")),
    shape=shape, reference=reference, window=window, flops=lambda params, shapes, out: 0,
    package=__name__, torch=torch_equivalent, onnx=to_onnx,
    examples=(
        Example({"block": 2}, [(3, 4, 6)]),
        Example({"block": 2, "order": "channels"}, [(2, 4, 2)]),
        Example({"block": 3}, [(2, 7, 8)], batch=1),  # sides that leave rows and columns out
        Example({"block": 1}, [(2, 2, 3)]),
    ),
))
