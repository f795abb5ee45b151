"""CPU upsample: in the order the output is stored, like the pad kernel: plane by plane
(parallel over image x channel) for an NCHW output, row by row (parallel over image x
output row, each pixel's channels one contiguous run) for a channels-last one. The input
is read in whichever storage it has, through a strided view, never copied. Each output
row's source rows and weight come from `source`, and every column's once per call."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops import upsample
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
        for y in range(rows):
            top, bottom, wy64 = source(y, fy, height, bilinear)
            upper, lower = x[b, ch, top], x[b, ch, bottom]
            if not bilinear:
                for ox in range(cols):
                    out[b, ch, y, ox] = upper[first[ox]]
                continue
            wy = np.float32(wy64)
            for ox in range(cols):
                above = _lerp(upper[first[ox]], upper[second[ox]], wx[ox])
                below = _lerp(lower[first[ox]], lower[second[ox]], wx[ox])
                out[b, ch, y, ox] = _lerp(above, below, wy)


@njit(cache=True, parallel=True)
def _upsample_rows(xh, fy, fx, bilinear, outh):
    """`_upsample_planes` on (N, H, W, C) views: one output row a job."""
    n, height, width, c = xh.shape
    rows, cols = outh.shape[1], outh.shape[2]
    first, second, wx = _column_sources(cols, fx, width, bilinear)
    for job in prange(n * rows):
        b, y = job // rows, job % rows
        top, bottom, wy64 = source(y, fy, height, bilinear)
        wy = np.float32(wy64)
        for ox in range(cols):
            if not bilinear:
                for ch in range(c):
                    outh[b, y, ox, ch] = xh[b, top, first[ox], ch]
                continue
            for ch in range(c):
                above = _lerp(xh[b, top, first[ox], ch], xh[b, top, second[ox], ch], wx[ox])
                below = _lerp(xh[b, bottom, first[ox], ch], xh[b, bottom, second[ox], ch], wx[ox])
                outh[b, y, ox, ch] = _lerp(above, below, wy)


def run_upsample(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    """Follow the output's storage; read the input through its own."""
    fy, fx = params["factor"]
    bilinear = params["mode"] == "bilinear"
    x = inputs[0]
    out_stored = nhwc(out)
    if out_stored is None:
        _upsample_planes(x, fy, fx, bilinear, out)
        return
    x_stored = nhwc(x)
    _upsample_rows(x.transpose(0, 2, 3, 1) if x_stored is None else x_stored, fy, fx, bilinear, out_stored)
