"""pad: a border around each map (torch.nn.functional.pad, ONNX Pad).

`padding` is [top, left, bottom, right], each >= 0 (one int: the same on every side).
`mode` says what the border holds:
* "constant": `value` everywhere: 0 for a zero padding (Keras' ZeroPadding2D, PyTorch's
  nn.ZeroPad2d), -inf for the padding of a max pool, which no window's max ever picks;
* "reflect": the map mirrored about its first and last row and column, which are not
  repeated (PyTorch's nn.ReflectionPad2d; the blur pools of anti-aliased networks);
* "edge": the first and last row and column repeated (PyTorch's nn.ReplicationPad2d).

Why a layer of its own: convs and pools pad the two sides of an axis alike, but
TensorFlow's `padding="same"` with stride 2 on an even input pads only the bottom and
right, and Keras and PyTorch models pad explicitly before a conv. The ONNX importer
gives such a conv (or pool) the symmetric part of its padding and puts a pad layer with
the rest before it; `fold-pad` merges a pad back into the conv or pool it feeds where the
sum is symmetric.

For receptive fields and the stride passes it is a 1x1 window of stride 1 with padding
(top, left) and padding_end (bottom, right): the top and left amounts move every cell
of its map, the bottom and right ones only add cells at the end.
"""
from __future__ import annotations

import math

import numpy as np

from graphconv.errors import ShapeError
from graphconv.ops.registry import Example, OpDef, Param, Window, register, window_output

MODES = ("constant", "reflect", "edge")
CONSTANT, REFLECT, EDGE = range(3)  # the kernels' numbers for MODES
TORCH_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}


def source_index(i: int, size: int, mode: int) -> int:
    """The input row (column) that output row `i` - padding copies, of an axis of `size`;
    -1 where a constant pad writes its value. Both kernels compile this one function."""
    if 0 <= i < size:
        return i
    if mode == CONSTANT:
        return -1
    if mode == REFLECT:
        return -i if i < 0 else 2 * (size - 1) - i
    return 0 if i < 0 else size - 1


def window(params: dict, shapes) -> Window:
    top, left, bottom, right = params["padding"]
    return Window((1, 1), (1, 1), (top, left), (1, 1), padding_end=(bottom, right), beyond=describe_fill(params))


def shape(params: dict, shapes) -> tuple[int, int, int]:
    (c, h, w), = shapes
    top, left, bottom, right = params["padding"]
    if params["mode"] == "reflect" and (max(top, bottom) >= h or max(left, right) >= w):
        raise ShapeError(f"a reflect pad of [{top}, {left}, {bottom}, {right}] on a {h}x{w} map: a reflection "
                         "adds fewer rows (columns) on each side than the map has")
    return (c, *window_output(window(params, shapes), shapes[0], "pad"))


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    top, left, bottom, right = params["padding"]
    widths = ((0, 0), (0, 0), (top, bottom), (left, right))
    if params["mode"] != "constant":
        return np.pad(inputs[0], widths, mode=params["mode"]).astype(np.float32)
    return np.pad(inputs[0], widths, constant_values=np.float32(params["value"])).astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    top, left, bottom, right = params["padding"]
    mode = TORCH_MODES[params["mode"]]
    value = params["value"] if mode == "constant" else None
    return F.pad(inputs[0], (left, right, top, bottom), mode=mode, value=value)


def onnx_pad(writer, params: dict, inputs: list[str], output: str) -> None:
    """One Pad node (op set 11 and later: pads and the value as inputs)."""
    top, left, bottom, right = params["padding"]
    pads = writer.constant(np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
    if params["mode"] != "constant":
        writer.node("Pad", [inputs[0], pads], output, mode=params["mode"])
        return
    value = writer.constant(np.array(params["value"], np.float32))
    writer.node("Pad", [inputs[0], pads, value], output, mode="constant")


def describe_fill(params: dict) -> str:
    """What a pad layer's border holds, for messages: "zeros", "-inf", "the value 0.5",
    "reflection", "edge copies"."""
    if params["mode"] == "reflect":
        return "reflection"
    if params["mode"] == "edge":
        return "edge copies"
    return describe_value(params["value"])


def describe_value(value: float) -> str:
    """How a pad's value reads in messages: "zeros", "-inf", "the value 0.5"."""
    if value == 0.0:
        return "zeros"
    return ("-inf" if value < 0 else "inf") if math.isinf(value) else f"the value {value:g}"


register(OpDef(
    name="pad", doc="a border: padding [top, left, bottom, right] of `value`, or mirrored or repeated "
                    "rows and columns (F.pad, ONNX Pad)",
    params=(Param("padding", "sides", minimum=0, doc="[top, left, bottom, right] (one int: all four)"),
            Param("value", "float", 0.0, infinite=True,
                  doc="what a constant border holds (-inf: a max pool's padding)"),
            Param("mode", "choice", "constant", choices=MODES,
                  doc="constant: `value`; reflect: the map mirrored (its edge not repeated); edge: its edge "
                      "repeated")),
    shape=shape, reference=reference, flops=lambda params, shapes, out: 0,
    package=__name__, window=window, torch=torch_equivalent, onnx=onnx_pad, channels_last="any",
    examples=(
        Example(dict(padding=[0, 0, 1, 1]), [(3, 4, 5)]),  # SAME_UPPER stride 2: bottom and right only
        Example(dict(padding=[2, 1, 0, 3], value=-float("inf")), [(2, 3, 2)], batch=3),  # before a max pool
        Example(dict(padding=1, value=0.5), [(1, 2, 3)]),
        Example(dict(padding=[0, 0, 0, 0]), [(2, 2, 2)]),
        Example(dict(padding=[3, 0, 0, 0], value=-2.0), [(4, 1, 1)], batch=1),
        Example(dict(padding=[1, 2, 2, 1], mode="reflect"), [(2, 3, 4)]),  # a blur pool's ReflectionPad2d
        Example(dict(padding=[2, 0, 1, 3], mode="edge"), [(3, 2, 2)]),
        Example(dict(padding=[0, 1, 0, 1], mode="reflect"), [(1, 1, 2)], batch=3),
        Example(dict(padding=[2, 2, 2, 2], mode="edge"), [(2, 1, 1)]),
        Example(dict(padding=[1, 3, 0, 2], mode="reflect"), [(5, 3, 19)]),  # rows past a cache line of columns
    ),
))
