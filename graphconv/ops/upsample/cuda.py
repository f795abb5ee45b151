"""CUDA upsample: one thread per output element, consecutive threads on consecutive
columns; each reads its source cells and weights by `source`, the CPU kernel's rule."""
from __future__ import annotations

from functools import partial

import numpy as np
from numba import cuda

from graphconv.ops import upsample
from graphconv.ops.upsample import NEAREST
from graphconv.ops.cuda_launch import BoundLaunches, KernelCall, grid_1d, unravel_nchw

source = cuda.jit(device=True, inline=True)(upsample.source)


@cuda.jit
def _upsample(x, fy, fx, sampling, out):
    index = cuda.grid(1)
    n, c, rows, cols = out.shape
    if index >= n * c * rows * cols:
        return
    b, ch, y, ox = unravel_nchw(index, c, rows, cols)
    top, bottom, wy = source(y, fy, x.shape[2], sampling)
    left, right, wx = source(ox, fx, x.shape[3], sampling)
    if sampling == NEAREST:
        out[b, ch, y, ox] = x[b, ch, top, left]
        return
    wx32, wy32 = np.float32(wx), np.float32(wy)
    above = x[b, ch, top, left] + wx32 * (x[b, ch, top, right] - x[b, ch, top, left])
    below = x[b, ch, bottom, left] + wx32 * (x[b, ch, bottom, right] - x[b, ch, bottom, left])
    out[b, ch, y, ox] = above + wy32 * (below - above)


def _launches(params: dict, inputs: list, out) -> list[KernelCall]:
    fy, fx = params["factor"]
    return [(_upsample, grid_1d(out.size), (inputs[0], fy, fx, upsample.sampling(params), out))]


def bind_upsample(params: dict, weights: dict) -> BoundLaunches:
    return BoundLaunches(partial(_launches, params))


def run_upsample(params: dict, weights: dict, inputs: list, out) -> None:
    bind_upsample(params, weights)(inputs, out)
