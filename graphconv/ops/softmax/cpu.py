"""CPU softmax over channels, parallel over (image, row), numerically stable; a grouped
one runs on the (N, g, C/g, H*W) view (`grouped_view`)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.softmax import grouped_view


@njit(cache=True, parallel=True)
def _softmax(x, out):
    n, c, height, width = x.shape
    for job in prange(n * height):
        b = job // height
        y = job % height
        for xx in range(width):
            m = x[b, 0, y, xx]
            for ch in range(1, c):
                m = max(m, x[b, ch, y, xx])
            total = 0.0
            for ch in range(c):
                e = np.exp(x[b, ch, y, xx] - m)
                out[b, ch, y, xx] = e
                total += e
            inv = 1.0 / total
            for ch in range(c):
                out[b, ch, y, xx] *= inv


def run_softmax(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    groups = params["groups"]
    _softmax(grouped_view(np.ascontiguousarray(inputs[0]), groups), grouped_view(out, groups))
