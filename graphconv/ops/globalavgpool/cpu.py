"""CPU global average pooling: one (image, channel) plane per parallel job, summed in
float64 so that a large map (the op on a big image, before global-pool-to-window) loses
nothing to rounding."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.layout import nhwc
from graphconv.ops.unsigned_index import unsigned


@njit(cache=True, parallel=True, boundscheck=False)
def _global_mean(x, out):
    n, c, height, width = x.shape
    plane = height * width
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    for job in prange(n * c):
        total = 0.0
        start = job * plane
        for i in range(start, start + plane):
            total += flat_x[unsigned(i)]
        flat_out[unsigned(job)] = total / plane


CHANNEL_RUN = 64  # channels a job of `_global_mean_channels_last` sums side by side


@njit(cache=True, parallel=True, boundscheck=False)
def _global_mean_channels_last(xh, out):
    """`_global_mean` for (N, H, W, C) input stored channels-last: a job sums a run of
    CHANNEL_RUN channels over every pixel, each pixel's run contiguous."""
    n, height, width, c = xh.shape
    plane = height * width
    runs = -(-c // CHANNEL_RUN)
    flat_x, flat_out = xh.reshape(-1), out.reshape(-1)
    for job in prange(n * runs):
        b, c0 = job // runs, (job % runs) * CHANNEL_RUN
        count = min(CHANNEL_RUN, c - c0)
        totals = np.zeros(CHANNEL_RUN, np.float64)
        for p in range(plane):
            at = (b * plane + p) * c + c0
            for j in range(count):
                totals[j] += flat_x[unsigned(at + j)]
        for j in range(count):
            flat_out[unsigned(b * c + c0 + j)] = totals[j] / plane


def run_globalavgpool(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    """The (N, C, 1, 1) output is the same memory stored either way."""
    stored = nhwc(inputs[0])
    if stored is None:
        _global_mean(np.ascontiguousarray(inputs[0]), out)
    else:
        _global_mean_channels_last(stored, out)
