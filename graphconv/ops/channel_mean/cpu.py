"""CPU channel mean and L2 norm: per image and row (parallel over both), summed in
float64, reading the input in whichever order it is stored (numba walks an NCHW-shaped
view of channels-last memory through its strides) and writing the one-channel output,
whose memory is the same either way."""
from __future__ import annotations

import math

from numba import njit, prange


@njit(cache=True, parallel=True)
def _over_channels(x, squares, out):
    """x: an (N, C, H, W) view, either storage (numba walks the strides). Each position's
    mean over its channels, or with `squares` the root of their sum of squares."""
    n, c, height, width = x.shape
    for job in prange(n * height):
        b, y = job // height, job % height
        for j in range(width):
            total = 0.0
            for ch in range(c):
                v = x[b, ch, y, j]
                total += v * v if squares else v
            out[b, 0, y, j] = math.sqrt(total) if squares else total / c


def run_channel_mean(params: dict, weights: dict, inputs: list, out) -> None:
    _over_channels(inputs[0], False, out)


def run_channel_l2norm(params: dict, weights: dict, inputs: list, out) -> None:
    _over_channels(inputs[0], True, out)
