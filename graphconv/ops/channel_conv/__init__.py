"""channel_conv: a 1-D convolution across the channels at each position, one filter of
`kernel_size` taps shared by every channel (ECA attention: timm's EcaModule, ECA-ResNet,
ECA-NFNet, which pools the map to one value per channel, convolves that vector with a
Conv1d of one input and one output channel and gates the map with its sigmoid).

Output channel c is sum_t weight[t] * x[c + t - padding] (+ bias), zero past either
end, so `padding` = (kernel_size - 1) / 2 keeps the channel count. Like a 1x1 conv it
looks at one position, so it slides over a larger image unchanged; ECA's input is a
global pool, which makes such a network a classifier only (its gate is each crop's).
"""
from __future__ import annotations

import numpy as np

from graphconv.errors import ShapeError
from graphconv.ops.registry import Example, OpDef, Param, numel, register


def _out_channels(params: dict, channels: int) -> int:
    return channels + 2 * params["padding"] - params["kernel_size"] + 1


def shape(params: dict, shapes):
    c, h, w = shapes[0]
    out = _out_channels(params, c)
    if out < 1:
        raise ShapeError(f"channel_conv's {params['kernel_size']} taps with padding {params['padding']} do not fit "
                         f"across {c} channels")
    return out, h, w


def weight_shapes(params: dict, shapes) -> dict[str, tuple]:
    expected = {"weight": (params["kernel_size"],)}
    if params["bias"]:
        expected["bias"] = (1,)
    return expected


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0].astype(np.float64)
    pad = params["padding"]
    padded = np.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0)))
    out_c = _out_channels(params, x.shape[1])
    out = sum(float(w) * padded[:, t:t + out_c] for t, w in enumerate(weights["weight"]))
    if params["bias"]:
        out = out + float(weights["bias"][0])
    return out.astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    """Conv1d over each position's channels: (N, C, H, W) as N*H*W sequences of length C."""
    import torch.nn.functional as F
    x = inputs[0]
    n, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(n * h * w, 1, c)
    out = F.conv1d(rows, weights["weight"].reshape(1, 1, -1), weights.get("bias"), padding=params["padding"])
    return out.reshape(n, h, w, -1).permute(0, 3, 1, 2)


def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    """A Conv over (N, 1, C, H, W) with a (kernel_size, 1, 1) kernel: the channels as a
    third spatial axis, so no Reshape needs the map's height and width."""
    k, pad = params["kernel_size"], params["padding"]
    axis = writer.constant(np.array([1], np.int64))
    operands = [writer.node("Unsqueeze", [inputs[0], axis]), writer.weight("weight", (1, 1, k, 1, 1))] \
        + ([writer.weight("bias")] if params["bias"] else [])
    convolved = writer.node("Conv", operands, kernel_shape=[k, 1, 1], pads=[pad, 0, 0, pad, 0, 0])
    writer.node("Squeeze", [convolved, axis], output)


register(OpDef(
    name="channel_conv", doc="a 1-D convolution across the channels at each position, one filter of kernel_size "
                             "taps (ECA attention's Conv1d)",
    params=(Param("kernel_size", "int", doc="taps across neighbouring channels"),
            Param("padding", "int", 0, minimum=0, doc="zero channels added at each end; (kernel_size - 1) / 2 keeps "
                                           "their number"),
            Param("bias", "bool", False)),
    shape=shape, reference=reference, weight_shapes=weight_shapes,
    flops=lambda params, shapes, out: 2 * params["kernel_size"] * numel(out),
    package=__name__, torch=torch_equivalent, onnx=to_onnx,
    examples=(Example(dict(kernel_size=3, padding=1), [(16, 1, 1)]),
              Example(dict(kernel_size=5, padding=2, bias=True), [(7, 2, 3)]),
              Example(dict(kernel_size=3), [(6, 1, 1)], batch=3),
              Example(dict(kernel_size=9, padding=4), [(4, 1, 2)])),  # more taps than channels
))
