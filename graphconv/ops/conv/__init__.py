"""conv: 2-D convolution with stride, padding, dilation and groups (torch.nn.Conv2d).

`activation` (one of `activations.FUSED`) is graphconv's extension for the
`fuse-conv-activation` pass: the conv applies it itself (`activations.FUSED` says how)
instead of a layer of its own. Each activation stays defined by its own op
(`graphconv.ops.activations.FUSED`): the reference, PyTorch and ONNX forms here call it.

A second input, when there is one, is added to the output before the activation: a
residual connection (ResNet's `relu(conv3(x) + identity)`) in one kernel, which the
`fuse-conv-add` pass makes from a conv -> add (-> relu) chain. Its shape is the output's.
"""
from __future__ import annotations

import numpy as np

from graphconv.errors import ShapeError
from graphconv.ops.activations import FUSED, fused_flops, fused_onnx, fused_reference, fused_torch
from graphconv.ops.registry import (
    Example, OpDef, Param, Window, numel, onnx_window_attrs, pair, register, window_output,
)


def window(params: dict, shapes) -> Window:
    return Window(pair(params["kernel_size"]), pair(params["stride"]), pair(params["padding"]),
                  pair(params["dilation"]))


def shape(params: dict, shapes) -> tuple[int, int, int]:
    c = shapes[0][0]
    groups = params["groups"]
    if c % groups or params["out_channels"] % groups:
        raise ShapeError(f"groups={groups} must divide both the {c} input channels and "
                         f"out_channels={params['out_channels']}")
    ho, wo = window_output(window(params, shapes), shapes[0], "kernel")
    out = (params["out_channels"], ho, wo)
    if len(shapes) == 2 and tuple(shapes[1]) != out:
        raise ShapeError(f"the residual input added to the output must be {'x'.join(map(str, out))}, "
                         f"got {'x'.join(map(str, shapes[1]))}")
    return out


def weight_shapes(params: dict, shapes) -> dict[str, tuple]:
    c = shapes[0][0]
    kh, kw = pair(params["kernel_size"])
    expected = {"weight": (params["out_channels"], c // params["groups"], kh, kw)}
    if params["bias"]:
        expected["bias"] = (params["out_channels"],)
    return expected


def flops(params: dict, shapes, out_shape) -> int:
    c = shapes[0][0]
    kh, kw = pair(params["kernel_size"])
    return (2 * numel(out_shape) * (c // params["groups"]) * kh * kw + numel(out_shape) * (len(shapes) - 1)
            + fused_flops(params["activation"], out_shape))


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    """Sum over kernel taps of (strided input slice) x (that tap's weights), per group;
    plus the bias and the residual input, if any, then the activation."""
    x = inputs[0]
    w = weights["weight"]
    n, c, _, _ = x.shape
    out_c, c_per_group, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = (pair(params[k]) for k in ("stride", "padding", "dilation"))
    groups = params["groups"]
    _, ho, wo = shape(params, [x.shape[1:]])
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))).astype(np.float64)
    out = np.zeros((n, out_c, ho, wo))
    o_per_group = out_c // groups
    for g in range(groups):
        xs = xp[:, g * c_per_group:(g + 1) * c_per_group]
        ws = w[g * o_per_group:(g + 1) * o_per_group].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]
                out[:, g * o_per_group:(g + 1) * o_per_group] += np.einsum("ncyx,oc->noyx", patch, ws[:, :, i, j])
    if "bias" in weights:
        out += weights["bias"][None, :, None, None]
    if len(inputs) == 2:
        out += inputs[1]
    return np.asarray(fused_reference(params["activation"], out), np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    y = F.conv2d(inputs[0], weights["weight"], weights.get("bias"), stride=pair(params["stride"]),
                 padding=pair(params["padding"]), dilation=pair(params["dilation"]),
                 groups=params["groups"])
    if len(inputs) == 2:
        y = y + inputs[1]
    return fused_torch(params["activation"], y)


def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    args = [inputs[0], writer.weight("weight")] + ([writer.weight("bias")] if params["bias"] else [])
    activation, residual = params["activation"] != "none", len(inputs) == 2
    last = output if not (activation or residual) else None
    y = writer.node("Conv", args, last, group=params["groups"], **onnx_window_attrs(params))
    if residual:
        y = writer.node("Add", [y, inputs[1]], None if activation else output)
    if activation:
        fused_onnx(writer, params["activation"], y, output)


def is_depthwise(params: dict, in_channels: int) -> bool:
    """One input channel per group, more than one group (MobileNet's, EfficientNet's and
    ConvNeXt's depthwise layers): what the CPU and CUDA kernels give their own path."""
    return params["groups"] > 1 and params["groups"] == in_channels


register(OpDef(
    name="conv",
    doc="2-D convolution (torch.nn.Conv2d semantics)",
    params=(
        Param("out_channels", "int"),
        Param("kernel_size", "pair"),
        Param("stride", "pair", 1),
        Param("padding", "pair", 0, minimum=0),
        Param("dilation", "pair", 1),
        Param("groups", "int", 1),
        Param("bias", "bool", True),
        Param("activation", "choice", "none", choices=FUSED,
              doc="graphconv extension: the activation the conv applies itself (after the residual)"),
    ),
    shape=shape, reference=reference, flops=flops, package=__name__, arity=(1, 2),
    weight_shapes=weight_shapes, window=window, torch=torch_equivalent, onnx=to_onnx, channels_last="any",
    padding_value=lambda params: 0.0,
    examples=(
        Example(dict(out_channels=3, kernel_size=3), [(2, 6, 5)]),
        Example(dict(out_channels=4, kernel_size=[2, 3], stride=2, padding=1, dilation=[2, 1],
                     groups=2, activation="relu"), [(4, 7, 6)]),
        Example(dict(out_channels=18, kernel_size=1, bias=False), [(17, 3, 2)]),  # past one CUDA tile
        Example(dict(out_channels=2, kernel_size=[4, 3]), [(3, 4, 3)]),  # the whole input: fc-as-conv
        Example(dict(out_channels=5, kernel_size=1, activation="relu"), [(3, 4, 6), (5, 4, 6)]),  # + residual
        Example(dict(out_channels=4, kernel_size=3, padding=1), [(2, 5, 3), (4, 5, 3)]),  # + residual
        Example(dict(out_channels=6, kernel_size=3, stride=2, padding=1, groups=3, activation="relu"),
                [(3, 7, 6), (6, 4, 3)]),  # depthwise, 2 outputs an input channel, + residual
        Example(dict(out_channels=4, kernel_size=[5, 3], padding=[2, 3], dilation=[1, 2], groups=4),
                [(4, 5, 6)]),  # depthwise, padding wider than the dilated taps reach
        Example(dict(out_channels=6, kernel_size=1, activation="silu"), [(5, 3, 4)]),  # EfficientNet's expand
        Example(dict(out_channels=3, kernel_size=3, padding=1, groups=3, activation="hardswish"), [(3, 5, 4)]),
        Example(dict(out_channels=5, kernel_size=1, activation="gelu"), [(4, 3, 3), (5, 3, 3)]),  # + residual
        Example(dict(out_channels=4, kernel_size=3, stride=2, activation="silu"), [(3, 7, 7)]),
        Example(dict(out_channels=5, kernel_size=3, padding=1, activation="mish"), [(3, 6, 5)]),  # CSPDarknet
        Example(dict(out_channels=4, kernel_size=3, padding=1, groups=4, activation="mish"), [(4, 5, 5)]),
    ),
))
