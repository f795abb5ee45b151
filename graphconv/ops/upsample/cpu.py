"""CPU upsample: in the order the output is stored, like the pad kernel: plane by plane
(parallel over image x channel) for an NCHW output, row by row (parallel over image x
output row, each pixel's channels one contiguous run) for a channels-last one, or from a
channels-last input into an NCHW output (an FCN head's last resize) row by row, each row
stored down the planes a cache line at a time (walking each plane across channels-last
memory read a cache line per value: 3-5x onnxruntime). The input is not copied (but for
an NCHW input into a channels-last output, which the channels-last pass never asks for:
upsample is stored like its input). Each output row's source rows and weight come from
`source`, and every column's once per call."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops import upsample
from graphconv.ops.upsample import NEAREST
from graphconv.ops.channels_last import as_channels_last, store_row_in_planes
from graphconv.ops.fast_math import CONTRACT
from graphconv.ops.layout import nhwc
from graphconv.ops.unsigned_index import unsigned

source = njit(cache=True, inline="always")(upsample.source)


@njit(cache=True)
def _column_sources(cols, factor, width, sampling):
    """`source` of every output column, as three arrays."""
    first = np.empty(cols, np.int64)
    second = np.empty(cols, np.int64)
    weight = np.empty(cols, np.float32)
    for ox in range(cols):
        first[ox], second[ox], w = source(ox, factor, width, sampling)
        weight[ox] = w
    return first, second, weight


@njit(cache=True, inline="always")
def _lerp(a, b, weight):
    return a + weight * (b - a)


@njit(cache=True, parallel=True)
def _upsample_planes(x, fy, fx, sampling, out):
    n, c, height, width = x.shape
    rows, cols = out.shape[2], out.shape[3]
    first, second, wx = _column_sources(cols, fx, width, sampling)
    for plane in prange(n * c):
        b, ch = plane // c, plane % c
        between = np.empty(width, np.float32)  # a bilinear row's input row, interpolated between two
        for y in range(rows):
            top, bottom, wy = source(y, fy, height, sampling)
            upper, lower = x[b, ch, top], x[b, ch, bottom]
            if sampling == NEAREST:
                for ox in range(cols):
                    out[b, ch, y, ox] = upper[first[ox]]
                continue
            for ix in range(width):
                between[ix] = _lerp(upper[ix], lower[ix], np.float32(wy))
            for ox in range(cols):
                out[b, ch, y, ox] = _lerp(between[first[ox]], between[second[ox]], wx[ox])


@njit(cache=True, inline="always")
def _upsample_row(flat_x, height, width, c, b, top, bottom, wy, first, second, wx, sampling, flat_out, o0, cols):
    """Output row (cols pixels of C channels, from flat_out[o0]) between input rows `top`
    and `bottom` of image b of the flat (N, H, W, C) input; a bilinear one interpolated
    between the two rows first, then along the row (a lerp and a fraction of one per
    value). Flat, unsigned indices over each pixel's contiguous channels vectorise: the
    same loops on 2D views ran 4x slower (a bilinear x2 of 64 channels at 224, 16 -> 4 ms)."""
    t0 = (b * height + top) * width * c
    if sampling == NEAREST:
        for ox in range(cols):
            s0, d0 = t0 + first[ox] * c, o0 + ox * c
            for ch in range(c):
                flat_out[unsigned(d0 + ch)] = flat_x[unsigned(s0 + ch)]
        return
    b0 = (b * height + bottom) * width * c
    between = np.empty(width * c, np.float32)
    for i in range(width * c):
        between[unsigned(i)] = _lerp(flat_x[unsigned(t0 + i)], flat_x[unsigned(b0 + i)], wy)
    for ox in range(cols):
        a0, a1, w, d0 = first[ox] * c, second[ox] * c, wx[ox], o0 + ox * c
        for ch in range(c):
            flat_out[unsigned(d0 + ch)] = _lerp(between[unsigned(a0 + ch)], between[unsigned(a1 + ch)], w)


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _upsample_rows(xh, fy, fx, sampling, outh):
    """`_upsample_planes` on (N, H, W, C) arrays, both C-contiguous: one output row a job."""
    n, height, width, c = xh.shape
    rows, cols = outh.shape[1], outh.shape[2]
    first, second, wx = _column_sources(cols, fx, width, sampling)
    flat_x, flat_out = xh.reshape(-1), outh.reshape(-1)
    for job in prange(n * rows):
        b, y = job // rows, job % rows
        top, bottom, wy = source(y, fy, height, sampling)
        _upsample_row(flat_x, height, width, c, b, top, bottom, np.float32(wy), first, second, wx, sampling, flat_out,
                      job * cols * c, cols)


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _upsample_rows_into_planes(xh, fy, fx, sampling, out):
    """`_upsample_rows` from a channels-last input into an NCHW output: each row computed
    channels-last, then stored down the planes (`store_row_in_planes`)."""
    n, height, width, c = xh.shape
    rows, cols = out.shape[2], out.shape[3]
    first, second, wx = _column_sources(cols, fx, width, sampling)
    flat_x = xh.reshape(-1)
    for job in prange(n * rows):
        b, y = job // rows, job % rows
        top, bottom, wy = source(y, fy, height, sampling)
        row = np.empty(cols * c, np.float32)
        _upsample_row(flat_x, height, width, c, b, top, bottom, np.float32(wy), first, second, wx, sampling, row, 0,
                      cols)
        store_row_in_planes(row.reshape(cols, c), out, b, y)


def run_upsample(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    """Follow the output's storage, reading the input through its own; a channels-last
    input into an NCHW output goes row by row (`_upsample_rows_into_planes`)."""
    fy, fx = params["factor"]
    sampling = upsample.sampling(params)
    x = inputs[0]
    x_stored, out_stored = nhwc(x), nhwc(out)
    if out_stored is not None:  # an NCHW input (which the channels-last pass never gives it) copied first
        _upsample_rows(as_channels_last(x), fy, fx, sampling, out_stored)
    elif x_stored is not None:
        _upsample_rows_into_planes(x_stored, fy, fx, sampling, out)
    else:
        _upsample_planes(x, fy, fx, sampling, out)
