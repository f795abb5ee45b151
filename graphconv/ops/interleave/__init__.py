"""interleave: the second half of shift-and-stitch, as an op in the graph.

The input holds fy x fx maps per image along the batch (copy (a, b) of image n at
batch entry (a * fx + b) * N + n, as `shift_copies` made them); the output puts copy
(a, b)'s cell (i, j) at (i * fy + a, j * fx + b) of one map fy x fx times finer. Its
`batch_scale` is 1 / (fy * fx).

For receptive fields it is a 1x1 window of stride 1/f: a cell's field keeps its size
and the map's stride is divided by the factor, which is exactly what interleaving the
shifted maps achieves.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from graphconv.ops.registry import Example, OpDef, Param, Window, register


def shape(params: dict, shapes) -> tuple[int, int, int]:
    (c, rows, cols), = shapes
    fy, fx = params["factor"]
    return c, rows * fy, cols * fx


def window(params: dict, shapes) -> Window:
    fy, fx = params["factor"]
    return Window((1, 1), (Fraction(1, fy), Fraction(1, fx)), (0, 0), (1, 1))


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0]
    fy, fx = params["factor"]
    copies, c, rows, cols = x.shape
    n = copies // (fy * fx)
    return (x.reshape(fy, fx, n, c, rows, cols).transpose(2, 3, 4, 0, 5, 1)
            .reshape(n, c, rows * fy, cols * fx).astype(np.float32))


def torch_equivalent(params: dict, weights: dict, inputs: list):
    x = inputs[0]
    fy, fx = params["factor"]
    copies, c, rows, cols = x.shape
    n = copies // (fy * fx)
    return x.reshape(fy, fx, n, c, rows, cols).permute(2, 3, 4, 0, 5, 1).reshape(n, c, rows * fy, cols * fx)


register(OpDef(
    name="interleave", internal=True, doc="fy x fx maps per image (along the batch) interleaved into one finer map",
    params=(Param("factor", "pair", doc="copies per axis (fy, fx)"),),
    shape=shape, reference=reference, window=window,
    flops=lambda params, shapes, out: 0, package=__name__, torch=torch_equivalent, keeps_values=True,
    batch_scale=lambda params: Fraction(1, params["factor"][0] * params["factor"][1]),
    examples=(Example({"factor": 2}, [(3, 2, 3)], batch=8), Example({"factor": [3, 2]}, [(2, 1, 2)], batch=6)),
))
