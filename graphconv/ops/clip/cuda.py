"""CUDA clip: one thread per element, on flat views; NaN passes through as on the CPU."""
from __future__ import annotations

from numba import cuda

from graphconv.ops.clip import bounds
from graphconv.ops.cuda_launch import grid_1d


@cuda.jit
def _clip(x, low, high, out):
    i = cuda.grid(1)
    if i < x.size:
        v = x[i]
        if v < low:
            v = low
        elif v > high:
            v = high
        out[i] = v


def run_clip(params: dict, weights: dict, inputs: list, out) -> None:
    x = inputs[0]
    low, high = bounds(params)
    blocks, threads = grid_1d(x.size)
    _clip[blocks, threads](x.reshape(x.size), low, high, out.reshape(out.size))
