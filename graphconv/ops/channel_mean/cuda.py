"""CUDA channel mean and L2 norm: one thread per output position, summing its channels."""
from __future__ import annotations

import math

from numba import cuda

from graphconv.ops.cuda_launch import grid_1d, unravel_nchw


@cuda.jit
def _over_channels(x, squares, out):
    index = cuda.grid(1)
    n, c, height, width = x.shape
    if index >= n * height * width:
        return
    b, _, y, j = unravel_nchw(index, 1, height, width)
    total = 0.0
    for ch in range(c):
        v = x[b, ch, y, j]
        total += v * v if squares else v
    out[b, 0, y, j] = math.sqrt(total) if squares else total / c


def _launch(inputs: list, squares: bool, out) -> None:
    blocks, threads = grid_1d(out.size)
    _over_channels[blocks, threads](inputs[0], squares, out)


def run_channel_mean(params: dict, weights: dict, inputs: list, out) -> None:
    _launch(inputs, False, out)


def run_channel_l2norm(params: dict, weights: dict, inputs: list, out) -> None:
    _launch(inputs, True, out)
