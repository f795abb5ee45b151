"""shift_copies: the first half of shift-and-stitch, as an op in the graph.

Each image becomes fy x fx copies of itself shifted up by a * step_h and left by
b * step_w pixels (a < fy, b < fx), zero-filled where a shift runs past the image's
end, stacked along the batch: copy (a, b) of image n is batch entry (a * fx + b) * N + n.
The layers after it run once on the whole stack; `interleave` then puts copy (a, b)'s
score map into rows a::fy and columns b::fx of a map fy x fx times finer.

The IR's shapes are per image, so this op changes the batch, not the shape: its
`batch_scale` is fy * fx, and the runtime plan, the FLOP counts and the memory estimate
multiply by it. (The receptive field of a value between the two ops is that of copy
(0, 0); `interleave` restores the uniform stride of the fine map.)
"""
from __future__ import annotations

import numpy as np

from graphconv.ops.registry import Example, OpDef, Param, register


def _steps(params: dict):
    (fy, fx), (sy, sx) = params["factor"], params["step"]
    return [(a, b, a * sy, b * sx) for a in range(fy) for b in range(fx)]


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0]
    n, c, height, width = x.shape
    copies = []
    for _, _, dy, dx in _steps(params):
        shifted = np.zeros_like(x)
        shifted[:, :, :max(0, height - dy), :max(0, width - dx)] = x[:, :, dy:, dx:]
        copies.append(shifted)
    return np.concatenate(copies).astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch
    x = inputs[0]
    height, width = x.shape[2:]
    copies = []
    for _, _, dy, dx in _steps(params):
        shifted = torch.zeros_like(x)
        shifted[:, :, :max(0, height - dy), :max(0, width - dx)] = x[:, :, dy:, dx:]
        copies.append(shifted)
    return torch.cat(copies)


register(OpDef(
    name="shift_copies", internal=True, doc="fy x fx shifted copies of each image, stacked along the batch",
    params=(Param("factor", "pair", doc="copies per axis (fy, fx)"),
            Param("step", "pair", doc="pixels between neighbouring shifts (the fine output stride)")),
    shape=lambda params, shapes: shapes[0], reference=reference,
    flops=lambda params, shapes, out: 0, package=__name__, torch=torch_equivalent,
    batch_scale=lambda params: params["factor"][0] * params["factor"][1],
    examples=(Example({"factor": 2, "step": 1}, [(2, 3, 4)]),
              Example({"factor": [2, 3], "step": [2, 1]}, [(1, 5, 4)]),
              Example({"factor": 3, "step": 4}, [(1, 6, 5)])),  # shifts past the end: zeros
))
