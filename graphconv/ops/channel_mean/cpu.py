"""CPU channel mean: per image and row (parallel over both), summed in float64, reading
the input in whichever order it is stored (numba walks an NCHW-shaped view of
channels-last memory through its strides) and writing the one-channel output, whose
memory is the same either way."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _channel_means(x, out):
    """x: an (N, C, H, W) view, either storage (numba walks the strides)."""
    n, c, height, width = x.shape
    for job in prange(n * height):
        b, y = job // height, job % height
        for j in range(width):
            total = 0.0
            for ch in range(c):
                total += x[b, ch, y, j]
            out[b, 0, y, j] = total / c


def run_channel_mean(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _channel_means(inputs[0], out)
