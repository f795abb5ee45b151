"""CPU pad: the border filled and the input copied inside it, in the order the output is
stored: plane by plane (parallel over image x channel) for an NCHW output, row by row
(parallel over image x output row, each pixel's channels one contiguous run) for a
channels-last one, or from a channels-last input into an NCHW output (a network's last
layer) row by row, each row stored down the planes a cache line at a time (walking each
plane across channels-last memory read a cache line per value: a pad after a 64-channel
conv was 7-13x onnxruntime). The input is never copied. A border pixel of a reflect or
edge pad copies the input pixel `source_index` names; a constant one gets the value."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops import pad
from graphconv.ops.channels_last import store_row_in_planes
from graphconv.ops.layout import nhwc

source_index = njit(cache=True, inline="always")(pad.source_index)


@njit(cache=True, inline="always")
def _border_columns(row, left, value, mode, start, stop, out_row):
    """out_row[start:stop], columns of the border, from the input's `row` or `value`."""
    for ox in range(start, stop):
        ix = source_index(ox - left, row.size, mode)
        out_row[ox] = value if ix < 0 else row[ix]


@njit(cache=True, parallel=True)
def _pad_planes(x, top, left, value, mode, out):
    """out[b, c] = x[b, c] with `top` rows and `left` columns of border before it and the
    rest of out's rows and columns after it; x may be any strided (N, C, H, W) view."""
    n, c, height, width = x.shape
    rows, cols = out.shape[2], out.shape[3]
    for plane in prange(n * c):
        b, ch = plane // c, plane % c
        for y in range(rows):
            iy = source_index(y - top, height, mode)
            if iy < 0:
                out[b, ch, y, :] = value
                continue
            for ix in range(width):  # the input's own row
                out[b, ch, y, left + ix] = x[b, ch, iy, ix]
            _border_columns(x[b, ch, iy], left, value, mode, 0, left, out[b, ch, y])
            _border_columns(x[b, ch, iy], left, value, mode, left + width, cols, out[b, ch, y])


@njit(cache=True, inline="always")
def _pad_row(xh, b, iy, left, value, mode, out_row):
    """out_row (cols, C) = input row iy of image b with its border columns."""
    width, c = xh.shape[2], xh.shape[3]
    for ox in range(out_row.shape[0]):
        ix = source_index(ox - left, width, mode)
        if ix < 0:
            out_row[ox, :] = value
        else:
            for ch in range(c):
                out_row[ox, ch] = xh[b, iy, ix, ch]


@njit(cache=True, parallel=True)
def _pad_rows(xh, top, left, value, mode, outh):
    """`_pad_planes` on (N, H, W, C) views: one output row a job, each pixel's C values
    copied or filled at once (one contiguous run where the output is stored channels-last)."""
    height = xh.shape[1]
    n, rows = outh.shape[0], outh.shape[1]
    for job in prange(n * rows):
        b, y = job // rows, job % rows
        iy = source_index(y - top, height, mode)
        if iy < 0:
            outh[b, y, :, :] = value
        else:
            _pad_row(xh, b, iy, left, value, mode, outh[b, y])


@njit(cache=True, parallel=True)
def _pad_rows_into_planes(xh, top, left, value, mode, out):
    """`_pad_rows` from a channels-last input into an NCHW output: each row padded
    channels-last, then stored down the planes (`store_row_in_planes`)."""
    height, c = xh.shape[1], xh.shape[3]
    n, rows, cols = out.shape[0], out.shape[2], out.shape[3]
    for job in prange(n * rows):
        b, y = job // rows, job % rows
        iy = source_index(y - top, height, mode)
        if iy < 0:
            out[b, :, y, :] = value
        else:
            row = np.empty((cols, c), np.float32)
            _pad_row(xh, b, iy, left, value, mode, row)
            store_row_in_planes(row, out, b, y)


def run_pad(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    """Plane by plane where both are NCHW, else row by row, each read or written as it
    is stored (an NCHW input to a channels-last output through its (N, H, W, C) view)."""
    top, left, _, _ = params["padding"]
    value, mode = np.float32(params["value"]), pad.MODES.index(params["mode"])
    x = inputs[0]
    x_stored, out_stored = nhwc(x), nhwc(out)
    if out_stored is not None:
        _pad_rows(x.transpose(0, 2, 3, 1), top, left, value, mode, out_stored)
    elif x_stored is not None:
        _pad_rows_into_planes(x_stored, top, left, value, mode, out)
    else:
        _pad_planes(x, top, left, value, mode, out)
