"""CPU interleave: one parallel task per (image, channel) plane, gathering its copies."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _interleave(x, out, fy, fx):
    n, c = out.shape[0], out.shape[1]
    rows, cols = x.shape[2], x.shape[3]
    for plane in prange(n * c):
        image = plane // c
        channel = plane % c
        for a in range(fy):
            for b in range(fx):
                copy = (a * fx + b) * n + image
                for i in range(rows):
                    for j in range(cols):
                        out[image, channel, i * fy + a, j * fx + b] = x[copy, channel, i, j]


def run_interleave(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    fy, fx = params["factor"]
    _interleave(inputs[0], out, fy, fx)
