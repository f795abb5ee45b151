"""CPU pad: the border filled with the value and the input copied inside it, in the order
the output is stored: plane by plane (parallel over image x channel) for an NCHW output,
row by row (parallel over image x output row, each pixel's channels one contiguous run)
for a channels-last one. The input is read in whichever storage it has: numba walks a
strided view the same way, so no transposing copy is made."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.layout import nhwc


@njit(cache=True, parallel=True)
def _pad_planes(x, top, left, value, out):
    """out[b, c] = x[b, c] with `top` rows and `left` columns of `value` before it and the
    rest of out's rows and columns after it; x may be any strided (N, C, H, W) view."""
    n, c, height, width = x.shape
    rows = out.shape[2]
    for plane in prange(n * c):
        b, ch = plane // c, plane % c
        for y in range(rows):
            iy = y - top
            if iy < 0 or iy >= height:
                out[b, ch, y, :] = value
                continue
            out[b, ch, y, :left] = value
            for ix in range(width):
                out[b, ch, y, left + ix] = x[b, ch, iy, ix]
            out[b, ch, y, left + width:] = value


@njit(cache=True, parallel=True)
def _pad_rows(xh, top, left, value, outh):
    """`_pad_planes` on (N, H, W, C) views: one output row a job, each pixel's C values
    copied or filled as one contiguous run of the output."""
    n, height, width, c = xh.shape
    rows = outh.shape[1]
    for job in prange(n * rows):
        b, y = job // rows, job % rows
        iy = y - top
        if iy < 0 or iy >= height:
            outh[b, y, :, :] = value
            continue
        outh[b, y, :left, :] = value
        for ix in range(width):
            for ch in range(c):
                outh[b, y, left + ix, ch] = xh[b, iy, ix, ch]
        outh[b, y, left + width:, :] = value


def run_pad(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    """Follow the output's storage; an NCHW-shaped channels-last input is read through
    its (N, H, W, C) memory or as a strided view, never copied."""
    top, left, _, _ = params["padding"]
    value = np.float32(params["value"])
    x = inputs[0]
    out_stored = nhwc(out)
    if out_stored is None:
        _pad_planes(x, top, left, value, out)
        return
    x_stored = nhwc(x)
    _pad_rows(x.transpose(0, 2, 3, 1) if x_stored is None else x_stored, top, left, value, out_stored)
