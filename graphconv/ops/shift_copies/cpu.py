"""CPU shift_copies: one parallel task per (copy, image, channel) plane."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _shift_copies(x, out, fy, fx, sy, sx):
    n, c, height, width = x.shape
    for plane in prange(fy * fx * n * c):
        copy = plane // (n * c)
        image = (plane // c) % n
        channel = plane % c
        dy = (copy // fx) * sy
        dx = (copy % fx) * sx
        batch = copy * n + image
        for y in range(height):
            for col in range(width):
                if y + dy < height and col + dx < width:
                    out[batch, channel, y, col] = x[image, channel, y + dy, col + dx]
                else:
                    out[batch, channel, y, col] = 0.0


def run_shift_copies(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    (fy, fx), (sy, sx) = params["factor"], params["step"]
    _shift_copies(inputs[0], out, fy, fx, sy, sx)
