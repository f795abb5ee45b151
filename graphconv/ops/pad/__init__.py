"""pad: a constant border around each map (torch.nn.functional.pad, ONNX Pad in constant mode).

`padding` is [top, left, bottom, right], each >= 0 (one int: the same on every side), and
`value` what the border holds: 0 for a zero padding (Keras' ZeroPadding2D, PyTorch's
nn.ZeroPad2d), -inf for the padding of a max pool, which no window's max ever picks.

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

from graphconv.ops.registry import Example, OpDef, Param, Window, register, window_output


def window(params: dict, shapes) -> Window:
    top, left, bottom, right = params["padding"]
    return Window((1, 1), (1, 1), (top, left), (1, 1), padding_end=(bottom, right))


def shape(params: dict, shapes) -> tuple[int, int, int]:
    (c, _, _), = shapes
    return (c, *window_output(window(params, shapes), shapes[0], "pad"))


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    top, left, bottom, right = params["padding"]
    return np.pad(inputs[0], ((0, 0), (0, 0), (top, bottom), (left, right)),
                  constant_values=np.float32(params["value"])).astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    top, left, bottom, right = params["padding"]
    return F.pad(inputs[0], (left, right, top, bottom), mode="constant", value=params["value"])


def onnx_pad(writer, params: dict, inputs: list[str], output: str) -> None:
    """One Pad node (op set 11 and later: pads and the value as inputs)."""
    top, left, bottom, right = params["padding"]
    pads = writer.constant(np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
    value = writer.constant(np.array(params["value"], np.float32))
    writer.node("Pad", [inputs[0], pads, value], output, mode="constant")


def describe_value(value: float) -> str:
    """How a pad's value reads in messages: "zeros", "-inf", "the value 0.5"."""
    if value == 0.0:
        return "zeros"
    return ("-inf" if value < 0 else "inf") if math.isinf(value) else f"the value {value:g}"


register(OpDef(
    name="pad", doc="a constant border: padding [top, left, bottom, right] of `value` (F.pad, ONNX Pad)",
    params=(Param("padding", "sides", minimum=0, doc="[top, left, bottom, right] (one int: all four)"),
            Param("value", "float", 0.0, infinite=True, doc="what the border holds (-inf: a max pool's padding)")),
    shape=shape, reference=reference, flops=lambda params, shapes, out: 0,
    package=__name__, window=window, torch=torch_equivalent, onnx=onnx_pad, channels_last="any",
    examples=(
        Example(dict(padding=[0, 0, 1, 1]), [(3, 4, 5)]),  # SAME_UPPER stride 2: bottom and right only
        Example(dict(padding=[2, 1, 0, 3], value=-float("inf")), [(2, 3, 2)], batch=3),  # before a max pool
        Example(dict(padding=1, value=0.5), [(1, 2, 3)]),
        Example(dict(padding=[0, 0, 0, 0]), [(2, 2, 2)]),
        Example(dict(padding=[3, 0, 0, 0], value=-2.0), [(4, 1, 1)], batch=1),
    ),
))
