"""CPU layernorm: each row of positions normalised over the channels in two passes
(sums, then the output), running along the row so the loads stay contiguous in NCHW."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _layernorm(x, weight, bias, eps, out):
    n, c, height, width = x.shape
    for job in prange(n * height):
        b = job // height
        y = job % height
        total = np.zeros(width, np.float64)
        squares = np.zeros(width, np.float64)
        for ch in range(c):
            for j in range(width):
                v = np.float64(x[b, ch, y, j])
                total[j] += v
                squares[j] += v * v
        for j in range(width):
            mean = total[j] / c
            var = max(squares[j] / c - mean * mean, 0.0)
            total[j] = mean
            squares[j] = 1.0 / np.sqrt(var + eps)
        for ch in range(c):
            for j in range(width):
                out[b, ch, y, j] = (x[b, ch, y, j] - total[j]) * squares[j] * weight[ch] + bias[ch]


def run_layernorm(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _layernorm(np.ascontiguousarray(inputs[0]), np.ascontiguousarray(weights["weight"], np.float32),
               np.ascontiguousarray(weights["bias"], np.float32), np.float64(params["eps"]), out)
