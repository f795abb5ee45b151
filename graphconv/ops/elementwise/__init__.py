"""Ops that need no window: relu, dropout (identity at inference), add, sub, mul, div, concat.

They share one folder because each kernel is a few lines of one pass over memory, with
helpers in common (flat views, one CUDA thread per element); an op whose kernels stand
alone gets its own folder, like `sigmoid`. On the CPU each but div takes values stored
channels-last as well as NCHW ("like-input"), so the convs around DenseNet's and
GoogLeNet's concats and CSPNet's adds keep their channels-last storage."""
from __future__ import annotations

import numpy as np

from graphconv.errors import ShapeError
from graphconv.ops.registry import Example, OpDef, Param, numel, onnx_as, register, same_spatial


def _same_shape(op: str, shapes):
    if any(s != shapes[0] for s in shapes):
        raise ShapeError(f"{op} needs inputs of one shape, got "
                         + ", ".join("x".join(map(str, s)) for s in shapes))
    return shapes[0]


def _mul_shape(params: dict, shapes):
    """Two maps of one shape (swish written out), or a map and one factor per channel
    (C x 1 x 1: a squeeze-and-excitation gate) or per position (1 x H x W: CBAM's spatial
    attention gate), in that order."""
    (c, h, w), second = shapes
    if second not in ((c, h, w), (c, 1, 1), (1, h, w)):
        raise ShapeError(f"mul needs its second input the first's shape ({c}x{h}x{w}), one value "
                         f"per channel ({c}x1x1) or one value per position (1x{h}x{w}), got "
                         + "x".join(map(str, second)))
    return shapes[0]


def _div_shape(params: dict, shapes):
    """Two maps of one shape, or a map and one divisor per position (1 x H x W, a
    channel_mean: ConvNeXt V2's GRN), in that order."""
    (c, h, w), second = shapes
    if second not in ((c, h, w), (1, h, w)):
        raise ShapeError(f"div needs its second input the first's shape ({c}x{h}x{w}) or one value "
                         f"per position (1x{h}x{w}), got " + "x".join(map(str, second)))
    return shapes[0]


def _mul_reference(params: dict, weights: dict, inputs: list) -> np.ndarray:
    return (inputs[0].astype(np.float64) * inputs[1]).astype(np.float32)


def _concat_shape(params: dict, shapes):
    same_spatial(shapes, "concat")
    return (sum(s[0] for s in shapes), *shapes[0][1:])


def _torch_relu(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.relu(inputs[0])


def _torch_concat(params: dict, weights: dict, inputs: list):
    import torch
    return torch.cat(inputs, dim=1)


ONE_INPUT = (Example({}, [(3, 2, 4)]),)


def _pointwise(name: str, doc: str, reference, torch, onnx, examples=ONE_INPUT,
               shape=lambda p, s: s[0], arity=(1, 1), cost=1, params=(), channels_last="", per_element=False,
               keeps_values=False):
    register(OpDef(name=name, doc=doc, params=params, shape=shape, reference=reference,
                   flops=lambda params, shapes, out: cost * numel(out) * len(shapes),
                   package=__name__, arity=arity, torch=torch, examples=examples, onnx=onnx,
                   channels_last=channels_last, per_element=per_element, keeps_values=keeps_values))


_pointwise("relu", "max(x, 0)", lambda p, w, xs: np.maximum(xs[0], 0), torch=_torch_relu,
           onnx=onnx_as("Relu"), channels_last="like-input", per_element=True)
_pointwise("dropout", "identity at inference", lambda p, w, xs: xs[0].copy(),
           torch=lambda p, w, xs: xs[0], onnx=onnx_as("Identity"), cost=0,
           params=(Param("p", "float", 0.5, doc="the drop probability in training (PyTorch's p, Caffe's "
                                                  "dropout_ratio); accepted and ignored at inference"),),
           examples=(Example({}, [(3, 2, 4)]), Example({"p": 0.2}, [(3, 2, 4)])), channels_last="like-input",
           per_element=True, keeps_values=True)
_pointwise("add", "elementwise sum of its inputs",
           lambda p, w, xs: np.sum(np.stack(xs), axis=0, dtype=np.float64).astype(np.float32),
           torch=lambda p, w, xs: sum(xs[1:], xs[0]), onnx=onnx_as("Sum"),
           examples=(Example({}, [(3, 2, 4)] * 2), Example({}, [(2, 3, 3)] * 3)),
           shape=lambda p, s: _same_shape("add", s), arity=(2, None), channels_last="like-input")
_pointwise("sub", "elementwise difference of its two inputs, the first minus the second (PoolFormer's "
                  "pool(x) - x)",
           lambda p, w, xs: (xs[0].astype(np.float64) - xs[1]).astype(np.float32),
           torch=lambda p, w, xs: xs[0] - xs[1], onnx=onnx_as("Sub"),
           examples=(Example({}, [(3, 2, 4)] * 2), Example({}, [(1, 1, 1)] * 2, batch=3)),
           shape=lambda p, s: _same_shape("sub", s), arity=(2, 2), channels_last="like-input")
_pointwise("mul", "elementwise product; the second input may be one factor per channel (C x 1 x 1) or per "
                  "position (1 x H x W)",
           _mul_reference, torch=lambda p, w, xs: xs[0] * xs[1], onnx=onnx_as("Mul"),
           examples=(Example({}, [(3, 2, 4)] * 2), Example({}, [(3, 2, 4), (3, 1, 1)]),
                     Example({}, [(2, 1, 1)] * 2, batch=3), Example({}, [(3, 2, 4), (1, 2, 4)]),
                     Example({}, [(5, 3, 1), (1, 3, 1)], batch=3),
                     Example({}, [(1, 3, 4), (1, 1, 1)])),  # a one-channel map's gate is per channel
           shape=_mul_shape, arity=(2, 2), channels_last="like-input")
_pointwise("div", "elementwise quotient; the second input may be one divisor per position (1 x H x W)",
           lambda p, w, xs: (xs[0].astype(np.float64) / xs[1]).astype(np.float32),
           torch=lambda p, w, xs: xs[0] / xs[1], onnx=onnx_as("Div"),
           examples=(Example({}, [(3, 2, 4)] * 2), Example({}, [(3, 2, 4), (1, 2, 4)]),
                     Example({}, [(4, 1, 1), (1, 1, 1)], batch=3)),
           shape=_div_shape, arity=(2, 2))
_pointwise("concat", "stack inputs along channels",
           lambda p, w, xs: np.concatenate(xs, axis=1), torch=_torch_concat, onnx=onnx_as("Concat", axis=1),
           examples=(Example({}, [(3, 2, 4), (2, 2, 4)]),
                     Example({}, [(1, 2, 3), (4, 2, 3), (2, 2, 3)])),
           shape=_concat_shape, arity=(2, None), cost=0, channels_last="like-input")
