"""CUDA softmax over channels: one thread per (image, row, column)."""
from __future__ import annotations

import math

from numba import cuda

from graphconv.ops.cuda_launch import grid_1d, unravel_nchw


@cuda.jit
def _softmax(x, out):
    index = cuda.grid(1)
    n, c, height, width = x.shape
    if index >= n * height * width:
        return
    b, _, y, xx = unravel_nchw(index, 1, height, width)
    m = x[b, 0, y, xx]
    for ch in range(1, c):
        m = max(m, x[b, ch, y, xx])
    total = 0.0
    for ch in range(c):
        e = math.exp(x[b, ch, y, xx] - m)
        out[b, ch, y, xx] = e
        total += e
    for ch in range(c):
        out[b, ch, y, xx] /= total


def run_softmax(params: dict, weights: dict, inputs: list, out) -> None:
    x = inputs[0]
    n, _, height, width = x.shape
    blocks, threads = grid_1d(n * height * width)
    _softmax[blocks, threads](x, out)
