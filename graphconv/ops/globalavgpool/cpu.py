"""CPU global average pooling: one (image, channel) plane per parallel job, summed in
float64 so that a large map (the op on a big image, before global-pool-to-window) loses
nothing to rounding."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

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


def run_globalavgpool(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _global_mean(np.ascontiguousarray(inputs[0]), out)
