"""CPU channel_conv: per image and row of positions (parallel over both), each output
channel a dot product of the taps with the channels they reach, in float64."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _across_channels(x, taps, bias, padding, out):
    n, c, height, width = x.shape
    out_c = out.shape[1]
    for job in prange(n * height):
        b, y = job // height, job % height
        for j in range(width):
            for o in range(out_c):
                total = bias
                for t in range(taps.size):
                    ch = o + t - padding
                    if 0 <= ch < c:
                        total += taps[t] * x[b, ch, y, j]
                out[b, o, y, j] = total


def run_channel_conv(params: dict, weights: dict, inputs: list, out) -> None:
    bias = float(weights["bias"][0]) if params["bias"] else 0.0
    _across_channels(inputs[0], weights["weight"].astype(np.float64), bias, params["padding"], out)
