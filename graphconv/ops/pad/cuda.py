"""CUDA pad: one thread per output element, consecutive threads on consecutive columns:
the input's value inside the border; in it, the pad's value or the input pixel a
reflect or edge pad copies (`source_index`, the CPU kernel's rule)."""
from __future__ import annotations

from functools import partial

import numpy as np
from numba import cuda

from graphconv.ops.cuda_launch import BoundLaunches, KernelCall, grid_1d, unravel_nchw
from graphconv.ops import pad

source_index = cuda.jit(device=True, inline=True)(pad.source_index)


@cuda.jit
def _pad(x, top, left, value, mode, out):
    index = cuda.grid(1)
    n, c, rows, cols = out.shape
    if index >= n * c * rows * cols:
        return
    b, ch, y, xx = unravel_nchw(index, c, rows, cols)
    iy, ix = source_index(y - top, x.shape[2], mode), source_index(xx - left, x.shape[3], mode)
    if iy >= 0 and ix >= 0:
        out[b, ch, y, xx] = x[b, ch, iy, ix]
    else:
        out[b, ch, y, xx] = value


def _launches(params: dict, inputs: list, out) -> list[KernelCall]:
    top, left, _, _ = params["padding"]
    value, mode = np.float32(params["value"]), pad.MODES.index(params["mode"])
    return [(_pad, grid_1d(out.size), (inputs[0], top, left, value, mode, out))]


def bind_pad(params: dict, weights: dict) -> BoundLaunches:
    return BoundLaunches(partial(_launches, params))


def run_pad(params: dict, weights: dict, inputs: list, out) -> None:
    bind_pad(params, weights)(inputs, out)
