"""CUDA LRN: one thread per (image, row, column), walking the channels."""
from __future__ import annotations

from numba import cuda

from graphconv.ops.cuda_launch import grid_1d, unravel_nchw


@cuda.jit
def _lrn(x, out, size, alpha, beta, k):
    index = cuda.grid(1)
    n, c, height, width = x.shape
    if index >= n * height * width:
        return
    b, _, y, xx = unravel_nchw(index, 1, height, width)
    for ch in range(c):
        acc = 0.0
        for j in range(max(0, ch - size // 2), min(c, ch + (size - 1) // 2 + 1)):
            acc += x[b, j, y, xx] * x[b, j, y, xx]
        out[b, ch, y, xx] = x[b, ch, y, xx] / (k + alpha / size * acc) ** beta


def run_lrn(params: dict, weights: dict, inputs: list, out) -> None:
    x = inputs[0]
    n, _, height, width = x.shape
    blocks, threads = grid_1d(n * height * width)
    _lrn[blocks, threads](x, out, params["size"], params["alpha"], params["beta"], params["k"])
