"""CPU depth_to_space: in the order the output is stored, as upsample's kernel: plane by
plane (parallel over image x channel) for an NCHW output, row by row (parallel over image x
output row) for a channels-last one, where in the blocks order each output pixel's
channels are one contiguous run of its input pixel's. The input is read in whichever
storage it has, through a strided view, never copied."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops import depth_to_space
from graphconv.ops.layout import nhwc

source_channel = njit(cache=True, inline="always")(depth_to_space.source_channel)


@njit(cache=True, parallel=True)
def _depth_to_space_planes(x, block, channels_first, out):
    n, c_out, rows, cols = out.shape
    for job in prange(n * c_out):
        b, oc = job // c_out, job % c_out
        for y in range(rows):
            for j in range(cols):
                ic = source_channel(oc, y % block, j % block, c_out, block, channels_first)
                out[b, oc, y, j] = x[b, ic, y // block, j // block]


@njit(cache=True, parallel=True)
def _depth_to_space_rows(xh, block, channels_first, outh):
    """`_depth_to_space_planes` on (N, H, W, C) views: one output row a job."""
    n, rows, cols, c_out = outh.shape
    for job in prange(n * rows):
        b, y = job // rows, job % rows
        for j in range(cols):
            pixel = xh[b, y // block, j // block]
            for oc in range(c_out):
                outh[b, y, j, oc] = pixel[source_channel(oc, y % block, j % block, c_out, block, channels_first)]


def run_depth_to_space(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    """Follow the output's storage; read the input through its own."""
    x, block, channels_first = inputs[0], params["block"], params["order"] == "channels"
    out_stored = nhwc(out)
    if out_stored is None:
        _depth_to_space_planes(x, block, channels_first, out)
        return
    x_stored = nhwc(x)
    _depth_to_space_rows(x.transpose(0, 2, 3, 1) if x_stored is None else x_stored, block, channels_first,
                         out_stored)
