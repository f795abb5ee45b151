"""CPU batchnorm: one parallel pass over memory, a multiply-add per element.

The per-channel scale gamma / sqrt(var + eps) is worked out once per call in float64
(C numbers); the kernel then computes (x - mean) * scale + beta, subtracting the mean
first so that a large mean does not cost the small differences their precision."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.batchnorm import channel_scale
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


def run_batchnorm(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    mean = np.ascontiguousarray(weights["running_mean"], np.float32)
    beta = np.ascontiguousarray(weights["bias"], np.float32)
    scale = channel_scale(params, weights).astype(np.float32)
    _batchnorm(np.ascontiguousarray(inputs[0]), mean, scale, beta, out)
