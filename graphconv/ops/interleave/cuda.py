"""CUDA interleave: one thread per output element."""
from __future__ import annotations

from numba import cuda

from graphconv.ops.cuda_launch import grid_1d, unravel_nchw


@cuda.jit
def _interleave(x, out, fy, fx):
    i = cuda.grid(1)
    n, c, height, width = out.shape
    if i < out.size:
        image, channel, y, col = unravel_nchw(i, c, height, width)
        a, b = y % fy, col % fx
        out[image, channel, y, col] = x[(a * fx + b) * n + image, channel, y // fy, col // fx]


def run_interleave(params: dict, weights: dict, inputs: list, out) -> None:
    fy, fx = params["factor"]
    blocks, threads = grid_1d(out.size)
    _interleave[blocks, threads](inputs[0], out, fy, fx)
