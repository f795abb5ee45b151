"""CUDA pad: one thread per output element, consecutive threads on consecutive columns:
the input's value inside the border, the pad's value in it."""
from __future__ import annotations

from functools import partial

import numpy as np
from numba import cuda

from graphconv.ops.cuda_launch import BoundLaunches, KernelCall, grid_1d, unravel_nchw


@cuda.jit
def _pad(x, top, left, value, out):
    index = cuda.grid(1)
    n, c, rows, cols = out.shape
    if index >= n * c * rows * cols:
        return
    b, ch, y, xx = unravel_nchw(index, c, rows, cols)
    iy, ix = y - top, xx - left
    if 0 <= iy < x.shape[2] and 0 <= ix < x.shape[3]:
        out[b, ch, y, xx] = x[b, ch, iy, ix]
    else:
        out[b, ch, y, xx] = value


def _launches(params: dict, inputs: list, out) -> list[KernelCall]:
    top, left, _, _ = params["padding"]
    return [(_pad[grid_1d(out.size)], (inputs[0], top, left, np.float32(params["value"]), out))]


def bind_pad(params: dict, weights: dict) -> BoundLaunches:
    return BoundLaunches(partial(_launches, params))


def run_pad(params: dict, weights: dict, inputs: list, out) -> None:
    bind_pad(params, weights)(inputs, out)
