"""CPU channel mean, L2 norm and max: per image and row (parallel over both), summed in
float64, reading the input in whichever order it is stored (numba walks an NCHW-shaped
view of channels-last memory through its strides) and writing the one-channel output,
whose memory is the same either way."""
from __future__ import annotations

import math

from numba import njit, prange

from graphconv.ops.channel_mean import L2NORM, MAX, MEAN


@njit(cache=True, parallel=True)
def _over_channels(x, what, out):
    """x: an (N, C, H, W) view, either storage (numba walks the strides). Each position's
    mean over its channels, the root of their sum of squares, or their max (a NaN
    channel wins, as in numpy: `v != v` keeps it once met)."""
    n, c, height, width = x.shape
    for job in prange(n * height):
        b, y = job // height, job % height
        for j in range(width):
            if what == MAX:
                best = x[b, 0, y, j]
                for ch in range(1, c):
                    v = x[b, ch, y, j]
                    if v > best or v != v:
                        best = v
                        if v != v:
                            break
                out[b, 0, y, j] = best
                continue
            total = 0.0
            for ch in range(c):
                v = x[b, ch, y, j]
                total += v * v if what == L2NORM else v
            out[b, 0, y, j] = math.sqrt(total) if what == L2NORM else total / c


def run_channel_mean(params: dict, weights: dict, inputs: list, out) -> None:
    _over_channels(inputs[0], MEAN, out)


def run_channel_l2norm(params: dict, weights: dict, inputs: list, out) -> None:
    _over_channels(inputs[0], L2NORM, out)


def run_channel_max(params: dict, weights: dict, inputs: list, out) -> None:
    _over_channels(inputs[0], MAX, out)
