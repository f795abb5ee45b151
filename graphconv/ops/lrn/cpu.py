"""CPU LRN: the sum of squares over each channel window, one image row at a time.

The sums for a whole row are built in a vector, one window channel after another,
so each inner loop runs over contiguous pixels and vectorises. (A running sum
slid along the channels would save a few additions but drifts in float32.) The power
(k + alpha/size * sum) ** -beta is the expensive part; for AlexNet's beta = 0.75 it
is computed as 1 / sqrt(t * sqrt(t)), two vector square roots instead of a scalar
pow call per element.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.unsigned_index import unsigned


@njit(cache=True, parallel=True, fastmath=True, boundscheck=False)
def _lrn(x, size, alpha, beta, k, out):
    n, c, height, width = x.shape
    lo, hi = size // 2, (size - 1) // 2
    scale = np.float32(alpha / size)
    k32 = np.float32(k)
    three_quarters = beta == 0.75
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)  # no array views made inside the loop
    for job in prange(n * height):
        b, y = job // height, job % height
        acc = np.empty(width, np.float32)
        for ch in range(c):
            acc[:] = 0.0
            for j in range(max(0, ch - lo), min(c, ch + hi + 1)):
                _add_squares(acc, flat_x, _row_start(b, j, y, c, height, width))
            row = _row_start(b, ch, y, c, height, width)
            for i in range(width):
                t = k32 + scale * acc[unsigned(i)]
                v = flat_x[unsigned(row + i)]
                if three_quarters:
                    flat_out[unsigned(row + i)] = v / np.sqrt(t * np.sqrt(t))
                else:
                    flat_out[unsigned(row + i)] = v * np.float32(np.exp(-beta * np.log(t)))


@njit(cache=True, inline="always")
def _row_start(b, ch, y, channels, height, width):
    return ((b * channels + ch) * height + y) * width


@njit(cache=True, inline="always")
def _add_squares(acc, flat, start):
    for i in range(acc.size):
        v = flat[unsigned(start + i)]
        acc[unsigned(i)] += v * v


def run_lrn(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _lrn(np.ascontiguousarray(inputs[0]), params["size"], params["alpha"], params["beta"], params["k"],
         out)
