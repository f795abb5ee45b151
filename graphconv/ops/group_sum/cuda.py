"""CUDA group_sum: one thread per output element, adding its channel of every group."""
from __future__ import annotations

from numba import cuda

from graphconv.ops.cuda_launch import grid_1d, unravel_nchw


@cuda.jit
def _group_sum(x, groups, out):
    index = cuda.grid(1)
    n, c_out, height, width = out.shape
    if index >= n * c_out * height * width:
        return
    b, ch, y, j = unravel_nchw(index, c_out, height, width)
    total = x[b, ch, y, j]
    for k in range(1, groups):
        total += x[b, k * c_out + ch, y, j]
    out[b, ch, y, j] = total


def run_group_sum(params: dict, weights: dict, inputs: list, out) -> None:
    blocks, threads = grid_1d(out.size)
    _group_sum[blocks, threads](inputs[0], params["groups"], out)
