"""CPU layernorm, for a value stored either way. NCHW: each row of positions normalised
over the channels in two passes (sums, then the output), along the row so the loads stay
contiguous. Channels-last: each position's channels are one contiguous run, normalised
in place of the run."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.channels_last import as_stored_like
from graphconv.ops.layout import nhwc
from graphconv.ops.unsigned_index import unsigned


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


@njit(cache=True, parallel=True, boundscheck=False)
def _layernorm_channels_last(flat_x, c, weight, bias, eps, flat_out):
    """flat_x and flat_out: (positions, c) runs, one position's channels each."""
    for p in prange(flat_x.size // c):
        at = p * c
        total = 0.0
        squares = 0.0
        for ch in range(c):
            v = np.float64(flat_x[unsigned(at + ch)])
            total += v
            squares += v * v
        mean = total / c
        scale = 1.0 / np.sqrt(max(squares / c - mean * mean, 0.0) + eps)
        mean32, scale32 = np.float32(mean), np.float32(scale)
        for ch in range(c):
            flat_out[unsigned(at + ch)] = ((flat_x[unsigned(at + ch)] - mean32) * scale32 * weight[unsigned(ch)]
                                           + bias[unsigned(ch)])


def run_layernorm(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    weight = np.ascontiguousarray(weights["weight"], np.float32)
    bias = np.ascontiguousarray(weights["bias"], np.float32)
    x = as_stored_like(inputs[0], out)  # a copy only where the two are stored differently
    stored = nhwc(out)
    if stored is None:
        _layernorm(x, weight, bias, np.float64(params["eps"]), out)
    else:
        _layernorm_channels_last(nhwc(x).reshape(-1), out.shape[1], weight, bias, np.float64(params["eps"]),
                                 stored.reshape(-1))
