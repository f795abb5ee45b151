"""CPU upsample: in the order the output is stored, like the pad kernel: plane by plane
(parallel over image x channel) for an NCHW output, row by row (parallel over image x
output row, each pixel's channels one contiguous run) for a channels-last one, or from a
channels-last input into an NCHW output (an FCN head's last resize) row by row, each row
stored down the planes a cache line at a time (walking each plane across channels-last
memory read a cache line per value: 3-5x onnxruntime). The input is never copied. Each
output row's source rows and weight come from `source`, and every column's once per call."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops import upsample
from graphconv.ops.channels_last import store_row_in_planes
from graphconv.ops.layout import nhwc

source = njit(cache=True, inline="always")(upsample.source)


@njit(cache=True)
def _column_sources(cols, factor, width, bilinear):
    """`source` of every output column, as three arrays."""
    first = np.empty(cols, np.int64)
    second = np.empty(cols, np.int64)
    weight = np.empty(cols, np.float32)
    for ox in range(cols):
        first[ox], second[ox], w = source(ox, factor, width, bilinear)
        weight[ox] = w
    return first, second, weight


@njit(cache=True, inline="always")
def _lerp(a, b, weight):
    return a + weight * (b - a)


@njit(cache=True, parallel=True)
def _upsample_planes(x, fy, fx, bilinear, out):
    n, c, height, width = x.shape
    rows, cols = out.shape[2], out.shape[3]
    first, second, wx = _column_sources(cols, fx, width, bilinear)
    for plane in prange(n * c):
        b, ch = plane // c, plane % c
        between = np.empty(width, np.float32)  # a bilinear row's input row, interpolated between two
        for y in range(rows):
            top, bottom, wy = source(y, fy, height, bilinear)
            upper, lower = x[b, ch, top], x[b, ch, bottom]
            if not bilinear:
                for ox in range(cols):
                    out[b, ch, y, ox] = upper[first[ox]]
                continue
            for ix in range(width):
                between[ix] = _lerp(upper[ix], lower[ix], np.float32(wy))
            for ox in range(cols):
                out[b, ch, y, ox] = _lerp(between[first[ox]], between[second[ox]], wx[ox])


@njit(cache=True, inline="always")
def _upsample_row(xh, b, top, bottom, wy, first, second, wx, bilinear, out_row):
    """out_row (cols, C): the output row between input rows `top` and `bottom` of image b;
    a bilinear one interpolated between the two rows first, then along the row (a lerp
    and a fraction of one per value, each over a pixel's contiguous channels)."""
    width, c = xh.shape[2], xh.shape[3]
    if not bilinear:
        for ox in range(out_row.shape[0]):
            for ch in range(c):
                out_row[ox, ch] = xh[b, top, first[ox], ch]
        return
    between = np.empty((width, c), np.float32)
    for ix in range(width):
        for ch in range(c):
            between[ix, ch] = _lerp(xh[b, top, ix, ch], xh[b, bottom, ix, ch], wy)
    for ox in range(out_row.shape[0]):
        for ch in range(c):
            out_row[ox, ch] = _lerp(between[first[ox], ch], between[second[ox], ch], wx[ox])


@njit(cache=True, parallel=True)
def _upsample_rows(xh, fy, fx, bilinear, outh):
    """`_upsample_planes` on (N, H, W, C) views: one output row a job, each pixel's
    channels at once (one contiguous run where the output is stored channels-last)."""
    height, width = xh.shape[1], xh.shape[2]
    n, rows, cols = outh.shape[0], outh.shape[1], outh.shape[2]
    first, second, wx = _column_sources(cols, fx, width, bilinear)
    for job in prange(n * rows):
        b, y = job // rows, job % rows
        top, bottom, wy = source(y, fy, height, bilinear)
        _upsample_row(xh, b, top, bottom, np.float32(wy), first, second, wx, bilinear, outh[b, y])


@njit(cache=True, parallel=True)
def _upsample_rows_into_planes(xh, fy, fx, bilinear, out):
    """`_upsample_rows` from a channels-last input into an NCHW output: each row computed
    channels-last, then stored down the planes (`store_row_in_planes`)."""
    height, width, c = xh.shape[1], xh.shape[2], xh.shape[3]
    n, rows, cols = out.shape[0], out.shape[2], out.shape[3]
    first, second, wx = _column_sources(cols, fx, width, bilinear)
    for job in prange(n * rows):
        b, y = job // rows, job % rows
        top, bottom, wy = source(y, fy, height, bilinear)
        row = np.empty((cols, c), np.float32)
        _upsample_row(xh, b, top, bottom, np.float32(wy), first, second, wx, bilinear, row)
        store_row_in_planes(row, out, b, y)


def run_upsample(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    """Follow the output's storage, reading the input through its own; a channels-last
    input into an NCHW output goes row by row (`_upsample_rows_into_planes`)."""
    fy, fx = params["factor"]
    bilinear = params["mode"] == "bilinear"
    x = inputs[0]
    x_stored, out_stored = nhwc(x), nhwc(out)
    if out_stored is not None:
        _upsample_rows(x.transpose(0, 2, 3, 1), fy, fx, bilinear, out_stored)
    elif x_stored is not None:
        _upsample_rows_into_planes(x_stored, fy, fx, bilinear, out)
    else:
        _upsample_planes(x, fy, fx, bilinear, out)
