"""CPU global L2 norm: per image, the squares of each channel summed in float64 over every
pixel, in whichever order the input is stored (NCHW: one plane per parallel job;
channels-last: a pixel's channels side by side), then one square root per channel."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.layout import nhwc


@njit(cache=True, parallel=True)
def _plane_norms(x, out):
    n, c, height, width = x.shape
    for job in prange(n * c):
        plane = x[job // c, job % c]
        total = 0.0
        for y in range(height):
            for j in range(width):
                v = np.float64(plane[y, j])
                total += v * v
        out[job // c, job % c, 0, 0] = np.sqrt(total)


@njit(cache=True, parallel=True)
def _pixel_norms(xh, out):
    """`_plane_norms` of (N, H, W, C) memory: a job per image, its channels' sums side by side."""
    n, height, width, c = xh.shape
    for b in prange(n):
        totals = np.zeros(c, np.float64)
        for y in range(height):
            for j in range(width):
                for ch in range(c):
                    v = np.float64(xh[b, y, j, ch])
                    totals[ch] += v * v
        for ch in range(c):
            out[b, ch, 0, 0] = np.sqrt(totals[ch])


def run_global_l2norm(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    x = inputs[0]
    stored = nhwc(x)
    if stored is None:  # out, C x 1 x 1, is the same memory stored either way
        _plane_norms(x, out)
    else:
        _pixel_norms(stored, out)
