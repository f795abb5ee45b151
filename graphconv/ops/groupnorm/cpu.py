"""CPU groupnorm: one job per image and group (parallel over both), three passes over
the group's contiguous run of C / groups planes: the mean, the variance about it (in
float64: a big map's sum of squares loses precision in float32, and subtracting the mean
first keeps an offset map's variance exact), then the output, scaled and shifted per
channel."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _groupnorm(x, groups, weight, bias, eps, out):
    n, c, height, width = x.shape
    per_group = c // groups
    flat_x = x.reshape(n, groups, per_group * height * width)
    flat_out = out.reshape(n, groups, per_group * height * width)
    plane = height * width
    for job in prange(n * groups):
        b, g = job // groups, job % groups
        values, dest = flat_x[b, g], flat_out[b, g]
        total = 0.0
        for i in range(values.size):
            total += values[i]
        mean = total / values.size
        squares = 0.0
        for i in range(values.size):
            d = values[i] - mean
            squares += d * d
        scale = 1.0 / np.sqrt(squares / values.size + eps)
        for k in range(per_group):
            ch = g * per_group + k
            a = np.float32(scale * weight[ch])
            shift = np.float32(bias[ch] - mean * scale * weight[ch])
            for i in range(k * plane, (k + 1) * plane):
                dest[i] = values[i] * a + shift


def run_groupnorm(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    weight = np.ascontiguousarray(weights["weight"], np.float64)
    bias = np.ascontiguousarray(weights["bias"], np.float64)
    _groupnorm(np.ascontiguousarray(inputs[0]), params["groups"], weight, bias, params["eps"], out)
