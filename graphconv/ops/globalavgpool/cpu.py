"""CPU global average pooling: one (image, channel) plane per parallel job, summed in
float64 so that a large map (the op on a big image, before global-pool-to-window) loses
nothing to rounding."""
from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
from numba import get_num_threads, njit, prange

from graphconv.ops.binding import BoundCall
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


PIXEL_BLOCK = 64  # pixels `_global_mean_pixel_parts` sums in float32 before adding them to its float64 totals


@njit(cache=True, parallel=True, boundscheck=False)
def _global_mean_pixel_parts(xh, parts, out):
    """`_global_mean` for (N, H, W, C) input stored channels-last, each image's pixels cut
    into `parts` runs, one a job, every channel at once, then the parts added up.

    Why pixels: the conv before (a depthwise one, in EfficientNet's squeeze-and-excitation
    blocks) wrote the map a band of rows a thread, and a job over a run of channels reads
    every pixel, half of them from the other core's cache. EfficientNet-B0's 144x56x56
    map took 110 us in the network against 34 us cut into pixels (32-46 us either way
    alone). Each job sums PIXEL_BLOCK pixels at a time in float32, as whole vectors of
    channels, then adds that into its float64 totals, so the rounding stays that of 64
    values whatever the map's size."""
    n, height, width, c = xh.shape
    plane = height * width
    flat_x, flat_out = xh.reshape(-1), out.reshape(-1)
    totals = np.empty((n * parts, c), np.float64)  # np.zeros here would be a parallel loop of its own
    per_part = -(-plane // parts)
    for job in prange(n * parts):
        b, part = job // parts, job % parts
        totals[job, :] = 0.0
        end = min(plane, (part + 1) * per_part)
        block = np.empty(c, np.float32)
        for p0 in range(part * per_part, end, PIXEL_BLOCK):
            block[:] = 0.0
            for p in range(p0, min(end, p0 + PIXEL_BLOCK)):
                at = (b * plane + p) * c
                for j in range(c):
                    block[j] += flat_x[unsigned(at + j)]
            for j in range(c):
                totals[job, j] += block[j]
    for b in range(n):
        for j in range(c):
            total = 0.0
            for part in range(parts):
                total += totals[b * parts + part, j]
            flat_out[unsigned(b * c + j)] = total / plane


def run_globalavgpool(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _pooling_call(inputs, out)()


def bind_globalavgpool(params: dict, weights: dict) -> BoundCall:
    return BoundCall(_pooling_call)


def _pooling_call(inputs: list[np.ndarray], out: np.ndarray) -> Callable[[], None]:
    """The kernel for these arrays, with its arguments. The (N, C, 1, 1) output is the
    same memory stored either way. A channels-last map of a PIXEL_BLOCK pixels a thread
    or more is cut into pixels, a smaller one (7x7: 13.6 against 18.5 us for 1152
    channels) into runs of channels."""
    x = inputs[0]
    stored = nhwc(x)
    if stored is None:
        if x.flags.c_contiguous:
            return partial(_global_mean, x, out)
        return lambda: _global_mean(np.ascontiguousarray(x), out)
    threads = get_num_threads()
    if stored.shape[1] * stored.shape[2] >= PIXEL_BLOCK * threads:
        return partial(_global_mean_pixel_parts, stored, threads, out)
    return partial(_global_mean_channels_last, stored, out)
