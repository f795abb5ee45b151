"""Ops that move whole channels: channel_shuffle (ShuffleNet's interleaving of groups)
and slice_channels (a contiguous range of channels: ShuffleNet's chunk, any Split).

Both copy, leaving every position where it was, so like concat they slide over a
larger image unchanged. They share `source_rule`, which says for each output
channel which input channel it reads: the kernels and the reference all follow it.
"""
from __future__ import annotations

import numpy as np

from graphconv.errors import ShapeError
from graphconv.ops.registry import Example, OpDef, Param, register


def source_rule(op: str, params: dict, channels: int) -> tuple[int, int, int]:
    """(groups, per_group, start): output channel ch reads input channel
    (ch % groups) * per_group + ch // groups + start. A shuffle is view (g, C/g),
    transpose, flatten (start 0); a slice is one group from `start`."""
    if op == "slice_channels":
        return 1, 0, params["start"]
    return params["groups"], channels // params["groups"], 0


def source_channels(op: str, params: dict, channels: int, out_channels: int) -> np.ndarray:
    """Input channel of each output channel, as int64: the rule spelled out (the reference)."""
    groups, per_group, start = source_rule(op, params, channels)
    out = np.arange(out_channels, dtype=np.int64)
    return (out % groups) * per_group + out // groups + start


def _shuffle_shape(params: dict, shapes):
    c = shapes[0][0]
    if c % params["groups"]:
        raise ShapeError(f"channel_shuffle of {c} channels into {params['groups']} groups: "
                         "the groups must divide the channels")
    return shapes[0]


def _slice_shape(params: dict, shapes):
    c, h, w = shapes[0]
    start, stop = params["start"], params["stop"]
    if not 0 <= start < stop <= c:
        raise ShapeError(f"slice_channels [{start}, {stop}) of a {c}-channel input: "
                         f"need 0 <= start < stop <= {c}")
    return (stop - start, h, w)


def _reference(op: str):
    def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
        x = inputs[0]
        out_channels = (params["stop"] - params["start"]) if op == "slice_channels" else x.shape[1]
        return x[:, source_channels(op, params, x.shape[1], out_channels)].copy()
    return reference


def shuffle_torch(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.channel_shuffle(inputs[0], params["groups"])


def slice_torch(params: dict, weights: dict, inputs: list):
    return inputs[0][:, params["start"]:params["stop"]]


def shuffle_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    """As PyTorch exports it: view (N, g, C/g, H, W), swap the two group axes, view back.
    H and W come from the input's Shape, so they stay dynamic."""
    def const(*values: int) -> str:
        return writer.constant(np.array(values, np.int64))

    x = inputs[0]
    shape = writer.node("Shape", [x])
    height_width = writer.node("Slice", [shape, const(2), const(4)])
    grouped_shape = writer.node("Concat", [const(0, params["groups"], -1), height_width], axis=0)
    swapped = writer.node("Transpose", [writer.node("Reshape", [x, grouped_shape])], perm=[0, 2, 1, 3, 4])
    writer.node("Reshape", [swapped, shape], output)


def slice_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    bounds = [writer.constant(np.array([params[key]], np.int64)) for key in ("start", "stop")]
    writer.node("Slice", [inputs[0], *bounds, writer.constant(np.array([1], np.int64))], output)


register(OpDef(
    name="channel_shuffle", doc="interleave channel groups: view (g, C/g), transpose, flatten (ShuffleNet)",
    params=(Param("groups", "int", doc="number of groups (ShuffleNetV2: 2)"),),
    shape=_shuffle_shape, reference=_reference("channel_shuffle"),
    flops=lambda params, shapes, out: 0, package=__name__, torch=shuffle_torch, onnx=shuffle_onnx,
    channels_last="like-input",
    examples=(Example(dict(groups=2), [(4, 2, 3)]), Example(dict(groups=3), [(6, 1, 2)]),
              Example(dict(groups=1), [(3, 2, 2)])),
))
register(OpDef(
    name="slice_channels", doc="channels start..stop-1 of the input (a Split or chunk along channels)",
    params=(Param("start", "int", 0, minimum=0, doc="first channel kept"),
            Param("stop", "int", doc="one past the last channel kept")),
    shape=_slice_shape, reference=_reference("slice_channels"),
    flops=lambda params, shapes, out: 0, package=__name__, torch=slice_torch, onnx=slice_onnx,
    channels_last="like-input",
    examples=(Example(dict(start=0, stop=2), [(4, 2, 3)]), Example(dict(start=2, stop=5), [(5, 3, 2)]),
              Example(dict(stop=1), [(1, 2, 2)])),
))
