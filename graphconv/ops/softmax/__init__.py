"""softmax: over channels, independently at every spatial position (so it carries over
unchanged when fc layers become convolutions).

With `groups` g > 0 it is taken across g runs of C / g channels instead, separately for
each offset within a run: ResNeSt's radix softmax, which weighs its g branches against
each other channel by channel. That is the plain softmax over axis 1 of the (N, g, C/g,
H*W) view of the same memory, so the kernels run it so.

log_softmax is its logarithm, x - max - log(sum(exp(x - max))) over the channels at each
position, computed so (never as the log of a softmax, which is -inf wherever exp(x - max)
underflows): what classifiers trained with NLLLoss end in (nn.LogSoftmax(dim=1), ONNX
LogSoftmax). It is an op of its own rather than a flag on softmax because its values
are not probabilities (the heatmap's 0..1 scale reads `softmax` as such). It shares the
softmax kernels."""
from __future__ import annotations

import numpy as np

from graphconv.errors import ShapeError
from graphconv.ops.registry import Example, OpDef, Param, numel, onnx_as, register


def grouped_view(x, groups: int):
    """The (N, g, C/g, H*W) view whose axis 1 a grouped softmax is over (`x` itself when
    groups is 0). numpy, PyTorch and device arrays alike."""
    if not groups:
        return x
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h * w)


def shape(params: dict, shapes) -> tuple[int, int, int]:
    c = shapes[0][0]
    if params["groups"] and c % params["groups"]:
        raise ShapeError(f"{c} channels do not split into {params['groups']} groups of equal size")
    return shapes[0]


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = grouped_view(inputs[0].astype(np.float64), params["groups"])
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).reshape(inputs[0].shape).astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.softmax(grouped_view(inputs[0], params["groups"]), dim=1).reshape(inputs[0].shape)


def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    """Softmax over axis 1; grouped, of the (N, g, -1) view, and the map's shape back."""
    if not params["groups"]:
        writer.node("Softmax", inputs, output, axis=1)
        return
    grouped = writer.node("Reshape", [inputs[0], writer.constant(np.array([0, params["groups"], -1], np.int64))])
    normed = writer.node("Softmax", [grouped], axis=1)
    writer.node("Reshape", [normed, writer.node("Shape", inputs)], output)


def log_reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0].astype(np.float64)
    shifted = x - x.max(axis=1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))).astype(np.float32)


def log_torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.log_softmax(inputs[0], dim=1)


register(OpDef(
    name="softmax", doc="softmax over channels at each position (or across `groups` runs of them)",
    params=(Param("groups", "int", 0, minimum=0,
                  doc="0: over all the channels; g: across g runs of C/g channels, each offset apart "
                      "(ResNeSt's radix softmax)"),),
    shape=shape, reference=reference,
    flops=lambda params, shapes, out: 4 * numel(out), package=__name__, torch=torch_equivalent,
    onnx=to_onnx, gives_probabilities=True,
    examples=(Example({}, [(4, 2, 3)]), Example({}, [(1, 2, 2)]), Example({"groups": 2}, [(6, 1, 1)], batch=3),
              Example({"groups": 3}, [(6, 2, 3)])),
))

register(OpDef(
    name="log_softmax", doc="log of the softmax over channels at each position: x - max - log(sum(exp(x - max)))",
    params=(), shape=lambda params, shapes: shapes[0], reference=log_reference,
    flops=lambda params, shapes, out: 4 * numel(out), package=__name__, torch=log_torch_equivalent,
    onnx=onnx_as("LogSoftmax", axis=1),
    # 40 channels: two per CUDA lane, and 6 positions, part of a block of 8
    examples=(Example({}, [(4, 2, 3)]), Example({}, [(1, 2, 2)]), Example({}, [(40, 1, 3)])),
))
