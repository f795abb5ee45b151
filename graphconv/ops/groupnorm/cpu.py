"""CPU groupnorm, for a value stored either way (PoolFormer's GroupNorm(1) sits between
1x1 convs that keep their maps channels-last, where a transposing copy each way would
cost more than the norm). Three parallel passes, each over memory in the order it is
stored: every channel's sum, then every channel's sum of squared differences from its
group's mean (float64: a big map's sum of squares loses precision in float32, and
subtracting the mean first keeps an offset map's variance exact), then the output, each
channel scaled and shifted by what its group's statistics and its own weight and bias
make of it. A group's statistics are its channels' sums added up. Jobs are planes
(NCHW) or bands of pixels (channels-last), so one image with one group still splits
over every thread."""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from graphconv.ops.channels_last import as_stored_like
from graphconv.ops.layout import nhwc


@njit(cache=True, parallel=True)
def _plane_sums(flat, centre, square, out):
    """out[b, ch]: the sum over plane (b, ch) of flat (N, C, P) of x - centre[b, ch], or
    of its square."""
    n, c, pixels = flat.shape
    for job in prange(n * c):
        b, ch = job // c, job % c
        m = centre[b, ch]
        total = 0.0
        for i in range(pixels):
            d = np.float64(flat[b, ch, i]) - m
            total += d * d if square else d
        out[b, ch] = total


@njit(cache=True, parallel=True)
def _pixel_sums(flat, centre, square, bands, out):
    """`_plane_sums` of flat (N, P, C) memory: out[b, band, ch] over a band of pixels, a
    pixel's channels side by side."""
    n, pixels, c = flat.shape
    for job in prange(n * bands):
        b, band = job // bands, job % bands
        totals = np.zeros(c, np.float64)
        for p in range(band * pixels // bands, (band + 1) * pixels // bands):
            for ch in range(c):
                d = np.float64(flat[b, p, ch]) - centre[b, ch]
                totals[ch] += d * d if square else d
        out[b, band] = totals


@njit(cache=True, parallel=True)
def _scale_planes(flat, scale, shift, out):
    n, c, pixels = flat.shape
    for job in prange(n * c):
        b, ch = job // c, job % c
        a, s = scale[b, ch], shift[b, ch]
        for i in range(pixels):
            out[b, ch, i] = flat[b, ch, i] * a + s


@njit(cache=True, parallel=True)
def _scale_pixels(flat, scale, shift, bands, out):
    n, pixels, c = flat.shape
    for job in prange(n * bands):
        b, band = job // bands, job % bands
        for p in range(band * pixels // bands, (band + 1) * pixels // bands):
            for ch in range(c):
                out[b, p, ch] = flat[b, p, ch] * scale[b, ch] + shift[b, ch]


def run_groupnorm(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    x = as_stored_like(inputs[0], out)  # a copy only where the two are stored differently
    n, c, height, width = x.shape
    groups, per_group = params["groups"], c // params["groups"]
    stored = nhwc(x)
    if stored is None:
        flat, flat_out = x.reshape(n, c, -1), out.reshape(n, c, -1)
    else:
        flat, flat_out = stored.reshape(n, -1, c), nhwc(out).reshape(n, -1, c)
    bands = max(1, min(height * width, -(-get_num_threads() // n)))

    def channel_sums(centre: np.ndarray, square: bool) -> np.ndarray:
        """(N, C) sums of each channel's (x - centre) or its square."""
        if stored is None:
            sums = np.empty((n, c))
            _plane_sums(flat, centre, square, sums)
            return sums
        sums = np.empty((n, bands, c))
        _pixel_sums(flat, centre, square, bands, sums)
        return sums.sum(axis=1)

    def per_group_total(sums: np.ndarray) -> np.ndarray:
        """(N, C): each channel's group's total of (N, C) channel sums."""
        totals = sums.reshape(n, groups, per_group).sum(axis=2)
        return np.repeat(totals, per_group, axis=1)

    count = per_group * height * width
    mean = per_group_total(channel_sums(np.zeros((n, c)), False)) / count
    variance = per_group_total(channel_sums(mean, True)) / count
    scale = np.asarray(weights["weight"], np.float64) / np.sqrt(variance + params["eps"])
    shift = np.asarray(weights["bias"], np.float64) - mean * scale
    scale32, shift32 = scale.astype(np.float32), shift.astype(np.float32)
    if stored is None:
        _scale_planes(flat, scale32, shift32, flat_out)
    else:
        _scale_pixels(flat, scale32, shift32, bands, flat_out)
