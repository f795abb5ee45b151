"""CPU group_sum, in either storage: NCHW, one output plane per parallel job, adding the
planes of its channel in every group; channels-last, one band of pixels per job, each
pixel's runs of channels added side by side."""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from graphconv.ops.channels_last import as_stored_like
from graphconv.ops.layout import nhwc


@njit(cache=True, parallel=True)
def _sum_planes(flat, groups, out):
    """flat (N, C, P) -> out (N, C / groups, P)."""
    n, c_out, pixels = out.shape
    for job in prange(n * c_out):
        b, ch = job // c_out, job % c_out
        for i in range(pixels):
            total = flat[b, ch, i]
            for k in range(1, groups):
                total += flat[b, k * c_out + ch, i]
            out[b, ch, i] = total


@njit(cache=True, parallel=True)
def _sum_pixels(flat, groups, bands, out):
    """flat (N, P, C) -> out (N, P, C / groups), a band of pixels a job."""
    n, pixels, c_out = out.shape
    for job in prange(n * bands):
        b, band = job // bands, job % bands
        for p in range(band * pixels // bands, (band + 1) * pixels // bands):
            for ch in range(c_out):
                out[b, p, ch] = flat[b, p, ch]
            for k in range(1, groups):
                for ch in range(c_out):
                    out[b, p, ch] += flat[b, p, k * c_out + ch]


def run_group_sum(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    x = as_stored_like(inputs[0], out)  # a copy only where the two are stored differently
    n, c, height, width = x.shape
    stored = nhwc(x)
    if stored is None:
        _sum_planes(x.reshape(n, c, -1), params["groups"], out.reshape(n, out.shape[1], -1))
        return
    bands = max(1, min(height * width, -(-get_num_threads() // n)))
    _sum_pixels(stored.reshape(n, -1, c), params["groups"], bands, nhwc(out).reshape(n, -1, out.shape[1]))
