"""CPU LRN: a running sum of squares along channels, parallel over (image, row)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _lrn(x, size, alpha, beta, k):
    n, c, height, width = x.shape
    out = np.empty_like(x)
    lo, hi = size // 2, (size - 1) // 2
    scale = alpha / size
    for job in prange(n * height):
        b = job // height
        y = job % height
        for xx in range(width):
            acc = 0.0
            for j in range(0, min(hi, c - 1) + 1):
                acc += x[b, j, y, xx] * x[b, j, y, xx]
            for ch in range(c):
                v = x[b, ch, y, xx]
                out[b, ch, y, xx] = v / (k + scale * acc) ** beta
                enter = ch + hi + 1
                leave = ch - lo
                if enter < c:
                    acc += x[b, enter, y, xx] * x[b, enter, y, xx]
                if leave >= 0:
                    acc -= x[b, leave, y, xx] * x[b, leave, y, xx]
                acc = max(acc, 0.0)
    return out


def run_lrn(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return _lrn(np.ascontiguousarray(inputs[0]), params["size"], params["alpha"], params["beta"],
                params["k"])
