"""CPU depth_to_space: in the order the output is stored, as upsample's kernel: plane by
plane (parallel over image x channel) for an NCHW output, row by row (parallel over image x
output row) for a channels-last one, where in the blocks order each output pixel's
channels are one contiguous run of its input pixel's, or from a channels-last input into
an NCHW output (a network's last layer) row by row, each row stored down the planes a
cache line at a time (`channels_last.store_row_in_planes`). The input is never copied."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops import depth_to_space
from graphconv.ops.channels_last import store_row_in_planes
from graphconv.ops.layout import nhwc

source_channel = njit(cache=True, inline="always")(depth_to_space.source_channel)


@njit(cache=True, parallel=True)
def _depth_to_space_planes(x, block, channels_first, out):
    n, c_out, rows, cols = out.shape
    width = x.shape[3]
    for job in prange(n * c_out):
        b, oc = job // c_out, job % c_out
        for y in range(rows):
            for dx in range(block):  # the output row's columns dx, dx + block, ...: one input row each
                source_row = x[b, source_channel(oc, y % block, dx, c_out, block, channels_first), y // block]
                for ix in range(width):
                    out[b, oc, y, ix * block + dx] = source_row[ix]


@njit(cache=True, inline="always")
def _depth_to_space_row(xh, b, y, block, channels_first, out_row):
    """out_row (cols, C_out): output row y of image b; each output pixel's channels one
    run of its input pixel's, contiguous (blocks order) or every block*block-th (channels)."""
    cols, c_out = out_row.shape
    iy, dy = y // block, y % block
    for j in range(cols):
        first = source_channel(0, dy, j % block, c_out, block, channels_first)
        step = source_channel(1, dy, j % block, c_out, block, channels_first) - first
        ix = j // block
        for oc in range(c_out):
            out_row[j, oc] = xh[b, iy, ix, first + oc * step]


@njit(cache=True, parallel=True)
def _depth_to_space_rows(xh, block, channels_first, outh):
    """`_depth_to_space_planes` on (N, H, W, C) views: one output row a job."""
    n, rows = outh.shape[0], outh.shape[1]
    for job in prange(n * rows):
        b, y = job // rows, job % rows
        _depth_to_space_row(xh, b, y, block, channels_first, outh[b, y])


@njit(cache=True, parallel=True)
def _depth_to_space_rows_into_planes(xh, block, channels_first, out):
    """`_depth_to_space_rows` from a channels-last input into an NCHW output: each row
    computed channels-last, then stored down the planes (`store_row_in_planes`)."""
    n, c_out, rows, cols = out.shape
    for job in prange(n * rows):
        b, y = job // rows, job % rows
        row = np.empty((cols, c_out), np.float32)
        _depth_to_space_row(xh, b, y, block, channels_first, row)
        store_row_in_planes(row, out, b, y)


def run_depth_to_space(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    """Follow the output's storage, reading the input through its own; a channels-last
    input into an NCHW output goes row by row (`_depth_to_space_rows_into_planes`)."""
    x, block, channels_first = inputs[0], params["block"], params["order"] == "channels"
    x_stored, out_stored = nhwc(x), nhwc(out)
    if out_stored is not None:
        _depth_to_space_rows(x.transpose(0, 2, 3, 1), block, channels_first, out_stored)
    elif x_stored is not None:
        _depth_to_space_rows_into_planes(x_stored, block, channels_first, out)
    else:
        _depth_to_space_planes(x, block, channels_first, out)
