"""CUDA channel_conv: one thread per output element, summing its taps."""
from __future__ import annotations

import numpy as np
from numba import cuda

from graphconv.ops.cuda_launch import grid_1d, unravel_nchw


@cuda.jit
def _across_channels(x, taps, bias, padding, out):
    index = cuda.grid(1)
    n, out_c, height, width = out.shape
    if index >= n * out_c * height * width:
        return
    b, o, y, j = unravel_nchw(index, out_c, height, width)
    total = bias
    for t in range(taps.shape[0]):
        ch = o + t - padding
        if 0 <= ch < x.shape[1]:
            total += taps[t] * x[b, ch, y, j]
    out[b, o, y, j] = total


def run_channel_conv(params: dict, weights: dict, inputs: list, out) -> None:
    bias = np.float32(weights["bias"][0]) if params["bias"] else np.float32(0.0)
    blocks, threads = grid_1d(out.size)
    _across_channels[blocks, threads](inputs[0], weights["weight"], bias, params["padding"], out)
