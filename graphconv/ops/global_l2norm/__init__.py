"""global_l2norm: the L2 norm of each channel over its whole map, C x 1 x 1 (ONNX
ReduceL2 over H and W; torch.norm(x, dim=(2, 3), keepdim=True)): how ConvNeXt V2's
global response normalisation (GRN) measures each channel.

Like a squeeze-and-excitation gate's global pool, the norm is the crop's: on a larger
image it would be the image's, and no rewrite makes it each crop's. So it is a
`whole_map` op: the passes that make a network slide refuse it, and `graphconv run
--crops` computes the network's map crop by crop. Its window is the whole input, as
globalavgpool's, so receptive fields see every input cell in its one output cell.
"""
from __future__ import annotations

import numpy as np

from graphconv.ops.registry import Example, OpDef, Window, numel, register


def window(params: dict, shapes) -> Window:
    _, h, w = shapes[0]
    return Window((h, w), (1, 1), (0, 0), (1, 1))


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0].astype(np.float64)
    return np.sqrt((x * x).sum(axis=(2, 3), keepdims=True)).astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch
    return torch.linalg.vector_norm(inputs[0], dim=(2, 3), keepdim=True)


def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    """ReduceL2 took its axes as an attribute until op set 18, as an input from it."""
    writer.node("ReduceL2", [inputs[0], writer.constant(np.array([2, 3], np.int64))], output, keepdims=1)


register(OpDef(
    name="global_l2norm", doc="the L2 norm of each channel over the whole map, output C x 1 x 1 (ReduceL2 "
                              "over H and W: ConvNeXt V2's GRN)",
    params=(), shape=lambda params, shapes: (shapes[0][0], 1, 1), reference=reference,
    flops=lambda params, shapes, out: 2 * numel(shapes[0]) + numel(out),  # squares, sums, one root each
    package=__name__, window=window, torch=torch_equivalent, onnx=to_onnx, whole_map=True,
    channels_last="any",  # its C x 1 x 1 output is the same memory either way
    examples=(
        Example({}, [(3, 4, 5)]),
        Example({}, [(2, 9, 11)]),  # more pixels than a CUDA block has threads
        Example({}, [(4, 1, 1)], batch=1),
    ),
))
