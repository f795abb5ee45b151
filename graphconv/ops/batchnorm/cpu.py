"""CPU batchnorm: one parallel pass over memory, a multiply-add per element.

The per-channel scale gamma / sqrt(var + eps) is worked out once per call in float64
(C numbers); the kernel then computes (x - mean) * scale + beta, subtracting the mean
first so that a large mean does not cost the small differences their precision."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.batchnorm import channel_scale
from graphconv.ops.channels_last import as_channels_last
from graphconv.ops.layout import nhwc
from graphconv.ops.unsigned_index import unsigned


@njit(cache=True, parallel=True, boundscheck=False)
def _batchnorm(x, mean, scale, beta, out):
    n, c, height, width = x.shape
    plane = height * width
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)  # no array views made inside the loop
    for job in prange(n * c):
        ch = job % c
        m, s, b = mean[ch], scale[ch], beta[ch]
        start = job * plane
        for i in range(start, start + plane):
            flat_out[unsigned(i)] = (flat_x[unsigned(i)] - m) * s + b


@njit(cache=True, parallel=True, boundscheck=False)
def _batchnorm_channels_last(xh, mean, scale, beta, out_h):
    """`_batchnorm` on (N, H, W, C) arrays: each pixel's channels one run, with the
    per-channel terms read along it."""
    c = xh.shape[3]
    flat_x, flat_out = xh.reshape(-1), out_h.reshape(-1)
    for pixel in prange(flat_x.size // c):
        start = pixel * c
        for ch in range(c):
            flat_out[unsigned(start + ch)] = (flat_x[unsigned(start + ch)] - mean[ch]) * scale[ch] + beta[ch]


def run_batchnorm(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    """Stored as `out` is: NCHW, or channels-last (the input copied to match where it is not)."""
    mean = np.ascontiguousarray(weights["running_mean"], np.float32)
    beta = np.ascontiguousarray(weights["bias"], np.float32)
    scale = channel_scale(params, weights).astype(np.float32)
    out_stored = nhwc(out)
    if out_stored is None:
        _batchnorm(np.ascontiguousarray(inputs[0]), mean, scale, beta, out)
    else:
        _batchnorm_channels_last(as_channels_last(inputs[0]), mean, scale, beta, out_stored)
