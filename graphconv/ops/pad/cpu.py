"""CPU pad: the border filled and the input copied inside it, in the order the output is
stored: plane by plane (parallel over image x channel) for an NCHW output, row by row
(parallel over image x output row, each pixel's channels one contiguous run) for a
channels-last one. An input stored the other way is read row by row too, each pixel's
channels at once, so no transposing copy is made and no plane is walked across the
other storage (which read a whole cache line per value: a pad after a 64-channel conv
was 7-13x onnxruntime). A border pixel of a reflect or edge pad copies the input pixel
`source_index` names; a constant one gets the value."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops import pad
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


@njit(cache=True, parallel=True)
def _pad_rows_into_planes(xh, top, left, value, mode, out):
    """`_pad_planes` from an (N, H, W, C) view: one output row a job, each input pixel's
    C contiguous values written down the C planes' rows at its column."""
    n, height, width, c = xh.shape
    rows, cols = out.shape[2], out.shape[3]
    for job in prange(n * rows):
        b, y = job // rows, job % rows
        iy = source_index(y - top, height, mode)
        if iy < 0:
            out[b, :, y, :] = value
            continue
        for ox in range(cols):
            ix = source_index(ox - left, width, mode)
            if ix < 0:
                out[b, :, y, ox] = value
            else:
                for ch in range(c):
                    out[b, ch, y, ox] = xh[b, iy, ix, ch]


@njit(cache=True, parallel=True)
def _pad_rows(xh, top, left, value, mode, outh):
    """`_pad_planes` on (N, H, W, C) views: one output row a job, each pixel's C values
    copied or filled as one contiguous run of the output."""
    n, height, width, c = xh.shape
    rows, cols = outh.shape[1], outh.shape[2]
    for job in prange(n * rows):
        b, y = job // rows, job % rows
        iy = source_index(y - top, height, mode)
        if iy < 0:
            outh[b, y, :, :] = value
            continue
        for ox in range(cols):
            ix = source_index(ox - left, width, mode)
            if ix < 0:
                outh[b, y, ox, :] = value
            else:
                for ch in range(c):
                    outh[b, y, ox, ch] = xh[b, iy, ix, ch]


def run_pad(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    """Follow the output's storage; an NCHW-shaped channels-last input is read through
    its (N, H, W, C) memory or as a strided view, never copied."""
    top, left, _, _ = params["padding"]
    value, mode = np.float32(params["value"]), pad.MODES.index(params["mode"])
    x = inputs[0]
    out_stored, x_stored = nhwc(out), nhwc(x)
    if out_stored is None and x_stored is None:
        _pad_planes(x, top, left, value, mode, out)
    elif out_stored is None:
        _pad_rows_into_planes(x_stored, top, left, value, mode, out)
    else:
        _pad_rows(x.transpose(0, 2, 3, 1) if x_stored is None else x_stored, top, left, value, mode,
                  out_stored)
