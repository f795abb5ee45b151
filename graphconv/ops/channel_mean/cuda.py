"""CUDA channel mean: one thread per output position, summing its channels."""
from __future__ import annotations

from numba import cuda

from graphconv.ops.cuda_launch import grid_1d, unravel_nchw


@cuda.jit
def _channel_means(x, out):
    index = cuda.grid(1)
    n, c, height, width = x.shape
    if index >= n * height * width:
        return
    b, _, y, j = unravel_nchw(index, 1, height, width)
    total = 0.0
    for ch in range(c):
        total += x[b, ch, y, j]
    out[b, 0, y, j] = total / c


def run_channel_mean(params: dict, weights: dict, inputs: list, out) -> None:
    blocks, threads = grid_1d(out.size)
    _channel_means[blocks, threads](inputs[0], out)
